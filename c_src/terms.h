/* terms.h - the normalizer: one hook call's Erlang arguments in, a filled
 * event_in_t out (subscriber id -> mountpoint + client id, topic words ->
 * "a/b/c", peer tuple -> inet bytes, subscription lists and property maps
 * -> JSON, payload -> bytes truncated to payload_max).
 *
 * Runs on the calling scheduler thread. Never raises, never crashes on any
 * term: an argument of the wrong shape becomes NULL and is named in the
 * row's extra.malformed. Small values live in stack buffers inside
 * decoded_t; the heap is touched only for large ones. */
#ifndef VMQ_PGEV_TERMS_H
#define VMQ_PGEV_TERMS_H

#include <erl_nif.h>

#include "atoms.h"
#include "buf.h"
#include "event.h"

typedef struct decoded {
    event_in_t in;
    unsigned char payload_sha256[32];   /* the payload's hash (payload_topics hash mode) */
    unsigned malformed;      /* bit i: argument i had the wrong shape */
    buf_t mp, topic, topics, props, extra, reason;
    char mp_s[128], topic_s[512], topics_s[1024], props_s[1024], extra_s[512];
    char reason_s[64];
} decoded_t;

/* The payload field's span points at the whole binary's data, its length
 * cut to payload_max (in.payload_size is the binary's size).
 * d->in must be set up with event_in_init first. argv holds the hook's arguments (hook_defs[hook].roles gives their
 * meaning). Fills d; always succeeds; call decoded_free after use. */
void decode_event(ErlNifEnv *env, const atoms_t *am, int hook,
                  const ERL_NIF_TERM *argv, size_t payload_max, decoded_t *d);
void decoded_free(decoded_t *d);

#endif
