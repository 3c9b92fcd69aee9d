/* wlog.c - formatting a log line for the callback (see wlog.h). */
#include "wlog.h"

#include <stdarg.h>
#include <stdio.h>

void writer_logf(writer_log_fn log, void *ctx, int level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (!log)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log(ctx, level, msg);
}
