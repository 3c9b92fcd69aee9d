/* deadline.h - the clocks every thread uses: the wall clock and the
 * monotonic clock in microseconds and milliseconds (one vDSO call each),
 * and a CLOCK_MONOTONIC time ms from now, for timed waits. */
#ifndef VMQ_PGEV_DEADLINE_H
#define VMQ_PGEV_DEADLINE_H

#include <stdint.h>
#include <time.h>

/* the host's wall clock (row timestamps, status ages) */
static inline int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline int64_t mono_ms(void)
{
    return mono_us() / 1000;
}

static inline void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

#endif
