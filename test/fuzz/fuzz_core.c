/* fuzz_core.c - libFuzzer harness over the C core's entry points that see
 * client-chosen bytes: the text escape, the JSON writer, the event builder
 * and the COPY BINARY encoder. (The Erlang-term decoder, terms.c, needs a
 * VM: test/vmq_pgevents_50_hostile_tests.erl throws random terms at it.)
 *
 * Oracles, not just "no crash":
 *  - escaped text is clean UTF-8 and unescapes back to the input;
 *  - every JSON value written parses with jansson, and a clean string
 *    decodes back to the input;
 *  - a COPY row reads back as 23 fields that exactly fill the row, and
 *    its jsonb fields parse.
 *
 * fuzz_one() is also linked into test/fuzz/regress.c, which replays
 * test/fuzz/corpus/ in `make test`: a crash found once stays tested. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "copy.h"
#include "event.h"
#include "hooks.h"
#include "jsonw.h"
#include "journal.h"
#include "record.h"
#include "recover.h"
#include "text.h"

#define REQUIRE(c)                                                             \
    do {                                                                       \
        if (!(c)) {                                                            \
            fprintf(stderr, "fuzz_core: %s:%d: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                           \
        }                                                                      \
    } while (0)

static size_t unescape(const char *s, size_t n, char *out)
{
    size_t i = 0, o = 0;

    while (i < n) {
        if (s[i] == '\\' && i + 1 < n && s[i + 1] == '\\') {
            out[o++] = '\\';
            i += 2;
        } else if (s[i] == '\\' && i + 3 < n && s[i + 1] == 'x') {
            char hex[3] = {s[i + 2], s[i + 3], 0};
            out[o++] = (char)strtol(hex, NULL, 16);
            i += 4;
        } else {
            out[o++] = s[i++];
        }
    }
    return o;
}

static void check_text(const uint8_t *d, size_t n)
{
    const char *s = (const char *)d;
    size_t len = text_escaped_len(s, n), back;
    char *esc = malloc(len + 1), *un = malloc(n + 1);

    REQUIRE(esc && un);
    text_escape(esc, s, n);
    REQUIRE(text_is_clean(esc, len));
    back = unescape(esc, len, un);
    REQUIRE(back == n && memcmp(un, s, n) == 0);
    free(esc);
    free(un);
}

static void check_json_string(const uint8_t *d, size_t n)
{
    buf_t b;
    json_error_t err;
    json_t *j;

    buf_init(&b, NULL, 0);
    jw_string(&b, (const char *)d, n);
    REQUIRE(!b.failed);
    j = json_loadb(b.p, b.len, JSON_DECODE_ANY, &err);
    REQUIRE(j != NULL);
    if (text_is_clean((const char *)d, n)) {
        REQUIRE(json_is_string(j));
        REQUIRE(json_string_length(j) == n && memcmp(json_string_value(j), d, n) == 0);
    } else {
        REQUIRE(json_is_object(j) && json_object_get(j, "$base64"));
    }
    json_decref(j);
    buf_free(&b);
}

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* reads the row back: 23 fields that fill it exactly; jsonb fields parse */
static void check_copy_row(const buf_t *b)
{
    static const int jsonb_cols[] = {13, 19, 20, 22};
    const unsigned char *p = (const unsigned char *)b->p, *end = p + b->len;
    int i, k;

    REQUIRE(b->len >= 2 && p[0] == 0 && p[1] == COPY_NCOLS);
    p += 2;
    for (i = 0; i < COPY_NCOLS; i++) {
        int32_t len;
        REQUIRE(p + 4 <= end);
        len = (int32_t)rd32(p);
        p += 4;
        if (len < 0)
            continue;
        REQUIRE(p + len <= end);
        for (k = 0; k < 4; k++) {
            if (jsonb_cols[k] == i) {
                json_error_t err;
                json_t *j;
                REQUIRE(len >= 1 && p[0] == 1);
                j = json_loadb((const char *)p + 1, (size_t)len - 1, JSON_DECODE_ANY, &err);
                REQUIRE(j != NULL);
                json_decref(j);
            }
        }
        if (i == 4 || i == 6 || i == 7 || i == 8 || i == 12 || i == 21) /* text */
            REQUIRE(text_is_clean((const char *)p, (size_t)len));
        p += len;
    }
    REQUIRE(p == end);
}

static void check_event(const uint8_t *d, size_t n)
{
    char tstore[4][256];
    buf_t props, extra, topics;
    event_in_t in;
    event_t *ev;
    copy_ctx_t ctx = {"fuzz@node", 9, 1, 65536, 0};
    buf_t row;
    size_t cut[5], i, k, per;
    int first = 1;
    uint8_t flags;

    if (n < 2)
        return;
    event_in_init(&in, d[0] % HOOK_COUNT, 946684800000000LL + d[1]);
    in.qos = (d[1] & 3) == 3 ? -1 : d[1] & 3;
    in.retain = (d[1] >> 2) & 1;
    in.clean = (d[1] >> 3) & 1 ? -1 : 1;
    in.peer_family = (d[1] >> 4) & 1 ? 6 : 4;
    in.has_conn = (d[1] >> 5) & 1;
    d += 2;
    n -= 2;
    flags = n ? d[0] : 0;
    /* five text fields and the payload from consecutive slices */
    per = n / 6;
    for (k = 0; k < 5; k++)
        cut[k] = per * (k + 1);
    for (k = 0; k < 4; k++) {
        size_t len = per < sizeof tstore[k] ? per : sizeof tstore[k];
        memcpy(tstore[k], d + cut[k] - per, len);
        in.f[k].p = tstore[k];
        in.f[k].n = len;
        in.f[k].present = (flags >> k) & 1 || k == 1;
    }
    in.f[F_REASON] = (span_t){(const char *)d + cut[3], per, (per & 1) != 0};
    in.f[F_PAYLOAD] = (span_t){(const char *)d + cut[4], n - cut[4], 1};
    in.payload_size = n - cut[4] + (flags & 1);   /* sometimes "truncated" */
    /* JSON fields as the decoder builds them: strings through jw_string */
    buf_init(&props, NULL, 0);
    buf_init(&extra, NULL, 0);
    buf_init(&topics, NULL, 0);
    buf_putc(&props, '{');
    jw_key(&props, "p_content_type", &first);
    jw_string(&props, (const char *)d, per);
    buf_putc(&props, '}');
    first = 1;
    jw_key(&extra, "opts", &first);
    buf_putc(&extra, '[');
    jw_string(&extra, (const char *)d + per, per);
    buf_putc(&extra, ']');
    buf_putc(&topics, '[');
    jw_string(&topics, (const char *)d + 2 * per, n - 2 * per);
    buf_putc(&topics, ']');
    in.f[F_PROPERTIES] = (span_t){props.p, props.len, 1};
    in.f[F_EXTRA] = (span_t){extra.p, extra.len, (flags & 2) != 0};
    in.f[F_TOPICS] = (span_t){topics.p, topics.len, 1};
    for (i = 0; i < 16; i++)
        in.peer_addr[i] = (uint8_t)(i * 17);
    ev = event_build(&in);
    REQUIRE(ev != NULL);
    for (k = 0; k <= F_TEXT_LAST; k++)
        if (ev->len[k] >= 0)
            REQUIRE(text_is_clean(event_field(ev, (int)k), (size_t)ev->len[k]));
    buf_init(&row, NULL, 0);
    copy_row(&row, &ctx, ev);
    REQUIRE(!row.failed);
    check_copy_row(&row);
    buf_free(&row);
    event_free(ev);
    buf_free(&props);
    buf_free(&extra);
    buf_free(&topics);
}

/* an event's bytes read back from a damaged disk: either refused by
 * event_check, or an event whose every field lies inside it and encodes
 * as a valid row */
static void check_event_bytes(const uint8_t *d, size_t n)
{
    copy_ctx_t ctx = {"fuzz@node", 9, 1, 65536, 0};
    event_t *ev;
    buf_t row;
    int f;

    if (n > (1u << 20))
        return;
    ev = calloc(1, offsetof(event_t, seq) + n + 8);
    if (!ev)
        return;
    memcpy(&ev->seq, d, n);
    if (event_check(ev, n) == 0) {
        for (f = 0; f < F_COUNT; f++)
            if (ev->len[f] >= 0)
                REQUIRE((size_t)ev->off[f] + (size_t)ev->len[f] <=
                        ev->bytes - offsetof(event_t, data));
        /* text fields from disk need not be clean: the encoder must still
         * not read outside the event; the row's shape is checked, not its text */
        buf_init(&row, NULL, 0);
        copy_row(&row, &ctx, ev);
        REQUIRE(!row.failed && row.len >= 2);
        buf_free(&row);
    }
    free(ev);
}

static void check_recovered_event(const event_t *ev, const unsigned char *base, size_t size)
{
    copy_ctx_t ctx = {"fuzz@node", 9, 1, 65536, 0};
    buf_t row;
    int f;

    REQUIRE(ev->home == EV_JOURNAL);
    REQUIRE((const unsigned char *)ev >= base &&
            (const unsigned char *)ev + ev->bytes <= base + size);
    for (f = 0; f < F_COUNT; f++)
        if (ev->len[f] >= 0)
            REQUIRE((size_t)ev->off[f] + (size_t)ev->len[f] <= ev->bytes - offsetof(event_t, data));
    buf_init(&row, NULL, 0);
    copy_row(&row, &ctx, ev);
    REQUIRE(!row.failed && row.len >= 2);
    buf_free(&row);
}

/* a journal file left by a crash, and an earlier version's spool file,
 * with any bytes in them: taken over (recover.h) without reading outside
 * them; every event linked lies inside its file and encodes as a valid row */
static char journal_dir[64];

static void remove_journal_dir(void)
{
    rmdir(journal_dir);
}

/* every record a reader of base returns is a whole event within it, as
 * many as recover_records counted */
static void check_records(const unsigned char *base, size_t n)
{
    rec_reader_t rd;
    const unsigned char *rec;
    uint64_t count, bytes, corrupt = 0;

    recover_records(base, n, 0, &count, &bytes, NULL, &corrupt);
    recover_reader(&rd, base, n, 0);
    while ((rec = recover_next(&rd, NULL)) != NULL) {
        check_recovered_event(record_event((unsigned char *)rec), base, n);
        count--;
    }
    REQUIRE(count == 0);
}

static void check_journal_file(const uint8_t *d, size_t n)
{
    char path[128], err[256];
    unsigned char *copy;
    recovered_t *r, *next;
    uint64_t corrupt = 0, unreadable = 0;
    FILE *f;

    if (n < JOURNAL_HDR)
        return;
    /* in memory (aligned, as a mapping is) */
    copy = malloc(n);
    if (copy) {
        memcpy(copy, d, n);
        check_records(copy, n);
        free(copy);
    }
    /* on disk: as a journal file and as a spool file (converted) */
    if (!journal_dir[0]) {
        snprintf(journal_dir, sizeof journal_dir, "/tmp/vmq_pgevents_fuzz.%d", (int)getpid());
        mkdir(journal_dir, 0700);
        atexit(remove_journal_dir);
    }
    snprintf(path, sizeof path, "%s/journal-1-1-0.dat", journal_dir);
    f = fopen(path, "wb");
    if (!f)
        return;
    fwrite(d, 1, n, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/spool-2.dat", journal_dir);
    f = fopen(path, "wb");
    if (f) {
        fwrite(d, 1, n, f);
        fclose(f);
    }
    err[0] = '\0';
    r = recover_files(journal_dir, NULL, &corrupt, &unreadable, err, sizeof err);
    REQUIRE(unreadable == 0);
    for (; r; r = next) {
        next = r->next;
        REQUIRE(r->incarnation == 1 || r->incarnation == 2);
        check_records(r->base, r->size);
        munmap(r->base, r->size);
        close(r->fd);
        unlink(r->path);
        free(r);
    }
    snprintf(path, sizeof path, "%s/spool-2.dat", journal_dir);
    REQUIRE(access(path, F_OK) != 0);   /* converted */
}

void fuzz_one(const uint8_t *data, size_t size)
{
    check_text(data, size);
    check_json_string(data, size);
    check_event(data, size);
    check_event_bytes(data, size);
    check_journal_file(data, size);
}

#ifndef FUZZ_REGRESS
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_one(data, size);
    return 0;
}
#endif
