/*
 * test_bundled.c: each bundled plugin end to end through a real connd on
 * 127.0.0.1.
 *
 * - "proxy": 64 MiB each way arrive intact through proxy -> echo; a slow
 *   reader on either end cannot grow the daemon and loses nothing;
 *   half-closes pass both ways; an upstream that is down or silent closes
 *   the client with a logged reason; a config without upstream is refused.
 * - "framing": split, coalesced, empty and max-sized frames are answered
 *   with the reversed payload; a length over max_frame or over the
 *   listener's max_size closes the connection with a logged reason.
 * - "hello": the greeting comes first, then the next plugin owns the
 *   connection (echo, framing); a next plugin that does not exist closes it.
 * - "shed": a slow reader loses bytes instead of making connd queue them,
 *   and conn.show and the close log count exactly what was dropped.
 *
 * The proxy's upstream is either a second connd serving echo (U) or a
 * socket the test owns, so it can read slowly, half-close or never answer.
 * Client and upstream I/O is non-blocking and poll-driven (io_pump()), so no
 * test can deadlock on full socket buffers, and every wait has a deadline.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FLOOD_BYTES (64 * MiB)
/* Under ASan freed write buffers stay resident in its quarantine, so RSS
 * grows with the bytes relayed, not only with what is queued (seen: +60
 * MiB with ASan, +2 MiB without); the stall checks catch a proxy that does
 * not push back either way. */
#if UNDER_ASAN
#define RSS_SLACK_KB (160L * 1024)
#else
#define RSS_SLACK_KB (32L * 1024)
#endif

/* ---- configs ------------------------------------------------------------ */

/* One JSON config per macro, laid out by hand. */
/* clang-format off */
#define CFG_HEAD \
    "{\"control\":{\"path\":\"@DIR@/control.sock\"},\"plugin_dir\":\"@PLUGINS@\"," \
    "\"shutdown_timeout_ms\":2000,"
#define LISTENER(name, plugin, extra) \
    "{\"name\":\"" name "\",\"host\":\"127.0.0.1\",\"port\":0," \
    "\"plugin\":\"" plugin "\"" extra "}"

/* U: echo on listener "up". */
#define ECHO_UPSTREAM_CFG \
    CFG_HEAD \
    "\"plugins\":[{\"name\":\"echo\",\"file\":\"echo.so\"}]," \
    "\"listeners\":[" LISTENER("up", "echo", "") "]}"

/* D: proxy on listener "p" to 127.0.0.1:%d, with more proxy config %s. */
#define PROXY_CFG \
    CFG_HEAD \
    "\"plugins\":[{\"name\":\"proxy\",\"file\":\"proxy.so\"," \
    "\"config\":{\"upstream\":\"127.0.0.1:%d\"%s}}]," \
    "\"listeners\":[" LISTENER("p", "proxy", "") "]}"

/* "f": framing with max_frame 1024; "fb": framing with the default 65536
 * behind a listener max_size of 16384. */
#define FRAMING_MAX 1024
#define MAX_SIZE 16384
#define FRAMING_CFG \
    CFG_HEAD \
    "\"plugins\":[" \
        "{\"name\":\"framing\",\"file\":\"framing.so\"," \
            "\"config\":{\"max_frame\":1024}}," \
        "{\"name\":\"framing64k\",\"file\":\"framing.so\"}]," \
    "\"listeners\":[" \
        LISTENER("f", "framing", "") "," \
        LISTENER("fb", "framing64k", ",\"max_size\":16384") "]}"

/* hello handing over to echo ("he"), framing ("hf") and nothing ("hb"). */
#define GREETING "hi there\n"
#define HELLO_PLUGIN(name, next) \
    "{\"name\":\"" name "\",\"file\":\"hello.so\"," \
    "\"config\":{\"greeting\":\"hi there\\n\",\"next\":\"" next "\"}}"
#define HELLO_CFG \
    CFG_HEAD \
    "\"plugins\":[" \
        "{\"name\":\"echo\",\"file\":\"echo.so\"}," \
        "{\"name\":\"framing\",\"file\":\"framing.so\"," \
            "\"config\":{\"max_frame\":1024}}," \
        HELLO_PLUGIN("hello_echo", "echo") "," \
        HELLO_PLUGIN("hello_framing", "framing") "," \
        HELLO_PLUGIN("hello_bad", "nosuch") "]," \
    "\"listeners\":[" \
        LISTENER("he", "hello_echo", "") "," \
        LISTENER("hf", "hello_framing", "") "," \
        LISTENER("hb", "hello_bad", "") "]}"

/* shed on listener "s" with small watermarks. */
#define SHED_CFG \
    CFG_HEAD \
    "\"plugins\":[{\"name\":\"shed\",\"file\":\"shed.so\"}]," \
    "\"listeners\":[" \
        LISTENER("s", "shed", ",\"high_watermark\":65536,\"low_watermark\":16384") "]}"
/* clang-format on */

/* ---- fixture: the daemons of a test, freed even when it fails ----------- */

static struct daemon D; /* the daemon under test */
static struct daemon U; /* a second connd serving echo: the proxy's upstream */

static void setup(void)
{
    memset(&D, 0, sizeof(D));
    memset(&U, 0, sizeof(U));
    D.err_fd = U.err_fd = -1;
}

static void teardown(void)
{
    if (D.log)
        daemon_free(&D);
    if (U.log)
        daemon_free(&U);
}

/* The last few KiB of a daemon's log, for failure messages. */
static const char *log_tail(const struct daemon *d)
{
    size_t keep = 3000; /* Check refuses messages of about 4 KiB and more */
    return d->log_len > keep ? d->log + d->log_len - keep : d->log;
}

/* Start connd on the config printf(fmt, ...) and return the port of
 * listener `name`. */
__attribute__((format(printf, 3, 4))) static int start(struct daemon *d, const char *name,
                                                       const char *fmt, ...)
{
    char *cfg = NULL;
    va_list ap;
    int n, port;

    va_start(ap, fmt);
    n = vasprintf(&cfg, fmt, ap);
    va_end(ap);
    ck_assert_int_ge(n, 0);
    ck_assert_msg(daemon_start(d, cfg, NULL) == 0, "connd did not start on\n%s\nlog:\n%s",
                  cfg, log_tail(d));
    free(cfg);
    port = daemon_port(d, name);
    ck_assert_msg(port > 0, "no port for listener %s in:\n%s", name, log_tail(d));
    return port;
}

/* SIGTERM: connd exits 0 within the bound and its log has no sanitizer
 * report. Every test ends with this for each daemon it started. */
static void stop_clean(struct daemon *d)
{
    int rc = daemon_stop(d, SIGTERM, 10000);

    ck_assert_msg(rc == 0, "connd exited %d on SIGTERM; log:\n%s", rc, log_tail(d));
    ck_assert_msg(!strstr(d->log, "Sanitizer") && !strstr(d->log, "runtime error"),
                  "sanitizer report in connd's log:\n%s", log_tail(d));
}

/* Wait for a log line containing the printf'd needle, anywhere in the log. */
__attribute__((format(printf, 3, 4))) static bool
wait_logf(struct daemon *d, int timeout_ms, const char *fmt, ...)
{
    char needle[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(needle, sizeof(needle), fmt, ap);
    va_end(ap);
    return daemon_wait_log_count(d, needle, 1, timeout_ms);
}

/* Whether the first log line containing needle also contains what. */
static bool line_has(const struct daemon *d, const char *needle, const char *what)
{
    const char *hit = strstr(d->log, needle), *start, *end;

    if (!hit)
        return false;
    for (start = hit; start > d->log && start[-1] != '\n'; start--)
        ;
    end = strchr(hit, '\n');
    if (!end)
        end = d->log + d->log_len;
    for (const char *p = start; p + strlen(what) <= end; p++)
        if (strncmp(p, what, strlen(what)) == 0)
            return true;
    return false;
}

/* ---- sockets ------------------------------------------------------------ */

static void set_nonblock(int fd)
{
    ck_assert_int_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

/* A connected non-blocking client socket with TCP_NODELAY. */
static int client(int port)
{
    int fd = tcp_connect("127.0.0.1", port), one = 1;

    ck_assert_msg(fd >= 0, "connect to 127.0.0.1:%d: %s", port, strerror(errno));
    ck_assert_int_eq(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)), 0);
    set_nonblock(fd);
    return fd;
}

static int bound_port(int fd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);

    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    return ntohs(sa.sin_port);
}

/* A socket bound to 127.0.0.1 on an ephemeral port. */
static int bind_loopback(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* The test plays the upstream: a listener on 127.0.0.1 with an ephemeral
 * port; buffers (when not 0) are inherited by accepted sockets. */
static int upstream_listen(int backlog, int buffers, int *port)
{
    int fd = bind_loopback();

    if (buffers)
        tcp_small_buffers(fd, buffers);
    ck_assert_int_eq(listen(fd, backlog), 0);
    *port = bound_port(fd);
    return fd;
}

/* The proxy's connection to the test's upstream, non-blocking. */
static int upstream_accept(int lfd, int timeout_ms)
{
    int fd;

    ck_assert_msg(io_readable(lfd, timeout_ms), "the proxy did not connect upstream:\n%s",
                  log_tail(&D));
    fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    ck_assert_int_ge(fd, 0);
    return fd;
}

/* A port on 127.0.0.1 where nothing listens (bound, then released). */
static int dead_port(void)
{
    int fd = bind_loopback(), port = bound_port(fd);

    close(fd);
    return port;
}

/* ---- peers: io_peers (harness.h) that check what arrives ---------------- */

static void assert_rss_bounded(const struct rss_watch *w, const char *what)
{
    fprintf(stderr, "%s: daemon RSS %ld -> peak %ld KiB\n", what, w->base_kb, w->peak_kb);
    ck_assert_msg(w->peak_kb <= w->base_kb + RSS_SLACK_KB,
                  "%s: daemon RSS peaked at %ld KiB, baseline %ld KiB (bound +%ld KiB)",
                  what, w->peak_kb, w->base_kb, RSS_SLACK_KB);
}

/* Read (and send) until nothing has arrived for idle_ms, or timeout_ms. */
static void pump_until_idle(struct io_peer *p, int idle_ms, int timeout_ms)
{
    uint64_t start = now_ms(), last = start;
    size_t got = p->got;

    while (!io_peer_finished(p) && now_ms() - start < (uint64_t)timeout_ms) {
        io_pump(p, 1, 20, NULL);
        if (p->got != got || p->sent < p->tx_len) {
            got = p->got;
            last = now_ms();
        } else if (now_ms() - last >= (uint64_t)idle_ms) {
            break;
        }
    }
}

/* Send msg (small) and expect want back, each within timeout_ms. */
static void exchange(int fd, const void *msg, size_t len, const void *want,
                     size_t want_len, int timeout_ms)
{
    struct io_peer p;

    io_peer_init(&p, "client", fd, msg, len, want, want_len);
    io_pump(&p, 1, timeout_ms, NULL);
    io_peer_assert_ok(&p);
}

/* Send len bytes in pieces of 1..max_piece bytes (sizes from seed), with
 * gap_us between them, so the daemon reads them in many small reads. */
static void send_in_pieces(int fd, const uint8_t *buf, size_t len, size_t max_piece,
                           unsigned gap_us, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;

    for (size_t off = 0; off < len;) {
        size_t piece;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        piece = 1 + (size_t)(x % max_piece);
        if (piece > len - off)
            piece = len - off;
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        ck_assert_msg(poll(&pfd, 1, 5000) == 1, "socket not writable at offset %zu", off);
        ssize_t r = send(fd, buf + off, piece, MSG_NOSIGNAL | MSG_DONTWAIT);
        ck_assert_msg(r > 0 || errno == EAGAIN, "send at offset %zu: %s", off,
                      strerror(errno));
        if (r > 0)
            off += (size_t)r;
        if (gap_us)
            usleep(gap_us);
    }
}

/* The connection is closed within timeout_ms: EOF, or a reset when
 * allow_reset. Nothing else may arrive first. */
static void assert_closed(int fd, int timeout_ms, bool allow_reset,
                          const struct daemon *d)
{
    int rc = io_expect_eof(fd, timeout_ms);

    if (allow_reset && rc == -ECONNRESET)
        return;
    ck_assert_msg(rc == 1, "expected EOF within %d ms, got %s; log:\n%s", timeout_ms,
                  rc == 0 ? "data" : strerror(-rc), log_tail(d));
}

/* ---- control socket ----------------------------------------------------- */

/* As ctl_result_on, on a control connection of its own to d. */
static json_t *ctl_result(struct daemon *d, const char *method, const char *params)
{
    int fd = ctl_connect(d);
    json_t *result;

    ck_assert_msg(fd >= 0, "control socket %s: %s", d->ctl_path, strerror(errno));
    result = ctl_result_on(fd, method, params);
    close(fd);
    return result;
}

/* The id of the only connection on listener `name`. */
static json_int_t only_conn_on(struct daemon *d, const char *name)
{
    char params[96];
    json_t *list;
    json_int_t id;

    snprintf(params, sizeof(params), "{\"listener\":\"%s\"}", name);
    list = ctl_result(d, "conn.list", params);
    ck_assert_msg(json_array_size(list) == 1, "conn.list on %s: %s", name,
                  json_dumps(list, JSON_COMPACT));
    id = json_integer_value(json_object_get(json_array_get(list, 0), "id"));
    json_decref(list);
    ck_assert_int_gt(id, 0);
    return id;
}

static json_t *conn_show(struct daemon *d, json_int_t id)
{
    char params[64];

    snprintf(params, sizeof(params), "{\"id\":%" JSON_INTEGER_FORMAT "}", id);
    return ctl_result(d, "conn.show", params);
}

/* The integer o.key (or o.key.sub); asserts it is there. */
static json_int_t json_int_at(json_t *o, const char *key, const char *sub)
{
    json_t *v = json_object_get(o, key);

    if (sub)
        v = json_object_get(v, sub);
    ck_assert_msg(json_is_integer(v), "no integer %s%s%s in %s", key, sub ? "." : "",
                  sub ? sub : "", json_dumps(o, JSON_COMPACT));
    return json_integer_value(v);
}

/* ---- proxy -------------------------------------------------------------- */

/* U serves echo; returns its port. */
static int start_echo_upstream(void)
{
    return start(&U, "up", ECHO_UPSTREAM_CFG);
}

/* The proxy tests run twice: with the zero-copy relay (the default) and
 * with "splice": false, every byte through received() and write(). */
static bool proxy_copies;

static void setup_copy(void)
{
    proxy_copies = true;
}

static void teardown_copy(void)
{
    proxy_copies = false;
}

/* D proxies to 127.0.0.1:up_port with more proxy config (",\"k\":v" or "");
 * returns the proxy listener's port. */
static int start_proxy(int up_port, const char *extra)
{
    char cfg[256];

    snprintf(cfg, sizeof(cfg), "%s%s", proxy_copies ? ",\"splice\":false" : "", extra);
    return start(&D, "p", PROXY_CFG, up_port, cfg);
}

/* The proxy's upstream connection for the latest client is up. */
static void wait_upstream_connected(void)
{
    ck_assert_msg(daemon_wait_log(&D, ": connected", 5000), "upstream not connected:\n%s",
                  log_tail(&D));
}

/* The ids of the proxy's two connections: the client's (on "p") and the
 * outgoing one. */
static void proxy_pair_ids(json_int_t *client_id, json_int_t *upstream_id)
{
    json_t *list = ctl_result(&D, "conn.list", "{}"), *e;
    size_t i;

    *client_id = *upstream_id = 0;
    json_array_foreach(list, i, e) {
        json_int_t id = json_integer_value(json_object_get(e, "id"));
        if (json_is_string(json_object_get(e, "listener")))
            *client_id = id;
        else
            *upstream_id = id;
    }
    ck_assert_msg(json_array_size(list) == 2 && *client_id && *upstream_id,
                  "expected the proxy's two connections: %s", json_dumps(list, JSON_COMPACT));
    json_decref(list);
}

START_TEST(test_proxy_relays_64mib_each_way_intact_through_echo)
{
    int port = start_proxy(start_echo_upstream(), "");
    uint8_t *data = random_bytes(FLOOD_BYTES, 1);
    uint64_t t0;
    struct io_peer p;
    json_int_t cid, uid, spliced;

    /* Relayed (conn.show names the partner both ways) unless copying. */
    io_peer_init(&p, "client", client(port), NULL, 0, NULL, 0);
    wait_upstream_connected();
    proxy_pair_ids(&cid, &uid);
    ck_assert_int_eq(ctl_relay_of(&D, cid), proxy_copies ? 0 : uid);
    ck_assert_int_eq(ctl_relay_of(&D, uid), proxy_copies ? 0 : cid);

    /* Send and receive at once: 64 MiB out through proxy -> echo, the same
     * 64 MiB back through echo -> proxy. */
    t0 = now_ms();
    io_peer_init(&p, "client", p.fd, data, FLOOD_BYTES, data, FLOOD_BYTES);
    io_pump(&p, 1, UNDER_ASAN ? 60000 : 30000, NULL);
    io_peer_assert_ok(&p);
    spliced = ctl_spliced_bytes(&D);
    fprintf(stderr, "proxy (%s): 64 MiB each way in %llu ms, %lld bytes spliced\n",
            proxy_copies ? "copy" : "relay", (unsigned long long)(now_ms() - t0),
            (long long)spliced);
    /* Copying, nothing is spliced; relayed, most of it is (the rest went
     * through received() while a side had bytes queued). */
    if (proxy_copies)
        ck_assert_int_eq(spliced, 0);
    else
        ck_assert_msg(spliced >= (json_int_t)FLOOD_BYTES / 2 &&
                          spliced <= 2 * (json_int_t)FLOOD_BYTES,
                      "spliced %lld of %lld bytes relayed", (long long)spliced,
                      2 * (long long)FLOOD_BYTES);
    close(p.fd);
    ck_assert_msg(
        daemon_wait_log_count(&D, ": closed (in 67108864, out 67108864)", 2, 5000),
        "both proxy connections should close having moved 64 MiB each way:\n%s",
        log_tail(&D));
    stop_clean(&D);
    stop_clean(&U);
    free(data);
}
END_TEST

START_TEST(test_proxy_bounds_memory_and_loses_nothing_with_a_slow_reading_client)
{
    int port = start_proxy(start_echo_upstream(), "");
    uint8_t *data = random_bytes(FLOOD_BYTES, 2);
    struct rss_watch w;
    struct io_peer p;
    size_t stalled_at;

    io_peer_init(&p, "client", client(port), data, FLOOD_BYTES, data, FLOOD_BYTES);
    tcp_small_buffers(p.fd, 128 * KiB);
    wait_upstream_connected();
    rss_watch_begin(&w, &D);

    /* Not reading at all: the echoed bytes back up into the proxy, which
     * must stop reading from echo, and echo from the proxy, and the proxy
     * from us: the kernel stops taking our bytes long before 64 MiB. */
    stalled_at = io_pump_send_only(&p, 1000, 15000, &w);
    ck_assert_msg(p.err == 0, "send: %s", strerror(-p.err));
    ck_assert_msg(stalled_at < FLOOD_BYTES,
                  "all %zu bytes were taken from a client that does not read: no "
                  "backpressure through proxy and echo",
                  stalled_at);

    /* Then read slowly: 8 MiB, a 300 ms pause, and so on. */
    p.rx_burst = 8 * MiB;
    p.rx_pause_ms = 300;
    io_pump(&p, 1, 60000, &w);
    io_peer_assert_ok(&p);
    fprintf(stderr, "proxy slow client: stalled at %zu bytes\n", stalled_at);
    assert_rss_bounded(&w, "proxy slow client");
    close(p.fd);
    stop_clean(&D);
    stop_clean(&U);
    free(data);
}
END_TEST

START_TEST(test_proxy_bounds_memory_and_loses_nothing_with_a_slow_reading_upstream)
{
    int up_port, lfd = upstream_listen(8, 128 * KiB, &up_port);
    int port = start_proxy(up_port, "");
    uint8_t *data = random_bytes(FLOOD_BYTES, 3);
    struct rss_watch w;
    struct io_peer ps[2];
    size_t stalled_at;

    io_peer_init(&ps[0], "client", client(port), data, FLOOD_BYTES, NULL, 0);
    tcp_small_buffers(ps[0].fd, 128 * KiB);
    io_peer_init(&ps[1], "upstream", upstream_accept(lfd, 5000), NULL, 0, data,
                 FLOOD_BYTES);
    ps[0].shut_wr = true; /* our FIN reaches the upstream after the last byte */
    ps[1].want_eof = true;
    wait_upstream_connected();
    rss_watch_begin(&w, &D);

    /* The upstream reads nothing: the proxy must stop reading from us. */
    stalled_at = io_pump_send_only(&ps[0], 1000, 15000, &w);
    ck_assert_msg(ps[0].err == 0, "send: %s", strerror(-ps[0].err));
    ck_assert_msg(stalled_at < FLOOD_BYTES,
                  "all %zu bytes were taken while the upstream read nothing: no "
                  "backpressure from the upstream to the client",
                  stalled_at);

    /* Then the upstream reads slowly while we send the rest. */
    ps[1].rx_burst = 8 * MiB;
    ps[1].rx_pause_ms = 300;
    io_pump(ps, 2, 60000, &w);
    io_peer_assert_ok(&ps[0]);
    io_peer_assert_ok(&ps[1]);
    fprintf(stderr, "proxy slow upstream: stalled at %zu bytes\n", stalled_at);
    assert_rss_bounded(&w, "proxy slow upstream");
    close(ps[0].fd);
    close(ps[1].fd);
    close(lfd);
    stop_clean(&D);
    free(data);
}
END_TEST

START_TEST(test_proxy_passes_the_clients_half_close_after_every_echoed_byte)
{
    int port = start_proxy(start_echo_upstream(), "");
    size_t n = 4 * MiB;
    uint8_t *data = random_bytes(n, 4);
    struct io_peer p;

    /* Everything is sent, then our FIN: the bytes still come back, all of
     * them, and then EOF (client FIN -> upstream FIN -> echo closes -> FIN
     * back through the proxy). */
    io_peer_init(&p, "client", client(port), data, n, data, n);
    p.shut_wr = true;
    p.want_eof = true;
    io_pump(&p, 1, 20000, NULL);
    io_peer_assert_ok(&p);
    ck_assert(p.shut_done);
    close(p.fd);
    stop_clean(&D);
    stop_clean(&U);
    free(data);
}
END_TEST

/* Whether U's echo connection is muted by its own backpressure; asked on
 * the control connection fd (one for all the polling: each new one is
 * logged). */
static bool upstream_echo_muted(int fd)
{
    json_t *list = ctl_result_on(fd, "conn.list", "{\"listener\":\"up\"}");
    json_t *reasons = json_object_get(json_array_get(list, 0), "mute_reasons");
    bool muted = false;

    ck_assert_msg(json_array_size(list) == 1, "conn.list on echo upstream: %s",
                  json_dumps(list, JSON_COMPACT));
    for (size_t i = 0; i < json_array_size(reasons); i++)
        if (json_is_string(json_array_get(reasons, i)) &&
            strcmp(json_string_value(json_array_get(reasons, i)), "backpressure") == 0)
            muted = true;
    json_decref(list);
    return muted;
}

START_TEST(test_proxy_passes_the_clients_half_close_to_a_muted_echo_losing_nothing)
{
    int port = start_proxy(start_echo_upstream(), "");
    uint8_t *data = random_bytes(FLOOD_BYTES, 5);
    struct io_peer p;
    int ctl;

    /* The client sends without reading until echo upstream has muted
     * itself (the echoed bytes back up to it), then half-closes at once:
     * the FIN the proxy passes on reaches echo while it is muted, with
     * bytes still unread. Every byte must still come back, then EOF. */
    io_peer_init(&p, "client", client(port), data, 0, data, 0);
    tcp_small_buffers(p.fd, 128 * KiB);
    wait_upstream_connected();
    ctl = ctl_connect(&U);
    ck_assert_int_ge(ctl, 0);
    while (!upstream_echo_muted(ctl)) {
        ck_assert_msg(p.tx_len < FLOOD_BYTES, "echo upstream never muted itself");
        p.tx_len += 256 * KiB;
        io_pump_send_only(&p, 2000, 5000, NULL);
        ck_assert_msg(p.err == 0 && p.sent == p.tx_len,
                      "the proxy stopped taking bytes at %zu before echo muted itself",
                      p.sent);
    }
    close(ctl);
    ck_assert_int_eq(shutdown(p.fd, SHUT_WR), 0);
    p.shut_done = true;
    p.want_len = p.sent;
    p.want_eof = true;
    io_pump(&p, 1, 30000, NULL);
    daemon_drain_log(&U, 100);
    ck_assert_msg(p.got == p.want_len,
                  "client: got %zu of %zu bytes%s; echo upstream's log:\n%s", p.got,
                  p.want_len, p.eof ? " before EOF" : "", log_tail(&U));
    io_peer_assert_ok(&p);
    close(p.fd);
    stop_clean(&D);
    stop_clean(&U);
    free(data);
}
END_TEST

START_TEST(test_proxy_passes_the_upstreams_half_close_and_still_relays_the_client)
{
    static const char response[] = "response from upstream\n";
    static const char later[] = "client bytes after the upstream's FIN\n";
    int up_port, lfd = upstream_listen(8, 0, &up_port);
    int port = start_proxy(up_port, "");
    int cfd = client(port), ufd = upstream_accept(lfd, 5000);
    struct io_peer c, u;

    wait_upstream_connected();
    /* The upstream answers and shuts its write side. */
    io_peer_init(&u, "upstream", ufd, (const uint8_t *)response, strlen(response), NULL,
                 0);
    u.shut_wr = true;
    io_pump(&u, 1, 5000, NULL);
    io_peer_assert_ok(&u);

    /* The client gets the response, then EOF... */
    io_peer_init(&c, "client", cfd, NULL, 0, (const uint8_t *)response, strlen(response));
    c.want_eof = true;
    io_pump(&c, 1, 5000, NULL);
    io_peer_assert_ok(&c);

    /* ...and what it writes afterwards still reaches the upstream, with
     * its FIN after it. */
    io_peer_init(&c, "client", cfd, (const uint8_t *)later, strlen(later), NULL, 0);
    c.shut_wr = true;
    io_peer_init(&u, "upstream", ufd, NULL, 0, (const uint8_t *)later, strlen(later));
    u.want_eof = true;
    struct io_peer both[2] = {c, u};
    io_pump(both, 2, 5000, NULL);
    io_peer_assert_ok(&both[0]);
    io_peer_assert_ok(&both[1]);
    ck_assert_msg(
        daemon_wait_log_count(&D, ": closed (in ", 2, 5000),
        "both proxy connections should close once both directions are done:\n%s",
        log_tail(&D));
    ck_assert_msg(!strstr(D.log, "aborted") && !strstr(D.log, "reset"),
                  "a half-close ended in a hard close:\n%s", log_tail(&D));
    close(cfd);
    close(ufd);
    close(lfd);
    stop_clean(&D);
}
END_TEST

/* The upstream connection reads and queues with the client's listener
 * limits (connect opts limits_of), not the defaults. */
START_TEST(test_proxy_upstream_takes_the_listeners_limits)
{
    int up = start_echo_upstream(), port, fd;
    json_t *list, *show;
    json_int_t id = 0;
    size_t i;
    json_t *e;

    port = start(&D, "p",
                 CFG_HEAD "\"plugins\":[{\"name\":\"proxy\",\"file\":\"proxy.so\","
                          "\"config\":{\"upstream\":\"127.0.0.1:%d\"}}],"
                          "\"listeners\":[" LISTENER("p", "proxy",
                                                       ",\"init_size\":512,\"max_size\":65536,"
                                                       "\"high_watermark\":2097152,"
                                                       "\"low_watermark\":524288,"
                                                       "\"max_pending\":8388608") "]}",
                 up);
    fd = tcp_connect("127.0.0.1", port);
    ck_assert_int_ge(fd, 0);
    wait_upstream_connected();
    ck_assert(io_echoes(fd, "limits"));
    list = ctl_result(&D, "conn.list", "{}");
    json_array_foreach(list, i, e)
        if (json_is_null(json_object_get(e, "listener")) || !json_object_get(e, "listener"))
            id = json_integer_value(json_object_get(e, "id"));
    ck_assert_msg(id > 0, "no outgoing connection in %s", json_dumps(list, JSON_COMPACT));
    json_decref(list);
    show = conn_show(&D, id);
    ck_assert_int_eq(json_int_at(show, "limits", "init_size"), 512);
    ck_assert_int_eq(json_int_at(show, "limits", "max_size"), 65536);
    ck_assert_int_eq(json_int_at(show, "limits", "high_watermark"), 2097152);
    ck_assert_int_eq(json_int_at(show, "limits", "low_watermark"), 524288);
    ck_assert_int_eq(json_int_at(show, "limits", "max_pending"), 8388608);
    json_decref(show);
    close(fd);
    stop_clean(&D);
    stop_clean(&U);
}
END_TEST

START_TEST(test_proxy_closes_the_client_and_logs_when_the_upstream_is_down)
{
    int up_port = dead_port();
    int port = start_proxy(up_port, "");
    int fd = client(port);
    uint64_t t0 = now_ms();

    assert_closed(fd, 3000, true, &D);
    ck_assert_msg(now_ms() - t0 < 3000, "client closed after %llu ms",
                  (unsigned long long)(now_ms() - t0));
    ck_assert_msg(wait_logf(&D, 2000, "upstream 127.0.0.1:%d unreachable", up_port),
                  "no line naming the unreachable upstream 127.0.0.1:%d:\n%s", up_port,
                  log_tail(&D));
    /* An operator at the default level (info) sees it. */
    ck_assert_msg(!line_has(&D, "unreachable", " debug: "),
                  "the unreachable upstream is logged at debug level only:\n%s",
                  log_tail(&D));
    ck_assert_msg(daemon_wait_log_count(&D, ": connect failed:", 1, 2000), "%s",
                  log_tail(&D));
    close(fd);
    ck_assert_msg(daemon_wait_log_count(&D, ": closed (in ", 2, 3000),
                  "client and upstream attempt should both be closed:\n%s", log_tail(&D));
    stop_clean(&D);
}
END_TEST

START_TEST(test_proxy_closes_the_client_after_connect_timeout_on_a_silent_upstream)
{
    /* A listener with a full backlog drops further SYNs: the proxy's
     * connect neither succeeds nor fails until its timeout. */
    int up_port, lfd = upstream_listen(0, 0, &up_port);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)up_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fill[2], port, fd;
    uint64_t t0, took;

    for (int i = 0; i < 2; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fill[i], 0);
        ck_assert(connect(fill[i], (struct sockaddr *)&sa, sizeof(sa)) == 0 ||
                  errno == EINPROGRESS);
    }
    usleep(100 * 1000);
    port = start_proxy(up_port, ",\"connect_timeout_ms\":500");
    fd = client(port);
    t0 = now_ms();
    assert_closed(fd, 5000, true, &D);
    took = now_ms() - t0;
    fprintf(stderr, "proxy silent upstream: client closed after %llu ms\n",
            (unsigned long long)took);
    ck_assert_msg(took >= 400 && took < 2500,
                  "client closed after %llu ms with connect_timeout_ms 500:\n%s",
                  (unsigned long long)took, log_tail(&D));
    ck_assert_msg(wait_logf(&D, 2000, "upstream 127.0.0.1:%d unreachable", up_port),
                  "no line naming the unreachable upstream:\n%s", log_tail(&D));
    ck_assert_msg(daemon_wait_log_count(&D, "timed out after 500 ms", 1, 2000), "%s",
                  log_tail(&D));
    close(fd);
    close(fill[0]);
    close(fill[1]);
    close(lfd);
    stop_clean(&D);
}
END_TEST

/* conn.write to the upstream side while the client streams through it:
 * each written piece arrives whole, in order, and between relayed bytes:
 * relayed bytes never overtake a write queued before them. */
#define MARKS 10
#define MARK_LEN 10 /* "<<MARK-k>>", k one digit */
START_TEST(test_proxy_keeps_control_writes_in_place_in_the_stream)
{
    int up_port, lfd = upstream_listen(8, 128 * KiB, &up_port);
    int port = start_proxy(up_port, "");
    size_t n = 8 * MiB, total = n + MARKS * MARK_LEN, off = 0, kept = 0;
    uint8_t *data = random_bytes(n, 6), *got = malloc(total), *rest = malloc(n);
    struct io_peer ps[2];
    json_int_t cid, uid;
    uint64_t deadline;
    int ctl = ctl_connect(&D), k = 0;

    ck_assert(got && rest && ctl >= 0);
    io_peer_init(&ps[0], "client", client(port), data, n, NULL, 0);
    io_peer_init(&ps[1], "upstream", upstream_accept(lfd, 5000), NULL, 0, NULL, 0);
    ps[1].keep = got;
    ps[1].keep_cap = total;
    /* Reading in bursts, the upstream's socket fills now and then, and a
     * mark waits in the queue while relayed bytes keep coming. */
    ps[1].rx_burst = 256 * KiB;
    ps[1].rx_pause_ms = 5;
    wait_upstream_connected();
    proxy_pair_ids(&cid, &uid);
    /* A mark each time the upstream has read another n / (MARKS + 1). */
    deadline = now_ms() + 30000;
    while (ps[1].got < total && now_ms() < deadline) {
        io_pump(ps, 2, 20, NULL);
        ck_assert_msg(!ps[0].err && !ps[1].err && !ps[1].eof, "client err %d, upstream "
                      "err %d eof %d", ps[0].err, ps[1].err, ps[1].eof);
        if (k < MARKS && ps[1].got >= (size_t)(k + 1) * (n / (MARKS + 1))) {
            char params[96];
            snprintf(params, sizeof(params),
                     "{\"id\":%" JSON_INTEGER_FORMAT ",\"data\":\"<<MARK-%d>>\"}", uid, k);
            json_decref(ctl_result_on(ctl, "conn.write", params));
            k++;
        }
    }
    ck_assert_msg(ps[1].got == total, "the upstream got %zu of %zu bytes (%d marks sent)",
                  ps[1].got, total, k);
    /* Every mark once, whole, in order; without them the client's bytes. */
    for (int m = 0; m < MARKS; m++) {
        char mark[MARK_LEN + 1];
        uint8_t *at;
        size_t seg;
        snprintf(mark, sizeof(mark), "<<MARK-%d>>", m);
        at = memmem(got + off, total - off, mark, MARK_LEN);
        ck_assert_msg(at, "mark %d is missing or out of order", m);
        seg = (size_t)(at - got) - off;
        ck_assert_msg(kept + seg <= n, "mark %d after more bytes than were sent", m);
        memcpy(rest + kept, got + off, seg);
        kept += seg;
        off += seg + MARK_LEN;
    }
    ck_assert_int_eq(kept + (total - off), n);
    memcpy(rest + kept, got + off, total - off);
    ck_assert_msg(memcmp(rest, data, n) == 0,
                  "without the marks, what reached the upstream is not what the client "
                  "sent");
    close(ctl);
    close(ps[0].fd);
    close(ps[1].fd);
    close(lfd);
    stop_clean(&D);
    free(data);
    free(got);
    free(rest);
}
END_TEST

/* connd exits 1 on a proxy config, naming `key` and the plugin. */
static void assert_proxy_config_refused(const char *config, const char *key)
{
    char cfg[1024], *log = NULL;
    int rc;

    snprintf(cfg, sizeof(cfg),
             CFG_HEAD "\"plugins\":[{\"name\":\"proxy\",\"file\":\"proxy.so\","
                      "\"config\":%s}],\"listeners\":[" LISTENER("p", "proxy", "") "]}",
             config);
    rc = daemon_run(cfg, NULL, 10000, &log);
    ck_assert_msg(rc == 1, "exit %d; log:\n%s", rc, log);
    ck_assert_msg(strstr(log, key), "the log should name %s:\n%s", key, log);
    ck_assert_msg(strstr(log, "plugin proxy"), "the log should name the plugin:\n%s",
                  log);
    ck_assert_msg(!strstr(log, "Sanitizer"), "%s", log);
    free(log);
}

START_TEST(test_proxy_refuses_a_splice_that_is_not_a_boolean)
{
    assert_proxy_config_refused("{\"upstream\":\"127.0.0.1:1\",\"splice\":1}",
                                "config.splice: expected true or false");
}
END_TEST

START_TEST(test_proxy_without_upstream_makes_connd_exit_1_naming_the_key)
{
    assert_proxy_config_refused("{\"connect_timeout_ms\":100}", "config.upstream");
}
END_TEST

/* ---- framing ------------------------------------------------------------ */

/* Frames of the given payload lengths (random payloads from seed) as one
 * request stream, and the replies framing must send for them. */
struct frames {
    uint8_t *req, *reply;
    size_t len; /* of each: a reply has its request's length */
};

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void frames_build(struct frames *f, const uint32_t *lens, size_t n, uint64_t seed)
{
    size_t off = 0;

    f->len = 0;
    for (size_t i = 0; i < n; i++)
        f->len += 4 + lens[i];
    f->req = malloc(f->len);
    f->reply = malloc(f->len);
    ck_assert(f->req && f->reply);
    for (size_t i = 0; i < n; i++) {
        put_be32(f->req + off, lens[i]);
        put_be32(f->reply + off, lens[i]);
        off += 4;
        fill_random(f->req + off, lens[i], seed + i);
        for (size_t k = 0; k < lens[i]; k++)
            f->reply[off + k] = f->req[off + lens[i] - 1 - k];
        off += lens[i];
    }
}

static void frames_free(struct frames *f)
{
    free(f->req);
    free(f->reply);
}

/* Send the frames in one write and expect every reply, in order. */
static void frames_exchange(int fd, const uint32_t *lens, size_t n, uint64_t seed)
{
    struct frames f;

    frames_build(&f, lens, n, seed);
    exchange(fd, f.req, f.len, f.reply, f.len, 5000);
    frames_free(&f);
}

/* After a close for an oversized length: EOF, and the reason in the log. */
static void assert_closed_with_reason(int fd, const char *reason)
{
    assert_closed(fd, 3000, false, &D);
    ck_assert_msg(daemon_wait_log_count(&D, reason, 1, 2000), "no \"%s\" in the log:\n%s",
                  reason, log_tail(&D));
}

START_TEST(test_framing_answers_a_frame_sent_byte_by_byte)
{
    int fd = client(start(&D, "f", FRAMING_CFG));
    static const uint32_t lens[] = {300};
    struct frames f;
    struct io_peer p;

    /* Every byte its own segment (NODELAY and a pause): the header and the
     * payload each arrive in many reads. */
    frames_build(&f, lens, 1, 10);
    send_in_pieces(fd, f.req, f.len, 1, 1000, 0);
    io_peer_init(&p, "client", fd, NULL, 0, f.reply, f.len);
    io_pump(&p, 1, 5000, NULL);
    io_peer_assert_ok(&p);
    /* The connection is still in step: the next frame is answered. */
    frames_exchange(fd, (const uint32_t[]){5}, 1, 11);
    frames_free(&f);
    close(fd);
    stop_clean(&D);
}
END_TEST

START_TEST(test_framing_reassembles_frames_split_across_many_small_writes)
{
    int fd = client(start(&D, "f", FRAMING_CFG));
    static const uint32_t lens[] = {1, 17, 0, 1024, 3, 500, 0, 64, 1023, 2, 999, 4};
    struct frames f;
    struct io_peer p;

    frames_build(&f, lens, sizeof(lens) / sizeof(lens[0]), 20);
    send_in_pieces(fd, f.req, f.len, 13, 200, 21);
    io_peer_init(&p, "client", fd, NULL, 0, f.reply, f.len);
    io_pump(&p, 1, 5000, NULL);
    io_peer_assert_ok(&p);
    frames_free(&f);
    close(fd);
    stop_clean(&D);
}
END_TEST

START_TEST(test_framing_answers_coalesced_frames_in_order_from_one_write)
{
    int fd = client(start(&D, "f", FRAMING_CFG));
    static const uint32_t lens[] = {10, 0, 1024, 1, 0, 0, 333, 7, 1024, 12, 100, 5, 6};
    struct frames f;
    ssize_t r;
    struct io_peer p;

    frames_build(&f, lens, sizeof(lens) / sizeof(lens[0]), 30);
    r = send(fd, f.req, f.len, MSG_NOSIGNAL);
    ck_assert_msg(r == (ssize_t)f.len, "one write of %zu bytes took %zd", f.len, r);
    io_peer_init(&p, "client", fd, NULL, 0, f.reply, f.len);
    io_pump(&p, 1, 5000, NULL);
    io_peer_assert_ok(&p);
    frames_free(&f);
    close(fd);
    stop_clean(&D);
}
END_TEST

START_TEST(test_framing_answers_an_empty_frame_with_an_empty_frame)
{
    int fd = client(start(&D, "f", FRAMING_CFG));
    static const uint8_t empty[4] = {0, 0, 0, 0};

    exchange(fd, empty, 4, empty, 4, 5000);
    ck_assert_msg(!io_readable(fd, 200), "more than an empty frame came back");
    frames_exchange(fd, (const uint32_t[]){0, 9, 0}, 3, 40);
    close(fd);
    stop_clean(&D);
}
END_TEST

START_TEST(test_framing_answers_frames_of_exactly_max_frame)
{
    int fd = client(start(&D, "f", FRAMING_CFG));
    int fb = client(daemon_port(&D, "fb"));

    frames_exchange(fd, (const uint32_t[]){FRAMING_MAX, FRAMING_MAX}, 2, 50);
    /* On "fb" the listener's max_size is the bound, and it is inclusive. */
    frames_exchange(fb, (const uint32_t[]){MAX_SIZE, 1, MAX_SIZE}, 3, 51);
    close(fd);
    close(fb);
    stop_clean(&D);
}
END_TEST

START_TEST(test_framing_closes_on_a_length_over_max_frame_and_logs_its_size)
{
    int fd = client(start(&D, "f", FRAMING_CFG));
    uint8_t head[4];

    frames_exchange(fd, (const uint32_t[]){FRAMING_MAX}, 1, 60);
    put_be32(head, FRAMING_MAX + 1);
    exchange(fd, head, 4, NULL, 0, 2000);
    assert_closed_with_reason(fd, "framing: frame of 1025 bytes over max_frame 1024");
    close(fd);
    stop_clean(&D);
}
END_TEST

START_TEST(test_framing_closes_on_a_length_over_max_size_within_max_frame)
{
    int fd = client(start(&D, "fb", FRAMING_CFG));
    uint8_t head[4];

    put_be32(head, MAX_SIZE + 1); /* within max_frame 65536 */
    exchange(fd, head, 4, NULL, 0, 2000);
    assert_closed_with_reason(fd, "framing: frame of 16385 bytes over max_size");
    close(fd);
    stop_clean(&D);
}
END_TEST

/* ---- hello -------------------------------------------------------------- */

/* A client of listener `name` that has read the greeting, and nothing else. */
static int greeted(const char *name)
{
    int fd = client(daemon_port(&D, name));

    exchange(fd, NULL, 0, GREETING, strlen(GREETING), 5000);
    ck_assert_msg(!io_readable(fd, 100), "more than the greeting came unasked");
    return fd;
}

START_TEST(test_hello_greets_first_then_hands_the_connection_to_echo)
{
    static const char ping[] = "ping after the greeting\n";
    json_t *list;
    int fd;

    start(&D, "he", HELLO_CFG);
    fd = greeted("he");
    exchange(fd, ping, strlen(ping), ping, strlen(ping), 5000);
    /* The connection belongs to echo now. */
    list = ctl_result(&D, "conn.list", "{\"listener\":\"he\"}");
    ck_assert_msg(json_array_size(list) == 1, "%s", json_dumps(list, JSON_COMPACT));
    ck_assert_str_eq(
        json_string_value(json_object_get(json_array_get(list, 0), "plugin")), "echo");
    json_decref(list);
    exchange(fd, "again", 5, "again", 5, 5000);
    close(fd);
    stop_clean(&D);
}
END_TEST

START_TEST(test_hello_hands_over_to_framing_whose_adopted_hook_sets_expect)
{
    int fd;

    start(&D, "hf", HELLO_CFG);
    fd = greeted("hf");
    /* Without expect(4) from adopted(), framing would take whatever is
     * read as a header and answer nonsense. */
    frames_exchange(fd, (const uint32_t[]){3, 0, 1024, 77}, 4, 70);
    close(fd);
    stop_clean(&D);
}
END_TEST

START_TEST(test_hello_closes_when_the_next_plugin_does_not_exist)
{
    int fd;

    start(&D, "hb", HELLO_CFG);
    fd = client(daemon_port(&D, "hb"));
    /* The greeting was queued before the hand-over failed: it arrives,
     * then EOF. */
    exchange(fd, NULL, 0, GREETING, strlen(GREETING), 5000);
    assert_closed(fd, 3000, false, &D);
    ck_assert_msg(daemon_wait_log_count(&D, "hello: no plugin \"nosuch\"", 1, 2000), "%s",
                  log_tail(&D));
    ck_assert_msg(daemon_wait_log_count(&D, "hello: hand-over failed", 1, 2000), "%s",
                  log_tail(&D));
    close(fd);
    stop_clean(&D);
}
END_TEST

/* ---- shed --------------------------------------------------------------- */

/* Whether got is sent with pieces cut out, in order (greedy subsequence
 * match: it finds one exactly when one exists). */
static bool is_subsequence(const uint8_t *got, size_t got_len, const uint8_t *sent,
                           size_t sent_len)
{
    size_t j = 0;

    for (size_t i = 0; i < sent_len && j < got_len; i++)
        if (sent[i] == got[j])
            j++;
    return j == got_len;
}

#define SHED_BYTES (8 * MiB)

START_TEST(test_shed_drops_what_a_slow_reader_cannot_take_and_counts_it)
{
    int port = start(&D, "s", SHED_CFG);
    uint8_t *data = random_bytes(SHED_BYTES, 80), *back = malloc(SHED_BYTES);
    json_int_t id, dropped, received;
    json_t *show, *info;
    char line[96];
    struct io_peer p;

    ck_assert_ptr_nonnull(back);
    io_peer_init(&p, "client", client(port), data, SHED_BYTES, NULL, 0);
    tcp_small_buffers(p.fd, 64 * KiB);
    p.keep = back;
    p.keep_cap = SHED_BYTES;
    ck_assert_msg(daemon_wait_log(&D, "accepted on s", 5000), "%s", log_tail(&D));
    id = only_conn_on(&D, "s");

    /* Send everything without reading: shed never stops reading, so the
     * kernel takes it all, and what cannot be queued past the watermark is
     * dropped. */
    io_pump_send_only(&p, 3000, 20000, NULL);
    ck_assert_msg(p.err == 0 && p.sent == SHED_BYTES,
                  "sent %zu of %zu bytes to shed (%s): it should never push back", p.sent,
                  SHED_BYTES, strerror(-p.err));
    show = conn_show(&D, id);
    info = json_object_get(show, "plugin_info");
    ck_assert_msg(json_is_object(info), "conn.show has no plugin_info: %s",
                  json_dumps(show, JSON_COMPACT));
    ck_assert_msg(json_int_at(show, "plugin_info", "dropped_bytes") > 0,
                  "nothing dropped while the client did not read: %s",
                  json_dumps(show, JSON_COMPACT));
    ck_assert_msg(json_is_true(json_object_get(info, "shedding")),
                  "not shedding while throttled: %s", json_dumps(show, JSON_COMPACT));
    json_decref(show);

    /* Now read what arrives, until nothing more comes. */
    pump_until_idle(&p, 700, 20000);
    ck_assert_msg(p.err == 0 && !p.eof && p.bad_at == SIZE_MAX,
                  "reading back: err %s eof %d bad_at %zu", strerror(-p.err), p.eof,
                  p.bad_at);
    received = (json_int_t)p.got;
    ck_assert_msg(p.got < SHED_BYTES, "got all %zu bytes back: nothing was shed", p.got);
    ck_assert_msg(is_subsequence(back, p.got, data, SHED_BYTES),
                  "what came back is not what was sent with pieces cut out");

    /* Idle and flushed: the count is exactly what never came back. */
    show = conn_show(&D, id);
    ck_assert_int_eq(json_int_at(show, "pending", NULL), 0);
    ck_assert_int_eq(json_int_at(show, "bytes_in", NULL), (json_int_t)SHED_BYTES);
    ck_assert_int_eq(json_int_at(show, "bytes_out", NULL), received);
    dropped = json_int_at(show, "plugin_info", "dropped_bytes");
    fprintf(stderr, "shed: sent %zu, received %lld, dropped %lld\n", SHED_BYTES,
            (long long)received, (long long)dropped);
    ck_assert_msg(dropped == (json_int_t)SHED_BYTES - received,
                  "dropped_bytes %lld, but %lld of %zu bytes did not come back: %s",
                  (long long)dropped, (long long)SHED_BYTES - (long long)received,
                  SHED_BYTES, json_dumps(show, JSON_COMPACT));
    ck_assert_msg(
        json_is_false(json_object_get(json_object_get(show, "plugin_info"), "shedding")),
        "still shedding once drained: %s", json_dumps(show, JSON_COMPACT));
    json_decref(show);

    close(p.fd);
    snprintf(line, sizeof(line), "shed: dropped %lld bytes", (long long)dropped);
    ck_assert_msg(daemon_wait_log_count(&D, line, 1, 3000), "no \"%s\" on close:\n%s",
                  line, log_tail(&D));
    stop_clean(&D);
    free(data);
    free(back);
}
END_TEST

/* ---- suite -------------------------------------------------------------- */

static TCase *tcase(Suite *s, const char *name, int timeout_s)
{
    TCase *tc = tcase_create(name);

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, timeout_s);
    suite_add_tcase(s, tc);
    return tc;
}

static Suite *bundled_suite(void)
{
    Suite *s = suite_create("bundled");
    TCase *tc;

    /* The relaying proxy (default), then the same tests copying. */
    for (int copy = 0; copy < 2; copy++) {
        tc = tcase(s, copy ? "proxy_copy" : "proxy", UNDER_ASAN ? 120 : 60);
        if (copy)
            tcase_add_checked_fixture(tc, setup_copy, teardown_copy);
        tcase_add_test(tc, test_proxy_relays_64mib_each_way_intact_through_echo);
        tcase_add_test(
            tc, test_proxy_bounds_memory_and_loses_nothing_with_a_slow_reading_client);
        tcase_add_test(
            tc, test_proxy_bounds_memory_and_loses_nothing_with_a_slow_reading_upstream);
        tcase_add_test(tc, test_proxy_passes_the_clients_half_close_after_every_echoed_byte);
        tcase_add_test(
            tc, test_proxy_passes_the_clients_half_close_to_a_muted_echo_losing_nothing);
        tcase_add_test(
            tc, test_proxy_passes_the_upstreams_half_close_and_still_relays_the_client);
        tcase_add_test(tc, test_proxy_keeps_control_writes_in_place_in_the_stream);
    }
    tc = tcase(s, "proxy_setup", 60);
    tcase_add_test(tc, test_proxy_refuses_a_splice_that_is_not_a_boolean);
    tcase_add_test(tc, test_proxy_closes_the_client_and_logs_when_the_upstream_is_down);
    tcase_add_test(tc, test_proxy_upstream_takes_the_listeners_limits);
    tcase_add_test(
        tc, test_proxy_closes_the_client_after_connect_timeout_on_a_silent_upstream);
    tcase_add_test(tc, test_proxy_without_upstream_makes_connd_exit_1_naming_the_key);

    tc = tcase(s, "framing", 30);
    tcase_add_test(tc, test_framing_answers_a_frame_sent_byte_by_byte);
    tcase_add_test(tc, test_framing_reassembles_frames_split_across_many_small_writes);
    tcase_add_test(tc, test_framing_answers_coalesced_frames_in_order_from_one_write);
    tcase_add_test(tc, test_framing_answers_an_empty_frame_with_an_empty_frame);
    tcase_add_test(tc, test_framing_answers_frames_of_exactly_max_frame);
    tcase_add_test(tc, test_framing_closes_on_a_length_over_max_frame_and_logs_its_size);
    tcase_add_test(tc, test_framing_closes_on_a_length_over_max_size_within_max_frame);

    tc = tcase(s, "hello", 30);
    tcase_add_test(tc, test_hello_greets_first_then_hands_the_connection_to_echo);
    tcase_add_test(tc, test_hello_hands_over_to_framing_whose_adopted_hook_sets_expect);
    tcase_add_test(tc, test_hello_closes_when_the_next_plugin_does_not_exist);

    tc = tcase(s, "shed", 60);
    tcase_add_test(tc, test_shed_drops_what_a_slow_reader_cannot_take_and_counts_it);
    return s;
}

int main(void)
{
    return run_suite(bundled_suite());
}
