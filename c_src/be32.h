/* be32.h - big-endian 32-bit fields of the on-disk records (recover.c,
 * journal.c). */
#ifndef VMQ_PGEV_BE32_H
#define VMQ_PGEV_BE32_H

#include <stdint.h>
#include <string.h>

static inline uint32_t be32(uint32_t v)
{
#if !defined(__BYTE_ORDER__)
#error "be32.h needs __BYTE_ORDER__ (GCC or Clang)"
#elif __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap32(v);
#else
    return v;
#endif
}

/* one load or store each (the hook path writes three per record) */
static inline void put32(unsigned char *p, uint32_t v)
{
    v = be32(v);
    memcpy(p, &v, 4);
}

static inline uint32_t get32(const unsigned char *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return be32(v);
}

#endif
