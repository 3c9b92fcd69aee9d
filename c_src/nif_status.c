/* nif_status.c - status/0 and hooks/0: the queue's, the writer's and the
 * hook path's counters as one map (docs/operating.md, "Status"), counted for the life
 * of the loaded NIF across plugin restarts. */
#include <erl_nif.h>
#include <pthread.h>
#include <string.h>

#include "nif_priv.h"

/* hooks() -> [{Name, Arity}] in the order of hooks.h */
ERL_NIF_TERM nif_hooks(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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
            c[1] += __atomic_load_n(&p->dropped[j], __ATOMIC_RELAXED);
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

/* status() -> map (see docs/operating.md, "Status") */
ERL_NIF_TERM nif_status(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    priv_t *p = enif_priv_data(env);
    writer_status_t ws;
    queue_stats_t qs;
    ERL_NIF_TERM k[60], v[60], state, map;
    char dsn[512];
    int n = 0, running, i;
    uint64_t malformed_total = 0, stopped_drops;

    (void)argc;
    (void)argv;
    for (i = 0; i < HOOK_COUNT; i++)
        malformed_total += __atomic_load_n(&p->malformed[i], __ATOMIC_RELAXED);
    /* the queue before the writer: an event the writer takes between the
     * two reads is then counted as taken or in flight, never as nowhere */
    queue_get_stats(&p->q, &qs);
    stopped_drops = qs.dropped_stopped;   /* of qs.dropped: read together */
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
    PUT(dropped, make_u64(env, qs.dropped - stopped_drops));   /* no room: journal, disk, queue */
    PUT(dropped_after_stop, make_u64(env, stopped_drops));
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
    PUT(journal_memory_bytes, make_u64(env, running ? ws.journal_memory_bytes : 0));
    PUT(journal_memory_error, text_bin(env, running ? ws.journal_memory_error : ""));
    PUT(journal_disk_segments, make_u64(env, running ? ws.journal_disk_segments : 0));
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
    {
        const payload_rules_t *r = __atomic_load_n(&p->payload_rules, __ATOMIC_ACQUIRE);
        int pm = __atomic_load_n(&p->peer_mode, __ATOMIC_RELAXED);
        PUT(payload_topics, text_bin(env, r ? r->spec : ""));   /* kept until unload */
        PUT(peer_addr, pm == PEER_NETWORK ? p->am.am_network
                       : pm == PEER_NONE ? p->am.am_none : p->am.am_full);
    }
    PUT(per_hook, per_hook(env, p, &ws));
#undef PUT
    if (!enif_make_map_from_arrays(env, k, v, (unsigned)n, &map))
        return error_tuple(env, p, p->am.am_badconfig);
    return map;
}

/* mask_dsn(Dsn :: iodata) -> binary: the connection string as status
 * shows the running one (dsn_masked), every value libpq marks secret as
 * ****; <<>> when libpq cannot read it (vmq-admin show's formatter) */
ERL_NIF_TERM nif_mask_dsn(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    ErlNifBinary in;
    char dsn[4096], masked[sizeof ((priv_t *)0)->dsn_masked];

    (void)argc;
    masked[0] = '\0';
    if (enif_inspect_iolist_as_binary(env, argv[0], &in) && in.size < sizeof dsn &&
        !memchr(in.data, '\0', in.size)) {
        memcpy(dsn, in.data, in.size);
        dsn[in.size] = '\0';
        conninfo_masked(dsn, masked, sizeof masked);
    }
    return text_bin(env, masked);
}
