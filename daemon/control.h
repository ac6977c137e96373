/*
 * control.h: the control socket: a Unix stream socket speaking JSON-RPC 2.0,
 * one object per line each way (SPEC section 5). control.c owns the
 * transport (accept, line framing, bounded output, peer credentials);
 * rpc.c validates requests and dispatches them; methods.c holds handlers;
 * events.c fans events out to subscribers.
 */
#ifndef CONND_CONTROL_H
#define CONND_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "list.h"

struct loop;

#define CTL_LINE_MAX (1024 * 1024)     /* request line, newline not counted */
#define CTL_OUT_PAUSE (1024 * 1024)    /* stop reading requests above this */
#define CTL_EVENT_MAX (256 * 1024)     /* drop events (events_lost) above this */
#define CTL_OUT_MAX (64 * 1024 * 1024) /* disconnect above (replies in parts: never) */
#define CTL_STALL_MS 10000             /* disconnect after no output progress */
#define CTL_STOP_GRACE_MS 1000         /* at exit, for the last replies */
/* A reply made in parts (a large conn.list, see rpc_job_run) gets at most
 * CTL_JOB_STEP_US of the loop per turn and per client, so that other
 * clients and connections are served in between; the next part is made
 * only while the client has at most CTL_JOB_OUT_LOW bytes unread, so a
 * reply of any size takes bounded memory and reaches a client that reads. */
#define CTL_JOB_STEP_US 100
/* Under load the parts of one turn may take up to 1/CTL_JOB_SHARE of the
 * last poll phase's busy time together (at most CTL_JOB_STEP_MAX_US, split
 * between the clients with a reply in parts, each still getting at least
 * CTL_JOB_STEP_US): with 16 streams at 64 KiB a turn is busy for about
 * 0.8 ms, and 100 us parts would make a list of 100,000 connections take
 * over 1.5 s. */
#define CTL_JOB_SHARE 3
#define CTL_JOB_STEP_MAX_US 1000
#define CTL_JOB_CHUNK (128 * 1024) /* a part ends at this many bytes */
#define CTL_JOB_OUT_LOW (256 * 1024)
/* The fast lane looks for requests only after this long of callbacks
 * since the poll phase began or the lane was last looked at: between reads
 * (control_lane_tick) and before the next poll phase (control_lane_cb);
 * after CTL_LANE_AGAIN_US instead when the last look found requests. */
#define CTL_LANE_BUSY_US 200
#define CTL_LANE_AGAIN_US 50

enum ctl_role { CTL_ROLE_NONE, CTL_ROLE_READONLY, CTL_ROLE_ADMIN };

struct rpc_job;

/* Text being built: a growable buffer (rpc.c's rpc_buf_* functions). */
struct ctl_buf {
    char *p;
    size_t len, cap;
    bool on_stack; /* p is the caller's array, not to be freed */
    bool failed;   /* an allocation failed: the text is incomplete */
};

struct ctl_client {
    uv_pipe_t pipe;
    struct control *ctl;
    struct list link;     /* control.clients */
    struct list sub_link; /* control.subscribers, while subscribed */
    char *in;
    size_t in_len, in_cap, scanned;
    bool discarding; /* dropping the rest of an oversized line */
    bool reading, closing;
    bool eof; /* the client half-closed: close once its replies are out */
    size_t out_pending; /* bytes given to uv_write and not yet written */
    uint64_t stalled_since; /* uv_now when output began to wait, or 0 */
    uid_t uid;
    pid_t pid;
    enum ctl_role role;
    /* events.subscribe */
    uint32_t ev_types; /* bit per enum event_type */
    uint64_t ev_conn;  /* 0: any */
    char ev_listener[65];
    uint64_t ev_seq, ev_lost;
    /* A reply being made in parts: its requests after it wait, and so do
     * its events (counted as lost), so that nothing cuts into the line. */
    struct rpc_job *job;
    struct ctl_buf job_out; /* the part made and not yet queued */
    struct list job_link;   /* control.jobs, while its next part may be made */
};

/* Whether an event may go to cl now: not while a reply is being made in
 * parts, nor when more than CTL_EVENT_MAX bytes are unread. */
static inline bool ctl_client_takes_events(const struct ctl_client *cl)
{
    return !cl->job && cl->out_pending <= CTL_EVENT_MAX;
}

struct control {
    struct loop *lp;
    char *path;
    int fd, spare_fd; /* spare: released to accept a client at EMFILE */
    uv_poll_t poll;
    uv_timer_t stall_timer;
    struct list clients;
    struct list subscribers;
    struct list jobs;   /* clients whose reply in parts may go on */
    uv_idle_t job_idle; /* runs while jobs is not empty */
    /* The fast lane: every reading client's socket is also in this epoll
     * set, polled (timeout 0) between reads once a poll phase has been
     * busy for a while (control_lane_tick) and by a uv_prepare before the
     * poll phase after a busy one (control_lane_cb), so a request that
     * comes during a busy turn is served within about CTL_LANE_BUSY_US
     * instead of after that turn's and the next turn's traffic. -1: none. */
    int lane_fd;
    uv_prepare_t lane;
    bool in_lane; /* serving the lane: no nested look */
    size_t n_clients;
    int handles; /* poll, stall timer, job idle and clients not yet closed */
    bool stopping;
    bool accept_paused; /* out of fds: the stall timer resumes accepting */
    /* Replies may be made in parts over several loop turns. Set by
     * control_start; a control struct made elsewhere (the fuzz target's,
     * zeroed) gets every reply whole, within rpc_handle_line(). */
    bool jobs_ok;
};

/* Create the socket at the config's path with its mode and start serving.
 * Returns 0 or a negative errno after logging why. */
int control_start(struct loop *lp);
/* Close the socket (unlinking it) and every client. */
void control_stop(struct control *ctl);
/* Queue one line (json text without the newline) for cl. Events are
 * dropped and counted when the client is behind; replies never are.
 * Returns 0 or a negative errno (the client is then being closed). */
int control_send(struct ctl_client *cl, const char *text, size_t len, bool is_event);
/* Close cl after what is queued has been written. */
void control_client_close(struct ctl_client *cl);
/* Called after a read in a poll phase (conn_read_cb) once the clock has
 * passed lp->lane_due_ns: serves the fast lane when the phase has run
 * callbacks for CTL_LANE_BUSY_US since it began or the lane was last
 * looked at (CTL_LANE_AGAIN_US after a look that found requests), and sets
 * when to look next. Requests run there as between two connections'
 * callbacks: no plugin frame is on the stack, the connection just read is
 * settled, and libuv defers closing any handle (the one just read too) to
 * its close callbacks. */
void control_lane_tick(struct control *ctl);

#endif
