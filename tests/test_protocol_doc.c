/*
 * test_protocol_doc.c: docs/control-protocol.md is executable. Every
 * ```jsonrpc block in it is replayed against a real connd set up as the
 * document says (its ```json replay-config block, one TCP client on the
 * listener "echo" as conn 1), and each `<--` line is compared with what the
 * daemon actually sends. Other tests check that the document keeps up with
 * the daemon: every method rpc.methods lists has a heading, a table row
 * with the same params and role, and an example; every event type has an
 * example; every error code is in the error table.
 *
 * Replay rules (the document's "How to read the examples" says the same):
 * - a fresh daemon per block, one control connection per block;
 * - consecutive `-->` lines are sent in one write, so the daemon reads
 *   them together; `<PORT:NAME>` in them becomes listener NAME's port;
 * - each `<--` line must match the next line the daemon sends: same JSON
 *   structure, key order free, objects with exactly the same members,
 *   "<ANY>" matching any value;
 * - after the last `<--` line nothing else may have arrived: a probe
 *   request's reply must come next; a block that calls daemon.shutdown
 *   must instead see the daemon close the connection;
 * - the TCP client reads and discards what it receives and closes its end
 *   when the daemon closes its own (a well-behaved peer).
 */
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "events.h"
#include "harness.h"
#include "rpc.h"

#define DOC_PATH CONND_SOURCE_DIR "/docs/control-protocol.md"
#define DOC_NAME "docs/control-protocol.md"
#define LINE_WAIT_MS 5000 /* for one expected line */
#define PROBE_ID "replay: end of example"

struct block {
    int line; /* 1-based line of the opening fence */
    size_t n;
    char **lines; /* each starts with "--> " or "<-- " */
    int bad_line; /* a line that is neither, or 0 */
};

static char *doc;          /* the whole document */
static char *doc_config;   /* the replay-config block */
static struct block *blocks;
static size_t n_blocks;

/* ---- reading the document ---------------------------------------------- */

static char *xstrndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p)
        abort();
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* Load the document and split out the config and the example blocks. A
 * missing document leaves doc NULL (a test then fails saying so). */
static void doc_load(void)
{
    FILE *f = fopen(DOC_PATH, "r");
    size_t cap = 0, len = 0;
    const char *p;
    int lineno = 0;
    enum { TEXT, EXAMPLE, CONFIG, OTHER_FENCE } where = TEXT;
    char *cfg = NULL;
    size_t cfg_len = 0;
    struct block *b = NULL;

    if (!f)
        return;
    for (;;) {
        size_t n;
        if (len + 4096 + 1 > cap)
            doc = realloc(doc, cap = cap ? cap * 2 : 65536);
        if ((n = fread(doc + len, 1, cap - len - 1, f)) == 0)
            break;
        len += n;
    }
    fclose(f);
    doc[len] = '\0';

    for (p = doc; *p; ) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char *line = xstrndup(p, n);
        size_t ll = strlen(line);

        lineno++;
        while (ll && (line[ll - 1] == '\r' || line[ll - 1] == ' '))
            line[--ll] = '\0';
        if (where == TEXT && strncmp(line, "```", 3) == 0) {
            const char *info = line + 3;
            if (strcmp(info, "jsonrpc") == 0) {
                blocks = realloc(blocks, (n_blocks + 1) * sizeof(*blocks));
                b = &blocks[n_blocks++];
                memset(b, 0, sizeof(*b));
                b->line = lineno;
                where = EXAMPLE;
            } else if (strcmp(info, "json replay-config") == 0) {
                where = CONFIG;
            } else {
                where = OTHER_FENCE;
            }
        } else if (where != TEXT && strcmp(line, "```") == 0) {
            where = TEXT;
        } else if (where == EXAMPLE && ll > 0) {
            if (strncmp(line, "--> ", 4) == 0 || strncmp(line, "<-- ", 4) == 0) {
                b->lines = realloc(b->lines, (b->n + 1) * sizeof(char *));
                b->lines[b->n++] = xstrndup(line, ll);
            } else if (!b->bad_line) {
                b->bad_line = lineno;
            }
        } else if (where == CONFIG) {
            cfg = realloc(cfg, cfg_len + ll + 2);
            memcpy(cfg + cfg_len, line, ll);
            cfg_len += ll;
            cfg[cfg_len++] = '\n';
            cfg[cfg_len] = '\0';
        }
        free(line);
        p += n + (nl != NULL);
    }
    doc_config = cfg;
}

/* ---- a replay session ---------------------------------------------------- */

struct session {
    struct daemon d;
    bool started;
    int ctl;  /* control connection */
    int peer; /* the TCP client on listener "echo" (conn 1) */
    char *in; /* control bytes not yet returned as lines */
    size_t in_len, in_cap;
    bool eof;
};

/* The documented config with plugin_dir pointed at the build tree. */
static char *session_config(void)
{
    json_error_t err;
    json_t *cfg = json_loads(doc_config, 0, &err);
    char *text;

    ck_assert_msg(cfg != NULL, DOC_NAME ": the replay-config block is not JSON: %s (line %d)",
                  err.text, err.line);
    ck_assert_msg(json_object_get(cfg, "control") == NULL,
                  DOC_NAME ": the replay-config must not set control (tests pick the socket)");
    json_object_set_new(cfg, "plugin_dir", json_string("@PLUGINS@"));
    text = json_dumps(cfg, JSON_COMPACT);
    json_decref(cfg);
    return text;
}

/* Start the daemon, connect the client as conn 1, open the control
 * connection. Returns NULL or why it failed. */
static const char *session_start(struct session *s)
{
    char *cfg = session_config();
    uint64_t end;
    int port, rc;

    memset(s, 0, sizeof(*s));
    s->ctl = s->peer = -1;
    rc = daemon_start(&s->d, cfg, NULL);
    free(cfg);
    s->started = true;
    if (rc < 0)
        return "the daemon did not start on the documented config";
    if ((port = daemon_port(&s->d, "echo")) <= 0)
        return "no listener \"echo\" in the documented config";
    if ((s->peer = tcp_connect("127.0.0.1", port)) < 0)
        return "could not connect to the echo listener";
    /* Wait until the daemon has accepted it. */
    for (end = now_ms() + 5000;;) {
        int fd = ctl_connect(&s->d);
        json_t *r = fd >= 0 ? ctl_call(fd, "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":"
                                           "\"conn.show\",\"params\":{\"id\":1}}")
                            : NULL;
        bool ok = r && json_object_get(r, "result");
        json_decref(r);
        if (fd >= 0)
            close(fd);
        if (ok)
            break;
        if (now_ms() > end)
            return "the client on the echo listener never became conn 1";
        usleep(10000);
    }
    if ((s->ctl = ctl_connect(&s->d)) < 0)
        return "could not connect to the control socket";
    return NULL;
}

/* Stop the daemon (or, after daemon.shutdown, wait for it to exit by
 * itself: signal 0 sends nothing); returns NULL or what went wrong. */
static const char *session_stop(struct session *s, bool exiting)
{
    const char *why = NULL;
    int rc;

    if (s->ctl >= 0)
        close(s->ctl);
    if (s->peer >= 0)
        close(s->peer);
    free(s->in);
    if (!s->started)
        return NULL;
    rc = daemon_stop(&s->d, exiting ? 0 : SIGTERM, 10000);
    if (strstr(s->d.log, "Sanitizer") || strstr(s->d.log, "runtime error"))
        why = "the daemon's log has a sanitizer report (printed above)";
    else if (rc != 0)
        why = "the daemon did not exit 0 (its log is printed above)";
    if (why)
        fprintf(stderr, "--- daemon log ---\n%s\n--- end of daemon log ---\n", s->d.log);
    daemon_free(&s->d);
    return why;
}

/* The peer reads and discards; it closes when the daemon does. */
static void peer_pump(struct session *s)
{
    char sink[4096];
    ssize_t n;

    if (s->peer < 0)
        return;
    while ((n = recv(s->peer, sink, sizeof(sink), MSG_DONTWAIT)) > 0)
        ;
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        close(s->peer);
        s->peer = -1;
    }
}

/* The next line from the daemon within timeout_ms (malloc'd), or NULL on a
 * timeout or EOF (s->eof tells which). */
static char *session_read_line(struct session *s, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;

    for (;;) {
        char *nl = s->in ? memchr(s->in, '\n', s->in_len) : NULL;
        struct pollfd pfd[2] = {{.fd = s->ctl, .events = POLLIN},
                                {.fd = s->peer, .events = POLLIN}};
        uint64_t now;
        ssize_t n;

        if (nl) {
            size_t len = (size_t)(nl - s->in);
            char *line = xstrndup(s->in, len);
            memmove(s->in, nl + 1, s->in_len - len - 1);
            s->in_len -= len + 1;
            return line;
        }
        if (s->eof || (now = now_ms()) >= end)
            return NULL;
        if (poll(pfd, s->peer >= 0 ? 2 : 1, (int)(end - now)) <= 0)
            continue;
        if (pfd[1].revents)
            peer_pump(s);
        if (!pfd[0].revents)
            continue;
        if (s->in_len + 4096 > s->in_cap)
            s->in = realloc(s->in, s->in_cap = s->in_cap ? s->in_cap * 2 : 65536);
        n = recv(s->ctl, s->in + s->in_len, s->in_cap - s->in_len, MSG_DONTWAIT);
        if (n > 0)
            s->in_len += (size_t)n;
        else if (n == 0 || (errno != EAGAIN && errno != EINTR))
            s->eof = true;
    }
}

/* "<PORT:NAME>" becomes the port listener NAME is bound to. */
static char *substitute(struct session *s, const char *req, char *err, size_t errlen)
{
    size_t cap = strlen(req) + 64, n = 0;
    char *out = malloc(cap);

    while (*req) {
        if (strncmp(req, "<PORT:", 6) == 0 && strchr(req, '>')) {
            const char *close = strchr(req, '>');
            char name[64], num[16];
            int port = -1;
            snprintf(name, sizeof(name), "%.*s", (int)(close - req - 6), req + 6);
            for (uint64_t end = now_ms() + 2000; port <= 0 && now_ms() < end;) {
                port = daemon_port(&s->d, name);
                if (port <= 0)
                    daemon_drain_log(&s->d, 20);
            }
            if (port <= 0) {
                snprintf(err, errlen, "<PORT:%s>: no listener %s in the daemon's log", name,
                         name);
                free(out);
                return NULL;
            }
            snprintf(num, sizeof(num), "%d", port);
            if (n + strlen(num) + 1 >= cap)
                out = realloc(out, cap = cap * 2 + strlen(num));
            memcpy(out + n, num, strlen(num));
            n += strlen(num);
            req = close + 1;
            continue;
        }
        if (n + 2 >= cap)
            out = realloc(out, cap *= 2);
        out[n++] = *req++;
    }
    out[n] = '\0';
    return out;
}

/* ---- comparing ----------------------------------------------------------- */

/* expected matches actual: same structure, "<ANY>" matches anything. */
static bool json_match(json_t *exp, json_t *act)
{
    if (json_is_string(exp) && strcmp(json_string_value(exp), "<ANY>") == 0)
        return true;
    if (!act || json_typeof(exp) != json_typeof(act))
        return false;
    if (json_is_object(exp)) {
        const char *key;
        json_t *v;
        if (json_object_size(exp) != json_object_size(act))
            return false;
        json_object_foreach(exp, key, v)
        {
            if (!json_match(v, json_object_get(act, key)))
                return false;
        }
        return true;
    }
    if (json_is_array(exp)) {
        if (json_array_size(exp) != json_array_size(act))
            return false;
        for (size_t i = 0; i < json_array_size(exp); i++)
            if (!json_match(json_array_get(exp, i), json_array_get(act, i)))
                return false;
        return true;
    }
    return json_equal(exp, act);
}

static void print_block(const struct block *b, size_t mark)
{
    fprintf(stderr, "%s:%d: this example does not replay:\n", DOC_NAME, b->line);
    for (size_t i = 0; i < b->n; i++)
        fprintf(stderr, "%s %s\n", i == mark ? ">>" : "  ", b->lines[i]);
}

/* Replay block b; NULL when it matched, else a message (after printing the
 * block, the expected and the actual line to stderr). */
static const char *replay(const struct block *b, char *msg, size_t msglen)
{
    struct session s;
    const char *why = NULL;
    bool shutdown = false;
    size_t i = 0;

    if (b->bad_line) {
        snprintf(msg, msglen, "%s:%d: a line in a jsonrpc block starts with neither "
                 "\"--> \" nor \"<-- \"", DOC_NAME, b->bad_line);
        return msg;
    }
    if ((why = session_start(&s)) != NULL) {
        snprintf(msg, msglen, "%s:%d: setup: %s", DOC_NAME, b->line, why);
        session_stop(&s, false);
        return msg;
    }
    while (i < b->n && !why) {
        if (b->lines[i][0] == '-') {
            /* Consecutive requests go out in one write. */
            size_t cap = 1024, len = 0;
            char *buf = malloc(cap);
            for (; i < b->n && b->lines[i][0] == '-' && !why; i++) {
                char *req = substitute(&s, b->lines[i] + 4, msg, msglen);
                if (!req) {
                    print_block(b, i);
                    why = msg;
                    break;
                }
                if (strstr(req, "\"daemon.shutdown\""))
                    shutdown = true;
                if (len + strlen(req) + 2 > cap)
                    buf = realloc(buf, cap = (len + strlen(req) + 2) * 2);
                memcpy(buf + len, req, strlen(req));
                len += strlen(req);
                buf[len++] = '\n';
                free(req);
            }
            if (!why && io_write_all(s.ctl, buf, len) < 0) {
                snprintf(msg, msglen, "%s:%d: could not send the requests", DOC_NAME, b->line);
                why = msg;
            }
            free(buf);
            continue;
        }
        /* An expected line. */
        json_error_t jerr;
        json_t *exp = json_loads(b->lines[i] + 4, 0, &jerr), *act;
        char *line;
        if (!exp) {
            print_block(b, i);
            snprintf(msg, msglen, "%s:%d: a <-- line is not JSON: %s", DOC_NAME, b->line,
                     jerr.text);
            why = msg;
            break;
        }
        line = session_read_line(&s, LINE_WAIT_MS);
        act = line ? json_loads(line, 0, NULL) : NULL;
        if (!line || !json_match(exp, act)) {
            print_block(b, i);
            fprintf(stderr, "expected: %s\n", b->lines[i] + 4);
            fprintf(stderr, "actual:   %s\n",
                    line ? line
                         : s.eof ? "(the daemon closed the control connection)"
                                 : "(nothing within 5 s)");
            snprintf(msg, msglen, "%s:%d: line %zu of the example does not match (see above)",
                     DOC_NAME, b->line, i + 1);
            why = msg;
        }
        json_decref(exp);
        json_decref(act);
        free(line);
        i++;
    }
    if (!why) {
        /* Nothing else may have come: the probe's reply is next, or EOF
         * after daemon.shutdown. */
        char *line = NULL;
        if (!shutdown) {
            const char *probe = "{\"jsonrpc\":\"2.0\",\"id\":\"" PROBE_ID
                                "\",\"method\":\"status\"}\n";
            if (io_write_all(s.ctl, probe, strlen(probe)) == 0)
                line = session_read_line(&s, LINE_WAIT_MS);
            if (!line || !strstr(line, "\"" PROBE_ID "\"")) {
                print_block(b, b->n);
                fprintf(stderr, "after the last line the daemon sent: %s\n",
                        line ? line : "(nothing)");
                snprintf(msg, msglen, "%s:%d: the daemon sent more than the example shows",
                         DOC_NAME, b->line);
                why = msg;
            }
        } else if ((line = session_read_line(&s, 10000)) != NULL || !s.eof) {
            print_block(b, b->n);
            fprintf(stderr, "after the last line the daemon sent: %s\n",
                    line ? line : "(nothing, and kept the connection open)");
            snprintf(msg, msglen, "%s:%d: after daemon.shutdown the daemon should close "
                     "the control connection and nothing else", DOC_NAME, b->line);
            why = msg;
        }
        free(line);
    }
    {
        const char *stop = session_stop(&s, shutdown);
        if (!why && stop) {
            snprintf(msg, msglen, "%s:%d: %s", DOC_NAME, b->line, stop);
            why = msg;
        }
    }
    return why;
}

/* ---- tests ---------------------------------------------------------------- */

START_TEST(test_doc_exists_with_examples_and_a_setup)
{
    ck_assert_msg(doc != NULL, "cannot read %s", DOC_PATH);
    ck_assert_msg(doc_config != NULL, DOC_NAME " has no ```json replay-config block");
    ck_assert_msg(n_blocks > 0, DOC_NAME " has no ```jsonrpc example");
}
END_TEST

START_TEST(test_doc_example_replays)
{
    char msg[512];
    const char *why;

    ck_assert_ptr_nonnull(doc_config);
    why = replay(&blocks[_i], msg, sizeof(msg));
    ck_assert_msg(why == NULL, "%s", why);
}
END_TEST

/* Whether some example sends a request for method. */
static bool doc_has_example_for(const char *method)
{
    for (size_t b = 0; b < n_blocks; b++)
        for (size_t i = 0; i < blocks[b].n; i++) {
            json_t *req;
            bool hit;
            if (blocks[b].lines[i][0] != '-')
                continue;
            req = json_loads(blocks[b].lines[i] + 4, 0, NULL);
            hit = json_is_object(req) &&
                  json_is_string(json_object_get(req, "method")) &&
                  strcmp(json_string_value(json_object_get(req, "method")), method) == 0;
            json_decref(req);
            if (hit)
                return true;
        }
    return false;
}

/* Whether some example shows an event of this type. */
static bool doc_has_event(const char *type)
{
    for (size_t b = 0; b < n_blocks; b++)
        for (size_t i = 0; i < blocks[b].n; i++) {
            json_t *msg, *t;
            bool hit;
            if (blocks[b].lines[i][0] != '<')
                continue;
            msg = json_loads(blocks[b].lines[i] + 4, 0, NULL);
            t = json_object_get(json_object_get(msg, "params"), "type");
            hit = json_is_string(json_object_get(msg, "method")) &&
                  strcmp(json_string_value(json_object_get(msg, "method")), "event") == 0 &&
                  json_is_string(t) && strcmp(json_string_value(t), type) == 0;
            json_decref(msg);
            if (hit)
                return true;
        }
    return false;
}

/* The cells of the method table row "| `name` | params | role | ... |",
 * with "\|" unescaped and backticks and spaces trimmed; false if absent. */
static bool doc_table_row(const char *name, char *params, size_t plen, char *role,
                          size_t rlen)
{
    char head[128];
    const char *p;

    snprintf(head, sizeof(head), "\n| `%s` |", name);
    if (!(p = strstr(doc, head)))
        return false;
    p += strlen(head);
    for (int cell = 0; cell < 2; cell++) {
        char *out = cell == 0 ? params : role;
        size_t cap = cell == 0 ? plen : rlen, n = 0;
        for (; *p && *p != '\n' && *p != '|'; p++) {
            if (*p == '\\' && p[1] == '|')
                p++;
            if (*p != '`' && n + 1 < cap)
                out[n++] = *p;
        }
        while (n && out[n - 1] == ' ')
            n--;
        out[n] = '\0';
        memmove(out, out + strspn(out, " "), strlen(out + strspn(out, " ")) + 1);
        if (*p != '|')
            return false;
        p++;
    }
    return true;
}

START_TEST(test_doc_covers_every_method)
{
    struct session s;
    json_t *reply, *list, *m;
    const char *why;
    size_t i;
    int missing = 0;

    ck_assert_ptr_nonnull(doc_config);
    why = session_start(&s);
    reply = why ? NULL
                : ctl_call(s.ctl, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rpc.methods\"}");
    list = json_object_get(reply, "result");
    if (!json_is_array(list) || json_array_size(list) == 0) {
        session_stop(&s, false);
        ck_abort_msg("rpc.methods gave no list (%s)", why ? why : "bad reply");
    }
    json_array_foreach(list, i, m)
    {
        const char *name = json_string_value(json_object_get(m, "name"));
        const char *params = json_string_value(json_object_get(m, "params"));
        bool ro = json_is_true(json_object_get(m, "readonly"));
        char heading[128], cell_params[256], cell_role[64];

        if (!name || !params)
            continue;
        snprintf(heading, sizeof(heading), "\n### `%s`", name);
        if (!strstr(doc, heading)) {
            fprintf(stderr, "%s: no heading \"### `%s`\"\n", DOC_NAME, name);
            missing++;
        }
        if (!doc_has_example_for(name)) {
            fprintf(stderr, "%s: no ```jsonrpc example calls %s\n", DOC_NAME, name);
            missing++;
        }
        if (!doc_table_row(name, cell_params, sizeof(cell_params), cell_role,
                           sizeof(cell_role))) {
            fprintf(stderr, "%s: no method table row \"| `%s` | params | role |\"\n", DOC_NAME,
                    name);
            missing++;
        } else {
            if (strcmp(cell_params, params) != 0) {
                fprintf(stderr, "%s: %s: the table says params %s, rpc.methods says %s\n",
                        DOC_NAME, name, cell_params, params);
                missing++;
            }
            if (strcmp(cell_role, ro ? "read-only" : "admin") != 0) {
                fprintf(stderr, "%s: %s: the table says role \"%s\", the daemon says %s\n",
                        DOC_NAME, name, cell_role, ro ? "read-only" : "admin");
                missing++;
            }
        }
    }
    json_decref(reply);
    why = session_stop(&s, false);
    ck_assert_msg(why == NULL, "%s", why);
    ck_assert_msg(missing == 0, "%d gaps between rpc.methods and %s (see above)", missing,
                  DOC_NAME);
}
END_TEST

START_TEST(test_doc_covers_every_event_type_and_error_code)
{
    static const int codes[] = {RPC_PARSE_ERROR,     RPC_INVALID_REQUEST,  RPC_METHOD_NOT_FOUND,
                                RPC_INVALID_PARAMS,  RPC_INTERNAL_ERROR,   RPC_NO_SUCH_CONN,
                                RPC_NOT_CONNECTED,   RPC_PLUGIN_ERROR,     RPC_LISTENER_ERROR,
                                RPC_LIMIT_REACHED,   RPC_PERMISSION_DENIED};
    int missing = 0;

    ck_assert_ptr_nonnull(doc);
    for (int t = 0; t < EV_COUNT; t++) {
        char row[96];
        snprintf(row, sizeof(row), "\n| `%s` |", event_name((enum event_type)t));
        if (!doc_has_event(event_name((enum event_type)t))) {
            fprintf(stderr, "%s: no ```jsonrpc example shows a %s event\n", DOC_NAME,
                    event_name((enum event_type)t));
            missing++;
        }
        if (!strstr(doc, row)) {
            fprintf(stderr, "%s: no event table row \"| `%s` |\"\n", DOC_NAME,
                    event_name((enum event_type)t));
            missing++;
        }
    }
    if (!strstr(doc, "\n| `events_lost` |")) {
        fprintf(stderr, "%s: no event table row for events_lost\n", DOC_NAME);
        missing++;
    }
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        char row[32];
        snprintf(row, sizeof(row), "\n| %d |", codes[i]);
        if (!strstr(doc, row)) {
            fprintf(stderr, "%s: no error table row \"| %d |\"\n", DOC_NAME, codes[i]);
            missing++;
        }
    }
    ck_assert_msg(missing == 0, "%d gaps in %s (see above)", missing, DOC_NAME);
}
END_TEST

static Suite *protocol_doc_suite(void)
{
    Suite *s = suite_create("protocol_doc");
    TCase *tc = tcase_create("doc");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_doc_exists_with_examples_and_a_setup);
    tcase_add_test(tc, test_doc_covers_every_method);
    tcase_add_test(tc, test_doc_covers_every_event_type_and_error_code);
    if (n_blocks > 0)
        tcase_add_loop_test(tc, test_doc_example_replays, 0, (int)n_blocks);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    doc_load();
    sr = srunner_create(protocol_doc_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
