/* pgio.c - bounded libpq calls (see pgio.h). */
#define _GNU_SOURCE   /* explicit_bzero */
#include "pgio.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "deadline.h"

#define SLICE_MS 20   /* the tick runs at least this often while waiting */
#define SECRETS_MAX 16  /* libpq marks two options secret: password, sslpassword */

/* Waits until fd is ready for events. 1: ready; 0: the deadline passed
 * or the tick asked to stop (io->timed_out set); -1: poll failed. */
static int wait_fd(pgio_t *io, int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        int64_t left = deadline - mono_ms();
        int r;

        if (left <= 0 || fd < 0) {
            io->timed_out = 1;
            return 0;
        }
        r = poll(&pfd, 1, left < SLICE_MS ? (int)left : SLICE_MS);
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
        if (io->tick && io->tick(io->ctx)) {
            io->timed_out = 1;
            return 0;
        }
    }
}

/* sends what libpq holds for the server; 0 when all is sent */
static int flush_all(pgio_t *io, int64_t deadline)
{
    for (;;) {
        int f = PQflush(io->conn);
        if (f == 0)
            return 0;
        if (f < 0 || wait_fd(io, PQsocket(io->conn), POLLOUT | POLLIN, deadline) <= 0)
            return -1;
        if (!PQconsumeInput(io->conn))   /* read-ready: take it, then flush on */
            return -1;
    }
}

/* waits until PQgetResult will not block */
static int await_result(pgio_t *io, int64_t deadline)
{
    while (PQisBusy(io->conn)) {
        if (wait_fd(io, PQsocket(io->conn), POLLIN, deadline) <= 0 || !PQconsumeInput(io->conn))
            return -1;
    }
    return 0;
}

PGconn *pgio_connect(pgio_t *io, const char *const *keys, const char *const *vals,
                     char *err, size_t errlen)
{
    int64_t deadline = mono_ms() + io->timeout_ms;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    PGconn *c;

    io->timed_out = 0;
    c = PQconnectStartParams(keys, vals, 1);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (PQstatus(c) == CONNECTION_BAD)
        goto fail;
    while (st != PGRES_POLLING_OK) {
        int r;
        if (st == PGRES_POLLING_FAILED)
            goto fail;
        r = wait_fd(io, PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
        if (r == 0) {
            snprintf(err, errlen, "no answer from the server within %d ms", io->timeout_ms);
            PQfinish(c);
            return NULL;
        }
        if (r < 0)
            goto fail;
        st = PQconnectPoll(c);
    }
    if (PQsetnonblocking(c, 1) != 0)
        goto fail;
    return c;
fail:
    pgio_clean_error(PQerrorMessage(c), io->secrets, err, errlen);
    PQfinish(c);
    return NULL;
}

PGresult *pgio_exec(pgio_t *io, const char *sql, int nparams, const char *const *params)
{
    int64_t deadline = mono_ms() + io->timeout_ms;
    PGresult *last = NULL, *r;
    int sent;

    io->timed_out = 0;
    /* without parameters: the simple protocol, which takes several statements */
    sent = nparams ? PQsendQueryParams(io->conn, sql, nparams, NULL, params, NULL, NULL, 0)
                   : PQsendQuery(io->conn, sql);
    if (!sent || flush_all(io, deadline) < 0)
        return NULL;
    for (;;) {
        ExecStatusType st;
        if (await_result(io, deadline) < 0) {
            PQclear(last);
            return NULL;
        }
        r = PQgetResult(io->conn);
        if (!r)
            return last;
        st = PQresultStatus(r);
        PQclear(last);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH)
            return r;
        last = r;
    }
}

int pgio_put(pgio_t *io, const char *p, size_t n)
{
    int64_t deadline = mono_ms() + io->timeout_ms;

    io->timed_out = 0;
    for (;;) {
        int r = PQputCopyData(io->conn, p, (int)n);
        if (r == 1)
            return 0;
        /* 0: libpq's buffer is full; let the socket drain */
        if (r < 0 || wait_fd(io, PQsocket(io->conn), POLLOUT | POLLIN, deadline) <= 0 ||
            !PQconsumeInput(io->conn) || PQflush(io->conn) < 0)
            return -1;
    }
}

int pgio_end(pgio_t *io, const char *errmsg)
{
    int64_t deadline = mono_ms() + io->timeout_ms;

    io->timed_out = 0;
    for (;;) {
        int r = PQputCopyEnd(io->conn, errmsg);
        if (r == 1)
            return flush_all(io, deadline);
        if (r < 0 || wait_fd(io, PQsocket(io->conn), POLLOUT | POLLIN, deadline) <= 0 ||
            !PQconsumeInput(io->conn) || PQflush(io->conn) < 0)
            return -1;
    }
}

PGresult *pgio_result(pgio_t *io)
{
    int64_t deadline = mono_ms() + io->timeout_ms;

    io->timed_out = 0;
    if (flush_all(io, deadline) < 0 || await_result(io, deadline) < 0)
        return NULL;
    return PQgetResult(io->conn);
}

/* masks every copy of secret in out; the search goes on after each copy,
 * so a secret made of '*' ends too */
static void mask(char *out, const char *secret)
{
    size_t sl = strlen(secret);
    char *p = out;

    while ((p = strstr(p, secret)) != NULL) {
        memset(p, '*', sl);
        p += sl;
    }
}

/* every secret masked in the whole text before it is cut to n: longest
 * first (a secret inside a longer one is masked with it) */
void pgio_clean_error(const char *in, const char *secrets, char *out, size_t n)
{
    size_t len;
    char *p, *all;
    const char *s;

    if (n == 0)
        return;
    in = in ? in : "unknown error";
    all = strdup(in);
    if (!all) {
        snprintf(out, n, "%s", "(the error text is withheld: out of memory)");
        return;
    }
    {
        const char *list[SECRETS_MAX];
        size_t k = 0, i, j;
        for (s = secrets; s && *s && k < SECRETS_MAX; s += strlen(s) + 1)
            list[k++] = s;
        for (i = 1; i < k; i++)   /* longest first */
            for (j = i; j > 0 && strlen(list[j]) > strlen(list[j - 1]); j--) {
                const char *t = list[j];
                list[j] = list[j - 1];
                list[j - 1] = t;
            }
        for (i = 0; i < k; i++)
            mask(all, list[i]);
    }
    snprintf(out, n, "%s", all);
    explicit_bzero(all, strlen(in));
    free(all);
    len = strlen(out);
    while (len && (out[len - 1] == '\n' || out[len - 1] == ' '))
        out[--len] = '\0';
    for (p = out; *p; p++)
        if (*p == '\n')
            *p = ' ';
}

int pgio_may_call(pgio_t *io, const char *table, const char *suffix, const char *args, char *err, size_t errlen)
{
    const char *params[3] = {table, suffix, args};
    PGresult *r = pgio_exec(io,
                            "SELECT coalesce(has_function_privilege("
                            "to_regprocedure(quote_ident($1 || $2) || $3), 'EXECUTE'), false)",
                            3, params);
    int ok = pgio_shape(r, 1, 1), yes = ok && PQgetvalue(r, 0, 0)[0] == 't';

    if (ok)
        ;
    else if (io->timed_out)
        snprintf(err, errlen, "no answer from the server within %d ms", io->timeout_ms);
    else if (r && PQresultStatus(r) == PGRES_TUPLES_OK)
        snprintf(err, errlen, "an answer of an unexpected shape (%d rows of %d columns)", PQntuples(r), PQnfields(r));
    else
        pgio_clean_error(r ? PQresultErrorMessage(r) : PQerrorMessage(io->conn), io->secrets, err, errlen);
    PQclear(r);
    return ok ? yes : -1;
}

const char *pgio_sqlstate(const PGresult *r)
{
    const char *s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    size_t i;

    for (i = 0; s && i < 5; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
            return NULL;
    return s && s[5] == '\0' ? s : NULL;
}

int pgio_shape(const PGresult *r, int rows, int fields)
{
    return PQresultStatus(r) == PGRES_TUPLES_OK && (rows < 0 || PQntuples(r) == rows) &&
           PQnfields(r) == fields;
}

int pgio_is_secret(const PQconninfoOption *o)
{
    return o->dispchar && strchr(o->dispchar, '*') != NULL;
}

void pgio_init(void)
{
    PQsetSSLKeyPassHook_OpenSSL(PQdefaultSSLKeyPassHook_OpenSSL);
}

char *pgio_conninfo_secrets(const char *conninfo)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL), *o;
    size_t n = 1;
    char *out, *p;

    if (!opts)
        return NULL;
    for (o = opts; o->keyword; o++)
        if (pgio_is_secret(o) && o->val && *o->val)
            n += strlen(o->val) + 1;
    out = malloc(n);
    if (out) {
        p = out;
        for (o = opts; o->keyword; o++)
            if (pgio_is_secret(o) && o->val && *o->val) {
                size_t k = strlen(o->val) + 1;
                memcpy(p, o->val, k);
                p += k;
            }
        *p = '\0';
    }
    for (o = opts; o->keyword; o++)   /* libpq's copies too */
        if (pgio_is_secret(o) && o->val)
            explicit_bzero(o->val, strlen(o->val));
    PQconninfoFree(opts);
    return out;
}

static size_t secrets_len(const char *secrets)
{
    const char *s = secrets;

    while (*s)
        s += strlen(s) + 1;
    return (size_t)(s - secrets) + 1;
}

char *pgio_secrets_dup(const char *secrets)
{
    size_t n;
    char *out;

    if (!secrets)
        return NULL;
    n = secrets_len(secrets);
    out = malloc(n);
    if (out)
        memcpy(out, secrets, n);
    return out;
}

void pgio_secrets_free(char *secrets)
{
    if (!secrets)
        return;
    explicit_bzero(secrets, secrets_len(secrets));
    free(secrets);
}
