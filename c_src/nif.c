/* nif.c - the NIF library: load, reload (upgrade), unload and the table of
 * its functions.
 *
 * All state lives in one priv_t (nif_priv.h) handed to load as priv data.
 * The hook entry point, event/3, is nif_hook.c; start/2, configure/1 and
 * stop/1 are nif_config.c (the writer thread, writer.c, is started by
 * start/2 and joined by stop/1, a dirty I/O NIF, or, when it still runs as
 * the module goes, by a thread unload starts); status/0 is nif_status.c.
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
#include <stdlib.h>
#include <string.h>

#include "nif_priv.h"
#include "pgio.h"

#ifndef PGEV_BUILD_ID
#define PGEV_BUILD_ID "unknown"
#endif
static const char build_id[] = PGEV_BUILD_ID;

ERL_NIF_TERM error_tuple(ErlNifEnv *env, const priv_t *p, ERL_NIF_TERM why)
{
    return enif_make_tuple2(env, p->am.am_error, why);
}

ERL_NIF_TERM error_msg(ErlNifEnv *env, const priv_t *p, const char *msg)
{
    ERL_NIF_TERM bin;
    size_t n = strlen(msg);
    unsigned char *d = enif_make_new_binary(env, n, &bin);

    if (d)
        memcpy(d, msg, n);
    return error_tuple(env, p, bin);
}

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
    pgio_init();
    p->build = build_id;
    p->size = sizeof *p;
    p->refs = 1;
#define ATOM_INIT(n) p->am.am_##n = enif_make_atom(env, #n);
    ATOM_LIST(ATOM_INIT)
#undef ATOM_INIT
    for (i = 0; i < HOOK_COUNT; i++) {
        const char *r = hook_defs[i].roles, *t = strchr(r, 'T'), *sub = strchr(r, 'S');
        const char *pl = strchr(r, 'B') ? strchr(r, 'B') : strchr(r, 'D');
        p->hook_atom[i] = enif_make_atom(env, hook_defs[i].name);
        p->hook_arity[i] = (unsigned)strlen(r);
        p->topic_arg[i] = t ? (int)(t - r) : -1;
        p->subid_arg[i] = sub ? (int)(sub - r) : -1;
        p->payload_arg[i] = pl ? (int)(pl - r) : -1;
    }
    for (i = 0; i < HOOK_COUNT; i++) {
        unsigned k = hook_slot_of(p->hook_atom[i]);
        while (p->hook_slot[k])
            k = (k + 1) & (HOOK_SLOTS - 1);
        p->hook_slot[k] = (uint8_t)(i + 1);
    }
    p->batch_size = DEFAULT_BATCH;
    p->flush_interval_ms = 200;
    p->json_max = DEFAULT_PAYLOAD_MAX;
    if (queue_init(&p->q, DEFAULT_QUEUE_EVENTS, DEFAULT_QUEUE_BYTES, DEFAULT_BATCH) != 0)
        goto out_free;
    if (pthread_mutex_init(&p->mu, NULL) != 0)
        goto out_queue;
    if (pthread_cond_init(&p->cv, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        goto out_queue;
    }
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

/* Writers whose module instance went while they ran (unload below),
 * being stopped on a thread of their own. The library is pinned, so these
 * outlive every instance: a start of a later instance waits for them
 * (wait_retired), so two writers never use one journal. */
static pthread_mutex_t retire_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t retire_cv = PTHREAD_COND_INITIALIZER;
static unsigned retiring;

void wait_retired(void)
{
    pthread_mutex_lock(&retire_mu);
    while (retiring > 0)
        pthread_cond_wait(&retire_cv, &retire_mu);
    pthread_mutex_unlock(&retire_mu);
}

static void teardown(priv_t *p)
{
    stop_writer(p, UNLOAD_STOP_MS);
    queue_destroy(&p->q);
    while (p->filters) {
        filters_t *next = p->filters->retired;
        filters_free(p->filters);
        p->filters = next;
    }
    payload_rules_free(p->payload_rules);
    while (p->rules_retired) {
        payload_rules_t *next = p->rules_retired->retired;
        payload_rules_free(p->rules_retired);
        p->rules_retired = next;
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static void *retire_main(void *arg)
{
#ifdef __linux__
    pthread_setname_np(pthread_self(), "vmq_pgev_retire");
#endif
    teardown(arg);
    pthread_mutex_lock(&retire_mu);
    retiring--;
    pthread_cond_broadcast(&retire_cv);
    pthread_mutex_unlock(&retire_mu);
    return NULL;
}

/* The last instance goes. Unload runs on a normal scheduler and cannot be
 * a dirty NIF, so it must not wait for the writer (up to UNLOAD_STOP_MS,
 * then the journal's syncs): the plugin's server stops it with stop/1, a
 * dirty NIF, before the module can be unloaded, and then there is nothing
 * to wait for here. A writer still running (its server was killed) is
 * stopped, and the state freed, by a thread of its own. */
static void unload(ErlNifEnv *env, void *priv_data)
{
    priv_t *p = priv_data;
    int running;

    (void)env;
    if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;   /* another instance of the module still uses it */
    pthread_mutex_lock(&p->mu);
    running = p->w != NULL || p->changing;
    pthread_mutex_unlock(&p->mu);
    if (running) {
        pthread_attr_t a;
        pthread_t t;
        int ok = pthread_attr_init(&a) == 0;
        pthread_mutex_lock(&retire_mu);
        retiring++;
        pthread_mutex_unlock(&retire_mu);
        if (ok && pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED) == 0 &&
            pthread_create(&t, &a, retire_main, p) == 0) {
            pthread_attr_destroy(&a);
            return;
        }
        if (ok)
            pthread_attr_destroy(&a);
        pthread_mutex_lock(&retire_mu);
        retiring--;
        pthread_cond_broadcast(&retire_cv);
        pthread_mutex_unlock(&retire_mu);
    }
    teardown(p);   /* nothing running: no wait (or no thread could be had) */
}

static ErlNifFunc nif_funcs[] = {
    {"event", 3, nif_event, 0},
    {"wants", 2, nif_wants, 0},
    {"start", 2, nif_start, ERL_NIF_DIRTY_JOB_IO_BOUND},   /* makes the journal's files */
    {"configure", 1, nif_configure, 0},
    {"stop", 1, nif_stop, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"flush", 0, nif_flush, 0},
    {"status", 0, nif_status, 0},
    {"hooks", 0, nif_hooks, 0},
    {"mask_dsn", 1, nif_mask_dsn, 0},
    {"query", 3, nif_query, ERL_NIF_DIRTY_JOB_IO_BOUND},   /* a connection of its own */
};

ERL_NIF_INIT(vmq_pgevents_nif, nif_funcs, load, NULL, upgrade, unload)
