/*
 * test_connctl.c: connctl (ctl/) run as a program, the way operators and
 * scripts run it, against a real connd: its people output (tables, key:
 * value lines, confirmations), --json output, and exit codes 0/1/2/3 for
 * every command of SPEC section 6, including the transport failures (no
 * socket, no reply, connection dropped). Peers are real TCP clients whose
 * bytes, EOFs and resets are checked. Every wait is bounded.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- running connctl ------------------------------------------------------ */

/* One connctl process: its stdout (0) and stderr (1) as they arrive. */
struct run {
    pid_t pid;
    int fd[2];
    char *buf[2];
    size_t len[2];
    int code; /* exit code; -1 killed or timed out; -2 running */
};

static struct run R; /* the last CTL() run */
#define OUT (R.buf[0])
#define ERR (R.buf[1])
#define HAS(hay, needle)                                                                 \
    ck_assert_msg(strstr((hay), (needle)), "no '%s' in:\n%s", (needle), (hay))

/* Release r; a zeroed struct run is one that was never started. */
static void run_free(struct run *r)
{
    if (r->pid <= 0)
        return;
    for (int i = 0; i < 2; i++) {
        if (r->fd[i] >= 0)
            close(r->fd[i]);
        free(r->buf[i]);
    }
    if (r->code == -2) {
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
    }
    memset(r, 0, sizeof(*r));
}

/* Start connctl with args; in (up to 64 KiB) is its stdin, else /dev/null;
 * env entries "K=V" are set after CONND_SOCKET and CONNCTL_TIMEOUT are
 * cleared. */
static void run_spawn(struct run *r, const char *in, size_t in_len,
                      const char *const *env, const char *const *args)
{
    const char *argv[64] = {CONNCTL_BIN};
    int out[2], err[2], inp[2] = {-1, -1}, n = 1;

    run_free(r);
    while (*args && n < 63)
        argv[n++] = *args++;
    ck_assert(pipe2(out, O_CLOEXEC) == 0 && pipe2(err, O_CLOEXEC) == 0);
    if (in) {
        ck_assert(in_len <= 65536 && pipe2(inp, O_CLOEXEC) == 0);
        ck_assert_int_eq(write(inp[1], in, in_len), (ssize_t)in_len);
        close(inp[1]);
    }
    ck_assert_int_ge(r->pid = fork(), 0);
    if (r->pid == 0) {
        dup2(in ? inp[0] : open("/dev/null", O_RDONLY), STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        dup2(err[1], STDERR_FILENO);
        unsetenv("CONND_SOCKET");
        unsetenv("CONNCTL_TIMEOUT");
        for (; env && *env; env++)
            putenv((char *)*env);
        execv(CONNCTL_BIN, (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    if (in)
        close(inp[0]);
    r->fd[0] = out[0];
    r->fd[1] = err[0];
    r->code = -2;
    r->buf[0] = calloc(1, 1);
    r->buf[1] = calloc(1, 1);
}

/* Read what arrives within ms; false once both pipes are at EOF. */
static bool run_pump(struct run *r, int ms)
{
    struct pollfd p[2] = {{.fd = r->fd[0], .events = POLLIN},
                          {.fd = r->fd[1], .events = POLLIN}};

    if (r->fd[0] < 0 && r->fd[1] < 0)
        return false;
    if (poll(p, 2, ms) <= 0)
        return true;
    for (int i = 0; i < 2; i++) {
        char chunk[65536];
        ssize_t n = p[i].revents ? read(r->fd[i], chunk, sizeof(chunk)) : 1;
        if (n <= 0) {
            close(r->fd[i]);
            r->fd[i] = -1;
        } else if (p[i].revents) {
            r->buf[i] = realloc(r->buf[i], r->len[i] + (size_t)n + 1);
            memcpy(r->buf[i] + r->len[i], chunk, (size_t)n);
            r->len[i] += (size_t)n;
            r->buf[i][r->len[i]] = '\0';
        }
    }
    return true;
}

/* Whether needle shows up in stdout (which 0) or stderr (1) within ms. */
static bool run_wait_for(struct run *r, int which, const char *needle, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;

    while (!strstr(r->buf[which], needle))
        if (now_ms() >= end || !run_pump(r, 50))
            return strstr(r->buf[which], needle) != NULL;
    return true;
}

/* Collect the rest of the output and the exit code within ms (then kill). */
static int run_finish(struct run *r, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    int st = 0;

    while (now_ms() < end && run_pump(r, 50))
        ;
    while (waitpid(r->pid, &st, WNOHANG) == 0) {
        if (now_ms() >= end) {
            kill(r->pid, SIGKILL);
            waitpid(r->pid, &st, 0);
            st = -1;
            break;
        }
        usleep(10000);
    }
    r->code = st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    ck_assert_msg(!strstr(r->buf[1], "Sanitizer") && !strstr(r->buf[1], "runtime error"),
                  "connctl sanitizer report:\n%s", r->buf[1]);
    return r->code;
}

/* ---- fixture: one daemon per test ------------------------------------------ */

static struct daemon D;
static bool d_started;

static void start(void)
{
    int rc = daemon_start(
        &D,
        "{\"plugin_dir\": \"@PLUGINS@\", \"shutdown_timeout_ms\": 2000,"
        " \"plugins\": [{\"name\": \"echo\", \"file\": \"echo.so\"},"
        "               {\"name\": \"discard\", \"file\": \"discard.so\"}],"
        " \"listeners\": [{\"name\": \"e\", \"host\": \"127.0.0.1\", \"port\": 0,"
        "                  \"plugin\": \"echo\"},"
        "                 {\"name\": \"d\", \"host\": \"127.0.0.1\", \"port\": 0,"
        "                  \"plugin\": \"discard\"}]}",
        NULL);

    d_started = true;
    ck_assert_msg(rc == 0, "connd did not start:\n%s", D.log ? D.log : "");
}

static void teardown(void)
{
    bool report;

    run_free(&R);
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

/* Run connctl [-s <D's socket>] [--json] args... to completion; its exit
 * code. Without a daemon the test gives -s itself. */
static int ctl_v(bool json, const char *in, size_t in_len, const char *const *args)
{
    const char *argv[64] = {"-s", D.ctl_path};
    int n = D.ctl_path[0] ? 2 : 0;

    if (json)
        argv[n++] = "--json";
    while (*args && n < 63)
        argv[n++] = *args++;
    argv[n] = NULL;
    run_spawn(&R, in, in_len, NULL, argv);
    return run_finish(&R, 15000);
}
#define CTL(...) ctl_v(false, NULL, 0, (const char *const[]){__VA_ARGS__, NULL})
#define CTL_IN(in, len, ...)                                                             \
    ctl_v(false, in, len, (const char *const[]){__VA_ARGS__, NULL})

/* connctl --json args...: must exit 0; its stdout parsed (caller decrefs). */
static json_t *jctl_v(const char *const *args)
{
    json_error_t jerr;
    json_t *v;

    ck_assert_msg(ctl_v(true, NULL, 0, args) == 0, "exit %d: %s", R.code, ERR);
    ck_assert_msg((v = json_loads(OUT, 0, &jerr)), "not JSON (%s): %s", jerr.text, OUT);
    return v;
}
#define JCTL(...) jctl_v((const char *const[]){__VA_ARGS__, NULL})

/* ---- scripted runs ---------------------------------------------------------- */

/* One connctl run of a test's script: the exit code it must have, what its
 * stdout and stderr must contain (NULL: anything; a leading '=': exactly
 * that) and its arguments. In all of them "$1".."$4" stand for V[0..3],
 * the test's connection ids and ports. */
struct step {
    int exit;
    const char *out, *err;
    const char *args[10];
};
/* clang-format off */
#define S(code, out, err, ...) {code, out, err, {__VA_ARGS__}}
/* clang-format on */

static const char *V[4];

/* tmpl with each "$N" replaced by V[N-1], into buf. */
static const char *subst(const char *tmpl, char *buf, size_t len)
{
    size_t n = 0;

    for (; *tmpl && n + 1 < len; tmpl++) {
        if (tmpl[0] == '$' && tmpl[1] >= '1' && tmpl[1] <= '4') {
            n += (size_t)snprintf(buf + n, len - n, "%s", V[*++tmpl - '1']);
            n = n < len ? n : len - 1;
        } else {
            buf[n++] = *tmpl;
        }
    }
    buf[n] = '\0';
    return buf;
}

static void expect_text(size_t i, const char *what, const char *got, const char *want)
{
    char buf[512];

    if (!want)
        return;
    subst(want + (want[0] == '='), buf, sizeof(buf));
    ck_assert_msg(want[0] == '=' ? strcmp(got, buf) == 0 : strstr(got, buf) != NULL,
                  "step %zu: %s is\n%s\nnot %s'%s'", i, what, got,
                  want[0] == '=' ? "" : "containing ", buf);
}

static void run_steps(const struct step *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char bufs[10][256];
        const char *argv[11] = {0};
        for (int k = 0; k < 10 && s[i].args[k]; k++)
            argv[k] = subst(s[i].args[k], bufs[k], sizeof(bufs[k]));
        ck_assert_msg(ctl_v(false, NULL, 0, argv) == s[i].exit,
                      "step %zu (%s %s): exit %d, not %d\nstdout: %s\nstderr: %s", i,
                      argv[0], argv[1] ? argv[1] : "", R.code, s[i].exit, OUT, ERR);
        expect_text(i, "stdout", OUT, s[i].out);
        expect_text(i, "stderr", ERR, s[i].err);
    }
}
#define STEPS(...)                                                                       \
    run_steps((const struct step[]){__VA_ARGS__},                                        \
              sizeof((const struct step[]){__VA_ARGS__}) / sizeof(struct step))

/* A client of listener `name`; id gets its connection id, from connd's log. */
static int client(const char *name, char id[24])
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    char needle[96];
    const char *line;
    int fd = tcp_connect("127.0.0.1", daemon_port(&D, name));

    ck_assert_int_ge(fd, 0);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    snprintf(needle, sizeof(needle), ": accepted on %s from 127.0.0.1:%d\n", name,
             ntohs(sa.sin_port));
    ck_assert_msg(daemon_wait_log(&D, needle, 5000), "not logged:%s", needle);
    for (line = D.log + D.log_mark - strlen(needle); line > D.log && line[-1] != '\n';)
        line--;
    snprintf(id, 24, "%lu", strtoul(strstr(line, "conn ") + 5, NULL, 10));
    return fd;
}

static void echo_ok(int fd, const char *msg)
{
    char buf[256] = {0};

    ck_assert_int_eq(io_write_all(fd, msg, strlen(msg)), 0);
    ck_assert_int_eq(io_read_exact(fd, buf, strlen(msg)), 0);
    ck_assert_str_eq(buf, msg);
}

static json_int_t jint(json_t *obj, const char *key)
{
    return json_integer_value(json_object_get(obj, key));
}

/* ---- people output and --json ------------------------------------------------ */

/* Every header word starts a column: each row's cell starts right there. */
static void assert_aligned(const char *table, int rows)
{
    const char *nl = strchr(table, '\n'), *row = nl + 1;
    size_t hlen = (size_t)(nl - table);
    int n = 0;

    for (; *row; row = strchr(row, '\n') + 1, n++) {
        size_t rlen = strcspn(row, "\n");
        for (size_t i = 1; i < hlen; i++)
            ck_assert_msg(table[i] == ' ' || table[i - 1] != ' ' ||
                              (i < rlen && row[i] != ' ' && row[i - 1] == ' '),
                          "column at %zu not aligned:\n%s", i, table);
    }
    ck_assert_int_eq(n, rows);
}

START_TEST(test_connctl_status_list_and_show_print_for_people_and_json)
{
    char id[24], remote[24], pid[16], buf[1536];
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    json_t *j;
    int fd;

    start();
    fd = client("e", id);
    memset(buf, 'x', sizeof(buf));
    ck_assert_int_eq(io_write_all(fd, buf, sizeof(buf)), 0);
    ck_assert_int_eq(io_read_exact(fd, buf, sizeof(buf)), 0);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    snprintf(remote, sizeof(remote), "127.0.0.1:%d", ntohs(sa.sin_port));
    snprintf(pid, sizeof(pid), "%d", (int)D.pid);
    V[0] = id;
    V[1] = remote;
    V[2] = pid;
    ck_assert_str_eq(id, "1");
    /* REMOTE is as wide as the address; the columns after it follow. */
    STEPS(
        S(0, "\npid:           $3\nuptime:        ", "=", "status"),
        S(0, "\nlisteners:     2\nplugins:       2\n", NULL, "stat"), /* a unique prefix */
        S(0, "ID  LISTENER  PLUGIN  STATE  REMOTE ", "=", "list"),
        S(0,
          "  IN       OUT      PENDING  MUTED  AGE\n"
          "$1   e         echo    open   $2  1.5 KiB  1.5 KiB  0 B      -      ",
          NULL, "list"),
        S(0, "=ID  LISTENER  PLUGIN  STATE  REMOTE  IN  OUT  PENDING  MUTED  AGE\n", "=",
          "list", "--listener", "d"),
        S(0, "id:                    $1\nlistener:              e\n", "=", "show", "$1"),
        S(0, "\nstate:                 open\n", NULL, "show", "$1"),
        S(0, "\nbytes_in:              1.5 KiB (1536)\n", NULL, "show", "$1"),
        S(0, "\nsockopts.nodelay:      ", NULL, "show", "$1"),
        S(0, "\nlimits.max_pending:    64.0 MiB (67108864)\n", NULL, "show", "$1"));
    ck_assert_int_eq(CTL("list"), 0);
    assert_aligned(OUT, 1);
    j = JCTL("status");
    ck_assert_int_eq(jint(j, "pid"), D.pid);
    json_decref(j);
    j = JCTL("list");
    ck_assert_int_eq(json_array_size(j), 1);
    ck_assert_int_eq(jint(json_array_get(j, 0), "bytes_in"), 1536);
    json_decref(j);
    j = JCTL("show", id);
    ck_assert(json_is_object(json_object_get(j, "sockopts")));
    json_decref(j);
    close(fd);
}
END_TEST

START_TEST(test_connctl_list_reads_a_long_reply_in_full)
{
    enum { N = 150 };
    int fds[N];
    char id[24];
    json_t *j;

    start();
    for (int i = 0; i < N; i++)
        fds[i] = client("e", id);
    ck_assert_int_eq(CTL("list"), 0);
    assert_aligned(OUT, N);
    j = JCTL("list");
    ck_assert_int_eq(json_array_size(j), N);
    ck_assert_int_gt(strlen(OUT), 40000);
    json_decref(j);
    for (int i = 0; i < N; i++)
        close(fds[i]);
}
END_TEST

/* ---- connections ------------------------------------------------------------ */

START_TEST(test_connctl_mute_stops_the_echo_and_unmute_resumes_it)
{
    char id[24], buf[5] = {0};
    int fd;

    start();
    fd = client("e", id);
    V[0] = id;
    echo_ok(fd, "one");
    STEPS(S(0, "=conn $1: muted (ctl)\n", "=", "mute", "$1"),
          S(0, "  ctl    ", NULL, "list"));
    ck_assert_int_eq(io_write_all(fd, "ping", 4), 0);
    ck_assert(!io_readable(fd, 300));
    STEPS(S(0, "=conn $1: not muted\n", "=", "unmute", "$1"));
    ck_assert_int_eq(io_read_exact(fd, buf, 4), 0);
    ck_assert_str_eq(buf, "ping");
    close(fd);
}
END_TEST

START_TEST(test_connctl_write_text_base64_file_and_stdin_arrive_byte_exact)
{
    enum { BIG = 1536 * 1024 };
    static uint8_t big[BIG], got[BIG];
    const char bin[] = "a\0b\xff\xfe\n\0z",
               text[] = "hi\xff\xfe-not-utf8--dashes\0\1\xff";
    char id[24], path[128];
    json_t *j;
    FILE *f;
    int fd;

    start();
    fd = client("e", id);
    V[0] = id;
    STEPS(S(0, "=conn $1: queued 2 bytes (token 1)\n", "=", "write", "$1", "hi"),
          S(0, NULL, "=", "write", "$1", "\xff\xfe-not-utf8"), /* goes as base64 */
          S(0, NULL, "=", "write", "$1", "--", "--dashes"),
          S(0, "queued 3 bytes", "=", "write", "$1", "--base64", "AAH/"));
    ck_assert_int_eq(io_read_exact(fd, got, sizeof(text) - 1), 0);
    ck_assert_mem_eq(got, text, sizeof(text) - 1);

    /* A binary file over the 1 MiB line limit goes in several writes. */
    fill_random(big, BIG, 42);
    big[0] = 0;
    big[1] = 0xff;
    snprintf(path, sizeof(path), "%s/big.bin", D.dir);
    ck_assert_ptr_nonnull(f = fopen(path, "wb"));
    ck_assert_int_eq(fwrite(big, 1, BIG, f), BIG);
    fclose(f);
    j = JCTL("write", id, "--file", path);
    ck_assert_int_eq(jint(j, "queued"), BIG);
    ck_assert_int_eq(jint(j, "writes"), 3);
    json_decref(j);
    ck_assert_int_eq(io_read_exact(fd, got, BIG), 0);
    ck_assert_mem_eq(got, big, BIG);

    ck_assert_int_eq(CTL_IN(bin, sizeof(bin) - 1, "write", id, "-"), 0);
    ck_assert_int_eq(io_read_exact(fd, got, sizeof(bin) - 1), 0);
    ck_assert_mem_eq(got, bin, sizeof(bin) - 1);
    ck_assert(!io_readable(fd, 100)); /* nothing more than was written */

    STEPS(S(2, "=", "=connctl: write: /nonexistent/f: No such file or directory\n",
            "write", "$1", "--file", "/nonexistent/f"),
          S(2, "=", "give exactly one of TEXT, -, --base64 B64, --file F", "write", "$1"),
          S(2, "=", NULL, "write", "$1", "text", "--base64", "AAH/"),
          S(1, "=",
            "=connctl: conn.write: params.data_base64: invalid base64 (code -32602)\n",
            "write", "$1", "--base64", "!!!"));
    close(fd);
}
END_TEST

START_TEST(test_connctl_close_sends_eof_and_abort_resets)
{
    char a[24], b[24];
    int fa, fb;

    start();
    fa = client("e", a);
    fb = client("e", b);
    V[0] = a;
    V[1] = b;
    STEPS(S(0, "=conn $1: closing\n", "=", "close", "$1"));
    ck_assert_int_eq(io_expect_eof(fa, 5000), 1);
    STEPS(S(0, "conn $2: ", "=", "abort", "$2"));
    ck_assert_int_eq(io_expect_eof(fb, 5000), -ECONNRESET);
    close(fa);
    close(fb);
}
END_TEST

START_TEST(test_connctl_connect_opens_an_outgoing_connection)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    char port[16], id[24];
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), fd;
    json_t *j;

    start();
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(lfd, 8), 0);
    getsockname(lfd, (struct sockaddr *)&sa, &len);
    snprintf(port, sizeof(port), "%d", ntohs(sa.sin_port));
    j = JCTL("connect", "127.0.0.1", port, "echo", "--family", "ipv4");
    snprintf(id, sizeof(id), "%" JSON_INTEGER_FORMAT, jint(j, "id"));
    json_decref(j);
    ck_assert(io_readable(lfd, 5000));
    ck_assert_int_ge(fd = accept(lfd, NULL, NULL), 0);
    echo_ok(fd, "outgoing"); /* echo.so answers on the connection connd opened */
    V[0] = port;
    V[1] = id;
    STEPS(S(0, "\nlistener:              -\nplugin:                echo\n", NULL, "show",
            "$2"),
          S(0, "\nremote:                127.0.0.1:$1\n", NULL, "show", "$2"),
          S(0, ": connecting\n", "=", "connect", "127.0.0.1", "$1", "echo"),
          S(1, "=", "(code -32003)\n", "connect", "127.0.0.1", "$1", "nosuch"),
          S(2, "=", "expected a port", "connect", "127.0.0.1", "99999", "echo"),
          S(2, "=", "expected one of any|ipv4|ipv6", "connect", "::1", "$1", "echo",
            "--family", "ipv5"));
    close(fd);
    close(lfd);
}
END_TEST

START_TEST(test_connctl_set_notify_and_setopt)
{
    char id[24];
    json_t *j, *so;
    int fd;

    start();
    fd = client("e", id);
    V[0] = id;
    echo_ok(fd, "before");
    STEPS(
        S(0, "=conn $1: handled by plugin discard\n", "=", "set-notify", "$1", "discard"),
        S(0, "NAME     ABI  CONNS  FILE\necho     1    0      ", "=", "plugins"),
        S(0, "\ndiscard  1    1      ", NULL, "plugins"),
        S(1, "=", "no plugin", "set-notify", "$1", "nosuch"));
    ck_assert_int_eq(io_write_all(fd, "after", 5), 0);
    ck_assert(!io_readable(fd, 300));
    STEPS(S(0, "=conn $1: nodelay=no keepalive_s=30 rcvbuf=65536\n", "=", "setopt", "$1",
            "--nodelay", "off", "--keepalive", "30", "--rcvbuf", "64k"),
          S(2, "=", "give at least one option", "setopt", "$1"),
          S(2, "=", "expected on or off", "setopt", "$1", "--nodelay", "maybe"));
    j = JCTL("show", id);
    so = json_object_get(j, "sockopts");
    ck_assert(json_is_false(json_object_get(so, "nodelay")));
    ck_assert(json_is_true(json_object_get(so, "keepalive")));
    json_decref(j);
    close(fd);
}
END_TEST

/* ---- listeners, plugins, bulk --------------------------------------------------- */

START_TEST(test_connctl_listen_listeners_pause_and_unlisten)
{
    int port, fd;
    json_t *j;

    start();
    j = JCTL("listen", "x", "127.0.0.1:0", "echo", "--limit", "3");
    port = atoi(strrchr(json_string_value(json_object_get(j, "local")), ':') + 1);
    ck_assert_int_eq(jint(j, "limit"), 3);
    json_decref(j);
    ck_assert_int_ge(fd = tcp_connect("127.0.0.1", port), 0);
    echo_ok(fd, "new listener");
    close(fd);
    STEPS(
        S(0, "  PLUGIN   LIMIT  ACTIVE  ACCEPTED  PAUSED\ne     127.0.0.1:", "=",
          "listeners"),
        S(0, "\nx     127.0.0.1:", NULL, "listeners"),
        S(0, "  echo     3      ", NULL, "listeners"),
        S(0, "=listener x: paused (ctl)\n", "=", "pause", "x"),
        S(0, "  ctl\n", NULL, "listeners"),
        S(0, "=listener x: accepting\n", "=", "resume", "x"),
        S(0, "=listener x: removed, 0 connections stay\n", "=", "unlisten", "x"),
        S(1, "=", "connctl: listener.remove: ", "unlisten", "x"),
        S(1, "=", "already exists", "listen", "e", "127.0.0.1:0", "echo"),
        S(2, "=", "brackets", "listen", "v6b", "::1:0", "echo"),
        S(0, "listener v6: listening on [::1]:", "=", "listen", "v6", "[::1]:0", "echo"));
    ck_assert_int_lt(tcp_connect("127.0.0.1", port), 0);
    ck_assert_int_ge(fd = tcp_connect("::1", atoi(strrchr(OUT, ':') + 1)), 0);
    echo_ok(fd, "six");
    close(fd);
    ck_assert_int_eq(CTL("listeners"), 0);
    assert_aligned(OUT, 3);
}
END_TEST

START_TEST(test_connctl_load_adds_a_plugin)
{
    char id[24];
    json_t *j;
    int fd;

    start();
    fd = client("e", id);
    V[0] = id;
    STEPS(S(0, "plugin discard2: loaded ", "=", "load", "discard2", "discard.so",
            "--config", "{}"),
          S(0, "\ndiscard2  1    0      ", NULL, "plugins"),
          S(0, "plugin discard2", NULL, "set-notify", "$1", "discard2"),
          S(1, "=", "connctl: plugin.load: ", "load", "nope", "nosuch.so"),
          S(2, "=", "expected a JSON object", "load", "x", "discard.so", "--config",
            "{no"));
    j = JCTL("plugins");
    ck_assert_int_eq(json_array_size(j), 3);
    json_decref(j);
    close(fd);
}
END_TEST

START_TEST(test_connctl_select_dry_run_changes_nothing_then_closes)
{
    char a[24], b[24], c[24];
    int fa, fb, fc;
    json_t *j;

    start();
    fa = client("e", a);
    fb = client("e", b);
    fc = client("d", c);
    V[0] = a;
    V[1] = b;
    V[2] = c;
    STEPS(S(0, "=matched 2 connections: $1 $2\ndry run: nothing changed\n", "=", "close",
            "--listener", "e", "--dry-run"),
          S(0, "=matched 0 connections\ndry run: nothing changed\n", "=", "close",
            "--idle-gt", "1h", "--dry-run"));
    echo_ok(fa, "still");
    echo_ok(fb, "here");
    j = JCTL("close", "--plugin", "echo", "--remote-prefix", "127.0.0.1:", "--dry-run");
    ck_assert_int_eq(jint(j, "count"), 2);
    ck_assert(json_is_true(json_object_get(j, "dry_run")));
    json_decref(j);
    STEPS(S(0, "=matched 2 connections: $1 $2 (closing)\n", "=", "close", "--listener",
            "e"),
          S(0, "=matched 1 connection: $3 (muted)\n", "=", "mute", "--plugin", "discard"),
          S(2, "=", "not both", "close", "$3", "--listener", "d"),
          S(2, "=", "missing ID or a selector option", "abort"),
          S(2, "=", "expected milliseconds", "close", "--idle-gt", "soon"));
    ck_assert_int_eq(io_expect_eof(fa, 5000), 1);
    ck_assert_int_eq(io_expect_eof(fb, 5000), 1);
    close(fa);
    close(fb);
    close(fc);
}
END_TEST

/* ---- watch -------------------------------------------------------------------- */

START_TEST(test_connctl_watch_prints_events_until_interrupted)
{
    struct run w = {0}, wj = {0};
    char id[24], needle[64];
    const char *line;

    start();
    run_spawn(&w, NULL, 0, NULL, (const char *const[]){"-s", D.ctl_path, "watch", NULL});
    run_spawn(&wj, NULL, 0, NULL,
              (const char *const[]){"-s", D.ctl_path, "--json", "watch", "--type",
                                    "closed", NULL});
    ck_assert(run_wait_for(&w, 1, "watching events", 5000));
    ck_assert(run_wait_for(&wj, 1, "watching events", 5000));
    close(client("e", id));
    snprintf(needle, sizeof(needle), " closed id=%s ", id);
    ck_assert_msg(run_wait_for(&w, 0, needle, 5000), "%s", w.buf[0]);
    ck_assert(run_wait_for(&wj, 0, "\n", 5000));
    kill(w.pid, SIGINT);
    kill(wj.pid, SIGTERM);
    ck_assert_int_eq(run_finish(&w, 5000), 0);
    ck_assert_int_eq(run_finish(&wj, 5000), 0);
    snprintf(needle, sizeof(needle), " accepted id=%s plugin=echo listener=e\n", id);
    HAS(w.buf[0], needle);
    /* --json: every line is one event's params, and only closed ones. */
    for (line = wj.buf[0]; *line; line = strchr(line, '\n') + 1) {
        json_t *ev = json_loadb(line, strcspn(line, "\n"), 0, NULL);
        ck_assert_msg(json_is_object(ev), "%s", line);
        ck_assert_str_eq(json_string_value(json_object_get(ev, "type")), "closed");
        ck_assert_int_eq(jint(ev, "id"), atoi(id));
        json_decref(ev);
    }
    run_free(&w);
    run_free(&wj);
}
END_TEST

START_TEST(test_connctl_watch_exits_3_when_connd_goes_away)
{
    struct run w = {0};

    start();
    run_spawn(&w, NULL, 0, NULL, (const char *const[]){"-s", D.ctl_path, "watch", NULL});
    ck_assert(run_wait_for(&w, 1, "watching events", 5000));
    ck_assert_int_eq(daemon_stop(&D, SIGTERM, 5000), 0);
    ck_assert_int_eq(run_finish(&w, 5000), 3);
    HAS(w.buf[1], "connctl: watch: connd closed the connection");
    run_free(&w);
}
END_TEST

/* ---- daemon, exit codes, socket choice, help ------------------------------------ */

START_TEST(test_connctl_methods_reload_and_shutdown)
{
    start();
    STEPS(S(0, "\nconn.write ", "=", "methods"),
          S(0, " {id, data | data_base64} ", NULL, "methods"),
          S(0, "connd: reloaded ", "=", "reload"),
          S(0, "=connd: stopping, 0 connections, drain timeout 1s\n", "=", "shutdown",
            "--timeout", "1s"));
    ck_assert_int_eq(daemon_stop(&D, 0, 5000), 0);
}
END_TEST

START_TEST(test_connctl_error_reply_exits_1_with_the_message_on_stderr)
{
    start();
    STEPS(S(1, "=", "=connctl: conn.show: no such connection: 999 (code -32001)\n",
            "show", "999"),
          S(1, "=", "conn.close: no such connection: 999", "--json", "close", "999"),
          S(1, "=", "unknown event type (code -32602)", "watch", "--type", "nosuch"));
}
END_TEST

/* Usage errors come before any connection: the socket does not exist. */
START_TEST(test_connctl_usage_errors_exit_2)
{
    V[0] = "/nonexistent/connd.sock";
    STEPS(S(2, "=", "connctl: unknown command 'bogus'\nvalid commands: status list ",
            "-s", "$1", "bogus"),
          S(2, "=", "did you mean: list?\n", "-s", "$1", "lsit"),
          S(2, "=", "ambiguous command 'li', it could be: list listeners listen\n", "-s",
            "$1", "li"),
          S(2, "=", "connctl: show: missing ID\nusage: connctl show ID\ntry ", "-s", "$1",
            "show"),
          S(2, "=", "expected a connection id", "-s", "$1", "show", "abc"),
          S(2, "=", "unexpected argument '2'", "-s", "$1", "show", "1", "2"),
          S(2, "=", "connctl: list: unknown option '--bogus'\n", "-s", "$1", "list",
            "--bogus"),
          S(2, "=", "--json is a global option", "-s", "$1", "list", "--json"),
          S(2, "=", "--listener needs a value", "-s", "$1", "list", "--listener"),
          S(2, "=", "connctl: unknown option '--bogus'", "-s", "$1", "--bogus", "status"),
          S(2, "=", "unknown command 'bogus'", "-s", "$1", "help", "bogus"),
          S(2, "=", "missing command", "-s", "$1"));
}
END_TEST

/* A Unix socket in a fresh directory that the test serves itself. */
static int fake_server(char *path, size_t len)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    char dir[] = "/tmp/connctl-test-XXXXXX";
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, len, "%s/s.sock", dir);
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    ck_assert_int_eq(listen(fd, 4), 0);
    return fd;
}

static void fake_server_free(int fd, const char *path)
{
    char dir[128];

    close(fd);
    unlink(path);
    snprintf(dir, sizeof(dir), "%.*s", (int)(strrchr(path, '/') - path), path);
    rmdir(dir);
}

START_TEST(test_connctl_unreachable_exits_3)
{
    char path[128], buf[256];
    uint64_t t0 = now_ms();
    int lfd, fd;

    V[0] = "/nonexistent/c.sock";
    STEPS(S(3, "=", "=connctl: status: cannot connect to $1: No such file or directory\n",
            "-s", "$1", "status"));

    /* Nobody answers: bounded by CONNCTL_TIMEOUT. */
    lfd = fake_server(path, sizeof(path));
    run_spawn(&R, NULL, 0, (const char *const[]){"CONNCTL_TIMEOUT=0.5", NULL},
              (const char *const[]){"-s", path, "list", NULL});
    ck_assert_int_eq(run_finish(&R, 5000), 3);
    ck_assert_uint_lt(now_ms() - t0, 3000);
    HAS(ERR, "connctl: conn.list: no reply from connd within 0.5 s");
    fake_server_free(lfd, path);

    /* The connection drops before the reply, or garbage comes back. */
    for (int i = 0; i < 2; i++) {
        lfd = fake_server(path, sizeof(path));
        run_spawn(&R, NULL, 0, NULL, (const char *const[]){"-s", path, "status", NULL});
        ck_assert(io_readable(lfd, 5000));
        ck_assert_int_ge(fd = accept(lfd, NULL, NULL), 0);
        ck_assert(io_readable(fd, 5000));
        ck_assert_int_gt(read(fd, buf, sizeof(buf)), 0);
        if (i == 1)
            ck_assert_int_eq(write(fd, "garbage\n", 8), 8);
        close(fd);
        ck_assert_int_eq(run_finish(&R, 5000), 3);
        HAS(ERR, i ? "not a JSON-RPC message" : "connd closed the connection");
        fake_server_free(lfd, path);
    }
}
END_TEST

START_TEST(test_connctl_socket_from_env_then_default)
{
    char env[160], pid[32];

    start();
    snprintf(env, sizeof(env), "CONND_SOCKET=%s", D.ctl_path);
    snprintf(pid, sizeof(pid), "pid:           %d\n", (int)D.pid);
    run_spawn(&R, NULL, 0, (const char *const[]){env, NULL},
              (const char *const[]){"status", NULL});
    ck_assert_int_eq(run_finish(&R, 5000), 0);
    HAS(OUT, pid);
    /* -s wins over the environment. */
    run_spawn(&R, NULL, 0,
              (const char *const[]){"CONND_SOCKET=/nonexistent/x.sock", NULL},
              (const char *const[]){"--socket", D.ctl_path, "status", NULL});
    ck_assert_int_eq(run_finish(&R, 5000), 0);
    HAS(OUT, pid);
    run_spawn(&R, NULL, 0,
              (const char *const[]){"CONND_SOCKET=/nonexistent/x.sock", NULL},
              (const char *const[]){"status", NULL});
    ck_assert_int_eq(run_finish(&R, 5000), 3);
    HAS(ERR, "cannot connect to /nonexistent/x.sock");
    /* Neither: the daemon's default path. */
    run_spawn(&R, NULL, 0, NULL, (const char *const[]){"status", NULL});
    if (run_finish(&R, 5000) == 3)
        HAS(ERR, "cannot connect to /run/connd/control.sock");
}
END_TEST

START_TEST(test_connctl_help_for_the_tool_and_each_command)
{
    static const char *const words[] = {
        "status", "list",     "show",     "mute",       "unmute",  "write",
        "close",  "abort",    "connect",  "set-notify", "setopt",  "listeners",
        "listen", "unlisten", "pause",    "resume",     "plugins", "load",
        "watch",  "reload",   "shutdown", "methods"};
    char needle[32];

    V[0] = "/nonexistent/connd.sock";
    STEPS(S(0, "usage: connctl [-s SOCKET] [--json] COMMAND [ARGS]\n", "=", "--help"),
          S(0, "exit status: 0 success, 1 ", "=", "help"),
          S(0, "  --dry-run          print the matching ids, change nothing\n", "=",
            "close", "--help"),
          S(0, "\nmethod: conn.close\n", "=", "-s", "$1", "help", "close"),
          S(0, "connctl ", "=", "--version"));
    ck_assert_int_eq(CTL("--help"), 0);
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        snprintf(needle, sizeof(needle), "\n  %s ", words[i]);
        HAS(OUT, needle);
    }
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        ck_assert_int_eq(CTL(words[i], "--help"), 0);
        snprintf(needle, sizeof(needle), "usage: connctl %s", words[i]);
        HAS(OUT, needle);
    }
}
END_TEST

static Suite *connctl_suite(void)
{
    const struct {
        const char *tcase;
        const TTest *test;
    } tests[] = {
        {"output", test_connctl_status_list_and_show_print_for_people_and_json},
        {"output", test_connctl_list_reads_a_long_reply_in_full},
        {"conn", test_connctl_mute_stops_the_echo_and_unmute_resumes_it},
        {"conn", test_connctl_write_text_base64_file_and_stdin_arrive_byte_exact},
        {"conn", test_connctl_close_sends_eof_and_abort_resets},
        {"conn", test_connctl_connect_opens_an_outgoing_connection},
        {"conn", test_connctl_set_notify_and_setopt},
        {"listener", test_connctl_listen_listeners_pause_and_unlisten},
        {"plugin", test_connctl_load_adds_a_plugin},
        {"select", test_connctl_select_dry_run_changes_nothing_then_closes},
        {"watch", test_connctl_watch_prints_events_until_interrupted},
        {"watch", test_connctl_watch_exits_3_when_connd_goes_away},
        {"daemon", test_connctl_methods_reload_and_shutdown},
        {"exit_codes", test_connctl_error_reply_exits_1_with_the_message_on_stderr},
        {"exit_codes", test_connctl_usage_errors_exit_2},
        {"exit_codes", test_connctl_unreachable_exits_3},
        {"socket", test_connctl_socket_from_env_then_default},
        {"help", test_connctl_help_for_the_tool_and_each_command},
    };
    Suite *s = suite_create("connctl");
    TCase *tc = NULL;

    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        if (!tc || strcmp(tests[i].tcase, tests[i - 1].tcase) != 0) {
            tc = tcase_create(tests[i].tcase);
            tcase_add_checked_fixture(tc, NULL, teardown);
            tcase_set_timeout(tc, 30);
            suite_add_tcase(s, tc);
        }
        tcase_add_test(tc, tests[i].test);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(connctl_suite());
    int failed;

    signal(SIGPIPE, SIG_IGN);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
