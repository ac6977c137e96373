/*
 * test_conn.c: the connection engine (daemon/conn.c), driven from outside.
 * Every test starts a real connd on a config that loads the scriptable
 * test plugin (tests/plugins/testplug.c), talks to it over real sockets on
 * 127.0.0.1 and asserts on what the peer sees and on the plugin's log lines
 * ("plugin NAME: EVENT id=N ..."). TCases follow the behaviours of SPEC
 * section 4: expect framing, yielding, read buffer growth, graceful and
 * hard close, muted close detection, the closed() contract, set_notify and
 * backpressure.
 */
#include "harness.h"

#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* ---- fixture: one daemon per test ------------------------------------- */

static struct daemon D;
static bool d_started;

/* Config pieces, all string literals, for configs with several plugins. */
#define CFG(plugins, listeners)                                                          \
    "{\"control\":{\"path\":\"@DIR@/control.sock\"},\"plugin_dir\":\"@PLUGINS@\","       \
    "\"shutdown_timeout_ms\":2000,"                                                      \
    "\"plugins\":[" plugins "],\"listeners\":[" listeners "]}"
#define TESTPLUG(name, config)                                                           \
    "{\"name\":\"" name "\",\"file\":\"@TPLUGINS@/testplug.so\",\"config\":" config "}"
#define LISTENER(name, plugin, fields)                                                   \
    "{\"name\":\"" name "\",\"host\":\"127.0.0.1\",\"port\":0,\"plugin\":\"" plugin      \
    "\"" fields "}"

/* Stop the daemon with SIGTERM, so that a sanitizer build checks its exit
 * too, and fail on any sanitizer report in its log. */
static void teardown(void)
{
    bool report;

    if (!d_started)
        return;
    if (D.pid > 0)
        daemon_stop(&D, SIGTERM, 5000);
    report = D.log && (strstr(D.log, "Sanitizer") || strstr(D.log, "runtime error:"));
    if (report)
        fprintf(stderr, "---- connd log ----\n%s\n---- end ----\n", D.log);
    daemon_free(&D);
    d_started = false;
    ck_assert_msg(!report, "connd logged a sanitizer report");
}

/* Print the daemon's log (its last 16 KiB) to help read a failure. */
static void dump_log(void)
{
    size_t from = D.log_len > 16384 ? D.log_len - 16384 : 0;

    if (d_started && D.log)
        fprintf(stderr, "---- connd log (tail) ----\n%s\n---- end ----\n", D.log + from);
}

/* Assert with the daemon's log printed on failure. */
#define EXPECT(cond, ...)                                                                \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            dump_log();                                                                  \
            ck_abort_msg(__VA_ARGS__);                                                   \
        }                                                                                \
    } while (0)

/* Start connd on a whole config (see harness.h for the placeholders). */
static void start_config(const char *json)
{
    int rc = daemon_start(&D, json, NULL);

    d_started = true; /* daemon_start always leaves something to free */
    ck_assert_msg(rc == 0, "connd did not start:\n%s", D.log ? D.log : "");
}

/*
 * Start connd with one testplug instance "tp", configured by tp_config (a
 * JSON object), behind one listener "l" on 127.0.0.1 with the extra
 * listener fields in listener_fields (",\"max_size\":4096" or "").
 */
static void start_testplug(const char *tp_config, const char *listener_fields)
{
    char json[2048];
    int n =
        snprintf(json, sizeof(json), CFG(TESTPLUG("tp", "%s"), LISTENER("l", "tp", "%s")),
                 tp_config, listener_fields);

    ck_assert_int_lt(n, (int)sizeof(json));
    start_config(json);
}

/* A client socket to listener `name`. */
static int client(const char *name)
{
    struct timeval tv = {.tv_sec = 5};
    int port = daemon_port(&D, name), fd;

    ck_assert_int_gt(port, 0);
    fd = tcp_connect("127.0.0.1", port);
    ck_assert_int_ge(fd, 0);
    /* A missing byte fails the test in 5 s rather than the harness's 10. */
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
    return fd;
}

static void set_nodelay(int fd)
{
    int one = 1;
    ck_assert_int_eq(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)), 0);
}

/*
 * Whether the peer reset the connection of fd, which has read the peer's
 * FIN: after a clean close the socket stays in CLOSE_WAIT with no error, a
 * RST moves it to CLOSE with an error pending. Reading cannot tell, since
 * Linux keeps returning 0 after a FIN even once a RST came.
 */
static bool got_reset(int fd)
{
    struct tcp_info ti = {0};
    socklen_t len = sizeof(ti), elen = sizeof(int);
    int err = 0;

    ck_assert_int_eq(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen), 0);
    ck_assert_int_eq(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len), 0);
    return err != 0 || ti.tcpi_state != TCP_CLOSE_WAIT;
}

/* What an io_expect_eof() result means, for failure messages. */
static const char *eof_result(int rc)
{
    return rc == 1 ? "EOF" : rc == 0 ? "data" : strerror(-rc);
}

/* Sleep while still collecting the daemon's log. */
static void pause_ms(int ms) { daemon_drain_log(&D, ms); }

/* Wait until needle occurs at least n times in the whole log. */
static bool wait_count(const char *needle, int n, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;

    for (;;) {
        if (daemon_count_log(&D, needle) >= n)
            return true;
        if (now_ms() >= end)
            return false;
        daemon_drain_log(&D, 20);
    }
}

/* ---- the plugin's log lines ------------------------------------------- */

/* One "plugin P: EVENT id=N [len=L] [times=T] [pending=P]" line. */
struct ev {
    unsigned long long id;
    long len, times, pending; /* -1 when the line has no such field */
    size_t off;               /* where the line is in D.log: orders events */
};

static long field(const char *line, size_t n, const char *key)
{
    size_t kl = strlen(key);

    for (size_t i = 0; i + kl <= n; i++)
        if (memcmp(line + i, key, kl) == 0)
            return strtol(line + i + kl, NULL, 10);
    return -1;
}

/* Whether the log line holding p is a plugin's ("... plugin NAME: ..."). */
static bool is_plugin_line(const char *p)
{
    const char *start = p;

    while (start > D.log && start[-1] != '\n')
        start--;
    for (const char *q = start; q + 7 <= p; q++)
        if (memcmp(q, "plugin ", 7) == 0)
            return true;
    return false;
}

/*
 * Every "plugin <plugin>: <event> id=" line of the log, in order (plugin
 * NULL: any plugin). Returns a malloc'd array, *n its length.
 */
static struct ev *events(const char *plugin, const char *event, int *n)
{
    char needle[128];
    size_t nl, cap = 16;
    struct ev *out = malloc(cap * sizeof(*out));

    if (plugin)
        snprintf(needle, sizeof(needle), "plugin %s: %s id=", plugin, event);
    else
        snprintf(needle, sizeof(needle), ": %s id=", event);
    nl = strlen(needle);
    *n = 0;
    for (const char *p = D.log; (p = strstr(p, needle)) != NULL; p += nl) {
        const char *q = p + nl, *eol = strchr(q, '\n');
        size_t ll = eol ? (size_t)(eol - q) : strlen(q);

        if (!plugin && !is_plugin_line(p))
            continue;
        if ((size_t)*n == cap)
            out = realloc(out, (cap *= 2) * sizeof(*out));
        out[*n] = (struct ev){.id = strtoull(q, NULL, 10),
                              .len = field(q, ll, " len="),
                              .times = field(q, ll, " times="),
                              .pending = field(q, ll, " pending="),
                              .off = (size_t)(p - D.log)};
        (*n)++;
    }
    return out;
}

/* The id of the nth (from 1) connection plugin `plugin` accepted. */
static unsigned long long accepted_id(const char *plugin, int nth)
{
    char needle[96];
    unsigned long long id = 0;
    struct ev *ev;
    int n;

    snprintf(needle, sizeof(needle), "plugin %s: accepted id=", plugin);
    EXPECT(wait_count(needle, nth, 5000), "no accepted line #%d from %s", nth, plugin);
    ev = events(plugin, "accepted", &n);
    if (n >= nth)
        id = ev[nth - 1].id;
    free(ev);
    ck_assert_uint_gt(id, 0);
    return id;
}

/* Sum of the len= of plugin's received lines for connection id. */
static long received_total(const char *plugin, unsigned long long id)
{
    struct ev *ev;
    long sum = 0;
    int n;

    ev = events(plugin, "received", &n);
    for (int i = 0; i < n; i++)
        if (ev[i].id == id)
            sum += ev[i].len;
    free(ev);
    return sum;
}

/* Wait until plugin logged `total` received bytes for connection id. */
static bool wait_received(const char *plugin, unsigned long long id, long total,
                          int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;

    for (;;) {
        if (received_total(plugin, id) >= total)
            return true;
        if (now_ms() >= end)
            return false;
        daemon_drain_log(&D, 20);
    }
}

/* How many "plugin P: EVENT id=N" lines name exactly connection id. */
static int count_event(const char *plugin, const char *event, unsigned long long id)
{
    char a[128], b[128];

    /* The id ends the line, or more fields follow ("pending=..."). */
    snprintf(a, sizeof(a), "plugin %s: %s id=%llu\n", plugin, event, id);
    snprintf(b, sizeof(b), "plugin %s: %s id=%llu ", plugin, event, id);
    return daemon_count_log(&D, a) + daemon_count_log(&D, b);
}

/* Wait for a "plugin P: EVENT id=N" line. */
static bool wait_event(const char *plugin, const char *event, unsigned long long id,
                       int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;

    for (;;) {
        if (count_event(plugin, event, id) > 0)
            return true;
        if (now_ms() >= end)
            return false;
        daemon_drain_log(&D, 20);
    }
}

/* ---- client I/O ------------------------------------------------------- */

/*
 * Read len bytes of testplug's greet pattern (byte i is i % 251). Returns
 * how many bytes arrived intact; *err is 0, -EILSEQ on a wrong byte, -EPIPE
 * on an early EOF or -errno.
 */
static size_t read_pattern(int fd, size_t len, int *err)
{
    static uint8_t buf[65536];
    size_t got = 0;

    *err = 0;
    while (got < len) {
        size_t want = len - got < sizeof(buf) ? len - got : sizeof(buf);
        ssize_t n = recv(fd, buf, want, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *err = n == 0 ? -EPIPE : -errno;
            break;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != (uint8_t)((got + (size_t)i) % 251)) {
                *err = -EILSEQ;
                return got + (size_t)i;
            }
        }
        got += (size_t)n;
    }
    return got;
}

/* A write running on its own thread while the test reads the daemon's log:
 * a daemon blocked on a full stderr pipe would otherwise stall the write. */
struct bg_write {
    pthread_t th;
    int fd;
    const void *buf;
    size_t len;
    int rc;
};

static void *bg_write_main(void *arg)
{
    struct bg_write *w = arg;
    w->rc = io_write_all(w->fd, w->buf, w->len);
    return NULL;
}

static void bg_write_start(struct bg_write *w, int fd, const void *buf, size_t len)
{
    *w = (struct bg_write){.fd = fd, .buf = buf, .len = len, .rc = -1};
    ck_assert_int_eq(pthread_create(&w->th, NULL, bg_write_main, w), 0);
}

/* Joins; bounded by the socket's 5 s send timeout (see client()). */
static int bg_write_join(struct bg_write *w)
{
    pthread_join(w->th, NULL);
    return w->rc;
}

/* ---- expect ----------------------------------------------------------- */

START_TEST(test_conn_expect_delivers_exact_frames)
{
    uint8_t out[25], back[25];
    unsigned long long id;
    struct ev *ev;
    int fd, n;

    start_testplug("{\"expect\":5,\"log_received\":true,\"echo\":true}", "");
    fd = client("l");
    set_nodelay(fd);
    id = accepted_id("tp", 1);
    EXPECT(wait_count("plugin tp: expect=5 id=", 1, 2000), "expect(5) not in force");

    /* 23 bytes in pieces that straddle frame boundaries: 3, 9, 11. */
    fill_random(out, sizeof(out), 1);
    ck_assert_int_eq(io_write_all(fd, out, 3), 0);
    pause_ms(50);
    ck_assert_int_eq(io_write_all(fd, out + 3, 9), 0);
    pause_ms(50);
    ck_assert_int_eq(io_write_all(fd, out + 12, 11), 0);
    EXPECT(wait_received("tp", id, 20, 2000), "4 frames of 5 not delivered");
    pause_ms(200); /* anything else would show up by now */

    ev = events("tp", "received", &n);
    EXPECT(n == 4, "%d received() calls for 23 bytes with expect(5), want 4", n);
    for (int i = 0; i < n; i++)
        EXPECT(ev[i].len == 5, "received #%d has len=%ld, want 5", i + 1, ev[i].len);
    free(ev);
    ck_assert_int_eq(io_read_exact(fd, back, 20), 0);
    ck_assert_mem_eq(back, out, 20);

    /* The 3 leftover bytes stayed buffered: 2 more make the fifth frame. */
    ck_assert_int_eq(io_write_all(fd, out + 23, 2), 0);
    EXPECT(wait_received("tp", id, 25, 2000), "leftover bytes lost: no fifth frame");
    ck_assert_int_eq(io_read_exact(fd, back + 20, 5), 0);
    ck_assert_mem_eq(back + 20, out + 20, 5);
    ev = events("tp", "received", &n);
    EXPECT(n == 5 && ev[4].len == 5, "fifth frame: %d calls, last len=%ld", n,
           n ? ev[n - 1].len : -1);
    free(ev);
    close(fd);
}
END_TEST

START_TEST(test_conn_expect_above_max_size_is_refused)
{
    unsigned long long id;
    struct ev *ev;
    int fd, n;

    start_testplug("{\"expect\":100000,\"log_received\":true}", ",\"max_size\":16384");
    fd = client("l");
    id = accepted_id("tp", 1);
    EXPECT(wait_count("plugin tp: expect=-22 id=", 1, 2000),
           "expect(100000) above max_size 16384 was not refused with -EINVAL");

    /* The previous quantity (0: whatever is read) stays in force. */
    ck_assert_int_eq(io_write_all(fd, "0123456789", 10), 0);
    EXPECT(wait_received("tp", id, 10, 2000), "10 bytes not delivered after refusal");
    ev = events("tp", "received", &n);
    for (int i = 0; i < n; i++)
        EXPECT(ev[i].len <= 10, "received len=%ld after a refused expect", ev[i].len);
    free(ev);
    close(fd);
}
END_TEST

/* ---- yielding --------------------------------------------------------- */

/* Without any pause from the plugin, a connection reads at most about
 * max_size bytes per loop turn, then the others get theirs. */
/* Two clients of listener "l": A sends `big` bytes and then B 10 bytes,
 * both while the daemon is frozen, so that both wait when it runs again
 * however the scheduler treats the test (otherwise a fast daemon may finish
 * A before B sends). A's write is on a thread: the kernel buffers may not
 * hold it all while the daemon is stopped. Checks that B is echoed and
 * that A loses nothing, then returns both sockets and ids. */
static void race_big_and_small(size_t big, uint64_t seed, int *a, int *b,
                               unsigned long long *ida, unsigned long long *idb)
{
    uint8_t *out = malloc(big), *back = malloc(big), small[10];
    struct bg_write w;
    int rc;

    *a = client("l");
    *ida = accepted_id("tp", 1);
    *b = client("l");
    *idb = accepted_id("tp", 2);
    fill_random(out, big, seed);
    ck_assert_int_eq(kill(D.pid, SIGSTOP), 0);
    bg_write_start(&w, *a, out, big);
    pause_ms(50);
    rc = io_write_all(*b, "0123456789", 10);
    kill(D.pid, SIGCONT);
    ck_assert_int_eq(rc, 0);
    /* B is served while A still has bytes to go. */
    ck_assert_int_eq(io_read_exact(*b, small, 10), 0);
    ck_assert_mem_eq(small, "0123456789", 10);
    /* And A loses nothing by yielding. */
    ck_assert_int_eq(io_read_exact(*a, back, big), 0);
    ck_assert_int_eq(bg_write_join(&w), 0);
    ck_assert_msg(memcmp(back, out, big) == 0, "A's echo differs from what it sent");
    EXPECT(wait_received("tp", *ida, (long)big, 5000), "A's bytes not all delivered");
    free(out);
    free(back);
}

START_TEST(test_conn_max_size_per_turn_yields_to_other_connections)
{
    const size_t big = 1024 * 1024, max = 16384;
    unsigned long long ida, idb;
    size_t first_b = 0, last_a = 0, turn_total = 0, worst = 0;
    int turns = 0;
    bool seen_b = false;
    struct ev *ev;
    int a, b, n;

    start_testplug("{\"log_received\":true,\"echo\":true}", ",\"max_size\":16384");
    race_big_and_small(big, 3, &a, &b, &ida, &idb);

    /* times restarts at 1 with each turn: sum A's bytes per turn. */
    ev = events("tp", "received", &n);
    for (int i = 0; i < n; i++) {
        if (ev[i].id == idb && !seen_b) {
            seen_b = true;
            first_b = ev[i].off;
        }
        if (ev[i].id != ida)
            continue;
        last_a = ev[i].off;
        if (ev[i].times == 1) {
            turns++;
            turn_total = 0;
        }
        turn_total += (size_t)ev[i].len;
        if (turn_total > worst)
            worst = turn_total;
    }
    free(ev);
    EXPECT(seen_b, "no received line for B");
    EXPECT(first_b < last_a, "B was served only after all of A's data: no yield");
    /* The budget is checked before each read of at most max_size bytes. */
    EXPECT(worst < 2 * max, "A read %zu bytes in one turn (max_size %zu)", worst, max);
    EXPECT(turns >= (int)(big / (2 * max)), "A's 1 MiB came in %d turns", turns);
    close(a);
    close(b);
}
END_TEST

START_TEST(test_conn_received_false_yields_to_other_connections)
{
    const size_t big = 256 * 1024;
    unsigned long long ida, idb;
    size_t first_b = 0, last_a = 0;
    bool seen_b = false;
    struct ev *ev;
    int a, b, n;

    start_testplug("{\"pause\":true,\"log_received\":true,\"echo\":true}", "");
    race_big_and_small(big, 2, &a, &b, &ida, &idb);

    ev = events("tp", "received", &n);
    for (int i = 0; i < n; i++) {
        EXPECT(ev[i].times == 1,
               "received id=%llu times=%ld: returning false must end the turn", ev[i].id,
               ev[i].times);
        if (ev[i].id == idb && !seen_b) {
            seen_b = true;
            first_b = ev[i].off;
        }
        if (ev[i].id == ida)
            last_a = ev[i].off;
    }
    free(ev);
    EXPECT(seen_b, "no received line for B");
    EXPECT(first_b < last_a,
           "B (id=%llu) was served only after all of A's (id=%llu) data: no yield", idb,
           ida);
    close(a);
    close(b);
}
END_TEST

/* ---- read buffer ------------------------------------------------------ */

START_TEST(test_conn_read_buffer_grows_from_init_to_max_size)
{
    const size_t total = 1024 * 1024;
    uint8_t *out = malloc(total);
    bool mid = false;
    unsigned long long id;
    struct bg_write w;
    long max = 0;
    struct ev *ev;
    int fd, n, m = 0;

    start_testplug("{\"log_received\":true}", ",\"init_size\":64,\"max_size\":4096");
    fd = client("l");
    id = accepted_id("tp", 1);
    fill_random(out, total, 3);
    bg_write_start(&w, fd, out, total);
    EXPECT(wait_received("tp", id, (long)total, 20000), "1 MiB not delivered");
    ck_assert_int_eq(bg_write_join(&w), 0);

    ev = events("tp", "received", &n);
    for (int i = 0; i < n; i++) {
        if (ev[i].id != id)
            continue;
        if (m++ == 0)
            EXPECT(ev[i].len <= 64, "first read delivered %ld bytes, init_size is 64",
                   ev[i].len);
        EXPECT(ev[i].len <= 4096, "received len=%ld above max_size 4096", ev[i].len);
        if (ev[i].len > max)
            max = ev[i].len;
        if (ev[i].len >= 128 && ev[i].len <= 2048)
            mid = true;
    }
    free(ev);
    EXPECT(max == 4096, "the read buffer never reached max_size 4096 (largest %ld)", max);
    EXPECT(mid, "no read between 128 and 2048 bytes: the buffer did not double");
    free(out);
    close(fd);
}
END_TEST

/* ---- close ------------------------------------------------------------ */

#define GREET_8M "8388608"

/* Read the 8 MiB greet after a delay (so it is queued in the daemon), then
 * expect a clean EOF; the daemon closes gracefully after greeting. */
static void greet_then_eof(int fd)
{
    size_t got;
    int err;

    pause_ms(300);
    got = read_pattern(fd, 8388608, &err);
    EXPECT(err == 0, "graceful close lost data: %zu of 8388608 bytes, then %s", got,
           strerror(-err));
    EXPECT(io_expect_eof(fd, 5000) == 1, "no clean EOF after every queued byte");
}

START_TEST(test_conn_graceful_close_delivers_all_then_eof)
{
    unsigned long long id;
    int fd;

    start_testplug("{\"greet\":" GREET_8M ",\"close_after_greet\":true}", "");
    fd = client("l");
    id = accepted_id("tp", 1);
    EXPECT(wait_count("plugin tp: greet rc=0 ", 1, 2000), "greet write refused");
    greet_then_eof(fd);
    close(fd);
    EXPECT(wait_event("tp", "closed", id, 3000), "closed id=%llu missing", id);
}
END_TEST

START_TEST(test_conn_graceful_close_while_muted_delivers_all_then_eof)
{
    unsigned long long id;
    uint8_t junk[4096];
    int fd;

    start_testplug(
        "{\"mute\":\"plugin\",\"greet\":" GREET_8M ",\"close_after_greet\":true}", "");
    fd = client("l");
    id = accepted_id("tp", 1);
    EXPECT(wait_count("plugin tp: greet rc=0 ", 1, 2000), "greet write refused");
    /* Bytes the muted daemon never reads must not turn the close into a RST. */
    fill_random(junk, sizeof(junk), 4);
    ck_assert_int_eq(io_write_all(fd, junk, sizeof(junk)), 0);
    greet_then_eof(fd);
    /* Muted, the daemon does not wait for our EOF. */
    EXPECT(wait_event("tp", "closed", id, 3000),
           "muted graceful close did not finish while the peer stays open");
    pause_ms(100);
    EXPECT(!got_reset(fd), "the daemon reset the connection after its FIN "
                           "(unread bytes at close(2)?)");
    close(fd);
}
END_TEST

START_TEST(test_conn_abort_resets_peer)
{
    unsigned long long id;
    uint64_t t0;
    int fd, rc;

    start_testplug("{\"abort_on_accept\":true}", "");
    fd = client("l");
    t0 = now_ms();
    rc = io_expect_eof(fd, 2000);
    EXPECT(rc == -ECONNRESET, "after abort the peer got %s, want ECONNRESET",
           eof_result(rc));
    ck_assert_uint_le(now_ms() - t0, 2000);
    id = accepted_id("tp", 1);
    EXPECT(wait_event("tp", "closed", id, 2000), "closed id=%llu missing", id);
    pause_ms(200);
    EXPECT(daemon_count_log(&D, "plugin tp: closed id=") == 1, "closed fired %d times",
           daemon_count_log(&D, "plugin tp: closed id="));
    close(fd);
}
END_TEST

/* ---- muted connections ------------------------------------------------ */

/* A muted connection whose peer closes (fully or only its write side) is
 * noticed without reading and gets closed() within 2 s. */
static void muted_peer_close(bool half)
{
    unsigned long long id;
    int fd;

    start_testplug("{\"mute\":\"plugin\",\"log_received\":true}", "");
    fd = client("l");
    id = accepted_id("tp", 1);
    EXPECT(wait_count("plugin tp: mute=0 id=", 1, 2000), "mute on accept failed");
    ck_assert_int_eq(io_write_all(fd, "unread", 6), 0);
    if (half)
        ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
    else
        close(fd);
    EXPECT(wait_event("tp", "closed", id, 2000),
           "muted connection id=%llu: peer %s, no closed within 2 s", id,
           half ? "half-closed" : "closed");
    EXPECT(daemon_count_log(&D, "plugin tp: received id=") == 0,
           "a muted connection delivered data");
    if (half) {
        /* Our write side is shut, not our read side: we see a clean FIN. */
        int rc = io_expect_eof(fd, 2000);
        EXPECT(rc == 1, "after our half-close the daemon's close gave %s, want EOF",
               eof_result(rc));
        close(fd);
    }
}

START_TEST(test_conn_muted_notices_peer_close) { muted_peer_close(false); }
END_TEST

START_TEST(test_conn_muted_notices_peer_half_close) { muted_peer_close(true); }
END_TEST

/* ---- closed() --------------------------------------------------------- */

/* Six ways for a connection to end, picked round-robin. */
static void end_connection(int fd, int way)
{
    char buf[64];
    int err;

    switch (way) {
    case 0: /* client FIN after an echo */
        ck_assert_int_eq(io_write_all(fd, "hello", 5), 0);
        ck_assert_int_eq(io_read_exact(fd, buf, 5), 0);
        close(fd);
        break;
    case 1: /* client RST with data in flight */
        ck_assert_int_eq(io_write_all(fd, "bye!", 4), 0);
        tcp_close_reset(fd);
        break;
    case 2: /* client half-close, then reads to the daemon's FIN */
        ck_assert_int_eq(io_write_all(fd, "half", 4), 0);
        ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
        ck_assert_int_eq(io_read_exact(fd, buf, 4), 0);
        EXPECT(io_expect_eof(fd, 3000) == 1, "no EOF after half-close");
        close(fd);
        break;
    case 3: /* abort_on_accept: the daemon resets */
        (void)io_write_all(fd, "x", 1);
        (void)io_expect_eof(fd, 2000);
        close(fd);
        break;
    case 4: /* greet + graceful close, read fully, bytes sent into the close */
        (void)io_write_all(fd, "late", 4);
        read_pattern(fd, 65536, &err);
        ck_assert_int_eq(err, 0);
        EXPECT(io_expect_eof(fd, 3000) == 1, "no EOF after greet");
        close(fd);
        break;
    default: /* greet + graceful close, the client leaves without reading */
        tcp_close_reset(fd);
        break;
    }
}

/* Three ways to end from the daemon's side: echo (the peer ends it), abort
 * in accepted(), greet then close gracefully in accepted(). */
/* clang-format off */
static const char closed_config[] = CFG(
    TESTPLUG("e", "{\"echo\":true,\"log_received\":true}") ","
    TESTPLUG("a", "{\"abort_on_accept\":true,\"log_received\":true}") ","
    TESTPLUG("g", "{\"greet\":65536,\"close_after_greet\":true,\"log_received\":true}"),
    LISTENER("echo", "e", "") ","
    LISTENER("abort", "a", "") ","
    LISTENER("greet", "g", ""));
/* clang-format on */

START_TEST(test_conn_closed_fires_exactly_once_and_last)
{
    enum { N = 20 };
    static const char *const listener_of[] = {"echo",  "echo",  "echo",
                                              "abort", "greet", "greet"};
    unsigned long long ids[N];
    struct ev *acc, *cls;
    int fds[N], nacc, ncls, nlines = 0;

    start_config(closed_config);
    for (int i = 0; i < N; i++)
        fds[i] = client(listener_of[i % 6]);
    EXPECT(wait_count(": accepted id=", N, 5000), "not all %d connections accepted", N);
    for (int i = 0; i < N; i++)
        end_connection(fds[i], i % 6);
    EXPECT(wait_count(": closed id=", N, 5000), "only %d of %d connections closed",
           daemon_count_log(&D, ": closed id="), N);
    pause_ms(300); /* a second closed() or a late callback would show up by now */

    acc = events(NULL, "accepted", &nacc);
    cls = events(NULL, "closed", &ncls);
    EXPECT(nacc == N && ncls == N, "%d accepted and %d closed lines for %d connections",
           nacc, ncls, N);
    for (int i = 0; i < N; i++) {
        int nc = 0;
        ids[i] = acc[i].id;
        for (int j = 0; j < i; j++)
            EXPECT(ids[j] != ids[i], "id %llu accepted twice", ids[i]);
        for (int j = 0; j < ncls; j++)
            nc += cls[j].id == ids[i];
        EXPECT(nc == 1, "closed fired %d times for id=%llu", nc, ids[i]);
    }
    /* No plugin line about a connection after its closed line. */
    for (const char *p = D.log; (p = strstr(p, "plugin ")) != NULL; p++) {
        const char *eol = strchr(p, '\n'), *idp = strstr(p, " id=");
        unsigned long long id;
        if (!eol || !idp || idp > eol)
            continue;
        id = strtoull(idp + 4, NULL, 10);
        nlines++;
        for (int j = 0; j < ncls; j++)
            EXPECT(!(cls[j].id == id && (size_t)(p - D.log) > cls[j].off),
                   "a callback for id=%llu after its closed: %.*s", id, (int)(eol - p),
                   p);
    }
    ck_assert_int_ge(nlines, 2 * N);
    /* "g" closes inside accepted() and "a" aborts there: from then on only
     * closed() may fire, however many bytes the peer sends into the close. */
    EXPECT(daemon_count_log(&D, "plugin g: received id=") == 0,
           "received() after a graceful close started");
    EXPECT(daemon_count_log(&D, "plugin a: received id=") == 0,
           "received() after an abort");
    free(acc);
    free(cls);
}
END_TEST

/* ---- set_notify ------------------------------------------------------- */

/* "hello" takes a 4-byte greeting, then hands the connection to "echo2". */
/* clang-format off */
static const char handover_config[] = CFG(
    TESTPLUG("hello", "{\"expect\":4,\"handover\":\"echo2\"}") ","
    TESTPLUG("echo2", "{\"echo\":true,\"log_received\":true}"),
    LISTENER("l", "hello", ""));
/* clang-format on */

START_TEST(test_conn_set_notify_hands_over_buffered_bytes)
{
    char back[32], needle[96];
    unsigned long long id;
    int fd;

    start_config(handover_config);
    fd = client("l");
    id = accepted_id("hello", 1);
    EXPECT(wait_count("plugin hello: expect=4 id=", 1, 2000), "expect(4) failed");
    /* One write: the rest of the same read goes to the new plugin. */
    ck_assert_int_eq(io_write_all(fd, "HELOpayload-1234", 16), 0);
    ck_assert_int_eq(io_read_exact(fd, back, 20), 0);
    EXPECT(memcmp(back, "WELCOME\npayload-1234", 20) == 0,
           "after the handover the peer read \"%.20s\"", back);
    ck_assert_int_eq(io_write_all(fd, "more", 4), 0);
    ck_assert_int_eq(io_read_exact(fd, back, 4), 0);
    ck_assert_mem_eq(back, "more", 4);

    snprintf(needle, sizeof(needle), "plugin hello: handover id=%llu rc=0\n", id);
    EXPECT(wait_count(needle, 1, 2000), "no \"%s\" line", needle);
    EXPECT(count_event("hello", "handover", id) == 1, "handed over more than once");
    /* echo2 got "payload-1234" (12) and "more" (4). */
    EXPECT(wait_received("echo2", id, 16, 2000),
           "echo2 did not receive the rest of the buffer and the next write");
    close(fd);
    EXPECT(wait_event("echo2", "closed", id, 2000), "closed went to the wrong plugin");
    EXPECT(count_event("hello", "closed", id) == 0, "the old plugin got closed()");
}
END_TEST

/* ---- backpressure ----------------------------------------------------- */

START_TEST(test_conn_throttled_then_unthrottled_once)
{
    unsigned long long id;
    struct ev *th, *un;
    char back[12];
    size_t got;
    int fd, nth, nun, err;

    /* 16 MiB: more than loopback's socket buffers can take at once, however
     * large the kernel has grown them, so some of it is always queued. */
    start_testplug("{\"greet\":16777216,\"echo\":true,\"log_received\":true}",
                   ",\"high_watermark\":65536,\"low_watermark\":16384");
    fd = client("l");
    id = accepted_id("tp", 1);
    EXPECT(wait_event("tp", "throttled", id, 2000), "no throttled with 16 MiB queued");
    /* More writes while throttled (echoes; we do not read yet) change
     * nothing: throttled is a state, not an event per write. */
    for (int i = 1; i <= 3; i++) {
        ck_assert_int_eq(io_write_all(fd, "ping", 4), 0);
        EXPECT(wait_received("tp", id, 4 * i, 2000), "ping %d not received", i);
    }
    pause_ms(100);
    EXPECT(count_event("tp", "unthrottled", id) == 0, "unthrottled before we read");
    got = read_pattern(fd, 16777216, &err);
    EXPECT(err == 0, "greet: %zu bytes then %s", got, strerror(-err));
    ck_assert_int_eq(io_read_exact(fd, back, sizeof(back)), 0);
    ck_assert_mem_eq(back, "pingpingping", sizeof(back));
    EXPECT(wait_event("tp", "unthrottled", id, 3000), "no unthrottled after draining");
    pause_ms(200);

    th = events("tp", "throttled", &nth);
    un = events("tp", "unthrottled", &nun);
    EXPECT(nth == 1 && nun == 1, "%d throttled and %d unthrottled, want 1 each", nth,
           nun);
    EXPECT(th[0].off < un[0].off, "unthrottled before throttled");
    EXPECT(th[0].pending > 65536, "throttled at pending=%ld", th[0].pending);
    EXPECT(un[0].pending >= 0 && un[0].pending <= 16384, "unthrottled at pending=%ld",
           un[0].pending);
    free(th);
    free(un);
    close(fd);
}
END_TEST

START_TEST(test_conn_write_past_max_pending_is_refused)
{
    unsigned long long id;
    char back[4];
    int fd;

    start_testplug(
        "{\"greet\":2000000,\"echo\":true}",
        ",\"max_pending\":1048576,\"high_watermark\":65536,\"low_watermark\":0");
    fd = client("l");
    id = accepted_id("tp", 1);
    EXPECT(wait_count("plugin tp: greet rc=-105 ", 1, 2000),
           "a 2000000-byte write with max_pending 1048576 was not refused with ENOBUFS");
    /* Nothing of the refused write went out, and the connection still works. */
    ck_assert_int_eq(io_write_all(fd, "ping", 4), 0);
    ck_assert_int_eq(io_read_exact(fd, back, 4), 0);
    EXPECT(memcmp(back, "ping", 4) == 0, "the peer read \"%.4s\", want the echo", back);
    EXPECT(count_event("tp", "closed", id) == 0, "refusal closed the connection");
    close(fd);
    EXPECT(wait_event("tp", "closed", id, 2000), "closed id=%llu missing", id);
}
END_TEST

/* ---- found in review ------------------------------------------------------ */

/* A plugin that stops its own repeating timer in fini(): plugin_unload()
 * already uv_close()d it, so timer_stop() closes it a second time. */
START_TEST(test_conn_plugin_may_stop_its_timer_in_fini)
{
    int rc;

    start_testplug("{\"fini_timer\":true}", "");
    rc = daemon_stop(&D, SIGTERM, 5000);
    EXPECT(rc == 0, "connd exit %d (status 0x%x) after a plugin stopped its timer in fini()",
           rc, D.status);
    d_started = true;
}
END_TEST

/* A graceful close of a large write to a slow but steadily reading peer is
 * reset after close_timeout_ms, because progress is only seen when a whole
 * wreq completes (and, after the FIN, the kernel's queue is dropped by RST). */
START_TEST(test_conn_graceful_close_waits_for_a_slow_reader)
{
    enum { TOTAL = 16 * 1024 * 1024 };
    static uint8_t buf[65536];
    size_t got = 0;
    int fd, err = 0;

    start_config(
        "{\"control\":{\"path\":\"@DIR@/control.sock\"},\"plugin_dir\":\"@PLUGINS@\","
        "\"close_timeout_ms\":1000,\"shutdown_timeout_ms\":2000,"
        "\"plugins\":[" TESTPLUG("tp", "{\"greet\":16777216,\"close_after_greet\":true}")
        "],\"listeners\":[" LISTENER("l", "tp", "") "]}");
    fd = client("l");
    /* ~4 MB/s: the whole transfer takes ~4 s, progress every 16 ms. */
    while (got < TOTAL) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) {
            err = n == 0 ? -EPIPE : -errno;
            break;
        }
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != (uint8_t)((got + (size_t)i) % 251)) {
                err = -EILSEQ;
                break;
            }
        if (err)
            break;
        got += (size_t)n;
        usleep(16000);
    }
    EXPECT(err == 0 && got == TOTAL,
           "graceful close to a slow reader lost data: %zu of %d bytes, then %s", got,
           TOTAL, strerror(-err));
    close(fd);
}
END_TEST

/* A plugin that reconnects from closed() (a persistent upstream) keeps the
 * daemon from ever finishing a shutdown: connect() is not refused while
 * stopping. */
START_TEST(test_conn_no_new_connections_during_shutdown)
{
    char json[2048];
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1, rc;

    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    ck_assert_int_eq(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(ls, 128), 0);
    getsockname(ls, (struct sockaddr *)&sa, &sl);
    snprintf(json, sizeof(json),
             "{\"control\":{\"path\":\"@DIR@/control.sock\"},\"plugin_dir\":\"@PLUGINS@\","
             "\"shutdown_timeout_ms\":500,\"plugins\":["
             "{\"name\":\"tp\",\"file\":\"@TPLUGINS@/testplug.so\",\"config\":"
             "{\"connect\":\"127.0.0.1:%d\",\"reconnect\":true}}],\"listeners\":[]}",
             ntohs(sa.sin_port));
    start_config(json);
    EXPECT(wait_count("plugin tp: connected id=", 1, 3000), "no connection");
    rc = daemon_stop(&D, SIGTERM, 4000);
    EXPECT(rc == 0, "connd did not finish its shutdown (rc %d): %d connects so far", rc,
           daemon_count_log(&D, "plugin tp: connect rc=0"));
    close(ls);
}
END_TEST

/* sent() keeps being called for the remaining iovecs of a writev after an
 * earlier sent() closed the connection. */
START_TEST(test_conn_no_sent_after_close_in_sent)
{
    unsigned long long id;
    int fd;

    start_testplug("{\"echo\":true,\"writev\":true,\"close_in_sent\":true}", "");
    fd = client("l");
    id = accepted_id("tp", 1);
    ck_assert_int_eq(io_write_all(fd, "abcdefghi", 9), 0);
    EXPECT(wait_event("tp", "closed", id, 2000), "closed missing");
    EXPECT(daemon_count_log(&D, "plugin tp: sent id=") == 1,
           "sent() fired %d times, the last ones after the connection was aborted",
           daemon_count_log(&D, "plugin tp: sent id="));
    close(fd);
}
END_TEST

static Suite *conn_suite(void)
{
    Suite *s = suite_create("conn");
    struct {
        const char *name;
        const TTest *tests[3];
    } cases[] = {
        {"expect",
         {test_conn_expect_delivers_exact_frames,
          test_conn_expect_above_max_size_is_refused}},
        {"yield",
         {test_conn_received_false_yields_to_other_connections,
          test_conn_max_size_per_turn_yields_to_other_connections}},
        {"read_buffer", {test_conn_read_buffer_grows_from_init_to_max_size}},
        {"close",
         {test_conn_graceful_close_delivers_all_then_eof,
          test_conn_graceful_close_while_muted_delivers_all_then_eof,
          test_conn_abort_resets_peer}},
        {"mute",
         {test_conn_muted_notices_peer_close, test_conn_muted_notices_peer_half_close}},
        {"closed", {test_conn_closed_fires_exactly_once_and_last}},
        {"set_notify", {test_conn_set_notify_hands_over_buffered_bytes}},
        {"backpressure",
         {test_conn_throttled_then_unthrottled_once,
          test_conn_write_past_max_pending_is_refused}},
        {"lifecycle",
         {test_conn_plugin_may_stop_its_timer_in_fini,
          test_conn_no_new_connections_during_shutdown,
          test_conn_no_sent_after_close_in_sent}},
        {"slow_close", {test_conn_graceful_close_waits_for_a_slow_reader}},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_set_timeout(tc, 60);
        for (int j = 0; j < 3 && cases[i].tests[j]; j++)
            tcase_add_test(tc, cases[i].tests[j]);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    return run_suite(conn_suite());
}
