/* text.h - byte-level text helpers: UTF-8 checks, the lossless escape used
 * for text columns, base64, code point encoding.
 *
 * Owns: nothing global; pure functions, any thread. */
#ifndef VMQ_PGEV_TEXT_H
#define VMQ_PGEV_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* 1 when s[0..n) is well-formed UTF-8 (no overlongs, no surrogates) and
 * holds no NUL byte: text PostgreSQL accepts as is. */
int text_is_clean(const char *s, size_t n);

/* Length of the escaped form of s: every byte that is not part of a valid
 * UTF-8 sequence, and every NUL, becomes \xHH; a backslash becomes \\.
 * Used only for values that are not clean. */
size_t text_escaped_len(const char *s, size_t n);
/* Writes the escaped form into dst (text_escaped_len bytes). */
void text_escape(char *dst, const char *s, size_t n);

/* Standard base64 (RFC 4648, with padding). */
size_t base64_len(size_t n);
void base64_put(buf_t *b, const unsigned char *s, size_t n);

/* Appends code point cp as UTF-8; -1 when cp is not a Unicode scalar. */
int utf8_put(buf_t *b, long cp);

#endif
