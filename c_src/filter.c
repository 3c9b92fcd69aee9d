/* filter.c - topic and mountpoint filters (see filter.h). */
#include "filter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int word_is(const span_t *w, const char *lit)
{
    size_t n = strlen(lit);
    return w->n == n && memcmp(w->p, lit, n) == 0;
}

int topic_matches(const topic_filter_t *f, const span_t *words, size_t nwords)
{
    size_t i;

    if (nwords && words[0].n && words[0].p[0] == '$' && f->nwords &&
        (word_is(&f->words[0], "+") || word_is(&f->words[0], "#")))
        return 0;
    for (i = 0; i < f->nwords; i++) {
        const span_t *fw = &f->words[i];
        if (word_is(fw, "#"))
            return 1;
        if (i >= nwords)
            return 0;
        if (word_is(fw, "+"))
            continue;
        if (fw->n != words[i].n || memcmp(fw->p, words[i].p, fw->n) != 0)
            return 0;
    }
    return i == nwords;
}

int filters_topic_ok(const filters_t *f, const span_t *words, size_t nwords)
{
    size_t i;
    int in = f->ninclude == 0;

    for (i = 0; !in && i < f->ninclude; i++)
        in = topic_matches(&f->include[i], words, nwords);
    if (!in)
        return 0;
    for (i = 0; i < f->nexclude; i++)
        if (topic_matches(&f->exclude[i], words, nwords))
            return 0;
    return 1;
}

int filters_mountpoint_ok(const filters_t *f, const char *mp, size_t n)
{
    size_t i;

    if (f->nmountpoints == 0)
        return 1;
    for (i = 0; i < f->nmountpoints; i++)
        if (f->mountpoints[i].n == n && (n == 0 || memcmp(f->mountpoints[i].p, mp, n) == 0))
            return 1;
    return 0;
}

/* trims spaces around [*s, *e) */
static void trim(const char **s, const char **e)
{
    while (*s < *e && (**s == ' ' || **s == '\t'))
        (*s)++;
    while (*e > *s && ((*e)[-1] == ' ' || (*e)[-1] == '\t'))
        (*e)--;
}

/* the next non-empty item of a comma-separated list: [*s, *e), trimmed;
 * advances *p past it. 0 when there is none. */
static int next_item(const char **p, const char **s, const char **e)
{
    while (**p) {
        const char *comma = strchr(*p, ',');
        *s = *p;
        *e = comma ? comma : *p + strlen(*p);
        *p = comma ? comma + 1 : *e;
        trim(s, e);
        if (*e > *s)
            return 1;
    }
    return 0;
}

static size_t count_items(const char *list)
{
    const char *p = list, *s, *e;
    size_t n = 0;

    while (next_item(&p, &s, &e))
        n++;
    return n;
}

/* one topic filter [s, e) into f (its words point into [s, e)); -1 when
 * it is not a valid MQTT topic filter (err says which) or out of memory */
static int parse_filter(const char *s, const char *e, topic_filter_t *f, char *err, size_t errlen)
{
    size_t w = 1, i;
    const char *c;

    for (c = s; c < e; c++)
        if (*c == '/')
            w++;
    f->words = calloc(w, sizeof(span_t));
    if (!f->words) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    f->nwords = w;
    for (i = 0, c = s; i < w; i++) {
        const char *we = memchr(c, '/', (size_t)(e - c));
        if (!we)
            we = e;
        f->words[i] = (span_t){c, (size_t)(we - c), 1};
        /* + and # stand alone; # only last */
        if ((memchr(c, '+', (size_t)(we - c)) && we - c != 1) ||
            (memchr(c, '#', (size_t)(we - c)) && (we - c != 1 || i != w - 1))) {
            snprintf(err, errlen, "not a valid MQTT topic filter: %.*s", (int)(e - s), s);
            return -1;
        }
        c = we + 1;
    }
    return 0;
}

/* splits a comma-separated list of topic filters; words point into text */
static int parse_topics(char *text, topic_filter_t **out, size_t *nout, char *err, size_t errlen)
{
    size_t n = count_items(text), k = 0;
    const char *p = text, *s, *e;
    topic_filter_t *fs;

    *out = NULL;
    *nout = 0;
    if (n == 0)
        return 0;
    fs = calloc(n, sizeof *fs);
    if (!fs)
        return -1;
    while (k < n && next_item(&p, &s, &e)) {
        if (parse_filter(s, e, &fs[k], err, errlen) < 0) {
            k++;
            goto fail;
        }
        if (fs[k++].nwords > PAYLOAD_RULE_WORDS_MAX) {
            snprintf(err, errlen, "a topic filter of more than %d levels: %.*s", PAYLOAD_RULE_WORDS_MAX,
                     (int)(e - s), s);
            goto fail;
        }
    }
    *out = fs;
    *nout = k;
    return 0;
fail:
    while (k--)
        free(fs[k].words);
    free(fs);
    return -1;
}

static int parse_mountpoints(char *text, span_t **out, size_t *nout)
{
    size_t n = count_items(text), k = 0;
    const char *p = text, *s, *e;
    span_t *m;

    *out = NULL;
    *nout = 0;
    if (n == 0)
        return 0;
    m = calloc(n, sizeof *m);
    if (!m)
        return -1;
    while (k < n && next_item(&p, &s, &e)) {
        if (e - s == 7 && memcmp(s, "default", 7) == 0)
            m[k++] = (span_t){"", 0, 1};
        else
            m[k++] = (span_t){s, (size_t)(e - s), 1};
    }
    *out = m;
    *nout = k;
    return 0;
}

filters_t *filters_parse(const char *include, const char *exclude, const char *mountpoints,
                         char *err, size_t errlen)
{
    size_t li = strlen(include), le = strlen(exclude), lm = strlen(mountpoints);
    filters_t *f = calloc(1, sizeof *f);

    snprintf(err, errlen, "out of memory");
    if (!f)
        return NULL;
    /* three NUL-terminated copies in one block */
    f->text = malloc(li + le + lm + 3);
    if (!f->text)
        goto fail;
    memcpy(f->text, include, li + 1);
    memcpy(f->text + li + 1, exclude, le + 1);
    memcpy(f->text + li + le + 2, mountpoints, lm + 1);
    if (parse_topics(f->text, &f->include, &f->ninclude, err, errlen) < 0 ||
        parse_topics(f->text + li + 1, &f->exclude, &f->nexclude, err, errlen) < 0 ||
        parse_mountpoints(f->text + li + le + 2, &f->mountpoints, &f->nmountpoints) < 0)
        goto fail;
    err[0] = '\0';
    return f;
fail:
    filters_free(f);
    return NULL;
}

void filters_free(filters_t *f)
{
    size_t i;

    if (!f)
        return;
    for (i = 0; i < f->ninclude; i++)
        free(f->include[i].words);
    for (i = 0; i < f->nexclude; i++)
        free(f->exclude[i].words);
    free(f->include);
    free(f->exclude);
    free(f->mountpoints);
    free(f->text);
    free(f);
}

static int mode_named(const char *s, size_t n)
{
    static const struct { const char *name; int mode; } modes[] = {
        {"none", PM_NONE}, {"hash", PM_HASH}, {"truncated", PM_TRUNCATED}, {"full", PM_FULL}};
    size_t i;

    for (i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (strlen(modes[i].name) == n && memcmp(modes[i].name, s, n) == 0)
            return modes[i].mode;
    return -1;
}

payload_rules_t *payload_rules_parse(const char *spec, char *err, size_t errlen)
{
    size_t len = strlen(spec), n, k = 0;
    const char *p, *s, *e;
    payload_rules_t *r = calloc(1, sizeof *r);

    snprintf(err, errlen, "out of memory");
    if (!r)
        return NULL;
    r->text = malloc(len + 1);
    r->spec = malloc(len + 1);
    if (!r->text || !r->spec)
        goto fail;
    memcpy(r->text, spec, len + 1);
    memcpy(r->spec, spec, len + 1);
    r->strictest = PM_FULL;
    n = count_items(r->text);
    if (n && !(r->rules = calloc(n, sizeof *r->rules)))
        goto fail;
    p = r->text;
    while (k < n && next_item(&p, &s, &e)) {
        const char *colon = e, *fs = s, *fe, *ms, *me = e;
        while (colon > s && colon[-1] != ':')
            colon--;
        if (colon == s) {
            snprintf(err, errlen, "payload_topics: '%.*s' is not FILTER:MODE", (int)(e - s), s);
            goto fail;
        }
        fe = colon - 1;
        ms = colon;
        trim(&fs, &fe);
        trim(&ms, &me);
        r->rules[k].mode = mode_named(ms, (size_t)(me - ms));
        if (r->rules[k].mode < 0) {
            snprintf(err, errlen, "payload_topics: unknown mode '%.*s' in '%.*s' (none, hash, "
                     "truncated or full)", (int)(me - ms), ms, (int)(e - s), s);
            goto fail;
        }
        if (fe == fs) {
            snprintf(err, errlen, "payload_topics: no topic filter in '%.*s'", (int)(e - s), s);
            goto fail;
        }
        if (parse_filter(fs, fe, &r->rules[k].filter, err, errlen) < 0) {
            if (r->rules[k].filter.words)
                snprintf(err, errlen, "payload_topics: '%.*s' is not a valid MQTT topic filter "
                         "(in '%.*s')", (int)(fe - fs), fs, (int)(e - s), s);
            k++;
            goto fail;
        }
        k++;
        if (r->rules[k - 1].filter.nwords > PAYLOAD_RULE_WORDS_MAX) {
            snprintf(err, errlen, "payload_topics: '%.*s' has more than %d levels",
                     (int)(fe - fs), fs, PAYLOAD_RULE_WORDS_MAX);
            goto fail;
        }
        r->strictest = payload_mode_stricter(r->strictest, r->rules[k - 1].mode);
    }
    r->n = k;
    err[0] = '\0';
    return r;
fail:
    r->n = k;
    payload_rules_free(r);
    return NULL;
}

void payload_rules_free(payload_rules_t *r)
{
    size_t i;

    if (!r)
        return;
    for (i = 0; i < r->n; i++)
        free(r->rules[i].filter.words);
    free(r->rules);
    free(r->text);
    free(r->spec);
    free(r);
}

int payload_rules_mode(const payload_rules_t *r, const span_t *words, size_t nwords)
{
    size_t i;

    /* a filter of k levels looks at no word past the k-th: at most
     * PAYLOAD_RULE_WORDS_MAX of them (payload_rules_parse) */
    for (i = 0; i < r->n; i++)
        if (topic_matches(&r->rules[i].filter, words, nwords))
            return r->rules[i].mode;
    return -1;
}
