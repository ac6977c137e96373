/*
 * cmd.c: connctl's command table, one row per command of SPEC section 6:
 * the word, the JSON-RPC method it calls, its arguments (args.c turns them
 * into params and help), and how a result is shown to people. Also the
 * lookup of a word (exact, or a unique prefix; otherwise the valid words),
 * the call wrapper that maps replies to exit codes, and the printers that
 * need more than a table or a template.
 */
#include "cmd.h"

#include <string.h>

#include "table.h"

/* ---- printers ------------------------------------------------------------ */

static void print_kv(const struct cmd *c, json_t *res)
{
    (void)c;
    table_kv(stdout, res);
}

static void print_say(const struct cmd *c, json_t *res)
{
    table_say(stdout, c->say, res);
}

static void print_conns(const struct cmd *c, json_t *res)
{
    static const struct col cols[] = {{"ID", "id", FMT_AUTO},
                                      {"LISTENER", "listener", FMT_AUTO},
                                      {"PLUGIN", "plugin", FMT_AUTO},
                                      {"STATE", "state", FMT_AUTO},
                                      {"REMOTE", "remote", FMT_AUTO},
                                      {"IN", "bytes_in", FMT_SIZE},
                                      {"OUT", "bytes_out", FMT_SIZE},
                                      {"PENDING", "pending", FMT_SIZE},
                                      {"MUTED", "mute_reasons", FMT_AUTO},
                                      {"AGE", "created_ms", FMT_AGE},
                                      {0}};
    (void)c;
    table_print(stdout, cols, res);
}

static void print_listeners(const struct cmd *c, json_t *res)
{
    static const struct col cols[] = {
        {"NAME", "name", FMT_AUTO},     {"LOCAL", "local", FMT_AUTO},
        {"PLUGIN", "plugin", FMT_AUTO}, {"LIMIT", "limit", FMT_DASH0},
        {"ACTIVE", "active", FMT_AUTO}, {"ACCEPTED", "accepted", FMT_AUTO},
        {"PAUSED", "paused", FMT_AUTO}, {0}};
    (void)c;
    table_print(stdout, cols, res);
}

static void print_plugins(const struct cmd *c, json_t *res)
{
    static const struct col cols[] = {{"NAME", "name", FMT_AUTO},
                                      {"ABI", "abi", FMT_AUTO},
                                      {"CONNS", "connections", FMT_AUTO},
                                      {"FILE", "file", FMT_AUTO},
                                      {0}};
    (void)c;
    table_print(stdout, cols, res);
}

static void print_methods(const struct cmd *c, json_t *res)
{
    static const struct col cols[] = {{"METHOD", "name", FMT_AUTO},
                                      {"READONLY", "readonly", FMT_AUTO},
                                      {"PARAMS", "params", FMT_AUTO},
                                      {"SUMMARY", "summary", FMT_AUTO},
                                      {0}};
    (void)c;
    table_print(stdout, cols, res);
}

/* mute and unmute: the reasons still in force, which may not be ours. */
static void print_mute(const struct cmd *c, json_t *res)
{
    (void)c;
    table_say(stdout,
              json_is_true(json_object_get(res, "muted"))
                  ? "conn {id}: muted ({mute_reasons})"
                  : "conn {id}: not muted",
              res);
}

/* pause and resume: whether the listener accepts now, and if not why. */
static void print_listener_state(const struct cmd *c, json_t *res)
{
    (void)c;
    table_say(stdout,
              json_array_size(json_object_get(res, "paused"))
                  ? "listener {name}: paused ({paused})"
                  : "listener {name}: accepting",
              res);
}

/* setopt: the options connd applied, as key=value. */
static void print_applied(const struct cmd *c, json_t *res)
{
    const char *key;
    json_t *v;

    (void)c;
    printf("conn %" JSON_INTEGER_FORMAT ":",
           json_integer_value(json_object_get(res, "id")));
    json_object_foreach(res, key, v)
    {
        char buf[256];
        if (strcmp(key, "id") == 0)
            continue;
        table_value(v, FMT_AUTO, buf, sizeof(buf));
        printf(" %s=%s", key, buf);
    }
    putchar('\n');
}

/* close and abort of one connection: its state now. */
static void print_state(const struct cmd *c, json_t *res)
{
    (void)c;
    table_say(stdout, "conn {id}: {state}", res);
}

/* The selector form of close/abort/mute/unmute: {matched, count, dry_run}. */
static void print_bulk(const struct cmd *c, json_t *res)
{
    json_t *ids = json_object_get(res, "matched"), *v;
    size_t i, n = json_array_size(ids);

    printf("matched %zu connection%s%s", n, n == 1 ? "" : "s", n ? ":" : "");
    json_array_foreach(ids, i, v)
    {
        printf(" %" JSON_INTEGER_FORMAT, json_integer_value(v));
    }
    if (json_is_true(json_object_get(res, "dry_run")))
        printf("\ndry run: nothing changed\n");
    else
        printf(n ? " (%s)\n" : "\n", c->say);
}

/* ---- the table ----------------------------------------------------------- */

static int help_run(struct ctl *x, json_t *params);

/* clang-format off */
#define POS(name, key, kind, help) {name, key, kind, NULL, help, false}
#define POS_OPTIONAL(name, key, kind, help) {name, key, kind, NULL, help, true}
#define OPT(name, key, kind, meta, help) {name, key, kind, meta, help, false}
/* clang-format on */
#define ID_ARG(help) POS("ID", "id", ARG_ID, help)
#define NAME_ARG(help) POS("NAME", "name", ARG_STR, help)

/* close, abort, mute, unmute: one connection, or those the selectors match. */
static const struct arg select_args[] = {
    POS_OPTIONAL("ID", "id", ARG_ID, "the connection"),
    OPT("--listener", "select.listener", ARG_STR, "NAME", "accepted by listener NAME"),
    OPT("--plugin", "select.plugin", ARG_STR, "NAME", "handled by plugin NAME"),
    OPT("--remote-prefix", "select.remote_prefix", ARG_STR, "P",
        "remote address starts with P (\"10.1.\", \"[::1]\")"),
    OPT("--idle-gt", "select.idle_ms_gt", ARG_MS, "MS",
        "idle for longer than MS (also 30s, 5m, 2h)"),
    OPT("--dry-run", "dry_run", ARG_FLAG, NULL, "print the matching ids, change nothing"),
    {0}};

/* listen: the optional fields of a config listener (SPEC section 3). */
/* clang-format off */
#define LIMIT_ARGS                                                                    \
    OPT("--init-size", "init_size", ARG_SIZE, "N", "first read buffer size (64)"),    \
    OPT("--max-size", "max_size", ARG_SIZE, "N", "largest read buffer (16k)"),        \
    OPT("--high-watermark", "high_watermark", ARG_SIZE, "N", "throttle above N pending"), \
    OPT("--low-watermark", "low_watermark", ARG_SIZE, "N", "unthrottle at N pending"),    \
    OPT("--max-pending", "max_pending", ARG_SIZE, "N", "refuse writes past N pending")
/* clang-format on */

#define ARGS(...) ((const struct arg[]){__VA_ARGS__, {0}})

static const struct cmd cmds[] = {
    {"status", "status", NULL, "Show the daemon's version, pid, uptime and counts.", NULL,
     0, NULL, print_kv, NULL},
    {"list", "conn.list", NULL, "List connections.",
     ARGS(OPT("--listener", "listener", ARG_STR, "NAME", "only those of listener NAME")),
     0, NULL, print_conns, NULL},
    {"show", "conn.show", NULL, "Show one connection with its socket options.",
     ARGS(ID_ARG("the connection")), 0, NULL, print_kv, NULL},
    {"mute", "conn.mute", NULL, "Stop reading from connections (mute reason \"ctl\").",
     select_args, CMD_SELECT, NULL, print_mute, "muted"},
    {"unmute", "conn.unmute", NULL,
     "Lift the \"ctl\" mute reason; other reasons stay in force.", select_args,
     CMD_SELECT, NULL, print_mute, "unmuted"},
    {"write", "conn.write", "ID TEXT | ID - | ID --base64 B64 | ID --file F",
     "Queue bytes on a connection.\n"
     "TEXT is sent as given, '-' sends standard input, --base64 decoded base64 text,\n"
     "--file a file's bytes. Input and files may be binary and of any size: they go\n"
     "in chunks of 512 KiB, each a conn.write.",
     ARGS(
         ID_ARG("the connection"),
         POS_OPTIONAL("TEXT", "data", ARG_TEXT,
                      "bytes to write, or - for standard input"),
         OPT("--base64", "data_base64", ARG_STR, "B64", "bytes to write, base64-encoded"),
         OPT("--file", "file", ARG_STR, "F", "write the contents of file F")),
     0, stream_write, print_say, "conn {id}: queued {queued} bytes (token {token})"},
    {"close", "conn.close", NULL,
     "Close gracefully: queued bytes are sent first, then FIN.", select_args, CMD_SELECT,
     NULL, print_state, "closing"},
    {"abort", "conn.abort", NULL, "Close hard: the peer gets a reset (RST).", select_args,
     CMD_SELECT, NULL, print_state, "aborted"},
    {"connect", "conn.connect", NULL, "Open an outgoing connection handled by PLUGIN.",
     ARGS(POS("HOST", "host", ARG_STR, "host name or address"),
          POS("PORT", "port", ARG_PORT, "port number or service name"),
          POS("PLUGIN", "plugin", ARG_STR, "a loaded plugin"),
          OPT("--from", "from", ARG_STR, "ADDR", "local address to bind"),
          OPT("--family", "family", ARG_CHOICE, "any|ipv4|ipv6",
              "address family (any: Happy Eyeballs)")),
     0, NULL, print_say, "conn {id}: connecting"},
    {"set-notify", "conn.set_notify", NULL, "Hand a connection to another plugin.",
     ARGS(ID_ARG("the connection"), POS("PLUGIN", "plugin", ARG_STR, "a loaded plugin")),
     0, NULL, print_say, "conn {id}: handled by plugin {plugin}"},
    {"setopt", "conn.setopt", NULL, "Set socket options of a connection.",
     ARGS(ID_ARG("the connection"),
          OPT("--nodelay", "nodelay", ARG_ONOFF, "on|off", "TCP_NODELAY"),
          OPT("--keepalive", "keepalive_s", ARG_UINT, "SECS",
              "TCP keepalive delay, 0: off"),
          OPT("--rcvbuf", "rcvbuf", ARG_SIZE, "N", "SO_RCVBUF"),
          OPT("--sndbuf", "sndbuf", ARG_SIZE, "N", "SO_SNDBUF")),
     CMD_NEED_OPT, NULL, print_applied, NULL},
    {"listeners", "listener.list", NULL, "List listeners.", NULL, 0, NULL,
     print_listeners, NULL},
    {"listen", "listener.add", NULL,
     "Start a listener. HOST:PORT is 127.0.0.1:7000 or [::1]:7000; port 0 picks one.",
     ARGS(NAME_ARG("the new listener's name"),
          POS("HOST:PORT", "host", ARG_HOSTPORT, "address to listen on"),
          POS("PLUGIN", "plugin", ARG_STR, "a loaded plugin"),
          OPT("--limit", "limit", ARG_UINT, "N",
              "accept at most N at a time (0: no limit)"),
          LIMIT_ARGS),
     0, NULL, print_say, "listener {name}: listening on {local} (plugin {plugin})"},
    {"unlisten", "listener.remove", NULL,
     "Stop and remove a listener; its connections stay.", ARGS(NAME_ARG("the listener")),
     0, NULL, print_say, "listener {name}: removed, {active} connections stay"},
    {"pause", "listener.pause", NULL, "Stop accepting (pause reason \"ctl\").",
     ARGS(NAME_ARG("the listener")), 0, NULL, print_listener_state, NULL},
    {"resume", "listener.resume", NULL, "Lift the \"ctl\" pause of a listener.",
     ARGS(NAME_ARG("the listener")), 0, NULL, print_listener_state, NULL},
    {"plugins", "plugin.list", NULL, "List loaded plugins.", NULL, 0, NULL, print_plugins,
     NULL},
    {"load", "plugin.load", NULL,
     "Load plugin FILE (in plugin_dir, or absolute) as NAME.",
     ARGS(NAME_ARG("the plugin's name"), POS("FILE", "file", ARG_STR, "the .so file"),
          OPT("--config", "config", ARG_JSON, "JSON", "the plugin's config object")),
     0, NULL, print_say, "plugin {name}: loaded {file} (abi {abi})"},
    {"watch", "events.subscribe", NULL,
     "Print events as they happen, one a line.\n"
     "Runs until interrupted (SIGINT, SIGTERM: exit 0) or connd goes away (exit 3).\n"
     "With --json each line is an event's params object. Types: accepted,\n"
     "connected, connect_failed, closed, throttled, unthrottled, muted, unmuted, sent,\n"
     "send_failed, listener_added, listener_removed, listener_paused, listener_resumed\n"
     "(events_lost comes whatever the filter).",
     ARGS(OPT("--type", "types", ARG_LIST, "T",
              "only events of type T (repeat, or T1,T2)"),
          OPT("--conn", "conn", ARG_ID, "ID", "only events of connection ID"),
          OPT("--listener", "listener", ARG_STR, "NAME", "only events of listener NAME")),
     0, stream_watch, NULL, NULL},
    {"reload", "daemon.reload", NULL, "Re-read the config file, as SIGHUP.", NULL, 0,
     NULL, print_say, "connd: reloaded {config}"},
    {"shutdown", "daemon.shutdown", NULL, "Drain and stop connd, as SIGTERM.",
     ARGS(OPT("--timeout", "timeout_ms", ARG_MS, "MS",
              "drain for at most MS (also 10s); default: the config's")),
     0, NULL, print_say,
     "connd: stopping, {connections} connections, drain timeout {timeout_ms:ms}"},
    {"methods", "rpc.methods", NULL, "List the control methods connd serves.", NULL, 0,
     NULL, print_methods, NULL},
    {"help", NULL, NULL, "Show help for connctl or one command.",
     ARGS(POS_OPTIONAL("COMMAND", "command", ARG_STR, "a command")), CMD_LOCAL, help_run,
     NULL, NULL},
    {0}};

/* ---- lookup ---------------------------------------------------------------- */

/* Edit distance, for "did you mean" (words are short). */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[32], i, j;

    if (la >= 31 || lb >= 31)
        return 99;
    for (j = 0; j <= lb; j++)
        row[j] = j;
    for (i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (j = 1; j <= lb; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[lb];
}

static void print_words(FILE *out, const char *head)
{
    fprintf(out, "%s", head);
    for (const struct cmd *c = cmds; c->word; c++)
        fprintf(out, " %s", c->word);
    fputc('\n', out);
}

const struct cmd *cmd_find(const char *word)
{
    const struct cmd *hit = NULL;
    size_t len = strlen(word), n = 0;

    for (const struct cmd *c = cmds; c->word; c++) {
        if (strcmp(c->word, word) == 0)
            return c;
        if (len && strncmp(c->word, word, len) == 0) {
            hit = c;
            n++;
        }
    }
    if (n == 1)
        return hit;
    if (n > 1) {
        fprintf(stderr, "connctl: ambiguous command '%s', it could be:", word);
        for (const struct cmd *c = cmds; c->word; c++)
            if (strncmp(c->word, word, len) == 0)
                fprintf(stderr, " %s", c->word);
        fputc('\n', stderr);
        return NULL;
    }
    fprintf(stderr, "connctl: unknown command '%s'\n", word);
    for (const struct cmd *c = cmds; c->word; c++)
        if (distance(word, c->word) <= 2 || (len > 2 && strstr(c->word, word)))
            fprintf(stderr, "%s %s", n++ ? "," : "did you mean:", c->word);
    if (n)
        fputs("?\n", stderr);
    print_words(stderr, "valid commands:");
    return NULL;
}

void cmd_list(FILE *out)
{
    fputs("commands:\n", out);
    for (const struct cmd *c = cmds; c->word; c++) {
        size_t len = strcspn(c->summary, "\n");
        fprintf(out, "  %-11s %.*s\n", c->word, (int)len, c->summary);
    }
}

static int help_run(struct ctl *x, json_t *params)
{
    const char *word = json_string_value(json_object_get(params, "command"));
    const struct cmd *c;

    (void)x;
    if (!word) {
        main_usage(stdout);
        return CTL_EXIT_OK;
    }
    if (!(c = cmd_find(word)))
        return CTL_EXIT_USAGE;
    args_help(stdout, c);
    return CTL_EXIT_OK;
}

/* ---- calling --------------------------------------------------------------- */

int cmd_call(struct ctl *x, const char *method, json_t *params, json_t **result)
{
    json_t *out = NULL, *data;
    int rc = client_call(&x->cl, method, params, &out);

    if (rc == CLIENT_RESULT) {
        *result = out;
        return CTL_EXIT_OK;
    }
    if (rc == CLIENT_FAIL) {
        fprintf(stderr, "connctl: %s: %s\n", method, x->cl.err);
        return CTL_EXIT_UNREACHABLE;
    }
    data = json_object_get(json_object_get(out, "data"), "errno");
    fprintf(stderr, "connctl: %s: %s (code %" JSON_INTEGER_FORMAT "%s%s)\n", method,
            json_string_value(json_object_get(out, "message"))
                ? json_string_value(json_object_get(out, "message"))
                : "error",
            json_integer_value(json_object_get(out, "code")), data ? ", " : "",
            data ? json_string_value(data) : "");
    json_decref(out);
    return CTL_EXIT_REPLY;
}

void cmd_output(const struct ctl *x, json_t *result)
{
    const struct cmd *c = x->cmd;

    if (x->json) {
        json_dumpf(result, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY);
        putchar('\n');
    } else if ((c->flags & CMD_SELECT) && json_object_get(result, "matched")) {
        print_bulk(c, result);
    } else {
        (c->print ? c->print : print_kv)(c, result);
    }
}
