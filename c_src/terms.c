/* terms.c - Erlang hook arguments -> event_in_t (see terms.h); property
 * maps and other nested terms become JSON in terms_json.c. */
#include "terms.h"

#include <arpa/inet.h>
#include <string.h>

#include "hooks.h"
#include "jsonw.h"
#include "terms_int.h"
#include "text.h"


static const char *role_name(char role)
{
    switch (role) {
    case 'P': return "peer";
    case 'S': return "subscriber_id";
    case 'U': return "username";
    case 'C': return "clean_session";
    case 'R': return "properties";
    case 'O': return "opts";
    case 'Q': return "qos";
    case 'T': return "topic";
    case 'B': return "payload";
    case 'N': return "retain";
    case 'L': return "topics";
    case 'K': return "topics";
    case 'D': return "message";
    case 'E': return "reason";
    default: return "argument";
    }
}

static span_t span_of(const buf_t *b)
{
    span_t s = {b->p, b->len, 1};
    return s;
}

/* topic: a list of binary words joined with '/', or a binary as is */
int put_topic(ErlNifEnv *env, ERL_NIF_TERM t, buf_t *b)
{
    ERL_NIF_TERM head, tail = t;
    ErlNifBinary w;
    unsigned words = 0;

    if (enif_is_binary(env, t)) {
        if (!enif_inspect_binary(env, t, &w) || w.size > TEXT_BYTES_MAX)
            return -1;
        buf_put(b, w.data, w.size);
        return b->failed ? -1 : 0;
    }
    while (enif_get_list_cell(env, tail, &head, &tail)) {
        if (!enif_inspect_binary(env, head, &w) || ++words > TOPIC_WORDS_MAX ||
            b->len + w.size > TEXT_BYTES_MAX)
            return -1;
        if (words > 1)
            buf_putc(b, '/');
        buf_put(b, w.data, w.size);
    }
    if (!enif_is_empty_list(env, tail) || words == 0)
        return -1;
    return b->failed ? -1 : 0;
}

/* a topic as a JSON string */
int json_topic(ErlNifEnv *env, ERL_NIF_TERM t, buf_t *b)
{
    char s[256];
    buf_t tmp;
    int rc;

    buf_init(&tmp, s, sizeof s);
    rc = put_topic(env, t, &tmp);
    if (rc == 0)
        jw_string(b, tmp.p, tmp.len);
    buf_free(&tmp);
    return rc;
}

/* 1 | 0 | true | false -> 1/0; empty -> NULL (-1); else -2 */
static int get_flag(ErlNifEnv *env, const atoms_t *am, ERL_NIF_TERM t)
{
    int i;

    if (enif_is_identical(t, am->am_true))
        return 1;
    if (enif_is_identical(t, am->am_false))
        return 0;
    if (enif_is_identical(t, am->am_empty) || enif_is_identical(t, am->am_undefined))
        return -1;
    if (enif_get_int(env, t, &i) && (i == 0 || i == 1))
        return i;
    return -2;
}

static int get_qos(ErlNifEnv *env, ERL_NIF_TERM t)
{
    int q;

    if (enif_get_int(env, t, &q) && q >= 0 && q <= 255)
        return q;
    return -2;
}

/* binary -> text, undefined -> NULL */
static int get_text(ErlNifEnv *env, const atoms_t *am, ERL_NIF_TERM t, span_t *s)
{
    ErlNifBinary bin;

    if (enif_inspect_binary(env, t, &bin) && bin.size <= TEXT_BYTES_MAX) {
        s->p = (const char *)bin.data;
        s->n = bin.size;
        s->present = 1;
        return 0;
    }
    s->present = 0;
    return enif_is_identical(t, am->am_undefined) ? 0 : -1;
}

/* {MountPoint :: string() | binary(), ClientId :: binary() | undefined} */
static int get_subid(ErlNifEnv *env, const atoms_t *am, ERL_NIF_TERM t, decoded_t *d)
{
    const ERL_NIF_TERM *e;
    ERL_NIF_TERM head, tail;
    ErlNifBinary bin;
    int arity, cp;

    if (!enif_get_tuple(env, t, &arity, &e) || arity != 2)
        return -1;
    if (enif_inspect_binary(env, e[0], &bin)) {
        if (bin.size > TEXT_BYTES_MAX)
            return -1;
        buf_put(&d->mp, bin.data, bin.size);
    } else {
        tail = e[0];
        while (enif_get_list_cell(env, tail, &head, &tail)) {
            if (!enif_get_int(env, head, &cp) || utf8_put(&d->mp, cp) < 0 ||
                d->mp.len > TEXT_BYTES_MAX)
                return -1;
        }
        if (!enif_is_empty_list(env, tail))
            return -1;
    }
    if (d->mp.failed)
        return -1;
    d->in.f[F_MOUNTPOINT] = span_of(&d->mp);
    return get_text(env, am, e[1], &d->in.f[F_CLIENT_ID]);
}

/* {{A,B,C,D} | {A,...,H}, Port} */
static int get_peer(ErlNifEnv *env, ERL_NIF_TERM t, event_in_t *in)
{
    const ERL_NIF_TERM *e, *ip;
    int arity, n, k, v, port;

    if (!enif_get_tuple(env, t, &arity, &e) || arity != 2 ||
        !enif_get_tuple(env, e[0], &n, &ip) || (n != 4 && n != 8) ||
        !enif_get_int(env, e[1], &port) || port < 0 || port > 65535)
        return -1;
    for (k = 0; k < n; k++) {
        if (!enif_get_int(env, ip[k], &v) || v < 0 || v > (n == 4 ? 255 : 65535))
            return -1;
        if (n == 4) {
            in->peer_addr[k] = (uint8_t)v;
        } else {
            in->peer_addr[2 * k] = (uint8_t)(v >> 8);
            in->peer_addr[2 * k + 1] = (uint8_t)v;
        }
    }
    in->peer_family = n == 4 ? 4 : 6;
    in->peer_port = port;
    return 0;
}

static int get_payload(ErlNifEnv *env, ERL_NIF_TERM t, size_t payload_max, event_in_t *in)
{
    ErlNifBinary bin;

    if (!enif_inspect_binary(env, t, &bin))
        return -1;
    in->payload_size = bin.size;
    in->f[F_PAYLOAD].p = (const char *)bin.data;
    in->f[F_PAYLOAD].n = bin.size < payload_max ? bin.size : payload_max;
    in->f[F_PAYLOAD].present = 1;
    return 0;
}

/* [{Topic, QoS | {QoS, Opts}}] -> [{"topic":..,"qos":..,<opts>}] */
static int put_subs(ErlNifEnv *env, const atoms_t *am, ERL_NIF_TERM t, buf_t *b)
{
    ERL_NIF_TERM head, tail = t;
    const ERL_NIF_TERM *e, *qe;
    int arity, qa, qos, first = 1;

    buf_putc(b, '[');
    while (enif_get_list_cell(env, tail, &head, &tail)) {
        if (!enif_get_tuple(env, head, &arity, &e) || arity != 2)
            return -1;
        jw_sep(b, &first);
        buf_puts(b, "{\"topic\":");
        if (json_topic(env, e[0], b) < 0)
            return -1;
        buf_puts(b, ",\"qos\":");
        if (enif_get_int(env, e[1], &qos)) {
            jw_int(b, qos);
        } else if (enif_get_tuple(env, e[1], &qa, &qe) && qa == 2 && enif_get_int(env, qe[0], &qos)) {
            jw_int(b, qos);
            if (enif_is_map(env, qe[1])) {
                size_t mark = b->len;
                json_map(env, am, qe[1], b, 1);
                /* merge the options into this object: drop their braces */
                if (b->len - mark > 2) {
                    b->p[mark] = ',';
                    b->len--;
                } else {
                    b->len = mark;
                }
            }
        } else {
            return -1;
        }
        buf_putc(b, '}');
        if (b->len > JSON_BYTES_MAX)
            return -1;
    }
    if (!enif_is_empty_list(env, tail))
        return -1;
    buf_putc(b, ']');
    return b->failed ? -1 : 0;
}

/* [Topic] -> ["a/b"]; all_topics -> reason 'all_topics' */
static int put_topic_list(ErlNifEnv *env, const atoms_t *am, ERL_NIF_TERM t, decoded_t *d)
{
    ERL_NIF_TERM head, tail = t;
    int first = 1;

    if (enif_is_identical(t, am->am_all_topics)) {
        d->in.f[F_REASON].p = "all_topics";
        d->in.f[F_REASON].n = 10;
        d->in.f[F_REASON].present = 1;
        return 0;
    }
    buf_putc(&d->topics, '[');
    while (enif_get_list_cell(env, tail, &head, &tail)) {
        jw_sep(&d->topics, &first);
        if (json_topic(env, head, &d->topics) < 0 || d->topics.len > JSON_BYTES_MAX)
            return -1;
    }
    if (!enif_is_empty_list(env, tail))
        return -1;
    buf_putc(&d->topics, ']');
    if (d->topics.failed)
        return -1;
    d->in.f[F_TOPICS] = span_of(&d->topics);
    return 0;
}

/* on_message_drop's message, as the shim got it from the promise:
 * {Topic, QoS, Payload, Props} or error */
static int get_drop_msg(ErlNifEnv *env, const atoms_t *am, ERL_NIF_TERM t,
                        size_t payload_max, decoded_t *d, int *extra_first)
{
    const ERL_NIF_TERM *e;
    int arity, rc = 0;

    if (enif_is_identical(t, am->am_error)) {
        jw_key(&d->extra, "message", extra_first);
        jw_lit(&d->extra, "unavailable");
        return 0;
    }
    if (!enif_get_tuple(env, t, &arity, &e) || arity != 4)
        return -1;
    if (put_topic(env, e[0], &d->topic) == 0)
        d->in.f[F_TOPIC] = span_of(&d->topic);
    else
        rc = -1;
    d->in.qos = get_qos(env, e[1]);
    if (d->in.qos < 0) {
        d->in.qos = -1;
        rc = -1;
    }
    if (get_payload(env, e[2], payload_max, &d->in) < 0)
        rc = -1;
    if (enif_is_map(env, e[3]) && put_map_json(env, am, e[3], &d->props) == 0)
        d->in.f[F_PROPERTIES] = span_of(&d->props);
    return rc;
}

void decode_event(ErlNifEnv *env, const atoms_t *am, int hook,
                  const ERL_NIF_TERM *argv, size_t payload_max, decoded_t *d)
{
    const char *roles = hook_defs[hook].roles;
    char name[256];
    ErlNifBinary bin;
    int i, v, extra_first = 1;

    d->malformed = 0;
    buf_init(&d->mp, d->mp_s, sizeof d->mp_s);
    buf_init(&d->topic, d->topic_s, sizeof d->topic_s);
    buf_init(&d->topics, d->topics_s, sizeof d->topics_s);
    buf_init(&d->props, d->props_s, sizeof d->props_s);
    buf_init(&d->extra, d->extra_s, sizeof d->extra_s);
    buf_init(&d->reason, d->reason_s, sizeof d->reason_s);

    for (i = 0; roles[i]; i++) {
        ERL_NIF_TERM a = argv[i];
        int bad = 0;

        switch (roles[i]) {
        case 'P':
            bad = get_peer(env, a, &d->in) < 0;
            break;
        case 'S':
            bad = get_subid(env, am, a, d) < 0;
            break;
        case 'U':
            bad = get_text(env, am, a, &d->in.f[F_USERNAME]) < 0;
            break;
        case 'W':
            break; /* the password: never read, never stored */
        case 'C':
            v = get_flag(env, am, a);
            bad = v == -2;
            d->in.clean = bad ? -1 : v;
            break;
        case 'N':
            v = get_flag(env, am, a);
            bad = v == -2;
            d->in.retain = bad ? -1 : v;
            break;
        case 'Q':
            v = get_qos(env, a);
            bad = v < 0;
            d->in.qos = bad ? -1 : v;
            break;
        case 'T':
            bad = put_topic(env, a, &d->topic) < 0;
            if (!bad)
                d->in.f[F_TOPIC] = span_of(&d->topic);
            break;
        case 'B':
            bad = get_payload(env, a, payload_max, &d->in) < 0;
            break;
        case 'R':
            bad = put_map_json(env, am, a, &d->props) < 0;
            if (!bad)
                d->in.f[F_PROPERTIES] = span_of(&d->props);
            break;
        case 'O':
            jw_key(&d->extra, "opts", &extra_first);
            if (enif_is_map(env, a)) {
                json_map(env, am, a, &d->extra, 1);
            } else {
                buf_puts(&d->extra, "null");
                bad = 1;
            }
            break;
        case 'L':
            bad = put_subs(env, am, a, &d->topics) < 0;
            if (!bad)
                d->in.f[F_TOPICS] = span_of(&d->topics);
            break;
        case 'K':
            bad = put_topic_list(env, am, a, d) < 0;
            break;
        case 'D':
            bad = get_drop_msg(env, am, a, payload_max, d, &extra_first) < 0;
            break;
        case 'E':
            if (enif_is_atom(env, a) && atom_text(env, a, name, sizeof name) == 0) {
                buf_puts(&d->reason, name);
                if (!d->reason.failed)
                    d->in.f[F_REASON] = span_of(&d->reason);
            } else if (enif_inspect_binary(env, a, &bin) && bin.size <= TEXT_BYTES_MAX) {
                d->in.f[F_REASON].p = (const char *)bin.data;
                d->in.f[F_REASON].n = bin.size;
                d->in.f[F_REASON].present = 1;
            } else {
                bad = 1;
            }
            break;
        }
        if (bad) {
            d->malformed |= 1u << i;
            /* a half-written JSON value must not reach the row */
            if (roles[i] == 'L' || roles[i] == 'K')
                d->in.f[F_TOPICS].present = 0;
            if (roles[i] == 'R')
                d->in.f[F_PROPERTIES].present = 0;
            if (roles[i] == 'T')
                d->in.f[F_TOPIC].present = 0;
        }
    }
    if (d->malformed) {
        int first = 1;
        jw_key(&d->extra, "malformed", &extra_first);
        buf_putc(&d->extra, '[');
        for (i = 0; roles[i]; i++) {
            if (!(d->malformed & (1u << i)))
                continue;
            jw_sep(&d->extra, &first);
            jw_lit(&d->extra, role_name(roles[i]));
        }
        buf_putc(&d->extra, ']');
    }
    if (d->extra.len && !d->extra.failed)
        d->in.f[F_EXTRA] = span_of(&d->extra);
}

void decoded_free(decoded_t *d)
{
    buf_free(&d->mp);
    buf_free(&d->topic);
    buf_free(&d->topics);
    buf_free(&d->props);
    buf_free(&d->extra);
    buf_free(&d->reason);
}
