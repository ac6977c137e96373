/*
 * relay.c: relay() between two connections of one plugin (connd_host.relay):
 * bytes read from one go to the other's socket inside the kernel, splice(2)
 * from the socket into the loop's one pipe and on into the partner's
 * socket, whenever that keeps every byte's place; otherwise conn.c reads
 * and delivers them to received() as usual.
 *
 * Invariants:
 * - The pipe is empty whenever a callback ends: what the partner's socket
 *   does not take at once is read back out and delivered to received(),
 *   whose write queues it. So one pipe serves every pair, and a close or
 *   shutdown never has bytes in a pipe to lose.
 * - libuv keeps owning both sockets: conn_alloc_cb gives libuv an empty
 *   buffer (as for a yield) when relay_may_splice(), and conn_read_cb then
 *   calls relay_splice(). EOF and errors go through the read paths.
 * - c->relay and its partner's point at each other, or both are NULL;
 *   relay_end() clears both when either starts to close, is finished or
 *   changes plugin, so neither pointer outlives its connection.
 */
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "plugin.h"

/* Make the loop's relay pipe. Returns 0 or a negative errno. */
static int relay_pipe_open(struct loop *lp)
{
    int cap;

    if (pipe2(lp->relay_pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        lp->relay_pipe[0] = lp->relay_pipe[1] = -1;
        return -errno;
    }
    cap = fcntl(lp->relay_pipe[1], F_GETPIPE_SZ);
    lp->relay_pipe_cap = cap > 0 ? (size_t)cap : 4096; /* one page at least */
    lp->relay_pipe_denied = 0;
    return 0;
}

void relay_pipe_close(struct loop *lp)
{
    for (int i = 0; i < 2; i++)
        if (lp->relay_pipe[i] >= 0)
            close(lp->relay_pipe[i]);
    lp->relay_pipe[0] = lp->relay_pipe[1] = -1;
}

void relay_end(struct conn *c)
{
    if (c->relay) {
        log_debug("conn %" PRIu64 ": relay to conn %" PRIu64 " ended", c->id, c->relay->id);
        c->relay->relay = NULL;
        c->relay = NULL;
    }
}

int relay_set(struct conn *a, struct conn *b)
{
    struct loop *lp = a->lp;
    size_t want;

    if (!b) {
        relay_end(a);
        return 0;
    }
    if (a == b || a->lp != b->lp)
        return -EINVAL;
    if (a->state != CONN_OPEN || b->state != CONN_OPEN)
        return -ENOTCONN;
    if (a->plugin != b->plugin)
        return -EPERM; /* b's bytes would bypass its own plugin */
    if (a->relay == b)
        return 0;
    if (a->relay || b->relay)
        return -EBUSY;
    if (lp->relay_pipe[0] < 0) {
        int rc = relay_pipe_open(lp);
        if (rc < 0) {
            if (!lp->relay_warned)
                log_warn("relay: pipe: %s; relayed bytes are copied (logged once)",
                         strerror(-rc));
            lp->relay_warned = true;
            return rc;
        }
    }
    /* One splice moves up to max_size, as one read does: grow the pipe to
     * the largest max_size relayed, where the kernel allows it. */
    want = a->lim.max_size > b->lim.max_size ? a->lim.max_size : b->lim.max_size;
    if (lp->relay_pipe_cap < want && (!lp->relay_pipe_denied || want < lp->relay_pipe_denied)) {
        int cap = fcntl(lp->relay_pipe[1], F_SETPIPE_SZ, (int)want);
        if (cap < 0) {
            lp->relay_pipe_denied = want;
            cap = fcntl(lp->relay_pipe[1], F_GETPIPE_SZ);
        }
        if (cap > 0)
            lp->relay_pipe_cap = (size_t)cap;
    }
    a->relay = b;
    b->relay = a;
    a->read_next = b->read_next = false;
    log_debug("conn %" PRIu64 ": relayed to conn %" PRIu64, a->id, b->id);
    return 0;
}

/* Whether c's next read may go straight to its relay peer d: nothing of
 * c's waits for the plugin (so c's bytes keep their order), nothing waits
 * to go out on d (so d's do), d takes writes, and no sent() of d's plugin
 * would be bypassed. Otherwise the bytes go to received() as usual. */
bool relay_can_splice(const struct conn *c)
{
    const struct conn *d = c->relay;

    return c->expect == 0 && c->rlen == c->roff && !c->paused && d->state == CONN_OPEN &&
           !d->wr_shut && !d->close_requested && d->pending == 0 && !d->plugin->notify.sent &&
           c->lp->relay_pipe[0] >= 0;
}

/* Bytes of c's went into the pipe on their way to d and cannot be
 * delivered: both streams would have a gap, so both connections are
 * reset, and the pipe is emptied for the next splice. */
static void relay_broken(struct conn *c, struct conn *d, const char *why)
{
    struct loop *lp = c->lp;
    char sink[4096];
    ssize_t n;
    int left = 0;

    do
        n = read(lp->relay_pipe[0], sink, sizeof(sink));
    while (n > 0 || (n < 0 && errno == EINTR));
    if (ioctl(lp->relay_pipe[0], FIONREAD, &left) < 0 || left > 0) {
        /* Never splice another pair's bytes after these: a new pipe (or
         * none, and every relay copies). */
        log_err("relay: the pipe cannot be emptied: making a new one");
        relay_pipe_close(lp);
        if (relay_pipe_open(lp) < 0)
            log_err("relay: no new pipe: relayed bytes are copied");
    }
    conn_abort(d, why);
    conn_abort(c, why);
}

/* Errors of a splice that a read would give too: the connection's own. */
static bool relay_socket_error(int err)
{
    switch (err) {
    case ECONNRESET:
    case ECONNABORTED:
    case ECONNREFUSED:
    case EPIPE:
    case ENOTCONN:
    case ETIMEDOUT:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ENETDOWN:
    case EHOSTDOWN:
        return true;
    default:
        return false;
    }
}

/* splice(2) itself fails on c (a seccomp filter, a socket that cannot
 * splice, no memory): the pair is copied from now on, as if not relayed. */
static void relay_refused(struct conn *c, const char *dir, int err)
{
    log_warn("conn %" PRIu64 ": relay: splice %s: %s; copying instead", c->id, dir,
             strerror(err));
    relay_end(c);
}

/* What the peer did not take at once: read back out of the pipe (which
 * must be empty when this callback ends) and delivered to received() as
 * if read, whose write queues it behind the spliced bytes. */
static void relay_rest(struct conn *c, struct conn *d, size_t left)
{
    int rfd = c->lp->relay_pipe[0];
    size_t got = 0;

    if (c->rcap < left) {
        uint8_t *nb = realloc(c->rbuf, left);
        if (!nb) {
            relay_broken(c, d, "relay: out of memory");
            return;
        }
        c->rbuf = nb;
        c->rcap = (uint32_t)left;
    }
    while (got < left) {
        ssize_t n = read(rfd, c->rbuf + got, left - got);
        if (n > 0)
            got += (size_t)n;
        else if (!(n < 0 && errno == EINTR))
            break;
    }
    if (got < left) { /* cannot happen: the bytes are in the pipe */
        log_err("conn %" PRIu64 ": relay: %zu bytes stuck in the pipe", c->id, left - got);
        relay_broken(c, d, "relay: pipe read failed");
        return;
    }
    c->roff = 0; /* it was empty (relay_can_splice) */
    c->rlen = (uint32_t)got;
    conn_deliver(c);
}

/* Move up to max_size bytes from c's socket to its relay peer's through
 * the loop's pipe: no copy through user space. EOF and errors are c's, as
 * from a read; a peer that cannot take everything gets the rest through
 * relay_rest, and its errors show on that write. */
void relay_splice(struct conn *c)
{
    struct loop *lp = c->lp;
    struct conn *d = c->relay;
    size_t len = c->lim.max_size < lp->relay_pipe_cap ? c->lim.max_size : lp->relay_pipe_cap;
    ssize_t n, m;
    size_t out = 0;

    do
        n = splice(conn_fd(c), NULL, lp->relay_pipe[1], NULL, len,
                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN) {
        if (relay_socket_error(errno))
            conn_fail(c, "read", -errno); /* libuv's codes are -errno */
        else
            relay_refused(c, "in", errno);
        return;
    }
    /* Nothing moved though epoll said readable: TCP's splice stops at an
     * urgent byte (returning EAGAIN, or 0 once a FIN is queued behind it),
     * where recv(2) skips it. So the next bytes are read, which also sees a
     * real EOF. Little moved: reading is cheaper for what follows too.
     * Splicing resumes after a read that brings enough. */
    c->read_next = n <= 0 || !relay_worth(c, (size_t)n);
    if (n <= 0)
        return;
    c->bytes_in += (uint64_t)n;
    c->last_active_ms = uv_now(&lp->uv);
    conn_turn(c);
    c->turn_bytes += (uint32_t)n;
    while (out < (size_t)n) {
        m = splice(lp->relay_pipe[0], NULL, conn_fd(d), NULL, (size_t)n - out,
                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (m > 0) {
            out += (size_t)m;
        } else if (!(m < 0 && errno == EINTR)) {
            /* Full (EAGAIN) or the socket failing: the write of the rest
             * queues it, or fails d. Anything else is splice's own. */
            if (m < 0 && errno != EAGAIN && !relay_socket_error(errno))
                relay_refused(c, "out", errno);
            break;
        }
    }
    if (out > 0) {
        d->bytes_out += out;
        d->last_active_ms = c->last_active_ms;
        lp->spliced_bytes += out;
    }
    if (out < (size_t)n)
        relay_rest(c, d, (size_t)n - out);
}
