/* event.h - one recorded hook call, as a plain C record.
 *
 * An event is one block: the header below followed by its variable-length
 * fields. It lives either in a record of the journal (journal.h: built in
 * place on the calling scheduler thread, or found in a journal file an
 * earlier start left) or in one malloc (event_build: no journal). It is
 * owned by the queue while
 * queued, then by the writer thread, which gives it back (queue_release:
 * its journal space released, or freed) after the row is committed or
 * dead-lettered.
 * Knows nothing of erl_nif or libpq. */
#ifndef VMQ_PGEV_EVENT_H
#define VMQ_PGEV_EVENT_H

#include <stddef.h>
#include <stdint.h>

/* variable-length fields; the text ones are escaped when not clean UTF-8 */
enum event_field {
    F_MOUNTPOINT,  /* text */
    F_CLIENT_ID,   /* text */
    F_USERNAME,    /* text */
    F_TOPIC,       /* text */
    F_REASON,      /* text */
    F_TOPICS,      /* JSON array */
    F_PROPERTIES,  /* JSON object */
    F_EXTRA,       /* JSON object members, without the braces */
    F_PAYLOAD,     /* bytes, possibly truncated */
    F_COUNT
};
#define F_TEXT_LAST F_REASON

typedef struct span {
    const char *p;
    size_t n;
    int present;   /* 0: SQL NULL */
} span_t;

/* what the decoder hands to event_build; pointers are borrowed */
typedef struct event_in {
    int hook;
    int64_t ts_us;          /* wall clock, microseconds since 1970 */
    int64_t conn_id;
    int has_conn;
    int qos;                /* -1: NULL */
    int retain;             /* -1: NULL, else 0/1 */
    int clean;              /* -1: NULL, else 0/1 */
    int peer_family;        /* 0: no peer, 4, 6 */
    uint8_t peer_addr[16];
    int peer_port;
    uint64_t payload_size;  /* size before truncation */
    uint8_t flags;          /* EV_PAYLOAD_SHA256, EV_NO_PORT */
    span_t f[F_COUNT];
} event_in_t;

typedef struct event {
    struct event *next;     /* queue link, owned by whoever holds the event (never
                             * set in a journal record: the writer links copies) */
    uint64_t seq;
    int64_t ts_us;
    int64_t conn_id;
    uint64_t payload_size;
    size_t bytes;           /* size of this allocation */
    uint16_t hook;
    int8_t qos, retain, clean;
    uint8_t peer_family, has_conn;
    uint8_t flags;          /* bit i <= F_TEXT_LAST: text field i was escaped; EV_* below */
    uint16_t peer_port;
    uint8_t peer_addr[16];
    uint16_t home;          /* EV_JOURNAL for the writer's copies; EV_HEAP: event_build's
                             * (earlier versions' spool files: 0) */
    uint32_t off[F_COUNT];
    int32_t len[F_COUNT];   /* -1: NULL; at most 256 MiB (payload_max_bytes) */
    char data[];
} event_t;

enum { EV_HEAP = 0, EV_JOURNAL = 1 };

/* event flags beside the escaped text fields' bits */
#define EV_ESCAPED_MASK ((1u << (F_TEXT_LAST + 1)) - 1)
#define EV_NO_PORT 0x40         /* peer_port is NULL (peer_addr = network) */
#define EV_PAYLOAD_SHA256 0x80  /* the payload field is the SHA-256 of the payload (payload_topics hash) */

/* peer_addr: what is kept of a peer */
enum peer_mode { PEER_FULL, PEER_NETWORK, PEER_NONE };

/* the layout of an event: its size and which text fields get escaped */
typedef struct event_layout {
    size_t total;           /* bytes of the whole event */
    size_t need[F_COUNT];
    uint8_t escaped;
} event_layout_t;

void event_in_init(event_in_t *in, int hook, int64_t ts_us);
/* peer_addr = network: an IPv4 address keeps its /24, an IPv6 one its /48,
 * an IPv4-mapped IPv6 one (::ffff:a.b.c.d) the /24 of its IPv4 address;
 * the port is dropped. none: no peer at all. full: unchanged. */
void event_in_mask_peer(event_in_t *in, int mode);
/* 0, or -1 when a field is too large for an event */
int event_layout(const event_in_t *in, event_layout_t *lay);
/* Writes everything but ev->next and ev->home into ev (lay->total bytes). */
void event_fill(event_t *ev, const event_in_t *in, const event_layout_t *lay);
/* One allocation holding everything; NULL when out of memory. */
event_t *event_build(const event_in_t *in);
/* frees what event_build made (a queued event goes by queue_release) */
void event_free(event_t *ev);
/* 0 when the len bytes of ev from seq on (read back from a file) hold a
 * whole event: its size, hook, peer and every field within them */
int event_check(const event_t *ev, size_t len);

static inline const char *event_field(const event_t *ev, int f)
{
    return ev->data + ev->off[f];
}

#endif
