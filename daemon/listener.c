/*
 * listener.c: listening sockets. The socket is made here (not by
 * uv_tcp_bind) and accepted with accept4 from a uv_poll callback, so a
 * pause is exact and cheap: stop the poll and new connections wait in the
 * kernel backlog. Pauses have reasons (limit, emfile, ctl); accepting
 * resumes when none is left. EMFILE/ENFILE pause the listener for
 * LISTENER_EMFILE_RETRY_MS, or until one of its connections closes,
 * instead of spinning on a readable socket that cannot be accepted.
 */
#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "events.h"
#include "log.h"
#include "loop.h"
#include "plugin.h"

#define LISTENER_ACCEPT_BATCH 64

void listener_format_addr(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";

    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%u", host, ntohs(s6->sin6_port));
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        snprintf(buf, len, "%s:%u", host, ntohs(s4->sin_port));
    } else {
        snprintf(buf, len, "?");
    }
}

static void listener_notify(struct listener *l,
                            void (*hook)(void *state, const char *listener))
{
    if (hook)
        hook(l->plugin->state, l->name);
}

static void listener_free(struct listener *l)
{
    struct listener **pp;

    for (pp = &l->lp->listeners; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    free(l->name);
    free(l->host);
    free(l->port);
    free(l);
}

static void listener_maybe_free(struct listener *l)
{
    if (l->closed && l->handles == 0 && l->active == 0)
        listener_free(l);
}

static void listener_handle_closed_cb(uv_handle_t *h)
{
    struct listener *l = h->data;
    l->handles--;
    listener_maybe_free(l);
}

static const char *listener_why(unsigned why)
{
    return why == LISTENER_PAUSE_LIMIT    ? "limit"
           : why == LISTENER_PAUSE_EMFILE ? "emfile"
           : why == LISTENER_PAUSE_MAX    ? "max_connections"
                                          : "ctl";
}

void listener_pause(struct listener *l, unsigned why)
{
    if (why & ~l->paused)
        events_listener(l->lp, EV_LISTENER_PAUSED, l, listener_why(why));
    l->paused |= why;
    if (l->polling) {
        uv_poll_stop(&l->poll);
        l->polling = false;
    }
}

static void listener_accept_cb(uv_poll_t *h, int status, int events);

void listener_resume(struct listener *l, unsigned why)
{
    if (why & l->paused)
        events_listener(l->lp, EV_LISTENER_RESUMED, l, listener_why(why));
    l->paused &= ~why;
    if (!l->paused && !l->closed && !l->polling) {
        int rc = uv_poll_start(&l->poll, UV_READABLE, listener_accept_cb);
        if (rc < 0)
            log_err("listener %s: resume: %s", l->name, uv_strerror(rc));
        else
            l->polling = true;
    }
}

static void listener_retry_cb(uv_timer_t *t)
{
    listener_resume(t->data, LISTENER_PAUSE_EMFILE);
}

static void listener_accept_cb(uv_poll_t *h, int status, int events)
{
    struct listener *l = h->data;

    (void)events;
    if (status < 0) {
        /* libuv stopped the watcher; try again after a pause. */
        log_warn("listener %s: poll: %s", l->name, uv_strerror(status));
        l->polling = false;
        listener_pause(l, LISTENER_PAUSE_EMFILE);
        uv_timer_start(&l->retry, listener_retry_cb, LISTENER_EMFILE_RETRY_MS, 0);
        return;
    }
    /* A bounded batch, so that one busy listener cannot starve the loop. */
    for (int i = 0; i < LISTENER_ACCEPT_BATCH && l->polling; i++) {
        int fd;

        if (l->limit && l->active >= l->limit) {
            log_debug("listener %s: at its limit of %u, pausing", l->name, l->limit);
            listener_pause(l, LISTENER_PAUSE_LIMIT);
            return;
        }
        if (l->lp->cfg->max_connections && l->lp->n_conns >= l->lp->cfg->max_connections) {
            /* Every listener waits: the cap is the daemon's, not this one's. */
            log_notice("listener %s: max_connections %zu reached, all listeners pause",
                       l->name, l->lp->cfg->max_connections);
            for (struct listener *o = l->lp->listeners; o; o = o->next)
                if (!o->closed)
                    listener_pause(o, LISTENER_PAUSE_MAX);
            return;
        }
        fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            switch (errno) {
            case EAGAIN:
                return;
            case EINTR:
            case ECONNABORTED:
            case EPROTO:
            case EPERM:
                continue;
            case EMFILE:
            case ENFILE:
            case ENOBUFS:
            case ENOMEM:
                l->emfile_pauses++;
                log_warn("listener %s: accept: %s: pausing for %d ms", l->name,
                         strerror(errno), LISTENER_EMFILE_RETRY_MS);
                listener_pause(l, LISTENER_PAUSE_EMFILE);
                uv_timer_start(&l->retry, listener_retry_cb, LISTENER_EMFILE_RETRY_MS, 0);
                return;
            default:
                log_warn("listener %s: accept: %s", l->name, strerror(errno));
                return;
            }
        }
        l->accepted++;
        l->active++;
        if (conn_accept(l->lp, l, l->plugin, fd) < 0)
            l->active--; /* no connection was made; it logged why */
    }
}

void listener_conn_closed(struct listener *l)
{
    l->active--;
    if (l->closed) {
        listener_maybe_free(l);
        return;
    }
    if ((l->paused & LISTENER_PAUSE_LIMIT) && l->active < l->limit)
        listener_resume(l, LISTENER_PAUSE_LIMIT);
    if (l->paused & LISTENER_PAUSE_EMFILE) {
        /* An fd was freed: try again now rather than at the timer. */
        uv_timer_stop(&l->retry);
        listener_resume(l, LISTENER_PAUSE_EMFILE);
    }
}

/* Resolve, bind and listen; returns the socket or a negative errno. */
static int listener_open_socket(struct listener *l, const struct config_listener *cfg)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char port[8];
    int fd = -1, one = 1, rc;

    snprintf(port, sizeof(port), "%u", cfg->port_num);
    if ((rc = getaddrinfo(cfg->host, port, &hints, &res)) != 0) {
        log_err("listener %s: resolve %s: %s", l->name, cfg->host, gai_strerror(rc));
        return -EINVAL;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        goto fail;
    if (res->ai_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
        goto fail;
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0)
        goto fail;
    freeaddrinfo(res);
    return fd;
fail:
    rc = -errno;
    log_err("listener %s: %s:%s: %s", l->name, cfg->host, cfg->port, strerror(errno));
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return rc;
}

/* A socket systemd passed: it must be a listening TCP socket; it is used
 * as it is (no bind), made non-blocking. Returns 0 or a negative errno. */
static int listener_adopt_socket(struct listener *l)
{
    int type = 0, listening = 0;
    socklen_t len = sizeof(int);

    if (getsockopt(l->fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM ||
        (len = sizeof(int), getsockopt(l->fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len)) < 0 ||
        !listening) {
        log_err("listener %s: the socket systemd passed (fd %d) is not a listening stream "
                "socket",
                l->name, l->fd);
        close(l->fd);
        return -ENOTSOCK;
    }
    if (fcntl(l->fd, F_SETFL, fcntl(l->fd, F_GETFL) | O_NONBLOCK) < 0) {
        int rc = -errno;
        close(l->fd);
        return rc;
    }
    log_info("listener %s: adopted the socket systemd passed (fd %d)", l->name, l->fd);
    return 0;
}

int listener_start(struct loop *lp, const struct config_listener *cfg, struct plugin *p,
                   struct listener **out)
{
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    struct listener *l;
    int rc;

    if (!(l = calloc(1, sizeof(*l))) || !(l->name = strdup(cfg->name)) ||
        !(l->host = strdup(cfg->host)) || !(l->port = strdup(cfg->port))) {
        if (l) {
            free(l->name);
            free(l->host);
        }
        free(l);
        return -ENOMEM;
    }
    l->lp = lp;
    l->plugin = p;
    l->limit = cfg->limit;
    l->lim = cfg->lim;
    if ((l->fd = sd_take_listen_fd(&lp->sd, cfg->name)) >= 0)
        rc = listener_adopt_socket(l);
    else
        rc = l->fd = listener_open_socket(l, cfg);
    if (rc < 0) {
        listener_notify(l, p->notify.not_listening);
        free(l->name);
        free(l->host);
        free(l->port);
        free(l);
        return rc;
    }
    if (getsockname(l->fd, (struct sockaddr *)&ss, &sslen) == 0)
        listener_format_addr((struct sockaddr *)&ss, l->local, sizeof(l->local));
    if ((rc = uv_poll_init_socket(&lp->uv, &l->poll, l->fd)) < 0) {
        log_err("listener %s: %s", l->name, uv_strerror(rc));
        close(l->fd);
        free(l->name);
        free(l->host);
        free(l->port);
        free(l);
        return rc;
    }
    uv_timer_init(&lp->uv, &l->retry);
    l->poll.data = l->retry.data = l;
    l->handles = 2;
    l->next = lp->listeners;
    lp->listeners = l;
    listener_resume(l, 0);
    log_notice("listener %s: listening on %s (plugin %s)", l->name, l->local, p->name);
    events_listener(lp, EV_LISTENER_ADDED, l, NULL);
    listener_notify(l, p->notify.listening);
    *out = l;
    return 0;
}

void listener_stop(struct listener *l)
{
    if (l->closed)
        return;
    listener_pause(l, 0);
    l->closed = true;
    uv_close((uv_handle_t *)&l->poll, listener_handle_closed_cb);
    uv_close((uv_handle_t *)&l->retry, listener_handle_closed_cb);
    close(l->fd); /* the poll is stopped: the fd has left the loop's epoll set */
    l->fd = -1;
    log_info("listener %s: closed (%zu connections stay)", l->name, l->active);
    events_listener(l->lp, EV_LISTENER_REMOVED, l, NULL);
    listener_notify(l, l->plugin->notify.listener_closed);
}

bool listener_same_address(const struct listener *l, const struct config_listener *cfg)
{
    return strcmp(l->host, cfg->host) == 0 && strcmp(l->port, cfg->port) == 0;
}

bool listener_same(const struct listener *l, const struct config_listener *cfg)
{
    return listener_same_address(l, cfg) && strcmp(l->plugin->name, cfg->plugin) == 0 &&
           l->limit == cfg->limit && memcmp(&l->lim, &cfg->lim, sizeof(l->lim)) == 0;
}

void listener_update(struct listener *l, const struct config_listener *cfg, struct plugin *p)
{
    l->plugin = p;
    l->limit = cfg->limit;
    l->lim = cfg->lim; /* for new connections; open ones keep theirs */
    if ((l->paused & LISTENER_PAUSE_LIMIT) && (!l->limit || l->active < l->limit))
        listener_resume(l, LISTENER_PAUSE_LIMIT);
    else if (l->limit && l->active >= l->limit)
        listener_pause(l, LISTENER_PAUSE_LIMIT);
}

struct listener *listener_find(struct loop *lp, const char *name)
{
    for (struct listener *l = lp->listeners; l; l = l->next)
        if (!l->closed && strcmp(l->name, name) == 0)
            return l;
    return NULL;
}

void listener_global_check(struct loop *lp)
{
    if (lp->cfg->max_connections && lp->n_conns >= lp->cfg->max_connections)
        return;
    for (struct listener *l = lp->listeners; l; l = l->next)
        if (!l->closed && (l->paused & LISTENER_PAUSE_MAX))
            listener_resume(l, LISTENER_PAUSE_MAX);
}
