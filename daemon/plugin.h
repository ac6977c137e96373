/*
 * plugin.h (daemon side): loading notifier plugins and the host function
 * table they call. A `struct plugin` is one configured instance: a dlopen
 * handle, a copy of its notify table, and the state its init() made.
 */
#ifndef CONND_DAEMON_PLUGIN_H
#define CONND_DAEMON_PLUGIN_H

#include <connd/plugin.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct loop;
struct ptimer;

struct plugin {
    struct plugin *next;
    struct loop *lp;
    char *name;
    char *path;
    void *dl;
    struct connd_notify notify; /* zeroed, then at most notify.size bytes copied */
    void *state;
    size_t n_conns;         /* connections this instance owns */
    bool ready;             /* init() succeeded */
    struct ptimer *timers;  /* live timers, stopped before fini */
};

/* The first released size of struct connd_notify; smaller ones are refused. */
#define PLUGIN_NOTIFY_MIN_SIZE (offsetof(struct connd_notify, listener_closed) + sizeof(void *))

/*
 * Load cp's file (a name under plugin_dir, or an absolute path), check its
 * ABI, and run its init(). On success *out is the new instance (not yet in
 * any list). On failure returns a negative errno and writes one line into
 * err naming the file and the reason; nothing stays loaded.
 */
int plugin_load(struct loop *lp, const struct config_plugin *cp, const char *plugin_dir,
                struct plugin **out, char *err, size_t errlen);
/* Stop its timers, run fini(), dlclose. Only when n_conns is 0. */
void plugin_unload(struct plugin *p);
struct plugin *plugin_find(struct loop *lp, const char *name);

/* The host table handed to every plugin: constant, static storage. */
extern const struct connd_host plugin_host;

#endif
