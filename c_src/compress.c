/* compress.c - the compressor thread (see compress.h). */
#define _GNU_SOURCE
#include "compress.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "deadline.h"
#include "pgio.h"

#define CONNECT_TIMEOUT_MS 10000
/* one partition's rewrite: a day of a busy broker takes minutes */
#define CALL_TIMEOUT_MS (3600 * 1000)

struct compressor {
    compress_config_t cfg;
    char *conninfo, *secrets, *table;
    writer_log_fn log;
    void *log_ctx;
    pthread_t thread;
    pthread_mutex_t mu;       /* st, stop */
    pthread_cond_t cv;
    int stop;
    compress_status_t st;
    char last_logged[256];    /* a failure is logged when it changes */
    pgio_t io;
    PGconn *conn;
    char *granted_sql;        /* <table>_compress's call (a writer role); NULL: vmq_pgevents_compress */
    char why[256];            /* why the question of it had no answer */
    int looked;
};

#define comp_log(c, level, ...) writer_logf((c)->log, (c)->log_ctx, (level), __VA_ARGS__)

static int stopping(void *ctx)
{
    compressor_t *c = ctx;
    int s;

    pthread_mutex_lock(&c->mu);
    s = c->stop;
    pthread_mutex_unlock(&c->mu);
    return s;
}

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static void disconnect(compressor_t *c)
{
    if (c->conn)
        PQfinish(c->conn);
    c->conn = NULL;
    c->io.conn = NULL;
    free(c->granted_sql);
    c->granted_sql = NULL;
}

/* A writer role made by vmq_pgevents_grant compresses through the table
 * owner's function <table>_compress: its call, named by libpq */
static int check_granted(compressor_t *c)
{
    static const char fmt[] = "SELECT partition, rows, heap_bytes, columnar_bytes "
                              "FROM %s(make_interval(secs => $1::bigint), 1)";
    char name[80], *ident;
    size_t n;
    int may = pgio_may_call(&c->io, c->table, "_compress", "(interval,integer)", c->why, sizeof c->why);

    if (may <= 0)
        return may;
    snprintf(name, sizeof name, "%s_compress", c->table);
    ident = PQescapeIdentifier(c->conn, name, strlen(name));
    if (!ident)
        return -1;
    n = sizeof fmt + strlen(ident);
    c->granted_sql = malloc(n);
    if (c->granted_sql)
        snprintf(c->granted_sql, n, fmt, ident);
    PQfreemem(ident);
    return c->granted_sql ? 1 : -1;
}

/* a failed look: kept in status, logged when it is not the one before */
static void failed(compressor_t *c, const char *what, const char *why)
{
    char clean[200];

    pgio_clean_error(why, c->secrets, clean, sizeof clean);
    pthread_mutex_lock(&c->mu);
    c->st.failures++;
    snprintf(c->st.error, sizeof c->st.error, "%s: %s", what, clean);
    pthread_mutex_unlock(&c->mu);
    if (strcmp(clean, c->last_logged) != 0) {
        snprintf(c->last_logged, sizeof c->last_logged, "%s", clean);
        comp_log(c, WLOG_ERROR, "compress_after: %s of %s failed: %s; tried again every %d s",
             what, c->table, clean, c->cfg.every_ms / 1000);
    }
}

static int ensure_connected(compressor_t *c)
{
    const char *keys[] = {"fallback_application_name", "dbname", "client_encoding", NULL};
    const char *vals[] = {"vmq_pgevents compress", c->conninfo, "UTF8", NULL};
    char err[256];

    if (c->conn && PQstatus(c->conn) == CONNECTION_OK)
        return 0;
    disconnect(c);
    c->io.timeout_ms = CONNECT_TIMEOUT_MS;
    c->conn = pgio_connect(&c->io, keys, vals, err, sizeof err);
    if (!c->conn) {
        failed(c, "connecting", err);
        return -1;
    }
    c->io.conn = c->conn;
    PQsetNoticeProcessor(c->conn, ignore_notice, NULL);
    /* a call given up at stop: the server sees the connection gone within
     * a second and rolls the rewrite back, rather than finish it unseen */
    PQclear(pgio_exec(&c->io, "SET client_connection_check_interval = 1000", 0, NULL));
    c->why[0] = '\0';
    if (check_granted(c) < 0) {
        failed(c, "asking for the writer role's function", c->why[0] ? c->why : "out of memory");
        disconnect(c);
        return -1;
    }
    return 0;
}

/* The call went wrong: why, as "primary message (SQLSTATE x)". 1 when the
 * server cannot compress at all (no columnar storage, not allowed). */
static int call_failed(compressor_t *c, PGresult *r)
{
    const char *state = pgio_sqlstate(r);
    const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char why[320];

    if (c->io.timed_out) {
        snprintf(why, sizeof why, "no answer from the server within %d s", CALL_TIMEOUT_MS / 1000);
        disconnect(c);
    } else if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        snprintf(why, sizeof why, "an answer of an unexpected shape (%d rows of %d columns)",
                 PQntuples(r), PQnfields(r));
    } else if (primary) {   /* masked whole before any cut */
        size_t k;
        pgio_clean_error(primary, c->secrets, why, sizeof why - 24);
        k = strlen(why);
        snprintf(why + k, sizeof why - k, " (SQLSTATE %.5s)", state ? state : "?");
    } else {
        pgio_clean_error(c->conn ? PQerrorMessage(c->conn) : "no connection", c->secrets, why, sizeof why);
        disconnect(c);
    }
    if (state && (strcmp(state, "0A000") == 0 || strcmp(state, "42501") == 0)) {
        char clean[256];
        pgio_clean_error(why, c->secrets, clean, sizeof clean);
        pthread_mutex_lock(&c->mu);
        c->st.refused = 1;
        snprintf(c->st.error, sizeof c->st.error, "%s", clean);
        pthread_mutex_unlock(&c->mu);
        comp_log(c, WLOG_ERROR, "compress_after = %lld s is refused: %s. Nothing is compressed; "
             "everything else works as without it", (long long)c->cfg.after_s, clean);
        return 1;
    }
    failed(c, "compressing", why);
    return 0;
}

/* One look: every partition due, one call (one transaction) each, until
 * none is left. 1 when the server cannot compress (refused). */
static int look(compressor_t *c)
{
    char after[24];
    const char *params[2] = {c->table, after};

    snprintf(after, sizeof after, "%lld", (long long)c->cfg.after_s);
    while (!stopping(c)) {
        PGresult *r;
        int64_t t0 = wall_us();

        if (ensure_connected(c) < 0)
            return 0;
        c->io.timeout_ms = CALL_TIMEOUT_MS;
        r = pgio_exec(&c->io,
                      c->granted_sql ? c->granted_sql
                                     : "SELECT partition, rows, heap_bytes, columnar_bytes "
                                       "FROM vmq_pgevents_compress($1, make_interval(secs => $2::bigint), now(), 1)",
                      c->granted_sql ? 1 : 2, c->granted_sql ? params + 1 : params);   /* the table is its own */
        if (!pgio_shape(r, -1, 4)) {
            int refused = stopping(c) ? 0 : call_failed(c, r);
            PQclear(r);
            return refused;
        }
        pthread_mutex_lock(&c->mu);
        c->st.checked_us = wall_us();
        c->st.error[0] = '\0';
        c->st.compressed += (uint64_t)PQntuples(r);
        pthread_mutex_unlock(&c->mu);
        c->last_logged[0] = '\0';
        if (PQntuples(r) == 0) {
            PQclear(r);
            return 0;
        }
        comp_log(c, WLOG_INFO, "compressed partition %s: %s rows, %s bytes on the heap, %s compressed, in %.1f s",
             PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3),
             (double)(wall_us() - t0) / 1e6);
        PQclear(r);
    }
    return 0;
}

static void *run(void *arg)
{
    compressor_t *c = arg;

#ifdef __linux__
    pthread_setname_np(pthread_self(), "vmq_pgev_comp");
#endif
    for (;;) {
        struct timespec until;
        /* the first look one interval after the start: the writer has
         * applied schema.sql (the function) by then */
        int refused = c->looked++ ? look(c) : 0;

        pthread_mutex_lock(&c->mu);
        deadline_after(&until, c->cfg.every_ms);
        if (refused)   /* asked again after the next start only */
            while (!c->stop)
                pthread_cond_wait(&c->cv, &c->mu);
        while (!c->stop && pthread_cond_timedwait(&c->cv, &c->mu, &until) != ETIMEDOUT)
            ;
        if (c->stop) {
            pthread_mutex_unlock(&c->mu);
            break;
        }
        pthread_mutex_unlock(&c->mu);
    }
    disconnect(c);
    return NULL;
}

static void free_compressor(compressor_t *c)
{
    pgio_secrets_free(c->secrets);
    free(c->conninfo);
    free(c->table);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

compressor_t *compressor_start(const compress_config_t *cfg, writer_log_fn log, void *log_ctx,
                               char *err, size_t errlen)
{
    compressor_t *c = calloc(1, sizeof *c);
    pthread_condattr_t ca;

    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);   /* deadline_after's clock */
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    c->cfg = *cfg;
    if (c->cfg.every_ms <= 0)
        c->cfg.every_ms = 60000;
    c->conninfo = strdup(cfg->conninfo ? cfg->conninfo : "");
    c->table = strdup(cfg->table ? cfg->table : "");
    c->secrets = pgio_secrets_dup(cfg->secrets);
    c->log = log;
    c->log_ctx = log_ctx;
    c->io.tick = stopping;
    c->io.secrets = c->secrets;
    c->io.ctx = c;
    if (!c->conninfo || !c->table || (cfg->secrets && !c->secrets)) {
        snprintf(err, errlen, "out of memory");
        free_compressor(c);
        return NULL;
    }
    c->cfg.conninfo = c->conninfo;
    c->cfg.table = c->table;
    c->cfg.secrets = c->secrets;
    if (pthread_create(&c->thread, NULL, run, c) != 0) {
        snprintf(err, errlen, "cannot start the compressor thread");
        free_compressor(c);
        return NULL;
    }
    return c;
}

void compressor_stop(compressor_t *c, compress_status_t *final)
{
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    if (final)
        *final = c->st;
    free_compressor(c);
}

void compressor_get_status(compressor_t *c, compress_status_t *st)
{
    pthread_mutex_lock(&c->mu);
    *st = c->st;
    pthread_mutex_unlock(&c->mu);
}
