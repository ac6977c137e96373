/*
 * reload.c: SIGHUP and daemon.reload. The new config is parsed in full
 * before anything changes. Then, while everything can still be undone, new
 * plugins (and new generations of changed ones) load and listeners with a
 * new name or a new address bind; a failure there undoes what this reload
 * started and the old config keeps running. After that: listeners that
 * moved stop their old socket, other listener changes (plugin, limit,
 * sizes) apply in place on the same socket, removed listeners stop
 * accepting (their connections stay), new outgoing connections start.
 * Unchanged listeners keep their sockets, so nothing queued in their
 * backlogs is refused. Listeners added with listener.add are kept.
 *
 * A plugin whose file changed on disk (inode, size or mtime), or whose
 * file or config in the config changed, loads as a new generation: new
 * connections get the new code, existing ones keep the old until they
 * close. control.* changes need a restart.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "listener.h"
#include "log.h"
#include "loop.h"
#include "plugin.h"

static void unload_new_plugins(struct loop *lp, struct plugin *first_new)
{
    struct plugin **pp;

    for (pp = &lp->plugins; *pp && *pp != first_new; pp = &(*pp)->next)
        ;
    while (*pp) {
        struct plugin *p = *pp;
        *pp = p->next;
        plugin_unload(p);
    }
}

static int loop_reload_apply(struct loop *lp, char *err, size_t errlen);

/* Around the work: RELOADING=1 then READY=1, with a STATUS= saying how it
 * went, as systemd's Type=notify-reload expects (and Type=notify accepts). */
int loop_reload(struct loop *lp, char *err, size_t errlen)
{
    struct timespec ts;
    int rc;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    sd_notify(&lp->sd, "RELOADING=1\nMONOTONIC_USEC=%llu",
              (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
    rc = loop_reload_apply(lp, err, errlen);
    if (rc < 0) {
        char status[300];
        snprintf(status, sizeof(status), "reload failed, old config kept: %.200s", err);
        sd_notify(&lp->sd, "READY=1");
        sd_notify_status(lp, status);
    } else {
        sd_notify(&lp->sd, "READY=1");
        sd_notify_status(lp, "reloaded");
    }
    return rc;
}

static int loop_reload_apply(struct loop *lp, char *err, size_t errlen)
{
    struct config *cfg;
    struct plugin **tail, *first_new = NULL;
    struct listener *started[64], *replaced[64];
    struct plugin *gens[64][2]; /* {old, new} generations this reload made */
    size_t n_started = 0, n_gens = 0;
    int rc;

    if (!lp->config_path) {
        snprintf(err, errlen, "no config file to reload");
        return -1;
    }
    if (lp->stopping) {
        snprintf(err, errlen, "shutting down");
        return -1;
    }
    if (config_load(lp->config_path, &cfg, err, errlen) < 0)
        return -1;
    if ((!lp->cfg->control_path_override &&
         strcmp(cfg->control_path, lp->cfg->control_path) != 0) ||
        cfg->control_mode != lp->cfg->control_mode)
        log_warn("reload: control.path and control.mode changes need a restart");

    /* 1. Plugins not loaded yet, and new generations of changed ones. */
    for (size_t i = 0; i < cfg->n_plugins; i++) {
        struct plugin *p = plugin_find(lp, cfg->plugins[i].name), *nw;
        if (p) {
            if (!plugin_changed(p, &cfg->plugins[i], cfg->plugin_dir))
                continue;
            if (n_gens == sizeof(gens) / sizeof(gens[0])) {
                snprintf(err, errlen, "more than %zu changed plugins in one reload", n_gens);
                goto undo;
            }
            if (plugin_new_generation(lp, p, &cfg->plugins[i], cfg->plugin_dir, &nw, err,
                                      errlen) < 0)
                goto undo;
            gens[n_gens][0] = p;
            gens[n_gens++][1] = nw;
            continue;
        }
        if ((rc = plugin_load(lp, &cfg->plugins[i], cfg->plugin_dir, &p, err, errlen)) < 0)
            goto undo;
        for (tail = &lp->plugins; *tail; tail = &(*tail)->next)
            ;
        *tail = p;
        if (!first_new)
            first_new = p;
    }
    /* 2. Listeners with a new name, or a new address, bind first: a failure
     * is undone cleanly. replaced[k] is the listener started[k] replaces. */
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct config_listener *cl = &cfg->listeners[i];
        struct listener *old = listener_find(lp, cl->name), *l;
        if (old && listener_same_address(old, cl))
            continue;
        if (n_started == sizeof(started) / sizeof(started[0])) {
            snprintf(err, errlen, "more than %zu new listeners in one reload", n_started);
            goto undo;
        }
        if ((rc = listener_start(lp, cl, plugin_find(lp, cl->plugin), &l)) < 0) {
            snprintf(err, errlen, "listener %s: %s:%s: %s", cl->name, cl->host, cl->port,
                     strerror(-rc));
            goto undo;
        }
        replaced[n_started] = old;
        started[n_started++] = l;
    }
    /* 3. From here on nothing is undone. A listener with a new address
     * hands over to its new socket; other changes apply in place, keeping
     * the socket and its backlog. */
    for (size_t k = 0; k < n_started; k++)
        if (replaced[k]) {
            log_notice("reload: listener %s moved to %s", started[k]->name, started[k]->local);
            listener_stop(replaced[k]);
        }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct config_listener *cl = &cfg->listeners[i];
        struct listener *l = listener_find(lp, cl->name);
        if (l && !listener_same(l, cl)) {
            log_notice("reload: listener %s updated in place", cl->name);
            listener_update(l, cl, plugin_find(lp, cl->plugin));
        }
    }
    /* 4. Listeners no longer configured stop accepting (their connections
     * stay). Listeners added with listener.add are the operator's: kept. */
    for (struct listener *l = lp->listeners, *next; l; l = next) {
        bool keep = l->from_ctl;
        next = l->next;
        for (size_t i = 0; i < cfg->n_listeners && !keep; i++)
            keep = strcmp(cfg->listeners[i].name, l->name) == 0;
        if (!keep && !l->closed) {
            log_notice("reload: listener %s removed", l->name);
            listener_stop(l);
        }
    }
    /* 5. Outgoing connections with a new name. */
    for (size_t i = 0; i < cfg->n_connections; i++) {
        bool known = false;
        for (size_t k = 0; k < lp->cfg->n_connections && !known; k++)
            known = strcmp(lp->cfg->connections[k].name, cfg->connections[i].name) == 0;
        if (!known)
            loop_start_connection(lp, &cfg->connections[i]);
    }
    /* Running objects copied what they need; the old config can go. The
     * control socket keeps its path from start-up. */
    free(cfg->control_path);
    cfg->control_path = strdup(lp->cfg->control_path);
    cfg->control_path_override = lp->cfg->control_path_override;
    cfg->control_mode = lp->cfg->control_mode;
    config_free(lp->cfg);
    lp->cfg = cfg;
    for (size_t k = 0; k < n_gens; k++)
        plugin_conn_gone(gens[k][0]); /* unload old generations nobody uses */
    log_notice("reload: done (%zu listeners, %zu plugins configured)", cfg->n_listeners,
               cfg->n_plugins);
    return 0;
undo:
    for (size_t k = 0; k < n_started; k++)
        listener_stop(started[k]);
    while (n_gens > 0) {
        n_gens--;
        plugin_restore_generation(lp, gens[n_gens][0], gens[n_gens][1]);
    }
    if (first_new)
        unload_new_plugins(lp, first_new);
    config_free(cfg);
    return -1;
}
