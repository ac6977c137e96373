/*
 * fuzz_rpc.c: libFuzzer target for the control protocol's request handler
 * (daemon/rpc.c and the handlers in daemon/methods.c). The input is a
 * session: split on '\n', each line goes to rpc_handle_line() in order, as
 * control.c would hand them over, from one fake admin client. State carries
 * from line to line within an input (listeners added, connections made,
 * subscriptions), so one input can add a listener, connect to it and
 * write to the connection.
 *
 * The daemon is real: a struct loop from loop_init() on a config with the
 * bundled echo and discard plugins and no listeners. It is linked without
 * daemon/control.c; this file provides control_start/stop (no socket: the
 * control struct is static and has no clients but ours), control_send
 * (checks each reply instead of writing it), control_client_close and
 * control_lane_tick (no lane: the input is the only client).
 * Everything the daemon does on the network is kept on loopback by
 * sandbox.c; its timers run on virtual time (vclock.c). After each line the loop runs a
 * few non-blocking turns, so that connects, accepts and echoes happen between requests.
 *
 * The loop is kept from one input to the next while inputs leave it as
 * they found it (most do: errors, read-only methods). An input that made
 * a connection or listener, loaded a plugin or shut the daemon down gets a
 * fresh loop afterwards, so every input starts from the same state (ids
 * from 1) and a crash input reproduces on its own.
 *
 * What is checked, beyond the sanitizers: every line sent is one JSON
 * object with "jsonrpc": "2.0" and either a reply ("id" and exactly one of
 * "result" and "error", an error with a known code and a string message)
 * or an event ("method": "event", params with type and the next seq); a
 * request with an id gets exactly one reply carrying that id, during
 * rpc_handle_line(); a notification gets none; an unreadable line gets one
 * with "id": null.
 *
 * Lines that are exactly one of these steer the fake client instead:
 *   #role admin | #role readonly | #role none   its role from now on
 *   #stall   its output is behind: events are dropped and counted
 *   #drain   its output drained: a pending events_lost goes out
 *   #sleep   300 ms pass for the loop (virtual time, vclock.c): timers
 *            that fall due fire (the graceful-close sweep, Happy Eyeballs'
 *            250 ms, the config's close and shutdown timeouts of 500 ms)
 *
 * Environment: CONND_FUZZ_LOG=LEVEL sets the daemon's log level (default
 * debug, so that every log line is formatted; fuzz/run sends it to
 * /dev/null with -close_fd_mask=2). CONND_FUZZ_TRACE=1 prints each line
 * handled ("-->") and each line connd sent ("<--"), to read a crash input.
 */
#include <dlfcn.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "control.h"
#include "log.h"
#include "loop.h"
#include "plugin.h"
#include "rpc.h"
#include "sandbox.h"
#include "vclock.h"

#ifndef FUZZ_PLUGIN_DIR
#error "FUZZ_PLUGIN_DIR must name the directory of the built bundled plugins"
#endif

#define FZ_TURNS 4            /* loop turns after each line */
#define FZ_CONNECT_WAIT_MS 20 /* at most, for outgoing connections to resolve */
#define FZ_SLEEP_MS 300       /* #sleep, in libuv's virtual time */
#define FZ_MAX_PLUGINS 8

static const char fz_config[] =
    "{\"control\": {\"path\": \"/tmp/connd-fuzz-rpc.sock\"},"
    " \"plugin_dir\": \"" FUZZ_PLUGIN_DIR "\","
    " \"shutdown_timeout_ms\": 500, \"close_timeout_ms\": 500,"
    " \"plugins\": [{\"name\": \"echo\", \"file\": \"echo.so\"},"
    "               {\"name\": \"discard\", \"file\": \"discard.so\"}]}";

static struct loop fz_loop;
static struct control fz_ctl;
static bool fz_up;
static char fz_config_path[64]; /* the config in a memfd, for daemon.reload */
static struct plugin *fz_plugins[FZ_MAX_PLUGINS + 1]; /* as loop_init loaded them */
static int fz_report_fd = 2; /* stderr as it was before libFuzzer hid it */
static bool fz_trace;        /* CONND_FUZZ_TRACE */

/* The line being handled and what its replies must look like. */
static struct {
    const char *line;
    size_t len;
    bool in_line;     /* inside rpc_handle_line() */
    unsigned replies; /* sent for this line */
    json_t *want_id;  /* the id they must carry; NULL when none is owed */
    json_int_t seq;   /* of the client's last event */
} fz;

static void __attribute__((noreturn))
fz_fail(const char *why, const char *text, size_t len)
{
    dprintf(fz_report_fd, "fuzz_rpc: %s\n  request: %.*s\n  sent: %.*s\n", why,
            fz.line ? (int)fz.len : 0, fz.line ? fz.line : "", text ? (int)len : 0,
            text ? text : "");
    abort();
}

/* ---- the control socket, without a socket ------------------------------- */

/* As control.c, but no socket: the control struct is this file's static
 * one and has no clients until an input makes one. Returns 0. */
int control_start(struct loop *lp)
{
    memset(&fz_ctl, 0, sizeof(fz_ctl));
    fz_ctl.lp = lp;
    fz_ctl.fd = fz_ctl.spare_fd = -1;
    list_init(&fz_ctl.clients);
    list_init(&fz_ctl.subscribers);
    lp->ctl = &fz_ctl;
    return 0;
}

/* As control.c: no more requests are read once the control socket stops;
 * the struct stays (it is static) for the client that is still ours. */
void control_stop(struct control *ctl)
{
    if (!ctl)
        return;
    ctl->lp->ctl = NULL;
    ctl->stopping = true;
}

/* As control.c, but there is no fast lane: this file's client has no
 * socket, its requests come from the input in order. */
void control_lane_tick(struct control *ctl)
{
    (void)ctl;
}

/* As control.c, without the socket to close: unlinks cl from the control
 * struct and its subscribers. The caller still owns (and frees) cl. */
void control_client_close(struct ctl_client *cl)
{
    if (cl->closing)
        return;
    cl->closing = true;
    list_del(&cl->link);
    if (list_linked(&cl->sub_link)) {
        list_del(&cl->sub_link);
        cl->ctl->lp->n_subscribers--;
    }
    cl->ctl->n_clients--;
}

static bool fz_known_code(json_int_t code)
{
    static const int codes[] = {
        RPC_PARSE_ERROR,    RPC_INVALID_REQUEST, RPC_METHOD_NOT_FOUND, RPC_INVALID_PARAMS,
        RPC_INTERNAL_ERROR, RPC_NO_SUCH_CONN,    RPC_NOT_CONNECTED,    RPC_PLUGIN_ERROR,
        RPC_LISTENER_ERROR, RPC_LIMIT_REACHED,   RPC_PERMISSION_DENIED};

    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (codes[i] == code)
            return true;
    return false;
}

static void fz_check_event(json_t *msg, const char *text, size_t len)
{
    json_t *params = json_object_get(msg, "params"), *seq;

    if (json_object_size(msg) != 3 || !json_is_string(json_object_get(msg, "method")) ||
        strcmp(json_string_value(json_object_get(msg, "method")), "event") != 0 ||
        !json_is_object(params))
        fz_fail("a notification that is not an event", text, len);
    if (!json_is_string(json_object_get(params, "type")) ||
        !json_is_integer(json_object_get(params, "ts_ms")))
        fz_fail("an event without type or ts_ms", text, len);
    seq = json_object_get(params, "seq");
    if (!json_is_integer(seq) || json_integer_value(seq) != fz.seq + 1)
        fz_fail("an event out of sequence", text, len);
    fz.seq++;
}

static void fz_check_reply(json_t *msg, bool is_event, const char *text, size_t len)
{
    json_t *id = json_object_get(msg, "id"), *result = json_object_get(msg, "result");
    json_t *err = json_object_get(msg, "error"), *data;

    if (is_event)
        fz_fail("a reply sent as an event (it could be dropped)", text, len);
    if (!fz.in_line)
        fz_fail("a reply outside of a request", text, len);
    if (!fz.want_id)
        fz_fail("a reply to a notification or blank line", text, len);
    if (fz.replies++)
        fz_fail("a second reply to one request", text, len);
    if (!id || !json_equal(id, fz.want_id))
        fz_fail("a reply with the wrong id", text, len);
    if (json_object_size(msg) != 3 || !result == !err)
        fz_fail("a reply without exactly one of result and error", text, len);
    if (!err)
        return;
    data = json_object_get(err, "data");
    if (!json_is_object(err) || !json_is_integer(json_object_get(err, "code")) ||
        !fz_known_code(json_integer_value(json_object_get(err, "code"))) ||
        !json_is_string(json_object_get(err, "message")) ||
        json_object_size(err) != 2u + (data != NULL))
        fz_fail("a malformed error", text, len);
    if (data &&
        (!json_is_object(data) || !json_is_string(json_object_get(data, "errno"))))
        fz_fail("a malformed error.data", text, len);
}

/* Every line connd sends, checked instead of written (text is borrowed);
 * aborts when one breaks the protocol. Events are dropped and counted
 * while the client is behind (#stall), as control.c does. Returns 0, or
 * -EPIPE for a closed client. */
int control_send(struct ctl_client *cl, const char *text, size_t len, bool is_event)
{
    json_error_t jerr;
    json_t *msg, *v;

    if (cl->closing)
        return -EPIPE;
    if (is_event && cl->out_pending > CTL_EVENT_MAX) {
        cl->ev_lost++;
        return 0;
    }
    if (fz_trace)
        dprintf(fz_report_fd, "<-- %.*s\n", (int)len, text);
    if (len == 0 || memchr(text, '\n', len) || memchr(text, '\0', len))
        fz_fail("an empty line, or one with a newline or NUL in it", text, len);
    if (!(msg = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr)))
        fz_fail(jerr.text, text, len);
    v = json_object_get(msg, "jsonrpc");
    if (!json_is_object(msg) || !json_is_string(v) || strcmp(json_string_value(v), "2.0"))
        fz_fail("not an object with \"jsonrpc\": \"2.0\"", text, len);
    if (json_object_get(msg, "method"))
        fz_check_event(msg, text, len);
    else
        fz_check_reply(msg, is_event, text, len);
    json_decref(msg);
    return 0;
}

/* ---- the loop ------------------------------------------------------------ */

static void fz_start(void)
{
    struct config *cfg;
    char err[512];
    size_t n = 0;

    /* The text, not the memfd: config_load() reads into a 1 MiB buffer,
     * which costs more under ASan than the rest of a fresh start. */
    if (config_parse(fz_config, sizeof(fz_config) - 1, &cfg, err, sizeof(err)) < 0) {
        dprintf(fz_report_fd, "fuzz_rpc: %s\n", err);
        abort();
    }
    sandbox_reset();
    if (loop_init(&fz_loop, cfg, fz_config_path) < 0) {
        dprintf(fz_report_fd, "fuzz_rpc: loop_init failed (see the log)\n");
        abort();
    }
    for (struct plugin *p = fz_loop.plugins; p && n < FZ_MAX_PLUGINS; p = p->next)
        fz_plugins[n++] = p;
    fz_plugins[n] = NULL;
    fz_up = true;
}

/* Whether the input left anything behind that the next one would see. */
static bool fz_dirty(void)
{
    size_t n = 0;

    for (struct plugin *p = fz_loop.plugins; p; p = p->next, n++)
        if (n == FZ_MAX_PLUGINS || p != fz_plugins[n])
            return true;
    return fz_plugins[n] || fz_loop.stopping || fz_loop.next_conn_id ||
           fz_loop.listeners || fz_loop.n_conns ||
           uv_is_active((uv_handle_t *)&fz_loop.shutdown_timer);
}

static bool fz_connecting(void)
{
    for (struct list *n = fz_loop.conns.next; n != &fz_loop.conns; n = n->next)
        if (container_of(n, struct conn, link)->state == CONN_CONNECTING)
            return true;
    return false;
}

static uint64_t fz_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Let the loop do what the last request started. Name resolution runs on
 * libuv's thread pool; wait for it briefly, so that a request after a
 * conn.connect finds the connection up (or failed), as a person typing
 * would, and the outcome does not depend on the machine's speed. */
static void fz_settle(void)
{
    uint64_t until = fz_now_ms() + FZ_CONNECT_WAIT_MS;

    for (int i = 0; i < FZ_TURNS; i++)
        uv_run(&fz_loop.uv, UV_RUN_NOWAIT);
    while (fz_connecting() && fz_now_ms() < until) {
        usleep(100);
        for (int i = 0; i < FZ_TURNS; i++)
            uv_run(&fz_loop.uv, UV_RUN_NOWAIT);
    }
}

/* ---- the session --------------------------------------------------------- */

static struct ctl_client *fz_client_new(void)
{
    struct ctl_client *cl = calloc(1, sizeof(*cl));

    if (!cl)
        abort();
    cl->ctl = &fz_ctl;
    cl->uid = 0;
    cl->pid = getpid();
    cl->role = CTL_ROLE_ADMIN;
    list_init(&cl->sub_link);
    list_add_tail(&fz_ctl.clients, &cl->link);
    fz_ctl.n_clients++;
    fz.seq = 0;
    return cl;
}

static bool fz_is(const char *text, size_t len, const char *word)
{
    return len == strlen(word) && memcmp(text, word, len) == 0;
}

/* A steering line (see the top of the file); false for a request. */
static bool fz_directive(struct ctl_client *cl, const char *text, size_t len)
{
    if (fz_is(text, len, "#role admin"))
        cl->role = CTL_ROLE_ADMIN;
    else if (fz_is(text, len, "#role readonly"))
        cl->role = CTL_ROLE_READONLY;
    else if (fz_is(text, len, "#role none"))
        cl->role = CTL_ROLE_NONE;
    else if (fz_is(text, len, "#stall"))
        cl->out_pending = CTL_EVENT_MAX + 1;
    else if (fz_is(text, len, "#drain")) {
        cl->out_pending = 0;
        rpc_client_drained(cl);
    } else if (fz_is(text, len, "#sleep")) {
        vclock_advance(FZ_SLEEP_MS);
        fz_settle();
    } else
        return false;
    return true;
}

/* How many replies the line is owed (0 or 1) and, through *id, the id
 * they carry: rpc.c's envelope rules, restated from SPEC section 5. */
static unsigned fz_expect(const char *line, size_t len, json_t **id)
{
    json_t *req, *rid, *v, *m;
    unsigned owed;

    *id = NULL;
    if (strspn(line, " \t\r") == len)
        return 0; /* blank */
    req = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(req)) {
        json_decref(req);
        *id = json_null();
        return 1;
    }
    rid = json_object_get(req, "id");
    v = json_object_get(req, "jsonrpc");
    m = json_object_get(req, "method");
    if (rid && !json_is_integer(rid) && !json_is_string(rid) && !json_is_null(rid)) {
        *id = json_null();
        owed = 1;
    } else if (!json_is_string(v) || strcmp(json_string_value(v), "2.0") != 0 ||
               !json_is_string(m)) {
        *id =
            rid ? json_incref(rid) : json_null(); /* not a request: not a notification */
        owed = 1;
    } else {
        *id = json_incref(rid); /* NULL for a notification */
        owed = rid != NULL;
    }
    json_decref(req);
    return owed;
}

static void fz_line(struct ctl_client *cl, const char *text, size_t len)
{
    unsigned owed;
    char *line;

    if (fz_trace)
        dprintf(fz_report_fd, "--> %.*s\n", (int)len, text);
    if (fz_directive(cl, text, len))
        return;
    /* Exactly len + 1 bytes, so that ASan sees a read past the NUL. */
    if (!(line = malloc(len + 1)))
        abort();
    memcpy(line, text, len);
    line[len] = '\0';
    fz.line = line;
    fz.len = len;
    fz.replies = 0;
    fz.in_line = true;
    if (len > CTL_LINE_MAX) {
        fz.want_id = json_null();
        owed = 1;
        rpc_reply_oversized(cl);
    } else {
        owed = fz_expect(line, len, &fz.want_id);
        rpc_handle_line(cl, line, len);
    }
    fz.in_line = false;
    if (fz.replies != owed)
        fz_fail(owed ? "no reply to a request" : "a reply that was not owed", NULL, 0);
    json_decref(fz.want_id);
    fz.want_id = NULL;
    fz.line = NULL;
    free(line);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Once, before any input: keeps a copy of stderr for reports, ignores
 * SIGPIPE, clears the service manager's environment, sets the log level,
 * writes the config into a memfd and keeps the bundled plugins mapped.
 * Returns 0. The loop starts with the first input. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const env[] = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                                      "LISTEN_PID",    "LISTEN_FDS",    "LISTEN_FDNAMES",
                                      "JOURNAL_STREAM"};
    const char *level = getenv("CONND_FUZZ_LOG");
    int fd;

    (void)argc;
    (void)argv;
    /* libFuzzer hides stderr after this (-close_fd_mask=2); keep our own. */
    if ((fd = dup(2)) >= 0)
        fz_report_fd = fd;
    signal(SIGPIPE, SIG_IGN);
    /* Nothing from a service manager reaches this daemon. */
    for (size_t i = 0; i < sizeof(env) / sizeof(env[0]); i++)
        unsetenv(env[i]);
    fz_trace = getenv("CONND_FUZZ_TRACE") != NULL;
    log_init();
    log_set_level(level && log_parse_level(level) >= 0 ? log_parse_level(level)
                                                       : LOG_LVL_DEBUG);
    /* The config lives in a memfd, so daemon.reload has a file to re-read
     * and nothing is left behind in /tmp. */
    if ((fd = memfd_create("connd-fuzz-rpc.json", MFD_CLOEXEC)) < 0 ||
        write(fd, fz_config, sizeof(fz_config) - 1) != (ssize_t)(sizeof(fz_config) - 1)) {
        dprintf(fz_report_fd, "fuzz_rpc: memfd: %s\n", strerror(errno));
        abort();
    }
    snprintf(fz_config_path, sizeof(fz_config_path), "/proc/self/fd/%d", fd);
    /* Keep the bundled plugins mapped across fresh loops: a dlclose and
     * dlopen per input would cost more than the input. */
    dlopen(FUZZ_PLUGIN_DIR "/echo.so", RTLD_NOW | RTLD_LOCAL);
    dlopen(FUZZ_PLUGIN_DIR "/discard.so", RTLD_NOW | RTLD_LOCAL);
    return 0;
}

/* One session (borrowed bytes) from a new client, closed at the end; the
 * loop is replaced afterwards if the session changed it. Returns 0, or
 * aborts on a failed check. Loop callbacks run between lines. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ctl_client *cl;
    size_t start = 0;

    if (!fz_up)
        fz_start();
    cl = fz_client_new();
    /* A request after the control socket stopped would never be read. */
    while (start < size && !fz_ctl.stopping) {
        const uint8_t *nl = memchr(data + start, '\n', size - start);
        size_t len = (nl ? (size_t)(nl - data) : size) - start;

        fz_line(cl, (const char *)data + start, len);
        start += len + 1;
        fz_settle();
    }
    control_client_close(cl);
    free(cl);
    fz_settle();
    if (fz_dirty()) {
        loop_close(&fz_loop);
        fz_start();
    }
    return 0;
}
