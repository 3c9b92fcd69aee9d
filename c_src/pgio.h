/* pgio.h - the libpq calls the writer makes, none of which can block it
 * for longer than a deadline: the connection is non-blocking and every wait
 * polls its socket in short slices. Between slices the caller's tick runs
 * (the writer checks its stop deadline and reports drops there), so a PostgreSQL
 * that stops answering — a frozen server, a network partition — costs
 * nothing but time. On a timeout the call fails with a message; the
 * caller drops the connection and goes on as after any failed write.
 *
 * Used by the writer thread and the compressor thread (each its own
 * connection). Knows nothing of erl_nif. */
#ifndef VMQ_PGEV_PGIO_H
#define VMQ_PGEV_PGIO_H

#include <stddef.h>

#include <libpq-fe.h>

/* run every slice of a wait; nonzero: give the wait up (as a timeout) */
typedef int (*pgio_tick_fn)(void *ctx);

typedef struct pgio {
    PGconn *conn;
    int timeout_ms;        /* longest wait for one call */
    pgio_tick_fn tick;     /* may be NULL */
    void *ctx;
    int timed_out;         /* the last failure was a timeout */
    const char *secrets;   /* masked in every message written into err (the list
                            * pgio_clean_error takes); NULL: none */
} pgio_t;

/* Connects (keys/vals as PQconnectStartParams, expand_dbname 1) within
 * io->timeout_ms and makes the connection non-blocking. NULL on failure,
 * with libpq's message (or the timeout) in err, io->secrets masked. */
PGconn *pgio_connect(pgio_t *io, const char *const *keys, const char *const *vals,
                     char *err, size_t errlen);

/* PQexecParams (nparams may be 0): the last result, or for COPY the
 * PGRES_COPY_IN result; NULL when the connection failed or timed out
 * (PQerrorMessage, or the timeout flag, says which). */
PGresult *pgio_exec(pgio_t *io, const char *sql, int nparams, const char *const *params);

/* COPY data and its end (errmsg NULL: success), each sent completely:
 * 0, or -1 on failure or timeout. */
int pgio_put(pgio_t *io, const char *p, size_t n);
int pgio_end(pgio_t *io, const char *errmsg);

/* The next result (PQgetResult) once it has arrived; NULL when there is
 * none left, or on failure or timeout (io->timed_out set). */
PGresult *pgio_result(pgio_t *io);

/* A libpq message for a log line or status: one line, no trailing
 * newline, every copy of every secret masked. secrets: a list of strings,
 * each ended by its NUL, the list by an empty string (pgio_conninfo_secrets);
 * NULL: none. */
void pgio_clean_error(const char *in, const char *secrets, char *out, size_t n);

/* r's SQLSTATE when it is one (five of 0-9 and A-Z), else NULL: a server
 * (or what speaks for it) may send anything in that field, and it is
 * shown, logged and stored as it is. */
const char *pgio_sqlstate(const PGresult *r);

/* 1 when r is a result of rows rows (-1: any number) of fields columns:
 * what must hold before any PQgetvalue, since a server (or what speaks
 * for it) may answer with another shape, and PQgetvalue out of range is
 * NULL. */
int pgio_shape(const PGresult *r, int rows, int fields);

/* Whether this connection's role may call the function named table
 * followed by suffix, with these argument types (e.g. "_resume",
 * "(text,bigint,double precision,double precision)"): 1 yes, 0 no such
 * function or no EXECUTE, -1 no (good) answer: why in err (the timeout,
 * libpq's message, io->secrets masked, or an answer of another shape). vmq_pgevents_grant
 * makes such functions for a writer role (priv/schema.sql). */
int pgio_may_call(pgio_t *io, const char *table, const char *suffix, const char *args, char *err, size_t errlen);

/* Once, before any connection (the NIF's load): an encrypted sslkey is
 * opened with sslpassword only, never a prompt on the terminal, which
 * would wait for ever (libpq otherwise leaves OpenSSL's prompt in place
 * when sslpassword is unset); without it the connection fails. */
void pgio_init(void);

/* Whether libpq marks this connection option secret (password, sslpassword:
 * its dispchar '*'). */
int pgio_is_secret(const PQconninfoOption *o);
/* The values of the connection string's secret options as such a list
 * (malloc; empty: none); NULL: not parsable, or out of memory. */
char *pgio_conninfo_secrets(const char *conninfo);
char *pgio_secrets_dup(const char *secrets);   /* NULL for NULL or out of memory */
void pgio_secrets_free(char *secrets);         /* zeroed, then freed */

#endif
