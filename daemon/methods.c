/*
 * methods.c: the control methods of SPEC section 5. Each handler maps
 * params to a result (or an error through rpc_fail) by calling the same
 * functions plugins reach through the host table; it owns no state.
 * The table at the end is the single list of methods: dispatch, roles and
 * rpc.methods all come from it.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "connect.h"
#include "control.h"
#include "events.h"
#include "listener.h"
#include "log.h"
#include "loop.h"
#include "plugin.h"
#include "rpc.h"

#define ID_MAX ((uint64_t)1 << 53) /* ids stay exact in every JSON reader */

/* ---- helpers ------------------------------------------------------------ */

/* Decimal digits of v at p; returns the end. */
static char *put_uint(char *p, unsigned v)
{
    char tmp[10];
    int n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* c's local or remote address as listener_format_addr writes it
 * ("1.2.3.4:80", "[::1]:80") into buf (64 bytes); returns its length, or 0
 * when there is none (connecting, closed, or no longer connected). The two
 * system calls were most of conn.list's time: the local address of a
 * connection accepted on a listener bound to one address is the listener's,
 * without asking. IPv4 is formatted here: inet_ntop and snprintf cost more
 * than the system call. */
static size_t conn_addr(const struct conn *c, bool peer, char *buf)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int fd = conn_fd(c);
    size_t n;

    if (fd < 0)
        return 0;
    if (!peer && c->listener && c->listener->local[0] &&
        strncmp(c->listener->local, "0.0.0.0:", 8) != 0 &&
        strncmp(c->listener->local, "[::]:", 5) != 0) {
        /* Accepted on a listener bound to one address: that is the local
         * address (the listener's struct keeps its own socket's address
         * for life; a rebind on reload makes a new listener). */
        n = strlen(c->listener->local);
        memcpy(buf, c->listener->local, n + 1);
        return n;
    }
    if ((peer ? getpeername(fd, (struct sockaddr *)&ss, &len)
              : getsockname(fd, (struct sockaddr *)&ss, &len)) < 0)
        return 0;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
        const uint8_t *a = (const uint8_t *)&s4->sin_addr;
        char *p = buf;
        for (int i = 0; i < 4; i++) {
            p = put_uint(p, a[i]);
            *p++ = i < 3 ? '.' : ':';
        }
        p = put_uint(p, ntohs(s4->sin_port));
        *p = '\0';
        return (size_t)(p - buf);
    }
    listener_format_addr((struct sockaddr *)&ss, buf, 64);
    return strlen(buf);
}

static json_t *mute_reasons_json(const struct conn *c)
{
    json_t *a = json_array();
    for (int i = 0; i < LOOP_MAX_MUTE_REASONS; i++)
        if (c->mute_mask & (1u << i))
            json_array_append_new(a, json_string(c->lp->mute_reasons[i]));
    return a;
}

static void buf_bool(struct ctl_buf *b, bool v)
{
    if (v)
        rpc_buf_lit(b, "true");
    else
        rpc_buf_lit(b, "false");
}

/* Append c's conn.list entry as JSON text, written directly: no jansson
 * tree per entry. `now` is the loop time for idle_ms. Names that are not
 * valid UTF-8 (impossible for listener and plugin names, which config.c
 * checks) show as null; such a mute reason is left out. */
static void conn_entry(struct ctl_buf *b, const struct conn *c, uint64_t now)
{
    char addr[64];
    size_t n;
    bool first = true;

    rpc_buf_lit(b, "{\"id\":");
    rpc_buf_int(b, (int64_t)c->id);
    rpc_buf_lit(b, ",\"listener\":");
    if (!c->listener || !rpc_buf_str(b, c->listener->name))
        rpc_buf_lit(b, "null");
    rpc_buf_lit(b, ",\"plugin\":");
    if (!rpc_buf_str(b, c->plugin->name))
        rpc_buf_lit(b, "null");
    rpc_buf_lit(b, ",\"state\":");
    rpc_buf_str(b, conn_state_name(c));
    for (int peer = 0; peer < 2; peer++) {
        if (peer)
            rpc_buf_lit(b, ",\"remote\":");
        else
            rpc_buf_lit(b, ",\"local\":");
        if ((n = conn_addr(c, peer, addr)) > 0) {
            rpc_buf_lit(b, "\"");
            rpc_buf_add(b, addr, n); /* digits, dots, colons, brackets, hex */
            rpc_buf_lit(b, "\"");
        } else {
            rpc_buf_lit(b, "null");
        }
    }
    rpc_buf_lit(b, ",\"bytes_in\":");
    rpc_buf_int(b, (int64_t)c->bytes_in);
    rpc_buf_lit(b, ",\"bytes_out\":");
    rpc_buf_int(b, (int64_t)c->bytes_out);
    rpc_buf_lit(b, ",\"pending\":");
    rpc_buf_int(b, (int64_t)c->pending);
    rpc_buf_lit(b, ",\"muted\":");
    buf_bool(b, c->mute_mask != 0);
    rpc_buf_lit(b, ",\"mute_reasons\":[");
    for (int i = 0; i < LOOP_MAX_MUTE_REASONS && c->mute_mask >> i; i++) {
        size_t mark = b->len;
        if (!(c->mute_mask & (1u << i)))
            continue;
        if (!first)
            rpc_buf_lit(b, ",");
        if (rpc_buf_str(b, c->lp->mute_reasons[i]))
            first = false;
        else if (!b->failed)
            b->len = mark;
    }
    rpc_buf_lit(b, "],\"throttled\":");
    buf_bool(b, c->throttled);
    rpc_buf_lit(b, ",\"created_ms\":");
    rpc_buf_int(b, (int64_t)c->created_ms);
    rpc_buf_lit(b, ",\"idle_ms\":");
    rpc_buf_int(b, (int64_t)(now > c->last_active_ms ? now - c->last_active_ms : 0));
    rpc_buf_lit(b, "}");
}

/* conn.show: the conn.list entry (parsed back, so both have one source)
 * plus the details. */
static json_t *conn_json(const struct conn *c)
{
    char stack[1024];
    struct ctl_buf b = {.p = stack, .cap = sizeof(stack), .on_stack = true};
    json_t *o;

    conn_entry(&b, c, uv_now(&c->lp->uv));
    o = b.failed ? NULL : json_loadb(b.p, b.len, 0, NULL);
    rpc_buf_free(&b);
    if (o) {
        int fd = conn_fd(c), nodelay = 0, keepalive = 0, rcvbuf = 0, sndbuf = 0;
        socklen_t il = sizeof(int);
        if (fd >= 0) {
            getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &il);
            il = sizeof(int);
            getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &keepalive, &il);
            il = sizeof(int);
            getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &il);
            il = sizeof(int);
            getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &il);
        }
        json_object_set_new(o, "sockopts",
                            json_pack("{s:b, s:b, s:i, s:i}", "nodelay", nodelay, "keepalive",
                                      keepalive, "rcvbuf", rcvbuf, "sndbuf", sndbuf));
        json_object_set_new(o, "expect", json_integer((json_int_t)c->expect));
        json_object_set_new(o, "read_buffer", json_integer((json_int_t)c->rcap));
        json_object_set_new(o, "buffered", json_integer((json_int_t)(c->rlen - c->roff)));
        json_object_set_new(o, "relay",
                            c->relay ? json_integer((json_int_t)c->relay->id) : json_null());
        if (c->plugin->notify.show && c->state != CONN_CLOSED) {
            char buf[2048];
            int n = c->plugin->notify.show(c->plugin->state, (struct connd_conn *)c, buf,
                                           sizeof(buf));
            json_t *info = n > 0 && (size_t)n < sizeof(buf) ? json_loadb(buf, (size_t)n, 0, NULL)
                                                           : NULL;
            if (json_is_object(info))
                json_object_set_new(o, "plugin_info", info);
            else
                json_decref(info);
        }
        json_object_set_new(o, "limits",
                            json_pack("{s:I, s:I, s:I, s:I, s:I}", "init_size",
                                      (json_int_t)c->lim.init_size, "max_size",
                                      (json_int_t)c->lim.max_size, "high_watermark",
                                      (json_int_t)c->lim.high_watermark, "low_watermark",
                                      (json_int_t)c->lim.low_watermark, "max_pending",
                                      (json_int_t)c->lim.max_pending));
    }
    return o;
}

/* The connection named by params.id: -32602 for a bad id, -32001 for an
 * unknown one. */
static struct conn *conn_param(struct rpc_req *r, json_t *params)
{
    uint64_t id = 0;
    struct conn *c;

    if (rpc_param_uint(r, params, "id", true, ID_MAX, &id) < 0)
        return NULL;
    if (id == 0) {
        rpc_fail(r, RPC_INVALID_PARAMS, "params.id: expected a positive integer");
        return NULL;
    }
    c = idmap_get(&r->lp->by_id, id);
    if (!c || c->state == CONN_CLOSED) {
        rpc_fail(r, RPC_NO_SUCH_CONN, "no such connection: %" PRIu64, id);
        return NULL;
    }
    return c;
}

/* ---- bulk selection ----------------------------------------------------- */

struct selector {
    const char *listener, *plugin, *remote_prefix;
    uint64_t idle_ms_gt;
    bool has_idle;
};

static int selector_parse(struct rpc_req *r, json_t *sel, struct selector *s)
{
    static const char *const keys[] = {"listener", "plugin", "remote_prefix", "idle_ms_gt",
                                       NULL};
    const char *key;
    json_t *v;

    memset(s, 0, sizeof(*s));
    if (!json_is_object(sel))
        return rpc_fail(r, RPC_INVALID_PARAMS, "params.select: expected an object");
    json_object_foreach(sel, key, v)
    {
        size_t i;
        for (i = 0; keys[i] && strcmp(keys[i], key) != 0; i++)
            ;
        if (!keys[i])
            return rpc_fail(r, RPC_INVALID_PARAMS, "params.select.%s: unknown selector", key);
        if (i < 3 && !json_is_string(v))
            return rpc_fail(r, RPC_INVALID_PARAMS, "params.select.%s: expected a string", key);
    }
    s->listener = json_string_value(json_object_get(sel, "listener"));
    s->plugin = json_string_value(json_object_get(sel, "plugin"));
    s->remote_prefix = json_string_value(json_object_get(sel, "remote_prefix"));
    /* An empty selector would match every connection: ask for intent. */
    if (json_object_size(sel) == 0)
        return rpc_fail(r, RPC_INVALID_PARAMS,
                        "params.select: give at least one of listener, plugin, "
                        "remote_prefix, idle_ms_gt");
    if ((v = json_object_get(sel, "idle_ms_gt"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return rpc_fail(r, RPC_INVALID_PARAMS,
                            "params.select.idle_ms_gt: expected a non-negative integer");
        s->idle_ms_gt = (uint64_t)json_integer_value(v);
        s->has_idle = true;
    }
    return 0;
}

static bool selector_match(const struct selector *s, const struct conn *c, uint64_t now)
{
    if (c->state == CONN_CLOSED)
        return false;
    if (s->listener && (!c->listener || strcmp(c->listener->name, s->listener) != 0))
        return false;
    if (s->plugin && strcmp(c->plugin->name, s->plugin) != 0)
        return false;
    if (s->has_idle && now - c->last_active_ms <= s->idle_ms_gt)
        return false;
    if (s->remote_prefix) {
        char remote[64];
        if (!conn_addr(c, true, remote) ||
            strncmp(remote, s->remote_prefix, strlen(s->remote_prefix)) != 0)
            return false;
    }
    return true;
}

enum bulk_op { BULK_CLOSE, BULK_ABORT, BULK_MUTE, BULK_UNMUTE };

static void bulk_apply(struct conn *c, enum bulk_op op)
{
    switch (op) {
    case BULK_CLOSE:
        conn_close(c, "ctl close");
        break;
    case BULK_ABORT:
        conn_abort(c, "ctl abort");
        break;
    case BULK_MUTE:
        conn_mute(c, MUTE_CTL);
        break;
    case BULK_UNMUTE:
        conn_unmute(c, MUTE_CTL);
        break;
    }
}

/* {id} or {select, dry_run}: the per-connection methods that also take a
 * selector. */
static int conn_op(struct rpc_req *r, json_t *params, json_t **result, enum bulk_op op)
{
    static const char *const keys[] = {"id", "select", "dry_run", NULL};
    json_t *sel = params ? json_object_get(params, "select") : NULL;
    struct selector s;
    bool dry = false;
    struct conn *c;

    if (params && rpc_params_known(r, params, keys) < 0)
        return -1;
    if (rpc_param_bool(r, params, "dry_run", &dry) < 0)
        return -1;
    if (sel) {
        uint64_t now = uv_now(&r->lp->uv);
        json_t *ids;
        if (json_object_get(params, "id"))
            return rpc_fail(r, RPC_INVALID_PARAMS, "params: give id or select, not both");
        if (selector_parse(r, sel, &s) < 0)
            return -1;
        ids = json_array();
        /* Match first, then act: acting may close connections. */
        for (struct list *n = r->lp->conns.next; n != &r->lp->conns; n = n->next) {
            c = container_of(n, struct conn, link);
            if (selector_match(&s, c, now))
                json_array_append_new(ids, json_integer((json_int_t)c->id));
        }
        if (!dry) {
            size_t i;
            json_t *v;
            json_array_foreach(ids, i, v)
            {
                c = idmap_get(&r->lp->by_id, (uint64_t)json_integer_value(v));
                if (c && c->state != CONN_CLOSED)
                    bulk_apply(c, op);
            }
        }
        *result = json_pack("{s:o, s:I, s:b}", "matched", ids, "count",
                            (json_int_t)json_array_size(ids), "dry_run", dry);
        return 0;
    }
    if (!(c = conn_param(r, params)))
        return -1;
    if (dry) {
        *result = json_pack("{s:[I], s:I, s:b}", "matched", (json_int_t)c->id, "count",
                            (json_int_t)1, "dry_run", 1);
        return 0;
    }
    bulk_apply(c, op);
    switch (op) {
    case BULK_MUTE:
    case BULK_UNMUTE:
        *result = json_pack("{s:I, s:b, s:o}", "id", (json_int_t)c->id, "muted",
                            c->mute_mask != 0, "mute_reasons", mute_reasons_json(c));
        break;
    default:
        *result = json_pack("{s:I, s:s}", "id", (json_int_t)c->id, "state",
                            conn_state_name(c));
    }
    return 0;
}

static int m_conn_close(struct rpc_req *r, json_t *p, json_t **res)
{
    return conn_op(r, p, res, BULK_CLOSE);
}

static int m_conn_abort(struct rpc_req *r, json_t *p, json_t **res)
{
    return conn_op(r, p, res, BULK_ABORT);
}

static int m_conn_mute(struct rpc_req *r, json_t *p, json_t **res)
{
    return conn_op(r, p, res, BULK_MUTE);
}

static int m_conn_unmute(struct rpc_req *r, json_t *p, json_t **res)
{
    return conn_op(r, p, res, BULK_UNMUTE);
}

/* ---- connections --------------------------------------------------------- */

static int m_status(struct rpc_req *r, json_t *p, json_t **res)
{
    size_t n_listeners = 0, n_plugins = 0;

    (void)p;
    for (struct listener *l = r->lp->listeners; l; l = l->next)
        n_listeners += !l->closed;
    for (struct plugin *pl = r->lp->plugins; pl; pl = pl->next)
        n_plugins++;
    *res = json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:b, s:I}", "version", CONND_VERSION,
                     "pid", (int)getpid(), "uptime_ms",
                     (json_int_t)(loop_wall_ms() - r->lp->start_ms), "connections",
                     (json_int_t)r->lp->n_conns, "listeners", (json_int_t)n_listeners,
                     "plugins", (json_int_t)n_plugins, "stopping", r->lp->stopping,
                     "spliced_bytes", (json_int_t)r->lp->spliced_bytes);
    return 0;
}

/* conn.list, made in parts (see struct rpc_job): for a client of
 * control.c, a large list takes several loop turns, so the cursor must
 * survive connections closing in between. It remembers the last connection
 * looked at by pointer and id; ids grow along lp->conns (conn.c numbers a
 * connection as it appends it), so when that one is gone the next is the
 * first with a larger id. Connections made after the request are left out,
 * so the reply ends however fast new ones come. */
struct list_job {
    struct rpc_job job;
    struct loop *lp;
    char *listener;    /* only its connections, or NULL */
    struct conn *last; /* the last connection looked at, or NULL */
    uint64_t last_id;
    uint64_t end_id; /* the newest connection's id when asked */
    size_t n;        /* entries written */
    bool opened;     /* "[" written */
};

/* The node after the last connection looked at. */
static struct list *list_job_next(struct list_job *lj)
{
    struct list *head = &lj->lp->conns, *n;
    struct conn *c;

    if (!lj->last)
        return head->next;
    if (lj->last_id >= lj->end_id)
        return head; /* the rest came after the request */
    if (idmap_get(&lj->lp->by_id, lj->last_id) == lj->last)
        return lj->last->link.next; /* still there */
    /* Gone: the next live id is usually close by; else walk from the start. */
    for (uint64_t id = lj->last_id + 1; id <= lj->end_id && id <= lj->last_id + 64; id++)
        if ((c = idmap_get(&lj->lp->by_id, id)))
            return &c->link;
    for (n = head->next; n != head; n = n->next)
        if (container_of(n, struct conn, link)->id > lj->last_id)
            return n;
    return head;
}

static int list_job_step(struct rpc_job *j, struct ctl_buf *out, uint64_t budget_ns)
{
    struct list_job *lj = (struct list_job *)j;
    struct list *head = &lj->lp->conns, *n;
    uint64_t now = uv_now(&lj->lp->uv), start = budget_ns ? uv_hrtime() : 0;
    unsigned k = 0;

    if (!lj->opened) {
        rpc_buf_lit(out, "[");
        lj->opened = true;
    }
    for (n = list_job_next(lj); n != head; n = n->next) {
        struct conn *c = container_of(n, struct conn, link);
        if (c->id > lj->end_id)
            break;
        lj->last = c;
        lj->last_id = c->id;
        if (c->state != CONN_CLOSED &&
            (!lj->listener ||
             (c->listener && strcmp(c->listener->name, lj->listener) == 0))) {
            if (lj->n++)
                rpc_buf_lit(out, ",");
            conn_entry(out, c, now);
        }
        /* Check the clock every 16 connections looked at. */
        if (budget_ns && ++k % 16 == 0 &&
            (out->len >= CTL_JOB_CHUNK || uv_hrtime() - start >= budget_ns ||
             out->failed))
            return 0;
    }
    rpc_buf_lit(out, "]");
    return 1;
}

static void list_job_free(struct rpc_job *j)
{
    struct list_job *lj = (struct list_job *)j;

    free(lj->listener);
    free(lj);
}

static int m_conn_list(struct rpc_req *r, json_t *params, json_t **res)
{
    static const char *const keys[] = {"listener", NULL};
    const char *listener = NULL;
    struct list_job *lj;

    (void)res;
    if ((params && rpc_params_known(r, params, keys) < 0) ||
        rpc_param_str(r, params, "listener", false, &listener) < 0)
        return -1;
    if (!(lj = calloc(1, sizeof(*lj))) ||
        (listener && !(lj->listener = strdup(listener)))) {
        free(lj);
        return rpc_fail(r, RPC_INTERNAL_ERROR, "out of memory");
    }
    lj->job.step = list_job_step;
    lj->job.free = list_job_free;
    lj->lp = r->lp;
    lj->end_id = r->lp->next_conn_id;
    r->job = &lj->job;
    return 0;
}

static int m_conn_show(struct rpc_req *r, json_t *params, json_t **res)
{
    static const char *const keys[] = {"id", NULL};
    struct conn *c;

    if ((params && rpc_params_known(r, params, keys) < 0) || !(c = conn_param(r, params)))
        return -1;
    *res = conn_json(c);
    return 0;
}

/* Strict base64 (RFC 4648, padding required); returns the length or -1. */
static long base64_decode(const char *in, size_t len, uint8_t *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = 0;

    if (len % 4)
        return -1;
    for (size_t i = 0; i < len; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            const char *pos;
            char ch = in[i + k];
            if (ch == '=' && i + 4 == len && k >= 2) {
                pad++;
                v <<= 6;
                continue;
            }
            if (pad || ch == '\0' || !(pos = strchr(alphabet, ch)))
                return -1;
            v = (v << 6) | (uint32_t)(pos - alphabet);
        }
        out[n++] = (uint8_t)(v >> 16);
        if (pad < 2)
            out[n++] = (uint8_t)(v >> 8);
        if (pad < 1)
            out[n++] = (uint8_t)v;
    }
    return (long)n;
}

static int m_conn_write(struct rpc_req *r, json_t *params, json_t **res)
{
    static const char *const keys[] = {"id", "data", "data_base64", NULL};
    json_t *text = params ? json_object_get(params, "data") : NULL;
    json_t *b64 = params ? json_object_get(params, "data_base64") : NULL;
    const uint8_t *data;
    uint8_t *decoded = NULL;
    size_t len;
    struct conn *c;
    int rc;

    if ((params && rpc_params_known(r, params, keys) < 0) || !(c = conn_param(r, params)))
        return -1;
    if (!text == !b64)
        return rpc_fail(r, RPC_INVALID_PARAMS, "params: give exactly one of data, data_base64");
    if (text) {
        if (!json_is_string(text))
            return rpc_fail(r, RPC_INVALID_PARAMS, "params.data: expected a string");
        data = (const uint8_t *)json_string_value(text);
        len = json_string_length(text);
    } else {
        long n;
        if (!json_is_string(b64))
            return rpc_fail(r, RPC_INVALID_PARAMS, "params.data_base64: expected a string");
        if (!(decoded = malloc(json_string_length(b64) / 4 * 3 + 3)))
            return rpc_fail(r, RPC_INTERNAL_ERROR, "out of memory");
        n = base64_decode(json_string_value(b64), json_string_length(b64), decoded);
        if (n < 0) {
            free(decoded);
            return rpc_fail(r, RPC_INVALID_PARAMS, "params.data_base64: invalid base64");
        }
        data = decoded;
        len = (size_t)n;
    }
    if (c->state != CONN_OPEN && c->state != CONN_CONNECTING) {
        free(decoded);
        return rpc_fail(r, RPC_NOT_CONNECTED, "connection %" PRIu64 " is %s", c->id,
                        conn_state_name(c));
    }
    rc = len ? conn_write_token(c, data, len, ++r->lp->next_write_token) : 0;
    free(decoded);
    if (rc == -ENOBUFS)
        return rpc_fail_errno(r, RPC_LIMIT_REACHED, rc,
                              "connection %" PRIu64 ": %zu bytes pending, max_pending %zu",
                              c->id, c->pending, c->lim.max_pending);
    if (rc < 0)
        return rpc_fail_errno(r, RPC_NOT_CONNECTED, rc, "connection %" PRIu64 ": %s", c->id,
                              uv_strerror(rc));
    *res = json_pack("{s:I, s:I, s:I}", "id", (json_int_t)c->id, "queued", (json_int_t)len,
                     "token", (json_int_t)(len ? r->lp->next_write_token : 0));
    return 0;
}

/* A port param: a number 1..65535 or a non-empty string. */
static int port_param(struct rpc_req *r, json_t *params, char *buf, size_t len)
{
    json_t *v = json_object_get(params, "port");

    if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) < 65536)
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) < len)
        snprintf(buf, len, "%s", json_string_value(v));
    else
        return rpc_fail(r, RPC_INVALID_PARAMS,
                        "params.port: expected a port number or service name");
    return 0;
}

static int m_conn_connect(struct rpc_req *r, json_t *params, json_t **res)
{
    static const char *const keys[] = {"host", "port", "plugin", "from", "family", NULL};
    const char *host = NULL, *plugin = NULL, *from = NULL, *family = "any";
    struct connect_params prm = {0};
    char port[64];
    struct plugin *p;
    struct conn *c;
    int rc;

    if ((params && rpc_params_known(r, params, keys) < 0) ||
        rpc_param_str(r, params, "host", true, &host) < 0 ||
        rpc_param_str(r, params, "plugin", true, &plugin) < 0 ||
        rpc_param_str(r, params, "from", false, &from) < 0 ||
        rpc_param_str(r, params, "family", false, &family) < 0 ||
        port_param(r, params, port, sizeof(port)) < 0)
        return -1;
    if (!host[0])
        return rpc_fail(r, RPC_INVALID_PARAMS, "params.host: must not be empty");
    if (strcmp(family, "any") == 0)
        prm.family = CONFIG_FAMILY_ANY;
    else if (strcmp(family, "ipv4") == 0)
        prm.family = CONFIG_FAMILY_IPV4;
    else if (strcmp(family, "ipv6") == 0)
        prm.family = CONFIG_FAMILY_IPV6;
    else
        return rpc_fail(r, RPC_INVALID_PARAMS,
                        "params.family: expected \"any\", \"ipv4\" or \"ipv6\"");
    if (!(p = plugin_find(r->lp, plugin)))
        return rpc_fail(r, RPC_PLUGIN_ERROR, "no plugin named \"%s\"", plugin);
    if (r->lp->stopping)
        return rpc_fail(r, RPC_LIMIT_REACHED, "connd is shutting down");
    prm.from = from;
    if ((rc = connect_start(r->lp, p, host, port, &prm, &c)) == -EINVAL)
        return rpc_fail_errno(r, RPC_INVALID_PARAMS, rc, "params.from: not an IP address");
    if (rc < 0)
        return rpc_fail_errno(r, RPC_INTERNAL_ERROR, rc, "connect: %s", uv_strerror(rc));
    log_info("conn %" PRIu64 ": connecting to %s:%s for plugin %s (ctl)", c->id, host, port,
             p->name);
    *res = json_pack("{s:I}", "id", (json_int_t)c->id);
    return 0;
}

static int m_conn_set_notify(struct rpc_req *r, json_t *params, json_t **res)
{
    static const char *const keys[] = {"id", "plugin", NULL};
    const char *name = NULL;
    struct plugin *p;
    struct conn *c;

    if ((params && rpc_params_known(r, params, keys) < 0) || !(c = conn_param(r, params)) ||
        rpc_param_str(r, params, "plugin", true, &name) < 0)
        return -1;
    if (!(p = plugin_find(r->lp, name)))
        return rpc_fail(r, RPC_PLUGIN_ERROR, "no plugin named \"%s\"", name);
    if (conn_set_notify(c, p) < 0)
        return rpc_fail(r, RPC_NOT_CONNECTED, "connection %" PRIu64 " is %s", c->id,
                        conn_state_name(c));
    *res = json_pack("{s:I, s:s}", "id", (json_int_t)c->id, "plugin", p->name);
    return 0;
}

static int m_conn_setopt(struct rpc_req *r, json_t *params, json_t **res)
{
    static const char *const keys[] = {"id", "nodelay", "keepalive_s", "rcvbuf", "sndbuf",
                                       NULL};
    bool nodelay = false;
    uint64_t keep = 0, rcvbuf = 0, sndbuf = 0;
    json_t *applied;
    struct conn *c;
    int fd, rc = 0;

    if ((params && rpc_params_known(r, params, keys) < 0) || !(c = conn_param(r, params)) ||
        rpc_param_bool(r, params, "nodelay", &nodelay) < 0 ||
        rpc_param_uint(r, params, "keepalive_s", false, 86400, &keep) < 0 ||
        rpc_param_uint(r, params, "rcvbuf", false, 1 << 30, &rcvbuf) < 0 ||
        rpc_param_uint(r, params, "sndbuf", false, 1 << 30, &sndbuf) < 0)
        return -1;
    if ((fd = conn_fd(c)) < 0 || c->state != CONN_OPEN)
        return rpc_fail(r, RPC_NOT_CONNECTED, "connection %" PRIu64 " is %s", c->id,
                        conn_state_name(c));
    applied = json_pack("{s:I}", "id", (json_int_t)c->id);
    if (json_object_get(params, "nodelay") && !rc &&
        !(rc = uv_tcp_nodelay(&c->tcp, nodelay)))
        json_object_set_new(applied, "nodelay", json_boolean(nodelay));
    if (json_object_get(params, "keepalive_s") && !rc &&
        !(rc = uv_tcp_keepalive(&c->tcp, keep > 0, (unsigned)keep)))
        json_object_set_new(applied, "keepalive_s", json_integer((json_int_t)keep));
    if (json_object_get(params, "rcvbuf") && !rc) {
        int v = (int)rcvbuf;
        rc = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v)) < 0 ? -errno : 0;
        if (!rc)
            json_object_set_new(applied, "rcvbuf", json_integer((json_int_t)rcvbuf));
    }
    if (json_object_get(params, "sndbuf") && !rc) {
        int v = (int)sndbuf;
        rc = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)) < 0 ? -errno : 0;
        if (!rc)
            json_object_set_new(applied, "sndbuf", json_integer((json_int_t)sndbuf));
    }
    if (rc < 0) {
        /* Say which options took effect before the one that failed. */
        char *done = json_dumps(applied, JSON_COMPACT);
        json_decref(applied);
        rpc_fail_errno(r, RPC_INVALID_PARAMS, rc, "setsockopt: %s; applied before it: %s",
                       uv_strerror(rc), done ? done : "?");
        free(done);
        return -1;
    }
    *res = applied;
    return 0;
}

/* ---- listeners ---------------------------------------------------------- */

static json_t *listener_json(const struct listener *l)
{
    static const char *const why[] = {"limit", "emfile", "ctl", "max_connections"};
    json_t *paused = json_array();

    for (unsigned i = 0; i < 4; i++)
        if (l->paused & (1u << i))
            json_array_append_new(paused, json_string(why[i]));
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:o, s:I}", "name", l->name, "local",
                     l->local, "plugin", l->plugin->name, "limit", (json_int_t)l->limit,
                     "accepted", (json_int_t)l->accepted, "active", (json_int_t)l->active,
                     "paused", paused, "emfile_pauses", (json_int_t)l->emfile_pauses);
}

static int m_listener_list(struct rpc_req *r, json_t *p, json_t **res)
{
    json_t *a = json_array();

    (void)p;
    for (struct listener *l = r->lp->listeners; l; l = l->next)
        if (!l->closed)
            json_array_insert_new(a, 0, listener_json(l)); /* list is newest first */
    *res = a;
    return 0;
}

static int m_listener_add(struct rpc_req *r, json_t *params, json_t **res)
{
    struct config_listener cl;
    struct listener *l;
    struct plugin *p;
    char err[300];
    int rc;

    if (config_parse_listener(params, "params", &cl, err, sizeof(err)) < 0)
        return rpc_fail(r, RPC_INVALID_PARAMS, "%s", err);
    if (r->lp->stopping)
        rc = rpc_fail(r, RPC_LIMIT_REACHED, "connd is shutting down");
    else if (listener_find(r->lp, cl.name))
        rc = rpc_fail(r, RPC_LISTENER_ERROR, "listener %s already exists", cl.name);
    else if (!(p = plugin_find(r->lp, cl.plugin)))
        rc = rpc_fail(r, RPC_PLUGIN_ERROR, "no plugin named \"%s\"", cl.plugin);
    else if ((rc = listener_start(r->lp, &cl, p, &l)) < 0)
        rc = rpc_fail_errno(r, RPC_LISTENER_ERROR, rc, "listener %s: %s:%s: %s", cl.name,
                            cl.host, cl.port, uv_strerror(rc));
    else {
        l->from_ctl = true;
        *res = listener_json(l);
    }
    config_listener_free(&cl);
    return rc < 0 ? -1 : 0;
}

static struct listener *listener_param(struct rpc_req *r, json_t *params)
{
    static const char *const keys[] = {"name", NULL};
    const char *name = NULL;
    struct listener *l;

    if ((params && rpc_params_known(r, params, keys) < 0) ||
        rpc_param_str(r, params, "name", true, &name) < 0)
        return NULL;
    if (!(l = listener_find(r->lp, name)))
        rpc_fail(r, RPC_LISTENER_ERROR, "no listener named \"%s\"", name);
    return l;
}

static int m_listener_remove(struct rpc_req *r, json_t *params, json_t **res)
{
    struct listener *l = listener_param(r, params);

    if (!l)
        return -1;
    *res = json_pack("{s:s, s:I}", "name", l->name, "active", (json_int_t)l->active);
    listener_stop(l);
    return 0;
}

static int m_listener_pause(struct rpc_req *r, json_t *params, json_t **res)
{
    struct listener *l = listener_param(r, params);

    if (!l)
        return -1;
    listener_pause(l, LISTENER_PAUSE_CTL);
    *res = listener_json(l);
    return 0;
}

static int m_listener_resume(struct rpc_req *r, json_t *params, json_t **res)
{
    struct listener *l = listener_param(r, params);

    if (!l)
        return -1;
    listener_resume(l, LISTENER_PAUSE_CTL);
    *res = listener_json(l);
    return 0;
}

/* ---- plugins, events, daemon --------------------------------------------- */

static json_t *plugin_json(const struct plugin *p)
{
    return json_pack("{s:s, s:s, s:i, s:I, s:I, s:b}", "name", p->name, "file", p->path,
                     "abi", (int)p->notify.abi, "connections", (json_int_t)p->n_conns,
                     "generation", (json_int_t)p->generation, "retired", p->retired);
}

static int m_plugin_list(struct rpc_req *r, json_t *p, json_t **res)
{
    json_t *a = json_array();

    (void)p;
    for (struct plugin *pl = r->lp->plugins; pl; pl = pl->next)
        json_array_append_new(a, plugin_json(pl));
    *res = a;
    return 0;
}

static int m_plugin_load(struct rpc_req *r, json_t *params, json_t **res)
{
    static const char *const keys[] = {"name", "file", "config", NULL};
    struct config_plugin cp = {0};
    json_t *conf = params ? json_object_get(params, "config") : NULL;
    const char *name = NULL, *file = NULL;
    struct plugin *p, **tail, *old;
    char err[512];
    int rc;

    if ((params && rpc_params_known(r, params, keys) < 0) ||
        rpc_param_str(r, params, "name", true, &name) < 0 ||
        rpc_param_str(r, params, "file", true, &file) < 0)
        return -1;
    if (conf && !json_is_object(conf))
        return rpc_fail(r, RPC_INVALID_PARAMS, "params.config: expected an object");
    if (!name[0] || strlen(name) > 64 || strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                     "abcdefghijklmnopqrstuvwxyz"
                                                     "0123456789_.-") != strlen(name))
        return rpc_fail(r, RPC_INVALID_PARAMS,
                        "params.name: must be 1 to 64 characters from [A-Za-z0-9_.-]");
    if ((file[0] != '/' && strchr(file, '/')) || strstr(file, "..") || !file[0])
        return rpc_fail(r, RPC_INVALID_PARAMS,
                        "params.file: must be a file name in plugin_dir or an absolute path");
    cp.name = (char *)name;
    cp.file = (char *)file;
    cp.config_json = conf ? json_dumps(conf, JSON_COMPACT) : strdup("{}");
    if (!cp.config_json)
        return rpc_fail(r, RPC_INTERNAL_ERROR, "out of memory");
    /* A loaded name gets a new generation: new connections get the new
     * code, existing ones keep the old until they close or move. */
    if ((old = plugin_find(r->lp, name)))
        rc = plugin_new_generation(r->lp, old, &cp, r->lp->cfg->plugin_dir, &p, err,
                                   sizeof(err));
    else
        rc = plugin_load(r->lp, &cp, r->lp->cfg->plugin_dir, &p, err, sizeof(err));
    free(cp.config_json);
    if (rc < 0)
        return rpc_fail_errno(r, RPC_PLUGIN_ERROR, rc, "%s", err);
    if (!old) {
        for (tail = &r->lp->plugins; *tail; tail = &(*tail)->next)
            ;
        *tail = p;
    }
    *res = plugin_json(p);
    if (old)
        plugin_conn_gone(old); /* unloads it now if nothing uses it */
    return 0;
}

static int m_events_subscribe(struct rpc_req *r, json_t *params, json_t **res)
{
    static const char *const keys[] = {"types", "conn", "listener", NULL};
    struct ctl_client *cl = r->cl;
    json_t *types = params ? json_object_get(params, "types") : NULL;
    const char *listener = NULL;
    uint32_t mask = 0;
    uint64_t conn = 0;
    size_t i;
    json_t *v;

    if ((params && rpc_params_known(r, params, keys) < 0) ||
        rpc_param_uint(r, params, "conn", false, ID_MAX, &conn) < 0 ||
        rpc_param_str(r, params, "listener", false, &listener) < 0)
        return -1;
    if (listener && strlen(listener) >= sizeof(cl->ev_listener))
        return rpc_fail(r, RPC_INVALID_PARAMS, "params.listener: too long");
    if (types && !json_is_array(types))
        return rpc_fail(r, RPC_INVALID_PARAMS, "params.types: expected an array of names");
    json_array_foreach(types, i, v)
    {
        int t = json_is_string(v) ? event_parse(json_string_value(v)) : -1;
        if (t < 0)
            return rpc_fail(r, RPC_INVALID_PARAMS, "params.types[%zu]: unknown event type",
                            i);
        mask |= 1u << t;
    }
    cl->ev_types = types ? mask : (1u << EV_COUNT) - 1;
    cl->ev_conn = conn;
    snprintf(cl->ev_listener, sizeof(cl->ev_listener), "%s", listener ? listener : "");
    if (!list_linked(&cl->sub_link)) {
        list_add_tail(&cl->ctl->subscribers, &cl->sub_link);
        r->lp->n_subscribers++;
    }
    *res = json_pack("{s:b, s:I}", "subscribed", 1, "seq", (json_int_t)cl->ev_seq);
    return 0;
}

static int m_rpc_methods(struct rpc_req *r, json_t *p, json_t **res)
{
    json_t *a = json_array();

    (void)r;
    (void)p;
    for (const struct rpc_method *m = rpc_methods; m->name; m++)
        json_array_append_new(a, json_pack("{s:s, s:s, s:b, s:s}", "name", m->name, "params",
                                           m->params, "readonly", m->readonly, "summary",
                                           m->summary));
    *res = a;
    return 0;
}

static int m_daemon_reload(struct rpc_req *r, json_t *p, json_t **res)
{
    char err[512];

    (void)p;
    if (loop_reload(r->lp, err, sizeof(err)) < 0)
        return rpc_fail(r, RPC_INVALID_PARAMS, "reload refused, old config kept: %s", err);
    *res = json_pack("{s:b, s:s}", "reloaded", 1, "config", r->lp->config_path);
    return 0;
}

static int m_daemon_shutdown(struct rpc_req *r, json_t *params, json_t **res)
{
    static const char *const keys[] = {"timeout_ms", NULL};
    uint64_t timeout = r->lp->cfg->shutdown_timeout_ms;

    if ((params && rpc_params_known(r, params, keys) < 0) ||
        rpc_param_uint(r, params, "timeout_ms", false, 86400000, &timeout) < 0)
        return -1;
    *res = json_pack("{s:b, s:I, s:I}", "stopping", 1, "timeout_ms", (json_int_t)timeout,
                     "connections", (json_int_t)r->lp->n_conns);
    if (r->lp->stopping)
        loop_shutdown(r->lp, timeout); /* asked again: as a second SIGTERM */
    else
        loop_shutdown_later(r->lp, timeout); /* after this reply is queued */
    return 0;
}

const struct rpc_method rpc_methods[] = {
    {"status", m_status, true, "{}", "daemon version, pid, uptime and counts"},
    {"conn.list", m_conn_list, true, "{listener?}", "every connection"},
    {"conn.show", m_conn_show, true, "{id}", "one connection with its socket options"},
    {"conn.mute", m_conn_mute, false, "{id} | {select, dry_run?}",
     "stop reading (reason \"ctl\")"},
    {"conn.unmute", m_conn_unmute, false, "{id} | {select, dry_run?}",
     "lift the \"ctl\" mute reason"},
    {"conn.write", m_conn_write, false, "{id, data | data_base64}",
     "queue bytes; a sent or send_failed event with the token follows"},
    {"conn.close", m_conn_close, false, "{id} | {select, dry_run?}",
     "graceful close: queued bytes first, then FIN"},
    {"conn.abort", m_conn_abort, false, "{id} | {select, dry_run?}", "hard close (RST)"},
    {"conn.connect", m_conn_connect, false, "{host, port, plugin, from?, family?}",
     "open an outgoing connection"},
    {"conn.set_notify", m_conn_set_notify, false, "{id, plugin}",
     "hand a connection to another plugin"},
    {"conn.setopt", m_conn_setopt, false, "{id, nodelay?, keepalive_s?, rcvbuf?, sndbuf?}",
     "set socket options"},
    {"listener.list", m_listener_list, true, "{}", "every listener"},
    {"listener.add", m_listener_add, false,
     "{name, host, port, plugin, limit?, init_size?, max_size?, high_watermark?, "
     "low_watermark?, max_pending?}",
     "start a listener"},
    {"listener.remove", m_listener_remove, false, "{name}",
     "stop accepting; its connections stay"},
    {"listener.pause", m_listener_pause, false, "{name}", "stop accepting (reason \"ctl\")"},
    {"listener.resume", m_listener_resume, false, "{name}", "lift the \"ctl\" pause"},
    {"plugin.list", m_plugin_list, true, "{}", "every loaded plugin"},
    {"plugin.load", m_plugin_load, false, "{name, file, config?}",
     "load a plugin; a loaded name gets a new generation for new connections"},
    {"events.subscribe", m_events_subscribe, true, "{types?, conn?, listener?}",
     "receive event notifications on this session"},
    {"rpc.methods", m_rpc_methods, true, "{}", "this list"},
    {"daemon.reload", m_daemon_reload, false, "{}", "re-read the config, as SIGHUP"},
    {"daemon.shutdown", m_daemon_shutdown, false, "{timeout_ms?}",
     "drain and exit, as SIGTERM"},
    {NULL, NULL, false, NULL, NULL},
};
