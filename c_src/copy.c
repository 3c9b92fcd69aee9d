/* copy.c - COPY BINARY encoding of events (see copy.h).
 * Format: PostgreSQL docs, "COPY ... Binary Format"; types in their
 * send/recv wire form (int8/int4/int2/bool big-endian, timestamptz as
 * microseconds since 2000-01-01, jsonb as version byte 1 + text, inet as
 * family/bits/is_cidr/len/address). */
#include "copy.h"

#include <jansson.h>

#include "hooks.h"
#include "text.h"

const char copy_columns[] =
    "node, incarnation, seq, ts, hook, conn_id, mountpoint, client_id, "
    "username, peer_addr, peer_port, qos, topic, topics, retain, "
    "clean_session, payload, payload_size, payload_truncated, payload_json, "
    "properties, reason, extra, payload_hash";

const char copy_dead_columns[] =
    "node, incarnation, seq, ts, hook, conn_id, mountpoint, client_id, "
    "username, peer_addr, peer_port, qos, topic, topics, retain, "
    "clean_session, payload, payload_size, payload_truncated, payload_json, "
    "properties, reason, extra, payload_hash, dead_error, dead_sqlstate";

#define PG_EPOCH_US 946684800000000LL
#define PGSQL_AF_INET 2
#define PGSQL_AF_INET6 3

static const char *const text_field_names[] = {
    "mountpoint", "client_id", "username", "topic", "reason"};

void copy_header(buf_t *b)
{
    static const char sig[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n', '\0'};
    buf_put(b, sig, sizeof sig);
    buf_put_be32(b, 0); /* flags */
    buf_put_be32(b, 0); /* header extension length */
}

void copy_trailer(buf_t *b)
{
    buf_put_be16(b, 0xFFFF);
}

static void put_null(buf_t *b)
{
    buf_put_be32(b, 0xFFFFFFFFu);
}

static void put_bytes(buf_t *b, const char *p, size_t n)
{
    buf_put_be32(b, (uint32_t)n);
    buf_put(b, p, n);
}

static void put_field(buf_t *b, const event_t *ev, int f)
{
    if (ev->len[f] < 0)
        put_null(b);
    else
        put_bytes(b, event_field(ev, f), (size_t)ev->len[f]);
}

static void put_int8(buf_t *b, int64_t v)
{
    buf_put_be32(b, 8);
    buf_put_be64(b, (uint64_t)v);
}

static void put_int4(buf_t *b, int32_t v)
{
    buf_put_be32(b, 4);
    buf_put_be32(b, (uint32_t)v);
}

static void put_int2_or_null(buf_t *b, int v)
{
    if (v < 0) {
        put_null(b);
        return;
    }
    buf_put_be32(b, 2);
    buf_put_be16(b, (uint16_t)v);
}

static void put_bool_or_null(buf_t *b, int v)
{
    if (v < 0) {
        put_null(b);
        return;
    }
    buf_put_be32(b, 1);
    buf_putc(b, v ? 1 : 0);
}

static void put_jsonb(buf_t *b, const char *p, size_t n)
{
    buf_put_be32(b, (uint32_t)(n + 1));
    buf_putc(b, 1);
    buf_put(b, p, n);
}

static void put_jsonb_field(buf_t *b, const event_t *ev, int f)
{
    if (ev->len[f] < 0)
        put_null(b);
    else
        put_jsonb(b, event_field(ev, f), (size_t)ev->len[f]);
}

static void put_inet(buf_t *b, const event_t *ev)
{
    int n = ev->peer_family == 4 ? 4 : 16;

    if (ev->peer_family != 4 && ev->peer_family != 6) {
        put_null(b);
        return;
    }
    buf_put_be32(b, (uint32_t)(4 + n));
    buf_putc(b, ev->peer_family == 4 ? PGSQL_AF_INET : PGSQL_AF_INET6);
    buf_putc(b, (char)(n * 8));
    buf_putc(b, 0);
    buf_putc(b, (char)n);
    buf_put(b, ev->peer_addr, (size_t)n);
}

/* payload_json: the payload itself when jansson accepts it as JSON */
static void put_payload_json(buf_t *b, const copy_ctx_t *ctx, const event_t *ev)
{
    const char *p = event_field(ev, F_PAYLOAD);
    size_t n = (size_t)ev->len[F_PAYLOAD];
    json_error_t err;
    json_t *j;

    size_t i = 0;

    if (ev->len[F_PAYLOAD] <= 0 || n > ctx->json_max || n < ev->payload_size ||
        (ev->flags & EV_PAYLOAD_SHA256)) {
        put_null(b);
        return;
    }
    /* most payloads are not JSON: jansson is only asked when the first
     * non-blank byte can start a JSON value */
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    if (i == n || !p[i] || !strchr("{[\"-0123456789tfn", p[i])) {
        put_null(b);
        return;
    }
    /* jansson accepts a number followed by NUL bytes ("1\0"); PostgreSQL
     * refuses any NUL in jsonb: such a payload is not stored as JSON */
    if (memchr(p, 0, n)) {
        put_null(b);
        return;
    }
    j = json_loadb(p, n, JSON_DECODE_ANY, &err);
    if (!j) {
        put_null(b);
        return;
    }
    json_decref(j);
    put_jsonb(b, p, n);
}

/* extra: the members the decoder collected, which text fields were
 * stored escaped, and "payload":"sha256" when the payload is its hash */
static void put_extra(buf_t *b, const event_t *ev)
{
    size_t lenpos, start;
    int32_t inner = ev->len[F_EXTRA];
    unsigned escaped = ev->flags & EV_ESCAPED_MASK;
    int f, first = 1;

    if (inner <= 0 && !escaped && !(ev->flags & EV_PAYLOAD_SHA256)) {
        put_null(b);
        return;
    }
    buf_put_be32(b, 0); /* patched below */
    lenpos = b->len - 4;
    start = b->len;
    buf_putc(b, 1);
    buf_putc(b, '{');
    if (inner > 0) {
        buf_put(b, event_field(ev, F_EXTRA), (size_t)inner);
        first = 0;
    }
    if (escaped) {
        if (!first)
            buf_putc(b, ',');
        buf_puts(b, "\"escaped\":[");
        first = 1;
        for (f = 0; f <= F_TEXT_LAST; f++) {
            if (!(escaped & (1u << f)))
                continue;
            if (!first)
                buf_putc(b, ',');
            first = 0;
            buf_putc(b, '"');
            buf_puts(b, text_field_names[f]);
            buf_putc(b, '"');
        }
        buf_putc(b, ']');
        first = 0;
    }
    if (ev->flags & EV_PAYLOAD_SHA256) {
        if (!first)
            buf_putc(b, ',');
        buf_puts(b, "\"payload\":\"sha256\"");
    }
    buf_putc(b, '}');
    if (!b->failed) {
        uint32_t n = (uint32_t)(b->len - start);
        unsigned char *l = (unsigned char *)b->p + lenpos;
        l[0] = (unsigned char)(n >> 24);
        l[1] = (unsigned char)(n >> 16);
        l[2] = (unsigned char)(n >> 8);
        l[3] = (unsigned char)n;
    }
}

/* MurmurHash64A (Austin Appleby, public domain) over little-endian 8-byte
 * words: the same value on every machine */
int64_t copy_payload_hash(const void *data, size_t n)
{
    const uint64_t m = 0xc6a4a7935bd1e995ULL;
    const unsigned char *p = data;
    uint64_t h = 0x5bd1e9955bd1e995ULL ^ ((uint64_t)n * m);
    size_t i;

    for (; n >= 8; p += 8, n -= 8) {
        uint64_t k = 0;
        for (i = 0; i < 8; i++)
            k |= (uint64_t)p[i] << (8 * i);
        k *= m;
        k ^= k >> 47;
        k *= m;
        h ^= k;
        h *= m;
    }
    if (n) {
        for (i = 0; i < n; i++)
            h ^= (uint64_t)p[i] << (8 * i);
        h *= m;
    }
    h ^= h >> 47;
    h *= m;
    h ^= h >> 47;
    return (int64_t)h;
}

/* payload_hash: of the payload as stored; NULL when no payload is stored
 * (hooks without one, or payload_mode = none cut it to nothing) */
static void put_payload_hash(buf_t *b, const event_t *ev)
{
    if (ev->len[F_PAYLOAD] < 0 || (ev->len[F_PAYLOAD] == 0 && ev->payload_size > 0))
        put_null(b);
    else
        put_int8(b, copy_payload_hash(event_field(ev, F_PAYLOAD), (size_t)ev->len[F_PAYLOAD]));
}

static void put_fields(buf_t *b, const copy_ctx_t *ctx, const event_t *ev);

void copy_row(buf_t *b, const copy_ctx_t *ctx, const event_t *ev)
{
    buf_put_be16(b, COPY_NCOLS);
    put_fields(b, ctx, ev);
}

void copy_row_dead(buf_t *b, const copy_ctx_t *ctx, const event_t *ev,
                   const char *error, const char *sqlstate)
{
    buf_put_be16(b, COPY_NCOLS + 2);
    put_fields(b, ctx, ev);
    if (!text_is_clean(error, strlen(error)))
        error = "(the error text was not UTF-8)";
    put_bytes(b, error, strlen(error));
    put_bytes(b, sqlstate, strnlen(sqlstate, 5));
}

static void put_fields(buf_t *b, const copy_ctx_t *ctx, const event_t *ev)
{
    const char *hook = hook_defs[ev->hook].name;

    put_bytes(b, ctx->node, ctx->node_len);                  /* node */
    put_int8(b, ctx->incarnation);                           /* incarnation */
    put_int8(b, (int64_t)ev->seq);                           /* seq */
    /* ts: wraps, never overflows, on a value no clock gives (PostgreSQL
     * refuses it as out of range: that row alone is dead-lettered) */
    put_int8(b, (int64_t)((uint64_t)ev->ts_us - (uint64_t)PG_EPOCH_US));
    put_bytes(b, hook, strlen(hook));                        /* hook */
    if (ev->has_conn)                                        /* conn_id */
        put_int8(b, ev->conn_id);
    else
        put_null(b);
    put_field(b, ev, F_MOUNTPOINT);                          /* mountpoint */
    if (ev->len[F_CLIENT_ID] < 0 && ctx->client_id_required) /* client_id */
        put_bytes(b, "", 0);   /* Citus places no row without it (docs/scale-out.md) */
    else
        put_field(b, ev, F_CLIENT_ID);
    put_field(b, ev, F_USERNAME);                            /* username */
    put_inet(b, ev);                                         /* peer_addr */
    if (ev->peer_family && !(ev->flags & EV_NO_PORT))        /* peer_port */
        put_int4(b, ev->peer_port);
    else
        put_null(b);
    put_int2_or_null(b, ev->qos);                            /* qos */
    put_field(b, ev, F_TOPIC);                               /* topic */
    put_jsonb_field(b, ev, F_TOPICS);                        /* topics */
    put_bool_or_null(b, ev->retain);                         /* retain */
    put_bool_or_null(b, ev->clean);                          /* clean_session */
    put_field(b, ev, F_PAYLOAD);                             /* payload */
    if (ev->len[F_PAYLOAD] >= 0) {
        put_int4(b, (int32_t)(ev->payload_size > INT32_MAX ? INT32_MAX : ev->payload_size));
        /* a hash is never the whole payload */
        put_bool_or_null(b, (ev->flags & EV_PAYLOAD_SHA256) ||
                                (uint64_t)ev->len[F_PAYLOAD] < ev->payload_size);
    } else {
        put_null(b);                                         /* payload_size */
        put_null(b);                                         /* payload_truncated */
    }
    put_payload_json(b, ctx, ev);                            /* payload_json */
    put_jsonb_field(b, ev, F_PROPERTIES);                    /* properties */
    put_field(b, ev, F_REASON);                              /* reason */
    put_extra(b, ev);                                        /* extra */
    put_payload_hash(b, ev);                                 /* payload_hash */
}
