/*
 * test_host.c: host functions a plugin calls that the other suites do not
 * exercise: sent() transforms and drops, writev, timers, socket options and
 * addresses; and the bundled discard plugin. Real connd, real sockets.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static struct daemon D;
static int port;

/* One listener "t" on 127.0.0.1 with a testplug configured by tp_json. */
static void start(const char *tp_json)
{
    char cfg[2048];
    snprintf(cfg, sizeof(cfg),
             "{\"plugin_dir\": \"@PLUGINS@\","
             " \"plugins\": [{\"name\": \"tp\", \"file\": \"@TPLUGINS@/testplug.so\","
             " \"config\": %s}, {\"name\": \"discard\", \"file\": \"discard.so\"}],"
             " \"listeners\": [{\"name\": \"t\", \"host\": \"127.0.0.1\", \"port\": 0,"
             " \"plugin\": \"tp\"}, {\"name\": \"d\", \"host\": \"127.0.0.1\", \"port\": 0,"
             " \"plugin\": \"discard\"}]}",
             tp_json);
    ck_assert_int_eq(daemon_start(&D, cfg, NULL), 0);
    port = daemon_port(&D, "t");
    ck_assert_int_gt(port, 0);
}

static void stop(void)
{
    ck_assert_int_eq(daemon_stop(&D, SIGTERM, 5000), 0);
    ck_assert_ptr_null(strstr(D.log, "Sanitizer"));
    daemon_free(&D);
}

START_TEST(test_host_sent_can_replace_written_bytes)
{
    char buf[6] = {0};
    int fd;

    start("{\"echo\": true, \"sent\": \"upper\"}");
    fd = tcp_connect("127.0.0.1", port);
    ck_assert_int_eq(io_write_all(fd, "hello", 5), 0);
    ck_assert_int_eq(io_read_exact(fd, buf, 5), 0);
    ck_assert_str_eq(buf, "HELLO");
    close(fd);
    stop();
}
END_TEST

START_TEST(test_host_sent_can_drop_a_write)
{
    char buf[5] = {0};
    int fd;

    start("{\"echo\": true, \"drop\": \"DROP\", \"log_received\": true}");
    fd = tcp_connect("127.0.0.1", port);
    ck_assert_int_eq(io_write_all(fd, "DROPthis", 8), 0);
    /* Its own read, so that "keep" is not in the same write. */
    ck_assert(daemon_wait_log(&D, "received id=1 len=8", 5000));
    ck_assert(!io_readable(fd, 300));
    ck_assert_int_eq(io_write_all(fd, "keep", 4), 0);
    ck_assert_int_eq(io_read_exact(fd, buf, 4), 0);
    ck_assert_str_eq(buf, "keep");
    close(fd);
    stop();
}
END_TEST

START_TEST(test_host_writev_sends_every_buffer_in_order)
{
    enum { LEN = 60000 };
    static uint8_t out[LEN], in[LEN];
    int fd;

    start("{\"echo\": true, \"writev\": true}");
    fill_random(out, LEN, 7);
    fd = tcp_connect("127.0.0.1", port);
    ck_assert_int_eq(io_write_all(fd, out, LEN), 0);
    ck_assert_int_eq(io_read_exact(fd, in, LEN), 0);
    ck_assert_mem_eq(in, out, LEN);
    close(fd);
    stop();
}
END_TEST

START_TEST(test_host_timers_fire_repeat_and_stop)
{
    char buf[6] = {0};
    int fd;

    start("{\"timer_ms\": 50}");
    fd = tcp_connect("127.0.0.1", port);
    ck_assert_int_eq(io_read_exact(fd, buf, 5), 0);
    ck_assert_str_eq(buf, "TICK\n");
    ck_assert(daemon_wait_log(&D, "tick id=1 k=3", 2000));
    daemon_drain_log(&D, 300);
    ck_assert_int_eq(daemon_count_log(&D, "k=4"), 0);
    close(fd);
    ck_assert(daemon_wait_log(&D, "closed id=1", 2000));
    stop();
}
END_TEST

START_TEST(test_host_timers_stopped_in_closed_never_fire)
{
    int fd;

    start("{\"timer_ms\": 400}");
    fd = tcp_connect("127.0.0.1", port);
    ck_assert(daemon_wait_log(&D, "accepted id=1", 2000));
    close(fd);
    ck_assert(daemon_wait_log(&D, "closed id=1", 2000));
    daemon_drain_log(&D, 700);
    ck_assert_int_eq(daemon_count_log(&D, "tick id=1"), 0);
    stop();
}
END_TEST

START_TEST(test_host_socket_options_and_addresses)
{
    struct sockaddr_in me;
    socklen_t len = sizeof(me);
    char want[160];
    int fd;

    start("{\"sockopts\": true}");
    fd = tcp_connect("127.0.0.1", port);
    getsockname(fd, (struct sockaddr *)&me, &len);
    snprintf(want, sizeof(want),
             "rc=0,0,0 nodelay=1 keepalive=1 local=127.0.0.1:%d remote=127.0.0.1:%d", port,
             ntohs(me.sin_port));
    ck_assert_msg(daemon_wait_log(&D, want, 2000), "no \"%s\" in:\n%s", want, D.log);
    close(fd);
    stop();
}
END_TEST

START_TEST(test_host_close_inside_received_stops_delivery_and_flushes)
{
    char buf[5] = {0};
    int fd;

    start("{\"bye\": true, \"expect\": 3, \"log_received\": true}");
    fd = tcp_connect("127.0.0.1", port);
    /* Four frames in one write: close() in the first stops the rest. */
    ck_assert_int_eq(io_write_all(fd, "abcdefghijkl", 12), 0);
    ck_assert_int_eq(io_read_exact(fd, buf, 4), 0);
    ck_assert_str_eq(buf, "BYE\n");
    ck_assert_int_eq(io_expect_eof(fd, 2000), 1);
    ck_assert(daemon_wait_log(&D, "bye write after close=-107", 2000)); /* ENOTCONN */
    close(fd); /* the daemon waits for our EOF before it closes */
    ck_assert(daemon_wait_log(&D, "closed id=1", 2000));
    ck_assert_int_eq(daemon_count_log(&D, "received id=1"), 1);
    stop();
}
END_TEST

START_TEST(test_host_mute_reasons_are_independent)
{
    char buf[4] = {0};
    int fd;

    start("{\"echo\": true, \"mute_reasons\": [\"x\", \"plugin\", \"ctl\"],"
          " \"unmute_ms\": 300}");
    fd = tcp_connect("127.0.0.1", port);
    ck_assert_int_eq(io_write_all(fd, "abc", 3), 0);
    /* "ctl" is the operator's: a plugin may not use it. */
    ck_assert(daemon_wait_log(&D, "mute id=1 reason=ctl rc=-22", 2000));
    /* Muted twice for "x", once for "plugin": one unmute of "x" lifts it
     * (flags, not counts), and "plugin" still holds the bytes. */
    ck_assert(daemon_wait_log(&D, "unmuted id=1 reason=x rc=0", 2000));
    ck_assert(!io_readable(fd, 150));
    ck_assert(daemon_wait_log(&D, "unmuted id=1 reason=plugin rc=0", 2000));
    ck_assert_int_eq(io_read_exact(fd, buf, 3), 0);
    ck_assert_str_eq(buf, "abc");
    close(fd);
    stop();
}
END_TEST

START_TEST(test_host_discard_drops_and_counts_bytes)
{
    static uint8_t data[100000];
    int fd;

    start("{}");
    fd = tcp_connect("127.0.0.1", daemon_port(&D, "d"));
    ck_assert_int_eq(io_write_all(fd, data, sizeof(data)), 0);
    shutdown(fd, SHUT_WR);
    ck_assert_int_eq(io_expect_eof(fd, 2000), 1); /* nothing came back */
    ck_assert(daemon_wait_log(&D, "discard: dropped 100000 bytes", 2000));
    close(fd);
    stop();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("host");
    TCase *sent = tcase_create("sent"), *timers = tcase_create("timers");
    TCase *sock = tcase_create("socket"), *discard = tcase_create("discard");

    tcase_add_test(sent, test_host_sent_can_replace_written_bytes);
    tcase_add_test(sent, test_host_sent_can_drop_a_write);
    tcase_add_test(sent, test_host_writev_sends_every_buffer_in_order);
    tcase_add_test(sent, test_host_close_inside_received_stops_delivery_and_flushes);
    tcase_add_test(timers, test_host_timers_fire_repeat_and_stop);
    tcase_add_test(timers, test_host_timers_stopped_in_closed_never_fire);
    tcase_add_test(sock, test_host_socket_options_and_addresses);
    tcase_add_test(sock, test_host_mute_reasons_are_independent);
    tcase_add_test(discard, test_host_discard_drops_and_counts_bytes);
    suite_add_tcase(s, sent);
    suite_add_tcase(s, timers);
    suite_add_tcase(s, sock);
    suite_add_tcase(s, discard);
    return run_suite(s);
}
