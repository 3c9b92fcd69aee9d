/* jsonw.c - JSON text writer (see jsonw.h). */
#include "jsonw.h"

#include <math.h>
#include <stdio.h>

#include "text.h"

static void put_escaped(buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, run = 0;

    buf_putc(b, '"');
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        buf_put(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': buf_puts(b, "\\\""); break;
        case '\\': buf_puts(b, "\\\\"); break;
        case '\n': buf_puts(b, "\\n"); break;
        case '\r': buf_puts(b, "\\r"); break;
        case '\t': buf_puts(b, "\\t"); break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            buf_put(b, u, 6);
        }
        }
    }
    buf_put(b, s + run, n - run);
    buf_putc(b, '"');
}

void jw_string(buf_t *b, const char *s, size_t n)
{
    if (text_is_clean(s, n)) {
        put_escaped(b, s, n);
        return;
    }
    buf_puts(b, "{\"$base64\":\"");
    base64_put(b, (const unsigned char *)s, n);
    buf_puts(b, "\"}");
}

void jw_lit(buf_t *b, const char *s)
{
    put_escaped(b, s, strlen(s));
}

void jw_int(buf_t *b, int64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    buf_put(b, tmp, (size_t)n);
}

void jw_uint(buf_t *b, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    buf_put(b, tmp, (size_t)n);
}

void jw_double(buf_t *b, double v)
{
    char tmp[32];
    int n;

    if (!isfinite(v)) {
        buf_puts(b, "null");
        return;
    }
    n = snprintf(tmp, sizeof tmp, "%.17g", v);
    buf_put(b, tmp, (size_t)n);
}

void jw_sep(buf_t *b, int *first)
{
    if (*first)
        *first = 0;
    else
        buf_putc(b, ',');
}

void jw_key(buf_t *b, const char *key, int *first)
{
    jw_sep(b, first);
    jw_lit(b, key);
    buf_putc(b, ':');
}
