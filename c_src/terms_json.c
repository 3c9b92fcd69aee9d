/* terms_json.c - Erlang terms as JSON text: MQTT 5 property maps, options
 * and subscription options, user properties as [{"key", "val"}], peers as
 * addresses; anything else as a tagged value ("$pid", "$term"). Bounded in
 * depth and size, never fails on a term (see terms_int.h). */
#include <arpa/inet.h>
#include <string.h>

#include "jsonw.h"
#include "terms_int.h"
#include "text.h"

static void json_term(ErlNifEnv *env, const atoms_t *am, ERL_NIF_TERM t, buf_t *b, int depth);

/* [{K, V}, ...] -> [{"key": K, "val": V}, ...] (MQTT 5 user properties);
 * stops at JSON_BYTES_MAX like every list and map here (put_map_json then
 * writes the summary), so a packet of many tiny properties costs no more */
static int json_user_props(ErlNifEnv *env, const atoms_t *am, ERL_NIF_TERM t, buf_t *b, int depth)
{
    ERL_NIF_TERM head, tail = t;
    const ERL_NIF_TERM *kv;
    int arity, first = 1;
    size_t mark = b->len;

    buf_putc(b, '[');
    while (enif_get_list_cell(env, tail, &head, &tail)) {
        if (!enif_get_tuple(env, head, &arity, &kv) || arity != 2)
            goto fallback;
        jw_sep(b, &first);
        buf_puts(b, "{\"key\":");
        json_term(env, am, kv[0], b, depth + 1);
        buf_puts(b, ",\"val\":");
        json_term(env, am, kv[1], b, depth + 1);
        buf_putc(b, '}');
        if (b->failed || b->len > JSON_BYTES_MAX)
            break;
    }
    if (!enif_is_empty_list(env, tail) && !b->failed && b->len <= JSON_BYTES_MAX)
        goto fallback;
    buf_putc(b, ']');
    return 0;
fallback:
    b->len = mark;
    return -1;
}

/* a JSON object key is always a string: bytes that are not clean UTF-8
 * become "$base64:<base64>" (the {"$base64": ..} object is not a key) */
static void json_key_bytes(buf_t *b, const char *p, size_t n)
{
    if (text_is_clean(p, n)) {
        jw_string(b, p, n);
        return;
    }
    buf_puts(b, "\"$base64:");
    base64_put(b, (const unsigned char *)p, n);
    buf_putc(b, '"');
}

static void json_key(ErlNifEnv *env, ERL_NIF_TERM k, buf_t *b)
{
    char name[256];
    ErlNifBinary bin;
    ErlNifSInt64 i;

    if (enif_is_atom(env, k) && atom_text(env, k, name, sizeof name) == 0) {
        json_key_bytes(b, name, strlen(name));
    } else if (enif_inspect_binary(env, k, &bin)) {
        json_key_bytes(b, (const char *)bin.data, bin.size);
    } else if (enif_get_int64(env, k, &i)) {
        buf_putc(b, '"');
        jw_int(b, i);
        buf_putc(b, '"');
    } else {
        jw_lit(b, "$term");
    }
}

/* an IP address tuple ({A,B,C,D} or eight 16-bit words) as a JSON string
 * ("127.0.0.1", "::1"); -1, writing nothing, when t is not one */
static int json_ip(ErlNifEnv *env, ERL_NIF_TERM t, buf_t *b)
{
    const ERL_NIF_TERM *e;
    unsigned char addr[16];
    char text[INET6_ADDRSTRLEN];
    int n, k, v;

    if (!enif_get_tuple(env, t, &n, &e) || (n != 4 && n != 8))
        return -1;
    for (k = 0; k < n; k++) {
        if (!enif_get_int(env, e[k], &v) || v < 0 || v > (n == 4 ? 255 : 65535))
            return -1;
        if (n == 4) {
            addr[k] = (unsigned char)v;
        } else {
            addr[2 * k] = (unsigned char)(v >> 8);
            addr[2 * k + 1] = (unsigned char)v;
        }
    }
    if (!inet_ntop(n == 4 ? AF_INET : AF_INET6, addr, text, sizeof text))
        return -1;
    jw_string(b, text, strlen(text));
    return 0;
}

void json_map(ErlNifEnv *env, const atoms_t *am, ERL_NIF_TERM m, buf_t *b, int depth)
{
    ErlNifMapIterator it;
    ERL_NIF_TERM k, v;
    int first = 1;

    if (!enif_map_iterator_create(env, m, &it, ERL_NIF_MAP_ITERATOR_FIRST)) {
        buf_puts(b, "{}");
        return;
    }
    buf_putc(b, '{');
    while (enif_map_iterator_get_pair(env, &it, &k, &v)) {
        jw_sep(b, &first);
        json_key(env, k, b);
        buf_putc(b, ':');
        if (enif_is_identical(k, am->am_p_user_property)) {
            if (json_user_props(env, am, v, b, depth) < 0)
                json_term(env, am, v, b, depth + 1);
        } else if (enif_is_identical(k, am->am_listener_addr) && json_ip(env, v, b) == 0) {
            /* VerneMQ 2.2's connection options: the listener's address as text */
        } else if (enif_is_identical(k, am->am_p_authentication_data)) {
            ErlNifBinary bin;
            buf_puts(b, "{\"$redacted\":true,\"bytes\":");
            jw_uint(b, enif_inspect_binary(env, v, &bin) ? bin.size : 0);
            buf_putc(b, '}');
        } else if (enif_is_identical(k, am->am_p_response_topic) && enif_is_list(env, v) &&
                   !enif_is_empty_list(env, v)) {
            size_t mark = b->len;
            if (json_topic(env, v, b) < 0) {
                b->len = mark;
                json_term(env, am, v, b, depth + 1);
            }
        } else {
            json_term(env, am, v, b, depth + 1);
        }
        enif_map_iterator_next(env, &it);
        if (b->failed || b->len > JSON_BYTES_MAX)
            break;
    }
    enif_map_iterator_destroy(env, &it);
    buf_putc(b, '}');
}

/* any term -> JSON; never fails (unrepresentable terms become a marker) */
static void json_term(ErlNifEnv *env, const atoms_t *am, ERL_NIF_TERM t, buf_t *b, int depth)
{
    ErlNifBinary bin;
    ErlNifSInt64 i;
    ErlNifUInt64 u;
    double d;
    char name[256];
    const ERL_NIF_TERM *elems;
    int arity, k, first = 1;

    if (depth > JSON_DEPTH_MAX || b->failed || b->len > JSON_BYTES_MAX) {
        jw_lit(b, "$too_deep_or_large");
        return;
    }
    if (enif_inspect_binary(env, t, &bin)) {
        jw_string(b, (const char *)bin.data, bin.size);
    } else if (enif_get_int64(env, t, &i)) {
        jw_int(b, i);
    } else if (enif_get_uint64(env, t, &u)) {
        jw_uint(b, u);
    } else if (enif_get_double(env, t, &d)) {
        jw_double(b, d);
    } else if (enif_is_atom(env, t)) {
        if (enif_is_identical(t, am->am_true))
            buf_puts(b, "true");
        else if (enif_is_identical(t, am->am_false))
            buf_puts(b, "false");
        else if (enif_is_identical(t, am->am_undefined))
            buf_puts(b, "null");
        else if (atom_text(env, t, name, sizeof name) == 0)
            jw_string(b, name, strlen(name));
        else
            jw_lit(b, "$atom");
    } else if (enif_is_map(env, t)) {
        json_map(env, am, t, b, depth);
    } else if (enif_is_list(env, t)) {
        ERL_NIF_TERM head, tail = t;
        buf_putc(b, '[');
        while (enif_get_list_cell(env, tail, &head, &tail)) {
            jw_sep(b, &first);
            json_term(env, am, head, b, depth + 1);
            if (b->failed || b->len > JSON_BYTES_MAX)
                break;
        }
        if (!enif_is_empty_list(env, tail) && !enif_is_list(env, tail)) {
            jw_sep(b, &first);
            jw_lit(b, "$improper_tail");
        }
        buf_putc(b, ']');
    } else if (enif_get_tuple(env, t, &arity, &elems)) {
        buf_putc(b, '[');
        for (k = 0; k < arity; k++) {
            jw_sep(b, &first);
            json_term(env, am, elems[k], b, depth + 1);
            if (b->failed || b->len > JSON_BYTES_MAX)
                break;
        }
        buf_putc(b, ']');
    } else if (enif_is_pid(env, t)) {
        jw_lit(b, "$pid");
    } else if (enif_is_ref(env, t)) {
        jw_lit(b, "$ref");
    } else if (enif_is_fun(env, t)) {
        jw_lit(b, "$fun");
    } else if (enif_is_port(env, t)) {
        jw_lit(b, "$port");
    } else {
        jw_lit(b, "$term"); /* bignum and anything else */
    }
}

/* a properties (or options) map as a JSON object */
int put_map_json(ErlNifEnv *env, const atoms_t *am, ERL_NIF_TERM t, buf_t *b)
{
    if (!enif_is_map(env, t))
        return -1;
    json_map(env, am, t, b, 0);
    if (b->failed)
        return -1;
    if (b->len > JSON_BYTES_MAX) {
        size_t n = b->len;
        b->len = 0;
        buf_puts(b, "{\"$too_large\":true,\"bytes\":");
        jw_uint(b, n);
        buf_putc(b, '}');
    }
    return 0;
}
