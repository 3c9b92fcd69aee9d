/* journal.c - the hook path's on-disk queue (see journal.h): open (with
 * the files of earlier starts, recover.h), close, reserve and commit on the
 * hook path, release by the writer. Its threads are journal_disk.c. */
#define _GNU_SOURCE
#include "journal_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "deadline.h"
#include "recover.h"

/* The files earlier starts left in dir: *epoch raised to the highest
 * epoch of this incarnation's, their number returned and their bytes
 * added to *bytes (journal_recover reads them later; until then they
 * count so) */
static uint64_t scan_earlier(const char *dir, int64_t incarnation, unsigned *epoch, uint64_t *bytes)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char prefix[64];
    size_t pl;
    uint64_t files = 0;

    if (!d)
        return 0;
    pl = (size_t)snprintf(prefix, sizeof prefix, "journal-%lld-", (long long)incarnation);
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        struct stat st;
        if (strncmp(e->d_name, prefix, pl) == 0) {
            char *end;
            unsigned long ep = strtoul(e->d_name + pl, &end, 10);
            if (*end == '-' && ep >= *epoch)
                *epoch = (unsigned)ep;
        }
        if (len > 4 && strcmp(e->d_name + len - 4, ".dat") == 0 &&
            (strncmp(e->d_name, "journal-", 8) == 0 || strncmp(e->d_name, "spool-", 6) == 0) &&
            fstatat(dirfd(d), e->d_name, &st, 0) == 0) {
            files++;
            *bytes += (uint64_t)st.st_size;
        }
    }
    closedir(d);
    return files;
}

/* The files earlier starts left become sealed segments of this journal,
 * read first (oldest first, each one's after the next, the last one's
 * after it this start's first) by the writer, which reads nothing yet;
 * each file goes, like any sealed segment, once all its events are
 * released. Each is made before mu is taken (a hook sealing a segment
 * waits for it). */
static void adopt_recovered(journal_t *j, recovered_t *r)
{
    jseg_t *own = j->rd_seg;

    while (r) {
        recovered_t *next = r->next;
        jseg_t *s = calloc(1, sizeof *s);
        if (s) {
            s->base = r->base;
            s->ram_fd = -1;
            s->cap = s->used = s->populated = s->copied = r->size;
            s->fd = r->fd;
            s->incarnation = r->incarnation;
            s->recovered = s->synced = 1;
            s->live = r->count;
            s->salt = r->salt;
            s->read_from = s->written_to = r->from;
            snprintf(s->path, sizeof s->path, "%s", r->path);
        } else {
            /* left on disk for the next start */
            munmap(r->base, r->size);
            close(r->fd);
        }
        pthread_mutex_lock(&j->mu);
        if (!s) {
            j->unreadable++;
        } else {
            s->next = j->sealed;
            j->sealed = s;
            if (j->old_last)
                j->old_last->after = s;
            else
                j->rd_seg = s;
            j->old_last = s;
            s->after = own;
            /* counted at open already (unread_bytes), as far as it goes */
            uint64_t counted = s->cap < j->unread_bytes ? s->cap : j->unread_bytes;
            j->unread_bytes -= counted;
            j->disk_bytes += s->cap - counted;
            j->old_bytes += s->cap;
            j->nsegs++;
            j->old_n += r->count;
            j->recovered += r->count;
            j->old_ev_bytes += r->bytes;
            for (size_t h = 0; h < EVENT_KINDS; h++)
                j->old_hook[h] += r->per_hook[h];
        }
        pthread_mutex_unlock(&j->mu);
        free(r);
        r = next;
    }
    if (j->rd_seg != own)
        recover_reader(&j->rd, j->rd_seg->base, j->rd_seg->cap, j->rd_seg->read_from);
}

void journal_recover(journal_t *j)
{
    char rerr[256] = "", own[64];
    uint64_t corrupt = 0, unreadable = 0;
    recovered_t *r;

    if (!j->dir[0])
        return;
    snprintf(own, sizeof own, "journal-%lld-%u-", (long long)j->incarnation, j->epoch);
    /* a killed start's memory files first: they hold its newest events */
    if (j->ram_dir[0])
        __atomic_sub_fetch(&j->ram_segs,
                           ram_recover(j->ram_dir, j->dir, own, &unreadable, rerr, sizeof rerr),
                           __ATOMIC_RELAXED);
    r = recover_files(j->dir, own, &corrupt, &unreadable, rerr, sizeof rerr);
    adopt_recovered(j, r);
    pthread_mutex_lock(&j->mu);
    j->disk_bytes -= j->unread_bytes;   /* the files not taken over (removed, unreadable) */
    j->unread_bytes = 0;
    j->corrupt += corrupt;
    j->unreadable += unreadable;
    snprintf(j->old_error, sizeof j->old_error, "%s", rerr);
    pthread_mutex_unlock(&j->mu);
}

/* stops and joins the first `started` of the journal and disk threads */
static void stop_threads(journal_t *j, int started)
{
    pthread_mutex_lock(&j->mu);
    j->stop = 1;
    pthread_mutex_unlock(&j->mu);
    pthread_cond_broadcast(&j->cv);
    pthread_cond_broadcast(&j->sync_cv);
    if (started > 0)
        pthread_join(j->thread, NULL);
    if (started > 1 && j->dir[0])
        pthread_join(j->disk_thread, NULL);
}

/* j's mutexes and condition variables (on the monotonic clock); 0 or -1
 * (glibc's own no resource: after a failure there is nothing to destroy) */
static int sync_init(journal_t *j)
{
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);

    if (rc == 0) {
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        rc = pthread_mutex_init(&j->rd_mu, NULL) | pthread_mutex_init(&j->mu, NULL) |
             pthread_cond_init(&j->cv, &ca) | pthread_cond_init(&j->sync_cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    return rc == 0 ? 0 : -1;
}

static void sync_destroy(journal_t *j)
{
    pthread_cond_destroy(&j->cv);
    pthread_cond_destroy(&j->sync_cv);
    pthread_mutex_destroy(&j->mu);
    pthread_mutex_destroy(&j->rd_mu);
}

journal_t *journal_open(const char *dir, int64_t incarnation, uint64_t max_bytes,
                        int sync_ms, uint64_t mem_bytes, char *err, size_t errlen)
{
    journal_t *j;
    uint64_t seg;
    int started;

    (void)crc32c("", 0);   /* makes its tables before any hook needs them */
    if (dir && max_bytes < 2ull * JOURNAL_SEG_MIN) {
        snprintf(err, errlen, "spool_max_bytes %llu is too small for the journal (at least %u)",
                 (unsigned long long)max_bytes, 2u * JOURNAL_SEG_MIN);
        return NULL;
    }
    j = calloc(1, sizeof *j);
    if (!j) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    /* first: seg_make takes mu */
    if (sync_init(j) != 0) {
        snprintf(err, errlen, "out of resources");
        free(j);
        return NULL;
    }
    snprintf(j->dir, sizeof j->dir, "%s", dir ? dir : "");
    j->incarnation = incarnation;
    /* in memory: the queue's limits bound what is in the segments */
    j->max_bytes = dir ? max_bytes : UINT64_MAX / 2;
    j->sync_ms = sync_ms > 0 ? sync_ms : 1000;
    /* a burst right after the start finds its pages ready; in memory
     * only, pages are memory in use: made ready at the hooks' rate */
    j->window = dir ? WINDOW : 0;
    j->rate_at = mono_us();
    j->page = (size_t)sysconf(_SC_PAGESIZE);
    if (j->page == 0 || j->page > JOURNAL_SEG_MIN)
        j->page = 4096;
    seg = max_bytes / 8;
    if (seg > JOURNAL_SEG_MAX)
        seg = JOURNAL_SEG_MAX;
    if (seg < JOURNAL_SEG_MIN)
        seg = JOURNAL_SEG_MIN;
    j->seg_bytes = (size_t)(seg / j->page * j->page);
    j->spares_want = SPARES;
    if (dir && SPARE_BYTES / j->seg_bytes > SPARES)
        j->spares_want = (int)(SPARE_BYTES / j->seg_bytes);
    if (!dir) {
        j->epoch = 1;
    } else if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot make %s: %s", dir, strerror(errno));
        sync_destroy(j);
        free(j);
        return NULL;
    }
    j->ram_max = mem_bytes / j->seg_bytes;
    if (dir) {
        uint64_t ram_bytes = 0;
        if (j->ram_max == 0)
            snprintf(j->ram_error, sizeof j->ram_error, "journal_memory_bytes is %llu, less than "
                     "a segment (%zu bytes)", (unsigned long long)mem_bytes, j->seg_bytes);
        else   /* on failure ram_dir stays empty: the hooks write into the disk files' mappings */
            ram_dir_for(dir, j->ram_dir, sizeof j->ram_dir, j->ram_error, sizeof j->ram_error);
        /* earlier starts' files take their room on disk and in memory
         * from the start, though they are read later; the epoch is past
         * theirs, memory files included (a killed start's) */
        (void)scan_earlier(dir, incarnation, &j->epoch, &j->unread_bytes);
        if (j->ram_dir[0])
            j->ram_segs = scan_earlier(j->ram_dir, incarnation, &j->epoch, &ram_bytes);
        j->epoch++;
        j->disk_bytes = j->unread_bytes;
    }
    {
        /* can the kernel fault pages in for us (Linux 5.14+)? */
        void *m = mmap(NULL, j->page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        j->touch = m == MAP_FAILED || madvise(m, j->page, MADV_POPULATE_WRITE) != 0;
        if (m != MAP_FAILED)
            munmap(m, j->page);
    }
    err[0] = '\0';
    j->cur = seg_make(j, err, errlen);
    if (!j->cur) {
        sync_destroy(j);
        free(j);
        return NULL;
    }
    j->disk_bytes += j->cur->cap;
    j->nsegs++;
    j->rd_seg = j->cur;
    j->rd_pos = JOURNAL_SEG_HDR;
    /* the spares too, so a burst right after the start finds room */
    while (j->nspares < j->spares_want && j->disk_bytes + j->seg_bytes <= j->max_bytes) {
        jseg_t *s = seg_make(j, err, errlen);
        if (!s)
            goto fail_spares;
        push_spare(j, s);
    }
    started = 0;
    if (pthread_create(&j->thread, NULL, journal_main, j) != 0) {
        snprintf(err, errlen, "cannot start the journal thread");
        goto fail_threads;
    }
    started = 1;
    if (!dir)
        return j;   /* nothing to sync or copy */
    if (pthread_create(&j->disk_thread, NULL, disk_main, j) != 0) {
        snprintf(err, errlen, "cannot start the journal's disk thread");
        goto fail_threads;
    }
    return j;
fail_threads:
    stop_threads(j, started);
fail_spares:
    while (j->spares) {
        jseg_t *next = j->spares->next;
        seg_free(j, j->spares, 1);
        j->spares = next;
    }
    seg_free(j, j->cur, 1);
    sync_destroy(j);
    free(j);
    return NULL;
}

/* at close: s goes when all its events are written; else it stays, with
 * its cursor file when some of them are (the next start reads on from
 * there) */
static void close_seg(journal_t *j, jseg_t *s)
{
    int done = __atomic_load_n(&s->live, __ATOMIC_ACQUIRE) == 0;

    if (!done && s->fd >= 0 && s->salt && s->written_to > s->read_from)
        (void)recover_save_cursor(s->path, s->salt, s->written_to);
    seg_free(j, s, done);
}

void journal_close(journal_t *j)
{
    (void)journal_close_report(j, NULL, 0);
}

int journal_close_report(journal_t *j, char *err, size_t errlen)
{
    jseg_t *s, *next;
    int rc;

    if (err && errlen)
        err[0] = '\0';
    if (!j)
        return 0;
    stop_threads(j, 2);
    j->sync_error[0] = '\0';   /* the threads are gone: what fails from here */
    for (s = j->spares; s; s = next) {
        next = s->next;
        seg_free(j, s, 1);
    }
    for (s = j->sealed; s; s = next) {
        next = s->next;
        close_seg(j, s);
    }
    if (j->cur)
        close_seg(j, j->cur);
    if (j->ram_dir[0])
        rmdir(j->ram_dir);   /* when empty */
    rc = j->sync_error[0] ? -1 : 0;
    if (rc && err && errlen)
        snprintf(err, errlen, "%s", j->sync_error);
    sync_destroy(j);
    free(j);
    return rc;
}

int journal_fits(const journal_t *j, size_t ev_bytes, int how)
{
    size_t keep = how & JR_LAST ? 0 : JOURNAL_LAST_ROOM;

    return record_size(ev_bytes) <= j->seg_bytes - JOURNAL_SEG_HDR - keep;
}

event_t *journal_reserve(journal_t *j, size_t ev_bytes, int how, int *wake, uint32_t *salt)
{
    size_t need = record_size(ev_bytes);
    size_t keep = how & JR_LAST ? 0 : JOURNAL_LAST_ROOM;   /* the last event's room */
    jseg_t *s = j->cur;
    unsigned char *rec;

    if (!journal_fits(j, ev_bytes, how))
        return NULL;   /* a guard: the queue asks journal_fits first (too large, not no room) */
    if (s->used + need + keep > s->cap) {
        jseg_t *next;
        pthread_mutex_lock(&j->mu);
        next = j->spares;
        if (next) {
            j->spares = next->next;
            if (!j->spares)
                j->spares_tail = NULL;
            j->nspares--;
            s->next = j->sealed;
            j->sealed = s;
            next->next = NULL;
            s->after = next;   /* before the writer can see s sealed (release) */
            __atomic_store_n(&j->cur, next, __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&j->mu);
        *wake = 1;   /* a spare to make: the caller tells the thread (journal_wake) */
        if (next)
            s = next;
        else if (!keep && s->used + need <= s->cap)
            ;   /* the last event: in the room every segment keeps for it */
        else {
            if (how & JR_COUNT)
                __atomic_store_n(&j->no_room, j->no_room + 1, __ATOMIC_RELAXED);
            return NULL;
        }
    }
    rec = s->base + s->used;
    __atomic_store_n(&s->used, s->used + need, __ATOMIC_RELAXED);
    __atomic_store_n(&j->reserved, j->reserved + need, __ATOMIC_RELAXED);
    __atomic_add_fetch(&s->live, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&j->busy, 1, __ATOMIC_RELAXED);
    *salt = s->salt;
    return record_event(rec);
}

void journal_commit(journal_t *j, event_t *ev, uint32_t salt)
{
    record_commit(record_of(ev), salt);
    __atomic_sub_fetch(&j->busy, 1, __ATOMIC_RELEASE);
}

void journal_wake(journal_t *j)
{
    pthread_cond_signal(&j->cv);
}

/* The writer is done with s: once every event in it is released too, the
 * journal thread may delete it. Its next segment is read from here. */
static void move_on(journal_t *j, jseg_t *s)
{
    jseg_t *next = s->after;

    __atomic_store_n(&s->passed, 1, __ATOMIC_RELEASE);
    j->rd_seg = next;
    j->rd_rec = NULL;
    if (next && next->recovered)
        recover_reader(&j->rd, next->base, next->cap, next->read_from);
    else
        j->rd_pos = JOURNAL_SEG_HDR;
}

/* The record at the writer's position, committed; NULL: none yet (a hook
 * is writing it, or none reserved). Moves past segments read to the end. */
static const unsigned char *next_record(journal_t *j)
{
    for (;;) {
        jseg_t *s = j->rd_seg, *cur;
        size_t used;

        if (!s)
            return NULL;
        if (s->recovered) {
            if (!j->rd_rec)
                j->rd_rec = recover_next(&j->rd, NULL);
            if (j->rd_rec)
                return j->rd_rec;
            move_on(j, s);
            continue;
        }
        cur = __atomic_load_n(&j->cur, __ATOMIC_ACQUIRE);
        used = __atomic_load_n(&s->used, __ATOMIC_ACQUIRE);
        if (j->rd_pos < used) {
            const unsigned char *rec = s->base + j->rd_pos;
            return record_committed(rec) ? rec : NULL;
        }
        if (s == cur)
            return NULL;   /* in use: the hooks add to it */
        move_on(j, s);     /* sealed before used was read: used is its end */
    }
}

/* the writer has taken the record next_record returned */
static void take_record(journal_t *j, const unsigned char *rec)
{
    if (j->rd_seg->recovered)
        j->rd_rec = NULL;
    else
        j->rd_pos += record_rsize(rec);
}

event_t *journal_read(journal_t *j, size_t max, size_t max_bytes, size_t *n, size_t *bytes,
                      uint64_t *per_hook, event_t **tail, int *nomem)
{
    event_t *head = NULL, *last = NULL;
    const unsigned char *rec;
    int64_t origin = 0;
    int old = journal_reading_old(j);

    *n = *bytes = 0;
    *nomem = 0;
    pthread_mutex_lock(&j->rd_mu);
    while (*n < max && (*n == 0 || *bytes < max_bytes) && (rec = next_record(j)) != NULL) {
        const event_t *ev = record_event((unsigned char *)rec);
        jseg_t *s = j->rd_seg;
        size_t len = ev->bytes;
        unsigned char *m;
        event_t *copy;

        if (s->recovered != old || (*n && s->incarnation != origin))
            break;   /* a batch is of one incarnation, and of earlier starts' files or not */
        m = malloc(sizeof(copy_hdr_t) + len);
        if (!m) {
            *nomem = 1;   /* the record stays: read again */
            break;
        }
        {
            /* journal_release finds the segment and the record's place */
            copy_hdr_t h = {s, (size_t)(rec - s->base), (size_t)(rec - s->base) + record_rsize(rec)};
            memcpy(m, &h, sizeof h);
        }
        copy = (event_t *)(void *)(m + sizeof(copy_hdr_t));
        memcpy(copy, ev, len);
        copy->next = NULL;
        copy->home = EV_JOURNAL;
        take_record(j, rec);
        origin = s->incarnation;
        if (last)
            last->next = copy;
        else
            head = copy;
        last = copy;
        (*n)++;
        *bytes += len;
        if (copy->hook < EVENT_KINDS)
            per_hook[copy->hook]++;
    }
    pthread_mutex_unlock(&j->rd_mu);
    *tail = last;
    return head;
}

int journal_peek(journal_t *j, int64_t *origin, int64_t *ts_us)
{
    const unsigned char *rec;

    pthread_mutex_lock(&j->rd_mu);
    rec = next_record(j);
    if (rec && origin)
        *origin = j->rd_seg->incarnation;
    if (rec && ts_us)
        *ts_us = record_event((unsigned char *)rec)->ts_us;
    pthread_mutex_unlock(&j->rd_mu);
    return rec != NULL;
}

int journal_reading_old(const journal_t *j)
{
    return j->rd_seg && j->rd_seg->recovered;
}

/* the header of a copy journal_read made */
static copy_hdr_t *hdr_of(const event_t *ev)
{
    return (copy_hdr_t *)(void *)((unsigned char *)ev - sizeof(copy_hdr_t));
}

void journal_release(event_t *ev)
{
    copy_hdr_t *h = hdr_of(ev);
    jseg_t *s = h->s;

    /* released in order (the writer's rule): the written part grows; a
     * gap (a damaged record skipped, or one released out of order) stops
     * it there, and the next start reads from there */
    if (h->start == s->written_to)
        s->written_to = h->end;
    __atomic_sub_fetch(&s->live, 1, __ATOMIC_RELEASE);
    free(h);
}

int journal_forget(event_t *ev)
{
    int kept = hdr_of(ev)->s->fd >= 0;

    free(hdr_of(ev));
    return kept;
}

int journal_in_memory(const journal_t *j)
{
    return !j->dir[0];
}

int64_t journal_incarnation(const journal_t *j)
{
    return j->incarnation;
}

uint64_t journal_busy(const journal_t *j)
{
    return __atomic_load_n(&j->busy, __ATOMIC_ACQUIRE);
}

size_t journal_take_recovered(journal_t *j, size_t *bytes, uint64_t *per_hook)
{
    size_t n = j->old_n;

    *bytes = j->old_ev_bytes;
    memcpy(per_hook, j->old_hook, sizeof j->old_hook);
    j->old_n = j->old_ev_bytes = 0;
    memset(j->old_hook, 0, sizeof j->old_hook);
    return n;
}

int64_t journal_event_incarnation(const event_t *ev)
{
    return hdr_of(ev)->s->incarnation;
}

void journal_get_stats(journal_t *j, journal_stats_t *st)
{
    pthread_mutex_lock(&j->mu);
    st->old_bytes = j->old_bytes;
    st->corrupt = j->corrupt;
    st->recovered = j->recovered;
    st->unreadable = j->unreadable;
    snprintf(st->old_error, sizeof st->old_error, "%s", j->old_error);
    st->disk_bytes = j->disk_bytes;
    st->segments = j->nsegs;
    st->syncs = j->syncs;
    st->last_sync_us = j->last_sync_us;
    st->seg_bytes = j->seg_bytes;
    snprintf(st->error, sizeof st->error, "%s", j->error[0] ? j->error : j->sync_error);
    snprintf(st->ram_dir, sizeof st->ram_dir, "%s", j->ram_dir);
    snprintf(st->ram_error, sizeof st->ram_error, "%s", j->ram_error);
    pthread_mutex_unlock(&j->mu);
    st->ram_segments = __atomic_load_n(&j->ram_segs, __ATOMIC_RELAXED);
    st->ram_missed = __atomic_load_n(&j->ram_missed, __ATOMIC_RELAXED);
    st->no_room = __atomic_load_n(&j->no_room, __ATOMIC_RELAXED);
}
