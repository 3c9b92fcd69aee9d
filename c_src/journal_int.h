/* journal_int.h - the journal's inside, shared by journal.c (open, close,
 * reserve and commit, the writer's reads), journal_disk.c (the two
 * threads) and journal_ram.c (the memory files). */
#ifndef VMQ_PGEV_JOURNAL_INT_H
#define VMQ_PGEV_JOURNAL_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "deadline.h"
#include "journal.h"
#include "record.h"
#include "recover.h"

#define SPARES 2                 /* segments kept ready ahead of the hook path ... */
#define SPARE_BYTES (8u << 20)   /* ... on disk, at least this much of them (small
                                  * segments: a burst fills one in milliseconds) */
#define POPULATE_STEP (4u << 20) /* pages faulted in ahead, per step */
#define BULK_STEP (4u << 20)     /* a sealed segment goes to disk this much at a time */
#define WINDOW (16u << 20)       /* at most this far ahead of the hooks pages are kept writable */
#define WINDOW_MIN (64u << 10)   /* ... at least this far while hooks write */
#define RATE_US 20000            /* the hooks' rate is measured over this long */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23   /* Linux 5.14 */
#endif
#define TICK_MS 10
#define RETRY_US 1000000         /* after a segment could not be made */

typedef struct jseg jseg_t;

/* before each copy journal_read makes: its segment and the record's place */
typedef struct copy_hdr {
    jseg_t *s;
    size_t start, end;
} copy_hdr_t;

struct jseg {
    struct jseg *next;           /* in its list (spares, sealed), under mu */
    struct jseg *after;          /* the segment read after it: set before it is sealed (the
                                  * hook that seals it), or at open (earlier starts' files) */
    int passed;                  /* atomic: the writer read past it (it may go once written) */
    size_t read_from;            /* its records are read from here (an earlier start's file:
                                  * after what its cursor file says is written) */
    size_t written_to;           /* writer: every record before this offset is written
                                  * (released in order); kept at close in its cursor file */
    unsigned char *base;         /* set before others see the segment; changed after only
                                  * by seg_reopen (atomic, under rd_mu) */
    size_t cap;
    size_t used;                 /* hook path, under the queue lock; the writer reads up to it
                                  * (its final value once it has seen cur move on: acquire) */
    uint64_t live;               /* atomic: reserved, not yet released */
    int fd;
    int64_t incarnation;         /* of the events in it */
    uint32_t salt;               /* its records' CRCs start from it (record.h) */
    int recovered;               /* an earlier start's file (recover.h) */
    int synced;                  /* atomic, set by the disk thread: synced since it was
                                  * sealed, every record reserved in it committed then */
    size_t checked;              /* disk thread: the records up to here (a record's start)
                                  * are committed (ram_committed) */
    int syncing;                 /* under mu: the disk thread works on it; not deleted */
    size_t populated;            /* atomic: pages made writable up to here (0: again
                                  * from the hooks' offset: a sync cleaned them) */
    int populating;              /* the journal thread makes its pages writable: set
                                  * under mu, cleared atomically (seg_reopen waits) */
    int ram_fd;                  /* atomic: its memory file (journal_ram.c) mapped at base;
                                  * -1: the disk file is (set by its maker and by the disk
                                  * thread, which settles it; read by the other threads) */
    size_t copied;               /* disk thread: its disk file holds the bytes up to here,
                                  * as they are in memory (<= checked; may be mid-record) */
    int remapped;                /* disk thread: read from its disk file once sealed */
    char path[4096];
    char ram_path[4200];
};

struct journal {
    char dir[3900];
    int64_t incarnation;
    unsigned epoch, number;
    size_t seg_bytes;
    uint64_t max_bytes;
    int sync_ms;
    size_t page;
    int touch;                   /* no MADV_POPULATE_WRITE: pages touched before use */

    jseg_t *cur;                 /* set under the queue lock, read atomically */
    uint64_t busy;               /* atomic: reserved, not yet committed */
    uint64_t no_room;            /* under the queue lock; read atomically */
    uint64_t reserved;           /* bytes taken by hooks so far: under the queue lock; read atomically */
    size_t window;               /* journal thread: how far ahead pages are made writable */
    uint64_t rate_from;          /* journal thread: reserved at rate_at */
    int64_t rate_at;

    pthread_mutex_t mu;          /* never held across I/O */
    pthread_mutex_t rd_mu;       /* the writer, while it reads segments (journal_read,
                                  * journal_peek); the disk thread, to change a sealed
                                  * segment's base (seg_reopen) */
    pthread_cond_t cv;
    pthread_t thread;            /* makes spares, deletes written segments */
    pthread_t disk_thread;       /* sealed segments from memory to disk, the syncs (its
                                  * waits never hold up the spares) */
    pthread_cond_t sync_cv;      /* the disk thread waits on it */
    int64_t sync_at;             /* disk thread: the next sync */
    int stop;
    jseg_t *spares, *spares_tail, *sealed;   /* spares: oldest (lowest number) first */
    int nspares;
    int spares_want;             /* SPARES, or more for SPARE_BYTES (set at open) */
    uint64_t disk_bytes, nsegs, syncs;
    uint64_t old_bytes;          /* of earlier starts' files still on disk */
    uint64_t unread_bytes;       /* ... their size at open, in disk_bytes until journal_recover */
    uint64_t corrupt, unreadable;   /* in earlier starts' files (at open) */
    char old_error[256];         /* why one of them could not be read */
    size_t old_n, old_ev_bytes;  /* their events, until journal_take_recovered */
    uint64_t old_hook[EVENT_KINDS];   /* ... of each hook */
    uint64_t recovered;          /* events in them (at open) */
    jseg_t *old_last;            /* the newest of them (its after: the first own segment) */

    /* the writer's read position (journal_read): only the writer thread */
    jseg_t *rd_seg;              /* the segment it reads */
    size_t rd_pos;               /* ... the next record's offset (this start's segments) */
    rec_reader_t rd;             /* ... its reader (an earlier start's file) */
    const unsigned char *rd_rec; /* ... the record found there and not yet taken */
    int64_t last_sync_us;
    char error[256];
    char sync_error[256];        /* why the last sync failed ("" once one succeeds), or why a
                                  * file could not be synced at close; shown as error when
                                  * that is "" */
    char ram_dir[64];            /* the memory files' directory, "": none (ram_error) */
    char ram_error[256];         /* under mu (and before the threads start) */
    uint64_t ram_segs;           /* atomic: segments with a memory file */
    uint64_t ram_max;            /* ... at most (journal_memory_bytes); more: on disk directly */
    uint64_t ram_missed;         /* atomic: segments made without one (the hooks wrote into the
                                  * disk file's mapping) */
};


/* journal_disk.c */
/* a new segment file, allocated on disk and mapped; NULL and err */
jseg_t *seg_make(journal_t *j, char *err, size_t errlen);
/* unmaps and closes s; remove: deletes its files, else syncs it (its
 * memory file's contents copied to the disk file first, the memory file
 * kept for the next start when that fails; a failure goes to sync_error) */
void seg_free(journal_t *j, jseg_t *s, int remove);
/* records why a sync failed in sync_error (takes mu) */
void sync_failed(journal_t *j, const char *what, const char *path, int err);
/* a new spare goes last (mu held, or before the threads start) */
void push_spare(journal_t *j, jseg_t *s);
/* the journal thread (spares, deletions, writable pages) and the disk
 * thread (sealed segments to disk, syncs) */
void *journal_main(void *arg);
void *disk_main(void *arg);

/* journal_ram.c */
int ram_dir_for(const char *dir, char *out, size_t outlen, char *why, size_t whylen);
int ram_attach(journal_t *j, jseg_t *s, char *err, size_t errlen);
size_t ram_committed(const jseg_t *s, size_t from);
int ram_sync(jseg_t *s, int sealed);
int ram_bulk(jseg_t *s, int64_t until);
int ram_settle(journal_t *j, jseg_t *s);
/* s (sealed, every record in it committed) read from its disk file,
 * mapped afresh and read-only, from now on: its present mapping and its
 * page table entries go; 0, or -1 and errno (it stays as it is; EBUSY:
 * the writer is reading) */
int seg_reopen(journal_t *j, jseg_t *s);
/* keep: its disk file gets all of it and is synced first; -1 (errno) when
 * that failed: the memory file stays, for the next start to copy */
int ram_free(journal_t *j, jseg_t *s, int keep);
/* skip: the names of this start's files begin so (they are not copied);
 * returns how many memory files it removed */
uint64_t ram_recover(const char *ram_dir, const char *dir, const char *skip,
                     uint64_t *unreadable, char *err, size_t errlen);

#endif
