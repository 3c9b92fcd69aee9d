/* writer_int.h - what the writer's three files share: the writer's state
 * and the calls between them. Not for anyone else (writer.h is the
 * interface).
 *
 *   writer.c   the loop: take a batch from the queue, write it, let the
 *              journal have its space back; start, stop, status
 *   session.c  the PostgreSQL session: connect, schema, partition upkeep,
 *              the resume point, errors, outages and backoff
 *   copyout.c  one batch into PostgreSQL: the pipelined COPY, and the
 *              split that isolates a refused row into <table>_dead */
#ifndef VMQ_PGEV_WRITER_INT_H
#define VMQ_PGEV_WRITER_INT_H

#include <libpq-fe.h>
#include <pthread.h>
#include <time.h>

#include "buf.h"
#include "compress.h"
#include "copy.h"
#include "deadline.h"
#include "journal.h"
#include "pgio.h"
#include "writer.h"

struct writer {
    writer_config_t cfg;       /* strings below are our own copies */
    char *conninfo, *table, *schema_sql, *node, *spool_dir, *partition, *distribute;
    char *secrets;             /* masked in every message (pgio_conninfo_secrets) */
    queue_t *q;
    writer_log_fn log;
    void *log_ctx;
    pthread_t thread;

    /* writer thread only */
    PGconn *conn;
    pgio_t io;                 /* every libpq call that waits goes through it */
    journal_t *j;              /* the journal, on disk or in memory (st.journal_on);
                                * set before the thread, cleared under smu */
    char *copy_sql, *dead_sql, *resume_sql;
    char *upkeep_sql;          /* <table>_upkeep's call (granted); NULL: vmq_pgevents_upkeep */
    int access_checked;        /* granted asked of this connection */
    int granted;               /* a writer role of vmq_pgevents_grant: its functions */
    int enc_failed;            /* the last COPY was ended for want of memory to encode it */
    int schema_done;
    int dist_checked;          /* copy.client_id_required asked of this connection */
    int connected_once;        /* the first connect (at start, before any event) is done */
    int64_t connect_at_ms;     /* until then: the next try (monotonic ms) */
    int64_t upkeep_at_ms;      /* next partition upkeep (monotonic ms) */
    compressor_t *comp;        /* compress_after set: its own thread and connection */
    int resume_check;          /* ask the table where the batch's incarnation is */
    int64_t checked_inc;       /* the incarnation whose rows were last written or asked for */
    int64_t tried_inc;         /* the incarnation and the highest seq of the rows sent */
    uint64_t tried_seq;
    uint64_t recovered_n;      /* events of earlier starts' files at start */
    char last_sqlstate[6];     /* of the last failed statement */
    uint64_t drops_logged;     /* hook-path drops already reported */
    uint64_t big_logged;       /* ... of them too large for a segment */
    int64_t drops_logged_us;
    int64_t drops_row_at_ms;   /* the next pgevents_dropped row, at the earliest */
    int64_t drops_row_forced_ms; /* ... tried even while events are dropped */
    uint64_t drops_row_seen;   /* the queue's drops at the last look */
    int64_t running_row_at_ms; /* the next pgevents_running row */
    int backoff_ms;
    int down_logged;
    int64_t down_since_us;
    uint64_t down_attempts;
    copy_ctx_t copy;           /* copy.incarnation: the batch's */
    buf_t enc;                 /* COPY data being encoded and sent */
    /* the start of the next batch, encoded while the one before it commits
     * (prefetch): valid only for the copy_send right after that commit */
    buf_t pre;                 /* COPY header and the rows of pre_n events */
    size_t pre_n;              /* 0: nothing encoded ahead */
    uint64_t pre_seq;          /* the seq of its first event */
    event_t *pre_last;         /* the last event encoded */

    /* stop request: guarded by smu, waited on by the writer's sleeps */
    pthread_mutex_t smu;
    pthread_cond_t scv;
    int stop;
    struct timespec stop_deadline;

    /* status: guarded by smu */
    writer_status_t st;
};

/* session.c */
#define w_log(w, level, ...) writer_logf((w)->log, (w)->log_ctx, (level), __VA_ARGS__)
void w_clean_error(const writer_t *w, const char *in, char *out, size_t n);
void w_set_state(writer_t *w, int state);
/* a stop is asked; *past_deadline (may be NULL): its deadline has passed */
int w_stop_requested(writer_t *w, int *past_deadline);
int w_next_backoff_ms(writer_t *w);
void w_backoff(writer_t *w);   /* waits the next backoff (shortly, once a stop is asked) */
void w_note_down(writer_t *w, const char *what, const char *err);
void w_note_up(writer_t *w);
void w_disconnect(writer_t *w);
int w_check_access(writer_t *w);
int w_upkeeps(const writer_t *w);
int w_partitioned(const writer_t *w);
/* asks whether the table is distributed (copy.client_id_required); -1: no answer */
int w_check_distributed(writer_t *w);
/* makes the partitions lo_us..hi_us need (0, 0: only the upkeep's own);
 * -1: failed (logged) */
int w_upkeep(writer_t *w, int64_t lo_us, int64_t hi_us);
int w_ensure_connected(writer_t *w);
void w_ts_range(const event_t *ev, size_t n, int64_t *lo, int64_t *hi);
int w_resume_point(writer_t *w, int64_t incarnation, const event_t *batch, uint64_t *max_seq);
const char *w_io_error(writer_t *w, const PGresult *r);
void w_result_error(writer_t *w, PGresult *r, char *err, size_t errlen);
enum write_rc { W_OK, W_DATA, W_UNSURE, W_DOWN };   /* see w_classify */
int w_classify(writer_t *w, PGresult *r);

/* copyout.c */
/* Writes the batch (all of incarnation w->copy.incarnation), isolating
 * rows PostgreSQL refuses. Returns the events not yet written (NULL when
 * all are done). *written 0: they are kept for a retry; 1: all were
 * written, and these are the next batch, taken from the queue while the
 * last COPY committed (prefetch). */
event_t *w_write_batch(writer_t *w, event_t *batch, size_t *n, int *written);

#endif
