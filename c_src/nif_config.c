/* nif_config.c - start/2, configure/1 and stop/1: the configuration map
 * checked key by key (a bad value is a clear error naming the key, nothing
 * started), the run-time keys applied to the running hook path, the writer
 * started (writer.c) with the rest, and stopped with its counters kept. */
#include <erl_nif.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nif_priv.h"
#include "plugin_rows.h"
#include "text.h"

#ifndef PGEV_VERSION
#define PGEV_VERSION "unknown"
#endif

/* hooks: all | [Name :: atom()] -> bit mask over every arity of each name */
static int hooks_mask(ErlNifEnv *env, const priv_t *p, ERL_NIF_TERM t, uint64_t *mask)
{
    ERL_NIF_TERM head, tail = t;
    int i;

    if (enif_is_identical(t, p->am.am_all)) {
        *mask = (HOOK_COUNT >= 64) ? ~0ull : ((1ull << HOOK_COUNT) - 1);
        return 0;
    }
    *mask = 0;
    while (enif_get_list_cell(env, tail, &head, &tail)) {
        int found = 0;
        for (i = 0; i < HOOK_COUNT; i++) {
            if (enif_is_identical(p->hook_atom[i], head)) {
                *mask |= 1ull << i;
                found = 1;
            }
        }
        if (!found)
            return -1;
    }
    return enif_is_empty_list(env, tail) ? 0 : -1;
}

/* a binary map value as a fresh C string; NULL when absent or not text */
static char *get_cstr(ErlNifEnv *env, ERL_NIF_TERM map, ERL_NIF_TERM key, int *missing)
{
    ERL_NIF_TERM v;
    ErlNifBinary bin;
    char *s;

    *missing = 0;
    if (!enif_get_map_value(env, map, key, &v)) {
        *missing = 1;
        return NULL;
    }
    if (!enif_inspect_binary(env, v, &bin) || memchr(bin.data, 0, bin.size))
        return NULL;
    s = malloc(bin.size + 1);
    if (!s)
        return NULL;
    memcpy(s, bin.data, bin.size);
    s[bin.size] = '\0';
    return s;
}

static int get_num(ErlNifEnv *env, ERL_NIF_TERM map, ERL_NIF_TERM key,
                   ErlNifSInt64 lo, ErlNifSInt64 hi, ErlNifSInt64 *out)
{
    ERL_NIF_TERM v;

    if (!enif_get_map_value(env, map, key, &v))
        return 0; /* keep the current value */
    if (!enif_get_int64(env, v, out) || *out < lo || *out > hi)
        return -1;
    return 0;
}

/* payload_modes: #{Hook => none | truncated | full}; unnamed hooks keep theirs */
static int payload_modes(ErlNifEnv *env, const priv_t *p, ERL_NIF_TERM m, uint8_t *modes)
{
    ErlNifMapIterator it;
    ERL_NIF_TERM k, v;
    int i, ok = 1;

    if (!enif_map_iterator_create(env, m, &it, ERL_NIF_MAP_ITERATOR_FIRST))
        return -1;
    while (ok && enif_map_iterator_get_pair(env, &it, &k, &v)) {
        int mode = enif_is_identical(v, p->am.am_none) ? PM_NONE
                   : enif_is_identical(v, p->am.am_full) ? PM_FULL
                   : enif_is_identical(v, p->am.am_truncated) ? PM_TRUNCATED : -1;
        int found = 0;
        for (i = 0; i < HOOK_COUNT; i++) {
            if (enif_is_identical(p->hook_atom[i], k)) {
                modes[i] = (uint8_t)mode;
                found = 1;
            }
        }
        ok = found && mode >= 0;
        enif_map_iterator_next(env, &it);
    }
    enif_map_iterator_destroy(env, &it);
    return ok ? 0 : -1;
}

/* the keys that may change while running; everything absent stays as is */
typedef struct runtime_cfg {
    uint64_t mask;
    ErlNifSInt64 batch, flush_ms, qmax, qbytes, pmax, jmax;
    uint8_t modes[HOOK_COUNT];
    filters_t *filters;          /* new set, or NULL: unchanged */
    int rules_set;               /* payload_topics given: publish rules (NULL: no rule) */
    payload_rules_t *rules;
    int peer_mode;
} runtime_cfg_t;

static const char *parse_runtime(ErlNifEnv *env, priv_t *p, ERL_NIF_TERM m, runtime_cfg_t *rc,
                                 char *err, size_t errlen)
{
    ERL_NIF_TERM v;
    queue_stats_t qs;
    char *inc, *exc, *mps;
    int mi, me, mm;

    queue_get_stats(&p->q, &qs);
    rc->mask = __atomic_load_n(&p->enabled, __ATOMIC_RELAXED);
    pthread_mutex_lock(&p->mu);
    rc->batch = (ErlNifSInt64)p->batch_size;
    rc->flush_ms = p->flush_interval_ms;
    rc->jmax = (ErlNifSInt64)p->json_max;
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_lock(&p->q.mu);
    rc->qmax = (ErlNifSInt64)p->q.max_events;
    rc->qbytes = (ErlNifSInt64)p->q.max_bytes;
    pthread_mutex_unlock(&p->q.mu);
    rc->pmax = (ErlNifSInt64)__atomic_load_n(&p->payload_max, __ATOMIC_RELAXED);
    memcpy(rc->modes, p->payload_mode, sizeof rc->modes);
    rc->filters = NULL;
    rc->rules_set = 0;
    rc->rules = NULL;
    rc->peer_mode = __atomic_load_n(&p->peer_mode, __ATOMIC_RELAXED);

    if (get_num(env, m, p->am.am_batch_size, 1, 1000000, &rc->batch) < 0)
        return "batch_size must be an integer from 1 to 1000000";
    if (get_num(env, m, p->am.am_flush_interval_ms, 1, 3600000, &rc->flush_ms) < 0)
        return "flush_interval_ms must be an integer from 1 to 3600000";
    if (get_num(env, m, p->am.am_queue_max_events, 1, INT64_MAX, &rc->qmax) < 0)
        return "queue_max_events must be a positive integer";
    if (get_num(env, m, p->am.am_queue_max_bytes, 1, INT64_MAX, &rc->qbytes) < 0)
        return "queue_max_bytes must be a positive integer";
    if (get_num(env, m, p->am.am_payload_max_bytes, 0, PAYLOAD_FULL_MAX, &rc->pmax) < 0)
        return "payload_max_bytes must be an integer from 0 to 268435456";
    if (get_num(env, m, p->am.am_payload_json_max_bytes, 0, PAYLOAD_FULL_MAX, &rc->jmax) < 0)
        return "payload_json_max_bytes must be an integer from 0 to 268435456";
    if (enif_get_map_value(env, m, p->am.am_hooks, &v) && hooks_mask(env, p, v, &rc->mask) < 0)
        return "hooks must be 'all' or a list of hook names";
    if (enif_get_map_value(env, m, p->am.am_payload_modes, &v) &&
        (!enif_is_map(env, v) || payload_modes(env, p, v, rc->modes) < 0))
        return "payload_modes must map hook names to none, truncated or full";
    if (enif_get_map_value(env, m, p->am.am_peer_addr, &v)) {
        if (enif_is_identical(v, p->am.am_full))
            rc->peer_mode = PEER_FULL;
        else if (enif_is_identical(v, p->am.am_network))
            rc->peer_mode = PEER_NETWORK;
        else if (enif_is_identical(v, p->am.am_none))
            rc->peer_mode = PEER_NONE;
        else
            return "peer_addr must be full, network or none";
    }
    {
        int missing;
        char *spec = get_cstr(env, m, p->am.am_payload_topics, &missing);
        const payload_rules_t *cur = __atomic_load_n(&p->payload_rules, __ATOMIC_ACQUIRE);
        if (!missing && spec && cur && strcmp(cur->spec, spec) == 0) {
            free(spec);   /* the same rules: kept (a replaced set stays until unload) */
        } else if (!missing) {
            if (!spec)
                return "payload_topics must be a string";
            rc->rules = payload_rules_parse(spec, err, errlen);
            free(spec);
            if (!rc->rules)
                return err;
            rc->rules_set = 1;
            if (rc->rules->n == 0) {   /* no rule: nothing on the hook path */
                payload_rules_free(rc->rules);
                rc->rules = NULL;
            }
        }
    }
    inc = get_cstr(env, m, p->am.am_topic_include, &mi);
    exc = get_cstr(env, m, p->am.am_topic_exclude, &me);
    mps = get_cstr(env, m, p->am.am_mountpoints, &mm);
    if (!mi || !me || !mm) {
        if (mi || me || mm || !inc || !exc || !mps) {
            free(inc);
            free(exc);
            free(mps);
            payload_rules_free(rc->rules);
            rc->rules = NULL;
            return "topic_include, topic_exclude and mountpoints go together, as strings";
        }
        rc->filters = filters_parse(inc, exc, mps, err, errlen);
        free(inc);
        free(exc);
        free(mps);
        if (!rc->filters) {
            payload_rules_free(rc->rules);
            rc->rules = NULL;
            return err;
        }
    }
    return NULL;
}

static void apply_runtime(priv_t *p, runtime_cfg_t *rc)
{
    int i;

    queue_set_limits(&p->q, (size_t)rc->qmax, (size_t)rc->qbytes, (size_t)rc->batch);
    __atomic_store_n(&p->payload_max, (size_t)rc->pmax, __ATOMIC_RELAXED);
    for (i = 0; i < HOOK_COUNT; i++)
        __atomic_store_n(&p->payload_mode[i], rc->modes[i], __ATOMIC_RELAXED);
    __atomic_store_n(&p->enabled, rc->mask, __ATOMIC_RELAXED);
    __atomic_store_n(&p->peer_mode, (uint8_t)rc->peer_mode, __ATOMIC_RELAXED);
    pthread_mutex_lock(&p->mu);
    p->batch_size = (size_t)rc->batch;
    p->flush_interval_ms = (int)rc->flush_ms;
    p->json_max = (size_t)rc->jmax;
    if (p->w)
        writer_tune(p->w, p->batch_size, p->flush_interval_ms, p->json_max);
    if (rc->filters) {
        /* readers may still hold the old set: keep it until unload */
        rc->filters->retired = p->filters;
        __atomic_store_n(&p->filters, rc->filters, __ATOMIC_RELEASE);
        rc->filters = NULL;
    }
    if (rc->rules_set) {
        /* readers may still hold the old set: keep it until unload */
        payload_rules_t *old = p->payload_rules;
        __atomic_store_n(&p->payload_rules, rc->rules, __ATOMIC_RELEASE);
        if (old) {
            old->retired = p->rules_retired;
            p->rules_retired = old;
        }
        rc->rules = NULL;
        rc->rules_set = 0;
    }
    pthread_mutex_unlock(&p->mu);
}

static void log_to_owner(void *ctx, int level, const char *msg)
{
    priv_t *p = ctx;
    ErlNifEnv *env;
    ERL_NIF_TERM bin, lvl;
    size_t n = strlen(msg);
    unsigned char *d;

    pthread_mutex_lock(&p->mu);
    if (!p->has_owner)
        goto out;
    env = enif_alloc_env();
    if (!env)
        goto out;
    d = enif_make_new_binary(env, n, &bin);
    if (d) {
        memcpy(d, msg, n);
        lvl = level == WLOG_INFO ? p->am.am_info
              : level == WLOG_WARNING ? p->am.am_warning : p->am.am_error;
        enif_send(NULL, &p->owner, env,
                  enif_make_tuple3(env, p->am.am_vmq_pgevents_log, lvl, bin));
    }
    enif_free_env(env);
out:
    pthread_mutex_unlock(&p->mu);
}

/* configure(Config :: map()) -> ok | {error, Message}: the run-time keys */
ERL_NIF_TERM nif_configure(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    priv_t *p = enif_priv_data(env);
    runtime_cfg_t rc;
    const char *bad;
    char err[256];

    (void)argc;
    if (!enif_is_map(env, argv[0]))
        return enif_make_badarg(env);
    bad = parse_runtime(env, p, argv[0], &rc, err, sizeof err);
    if (bad)
        return error_msg(env, p, bad);
    apply_runtime(p, &rc);
    return p->am.am_ok;
}

/* The rows of a start, once its journal is open (so that they are in it;
 * hooks called while it opened come before them): pgevents_start with the
 * settings that change what is recorded, then pgevents_crashed when the
 * journal's directory held the running marker of another incarnation
 * (crashed: it ended without a stop). */
static void start_rows(ErlNifEnv *env, priv_t *p, ERL_NIF_TERM m, int journal, int64_t crashed)
{
    prow_settings_t s;
    const payload_rules_t *r = __atomic_load_n(&p->payload_rules, __ATOMIC_ACQUIRE);
    char *inc, *exc, *mps;
    int missing;

    inc = get_cstr(env, m, p->am.am_topic_include, &missing);
    exc = get_cstr(env, m, p->am.am_topic_exclude, &missing);
    mps = get_cstr(env, m, p->am.am_mountpoints, &missing);
    memset(&s, 0, sizeof s);
    s.version = PGEV_VERSION;
    s.hooks = __atomic_load_n(&p->enabled, __ATOMIC_RELAXED);
    s.payload_modes = p->payload_mode;
    s.payload_max_bytes = __atomic_load_n(&p->payload_max, __ATOMIC_RELAXED);
    s.topic_include = inc && *inc ? inc : NULL;
    s.topic_exclude = exc && *exc ? exc : NULL;
    s.mountpoints = mps && *mps ? mps : NULL;
    s.payload_topics = r ? r->spec : NULL;
    s.peer_mode = __atomic_load_n(&p->peer_mode, __ATOMIC_RELAXED);
    s.journal = journal;
    (void)prow_start(&p->q, &s);
    if (crashed > 0 && crashed != p->incarnation)
        (void)prow_crashed(&p->q, crashed);
    free(inc);
    free(exc);
    free(mps);
}

/* start(Config :: map(), Owner :: pid()) -> ok | {error, Message} */

ERL_NIF_TERM nif_start(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    priv_t *p = enif_priv_data(env);
    writer_config_t cfg;
    runtime_cfg_t rc;
    char *dsn = NULL, *table = NULL, *schema = NULL, *node = NULL, *spool_dir = NULL;
    ErlNifSInt64 bmin = 100, bmax = 5000, spool_max = 1073741824, pg_timeout = 10000;
    ErlNifSInt64 jsync = 1000, retention = 0, compress_after = 0, compress_every = 60000;
    ErlNifSInt64 running_every = 3600000;
    ErlNifSInt64 jmem = 536870912;
    int journal = 1;
    int64_t crashed;
    char *partition = NULL, *distribute = NULL;
    ERL_NIF_TERM result;
    int missing, schema_missing;
    char err[256];
    const char *bad = NULL;
    ErlNifPid owner;
    writer_t *w;

    (void)argc;
    memset(&rc, 0, sizeof rc);
    if (!enif_is_map(env, argv[0]) || !enif_get_local_pid(env, argv[1], &owner))
        return enif_make_badarg(env);

    dsn = get_cstr(env, argv[0], p->am.am_dsn, &missing);
    if (!dsn && !missing)
        bad = "dsn must be a string without NUL bytes";
    else if (!dsn && (dsn = strdup("")) == NULL)
        bad = "out of memory";
    table = get_cstr(env, argv[0], p->am.am_table, &missing);
    if (!bad && (!table || !*table || strlen(table) > 49))
        bad = "table must be a name of 1 to 49 bytes (<table>_failed_logins must fit in 63)";
    schema = get_cstr(env, argv[0], p->am.am_schema_sql, &schema_missing);
    node = get_cstr(env, argv[0], p->am.am_node, &missing);
    if (!bad && !node)
        bad = "node must be a string";
    if (!bad && get_num(env, argv[0], p->am.am_backoff_min_ms, 1, 600000, &bmin) < 0)
        bad = "backoff_min_ms must be an integer from 1 to 600000";
    if (!bad && get_num(env, argv[0], p->am.am_backoff_max_ms, 1, 3600000, &bmax) < 0)
        bad = "backoff_max_ms must be an integer from 1 to 3600000";
    if (!bad && get_num(env, argv[0], p->am.am_pg_timeout_ms, 100, 3600000, &pg_timeout) < 0)
        bad = "pg_timeout_ms must be an integer from 100 to 3600000";
    partition = get_cstr(env, argv[0], p->am.am_partition, &missing);
    if (!bad && missing)
        partition = strdup("none");
    if (!bad && (!partition || (strcmp(partition, "day") != 0 && strcmp(partition, "hour") != 0 &&
                                strcmp(partition, "none") != 0)))
        bad = "partition must be day, hour or none";
    distribute = get_cstr(env, argv[0], p->am.am_distribute, &missing);
    if (!bad && missing)
        distribute = strdup("off");
    if (!bad && (!distribute || (strcmp(distribute, "off") != 0 && strcmp(distribute, "on") != 0 &&
                                 strcmp(distribute, "auto") != 0)))
        bad = "distribute must be off, on or auto";
    if (!bad && get_num(env, argv[0], p->am.am_retention_s, 0, INT64_MAX / 2, &retention) < 0)
        bad = "retention_s must be a non-negative integer";
    if (!bad && get_num(env, argv[0], p->am.am_compress_after_s, 0, INT64_MAX / 2, &compress_after) < 0)
        bad = "compress_after_s must be a non-negative integer";
    if (!bad && get_num(env, argv[0], p->am.am_compress_every_ms, 10, 86400000, &compress_every) < 0)
        bad = "compress_every_ms must be an integer from 10 to 86400000";
    if (!bad && get_num(env, argv[0], p->am.am_running_row_every_ms, 1000, 3600000, &running_every) < 0)
        bad = "running_row_every_ms must be an integer from 1000 to 3600000";
    if (!bad && get_num(env, argv[0], p->am.am_journal_sync_ms, 1, 3600000, &jsync) < 0)
        bad = "journal_sync_ms must be an integer from 1 to 3600000";
    if (!bad && get_num(env, argv[0], p->am.am_journal_memory_bytes, 0, INT64_MAX, &jmem) < 0)
        bad = "journal_memory_bytes must be a non-negative integer";
    {
        ERL_NIF_TERM jv;
        if (enif_get_map_value(env, argv[0], p->am.am_journal, &jv)) {
            if (enif_is_identical(jv, p->am.am_false))
                journal = 0;
            else if (!enif_is_identical(jv, p->am.am_true) && !bad)
                bad = "journal must be true or false";
        }
    }
    if (!bad && get_num(env, argv[0], p->am.am_spool_max_bytes, 0, INT64_MAX, &spool_max) < 0)
        bad = "spool_max_bytes must be a non-negative integer";
    spool_dir = get_cstr(env, argv[0], p->am.am_spool_dir, &missing);
    if (!bad && !spool_dir && !missing)
        bad = "spool_dir must be a string";
    if (spool_dir && !*spool_dir) {
        free(spool_dir);          /* "": no spool */
        spool_dir = NULL;
    }
    if (!bad && spool_dir && strlen(spool_dir) > 3800)
        bad = "spool_dir is too long";
    if (!bad && conninfo_check(dsn) < 0)
        bad = "dsn is not a valid libpq connection string or URI";
    if (!bad)
        bad = parse_runtime(env, p, argv[0], &rc, err, sizeof err);
    if (bad) {
        result = error_msg(env, p, bad);
        goto out;
    }

    /* one start or stop at a time: the writer is made without mu held
     * (its log callback takes it), so the state says a start is under
     * way; a second start meanwhile is refused like one after it, a stop
     * waits for it (stop_writer) */
    wait_retired();   /* a writer of an unloaded instance: its journal closed first */
    pthread_mutex_lock(&p->mu);
    while (p->changing == CH_STOPPING)
        pthread_cond_wait(&p->cv, &p->mu);
    if (p->w || p->changing) {
        pthread_mutex_unlock(&p->mu);
        result = error_tuple(env, p, p->am.am_already_started);
        goto out;
    }
    p->changing = CH_STARTING;
    p->owner = owner;
    p->has_owner = 1;
    conninfo_masked(dsn, p->dsn_masked, sizeof p->dsn_masked);
    pthread_mutex_unlock(&p->mu);
    apply_runtime(p, &rc);
    queue_reset_peaks(&p->q);

    cfg.conninfo = dsn;
    cfg.table = table;
    cfg.schema_sql = schema;
    cfg.node = node;
    cfg.incarnation = p->incarnation;
    cfg.batch_size = (size_t)rc.batch;
    cfg.flush_interval_ms = (int)rc.flush_ms;
    cfg.json_max = (size_t)rc.jmax;
    cfg.backoff_min_ms = (int)bmin;
    cfg.backoff_max_ms = (int)bmax;
    cfg.pg_timeout_ms = (int)pg_timeout;
    cfg.spool_dir = spool_dir;
    cfg.spool_max_bytes = (uint64_t)spool_max;
    cfg.journal_sync_ms = (int)jsync;
    cfg.journal_memory_bytes = (uint64_t)jmem;
    cfg.partition = partition;
    cfg.distribute = distribute;
    cfg.retention_s = retention;
    cfg.compress_after_s = compress_after;
    cfg.compress_every_ms = (int)compress_every;
    cfg.running_every_ms = (int)running_every;
    cfg.journal = journal;
    /* an earlier incarnation's running marker: it never stopped */
    crashed = journal && spool_dir ? prow_marker_read(spool_dir) : 0;
    __atomic_store_n(&p->refusing, 0, __ATOMIC_RELEASE);   /* recording again (stop_writer) */
    /* the writer logs through log_to_owner, which takes mu: not held here */
    w = writer_start(&cfg, &p->q, log_to_owner, p, err, sizeof err);
    if (!w)
        __atomic_store_n(&p->refusing, 1, __ATOMIC_RELEASE);   /* nothing would write them */
    if (w)
        start_rows(env, p, argv[0], journal && spool_dir, crashed);
    if (w && journal && spool_dir && prow_marker_write(spool_dir, p->incarnation) == 0)
        snprintf(p->marker_dir, sizeof p->marker_dir, "%s", spool_dir);
    else
        p->marker_dir[0] = '\0';   /* a crash of this start is found by the next start's rows */
    pthread_mutex_lock(&p->mu);
    p->w = w;
    p->changing = 0;
    pthread_mutex_unlock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    result = w ? p->am.am_ok : error_msg(env, p, err);
out:
    filters_free(rc.filters);
    payload_rules_free(rc.rules);
    if (dsn) {
        memset(dsn, 0, strlen(dsn));
        free(dsn);
    }
    free(table);
    free(schema);
    free(node);
    free(spool_dir);
    free(partition);
    free(distribute);
    return result;
}

void stop_writer(priv_t *p, int timeout_ms)
{
    writer_t *w;
    writer_status_t last;

    pthread_mutex_lock(&p->mu);
    while (p->changing)   /* a start under way: stopped once made; a stop: done after it */
        pthread_cond_wait(&p->cv, &p->mu);
    p->changing = CH_STOPPING;
    w = p->w;
    p->w = NULL;
    pthread_mutex_unlock(&p->mu);

    if (w) {
        /* VerneMQ may call the hooks after the plugin stopped (its hooks
         * stay registered when its application stops by itself, at
         * vmq-admin node stop, or first in a broker stop when it was
         * enabled at run time): nothing would write or keep those events,
         * so from the moment the writer is told to stop they are dropped
         * and counted, until the next start */
        __atomic_store_n(&p->refusing, 1, __ATOMIC_RELEASE);
        /* the last row of this start: a hook's event after it is a drop */
        (void)prow_stop(&p->q);
        writer_stop(w, timeout_ms, &last); /* joins: the log callback may still run until then */
        if (p->marker_dir[0]) {
            prow_marker_remove(p->marker_dir);   /* a clean stop */
            p->marker_dir[0] = '\0';
        }
    }
    pthread_mutex_lock(&p->mu);
    p->has_owner = 0;
    if (w) {
        writer_status_add(&p->past, &last);
        p->past.spool_bytes = last.spool_bytes;
        p->past.last_write_us = last.last_write_us ? last.last_write_us : p->past.last_write_us;
        memcpy(p->past.last_error, last.last_error, sizeof last.last_error);
    }
    p->changing = 0;
    pthread_mutex_unlock(&p->mu);
    pthread_cond_broadcast(&p->cv);
}

/* stop(TimeoutMs) -> ok (dirty I/O: joins the writer thread) */
ERL_NIF_TERM nif_stop(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    priv_t *p = enif_priv_data(env);
    int timeout;

    (void)argc;
    if (!enif_get_int(env, argv[0], &timeout) || timeout < 0)
        return enif_make_badarg(env);
    stop_writer(p, timeout);
    return p->am.am_ok;
}

/* flush() -> ok: ask the writer to write what is queued now */
ERL_NIF_TERM nif_flush(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    priv_t *p = enif_priv_data(env);

    (void)argc;
    (void)argv;
    queue_request_flush(&p->q);
    return p->am.am_ok;
}

