/* test_core.c - plain C tests of the core: text helpers, JSON writer,
 * event builder, queue, COPY BINARY encoder, dsn masking. No VM, no
 * server. Prints "N passed, N failed" last. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "copy.h"
#include "event.h"
#include "filter.h"
#include "hooks.h"
#include "jsonw.h"
#include "queue.h"
#include "crc32c.h"
#include "journal.h"
#include "journal_int.h"
#include "pgio.h"

#define MEM (64u << 20)   /* journal_memory_bytes of the journal tests */
#include "recover.h"
#include "sha256.h"
#include "text.h"
#include "writer.h"

static int passed, failed;

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (cond) {                                                         \
            passed++;                                                       \
        } else {                                                            \
            failed++;                                                       \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                   \
    } while (0)

#define CHECK_MEM(got, gotlen, want)                                        \
    do {                                                                    \
        size_t wl_ = strlen(want);                                          \
        if ((gotlen) == wl_ && (wl_ == 0 || memcmp((got), (want), wl_) == 0)) { \
            passed++;                                                       \
        } else {                                                            \
            failed++;                                                       \
            fprintf(stderr, "FAIL %s:%d: got '%.*s', want '%s'\n", __FILE__, \
                    __LINE__, (int)(gotlen), (const char *)(got), want);    \
        }                                                                   \
    } while (0)

static void test_text(void)
{
    char out[64];

    CHECK(text_is_clean("", 0));
    CHECK(text_is_clean("say_name/a", 10));
    CHECK(text_is_clean("\xe4\xbd\xa0\xe5\xa5\xbd", 6));          /* CJK */
    CHECK(text_is_clean("\xf0\x9f\x98\x80", 4));                  /* emoji */
    CHECK(!text_is_clean("a\0b", 3));                             /* NUL */
    CHECK(!text_is_clean("\xff", 1));
    CHECK(!text_is_clean("\xc0\xaf", 2));                         /* overlong '/' */
    CHECK(!text_is_clean("\xed\xa0\x80", 3));                     /* surrogate */
    CHECK(!text_is_clean("\xf4\x90\x80\x80", 4));                 /* > U+10FFFF */
    CHECK(!text_is_clean("\xe4\xbd", 2));                         /* truncated */
    {
        /* 8 bytes at a time: a NUL, a high byte or a bad sequence at
         * every place of strings 1..40 long is found */
        char t[41];
        size_t len, at, bad = 0;
        for (len = 1; len <= 40; len++) {
            memset(t, 'a', len);
            bad += !text_is_clean(t, len);
            for (at = 0; at < len; at++) {
                t[at] = '\0';
                bad += text_is_clean(t, len);
                t[at] = '\x80';
                bad += text_is_clean(t, len);
                t[at] = 0x7F;   /* DEL: clean */
                bad += !text_is_clean(t, len);
                if (at + 1 < len) {
                    memcpy(t + at, "\xc3\xa9", 2);   /* U+00E9: clean */
                    bad += !text_is_clean(t, len);
                    t[at + 1] = 'a';
                }
                t[at] = 'a';
            }
        }
        CHECK(bad == 0);
    }

    CHECK(text_escaped_len("a\xff" "b\\\0", 5) == 12);
    text_escape(out, "a\xff" "b\\\0", 5);
    CHECK_MEM(out, 12, "a\\xffb\\\\\\x00");
    CHECK(text_escaped_len("\xe4\xbd\xa0\xff", 4) == 7);
    text_escape(out, "\xe4\xbd\xa0\xff", 4);
    CHECK_MEM(out, 7, "\xe4\xbd\xa0\\xff");
}

static void test_base64(void)
{
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *want[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    size_t i;

    for (i = 0; i < 7; i++) {
        buf_t b;
        buf_init(&b, NULL, 0);
        base64_put(&b, (const unsigned char *)in[i], strlen(in[i]));
        CHECK_MEM(b.p, b.len, want[i]);
        CHECK(base64_len(strlen(in[i])) == strlen(want[i]));
        buf_free(&b);
    }
}

static void test_buf_growth(void)
{
    char stack[4];
    buf_t b;
    int i;

    buf_init(&b, stack, sizeof stack);
    buf_puts(&b, "abc");
    CHECK(!b.on_heap);
    for (i = 0; i < 1000; i++)
        buf_puts(&b, "0123456789");
    CHECK(b.on_heap && b.len == 10003 && memcmp(b.p, "abc0123", 7) == 0);
    buf_free(&b);
}

static void test_jsonw(void)
{
    char s[8];
    buf_t b;
    int first = 1;

    buf_init(&b, s, sizeof s);
    buf_putc(&b, '{');
    jw_key(&b, "k", &first);
    jw_string(&b, "a\"b\\c\n\x01", 7);
    jw_key(&b, "bin", &first);
    jw_string(&b, "\x00\xff", 2);
    jw_key(&b, "n", &first);
    jw_int(&b, -42);
    jw_key(&b, "d", &first);
    jw_double(&b, 1.5);
    buf_putc(&b, '}');
    CHECK_MEM(b.p, b.len,
              "{\"k\":\"a\\\"b\\\\c\\n\\u0001\",\"bin\":{\"$base64\":\"AP8=\"},\"n\":-42,\"d\":1.5}");
    buf_free(&b);
}

/* a journal as the writer opens it: its segments, then earlier starts'
 * files taken over */
static journal_t *jopen(const char *dir, int64_t inc, uint64_t max_bytes, int sync_ms,
                        uint64_t mem_bytes, char *err, size_t errlen)
{
    journal_t *j = journal_open(dir, inc, max_bytes, sync_ms, mem_bytes, err, errlen);

    if (j)
        journal_recover(j);
    return j;
}

/* ... attached to q, with those files' events */
static void attach(queue_t *q, journal_t *j)
{
    queue_attach_journal(q, j);
    queue_take_earlier(q);
}

static void sample_in(event_in_t *in)
{
    event_in_init(in, HOOK_ON_PUBLISH, 946684800000000LL + 1000001);
    in->qos = 1;
    in->retain = 0;
    in->has_conn = 1;
    in->conn_id = 77;
    in->f[F_MOUNTPOINT] = (span_t){"", 0, 1};
    in->f[F_CLIENT_ID] = (span_t){"c\xff", 2, 1};
    in->f[F_USERNAME] = (span_t){"u", 1, 1};
    in->f[F_TOPIC] = (span_t){"a/b", 3, 1};
    in->f[F_PAYLOAD] = (span_t){"{\"a\":1}", 7, 1};
    in->payload_size = 7;
}

static event_t *make_event(void)
{
    event_in_t in;

    sample_in(&in);
    return event_build(&in);
}

/* a queue whose journal is in memory only (journal = off) */
static journal_t *mem_queue(queue_t *q, size_t max_events, size_t max_bytes, size_t wake_at)
{
    char err[256];
    journal_t *j;

    if (queue_init(q, max_events, max_bytes, wake_at) != 0)
        return NULL;
    j = jopen(NULL, 1, max_bytes, 0, 0, err, sizeof err);
    if (j)
        attach(q, j);
    else
        queue_destroy(q);
    return j;
}

static void mem_queue_end(queue_t *q, journal_t *j)
{
    CHECK(queue_detach_journal(q, NULL) == 0);
    journal_close(j);
    queue_destroy(q);
}

static void test_event(void)
{
    event_t *ev = make_event();

    CHECK(ev != NULL);
    if (!ev)
        return;
    CHECK(ev->len[F_MOUNTPOINT] == 0);
    CHECK(ev->len[F_PROPERTIES] == -1);
    CHECK(ev->flags == (1u << F_CLIENT_ID));
    CHECK_MEM(event_field(ev, F_CLIENT_ID), (size_t)ev->len[F_CLIENT_ID], "c\\xff");
    CHECK_MEM(event_field(ev, F_TOPIC), (size_t)ev->len[F_TOPIC], "a/b");
    CHECK(ev->bytes == offsetof(event_t, data) + 7 + 5 + 1 + 3);  /* payload, c\\xff, u, a/b */
    event_free(ev);
}

/* The queue with its journal in memory only (journal = off): bounded by
 * max_events and max_bytes exactly, drops counted and numbered; the last
 * row before a stop goes past the limits; what a stop leaves is lost. */
static void test_queue(void)
{
    queue_t q;
    journal_t *j;
    event_in_t in;
    uint64_t seq, per_hook[EVENT_KINDS] = {0};
    event_t *list, *ev;
    size_t n, size;
    int i;

    sample_in(&in);
    ev = make_event();
    size = ev ? ev->bytes : 0;
    event_free(ev);
    CHECK(queue_init(&q, 3, 1 << 20, 2) == 0);
    CHECK(queue_add(&q, &in, &seq) == 3 && seq == 1);   /* no journal yet: a drop, as stopped */
    queue_destroy(&q);
    CHECK((j = mem_queue(&q, 3, 1 << 20, 2)) != NULL);
    if (!j)
        return;
    CHECK(journal_in_memory(j));
    for (i = 0; i < 3; i++) {
        CHECK(queue_ready(&q) == (i >= 2));   /* ready from wake_at (2) events on */
        CHECK(queue_add(&q, &in, &seq) == 0 && seq == (uint64_t)i + 1);
    }
    CHECK(queue_full_hint(&q));
    CHECK(queue_add(&q, &in, &seq) == 1 && seq == 4);   /* full: a counted drop */
    CHECK(queue_add_if_room(&q, &in, &seq) == 1 && seq == 4);   /* no room: no number */
    CHECK(queue_drop(&q, HOOK_ON_PUBLISH, DROP_NO_ROOM) == 5);
    list = queue_pop(&q, 2, 0, &n);
    CHECK(n == 2 && list && list->seq == 1 && list->next->seq == 2 && !list->next->next &&
          list->home == EV_JOURNAL && list->bytes == size &&
          memcmp(event_field(list, F_TOPIC), "a/b", 3) == 0);
    queue_release_list(list);
    CHECK(queue_add(&q, &in, &seq) == 0 && seq == 6);   /* room again */
    list = queue_pop(&q, 10, 0, &n);
    CHECK(n == 2 && list->seq == 3 && list->next->seq == 6);
    queue_release_list(list);
    {
        queue_stats_t st;
        queue_get_stats(&q, &st);
        CHECK(st.dropped == 2 && st.count == 0 && st.bytes == 0 && st.peak_count == 3);
    }
    list = queue_pop(&q, 10, 10, &n);                   /* empty: times out */
    CHECK(list == NULL && n == 0);
    CHECK(!queue_ready(&q));
    queue_request_flush(&q);                            /* a flush: ready when empty too */
    CHECK(queue_ready(&q));
    list = queue_pop(&q, 10, 1000, &n);
    CHECK(list == NULL && n == 0 && !queue_ready(&q));
    queue_settled(&q);
    /* full again; the last row goes past the limits, then nothing */
    for (i = 0; i < 3; i++)
        CHECK(queue_add(&q, &in, &seq) == 0);
    CHECK(queue_add(&q, &in, &seq) == 1 && seq == 10);
    CHECK(queue_add_last(&q, &in, &seq) == 0 && seq == 11);
    CHECK(queue_add(&q, &in, &seq) == 3 && seq == 12);
    {
        queue_stats_t st;   /* the stopped drop counted with the others, apart */
        queue_get_stats(&q, &st);
        CHECK(st.dropped == 4 && st.dropped_stopped == 1);
    }
    list = queue_pop(&q, 1, 0, &n);   /* 7 read, then the stop */
    CHECK(n == 1 && list && list->seq == 7 && queue_leave(list) == 0);   /* lost */
    queue_settled(&q);
    CHECK(queue_detach_journal(&q, per_hook) == 3 && per_hook[HOOK_ON_PUBLISH] == 3);
    CHECK(queue_add(&q, &in, &seq) == 3);   /* no journal: as stopped */
    journal_close(j);
    queue_destroy(&q);

    /* byte limit: max_bytes exactly */
    CHECK((j = mem_queue(&q, 100, 2 * size, 1)) != NULL);
    if (!j)
        return;
    CHECK(!queue_full_hint(&q));
    CHECK(queue_add(&q, &in, &seq) == 0 && queue_add(&q, &in, &seq) == 0);
    CHECK(queue_add(&q, &in, &seq) == 1 && !queue_full_hint(&q));
    list = queue_pop(&q, 10, 0, &n);
    CHECK(n == 2);
    queue_release_list(list);
    queue_settled(&q);
    mem_queue_end(&q, j);
}

struct pop_arg {
    queue_t *q;
    event_t *list;
    size_t n;
};

static void *pop_main(void *arg)
{
    struct pop_arg *a = arg;

    a->list = queue_pop(a->q, 10, 0, &a->n);
    return NULL;
}

/* A record a hook has reserved and not committed is waited for briefly,
 * never for ever: queue_pop returns nothing (the writer goes on with its
 * stop or its next turn), and the record once committed. */
static void test_queue_unwritten(void)
{
    queue_t q;
    journal_t *j;
    event_in_t in;
    event_layout_t lay;
    event_t *ev;
    uint32_t salt = 0;
    int wake = 0, joined;
    pthread_t t;
    struct pop_arg a = {&q, NULL, 0};
    struct timespec dl;

    sample_in(&in);
    CHECK((j = mem_queue(&q, 100, 1 << 20, 1)) != NULL);
    if (!j)
        return;
    CHECK(event_layout(&in, &lay) == 0);
    /* queue_add up to the fill: its number, counted, space taken */
    pthread_mutex_lock(&q.mu);
    ev = journal_reserve(j, lay.total, JR_COUNT, &wake, &salt);
    q.last_seq++;
    q.count++;
    q.bytes += lay.total;
    pthread_mutex_unlock(&q.mu);
    CHECK(ev != NULL);
    if (!ev)
        return;
    CHECK(pthread_create(&t, NULL, pop_main, &a) == 0);
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    joined = pthread_timedjoin_np(t, NULL, &dl) == 0;
    CHECK(joined && a.list == NULL && a.n == 0 && queue_held_back(&q));   /* a stop goes on */
    event_fill(ev, &in, &lay);
    ev->home = EV_JOURNAL;
    ev->seq = q.last_seq;
    journal_commit(j, ev, salt);
    if (!joined) {
        pthread_join(t, NULL);   /* it reads the record now */
        queue_release_list(a.list);
    }
    a.list = queue_pop(&q, 10, 0, &a.n);
    CHECK(joined && a.n == 1 && a.list && a.list->seq == 1 && !queue_held_back(&q));
    queue_release_list(a.list);
    queue_settled(&q);
    mem_queue_end(&q, j);
}

/* reads COPY BINARY back: returns field i's length (-1 NULL) and data */
static int copy_field(const unsigned char *row, int i, const unsigned char **data)
{
    const unsigned char *p = row + 2;
    int k;
    int32_t len = 0;

    for (k = 0; k <= i; k++) {
        len = (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
        p += 4;
        if (k == i)
            break;
        if (len > 0)
            p += len;
    }
    *data = p;
    return len;
}

static int64_t be64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;
    for (i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return (int64_t)v;
}

static void test_copy(void)
{
    copy_ctx_t ctx = {"node@h", 6, 123, 65536, 0};
    event_t *ev = make_event();
    const unsigned char *row, *d;
    buf_t b;
    int len;

    ev->seq = 9;
    ev->peer_family = 4;
    ev->peer_port = 1883;
    memcpy(ev->peer_addr, "\x7f\x00\x00\x01", 4);
    buf_init(&b, NULL, 0);
    copy_header(&b);
    CHECK(b.len == 19 && memcmp(b.p, "PGCOPY\n\377\r\n\0", 11) == 0);
    copy_row(&b, &ctx, ev);
    copy_trailer(&b);
    row = (const unsigned char *)b.p + 19;
    CHECK(row[0] == 0 && row[1] == COPY_NCOLS);
    len = copy_field(row, 0, &d);
    CHECK_MEM(d, (size_t)len, "node@h");
    len = copy_field(row, 1, &d);
    CHECK(len == 8 && be64(d) == 123);
    len = copy_field(row, 2, &d);
    CHECK(len == 8 && be64(d) == 9);
    len = copy_field(row, 3, &d);                        /* ts: µs since 2000 */
    CHECK(len == 8 && be64(d) == 1000001);
    len = copy_field(row, 4, &d);
    CHECK_MEM(d, (size_t)len, "on_publish");
    len = copy_field(row, 5, &d);
    CHECK(len == 8 && be64(d) == 77);
    len = copy_field(row, 6, &d);                        /* mountpoint '' */
    CHECK(len == 0);
    len = copy_field(row, 9, &d);                        /* inet 127.0.0.1 */
    CHECK(len == 8 && d[0] == 2 && d[1] == 32 && d[2] == 0 && d[3] == 4 && d[4] == 127 && d[7] == 1);
    len = copy_field(row, 10, &d);
    CHECK(len == 4 && d[2] == (1883 >> 8) && d[3] == (1883 & 255));
    len = copy_field(row, 11, &d);                       /* qos smallint */
    CHECK(len == 2 && d[0] == 0 && d[1] == 1);
    len = copy_field(row, 13, &d);                       /* topics NULL */
    CHECK(len == -1);
    len = copy_field(row, 14, &d);                       /* retain false */
    CHECK(len == 1 && d[0] == 0);
    len = copy_field(row, 15, &d);                       /* clean_session NULL */
    CHECK(len == -1);
    len = copy_field(row, 17, &d);                       /* payload_size */
    CHECK(len == 4 && d[3] == 7);
    len = copy_field(row, 18, &d);                       /* not truncated */
    CHECK(len == 1 && d[0] == 0);
    len = copy_field(row, 19, &d);                       /* payload_json */
    CHECK(len == 8 && d[0] == 1 && memcmp(d + 1, "{\"a\":1}", 7) == 0);
    len = copy_field(row, 22, &d);                       /* extra: escaped */
    CHECK(len > 0 && d[0] == 1);
    if (len > 0)
        CHECK_MEM(d + 1, (size_t)len - 1, "{\"escaped\":[\"client_id\"]}");
    len = copy_field(row, 23, &d);                       /* payload_hash */
    CHECK(len == 8 && (int64_t)be64(d) == 3556729773055788134LL);
    CHECK((unsigned char)b.p[b.len - 1] == 0xFF && (unsigned char)b.p[b.len - 2] == 0xFF);
    buf_free(&b);

    /* payload_hash: values pinned (stored hashes must stay comparable
     * across versions; computed independently in Python) */
    CHECK(copy_payload_hash("", 0) == -5359395787896680367LL);
    CHECK(copy_payload_hash("hello", 5) == 7067998063446838299LL);
    CHECK(copy_payload_hash("0123456789abcdef!", 17) == 1196384083624992253LL);

    /* a payload that is not JSON, or truncated, gets no payload_json */
    ev->len[F_PAYLOAD] = 3;  /* truncated view of {"a":1} */
    buf_init(&b, NULL, 0);
    copy_row(&b, &ctx, ev);
    row = (const unsigned char *)b.p;
    len = copy_field(row, 18, &d);
    CHECK(len == 1 && d[0] == 1);
    len = copy_field(row, 19, &d);
    CHECK(len == -1);
    len = copy_field(row, 23, &d);                       /* hash of what is stored */
    CHECK(len == 8 && (int64_t)be64(d) == copy_payload_hash("{\"a", 3));
    buf_free(&b);
    /* payload_mode none (nothing stored of a payload): no payload_hash */
    ev->len[F_PAYLOAD] = 0;
    buf_init(&b, NULL, 0);
    copy_row(&b, &ctx, ev);
    len = copy_field((const unsigned char *)b.p, 23, &d);
    CHECK(len == -1);
    buf_free(&b);
    /* no client id (on_auth_m5 before it is known): NULL, and '' for a
     * Citus distributed table, which places no row without it */
    ev->len[F_CLIENT_ID] = -1;
    buf_init(&b, NULL, 0);
    copy_row(&b, &ctx, ev);
    len = copy_field((const unsigned char *)b.p, 7, &d);
    CHECK(len == -1);
    buf_free(&b);
    ctx.client_id_required = 1;
    buf_init(&b, NULL, 0);
    copy_row(&b, &ctx, ev);
    len = copy_field((const unsigned char *)b.p, 7, &d);
    CHECK(len == 0);
    len = copy_field((const unsigned char *)b.p, 8, &d);  /* the next column unmoved: username */
    CHECK_MEM(d, (size_t)len, "u");
    buf_free(&b);
    event_free(ev);

    /* regression (hostile test, seed 44751592): jansson takes "1\0" as the
     * number 1, PostgreSQL refuses a NUL in jsonb: no payload_json */
    {
        event_in_t in;
        event_in_init(&in, HOOK_ON_PUBLISH, 946684800000000LL);
        in.f[F_PAYLOAD] = (span_t){"1\0", 2, 1};
        in.payload_size = 2;
        ev = event_build(&in);
        CHECK(ev != NULL);
        if (ev) {
            buf_init(&b, NULL, 0);
            copy_row(&b, &ctx, ev);
            len = copy_field((const unsigned char *)b.p, 19, &d);
            CHECK(len == -1);
            buf_free(&b);
            event_free(ev);
        }
    }
}

static void test_conninfo(void)
{
    char out[256];

    conninfo_masked("postgresql://vmq:s3cret@db.example:5433/mqtt", out, sizeof out);
    CHECK(strstr(out, "s3cret") == NULL && strstr(out, "password=****") != NULL);
    CHECK(strstr(out, "host='db.example'") != NULL && strstr(out, "dbname='mqtt'") != NULL);
    conninfo_masked("host=x password='p w' user=u", out, sizeof out);
    CHECK(strstr(out, "p w") == NULL && strstr(out, "password=****") != NULL);
    CHECK(conninfo_check("host=x port=5432") == 0);
    CHECK(conninfo_check("host='unterminated") != 0);
    conninfo_masked("host='unterminated password=abc", out, sizeof out);
    CHECK(out[0] == '\0');
    /* the client key's passphrase is as secret as the password (libpq
     * marks both), in a keyword list and in a URI */
    conninfo_masked("host=x sslkey=/k.pem sslpassword=Key-Pass-99 password=pw1", out, sizeof out);
    CHECK(strstr(out, "Key-Pass-99") == NULL && strstr(out, "sslpassword=****") != NULL);
    CHECK(strstr(out, "pw1") == NULL && strstr(out, "sslkey='/k.pem'") != NULL);
    conninfo_masked("postgresql://u@h/db?sslpassword=Key-Pass-99", out, sizeof out);
    CHECK(strstr(out, "Key-Pass-99") == NULL && strstr(out, "sslpassword=****") != NULL);
    {
        char *sec = pgio_conninfo_secrets("host=x password=pw1 sslpassword=Key-Pass-99");
        char *dup = pgio_secrets_dup(sec);
        CHECK(sec != NULL && dup != NULL);
        pgio_clean_error("could not load key Key-Pass-99 for pw1\n", dup, out, sizeof out);
        CHECK(strcmp(out, "could not load key *********** for ***") == 0);
        pgio_secrets_free(sec);
        pgio_secrets_free(dup);
        /* an encrypted sslkey without sslpassword: libpq's hook, never
         * OpenSSL's prompt on the terminal */
        pgio_init();
        CHECK(PQgetSSLKeyPassHook_OpenSSL() == PQdefaultSSLKeyPassHook_OpenSSL);
        /* none: an empty list (NULL: out of memory, or not parsable) */
        sec = pgio_conninfo_secrets("host=x user=u");
        CHECK(sec != NULL && sec[0] == '\0');
        pgio_secrets_free(sec);
        CHECK(pgio_conninfo_secrets("host='x") == NULL);
    }
    /* a secret inside a longer one, and a secret cut by the length of
     * the text kept: masked whole, before the cut */
    {
        char *sec = pgio_conninfo_secrets("password=s3cret sslpassword=s3cret2024");
        char small[10];
        pgio_clean_error("key s3cret2024 pw s3cret", sec, out, sizeof out);
        CHECK(strcmp(out, "key ********** pw ******") == 0);
        pgio_clean_error("abc s3cret2024", sec, small, sizeof small);
        CHECK(strcmp(small, "abc *****") == 0);
        pgio_secrets_free(sec);
    }
    /* a secret made of '*' (what masking writes) ends, masked */
    {
        char *sec = pgio_conninfo_secrets("password=***");
        pgio_clean_error("auth failed: *** and ***", sec, out, sizeof out);
        CHECK(strcmp(out, "auth failed: *** and ***") == 0);
        pgio_secrets_free(sec);
    }
}

static int match(const char *filter, const char *topic)
{
    char err[128];
    filters_t *f = filters_parse(filter, "", "", err, sizeof err);
    span_t words[16];
    size_t n = 0;
    const char *p = topic, *e;
    int r;

    if (!f)
        return -1;
    for (;;) {
        e = strchr(p, '/');
        words[n++] = (span_t){p, e ? (size_t)(e - p) : strlen(p), 1};
        if (!e)
            break;
        p = e + 1;
    }
    r = topic_matches(&f->include[0], words, n);
    filters_free(f);
    return r;
}

static void test_filters(void)
{
    char err[128];
    filters_t *f;
    span_t sys[2] = {{"$SYS", 4, 1}, {"broker", 6, 1}};
    span_t ab[2] = {{"a", 1, 1}, {"b", 1, 1}};

    CHECK(match("a/b", "a/b") == 1);
    CHECK(match("a/b", "a/c") == 0);
    CHECK(match("a/+", "a/b") == 1);
    CHECK(match("a/+", "a/b/c") == 0);
    CHECK(match("a/#", "a/b/c") == 1);
    CHECK(match("a/#", "a") == 1);            /* # includes the parent */
    CHECK(match("#", "a/b") == 1);
    CHECK(match("#", "$SYS/x") == 0);         /* no wildcard match on $ topics */
    CHECK(match("+/x", "$SYS/x") == 0);
    CHECK(match("$SYS/#", "$SYS/x") == 1);
    CHECK(match("a//b", "a//b") == 1);        /* empty words */
    CHECK(match("+/+", "a/") == 1);
    CHECK(match("a/b/c", "a/b") == 0);
    CHECK(filters_parse("a/#/b", "", "", err, sizeof err) == NULL && strstr(err, "a/#/b"));
    CHECK(filters_parse("a+/b", "", "", err, sizeof err) == NULL);
    {
        /* at most 64 levels, as payload_topics: the hook path keeps the
         * first 64 words of a longer topic (and counts them all) */
        char deep[200] = "";
        int i;
        for (i = 0; i < 64; i++)
            strcat(deep, i ? "/+" : "+");
        f = filters_parse("", deep, "", err, sizeof err);
        CHECK(f != NULL);
        filters_free(f);
        strcat(deep, "/x");
        CHECK(filters_parse("", deep, "", err, sizeof err) == NULL &&
              strstr(err, "a topic filter of more than 64 levels: +/+/") == err);
    }

    f = filters_parse(" a/#, c ", "$SYS/#", "default, tenant1", err, sizeof err);
    CHECK(f && f->ninclude == 2 && f->nexclude == 1 && f->nmountpoints == 2);
    if (f) {
        CHECK(filters_topic_ok(f, ab, 2));
        CHECK(!filters_topic_ok(f, sys, 2));
        CHECK(!filters_topic_ok(f, &ab[1], 1));   /* "b": not included */
        CHECK(filters_mountpoint_ok(f, "", 0));
        CHECK(filters_mountpoint_ok(f, "tenant1", 7));
        CHECK(!filters_mountpoint_ok(f, "tenant2", 7));
        filters_free(f);
    }
    f = filters_parse("", "", "", err, sizeof err);
    CHECK(f && filters_topic_ok(f, sys, 2) && filters_mountpoint_ok(f, "x", 1));
    filters_free(f);
}

static size_t count_files(const char *dir, const char *prefix)
{
    char cmd[512];
    FILE *p;
    size_t n = 0;

    snprintf(cmd, sizeof cmd, "ls '%s' 2>/dev/null | grep -c '^%s'", dir, prefix);
    p = popen(cmd, "r");
    if (p) {
        if (fscanf(p, "%zu", &n) != 1)
            n = 0;
        pclose(p);
    }
    return n;
}

static event_t *spool_event(uint64_t seq, const char *payload)
{
    event_in_t in;
    event_t *ev;

    event_in_init(&in, HOOK_ON_PUBLISH, 1000);
    in.f[F_CLIENT_ID] = (span_t){"c", 1, 1};
    in.f[F_PAYLOAD] = (span_t){payload, strlen(payload), 1};
    in.payload_size = strlen(payload);
    ev = event_build(&in);
    ev->seq = seq;
    return ev;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* an earlier version's spool file: "VPGS" | length | CRC-32 | the event's
 * bytes from seq on, for seq from..from+n-1 */
static void write_legacy_spool(const char *path, uint64_t from, int n)
{
    FILE *f = fopen(path, "wb");
    int i;

    CHECK(f != NULL);
    if (!f)
        return;
    for (i = 0; i < n; i++) {
        char p[32];
        unsigned char h[12];
        event_t *ev;
        size_t len;
        snprintf(p, sizeof p, "payload-%llu", (unsigned long long)from + (uint64_t)i);
        ev = spool_event(from + (uint64_t)i, p);
        len = ev->bytes - offsetof(event_t, seq);
        memcpy(h, "VPGS", 4);
        put_be32(h + 4, (uint32_t)len);
        put_be32(h + 8, crc32_buf(0, &ev->seq, len));
        CHECK(fwrite(h, 1, 12, f) == 12 && fwrite(&ev->seq, 1, len, f) == len);
        event_free(ev);
    }
    fclose(f);
}

typedef struct readback {
    uint64_t count, seqs[64];
    int64_t incs[64];
    int payload_ok;
    journal_stats_t js;
} readback_t;

/* A later start (incarnation inc) takes over what is in dir: every event
 * through the queue, written (released); then closed. */
static void read_back(const char *dir, int64_t inc, size_t batch, readback_t *rb)
{
    char err[256] = "";
    journal_t *j = jopen(dir, inc, 16u << 20, 1000, MEM, err, sizeof err);
    queue_t q;
    event_t *got, *ev;
    size_t n;

    memset(rb, 0, sizeof *rb);
    rb->payload_ok = 1;
    CHECK(j != NULL && queue_init(&q, 10, 1000, 1) == 0);
    if (!j)
        return;
    journal_get_stats(j, &rb->js);
    attach(&q, j);
    while ((got = queue_pop(&q, batch, 0, &n)) != NULL) {
        for (ev = got; ev; ev = ev->next) {
            char p[32];
            snprintf(p, sizeof p, "payload-%llu", (unsigned long long)ev->seq);
            if (rb->count < 64) {
                rb->seqs[rb->count] = ev->seq;
                rb->incs[rb->count] = queue_event_origin(ev);
            }
            rb->payload_ok &= ev->home == EV_JOURNAL &&
                              (size_t)ev->len[F_PAYLOAD] == strlen(p) &&
                              memcmp(event_field(ev, F_PAYLOAD), p, strlen(p)) == 0;
            rb->count++;
        }
        /* one origin a batch */
        for (ev = got; ev; ev = ev->next)
            rb->payload_ok &= queue_event_origin(ev) == queue_event_origin(got);
        queue_release_list(got);
    }
    queue_settled(&q);
    CHECK(queue_detach_journal(&q, NULL) == 0);
    journal_close(j);
    queue_destroy(&q);
}

/* A start (incarnation 14) takes the first 3 of the 10 events earlier
 * starts left in dir, writes them, and stops. */
static void write_three(const char *dir)
{
    char err[256] = "";
    journal_t *j = jopen(dir, 14, 4u << 20, 50, MEM, err, sizeof err);
    queue_t q;
    event_t *got;
    size_t n;

    CHECK(j != NULL && queue_init(&q, 100, 1u << 20, 1000) == 0);
    if (!j)
        return;
    attach(&q, j);
    got = queue_pop(&q, 3, 0, &n);
    CHECK(n == 3 && got && got->seq == 1);
    queue_release_list(got);
    queue_settled(&q);
    CHECK(queue_detach_journal(&q, NULL) == 7);
    journal_close(j);
    queue_destroy(&q);
}

/* Earlier versions' spool files: converted into journal files, read back
 * through the journal (oldest incarnation first), a damaged record
 * skipped and counted, a torn one at the end too; gone once written. */
static void test_recover_legacy(void)
{
    char dir[] = "/tmp/vmq_pgevents_recover_test.XXXXXX", path[256], cmd[300];
    readback_t rb;
    FILE *f;

    CHECK(mkdtemp(dir) != NULL);
    CHECK(crc32_buf(0, "123456789", 9) == 0xCBF43926u);   /* the standard check value */
    snprintf(path, sizeof path, "%s/spool-200.dat", dir);
    write_legacy_spool(path, 50, 1);
    snprintf(path, sizeof path, "%s/spool-100.dat", dir);
    write_legacy_spool(path, 10, 5);
    f = fopen(path, "r+b");
    CHECK(f != NULL);
    if (f) {
        long size;
        fseek(f, 0, SEEK_END);
        size = ftell(f);
        fseek(f, size / 2, SEEK_SET);         /* inside the third record */
        fputc(0x5A ^ fgetc(f), f);
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/spool-300.dat", dir);
    write_legacy_spool(path, 1, 2);
    f = fopen(path, "r+b");
    if (f) {
        fseek(f, 0, SEEK_END);
        CHECK(ftruncate(fileno(f), ftell(f) - 5) == 0);   /* a crash in an append */
        fclose(f);
    }
    read_back(dir, 400, 2, &rb);
    CHECK(rb.count == 6 && rb.payload_ok);
    CHECK(rb.seqs[0] == 10 && rb.seqs[1] == 11 && rb.seqs[2] == 13 && rb.seqs[3] == 14 &&
          rb.seqs[4] == 50 && rb.seqs[5] == 1);
    CHECK(rb.incs[0] == 100 && rb.incs[3] == 100 && rb.incs[4] == 200 && rb.incs[5] == 300);
    CHECK(rb.js.recovered == 6 && rb.js.corrupt == 2 && rb.js.unreadable == 0 &&
          rb.js.old_bytes > 0);
    CHECK(count_files(dir, "spool-") == 0 && count_files(dir, "journal-") == 0);
    /* partly written, then a stop: such a file (no segment header, no
     * salt) gets no cursor file, and is read whole again */
    snprintf(path, sizeof path, "%s/spool-14.dat", dir);
    write_legacy_spool(path, 1, 10);
    write_three(dir);
    CHECK(count_files(dir, "journal-14-0-0.dat") == 1 && count_files(dir, "journal-14-0-0.dat.w") == 0);
    read_back(dir, 15, 100, &rb);
    CHECK(rb.count == 10 && rb.seqs[0] == 1 && rb.seqs[9] == 10);
    CHECK(count_files(dir, "journal-") == 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

/* The journal through the queue: events are built in place, taken by the
 * writer side once published, released; segments turn over and go; no
 * room is a counted drop; what is not released at close stays on disk and
 * a later start takes it over: only the events not yet written. */
static void test_journal(void)
{
    char dir[] = "/tmp/vmq_pgevents_journal_test.XXXXXX", err[256] = "", cmd[300];
    journal_t *j;
    journal_stats_t js;
    queue_t q;
    event_in_t in;
    event_t *got, *ev;
    uint64_t seq = 0, expect;
    size_t n, total = 0;
    int i, rc = 0, ok;
    char payload[600];
    uint64_t dropped = 0, last_journal = 0, per_seg = 0;

    CHECK(crc32c("123456789", 9) == 0xE3069283u);   /* the standard check value */
    CHECK(mkdtemp(dir) != NULL);
    CHECK(jopen(dir, 7, 1 << 20, 1000, MEM, err, sizeof err) == NULL &&
          strstr(err, "too small"));
    j = jopen(dir, 7, 4u << 20, 50, MEM, err, sizeof err);   /* 1 MiB segments, 4 at most */
    CHECK(j != NULL);
    if (!j)
        return;
    /* small segments: made ahead up to SPARE_BYTES (here the limit) at
     * the open, so a burst that fills them finds them all */
    journal_get_stats(j, &js);
    CHECK(js.segments == 4 && js.disk_bytes == 4u << 20);
    CHECK(queue_init(&q, 10, 1000, 1) == 0);   /* memory limits do not apply to the journal */
    attach(&q, j);
    memset(payload, 'p', sizeof payload);
    /* ~700 bytes an event: a segment holds ~1,500; 3,000 events turn it over */
    for (i = 0; i < 3000 && rc == 0; i++) {
        event_in_init(&in, HOOK_ON_PUBLISH, 1000 + i);
        in.f[F_CLIENT_ID] = (span_t){"jc", 2, 1};
        in.f[F_PAYLOAD] = (span_t){payload, sizeof payload, 1};
        rc = queue_add(&q, &in, &seq);
    }
    CHECK(rc == 0 && seq == 3000);
    journal_get_stats(j, &js);
    CHECK(js.seg_bytes == 1u << 20 && js.segments >= 2);
    expect = 1;
    ok = 1;
    while ((got = queue_pop(&q, 1000, 0, &n)) != NULL) {
        for (ev = got; ev; ev = ev->next) {
            ok &= ev->seq == expect++ && ev->home == EV_JOURNAL && ev->ts_us == (int64_t)(999 + ev->seq) &&
                  ev->len[F_PAYLOAD] == (int32_t)sizeof payload;
            per_seg = ((1u << 20) - JOURNAL_SEG_HDR) / record_size(ev->bytes);   /* all alike */
            total++;
        }
        queue_release_list(got);   /* written: released */
    }
    queue_settled(&q);
    CHECK(ok && total == 3000);
    /* fill it up with nothing released: drops, counted, seq consumed */
    for (i = 0; i < 20000 && rc == 0; i++) {
        event_in_init(&in, HOOK_ON_PUBLISH, 5000);
        in.f[F_PAYLOAD] = (span_t){payload, sizeof payload, 1};
        rc = queue_add(&q, &in, &seq);
        if (rc != 0)
            usleep(50000);   /* once: the journal thread may still be making a spare */
        if (rc != 0)
            rc = queue_add(&q, &in, &seq);
    }
    CHECK(rc == 1);
    journal_get_stats(j, &js);
    CHECK(js.no_room >= 1 && js.disk_bytes <= 4u << 20);
    /* an event larger than a segment takes: dropped for its size (4,
     * too_large), not for want of room */
    {
        uint64_t no_room = js.no_room;
        size_t big_n = 1u << 20;
        char *big = malloc(big_n);
        queue_stats_t qs;
        drop_ledger_t d;
        if (big) {
            memset(big, 'b', big_n);
            event_in_init(&in, HOOK_ON_PUBLISH, 5000);
            in.f[F_PAYLOAD] = (span_t){big, big_n, 1};
            CHECK(queue_add(&q, &in, &seq) == 4);
            free(big);
        }
        journal_get_stats(j, &js);
        queue_get_stats(&q, &qs);
        CHECK(js.no_room == no_room && qs.dropped_too_large == 1);
        CHECK(queue_take_drops(&q, &d) && d.reason[DROP_TOO_LARGE] == 1 && d.last_seq == seq);
        queue_return_drops(&q, &d);
        event_in_init(&in, HOOK_ON_PUBLISH, 5000);
        in.f[F_PAYLOAD] = (span_t){payload, sizeof payload, 1};
    }
    {
        queue_stats_t qs;
        queue_get_stats(&q, &qs);
        CHECK(qs.dropped >= 1 && qs.last_seq == seq);
        dropped = qs.dropped;
        last_journal = seq;
    }
    /* close: the queued events stay on disk */
    n = queue_detach_journal(&q, NULL);
    CHECK(n > 1000);
    CHECK(queue_add(&q, &in, &seq) == 3);    /* without a journal: none is queued */
    CHECK(queue_pop(&q, 10, 0, &n) == NULL);
    journal_close(j);
    CHECK(count_files(dir, "journal-7-1-") >= 2);
    /* taken over by a later start (incarnation 8): every event not yet
     * written, in order, none written before (the cursor file of the
     * segment that holds written ones and not); the hooks write while
     * they are read at its start, their events after them */
    {
        char err2[256] = "";
        journal_t *j2 = journal_open(dir, 8, 1u << 30, 1000, MEM, err2, sizeof err2);
        queue_t q2;
        uint64_t first = 0, last = 0, count = 0, new_seen = 0;
        CHECK(j2 != NULL && queue_init(&q2, 10, 1000, 1) == 0);
        if (j2) {
            queue_attach_journal(&q2, j2);
            for (i = 0; i < 2; i++)
                CHECK(queue_add(&q2, &in, &seq) == 0 && seq == (uint64_t)i + 1);
            journal_recover(j2);
            queue_take_earlier(&q2);
            journal_get_stats(j2, &js);
            ok = 1;
            while ((got = queue_pop(&q2, 500, 0, &n)) != NULL) {
                for (ev = got; ev; ev = ev->next) {
                    if (queue_event_origin(ev) == 8) {   /* this start's: after all */
                        ok &= ev->seq == ++new_seen;
                        continue;
                    }
                    if (!first)
                        first = ev->seq;
                    ok &= ev->seq > last && ev->home == EV_JOURNAL && new_seen == 0 &&
                          queue_event_origin(ev) == 7 &&
                          ev->len[F_PAYLOAD] == (int32_t)sizeof payload &&
                          memcmp(event_field(ev, F_PAYLOAD), payload, sizeof payload) == 0;
                    last = ev->seq;
                    count++;
                }
                queue_release_list(got);   /* written: released */
            }
            queue_settled(&q2);
            /* the segment that holds 3001 is read from it on: its
             * cursor file says the ones before are written */
            CHECK(ok && per_seg > 1000 && 3000 % per_seg != 0 && first == 3001 &&
                  last < last_journal && js.corrupt == 0 && new_seen == 2);
            CHECK(count == last_journal - 3000 - dropped && js.recovered == count);
            CHECK(queue_detach_journal(&q2, NULL) == 0);
            journal_close(j2);
            queue_destroy(&q2);
        }
    }
    CHECK(count_files(dir, "journal-") == 0);   /* read back: gone */
    queue_destroy(&q);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* Detaching the journal (a writer stop) leaves its unread events where
 * they are, counted by hook, and takes them out of the queue's count;
 * nothing is queued after it. */
static void test_journal_detach(void)
{
    char dir[] = "/tmp/vmq_pgevents_detach_test.XXXXXX", err[256] = "", cmd[300];
    uint64_t per_hook[EVENT_KINDS] = {0};
    journal_t *j;
    queue_t q;
    queue_stats_t qs;
    event_in_t in;
    event_t *got;
    uint64_t seq;
    size_t n, i;

    CHECK(mkdtemp(dir) != NULL);
    j = jopen(dir, 9, 4u << 20, 50, MEM, err, sizeof err);
    CHECK(j != NULL);
    if (!j)
        return;
    CHECK(queue_init(&q, 100, 1u << 20, 1000) == 0);
    attach(&q, j);
    event_in_init(&in, HOOK_ON_PUBLISH, 1);
    for (i = 0; i < 3; i++)
        CHECK(queue_add(&q, &in, &seq) == 0 && seq == i + 1);
    event_in_init(&in, HOOK_ON_DELIVER_7, 1);
    for (i = 0; i < 2; i++)
        CHECK(queue_add(&q, &in, &seq) == 0 && seq == i + 4);
    got = queue_pop(&q, 1, 0, &n);   /* one read */
    CHECK(n == 1 && got && got->seq == 1 && got->home == EV_JOURNAL);
    queue_release_list(got);
    queue_settled(&q);
    n = queue_detach_journal(&q, per_hook);
    CHECK(n == 4 && per_hook[HOOK_ON_PUBLISH] == 2 && per_hook[HOOK_ON_DELIVER_7] == 2);
    queue_get_stats(&q, &qs);
    CHECK(qs.count == 0 && qs.bytes == 0 && qs.oldest_us == 0);
    CHECK(queue_add(&q, &in, &seq) == 3 && seq == 6);   /* none queued without a journal */
    CHECK(queue_pop(&q, 10, 0, &n) == NULL);
    journal_close(j);
    queue_destroy(&q);
    /* the four stay for the next start, which reads them and not the one
     * written before them (their file's cursor file) */
    CHECK(count_files(dir, "journal-9-1-0.dat.w") == 1);
    {
        /* a start that stops at once leaves them, counted per hook too */
        uint64_t per_hook2[EVENT_KINDS] = {0};
        journal_t *j2 = jopen(dir, 10, 4u << 20, 50, MEM, err, sizeof err);
        queue_t q2;
        CHECK(j2 != NULL && queue_init(&q2, 100, 1u << 20, 1000) == 0);
        if (j2) {
            attach(&q2, j2);
            n = queue_detach_journal(&q2, per_hook2);
            CHECK(n == 4 && per_hook2[HOOK_ON_PUBLISH] == 2 && per_hook2[HOOK_ON_DELIVER_7] == 2);
            journal_close(j2);
            queue_destroy(&q2);
        }
    }
    {
        readback_t rb;
        read_back(dir, 10, 10, &rb);
        CHECK(rb.count == 4 && rb.seqs[0] == 2 && rb.seqs[3] == 5 && rb.incs[0] == 9);
    }
    CHECK(count_files(dir, "journal-") == 0);   /* written: gone, the cursor file too */
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

/* No record byte is written after its commit, by anyone: each record's
 * bytes are checksummed right after its hook committed it, and checked
 * again once every later record is in, once the writer side has read them
 * all (the disk thread moving sealed segments to disk meanwhile), once
 * most are released as written (in the segment in use, which cannot go),
 * and in the files the journal keeps at close for the rest. With memory
 * files and with the disk files mapped. */
#define IMM_N 3000
#define IMM_KEPT 100   /* not written: their segment stays */
static struct imm_rec {
    jseg_t *s;
    int file;          /* its segment's number in the file names */
    size_t off, len;
    uint32_t crc;
} imm[IMM_N];

/* the records in the files still there, as they were committed; *seen:
 * how many were checked */
static int imm_files_unchanged(const char *dir, int *seen)
{
    int i, same = 1;

    *seen = 0;
    for (i = 0; i < IMM_N; i++) {
        char path[300];
        unsigned char *b = malloc(imm[i].len);
        int fd;
        snprintf(path, sizeof path, "%s/journal-11-1-%d.dat", dir, imm[i].file);
        fd = open(path, O_RDONLY);
        if (fd >= 0 && b) {
            same &= pread(fd, b, imm[i].len, (off_t)imm[i].off) == (ssize_t)imm[i].len &&
                    crc32c(b, imm[i].len) == imm[i].crc;
            (*seen)++;
        }
        if (fd >= 0)
            close(fd);
        free(b);
    }
    return same;
}

/* the segments made ahead now */
static uint64_t spares_now(journal_t *j)
{
    int n;

    pthread_mutex_lock(&j->mu);
    n = j->nspares;
    pthread_mutex_unlock(&j->mu);
    return (uint64_t)n;
}

/* as the writer reads: under rd_mu, as the disk thread may map a sealed
 * segment afresh meanwhile (seg_reopen) */
static int imm_unchanged(journal_t *j, const jseg_t *only)
{
    int i, same = 1;

    pthread_mutex_lock(&j->rd_mu);
    for (i = 0; i < IMM_N; i++)
        if (!only || imm[i].s == only)
            same &= crc32c(imm[i].s->base + imm[i].off, imm[i].len) == imm[i].crc;
    pthread_mutex_unlock(&j->rd_mu);
    return same;
}

static void test_journal_immutable(void)
{
    uint64_t mem[2] = {MEM, 0};
    int m;

    for (m = 0; m < 2; m++) {
        char dir[] = "/tmp/vmq_pgevents_immutable.XXXXXX", err[256] = "", cmd[300];
        char payload[600];
        journal_t *j;
        jseg_t *cur;
        queue_t q;
        event_in_t in;
        event_t *got, *all = NULL, *last = NULL, *kept;
        uint64_t seq;
        size_t n, total = 0;
        int i, ok = 1, file = 0, seen;

        CHECK(mkdtemp(dir) != NULL);
        j = jopen(dir, 11, 8u << 20, 5, mem[m], err, sizeof err);   /* 1 MiB segments */
        CHECK(j != NULL && queue_init(&q, 10, 1000, 1) == 0);
        if (!j)
            return;
        attach(&q, j);
        memset(payload, 'i', sizeof payload);
        for (i = 0; i < IMM_N; i++) {
            jseg_t *before = __atomic_load_n(&j->cur, __ATOMIC_ACQUIRE);
            size_t used = __atomic_load_n(&before->used, __ATOMIC_ACQUIRE);
            event_in_init(&in, HOOK_ON_PUBLISH, 1000 + i);
            in.f[F_PAYLOAD] = (span_t){payload, sizeof payload, 1};
            ok &= queue_add(&q, &in, &seq) == 0;
            cur = __atomic_load_n(&j->cur, __ATOMIC_ACQUIRE);
            file += cur != before;
            imm[i].s = cur;
            imm[i].file = file;
            imm[i].off = cur == before ? used : JOURNAL_SEG_HDR;
            imm[i].len = cur->used - imm[i].off;
            imm[i].crc = crc32c(cur->base + imm[i].off, imm[i].len);
            if (i % 500 == 499)
                usleep(20000);   /* the journal thread makes spares; the disk thread syncs */
        }
        CHECK(ok && imm[0].s != imm[IMM_N - 1].s);   /* two segments at least */
        CHECK(imm_unchanged(j, NULL));                  /* the hooks wrote none twice */
        if (mem[m]) {
            /* the disk thread moves the sealed ones to their disk files
             * and reads them from there (waited for, at most 10 s) */
            journal_stats_t js;
            for (i = 0; i < 1000; i++) {
                journal_get_stats(j, &js);
                if (js.ram_segments <= 1 + spares_now(j))
                    break;
                usleep(10000);
            }
            CHECK(js.ram_segments <= 1 + spares_now(j) && imm[0].s->ram_fd < 0 && imm_unchanged(j, NULL));
        }
        while ((got = queue_pop(&q, 700, 0, &n)) != NULL) {
            if (last)
                last->next = got;
            else
                all = got;
            for (last = got; last->next; last = last->next)
                ;
            total += n;
        }
        queue_settled(&q);
        CHECK(total == IMM_N && imm_unchanged(j, NULL));   /* read: none written */
        for (kept = all, i = 0; i < IMM_N - IMM_KEPT - 1; i++)
            kept = kept->next;
        got = kept;
        kept = kept->next;
        got->next = NULL;
        queue_release_list(all);                         /* written */
        cur = __atomic_load_n(&j->cur, __ATOMIC_ACQUIRE);
        CHECK(imm[IMM_N - 1].s == cur && imm[IMM_N - IMM_KEPT].s == cur && imm_unchanged(j, cur));
        while (kept) {                                   /* not written: they stay */
            got = kept->next;
            ok &= queue_leave(kept) == 1;
            kept = got;
        }
        CHECK(ok);
        CHECK(queue_detach_journal(&q, NULL) == 0);
        journal_close(j);
        queue_destroy(&q);
        CHECK(imm_files_unchanged(dir, &seen) && seen >= IMM_KEPT);
        CHECK(count_files(dir, "journal-") == 2);   /* the file and its cursor file; the rest gone */
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        CHECK(system(cmd) == 0);
    }
}

/* The order of the pops is seq's: events in memory queued before the
 * journal was attached come before the journal's; a stop's row the full
 * journal had no room for comes after all of them, and nothing after it;
 * a batch is all from memory or all from the journal. */
static void test_journal_order(void)
{
    char dir[] = "/tmp/vmq_pgevents_order.XXXXXX", err[256] = "", cmd[300], payload[600];
    journal_t *j;
    queue_t q;
    event_in_t in;
    event_t *got, *ev;
    uint64_t seq, expect = 2, last_seq = 0;
    size_t n;
    int ok = 1, rc = 0;

    CHECK(mkdtemp(dir) != NULL && queue_init(&q, 100, 1u << 20, 1) == 0);
    event_in_init(&in, HOOK_ON_PUBLISH, 1);
    CHECK(queue_add(&q, &in, &seq) == 3 && seq == 1);   /* before the journal: none */
    j = jopen(dir, 12, 2u << 20, 1000, MEM, err, sizeof err);   /* 1 MiB segments, 2 */
    CHECK(j != NULL);
    if (!j)
        return;
    attach(&q, j);
    memset(payload, 'o', sizeof payload);
    in.f[F_PAYLOAD] = (span_t){payload, sizeof payload, 1};
    while (rc == 0) {   /* until the journal is full: a drop, its number taken */
        rc = queue_add(&q, &in, &seq);
        if (rc == 0)
            last_seq = seq;
    }
    CHECK(rc == 1 && last_seq > 1000);
    CHECK(queue_add_if_room(&q, &in, &seq) == 1 && seq == last_seq + 1);   /* not for it */
    /* the stop's row: in the room each segment keeps for it */
    CHECK(queue_add_last(&q, &in, &seq) == 0 && seq == last_seq + 2);
    CHECK(queue_add(&q, &in, &seq) == 3);   /* closed behind it */
    while ((got = queue_pop(&q, 500, 0, &n)) != NULL) {
        for (ev = got; ev; ev = ev->next) {
            if (expect == last_seq + 1)
                expect++;   /* the drop */
            ok &= ev->seq == expect++ && ev->home == EV_JOURNAL;
        }
        queue_release_list(got);
    }
    queue_settled(&q);
    CHECK(ok && expect == last_seq + 3);
    CHECK(queue_detach_journal(&q, NULL) == 0);
    journal_close(j);
    queue_destroy(&q);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* Earlier starts' files take their room from the start, before they are
 * read (journal_recover, while hooks write): no segment is made ahead
 * past spool_max_bytes with them. A killed start's memory file, its disk
 * file gone, still moves the epoch past its own, so it is copied, never
 * taken for one of this start's. */
static void test_journal_earlier_room(void)
{
    char dir[] = "/tmp/vmq_pgev_room.XXXXXX", err[256] = "", cmd[300], ram[64], why[256];
    char path[400];
    journal_t *j;
    journal_stats_t js;
    FILE *f;

    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/journal-20-1-0.dat", dir);   /* 3 MiB, no event */
    f = fopen(path, "wb");
    CHECK(f != NULL && ftruncate(fileno(f), 3u << 20) == 0);
    if (f)
        fclose(f);
    CHECK(ram_dir_for(dir, ram, sizeof ram, why, sizeof why) == 0);
    snprintf(path, sizeof path, "%s/journal-21-5-0.dat", ram);   /* a killed start's */
    f = fopen(path, "wb");
    CHECK(f != NULL && fputs("x", f) >= 0);
    if (f)
        fclose(f);
    j = journal_open(dir, 21, 4u << 20, 1000, MEM, err, sizeof err);   /* 1 MiB segments */
    CHECK(j != NULL);
    if (!j)
        return;
    usleep(100000);   /* the journal thread would make spares now */
    journal_get_stats(j, &js);
    CHECK(js.disk_bytes == 4u << 20 && js.segments == 1 && js.ram_segments == 2);
    CHECK(j->epoch == 6 && strstr(j->cur->path, "journal-21-6-0.dat"));
    journal_recover(j);   /* the empty file goes; the memory file is copied, then goes */
    journal_get_stats(j, &js);
    CHECK(js.recovered == 0 && js.unreadable == 0 && access(path, F_OK) != 0);
    journal_close(j);
    CHECK(count_files(dir, "journal-") == 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

enum { CUR_KEPT, CUR_FLIPPED, CUR_MISSING, CUR_OTHER_FILE, CUR_THEN_PART, CUR_GAP };

/* The cursor file a stop leaves beside a file some of whose events are
 * written: the next start reads from it on. One that is damaged, or that
 * belongs to another file of the same name, is ignored (the file is read
 * whole: the resume point skips what the table has); so is one a start
 * killed before it could write. An earlier start's file partly written
 * and stopped again gets one too. An event left unwritten among written
 * ones (a stop past its deadline) stops the cursor before it. A cursor
 * file without its journal file is removed. */
static void cursor_case(int kind, uint64_t want_first, uint64_t want_count)
{
    char dir[] = "/tmp/vmq_pgevents_cursor.XXXXXX", err[256] = "", path[300], cmd[300];
    journal_t *j;
    queue_t q;
    event_in_t in;
    event_t *got;
    uint64_t seq;
    size_t n, i;
    readback_t rb;
    FILE *f;

    CHECK(mkdtemp(dir) != NULL);
    j = jopen(dir, 13, 4u << 20, 50, MEM, err, sizeof err);
    CHECK(j != NULL && queue_init(&q, 100, 1u << 20, 1000) == 0);
    if (!j)
        return;
    attach(&q, j);
    event_in_init(&in, HOOK_ON_PUBLISH, 1);
    for (i = 0; i < 10; i++)
        CHECK(queue_add(&q, &in, &seq) == 0);
    got = queue_pop(&q, 4, 0, &n);
    CHECK(n == 4 && got && got->next && got->next->next);
    if (kind == CUR_GAP && got && got->next && got->next->next) {
        event_t *third = got->next->next;
        got->next->next = third->next;
        third->next = NULL;
        queue_release_list(got);   /* 1, 2 and 4 written */
        CHECK(queue_leave(third) == 1);   /* 3 stays */
    } else {
        queue_release_list(got);   /* 1..4 written */
    }
    queue_settled(&q);
    CHECK(queue_detach_journal(&q, NULL) == 6);
    journal_close(j);
    queue_destroy(&q);
    snprintf(path, sizeof path, "%s/journal-13-1-0.dat.w", dir);
    CHECK(access(path, F_OK) == 0);
    if (kind == CUR_FLIPPED) {   /* a bit of the offset: still a record's place in the file */
        f = fopen(path, "r+b");
        CHECK(f != NULL);
        if (f) {
            int c;
            fseek(f, 15, SEEK_SET);
            c = fgetc(f);
            fseek(f, 15, SEEK_SET);
            fputc(c ^ 0x08, f);
            fclose(f);
        }
    } else if (kind == CUR_MISSING || kind == CUR_THEN_PART) {
        unlink(path);    /* never written: a kill -9 */
    } else if (kind == CUR_OTHER_FILE) {
        /* a valid cursor, of another file that had this name */
        unsigned char b[20] = {0};
        f = fopen(path, "rb");
        CHECK(f != NULL && fread(b, 1, sizeof b, f) == sizeof b);
        if (f)
            fclose(f);
        path[strlen(path) - 2] = '\0';
        CHECK(recover_save_cursor(path, (uint32_t)b[4] << 24 ^ (uint32_t)b[5] << 16 ^
                                            (uint32_t)b[6] << 8 ^ (b[7] ^ 1u),
                                  (size_t)b[12] << 24 | (size_t)b[13] << 16 |
                                      (size_t)b[14] << 8 | b[15]) == 0);
    }
    if (kind == CUR_THEN_PART) {
        write_three(dir);
        snprintf(path, sizeof path, "%s/journal-13-1-0.dat.w", dir);
        CHECK(access(path, F_OK) == 0);
    }
    /* left by a file removed before its cursor */
    snprintf(path, sizeof path, "%s/journal-12-1-0.dat.w", dir);
    f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f)
        fclose(f);
    read_back(dir, 15, 100, &rb);
    CHECK(rb.count == want_count && rb.seqs[0] == want_first && rb.seqs[want_count - 1] == 10);
    CHECK(count_files(dir, "journal-") == 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

static void test_journal_cursor(void)
{
    cursor_case(CUR_KEPT, 5, 6);
    cursor_case(CUR_FLIPPED, 1, 10);
    cursor_case(CUR_MISSING, 1, 10);
    cursor_case(CUR_OTHER_FILE, 1, 10);
    cursor_case(CUR_THEN_PART, 4, 7);
    cursor_case(CUR_GAP, 3, 8);
}

/* Records damaged on disk: one whose hook died after taking its space
 * (its header never written), one with a flipped byte (CRC): both skipped and
 * counted, every other record read. */
static void test_journal_damage(void)
{
    char dir[] = "/tmp/vmq_pgevents_journal_test.XXXXXX", err[256] = "", path[4200], cmd[300];
    journal_t *j;
    queue_t q;
    event_in_t in;
    event_t *got, *ev;
    uint64_t seq, count = 0, sum = 0;
    size_t n;
    int i;
    FILE *f;

    CHECK(mkdtemp(dir) != NULL);
    j = jopen(dir, 9, 8u << 20, 1000, MEM, err, sizeof err);
    CHECK(j != NULL && queue_init(&q, 10, 1000, 1) == 0);
    if (!j)
        return;
    attach(&q, j);
    for (i = 0; i < 100; i++) {
        event_in_init(&in, HOOK_ON_PUBLISH, 1000 + i);
        in.f[F_PAYLOAD] = (span_t){"abc", 3, 1};
        CHECK(queue_add(&q, &in, &seq) == 0);
    }
    n = queue_detach_journal(&q, NULL);   /* not written: they stay */
    CHECK(n == 100);
    journal_close(j);
    queue_destroy(&q);
    snprintf(path, sizeof path, "%s/journal-9-1-0.dat", dir);
    f = fopen(path, "r+b");
    CHECK(f != NULL);
    if (f) {
        unsigned char h[16];
        uint32_t rsize;
        CHECK(fread(h, 1, 16, f) == 16 && memcmp(h, "VPGH", 4) == 0);   /* the segment's header */
        CHECK(fread(h, 1, 16, f) == 16 && memcmp(h, "VPGJ", 4) == 0);
        rsize = (uint32_t)h[12] << 24 | (uint32_t)h[13] << 16 | (uint32_t)h[14] << 8 | h[15];
        /* record 10 (seq 11): its header never written (its hook died
         * before the commit, which writes it all) */
        fseek(f, JOURNAL_SEG_HDR + (long)rsize * 10, SEEK_SET);
        fwrite("\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 1, 16, f);
        /* record 50 (seq 51): a flipped byte in its event */
        fseek(f, JOURNAL_SEG_HDR + (long)rsize * 50 + 60, SEEK_SET);
        fputc(0x5A, f);
        fclose(f);
    }
    {
        char err2[256] = "";
        journal_t *j2 = jopen(dir, 10, 1u << 30, 1000, MEM, err2, sizeof err2);
        queue_t q2;
        journal_stats_t js;
        CHECK(j2 != NULL && queue_init(&q2, 10, 1000, 1) == 0);
        if (j2) {
            journal_get_stats(j2, &js);
            attach(&q2, j2);
            while ((got = queue_pop(&q2, 30, 0, &n)) != NULL) {
                for (ev = got; ev; ev = ev->next) {
                    count++;
                    sum += ev->seq;
                }
                queue_release_list(got);
            }
            queue_settled(&q2);
            CHECK(count == 98 && sum == 5050 - 11 - 51 && js.corrupt == 2 && js.recovered == 98);
            (void)queue_detach_journal(&q2, NULL);
            journal_close(j2);
            queue_destroy(&q2);
        }
        CHECK(count_files(dir, "journal-9-") == 0);   /* all written: gone */
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* a child process writes n events into a journal on dir and dies without
 * closing it (as a kill -9 would leave it); sleep_ms after the first
 * `first` of them. 1: it wrote them all */
static int child_writes(const char *dir, int64_t inc, int first, int n, int sync_ms, int sleep_ms)
{
    pid_t pid = fork();
    int status = 0;

    if (pid == 0) {
        char err[256];
        journal_t *j = jopen(dir, inc, 16u << 20, sync_ms, MEM, err, sizeof err);
        queue_t q;
        event_in_t in;
        uint64_t seq;
        char payload[600];
        int i;
        if (!j || queue_init(&q, 10, 1000, 1) != 0)
            _exit(2);
        attach(&q, j);
        memset(payload, 'r', sizeof payload);
        for (i = 0; i < n; i++) {
            if (i == first)
                usleep((useconds_t)sleep_ms * 1000);
            event_in_init(&in, HOOK_ON_PUBLISH, 1000 + i);
            in.f[F_CLIENT_ID] = (span_t){"rc", 2, 1};
            in.f[F_PAYLOAD] = (span_t){payload, sizeof payload, 1};
            if (queue_add(&q, &in, &seq) != 0)
                _exit(3);
        }
        kill(getpid(), SIGKILL);   /* no journal_close, no exit: as a kill -9 leaves them */
        _exit(4);
    }
    return pid > 0 && waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) &&
           WTERMSIG(status) == SIGKILL;
}

/* the events a new start (incarnation inc) reads from dir: their number,
 * 1..count in order with their payload intact in *ok; all written */
static uint64_t read_all(const char *dir, int64_t inc, int *ok, journal_stats_t *js)
{
    char err[256] = "";
    journal_t *j = jopen(dir, inc, 1u << 30, 1000, MEM, err, sizeof err);
    queue_t q;
    event_t *got, *ev;
    uint64_t count = 0;
    size_t n;
    char payload[600];

    memset(payload, 'r', sizeof payload);
    *ok = j != NULL && queue_init(&q, 10, 1000, 1) == 0;
    if (!*ok)
        return 0;
    journal_get_stats(j, js);
    attach(&q, j);
    while ((got = queue_pop(&q, 700, 0, &n)) != NULL) {
        for (ev = got; ev; ev = ev->next) {
            count++;
            *ok &= ev->seq == count && ev->ts_us == (int64_t)(999 + count) &&
                   ev->len[F_PAYLOAD] == (int32_t)sizeof payload &&
                   memcmp(event_field(ev, F_PAYLOAD), payload, sizeof payload) == 0;
        }
        queue_release_list(got);   /* written: released */
    }
    queue_settled(&q);
    (void)queue_detach_journal(&q, NULL);
    journal_close(j);
    queue_destroy(&q);
    return count;
}

/* The memory files (journal_ram.c). The hooks write into files in
 * /dev/shm beside the disk files: a killed process leaves them and the
 * next start reads every event from them, though no sync ran; without them
 * (a reboot, a power loss) what the last sync wrote is read. In the
 * process: sealed segments go to their disk files (the disk thread) and their
 * events stay readable where they were; at most journal_memory_bytes of
 * segments are in memory; with 0, none. */
static void test_journal_ram(void)
{
    char dir[] = "/tmp/vmq_pgevents_ram_test.XXXXXX", ram[64] = "", why[256] = "", cmd[300];
    char err[256] = "";
    journal_stats_t js;
    int ok;
    uint64_t got;

    CHECK(mkdtemp(dir) != NULL);
    CHECK(ram_dir_for(dir, ram, sizeof ram, why, sizeof why) == 0);
    if (!ram[0]) {
        fprintf(stderr, "no memory files here: %s\n", why);
        return;
    }
    /* killed: no sync ran (sync_ms an hour), 5,000 events in two segments */
    CHECK(child_writes(dir, 20, 5000, 5000, 3600000, 0));
    CHECK(count_files(ram, "journal-20-") >= 2 && count_files(dir, "journal-20-") >= 2);
    got = read_all(dir, 21, &ok, &js);
    CHECK(ok && got == 5000 && js.recovered == 5000 && js.corrupt == 0 && js.unreadable == 0);
    CHECK(count_files(dir, "journal-") == 0 && count_files(ram, "journal-") == 0);
    CHECK(strcmp(js.ram_dir, ram) == 0 && js.ram_error[0] == '\0');

    /* killed, then its memory files lost (a reboot): 2,000 events, the
     * syncs (every 50 ms) for 300 ms, 1,000 more and the end at once */
    CHECK(child_writes(dir, 22, 2000, 3000, 50, 300));
    snprintf(cmd, sizeof cmd, "rm -f '%s'/journal-22-*", ram);
    CHECK(system(cmd) == 0);
    got = read_all(dir, 23, &ok, &js);
    CHECK(ok && got >= 2000 && got <= 3000 && js.recovered == got);
    if (!(ok && got >= 2000 && got <= 3000 && js.recovered == got))
        fprintf(stderr, "after a lost memory file: %llu events, %s, %llu recovered\n", (unsigned long long)got,
                ok ? "1..n in order" : "NOT 1..n in order", (unsigned long long)js.recovered);
    CHECK(count_files(dir, "journal-") == 0);

    /* in the process: 9,000 events (16 MiB at most, 2 MiB segments) with
     * nothing written; never more than 8 MiB (4) in memory; once the
     * disk thread has moved the sealed ones to disk, only the one in use
     * and the spares; every event read back intact */
    {
        journal_t *j = jopen(dir, 24, 16u << 20, 3600000, 8u << 20, err, sizeof err);
        queue_t q;
        event_in_t in;
        event_t *list, *ev;
        uint64_t seq, count = 0;
        size_t n;
        char payload[600];
        int i, rc = 0;
        memset(payload, 'r', sizeof payload);
        CHECK(j != NULL && queue_init(&q, 10, 1000, 1) == 0);
        if (!j)
            return;
        attach(&q, j);
        pthread_mutex_lock(&j->rd_mu);   /* as the writer does while it reads */
        for (i = 0; i < 9000 && rc == 0; i++) {
            event_in_init(&in, HOOK_ON_PUBLISH, 1000 + i);
            in.f[F_PAYLOAD] = (span_t){payload, sizeof payload, 1};
            rc = queue_add(&q, &in, &seq);
            if (i % 1000 == 999)
                usleep(20000);   /* the journal thread makes spares */
        }
        journal_get_stats(j, &js);
        CHECK(rc == 0 && js.segments >= 4 && js.ram_segments <= 4 && js.no_room == 0);
        /* past 4: made on disk only, counted */
        CHECK(js.ram_missed == 0 || js.segments > 4);
        /* none was moved while the writer read (rd_mu, held since
         * before the hooks wrote), though the disk thread ran */
        usleep(300000);
        journal_get_stats(j, &js);
        pthread_mutex_unlock(&j->rd_mu);
        CHECK(js.ram_segments == 4);
        if (js.ram_segments != 4)
            fprintf(stderr, "while the writer reads: %llu segments in memory\n",
                    (unsigned long long)js.ram_segments);
        /* the disk thread moves the sealed ones to disk (waited for, at
         * most 10 s) */
        for (i = 0; i < 1000; i++) {
            journal_get_stats(j, &js);
            if (js.ram_segments <= 1 + spares_now(j))
                break;
            usleep(10000);
        }
        CHECK(js.ram_segments <= 1 + spares_now(j));
        if (js.ram_segments > 1 + spares_now(j))
            fprintf(stderr, "moved to disk: %llu segments still in memory\n", (unsigned long long)js.ram_segments);
        ok = 1;
        while ((list = queue_pop(&q, 1000, 0, &n)) != NULL) {
            for (ev = list; ev; ev = ev->next) {
                count++;
                ok &= ev->seq == count && ev->len[F_PAYLOAD] == (int32_t)sizeof payload &&
                      memcmp(event_field(ev, F_PAYLOAD), payload, sizeof payload) == 0;
            }
            queue_release_list(list);
        }
        queue_settled(&q);
        CHECK(ok && count == 9000);
        (void)queue_detach_journal(&q, NULL);
        journal_close(j);
        queue_destroy(&q);
    }
    CHECK(count_files(dir, "journal-") == 0);
    CHECK(access(ram, F_OK) != 0);   /* its directory too, once empty */
    /* journal_memory_bytes 0: no memory files, the reason in the stats */
    {
        journal_t *j = jopen(dir, 25, 16u << 20, 1000, 0, err, sizeof err);
        CHECK(j != NULL);
        if (j) {
            journal_get_stats(j, &js);
            CHECK(js.ram_dir[0] == '\0' && js.ram_segments == 0 && js.ram_missed >= 1 &&
                  strstr(js.ram_error, "journal_memory_bytes is 0") != NULL);
            CHECK(access(ram, F_OK) != 0 && count_files(dir, "journal-25-") >= 1);
            journal_close(j);
        }
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* an event of in as a record at rec, with this seq; committed (salt) or,
 * commit 0, filled but not committed (its hook died); its size */
static size_t put_record(unsigned char *rec, const event_in_t *in, uint64_t seq, uint32_t salt,
                         int commit)
{
    event_layout_t lay;

    if (event_layout(in, &lay) != 0)
        return 0;
    event_fill(record_event(rec), in, &lay);
    record_event(rec)->home = EV_JOURNAL;
    record_event(rec)->seq = seq;
    if (commit)
        record_commit(rec, salt);
    return record_size(lay.total);
}

/* A record whose hook died while filling it (its header still zeros)
 * holds a payload full of forged record headers, each claiming the rest
 * of the file: a reader looking for the next good record would check
 * every one of them, each check a CRC over the rest of the file. The
 * reader gives the rest of the file up once a lost stretch's checks have
 * read LOST_READS times the bytes after it (counted as the one damaged
 * stretch); the record before is read. A stretch that holds none is read
 * past to the good record after it. */
static void forged_file(int forged, uint64_t *count, uint64_t *corrupt)
{
    size_t size = 2u << 20, pos = JOURNAL_SEG_HDR, k;
    unsigned char *m = calloc(1, size);
    char payload[600];
    event_in_t in;
    int i;

    *count = *corrupt = 0;
    if (!m)
        return;
    record_seg_header(m, 77);
    memset(payload, 'p', sizeof payload);
    for (i = 0; i < 3; i++) {
        event_in_init(&in, HOOK_ON_PUBLISH, 1000 + i);
        in.f[F_PAYLOAD] = (span_t){payload, sizeof payload, 1};
        if (i != 1) {
            pos += put_record(m + pos, &in, (uint64_t)i + 1, 77, 1);
            continue;
        }
        (void)put_record(m + pos, &in, (uint64_t)i + 1, 77, 0);
        /* the one being filled: its payload (1 MiB here), not committed */
        for (k = pos + JOURNAL_HDR + 256; k + 16 <= pos + (1u << 20); k += 16) {
            if (!forged)
                continue;
            memcpy(m + k, "VPGJ", 4);
            put32(m + k + 4, (uint32_t)(size - k - JOURNAL_HDR - EV_OFF));
            put32(m + k + 12, (uint32_t)((size - k) & ~(size_t)7));
        }
        memset(m + k, 'x', 16);
        pos += 1u << 20;
    }
    (void)recover_records(m, size, 0, count, &(uint64_t){0}, NULL, corrupt);
    free(m);
}

static void test_recover_forged_headers(void)
{
    uint64_t count, corrupt;

    forged_file(1, &count, &corrupt);
    CHECK(count == 1 && corrupt == 1);
    if (count != 1 || corrupt != 1)
        fprintf(stderr, "forged headers: %llu read, %llu damaged\n", (unsigned long long)count,
                (unsigned long long)corrupt);
    forged_file(0, &count, &corrupt);
    CHECK(count == 2 && corrupt == 1);
}

/* A sealed memory segment goes to its disk file in BULK_STEP steps; a
 * step that stops in the middle of a record (the next sync was due, or a
 * write failed: here the file size limit) is taken up again at the next
 * call, and so is the sync of that segment, until its disk file holds all
 * of it. way 0: the next ram_bulk finishes it; 1: the next ram_sync. */
static void bulk_resumes(int way)
{
    char path[] = "/tmp/vmq_pgevents_bulk_test.XXXXXX";
    size_t cap = 3 * BULK_STEP;
    jseg_t *s = calloc(1, sizeof *s);
    struct rlimit old, small;
    char payload[5000];
    unsigned char *disk;
    event_in_t in;
    size_t size;
    int i, done, laid = 1;

    CHECK(s != NULL);
    if (!s)
        return;
    s->fd = mkstemp(path);
    s->cap = cap;
    s->base = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(s->fd >= 0 && s->base != MAP_FAILED && ftruncate(s->fd, (off_t)cap) == 0);
    s->salt = 0x1234;
    record_seg_header(s->base, s->salt);
    CHECK(pwrite(s->fd, s->base, JOURNAL_SEG_HDR, 0) == JOURNAL_SEG_HDR);
    s->used = s->copied = s->checked = JOURNAL_SEG_HDR;
    memset(payload, 'b', sizeof payload);
    /* records of 5 KiB and more: no step boundary falls between two */
    for (i = 0; s->used + 2 * record_size(sizeof payload + 512) < cap; i++) {
        event_in_init(&in, HOOK_ON_PUBLISH, 1000 + i);
        in.f[F_PAYLOAD] = (span_t){payload, sizeof payload - (size_t)(i % 7), 1};
        size = put_record(s->base + s->used, &in, (uint64_t)i + 1, s->salt, 1);
        laid &= size > 0;
        if (!size)
            break;
        s->used += size;
    }
    CHECK(laid);
    /* the first step is written, the second fails past 1.5 steps */
    signal(SIGXFSZ, SIG_IGN);
    CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
    small = old;
    small.rlim_cur = BULK_STEP + BULK_STEP / 2;
    CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0);
    CHECK(ram_bulk(s, mono_us() + 60000000) == 0);
    setrlimit(RLIMIT_FSIZE, &old);
    CHECK(s->copied == JOURNAL_SEG_HDR + BULK_STEP);
    done = way == 0 ? ram_bulk(s, mono_us() + 60000000) : ram_sync(s, 1);
    CHECK(done == 1);
    disk = malloc(s->used);
    CHECK(disk && pread(s->fd, disk, s->used, 0) == (ssize_t)s->used &&
          memcmp(disk, s->base, s->used) == 0);
    if (done != 1)
        fprintf(stderr, "bulk copy not taken up again (%s): %zu of %zu bytes on disk\n",
                way ? "ram_sync" : "ram_bulk", s->copied, s->used);
    free(disk);
    if (way == 0) {
        /* read from its disk file from now on (seg_reopen), but not while
         * the journal thread makes its pages writable */
        journal_t *j = calloc(1, sizeof *j);
        unsigned char *was = s->base;
        CHECK(j && pthread_mutex_init(&j->mu, NULL) == 0 && pthread_mutex_init(&j->rd_mu, NULL) == 0);
        s->populating = 1;
        CHECK(seg_reopen(j, s) == -1 && errno == EBUSY && s->base == was);
        s->populating = 0;
        CHECK(seg_reopen(j, s) == 0 && s->base != was && memcmp(s->base, "VPGH", 4) == 0);
        free(j);
    }
    munmap(s->base, cap);
    close(s->fd);
    unlink(path);
    free(s);
}

static void test_journal_bulk_resumes(void)
{
    bulk_resumes(0);
    bulk_resumes(1);
}

/* The disk refuses space (here: RLIMIT_FSIZE, as a full disk would with
 * ENOSPC): a segment cannot be made; the error is in the stats, events
 * beyond what is already allocated are counted drops, nothing crashes. */
static void test_journal_no_space(void)
{
    char dir[] = "/tmp/vmq_pgevents_journal_test.XXXXXX", err[256] = "", cmd[300];
    struct rlimit old, small;
    journal_t *j;
    journal_stats_t js;
    queue_t q;
    event_in_t in;
    uint64_t seq;
    char payload[600];
    int i, rc = 0;

    CHECK(mkdtemp(dir) != NULL && getrlimit(RLIMIT_FSIZE, &old) == 0);
    signal(SIGXFSZ, SIG_IGN);
    small = old;
    small.rlim_cur = 512 * 1024;
    CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0);
    CHECK(jopen(dir, 11, 64u << 20, 1000, MEM, err, sizeof err) == NULL &&
          strstr(err, "cannot allocate") != NULL);
    setrlimit(RLIMIT_FSIZE, &old);
    j = jopen(dir, 11, 16u << 20, 1000, MEM, err, sizeof err);   /* 2 MiB segments: 3 made */
    CHECK(j != NULL && queue_init(&q, 10, 1000, 1) == 0);
    if (!j)
        return;
    CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0);   /* no more segments from here */
    attach(&q, j);
    memset(payload, 'n', sizeof payload);
    for (i = 0; i < 20000 && rc == 0; i++) {
        event_in_init(&in, HOOK_ON_PUBLISH, 1);
        in.f[F_PAYLOAD] = (span_t){payload, sizeof payload, 1};
        rc = queue_add(&q, &in, &seq);
        if (rc == 0 && i % 1000 == 999)
            usleep(20000);   /* time for the journal thread to try */
    }
    CHECK(rc == 1 && i > 8000);   /* 6 MiB allocated before: ~9,000 events */
    for (i = 0; i < 1000; i++) {   /* the journal thread's failure reported (at most 10 s) */
        journal_get_stats(j, &js);
        if (strstr(js.error, "cannot allocate") != NULL)
            break;
        usleep(10000);
    }
    CHECK(js.no_room == 1 && strstr(js.error, "cannot allocate") != NULL);
    setrlimit(RLIMIT_FSIZE, &old);
    (void)queue_detach_journal(&q, NULL);
    journal_close(j);
    queue_destroy(&q);
    signal(SIGXFSZ, SIG_DFL);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* Hooks on two threads while the writer pops (queue_pop walks its batch
 * without the lock): every event comes out once, in seq order, fields
 * whole; with the journal attached and without. */
#define RACE_PER 200000
static int race_done;   /* producers finished (atomic) */
static void *race_producer(void *arg)
{
    queue_t *q = arg;
    event_in_t in;
    uint64_t seq;
    int i;

    for (i = 0; i < RACE_PER; i++) {
        event_in_init(&in, HOOK_ON_PUBLISH, 42);
        in.f[F_CLIENT_ID] = (span_t){"race", 4, 1};
        if (queue_add(q, &in, &seq) != 0)
            break;   /* a drop: the reader sees the gap */
    }
    __atomic_add_fetch(&race_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void race(journal_t *j)
{
    queue_t q;
    pthread_t t[2];
    event_t *got, *ev;
    size_t n, total = 0;
    uint64_t expect = 1;
    int ok = 1, i;

    CHECK(queue_init(&q, 2 * RACE_PER, 1u << 30, 1) == 0);   /* room for all: no drop, no gap */
    attach(&q, j);
    race_done = 0;
    for (i = 0; i < 2; i++)
        CHECK(pthread_create(&t[i], NULL, race_producer, &q) == 0);
    for (;;) {
        int done = __atomic_load_n(&race_done, __ATOMIC_ACQUIRE) == 2;
        got = queue_pop(&q, 1000, 10, &n);
        if (!got && done)
            break;
        for (ev = got; ev; ev = ev->next) {
            ok &= ev->seq == expect++ && ev->ts_us == 42 && ev->len[F_CLIENT_ID] == 4 &&
                  memcmp(event_field(ev, F_CLIENT_ID), "race", 4) == 0 &&
                  ev->home == EV_JOURNAL;
            total++;
        }
        queue_release_list(got);
        queue_settled(&q);
    }
    for (i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    if (!ok || total != 2 * RACE_PER)
        fprintf(stderr, "race (in memory %d): ok %d, %zu events, next seq %llu\n",
                journal_in_memory(j), ok, total, (unsigned long long)expect);
    CHECK(ok && total == 2 * RACE_PER && queue_pop(&q, 10, 0, &n) == NULL);
    CHECK(queue_detach_journal(&q, NULL) == 0);
    queue_destroy(&q);
}

static void test_queue_race(void)
{
    char dir[] = "/tmp/vmq_pgev_race.XXXXXX", err[256];
    journal_t *j;

    j = jopen(NULL, 9, 256u << 20, 0, 0, err, sizeof err);
    CHECK(j != NULL);
    if (j) {
        race(j);
        journal_close(j);
    }
    CHECK(mkdtemp(dir) != NULL);
    j = jopen(dir, 9, 256u << 20, 1000, MEM, err, sizeof err);
    CHECK(j != NULL);
    if (!j)
        return;
    race(j);
    journal_close(j);
    rmdir(dir);
}

/* A sealed segment on disk only (no memory file: the hooks wrote into
 * its mapping) counts as synced only after a sync that began once every
 * record reserved in it was committed: a record committed after the
 * segment's first sync is synced too, within journal_sync_ms. */
static uint64_t syncs_of(journal_t *j)
{
    journal_stats_t js;
    journal_get_stats(j, &js);
    return js.syncs;
}

static event_t *reserve_filled(journal_t *j, size_t bytes, uint32_t *salt)
{
    int wake = 0;
    event_t *ev = journal_reserve(j, bytes, 1, &wake, salt);
    if (wake)
        journal_wake(j);
    if (ev) {
        memset(ev, 0, bytes);
        ev->bytes = bytes;
        ev->home = EV_JOURNAL;
    }
    return ev;
}

static void test_journal_sync_gap(void)
{
    char dir[] = "/tmp/vmq_pgev_syncgap.XXXXXX", err[256] = "", cmd[300];
    const size_t sz = 64u << 10;
    journal_t *j;
    jseg_t *s0;
    event_t *late, *ev;
    uint32_t salt, late_salt = 0;
    uint64_t from;
    int i;

    CHECK(mkdtemp(dir) != NULL);
    j = jopen(dir, 31, 8u << 20, 5, 0, err, sizeof err);   /* 1 MiB segments, on disk, 5 ms */
    CHECK(j != NULL);
    if (!j)
        return;
    s0 = __atomic_load_n(&j->cur, __ATOMIC_ACQUIRE);
    CHECK(__atomic_load_n(&s0->ram_fd, __ATOMIC_RELAXED) < 0);
    late = reserve_filled(j, sz, &late_salt);   /* reserved, committed only after the seal and syncs */
    CHECK(late != NULL);
    while (late && __atomic_load_n(&j->cur, __ATOMIC_ACQUIRE) == s0) {
        ev = reserve_filled(j, sz, &salt);
        CHECK(ev != NULL);
        if (!ev)
            break;
        journal_commit(j, ev, salt);
    }
    /* s0 is sealed: two whole syncs at least run after that */
    from = syncs_of(j);
    for (i = 0; i < 10000 && syncs_of(j) < from + 3; i++)
        usleep(1000);
    CHECK(syncs_of(j) >= from + 3);
    CHECK(__atomic_load_n(&s0->synced, __ATOMIC_ACQUIRE) == 0);   /* one record still uncommitted */
    if (late)
        journal_commit(j, late, late_salt);
    for (i = 0; i < 10000 && !__atomic_load_n(&s0->synced, __ATOMIC_ACQUIRE); i++)
        usleep(1000);
    CHECK(__atomic_load_n(&s0->synced, __ATOMIC_ACQUIRE) == 1);   /* a sync after the commit */
    CHECK(journal_busy(j) == 0);
    journal_close(j);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

/* A sync that fails is the journal's error (status shows it) until one
 * succeeds: here the segment's descriptor is a pipe for a while, which
 * fdatasync refuses. */
static void test_journal_sync_error(void)
{
    char dir[] = "/tmp/vmq_pgev_syncerr.XXXXXX", err[256] = "", cmd[300];
    journal_t *j;
    journal_stats_t js;
    jseg_t *s;
    int pfd[2], saved, i;

    CHECK(mkdtemp(dir) != NULL);
    j = jopen(dir, 32, 8u << 20, 5, 0, err, sizeof err);
    CHECK(j != NULL);
    if (!j)
        return;
    s = __atomic_load_n(&j->cur, __ATOMIC_ACQUIRE);
    CHECK(pipe(pfd) == 0);
    saved = dup(s->fd);
    CHECK(saved >= 0 && dup2(pfd[0], s->fd) == s->fd);
    for (i = 0; i < 10000; i++) {
        journal_get_stats(j, &js);
        if (strstr(js.error, "cannot sync"))
            break;
        usleep(1000);
    }
    journal_get_stats(j, &js);
    CHECK(strstr(js.error, "cannot sync") != NULL && strstr(js.error, s->path) != NULL);
    CHECK(dup2(saved, s->fd) == s->fd);   /* the disk file again: the next sync clears it */
    for (i = 0; i < 10000; i++) {
        journal_get_stats(j, &js);
        if (!js.error[0])
            break;
        usleep(1000);
    }
    CHECK(js.error[0] == '\0');
    close(saved);
    close(pfd[0]);
    close(pfd[1]);
    journal_close(j);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

/* A sync that fails at the close (the segment's descriptor made a pipe,
 * which fdatasync refuses) is reported by journal_close_report, naming
 * the file, for the writer to log; the file stays for the next start. */
static void test_journal_close_error(void)
{
    char dir[] = "/tmp/vmq_pgev_closeerr.XXXXXX", err[256] = "", cmd[300], path[4200];
    journal_t *j;
    queue_t q;
    event_in_t in;
    uint64_t seq;
    jseg_t *s;
    int pfd[2];

    CHECK(mkdtemp(dir) != NULL);
    j = jopen(dir, 33, 8u << 20, 1000, 0, err, sizeof err);
    CHECK(j != NULL && queue_init(&q, 10, 1000, 1) == 0);
    if (!j)
        return;
    attach(&q, j);
    event_in_init(&in, HOOK_ON_PUBLISH, 1);
    CHECK(queue_add(&q, &in, &seq) == 0);
    s = __atomic_load_n(&j->cur, __ATOMIC_ACQUIRE);
    snprintf(path, sizeof path, "%s", s->path);
    CHECK(pipe(pfd) == 0 && dup2(pfd[0], s->fd) == s->fd);
    (void)queue_detach_journal(&q, NULL);
    CHECK(journal_close_report(j, err, sizeof err) == -1 && strstr(err, path) != NULL);
    CHECK(access(path, F_OK) == 0);   /* kept for the next start */
    close(pfd[0]);
    close(pfd[1]);
    queue_destroy(&q);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

/* A payload that holds a whole journal record, checksum and all, is never
 * taken for one: the record holding it has its size damaged (a torn
 * write), and recovery, looking for the next record, must pass over the
 * forged one (its CRC cannot hold without the segment's salt) and read
 * the next real one. */
static void test_journal_forged_record(void)
{
    char dir[] = "/tmp/vmq_pgev_forged.XXXXXX", err[256] = "", cmd[300];
    char payload[1024];
    journal_t *j;
    queue_t q;
    event_in_t in, fin;
    event_t *fev;
    unsigned char *forged, *base, *at;
    size_t fsize, flen, rec2, n, pad, i;
    uint64_t seq;
    readback_t rb;
    int fd, has_forged = 0;

    CHECK(mkdtemp(dir) != NULL);
    j = jopen(dir, 41, 8u << 20, 1000, 0, err, sizeof err);   /* on disk: file = mapping */
    CHECK(j != NULL && queue_init(&q, 10, 1000, 1) == 0);
    if (!j)
        return;
    attach(&q, j);
    /* the forged record: seq 999999, a CRC-32C as an outsider can compute it */
    event_in_init(&fin, HOOK_ON_PUBLISH, 5);
    fin.f[F_PAYLOAD] = (span_t){"forged", 6, 1};
    fev = event_build(&fin);
    CHECK(fev != NULL);
    if (!fev)
        return;
    fev->seq = 999999;
    fev->home = EV_JOURNAL;
    flen = fev->bytes - offsetof(event_t, seq);
    fsize = (JOURNAL_HDR + fev->bytes + 7) & ~(size_t)7;
    forged = calloc(1, fsize);
    CHECK(forged != NULL && fsize + 16 < sizeof payload);
    if (!forged)
        return;
    memcpy(forged, "VPGJ", 4);
    put_be32(forged + 4, (uint32_t)flen);
    put_be32(forged + 8, crc32c((const char *)fev + offsetof(event_t, seq), flen));
    put_be32(forged + 12, (uint32_t)fsize);
    memcpy(forged + JOURNAL_HDR, fev, fev->bytes);
    fev->home = EV_HEAP;   /* freed as the heap event it is */
    event_free(fev);
    /* event 1 finds where a payload of this length lands, modulo 8 */
    memset(payload, 'x', sizeof payload);
    memcpy(payload, "PROBE", 5);
    event_in_init(&in, HOOK_ON_PUBLISH, 1);
    in.f[F_PAYLOAD] = (span_t){payload, sizeof payload, 1};
    CHECK(queue_add(&q, &in, &seq) == 0 && seq == 1);
    base = j->cur->base;
    rec2 = j->cur->used;   /* event 2's record starts here */
    at = memmem(base, rec2, "PROBE", 5);
    CHECK(at != NULL);
    pad = at ? (8 - (size_t)(at - base) % 8) % 8 : 0;
    /* event 2: the forged record 8-byte aligned in its payload */
    memset(payload, 'x', sizeof payload);
    memcpy(payload + pad, forged, fsize);
    CHECK(queue_add(&q, &in, &seq) == 0 && seq == 2);
    at = memmem(base + rec2, j->cur->used - rec2, forged, fsize);
    CHECK(at != NULL && (size_t)(at - base) % 8 == 0);
    /* event 3: a real one after it */
    memset(payload, 'y', sizeof payload);
    CHECK(queue_add(&q, &in, &seq) == 0 && seq == 3);
    n = queue_detach_journal(&q, NULL);   /* not written: they stay */
    CHECK(n == 3);
    journal_close(j);
    queue_destroy(&q);
    free(forged);
    /* event 2's size damaged: recovery looks for the next record */
    snprintf(cmd, sizeof cmd, "%s/journal-41-1-0.dat", dir);
    fd = open(cmd, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, "\xff\xff\xff\xf8", 4, (off_t)rec2 + 12) == 4);
    if (fd >= 0)
        close(fd);
    read_back(dir, 42, 100, &rb);
    for (i = 0; i < rb.count && i < 64; i++)
        has_forged |= rb.seqs[i] == 999999;
    if (has_forged || rb.count != 2)
        fprintf(stderr, "forged record: %llu events read, the forged one %s\n",
                (unsigned long long)rb.count, has_forged ? "among them" : "not");
    CHECK(!has_forged);
    CHECK(rb.count == 2 && rb.seqs[0] == 1 && rb.seqs[1] == 3 && rb.js.corrupt >= 1);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

static void hex(const unsigned char *d, size_t n, char *out)
{
    size_t i;

    for (i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

/* FIPS 180-2, appendix B: one block, two blocks, one million 'a' */
static void test_sha256(void)
{
    unsigned char d[SHA256_BYTES];
    char h[2 * SHA256_BYTES + 1];
    sha256_ctx_t c;
    char *a = malloc(1000000);
    size_t i;

    sha256("", 0, d);
    hex(d, sizeof d, h);
    CHECK(strcmp(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
    sha256("abc", 3, d);
    hex(d, sizeof d, h);
    CHECK(strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, d);
    hex(d, sizeof d, h);
    CHECK(strcmp(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0);
    CHECK(a != NULL);
    if (!a)
        return;
    memset(a, 'a', 1000000);
    sha256(a, 1000000, d);
    hex(d, sizeof d, h);
    CHECK(strcmp(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);
    /* the same in pieces of odd sizes (the block buffer's paths) */
    sha256_init(&c);
    for (i = 0; i < 1000000; i += 7)
        sha256_update(&c, a + i, 1000000 - i < 7 ? 1000000 - i : 7);
    sha256_final(&c, d);
    hex(d, sizeof d, h);
    CHECK(strcmp(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);
    /* 55, 56 and 64 bytes: the padding's edges */
    sha256(a, 55, d);
    hex(d, sizeof d, h);
    CHECK(strcmp(h, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318") == 0);
    sha256(a, 64, d);
    hex(d, sizeof d, h);
    CHECK(strcmp(h, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb") == 0);
    free(a);
}

/* the words of "a/b/c" as spans into the string */
static size_t split_topic(const char *topic, span_t *words, size_t cap)
{
    const char *p = topic, *e;
    size_t n = 0;

    for (;;) {
        e = strchr(p, '/');
        if (n < cap)
            words[n] = (span_t){p, e ? (size_t)(e - p) : strlen(p), 1};
        n++;
        if (!e)
            return n;
        p = e + 1;
    }
}

static int rule_mode(const payload_rules_t *r, const char *topic)
{
    span_t words[PAYLOAD_RULE_WORDS_MAX];
    size_t n = split_topic(topic, words, PAYLOAD_RULE_WORDS_MAX);

    return payload_rules_mode(r, words, n);
}

static void test_payload_rules(void)
{
    char err[256], deep[400];
    payload_rules_t *r;
    int i;

    r = payload_rules_parse(" +/credentials/#:none, health/#:hash ,#:truncated,a:b/c : full", err, sizeof err);
    CHECK(r != NULL && r->n == 4);
    if (r) {
        CHECK(r->strictest == PM_NONE);
        CHECK(rule_mode(r, "dev/credentials/x") == PM_NONE);
        CHECK(rule_mode(r, "dev/credentials") == PM_NONE);       /* # includes the parent */
        CHECK(rule_mode(r, "health/x") == PM_HASH);
        CHECK(rule_mode(r, "health") == PM_HASH);
        CHECK(rule_mode(r, "other/x") == PM_TRUNCATED);          /* first match wins: # */
        CHECK(rule_mode(r, "a:b/c") == PM_TRUNCATED);            /* # comes before it */
        CHECK(rule_mode(r, "$SYS/credentials/x") == -1);         /* wildcards do not match $ topics */
        CHECK(rule_mode(r, "$SYS/x") == -1);
        CHECK(strcmp(r->spec, " +/credentials/#:none, health/#:hash ,#:truncated,a:b/c : full") == 0);
        payload_rules_free(r);
    }
    /* first match wins, in the order given; the last ':' splits */
    r = payload_rules_parse("a:b/c:full, a:b/#:none, $SYS/#:hash", err, sizeof err);
    CHECK(r && r->n == 3);
    if (r) {
        CHECK(rule_mode(r, "a:b/c") == PM_FULL);
        CHECK(rule_mode(r, "a:b/d") == PM_NONE);
        CHECK(rule_mode(r, "$SYS/x") == PM_HASH);                /* a $ filter names it */
        CHECK(rule_mode(r, "b") == -1);
        CHECK(r->strictest == PM_NONE);
        payload_rules_free(r);
    }
    /* a topic deeper than the words looked at */
    for (i = 0; i < 100; i++) {
        deep[2 * i] = 'x';
        deep[2 * i + 1] = '/';
    }
    deep[199] = '\0';   /* 100 levels */
    r = payload_rules_parse("x/x/#:hash, +/+:none", err, sizeof err);
    CHECK(r && rule_mode(r, deep) == PM_HASH && rule_mode(r, "y/z") == PM_NONE &&
          rule_mode(r, "y/z/w") == -1);
    payload_rules_free(r);
    /* empty: no rules */
    r = payload_rules_parse(" , ", err, sizeof err);
    CHECK(r && r->n == 0 && rule_mode(r, "a") == -1 && r->strictest == PM_FULL);
    payload_rules_free(r);
    /* bad items: refused, the item named */
    CHECK(payload_rules_parse("a/#:none, b/#", err, sizeof err) == NULL &&
          strcmp(err, "payload_topics: 'b/#' is not FILTER:MODE") == 0);
    CHECK(payload_rules_parse("a/#:secret", err, sizeof err) == NULL &&
          strcmp(err, "payload_topics: unknown mode 'secret' in 'a/#:secret' (none, hash, truncated or full)") == 0);
    CHECK(payload_rules_parse("a/#/b:none", err, sizeof err) == NULL &&
          strcmp(err, "payload_topics: 'a/#/b' is not a valid MQTT topic filter (in 'a/#/b:none')") == 0);
    CHECK(payload_rules_parse("x:none, a+/b:hash", err, sizeof err) == NULL && strstr(err, "'a+/b'"));
    CHECK(payload_rules_parse(" :full", err, sizeof err) == NULL &&
          strcmp(err, "payload_topics: no topic filter in ':full'") == 0);
    CHECK(payload_rules_parse("a/#:", err, sizeof err) == NULL && strstr(err, "unknown mode ''"));
    CHECK(payload_rules_parse("a/#:None", err, sizeof err) == NULL);
    deep[199] = ':';
    memcpy(deep + 200, "none", 5);   /* a filter of 100 levels */
    CHECK(payload_rules_parse(deep, err, sizeof err) == NULL && strstr(err, "more than 64 levels"));
    /* the stricter mode wins */
    CHECK(payload_mode_stricter(PM_FULL, PM_NONE) == PM_NONE);
    CHECK(payload_mode_stricter(PM_NONE, PM_FULL) == PM_NONE);
    CHECK(payload_mode_stricter(PM_TRUNCATED, PM_HASH) == PM_HASH);
    CHECK(payload_mode_stricter(PM_HASH, PM_NONE) == PM_NONE);
    CHECK(payload_mode_stricter(PM_FULL, PM_TRUNCATED) == PM_TRUNCATED);
    CHECK(payload_mode_stricter(PM_FULL, PM_FULL) == PM_FULL);
}

static void test_mask_peer(void)
{
    static const uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0x56, 0x78,
                                   0x9a, 0xbc, 0xde, 0xf0, 0x11, 0x22, 0x33, 0x44};
    static const uint8_t v6net[16] = {0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34};
    static const uint8_t mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 7, 9};
    static const uint8_t mapnet[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 7, 0};
    event_in_t in;

    event_in_init(&in, HOOK_ON_REGISTER, 0);
    in.peer_family = 4;
    memcpy(in.peer_addr, "\x0a\x01\x02\x03", 4);
    in.peer_port = 51000;
    event_in_mask_peer(&in, PEER_FULL);
    CHECK(in.peer_family == 4 && memcmp(in.peer_addr, "\x0a\x01\x02\x03", 4) == 0 &&
          in.peer_port == 51000 && in.flags == 0);
    event_in_mask_peer(&in, PEER_NETWORK);
    CHECK(in.peer_family == 4 && memcmp(in.peer_addr, "\x0a\x01\x02\x00", 4) == 0 &&
          in.peer_port == 0 && in.flags == EV_NO_PORT);

    event_in_init(&in, HOOK_ON_REGISTER, 0);
    in.peer_family = 6;
    memcpy(in.peer_addr, v6, 16);
    in.peer_port = 1;
    event_in_mask_peer(&in, PEER_NETWORK);
    CHECK(in.peer_family == 6 && memcmp(in.peer_addr, v6net, 16) == 0 && in.flags == EV_NO_PORT);

    event_in_init(&in, HOOK_ON_REGISTER, 0);
    in.peer_family = 6;
    memcpy(in.peer_addr, mapped, 16);
    event_in_mask_peer(&in, PEER_NETWORK);
    CHECK(in.peer_family == 6 && memcmp(in.peer_addr, mapnet, 16) == 0 && in.flags == EV_NO_PORT);

    /* 6to4: 2002:c0a8:0709::/48 holds all of 192.168.7.9: its /24 only */
    event_in_init(&in, HOOK_ON_REGISTER, 0);
    in.peer_family = 6;
    memcpy(in.peer_addr, (uint8_t[16]){0x20, 0x02, 192, 168, 7, 9, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 1}, 16);
    event_in_mask_peer(&in, PEER_NETWORK);
    CHECK(in.peer_family == 6 && memcmp(in.peer_addr, (uint8_t[16]){0x20, 0x02, 192, 168, 7}, 16) == 0);

    event_in_init(&in, HOOK_ON_REGISTER, 0);
    in.peer_family = 6;
    memcpy(in.peer_addr, v6, 16);
    in.peer_port = 1883;
    event_in_mask_peer(&in, PEER_NONE);
    CHECK(in.peer_family == 0 && memcmp(in.peer_addr, (uint8_t[16]){0}, 16) == 0 && in.peer_port == 0);

    event_in_init(&in, HOOK_ON_PUBLISH, 0);   /* no peer: nothing to do */
    event_in_mask_peer(&in, PEER_NETWORK);
    CHECK(in.peer_family == 0 && in.flags == 0);

    /* the rows: network keeps the address without the port, none has neither */
    {
        copy_ctx_t ctx = {"n", 1, 1, 65536, 0};
        const unsigned char *d;
        event_t *ev;
        buf_t b;
        int len;

        event_in_init(&in, HOOK_ON_REGISTER, 946684800000000LL);
        in.peer_family = 4;
        memcpy(in.peer_addr, "\x0a\x01\x02\x03", 4);
        in.peer_port = 51000;
        event_in_mask_peer(&in, PEER_NETWORK);
        ev = event_build(&in);
        CHECK(ev != NULL);
        if (!ev)
            return;
        buf_init(&b, NULL, 0);
        copy_row(&b, &ctx, ev);
        len = copy_field((const unsigned char *)b.p, 9, &d);        /* inet 10.1.2.0 */
        CHECK(len == 8 && d[0] == 2 && d[4] == 10 && d[5] == 1 && d[6] == 2 && d[7] == 0);
        len = copy_field((const unsigned char *)b.p, 10, &d);       /* peer_port NULL */
        CHECK(len == -1);
        len = copy_field((const unsigned char *)b.p, 22, &d);       /* no extra */
        CHECK(len == -1);
        buf_free(&b);
        event_free(ev);
    }
}

/* a hashed payload's row: the digest, the real size, marked, no JSON */
static void test_copy_sha256(void)
{
    copy_ctx_t ctx = {"n", 1, 1, 65536, 0};
    unsigned char digest[SHA256_BYTES];
    const unsigned char *d;
    event_in_t in;
    event_t *ev;
    buf_t b;
    int len;

    sha256("{}", 2, digest);
    event_in_init(&in, HOOK_ON_PUBLISH, 946684800000000LL);
    in.f[F_PAYLOAD] = (span_t){(const char *)digest, sizeof digest, 1};
    in.payload_size = 2;                  /* shorter than the digest, JSON itself */
    in.f[F_CLIENT_ID] = (span_t){"c\xff", 2, 1};
    in.flags = EV_PAYLOAD_SHA256;
    ev = event_build(&in);
    CHECK(ev != NULL);
    if (!ev)
        return;
    buf_init(&b, NULL, 0);
    copy_row(&b, &ctx, ev);
    len = copy_field((const unsigned char *)b.p, 16, &d);           /* payload: the digest */
    CHECK(len == SHA256_BYTES && memcmp(d, digest, SHA256_BYTES) == 0);
    len = copy_field((const unsigned char *)b.p, 17, &d);           /* payload_size */
    CHECK(len == 4 && d[3] == 2);
    len = copy_field((const unsigned char *)b.p, 18, &d);           /* payload_truncated */
    CHECK(len == 1 && d[0] == 1);
    len = copy_field((const unsigned char *)b.p, 19, &d);           /* payload_json NULL */
    CHECK(len == -1);
    len = copy_field((const unsigned char *)b.p, 22, &d);           /* extra */
    CHECK(len > 0 && d[0] == 1);
    if (len > 0)
        CHECK_MEM(d + 1, (size_t)len - 1, "{\"escaped\":[\"client_id\"],\"payload\":\"sha256\"}");
    buf_free(&b);
    event_free(ev);
}

int main(void)
{
    test_journal_forged_record();
    test_journal_sync_error();
    test_journal_close_error();
    test_journal_sync_gap();
    test_journal();
    test_journal_detach();
    test_journal_immutable();
    test_journal_order();
    test_journal_earlier_room();
    test_journal_cursor();
    test_journal_no_space();
    test_journal_ram();
    test_journal_bulk_resumes();
    test_recover_forged_headers();
    test_journal_damage();
    test_recover_legacy();
    test_filters();
    test_sha256();
    test_payload_rules();
    test_mask_peer();
    test_copy_sha256();
    test_text();
    test_base64();
    test_buf_growth();
    test_jsonw();
    test_event();
    test_queue();
    test_queue_unwritten();
    test_queue_race();
    test_copy();
    test_conninfo();
    printf("c core: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
