/* record.h - the journal's file format, written by the journal (journal.c,
 * journal_disk.c) and read back by recovery (recover.c).
 *
 * A segment starts with a header of JOURNAL_SEG_HDR bytes:
 *   "VPGH" | salt (BE u32) | 4 zero bytes | CRC-32C of the 12 before (BE u32)
 * the salt a random number of that segment's own. Then the records, each
 * 8-byte aligned:
 *   "VPGJ" | length (BE u32) | CRC-32C (BE u32) | size (BE u32) | 8 zero bytes | event_t
 * "length" is the event's bytes from seq on, which the CRC covers, its
 * register started from the salt (crc32c_seeded): bytes a client sent, in
 * a payload, cannot make a record that passes it, so recovery resumes after
 * a damaged record (or one whose hook died while filling it) only at one
 * that does. "size" is the whole record. The hook that took the space
 * writes all of it, outside any lock, the magic last (record_commit). Once
 * committed a record is never written again: the writer reads it (a copy,
 * journal.h) and what it has written is known outside the records.
 *
 * Files of earlier versions have no header (records from 0, CRCs from 0),
 * and may hold records marked written, with the magic "VPGW": skipped.
 * Knows nothing of queues, threads, erl_nif or libpq. */
#ifndef VMQ_PGEV_RECORD_H
#define VMQ_PGEV_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "be32.h"
#include "crc32c.h"
#include "event.h"

#define JOURNAL_HDR 24          /* record bytes before the event_t */
#define JOURNAL_SEG_HDR 16      /* segment bytes before the first record */
#define EV_OFF offsetof(event_t, seq)

/* the bytes a record of an event of ev_bytes takes */
static inline size_t record_size(size_t ev_bytes)
{
    return (JOURNAL_HDR + ev_bytes + 7) & ~(size_t)7;
}

static inline event_t *record_event(unsigned char *rec)
{
    return (event_t *)(void *)(rec + JOURNAL_HDR);
}

static inline unsigned char *record_of(const event_t *ev)
{
    return (unsigned char *)ev - JOURNAL_HDR;
}

/* the segment header with this salt into h (JOURNAL_SEG_HDR bytes) */
void record_seg_header(unsigned char *h, uint32_t salt);
/* 1 and *salt when base starts with a valid segment header */
int record_seg_salt(const unsigned char *base, size_t size, uint32_t *salt);

static inline uint32_t record_magic(void)
{
    uint32_t w;
    memcpy(&w, "VPGJ", 4);
    return w;
}

/* The hook path's (inline: it runs on every hook call), once the event is
 * filled in: length, CRC from salt and size, then the magic (a release
 * store) */
static inline void record_commit(unsigned char *rec, uint32_t salt)
{
    const event_t *ev = record_event(rec);
    size_t len = ev->bytes - EV_OFF;

    put32(rec + 4, (uint32_t)len);
    put32(rec + 8, crc32c_seeded(salt, (const char *)ev + EV_OFF, len));
    put32(rec + 12, (uint32_t)record_size(ev->bytes));
    __atomic_store_n((uint32_t *)(void *)rec, record_magic(), __ATOMIC_RELEASE);
}

/* record_commit of an earlier version's record: CRC from 0, stored plainly */
void record_commit_unsalted(unsigned char *rec);
/* 1 once committed (an acquire load) */
static inline int record_committed(const unsigned char *rec)
{
    return __atomic_load_n((const uint32_t *)(const void *)rec, __ATOMIC_ACQUIRE) == record_magic();
}

/* "VPGJ" or "VPGW" at p: where a record may start (recovery's resync in
 * files without a segment header) */
static inline int record_magic_at(const unsigned char *p)
{
    return memcmp(p, "VPGJ", 4) == 0 || memcmp(p, "VPGW", 4) == 0;
}

/* an earlier version's record marked written ("VPGW") */
int record_is_written(const unsigned char *rec);
uint32_t record_rsize(const unsigned char *rec);
/* the record at rec (rsize bytes, all readable) is whole and its CRC from
 * salt holds, its event checks (event_check); salted 0: CRC from 0 and
 * only "VPGJ" (an earlier version's file, written records skipped apart) */
int record_ok(const unsigned char *rec, uint32_t rsize, uint32_t salt, int salted);

#endif
