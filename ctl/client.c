/*
 * client.c: connctl's end of the control socket (see client.h). The socket
 * is non-blocking and every wait is a ppoll(2) against a deadline, so a
 * wedged daemon, or a socket path something else owns, costs at most the
 * timeout. Received bytes go to one growing buffer that is cut into lines;
 * a reply to conn.list over many connections is one long line.
 */
#include "client.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int fail(struct client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(struct client *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
    return CLIENT_FAIL;
}

void client_init(struct client *c, const char *path, int timeout_ms)
{
    memset(c, 0, sizeof(*c));
    c->path = path;
    c->fd = -1;
    c->timeout_ms = timeout_ms;
}

void client_close(struct client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    c->fd = -1;
    c->buf = NULL;
    c->len = c->cap = c->scanned = 0;
}

/* Wait until fd is ready for events or the deadline (-1: none) passes.
 * Returns 0, -ETIMEDOUT, -EINTR (only when a sigmask is given: the caller
 * wants to see signals) or another negative errno. */
static int wait_fd(int fd, short events, int64_t deadline, const sigset_t *mask)
{
    struct pollfd pfd = {.fd = fd, .events = events};

    for (;;) {
        struct timespec ts, *tsp = NULL;
        int n;

        if (deadline >= 0) {
            int64_t left = deadline - mono_ms();
            left = left < 0 ? 0 : left;
            ts.tv_sec = (time_t)(left / 1000);
            ts.tv_nsec = (long)(left % 1000) * 1000000L;
            tsp = &ts;
        }
        n = ppoll(&pfd, 1, tsp, mask);
        if (n > 0)
            return 0;
        if (n == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
        if (mask)
            return -EINTR;
    }
}

/* Connect within the timeout. A Unix socket's connect fails with EAGAIN
 * while the daemon's backlog is full; that is retried, not reported. */
static int client_connect(struct client *c, int64_t deadline)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int err = 0;

    if (strlen(c->path) >= sizeof(sun.sun_path))
        return fail(c, "cannot connect to %s: path longer than %zu bytes", c->path,
                    sizeof(sun.sun_path) - 1);
    memcpy(sun.sun_path, c->path, strlen(c->path));
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return fail(c, "socket: %s", strerror(errno));
    while (connect(c->fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN && mono_ms() < deadline) {
            nanosleep(&(struct timespec){.tv_nsec = 20 * 1000000L}, NULL);
            continue;
        }
        if (errno == EINPROGRESS) {
            socklen_t len = sizeof(err);
            int rc = wait_fd(c->fd, POLLOUT, deadline, NULL);
            if (rc < 0)
                err = -rc;
            else if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
            if (!err)
                break;
        } else {
            err = errno;
        }
        close(c->fd);
        c->fd = -1;
        return fail(c, "cannot connect to %s: %s", c->path, strerror(err));
    }
    return 0;
}

static int send_all(struct client *c, const char *p, size_t len, int64_t deadline)
{
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        int rc;

        if (n >= 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return fail(c, "lost the connection to connd: %s", strerror(errno));
        if ((rc = wait_fd(c->fd, POLLOUT, deadline, NULL)) == -ETIMEDOUT)
            return fail(c, "connd did not take the request within %g s",
                        c->timeout_ms / 1000.0);
        if (rc < 0)
            return fail(c, "lost the connection to connd: %s", strerror(-rc));
    }
    return 0;
}

/* Make room for at least 4 KiB more input, doubling, up to CLIENT_LINE_MAX. */
static int grow(struct client *c)
{
    size_t cap;
    char *buf;

    if (c->cap - c->len >= 4096)
        return 0;
    if (c->len >= CLIENT_LINE_MAX)
        return fail(c, "connd sent a line longer than %u bytes", CLIENT_LINE_MAX);
    cap = c->cap ? c->cap * 2 : 16384;
    if (cap > CLIENT_LINE_MAX + 4096u)
        cap = CLIENT_LINE_MAX + 4096u;
    if (!(buf = realloc(c->buf, cap)))
        return fail(c, "out of memory for a %zu byte line", c->len);
    c->buf = buf;
    c->cap = cap;
    return 0;
}

/* The next whole line, parsed. Lines are cut off the front of the buffer;
 * `scanned` remembers how far a long line was already searched for its
 * newline so that growing reads stay linear. */
static int next_msg(struct client *c, int64_t deadline, const sigset_t *mask,
                    json_t **msg)
{
    for (;;) {
        char *nl = c->len > c->scanned
                       ? memchr(c->buf + c->scanned, '\n', c->len - c->scanned)
                       : NULL;
        ssize_t n;
        int rc;

        if (nl) {
            size_t line = (size_t)(nl - c->buf);
            json_error_t jerr;
            json_t *m = json_loadb(c->buf, line, 0, &jerr);

            memmove(c->buf, nl + 1, c->len - line - 1);
            c->len -= line + 1;
            c->scanned = 0;
            if (!json_is_object(m)) {
                json_decref(m);
                return fail(c, "connd sent a line that is not a JSON-RPC message%s%s",
                            m ? "" : ": ", m ? "" : jerr.text);
            }
            *msg = m;
            return CLIENT_RESULT;
        }
        c->scanned = c->len;
        if (grow(c) < 0)
            return CLIENT_FAIL;
        n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n > 0) {
            c->len += (size_t)n;
            continue;
        }
        if (n == 0)
            return fail(c, "connd closed the connection");
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return fail(c, "lost the connection to connd: %s", strerror(errno));
        rc = wait_fd(c->fd, POLLIN, deadline, mask);
        if (rc == -EINTR)
            return CLIENT_INTERRUPTED;
        if (rc == -ETIMEDOUT)
            return fail(c, "no reply from connd within %g s", c->timeout_ms / 1000.0);
        if (rc < 0)
            return fail(c, "lost the connection to connd: %s", strerror(-rc));
    }
}

int client_next(struct client *c, int timeout_ms, const sigset_t *sigmask, json_t **msg)
{
    if (c->fd < 0)
        return fail(c, "not connected");
    return next_msg(c, timeout_ms < 0 ? -1 : mono_ms() + timeout_ms, sigmask, msg);
}

/* Serialise req as one line with its newline; NULL when out of memory. */
static char *request_line(json_t *req, size_t *len)
{
    size_t n = json_dumpb(req, NULL, 0, JSON_COMPACT);
    char *text = n ? malloc(n + 1) : NULL;

    if (!text)
        return NULL;
    json_dumpb(req, text, n, JSON_COMPACT);
    text[n] = '\n';
    *len = n + 1;
    return text;
}

int client_call(struct client *c, const char *method, json_t *params, json_t **out)
{
    int64_t deadline = mono_ms() + c->timeout_ms;
    json_int_t id = ++c->next_id;
    json_t *req, *m = NULL, *v;
    size_t len = 0;
    char *text;
    int rc;

    if (c->fd < 0 && client_connect(c, deadline) < 0)
        return CLIENT_FAIL;
    req = json_pack("{s:s, s:I, s:s}", "jsonrpc", "2.0", "id", id, "method", method);
    if (req && params && json_object_size(params))
        json_object_set(req, "params", params);
    text = req ? request_line(req, &len) : NULL;
    json_decref(req);
    if (!text)
        return fail(c, "out of memory");
    rc = send_all(c, text, len, deadline);
    free(text);
    if (rc < 0)
        return CLIENT_FAIL;
    for (;;) {
        if ((rc = next_msg(c, deadline, NULL, &m)) != CLIENT_RESULT)
            return rc;
        v = json_object_get(m, "id");
        /* Events may come between replies; a reply to an id other than
         * ours cannot be for this call. An error with id null is ours:
         * connd could not read our request's id. */
        if (json_object_get(m, "method") ||
            (json_is_integer(v) && json_integer_value(v) != id))
            json_decref(m);
        else
            break;
    }
    if ((v = json_object_get(m, "error"))) {
        *out = json_is_object(v) ? json_incref(v)
                                 : json_pack("{s:i, s:s}", "code", 0, "message",
                                             "malformed error object");
        rc = CLIENT_ERROR;
    } else if ((v = json_object_get(m, "result"))) {
        *out = json_incref(v);
        rc = CLIENT_RESULT;
    } else {
        rc = fail(c, "connd's reply has neither result nor error");
    }
    json_decref(m);
    return rc;
}
