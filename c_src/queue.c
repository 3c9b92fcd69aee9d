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
#define WRITING_WAIT_US 100000   /* ... and at most this long for a record a hook is writing */

int queue_init(queue_t *q, size_t max_events, size_t max_bytes, size_t wake_at)
{
    pthread_condattr_t ca;
    pthread_mutexattr_t ma;
    int rc;

    memset(q, 0, sizeof *q);
    /* held for a few counters: a hook that finds it taken spins briefly
     * rather than sleep in the kernel and be woken by the other */
    if (pthread_mutexattr_init(&ma) != 0)
        return -1;
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    rc = pthread_mutex_init(&q->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    if (rc != 0)
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
    journal_release(ev);
}

int queue_leave(event_t *ev)
{
    return journal_forget(ev);
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
    /* on disk, the journal decides */
    return __atomic_load_n(&q->bounded, __ATOMIC_RELAXED) &&
           __atomic_load_n(&q->count, __ATOMIC_RELAXED) >=
               __atomic_load_n(&q->max_events, __ATOMIC_RELAXED);
}

/* to[h] += from[h] for every hook */
static void add_hooks(uint64_t *to, const uint64_t *from)
{
    for (int h = 0; h < EVENT_KINDS; h++)
        to[h] += from[h];
}

/* counts n events of `bytes` in; the lock is held. 1: wake the writer */
static int count_in(queue_t *q, size_t n, size_t bytes)
{
    __atomic_store_n(&q->count, q->count + n, __ATOMIC_RELAXED);
    q->bytes += bytes;
    if (q->count > q->peak_count)
        q->peak_count = q->count;
    if (q->bytes > q->peak_bytes)
        q->peak_bytes = q->bytes;
    return q->count == q->wake_at;
}

/* a drop of an event of this hook: its number, counted; the lock is held */
static uint64_t drop_locked(queue_t *q, int hook, int reason)
{
    uint64_t seq = ++q->last_seq;

    q->dropped++;
    if (reason == DROP_STOPPED)
        q->dropped_stopped++;
    if (reason == DROP_TOO_LARGE)
        q->dropped_too_large++;
    if (q->drops.count++ == 0)
        q->drops.first_seq = seq;
    q->drops.last_seq = seq;
    q->drops.reason[reason]++;
    if (hook >= 0 && hook < EVENT_KINDS)
        q->drops.hook[hook]++;
    return seq;
}

/* add's ways */
#define ADD_LAST 1      /* the last event: close the queue behind it */
#define ADD_IF_ROOM 2   /* no room: not queued, no number taken, no drop */

/* queue_add, queue_add_last, queue_add_if_room */
static int add(queue_t *q, const event_in_t *in, uint64_t *seq, int how)
{
    event_layout_t lay;
    journal_t *j;
    event_t *ev = NULL;
    uint32_t salt = 0;
    int rc = 0, wake, wake_journal = 0;

    if (event_layout(in, &lay) != 0) {
        *seq = queue_drop(q, in->hook, DROP_NO_MEMORY);
        return 2;
    }
    pthread_mutex_lock(&q->mu);
    j = q->j;
    if (q->closed || !j)
        rc = 3;
    else if (!journal_fits(j, lay.total, how & ADD_LAST ? JR_LAST : 0))
        rc = 4;   /* never, whatever the room */
    else if (!(how & ADD_LAST) && q->bounded &&
             (q->count >= q->max_events || q->bytes + lay.total > q->max_bytes))
        rc = 1;   /* in memory: the queue's limits */
    else if (!(ev = journal_reserve(j, lay.total,
                                    how & ADD_LAST ? JR_LAST : how & ADD_IF_ROOM ? 0 : JR_COUNT,
                                    &wake_journal, &salt)))
        rc = 1;
    if (rc) {
        /* the journal told under the queue lock, as once that is let go
         * a writer stop may close it */
        if (wake_journal)
            journal_wake(j);
        if (!(how & ADD_IF_ROOM))   /* a plugin row waiting for room is no drop */
            *seq = drop_locked(q, in->hook, rc == 3 ? DROP_STOPPED : rc == 4 ? DROP_TOO_LARGE : DROP_NO_ROOM);
        pthread_mutex_unlock(&q->mu);
        return rc;
    }
    *seq = ++q->last_seq;
    q->closed = how & ADD_LAST;
    if (q->count == 0)
        q->oldest_us = in->ts_us;
    if ((unsigned)in->hook < EVENT_KINDS)
        q->per_hook[in->hook]++;
    wake = count_in(q, 1, lay.total);
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
    if (d->count == 0)
        return;
    pthread_mutex_lock(&q->mu);
    if (q->drops.count == 0 || d->first_seq < q->drops.first_seq)
        q->drops.first_seq = d->first_seq;
    if (q->drops.count == 0 || d->last_seq > q->drops.last_seq)
        q->drops.last_seq = d->last_seq;
    q->drops.count += d->count;
    for (int i = 0; i < DROP_REASONS; i++)
        q->drops.reason[i] += d->reason[i];
    add_hooks(q->drops.hook, d->hook);
    pthread_mutex_unlock(&q->mu);
}

int64_t queue_event_origin(const event_t *ev)
{
    return journal_event_incarnation(ev);
}

void queue_attach_journal(queue_t *q, journal_t *j)
{
    pthread_mutex_lock(&q->mu);
    __atomic_store_n(&q->bounded, journal_in_memory(j), __ATOMIC_RELAXED);
    __atomic_store_n(&q->j, j, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&q->mu);
}

void queue_take_earlier(queue_t *q)
{
    uint64_t per_hook[EVENT_KINDS];
    size_t bytes, n = journal_take_recovered(q->j, &bytes, per_hook);
    int64_t ts = 0;

    if (!n)
        return;
    (void)journal_peek(q->j, NULL, &ts);   /* read first: the oldest */
    pthread_mutex_lock(&q->mu);
    (void)count_in(q, n, bytes);
    add_hooks(q->per_hook, per_hook);
    q->oldest_us = ts;
    pthread_mutex_unlock(&q->mu);
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
    n = q->count;   /* nothing is read: counted as they came */
    if (per_hook)
        add_hooks(per_hook, q->per_hook);
    memset(q->per_hook, 0, sizeof q->per_hook);
    __atomic_store_n(&q->count, 0, __ATOMIC_RELAXED);
    q->bytes = 0;
    q->oldest_us = 0;
    __atomic_store_n(&q->bounded, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&q->mu);
    return n;
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

/* The journal's events, read as copies without the lock (only the writer
 * reads the journal). 0 events: the first is still being written by its
 * hook, or is of this start where the last was of an earlier one's files
 * (the next call reads it); or, with *nomem, no memory for a copy. */
static event_t *pop_journal(queue_t *q, size_t max, size_t *n, int *nomem)
{
    journal_t *j = q->j;
    event_t *first, *tail;
    size_t bytes;
    int64_t ts = 0;
    uint64_t per_hook[EVENT_KINDS] = {0};

    pthread_mutex_unlock(&q->mu);
    first = journal_read(j, max, POP_BYTES, n, &bytes, per_hook, &tail, nomem);
    if (first && !journal_peek(j, NULL, &ts))
        ts = tail->ts_us;   /* the next is being written: none is older than this */
    pthread_mutex_lock(&q->mu);
    if (first) {
        for (int h = 0; h < EVENT_KINDS; h++)
            q->per_hook[h] -= per_hook[h];
        __atomic_store_n(&q->count, q->count - *n, __ATOMIC_RELAXED);
        q->bytes -= bytes;
        q->oldest_us = q->count ? ts : 0;
    }
    return first;
}

event_t *queue_pop(queue_t *q, size_t max, int timeout_ms, size_t *n)
{
    struct timespec deadline;
    event_t *first = NULL;
    size_t k = 0;
    int nomem = 0, held = 0;
    int64_t give_up = 0;

    deadline_after(&deadline, timeout_ms);
    pthread_mutex_lock(&q->mu);
    while (!ready_locked(q)) {
        if (pthread_cond_timedwait(&q->cv, &q->mu, &deadline) == ETIMEDOUT)
            break;
    }
    while (q->count && max) {
        first = pop_journal(q, max, &k, &nomem);
        if (k)
            break;
        if (nomem) {
            /* no memory for a copy: NULL after a while (a stop ends it) */
            deadline_after(&deadline, NOMEM_WAIT_MS);
            pthread_cond_timedwait(&q->cv, &q->mu, &deadline);
            break;
        }
        /* the first is being written by its hook: microseconds; a record
         * never committed (a count that is wrong) ends the wait, not the
         * writer */
        if (!give_up)
            give_up = mono_us() + WRITING_WAIT_US;
        else if (mono_us() >= give_up) {
            held = 1;
            break;
        }
        pthread_mutex_unlock(&q->mu);
        sched_yield();
        pthread_mutex_lock(&q->mu);
    }
    q->held = held || nomem;
    if (q->count == 0)
        q->flush_req = 0;
    q->taken += k;
    pthread_mutex_unlock(&q->mu);
    *n = k;
    return k ? first : NULL;
}

int queue_held_back(queue_t *q)
{
    int held;

    pthread_mutex_lock(&q->mu);
    held = q->held;
    pthread_mutex_unlock(&q->mu);
    return held;
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
    int ready;

    pthread_mutex_lock(&q->mu);
    ready = ready_locked(q) && q->count;
    j = q->j;
    pthread_mutex_unlock(&q->mu);
    /* the journal's position is the writer's own, read without the lock */
    return ready && journal_peek(j, &first, NULL) && first == origin;
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
    st->dropped_stopped = q->dropped_stopped;
    st->dropped_too_large = q->dropped_too_large;
    st->oldest_us = q->count ? q->oldest_us : 0;
    pthread_mutex_unlock(&q->mu);
}

void queue_reset_peaks(queue_t *q)
{
    pthread_mutex_lock(&q->mu);
    q->peak_count = q->count;
    q->peak_bytes = q->bytes;
    pthread_mutex_unlock(&q->mu);
}
