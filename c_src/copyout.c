/* copyout.c - one batch into PostgreSQL (see writer_int.h).
 *
 * A batch is one COPY BINARY, one transaction. A batch that PostgreSQL
 * refuses because of a row's data is split until the bad row is
 * isolated; that row is kept in <table>_dead with the error, logged and
 * counted, and the rest is written. An error that may be a row's or the
 * table's (w_classify's W_UNSURE) is split the same way; the row it
 * isolates is dead-lettered only when the table takes another row of
 * the batch (tried in a transaction rolled back), else it is the table's
 * and the batch waits, as in an outage.
 *
 * Pipelined: once a batch's COPY data is sent, and while PostgreSQL
 * commits it, the next batch waiting in the queue is popped and encoded
 * (prefetch), so its data goes out the moment the commit is in. libpq
 * cannot have two statements in flight around a COPY (pipeline mode does
 * not support COPY), so this is the overlap there is: the writer's work on
 * batch n+1 against the server's commit of batch n. Events written are
 * freed, which gives their journal space back (queue_release). */
#include "writer_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hooks.h"

#define CHUNK_BYTES (1u << 20)   /* hand COPY data to libpq in ~1 MiB pieces */
#define PRE_BYTES (4u << 20)     /* encode at most this much ahead (prefetch) */

/* Starts a COPY (dead_error: into the dead-letter table, with this error)
 * and sends the first n events of list, then the COPY's end: the rows
 * prefetch() encoded ahead, if it did, then the rest, encoded here a chunk
 * at a time while PostgreSQL takes the chunks before. *last: the n-th
 * event. W_OK: all sent; copy_commit says whether PostgreSQL took it. */
static int copy_send(writer_t *w, event_t *list, size_t n, const char *dead_error,
                     event_t **last, char *err, size_t errlen)
{
    char state[6];
    buf_t *b = &w->enc;
    PGresult *r;
    event_t *ev = list, *prev = NULL;
    size_t i = 0, pre_n = w->pre_n;
    int rc, sent_ok = 1, pre;

    err[0] = '\0';
    snprintf(state, sizeof state, "%s", w->last_sqlstate);
    pre = !dead_error && pre_n && pre_n <= n && list->seq == w->pre_seq && !w->pre.failed;
    w->pre_n = 0;
    r = pgio_exec(&w->io, dead_error ? w->dead_sql : w->copy_sql, 0, NULL);
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        rc = w_classify(w, r);
        w_result_error(w, r, err, errlen);
        PQclear(r);
        return rc;
    }
    PQclear(r);
    b->len = 0;
    b->failed = 0;
    if (pre) {
        size_t off, k;
        for (off = 0; sent_ok && off < w->pre.len; off += k) {
            k = w->pre.len - off < CHUNK_BYTES ? w->pre.len - off : CHUNK_BYTES;
            sent_ok = pgio_put(&w->io, w->pre.p + off, k) == 0;
        }
        i = pre_n;
        prev = w->pre_last;
        ev = prev->next;
        if (w->pre.cap > 2 * PRE_BYTES) {   /* a huge row: give its memory back */
            buf_free(&w->pre);
            buf_init(&w->pre, NULL, 0);
        }
    } else {
        copy_header(b);
    }
    for (; sent_ok && ev && i < n; prev = ev, ev = ev->next, i++) {
        if (dead_error)
            copy_row_dead(b, &w->copy, ev, dead_error, state);
        else
            copy_row(b, &w->copy, ev);
        if (b->len >= CHUNK_BYTES && !b->failed) {
            sent_ok = pgio_put(&w->io, b->p, b->len) == 0;
            b->len = 0;
        }
    }
    *last = prev;
    copy_trailer(b);
    if (sent_ok && !b->failed && pgio_put(&w->io, b->p, b->len) < 0)
        sent_ok = 0;
    w->enc_failed = b->failed;   /* the server's answer is then ours, not the rows' */
    if (sent_ok && pgio_end(&w->io, b->failed ? "vmq_pgevents: out of memory encoding the batch"
                                              : NULL) < 0)
        sent_ok = 0;
    if (b->cap > 2 * CHUNK_BYTES) {   /* one huge row: give its memory back */
        buf_free(b);
        buf_init(b, NULL, 0);
    }
    if (!sent_ok) {
        /* the connection failed or the server stopped answering: what
         * state it is in is unknown, so it goes; no SQLSTATE answered */
        w->last_sqlstate[0] = '\0';
        w_clean_error(w, w_io_error(w, NULL), err, errlen);
        w_disconnect(w);
        return W_DOWN;
    }
    return W_OK;
}

/* The COPY's result: W_OK once PostgreSQL has committed it. */
static int copy_commit(writer_t *w, char *err, size_t errlen)
{
    PGresult *r, *next;
    int rc = W_OK;

    r = pgio_result(&w->io);
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
        rc = w_classify(w, r);
        w_result_error(w, r, err, errlen);
        if (rc == W_OK || w->enc_failed)
            rc = W_DOWN;   /* out of memory here: tried again after the backoff */
        w->pre_n = 0;   /* what was encoded ahead may never be sent as it is */
    }
    PQclear(r);
    while (!w->io.timed_out && (next = pgio_result(&w->io)) != NULL)
        PQclear(next);
    return rc;
}

/* COPY the first n events of list as one statement (one transaction);
 * dead_error: into the dead-letter table, with this error */
static int copy_events(writer_t *w, event_t *list, size_t n, const char *dead_error,
                       char *err, size_t errlen)
{
    event_t *last;
    int rc = copy_send(w, list, n, dead_error, &last, err, errlen);

    return rc == W_OK ? copy_commit(w, err, errlen) : rc;
}

static event_t *drop_front(event_t *list, size_t n)
{
    while (list && n--) {
        event_t *next = list->next;
        queue_release(list);
        list = next;
    }
    return list;
}

/* the first n events of list are in the table */
static void count_written(writer_t *w, const event_t *list, size_t n)
{
    const event_t *ev;
    size_t i;

    pthread_mutex_lock(&w->smu);
    for (ev = list, i = 0; ev && i < n; ev = ev->next, i++)
        w->st.written_hook[ev->hook]++;
    w->st.written += n;
    w->st.batches++;
    w->st.inflight -= n;
    w->st.inflight_oldest_us = ev ? ev->ts_us : 0;
    w->st.last_write_us = wall_us();
    pthread_mutex_unlock(&w->smu);
}

/* n events were in the table already, written by an earlier start (read
 * again from its journal files) and counted there; rest: what follows */
static void count_skipped(writer_t *w, const event_t *rest, size_t n)
{
    pthread_mutex_lock(&w->smu);
    w->st.inflight -= n;
    w->st.inflight_oldest_us = rest ? rest->ts_us : 0;
    pthread_mutex_unlock(&w->smu);
}

/* A row PostgreSQL refused (err, its SQLSTATE state): kept in <table>_dead
 * with the error, counted, logged (seq, hook and the error; never the
 * row's values). W_OK: kept, or kept already by an earlier try whose
 * answer was lost (the table's key on incarnation, seq, node refuses it
 * again: 23505); W_DATA: the dead-letter table refused its data, or is
 * gone: the row is lost (counted, logged); W_DOWN: anything else (no
 * answer, a timeout, a privilege, a lock): the row stays where it is, for
 * the next try. */
static int dead_letter(writer_t *w, event_t *ev, const char *err, const char *state,
                       char *derr, size_t derrlen)
{
    event_t *next = ev->next;
    int kept, rc;
    uint64_t n;

    derr[0] = '\0';
    snprintf(w->last_sqlstate, sizeof w->last_sqlstate, "%s", state);   /* the row's, in _dead */
    ev->next = NULL;
    rc = copy_events(w, ev, 1, err, derr, derrlen);
    ev->next = next;
    /* 23505 only as the server's answer: a send that failed (W_DOWN)
     * leaves last_sqlstate the row's own */
    kept = rc == W_OK || (rc == W_DATA && strcmp(w->last_sqlstate, "23505") == 0);
    if (!kept && rc != W_DATA && strcmp(w->last_sqlstate, "42P01") != 0)
        return W_DOWN;
    pthread_mutex_lock(&w->smu);
    n = ++w->st.dead_lettered;
    w->st.dead_hook[ev->hook]++;
    if (!kept)
        w->st.dead_lost++;
    w->st.inflight--;
    w->st.inflight_oldest_us = next ? next->ts_us : 0;
    pthread_mutex_unlock(&w->smu);
    if (!kept)
        w_log(w, WLOG_ERROR,
             "postgresql refused the row of event seq %llu (%s): %s; the dead-letter table "
             "%s_dead did not take it either (%s): the row is lost",
             (unsigned long long)ev->seq, hook_defs[ev->hook].name, err, w->table, derr);
    else if (n <= 10 || n % 1000 == 0)
        w_log(w, WLOG_ERROR,
             "postgresql refused the row of event seq %llu (%s): %s; the row is kept in "
             "%s_dead (%llu so far), the rest of its batch is written",
             (unsigned long long)ev->seq, hook_defs[ev->hook].name, err, w->table,
             (unsigned long long)n);
    return kept ? W_OK : W_DATA;
}

/* Appends the events waiting in the queue of the batch's incarnation
 * after last (at most a batch). Their count, 0: none. */
static size_t take_more(writer_t *w, event_t *batch, event_t *last, size_t *n)
{
    event_t *more;
    size_t k;

    if (!queue_ready_from(w->q, queue_event_origin(batch)))
        return 0;
    more = queue_pop(w->q, __atomic_load_n(&w->cfg.batch_size, __ATOMIC_RELAXED), 0, &k);
    if (!more)
        return 0;
    last->next = more;
    *n += k;
    pthread_mutex_lock(&w->smu);
    w->st.inflight += k;
    pthread_mutex_unlock(&w->smu);
    queue_settled(w->q);
    return k;
}

/* ev alone, in a transaction that is rolled back. 1: the table took it;
 * 0: refused with the SQLSTATE state (the isolated row's); 2: refused
 * with another; -1: no answer (why in err). */
static int try_rolled_back(writer_t *w, event_t *ev, const char *state, char *err, size_t errlen)
{
    event_t *next = ev->next;
    PGresult *r;
    int rc, ok;

    w->pre_n = 0;
    r = pgio_exec(&w->io, "BEGIN", 0, NULL);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        w_clean_error(w, w_io_error(w, NULL), err, errlen);
        return -1;
    }
    ev->next = NULL;
    rc = copy_events(w, ev, 1, NULL, err, errlen);
    ev->next = next;
    if (!w->conn)
        return -1;
    r = pgio_exec(&w->io, "ROLLBACK", 0, NULL);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        w_clean_error(w, w_io_error(w, NULL), err, errlen);
        w_disconnect(w);   /* in which state the transaction is: unknown */
        return -1;
    }
    if (rc == W_OK)
        return 1;
    if (rc == W_DOWN)
        return -1;
    return strcmp(w->last_sqlstate, state) == 0 ? 0 : 2;
}

#define PROBES 4

static int same_field(const event_t *a, const event_t *b, int f)
{
    return a->len[f] == b->len[f] &&
           (a->len[f] <= 0 || memcmp(event_field(a, f), event_field(b, f), (size_t)a->len[f]) == 0);
}

/* bad, the first of the batch's n events, failed alone (twice) with an
 * error (state) that may be the table's (W_UNSURE): does the table take
 * other rows of the batch? Up to PROBES of them, each in a transaction
 * rolled back: rows unlike bad first (another client or topic: a rule
 * that refuses one client's rows, even a flood of them, passes others),
 * spread over the batch, then the rows after it (waiting events of the
 * same incarnation join a batch that has no other); last, a copy of bad
 * without its topic and its client_id (on a distributed table only
 * without its topic: its client_id keeps it on bad's shard), which
 * counts only when the table takes it: a batch that is a flood of one
 * client's rows, or an earlier start's last row that no other joins, has
 * no other row to try, and a rule on a client or a topic passes the copy
 * while one on anything else (or a broken index or trigger) refuses it as
 * it does bad. 1: one was taken, or refused for another reason: the error
 * is bad's own; 0: all refused the same way: the table's; -1: no answer
 * (why in err). */
static int others_taken(writer_t *w, event_t *bad, size_t *n, const char *state, char *err,
                        size_t errlen)
{
    event_t *ev, *last = bad, *probe[PROBES];
    size_t unlike = 0, i, k = 0, every;
    int t;

    while (last->next)
        last = last->next;
    if (last == bad)
        (void)take_more(w, bad, last, n);
    for (ev = bad->next; ev; ev = ev->next)
        unlike += !same_field(ev, bad, F_CLIENT_ID) || !same_field(ev, bad, F_TOPIC);
    every = unlike > PROBES ? unlike / PROBES : 1;
    for (i = 0, ev = bad->next; ev && k < PROBES; ev = ev->next)
        if ((!same_field(ev, bad, F_CLIENT_ID) || !same_field(ev, bad, F_TOPIC)) && i++ % every == 0)
            probe[k++] = ev;
    for (ev = bad->next; ev && k < PROBES; ev = ev->next)   /* too few unlike it: the next ones */
        if (same_field(ev, bad, F_CLIENT_ID) && same_field(ev, bad, F_TOPIC))
            probe[k++] = ev;
    for (i = 0; i < k; i++) {
        t = try_rolled_back(w, probe[i], state, err, errlen);
        if (t != 0)
            return t < 0 ? -1 : 1;
    }
    ev = malloc(bad->bytes);
    if (!ev)
        return 0;   /* no memory: the table's, tried again later */
    memcpy(ev, bad, bad->bytes);
    ev->next = NULL;
    ev->len[F_TOPIC] = -1;
    if (!w->copy.client_id_required)
        ev->len[F_CLIENT_ID] = -1;
    t = try_rolled_back(w, ev, state, err, errlen);
    free(ev);
    return t < 0 ? -1 : t == 1;
}

/* While the COPY just sent commits, the next batch: when one of the same
 * incarnation is waiting in the queue, it is popped and joins the batch
 * after last, and up to PRE_BYTES of it are encoded now, to be sent the
 * moment the commit is in. 1: a batch was taken. */
static int prefetch(writer_t *w, event_t *batch, size_t *n, event_t *last)
{
    event_t *more, *ev;
    size_t i;

    if (!last || last->next || !take_more(w, batch, last, n))
        return 0;
    more = last->next;
    pthread_mutex_lock(&w->smu);
    w->st.prefetched++;
    pthread_mutex_unlock(&w->smu);
    w->pre.len = 0;
    w->pre.failed = 0;
    copy_header(&w->pre);
    for (ev = more, i = 0; ev && w->pre.len < PRE_BYTES; last = ev, ev = ev->next, i++)
        copy_row(&w->pre, &w->copy, ev);
    if (!w->pre.failed) {
        w->pre_n = i;
        w->pre_seq = more->seq;
        w->pre_last = last;
    }
    return 1;
}

event_t *w_write_batch(writer_t *w, event_t *batch, size_t *n, int *written)
{
    size_t chunk = *n, committed = 0;
    char err[256];
    int upkept = 0, fetched = 0, rechecked = 0, again = 0, refused_run = 0;

    *written = 0;
    while (batch) {
        size_t k = chunk < *n ? chunk : *n;
        event_t *last;
        int64_t t0;
        int rc, past = 0;

        if (w_stop_requested(w, &past) && past)
            return batch;   /* a stop's deadline: the rest stays (writer.c) */
        if (w->resume_check) {
            uint64_t max_seq;
            size_t skip = 0, mine = 0;
            event_t *ev;
            int tried = w->tried_inc == w->copy.incarnation;
            if (w_resume_point(w, w->copy.incarnation, batch, &max_seq) < 0)
                return batch;
            for (ev = batch; ev && ev->seq <= max_seq; ev = ev->next) {
                skip++;
                mine += tried && ev->seq <= w->tried_seq;
            }
            if (skip) {
                /* committed already: the answer to a COMMIT of ours was
                 * lost (counted as written now), or an earlier start
                 * wrote them before it stopped (read again from its
                 * journal files; counted by it) */
                if (mine)
                    count_written(w, batch, mine);
                batch = drop_front(batch, skip);
                count_skipped(w, batch, skip - mine);
                *n -= skip;
                continue;
            }
            w->resume_check = 0;
            w->checked_inc = w->copy.incarnation;
        }
        t0 = wall_us();
        last = NULL;
        rc = copy_send(w, batch, k, NULL, &last, err, sizeof err);
        if (last && (w->tried_inc != w->copy.incarnation || last->seq > w->tried_seq)) {
            /* sent: it may be committed though no answer comes */
            w->tried_inc = w->copy.incarnation;
            w->tried_seq = last->seq;
        }
        if (rc == W_OK) {
            if (k == *n)
                fetched = prefetch(w, batch, n, last);
            rc = copy_commit(w, err, sizeof err);
        }
        if (rc != W_OK)
            fetched = 0;   /* split or retried from here: all of it, in this call */
        if (rc == W_OK) {
            pthread_mutex_lock(&w->smu);
            w->st.last_batch_us = wall_us() - t0;
            pthread_mutex_unlock(&w->smu);
            count_written(w, batch, k);
            batch = drop_front(batch, k);
            *n -= k;
            committed += k;
            again = 0;
            refused_run = 0;
            chunk = 2 * k;   /* isolating: the next rows in a chunk twice as large */
            if (fetched) {
                *written = 1;   /* the rest is the next batch */
                return batch;
            }
        } else if (rc == W_DATA && w_partitioned(w) && !upkept &&
                   strcmp(w->last_sqlstate, "23514") == 0) {
            /* maybe no partition for these rows (old events from the
             * journal, a partition dropped by hand): make them, once */
            int64_t lo, hi;
            w_ts_range(batch, k, &lo, &hi);
            upkept = 1;
            (void)w_upkeep(w, lo, hi);
        } else if (rc == W_DATA && !w->copy.client_id_required && strcmp(w->last_sqlstate, "22004") == 0 &&
                   w_check_distributed(w) == 0 && w->copy.client_id_required) {
            /* no client_id, and the table was distributed while we were
             * connected (vmq_pgevents_distribute): written as '' now */
        } else if (rc == W_DATA && !rechecked && strcmp(w->last_sqlstate, "23505") == 0) {
            /* a row of the batch is there already: a write that timed
             * out committed after all, after the resume point was read
             * (its transaction ended only when the server came back; on
             * a Citus cluster, a worker's part of it). Read the resume
             * point again, once: it now counts those rows */
            rechecked = 1;
            w->resume_check = 1;
        } else if ((rc == W_DATA || rc == W_UNSURE) && k > 1) {
            chunk = k / 2;   /* until the row is isolated */
        } else if (rc == W_UNSURE && !again) {
            again = 1;   /* alone, once more: a lock or a timeout may have passed */
        } else if (rc == W_DATA || rc == W_UNSURE) {
            char derr[256], state[6];
            event_t *bad = batch;
            int taken;
            snprintf(state, sizeof state, "%s", w->last_sqlstate);
            /* a row's data, or rows of this batch just committed: the
             * row's own; else the table's unless it takes other rows */
            taken = rc == W_DATA || committed ? 1 : others_taken(w, bad, n, state, derr, sizeof derr);
            if (taken == 0) {
                /* the table refuses every row: the server's, not the row's */
                w_note_down(w, "writing", err);
                w->resume_check = 1;
                return batch;
            }
            if (taken < 0 || dead_letter(w, bad, err, state, derr, sizeof derr) == W_DOWN) {
                w_note_down(w, taken < 0 ? "trying whether the table takes other rows"
                                         : "keeping a refused row in the dead-letter table", derr);
                w->resume_check = 1;
                if (w->conn && (w->io.timed_out || PQstatus(w->conn) != CONNECTION_OK))
                    w_disconnect(w);
                return batch;
            }
            batch = batch->next;
            queue_release(bad);
            *n -= 1;
            again = 0;
            /* the rest at once, as after one refused row the rest is
             * usually taken; after a second with none taken in between,
             * the next rows one at a time, then twice as many after each
             * taken: rows refused one after another cost a COPY each, not
             * the whole rest each (a batch of them is linear, not square) */
            chunk = refused_run ? 1 : *n;
            refused_run = 1;
        } else {
            w_note_down(w, "writing", err);
            w->resume_check = 1;
            if (!w->conn || w->io.timed_out || PQstatus(w->conn) != CONNECTION_OK)
                w_disconnect(w);
            else
                w->schema_done = 0; /* e.g. the table was dropped: recreate */
            return batch;
        }
    }
    *written = 1;
    return NULL;
}

