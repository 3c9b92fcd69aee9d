/* queue.h - the queue between the hook path and the writer thread: the
 * events in the journal (journal.h), read by the writer in order from
 * there. On disk it is bounded by its files; in memory only (journal =
 * off, or no usable spool directory) by max_events/max_bytes.
 *
 * Scheduler threads push (never wait: a full queue is a counted drop);
 * the writer thread pops batches. Sequence numbers are assigned under the
 * queue lock, and a dropped event still consumes its number (a gap in seq
 * is a drop). Pops are in sequence order, earlier starts' events first.
 * Events are queued only while a journal is attached. Knows nothing of
 * erl_nif or libpq. */
#ifndef VMQ_PGEV_QUEUE_H
#define VMQ_PGEV_QUEUE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "hooks.h"
#include "journal.h"

/* why an event was dropped (a gap in seq) */
enum drop_reason { DROP_NO_ROOM, DROP_NO_MEMORY, DROP_STOPPED, DROP_TOO_LARGE, DROP_REASONS };

/* The drops since the ledger was last taken: the seq range they fall in
 * (other events' numbers may be within it), how many, why, of which
 * hooks. count 0: empty. The plugin writes it as a row (plugin_rows.h). */
typedef struct drop_ledger {
    uint64_t first_seq, last_seq, count;
    uint64_t reason[DROP_REASONS];
    uint64_t hook[EVENT_KINDS];
} drop_ledger_t;

typedef struct queue {
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* the writer waits here */
    size_t count, bytes;       /* queued in the journal, not yet read */
    uint64_t per_hook[EVENT_KINDS];   /* ... of each hook (what a writer stop leaves) */
    int64_t oldest_us;         /* ts of the first of them (writer: at least as old) */
    int bounded;               /* the journal is in memory: max_events/max_bytes apply */
    size_t taken;              /* popped, not yet settled by the writer (see queue_settled) */
    size_t max_events, max_bytes;
    size_t wake_at;            /* signal the writer at this many events */
    size_t peak_count, peak_bytes;
    uint64_t last_seq;         /* the last sequence number handed out */
    uint64_t dropped;          /* events refused (any drop_reason) */
    uint64_t dropped_stopped;  /* ... of them DROP_STOPPED (also in dropped) */
    uint64_t dropped_too_large;   /* ... of them DROP_TOO_LARGE (also in dropped) */
    journal_t *j;              /* events go here; none is queued without it */
    int flush_req;             /* write what is queued now */
    int stop;
    int closed;                /* after the last row: every add is a drop (DROP_STOPPED) */
    int held;                  /* the last pop returned nothing, events queued (queue_held_back) */
    drop_ledger_t drops;
} queue_t;

int queue_init(queue_t *q, size_t max_events, size_t max_bytes, size_t wake_at);
/* Frees whatever is still queued. */
void queue_destroy(queue_t *q);
void queue_set_limits(queue_t *q, size_t max_events, size_t max_bytes, size_t wake_at);

/* 1 when the queue in memory is at its limit (unlocked read, a hint for
 * callers that want to skip building an event that would be dropped). */
int queue_full_hint(const queue_t *q);
/* The hook path: builds the event from in into the journal and queues it
 * with the next sequence number. 0: queued; 1: dropped, no room (queue or
 * journal full); 2: dropped, out of memory; 3: dropped, the queue is
 * closed or has no journal (the plugin stopped); 4: dropped, larger than
 * a journal segment takes. A drop consumes its number and is in the
 * ledger. */
int queue_add(queue_t *q, const event_in_t *in, uint64_t *seq);
/* queue_add of the last event before a stop: once it has its number,
 * every later add is a drop (3) until queue_open. It goes past the queue's
 * limits, into the room each journal segment keeps for it. Same results. */
int queue_add_last(queue_t *q, const event_in_t *in, uint64_t *seq);
/* queue_add, except that without room it takes no number and counts no
 * drop (1): the caller tries again later */
int queue_add_if_room(queue_t *q, const event_in_t *in, uint64_t *seq);
void queue_open(queue_t *q);
/* From now on events go to the journal j (the queue is empty: none is
 * queued without one). */
void queue_attach_journal(queue_t *q, journal_t *j);
/* The events of earlier starts the attached journal took over since
 * (journal_recover) are queued too, read before the others. The writer
 * thread, or its starter before it reads. */
void queue_take_earlier(queue_t *q);
/* Events stop going to the journal; waits for those being written into
 * it; the journal's events not yet read leave the queue (they stay on
 * disk for the next start): their number, each counted in
 * per_hook[hook] (EVENT_KINDS of them; may be NULL), from counts kept as
 * they were queued and read: nothing is read here, so a stop with any
 * backlog takes no longer. The writer thread only. */
size_t queue_detach_journal(queue_t *q, uint64_t *per_hook);
/* The writer is done with ev (written or dead-lettered): its space in the
 * journal may go. The _list form follows the next links. */
void queue_release(event_t *ev);
void queue_release_list(event_t *ev);
/* The writer leaves ev unwritten at a stop: it stays on disk for the next
 * start (1), or with the journal in memory is lost (0). */
int queue_leave(event_t *ev);
/* Counts a drop of an event of this hook that was never built (enum
 * drop_reason); returns its number. */
uint64_t queue_drop(queue_t *q, int hook, int reason);
/* Takes the drops since the last take into *out and empties the ledger:
 * 1, or 0 when there were none. */
int queue_take_drops(queue_t *q, drop_ledger_t *out);
/* Puts taken drops back (their row could not be queued). */
void queue_return_drops(queue_t *q, const drop_ledger_t *d);

/* Writer side: waits until wake_at events are queued, a flush or stop is
 * asked, or timeout_ms passes; then takes up to max events (in order, all
 * of one origin: queue_event_origin; journal events read as copies, about
 * POP_BYTES of them at most) and returns them as a list (NULL when none,
 * or when the first is still being written by its hook after 100 ms).
 * *n gets their count. */
event_t *queue_pop(queue_t *q, size_t max, int timeout_ms, size_t *n);
#define POP_BYTES (32u << 20)
/* 1 when the last queue_pop returned nothing though events are queued:
 * a copy found no memory, or the first is still being written */
int queue_held_back(queue_t *q);
/* The incarnation an event was recorded in (earlier starts' files hold
 * other incarnations'). */
int64_t queue_event_origin(const event_t *ev);
/* 1 when queue_pop would return at once: a batch (wake_at events) is
 * waiting, or a flush or stop is asked. */
int queue_ready(queue_t *q);
/* ... and its first event is of this origin */
int queue_ready_from(queue_t *q, int64_t origin);
/* The events popped so far are accounted for elsewhere now (in flight,
 * spooled or gone): until then they count as taken, so a reader of
 * count + taken + the writer's in-flight count never sees them nowhere. */
void queue_settled(queue_t *q);
void queue_request_flush(queue_t *q);
void queue_request_stop(queue_t *q);

typedef struct queue_stats {
    size_t count, bytes, peak_count, peak_bytes, taken;
    uint64_t last_seq, dropped, dropped_stopped, dropped_too_large;
    int64_t oldest_us;         /* ts of the queue's first event, 0: empty */
} queue_stats_t;
void queue_get_stats(queue_t *q, queue_stats_t *st);
/* peaks start again from the current depth (at plugin start) */
void queue_reset_peaks(queue_t *q);

#endif
