/*
 * config.c: turns the JSON config file (SPEC section 3) into a struct config.
 * It owns the parse and every validation rule: key names, types, ranges,
 * unique names, plugin references and port resolution. Every error is one
 * line that names the key path ("listeners[0].port: ..."). It opens no
 * socket and loads no plugin; its only lookup is getservbyname().
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef CONND_DEFAULT_PLUGIN_DIR
#define DEFAULT_PLUGIN_DIR CONND_DEFAULT_PLUGIN_DIR
#else
#define DEFAULT_PLUGIN_DIR CONFIG_DEFAULT_PLUGIN_DIR
#endif

#define MAX_FILE_SIZE (1024 * 1024)
#define MAX_NAME_LEN 64
#define NAME_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
#define MAX_TIMEOUT_MS 86400000
#define MAX_BUF_SIZE 67108864
/* 2^40 bytes, or what size_t holds on a 32-bit build. */
#define MAX_BYTES ((uint64_t)SIZE_MAX < (1ULL << 40) ? (uint64_t)SIZE_MAX : (1ULL << 40))
/* (uid_t)-1 means "no change" to chown() and friends, so it is not a uid. */
#define MAX_UID 4294967294ULL
#define LIMIT_KEYS                                                                       \
    "init_size", "max_size", "high_watermark", "low_watermark", "max_pending"

/* Where the parse is in the document, and where its one error line goes. */
struct ctx {
    char path[256];
    size_t len;
    char *err;
    size_t errlen;
};

/* Appends to the path and returns its old length, for pop(). */
static size_t __attribute__((format(printf, 2, 3)))
push(struct ctx *c, const char *fmt, ...)
{
    size_t saved = c->len, room = sizeof(c->path) - c->len;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(c->path + c->len, room, fmt, ap);
    va_end(ap);
    /* A very long key truncates the path rather than failing the parse. */
    if (n > 0)
        c->len += (size_t)n < room ? (size_t)n : room - 1;
    return saved;
}

#define push_key(c, key) push(c, (c)->len ? ".%s" : "%s", key)

static void pop(struct ctx *c, size_t saved)
{
    c->len = saved;
    c->path[saved] = '\0';
}

/* Writes "PATH[.key]: reason" into the error buffer and returns rc. */
static int __attribute__((format(printf, 4, 5)))
fail_rc(struct ctx *c, int rc, const char *key, const char *fmt, ...)
{
    size_t saved = key ? push_key(c, key) : c->len;
    va_list ap;
    int n;

    if (c->err && c->errlen) {
        n = snprintf(c->err, c->errlen, "%s: ", c->len ? c->path : "(root)");
        va_start(ap, fmt);
        if (n >= 0 && (size_t)n < c->errlen)
            vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
        va_end(ap);
        /* Keys and names come from the file; keep the message on one line. */
        for (char *p = c->err; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = '?';
    }
    pop(c, saved);
    return rc;
}

#define fail(c, key, ...) fail_rc(c, -EINVAL, key, __VA_ARGS__)
#define oom(c, key) fail_rc(c, -ENOMEM, key, "out of memory")

/* Every key of obj must be in the NULL-terminated list `known`. */
static int check_keys(struct ctx *c, const json_t *obj, const char *const *known)
{
    const char *key;
    json_t *v;

    json_object_foreach ((json_t *)obj, key, v) {
        size_t i = 0;
        while (known[i] && strcmp(known[i], key) != 0)
            i++;
        if (!known[i])
            return fail(c, key, "unknown key");
    }
    return 0;
}

enum { OPTIONAL = 0, REQUIRED = 1, NONEMPTY = 2 };

/* A malloc'd copy of obj[key] in *out, or of `def` when the key is absent. */
static int get_string(struct ctx *c, const json_t *obj, const char *key, int flags,
                      const char *def, char **out)
{
    json_t *v = json_object_get(obj, key);

    if (!v && (flags & REQUIRED))
        return fail(c, NULL, "missing key \"%s\"", key);
    if (v && !json_is_string(v))
        return fail(c, key, "expected string");
    if (v && (flags & NONEMPTY) && json_string_length(v) == 0)
        return fail(c, key, "must not be empty");
    if (!(*out = strdup(v ? json_string_value(v) : def)))
        return oom(c, key);
    return 0;
}

/* The integer v in min..max; key is where v is, NULL for the current path. */
static int check_uint(struct ctx *c, const char *key, const json_t *v, uint64_t min,
                      uint64_t max, uint64_t *out)
{
    json_int_t n;

    /* json_is_integer() is false for reals and booleans, as it should be. */
    if (!json_is_integer(v))
        return fail(c, key, "expected integer");
    n = json_integer_value(v);
    if (n < 0 || (uint64_t)n < min || (uint64_t)n > max)
        return fail(c, key, "out of range (%" PRIu64 "..%" PRIu64 ")", min, max);
    *out = (uint64_t)n;
    return 0;
}

/* obj[key] as an integer in min..max, or `def` when the key is absent. */
static int get_uint(struct ctx *c, const json_t *obj, const char *key, uint64_t min,
                    uint64_t max, uint64_t def, uint64_t *out)
{
    json_t *v = json_object_get(obj, key);

    *out = def;
    return v ? check_uint(c, key, v, min, max, out) : 0;
}

/* The same rule for plugin, listener and connection names. */
static int get_name(struct ctx *c, const json_t *obj, char **out)
{
    size_t len;
    int rc;

    if ((rc = get_string(c, obj, "name", REQUIRED, NULL, out)) < 0)
        return rc;
    len = strlen(*out);
    if (len == 0 || len > MAX_NAME_LEN || strspn(*out, NAME_CHARS) != len)
        return fail(c, "name", "must be 1 to %d characters from [A-Za-z0-9_.-]",
                    MAX_NAME_LEN);
    return 0;
}

/* A port: an integer, a digit string, or a tcp service name from /etc/services. */
static int get_port(struct ctx *c, const json_t *obj, unsigned min, char **text,
                    uint16_t *num)
{
    json_t *v = json_object_get(obj, "port");
    struct servent *se;
    const char *s;
    char buf[24];
    uint64_t n = 0;
    int rc;

    if (!v)
        return fail(c, NULL, "missing key \"port\"");
    if (json_is_integer(v)) {
        if ((rc = check_uint(c, "port", v, min, 65535, &n)) < 0)
            return rc;
        snprintf(buf, sizeof(buf), "%" PRIu64, n);
        s = buf;
    } else if (json_is_string(v)) {
        s = json_string_value(v);
        if (*s == '\0')
            return fail(c, "port", "must not be empty");
        if (strspn(s, "0123456789") == strlen(s)) {
            errno = 0;
            n = strtoull(s, NULL, 10);
            if (errno == ERANGE)
                n = UINT64_MAX;
        } else if ((se = getservbyname(s, "tcp"))) {
            n = ntohs((uint16_t)se->s_port);
        } else {
            return fail(c, "port", "unknown service \"%s\"", s);
        }
        if (n < min || n > 65535)
            return fail(c, "port", "out of range (%u..65535)", min);
    } else {
        return fail(c, "port", "expected string or integer");
    }
    *num = (uint16_t)n;
    if (!(*text = strdup(s)))
        return oom(c, "port");
    return 0;
}

/* "660", "0660", "1777" and "01777" are fine; 0660 as a JSON integer is not,
 * because it would read as decimal 660. */
static int get_mode(struct ctx *c, const json_t *obj, mode_t *out)
{
    json_t *v = json_object_get(obj, "mode");
    const char *s;
    size_t len;

    *out = 0660;
    if (!v)
        return 0;
    s = json_is_string(v) ? json_string_value(v) : "";
    len = strlen(s);
    if (len > 3 && s[0] == '0') {
        s++;
        len--;
    }
    if (len < 3 || len > 4 || strspn(s, "01234567") != len)
        return fail(c, "mode", "expected an octal string like \"0660\"");
    *out = (mode_t)strtoul(s, NULL, 8);
    return 0;
}

static int get_uids(struct ctx *c, const json_t *obj, const char *key, uid_t **out,
                    size_t *n)
{
    json_t *v = json_object_get(obj, key), *item;
    size_t i, saved;
    uint64_t uid = 0;
    int rc = 0;

    if (!v)
        return 0;
    if (!json_is_array(v))
        return fail(c, key, "expected array");
    if (json_array_size(v) == 0)
        return 0;
    if (!(*out = calloc(json_array_size(v), sizeof(**out))))
        return oom(c, key);
    saved = push_key(c, key);
    json_array_foreach (v, i, item) {
        size_t at = push(c, "[%zu]", i);
        rc = check_uint(c, NULL, item, 0, MAX_UID, &uid);
        pop(c, at);
        if (rc < 0)
            break;
        (*out)[(*n)++] = (uid_t)uid;
    }
    pop(c, saved);
    return rc;
}

static int parse_control(struct ctx *c, const json_t *root, struct config *cfg)
{
    static const char *const keys[] = {"path", "mode", "readonly_uids", "admin_uids",
                                       NULL};
    json_t *ctl = json_object_get(root, "control");
    size_t saved;
    int rc;

    if (ctl && !json_is_object(ctl))
        return fail(c, "control", "expected object");
    /* An absent block is an empty one: jansson's getters and iterators take NULL. */
    saved = push_key(c, "control");
    if ((rc = check_keys(c, ctl, keys)) == 0 &&
        (rc = get_string(c, ctl, "path", NONEMPTY, CONFIG_DEFAULT_CONTROL_PATH,
                         &cfg->control_path)) == 0 &&
        (rc = get_mode(c, ctl, &cfg->control_mode)) == 0 &&
        (rc = get_uids(c, ctl, "readonly_uids", &cfg->readonly_uids,
                       &cfg->n_readonly_uids)) == 0)
        rc = get_uids(c, ctl, "admin_uids", &cfg->admin_uids, &cfg->n_admin_uids);
    pop(c, saved);
    return rc;
}

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Absent bounds follow the ones given, so that "high_watermark": 0 alone is
 * valid; a value given explicitly that conflicts is an error at its key. */
static int parse_limits(struct ctx *c, const json_t *obj, struct conn_limits *lim)
{
    uint64_t max, init, high, low, pending;
    struct conn_limits d;
    int rc;

    config_limits_default(&d);
    if ((rc = get_uint(c, obj, "max_size", 1, MAX_BUF_SIZE, d.max_size, &max)) < 0 ||
        (rc = get_uint(c, obj, "init_size", 1, MAX_BUF_SIZE, MIN(d.init_size, max),
                       &init)) < 0 ||
        (rc = get_uint(c, obj, "high_watermark", 0, MAX_BYTES, d.high_watermark, &high)) <
            0 ||
        (rc = get_uint(c, obj, "low_watermark", 0, MAX_BYTES, MIN(d.low_watermark, high),
                       &low)) < 0 ||
        (rc = get_uint(c, obj, "max_pending", 1, MAX_BYTES, MAX(d.max_pending, high),
                       &pending)) < 0)
        return rc;
    if (init > max)
        return fail(c, "init_size", "must not exceed max_size (%" PRIu64 ")", max);
    if (high == 0 && low != 0)
        return fail(c, "low_watermark", "must be 0 when high_watermark is 0");
    if (low > high)
        return fail(c, "low_watermark", "must not exceed high_watermark (%" PRIu64 ")",
                    high);
    if (high != 0 && pending < high)
        return fail(c, "max_pending",
                    "must not be less than high_watermark (%" PRIu64 ")", high);
    *lim = (struct conn_limits){(size_t)init, (size_t)max, (size_t)high, (size_t)low,
                                (size_t)pending};
    return 0;
}

/* True when some '/'-separated component of s is "..". */
static bool has_dotdot(const char *s)
{
    for (;;) {
        size_t n = strcspn(s, "/");
        if (n == 2 && s[0] == '.' && s[1] == '.')
            return true;
        if (s[n] == '\0')
            return false;
        s += n + 1;
    }
}

static int get_plugin_ref(struct ctx *c, const json_t *obj, const struct config *cfg,
                          char **out)
{
    int rc;

    if ((rc = get_string(c, obj, "plugin", REQUIRED, NULL, out)) < 0)
        return rc;
    if (cfg && config_find_plugin(cfg, *out) < 0)
        return fail(c, "plugin", "no plugin named \"%s\"", *out);
    return 0;
}

static int parse_plugin(struct ctx *c, const json_t *obj, void *item,
                        const struct config *cfg)
{
    static const char *const keys[] = {"name", "file", "config", NULL};
    struct config_plugin *p = item;
    json_t *conf = json_object_get(obj, "config");
    size_t n;
    int rc;

    (void)cfg;
    if ((rc = check_keys(c, obj, keys)) < 0 || (rc = get_name(c, obj, &p->name)) < 0 ||
        (rc = get_string(c, obj, "file", REQUIRED | NONEMPTY, NULL, &p->file)) < 0)
        return rc;
    /* A bare name means plugin_dir (dlopen would search the library path).
     * No relative directories and no "..", so that a config cannot reach
     * outside plugin_dir by accident. */
    if ((p->file[0] != '/' && strchr(p->file, '/')) || has_dotdot(p->file))
        return fail(c, "file", "must be a file name in plugin_dir or an absolute path");
    if (conf && !json_is_object(conf))
        return fail(c, "config", "expected object");
    /* json_dumpb, not json_dumps: the text must be ours to free() whatever
     * allocator jansson runs on. For an object it fails only for memory. */
    n = conf ? json_dumpb(conf, NULL, 0, JSON_COMPACT) : 2;
    if (!n || !(p->config_json = malloc(n + 1)))
        return oom(c, "config");
    if (!conf)
        memcpy(p->config_json, "{}", 2);
    else if (json_dumpb(conf, p->config_json, n, JSON_COMPACT) != n)
        return oom(c, "config");
    p->config_json[n] = '\0';
    return 0;
}

static int parse_listener(struct ctx *c, const json_t *obj, void *item,
                          const struct config *cfg)
{
    static const char *const keys[] = {"name",  "host",     "port", "plugin",
                                       "limit", LIMIT_KEYS, NULL};
    struct config_listener *l = item;
    uint64_t limit;
    int rc;

    if ((rc = check_keys(c, obj, keys)) < 0 || (rc = get_name(c, obj, &l->name)) < 0 ||
        (rc = get_string(c, obj, "host", REQUIRED | NONEMPTY, NULL, &l->host)) < 0 ||
        (rc = get_port(c, obj, 0, &l->port, &l->port_num)) < 0 ||
        (rc = get_plugin_ref(c, obj, cfg, &l->plugin)) < 0 ||
        (rc = get_uint(c, obj, "limit", 0, 10000000, 0, &limit)) < 0 ||
        (rc = parse_limits(c, obj, &l->lim)) < 0)
        return rc;
    l->limit = (unsigned)limit;
    return 0;
}

static int parse_connection(struct ctx *c, const json_t *obj, void *item,
                            const struct config *cfg)
{
    static const char *const keys[] = {"name", "host",   "port",     "plugin",
                                       "from", "family", LIMIT_KEYS, NULL};
    struct config_connection *k = item;
    json_t *v = json_object_get(obj, "family");
    const char *fam = json_string_value(v); /* NULL unless a string */
    int rc;

    if ((rc = check_keys(c, obj, keys)) < 0 || (rc = get_name(c, obj, &k->name)) < 0 ||
        (rc = get_string(c, obj, "host", REQUIRED | NONEMPTY, NULL, &k->host)) < 0 ||
        (rc = get_port(c, obj, 1, &k->port, &k->port_num)) < 0 ||
        (rc = get_plugin_ref(c, obj, cfg, &k->plugin)) < 0 ||
        (rc = get_string(c, obj, "from", OPTIONAL, "", &k->from)) < 0 ||
        (rc = parse_limits(c, obj, &k->lim)) < 0)
        return rc;
    if (!v || (fam && strcmp(fam, "any") == 0))
        k->family = CONFIG_FAMILY_ANY;
    else if (fam && strcmp(fam, "ipv4") == 0)
        k->family = CONFIG_FAMILY_IPV4;
    else if (fam && strcmp(fam, "ipv6") == 0)
        k->family = CONFIG_FAMILY_IPV6;
    else
        return fail(c, "family", "expected \"any\", \"ipv4\" or \"ipv6\"");
    return 0;
}

/* parse_array() compares names through the first member of each item. */
_Static_assert(offsetof(struct config_plugin, name) == 0, "name first");
_Static_assert(offsetof(struct config_listener, name) == 0, "name first");
_Static_assert(offsetof(struct config_connection, name) == 0, "name first");

typedef int parse_item_fn(struct ctx *c, const json_t *obj, void *item,
                          const struct config *cfg);

/* root[key], an array of objects with unique names, into a zeroed array that
 * *items owns from the start, so config_free() cleans up a half-parsed one. */
static int parse_array(struct ctx *c, const json_t *root, const char *key, size_t size,
                       parse_item_fn *parse, struct config *cfg, void **items, size_t *n)
{
    json_t *arr = json_object_get(root, key), *obj;
    size_t i, saved;
    int rc = 0;

    if (!arr)
        return 0;
    if (!json_is_array(arr))
        return fail(c, key, "expected array");
    if (json_array_size(arr) == 0)
        return 0;
    if (!(*items = calloc(json_array_size(arr), size)))
        return oom(c, key);
    *n = json_array_size(arr);
    saved = push_key(c, key);
    json_array_foreach (arr, i, obj) {
        char *base = *items, *name, *other;
        size_t at = push(c, "[%zu]", i);

        if (!json_is_object(obj))
            rc = fail(c, NULL, "expected object");
        else
            rc = parse(c, obj, base + i * size, cfg);
        memcpy(&name, base + i * size, sizeof(name));
        for (size_t j = 0; rc == 0 && j < i; j++) {
            memcpy(&other, base + j * size, sizeof(other));
            if (strcmp(name, other) == 0)
                rc = fail(c, "name", "duplicate name \"%s\"", name);
        }
        pop(c, at);
        if (rc < 0)
            break;
    }
    pop(c, saved);
    return rc;
}

static int parse_root(struct ctx *c, const json_t *root, struct config *cfg)
{
    static const char *const keys[] = {
        "control",   "plugin_dir", "shutdown_timeout_ms", "close_timeout_ms",
        "max_connections", "plugins", "listeners", "connections", NULL};
    uint64_t max_conns;
    int rc;

    if (!json_is_object(root))
        return fail(c, NULL, "expected object");
    /* Plugins before listeners and connections, which refer to them by name. */
    if ((rc = check_keys(c, root, keys)) < 0 || (rc = parse_control(c, root, cfg)) < 0 ||
        (rc = get_string(c, root, "plugin_dir", NONEMPTY, DEFAULT_PLUGIN_DIR,
                         &cfg->plugin_dir)) < 0 ||
        (rc = get_uint(c, root, "shutdown_timeout_ms", 0, MAX_TIMEOUT_MS, 5000,
                       &cfg->shutdown_timeout_ms)) < 0 ||
        (rc = get_uint(c, root, "close_timeout_ms", 1, MAX_TIMEOUT_MS, 10000,
                       &cfg->close_timeout_ms)) < 0 ||
        (rc = get_uint(c, root, "max_connections", 0, 100000000, 0, &max_conns)) < 0 ||
        (rc = parse_array(c, root, "plugins", sizeof(*cfg->plugins), parse_plugin, cfg,
                          (void **)&cfg->plugins, &cfg->n_plugins)) < 0 ||
        (rc = parse_array(c, root, "listeners", sizeof(*cfg->listeners), parse_listener,
                          cfg, (void **)&cfg->listeners, &cfg->n_listeners)) < 0)
        return rc;
    cfg->max_connections = (size_t)max_conns;
    return parse_array(c, root, "connections", sizeof(*cfg->connections),
                       parse_connection, cfg, (void **)&cfg->connections,
                       &cfg->n_connections);
}

void config_limits_default(struct conn_limits *lim)
{
    *lim = (struct conn_limits){.init_size = 64,
                                .max_size = 16384,
                                .high_watermark = 1048576,
                                .low_watermark = 262144,
                                .max_pending = 67108864};
}

/*
 * Returns 0 and a config the caller frees with config_free(), or -EINVAL /
 * -ENOMEM with *out NULL and one line in err. Nothing else is allocated.
 */
int config_parse(const char *text, size_t len, struct config **out, char *err,
                 size_t errlen)
{
    struct ctx c = {.err = err, .errlen = errlen};
    struct config *cfg;
    json_error_t jerr;
    json_t *root;
    int rc;

    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    /* JSON_DECODE_ANY so that a scalar root gets our message, not jansson's. */
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    /* jansson leaves the text empty for most allocation failures. */
    if (!root &&
        (jerr.text[0] == '\0' || json_error_code(&jerr) == json_error_out_of_memory))
        return oom(&c, NULL);
    if (!root) {
        if (err && errlen) {
            snprintf(err, errlen, "line %d column %d: %s", jerr.line, jerr.column,
                     jerr.text);
            /* jansson quotes the offending bytes: keep the line printable. */
            for (char *p = err; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                    *p = '?';
        }
        return -EINVAL;
    }
    if (!(cfg = calloc(1, sizeof(*cfg))))
        rc = oom(&c, NULL);
    else if ((rc = parse_root(&c, root, cfg)) < 0)
        config_free(cfg);
    else
        *out = cfg;
    json_decref(root);
    return rc;
}

/* As config_parse(); every error line starts with "PATH: ". */
int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
    char msg[512], *buf = NULL;
    size_t len = 0;
    ssize_t n;
    int fd, rc = 0;

    *out = NULL;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || !(buf = malloc(MAX_FILE_SIZE + 1)))
        rc = fd < 0 ? -errno : -ENOMEM;
    /* Read to EOF rather than trusting st_size, which may change or be 0; one
     * byte past the limit tells a full-size file from an oversized one. */
    while (rc == 0 && len <= MAX_FILE_SIZE &&
           (n = read(fd, buf + len, MAX_FILE_SIZE + 1 - len))) {
        if (n > 0)
            len += (size_t)n;
        else if (errno != EINTR)
            rc = -errno;
    }
    if (fd >= 0)
        close(fd);
    if (rc == 0 && len > MAX_FILE_SIZE)
        rc = -EINVAL;
    if (rc == 0)
        rc = config_parse(buf, len, out, msg, sizeof(msg));
    else
        snprintf(msg, sizeof(msg), "%s",
                 len > MAX_FILE_SIZE ? "file too large" : strerror(-rc));
    free(buf);
    if (rc < 0 && err && errlen)
        snprintf(err, errlen, "%s: %s", path, msg);
    return rc;
}

int config_parse_listener(const json_t *obj, const char *prefix,
                          struct config_listener *out, char *err, size_t errlen)
{
    struct ctx c = {.err = err, .errlen = errlen};
    int rc;

    memset(out, 0, sizeof(*out));
    push(&c, "%s", prefix);
    if (!json_is_object(obj))
        rc = fail(&c, NULL, "expected object");
    else
        rc = parse_listener(&c, obj, out, NULL);
    if (rc < 0)
        config_listener_free(out);
    return rc;
}

void config_listener_free(struct config_listener *l)
{
    free(l->name);
    free(l->host);
    free(l->port);
    free(l->plugin);
    memset(l, 0, sizeof(*l));
}

/* Frees cfg and everything it points to; NULL is fine. */
void config_free(struct config *cfg)
{
    size_t i;

    if (!cfg)
        return;
    for (i = 0; i < cfg->n_plugins; i++) {
        free(cfg->plugins[i].name);
        free(cfg->plugins[i].file);
        free(cfg->plugins[i].config_json);
    }
    for (i = 0; i < cfg->n_listeners; i++)
        config_listener_free(&cfg->listeners[i]);
    for (i = 0; i < cfg->n_connections; i++) {
        free(cfg->connections[i].name);
        free(cfg->connections[i].host);
        free(cfg->connections[i].port);
        free(cfg->connections[i].plugin);
        free(cfg->connections[i].from);
    }
    free(cfg->plugins);
    free(cfg->listeners);
    free(cfg->connections);
    free(cfg->readonly_uids);
    free(cfg->admin_uids);
    free(cfg->control_path);
    free(cfg->plugin_dir);
    free(cfg);
}

/* Index of the plugin named `name`, or -1; cfg may be half-parsed. */
int config_find_plugin(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_plugins; i++)
        if (cfg->plugins[i].name && strcmp(cfg->plugins[i].name, name) == 0)
            return (int)i;
    return -1;
}
