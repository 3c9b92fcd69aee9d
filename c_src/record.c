/* record.c - the journal's file format (see record.h). */
#include "record.h"

#include <string.h>

void record_seg_header(unsigned char *h, uint32_t salt)
{
    memcpy(h, "VPGH", 4);
    put32(h + 4, salt);
    memset(h + 8, 0, 4);
    put32(h + 12, crc32c(h, 12));
}

int record_seg_salt(const unsigned char *base, size_t size, uint32_t *salt)
{
    if (size < JOURNAL_SEG_HDR || memcmp(base, "VPGH", 4) != 0 ||
        crc32c(base, 12) != get32(base + 12))
        return 0;
    *salt = get32(base + 4);
    return 1;
}

void record_commit_unsalted(unsigned char *rec)
{
    const event_t *ev = record_event(rec);
    size_t len = ev->bytes - EV_OFF;

    put32(rec + 4, (uint32_t)len);
    put32(rec + 8, crc32c((const char *)ev + EV_OFF, len));
    put32(rec + 12, (uint32_t)record_size(ev->bytes));
    memcpy(rec, "VPGJ", 4);
}

int record_is_written(const unsigned char *rec)
{
    return memcmp(rec, "VPGW", 4) == 0;
}

uint32_t record_rsize(const unsigned char *rec)
{
    return get32(rec + 12);
}

int record_ok(const unsigned char *rec, uint32_t rsize, uint32_t salt, int salted)
{
    const event_t *ev = (const event_t *)(const void *)(rec + JOURNAL_HDR);
    uint32_t len = get32(rec + 4);

    if (rsize < JOURNAL_HDR + EV_OFF || rsize % 8)
        return 0;
    if (!(memcmp(rec, "VPGJ", 4) == 0 || (salted && memcmp(rec, "VPGW", 4) == 0)))
        return 0;
    return (uint64_t)JOURNAL_HDR + EV_OFF + len <= rsize &&
           (salted ? crc32c_seeded(salt, (const char *)ev + EV_OFF, len)
                   : crc32c((const char *)ev + EV_OFF, len)) == get32(rec + 8) &&
           event_check(ev, len) == 0 && ev->home == EV_JOURNAL;
}
