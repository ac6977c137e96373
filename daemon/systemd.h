/*
 * systemd.h: what connd speaks to systemd, implemented by hand because the
 * protocols are small and documented as stable for independent
 * implementations (sd_notify(3) "Notes", sd_listen_fds(3)):
 * - sd_notify: datagrams like "READY=1" to $NOTIFY_SOCKET (a path, or an
 *   abstract socket when it starts with '@');
 * - the watchdog: WATCHDOG=1 every WATCHDOG_USEC / 4 from a loop timer, only
 *   while the loop's lag is below half the watchdog interval, so a plugin
 *   that wedges the loop trips systemd's watchdog;
 * - socket activation: $LISTEN_FDS sockets from fd 3 on, checked against
 *   $LISTEN_PID, named by $LISTEN_FDNAMES and adopted by the listener of
 *   the same name.
 */
#ifndef CONND_SYSTEMD_H
#define CONND_SYSTEMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct loop;

#define SD_MAX_LISTEN_FDS 256
#define SD_STATUS_MS 5000

struct sd_listen_fd {
    int fd;
    char name[256];
    bool taken;
};

struct sd_state {
    int notify_fd; /* -1 without $NOTIFY_SOCKET */
    char notify_path[108];
    size_t notify_len; /* bytes of notify_path used in the address */
    uint64_t watchdog_usec;
    uv_timer_t watchdog; /* also sends STATUS= now and then */
    uint64_t wd_expected;  /* uv_now when the next tick is due */
    uint64_t last_status_ms;
    bool timer_started;
    struct sd_listen_fd listen[SD_MAX_LISTEN_FDS];
    size_t n_listen;
};

/* Read and unset the environment ($NOTIFY_SOCKET, $WATCHDOG_*, $LISTEN_*).
 * Never fails: without systemd every call below is a no-op. */
void sd_init(struct sd_state *sd);
/* Start the watchdog/status timer on the loop (after sd_init). */
void sd_start(struct loop *lp);
/* Send one notification (several "KEY=value" lines). 0 or negative errno;
 * 0 when there is no notify socket. */
int sd_notify(struct sd_state *sd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "STATUS=..." with the current counts. */
void sd_notify_status(struct loop *lp, const char *prefix);
/* The socket passed for listener `name`, taken (closed by the caller from
 * now on), or -1. */
int sd_take_listen_fd(struct sd_state *sd, const char *name);
/* Close, with a log line, every passed socket no listener took. */
void sd_close_unused(struct sd_state *sd);
/* Stop the timer; close what is left. */
void sd_close(struct sd_state *sd);

#endif
