/* session.c - the writer's PostgreSQL session (see writer_int.h): the
 * connection (libpq, non-blocking through pgio), the schema applied at
 * connect, partition upkeep, the resume point after a failed write, and
 * what an outage looks like to the operator: logged once when it starts
 * and once when it ends, retried with capped exponential backoff and
 * jitter. The connection string's secrets (password, sslpassword) never
 * leave this file but masked. */
#define _GNU_SOURCE
#include "writer_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadline.h"

#define UPKEEP_EVERY_MS 60000

/* libpq's message without trailing newline and never with a secret */
void w_clean_error(const writer_t *w, const char *in, char *out, size_t n)
{
    pgio_clean_error(in, w->secrets, out, n);
}

static void set_error(writer_t *w, const char *msg)
{
    pthread_mutex_lock(&w->smu);
    w_clean_error(w, msg, w->st.last_error, sizeof w->st.last_error);
    w->st.write_errors++;
    pthread_mutex_unlock(&w->smu);
}

void w_set_state(writer_t *w, int state)
{
    pthread_mutex_lock(&w->smu);
    w->st.state = state;
    pthread_mutex_unlock(&w->smu);
}

int w_stop_requested(writer_t *w, int *past_deadline)
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
    int64_t end = mono_ms() + ms;

    /* in steps of at most 20 ms: the plugin's rows are queued when due
     * (the io tick) */
    for (;;) {
        struct timespec until;
        int64_t left = end - mono_ms(), stop;
        if (w->io.tick)
            (void)w->io.tick(w->io.ctx);
        if (left <= 0)
            return;
        deadline_after(&until, left < 20 ? (int)left : 20);
        pthread_mutex_lock(&w->smu);
        while (!w->stop && pthread_cond_timedwait(&w->scv, &w->smu, &until) != ETIMEDOUT)
            ;
        stop = w->stop;
        pthread_mutex_unlock(&w->smu);
        if (stop)
            return;
    }
}

/* the next wait of the capped exponential backoff, with jitter (between
 * half and all of it); doubles the one after */
int w_next_backoff_ms(writer_t *w)
{
    int ms = w->backoff_ms;

    w->backoff_ms = ms * 2 > w->cfg.backoff_max_ms ? w->cfg.backoff_max_ms : ms * 2;
    return ms / 2 + (ms > 1 ? (int)(random() % (ms / 2 + 1)) : 0);
}

void w_backoff(writer_t *w)
{
    if (w_stop_requested(w, NULL)) {
        /* still trying until the stop deadline, without spinning */
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
        return;
    }
    pause_ms(w, w_next_backoff_ms(w));
}

void w_note_down(writer_t *w, const char *what, const char *err)
{
    char clean[256];

    w_clean_error(w, err, clean, sizeof clean);
    set_error(w, clean);
    w->down_attempts++;
    if (!w->down_logged) {
        w->down_logged = 1;
        w->down_since_us = wall_us();
        w_log(w, WLOG_WARNING, "postgresql unavailable (%s: %s); events stay queued, retrying",
             what, clean);
    }
}

void w_note_up(writer_t *w)
{
    if (w->down_logged) {
        queue_stats_t qs;
        queue_get_stats(w->q, &qs);
        w_log(w, WLOG_INFO,
             "postgresql available again after %.1f s and %llu failed attempts; %zu events queued",
             (double)(wall_us() - w->down_since_us) / 1e6,
             (unsigned long long)w->down_attempts, qs.count);
        w->down_logged = 0;
        w->down_attempts = 0;
    }
    w->backoff_ms = w->cfg.backoff_min_ms;
}

void w_disconnect(writer_t *w)
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
    free(w->upkeep_sql);
    w->upkeep_sql = NULL;
    w->access_checked = 0;
    w->granted = 0;
    w->schema_done = 0;
    w->dist_checked = 0;
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

/* why a pgio call gave no (good) result: the timeout, an answer of
 * another shape than asked for, or libpq's word */
const char *w_io_error(writer_t *w, const PGresult *r)
{
    static __thread char msg[96];

    if (w->io.timed_out) {
        snprintf(msg, sizeof msg, "no answer from the server within %d ms", w->io.timeout_ms);
        return msg;
    }
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK) {
        snprintf(msg, sizeof msg, "an answer of an unexpected shape (%d rows of %d columns)",
                 PQntuples(r), PQnfields(r));
        return msg;
    }
    return r ? PQresultErrorMessage(r) : PQerrorMessage(w->conn);
}

static int apply_schema(writer_t *w)
{
    const char *params[3] = {w->table, w->partition, w->distribute};
    PGresult *r;
    int ok;

    r = pgio_exec(&w->io,
                  "SELECT set_config('vmq_pgevents.table', $1, false), "
                  "set_config('vmq_pgevents.partition', $2, false), "
                  "set_config('vmq_pgevents.distribute', $3, false)", 3, params);
    ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        w_note_down(w, "setting the table name", w_io_error(w, r));
    PQclear(r);
    if (!ok)
        return -1;
    r = pgio_exec(&w->io, w->schema_sql, 0, NULL);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        w_note_down(w, "applying schema.sql", w_io_error(w, r));
    PQclear(r);
    return ok ? 0 : -1;
}

/* Whether the table is a Citus distributed table, whose rows must have a
 * client_id (the distribution column): on_auth_m5 before the client id
 * is known gets '' there. Asked of the catalogs, so it works with
 * auto_create off and without Citus. -1: the server did not answer. */
int w_check_distributed(writer_t *w)
{
    const char *params[1] = {w->table};
    char why[256] = "";
    PGresult *r;
    int ok, citus;

    r = pgio_exec(&w->io, "SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL", 0, NULL);
    ok = pgio_shape(r, 1, 1);
    citus = ok && PQgetvalue(r, 0, 0)[0] == 't';
    if (!ok)
        w_clean_error(w, w_io_error(w, r), why, sizeof why);
    PQclear(r);
    if (ok && citus) {
        r = pgio_exec(&w->io,
                      "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition "
                      "WHERE logicalrelid = to_regclass(quote_ident($1)) AND partmethod = 'h')",
                      1, params);
        ok = pgio_shape(r, 1, 1);
        citus = ok && PQgetvalue(r, 0, 0)[0] == 't';
        if (!ok)
            w_clean_error(w, w_io_error(w, r), why, sizeof why);
        PQclear(r);
    }
    if (ok && citus) {
        /* Each batch's COPY goes to every worker, over up to
         * max_adaptive_executor_pool_size connections per worker (16),
         * of which Citus keeps max_cached_conns_per_worker (1) open after
         * the transaction: the others were opened again for every batch.
         * Measured here (a raw COPY through the coordinator,
         * bench/pg_baseline, batches of 10,000 rows): 36,000 rows/s with
         * the defaults, 125,000-128,000 with 1, 2 or 4 connections per
         * worker, all kept (docs/scale-out.md) */
        r = pgio_exec(&w->io, "SET citus.max_adaptive_executor_pool_size = 4; "
                              "SET citus.max_cached_conns_per_worker = 4", 0, NULL);
        ok = !w->io.timed_out && PQstatus(w->conn) == CONNECTION_OK;   /* refused: the defaults stay */
        if (!ok)
            w_clean_error(w, w_io_error(w, NULL), why, sizeof why);
        PQclear(r);
    }
    if (!ok) {
        w_note_down(w, "asking whether the table is distributed", why);
        return -1;
    }
    w->copy.client_id_required = citus;
    w->dist_checked = 1;
    return 0;
}

/* the call of a function of the table's writer role, named by libpq */
static char *granted_sql(writer_t *w, const char *fmt, const char *suffix)
{
    char name[80], *ident, *sql = NULL;
    size_t n;

    snprintf(name, sizeof name, "%s%s", w->table, suffix);
    ident = PQescapeIdentifier(w->conn, name, strlen(name));
    if (!ident)
        return NULL;
    n = strlen(fmt) + strlen(ident) + 1;
    sql = malloc(n);
    if (sql)
        snprintf(sql, n, fmt, ident);
    PQfreemem(ident);
    return sql;
}

/* A writer role made by vmq_pgevents_grant reads its resume point and
 * keeps the partitions through the table owner's functions <table>_resume
 * and <table>_upkeep (it may not read the table); any other role reads the
 * table itself, and keeps the partitions only when it applies schema.sql
 * (auto_create on). -1: the server did not answer. */
int w_check_access(writer_t *w)
{
    char err[256];
    int may = pgio_may_call(&w->io, w->table, "_resume", "(text,bigint,double precision,double precision)",
                            err, sizeof err);

    if (may < 0) {
        w_note_down(w, "asking for the writer role's functions", err);
        return -1;
    }
    if (may) {
        char *resume = granted_sql(w, "SELECT %s($1, $2::bigint, $3::float8, $4::float8)", "_resume");
        char *upkeep = granted_sql(w, "SELECT created, coalesce(array_to_string(dropped, ', '), ''), "
                                      "coalesce(array_length(dropped, 1), 0), erased, pending "
                                      "FROM %s($1, 2, $2::bigint, to_timestamp($3::float8), "
                                      "to_timestamp($4::float8))", "_upkeep");
        if (!resume || !upkeep) {
            free(resume);
            free(upkeep);
            w_note_down(w, "connect", "out of memory");
            return -1;
        }
        free(w->resume_sql);
        w->resume_sql = resume;
        free(w->upkeep_sql);
        w->upkeep_sql = upkeep;
    }
    w->granted = may;
    w->access_checked = 1;
    return 0;
}

int w_upkeeps(const writer_t *w)
{
    return w->access_checked && (w->granted || (w->schema_sql && w->schema_done));
}

int w_partitioned(const writer_t *w)
{
    return w_upkeeps(w) && strcmp(w->partition, "none") != 0;
}

/* The upkeep (auto_create on, or a writer role of vmq_pgevents_grant):
 * with partition day or hour, makes the partitions from now through two
 * periods ahead, and those that events from lo_us to hi_us need (0: none;
 * e.g. old events from a journal), and drops the partitions past the
 * retention; removes rows of erased clients that arrived after their
 * erasure (vmq_pgevents_forget_late). -1: it failed (logged). */
int w_upkeep(writer_t *w, int64_t lo_us, int64_t hi_us)
{
    char keep[24], lo[32], hi[32];
    const char *params[5] = {w->table, w->partition, keep, lo_us ? lo : NULL, hi_us ? hi : NULL};
    PGresult *r;
    int ok;

    snprintf(keep, sizeof keep, "%lld", (long long)w->cfg.retention_s);
    snprintf(lo, sizeof lo, "%.6f", (double)lo_us / 1e6);
    snprintf(hi, sizeof hi, "%.6f", (double)hi_us / 1e6);
    if (w->upkeep_sql)   /* the table is the function's own */
        r = pgio_exec(&w->io, w->upkeep_sql, 4, params + 1);
    else
        r = pgio_exec(&w->io,
                      "SELECT created, coalesce(array_to_string(dropped, ', '), ''), "
                      "coalesce(array_length(dropped, 1), 0), erased, pending "
                      "FROM vmq_pgevents_upkeep($1, $2, 2, $3::bigint, now(), "
                      "to_timestamp($4::float8), to_timestamp($5::float8))", 5, params);
    ok = pgio_shape(r, 1, 5);
    w->upkeep_at_ms = mono_ms() + UPKEEP_EVERY_MS;
    if (ok) {
        long created = strtol(PQgetvalue(r, 0, 0), NULL, 10);
        const char *dropped = PQgetvalue(r, 0, 1);
        uint64_t ndropped = strtoull(PQgetvalue(r, 0, 2), NULL, 10);
        unsigned long long erased = strtoull(PQgetvalue(r, 0, 3), NULL, 10);
        long long pending = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
        if (erased)
            w_log(w, WLOG_INFO, "removed %llu row(s) of erased clients (vmq_pgevents_forget) that arrived "
                  "after their erasure", erased);
        if (pending > 0)
            w_log(w, WLOG_WARNING, "%lld row(s) of erased clients arrived after their erasure into compressed "
                  "partitions of %s: the table's owner runs SELECT vmq_pgevents_forget_late('%s');",
                  pending, w->table, w->table);
        else if (pending < 0)
            w_log(w, WLOG_WARNING, "the late rows of erased clients of %s could not be looked for "
                  "(PostgreSQL's log says why); tried again at the next upkeep", w->table);
        pthread_mutex_lock(&w->smu);
        w->st.partitions_created += (uint64_t)(created > 0 ? created : 0);
        w->st.partitions_dropped += ndropped;
        w->st.partitions_checked_us = wall_us();
        pthread_mutex_unlock(&w->smu);
        if (created > 0)
            w_log(w, WLOG_INFO, "made %ld partition(s) of %s ahead of time", created, w->table);
        if (ndropped)
            w_log(w, WLOG_INFO, "retention: dropped partition(s) %s (older than %lld s)", dropped,
                 (long long)w->cfg.retention_s);
    } else {
        char err[256];
        w_result_error(w, r, err, sizeof err);
        w_log(w, WLOG_ERROR, "upkeep of %s (partitions, erased clients) failed: %s", w->table, err);
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

int w_ensure_connected(writer_t *w)
{
    /* the rows are sent as UTF-8, whatever the DSN or the environment
     * (PGCLIENTENCODING) say: the server converts them to its encoding */
    const char *keys[] = {"fallback_application_name", "dbname", "client_encoding", NULL};
    const char *vals[] = {"vmq_pgevents", w->conninfo, "UTF8", NULL};
    char err[256];

    /* a statement that timed out (pgio) is still in progress on the
     * connection, which takes no other until its end: a new connection */
    if (w->conn && PQstatus(w->conn) == CONNECTION_OK && PQtransactionStatus(w->conn) != PQTRANS_ACTIVE)
        goto connected;
    w_disconnect(w);
    w_set_state(w, WS_DISCONNECTED);
    w->conn = pgio_connect(&w->io, keys, vals, err, sizeof err);
    if (!w->conn) {
        w_note_down(w, "connect", err);
        return -1;
    }
    w->io.conn = w->conn;
    PQsetNoticeProcessor(w->conn, ignore_notice, NULL);
    if (prepare_sql(w) < 0) {
        w_note_down(w, "connect", "out of memory");
        w_disconnect(w);
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
    }
    if (!w->dist_checked && w_check_distributed(w) < 0)
        return -1;
    if (!w->access_checked) {
        if (w_check_access(w) < 0)
            return -1;
        if (w_upkeeps(w))
            (void)w_upkeep(w, 0, 0);
    }
    w->connected_once = 1;
    w_set_state(w, WS_CONNECTED);
    return 0;
}

/* the earliest and latest ts of the first n events of a list (SIZE_MAX: all) */
void w_ts_range(const event_t *ev, size_t n, int64_t *lo, int64_t *hi)
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
int w_resume_point(writer_t *w, int64_t incarnation, const event_t *batch, uint64_t *max_seq)
{
    char inc[24], lo[32], hi[32];
    const char *params[4] = {w->node, inc, lo, hi};
    int64_t lo_us, hi_us;
    PGresult *r;
    int ok;

    w_ts_range(batch, SIZE_MAX, &lo_us, &hi_us);
    snprintf(inc, sizeof inc, "%lld", (long long)incarnation);
    snprintf(lo, sizeof lo, "%.6f", (double)(lo_us - 1000000) / 1e6);
    snprintf(hi, sizeof hi, "%.6f", (double)(hi_us + 1000000) / 1e6);
    r = pgio_exec(&w->io, w->resume_sql, 4, params);
    ok = pgio_shape(r, 1, 1);
    if (ok)
        *max_seq = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    else
        w_note_down(w, "reading the resume point", w_io_error(w, r));
    PQclear(r);
    return ok ? 0 : -1;
}

/* A result's error as "primary message (SQLSTATE xxxxx)": never the DETAIL
 * or CONTEXT lines, which can quote the refused row's values. */
void w_result_error(writer_t *w, PGresult *r, char *err, size_t errlen)
{
    const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = pgio_sqlstate(r);
    size_t k;

    snprintf(w->last_sqlstate, sizeof w->last_sqlstate, "%s", state ? state : "");
    if (!primary) {
        w_clean_error(w, w_io_error(w, NULL), err, errlen);
        return;
    }
    /* masked whole, then cut: a secret across the cut leaves nothing */
    if (errlen == 0)
        return;
    w_clean_error(w, primary, err, errlen > 24 ? errlen - 24 : errlen);
    k = strlen(err);
    snprintf(err + k, errlen - k, " (SQLSTATE %.5s)", state ? state : "?");
}

/* The server's state, whatever the rows: its connection (08), its
 * resources (53: disk full, out of memory, too many connections), an
 * operator's shutdown (57P), a system error (58), a read-only server
 * (25006), a conflict worth retrying (40001 serialization, 40P01
 * deadlock, 55P03 a lock not had), the database or the login (3D000, 28)
 * or the table gone (42P01). */
static int server_state(const char *s)
{
    static const char *const prefix[] = {"08", "53", "57P", "58", "25006", "40001", "40P01",
                                         "55P03", "3D000", "28", "42P01"};
    size_t i;

    for (i = 0; i < sizeof prefix / sizeof prefix[0]; i++)
        if (strncmp(s, prefix[i], strlen(prefix[i])) == 0)
            return 1;
    return 0;
}

/* W_DOWN: no answer, or the server's state (above). W_DATA: something in
 * a row (22 data exception, 23 integrity constraint, 54 program limit).
 * W_UNSURE: any other error (a trigger's RAISE P0001, a statement_timeout
 * 57014, no privilege 42501, an internal error XX000, ...), which may be
 * one row's or every row's: the batch is split, and a row that fails
 * alone, twice, is dead-lettered only when other rows are taken
 * (w_write_batch). */
int w_classify(writer_t *w, PGresult *r)
{
    const char *state = pgio_sqlstate(r);

    if (w->io.timed_out || PQstatus(w->conn) != CONNECTION_OK || !state)
        return W_DOWN;
    if (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0 ||
        strncmp(state, "54", 2) == 0)
        return W_DATA;
    if (server_state(state))
        return W_DOWN;
    return W_UNSURE;
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
        if (pgio_is_secret(o)) {
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

