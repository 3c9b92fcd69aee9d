/* copy.h - encodes events as PostgreSQL COPY BINARY rows.
 *
 * Runs on the writer thread only. Checks payloads for JSON with jansson
 * (off the hook path). Knows nothing of erl_nif or of the connection. */
#ifndef VMQ_PGEV_COPY_H
#define VMQ_PGEV_COPY_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "event.h"

typedef struct copy_ctx {
    const char *node;
    size_t node_len;
    int64_t incarnation;
    size_t json_max;        /* parse payloads up to this size as JSON; 0: never */
    int client_id_required; /* a Citus distributed table: no client_id is written as '' */
} copy_ctx_t;

/* the column list, in the order copy_row writes them */
extern const char copy_columns[];
#define COPY_NCOLS 24

void copy_header(buf_t *b);
void copy_row(buf_t *b, const copy_ctx_t *ctx, const event_t *ev);
/* the same row plus dead_error and dead_sqlstate (the dead-letter table) */
extern const char copy_dead_columns[];
void copy_row_dead(buf_t *b, const copy_ctx_t *ctx, const event_t *ev,
                   const char *error, const char *sqlstate);
void copy_trailer(buf_t *b);
/* the payload_hash column's value for these payload bytes (64-bit
 * MurmurHash64A, little-endian words) */
int64_t copy_payload_hash(const void *data, size_t n);

#endif
