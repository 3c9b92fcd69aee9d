/* queue.c - bounded event queue (see queue.h). Lock held only for list
 * operations and counters; never across I/O or allocation. */
#include "queue.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deadline.h"

#define NOMEM_WAIT_MS 100   /* the writer waits this long when a copy finds no memory */

int queue_init(queue_t *q, size_t max_events, size_t max_bytes, size_t wake_at)
{
    pthread_condattr_t ca;

    memset(q, 0, sizeof *q);
    if (pthread_mutex_init(&q->mu, NULL) != 0)
        return -1;
    if (pthread_condattr_init(&ca) != 0)
        goto out_mutex;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_cond_init(&q->cv, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        goto out_mutex;
    }
    pthread_condattr_destroy(&ca);
    queue_set_limits(q, max_events, max_bytes, wake_at);
    return 0;
out_mutex:
    pthread_mutex_destroy(&q->mu);
    return -1;
}

void queue_release(event_t *ev)
{
    if (ev->home == EV_JOURNAL)
        journal_release(ev);
    else
        free(ev);
}

int queue_leave(event_t *ev)
{
    if (ev->home == EV_JOURNAL) {
        journal_forget(ev);
        return 1;
    }
    free(ev);
    return 0;
}

void queue_release_list(event_t *ev)
{
    while (ev) {
        event_t *next = ev->next;
        queue_release(ev);
        ev = next;
    }
}

void queue_destroy(queue_t *q)
{
    queue_release_list(q->head);
    q->head = q->tail = NULL;
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
}

void queue_set_limits(queue_t *q, size_t max_events, size_t max_bytes, size_t wake_at)
{
    pthread_mutex_lock(&q->mu);
    __atomic_store_n(&q->max_events, max_events ? max_events : 1, __ATOMIC_RELAXED);
    q->max_bytes = max_bytes ? max_bytes : 1;
    q->wake_at = wake_at ? wake_at : 1;
    pthread_mutex_unlock(&q->mu);
}

int queue_full_hint(const queue_t *q)
{
    if (__atomic_load_n(&q->j, __ATOMIC_RELAXED))
        return 0;   /* the journal decides */
    return __atomic_load_n(&q->count, __ATOMIC_RELAXED) >=
           __atomic_load_n(&q->max_events, __ATOMIC_RELAXED);
}

/* counts an event of `bytes` in; the lock is held. 1: wake the writer */
static int count_in(queue_t *q, size_t bytes)
{
    __atomic_store_n(&q->count, q->count + 1, __ATOMIC_RELAXED);
    q->bytes += bytes;
    if (q->count > q->peak_count)
        q->peak_count = q->count;
    if (q->bytes > q->peak_bytes)
        q->peak_bytes = q->bytes;
    return q->count == q->wake_at;
}

/* links ev (in memory, its seq set) at the tail; the lock is held. 1:
 * wake the writer */
static int link_tail(queue_t *q, event_t *ev)
{
    ev->next = NULL;
    if (q->tail)
        __atomic_store_n(&q->tail->next, ev, __ATOMIC_RELEASE);   /* queue_pop walks unlocked */
    else
        q->head = ev;
    q->tail = ev;
    if (q->j && !q->heap_after)
        q->heap_after = ev;   /* written after the journal's events */
    return count_in(q, ev->bytes);
}

/* a drop of an event of this hook: its number, counted; the lock is held */
static uint64_t drop_locked(queue_t *q, int hook, int reason)
{
    uint64_t seq = ++q->last_seq;

    q->dropped++;
    if (q->drops.count++ == 0)
        q->drops.first_seq = seq;
    q->drops.last_seq = seq;
    q->drops.reason[reason]++;
    if (hook >= 0 && hook < EVENT_KINDS)
        q->drops.hook[hook]++;
    return seq;
}

/* add's and push's ways */
#define ADD_LAST 1      /* the last event: close the queue behind it */
#define ADD_IF_ROOM 2   /* no room: not queued, no number taken, no drop */

static int push(queue_t *q, event_t *ev, uint64_t *seq, int how);

/* queue_add, queue_add_last, queue_add_if_room */
static int add(queue_t *q, const event_in_t *in, uint64_t *seq, int how)
{
    event_layout_t lay;
    journal_t *j;
    event_t *ev;
    uint32_t salt = 0;
    int wake, wake_journal = 0;

    if (event_layout(in, &lay) != 0) {
        *seq = queue_drop(q, in->hook, DROP_NO_MEMORY);
        return 2;
    }
    pthread_mutex_lock(&q->mu);
    if (q->closed) {
        if (!(how & ADD_IF_ROOM))   /* a plugin row waiting for room is no drop */
            *seq = drop_locked(q, in->hook, DROP_STOPPED);
        pthread_mutex_unlock(&q->mu);
        return 3;
    }
    j = q->j;
    ev = j ? journal_reserve(j, lay.total, !(how & (ADD_IF_ROOM | ADD_LAST)), &wake_journal, &salt)
           : NULL;
    if (j && !ev) {
        /* no room (rare): the journal told under the queue lock, as once
         * that is let go a writer stop may close it */
        if (wake_journal)
            journal_wake(j);
        if (!(how & ADD_LAST)) {
            if (!(how & ADD_IF_ROOM))
                *seq = drop_locked(q, in->hook, DROP_NO_ROOM);
            pthread_mutex_unlock(&q->mu);
            return 1;
        }
    }
    if (ev) {
        *seq = ++q->last_seq;
        q->closed = how & ADD_LAST;
        if (q->jcount++ == 0)
            q->joldest_us = in->ts_us;
        q->jbytes += lay.total;
        if ((unsigned)in->hook < EVENT_KINDS)
            q->jhook[in->hook]++;
        wake = count_in(q, lay.total);
        pthread_mutex_unlock(&q->mu);
        if (wake_journal)
            journal_wake(j);   /* j stays open until the event is committed (journal_busy) */
        event_fill(ev, in, &lay);
        ev->home = EV_JOURNAL;
        ev->seq = *seq;
        journal_commit(j, ev, salt);
        if (wake)
            pthread_cond_signal(&q->cv);
        return 0;
    }
    /* no journal; or the last row, which a full journal has no room for,
     * goes in memory: written if the stop's time allows */
    pthread_mutex_unlock(&q->mu);
    ev = malloc(lay.total);
    if (!ev) {
        *seq = queue_drop(q, in->hook, DROP_NO_MEMORY);
        return 2;
    }
    ev->next = NULL;
    ev->home = EV_HEAP;
    event_fill(ev, in, &lay);
    switch (push(q, ev, seq, how)) {
    case 0:
        return 0;
    case 3:
        free(ev);
        return 3;
    default:
        free(ev);
        return 1;
    }
}

int queue_add(queue_t *q, const event_in_t *in, uint64_t *seq)
{
    return add(q, in, seq, 0);
}

int queue_add_last(queue_t *q, const event_in_t *in, uint64_t *seq)
{
    return add(q, in, seq, ADD_LAST);
}

int queue_add_if_room(queue_t *q, const event_in_t *in, uint64_t *seq)
{
    return add(q, in, seq, ADD_IF_ROOM);
}

void queue_open(queue_t *q)
{
    pthread_mutex_lock(&q->mu);
    q->closed = 0;
    pthread_mutex_unlock(&q->mu);
}

int queue_take_drops(queue_t *q, drop_ledger_t *out)
{
    pthread_mutex_lock(&q->mu);
    *out = q->drops;
    memset(&q->drops, 0, sizeof q->drops);
    pthread_mutex_unlock(&q->mu);
    return out->count > 0;
}

void queue_return_drops(queue_t *q, const drop_ledger_t *d)
{
    int i;

    if (d->count == 0)
        return;
    pthread_mutex_lock(&q->mu);
    if (q->drops.count == 0 || d->first_seq < q->drops.first_seq)
        q->drops.first_seq = d->first_seq;
    if (q->drops.count == 0 || d->last_seq > q->drops.last_seq)
        q->drops.last_seq = d->last_seq;
    q->drops.count += d->count;
    for (i = 0; i < DROP_REASONS; i++)
        q->drops.reason[i] += d->reason[i];
    for (i = 0; i < EVENT_KINDS; i++)
        q->drops.hook[i] += d->hook[i];
    pthread_mutex_unlock(&q->mu);
}

int64_t queue_event_origin(const event_t *ev)
{
    return ev->home == EV_JOURNAL ? journal_event_incarnation(ev) : 0;
}

void queue_attach_journal(queue_t *q, journal_t *j)
{
    uint64_t per_hook[EVENT_KINDS];
    size_t bytes, n = journal_take_recovered(j, &bytes, per_hook);
    int64_t ts = 0;

    if (n)
        (void)journal_peek(j, NULL, &ts);
    pthread_mutex_lock(&q->mu);
    /* earlier starts' events are read first (queue_pop), then what is in
     * memory now, then the journal's new ones */
    __atomic_store_n(&q->count, q->count + n, __ATOMIC_RELAXED);
    q->bytes += bytes;
    q->jcount = n;
    q->jbytes = bytes;
    memcpy(q->jhook, per_hook, sizeof q->jhook);
    q->joldest_us = ts;
    q->heap_after = NULL;
    if (q->count > q->peak_count)
        q->peak_count = q->count;
    if (q->bytes > q->peak_bytes)
        q->peak_bytes = q->bytes;
    __atomic_store_n(&q->j, j, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&q->mu);
    if (n)
        pthread_cond_signal(&q->cv);
}

size_t queue_detach_journal(queue_t *q, uint64_t *per_hook)
{
    journal_t *j;
    size_t n;

    pthread_mutex_lock(&q->mu);
    j = q->j;
    __atomic_store_n(&q->j, NULL, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&q->mu);
    if (!j)
        return 0;
    while (journal_busy(j))
        sched_yield();   /* a hook is copying its event: microseconds */
    pthread_mutex_lock(&q->mu);
    n = q->jcount;   /* nothing is read: counted as they came */
    if (per_hook)
        for (int h = 0; h < EVENT_KINDS; h++)
            per_hook[h] += q->jhook[h];
    memset(q->jhook, 0, sizeof q->jhook);
    __atomic_store_n(&q->count, q->count - q->jcount, __ATOMIC_RELAXED);
    q->bytes -= q->jbytes;
    q->jcount = q->jbytes = 0;
    q->joldest_us = 0;
    q->heap_after = NULL;
    pthread_mutex_unlock(&q->mu);
    return n;
}

static int push(queue_t *q, event_t *ev, uint64_t *seq, int how)
{
    int wake = 0;

    pthread_mutex_lock(&q->mu);
    if (q->closed) {
        if (!(how & ADD_IF_ROOM))
            *seq = drop_locked(q, ev->hook, DROP_STOPPED);
        pthread_mutex_unlock(&q->mu);
        return 3;
    }
    if (!(how & ADD_LAST) && (q->count >= q->max_events || q->bytes + ev->bytes > q->max_bytes)) {
        if (!(how & ADD_IF_ROOM))
            *seq = drop_locked(q, ev->hook, DROP_NO_ROOM);
        pthread_mutex_unlock(&q->mu);
        return 1;
    }
    *seq = ++q->last_seq;
    q->closed = how & ADD_LAST;
    ev->seq = *seq;
    wake = link_tail(q, ev);
    pthread_mutex_unlock(&q->mu);
    if (wake)
        pthread_cond_signal(&q->cv);
    return 0;
}

int queue_push(queue_t *q, event_t *ev, uint64_t *seq)
{
    return push(q, ev, seq, 0) == 0 ? 0 : 1;
}

uint64_t queue_drop(queue_t *q, int hook, int reason)
{
    uint64_t seq;

    pthread_mutex_lock(&q->mu);
    seq = drop_locked(q, hook, reason);
    pthread_mutex_unlock(&q->mu);
    return seq;
}

/* a batch is waiting, or a flush or stop is asked; the lock is held */
static int ready_locked(const queue_t *q)
{
    return q->count >= q->wake_at || q->flush_req || q->stop;
}

/* where the next batch comes from; the lock is held */
enum { FROM_NONE, FROM_HEAP, FROM_JOURNAL };

static int source_locked(queue_t *q)
{
    if (q->jcount && journal_reading_old(q->j))
        return FROM_JOURNAL;   /* earlier starts' events first */
    if (q->head && q->head != q->heap_after)
        return FROM_HEAP;      /* queued in memory before the journal's */
    if (q->jcount)
        return FROM_JOURNAL;
    return q->head ? FROM_HEAP : FROM_NONE;
}

/* The events in memory: the walk runs without the lock, so a hook never
 * waits for it: only the writer takes events off the head, and a hook
 * links a new tail with a release store after filling it in. Up to the
 * first queued after the journal's events, unless it is the head. */
static event_t *pop_heap(queue_t *q, size_t max, size_t *n)
{
    event_t *first = q->head, *stop = first == q->heap_after ? NULL : q->heap_after;
    event_t *end = q->tail, *last = NULL, *cur;
    size_t k = 0, bytes = 0;

    /* not past the tail now: one linked meanwhile may come after journal
     * events (heap_after) */
    pthread_mutex_unlock(&q->mu);
    for (cur = first; cur && cur != stop && k < max;
         cur = cur == end ? NULL : __atomic_load_n(&cur->next, __ATOMIC_ACQUIRE)) {
        last = cur;
        bytes += cur->bytes;
        k++;
    }
    pthread_mutex_lock(&q->mu);
    if (first == q->heap_after)
        q->heap_after = last->next;   /* the rest (past max, or linked since) are
                                       * after the journal's too */
    q->head = last->next;       /* hooks may have linked more since the walk */
    last->next = NULL;
    if (!q->head)
        q->tail = NULL;
    q->bytes -= bytes;
    *n = k;
    return first;
}

/* The journal's events, read as copies without the lock (only the writer
 * reads the journal). 0 events: the first is still being written by its
 * hook, or is of this start where the last was of an earlier one's files
 * (source_locked decides again); or, with *nomem, no memory for a copy. */
static event_t *pop_journal(queue_t *q, size_t max, size_t *n, int *nomem)
{
    journal_t *j = q->j;
    event_t *first, *tail;
    size_t bytes;
    int64_t ts = 0;

    uint64_t per_hook[EVENT_KINDS] = {0};
    event_t *ev;

    pthread_mutex_unlock(&q->mu);
    first = journal_read(j, max, POP_BYTES, n, &bytes, &tail, nomem);
    if (first && !journal_peek(j, NULL, &ts))
        ts = tail->ts_us;   /* the next is being written: none is older than this */
    for (ev = first; ev; ev = ev->next)
        if (ev->hook < EVENT_KINDS)
            per_hook[ev->hook]++;
    pthread_mutex_lock(&q->mu);
    if (first) {
        for (int h = 0; h < EVENT_KINDS; h++)
            q->jhook[h] -= per_hook[h];
        q->jcount -= *n;
        q->jbytes -= bytes;
        q->bytes -= bytes;
        q->joldest_us = q->jcount ? ts : 0;
    }
    return first;
}

event_t *queue_pop(queue_t *q, size_t max, int timeout_ms, size_t *n)
{
    struct timespec deadline;
    event_t *first = NULL;
    size_t k = 0;
    int nomem = 0;

    deadline_after(&deadline, timeout_ms);
    pthread_mutex_lock(&q->mu);
    while (!ready_locked(q)) {
        if (pthread_cond_timedwait(&q->cv, &q->mu, &deadline) == ETIMEDOUT)
            break;
    }
    for (;;) {
        int from = source_locked(q);
        if (from == FROM_NONE || max == 0)
            break;
        first = from == FROM_HEAP ? pop_heap(q, max, &k) : pop_journal(q, max, &k, &nomem);
        if (k)
            break;
        if (nomem) {
            /* no memory for a copy: NULL after a while (a stop ends it) */
            deadline_after(&deadline, NOMEM_WAIT_MS);
            pthread_cond_timedwait(&q->cv, &q->mu, &deadline);
            break;
        }
        pthread_mutex_unlock(&q->mu);
        sched_yield();   /* the first is being written by its hook: microseconds */
        pthread_mutex_lock(&q->mu);
    }
    q->nomem = nomem;
    if (q->count == k)
        q->flush_req = 0;
    __atomic_store_n(&q->count, q->count - k, __ATOMIC_RELAXED);
    q->taken += k;
    pthread_mutex_unlock(&q->mu);
    *n = k;
    return k ? first : NULL;
}

int queue_short_of_memory(queue_t *q)
{
    int nomem;

    pthread_mutex_lock(&q->mu);
    nomem = q->nomem;
    pthread_mutex_unlock(&q->mu);
    return nomem;
}

int queue_ready(queue_t *q)
{
    int ready;

    pthread_mutex_lock(&q->mu);
    ready = ready_locked(q);
    pthread_mutex_unlock(&q->mu);
    return ready;
}

int queue_ready_from(queue_t *q, int64_t origin)
{
    journal_t *j;
    int64_t first;
    int from = FROM_NONE;

    pthread_mutex_lock(&q->mu);
    if (ready_locked(q))
        from = source_locked(q);
    j = q->j;
    pthread_mutex_unlock(&q->mu);
    /* the head in memory is stable (only the writer takes it); the
     * journal's position is the writer's own, read without the lock */
    if (from == FROM_HEAP)
        return origin == 0;
    return from == FROM_JOURNAL && journal_peek(j, &first, NULL) && first == origin;
}

void queue_settled(queue_t *q)
{
    pthread_mutex_lock(&q->mu);
    q->taken = 0;
    pthread_mutex_unlock(&q->mu);
}

void queue_request_flush(queue_t *q)
{
    pthread_mutex_lock(&q->mu);
    q->flush_req = 1;
    pthread_mutex_unlock(&q->mu);
    pthread_cond_signal(&q->cv);
}

void queue_request_stop(queue_t *q)
{
    pthread_mutex_lock(&q->mu);
    q->stop = 1;
    pthread_mutex_unlock(&q->mu);
    pthread_cond_broadcast(&q->cv);
}

void queue_get_stats(queue_t *q, queue_stats_t *st)
{
    pthread_mutex_lock(&q->mu);
    st->count = q->count;
    st->taken = q->taken;
    st->bytes = q->bytes;
    st->peak_count = q->peak_count;
    st->peak_bytes = q->peak_bytes;
    st->last_seq = q->last_seq;
    st->dropped = q->dropped;
    st->oldest_us = q->head ? q->head->ts_us : 0;
    if (q->jcount && (!st->oldest_us || q->joldest_us < st->oldest_us))
        st->oldest_us = q->joldest_us;
    pthread_mutex_unlock(&q->mu);
}

void queue_reset_peaks(queue_t *q)
{
    pthread_mutex_lock(&q->mu);
    q->peak_count = q->count;
    q->peak_bytes = q->bytes;
    pthread_mutex_unlock(&q->mu);
}
