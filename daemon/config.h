/*
 * config.h: the JSON config file (SPEC section 3) as plain structs.
 * config.c parses and validates; it opens no socket and loads no plugin.
 */
#ifndef CONND_CONFIG_H
#define CONND_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CONFIG_DEFAULT_PATH "/etc/connd/connd.json"
#define CONFIG_DEFAULT_CONTROL_PATH "/run/connd/control.sock"
#define CONFIG_DEFAULT_PLUGIN_DIR "/usr/lib/connd/plugins"

/* Sizes and watermarks of one listener or outgoing connection. */
struct conn_limits {
    uint32_t init_size;    /* first read buffer size; default 64 (at most 64 MiB) */
    uint32_t max_size;     /* read buffer cap, and bytes per read turn; 16384 */
    size_t high_watermark; /* throttled above this many pending bytes; 1 MiB */
    size_t low_watermark;  /* unthrottled at or below; 256 KiB */
    size_t max_pending;    /* writes past this are refused; 64 MiB */
};

/* Each entry struct starts with `name`: config.c compares names through it
 * (checked there by _Static_assert). All strings are malloc'd copies. */
struct config_plugin {
    char *name;
    char *file;        /* as written: a file name under plugin_dir or an absolute path */
    char *config_json; /* the "config" object serialised, "{}" when absent */
};

struct config_listener {
    char *name;
    char *host;
    char *port; /* as written, numeric or a service name (an integer in decimal);
                 * resolved by config_parse */
    uint16_t port_num;
    char *plugin;
    unsigned limit; /* 0: unlimited */
    struct conn_limits lim;
};

enum config_family { CONFIG_FAMILY_ANY = 0, CONFIG_FAMILY_IPV4 = 4, CONFIG_FAMILY_IPV6 = 6 };

struct config_connection {
    char *name;
    char *host;
    char *port;
    uint16_t port_num;
    char *plugin;
    char *from; /* "" when absent */
    enum config_family family;
    struct conn_limits lim;
};

struct config {
    char *control_path;
    bool control_path_override; /* set by connd -s: a reload keeps it */
    mode_t control_mode;   /* default 0660 */
    uid_t *readonly_uids;  /* control.readonly_uids */
    size_t n_readonly_uids;
    uid_t *admin_uids;     /* control.admin_uids */
    size_t n_admin_uids;
    char *plugin_dir;
    uint64_t shutdown_timeout_ms; /* default 5000 */
    uint64_t close_timeout_ms;    /* graceful close without progress; default 10000 */
    size_t max_connections;       /* all listeners pause at this many; 0: no cap */
    struct config_plugin *plugins;
    size_t n_plugins;
    struct config_listener *listeners;
    size_t n_listeners;
    struct config_connection *connections;
    size_t n_connections;
};

/* The defaults of an optional conn_limits block. */
void config_limits_default(struct conn_limits *lim);

/*
 * Parse `text` (len bytes of JSON). On success returns 0 and *out is a new
 * config owned by the caller (config_free). On failure returns a negative
 * errno (-EINVAL for a bad config, -ENOMEM) and writes one line naming the
 * key path and the reason into err (e.g. "listeners[0].port: expected
 * string or integer").
 */
int config_parse(const char *text, size_t len, struct config **out, char *err,
                 size_t errlen);

/* As config_parse, reading the file at path; errors start with the path. */
int config_load(const char *path, struct config **out, char *err, size_t errlen);

void config_free(struct config *cfg);

/* Parse one listener object as in "listeners", for listener.add: the
 * plugin name is not checked against a config, and error paths start with
 * `prefix` ("params.port: ..."). On failure *out holds nothing. */
int config_parse_listener(const json_t *obj, const char *prefix,
                          struct config_listener *out, char *err, size_t errlen);
void config_listener_free(struct config_listener *l);

/* Index of the plugin named `name`, or -1. */
int config_find_plugin(const struct config *cfg, const char *name);

#endif
