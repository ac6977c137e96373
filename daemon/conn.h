/*
 * conn.h: one TCP connection: its state, read buffer, write queue, mute
 * reasons, close sequence and counters. Accepted and outgoing connections
 * are the same struct; an outgoing one starts in CONN_CONNECTING with a
 * connector (connect.c) and becomes CONN_OPEN when an attempt wins.
 */
#ifndef CONND_CONN_H
#define CONND_CONN_H

#include <connd/plugin.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "list.h"

struct loop;
struct listener;
struct plugin;
struct connector;
struct wreq;

enum conn_state {
    CONN_CONNECTING, /* outgoing, no socket yet; writes are queued */
    CONN_OPEN,       /* established */
    CONN_CLOSING,    /* graceful close: draining, FIN, waiting for the peer */
    CONN_CLOSED,     /* uv_close called; closed() fires in the close callback */
};

struct conn {
    uv_tcp_t tcp; /* tcp.data == this */
    struct loop *lp;
    struct list link;         /* loop->conns */
    struct list resume_link;  /* loop->resume: deliver and read on the next turn */
    struct list closing_link; /* loop->closing: graceful closes under the sweep */
    uint64_t id;
    struct plugin *plugin;
    struct listener *listener; /* NULL for outgoing */
    struct connector *cx;      /* while CONN_CONNECTING */
    void *user;
    struct conn_limits lim;

    /* Read buffer: bytes [roff, rlen) are read and not yet delivered. Sizes
     * are 32-bit: max_size and expect are at most 64 MiB (config.c), and
     * the one struct per connection stays within a 512-byte allocation. */
    uint8_t *rbuf;
    uint32_t rcap, rlen, roff;
    uint32_t next_size;  /* grows from init_size to max_size on full reads */
    uint32_t expect;     /* 0: deliver what is read */
    uint32_t turn;       /* loop turn the counters below belong to */
    uint32_t turn_bytes; /* below 2 * max_size: checked before each read */
    unsigned times;

    /* Write side. */
    size_t pending;         /* bytes accepted and not yet in the kernel */
    struct wreq *pre_last;  /* writes made before the connection was up, a
                               circular list: pre_last->next is the first */

    uint64_t deadline;  /* graceful close: abort when no progress by then */
    size_t close_left;  /* graceful close: bytes still leaving at the last sweep */

    uint64_t bytes_in, bytes_out;
    uint64_t created_ms;     /* wall clock */
    uint64_t last_active_ms; /* loop clock (uv_now) of the last read or write */
    const char *why;         /* why it is closing: a static string */
    /* relay(): the connection this one's bytes may be spliced to, and which
     * splices to this one (always both ways); NULL when not relayed. */
    struct conn *relay;
    uint32_t mute_mask;
    uint8_t state; /* enum conn_state; one byte keeps the struct in 512 */

    bool reading : 1;        /* uv_read_start is in force */
    bool paused : 1;         /* received() returned false: resume next turn */
    bool in_deliver : 1;
    bool in_sent : 1;
    bool in_expect : 1;
    bool throttled : 1;
    bool rdhup_watched : 1;
    bool close_requested : 1; /* close() while connecting */
    bool shutdown_done : 1;   /* our FIN is sent */
    bool peer_eof : 1;
    bool wait_outq : 1;       /* muted close: waiting for the peer's ACKs */
    bool announced : 1;       /* the plugin has seen it: closed() is owed */
    bool wr_shut : 1;         /* shutdown() asked: no more writes */
    bool fin_seen : 1;        /* muted: the peer's FIN waits behind unread input */
    bool watch_errors : 1;    /* the peer-close watch asks only for errors */
    bool watch_done : 1;      /* both directions shut: nothing left to watch */
    bool yielding : 1;        /* alloc_cb gave an empty buffer to end the turn */
    bool splicing : 1;        /* alloc_cb gave an empty buffer to splice instead */
    bool read_next : 1;       /* relayed: read the next bytes, do not splice */
};

/* struct conn is what plugins see as struct connd_conn. */
static inline struct conn *conn_of(struct connd_conn *c)
{
    return (struct conn *)c;
}
static inline struct connd_conn *conn_pub(struct conn *c)
{
    return (struct connd_conn *)c;
}

/* Take the accepted socket fd (closed on failure) for listener l. Fires
 * accepted() and starts reading. Returns 0 or a negative errno. */
int conn_accept(struct loop *lp, struct listener *l, struct plugin *p, int fd);

/* A new outgoing connection in CONN_CONNECTING, owned by p, not yet
 * connecting (connect.c drives it). Returns 0 or a negative errno. */
int conn_new_outgoing(struct loop *lp, struct plugin *p, const struct conn_limits *lim,
                      void *user, struct conn **out);
/* connect.c: the winning socket fd is taken; the connection goes live. */
void conn_connected(struct conn *c, int fd);
/* connect.c: every attempt failed; fires connect_failed() then closed(). */
void conn_connect_failed(struct conn *c, const char *reason);

/* Host functions (see connd/plugin.h for their contracts). */
int conn_write(struct conn *c, const void *data, size_t len);
/* A control-socket write: bypasses sent(), always queued, and reported by
 * a sent or send_failed event carrying `token` once libuv is done. */
int conn_write_token(struct conn *c, const void *data, size_t len, uint64_t token);
int conn_writev(struct conn *c, const struct iovec *iov, int n);
int conn_mute(struct conn *c, uint32_t bit);
int conn_unmute(struct conn *c, uint32_t bit);
int conn_expect(struct conn *c, size_t qty);
/* `reason` must be a static string: it is kept for the closed event. */
int conn_close(struct conn *c, const char *reason);
/* Half-close: drain, FIN, keep reading; see connd_host.shutdown. */
int conn_shutdown(struct conn *c);
int conn_abort(struct conn *c, const char *reason);
/* "connecting", "open", "closing" or "closed". */
const char *conn_state_name(const struct conn *c);
int conn_set_notify(struct conn *c, struct plugin *p);
int conn_fd(const struct conn *c);

/* For relay.c: start a turn's counters if the loop has moved on; hand
 * buffered bytes to the plugin; end the connection on a socket error. */
void conn_turn(struct conn *c);
void conn_deliver(struct conn *c);
void conn_fail(struct conn *c, const char *what, int err);

/* Loop hooks. */
void conn_resume(struct conn *c);                      /* from the resume idle */
void conn_closing_check(struct conn *c, uint64_t now); /* from the sweep */
void conn_peer_hup(struct conn *c, uint32_t events);   /* from the rdhup watcher */
/* Shutdown deadline: close now, with a FIN if every byte is out, else RST.
 * Returns the bytes that were still pending (lost). */
size_t conn_force_close(struct conn *c);

#endif
