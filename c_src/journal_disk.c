/* journal_disk.c - the journal's two threads (see journal.h) and the
 * segments they make and free. Nothing here runs on the hook path. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include "deadline.h"
#include "journal_int.h"

/* a segment's salt: random (a client cannot know it); never 0, the seed
 * of the CRCs of earlier versions' files */
static uint32_t new_salt(void)
{
    static uint64_t counter;
    uint32_t salt = 0;

    if (getrandom(&salt, sizeof salt, GRND_NONBLOCK) != (ssize_t)sizeof salt) {
        /* no entropy yet (early boot): splitmix64 of the clocks and a counter */
        uint64_t z = (uint64_t)wall_us() ^ ((uint64_t)mono_us() << 20) ^
                     (__atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED) * 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        salt = (uint32_t)(z ^ (z >> 31));
    }
    return salt ? salt : 0x5A17u;
}

/* s's header (record.h) at the start of its mapping, and of its disk
 * file when the mapping is its memory file; 0 or -1 */
static int write_header(jseg_t *s)
{
    unsigned char *h = s->base;

    s->salt = new_salt();
    record_seg_header(h, s->salt);
    if (__atomic_load_n(&s->ram_fd, __ATOMIC_RELAXED) >= 0 &&
        pwrite(s->fd, h, JOURNAL_SEG_HDR, 0) != (ssize_t)JOURNAL_SEG_HDR)
        return -1;
    /* records from here on; the disk file holds the header already */
    s->used = s->copied = s->checked = s->read_from = s->written_to = JOURNAL_SEG_HDR;
    return 0;
}

/* a new segment file, allocated on disk, mapped, every page touched */
jseg_t *seg_make(journal_t *j, char *err, size_t errlen)
{
    jseg_t *s = calloc(1, sizeof *s);
    int rc;
    size_t off;

    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cap = j->seg_bytes;
    s->incarnation = j->incarnation;
    __atomic_store_n(&s->ram_fd, -1, __ATOMIC_RELAXED);
    if (!j->dir[0]) {
        /* in memory only: no file */
        s->fd = -1;
        s->base = mmap(NULL, s->cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (s->base == MAP_FAILED) {
            snprintf(err, errlen, "cannot map %zu bytes of memory: %s", s->cap, strerror(errno));
            free(s);
            return NULL;
        }
        goto mapped;
    }
    snprintf(s->path, sizeof s->path, "%s/journal-%lld-%u-%u.dat", j->dir,
             (long long)j->incarnation, j->epoch, j->number++);
    s->fd = open(s->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (s->fd < 0) {
        snprintf(err, errlen, "cannot make %s: %s", s->path, strerror(errno));
        free(s);
        return NULL;
    }
    recover_drop_cursor(s->path);   /* another file's, left behind: never this one's */
    rc = posix_fallocate(s->fd, 0, (off_t)s->cap);
    if (rc != 0) {
        snprintf(err, errlen, "cannot allocate %zu bytes for %s: %s", s->cap, s->path,
                 strerror(rc));
        goto fail;
    }
    if (j->ram_dir[0] && __atomic_load_n(&j->ram_segs, __ATOMIC_RELAXED) < j->ram_max) {
        char why[256];
        if (ram_attach(j, s, why, sizeof why) != 0) {
            pthread_mutex_lock(&j->mu);   /* journal_get_stats reads it */
            if (!j->ram_error[0])
                snprintf(j->ram_error, sizeof j->ram_error, "%s", why);   /* the first: logged */
            pthread_mutex_unlock(&j->mu);
        }
    }
    if (__atomic_load_n(&s->ram_fd, __ATOMIC_RELAXED) < 0) {
        __atomic_add_fetch(&j->ram_missed, 1, __ATOMIC_RELAXED);
        s->base = mmap(NULL, s->cap, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
    }
    if (s->base == MAP_FAILED) {
        snprintf(err, errlen, "cannot map %s: %s", s->path, strerror(errno));
        s->base = NULL;
        goto fail;
    }
mapped:
    if (j->touch) {
        /* write-fault every page now, so the hook path does not */
        for (off = 0; off < s->cap; off += j->page)
            ((volatile unsigned char *)s->base)[off] = 0;
        s->populated = s->cap;
    }
    if (write_header(s) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", s->path, strerror(errno));
        munmap(s->base, s->cap);
        ram_free(j, s, 0);
        goto fail;
    }
    return s;
fail:
    close(s->fd);
    unlink(s->path);
    free(s);
    return NULL;
}

void sync_failed(journal_t *j, const char *what, const char *path, int err)
{
    pthread_mutex_lock(&j->mu);
    snprintf(j->sync_error, sizeof j->sync_error, "%s %.200s: %s", what, path, strerror(err));
    pthread_mutex_unlock(&j->mu);
}

void seg_free(journal_t *j, jseg_t *s, int remove)
{
    if (s->base)
        munmap(s->base, s->cap);
    if (s->fd < 0) {
        free(s);   /* in memory only: gone */
        return;
    }
    /* kept: its memory file copied to the disk file, which is synced
     * before the memory file goes (ram_free) */
    if (ram_free(j, s, !remove) != 0)
        sync_failed(j, "cannot sync", s->path, errno);
    close(s->fd);
    if (remove) {
        recover_drop_cursor(s->path);   /* first: a file without one is read whole */
        unlink(s->path);
    }
    free(s);
}

/* The window: how far ahead of the hooks populate_step makes pages
 * writable. What the hooks write in half a sync interval at their rate
 * over the last RATE_US (64 KiB at least while they write, 16 MiB at
 * most); halved at each idle RATE_US, so nothing once they are idle: each
 * sync writes the pages made ready ahead too, zeros, and a fixed 16 MiB
 * window had an idle broker write 16 MiB of them a second. */
static void update_window(journal_t *j)
{
    int64_t now = mono_us(), dt = now - j->rate_at;
    uint64_t reserved, bytes, w;

    if (dt < RATE_US)
        return;
    reserved = __atomic_load_n(&j->reserved, __ATOMIC_RELAXED);
    bytes = reserved - j->rate_from;
    j->rate_from = reserved;
    j->rate_at = now;
    if (bytes == 0) {
        /* idle: shrinks to nothing in a quarter of a second */
        j->window = (j->window / 2) & ~(j->page - 1);
        return;
    }
    w = bytes * (uint64_t)j->sync_ms * 500 / (uint64_t)dt;   /* bytes/us * half the interval */
    if (w < WINDOW_MIN)
        w = WINDOW_MIN;
    if (w > WINDOW)
        w = WINDOW;
    j->window = ((size_t)w + j->page - 1) & ~(j->page - 1);
}

/* How far ahead of the hooks s's pages are made writable: a memory file
 * all of it, from when it is made (its pages are allocated already and
 * never written to disk by being made writable: an idle broker still
 * writes nothing, and the hooks find every page of the spares ready
 * however long this thread waits for a CPU); a disk file mapped or a
 * segment in memory only, the window of the hooks' rate. */
static size_t window_of(const journal_t *j, const jseg_t *s)
{
    return __atomic_load_n(&s->ram_fd, __ATOMIC_RELAXED) >= 0 ? s->cap : j->window;
}

/* Keeps the pages the hooks will write next mapped and writable: up to
 * the window ahead of the hooks' offset in the segment in use, and the
 * first window of each spare. Every sync of the segment in use writes its
 * dirty pages and write-protects them again, so they are made writable
 * anew after each sync (the disk thread resets populated).
 * MADV_POPULATE_WRITE does not change the contents, so this may run while
 * hooks write into the same segment. 1: did some. */
static int populate_step(journal_t *j)
{
    jseg_t *s, *cur;
    size_t from = 0, to = 0, n, done;
    int rc;

    update_window(j);
    pthread_mutex_lock(&j->mu);
    cur = __atomic_load_n(&j->cur, __ATOMIC_ACQUIRE);
    s = NULL;
    if (cur) {
        size_t used = __atomic_load_n(&cur->used, __ATOMIC_RELAXED) & ~(j->page - 1);
        from = __atomic_load_n(&cur->populated, __ATOMIC_RELAXED);
        if (from < used)
            from = used;
        size_t win = window_of(j, cur);
        to = used + win < cur->cap ? used + win : cur->cap;   /* window 0: none */
        if (from < to)
            s = cur;
    }
    if (!s) {
        for (s = j->spares; s; s = s->next) {
            from = __atomic_load_n(&s->populated, __ATOMIC_RELAXED);
            to = window_of(j, s) < s->cap ? window_of(j, s) : s->cap;
            if (from < to)
                break;
        }
    }
    if (s)
        __atomic_store_n(&s->populating, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&j->mu);
    /* the segment cannot go meanwhile: only this thread deletes; nor
     * can its mapping, once it is sealed (seg_reopen waits for this) */
    if (!s)
        return 0;
    done = __atomic_load_n(&s->populated, __ATOMIC_RELAXED);
    n = to - from < POPULATE_STEP ? to - from : POPULATE_STEP;
    rc = madvise(__atomic_load_n(&s->base, __ATOMIC_ACQUIRE) + from, n, MADV_POPULATE_WRITE);
    __atomic_store_n(&s->populating, 0, __ATOMIC_RELEASE);
    if (rc != 0 && errno != EINTR)
        n = s->cap - from;   /* not possible here: the hook path faults them in */
    /* unless a sync reset it meanwhile */
    __atomic_compare_exchange_n(&s->populated, &done, from + n, 0, __ATOMIC_RELAXED,
                                __ATOMIC_RELAXED);
    return 1;
}

/* a new spare goes last: segments are used in the order of their numbers,
 * which is the order the next start reads them in (mu held, or before the
 * thread starts) */
void push_spare(journal_t *j, jseg_t *s)
{
    s->next = NULL;
    if (j->spares_tail)
        j->spares_tail->next = s;
    else
        j->spares = s;
    j->spares_tail = s;
    j->nspares++;
    j->disk_bytes += s->cap;
    j->nsegs++;
}

/* fdatasync of the segment in use and of every sealed one not yet synced;
 * a sealed one is synced once a sync ran when every record reserved in it
 * was committed (a record committed after a sync is in the next one); a
 * failure goes to sync_error, which shows as the journal's error. A
 * segment being synced is not deleted meanwhile. Oldest first, the one
 * in use last: a process that dies during a sync leaves on disk the older
 * records before the newer ones, never a newer segment's without an older
 * one's tail (what a lost memory file then leaves is a prefix, in seq) */
static void sync_segments(journal_t *j)
{
    jseg_t *s, *cur, *list[64], *tmp;
    int n = 0, skip = 0, i, ok = 1, err = 0;
    const char *bad = "";

    pthread_mutex_lock(&j->mu);
    for (s = j->sealed; s; s = s->next)   /* newest first */
        if (!s->synced)
            skip++;
    skip = skip > 63 ? skip - 63 : 0;     /* the 63 oldest */
    for (s = j->sealed; s; s = s->next) {
        if (s->synced)
            continue;
        if (skip > 0) {
            skip--;
            continue;
        }
        s->syncing++;
        list[n++] = s;
    }
    for (i = 0; i < n / 2; i++) {         /* oldest first */
        tmp = list[i];
        list[i] = list[n - 1 - i];
        list[n - 1 - i] = tmp;
    }
    cur = __atomic_load_n(&j->cur, __ATOMIC_ACQUIRE);
    if (cur) {
        cur->syncing++;
        list[n++] = cur;
    }
    pthread_mutex_unlock(&j->mu);
    for (i = 0; i < n; i++) {
        jseg_t *g = list[i];
        int sealed = g != cur, rc;
        if (__atomic_load_n(&g->ram_fd, __ATOMIC_ACQUIRE) >= 0) {
            /* its committed records written to the disk file with pwrite:
             * no page the hooks store into is touched */
            rc = ram_sync(g, sealed);
        } else {
            /* the hooks wrote into its mapping: a sealed one needs one
             * sync that starts once all its records are committed (a
             * record committed later would be left to writeback) */
            int all = 0;
            if (sealed) {
                g->checked = ram_committed(g, g->checked);
                all = g->checked == __atomic_load_n(&g->used, __ATOMIC_ACQUIRE);
            }
            rc = fdatasync(g->fd) != 0 ? -1 : all;
            if (rc == 0 && !sealed)
                __atomic_store_n(&g->populated, 0, __ATOMIC_RELAXED);   /* cleaned */
        }
        if (rc < 0 && ok) {
            ok = 0;
            err = errno;
            bad = g->path;
        } else if (rc == 1) {
            __atomic_store_n(&g->synced, 1, __ATOMIC_RELEASE);
        }
    }
    pthread_mutex_lock(&j->mu);
    for (i = 0; i < n; i++)
        list[i]->syncing--;
    if (ok) {
        j->syncs++;
        j->last_sync_us = wall_us();
        j->sync_error[0] = '\0';
    } else {
        snprintf(j->sync_error, sizeof j->sync_error, "cannot sync %.200s: %s", bad, strerror(err));
    }
    pthread_mutex_unlock(&j->mu);
}

/* a sealed segment bulk_segments has work for (mu held) */
static int to_copy(const jseg_t *s)
{
    if (s->recovered || __atomic_load_n(&s->live, __ATOMIC_ACQUIRE) == 0)
        return 0;   /* an earlier start's file, or about to go */
    if (__atomic_load_n(&s->ram_fd, __ATOMIC_RELAXED) >= 0)
        return 1;   /* in memory */
    return !s->remapped;
}

/* The sealed segments still in memory (the 16 oldest), oldest first, go
 * whole to their disk files (ram_bulk), from which the writer reads them
 * from then on, and the memory files go (ram_settle). A sealed segment
 * made on disk only (the hooks wrote into its mapping) is mapped afresh
 * once all its records are committed: its pages are no longer mapped
 * dirty, and writing them back flushes no TLB. Each is marked syncing
 * meanwhile, so none is deleted. Not on the journal thread: writing that
 * much may be throttled by the kernel's writeback, and the journal thread
 * keeps the hooks' pages ready. The copies stop (between steps of
 * BULK_STEP) once the next sync is due (until, mono_us): the syncs keep
 * their interval; a copy goes on at the next tick. */
static void bulk_segments(journal_t *j, int64_t until)
{
    jseg_t *s, *todo[16];
    int n = 0, i;

    pthread_mutex_lock(&j->mu);
    for (s = j->sealed; s; s = s->next)   /* newest first: the last 16 kept */
        if (to_copy(s)) {
            if (n == 16) {
                todo[0]->syncing--;
                memmove(todo, todo + 1, 15 * sizeof todo[0]);
                n--;
            }
            s->syncing++;
            todo[n++] = s;
        }
    pthread_mutex_unlock(&j->mu);
    /* oldest first; one not ready yet (a record still being written) does
     * not hold up the others; one that fails is tried again next time */
    for (i = n - 1; i >= 0; i--) {
        s = todo[i];
        if (mono_us() >= until) {
            /* the sync first; the rest at the next tick */
        } else if (__atomic_load_n(&s->ram_fd, __ATOMIC_RELAXED) < 0) {
            /* no hook writes into it any more: mapped afresh, once even if
             * that failed */
            s->checked = ram_committed(s, s->checked);
            if (s->checked == __atomic_load_n(&s->used, __ATOMIC_ACQUIRE) &&
                (seg_reopen(j, s) == 0 || errno != EBUSY))
                s->remapped = 1;
        } else if (ram_bulk(s, until) && ram_settle(j, s) == 0) {
            s->remapped = 1;      /* mapped from its disk file: done */
        }
        pthread_mutex_lock(&j->mu);
        todo[i]->syncing--;
        pthread_mutex_unlock(&j->mu);
    }
}

/* a thread named name that runs work every ms until the journal stops */
static void *every(journal_t *j, const char *name, int ms, void (*work)(journal_t *))
{
#ifdef __linux__
    pthread_setname_np(pthread_self(), name);
#else
    (void)name;
#endif
    pthread_mutex_lock(&j->mu);
    while (!j->stop) {
        struct timespec dl;
        deadline_after(&dl, ms);
        pthread_cond_timedwait(&j->sync_cv, &j->mu, &dl);
        if (j->stop)
            break;
        pthread_mutex_unlock(&j->mu);
        work(j);
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* the disk thread's tick: the sync once it is due (sync_ms after the
 * last one ended), then sealed segments to disk until the next one */
static void disk_tick(journal_t *j)
{
    if (mono_us() >= j->sync_at) {
        sync_segments(j);
        j->sync_at = mono_us() + (int64_t)j->sync_ms * 1000;
    }
    bulk_segments(j, j->sync_at);
}

void *disk_main(void *arg)
{
    journal_t *j = arg;

    j->sync_at = mono_us() + (int64_t)j->sync_ms * 1000;
    return every(j, "vmq_pgev_disk", j->sync_ms < TICK_MS ? j->sync_ms : TICK_MS, disk_tick);
}

void *journal_main(void *arg)
{
    journal_t *j = arg;
    int64_t retry_at = 0;

#ifdef __linux__
    pthread_setname_np(pthread_self(), "vmq_pgev_jrnl");
#endif
    pthread_mutex_lock(&j->mu);
    while (!j->stop) {
        jseg_t **pp = &j->sealed, *dead = NULL, *s;
        int want;
        int64_t now = mono_us();

        /* sealed segments read past, whose every event is written */
        while ((s = *pp) != NULL) {
            if (__atomic_load_n(&s->live, __ATOMIC_ACQUIRE) == 0 &&
                __atomic_load_n(&s->passed, __ATOMIC_ACQUIRE) && !s->syncing) {
                *pp = s->next;
                s->next = dead;
                dead = s;
                j->disk_bytes -= s->cap;
                j->nsegs--;
                if (s->recovered)
                    j->old_bytes -= s->cap;
            } else {
                pp = &s->next;
            }
        }
        want = j->nspares < j->spares_want && j->disk_bytes + j->seg_bytes <= j->max_bytes &&
               now >= retry_at;
        /* with a spare ready, the next one waits for room in memory (the
         * disk thread moves sealed segments to disk) rather than be mapped from
         * its disk file; without one it is made at once, either way */
        if (want && j->nspares > 0 && j->ram_dir[0] &&
            __atomic_load_n(&j->ram_segs, __ATOMIC_RELAXED) >= j->ram_max)
            want = 0;
        pthread_mutex_unlock(&j->mu);
        while (dead) {
            s = dead->next;
            seg_free(j, dead, 1);
            dead = s;
        }
        if (want) {
            char err[256];
            s = seg_make(j, err, sizeof err);
            pthread_mutex_lock(&j->mu);
            if (s) {
                push_spare(j, s);
                j->error[0] = '\0';
            } else {
                snprintf(j->error, sizeof j->error, "%s", err);
                retry_at = mono_us() + RETRY_US;
            }
            continue;   /* the next spare at once; the lock is held */
        }
        if (!j->touch && populate_step(j)) {
            pthread_mutex_lock(&j->mu);
            continue;
        }
        pthread_mutex_lock(&j->mu);
        if (!j->stop) {
            struct timespec dl;
            deadline_after(&dl, TICK_MS);
            pthread_cond_timedwait(&j->cv, &j->mu, &dl);
        }
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

