/*
 * connect.c: the connector of an outgoing connection, alive while it is in
 * CONN_CONNECTING. It owns the resolver request, the attempt sockets (raw
 * non-blocking sockets watched by uv_poll), the stagger and timeout timers.
 *
 * The winning socket is handed to the connection only from its poll
 * handle's close callback: closing a uv_poll removes its fd from the loop's
 * epoll set, which must not happen after the uv_tcp_t took the fd over.
 *
 * Lifetime: `refs` counts the libuv handles and requests not yet finished;
 * the connector is freed when it is cancelled and refs reaches 0.
 */
#include "connect.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "conn.h"
#include "log.h"
#include "loop.h"
#include "plugin.h"

#define CONNECT_MAX_ADDRS 64

struct attempt {
    uv_poll_t poll;
    struct connector *cx;
    struct attempt *next;
    int fd;
    bool winner;
};

struct connector {
    struct loop *lp;
    struct conn *c; /* NULL once cancelled */
    uv_getaddrinfo_t gai;
    uv_timer_t stagger, timeout;
    struct sockaddr_storage addrs[CONNECT_MAX_ADDRS];
    size_t n_addrs, next_addr;
    struct sockaddr_storage from;
    bool has_from;
    struct attempt *attempts; /* in flight */
    int refs;
    int last_err;
    bool gai_active;
    uint64_t timeout_ms;
};

static void connector_unref(struct connector *cx)
{
    if (--cx->refs == 0)
        free(cx);
}

static void connector_handle_closed_cb(uv_handle_t *h)
{
    connector_unref(h->data);
}

static void attempt_close_cb(uv_handle_t *h)
{
    struct attempt *a = h->data;
    struct connector *cx = a->cx;

    if (a->winner && cx->c) {
        struct conn *c = cx->c;
        cx->c = NULL; /* from here on the connection owns the socket */
        connector_cancel(cx);
        conn_connected(c, a->fd);
    } else {
        close(a->fd);
    }
    free(a);
    connector_unref(cx);
}

static void attempt_drop(struct connector *cx, struct attempt *a)
{
    struct attempt **pp;

    for (pp = &cx->attempts; *pp; pp = &(*pp)->next)
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    uv_close((uv_handle_t *)&a->poll, attempt_close_cb);
}

void connector_cancel(struct connector *cx)
{
    cx->c = NULL;
    while (cx->attempts)
        attempt_drop(cx, cx->attempts);
    if (!uv_is_closing((uv_handle_t *)&cx->stagger)) {
        uv_close((uv_handle_t *)&cx->stagger, connector_handle_closed_cb);
        uv_close((uv_handle_t *)&cx->timeout, connector_handle_closed_cb);
    }
    /* A resolver request still running finishes in gai_cb, which sees c gone.
     * The last reference is dropped there or by a close callback. */
    if (cx->gai_active)
        uv_cancel((uv_req_t *)&cx->gai);
}

static void connector_fail(struct connector *cx, const char *reason)
{
    struct conn *c = cx->c;

    connector_cancel(cx);
    if (c)
        conn_connect_failed(c, reason);
}

static void connector_next(struct connector *cx);

static void attempt_cb(uv_poll_t *h, int status, int events)
{
    struct attempt *a = h->data;
    struct connector *cx = a->cx;
    int err = 0;
    socklen_t len = sizeof(err);

    (void)events;
    if (!cx->c)
        return;
    /* libuv reports POLLERR as UV_EBADF: the socket's own error says why. */
    if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    err = err ? -err : status;
    if (err == 0) {
        /* First success wins; the losers are closed with their sockets. */
        a->winner = true;
        uv_timer_stop(&cx->stagger);
        uv_timer_stop(&cx->timeout);
        for (struct attempt *o = cx->attempts; o;) {
            struct attempt *next = o->next;
            if (o != a)
                attempt_drop(cx, o);
            o = next;
        }
        attempt_drop(cx, a);
        return;
    }
    cx->last_err = err;
    attempt_drop(cx, a);
    connector_next(cx); /* a failure starts the next address at once */
}

/* Open a socket and start connecting to addrs[i]; 0 or a negative errno. */
static int attempt_start(struct connector *cx, const struct sockaddr_storage *sa)
{
    socklen_t salen = sa->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                : sizeof(struct sockaddr_in);
    struct attempt *a;
    int fd, rc;

    fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (cx->has_from && bind(fd, (const struct sockaddr *)&cx->from, salen) < 0)
        goto fail_errno;
    if (connect(fd, (const struct sockaddr *)sa, salen) < 0 && errno != EINPROGRESS)
        goto fail_errno;
    if (!(a = calloc(1, sizeof(*a)))) {
        close(fd);
        return -ENOMEM;
    }
    a->fd = fd;
    a->cx = cx;
    if ((rc = uv_poll_init_socket(&cx->lp->uv, &a->poll, fd)) < 0) {
        free(a);
        close(fd);
        return rc;
    }
    a->poll.data = a;
    cx->refs++;
    a->next = cx->attempts;
    cx->attempts = a;
    if ((rc = uv_poll_start(&a->poll, UV_WRITABLE, attempt_cb)) < 0) {
        attempt_drop(cx, a);
        return rc;
    }
    return 0;
fail_errno:
    rc = -errno;
    close(fd);
    return rc;
}

static void stagger_cb(uv_timer_t *t)
{
    connector_next(t->data);
}

/* Start the next address that can be started; when none is left and none
 * is in flight, the connection has failed. */
static void connector_next(struct connector *cx)
{
    char reason[160];

    while (cx->c && cx->next_addr < cx->n_addrs) {
        int rc = attempt_start(cx, &cx->addrs[cx->next_addr++]);
        if (rc == 0) {
            if (cx->next_addr < cx->n_addrs)
                uv_timer_start(&cx->stagger, stagger_cb, CONNECT_STAGGER_MS, 0);
            return;
        }
        cx->last_err = rc;
    }
    if (cx->c && !cx->attempts) {
        snprintf(reason, sizeof(reason), "%zu address%s tried, last error: %s",
                 cx->n_addrs, cx->n_addrs == 1 ? "" : "es",
                 cx->last_err ? uv_strerror(cx->last_err) : "none");
        connector_fail(cx, reason);
    }
}

static void timeout_cb(uv_timer_t *t)
{
    struct connector *cx = t->data;
    char reason[64];

    snprintf(reason, sizeof(reason), "timed out after %" PRIu64 " ms", cx->timeout_ms);
    connector_fail(cx, reason);
}

/* Order addresses as RFC 8305 section 4: families interleaved, IPv6 first. */
static void connector_set_addrs(struct connector *cx, const struct sockaddr_storage *in,
                                size_t n)
{
    size_t i6 = 0, i4 = 0;

    cx->n_addrs = 0;
    while (cx->n_addrs < CONNECT_MAX_ADDRS) {
        bool took = false;
        for (; i6 < n; i6++)
            if (in[i6].ss_family == AF_INET6) {
                cx->addrs[cx->n_addrs++] = in[i6++];
                took = true;
                break;
            }
        for (; i4 < n && cx->n_addrs < CONNECT_MAX_ADDRS; i4++)
            if (in[i4].ss_family == AF_INET) {
                cx->addrs[cx->n_addrs++] = in[i4++];
                took = true;
                break;
            }
        if (!took)
            break;
    }
}

/* Addresses known: tell the plugin how many, then race them. */
static void connector_go(struct connector *cx)
{
    struct conn *c = cx->c;

    if (cx->n_addrs == 0) {
        char reason[160];
        snprintf(reason, sizeof(reason), "resolve: %s",
                 cx->last_err ? uv_strerror(cx->last_err) : "no address of the family");
        connector_fail(cx, reason);
        return;
    }
    if (c->state == CONN_CONNECTING && !c->close_requested &&
        c->plugin->notify.connecting)
        c->plugin->notify.connecting(c->plugin->state, conn_pub(c),
                                     (unsigned)cx->n_addrs);
    connector_next(cx);
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct connector *cx = req->data;
    struct sockaddr_storage found[CONNECT_MAX_ADDRS];
    size_t n = 0;
    char reason[160];

    cx->gai_active = false;
    if (cx->c && status < 0) {
        snprintf(reason, sizeof(reason), "resolve: %s", uv_strerror(status));
        connector_fail(cx, reason);
    } else if (cx->c) {
        for (struct addrinfo *ai = res; ai && n < CONNECT_MAX_ADDRS; ai = ai->ai_next) {
            if (cx->has_from && ai->ai_family != cx->from.ss_family)
                continue;
            if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6) {
                memset(&found[n], 0, sizeof(found[n]));
                memcpy(&found[n++], ai->ai_addr, ai->ai_addrlen);
            }
        }
        connector_set_addrs(cx, found, n);
        connector_go(cx);
    }
    uv_freeaddrinfo(res);
    connector_unref(cx);
}

static int connector_new(struct loop *lp, struct plugin *p,
                         const struct connect_params *prm, struct connector **out,
                         struct conn **cout)
{
    struct conn_limits defaults;
    struct connector *cx = calloc(1, sizeof(*cx));
    int rc;

    if (!cx)
        return -ENOMEM;
    cx->lp = lp;
    if (prm->from && prm->from[0]) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&cx->from;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&cx->from;
        if (inet_pton(AF_INET, prm->from, &s4->sin_addr) == 1) {
            s4->sin_family = AF_INET;
        } else if (inet_pton(AF_INET6, prm->from, &s6->sin6_addr) == 1) {
            s6->sin6_family = AF_INET6;
        } else {
            free(cx);
            return -EINVAL;
        }
        cx->has_from = true;
    }
    config_limits_default(&defaults);
    if ((rc = conn_new_outgoing(lp, p, prm->lim ? prm->lim : &defaults, prm->user, cout)) <
        0) {
        free(cx);
        return rc;
    }
    cx->c = *cout;
    cx->c->cx = cx;
    cx->timeout_ms = prm->timeout_ms ? prm->timeout_ms : CONNECT_DEFAULT_TIMEOUT_MS;
    uv_timer_init(&lp->uv, &cx->stagger);
    uv_timer_init(&lp->uv, &cx->timeout);
    cx->stagger.data = cx->timeout.data = cx;
    cx->refs = 2;
    uv_timer_start(&cx->timeout, timeout_cb, cx->timeout_ms, 0);
    *out = cx;
    return 0;
}

static void addrs_ready_cb(uv_timer_t *t)
{
    struct connector *cx = t->data;

    if (cx->c)
        connector_go(cx);
}

/* host and port as one address when they are literals (an IP address the
 * family allows, a decimal port): no resolver round trip through libuv's
 * thread pool. Anything else (names, service names, scoped addresses, a
 * family mismatch) goes to getaddrinfo, which reports it as before. */
static bool literal_addr(const char *host, const char *port, const struct connect_params *prm,
                         struct sockaddr_storage *ss)
{
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    unsigned long pn = 0;
    size_t i;

    for (i = 0; port[i] >= '0' && port[i] <= '9' && i < 5; i++)
        pn = pn * 10 + (unsigned long)(port[i] - '0');
    if (i == 0 || port[i] != '\0' || pn == 0 || pn > 65535)
        return false;
    memset(ss, 0, sizeof(*ss));
    if (prm->family != CONFIG_FAMILY_IPV6 && inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)pn);
    } else if (prm->family != CONFIG_FAMILY_IPV4 &&
               inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)pn);
    } else {
        return false;
    }
    /* A `from` of the other family leaves no usable address: let the
     * resolver path say so, as it always has. */
    if (prm->from && prm->from[0]) {
        unsigned char a[sizeof(struct in6_addr)];
        int fam = ss->ss_family == AF_INET ? AF_INET : AF_INET6;
        if (inet_pton(fam, prm->from, a) != 1)
            return false;
    }
    return true;
}

int connect_start(struct loop *lp, struct plugin *p, const char *host, const char *port,
                  const struct connect_params *prm, struct conn **out)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    struct sockaddr_storage lit;
    struct connector *cx;
    int rc;

    if (literal_addr(host, port, prm, &lit))
        return connect_start_addrs(lp, p, &lit, 1, prm, out);

    if (prm->family == CONFIG_FAMILY_IPV4)
        hints.ai_family = AF_INET;
    else if (prm->family == CONFIG_FAMILY_IPV6)
        hints.ai_family = AF_INET6;
    if ((rc = connector_new(lp, p, prm, &cx, out)) < 0)
        return rc;
    log_debug("conn %" PRIu64 ": resolving %s:%s", (*out)->id, host, port);
    cx->gai.data = cx;
    cx->refs++;
    if ((rc = uv_getaddrinfo(&lp->uv, &cx->gai, gai_cb, host, port, &hints)) < 0) {
        /* Reported from the loop like any failure, never inside this call. */
        cx->refs--;
        cx->last_err = rc;
        uv_timer_start(&cx->stagger, addrs_ready_cb, 0, 0);
    } else {
        cx->gai_active = true;
    }
    return 0;
}

int connect_start_addrs(struct loop *lp, struct plugin *p,
                        const struct sockaddr_storage *addrs, size_t n,
                        const struct connect_params *prm, struct conn **out)
{
    struct connector *cx;
    int rc;

    if (n > CONNECT_MAX_ADDRS)
        return -EINVAL;
    if ((rc = connector_new(lp, p, prm, &cx, out)) < 0)
        return rc;
    connector_set_addrs(cx, addrs, n);
    /* Callbacks never fire inside the call: start from the loop. */
    uv_timer_start(&cx->stagger, addrs_ready_cb, 0, 0);
    return 0;
}
