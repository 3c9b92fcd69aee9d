/* spool.c - the on-disk spool (see spool.h). */
#define _GNU_SOURCE
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "be32.h"
#include "crc32c.h"
#include "hooks.h"
#include "journal.h"

#define MAGIC "VPGS"
#define HDR 12                       /* magic, length, crc */
#define REC_MAX (300u * 1024 * 1024) /* an event is at most ~256 MiB */
#define SEGS_MAX 1024
#define EV_OFF offsetof(event_t, seq)
#define EV_FIXED (offsetof(event_t, data) - EV_OFF)   /* header bytes in a record */

typedef struct segment {
    int64_t incarnation;
    int journal;          /* a journal file (journal.h), read as far as its records go */
    unsigned epoch, number;
    char path[4096];
    uint64_t size;        /* bytes in the file */
    uint64_t rd;          /* read position of the oldest unconsumed record */
    uint64_t rd_next;     /* read position after the last spool_read */
} segment_t;

struct spool {
    char dir[3900];
    int64_t incarnation;
    uint64_t max_bytes;
    segment_t segs[SEGS_MAX];   /* oldest first; the last is this incarnation's */
    int nsegs;
    int fd;                     /* append fd of this incarnation's file, -1 */
    uint64_t corrupt;
};

uint32_t crc32_buf(uint32_t crc, const void *p, size_t n)
{
    static uint32_t table[256];
    static int ready;
    const unsigned char *b = p;
    size_t i;

    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
        uint32_t c, k;
        for (i = 0; i < 256; i++) {
            c = (uint32_t)i;
            for (k = 0; k < 8; k++)
                c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    }
    crc = ~crc;
    for (i = 0; i < n; i++)
        crc = table[(crc ^ b[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* oldest first: by incarnation; in one, journal files (by epoch, number)
 * before the spool file */
static int cmp_seg(const void *a, const void *b)
{
    const segment_t *x = a, *y = b;

    if (x->incarnation != y->incarnation)
        return x->incarnation < y->incarnation ? -1 : 1;
    if (x->journal != y->journal)
        return x->journal ? -1 : 1;
    if (x->epoch != y->epoch)
        return x->epoch < y->epoch ? -1 : 1;
    return x->number < y->number ? -1 : x->number > y->number;
}

/* the records' end in a journal file; 0 when it has none or is unreadable */
static uint64_t journal_file_end(const char *path, uint64_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    void *m;
    size_t end;

    if (fd < 0)
        return 0;
    m = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return 0;
    end = journal_data_end(m, (size_t)size);
    munmap(m, (size_t)size);
    return end;
}

/* journal-<incarnation>-<epoch>-<number>.dat; 0 when name is one */
static int parse_journal_name(const char *name, int64_t *inc, unsigned *epoch, unsigned *number)
{
    long long i;
    unsigned long e, n;
    char *end;

    if (strncmp(name, "journal-", 8) != 0)
        return -1;
    i = strtoll(name + 8, &end, 10);
    if (*end != '-')
        return -1;
    e = strtoul(end + 1, &end, 10);
    if (*end != '-')
        return -1;
    n = strtoul(end + 1, &end, 10);
    if (strcmp(end, ".dat") != 0)
        return -1;
    *inc = i;
    *epoch = (unsigned)e;
    *number = (unsigned)n;
    return 0;
}

spool_t *spool_open(const char *dir, int64_t incarnation, uint64_t max_bytes,
                    char *err, size_t errlen)
{
    spool_t *s = calloc(1, sizeof *s);
    DIR *d;
    struct dirent *e;

    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->fd = -1;
    s->incarnation = incarnation;
    s->max_bytes = max_bytes;
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot make spool directory %s: %s", dir, strerror(errno));
        free(s);
        return NULL;
    }
    d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "cannot read spool directory %s: %s", dir, strerror(errno));
        free(s);
        return NULL;
    }
    while ((e = readdir(d)) != NULL && s->nsegs < SEGS_MAX - 1) {
        segment_t *seg = &s->segs[s->nsegs];
        long long inc;
        char *end;
        struct stat st;
        size_t len = strlen(e->d_name);
        int64_t jinc;
        memset(seg, 0, sizeof *seg);
        if (len > 60)
            continue;
        if (parse_journal_name(e->d_name, &jinc, &seg->epoch, &seg->number) == 0) {
            /* a journal file left by an earlier start (of any incarnation) */
            snprintf(seg->path, sizeof seg->path, "%.3900s/%.60s", dir, e->d_name);
            if (stat(seg->path, &st) != 0)
                continue;
            seg->size = journal_file_end(seg->path, (uint64_t)st.st_size);
            if (seg->size == 0) {
                unlink(seg->path);   /* nothing in it */
                continue;
            }
            seg->journal = 1;
            seg->incarnation = jinc;
            s->nsegs++;
            continue;
        }
        if (len < 11 || strncmp(e->d_name, "spool-", 6) != 0 ||
            strcmp(e->d_name + len - 4, ".dat") != 0)
            continue;
        inc = strtoll(e->d_name + 6, &end, 10);
        if (end != e->d_name + len - 4 || inc == incarnation)
            continue; /* not ours to read, or this incarnation's: added below */
        snprintf(seg->path, sizeof seg->path, "%.3900s/%.60s", dir, e->d_name);
        if (stat(seg->path, &st) != 0)
            continue;
        if (st.st_size == 0) {
            unlink(seg->path);   /* an earlier run's file with nothing in it */
            continue;
        }
        seg->incarnation = inc;
        seg->size = (uint64_t)st.st_size;
        s->nsegs++;
    }
    closedir(d);
    qsort(s->segs, (size_t)s->nsegs, sizeof s->segs[0], cmp_seg);
    /* this incarnation's file, last */
    memset(&s->segs[s->nsegs], 0, sizeof s->segs[0]);
    s->segs[s->nsegs].incarnation = incarnation;
    snprintf(s->segs[s->nsegs].path, sizeof s->segs[0].path, "%.3900s/spool-%lld.dat", dir,
             (long long)incarnation);
    s->nsegs++;
    s->fd = open(s->segs[s->nsegs - 1].path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (s->fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", s->segs[s->nsegs - 1].path, strerror(errno));
        free(s);
        return NULL;
    }
    {
        struct stat st;
        if (fstat(s->fd, &st) == 0)
            s->segs[s->nsegs - 1].size = (uint64_t)st.st_size;
    }
    return s;
}

void spool_close(spool_t *s)
{
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    /* a fully consumed file of ours is removed; others stay for next time */
    if (s->nsegs && s->segs[s->nsegs - 1].rd >= s->segs[s->nsegs - 1].size)
        unlink(s->segs[s->nsegs - 1].path);
    free(s);
}

uint64_t spool_bytes(const spool_t *s)
{
    uint64_t n = 0;
    int i;

    for (i = 0; i < s->nsegs; i++)
        n += s->segs[i].size - s->segs[i].rd;
    return n;
}

int spool_empty(const spool_t *s)
{
    return spool_bytes(s) == 0;
}

uint64_t spool_corrupt(const spool_t *s)
{
    return s->corrupt;
}

int spool_append(spool_t *s, const event_t *list, size_t n, char *err, size_t errlen)
{
    segment_t *mine = &s->segs[s->nsegs - 1];
    const event_t *ev;
    size_t i, total = 0;
    unsigned char *buf, *p;
    ssize_t w;

    for (ev = list, i = 0; ev && i < n; ev = ev->next, i++)
        total += HDR + ev->bytes - EV_OFF;
    if (spool_bytes(s) + total > s->max_bytes) {
        snprintf(err, errlen, "the spool is full (spool_max_bytes %llu)",
                 (unsigned long long)s->max_bytes);
        return -1;
    }
    buf = malloc(total ? total : 1);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (ev = list, i = 0, p = buf; ev && i < n; ev = ev->next, i++) {
        size_t len = ev->bytes - EV_OFF;
        memcpy(p, MAGIC, 4);
        put32(p + 4, (uint32_t)len);
        memcpy(p + HDR, (const char *)ev + EV_OFF, len);
        put32(p + 8, crc32_buf(0, p + HDR, len));
        p += HDR + len;
    }
    for (p = buf; p < buf + total; p += w) {
        w = write(s->fd, p, (size_t)(buf + total - p));
        if (w < 0 && errno == EINTR) {
            w = 0;
            continue;
        }
        if (w <= 0) {
            snprintf(err, errlen, "cannot write %s: %s", mine->path, strerror(errno));
            /* cut off what was written of this append, so records stay whole */
            if (ftruncate(s->fd, (off_t)mine->size) != 0)
                s->corrupt++;
            free(buf);
            return -1;
        }
    }
    free(buf);
    if (fdatasync(s->fd) != 0) {
        snprintf(err, errlen, "cannot sync %s: %s", mine->path, strerror(errno));
        return -1;
    }
    mine->size += total;
    return 0;
}

/* a record's bytes -> an event, or NULL when its fields do not fit */
event_t *spool_record_event(const unsigned char *rec, uint32_t len)
{
    event_t *ev;
    int f;

    if (len < EV_FIXED)
        return NULL;
    ev = malloc(EV_OFF + len);
    if (!ev)
        return NULL;
    memcpy((char *)ev + EV_OFF, rec, len);
    ev->next = NULL;
    ev->home = EV_HEAP;
    if (ev->bytes != EV_OFF + len || ev->hook >= HOOK_COUNT || ev->peer_family > 6)
        goto bad;
    for (f = 0; f < F_COUNT; f++) {
        if (ev->len[f] < -1)
            goto bad;
        if (ev->len[f] >= 0 &&
            (uint64_t)ev->off[f] + (uint64_t)ev->len[f] > len - EV_FIXED)
            goto bad;
    }
    return ev;
bad:
    free(ev);
    return NULL;
}

/* One record of a spool file at pos: its event (NULL: damaged) and its
 * size in *step (0: damaged, search for the next record). */
static event_t *spool_record_at(const unsigned char *m, uint64_t pos, uint64_t size,
                                uint64_t *step)
{
    uint32_t len;
    event_t *ev;

    *step = 0;
    if (memcmp(m + pos, MAGIC, 4) != 0)
        return NULL;
    len = get32(m + pos + 4);
    if (len > REC_MAX || pos + HDR + len > size)
        return NULL;
    if (crc32_buf(0, m + pos + HDR, len) != get32(m + pos + 8))
        return NULL;
    ev = spool_record_event(m + pos + HDR, len);
    if (ev)
        *step = HDR + len;
    return ev;
}

/* One record of a journal file at pos (8-byte aligned): its event (NULL:
 * none), its size in *step (0: damaged, search on), *torn: a record that
 * was not whole (its writer died, or a power loss took part of it). */
static event_t *journal_record_at(const unsigned char *m, uint64_t pos, uint64_t size,
                                  uint64_t *step, int *torn)
{
    static const unsigned char zero[16];
    uint32_t len, rsize;
    const unsigned char *rec = m + pos;
    event_t *ev;

    *step = 0;
    *torn = 0;
    if (pos + JOURNAL_HDR > size)
        return NULL;
    rsize = get32(rec + 12);
    if (memcmp(rec, zero, 16) == 0) {
        /* unused space (or pages lost): skip to the next data */
        uint64_t p = pos;
        while (p + 8 <= size && memcmp(m + p, zero, 8) == 0)
            p += 8;
        *step = p - pos;
        if (p + 8 <= size)
            *torn = 1;   /* data after a hole */
        return NULL;
    }
    if (rsize < JOURNAL_HDR + EV_OFF || rsize % 8 || rsize > size - pos)
        return NULL;
    *step = rsize;
    if (memcmp(rec, "VPGJ", 4) != 0) {
        *torn = 1;
        return NULL;
    }
    len = get32(rec + 4);
    ev = NULL;
    if ((uint64_t)JOURNAL_HDR + EV_OFF + len <= rsize &&
        crc32c(rec + JOURNAL_HDR + EV_OFF, len) == get32(rec + 8))
        ev = spool_record_event(rec + JOURNAL_HDR + EV_OFF, len);
    if (!ev)
        *torn = 1;
    return ev;
}

event_t *spool_read(spool_t *s, size_t max, size_t *n, int64_t *incarnation)
{
    event_t *head = NULL, *tail = NULL;
    segment_t *seg = NULL;
    unsigned char *m;
    uint64_t pos;
    int i, fd;

    *n = 0;
    for (i = 0; i < s->nsegs; i++) {
        if (s->segs[i].rd < s->segs[i].size) {
            seg = &s->segs[i];
            break;
        }
    }
    if (!seg)
        return NULL;
    *incarnation = seg->incarnation;
    fd = open(seg->path, O_RDONLY | O_CLOEXEC);
    m = fd < 0 ? MAP_FAILED : mmap(NULL, (size_t)seg->size, PROT_READ, MAP_SHARED, fd, 0);
    if (fd >= 0)
        close(fd);
    if (m == MAP_FAILED) {
        s->corrupt++;
        seg->rd = seg->rd_next = seg->size; /* unreadable: give it up */
        return NULL;
    }
    madvise(m, (size_t)seg->size, MADV_SEQUENTIAL);
    pos = seg->rd;
    while (*n < max && pos < seg->size) {
        uint64_t step;
        int torn = 0;
        event_t *ev;
        if (seg->journal) {
            ev = journal_record_at(m, pos, seg->size, &step, &torn);
            if (torn)
                s->corrupt++;
            if (!ev && step) {
                pos += step;
                continue;
            }
        } else {
            ev = pos + HDR <= seg->size ? spool_record_at(m, pos, seg->size, &step) : NULL;
        }
        if (!ev) {
            /* damaged: look for the next valid record */
            if (!seg->journal)
                s->corrupt++;
            else if (!torn)
                s->corrupt++;
            pos += seg->journal ? 8 : 1;
            while (pos + 4 <= seg->size &&
                   memcmp(m + pos, seg->journal ? "VPGJ" : MAGIC, 4) != 0)
                pos += seg->journal ? 8 : 1;
            if (pos + 4 > seg->size)
                pos = seg->size;    /* no valid record after it */
            continue;
        }
        pos += step;
        if (tail)
            tail->next = ev;
        else
            head = ev;
        tail = ev;
        (*n)++;
    }
    munmap(m, (size_t)seg->size);
    seg->rd_next = pos;
    if (!head)
        seg->rd = pos;
    return head;
}

void spool_consumed(spool_t *s)
{
    int i;

    for (i = 0; i < s->nsegs; i++) {
        segment_t *seg = &s->segs[i];
        if (seg->rd >= seg->size)
            continue;
        seg->rd = seg->rd_next;
        if (seg->rd >= seg->size) {
            if (i < s->nsegs - 1) {
                unlink(seg->path);            /* an earlier run's file, done */
            } else if (ftruncate(s->fd, 0) == 0) {
                seg->size = seg->rd = seg->rd_next = 0; /* ours: start over */
            }
        }
        return;
    }
}
