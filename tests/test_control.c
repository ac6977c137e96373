/*
 * test_control.c: the control socket of SPEC section 5 against a real
 * connd. Every test starts its own daemon and talks to it as connctl or a
 * script would: JSON-RPC 2.0 lines over the Unix socket, with real TCP
 * clients on its listeners to see what each method did.
 *
 * TCases: "methods" (every method of the table in daemon/methods.c, with
 * its effect), "bulk" (selectors and dry runs), "errors" (every error code,
 * notifications, the line limit), "roles" (SO_PEERCRED uids), "events"
 * (order, seq, filters), "robust" (hostile, slow and many clients, each
 * checked by a second client that keeps being answered) and "socket" (the
 * socket file: mode, stale files, a second daemon, request logging).
 *
 * Requests are written with ' for " (see call()); error rows and method
 * rows are tables.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- configs ------------------------------------------------------------ */

#define TESTPLUG(name, config)                                                           \
    "{\"name\":\"" name "\",\"file\":\"@TPLUGINS@/testplug.so\",\"config\":" config "}"
#define PLUGIN(name, file) "{\"name\":\"" name "\",\"file\":\"" file "\"}"
#define LISTENER(name, plugin, fields)                                                   \
    "{\"name\":\"" name "\",\"host\":\"127.0.0.1\",\"port\":0,\"plugin\":\"" plugin      \
    "\"" fields "}"
#define CONFIG(control, plugins, listeners)                                              \
    "{" control "\"plugin_dir\":\"@PLUGINS@\",\"shutdown_timeout_ms\":1000,"             \
    "\"plugins\":[" plugins "],\"listeners\":[" listeners "]}"

/* tp, tp2: echo; greet: writes 16 bytes on accept, then closes gracefully
 * and waits (close_timeout_ms) for the peer's EOF, so its connections stay
 * "closing" while the client neither reads nor closes. */
#define STD_PLUGINS                                                                      \
    TESTPLUG("tp", "{\"echo\":true}")                                                    \
    "," TESTPLUG("tp2", "{\"echo\":true}") "," PLUGIN(                                   \
        "discard",                                                                       \
        "discard.so") "," TESTPLUG("greet", "{\"greet\":16,\"close_after_greet\":true}")
#define STD_LISTENERS                                                                    \
    LISTENER("e", "tp", "")                                                              \
    "," LISTENER("f", "tp2", "") "," LISTENER("g", "greet", "") "," LISTENER(            \
        "cap", "tp",                                                                     \
        ",\"high_watermark\":32768,\"low_watermark\":16384,\"max_pending\":65536")
#define STD_CONFIG CONFIG("", STD_PLUGINS, STD_LISTENERS)

/* ---- fixture: one daemon per test --------------------------------------- */

static struct daemon D;
static bool d_started;
static char scratch[64]; /* a test's own temp dir, removed in teardown */

static json_t **kept; /* replies and events, released in teardown */
static size_t n_kept, cap_kept;
static int tracked[256]; /* sockets closed in teardown, before the daemon stops */
static size_t n_tracked;

/* A control connection: buffered line reader, and the events read while
 * waiting for a reply (so no event is lost to a call). */
struct chan {
    int fd;
    bool eof;
    char *buf;
    size_t len, cap;
    json_t *events;
    long long next_id;
};
static struct chan chans[32];
static int n_chans;

static void remove_tree(const char *dir)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* On a failed check: show the daemon's log and kill it now, since Check
 * ends a failed test with _exit and the teardown does not run. Nothing is
 * freed, so the failure message may still read D.log. */
static void on_failure(void)
{
    if (d_started)
        daemon_fail_now(&D, 300, 24000);
    if (scratch[0])
        remove_tree(scratch);
}

#define CHECK(cond, ...)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            on_failure();                                                                \
            ck_abort_msg(__VA_ARGS__);                                                   \
        }                                                                                \
    } while (0)
#define CHECK_INT(a, op, b)                                                              \
    do {                                                                                 \
        long long a_ = (long long)(a), b_ = (long long)(b);                              \
        CHECK(a_ op b_, "%s %s %s failed: %lld vs %lld", #a, #op, #b, a_, b_);           \
    } while (0)
#define CHECK_STR(a, b)                                                                  \
    do {                                                                                 \
        const char *a_ = (a), *b_ = (b);                                                 \
        CHECK(a_ &&strcmp(a_, b_) == 0, "%s is \"%s\", expected \"%s\"", #a,             \
              a_ ? a_ : "(null)", b_);                                                   \
    } while (0)

static json_t *keep(json_t *j)
{
    if (!j)
        return NULL;
    if (n_kept == cap_kept) {
        cap_kept = cap_kept ? cap_kept * 2 : 256;
        kept = realloc(kept, cap_kept * sizeof(*kept));
        CHECK(kept != NULL, "out of memory");
    }
    kept[n_kept++] = j;
    return j;
}

/* For failure messages only (leaks, but then the test is over). */
static const char *dump(const json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    return s ? s : "(null)";
}

static int track(int fd)
{
    if (fd >= 0 && n_tracked < sizeof(tracked) / sizeof(tracked[0]))
        tracked[n_tracked++] = fd;
    return fd;
}

/* Close fd now and forget it. */
static void untrack_close(int fd)
{
    for (size_t i = 0; i < n_tracked; i++)
        if (tracked[i] == fd) {
            tracked[i] = tracked[--n_tracked];
            break;
        }
    close(fd);
}

static void teardown(void)
{
    bool report = false;
    int rc = 0;

    for (size_t i = 0; i < n_tracked; i++)
        close(tracked[i]);
    n_tracked = 0;
    for (int i = 0; i < n_chans; i++) {
        free(chans[i].buf);
        json_decref(chans[i].events);
    }
    memset(chans, 0, sizeof(chans));
    n_chans = 0;
    for (size_t i = 0; i < n_kept; i++)
        json_decref(kept[i]);
    free(kept);
    kept = NULL;
    n_kept = cap_kept = 0;
    if (d_started) {
        bool running = D.pid > 0 && D.status == -1;
        if (running)
            rc = daemon_stop(&D, SIGTERM, 5000);
        report = D.log && (strstr(D.log, "Sanitizer") || strstr(D.log, "runtime error:"));
        if (report || (running && rc != 0))
            fprintf(stderr, "---- connd log ----\n%s\n---- end ----\n", D.log);
        daemon_free(&D);
        d_started = false;
    }
    if (scratch[0]) {
        remove_tree(scratch);
        scratch[0] = '\0';
    }
    ck_assert_msg(!report, "connd logged a sanitizer report");
    ck_assert_msg(rc == 0, "connd did not exit 0 on SIGTERM (%d)", rc);
}

static void start(const char *config)
{
    int rc = daemon_start(&D, config, NULL);

    d_started = true; /* daemon_start always leaves something to free */
    CHECK(rc == 0, "connd did not start:\n%s", D.log ? D.log : "");
    /* connd logs every mutating request; a flood of them must not fill the
     * stderr pipe (and block connd) while the test is busy elsewhere. */
    fcntl(D.err_fd, F_SETPIPE_SZ, 1 << 20);
}

static void start_std(void)
{
    start(STD_CONFIG);
}

static bool daemon_alive(void)
{
    int st;
    return D.status == -1 && waitpid(D.pid, &st, WNOHANG) == 0;
}

static void pause_ms(int ms)
{
    daemon_drain_log(&D, ms);
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A private temp dir for paths that must exist before the daemon starts. */
static const char *make_scratch(void)
{
    snprintf(scratch, sizeof(scratch), "/tmp/connd-ctl-XXXXXX");
    CHECK(mkdtemp(scratch) != NULL, "mkdtemp: %s", strerror(errno));
    return scratch;
}

/* ---- control connections ------------------------------------------------ */

static struct chan *chan_open(int fd)
{
    struct chan *ch;

    CHECK(fd >= 0, "no control connection");
    CHECK(n_chans < (int)(sizeof(chans) / sizeof(chans[0])), "too many channels");
    ch = &chans[n_chans++];
    memset(ch, 0, sizeof(*ch));
    ch->fd = track(fd);
    ch->events = json_array();
    ch->next_id = 1;
    return ch;
}

/* A new control connection to D. */
static struct chan *ctl(void)
{
    int fd = ctl_connect(&D);
    CHECK(fd >= 0, "cannot connect to %s: %s", D.ctl_path, strerror(errno));
    return chan_open(fd);
}

static void chan_send(struct chan *ch, const char *data, size_t len)
{
    int rc = io_write_all(ch->fd, data, len);
    CHECK(rc == 0, "control write: %s", strerror(-rc));
}

/* One line (malloc'd, without its newline), or NULL on timeout or EOF
 * (ch->eof then says which). */
static char *chan_line(struct chan *ch, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;

    for (;;) {
        char *nl = ch->len ? memchr(ch->buf, '\n', ch->len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - ch->buf);
            char *line = malloc(n + 1);
            CHECK(line != NULL, "out of memory");
            memcpy(line, ch->buf, n);
            line[n] = '\0';
            memmove(ch->buf, nl + 1, ch->len - n - 1);
            ch->len -= n + 1;
            return line;
        }
        uint64_t now = now_ms();
        if (ch->eof || now >= end || !io_readable(ch->fd, (int)(end - now)))
            return NULL;
        if (ch->cap - ch->len < 65536) {
            ch->cap = ch->cap ? ch->cap * 2 : 131072;
            ch->buf = realloc(ch->buf, ch->cap);
            CHECK(ch->buf != NULL, "out of memory");
        }
        ssize_t r = recv(ch->fd, ch->buf + ch->len, ch->cap - ch->len, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            ch->eof = true;
            return NULL;
        }
        if (r > 0)
            ch->len += (size_t)r;
    }
}

/* The next message, parsed (the caller owns it), or NULL on timeout or
 * EOF. */
static json_t *chan_msg_owned(struct chan *ch, int timeout_ms)
{
    char *line = chan_line(ch, timeout_ms);
    json_error_t jerr;
    json_t *msg;

    if (!line)
        return NULL;
    msg = json_loads(line, 0, &jerr);
    CHECK(json_is_object(msg),
          "daemon sent a line that is not a JSON object: %.300s (%s)", line, jerr.text);
    free(line);
    return msg;
}

/* As chan_msg_owned, released in teardown. */
static json_t *chan_msg(struct chan *ch, int timeout_ms)
{
    return keep(chan_msg_owned(ch, timeout_ms));
}

static bool is_event(const json_t *msg)
{
    const json_t *m = json_object_get(msg, "method");
    return json_is_string(m) && strcmp(json_string_value(m), "event") == 0 &&
           !json_object_get(msg, "id");
}

/* Replace every ' by " (requests in this file are written with '). */
static char *dq(const char *s)
{
    char *out = strdup(s);
    CHECK(out != NULL, "out of memory");
    for (char *p = out; *p; p++)
        if (*p == '\'')
            *p = '"';
    return out;
}

/* Send one raw line (a newline is added) and return the first message that
 * is not an event; events meanwhile go to ch->events. NULL on timeout. */
static json_t *raw_reply(struct chan *ch, const char *line, size_t len, int timeout_ms)
{
    chan_send(ch, line, len);
    chan_send(ch, "\n", 1);
    for (;;) {
        json_t *msg = chan_msg(ch, timeout_ms);
        if (!msg || !is_event(msg))
            return msg;
        json_array_append(ch->events, json_object_get(msg, "params"));
    }
}

/* Call method with params built from params_fmt (' for "); returns the
 * reply, checked to be JSON-RPC 2.0 with this request's id. */
__attribute__((format(printf, 3, 4))) static json_t *
call(struct chan *ch, const char *method, const char *params_fmt, ...)
{
    char *params = NULL, *p, *line = NULL;
    long long id = ch->next_id++;
    json_t *reply, *rid;
    va_list ap;
    int n;

    va_start(ap, params_fmt);
    n = vasprintf(&params, params_fmt, ap);
    va_end(ap);
    CHECK(n >= 0, "vasprintf");
    p = dq(params);
    n = asprintf(&line,
                 "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"%s\",\"params\":%s}", id,
                 method, p);
    CHECK(n >= 0, "asprintf");
    reply = raw_reply(ch, line, (size_t)n, 10000);
    CHECK(reply != NULL, "no reply to %.400s", line);
    rid = json_object_get(reply, "id");
    CHECK(json_is_integer(rid) && json_integer_value(rid) == id,
          "reply to %.300s has the wrong id: %.300s", line, dump(reply));
    CHECK(json_is_string(json_object_get(reply, "jsonrpc")) &&
              strcmp(json_string_value(json_object_get(reply, "jsonrpc")), "2.0") == 0,
          "reply without \"jsonrpc\":\"2.0\": %s", dump(reply));
    free(params);
    free(p);
    free(line);
    return reply;
}

static json_t *result_of(json_t *reply)
{
    json_t *res = json_object_get(reply, "result");
    CHECK(res && !json_object_get(reply, "error"), "expected a result: %s", dump(reply));
    return res;
}

/* The error object of reply, checked to carry code and a message. */
static json_t *error_of(json_t *reply, int code)
{
    json_t *err = json_object_get(reply, "error");
    json_t *c = json_object_get(err, "code"), *m = json_object_get(err, "message");

    CHECK(json_is_object(err) && !json_object_get(reply, "result"),
          "expected error %d, got %s", code, dump(reply));
    CHECK(json_is_integer(c) && json_integer_value(c) == code,
          "expected error %d, got %s", code, dump(reply));
    CHECK(json_is_string(m) && json_string_length(m) > 0, "error without a message: %s",
          dump(reply));
    return err;
}

/* Send a literal request line; its reply. */
static json_t *raw(struct chan *ch, const char *line)
{
    json_t *r = raw_reply(ch, line, strlen(line), 5000);
    CHECK(r != NULL, "no reply to %s", line);
    return r;
}

#define OK(ch, method, ...) result_of(call(ch, method, __VA_ARGS__))
#define ERR(code, ch, method, ...) error_of(call(ch, method, __VA_ARGS__), code)

/* The next event's params (kept), or NULL after timeout_ms. A reply here
 * fails the test: nothing was asked. */
static json_t *next_event(struct chan *ch, int timeout_ms)
{
    json_t *msg, *p;

    if (json_array_size(ch->events)) {
        p = json_incref(json_array_get(ch->events, 0));
        json_array_remove(ch->events, 0);
        return keep(p);
    }
    if (!(msg = chan_msg(ch, timeout_ms)))
        return NULL;
    CHECK(is_event(msg), "expected an event, got %s", dump(msg));
    p = json_object_get(msg, "params");
    CHECK(json_is_object(p), "event without params: %s", dump(msg));
    return p;
}

/* ---- reading replies ---------------------------------------------------- */

static json_t *jget(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    CHECK(v != NULL, "no \"%s\" in %s", key, dump(o));
    return v;
}

static long long jint(json_t *o, const char *key)
{
    json_t *v = jget(o, key);
    CHECK(json_is_integer(v), "\"%s\" is not an integer in %s", key, dump(o));
    return json_integer_value(v);
}

static const char *jstr(json_t *o, const char *key)
{
    json_t *v = jget(o, key);
    CHECK(json_is_string(v), "\"%s\" is not a string in %s", key, dump(o));
    return json_string_value(v);
}

static bool jbool(json_t *o, const char *key)
{
    json_t *v = jget(o, key);
    CHECK(json_is_boolean(v), "\"%s\" is not a boolean in %s", key, dump(o));
    return json_is_true(v);
}

static json_t *jarr(json_t *o, const char *key)
{
    json_t *v = jget(o, key);
    CHECK(json_is_array(v), "\"%s\" is not an array in %s", key, dump(o));
    return v;
}

/* The entry of array a whose `key` is the integer id, or NULL. */
static json_t *find_id(json_t *a, const char *key, long long id)
{
    size_t i;
    json_t *v;

    json_array_foreach(a, i, v)
    {
        json_t *k = json_object_get(v, key);
        if (json_is_integer(k) && json_integer_value(k) == id)
            return v;
    }
    return NULL;
}

/* The entry of array a whose `key` is the string s, or NULL. */
static json_t *find_str(json_t *a, const char *key, const char *s)
{
    size_t i;
    json_t *v;

    json_array_foreach(a, i, v)
    {
        json_t *k = json_object_get(v, key);
        if (json_is_string(k) && strcmp(json_string_value(k), s) == 0)
            return v;
    }
    return NULL;
}

/* Whether array a holds exactly the integers want[0..n), in any order. */
static bool same_ids(json_t *a, const long long *want, size_t n)
{
    if (!json_is_array(a) || json_array_size(a) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t k = 0; k < n && !found; k++)
            found = json_is_integer(json_array_get(a, k)) &&
                    json_integer_value(json_array_get(a, k)) == want[i];
        if (!found)
            return false;
    }
    return true;
}

/* Whether the array a of strings is exactly [s] (s NULL: empty). */
static bool strings_are(json_t *a, const char *s)
{
    if (!json_is_array(a))
        return false;
    if (!s)
        return json_array_size(a) == 0;
    return json_array_size(a) == 1 && json_is_string(json_array_get(a, 0)) &&
           strcmp(json_string_value(json_array_get(a, 0)), s) == 0;
}

/* The port of "127.0.0.1:P". */
static int port_of(const char *addr)
{
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    return colon ? atoi(colon + 1) : -1;
}

/* ---- TCP clients ---------------------------------------------------------- */

static void set_timeouts(int fd, int sec)
{
    struct timeval tv = {.tv_sec = sec};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int client_port(int port)
{
    int fd = tcp_connect("127.0.0.1", port);

    CHECK(fd >= 0, "cannot connect to 127.0.0.1:%d: %s", port, strerror(errno));
    set_timeouts(fd, 5);
    return track(fd);
}

/* A client of listener `name` (a listener from the config file). */
static int client(const char *name)
{
    int port = daemon_port(&D, name);

    CHECK(port > 0, "listener %s has no port in the log", name);
    return client_port(port);
}

static int local_port(int fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);

    CHECK(getsockname(fd, (struct sockaddr *)&sin, &len) == 0, "getsockname");
    return ntohs(sin.sin_port);
}

/* The daemon's id for the connection of client fd: the conn.list entry
 * whose remote address is fd's local one (waits for the accept). */
static long long conn_id(struct chan *ch, int fd)
{
    char want[32];
    uint64_t end = now_ms() + 3000;

    snprintf(want, sizeof(want), "127.0.0.1:%d", local_port(fd));
    for (;;) {
        json_t *e = find_str(OK(ch, "conn.list", "{}"), "remote", want);
        if (e)
            return jint(e, "id");
        CHECK(now_ms() < end, "no connection from %s in conn.list", want);
        usleep(10000);
    }
}

static void expect_echo(int fd, const char *text)
{
    size_t n = strlen(text);
    char buf[256] = {0};
    int rc;

    CHECK(n < sizeof(buf), "text too long");
    CHECK(io_write_all(fd, text, n) == 0, "write to the daemon failed");
    rc = io_read_exact(fd, buf, n);
    CHECK(rc == 0 && memcmp(buf, text, n) == 0, "no echo of \"%s\" (%s, got \"%s\")",
          text, strerror(-rc), buf);
}

static void expect_silence(int fd, int ms)
{
    CHECK(!io_readable(fd, ms), "bytes arrived that should not have");
}

/* A listening TCP socket on 127.0.0.1 (any port). */
static int listen_tcp(int backlog, int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    CHECK(fd >= 0, "socket");
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0, "bind: %s",
          strerror(errno));
    CHECK(listen(fd, backlog) == 0, "listen");
    getsockname(fd, (struct sockaddr *)&sin, &len);
    *port = ntohs(sin.sin_port);
    return track(fd);
}

static int accept_within(int lfd, int ms)
{
    int fd;

    CHECK(io_readable(lfd, ms), "nothing connected within %d ms", ms);
    fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    CHECK(fd >= 0, "accept: %s", strerror(errno));
    set_timeouts(fd, 5);
    return track(fd);
}

/* A port nothing listens on. */
static int closed_port(void)
{
    int port, fd = listen_tcp(1, &port);
    untrack_close(fd);
    return port;
}

static char *base64(const uint8_t *in, size_t n)
{
    static const char a[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(4 * ((n + 2) / 3) + 1), *o = out;

    CHECK(out != NULL, "out of memory");
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        *o++ = a[v >> 18];
        *o++ = a[(v >> 12) & 63];
        *o++ = i + 1 < n ? a[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? a[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* Write path at D.cfg_path: tmpl with @PLUGINS@, @TPLUGINS@ and @DIR@
 * expanded (printf-style args first). */
__attribute__((format(printf, 1, 2))) static void write_config(const char *fmt, ...)
{
    char *tmpl = NULL;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&tmpl, fmt, ap);
    va_end(ap);
    CHECK(n >= 0, "vasprintf");
    CHECK(daemon_write_config(&D, tmpl) == 0, "cannot write %s", D.cfg_path);
    free(tmpl);
}

/* The line of D.log holding needle (malloc'd), or NULL. */
static char *log_line(const char *needle)
{
    const char *hit = strstr(D.log, needle), *start, *end;

    if (!hit)
        return NULL;
    for (start = hit; start > D.log && start[-1] != '\n'; start--)
        ;
    end = strchr(hit, '\n');
    return strndup(start, end ? (size_t)(end - start) : strlen(start));
}

/* ---- the method table ------------------------------------------------------ */

/* Every method of daemon/methods.c: whether the read-only role may call it,
 * a word its params description must name, and params of a call that a
 * read-only peer may make (mutating ones are refused before params are
 * read). @ID@ is a live connection. */
static const struct method_row {
    const char *name;
    bool readonly;
    const char *param_word;
    const char *params;
} method_rows[] = {
    {"status", true, NULL, "{}"},
    {"conn.list", true, "listener", "{}"},
    {"conn.show", true, "id", "{'id':@ID@}"},
    {"conn.mute", false, "select", "{'id':@ID@}"},
    {"conn.unmute", false, "select", "{'id':@ID@}"},
    {"conn.write", false, "data_base64", "{'id':@ID@,'data':'x'}"},
    {"conn.close", false, "select", "{'id':@ID@}"},
    {"conn.abort", false, "select", "{'id':@ID@}"},
    {"conn.connect", false, "host", "{'host':'127.0.0.1','port':@PORT@,'plugin':'tp'}"},
    {"conn.set_notify", false, "plugin", "{'id':@ID@,'plugin':'discard'}"},
    {"conn.setopt", false, "nodelay", "{'id':@ID@,'nodelay':true}"},
    {"listener.list", true, NULL, "{}"},
    {"listener.add", false, "port",
     "{'name':'x','host':'127.0.0.1','port':0,'plugin':'tp'}"},
    {"listener.remove", false, "name", "{'name':'e'}"},
    {"listener.pause", false, "name", "{'name':'e'}"},
    {"listener.resume", false, "name", "{'name':'e'}"},
    {"plugin.list", true, NULL, "{}"},
    {"plugin.load", false, "file", "{'name':'d2','file':'discard.so'}"},
    {"events.subscribe", true, "types", "{'types':['closed']}"},
    {"rpc.methods", true, NULL, "{}"},
    {"daemon.reload", false, NULL, "{}"},
    {"daemon.shutdown", false, "timeout_ms", "{}"},
};
#define N_METHODS (sizeof(method_rows) / sizeof(method_rows[0]))

/* Replace each "@KEY@" of vals in s; returns malloc'd. */
static char *subst(const char *s, const char *const vals[][2])
{
    size_t cap = strlen(s) + 256, n = 0;
    char *out = malloc(cap);

    CHECK(out != NULL, "out of memory");
    while (*s) {
        size_t i, kl = 0;
        for (i = 0; vals[i][0]; i++)
            if (strncmp(s, vals[i][0], kl = strlen(vals[i][0])) == 0)
                break;
        const char *v = vals[i][0] ? vals[i][1] : NULL;
        size_t vl = v ? strlen(v) : 1;
        if (n + vl + 1 >= cap) {
            cap = (n + vl) * 2 + 1;
            out = realloc(out, cap);
            CHECK(out != NULL, "out of memory");
        }
        if (v) {
            memcpy(out + n, v, vl);
            n += vl;
            s += kl;
        } else {
            out[n++] = *s++;
        }
    }
    out[n] = '\0';
    return out;
}

/* ====================================================================== */
/* methods                                                                 */
/* ====================================================================== */

START_TEST(test_status_reports_version_pid_uptime_and_counts)
{
    struct chan *ch;
    json_t *st;
    int a, b;

    start_std();
    ch = ctl();
    a = client("e");
    b = client("f");
    conn_id(ch, a);
    conn_id(ch, b);
    st = OK(ch, "status", "{}");
    CHECK(strlen(jstr(st, "version")) > 0, "empty version");
    CHECK_INT(jint(st, "pid"), ==, D.pid);
    CHECK_INT(jint(st, "uptime_ms"), >=, 0);
    CHECK_INT(jint(st, "uptime_ms"), <, 60000);
    CHECK_INT(jint(st, "connections"), ==, 2);
    CHECK_INT(jint(st, "listeners"), ==, 4);
    CHECK_INT(jint(st, "plugins"), ==, 4);
    /* params may be omitted when all are optional */
    st = result_of(raw(ch, "{\"jsonrpc\":\"2.0\",\"id\":99,\"method\":\"status\"}"));
    CHECK_INT(jint(st, "pid"), ==, D.pid);
}
END_TEST

/* Check the fields and types of one conn.list / conn.show entry. */
static void check_conn_entry(json_t *e, const char *listener, const char *plugin, int cfd)
{
    char want[32];
    uint64_t wall = wall_ms();

    CHECK_INT(jint(e, "id"), >, 0);
    CHECK_STR(jstr(e, "listener"), listener);
    CHECK_STR(jstr(e, "plugin"), plugin);
    CHECK_STR(jstr(e, "state"), "open");
    snprintf(want, sizeof(want), "127.0.0.1:%d", daemon_port(&D, listener));
    CHECK_STR(jstr(e, "local"), want);
    snprintf(want, sizeof(want), "127.0.0.1:%d", local_port(cfd));
    CHECK_STR(jstr(e, "remote"), want);
    CHECK_INT(jint(e, "bytes_in"), >=, 0);
    CHECK_INT(jint(e, "bytes_out"), >=, 0);
    CHECK_INT(jint(e, "pending"), ==, 0);
    CHECK(!jbool(e, "muted"), "muted: %s", dump(e));
    CHECK(!jbool(e, "throttled"), "throttled: %s", dump(e));
    CHECK_INT(jint(e, "created_ms"), >, (long long)wall - 60000);
    CHECK_INT(jint(e, "created_ms"), <=, (long long)wall + 1000);
}

START_TEST(test_conn_list_shows_every_connection_with_typed_fields)
{
    struct chan *ch;
    long long ida, idb;
    json_t *list, *e;
    int a, b;

    start_std();
    ch = ctl();
    a = client("e");
    b = client("f");
    ida = conn_id(ch, a);
    idb = conn_id(ch, b);
    CHECK(idb > ida, "ids must grow: %lld then %lld", ida, idb);
    expect_echo(a, "hello");
    list = OK(ch, "conn.list", "{}");
    CHECK(json_is_array(list) && json_array_size(list) == 2, "conn.list: %s", dump(list));
    check_conn_entry(find_id(list, "id", ida), "e", "tp", a);
    check_conn_entry(find_id(list, "id", idb), "f", "tp2", b);
    CHECK_INT(jint(find_id(list, "id", ida), "bytes_in"), ==, 5);
    CHECK_INT(jint(find_id(list, "id", ida), "bytes_out"), ==, 5);
    CHECK_INT(jint(find_id(list, "id", idb), "bytes_in"), ==, 0);

    list = OK(ch, "conn.list", "{'listener':'f'}");
    CHECK(json_array_size(list) == 1 && find_id(list, "id", idb), "filtered: %s",
          dump(list));
    list = OK(ch, "conn.list", "{'listener':'nope'}");
    CHECK(json_is_array(list) && json_array_size(list) == 0, "unknown: %s", dump(list));
    list = result_of(raw(ch, "{\"jsonrpc\":\"2.0\",\"id\":99,\"method\":\"conn.list\"}"));
    CHECK_INT(json_array_size(list), ==, 2);

    e = OK(ch, "conn.show", "{'id':%lld}", ida);
    check_conn_entry(e, "e", "tp", a);
    e = jget(e, "sockopts");
    CHECK(json_is_object(e), "sockopts: %s", dump(e));
    jbool(e, "nodelay");
    jbool(e, "keepalive");
    CHECK_INT(jint(e, "rcvbuf"), >, 0);
    CHECK_INT(jint(e, "sndbuf"), >, 0);
}
END_TEST

START_TEST(test_conn_ids_are_never_reused)
{
    struct chan *ch;
    long long first, later;
    int a;

    start_std();
    ch = ctl();
    a = client("e");
    first = conn_id(ch, a);
    untrack_close(a);
    for (uint64_t end = now_ms() + 3000; json_array_size(OK(ch, "conn.list", "{}"));) {
        CHECK(now_ms() < end, "connection %lld never went away", first);
        usleep(10000);
    }
    later = conn_id(ch, client("e"));
    CHECK(later > first, "id %lld reused or smaller after %lld", later, first);
}
END_TEST

START_TEST(test_conn_mute_holds_bytes_until_unmute)
{
    struct chan *ch;
    long long id;
    json_t *r;
    char buf[4] = {0};
    int a;

    start_std();
    ch = ctl();
    a = client("e");
    id = conn_id(ch, a);
    expect_echo(a, "one");
    r = OK(ch, "conn.mute", "{'id':%lld}", id);
    CHECK_INT(jint(r, "id"), ==, id);
    CHECK(jbool(r, "muted"), "not muted: %s", dump(r));
    CHECK(strings_are(jget(r, "mute_reasons"), "ctl"), "reasons: %s", dump(r));
    r = OK(ch, "conn.show", "{'id':%lld}", id);
    CHECK(jbool(r, "muted") && strings_are(jget(r, "mute_reasons"), "ctl"), "show: %s",
          dump(r));
    CHECK_INT(io_write_all(a, "abc", 3), ==, 0);
    expect_silence(a, 300);
    r = OK(ch, "conn.unmute", "{'id':%lld}", id);
    CHECK(!jbool(r, "muted") && strings_are(jget(r, "mute_reasons"), NULL), "unmute: %s",
          dump(r));
    CHECK_INT(io_read_exact(a, buf, 3), ==, 0);
    CHECK_STR(buf, "abc");
    expect_echo(a, "two");
}
END_TEST

START_TEST(test_conn_write_text_and_base64_arrive_exactly_with_sent_events)
{
    enum { BIG = 300000 };
    static uint8_t big[BIG], got[BIG];
    static const char text[] = "h\xc3\xa9llo \xe2\x98\x83\n"; /* "héllo ☃\n" */
    struct chan *ch, *sub;
    uint8_t all[256], in[256];
    long long id, tok1, tok2, tok3;
    json_t *r, *ev;
    char *b64;
    int a;

    start_std();
    ch = ctl();
    sub = ctl();
    OK(sub, "events.subscribe", "{'types':['sent','send_failed']}");
    a = client("e");
    id = conn_id(ch, a);

    r = OK(ch, "conn.write", "{'id':%lld,'data':'h\\u00e9llo \\u2603\\n'}", id);
    CHECK_INT(jint(r, "id"), ==, id);
    CHECK_INT(jint(r, "queued"), ==, sizeof(text) - 1);
    tok1 = jint(r, "token");
    CHECK_INT(tok1, >, 0);
    CHECK_INT(io_read_exact(a, in, sizeof(text) - 1), ==, 0);
    CHECK(memcmp(in, text, sizeof(text) - 1) == 0, "text bytes differ");

    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    b64 = base64(all, sizeof(all));
    r = OK(ch, "conn.write", "{'id':%lld,'data_base64':'%s'}", id, b64);
    free(b64);
    CHECK_INT(jint(r, "queued"), ==, 256);
    tok2 = jint(r, "token");
    CHECK(tok2 != tok1, "tokens must differ");
    CHECK_INT(io_read_exact(a, in, 256), ==, 0);
    CHECK(memcmp(in, all, 256) == 0, "base64 bytes differ");

    fill_random(big, BIG, 11);
    b64 = base64(big, BIG);
    r = OK(ch, "conn.write", "{'id':%lld,'data_base64':'%s'}", id, b64);
    free(b64);
    CHECK_INT(jint(r, "queued"), ==, BIG);
    tok3 = jint(r, "token");
    CHECK_INT(io_read_exact(a, got, BIG), ==, 0);
    CHECK(memcmp(got, big, BIG) == 0, "big write differs");

    /* one sent event per write, with its token and byte count, in order */
    const long long toks[] = {tok1, tok2, tok3}, sizes[] = {sizeof(text) - 1, 256, BIG};
    for (int i = 0; i < 3; i++) {
        ev = next_event(sub, 3000);
        CHECK(ev != NULL, "no sent event for token %lld", toks[i]);
        CHECK_STR(jstr(ev, "type"), "sent");
        CHECK_INT(jint(ev, "id"), ==, id);
        CHECK_INT(jint(ev, "token"), ==, toks[i]);
        CHECK_INT(jint(ev, "bytes"), ==, sizes[i]);
    }
    expect_silence(a, 100); /* nothing extra was written */
}
END_TEST

START_TEST(test_conn_write_then_close_delivers_bytes_then_eof)
{
    enum { LEN = 600000 };
    static uint8_t data[LEN], got[LEN];
    struct chan *ch;
    long long id;
    char *b64, *lines;
    json_t *r;
    int a, n;

    start_std();
    ch = ctl();
    a = client("e");
    id = conn_id(ch, a);
    fill_random(data, LEN, 5);
    b64 = base64(data, LEN);
    /* Both requests in one write: the close must wait for the write. */
    n = asprintf(&lines,
                 "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"conn.write\","
                 "\"params\":{\"id\":%lld,\"data_base64\":\"%s\"}}\n"
                 "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"conn.close\","
                 "\"params\":{\"id\":%lld}}\n",
                 id, b64, id);
    CHECK(n > 0, "asprintf");
    chan_send(ch, lines, (size_t)n);
    free(lines);
    free(b64);
    r = chan_msg(ch, 5000);
    CHECK(r && json_integer_value(json_object_get(r, "id")) == 1, "write reply: %s",
          dump(r));
    CHECK_INT(jint(result_of(r), "queued"), ==, LEN);
    r = chan_msg(ch, 5000);
    CHECK(r && json_integer_value(json_object_get(r, "id")) == 2, "close reply: %s",
          dump(r));
    CHECK_INT(jint(result_of(r), "id"), ==, id);
    CHECK_INT(io_read_exact(a, got, LEN), ==, 0);
    CHECK(memcmp(got, data, LEN) == 0, "bytes before the close differ");
    CHECK_INT(io_expect_eof(a, 3000), ==, 1);
}
END_TEST

START_TEST(test_conn_close_sends_eof_and_abort_sends_reset)
{
    struct chan *ch;
    long long ida, idb;
    json_t *r;
    int a, b;

    start_std();
    ch = ctl();
    a = client("e");
    b = client("e");
    ida = conn_id(ch, a);
    idb = conn_id(ch, b);

    r = OK(ch, "conn.close", "{'id':%lld}", ida);
    CHECK_INT(jint(r, "id"), ==, ida);
    CHECK_INT(io_expect_eof(a, 3000), ==, 1);
    untrack_close(a);
    for (uint64_t end = now_ms() + 3000;;) {
        r = call(ch, "conn.show", "{'id':%lld}", ida);
        if (json_object_get(r, "error")) {
            error_of(r, -32001);
            break;
        }
        CHECK(now_ms() < end, "closed connection still listed: %s", dump(r));
        usleep(20000);
    }

    r = OK(ch, "conn.abort", "{'id':%lld}", idb);
    CHECK_INT(jint(r, "id"), ==, idb);
    CHECK_INT(io_expect_eof(b, 3000), ==, -ECONNRESET);
    ERR(-32001, ch, "conn.show", "{'id':%lld}", idb);
    expect_echo(client("e"), "still serving");
}
END_TEST

START_TEST(test_conn_connect_opens_outgoing_and_reports_refusal)
{
    struct chan *ch, *sub;
    long long id, id2, id3;
    int lport, lfd, peer, refused;
    json_t *r, *ev;
    char want[32];

    start_std();
    ch = ctl();
    sub = ctl();
    OK(sub, "events.subscribe", "{'types':['connected','connect_failed']}");
    lfd = listen_tcp(8, &lport);

    r = OK(ch, "conn.connect", "{'host':'127.0.0.1','port':%d,'plugin':'tp'}", lport);
    id = jint(r, "id");
    CHECK_INT(id, >, 0);
    peer = accept_within(lfd, 3000);
    ev = next_event(sub, 3000);
    CHECK(ev != NULL, "no connected event");
    CHECK_STR(jstr(ev, "type"), "connected");
    CHECK_INT(jint(ev, "id"), ==, id);
    r = OK(ch, "conn.show", "{'id':%lld}", id);
    CHECK_STR(jstr(r, "state"), "open");
    CHECK_STR(jstr(r, "plugin"), "tp");
    CHECK(json_is_null(jget(r, "listener")), "outgoing has a listener: %s", dump(r));
    snprintf(want, sizeof(want), "127.0.0.1:%d", lport);
    CHECK_STR(jstr(r, "remote"), want);
    {
        struct sockaddr_in sin;
        socklen_t len = sizeof(sin);
        getpeername(peer, (struct sockaddr *)&sin, &len);
        snprintf(want, sizeof(want), "127.0.0.1:%d", ntohs(sin.sin_port));
    }
    CHECK_STR(jstr(r, "local"), want);
    expect_echo(peer, "ping"); /* tp echoes on the outgoing connection too */

    /* a port as a string */
    r = OK(ch, "conn.connect", "{'host':'127.0.0.1','port':'%d','plugin':'discard'}",
           lport);
    id2 = jint(r, "id");
    CHECK(id2 > id, "ids grow");
    accept_within(lfd, 3000);
    ev = next_event(sub, 3000);
    CHECK(ev && jint(ev, "id") == id2, "connected for %lld: %s", id2, dump(ev));

    /* refused: a connect_failed event, and the connection is gone */
    refused = closed_port();
    r = OK(ch, "conn.connect", "{'host':'127.0.0.1','port':%d,'plugin':'tp'}", refused);
    id3 = jint(r, "id");
    ev = next_event(sub, 5000);
    CHECK(ev != NULL, "no connect_failed event");
    CHECK_STR(jstr(ev, "type"), "connect_failed");
    CHECK_INT(jint(ev, "id"), ==, id3);
    for (uint64_t end = now_ms() + 2000;;) {
        r = call(ch, "conn.show", "{'id':%lld}", id3);
        if (json_object_get(r, "error")) {
            error_of(r, -32001);
            break;
        }
        CHECK(now_ms() < end, "failed connection still listed: %s", dump(r));
        usleep(20000);
    }
}
END_TEST

START_TEST(test_conn_set_notify_hands_connection_to_discard)
{
    struct chan *ch;
    long long id;
    json_t *r;
    int a;

    start_std();
    ch = ctl();
    a = client("e");
    id = conn_id(ch, a);
    expect_echo(a, "a");
    r = OK(ch, "conn.set_notify", "{'id':%lld,'plugin':'discard'}", id);
    CHECK_INT(jint(r, "id"), ==, id);
    CHECK_STR(jstr(r, "plugin"), "discard");
    CHECK_INT(io_write_all(a, "b", 1), ==, 0);
    expect_silence(a, 300);
    CHECK_STR(jstr(OK(ch, "conn.show", "{'id':%lld}", id), "plugin"), "discard");
    r = OK(ch, "plugin.list", "{}");
    CHECK_INT(jint(find_str(r, "name", "discard"), "connections"), ==, 1);
    CHECK_INT(jint(find_str(r, "name", "tp"), "connections"), ==, 0);
}
END_TEST

START_TEST(test_conn_setopt_applies_socket_options)
{
    struct chan *ch;
    long long id;
    json_t *r, *so;
    int a;

    start_std();
    ch = ctl();
    a = client("e");
    id = conn_id(ch, a);
    r = OK(ch, "conn.setopt",
           "{'id':%lld,'nodelay':true,'keepalive_s':30,'rcvbuf':65536,'sndbuf':65536}",
           id);
    CHECK_INT(jint(r, "id"), ==, id);
    CHECK(jbool(r, "nodelay"), "nodelay: %s", dump(r));
    CHECK_INT(jint(r, "keepalive_s"), ==, 30);
    CHECK_INT(jint(r, "rcvbuf"), ==, 65536);
    CHECK_INT(jint(r, "sndbuf"), ==, 65536);
    so = jget(OK(ch, "conn.show", "{'id':%lld}", id), "sockopts");
    CHECK(jbool(so, "nodelay") && jbool(so, "keepalive"), "sockopts: %s", dump(so));
    CHECK_INT(jint(so, "rcvbuf"), >=, 65536);
    CHECK_INT(jint(so, "sndbuf"), >=, 65536);

    r = OK(ch, "conn.setopt", "{'id':%lld,'nodelay':false,'keepalive_s':0}", id);
    CHECK(!jbool(r, "nodelay"), "nodelay: %s", dump(r));
    so = jget(OK(ch, "conn.show", "{'id':%lld}", id), "sockopts");
    CHECK(!jbool(so, "nodelay") && !jbool(so, "keepalive"), "sockopts: %s", dump(so));
    expect_echo(a, "still fine");
}
END_TEST

START_TEST(test_listener_add_pause_resume_remove_take_effect)
{
    struct chan *ch;
    json_t *r, *l;
    int xport, a, b;
    char buf[2] = {0};
    char want[32];

    start_std();
    ch = ctl();
    r = OK(ch, "listener.list", "{}");
    CHECK_INT(json_array_size(r), ==, 4);
    static const char *const names[] = {"e", "f", "g", "cap"};
    for (int i = 0; i < 4; i++) {
        l = find_str(r, "name", names[i]);
        CHECK(l != NULL, "no listener %s in %s", names[i], dump(r));
        snprintf(want, sizeof(want), "127.0.0.1:%d", daemon_port(&D, names[i]));
        CHECK_STR(jstr(l, "local"), want);
        jstr(l, "plugin");
        CHECK_INT(jint(l, "limit"), ==, 0);
        CHECK_INT(jint(l, "accepted"), ==, 0);
        CHECK_INT(jint(l, "active"), ==, 0);
        CHECK(strings_are(jarr(l, "paused"), NULL), "paused: %s", dump(l));
    }

    l = OK(ch, "listener.add",
           "{'name':'x','host':'127.0.0.1','port':0,'plugin':'tp','limit':5}");
    CHECK_STR(jstr(l, "name"), "x");
    CHECK_STR(jstr(l, "plugin"), "tp");
    CHECK_INT(jint(l, "limit"), ==, 5);
    CHECK(strncmp(jstr(l, "local"), "127.0.0.1:", 10) == 0, "local: %s", dump(l));
    xport = port_of(jstr(l, "local"));
    CHECK_INT(xport, >, 0);
    a = client_port(xport);
    expect_echo(a, "new listener");
    l = find_str(OK(ch, "listener.list", "{}"), "name", "x");
    CHECK(l && jint(l, "accepted") == 1 && jint(l, "active") == 1, "x: %s", dump(l));

    l = OK(ch, "listener.pause", "{'name':'x'}");
    CHECK(strings_are(jarr(l, "paused"), "ctl"), "pause: %s", dump(l));
    l = find_str(OK(ch, "listener.list", "{}"), "name", "x");
    CHECK(strings_are(jarr(l, "paused"), "ctl"), "list: %s", dump(l));
    b = client_port(xport); /* the kernel queues it; connd must not take it */
    CHECK_INT(io_write_all(b, "q", 1), ==, 0);
    expect_silence(b, 300);
    CHECK_INT(json_array_size(OK(ch, "conn.list", "{'listener':'x'}")), ==, 1);
    l = OK(ch, "listener.resume", "{'name':'x'}");
    CHECK(strings_are(jarr(l, "paused"), NULL), "resume: %s", dump(l));
    CHECK_INT(io_read_exact(b, buf, 1), ==, 0);
    CHECK_STR(buf, "q");
    CHECK_INT(jint(find_str(OK(ch, "listener.list", "{}"), "name", "x"), "accepted"), ==,
              2);

    r = OK(ch, "listener.remove", "{'name':'x'}");
    CHECK_STR(jstr(r, "name"), "x");
    CHECK_INT(jint(r, "active"), ==, 2);
    CHECK(find_str(OK(ch, "listener.list", "{}"), "name", "x") == NULL, "x still listed");
    expect_echo(a, "kept"); /* existing connections stay */
    expect_echo(b, "kept too");
    CHECK_INT(json_array_size(OK(ch, "conn.list", "{'listener':'x'}")), ==, 2);
    CHECK(tcp_connect("127.0.0.1", xport) < 0, "removed listener still accepts");
}
END_TEST

START_TEST(test_plugin_list_and_load)
{
    struct chan *ch;
    json_t *r, *p, *err;
    long long abi;
    long long id;
    int a;

    start_std();
    ch = ctl();
    r = OK(ch, "plugin.list", "{}");
    CHECK_INT(json_array_size(r), ==, 4);
    p = find_str(r, "name", "tp");
    CHECK(p && strstr(jstr(p, "file"), "testplug.so"), "tp: %s", dump(r));
    abi = jint(p, "abi");
    CHECK_INT(abi, >, 0);
    CHECK_INT(jint(p, "connections"), ==, 0);
    CHECK(strstr(jstr(find_str(r, "name", "discard"), "file"), "discard.so"), "discard");

    p = OK(ch, "plugin.load", "{'name':'d2','file':'discard.so'}");
    CHECK_STR(jstr(p, "name"), "d2");
    CHECK(strstr(jstr(p, "file"), "discard.so") != NULL, "file: %s", dump(p));
    CHECK_INT(jint(p, "abi"), ==, abi);
    CHECK_INT(jint(p, "connections"), ==, 0);
    CHECK(find_str(OK(ch, "plugin.list", "{}"), "name", "d2"), "d2 not listed");

    /* the new plugin is usable */
    a = client("e");
    id = conn_id(ch, a);
    OK(ch, "conn.set_notify", "{'id':%lld,'plugin':'d2'}", id);
    CHECK_INT(io_write_all(a, "x", 1), ==, 0);
    expect_silence(a, 200);
    CHECK_INT(jint(find_str(OK(ch, "plugin.list", "{}"), "name", "d2"), "connections"),
              ==, 1);

    err = ERR(-32003, ch, "plugin.load", "{'name':'d9','file':'no-such-plugin.so'}");
    CHECK(strstr(jstr(err, "message"), "no-such-plugin.so"), "message: %s", dump(err));
    CHECK_STR(jstr(jget(err, "data"), "errno"), "ENOENT");
    CHECK_INT(json_array_size(OK(ch, "plugin.list", "{}")), ==, 5);
}
END_TEST

/* The generation of plugin `name` in a plugin.list result that is (not)
 * retired, or NULL. */
static json_t *generation(json_t *list, const char *name, bool retired)
{
    size_t i;
    json_t *p;

    json_array_foreach(list, i, p)
    {
        if (!strcmp(jstr(p, "name"), name) && jbool(p, "retired") == retired)
            return p;
    }
    return NULL;
}

START_TEST(test_plugin_load_of_a_loaded_name_serves_new_connections_only)
{
    struct chan *ch;
    json_t *p, *list;
    int a, b;

    start_std();
    ch = ctl();
    a = client("e"); /* on tp generation 1: echo */
    conn_id(ch, a);
    /* generation 2 of tp without "echo" */
    p = OK(ch, "plugin.load", "{'name':'tp','file':'%s/testplug.so','config':{}}",
           CONND_TEST_PLUGIN_DIR);
    CHECK_STR(jstr(p, "name"), "tp");
    CHECK_INT(jint(p, "generation"), ==, 2);
    CHECK(!jbool(p, "retired"), "new generation retired: %s", dump(p));
    list = OK(ch, "plugin.list", "{}");
    p = generation(list, "tp", true);
    CHECK(p && jint(p, "generation") == 1 && jint(p, "connections") == 1, "old: %s",
          dump(list));
    p = generation(list, "tp", false);
    CHECK(p && jint(p, "generation") == 2 && jint(p, "connections") == 0, "new: %s",
          dump(list));

    b = client("e"); /* a new connection gets generation 2 */
    CHECK_INT(io_write_all(b, "new", 3), ==, 0);
    expect_silence(b, 300);
    expect_echo(a, "old code still serves"); /* the old one keeps generation 1 */

    /* a failed load of the name changes nothing */
    ERR(-32003, ch, "plugin.load", "{'name':'tp','file':'no-such-plugin.so'}");
    expect_echo(a, "still");
    CHECK_INT(jint(generation(OK(ch, "plugin.list", "{}"), "tp", false), "generation"),
              ==, 2);

    /* generation 1 goes with its last connection */
    untrack_close(a);
    for (uint64_t end = now_ms() + 3000;
         generation(OK(ch, "plugin.list", "{}"), "tp", true);)
        CHECK(now_ms() < end, "retired generation never unloaded");
}
END_TEST

START_TEST(test_rpc_methods_lists_every_method_with_params_and_role)
{
    struct chan *ch;
    json_t *list, *m;
    size_t i;

    start_std();
    ch = ctl();
    list = OK(ch, "rpc.methods", "{}");
    CHECK_INT(json_array_size(list), ==, N_METHODS);
    for (i = 0; i < N_METHODS; i++) {
        const struct method_row *row = &method_rows[i];
        m = find_str(list, "name", row->name);
        CHECK(m != NULL, "rpc.methods lacks %s", row->name);
        CHECK(jbool(m, "readonly") == row->readonly, "%s: readonly %s", row->name,
              dump(m));
        if (row->param_word)
            CHECK(strstr(jstr(m, "params"), row->param_word), "%s params: %s", row->name,
                  dump(m));
        else
            jstr(m, "params");
    }
    json_array_foreach(list, i, m)
    {
        size_t k;
        for (k = 0; k < N_METHODS && strcmp(method_rows[k].name, jstr(m, "name")); k++)
            ;
        CHECK(k < N_METHODS, "unexpected method %s", dump(m));
    }
}
END_TEST

#define RELOAD_HEAD "{\"plugin_dir\":\"@PLUGINS@\",\"shutdown_timeout_ms\":1000,"
#define RELOAD_A                                                                         \
    RELOAD_HEAD "\"plugins\":[" TESTPLUG(                                                \
        "tp", "{\"echo\":true}") "],"                                                    \
                                 "\"listeners\":[" LISTENER("e", "tp", "") "]}"
#define RELOAD_B_PLUGINS TESTPLUG("tp", "{\"echo\":true}") "," PLUGIN("d3", "discard.so")
#define RELOAD_B_LISTENERS                                                               \
    LISTENER("e", "tp", "") "," LISTENER("r", "tp", "") "," LISTENER("r2", "d3", "")

START_TEST(test_daemon_reload_applies_a_new_config_and_keeps_the_old_on_error)
{
    struct chan *ch;
    json_t *r, *ls, *err;
    int a, b, rport, r2port;

    start(RELOAD_A);
    ch = ctl();
    a = client("e");
    expect_echo(a, "before");

    write_config(RELOAD_HEAD "\"plugins\":[" RELOAD_B_PLUGINS "],"
                             "\"listeners\":[" RELOAD_B_LISTENERS "]}");
    r = OK(ch, "daemon.reload", "{}");
    CHECK(jbool(r, "reloaded"), "reload: %s", dump(r));
    CHECK_STR(jstr(r, "config"), D.cfg_path);
    ls = OK(ch, "listener.list", "{}");
    CHECK_INT(json_array_size(ls), ==, 3);
    rport = port_of(jstr(find_str(ls, "name", "r"), "local"));
    r2port = port_of(jstr(find_str(ls, "name", "r2"), "local"));
    b = client_port(rport);
    expect_echo(b, "new listener");
    CHECK_INT(io_write_all(client_port(r2port), "x", 1), ==, 0);
    CHECK(find_str(OK(ch, "plugin.list", "{}"), "name", "d3"), "d3 not loaded");
    expect_echo(a, "kept"); /* connections stay up across a reload */

    /* not JSON */
    write_config("{ \"listeners\": [");
    ERR(-32602, ch, "daemon.reload", "{}");
    /* an unknown key, named by its path */
    write_config(RELOAD_HEAD "\"plugins\":[" RELOAD_B_PLUGINS "],"
                             "\"listeners\":[{\"name\":\"e\",\"host\":\"127.0.0.1\","
                             "\"port\":0,\"plugin\":\"tp\",\"frobnicate\":1}]}");
    err = ERR(-32602, ch, "daemon.reload", "{}");
    CHECK(strstr(jstr(err, "message"), "frobnicate"), "message: %s", dump(err));
    /* a new listener on a port in use: nothing of this reload stays */
    write_config(
        RELOAD_HEAD "\"plugins\":[" RELOAD_B_PLUGINS "," PLUGIN(
            "d4", "discard.so") "],\"listeners\":[" RELOAD_B_LISTENERS
                                ",{\"name\":\"z\",\"host\":\"127.0.0.1\",\"port\":%d,"
                                "\"plugin\":\"d4\"}]}",
        rport);
    err = ERR(-32602, ch, "daemon.reload", "{}");
    CHECK(strstr(jstr(err, "message"), "z"), "message: %s", dump(err));
    CHECK(find_str(OK(ch, "plugin.list", "{}"), "name", "d4") == NULL,
          "d4 stayed loaded");

    ls = OK(ch, "listener.list", "{}");
    CHECK_INT(json_array_size(ls), ==, 3);
    CHECK(find_str(ls, "name", "z") == NULL, "z was started");
    expect_echo(client_port(rport), "old config runs");
    expect_echo(client("e"), "and e");
    expect_echo(b, "still");
    CHECK_INT(jint(OK(ch, "status", "{}"), "listeners"), ==, 3);
    /* started with -s and the files name no control socket: nothing of
     * control changed, so there is nothing to warn about */
    daemon_drain_log(&D, 50);
    CHECK(!strstr(D.log, "need a restart"),
          "reload warned about an unchanged control socket");
}
END_TEST

START_TEST(test_daemon_shutdown_replies_drains_refuses_new_work_then_exits_zero)
{
    struct chan *ch;
    struct stat st;
    uint64_t t0;
    json_t *r;
    int a, port, rc;

    start_std();
    ch = ctl();
    a = client("e");
    conn_id(ch, a);
    expect_echo(a, "hi");
    port = daemon_port(&D, "e");
    r = OK(ch, "daemon.shutdown", "{'timeout_ms':5000}");
    CHECK(jbool(r, "stopping"), "shutdown: %s", dump(r));
    CHECK_INT(jint(r, "connections"), ==, 1);
    CHECK_INT(jint(r, "timeout_ms"), ==, 5000);
    CHECK_INT(io_expect_eof(a, 3000), ==, 1); /* graceful close: FIN */

    /* draining: the session still answers, new work is refused */
    CHECK(jbool(OK(ch, "status", "{}"), "stopping"), "status does not say stopping");
    ERR(-32005, ch, "conn.connect", "{'host':'127.0.0.1','port':%d,'plugin':'tp'}", port);
    ERR(-32005, ch, "listener.add",
        "{'name':'x','host':'127.0.0.1','port':0,'plugin':'tp'}");
    CHECK(tcp_connect("127.0.0.1", port) < 0, "listener e still accepts");

    /* the last connection goes: connd exits 0 without waiting the deadline */
    t0 = now_ms();
    untrack_close(a);
    rc = daemon_stop(&D, 0, 5000); /* signal 0: only wait */
    CHECK_INT(rc, ==, 0);
    CHECK(now_ms() - t0 < 2500, "exit took %llu ms", (unsigned long long)(now_ms() - t0));
    CHECK(chan_line(ch, 1000) == NULL && ch->eof, "control session not closed");
    CHECK(stat(D.ctl_path, &st) < 0 && errno == ENOENT, "socket file left behind");
}
END_TEST

/* ====================================================================== */
/* bulk                                                                    */
/* ====================================================================== */

struct trio {
    struct chan *ch;
    int a1, a2, b; /* a1, a2 on listener e (tp); b on f (tp2) */
    long long ida1, ida2, idb;
};

static struct trio trio_start(void)
{
    struct trio t;

    start_std();
    t.ch = ctl();
    t.a1 = client("e");
    t.a2 = client("e");
    t.b = client("f");
    t.ida1 = conn_id(t.ch, t.a1);
    t.ida2 = conn_id(t.ch, t.a2);
    t.idb = conn_id(t.ch, t.b);
    return t;
}

START_TEST(test_bulk_dry_run_returns_matches_and_changes_nothing)
{
    static const char *const ops[] = {"conn.close", "conn.abort", "conn.mute",
                                      "conn.unmute"};
    struct trio t = trio_start();
    json_t *r, *list, *e;
    size_t i;

    OK(t.ch, "conn.mute", "{'id':%lld}", t.idb); /* so unmute has something to undo */
    for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        long long want[] = {t.ida1, t.ida2};
        r = OK(t.ch, ops[i], "{'select':{'listener':'e'},'dry_run':true}");
        CHECK(same_ids(jarr(r, "matched"), want, 2), "%s: %s", ops[i], dump(r));
        CHECK_INT(jint(r, "count"), ==, 2);
        CHECK(jbool(r, "dry_run"), "%s: %s", ops[i], dump(r));
        r = OK(t.ch, ops[i], "{'id':%lld,'dry_run':true}", t.idb);
        CHECK(same_ids(jarr(r, "matched"), &t.idb, 1), "%s by id: %s", ops[i], dump(r));
    }
    list = OK(t.ch, "conn.list", "{}");
    CHECK_INT(json_array_size(list), ==, 3);
    json_array_foreach(list, i, e)
    {
        CHECK_STR(jstr(e, "state"), "open");
        CHECK(jbool(e, "muted") == (jint(e, "id") == t.idb), "mute changed: %s", dump(e));
    }
    expect_echo(t.a1, "a1");
    expect_echo(t.a2, "a2");
    OK(t.ch, "conn.unmute", "{'id':%lld}", t.idb);
    expect_echo(t.b, "b");
}
END_TEST

START_TEST(test_bulk_mute_and_unmute_by_listener_act_on_matches_only)
{
    struct trio t = trio_start();
    long long want[2];
    json_t *r, *list;
    char buf[2] = {0};

    want[0] = t.ida1;
    want[1] = t.ida2;
    r = OK(t.ch, "conn.mute", "{'select':{'listener':'e'}}");
    CHECK(same_ids(jarr(r, "matched"), want, 2) && !jbool(r, "dry_run"), "mute: %s",
          dump(r));
    list = OK(t.ch, "conn.list", "{}");
    CHECK(jbool(find_id(list, "id", t.ida1), "muted"), "a1 not muted");
    CHECK(jbool(find_id(list, "id", t.ida2), "muted"), "a2 not muted");
    CHECK(!jbool(find_id(list, "id", t.idb), "muted"), "b muted");
    CHECK_INT(io_write_all(t.a1, "m", 1), ==, 0);
    expect_silence(t.a1, 300);
    expect_echo(t.b, "b works");

    r = OK(t.ch, "conn.unmute", "{'select':{'listener':'e'}}");
    CHECK(same_ids(jarr(r, "matched"), want, 2), "unmute: %s", dump(r));
    CHECK_INT(io_read_exact(t.a1, buf, 1), ==, 0);
    CHECK_STR(buf, "m");
    expect_echo(t.a2, "a2 works");
}
END_TEST

START_TEST(test_bulk_close_by_listener_closes_only_its_connections)
{
    struct trio t = trio_start();
    long long want[2];
    json_t *r;

    want[0] = t.ida1;
    want[1] = t.ida2;
    r = OK(t.ch, "conn.close", "{'select':{'listener':'e'}}");
    CHECK(same_ids(jarr(r, "matched"), want, 2), "close: %s", dump(r));
    CHECK_INT(jint(r, "count"), ==, 2);
    CHECK_INT(io_expect_eof(t.a1, 3000), ==, 1);
    CHECK_INT(io_expect_eof(t.a2, 3000), ==, 1);
    expect_echo(t.b, "b stays");
    untrack_close(t.a1);
    untrack_close(t.a2);
    for (uint64_t end = now_ms() + 3000;
         json_array_size(OK(t.ch, "conn.list", "{}")) != 1;) {
        CHECK(now_ms() < end, "closed connections still listed");
        usleep(20000);
    }
}
END_TEST

START_TEST(test_bulk_abort_by_plugin_resets_only_its_connections)
{
    struct trio t = trio_start();
    json_t *r;

    r = OK(t.ch, "conn.abort", "{'select':{'plugin':'tp2'}}");
    CHECK(same_ids(jarr(r, "matched"), &t.idb, 1), "abort: %s", dump(r));
    CHECK_INT(io_expect_eof(t.b, 3000), ==, -ECONNRESET);
    expect_echo(t.a1, "a1 stays");
    expect_echo(t.a2, "a2 stays");
    CHECK_INT(json_array_size(OK(t.ch, "conn.list", "{}")), ==, 2);
}
END_TEST

START_TEST(test_bulk_remote_prefix_and_combined_selectors)
{
    struct trio t = trio_start();
    long long all[3], want[2];
    json_t *r, *list;

    all[0] = t.ida1;
    all[1] = t.ida2;
    all[2] = t.idb;
    r = OK(t.ch, "conn.mute", "{'select':{'remote_prefix':'127.0.0.1:'},'dry_run':true}");
    CHECK(same_ids(jarr(r, "matched"), all, 3), "all: %s", dump(r));
    r = OK(t.ch, "conn.mute", "{'select':{'remote_prefix':'10.'},'dry_run':true}");
    CHECK(same_ids(jarr(r, "matched"), NULL, 0), "none: %s", dump(r));
    /* selectors combine with AND */
    want[0] = t.ida1;
    want[1] = t.ida2;
    r = OK(t.ch, "conn.close",
           "{'select':{'listener':'e','plugin':'tp'},'dry_run':true}");
    CHECK(same_ids(jarr(r, "matched"), want, 2), "e and tp: %s", dump(r));
    r = OK(t.ch, "conn.close",
           "{'select':{'listener':'e','plugin':'tp2'},'dry_run':true}");
    CHECK(same_ids(jarr(r, "matched"), NULL, 0), "e and tp2: %s", dump(r));
    /* one peer by its address */
    r = OK(t.ch, "conn.mute", "{'select':{'remote_prefix':'127.0.0.1:%d'}}",
           local_port(t.a2));
    CHECK(same_ids(jarr(r, "matched"), &t.ida2, 1), "a2: %s", dump(r));
    list = OK(t.ch, "conn.list", "{}");
    CHECK(!jbool(find_id(list, "id", t.ida1), "muted"), "a1 muted");
    CHECK(jbool(find_id(list, "id", t.ida2), "muted"), "a2 not muted");
    CHECK(!jbool(find_id(list, "id", t.idb), "muted"), "b muted");
}
END_TEST

START_TEST(test_bulk_idle_ms_gt_selects_quiet_connections)
{
    struct chan *ch;
    long long idq, ida;
    json_t *r;
    int quiet, active;

    start_std();
    ch = ctl();
    quiet = client("e");
    active = client("e");
    idq = conn_id(ch, quiet);
    ida = conn_id(ch, active);
    pause_ms(700);
    expect_echo(active, "busy");
    r = OK(ch, "conn.close", "{'select':{'idle_ms_gt':400},'dry_run':true}");
    CHECK(same_ids(jarr(r, "matched"), &idq, 1), "idle > 400: %s", dump(r));
    r = OK(ch, "conn.close", "{'select':{'idle_ms_gt':60000}}");
    CHECK(same_ids(jarr(r, "matched"), NULL, 0), "idle > 60 s: %s", dump(r));
    r = OK(ch, "conn.close", "{'select':{'idle_ms_gt':400}}");
    CHECK(same_ids(jarr(r, "matched"), &idq, 1), "close idle: %s", dump(r));
    CHECK_INT(io_expect_eof(quiet, 3000), ==, 1);
    expect_echo(active, "still here");
    CHECK_STR(jstr(OK(ch, "conn.show", "{'id':%lld}", ida), "state"), "open");
}
END_TEST

/* ====================================================================== */
/* errors                                                                  */
/* ====================================================================== */

/* A request line (' for ", @ID@ an open connection, @CLOSING@ one that is
 * closing, @NOID@ an id never used, @BUSY@ a port in use) and the error it
 * must get: code, the reply's id as JSON (' for "), and optionally
 * error.data.errno and a word of error.message. */
static const struct err_row {
    const char *what, *line;
    int code;
    const char *id, *errno_name, *says;
} err_rows[] = {
    /* -32700: not JSON, or not UTF-8 */
    {"a truncated object", "{'jsonrpc':'2.0','id':1,'method':'status'", -32700, "null",
     NULL, NULL},
    {"plain text", "hello", -32700, "null", NULL, NULL},
    {"trailing garbage", "{'jsonrpc':'2.0','id':1,'method':'status'} x", -32700, "null",
     NULL, NULL},
    {"a duplicate key", "{'jsonrpc':'2.0','id':1,'id':2,'method':'status'}", -32700,
     "null", NULL, NULL},
    {"a NUL in a string",
     "{'jsonrpc':'2.0','id':1,'method':'conn.write','params':{'id':@ID@,'data':'"
     "a\\u0000b'}}",
     -32700, "null", NULL, NULL},
    {"invalid UTF-8 in a method name",
     "{'jsonrpc':'2.0','id':1,'method':'sta\xff\xfetus'}", -32700, "null", NULL, NULL},
    {"invalid UTF-8 in data",
     "{'jsonrpc':'2.0','id':1,'method':'conn.write','params':{'id':@ID@,'data':'\xc3\x28'"
     "}}",
     -32700, "null", NULL, NULL},
    {"an overlong UTF-8 sequence",
     "{'jsonrpc':'2.0','id':1,'method':'conn.write','params':{'id':@ID@,'data':'\xc0\xaf'"
     "}}",
     -32700, "null", NULL, NULL},
    {"a UTF-8 encoded surrogate",
     "{'jsonrpc':'2.0','id':1,'method':'conn.write',"
     "'params':{'id':@ID@,'data':'\xed\xa0\x80'}}",
     -32700, "null", NULL, NULL},
    /* -32600: valid JSON, not a request */
    {"a number", "42", -32600, "null", NULL, NULL},
    {"a string", "'status'", -32600, "null", NULL, NULL},
    {"null", "null", -32600, "null", NULL, NULL},
    {"an empty batch", "[]", -32600, "null", NULL, NULL},
    {"a batch", "[{'jsonrpc':'2.0','id':1,'method':'status'}]", -32600, "null", NULL,
     NULL},
    {"an empty object", "{}", -32600, "null", NULL, NULL},
    {"no jsonrpc member", "{'id':2,'method':'status'}", -32600, "2", NULL, NULL},
    {"jsonrpc 1.0", "{'jsonrpc':'1.0','id':3,'method':'status'}", -32600, "3", NULL,
     NULL},
    {"jsonrpc a number", "{'jsonrpc':2.0,'id':4,'method':'status'}", -32600, "4", NULL,
     NULL},
    {"an object id", "{'jsonrpc':'2.0','id':{'a':1},'method':'status'}", -32600, "null",
     NULL, NULL},
    {"an array id", "{'jsonrpc':'2.0','id':[5],'method':'status'}", -32600, "null", NULL,
     NULL},
    {"a boolean id", "{'jsonrpc':'2.0','id':true,'method':'status'}", -32600, "null",
     NULL, NULL},
    {"no method", "{'jsonrpc':'2.0','id':6}", -32600, "6", NULL, NULL},
    {"a number method", "{'jsonrpc':'2.0','id':7,'method':7}", -32600, "7", NULL, NULL},
    /* -32601 */
    {"an unknown method", "{'jsonrpc':'2.0','id':8,'method':'conn.frobnicate'}", -32601,
     "8", NULL, "conn.frobnicate"},
    {"an empty method", "{'jsonrpc':'2.0','id':9,'method':''}", -32601, "9", NULL, NULL},
    {"a method in the wrong case", "{'jsonrpc':'2.0','id':10,'method':'STATUS'}", -32601,
     "10", NULL, NULL},
    {"an unknown method with a string id",
     "{'jsonrpc':'2.0','id':'req-11','method':'nope'}", -32601, "'req-11'", NULL, NULL},
    /* -32602 */
    {"params an array", "{'jsonrpc':'2.0','id':12,'method':'status','params':[1]}",
     -32602, "12", NULL, NULL},
    {"params a string", "{'jsonrpc':'2.0','id':13,'method':'conn.list','params':'e'}",
     -32602, "13", NULL, NULL},
    {"id 0", "{'jsonrpc':'2.0','id':14,'method':'conn.show','params':{'id':0}}", -32602,
     "14", NULL, NULL},
    {"a negative id", "{'jsonrpc':'2.0','id':15,'method':'conn.show','params':{'id':-1}}",
     -32602, "15", NULL, NULL},
    {"a string id param",
     "{'jsonrpc':'2.0','id':16,'method':'conn.show','params':{'id':'@ID@'}}", -32602,
     "16", NULL, NULL},
    {"a fractional id param",
     "{'jsonrpc':'2.0','id':17,'method':'conn.show','params':{'id':1.5}}", -32602, "17",
     NULL, NULL},
    {"no id param", "{'jsonrpc':'2.0','id':18,'method':'conn.show','params':{}}", -32602,
     "18", NULL, NULL},
    {"no params where id is required", "{'jsonrpc':'2.0','id':19,'method':'conn.close'}",
     -32602, "19", NULL, NULL},
    {"an unknown param",
     "{'jsonrpc':'2.0','id':20,'method':'conn.show','params':{'id':@ID@,'verbose':true}}",
     -32602, "20", NULL, "verbose"},
    {"a listener filter of the wrong type",
     "{'jsonrpc':'2.0','id':21,'method':'conn.list','params':{'listener':5}}", -32602,
     "21", NULL, NULL},
    {"invalid base64 characters",
     "{'jsonrpc':'2.0','id':22,'method':'conn.write',"
     "'params':{'id':@ID@,'data_base64':'!!!!'}}",
     -32602, "22", NULL, NULL},
    {"base64 of a bad length",
     "{'jsonrpc':'2.0','id':23,'method':'conn.write','params':{'id':@ID@,'data_base64':'"
     "abc'}}",
     -32602, "23", NULL, NULL},
    {"base64 with padding inside",
     "{'jsonrpc':'2.0','id':24,'method':'conn.write',"
     "'params':{'id':@ID@,'data_base64':'YQ==YQ=='}}",
     -32602, "24", NULL, NULL},
    {"neither data nor data_base64",
     "{'jsonrpc':'2.0','id':25,'method':'conn.write','params':{'id':@ID@}}", -32602, "25",
     NULL, NULL},
    {"both data and data_base64",
     "{'jsonrpc':'2.0','id':26,'method':'conn.write',"
     "'params':{'id':@ID@,'data':'a','data_base64':'YQ=='}}",
     -32602, "26", NULL, NULL},
    {"data not a string",
     "{'jsonrpc':'2.0','id':27,'method':'conn.write','params':{'id':@ID@,'data':5}}",
     -32602, "27", NULL, NULL},
    {"id and select together",
     "{'jsonrpc':'2.0','id':28,'method':'conn.mute',"
     "'params':{'id':@ID@,'select':{'listener':'e'}}}",
     -32602, "28", NULL, NULL},
    {"an unknown selector",
     "{'jsonrpc':'2.0','id':29,'method':'conn.close','params':{'select':{'frob':1}}}",
     -32602, "29", NULL, "frob"},
    {"select not an object",
     "{'jsonrpc':'2.0','id':30,'method':'conn.abort','params':{'select':'e'}}", -32602,
     "30", NULL, NULL},
    {"a negative idle_ms_gt",
     "{'jsonrpc':'2.0','id':31,'method':'conn.mute','params':{'select':{'idle_ms_gt':-1}}"
     "}",
     -32602, "31", NULL, NULL},
    {"dry_run not a boolean",
     "{'jsonrpc':'2.0','id':32,'method':'conn.unmute','params':{'id':@ID@,'dry_run':'yes'"
     "}}",
     -32602, "32", NULL, NULL},
    {"nodelay not a boolean",
     "{'jsonrpc':'2.0','id':33,'method':'conn.setopt','params':{'id':@ID@,'nodelay':1}}",
     -32602, "33", NULL, NULL},
    {"a negative keepalive",
     "{'jsonrpc':'2.0','id':34,'method':'conn.setopt','params':{'id':@ID@,'keepalive_s':-"
     "1}}",
     -32602, "34", NULL, NULL},
    {"connect without a port",
     "{'jsonrpc':'2.0','id':35,'method':'conn.connect',"
     "'params':{'host':'127.0.0.1','plugin':'tp'}}",
     -32602, "35", NULL, NULL},
    {"connect to port 0",
     "{'jsonrpc':'2.0','id':36,'method':'conn.connect',"
     "'params':{'host':'127.0.0.1','port':0,'plugin':'tp'}}",
     -32602, "36", NULL, NULL},
    {"connect to port 70000",
     "{'jsonrpc':'2.0','id':37,'method':'conn.connect',"
     "'params':{'host':'127.0.0.1','port':70000,'plugin':'tp'}}",
     -32602, "37", NULL, NULL},
    {"connect to an empty host",
     "{'jsonrpc':'2.0','id':38,'method':'conn.connect','params':{'host':'','port':1,"
     "'plugin':'tp'}}",
     -32602, "38", NULL, NULL},
    {"connect with an unknown family",
     "{'jsonrpc':'2.0','id':39,'method':'conn.connect','params':{'host':'127.0.0.1',"
     "'port':1,'plugin':'tp','family':'ipx'}}",
     -32602, "39", NULL, NULL},
    {"an unknown event type",
     "{'jsonrpc':'2.0','id':40,'method':'events.subscribe','params':{'types':['bogus']}}",
     -32602, "40", NULL, NULL},
    {"event types not an array",
     "{'jsonrpc':'2.0','id':41,'method':'events.subscribe','params':{'types':'accepted'}"
     "}",
     -32602, "41", NULL, NULL},
    {"listener.add without a host",
     "{'jsonrpc':'2.0','id':42,'method':'listener.add',"
     "'params':{'name':'x','port':0,'plugin':'tp'}}",
     -32602, "42", NULL, NULL},
    {"listener.add with an unknown field",
     "{'jsonrpc':'2.0','id':43,'method':'listener.add','params':{'name':'x',"
     "'host':'127.0.0.1','port':0,'plugin':'tp','frob':1}}",
     -32602, "43", NULL, "frob"},
    {"plugin.load with a bad name",
     "{'jsonrpc':'2.0','id':44,'method':'plugin.load','params':{'name':'a/b',"
     "'file':'discard.so'}}",
     -32602, "44", NULL, NULL},
    {"plugin.load with a relative path",
     "{'jsonrpc':'2.0','id':45,'method':'plugin.load','params':{'name':'x',"
     "'file':'../discard.so'}}",
     -32602, "45", NULL, NULL},
    {"a shutdown timeout that is not a number",
     "{'jsonrpc':'2.0','id':46,'method':'daemon.shutdown','params':{'timeout_ms':'soon'}"
     "}",
     -32602, "46", NULL, NULL},
    {"set_notify without a plugin",
     "{'jsonrpc':'2.0','id':47,'method':'conn.set_notify','params':{'id':@ID@}}", -32602,
     "47", NULL, NULL},
    /* -32001: no such connection */
    {"conn.show of an unknown id",
     "{'jsonrpc':'2.0','id':50,'method':'conn.show','params':{'id':@NOID@}}", -32001,
     "50", NULL, NULL},
    {"conn.mute of an unknown id",
     "{'jsonrpc':'2.0','id':51,'method':'conn.mute','params':{'id':@NOID@}}", -32001,
     "51", NULL, NULL},
    {"conn.unmute of an unknown id",
     "{'jsonrpc':'2.0','id':52,'method':'conn.unmute','params':{'id':@NOID@}}", -32001,
     "52", NULL, NULL},
    {"conn.write to an unknown id",
     "{'jsonrpc':'2.0','id':53,'method':'conn.write','params':{'id':@NOID@,'data':'x'}}",
     -32001, "53", NULL, NULL},
    {"conn.close of an unknown id",
     "{'jsonrpc':'2.0','id':54,'method':'conn.close','params':{'id':@NOID@}}", -32001,
     "54", NULL, NULL},
    {"conn.abort of an unknown id",
     "{'jsonrpc':'2.0','id':55,'method':'conn.abort','params':{'id':@NOID@}}", -32001,
     "55", NULL, NULL},
    {"conn.set_notify of an unknown id",
     "{'jsonrpc':'2.0','id':56,'method':'conn.set_notify',"
     "'params':{'id':@NOID@,'plugin':'discard'}}",
     -32001, "56", NULL, NULL},
    {"conn.setopt of an unknown id",
     "{'jsonrpc':'2.0','id':57,'method':'conn.setopt','params':{'id':@NOID@,'nodelay':"
     "true}}",
     -32001, "57", NULL, NULL},
    /* -32002: not connected */
    {"conn.write to a closing connection",
     "{'jsonrpc':'2.0','id':60,'method':'conn.write','params':{'id':@CLOSING@,'data':'x'}"
     "}",
     -32002, "60", NULL, NULL},
    {"conn.setopt on a closing connection",
     "{'jsonrpc':'2.0','id':61,'method':'conn.setopt',"
     "'params':{'id':@CLOSING@,'nodelay':true}}",
     -32002, "61", NULL, NULL},
    {"conn.set_notify on a closing connection",
     "{'jsonrpc':'2.0','id':62,'method':'conn.set_notify',"
     "'params':{'id':@CLOSING@,'plugin':'discard'}}",
     -32002, "62", NULL, NULL},
    /* -32003: plugin error */
    {"set_notify to an unknown plugin",
     "{'jsonrpc':'2.0','id':70,'method':'conn.set_notify','params':{'id':@ID@,"
     "'plugin':'nope'}}",
     -32003, "70", NULL, "nope"},
    {"connect with an unknown plugin",
     "{'jsonrpc':'2.0','id':71,'method':'conn.connect','params':{'host':'127.0.0.1',"
     "'port':@BUSY@,'plugin':'nope'}}",
     -32003, "71", NULL, "nope"},
    {"listener.add with an unknown plugin",
     "{'jsonrpc':'2.0','id':72,'method':'listener.add','params':{'name':'x',"
     "'host':'127.0.0.1','port':0,'plugin':'nope'}}",
     -32003, "72", NULL, "nope"},
    {"plugin.load of a file with the wrong ABI",
     "{'jsonrpc':'2.0','id':73,'method':'plugin.load','params':{'name':'x',"
     "'file':'@TPLUGINS@/bad_abi.so'}}",
     -32003, "73", "EPROTO", NULL},
    {"plugin.load of a missing file",
     "{'jsonrpc':'2.0','id':74,'method':'plugin.load','params':{'name':'x',"
     "'file':'no-such-plugin.so'}}",
     -32003, "74", "ENOENT", "no-such-plugin.so"},
    {"plugin.load of a file without the entry point",
     "{'jsonrpc':'2.0','id':75,'method':'plugin.load','params':{'name':'x',"
     "'file':'@TPLUGINS@/no_entry.so'}}",
     -32003, "75", NULL, NULL},
    {"plugin.load of a plugin whose init fails",
     "{'jsonrpc':'2.0','id':76,'method':'plugin.load','params':{'name':'x',"
     "'file':'@TPLUGINS@/init_fail.so'}}",
     -32003, "76", NULL, NULL},
    {"plugin.load of a loaded name from a missing file",
     "{'jsonrpc':'2.0','id':77,'method':'plugin.load','params':{'name':'tp',"
     "'file':'no-such-plugin.so'}}",
     -32003, "77", "ENOENT", NULL},
    /* -32004: listener error */
    {"listener.add on a port in use",
     "{'jsonrpc':'2.0','id':80,'method':'listener.add','params':{'name':'x',"
     "'host':'127.0.0.1','port':@BUSY@,'plugin':'tp'}}",
     -32004, "80", "EADDRINUSE", NULL},
    {"listener.add with a taken name",
     "{'jsonrpc':'2.0','id':81,'method':'listener.add','params':{'name':'e',"
     "'host':'127.0.0.1','port':0,'plugin':'tp'}}",
     -32004, "81", NULL, NULL},
    {"listener.remove of an unknown name",
     "{'jsonrpc':'2.0','id':82,'method':'listener.remove','params':{'name':'nope'}}",
     -32004, "82", NULL, "nope"},
    {"listener.pause of an unknown name",
     "{'jsonrpc':'2.0','id':83,'method':'listener.pause','params':{'name':'nope'}}",
     -32004, "83", NULL, NULL},
    {"listener.resume of an unknown name",
     "{'jsonrpc':'2.0','id':84,'method':'listener.resume','params':{'name':'nope'}}",
     -32004, "84", NULL, NULL},
};

START_TEST(test_every_error_row_gets_its_code_and_the_session_goes_on)
{
    struct chan *ch, *other;
    char idbuf[24], closingbuf[24], busybuf[16], greeting[16];
    long long id, closing;
    size_t failures = 0;
    int a, g;

    start_std();
    other = ctl();
    ch = ctl();
    a = client("e");
    id = conn_id(ch, a);
    g = client("g"); /* greeted, then closing until we close */
    closing = conn_id(ch, g);
    for (uint64_t end = now_ms() + 3000;
         strcmp(jstr(OK(ch, "conn.show", "{'id':%lld}", closing), "state"), "closing");)
        CHECK(now_ms() < end, "greet connection never started closing");
    snprintf(idbuf, sizeof(idbuf), "%lld", id);
    snprintf(closingbuf, sizeof(closingbuf), "%lld", closing);
    snprintf(busybuf, sizeof(busybuf), "%d", daemon_port(&D, "e"));
    const char *const vals[][2] = {{"@ID@", idbuf},
                                   {"@CLOSING@", closingbuf},
                                   {"@NOID@", "999999"},
                                   {"@BUSY@", busybuf},
                                   {"@TPLUGINS@", CONND_TEST_PLUGIN_DIR},
                                   {NULL, NULL}};

    for (size_t i = 0; i < sizeof(err_rows) / sizeof(err_rows[0]); i++) {
        const struct err_row *row = &err_rows[i];
        char *q = dq(row->line), *line = subst(q, vals), *wid = dq(row->id);
        json_t *reply = raw_reply(ch, line, strlen(line), 5000);
        json_t *want_id = json_loads(wid, JSON_DECODE_ANY, NULL);
        json_t *err = json_object_get(reply, "error"), *data;
        const char *why = NULL;

        if (!reply)
            why = "no reply";
        else if (!json_is_object(err) || json_object_get(reply, "result"))
            why = "not an error reply";
        else if (json_integer_value(json_object_get(err, "code")) != row->code)
            why = "wrong code";
        else if (!json_equal(json_object_get(reply, "id"), want_id))
            why = "wrong id";
        else if (!json_is_string(json_object_get(reply, "jsonrpc")))
            why = "no jsonrpc member";
        else if (!json_is_string(json_object_get(err, "message")) ||
                 !json_string_length(json_object_get(err, "message")))
            why = "no message";
        else if (row->says &&
                 !strstr(json_string_value(json_object_get(err, "message")), row->says))
            why = "message does not name the culprit";
        else if (row->errno_name &&
                 (!(data = json_object_get(err, "data")) ||
                  !json_is_string(json_object_get(data, "errno")) ||
                  strcmp(json_string_value(json_object_get(data, "errno")),
                         row->errno_name)))
            why = "wrong error.data.errno";
        if (why) {
            fprintf(
                stderr,
                "error row \"%s\": %s\n  request: %s\n  reply:   %s\n  want: %d, id %s\n",
                row->what, why, line, dump(reply), row->code, wid);
            failures++;
        }
        json_decref(want_id);
        free(q);
        free(line);
        free(wid);
    }
    CHECK(failures == 0, "%zu of %zu error rows failed (listed on stderr)", failures,
          sizeof(err_rows) / sizeof(err_rows[0]));

    /* nothing above closed a session, a connection or the daemon */
    CHECK_INT(jint(OK(ch, "status", "{}"), "pid"), ==, D.pid);
    CHECK_INT(jint(OK(other, "status", "{}"), "listeners"), ==, 4);
    expect_echo(a, "still open");
    CHECK_INT(io_read_exact(g, greeting, 16), ==, 0);
    CHECK_INT(greeting[15], ==, 15);
    CHECK(find_str(OK(ch, "listener.list", "{}"), "name", "x") == NULL, "x was added");
    CHECK_INT(json_array_size(OK(ch, "plugin.list", "{}")), ==, 4);
}
END_TEST

START_TEST(test_notifications_get_no_reply)
{
    /* Requests without an id, each followed by a request with one: the
     * first line back must be the latter's reply. */
    static const struct {
        const char *what, *line;
    } rows[] = {
        {"a mutating call",
         "{'jsonrpc':'2.0','method':'conn.mute','params':{'id':@ID@}}"},
        {"a read-only call", "{'jsonrpc':'2.0','method':'status'}"},
        {"an unknown connection",
         "{'jsonrpc':'2.0','method':'conn.close','params':{'id':999999}}"},
        {"invalid params", "{'jsonrpc':'2.0','method':'conn.show','params':{'id':'x'}}"},
        {"params not an object", "{'jsonrpc':'2.0','method':'status','params':[1]}"},
    };
    struct chan *ch;
    char idbuf[24];
    long long id;
    size_t failures = 0;
    int a;

    start_std();
    ch = ctl();
    a = client("e");
    id = conn_id(ch, a);
    snprintf(idbuf, sizeof(idbuf), "%lld", id);
    const char *const vals[][2] = {{"@ID@", idbuf}, {NULL, NULL}};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char *q = dq(rows[i].line), *line = subst(q, vals);
        json_t *reply;

        chan_send(ch, line, strlen(line));
        chan_send(ch, "\n", 1);
        reply = raw(ch, "{\"jsonrpc\":\"2.0\",\"id\":424242,\"method\":\"status\"}");
        if (!reply || json_integer_value(json_object_get(reply, "id")) != 424242) {
            fprintf(stderr,
                    "notification \"%s\" got a reply\n  request: %s\n  reply:   %s\n",
                    rows[i].what, line, dump(reply));
            failures++;
            /* resynchronise: skip to the probe's reply */
            while (reply && json_integer_value(json_object_get(reply, "id")) != 424242)
                reply = chan_msg(ch, 2000);
        }
        free(q);
        free(line);
    }
    CHECK(failures == 0, "%zu of %zu notifications got a reply (listed on stderr)",
          failures, sizeof(rows) / sizeof(rows[0]));
    /* the notification ran */
    CHECK(jbool(OK(ch, "conn.show", "{'id':%lld}", id), "muted"),
          "conn.mute did not run");
}
END_TEST

/* JSON-RPC 2.0, section 4.1: "The Server MUST NOT reply to a Notification".
 * A well-formed request without an id naming an unknown method is one. */
START_TEST(test_notification_of_an_unknown_method_gets_no_reply)
{
    static const char note[] = "{\"jsonrpc\":\"2.0\",\"method\":\"no.such.method\"}\n";
    struct chan *ch;
    json_t *reply;

    start_std();
    ch = ctl();
    chan_send(ch, note, sizeof(note) - 1);
    reply = raw(ch, "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"status\"}");
    CHECK(json_integer_value(json_object_get(reply, "id")) == 7,
          "the notification got a reply: %s", dump(reply));
}
END_TEST

/* A request line of exactly len bytes (newline not counted). */
static char *padded_request(int id, size_t len)
{
    char head[64];
    int n = snprintf(head, sizeof(head),
                     "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"status\"", id);
    char *line = malloc(len + 2);

    CHECK(line && (size_t)n + 1 < len, "padded_request");
    memcpy(line, head, (size_t)n);
    memset(line + n, ' ', len - (size_t)n - 1);
    line[len - 1] = '}';
    line[len] = '\n';
    line[len + 1] = '\0';
    return line;
}

START_TEST(test_oversized_line_gets_one_error_and_the_session_goes_on)
{
    enum { MIB = 1024 * 1024 };
    static const size_t sizes[] = {MIB + 1, 3 * MIB};
    struct chan *ch, *other;
    json_t *r;
    char *line;

    start_std();
    other = ctl();
    ch = ctl();
    /* exactly 1 MiB is allowed */
    line = padded_request(1, MIB);
    chan_send(ch, line, MIB + 1);
    free(line);
    r = chan_msg(ch, 5000);
    CHECK(r && json_integer_value(json_object_get(r, "id")) == 1, "1 MiB: %s", dump(r));
    result_of(r);

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        line = padded_request(2, sizes[i]);
        chan_send(ch, line, sizes[i] + 1);
        free(line);
        r = raw(ch, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"status\"}");
        error_of(r, -32600);
        CHECK(json_is_null(jget(r, "id")), "oversized reply id: %s", dump(r));
        r = chan_msg(ch, 5000);
        CHECK(r && json_integer_value(json_object_get(r, "id")) == 3,
              "after a %zu byte line the next reply is %s", sizes[i], dump(r));
        result_of(r);
    }
    CHECK_INT(jint(OK(other, "status", "{}"), "pid"), ==, D.pid);
}
END_TEST

START_TEST(test_write_past_max_pending_is_limit_reached)
{
    enum { CHUNK = 16384 };
    static uint8_t chunk[CHUNK], got[CHUNK];
    struct sockaddr_in sin = {.sin_family = AF_INET};
    struct chan *ch;
    long long id, queued = 0;
    int fd, small = 4096, i;
    bool limited = false;
    char *b64;
    json_t *r;

    start_std();
    ch = ctl();
    /* a client with a small window that reads nothing for now */
    fd = track(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)daemon_port(&D, "cap"));
    CHECK(connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0, "connect");
    set_timeouts(fd, 5);
    id = conn_id(ch, fd);
    OK(ch, "conn.mute", "{'id':%lld}", id);
    OK(ch, "conn.setopt", "{'id':%lld,'sndbuf':4096}", id);
    CHECK_INT(jint(jget(OK(ch, "conn.show", "{'id':%lld}", id), "limits"), "max_pending"),
              ==, 65536);

    /* one write above the cap is refused outright */
    {
        static uint8_t over[70000];
        b64 = base64(over, sizeof(over));
        json_t *err =
            ERR(-32005, ch, "conn.write", "{'id':%lld,'data_base64':'%s'}", id, b64);
        free(b64);
        CHECK_STR(jstr(jget(err, "data"), "errno"), "ENOBUFS");
    }
    fill_random(chunk, CHUNK, 3);
    b64 = base64(chunk, CHUNK);
    for (i = 0; i < 400 && !limited; i++) {
        r = call(ch, "conn.write", "{'id':%lld,'data_base64':'%s'}", id, b64);
        if (json_object_get(r, "error")) {
            error_of(r, -32005);
            limited = true;
        } else {
            CHECK_INT(jint(result_of(r), "queued"), ==, CHUNK);
            queued += CHUNK;
        }
    }
    free(b64);
    CHECK(limited, "no -32005 after %lld bytes", queued);
    CHECK_INT(queued, >, 0);
    r = OK(ch, "conn.show", "{'id':%lld}", id);
    CHECK_INT(jint(r, "pending"), <=, 65536);
    CHECK_INT(jint(r, "pending"), >, 0);

    /* everything accepted arrives, nothing refused does */
    for (long long n = 0; n < queued; n += CHUNK) {
        CHECK_INT(io_read_exact(fd, got, CHUNK), ==, 0);
        CHECK(memcmp(got, chunk, CHUNK) == 0, "chunk at %lld differs", n);
    }
    expect_silence(fd, 200);
    for (uint64_t end = now_ms() + 3000;
         jint(OK(ch, "conn.show", "{'id':%lld}", id), "pending") != 0;)
        CHECK(now_ms() < end, "pending never drained");
    OK(ch, "conn.write", "{'id':%lld,'data':'ok'}", id);
    CHECK_INT(io_read_exact(fd, got, 2), ==, 0);
    CHECK(memcmp(got, "ok", 2) == 0, "write after the drain");
}
END_TEST

START_TEST(test_setopt_on_a_connecting_connection_is_not_connected)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    struct chan *ch;
    int lport, lfd, fill[2], fill_port[2], peer = -1;
    long long id;
    json_t *r;
    char buf[6] = {0};

    start_std();
    ch = ctl();
    /* A listener with a full accept queue: the daemon's SYNs go unanswered. */
    lfd = listen_tcp(0, &lport);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)lport);
    for (int i = 0; i < 2; i++) {
        fill[i] = track(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        connect(fill[i], (struct sockaddr *)&sin, sizeof(sin));
        fill_port[i] = local_port(fill[i]);
        usleep(50000);
    }
    r = OK(ch, "conn.connect", "{'host':'127.0.0.1','port':%d,'plugin':'tp'}", lport);
    id = jint(r, "id");
    pause_ms(300);
    r = OK(ch, "conn.show", "{'id':%lld}", id);
    CHECK_STR(jstr(r, "state"), "connecting");
    ERR(-32002, ch, "conn.setopt", "{'id':%lld,'nodelay':true}", id);
    /* a write while connecting is queued, not dropped */
    CHECK_INT(jint(OK(ch, "conn.write", "{'id':%lld,'data':'early'}", id), "queued"), ==,
              5);

    /* make room: the daemon's next SYN gets in */
    untrack_close(fill[1]);
    untrack_close(accept_within(lfd, 1000));
    for (uint64_t end = now_ms() + 8000; peer < 0;) {
        int fd = accept_within(lfd, (int)(end - now_ms()));
        socklen_t len = sizeof(sin);
        getpeername(fd, (struct sockaddr *)&sin, &len);
        if (ntohs(sin.sin_port) != fill_port[0] && ntohs(sin.sin_port) != fill_port[1])
            peer = fd;
    }
    CHECK_INT(io_read_exact(peer, buf, 5), ==, 0);
    CHECK_STR(buf, "early");
    for (uint64_t end = now_ms() + 3000;
         strcmp(jstr(OK(ch, "conn.show", "{'id':%lld}", id), "state"), "open");)
        CHECK(now_ms() < end, "never open");
    CHECK(jbool(OK(ch, "conn.setopt", "{'id':%lld,'nodelay':true}", id), "nodelay"),
          "nodelay");
}
END_TEST

/* ====================================================================== */
/* roles                                                                   */
/* ====================================================================== */

#define ROLES_CONFIG                                                                     \
    CONFIG("\"control\":{\"path\":\"@DIR@/control.sock\",\"mode\":\"0666\","             \
           "\"readonly_uids\":[65534],\"admin_uids\":[4242]},",                          \
           STD_PLUGINS, STD_LISTENERS)

/* A control connection made by a child running as uid (and gid) `uid`;
 * SO_PEERCRED records the connecting process, so the daemon sees that uid.
 * The fd comes back over SCM_RIGHTS. *pid_out: the child's pid. */
static int connect_as(uid_t uid, pid_t *pid_out)
{
    char cbuf[CMSG_SPACE(sizeof(int))] = {0}, byte = 0;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    struct cmsghdr *cm;
    int sv[2], fd = -1, st;
    pid_t pid;

    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
    pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        close(sv[0]);
        if (setgroups(0, NULL) == 0 && setgid(uid) == 0 && setuid(uid) == 0)
            fd = ctl_connect(&D);
        if (fd >= 0) {
            mh.msg_control = cbuf;
            mh.msg_controllen = sizeof(cbuf);
            cm = CMSG_FIRSTHDR(&mh);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cm), &fd, sizeof(int));
        }
        _exit(sendmsg(sv[1], &mh, 0) == 1 ? 0 : 1);
    }
    close(sv[1]);
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof(cbuf);
    if (recvmsg(sv[0], &mh, 0) == 1 && (cm = CMSG_FIRSTHDR(&mh)) &&
        cm->cmsg_type == SCM_RIGHTS)
        memcpy(&fd, CMSG_DATA(cm), sizeof(int));
    close(sv[0]);
    waitpid(pid, &st, 0);
    CHECK(fd >= 0, "uid %d could not connect to %s", (int)uid, D.ctl_path);
    set_timeouts(fd, 10);
    *pid_out = pid;
    return fd;
}

/* Start on ROLES_CONFIG so that other uids can reach the socket. */
static void start_roles(void)
{
    if (geteuid() != 0)
        return;
    start(ROLES_CONFIG);
    CHECK(chmod(D.dir, 0711) == 0, "chmod %s", D.dir);
}

/* Every method as uid: `allowed` says whether each row's role permits it;
 * the others get -32006 and change nothing. */
static void check_roles(uid_t uid, bool readonly_allowed, bool mutating_allowed)
{
    struct chan *admin, *peer;
    char idbuf[24], portbuf[16], refused[96];
    long long id;
    pid_t pid;
    json_t *r;
    int a;

    admin = ctl();
    a = client("e");
    id = conn_id(admin, a);
    snprintf(idbuf, sizeof(idbuf), "%lld", id);
    snprintf(portbuf, sizeof(portbuf), "%d", closed_port());
    const char *const vals[][2] = {{"@ID@", idbuf}, {"@PORT@", portbuf}, {NULL, NULL}};
    peer = chan_open(connect_as(uid, &pid));

    for (size_t i = 0; i < N_METHODS; i++) {
        const struct method_row *row = &method_rows[i];
        bool allowed = row->readonly ? readonly_allowed : mutating_allowed;
        char *params = subst(row->params, vals);
        r = call(peer, row->name, "%s", params);
        free(params);
        if (allowed) {
            CHECK(json_object_get(r, "result"), "uid %d: %s refused: %s", (int)uid,
                  row->name, dump(r));
        } else {
            CHECK(json_object_get(r, "error"), "uid %d may call %s: %s", (int)uid,
                  row->name, dump(r));
            error_of(r, -32006);
        }
    }
    /* a refused notification is not answered either */
    if (!mutating_allowed) {
        static const char note[] =
            "{\"jsonrpc\":\"2.0\",\"method\":\"conn.mute\",\"params\":{\"id\":%lld}}\n";
        char line[128];
        int n = snprintf(line, sizeof(line), note, id);
        chan_send(peer, line, (size_t)n);
        r = raw(peer, "{\"jsonrpc\":\"2.0\",\"id\":4242,\"method\":\"rpc.methods\"}");
        CHECK(json_integer_value(json_object_get(r, "id")) == 4242,
              "uid %d: a refused notification got a reply: %s", (int)uid, dump(r));
    }
    /* the refused calls changed nothing */
    r = OK(admin, "conn.show", "{'id':%lld}", id);
    CHECK_STR(jstr(r, "state"), "open");
    CHECK(!jbool(r, "muted"), "muted by a refused call");
    CHECK_STR(jstr(r, "plugin"), "tp");
    expect_echo(a, "untouched");
    r = OK(admin, "listener.list", "{}");
    CHECK(find_str(r, "name", "x") == NULL && find_str(r, "name", "e"),
          "listeners changed");
    CHECK(strings_are(jarr(find_str(r, "name", "e"), "paused"), NULL), "e paused");
    CHECK(find_str(OK(admin, "plugin.list", "{}"), "name", "d2") == NULL, "d2 loaded");
    CHECK(daemon_alive(), "connd stopped");
    CHECK(!jbool(OK(admin, "status", "{}"), "stopping"), "connd is stopping");
    daemon_drain_log(&D, 100);
    snprintf(refused, sizeof(refused), "conn.close refused for pid %d uid %d", (int)pid,
             (int)uid);
    CHECK(strstr(D.log, refused), "no \"%s\" in the log", refused);
}

START_TEST(test_readonly_uid_may_read_but_not_mutate)
{
    struct stat st;

    if (geteuid() != 0) {
        fprintf(stderr, "skipped: needs root to switch uids\n");
        return;
    }
    start_roles();
    CHECK(stat(D.ctl_path, &st) == 0 && (st.st_mode & 0777) == 0666, "mode %o",
          (unsigned)(st.st_mode & 0777));
    check_roles(65534, true, false);
}
END_TEST

START_TEST(test_uid_in_no_list_is_denied_everything)
{
    if (geteuid() != 0) {
        fprintf(stderr, "skipped: needs root to switch uids\n");
        return;
    }
    start_roles();
    check_roles(12345, false, false);
}
END_TEST

START_TEST(test_admin_uid_may_mutate)
{
    struct chan *peer;
    long long id;
    pid_t pid;
    char want[96];
    json_t *r;
    int a;

    if (geteuid() != 0) {
        fprintf(stderr, "skipped: needs root to switch uids\n");
        return;
    }
    start_roles();
    peer = chan_open(connect_as(4242, &pid));
    a = client("e");
    id = conn_id(peer, a);
    r = OK(peer, "conn.mute", "{'id':%lld}", id);
    CHECK(jbool(r, "muted"), "mute: %s", dump(r));
    OK(peer, "conn.close", "{'id':%lld}", id);
    CHECK_INT(io_expect_eof(a, 3000), ==, 1);
    daemon_drain_log(&D, 100);
    snprintf(want, sizeof(want), "control: conn.close id=%lld by pid %d uid 4242", id,
             (int)pid);
    CHECK(strstr(D.log, want), "no \"%s\" in the log", want);
}
END_TEST

/* ====================================================================== */
/* events                                                                  */
/* ====================================================================== */

START_TEST(test_events_arrive_in_order_with_dense_seq)
{
    static const char *const order[] = {"accepted", "muted", "sent", "closed"};
    struct chan *ch, *sub;
    long long id, token, last_ts = 0;
    uint64_t t0 = wall_ms();
    json_t *r, *ev[4];
    char buf[4] = {0};
    int a;

    start_std();
    ch = ctl();
    sub = ctl();
    r = OK(sub, "events.subscribe", "{'types':['accepted','muted','sent','closed']}");
    CHECK(jbool(r, "subscribed"), "subscribe: %s", dump(r));
    a = client("e");
    ev[0] = next_event(sub, 3000);
    CHECK(ev[0] != NULL, "no accepted event");
    id = jint(ev[0], "id");
    CHECK_INT(id, ==, conn_id(ch, a));
    OK(ch, "conn.mute", "{'id':%lld}", id);
    token = jint(OK(ch, "conn.write", "{'id':%lld,'data':'bye'}", id), "token");
    CHECK_INT(io_read_exact(a, buf, 3), ==, 0);
    untrack_close(a);
    for (int i = 1; i < 4; i++) {
        ev[i] = next_event(sub, 3000);
        CHECK(ev[i] != NULL, "no %s event", order[i]);
    }
    for (int i = 0; i < 4; i++) {
        CHECK_STR(jstr(ev[i], "type"), order[i]);
        CHECK_INT(jint(ev[i], "seq"), ==, i + 1);
        CHECK_INT(jint(ev[i], "id"), ==, id);
        CHECK_INT(jint(ev[i], "ts_ms"), >=, (long long)t0 - 1000);
        CHECK_INT(jint(ev[i], "ts_ms"), <=, (long long)wall_ms() + 1000);
        CHECK_INT(jint(ev[i], "ts_ms"), >=, last_ts);
        last_ts = jint(ev[i], "ts_ms");
    }
    CHECK_STR(jstr(ev[0], "listener"), "e");
    CHECK_STR(jstr(ev[1], "reason"), "ctl");
    CHECK_INT(jint(ev[2], "token"), ==, token);
    CHECK_INT(jint(ev[2], "bytes"), ==, 3);
    CHECK(next_event(sub, 200) == NULL, "an event of a type not subscribed to");
}
END_TEST

/* Every event queued for ch so far: a status call is answered after them. */
static json_t *events_so_far(struct chan *ch)
{
    json_t *a = json_array(), *ev;

    OK(ch, "status", "{}");
    while ((ev = next_event(ch, 0)) != NULL)
        json_array_append(a, ev);
    return keep(a);
}

/* Whether events is exactly want[] (type and id), in order. */
static bool events_are(json_t *events, const char *const *types, const long long *ids,
                       size_t n)
{
    if (json_array_size(events) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(events, i);
        if (strcmp(json_string_value(json_object_get(e, "type")), types[i]) ||
            json_integer_value(json_object_get(e, "id")) != ids[i])
            return false;
    }
    return true;
}

START_TEST(test_event_filters_select_by_type_conn_and_listener)
{
    struct chan *ch, *s_all, *s_type, *s_lis, *s_conn;
    bool closed_a = false, closed_b = false;
    long long ida, idb;
    json_t *ev;
    int a, b;

    start_std();
    ch = ctl();
    s_all = ctl();
    s_type = ctl();
    s_lis = ctl();
    s_conn = ctl();
    OK(s_all, "events.subscribe", "{}");
    OK(s_type, "events.subscribe", "{'types':['accepted']}");
    OK(s_lis, "events.subscribe", "{'listener':'f'}");
    a = client("e");
    ida = conn_id(ch, a);
    OK(s_conn, "events.subscribe", "{'conn':%lld}", ida);
    b = client("f");
    idb = conn_id(ch, b);
    OK(ch, "conn.mute", "{'id':%lld}", ida);
    OK(ch, "conn.mute", "{'id':%lld}", idb);
    untrack_close(a);
    untrack_close(b);
    while (!closed_a || !closed_b) {
        ev = next_event(s_all, 3000);
        CHECK(ev != NULL, "no closed events");
        if (!strcmp(jstr(ev, "type"), "closed")) {
            closed_a |= jint(ev, "id") == ida;
            closed_b |= jint(ev, "id") == idb;
        }
    }
    {
        const char *t[] = {"accepted", "accepted"};
        const long long ids[] = {ida, idb};
        json_t *got = events_so_far(s_type);
        CHECK(events_are(got, t, ids, 2), "types filter: %s", dump(got));
    }
    {
        const char *t[] = {"accepted", "muted", "closed"};
        const long long ids[] = {idb, idb, idb};
        json_t *got = events_so_far(s_lis);
        CHECK(events_are(got, t, ids, 3), "listener filter: %s", dump(got));
    }
    {
        const char *t[] = {"muted", "closed"};
        const long long ids[] = {ida, ida};
        json_t *got = events_so_far(s_conn);
        CHECK(events_are(got, t, ids, 2), "conn filter: %s", dump(got));
    }
}
END_TEST

START_TEST(test_listener_events_follow_listener_methods)
{
    static const char *const order[] = {"listener_added", "listener_paused",
                                        "listener_resumed", "listener_removed"};
    struct chan *ch, *sub;
    json_t *ev;

    start_std();
    ch = ctl();
    sub = ctl();
    OK(sub, "events.subscribe",
       "{'types':['listener_added','listener_paused','listener_resumed','listener_"
       "removed']}");
    OK(ch, "listener.add", "{'name':'x','host':'127.0.0.1','port':0,'plugin':'tp'}");
    OK(ch, "listener.pause", "{'name':'x'}");
    OK(ch, "listener.resume", "{'name':'x'}");
    OK(ch, "listener.remove", "{'name':'x'}");
    for (int i = 0; i < 4; i++) {
        ev = next_event(sub, 3000);
        CHECK(ev != NULL, "no %s event", order[i]);
        CHECK_STR(jstr(ev, "type"), order[i]);
        CHECK_STR(jstr(ev, "listener"), "x");
        CHECK_INT(jint(ev, "seq"), ==, i + 1);
        jint(ev, "ts_ms");
    }
}
END_TEST

/* ====================================================================== */
/* robust                                                                  */
/* ====================================================================== */

/* The daemon runs and a client that was there before answers. */
static void others_carry_on(struct chan *other)
{
    CHECK(daemon_alive(), "connd died");
    CHECK_INT(jint(OK(other, "status", "{}"), "pid"), ==, D.pid);
    CHECK_INT(jint(OK(ctl(), "status", "{}"), "pid"), ==, D.pid);
}

START_TEST(test_deep_nesting_gets_an_error_and_the_session_goes_on)
{
    enum { DEPTH = 10000 };
    static const char *const shapes[][3] = {
        {"", "[", "]"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\",\"params\":{\"x\":", "[",
         "]"},
        {"", "{\"a\":", "}"},
    };
    struct chan *other, *ch;
    json_t *r, *code;

    start_std();
    other = ctl();
    ch = ctl();
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        size_t hl = strlen(shapes[s][0]), ol = strlen(shapes[s][1]);
        size_t cl = strlen(shapes[s][2]), n = 0;
        char *line = malloc(hl + DEPTH * (ol + cl) + 8);
        memcpy(line, shapes[s][0], hl);
        n = hl;
        for (int i = 0; i < DEPTH; i++, n += ol)
            memcpy(line + n, shapes[s][1], ol);
        if (s == 2)
            line[n++] = '1';
        for (int i = 0; i < DEPTH; i++, n += cl)
            memcpy(line + n, shapes[s][2], cl);
        if (hl) {
            memcpy(line + n, "}}", 2);
            n += 2;
        }
        r = raw_reply(ch, line, n, 5000);
        free(line);
        CHECK(r != NULL, "no reply to nesting shape %zu", s);
        code = json_object_get(json_object_get(r, "error"), "code");
        CHECK(json_integer_value(code) == -32700 || json_integer_value(code) == -32600,
              "shape %zu: %s", s, dump(r));
        CHECK(json_is_null(jget(r, "id")), "id: %s", dump(r));
        CHECK_INT(jint(OK(ch, "status", "{}"), "pid"), ==, D.pid);
    }
    others_carry_on(other);
}
END_TEST

START_TEST(test_client_gone_mid_request_or_before_its_reply_harms_no_one)
{
    static const char half[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"meth";
    static const char whole[] =
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rpc.methods\"}\n";
    struct chan *other;

    start_std();
    other = ctl();
    for (int i = 0; i < 20; i++) {
        int fd = ctl_connect(&D);
        CHECK(fd >= 0, "connect");
        if (i % 2) {
            CHECK_INT(io_write_all(fd, half, sizeof(half) - 1), ==, 0);
        } else {
            for (int k = 0; k < 50; k++)
                CHECK_INT(io_write_all(fd, whole, sizeof(whole) - 1), ==, 0);
        }
        if (i % 4 == 0) {
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        close(fd);
    }
    pause_ms(200);
    others_carry_on(other);
}
END_TEST

START_TEST(test_half_closed_client_still_gets_every_reply)
{
    enum { N = 300 };
    struct chan *other, *ch;
    char *lines, *p;
    json_t *r;
    int got = 0;

    start_std();
    other = ctl();
    ch = ctl();
    lines = malloc(N * 64);
    p = lines;
    for (int i = 1; i <= N; i++)
        p +=
            sprintf(p, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"rpc.methods\"}\n", i);
    chan_send(ch, lines, (size_t)(p - lines));
    free(lines);
    shutdown(ch->fd, SHUT_WR); /* like `connctl < requests` or nc -N */
    pause_ms(300);             /* connd sees the EOF with replies still queued */
    while ((r = chan_msg(ch, 5000)) != NULL) {
        CHECK_INT(json_integer_value(json_object_get(r, "id")), ==, got + 1);
        result_of(r);
        got++;
    }
    CHECK(ch->eof, "no EOF after the replies");
    CHECK(got == N, "%d of %d replies before EOF", got, N);
    others_carry_on(other);
}
END_TEST

START_TEST(test_thousand_clients_at_once_each_answered_or_refused_alone)
{
    enum { N = 1000 };
    struct ctl_flood f;
    struct chan *other;
    int rc;

    rc = proc_raise_fd_limit(N + 256);
    CHECK(rc == 0, "getrlimit/setrlimit: %s", strerror(-rc));
    start_std(); /* inherits the limit */
    other = ctl();
    CHECK(ctl_flood_status(&D, N, 20000, &f), "%s", f.error);
    CHECK(f.pending == 0, "%d clients got neither a reply nor a close in 20 s",
          f.pending);
    CHECK_INT(f.answered + f.refused, ==, N);
    CHECK(f.answered >= N / 2, "only %d of %d answered", f.answered, N);
    others_carry_on(other);
}
END_TEST

START_TEST(test_client_that_reads_no_replies_is_dropped_while_others_are_served)
{
    struct chan *other;
    size_t sent;
    uint64_t t0, worst = 0;
    long rss0, rss1;
    bool found = false;
    int bad, rc;

    start_std();
    other = ctl();
    bad = track(ctl_connect(&D));
    CHECK(bad >= 0, "connect");
    /* Send requests, never read: the daemon must stop reading them. */
    rc = ctl_flood_unread(bad, 64u << 20, 8000, &sent);
    CHECK(rc == 0, "send: %s", strerror(-rc));
    CHECK(sent < (64u << 20), "the daemon read 64 MiB of requests without replying");
    rss0 = daemon_rss_kb(&D);
    /* Others keep getting answers while it is stuck; it goes within ~15 s. */
    t0 = now_ms();
    while (!found && now_ms() - t0 < 16000) {
        uint64_t t = now_ms();
        CHECK_INT(jint(OK(other, "status", "{}"), "pid"), ==, D.pid);
        if (now_ms() - t > worst)
            worst = now_ms() - t;
        found = daemon_wait_log(&D, "reads no replies", 500);
    }
    CHECK(found, "no \"reads no replies\" within 16 s");
    CHECK(worst < 1000, "a status call took %llu ms meanwhile",
          (unsigned long long)worst);
    rss1 = daemon_rss_kb(&D);
    CHECK(rss1 - rss0 < 64 * 1024, "RSS grew from %ld to %ld KiB", rss0, rss1);
    /* The dropped client reads what was written, then EOF. */
    CHECK(io_drain_until_eof(bad, 5000), "the stuck client was not disconnected");
    others_carry_on(other);
}
END_TEST

START_TEST(test_slow_subscriber_gets_events_lost_and_seq_stays_dense)
{
    enum { ROUNDS = 3000, BATCH = 100 };
    struct chan *other, *sub, *ch;
    long long id, seq = 0, got = 0, lost = 0, total = 1 + 2 * ROUNDS;
    long rss0, rss1;
    bool saw_lost = false;
    char *lines, *p;
    json_t *ev;
    int a;

    start_std();
    other = ctl();
    sub = ctl();
    ch = ctl();
    OK(sub, "events.subscribe", "{}");
    a = client("e");
    id = conn_id(ch, a);
    rss0 = daemon_rss_kb(&D);
    /* 6000 events while the subscriber reads nothing (pipelined calls) */
    lines = malloc(BATCH * 2 * 128);
    CHECK(lines != NULL, "out of memory");
    for (int r = 0; r < ROUNDS; r += BATCH) {
        p = lines;
        for (int k = 0; k < BATCH; k++)
            p += sprintf(p,
                         "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"conn.mute\","
                         "\"params\":{\"id\":%lld}}\n"
                         "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"conn.unmute\","
                         "\"params\":{\"id\":%lld}}\n",
                         2 * (r + k), id, 2 * (r + k) + 1, id);
        chan_send(ch, lines, (size_t)(p - lines));
        for (int k = 0; k < 2 * BATCH; k++) {
            json_t *rep = chan_msg_owned(ch, 5000);
            CHECK(rep && json_object_get(rep, "result"), "flood reply: %s", dump(rep));
            json_decref(rep);
        }
        daemon_drain_log(&D, 1); /* two log lines per call */
    }
    free(lines);
    rss1 = daemon_rss_kb(&D);
    CHECK(rss1 - rss0 < 64 * 1024, "RSS grew from %ld to %ld KiB", rss0, rss1);
    CHECK_INT(jint(OK(other, "status", "{}"), "pid"), ==, D.pid);

    /* Now read: every event is delivered or counted, seq never skips. */
    while (got + lost < total) {
        ev = next_event(sub, 3000);
        CHECK(ev != NULL, "events stopped after %lld delivered + %lld lost of %lld", got,
              lost, total);
        CHECK_INT(jint(ev, "seq"), ==, seq + 1);
        seq++;
        if (!strcmp(jstr(ev, "type"), "events_lost")) {
            CHECK_INT(jint(ev, "count"), >, 0);
            lost += jint(ev, "count");
            saw_lost = true;
        } else {
            got++;
        }
    }
    CHECK(saw_lost,
          "no events_lost although the subscriber read nothing for 6000 events");
    CHECK_INT(got + lost, ==, total);
    /* and it is a normal subscriber again */
    OK(ch, "conn.mute", "{'id':%lld}", id);
    ev = next_event(sub, 3000);
    CHECK(ev && !strcmp(jstr(ev, "type"), "muted"), "after the loss: %s", dump(ev));
    CHECK_INT(jint(ev, "seq"), ==, seq + 1);
    others_carry_on(other);
}
END_TEST

/* ====================================================================== */
/* socket                                                                  */
/* ====================================================================== */

static unsigned socket_mode(const char *path)
{
    struct stat st;

    CHECK(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
    CHECK(S_ISSOCK(st.st_mode), "%s is not a socket", path);
    return (unsigned)(st.st_mode & 07777);
}

START_TEST(test_socket_mode_is_0660_by_default)
{
    start_std();
    CHECK_INT(socket_mode(D.ctl_path), ==, 0660);
}
END_TEST

START_TEST(test_socket_mode_follows_the_config)
{
    start(CONFIG("\"control\":{\"path\":\"@DIR@/control.sock\",\"mode\":\"0600\"},",
                 STD_PLUGINS, STD_LISTENERS));
    CHECK_INT(socket_mode(D.ctl_path), ==, 0600);
    CHECK_INT(jint(OK(ctl(), "status", "{}"), "pid"), ==, D.pid);
}
END_TEST

START_TEST(test_stale_socket_file_is_replaced)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    char cfg[4096];
    int fd;

    make_scratch();
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/ctl.sock", scratch);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0, "bind");
    close(fd); /* the file stays, nobody listens */
    socket_mode(sun.sun_path);
    snprintf(cfg, sizeof(cfg),
             CONFIG("\"control\":{\"path\":\"%s\"},", STD_PLUGINS, STD_LISTENERS),
             sun.sun_path);
    start(cfg);
    CHECK(strlen(sun.sun_path) < sizeof(D.ctl_path), "path too long");
    memcpy(D.ctl_path, sun.sun_path, strlen(sun.sun_path) + 1); /* < 64 bytes */
    CHECK(strstr(D.log, "replacing a stale socket"), "no notice about the stale socket");
    CHECK_INT(socket_mode(D.ctl_path), ==, 0660);
    CHECK_INT(jint(OK(ctl(), "status", "{}"), "pid"), ==, D.pid);
}
END_TEST

START_TEST(test_file_that_is_not_a_socket_is_left_alone)
{
    char path[96], cfg[4096], buf[16] = {0}, *log = NULL;
    FILE *f;
    int rc;

    make_scratch();
    snprintf(path, sizeof(path), "%s/ctl.sock", scratch);
    f = fopen(path, "w");
    CHECK(f != NULL, "fopen");
    fputs("keep me", f);
    fclose(f);
    snprintf(cfg, sizeof(cfg), CONFIG("\"control\":{\"path\":\"%s\"},", STD_PLUGINS, ""),
             path);
    rc = daemon_run(cfg, NULL, 5000, &log);
    CHECK(rc == 1, "connd exited %d:\n%s", rc, log);
    CHECK(strstr(log, "not a socket"), "log: %s", log);
    free(log);
    f = fopen(path, "r");
    CHECK(f && fread(buf, 1, sizeof(buf) - 1, f) == 7 && !strcmp(buf, "keep me"),
          "the file was changed");
    fclose(f);
}
END_TEST

START_TEST(test_second_connd_on_the_same_path_refuses_to_start)
{
    struct chan *first;
    char cfg[4096], *log = NULL;
    int rc;

    start_std();
    first = ctl();
    snprintf(cfg, sizeof(cfg), CONFIG("\"control\":{\"path\":\"%s\"},", STD_PLUGINS, ""),
             D.ctl_path);
    rc = daemon_run(cfg, NULL, 5000, &log);
    CHECK(rc == 1, "second connd exited %d:\n%s", rc, log);
    CHECK(strstr(log, "another connd"), "log does not say why: %s", log);
    free(log);
    socket_mode(D.ctl_path); /* still there */
    others_carry_on(first);
}
END_TEST

START_TEST(test_missing_socket_directory_refuses_to_start)
{
    char *log = NULL;
    int rc;

    rc = daemon_run(CONFIG("\"control\":{\"path\":\"@DIR@/no/such/dir/ctl.sock\"},",
                           STD_PLUGINS, STD_LISTENERS),
                    NULL, 5000, &log);
    CHECK(rc == 1, "connd exited %d:\n%s", rc, log);
    CHECK(strstr(log, "no/such/dir/ctl.sock"), "log does not name the path: %s", log);
    free(log);
}
END_TEST

START_TEST(test_every_mutating_request_is_logged_with_pid_and_uid)
{
    struct chan *ch;
    long long id, id2;
    char by[64], *line;
    int a, b, lport;
    size_t i;

    start_std();
    ch = ctl();
    a = client("e");
    b = client("e");
    id = conn_id(ch, a);
    id2 = conn_id(ch, b);
    listen_tcp(4, &lport);
    /* every mutating method of the table, each succeeding */
    OK(ch, "conn.mute", "{'id':%lld}", id);
    OK(ch, "conn.unmute", "{'id':%lld}", id);
    OK(ch, "conn.write", "{'id':%lld,'data':'x'}", id);
    OK(ch, "conn.setopt", "{'id':%lld,'nodelay':true}", id);
    OK(ch, "conn.set_notify", "{'id':%lld,'plugin':'tp2'}", id);
    OK(ch, "conn.connect", "{'host':'127.0.0.1','port':%d,'plugin':'discard'}", lport);
    OK(ch, "listener.add", "{'name':'x','host':'127.0.0.1','port':0,'plugin':'tp'}");
    OK(ch, "listener.pause", "{'name':'x'}");
    OK(ch, "listener.resume", "{'name':'x'}");
    OK(ch, "listener.remove", "{'name':'x'}");
    OK(ch, "plugin.load", "{'name':'d2','file':'discard.so'}");
    OK(ch, "daemon.reload", "{}");
    OK(ch, "conn.close", "{'id':%lld}", id);
    OK(ch, "conn.abort", "{'id':%lld}", id2);
    OK(ch, "conn.mute", "{'select':{'listener':'f'}}");
    OK(ch, "status", "{}");
    OK(ch, "conn.list", "{}");
    OK(ch, "daemon.shutdown", "{}");
    untrack_close(a);
    untrack_close(b);
    CHECK_INT(daemon_stop(&D, 0, 5000), ==, 0);

    snprintf(by, sizeof(by), " by pid %d uid %d", (int)getpid(), (int)getuid());
    for (i = 0; i < N_METHODS; i++) {
        char needle[64];
        if (method_rows[i].readonly)
            continue;
        snprintf(needle, sizeof(needle), "control: %s ", method_rows[i].name);
        line = log_line(needle);
        CHECK(line && strstr(line, by), "%s not logged with \"%s\": %s",
              method_rows[i].name, by, line ? line : "(no line)");
        free(line);
    }
    snprintf(by, sizeof(by), "control: conn.abort id=%lld by pid %d", id2, (int)getpid());
    CHECK(strstr(D.log, by), "no \"%s\" in the log", by);
    CHECK(strstr(D.log, "control: conn.mute select by pid"), "select form not logged");
    CHECK(strstr(D.log, "control: listener.add name=x by pid"), "name not logged");
    CHECK(!strstr(D.log, "control: status "),
          "a read-only call was logged as a mutation");
}
END_TEST

/* ====================================================================== */

int main(void)
{
    const struct {
        const char *name;
        const TTest *tests[16];
    } cases[] = {
        {"methods",
         {test_status_reports_version_pid_uptime_and_counts,
          test_conn_list_shows_every_connection_with_typed_fields,
          test_conn_ids_are_never_reused, test_conn_mute_holds_bytes_until_unmute,
          test_conn_write_text_and_base64_arrive_exactly_with_sent_events,
          test_conn_write_then_close_delivers_bytes_then_eof,
          test_conn_close_sends_eof_and_abort_sends_reset,
          test_conn_connect_opens_outgoing_and_reports_refusal,
          test_conn_set_notify_hands_connection_to_discard,
          test_conn_setopt_applies_socket_options,
          test_listener_add_pause_resume_remove_take_effect, test_plugin_list_and_load,
          test_plugin_load_of_a_loaded_name_serves_new_connections_only,
          test_rpc_methods_lists_every_method_with_params_and_role,
          test_daemon_reload_applies_a_new_config_and_keeps_the_old_on_error,
          test_daemon_shutdown_replies_drains_refuses_new_work_then_exits_zero}},
        {"bulk",
         {test_bulk_dry_run_returns_matches_and_changes_nothing,
          test_bulk_mute_and_unmute_by_listener_act_on_matches_only,
          test_bulk_close_by_listener_closes_only_its_connections,
          test_bulk_abort_by_plugin_resets_only_its_connections,
          test_bulk_remote_prefix_and_combined_selectors,
          test_bulk_idle_ms_gt_selects_quiet_connections}},
        {"errors",
         {test_every_error_row_gets_its_code_and_the_session_goes_on,
          test_notifications_get_no_reply,
          test_notification_of_an_unknown_method_gets_no_reply,
          test_oversized_line_gets_one_error_and_the_session_goes_on,
          test_write_past_max_pending_is_limit_reached,
          test_setopt_on_a_connecting_connection_is_not_connected}},
        {"roles",
         {test_readonly_uid_may_read_but_not_mutate,
          test_uid_in_no_list_is_denied_everything, test_admin_uid_may_mutate}},
        {"events",
         {test_events_arrive_in_order_with_dense_seq,
          test_event_filters_select_by_type_conn_and_listener,
          test_listener_events_follow_listener_methods}},
        {"robust",
         {test_deep_nesting_gets_an_error_and_the_session_goes_on,
          test_client_gone_mid_request_or_before_its_reply_harms_no_one,
          test_half_closed_client_still_gets_every_reply,
          test_thousand_clients_at_once_each_answered_or_refused_alone,
          test_client_that_reads_no_replies_is_dropped_while_others_are_served,
          test_slow_subscriber_gets_events_lost_and_seq_stays_dense}},
        {"socket",
         {test_socket_mode_is_0660_by_default, test_socket_mode_follows_the_config,
          test_stale_socket_file_is_replaced,
          test_file_that_is_not_a_socket_is_left_alone,
          test_second_connd_on_the_same_path_refuses_to_start,
          test_missing_socket_directory_refuses_to_start,
          test_every_mutating_request_is_logged_with_pid_and_uid}},
    };
    Suite *s = suite_create("control");

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_set_timeout(tc, 60);
        for (size_t k = 0; k < 16 && cases[i].tests[k]; k++)
            tcase_add_test(tc, cases[i].tests[k]);
        suite_add_tcase(s, tc);
    }
    return run_suite(s);
}
