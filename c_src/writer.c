/* writer.c - the writer thread's loop (see writer.h, writer_int.h).
 *
 * Loop: take a batch from the queue (the queue lock is held only inside
 * queue_pop), make sure the connection is up (session.c), write the batch
 * (copyout.c), repeat. A batch is all of one incarnation: the events of
 * earlier starts' journal files come first (recover.h), each incarnation
 * asked once where the table has it up to (the resume point), so nothing
 * an earlier start wrote is written twice. A failed write keeps the batch
 * and retries it after the backoff; the events wait where they are, in the
 * journal on disk (or, with journal off, in its segments in memory, bounded
 * by the queue's limits).
 *
 * At a stop, what is queued is written until the stop's deadline; past it,
 * events on disk stay for the next start, events in memory are discarded
 * and counted. */
#define _GNU_SOURCE
#include "writer_int.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "deadline.h"
#include "hooks.h"
#include "plugin_rows.h"

/* The hook path counts the events it could not queue but never logs;
 * the writer says so, at most every 10 s (the drops for want of room:
 * those after a stop are told at the next start) */
static void report_queue_drops(writer_t *w)
{
    queue_stats_t qs;
    journal_stats_t js;
    uint64_t big, room;
    int64_t now;

    queue_get_stats(w->q, &qs);
    qs.dropped -= qs.dropped_stopped;
    if (qs.dropped <= w->drops_logged)
        return;
    now = wall_us();
    if (w->drops_logged_us && now - w->drops_logged_us < 10000000)
        return;
    big = qs.dropped_too_large - w->big_logged;
    room = qs.dropped - w->drops_logged - big;   /* the others: no room */
    journal_get_stats(w->j, &js);
    if (big)
        w_log(w, WLOG_ERROR,
              "%llu events dropped: each larger than a journal segment takes (%llu bytes; a "
              "payload kept whole: payload_mode full, a payload_topics rule full, or "
              "payload_max_bytes above it); %llu dropped so far",
              (unsigned long long)big, (unsigned long long)js.seg_bytes,
              (unsigned long long)qs.dropped);
    if (room && w->st.journal_on) {
        w_log(w, WLOG_ERROR,
              "%llu events dropped: no room in the journal (its files may use spool_max_bytes "
              "%llu in all%s%s); %llu dropped so far",
              (unsigned long long)room,
              (unsigned long long)w->cfg.spool_max_bytes, js.error[0] ? "; " : "", js.error,
              (unsigned long long)qs.dropped);
    } else if (room) {
        w_log(w, WLOG_ERROR,   /* in memory: js.error, why a segment could not be had */
              "%llu events dropped: the in-memory queue was full (queue_max_events %zu, "
              "queue_max_bytes %zu; no journal%s%s); %llu dropped so far",
              (unsigned long long)room,
              __atomic_load_n(&w->q->max_events, __ATOMIC_RELAXED),
              __atomic_load_n(&w->q->max_bytes, __ATOMIC_RELAXED), js.error[0] ? "; " : "",
              js.error, (unsigned long long)qs.dropped);
    }
    w->drops_logged = qs.dropped;
    w->big_logged = qs.dropped_too_large;
    w->drops_logged_us = now;
}

/* The drops since the last pgevents_dropped row as one (plugin_rows.h),
 * at most every second. While events are still being dropped there is no
 * room for the row either: it is tried after a second without a drop, or
 * every 10 s. */
static void record_drops(writer_t *w)
{
    int64_t now = mono_ms();
    queue_stats_t qs;

    if (now < w->drops_row_at_ms)
        return;
    w->drops_row_at_ms = now + 1000;
    queue_get_stats(w->q, &qs);
    if (qs.dropped != w->drops_row_seen && now < w->drops_row_forced_ms) {
        w->drops_row_seen = qs.dropped;
        return;
    }
    w->drops_row_seen = qs.dropped;
    w->drops_row_forced_ms = now + 10000;
    (void)prow_dropped(w->q);
}

/* A pgevents_running row every running_every_ms (plugin_rows.h); one
 * that finds no room is not tried again before the next. */
static void record_running(writer_t *w)
{
    int64_t now = mono_ms();

    if (now < w->running_row_at_ms)
        return;
    w->running_row_at_ms = now + w->cfg.running_every_ms;
    (void)prow_running(w->q, w->cfg.running_every_ms);
}

/* Between the writer's work and while it waits: the hook path's drops
 * into the log, and the plugin's rows that are due (a stop's row has
 * closed the queue before the writer is told to stop: nothing after it). */
static void tell(writer_t *w)
{
    report_queue_drops(w);
    record_drops(w);
    record_running(w);
}

/* Runs while a libpq call waits for the server (pgio's tick). Nonzero: a
 * stop's deadline has passed. */
static int writer_io_tick(void *ctx)
{
    writer_t *w = ctx;
    int past = 0;

    if (w_stop_requested(w, &past) && past)
        return 1;
    tell(w);
    return 0;
}

/* journal events left for the next start: counted (per_hook: of each hook) */
static void count_left(writer_t *w, size_t left, const uint64_t *per_hook)
{
    int i;

    pthread_mutex_lock(&w->smu);
    for (i = 0; i < EVENT_KINDS; i++)
        w->st.spooled_hook[i] += per_hook[i];
    w->st.spooled += left;
    w->st.spooled_at_stop += left;
    w->st.journal_left += left;
    pthread_mutex_unlock(&w->smu);
}

/* At a stop past its deadline: journal events stay on disk (not released:
 * the next start takes their files over), the others are discarded. Both
 * counted. */
static void leave_or_discard(writer_t *w, event_t *list, size_t n)
{
    uint64_t per_hook[EVENT_KINDS] = {0};
    event_t *ev, *next;
    size_t i, left = 0, gone = 0;

    for (ev = list, i = 0; ev && i < n; ev = next, i++) {
        int hook = ev->hook;
        next = ev->next;
        if (queue_leave(ev)) {
            per_hook[hook]++;
            left++;
        } else {
            gone++;
        }
    }
    count_left(w, left, per_hook);
    pthread_mutex_lock(&w->smu);
    w->st.discarded_at_stop += gone;
    pthread_mutex_unlock(&w->smu);
}

/* the journal's events not yet read stay for the next start, or with the
 * journal in memory are lost: counted */
static size_t leave_journal(writer_t *w)
{
    uint64_t per_hook[EVENT_KINDS] = {0};
    size_t n = queue_detach_journal(w->q, per_hook);

    if (w->st.journal_on) {
        count_left(w, n, per_hook);
    } else {
        pthread_mutex_lock(&w->smu);
        w->st.discarded_at_stop += n;
        pthread_mutex_unlock(&w->smu);
    }
    return n;
}

/* events go to the journal from now on, after those of the files earlier
 * starts left: in spool_dir, or else in memory only (writer_start, before
 * the thread). -1: not even in memory (err) */
static int open_journal(writer_t *w, char *err, size_t errlen)
{
    journal_t *j = NULL;

    err[0] = '\0';
    if (w->spool_dir && !w->st.spool_error[0] && w->cfg.journal)
        j = journal_open(w->spool_dir, w->cfg.incarnation, w->cfg.spool_max_bytes,
                         w->cfg.journal_sync_ms, w->cfg.journal_memory_bytes, err, errlen);
    pthread_mutex_lock(&w->smu);
    snprintf(w->st.journal_error, sizeof w->st.journal_error, "%s", err);
    w->st.journal_on = j != NULL;
    pthread_mutex_unlock(&w->smu);
    if (!j)
        j = journal_open(NULL, w->cfg.incarnation,
                         __atomic_load_n(&w->q->max_bytes, __ATOMIC_RELAXED), 0, 0, err, errlen);
    if (!j)
        return -1;
    w->j = j;
    queue_attach_journal(w->q, j);
    queue_open(w->q);   /* closed by the last stop's row, or never opened */
    /* hooks write from here on; earlier starts' files are read meanwhile
     * (long for a large backlog) and written first */
    journal_recover(j);
    queue_take_earlier(w->q);
    return 0;
}

/* at the end: what the journal still holds stays on disk for the next
 * start (in memory: lost) */
static void close_journal(writer_t *w)
{
    size_t n;
    journal_t *j = w->j;

    if (!j)
        return;
    n = leave_journal(w);
    if (n && w->st.journal_on)
        w_log(w, WLOG_WARNING, "%zu events stay in the journal in %s: written at the next start",
              n, w->spool_dir);
    else if (n)
        w_log(w, WLOG_ERROR, "%zu events in memory could not be written and are lost", n);
    pthread_mutex_lock(&w->smu);
    w->j = NULL;
    w->st.journal_on = 0;
    pthread_mutex_unlock(&w->smu);
    {
        char err[256];
        if (journal_close_report(j, err, sizeof err) < 0)
            w_log(w, WLOG_ERROR, "closing the journal in %s: %s; what could not be copied or "
                  "synced stays for the next start", w->spool_dir, err);
    }
}

/* journal and spool files in dir */
static size_t earlier_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;

    if (!d)
        return 0;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".dat") == 0 &&
            (strncmp(e->d_name, "journal-", 8) == 0 || strncmp(e->d_name, "spool-", 6) == 0))
            n++;
    }
    closedir(d);
    return n;
}

/* what writer_start found (it cannot log: it runs in the caller) */
static void log_start(writer_t *w)
{
    journal_stats_t js;

    if (w->st.spool_error[0])
        w_log(w, WLOG_ERROR, "no journal: %s; events wait in memory (queue_max_events, "
              "queue_max_bytes), what does not fit is dropped", w->st.spool_error);
    else if (w->cfg.journal && !w->st.journal_on)
        w_log(w, WLOG_ERROR, "no journal: %s; events wait in memory (queue_max_events, "
              "queue_max_bytes), what does not fit is dropped", w->st.journal_error);
    if (!w->st.journal_on) {
        size_t files = w->spool_dir ? earlier_files(w->spool_dir) : 0;
        if (files)
            w_log(w, WLOG_WARNING, "journal off: the %zu file(s) earlier starts left in %s are "
                  "not read (they are, once journal is on)", files, w->spool_dir);
        return;
    }
    journal_get_stats(w->j, &js);
    if (js.ram_dir[0])
        w_log(w, WLOG_INFO, "journal: hooks write into memory files in %s (at most %llu bytes), "
              "copied to %s", js.ram_dir, (unsigned long long)w->cfg.journal_memory_bytes,
              w->spool_dir);
    else
        w_log(w, WLOG_WARNING, "journal: no memory files (%s); hooks write into the files in %s "
              "directly", js.ram_error, w->spool_dir);
    if (w->recovered_n)
        w_log(w, WLOG_INFO, "%llu events in %s from earlier starts (%llu bytes of files): "
              "written first (those the table has already are skipped)",
              (unsigned long long)w->recovered_n, w->spool_dir,
              (unsigned long long)js.old_bytes);
    if (js.corrupt)
        w_log(w, WLOG_ERROR, "%s: %llu damaged record(s) in earlier starts' files skipped; "
              "the records after them are written", w->spool_dir,
              (unsigned long long)js.corrupt);
    if (js.unreadable)
        w_log(w, WLOG_ERROR, "%s: %llu file(s) of earlier starts could not be read and stay "
              "there: %s", w->spool_dir, (unsigned long long)js.unreadable, js.old_error);
}

static void set_inflight(writer_t *w, const event_t *batch, size_t n)
{
    pthread_mutex_lock(&w->smu);
    w->st.inflight = n;
    w->st.inflight_oldest_us = batch ? batch->ts_us : 0;
    pthread_mutex_unlock(&w->smu);
}

/* the stop's deadline passed: nothing more is written */
static void stop_now(writer_t *w, event_t *batch, size_t n)
{
    event_t *list;
    size_t k, rest = n;
    uint64_t left0, left1;

    pthread_mutex_lock(&w->smu);
    left0 = w->st.journal_left;
    pthread_mutex_unlock(&w->smu);
    leave_or_discard(w, batch, n);
    rest += leave_journal(w);   /* the journal's, uncopied */
    while ((list = queue_pop(w->q, SIZE_MAX, 0, &k)) != NULL) {
        rest += k;
        leave_or_discard(w, list, k);
    }
    queue_settled(w->q);
    set_inflight(w, NULL, 0);
    pthread_mutex_lock(&w->smu);
    left1 = w->st.journal_left;
    pthread_mutex_unlock(&w->smu);
    if (left1 - left0)
        w_log(w, WLOG_WARNING, "stop timeout reached: %llu events stay in the journal (%s), "
              "written at the next start", (unsigned long long)(left1 - left0), w->spool_dir);
    if (rest > left1 - left0)
        w_log(w, WLOG_ERROR, "stop timeout reached: %llu events in memory could not be "
              "written and are lost", (unsigned long long)(rest - (left1 - left0)));
}

static void *writer_main(void *arg)
{
    writer_t *w = arg;
    event_t *batch = NULL;
    size_t n = 0;
    int written;

#ifdef __linux__
    pthread_setname_np(pthread_self(), "vmq_pgevents");
#endif
    log_start(w);
    {
        queue_stats_t qs;
        queue_get_stats(w->q, &qs);
        w->drops_logged = qs.dropped - qs.dropped_stopped;   /* earlier writers reported theirs */
        w->big_logged = qs.dropped_too_large;
    }
    /* drops of the time the plugin was stopped: told a second after the
     * start, after the start's own rows (nif_config.c) */
    w->drops_row_at_ms = mono_ms() + 1000;
    w->running_row_at_ms = mono_ms() + w->cfg.running_every_ms;
    for (;;) {
        int past = 0, stopping = w_stop_requested(w, &past);

        tell(w);
        if (w_upkeeps(w) && w->conn && mono_ms() >= w->upkeep_at_ms &&
            !stopping)
            (void)w_upkeep(w, 0, 0);
        if (!batch && !stopping && !w->connected_once && mono_ms() >= w->connect_at_ms) {
            /* connect and apply the schema at start, so the table and the
             * views are there before the first event; PostgreSQL down:
             * retried with the backoff while events wait */
            if (w_ensure_connected(w) == 0)
                w_note_up(w);
            else
                w->connect_at_ms = mono_ms() + w_next_backoff_ms(w);
        }
        if (!batch) {
            int64_t origin;
            w->pre_n = 0;   /* nothing encoded ahead belongs to a new batch */
            batch = queue_pop(w->q, __atomic_load_n(&w->cfg.batch_size, __ATOMIC_RELAXED),
                              stopping ? 0 : __atomic_load_n(&w->cfg.flush_interval_ms,
                                                             __ATOMIC_RELAXED),
                              &n);
            if (!batch) {
                /* at a stop: done once empty; past its deadline (a copy
                 * may just have found no memory, or the first event is
                 * still being written), what is left stays or is
                 * discarded, counted either way */
                if (stopping && past) {
                    stop_now(w, NULL, 0);
                    break;
                }
                if (stopping && !queue_held_back(w->q))
                    break;
                continue;
            }
            origin = queue_event_origin(batch);
            w->copy.incarnation = origin ? origin : w->cfg.incarnation;
            if (w->copy.incarnation != w->checked_inc)
                w->resume_check = 1;   /* an earlier start may have written some */
            w->copy.json_max = __atomic_load_n(&w->cfg.json_max, __ATOMIC_RELAXED);
            set_inflight(w, batch, n);
            queue_settled(w->q);
        }
        if (stopping && past) {
            stop_now(w, batch, n);
            batch = NULL;
            break;
        }
        if (w_ensure_connected(w) < 0) {
            w_backoff(w);
            continue;
        }
        batch = w_write_batch(w, batch, &n, &written);
        if (written) {
            /* batch: NULL, or the next batch, taken from the queue during
             * the last commit (of the same incarnation) */
            w_note_up(w);
            set_inflight(w, batch, batch ? n : 0);
            continue;
        }
        w_backoff(w);
    }
    close_journal(w);
    w_disconnect(w);
    w_set_state(w, WS_STOPPED);
    return NULL;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void writer_free(writer_t *w)
{
    free(w->conninfo);
    free(w->table);
    free(w->schema_sql);
    free(w->node);
    free(w->spool_dir);
    free(w->partition);
    free(w->distribute);
    buf_free(&w->enc);
    buf_free(&w->pre);
    pgio_secrets_free(w->secrets);
    pthread_cond_destroy(&w->scv);
    pthread_mutex_destroy(&w->smu);
    free(w);
}

/* the journal's directory, made when missing; "" or why not */
static void make_spool_dir(writer_t *w)
{
    struct stat sb;

    if (mkdir(w->spool_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(w->st.spool_error, sizeof w->st.spool_error, "cannot make spool directory %s: %s",
                 w->spool_dir, strerror(errno));
        return;
    }
    if (stat(w->spool_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        snprintf(w->st.spool_error, sizeof w->st.spool_error, "spool directory %s is not a directory",
                 w->spool_dir);
}

writer_t *writer_start(const writer_config_t *cfg, queue_t *q,
                       writer_log_fn log, void *log_ctx, char *err, size_t errlen)
{
    writer_t *w = calloc(1, sizeof *w);
    pthread_condattr_t ca;

    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (pthread_mutex_init(&w->smu, NULL) != 0) {
        free(w);
        snprintf(err, errlen, "cannot create a mutex");
        return NULL;
    }
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_cond_init(&w->scv, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        pthread_mutex_destroy(&w->smu);
        free(w);
        snprintf(err, errlen, "cannot create a condition variable");
        return NULL;
    }
    pthread_condattr_destroy(&ca);
    w->cfg = *cfg;
    w->conninfo = strdup(cfg->conninfo ? cfg->conninfo : "");
    w->table = strdup(cfg->table);
    w->schema_sql = dup_or_null(cfg->schema_sql);
    w->node = strdup(cfg->node);
    w->spool_dir = dup_or_null(cfg->spool_dir);
    w->partition = strdup(cfg->partition ? cfg->partition : "none");
    w->distribute = strdup(cfg->distribute ? cfg->distribute : "off");
    /* never with conninfo NULL; NULL: out of memory (it was checked) */
    w->secrets = w->conninfo ? pgio_conninfo_secrets(w->conninfo) : NULL;
    if (!w->conninfo || !w->secrets || !w->table || !w->node || !w->partition || !w->distribute ||
        (cfg->schema_sql && !w->schema_sql) ||
        (cfg->spool_dir && !w->spool_dir)) {
        writer_free(w);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->cfg.conninfo = w->conninfo;
    w->cfg.table = w->table;
    w->cfg.schema_sql = w->schema_sql;
    w->cfg.node = w->node;
    w->cfg.spool_dir = w->spool_dir;
    w->cfg.partition = w->partition;
    w->cfg.distribute = w->distribute;
    w->io.timeout_ms = cfg->pg_timeout_ms > 0 ? cfg->pg_timeout_ms : 10000;
    w->io.tick = writer_io_tick;
    w->io.secrets = w->secrets;
    w->io.ctx = w;
    if (w->cfg.backoff_min_ms < 1)
        w->cfg.backoff_min_ms = 1;
    if (w->cfg.backoff_max_ms < w->cfg.backoff_min_ms)
        w->cfg.backoff_max_ms = w->cfg.backoff_min_ms;
    w->backoff_ms = w->cfg.backoff_min_ms;
    if (w->cfg.running_every_ms <= 0)
        w->cfg.running_every_ms = 3600000;
    buf_init(&w->enc, NULL, 0);
    buf_init(&w->pre, NULL, 0);
    w->copy.node = w->node;
    w->copy.node_len = strlen(w->node);
    w->copy.incarnation = cfg->incarnation;
    w->copy.json_max = cfg->json_max;
    w->q = q;
    w->log = log;
    w->log_ctx = log_ctx;
    w->st.state = WS_STARTING;
    /* the journal before the thread, so hooks that run from the moment
     * start returns are kept, after what earlier starts left */
    if (w->spool_dir)
        make_spool_dir(w);
    if (open_journal(w, err, errlen) != 0) {
        writer_free(w);
        return NULL;
    }
    if (w->st.journal_on) {
        journal_stats_t js;
        journal_get_stats(w->j, &js);
        w->recovered_n = js.recovered;
        w->st.spool_corrupt = js.corrupt;
    }
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        close_journal(w);
        writer_free(w);
        snprintf(err, errlen, "cannot create the writer thread");
        return NULL;
    }
    if (cfg->compress_after_s > 0 && strcmp(w->partition, "none") != 0) {
        compress_config_t cc = {w->conninfo, w->secrets, w->table, cfg->compress_after_s,
                                cfg->compress_every_ms};
        char cerr[128];
        w->comp = compressor_start(&cc, log, log_ctx, cerr, sizeof cerr);
        if (!w->comp)
            snprintf(w->st.compress_error, sizeof w->st.compress_error, "%s", cerr);
    }
    return w;
}

/* the compressor's status in the writer's */
static void compress_into(writer_status_t *st, const compress_status_t *cs)
{
    st->partitions_compressed = cs->compressed;
    st->compress_failures = cs->failures;
    st->compress_refused = cs->refused;
    snprintf(st->compress_error, sizeof st->compress_error, "%s", cs->error);
}

void writer_stop(writer_t *w, int timeout_ms, writer_status_t *final)
{
    struct timespec dl;

    deadline_after(&dl, timeout_ms);
    pthread_mutex_lock(&w->smu);
    w->stop = 1;
    w->stop_deadline = dl;
    pthread_mutex_unlock(&w->smu);
    pthread_cond_broadcast(&w->scv);
    queue_request_stop(w->q);
    if (w->comp) {
        compress_status_t cs;
        compressor_stop(w->comp, &cs);
        w->comp = NULL;
        pthread_mutex_lock(&w->smu);
        compress_into(&w->st, &cs);
        pthread_mutex_unlock(&w->smu);
    }
    pthread_join(w->thread, NULL);
    /* the queue stays usable: a later writer_start picks up from here */
    pthread_mutex_lock(&w->q->mu);
    w->q->stop = 0;
    pthread_mutex_unlock(&w->q->mu);
    writer_get_status(w, final);
    writer_free(w);
}

void writer_get_status(writer_t *w, writer_status_t *st)
{
    pthread_mutex_lock(&w->smu);
    *st = w->st;
    if (w->comp) {
        compress_status_t cs;
        compressor_get_status(w->comp, &cs);
        compress_into(st, &cs);
    }
    if (w->j && !w->st.journal_on) {
        journal_stats_t js;
        journal_get_stats(w->j, &js);   /* in memory: why a segment could not be had */
        if (js.error[0])
            snprintf(st->journal_error, sizeof st->journal_error, "%s", js.error);
    } else if (w->st.journal_on) {
        journal_stats_t js;
        journal_get_stats(w->j, &js);
        st->journal_bytes = js.disk_bytes;
        st->journal_segments = js.segments;
        st->journal_syncs = js.syncs;
        st->journal_no_room = js.no_room;
        st->journal_sync_us = js.last_sync_us;
        st->spool_bytes = js.old_bytes;
        snprintf(st->journal_error, sizeof st->journal_error, "%s", js.error);
        st->journal_memory_bytes = js.ram_segments * js.seg_bytes;
        st->journal_disk_segments = js.ram_missed;
        snprintf(st->journal_memory_error, sizeof st->journal_memory_error, "%s", js.ram_error);
    }
    pthread_mutex_unlock(&w->smu);
}

void writer_tune(writer_t *w, size_t batch_size, int flush_interval_ms, size_t json_max)
{
    __atomic_store_n(&w->cfg.batch_size, batch_size, __ATOMIC_RELAXED);
    __atomic_store_n(&w->cfg.flush_interval_ms, flush_interval_ms, __ATOMIC_RELAXED);
    __atomic_store_n(&w->cfg.json_max, json_max, __ATOMIC_RELAXED);
}

void writer_status_add(writer_status_t *into, const writer_status_t *from)
{
    int i;

    into->written += from->written;
    into->batches += from->batches;
    into->prefetched += from->prefetched;
    into->dead_lettered += from->dead_lettered;
    into->dead_lost += from->dead_lost;
    into->spooled += from->spooled;
    into->spooled_at_stop += from->spooled_at_stop;
    into->journal_left += from->journal_left;
    into->partitions_created += from->partitions_created;
    into->partitions_dropped += from->partitions_dropped;
    into->partitions_compressed += from->partitions_compressed;
    into->compress_failures += from->compress_failures;
    into->spool_corrupt += from->spool_corrupt;
    into->reconnects += from->reconnects;
    into->discarded_at_stop += from->discarded_at_stop;
    into->write_errors += from->write_errors;
    for (i = 0; i < EVENT_KINDS; i++) {
        into->written_hook[i] += from->written_hook[i];
        into->dead_hook[i] += from->dead_hook[i];
        into->spooled_hook[i] += from->spooled_hook[i];
    }
}
