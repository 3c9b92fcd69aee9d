/* be32.h - big-endian 32-bit fields of the on-disk records (recover.c,
 * journal.c). */
#ifndef VMQ_PGEV_BE32_H
#define VMQ_PGEV_BE32_H

#include <stdint.h>

static inline void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static inline uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

#endif
