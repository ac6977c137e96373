/*
 * rpc.h: JSON-RPC 2.0 over the control socket: request validation, the
 * method table (rpc.methods is generated from it), roles, error codes, and
 * the helpers method handlers use to read params.
 */
#ifndef CONND_RPC_H
#define CONND_RPC_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "control.h"

/* SPEC section 5 error codes. */
#define RPC_PARSE_ERROR -32700
#define RPC_INVALID_REQUEST -32600
#define RPC_METHOD_NOT_FOUND -32601
#define RPC_INVALID_PARAMS -32602
#define RPC_INTERNAL_ERROR -32603
#define RPC_NO_SUCH_CONN -32001
#define RPC_NOT_CONNECTED -32002
#define RPC_PLUGIN_ERROR -32003
#define RPC_LISTENER_ERROR -32004
#define RPC_LIMIT_REACHED -32005
#define RPC_PERMISSION_DENIED -32006

/* A result made in parts (conn.list): a handler sets rpc_req.job instead
 * of its result. rpc.c writes the reply around it and, for a client of
 * control.c, lets control.c make the rest over later loop turns. */
struct rpc_job {
    /* Append the next part of the result's text to out: all of it when
     * budget_ns is 0, else about that much time's worth. Returns 1 once
     * the result is complete, 0 while more is to come. */
    int (*step)(struct rpc_job *j, struct ctl_buf *out, uint64_t budget_ns);
    void (*free)(struct rpc_job *j);
};

/* One request being handled. */
struct rpc_req {
    struct ctl_client *cl;
    struct loop *lp;
    const char *method;
    /* set by rpc_fail */
    int code;
    char msg[256];
    const char *errname; /* "EADDRINUSE": error.data.errno */
    struct rpc_job *job; /* a result made in parts, set instead of *result */
};

/* A handler returns 0 with *result set (a new reference), or -1 after
 * rpc_fail(). */
typedef int (*rpc_fn)(struct rpc_req *r, json_t *params, json_t **result);

struct rpc_method {
    const char *name;
    rpc_fn fn;
    bool readonly;       /* allowed for the read-only role */
    const char *params;  /* for rpc.methods: "{id, data | data_base64}" */
    const char *summary; /* one line */
};

/* Record an error for the reply; returns -1 for `return rpc_fail(...)`. */
int rpc_fail(struct rpc_req *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* As rpc_fail with the errno name of a negative errno in error.data. */
int rpc_fail_errno(struct rpc_req *r, int code, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Param readers: on a missing (when required) or ill-typed member they
 * record -32602 naming it and return -1; absent optional ones return 0 and
 * leave *out alone. */
int rpc_param_uint(struct rpc_req *r, json_t *params, const char *key, bool required,
                   uint64_t max, uint64_t *out);
int rpc_param_str(struct rpc_req *r, json_t *params, const char *key, bool required,
                  const char **out);
int rpc_param_bool(struct rpc_req *r, json_t *params, const char *key, bool *out);
/* Reject members of params not in the NULL-terminated list. */
int rpc_params_known(struct rpc_req *r, json_t *params, const char *const *keys);

/* Handle one request line (NUL-terminated, len bytes); replies through
 * control_send unless it is a notification. */
void rpc_handle_line(struct ctl_client *cl, const char *line, size_t len);
/* Reply -32600 with id null to a line over CTL_LINE_MAX. */
void rpc_reply_oversized(struct ctl_client *cl);
/* The client's output drained: deliver a pending events_lost. */
void rpc_client_drained(struct ctl_client *cl);
/* Serialise (once) and send a JSON value to cl (is_event as control_send). */
int rpc_send_json(struct ctl_client *cl, json_t *msg, bool is_event);

/* For control.c, while cl->job is set: append the next part of cl's reply
 * to cl->job_out, spending about budget_ns (0: all of it). Returns 1 when
 * the reply is complete (its closing brace is in job_out; cl->job is
 * freed and NULL; the newline is the caller's), 0 when more is to come, or
 * -ENOMEM (the job is freed: the reply cannot be finished). */
int rpc_job_run(struct ctl_client *cl, uint64_t budget_ns);
/* Drop cl's reply in progress, if any, and its buffer. */
void rpc_job_cancel(struct ctl_client *cl);

/* ---- growable text (struct ctl_buf) ---- */

/* Make room for n more bytes; false (and b->failed) when out of memory. */
bool rpc_buf_grow(struct ctl_buf *b, size_t n);
void rpc_buf_free(struct ctl_buf *b);

static inline void rpc_buf_add(struct ctl_buf *b, const void *s, size_t n)
{
    if (b->cap - b->len >= n || rpc_buf_grow(b, n)) {
        memcpy(b->p + b->len, s, n);
        b->len += n;
    }
}

#define rpc_buf_lit(b, s) rpc_buf_add(b, s, sizeof(s) - 1)

/* Append a value as JSON text, as jansson's JSON_COMPACT would write it. */
int rpc_buf_json(struct ctl_buf *b, const json_t *v);
/* Append s as a JSON string; false (nothing appended) when s is not valid
 * UTF-8, which no JSON string can carry. */
bool rpc_buf_str(struct ctl_buf *b, const char *s);
/* Append a JSON integer (a uint64_t above INT64_MAX shows negative, as
 * jansson's json_int_t would). */
void rpc_buf_int(struct ctl_buf *b, int64_t v);

/* The method table, NULL-name terminated (methods.c). */
extern const struct rpc_method rpc_methods[];

#endif
