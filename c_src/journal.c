/* journal.c - the hook path's on-disk queue (see journal.h). */
#define _GNU_SOURCE
#include "journal.h"

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

#include "be32.h"
#include "crc32c.h"
#include "deadline.h"

#define SPARES 2                 /* segments kept ready ahead of the hook path */
#define POPULATE_STEP (4u << 20) /* pages faulted in ahead, per step */
#define WINDOW (16u << 20)       /* at most this far ahead of the hooks pages are kept writable */
#define WINDOW_MIN (64u << 10)   /* ... at least this far while hooks write */
#define RATE_US 20000            /* the hooks' rate is measured over this long */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23   /* Linux 5.14 */
#endif
#define TICK_MS 10
#define RETRY_US 1000000         /* after a segment could not be made */
#define EV_OFF offsetof(event_t, seq)

typedef struct jseg {
    struct jseg *next;
    unsigned char *base;
    size_t cap;
    size_t used;                 /* hook path, under the queue lock; read as a hint */
    uint64_t live;               /* atomic: reserved, not yet released */
    int fd;
    int synced;                  /* sync thread: synced since it was sealed */
    int syncing;                 /* under mu: the sync thread uses its fd; not deleted */
    size_t populated;            /* atomic: pages made writable up to here (0: again
                                  * from the hooks' offset: a sync cleaned them) */
    char path[4096];
} jseg_t;

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
    pthread_cond_t cv;
    pthread_t thread;            /* makes spares, deletes written segments */
    pthread_t sync_thread;       /* syncs (its waits never hold up the spares) */
    pthread_cond_t sync_cv;
    int stop;
    jseg_t *spares, *spares_tail, *sealed;   /* spares: oldest (lowest number) first */
    int nspares;
    uint64_t disk_bytes, nsegs, syncs;
    int64_t last_sync_us;
    char error[256];
};

static uint32_t magic_word(void)
{
    uint32_t m;
    memcpy(&m, "VPGJ", 4);
    return m;
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* a new segment file, allocated on disk, mapped, every page touched */
static jseg_t *seg_make(journal_t *j, char *err, size_t errlen)
{
    jseg_t *s = calloc(1, sizeof *s);
    int rc;
    size_t off;

    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cap = j->seg_bytes;
    snprintf(s->path, sizeof s->path, "%s/journal-%lld-%u-%u.dat", j->dir,
             (long long)j->incarnation, j->epoch, j->number++);
    s->fd = open(s->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (s->fd < 0) {
        snprintf(err, errlen, "cannot make %s: %s", s->path, strerror(errno));
        free(s);
        return NULL;
    }
    rc = posix_fallocate(s->fd, 0, (off_t)s->cap);
    if (rc != 0) {
        snprintf(err, errlen, "cannot allocate %zu bytes for %s: %s", s->cap, s->path,
                 strerror(rc));
        goto fail;
    }
    s->base = mmap(NULL, s->cap, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
    if (s->base == MAP_FAILED) {
        snprintf(err, errlen, "cannot map %s: %s", s->path, strerror(errno));
        s->base = NULL;
        goto fail;
    }
    if (j->touch) {
        /* write-fault every page now, so the hook path does not */
        for (off = 0; off < s->cap; off += j->page)
            ((volatile unsigned char *)s->base)[off] = 0;
        s->populated = s->cap;
    }
    return s;
fail:
    close(s->fd);
    unlink(s->path);
    free(s);
    return NULL;
}

static void seg_free(jseg_t *s, int remove)
{
    if (s->base)
        munmap(s->base, s->cap);
    if (!remove)
        fdatasync(s->fd);
    close(s->fd);
    if (remove)
        unlink(s->path);
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

/* Keeps the pages the hooks will write next mapped and writable: up to
 * the window ahead of the hooks' offset in the segment in use, and the
 * first window of each spare. Every sync of the segment in use writes its
 * dirty pages and write-protects them again, so they are made writable
 * anew after each sync (the sync thread resets populated).
 * MADV_POPULATE_WRITE does not change the contents, so this may run while
 * hooks write into the same segment. 1: did some. */
static int populate_step(journal_t *j)
{
    jseg_t *s, *cur;
    size_t from = 0, to = 0, n, done;

    update_window(j);
    pthread_mutex_lock(&j->mu);
    cur = __atomic_load_n(&j->cur, __ATOMIC_ACQUIRE);
    s = NULL;
    if (cur) {
        size_t used = __atomic_load_n(&cur->used, __ATOMIC_RELAXED) & ~(j->page - 1);
        from = __atomic_load_n(&cur->populated, __ATOMIC_RELAXED);
        if (from < used)
            from = used;
        to = used + j->window < cur->cap ? used + j->window : cur->cap;   /* window 0: none */
        if (from < to)
            s = cur;
    }
    if (!s) {
        for (s = j->spares; s; s = s->next) {
            from = __atomic_load_n(&s->populated, __ATOMIC_RELAXED);
            to = j->window < s->cap ? j->window : s->cap;
            if (from < to)
                break;
        }
    }
    pthread_mutex_unlock(&j->mu);
    /* the segment cannot go meanwhile: only this thread deletes */
    if (!s)
        return 0;
    done = __atomic_load_n(&s->populated, __ATOMIC_RELAXED);
    n = to - from < POPULATE_STEP ? to - from : POPULATE_STEP;
    if (madvise(s->base + from, n, MADV_POPULATE_WRITE) != 0 && errno != EINTR)
        n = s->cap - from;   /* not possible here: the hook path faults them in */
    /* unless a sync reset it meanwhile */
    __atomic_compare_exchange_n(&s->populated, &done, from + n, 0, __ATOMIC_RELAXED,
                                __ATOMIC_RELAXED);
    return 1;
}

/* a new spare goes last: segments are used in the order of their numbers,
 * which is the order the spool reads them in (mu held, or before the
 * thread starts) */
static void push_spare(journal_t *j, jseg_t *s)
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
 * a segment being synced is not deleted meanwhile */
static void sync_segments(journal_t *j)
{
    jseg_t *s, *list[64];
    int n = 0, i, ok = 1;

    pthread_mutex_lock(&j->mu);
    s = __atomic_load_n(&j->cur, __ATOMIC_ACQUIRE);
    if (s) {
        s->syncing++;
        list[n++] = s;
    }
    for (s = j->sealed; s && n < 64; s = s->next) {
        if (s->synced)
            continue;
        s->syncing++;
        list[n++] = s;
    }
    pthread_mutex_unlock(&j->mu);
    for (i = 0; i < n; i++) {
        if (fdatasync(list[i]->fd) != 0)
            ok = 0;
        else if (i > 0)
            list[i]->synced = 1;   /* a sealed one (all but the first) needs it once */
        else
            __atomic_store_n(&list[i]->populated, 0, __ATOMIC_RELAXED);   /* cleaned */
    }
    pthread_mutex_lock(&j->mu);
    for (i = 0; i < n; i++)
        list[i]->syncing--;
    if (ok) {
        j->syncs++;
        j->last_sync_us = wall_us();
    }
    pthread_mutex_unlock(&j->mu);
}

static void *sync_main(void *arg)
{
    journal_t *j = arg;

#ifdef __linux__
    pthread_setname_np(pthread_self(), "vmq_pgev_sync");
#endif
    pthread_mutex_lock(&j->mu);
    while (!j->stop) {
        struct timespec dl;
        deadline_after(&dl, j->sync_ms);
        pthread_cond_timedwait(&j->sync_cv, &j->mu, &dl);
        if (j->stop)
            break;
        pthread_mutex_unlock(&j->mu);
        sync_segments(j);
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

static void *journal_main(void *arg)
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

        /* sealed segments whose every event is written */
        while ((s = *pp) != NULL) {
            if (__atomic_load_n(&s->live, __ATOMIC_ACQUIRE) == 0 && !s->syncing) {
                *pp = s->next;
                s->next = dead;
                dead = s;
                j->disk_bytes -= s->cap;
                j->nsegs--;
            } else {
                pp = &s->next;
            }
        }
        want = j->nspares < SPARES && j->disk_bytes + j->seg_bytes <= j->max_bytes &&
               now >= retry_at;
        pthread_mutex_unlock(&j->mu);
        while (dead) {
            s = dead->next;
            seg_free(dead, 1);
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

/* the next epoch of this incarnation: one more than any file has */
static unsigned next_epoch(const char *dir, int64_t incarnation)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    unsigned max = 0;
    char prefix[64];
    size_t pl;

    if (!d)
        return 1;
    pl = (size_t)snprintf(prefix, sizeof prefix, "journal-%lld-", (long long)incarnation);
    while ((e = readdir(d)) != NULL) {
        unsigned long ep;
        char *end;
        if (strncmp(e->d_name, prefix, pl) != 0)
            continue;
        ep = strtoul(e->d_name + pl, &end, 10);
        if (*end == '-' && ep >= max)
            max = (unsigned)ep;
    }
    closedir(d);
    return max + 1;
}

journal_t *journal_open(const char *dir, int64_t incarnation, uint64_t max_bytes,
                        int sync_ms, char *err, size_t errlen)
{
    journal_t *j;
    pthread_condattr_t ca;
    uint64_t seg;

    (void)crc32c("", 0);   /* makes its tables before any hook needs them */
    if (max_bytes < 2ull * JOURNAL_SEG_MIN) {
        snprintf(err, errlen, "spool_max_bytes %llu is too small for the journal (at least %u)",
                 (unsigned long long)max_bytes, 2u * JOURNAL_SEG_MIN);
        return NULL;
    }
    j = calloc(1, sizeof *j);
    if (!j) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(j->dir, sizeof j->dir, "%s", dir);
    j->incarnation = incarnation;
    j->max_bytes = max_bytes;
    j->sync_ms = sync_ms > 0 ? sync_ms : 1000;
    j->window = WINDOW;   /* a burst right after the start finds its pages ready */
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
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot make %s: %s", dir, strerror(errno));
        free(j);
        return NULL;
    }
    j->epoch = next_epoch(dir, incarnation);
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
        free(j);
        return NULL;
    }
    j->disk_bytes = j->cur->cap;
    j->nsegs = 1;
    /* the spares too, so a burst right after the start finds room */
    while (j->nspares < SPARES && j->disk_bytes + j->seg_bytes <= j->max_bytes) {
        jseg_t *s = seg_make(j, err, errlen);
        if (!s)
            goto fail_spares;
        push_spare(j, s);
    }
    if (pthread_mutex_init(&j->mu, NULL) != 0)
        goto fail_seg;
    if (pthread_condattr_init(&ca) != 0)
        goto fail_mu;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_cond_init(&j->cv, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        goto fail_mu;
    }
    if (pthread_cond_init(&j->sync_cv, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        pthread_cond_destroy(&j->cv);
        goto fail_mu;
    }
    pthread_condattr_destroy(&ca);
    if (pthread_create(&j->thread, NULL, journal_main, j) != 0) {
        snprintf(err, errlen, "cannot start the journal thread");
        pthread_cond_destroy(&j->cv);
        pthread_cond_destroy(&j->sync_cv);
        goto fail_mu;
    }
    if (pthread_create(&j->sync_thread, NULL, sync_main, j) != 0) {
        snprintf(err, errlen, "cannot start the journal's sync thread");
        pthread_mutex_lock(&j->mu);
        j->stop = 1;
        pthread_mutex_unlock(&j->mu);
        pthread_cond_broadcast(&j->cv);
        pthread_join(j->thread, NULL);
        pthread_cond_destroy(&j->cv);
        pthread_cond_destroy(&j->sync_cv);
        goto fail_mu;
    }
    return j;
fail_mu:
    pthread_mutex_destroy(&j->mu);
fail_seg:
    if (!err[0])
        snprintf(err, errlen, "out of resources");
fail_spares:
    while (j->spares) {
        jseg_t *next = j->spares->next;
        seg_free(j->spares, 1);
        j->spares = next;
    }
    seg_free(j->cur, 1);
    free(j);
    return NULL;
}

void journal_close(journal_t *j)
{
    jseg_t *s, *next;

    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    j->stop = 1;
    pthread_mutex_unlock(&j->mu);
    pthread_cond_broadcast(&j->cv);
    pthread_cond_broadcast(&j->sync_cv);
    pthread_join(j->thread, NULL);
    pthread_join(j->sync_thread, NULL);
    for (s = j->spares; s; s = next) {
        next = s->next;
        seg_free(s, 1);
    }
    for (s = j->sealed; s; s = next) {
        next = s->next;
        seg_free(s, __atomic_load_n(&s->live, __ATOMIC_ACQUIRE) == 0);
    }
    if (j->cur)
        seg_free(j->cur, __atomic_load_n(&j->cur->live, __ATOMIC_ACQUIRE) == 0);
    pthread_cond_destroy(&j->cv);
    pthread_cond_destroy(&j->sync_cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

event_t *journal_reserve(journal_t *j, size_t ev_bytes)
{
    size_t need = (JOURNAL_HDR + ev_bytes + 7) & ~(size_t)7;
    jseg_t *s = j->cur;
    unsigned char *rec;
    event_t *ev;

    if (need > j->seg_bytes) {
        __atomic_store_n(&j->no_room, j->no_room + 1, __ATOMIC_RELAXED);
        return NULL;
    }
    if (s->used + need > s->cap) {
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
            __atomic_store_n(&j->cur, next, __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&j->mu);
        pthread_cond_signal(&j->cv);
        if (!next) {
            __atomic_store_n(&j->no_room, j->no_room + 1, __ATOMIC_RELAXED);
            return NULL;
        }
        s = next;
    }
    rec = s->base + s->used;
    __atomic_store_n(&s->used, s->used + need, __ATOMIC_RELAXED);
    __atomic_store_n(&j->reserved, j->reserved + need, __ATOMIC_RELAXED);
    __atomic_add_fetch(&s->live, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&j->busy, 1, __ATOMIC_RELAXED);
    put32(rec + 12, (uint32_t)need);
    memcpy(rec + 16, &s, sizeof s);
    ev = (event_t *)(void *)(rec + JOURNAL_HDR);
    ev->next = NULL;
    return ev;
}

void journal_commit(journal_t *j, event_t *ev)
{
    unsigned char *rec = (unsigned char *)ev - JOURNAL_HDR;
    size_t len = ev->bytes - EV_OFF;

    put32(rec + 4, (uint32_t)len);
    put32(rec + 8, crc32c((const char *)ev + EV_OFF, len));
    __atomic_store_n((uint32_t *)(void *)rec, magic_word(), __ATOMIC_RELEASE);
    __atomic_sub_fetch(&j->busy, 1, __ATOMIC_RELEASE);
}

int journal_ready(const event_t *ev)
{
    const unsigned char *rec = (const unsigned char *)ev - JOURNAL_HDR;
    return __atomic_load_n((const uint32_t *)(const void *)rec, __ATOMIC_ACQUIRE) == magic_word();
}

void journal_release(event_t *ev)
{
    jseg_t *s;

    memcpy(&s, (const unsigned char *)ev - 8, sizeof s);
    __atomic_sub_fetch(&s->live, 1, __ATOMIC_RELEASE);
}

uint64_t journal_busy(const journal_t *j)
{
    return __atomic_load_n(&j->busy, __ATOMIC_ACQUIRE);
}

void journal_get_stats(journal_t *j, journal_stats_t *st)
{
    pthread_mutex_lock(&j->mu);
    st->disk_bytes = j->disk_bytes;
    st->segments = j->nsegs;
    st->syncs = j->syncs;
    st->last_sync_us = j->last_sync_us;
    st->seg_bytes = j->seg_bytes;
    snprintf(st->error, sizeof st->error, "%s", j->error);
    pthread_mutex_unlock(&j->mu);
    st->no_room = __atomic_load_n(&j->no_room, __ATOMIC_RELAXED);
}

size_t journal_data_end(const unsigned char *base, size_t size)
{
    static const unsigned char zero[16];
    uint32_t m = magic_word();
    size_t pos = 0, end = 0;

    while (pos + JOURNAL_HDR <= size) {
        uint32_t word, rsize = get32(base + pos + 12);
        memcpy(&word, base + pos, 4);
        if ((word == m || word == 0) && rsize >= JOURNAL_HDR + EV_OFF && rsize % 8 == 0 &&
            rsize <= size - pos) {
            pos += rsize;
            end = pos;
        } else if (memcmp(base + pos, zero, 16) == 0) {
            /* unused space, or pages a power loss took: is there more? */
            while (pos + 8 <= size && memcmp(base + pos, zero, 8) == 0)
                pos += 8;
            if (pos + 8 > size)
                break;
            end = pos;
        } else {
            pos += 8;   /* damaged: the reader skips it, counted */
            end = pos;
        }
    }
    return end;
}
