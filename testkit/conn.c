/*
 * conn.c: one fake connection of the plugin test kit: its read buffer and
 * delivery (expect, mute, pause, the peer's EOF), its write queue against a
 * fake kernel (pending bytes, watermarks, max_pending), its close sequence,
 * the host functions that act on it, and the cpt_conn_* functions that
 * drive it. The logic mirrors daemon/conn.c with sockets replaced by
 * counters: when connd's semantics change, change them here too.
 *
 * Invariants, as in connd:
 * - Callbacks other than closed() fire only while connecting or open;
 *   closed() fires once, from cpt__conn_step(), never inside the host call or
 *   event that ended the connection.
 * - Mute, pause and close asked inside received() apply after it returns.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake.h"

#define MAX_IOV 1024
#define MAX_WRITE ((size_t)1 << 31) /* connd: one write() call, all buffers */
#define CONN_MAGIC 0x636f6e6eu

/* ---- the state machine ---------------------------------------------------- */

struct conn *cpt__conn_get(const struct connd_conn *cc)
{
    struct conn *c = (struct conn *)cc;
    if (!c || c->magic != CONN_MAGIC) {
        fprintf(stderr, "connd-plugin-test: not a connection of a test host\n");
        abort();
    }
    return c;
}

/* The connection a plugin named in a host call; counts a call made after
 * closed() returned, which in connd would touch freed memory. */
static struct conn *conn_of(const struct connd_conn *cc, const char *fn)
{
    struct conn *c = cpt__conn_get(cc);
    if (c->gone) {
        c->h->misuse++;
        cpt__host_log(c->h, 3, "conn %" PRIu64 ": %s() called after closed() returned",
                      c->id, fn);
    }
    return c;
}

struct conn *cpt__conn_new(struct cpt_host *h, struct plug *p)
{
    struct conn *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->magic = CONN_MAGIC;
    c->h = h;
    c->p = p;
    c->id = ++h->next_id;
    c->lim = h->lim;
    *h->conns_tail = c;
    h->conns_tail = &c->next;
    return c;
}

void cpt__conn_free(struct conn *c)
{
    free(c->listener);
    free(c->in);
    free(c->out);
    free(c->reason);
    free(c->show);
    free((char *)c->target.host);
    free((char *)c->target.port);
    free((char *)c->target.opts.from);
    free((char *)c->target.opts.plugin);
    free(c);
}

static void set_reason(struct conn *c, const char *why)
{
    if (!c->reason)
        c->reason = strdup(why);
}

static void unrelay(struct conn *c)
{
    if (c->relay) {
        c->relay->relay = NULL;
        c->relay = NULL;
    }
}

void cpt__conn_finish(struct conn *c, bool reset)
{
    if (c->state == S_CLOSED)
        return;
    c->state = S_CLOSED;
    c->reset = reset;
    unrelay(c);
}

/* Start a graceful close: drain, FIN, wait for the peer (cpt__conn_step). */
static void begin_close(struct conn *c, const char *why)
{
    switch (c->state) {
    case S_CLOSING:
    case S_CLOSED:
        return;
    case S_CONNECTING:
        set_reason(c, why);
        if (!c->pre_pending)
            cpt__conn_finish(c, false);
        else
            c->close_requested = true; /* deliver the queued bytes first */
        return;
    case S_OPEN:
        break;
    }
    cpt__host_log(c->h, 7, "conn %" PRIu64 ": closing: %s", c->id, why);
    set_reason(c, why);
    c->state = S_CLOSING;
    unrelay(c);
    c->deadline = c->h->now + c->lim.close_timeout_ms;
}

static void check_throttle(struct conn *c)
{
    if (c->throttled) {
        if (c->pending <= c->lim.low_watermark) {
            c->throttled = false;
            if (conn_live(c))
                NOTIFY(c, unthrottled);
        }
    } else if (c->lim.high_watermark == 0 ? c->pending > 0
                                          : c->pending > c->lim.high_watermark) {
        c->throttled = true;
        if (conn_live(c))
            NOTIFY(c, throttled);
    }
}

/* The kernel took n pending bytes: a closing connection made progress. */
static void kernel_took(struct conn *c, size_t n)
{
    if (n > c->pending)
        n = c->pending;
    c->pending -= n;
    if (n && c->state == S_CLOSING)
        c->deadline = c->h->now + c->lim.close_timeout_ms;
    check_throttle(c);
}

static size_t frame_len(const struct conn *c)
{
    size_t avail = c->in_len - c->in_off;
    if (c->expect)
        return c->expect;
    return avail < c->lim.max_size ? avail : c->lim.max_size;
}

static bool deliverable(const struct conn *c)
{
    size_t avail = c->in_len - c->in_off;
    return avail > 0 && avail >= frame_len(c);
}

/* Hand buffered bytes to the plugin while it wants them. Each call gets
 * its own exact-size copy so that ASan sees reads past `len` and uses of
 * `data` after received() returned. */
static bool deliver(struct conn *c)
{
    bool did = false;

    if (c->in_deliver)
        return false;
    c->in_deliver = true;
    if (c->turn != c->h->turn) {
        c->turn = c->h->turn;
        c->times = 0;
    }
    while (c->state == S_OPEN && !c->mute && !c->paused && deliverable(c)) {
        size_t n = frame_len(c);
        uint8_t *copy = malloc(n);
        bool more = true;

        if (copy)
            memcpy(copy, c->in + c->in_off, n);
        c->times++;
        if (c->p->nt.received)
            CALL(c->h,
                 more = c->p->nt.received(c->p->state, conn_pub(c),
                                          copy ? copy : c->in + c->in_off, n, c->times));
        free(copy);
        c->in_off += n; /* the buffer may have grown, never shrunk, meanwhile */
        did = true;
        if (!more)
            c->paused = true;
    }
    if (c->in_off == c->in_len) {
        c->in_off = c->in_len = 0;
    } else if (c->in_off > 0) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    c->in_deliver = false;
    return did;
}

/* The peer's EOF, once the bytes before it are delivered; at once while
 * muted for a plugin without peer_closed() (connd's RDHUP watch). */
static bool see_eof(struct conn *c)
{
    bool hook = c->p->nt.peer_closed != NULL;

    if (!c->eof_pending || c->peer_eof)
        return false;
    if (c->mute && !hook) {
        c->peer_eof = true;
        begin_close(c, "peer closed while muted");
        return true;
    }
    if (c->mute || c->paused || deliverable(c))
        return false;
    c->peer_eof = true;
    if (!hook) {
        begin_close(c, "peer closed");
        return true;
    }
    NOTIFY(c, peer_closed);
    if (c->state == S_OPEN && c->fin_sent)
        cpt__conn_finish(c, false); /* both directions are done */
    return true;
}

bool cpt__conn_step(struct conn *c)
{
    bool did = false;

    if (c->state == S_CONNECTING && !c->connecting_fired && !c->close_requested) {
        c->connecting_fired = true; /* resolution is taken to give one address */
        NOTIFY(c, connecting, 1u);
        return true;
    }
    if (c->state == S_OPEN) {
        did = deliver(c);
        if (c->state == S_OPEN)
            did |= see_eof(c);
        if (c->state == S_OPEN && c->wr_shut && !c->fin_sent && c->pending == 0) {
            c->fin_sent = true;
            did = true;
            if (c->peer_eof)
                cpt__conn_finish(c, false);
        }
    }
    if (c->state == S_CLOSING) {
        if (!c->fin_sent && c->pending == 0) {
            c->fin_sent = true;
            did = true;
        }
        if (c->eof_pending && !c->peer_eof) {
            c->peer_eof = true;
            did = true;
        }
        /* After the FIN connd waits for the peer's EOF or, muted, only for
         * the peer's ACKs, which the fake peer gives at once. */
        if (c->fin_sent && (c->peer_eof || c->mute)) {
            cpt__conn_finish(c, false);
            did = true;
        }
    }
    if (c->state == S_CLOSED && !c->closed_fired) {
        c->closed_fired = true;
        cpt__host_log(c->h, 7, "conn %" PRIu64 ": closed", c->id);
        NOTIFY(c, closed);
        c->gone = true;
        did = true;
    }
    return did;
}

static void connect_failed(struct conn *c, const char *why)
{
    char *r = NULL;

    cpt__host_log(c->h, 5, "conn %" PRIu64 ": connect failed: %s", c->id, why);
    if (!c->reason && asprintf(&r, "connect failed: %s", why) >= 0)
        c->reason = r;
    if (!c->close_requested)
        NOTIFY(c, connect_failed);
    cpt__conn_finish(c, false);
}

void cpt__conn_expire(struct conn *c)
{
    char why[64];

    if (c->state == S_CONNECTING) {
        snprintf(why, sizeof(why), "timed out after %" PRIu64 " ms",
                 c->target.opts.timeout_ms ? c->target.opts.timeout_ms
                                           : (uint64_t)CONNECT_TIMEOUT_MS);
        connect_failed(c, why);
    } else if (c->fin_sent) {
        /* Our FIN is out: close without a RST. */
        cpt__host_log(c->h, 5,
                      "conn %" PRIu64 ": peer did not close within %" PRIu64 " ms", c->id,
                      c->lim.close_timeout_ms);
        cpt__conn_finish(c, false);
    } else {
        cpt__host_log(c->h, 4,
                      "conn %" PRIu64 ": graceful close made no progress for %" PRIu64
                      " ms, %zu bytes pending: reset",
                      c->id, c->lim.close_timeout_ms, c->pending);
        cpt__conn_finish(c, true);
    }
}

/* ---- host functions: writing ---------------------------------------------- */

/* Append to the output; the fake kernel takes everything at once unless
 * bytes are pending ahead (or the connection is not up yet). */
static int queue(struct conn *c, const struct iovec *b, int nb, size_t total)
{
    if (c->out_len + total + 1 > c->out_cap) {
        size_t cap = c->out_cap * 2 + total + 1;
        char *no = realloc(c->out, cap);
        if (!no)
            return -ENOMEM;
        c->out = no;
        c->out_cap = cap;
    }
    for (int i = 0; i < nb; i++) {
        memcpy(c->out + c->out_len, b[i].iov_base, b[i].iov_len);
        c->out_len += b[i].iov_len;
    }
    c->out[c->out_len] = '\0';
    if (c->state == S_OPEN && c->pending == 0)
        return 0;
    c->pending += total;
    if (c->state == S_CONNECTING)
        c->pre_pending += total;
    check_throttle(c);
    return 0;
}

int cpt__conn_writev(struct connd_conn *cc, const struct iovec *iov, int n)
{
    struct conn *c = conn_of(cc, "writev");
    struct iovec *bufs = NULL;
    uint8_t **own = NULL;
    size_t total = 0;
    int nb = 0, rc = 0;

    if (n < 0 || n > MAX_IOV || (n > 0 && !iov))
        return -EINVAL;
    if (!conn_live(c) || c->close_requested)
        return -ENOTCONN;
    if (c->wr_shut)
        return -EPIPE;
    if (n == 0)
        return 0;
    bufs = calloc((size_t)n, sizeof(*bufs));
    own = calloc((size_t)n, sizeof(*own));
    if (!bufs || !own) {
        rc = -ENOMEM;
        goto out;
    }
    for (int i = 0; i < n; i++) {
        const uint8_t *data = iov[i].iov_base;
        size_t len = iov[i].iov_len;
        /* sent() may transform or drop the bytes; a write made from inside
         * sent() goes out as is. */
        if (c->p->nt.sent && !c->in_sent) {
            uint8_t *o = NULL;
            size_t olen = 0;
            enum connd_sent r;
            c->in_sent = true;
            CALL(c->h, r = c->p->nt.sent(c->p->state, cc, data, len, &o, &olen));
            c->in_sent = false;
            if (!conn_live(c) || c->close_requested) {
                if (r == CONND_SENT_REPLACE)
                    free(o); /* sent() closed it */
                break;
            }
            if (r == CONND_SENT_DROP)
                continue;
            if (r == CONND_SENT_REPLACE) {
                own[i] = o;
                data = o;
                len = o ? olen : 0;
            }
        }
        if (len == 0)
            continue;
        if (len > MAX_WRITE || total + len > MAX_WRITE) {
            rc = -EMSGSIZE;
            goto out;
        }
        bufs[nb].iov_base = (void *)data;
        bufs[nb++].iov_len = len;
        total += len;
    }
    if (!conn_live(c) || c->close_requested)
        rc = -ENOTCONN;
    else if (total > c->lim.max_pending || c->pending + total > c->lim.max_pending)
        rc = -ENOBUFS;
    else if (total > 0)
        rc = queue(c, bufs, nb, total);
out:
    for (int i = 0; own && i < n; i++)
        free(own[i]);
    free(own);
    free(bufs);
    return rc;
}

int cpt__conn_write(struct connd_conn *c, const void *data, size_t len)
{
    struct iovec v = {.iov_base = (void *)data, .iov_len = len};
    return cpt__conn_writev(c, &v, 1);
}

/* ---- host functions: reading and closing ---------------------------------- */

static int set_mute(struct conn *c, uint32_t bit, bool on)
{
    if (!bit)
        return -EINVAL;
    if (c->state == S_CLOSED)
        return -ENOTCONN;
    if (on) {
        c->mute |= bit;
        return 0;
    }
    if (!(c->mute & bit))
        return 0;
    c->mute &= ~bit;
    /* connd resumes on the next turn, which also ends a pause. */
    if (!c->mute && c->in_len > c->in_off && !c->in_deliver)
        c->paused = false;
    return 0;
}

/* A plugin's mute reason; "ctl" belongs to the operator. */
static uint32_t plugin_bit(struct conn *c, const char *reason)
{
    uint32_t bit = cpt__host_mute_bit(c->h, reason, true);
    return bit == MUTE_CTL ? 0 : bit;
}

int cpt__conn_mute(struct connd_conn *cc, const char *reason)
{
    struct conn *c = conn_of(cc, "mute");
    return set_mute(c, plugin_bit(c, reason), true);
}

int cpt__conn_unmute(struct connd_conn *cc, const char *reason)
{
    struct conn *c = conn_of(cc, "unmute");
    return set_mute(c, plugin_bit(c, reason), false);
}

int cpt__conn_expect(struct connd_conn *cc, size_t qty)
{
    struct conn *c = conn_of(cc, "expect");

    if (c->in_sent || c->in_expect)
        return -EBUSY;
    if (!conn_live(c))
        return -ENOTCONN;
    if (c->p->nt.expect) {
        c->in_expect = true; /* the hook calling expect() must not recurse */
        CALL(c->h, qty = c->p->nt.expect(c->p->state, cc, qty));
        c->in_expect = false;
    }
    if (qty > c->lim.max_size)
        return -EINVAL;
    c->expect = qty;
    if (!c->in_deliver && c->in_len > c->in_off && c->in_len - c->in_off >= qty)
        c->paused = false;
    return (int)qty;
}

int cpt__conn_close(struct connd_conn *cc, const char *reason)
{
    struct conn *c = conn_of(cc, "close");

    if (!reason)
        reason = "no reason given";
    if (conn_live(c))
        cpt__host_log(c->h, 6, "conn %" PRIu64 ": close by plugin %s: %s", c->id,
                      c->p->name, reason);
    begin_close(c, reason);
    return 0;
}

int cpt__conn_abort(struct connd_conn *cc, const char *reason)
{
    struct conn *c = conn_of(cc, "abort");

    if (!reason)
        reason = "no reason given";
    if (c->state == S_CLOSED)
        return 0;
    cpt__host_log(c->h, 6, "conn %" PRIu64 ": abort by plugin %s: %s", c->id, c->p->name,
                  reason);
    set_reason(c, reason);
    cpt__conn_finish(c, true);
    return 0;
}

int cpt__conn_shutdown(struct connd_conn *cc)
{
    struct conn *c = conn_of(cc, "shutdown");

    if (c->state != S_OPEN || c->close_requested)
        return -ENOTCONN;
    if (!c->wr_shut)
        cpt__host_log(c->h, 7, "conn %" PRIu64 ": write side shut down", c->id);
    c->wr_shut = true;
    return 0;
}

int cpt__conn_set_notify(struct connd_conn *cc, const char *name)
{
    struct conn *c = conn_of(cc, "set_notify");
    struct plug *p = name ? cpt__plug_find(c->h, name) : NULL;

    if (!p)
        return -ENOENT;
    if (!conn_live(c))
        return -ENOTCONN;
    c->p = p;
    c->user = NULL;
    unrelay(c); /* the new plugin did not ask for it */
    NOTIFY(c, adopted);
    return 0;
}

/* connd's checks and errors; the pair is only remembered: nothing is
 * spliced here, every byte goes through received(), as in connd whenever
 * a byte cannot be spliced with its order kept. */
int cpt__conn_relay(struct connd_conn *ca, struct connd_conn *cb)
{
    struct conn *a, *b;

    if (!ca)
        return -EINVAL;
    a = conn_of(ca, "relay");
    if (!cb) {
        unrelay(a);
        return 0;
    }
    b = conn_of(cb, "relay");
    if (a == b || a->h != b->h)
        return -EINVAL;
    if (a->state != S_OPEN || b->state != S_OPEN)
        return -ENOTCONN;
    if (a->p != b->p)
        return -EPERM;
    if (a->relay == b)
        return 0;
    if (a->relay || b->relay)
        return -EBUSY;
    a->relay = b;
    b->relay = a;
    cpt__host_log(a->h, 7, "conn %" PRIu64 ": relayed to conn %" PRIu64, a->id, b->id);
    return 0;
}

/* ---- host functions: the socket ------------------------------------------- */

static struct sockopt *opt_find(struct conn *c, int level, int name)
{
    for (int i = 0; i < c->n_opts; i++)
        if (c->opts[i].level == level && c->opts[i].name == name)
            return &c->opts[i];
    return NULL;
}

static int opt_set(struct conn *c, int level, int name, const void *val, socklen_t len)
{
    struct sockopt *o = opt_find(c, level, name);

    if (len > OPT_LEN)
        return -EINVAL;
    if (!o) {
        if (c->n_opts == MAX_OPTS)
            return -ENOMEM;
        o = &c->opts[c->n_opts++];
        o->level = level;
        o->name = name;
    }
    memcpy(o->val, val, len);
    o->len = len;
    return 0;
}

int cpt__conn_set_nodelay(struct connd_conn *cc, bool on)
{
    struct conn *c = conn_of(cc, "set_nodelay");
    int v = on;
    return conn_established(c) ? opt_set(c, IPPROTO_TCP, TCP_NODELAY, &v, sizeof(v))
                               : -ENOTCONN;
}

int cpt__conn_set_keepalive(struct connd_conn *cc, unsigned secs)
{
    struct conn *c = conn_of(cc, "set_keepalive");
    int on = secs > 0, idle = (int)secs;

    if (!conn_established(c))
        return -ENOTCONN;
    if (on)
        opt_set(c, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    return opt_set(c, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
}

int cpt__conn_getsockopt(struct connd_conn *cc, int level, int name, void *val,
                         socklen_t *len)
{
    struct conn *c = conn_of(cc, "getsockopt");
    struct sockopt *o = opt_find(c, level, name);
    int zero = 0; /* an option never set reads as int 0 */
    socklen_t have = o ? o->len : (socklen_t)sizeof(zero);

    if (!conn_established(c))
        return -ENOTCONN;
    if (!val || !len)
        return -EFAULT;
    memcpy(val, o ? (const void *)o->val : &zero, *len < have ? *len : have);
    *len = have;
    return 0;
}

int cpt__conn_setsockopt(struct connd_conn *cc, int level, int name, const void *val,
                         socklen_t len)
{
    struct conn *c = conn_of(cc, "setsockopt");

    if (!conn_established(c))
        return -ENOTCONN;
    if (!val && len)
        return -EFAULT;
    return opt_set(c, level, name, val, len);
}

/* Accepted: local 127.0.0.1:9000, remote 127.0.0.1:(40000 + id % 20000).
 * Outgoing: remote the connect() address (192.0.2.1 for a name), local
 * 127.0.0.1:(40000 + id % 20000). */
static int fake_addr(struct conn *c, bool local, struct sockaddr *sa, socklen_t *len)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    unsigned port = 40000 + (unsigned)(c->id % 20000);
    const char *ip = "127.0.0.1";
    socklen_t n = sizeof(*s4);

    if (!conn_established(c))
        return -ENOTCONN;
    if (!sa || !len)
        return -EFAULT;
    if (c->listener && local)
        port = 9000;
    if (!c->listener && !local) {
        ip = c->target.host;
        port = (unsigned)strtoul(c->target.port, NULL, 10) & 0xffff;
    }
    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        n = sizeof(*s6);
    } else {
        if (inet_pton(AF_INET, ip, &s4->sin_addr) != 1)
            inet_pton(AF_INET, "192.0.2.1", &s4->sin_addr);
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
    }
    memcpy(sa, &ss, *len < n ? *len : n);
    *len = n;
    return 0;
}

int cpt__conn_local_address(struct connd_conn *c, struct sockaddr *sa, socklen_t *len)
{
    return fake_addr(conn_of(c, "local_address"), true, sa, len);
}

int cpt__conn_remote_address(struct connd_conn *c, struct sockaddr *sa, socklen_t *len)
{
    return fake_addr(conn_of(c, "remote_address"), false, sa, len);
}

/* ---- host functions: the rest --------------------------------------------- */

uint64_t cpt__conn_id(const struct connd_conn *c)
{
    return conn_of(c, "id")->id;
}

void *cpt__conn_get_user(const struct connd_conn *c)
{
    return conn_of(c, "get_user")->user;
}

void cpt__conn_set_user(struct connd_conn *c, void *user)
{
    conn_of(c, "set_user")->user = user;
}

size_t cpt__conn_pending(const struct connd_conn *c)
{
    return conn_of(c, "pending")->pending;
}

void cpt__conn_log(struct connd_conn *cc, int level, const char *fmt, ...)
{
    struct conn *c = conn_of(cc, "conn_log");
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cpt__host_log(c->h, level, "conn %" PRIu64 ": %s", c->id, msg);
}

const char *cpt__conn_listener_name(const struct connd_conn *c)
{
    return conn_of(c, "listener_name")->listener;
}

/* ---- driving a connection ------------------------------------------------- */

struct connd_conn *cpt_conn_accept(struct connd_plugin *cp, const char *listener)
{
    struct plug *p = cpt__plug_get(cp);
    char *name = strdup(listener ? listener : "test");
    struct conn *c;

    if (!name || !(c = cpt__conn_new(p->h, p))) {
        free(name);
        return NULL;
    }
    c->listener = name;
    c->state = S_OPEN;
    cpt__host_begin(p->h);
    cpt__host_log(p->h, 7, "conn %" PRIu64 ": accepted on %s", c->id, name);
    NOTIFY(c, accepted);
    cpt__host_settle(p->h);
    return conn_pub(c);
}

int cpt_conn_receive(struct connd_conn *cc, const void *data, size_t len)
{
    struct conn *c = cpt__conn_get(cc);

    if (c->state != S_OPEN)
        return -ENOTCONN; /* connd reads a closing one only to see its EOF */
    if (c->eof_pending)
        return -EPIPE;
    if (c->in_len + len > c->in_cap) {
        size_t cap = c->in_cap * 2 + len;
        uint8_t *ni = realloc(c->in, cap);
        if (!ni)
            return -ENOMEM;
        c->in = ni;
        c->in_cap = cap;
    }
    if (len)
        memcpy(c->in + c->in_len, data, len);
    c->in_len += len;
    cpt__host_begin(c->h);
    cpt__host_settle(c->h);
    return 0;
}

int cpt_conn_receive_str(struct connd_conn *c, const char *s)
{
    return cpt_conn_receive(c, s, strlen(s));
}

int cpt_conn_peer_close(struct connd_conn *cc)
{
    struct conn *c = cpt__conn_get(cc);

    if (!conn_established(c))
        return -ENOTCONN;
    c->eof_pending = true;
    cpt__host_begin(c->h);
    cpt__host_settle(c->h);
    return 0;
}

int cpt_conn_peer_reset(struct connd_conn *cc)
{
    struct conn *c = cpt__conn_get(cc);

    if (!conn_established(c))
        return -ENOTCONN;
    cpt__host_log(c->h, 7, "conn %" PRIu64 ": read: ECONNRESET", c->id);
    set_reason(c, "peer reset");
    cpt__conn_finish(c, false);
    cpt__host_begin(c->h);
    cpt__host_settle(c->h);
    return 0;
}

int cpt_conn_ctl_mute(struct connd_conn *cc, bool on)
{
    struct conn *c = cpt__conn_get(cc);
    int rc = set_mute(c, MUTE_CTL, on);

    cpt__host_begin(c->h);
    cpt__host_settle(c->h);
    return rc;
}

int cpt_conn_set_pending(struct connd_conn *cc, size_t bytes)
{
    struct conn *c = cpt__conn_get(cc);

    if (!conn_established(c))
        return -ENOTCONN;
    cpt__host_begin(c->h);
    if (bytes < c->pending) {
        kernel_took(c, c->pending - bytes);
    } else {
        c->pending = bytes;
        check_throttle(c);
    }
    cpt__host_settle(c->h);
    return 0;
}

int cpt_conn_drain(struct connd_conn *cc, size_t bytes)
{
    struct conn *c = cpt__conn_get(cc);

    if (!conn_established(c))
        return -ENOTCONN;
    cpt__host_begin(c->h);
    kernel_took(c, bytes);
    cpt__host_settle(c->h);
    return 0;
}

int cpt_conn_connect_ok(struct connd_conn *cc)
{
    struct conn *c = cpt__conn_get(cc);

    if (c->state != S_CONNECTING)
        return c->state == S_CLOSED ? -ENOTCONN : -EINVAL;
    cpt__host_begin(c->h);
    c->state = S_OPEN;
    cpt__host_log(c->h, 7, "conn %" PRIu64 ": connected", c->id);
    if (c->close_requested) {
        c->close_requested = false;
        begin_close(c, "closed while connecting");
    } else {
        NOTIFY(c, connected);
    }
    /* The bytes queued while connecting go out now. */
    c->pre_pending = 0;
    if (conn_established(c))
        kernel_took(c, c->pending);
    cpt__host_settle(c->h);
    return 0;
}

int cpt_conn_connect_fail(struct connd_conn *cc, const char *why)
{
    struct conn *c = cpt__conn_get(cc);

    if (c->state != S_CONNECTING)
        return c->state == S_CLOSED ? -ENOTCONN : -EINVAL;
    cpt__host_begin(c->h);
    connect_failed(c, why ? why : "1 address tried, last error: connection refused");
    cpt__host_settle(c->h);
    return 0;
}

/* ---- inspecting a connection's socket options ---------------------------- */

int cpt_conn_sockopt(const struct connd_conn *cc, int level, int name)
{
    struct sockopt *o = opt_find(cpt__conn_get(cc), level, name);
    int v = 0;

    if (!o)
        return -1;
    memcpy(&v, o->val, o->len < sizeof(v) ? o->len : sizeof(v));
    return v;
}
