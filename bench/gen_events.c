/* gen_events.c - fills an events table with realistic rows, fast, for the
 * query benchmark (bench/run_bench_query.sh): what one broker node records
 * from DEVICES devices and 4 backend subscribers over DAYS days ending now.
 * Rows go through the plugin's own encoder (copy.c) and COPY BINARY, one
 * COPY per million rows.
 *
 *   gen_events DSN TABLE ROWS DAYS DEVICES
 *
 * A device, picked at random for each step, either
 *   - logs in (auth_on_register, on_client_wakeup, on_register,
 *     auth_on_subscribe, on_subscribe to devices/<n>/cmd), 1 in 20 with a
 *     wrong password (auth_on_register alone: a failed login),
 *   - publishes telemetry to devices/<n>/telemetry, 64 bytes, QoS 1
 *     (auth_on_publish, on_publish, and on_deliver to one of the backends,
 *     which share a subscription to devices/+/telemetry),
 *   - gets a command from a backend (on_publish by it, on_deliver to the
 *     device on its own connection), or
 *   - leaves (on_client_gone or on_client_offline).
 * GEN_PAYLOAD picks the payloads: json (the default) a device's telemetry
 * as JSON, ~60 bytes with values that drift (e.g.
 * {"t":21.53,"h":40.2,"bat":87,"seq":123456}); random: 64 random bytes
 * (encrypted payloads, the worst case for compression); fill: 8 bytes of a
 * counter and 56 copies of one byte (what earlier versions made). Prints one line:
 * "rows <n> seconds <s> node <node> incarnation <i>". */
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

#define NODE "VerneMQ@10.0.0.1"
#define BACKENDS 4
#define ROWS_PER_COPY 1000000L

typedef struct device {
    int64_t conn_id;   /* 0: not connected */
    double temp, hum;  /* its telemetry, drifting */
    int bat;
} device_t;

static PGconn *conn;
static buf_t out;
static copy_ctx_t ctx = {NODE, sizeof NODE - 1, 0, 65536, 0};
static uint64_t seq, rng = 0x9E3779B97F4A7C15ULL;
static int64_t next_conn = 1, start_us, span_us;
static long rows;
static int auth_payload_none;
enum { PAY_JSON, PAY_RANDOM, PAY_FILL };
static int payload_kind;
static long rows_in_copy;
static char copy_sql[1024];

static void die(const char *what)
{
    fprintf(stderr, "gen_events: %s: %s\n", what, conn ? PQerrorMessage(conn) : "");
    exit(1);
}

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void copy_begin(void)
{
    PGresult *r = PQexec(conn, copy_sql);
    if (PQresultStatus(r) != PGRES_COPY_IN)
        die("COPY");
    PQclear(r);
    buf_init(&out, NULL, 0);
    copy_header(&out);
}

static void flush_out(void)
{
    if (out.failed)
        die("out of memory");
    if (out.len && PQputCopyData(conn, out.p, (int)out.len) != 1)
        die("COPY data");
    out.len = 0;
}

static void copy_end(void)
{
    PGresult *r;
    copy_trailer(&out);
    flush_out();
    buf_free(&out);
    if (PQputCopyEnd(conn, NULL) != 1)
        die("COPY end");
    r = PQgetResult(conn);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die("COPY end");
    PQclear(r);
    while ((r = PQgetResult(conn)) != NULL)
        PQclear(r);
}

/* one row: hook, the client (text), its connection, and what is set in in */
static void emit(event_in_t *in)
{
    event_t *ev;

    if (seq >= (uint64_t)rows)
        return;
    /* the clock follows the rows: ROWS spread evenly over DAYS */
    in->ts_us = start_us + (int64_t)((double)span_us * (double)seq / (double)rows);
    ev = event_build(in);
    if (!ev)
        die("out of memory");
    ev->seq = ++seq;
    copy_row(&out, &ctx, ev);
    event_free(ev);
    if (out.len > (1u << 20))
        flush_out();
    if (++rows_in_copy == ROWS_PER_COPY) {
        copy_end();
        copy_begin();
        rows_in_copy = 0;
    }
}

static void base(event_in_t *in, int hook, const char *client, int64_t conn_id)
{
    event_in_init(in, hook, 0);
    in->f[F_MOUNTPOINT] = (span_t){"", 0, 1};
    in->f[F_CLIENT_ID] = (span_t){client, strlen(client), 1};
    if (conn_id) {
        in->has_conn = 1;
        in->conn_id = conn_id;
    }
}

static void user(event_in_t *in, const char *name)
{
    in->f[F_USERNAME] = (span_t){name, strlen(name), 1};
}

static void peer(event_in_t *in, long dev)
{
    in->peer_family = 4;
    in->peer_addr[0] = 10;
    in->peer_addr[1] = (uint8_t)(dev >> 16);
    in->peer_addr[2] = (uint8_t)(dev >> 8);
    in->peer_addr[3] = (uint8_t)dev;
    in->peer_port = 1024 + (int)(rnd() % 60000);
}

static void login(const char *client, long dev, int64_t cid, const char *username, int ok)
{
    event_in_t in;
    char topics[128];

    base(&in, HOOK_AUTH_ON_REGISTER_5, client, cid);
    user(&in, username);
    peer(&in, dev);
    in.clean = 1;
    emit(&in);
    if (!ok)
        return;
    base(&in, HOOK_ON_CLIENT_WAKEUP, client, cid);
    emit(&in);
    base(&in, HOOK_ON_REGISTER, client, cid);
    user(&in, username);
    peer(&in, dev);
    emit(&in);
    if (dev < 0)
        snprintf(topics, sizeof topics, "[{\"qos\": 1, \"topic\": \"$share/backend/devices/+/telemetry\"}]");
    else
        snprintf(topics, sizeof topics, "[{\"qos\": 1, \"topic\": \"devices/%ld/cmd\"}]", dev);
    base(&in, HOOK_AUTH_ON_SUBSCRIBE, client, cid);
    user(&in, username);
    in.f[F_TOPICS] = (span_t){topics, strlen(topics), 1};
    emit(&in);
    base(&in, HOOK_ON_SUBSCRIBE, client, cid);
    user(&in, username);
    in.f[F_TOPICS] = (span_t){topics, strlen(topics), 1};
    emit(&in);
}

static void message(event_in_t *in, int hook, const char *client, int64_t cid, const char *username,
                    const char *topic, const char *payload, size_t len)
{
    base(in, hook, client, cid);
    if (username)
        user(in, username);
    in->qos = 1;
    in->retain = 0;
    in->f[F_TOPIC] = (span_t){topic, strlen(topic), 1};
    /* GEN_AUTH_PAYLOAD=none: auth_on_publish as with payload_modes =
     * auth_on_publish:none (the size only) */
    in->f[F_PAYLOAD] = (span_t){payload, hook == HOOK_AUTH_ON_PUBLISH && auth_payload_none ? 0 : len, 1};
    in->payload_size = len;
    emit(in);
}

/* the payload of a device's next message into p (96 bytes), its length */
static size_t make_payload(device_t *dv, char *p)
{
    size_t i;
    switch (payload_kind) {
    case PAY_RANDOM:
        for (i = 0; i < 64; i += 8) {
            uint64_t r = rnd();
            memcpy(p + i, &r, 8);
        }
        return 64;
    case PAY_FILL:
        memcpy(p, &seq, sizeof seq);
        memset(p + sizeof seq, (int)(seq & 0x7f), 64 - sizeof seq);
        return 64;
    default:
        if (!dv->bat) {
            dv->temp = 15 + (double)(rnd() % 1000) / 100;
            dv->hum = 30 + (double)(rnd() % 400) / 10;
            dv->bat = 100;
        }
        dv->temp += ((double)(rnd() % 21) - 10) / 100;
        dv->hum += ((double)(rnd() % 11) - 5) / 10;
        if (rnd() % 50 == 0 && dv->bat > 1)
            dv->bat--;
        return (size_t)snprintf(p, 96, "{\"t\":%.2f,\"h\":%.1f,\"bat\":%d,\"seq\":%llu,\"up\":%llu}",
                                dv->temp, dv->hum, dv->bat, (unsigned long long)seq,
                                (unsigned long long)(seq / 7));
    }
}

int main(int argc, char **argv)
{
    long devices, i;
    double days;
    device_t *dev;
    int64_t backend_conn[BACKENDS];
    char backend[BACKENDS][16], client[32], topic[64], payload[96], *ident;
    size_t plen;
    struct timespec t0, t1;
    event_in_t in;

    if (argc != 6) {
        fprintf(stderr, "usage: gen_events DSN TABLE ROWS DAYS DEVICES\n");
        return 2;
    }
    rows = atol(argv[3]);
    days = atof(argv[4]);
    devices = atol(argv[5]);
    dev = calloc((size_t)devices, sizeof *dev);
    if (getenv("GEN_PAYLOAD") && strcmp(getenv("GEN_PAYLOAD"), "random") == 0)
        payload_kind = PAY_RANDOM;
    else if (getenv("GEN_PAYLOAD") && strcmp(getenv("GEN_PAYLOAD"), "fill") == 0)
        payload_kind = PAY_FILL;
    auth_payload_none = getenv("GEN_AUTH_PAYLOAD") && strcmp(getenv("GEN_AUTH_PAYLOAD"), "none") == 0;
    conn = PQconnectdb(argv[1]);
    if (!dev || PQstatus(conn) != CONNECTION_OK)
        die("connect");
    ident = PQescapeIdentifier(conn, argv[2], strlen(argv[2]));
    snprintf(copy_sql, sizeof copy_sql, "COPY %s (%s) FROM STDIN (FORMAT binary)", ident, copy_columns);
    PQfreemem(ident);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    clock_gettime(CLOCK_REALTIME, &t1);
    span_us = (int64_t)(days * 86400e6);
    start_us = (int64_t)t1.tv_sec * 1000000 + t1.tv_nsec / 1000 - span_us;
    ctx.incarnation = start_us;
    copy_begin();
    for (i = 0; i < BACKENDS; i++) {
        snprintf(backend[i], sizeof backend[i], "backend-%ld", i);
        backend_conn[i] = next_conn++;
        login(backend[i], -1, backend_conn[i], "backend", 1);
    }
    while (seq < (uint64_t)rows) {
        long d = (long)(rnd() % (uint64_t)devices);
        uint64_t r = rnd() % 1000;
        snprintf(client, sizeof client, "device-%06ld", d);
        plen = make_payload(&dev[d], payload);
        if (!dev[d].conn_id) {
            int64_t cid = next_conn++;
            int ok = rnd() % 20 != 0;
            login(client, d, cid, ok ? "device" : "intruder", ok);
            if (ok)
                dev[d].conn_id = cid;
        } else if (r < 900) {
            int b = (int)(rnd() % BACKENDS);
            snprintf(topic, sizeof topic, "devices/%ld/telemetry", d);
            message(&in, HOOK_AUTH_ON_PUBLISH, client, dev[d].conn_id, "device", topic, payload, plen);
            message(&in, HOOK_ON_PUBLISH, client, dev[d].conn_id, "device", topic, payload, plen);
            message(&in, HOOK_ON_DELIVER_6, backend[b], backend_conn[b], "backend", topic, payload, plen);
        } else if (r < 980) {
            int b = (int)(rnd() % BACKENDS);
            snprintf(topic, sizeof topic, "devices/%ld/cmd", d);
            message(&in, HOOK_ON_PUBLISH, backend[b], backend_conn[b], "backend", topic, payload, plen);
            message(&in, HOOK_ON_DELIVER_6, client, dev[d].conn_id, "device", topic, payload, plen);
        } else {
            base(&in, r & 1 ? HOOK_ON_CLIENT_GONE : HOOK_ON_CLIENT_OFFLINE, client, dev[d].conn_id);
            emit(&in);
            dev[d].conn_id = 0;
        }
    }
    copy_end();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("rows %llu seconds %.1f node %s incarnation %lld\n", (unsigned long long)seq,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, NODE,
           (long long)start_us);
    PQfinish(conn);
    free(dev);
    return 0;
}
