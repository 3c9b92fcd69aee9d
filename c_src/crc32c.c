/* crc32c.c - CRC-32C (see crc32c.h). */
#include "crc32c.h"

#include <string.h>

static uint32_t table[8][256];
static int ready;   /* 1: tables made; 2: and the CPU has SSE 4.2 */

static void init(void)
{
    uint32_t i, k, c;

    for (i = 0; i < 256; i++) {
        c = i;
        for (k = 0; k < 8; k++)
            c = c & 1 ? 0x82F63B78u ^ (c >> 1) : c >> 1;
        table[0][i] = c;
    }
    for (i = 0; i < 256; i++)
        for (k = 1; k < 8; k++)
            table[k][i] = table[0][table[k - 1][i] & 0xFF] ^ (table[k - 1][i] >> 8);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        __atomic_store_n(&ready, 2, __ATOMIC_RELEASE);
        return;
    }
#endif
    __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
}

static uint32_t crc_table(uint32_t crc, const unsigned char *b, size_t n)
{
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, b, 8);
        v ^= crc;   /* little-endian: the low 4 bytes take the crc */
        crc = table[7][v & 0xFF] ^ table[6][(v >> 8) & 0xFF] ^ table[5][(v >> 16) & 0xFF] ^
              table[4][(v >> 24) & 0xFF] ^ table[3][(v >> 32) & 0xFF] ^
              table[2][(v >> 40) & 0xFF] ^ table[1][(v >> 48) & 0xFF] ^ table[0][v >> 56];
        b += 8;
        n -= 8;
    }
    while (n--)
        crc = table[0][(crc ^ *b++) & 0xFF] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t crc, const unsigned char *b, size_t n)
{
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, b, 8);
        c = __builtin_ia32_crc32di(c, v);
        b += 8;
        n -= 8;
    }
    crc = (uint32_t)c;
    while (n--)
        crc = __builtin_ia32_crc32qi(crc, *b++);
    return crc;
}
#endif

uint32_t crc32c(const void *p, size_t n)
{
    return crc32c_seeded(0, p, n);
}

uint32_t crc32c_seeded(uint32_t seed, const void *p, size_t n)
{
    int r = __atomic_load_n(&ready, __ATOMIC_ACQUIRE);

    if (!r) {
        init();   /* idempotent: two threads racing here make the same tables */
        r = __atomic_load_n(&ready, __ATOMIC_ACQUIRE);
    }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (r == 2)
        return ~crc_hw(~seed, p, n);
#endif
    return ~crc_table(~seed, p, n);
}
