/* deadline.h - a CLOCK_MONOTONIC time ms from now, for timed waits
 * (queue.c, writer.c, compress.c). Any thread. */
#ifndef VMQ_PGEV_DEADLINE_H
#define VMQ_PGEV_DEADLINE_H

#include <time.h>

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
