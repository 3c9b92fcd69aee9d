/* event.c - building and freeing event records (see event.h). */
#include "event.h"

#include <stdlib.h>
#include <string.h>

#include "hooks.h"
#include "text.h"

const struct hook_def hook_defs[HOOK_COUNT] = {
#define HOOK_DEF(id, name, roles) {name, roles},
    HOOK_LIST(HOOK_DEF)
#undef HOOK_DEF
};

void event_in_init(event_in_t *in, int hook, int64_t ts_us)
{
    memset(in, 0, sizeof *in);
    in->hook = hook;
    in->ts_us = ts_us;
    in->qos = -1;
    in->retain = -1;
    in->clean = -1;
}

event_t *event_build(const event_in_t *in)
{
    size_t need[F_COUNT];
    uint8_t escaped = 0;
    size_t total = offsetof(event_t, data), pos = 0;
    event_t *ev;
    int f;

    for (f = 0; f < F_COUNT; f++) {
        const span_t *s = &in->f[f];
        need[f] = 0;
        if (!s->present)
            continue;
        need[f] = s->n;
        if (f <= F_TEXT_LAST && !text_is_clean(s->p, s->n)) {
            need[f] = text_escaped_len(s->p, s->n);
            escaped |= (uint8_t)(1u << f);
        }
        if (need[f] > INT32_MAX || need[f] > UINT32_MAX - total)
            return NULL;
        total += need[f];
    }
    ev = malloc(total);
    if (!ev)
        return NULL;
    /* padding too: the spool writes these bytes */
    memset(ev, 0, offsetof(event_t, data));
    ev->next = NULL;
    ev->seq = 0;
    ev->ts_us = in->ts_us;
    ev->conn_id = in->conn_id;
    ev->has_conn = (uint8_t)(in->has_conn != 0);
    ev->payload_size = in->payload_size;
    ev->bytes = total;
    ev->hook = (uint16_t)in->hook;
    ev->qos = (int8_t)in->qos;
    ev->retain = (int8_t)in->retain;
    ev->clean = (int8_t)in->clean;
    ev->peer_family = (uint8_t)in->peer_family;
    ev->peer_port = (uint16_t)in->peer_port;
    memcpy(ev->peer_addr, in->peer_addr, sizeof ev->peer_addr);
    ev->escaped = escaped;
    for (f = 0; f < F_COUNT; f++) {
        const span_t *s = &in->f[f];
        ev->off[f] = (uint32_t)pos;
        if (!s->present) {
            ev->len[f] = -1;
            continue;
        }
        if (escaped & (1u << f))
            text_escape(ev->data + pos, s->p, s->n);
        else if (s->n)
            memcpy(ev->data + pos, s->p, s->n);
        ev->len[f] = (int32_t)need[f];
        pos += need[f];
    }
    return ev;
}

void event_free(event_t *ev)
{
    free(ev);
}

void event_free_list(event_t *ev)
{
    while (ev) {
        event_t *next = ev->next;
        free(ev);
        ev = next;
    }
}
