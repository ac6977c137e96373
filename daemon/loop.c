/*
 * loop.c: the loop context: start-up in config order (plugins, listeners,
 * outgoing connections), the per-iteration machinery connections share
 * (read turns, the resume queue, the graceful-close sweep, the watch for
 * peers closing muted connections), signals, and drain-then-exit.
 */
#include "loop.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "connect.h"
#include "control.h"
#include "listener.h"
#include "log.h"
#include "plugin.h"
#include "relay.h"

#define LOOP_SWEEP_MS 20
#define LOOP_RDHUP_BATCH 64

uint64_t loop_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint32_t loop_mute_bit(struct loop *lp, const char *reason)
{
    size_t len;
    int free_slot = -1;

    if (!reason)
        reason = "plugin";
    len = strlen(reason);
    if (len == 0 || len >= LOOP_MUTE_REASON_LEN)
        return 0;
    for (int i = 0; i < LOOP_MAX_MUTE_REASONS; i++) {
        if (lp->mute_reasons[i][0] == '\0') {
            if (free_slot < 0)
                free_slot = i;
        } else if (strcmp(lp->mute_reasons[i], reason) == 0) {
            return 1u << i;
        }
    }
    if (free_slot < 0)
        return 0;
    memcpy(lp->mute_reasons[free_slot], reason, len + 1);
    return 1u << free_slot;
}

const char *loop_mute_name(const struct loop *lp, uint32_t bit)
{
    for (int i = 0; i < LOOP_MAX_MUTE_REASONS; i++)
        if (bit == 1u << i)
            return lp->mute_reasons[i];
    return "?";
}

/* ---- per-iteration machinery ------------------------------------------ */

uint64_t loop_poll_busy_ns(struct loop *lp, uint64_t now)
{
    uint64_t spent, idle;

    if (!lp->poll_start_ns)
        return 0;
    spent = now - lp->poll_start_ns;
    idle = uv_metrics_idle_time(&lp->uv) - lp->poll_start_idle_ns;
    return spent > idle ? spent - idle : 0;
}

static void loop_turn_cb(uv_check_t *h)
{
    struct loop *lp = h->data;
    lp->turn++;
    if (lp->poll_start_ns)
        lp->poll_busy_ns = loop_poll_busy_ns(lp, uv_hrtime());
}

static void loop_resume_cb(uv_idle_t *h)
{
    struct loop *lp = h->data;
    struct list batch;

    /* Connections queued while this batch runs wait for the next turn. */
    list_init(&batch);
    list_splice(&lp->resume, &batch);
    while (!list_empty(&batch)) {
        struct conn *c = container_of(batch.next, struct conn, resume_link);
        list_del(&c->resume_link);
        conn_resume(c);
    }
    if (list_empty(&lp->resume))
        uv_idle_stop(&lp->resume_idle);
}

void loop_queue_resume(struct loop *lp, struct conn *c)
{
    if (list_linked(&c->resume_link))
        return;
    if (list_empty(&lp->resume))
        uv_idle_start(&lp->resume_idle, loop_resume_cb);
    list_add_tail(&lp->resume, &c->resume_link);
}

static void loop_sweep_cb(uv_timer_t *t)
{
    struct loop *lp = t->data;
    uint64_t now = uv_now(&lp->uv);

    for (struct list *n = lp->closing.next, *next; n != &lp->closing; n = next) {
        next = n->next; /* conn_closing_check may unlink n, nothing else */
        conn_closing_check(container_of(n, struct conn, closing_link), now);
    }
    if (list_empty(&lp->closing))
        uv_timer_stop(&lp->closing_sweep);
}

void loop_watch_closing(struct loop *lp, struct conn *c)
{
    if (list_linked(&c->closing_link))
        return;
    if (list_empty(&lp->closing))
        uv_timer_start(&lp->closing_sweep, loop_sweep_cb, LOOP_SWEEP_MS, LOOP_SWEEP_MS);
    list_add_tail(&lp->closing, &c->closing_link);
}

static void loop_rdhup_cb(uv_poll_t *h, int status, int events)
{
    struct loop *lp = h->data;
    struct epoll_event evs[LOOP_RDHUP_BATCH];
    int n;

    (void)status;
    (void)events;
    /* Connections are freed only in close callbacks, after this returns, so
     * every pointer in the batch is still valid here. */
    n = epoll_wait(lp->rdhup_fd, evs, LOOP_RDHUP_BATCH, 0);
    for (int i = 0; i < n; i++)
        conn_peer_hup(evs[i].data.ptr, evs[i].events);
}

/* ---- lifecycle --------------------------------------------------------- */

static void loop_finish(struct loop *lp);

static void loop_abort_all(struct loop *lp)
{
    for (struct list *n = lp->conns.next, *next; n != &lp->conns; n = next) {
        struct conn *c = container_of(n, struct conn, link);
        size_t lost;
        next = n->next;
        if (c->state == CONN_CLOSED)
            continue;
        lost = conn_force_close(c);
        if (lost)
            log_warn("conn %" PRIu64 ": shutdown deadline: %zu pending bytes dropped", c->id,
                     lost);
    }
}

static void loop_shutdown_timer_cb(uv_timer_t *t)
{
    struct loop *lp = t->data;
    log_notice("shutdown: deadline reached with %zu connections open", lp->n_conns);
    loop_abort_all(lp);
}

void loop_shutdown(struct loop *lp, uint64_t timeout_ms)
{
    if (lp->finished)
        return;
    if (lp->stopping) {
        log_notice("shutdown: asked again, closing %zu connections now", lp->n_conns);
        loop_abort_all(lp);
        return;
    }
    lp->stopping = true;
    log_notice("shutdown: draining %zu connections for up to %" PRIu64 " ms", lp->n_conns,
               timeout_ms);
    sd_notify(&lp->sd, "STOPPING=1\nSTATUS=stopping: draining %zu connections", lp->n_conns);
    for (struct listener *l = lp->listeners; l; l = l->next)
        listener_stop(l);
    for (struct list *n = lp->conns.next, *next; n != &lp->conns; n = next) {
        next = n->next;
        conn_close(container_of(n, struct conn, link), "shutdown");
    }
    if (lp->n_conns == 0)
        loop_finish(lp);
    else
        uv_timer_start(&lp->shutdown_timer, loop_shutdown_timer_cb, timeout_ms, 0);
}

static void loop_shutdown_later_cb(uv_timer_t *t)
{
    struct loop *lp = t->data;
    loop_shutdown(lp, lp->shutdown_after_ms);
}

void loop_shutdown_later(struct loop *lp, uint64_t timeout_ms)
{
    if (lp->stopping)
        return;
    lp->shutdown_after_ms = timeout_ms;
    uv_timer_start(&lp->shutdown_timer, loop_shutdown_later_cb, 0, 0);
}

void loop_conn_gone(struct loop *lp)
{
    if (lp->stopping && lp->n_conns == 0)
        loop_finish(lp);
}

static void loop_signal_cb(uv_signal_t *h, int signum)
{
    struct loop *lp = h->data;

    if (signum == SIGHUP) {
        char err[512];
        log_notice("SIGHUP: reloading %s", lp->config_path ? lp->config_path : "(none)");
        if (loop_reload(lp, err, sizeof(err)) < 0)
            log_err("reload refused, old config kept: %s", err);
        return;
    }
    log_notice("%s: shutting down", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    loop_shutdown(lp, lp->cfg->shutdown_timeout_ms);
}

static void loop_close_handle(uv_handle_t *h)
{
    if (h->loop && !uv_is_closing(h))
        uv_close(h, NULL);
}

/* Every connection is gone: close the loop's own handles and unload the
 * plugins, so that uv_run returns. */
static void loop_finish(struct loop *lp)
{
    struct plugin *p;

    if (lp->finished)
        return;
    lp->finished = true;
    lp->stopping = true;
    control_stop(lp->ctl);
    sd_close(&lp->sd);
    for (struct listener *l = lp->listeners; l; l = l->next)
        listener_stop(l);
    loop_close_handle((uv_handle_t *)&lp->shutdown_timer);
    loop_close_handle((uv_handle_t *)&lp->closing_sweep);
    loop_close_handle((uv_handle_t *)&lp->resume_idle);
    loop_close_handle((uv_handle_t *)&lp->turn_check);
    loop_close_handle((uv_handle_t *)&lp->rdhup_poll);
    loop_close_handle((uv_handle_t *)&lp->sig_term);
    loop_close_handle((uv_handle_t *)&lp->sig_int);
    loop_close_handle((uv_handle_t *)&lp->sig_hup);
    while ((p = lp->plugins) != NULL) {
        lp->plugins = p->next;
        plugin_unload(p);
    }
    log_info("stopped");
}

int loop_start_connection(struct loop *lp, const struct config_connection *cc)
{
    struct connect_params prm = {.family = cc->family, .from = cc->from, .lim = &cc->lim};
    struct plugin *p = plugin_find(lp, cc->plugin);
    struct conn *c;
    int rc;

    if ((rc = connect_start(lp, p, cc->host, cc->port, &prm, &c)) < 0) {
        log_err("connection %s: %s", cc->name, strerror(-rc));
        return rc;
    }
    log_info("connection %s: conn %" PRIu64 " connecting to %s:%s", cc->name, c->id,
             cc->host, cc->port);
    return 0;
}

static int loop_start_connections(struct loop *lp)
{
    for (size_t i = 0; i < lp->cfg->n_connections; i++) {
        int rc = loop_start_connection(lp, &lp->cfg->connections[i]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int loop_init(struct loop *lp, struct config *cfg, const char *config_path)
{
    char err[512];
    struct plugin **tail;
    int rc;

    memset(lp, 0, sizeof(*lp));
    sd_init(&lp->sd);
    lp->cfg = cfg;
    if (config_path && !(lp->config_path = strdup(config_path)))
        return -ENOMEM;
    lp->rdhup_fd = -1;
    lp->relay_pipe[0] = lp->relay_pipe[1] = -1;
    lp->start_ms = loop_wall_ms();
    list_init(&lp->conns);
    list_init(&lp->resume);
    list_init(&lp->closing);
    loop_mute_bit(lp, "ctl");          /* MUTE_CTL */
    loop_mute_bit(lp, "plugin");       /* MUTE_PLUGIN */
    loop_mute_bit(lp, "backpressure"); /* MUTE_BACKPRESSURE */
    if ((rc = uv_loop_init(&lp->uv)) < 0) {
        log_err("loop: %s", uv_strerror(rc));
        return rc;
    }
    /* Time blocked in epoll, for the control fast lane's busy test
     * (without it every poll phase counts as busy: the lane always runs). */
    uv_loop_configure(&lp->uv, UV_METRICS_IDLE_TIME);
    lp->uv.data = lp;
    if ((lp->rdhup_fd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        rc = -errno;
        log_err("loop: epoll_create1: %s", strerror(errno));
        return rc;
    }
    uv_check_init(&lp->uv, &lp->turn_check);
    uv_idle_init(&lp->uv, &lp->resume_idle);
    uv_timer_init(&lp->uv, &lp->closing_sweep);
    uv_timer_init(&lp->uv, &lp->shutdown_timer);
    uv_poll_init(&lp->uv, &lp->rdhup_poll, lp->rdhup_fd);
    uv_signal_init(&lp->uv, &lp->sig_term);
    uv_signal_init(&lp->uv, &lp->sig_int);
    uv_signal_init(&lp->uv, &lp->sig_hup);
    lp->turn_check.data = lp->resume_idle.data = lp->closing_sweep.data = lp;
    lp->shutdown_timer.data = lp->rdhup_poll.data = lp;
    lp->sig_term.data = lp->sig_int.data = lp->sig_hup.data = lp;
    uv_check_start(&lp->turn_check, loop_turn_cb);
    uv_poll_start(&lp->rdhup_poll, UV_READABLE, loop_rdhup_cb);
    uv_signal_start(&lp->sig_term, loop_signal_cb, SIGTERM);
    uv_signal_start(&lp->sig_int, loop_signal_cb, SIGINT);
    uv_signal_start(&lp->sig_hup, loop_signal_cb, SIGHUP);
    /* These never keep the loop alive on their own; signals do. */
    uv_unref((uv_handle_t *)&lp->turn_check);
    uv_unref((uv_handle_t *)&lp->rdhup_poll);
    uv_unref((uv_handle_t *)&lp->closing_sweep);

    tail = &lp->plugins;
    for (size_t i = 0; i < cfg->n_plugins; i++) {
        struct plugin *p;
        if ((rc = plugin_load(lp, &cfg->plugins[i], cfg->plugin_dir, &p, err,
                              sizeof(err))) < 0) {
            log_err("%s", err);
            return rc;
        }
        *tail = p;
        tail = &p->next;
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        struct listener *l;
        struct plugin *p = plugin_find(lp, cfg->listeners[i].plugin);
        if ((rc = listener_start(lp, &cfg->listeners[i], p, &l)) < 0)
            return rc;
    }
    sd_close_unused(&lp->sd);
    if ((rc = loop_start_connections(lp)) < 0)
        return rc;
    if ((rc = control_start(lp)) < 0)
        return rc;
    log_notice("ready: %zu listeners, %zu plugins, %zu outgoing connections",
               cfg->n_listeners, cfg->n_plugins, cfg->n_connections);
    sd_notify(&lp->sd, "READY=1\nMAINPID=%d", (int)getpid());
    sd_notify_status(lp, "ready");
    sd_start(lp);
    return 0;
}

int loop_run(struct loop *lp)
{
    uv_run(&lp->uv, UV_RUN_DEFAULT);
    return 0;
}

void loop_close(struct loop *lp)
{
    if (lp->uv.data == lp) {
        /* After a failed start: abort what exists and let the handles close. */
        lp->stopping = true;
        loop_abort_all(lp);
        if (lp->n_conns == 0)
            loop_finish(lp);
        uv_run(&lp->uv, UV_RUN_DEFAULT);
        if (uv_loop_close(&lp->uv) != 0)
            log_warn("loop: handles left open at exit");
    }
    if (lp->rdhup_fd >= 0)
        close(lp->rdhup_fd);
    relay_pipe_close(lp);
    idmap_free(&lp->by_id);
    config_free(lp->cfg);
    lp->cfg = NULL;
    free(lp->config_path);
    lp->config_path = NULL;
}
