/* nif_query.c - query/3: the questions `vmq-admin pgevents client' and
 * `check' ask PostgreSQL, on a connection of their own (never the
 * writer's), each answer or failure within a total time limit however the
 * server behaves (pgio.h). A dirty I/O NIF: it blocks only a dirty
 * scheduler, for at most that limit. The SQL is the caller's fixed text;
 * everything else goes as parameters. Secrets in libpq's messages are
 * masked. */
#include <erl_nif.h>
#include <stdlib.h>
#include <string.h>

#include "deadline.h"
#include "nif_priv.h"
#include "pgio.h"

#define QUERY_PARAMS_MAX 8
#define QUERY_MAX 8

/* a binary as a fresh NUL-terminated string; NULL: not a binary, a NUL in
 * it, or out of memory */
static char *binary_cstr(ErlNifEnv *env, ERL_NIF_TERM t)
{
    ErlNifBinary b;
    char *s;

    if (!enif_inspect_binary(env, t, &b) || memchr(b.data, 0, b.size))
        return NULL;
    s = malloc(b.size + 1);
    if (s) {
        memcpy(s, b.data, b.size);
        s[b.size] = '\0';
    }
    return s;
}

/* the rows of r as [[binary() | null]] */
static ERL_NIF_TERM rows_term(ErlNifEnv *env, const PGresult *r)
{
    int nr = PQntuples(r), nf = PQnfields(r), i, j;
    ERL_NIF_TERM rows = enif_make_list(env, 0), null = enif_make_atom(env, "null");

    for (i = nr - 1; i >= 0; i--) {
        ERL_NIF_TERM row = enif_make_list(env, 0), v;
        for (j = nf - 1; j >= 0; j--) {
            if (PQgetisnull(r, i, j)) {
                v = null;
            } else {
                size_t n = (size_t)PQgetlength(r, i, j);
                unsigned char *d = enif_make_new_binary(env, n, &v);
                if (d)
                    memcpy(d, PQgetvalue(r, i, j), n);
                else
                    v = null;
            }
            row = enif_make_list_cell(env, v, row);
        }
        rows = enif_make_list_cell(env, row, rows);
    }
    return rows;
}

static ERL_NIF_TERM fail(ErlNifEnv *env, const priv_t *p, const char *msg, const char *secrets)
{
    char clean[512];

    pgio_clean_error(msg, secrets, clean, sizeof clean);
    return error_msg(env, p, clean);
}

/* query(Conninfo, [{Sql, [Param :: binary() | null]}], TimeoutMs) ->
 *     {ok, [Rows]} | {error, Message}
 * Every statement on one connection, in order; the first failure ends it. */
ERL_NIF_TERM nif_query(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    priv_t *p = enif_priv_data(env);
    ERL_NIF_TERM head, tail = argv[1], results[QUERY_MAX], result;
    char *conninfo = NULL, *secrets = NULL, *sql = NULL, *params[QUERY_PARAMS_MAX];
    const char *keys[] = {"dbname", "application_name", "client_encoding", NULL};
    const char *vals[] = {NULL, "vmq_pgevents vmq-admin", "UTF8", NULL};
    pgio_t io = {0};
    int timeout, nq = 0, np = 0, i;
    int64_t deadline;
    char err[512];
    unsigned len;

    (void)argc;
    if (!enif_get_int(env, argv[2], &timeout) || timeout < 1 || timeout > 600000 ||
        !enif_get_list_length(env, argv[1], &len) || len < 1 || len > QUERY_MAX)
        return enif_make_badarg(env);
    conninfo = binary_cstr(env, argv[0]);
    if (!conninfo)
        return enif_make_badarg(env);
    if (conninfo_check(conninfo) < 0) {
        /* never libpq's message: it quotes the text it could not parse */
        memset(conninfo, 0, strlen(conninfo));
        free(conninfo);
        return error_msg(env, p, "the connection string (cli_dsn, or dsn) is not a valid libpq "
                                 "connection string or URI");
    }
    secrets = pgio_conninfo_secrets(conninfo);
    if (!secrets) {
        /* parsed already (above): no memory for the list that masks them */
        memset(conninfo, 0, strlen(conninfo));
        free(conninfo);
        return error_msg(env, p, "out of memory");
    }
    deadline = mono_ms() + timeout;
    io.timeout_ms = timeout;
    io.secrets = secrets;
    vals[0] = conninfo;
    io.conn = pgio_connect(&io, keys, vals, err, sizeof err);
    if (!io.conn) {
        result = fail(env, p, err, secrets);
        goto out;
    }
    {
        /* the server gives up too (a closed connection is noticed late) */
        char set[64];
        PGresult *r;
        snprintf(set, sizeof set, "SET statement_timeout = %d", timeout);
        r = pgio_exec(&io, set, 0, NULL);
        if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
            result = fail(env, p, io.timed_out ? "no answer from the server in time"
                                  : r ? PQresultErrorMessage(r) : PQerrorMessage(io.conn), secrets);
            PQclear(r);
            goto out;
        }
        PQclear(r);
    }
    while (enif_get_list_cell(env, tail, &head, &tail)) {
        const ERL_NIF_TERM *q;
        ERL_NIF_TERM ph, pt;
        int arity;
        PGresult *r;
        int64_t left = deadline - mono_ms();

        if (!enif_get_tuple(env, head, &arity, &q) || arity != 2 || !(sql = binary_cstr(env, q[0]))) {
            result = enif_make_badarg(env);
            goto out;
        }
        pt = q[1];
        np = 0;
        while (enif_get_list_cell(env, pt, &ph, &pt)) {
            if (np == QUERY_PARAMS_MAX) {
                result = enif_make_badarg(env);
                goto out;
            }
            params[np] = NULL;
            if (!enif_is_identical(ph, enif_make_atom(env, "null")) && !(params[np] = binary_cstr(env, ph))) {
                result = enif_make_badarg(env);
                goto out;
            }
            np++;
        }
        if (!enif_is_empty_list(env, pt)) {
            result = enif_make_badarg(env);
            goto out;
        }
        if (left <= 0) {
            result = fail(env, p, "no answer from the server in time", secrets);
            goto out;
        }
        io.timeout_ms = (int)left;
        /* one statement (the caller's fixed text) */
        r = pgio_exec(&io, sql, np, (const char *const *)params);
        if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
            const char *msg = io.timed_out ? "no answer from the server in time"
                              : r ? PQresultErrorMessage(r) : PQerrorMessage(io.conn);
            result = fail(env, p, msg, secrets);
            PQclear(r);
            goto out;
        }
        results[nq++] = rows_term(env, r);
        PQclear(r);
        for (i = 0; i < np; i++)
            free(params[i]);
        np = 0;
        free(sql);
        sql = NULL;
    }
    result = enif_make_tuple2(env, p->am.am_ok, enif_make_list_from_array(env, results, (unsigned)nq));
out:
    for (i = 0; i < np; i++)
        free(params[i]);
    free(sql);
    if (io.conn)
        PQfinish(io.conn);
    memset(conninfo, 0, strlen(conninfo));
    free(conninfo);
    pgio_secrets_free(secrets);
    return result;
}
