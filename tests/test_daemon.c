/*
 * test_daemon.c: connd's command line, config errors, start-up failures,
 * signals and log format, end to end on the real binary (daemon/main.c,
 * daemon/loop.c, daemon/log.c). "cmdline" covers the options of SPEC
 * section 2 and their exit codes; "config" --check-config and bad configs;
 * "startup" ports in use, IPv6 and the listener hooks; "signals" SIGTERM
 * and SIGINT; "log" the plain and journal line formats.
 *
 * Tests that need connd's stdout or a chosen environment spawn it with
 * run_connd() below; the others use the harness.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

extern char **environ;

/* Under ASan+UBSan a leak or an error report exits 1, like a refused
 * config: the report in the log tells them apart. */
#define assert_no_sanitizer(log)                                                         \
    ck_assert_msg(!strstr((log), "Sanitizer") && !strstr((log), "runtime error"),        \
                  "sanitizer report:\n%s", (log))

/* ---- running connd with captured stdout and a chosen environment -------- */

struct buf {
    char *p;
    size_t n, cap;
};

static void buf_add(struct buf *b, const char *data, size_t len)
{
    if (b->n + len + 1 > b->cap) {
        b->cap = (b->n + len + 1) * 2;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    memcpy(b->p + b->n, data, len);
    b->n += len;
    b->p[b->n] = '\0';
}

struct run {
    int code; /* exit code; -1 when killed by a signal or the timeout */
    int sig;  /* the signal that ended it, or 0 */
    char *out, *err;
};

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof(*r));
}

/* Read one fd into b; false on EOF or error. */
static bool pump(int fd, struct buf *b)
{
    char chunk[4096];
    ssize_t n = read(fd, chunk, sizeof(chunk));

    if (n > 0) {
        buf_add(b, chunk, (size_t)n);
        return true;
    }
    return n < 0 && (errno == EAGAIN || errno == EINTR);
}

#define JOURNAL_NONE NULL /* JOURNAL_STREAM removed from the environment */
#define JOURNAL_PIPE ""   /* set to dev:ino of connd's stderr pipe */

/*
 * Run connd with args (argv[0] is added; NULL-terminated) until it exits
 * or timeout_ms passes (then it is killed). `journal` is JOURNAL_NONE,
 * JOURNAL_PIPE, or a literal JOURNAL_STREAM value. When stop_on is not
 * NULL, stop_sig is sent once stderr contains it.
 */
static void run_connd(const char *const *args, const char *journal, const char *stop_on,
                      int stop_sig, int timeout_ms, struct run *r)
{
    const char *argv[32];
    char **envp, js[96];
    int outp[2], errp[2], argc = 0, n_env = 0, st;
    struct buf out = {0}, err = {0};
    bool out_open = true, err_open = true, stopped = false, exited = false;
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    struct stat pst;
    pid_t pid;

    memset(r, 0, sizeof(*r));
    buf_add(&out, "", 0);
    buf_add(&err, "", 0);
    argv[argc++] = CONND_BIN;
    for (int i = 0; args[i] && argc < 31; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;

    ck_assert_int_eq(pipe2(outp, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(errp, O_CLOEXEC), 0);
    ck_assert_int_eq(fstat(errp[1], &pst), 0);
    for (char **e = environ; *e; e++)
        n_env++;
    envp = calloc((size_t)n_env + 2, sizeof(*envp));
    ck_assert_ptr_nonnull(envp);
    n_env = 0;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "JOURNAL_STREAM=", 15) != 0)
            envp[n_env++] = *e;
    if (journal) {
        if (journal[0] == '\0')
            snprintf(js, sizeof(js), "JOURNAL_STREAM=%llu:%llu",
                     (unsigned long long)pst.st_dev, (unsigned long long)pst.st_ino);
        else
            snprintf(js, sizeof(js), "JOURNAL_STREAM=%s", journal);
        envp[n_env++] = js;
    }
    envp[n_env] = NULL;

    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* Never outlive a test that failed half-way. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(outp[1], STDOUT_FILENO);
        dup2(errp[1], STDERR_FILENO);
        execve(CONND_BIN, (char *const *)argv, envp);
        _exit(127);
    }
    free(envp);
    close(outp[1]);
    close(errp[1]);
    fcntl(outp[0], F_SETFL, O_NONBLOCK);
    fcntl(errp[0], F_SETFL, O_NONBLOCK);

    while (now_ms() < end && (out_open || err_open || !exited)) {
        struct pollfd pfd[2] = {{.fd = out_open ? outp[0] : -1, .events = POLLIN},
                                {.fd = err_open ? errp[0] : -1, .events = POLLIN}};
        if (!exited && waitpid(pid, &st, WNOHANG) == pid)
            exited = true;
        if (!out_open && !err_open) {
            if (!exited)
                usleep(10000);
            continue;
        }
        if (poll(pfd, 2, 20) > 0) {
            if (pfd[0].revents && !pump(outp[0], &out))
                out_open = false;
            if (pfd[1].revents && !pump(errp[0], &err))
                err_open = false;
        }
        if (stop_on && !stopped && strstr(err.p, stop_on)) {
            kill(pid, stop_sig);
            stopped = true;
        }
    }
    if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        r->code = -1;
        r->sig = SIGKILL;
        buf_add(&err, "\n[test: connd killed after the timeout]\n", 40);
    } else if (WIFEXITED(st)) {
        r->code = WEXITSTATUS(st);
    } else {
        r->code = -1;
        r->sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    }
    close(outp[0]);
    close(errp[0]);
    r->out = out.p;
    r->err = err.p;
    assert_no_sanitizer(r->err);
}

#define RUN(r, ...)                                                                      \
    do {                                                                                 \
        const char *const run_args_[] = {__VA_ARGS__, NULL};                             \
        run_connd(run_args_, JOURNAL_NONE, NULL, 0, 10000, (r));                         \
    } while (0)

/* ---- config files for run_connd ----------------------------------------- */

struct tmpcfg {
    char dir[96];
    char path[128];
};

/* Config dirs live under one root per TCase, made and removed in the
 * parent process (unchecked fixture), so that a failing test does not
 * leave its files behind. */
static char tmproot[64];

static void tmproot_setup(void)
{
    snprintf(tmproot, sizeof(tmproot), "/tmp/test_daemon_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmproot));
}

static void tmproot_teardown(void)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmproot);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmproot);
}

/* Writes json to a new dir under tmproot, replacing "@PLUGINS@",
 * "@TPLUGINS@" and "@DIR@" as the harness does. */
static void cfg_write(struct tmpcfg *t, const char *json)
{
    static const char *const keys[] = {"@PLUGINS@", "@TPLUGINS@", "@DIR@"};
    const char *vals[] = {CONND_PLUGIN_BUILD_DIR, CONND_TEST_PLUGIN_DIR, t->dir};
    FILE *f;

    snprintf(t->dir, sizeof(t->dir), "%s/cfg_XXXXXX", tmproot);
    ck_assert_ptr_nonnull(mkdtemp(t->dir));
    snprintf(t->path, sizeof(t->path), "%s/connd.json", t->dir);
    f = fopen(t->path, "w");
    ck_assert_ptr_nonnull(f);
    while (*json) {
        size_t i;
        for (i = 0; i < 3; i++) {
            if (strncmp(json, keys[i], strlen(keys[i])) == 0) {
                fputs(vals[i], f);
                json += strlen(keys[i]);
                break;
            }
        }
        if (i == 3)
            fputc(*json++, f);
    }
    fclose(f);
}

static void cfg_remove(struct tmpcfg *t)
{
    char cmd[160];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", t->dir);
}

/* ---- small helpers -------------------------------------------------------- */

#define assert_has(text, needle)                                                         \
    ck_assert_msg(strstr((text), (needle)) != NULL, "\"%s\" not in:\n%s", (needle),      \
                  (text))

/* The number of lines of text containing every one of the needles. */
static int count_lines_with(const char *text, const char *a, const char *b, const char *c)
{
    char *copy = strdup(text), *save = NULL;
    int n = 0;

    ck_assert_ptr_nonnull(copy);
    for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
        if (strstr(l, a) && (!b || strstr(l, b)) && (!c || strstr(l, c)))
            n++;
    free(copy);
    return n;
}

/* Whether `opt` appears in text as a whole option word ("-c" is not found
 * inside "--check-config"). */
static bool has_option(const char *text, const char *opt)
{
    size_t len = strlen(opt);

    for (const char *p = text; (p = strstr(p, opt)) != NULL; p += len) {
        char before = p == text ? ' ' : p[-1], after = p[len];
        if (before != '-' && !(before >= 'a' && before <= 'z') &&
            !(after == '-' || (after >= 'a' && after <= 'z')))
            return true;
    }
    return false;
}

/* A socket listening on 127.0.0.1 on an ephemeral port; *port is it. */
static int busy_port(int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(fd, 8), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

/* Harness daemons inherit the test's stdout: one left running after a
 * failed assertion would keep ctest waiting. The test's daemon is killed
 * before any assertion about it fails. */
static struct daemon *live;

#define D_ASSERT(cond, ...)                                                              \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            if (live) {                                                                  \
                daemon_drain_log(live, 50);                                              \
                fprintf(stderr, "connd log:\n%s\n", live->log);                          \
                daemon_free(live);                                                       \
                live = NULL;                                                             \
            }                                                                            \
            ck_abort_msg(__VA_ARGS__);                                                   \
        }                                                                                \
    } while (0)

static void start(struct daemon *d, const char *json, const char *const *extra)
{
    int rc = daemon_start(d, json, extra);

    live = d;
    D_ASSERT(rc == 0, "connd did not become ready");
}

/* testplug "tp" serving listener L1 on 127.0.0.1, an ephemeral port. */
#define TP_CONFIG(host)                                                                  \
    "{\"control\":{\"path\":\"@DIR@/ctl.sock\"},\"plugin_dir\":\"@TPLUGINS@\","          \
    "\"plugins\":[{\"name\":\"tp\",\"file\":\"testplug.so\",\"config\":{\"echo\":true}}" \
    "],"                                                                                 \
    "\"listeners\":[{\"name\":\"L1\",\"host\":\"" host                                   \
    "\",\"port\":0,\"plugin\":\"tp\"}]}"

/* ---- "cmdline" ----------------------------------------------------------- */

START_TEST(test_daemon_version_prints_name_and_version_and_exits_0)
{
    struct run r;

    RUN(&r, "--version");
    ck_assert_msg(r.code == 0, "exit %d, stderr: %s", r.code, r.err);
    ck_assert_msg(strncmp(r.out, "connd ", 6) == 0, "stdout: \"%s\"", r.out);
    assert_has(r.out, "connd " CONND_VERSION);
    run_free(&r);
}
END_TEST

START_TEST(test_daemon_help_lists_every_option_and_exits_0)
{
    static const char *const spec_options[] = {
        "-c", "-s", "--check-config", "--log-level", "--version", "--help"};
    struct run r;

    RUN(&r, "--help");
    ck_assert_msg(r.code == 0, "exit %d, stderr: %s", r.code, r.err);
    for (size_t i = 0; i < sizeof(spec_options) / sizeof(spec_options[0]); i++)
        ck_assert_msg(has_option(r.out, spec_options[i]), "--help does not list %s:\n%s",
                      spec_options[i], r.out);
    ck_assert_msg(!has_option(r.out, "--frobnicate"), "has_option is broken");
    run_free(&r);
}
END_TEST

START_TEST(test_daemon_unknown_option_exits_2_naming_it)
{
    struct run r;

    RUN(&r, "--frobnicate");
    ck_assert_msg(r.code == 2, "exit %d (signal %d), stderr: %s", r.code, r.sig, r.err);
    assert_has(r.err, "frobnicate");
    run_free(&r);

    RUN(&r, "-Z");
    ck_assert_msg(r.code == 2, "exit %d (signal %d), stderr: %s", r.code, r.sig, r.err);
    run_free(&r);
}
END_TEST

START_TEST(test_daemon_stray_argument_exits_2_naming_it)
{
    struct run r;

    RUN(&r, "--check-config", "-c", "/dev/null", "stray-word");
    ck_assert_msg(r.code == 2, "exit %d (signal %d), stderr: %s", r.code, r.sig, r.err);
    assert_has(r.err, "stray-word");
    run_free(&r);
}
END_TEST

START_TEST(test_daemon_unknown_log_level_exits_2_naming_it)
{
    struct run r;
    struct tmpcfg t;

    cfg_write(&t, "{}");
    RUN(&r, "-c", t.path, "--check-config", "--log-level", "nonsense");
    ck_assert_msg(r.code == 2, "exit %d (signal %d), stderr: %s", r.code, r.sig, r.err);
    assert_has(r.err, "nonsense");
    run_free(&r);

    /* The same command with a real level passes. */
    RUN(&r, "-c", t.path, "--check-config", "--log-level", "debug");
    ck_assert_msg(r.code == 0, "exit %d, stderr: %s", r.code, r.err);
    run_free(&r);
    cfg_remove(&t);
}
END_TEST

START_TEST(test_daemon_control_socket_option_is_accepted)
{
    struct daemon d;
    char path[128];
    const char *extra[] = {"-s", path, NULL};
    struct run r;
    struct tmpcfg t;
    int rc;

    cfg_write(&t, "{\"control\":{\"path\":\"@DIR@/other.sock\"}}");
    snprintf(path, sizeof(path), "%s/ctl.sock", t.dir);
    RUN(&r, "-c", t.path, "-s", path, "--check-config");
    ck_assert_msg(r.code == 0, "exit %d, stderr: %s", r.code, r.err);
    assert_has(r.out, "ok");
    run_free(&r);

    /* And a daemon started with it runs and stops cleanly. */
    start(&d, TP_CONFIG("127.0.0.1"), extra);
    rc = daemon_stop(&d, SIGTERM, 10000);
    D_ASSERT(rc == 0, "exit %d after SIGTERM", rc);
    daemon_free(&d);
    live = NULL;
    cfg_remove(&t);
}
END_TEST

/* ---- "config" ------------------------------------------------------------ */

/* --check-config validates without binding: a port that is taken does not
 * matter. */
START_TEST(test_daemon_check_config_prints_ok_without_binding)
{
    char json[1024];
    struct tmpcfg t;
    struct run r;
    int port, fd = busy_port(&port);

    snprintf(json, sizeof(json),
             "{\"control\":{\"path\":\"@DIR@/ctl.sock\"},\"plugin_dir\":\"@TPLUGINS@\","
             "\"plugins\":[{\"name\":\"tp\",\"file\":\"testplug.so\"}],"
             "\"listeners\":[{\"name\":\"busy\",\"host\":\"127.0.0.1\",\"port\":%d,"
             "\"plugin\":\"tp\"}]}",
             port);
    cfg_write(&t, json);
    RUN(&r, "-c", t.path, "--check-config");
    close(fd);
    ck_assert_msg(r.code == 0, "exit %d (signal %d), stderr: %s", r.code, r.sig, r.err);
    assert_has(r.out, "ok");
    assert_has(r.out, t.path);
    ck_assert_msg(!strstr(r.err, "listening") && !strstr(r.err, "Address already in use"),
                  "--check-config bound a listener:\n%s", r.err);
    ck_assert_msg(!strstr(r.err, "err:"), "--check-config logged an error:\n%s", r.err);
    run_free(&r);
    cfg_remove(&t);
}
END_TEST

struct bad_config {
    const char *what;
    const char *json; /* NULL: -c names a missing file */
    const char *expect;
};

#define BC_PLUGINS                                                                       \
    "\"plugin_dir\":\"@TPLUGINS@\",\"plugins\":[{\"name\":\"tp\",\"file\":\"testplug."   \
    "so\"}]"
#define BC_L "\"name\":\"l\",\"host\":\"127.0.0.1\",\"plugin\":\"tp\""

static const struct bad_config bad_configs[] = {
    {"unknown key",
     "{" BC_PLUGINS ",\"listeners\":[{" BC_L ",\"port\":0,\"frobnicate\":1}]}",
     "listeners[0].frobnicate: unknown key"},
    {"wrong type", "{" BC_PLUGINS ",\"listeners\":[{" BC_L ",\"port\":true}]}",
     "listeners[0].port: expected string or integer"},
    {"wrong type at top", "{\"shutdown_timeout_ms\":\"soon\"}", "shutdown_timeout_ms"},
    {"bad port", "{" BC_PLUGINS ",\"listeners\":[{" BC_L ",\"port\":70000}]}",
     "listeners[0].port"},
    {"unknown service",
     "{" BC_PLUGINS ",\"listeners\":[{" BC_L ",\"port\":\"nosuchsvc\"}]}",
     "listeners[0].port"},
    {"dangling plugin",
     "{" BC_PLUGINS ",\"listeners\":[{\"name\":\"l\",\"host\":\"127.0.0.1\",\"port\":0,"
     "\"plugin\":\"ghost\"}]}",
     "listeners[0].plugin"},
    {"invalid JSON", "{\"plugins\": [", "line 1"},
    {"missing file", NULL, "No such file"},
};

/* Each bad config fails --check-config and a real start alike: exit 1 and
 * one err line naming the key path. */
START_TEST(test_daemon_bad_config_exits_1_naming_the_key_path)
{
    const struct bad_config *bc = &bad_configs[_i];
    const char *modes[2] = {"--check-config", NULL};
    const char *missing = "/nonexistent/connd-test/connd.json";
    char *log = NULL;

    for (int m = 0; m < 2; m++) {
        const char *extra[] = {"-c", missing, modes[m], NULL};
        const char *cfg_path = bc->json ? "/connd.json" : missing;
        /* For the missing file, -c after the harness's own -c wins. */
        int rc =
            daemon_run(bc->json ? bc->json : "{}",
                       bc->json ? (const char *[]){modes[m], NULL} : extra, 10000, &log);

        ck_assert_ptr_nonnull(log);
        assert_no_sanitizer(log);
        ck_assert_msg(rc == 1, "%s (%s): exit %d, log:\n%s", bc->what,
                      m == 0 ? "--check-config" : "start", rc, log);
        ck_assert_msg(count_lines_with(log, "err: ", NULL, NULL) == 1,
                      "%s: not exactly one err line:\n%s", bc->what, log);
        ck_assert_msg(count_lines_with(log, "err: ", bc->expect, cfg_path) == 1,
                      "%s: the err line does not name \"%s\" and the file:\n%s", bc->what,
                      bc->expect, log);
        ck_assert_msg(!strstr(log, "notice: ready:"), "%s: connd started:\n%s", bc->what,
                      log);
        free(log);
        log = NULL;
    }
}
END_TEST

/* ---- "startup" ----------------------------------------------------------- */

START_TEST(test_daemon_port_in_use_exits_1_naming_listener_and_fires_not_listening)
{
    char json[1024], *log = NULL;
    int port, fd = busy_port(&port), rc;

    snprintf(json, sizeof(json),
             "{\"control\":{\"path\":\"@DIR@/ctl.sock\"},\"plugin_dir\":\"@TPLUGINS@\","
             "\"plugins\":[{\"name\":\"tp\",\"file\":\"testplug.so\"}],"
             "\"listeners\":[{\"name\":\"busy\",\"host\":\"127.0.0.1\",\"port\":%d,"
             "\"plugin\":\"tp\"}]}",
             port);
    rc = daemon_run(json, NULL, 10000, &log);
    close(fd);
    ck_assert_ptr_nonnull(log);
    assert_no_sanitizer(log);
    ck_assert_msg(rc == 1, "exit %d with port %d in use; log:\n%s", rc, port, log);
    ck_assert_msg(
        count_lines_with(log, "err: ", "listener busy", "Address already in use") == 1,
        "no err line names listener busy and the error:\n%s", log);
    assert_has(log, "plugin tp: not_listening busy");
    ck_assert_msg(!strstr(log, "plugin tp: listening busy"), "listening fired:\n%s", log);
    ck_assert_msg(!strstr(log, "notice: ready:"), "connd started:\n%s", log);
    free(log);
}
END_TEST

START_TEST(test_daemon_listener_on_ipv6_loopback_echoes)
{
    static const char msg[] = "hello over ::1";
    char back[sizeof(msg)] = "";
    struct daemon d;
    int port, fd, wr = -1, rd = -1, rc;

    start(&d, TP_CONFIG("::1"), NULL);
    port = daemon_port(&d, "L1");
    D_ASSERT(port > 0, "no port for L1");
    D_ASSERT(strstr(d.log, "listening on [::1]:"), "L1 not on [::1]");
    fd = tcp_connect("::1", port);
    D_ASSERT(fd >= 0, "cannot connect to [::1]:%d", port);
    wr = io_write_all(fd, msg, sizeof(msg) - 1);
    if (wr == 0)
        rd = io_read_exact(fd, back, sizeof(msg) - 1);
    close(fd);
    D_ASSERT(wr == 0 && rd == 0, "write %d read %d", wr, rd);
    D_ASSERT(memcmp(back, msg, sizeof(msg) - 1) == 0, "echoed \"%s\"", back);
    rc = daemon_stop(&d, SIGTERM, 10000);
    D_ASSERT(rc == 0, "exit %d after SIGTERM", rc);
    daemon_free(&d);
    live = NULL;
}
END_TEST

START_TEST(test_daemon_listener_hooks_fire_on_start_and_sigterm)
{
    struct daemon d;
    int rc;

    start(&d, TP_CONFIG("127.0.0.1"), NULL);
    /* The hook fires before "ready", which daemon_start() waited for. */
    daemon_drain_log(&d, 100);
    D_ASSERT(daemon_count_log(&d, "plugin tp: listening L1") == 1, "no listening hook");
    D_ASSERT(daemon_count_log(&d, "listener_closed") == 0, "listener_closed before stop");
    rc = daemon_stop(&d, SIGTERM, 10000);
    D_ASSERT(rc == 0, "exit %d after SIGTERM", rc);
    D_ASSERT(daemon_count_log(&d, "plugin tp: listening L1") == 1, "listening not once");
    D_ASSERT(daemon_count_log(&d, "plugin tp: listener_closed L1") == 1,
             "listener_closed not once");
    D_ASSERT(strstr(d.log, "listening L1") < strstr(d.log, "listener_closed L1"),
             "hooks out of order");
    daemon_free(&d);
    live = NULL;
}
END_TEST

/* ---- "signals" ----------------------------------------------------------- */

static void stop_with(int sig, const char *name)
{
    struct daemon d;
    int rc, fd, eof;

    start(&d, TP_CONFIG("127.0.0.1"), NULL);
    /* With a connection open, so that there is something to close. */
    fd = tcp_connect("127.0.0.1", daemon_port(&d, "L1"));
    D_ASSERT(fd >= 0, "cannot connect to L1");
    D_ASSERT(daemon_wait_log(&d, "plugin tp: accepted", 5000), "no accept");
    D_ASSERT(kill(d.pid, sig) == 0, "kill: %s", strerror(errno));
    /* The connection is closed gracefully: FIN, then connd waits for ours. */
    eof = io_expect_eof(fd, 3000);
    close(fd);
    D_ASSERT(eof == 1, "peer did not get EOF after %s (%d)", name, eof);
    rc = daemon_stop(&d, 0, 10000); /* signal 0: only wait */
    D_ASSERT(rc == 0, "exit %d after %s (status 0x%x)", rc, name, d.status);
    D_ASSERT(strstr(d.log, name), "%s not logged", name);
    D_ASSERT(daemon_count_log(&d, "plugin tp: closed id=") == 1, "closed not fired once");
    D_ASSERT(daemon_count_log(&d, "plugin tp: listener_closed L1") == 1,
             "listener not closed");
    daemon_free(&d);
    live = NULL;
}

START_TEST(test_daemon_sigterm_exits_0) { stop_with(SIGTERM, "SIGTERM"); }
END_TEST

START_TEST(test_daemon_sigint_exits_0_like_sigterm) { stop_with(SIGINT, "SIGINT"); }
END_TEST

/* ---- "log" --------------------------------------------------------------- */

#define PLAIN_LINE                                                                       \
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "                \
    "(emerg|alert|crit|err|warning|notice|info|debug): [^ ].*$"
#define JOURNAL_LINE "^<[0-7]>[^ <]"

/* The number of lines of log not matching re; *lines counts all. */
static int lines_not_matching(const char *log, const char *re, int *lines, char *bad,
                              size_t badlen)
{
    regex_t rx;
    char *copy = strdup(log), *save = NULL;
    int misses = 0;

    ck_assert_ptr_nonnull(copy);
    ck_assert_int_eq(regcomp(&rx, re, REG_EXTENDED | REG_NOSUB), 0);
    *lines = 0;
    bad[0] = '\0';
    for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        (*lines)++;
        if (regexec(&rx, l, 0, NULL, 0) != 0) {
            if (!misses)
                snprintf(bad, badlen, "%s", l);
            misses++;
        }
    }
    regfree(&rx);
    free(copy);
    return misses;
}

START_TEST(test_daemon_plain_log_lines_have_utc_timestamp_and_level)
{
    char bad[512];
    struct daemon d;
    struct tm tm = {0};
    int rc, lines, misses, ms;
    time_t then, now;

    start(&d, TP_CONFIG("127.0.0.1"), NULL);
    rc = daemon_stop(&d, SIGTERM, 10000);
    D_ASSERT(rc == 0, "exit %d after SIGTERM", rc);
    misses = lines_not_matching(d.log, PLAIN_LINE, &lines, bad, sizeof(bad));
    D_ASSERT(lines >= 3, "only %d log lines", lines);
    D_ASSERT(misses == 0, "%d of %d lines are not plain, e.g. \"%s\"", misses, lines,
             bad);
    D_ASSERT(strstr(d.log, "Z notice: ready: "), "ready is not at notice");
    D_ASSERT(strstr(d.log, "Z info: plugin tp: loaded "), "plugin load is not at info");
    D_ASSERT(strstr(d.log, "Z debug: "), "--log-level debug logged no debug line");

    /* The stamp is UTC and current. */
    D_ASSERT(sscanf(d.log, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon,
                    &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) == 7,
             "cannot parse the first stamp");
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    then = timegm(&tm);
    now = time(NULL);
    D_ASSERT(then <= now + 2 && then >= now - 120, "stamp %lld is not now (%lld) in UTC",
             (long long)then, (long long)now);
    daemon_free(&d);
    live = NULL;
}
END_TEST

START_TEST(test_daemon_journal_stream_lines_get_priority_prefix)
{
    char bad[512];
    struct tmpcfg t;
    struct run r;
    int lines, misses;

    cfg_write(&t, TP_CONFIG("127.0.0.1"));
    {
        const char *args[] = {"-c", t.path, "--log-level", "debug", NULL};
        run_connd(args, JOURNAL_PIPE, "ready: ", SIGTERM, 10000, &r);
    }
    ck_assert_msg(r.code == 0, "exit %d (signal %d); stderr:\n%s", r.code, r.sig, r.err);
    misses = lines_not_matching(r.err, JOURNAL_LINE, &lines, bad, sizeof(bad));
    ck_assert_msg(lines >= 3, "only %d log lines:\n%s", lines, r.err);
    ck_assert_msg(misses == 0, "%d of %d lines lack a <N> prefix, e.g. \"%s\"", misses,
                  lines, bad);
    /* The priority is the level; the journal adds the time itself. */
    assert_has(r.err, "<5>ready: ");
    assert_has(r.err, "<5>listener L1: listening on 127.0.0.1:");
    assert_has(r.err, "<6>plugin tp: loaded ");
    assert_has(r.err, "<7>");
    misses = lines_not_matching(r.err, "^<[0-7]>[0-9]{4}-", &lines, bad, sizeof(bad));
    ck_assert_msg(misses == lines, "a journal line carries a timestamp:\n%s", r.err);
    ck_assert_msg(!strstr(r.err, "notice: "), "a journal line carries a level name:\n%s",
                  r.err);
    run_free(&r);
    cfg_remove(&t);

    /* An error at start-up gets <3>. */
    cfg_write(&t, "{\"frobnicate\":1}");
    {
        const char *args[] = {"-c", t.path, "--check-config", NULL};
        run_connd(args, JOURNAL_PIPE, NULL, 0, 10000, &r);
    }
    ck_assert_msg(r.code == 1, "exit %d; stderr:\n%s", r.code, r.err);
    ck_assert_msg(strncmp(r.err, "<3>", 3) == 0 &&
                      strstr(r.err, "frobnicate: unknown key"),
                  "stderr:\n%s", r.err);
    run_free(&r);
    cfg_remove(&t);
}
END_TEST

/* JOURNAL_STREAM naming another file (stderr redirected elsewhere) means
 * stderr is not the journal: plain lines. */
START_TEST(test_daemon_journal_stream_of_another_file_keeps_plain_lines)
{
    char bad[512];
    struct tmpcfg t;
    struct run r;
    int lines, misses;

    cfg_write(&t, "{\"frobnicate\":1}");
    {
        const char *args[] = {"-c", t.path, "--check-config", NULL};
        run_connd(args, "1:1", NULL, 0, 10000, &r);
    }
    ck_assert_msg(r.code == 1, "exit %d; stderr:\n%s", r.code, r.err);
    misses = lines_not_matching(r.err, PLAIN_LINE, &lines, bad, sizeof(bad));
    ck_assert_msg(lines == 1 && misses == 0, "stderr:\n%s", r.err);
    assert_has(r.err, "Z err: config: ");
    run_free(&r);
    cfg_remove(&t);
}
END_TEST

static Suite *daemon_suite(void)
{
    Suite *s = suite_create("daemon");
    TCase *tc = tcase_create("cmdline");

    tcase_add_test(tc, test_daemon_version_prints_name_and_version_and_exits_0);
    tcase_add_test(tc, test_daemon_help_lists_every_option_and_exits_0);
    tcase_add_test(tc, test_daemon_unknown_option_exits_2_naming_it);
    tcase_add_test(tc, test_daemon_stray_argument_exits_2_naming_it);
    tcase_add_test(tc, test_daemon_unknown_log_level_exits_2_naming_it);
    tcase_add_test(tc, test_daemon_control_socket_option_is_accepted);
    tcase_add_unchecked_fixture(tc, tmproot_setup, tmproot_teardown);
    suite_add_tcase(s, tc);

    tc = tcase_create("config");
    tcase_add_test(tc, test_daemon_check_config_prints_ok_without_binding);
    tcase_add_loop_test(tc, test_daemon_bad_config_exits_1_naming_the_key_path, 0,
                        (int)(sizeof(bad_configs) / sizeof(bad_configs[0])));
    tcase_add_unchecked_fixture(tc, tmproot_setup, tmproot_teardown);
    suite_add_tcase(s, tc);

    tc = tcase_create("startup");
    tcase_add_test(
        tc, test_daemon_port_in_use_exits_1_naming_listener_and_fires_not_listening);
    tcase_add_test(tc, test_daemon_listener_on_ipv6_loopback_echoes);
    tcase_add_test(tc, test_daemon_listener_hooks_fire_on_start_and_sigterm);
    tcase_add_unchecked_fixture(tc, tmproot_setup, tmproot_teardown);
    suite_add_tcase(s, tc);

    tc = tcase_create("signals");
    tcase_add_test(tc, test_daemon_sigterm_exits_0);
    tcase_add_test(tc, test_daemon_sigint_exits_0_like_sigterm);
    tcase_add_unchecked_fixture(tc, tmproot_setup, tmproot_teardown);
    suite_add_tcase(s, tc);

    tc = tcase_create("log");
    tcase_add_test(tc, test_daemon_plain_log_lines_have_utc_timestamp_and_level);
    tcase_add_test(tc, test_daemon_journal_stream_lines_get_priority_prefix);
    tcase_add_test(tc, test_daemon_journal_stream_of_another_file_keeps_plain_lines);
    tcase_add_unchecked_fixture(tc, tmproot_setup, tmproot_teardown);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(daemon_suite());
}
