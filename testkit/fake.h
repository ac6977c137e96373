/*
 * fake.h: internals of the plugin test kit, shared by plugin_test.c (the
 * host: plugins, timers, time, the host table, settling, inspection) and
 * conn.c (one fake connection: delivery, write queue, close sequence, the
 * host functions acting on it and the cpt_conn_* calls driving it). Not
 * installed.
 *
 * Extern names start with cpt__: the library is linked into test programs
 * that may also hold connd's own conn_* functions (the daemon core) or a
 * plugin's code.
 */
#ifndef CONND_TESTKIT_FAKE_H
#define CONND_TESTKIT_FAKE_H

#include <connd/plugin-test.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MUTE_REASONS 32    /* connd: LOOP_MAX_MUTE_REASONS */
#define MUTE_REASON_LEN 16 /* connd: LOOP_MUTE_REASON_LEN, NUL included */
#define MUTE_CTL 1u        /* "ctl", registered first: the operator's, not a plugin's */
#define CONNECT_TIMEOUT_MS 10000
#define MAX_OPTS 16
#define OPT_LEN 32

enum state { S_CONNECTING, S_OPEN, S_CLOSING, S_CLOSED };

struct plug {
    uint32_t magic;
    struct plug *next;
    struct cpt_host *h;
    char *name;
    void *dl;               /* NULL for a linked-in table */
    struct connd_notify nt; /* zeroed, then at most nt.size bytes copied */
    void *state;
    bool ready;     /* init() returned 0 */
    bool finishing; /* fini() runs: no new timers or connections */
};

struct timer {
    struct timer *next;
    struct plug *p;
    uint64_t due, repeat, seq, gen;
    void (*cb)(void *arg);
    void *arg;
    bool firing, stopped;
    bool fresh; /* started with 0 ms: not again in the cpt_advance that started it */
};

struct sockopt {
    int level, name;
    socklen_t len;
    unsigned char val[OPT_LEN];
};

struct conn {
    uint32_t magic;
    struct conn *next; /* host->conns, creation order */
    struct cpt_host *h;
    struct plug *p;
    uint64_t id;
    char *listener; /* NULL: outgoing */
    void *user;
    enum state state;
    struct cpt_limits lim;
    uint8_t *in; /* bytes [in_off, in_len) received, not delivered */
    size_t in_len, in_off, in_cap;
    size_t expect;
    unsigned times;
    uint64_t turn;
    char *out; /* everything written, NUL-terminated */
    size_t out_len, out_cap;
    size_t pending, pre_pending; /* pre: queued while connecting */
    uint32_t mute;
    char *reason;
    uint64_t deadline; /* connecting: connect timeout; closing: no progress */
    struct cpt_target target;
    char *show;
    struct conn *relay; /* relay(): the partner, both ways; NULL: none */
    struct sockopt opts[MAX_OPTS];
    int n_opts;
    bool paused; /* received() returned false: held until the next turn */
    bool in_deliver, in_sent, in_expect, throttled;
    bool close_requested; /* close() while connecting with bytes queued */
    bool wr_shut, fin_sent;
    bool eof_pending, peer_eof; /* the peer's EOF: sent by the test, seen */
    bool reset, connecting_fired, closed_fired;
    bool gone; /* closed() returned */
};

struct cpt_host {
    struct plug *plugins;
    struct conn *conns, **conns_tail, *out_cursor;
    struct timer *timers;
    struct cpt_limits lim;
    char reasons[MUTE_REASONS][MUTE_REASON_LEN];
    char *log;
    size_t log_len, log_cap;
    uint64_t now, next_id, seq, gen, turn;
    unsigned depth; /* callbacks running: settling waits for 0 */
    unsigned misuse;
    bool stopping, echo_log;
};

/* Run a plugin callback; settling waits until the outermost returns. */
#define CALL(h, expr)                                                                    \
    do {                                                                                 \
        (h)->depth++;                                                                    \
        expr;                                                                            \
        (h)->depth--;                                                                    \
    } while (0)

#define NOTIFY(c, hook, ...)                                                             \
    do {                                                                                 \
        struct plug *p_ = (c)->p;                                                        \
        if (p_->nt.hook)                                                                 \
            CALL((c)->h, p_->nt.hook(p_->state, conn_pub(c), ##__VA_ARGS__));            \
    } while (0)

static inline struct connd_conn *conn_pub(struct conn *c)
{
    return (struct connd_conn *)c;
}

/* Whether the plugin may still hear about c (anything but closed()). */
static inline bool conn_live(const struct conn *c)
{
    return c->state == S_OPEN || c->state == S_CONNECTING;
}

/* Whether c has a (fake) socket. */
static inline bool conn_established(const struct conn *c)
{
    return c->state == S_OPEN || c->state == S_CLOSING;
}

/* ---- plugin_test.c ---- */
extern const struct connd_host cpt__host_table;
void cpt__host_log(struct cpt_host *h, int level, const char *fmt, ...)
    CONND_PRINTF(3, 4);
/* A driven event starts a new loop turn (times counts from 1 again). */
void cpt__host_begin(struct cpt_host *h);
/* Let every connection do its pending work (deliveries, FINs, closed()),
 * unless a callback is running: then its outermost driver does it. */
void cpt__host_settle(struct cpt_host *h);
/* The bit of a mute reason, registered on first use when `add`; 0 for a
 * bad reason, a full table or (add false) an unknown one. */
uint32_t cpt__host_mute_bit(struct cpt_host *h, const char *reason, bool add);
struct plug *cpt__plug_get(const struct connd_plugin *cp); /* aborts if not ours */
struct plug *cpt__plug_find(struct cpt_host *h, const char *name);

/* ---- conn.c ---- */
struct conn *cpt__conn_get(const struct connd_conn *cc); /* aborts if not ours */
struct conn *cpt__conn_new(struct cpt_host *h, struct plug *p);
void cpt__conn_free(struct conn *c);
/* The end: closed() follows when the host settles. */
void cpt__conn_finish(struct conn *c, bool reset);
/* One connection's pending work; true when something happened. */
bool cpt__conn_step(struct conn *c);
/* Its connect or close deadline passed. */
void cpt__conn_expire(struct conn *c);

/* Host functions on a connection (see connd/plugin.h). */
int cpt__conn_write(struct connd_conn *c, const void *data, size_t len);
int cpt__conn_writev(struct connd_conn *c, const struct iovec *iov, int n);
int cpt__conn_mute(struct connd_conn *c, const char *reason);
int cpt__conn_unmute(struct connd_conn *c, const char *reason);
int cpt__conn_expect(struct connd_conn *c, size_t qty);
int cpt__conn_close(struct connd_conn *c, const char *reason);
int cpt__conn_abort(struct connd_conn *c, const char *reason);
int cpt__conn_shutdown(struct connd_conn *c);
int cpt__conn_relay(struct connd_conn *a, struct connd_conn *b);
int cpt__conn_set_notify(struct connd_conn *c, const char *plugin);
int cpt__conn_set_nodelay(struct connd_conn *c, bool on);
int cpt__conn_set_keepalive(struct connd_conn *c, unsigned secs);
int cpt__conn_getsockopt(struct connd_conn *c, int level, int name, void *val,
                         socklen_t *len);
int cpt__conn_setsockopt(struct connd_conn *c, int level, int name, const void *val,
                         socklen_t len);
int cpt__conn_local_address(struct connd_conn *c, struct sockaddr *sa, socklen_t *len);
int cpt__conn_remote_address(struct connd_conn *c, struct sockaddr *sa, socklen_t *len);
uint64_t cpt__conn_id(const struct connd_conn *c);
void *cpt__conn_get_user(const struct connd_conn *c);
void cpt__conn_set_user(struct connd_conn *c, void *user);
size_t cpt__conn_pending(const struct connd_conn *c);
void cpt__conn_log(struct connd_conn *c, int level, const char *fmt, ...)
    CONND_PRINTF(3, 4);
const char *cpt__conn_listener_name(const struct connd_conn *c);

#endif
