/* filter.h - which events are recorded: MQTT topic filters (include and
 * exclude lists with + and # wildcards) and a mountpoint list; and how
 * much of a payload is kept, by topic (payload_topics).
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
 * filter is not a valid MQTT topic filter of at most
 * PAYLOAD_RULE_WORDS_MAX levels (err says which). */
filters_t *filters_parse(const char *include, const char *exclude, const char *mountpoints,
                         char *err, size_t errlen);
void filters_free(filters_t *f);

/* 1 when an event on this topic is to be recorded; words holds the first
 * min(nwords, PAYLOAD_RULE_WORDS_MAX) words of a topic of nwords words */
int filters_topic_ok(const filters_t *f, const span_t *words, size_t nwords);
/* 1 when an event under this mountpoint is to be recorded */
int filters_mountpoint_ok(const filters_t *f, const char *mp, size_t n);

/* payload modes, per hook (payload_mode, payload_modes) and per topic
 * (payload_topics); PM_TRUNCATED is 0, the default of a zeroed table */
enum payload_mode { PM_TRUNCATED, PM_NONE, PM_FULL, PM_HASH };

/* the stricter of two payload modes: none < hash < truncated < full */
static inline int payload_mode_stricter(int a, int b)
{
    static const unsigned char rank[] = {[PM_NONE] = 0, [PM_HASH] = 1, [PM_TRUNCATED] = 2,
                                         [PM_FULL] = 3};
    return rank[a] <= rank[b] ? a : b;
}

/* the most levels a payload_topics, topic_include or topic_exclude filter
 * may have: the hook path looks at this many words of a topic (and counts
 * the rest) */
#define PAYLOAD_RULE_WORDS_MAX 64

typedef struct payload_rule {
    topic_filter_t filter;
    int mode;                /* enum payload_mode */
} payload_rule_t;

/* payload_topics parsed: "FILTER:MODE, ..." in order, the first match
 * wins. Immutable once published; replaced ones are kept until unload. */
typedef struct payload_rules {
    payload_rule_t *rules;
    size_t n;
    int strictest;           /* the strictest mode of all rules */
    char *text;              /* owns the bytes the filters' words point to */
    char *spec;              /* the value as given (status) */
    struct payload_rules *retired;
} payload_rules_t;

/* NULL with err set (naming the item) when an item is not FILTER:MODE,
 * its mode is not none, hash, truncated or full, its filter is not a
 * valid MQTT topic filter of at most PAYLOAD_RULE_WORDS_MAX levels, or
 * out of memory. A value without items gives a set with n == 0. */
payload_rules_t *payload_rules_parse(const char *spec, char *err, size_t errlen);
void payload_rules_free(payload_rules_t *r);
/* the mode of the first rule whose filter matches the topic, -1 when
 * none does. words holds the first min(nwords, PAYLOAD_RULE_WORDS_MAX)
 * words of a topic of nwords words. */
int payload_rules_mode(const payload_rules_t *r, const span_t *words, size_t nwords);

/* MQTT filter match: + one level, # any number of levels including none,
 * wildcards in the first level do not match topics starting with '$' */
int topic_matches(const topic_filter_t *f, const span_t *words, size_t nwords);

#endif
