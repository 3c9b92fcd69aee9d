/* filter.h - which events are recorded: MQTT topic filters (include and
 * exclude lists with + and # wildcards) and a mountpoint list.
 *
 * Parsed once per configuration change (any thread); matched on the hook
 * path against borrowed word spans, before anything is copied. A filters_t
 * is immutable once published; replaced ones are kept until unload (nif.c).
 * Knows nothing of erl_nif. */
#ifndef VMQ_PGEV_FILTER_H
#define VMQ_PGEV_FILTER_H

#include <stddef.h>

#include "event.h"

typedef struct topic_filter {
    size_t nwords;
    span_t *words;           /* into filters_t.text */
} topic_filter_t;

typedef struct filters {
    topic_filter_t *include, *exclude;
    size_t ninclude, nexclude;
    span_t *mountpoints;     /* empty: every mountpoint */
    size_t nmountpoints;
    char *text;              /* owns all the bytes the spans point to */
    struct filters *retired; /* chain of replaced sets (nif.c) */
} filters_t;

/* Comma-separated lists; "" for none. In mountpoints, "default" is the
 * default mountpoint (the empty string). NULL when out of memory or a
 * filter is not a valid MQTT topic filter (err says which). */
filters_t *filters_parse(const char *include, const char *exclude, const char *mountpoints,
                         char *err, size_t errlen);
void filters_free(filters_t *f);

/* 1 when an event on this topic is to be recorded */
int filters_topic_ok(const filters_t *f, const span_t *words, size_t nwords);
/* 1 when an event under this mountpoint is to be recorded */
int filters_mountpoint_ok(const filters_t *f, const char *mp, size_t n);

/* MQTT filter match: + one level, # any number of levels including none,
 * wildcards in the first level do not match topics starting with '$' */
int topic_matches(const topic_filter_t *f, const span_t *words, size_t nwords);

#endif
