/* jsonw.h - a small JSON text writer over buf_t.
 *
 * Strings that are clean UTF-8 are written as JSON strings; anything else
 * (invalid UTF-8, NUL bytes - which jsonb refuses even escaped) is written
 * losslessly as {"$base64":"..."}. Output is always valid for jsonb.
 * Owns: nothing global; any thread. */
#ifndef VMQ_PGEV_JSONW_H
#define VMQ_PGEV_JSONW_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* a JSON string, or the base64 marker object for unclean bytes */
void jw_string(buf_t *b, const char *s, size_t n);
/* a JSON string from a NUL-terminated ASCII literal (no checks) */
void jw_lit(buf_t *b, const char *s);
void jw_int(buf_t *b, int64_t v);
void jw_uint(buf_t *b, uint64_t v);
void jw_double(buf_t *b, double v);
/* writes ',' unless *first, then clears *first */
void jw_sep(buf_t *b, int *first);
/* "key": (key is an ASCII literal) */
void jw_key(buf_t *b, const char *key, int *first);

#endif
