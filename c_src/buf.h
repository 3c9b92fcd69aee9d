/* buf.h - a growable byte buffer.
 *
 * Owns: nothing global. A buf may start on a caller's stack array (the hook
 * path uses this to avoid malloc for small values) and moves to the heap only
 * when it outgrows it. Any thread; a buf is never shared. */
#ifndef VMQ_PGEV_BUF_H
#define VMQ_PGEV_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf {
    char *p;
    size_t len;
    size_t cap;
    int on_heap;   /* p was malloc'd by buf_reserve */
    int failed;    /* an allocation failed; contents are incomplete */
} buf_t;

/* make room for n more bytes; 0 on success, -1 (and b->failed) on failure */
int buf_reserve(buf_t *b, size_t n);
/* the slow paths of buf_put and buf_putc: room to be made first */
void buf_put_grow(buf_t *b, const void *src, size_t n);
void buf_putc_grow(buf_t *b, char c);

/* The hook path sets up and frees several bufs per call, and appends to
 * them mostly within their stack arrays: these are inline, so that costs
 * no call (instructions per hook call: docs/internals/measurements.md). */
static inline void buf_init(buf_t *b, char *stack, size_t stack_cap)
{
    b->p = stack;
    b->len = 0;
    b->cap = stack ? stack_cap : 0;
    b->on_heap = 0;
    b->failed = 0;
}

static inline void buf_free(buf_t *b)
{
    if (b->on_heap)
        free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->on_heap = 0;
}

static inline void buf_put(buf_t *b, const void *src, size_t n)
{
    if (n && !b->failed && n <= b->cap - b->len) {
        memcpy(b->p + b->len, src, n);
        b->len += n;
        return;
    }
    buf_put_grow(b, src, n);
}

static inline void buf_putc(buf_t *b, char c)
{
    if (!b->failed && b->len < b->cap) {
        b->p[b->len++] = c;
        return;
    }
    buf_putc_grow(b, c);
}

void buf_puts(buf_t *b, const char *s);
void buf_put_be16(buf_t *b, uint16_t v);
void buf_put_be32(buf_t *b, uint32_t v);
void buf_put_be64(buf_t *b, uint64_t v);

#endif
