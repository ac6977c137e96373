/*
 * fuzz_config.c: libFuzzer target for the config loader (daemon/config.c).
 * The input is the text of a config file. config_parse() runs on it twice:
 * once as it is, and once with jansson's allocator failing at the Nth
 * call, N picked from the input among the calls the first run made, so
 * that the out-of-memory paths run too (as tests/test_config.c does by
 * hand; fz_malloc says which allocations never fail). When the input is a
 * JSON object, config_parse_listener() runs on it (as listener.add would)
 * and on each member of its "listeners" array.
 *
 * Checked beyond the sanitizers: a success leaves an empty error and a
 * config that keeps config.h's promises (names, plugin references, files,
 * limits in order); a failure returns -EINVAL (or -ENOMEM, only when an
 * allocation failed), no config, and one line of error naming where.
 */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define NAME_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"

static size_t fz_allocs;  /* jansson allocations so far */
static size_t fz_fail_at; /* fail this one (1-based); 0: none */
static bool fz_failed;    /* an allocation was refused */

/* Fails the fz_fail_at-th allocation, except those of a power-of-two size
 * of 16 or more: jansson's string buffers (and hash buckets) grow that way,
 * and jansson 2.14's lexer does not survive one failing (lex_save() ignores
 * the error, then an assertion or a wild write follows), which is its
 * bug, not connd's. */
static void *fz_malloc(size_t n)
{
    if (n >= 16 && (n & (n - 1)) == 0)
        return malloc(n);
    if (++fz_allocs == fz_fail_at) {
        fz_failed = true;
        return NULL;
    }
    return malloc(n);
}

static void fz_free(void *p)
{
    free(p);
}

static void __attribute__((noreturn)) fz_fail(const char *why, const char *detail)
{
    fprintf(stderr, "fuzz_config: %s%s%s\n", why, detail ? ": " : "",
            detail ? detail : "");
    abort();
}

static void fz_check_name(const char *name, const char *what)
{
    size_t len = name ? strlen(name) : 0;

    if (len == 0 || len > 64 || strspn(name, NAME_CHARS) != len)
        fz_fail("accepted a bad name", what);
}

static void fz_check_limits(const struct conn_limits *l)
{
    if (l->init_size < 1 || l->init_size > l->max_size || l->max_size > 67108864 ||
        l->low_watermark > l->high_watermark ||
        (l->high_watermark && l->max_pending < l->high_watermark) || l->max_pending < 1)
        fz_fail("accepted limits out of order", NULL);
}

static void fz_check_port(const char *text, uint16_t num, unsigned min)
{
    if (!text || !text[0] || num < min)
        fz_fail("accepted a bad port", text);
    if (strspn(text, "0123456789") == strlen(text) && strtoul(text, NULL, 10) != num)
        fz_fail("port text and number disagree", text);
}

static void fz_check_listener(const struct config_listener *l)
{
    fz_check_name(l->name, "listener");
    if (!l->host || !l->host[0] || !l->plugin)
        fz_fail("accepted a listener without host or plugin", l->name);
    fz_check_port(l->port, l->port_num, 0);
    if (l->limit > 10000000)
        fz_fail("accepted a listener limit out of range", l->name);
    fz_check_limits(&l->lim);
}

/* What config.h promises about a parsed config. */
static void fz_check_config(const struct config *cfg)
{
    if (!cfg->control_path || !cfg->control_path[0] || !cfg->plugin_dir ||
        !cfg->plugin_dir[0] || cfg->control_mode > 07777 || cfg->close_timeout_ms < 1)
        fz_fail("accepted a bad control block or plugin_dir", NULL);
    for (size_t i = 0; i < cfg->n_plugins; i++) {
        const struct config_plugin *p = &cfg->plugins[i];
        json_t *conf;

        fz_check_name(p->name, "plugin");
        if (!p->file || !p->file[0] || (p->file[0] != '/' && strchr(p->file, '/')))
            fz_fail("accepted a plugin file outside plugin_dir", p->file);
        /* json_is_object() evaluates its argument twice. */
        conf = p->config_json ? json_loads(p->config_json, 0, NULL) : NULL;
        if (!json_is_object(conf))
            fz_fail("plugin config_json is not an object", p->config_json);
        json_decref(conf);
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->plugins[j].name, p->name) == 0)
                fz_fail("accepted a duplicate plugin name", p->name);
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        fz_check_listener(&cfg->listeners[i]);
        if (config_find_plugin(cfg, cfg->listeners[i].plugin) < 0)
            fz_fail("accepted a listener with an unknown plugin",
                    cfg->listeners[i].plugin);
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->listeners[j].name, cfg->listeners[i].name) == 0)
                fz_fail("accepted a duplicate listener name", cfg->listeners[i].name);
    }
    for (size_t i = 0; i < cfg->n_connections; i++) {
        const struct config_connection *k = &cfg->connections[i];

        fz_check_name(k->name, "connection");
        if (!k->host || !k->host[0] || !k->from || config_find_plugin(cfg, k->plugin) < 0)
            fz_fail("accepted a connection without host, from or plugin", k->name);
        fz_check_port(k->port, k->port_num, 1);
        if (k->family != CONFIG_FAMILY_ANY && k->family != CONFIG_FAMILY_IPV4 &&
            k->family != CONFIG_FAMILY_IPV6)
            fz_fail("accepted a bad family", k->name);
        fz_check_limits(&k->lim);
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->connections[j].name, k->name) == 0)
                fz_fail("accepted a duplicate connection name", k->name);
    }
}

/* A failure: the right code, and one line that says where. */
static void fz_check_error(int rc, const char *err)
{
    if (rc != -EINVAL && !(rc == -ENOMEM && fz_failed))
        fz_fail("unexpected error code", err);
    if (!err[0] || !strstr(err, ": "))
        fz_fail("an error that does not say where", err);
    for (const char *p = err; *p; p++)
        if ((unsigned char)*p < 0x20)
            fz_fail("an error of more than one line", err);
}

static void fz_parse(const uint8_t *data, size_t size)
{
    struct config *cfg = (struct config *)1;
    size_t allocs, fail_at;
    char err[512];
    int rc;

    memset(err, 'x', sizeof(err));
    rc = config_parse((const char *)data, size, &cfg, err, sizeof(err));
    /* The checks' own allocations neither fail nor count. */
    allocs = fz_allocs;
    fail_at = fz_fail_at;
    fz_fail_at = 0;
    if (rc == 0) {
        if (!cfg || err[0])
            fz_fail("success without a config, or with an error", err);
        fz_check_config(cfg);
        config_free(cfg);
    } else {
        if (cfg)
            fz_fail("a failure that returns a config", err);
        fz_check_error(rc, err);
    }
    fz_allocs = allocs;
    fz_fail_at = fail_at;
}

static void fz_listener(const json_t *obj)
{
    struct config_listener l;
    char err[512];
    int rc;

    rc = config_parse_listener(obj, "params", &l, err, sizeof(err));
    if (rc == 0) {
        fz_check_listener(&l);
        config_listener_free(&l);
        return;
    }
    fz_check_error(rc, err);
    if (strncmp(err, "params", 6) != 0)
        fz_fail("a listener error without its prefix", err);
    if (l.name || l.host || l.port || l.plugin)
        fz_fail("a failed listener that holds something", err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One input (borrowed): returns 0, or aborts on a failed check. Leaves
 * jansson on this file's allocator. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *root, *listeners, *v;
    size_t total, i;

    json_set_alloc_funcs(fz_malloc, fz_free);
    fz_allocs = fz_fail_at = 0;
    fz_failed = false;
    fz_parse(data, size);

    /* Again, with the Nth allocation failing: N from the input's bytes, so
     * the same input always fails the same allocation. */
    total = fz_allocs;
    if (total) {
        size_t h = size;
        for (i = 0; i < size; i++)
            h = h * 31 + data[i];
        fz_allocs = 0;
        fz_fail_at = 1 + h % total;
        fz_failed = false;
        fz_parse(data, size);
        fz_fail_at = 0;
    }

    root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (json_is_object(root)) {
        fz_listener(root);
        listeners = json_object_get(root, "listeners");
        json_array_foreach(listeners, i, v)
        {
            fz_listener(v);
        }
    }
    json_decref(root);
    return 0;
}
