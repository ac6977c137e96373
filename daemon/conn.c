/*
 * conn.c: one TCP connection on the loop: the read buffer and its delivery
 * to the plugin (growth, expect framing, yielding), the write queue and
 * backpressure, mute reasons, and the close sequence.
 *
 * Invariants:
 * - Callbacks other than closed() fire only in CONN_CONNECTING and
 *   CONN_OPEN; closed() fires once, from the uv close callback, for every
 *   connection the plugin has seen. The struct is freed right after it.
 * - Reading is decided in one place, conn_io_update(), from the state, the
 *   mute mask and the pause flag; callers change those and call it.
 * - The write queue owns every byte it accepted: a struct wreq holds the
 *   uv_write_t and the payload in one allocation, freed in its callback.
 */
#include "conn.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <linux/sockios.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "connect.h"
#include "control.h"
#include "events.h"
#include "listener.h"
#include "log.h"
#include "loop.h"
#include "plugin.h"
#include "relay.h"

#define CONN_MAX_IOV 1024
#define CONN_MAX_WRITE ((size_t)1 << 31) /* one write() call, all buffers */
#define CONN_DRAIN_ON_CLOSE (64 * 1024 * 1024)

struct wreq {
    uv_write_t req;
    struct wreq *next; /* in the pre-connect queue */
    size_t len;
    uint64_t token; /* control-socket write, reported as an event; 0: none */
    uint8_t data[];
};

/* One malloc chunk of 512 bytes (8 of them glibc's header): measured as
 * RSS per idle connection (docs/performance.md). */
_Static_assert(sizeof(struct conn) <= 504, "struct conn outgrew its 512-byte chunk");

static void conn_io_update(struct conn *c);
static void conn_finish(struct conn *c, bool reset);

/* Whether the plugin may still hear about c (anything but closed()). */
static bool conn_live(const struct conn *c)
{
    return c->state == CONN_OPEN || c->state == CONN_CONNECTING;
}

#define NOTIFY(c, hook, ...)                                                             \
    do {                                                                                 \
        struct plugin *p_ = (c)->plugin;                                                 \
        if (p_->notify.hook)                                                             \
            p_->notify.hook(p_->state, conn_pub(c), ##__VA_ARGS__);                      \
    } while (0)

static struct conn *conn_alloc(struct loop *lp, struct plugin *p,
                               const struct conn_limits *lim)
{
    struct conn *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    if (uv_tcp_init(&lp->uv, &c->tcp) < 0) {
        free(c);
        return NULL;
    }
    c->tcp.data = c;
    c->lp = lp;
    list_init(&c->resume_link);
    list_init(&c->closing_link);
    list_add_tail(&lp->conns, &c->link);
    lp->n_conns++;
    c->id = ++lp->next_conn_id;
    if (idmap_put(&lp->by_id, c->id, c) < 0) {
        list_del(&c->link);
        lp->n_conns--;
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return NULL;
    }
    c->plugin = p;
    p->n_conns++;
    c->lim = *lim;
    c->next_size = lim->init_size;
    c->created_ms = loop_wall_ms();
    c->last_active_ms = uv_now(&lp->uv);
    return c;
}

int conn_accept(struct loop *lp, struct listener *l, struct plugin *p, int fd)
{
    struct conn *c = conn_alloc(lp, p, &l->lim);
    int rc;

    if (!c) {
        close(fd);
        return -ENOMEM;
    }
    c->listener = l;
    c->state = CONN_OPEN;
    if ((rc = uv_tcp_open(&c->tcp, fd)) < 0) {
        log_warn("conn %" PRIu64 ": adopting accepted socket: %s", c->id, uv_strerror(rc));
        close(fd);
        conn_finish(c, false);
        return 0; /* the close callback settles the listener's count */
    }
    if (log_enabled(LOG_LVL_DEBUG)) {
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        char peer[64] = "?";
        if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
            listener_format_addr((struct sockaddr *)&ss, peer, sizeof(peer));
        log_debug("conn %" PRIu64 ": accepted on %s from %s", c->id, l->name, peer);
    }
    c->announced = true;
    events_conn(lp, EV_ACCEPTED, c, NULL);
    NOTIFY(c, accepted);
    conn_io_update(c);
    return 0;
}

int conn_new_outgoing(struct loop *lp, struct plugin *p, const struct conn_limits *lim,
                      void *user, struct conn **out)
{
    struct conn *c = conn_alloc(lp, p, lim);

    if (!c)
        return -ENOMEM;
    c->state = CONN_CONNECTING;
    c->user = user;
    c->announced = true;
    *out = c;
    return 0;
}

/* ---- reading ---------------------------------------------------------- */

/* Start a fresh turn's counters when the loop has moved on. */
void conn_turn(struct conn *c)
{
    if (c->turn != c->lp->turn) {
        c->turn = c->lp->turn;
        c->turn_bytes = 0;
        c->times = 0;
    }
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    size_t want = c->next_size > c->expect ? c->next_size : c->expect;

    (void)suggested;
    if (c->state != CONN_OPEN) {
        c->rlen = c->roff = 0; /* closing: what is read is discarded */
    } else if (c->turn == c->lp->turn && c->turn_bytes >= c->lim.max_size) {
        /* Its share of this turn is read: yield. An empty buffer ends
         * libuv's read loop (read_cb gets UV_ENOBUFS) and leaves the socket
         * in epoll, which reports it again next turn (level-triggered):
         * no epoll_ctl to stop and restart reading. */
        c->yielding = true;
        *buf = uv_buf_init(NULL, 0);
        return;
    } else if (c->relay && relay_may_splice(c)) {
        /* The same empty buffer, so that read_cb splices instead. */
        c->splicing = true;
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    if (c->rcap < want) {
        uint8_t *nb = realloc(c->rbuf, want);
        if (!nb) {
            *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
            return;
        }
        c->rbuf = nb;
        c->rcap = want;
    }
    *buf = uv_buf_init((char *)c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

/* Hand buffered bytes to the plugin while it wants them: whole frames when
 * expect is set, everything otherwise. Mute, pause and close requested
 * inside received() take effect after it returns; the rest stays buffered. */
void conn_deliver(struct conn *c)
{
    if (c->in_deliver)
        return;
    c->in_deliver = true;
    conn_turn(c);
    while (c->state == CONN_OPEN && !c->mute_mask && !c->paused) {
        size_t avail = c->rlen - c->roff;
        size_t n = c->expect ? c->expect : avail;
        bool more = true;

        if (avail == 0 || avail < n)
            break;
        c->times++;
        if (c->plugin->notify.received)
            more = c->plugin->notify.received(c->plugin->state, conn_pub(c),
                                              c->rbuf + c->roff, n, c->times);
        c->roff += n;
        if (!more) {
            c->paused = true;
            loop_queue_resume(c->lp, c);
        }
    }
    if (c->roff == c->rlen) {
        c->roff = c->rlen = 0;
    } else if (c->roff > 0) {
        memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
        c->rlen -= c->roff;
        c->roff = 0;
    }
    c->in_deliver = false;
}

static void conn_on_eof(struct conn *c)
{
    c->peer_eof = true;
    if (c->state == CONN_OPEN && c->plugin->notify.peer_closed) {
        conn_io_update(c);
        NOTIFY(c, peer_closed);
        if (c->state == CONN_OPEN && c->shutdown_done)
            conn_finish(c, false); /* both directions are done */
    } else if (c->state == CONN_OPEN) {
        conn_close(c, "peer closed");
    } else if (c->state == CONN_CLOSING) {
        conn_io_update(c);
        if (c->shutdown_done)
            conn_finish(c, false);
    }
}

void conn_fail(struct conn *c, const char *what, int err)
{
    if (c->state == CONN_CLOSED)
        return;
    if (!c->why)
        c->why = what;
    if (err == UV_ECONNRESET || err == UV_EPIPE || err == UV_ENOTCONN)
        log_debug("conn %" PRIu64 ": %s: %s", c->id, what, uv_err_name(err));
    else
        log_warn("conn %" PRIu64 ": %s: %s", c->id, what, uv_strerror(err));
    conn_finish(c, false);
}

/* The end of every read callback, with the connection in a settled state:
 * a long poll phase lets control requests in between reads
 * (control_lane_tick). */
static inline void conn_read_done(struct conn *c)
{
    if (c->lp->ctl && uv_hrtime() >= c->lp->lane_due_ns)
        control_lane_tick(c->lp->ctl);
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;

    if (nread == 0)
        return;
    if (nread < 0) {
        /* An empty buffer from conn_alloc_cb: a splice or a yield. */
        if (nread == UV_ENOBUFS && c->splicing) {
            c->splicing = false;
            relay_splice(c);
            conn_io_update(c);
            conn_read_done(c);
        } else if (nread == UV_ENOBUFS && c->yielding) {
            c->yielding = false; /* not a failure */
        } else if (nread == UV_EOF) {
            conn_on_eof(c);
        } else {
            conn_fail(c, nread == UV_ENOBUFS ? "read buffer" : "read", (int)nread);
        }
        return;
    }
    c->bytes_in += (uint64_t)nread;
    c->last_active_ms = uv_now(&c->lp->uv);
    if (c->state != CONN_OPEN)
        return; /* closing: the peer's bytes are read only to see its EOF */
    if (c->relay)
        relay_read(c, (size_t)nread);
    conn_turn(c);
    if ((size_t)nread == buf->len && c->next_size < c->lim.max_size) {
        c->next_size *= 2;
        if (c->next_size > c->lim.max_size)
            c->next_size = c->lim.max_size;
    }
    c->rlen += (size_t)nread;
    c->turn_bytes += (size_t)nread;
    conn_deliver(c);
    /* After max_size bytes in one turn, the next alloc_cb yields. */
    conn_io_update(c);
    conn_read_done(c);
}

/* Make reading and the peer-close watch match the connection's state.
 * The watch asks for EPOLLRDHUP (the peer's FIN) until a FIN was seen and
 * deferred; after that only for errors and hang-ups (events 0: epoll
 * always reports EPOLLERR and EPOLLHUP), so a reset is still noticed. */
static void conn_io_update(struct conn *c)
{
    bool want_read = false, want_watch = false;

    if (c->state == CONN_OPEN) {
        want_read = !c->mute_mask && !c->paused && !c->peer_eof;
        want_watch = c->mute_mask && !c->peer_eof && !c->watch_done;
    } else if (c->state == CONN_CLOSING) {
        want_read = !c->mute_mask && !c->peer_eof;
        want_watch = c->mute_mask && !c->peer_eof;
    }
    if (want_read != c->reading) {
        int rc = want_read ? uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb)
                           : uv_read_stop((uv_stream_t *)&c->tcp);
        if (rc == 0)
            c->reading = want_read;
        else
            log_warn("conn %" PRIu64 ": read %s: %s", c->id, want_read ? "start" : "stop",
                     uv_strerror(rc));
    }
    if (want_watch != c->rdhup_watched || (want_watch && c->fin_seen != c->watch_errors)) {
        struct epoll_event ev = {.events = c->fin_seen ? 0 : EPOLLRDHUP, .data.ptr = c};
        int fd = conn_fd(c), op = !want_watch        ? EPOLL_CTL_DEL
                                  : c->rdhup_watched ? EPOLL_CTL_MOD
                                                     : EPOLL_CTL_ADD;
        if (fd >= 0 && epoll_ctl(c->lp->rdhup_fd, op, fd, &ev) == 0) {
            c->rdhup_watched = want_watch;
            c->watch_errors = c->fin_seen;
        }
    }
}

void conn_resume(struct conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    c->paused = false;
    conn_deliver(c);
    conn_io_update(c);
}

/* A muted connection whose peer sent its FIN and has nothing left to get
 * from us: the peer may be gone, and nothing else would ever tell. */
static bool conn_fin_is_close(const struct conn *c)
{
    return c->state == CONN_OPEN && !c->plugin->notify.peer_closed && c->pending == 0;
}

void conn_peer_hup(struct conn *c, uint32_t events)
{
    if (c->state == CONN_CLOSED)
        return;
    if (!(events & EPOLLERR) && c->state == CONN_OPEN && !conn_fin_is_close(c)) {
        /* A FIN while muted, with bytes still going out (or a plugin that
         * wants EOF in order): the peer may only have half-closed and still
         * be reading. Keep its unread input for after the unmute, where the
         * EOF comes in order; a reset from a peer that is gone still shows
         * up as an error on the watch or on the writes. EPOLLHUP (both
         * directions shut: ours too) is level-triggered and would repeat,
         * so after it the watch ends; reads and writes report the rest. */
        c->fin_seen = true;
        if (events & EPOLLHUP)
            c->watch_done = true;
        conn_io_update(c);
        return;
    }
    c->peer_eof = true;
    conn_io_update(c);
    if (events & EPOLLERR) {
        conn_fail(c, "peer reset while muted", UV_ECONNRESET);
    } else if (c->state == CONN_OPEN) {
        log_debug("conn %" PRIu64 ": peer closed while muted", c->id);
        conn_close(c, "peer closed while muted");
    } else if (c->state == CONN_CLOSING && c->shutdown_done && !c->wait_outq) {
        conn_finish(c, false);
    }
}

/* ---- writing ---------------------------------------------------------- */

/* Recompute throttled from the pending count; notify on a change. */
static void conn_check_throttle(struct conn *c)
{
    if (c->throttled) {
        if (c->pending <= c->lim.low_watermark) {
            c->throttled = false;
            events_conn(c->lp, EV_UNTHROTTLED, c, NULL);
            if (conn_live(c))
                NOTIFY(c, unthrottled);
        }
    } else if (c->lim.high_watermark == 0 ? c->pending > 0
                                          : c->pending > c->lim.high_watermark) {
        c->throttled = true;
        events_conn(c->lp, EV_THROTTLED, c, NULL);
        if (conn_live(c))
            NOTIFY(c, throttled);
    }
}

static void conn_write_cb(uv_write_t *req, int status)
{
    struct wreq *w = container_of(req, struct wreq, req);
    struct conn *c = req->handle->data;

    c->pending -= w->len;
    if (status == 0)
        c->bytes_out += w->len;
    c->last_active_ms = uv_now(&c->lp->uv);
    if (w->token)
        events_sent_emit(c->lp, c, w->token, w->len, status);
    free(w);
    if (status < 0) {
        if (status != UV_ECANCELED)
            conn_fail(c, "write", status);
        return;
    }
    if (c->state == CONN_CLOSING)
        c->deadline = uv_now(&c->lp->uv) + c->lp->cfg->close_timeout_ms;
    conn_check_throttle(c);
    /* Everything owed went out and the connection is still muted after its
     * peer's FIN: now the FIN means a close. */
    if (c->fin_seen && c->mute_mask && conn_fin_is_close(c)) {
        c->peer_eof = true;
        conn_io_update(c);
        log_debug("conn %" PRIu64 ": peer closed while muted", c->id);
        conn_close(c, "peer closed while muted");
    }
}

/* The first write made while connecting, taken off the queue; NULL when
 * none is left. */
static struct wreq *conn_pre_pop(struct conn *c)
{
    struct wreq *w = c->pre_last ? c->pre_last->next : NULL;

    if (w == c->pre_last)
        c->pre_last = NULL;
    else if (w)
        c->pre_last->next = w->next;
    return w;
}

static int conn_submit(struct conn *c, struct wreq *w)
{
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, conn_write_cb);

    if (rc < 0) {
        c->pending -= w->len;
        if (w->token)
            events_sent_emit(c->lp, c, w->token, w->len, rc);
        free(w);
        conn_fail(c, "write", rc);
    }
    return rc;
}

/* Write bufs (total bytes): straight to the socket when nothing is queued,
 * the rest copied into one wreq. */
static int conn_queue(struct conn *c, const uv_buf_t *bufs, int nb, size_t total,
                      uint64_t token)
{
    size_t done = 0, off = 0;
    struct wreq *w;

    /* A token write waits for its callback, which reports it. */
    if (c->state == CONN_OPEN && c->pending == 0 && !token) {
        int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, (unsigned)nb);
        if (n >= 0) {
            done = (size_t)n;
        } else if (n != UV_EAGAIN && n != UV_ENOBUFS) {
            conn_fail(c, "write", n);
            return n;
        }
        c->bytes_out += done;
        if (done)
            c->last_active_ms = uv_now(&c->lp->uv);
        if (done == total)
            return 0;
    }
    w = malloc(sizeof(*w) + total - done);
    if (!w) {
        /* Part may be in the kernel already: a gap in the stream would
         * corrupt it, so the connection ends here. */
        conn_fail(c, "write queue", UV_ENOMEM);
        return -ENOMEM;
    }
    w->next = NULL;
    w->len = total - done;
    w->token = token;
    for (int i = 0; i < nb; i++) {
        size_t len = bufs[i].len, skip = done > len ? len : done;
        memcpy(w->data + off, bufs[i].base + skip, len - skip);
        off += len - skip;
        done -= skip;
    }
    c->pending += w->len;
    if (c->state == CONN_CONNECTING) {
        w->next = c->pre_last ? c->pre_last->next : w;
        if (c->pre_last)
            c->pre_last->next = w;
        c->pre_last = w;
    } else if (conn_submit(c, w) < 0) {
        return -EPIPE;
    }
    conn_check_throttle(c);
    return 0;
}

int conn_writev(struct conn *c, const struct iovec *iov, int n)
{
    uv_buf_t stack_bufs[16], *bufs = stack_bufs;
    uint8_t *owned[16] = {0}, **own = owned;
    size_t total = 0;
    int nb = 0, rc = 0;

    if (n < 0 || n > CONN_MAX_IOV || (n > 0 && !iov))
        return -EINVAL;
    if (!conn_live(c) || c->close_requested)
        return -ENOTCONN;
    if (c->wr_shut)
        return -EPIPE;
    if (n > 16) {
        bufs = malloc(sizeof(*bufs) * (size_t)n);
        own = calloc((size_t)n, sizeof(*own));
        if (!bufs || !own) {
            rc = -ENOMEM;
            goto out;
        }
    }
    for (int i = 0; i < n; i++) {
        const uint8_t *data = iov[i].iov_base;
        size_t len = iov[i].iov_len;
        own[i] = NULL;
        /* sent() may transform or drop the bytes; a write made from inside
         * sent() goes out as is. */
        if (c->plugin->notify.sent && !c->in_sent) {
            uint8_t *out = NULL;
            size_t out_len = 0;
            enum connd_sent r;
            c->in_sent = true;
            r = c->plugin->notify.sent(c->plugin->state, conn_pub(c), data, len, &out,
                                       &out_len);
            c->in_sent = false;
            if (!conn_live(c) || c->close_requested) {
                if (r == CONND_SENT_REPLACE)
                    free(out); /* sent() closed it: no more sent() calls */
                break;
            }
            if (r == CONND_SENT_DROP)
                continue;
            if (r == CONND_SENT_REPLACE) {
                own[i] = out;
                data = out;
                len = out ? out_len : 0;
            }
        }
        if (len == 0)
            continue;
        if (len > CONN_MAX_WRITE || total + len > CONN_MAX_WRITE) {
            rc = -EMSGSIZE; /* uv_buf_t lengths are unsigned int */
            goto out;
        }
        bufs[nb++] = uv_buf_init((char *)data, (unsigned)len);
        total += len;
    }
    if (!conn_live(c) || c->close_requested)
        rc = -ENOTCONN; /* sent() closed it */
    else if (c->wr_shut)
        rc = -EPIPE; /* sent() shut the write side down */
    else if (total > c->lim.max_pending || c->pending + total > c->lim.max_pending)
        rc = -ENOBUFS;
    else if (total > 0)
        rc = conn_queue(c, bufs, nb, total, 0);
out:
    for (int i = 0; own && i < n; i++)
        free(own[i]);
    if (bufs != stack_bufs)
        free(bufs);
    if (own != owned)
        free(own);
    return rc;
}

int conn_write_token(struct conn *c, const void *data, size_t len, uint64_t token)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);

    if (!conn_live(c) || c->close_requested)
        return -ENOTCONN;
    if (c->wr_shut)
        return -EPIPE;
    if (len > CONN_MAX_WRITE)
        return -EMSGSIZE;
    if (len > c->lim.max_pending || c->pending + len > c->lim.max_pending)
        return -ENOBUFS;
    return conn_queue(c, &b, 1, len, token);
}

int conn_write(struct conn *c, const void *data, size_t len)
{
    struct iovec v = {.iov_base = (void *)data, .iov_len = len};
    return conn_writev(c, &v, 1);
}

/* ---- mute, expect, notify --------------------------------------------- */

int conn_mute(struct conn *c, uint32_t bit)
{
    if (!bit)
        return -EINVAL;
    if (c->state == CONN_CLOSED)
        return -ENOTCONN;
    if (c->mute_mask & bit)
        return 0;
    c->mute_mask |= bit;
    events_conn(c->lp, EV_MUTED, c, loop_mute_name(c->lp, bit));
    conn_io_update(c);
    return 0;
}

int conn_unmute(struct conn *c, uint32_t bit)
{
    if (!bit)
        return -EINVAL;
    if (c->state == CONN_CLOSED)
        return -ENOTCONN;
    if (!(c->mute_mask & bit))
        return 0;
    c->mute_mask &= ~bit;
    events_conn(c->lp, EV_UNMUTED, c, loop_mute_name(c->lp, bit));
    if (!c->mute_mask && c->rlen > c->roff && !c->in_deliver)
        loop_queue_resume(c->lp, c); /* bytes held while muted go first */
    conn_io_update(c);
    return 0;
}

int conn_expect(struct conn *c, size_t qty)
{
    if (c->in_sent || c->in_expect)
        return -EBUSY;
    if (!conn_live(c))
        return -ENOTCONN;
    if (c->plugin->notify.expect) {
        c->in_expect = true; /* the hook calling expect() must not recurse */
        qty = c->plugin->notify.expect(c->plugin->state, conn_pub(c), qty);
        c->in_expect = false;
    }
    if (qty > c->lim.max_size)
        return -EINVAL;
    c->expect = qty;
    if (!c->in_deliver && c->rlen > c->roff && c->rlen - c->roff >= qty)
        loop_queue_resume(c->lp, c);
    return (int)qty;
}

int conn_set_notify(struct conn *c, struct plugin *p)
{
    if (!conn_live(c))
        return -ENOTCONN;
    struct plugin *old = c->plugin;

    p->n_conns++;
    c->plugin = p;
    c->user = NULL;
    relay_end(c); /* the new plugin did not ask for it */
    old->n_conns--;
    plugin_conn_gone(old); /* the last one moved off a retired generation */
    NOTIFY(c, adopted);
    return 0;
}

int conn_fd(const struct conn *c)
{
    uv_os_fd_t fd;

    if (c->state == CONN_CONNECTING || c->state == CONN_CLOSED)
        return -1;
    if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) < 0)
        return -1;
    return fd;
}

/* ---- connecting ------------------------------------------------------- */

void conn_connected(struct conn *c, int fd)
{
    struct wreq *w;
    int rc;

    c->cx = NULL;
    if ((rc = uv_tcp_open(&c->tcp, fd)) < 0) {
        close(fd);
        conn_connect_failed(c, uv_strerror(rc));
        return;
    }
    c->state = CONN_OPEN;
    /* Bytes written while connecting go first, in order. */
    while ((w = conn_pre_pop(c)) != NULL)
        if (conn_submit(c, w) < 0)
            return;
    if (c->close_requested) {
        c->close_requested = false;
        conn_close(c, "closed while connecting");
        return;
    }
    log_debug("conn %" PRIu64 ": connected", c->id);
    events_conn(c->lp, EV_CONNECTED, c, NULL);
    NOTIFY(c, connected);
    conn_io_update(c);
}

void conn_connect_failed(struct conn *c, const char *reason)
{
    c->cx = NULL;
    log_notice("conn %" PRIu64 ": connect failed: %s", c->id, reason);
    c->why = "connect failed";
    events_conn(c->lp, EV_CONNECT_FAILED, c, reason);
    if (c->state == CONN_CONNECTING && !c->close_requested)
        NOTIFY(c, connect_failed);
    conn_finish(c, false);
}

/* ---- closing ---------------------------------------------------------- */

static void conn_close_cb(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct loop *lp = c->lp;
    struct listener *l = c->listener;
    struct wreq *w;

    while ((w = conn_pre_pop(c)) != NULL) {
        c->pending -= w->len;
        if (w->token)
            events_sent_emit(lp, c, w->token, w->len, UV_ECANCELED);
        free(w);
    }
    events_conn(lp, EV_CLOSED, c, c->why);
    if (c->announced)
        NOTIFY(c, closed);
    log_debug("conn %" PRIu64 ": closed (in %" PRIu64 ", out %" PRIu64 ")", c->id,
              c->bytes_in, c->bytes_out);
    list_del(&c->link);
    list_del(&c->resume_link);
    list_del(&c->closing_link);
    idmap_del(&lp->by_id, c->id);
    lp->n_conns--;
    c->plugin->n_conns--;
    plugin_conn_gone(c->plugin);
    free(c->rbuf);
    free(c);
    if (l)
        listener_conn_closed(l);
    listener_global_check(lp);
    loop_conn_gone(lp);
}

/* The end: close the socket (with a RST when reset), closed() follows from
 * the close callback. Safe to call from any state and inside callbacks. */
static void conn_finish(struct conn *c, bool reset)
{
    if (c->state == CONN_CLOSED)
        return;
    if (!c->why)
        c->why = reset ? "reset" : "closed both ways";
    if (c->rdhup_watched) {
        epoll_ctl(c->lp->rdhup_fd, EPOLL_CTL_DEL, conn_fd(c), NULL);
        c->rdhup_watched = false;
    }
    if (c->cx) {
        connector_cancel(c->cx);
        c->cx = NULL;
    }
    relay_end(c);
    if (reset) {
        /* SO_LINGER 0 makes close(2) send a RST and drop queued bytes; set by
         * hand because uv_tcp_close_reset refuses after a uv_shutdown. */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        int fd = conn_fd(c);
        if (fd >= 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    } else if (c->state == CONN_CLOSING) {
        /* Unread bytes at close(2) make the kernel send a RST, which can
         * destroy data the peer has not read yet: read them away first. */
        char sink[65536];
        int fd = conn_fd(c);
        for (size_t got = 0; fd >= 0 && got < CONN_DRAIN_ON_CLOSE;) {
            ssize_t n = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
            if (n <= 0)
                break;
            got += (size_t)n;
        }
    }
    c->state = CONN_CLOSED;
    list_del(&c->closing_link);
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

static void conn_shutdown_cb(uv_shutdown_t *req, int status)
{
    struct conn *c = req->handle->data;

    free(req);
    if (status == UV_ECANCELED || c->state == CONN_CLOSED)
        return;
    if (status < 0) {
        conn_fail(c, "shutdown", status);
        return;
    }
    c->shutdown_done = true;
    if (c->state == CONN_OPEN) { /* a half-close */
        if (c->peer_eof)
            conn_finish(c, false);
        return;
    }
    c->deadline = uv_now(&c->lp->uv) + c->lp->cfg->close_timeout_ms;
    if (c->peer_eof)
        conn_finish(c, false);
    else if (c->mute_mask)
        c->wait_outq = true; /* the sweep closes once the peer has ACKed all */
}

int conn_close(struct conn *c, const char *reason)
{
    uv_shutdown_t *req;
    int rc;

    switch (c->state) {
    case CONN_CLOSING:
    case CONN_CLOSED:
        return 0;
    case CONN_CONNECTING:
        if (!c->pre_last) {
            log_debug("conn %" PRIu64 ": closed while connecting: %s", c->id, reason);
            conn_finish(c, false);
        } else {
            c->close_requested = true; /* deliver the queued bytes first */
        }
        return 0;
    case CONN_OPEN:
        break;
    }
    log_debug("conn %" PRIu64 ": closing: %s", c->id, reason);
    if (!c->why)
        c->why = reason; /* static strings only: plugin reasons are logged, not kept */
    /* Buffered input is dropped by the next alloc_cb, not here: this may
     * run inside received(), while conn_deliver still walks the buffer. */
    c->state = CONN_CLOSING;
    relay_end(c); /* nothing more is delivered from it or written to it */
    c->close_left = SIZE_MAX;
    c->deadline = uv_now(&c->lp->uv) + c->lp->cfg->close_timeout_ms;
    loop_watch_closing(c->lp, c);
    if (c->wr_shut) { /* a half-close already sent or is sending the FIN */
        if (c->shutdown_done && c->peer_eof)
            conn_finish(c, false);
        else if (c->shutdown_done && c->mute_mask)
            c->wait_outq = true;
        conn_io_update(c);
        return 0;
    }
    /* uv_shutdown waits for the write queue to drain, then sends the FIN. */
    if (!(req = malloc(sizeof(*req)))) {
        conn_finish(c, true);
        return -ENOMEM;
    }
    if ((rc = uv_shutdown(req, (uv_stream_t *)&c->tcp, conn_shutdown_cb)) < 0) {
        free(req);
        conn_fail(c, "shutdown", rc);
        return 0;
    }
    conn_io_update(c);
    return 0;
}

int conn_shutdown(struct conn *c)
{
    uv_shutdown_t *req;
    int rc;

    if (c->state != CONN_OPEN || c->close_requested)
        return -ENOTCONN;
    if (c->wr_shut)
        return 0;
    if (!(req = malloc(sizeof(*req))))
        return -ENOMEM;
    if ((rc = uv_shutdown(req, (uv_stream_t *)&c->tcp, conn_shutdown_cb)) < 0) {
        free(req);
        return rc;
    }
    c->wr_shut = true;
    log_debug("conn %" PRIu64 ": write side shut down", c->id);
    return 0;
}

int conn_abort(struct conn *c, const char *reason)
{
    if (c->state == CONN_CLOSED)
        return 0;
    log_debug("conn %" PRIu64 ": aborted: %s", c->id, reason);
    if (!c->why)
        c->why = reason;
    conn_finish(c, true);
    return 0;
}

void conn_closing_check(struct conn *c, uint64_t now)
{
    int outq = -1;
    size_t left;

    if (c->state != CONN_CLOSING)
        return;
    /* Progress is bytes leaving: libuv's queue plus the kernel's unsent
     * and unacknowledged bytes. One big write completes in one callback,
     * so the write callback alone cannot tell a slow reader from a dead
     * one. */
    if (ioctl(conn_fd(c), SIOCOUTQ, &outq) < 0)
        outq = 0;
    left = c->tcp.write_queue_size + (size_t)(outq > 0 ? outq : 0);
    if (left < c->close_left)
        c->deadline = now + c->lp->cfg->close_timeout_ms;
    c->close_left = left;
    if (c->wait_outq && outq == 0) {
        conn_finish(c, false);
    } else if (now >= c->deadline && c->shutdown_done) {
        /* Our FIN is queued behind every byte: close(2) without a RST and
         * the kernel goes on delivering what it holds. */
        log_notice("conn %" PRIu64 ": peer did not close within %" PRIu64 " ms", c->id,
                   c->lp->cfg->close_timeout_ms);
        conn_finish(c, false);
    } else if (now >= c->deadline) {
        log_warn("conn %" PRIu64 ": graceful close made no progress for %" PRIu64
                 " ms, %zu bytes pending: reset",
                 c->id, c->lp->cfg->close_timeout_ms, c->pending);
        conn_finish(c, true);
    }
}

size_t conn_force_close(struct conn *c)
{
    size_t lost = c->pending;

    if (c->state == CONN_CLOSED)
        return 0;
    conn_finish(c, !(c->state == CONN_CLOSING && c->shutdown_done));
    return lost;
}

const char *conn_state_name(const struct conn *c)
{
    static const char *const names[] = {"connecting", "open", "closing", "closed"};
    return names[c->state];
}
