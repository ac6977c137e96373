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
#include <sys/stat.h>

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
    bool finishing;         /* fini() runs: no new timers or connections */
    /* Generations: plugin.load of a loaded name (or SIGHUP after the file
     * changed) loads the new code as generation + 1 for new connections;
     * the old one is `retired` and unloaded when its last connection goes. */
    unsigned generation;
    bool retired;
    int memfd;          /* generation > 1: the private copy dlopen()ed, or -1 */
    char *file;         /* as configured */
    char *config_json;  /* as given to init() */
    struct stat st;     /* of the file when loaded, to see it change */
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
/* What --check-config does: open cp's file and check its entry point, ABI
 * and table as plugin_load would, without running init(); unload it.
 * Returns 0 or a negative errno with the reason in err. */
int plugin_probe(const struct config_plugin *cp, const char *plugin_dir, char *err,
                 size_t errlen);
/* Stop its timers, run fini(), dlclose. Only when n_conns is 0. */
void plugin_unload(struct plugin *p);
/* The current (not retired) generation named `name`, or NULL. */
struct plugin *plugin_find(struct loop *lp, const char *name);
/*
 * Load cp as the next generation of `old` (same name) and put it in old's
 * place for new connections: listeners switch to it, old is retired and
 * unloaded at once when it has no connections, else when its last one
 * goes. Returns 0 or a negative errno with err set; old is untouched then.
 */
int plugin_new_generation(struct loop *lp, struct plugin *old, const struct config_plugin *cp,
                          const char *plugin_dir, struct plugin **out, char *err,
                          size_t errlen);
/* Undo plugin_new_generation (a reload refused later): old is current
 * again, listeners switch back, nw is unloaded. nw must have no
 * connections yet. */
void plugin_restore_generation(struct loop *lp, struct plugin *old, struct plugin *nw);
/* Whether cp names other code or config than p was loaded with. */
bool plugin_changed(const struct plugin *p, const struct config_plugin *cp,
                    const char *plugin_dir);
/* A connection left p: unload p if it is retired and this was its last. */
void plugin_conn_gone(struct plugin *p);

/* The host table handed to every plugin: constant, static storage. */
extern const struct connd_host plugin_host;

#endif
