/* nif.c - the NIF: load/unload, the hook entry point, start/stop of the
 * writer, status.
 *
 * All state lives in one priv_t handed to load as priv data. The hook
 * entry point (event/3) runs on the calling process's scheduler: it
 * decodes, builds one event, pushes it on the queue and returns; it never
 * waits for PostgreSQL. The writer thread (writer.c) is started by
 * start/2 and joined by stop/1 (a dirty I/O NIF) or by unload.
 *
 * Reloads. VerneMQ's plugin manager reloads every module of a plugin right
 * after starting it (code:load_file/1), and a code upgrade does the same:
 * the NIF's upgrade callback then adopts the running priv_t (queue,
 * writer, sequence, counters) instead of making a second one, and unload
 * tears it down only when the last module instance using it goes. Only a
 * library of the same build may adopt it (the structs are shared as they
 * are); another build is refused and the running one stays in use. The
 * library pins itself in memory at load (RTLD_NODELETE), so a purge of an
 * old instance never unmaps code the writer thread is running. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <erl_nif.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "atoms.h"
#include "buf.h"
#include "event.h"
#include "filter.h"
#include "hooks.h"
#include "queue.h"
#include "terms.h"
#include "text.h"
#include "writer.h"

#define ARGS_MAX 8
#define DEFAULT_QUEUE_EVENTS 100000
#define DEFAULT_QUEUE_BYTES (64u * 1024 * 1024)
#define DEFAULT_BATCH 5000
#define DEFAULT_PAYLOAD_MAX 65536
#define UNLOAD_STOP_MS 2000
#define PAYLOAD_FULL_MAX (256u * 1024 * 1024)
#define FILTER_WORDS_MAX 64

enum payload_mode { PM_TRUNCATED, PM_NONE, PM_FULL };

#ifndef PGEV_BUILD_ID
#define PGEV_BUILD_ID "unknown"
#endif
static const char build_id[] = PGEV_BUILD_ID;

typedef struct priv {
    const char *build;           /* build_id of the library that made it */
    size_t size;                 /* sizeof(priv_t) of that library */
    unsigned refs;               /* module instances using it (load/upgrade/unload) */
    atoms_t am;
    ERL_NIF_TERM hook_atom[HOOK_COUNT];
    unsigned hook_arity[HOOK_COUNT];
    queue_t q;
    int64_t incarnation;

    int topic_arg[HOOK_COUNT];   /* argument index of the topic, -1: none */
    int subid_arg[HOOK_COUNT];   /* argument index of the subscriber id */

    /* read on the hook path without a lock */
    uint64_t enabled;            /* bit per hook id */
    size_t payload_max;
    uint8_t payload_mode[HOOK_COUNT];
    filters_t *filters;          /* published with release; NULL: no filter */
    uint64_t recorded[HOOK_COUNT], dropped[HOOK_COUNT], malformed[HOOK_COUNT];
    uint64_t filtered[HOOK_COUNT];
    uint64_t rejected;           /* unknown hook or arity */

    /* guarded by mu */
    pthread_mutex_t mu;
    writer_t *w;
    writer_status_t past;        /* counters of writers already stopped */
    size_t batch_size, json_max;
    int flush_interval_ms;
    ErlNifPid owner;
    int has_owner;
    char dsn_masked[512];
} priv_t;

/* the host's wall clock (one vDSO call; the writer's clock for status
 * ages is the same) */
static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static ERL_NIF_TERM error_tuple(ErlNifEnv *env, const priv_t *p, ERL_NIF_TERM why)
{
    return enif_make_tuple2(env, p->am.am_error, why);
}

static ERL_NIF_TERM error_msg(ErlNifEnv *env, const priv_t *p, const char *msg)
{
    ERL_NIF_TERM bin;
    size_t n = strlen(msg);
    unsigned char *d = enif_make_new_binary(env, n, &bin);

    if (d)
        memcpy(d, msg, n);
    return error_tuple(env, p, bin);
}

/* ---- the hook path ---------------------------------------------------- */

/* the mountpoint of a subscriber id as UTF-8 into buf; -1 when unreadable */
static int subid_mountpoint(ErlNifEnv *env, ERL_NIF_TERM subid, char *buf, size_t cap, size_t *n)
{
    const ERL_NIF_TERM *e;
    ERL_NIF_TERM head, tail;
    ErlNifBinary bin;
    int arity, cp;
    buf_t b;

    if (!enif_get_tuple(env, subid, &arity, &e) || arity != 2)
        return -1;
    if (enif_inspect_binary(env, e[0], &bin)) {
        if (bin.size > cap)
            return -1;
        memcpy(buf, bin.data, bin.size);
        *n = bin.size;
        return 0;
    }
    buf_init(&b, buf, cap);
    tail = e[0];
    while (enif_get_list_cell(env, tail, &head, &tail)) {
        if (!enif_get_int(env, head, &cp) || b.len + 4 > cap || utf8_put(&b, cp) < 0)
            return -1;
    }
    *n = b.len;
    return enif_is_empty_list(env, tail) ? 0 : -1;
}

/* 1: record this call; 0: a filter leaves it out. Arguments of an
 * unexpected shape pass (they are recorded and marked malformed). */
static int passes_filters(ErlNifEnv *env, const priv_t *p, const filters_t *f, int hook,
                          const ERL_NIF_TERM *args)
{
    if (f->nmountpoints && p->subid_arg[hook] >= 0) {
        char mp[256];
        size_t n;
        if (subid_mountpoint(env, args[p->subid_arg[hook]], mp, sizeof mp, &n) == 0 &&
            !filters_mountpoint_ok(f, mp, n))
            return 0;
    }
    if ((f->ninclude || f->nexclude) && p->topic_arg[hook] >= 0) {
        span_t words[FILTER_WORDS_MAX];
        ERL_NIF_TERM head, tail = args[p->topic_arg[hook]];
        ErlNifBinary w;
        size_t n = 0;
        while (enif_get_list_cell(env, tail, &head, &tail)) {
            if (n == FILTER_WORDS_MAX || !enif_inspect_binary(env, head, &w))
                return 1;
            words[n++] = (span_t){(const char *)w.data, w.size, 1};
        }
        if (enif_is_empty_list(env, tail) && n > 0)
            return filters_topic_ok(f, words, n);
    }
    return 1;
}

static int find_hook(const priv_t *p, ERL_NIF_TERM name, unsigned arity)
{
    int i;

    for (i = 0; i < HOOK_COUNT; i++)
        if (p->hook_arity[i] == arity && enif_is_identical(p->hook_atom[i], name))
            return i;
    return -1;
}

/* event(Hook, Args, ConnId) -> ok | {error, Reason}. Never raises. */
static ERL_NIF_TERM nif_event(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    priv_t *p = enif_priv_data(env);
    ERL_NIF_TERM args[ARGS_MAX], head, tail = argv[1];
    unsigned n = 0;
    int hook, bad;
    ErlNifSInt64 conn;
    decoded_t d;
    uint64_t seq;
    int rc;

    (void)argc;
    while (enif_get_list_cell(env, tail, &head, &tail)) {
        if (n == ARGS_MAX)
            goto unknown;
        args[n++] = head;
    }
    if (!enif_is_empty_list(env, tail))
        goto unknown;
    hook = find_hook(p, argv[0], n);
    if (hook < 0)
        goto unknown;
    if (!(__atomic_load_n(&p->enabled, __ATOMIC_RELAXED) & (1ull << hook)))
        return p->am.am_disabled;
    {
        const filters_t *f = __atomic_load_n(&p->filters, __ATOMIC_ACQUIRE);
        if (f && !passes_filters(env, p, f, hook, args)) {
            __atomic_fetch_add(&p->filtered[hook], 1, __ATOMIC_RELAXED);
            return p->am.am_filtered;
        }
    }
    if (queue_full_hint(&p->q)) {
        queue_drop(&p->q);
        __atomic_fetch_add(&p->dropped[hook], 1, __ATOMIC_RELAXED);
        return error_tuple(env, p, p->am.am_queue_full);
    }

    event_in_init(&d.in, hook, wall_us());
    if (enif_get_int64(env, argv[2], &conn)) {
        d.in.conn_id = conn;
        d.in.has_conn = 1;
    }
    {
        size_t pmax;
        switch (__atomic_load_n(&p->payload_mode[hook], __ATOMIC_RELAXED)) {
        case PM_NONE: pmax = 0; break;
        case PM_FULL: pmax = PAYLOAD_FULL_MAX; break;
        default: pmax = __atomic_load_n(&p->payload_max, __ATOMIC_RELAXED);
        }
        decode_event(env, &p->am, hook, args, pmax, &d);
    }
    bad = d.malformed != 0;
    rc = queue_add(&p->q, &d.in, &seq);
    decoded_free(&d);
    if (rc != 0) {
        __atomic_fetch_add(&p->dropped[hook], 1, __ATOMIC_RELAXED);
        return error_tuple(env, p, rc == 1 ? p->am.am_queue_full : p->am.am_no_memory);
    }
    __atomic_fetch_add(&p->recorded[hook], 1, __ATOMIC_RELAXED);
    if (bad)
        __atomic_fetch_add(&p->malformed[hook], 1, __ATOMIC_RELAXED);
    return p->am.am_ok;
unknown:
    __atomic_fetch_add(&p->rejected, 1, __ATOMIC_RELAXED);
    return error_tuple(env, p, p->am.am_unknown_hook);
}

/* ---- configuration ---------------------------------------------------- */

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
    inc = get_cstr(env, m, p->am.am_topic_include, &mi);
    exc = get_cstr(env, m, p->am.am_topic_exclude, &me);
    mps = get_cstr(env, m, p->am.am_mountpoints, &mm);
    if (!mi || !me || !mm) {
        if (mi || me || mm || !inc || !exc || !mps) {
            free(inc);
            free(exc);
            free(mps);
            return "topic_include, topic_exclude and mountpoints go together, as strings";
        }
        rc->filters = filters_parse(inc, exc, mps, err, errlen);
        free(inc);
        free(exc);
        free(mps);
        if (!rc->filters)
            return err;
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
static ERL_NIF_TERM nif_configure(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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

/* start(Config :: map(), Owner :: pid()) -> ok | {error, Message} */
static ERL_NIF_TERM nif_start(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    priv_t *p = enif_priv_data(env);
    writer_config_t cfg;
    runtime_cfg_t rc;
    char *dsn = NULL, *table = NULL, *schema = NULL, *node = NULL, *spool_dir = NULL;
    ErlNifSInt64 bmin = 100, bmax = 5000, spool_max = 1073741824, pg_timeout = 10000;
    ErlNifSInt64 jsync = 1000, retention = 0, compress_after = 0, compress_every = 60000;
    int journal = 1;
    char *partition = NULL;
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
    if (!bad && get_num(env, argv[0], p->am.am_retention_s, 0, INT64_MAX / 2, &retention) < 0)
        bad = "retention_s must be a non-negative integer";
    if (!bad && get_num(env, argv[0], p->am.am_compress_after_s, 0, INT64_MAX / 2, &compress_after) < 0)
        bad = "compress_after_s must be a non-negative integer";
    if (!bad && get_num(env, argv[0], p->am.am_compress_every_ms, 10, 86400000, &compress_every) < 0)
        bad = "compress_every_ms must be an integer from 10 to 86400000";
    if (!bad && get_num(env, argv[0], p->am.am_journal_sync_ms, 1, 3600000, &jsync) < 0)
        bad = "journal_sync_ms must be an integer from 1 to 3600000";
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

    pthread_mutex_lock(&p->mu);
    if (p->w) {
        pthread_mutex_unlock(&p->mu);
        result = error_tuple(env, p, p->am.am_already_started);
        goto out;
    }
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
    cfg.partition = partition;
    cfg.retention_s = retention;
    cfg.compress_after_s = compress_after;
    cfg.compress_every_ms = (int)compress_every;
    cfg.journal = journal;
    /* the writer logs through log_to_owner, which takes mu: not held here */
    w = writer_start(&cfg, &p->q, log_to_owner, p, err, sizeof err);
    if (!w) {
        result = error_msg(env, p, err);
        goto out;
    }
    pthread_mutex_lock(&p->mu);
    p->w = w;
    pthread_mutex_unlock(&p->mu);
    result = p->am.am_ok;
out:
    filters_free(rc.filters);
    if (dsn) {
        memset(dsn, 0, strlen(dsn));
        free(dsn);
    }
    free(table);
    free(schema);
    free(node);
    free(spool_dir);
    free(partition);
    return result;
}

static void stop_writer(priv_t *p, int timeout_ms)
{
    writer_t *w;

    pthread_mutex_lock(&p->mu);
    w = p->w;
    p->w = NULL;
    pthread_mutex_unlock(&p->mu);
    writer_status_t last;

    if (w)
        writer_stop(w, timeout_ms, &last); /* joins: the log callback may still run until then */
    pthread_mutex_lock(&p->mu);
    p->has_owner = 0;
    if (w) {
        writer_status_add(&p->past, &last);
        p->past.spool_bytes = last.spool_bytes;
        p->past.last_write_us = last.last_write_us ? last.last_write_us : p->past.last_write_us;
        memcpy(p->past.last_error, last.last_error, sizeof last.last_error);
    }
    pthread_mutex_unlock(&p->mu);
}

/* stop(TimeoutMs) -> ok (dirty I/O: joins the writer thread) */
static ERL_NIF_TERM nif_stop(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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
static ERL_NIF_TERM nif_flush(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    priv_t *p = enif_priv_data(env);

    (void)argc;
    (void)argv;
    queue_request_flush(&p->q);
    return p->am.am_ok;
}

/* hooks() -> [{Name, Arity}] in the order of hooks.h */
static ERL_NIF_TERM nif_hooks(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    priv_t *p = enif_priv_data(env);
    ERL_NIF_TERM list = enif_make_list(env, 0);
    int i;

    (void)argc;
    (void)argv;
    for (i = HOOK_COUNT - 1; i >= 0; i--)
        list = enif_make_list_cell(
            env, enif_make_tuple2(env, p->hook_atom[i], enif_make_uint(env, p->hook_arity[i])),
            list);
    return list;
}

static ERL_NIF_TERM make_u64(ErlNifEnv *env, uint64_t v)
{
    return enif_make_uint64(env, v);
}

static ERL_NIF_TERM text_bin(ErlNifEnv *env, const char *s)
{
    ERL_NIF_TERM bin;
    size_t n = strlen(s);
    unsigned char *d = enif_make_new_binary(env, n, &bin);

    if (d)
        memcpy(d, s, n);
    return bin;
}

/* per hook name (all arities together): #{Hook => #{recording, payload_mode,
 * recorded, dropped, malformed, filtered, written, dead_lettered}} */
static ERL_NIF_TERM per_hook(ErlNifEnv *env, priv_t *p, const writer_status_t *ws)
{
    ERL_NIF_TERM map = enif_make_new_map(env);
    uint64_t enabled = __atomic_load_n(&p->enabled, __ATOMIC_RELAXED);
    int i, j;

    for (i = 0; i < HOOK_COUNT; i++) {
        uint64_t c[7] = {0};
        ERL_NIF_TERM k[9], v[9], inner, mode;
        int seen = 0, on = 0;
        for (j = 0; j < i; j++)
            if (enif_is_identical(p->hook_atom[j], p->hook_atom[i]))
                seen = 1;
        if (seen)
            continue;
        for (j = i; j < HOOK_COUNT; j++) {
            if (!enif_is_identical(p->hook_atom[j], p->hook_atom[i]))
                continue;
            c[0] += __atomic_load_n(&p->recorded[j], __ATOMIC_RELAXED);
            c[1] += __atomic_load_n(&p->dropped[j], __ATOMIC_RELAXED) + ws->dropped_hook[j];
            c[2] += __atomic_load_n(&p->malformed[j], __ATOMIC_RELAXED);
            c[3] += __atomic_load_n(&p->filtered[j], __ATOMIC_RELAXED);
            c[4] += ws->written_hook[j];
            c[5] += ws->dead_hook[j];
            c[6] += ws->spooled_hook[j];
            on |= (enabled >> j) & 1;
        }
        switch (__atomic_load_n(&p->payload_mode[i], __ATOMIC_RELAXED)) {
        case PM_NONE: mode = p->am.am_none; break;
        case PM_FULL: mode = p->am.am_full; break;
        default: mode = p->am.am_truncated;
        }
        k[0] = p->am.am_recorded;      v[0] = make_u64(env, c[0]);
        k[1] = p->am.am_dropped;       v[1] = make_u64(env, c[1]);
        k[2] = p->am.am_malformed;     v[2] = make_u64(env, c[2]);
        k[3] = p->am.am_filtered;      v[3] = make_u64(env, c[3]);
        k[4] = p->am.am_written;       v[4] = make_u64(env, c[4]);
        k[5] = p->am.am_dead_lettered; v[5] = make_u64(env, c[5]);
        k[6] = p->am.am_recording;     v[6] = on ? p->am.am_true : p->am.am_false;
        k[7] = p->am.am_payload_mode;  v[7] = mode;
        k[8] = p->am.am_spooled;       v[8] = make_u64(env, c[6]);
        enif_make_map_from_arrays(env, k, v, 9, &inner);
        enif_make_map_put(env, map, p->hook_atom[i], inner, &map);
    }
    return map;
}

/* status() -> map (see README, "Status") */
static ERL_NIF_TERM nif_status(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    priv_t *p = enif_priv_data(env);
    writer_status_t ws;
    queue_stats_t qs;
    ERL_NIF_TERM k[56], v[56], state, map;
    char dsn[512];
    int n = 0, running, i;
    uint64_t malformed_total = 0;

    (void)argc;
    (void)argv;
    for (i = 0; i < HOOK_COUNT; i++)
        malformed_total += __atomic_load_n(&p->malformed[i], __ATOMIC_RELAXED);
    /* the queue before the writer: an event the writer takes between the
     * two reads is then counted as taken or in flight, never as nowhere */
    queue_get_stats(&p->q, &qs);
    memset(&ws, 0, sizeof ws);
    pthread_mutex_lock(&p->mu);
    running = p->w != NULL;
    if (running) {
        writer_get_status(p->w, &ws);
    } else {
        memcpy(ws.last_error, p->past.last_error, sizeof ws.last_error);
        ws.last_write_us = p->past.last_write_us;
    }
    /* counters are for the life of this NIF instance, across writer restarts */
    writer_status_add(&ws, &p->past);
    if (!running)
        ws.spool_bytes = p->past.spool_bytes;
    memcpy(dsn, p->dsn_masked, sizeof dsn);
    pthread_mutex_unlock(&p->mu);

    if (!running)
        state = p->am.am_stopped;
    else if (ws.state == WS_CONNECTED)
        state = p->am.am_connected;
    else if (ws.state == WS_STARTING)
        state = p->am.am_starting;
    else
        state = p->am.am_disconnected;

#define PUT(key, val) (k[n] = p->am.am_##key, v[n] = (val), n++)
    PUT(state, state);
    PUT(dsn_masked, text_bin(env, dsn));
    PUT(incarnation, enif_make_int64(env, p->incarnation));
    PUT(queued, make_u64(env, qs.count));
    PUT(queued_bytes, make_u64(env, qs.bytes));
    PUT(queue_peak, make_u64(env, qs.peak_count));
    PUT(queue_peak_bytes, make_u64(env, qs.peak_bytes));
    PUT(inflight, make_u64(env, ws.inflight));
    PUT(pending, make_u64(env, qs.count + qs.taken + ws.inflight));
    PUT(last_seq, make_u64(env, qs.last_seq));
    PUT(dropped, make_u64(env, qs.dropped + ws.spool_dropped));
    PUT(spooled, make_u64(env, ws.spooled));
    PUT(spool_bytes, make_u64(env, ws.spool_bytes));
    PUT(spooled_at_stop, make_u64(env, ws.spooled_at_stop));
    PUT(spool_corrupt, make_u64(env, ws.spool_corrupt));
    PUT(written, make_u64(env, ws.written));
    PUT(batches, make_u64(env, ws.batches));
    PUT(prefetched, make_u64(env, ws.prefetched));
    PUT(dead_lettered, make_u64(env, ws.dead_lettered));
    PUT(dead_letter_lost, make_u64(env, ws.dead_lost));
    PUT(discarded_at_stop, make_u64(env, ws.discarded_at_stop));
    PUT(write_errors, make_u64(env, ws.write_errors));
    PUT(reconnects, make_u64(env, ws.reconnects));
    PUT(last_write_us, enif_make_int64(env, ws.last_write_us));
    PUT(last_batch_us, enif_make_int64(env, ws.last_batch_us));
    PUT(last_error, text_bin(env, ws.last_error));
    PUT(spool_error, text_bin(env, running ? ws.spool_error : ""));
    PUT(journal, running && ws.journal_on ? p->am.am_true : p->am.am_false);
    PUT(journal_bytes, make_u64(env, running ? ws.journal_bytes : 0));
    PUT(journal_segments, make_u64(env, running ? ws.journal_segments : 0));
    PUT(journal_no_room, make_u64(env, running ? ws.journal_no_room : 0));
    PUT(journal_sync_age_us, enif_make_int64(env, running && ws.journal_sync_us
                                                      ? wall_us() - ws.journal_sync_us : 0));
    PUT(journal_error, text_bin(env, running ? ws.journal_error : ""));
    PUT(partitions_created, make_u64(env, ws.partitions_created));
    PUT(partitions_dropped, make_u64(env, ws.partitions_dropped));
    PUT(partitions_checked_us, enif_make_int64(env, running ? ws.partitions_checked_us : 0));
    PUT(partitions_compressed, make_u64(env, ws.partitions_compressed));
    PUT(compress_failures, make_u64(env, ws.compress_failures));
    PUT(compress_refused, running && ws.compress_refused ? p->am.am_true : p->am.am_false);
    PUT(compress_error, text_bin(env, running ? ws.compress_error : ""));
    PUT(malformed, make_u64(env, malformed_total));
    PUT(rejected, make_u64(env, __atomic_load_n(&p->rejected, __ATOMIC_RELAXED)));
    {
        int64_t oldest = qs.oldest_us;
        if (ws.inflight_oldest_us && (!oldest || ws.inflight_oldest_us < oldest))
            oldest = ws.inflight_oldest_us;
        PUT(oldest_age_us, enif_make_int64(env, oldest ? wall_us() - oldest : 0));
    }
    PUT(per_hook, per_hook(env, p, &ws));
#undef PUT
    if (!enif_make_map_from_arrays(env, k, v, (unsigned)n, &map))
        return error_tuple(env, p, p->am.am_badconfig);
    return map;
}

/* ---- load / unload ---------------------------------------------------- */

/* Keeps this library mapped for the life of the VM: a writer thread may
 * run its code after the module instance that loaded it is purged. */
static void pin_library(void)
{
    Dl_info info;

    if (dladdr((void *)&pin_library, &info) && info.dli_fname)
        (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE);
}

static int load(ErlNifEnv *env, void **priv_data, ERL_NIF_TERM info)
{
    priv_t *p = calloc(1, sizeof *p);
    int i;

    (void)info;
    if (!p)
        return 1;
    pin_library();
    p->build = build_id;
    p->size = sizeof *p;
    p->refs = 1;
#define ATOM_INIT(n) p->am.am_##n = enif_make_atom(env, #n);
    ATOM_LIST(ATOM_INIT)
#undef ATOM_INIT
    for (i = 0; i < HOOK_COUNT; i++) {
        const char *r = hook_defs[i].roles, *t = strchr(r, 'T'), *sub = strchr(r, 'S');
        p->hook_atom[i] = enif_make_atom(env, hook_defs[i].name);
        p->hook_arity[i] = (unsigned)strlen(r);
        p->topic_arg[i] = t ? (int)(t - r) : -1;
        p->subid_arg[i] = sub ? (int)(sub - r) : -1;
    }
    p->batch_size = DEFAULT_BATCH;
    p->flush_interval_ms = 200;
    p->json_max = DEFAULT_PAYLOAD_MAX;
    if (queue_init(&p->q, DEFAULT_QUEUE_EVENTS, DEFAULT_QUEUE_BYTES, DEFAULT_BATCH) != 0)
        goto out_free;
    if (pthread_mutex_init(&p->mu, NULL) != 0)
        goto out_queue;
    p->incarnation = wall_us();
    p->enabled = (1ull << HOOK_COUNT) - 1;
    p->payload_max = DEFAULT_PAYLOAD_MAX;
    *priv_data = p;
    return 0;
out_queue:
    queue_destroy(&p->q);
out_free:
    free(p);
    return 1;
}

/* A reload (code:load_file/1 of a loaded module): the new instance adopts
 * the running state, so recording goes on with the same queue, writer,
 * incarnation and counters. A different build cannot share the structs:
 * refused, the old instance stays the current code (nothing is lost; the
 * new build takes effect at the next broker start). */
static int upgrade(ErlNifEnv *env, void **priv_data, void **old_priv_data, ERL_NIF_TERM info)
{
    priv_t *old = *old_priv_data;

    if (!old)
        return load(env, priv_data, info);
    if (old->size != sizeof *old || strcmp(old->build, build_id) != 0)
        return 1;
    __atomic_fetch_add(&old->refs, 1, __ATOMIC_ACQ_REL);   /* held by the new instance */
    *priv_data = old;
    return 0;
}

static void unload(ErlNifEnv *env, void *priv_data)
{
    priv_t *p = priv_data;

    (void)env;
    if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;   /* another instance of the module still uses it */
    stop_writer(p, UNLOAD_STOP_MS);
    queue_destroy(&p->q);
    while (p->filters) {
        filters_t *next = p->filters->retired;
        filters_free(p->filters);
        p->filters = next;
    }
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static ErlNifFunc nif_funcs[] = {
    {"event", 3, nif_event, 0},
    {"start", 2, nif_start, ERL_NIF_DIRTY_JOB_IO_BOUND},   /* makes the journal's files */
    {"configure", 1, nif_configure, 0},
    {"stop", 1, nif_stop, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"flush", 0, nif_flush, 0},
    {"status", 0, nif_status, 0},
    {"hooks", 0, nif_hooks, 0},
};

ERL_NIF_INIT(vmq_pgevents_nif, nif_funcs, load, NULL, upgrade, unload)
