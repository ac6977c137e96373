/*
 * test_connect.c: outgoing connections. Happy Eyeballs runs in-process on
 * a private loop (the test controls which address answers); the rest goes
 * through a real connd and its log.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "connect.h"
#include "harness.h"
#include "loop.h"
#include "plugin.h"

/* A listening socket on addr (0: any port); returns fd, *port is set. */
static int listen_on(int family, const char *addr, int backlog, int *port)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    ck_assert_int_ge(fd, 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)*port);
        inet_pton(AF_INET6, addr, &s6->sin6_addr);
        len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)*port);
        inet_pton(AF_INET, addr, &s4->sin_addr);
        len = sizeof(*s4);
    }
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&ss, len), 0);
    ck_assert_int_eq(listen(fd, backlog), 0);
    len = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &len);
    *port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static struct sockaddr_storage sockaddr_of(int family, const char *addr, int port)
{
    struct sockaddr_storage ss = {0};
    if (family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, addr, &s6->sin6_addr);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, addr, &s4->sin_addr);
    }
    return ss;
}

/* A private loop with one testplug instance named "tp". */
static struct plugin *start_loop(struct loop *lp)
{
    char json[512], err[256];
    struct config *cfg;

    snprintf(json, sizeof(json),
             "{\"control\": {\"path\": \"/tmp/connd-test-connect-%d.sock\"},"
             " \"plugins\": [{\"name\": \"tp\", \"file\": \"%s/testplug.so\"}]}",
             (int)getpid(), CONND_TEST_PLUGIN_DIR);
    ck_assert_int_eq(config_parse(json, strlen(json), &cfg, err, sizeof(err)), 0);
    ck_assert_int_eq(loop_init(lp, cfg, NULL), 0);
    return plugin_find(lp, "tp");
}

static void stop_loop(struct loop *lp)
{
    loop_shutdown(lp, 0);
    uv_run(&lp->uv, UV_RUN_DEFAULT);
    loop_close(lp);
}

/* Run the loop until c is open, or it is gone (returns false), or timeout. */
static bool run_until_open(struct loop *lp, struct conn *c, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    while (now_ms() < end) {
        uv_run(&lp->uv, UV_RUN_NOWAIT);
        if (c->state == CONN_OPEN)
            return true;
        usleep(1000);
    }
    return false;
}

START_TEST(test_connect_happy_eyeballs_falls_back_from_unanswering_ipv6)
{
    struct loop lp;
    struct plugin *p = start_loop(&lp);
    int p6 = 0, p4 = 0, fill[2];
    int hole = listen_on(AF_INET6, "::1", 0, &p6);
    int good = listen_on(AF_INET, "127.0.0.1", 8, &p4);
    struct sockaddr_storage addrs[2], peer;
    socklen_t plen = sizeof(peer);
    struct connect_params prm = {0};
    struct conn *c;
    uint64_t t0;

    /* Fill the ::1 listener's backlog: further SYNs go unanswered. */
    for (int i = 0; i < 2; i++) {
        struct sockaddr_storage ss = sockaddr_of(AF_INET6, "::1", p6);
        fill[i] = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fill[i], (struct sockaddr *)&ss, sizeof(struct sockaddr_in6));
    }
    usleep(100 * 1000);
    /* Given IPv4 first: the connector must still try IPv6 first. */
    addrs[0] = sockaddr_of(AF_INET, "127.0.0.1", p4);
    addrs[1] = sockaddr_of(AF_INET6, "::1", p6);
    t0 = now_ms();
    ck_assert_int_eq(connect_start_addrs(&lp, p, addrs, 2, &prm, &c), 0);
    ck_assert(run_until_open(&lp, c, 3000));
    ck_assert_uint_ge(now_ms() - t0, CONNECT_STAGGER_MS - 10);
    ck_assert_uint_lt(now_ms() - t0, 2000);
    ck_assert_int_eq(getpeername(conn_fd(c), (struct sockaddr *)&peer, &plen), 0);
    ck_assert_int_eq(peer.ss_family, AF_INET);
    stop_loop(&lp);
    close(fill[0]);
    close(fill[1]);
    close(hole);
    close(good);
}
END_TEST

START_TEST(test_connect_failed_attempt_starts_next_without_waiting)
{
    struct loop lp;
    struct plugin *p = start_loop(&lp);
    int p4 = 0, closed6 = 0;
    int good = listen_on(AF_INET, "127.0.0.1", 8, &p4);
    int tmp = listen_on(AF_INET6, "::1", 1, &closed6);
    struct sockaddr_storage addrs[2];
    struct connect_params prm = {0};
    struct conn *c;
    uint64_t t0;

    close(tmp); /* nothing listens there now: the IPv6 attempt is refused */
    addrs[0] = sockaddr_of(AF_INET6, "::1", closed6);
    addrs[1] = sockaddr_of(AF_INET, "127.0.0.1", p4);
    t0 = now_ms();
    ck_assert_int_eq(connect_start_addrs(&lp, p, addrs, 2, &prm, &c), 0);
    ck_assert(run_until_open(&lp, c, 3000));
    ck_assert_uint_lt(now_ms() - t0, CONNECT_STAGGER_MS - 50);
    stop_loop(&lp);
    close(good);
}
END_TEST

START_TEST(test_connect_from_address_restricts_the_family)
{
    struct loop lp;
    struct plugin *p = start_loop(&lp);
    int p4 = 0, p6 = 0;
    int good4 = listen_on(AF_INET, "127.0.0.1", 8, &p4);
    int good6 = listen_on(AF_INET6, "::1", 8, &p6);
    struct sockaddr_storage addrs[2], local;
    socklen_t llen = sizeof(local);
    struct connect_params prm = {.from = "127.0.0.1"};
    struct conn *c;

    addrs[0] = sockaddr_of(AF_INET6, "::1", p6);
    addrs[1] = sockaddr_of(AF_INET, "127.0.0.1", p4);
    ck_assert_int_eq(connect_start_addrs(&lp, p, addrs, 2, &prm, &c), 0);
    ck_assert(run_until_open(&lp, c, 3000));
    ck_assert_int_eq(getsockname(conn_fd(c), (struct sockaddr *)&local, &llen), 0);
    ck_assert_int_eq(local.ss_family, AF_INET);
    stop_loop(&lp);
    close(good4);
    close(good6);
}
END_TEST

/* ---- through the daemon ------------------------------------------------ */

static void start_daemon_with_connection(struct daemon *d, const char *host, int port,
                                         const char *family)
{
    char cfg[1024];
    snprintf(cfg, sizeof(cfg),
             "{\"plugin_dir\": \"@PLUGINS@\","
             " \"plugins\": [{\"name\": \"tp\", \"file\": \"@TPLUGINS@/testplug.so\"}],"
             " \"connections\": [{\"name\": \"out\", \"host\": \"%s\", \"port\": %d,"
             " \"plugin\": \"tp\", \"family\": \"%s\"}]}",
             host, port, family);
    ck_assert_int_eq(daemon_start(d, cfg, NULL), 0);
}

START_TEST(test_connect_configured_connection_connects)
{
    struct daemon d;
    int port = 0, srv = listen_on(AF_INET, "127.0.0.1", 8, &port), peer;

    start_daemon_with_connection(&d, "127.0.0.1", port, "ipv4");
    ck_assert(daemon_wait_log(&d, "connecting id=1 count=1", 5000));
    ck_assert(daemon_wait_log(&d, "connected id=1", 5000));
    /* An address literal skips the resolver (libuv's thread pool). */
    ck_assert_int_eq(daemon_count_log(&d, ": resolving "), 0);
    peer = accept(srv, NULL, NULL);
    ck_assert_int_ge(peer, 0);
    close(peer);
    ck_assert(daemon_wait_log(&d, "closed id=1", 5000));
    ck_assert_int_eq(daemon_stop(&d, SIGTERM, 5000), 0);
    daemon_free(&d);
    close(srv);
}
END_TEST

START_TEST(test_connect_refused_fires_connect_failed_then_closed)
{
    struct daemon d;
    int port = 0, srv = listen_on(AF_INET, "127.0.0.1", 8, &port);

    close(srv); /* refused from now on */
    start_daemon_with_connection(&d, "127.0.0.1", port, "any");
    ck_assert(daemon_wait_log(&d, "connect_failed id=1", 5000));
    ck_assert(daemon_wait_log(&d, "closed id=1", 5000));
    ck_assert_int_eq(daemon_count_log(&d, "connected id=1"), 0);
    ck_assert_int_eq(daemon_stop(&d, SIGTERM, 5000), 0);
    daemon_free(&d);
}
END_TEST

START_TEST(test_connect_unresolvable_host_fails_cleanly)
{
    struct daemon d;

    start_daemon_with_connection(&d, "no-such-host.invalid", 80, "any");
    ck_assert(daemon_wait_log(&d, "connect failed: resolve", 15000));
    ck_assert(daemon_wait_log(&d, "connect_failed id=1", 5000));
    ck_assert_int_eq(daemon_stop(&d, SIGTERM, 5000), 0);
    daemon_free(&d);
}
END_TEST

/* Names still go through the resolver; a literal of the family that was
 * not asked for is refused as a resolver refuses it, not connected. */
START_TEST(test_connect_names_resolve_and_literals_keep_the_family)
{
    struct daemon d;
    int port = 0, srv = listen_on(AF_INET, "127.0.0.1", 8, &port), peer;

    start_daemon_with_connection(&d, "localhost", port, "ipv4");
    ck_assert(daemon_wait_log(&d, "connected id=1", 5000));
    ck_assert_int_eq(daemon_count_log(&d, "resolving localhost:"), 1); /* before ready */
    peer = accept(srv, NULL, NULL);
    ck_assert_int_ge(peer, 0);
    close(peer);
    ck_assert_int_eq(daemon_stop(&d, SIGTERM, 5000), 0);
    daemon_free(&d);

    start_daemon_with_connection(&d, "127.0.0.1", port, "ipv6");
    ck_assert(daemon_wait_log(&d, "connect_failed id=1", 15000));
    ck_assert_int_eq(daemon_count_log(&d, "resolving 127.0.0.1:"), 1);
    ck_assert_int_eq(daemon_count_log(&d, "connected id=1"), 0);
    ck_assert_int_eq(daemon_stop(&d, SIGTERM, 5000), 0);
    daemon_free(&d);
    close(srv);
}
END_TEST

START_TEST(test_connect_write_before_connected_is_delivered)
{
    struct daemon d;
    int port = 0, srv = listen_on(AF_INET, "127.0.0.1", 8, &port), peer;
    char cfg[1024], buf[16] = {0};

    snprintf(cfg, sizeof(cfg),
             "{\"plugin_dir\": \"@PLUGINS@\","
             " \"plugins\": [{\"name\": \"tp\", \"file\": \"@TPLUGINS@/testplug.so\","
             " \"config\": {\"connect\": \"127.0.0.1:%d\", \"write_early\": \"early-bytes\"}}]}",
             port);
    ck_assert_int_eq(daemon_start(&d, cfg, NULL), 0);
    d.log_mark = 0;
    ck_assert(daemon_wait_log(&d, "connect from init rc=-11", 5000)); /* EAGAIN */
    ck_assert(daemon_wait_log(&d, "write_early rc=0", 5000));
    peer = accept(srv, NULL, NULL);
    ck_assert_int_ge(peer, 0);
    ck_assert_int_eq(io_read_exact(peer, buf, 11), 0);
    ck_assert_str_eq(buf, "early-bytes");
    close(peer);
    ck_assert_int_eq(daemon_stop(&d, SIGTERM, 5000), 0);
    daemon_free(&d);
    close(srv);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("connect");
    TCase *he = tcase_create("happy_eyeballs"), *daemon = tcase_create("daemon");

    tcase_add_test(he, test_connect_happy_eyeballs_falls_back_from_unanswering_ipv6);
    tcase_add_test(he, test_connect_failed_attempt_starts_next_without_waiting);
    tcase_add_test(he, test_connect_from_address_restricts_the_family);
    tcase_add_test(daemon, test_connect_configured_connection_connects);
    tcase_add_test(daemon, test_connect_refused_fires_connect_failed_then_closed);
    tcase_add_test(daemon, test_connect_unresolvable_host_fails_cleanly);
    tcase_add_test(daemon, test_connect_names_resolve_and_literals_keep_the_family);
    tcase_add_test(daemon, test_connect_write_before_connected_is_delivered);
    tcase_set_timeout(he, 30);
    tcase_set_timeout(daemon, 60);
    suite_add_tcase(s, he);
    suite_add_tcase(s, daemon);
    return run_suite(s);
}
