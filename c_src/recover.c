/* recover.c - the files an earlier start left (see recover.h). */
#define _GNU_SOURCE
#include "recover.h"

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
#include "record.h"

#define SPOOL_HDR 12                     /* "VPGS", length, CRC-32 */
#define SPOOL_REC_MAX (300u * 1024 * 1024)
#define LOST_READS 4                     /* recover_next */

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

static int all_zero(const unsigned char *p, size_t n)
{
    while (n--)
        if (*p++)
            return 0;
    return 1;
}

/* A damaged stretch starts at r->pos: counted once; a file with a
 * segment header is read on lost, its checks within the stretch's budget
 * (recover_next) */
static void lose(rec_reader_t *r, uint64_t *corrupt)
{
    if (r->lost)
        return;
    (*corrupt)++;
    r->lost = r->salted;
    r->budget = LOST_READS * (uint64_t)(r->size - r->pos);
}

/* The next valid record from r->pos. After a damaged record (or one whose
 * hook died while writing it) or a hole of zeros, a file with a segment
 * header (record.h) goes on in 8-byte steps to the next record whose
 * check holds: the bytes in between, a payload among them, are never
 * taken for a record, as without the salt they cannot make a CRC that
 * holds. Such a lost stretch's checks read at most LOST_READS times the
 * bytes after its start (a check's CRC covers up to a record's size): a
 * payload full of forged headers cannot make reading take longer; past
 * that, the rest of the file is given up (counted with the stretch). An
 * earlier version's file (no header, CRCs from 0) goes on to the next
 * 8-byte-aligned magic after a damaged size. */
const unsigned char *recover_next(rec_reader_t *r, uint64_t *corrupt)
{
    uint64_t ignored = 0;

    if (!corrupt)
        corrupt = &ignored;
    while (r->pos + JOURNAL_HDR <= r->size) {
        const unsigned char *rec = r->base + r->pos;
        uint32_t rsize = record_rsize(rec);

        if (all_zero(rec, 16)) {
            /* unused space, or pages a power loss took: data after it? */
            while (r->pos + 8 <= r->size && all_zero(r->base + r->pos, 8))
                r->pos += 8;
            if (r->pos + 8 <= r->size)
                lose(r, corrupt);
            continue;
        }
        if (!r->salted && (rsize < JOURNAL_HDR + EV_OFF || rsize % 8 || rsize > r->size - r->pos)) {
            (*corrupt)++;
            for (r->pos += 8; r->pos + 4 <= r->size && !record_magic_at(r->base + r->pos); r->pos += 8)
                ;
            continue;
        }
        if (r->salted && r->lost && record_magic_at(rec) && rsize <= r->size - r->pos) {
            if (rsize > r->budget) {
                r->pos = r->size;   /* given up */
                break;
            }
            r->budget -= rsize;
        }
        if (r->salted && (rsize > r->size - r->pos || !record_ok(rec, rsize, r->salt, 1))) {
            lose(r, corrupt);
            r->pos += 8;
            continue;
        }
        r->lost = 0;
        r->pos += rsize;
        if (record_is_written(rec))
            continue;   /* written (an earlier version marked it) */
        if (!r->salted && !record_ok(rec, rsize, 0, 0)) {
            (*corrupt)++;
            continue;
        }
        return rec;
    }
    return NULL;
}

void recover_reader(rec_reader_t *r, const unsigned char *base, size_t size, size_t from)
{
    memset(r, 0, sizeof *r);
    r->base = base;
    r->size = size;
    r->salted = record_seg_salt(base, size, &r->salt);
    r->pos = r->salted ? JOURNAL_SEG_HDR : 0;
    if (r->salted && from > r->pos && from <= size && from % 8 == 0)
        r->pos = from;
}

static int write_all(int fd, const unsigned char *p, size_t n);

/* <path>.w */
static void cursor_path(const char *path, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s.w", path);
}

int recover_save_cursor(const char *path, uint32_t salt, size_t offset)
{
    char cp[4200];
    unsigned char b[20];
    int fd, ok;

    cursor_path(path, cp, sizeof cp);
    memcpy(b, "VPGC", 4);
    put32(b + 4, salt);
    put32(b + 8, (uint32_t)((uint64_t)offset >> 32));
    put32(b + 12, (uint32_t)offset);
    put32(b + 16, crc32c(b, 16));
    fd = open(cp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    ok = write_all(fd, b, sizeof b) == 0;
    close(fd);
    return ok ? 0 : -1;
}

size_t recover_cursor(const char *path, size_t size, uint32_t salt)
{
    char cp[4200];
    unsigned char b[20];
    uint64_t off;
    int fd;
    ssize_t n;

    cursor_path(path, cp, sizeof cp);
    fd = open(cp, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, b, sizeof b);
    close(fd);
    if (n != (ssize_t)sizeof b || memcmp(b, "VPGC", 4) != 0 || crc32c(b, 16) != get32(b + 16) ||
        get32(b + 4) != salt)
        return 0;
    off = (uint64_t)get32(b + 8) << 32 | get32(b + 12);
    return off <= size && off % 8 == 0 ? (size_t)off : 0;
}

void recover_drop_cursor(const char *path)
{
    char cp[4200];

    cursor_path(path, cp, sizeof cp);
    unlink(cp);
}

size_t recover_records(const unsigned char *base, size_t size, size_t from, uint64_t *count,
                       uint64_t *bytes, uint64_t *per_hook, uint64_t *corrupt)
{
    rec_reader_t r;
    const unsigned char *rec;
    size_t start;

    *count = *bytes = 0;
    recover_reader(&r, base, size, from);
    start = r.pos;
    while ((rec = recover_next(&r, corrupt)) != NULL) {
        const event_t *ev = record_event((unsigned char *)rec);
        (*count)++;
        *bytes += ev->bytes;
        if (per_hook && ev->hook < EVENT_KINDS)
            per_hook[ev->hook]++;
    }
    return start;
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

/* spool-<incarnation>.dat; 0 when name is one */
static int parse_spool_name(const char *name, int64_t *inc)
{
    size_t len = strlen(name);
    char *end;

    if (len < 11 || strncmp(name, "spool-", 6) != 0 || strcmp(name + len - 4, ".dat") != 0)
        return -1;
    *inc = strtoll(name + 6, &end, 10);
    return end == name + len - 4 ? 0 : -1;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One spool record at pos: its event bytes (from seq on) in *ev, *len;
 * its size, or 0 when damaged. */
static size_t spool_record_at(const unsigned char *m, size_t pos, size_t size,
                              const unsigned char **ev, uint32_t *len)
{
    if (pos + SPOOL_HDR > size || memcmp(m + pos, "VPGS", 4) != 0)
        return 0;
    *len = get32(m + pos + 4);
    if (*len > SPOOL_REC_MAX || *len > size - pos - SPOOL_HDR)
        return 0;
    if (crc32_buf(0, m + pos + SPOOL_HDR, *len) != get32(m + pos + 8))
        return 0;
    *ev = m + pos + SPOOL_HDR;
    return SPOOL_HDR + *len;
}

/* an earlier version's spool file -> journal-<inc>-0-0.dat, synced; the
 * spool file is removed once the journal file is on disk. 0: done. */
static int convert_spool(const char *dir, const char *spool, int64_t inc, uint64_t *corrupt,
                         char *err, size_t errlen)
{
    char out[4096];
    struct stat st;
    unsigned char *m = NULL, *rec = NULL;
    size_t pos = 0, cap = 0;
    int in, fd = -1, rc = -1;

    in = open(spool, O_RDONLY | O_CLOEXEC);
    if (in < 0 || fstat(in, &st) != 0) {
        snprintf(err, errlen, "cannot read %s: %s", spool, strerror(errno));
        goto out;
    }
    snprintf(out, sizeof out, "%.3900s/journal-%lld-0-0.dat", dir, (long long)inc);
    fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot make %s: %s", out, strerror(errno));
        goto out;
    }
    if (st.st_size > 0) {
        m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, in, 0);
        if (m == MAP_FAILED) {
            m = NULL;
            snprintf(err, errlen, "cannot map %s: %s", spool, strerror(errno));
            goto out;
        }
    }
    while (pos < (size_t)st.st_size) {
        const unsigned char *evb;
        uint32_t len;
        size_t step = spool_record_at(m, pos, (size_t)st.st_size, &evb, &len), need;
        event_t *ev;

        if (!step) {
            /* damaged: on to the next record's magic */
            (*corrupt)++;
            for (pos++; pos + 4 <= (size_t)st.st_size && memcmp(m + pos, "VPGS", 4) != 0; pos++)
                ;
            if (pos + 4 > (size_t)st.st_size)
                break;
            continue;
        }
        pos += step;
        need = record_size(EV_OFF + len);
        if (need > cap) {
            unsigned char *bigger = realloc(rec, need);
            if (!bigger) {
                snprintf(err, errlen, "out of memory converting %s", spool);
                goto out;
            }
            rec = bigger;
            cap = need;
        }
        memset(rec, 0, need);
        ev = record_event(rec);
        memcpy((unsigned char *)ev + EV_OFF, evb, len);
        if (event_check(ev, len) != 0) {
            (*corrupt)++;
            continue;
        }
        ev->home = EV_JOURNAL;
        record_commit_unsalted(rec);
        if (write_all(fd, rec, need) != 0) {
            snprintf(err, errlen, "cannot write %s: %s", out, strerror(errno));
            goto out;
        }
    }
    if (fdatasync(fd) != 0) {
        snprintf(err, errlen, "cannot sync %s: %s", out, strerror(errno));
        goto out;
    }
    rc = unlink(spool);   /* the events are in the journal file now */
    if (rc != 0)
        snprintf(err, errlen, "cannot remove %s: %s", spool, strerror(errno));
out:
    free(rec);
    if (m)
        munmap(m, (size_t)st.st_size);
    if (in >= 0)
        close(in);
    if (fd >= 0) {
        close(fd);
        if (rc != 0)
            unlink(out);   /* the spool file stays: converted again next time */
    }
    return rc;
}

typedef struct found {
    int64_t inc;
    unsigned epoch, number;
    char name[64];
} found_t;

static int cmp_found(const void *a, const void *b)
{
    const found_t *x = a, *y = b;

    if (x->inc != y->inc)
        return x->inc < y->inc ? -1 : 1;
    if (x->epoch != y->epoch)
        return x->epoch < y->epoch ? -1 : 1;
    return x->number < y->number ? -1 : x->number > y->number;
}

/* a cursor file (<journal file>.w) whose journal file is gone: removed,
 * so that it can never be taken for a later file's of the same name */
static void drop_orphan_cursor(const char *dir, const char *name)
{
    size_t len = strlen(name);
    char path[4096];

    if (len < 14 || strncmp(name, "journal-", 8) != 0 || strcmp(name + len - 6, ".dat.w") != 0)
        return;
    snprintf(path, sizeof path, "%.3900s/%.*s", dir, (int)(len - 2), name);
    if (access(path, F_OK) != 0 && errno == ENOENT) {
        snprintf(path, sizeof path, "%.3900s/%s", dir, name);
        unlink(path);
    }
}

/* the journal files in dir but those whose name starts with skip, sorted;
 * spool files converted first, cursor files without their journal file
 * removed */
static found_t *list_files(const char *dir, const char *skip, size_t *n, uint64_t *corrupt,
                           uint64_t *unreadable, char *err, size_t errlen)
{
    DIR *d;
    struct dirent *e;
    found_t *list = NULL;
    size_t cap = 0;
    int pass;

    *n = 0;
    for (pass = 0; pass < 2; pass++) {
        d = opendir(dir);
        if (!d)
            return list;
        while ((e = readdir(d)) != NULL) {
            found_t f;
            char path[4096];
            if (strlen(e->d_name) >= sizeof f.name)
                continue;
            if (pass == 0) {
                if (parse_spool_name(e->d_name, &f.inc) != 0)
                    continue;
                snprintf(path, sizeof path, "%.3900s/%s", dir, e->d_name);
                if (convert_spool(dir, path, f.inc, corrupt, err, errlen) != 0)
                    (*unreadable)++;
                continue;
            }
            if (skip && strncmp(e->d_name, skip, strlen(skip)) == 0)
                continue;
            if (parse_journal_name(e->d_name, &f.inc, &f.epoch, &f.number) != 0) {
                drop_orphan_cursor(dir, e->d_name);
                continue;
            }
            snprintf(f.name, sizeof f.name, "%s", e->d_name);
            if (*n == cap) {
                found_t *bigger = realloc(list, (cap ? cap * 2 : 16) * sizeof *list);
                if (!bigger)
                    break;
                list = bigger;
                cap = cap ? cap * 2 : 16;
            }
            list[(*n)++] = f;
        }
        closedir(d);
    }
    if (*n)
        qsort(list, *n, sizeof *list, cmp_found);
    return list;
}

recovered_t *recover_files(const char *dir, const char *skip, uint64_t *corrupt,
                           uint64_t *unreadable, char *err, size_t errlen)
{
    recovered_t *head = NULL, **tailp = &head;
    size_t n, i;
    found_t *files = list_files(dir, skip, &n, corrupt, unreadable, err, errlen);

    for (i = 0; i < n; i++) {
        recovered_t *r = calloc(1, sizeof *r);
        struct stat st;
        if (!r) {
            (*unreadable)++;
            continue;
        }
        snprintf(r->path, sizeof r->path, "%.3900s/%s", dir, files[i].name);
        r->incarnation = files[i].inc;
        r->fd = open(r->path, O_RDONLY | O_CLOEXEC);
        if (r->fd < 0 || fstat(r->fd, &st) != 0) {
            snprintf(err, errlen, "cannot open %s: %s", r->path, strerror(errno));
            goto unreadable;
        }
        r->size = (size_t)st.st_size;
        if (r->size >= JOURNAL_HDR) {
            r->base = mmap(NULL, r->size, PROT_READ, MAP_SHARED, r->fd, 0);
            if (r->base == MAP_FAILED) {
                r->base = NULL;
                snprintf(err, errlen, "cannot map %s: %s", r->path, strerror(errno));
                goto unreadable;
            }
            madvise(r->base, r->size, MADV_SEQUENTIAL);
            if (record_seg_salt(r->base, r->size, &r->salt))
                r->from = recover_cursor(r->path, r->size, r->salt);
            r->from = recover_records(r->base, r->size, r->from, &r->count, &r->bytes,
                                      r->per_hook, corrupt);
        }
        if (!r->count) {
            /* nothing in it to write */
            if (r->base)
                munmap(r->base, r->size);
            close(r->fd);
            recover_drop_cursor(r->path);
            unlink(r->path);
            free(r);
            continue;
        }
        *tailp = r;
        tailp = &r->next;
        continue;
unreadable:
        (*unreadable)++;
        if (r->fd >= 0)
            close(r->fd);
        free(r);
    }
    free(files);
    return head;
}
