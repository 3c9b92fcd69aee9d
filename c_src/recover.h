/* recover.h - the files an earlier start left in the spool directory,
 * made ready for the journal to take over (journal_open): its events are
 * written before any new one, read from the files themselves (never
 * written), and each file is removed once all its events are written
 * (journal.c).
 *
 * - Journal files, journal-<incarnation>-<epoch>-<number>.dat (records in
 *   record.h), of any incarnation: mapped shared and read-only; their
 *   valid records are counted here and read in order by the journal
 *   (recover_next).
 * - The spool files of versions before the one log, spool-<incarnation>.dat
 *   (records "VPGS" | length | CRC-32 | event bytes): each is converted
 *   once into a journal file journal-<incarnation>-0-0.dat (epoch 0, before
 *   any of that incarnation's own), synced, then removed. A conversion
 *   interrupted by a crash is simply done again at the next start.
 *
 * Oldest first: by incarnation, then epoch and number. Records an earlier
 * version marked written ("VPGW") are skipped. A damaged record
 * (bad magic, size or checksum, fields that do not fit, or one whose hook
 * died while writing it) is counted and skipped; the records after it are
 * kept. In a file with a segment header (record.h) reading resumes after
 * one only at a record whose CRC, seeded by the header's salt, holds, so
 * no payload bytes are taken for a record; files without one (earlier
 * versions) resume at the next 8-byte-aligned magic, as they did. Events
 * the table has already (written before the start stopped or crashed) are
 * skipped by the writer's resume point, so reading a file twice writes
 * nothing twice.
 *
 * recover_files runs at journal_recover, while hooks write into this
 * start's files (skipped by name); the writer reads the records later
 * (recover_next).
 * Knows nothing of erl_nif or libpq. */
#ifndef VMQ_PGEV_RECOVER_H
#define VMQ_PGEV_RECOVER_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "hooks.h"

typedef struct recovered {
    struct recovered *next;
    int64_t incarnation;
    int fd;
    unsigned char *base;   /* mapped shared, read-only */
    size_t size;
    size_t from;           /* its records are read from here: after the segment header,
                            * or where its cursor file says (recover_cursor) */
    uint32_t salt;         /* its segment header's; 0: none (an earlier version's file) */
    uint64_t count, bytes; /* its valid events from there */
    uint64_t per_hook[EVENT_KINDS];   /* ... of each hook */
    char path[4096];
} recovered_t;

/* The files in dir but those whose name starts with skip (NULL: none),
 * oldest first (files without an event are removed). *corrupt += the
 * damaged records skipped; *unreadable += the files that could not be
 * read (left where they are; err names the last). */
recovered_t *recover_files(const char *dir, const char *skip, uint64_t *corrupt,
                           uint64_t *unreadable, char *err, size_t errlen);

/* The cursor file of a journal file kept at a stop, <file>.w: "VPGC" |
 * the file's salt | offset (BE u64) | CRC-32C of the 16 bytes before
 * (BE u32). Every record before the offset was written to PostgreSQL or
 * to the dead-letter table (or counted lost there); the next start reads
 * the file from there. Only for a file with a segment header: the salt
 * ties the cursor to it, so a cursor left from another file of the same
 * name is ignored. Written (not synced: without it the file is read
 * whole, and the resume point skips what the table has) by the journal
 * at close; 0 or -1. */
int recover_save_cursor(const char *path, uint32_t salt, size_t offset);
/* the offset in path's cursor file, 0 when there is none, it is damaged,
 * or it is another file's (salt) */
size_t recover_cursor(const char *path, size_t size, uint32_t salt);
void recover_drop_cursor(const char *path);

/* A reader of a journal file's valid records, in order. */
typedef struct rec_reader {
    const unsigned char *base;
    size_t size, pos;
    uint32_t salt;
    int salted;            /* the file has a segment header */
    int lost;              /* past a damaged record, looking for the next good one */
    uint64_t budget;       /* ... bytes its checks may still read (recover_next) */
} rec_reader_t;

/* from: an offset known to start a record (recover_cursor), or 0 */
void recover_reader(rec_reader_t *r, const unsigned char *base, size_t size, size_t from);
/* The next valid record not marked written, NULL at the end; *corrupt
 * (when not NULL) += the damaged records passed. Reads only. */
const unsigned char *recover_next(rec_reader_t *r, uint64_t *corrupt);
/* A journal file's valid events: their number and bytes, each counted
 * in per_hook[hook] (when not NULL; hook < EVENT_KINDS); damaged ones
 * counted. Returns where its reader starts (from, or after the segment
 * header). Exposed for the fuzz harness. */
size_t recover_records(const unsigned char *base, size_t size, size_t from, uint64_t *count,
                       uint64_t *bytes, uint64_t *per_hook, uint64_t *corrupt);

/* CRC-32 (the spool files' checksum; zlib's polynomial) */
uint32_t crc32_buf(uint32_t crc, const void *p, size_t n);

#endif
