/*
 * test_relay.c: the host's relay() (daemon/conn.c, "relay") end to end
 * through a real connd on 127.0.0.1. The test plugin relaypair
 * (tests/plugins/relaypair.c) pairs the connections its listener accepts
 * two by two and relays each pair; two client sockets of the test, A (the
 * first) and B, are the two ends.
 *
 * - Bytes: 16 MiB each way at once arrive intact; conn.show names each
 *   end's partner in "relay"; status.spliced_bytes shows splicing, and it
 *   and the bytes received() got add up to every byte relayed.
 * - API: relay(c, c) is -EINVAL, relaying a pair again is 0, relaying to a
 *   connection relayed to another is -EBUSY, to one of another plugin
 *   instance -EPERM, relay() inside closed() is
 *   -ENOTCONN; conn.set_notify to another plugin ends the relay for both
 *   ends (conn.show "relay" null, and the bytes go to the new plugin), and
 *   so does conn.close of one end as soon as it is closing.
 * - Backpressure: a reader that stops, then reads slowly, loses nothing;
 *   the sender stalls long before 64 MiB, muted by the plugin, and connd's
 *   RSS stays bounded.
 * - Half-close: a FIN passes after every byte and ends the relay; the
 *   other direction still carries 1 MiB, then its own FIN, and both
 *   connections close with exact byte counts.
 * - Mute: conn.mute stops a relayed source; after conn.unmute its bytes
 *   arrive intact.
 * - Order: conn.write to a relayed destination lands between the relayed
 *   bytes, each write whole, once and in order, and the relayed bytes
 *   around them are exactly what was sent.
 * - sent(): nothing is spliced to a connection whose plugin has a sent()
 *   hook, and sent() sees every relayed byte.
 * - Small messages are copied through received(), a burst is spliced.
 * - Urgent bytes: one sent with MSG_OOB is skipped as recv(2) skips it
 *   (TCP's splice stops there), without spinning, also with a FIN queued
 *   right behind it.
 * - Faults: a reset on either end mid-stream closes the other end, what
 *   arrived is a prefix of what was sent, and the next pair is relayed;
 *   without descriptors for the pipe relay() returns -EMFILE, the failure
 *   is logged once, and the bytes are copied.
 * - Shutdown: after SIGTERM a slow receiver gets every byte connd read
 *   from the sender, and then EOF.
 *
 * Client I/O is non-blocking and poll-driven (io_pump()), so no test can
 * deadlock on full socket buffers, and every wait has a deadline.
 */
#include "harness.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Under ASan freed buffers stay resident in its quarantine, so RSS grows
 * with the bytes moved, not only with what is queued (as in
 * test_bundled.c); the stall check catches a relay that does not push
 * back either way. */
#if UNDER_ASAN
#define RSS_SLACK_KB (160L * 1024)
#else
#define RSS_SLACK_KB (32L * 1024)
#endif
#define BIG_TIMEOUT_MS (UNDER_ASAN ? 90000 : 45000)

/* ---- config ------------------------------------------------------------- */

/* Listener "r" serves relaypair, "rs" relaypair_sent; both take the extra
 * listener keys (",\"k\":v" or ""); "r2" serves a second instance of
 * relaypair ("rp2"); echo is loaded for conn.set_notify. */
/* clang-format off */
#define CFG_FMT \
    "{\"plugin_dir\":\"@PLUGINS@\",\"shutdown_timeout_ms\":%d," \
    "\"plugins\":[" \
        "{\"name\":\"rp\",\"file\":\"@TPLUGINS@/relaypair.so\"}," \
        "{\"name\":\"rp2\",\"file\":\"@TPLUGINS@/relaypair.so\"}," \
        "{\"name\":\"rps\",\"file\":\"@TPLUGINS@/relaypair_sent.so\"}," \
        "{\"name\":\"echo\",\"file\":\"echo.so\"}]," \
    "\"listeners\":[" \
        "{\"name\":\"r\",\"host\":\"127.0.0.1\",\"port\":0,\"plugin\":\"rp\"%s}," \
        "{\"name\":\"r2\",\"host\":\"127.0.0.1\",\"port\":0,\"plugin\":\"rp2\"}," \
        "{\"name\":\"rs\",\"host\":\"127.0.0.1\",\"port\":0,\"plugin\":\"rps\"%s}]}"
/* clang-format on */

/* ---- fixture: the daemon of a test, freed even when it fails ------------- */

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

/* The last few KiB of the log, for failure messages. */
static const char *log_tail(void)
{
    size_t keep = 3000; /* Check refuses messages of about 4 KiB and more */
    return D.log_len > keep ? D.log + D.log_len - keep : D.log;
}

static void start(int shutdown_timeout_ms, const char *limits)
{
    char *cfg = NULL;

    ck_assert_int_ge(asprintf(&cfg, CFG_FMT, shutdown_timeout_ms, limits, limits), 0);
    ck_assert_msg(daemon_start(&D, cfg, NULL) == 0,
                  "connd did not start on\n%s\nlog:\n%s", cfg, log_tail());
    free(cfg);
}

/* connd exited 0 (after sig, or on its own with sig 0) within the bound,
 * and its log has no sanitizer report. */
static void stop_clean_sig(int sig, int timeout_ms)
{
    int rc = daemon_stop(&D, sig, timeout_ms);

    ck_assert_msg(rc == 0, "connd exited %d; log:\n%s", rc, log_tail());
    ck_assert_msg(!strstr(D.log, "Sanitizer") && !strstr(D.log, "runtime error"),
                  "sanitizer report in connd's log:\n%s", log_tail());
}

/* SIGTERM: every test ends with this. */
static void stop_clean(void)
{
    stop_clean_sig(SIGTERM, 10000);
}

/* Wait for the printf'd needle anywhere in the log. */
__attribute__((format(printf, 2, 3))) static bool wait_logf(int timeout_ms,
                                                            const char *fmt, ...)
{
    char needle[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(needle, sizeof(needle), fmt, ap);
    va_end(ap);
    return daemon_wait_log_count(&D, needle, 1, timeout_ms);
}

/* The first log line containing needle, copied into buf ("" if none). */
static const char *log_line(const char *needle, char *buf, size_t len)
{
    const char *hit = strstr(D.log, needle), *start, *end;

    buf[0] = '\0';
    if (!hit)
        return buf;
    for (start = hit; start > D.log && start[-1] != '\n'; start--)
        ;
    end = strchr(hit, '\n');
    if (!end)
        end = D.log + D.log_len;
    snprintf(buf, len, "%.*s", (int)(end - start), start);
    return buf;
}

/* The number after "key=" in the first log line containing needle. */
static unsigned long long log_value(const char *needle, const char *key)
{
    char line[512], k[32];
    const char *v;

    snprintf(k, sizeof(k), " %s=", key);
    log_line(needle, line, sizeof(line));
    v = strstr(line, k);
    ck_assert_msg(v, "no %s in \"%s\"; log:\n%s", k, line, log_tail());
    return strtoull(v + strlen(k), NULL, 10);
}

/* ---- control socket ------------------------------------------------------ */

/* As ctl_result_on, on a control connection of its own, params printf'd. */
__attribute__((format(printf, 2, 3))) static json_t *ctl_result(const char *method,
                                                                const char *fmt, ...)
{
    char params[512];
    va_list ap;
    json_t *result;
    int fd = ctl_connect(&D);

    ck_assert_msg(fd >= 0, "control socket %s: %s", D.ctl_path, strerror(errno));
    va_start(ap, fmt);
    vsnprintf(params, sizeof(params), fmt, ap);
    va_end(ap);
    result = ctl_result_on(fd, method, params);
    close(fd);
    return result;
}

/* Whether conn.show of id lists mute reason `reason`; *throttled (if not
 * NULL) gets its "throttled". */
static bool muted_for(json_int_t id, const char *reason, bool *throttled)
{
    json_t *show = ctl_result("conn.show", "{\"id\":%lld}", (long long)id);
    json_t *reasons = json_object_get(show, "mute_reasons");
    bool found = false;

    for (size_t i = 0; i < json_array_size(reasons); i++) {
        const char *r = json_string_value(json_array_get(reasons, i));
        if (r && strcmp(r, reason) == 0)
            found = true;
    }
    if (throttled)
        *throttled = json_is_true(json_object_get(show, "throttled"));
    json_decref(show);
    return found;
}

/* ---- clients and pairs ---------------------------------------------------- */

/* A connected non-blocking client socket with TCP_NODELAY. */
static int client(int port)
{
    int fd = tcp_connect("127.0.0.1", port), one = 1;

    ck_assert_msg(fd >= 0, "connect to 127.0.0.1:%d: %s", port, strerror(errno));
    ck_assert_int_eq(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)), 0);
    ck_assert_int_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
    return fd;
}

/* The id of the daemon's end of client socket fd (from conn.list, by the
 * client's port). */
static json_int_t conn_id_of(int fd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    char remote[32];
    json_t *list;
    json_int_t id = 0;

    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    snprintf(remote, sizeof(remote), "127.0.0.1:%d", ntohs(sa.sin_port));
    list = ctl_result("conn.list", "{}");
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *e = json_array_get(list, i);
        const char *r = json_string_value(json_object_get(e, "remote"));
        if (r && strcmp(r, remote) == 0)
            id = json_integer_value(json_object_get(e, "id"));
    }
    ck_assert_msg(id > 0, "no connection from %s in %s", remote,
                  json_dumps(list, JSON_COMPACT));
    json_decref(list);
    return id;
}

/* Two clients relayed to each other by relaypair: a connected first. */
struct pair {
    int a, b;
    json_int_t ida, idb;
    char line[256]; /* the plugin's "pair" log line */
};

static void pair_up(const char *listener, struct pair *p)
{
    int port = daemon_port(&D, listener);
    int waiting = daemon_count_log(&D, ": waiting id="),
        paired = daemon_count_log(&D, ": pair a=");
    char needle[64];

    ck_assert_msg(port > 0, "no port for listener %s:\n%s", listener, log_tail());
    p->a = client(port);
    ck_assert_msg(daemon_wait_log_count(&D, ": waiting id=", waiting + 1, 5000),
                  "the first client is not waiting:\n%s", log_tail());
    p->b = client(port);
    ck_assert_msg(daemon_wait_log_count(&D, ": pair a=", paired + 1, 5000),
                  "the second client was not paired:\n%s", log_tail());
    p->ida = conn_id_of(p->a);
    p->idb = conn_id_of(p->b);
    snprintf(needle, sizeof(needle), ": pair a=%lld b=%lld ", (long long)p->ida,
             (long long)p->idb);
    log_line(needle, p->line, sizeof(p->line));
    ck_assert_msg(p->line[0], "no \"%s\" line:\n%s", needle, log_tail());
}

/* conn.show of each end names the other as its relay. */
static void assert_relayed(const struct pair *p)
{
    json_int_t ra = ctl_relay_of(&D, p->ida), rb = ctl_relay_of(&D, p->idb);

    ck_assert_msg(ra == p->idb && rb == p->ida,
                  "conn.show relay: %lld -> %lld, %lld -> %lld (want %lld <-> %lld)",
                  (long long)p->ida, (long long)ra, (long long)p->idb, (long long)rb,
                  (long long)p->ida, (long long)p->idb);
}

/* The pair's log line has `what`. */
static void assert_pair_line(const struct pair *p, const char *what)
{
    ck_assert_msg(strstr(p->line, what), "want \"%s\" in \"%s\"", what, p->line);
}

/* Both of the pair's connections closed: the plugin's closed() lines. */
static void wait_pair_closed(const char *plugin, const struct pair *p)
{
    ck_assert_msg(
        wait_logf(5000, "plugin %s: closed id=%lld ", plugin, (long long)p->ida) &&
            wait_logf(5000, "plugin %s: closed id=%lld ", plugin, (long long)p->idb),
        "conns %lld and %lld did not both close:\n%s", (long long)p->ida,
        (long long)p->idb, log_tail());
}

/* ---- bytes both ways -------------------------------------------------------- */

#define BOTH_WAYS (16 * MiB)

START_TEST(test_relay_moves_16mib_each_way_at_once_intact_and_splices)
{
    uint8_t *ab = random_bytes(BOTH_WAYS, 1), *ba = random_bytes(BOTH_WAYS, 2);
    unsigned long long received;
    char needle[64];
    struct io_peer ps[2];
    struct pair p;
    json_int_t spliced;
    uint64_t t0;

    start(5000, "");
    pair_up("r", &p);
    assert_pair_line(&p, " self=-22 rc=0 again=0 busy=none");
    assert_relayed(&p);

    t0 = now_ms();
    io_peer_init(&ps[0], "A", p.a, ab, BOTH_WAYS, ba, BOTH_WAYS);
    io_peer_init(&ps[1], "B", p.b, ba, BOTH_WAYS, ab, BOTH_WAYS);
    io_pump(ps, 2, BIG_TIMEOUT_MS, NULL);
    io_peer_assert_ok(&ps[0]);
    io_peer_assert_ok(&ps[1]);
    spliced = ctl_spliced_bytes(&D);
    fprintf(stderr, "relay: 16 MiB each way in %llu ms, %lld bytes spliced\n",
            (unsigned long long)(now_ms() - t0), (long long)spliced);
    ck_assert_msg(spliced > 0, "status.spliced_bytes is 0: nothing was spliced");
    assert_relayed(&p);

    /* Every byte went one way or the other, never both: spliced, or read
     * and handed to received(). The second closed() line has the total. */
    close(p.a);
    close(p.b);
    wait_pair_closed("rp", &p);
    snprintf(needle, sizeof(needle), "plugin rp: closed id=%lld ", (long long)p.ida);
    received = log_value(needle, "received");
    snprintf(needle, sizeof(needle), "plugin rp: closed id=%lld ", (long long)p.idb);
    if (log_value(needle, "received") > received)
        received = log_value(needle, "received");
    ck_assert_msg(received + (unsigned long long)spliced == 2 * BOTH_WAYS,
                  "received() got %llu bytes and %lld were spliced: %llu, not the %zu "
                  "relayed",
                  received, (long long)spliced, received + (unsigned long long)spliced,
                  2 * BOTH_WAYS);
    stop_clean();
    free(ab);
    free(ba);
}
END_TEST

/* Send msg on `from` and expect exactly it on `to`. */
static void pass(int from, int to, const char *msg)
{
    struct io_peer ps[2];

    io_peer_init(&ps[0], "from", from, (const uint8_t *)msg, strlen(msg), NULL, 0);
    io_peer_init(&ps[1], "to", to, NULL, 0, (const uint8_t *)msg, strlen(msg));
    io_pump(ps, 2, 5000, NULL);
    io_peer_assert_ok(&ps[0]);
    io_peer_assert_ok(&ps[1]);
}

/* Small messages go through received() (two splices and the pipe cost
 * more than the copies they save); a burst is spliced. */
START_TEST(test_relay_copies_small_messages_and_splices_a_burst)
{
    static const char small[] = "a small request, sent one at a time: each waits for the last";
    uint8_t *burst = random_bytes(MiB, 7);
    struct io_peer ps[2];
    struct pair p;
    json_int_t after_small, after_burst;

    start(5000, "");
    pair_up("r", &p);
    for (int i = 0; i < 100; i++)
        pass(p.a, p.b, small);
    after_small = ctl_spliced_bytes(&D);
    /* At most the first one: a splice that moves little turns it off. */
    ck_assert_msg(after_small <= (json_int_t)strlen(small),
                  "%lld bytes of %zu-byte messages were spliced", (long long)after_small,
                  strlen(small));
    io_peer_init(&ps[0], "A", p.a, burst, MiB, NULL, 0);
    io_peer_init(&ps[1], "B", p.b, NULL, 0, burst, MiB);
    io_pump(ps, 2, 10000, NULL);
    io_peer_assert_ok(&ps[0]);
    io_peer_assert_ok(&ps[1]);
    after_burst = ctl_spliced_bytes(&D);
    fprintf(stderr, "relay: 100 small messages, then 1 MiB: %lld then %lld spliced\n",
            (long long)after_small, (long long)after_burst);
    ck_assert_msg(after_burst - after_small >= (json_int_t)MiB / 2,
                  "only %lld bytes of a 1 MiB burst were spliced",
                  (long long)(after_burst - after_small));
    close(p.a);
    close(p.b);
    stop_clean();
    free(burst);
}
END_TEST

/* An urgent byte (MSG_OOB): recv(2) skips it, TCP's splice stops at it.
 * The relay must read past it as a read does, not spin or stall. */
START_TEST(test_relay_skips_an_urgent_byte_like_a_read)
{
    struct pair p;
    struct io_peer ps[2];
    long t0;

    start(5000, "");
    pair_up("r", &p);
    pass(p.a, p.b, "hello ");
    ck_assert_int_eq(send(p.a, "X", 1, MSG_OOB), 1);
    usleep(50 * 1000);
    t0 = proc_cpu_ticks(D.pid);
    /* Then "world": it arrives, and connd stays idle meanwhile. */
    io_peer_init(&ps[0], "A", p.a, (const uint8_t *)"world", 5, NULL, 0);
    io_peer_init(&ps[1], "B", p.b, NULL, 0, (const uint8_t *)"world", 5);
    io_pump(ps, 2, 2000, NULL);
    usleep(500 * 1000);
    ck_assert_msg(proc_cpu_ticks(D.pid) - t0 < sysconf(_SC_CLK_TCK) / 4,
                  "connd used %ld ticks of CPU (%ld a second) after the urgent byte; B "
                  "got %zu of 5 bytes after it",
                  proc_cpu_ticks(D.pid) - t0, (long)sysconf(_SC_CLK_TCK), ps[1].got);
    io_peer_assert_ok(&ps[1]);
    /* And A's FIN comes after them. */
    ck_assert_int_eq(shutdown(p.a, SHUT_WR), 0);
    ck_assert_int_eq(io_expect_eof(p.b, 2000), 1);
    close(p.a);
    close(p.b);
    stop_clean();
}
END_TEST

/* With the FIN already queued behind the urgent byte, TCP's splice returns
 * 0 at the mark: not an EOF, the bytes after the mark come first. */
START_TEST(test_relay_reads_past_an_urgent_byte_to_a_fin_behind_it)
{
    struct pair p;
    struct io_peer b;

    start(5000, "");
    pair_up("r", &p);
    pass(p.a, p.b, "hello ");
    /* Muted, connd reads nothing of A until everything, FIN included, is
     * in A's receive queue. */
    json_decref(ctl_result("conn.mute", "{\"id\":%lld}", (long long)p.ida));
    ck_assert_int_eq(send(p.a, "X", 1, MSG_OOB), 1);
    ck_assert_int_eq(io_write_all(p.a, "world", 5), 0);
    ck_assert_int_eq(shutdown(p.a, SHUT_WR), 0);
    usleep(100 * 1000);
    json_decref(ctl_result("conn.unmute", "{\"id\":%lld}", (long long)p.ida));
    io_peer_init(&b, "B", p.b, NULL, 0, (const uint8_t *)"world", 5);
    b.want_eof = true;
    io_pump(&b, 1, 3000, NULL);
    io_peer_assert_ok(&b);
    close(p.a);
    close(p.b);
    stop_clean();
}
END_TEST

/* ---- faults ---------------------------------------------------------------- */

/* Read from fd until EOF, a reset or timeout_ms; what came goes to buf
 * (cap bytes). Returns the count; *how is 1 EOF, -errno a reset, 0 time. */
static size_t read_until_end(int fd, uint8_t *buf, size_t cap, int timeout_ms, int *how)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    size_t got = 0;

    *how = 0;
    while (now_ms() < end) {
        ssize_t n;
        if (!io_readable(fd, 50))
            continue;
        n = recv(fd, buf + got, cap - got, MSG_DONTWAIT);
        if (n > 0) {
            got += (size_t)n;
            ck_assert_msg(got < cap, "more than %zu bytes arrived", cap);
        } else if (n == 0) {
            *how = 1;
            break;
        } else if (errno != EAGAIN && errno != EINTR) {
            *how = -errno;
            break;
        }
    }
    return got;
}

/* A peer that resets mid-stream, on either end: the relayed bytes that
 * arrived are a prefix of what was sent, the other end is closed, and
 * connd relays the next pair. */
static void reset_mid_stream(bool reset_the_sender)
{
    size_t n = 32 * MiB;
    uint8_t *data = random_bytes(n, 8), *got = malloc(n + 1);
    struct io_peer ps[2];
    struct pair p;
    size_t k;
    int how;

    ck_assert_ptr_nonnull(got);
    start(5000, "");
    pair_up("r", &p);
    io_peer_init(&ps[0], "A", p.a, data, n, NULL, 0);
    io_peer_init(&ps[1], "B", p.b, NULL, 0, NULL, 0);
    ps[1].keep = got;
    ps[1].keep_cap = n + 1;
    while (ps[1].got < 4 * MiB && !ps[0].err && !ps[1].err)
        io_pump(ps, 2, 20, NULL);
    ck_assert_msg(ctl_spliced_bytes(&D) > 0, "nothing spliced before the reset");
    if (reset_the_sender) {
        tcp_close_reset(p.a);
        k = ps[1].got + read_until_end(p.b, got + ps[1].got, n + 1 - ps[1].got, 5000, &how);
        ck_assert_msg(how != 0, "B was not closed after A's reset (%zu bytes)", k);
        ck_assert_msg(memcmp(got, data, k) == 0, "B got %zu bytes, not a prefix of A's", k);
        close(p.b);
    } else {
        uint8_t none[64];
        tcp_close_reset(p.b);
        /* A is closed within the bound; B never sent it anything. */
        ck_assert_int_eq(read_until_end(p.a, none, sizeof(none), 5000, &how), 0);
        ck_assert_msg(how != 0, "A was not closed after B's reset");
        ck_assert_msg(memcmp(got, data, ps[1].got) == 0, "B's bytes were not A's");
        close(p.a);
    }
    ck_assert_msg(wait_logf(5000, "plugin rp: closed id=%lld ", (long long)p.ida) &&
                      wait_logf(5000, "plugin rp: closed id=%lld ", (long long)p.idb),
                  "the pair did not close:\n%s", log_tail());
    pair_up("r", &p);
    pass(p.a, p.b, "the next pair");
    pass(p.b, p.a, "both ways");
    close(p.a);
    close(p.b);
    stop_clean();
    free(data);
    free(got);
}

START_TEST(test_relay_sender_reset_mid_stream_leaves_a_prefix_and_closes_the_other)
{
    reset_mid_stream(true);
}
END_TEST

START_TEST(test_relay_receiver_reset_mid_stream_closes_the_sender)
{
    reset_mid_stream(false);
}
END_TEST

/* No descriptors for the pipe: relay() says so, once in the log, and the
 * pair is copied through received(). */
START_TEST(test_relay_without_a_pipe_copies_and_warns_once)
{
    struct pair p, q;
    long lim;

    start(5000, "");
    /* Room for the two accepted sockets of each pair and one more (a
     * control connection of the test's), not for a pipe's two. */
    lim = proc_fd_limit_for_room(D.pid, 3);
    ck_assert_int_gt(lim, 0);
    ck_assert_int_eq(proc_set_fd_limit(D.pid, (rlim_t)lim), 0);
    pair_up("r", &p);
    assert_pair_line(&p, " rc=-24 ");
    close(p.a);
    close(p.b);
    wait_pair_closed("rp", &p);
    pair_up("r", &q);
    assert_pair_line(&q, " rc=-24 ");
    pass(q.a, q.b, "copied, not spliced");
    pass(q.b, q.a, "and back");
    ck_assert_int_eq(ctl_spliced_bytes(&D), 0);
    ck_assert_int_eq(ctl_relay_of(&D, q.ida), 0);
    ck_assert_msg(daemon_count_log(&D, "relayed bytes are copied (logged once)") == 1,
                  "want the pipe failure logged once:\n%s", log_tail());
    close(q.a);
    close(q.b);
    stop_clean();
}
END_TEST

/* ---- API results ------------------------------------------------------------ */

/* The relay ends when a graceful close starts, not when it ends. */
START_TEST(test_relay_ends_when_either_starts_a_graceful_close)
{
    struct pair p;
    json_t *st;

    start(5000, "");
    pair_up("r", &p);
    assert_relayed(&p);
    st = ctl_result("conn.close", "{\"id\":%lld}", (long long)p.idb);
    ck_assert_str_eq(json_string_value(json_object_get(st, "state")), "closing");
    json_decref(st);
    /* B waits for its peer's EOF (the test never sends it). */
    ck_assert_int_eq(ctl_relay_of(&D, p.ida), 0);
    ck_assert_int_eq(ctl_relay_of(&D, p.idb), 0);
    close(p.a);
    close(p.b);
    stop_clean();
}
END_TEST




START_TEST(test_relay_refuses_self_busy_and_closed_and_set_notify_ends_it)
{
    struct pair p1, p2, p3;
    json_t *r;

    start(5000, "");
    pair_up("r", &p1);
    pair_up("r", &p2);
    assert_pair_line(&p1, " self=-22 rc=0 again=0 busy=none foreign=none");
    /* relay(B2, A1): A1 is relayed to B1. */
    assert_pair_line(&p2, " self=-22 rc=0 again=0 busy=-16 foreign=none");
    assert_relayed(&p1);
    assert_relayed(&p2);
    /* Another instance may not relay rp's connections: relay(B3, A2) is
     * -EPERM, and its own pair is relayed. */
    pair_up("r2", &p3);
    assert_pair_line(&p3, " self=-22 rc=0 again=0 busy=none foreign=-1");
    assert_relayed(&p3);
    pass(p3.a, p3.b, "instance two"); /* open until the end: no closed() lines */
    pass(p1.a, p1.b, "one way");
    pass(p1.b, p1.a, "and back");

    /* Pair 1 ends: the first closed() still has a partner and relay() is
     * refused on the closed connection; the second has none left. */
    close(p1.a);
    ck_assert_msg(wait_logf(5000, "unrelay id=%lld rc=0", (long long)p1.ida), "%s",
                  log_tail());
    ck_assert_int_eq(io_expect_eof(p1.b, 5000), 1);
    close(p1.b);
    wait_pair_closed("rp", &p1);
    ck_assert_msg(daemon_count_log(&D, " relay_rc=-107 ") == 1 &&
                      daemon_count_log(&D, " relay_rc=none ") == 1,
                  "want one closed() with relay_rc=-107 and one with none:\n%s",
                  log_tail());
    assert_relayed(&p2);

    /* Handing A2 to echo ends the relay on both ends. */
    r = ctl_result("conn.set_notify", "{\"id\":%lld,\"plugin\":\"echo\"}",
                   (long long)p2.ida);
    ck_assert_str_eq(json_string_value(json_object_get(r, "plugin")), "echo");
    json_decref(r);
    ck_assert_int_eq(ctl_relay_of(&D, p2.ida), 0);
    ck_assert_int_eq(ctl_relay_of(&D, p2.idb), 0);
    /* relaypair keeps B2's partner pointer: B2 goes to echo too (see
     * relaypair.c), and then each end hears only itself. */
    json_decref(ctl_result("conn.set_notify", "{\"id\":%lld,\"plugin\":\"echo\"}",
                           (long long)p2.idb));
    pass(p2.a, p2.a, "A2 talks to echo now");
    ck_assert_msg(!io_readable(p2.b, 200), "A2's bytes still reached B2");
    pass(p2.b, p2.b, "so does B2");
    ck_assert_msg(!io_readable(p2.a, 200), "B2's bytes reached A2");
    close(p2.a);
    close(p2.b);
    ck_assert_msg(wait_logf(5000, "conn %lld: closed (in ", (long long)p2.ida) &&
                      wait_logf(5000, "conn %lld: closed (in ", (long long)p2.idb),
                  "%s", log_tail());
    close(p3.a);
    close(p3.b);
    stop_clean();
}
END_TEST

/* ---- backpressure ----------------------------------------------------------- */

#define FLOOD_BYTES (64 * MiB)

START_TEST(test_relay_bounds_memory_and_loses_nothing_with_a_slow_reader)
{
    uint8_t *data = random_bytes(FLOOD_BYTES, 3);
    struct rss_watch w;
    struct io_peer ps[2];
    struct pair p;
    size_t stalled_at;
    bool throttled = false;

    start(5000, "");
    pair_up("r", &p);
    tcp_small_buffers(p.b, 128 * KiB);
    io_peer_init(&ps[0], "A", p.a, data, FLOOD_BYTES, NULL, 0);
    io_peer_init(&ps[1], "B", p.b, NULL, 0, data, FLOOD_BYTES);
    rss_watch_begin(&w, &D);

    /* B reads nothing: B's write queue passes the watermark, relaypair
     * mutes A, and the kernel stops taking A's bytes long before 64 MiB. */
    stalled_at = io_pump_send_only(&ps[0], 1000, 15000, &w);
    ck_assert_msg(ps[0].err == 0, "send: %s", strerror(-ps[0].err));
    ck_assert_msg(stalled_at < FLOOD_BYTES,
                  "all %zu bytes were taken while B read nothing: no backpressure",
                  stalled_at);
    ck_assert_msg(muted_for(p.ida, "pair-bp", NULL) &&
                      !muted_for(p.idb, "pair-bp", &throttled) && throttled,
                  "A should be muted for pair-bp and B throttled:\n%s", log_tail());

    /* Then B reads slowly: 8 MiB, a 300 ms pause, and so on. */
    ps[1].rx_burst = 8 * MiB;
    ps[1].rx_pause_ms = 300;
    io_pump(ps, 2, 60000, &w);
    io_peer_assert_ok(&ps[0]);
    io_peer_assert_ok(&ps[1]);
    fprintf(stderr, "relay slow reader: stalled at %zu bytes, %lld spliced\n", stalled_at,
            (long long)ctl_spliced_bytes(&D));
    fprintf(stderr, "relay slow reader: daemon RSS %ld -> peak %ld KiB\n", w.base_kb,
            w.peak_kb);
    ck_assert_msg(w.peak_kb <= w.base_kb + RSS_SLACK_KB,
                  "daemon RSS peaked at %ld KiB, baseline %ld KiB (bound +%ld KiB)",
                  w.peak_kb, w.base_kb, RSS_SLACK_KB);
    close(p.a);
    close(p.b);
    stop_clean();
    free(data);
}
END_TEST

/* ---- half-close -------------------------------------------------------------- */

/* `from` (connection id) sends len bytes and its FIN: `to` gets all of
 * them, then EOF, and the plugin ends the relay on the EOF. */
static void send_then_fin(int from, json_int_t id, int to, const uint8_t *data, size_t len)
{
    struct io_peer ps[2];

    io_peer_init(&ps[0], "sender", from, data, len, NULL, 0);
    ps[0].shut_wr = true;
    io_peer_init(&ps[1], "receiver", to, NULL, 0, data, len);
    ps[1].want_eof = true;
    io_pump(ps, 2, 20000, NULL);
    io_peer_assert_ok(&ps[0]);
    io_peer_assert_ok(&ps[1]);
    ck_assert_msg(wait_logf(5000, "unrelay id=%lld rc=0", (long long)id), "%s", log_tail());
}

START_TEST(test_relay_passes_a_half_close_after_every_byte_then_the_other_way)
{
    size_t there = 4 * MiB, back = 1 * MiB;
    uint8_t *ab = random_bytes(there, 4), *ba = random_bytes(back, 5);
    struct pair p;

    start(5000, "");
    pair_up("r", &p);

    /* A sends 4 MiB and its FIN: B gets all of it, then EOF. */
    send_then_fin(p.a, p.ida, p.b, ab, there);
    /* The other direction still works: 1 MiB and B's FIN reach A. */
    send_then_fin(p.b, p.idb, p.a, ba, back);

    /* Both directions are done: both close by themselves, having moved
     * exactly these bytes. */
    ck_assert_msg(wait_logf(5000, "conn %lld: closed (in %zu, out %zu)", (long long)p.ida,
                            there, back) &&
                      wait_logf(5000, "conn %lld: closed (in %zu, out %zu)",
                                (long long)p.idb, back, there),
                  "conns %lld and %lld should close with (in %zu, out %zu) and (in %zu, "
                  "out %zu):\n%s",
                  (long long)p.ida, (long long)p.idb, there, back, back, there,
                  log_tail());
    ck_assert_msg(!strstr(D.log, "aborted") && !strstr(D.log, ": reset"),
                  "a half-close ended in a hard close:\n%s", log_tail());
    close(p.a);
    close(p.b);
    stop_clean();
    free(ab);
    free(ba);
}
END_TEST

/* ---- mute ------------------------------------------------------------------- */

START_TEST(test_relay_stops_while_the_source_is_muted_and_resumes_intact)
{
    size_t n = 1 * MiB;
    uint8_t *data = random_bytes(n, 6);
    struct io_peer ps[2];
    struct pair p;

    start(5000, "");
    pair_up("r", &p);
    json_decref(ctl_result("conn.mute", "{\"id\":%lld}", (long long)p.ida));
    ck_assert(muted_for(p.ida, "ctl", NULL));

    io_peer_init(&ps[0], "A", p.a, data, n, NULL, 0);
    io_peer_init(&ps[1], "B", p.b, NULL, 0, data, n);
    io_pump(ps, 2, 300, NULL);
    ck_assert_msg(ps[0].sent > 0 && ps[0].err == 0, "A could not send: %s",
                  strerror(-ps[0].err));
    ck_assert_msg(ps[1].got == 0 && !ps[1].eof && ps[1].err == 0,
                  "B got %zu bytes (eof %d, %s) while A was muted", ps[1].got, ps[1].eof,
                  strerror(-ps[1].err));

    json_decref(ctl_result("conn.unmute", "{\"id\":%lld}", (long long)p.ida));
    io_pump(ps, 2, 10000, NULL);
    io_peer_assert_ok(&ps[0]);
    io_peer_assert_ok(&ps[1]);
    close(p.a);
    close(p.b);
    stop_clean();
    free(data);
}
END_TEST

/* ---- control writes in the stream ---------------------------------------------- */

#define ORDER_BYTES (8 * MiB)
#define MARKS 10
#define MARK_EVERY (800 * KiB)

/* Cut "<<MARK-k>>" out of buf (len bytes) in place: each of k = 0..n-1 must
 * be there exactly once, whole, in order. Stores where each was, counted in
 * relayed bytes before it; returns the length left. */
static size_t cut_marks(uint8_t *buf, size_t len, int n, size_t *at)
{
    size_t out = 0, i = 0;
    int k = 0;

    while (i < len) {
        if (buf[i] == '<' && len - i >= 7 && memcmp(buf + i, "<<MARK-", 7) == 0) {
            char m[32];
            size_t ml = (size_t)snprintf(m, sizeof(m), "<<MARK-%d>>", k);
            ck_assert_msg(k < n && len - i >= ml && memcmp(buf + i, m, ml) == 0,
                          "at offset %zu: want %s, found \"%.*s\"", i, m,
                          (int)(len - i < 12 ? len - i : 12), (const char *)buf + i);
            at[k++] = out;
            i += ml;
            continue;
        }
        buf[out++] = buf[i++];
    }
    ck_assert_msg(k == n, "found %d of %d marks", k, n);
    return out;
}

START_TEST(test_relay_keeps_control_writes_whole_and_in_place)
{
    uint8_t *data = random_bytes(ORDER_BYTES, 7);
    size_t cap = ORDER_BYTES + MARKS * 16, marks_len = 0, left, at[MARKS];
    uint8_t *got = malloc(cap);
    struct io_peer ps[2];
    struct pair p;
    uint64_t end;
    int k = 0, ctl;

    ck_assert_ptr_nonnull(got);
    /* Low watermarks and small socket buffers (B's end in connd too) keep
     * little in flight, so the marks land through the stream rather than
     * after it. */
    start(5000, ",\"high_watermark\":65536,\"low_watermark\":16384");
    pair_up("r", &p);
    tcp_small_buffers(p.a, 128 * KiB);
    tcp_small_buffers(p.b, 128 * KiB);
    json_decref(
        ctl_result("conn.setopt", "{\"id\":%lld,\"sndbuf\":65536}", (long long)p.idb));
    io_peer_init(&ps[0], "A", p.a, data, ORDER_BYTES, NULL, 0);
    io_peer_init(&ps[1], "B", p.b, NULL, 0, NULL, 0);
    ps[1].keep = got;
    ps[1].keep_cap = cap;
    ps[1].rx_burst = 256 * KiB;
    ps[1].rx_pause_ms = 10;
    ctl = ctl_connect(&D);
    ck_assert_int_ge(ctl, 0);

    /* After every MARK_EVERY bytes B has read, a conn.write to B. */
    for (end = now_ms() + BIG_TIMEOUT_MS; now_ms() < end;) {
        io_pump(ps, 2, 20, NULL);
        ck_assert_msg(ps[0].err == 0 && ps[1].err == 0 && !ps[1].eof &&
                          ps[1].bad_at == SIZE_MAX,
                      "A: %s; B: %s, eof %d, bad_at %zu", strerror(-ps[0].err),
                      strerror(-ps[1].err), ps[1].eof, ps[1].bad_at);
        if (k < MARKS && ps[1].got >= (size_t)(k + 1) * MARK_EVERY) {
            char params[64];
            json_t *r;
            int n =
                snprintf(params, sizeof(params), "{\"id\":%lld,\"data\":\"<<MARK-%d>>\"}",
                         (long long)p.idb, k);
            ck_assert(n > 0 && (size_t)n < sizeof(params));
            r = ctl_result_on(ctl, "conn.write", params);
            json_decref(r);
            marks_len += strlen("<<MARK-0>>");
            k++;
        }
        if (k == MARKS && ps[1].got == ORDER_BYTES + marks_len)
            break;
    }
    close(ctl);
    ck_assert_msg(k == MARKS && ps[1].got == ORDER_BYTES + marks_len,
                  "B got %zu of %zu bytes, %d marks written; A sent %zu", ps[1].got,
                  ORDER_BYTES + marks_len, k, ps[0].sent);
    ck_assert_msg(!io_readable(p.b, 200), "B got more than A's bytes and the marks");

    left = cut_marks(got, ps[1].got, MARKS, at);
    ck_assert_msg(left == ORDER_BYTES && memcmp(got, data, ORDER_BYTES) == 0,
                  "without the marks, B's %zu bytes are not A's %zu", left,
                  (size_t)ORDER_BYTES);
    fprintf(stderr, "relay marks at:");
    for (int i = 0; i < MARKS; i++)
        fprintf(stderr, " %zu", at[i]);
    fprintf(stderr, " (of %zu); %lld spliced\n", (size_t)ORDER_BYTES,
            (long long)ctl_spliced_bytes(&D));
    ck_assert_msg(ctl_spliced_bytes(&D) > 0, "nothing was spliced: the marks met no relay");
    ck_assert_msg(at[0] < ORDER_BYTES / 2,
                  "the first mark landed at %zu: too late to test its place", at[0]);
    close(p.a);
    close(p.b);
    stop_clean();
    free(data);
    free(got);
}
END_TEST

/* ---- a sent() hook ------------------------------------------------------------ */

#define SENT_BYTES (8 * MiB)

START_TEST(test_relay_never_splices_past_a_sent_hook)
{
    uint8_t *data = random_bytes(SENT_BYTES, 8);
    char needle[64], want[64], line[512];
    struct io_peer ps[2];
    struct pair p;

    start(5000, "");
    pair_up("rs", &p);
    assert_pair_line(&p, " self=-22 rc=0 again=0 busy=none");
    assert_relayed(&p);
    io_peer_init(&ps[0], "A", p.a, data, SENT_BYTES, NULL, 0);
    io_peer_init(&ps[1], "B", p.b, NULL, 0, data, SENT_BYTES);
    io_pump(ps, 2, BIG_TIMEOUT_MS, NULL);
    io_peer_assert_ok(&ps[0]);
    io_peer_assert_ok(&ps[1]);
    ck_assert_int_eq(ctl_spliced_bytes(&D), 0);

    /* Every byte went through received() and sent(). */
    close(p.a);
    close(p.b);
    wait_pair_closed("rps", &p);
    snprintf(want, sizeof(want), " received=%zu sent=%zu", (size_t)SENT_BYTES,
             (size_t)SENT_BYTES);
    for (int i = 0; i < 2; i++) {
        snprintf(needle, sizeof(needle), "plugin rps: closed id=%lld ",
                 (long long)(i ? p.idb : p.ida));
        log_line(needle, line, sizeof(line));
        ck_assert_msg(strstr(line, want), "want \"%s\" in \"%s\"", want, line);
    }
    stop_clean();
    free(data);
}
END_TEST

/* ---- shutdown ----------------------------------------------------------------- */

#define SHUTDOWN_BYTES (32 * MiB)
#define SLOW_BURST (2 * MiB)
#define SLOW_PAUSE_MS 1000

START_TEST(test_relay_delivers_every_byte_read_when_connd_shuts_down)
{
    uint8_t *data = random_bytes(SHUTDOWN_BYTES, 9);
    unsigned long long in = 0, out = 0;
    struct io_peer ps[2];
    struct pair p;
    size_t before;
    uint64_t end;
    char needle[64];
    bool settled = false;

    start(60000, "");
    pair_up("r", &p);
    tcp_small_buffers(p.b, 128 * KiB);
    io_peer_init(&ps[0], "A", p.a, data, SHUTDOWN_BYTES, NULL, 0);
    io_peer_init(&ps[1], "B", p.b, NULL, 0, data, SHUTDOWN_BYTES);
    ps[1].rx_burst = SLOW_BURST;
    ps[1].rx_pause_ms = SLOW_PAUSE_MS;

    /* A sends as fast as it can while B reads slowly. SIGTERM comes while
     * B pauses (200 ms into it, so the buffers have settled) with A muted
     * by the backpressure, which then holds (a closing B is never
     * unthrottled): A reads nothing more, and what connd read from it is
     * final. An unmuted A would go on reading after SIGTERM, and a
     * closing connection's input is read only to be discarded, though
     * counted in its "in". */
    for (end = now_ms() + 30000; !settled && now_ms() < end;) {
        io_pump(ps, 2, 20, NULL);
        ck_assert_msg(ps[0].err == 0 && ps[1].err == 0 && ps[1].bad_at == SIZE_MAX &&
                          !ps[1].eof,
                      "A: %s; B: %s, bad_at %zu, eof %d", strerror(-ps[0].err),
                      strerror(-ps[1].err), ps[1].bad_at, ps[1].eof);
        if (ps[1].got >= 2 * SLOW_BURST &&
            now_ms() + SLOW_PAUSE_MS - 200 >= ps[1].rx_resume_ms &&
            now_ms() + 400 < ps[1].rx_resume_ms)
            settled = muted_for(p.ida, "pair-bp", NULL);
    }
    ck_assert_msg(settled, "A was never muted for pair-bp during B's pause:\n%s",
                  log_tail());
    before = ps[1].got;
    ck_assert_int_eq(kill(D.pid, SIGTERM), 0);

    /* B reads on, slowly, until EOF; A's client sends nothing more. */
    ps[1].want_len = ps[0].sent;
    ps[1].want_eof = true;
    io_pump(&ps[1], 1, 30000, NULL);
    ck_assert_msg(ps[1].err == 0 && ps[1].bad_at == SIZE_MAX, "B: %s, wrong byte at %zu",
                  strerror(-ps[1].err), ps[1].bad_at);
    ck_assert_msg(ps[1].eof, "B: no EOF after %zu bytes:\n%s", ps[1].got, log_tail());

    snprintf(needle, sizeof(needle), "conn %lld: closed (in ", (long long)p.ida);
    ck_assert_msg(daemon_wait_log_count(&D, needle, 1, 5000), "A did not close:\n%s",
                  log_tail());
    ck_assert_int_eq(
        sscanf(strstr(D.log, needle) + strlen(needle), "%llu, out %llu", &in, &out), 2);
    fprintf(
        stderr,
        "relay shutdown: A sent %zu, connd read %llu, B had %zu at SIGTERM, got %zu\n",
        ps[0].sent, in, before, ps[1].got);
    ck_assert_msg(ps[1].got == in,
                  "B got %zu bytes before EOF, connd read %llu from A:\n%s", ps[1].got,
                  in, log_tail());
    ck_assert_msg(before < in, "nothing was in flight at SIGTERM (B had %zu of %llu)",
                  before, in);
    close(p.a);
    close(p.b);
    /* B's end closes on our EOF; then connd exits by itself (signal 0:
     * only wait, a second SIGTERM would abort what is left). */
    stop_clean_sig(0, 20000);
    ck_assert_msg(!strstr(D.log, "dropped") && !strstr(D.log, "deadline"),
                  "bytes dropped at shutdown:\n%s", log_tail());
    free(data);
}
END_TEST

/* ---- suite -------------------------------------------------------------------- */

static TCase *tcase(Suite *s, const char *name, int timeout_s)
{
    TCase *tc = tcase_create(name);

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, UNDER_ASAN ? 2 * timeout_s : timeout_s);
    suite_add_tcase(s, tc);
    return tc;
}

int main(void)
{
    Suite *s = suite_create("relay");
    TCase *tc;

    tc = tcase(s, "bytes", 60);
    tcase_add_test(tc, test_relay_moves_16mib_each_way_at_once_intact_and_splices);
    tcase_add_test(tc, test_relay_keeps_control_writes_whole_and_in_place);
    tcase_add_test(tc, test_relay_never_splices_past_a_sent_hook);
    tcase_add_test(tc, test_relay_copies_small_messages_and_splices_a_burst);
    tcase_add_test(tc, test_relay_skips_an_urgent_byte_like_a_read);
    tcase_add_test(tc, test_relay_reads_past_an_urgent_byte_to_a_fin_behind_it);
    tc = tcase(s, "api", 30);
    tcase_add_test(tc, test_relay_refuses_self_busy_and_closed_and_set_notify_ends_it);
    tcase_add_test(tc, test_relay_ends_when_either_starts_a_graceful_close);
    tc = tcase(s, "flow", 90);
    tcase_add_test(tc, test_relay_bounds_memory_and_loses_nothing_with_a_slow_reader);
    tcase_add_test(tc,
                   test_relay_passes_a_half_close_after_every_byte_then_the_other_way);
    tcase_add_test(tc, test_relay_stops_while_the_source_is_muted_and_resumes_intact);
    tc = tcase(s, "faults", 60);
    tcase_add_test(tc, test_relay_sender_reset_mid_stream_leaves_a_prefix_and_closes_the_other);
    tcase_add_test(tc, test_relay_receiver_reset_mid_stream_closes_the_sender);
    tcase_add_test(tc, test_relay_without_a_pipe_copies_and_warns_once);
    tc = tcase(s, "shutdown", 60);
    tcase_add_test(tc, test_relay_delivers_every_byte_read_when_connd_shuts_down);
    return run_suite(s);
}
