/* queue.c - bounded event queue (see queue.h). Lock held only for list
 * operations and counters; never across I/O or allocation. */
#include "queue.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "deadline.h"

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

void queue_destroy(queue_t *q)
{
    event_free_list(q->head);
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
    return __atomic_load_n(&q->count, __ATOMIC_RELAXED) >=
           __atomic_load_n(&q->max_events, __ATOMIC_RELAXED);
}

int queue_push(queue_t *q, event_t *ev, uint64_t *seq)
{
    int wake = 0;

    pthread_mutex_lock(&q->mu);
    *seq = ++q->last_seq;
    if (q->count >= q->max_events || q->bytes + ev->bytes > q->max_bytes) {
        q->dropped++;
        pthread_mutex_unlock(&q->mu);
        return 1;
    }
    ev->seq = *seq;
    ev->next = NULL;
    if (q->tail)
        q->tail->next = ev;
    else
        q->head = ev;
    q->tail = ev;
    __atomic_store_n(&q->count, q->count + 1, __ATOMIC_RELAXED);
    q->bytes += ev->bytes;
    if (q->count > q->peak_count)
        q->peak_count = q->count;
    if (q->bytes > q->peak_bytes)
        q->peak_bytes = q->bytes;
    wake = (q->count == q->wake_at);
    pthread_mutex_unlock(&q->mu);
    if (wake)
        pthread_cond_signal(&q->cv);
    return 0;
}

uint64_t queue_drop(queue_t *q)
{
    uint64_t seq;

    pthread_mutex_lock(&q->mu);
    seq = ++q->last_seq;
    q->dropped++;
    pthread_mutex_unlock(&q->mu);
    return seq;
}

event_t *queue_pop(queue_t *q, size_t max, int timeout_ms, size_t *n)
{
    struct timespec deadline;
    event_t *first, *last;
    size_t k = 0;

    deadline_after(&deadline, timeout_ms);
    pthread_mutex_lock(&q->mu);
    while (q->count < q->wake_at && !q->flush_req && !q->stop) {
        if (pthread_cond_timedwait(&q->cv, &q->mu, &deadline) == ETIMEDOUT)
            break;
    }
    first = q->head;
    last = NULL;
    while (q->head && k < max) {
        last = q->head;
        q->head = last->next;
        q->bytes -= last->bytes;
        k++;
    }
    if (last)
        last->next = NULL;
    if (!q->head) {
        q->tail = NULL;
        q->flush_req = 0;
    }
    __atomic_store_n(&q->count, q->count - k, __ATOMIC_RELAXED);
    q->taken += k;
    pthread_mutex_unlock(&q->mu);
    *n = k;
    return k ? first : NULL;
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
    pthread_mutex_unlock(&q->mu);
}

void queue_reset_peaks(queue_t *q)
{
    pthread_mutex_lock(&q->mu);
    q->peak_count = q->count;
    q->peak_bytes = q->bytes;
    pthread_mutex_unlock(&q->mu);
}
