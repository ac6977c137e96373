/*
 * traffic.c: the soak's traffic client (tests/soak/run compiles it with cc;
 * no libuv, no connd headers). It keeps --conns connections to each of the
 * echo and proxy listeners and --victims to the victim (discard) listener,
 * on one non-blocking epoll loop, for --seconds. --safe-conns more go to
 * the "safe" echo listener, which the storm mutes but never closes or
 * aborts: any early EOF or reset there is a failure, not a fault.
 *
 * Every echo/proxy connection writes a pseudo-random stream that is a pure
 * function of (seed, offset), so any received byte can be checked against
 * the byte sent at that offset without keeping a copy. A connection lives
 * for one "session" of a random length: at the end it either half-closes
 * and expects every byte back followed by EOF (a clean end), or resets the
 * connection itself (SO_LINGER 0). Some sessions stop reading for a while
 * with a larger in-flight cap, so connd's write queue passes the listener's
 * high watermark and echo/proxy mute for backpressure.
 *
 * An EOF or reset that the client did not ask for is counted as a fault
 * (the storm closes and aborts connections); what was in flight may be
 * lost, so truncation is accepted. Corruption never is: a received byte
 * that differs from the byte sent at its offset, or a byte beyond what was
 * sent, is a mismatch. The victim connections only count the bytes that
 * conn.write put on them.
 *
 * Output: a line every --report seconds on stdout, a key=value stats file
 * rewritten every second (--stats), one line per fault (--faults: Unix
 * time in ms, kind, local port, eof or rst, state, whether it was reading,
 * bytes sent and echoed), and the final counters as key=value
 * lines after a line "final". Exit 0 when there was no mismatch, no stalled
 * connection, no fault on a safe connection and no unexpected connect
 * failure; 1 otherwise; 2 on usage.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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
#include <time.h>
#include <unistd.h>

enum kind { K_ECHO, K_PROXY, K_SAFE, K_VICTIM, K_N };
static const char *const kind_name[K_N] = {"echo", "proxy", "safe", "victim"};

enum state { S_WAIT, S_CONNECTING, S_OPEN, S_DRAINING };

struct conn {
    int fd;
    enum kind kind;
    enum state st;
    uint64_t seed;
    uint64_t sent, recvd; /* bytes written; bytes received (and checked) */
    uint64_t target;      /* session length: then half-close or reset */
    uint64_t cap;         /* most bytes in flight (sent - recvd) */
    bool reset_at_end;    /* end the session with SO_LINGER 0 */
    bool paused;          /* not reading until pause_until */
    uint64_t pause_until, next_victim_write;
    uint64_t retry_at, last_progress;
    uint32_t ev; /* the epoll mask registered, 0 when not registered */
    bool stalled;
};

struct counters {
    uint64_t sent, verified, victim_in, victim_out;
    uint64_t connects, sessions_clean, client_resets;
    uint64_t fault_eof[K_N], fault_rst[K_N], truncated;
    uint64_t mismatches, overruns, stalls;
    uint64_t connect_refused, connect_other, connect_addrnotavail;
    uint64_t pauses, drain_timeouts;
};

static struct counters ctr;
static unsigned live, nslots; /* connected now (open or draining); slots */
static int ep;
static struct sockaddr_in addr[K_N];
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static volatile sig_atomic_t stop_flag;
static uint64_t stall_ms = 60000;
static unsigned mismatch_reports;
static FILE *fault_log; /* --faults: one line per fault */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Wall-clock ms, for the fault log: to line up with connd's log. */
static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The client's own decisions (session lengths, pauses): not the data. */
static uint64_t rnd(void)
{
    rng_state = splitmix64(rng_state);
    return rng_state;
}

static uint64_t rnd_range(uint64_t lo, uint64_t hi) /* [lo, hi] */
{
    return lo + rnd() % (hi - lo + 1);
}

/* Byte `off` of the stream of `seed`: 8 bytes per splitmix64 word. */
static void gen(uint64_t seed, uint64_t off, uint8_t *buf, size_t len)
{
    size_t i = 0;

    while (i < len) {
        uint64_t w = splitmix64(seed ^ ((off + i) >> 3) * 0xd6e8feb86659fd93ull);
        unsigned b = (unsigned)((off + i) & 7);
        for (; b < 8 && i < len; b++, i++)
            buf[i] = (uint8_t)(w >> (8 * b));
    }
}

static void ep_set(struct conn *c, uint32_t want)
{
    struct epoll_event e = {.events = want, .data.ptr = c};

    if (want == c->ev)
        return;
    if (epoll_ctl(ep, c->ev ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e) < 0) {
        perror("traffic: epoll_ctl");
        exit(1);
    }
    c->ev = want;
}

static void conn_drop(struct conn *c, bool reset, uint64_t retry_ms)
{
    if (c->fd >= 0) {
        if (reset) {
            struct linger l = {1, 0};
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        }
        close(c->fd); /* also leaves the epoll set */
    }
    c->fd = -1;
    c->ev = 0;
    c->st = S_WAIT;
    c->retry_at = now_ms() + retry_ms;
}

/* A new session on a new socket: seed, length, in-flight cap, end. */
static void conn_start(struct conn *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        perror("traffic: socket");
        c->retry_at = now_ms() + 100;
        return;
    }
    c->fd = fd;
    c->seed = rnd();
    c->sent = c->recvd = 0;
    /* Log-uniform between 16 KiB and 16 MiB. */
    c->target = (uint64_t)1 << rnd_range(14, 23);
    c->target += rnd() % c->target;
    c->cap = 256 * 1024;
    c->reset_at_end = rnd() % 10 == 0;
    c->paused = false;
    c->stalled = false;
    c->next_victim_write = now_ms() + rnd_range(200, 2000);
    c->last_progress = now_ms();
    ctr.connects++;
    if (connect(fd, (struct sockaddr *)&addr[c->kind], sizeof(addr[c->kind])) < 0 &&
        errno != EINPROGRESS) {
        int e = errno;
        if (e == EADDRNOTAVAIL)
            ctr.connect_addrnotavail++;
        else if (e == ECONNREFUSED)
            ctr.connect_refused++;
        else
            ctr.connect_other++;
        fprintf(stderr, "traffic: connect %s: %s\n", kind_name[c->kind], strerror(e));
        conn_drop(c, false, 200);
        return;
    }
    c->st = S_CONNECTING;
    ep_set(c, EPOLLOUT);
}

/* An end the client did not ask for: a storm close or abort (or, on a
 * safe connection, a failure). */
static void conn_fault(struct conn *c, bool rst)
{
    static const char *const st_name[] = {"waiting", "connecting", "open", "half-closed"};

    if (c->kind == K_SAFE)
        fprintf(stderr,
                "traffic: UNEXPECTED %s on a safe connection (%s, %s): %" PRIu64
                " of %" PRIu64 " bytes echoed\n",
                rst ? "reset" : "EOF", st_name[c->st],
                c->paused ? "not reading" : "reading", c->recvd, c->sent);
    if (fault_log) {
        struct sockaddr_in a;
        socklen_t alen = sizeof(a);
        if (getsockname(c->fd, (struct sockaddr *)&a, &alen) < 0)
            a.sin_port = 0;
        fprintf(fault_log, "%" PRIu64 " %s %u %s %s %s %" PRIu64 " %" PRIu64 "\n",
                wall_ms(), kind_name[c->kind], ntohs(a.sin_port), rst ? "rst" : "eof",
                st_name[c->st], c->paused ? "paused" : "reading", c->sent, c->recvd);
    }
    if (rst)
        ctr.fault_rst[c->kind]++;
    else
        ctr.fault_eof[c->kind]++;
    if (c->kind != K_VICTIM)
        ctr.truncated += c->sent - c->recvd;
    conn_drop(c, false, rnd_range(0, 50));
}

static void report_mismatch(const struct conn *c, uint64_t off, uint8_t got, uint8_t want)
{
    if (mismatch_reports++ < 20)
        fprintf(stderr,
                "traffic: MISMATCH %s seed=%016" PRIx64 " offset=%" PRIu64
                " got=0x%02x want=0x%02x (sent %" PRIu64 ")\n",
                kind_name[c->kind], c->seed, off, got, want, c->sent);
}

static void conn_readable(struct conn *c)
{
    static uint8_t buf[65536], want[65536];

    for (int turns = 0; turns < 4; turns++) {
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            conn_fault(c, true);
            return;
        }
        if (n == 0) {
            if (c->kind != K_VICTIM && c->st == S_DRAINING && c->recvd == c->sent) {
                ctr.sessions_clean++;
                conn_drop(c, false, 0);
            } else {
                conn_fault(c, false);
            }
            return;
        }
        c->last_progress = now_ms();
        if (c->kind == K_VICTIM) {
            ctr.victim_in += (uint64_t)n;
            continue;
        }
        size_t ok = (size_t)n;
        if (c->recvd + (uint64_t)n > c->sent) {
            /* Bytes the client never sent: injected or duplicated. */
            ctr.overruns++;
            ctr.mismatches++;
            fprintf(stderr,
                    "traffic: MISMATCH %s seed=%016" PRIx64
                    ": %zd bytes at offset %" PRIu64 " but only %" PRIu64 " sent\n",
                    kind_name[c->kind], c->seed, n, c->recvd, c->sent);
            ok = (size_t)(c->sent - c->recvd);
        }
        gen(c->seed, c->recvd, want, ok);
        if (memcmp(buf, want, ok) != 0) {
            for (size_t i = 0; i < ok; i++)
                if (buf[i] != want[i]) {
                    ctr.mismatches++;
                    report_mismatch(c, c->recvd + i, buf[i], want[i]);
                }
        }
        c->recvd += (uint64_t)n;
        ctr.verified += ok;
        if (ok != (size_t)n) {
            conn_drop(c, true, 100);
            return;
        }
    }
}

static void conn_writable(struct conn *c)
{
    static uint8_t buf[32768];

    if (c->kind == K_VICTIM) {
        /* A little for discard to read, now and then. */
        ssize_t n = write(c->fd, "victim\n", 7);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            conn_fault(c, true);
            return;
        }
        if (n > 0)
            ctr.victim_out += (uint64_t)n;
        c->next_victim_write = now_ms() + rnd_range(200, 2000);
        return;
    }
    for (int turns = 0; turns < 4 && c->sent < c->target; turns++) {
        uint64_t room = c->cap - (c->sent - c->recvd);
        size_t len = (size_t)rnd_range(1, sizeof(buf));
        if (room == 0)
            break;
        if (len > room)
            len = (size_t)room;
        if (len > c->target - c->sent)
            len = (size_t)(c->target - c->sent);
        gen(c->seed, c->sent, buf, len);
        ssize_t n = write(c->fd, buf, len);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            conn_fault(c, true);
            return;
        }
        c->sent += (uint64_t)n;
        ctr.sent += (uint64_t)n;
        c->last_progress = now_ms();
    }
    if (c->sent == c->target && c->st == S_OPEN) {
        if (c->reset_at_end) {
            ctr.client_resets++;
            conn_drop(c, true, 0);
            return;
        }
        shutdown(c->fd, SHUT_WR);
        c->st = S_DRAINING;
        c->last_progress = now_ms();
    }
}

static void conn_connected(struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);

    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err == ECONNRESET) {
        /* Accepted, then aborted (a mass abort) before we saw it up. */
        conn_fault(c, true);
        return;
    }
    if (err) {
        if (err == ECONNREFUSED)
            ctr.connect_refused++;
        else
            ctr.connect_other++;
        fprintf(stderr, "traffic: connect %s: %s\n", kind_name[c->kind], strerror(err));
        conn_drop(c, false, 200);
        return;
    }
    c->st = S_OPEN;
    c->last_progress = now_ms();
}

/* The epoll mask a connection wants now. */
static void conn_arm(struct conn *c)
{
    uint32_t want = 0;

    if (c->fd < 0)
        return;
    if (c->st == S_CONNECTING) {
        want = EPOLLOUT;
    } else if (c->kind == K_VICTIM) {
        want = EPOLLIN | (now_ms() >= c->next_victim_write ? EPOLLOUT : 0);
    } else {
        if (!c->paused)
            want |= EPOLLIN;
        if (c->st == S_OPEN && c->sent < c->target && c->sent - c->recvd < c->cap)
            want |= EPOLLOUT;
    }
    /* A paused connection that wants nothing stays registered with no
     * events, so that it costs nothing until it is resumed. */
    ep_set(c, want ? want : EPOLLET);
}

static void conn_event(struct conn *c, uint32_t events)
{
    if (c->st == S_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            conn_connected(c);
    } else {
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            conn_readable(c);
        if (c->fd >= 0 && (events & EPOLLOUT))
            conn_writable(c);
    }
    conn_arm(c);
}

/* Once every tick: reconnects, pauses, stalls. */
static void conn_tick(struct conn *c, uint64_t now)
{
    if (c->st == S_WAIT) {
        if (now >= c->retry_at)
            conn_start(c);
        return;
    }
    /* A pause ends whatever the state: a session may have half-closed
     * while paused, and it must read its echo to finish. */
    if (c->paused && now >= c->pause_until) {
        c->paused = false;
        c->cap = 256 * 1024;
        c->last_progress = now;
    }
    if (c->kind != K_VICTIM && c->st == S_OPEN) {
        if (!c->paused && rnd() % 2000 == 0) {
            /* About once per 100 s per connection: stop reading for up
             * to 3 s with room for 4 MiB in flight. */
            c->paused = true;
            c->cap = 4u << 20;
            c->pause_until = now + rnd_range(300, 3000);
            ctr.pauses++;
        }
    }
    if (!c->paused && !c->stalled && now - c->last_progress > stall_ms) {
        bool waiting = c->st == S_CONNECTING || c->st == S_DRAINING ||
                       (c->kind != K_VICTIM && c->sent > c->recvd);
        if (waiting) {
            c->stalled = true;
            ctr.stalls++;
            fprintf(stderr,
                    "traffic: STALL %s state %d: no progress for %" PRIu64
                    " ms (sent %" PRIu64 ", received %" PRIu64 ")\n",
                    kind_name[c->kind], (int)c->st, now - c->last_progress, c->sent,
                    c->recvd);
        }
    }
    conn_arm(c);
}

static void write_stats(FILE *f)
{
    fprintf(f,
            "sent=%" PRIu64 "\nverified=%" PRIu64 "\nvictim_in=%" PRIu64
            "\nvictim_out=%" PRIu64 "\nconnects=%" PRIu64 "\nsessions_clean=%" PRIu64
            "\nclient_resets=%" PRIu64 "\n",
            ctr.sent, ctr.verified, ctr.victim_in, ctr.victim_out, ctr.connects,
            ctr.sessions_clean, ctr.client_resets);
    for (int k = 0; k < K_N; k++)
        fprintf(f, "fault_eof_%s=%" PRIu64 "\nfault_rst_%s=%" PRIu64 "\n", kind_name[k],
                ctr.fault_eof[k], kind_name[k], ctr.fault_rst[k]);
    fprintf(f,
            "truncated=%" PRIu64 "\nmismatches=%" PRIu64 "\noverruns=%" PRIu64
            "\nstalls=%" PRIu64 "\nconnect_refused=%" PRIu64 "\nconnect_other=%" PRIu64
            "\nconnect_addrnotavail=%" PRIu64 "\npauses=%" PRIu64 "\n",
            ctr.truncated, ctr.mismatches, ctr.overruns, ctr.stalls, ctr.connect_refused,
            ctr.connect_other, ctr.connect_addrnotavail, ctr.pauses);
    fprintf(f, "live=%u\nslots=%u\n", live, nslots);
}

static void stats_file(const char *path)
{
    char tmp[4096];
    FILE *f;

    if (!path)
        return;
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (!(f = fopen(tmp, "w")))
        return;
    write_stats(f);
    if (fclose(f) == 0)
        rename(tmp, path);
}

static uint64_t faults_total(void)
{
    uint64_t t = 0;

    for (int k = 0; k < K_N; k++)
        t += ctr.fault_eof[k] + ctr.fault_rst[k];
    return t;
}

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: traffic --echo PORT --proxy PORT [--victim PORT] [--safe PORT]\n"
            "               [--conns N] [--victims N] [--safe-conns N]\n"
            "               [--seconds S] [--stats FILE] [--faults FILE]\n"
            "               [--report S] [--seed N] [--stall-ms MS]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int port[K_N] = {0, 0, 0, 0};
    unsigned nconns = 200, nvictims = 20, nsafe = 50;
    double seconds = 60, report_s = 10;
    const char *stats = NULL;
    uint64_t seed = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 20;
    struct conn *conns;
    size_t n = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (!strcmp(a, "--echo"))
            port[K_ECHO] = atoi(v);
        else if (!strcmp(a, "--proxy"))
            port[K_PROXY] = atoi(v);
        else if (!strcmp(a, "--victim"))
            port[K_VICTIM] = atoi(v);
        else if (!strcmp(a, "--safe"))
            port[K_SAFE] = atoi(v);
        else if (!strcmp(a, "--safe-conns"))
            nsafe = (unsigned)atoi(v);
        else if (!strcmp(a, "--conns"))
            nconns = (unsigned)atoi(v);
        else if (!strcmp(a, "--victims"))
            nvictims = (unsigned)atoi(v);
        else if (!strcmp(a, "--seconds"))
            seconds = atof(v);
        else if (!strcmp(a, "--report"))
            report_s = atof(v);
        else if (!strcmp(a, "--stats"))
            stats = v;
        else if (!strcmp(a, "--seed"))
            seed = strtoull(v, NULL, 0);
        else if (!strcmp(a, "--faults")) {
            if (!(fault_log = fopen(v, "w"))) {
                perror(v);
                return 2;
            }
            setvbuf(fault_log, NULL, _IOLBF, 0);
        } else if (!strcmp(a, "--stall-ms"))
            stall_ms = strtoull(v, NULL, 0);
        else
            usage();
        i++;
    }
    if (!port[K_ECHO] || !port[K_PROXY] || seconds <= 0)
        usage();
    if (!port[K_VICTIM])
        nvictims = 0;
    if (!port[K_SAFE])
        nsafe = 0;
    rng_state = seed;
    printf("traffic: seed %" PRIu64
           ", %u echo + %u proxy + %u safe + %u victim connections, %.1f s\n",
           seed, nconns, nconns, nsafe, nvictims, seconds);
    fflush(stdout);

    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    for (int k = 0; k < K_N; k++) {
        addr[k].sin_family = AF_INET;
        addr[k].sin_port = htons((uint16_t)port[k]);
        addr[k].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        perror("traffic: epoll_create1");
        return 1;
    }
    nslots = 2 * nconns + nsafe + nvictims;
    conns = calloc(nslots, sizeof(*conns));
    if (!conns)
        return 1;
    for (unsigned i = 0; i < nslots; i++) {
        struct conn *c = &conns[n++];
        c->fd = -1;
        c->kind = i < nconns               ? K_ECHO
                  : i < 2 * nconns         ? K_PROXY
                  : i < 2 * nconns + nsafe ? K_SAFE
                                           : K_VICTIM;
        c->st = S_WAIT;
        c->retry_at = 0;
    }

    uint64_t start = now_ms(), end = start + (uint64_t)(seconds * 1000);
    uint64_t next_tick = 0, next_stats = 0,
             next_report = start + (uint64_t)(report_s * 1000);
    uint64_t last_verified = 0, last_report = start;
    struct epoll_event evs[256];

    while (!stop_flag) {
        uint64_t now = now_ms();
        if (now >= end)
            break;
        if (now >= next_tick) {
            live = 0;
            for (size_t i = 0; i < n; i++) {
                conn_tick(&conns[i], now);
                live += conns[i].st == S_OPEN || conns[i].st == S_DRAINING;
            }
            next_tick = now + 50;
        }
        if (now >= next_stats) {
            stats_file(stats);
            next_stats = now + 1000;
        }
        if (report_s > 0 && now >= next_report) {
            double dt = (double)(now - last_report) / 1000.0;
            printf("traffic: t=%.0fs sent=%.1fMiB verified=%.1fMiB (%.1f MiB/s) "
                   "connects=%" PRIu64 " clean=%" PRIu64 " faults=%" PRIu64
                   " mismatches=%" PRIu64 " stalls=%" PRIu64 " victim_in=%" PRIu64 "\n",
                   (double)(now - start) / 1000.0, (double)ctr.sent / 1048576.0,
                   (double)ctr.verified / 1048576.0,
                   (double)(ctr.verified - last_verified) / 1048576.0 / dt, ctr.connects,
                   ctr.sessions_clean, faults_total(), ctr.mismatches, ctr.stalls,
                   ctr.victim_in);
            fflush(stdout);
            last_verified = ctr.verified;
            last_report = now;
            next_report = now + (uint64_t)(report_s * 1000);
        }
        int k = epoll_wait(ep, evs, 256, 50);
        if (k < 0 && errno != EINTR) {
            perror("traffic: epoll_wait");
            return 1;
        }
        for (int i = 0; i < k; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->fd >= 0)
                conn_event(c, evs[i].events);
        }
    }

    /* Close everything: a plain close, which connd sees as EOF or (with
     * unread data) a reset. */
    for (size_t i = 0; i < n; i++)
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    free(conns);
    live = 0;
    stats_file(stats);
    printf("final\nseconds=%.1f\n", (double)(now_ms() - start) / 1000.0);
    write_stats(stdout);
    fflush(stdout);
    return ctr.mismatches || ctr.stalls || ctr.connect_refused || ctr.connect_other ||
           ctr.fault_eof[K_SAFE] || ctr.fault_rst[K_SAFE];
}
