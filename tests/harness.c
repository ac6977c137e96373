/*
 * harness.c: see harness.h. The daemon is a child process; its stderr is a
 * pipe the test reads with poll(2), so every wait is bounded.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void fill_random(void *buf, size_t len, uint64_t seed)
{
    uint8_t *p = buf;
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)(x >> 24);
    }
}

/* Replace every "@KEY@" of the template; returns a malloc'd string. */
static char *expand(const char *tmpl, const char *dir)
{
    static const struct {
        const char *key, *val;
    } subst[] = {{"@PLUGINS@", CONND_PLUGIN_BUILD_DIR},
                 {"@TPLUGINS@", CONND_TEST_PLUGIN_DIR},
                 {"@DIR@", NULL}};
    size_t cap = strlen(tmpl) * 2 + 4096, n = 0;
    char *out = malloc(cap);

    while (*tmpl) {
        size_t i;
        for (i = 0; i < sizeof(subst) / sizeof(subst[0]); i++) {
            size_t kl = strlen(subst[i].key);
            if (strncmp(tmpl, subst[i].key, kl) == 0) {
                const char *v = subst[i].val ? subst[i].val : dir;
                size_t vl = strlen(v);
                if (n + vl + 1 >= cap)
                    out = realloc(out, cap = (n + vl) * 2 + 1);
                memcpy(out + n, v, vl);
                n += vl;
                tmpl += kl;
                break;
            }
        }
        if (i == sizeof(subst) / sizeof(subst[0])) {
            if (n + 2 >= cap)
                out = realloc(out, cap *= 2);
            out[n++] = *tmpl++;
        }
    }
    out[n] = '\0';
    return out;
}

int daemon_write_config(const struct daemon *d, const char *config_json)
{
    char *text = expand(config_json, d->dir);
    FILE *f;
    int rc = 0;

    if (!(f = fopen(d->cfg_path, "w"))) {
        rc = -errno;
        free(text);
        return rc;
    }
    if (fputs(text, f) < 0)
        rc = -EIO;
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    free(text);
    return rc;
}

int daemon_spawn(struct daemon *d, const char *config_json, const char *const *prefix,
                 const char *const *extra_args)
{
    const char *argv[48], *wrapper;
    int pipefd[2], argc = 0;

    memset(d, 0, sizeof(*d));
    d->status = -1;
    d->err_fd = -1;
    snprintf(d->dir, sizeof(d->dir), "/tmp/connd-test-XXXXXX");
    if (!mkdtemp(d->dir))
        return -1;
    snprintf(d->cfg_path, sizeof(d->cfg_path), "%s/connd.json", d->dir);
    if (daemon_write_config(d, config_json) < 0)
        return -1;
    d->log_cap = 65536;
    d->log = calloc(1, d->log_cap);

    for (int i = 0; prefix && prefix[i] && argc < 16; i++)
        argv[argc++] = prefix[i];
    /* CONND_TEST_WRAPPER="valgrind --error-exitcode=99 ..." runs every
     * daemon under that command (words split on spaces). */
    if ((wrapper = getenv("CONND_TEST_WRAPPER")) && *wrapper) {
        snprintf(d->wrapper, sizeof(d->wrapper), "%s", wrapper);
        for (char *w = strtok(d->wrapper, " "); w && argc < 30; w = strtok(NULL, " "))
            argv[argc++] = w;
    }
    argv[argc++] = CONND_BIN;
    argv[argc++] = "-c";
    argv[argc++] = d->cfg_path;
    argv[argc++] = "--log-level";
    argv[argc++] = "debug";
    /* Each daemon gets its own control socket unless the test picks one. */
    snprintf(d->ctl_path, sizeof(d->ctl_path), "%s/control.sock", d->dir);
    if (!strstr(config_json, "\"control\"")) {
        argv[argc++] = "-s";
        argv[argc++] = d->ctl_path;
    }
    for (int i = 0; extra_args && extra_args[i] && argc < 46; i++)
        argv[argc++] = extra_args[i];
    argv[argc] = NULL;
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return -1;
    d->pid = fork();
    if (d->pid < 0)
        return -1;
    if (d->pid == 0) {
        dup2(pipefd[1], STDERR_FILENO);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pipefd[1]);
    d->err_fd = pipefd[0];
    /* A chatty daemon must not block on a full pipe while a test is busy
     * elsewhere: give the log room. */
    fcntl(d->err_fd, F_SETPIPE_SZ, 1 << 20);
    fcntl(d->err_fd, F_SETFL, O_NONBLOCK);
    return 0;
}

/* Read what is available within timeout_ms; false on EOF. */
static bool daemon_read_some(struct daemon *d, int timeout_ms)
{
    struct pollfd pfd = {.fd = d->err_fd, .events = POLLIN};
    ssize_t n;

    if (d->err_fd < 0)
        return false;
    if (poll(&pfd, 1, timeout_ms) <= 0)
        return true;
    if (d->log_len + 4097 > d->log_cap) {
        d->log_cap *= 2;
        d->log = realloc(d->log, d->log_cap);
    }
    n = read(d->err_fd, d->log + d->log_len, 4096);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN)
            return true;
        close(d->err_fd);
        d->err_fd = -1;
        return false;
    }
    d->log_len += (size_t)n;
    d->log[d->log_len] = '\0';
    return true;
}

bool daemon_wait_log(struct daemon *d, const char *needle, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;

    for (;;) {
        char *hit = strstr(d->log + d->log_mark, needle);
        if (hit) {
            d->log_mark = (size_t)(hit - d->log) + strlen(needle);
            return true;
        }
        uint64_t now = now_ms();
        if (now >= end)
            return false;
        if (!daemon_read_some(d, (int)(end - now > 100 ? 100 : end - now)) &&
            !strstr(d->log + d->log_mark, needle))
            return false;
    }
}

void daemon_drain_log(struct daemon *d, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (now_ms() < end && daemon_read_some(d, 20))
        ;
}

int daemon_count_log(struct daemon *d, const char *needle)
{
    int n = 0;
    for (const char *p = d->log; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

int daemon_start_cmd(struct daemon *d, const char *config_json, const char *const *prefix,
                     const char *const *extra_args)
{
    if (daemon_spawn(d, config_json, prefix, extra_args) < 0)
        return -1;
    if (!daemon_wait_log(d, "notice: ready:", 10000)) {
        fprintf(stderr, "connd did not start; its log:\n%s\n", d->log);
        return -1;
    }
    return 0;
}

int daemon_start(struct daemon *d, const char *config_json, const char *const *extra_args)
{
    return daemon_start_cmd(d, config_json, NULL, extra_args);
}

int daemon_port(struct daemon *d, const char *name)
{
    char needle[128];
    const char *p;

    snprintf(needle, sizeof(needle), "listener %s: listening on ", name);
    if (!(p = strstr(d->log, needle)))
        return -1;
    p += strlen(needle);
    /* "127.0.0.1:7000" or "[::1]:7000": the port follows the last colon. */
    const char *end = strchr(p, ' ');
    const char *colon = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == ':')
            colon = q;
    return colon ? atoi(colon + 1) : -1;
}

static int wait_exit(struct daemon *d, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    int st;

    while (now_ms() < end) {
        pid_t r = waitpid(d->pid, &st, WNOHANG);
        if (r == d->pid) {
            d->status = st;
            daemon_drain_log(d, 50);
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        daemon_read_some(d, 20);
    }
    return -2;
}

int daemon_stop(struct daemon *d, int sig, int timeout_ms)
{
    int rc;

    if (d->pid <= 0 || d->status != -1)
        return d->status != -1 && WIFEXITED(d->status) ? WEXITSTATUS(d->status) : -1;
    kill(d->pid, sig);
    rc = wait_exit(d, timeout_ms);
    if (rc == -2) {
        kill(d->pid, SIGKILL);
        wait_exit(d, 5000);
        return -1;
    }
    return rc;
}

int daemon_run(const char *config_json, const char *const *extra_args, int timeout_ms,
               char **log_out)
{
    struct daemon d;
    int rc;

    if (daemon_spawn(&d, config_json, NULL, extra_args) < 0)
        return -1;
    rc = wait_exit(&d, timeout_ms);
    if (rc == -2) {
        kill(d.pid, SIGKILL);
        wait_exit(&d, 5000);
        rc = -1;
    }
    if (log_out)
        *log_out = strdup(d.log);
    daemon_free(&d);
    return rc;
}

long daemon_rss_kb(const struct daemon *d)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)d->pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

void daemon_fail_now(struct daemon *d, int drain_ms, size_t tail_bytes)
{
    if (d->log && d->status == -1 && d->pid > 0)
        daemon_drain_log(d, drain_ms); /* what it said up to now */
    if (d->log) {
        size_t from = d->log_len > tail_bytes ? d->log_len - tail_bytes : 0;
        fprintf(stderr, "---- connd log (tail) ----\n%s\n---- end ----\n", d->log + from);
    }
    if (d->pid > 0 && d->status == -1) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, &d->status, 0);
    }
    if (d->dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", d->dir);
    }
}

void daemon_free(struct daemon *d)
{
    char cmd[128];

    if (d->pid > 0 && d->status == -1) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
    }
    if (d->err_fd >= 0)
        close(d->err_fd);
    free(d->log);
    if (d->dir[0]) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", d->dir);
    }
    memset(d, 0, sizeof(*d));
}

int tcp_connect(const char *host, int port)
{
    struct sockaddr_storage ss = {0};
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    struct timeval tv = {.tv_sec = 10};
    socklen_t len;
    int fd;

    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        len = sizeof(*s4);
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        len = sizeof(*s6);
    } else {
        return -1;
    }
    if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int io_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int io_read_exact(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EPIPE;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

bool io_readable(int fd, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return poll(&pfd, 1, timeout_ms) == 1;
}

int io_expect_eof(int fd, int timeout_ms)
{
    char buf[4096];
    ssize_t n;

    if (!io_readable(fd, timeout_ms))
        return -ETIMEDOUT;
    n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0)
        return 1;
    if (n < 0)
        return -errno;
    return 0;
}

uint8_t *random_bytes(size_t len, uint64_t seed)
{
    uint8_t *p = malloc(len ? len : 1);

    ck_assert_ptr_nonnull(p);
    fill_random(p, len, seed);
    return p;
}

bool daemon_wait_log_count(struct daemon *d, const char *needle, int count,
                           int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;

    while (daemon_count_log(d, needle) < count) {
        if (now_ms() >= end || d->err_fd < 0)
            return daemon_count_log(d, needle) >= count;
        daemon_drain_log(d, 50);
    }
    return true;
}

void tcp_small_buffers(int fd, int bytes)
{
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes)), 0);
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes)), 0);
}

void tcp_close_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

bool io_echoes(int fd, const char *msg)
{
    char buf[256] = {0};
    size_t len = strlen(msg);

    return len < sizeof(buf) && io_write_all(fd, msg, len) == 0 &&
           io_read_exact(fd, buf, len) == 0 && memcmp(buf, msg, len) == 0;
}

/* ---- peers ------------------------------------------------------------------ */

void io_peer_init(struct io_peer *p, const char *name, int fd, const uint8_t *tx,
                  size_t tx_len, const uint8_t *want, size_t want_len)
{
    memset(p, 0, sizeof(*p));
    p->name = name;
    p->fd = fd;
    p->tx = tx;
    p->tx_len = tx_len;
    p->want = want;
    p->want_len = want_len;
    p->bad_at = SIZE_MAX;
}

bool io_peer_finished(const struct io_peer *p)
{
    if (p->err || p->bad_at != SIZE_MAX || p->eof)
        return true;
    return !p->keep && p->got == p->want_len && p->sent == p->tx_len && !p->want_eof &&
           (!p->shut_wr || p->shut_done);
}

static bool io_peer_may_read(const struct io_peer *p)
{
    return now_ms() >= p->rx_resume_ms;
}

size_t io_peer_send(struct io_peer *p)
{
    size_t before = p->sent;

    while (p->sent < p->tx_len && !p->err) {
        size_t n = p->tx_len - p->sent;
        ssize_t r = send(p->fd, p->tx + p->sent, n > 256 * KiB ? 256 * KiB : n,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                p->err = -errno;
            break;
        }
        p->sent += (size_t)r;
    }
    if (p->sent == p->tx_len && p->shut_wr && !p->shut_done && !p->err) {
        if (shutdown(p->fd, SHUT_WR) < 0)
            p->err = -errno;
        p->shut_done = true;
    }
    return p->sent - before;
}

/* Take n received bytes: compare them with want, or keep them. */
static void io_peer_take(struct io_peer *p, const uint8_t *buf, size_t n)
{
    if (p->keep) {
        if (p->got + n > p->keep_cap) {
            p->bad_at = p->got + n; /* more than could ever have been sent */
            return;
        }
        memcpy(p->keep + p->got, buf, n);
    } else {
        size_t ok = p->want_len - p->got;
        if (ok > n)
            ok = n;
        for (size_t i = 0; i < ok; i++)
            if (buf[i] != p->want[p->got + i]) {
                p->bad_at = p->got + i;
                return;
            }
        if (ok < n) {
            p->bad_at = p->want_len; /* more than expected arrived */
            return;
        }
    }
    p->got += n;
}

void io_peer_recv(struct io_peer *p)
{
    static uint8_t buf[256 * KiB];

    while (!p->err && !p->eof && p->bad_at == SIZE_MAX && io_peer_may_read(p)) {
        size_t room = sizeof(buf);
        if (p->rx_burst && p->rx_burst - p->burst_got < room)
            room = p->rx_burst - p->burst_got;
        ssize_t r = recv(p->fd, buf, room, MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                p->err = -errno;
            return;
        }
        if (r == 0) {
            p->eof = true;
            return;
        }
        io_peer_take(p, buf, (size_t)r);
        if (p->rx_burst && (p->burst_got += (size_t)r) >= p->rx_burst) {
            p->burst_got = 0;
            p->rx_resume_ms = now_ms() + (uint64_t)p->rx_pause_ms;
        }
    }
}

void rss_watch_begin(struct rss_watch *w, const struct daemon *d)
{
    memset(w, 0, sizeof(*w));
    w->d = d;
    w->base_kb = w->peak_kb = daemon_rss_kb(d);
    ck_assert_int_gt(w->base_kb, 0);
}

void rss_watch_sample(struct rss_watch *w)
{
    long kb;

    if (!w || now_ms() < w->next_ms)
        return;
    w->next_ms = now_ms() + 10;
    kb = daemon_rss_kb(w->d);
    if (kb > w->peak_kb)
        w->peak_kb = kb;
}

size_t io_pump(struct io_peer *ps, size_t n, int timeout_ms, struct rss_watch *w)
{
    struct pollfd *pfd = calloc(n ? n : 1, sizeof(*pfd));
    size_t *idx = calloc(n ? n : 1, sizeof(*idx));
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    size_t finished = 0;

    ck_assert(pfd && idx);
    for (;;) {
        size_t k = 0;
        finished = 0;
        for (size_t i = 0; i < n; i++) {
            short ev = 0;
            if (io_peer_finished(&ps[i])) {
                finished++;
                continue;
            }
            if (io_peer_may_read(&ps[i]))
                ev |= POLLIN;
            if (ps[i].sent < ps[i].tx_len)
                ev |= POLLOUT;
            /* A paused reader with nothing to send waits for the clock. */
            pfd[k].fd = ev ? ps[i].fd : -1;
            pfd[k].events = ev;
            pfd[k].revents = 0;
            idx[k++] = i;
        }
        if (k == 0 || now_ms() >= end)
            break;
        rss_watch_sample(w);
        if (poll(pfd, k, 10) < 0 && errno != EINTR)
            break;
        for (size_t j = 0; j < k; j++) {
            struct io_peer *p = &ps[idx[j]];
            if (pfd[j].revents & POLLOUT)
                io_peer_send(p);
            if (pfd[j].revents & (POLLIN | POLLHUP | POLLERR))
                io_peer_recv(p);
        }
    }
    free(pfd);
    free(idx);
    return finished;
}

size_t io_pump_send_only(struct io_peer *p, int stall_ms, int timeout_ms,
                         struct rss_watch *w)
{
    uint64_t start = now_ms(), progress = start;

    while (p->sent < p->tx_len && !p->err) {
        struct pollfd pfd = {.fd = p->fd, .events = POLLOUT};
        uint64_t now = now_ms();
        if (now - progress >= (uint64_t)stall_ms || now - start >= (uint64_t)timeout_ms)
            break;
        rss_watch_sample(w);
        if (poll(&pfd, 1, 20) > 0 && io_peer_send(p) > 0)
            progress = now_ms();
    }
    return p->sent;
}

void io_peer_assert_ok(const struct io_peer *p)
{
    const char *name = p->name ? p->name : "peer";

    ck_assert_msg(p->err == 0, "%s: %s", name, strerror(-p->err));
    ck_assert_msg(p->sent == p->tx_len, "%s: sent %zu of %zu bytes", name, p->sent,
                  p->tx_len);
    ck_assert_msg(p->bad_at == SIZE_MAX, "%s: wrong byte at offset %zu (of %zu expected)",
                  name, p->bad_at, p->want_len);
    ck_assert_msg(p->got == p->want_len, "%s: got %zu of %zu bytes%s", name, p->got,
                  p->want_len, p->eof ? " before EOF" : "");
    if (p->want_eof)
        ck_assert_msg(p->eof, "%s: no EOF after the last byte", name);
}

/* ---- the control socket ------------------------------------------------------ */

bool io_drain_until_eof(int fd, int timeout_ms)
{
    bool eof = false;

    for (uint64_t end = now_ms() + (uint64_t)timeout_ms; !eof && now_ms() < end;) {
        static char sink[65536];
        ssize_t n;
        if (!io_readable(fd, 500))
            continue;
        n = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
        eof = n == 0 || (n < 0 && errno != EAGAIN);
    }
    return eof;
}

int ctl_connect(const struct daemon *d)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    struct timeval tv = {.tv_sec = 10};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", d->ctl_path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

char *ctl_read_line(int fd, int timeout_ms)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    uint64_t end = now_ms() + (uint64_t)timeout_ms;

    /* Byte by byte: slow, but never reads past the line, so the next call
     * finds the rest on the socket. Replies in tests are small. */
    while (buf) {
        char ch;
        ssize_t r;
        uint64_t now = now_ms();
        if (now >= end || !io_readable(fd, (int)(end - now)))
            break;
        if ((r = recv(fd, &ch, 1, 0)) <= 0)
            break;
        if (ch == '\n') {
            buf[n] = '\0';
            return buf;
        }
        if (n + 2 > cap)
            buf = realloc(buf, cap *= 2);
        if (buf)
            buf[n++] = ch;
    }
    free(buf);
    return NULL;
}

json_t *ctl_call(int fd, const char *request)
{
    if (io_write_all(fd, request, strlen(request)) < 0 || io_write_all(fd, "\n", 1) < 0)
        return NULL;
    for (;;) {
        char *line = ctl_read_line(fd, 10000);
        json_t *msg;
        if (!line)
            return NULL;
        msg = json_loads(line, 0, NULL);
        free(line);
        if (!msg || !json_object_get(msg, "method"))
            return msg; /* a reply (or garbage, which the test will see) */
        json_decref(msg);
    }
}

json_t *ctl_callf(int fd, const char *fmt, ...)
{
    char *req = NULL;
    va_list ap;
    json_t *reply;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&req, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    reply = ctl_call(fd, req);
    free(req);
    return reply;
}

json_t *ctl_result_on(int fd, const char *method, const char *params)
{
    json_t *reply, *result;

    reply =
        ctl_callf(fd, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"%s\",\"params\":%s}",
                  method, params ? params : "{}");
    ck_assert_msg(reply, "%s: no reply", method);
    result = json_object_get(reply, "result");
    ck_assert_msg(result, "%s %s: %s", method, params ? params : "",
                  json_dumps(reply, JSON_COMPACT));
    json_incref(result);
    json_decref(reply);
    return result;
}

/* The integer at key of method(params)'s result on a control connection
 * of its own; null is 0. */
static long long ctl_int_of(const struct daemon *d, const char *method, const char *params,
                            const char *key)
{
    int fd = ctl_connect(d);
    json_t *res, *v;
    long long n;

    ck_assert_msg(fd >= 0, "control socket %s: %s", d->ctl_path, strerror(errno));
    res = ctl_result_on(fd, method, params);
    close(fd);
    v = json_object_get(res, key);
    ck_assert_msg(json_is_integer(v) || json_is_null(v), "%s %s: no integer %s in %s", method,
                  params, key, json_dumps(res, JSON_COMPACT));
    n = json_is_integer(v) ? (long long)json_integer_value(v) : 0;
    json_decref(res);
    return n;
}

long long ctl_relay_of(const struct daemon *d, long long id)
{
    char params[48];

    snprintf(params, sizeof(params), "{\"id\":%lld}", id);
    return ctl_int_of(d, "conn.show", params, "relay");
}

long long ctl_spliced_bytes(const struct daemon *d)
{
    return ctl_int_of(d, "status", "{}", "spliced_bytes");
}

int ctl_flood_unread(int fd, size_t max_bytes, int timeout_ms, size_t *sent)
{
    static const char req[] =
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rpc.methods\"}\n";
    static char block[65536];
    size_t rl = sizeof(req) - 1, blen = sizeof(block) / rl * rl;
    uint64_t t0 = now_ms();

    for (size_t i = 0; i < blen; i++)
        block[i] = req[i % rl];
    *sent = 0;
    while (*sent < max_bytes && now_ms() - t0 < (uint64_t)timeout_ms) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        ssize_t n;
        if (poll(&p, 1, 500) == 0)
            break; /* the daemon no longer reads */
        n = send(fd, block + *sent % blen, blen - *sent % blen,
                 MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0 && errno != EAGAIN)
            return errno ? -errno : -EIO;
        if (n > 0)
            *sent += (size_t)n;
    }
    return 0;
}

/* Fail the flood with a message; returns false. */
__attribute__((format(printf, 2, 3))) static bool flood_fail(struct ctl_flood *f,
                                                             const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(f->error, sizeof(f->error), fmt, ap);
    va_end(ap);
    return false;
}

/* Whether buf (one reply line) is the status reply to request `id` of d. */
static bool flood_reply_ok(const struct daemon *d, const char *buf, int id)
{
    json_t *reply = json_loads(buf, JSON_DISABLE_EOF_CHECK, NULL);
    bool ok = reply && json_integer_value(json_object_get(reply, "id")) == id &&
              json_integer_value(
                  json_object_get(json_object_get(reply, "result"), "pid")) == d->pid;

    json_decref(reply);
    return ok;
}

static bool ctl_flood_run(struct daemon *d, int n, int timeout_ms, struct ctl_flood *f,
                          struct pollfd *pfd, char (*buf)[512], size_t *len)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};

    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", d->ctl_path);
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        char req[80];
        int rl =
            snprintf(req, sizeof(req),
                     "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"status\"}\n", i + 1);
        if (fd < 0)
            return flood_fail(f, "socket %d: %s", i, strerror(errno));
        if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
            send(fd, req, (size_t)rl, MSG_NOSIGNAL) != rl) {
            int e = errno;
            close(fd);
            if (e != EAGAIN && e != ECONNREFUSED && e != EPIPE && e != ECONNRESET)
                return flood_fail(f, "client %d: %s", i, strerror(e));
            f->refused++;
            continue;
        }
        pfd[i].fd = fd;
        pfd[i].events = POLLIN;
        f->pending++;
    }
    for (uint64_t end = now_ms() + (uint64_t)timeout_ms;
         f->pending > 0 && now_ms() < end;) {
        if (poll(pfd, (nfds_t)n, 200) < 0)
            return flood_fail(f, "poll");
        daemon_drain_log(d, 1); /* a debug line per client */
        for (int i = 0; i < n; i++) {
            ssize_t r;
            if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            r = recv(pfd[i].fd, buf[i] + len[i], sizeof(buf[i]) - 1 - len[i], 0);
            if (r > 0)
                len[i] += (size_t)r;
            if (r > 0 && !memchr(buf[i], '\n', len[i]) && len[i] < sizeof(buf[i]) - 1)
                continue;
            if (r > 0) {
                buf[i][len[i]] = '\0';
                if (!flood_reply_ok(d, buf[i], i + 1))
                    return flood_fail(f, "client %d got %s", i, buf[i]);
                f->answered++;
            } else {
                f->refused++; /* closed on it: allowed, as long as only it */
            }
            close(pfd[i].fd);
            pfd[i].fd = -1;
            f->pending--;
        }
    }
    return true;
}

bool ctl_flood_status(struct daemon *d, int n, int timeout_ms, struct ctl_flood *f)
{
    struct pollfd *pfd = calloc((size_t)n, sizeof(*pfd));
    char(*buf)[512] = calloc((size_t)n, sizeof(*buf));
    size_t *len = calloc((size_t)n, sizeof(*len));
    bool ok;

    memset(f, 0, sizeof(*f));
    if (!pfd || !buf || !len) {
        ok = flood_fail(f, "out of memory");
    } else {
        for (int i = 0; i < n; i++)
            pfd[i].fd = -1;
        ok = ctl_flood_run(d, n, timeout_ms, f, pfd, buf, len);
        for (int i = 0; i < n; i++)
            if (pfd[i].fd >= 0)
                close(pfd[i].fd);
    }
    free(pfd);
    free(buf);
    free(len);
    return ok;
}

/* ---- /proc views of a process --------------------------------------------- */

static void proc_path(char *buf, size_t len, pid_t pid, const char *what)
{
    if (pid > 0)
        snprintf(buf, len, "/proc/%d/%s", (int)pid, what);
    else
        snprintf(buf, len, "/proc/self/%s", what);
}

int proc_raise_fd_limit(rlim_t want)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -errno;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            return -errno;
    }
    return 0;
}

int proc_set_fd_limit(pid_t pid, rlim_t n)
{
    struct rlimit rl;

    if (prlimit(pid, RLIMIT_NOFILE, NULL, &rl) < 0)
        return -errno;
    rl.rlim_cur = n;
    if (prlimit(pid, RLIMIT_NOFILE, &rl, NULL) < 0)
        return -errno;
    return 0;
}

int proc_fd_count(pid_t pid)
{
    char path[64];
    struct dirent *de;
    DIR *d;
    int n = 0;

    proc_path(path, sizeof(path), pid, "fd");
    if (!(d = opendir(path)))
        return -1;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return pid > 0 ? n : n - 1; /* not the DIR's own fd */
}

long proc_cpu_ticks(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;
    FILE *f;

    proc_path(path, sizeof(path), pid, "stat");
    if (!(f = fopen(path, "r")))
        return -1;
    p = fgets(buf, sizeof(buf), f);
    fclose(f);
    /* Fields after the parenthesised name: state is field 3, utime 14. */
    if (!p || !(p = strrchr(buf, ')')) ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (long)(ut + st);
}

long proc_fd_limit_for_room(pid_t pid, int room)
{
    enum { MAX_FD = 65536 };
    static unsigned char used[MAX_FD];
    char path[64];
    struct dirent *de;
    DIR *d;
    int free_seen = 0;

    memset(used, 0, sizeof(used));
    proc_path(path, sizeof(path), pid, "fd");
    if (!(d = opendir(path)))
        return -1;
    while ((de = readdir(d))) {
        int fd = atoi(de->d_name);
        if (de->d_name[0] != '.' && fd >= 0 && fd < MAX_FD)
            used[fd] = 1;
    }
    closedir(d);
    for (int fd = 0; fd < MAX_FD; fd++)
        if (!used[fd] && free_seen++ == room)
            return fd;
    return -1;
}
