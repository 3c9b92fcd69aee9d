/* nif_priv.h - the state the NIF's files share: one priv_t, handed to
 * load as priv data (nif.c), read by the hook path (nif_hook.c), set by
 * start/configure/stop (nif_config.c) and reported by status
 * (nif_status.c). Only a library of the same build adopts another
 * instance's priv_t on reload (nif.c), so its layout may change freely
 * between builds. */
#ifndef VMQ_PGEV_NIF_PRIV_H
#define VMQ_PGEV_NIF_PRIV_H

#include <erl_nif.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "atoms.h"
#include "deadline.h"
#include "filter.h"
#include "hooks.h"
#include "queue.h"
#include "writer.h"

#define ARGS_MAX 8
#define HOOK_SLOTS 64   /* a power of two, over twice HOOK_COUNT */
_Static_assert(HOOK_SLOTS >= 2 * HOOK_COUNT && (HOOK_SLOTS & (HOOK_SLOTS - 1)) == 0,
               "hook_slot keeps empty slots");
#define DEFAULT_QUEUE_EVENTS 100000
#define DEFAULT_QUEUE_BYTES (64u * 1024 * 1024)
#define DEFAULT_BATCH 5000
#define DEFAULT_PAYLOAD_MAX 65536
#define UNLOAD_STOP_MS 2000
#define PAYLOAD_FULL_MAX (256u * 1024 * 1024)

enum { CH_STARTING = 1, CH_STOPPING = 2 };

typedef struct priv {
    const char *build;           /* build_id of the library that made it */
    size_t size;                 /* sizeof(priv_t) of that library */
    unsigned refs;               /* module instances using it (load/upgrade/unload) */
    atoms_t am;
    ERL_NIF_TERM hook_atom[HOOK_COUNT];
    unsigned hook_arity[HOOK_COUNT];
    uint8_t hook_slot[HOOK_SLOTS];   /* hook index + 1, placed by hook_slot_of (find_hook); 0: empty */
    queue_t q;
    int64_t incarnation;

    int topic_arg[HOOK_COUNT];   /* argument index of the topic, -1: none */
    int subid_arg[HOOK_COUNT];   /* argument index of the subscriber id */
    int payload_arg[HOOK_COUNT]; /* argument index of the payload (B) or of the dropped
                                  * message holding it (D), -1: none */

    /* read on the hook path without a lock */
    uint64_t enabled;            /* bit per hook id */
    size_t payload_max;
    uint8_t payload_mode[HOOK_COUNT];
    filters_t *filters;          /* published with release; NULL: no filter */
    payload_rules_t *payload_rules; /* payload_topics, published with release; NULL: none */
    uint8_t peer_mode;           /* enum peer_mode */
    uint64_t recorded[HOOK_COUNT], dropped[HOOK_COUNT], malformed[HOOK_COUNT];
    uint64_t filtered[HOOK_COUNT];
    uint64_t rejected;           /* unknown hook or arity */
    int refusing;                /* stopped: hooks drop (counted) until the next start */

    /* guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* signalled when changing goes back to 0 */
    int changing;                /* CH_STARTING, CH_STOPPING: start/stop under way (mu not
                                  * held across it); 0: none */
    writer_t *w;
    writer_status_t past;        /* counters of writers already stopped */
    size_t batch_size, json_max;
    int flush_interval_ms;
    ErlNifPid owner;
    int has_owner;
    char dsn_masked[512];
    char marker_dir[4096];       /* the running marker's directory (plugin_rows.h), "": none */
    payload_rules_t *rules_retired; /* replaced payload_topics sets, kept until unload */
} priv_t;


ERL_NIF_TERM error_tuple(ErlNifEnv *env, const priv_t *p, ERL_NIF_TERM why);
ERL_NIF_TERM error_msg(ErlNifEnv *env, const priv_t *p, const char *msg);

/* the NIF functions (nif.c's table) */
ERL_NIF_TERM nif_event(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_start(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_configure(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_stop(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_flush(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_status(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_hooks(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_mask_dsn(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_wants(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_query(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

/* stops and joins the writer, keeping its counters in p->past (stop/1,
 * unload); waits for a start or stop under way first, so it never returns
 * while a writer it did not stop runs */
void stop_writer(priv_t *p, int timeout_ms);

/* returns once no writer of an unloaded instance is still being stopped
 * (nif.c, unload); start/2 calls it first */
void wait_retired(void);

/* where a hook's name starts looking in hook_slot: an atom is an
 * immediate term whose bits above the lowest six are the atom's index, so
 * these differ between the hooks' names; any bits would do, only more
 * slots would be looked at */
static inline unsigned hook_slot_of(ERL_NIF_TERM atom)
{
    return (unsigned)(atom >> 6) & (HOOK_SLOTS - 1);
}

#endif
