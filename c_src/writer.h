/* writer.h - the writer thread: owns the one libpq connection and writes
 * queued events to PostgreSQL in batches with COPY BINARY.
 *
 * Nothing but the writer thread touches the PGconn. Status is read by other
 * threads under the writer's status lock. Messages for the operator go
 * through the log callback, called on the writer thread only. Knows
 * nothing of erl_nif. */
#ifndef VMQ_PGEV_WRITER_H
#define VMQ_PGEV_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "hooks.h"
#include "queue.h"
#include "wlog.h"


typedef struct writer_config {
    const char *conninfo;     /* libpq connection string or URI; "" = PG* env */
    const char *table;
    const char *schema_sql;   /* run at connect; NULL: the DBA manages it */
    const char *node;
    int64_t incarnation;
    size_t batch_size;
    int flush_interval_ms;
    size_t json_max;
    int backoff_min_ms, backoff_max_ms;
    int pg_timeout_ms;        /* longest wait for PostgreSQL in one call; 0: 10000 */
    const char *spool_dir;    /* the journal's directory; NULL: no journal, events wait in memory */
    uint64_t spool_max_bytes; /* bounds the journal's files */
    const char *partition;    /* "day", "hour" or "none": schema.sql's vmq_pgevents.partition */
    const char *distribute;   /* "off", "on" or "auto": schema.sql's vmq_pgevents.distribute */
    int64_t retention_s;      /* partitions that ended this long ago are dropped; 0: never */
    int journal;              /* 1: events go to a journal in spool_dir (journal.h); 0: in memory */
    int journal_sync_ms;      /* the journal is synced to disk this often; 0: 1000 */
    uint64_t journal_memory_bytes;   /* its segments in memory files at most; 0: none */
    int64_t compress_after_s; /* partitions that ended this long ago become columnar (compress.h); 0: never */
    int compress_every_ms;    /* how often the compressor looks; 0: 60000 */
    int running_every_ms;     /* a pgevents_running row this often; 0: 3600000 */
} writer_config_t;

enum writer_state { WS_STARTING, WS_CONNECTED, WS_DISCONNECTED, WS_STOPPED };

typedef struct writer_status {
    int state;
    uint64_t written, batches, dead_lettered, reconnects, discarded_at_stop;
    uint64_t prefetched;      /* batches taken and encoded while the one before committed */
    uint64_t dead_lost;       /* refused rows the dead-letter table did not take either */
    /* the journal's files: events left there at stops (also per hook),
     * damaged records skipped in earlier starts' files, and the bytes of
     * those files not yet all written */
    uint64_t spooled, spooled_at_stop, spool_corrupt;
    uint64_t spool_bytes;
    uint64_t spooled_hook[EVENT_KINDS];
    uint64_t write_errors;
    uint64_t written_hook[EVENT_KINDS], dead_hook[EVENT_KINDS];
    size_t inflight;
    int64_t inflight_oldest_us; /* ts of the first event in hand, 0: none */
    int64_t last_write_us;    /* wall clock of the last commit, 0: none */
    int64_t last_batch_us;    /* how long the last committed COPY took */
    char last_error[256];
    char spool_error[256];    /* why spool_dir cannot be used ("" when it can) */
    int journal_on;           /* events go to the journal (journal.h) */
    uint64_t journal_bytes, journal_segments, journal_syncs, journal_no_room;
    uint64_t journal_left;    /* events left in the journal at stops, for the next start */
    uint64_t partitions_created, partitions_dropped;
    int64_t partitions_checked_us; /* wall clock of the last partition upkeep, 0: none */
    uint64_t partitions_compressed, compress_failures;
    int compress_refused;     /* the server cannot compress (no Citus columnar, not allowed) */
    char compress_error[256]; /* the compressor's last failure ("") */
    int64_t journal_sync_us;  /* wall clock of the last journal sync, 0: none */
    char journal_error[256];  /* why the journal is off or has no room ("") */
    uint64_t journal_memory_bytes;  /* of its segments in memory files now */
    uint64_t journal_disk_segments; /* segments made without a memory file */
    char journal_memory_error[256]; /* why not (all or some of them), "" */
} writer_status_t;

typedef struct writer writer_t;

/* Starts the thread; NULL and a message in err when it cannot. */
writer_t *writer_start(const writer_config_t *cfg, queue_t *q,
                       writer_log_fn log, void *log_ctx,
                       char *err, size_t errlen);
/* Writes what is queued for at most timeout_ms, discards (and counts) the
 * rest, joins the thread and frees w. Its final status goes to *final. */
void writer_stop(writer_t *w, int timeout_ms, writer_status_t *final);
void writer_get_status(writer_t *w, writer_status_t *st);
/* into += from for every counter (the totals of writers that have
 * stopped); the gauges and the last error are left to the caller */
void writer_status_add(writer_status_t *into, const writer_status_t *from);
/* Changes batch size, flush interval and the JSON check limit of a
 * running writer (any thread; read by the writer at its next batch). */
void writer_tune(writer_t *w, size_t batch_size, int flush_interval_ms, size_t json_max);

/* The connection string with every secret (password, sslpassword: what libpq
 * marks secret) replaced by ****; "" when it
 * cannot be parsed. Writes at most n bytes, always terminated. */
void conninfo_masked(const char *conninfo, char *out, size_t n);
/* 0 when libpq can parse conninfo. */
int conninfo_check(const char *conninfo);

#endif
