/* writer.c - the writer thread and its libpq connection (see writer.h).
 *
 * Loop: take a batch from the queue (the queue lock is held only inside
 * queue_pop), make sure the connection is up (connect, apply the schema,
 * find where a failed batch left off), COPY the batch, repeat. A batch that
 * PostgreSQL refuses because of a row's data is split until the bad row is
 * isolated; that row is logged and counted as dead-lettered, the rest is
 * written. Connection failures keep the batch and retry with capped
 * exponential backoff and jitter; each outage is logged once when it starts
 * and once when it ends.
 *
 * Pipelined: once a batch's COPY data is sent, and while PostgreSQL
 * commits it, the next batch waiting in the queue is popped and encoded
 * (prefetch), so its data goes out the moment the commit is in. libpq
 * cannot have two statements in flight around a COPY (pipeline mode does
 * not support COPY), so this is the overlap there is: the writer's work on
 * batch n+1 against the server's commit of batch n. */
#define _GNU_SOURCE
#include "writer.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "compress.h"
#include "copy.h"
#include "deadline.h"
#include "hooks.h"
#include "journal.h"
#include "pgio.h"
#include "spool.h"

#define CHUNK_BYTES (1u << 20)   /* hand COPY data to libpq in ~1 MiB pieces */
#define PRE_BYTES (4u << 20)     /* encode at most this much ahead (prefetch) */

struct writer {
    writer_config_t cfg;       /* strings below are our own copies */
    char *conninfo, *table, *schema_sql, *node, *password, *spool_dir, *partition;
    queue_t *q;
    writer_log_fn log;
    void *log_ctx;
    pthread_t thread;

    /* writer thread only */
    PGconn *conn;
    pgio_t io;                 /* every libpq call that waits goes through it */
    event_t *hand;             /* the unwritten events in hand (being written) */
    size_t hand_n;
    int hand_in_spool;         /* ... are in the spool too (read from it, or put there) */
    uint64_t hand_dup_seq;     /* events of this incarnation up to this seq were
                                * written and are also in the spool: not counted twice */
    spool_t *sp;               /* NULL: overflow is dropped */
    journal_t *j;              /* NULL: events wait in memory (set/cleared under smu) */
    char *copy_sql, *dead_sql, *resume_sql;
    int schema_done;
    int connected_once;        /* the first connect (at start, before any event) is done */
    int64_t connect_at_ms;     /* until then: the next try (monotonic ms) */
    int64_t upkeep_at_ms;      /* next partition upkeep (monotonic ms) */
    compressor_t *comp;        /* compress_after set: its own thread and connection */
    int resume_check;          /* a write failed: ask the table where we are */
    char last_sqlstate[6];     /* of the last failed statement */
    uint64_t drops_logged;     /* hook-path drops already reported */
    int64_t drops_logged_us;
    int backoff_ms;
    int down_logged;
    int64_t down_since_us;
    uint64_t down_attempts;
    copy_ctx_t copy;
    buf_t enc;                 /* COPY data being encoded and sent */
    /* the start of the next batch, encoded while the one before it commits
     * (prefetch): valid only for the copy_send right after that commit */
    buf_t pre;                 /* COPY header and the rows of pre_n events */
    size_t pre_n;              /* 0: nothing encoded ahead */
    uint64_t pre_seq;          /* the seq of its first event */
    event_t *pre_last;         /* the last event encoded */

    /* stop request: guarded by smu, waited on by the writer's sleeps */
    pthread_mutex_t smu;
    pthread_cond_t scv;
    int stop;
    struct timespec stop_deadline;

    /* status: guarded by smu */
    writer_status_t st;
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void wlog(writer_t *w, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void wlog(writer_t *w, int level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (w->log)
        w->log(w->log_ctx, level, msg);
}

/* libpq's message without trailing newline and never with the password */
static void clean_error(const writer_t *w, const char *in, char *out, size_t n)
{
    pgio_clean_error(in, w->password, out, n);
}

static void set_error(writer_t *w, const char *msg)
{
    pthread_mutex_lock(&w->smu);
    clean_error(w, msg, w->st.last_error, sizeof w->st.last_error);
    w->st.write_errors++;
    pthread_mutex_unlock(&w->smu);
}

static void set_state(writer_t *w, int state)
{
    pthread_mutex_lock(&w->smu);
    w->st.state = state;
    pthread_mutex_unlock(&w->smu);
}

static int stop_requested(writer_t *w, int *past_deadline)
{
    struct timespec now;
    int stop;

    pthread_mutex_lock(&w->smu);
    stop = w->stop;
    if (stop && past_deadline) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        *past_deadline = now.tv_sec > w->stop_deadline.tv_sec ||
                         (now.tv_sec == w->stop_deadline.tv_sec &&
                          now.tv_nsec >= w->stop_deadline.tv_nsec);
    }
    pthread_mutex_unlock(&w->smu);
    return stop;
}

/* sleeps ms, waking early when a stop is asked */
static void pause_ms(writer_t *w, int ms)
{
    struct timespec until;

    deadline_after(&until, ms);
    pthread_mutex_lock(&w->smu);
    while (!w->stop && pthread_cond_timedwait(&w->scv, &w->smu, &until) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&w->smu);
}

/* the next wait of the capped exponential backoff, with jitter (between
 * half and all of it); doubles the one after */
static int next_backoff_ms(writer_t *w)
{
    int ms = w->backoff_ms;

    w->backoff_ms = ms * 2 > w->cfg.backoff_max_ms ? w->cfg.backoff_max_ms : ms * 2;
    return ms / 2 + (ms > 1 ? (int)(random() % (ms / 2 + 1)) : 0);
}

static void backoff(writer_t *w)
{
    if (stop_requested(w, NULL)) {
        /* still trying until the stop deadline, without spinning */
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
        return;
    }
    pause_ms(w, next_backoff_ms(w));
}

static void note_down(writer_t *w, const char *what, const char *err)
{
    char clean[256];

    clean_error(w, err, clean, sizeof clean);
    set_error(w, clean);
    w->down_attempts++;
    if (!w->down_logged) {
        w->down_logged = 1;
        w->down_since_us = now_us();
        wlog(w, WLOG_WARNING, "postgresql unavailable (%s: %s); events stay queued, retrying",
             what, clean);
    }
}

static void note_up(writer_t *w)
{
    if (w->down_logged) {
        queue_stats_t qs;
        queue_get_stats(w->q, &qs);
        wlog(w, WLOG_INFO,
             "postgresql available again after %.1f s and %llu failed attempts; %zu events queued",
             (double)(now_us() - w->down_since_us) / 1e6,
             (unsigned long long)w->down_attempts, qs.count);
        w->down_logged = 0;
        w->down_attempts = 0;
    }
    w->backoff_ms = w->cfg.backoff_min_ms;
}

static void disconnect(writer_t *w)
{
    if (w->conn) {
        PQfinish(w->conn);
        w->conn = NULL;
    }
    w->io.conn = NULL;
    free(w->copy_sql);
    w->copy_sql = NULL;
    free(w->dead_sql);
    w->dead_sql = NULL;
    free(w->resume_sql);
    w->resume_sql = NULL;
    w->schema_done = 0;
}

/* builds the statements that name the tables, quoted by libpq */
static int prepare_sql(writer_t *w)
{
    static const char copy_fmt[] = "COPY %s (%s) FROM STDIN (FORMAT binary)";
    static const char resume_fmt[] =
        "SELECT coalesce(max(seq), 0) FROM %s WHERE node = $1 AND incarnation = $2 "
        "AND ts >= to_timestamp($3::float8) AND ts <= to_timestamp($4::float8)";
    char *ident = PQescapeIdentifier(w->conn, w->table, strlen(w->table)), *dead_ident;
    char dead_name[80];
    size_t n;

    if (!ident)
        return -1;
    snprintf(dead_name, sizeof dead_name, "%s_dead", w->table);
    dead_ident = PQescapeIdentifier(w->conn, dead_name, strlen(dead_name));
    if (!dead_ident) {
        PQfreemem(ident);
        return -1;
    }
    n = sizeof copy_fmt + strlen(dead_ident) + strlen(copy_dead_columns);
    w->dead_sql = malloc(n);
    if (w->dead_sql)
        snprintf(w->dead_sql, n, copy_fmt, dead_ident, copy_dead_columns);
    PQfreemem(dead_ident);
    n = sizeof copy_fmt + strlen(ident) + strlen(copy_columns);
    w->copy_sql = malloc(n);
    if (w->copy_sql)
        snprintf(w->copy_sql, n, copy_fmt, ident, copy_columns);
    n = sizeof resume_fmt + strlen(ident);
    w->resume_sql = malloc(n);
    if (w->resume_sql)
        snprintf(w->resume_sql, n, resume_fmt, ident);
    PQfreemem(ident);
    return w->copy_sql && w->dead_sql && w->resume_sql ? 0 : -1;
}

/* why a pgio call gave no (good) result: the timeout, or libpq's word */
static const char *io_error(writer_t *w, const PGresult *r)
{
    static __thread char msg[96];

    if (w->io.timed_out) {
        snprintf(msg, sizeof msg, "no answer from the server within %d ms", w->io.timeout_ms);
        return msg;
    }
    return r ? PQresultErrorMessage(r) : PQerrorMessage(w->conn);
}

static int apply_schema(writer_t *w)
{
    const char *params[2] = {w->table, w->partition};
    PGresult *r;
    int ok;

    r = pgio_exec(&w->io,
                  "SELECT set_config('vmq_pgevents.table', $1, false), "
                  "set_config('vmq_pgevents.partition', $2, false)", 2, params);
    ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        note_down(w, "setting the table name", io_error(w, r));
    PQclear(r);
    if (!ok)
        return -1;
    r = pgio_exec(&w->io, w->schema_sql, 0, NULL);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        note_down(w, "applying schema.sql", io_error(w, r));
    PQclear(r);
    return ok ? 0 : -1;
}

static int partitioned(const writer_t *w)
{
    return w->schema_sql && strcmp(w->partition, "none") != 0;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define UPKEEP_EVERY_MS 60000

static void result_error(writer_t *w, PGresult *r, char *err, size_t errlen);

/* Partition upkeep (auto_create on, partition day or hour): makes the
 * partitions from now through two periods ahead, and those that events
 * from lo_us to hi_us need (0: none; e.g. old events from a journal);
 * drops the partitions past the retention. -1: it failed (logged). */
static int upkeep(writer_t *w, int64_t lo_us, int64_t hi_us)
{
    char keep[24], lo[32], hi[32];
    const char *params[5] = {w->table, w->partition, keep, lo_us ? lo : NULL, hi_us ? hi : NULL};
    PGresult *r;
    int ok;

    snprintf(keep, sizeof keep, "%lld", (long long)w->cfg.retention_s);
    snprintf(lo, sizeof lo, "%.6f", (double)lo_us / 1e6);
    snprintf(hi, sizeof hi, "%.6f", (double)hi_us / 1e6);
    r = pgio_exec(&w->io,
                  "SELECT created, coalesce(array_to_string(dropped, ', '), ''), "
                  "coalesce(array_length(dropped, 1), 0) "
                  "FROM vmq_pgevents_partitions($1, $2, 2, $3::bigint, now(), "
                  "to_timestamp($4::float8), to_timestamp($5::float8))", 5, params);
    ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQnfields(r) == 3;
    w->upkeep_at_ms = mono_ms() + UPKEEP_EVERY_MS;
    if (ok) {
        long created = strtol(PQgetvalue(r, 0, 0), NULL, 10);
        const char *dropped = PQgetvalue(r, 0, 1);
        uint64_t ndropped = strtoull(PQgetvalue(r, 0, 2), NULL, 10);
        pthread_mutex_lock(&w->smu);
        w->st.partitions_created += (uint64_t)(created > 0 ? created : 0);
        w->st.partitions_dropped += ndropped;
        w->st.partitions_checked_us = now_us();
        pthread_mutex_unlock(&w->smu);
        if (created > 0)
            wlog(w, WLOG_INFO, "made %ld partition(s) of %s ahead of time", created, w->table);
        if (ndropped)
            wlog(w, WLOG_INFO, "retention: dropped partition(s) %s (older than %lld s)", dropped,
                 (long long)w->cfg.retention_s);
    } else {
        char err[256];
        result_error(w, r, err, sizeof err);
        wlog(w, WLOG_ERROR, "partition upkeep of %s failed: %s", w->table, err);
    }
    PQclear(r);
    return ok ? 0 : -1;
}

/* libpq prints NOTICEs (e.g. "relation already exists, skipping" from
 * schema.sql) to stderr by default: inside a broker, say nothing */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static int ensure_connected(writer_t *w)
{
    const char *keys[] = {"fallback_application_name", "dbname", NULL};
    const char *vals[] = {"vmq_pgevents", w->conninfo, NULL};
    char err[256];

    if (w->conn && PQstatus(w->conn) == CONNECTION_OK)
        goto connected;
    disconnect(w);
    set_state(w, WS_DISCONNECTED);
    w->conn = pgio_connect(&w->io, keys, vals, err, sizeof err);
    if (!w->conn) {
        note_down(w, "connect", err);
        return -1;
    }
    w->io.conn = w->conn;
    PQsetNoticeProcessor(w->conn, ignore_notice, NULL);
    if (prepare_sql(w) < 0) {
        note_down(w, "connect", "out of memory");
        disconnect(w);
        return -1;
    }
    pthread_mutex_lock(&w->smu);
    w->st.reconnects++;
    pthread_mutex_unlock(&w->smu);
    w->resume_check = 1;
connected:
    if (w->schema_sql && !w->schema_done) {
        if (apply_schema(w) < 0)
            return -1;
        w->schema_done = 1;
        if (partitioned(w))
            (void)upkeep(w, 0, 0);
    }
    w->connected_once = 1;
    set_state(w, WS_CONNECTED);
    return 0;
}

/* the earliest and latest ts of the first n events of a list (SIZE_MAX: all) */
static void ts_range(const event_t *ev, size_t n, int64_t *lo, int64_t *hi)
{
    *lo = INT64_MAX;
    *hi = INT64_MIN;
    for (; ev && n; ev = ev->next, n--) {
        if (ev->ts_us < *lo)
            *lo = ev->ts_us;
        if (ev->ts_us > *hi)
            *hi = ev->ts_us;
    }
}

/* After a failed write the batch may have been committed anyway (the
 * connection died before COMMIT's answer). One writer per node commits in
 * seq order, so the table's highest seq for this incarnation says exactly
 * which of the batch's events are already there. Asked among the rows
 * from the batch's first ts to its last (a second either side): those are
 * the only rows that can be the batch's, and the partitions of other
 * periods are not read (a compressed one has no index to ask). */
static int resume_point(writer_t *w, int64_t incarnation, const event_t *batch, uint64_t *max_seq)
{
    char inc[24], lo[32], hi[32];
    const char *params[4] = {w->node, inc, lo, hi};
    int64_t lo_us, hi_us;
    PGresult *r;
    int ok;

    ts_range(batch, SIZE_MAX, &lo_us, &hi_us);
    snprintf(inc, sizeof inc, "%lld", (long long)incarnation);
    snprintf(lo, sizeof lo, "%.6f", (double)(lo_us - 1000000) / 1e6);
    snprintf(hi, sizeof hi, "%.6f", (double)(hi_us + 1000000) / 1e6);
    r = pgio_exec(&w->io, w->resume_sql, 4, params);
    ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (ok)
        *max_seq = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    else
        note_down(w, "reading the resume point", io_error(w, r));
    PQclear(r);
    return ok ? 0 : -1;
}

enum write_rc { W_OK, W_DATA, W_RETRY };

/* A result's error as "primary message (SQLSTATE xxxxx)": never the DETAIL
 * or CONTEXT lines, which can quote the refused row's values. */
static void result_error(writer_t *w, PGresult *r, char *err, size_t errlen)
{
    const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    char tmp[256];

    snprintf(w->last_sqlstate, sizeof w->last_sqlstate, "%s", state ? state : "");
    if (!primary) {
        clean_error(w, io_error(w, NULL), err, errlen);
        return;
    }
    snprintf(tmp, sizeof tmp, "%s (SQLSTATE %s)", primary, state ? state : "?");
    clean_error(w, tmp, err, errlen);
}

/* 22xxx data exception, 23xxx integrity constraint, 54xxx program limit:
 * something in a row; anything else is the connection or the table. */
static int classify(writer_t *w, PGresult *r)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

    if (w->io.timed_out || PQstatus(w->conn) != CONNECTION_OK)
        return W_RETRY;
    if (state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0 ||
                  strncmp(state, "54", 2) == 0))
        return W_DATA;
    return W_RETRY;
}

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
        rc = classify(w, r);
        result_error(w, r, err, errlen);
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
    if (sent_ok && pgio_end(&w->io, b->failed ? "vmq_pgevents: out of memory encoding the batch"
                                              : NULL) < 0)
        sent_ok = 0;
    if (b->cap > 2 * CHUNK_BYTES) {   /* one huge row: give its memory back */
        buf_free(b);
        buf_init(b, NULL, 0);
    }
    if (!sent_ok) {
        /* the connection failed or the server stopped answering: what
         * state it is in is unknown, so it goes */
        clean_error(w, io_error(w, NULL), err, errlen);
        disconnect(w);
        return W_RETRY;
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
        rc = classify(w, r);
        result_error(w, r, err, errlen);
        if (rc == W_OK)
            rc = W_RETRY;
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
        event_free(list);
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
    w->st.last_write_us = now_us();
    pthread_mutex_unlock(&w->smu);
}

/* a row PostgreSQL refused: kept in <table>_dead with the error, counted,
 * logged (seq, hook and the error; never the row's values) */
static void dead_letter(writer_t *w, event_t *ev, const char *err)
{
    char derr[256];
    event_t *next = ev->next;
    int kept;
    uint64_t n;

    ev->next = NULL;
    kept = copy_events(w, ev, 1, err, derr, sizeof derr) == W_OK;
    ev->next = next;
    pthread_mutex_lock(&w->smu);
    n = ++w->st.dead_lettered;
    w->st.dead_hook[ev->hook]++;
    if (!kept)
        w->st.dead_lost++;
    w->st.inflight--;
    w->st.inflight_oldest_us = next ? next->ts_us : 0;
    pthread_mutex_unlock(&w->smu);
    if (!kept)
        wlog(w, WLOG_ERROR,
             "postgresql refused the row of event seq %llu (%s): %s; the dead-letter table "
             "%s_dead did not take it either (%s): the row is lost",
             (unsigned long long)ev->seq, hook_defs[ev->hook].name, err, w->table, derr);
    else if (n <= 10 || n % 1000 == 0)
        wlog(w, WLOG_ERROR,
             "postgresql refused the row of event seq %llu (%s): %s; the row is kept in "
             "%s_dead (%llu so far), the rest of its batch is written",
             (unsigned long long)ev->seq, hook_defs[ev->hook].name, err, w->table,
             (unsigned long long)n);
}

/* the events now in hand, for the I/O tick (writer_io_tick) */
static void hold(writer_t *w, event_t *batch, size_t n)
{
    w->hand = batch;
    w->hand_n = n;
}

static const event_t *nth(const event_t *list, size_t i)
{
    while (i--)
        list = list->next;
    return list;
}

/* While the COPY just sent commits, the next batch: when one is waiting
 * in the queue and nothing must go before it (the hand came from the
 * queue, the spool is empty), it is popped and joins the hand after last,
 * and up to PRE_BYTES of it are encoded now, to be sent the moment the
 * commit is in. 1: a batch was taken. */
static int prefetch(writer_t *w, event_t *batch, size_t *n, event_t *last)
{
    event_t *more, *ev;
    size_t k, i;

    if (!last || last->next || w->hand_in_spool || w->copy.incarnation != w->cfg.incarnation ||
        (w->sp && !spool_empty(w->sp)) || !queue_ready(w->q))
        return 0;
    more = queue_pop(w->q, __atomic_load_n(&w->cfg.batch_size, __ATOMIC_RELAXED), 0, &k);
    if (!more)
        return 0;
    last->next = more;
    *n += k;
    pthread_mutex_lock(&w->smu);
    w->st.inflight += k;
    w->st.prefetched++;
    pthread_mutex_unlock(&w->smu);
    queue_settled(w->q);
    hold(w, batch, *n);
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

/* Writes the batch, isolating rows PostgreSQL refuses. Returns the events
 * not yet written (NULL when all are done). *written 0: they are kept for
 * a retry; 1: all were written, and these are the next batch, taken from
 * the queue while the last COPY committed (prefetch). */
static event_t *write_batch(writer_t *w, event_t *batch, size_t *n, int *written)
{
    size_t chunk = *n;
    char err[256];
    int upkept = 0, fetched = 0;

    *written = 0;
    while (batch) {
        size_t k = chunk < *n ? chunk : *n;
        event_t *last;
        int64_t t0;
        int rc;

        if (w->resume_check) {
            uint64_t max_seq;
            size_t skip = 0;
            event_t *ev;
            if (resume_point(w, w->copy.incarnation, batch, &max_seq) < 0)
                return batch;
            for (ev = batch; ev && ev->seq <= max_seq; ev = ev->next)
                skip++;
            if (skip) {
                /* written already; those copied to the spool while they
                 * were being written were counted then */
                size_t dups = 0;
                if (w->copy.incarnation == w->cfg.incarnation)
                    for (ev = batch; dups < skip && ev->seq <= w->hand_dup_seq; ev = ev->next)
                        dups++;
                pthread_mutex_lock(&w->smu);
                w->st.inflight -= dups;
                pthread_mutex_unlock(&w->smu);
                if (skip > dups)
                    count_written(w, nth(batch, dups), skip - dups);
                batch = drop_front(batch, skip);
                *n -= skip;
                hold(w, batch, *n);
                continue;
            }
            w->resume_check = 0;
        }
        t0 = now_us();
        rc = copy_send(w, batch, k, NULL, &last, err, sizeof err);
        if (rc == W_OK) {
            if (k == *n)
                fetched = prefetch(w, batch, n, last);
            rc = copy_commit(w, err, sizeof err);
        }
        if (rc != W_OK)
            fetched = 0;   /* split or retried from here: all of it, in this call */
        if (rc == W_OK) {
            pthread_mutex_lock(&w->smu);
            w->st.last_batch_us = now_us() - t0;
            pthread_mutex_unlock(&w->smu);
            count_written(w, batch, k);
            if (w->hand_in_spool && w->copy.incarnation == w->cfg.incarnation)
                w->hand_dup_seq = nth(batch, k - 1)->seq;
            batch = drop_front(batch, k);
            *n -= k;
            hold(w, batch, *n);
            chunk = *n;
            if (fetched) {
                *written = 1;   /* the rest is the next batch */
                return batch;
            }
        } else if (rc == W_DATA && partitioned(w) && !upkept &&
                   strcmp(w->last_sqlstate, "23514") == 0) {
            /* maybe no partition for these rows (old events from the
             * journal, a partition dropped by hand): make them, once */
            int64_t lo, hi;
            ts_range(batch, k, &lo, &hi);
            upkept = 1;
            (void)upkeep(w, lo, hi);
        } else if (rc == W_DATA) {
            if (k == 1) {
                event_t *bad = batch;
                batch = batch->next;
                dead_letter(w, bad, err);
                event_free(bad);
                *n -= 1;
                hold(w, batch, *n);
                chunk = *n;
            } else {
                chunk = k / 2;
            }
        } else {
            note_down(w, "writing", err);
            w->resume_check = 1;
            if (w->io.timed_out || PQstatus(w->conn) != CONNECTION_OK)
                disconnect(w);
            else
                w->schema_done = 0; /* e.g. the table was dropped: recreate */
            return batch;
        }
    }
    *written = 1;
    return NULL;
}

static void spool_status(writer_t *w)
{
    uint64_t corrupt = w->sp ? spool_corrupt(w->sp) : 0, before;

    pthread_mutex_lock(&w->smu);
    before = w->st.spool_corrupt;
    w->st.spool_bytes = w->sp ? spool_bytes(w->sp) : 0;
    w->st.spool_corrupt = corrupt;
    pthread_mutex_unlock(&w->smu);
    if (corrupt > before)
        wlog(w, WLOG_ERROR,
             "spool in %s: %llu damaged record(s) skipped (%llu in all); the records after "
             "them are written", w->spool_dir, (unsigned long long)(corrupt - before),
             (unsigned long long)corrupt);
}

/* Appends list (n events) to the spool and frees it; when the spool
 * cannot take them they are dropped: counted per hook, logged (rate
 * limited). at_stop: counted as spooled at stop. */
/* the first n events of list are in the spool now */
static void count_spooled(writer_t *w, const event_t *list, size_t n, int at_stop)
{
    const event_t *ev;
    size_t i;

    pthread_mutex_lock(&w->smu);
    for (ev = list, i = 0; ev && i < n; ev = ev->next, i++)
        w->st.spooled_hook[ev->hook]++;
    w->st.spooled += n;
    if (at_stop)
        w->st.spooled_at_stop += n;
    pthread_mutex_unlock(&w->smu);
}

static void spool_or_drop(writer_t *w, event_t *list, size_t n, int at_stop)
{
    char err[256];
    const event_t *ev;
    uint64_t dropped;

    if (!list)
        return;
    if (w->sp && spool_append(w->sp, list, n, err, sizeof err) == 0) {
        count_spooled(w, list, n, at_stop);
    } else {
        if (!w->sp)
            snprintf(err, sizeof err, "no spool");
        pthread_mutex_lock(&w->smu);
        for (ev = list; ev; ev = ev->next)
            w->st.dropped_hook[ev->hook]++;
        w->st.spool_dropped += n;
        dropped = w->st.spool_dropped;
        pthread_mutex_unlock(&w->smu);
        if (dropped == n || dropped / 10000 != (dropped - n) / 10000)
            wlog(w, WLOG_ERROR, "%zu events dropped (%s); %llu dropped so far", n, err,
                 (unsigned long long)dropped);
    }
    event_free_list(list);
    spool_status(w);
}

/* At a stop: events in the journal stay there (the next start reads them
 * from disk), the others go to the spool (or are dropped, counted). */
static void leave_or_spool(writer_t *w, event_t *list, size_t n)
{
    event_t *heap = NULL, *heap_tail = NULL, *ev, *next;
    size_t i, nheap = 0, left = 0;

    for (ev = list, i = 0; ev && i < n; ev = next, i++) {
        next = ev->next;
        if (ev->home == EV_JOURNAL) {
            pthread_mutex_lock(&w->smu);
            w->st.spooled_hook[ev->hook]++;
            pthread_mutex_unlock(&w->smu);
            left++;
            continue;   /* not released: its record stays */
        }
        ev->next = NULL;
        if (heap_tail)
            heap_tail->next = ev;
        else
            heap = ev;
        heap_tail = ev;
        nheap++;
    }
    pthread_mutex_lock(&w->smu);
    w->st.spooled += left;
    w->st.spooled_at_stop += left;
    w->st.journal_left += left;
    pthread_mutex_unlock(&w->smu);
    if (nheap) {
        if (w->sp)
            spool_or_drop(w, heap, nheap, 1);
        else
            event_free_list(heap);
    }
}

/* the queue is past half its limit (in events or bytes) */
static int queue_over_half(writer_t *w)
{
    queue_stats_t qs;

    if (w->j)
        return 0;   /* the queue is on disk already */
    queue_get_stats(w->q, &qs);
    return qs.count >= __atomic_load_n(&w->q->max_events, __ATOMIC_RELAXED) / 2 ||
           qs.bytes >= __atomic_load_n(&w->q->max_bytes, __ATOMIC_RELAXED) / 2;
}

/* Overflow: once the queue is past half its limit, it goes to the spool,
 * after the batch in hand when that came from the queue (it is older). */
/* everything queued now goes to the spool (or is dropped, counted) */
static void spool_queue(writer_t *w)
{
    event_t *list;
    size_t k;

    while ((list = queue_pop(w->q, __atomic_load_n(&w->cfg.batch_size, __ATOMIC_RELAXED), 0, &k)) != NULL)
        spool_or_drop(w, list, k, 0);
    queue_settled(w->q);
}

static void spool_overflow(writer_t *w, event_t **batch, size_t *n, int from_spool)
{
    if (!queue_over_half(w))
        return;
    if (*batch && !from_spool) {
        spool_or_drop(w, *batch, *n, 0);
        *batch = NULL;
        *n = 0;
        pthread_mutex_lock(&w->smu);
        w->st.inflight = 0;
        w->st.inflight_oldest_us = 0;
        pthread_mutex_unlock(&w->smu);
    }
    spool_queue(w);
}

static void report_queue_drops(writer_t *w);

/* Runs while a libpq call waits for the server (pgio's tick): past half
 * the queue limit, the queue goes to the spool as during an outage, so a
 * server that stops answering costs no event. The events in hand are older:
 * they are copied to the spool first (and stay in hand; once written they
 * are skipped when read back). Nonzero: a stop's deadline has passed. */
static int writer_io_tick(void *ctx)
{
    writer_t *w = ctx;
    char err[256];
    int past = 0;

    if (stop_requested(w, &past) && past)
        return 1;
    report_queue_drops(w);
    if (!w->sp || !queue_over_half(w))
        return 0;
    if (w->hand && !w->hand_in_spool) {
        if (spool_append(w->sp, w->hand, w->hand_n, err, sizeof err) != 0)
            return 0;   /* nothing newer may go to the spool before them */
        w->hand_in_spool = 1;
        count_spooled(w, w->hand, w->hand_n, 0);
    }
    spool_queue(w);
    return 0;
}

/* The hook path counts the events it could not queue but never logs;
 * the writer says so, at most every 10 s. */
static void report_queue_drops(writer_t *w)
{
    queue_stats_t qs;
    int64_t now;

    queue_get_stats(w->q, &qs);
    if (qs.dropped <= w->drops_logged)
        return;
    now = now_us();
    if (w->drops_logged_us && now - w->drops_logged_us < 10000000)
        return;
    if (w->j) {
        journal_stats_t js;
        journal_get_stats(w->j, &js);
        wlog(w, WLOG_ERROR,
             "%llu events dropped: no room in the journal (its files may use spool_max_bytes "
             "%llu in all%s%s); %llu dropped so far",
             (unsigned long long)(qs.dropped - w->drops_logged),
             (unsigned long long)w->cfg.spool_max_bytes, js.error[0] ? "; " : "", js.error,
             (unsigned long long)qs.dropped);
        w->drops_logged = qs.dropped;
        w->drops_logged_us = now;
        return;
    }
    wlog(w, WLOG_ERROR,
         "%llu events dropped: the in-memory queue was full (queue_max_events %zu, "
         "queue_max_bytes %zu)%s; %llu dropped so far",
         (unsigned long long)(qs.dropped - w->drops_logged),
         __atomic_load_n(&w->q->max_events, __ATOMIC_RELAXED),
         __atomic_load_n(&w->q->max_bytes, __ATOMIC_RELAXED),
         w->sp ? " faster than the spool could take it" : " and overflow is drop",
         (unsigned long long)qs.dropped);
    w->drops_logged = qs.dropped;
    w->drops_logged_us = now;
}

/* waits out a reconnect backoff, moving queue overflow to the spool every
 * 10 ms so a long outage does not fill the queue */
static void backoff_spooling(writer_t *w, event_t **batch, size_t *n, int from_spool)
{
    int total;

    if (!w->sp || stop_requested(w, NULL)) {
        backoff(w);
        return;
    }
    total = next_backoff_ms(w);
    while (total > 0 && !stop_requested(w, NULL)) {
        int slice = total < 10 ? total : 10;
        pause_ms(w, slice);
        total -= slice;
        spool_overflow(w, batch, n, from_spool);
    }
}

/* events go to the journal from now on; without one they wait in memory
 * and overflow goes to the spool (writer_start, before the thread) */
static void open_journal(writer_t *w)
{
    char err[256] = "";
    journal_t *j = journal_open(w->spool_dir, w->cfg.incarnation, w->cfg.spool_max_bytes,
                                w->cfg.journal_sync_ms, err, sizeof err);

    if (!j) {
        pthread_mutex_lock(&w->smu);
        snprintf(w->st.journal_error, sizeof w->st.journal_error, "%s", err);
        pthread_mutex_unlock(&w->smu);
        return;
    }
    pthread_mutex_lock(&w->smu);
    w->j = j;
    w->st.journal_on = 1;
    w->st.journal_error[0] = '\0';
    pthread_mutex_unlock(&w->smu);
    queue_attach_journal(w->q, j);
}

/* at the end: what the journal still holds stays on disk for the next start */
static void close_journal(writer_t *w)
{
    event_t *left;
    size_t n;
    journal_t *j = w->j;

    if (!j)
        return;
    left = queue_detach_journal(w->q, &n);
    if (n) {
        leave_or_spool(w, left, n);
        wlog(w, WLOG_WARNING, "%zu events stay in the journal in %s: written at the next start",
             n, w->spool_dir);
    }
    pthread_mutex_lock(&w->smu);
    w->j = NULL;
    w->st.journal_on = 0;
    pthread_mutex_unlock(&w->smu);
    journal_close(j);
}

/* The events in hand went to the spool too (writer_io_tick) while they
 * were being written: forgotten here, read back from there before
 * anything newer (what was written meanwhile is skipped then). */
static void drop_hand(writer_t *w, event_t **batch, size_t *n)
{
    event_free_list(*batch);
    *batch = NULL;
    *n = 0;
    pthread_mutex_lock(&w->smu);
    w->st.inflight = 0;
    w->st.inflight_oldest_us = 0;
    pthread_mutex_unlock(&w->smu);
}

static void *writer_main(void *arg)
{
    writer_t *w = arg;
    event_t *batch = NULL;
    size_t n = 0;
    int from_spool = 0, written;
    int64_t batch_inc = w->cfg.incarnation;

#ifdef __linux__
    pthread_setname_np(pthread_self(), "vmq_pgevents");
#endif
    /* what writer_start found (it cannot log: it runs in the caller) */
    if (w->spool_dir && !w->sp)
        wlog(w, WLOG_ERROR, "no spool: %s; events that do not fit in memory are dropped",
             w->st.spool_error);
    else if (w->sp && !spool_empty(w->sp))
        wlog(w, WLOG_INFO, "spool in %s holds %llu bytes from earlier runs: written first",
             w->spool_dir, (unsigned long long)spool_bytes(w->sp));
    if (w->sp && w->cfg.journal && !w->j)
        wlog(w, WLOG_ERROR, "no journal: %s; events wait in memory (queue_max_events, "
             "queue_max_bytes) and overflow goes to the spool", w->st.journal_error);
    spool_status(w);
    {
        queue_stats_t qs;
        queue_get_stats(w->q, &qs);
        w->drops_logged = qs.dropped;   /* earlier writers reported theirs */
    }
    for (;;) {
        int past = 0, stopping = stop_requested(w, &past);

        report_queue_drops(w);
        if (partitioned(w) && w->schema_done && w->conn && mono_ms() >= w->upkeep_at_ms &&
            !stopping)
            (void)upkeep(w, 0, 0);
        if (w->sp && !stopping)
            spool_overflow(w, &batch, &n, from_spool);
        if (!batch && !stopping && !w->connected_once && mono_ms() >= w->connect_at_ms) {
            /* connect and apply the schema at start, so the table and the
             * views are there before the first event; PostgreSQL down:
             * retried with the backoff while events wait */
            if (ensure_connected(w) == 0)
                note_up(w);
            else
                w->connect_at_ms = mono_ms() + next_backoff_ms(w);
        }
        if (!batch) {
            w->pre_n = 0;   /* nothing encoded ahead belongs to a new batch */
            if (w->sp && !spool_empty(w->sp)) {
                /* the spool is older than anything queued: it goes first */
                batch = spool_read(w->sp, __atomic_load_n(&w->cfg.batch_size, __ATOMIC_RELAXED),
                                   &n, &batch_inc);
                spool_status(w);
                if (!batch)
                    continue;  /* only damaged records there: skipped, counted */
                from_spool = 1;
                w->resume_check = 1;   /* an earlier run may have written some */
            } else {
                batch = queue_pop(w->q, __atomic_load_n(&w->cfg.batch_size, __ATOMIC_RELAXED),
                                  stopping ? 0 : __atomic_load_n(&w->cfg.flush_interval_ms, __ATOMIC_RELAXED),
                                  &n);
                if (!batch) {
                    if (stopping)
                        break;
                    continue;
                }
                from_spool = 0;
                batch_inc = w->cfg.incarnation;
            }
            w->copy.json_max = __atomic_load_n(&w->cfg.json_max, __ATOMIC_RELAXED);
            pthread_mutex_lock(&w->smu);
            w->st.inflight = n;
            w->st.inflight_oldest_us = batch->ts_us;
            pthread_mutex_unlock(&w->smu);
            queue_settled(w->q);
            w->hand_in_spool = from_spool;
        }
        hold(w, batch, n);
        if (stopping && past) {
            size_t rest = w->hand_in_spool ? 0 : n;
            event_t *list;
            size_t k;
            hold(w, NULL, 0);
            if (w->hand_in_spool)
                event_free_list(batch);        /* still in the spool */
            else
                leave_or_spool(w, batch, n);
            batch = NULL;
            while ((list = queue_pop(w->q, SIZE_MAX, 0, &k)) != NULL) {
                rest += k;
                leave_or_spool(w, list, k);
            }
            queue_settled(w->q);
            pthread_mutex_lock(&w->smu);
            if (!w->sp)
                w->st.discarded_at_stop += rest;
            w->st.inflight = 0;
            w->st.inflight_oldest_us = 0;
            pthread_mutex_unlock(&w->smu);
            if (w->sp)
                wlog(w, WLOG_WARNING,
                     "stop timeout reached: %zu events stay on disk (%s), written at the next "
                     "start", rest, w->j ? "the journal" : "the spool");
            else
                wlog(w, WLOG_ERROR,
                     "stop timeout reached: %zu events could not be written and are lost", rest);
            break;
        }
        if (ensure_connected(w) < 0) {
            backoff_spooling(w, &batch, &n, from_spool);
            continue;
        }
        w->copy.incarnation = batch_inc;
        batch = write_batch(w, batch, &n, &written);
        hold(w, NULL, 0);
        if (written) {
            /* batch: NULL, or the next batch, fetched from the queue
             * during the last commit (never with a batch from the spool) */
            note_up(w);
            if (from_spool) {
                spool_consumed(w->sp);
                spool_status(w);
            }
            if (batch && w->hand_in_spool)
                drop_hand(w, &batch, &n);   /* read back from the spool, in order */
            continue;
        }
        if (w->hand_in_spool && !from_spool) {
            /* the server stopped answering and they went to the spool
             * meanwhile: read back from there, before anything newer */
            drop_hand(w, &batch, &n);
        }
        backoff_spooling(w, &batch, &n, from_spool);
    }
    close_journal(w);
    disconnect(w);
    spool_close(w->sp);
    w->sp = NULL;
    set_state(w, WS_STOPPED);
    return NULL;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void writer_free(writer_t *w)
{
    free(w->conninfo);
    free(w->table);
    free(w->schema_sql);
    free(w->node);
    free(w->spool_dir);
    free(w->partition);
    buf_free(&w->enc);
    buf_free(&w->pre);
    if (w->password) {
        memset(w->password, 0, strlen(w->password));
        free(w->password);
    }
    pthread_cond_destroy(&w->scv);
    pthread_mutex_destroy(&w->smu);
    free(w);
}

static char *conninfo_password(const char *conninfo)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL), *o;
    char *pw = NULL;

    if (!opts)
        return NULL;
    for (o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val && *o->val)
            pw = strdup(o->val);
    PQconninfoFree(opts);
    return pw;
}

int conninfo_check(const char *conninfo)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &errmsg);

    PQfreemem(errmsg); /* may quote the dsn: never shown */
    if (!opts)
        return -1;
    PQconninfoFree(opts);
    return 0;
}

void conninfo_masked(const char *conninfo, char *out, size_t n)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL), *o;
    buf_t b;

    if (n == 0)
        return;
    out[0] = '\0';
    if (!opts)
        return;
    buf_init(&b, NULL, 0);
    for (o = opts; o->keyword; o++) {
        if (!o->val || !*o->val)
            continue;
        if (b.len)
            buf_putc(&b, ' ');
        buf_puts(&b, o->keyword);
        buf_putc(&b, '=');
        if (strcmp(o->keyword, "password") == 0) {
            buf_puts(&b, "****");
        } else {
            const char *c;
            buf_putc(&b, '\'');
            for (c = o->val; *c; c++) {
                if (*c == '\'' || *c == '\\')
                    buf_putc(&b, '\\');
                buf_putc(&b, *c);
            }
            buf_putc(&b, '\'');
        }
    }
    PQconninfoFree(opts);
    if (!b.failed && b.len) {
        size_t k = b.len < n - 1 ? b.len : n - 1;
        memcpy(out, b.p, k);
        out[k] = '\0';
    }
    buf_free(&b);
}

writer_t *writer_start(const writer_config_t *cfg, queue_t *q,
                       writer_log_fn log, void *log_ctx, char *err, size_t errlen)
{
    writer_t *w = calloc(1, sizeof *w);
    pthread_condattr_t ca;

    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (pthread_mutex_init(&w->smu, NULL) != 0) {
        free(w);
        snprintf(err, errlen, "cannot create a mutex");
        return NULL;
    }
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_cond_init(&w->scv, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        pthread_mutex_destroy(&w->smu);
        free(w);
        snprintf(err, errlen, "cannot create a condition variable");
        return NULL;
    }
    pthread_condattr_destroy(&ca);
    w->cfg = *cfg;
    w->conninfo = strdup(cfg->conninfo ? cfg->conninfo : "");
    w->table = strdup(cfg->table);
    w->schema_sql = dup_or_null(cfg->schema_sql);
    w->node = strdup(cfg->node);
    w->spool_dir = dup_or_null(cfg->spool_dir);
    w->partition = strdup(cfg->partition ? cfg->partition : "none");
    w->password = conninfo_password(w->conninfo);
    if (!w->conninfo || !w->table || !w->node || !w->partition ||
        (cfg->schema_sql && !w->schema_sql) ||
        (cfg->spool_dir && !w->spool_dir)) {
        writer_free(w);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->cfg.conninfo = w->conninfo;
    w->cfg.table = w->table;
    w->cfg.schema_sql = w->schema_sql;
    w->cfg.node = w->node;
    w->cfg.spool_dir = w->spool_dir;
    w->cfg.partition = w->partition;
    w->io.timeout_ms = cfg->pg_timeout_ms > 0 ? cfg->pg_timeout_ms : 10000;
    w->io.tick = writer_io_tick;
    w->io.ctx = w;
    if (w->cfg.backoff_min_ms < 1)
        w->cfg.backoff_min_ms = 1;
    if (w->cfg.backoff_max_ms < w->cfg.backoff_min_ms)
        w->cfg.backoff_max_ms = w->cfg.backoff_min_ms;
    w->backoff_ms = w->cfg.backoff_min_ms;
    buf_init(&w->enc, NULL, 0);
    buf_init(&w->pre, NULL, 0);
    w->copy.node = w->node;
    w->copy.node_len = strlen(w->node);
    w->copy.incarnation = cfg->incarnation;
    w->copy.json_max = cfg->json_max;
    w->q = q;
    w->log = log;
    w->log_ctx = log_ctx;
    w->st.state = WS_STARTING;
    /* the spool first (it lists the files earlier runs left), then the
     * journal, so hooks that run from the moment start returns are kept */
    if (w->spool_dir) {
        char serr[256];
        w->sp = spool_open(w->spool_dir, w->cfg.incarnation, w->cfg.spool_max_bytes, serr,
                           sizeof serr);
        if (!w->sp)
            snprintf(w->st.spool_error, sizeof w->st.spool_error, "%s", serr);
        else if (w->cfg.journal)
            open_journal(w);
    }
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        close_journal(w);
        spool_close(w->sp);
        writer_free(w);
        snprintf(err, errlen, "cannot create the writer thread");
        return NULL;
    }
    if (cfg->compress_after_s > 0 && strcmp(w->partition, "none") != 0) {
        compress_config_t cc = {w->conninfo, w->password, w->table, cfg->compress_after_s,
                                cfg->compress_every_ms};
        char cerr[128];
        w->comp = compressor_start(&cc, log, log_ctx, cerr, sizeof cerr);
        if (!w->comp)
            snprintf(w->st.compress_error, sizeof w->st.compress_error, "%s", cerr);
    }
    return w;
}

/* the compressor's status in the writer's */
static void compress_into(writer_status_t *st, const compress_status_t *cs)
{
    st->partitions_compressed = cs->compressed;
    st->compress_failures = cs->failures;
    st->compress_refused = cs->refused;
    snprintf(st->compress_error, sizeof st->compress_error, "%s", cs->error);
}

void writer_stop(writer_t *w, int timeout_ms, writer_status_t *final)
{
    struct timespec dl;

    deadline_after(&dl, timeout_ms);
    pthread_mutex_lock(&w->smu);
    w->stop = 1;
    w->stop_deadline = dl;
    pthread_mutex_unlock(&w->smu);
    pthread_cond_broadcast(&w->scv);
    queue_request_stop(w->q);
    if (w->comp) {
        compress_status_t cs;
        compressor_stop(w->comp, &cs);
        w->comp = NULL;
        pthread_mutex_lock(&w->smu);
        compress_into(&w->st, &cs);
        pthread_mutex_unlock(&w->smu);
    }
    pthread_join(w->thread, NULL);
    /* the queue stays usable: a later writer_start picks up from here */
    pthread_mutex_lock(&w->q->mu);
    w->q->stop = 0;
    pthread_mutex_unlock(&w->q->mu);
    writer_get_status(w, final);
    writer_free(w);
}

void writer_get_status(writer_t *w, writer_status_t *st)
{
    pthread_mutex_lock(&w->smu);
    *st = w->st;
    if (w->comp) {
        compress_status_t cs;
        compressor_get_status(w->comp, &cs);
        compress_into(st, &cs);
    }
    if (w->j) {
        journal_stats_t js;
        journal_get_stats(w->j, &js);
        st->journal_bytes = js.disk_bytes;
        st->journal_segments = js.segments;
        st->journal_syncs = js.syncs;
        st->journal_no_room = js.no_room;
        st->journal_sync_us = js.last_sync_us;
        snprintf(st->journal_error, sizeof st->journal_error, "%s", js.error);
    }
    pthread_mutex_unlock(&w->smu);
}

void writer_tune(writer_t *w, size_t batch_size, int flush_interval_ms, size_t json_max)
{
    __atomic_store_n(&w->cfg.batch_size, batch_size, __ATOMIC_RELAXED);
    __atomic_store_n(&w->cfg.flush_interval_ms, flush_interval_ms, __ATOMIC_RELAXED);
    __atomic_store_n(&w->cfg.json_max, json_max, __ATOMIC_RELAXED);
}

void writer_status_add(writer_status_t *into, const writer_status_t *from)
{
    int i;

    into->written += from->written;
    into->batches += from->batches;
    into->prefetched += from->prefetched;
    into->dead_lettered += from->dead_lettered;
    into->dead_lost += from->dead_lost;
    into->spooled += from->spooled;
    into->spool_dropped += from->spool_dropped;
    into->spooled_at_stop += from->spooled_at_stop;
    into->journal_left += from->journal_left;
    into->partitions_created += from->partitions_created;
    into->partitions_dropped += from->partitions_dropped;
    into->partitions_compressed += from->partitions_compressed;
    into->compress_failures += from->compress_failures;
    into->spool_corrupt += from->spool_corrupt;
    into->reconnects += from->reconnects;
    into->discarded_at_stop += from->discarded_at_stop;
    into->write_errors += from->write_errors;
    for (i = 0; i < HOOK_COUNT; i++) {
        into->written_hook[i] += from->written_hook[i];
        into->dead_hook[i] += from->dead_hook[i];
        into->dropped_hook[i] += from->dropped_hook[i];
        into->spooled_hook[i] += from->spooled_hook[i];
    }
}
