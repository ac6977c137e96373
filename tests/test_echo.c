/*
 * test_echo.c: the real connd, the bundled echo plugin and the scriptable
 * testplug, driven over real sockets on 127.0.0.1 and ::1. "data" checks
 * that bytes come back intact (large, many clients, IPv6, half-close),
 * "backpressure" that a client that never reads cannot grow the daemon,
 * "limit" that a listener at its limit holds new clients until one closes,
 * "shutdown" that SIGTERM drains queued bytes and that its deadline holds.
 *
 * Client I/O is non-blocking and poll-driven (io_pump()), so a test cannot
 * deadlock on full socket buffers, and every wait has a deadline.
 */
#include "harness.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- configs ------------------------------------------------------------ */

#define CFG_HEAD                                                                         \
    "{\"control\":{\"path\":\"@DIR@/control.sock\"},\"plugin_dir\":\"@PLUGINS@\","
#define PLUGIN_ECHO "\"plugins\":[{\"name\":\"echo\",\"file\":\"echo.so\"}],"
/* One echo listener "e" on host, port 0, with extra listener fields. */
#define ECHO_CFG(host, extra)                                                            \
    CFG_HEAD PLUGIN_ECHO "\"listeners\":[{\"name\":\"e\",\"host\":\"" host               \
                         "\",\"port\":0,\"plugin\":\"echo\"" extra "}]}"
/* One testplug listener "g" that greets with n pattern bytes on accept. */
#define GREET_CFG(shutdown_ms, n)                                                        \
    CFG_HEAD "\"shutdown_timeout_ms\":" shutdown_ms ","                                  \
             "\"plugins\":[{\"name\":\"tp\",\"file\":\"@TPLUGINS@/testplug.so\","        \
             "\"config\":{\"greet\":" n "}}],"                                           \
             "\"listeners\":[{\"name\":\"g\",\"host\":\"127.0.0.1\",\"port\":0,"         \
             "\"plugin\":\"tp\"}]}"

/* ---- fixture: one daemon per test, freed even when a test fails --------- */

static struct daemon D;

static void setup(void)
{
    memset(&D, 0, sizeof(D));
    D.err_fd = -1;
}

static void teardown(void)
{
    if (D.log)
        daemon_free(&D);
}

/* Start connd on cfg and return the port of listener `name`. */
static int start(const char *cfg, const char *name)
{
    int port;

    ck_assert_msg(daemon_start(&D, cfg, NULL) == 0, "connd did not start:\n%s", D.log);
    port = daemon_port(&D, name);
    ck_assert_msg(port > 0, "no port for listener %s in:\n%s", name, D.log);
    return port;
}

/* A connected non-blocking client socket. */
static int client(const char *host, int port)
{
    int fd = tcp_connect(host, port);

    ck_assert_msg(fd >= 0, "connect to %s:%d: %s", host, port, strerror(errno));
    ck_assert_int_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
    return fd;
}

/* The greeting testplug writes: byte i is i % 251. */
static uint8_t *pattern_bytes(size_t len)
{
    uint8_t *p = malloc(len);

    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(i % 251);
    return p;
}

/* ---- clients: io_peers (harness.h) that check what comes back ---------- */

/* Echo len random bytes over one connection to host:port and check them. */
static void echo_roundtrip(const char *host, int port, size_t len, uint64_t seed)
{
    uint8_t *data = random_bytes(len, seed);
    struct io_peer p;

    io_peer_init(&p, "client", client(host, port), data, len, data, len);
    io_pump(&p, 1, 20000, NULL);
    io_peer_assert_ok(&p);
    close(p.fd);
    free(data);
}

/* Blocking-style small exchange on a non-blocking socket, bounded. */
static void send_small(int fd, const char *msg)
{
    struct io_peer p;

    io_peer_init(&p, "client", fd, (const uint8_t *)msg, strlen(msg), NULL, 0);
    io_pump(&p, 1, 5000, NULL);
    ck_assert_msg(p.err == 0 && p.sent == p.tx_len, "send \"%s\": %s", msg,
                  strerror(-p.err));
}

static void expect_small(int fd, const char *msg, int timeout_ms)
{
    struct io_peer p;

    io_peer_init(&p, "client", fd, NULL, 0, (const uint8_t *)msg, strlen(msg));
    io_pump(&p, 1, timeout_ms, NULL);
    io_peer_assert_ok(&p);
}

/* A client of listener g whose small buffers keep most of the greeting
 * queued in the daemon; returns once the greeting was queued. */
static int greeted_client(void)
{
    int fd = client("127.0.0.1", daemon_port(&D, "g"));

    tcp_small_buffers(fd, 64 * KiB);
    ck_assert_msg(daemon_wait_log(&D, "greet rc=0", 5000), "%s", D.log);
    return fd;
}

/* ---- data --------------------------------------------------------------- */

START_TEST(test_echo_returns_1mib_of_random_bytes_intact)
{
    int port = start(ECHO_CFG("127.0.0.1", ""), "e");

    echo_roundtrip("127.0.0.1", port, 1 * MiB, 1);
}
END_TEST

#define N_CLIENTS 200
#define CLIENT_BYTES (64 * KiB)

START_TEST(test_echo_serves_200_concurrent_clients_and_logs_each_close)
{
    int port = start(ECHO_CFG("127.0.0.1", ""), "e");
    struct io_peer *ps = calloc(N_CLIENTS, sizeof(*ps));
    uint8_t *data = malloc(N_CLIENTS * CLIENT_BYTES);
    static char names[N_CLIENTS][16];
    char closed_line[64];
    size_t done;

    ck_assert(ps && data);
    for (size_t i = 0; i < N_CLIENTS; i++) {
        uint8_t *mine = data + i * CLIENT_BYTES;
        fill_random(mine, CLIENT_BYTES, 1000 + i);
        snprintf(names[i], sizeof(names[i]), "peer %zu", i);
        io_peer_init(&ps[i], names[i], client("127.0.0.1", port), mine, CLIENT_BYTES,
                     mine, CLIENT_BYTES);
    }
    done = io_pump(ps, N_CLIENTS, 30000, NULL);
    for (size_t i = 0; i < N_CLIENTS; i++)
        io_peer_assert_ok(&ps[i]);
    ck_assert_uint_eq(done, N_CLIENTS);
    for (size_t i = 0; i < N_CLIENTS; i++)
        close(ps[i].fd);

    /* Each connection ends with its byte counts once its client is gone. */
    snprintf(closed_line, sizeof(closed_line), ": closed (in %zu, out %zu)", CLIENT_BYTES,
             CLIENT_BYTES);
    ck_assert_msg(daemon_wait_log_count(&D, closed_line, N_CLIENTS, 10000),
                  "%d of %d \"%s\" lines; \"closed (\" lines: %d",
                  daemon_count_log(&D, closed_line), N_CLIENTS, closed_line,
                  daemon_count_log(&D, ": closed ("));
    ck_assert_int_eq(daemon_count_log(&D, ": closed ("), N_CLIENTS);
    free(ps);
    free(data);
}
END_TEST

START_TEST(test_echo_over_ipv6_loopback_returns_bytes_intact)
{
    int port = start(ECHO_CFG("::1", ""), "e");

    ck_assert_msg(strstr(D.log, "listener e: listening on [::1]:"), "%s", D.log);
    echo_roundtrip("::1", port, 256 * KiB, 6);
}
END_TEST

START_TEST(test_echo_returns_everything_after_peer_half_closes)
{
    int port = start(ECHO_CFG("127.0.0.1", ""), "e");
    uint8_t *data = random_bytes(100 * KiB, 7);
    struct io_peer p;

    io_peer_init(&p, "client", client("127.0.0.1", port), data, 100 * KiB, data,
                 100 * KiB);
    p.shut_wr = true;
    p.want_eof = true;
    io_pump(&p, 1, 10000, NULL);
    io_peer_assert_ok(&p);
    ck_assert(p.shut_done);
    close(p.fd);
    free(data);
}
END_TEST

START_TEST(test_queued_bytes_all_arrive_after_peer_half_closes)
{
    uint8_t *want = pattern_bytes(16 * MiB);
    struct io_peer p;

    /* 16 MiB is queued at accept and the client reads none of it before
     * its FIN: the daemon sees EOF with most of the greeting still queued. */
    start(GREET_CFG("10000", "16777216"), "g");
    io_peer_init(&p, "client", greeted_client(), NULL, 0, want, 16 * MiB);
    p.want_eof = true;
    ck_assert_int_eq(shutdown(p.fd, SHUT_WR), 0);
    ck_assert_msg(daemon_wait_log(&D, "closing: peer closed", 5000), "%s", D.log);
    io_pump(&p, 1, 20000, NULL);
    io_peer_assert_ok(&p);
    close(p.fd);
    free(want);
}
END_TEST

/* ---- backpressure -------------------------------------------------------- */

#define FLOOD_BYTES (64 * MiB)
#if UNDER_ASAN
#define RSS_SLACK_KB (48L * 1024) /* seen: +3 MiB with, +85 MiB without */
#else
#define RSS_SLACK_KB (24L * 1024) /* seen: +1 MiB with, +60 MiB without */
#endif

START_TEST(test_echo_bounds_daemon_memory_against_a_client_that_never_reads)
{
    int port = start(ECHO_CFG("127.0.0.1", ""), "e");
    uint8_t *data = random_bytes(FLOOD_BYTES, 3);
    struct rss_watch w;
    struct io_peer p;
    long base_kb;
    size_t stalled_at;

    io_peer_init(&p, "client", client("127.0.0.1", port), data, FLOOD_BYTES, data,
                 FLOOD_BYTES);
    tcp_small_buffers(p.fd, 128 * KiB);
    ck_assert_msg(daemon_wait_log(&D, "accepted on e", 5000), "%s", D.log);
    rss_watch_begin(&w, &D); /* asserts the RSS is known */
    base_kb = w.base_kb;

    /* Never read: echo must mute itself once its queue passes the high
     * watermark, and then TCP pushes back on us long before 64 MiB. */
    stalled_at = io_pump_send_only(&p, 1500, 12000, &w);
    ck_assert_msg(p.err == 0, "send: %s", strerror(-p.err));
    ck_assert_msg(stalled_at < FLOOD_BYTES,
                  "the kernel took all %zu bytes from a client that never reads: the "
                  "daemon kept reading (no backpressure)",
                  stalled_at);

    /* Now read it all back while sending the rest. */
    io_pump(&p, 1, 30000, &w);
    io_peer_assert_ok(&p);
    ck_assert_msg(w.peak_kb <= base_kb + RSS_SLACK_KB,
                  "daemon RSS peaked at %ld KiB, baseline %ld KiB (bound +%ld KiB); "
                  "stalled at %zu bytes",
                  w.peak_kb, base_kb, RSS_SLACK_KB, stalled_at);
    fprintf(stderr, "backpressure: stalled at %zu bytes, RSS %ld -> peak %ld KiB\n",
            stalled_at, base_kb, w.peak_kb);
    close(p.fd);
    free(data);
}
END_TEST

/* ---- limit -------------------------------------------------------------- */

START_TEST(test_echo_listener_limit_holds_third_client_until_one_closes)
{
    int port = start(ECHO_CFG("127.0.0.1", ",\"limit\":2"), "e");
    int c1 = client("127.0.0.1", port), c2, c3;

    send_small(c1, "one");
    expect_small(c1, "one", 5000);
    c2 = client("127.0.0.1", port);
    send_small(c2, "two");
    expect_small(c2, "two", 5000);

    /* The kernel completes the handshake, but connd does not accept. */
    c3 = client("127.0.0.1", port);
    send_small(c3, "three");
    ck_assert_msg(!io_readable(c3, 500), "third client echoed past a limit of 2");

    close(c1);
    expect_small(c3, "three", 2000);
    send_small(c2, "still");
    expect_small(c2, "still", 5000);
    close(c2);
    close(c3);
}
END_TEST

/* ---- shutdown ----------------------------------------------------------- */

START_TEST(test_sigterm_drains_queued_greeting_then_exits_zero)
{
    uint8_t *want = pattern_bytes(4 * MiB);
    struct io_peer p;
    uint64_t t0;
    int rc;

    start(GREET_CFG("10000", "4194304"), "g");
    io_peer_init(&p, "client", greeted_client(), NULL, 0, want, 4 * MiB);
    p.want_eof = true;

    t0 = now_ms();
    ck_assert_int_eq(kill(D.pid, SIGTERM), 0);
    io_pump(&p, 1, 10000, NULL);
    io_peer_assert_ok(&p);
    close(p.fd);
    rc = daemon_stop(&D, 0, 10000 - (int)(now_ms() - t0)); /* signal 0: only wait */
    ck_assert_msg(rc == 0, "exit %d after %llu ms; log:\n%s", rc,
                  (unsigned long long)(now_ms() - t0), D.log);
    ck_assert_msg(now_ms() - t0 < 10000, "exit took %llu ms",
                  (unsigned long long)(now_ms() - t0));
    ck_assert_msg(!strstr(D.log, "deadline reached"), "drained by the deadline:\n%s",
                  D.log);
    free(want);
}
END_TEST

START_TEST(test_sigterm_deadline_aborts_an_unread_greeting_and_exits_zero)
{
    uint64_t t0, took;
    int fd, rc;

    start(GREET_CFG("300", "16777216"), "g");
    fd = greeted_client();

    t0 = now_ms();
    ck_assert_int_eq(kill(D.pid, SIGTERM), 0);
    rc = daemon_stop(&D, 0, 5000); /* signal 0: only wait */
    took = now_ms() - t0;
    ck_assert_msg(rc == 0, "exit %d after %llu ms; log:\n%s", rc,
                  (unsigned long long)took, D.log);
    ck_assert_msg(took < 2000, "exit took %llu ms with a 300 ms deadline",
                  (unsigned long long)took);
    ck_assert_msg(strstr(D.log, "shutdown: deadline reached"), "%s", D.log);
    ck_assert_msg(strstr(D.log, "pending bytes dropped"), "%s", D.log);
    close(fd);
}
END_TEST

static Suite *echo_suite(void)
{
    Suite *s = suite_create("echo");
    TCase *tc;

    tc = tcase_create("data");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_echo_returns_1mib_of_random_bytes_intact);
    tcase_add_test(tc, test_echo_serves_200_concurrent_clients_and_logs_each_close);
    tcase_add_test(tc, test_echo_over_ipv6_loopback_returns_bytes_intact);
    tcase_add_test(tc, test_echo_returns_everything_after_peer_half_closes);
    tcase_add_test(tc, test_queued_bytes_all_arrive_after_peer_half_closes);
    suite_add_tcase(s, tc);

    tc = tcase_create("backpressure");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_echo_bounds_daemon_memory_against_a_client_that_never_reads);
    suite_add_tcase(s, tc);

    tc = tcase_create("limit");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_echo_listener_limit_holds_third_client_until_one_closes);
    suite_add_tcase(s, tc);

    tc = tcase_create("shutdown");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_sigterm_drains_queued_greeting_then_exits_zero);
    tcase_add_test(tc, test_sigterm_deadline_aborts_an_unread_greeting_and_exits_zero);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(echo_suite());
}
