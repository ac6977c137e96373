/*
 * plugin.c: loading plugin instances (dlopen, ABI gate, init) and the host
 * function table they call. Host functions translate the public opaque
 * types to the daemon's structs and forward to conn.c and connect.c; they
 * hold no state of their own, except plugin timers, which live here.
 */
#include "plugin.h"

#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "conn.h"
#include "connect.h"
#include "listener.h"
#include "log.h"
#include "loop.h"
#include "relay.h"

struct ptimer {
    uv_timer_t t;
    struct plugin *p;
    struct ptimer *prev, *next;
    void (*cb)(void *arg);
    void *arg;
    bool firing, stopped;
};

static struct plugin *plugin_of(struct connd_plugin *p)
{
    return (struct plugin *)p;
}

static void ptimer_free(struct ptimer *pt);
static void plugin_free(struct plugin *p);

/* ---- loading ---------------------------------------------------------- */

static char *plugin_path(const struct config_plugin *cp, const char *plugin_dir)
{
    char *path = NULL;

    if (cp->file[0] == '/')
        return strdup(cp->file);
    return asprintf(&path, "%s/%s", plugin_dir, cp->file) < 0 ? NULL : path;
}

/* dlopen() matches an already loaded object by its name, so a new
 * generation of a rebuilt file at the same path is loaded from a private
 * copy in a memfd, which stays open while the code is loaded. */
static void *plugin_dlopen_copy(struct plugin *p, char *err, size_t errlen)
{
    char buf[65536], name[64];
    ssize_t n;
    void *dl;
    int in;

    if ((p->memfd = memfd_create(p->name, MFD_CLOEXEC)) < 0 ||
        (in = open(p->path, O_RDONLY | O_CLOEXEC)) < 0) {
        snprintf(err, errlen, "plugin %s: %s: %s", p->name, p->path, strerror(errno));
        return NULL;
    }
    while ((n = read(in, buf, sizeof(buf))) > 0)
        if (write(p->memfd, buf, (size_t)n) != n) {
            n = -1;
            break;
        }
    close(in);
    if (n < 0) {
        snprintf(err, errlen, "plugin %s: copying %s: %s", p->name, p->path, strerror(errno));
        return NULL;
    }
    snprintf(name, sizeof(name), "/proc/self/fd/%d", p->memfd);
    if (!(dl = dlopen(name, RTLD_NOW | RTLD_LOCAL)))
        snprintf(err, errlen, "plugin %s: %s: not a loadable shared object: %s", p->name,
                 p->path, dlerror());
    return dl;
}

/* A new, not yet opened instance for cp; NULL when out of memory. */
static struct plugin *plugin_new(struct loop *lp, const struct config_plugin *cp,
                                 const char *plugin_dir, unsigned generation)
{
    struct plugin *p = calloc(1, sizeof(*p));

    if (!p)
        return NULL;
    p->lp = lp;
    p->memfd = -1;
    p->generation = generation;
    p->name = strdup(cp->name);
    p->path = plugin_path(cp, plugin_dir);
    p->file = strdup(cp->file);
    p->config_json = strdup(cp->config_json ? cp->config_json : "{}");
    if (!p->name || !p->path || !p->file || !p->config_json) {
        plugin_free(p);
        return NULL;
    }
    return p;
}

/* Open p's file and check it: a regular file, a shared object, the entry
 * point, the ABI and the table size; copy the table. Runs no plugin code
 * but the entry point (and the object's constructors). */
static int plugin_open(struct plugin *p, char *err, size_t errlen)
{
    connd_plugin_entry_fn entry;
    const struct connd_notify *nt;

    if (stat(p->path, &p->st) < 0) {
        snprintf(err, errlen, "plugin %s: %s: %s", p->name, p->path, strerror(errno));
        return -errno;
    }
    if (!S_ISREG(p->st.st_mode)) {
        snprintf(err, errlen, "plugin %s: %s: not a regular file", p->name, p->path);
        return -EINVAL;
    }
    if (p->generation > 1) {
        if (!(p->dl = plugin_dlopen_copy(p, err, errlen)))
            return -ENOEXEC;
    } else if (!(p->dl = dlopen(p->path, RTLD_NOW | RTLD_LOCAL))) {
        snprintf(err, errlen, "plugin %s: not a loadable shared object: %s", p->name,
                 dlerror());
        return -ENOEXEC;
    }
    *(void **)&entry = dlsym(p->dl, "connd_plugin_entry");
    if (!entry) {
        snprintf(err, errlen, "plugin %s: %s: no connd_plugin_entry symbol", p->name,
                 p->path);
        return -ENOEXEC;
    }
    if (!(nt = entry())) {
        snprintf(err, errlen, "plugin %s: %s: connd_plugin_entry returned NULL", p->name,
                 p->path);
        return -ENOEXEC;
    }
    if (nt->abi != CONND_PLUGIN_ABI) {
        snprintf(err, errlen, "plugin %s: %s: abi %" PRIu32 ", connd speaks %d", p->name,
                 p->path, nt->abi, CONND_PLUGIN_ABI);
        return -EPROTO;
    }
    if (nt->size < PLUGIN_NOTIFY_MIN_SIZE) {
        snprintf(err, errlen,
                 "plugin %s: %s: notify table of %" PRIu32 " bytes, at least %zu expected",
                 p->name, p->path, nt->size, (size_t)PLUGIN_NOTIFY_MIN_SIZE);
        return -EPROTO;
    }
    /* Hooks newer than the plugin stay NULL. */
    memcpy(&p->notify, nt, nt->size < sizeof(p->notify) ? nt->size : sizeof(p->notify));
    return 0;
}

static int plugin_load_gen(struct loop *lp, const struct config_plugin *cp,
                           const char *plugin_dir, unsigned generation, struct plugin **out,
                           char *err, size_t errlen)
{
    struct plugin *p = plugin_new(lp, cp, plugin_dir, generation);
    int rc;

    if (!p) {
        snprintf(err, errlen, "plugin %s: out of memory", cp->name);
        return -ENOMEM;
    }
    if ((rc = plugin_open(p, err, errlen)) < 0)
        goto fail;
    if (p->notify.init &&
        (rc = p->notify.init(&plugin_host, (struct connd_plugin *)p, p->config_json,
                             &p->state)) != 0) {
        if (rc > 0)
            rc = -rc;
        snprintf(err, errlen, "plugin %s: %s: init failed: %s", p->name, p->path,
                 strerror(-rc));
        goto fail;
    }
    p->ready = true;
    log_info("plugin %s: loaded %s (generation %u)", p->name, p->path, p->generation);
    *out = p;
    return 0;
fail:
    while (p->timers) /* started by a failed init() */
        ptimer_free(p->timers);
    plugin_free(p);
    return rc;
}

int plugin_probe(const struct config_plugin *cp, const char *plugin_dir, char *err,
                 size_t errlen)
{
    struct plugin *p = plugin_new(NULL, cp, plugin_dir, 1);
    int rc;

    if (!p) {
        snprintf(err, errlen, "plugin %s: out of memory", cp->name);
        return -ENOMEM;
    }
    rc = plugin_open(p, err, errlen);
    plugin_free(p);
    return rc;
}

int plugin_load(struct loop *lp, const struct config_plugin *cp, const char *plugin_dir,
                struct plugin **out, char *err, size_t errlen)
{
    return plugin_load_gen(lp, cp, plugin_dir, 1, out, err, errlen);
}

/* Point every listener of `from` at `to`. */
static void plugin_switch_listeners(struct loop *lp, struct plugin *from, struct plugin *to)
{
    for (struct listener *l = lp->listeners; l; l = l->next)
        if (l->plugin == from && !l->closed)
            l->plugin = to;
}

static void plugin_unlink(struct loop *lp, struct plugin *p)
{
    for (struct plugin **pp = &lp->plugins; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            return;
        }
}

/* A retired generation with no connection and no listener left goes. */
static bool plugin_maybe_retire(struct plugin *p)
{
    for (struct listener *l = p->lp->listeners; l; l = l->next)
        if (l->plugin == p && !l->closed)
            return false;
    if (!p->retired || p->n_conns)
        return false;
    log_info("plugin %s: generation %u unloaded, its last connection closed", p->name,
             p->generation);
    plugin_unlink(p->lp, p);
    plugin_unload(p);
    return true;
}

void plugin_conn_gone(struct plugin *p)
{
    if (p->retired)
        plugin_maybe_retire(p);
}

int plugin_new_generation(struct loop *lp, struct plugin *old, const struct config_plugin *cp,
                          const char *plugin_dir, struct plugin **out, char *err,
                          size_t errlen)
{
    struct plugin *nw;
    int rc;

    if ((rc = plugin_load_gen(lp, cp, plugin_dir, old->generation + 1, &nw, err, errlen)) < 0)
        return rc;
    /* Right after the old one, so that listing order stays by name. */
    nw->next = old->next;
    old->next = nw;
    old->retired = true;
    plugin_switch_listeners(lp, old, nw);
    log_notice("plugin %s: generation %u takes new connections; generation %u keeps %zu",
               nw->name, nw->generation, old->generation, old->n_conns);
    *out = nw;
    return 0;
}

void plugin_restore_generation(struct loop *lp, struct plugin *old, struct plugin *nw)
{
    plugin_switch_listeners(lp, nw, old);
    old->retired = false;
    plugin_unlink(lp, nw);
    plugin_unload(nw);
}

bool plugin_changed(const struct plugin *p, const struct config_plugin *cp,
                    const char *plugin_dir)
{
    char *path = plugin_path(cp, plugin_dir);
    struct stat st;
    bool changed;

    if (!path)
        return false;
    changed = strcmp(path, p->path) != 0 ||
              strcmp(cp->config_json ? cp->config_json : "{}", p->config_json) != 0 ||
              stat(path, &st) < 0 || st.st_ino != p->st.st_ino || st.st_dev != p->st.st_dev ||
              st.st_size != p->st.st_size || st.st_mtim.tv_sec != p->st.st_mtim.tv_sec ||
              st.st_mtim.tv_nsec != p->st.st_mtim.tv_nsec;
    free(path);
    return changed;
}

static void plugin_free(struct plugin *p)
{
    if (p->dl)
        dlclose(p->dl);
    if (p->memfd >= 0)
        close(p->memfd);
    free(p->name);
    free(p->path);
    free(p->file);
    free(p->config_json);
    free(p);
}

void plugin_unload(struct plugin *p)
{
    while (p->timers)
        ptimer_free(p->timers);
    p->finishing = true; /* fini() may not start what would outlive it */
    if (p->notify.fini)
        p->notify.fini(p->state);
    log_debug("plugin %s: generation %u unloaded", p->name, p->generation);
    plugin_free(p);
}

struct plugin *plugin_find(struct loop *lp, const char *name)
{
    for (struct plugin *p = lp->plugins; p; p = p->next)
        if (!p->retired && strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

/* ---- timers ----------------------------------------------------------- */

static void ptimer_close_cb(uv_handle_t *h)
{
    free(h->data);
}

static void ptimer_free(struct ptimer *pt)
{
    pt->stopped = true; /* a later timer_stop(), e.g. from fini(), is a no-op */
    if (pt->prev)
        pt->prev->next = pt->next;
    else
        pt->p->timers = pt->next;
    if (pt->next)
        pt->next->prev = pt->prev;
    pt->prev = pt->next = NULL;
    uv_close((uv_handle_t *)&pt->t, ptimer_close_cb);
}

static void ptimer_cb(uv_timer_t *t)
{
    struct ptimer *pt = t->data;

    pt->firing = true;
    pt->cb(pt->arg);
    pt->firing = false;
    if (pt->stopped || uv_timer_get_repeat(t) == 0)
        ptimer_free(pt);
}

static struct connd_timer *h_timer_start(struct connd_plugin *cp, uint64_t ms,
                                         uint64_t repeat_ms, void (*cb)(void *), void *arg)
{
    struct plugin *p = plugin_of(cp);
    struct ptimer *pt;

    if (!cb || p->finishing || !(pt = calloc(1, sizeof(*pt))))
        return NULL;
    uv_timer_init(&p->lp->uv, &pt->t);
    pt->t.data = pt;
    pt->p = p;
    pt->cb = cb;
    pt->arg = arg;
    pt->next = p->timers;
    if (p->timers)
        p->timers->prev = pt;
    p->timers = pt;
    uv_timer_start(&pt->t, ptimer_cb, ms, repeat_ms);
    return (struct connd_timer *)pt;
}

static void h_timer_stop(struct connd_timer *t)
{
    struct ptimer *pt = (struct ptimer *)t;

    if (!pt || pt->stopped)
        return;
    if (pt->firing) {
        pt->stopped = true; /* freed when its callback returns */
        return;
    }
    ptimer_free(pt);
}

/* ---- host functions --------------------------------------------------- */

static int h_write(struct connd_conn *c, const void *data, size_t len)
{
    return conn_write(conn_of(c), data, len);
}

static int h_writev(struct connd_conn *c, const struct iovec *iov, int n)
{
    return conn_writev(conn_of(c), iov, n);
}

/* A plugin's mute reason; "ctl" belongs to the operator. */
static uint32_t plugin_mute_bit(struct connd_conn *c, const char *reason)
{
    uint32_t bit = loop_mute_bit(conn_of(c)->lp, reason);
    return bit == MUTE_CTL ? 0 : bit;
}

static int h_mute(struct connd_conn *c, const char *reason)
{
    uint32_t bit = plugin_mute_bit(c, reason);
    return bit ? conn_mute(conn_of(c), bit) : -EINVAL;
}

static int h_unmute(struct connd_conn *c, const char *reason)
{
    uint32_t bit = plugin_mute_bit(c, reason);
    return bit ? conn_unmute(conn_of(c), bit) : -EINVAL;
}

static int h_expect(struct connd_conn *c, size_t qty)
{
    return conn_expect(conn_of(c), qty);
}

static int h_close(struct connd_conn *c, const char *reason)
{
    struct conn *k = conn_of(c);
    if (k->state == CONN_OPEN || k->state == CONN_CONNECTING)
        log_info("conn %" PRIu64 ": close by plugin %s: %s", k->id, k->plugin->name,
                 reason ? reason : "no reason given");
    return conn_close(k, "plugin close"); /* the reason is borrowed: logged above */
}

static int h_abort(struct connd_conn *c, const char *reason)
{
    struct conn *k = conn_of(c);
    if (k->state != CONN_CLOSED)
        log_info("conn %" PRIu64 ": abort by plugin %s: %s", k->id, k->plugin->name,
                 reason ? reason : "no reason given");
    return conn_abort(k, "plugin abort");
}

static int h_shutdown(struct connd_conn *c)
{
    return conn_shutdown(conn_of(c));
}

static int h_set_notify(struct connd_conn *c, const char *name)
{
    struct conn *k = conn_of(c);
    struct plugin *p = name ? plugin_find(k->lp, name) : NULL;
    return p ? conn_set_notify(k, p) : -ENOENT;
}

/* The socket of an established connection, or -1. */
static int h_fd(struct connd_conn *c)
{
    struct conn *k = conn_of(c);
    return (k->state == CONN_OPEN || k->state == CONN_CLOSING) ? conn_fd(k) : -1;
}

static int h_set_nodelay(struct connd_conn *c, bool on)
{
    return h_fd(c) < 0 ? -ENOTCONN : uv_tcp_nodelay(&conn_of(c)->tcp, on);
}

static int h_set_keepalive(struct connd_conn *c, unsigned secs)
{
    return h_fd(c) < 0 ? -ENOTCONN : uv_tcp_keepalive(&conn_of(c)->tcp, secs > 0, secs);
}

static int h_getsockopt(struct connd_conn *c, int level, int name, void *val,
                        socklen_t *len)
{
    int fd = h_fd(c);
    if (fd < 0)
        return -ENOTCONN;
    return getsockopt(fd, level, name, val, len) < 0 ? -errno : 0;
}

static int h_setsockopt(struct connd_conn *c, int level, int name, const void *val,
                        socklen_t len)
{
    int fd = h_fd(c);
    if (fd < 0)
        return -ENOTCONN;
    return setsockopt(fd, level, name, val, len) < 0 ? -errno : 0;
}

static int h_local_address(struct connd_conn *c, struct sockaddr *sa, socklen_t *len)
{
    int fd = h_fd(c);
    if (fd < 0)
        return -ENOTCONN;
    return getsockname(fd, sa, len) < 0 ? -errno : 0;
}

static int h_remote_address(struct connd_conn *c, struct sockaddr *sa, socklen_t *len)
{
    int fd = h_fd(c);
    if (fd < 0)
        return -ENOTCONN;
    return getpeername(fd, sa, len) < 0 ? -errno : 0;
}

static uint64_t h_id(const struct connd_conn *c)
{
    return ((const struct conn *)c)->id;
}

static void *h_get_user(const struct connd_conn *c)
{
    return ((const struct conn *)c)->user;
}

static void h_set_user(struct connd_conn *c, void *user)
{
    conn_of(c)->user = user;
}

static size_t h_pending(const struct connd_conn *c)
{
    return ((const struct conn *)c)->pending;
}

static void h_log(struct connd_plugin *cp, int level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_msg(level, "plugin %s: %s", plugin_of(cp)->name, msg);
}

static void h_conn_log(struct connd_conn *c, int level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_msg(level, "conn %" PRIu64 ": %s", conn_of(c)->id, msg);
}

static int h_connect(struct connd_plugin *cp, const char *host, const char *port,
                     const struct connd_connect_opts *opts, struct connd_conn **out)
{
    struct plugin *p = plugin_of(cp);
    struct connect_params prm = {0};
    struct conn *c;
    int rc;

    if (!host || !port)
        return -EINVAL;
    /* A connection must not outlive a plugin whose init() then fails, nor
     * keep a shutting-down daemon alive. */
    if (!p->ready)
        return -EAGAIN;
    if (p->lp->stopping || p->finishing)
        return -ESHUTDOWN;
    if (opts) {
        /* size 0 is the first layout, which every field below belongs to. */
        if (opts->family != CONND_FAMILY_ANY && opts->family != CONND_FAMILY_IPV4 &&
            opts->family != CONND_FAMILY_IPV6)
            return -EINVAL;
        prm.family = (enum config_family)opts->family;
        prm.from = opts->from;
        prm.timeout_ms = opts->timeout_ms;
        prm.user = opts->user;
        if (opts->plugin && !(p = plugin_find(p->lp, opts->plugin)))
            return -ENOENT;
        if (opts->size >= offsetof(struct connd_connect_opts, limits_of) +
                              sizeof(opts->limits_of) &&
            opts->limits_of)
            prm.lim = &conn_of((struct connd_conn *)opts->limits_of)->lim;
    }
    if ((rc = connect_start(p->lp, p, host, port, &prm, &c)) < 0)
        return rc;
    log_debug("conn %" PRIu64 ": connecting to %s:%s for plugin %s", c->id, host, port,
              p->name);
    if (out)
        *out = conn_pub(c);
    return 0;
}

static int h_relay(struct connd_conn *a, struct connd_conn *b)
{
    if (!a)
        return -EINVAL;
    return relay_set(conn_of(a), b ? conn_of(b) : NULL);
}

static const char *h_plugin_name(const struct connd_plugin *p)
{
    return ((const struct plugin *)p)->name;
}

static const char *h_listener_name(const struct connd_conn *c)
{
    const struct listener *l = ((const struct conn *)c)->listener;
    return l ? l->name : NULL;
}

const struct connd_host plugin_host = {
    .abi = CONND_PLUGIN_ABI,
    .size = sizeof(struct connd_host),
    .write = h_write,
    .writev = h_writev,
    .mute = h_mute,
    .unmute = h_unmute,
    .expect = h_expect,
    .close = h_close,
    .abort = h_abort,
    .set_notify = h_set_notify,
    .set_nodelay = h_set_nodelay,
    .set_keepalive = h_set_keepalive,
    .getsockopt = h_getsockopt,
    .setsockopt = h_setsockopt,
    .local_address = h_local_address,
    .remote_address = h_remote_address,
    .id = h_id,
    .get_user = h_get_user,
    .set_user = h_set_user,
    .pending = h_pending,
    .log = h_log,
    .conn_log = h_conn_log,
    .connect = h_connect,
    .timer_start = h_timer_start,
    .timer_stop = h_timer_stop,
    .plugin_name = h_plugin_name,
    .listener_name = h_listener_name,
    .shutdown = h_shutdown,
    .relay = h_relay,
};

