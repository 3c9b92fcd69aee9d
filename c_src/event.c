/* event.c - building and freeing event records (see event.h). */
#include "event.h"

#include <stdlib.h>
#include <string.h>

#include "hooks.h"
#include "text.h"

const struct hook_def hook_defs[EVENT_KINDS] = {
#define HOOK_DEF(id, name, roles) {name, roles},
    HOOK_LIST(HOOK_DEF)
#undef HOOK_DEF
#define PROW_DEF(id, name) {name, ""},
    PLUGIN_ROW_LIST(PROW_DEF)
#undef PROW_DEF
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

void event_in_mask_peer(event_in_t *in, int mode)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    size_t keep;

    if (mode == PEER_FULL || !in->peer_family)
        return;
    if (mode == PEER_NONE) {
        in->peer_family = 0;
        keep = 0;
    } else if (in->peer_family == 4) {
        keep = 3;
    } else if (memcmp(in->peer_addr, mapped, sizeof mapped) == 0) {
        keep = 15;
    } else if (in->peer_addr[0] == 0x20 && in->peer_addr[1] == 0x02) {
        keep = 5;   /* 6to4, 2002:AABB:CCDD::/48 holds the whole IPv4 AA.BB.CC.DD: its /24 */
    } else {
        keep = 6;
    }
    memset(in->peer_addr + keep, 0, sizeof in->peer_addr - keep);
    in->peer_port = 0;
    if (in->peer_family)
        in->flags |= EV_NO_PORT;
}

int event_layout(const event_in_t *in, event_layout_t *lay)
{
    int f;

    lay->total = offsetof(event_t, data);
    lay->escaped = 0;
    for (f = 0; f < F_COUNT; f++) {
        const span_t *s = &in->f[f];
        lay->need[f] = 0;
        if (!s->present)
            continue;
        lay->need[f] = s->n;
        if (f <= F_TEXT_LAST && !text_is_clean(s->p, s->n)) {
            lay->need[f] = text_escaped_len(s->p, s->n);
            lay->escaped |= (uint8_t)(1u << f);
        }
        if (lay->need[f] > INT32_MAX || lay->need[f] > UINT32_MAX - lay->total)
            return -1;
        lay->total += lay->need[f];
    }
    return 0;
}

void event_fill(event_t *ev, const event_in_t *in, const event_layout_t *lay)
{
    size_t pos = 0;
    int f;

    /* padding too: the journal writes these bytes to disk; next and
     * home are the caller's (the writer may read them meanwhile) */
    memset(&ev->seq, 0, offsetof(event_t, home) - offsetof(event_t, seq));
    memset(ev->off, 0, offsetof(event_t, data) - offsetof(event_t, off));
    ev->ts_us = in->ts_us;
    ev->conn_id = in->conn_id;
    ev->has_conn = (uint8_t)(in->has_conn != 0);
    ev->payload_size = in->payload_size;
    ev->bytes = lay->total;
    ev->hook = (uint16_t)in->hook;
    ev->qos = (int8_t)in->qos;
    ev->retain = (int8_t)in->retain;
    ev->clean = (int8_t)in->clean;
    ev->peer_family = (uint8_t)in->peer_family;
    ev->peer_port = (uint16_t)in->peer_port;
    memcpy(ev->peer_addr, in->peer_addr, sizeof ev->peer_addr);
    ev->flags = (uint8_t)(lay->escaped | in->flags);
    for (f = 0; f < F_COUNT; f++) {
        const span_t *s = &in->f[f];
        ev->off[f] = (uint32_t)pos;
        if (!s->present) {
            ev->len[f] = -1;
            continue;
        }
        if (lay->escaped & (1u << f))
            text_escape(ev->data + pos, s->p, s->n);
        else if (s->n)
            memcpy(ev->data + pos, s->p, s->n);
        ev->len[f] = (int32_t)lay->need[f];
        pos += lay->need[f];
    }
}

event_t *event_build(const event_in_t *in)
{
    event_layout_t lay;
    event_t *ev;

    if (event_layout(in, &lay) != 0)
        return NULL;
    ev = malloc(lay.total);
    if (!ev)
        return NULL;
    ev->next = NULL;
    ev->home = EV_HEAP;
    event_fill(ev, in, &lay);
    return ev;
}

void event_free(event_t *ev)
{
    free(ev);
}

int event_check(const event_t *ev, size_t len)
{
    size_t fixed = offsetof(event_t, data) - offsetof(event_t, seq);
    int f;

    if (len < fixed || ev->bytes != offsetof(event_t, seq) + len || ev->hook >= EVENT_KINDS ||
        ev->peer_family > 6)
        return -1;
    for (f = 0; f < F_COUNT; f++) {
        if (ev->len[f] < -1)
            return -1;
        if (ev->len[f] >= 0 && (uint64_t)ev->off[f] + (uint64_t)ev->len[f] > len - fixed)
            return -1;
    }
    return 0;
}
