/*
 * loop.h: the loop context. Everything the daemon owns at run time (plugins,
 * listeners, connections, timers, signal handles) is reachable from one
 * struct loop, so several loops could run side by side later; nothing
 * mutable lives in a global.
 */
#ifndef CONND_LOOP_H
#define CONND_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <uv.h>

#include "config.h"
#include "idmap.h"
#include "list.h"
#include "systemd.h"

struct conn;
struct control;
struct listener;
struct plugin;

#define LOOP_MAX_MUTE_REASONS 32
#define LOOP_MUTE_REASON_LEN 16

/* Bits of the predefined mute reasons. */
#define MUTE_CTL (1u << 0)
#define MUTE_PLUGIN (1u << 1)
#define MUTE_BACKPRESSURE (1u << 2)

struct loop {
    uv_loop_t uv;
    struct config *cfg; /* owned */

    struct plugin *plugins;     /* load order */
    struct listener *listeners; /* config order */
    struct list conns;          /* every connection until its close callback */
    struct idmap by_id;         /* the same, by id */
    size_t n_conns;
    char *config_path;          /* for daemon.reload; NULL when built in-process */

    struct control *ctl;  /* the control socket, when started */
    size_t n_subscribers; /* control clients subscribed to events */
    uint64_t next_conn_id;

    /* A read turn: bumped once per loop iteration, after the poll phase. */
    uint32_t turn; /* bumped after each poll; wraps, compared for equality */
    uv_check_t turn_check;
    /* How long the last poll phase ran callbacks (its time minus the time
     * blocked in epoll, from libuv's idle-time metric): the control fast
     * lane runs only after a busy one. poll_start_ns is set just before
     * each poll phase (by the lane's uv_prepare); 0: not measured. */
    uint64_t poll_start_ns, poll_start_idle_ns, poll_busy_ns;
    /* The lane is looked at between reads too (control_lane_tick) once
     * the poll phase's busy time reaches lane_at_ns; lane_due_ns is the
     * clock time before which that cannot be (0: at the phase's first
     * read). Both are set anew before each poll phase. */
    uint64_t lane_at_ns, lane_due_ns;

    /* Connections to resume on the next iteration (yield, unmute, expect). */
    struct list resume;
    uv_idle_t resume_idle;

    /* Connections in a graceful close, checked by one sweep timer. */
    struct list closing;
    uv_timer_t closing_sweep;

    /* Muted connections watched for the peer's close: a private epoll set
     * with EPOLLRDHUP only, itself watched by the loop. */
    int rdhup_fd;
    uv_poll_t rdhup_poll;

    /* relay(): the one pipe every splice goes through (made at the first
     * relay; -1 before). It is empty between callbacks: what a socket
     * cannot take at once is read back out and delivered as received
     * bytes, so no byte ever waits in it. */
    int relay_pipe[2];
    size_t relay_pipe_cap;    /* its capacity: the most one splice moves */
    size_t relay_pipe_denied; /* the smallest size F_SETPIPE_SZ refused; 0: none */
    bool relay_warned;        /* a failing pipe2 was logged */
    uint64_t spliced_bytes;   /* moved socket to socket, for status */

    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t shutdown_timer;
    uint64_t shutdown_after_ms; /* loop_shutdown_later's timeout */
    bool stopping;
    bool finished;

    /* Interned mute reason names; bit i of conn.mute_mask is reason i. */
    char mute_reasons[LOOP_MAX_MUTE_REASONS][LOOP_MUTE_REASON_LEN];

    uint64_t start_ms; /* wall clock at start, for uptime */
    uint64_t next_write_token; /* conn.write tokens */
    struct sd_state sd;        /* notify socket, watchdog, passed sockets */
};

/*
 * Set up the loop for cfg (taken: freed by loop_close), read from
 * config_path (kept for reloads; may be NULL), load every plugin, start
 * every listener, outgoing connection and the control socket. Returns 0 or a negative
 * errno after logging the reason; on failure call loop_close().
 */
int loop_init(struct loop *lp, struct config *cfg, const char *config_path);
/* Start the outgoing connection cc describes. */
int loop_start_connection(struct loop *lp, const struct config_connection *cc);
/* Re-read config_path and apply the difference (reload.c): new plugins
 * load, listeners are added, removed or rebound when changed (unchanged
 * ones keep their sockets), new outgoing connections start. A config that
 * does not parse, or a plugin or listener that fails, rejects the reload:
 * the old config keeps running. Returns 0 or -1 with the reason in err. */
int loop_reload(struct loop *lp, char *err, size_t errlen);
/* Run until shutdown finished. Returns 0. */
int loop_run(struct loop *lp);
/* Stop accepting, close every connection gracefully, abort what is left
 * after timeout_ms, then unload plugins and let loop_run() return. */
void loop_shutdown(struct loop *lp, uint64_t timeout_ms);
/* loop_shutdown from the next loop iteration, so that the caller (a
 * control request) can reply first. */
void loop_shutdown_later(struct loop *lp, uint64_t timeout_ms);
/* Free everything; safe after a failed loop_init. */
void loop_close(struct loop *lp);

/* Bit for a mute reason name (NULL: "plugin"), interning it; 0 when the
 * name is invalid or the table is full. */
uint32_t loop_mute_bit(struct loop *lp, const char *reason);
/* The name of a single mute reason bit. */
const char *loop_mute_name(const struct loop *lp, uint32_t bit);
/* Called by conn.c when a connection is freed: finishes a shutdown. */
void loop_conn_gone(struct loop *lp);
/* Queue c to deliver buffered bytes and read again on the next turn. */
void loop_queue_resume(struct loop *lp, struct conn *c);
/* How long the poll phase in progress (or the last one, called after it)
 * has run callbacks up to `now` (uv_hrtime): the time since poll_start_ns
 * minus the time blocked in epoll. 0 when no phase was measured. */
uint64_t loop_poll_busy_ns(struct loop *lp, uint64_t now);
/* Put c under the graceful-close sweep. */
void loop_watch_closing(struct loop *lp, struct conn *c);
/* Milliseconds of the wall clock. */
uint64_t loop_wall_ms(void);

#endif
