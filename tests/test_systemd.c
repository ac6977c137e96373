/*
 * test_systemd.c: what connd tells systemd, captured on a NOTIFY_SOCKET the
 * test owns (a path and an abstract name): READY, RELOADING with
 * MONOTONIC_USEC, STATUS, STOPPING, WATCHDOG (and its absence while a
 * plugin wedges the loop); socket activation through systemd-socket-activate
 * with --fdname; and the unit files, checked by systemd-analyze verify.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"

static struct daemon D;
static int notify_fd = -1;
static char notify_name[108];

/* A datagram socket for NOTIFY_SOCKET; abstract when `abstract`. */
static void notify_open(bool abstract)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    socklen_t len;

    notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(notify_fd, 0);
    if (abstract) {
        snprintf(notify_name, sizeof(notify_name), "@connd-test-notify-%d", (int)getpid());
        memcpy(sun.sun_path, notify_name, strlen(notify_name));
        sun.sun_path[0] = '\0';
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(notify_name));
    } else {
        snprintf(notify_name, sizeof(notify_name), "/tmp/connd-test-notify-%d", (int)getpid());
        unlink(notify_name);
        memcpy(sun.sun_path, notify_name, strlen(notify_name) + 1);
        len = sizeof(sun);
    }
    ck_assert_int_eq(bind(notify_fd, (struct sockaddr *)&sun, len), 0);
    setenv("NOTIFY_SOCKET", notify_name, 1);
}

static void notify_close(void)
{
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    if (notify_fd >= 0)
        close(notify_fd);
    notify_fd = -1;
    if (notify_name[0] == '/')
        unlink(notify_name);
}

/* Read datagrams until one contains `needle` (returned, static) or the
 * timeout passes (NULL). */
static const char *notify_wait(const char *needle, int timeout_ms)
{
    static char msg[1024];
    uint64_t end = now_ms() + (uint64_t)timeout_ms;

    while (now_ms() < end) {
        struct pollfd pfd = {.fd = notify_fd, .events = POLLIN};
        ssize_t n;
        if (poll(&pfd, 1, (int)(end - now_ms())) <= 0)
            continue;
        if ((n = recv(notify_fd, msg, sizeof(msg) - 1, 0)) <= 0)
            continue;
        msg[n] = '\0';
        if (strstr(msg, needle))
            return msg;
    }
    return NULL;
}

/* Count WATCHDOG=1 datagrams over ms milliseconds. */
static int watchdog_pings(int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    char msg[1024];
    int n = 0;

    while (now_ms() < end) {
        struct pollfd pfd = {.fd = notify_fd, .events = POLLIN};
        ssize_t r;
        if (poll(&pfd, 1, (int)(end - now_ms())) <= 0)
            continue;
        if ((r = recv(notify_fd, msg, sizeof(msg) - 1, 0)) <= 0)
            continue;
        msg[r] = '\0';
        n += strstr(msg, "WATCHDOG=1") != NULL;
    }
    return n;
}

static const char *echo_config =
    "{\"plugin_dir\": \"@PLUGINS@\", \"shutdown_timeout_ms\": 2000,"
    " \"plugins\": [{\"name\": \"echo\", \"file\": \"echo.so\"},"
    " {\"name\": \"tp\", \"file\": \"@TPLUGINS@/testplug.so\","
    "  \"config\": {\"block_ms\": 1500}}],"
    " \"listeners\": [{\"name\": \"echo\", \"host\": \"127.0.0.1\", \"port\": 0,"
    " \"plugin\": \"echo\"}, {\"name\": \"wedge\", \"host\": \"127.0.0.1\", \"port\": 0,"
    " \"plugin\": \"tp\"}]}";

static void lifecycle(bool abstract)
{
    const char *msg;
    FILE *f;

    notify_open(abstract);
    ck_assert_int_eq(daemon_start(&D, echo_config, NULL), 0);
    ck_assert_ptr_nonnull(msg = notify_wait("READY=1", 3000));
    ck_assert_ptr_nonnull(strstr(msg, "MAINPID="));
    ck_assert_ptr_nonnull(msg = notify_wait("STATUS=", 3000));
    ck_assert_ptr_nonnull(strstr(msg, "2 listeners"));

    /* A reload: RELOADING=1 with MONOTONIC_USEC, then READY=1. */
    kill(D.pid, SIGHUP);
    ck_assert_ptr_nonnull(msg = notify_wait("RELOADING=1", 3000));
    ck_assert_ptr_nonnull(strstr(msg, "MONOTONIC_USEC="));
    ck_assert_ptr_nonnull(notify_wait("READY=1", 3000));
    ck_assert_ptr_nonnull(notify_wait("STATUS=reloaded", 3000));

    /* A bad config: refused, and STATUS says so. */
    ck_assert_ptr_nonnull(f = fopen(D.cfg_path, "w"));
    fputs("{\"listeners\": 7}", f);
    fclose(f);
    kill(D.pid, SIGHUP);
    ck_assert_ptr_nonnull(notify_wait("RELOADING=1", 3000));
    ck_assert_ptr_nonnull(msg = notify_wait("STATUS=reload failed", 3000));
    ck_assert_ptr_nonnull(strstr(msg, "listeners"));

    kill(D.pid, SIGTERM);
    ck_assert_ptr_nonnull(notify_wait("STOPPING=1", 3000));
    ck_assert_int_eq(daemon_stop(&D, 0, 5000), 0);
    daemon_free(&D);
    notify_close();
}

START_TEST(test_systemd_notify_lifecycle_on_a_socket_path)
{
    lifecycle(false);
}
END_TEST

START_TEST(test_systemd_notify_lifecycle_on_an_abstract_socket)
{
    lifecycle(true);
}
END_TEST

START_TEST(test_systemd_watchdog_stops_while_a_plugin_wedges_the_loop)
{
    int fd;

    notify_open(false);
    setenv("WATCHDOG_USEC", "200000", 1); /* a ping every 50 ms */
    ck_assert_int_eq(daemon_start(&D, echo_config, NULL), 0);
    ck_assert_int_ge(watchdog_pings(500), 5);

    /* The wedge listener's plugin blocks the loop for 1.5 s per read. */
    fd = tcp_connect("127.0.0.1", daemon_port(&D, "wedge"));
    ck_assert_int_eq(io_write_all(fd, "x", 1), 0);
    ck_assert(daemon_wait_log(&D, "blocking id=", 2000));
    watchdog_pings(50); /* pings sent before the block started */
    ck_assert_int_eq(watchdog_pings(1000), 0);
    /* Unwedged, the pings come back. */
    usleep(600 * 1000);
    ck_assert_int_ge(watchdog_pings(500), 5);
    close(fd);
    ck_assert_int_eq(daemon_stop(&D, SIGTERM, 5000), 0);
    daemon_free(&D);
    notify_close();
}
END_TEST

/* A free port on 127.0.0.1 (bound and released: a small race, fine here). */
static int free_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&sin, sizeof(sin));
    getsockname(fd, (struct sockaddr *)&sin, &len);
    port = ntohs(sin.sin_port);
    close(fd);
    return port;
}

START_TEST(test_systemd_socket_activation_adopts_by_fdname)
{
    char listen1[64], listen2[64], cfg[1024], buf[8] = {0};
    int port = free_port(), port2 = free_port(), blocker, fd, one = 1;
    struct sockaddr_in sin = {.sin_family = AF_INET};
    const char *prefix[] = {"systemd-socket-activate", "-l", listen1, "-l", listen2,
                            "--fdname=echo:stray", NULL};

    snprintf(listen1, sizeof(listen1), "127.0.0.1:%d", port);
    snprintf(listen2, sizeof(listen2), "127.0.0.1:%d", port2);
    /* The config's own port is taken by the test: connd must not bind it. */
    blocker = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(blocker, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(blocker, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(blocker, 1), 0);
    {
        socklen_t len = sizeof(sin);
        getsockname(blocker, (struct sockaddr *)&sin, &len);
    }
    snprintf(cfg, sizeof(cfg),
             "{\"plugin_dir\": \"@PLUGINS@\","
             " \"plugins\": [{\"name\": \"echo\", \"file\": \"echo.so\"}],"
             " \"listeners\": [{\"name\": \"echo\", \"host\": \"127.0.0.1\", \"port\": %d,"
             " \"plugin\": \"echo\"}]}",
             ntohs(sin.sin_port));
    /* systemd-socket-activate starts connd on the first connection. */
    ck_assert_int_eq(daemon_spawn(&D, cfg, prefix, NULL), 0);
    ck_assert(daemon_wait_log(&D, "Listening on", 5000));
    fd = tcp_connect("127.0.0.1", port);
    ck_assert_int_ge(fd, 0);
    ck_assert(daemon_wait_log(&D, "notice: ready:", 5000));
    D.log_mark = 0;
    ck_assert(daemon_wait_log(&D, "listener echo: adopted the socket systemd passed", 1000));
    ck_assert(daemon_wait_log(&D, "named \"stray\" matches no listener; closed", 1000));
    ck_assert_int_eq(io_write_all(fd, "act", 3), 0);
    ck_assert_int_eq(io_read_exact(fd, buf, 3), 0);
    ck_assert_str_eq(buf, "act");
    close(fd);
    ck_assert_int_eq(daemon_stop(&D, SIGTERM, 5000), 0);
    daemon_free(&D);
    close(blocker);
}
END_TEST

START_TEST(test_systemd_units_pass_systemd_analyze_verify)
{
    char cmd[1024];

    /* The service names the installed binary: verify against a staged
     * install so that ExecStart= resolves. */
    snprintf(cmd, sizeof(cmd),
             "set -e; d=$(mktemp -d /tmp/connd-units-XXXXXX); trap 'rm -rf $d' EXIT;"
             " DESTDIR=$d cmake --install %s >/dev/null;"
             " u=$(find $d -name connd.service -path '*systemd/system*');"
             " s=$(dirname $u)/connd.socket;"
             " SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no --root=$d"
             "   ${u#$d} ${s#$d} >$d/verify.log 2>&1 || true; cat $d/verify.log;"
             /* The staged root has no systemd of its own: its missing
              * sysinit.target says nothing about our units. */
             " ! grep -v -e 'Unit sysinit.target not found' -e '^$' $d/verify.log | grep -q .",
             CONND_BINARY_DIR);
    ck_assert_msg(system(cmd) == 0, "systemd-analyze verify reported problems");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("systemd");
    TCase *notify = tcase_create("notify"), *act = tcase_create("activation");
    TCase *units = tcase_create("units");
    SRunner *sr;
    int failed;

    tcase_add_test(notify, test_systemd_notify_lifecycle_on_a_socket_path);
    tcase_add_test(notify, test_systemd_notify_lifecycle_on_an_abstract_socket);
    tcase_add_test(notify, test_systemd_watchdog_stops_while_a_plugin_wedges_the_loop);
    tcase_add_test(act, test_systemd_socket_activation_adopts_by_fdname);
    tcase_add_test(units, test_systemd_units_pass_systemd_analyze_verify);
    tcase_set_timeout(notify, 30);
    tcase_set_timeout(act, 30);
    tcase_set_timeout(units, 120);
    suite_add_tcase(s, notify);
    suite_add_tcase(s, act);
    suite_add_tcase(s, units);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
