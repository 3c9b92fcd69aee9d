/* buf.c - growable byte buffer (see buf.h). */
#include "buf.h"

#include <stdlib.h>

int buf_reserve(buf_t *b, size_t n)
{
    size_t want, ncap;
    char *np;

    if (b->failed)
        return -1;
    if (n <= b->cap - b->len)
        return 0;
    if (n > SIZE_MAX / 2 - b->len)
        goto fail;
    want = b->len + n;
    ncap = b->cap ? b->cap : 256;
    while (ncap < want)
        ncap *= 2;
    if (b->on_heap) {
        np = realloc(b->p, ncap);
        if (!np)
            goto fail;
    } else {
        np = malloc(ncap);
        if (!np)
            goto fail;
        if (b->len)
            memcpy(np, b->p, b->len);
    }
    b->p = np;
    b->cap = ncap;
    b->on_heap = 1;
    return 0;
fail:
    b->failed = 1;
    return -1;
}

void buf_put_grow(buf_t *b, const void *src, size_t n)
{
    if (n == 0 || buf_reserve(b, n) < 0)
        return;
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

void buf_putc_grow(buf_t *b, char c)
{
    if (buf_reserve(b, 1) < 0)
        return;
    b->p[b->len++] = c;
}

void buf_puts(buf_t *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

void buf_put_be16(buf_t *b, uint16_t v)
{
    unsigned char x[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    buf_put(b, x, 2);
}

void buf_put_be32(buf_t *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    buf_put(b, x, 4);
}

void buf_put_be64(buf_t *b, uint64_t v)
{
    buf_put_be32(b, (uint32_t)(v >> 32));
    buf_put_be32(b, (uint32_t)v);
}
