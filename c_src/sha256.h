/* sha256.h - SHA-256 (FIPS 180-4), for payload_topics' hash mode: the
 * digest of a payload computed on the hook path from the Erlang binary in
 * place. Plain C, no allocation; knows nothing of erl_nif. */
#ifndef VMQ_PGEV_SHA256_H
#define VMQ_PGEV_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_BYTES 32

typedef struct sha256_ctx {
    uint32_t h[8];
    uint64_t bytes;          /* message length so far */
    unsigned char block[64];
    size_t used;             /* bytes in block */
} sha256_ctx_t;

void sha256_init(sha256_ctx_t *c);
void sha256_update(sha256_ctx_t *c, const void *data, size_t n);
void sha256_final(sha256_ctx_t *c, unsigned char out[SHA256_BYTES]);
/* the digest of n bytes at data */
void sha256(const void *data, size_t n, unsigned char out[SHA256_BYTES]);

#endif
