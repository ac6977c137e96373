/*
 * control.c: the control socket's transport. The listening socket is made
 * here (stale-socket check, mode set through the umask so it is never
 * wider, even for an instant) and accepted with accept4 from a uv_poll.
 * One spare fd is held back so that a control client can still be accepted
 * when listeners have used up the process's descriptors.
 *
 * Each client is a uv_pipe_t. Input is split into lines of at most
 * CTL_LINE_MAX bytes; each complete line goes to rpc_handle_line(), whose
 * reply is queued before the next line is read, so replies come in request
 * order. Output is bounded: above CTL_OUT_PAUSE the client's requests are
 * not read, above CTL_EVENT_MAX its events are dropped and counted (the
 * count arrives later as one events_lost event), and a client whose output
 * makes no progress for CTL_STALL_MS, or passes CTL_OUT_MAX, is dropped.
 *
 * A large result (conn.list of many connections) is made in parts: rpc.c
 * makes the first and leaves cl->job set; a uv_idle then makes one part per
 * loop turn for each such client, at most CTL_JOB_STEP_US each (or, under
 * load, their share of a third of the last poll phase's busy time, at most
 * CTL_JOB_STEP_MAX_US in all), while the
 * client has at most CTL_JOB_OUT_LOW bytes unread (its write callback lets
 * it go on). Meanwhile the client's later requests wait, in order, and its
 * events are counted as lost; other clients and connections are served
 * between the parts.
 */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "rpc.h"

struct ctl_wreq {
    uv_write_t req;
    size_t len;
    char data[];
};

static void client_read_update(struct ctl_client *cl);
static void client_lane(struct ctl_client *cl, bool on);
static void client_job_queue(struct ctl_client *cl);
static void control_handle_closed_cb(uv_handle_t *h);

/* ---- clients ----------------------------------------------------------- */

static void control_unref(struct control *ctl)
{
    if (--ctl->handles == 0) {
        free(ctl->path);
        free(ctl);
    }
}

static void client_closed_cb(uv_handle_t *h)
{
    struct ctl_client *cl = h->data;
    struct control *ctl = cl->ctl;

    free(cl->in);
    free(cl);
    if (ctl->stopping && ctl->n_clients == 0 && !uv_is_closing((uv_handle_t *)&ctl->stall_timer))
        uv_close((uv_handle_t *)&ctl->stall_timer, control_handle_closed_cb);
    control_unref(ctl);
}

void control_client_close(struct ctl_client *cl)
{
    if (cl->closing)
        return;
    if (cl->reading)
        client_lane(cl, false);
    cl->closing = true;
    list_del(&cl->link);
    list_del(&cl->job_link);
    rpc_job_cancel(cl);
    if (list_linked(&cl->sub_link)) {
        list_del(&cl->sub_link);
        cl->ctl->lp->n_subscribers--;
    }
    cl->ctl->n_clients--;
    uv_close((uv_handle_t *)&cl->pipe, client_closed_cb);
}

static void client_write_cb(uv_write_t *req, int status)
{
    struct ctl_wreq *w = container_of(req, struct ctl_wreq, req);
    struct ctl_client *cl = req->handle->data;

    cl->out_pending -= w->len;
    free(w);
    if (cl->closing)
        return;
    if (status < 0) {
        log_debug("control: client pid %d: write: %s", (int)cl->pid, uv_err_name(status));
        control_client_close(cl);
        return;
    }
    cl->stalled_since = cl->out_pending ? uv_now(&cl->ctl->lp->uv) : 0;
    if (cl->ctl->stopping) {
        if (!cl->out_pending)
            control_client_close(cl); /* its last reply is out */
        return;
    }
    rpc_client_drained(cl);
    client_read_update(cl);
    client_job_queue(cl);
}

/* Queue len bytes of text for cl, and a newline when `eol`; no bound is
 * checked here. Returns 0 or a negative errno (cl is then being closed). */
static int client_write(struct ctl_client *cl, const char *text, size_t len, bool eol)
{
    struct ctl_wreq *w;
    uv_buf_t b;
    int rc;

    if (!(w = malloc(sizeof(*w) + len + eol))) {
        control_client_close(cl);
        return -ENOMEM;
    }
    if (len)
        memcpy(w->data, text, len);
    if (eol)
        w->data[len] = '\n';
    w->len = len + eol;
    b = uv_buf_init(w->data, (unsigned)w->len);
    if ((rc = uv_write(&w->req, (uv_stream_t *)&cl->pipe, &b, 1, client_write_cb)) < 0) {
        free(w);
        control_client_close(cl);
        return rc;
    }
    if (!cl->out_pending)
        cl->stalled_since = uv_now(&cl->ctl->lp->uv);
    cl->out_pending += w->len;
    return 0;
}

int control_send(struct ctl_client *cl, const char *text, size_t len, bool is_event)
{
    if (cl->closing)
        return -EPIPE;
    if (is_event && !ctl_client_takes_events(cl)) {
        cl->ev_lost++;
        return 0;
    }
    if (cl->out_pending + len > CTL_OUT_MAX) {
        log_warn("control: client pid %d: more than %d bytes of replies unread, dropped",
                 (int)cl->pid, CTL_OUT_MAX);
        control_client_close(cl);
        return -ENOBUFS;
    }
    return client_write(cl, text, len, true);
}

/* ---- replies made in parts ----------------------------------------------- */

/* Queue what rpc.c made of cl's reply so far, and the newline once `done`. */
static int client_job_flush(struct ctl_client *cl, bool done)
{
    int rc = 0;

    if (cl->job_out.len || done)
        rc = client_write(cl, cl->job_out.p, cl->job_out.len, done);
    cl->job_out.len = 0;
    if (done)
        rpc_buf_free(&cl->job_out); /* an idle client keeps no part buffer */
    return rc;
}

/* Make the next part of cl's reply (all of it when budget_ns is 0) and
 * queue it. Once the reply is complete, the requests that waited behind it
 * are handled, in order. */
static void client_job_step(struct ctl_client *cl, uint64_t budget_ns)
{
    int rc;

    if (!cl->job || cl->closing)
        return;
    if ((rc = rpc_job_run(cl, budget_ns)) < 0) {
        log_warn("control: client pid %d: out of memory amid a reply, dropped",
                 (int)cl->pid);
        control_client_close(cl);
        return;
    }
    if (client_job_flush(cl, rc == 1) < 0 || cl->closing)
        return;
    if (rc == 1) {
        rpc_client_drained(cl); /* events may go again */
        client_read_update(cl);
    } else {
        client_job_queue(cl);
    }
}

static void control_job_cb(uv_idle_t *h)
{
    struct control *ctl = h->data;
    struct list run;
    /* Under load the parts of this turn may take a share of it (see
     * CTL_JOB_SHARE), split between the clients, so a big reply still ends
     * in bounded time while traffic flows; each client's part gets at
     * least CTL_JOB_STEP_US. */
    uint64_t step = ctl->lp->poll_busy_ns / CTL_JOB_SHARE, n = 0;

    if (step > (uint64_t)CTL_JOB_STEP_MAX_US * 1000)
        step = (uint64_t)CTL_JOB_STEP_MAX_US * 1000;
    /* One part per client this turn; a client queued again (or anew)
     * meanwhile waits for the next turn, after the poll phase has served
     * everyone else. */
    list_init(&run);
    list_splice(&ctl->jobs, &run);
    for (struct list *l = run.next; l != &run; l = l->next)
        n++;
    step = n ? step / n : step;
    if (step < (uint64_t)CTL_JOB_STEP_US * 1000)
        step = (uint64_t)CTL_JOB_STEP_US * 1000;
    while (!list_empty(&run)) {
        struct ctl_client *cl = container_of(run.next, struct ctl_client, job_link);
        list_del(&cl->job_link);
        client_job_step(cl, step);
    }
    if (list_empty(&ctl->jobs))
        uv_idle_stop(&ctl->job_idle);
}

/* Let cl's reply go on from the next turn, unless the client has more than
 * CTL_JOB_OUT_LOW bytes unread: then its write callback queues it again. */
static void client_job_queue(struct ctl_client *cl)
{
    struct control *ctl = cl->ctl;

    if (!cl->job || cl->closing || list_linked(&cl->job_link) ||
        cl->out_pending > CTL_JOB_OUT_LOW)
        return;
    if (list_empty(&ctl->jobs))
        uv_idle_start(&ctl->job_idle, control_job_cb);
    list_add_tail(&ctl->jobs, &cl->job_link);
}

static void client_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct ctl_client *cl = h->data;

    (void)suggested;
    if (cl->in_cap - cl->in_len < 4096) {
        size_t cap = cl->in_cap ? cl->in_cap * 2 : 8192;
        char *in;
        if (cap > CTL_LINE_MAX + 65536)
            cap = CTL_LINE_MAX + 65536;
        if (cap <= cl->in_cap || !(in = realloc(cl->in, cap))) {
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        cl->in = in;
        cl->in_cap = cap;
    }
    *buf = uv_buf_init(cl->in + cl->in_len, (unsigned)(cl->in_cap - cl->in_len));
}

/* Handle every complete line in the buffer, in order, while the client can
 * take replies and no reply of its own is being made in parts; keep the
 * rest. */
static void client_process(struct ctl_client *cl)
{
    size_t start = 0;

    while (!cl->closing && !cl->job && cl->out_pending <= CTL_OUT_PAUSE) {
        char *nl = memchr(cl->in + cl->scanned, '\n', cl->in_len - cl->scanned);
        size_t len;

        if (!nl) {
            cl->scanned = cl->in_len;
            break;
        }
        len = (size_t)(nl - (cl->in + start));
        if (cl->discarding) {
            cl->discarding = false; /* the oversized line ends here */
        } else if (len > CTL_LINE_MAX) {
            rpc_reply_oversized(cl);
        } else {
            *nl = '\0';
            rpc_handle_line(cl, cl->in + start, len);
        }
        start = (size_t)(nl - cl->in) + 1;
        cl->scanned = start;
    }
    if (cl->closing)
        return;
    if (cl->job) {
        /* The last line's reply is being made in parts: queue the first,
         * the rest follows from control_job_cb. */
        if (client_job_flush(cl, false) == 0)
            client_job_queue(cl);
    } else if (!cl->discarding && cl->in_len - start > CTL_LINE_MAX &&
               !memchr(cl->in + start, '\n', cl->in_len - start)) {
        /* A line longer than the limit without its newline yet: answer
         * now, then drop input up to the newline. */
        rpc_reply_oversized(cl);
        cl->discarding = true;
        start = cl->in_len;
    } else if (cl->discarding && start < cl->in_len && cl->scanned == cl->in_len) {
        start = cl->in_len; /* still inside the oversized line */
    }
    memmove(cl->in, cl->in + start, cl->in_len - start);
    cl->in_len -= start;
    cl->scanned -= start;
}

static void client_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct ctl_client *cl = s->data;

    (void)buf;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread != UV_EOF) {
            log_debug("control: client pid %d: read: %s", (int)cl->pid,
                      uv_err_name((int)nread));
            control_client_close(cl);
            return;
        }
        /* A half-close ("nc -N", "connctl < file"): answer every complete
         * line first; an unfinished last line is dropped. */
        cl->eof = true;
        client_read_update(cl);
        return;
    }
    cl->in_len += (size_t)nread;
    client_process(cl);
    client_read_update(cl);
}

/* The fast lane (see struct control): a reading client's socket is in the
 * lane's epoll set too; epoll_ctl failures only cost the lane, libuv still
 * reads the client. */
static void client_lane(struct ctl_client *cl, bool on)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = cl};
    int fd = -1;

    if (cl->ctl->lane_fd >= 0 && uv_fileno((uv_handle_t *)&cl->pipe, &fd) == 0)
        epoll_ctl(cl->ctl->lane_fd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, fd, &ev);
}

/* Read what reading clients sent and answer it now. Only data is taken
 * here; EOF and errors are left to libuv's own read, which then finds the
 * socket empty or closed as usual. */
static int control_lane_serve(struct control *ctl)
{
    struct epoll_event ev[16];
    int n, served = 0;

    if (ctl->in_lane || ctl->lane_fd < 0)
        return 0;
    ctl->in_lane = true;
    n = epoll_wait(ctl->lane_fd, ev, 16, 0);
    for (int i = 0; i < n; i++) {
        struct ctl_client *cl = ev[i].data.ptr; /* freed only after its close */
        uv_buf_t buf;
        ssize_t r;
        int fd;

        if (cl->closing || !cl->reading || uv_fileno((uv_handle_t *)&cl->pipe, &fd) != 0)
            continue;
        client_alloc_cb((uv_handle_t *)&cl->pipe, 0, &buf);
        if (!buf.base)
            continue;
        r = recv(fd, buf.base, buf.len, MSG_DONTWAIT);
        if (r > 0) {
            served++;
            client_read_cb((uv_stream_t *)&cl->pipe, r, &buf);
        }
    }
    ctl->in_lane = false;
    return served;
}

/* How much busy time after a look at the lane the next one is due: sooner
 * when it found requests, since a client that gets its reply often sends
 * the next request at once. */
static uint64_t control_lane_step(int served)
{
    return (served ? CTL_LANE_AGAIN_US : CTL_LANE_BUSY_US) * (uint64_t)1000;
}

/* Before each poll phase. Under load a poll phase serves every busy
 * connection first (epoll reports the sockets that stayed readable ahead
 * of the ones that became readable), so without this a request waits for
 * the turn in progress and then for the whole next one. */
static void control_lane_cb(uv_prepare_t *h)
{
    struct control *ctl = h->data;
    struct loop *lp = ctl->lp;
    int served = 0;

    /* After a short poll phase nothing waited long: save the system call. */
    if (lp->poll_busy_ns >= lp->lane_at_ns)
        served = control_lane_serve(ctl);
    lp->poll_start_idle_ns = uv_metrics_idle_time(&lp->uv);
    lp->poll_start_ns = uv_hrtime();
    lp->lane_at_ns = control_lane_step(served);
    lp->lane_due_ns = 0;
}

void control_lane_tick(struct control *ctl)
{
    struct loop *lp = ctl->lp;
    uint64_t now = uv_hrtime(), busy, step, end;

    if (!lp->poll_start_ns) {
        lp->lane_due_ns = now + control_lane_step(0); /* no phase measured yet */
        return;
    }
    busy = loop_poll_busy_ns(lp, now);
    if (busy < lp->lane_at_ns) {
        lp->lane_due_ns = now + (lp->lane_at_ns - busy);
        return;
    }
    step = control_lane_step(control_lane_serve(ctl));
    /* What the requests took is busy time too (nothing idles inside a
     * callback): the next look is a step after they ended. */
    end = uv_hrtime();
    lp->lane_at_ns = busy + (end - now) + step;
    lp->lane_due_ns = end + step;
}

/* Read requests only while the client takes its replies and none of its
 * replies is being made in parts. */
static void client_read_update(struct ctl_client *cl)
{
    bool want = !cl->closing && !cl->ctl->stopping && !cl->job &&
                cl->out_pending <= CTL_OUT_PAUSE;

    if (want && cl->in_len > cl->scanned) {
        client_process(cl); /* lines held while paused */
        want = !cl->closing && !cl->job && cl->out_pending <= CTL_OUT_PAUSE;
    }
    if (cl->eof && !cl->closing) {
        /* Done once every held line is answered and written. */
        if (cl->in_len == cl->scanned && !cl->out_pending && !cl->job)
            control_client_close(cl);
        want = false;
    }
    if (cl->closing || want == cl->reading)
        return;
    if (want)
        uv_read_start((uv_stream_t *)&cl->pipe, client_alloc_cb, client_read_cb);
    else
        uv_read_stop((uv_stream_t *)&cl->pipe);
    client_lane(cl, want);
    cl->reading = want;
}

static enum ctl_role client_role(struct control *ctl, uid_t uid)
{
    const struct config *cfg = ctl->lp->cfg;

    if (uid == 0 || uid == geteuid())
        return CTL_ROLE_ADMIN;
    if (!cfg->n_admin_uids && !cfg->n_readonly_uids)
        return CTL_ROLE_ADMIN; /* no roles configured: the socket mode decides */
    for (size_t i = 0; i < cfg->n_admin_uids; i++)
        if (cfg->admin_uids[i] == uid)
            return CTL_ROLE_ADMIN;
    for (size_t i = 0; i < cfg->n_readonly_uids; i++)
        if (cfg->readonly_uids[i] == uid)
            return CTL_ROLE_READONLY;
    return CTL_ROLE_NONE;
}

static void client_new(struct control *ctl, int fd)
{
    struct ctl_client *cl = calloc(1, sizeof(*cl));
    struct ucred cred = {.pid = 0, .uid = (uid_t)-1};
    socklen_t len = sizeof(cred);

    if (!cl || uv_pipe_init(&ctl->lp->uv, &cl->pipe, 0) < 0) {
        free(cl);
        close(fd);
        return;
    }
    cl->pipe.data = cl;
    cl->ctl = ctl;
    ctl->handles++; /* the control struct outlives its clients */
    list_init(&cl->sub_link);
    list_init(&cl->job_link);
    list_add_tail(&ctl->clients, &cl->link);
    ctl->n_clients++;
    if (uv_pipe_open(&cl->pipe, fd) < 0) {
        close(fd);
        control_client_close(cl);
        return;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        cl->uid = cred.uid;
        cl->pid = cred.pid;
    }
    cl->role = client_role(ctl, cl->uid);
    log_debug("control: client pid %d uid %d connected", (int)cl->pid, (int)cl->uid);
    client_read_update(cl);
}

/* ---- server ------------------------------------------------------------ */

static void control_accept_cb(uv_poll_t *h, int status, int events)
{
    struct control *ctl = h->data;

    (void)events;
    if (status < 0)
        return;
    for (int i = 0; i < 16; i++) {
        int fd = accept4(ctl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE) && ctl->spare_fd >= 0) {
            /* Out of descriptors: spend the spare on this client. */
            close(ctl->spare_fd);
            ctl->spare_fd = -1;
            fd = accept4(ctl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        }
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                /* Still readable, still no fd: stop watching rather than
                 * spin; the stall timer tries again within a second. */
                log_warn("control: accept: %s: pausing for a second", strerror(errno));
                uv_poll_stop(&ctl->poll);
                ctl->accept_paused = true;
            } else if (errno != EAGAIN) {
                log_warn("control: accept: %s", strerror(errno));
            }
            return;
        }
        client_new(ctl, fd);
        if (ctl->spare_fd < 0)
            ctl->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
}

static void control_stall_cb(uv_timer_t *t)
{
    struct control *ctl = t->data;
    uint64_t now = uv_now(&ctl->lp->uv);
    /* While stopping, the last replies get a short grace period only. */
    uint64_t limit = ctl->stopping ? CTL_STOP_GRACE_MS : CTL_STALL_MS;

    if (ctl->accept_paused && !ctl->stopping) {
        if (ctl->spare_fd < 0)
            ctl->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        ctl->accept_paused = false;
        uv_poll_start(&ctl->poll, UV_READABLE, control_accept_cb);
    }
    for (struct list *n = ctl->clients.next, *next; n != &ctl->clients; n = next) {
        struct ctl_client *cl = container_of(n, struct ctl_client, link);
        next = n->next;
        if (cl->out_pending && cl->stalled_since && now - cl->stalled_since >= limit) {
            log_warn("control: client pid %d uid %d reads no replies (%zu bytes waiting), "
                     "dropped",
                     (int)cl->pid, (int)cl->uid, cl->out_pending);
            control_client_close(cl);
        }
    }
}

/* Make the listening socket: refuse when a live daemon answers at the path,
 * replace a stale socket file, and bind under a umask so the socket never
 * exists with a wider mode than configured. */
static int control_socket(const char *path, mode_t mode)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    struct stat st;
    mode_t old;
    int fd, rc;

    if (strlen(path) >= sizeof(sun.sun_path)) {
        log_err("control: %s: path longer than %zu bytes", path, sizeof(sun.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            log_err("control: %s: exists and is not a socket", path);
            return -EEXIST;
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 ? 0 : -errno;
        close(fd);
        if (rc == 0) {
            log_err("control: %s: another connd is answering there", path);
            return -EADDRINUSE;
        }
        if (rc != -ECONNREFUSED) {
            log_err("control: %s: %s", path, strerror(-rc));
            return rc;
        }
        log_notice("control: %s: replacing a stale socket", path);
        unlink(path);
    }
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        return -errno;
    old = umask(~mode & 0777);
    rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 ? 0 : -errno;
    umask(old);
    if (rc == 0 && chmod(path, mode) < 0)
        rc = -errno;
    if (rc == 0 && listen(fd, SOMAXCONN) < 0)
        rc = -errno;
    if (rc < 0) {
        log_err("control: %s: %s", path, strerror(-rc));
        close(fd);
        return rc;
    }
    return fd;
}

static void control_handle_closed_cb(uv_handle_t *h)
{
    control_unref(h->data);
}

int control_start(struct loop *lp)
{
    struct control *ctl = calloc(1, sizeof(*ctl));
    int fd;

    if (!ctl || !(ctl->path = strdup(lp->cfg->control_path))) {
        free(ctl);
        return -ENOMEM;
    }
    if ((fd = control_socket(ctl->path, lp->cfg->control_mode)) < 0) {
        free(ctl->path);
        free(ctl);
        return fd;
    }
    ctl->lp = lp;
    ctl->fd = fd;
    ctl->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    list_init(&ctl->clients);
    list_init(&ctl->subscribers);
    list_init(&ctl->jobs);
    uv_poll_init_socket(&lp->uv, &ctl->poll, fd);
    uv_timer_init(&lp->uv, &ctl->stall_timer);
    uv_idle_init(&lp->uv, &ctl->job_idle);
    uv_prepare_init(&lp->uv, &ctl->lane);
    ctl->poll.data = ctl->stall_timer.data = ctl->job_idle.data = ctl->lane.data = ctl;
    ctl->handles = 4;
    ctl->jobs_ok = true;
    if ((ctl->lane_fd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        log_warn("control: epoll_create1: %s (no fast lane: requests wait their turn)",
                 strerror(errno));
    } else {
        uv_prepare_start(&ctl->lane, control_lane_cb);
        uv_unref((uv_handle_t *)&ctl->lane);
    }
    uv_poll_start(&ctl->poll, UV_READABLE, control_accept_cb);
    uv_timer_start(&ctl->stall_timer, control_stall_cb, 1000, 1000);
    uv_unref((uv_handle_t *)&ctl->stall_timer);
    lp->ctl = ctl;
    log_notice("control: listening on %s (mode %04o)", ctl->path,
               (unsigned)lp->cfg->control_mode);
    return 0;
}

void control_stop(struct control *ctl)
{
    if (!ctl)
        return;
    ctl->lp->ctl = NULL;
    ctl->stopping = true;
    ctl->jobs_ok = false;
    /* Clients go once their last reply is written (daemon.shutdown's own
     * reply among them), or after a short grace period. A reply still
     * being made in parts is finished now: no more turns are promised. */
    for (struct list *n = ctl->clients.next, *next; n != &ctl->clients; n = next) {
        struct ctl_client *cl = container_of(n, struct ctl_client, link);
        next = n->next;
        client_job_step(cl, 0);
        if (cl->closing)
            continue;
        if (cl->out_pending) {
            if (cl->reading)
                uv_read_stop((uv_stream_t *)&cl->pipe);
            cl->reading = false;
        } else {
            control_client_close(cl);
        }
    }
    uv_close((uv_handle_t *)&ctl->poll, control_handle_closed_cb);
    uv_close((uv_handle_t *)&ctl->job_idle, control_handle_closed_cb);
    uv_close((uv_handle_t *)&ctl->lane, control_handle_closed_cb);
    ctl->lp->poll_start_ns = 0;
    if (ctl->lane_fd >= 0)
        close(ctl->lane_fd);
    ctl->lane_fd = -1;
    if (ctl->n_clients == 0)
        uv_close((uv_handle_t *)&ctl->stall_timer, control_handle_closed_cb);
    else
        uv_ref((uv_handle_t *)&ctl->stall_timer);
    close(ctl->fd);
    if (ctl->spare_fd >= 0)
        close(ctl->spare_fd);
    unlink(ctl->path);
}
