/* wlog.h - how the writer and the compressor log: a callback the NIF
 * gives them (it hands the line to the VM's logger). */
#ifndef VMQ_PGEV_WLOG_H
#define VMQ_PGEV_WLOG_H

enum writer_log_level { WLOG_INFO, WLOG_WARNING, WLOG_ERROR };
typedef void (*writer_log_fn)(void *ctx, int level, const char *msg);
/* formats a log line (at most 511 bytes) and hands it to log, if any */
void writer_logf(writer_log_fn log, void *ctx, int level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
