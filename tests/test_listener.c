/*
 * test_listener.c: accept-path faults on a real connd. With its file
 * descriptor limit lowered (prlimit on the daemon's pid), accept hits
 * EMFILE: the listener must pause instead of spinning, and resume when a
 * connection closes.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "harness.h"

static const char *echo_config =
    "{\"plugin_dir\": \"@PLUGINS@\","
    " \"plugins\": [{\"name\": \"echo\", \"file\": \"echo.so\"}],"
    " \"listeners\": [{\"name\": \"e\", \"host\": \"127.0.0.1\", \"port\": 0,"
    " \"plugin\": \"echo\"}]}";

/* Set the soft fd limit of pid (the hard one stays, so it can go up again). */
static void set_fd_limit(pid_t pid, long n)
{
    ck_assert_int_ge(n, 0);
    ck_assert_int_eq(proc_set_fd_limit(pid, (rlim_t)n), 0);
}

/* One connection opened, echoed and closed: libuv opens its own reserve fd
 * (/dev/null, for its EMFILE trick) with the loop's first stream, so fd
 * arithmetic starts after that. Returns once the daemon is back to a
 * steady fd count. */
static void warm_up(struct daemon *d, int port)
{
    int fd = tcp_connect("127.0.0.1", port), n = -1;

    ck_assert_int_ge(fd, 0);
    ck_assert(io_echoes(fd, "warm"));
    close(fd);
    for (uint64_t end = now_ms() + 2000; now_ms() < end;) {
        int m = proc_fd_count(d->pid);
        if (m == n)
            return;
        n = m;
        daemon_drain_log(d, 50);
    }
}

/* On a failed check, show what descriptors the daemon held, then its log. */
#define CHECK(d, cond)                                                                   \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            char cmd_[64];                                                               \
            snprintf(cmd_, sizeof(cmd_), "ls -l /proc/%d/fd >&2", (int)(d)->pid);         \
            if (system(cmd_) != 0)                                                       \
                fprintf(stderr, "(could not list its fds)\n");                          \
            daemon_fail_now(d, 200, 16000);                                              \
            ck_abort_msg("Assertion '%s' failed", #cond);                                \
        }                                                                                \
    } while (0)

START_TEST(test_listener_emfile_pauses_without_spinning_and_recovers)
{
    struct daemon d;
    int port, c[4];
    long t0;

    ck_assert_int_eq(daemon_start(&d, echo_config, NULL), 0);
    port = daemon_port(&d, "e");
    warm_up(&d, port);
    /* Room for exactly two accepted connections. */
    set_fd_limit(d.pid, proc_fd_limit_for_room(d.pid, 2));

    for (int i = 0; i < 2; i++) {
        c[i] = tcp_connect("127.0.0.1", port);
        ck_assert_int_ge(c[i], 0);
        CHECK(&d, io_echoes(c[i], "ping"));
    }
    c[2] = tcp_connect("127.0.0.1", port); /* completes in the kernel backlog */
    ck_assert_int_ge(c[2], 0);
    ck_assert_int_eq(io_write_all(c[2], "three", 5), 0);
    CHECK(&d, daemon_wait_log(&d, "listener e: accept: Too many open files: pausing", 3000));

    /* Paused, not spinning: well under a tenth of a CPU over a second. */
    t0 = proc_cpu_ticks(d.pid);
    usleep(1000 * 1000);
    ck_assert_int_lt(proc_cpu_ticks(d.pid) - t0, sysconf(_SC_CLK_TCK) / 10);
    CHECK(&d, !io_readable(c[2], 0));

    /* One closes: the third is accepted and echoed. */
    close(c[0]);
    char buf[8] = {0};
    ck_assert_int_eq(io_read_exact(c[2], buf, 5), 0);
    ck_assert_str_eq(buf, "three");
    ck_assert(io_echoes(c[1], "still"));
    close(c[1]);
    close(c[2]);
    ck_assert_int_eq(daemon_stop(&d, SIGTERM, 5000), 0);
    daemon_free(&d);
}
END_TEST

START_TEST(test_listener_emfile_retries_after_a_pause_when_nothing_closes)
{
    struct daemon d;
    int port, a, b;
    long room0;
    char buf[8] = {0};

    ck_assert_int_eq(daemon_start(&d, echo_config, NULL), 0);
    port = daemon_port(&d, "e");
    warm_up(&d, port);
    room0 = proc_fd_limit_for_room(d.pid, 0);
    set_fd_limit(d.pid, room0); /* no room at all */
    a = tcp_connect("127.0.0.1", port);
    ck_assert_int_ge(a, 0);
    ck_assert_int_eq(io_write_all(a, "wait", 4), 0);
    CHECK(&d, daemon_wait_log(&d, "pausing for 1000 ms", 3000));
    /* Raise the limit again: the retry timer resumes accepting. */
    set_fd_limit(d.pid, room0 + 64);
    ck_assert_int_eq(io_read_exact(a, buf, 4), 0);
    ck_assert_str_eq(buf, "wait");
    b = tcp_connect("127.0.0.1", port);
    ck_assert(io_echoes(b, "more"));
    close(a);
    close(b);
    ck_assert_int_eq(daemon_stop(&d, SIGTERM, 5000), 0);
    daemon_free(&d);
}
END_TEST

START_TEST(test_listener_max_connections_pauses_every_listener)
{
    struct daemon d;
    int a, b, c;
    char buf[8] = {0};

    ck_assert_int_eq(
        daemon_start(&d,
                     "{\"plugin_dir\": \"@PLUGINS@\", \"max_connections\": 2,"
                     " \"plugins\": [{\"name\": \"echo\", \"file\": \"echo.so\"}],"
                     " \"listeners\": [{\"name\": \"e\", \"host\": \"127.0.0.1\", \"port\": 0,"
                     " \"plugin\": \"echo\"}, {\"name\": \"f\", \"host\": \"127.0.0.1\","
                     " \"port\": 0, \"plugin\": \"echo\"}]}",
                     NULL),
        0);
    a = tcp_connect("127.0.0.1", daemon_port(&d, "e"));
    b = tcp_connect("127.0.0.1", daemon_port(&d, "f"));
    ck_assert(io_echoes(a, "a") && io_echoes(b, "b"));
    /* The cap is daemon-wide: a third on either listener waits. */
    c = tcp_connect("127.0.0.1", daemon_port(&d, "f"));
    ck_assert_int_eq(io_write_all(c, "c", 1), 0);
    ck_assert(!io_readable(c, 500));
    ck_assert(daemon_wait_log(&d, "max_connections 2 reached", 1000));
    close(a);
    ck_assert_int_eq(io_read_exact(c, buf, 1), 0);
    ck_assert_str_eq(buf, "c");
    close(b);
    close(c);
    ck_assert_int_eq(daemon_stop(&d, SIGTERM, 5000), 0);
    daemon_free(&d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("listener");
    TCase *tc = tcase_create("emfile");

    tcase_add_test(tc, test_listener_emfile_pauses_without_spinning_and_recovers);
    tcase_add_test(tc, test_listener_emfile_retries_after_a_pause_when_nothing_closes);
    tcase_add_test(tc, test_listener_max_connections_pauses_every_listener);
    tcase_set_timeout(tc, 30);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
