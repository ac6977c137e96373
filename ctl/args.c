/*
 * args.c: a command's arguments, driven by its row in the command table:
 * argv after the command word becomes the method's params object, and the
 * same arg specs produce the synopsis and the per-command help, so the two
 * cannot drift apart. Options may come before, between or after the
 * positionals; "--" ends them; "--opt=value" and "--opt value" both work.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cmd.h"

#define INT_MAX_JSON ((uint64_t)1 << 53) /* exact in every JSON reader */

struct unit {
    const char *suffix;
    uint64_t mul;
};

static const struct unit plain[] = {{"", 1}, {0}};
static const struct unit ms_units[] = {
    {"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}, {0}};
static const struct unit size_units[] = {
    {"", 1},         {"b", 1},          {"k", 1024},
    {"kib", 1024},   {"m", 1u << 20},   {"mib", 1u << 20},
    {"g", 1u << 30}, {"gib", 1u << 30}, {0}};

/* A decimal number with an optional unit suffix (case-insensitive);
 * false on anything else, a sign, or a result above 2^53. */
static bool parse_scaled(const char *s, const struct unit *units, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno)
        return false;
    for (; units->suffix; units++) {
        if (strcasecmp(end, units->suffix) == 0) {
            if (v > INT_MAX_JSON / units->mul)
                return false;
            *out = v * units->mul;
            return true;
        }
    }
    return false;
}

static bool is_option(const struct arg *a)
{
    return a->name[0] == '-';
}

void args_usage(FILE *out, const struct cmd *c)
{
    /* With CMD_SELECT the synopsis has two forms: ID with the other
     * options, or the selector options (select.*) with the others. */
    int forms = (c->flags & CMD_SELECT) ? 2 : 1;

    for (int form = 0; form < forms; form++) {
        int col = fprintf(out, "%s connctl %s", form ? "      " : "usage:", c->word);
        int indent = col + 1;

        if (c->usage) {
            fprintf(out, " %s\n", c->usage);
            return;
        }
        for (const struct arg *a = c->args; a && a->name; a++) {
            bool sel = a->key && strncmp(a->key, "select.", 7) == 0;
            char tok[96];

            if ((forms == 2) && ((form == 0 && sel) || (form == 1 && !is_option(a))))
                continue;
            if (!is_option(a))
                snprintf(tok, sizeof(tok), a->optional && forms == 1 ? "[%s]" : "%s",
                         a->name);
            else if (a->kind == ARG_FLAG)
                snprintf(tok, sizeof(tok), "[%s]", a->name);
            else
                snprintf(tok, sizeof(tok), "[%s %s]%s", a->name, a->meta,
                         a->kind == ARG_LIST ? "..." : "");
            if (col + 1 + (int)strlen(tok) > 79) {
                fprintf(out, "\n%*s", indent, "");
                col = indent;
            } else {
                col += fprintf(out, " ");
            }
            col += fprintf(out, "%s", tok);
        }
        fputc('\n', out);
    }
}

void args_help(FILE *out, const struct cmd *c)
{
    int width = 0;

    args_usage(out, c);
    fprintf(out, "\n%s\n", c->summary);
    if (c->flags & CMD_SELECT)
        fputs("Give an ID or at least one selector option, not both.\n", out);
    if (c->args && c->args->name)
        fputs("\narguments:\n", out);
    for (int pass = 0; pass < 2; pass++) {
        for (const struct arg *a = c->args; a && a->name; a++) {
            char left[96];
            if (is_option(a) && a->kind != ARG_FLAG)
                snprintf(left, sizeof(left), "%s %s", a->name, a->meta);
            else
                snprintf(left, sizeof(left), "%s", a->name);
            if (pass == 0 && (int)strlen(left) > width)
                width = (int)strlen(left);
            else if (pass == 1)
                fprintf(out, "  %-*s  %s\n", width, left, a->help);
        }
    }
    if (c->method)
        fprintf(out, "\nmethod: %s\n", c->method);
}

int args_error(const struct cmd *c, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "connctl: %s: ", c->word);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    args_usage(stderr, c);
    fprintf(stderr, "try 'connctl help %s'\n", c->word);
    return CTL_EXIT_USAGE;
}

/* params[key] = v (taken), where "a.b" goes into the object params["a"]
 * and ARG_LIST values are appended to an array. */
static int store(json_t *params, const char *key, json_t *v, bool list)
{
    const char *dot = strchr(key, '.');
    json_t *obj = params, *cur;
    int rc;

    if (!v)
        return -ENOMEM;
    if (dot) {
        char head[32];
        snprintf(head, sizeof(head), "%.*s", (int)(dot - key), key);
        if (!(obj = json_object_get(params, head))) {
            obj = json_object();
            if (json_object_set_new(params, head, obj) < 0) {
                json_decref(v);
                return -ENOMEM;
            }
        }
        key = dot + 1;
    }
    if (list) {
        if (!(cur = json_object_get(obj, key))) {
            cur = json_array();
            if (json_object_set_new(obj, key, cur) < 0) {
                json_decref(v);
                return -ENOMEM;
            }
        }
        rc = json_array_append_new(cur, v);
    } else {
        rc = json_object_set_new(obj, key, v);
    }
    return rc < 0 ? -ENOMEM : 0;
}

static bool has_key(json_t *params, const char *key)
{
    const char *dot = strchr(key, '.');
    json_t *obj = params;

    if (dot) {
        char head[32];
        snprintf(head, sizeof(head), "%.*s", (int)(dot - key), key);
        if (!(obj = json_object_get(params, head)))
            return false;
        key = dot + 1;
    }
    return json_object_get(obj, key) != NULL;
}

/* A port into *out: digits are sent as a number, anything else as a
 * service name. Returns 0, CTL_EXIT_USAGE after printing why, or -ENOMEM. */
static int port_value(const struct cmd *c, const char *what, const char *s, json_t **out)
{
    uint64_t n;

    if (!*s)
        return args_error(c, "%s: missing port", what);
    if (*s >= '0' && *s <= '9') {
        if (!parse_scaled(s, plain, &n) || n > 65535)
            return args_error(
                c, "%s: expected a port (0..65535) or service name, got '%s'", what, s);
        *out = json_integer((json_int_t)n);
    } else {
        *out = json_string(s);
    }
    return *out ? 0 : -ENOMEM;
}

/* HOST:PORT or [V6ADDR]:PORT into params.host and params.port. */
static int store_hostport(const struct cmd *c, const struct arg *a, json_t *params,
                          const char *s)
{
    const char *colon = strrchr(s, ':'), *host = s;
    size_t hlen;
    char buf[256];
    json_t *port = NULL;
    int rc;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return args_error(c, "%s: expected [ADDRESS]:PORT, got '%s'", a->name, s);
        host = s + 1;
        hlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        if (!colon || colon == s)
            return args_error(c, "%s: expected HOST:PORT, got '%s'", a->name, s);
        if (memchr(s, ':', (size_t)(colon - s)))
            return args_error(c, "%s: write an IPv6 address in brackets, [%.*s]:%s",
                              a->name, (int)(colon - s), s, colon + 1);
        hlen = (size_t)(colon - s);
    }
    if (hlen == 0 || hlen >= sizeof(buf))
        return args_error(c, "%s: bad host in '%s'", a->name, s);
    snprintf(buf, sizeof(buf), "%.*s", (int)hlen, host);
    if ((rc = port_value(c, a->name, colon + 1, &port)) != 0)
        return rc;
    if (store(params, "port", port, false) < 0 ||
        store(params, "host", json_string(buf), false))
        return -ENOMEM;
    return 0;
}

/* Convert text for a and store it. Returns 0, CTL_EXIT_USAGE after
 * printing why, or -ENOMEM. */
static int convert(const struct cmd *c, const struct arg *a, json_t *params,
                   const char *s)
{
    static const char *const on[] = {"on", "yes", "true", "1"};
    static const char *const off[] = {"off", "no", "false", "0"};
    const char *what = a->name;
    json_t *v = NULL;
    uint64_t n;
    int rc;

    switch (a->kind) {
    case ARG_ID:
        if (!parse_scaled(s, plain, &n) || !n)
            return args_error(
                c, "%s: expected a connection id (a positive integer), got '%s'", what,
                s);
        v = json_integer((json_int_t)n);
        break;
    case ARG_UINT:
        if (!parse_scaled(s, plain, &n))
            return args_error(c, "%s: expected a non-negative integer, got '%s'", what,
                              s);
        v = json_integer((json_int_t)n);
        break;
    case ARG_MS:
        if (!parse_scaled(s, ms_units, &n))
            return args_error(
                c, "%s: expected milliseconds (500, 30s, 5m, 2h, 1d), got '%s'", what, s);
        v = json_integer((json_int_t)n);
        break;
    case ARG_SIZE:
        if (!parse_scaled(s, size_units, &n))
            return args_error(
                c, "%s: expected a size in bytes (65536, 64k, 1m), got '%s'", what, s);
        v = json_integer((json_int_t)n);
        break;
    case ARG_STR:
        if (!(v = json_string(s)))
            return args_error(c, "%s: not valid UTF-8", what);
        break;
    case ARG_TEXT:
        /* Unchecked: the command decides what to do with non-UTF-8. It
         * must not be serialised as it is. */
        v = json_stringn_nocheck(s, strlen(s));
        break;
    case ARG_PORT:
        if ((rc = port_value(c, what, s, &v)) != 0)
            return rc;
        break;
    case ARG_HOSTPORT:
        return store_hostport(c, a, params, s);
    case ARG_ONOFF:
        for (size_t i = 0; i < sizeof(on) / sizeof(on[0]) && !v; i++)
            if (strcasecmp(s, on[i]) == 0 || strcasecmp(s, off[i]) == 0)
                v = json_boolean(strcasecmp(s, on[i]) == 0);
        if (!v)
            return args_error(c, "%s: expected on or off, got '%s'", what, s);
        break;
    case ARG_CHOICE: {
        size_t len = strlen(s);
        for (const char *p = a->meta; p && *p; p += strcspn(p, "|"), p += *p == '|')
            if (strcspn(p, "|") == len && strncmp(p, s, len) == 0 && len)
                v = json_string(s);
        if (!v)
            return args_error(c, "%s: expected one of %s, got '%s'", what, a->meta, s);
        break;
    }
    case ARG_JSON: {
        json_error_t jerr;
        if (!(v = json_loads(s, JSON_DECODE_ANY, &jerr)))
            return args_error(c, "%s: expected a JSON object: %s", what, jerr.text);
        if (!json_is_object(v)) {
            json_decref(v);
            return args_error(c, "%s: expected a JSON object, got '%s'", what, s);
        }
        break;
    }
    case ARG_FLAG:
        v = json_true();
        break;
    case ARG_LIST:
        /* "--type accepted,closed" is "--type accepted --type closed". */
        for (const char *p = s; *p; p += strcspn(p, ","), p += *p == ',') {
            char item[64];
            size_t len = strcspn(p, ",");
            if (!len || len >= sizeof(item))
                return args_error(c, "%s: bad list item in '%s'", what, s);
            snprintf(item, sizeof(item), "%.*s", (int)len, p);
            if (store(params, a->key, json_string(item), true) < 0)
                return -ENOMEM;
        }
        return 0;
    }
    return store(params, a->key, v, false);
}

/* The option spec matching "--name" (text up to '=' when there is one). */
static const struct arg *find_option(const struct cmd *c, const char *s, size_t len)
{
    for (const struct arg *a = c->args; a && a->name; a++)
        if (is_option(a) && strlen(a->name) == len && strncmp(a->name, s, len) == 0)
            return a;
    return NULL;
}

static int unknown_option(const struct cmd *c, const char *s)
{
    if (strcmp(s, "--json") == 0 || strcmp(s, "-s") == 0 ||
        strncmp(s, "--socket", 8) == 0)
        return args_error(c,
                          "%s is a global option: give it before the command, "
                          "connctl %s %s ...",
                          s, s, c->word);
    return args_error(c, "unknown option '%s'", s);
}

/* After parsing: the rules a row's flags add. */
static int check_flags(const struct cmd *c, json_t *params)
{
    bool any_opt = false;

    if (c->flags & CMD_SELECT) {
        bool id = json_object_get(params, "id") != NULL;
        bool sel = json_object_get(params, "select") != NULL;
        if (id && sel)
            return args_error(c, "give an ID or selector options, not both");
        if (!id && !sel)
            return args_error(c, "missing ID or a selector option");
    }
    for (const struct arg *a = c->args; a && a->name; a++)
        any_opt |= is_option(a) && has_key(params, a->key);
    if ((c->flags & CMD_NEED_OPT) && !any_opt)
        return args_error(c, "nothing to do: give at least one option");
    return 0;
}

int args_parse(const struct cmd *c, int argc, char **argv, json_t **params)
{
    const struct arg *pos = c->args;
    bool opts_done = false;
    json_t *p = json_object();
    int rc = p ? 0 : -ENOMEM;

    for (int i = 0; i < argc && rc == 0; i++) {
        const char *s = argv[i], *val, *eq;
        const struct arg *a;

        if (!opts_done && strcmp(s, "--") == 0) {
            opts_done = true;
        } else if (!opts_done && s[0] == '-' && s[1] != '\0') {
            if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
                json_decref(p);
                *params = NULL;
                args_help(stdout, c);
                return 1;
            }
            eq = strchr(s, '=');
            if (!(a = find_option(c, s, eq ? (size_t)(eq - s) : strlen(s))))
                rc = unknown_option(c, s);
            else if (a->kind == ARG_FLAG && eq)
                rc = args_error(c, "%s takes no value", a->name);
            else if (a->kind != ARG_LIST && has_key(p, a->key))
                rc = args_error(c, "%s given twice", a->name);
            else if (a->kind != ARG_FLAG && !eq && i + 1 >= argc)
                rc = args_error(c, "%s needs a value (%s)", a->name, a->meta);
            else {
                val = a->kind == ARG_FLAG ? "" : eq ? eq + 1 : argv[++i];
                rc = convert(c, a, p, val);
            }
        } else {
            while (pos && pos->name && is_option(pos))
                pos++;
            if (!pos || !pos->name)
                rc = args_error(c, "unexpected argument '%s'", s);
            else
                rc = convert(c, pos++, p, s);
        }
    }
    while (rc == 0 && pos && pos->name) {
        if (!is_option(pos) && !pos->optional)
            rc = args_error(c, "missing %s", pos->name);
        pos++;
    }
    if (rc == 0)
        rc = check_flags(c, p);
    if (rc == -ENOMEM)
        fprintf(stderr, "connctl: out of memory\n");
    if (rc != 0) {
        json_decref(p);
        *params = NULL;
        return -1;
    }
    *params = p;
    return 0;
}
