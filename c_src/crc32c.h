/* crc32c.h - CRC-32C (Castagnoli) of a buffer: the checksum of journal
 * records. Uses the SSE 4.2 instruction where the CPU has it, a table
 * otherwise (same result). Knows nothing of erl_nif or libpq. */
#ifndef VMQ_PGEV_CRC32C_H
#define VMQ_PGEV_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t crc32c(const void *p, size_t n);
/* the same, its register started from seed instead of 0 (crc32c is
 * crc32c_seeded(0, ...)): a journal segment's records use its salt */
uint32_t crc32c_seeded(uint32_t seed, const void *p, size_t n);

#endif
