/*
 * epoll_relay: the smallest correct TCP relay, the floor bench/run compares
 * relays with: one thread, level-triggered epoll, non-blocking sockets, no
 * framework, no configuration.
 *
 *   epoll_relay copy|splice PORT UPSTREAM_PORT [HOST]   (HOST: 127.0.0.1)
 *
 * Each accepted client gets a connection to HOST:UPSTREAM_PORT and both
 * directions are relayed. `copy` moves bytes through a 64 KiB user-space
 * buffer per direction (read, then write), as connd, HAProxy and nginx do by
 * default; `splice` moves them through a pipe per direction with splice(2),
 * so they are never copied to user space (HAProxy's `option splice-*`).
 *
 * Per direction at most CHUNK bytes are in flight: the source is read only
 * when the buffer (or pipe) is empty, so a slow reader stops its writer
 * (backpressure) and memory stays bounded. EOF from one side is passed on as
 * a FIN once every byte before it is written; the pair closes when both
 * directions are done. An error or reset on either side resets both. A pipe
 * that holds bytes is never treated as empty: the relay counts what it put
 * there, since neither end can tell.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK (64 * 1024)

struct pair;

struct side {
    struct pair *pair;
    int fd, idx;
    uint32_t events; /* what epoll is asked for now */
    bool in_epoll;
};

/* dir[i] carries bytes from side[i] to side[1 - i]. */
struct dir {
    char *buf; /* copy */
    size_t off, len;
    int pipe[2]; /* splice */
    size_t in_pipe;
    bool eof;  /* the source sent its FIN */
    bool shut; /* and it was passed on */
};

struct pair {
    struct side side[2]; /* 0: the client, 1: the upstream */
    struct dir dir[2];
    bool connecting, dead;
    struct pair *next_dead;
};

static bool splice_mode;
static int ep;
static struct sockaddr_in upstream;
static struct pair *dead; /* freed after the epoll batch that killed them */

static size_t queued(const struct dir *d)
{
    return splice_mode ? d->in_pipe : d->len - d->off;
}

static void pair_kill(struct pair *p, bool reset)
{
    if (p->dead)
        return;
    for (int i = 0; i < 2; i++) {
        if (reset) {
            struct linger l = {1, 0};
            setsockopt(p->side[i].fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        }
        close(p->side[i].fd); /* leaves epoll with it */
        if (splice_mode) {
            if (p->dir[i].pipe[0] >= 0)
                close(p->dir[i].pipe[0]);
            if (p->dir[i].pipe[1] >= 0)
                close(p->dir[i].pipe[1]);
        } else {
            free(p->dir[i].buf);
        }
    }
    p->dead = true;
    p->next_dead = dead;
    dead = p;
}

/* Ask epoll for what each side can use now: input when its direction is
 * empty and open, output when the other direction has bytes for it. */
static void pair_watch(struct pair *p)
{
    for (int i = 0; i < 2; i++) {
        struct side *s = &p->side[i];
        uint32_t want = 0;

        if (p->connecting) {
            want = i == 1 ? EPOLLOUT : 0;
        } else {
            if (!p->dir[i].eof && !queued(&p->dir[i]))
                want |= EPOLLIN;
            if (queued(&p->dir[1 - i]))
                want |= EPOLLOUT;
            if (p->dir[i].eof && p->dir[1 - i].shut) {
                /* Done both ways; a hang-up would be reported forever. */
                if (s->in_epoll && epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL) == 0)
                    s->in_epoll = false;
                continue;
            }
        }
        if (want != s->events) {
            struct epoll_event ev = {.events = want, .data.ptr = s};
            if (epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev) == 0)
                s->events = want;
        }
    }
}

/* Write what direction i holds, then read once more if that emptied it,
 * then write again. Returns -1 on an error that ends the pair. */
static int pair_pump(struct pair *p, int i)
{
    struct dir *d = &p->dir[i];
    int src = p->side[i].fd, dst = p->side[1 - i].fd;

    for (int round = 0; round < 2; round++) {
        ssize_t n;

        if (queued(d)) {
            n = splice_mode ? splice(d->pipe[0], NULL, dst, NULL, d->in_pipe,
                                     SPLICE_F_NONBLOCK | SPLICE_F_MOVE)
                            : write(dst, d->buf + d->off, d->len - d->off);
            if (n < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : -1; /* wait for EPOLLOUT */
            if (splice_mode)
                d->in_pipe -= (size_t)n;
            else
                d->off += (size_t)n;
            if (queued(d))
                return 0;
        }
        if (round == 1 || d->eof)
            break;
        n = splice_mode ? splice(src, NULL, d->pipe[1], NULL, CHUNK,
                                 SPLICE_F_NONBLOCK | SPLICE_F_MOVE)
                        : read(src, d->buf, CHUNK);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            return -1;
        }
        if (n == 0) {
            d->eof = true;
            break;
        }
        if (splice_mode) {
            d->in_pipe = (size_t)n;
        } else {
            d->off = 0;
            d->len = (size_t)n;
        }
    }
    if (d->eof && !queued(d) && !d->shut) {
        shutdown(dst, SHUT_WR);
        d->shut = true;
    }
    return 0;
}

static int tcp_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void pair_new(int cfd)
{
    struct pair *p = calloc(1, sizeof(*p));
    int one = 1;

    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!p) {
        close(cfd);
        return;
    }
    p->side[0].fd = cfd;
    p->side[1].fd = tcp_socket();
    for (int i = 0; i < 2; i++) {
        p->side[i].pair = p;
        p->side[i].idx = i;
        p->dir[i].pipe[0] = p->dir[i].pipe[1] = -1;
    }
    p->connecting = true;
    for (int i = 0; i < 2; i++) {
        bool ok = splice_mode ? pipe2(p->dir[i].pipe, O_NONBLOCK | O_CLOEXEC) == 0
                              : (p->dir[i].buf = malloc(CHUNK)) != NULL;
        if (!ok || p->side[1].fd < 0) {
            perror("epoll_relay: new pair");
            pair_kill(p, true);
            return;
        }
        if (splice_mode)
            fcntl(p->dir[i].pipe[0], F_SETPIPE_SZ, CHUNK); /* the default is 64 KiB too */
    }
    if (connect(p->side[1].fd, (struct sockaddr *)&upstream, sizeof(upstream)) < 0 &&
        errno != EINPROGRESS) {
        pair_kill(p, true);
        return;
    }
    for (int i = 0; i < 2; i++) {
        struct epoll_event ev = {.events = i == 1 ? EPOLLOUT : 0,
                                 .data.ptr = &p->side[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, p->side[i].fd, &ev) < 0) {
            pair_kill(p, true);
            return;
        }
        p->side[i].events = ev.events;
        p->side[i].in_epoll = true;
    }
}

static void pair_event(struct side *s, uint32_t events)
{
    struct pair *p = s->pair;

    if (p->dead)
        return;
    if (p->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);

        if (s->idx == 0) {
            if (events & EPOLLERR)
                pair_kill(p, true);
            return;
        }
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            pair_kill(p, true);
            return;
        }
        p->connecting = false;
        events = EPOLLIN | EPOLLOUT; /* try both directions once */
    }
    if ((events & EPOLLERR) ||
        ((events & (EPOLLIN | EPOLLHUP)) && pair_pump(p, s->idx) < 0) ||
        ((events & (EPOLLOUT | EPOLLHUP)) && pair_pump(p, 1 - s->idx) < 0)) {
        pair_kill(p, true); /* a reset is passed on as a reset */
        return;
    }
    if (p->dir[0].shut && p->dir[1].shut)
        pair_kill(p, false);
    else
        pair_watch(p);
}

int main(int argc, char **argv)
{
    struct sockaddr_in addr = {.sin_family = AF_INET};
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL}, evs[256];
    const char *host = argc > 4 ? argv[4] : "127.0.0.1";
    int lfd, one = 1;

    if (argc < 4 || (strcmp(argv[1], "copy") != 0 && strcmp(argv[1], "splice") != 0)) {
        fprintf(stderr, "usage: epoll_relay copy|splice PORT UPSTREAM_PORT [HOST]\n");
        return 2;
    }
    splice_mode = strcmp(argv[1], "splice") == 0;
    signal(SIGPIPE, SIG_IGN); /* splice(2) to a reset socket has no MSG_NOSIGNAL */
    addr.sin_port = htons((uint16_t)atoi(argv[2]));
    upstream = addr;
    upstream.sin_port = htons((uint16_t)atoi(argv[3]));
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1 ||
        inet_pton(AF_INET, host, &upstream.sin_addr) != 1) {
        fprintf(stderr, "epoll_relay: bad IPv4 address %s\n", host);
        return 2;
    }
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 4096) < 0 ||
        (ep = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        perror("epoll_relay: listen");
        return 1;
    }
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);

        if (n < 0 && errno != EINTR) {
            perror("epoll_relay: epoll_wait");
            return 1;
        }
        for (int k = 0; k < n; k++) {
            if (evs[k].data.ptr) {
                pair_event(evs[k].data.ptr, evs[k].events);
                continue;
            }
            for (int c;
                 (c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;)
                pair_new(c);
        }
        while (dead) {
            struct pair *p = dead;
            dead = p->next_dead;
            free(p);
        }
    }
}
