/*
 * systemd.c: sd_notify, the watchdog and socket activation, by hand (see
 * systemd.h for why). Everything here is a no-op when connd does not run
 * under systemd.
 */
#include "systemd.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "listener.h"
#include "log.h"
#include "loop.h"
#include "plugin.h"

#define SD_LISTEN_FDS_START 3

static void sd_init_notify(struct sd_state *sd)
{
    const char *path = getenv("NOTIFY_SOCKET");
    size_t len;

    sd->notify_fd = -1;
    if (!path || !path[0])
        return;
    len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sd->notify_path)) {
        log_warn("systemd: NOTIFY_SOCKET \"%s\" is not a usable socket path", path);
        return;
    }
    memcpy(sd->notify_path, path, len);
    /* An abstract address starts with a NUL and is not NUL-terminated. */
    if (path[0] == '@')
        sd->notify_path[0] = '\0';
    sd->notify_len = len;
    sd->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
}

static void sd_init_watchdog(struct sd_state *sd)
{
    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");

    if (!usec || (pid && strtol(pid, NULL, 10) != getpid()))
        return;
    sd->watchdog_usec = strtoull(usec, NULL, 10);
}

static void sd_init_listen(struct sd_state *sd)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    const char *names = getenv("LISTEN_FDNAMES");
    long n;

    if (!pid || !fds || strtol(pid, NULL, 10) != getpid())
        return;
    n = strtol(fds, NULL, 10);
    if (n <= 0 || n > SD_MAX_LISTEN_FDS) {
        if (n > SD_MAX_LISTEN_FDS)
            log_warn("systemd: LISTEN_FDS=%ld, more than %d", n, SD_MAX_LISTEN_FDS);
        return;
    }
    for (long i = 0; i < n; i++) {
        struct sd_listen_fd *l = &sd->listen[sd->n_listen++];
        size_t len = 0;
        l->fd = SD_LISTEN_FDS_START + (int)i;
        fcntl(l->fd, F_SETFD, FD_CLOEXEC);
        /* LISTEN_FDNAMES: colon-separated, in fd order; "unknown" if unset. */
        if (names) {
            const char *end = strchr(names, ':');
            len = end ? (size_t)(end - names) : strlen(names);
            if (len >= sizeof(l->name))
                len = sizeof(l->name) - 1;
            memcpy(l->name, names, len);
            names = end ? end + 1 : NULL;
        }
        l->name[len] = '\0';
        if (!len)
            snprintf(l->name, sizeof(l->name), "unknown");
    }
}

void sd_init(struct sd_state *sd)
{
    memset(sd, 0, sizeof(*sd));
    sd_init_notify(sd);
    sd_init_watchdog(sd);
    sd_init_listen(sd);
    /* Children (there are none today) must not talk to systemd as us. */
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
}

int sd_notify(struct sd_state *sd, const char *fmt, ...)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    char msg[512];
    va_list ap;
    int n;

    if (sd->notify_fd < 0)
        return 0;
    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(msg))
        return -EMSGSIZE;
    memcpy(sun.sun_path, sd->notify_path, sd->notify_len);
    if (sendto(sd->notify_fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sun,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + sd->notify_len)) < 0) {
        log_debug("systemd: notify: %s", strerror(errno));
        return -errno;
    }
    return 0;
}

void sd_notify_status(struct loop *lp, const char *prefix)
{
    size_t n_listeners = 0, n_plugins = 0;

    for (struct listener *l = lp->listeners; l; l = l->next)
        n_listeners += !l->closed;
    for (struct plugin *p = lp->plugins; p; p = p->next)
        n_plugins += !p->retired;
    sd_notify(&lp->sd, "STATUS=%s%s%zu connections, %zu listeners, %zu plugins",
              prefix ? prefix : "", prefix ? "; " : "", lp->n_conns, n_listeners, n_plugins);
    lp->sd.last_status_ms = uv_now(&lp->uv);
}

/* Runs every WATCHDOG_USEC / 4 (or every SD_STATUS_MS without a watchdog):
 * a late tick means the loop was busy that long. */
static void sd_tick_cb(uv_timer_t *t)
{
    struct loop *lp = t->data;
    struct sd_state *sd = &lp->sd;
    uint64_t now = uv_now(&lp->uv), period = uv_timer_get_repeat(t);
    uint64_t lag = now > sd->wd_expected ? now - sd->wd_expected : 0;

    if (sd->watchdog_usec) {
        if (lag * 1000 < sd->watchdog_usec / 2)
            sd_notify(sd, "WATCHDOG=1");
        else
            log_warn("systemd: loop lagged %" PRIu64 " ms; watchdog ping skipped", lag);
    }
    if (now - sd->last_status_ms >= SD_STATUS_MS && !lp->stopping)
        sd_notify_status(lp, NULL);
    sd->wd_expected = now + period;
}

void sd_start(struct loop *lp)
{
    struct sd_state *sd = &lp->sd;
    uint64_t period = SD_STATUS_MS;

    if (sd->notify_fd < 0)
        return;
    if (sd->watchdog_usec) {
        period = sd->watchdog_usec / 4000;
        if (period == 0)
            period = 1;
    }
    uv_timer_init(&lp->uv, &sd->watchdog);
    sd->watchdog.data = lp;
    sd->wd_expected = uv_now(&lp->uv) + period;
    uv_timer_start(&sd->watchdog, sd_tick_cb, period, period);
    uv_unref((uv_handle_t *)&sd->watchdog);
    sd->timer_started = true;
}

int sd_take_listen_fd(struct sd_state *sd, const char *name)
{
    for (size_t i = 0; i < sd->n_listen; i++)
        if (!sd->listen[i].taken && strcmp(sd->listen[i].name, name) == 0) {
            sd->listen[i].taken = true;
            return sd->listen[i].fd;
        }
    return -1;
}

void sd_close_unused(struct sd_state *sd)
{
    for (size_t i = 0; i < sd->n_listen; i++)
        if (!sd->listen[i].taken) {
            log_warn("systemd: socket fd %d named \"%s\" matches no listener; closed",
                     sd->listen[i].fd, sd->listen[i].name);
            close(sd->listen[i].fd);
            sd->listen[i].taken = true;
        }
}

void sd_close(struct sd_state *sd)
{
    if (sd->timer_started && !uv_is_closing((uv_handle_t *)&sd->watchdog))
        uv_close((uv_handle_t *)&sd->watchdog, NULL);
    sd->timer_started = false;
}
