/*
 * plugin_test.c: the fake connd of connd/plugin-test.h: a test host with
 * its plugin instances (dlopen or linked-in, connd's ABI gate, init/fini),
 * timers and virtual clock, its log, the `struct connd_host` table plugins
 * get, the settling that follows every event a test drives, and what a
 * test reads back from a connection. One connection's logic lives in
 * conn.c. Mirrors daemon/plugin.c and
 * daemon/loop.c; when connd's semantics change, change them here too.
 *
 * Depends on libc and libdl only: no libuv, no daemon code.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fake.h"

#define NOTIFY_MIN_SIZE (offsetof(struct connd_notify, listener_closed) + sizeof(void *))
#define PLUG_MAGIC 0x706c7567u
#define SHOW_LEN 2048 /* conn.show's buffer */

/* ---- the host's own helpers ----------------------------------------------- */

struct plug *cpt__plug_get(const struct connd_plugin *cp)
{
    struct plug *p = (struct plug *)cp;
    if (!p || p->magic != PLUG_MAGIC) {
        fprintf(stderr, "connd-plugin-test: not a plugin of a test host\n");
        abort();
    }
    return p;
}

static void hlogv(struct cpt_host *h, int level, const char *fmt, va_list ap)
{
    char line[1200];
    int n = snprintf(line, sizeof(line), "<%d>", level);

    n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    line[n] = '\0';
    if (h->echo_log)
        fputs(line, stderr);
    if (h->log_len + (size_t)n + 1 > h->log_cap) {
        size_t cap = (h->log_cap ? h->log_cap : 1024) * 2 + (size_t)n;
        char *nl = realloc(h->log, cap);
        if (!nl)
            return; /* the line is lost, the test goes on */
        h->log = nl;
        h->log_cap = cap;
    }
    memcpy(h->log + h->log_len, line, (size_t)n + 1);
    h->log_len += (size_t)n;
}

void cpt__host_log(struct cpt_host *h, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    hlogv(h, level, fmt, ap);
    va_end(ap);
}

void cpt__host_begin(struct cpt_host *h)
{
    if (!h->depth)
        h->turn++;
}

void cpt__host_settle(struct cpt_host *h)
{
    bool again = true;

    if (h->depth)
        return;
    while (again) {
        again = false;
        for (struct conn *c = h->conns; c; c = c->next)
            if (cpt__conn_step(c))
                again = true;
    }
}

struct plug *cpt__plug_find(struct cpt_host *h, const char *name)
{
    for (struct plug *p = h->plugins; p; p = p->next)
        if (strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

uint32_t cpt__host_mute_bit(struct cpt_host *h, const char *reason, bool add)
{
    size_t len;
    int free_slot = -1;

    if (!reason)
        reason = "plugin";
    len = strlen(reason);
    if (len == 0 || len >= MUTE_REASON_LEN)
        return 0;
    for (int i = 0; i < MUTE_REASONS; i++) {
        if (h->reasons[i][0] == '\0') {
            if (free_slot < 0)
                free_slot = i;
        } else if (strcmp(h->reasons[i], reason) == 0) {
            return 1u << i;
        }
    }
    if (free_slot < 0 || !add)
        return 0;
    memcpy(h->reasons[free_slot], reason, len + 1);
    return 1u << free_slot;
}

/* ---- host functions about plugins ---------------------------------------- */

static void h_log(struct connd_plugin *cp, int level, const char *fmt, ...)
{
    struct plug *p = cpt__plug_get(cp);
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cpt__host_log(p->h, level, "plugin %s: %s", p->name, msg);
}

static int h_connect(struct connd_plugin *cp, const char *host, const char *port,
                     const struct connd_connect_opts *opts, struct connd_conn **out)
{
    struct plug *p = cpt__plug_get(cp), *owner = p;
    struct cpt_host *h = p->h;
    struct cpt_target t = {0};
    unsigned char addr[sizeof(struct in6_addr)];
    struct conn *c;

    if (!host || !port)
        return -EINVAL;
    /* A connection must not outlive a plugin whose init() then fails, nor
     * keep a stopping host alive. */
    if (!p->ready)
        return -EAGAIN;
    if (h->stopping || p->finishing)
        return -ESHUTDOWN;
    if (opts) {
        if (opts->family != CONND_FAMILY_ANY && opts->family != CONND_FAMILY_IPV4 &&
            opts->family != CONND_FAMILY_IPV6)
            return -EINVAL;
        if (opts->plugin && !(owner = cpt__plug_find(h, opts->plugin)))
            return -ENOENT;
        if (opts->from && opts->from[0] && inet_pton(AF_INET, opts->from, addr) != 1 &&
            inet_pton(AF_INET6, opts->from, addr) != 1)
            return -EINVAL;
        /* An older plugin's struct may end before a later field. */
        memcpy(&t.opts, opts,
               opts->size && opts->size < sizeof(t.opts) ? opts->size
               : opts->size ? sizeof(t.opts)
                            : offsetof(struct connd_connect_opts, limits_of));
        if (opts->size < offsetof(struct connd_connect_opts, limits_of) + sizeof(opts->limits_of))
            t.opts.limits_of = NULL; /* not (wholly) in the plugin's layout */
        t.opts.size = sizeof(t.opts);
        t.opts.from = opts->from ? strdup(opts->from) : NULL;
        t.opts.plugin = opts->plugin ? strdup(opts->plugin) : NULL;
    }
    t.host = strdup(host);
    t.port = strdup(port);
    if (!t.host || !t.port || (opts && opts->from && !t.opts.from) ||
        (opts && opts->plugin && !t.opts.plugin) || !(c = cpt__conn_new(h, owner))) {
        free((char *)t.host);
        free((char *)t.port);
        free((char *)t.opts.from);
        free((char *)t.opts.plugin);
        return -ENOMEM;
    }
    c->state = S_CONNECTING;
    if (t.opts.limits_of) /* borrowed for the call only, like connd */
        c->lim = cpt__conn_get(t.opts.limits_of)->lim;
    t.opts.limits_of = NULL;
    c->target = t;
    c->user = t.opts.user;
    c->deadline = h->now + (t.opts.timeout_ms ? t.opts.timeout_ms : CONNECT_TIMEOUT_MS);
    cpt__host_log(h, 7, "conn %" PRIu64 ": connecting to %s:%s for plugin %s", c->id,
                  host, port, owner->name);
    if (out)
        *out = conn_pub(c);
    return 0;
}

static void timer_free(struct cpt_host *h, struct timer *t)
{
    for (struct timer **pp = &h->timers; *pp; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    free(t);
}

static struct connd_timer *h_timer_start(struct connd_plugin *cp, uint64_t ms,
                                         uint64_t repeat_ms, void (*cb)(void *),
                                         void *arg)
{
    struct plug *p = cpt__plug_get(cp);
    struct timer *t;

    if (!cb || p->finishing || !(t = calloc(1, sizeof(*t))))
        return NULL;
    t->p = p;
    t->due = p->h->now + ms;
    t->repeat = repeat_ms;
    t->seq = ++p->h->seq;
    t->gen = p->h->gen;
    t->fresh = ms == 0;
    t->cb = cb;
    t->arg = arg;
    t->next = p->h->timers;
    p->h->timers = t;
    return (struct connd_timer *)t;
}

static void h_timer_stop(struct connd_timer *ct)
{
    struct timer *t = (struct timer *)ct;

    if (!t || t->stopped)
        return;
    t->stopped = true;
    if (!t->firing) /* else freed when its callback returns */
        timer_free(t->p->h, t);
}

static const char *h_plugin_name(const struct connd_plugin *p)
{
    return cpt__plug_get(p)->name;
}

const struct connd_host cpt__host_table = {
    .abi = CONND_PLUGIN_ABI,
    .size = sizeof(struct connd_host),
    .write = cpt__conn_write,
    .writev = cpt__conn_writev,
    .mute = cpt__conn_mute,
    .unmute = cpt__conn_unmute,
    .expect = cpt__conn_expect,
    .close = cpt__conn_close,
    .abort = cpt__conn_abort,
    .set_notify = cpt__conn_set_notify,
    .set_nodelay = cpt__conn_set_nodelay,
    .set_keepalive = cpt__conn_set_keepalive,
    .getsockopt = cpt__conn_getsockopt,
    .setsockopt = cpt__conn_setsockopt,
    .local_address = cpt__conn_local_address,
    .remote_address = cpt__conn_remote_address,
    .id = cpt__conn_id,
    .get_user = cpt__conn_get_user,
    .set_user = cpt__conn_set_user,
    .pending = cpt__conn_pending,
    .log = h_log,
    .conn_log = cpt__conn_log,
    .connect = h_connect,
    .timer_start = h_timer_start,
    .timer_stop = h_timer_stop,
    .plugin_name = h_plugin_name,
    .listener_name = cpt__conn_listener_name,
    .shutdown = cpt__conn_shutdown,
    .relay = cpt__conn_relay,
};

/* ---- host ---------------------------------------------------------------- */

struct cpt_host *cpt_host_new(void)
{
    struct cpt_host *h = calloc(1, sizeof(*h));

    if (!h)
        return NULL;
    h->conns_tail = &h->conns;
    h->lim = (struct cpt_limits){.max_size = 16384,
                                 .high_watermark = 1048576,
                                 .low_watermark = 262144,
                                 .max_pending = 67108864,
                                 .close_timeout_ms = 10000};
    /* connd registers these first; the order only shows in bit values. */
    cpt__host_mute_bit(h, "ctl", true);
    cpt__host_mute_bit(h, "plugin", true);
    cpt__host_mute_bit(h, "backpressure", true);
    h->echo_log = getenv("CPT_LOG") != NULL;
    return h;
}

static void plug_stop_timers(struct cpt_host *h, struct plug *p)
{
    for (struct timer *t = h->timers, *next; t; t = next) {
        next = t->next;
        if (t->p == p)
            timer_free(h, t);
    }
}

void cpt_host_free(struct cpt_host *h)
{
    bool again = true;

    if (!h)
        return;
    /* As connd at exit: close what is left, then fini each plugin. */
    h->stopping = true;
    while (again) {
        again = false;
        for (struct conn *c = h->conns; c; c = c->next)
            if (c->state != S_CLOSED) {
                cpt__conn_finish(c, !(c->state == S_CLOSING && c->fin_sent));
                again = true;
            }
        cpt__host_settle(h);
    }
    /* Stopped before fini(), freed after: a timer_stop() in fini() is a
     * no-op, as in connd. */
    for (struct timer *t = h->timers; t; t = t->next)
        t->stopped = true;
    for (struct plug *p = h->plugins; p; p = p->next) {
        p->finishing = true; /* fini() may not start what would outlive it */
        if (p->nt.fini)
            CALL(h, p->nt.fini(p->state));
    }
    while (h->timers)
        timer_free(h, h->timers);
    while (h->plugins) {
        struct plug *p = h->plugins;
        h->plugins = p->next;
        if (p->dl)
            dlclose(p->dl);
        free(p->name);
        free(p);
    }
    while (h->conns) {
        struct conn *c = h->conns;
        h->conns = c->next;
        cpt__conn_free(c);
    }
    free(h->log);
    free(h);
}

const struct connd_host *cpt_host_table(const struct cpt_host *h)
{
    (void)h;
    return &cpt__host_table;
}

struct cpt_limits *cpt_host_limits(struct cpt_host *h)
{
    return &h->lim;
}

const char *cpt_host_log(const struct cpt_host *h)
{
    return h->log ? h->log : "";
}

unsigned cpt_host_misuse(const struct cpt_host *h)
{
    return h->misuse;
}

struct connd_conn *cpt_host_conn(const struct cpt_host *h, size_t i)
{
    struct conn *c = h->conns;
    while (c && i--)
        c = c->next;
    return c ? conn_pub(c) : NULL;
}

struct connd_conn *cpt_host_next_outgoing(struct cpt_host *h)
{
    struct conn *c = h->out_cursor ? h->out_cursor->next : h->conns;

    while (c && c->listener)
        c = c->next;
    if (c)
        h->out_cursor = c;
    return c ? conn_pub(c) : NULL;
}

/* ---- plugins ------------------------------------------------------------- */

/* Gate, copy and init() a notify table; `what` names it in messages. On
 * success the instance is the host's (with dl); on failure nothing is. */
static int plug_add(struct cpt_host *h, const char *name, const char *what,
                    const struct connd_notify *nt, void *dl, const char *config_json,
                    struct connd_plugin **out)
{
    struct plug *p, **tail;
    int rc = 0;

    if (!nt) {
        cpt__host_log(h, 3, "plugin %s: %s: connd_plugin_entry returned NULL",
                      name ? name : "?", what);
        return -ENOEXEC;
    }
    if (!name)
        name = nt->name;
    if (!name || !name[0])
        return -EINVAL;
    if (cpt__plug_find(h, name)) {
        cpt__host_log(h, 3, "plugin %s: %s: an instance of that name is loaded", name,
                      what);
        return -EEXIST;
    }
    if (nt->abi != CONND_PLUGIN_ABI) {
        cpt__host_log(h, 3, "plugin %s: %s: abi %" PRIu32 ", connd speaks %d", name, what,
                      nt->abi, CONND_PLUGIN_ABI);
        return -EPROTO;
    }
    if (nt->size < NOTIFY_MIN_SIZE) {
        cpt__host_log(h, 3,
                      "plugin %s: %s: notify table of %" PRIu32
                      " bytes, at least %zu expected",
                      name, what, nt->size, (size_t)NOTIFY_MIN_SIZE);
        return -EPROTO;
    }
    if (!(p = calloc(1, sizeof(*p))) || !(p->name = strdup(name))) {
        free(p);
        return -ENOMEM;
    }
    p->magic = PLUG_MAGIC;
    p->h = h;
    /* Hooks newer than the plugin stay NULL. */
    memcpy(&p->nt, nt, nt->size < sizeof(p->nt) ? nt->size : sizeof(p->nt));
    if (p->nt.init)
        CALL(h, rc = p->nt.init(&cpt__host_table, (struct connd_plugin *)p,
                                config_json ? config_json : "{}", &p->state));
    if (rc != 0) {
        if (rc > 0)
            rc = -rc;
        cpt__host_log(h, 3, "plugin %s: %s: init failed: %s", name, what, strerror(-rc));
        plug_stop_timers(h, p); /* started by the failed init() */
        free(p->name);
        free(p);
        return rc;
    }
    p->ready = true;
    p->dl = dl;
    for (tail = &h->plugins; *tail; tail = &(*tail)->next)
        ;
    *tail = p;
    cpt__host_log(h, 6, "plugin %s: loaded %s", name, what);
    if (out)
        *out = (struct connd_plugin *)p;
    return 0;
}

int cpt_plugin_load(struct cpt_host *h, const char *name, const struct connd_notify *nt,
                    const char *config_json, struct connd_plugin **out)
{
    return plug_add(h, name, "(linked)", nt, NULL, config_json, out);
}

int cpt_plugin_open(struct cpt_host *h, const char *name, const char *path,
                    const char *config_json, struct connd_plugin **out)
{
    const char *who = name ? name : path;
    connd_plugin_entry_fn entry;
    char *local = NULL;
    struct stat st;
    void *dl;
    int rc;

    if (stat(path, &st) < 0) {
        rc = -errno;
        cpt__host_log(h, 3, "plugin %s: %s: %s", who, path, strerror(errno));
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        cpt__host_log(h, 3, "plugin %s: %s: not a regular file", who, path);
        return -EINVAL;
    }
    /* A bare name would make dlopen search the library path. */
    if (!strchr(path, '/') && asprintf(&local, "./%s", path) < 0)
        return -ENOMEM;
    dl = dlopen(local ? local : path, RTLD_NOW | RTLD_LOCAL);
    free(local);
    if (!dl) {
        cpt__host_log(h, 3, "plugin %s: not a loadable shared object: %s", who,
                      dlerror());
        return -ENOEXEC;
    }
    *(void **)&entry = dlsym(dl, "connd_plugin_entry");
    if (!entry) {
        cpt__host_log(h, 3, "plugin %s: %s: no connd_plugin_entry symbol", who, path);
        dlclose(dl);
        return -ENOEXEC;
    }
    if ((rc = plug_add(h, name, path, entry(), dl, config_json, out)) < 0)
        dlclose(dl);
    return rc;
}

void *cpt_plugin_state(const struct connd_plugin *p)
{
    return cpt__plug_get(p)->state;
}

/* ---- time ------------------------------------------------------------------ */

/* The next timer due by `end` (earliest, then first started), or NULL. */
static struct timer *next_timer(struct cpt_host *h, uint64_t end)
{
    struct timer *best = NULL;

    for (struct timer *t = h->timers; t; t = t->next) {
        if (t->stopped || t->due > end || (t->fresh && t->gen == h->gen))
            continue;
        if (!best || t->due < best->due || (t->due == best->due && t->seq < best->seq))
            best = t;
    }
    return best;
}

/* The connection whose connect or close deadline comes first by `end`. */
static struct conn *next_deadline(struct cpt_host *h, uint64_t end)
{
    struct conn *best = NULL;

    for (struct conn *c = h->conns; c; c = c->next)
        if ((c->state == S_CONNECTING || c->state == S_CLOSING) && c->deadline <= end &&
            (!best || c->deadline < best->deadline))
            best = c;
    return best;
}

static void fire(struct cpt_host *h, struct timer *t)
{
    t->firing = true;
    CALL(h, t->cb(t->arg));
    t->firing = false;
    if (t->stopped || t->repeat == 0) {
        timer_free(h, t);
    } else {
        t->due = h->now + t->repeat;
        t->seq = ++h->seq;
        t->fresh = false;
    }
}

void cpt_advance(struct cpt_host *h, uint64_t ms)
{
    uint64_t end = h->now + ms;

    cpt__host_begin(h);
    h->gen++;
    /* A loop turn resumes what received() paused in the last one; a
     * connection paused again now waits for the next. */
    for (struct conn *c = h->conns; c; c = c->next)
        c->paused = false;
    cpt__host_settle(h);
    for (;;) {
        struct timer *t = next_timer(h, end);
        struct conn *c = next_deadline(h, end);

        if (t && (!c || t->due <= c->deadline)) {
            if (t->due > h->now)
                h->now = t->due;
            fire(h, t);
        } else if (c) {
            if (c->deadline > h->now)
                h->now = c->deadline;
            cpt__conn_expire(c);
        } else {
            break;
        }
        cpt__host_settle(h);
    }
    h->now = end;
}

void cpt_run(struct cpt_host *h)
{
    cpt_advance(h, 0);
}

/* ---- inspecting a connection ---------------------------------------------- */

const char *cpt_conn_output(const struct connd_conn *cc, size_t *len)
{
    struct conn *c = cpt__conn_get(cc);

    if (len)
        *len = c->out_len;
    return c->out ? c->out : "";
}

void cpt_conn_output_clear(struct connd_conn *cc)
{
    struct conn *c = cpt__conn_get(cc);

    c->out_len = 0;
    if (c->out)
        c->out[0] = '\0';
}

enum cpt_state cpt_conn_state(const struct connd_conn *cc)
{
    static const enum cpt_state map[] = {CPT_CONNECTING, CPT_OPEN, CPT_CLOSING,
                                         CPT_CLOSED};
    struct conn *c = cpt__conn_get(cc);

    return c->state == S_CLOSED && c->reset ? CPT_ABORTED : map[c->state];
}

const char *cpt_conn_reason(const struct connd_conn *c)
{
    return cpt__conn_get(c)->reason;
}

bool cpt_conn_muted(const struct connd_conn *cc, const char *reason)
{
    struct conn *c = cpt__conn_get(cc);
    return reason ? (c->mute & cpt__host_mute_bit(c->h, reason, false)) != 0
                  : c->mute != 0;
}

size_t cpt_conn_expect(const struct connd_conn *c)
{
    return cpt__conn_get(c)->expect;
}

size_t cpt_conn_buffered(const struct connd_conn *cc)
{
    struct conn *c = cpt__conn_get(cc);
    return c->state == S_OPEN ? c->in_len - c->in_off : 0;
}

bool cpt_conn_fin_sent(const struct connd_conn *c)
{
    return cpt__conn_get(c)->fin_sent;
}

const char *cpt_conn_plugin_name(const struct connd_conn *c)
{
    return cpt__conn_get(c)->p->name;
}

const char *cpt_conn_show(struct connd_conn *cc)
{
    struct conn *c = cpt__conn_get(cc);
    char *buf;
    int n = 0;

    free(c->show);
    c->show = NULL;
    if (!c->p->nt.show || c->state == S_CLOSED || !(buf = malloc(SHOW_LEN)))
        return NULL;
    CALL(c->h, n = c->p->nt.show(c->p->state, cc, buf, SHOW_LEN));
    if (n <= 0 || n >= SHOW_LEN) { /* connd shows nothing for these */
        free(buf);
        buf = NULL;
    } else {
        buf[n] = '\0';
    }
    c->show = buf;
    cpt__host_settle(c->h);
    return buf;
}

struct connd_conn *cpt_conn_relay(const struct connd_conn *cc)
{
    struct conn *c = cpt__conn_get(cc);
    return c->relay ? conn_pub(c->relay) : NULL;
}

const struct cpt_target *cpt_conn_target(const struct connd_conn *cc)
{
    struct conn *c = cpt__conn_get(cc);
    return c->listener ? NULL : &c->target;
}
