/*
 * test_ctlperf.c: large control replies against a real connd. A conn.list
 * of thousands of connections is made in parts over several loop turns
 * (daemon/control.c, rpc.c, methods.c); these tests check what that must
 * not change: every connection is listed with the right fields, in one
 * valid line; another client is answered meanwhile; one client's replies
 * keep its request order; events do not cut into the line (the subscriber
 * learns of them as events_lost); connections that close meanwhile, a
 * client that leaves and a shutdown leave no harm.
 *
 * No timing is asserted: the numbers come from bench/loadgen (see
 * docs/performance.md). Timeouts here only bound a hung daemon.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Enough connections that the reply (about 245 bytes an entry) is far
 * larger than what the socket and the daemon's part buffer hold, so a
 * client that does not read leaves it unfinished. */
#define N_WANT 4000
#define WAIT_MS 60000 /* bound for a daemon under valgrind */

#define CONFIG                                                                           \
    "{\"plugin_dir\":\"@PLUGINS@\",\"shutdown_timeout_ms\":1000,"                        \
    "\"plugins\":[{\"name\":\"echo\",\"file\":\"echo.so\"}],"                            \
    "\"listeners\":[{\"name\":\"e\",\"host\":\"127.0.0.1\",\"port\":0,"                  \
    "\"plugin\":\"echo\"},"                                                              \
    "{\"name\":\"f\",\"host\":\"127.0.0.1\",\"port\":0,\"plugin\":\"echo\"}]}"

static struct daemon D;
static bool d_started;
static int *conns; /* client sockets, -1 once closed */
static int *ports; /* their local ports */
static int *dests; /* and the listener ports they connected to */
static int n_conns;

/* A control connection with a buffered line reader. */
struct chan {
    int fd;
    char *buf;
    size_t len, cap;
};
static struct chan chans[4];
static int n_chans;

static void on_failure(void)
{
    if (d_started)
        daemon_fail_now(&D, 200, 8000);
}

#define CHECK(cond, ...)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            on_failure();                                                                \
            ck_abort_msg(__VA_ARGS__);                                                   \
        }                                                                                \
    } while (0)

static void teardown(void)
{
    bool report = false;
    int rc = 0;

    for (int i = 0; i < n_conns; i++)
        if (conns[i] >= 0)
            close(conns[i]);
    free(conns);
    free(ports);
    free(dests);
    conns = ports = dests = NULL;
    n_conns = 0;
    for (int i = 0; i < n_chans; i++) {
        if (chans[i].fd >= 0)
            close(chans[i].fd);
        free(chans[i].buf);
    }
    memset(chans, 0, sizeof(chans));
    n_chans = 0;
    if (d_started) {
        if (D.pid > 0 && D.status == -1)
            rc = daemon_stop(&D, SIGTERM, 10000);
        report = D.log && (strstr(D.log, "Sanitizer") || strstr(D.log, "runtime error:"));
        if (report || rc != 0)
            fprintf(stderr, "---- connd log ----\n%s\n---- end ----\n",
                    D.log ? D.log : "");
        daemon_free(&D);
        d_started = false;
    }
    ck_assert_msg(!report, "connd logged a sanitizer report");
    ck_assert_msg(rc == 0, "connd did not exit 0 (%d)", rc);
}

/* ---- control channel ---------------------------------------------------- */

static struct chan *chan_new(void)
{
    struct chan *ch = &chans[n_chans++];

    ch->fd = ctl_connect(&D);
    CHECK(ch->fd >= 0, "cannot connect to %s", D.ctl_path);
    return ch;
}

static void chan_send(struct chan *ch, const char *text)
{
    CHECK(io_write_all(ch->fd, text, strlen(text)) == 0, "control write: %s",
          strerror(errno));
}

/* The next line (malloc'd, without its newline), read in large blocks. */
static char *chan_line(struct chan *ch, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    size_t scanned = 0;

    for (;;) {
        char *nl =
            ch->len > scanned ? memchr(ch->buf + scanned, '\n', ch->len - scanned) : NULL;
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
        scanned = ch->len;
        uint64_t now = now_ms();
        CHECK(now < end && io_readable(ch->fd, (int)(end - now)),
              "no complete line within %d ms (%zu bytes so far)", timeout_ms, ch->len);
        if (ch->cap - ch->len < 65536) {
            ch->cap = ch->cap ? ch->cap * 2 : 262144;
            ch->buf = realloc(ch->buf, ch->cap);
            CHECK(ch->buf != NULL, "out of memory");
        }
        ssize_t r = recv(ch->fd, ch->buf + ch->len, ch->cap - ch->len, MSG_DONTWAIT);
        CHECK(r > 0 || (r < 0 && (errno == EAGAIN || errno == EINTR)),
              "control connection closed (%zd, %s)", r, strerror(errno));
        if (r > 0)
            ch->len += (size_t)r;
    }
}

/* The next message, parsed; the caller json_decref()s it. */
static json_t *chan_msg(struct chan *ch)
{
    char *line = chan_line(ch, WAIT_MS);
    json_error_t jerr;
    json_t *msg = json_loads(line, 0, &jerr);

    CHECK(json_is_object(msg), "not one JSON object (%s): %.300s", jerr.text, line);
    free(line);
    return msg;
}

static bool is_event(json_t *msg)
{
    return json_object_get(msg, "method") && !json_object_get(msg, "id");
}

/* The result of the reply to request `id`, which must be the next
 * message that is not an event (events are dropped). */
static json_t *reply_result(struct chan *ch, long long id)
{
    for (;;) {
        json_t *msg = chan_msg(ch), *res;
        if (is_event(msg)) {
            json_decref(msg);
            continue;
        }
        CHECK(json_integer_value(json_object_get(msg, "id")) == id,
              "expected the reply to %lld first, got %.300s", id,
              json_dumps(msg, JSON_COMPACT));
        res = json_incref(json_object_get(msg, "result"));
        CHECK(res != NULL, "not a result: %.300s", json_dumps(msg, JSON_COMPACT));
        json_decref(msg);
        return res;
    }
}

static json_t *call(struct chan *ch, long long id, const char *method, const char *params)
{
    char req[512];

    snprintf(req, sizeof(req),
             "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"%s\",\"params\":%s}\n", id,
             method, params);
    chan_send(ch, req);
    return reply_result(ch, id);
}

static long long status_conns(struct chan *ch)
{
    json_t *st = call(ch, 999, "status", "{}");
    long long n = json_integer_value(json_object_get(st, "connections"));
    json_decref(st);
    return n;
}

/* Bytes waiting to be read on fd. */
static int queued(int fd)
{
    int n = 0;
    ioctl(fd, FIONREAD, &n);
    return n;
}

/* ---- setup -------------------------------------------------------------- */

static int local_port(int fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);

    CHECK(getsockname(fd, (struct sockaddr *)&sin, &len) == 0, "getsockname");
    return ntohs(sin.sin_port);
}

/* Start connd with room for n connections in it and in this process. */
static int start(int n)
{
    static const char *const args[] = {"--log-level", "notice", NULL};
    struct rlimit rl;
    int rc;

    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit");
    if (rl.rlim_max != RLIM_INFINITY && (rlim_t)n + 200 > rl.rlim_max)
        n = (int)rl.rlim_max - 200; /* the daemon inherits the limit */
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? (rlim_t)n + 200 : rl.rlim_max;
    CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit: %s", strerror(errno));
    rc = daemon_start(&D, CONFIG, args);
    d_started = true;
    CHECK(rc == 0, "connd did not start:\n%s", D.log ? D.log : "");
    return n;
}

/* Open n connections to listener `name`, in batches the daemon accepts
 * before the next (a slow daemon would otherwise overflow the backlog). */
static void open_conns(struct chan *ch, const char *name, int n)
{
    int port = daemon_port(&D, name), base = n_conns;

    conns = realloc(conns, (size_t)(n_conns + n) * sizeof(*conns));
    ports = realloc(ports, (size_t)(n_conns + n) * sizeof(*ports));
    dests = realloc(dests, (size_t)(n_conns + n) * sizeof(*dests));
    CHECK(conns && ports && dests, "out of memory");
    for (int i = 0; i < n; i++) {
        int fd = tcp_connect("127.0.0.1", port);
        CHECK(fd >= 0, "connection %d to %s: %s", i, name, strerror(errno));
        conns[n_conns] = fd;
        dests[n_conns] = port;
        ports[n_conns++] = local_port(fd);
        if ((i + 1) % 250 == 0 || i + 1 == n) {
            uint64_t end = now_ms() + WAIT_MS;
            while (status_conns(ch) < base + i + 1) {
                CHECK(now_ms() < end, "connd accepted %lld of %d", status_conns(ch),
                      base + i + 1);
                usleep(5000);
            }
        }
    }
}

/* The port of an address "127.0.0.1:PORT". */
static int addr_port(json_t *e, const char *key)
{
    const char *addr = json_string_value(json_object_get(e, key));

    CHECK(addr && strncmp(addr, "127.0.0.1:", 10) == 0, "%s: %s", key,
          addr ? addr : "null");
    return atoi(addr + 10);
}

/* The client whose connection the entry is: its local port is the entry's
 * remote one, on the listener port that is the entry's local one (two
 * clients may share a port, on different listeners). */
static int conn_of_entry(json_t *e)
{
    int port = addr_port(e, "remote"), dest = addr_port(e, "local");

    for (int i = 0; i < n_conns; i++)
        if (ports[i] == port && dests[i] == dest)
            return i;
    CHECK(false, "no client with port %d to %d", port, dest);
    return -1;
}

/* A conn.list result: an array whose ids strictly increase (creation
 * order), each of the n clients listed at most once. Returns which were
 * (malloc'd, n entries; the caller frees it). */
static bool *check_list(json_t *list, int n)
{
    bool *seen = calloc((size_t)n, sizeof(*seen));
    long long last = 0;
    size_t i;
    json_t *e;

    CHECK(seen != NULL, "out of memory");
    CHECK(json_is_array(list), "conn.list result is not an array");
    json_array_foreach(list, i, e)
    {
        long long id = json_integer_value(json_object_get(e, "id"));
        int k = conn_of_entry(e);
        CHECK(id > last, "entry %zu: id %lld after %lld", i, id, last);
        CHECK(!seen[k], "client %d listed twice", k);
        seen[k] = true;
        last = id;
    }
    return seen;
}

/* ---- tests -------------------------------------------------------------- */

START_TEST(test_conn_list_of_thousands_has_every_connection_with_its_fields)
{
    static const char *const keys[] = {
        "id",           "listener",  "plugin",     "state",   "local",
        "remote",       "bytes_in",  "bytes_out",  "pending", "muted",
        "mute_reasons", "throttled", "created_ms", "idle_ms"};
    struct chan *ch;
    json_t *list, *e, *show;
    bool *seen, *muted;
    char want_e[32], want_f[32], params[64];
    long long id_muted[2] = {0, 0};
    int n, n_e;
    size_t i;
    struct timespec ts;

    n = start(N_WANT);
    ch = chan_new();
    n_e = n - 3;
    open_conns(ch, "e", n_e);
    open_conns(ch, "f", 3);
    snprintf(want_e, sizeof(want_e), "127.0.0.1:%d", daemon_port(&D, "e"));
    snprintf(want_f, sizeof(want_f), "127.0.0.1:%d", daemon_port(&D, "f"));
    /* Every tenth connection echoes 3 bytes: its counters show them. */
    for (int k = 0; k < n_e; k += 10)
        CHECK(io_write_all(conns[k], "abc", 3) == 0, "write");
    for (int k = 0; k < n_e; k += 10) {
        char back[3];
        CHECK(io_read_exact(conns[k], back, 3) == 0 && memcmp(back, "abc", 3) == 0,
              "no echo on %d", k);
    }

    /* Mute two connections; find their ids in a first list. */
    list = call(ch, 1, "conn.list", "{}");
    CHECK(json_array_size(list) == (size_t)n, "%zu entries, %d connections",
          json_array_size(list), n);
    json_array_foreach(list, i, e)
    {
        int k = conn_of_entry(e);
        if (k == 7 || k == n_e - 1)
            id_muted[k == 7 ? 0 : 1] = json_integer_value(json_object_get(e, "id"));
    }
    json_decref(list);
    for (int m = 0; m < 2; m++) {
        snprintf(params, sizeof(params), "{\"id\":%lld}", id_muted[m]);
        json_decref(call(ch, 2 + m, "conn.mute", params));
    }

    list = call(ch, 4, "conn.list", "{}");
    muted = calloc((size_t)n, sizeof(*muted));
    CHECK(muted != NULL, "out of memory");
    muted[7] = muted[n_e - 1] = true;
    seen = check_list(list, n);
    CHECK(json_array_size(list) == (size_t)n, "%zu entries, %d connections",
          json_array_size(list), n);
    clock_gettime(CLOCK_REALTIME, &ts);
    json_array_foreach(list, i, e)
    {
        int k = conn_of_entry(e);
        bool on_e = k < n_e;
        long long bytes = on_e && k % 10 == 0 ? 3 : 0;
        long long created = json_integer_value(json_object_get(e, "created_ms"));
        const char *key;
        json_t *v, *reasons = json_object_get(e, "mute_reasons");
        size_t j = 0;

        json_object_foreach(e, key, v)
        {
            CHECK(j < 14 && strcmp(key, keys[j]) == 0, "entry %zu: key %zu is %s", i, j,
                  key);
            j++;
        }
        CHECK(j == 14, "entry %zu has %zu keys", i, j);
        CHECK(strcmp(json_string_value(json_object_get(e, "listener")),
                     on_e ? "e" : "f") == 0,
              "entry %zu: listener", i);
        CHECK(strcmp(json_string_value(json_object_get(e, "plugin")), "echo") == 0,
              "entry %zu: plugin", i);
        CHECK(strcmp(json_string_value(json_object_get(e, "state")), "open") == 0,
              "entry %zu: state", i);
        CHECK(strcmp(json_string_value(json_object_get(e, "local")),
                     on_e ? want_e : want_f) == 0,
              "entry %zu: local %s", i, json_string_value(json_object_get(e, "local")));
        CHECK(json_integer_value(json_object_get(e, "bytes_in")) == bytes &&
                  json_integer_value(json_object_get(e, "bytes_out")) == bytes,
              "entry %zu (client %d): bytes_in/out, expected %lld", i, k, bytes);
        CHECK(json_is_integer(json_object_get(e, "pending")) &&
                  json_integer_value(json_object_get(e, "pending")) == 0,
              "entry %zu: pending", i);
        CHECK(json_is_boolean(json_object_get(e, "muted")) &&
                  json_is_true(json_object_get(e, "muted")) == muted[k],
              "entry %zu: muted", i);
        CHECK(json_array_size(reasons) == (muted[k] ? 1u : 0u), "entry %zu: mute_reasons",
              i);
        CHECK(!muted[k] ||
                  strcmp(json_string_value(json_array_get(reasons, 0)), "ctl") == 0,
              "entry %zu: mute reason", i);
        CHECK(json_is_false(json_object_get(e, "throttled")), "entry %zu: throttled", i);
        CHECK(created > (long long)ts.tv_sec * 1000 - 600000 &&
                  created <= (long long)ts.tv_sec * 1000 + 1000,
              "entry %zu: created_ms %lld", i, created);
        CHECK(json_is_integer(json_object_get(e, "idle_ms")) &&
                  json_integer_value(json_object_get(e, "idle_ms")) >= 0,
              "entry %zu: idle_ms", i);
    }
    for (int k = 0; k < n; k++)
        CHECK(seen[k], "client %d not listed", k);

    /* conn.show starts with the same entry. */
    snprintf(params, sizeof(params), "{\"id\":%lld}", id_muted[1]);
    show = call(ch, 5, "conn.show", params);
    json_array_foreach(list, i, e)
    {
        const char *key;
        json_t *v;
        if (json_integer_value(json_object_get(e, "id")) != id_muted[1])
            continue;
        json_object_foreach(e, key, v)
        {
            CHECK(strcmp(key, "idle_ms") == 0 ||
                      json_equal(v, json_object_get(show, key)),
                  "conn.show and conn.list differ on %s", key);
        }
    }
    json_decref(show);
    json_decref(list);

    /* The listener filter holds across the parts. */
    list = call(ch, 6, "conn.list", "{\"listener\":\"f\"}");
    CHECK(json_array_size(list) == 3, "%zu entries for listener f",
          json_array_size(list));
    json_array_foreach(list, i, e)
    {
        CHECK(conn_of_entry(e) >= n_e, "a connection of e listed for f");
    }
    json_decref(list);
    free(seen);
    free(muted);
}
END_TEST

START_TEST(test_mute_is_answered_while_another_client_receives_a_large_list)
{
    struct chan *a, *b;
    json_t *list, *res;
    bool *seen;
    char req[512], params[64];
    long long id0, id1;
    int n;

    n = start(N_WANT);
    b = chan_new();
    open_conns(b, "e", n);
    list = call(b, 1, "conn.list", "{}");
    id0 = json_integer_value(json_object_get(json_array_get(list, 0), "id"));
    id1 = json_integer_value(json_object_get(json_array_get(list, 1), "id"));
    json_decref(list);

    /* a asks for the list, a mute and a status in one write, and reads
     * nothing yet. */
    a = chan_new();
    snprintf(req, sizeof(req),
             "{\"jsonrpc\":\"2.0\",\"id\":11,\"method\":\"conn.list\"}\n"
             "{\"jsonrpc\":\"2.0\",\"id\":12,\"method\":\"conn.mute\",\"params\":{\"id\":"
             "%lld}}\n"
             "{\"jsonrpc\":\"2.0\",\"id\":13,\"method\":\"status\"}\n",
             id0);
    chan_send(a, req);
    for (uint64_t end = now_ms() + WAIT_MS; queued(a->fd) < 65536;) {
        CHECK(now_ms() < end, "the list did not start (%d bytes)", queued(a->fd));
        usleep(2000);
    }

    /* b is answered, again and again, while a's list waits for a. */
    for (int k = 0; k < 20; k++) {
        snprintf(params, sizeof(params), "{\"id\":%lld}", id1);
        res = call(b, 100 + 2 * k, "conn.mute", params);
        CHECK(json_is_true(json_object_get(res, "muted")), "b's mute");
        json_decref(res);
        res = call(b, 101 + 2 * k, "conn.unmute", params);
        CHECK(json_is_false(json_object_get(res, "muted")), "b's unmute");
        json_decref(res);
    }

    /* a's replies come whole and in request order. */
    list = reply_result(a, 11);
    seen = check_list(list, n);
    CHECK(json_array_size(list) == (size_t)n, "%zu entries, %d connections",
          json_array_size(list), n);
    json_decref(list);
    res = reply_result(a, 12);
    CHECK(json_integer_value(json_object_get(res, "id")) == id0 &&
              json_is_true(json_object_get(res, "muted")),
          "a's mute");
    json_decref(res);
    res = reply_result(a, 13);
    CHECK(json_integer_value(json_object_get(res, "connections")) == n, "a's status");
    json_decref(res);
    free(seen);
}
END_TEST

START_TEST(test_subscriber_learns_of_events_during_a_large_reply_as_events_lost)
{
    struct chan *a, *b;
    json_t *list, *res, *msg, *p;
    char params[64];
    long long id0, lost = 0, got = 0, seq = 0;
    int n;

    n = start(N_WANT);
    b = chan_new();
    open_conns(b, "e", n);
    list = call(b, 1, "conn.list", "{}");
    id0 = json_integer_value(json_object_get(json_array_get(list, 0), "id"));
    json_decref(list);

    a = chan_new();
    res = call(a, 1, "events.subscribe", "{\"types\":[\"muted\",\"unmuted\"]}");
    json_decref(res);
    chan_send(a, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"conn.list\"}\n");
    for (uint64_t end = now_ms() + WAIT_MS; queued(a->fd) < 65536;) {
        CHECK(now_ms() < end, "the list did not start");
        usleep(2000);
    }
    snprintf(params, sizeof(params), "{\"id\":%lld}", id0);
    json_decref(call(b, 2, "conn.mute", params));
    json_decref(call(b, 3, "conn.unmute", params));

    /* The list is one valid line (chan_msg checks), then the two events,
     * as events_lost when the list was still being made (it is, when the
     * list is larger than what the socket holds), with seq dense. */
    list = reply_result(a, 2);
    CHECK(json_array_size(list) == (size_t)n, "%zu entries", json_array_size(list));
    json_decref(list);
    while (lost + got < 2) {
        const char *type;
        msg = chan_msg(a);
        p = json_object_get(msg, "params");
        type = json_string_value(json_object_get(p, "type"));
        CHECK(is_event(msg) && type, "expected an event");
        CHECK(json_integer_value(json_object_get(p, "seq")) == ++seq, "seq not dense");
        if (strcmp(type, "events_lost") == 0)
            lost += json_integer_value(json_object_get(p, "count"));
        else
            got++;
        json_decref(msg);
    }
    if (n >= N_WANT)
        CHECK(lost == 2,
              "the events were sent inside or after the list, not counted lost");

    /* Events flow again once the reply is out. */
    json_decref(call(b, 4, "conn.mute", params));
    msg = chan_msg(a);
    p = json_object_get(msg, "params");
    CHECK(is_event(msg) &&
              strcmp(json_string_value(json_object_get(p, "type")), "muted") == 0,
          "no muted event after the list");
    CHECK(json_integer_value(json_object_get(p, "seq")) == ++seq, "seq not dense");
    json_decref(msg);
}
END_TEST

START_TEST(test_connections_closing_during_a_large_list_leave_it_valid)
{
    struct chan *a, *b;
    json_t *list;
    bool *seen;
    int n, lo, hi;

    n = start(N_WANT);
    b = chan_new();
    open_conns(b, "e", n);
    a = chan_new();
    chan_send(a, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"conn.list\"}\n");
    for (uint64_t end = now_ms() + WAIT_MS; queued(a->fd) < 65536;) {
        CHECK(now_ms() < end, "the list did not start");
        usleep(2000);
    }
    /* Close the middle three quarters, where the list is waiting for a to
     * read (the connection it stopped at among them), and wait until connd
     * has freed them. */
    lo = n / 8;
    hi = n - n / 8;
    for (int k = lo; k < hi; k++) {
        close(conns[k]);
        conns[k] = -1;
    }
    for (uint64_t end = now_ms() + WAIT_MS; status_conns(b) != n - (hi - lo);) {
        CHECK(now_ms() < end, "connd still has %lld connections", status_conns(b));
        usleep(10000);
    }
    list = reply_result(a, 1);
    seen = check_list(list, n);
    for (int k = 0; k < n; k++)
        CHECK(seen[k] || (k >= lo && k < hi), "open connection %d not listed", k);
    json_decref(list);
    free(seen);
    /* The session goes on. */
    list = call(a, 2, "conn.list", "{}");
    CHECK(json_array_size(list) == (size_t)(n - (hi - lo)),
          "%zu entries after the closes", json_array_size(list));
    json_decref(list);
}
END_TEST

START_TEST(test_client_leaving_or_shutdown_during_a_large_list_harms_no_one)
{
    struct chan *a, *a2, *b;
    json_t *list, *res;
    bool *seen;
    int n;

    n = start(N_WANT);
    b = chan_new();
    open_conns(b, "e", n);

    /* a asks and leaves while its list is being made. */
    a = chan_new();
    chan_send(a, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"conn.list\"}\n");
    for (uint64_t end = now_ms() + WAIT_MS; queued(a->fd) < 65536;) {
        CHECK(now_ms() < end, "the list did not start");
        usleep(2000);
    }
    close(a->fd);
    a->fd = -1;
    CHECK(status_conns(b) == n, "status after a left");

    /* a2's list is unfinished when b shuts connd down: a2 still gets a
     * whole line (without the connections freed meanwhile: they close, and
     * go after shutdown_timeout_ms), then the daemon closes the session
     * and exits 0. */
    a2 = chan_new();
    chan_send(a2, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"conn.list\"}\n");
    for (uint64_t end = now_ms() + WAIT_MS; queued(a2->fd) < 65536;) {
        CHECK(now_ms() < end, "the list did not start");
        usleep(2000);
    }
    res = call(b, 2, "daemon.shutdown", "{}");
    CHECK(json_is_true(json_object_get(res, "stopping")), "shutdown refused");
    json_decref(res);
    list = reply_result(a2, 1);
    seen = check_list(list, n);
    CHECK(json_array_size(list) <= (size_t)n, "%zu entries", json_array_size(list));
    json_decref(list);
    free(seen);
    CHECK(io_expect_eof(a2->fd, WAIT_MS) == 1, "a2's session not closed after its reply");
    for (int k = 0; k < n_conns; k++) {
        close(conns[k]);
        conns[k] = -1;
    }
    CHECK(daemon_stop(&D, 0, WAIT_MS) == 0, "connd did not exit 0 after daemon.shutdown");
}
END_TEST

/* ---- the fast lane --------------------------------------------------------- */

/* The lane tests' daemon: an echo listener "e" and a listener "w" whose
 * plugin blocks the loop for 600 ms in each received(). */
static const char slow_cfg[] =
    "{\"plugin_dir\":\"@PLUGINS@\","
    "\"plugins\":[{\"name\":\"echo\",\"file\":\"echo.so\"},"
    "{\"name\":\"slow\",\"file\":\"@TPLUGINS@/testplug.so\",\"config\":{\"block_ms\":600}}],"
    "\"listeners\":[{\"name\":\"e\",\"host\":\"127.0.0.1\",\"port\":0,\"plugin\":\"echo\"},"
    "{\"name\":\"w\",\"host\":\"127.0.0.1\",\"port\":0,\"plugin\":\"slow\"}]}";

/* The id of the nth connection (in id order) of a listener, waiting up
 * to 2 s for it to be accepted; request ids rid * 100 and up. */
static long long listed_id(struct chan *ch, int rid, const char *listener, int nth)
{
    char params[96];
    json_t *list = NULL;
    long long id;

    snprintf(params, sizeof(params), "{\"listener\":\"%s\"}", listener);
    for (int i = 0; i < 40; i++) {
        json_decref(list);
        list = call(ch, rid * 100 + i, "conn.list", params);
        if (json_array_size(list) > (size_t)nth)
            break;
        usleep(50 * 1000);
    }
    CHECK(json_array_size(list) > (size_t)nth, "conn.list: %s", json_dumps(list, JSON_COMPACT));
    id = json_integer_value(json_object_get(json_array_get(list, (size_t)nth), "id"));
    json_decref(list);
    return id;
}

/* Start the slow_cfg daemon with one echo connection B (checked to echo);
 * its id in *id_b. Returns the control channel. */
static struct chan *slow_start(int *b, long long *id_b)
{
    struct chan *ch;
    int rc = daemon_start(&D, slow_cfg, NULL);

    d_started = true;
    CHECK(rc == 0, "connd did not start:\n%s", D.log ? D.log : "");
    ch = chan_new();
    *b = tcp_connect("127.0.0.1", daemon_port(&D, "e"));
    CHECK(*b >= 0, "connect B");
    CHECK(io_echoes(*b, "up"), "B does not echo");
    *id_b = listed_id(ch, 1, "e", 0);
    return ch;
}

/* B has "late" waiting: mute it (request id rid), check nothing comes
 * back (else fail with `why`), unmute, and get "late" back. */
static void mute_holds_until_unmute(struct chan *ch, int rid, int b, long long id_b,
                                    const char *why)
{
    char params[64], buf[8] = {0};

    snprintf(params, sizeof(params), "{\"id\":%lld}", id_b);
    json_decref(call(ch, rid, "conn.mute", params));
    CHECK(!io_readable(b, 300), "%s", why);
    json_decref(call(ch, rid + 1, "conn.unmute", params));
    CHECK(io_read_exact(b, buf, 4) == 0 && memcmp(buf, "late", 4) == 0,
          "B's bytes after the unmute: \"%s\"", buf);
}

/* A control request that arrives while the loop is busy is served before
 * the next turn's traffic (daemon/control.c, control_lane_cb). A plugin
 * blocks the loop for 600 ms; meanwhile bytes arrive on an echo connection
 * B and then "conn.mute B" on the control socket. With the lane the mute is
 * done before B's bytes are read, so nothing comes back until the unmute;
 * without it epoll reports B first (its bytes came first) and they are
 * echoed before the mute. */
START_TEST(test_a_request_made_during_a_busy_turn_goes_before_the_next_turns_traffic)
{
    struct chan *ch;
    long long id_b;
    int a, b;

    ch = slow_start(&b, &id_b);
    a = tcp_connect("127.0.0.1", daemon_port(&D, "w"));
    CHECK(a >= 0, "connect A");
    CHECK(io_write_all(a, "x", 1) == 0, "write A"); /* the loop blocks 600 ms */
    CHECK(daemon_wait_log(&D, "blocking id=", 2000), "A's bytes not received");
    usleep(100 * 1000);
    CHECK(io_write_all(b, "late", 4) == 0, "write B");
    usleep(100 * 1000);
    mute_holds_until_unmute(ch, 2, b, id_b,
                            "B's bytes were echoed before the mute that came during "
                            "the busy turn (served after the next turn's traffic)");
    close(a);
    close(b);
}
END_TEST

/* Inside a long poll phase the lane is looked at between reads too
 * (conn_read_cb -> control_lane_tick). The setup for the tests below: the
 * slow plugin blocks the loop on W's byte; meanwhile bytes arrive on A
 * (slow as well) and then on the echo connection B, so the next poll
 * phase reports A then B. Returns once A's read blocks (600 ms) with B's
 * bytes waiting behind it; ids of A and B in *id_a, *id_b. */
static struct chan *long_turn_start(int *w, int *a, int *b, long long *id_a, long long *id_b)
{
    struct chan *ch = slow_start(b, id_b);

    *w = tcp_connect("127.0.0.1", daemon_port(&D, "w"));
    CHECK(*w >= 0, "connect W");
    *a = tcp_connect("127.0.0.1", daemon_port(&D, "w"));
    CHECK(*a >= 0, "connect A");
    /* conn.list goes by id: W first, then A. */
    *id_a = listed_id(ch, 2, "w", 1);

    CHECK(io_write_all(*w, "x", 1) == 0, "write W"); /* the loop blocks 600 ms */
    CHECK(daemon_wait_log_count(&D, "blocking id=", 1, 2000), "W's bytes not received");
    CHECK(io_write_all(*a, "y", 1) == 0, "write A");
    usleep(50 * 1000);
    CHECK(io_write_all(*b, "late", 4) == 0, "write B");
    CHECK(daemon_wait_log_count(&D, "blocking id=", 2, 3000), "A's bytes not received");
    usleep(100 * 1000);
    return ch;
}

/* A mute of B that arrives while A's read blocks is served when A's read
 * returns, before B is read, so B's bytes come back only after the
 * unmute; without the lane between reads B is echoed in that phase and
 * the mute is served only before the next one. */
START_TEST(test_a_request_made_during_a_long_turn_goes_before_the_rest_of_that_turn)
{
    struct chan *ch;
    long long id_a, id_b;
    int w, a, b;

    ch = long_turn_start(&w, &a, &b, &id_a, &id_b);
    mute_holds_until_unmute(ch, 3, b, id_b,
                            "B's bytes were echoed although the mute came before "
                            "the poll phase reached B (no lane between reads)");
    close(w);
    close(a);
    close(b);
}
END_TEST

/* Requests served between reads may end the connection whose read just
 * ran and one whose read is still to come in the same phase: A is
 * aborted right after its own read, B closed before its read (its
 * bytes are never echoed); both peers see the end, the loop goes on (the
 * ASan and valgrind runs check that no freed connection is touched) and a
 * new connection echoes. */
START_TEST(test_requests_between_reads_may_end_the_connections_of_that_turn)
{
    struct chan *ch;
    long long id_a, id_b;
    char req[256];
    int w, a, b, c, rc;

    ch = long_turn_start(&w, &a, &b, &id_a, &id_b);
    /* Both requests in one write, so both wait for the lane together. */
    snprintf(req, sizeof(req),
             "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"conn.abort\",\"params\":{\"id\":%lld}}\n"
             "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"conn.close\",\"params\":{\"id\":%lld}}\n",
             id_a, id_b);
    chan_send(ch, req);
    json_decref(reply_result(ch, 3));
    json_decref(reply_result(ch, 4));
    CHECK(io_drain_until_eof(a, 5000), "A was not closed");
    rc = io_expect_eof(b, 5000);
    CHECK(rc == 1, "B: %s (want EOF and none of its bytes: closed before its read)",
          rc == 0 ? "its bytes came back" : strerror(-rc));
    c = tcp_connect("127.0.0.1", daemon_port(&D, "e"));
    CHECK(c >= 0 && io_echoes(c, "after"), "a new connection does not echo");
    CHECK(daemon_wait_log_count(&D, "conn.abort id=", 1, 2000) &&
              daemon_wait_log_count(&D, "conn.close id=", 1, 2000),
          "abort and close not both logged:\n%s", D.log ? D.log : "");
    close(c);
    close(w);
    close(a);
    close(b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ctlperf");
    TCase *tc = tcase_create("large replies");

    signal(SIGPIPE, SIG_IGN);
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_conn_list_of_thousands_has_every_connection_with_its_fields);
    tcase_add_test(tc, test_mute_is_answered_while_another_client_receives_a_large_list);
    tcase_add_test(tc,
                   test_subscriber_learns_of_events_during_a_large_reply_as_events_lost);
    tcase_add_test(tc, test_connections_closing_during_a_large_list_leave_it_valid);
    tcase_add_test(tc, test_client_leaving_or_shutdown_during_a_large_list_harms_no_one);
    tcase_add_test(tc,
                   test_a_request_made_during_a_busy_turn_goes_before_the_next_turns_traffic);
    tcase_add_test(tc, test_a_request_made_during_a_long_turn_goes_before_the_rest_of_that_turn);
    tcase_add_test(tc, test_requests_between_reads_may_end_the_connections_of_that_turn);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
