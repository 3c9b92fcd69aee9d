/* spool.h - what is on disk in spool_dir besides the running journal:
 * the journal files an earlier start or run left (journal.h), and the
 * spool of journal = off (events that do not fit in memory while
 * PostgreSQL is away or slower than the broker). Both are read in order
 * and written before anything newer.
 *
 * Spool: one append-only file per plugin incarnation, spool-<incarnation>.dat;
 * records: "VPGS" | length | CRC-32 | event bytes. Journal files:
 * journal-<incarnation>-<epoch>-<number>.dat (records in journal.h),
 * read as far as their records go. Oldest incarnation first; in one, the
 * journal files by epoch and number, then the spool file. A damaged record
 * (bad magic, length or checksum, or fields that do not fit; in a journal
 * file also one whose hook died while writing it) is counted and skipped
 * by searching for the next valid record. Events already committed before
 * a crash are skipped by the writer's resume point, so replay is
 * idempotent.
 *
 * Used by the writer thread only. Knows nothing of erl_nif or libpq. */
#ifndef VMQ_PGEV_SPOOL_H
#define VMQ_PGEV_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"

typedef struct spool spool_t;

/* Opens (making dir if needed) and finds the files earlier runs left. */
spool_t *spool_open(const char *dir, int64_t incarnation, uint64_t max_bytes,
                    char *err, size_t errlen);
void spool_close(spool_t *s);

/* Appends the first n events of list to this incarnation's file and
 * syncs it. 0: all appended; -1: none (the limit would be passed, or an
 * I/O error: err says which). The events stay the caller's. */
int spool_append(spool_t *s, const event_t *list, size_t n, char *err, size_t errlen);

/* The next up to max events, oldest first (NULL: spool empty); their
 * incarnation in *incarnation. They are removed from the spool only by
 * spool_consumed() once they are written. */
event_t *spool_read(spool_t *s, size_t max, size_t *n, int64_t *incarnation);
/* The events of the last spool_read are in PostgreSQL: forget them. */
void spool_consumed(spool_t *s);

int spool_empty(const spool_t *s);
uint64_t spool_bytes(const spool_t *s);      /* bytes not yet consumed */
uint64_t spool_corrupt(const spool_t *s);    /* damaged records skipped */

uint32_t crc32_buf(uint32_t crc, const void *p, size_t n);
/* A record's bytes (after magic, length and CRC) as an event; NULL when
 * its fields do not fit. Exposed for the fuzz harness. */
event_t *spool_record_event(const unsigned char *rec, uint32_t len);

#endif
