/* plugin_rows.c - the plugin's own rows and the running marker (see
 * plugin_rows.h). */
#include "plugin_rows.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "deadline.h"
#include "event.h"
#include "filter.h"
#include "jsonw.h"

enum { ROW_ANY, ROW_LAST, ROW_IF_ROOM };

/* queues a plugin row whose extra is the members in b */
static int add_row(queue_t *q, int id, buf_t *b, int how)
{
    event_in_t in;
    uint64_t seq;

    if (b->failed)
        b->len = 0;   /* out of memory: the row without what it would say */
    event_in_init(&in, id, wall_us());
    in.f[F_EXTRA] = (span_t){b->p, b->len, 1};
    return how == ROW_LAST ? queue_add_last(q, &in, &seq)
           : how == ROW_IF_ROOM ? queue_add_if_room(q, &in, &seq) : queue_add(q, &in, &seq);
}

static void text_member(buf_t *b, const char *key, const char *v, int *first)
{
    if (!v)
        return;
    jw_key(b, key, first);
    jw_string(b, v, strlen(v));
}

int prow_start(queue_t *q, const prow_settings_t *s)
{
    static const char *const modes[] = {[PM_TRUNCATED] = "truncated", [PM_NONE] = "none",
                                        [PM_FULL] = "full", [PM_HASH] = "hash"};
    static const char *const peers[] = {[PEER_FULL] = "full", [PEER_NETWORK] = "network",
                                        [PEER_NONE] = "none"};
    char stack[2048];
    buf_t b;
    int i, first = 1, inner, rc;
    uint64_t all = (1ull << HOOK_COUNT) - 1;

    buf_init(&b, stack, sizeof stack);
    text_member(&b, "version", s->version, &first);
    jw_key(&b, "hooks", &first);
    if ((s->hooks & all) == all) {
        jw_lit(&b, "all");
    } else {
        /* each name once (a hook of two arities is enabled as one) */
        buf_putc(&b, '[');
        inner = 1;
        for (i = 0; i < HOOK_COUNT; i++) {
            if (!(s->hooks & (1ull << i)) || (i > 0 && strcmp(hook_defs[i - 1].name, hook_defs[i].name) == 0 &&
                                               (s->hooks & (1ull << (i - 1)))))
                continue;
            jw_sep(&b, &inner);
            jw_lit(&b, hook_defs[i].name);
        }
        buf_putc(&b, ']');
    }
    /* the hooks whose payload is not kept truncated (the default) */
    jw_key(&b, "payload_modes", &first);
    buf_putc(&b, '{');
    inner = 1;
    for (i = 0; i < HOOK_COUNT; i++) {
        int m = s->payload_modes[i];
        if (m == PM_TRUNCATED || m < 0 || m > PM_HASH ||
            (i > 0 && strcmp(hook_defs[i - 1].name, hook_defs[i].name) == 0))
            continue;
        jw_key(&b, hook_defs[i].name, &inner);
        jw_lit(&b, modes[m]);
    }
    buf_putc(&b, '}');
    jw_key(&b, "payload_max_bytes", &first);
    jw_uint(&b, s->payload_max_bytes);
    text_member(&b, "payload_topics", s->payload_topics, &first);
    text_member(&b, "topic_include", s->topic_include, &first);
    text_member(&b, "topic_exclude", s->topic_exclude, &first);
    text_member(&b, "mountpoints", s->mountpoints, &first);
    if (s->peer_mode >= PEER_FULL && s->peer_mode <= PEER_NONE) {
        jw_key(&b, "peer_addr", &first);
        jw_lit(&b, peers[s->peer_mode]);
    }
    jw_key(&b, "journal", &first);
    buf_puts(&b, s->journal ? "true" : "false");
    rc = add_row(q, PROW_START, &b, ROW_ANY);
    buf_free(&b);
    return rc;
}

/* the members that tell a ledger's drops (pgevents_dropped, pgevents_stop) */
static void ledger_members(buf_t *b, const drop_ledger_t *d, int *first)
{
    static const char *const reasons[DROP_REASONS] = {[DROP_NO_ROOM] = "no_room",
                                                      [DROP_NO_MEMORY] = "no_memory",
                                                      [DROP_STOPPED] = "stopped",
                                                      [DROP_TOO_LARGE] = "too_large"};
    int i, inner;

    jw_key(b, "first_seq", first);
    jw_uint(b, d->first_seq);
    jw_key(b, "last_seq", first);
    jw_uint(b, d->last_seq);
    jw_key(b, "dropped", first);
    jw_uint(b, d->count);
    jw_key(b, "reasons", first);
    buf_putc(b, '{');
    inner = 1;
    for (i = 0; i < DROP_REASONS; i++) {
        if (!d->reason[i])
            continue;
        jw_key(b, reasons[i], &inner);
        jw_uint(b, d->reason[i]);
    }
    buf_putc(b, '}');
    /* per hook name: the arities of a hook (next to each other) in one */
    jw_key(b, "hooks", first);
    buf_putc(b, '{');
    inner = 1;
    for (i = 0; i < EVENT_KINDS; i++) {
        uint64_t n = d->hook[i];
        while (i + 1 < EVENT_KINDS && strcmp(hook_defs[i + 1].name, hook_defs[i].name) == 0)
            n += d->hook[++i];
        if (!n)
            continue;
        jw_key(b, hook_defs[i].name, &inner);
        jw_uint(b, n);
    }
    buf_putc(b, '}');
}

int prow_stop(queue_t *q)
{
    drop_ledger_t d;
    char stack[2048];
    buf_t b;
    int first = 1, rc, told = queue_take_drops(q, &d);

    /* the drops no pgevents_dropped row told yet: told by this last row */
    buf_init(&b, stack, sizeof stack);
    if (told)
        ledger_members(&b, &d, &first);
    rc = add_row(q, PROW_STOP, &b, ROW_LAST);
    buf_free(&b);
    if (rc != 0 && told)
        queue_return_drops(q, &d);
    return rc;
}

/* a row whose extra is one integer member */
static int int_row(queue_t *q, int id, const char *key, int64_t v, int how)
{
    char stack[64];
    buf_t b;
    int first = 1, rc;

    buf_init(&b, stack, sizeof stack);
    jw_key(&b, key, &first);
    jw_int(&b, v);
    rc = add_row(q, id, &b, how);
    buf_free(&b);
    return rc;
}

int prow_crashed(queue_t *q, int64_t incarnation)
{
    return int_row(q, PROW_CRASHED, "incarnation", incarnation, ROW_ANY);
}

int prow_running(queue_t *q, int every_ms)
{
    /* not worth a drop: without room there is none */
    return int_row(q, PROW_RUNNING, "every_ms", every_ms, ROW_IF_ROOM);
}

int prow_dropped(queue_t *q)
{
    drop_ledger_t d;
    char stack[2048];
    buf_t b;
    int first = 1, rc;

    if (!queue_take_drops(q, &d))
        return 0;
    buf_init(&b, stack, sizeof stack);
    ledger_members(&b, &d, &first);
    /* not a drop itself when there is no room: it waits for some */
    rc = add_row(q, PROW_DROPPED, &b, ROW_IF_ROOM);
    buf_free(&b);
    if (rc != 0)
        queue_return_drops(q, &d);
    return rc;
}

/* the directory's entries to disk: the marker's making or removal
 * survives a power loss */
static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

static void marker_path(char *out, size_t cap, const char *dir)
{
    snprintf(out, cap, "%.3900s/running", dir);
}

int64_t prow_marker_read(const char *dir)
{
    char path[4096], text[32];
    ssize_t n;
    int fd;
    long long v;

    marker_path(path, sizeof path, dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return 0;
    text[n] = '\0';
    if (sscanf(text, "%lld", &v) != 1 || v <= 0)
        return 0;
    return (int64_t)v;
}

int prow_marker_write(const char *dir, int64_t incarnation)
{
    char path[4096], text[32];
    int fd, n, err = 0;

    marker_path(path, sizeof path, dir);
    n = snprintf(text, sizeof text, "%lld\n", (long long)incarnation);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        err = errno;
        (void)unlink(path);   /* an earlier start's marker would tell its crash again */
        errno = err;
        return -1;
    }
    if (write(fd, text, (size_t)n) != n || fsync(fd) != 0)
        err = errno ? errno : EIO;
    close(fd);
    if (err) {
        (void)unlink(path);
        errno = err;
        return -1;
    }
    sync_dir(dir);
    return 0;
}

void prow_marker_remove(const char *dir)
{
    char path[4096];

    marker_path(path, sizeof path, dir);
    if (unlink(path) == 0)
        sync_dir(dir);
}
