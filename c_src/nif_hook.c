/* nif_hook.c - the hook entry point, event/3: runs on the calling
 * process's scheduler for every hook call. It finds the hook, applies the
 * filters, decides how much of the payload is kept (payload_mode and
 * payload_topics, before anything is copied), decodes the arguments
 * (terms.c), masks the peer (peer_addr), builds one event into the queue
 * (queue.c: the journal) and returns; it never waits for PostgreSQL,
 * never raises, and counts what it did per hook. */
#include <erl_nif.h>
#include <string.h>

#include "buf.h"
#include "event.h"
#include "nif_priv.h"
#include "sha256.h"
#include "terms.h"
#include "terms_int.h"
#include "text.h"

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

/* The call's topic: its topic argument, or on_message_drop's message
 * {Topic, QoS, Payload, Props}. 0: the hook has none, or the drop's
 * message could not be read (VerneMQ's promise gave error). */
static int call_topic(ErlNifEnv *env, const priv_t *p, int hook, const ERL_NIF_TERM *args,
                      ERL_NIF_TERM *topic)
{
    const ERL_NIF_TERM *e;
    int arity;

    if (p->topic_arg[hook] >= 0) {
        *topic = args[p->topic_arg[hook]];
        return 1;
    }
    if (p->payload_arg[hook] >= 0 && enif_get_tuple(env, args[p->payload_arg[hook]], &arity, &e) &&
        arity == 4) {
        *topic = e[0];
        return 1;
    }
    return 0;
}

/* A topic read in place (word spans into the Erlang binaries): a list of
 * binary words, or one binary "a/b". The first PAYLOAD_RULE_WORDS_MAX
 * words are kept, *n counts them all (no filter looks further). -1: not a
 * topic, as for the decoder (another shape, no word, more than
 * TOPIC_WORDS_MAX words or TEXT_BYTES_MAX bytes). */
static int topic_words(ErlNifEnv *env, ERL_NIF_TERM topic, span_t *words, size_t *n)
{
    ERL_NIF_TERM head, tail = topic;
    ErlNifBinary w;

    *n = 0;
    if (enif_inspect_binary(env, topic, &w)) {
        const char *c = (const char *)w.data, *end = c + w.size;
        if (w.size > TEXT_BYTES_MAX)
            return -1;
        for (;;) {
            const char *we = c < end ? memchr(c, '/', (size_t)(end - c)) : NULL;
            if (!we)
                we = end;
            if (*n < PAYLOAD_RULE_WORDS_MAX)
                words[*n] = (span_t){c, (size_t)(we - c), 1};
            (*n)++;
            if (we == end)
                return 0;
            c = we + 1;
        }
    }
    while (enif_get_list_cell(env, tail, &head, &tail)) {
        if (!enif_inspect_binary(env, head, &w) || *n == TOPIC_WORDS_MAX)
            return -1;
        if (*n < PAYLOAD_RULE_WORDS_MAX)
            words[*n] = (span_t){(const char *)w.data, w.size, 1};
        (*n)++;
    }
    return enif_is_empty_list(env, tail) && *n > 0 ? 0 : -1;
}

/* 1: record this call; 0: a filter leaves it out. Arguments of an
 * unexpected shape pass (they are recorded and marked malformed): VerneMQ
 * gives every topic as a list of words, so a term that is no topic is
 * not one a filter is about. */
static int passes_filters(ErlNifEnv *env, const priv_t *p, const filters_t *f, int hook,
                          const ERL_NIF_TERM *args)
{
    ERL_NIF_TERM topic;

    if (f->nmountpoints && p->subid_arg[hook] >= 0) {
        char mp[256];
        size_t n;
        if (subid_mountpoint(env, args[p->subid_arg[hook]], mp, sizeof mp, &n) == 0 &&
            !filters_mountpoint_ok(f, mp, n))
            return 0;
    }
    if ((f->ninclude || f->nexclude) && call_topic(env, p, hook, args, &topic)) {
        span_t words[PAYLOAD_RULE_WORDS_MAX];
        size_t n;
        return topic_words(env, topic, words, &n) < 0 || filters_topic_ok(f, words, n);
    }
    return 1;
}

/* payloads up to this size are hashed on the calling scheduler (~0.2 ms) */
#define HASH_ON_SCHEDULER_MAX 65536
/* ... and up to this many payload bytes copied and checksummed there
 * (~0.5 ms) */
#define COPY_ON_SCHEDULER_MAX (1024 * 1024)

/* The payload mode payload_topics gives a call: the first rule matching
 * its topic; PM_FULL (no restriction) when none does; the strictest mode
 * of any rule when the topic cannot be read. */
static int topic_payload_mode(ErlNifEnv *env, const priv_t *p, const payload_rules_t *r, int hook,
                              const ERL_NIF_TERM *args)
{
    span_t words[PAYLOAD_RULE_WORDS_MAX];
    ERL_NIF_TERM topic;
    size_t n;
    int mode;

    if (!call_topic(env, p, hook, args, &topic) || topic_words(env, topic, words, &n) < 0)
        return r->strictest;
    mode = payload_rules_mode(r, words, n);
    return mode < 0 ? PM_FULL : mode;
}

/* An atom is an immediate term: two are the same atom exactly when their
 * terms are equal, so a plain comparison does what enif_is_identical does
 * here. The hooks are placed by their name's term in hook_slot (nif.c),
 * so a call looks at one or two of them, not at every hook before its
 * own; the table has empty slots, so a name that is no hook's ends at
 * one. */
static int find_hook(const priv_t *p, ERL_NIF_TERM name, unsigned arity)
{
    unsigned k = hook_slot_of(name);
    int h;

    while ((h = p->hook_slot[k]) != 0) {
        if (p->hook_atom[h - 1] == name && p->hook_arity[h - 1] == arity)
            return h - 1;
        k = (k + 1) & (HOOK_SLOTS - 1);
    }
    return -1;
}

/* wants(Hook, Arity) -> boolean(): whether event/3 would record a call of
 * this hook now (it is enabled, the plugin recording), so that a hook can
 * skip work only the record needs (on_message_drop's promise, which may
 * read the message store). Never raises. */
ERL_NIF_TERM nif_wants(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    priv_t *p = enif_priv_data(env);
    unsigned arity;
    int hook;

    (void)argc;
    if (!enif_get_uint(env, argv[1], &arity) || (hook = find_hook(p, argv[0], arity)) < 0 ||
        !(__atomic_load_n(&p->enabled, __ATOMIC_RELAXED) & (1ull << hook)) ||
        __atomic_load_n(&p->refusing, __ATOMIC_ACQUIRE))
        return p->am.am_false;
    return p->am.am_true;
}

/* event(Hook, Args, ConnId) -> ok | {error, Reason}. Never raises. */
ERL_NIF_TERM nif_event(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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
    if (__atomic_load_n(&p->refusing, __ATOMIC_ACQUIRE)) {
        /* stopped: nothing writes or keeps it until a start (stop_writer);
         * its seq is used up (a gap), counted apart from the "no room"
         * drops (status dropped and the per-hook counts leave it out) */
        queue_drop(&p->q, hook, DROP_STOPPED);
        return error_tuple(env, p, p->am.am_stopped);
    }
    if (queue_full_hint(&p->q)) {
        queue_drop(&p->q, hook, DROP_NO_ROOM);
        __atomic_fetch_add(&p->dropped[hook], 1, __ATOMIC_RELAXED);
        return error_tuple(env, p, p->am.am_queue_full);
    }

    event_in_init(&d.in, hook, wall_us());
    if (enif_get_int64(env, argv[2], &conn)) {
        d.in.conn_id = conn;
        d.in.has_conn = 1;
    }
    {
        const payload_rules_t *r = __atomic_load_n(&p->payload_rules, __ATOMIC_ACQUIRE);
        int mode = __atomic_load_n(&p->payload_mode[hook], __ATOMIC_RELAXED);
        size_t pmax;
        /* the stricter of the hook's mode and its topic's */
        if (r && p->payload_arg[hook] >= 0)
            mode = payload_mode_stricter(mode, topic_payload_mode(env, p, r, hook, args));
        switch (mode) {
        case PM_NONE: case PM_HASH: pmax = 0; break;   /* no payload byte is copied */
        case PM_FULL: pmax = PAYLOAD_FULL_MAX; break;
        default: pmax = __atomic_load_n(&p->payload_max, __ATOMIC_RELAXED);
        }
        decode_event(env, &p->am, hook, args, pmax, &d);
        if (d.in.f[F_PAYLOAD].present &&
            (mode == PM_HASH ? d.in.payload_size > HASH_ON_SCHEDULER_MAX
                             : d.in.f[F_PAYLOAD].n > COPY_ON_SCHEDULER_MAX) &&
            enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER) {
            /* hashing a large payload (~3.6 ms a MiB) or copying it into
             * the journal (~0.5 ms a MiB) would hold a normal scheduler:
             * the whole call again on a dirty CPU scheduler (nothing has
             * been counted or taken yet) */
            decoded_free(&d);
            return enif_schedule_nif(env, "event", ERL_NIF_DIRTY_JOB_CPU_BOUND, nif_event, argc, argv);
        }
        if (mode == PM_HASH && d.in.f[F_PAYLOAD].present) {
            /* the span still points at the whole binary (terms.h) */
            sha256(d.in.f[F_PAYLOAD].p, (size_t)d.in.payload_size, d.payload_sha256);
            d.in.f[F_PAYLOAD] = (span_t){(const char *)d.payload_sha256, SHA256_BYTES, 1};
            d.in.flags |= EV_PAYLOAD_SHA256;
        }
    }
    {
        int pm = __atomic_load_n(&p->peer_mode, __ATOMIC_RELAXED);
        if (pm != PEER_FULL)
            event_in_mask_peer(&d.in, pm);
    }
    bad = d.malformed != 0;
    rc = queue_add(&p->q, &d.in, &seq);
    decoded_free(&d);
    if (rc == 3)   /* the plugin is stopping: after its stop row (counted there) */
        return error_tuple(env, p, p->am.am_stopped);
    if (rc != 0) {
        __atomic_fetch_add(&p->dropped[hook], 1, __ATOMIC_RELAXED);
        return error_tuple(env, p, rc == 1 ? p->am.am_queue_full
                                   : rc == 4 ? p->am.am_too_large : p->am.am_no_memory);
    }
    __atomic_fetch_add(&p->recorded[hook], 1, __ATOMIC_RELAXED);
    if (bad)
        __atomic_fetch_add(&p->malformed[hook], 1, __ATOMIC_RELAXED);
    return p->am.am_ok;
unknown:
    __atomic_fetch_add(&p->rejected, 1, __ATOMIC_RELAXED);
    return error_tuple(env, p, p->am.am_unknown_hook);
}
