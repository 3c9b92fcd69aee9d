/* pg_baseline.c - the two baselines `make bench` compares the plugin with,
 * on the same PostgreSQL and the same table (priv/schema.sql):
 *
 *   insert: one INSERT per event in autocommit - what a webhook receiver
 *           that inserts every POST does;
 *   copy:   the raw limit - rows built and COPY BINARY-encoded before the
 *           clock starts (with the plugin's own encoder), then sent in
 *           batches: no VM, no queue, no normalization.
 *
 *   pg_baseline DSN TABLE insert|copy ROWS PAYLOAD_BYTES [BATCH]
 * prints one line: "<mode> <rows> <seconds> <rows_per_second>".
 * BENCH_CLIENTS=N in the environment (copy): the rows' client ids cycle
 * over N clients (bench-client-0 ..), as a Citus table spreads them. */
#define _GNU_SOURCE
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "copy.h"
#include "event.h"
#include "hooks.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(PGconn *c, const char *what)
{
    fprintf(stderr, "pg_baseline: %s: %s\n", what, c ? PQerrorMessage(c) : "");
    exit(1);
}

static long clients = 1;

static event_t *make_event(uint64_t seq, const char *payload, size_t n)
{
    event_in_t in;
    struct timespec ts;
    event_t *ev;
    char cid[32];
    int cn = snprintf(cid, sizeof cid, "bench-client-%ld", clients > 1 ? (long)(seq % (uint64_t)clients) : 1L);

    clock_gettime(CLOCK_REALTIME, &ts);
    event_in_init(&in, HOOK_ON_PUBLISH, (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
    in.qos = 1;
    in.retain = 0;
    in.has_conn = 1;
    in.conn_id = 1;
    in.f[F_MOUNTPOINT] = (span_t){"", 0, 1};
    in.f[F_CLIENT_ID] = (span_t){cid, (size_t)cn, 1};
    in.f[F_USERNAME] = (span_t){"bench", 5, 1};
    in.f[F_TOPIC] = (span_t){"bench/topic/1", 13, 1};
    in.f[F_PAYLOAD] = (span_t){payload, n, 1};
    in.payload_size = n;
    ev = event_build(&in);
    if (!ev)
        die(NULL, "out of memory");
    ev->seq = seq;
    return ev;
}

static void run_insert(PGconn *c, const char *table, long rows, const char *payload, size_t n)
{
    char *ident = PQescapeIdentifier(c, table, strlen(table)), sql[512];
    char seq[24], inc[24], plen[16];
    const char *vals[7];
    int lens[7] = {0}, fmts[7] = {0};
    PGresult *r;
    double t0, t1;
    long i;

    snprintf(sql, sizeof sql,
             "INSERT INTO %s (node, incarnation, seq, ts, hook, client_id, username, topic, "
             "qos, retain, payload, payload_size) VALUES ($1, $2, $3, now(), 'on_publish', "
             "'bench-client-1', 'bench', 'bench/topic/1', 1, false, $4, $5)", ident);
    PQfreemem(ident);
    r = PQprepare(c, "ins", sql, 0, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die(c, "prepare");
    PQclear(r);
    snprintf(inc, sizeof inc, "%ld", (long)time(NULL));
    snprintf(plen, sizeof plen, "%zu", n);
    vals[0] = "bench@baseline";
    vals[1] = inc;
    vals[2] = seq;
    vals[3] = payload;
    lens[3] = (int)n;
    fmts[3] = 1;
    vals[4] = plen;
    t0 = now_s();
    for (i = 1; i <= rows; i++) {
        snprintf(seq, sizeof seq, "%ld", i);
        r = PQexecPrepared(c, "ins", 5, vals, lens, fmts, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            die(c, "insert");
        PQclear(r);
    }
    t1 = now_s();
    printf("insert %ld %.3f %.0f\n", rows, t1 - t0, (double)rows / (t1 - t0));
}

static void run_copy(PGconn *c, const char *table, long rows, const char *payload, size_t n, long batch)
{
    char *ident = PQescapeIdentifier(c, table, strlen(table)), sql[1024];
    long nb = (rows + batch - 1) / batch, b, i, seq = 0;
    copy_ctx_t ctx = {"bench@baseline", 14, (int64_t)time(NULL), 65536, 0};
    buf_t *bufs = calloc((size_t)nb, sizeof *bufs);
    PGresult *r;
    double t0, t1;

    snprintf(sql, sizeof sql, "COPY %s (%s) FROM STDIN (FORMAT binary)", ident, copy_columns);
    PQfreemem(ident);
    for (b = 0; b < nb; b++) {           /* pre-built: not timed */
        buf_init(&bufs[b], NULL, 0);
        copy_header(&bufs[b]);
        for (i = 0; i < batch && seq < rows; i++) {
            event_t *ev = make_event((uint64_t)++seq, payload, n);
            copy_row(&bufs[b], &ctx, ev);
            event_free(ev);
        }
        copy_trailer(&bufs[b]);
        if (bufs[b].failed)
            die(NULL, "out of memory");
    }
    t0 = now_s();
    for (b = 0; b < nb; b++) {
        r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_COPY_IN)
            die(c, "copy");
        PQclear(r);
        if (PQputCopyData(c, bufs[b].p, (int)bufs[b].len) != 1 || PQputCopyEnd(c, NULL) != 1)
            die(c, "copy data");
        r = PQgetResult(c);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            die(c, "copy end");
        PQclear(r);
        while ((r = PQgetResult(c)) != NULL)
            PQclear(r);
    }
    t1 = now_s();
    printf("copy %ld %.3f %.0f\n", rows, t1 - t0, (double)rows / (t1 - t0));
    for (b = 0; b < nb; b++)
        buf_free(&bufs[b]);
    free(bufs);
}

int main(int argc, char **argv)
{
    PGconn *c;
    long rows;
    size_t n;
    char *payload;

    if (argc < 6) {
        fprintf(stderr, "usage: pg_baseline DSN TABLE insert|copy ROWS PAYLOAD_BYTES [BATCH]\n");
        return 2;
    }
    rows = atol(argv[4]);
    if (getenv("BENCH_CLIENTS") && atol(getenv("BENCH_CLIENTS")) > 1)
        clients = atol(getenv("BENCH_CLIENTS"));
    n = (size_t)atol(argv[5]);
    payload = malloc(n + 1);
    memset(payload, 'x', n);
    c = PQconnectdb(argv[1]);
    if (PQstatus(c) != CONNECTION_OK)
        die(c, "connect");
    if (strcmp(argv[3], "insert") == 0)
        run_insert(c, argv[2], rows, payload, n);
    else
        run_copy(c, argv[2], rows, payload, n, argc > 6 ? atol(argv[6]) : 10000);
    PQfinish(c);
    free(payload);
    return 0;
}
