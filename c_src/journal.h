/* journal.h - the log the hooks append to and the writer reads in order.
 *
 * Segments of seg_bytes, files journal-<incarnation>-<epoch>-<number>.dat
 * in the spool directory, each made ahead by the journal thread (disk
 * space taken with posix_fallocate, so a full disk is an error there and
 * never a SIGBUS on the hook path). The hooks write into a memory file of
 * the same name in a tmpfs (journal_ram.c), or, without one, into the
 * disk file's mapping. A record (record.h) is written once, by its hook,
 * and never again; the writer reads copies by offset, and what it has
 * written is known outside the records (the segments' counts of events
 * not yet released; after a restart, PostgreSQL's resume point).
 *
 * Two threads: the journal thread makes segments ahead, keeps the pages
 * the hooks write next writable and deletes segments read past and
 * written; the disk thread copies committed records to the disk files and
 * syncs them every sync_ms (what a power loss can take), and copies each
 * sealed segment to disk whole, the writer reading it from there. Files
 * left at close stay; the next open takes them over (recover.h) and they
 * are read first. Knows nothing of erl_nif or libpq. */
#ifndef VMQ_PGEV_JOURNAL_H
#define VMQ_PGEV_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "hooks.h"

#define JOURNAL_SEG_MAX (64u * 1024 * 1024)
#define JOURNAL_SEG_MIN (1u * 1024 * 1024)
/* the end of every segment kept for the last event before a stop */
#define JOURNAL_LAST_ROOM (8u * 1024)

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
    uint64_t ram_segments;      /* segments with a memory file now */
    uint64_t ram_missed;        /* segments made without one since open */
    char ram_dir[64];           /* where those are, "": none (ram_error says why) */
    char ram_error[256];        /* why not, or why the first one could not be made; "" */
} journal_stats_t;

/* Makes the first segments in dir (synchronously) and starts the
 * journal's two threads; the files earlier starts left there are taken
 * over by journal_recover. max_bytes bounds the segment files together,
 * the earlier ones included; mem_bytes the memory files (0: none, the
 * hooks write into the disk files' mappings). NULL and err on failure.
 * dir NULL: the segments are in memory only (no file, no disk
 * thread, nothing read from earlier starts or kept at close); max_bytes
 * then only sizes them (the queue's limits bound the events). */
journal_t *journal_open(const char *dir, int64_t incarnation, uint64_t max_bytes,
                        int sync_ms, uint64_t mem_bytes, char *err, size_t errlen);
/* Stops the threads, syncs and unmaps. Files whose events were all
 * released, and spare segments, are removed; the others stay. The caller
 * makes sure no record is being reserved or filled (journal_busy). */
void journal_close(journal_t *j);
/* The same; -1 and why in err when a segment could not be copied to disk
 * or synced at the close (its memory file then stays for the next start) */
int journal_close_report(journal_t *j, char *err, size_t errlen);

/* Hook path, under the queue lock: takes space for an event of ev_bytes,
 * and writes none of it (no page is touched there); NULL when there is no
 * room (counted in no_room with JR_COUNT: a dropped event), or when it
 * does not fit at all (journal_fits, which the caller asks first). Only JR_LAST
 * (the last event before a stop) may take the JOURNAL_LAST_ROOM bytes at
 * the end of a segment, so it finds room when the journal is full. The
 * returned event's fields are the caller's to fill, outside the lock,
 * before journal_commit (its next is never set), with *salt. *wake is
 * set to 1 when the journal thread has work (a segment filled): the
 * caller calls journal_wake once it has let go of the queue lock. */
#define JR_COUNT 1
#define JR_LAST 2
event_t *journal_reserve(journal_t *j, size_t ev_bytes, int how, int *wake, uint32_t *salt);
void journal_wake(journal_t *j);
/* Whether an event of ev_bytes fits in a segment at all (how: 0 or
 * JR_LAST, as journal_reserve); needs no journal lock (the segment size
 * is fixed at open). */
int journal_fits(const journal_t *j, size_t ev_bytes, int how);
/* Hook path, no lock: checksums the filled event and publishes it. */
void journal_commit(journal_t *j, event_t *ev, uint32_t salt);

/* The writer thread only, from here on. The committed events from its
 * position on, earlier starts' first: at most max, and more than
 * max_bytes only when the first is; all of one incarnation, and all from
 * earlier starts' files or none (journal_reading_old, when called). Copies
 * (in memory, linked, home EV_JOURNAL): *n of them, *bytes, each counted
 * in per_hook[hook] (EVENT_KINDS of them), the last in *tail; NULL when there is none yet (or the first is of the other kind:
 * call again). *nomem: it stopped because a copy found no memory. Reading a damaged file may take long: never under a lock
 * the hooks take. */
event_t *journal_read(journal_t *j, size_t max, size_t max_bytes, size_t *n, size_t *bytes,
                      uint64_t *per_hook, event_t **tail, int *nomem);
/* 1 when journal_read would return an event now: its incarnation, ts */
int journal_peek(journal_t *j, int64_t *origin, int64_t *ts_us);
/* 1 while the position is in an earlier start's file (or at its end) */
int journal_reading_old(const journal_t *j);
/* A copy is written: freed, and its record's space may go. */
void journal_release(event_t *ev);
/* A copy freed, its record not written: it stays for the next start (1),
 * or is lost with a journal in memory only (0). */
int journal_forget(event_t *ev);
/* 1: opened without a directory (journal_open) */
int journal_in_memory(const journal_t *j);
/* the incarnation of the events this journal takes (not of earlier starts') */
int64_t journal_incarnation(const journal_t *j);
/* Records reserved and not yet committed. */
uint64_t journal_busy(const journal_t *j);

/* Takes over the files earlier starts left in its directory (recover.h),
 * as segments read before this start's: while hooks write (no lock of
 * theirs is taken), before the writer reads. Reading a large backlog's
 * files takes long. Nothing for a journal in memory. */
void journal_recover(journal_t *j);
/* The number of events journal_recover found, their bytes and their
 * number per hook (per_hook: EVENT_KINDS of them); once, then 0
 * (queue_take_earlier). */
size_t journal_take_recovered(journal_t *j, size_t *bytes, uint64_t *per_hook);
/* The incarnation of the events of a copy journal_read made. */
int64_t journal_event_incarnation(const event_t *ev);

void journal_get_stats(journal_t *j, journal_stats_t *st);

#endif
