/* text.c - UTF-8 checks, escaping, base64 (see text.h). */
#include "text.h"

/* Length of the valid UTF-8 sequence starting at s (at most n bytes
 * available), or 0 when the bytes there are not a valid sequence. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        if (n >= 2 && (s[1] & 0xC0) == 0x80)
            return 2;
        return 0;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && s[1] < 0xA0)
            return 0; /* overlong */
        if (c == 0xED && s[1] >= 0xA0)
            return 0; /* surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 ||
            (s[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && s[1] < 0x90)
            return 0; /* overlong */
        if (c == 0xF4 && s[1] >= 0x90)
            return 0; /* above U+10FFFF */
        return 4;
    }
    return 0;
}

/* the 8 bytes at u are all in 1..0x7F: no high bit set, and none 0 (as
 * every byte is below 0x80, only a 0 borrows into its high bit when 1 is
 * taken from each) */
static int ascii8(const unsigned char *u)
{
    uint64_t w;

    memcpy(&w, u, 8);
    return ((w | (w - 0x0101010101010101ull)) & 0x8080808080808080ull) == 0;
}

int text_is_clean(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, k;

    if (n >= 8) {
        /* ASCII (the common case) 8 bytes at a time, the last 8 too */
        while (i + 8 <= n && ascii8(u + i))
            i += 8;
        if (i + 8 > n && ascii8(u + n - 8))
            return 1;
        /* the bytes before i are clean: on from there, byte by byte */
    }
    while (i < n) {
        if (u[i] >= 0x01 && u[i] < 0x80) {
            i++;
            continue;
        }
        if (u[i] == 0)
            return 0;
        k = utf8_seq(u + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

size_t text_escaped_len(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, k, out = 0;

    while (i < n) {
        if (u[i] == '\\') {
            out += 2;
            i++;
        } else if (u[i] == 0) {
            out += 4;
            i++;
        } else if ((k = utf8_seq(u + i, n - i)) == 0) {
            out += 4;
            i++;
        } else {
            out += k;
            i += k;
        }
    }
    return out;
}

void text_escape(char *dst, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, k;

    while (i < n) {
        if (u[i] == '\\') {
            *dst++ = '\\';
            *dst++ = '\\';
            i++;
        } else if (u[i] == 0 || (k = utf8_seq(u + i, n - i)) == 0) {
            *dst++ = '\\';
            *dst++ = 'x';
            *dst++ = hex[u[i] >> 4];
            *dst++ = hex[u[i] & 15];
            i++;
        } else {
            memcpy(dst, u + i, k);
            dst += k;
            i += k;
        }
    }
}

size_t base64_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

void base64_put(buf_t *b, const unsigned char *s, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;
    char *o;

    if (buf_reserve(b, base64_len(n)) < 0)
        return;
    o = b->p + b->len;
    for (i = 0; i + 2 < n; i += 3) {
        *o++ = tab[s[i] >> 2];
        *o++ = tab[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
        *o++ = tab[((s[i + 1] & 15) << 2) | (s[i + 2] >> 6)];
        *o++ = tab[s[i + 2] & 63];
    }
    if (i + 1 == n) {
        *o++ = tab[s[i] >> 2];
        *o++ = tab[(s[i] & 3) << 4];
        *o++ = '=';
        *o++ = '=';
    } else if (i + 2 == n) {
        *o++ = tab[s[i] >> 2];
        *o++ = tab[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
        *o++ = tab[(s[i + 1] & 15) << 2];
        *o++ = '=';
    }
    b->len = (size_t)(o - b->p);
}

int utf8_put(buf_t *b, long cp)
{
    char x[4];

    if (cp < 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return -1;
    if (cp < 0x80) {
        x[0] = (char)cp;
        buf_put(b, x, 1);
    } else if (cp < 0x800) {
        x[0] = (char)(0xC0 | (cp >> 6));
        x[1] = (char)(0x80 | (cp & 0x3F));
        buf_put(b, x, 2);
    } else if (cp < 0x10000) {
        x[0] = (char)(0xE0 | (cp >> 12));
        x[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        x[2] = (char)(0x80 | (cp & 0x3F));
        buf_put(b, x, 3);
    } else {
        x[0] = (char)(0xF0 | (cp >> 18));
        x[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        x[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        x[3] = (char)(0x80 | (cp & 0x3F));
        buf_put(b, x, 4);
    }
    return 0;
}
