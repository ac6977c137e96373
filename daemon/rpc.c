/*
 * rpc.c: one JSON-RPC 2.0 request line in, one reply line out. Validates
 * the envelope (jsonrpc, id, method, params), checks the caller's role,
 * logs mutating calls with the caller's pid and uid, runs the handler from
 * the method table and serialises its result or error.
 *
 * Requests without an id are notifications: they run and get no reply, not
 * even an error, as JSON-RPC 2.0 says. A line that is not a readable
 * request (bad JSON, not an object, no "jsonrpc": "2.0", no method string)
 * gets an error with "id": null. Batches (arrays) are refused with -32600.
 *
 * Every reply is serialised once, into a buffer that starts on the stack.
 * A handler may return its result as a job instead (conn.list): the reply
 * is then written as text around it, and for control.c's clients the job
 * makes the rest over later loop turns (rpc_job_run).
 */
#include "rpc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "loop.h"

int rpc_fail(struct rpc_req *r, int code, const char *fmt, ...)
{
    va_list ap;

    r->code = code;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
    va_end(ap);
    return -1;
}

int rpc_fail_errno(struct rpc_req *r, int code, int err, const char *fmt, ...)
{
    va_list ap;

    r->code = code;
    r->errname = strerrorname_np(-err); /* libuv has no name for some, e.g. ENOEXEC */
    if (!r->errname)
        r->errname = uv_err_name(err);
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
    va_end(ap);
    return -1;
}

int rpc_param_uint(struct rpc_req *r, json_t *params, const char *key, bool required,
                   uint64_t max, uint64_t *out)
{
    json_t *v = params ? json_object_get(params, key) : NULL;

    if (!v) {
        if (required)
            return rpc_fail(r, RPC_INVALID_PARAMS, "params.%s: required", key);
        return 0;
    }
    if (!json_is_integer(v))
        return rpc_fail(r, RPC_INVALID_PARAMS, "params.%s: expected an integer", key);
    if (json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return rpc_fail(r, RPC_INVALID_PARAMS, "params.%s: out of range (0..%" PRIu64 ")",
                        key, max);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

int rpc_param_str(struct rpc_req *r, json_t *params, const char *key, bool required,
                  const char **out)
{
    json_t *v = params ? json_object_get(params, key) : NULL;

    if (!v) {
        if (required)
            return rpc_fail(r, RPC_INVALID_PARAMS, "params.%s: required", key);
        return 0;
    }
    if (!json_is_string(v))
        return rpc_fail(r, RPC_INVALID_PARAMS, "params.%s: expected a string", key);
    *out = json_string_value(v);
    return 0;
}

int rpc_param_bool(struct rpc_req *r, json_t *params, const char *key, bool *out)
{
    json_t *v = params ? json_object_get(params, key) : NULL;

    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return rpc_fail(r, RPC_INVALID_PARAMS, "params.%s: expected true or false", key);
    *out = json_is_true(v);
    return 0;
}

int rpc_params_known(struct rpc_req *r, json_t *params, const char *const *keys)
{
    const char *key;
    json_t *v;

    json_object_foreach(params, key, v)
    {
        size_t i;
        for (i = 0; keys[i] && strcmp(keys[i], key) != 0; i++)
            ;
        if (!keys[i])
            return rpc_fail(r, RPC_INVALID_PARAMS, "params.%s: unknown parameter", key);
    }
    return 0;
}

/* ---- growable text ------------------------------------------------------- */

bool rpc_buf_grow(struct ctl_buf *b, size_t n)
{
    size_t cap = b->cap ? b->cap : 256;
    char *p;

    if (b->failed)
        return false;
    if (b->cap - b->len >= n)
        return true;
    while (cap - b->len < n) {
        if (cap > SIZE_MAX / 2)
            goto fail;
        cap *= 2;
    }
    if (b->on_stack) {
        if ((p = malloc(cap)) && b->len)
            memcpy(p, b->p, b->len);
    } else {
        p = realloc(b->p, cap);
    }
    if (!p)
        goto fail;
    b->p = p;
    b->cap = cap;
    b->on_stack = false;
    return true;
fail:
    b->failed = true;
    return false;
}

void rpc_buf_free(struct ctl_buf *b)
{
    if (!b->on_stack)
        free(b->p);
    memset(b, 0, sizeof(*b));
}

static int rpc_buf_dump_cb(const char *text, size_t len, void *data)
{
    struct ctl_buf *b = data;

    rpc_buf_add(b, text, len);
    return b->failed ? -1 : 0;
}

int rpc_buf_json(struct ctl_buf *b, const json_t *v)
{
    return json_dump_callback(v, rpc_buf_dump_cb, b, JSON_COMPACT | JSON_ENCODE_ANY);
}

bool rpc_buf_str(struct ctl_buf *b, const char *s)
{
    size_t n = 0;
    json_t *j;
    int rc;

    /* Printable ASCII without quote or backslash is its own JSON text;
     * anything else is left to jansson, escapes and UTF-8 checks alike. */
    while (s[n] >= 0x20 && s[n] < 0x7f && s[n] != '"' && s[n] != '\\')
        n++;
    if (!s[n]) {
        if (rpc_buf_grow(b, n + 2)) {
            b->p[b->len++] = '"';
            memcpy(b->p + b->len, s, n);
            b->len += n;
            b->p[b->len++] = '"';
        }
        return true;
    }
    if (!(j = json_string(s)))
        return false;
    rc = rpc_buf_json(b, j);
    json_decref(j);
    return rc == 0;
}

void rpc_buf_int(struct ctl_buf *b, int64_t v)
{
    static const char pairs[] = "00010203040506070809101112131415161718192021222324"
                                "25262728293031323334353637383940414243444546474849"
                                "50515253545556575859606162636465666768697071727374"
                                "75767778798081828384858687888990919293949596979899";
    char tmp[24], *end = tmp + sizeof(tmp), *p = end;
    uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;

    /* Two digits per division: conn.list writes six numbers an entry. */
    while (u >= 100) {
        unsigned d = (unsigned)(u % 100) * 2;
        u /= 100;
        *--p = pairs[d + 1];
        *--p = pairs[d];
    }
    if (u >= 10) {
        *--p = pairs[u * 2 + 1];
        *--p = pairs[u * 2];
    } else {
        *--p = (char)('0' + u);
    }
    if (v < 0)
        *--p = '-';
    rpc_buf_add(b, p, (size_t)(end - p));
}

/* ---- replies ------------------------------------------------------------- */

int rpc_send_json(struct ctl_client *cl, json_t *msg, bool is_event)
{
    char stack[4096];
    struct ctl_buf b = {.p = stack, .cap = sizeof(stack), .on_stack = true};
    int rc;

    /* One pass: the text grows in place (on the stack while it fits). */
    if (rpc_buf_json(&b, msg) < 0)
        rc = -ENOMEM;
    else
        rc = control_send(cl, b.p, b.len, is_event);
    rpc_buf_free(&b);
    return rc;
}

int rpc_job_run(struct ctl_client *cl, uint64_t budget_ns)
{
    struct rpc_job *job = cl->job;
    int done = job->step(job, &cl->job_out, budget_ns);

    if (!done && !cl->job_out.failed)
        return 0;
    cl->job = NULL;
    job->free(job);
    rpc_buf_lit(&cl->job_out, "}");
    return cl->job_out.failed ? -ENOMEM : 1;
}

void rpc_job_cancel(struct ctl_client *cl)
{
    if (cl->job) {
        cl->job->free(cl->job);
        cl->job = NULL;
    }
    rpc_buf_free(&cl->job_out);
}

/* Cut a UTF-8 sequence that a length limit split at the end of s, so that
 * the message stays valid JSON text (jansson refuses invalid UTF-8). */
static void utf8_trim(char *s)
{
    size_t n = strlen(s), i = n, need;

    while (i > 0 && (s[i - 1] & 0xC0) == 0x80 && n - i < 3)
        i--; /* continuation bytes at the end */
    if (i == 0 || !(s[i - 1] & 0x80))
        return;
    unsigned char lead = (unsigned char)s[i - 1];
    need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (n - (i - 1) < need)
        s[i - 1] = '\0';
}

static void rpc_reply_error(struct ctl_client *cl, json_t *id, int code, const char *text,
                            const char *errname)
{
    char msg[320];
    json_t *err;

    snprintf(msg, sizeof(msg), "%s", text);
    utf8_trim(msg);
    err = json_pack("{s:i, s:s}", "code", code, "message", msg);
    if (!err) /* still not valid UTF-8: say what we can */
        err = json_pack("{s:i, s:s}", "code", code, "message", "invalid request");
    json_t *reply;

    if (errname)
        json_object_set_new(err, "data", json_pack("{s:s}", "errno", errname));
    reply = json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id ? id : json_null(),
                      "error", err);
    if (reply)
        rpc_send_json(cl, reply, false);
    json_decref(reply);
}

void rpc_reply_oversized(struct ctl_client *cl)
{
    char msg[64];
    snprintf(msg, sizeof(msg), "request line longer than %d bytes", CTL_LINE_MAX);
    rpc_reply_error(cl, NULL, RPC_INVALID_REQUEST, msg, NULL);
}

/* The reply to request id whose result is job: the envelope, then as much
 * of the result as one step makes. For control.c's clients the rest is made
 * over later loop turns (control.c sees cl->job and queues cl->job_out);
 * otherwise (or when one step was enough) the whole line goes out now. */
static void rpc_job_start(struct ctl_client *cl, struct rpc_job *job, json_t *id)
{
    struct ctl_buf *b = &cl->job_out;
    int rc;

    rpc_buf_lit(b, "{\"jsonrpc\":\"2.0\",\"id\":");
    rpc_buf_json(b, id);
    rpc_buf_lit(b, ",\"result\":");
    cl->job = job;
    rc = rpc_job_run(cl, cl->ctl->jobs_ok ? (uint64_t)CTL_JOB_STEP_US * 1000 : 0);
    if (rc == 0)
        return;
    if (rc == 1)
        control_send(cl, b->p, b->len, false);
    rpc_buf_free(b);
    if (rc < 0)
        rpc_reply_error(cl, id, RPC_INTERNAL_ERROR, "out of memory", NULL);
}

static const struct rpc_method *rpc_find(const char *name)
{
    for (const struct rpc_method *m = rpc_methods; m->name; m++)
        if (strcmp(m->name, name) == 0)
            return m;
    return NULL;
}

/* "control: conn.abort id=42 by pid 812 uid 0" for every mutating call. */
static void rpc_log_mutation(struct ctl_client *cl, const char *method, json_t *params)
{
    json_t *id = params ? json_object_get(params, "id") : NULL;
    json_t *name = params ? json_object_get(params, "name") : NULL;
    char subject[96] = "";

    if (json_is_integer(id))
        snprintf(subject, sizeof(subject), " id=%" JSON_INTEGER_FORMAT,
                 json_integer_value(id));
    else if (json_is_string(name))
        snprintf(subject, sizeof(subject), " name=%.64s", json_string_value(name));
    else if (params && json_object_get(params, "select"))
        snprintf(subject, sizeof(subject), " select");
    log_notice("control: %s%s by pid %d uid %d", method, subject, (int)cl->pid,
               (int)cl->uid);
}

void rpc_handle_line(struct ctl_client *cl, const char *line, size_t len)
{
    struct rpc_req r = {.cl = cl, .lp = cl->ctl->lp};
    const struct rpc_method *m;
    json_t *req, *id, *params, *method, *version, *result = NULL;
    json_error_t jerr;
    char msg[300];

    if (strspn(line, " \t\r") == len)
        return; /* blank lines are ignored */
    if (!(req = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr))) {
        snprintf(msg, sizeof(msg), "parse error: %s", jerr.text);
        rpc_reply_error(cl, NULL, RPC_PARSE_ERROR, msg, NULL);
        return;
    }
    if (!json_is_object(req)) {
        rpc_reply_error(cl, NULL, RPC_INVALID_REQUEST,
                        json_is_array(req) ? "batches are not supported"
                                           : "a request must be a JSON object",
                        NULL);
        goto out;
    }
    id = json_object_get(req, "id");
    if (id && !json_is_integer(id) && !json_is_string(id) && !json_is_null(id)) {
        rpc_reply_error(cl, NULL, RPC_INVALID_REQUEST, "id: expected an integer or string",
                        NULL);
        goto out;
    }
    version = json_object_get(req, "jsonrpc");
    if (!json_is_string(version) || strcmp(json_string_value(version), "2.0") != 0) {
        rpc_reply_error(cl, id, RPC_INVALID_REQUEST, "jsonrpc: expected \"2.0\"", NULL);
        goto out;
    }
    method = json_object_get(req, "method");
    if (!json_is_string(method)) {
        rpc_reply_error(cl, id, RPC_INVALID_REQUEST, "method: expected a string", NULL);
        goto out;
    }
    r.method = json_string_value(method);
    params = json_object_get(req, "params");
    if (params && !json_is_object(params)) {
        if (id)
            rpc_reply_error(cl, id, RPC_INVALID_PARAMS, "params: expected an object", NULL);
        goto out;
    }
    if (!(m = rpc_find(r.method))) {
        snprintf(msg, sizeof(msg), "method not found: %.200s", r.method);
        if (id) /* a notification gets no reply, not even an error */
            rpc_reply_error(cl, id, RPC_METHOD_NOT_FOUND, msg, NULL);
        goto out;
    }
    if (cl->role == CTL_ROLE_NONE || (cl->role == CTL_ROLE_READONLY && !m->readonly)) {
        log_notice("control: %s refused for pid %d uid %d", m->name, (int)cl->pid,
                   (int)cl->uid);
        snprintf(msg, sizeof(msg), "permission denied: %s needs the %s role", m->name,
                 m->readonly ? "read-only" : "admin");
        if (id)
            rpc_reply_error(cl, id, RPC_PERMISSION_DENIED, msg, NULL);
        goto out;
    }
    if (!m->readonly)
        rpc_log_mutation(cl, m->name, params);
    if (m->fn(&r, params, &result) < 0) {
        if (id)
            rpc_reply_error(cl, id, r.code, r.msg, r.errname);
    } else if (r.job) {
        if (id)
            rpc_job_start(cl, r.job, id);
        else
            r.job->free(r.job); /* a notification: nothing to make */
    } else if (id) {
        json_t *reply = json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result",
                                  result ? result : json_null());
        result = NULL;
        if (reply)
            rpc_send_json(cl, reply, false);
        json_decref(reply);
    }
    json_decref(result);
out:
    json_decref(req);
}

void rpc_client_drained(struct ctl_client *cl)
{
    json_t *ev;

    if (!cl->ev_lost || cl->job || cl->out_pending > CTL_EVENT_MAX / 2)
        return;
    ev = json_pack("{s:s, s:s, s:{s:I, s:I, s:s, s:I}}", "jsonrpc", "2.0", "method",
                   "event", "params", "seq", (json_int_t)++cl->ev_seq, "ts_ms",
                   (json_int_t)loop_wall_ms(), "type", "events_lost", "count",
                   (json_int_t)cl->ev_lost);
    cl->ev_lost = 0;
    if (ev)
        rpc_send_json(cl, ev, false);
    json_decref(ev);
}
