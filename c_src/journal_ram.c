/* journal_ram.c - the segments' memory files (see journal.h): files in
 * a tmpfs directory (/dev/shm) mapped shared, which the hooks write into.
 * A tmpfs page is never written back, so no sync write-protects a page a
 * hook stores into. The disk thread copies them to the disk files with
 * pwrite. A kill -9 leaves both files, and the next start copies the
 * memory one, the newer, over the disk one (ram_recover); a power loss
 * takes the memory files, and what the last sync wrote stays. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "deadline.h"
#include "journal_int.h"

#define RAM_ROOT "/dev/shm"
#define TMPFS_MAGIC_ 0x01021994

/* the memory files' directory of the spool directory dir: one per
 * directory (its real path's FNV-1a hash), so a restart finds it */
int ram_dir_for(const char *dir, char *out, size_t outlen, char *why, size_t whylen)
{
    char real[PATH_MAX];
    uint64_t h = 1469598103934665603ull;
    const unsigned char *p;
    struct statfs sf;

    out[0] = '\0';
    if (!realpath(dir, real)) {
        snprintf(why, whylen, "cannot resolve %s: %s", dir, strerror(errno));
        return -1;
    }
    if (statfs(RAM_ROOT, &sf) != 0) {
        snprintf(why, whylen, "%s: %s", RAM_ROOT, strerror(errno));
        return -1;
    }
    if ((unsigned long)sf.f_type != TMPFS_MAGIC_) {
        snprintf(why, whylen, "%s is not a tmpfs", RAM_ROOT);
        return -1;
    }
    for (p = (const unsigned char *)real; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    snprintf(out, outlen, "%s/vmq_pgevents-%016llx", RAM_ROOT, (unsigned long long)h);
    if (mkdir(out, 0700) != 0 && errno != EEXIST) {
        snprintf(why, whylen, "cannot make %s: %s", out, strerror(errno));
        out[0] = '\0';
        return -1;
    }
    return 0;
}

/* s (its disk file made) gets a memory file of the same size, mapped
 * shared; its pages are allocated now (a full tmpfs is an error here,
 * never a SIGBUS on the hook path). 0, or -1 and err */
int ram_attach(journal_t *j, jseg_t *s, char *err, size_t errlen)
{
    const char *name = strrchr(s->path, '/');
    int fd, rc;
    void *m;

    snprintf(s->ram_path, sizeof s->ram_path, "%s%s", j->ram_dir, name ? name : "/x");
    fd = open(s->ram_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot make %s: %s", s->ram_path, strerror(errno));
        return -1;
    }
    rc = posix_fallocate(fd, 0, (off_t)s->cap);
    if (rc != 0) {
        snprintf(err, errlen, "cannot allocate %zu bytes in %s: %s", s->cap, j->ram_dir,
                 strerror(rc));
        goto fail;
    }
    m = mmap(NULL, s->cap, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "cannot map %s: %s", s->ram_path, strerror(errno));
        goto fail;
    }
    s->base = m;
    __atomic_store_n(&s->ram_fd, fd, __ATOMIC_RELEASE);
    __atomic_add_fetch(&j->ram_segs, 1, __ATOMIC_RELAXED);
    return 0;
fail:
    close(fd);
    unlink(s->ram_path);
    s->ram_path[0] = '\0';
    return -1;
}

/* the end of the records from `from` (a record's start) on whose hooks
 * have committed them (a record being written, its magic not yet stored,
 * ends the walk) */
size_t ram_committed(const jseg_t *s, size_t from)
{
    size_t used = __atomic_load_n(&s->used, __ATOMIC_ACQUIRE), off = from;

    while (off + JOURNAL_HDR <= used) {
        const unsigned char *rec = s->base + off;
        uint32_t size;
        if (!record_committed(rec))
            break;
        size = record_rsize(rec);
        if (size < JOURNAL_HDR || size % 8 || size > used - off)
            break;
        off += size;
    }
    return off;
}

/* bytes [from, to) of the mapping to the same place in fd */
static int copy_out(int fd, const unsigned char *base, size_t from, size_t to)
{
    while (from < to) {
        ssize_t n = pwrite(fd, base + from, to - from, (off_t)from);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        from += (size_t)n;
    }
    return 0;
}

/* The sync: the committed records not yet on disk are written there and
 * synced; 1 when the segment is sealed and its disk file holds all of it
 * (synced). checked is where the records' walk goes on (a record's
 * start); copied, where the copy does (ram_bulk may stop it mid-record):
 * copied <= checked. */
int ram_sync(jseg_t *s, int sealed)
{
    size_t from = s->copied;
    int all;

    s->checked = ram_committed(s, s->checked);
    all = sealed && s->checked == s->used;   /* used is final once sealed */
    if (s->checked == from && !all)
        return 0;   /* nothing new: an idle broker writes nothing */
    if (copy_out(s->fd, s->base, from, s->checked) != 0 || fdatasync(s->fd) != 0)
        return -1;
    /* committed records never change: the next copy starts after them */
    s->copied = s->checked;
    return all;
}

/* A sealed segment whose every record is committed is written whole to
 * its disk file, which then holds exactly what the memory file does
 * (nothing in it changes any more), BULK_STEP bytes at a time, up to the
 * time until (mono_us): the rest at the next call. 1: done */
int ram_bulk(jseg_t *s, int64_t until)
{
    size_t end = s->checked = ram_committed(s, s->checked);

    if (end != s->used || end == JOURNAL_SEG_HDR)
        return 0;
    /* what the syncs copied before is unchanged since (above); a step
     * stopped in a record goes on from there at the next call */
    while (s->copied < end) {
        size_t to = end - s->copied > BULK_STEP ? s->copied + BULK_STEP : end;
        if (mono_us() >= until || copy_out(s->fd, s->base, s->copied, to) != 0)
            return 0;
        s->copied = to;
    }
    return 1;
}

/* For a segment ram_bulk wrote: the writer reads it from its disk file
 * from now on, and the memory file goes. 0, or -1: it stays in memory. */
int ram_settle(journal_t *j, jseg_t *s)
{
    int fd;

    if (seg_reopen(j, s) != 0)
        return -1;
    fd = __atomic_load_n(&s->ram_fd, __ATOMIC_RELAXED);
    unlink(s->ram_path);
    __atomic_store_n(&s->ram_fd, -1, __ATOMIC_RELEASE);
    close(fd);
    s->ram_path[0] = '\0';
    __atomic_sub_fetch(&j->ram_segs, 1, __ATOMIC_RELAXED);
    return 0;
}

int seg_reopen(journal_t *j, jseg_t *s)
{
    void *m;
    unsigned char *old;
    int populating;

    /* the journal thread chose s to populate while it was in use, under
     * mu (once sealed it is never chosen again): not while it does */
    pthread_mutex_lock(&j->mu);
    populating = __atomic_load_n(&s->populating, __ATOMIC_ACQUIRE);
    pthread_mutex_unlock(&j->mu);
    if (populating) {
        errno = EBUSY;
        return -1;
    }
    m = mmap(NULL, s->cap, PROT_READ, MAP_SHARED, s->fd, 0);
    if (m == MAP_FAILED)
        return -1;
    /* the writer holds no address in a segment outside journal_read and
     * journal_peek (earlier starts' files, whose reader keeps one, are
     * never mapped afresh): it takes the new one at its next call. While
     * it reads, again at the next tick (the syncs keep their interval). */
    if (pthread_mutex_trylock(&j->rd_mu) != 0) {
        munmap(m, s->cap);
        errno = EBUSY;
        return -1;
    }
    old = s->base;
    __atomic_store_n(&s->base, (unsigned char *)m, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&j->rd_mu);
    munmap(old, s->cap);
    return 0;
}

/* at close: unmapped already; keep: its disk file gets all of it and is
 * synced before the memory file goes (a failed sync leaves the memory
 * file: the next start copies it) */
int ram_free(journal_t *j, jseg_t *s, int keep)
{
    int fd = __atomic_load_n(&s->ram_fd, __ATOMIC_RELAXED);

    if (fd < 0)   /* an earlier start's file (read-only) is as it was */
        return keep && !s->recovered && fdatasync(s->fd) != 0 ? -1 : 0;
    if (keep) {
        void *m = mmap(NULL, s->cap, PROT_READ, MAP_SHARED, fd, 0);
        /* what the hooks took; the rest is zeros in both */
        int ok = m != MAP_FAILED && copy_out(s->fd, m, 0, s->used) == 0 && fdatasync(s->fd) == 0;
        int e = errno;
        if (m != MAP_FAILED)
            munmap(m, s->cap);
        if (!ok) {
            /* left in memory: the next start copies it */
            __atomic_store_n(&s->ram_fd, -1, __ATOMIC_RELEASE);
            close(fd);
            __atomic_sub_fetch(&j->ram_segs, 1, __ATOMIC_RELAXED);
            errno = e;
            return -1;
        }
    }
    unlink(s->ram_path);
    __atomic_store_n(&s->ram_fd, -1, __ATOMIC_RELEASE);
    close(fd);
    __atomic_sub_fetch(&j->ram_segs, 1, __ATOMIC_RELAXED);
    return 0;
}

/* the bytes of m up to its last one that is not zero, 8-aligned */
static size_t used_bytes(const unsigned char *m, size_t size)
{
    size_t n = size & ~(size_t)7;
    uint64_t w;

    while (n >= 8) {
        memcpy(&w, m + n - 8, 8);
        if (w)
            break;
        n -= 8;
    }
    return n;
}

/* At open, before the disk files are read: each memory file an earlier
 * start left (it was killed) is copied over its disk file, synced, and
 * removed. A file that cannot be copied stays (counted, err). */
uint64_t ram_recover(const char *ram_dir, const char *dir, const char *skip,
                     uint64_t *unreadable, char *err, size_t errlen)
{
    DIR *d = opendir(ram_dir);
    struct dirent *e;
    uint64_t removed = 0;

    if (!d)
        return 0;
    while ((e = readdir(d)) != NULL) {
        char from[4400], to[8200];
        struct stat sb;
        int in, out = -1, ok = 0;
        void *m = MAP_FAILED;

        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "journal-", 8) != 0 || len < 5 ||
            strcmp(e->d_name + len - 4, ".dat") != 0 ||
            strncmp(e->d_name, skip, strlen(skip)) == 0)   /* this start's own */
            continue;
        snprintf(from, sizeof from, "%s/%s", ram_dir, e->d_name);
        snprintf(to, sizeof to, "%s/%s", dir, e->d_name);
        in = open(from, O_RDONLY | O_CLOEXEC);
        if (in >= 0 && fstat(in, &sb) == 0) {
            out = open(to, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
            if (sb.st_size > 0)
                m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, in, 0);
            ok = out >= 0 && (sb.st_size == 0 ||
                              (m != MAP_FAILED &&
                               copy_out(out, m, 0, used_bytes(m, (size_t)sb.st_size)) == 0)) &&
                 fdatasync(out) == 0;
            if (m != MAP_FAILED)
                munmap(m, (size_t)sb.st_size);
        }
        if (out >= 0)
            close(out);
        if (in >= 0)
            close(in);
        if (ok) {
            unlink(from);
            removed++;
        } else {
            (*unreadable)++;
            snprintf(err, errlen, "cannot copy %s to %s: %s", from, dir, strerror(errno));
        }
    }
    closedir(d);
    return removed;
}
