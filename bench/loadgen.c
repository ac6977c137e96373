/*
 * loadgen: the load generator of bench/run. One file, plain epoll (no
 * libuv, so it shares no code path with what it measures), one thread.
 *
 *   loadgen rr      -p PORT [-c N] [-s BYTES] [-P DEPTH] [-d SEC]
 *   loadgen stream  -p PORT [-c N] [-s BYTES] [-w WINDOW] [-d SEC]
 *   loadgen connect -p PORT [-c N] [-s BYTES] [-d SEC]
 *   loadgen hold    -p PORT [-c N] [-d SEC] [-S NSRC] [--pid PID[,PID..]]
 *   loadgen ctl     -u SOCKET [-n CALLS] [--lists N]
 *
 * rr:      N connections, each keeps DEPTH requests of S bytes in flight
 *          and waits for their echo; req/s and latency p50/p99/p999 (us).
 * stream:  N connections write S-byte chunks and read the echo back
 *          continuously, at most WINDOW bytes unanswered per connection;
 *          MB/s (10^6 bytes of verified echo per second).
 * connect: N slots, each loops connect, send S bytes, read them back,
 *          close; connections/s and the latency of that whole cycle.
 * hold:    N idle connections held for SEC seconds, bound round robin to
 *          127.0.0.2 .. 127.0.0.(1+NSRC) so that more than the ephemeral
 *          port range fits; with --pid, the server's RSS and descriptor
 *          count before and after (RSS per connection).
 * ctl:     against connd's control socket: conn.list timed (--lists
 *          times), then CALLS conn.mute / conn.unmute round trips on ids
 *          taken from the list; p50/p99/max in microseconds.
 *
 * Integrity: the byte stream of every connection (rr, stream, connect) is
 * a window of a pseudo-random pattern (splitmix64 from --seed, 4 MiB + 4093
 * bytes, an odd length so that no power-of-two chunk size aliases it) that
 * starts at an offset drawn from a per-connection splitmix64 seed. Every
 * byte read back is compared with the byte sent at the same stream
 * position; a mismatch, or more bytes back than were sent, is a hard
 * error: the run stops, prints where, and exits 2. At the end of stream
 * and rr every connection must get back everything it sent (bounded by a
 * drain timeout) or that is a hard error too.
 *
 * Server cost: with --pid, rr, stream and connect also report the CPU
 * time the server's processes (every thread) spent during the measured
 * window, from /proc/PID/task/TID/schedstat, per request, per GB echoed or
 * per connection. On a shared, busy machine that is a steadier measure of
 * efficiency than throughput, which swings with whatever else runs.
 *
 * Runtime is bounded: the connect phase by -t, the measured phase by -W
 * (warm-up, not counted) plus -d, the drain after it by 5 s. SIGINT or
 * SIGTERM ends the measured phase early (the drain and checks still run).
 * The last line of standard output is machine-readable:
 *   RESULT mode=.. key=value ...
 * Exit status: 0 ok, 1 errors (connect failures, resets, timeouts),
 * 2 integrity failure, 3 usage or setup error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define PAT_L (((size_t)4 << 20) + 4093) /* pattern period: odd on purpose */
#define PAT_T ((size_t)1 << 20)          /* replicated tail: largest window */
#define RBUF ((size_t)256 << 10)         /* one recv() at most */
#define MAXEV 1024
#define DRAIN_NS (5ull * 1000000000ull)

enum { EXIT_OK = 0, EXIT_ERR = 1, EXIT_INTEGRITY = 2, EXIT_USAGE = 3 };

/* ---- options ------------------------------------------------------------ */

static struct {
    const char *mode, *host, *label, *unix_path, *pids;
    int port, conns, depth, nsrc, lists, calls;
    size_t size, window;
    double duration, warmup, timeout;
    uint64_t seed;
    bool ping, quiet;
} o = {
    .host = "127.0.0.1",
    .conns = -1,
    .depth = 1,
    .nsrc = -1,
    .lists = 3,
    .calls = 200,
    .size = 0,
    .duration = 5,
    .warmup = 0,
    .timeout = 10,
    .seed = 0x5eedc0ffee,
};

/* ---- small helpers ------------------------------------------------------ */

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void note(const char *fmt, ...)
{
    va_list ap;
    if (o.quiet)
        return;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    printf("RESULT mode=%s label=%s errors=1 integrity=unknown fatal=1\n",
           o.mode ? o.mode : "?", o.label ? o.label : "-");
    exit(EXIT_USAGE);
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Raise RLIMIT_NOFILE to want (the hard limit too, when allowed); return
 * the soft limit in force. */
static rlim_t raise_nofile(rlim_t want)
{
    struct rlimit rl;

    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_max < want) {
        struct rlimit up = {want, want};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            return want;
    }
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    if (rl.rlim_cur < 1024)
        rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return rl.rlim_cur;
}

/* ---- latency histogram: log-linear, 64 sub-buckets per power of two ----- */

#define HBUCKETS 4096
struct hist {
    uint64_t n, max, sum;
    uint64_t b[HBUCKETS];
};

static unsigned h_idx(uint64_t v)
{
    unsigned e, idx;
    if (v < 128)
        return (unsigned)v;
    e = 63u - (unsigned)__builtin_clzll(v);
    idx = (e - 6) * 64 + (unsigned)(v >> (e - 6));
    return idx < HBUCKETS ? idx : HBUCKETS - 1;
}

/* Midpoint of bucket idx (relative error under 1%). */
static double h_val(unsigned idx)
{
    unsigned k, m;
    if (idx < 128)
        return idx;
    k = idx / 64;
    m = idx % 64 + 64;
    return ((double)m + 0.5) * (double)(1ull << (k - 1));
}

static void h_add(struct hist *h, uint64_t v)
{
    h->b[h_idx(v)]++;
    h->n++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

/* Value at quantile q, in the unit recorded (ns), as microseconds. */
static double h_pct_us(const struct hist *h, double q)
{
    uint64_t want, acc = 0;
    if (h->n == 0)
        return 0;
    want = (uint64_t)ceil(q * (double)h->n);
    if (want == 0)
        want = 1;
    for (unsigned i = 0; i < HBUCKETS; i++) {
        acc += h->b[i];
        if (acc >= want) {
            double v = h_val(i);
            return (v > (double)h->max ? (double)h->max : v) / 1000.0;
        }
    }
    return (double)h->max / 1000.0;
}

/* ---- the pattern -------------------------------------------------------- */

static uint8_t *pat;

static void pattern_init(void)
{
    uint64_t s = o.seed;
    size_t words = (PAT_L + PAT_T + 7) / 8;

    pat = malloc(words * 8);
    if (!pat)
        die("out of memory");
    for (size_t i = 0; i < words; i++) {
        uint64_t w = splitmix(&s);
        memcpy(pat + i * 8, &w, 8);
    }
    memcpy(pat + PAT_L, pat, PAT_T); /* any window of <= PAT_T is contiguous */
}

static uint64_t stream_offset(uint64_t k)
{
    uint64_t s = o.seed ^ (k * 0xd1342543de82ef95ull) ^ 0xa5a5a5a5a5a5a5a5ull;
    return splitmix(&s) % PAT_L;
}

/* ---- connections -------------------------------------------------------- */

enum { C_IDLE, C_CONNECTING, C_OPEN, C_CLOSED };

struct conn {
    int fd, state;
    uint32_t gen;     /* epoll data: index | gen << 32, stale events dropped */
    uint32_t events;  /* current epoll mask */
    uint64_t off;     /* stream start in the pattern */
    uint64_t tx, rx;  /* bytes sent, bytes read back and verified */
    uint64_t goal;    /* rr / connect: bytes to send in total so far */
    uint64_t sent_reqs, done_reqs;
    uint64_t *ts;     /* rr: issue time of each request in flight (ring) */
    uint64_t t_start; /* connect: when the cycle started */
    uint64_t attempt;
};

static struct conn *conns;
static int nconns, ep = -1;
static struct sockaddr_in dst;
static uint8_t *rbuf;
static uint64_t errors, integrity_fail, attempts_total;
static char first_error[256];
static char fail_msg[512];

static void record_error(const char *fmt, ...)
{
    va_list ap;
    errors++;
    if (first_error[0])
        return;
    va_start(ap, fmt);
    vsnprintf(first_error, sizeof(first_error), fmt, ap);
    va_end(ap);
    note("first error: %s", first_error);
}

static uint64_t ev_data(int i)
{
    return (uint64_t)(uint32_t)i | ((uint64_t)conns[i].gen << 32);
}

static void set_events(int i, uint32_t ev)
{
    struct conn *c = &conns[i];
    struct epoll_event e = {.events = ev, .data.u64 = ev_data(i)};
    if (c->events == ev)
        return;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) == 0)
        c->events = ev;
}

static void conn_close(int i)
{
    struct conn *c = &conns[i];
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = C_CLOSED;
    c->events = 0;
    c->gen++;
}

/* Non-blocking connect of slot i (attempt k picks the source address). */
static int conn_start(int i, uint64_t k, uint32_t ev)
{
    struct conn *c = &conns[i];
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct epoll_event e;

    if (fd < 0)
        return -errno;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (o.nsrc > 0) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(k % (uint64_t)o.nsrc));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
            int err = errno;
            close(fd);
            return -err;
        }
    }
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        return -err;
    }
    c->fd = fd;
    c->state = C_CONNECTING;
    c->gen++;
    e.events = ev;
    e.data.u64 = ev_data(i);
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) {
        int err = errno;
        close(fd);
        c->fd = -1;
        c->state = C_CLOSED;
        return -err;
    }
    c->events = ev;
    return 0;
}

static int sock_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return errno;
    return err;
}

/* Open every connection (at most conc connects in flight) and leave each
 * established one registered with ev_open. Returns how many are up. */
static int connect_all(int conc, uint32_t ev_open)
{
    struct epoll_event evs[MAXEV];
    uint64_t deadline = now_ns() + (uint64_t)(o.timeout * 1e9);
    int next = 0, inflight = 0, up = 0;

    while ((next < nconns || inflight > 0) && now_ns() < deadline && !stop_flag) {
        while (next < nconns && inflight < conc) {
            int rc = conn_start(next, (uint64_t)next, EPOLLOUT);
            if (rc < 0) {
                conns[next].state = C_CLOSED;
                record_error("connect %d: %s", next, strerror(-rc));
                if (rc == -EMFILE || rc == -ENFILE || rc == -EADDRNOTAVAIL) {
                    for (int j = next + 1; j < nconns; j++)
                        conns[j].state = C_CLOSED;
                    errors += (uint64_t)(nconns - next - 1);
                    next = nconns;
                    break;
                }
            } else {
                inflight++;
            }
            next++;
        }
        int n = epoll_wait(ep, evs, MAXEV, 100);
        for (int k = 0; k < n; k++) {
            int i = (int)(uint32_t)evs[k].data.u64;
            struct conn *c = &conns[i];
            int err;
            if ((uint32_t)(evs[k].data.u64 >> 32) != c->gen || c->state != C_CONNECTING)
                continue;
            inflight--;
            if ((err = sock_error(c->fd)) != 0) {
                record_error("connect %d: %s", i, strerror(err));
                conn_close(i);
                continue;
            }
            c->state = C_OPEN;
            set_events(i, ev_open);
            up++;
        }
    }
    for (int i = 0; i < nconns; i++) {
        if (conns[i].state == C_CONNECTING) {
            record_error("connect %d: timed out", i);
            conn_close(i);
        } else if (conns[i].state == C_IDLE) {
            conns[i].state = C_CLOSED;
        }
    }
    return up;
}

/* ---- sending and verifying ---------------------------------------------- */

static void integrity(struct conn *c, int i, const char *fmt, ...)
{
    va_list ap;
    char msg[256];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!integrity_fail)
        snprintf(fail_msg, sizeof(fail_msg), "conn %d (stream offset %" PRIu64 "): %s", i,
                 c->off, msg);
    integrity_fail++;
    fprintf(stderr, "loadgen: INTEGRITY FAILURE: %s\n", fail_msg);
}

/* Send up to goal; returns false on a fatal socket error. Leaves EPOLLOUT
 * on exactly while something is left to send. */
static bool flush_out(int i, uint64_t goal)
{
    struct conn *c = &conns[i];
    while (c->tx < goal) {
        size_t want = goal - c->tx;
        ssize_t w;
        if (want > o.size)
            want = o.size;
        w = send(c->fd, pat + (c->off + c->tx) % PAT_L, want, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            record_error("send conn %d: %s", i, strerror(errno));
            conn_close(i);
            return false;
        }
        c->tx += (uint64_t)w;
        if ((size_t)w < want)
            break;
    }
    set_events(i, EPOLLIN | (c->tx < goal ? EPOLLOUT : 0));
    return true;
}

/* Read what is there, verify it. Returns bytes read (verified), or -1 when
 * the connection ended (closed here; an error was recorded). */
static ssize_t read_verify(int i)
{
    struct conn *c = &conns[i];
    ssize_t total = 0;

    for (int k = 0; k < 4; k++) {
        ssize_t r = recv(c->fd, rbuf, RBUF, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            record_error("recv conn %d: %s", i, strerror(errno));
            conn_close(i);
            return -1;
        }
        if (r == 0) {
            if (c->rx < c->tx)
                record_error("conn %d: EOF with %" PRIu64 " bytes not echoed", i,
                             c->tx - c->rx);
            else
                record_error("conn %d: unexpected EOF", i);
            conn_close(i);
            return -1;
        }
        if (c->rx + (uint64_t)r > c->tx) {
            integrity(c, i, "got %" PRIu64 " bytes back, only %" PRIu64 " were sent",
                      c->rx + (uint64_t)r, c->tx);
            conn_close(i);
            return -1;
        }
        const uint8_t *want = pat + (c->off + c->rx) % PAT_L;
        if (memcmp(rbuf, want, (size_t)r) != 0) {
            size_t at = 0;
            while (rbuf[at] == want[at])
                at++;
            integrity(c, i, "byte %" PRIu64 " of the stream: got 0x%02x, sent 0x%02x",
                      c->rx + at, rbuf[at], want[at]);
            conn_close(i);
            return -1;
        }
        c->rx += (uint64_t)r;
        total += r;
        if ((size_t)r < RBUF)
            break;
    }
    return total;
}

/* ---- server CPU time (--pid) -------------------------------------------- */

/* Nanoseconds on CPU of every thread of every --pid process, from
 * /proc/PID/task/TID/schedstat (nanosecond resolution, unlike the tick
 * counts of /proc/PID/stat). CPU per unit of work is far less sensitive to
 * a busy machine than throughput is. */
static uint64_t pids_cpu_ns(void)
{
    char buf[4096];
    uint64_t total = 0;

    if (!o.pids)
        return 0;
    snprintf(buf, sizeof(buf), "%s", o.pids);
    for (char *save = NULL, *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        char path[128];
        DIR *d;
        struct dirent *de;
        snprintf(path, sizeof(path), "/proc/%s/task", p);
        if (!(d = opendir(path)))
            continue;
        while ((de = readdir(d))) {
            char sp[640];
            unsigned long long ns;
            FILE *f;
            if (de->d_name[0] == '.')
                continue;
            snprintf(sp, sizeof(sp), "/proc/%s/task/%s/schedstat", p, de->d_name);
            if ((f = fopen(sp, "r"))) {
                if (fscanf(f, "%llu", &ns) == 1)
                    total += ns;
                fclose(f);
            }
        }
        closedir(d);
    }
    return total;
}

static uint64_t cpu_at_start, cpu_at_stop;
static bool cpu_started, cpu_stopped;

static void cpu_mark(uint64_t now, uint64_t t_meas, bool running)
{
    if (!o.pids)
        return;
    if (!cpu_started && now >= t_meas) {
        cpu_at_start = pids_cpu_ns();
        cpu_started = true;
    }
    if (cpu_started && !running && !cpu_stopped) {
        cpu_at_stop = pids_cpu_ns();
        cpu_stopped = true;
    }
}

/* " server_cpu_s=.. server_cpu_util=.. server_cpu_<unit>=.." */
static void print_cpu(double secs, double units, const char *unit, double scale)
{
    double cpu;
    if (!o.pids || !cpu_started || !cpu_stopped)
        return;
    cpu = (double)(cpu_at_stop - cpu_at_start) / 1e9;
    printf(" server_cpu_s=%.3f server_cpu_util=%.2f", cpu, secs > 1e-6 ? cpu / secs : 0.0);
    if (units > 0)
        printf(" server_cpu_%s=%.3f", unit, cpu * scale / units);
}

/* ---- rr and stream ------------------------------------------------------ */

static struct hist hist;

static void print_common(const char *mode, int up)
{
    printf("RESULT mode=%s label=%s conns=%d up=%d size=%zu", mode, o.label ? o.label : "-",
           nconns, up, o.size);
}

static int finish_status(void)
{
    if (integrity_fail)
        return EXIT_INTEGRITY;
    return errors ? EXIT_ERR : EXIT_OK;
}

static int run_rr_stream(bool rr)
{
    struct epoll_event evs[MAXEV];
    uint64_t t_meas, t_end, t_stop = 0, meas_bytes = 0, meas_reqs = 0;
    bool running = true;
    int up;

    for (int i = 0; i < nconns; i++) {
        conns[i].fd = -1;
        conns[i].off = stream_offset((uint64_t)i);
        if (rr && !(conns[i].ts = calloc((size_t)o.depth, sizeof(uint64_t))))
            die("out of memory");
    }
    up = connect_all(256, EPOLLIN);
    note("%s: %d of %d connections up", rr ? "rr" : "stream", up, nconns);
    if (up == 0) {
        print_common(rr ? "rr" : "stream", up);
        printf(" errors=%" PRIu64 " integrity=unknown first_error=\"%s\"\n", errors,
               first_error);
        return EXIT_ERR;
    }
    t_meas = now_ns() + (uint64_t)(o.warmup * 1e9);
    t_end = t_meas + (uint64_t)(o.duration * 1e9);

    /* Prime: every connection starts sending. */
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if (c->state != C_OPEN)
            continue;
        if (rr) {
            uint64_t t = now_ns();
            while (c->sent_reqs - c->done_reqs < (uint64_t)o.depth) {
                c->ts[c->sent_reqs % (uint64_t)o.depth] = t;
                c->sent_reqs++;
                c->goal += o.size;
            }
            flush_out(i, c->goal);
        } else {
            flush_out(i, o.window);
        }
    }

    for (;;) {
        uint64_t now = now_ns();
        int timeout_ms, n;

        cpu_mark(now, t_meas, running);
        if (running && (now >= t_end || stop_flag)) {
            running = false;
            t_stop = now < t_end ? now : t_end;
            cpu_mark(now, t_meas, running);
            /* Stop sending: what is left to send is what is already owed. */
            for (int i = 0; i < nconns; i++)
                if (conns[i].state == C_OPEN && !rr)
                    conns[i].goal = conns[i].tx;
        }
        if (!running) {
            bool drained = true;
            for (int i = 0; i < nconns && drained; i++) {
                struct conn *c = &conns[i];
                if (c->state == C_OPEN && (c->rx < c->tx || c->tx < c->goal))
                    drained = false;
            }
            if (drained || integrity_fail)
                break;
            if (now > t_stop + DRAIN_NS) {
                for (int i = 0; i < nconns; i++) {
                    struct conn *c = &conns[i];
                    if (c->state == C_OPEN && (c->rx < c->tx || c->tx < c->goal)) {
                        integrity(c, i,
                                  "drain timed out: %" PRIu64 " of %" PRIu64
                                  " bytes sent never came back",
                                  c->tx - c->rx, c->tx);
                    }
                }
                break;
            }
        }
        timeout_ms = running ? (int)((t_end - now) / 1000000) + 1 : 10;
        n = epoll_wait(ep, evs, MAXEV, timeout_ms);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int k = 0; k < n; k++) {
            int i = (int)(uint32_t)evs[k].data.u64;
            struct conn *c = &conns[i];
            ssize_t got = 0;

            if ((uint32_t)(evs[k].data.u64 >> 32) != c->gen || c->state != C_OPEN)
                continue;
            if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                if ((got = read_verify(i)) < 0) {
                    if (integrity_fail)
                        break;
                    continue;
                }
            }
            now = now_ns();
            if (rr) {
                /* Each request completes when its last byte is back. */
                while (c->done_reqs < c->sent_reqs &&
                       c->rx >= (c->done_reqs + 1) * (uint64_t)o.size) {
                    uint64_t t0 = c->ts[c->done_reqs % (uint64_t)o.depth];
                    if (running && t0 >= t_meas && now < t_end) {
                        h_add(&hist, now - t0);
                        meas_reqs++;
                    }
                    c->done_reqs++;
                }
                if (running) {
                    while (c->sent_reqs - c->done_reqs < (uint64_t)o.depth) {
                        c->ts[c->sent_reqs % (uint64_t)o.depth] = now;
                        c->sent_reqs++;
                        c->goal += o.size;
                    }
                }
                flush_out(i, c->goal);
            } else {
                if (running && now >= t_meas && now < t_end)
                    meas_bytes += (uint64_t)got;
                flush_out(i, running ? c->rx + o.window : c->goal);
            }
        }
        if (integrity_fail)
            break;
    }

    if (t_stop == 0)
        t_stop = now_ns() < t_end ? now_ns() : t_end;
    double secs = t_stop > t_meas ? (double)(t_stop - t_meas) / 1e9 : 0;
    uint64_t closed = 0;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if (c->state != C_OPEN)
            closed++;
        /* A connection that ended owing us bytes lost them. */
        if (c->state != C_OPEN && c->rx < c->tx && !integrity_fail)
            integrity(c, i, "connection ended with %" PRIu64 " of %" PRIu64
                            " bytes sent never echoed", c->tx - c->rx, c->tx);
    }
    if (secs <= 0)
        secs = 1e-9; /* rates come out as 0 below */
    print_common(rr ? "rr" : "stream", up);
    if (rr) {
        printf(" depth=%d duration_s=%.3f reqs=%" PRIu64 " reqs_per_s=%.0f p50_us=%.1f"
               " p99_us=%.1f p999_us=%.1f max_us=%.1f mean_us=%.1f mb_per_s=%.2f",
               o.depth, secs, meas_reqs, secs > 1e-6 ? (double)meas_reqs / secs : 0.0,
               h_pct_us(&hist, 0.50),
               h_pct_us(&hist, 0.99), h_pct_us(&hist, 0.999), (double)hist.max / 1000.0,
               hist.n ? (double)hist.sum / (double)hist.n / 1000.0 : 0.0,
               secs > 1e-6 ? (double)meas_reqs * (double)o.size / secs / 1e6 : 0.0);
        print_cpu(secs, (double)meas_reqs, "us_per_req", 1e6);
    } else {
        uint64_t total = 0;
        for (int i = 0; i < nconns; i++)
            total += conns[i].rx;
        printf(" window=%zu duration_s=%.3f bytes=%" PRIu64 " verified_bytes=%" PRIu64
               " mb_per_s=%.2f",
               o.window, secs, meas_bytes, total,
               secs > 1e-6 ? (double)meas_bytes / secs / 1e6 : 0.0);
        print_cpu(secs, (double)meas_bytes / 1e9, "ms_per_gb", 1e3);
    }
    printf(" closed_early=%" PRIu64 " errors=%" PRIu64 " integrity=%s", closed, errors,
           integrity_fail ? "fail" : "ok");
    if (integrity_fail)
        printf(" integrity_error=\"%s\"", fail_msg);
    else if (first_error[0])
        printf(" first_error=\"%s\"", first_error);
    printf("\n");
    return finish_status();
}

/* ---- connect ------------------------------------------------------------ */

static int cycle_start(int i, uint64_t now)
{
    struct conn *c = &conns[i];
    uint64_t k = attempts_total++;
    int rc;

    c->tx = c->rx = 0;
    c->goal = o.size;
    c->off = stream_offset(k);
    c->attempt = k;
    c->t_start = now;
    if ((rc = conn_start(i, k, EPOLLOUT)) < 0) {
        c->state = C_IDLE; /* retried on the next turn */
        record_error("connect: %s", strerror(-rc));
        return rc;
    }
    return 0;
}

static int run_connect(void)
{
    struct epoll_event evs[MAXEV];
    uint64_t t0 = now_ns(), t_meas = t0 + (uint64_t)(o.warmup * 1e9);
    uint64_t t_end = t_meas + (uint64_t)(o.duration * 1e9), t_stop = 0, done = 0;
    bool running = true;

    for (int i = 0; i < nconns; i++) {
        conns[i].fd = -1;
        cycle_start(i, t0);
    }
    for (;;) {
        uint64_t now = now_ns();
        bool any = false, idle = false;
        int n;

        cpu_mark(now, t_meas, running);
        if (running && (now >= t_end || stop_flag)) {
            running = false;
            t_stop = now < t_end ? now : t_end;
            cpu_mark(now, t_meas, running);
        }
        for (int i = 0; i < nconns; i++) {
            if (conns[i].state == C_IDLE && running) {
                if (cycle_start(i, now) < 0)
                    idle = true;
            }
            if (conns[i].state == C_CONNECTING || conns[i].state == C_OPEN)
                any = true;
        }
        if (!running && (!any || now > t_stop + DRAIN_NS))
            break;
        n = epoll_wait(ep, evs, MAXEV,
                       idle ? 1 : running ? (int)((t_end - now) / 1000000) + 1 : 10);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int k = 0; k < n; k++) {
            int i = (int)(uint32_t)evs[k].data.u64;
            struct conn *c = &conns[i];
            if ((uint32_t)(evs[k].data.u64 >> 32) != c->gen)
                continue;
            if (c->state == C_CONNECTING) {
                int err = sock_error(c->fd);
                if (err) {
                    record_error("connect: %s", strerror(err));
                    conn_close(i);
                    c->state = C_IDLE;
                    continue;
                }
                c->state = C_OPEN;
                flush_out(i, c->goal);
                continue;
            }
            if (c->state != C_OPEN)
                continue;
            if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                if (read_verify(i) < 0) {
                    if (integrity_fail)
                        goto out;
                    c->state = C_IDLE;
                    continue;
                }
            }
            if (c->state == C_OPEN && c->rx == c->goal) {
                uint64_t t = now_ns();
                conn_close(i);
                c->state = C_IDLE;
                if (t >= t_meas && t < t_end && c->t_start >= t_meas) {
                    h_add(&hist, t - c->t_start);
                    done++;
                }
                if (running)
                    cycle_start(i, t);
                continue;
            }
            if (c->state == C_OPEN && (evs[k].events & EPOLLOUT))
                flush_out(i, c->goal);
        }
    }
out:
    for (int i = 0; i < nconns; i++)
        if (conns[i].state == C_CONNECTING || conns[i].state == C_OPEN)
            conn_close(i);
    if (t_stop == 0)
        t_stop = now_ns() < t_end ? now_ns() : t_end;
    double secs = t_stop > t_meas ? (double)(t_stop - t_meas) / 1e9 : 1e-9;
    printf("RESULT mode=connect label=%s conns=%d size=%zu duration_s=%.3f connects=%" PRIu64
           " conns_per_s=%.0f p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f"
           " attempts=%" PRIu64 " errors=%" PRIu64 " integrity=%s",
           o.label ? o.label : "-", nconns, o.size, secs, done,
           secs > 1e-6 ? (double)done / secs : 0.0,
           h_pct_us(&hist, 0.50), h_pct_us(&hist, 0.99), h_pct_us(&hist, 0.999),
           (double)hist.max / 1000.0, attempts_total, errors, integrity_fail ? "fail" : "ok");
    print_cpu(secs, (double)done, "us_per_conn", 1e6);
    if (integrity_fail)
        printf(" integrity_error=\"%s\"", fail_msg);
    else if (first_error[0])
        printf(" first_error=\"%s\"", first_error);
    printf("\n");
    return finish_status();
}

/* ---- hold --------------------------------------------------------------- */

/* Sum of VmRSS (kB) and of open descriptors over the --pid list. */
static void sample_pids(long *rss_kb, long *fds)
{
    char buf[4096];
    *rss_kb = 0;
    *fds = 0;
    if (!o.pids)
        return;
    snprintf(buf, sizeof(buf), "%s", o.pids);
    for (char *save = NULL, *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        char path[64], line[256];
        FILE *f;
        DIR *d;
        struct dirent *de;
        snprintf(path, sizeof(path), "/proc/%s/status", p);
        if ((f = fopen(path, "r"))) {
            while (fgets(line, sizeof(line), f))
                if (!strncmp(line, "VmRSS:", 6))
                    *rss_kb += strtol(line + 6, NULL, 10);
            fclose(f);
        }
        snprintf(path, sizeof(path), "/proc/%s/fd", p);
        if ((d = opendir(path))) {
            while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                    (*fds)++;
            closedir(d);
        }
    }
}

static int run_hold(rlim_t fd_limit, int requested)
{
    struct epoll_event evs[MAXEV];
    long rss0, fds0, rss1 = 0, fds1 = 0;
    uint64_t t0, t_up, t_end, dropped = 0;
    int up, pinged = 0;

    for (int i = 0; i < nconns; i++)
        conns[i].fd = -1;
    /* The server may still be closing an earlier run's connections: take
     * the baseline once its descriptor count has settled. */
    sample_pids(&rss0, &fds0);
    for (int k = 0; o.pids && k < 100 && !stop_flag; k++) {
        long r, f;
        usleep(100000);
        sample_pids(&r, &f);
        bool same = f == fds0;
        rss0 = r;
        fds0 = f;
        if (same)
            break;
    }
    t0 = now_ns();
    up = connect_all(256, EPOLLIN | EPOLLRDHUP);
    t_up = now_ns();
    note("hold: %d of %d connections up in %.2f s", up, nconns, (double)(t_up - t0) / 1e9);
    if (o.ping) {
        /* One byte each way proves the server accepted and serves it. */
        uint8_t b = 0x5a;
        for (int i = 0; i < nconns; i++)
            if (conns[i].state == C_OPEN && send(conns[i].fd, &b, 1, MSG_NOSIGNAL) != 1)
                record_error("ping send conn %d: %s", i, strerror(errno));
        uint64_t deadline = now_ns() + (uint64_t)(o.timeout * 1e9);
        while (pinged < up && now_ns() < deadline && !stop_flag) {
            int n = epoll_wait(ep, evs, MAXEV, 100);
            for (int k = 0; k < n; k++) {
                int i = (int)(uint32_t)evs[k].data.u64;
                uint8_t r;
                if (conns[i].state != C_OPEN)
                    continue;
                if (recv(conns[i].fd, &r, 1, 0) == 1 && r == b) {
                    pinged++;
                } else {
                    record_error("ping conn %d: no echo", i);
                    conn_close(i);
                }
            }
        }
    }
    if (o.pids) {
        /* Wait until the server has accepted them all (its descriptors). */
        uint64_t deadline = now_ns() + (uint64_t)(o.timeout * 1e9);
        long last = -1;
        int stable = 0;
        for (;;) {
            sample_pids(&rss1, &fds1);
            if (fds1 - fds0 >= up && fds1 == last && ++stable >= 3)
                break;
            if (fds1 != last)
                stable = 0;
            last = fds1;
            if (now_ns() > deadline || stop_flag)
                break;
            usleep(100000);
        }
        usleep(300000);
        sample_pids(&rss1, &fds1);
    }
    printf("READY held=%d\n", up);
    fflush(stdout);

    uint64_t t_hold = now_ns();
    t_end = t_hold + (uint64_t)(o.duration * 1e9);
    while (!stop_flag) {
        uint64_t now = now_ns();
        if (now >= t_end)
            break;
        int n = epoll_wait(ep, evs, MAXEV, (int)((t_end - now) / 1000000) + 1);
        for (int k = 0; k < n; k++) {
            int i = (int)(uint32_t)evs[k].data.u64;
            uint8_t junk[64];
            if (conns[i].state != C_OPEN)
                continue;
            ssize_t r = recv(conns[i].fd, junk, sizeof(junk), MSG_DONTWAIT);
            if (r > 0)
                continue; /* a late echo: harmless */
            if (r < 0 && errno == EAGAIN)
                continue;
            dropped++;
            record_error("held conn %d dropped by the server", i);
            conn_close(i);
        }
    }
    long rss2, fds2;
    double held_s = (double)(now_ns() - t_hold) / 1e9;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    sample_pids(&rss2, &fds2);
    for (int i = 0; i < nconns; i++)
        if (conns[i].state == C_OPEN)
            conn_close(i);
    printf("RESULT mode=hold label=%s requested=%d conns=%d held=%d connect_s=%.3f"
           " hold_s=%.1f dropped=%" PRIu64 " fd_limit=%llu fd_hard_limit=%llu",
           o.label ? o.label : "-", requested, nconns, up, (double)(t_up - t0) / 1e9, held_s,
           dropped, (unsigned long long)fd_limit, (unsigned long long)rl.rlim_max);
    if (o.pids)
        printf(" server_fds_before=%ld server_fds_after=%ld server_rss_kb_before=%ld"
               " server_rss_kb_after=%ld server_rss_kb_end=%ld rss_per_conn_b=%.0f",
               fds0, fds1, rss0, rss1, rss2,
               up ? (double)(rss1 - rss0) * 1024.0 / up : 0.0);
    printf(" errors=%" PRIu64 " integrity=ok", errors);
    if (first_error[0])
        printf(" first_error=\"%s\"", first_error);
    printf("\n");
    return errors || up < requested ? EXIT_ERR : EXIT_OK;
}

/* ---- ctl: connd's control socket ---------------------------------------- */

static char *ctl_buf;
static size_t ctl_cap, ctl_len, ctl_line; /* ctl_line: length of the line */

/* Send one request and read one reply line (events are skipped). */
static int ctl_call(int fd, const char *req)
{
    size_t len = strlen(req), off = 0;

    while (off < len) {
        ssize_t w = write(fd, req + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        off += (size_t)w;
    }
    for (;;) {
        /* Drop the previous line, keep what followed it. */
        if (ctl_line) {
            memmove(ctl_buf, ctl_buf + ctl_line, ctl_len - ctl_line);
            ctl_len -= ctl_line;
            ctl_line = 0;
        }
        char *nl = ctl_len ? memchr(ctl_buf, '\n', ctl_len) : NULL;
        if (nl) {
            ctl_line = (size_t)(nl - ctl_buf) + 1;
            if (strncmp(ctl_buf, "{\"jsonrpc\":\"2.0\",\"method\":\"event\"", 33) == 0)
                continue; /* an event, not our reply */
            return 0;
        }
        if (ctl_cap - ctl_len < 65536) {
            ctl_cap = ctl_cap ? ctl_cap * 2 : 1 << 20;
            if (!(ctl_buf = realloc(ctl_buf, ctl_cap)))
                die("out of memory");
        }
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, (int)(o.timeout * 1000)) <= 0)
            return -ETIMEDOUT;
        ssize_t r = read(fd, ctl_buf + ctl_len, ctl_cap - ctl_len);
        if (r == 0)
            return -ECONNRESET;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        ctl_len += (size_t)r;
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank quantile of a sorted sample, in microseconds. */
static double q_us(const uint64_t *v, size_t n, double q)
{
    size_t k;
    if (n == 0)
        return 0;
    k = (size_t)ceil(q * (double)n);
    k = k ? k - 1 : 0;
    return (double)v[k < n ? k : n - 1] / 1000.0;
}

/* One {id: cid} call of method on the control socket; a reply that is not
 * a result is counted as an error, a broken socket ends the run. */
static void ctl_id_call(int fd, const char *method, int id, uint64_t cid)
{
    char req[160];
    int rc;

    snprintf(req, sizeof(req),
             "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"%s\",\"params\":{\"id\":%" PRIu64
             "}}\n",
             id, method, cid);
    if ((rc = ctl_call(fd, req)) < 0)
        die("%s: %s", method, strerror(-rc));
    if (!strstr(ctl_buf, "\"result\""))
        record_error("%s %" PRIu64 ": %.120s", method, cid, ctl_buf);
}

static int run_ctl(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), rc;
    uint64_t *list_ns, *mute_ns, *unmute_ns, *pair_ns, *ids = NULL;
    size_t nids = 0, idcap = 0, list_bytes = 0;
    char req[256];
    int id = 0;
    size_t nc = 0;

    if (!o.unix_path)
        die("ctl needs -u SOCKET");
    if (strlen(o.unix_path) >= sizeof(sa.sun_path))
        die("socket path too long");
    strcpy(sa.sun_path, o.unix_path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("connect %s: %s", o.unix_path, strerror(errno));
    list_ns = calloc((size_t)o.lists, sizeof(*list_ns));
    mute_ns = calloc((size_t)o.calls, sizeof(*mute_ns));
    unmute_ns = calloc((size_t)o.calls, sizeof(*unmute_ns));
    pair_ns = calloc((size_t)o.calls, sizeof(*pair_ns));
    if (!list_ns || !mute_ns || !unmute_ns || !pair_ns)
        die("out of memory");

    for (int k = 0; k < o.lists; k++) {
        uint64_t t = now_ns();
        snprintf(req, sizeof(req), "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"conn.list\"}\n",
                 ++id);
        if ((rc = ctl_call(fd, req)) < 0)
            die("conn.list: %s", strerror(-rc));
        list_ns[k] = now_ns() - t;
        list_bytes = ctl_line;
        if (!strstr(ctl_buf, "\"result\""))
            die("conn.list failed: %.200s", ctl_buf);
        if (k == 0) {
            /* Connection entries are the objects that start with "id". */
            for (char *p = ctl_buf; (p = memmem(p, ctl_line - (size_t)(p - ctl_buf),
                                                "{\"id\":", 6));
                 p += 6) {
                if (nids == idcap) {
                    idcap = idcap ? idcap * 2 : 1024;
                    if (!(ids = realloc(ids, idcap * sizeof(*ids))))
                        die("out of memory");
                }
                ids[nids++] = strtoull(p + 6, NULL, 10);
            }
        }
    }
    if (nids == 0)
        die("conn.list returned no connections");
    for (int k = 0; k < o.calls && !stop_flag; k++) {
        uint64_t cid = ids[((uint64_t)k * 7919u) % nids], t0, t1, t2;
        t0 = now_ns();
        ctl_id_call(fd, "conn.mute", ++id, cid);
        t1 = now_ns();
        ctl_id_call(fd, "conn.unmute", ++id, cid);
        t2 = now_ns();
        mute_ns[nc] = t1 - t0;
        unmute_ns[nc] = t2 - t1;
        pair_ns[nc] = t2 - t0;
        nc++;
    }
    if (nc == 0)
        die("interrupted before the first call");
    qsort(list_ns, (size_t)o.lists, sizeof(*list_ns), cmp_u64);
    qsort(mute_ns, nc, sizeof(*mute_ns), cmp_u64);
    qsort(unmute_ns, nc, sizeof(*unmute_ns), cmp_u64);
    qsort(pair_ns, nc, sizeof(*pair_ns), cmp_u64);
    printf("RESULT mode=ctl label=%s listed=%zu list_bytes=%zu lists=%d list_ms_min=%.1f"
           " list_ms_median=%.1f list_ms_max=%.1f calls=%d mute_p50_us=%.1f mute_p99_us=%.1f"
           " mute_max_us=%.1f unmute_p50_us=%.1f unmute_p99_us=%.1f unmute_max_us=%.1f"
           " pair_p50_us=%.1f pair_p99_us=%.1f errors=%" PRIu64 " integrity=ok\n",
           o.label ? o.label : "-", nids, list_bytes, o.lists, (double)list_ns[0] / 1e6,
           (double)list_ns[o.lists / 2] / 1e6, (double)list_ns[o.lists - 1] / 1e6, (int)nc,
           q_us(mute_ns, nc, 0.5), q_us(mute_ns, nc, 0.99), (double)mute_ns[nc - 1] / 1000.0,
           q_us(unmute_ns, nc, 0.5), q_us(unmute_ns, nc, 0.99),
           (double)unmute_ns[nc - 1] / 1000.0, q_us(pair_ns, nc, 0.5), q_us(pair_ns, nc, 0.99),
           errors);
    close(fd);
    free(list_ns);
    free(mute_ns);
    free(unmute_ns);
    free(pair_ns);
    free(ids);
    free(ctl_buf);
    return errors ? EXIT_ERR : EXIT_OK;
}

/* ---- main --------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loadgen rr|stream|connect|hold|ctl [options]\n"
            "  -H, --host ADDR      server IPv4 address (127.0.0.1)\n"
            "  -p, --port PORT      server port\n"
            "  -c, --conns N        connections (rr 32, stream 16, connect 16 slots, hold 1000)\n"
            "  -s, --size BYTES     request size (rr 64), write chunk (stream 65536),\n"
            "                       message (connect 64); at most 1 MiB\n"
            "  -P, --depth N        rr: requests in flight per connection (1)\n"
            "  -w, --window BYTES   stream: unanswered bytes per connection\n"
            "                       (default clamp(256 MiB / conns, 4 * size, 4 MiB))\n"
            "  -d, --duration SEC   measured time; hold: how long to hold (5)\n"
            "  -W, --warmup SEC     run this long before measuring (0)\n"
            "  -t, --timeout SEC    connect phase / ctl reply timeout (10)\n"
            "  -S, --sources N      bind round robin to 127.0.0.2..127.0.0.(1+N)\n"
            "                       (0: kernel's choice; default 8 for hold and connect)\n"
            "      --pid PID[,PID]  the server's processes: rr, stream, connect report\n"
            "                       their CPU time per request / GB / connection;\n"
            "                       hold: their RSS and descriptors\n"
            "      --ping           hold: one byte echoed per connection first\n"
            "  -u, --unix PATH      ctl: control socket\n"
            "  -n, --calls N        ctl: mute/unmute round trips (200)\n"
            "      --lists N        ctl: conn.list calls (3)\n"
            "  -L, --label TEXT     copied into the RESULT line\n"
            "      --seed N         pattern seed\n"
            "  -q, --quiet          no progress notes on stderr\n");
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"host", 1, 0, 'H'},    {"port", 1, 0, 'p'},   {"conns", 1, 0, 'c'},
        {"size", 1, 0, 's'},    {"depth", 1, 0, 'P'},  {"window", 1, 0, 'w'},
        {"duration", 1, 0, 'd'}, {"warmup", 1, 0, 'W'}, {"timeout", 1, 0, 't'},
        {"sources", 1, 0, 'S'}, {"pid", 1, 0, 1},      {"ping", 0, 0, 2},
        {"unix", 1, 0, 'u'},    {"calls", 1, 0, 'n'},  {"lists", 1, 0, 3},
        {"label", 1, 0, 'L'},   {"seed", 1, 0, 4},     {"quiet", 0, 0, 'q'},
        {"help", 0, 0, 'h'},    {0, 0, 0, 0}};
    int ch, rc, requested;
    rlim_t lim;

    if (argc < 2 || argv[1][0] == '-') {
        usage(argc >= 2 && !strcmp(argv[1], "--help") ? stdout : stderr);
        return argc >= 2 && !strcmp(argv[1], "--help") ? 0 : EXIT_USAGE;
    }
    o.mode = argv[1];
    optind = 2;
    while ((ch = getopt_long(argc, argv, "H:p:c:s:P:w:d:W:t:S:u:n:L:qh", lo, NULL)) != -1) {
        switch (ch) {
        case 'H': o.host = optarg; break;
        case 'p': o.port = atoi(optarg); break;
        case 'c': o.conns = atoi(optarg); break;
        case 's': o.size = strtoull(optarg, NULL, 0); break;
        case 'P': o.depth = atoi(optarg); break;
        case 'w': o.window = strtoull(optarg, NULL, 0); break;
        case 'd': o.duration = atof(optarg); break;
        case 'W': o.warmup = atof(optarg); break;
        case 't': o.timeout = atof(optarg); break;
        case 'S': o.nsrc = atoi(optarg); break;
        case 1: o.pids = optarg; break;
        case 2: o.ping = true; break;
        case 'u': o.unix_path = optarg; break;
        case 'n': o.calls = atoi(optarg); break;
        case 3: o.lists = atoi(optarg); break;
        case 'L': o.label = optarg; break;
        case 4: o.seed = strtoull(optarg, NULL, 0); break;
        case 'q': o.quiet = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (!strcmp(o.mode, "ctl")) {
        if (o.calls < 1 || o.lists < 1)
            die("-n and --lists must be positive");
        return run_ctl();
    }

    bool rr = !strcmp(o.mode, "rr"), st = !strcmp(o.mode, "stream"),
         cn = !strcmp(o.mode, "connect"), hd = !strcmp(o.mode, "hold");
    if (!rr && !st && !cn && !hd)
        die("unknown mode %s (rr, stream, connect, hold, ctl)", o.mode);
    if (o.port <= 0 || o.port > 65535)
        die("-p PORT is required");
    if (o.conns < 0)
        o.conns = rr ? 32 : st ? 16 : cn ? 16 : 1000;
    if (o.size == 0)
        o.size = st ? 65536 : 64;
    if (o.nsrc < 0)
        o.nsrc = (hd || cn) ? 8 : 0;
    if (o.conns < 1 || o.depth < 1 || o.size > PAT_T || o.nsrc > 250 || o.duration < 0)
        die("bad option value (conns >= 1, depth >= 1, size <= 1 MiB, sources <= 250)");
    if (st && o.window == 0) {
        size_t w = ((size_t)256 << 20) / (size_t)o.conns;
        if (w > ((size_t)4 << 20))
            w = (size_t)4 << 20;
        if (w < 4 * o.size)
            w = 4 * o.size;
        o.window = w;
    }
    if (st && o.window < o.size)
        o.window = o.size;
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)o.port);
    if (inet_pton(AF_INET, o.host, &dst.sin_addr) != 1)
        die("-H wants an IPv4 address, not %s", o.host);

    requested = o.conns;
    lim = raise_nofile((rlim_t)o.conns + 64);
    if ((rlim_t)o.conns + 16 > lim) {
        note("RLIMIT_NOFILE is %llu: %d connections cannot fit, using %llu",
             (unsigned long long)lim, o.conns, (unsigned long long)(lim - 16));
        o.conns = (int)(lim - 16);
    }
    nconns = o.conns;
    if (!(conns = calloc((size_t)nconns, sizeof(*conns))) || !(rbuf = malloc(RBUF)))
        die("out of memory");
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1: %s", strerror(errno));
    pattern_init();

    if (rr || st)
        rc = run_rr_stream(rr);
    else if (cn)
        rc = run_connect();
    else
        rc = run_hold(lim, requested);
    return rc;
}
