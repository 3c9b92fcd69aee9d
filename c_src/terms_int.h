/* terms_int.h - what terms.c (hook arguments -> event) and terms_json.c
 * (Erlang terms -> JSON text) share. */
#ifndef VMQ_PGEV_TERMS_INT_H
#define VMQ_PGEV_TERMS_INT_H

#include <erl_nif.h>

#include "atoms.h"
#include "buf.h"

#define JSON_DEPTH_MAX 16
#define JSON_BYTES_MAX (256u * 1024u)   /* larger property maps are summarized */
#define TOPIC_WORDS_MAX 65536
/* MQTT strings (client id, username, topic) are at most 65535 bytes; a
 * longer value is not from the protocol and is refused (malformed) rather
 * than copied on the scheduler thread */
#define TEXT_BYTES_MAX 65535u

static inline int atom_text(ErlNifEnv *env, ERL_NIF_TERM t, char *out, size_t n)
{
    return enif_get_atom(env, t, out, (unsigned)n, ERL_NIF_LATIN1) > 0 ? 0 : -1;
}

/* terms.c: a topic (a list of binary words, or a binary) as "a/b/c", and
 * as a JSON string; -1 when it is not one */
int put_topic(ErlNifEnv *env, ERL_NIF_TERM t, buf_t *b);
int json_topic(ErlNifEnv *env, ERL_NIF_TERM t, buf_t *b);

/* terms_json.c: a map as a JSON object (nested terms as JSON values, at
 * most JSON_DEPTH_MAX deep), appended to b */
void json_map(ErlNifEnv *env, const atoms_t *am, ERL_NIF_TERM m, buf_t *b, int depth);
/* a properties (or options) map as a JSON object, summarized past
 * JSON_BYTES_MAX; -1 when t is not a map */
int put_map_json(ErlNifEnv *env, const atoms_t *am, ERL_NIF_TERM t, buf_t *b);

#endif
