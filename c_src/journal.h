/* journal.h - the hook path's on-disk queue: events are written straight
 * into preallocated, memory-mapped segment files, so an event whose hook
 * call returned survives a crash of the VM (the page cache outlives the
 * process) and a backlog of any size up to the disk limit costs no memory
 * of the VM's own.
 *
 * Files: journal-<incarnation>-<epoch>-<number>.dat in the spool
 * directory (epoch: one per journal_open in an incarnation). A segment is
 * made whole by the journal thread before it is needed: posix_fallocate
 * (a full disk is an error here, never a SIGBUS on the hook path), mapped
 * shared, every page touched once. The hook path only bumps an offset.
 *
 * A record, 8-byte aligned:
 *   "VPGJ" | length (BE u32) | CRC-32C (BE u32) | size (BE u32) | 8 bytes | event_t
 * "length" is the event's bytes from seq on, which the CRC covers; "size"
 * is the whole record, written when the space is taken (so a record whose
 * writer died can be skipped); the magic is stored last. The 8 bytes and
 * the event's next pointer are only meaningful in memory. Once the event
 * is written to PostgreSQL its magic becomes "VPGW" (journal_release).
 *
 * The journal thread syncs the segments in use every sync_ms (what a
 * power loss can take), and deletes a segment once it is sealed (full)
 * and every event in it was released (written). Segments left at close
 * with unwritten events stay on disk; the next journal_open takes them
 * over (recover.h) as sealed segments whose events come first: the one
 * way every event goes, whichever start wrote it. Knows nothing of
 * erl_nif or libpq. */
#ifndef VMQ_PGEV_JOURNAL_H
#define VMQ_PGEV_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"

#define JOURNAL_HDR 24          /* record bytes before the event_t */
#define JOURNAL_SEG_MAX (64u * 1024 * 1024)
#define JOURNAL_SEG_MIN (1u * 1024 * 1024)

typedef struct journal journal_t;

typedef struct journal_stats {
    uint64_t disk_bytes;        /* all segment files: in use, spare, not yet written */
    uint64_t segments;          /* segment files now */
    uint64_t no_room;           /* events refused: no segment could be had */
    uint64_t syncs;
    int64_t last_sync_us;       /* wall clock of the last completed sync, 0: none */
    uint64_t seg_bytes;
    uint64_t old_bytes;         /* files of earlier starts not yet all written */
    uint64_t recovered;         /* events in them at open */
    uint64_t corrupt;           /* damaged records skipped in them */
    uint64_t unreadable;        /* their files that could not be read (left on disk) */
    char old_error[256];        /* why (the last such file), "" */
    char error[256];            /* why no segment could be made, "" */
} journal_stats_t;

/* Takes over the files earlier starts left in dir (recover.h), makes the
 * first segment (synchronously) and starts the journal thread. max_bytes
 * bounds the segment files together, the earlier ones included. NULL and
 * err on failure (the earlier files stay where they are). */
journal_t *journal_open(const char *dir, int64_t incarnation, uint64_t max_bytes,
                        int sync_ms, char *err, size_t errlen);
/* Stops the thread, syncs and unmaps. Files whose events were all
 * released, and spare segments, are removed; the others stay. The caller
 * makes sure no record is being reserved or filled (journal_busy). */
void journal_close(journal_t *j);

/* Hook path, under the queue lock: takes space for an event of ev_bytes;
 * NULL when there is no room (counted). The returned event's next is NULL
 * and its other fields are the caller's to fill before journal_commit. */
event_t *journal_reserve(journal_t *j, size_t ev_bytes);
/* Hook path, no lock: checksums the filled event and publishes it. */
void journal_commit(journal_t *j, event_t *ev);
/* 1 once journal_commit has published ev (acquire). */
int journal_ready(const event_t *ev);
/* The event is written: marked so on disk, its space may go (writer thread). */
void journal_release(event_t *ev);
/* Records reserved and not yet committed. */
uint64_t journal_busy(const journal_t *j);

/* The events of earlier starts' files, oldest first, linked (once; then
 * NULL): *n of them, *bytes in all, the last in *tail. They go to the
 * queue before any new event (queue_attach_journal). */
event_t *journal_take_recovered(journal_t *j, size_t *n, size_t *bytes, event_t **tail);
/* The incarnation a journal event was recorded in. */
int64_t journal_event_incarnation(const event_t *ev);

void journal_get_stats(journal_t *j, journal_stats_t *st);

#endif
