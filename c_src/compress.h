/* compress.h - the compressor: a thread with a connection of its own that
 * calls schema.sql's vmq_pgevents_compress every so often, so that the
 * partitions whose period ended compress_after ago are rewritten as
 * columnar storage (Citus) while the writer goes on writing on its own
 * connection. One partition per call (one transaction each).
 *
 * A server without columnar storage, or a role that may not add it, is
 * reported once (logged, kept in status) and not asked again. Knows
 * nothing of erl_nif. */
#ifndef VMQ_PGEV_COMPRESS_H
#define VMQ_PGEV_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

#include "wlog.h"

typedef struct compress_config {
    const char *conninfo;
    const char *secrets;    /* masked in every message (pgio_conninfo_secrets); NULL: none */
    const char *table;
    int64_t after_s;        /* compress partitions that ended this long ago */
    int every_ms;           /* how often to look; 0: 60000 */
} compress_config_t;

typedef struct compress_status {
    uint64_t compressed;    /* partitions rewritten as columnar */
    uint64_t failures;      /* calls that failed (logged) */
    int refused;            /* no columnar storage there: not asked again */
    int64_t checked_us;     /* wall clock of the last look, 0: none */
    char error[256];        /* the last failure, "" when the last call worked */
} compress_status_t;

typedef struct compressor compressor_t;

/* Starts the thread; NULL (message in err) when it cannot. */
compressor_t *compressor_start(const compress_config_t *cfg, writer_log_fn log, void *log_ctx,
                               char *err, size_t errlen);
/* Stops it (a call in progress is cancelled: its transaction rolls
 * back), joins and frees it; its last status goes to *final. */
void compressor_stop(compressor_t *c, compress_status_t *final);
void compressor_get_status(compressor_t *c, compress_status_t *st);

#endif
