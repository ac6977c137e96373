/*
 * connd/plugin.h: the ABI between connd and its notifier plugins.
 *
 * A plugin is a shared object that exports one function,
 * connd_plugin_entry(), returning a `struct connd_notify`: the callbacks of
 * Pony's TCPConnectionNotify and TCPListenNotify plus init/fini. connd calls
 * the plugin only through that table, and the plugin calls connd only
 * through the `struct connd_host` table it receives in init(). A plugin
 * links against no connd symbol.
 *
 * Threading: every callback and every host function runs on connd's loop
 * thread. Nothing in a callback may block. Host functions may be called
 * from inside any callback (re-entrantly); their effects on reading (mute,
 * expect, close) apply after the current callback returns.
 *
 * Ownership, in one place (repeated next to each member below):
 * - Pointers connd passes into a callback are borrowed: they are valid until
 *   that callback returns. Copy what you keep.
 * - A `struct connd_conn *` stays valid from the first callback that names it
 *   until closed() for it returns. Do not use it after that.
 * - Data passed to write()/writev() is copied or sent before the call
 *   returns; the caller keeps ownership of its buffers.
 * - A buffer returned from sent() through *out is taken by connd and freed
 *   with free() when the kernel has it.
 *
 * ABI policy: CONND_PLUGIN_ABI changes only when old plugins must break.
 * New members are appended to the structs below, never inserted or
 * reordered; connd copies at most `size` bytes of a plugin's connd_notify
 * into a zeroed struct, so hooks a plugin does not know about stay NULL.
 * Host members appended after the first ABI 1 table (marked "since" below)
 * may be missing from an older connd: check with CONND_HOST_HAS(h, member)
 * before calling one. connd_connect_opts grows the same way, by its size.
 */
#ifndef CONND_PLUGIN_H
#define CONND_PLUGIN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CONND_PLUGIN_ABI 1 /* bump only when old plugins must break */

#if defined(__GNUC__)
#define CONND_EXPORT __attribute__((visibility("default")))
#define CONND_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CONND_EXPORT
#define CONND_PRINTF(f, a)
#endif

struct connd_conn;   /* opaque; valid until closed() for it returns */
struct connd_plugin; /* opaque; one loaded plugin instance, valid until fini() */
struct connd_timer;  /* opaque; valid until it fires (one-shot) or is stopped */

/* Log levels, as syslog priorities. */
enum connd_log_level {
    CONND_LOG_ERR = 3,
    CONND_LOG_WARNING = 4,
    CONND_LOG_NOTICE = 5,
    CONND_LOG_INFO = 6,
    CONND_LOG_DEBUG = 7,
};

/* Address families for connect(). */
enum connd_family {
    CONND_FAMILY_ANY = 0, /* Happy Eyeballs (RFC 8305): IPv6 first, 250 ms stagger */
    CONND_FAMILY_IPV4 = 4,
    CONND_FAMILY_IPV6 = 6,
};

/* What sent() did with a write. */
enum connd_sent {
    CONND_SENT_PASS = 0,    /* write the data as given */
    CONND_SENT_DROP = 1,    /* drop this write; nothing is queued */
    CONND_SENT_REPLACE = 2, /* write *out (malloc'd, taken by connd) instead */
};

/* Options of an outgoing connection. Zero-initialise, then set what you need. */
struct connd_connect_opts {
    uint32_t size; /* sizeof(struct connd_connect_opts), or 0: the first layout */
    enum connd_family family;
    const char *from;    /* local address to bind, NULL or "" for any; borrowed */
    const char *plugin;  /* plugin instance name to own the connection; NULL: the caller */
    void *user;          /* initial user data of the new connection */
    uint64_t timeout_ms; /* whole connect, resolution included; 0: 10000 */
    /* Added in the second layout (size >= offsetof(.., limits_of) + its size):
     * take the read and write limits (init_size, max_size, watermarks,
     * max_pending) of this connection, e.g. the accepted one a proxy relays
     * for; NULL: the listener defaults. Borrowed for the call only. */
    const struct connd_conn *limits_of;
};

/*
 * Host functions. The table is owned by connd and valid until the plugin's
 * fini() returns. Functions returning int return 0 (or a count) on success
 * and a negative errno on failure:
 *   -ENOTCONN  the connection is closing or closed (no further writes)
 *   -EPIPE     a write after shutdown()
 *   -ENOBUFS   the write would take pending bytes past max_pending
 *   -EMSGSIZE  one write (all its buffers) of 2 GiB or more
 *   -EINVAL    a bad argument (e.g. expect above max_size, a bad mute reason)
 *   -EBUSY     expect() inside sent() or inside the expect() hook
 *   -ENOMEM    out of memory
 *   -EAGAIN    connect() inside init()
 *   -ESHUTDOWN connect() while connd shuts down, or inside fini()
 */
struct connd_host {
    uint32_t abi;  /* CONND_PLUGIN_ABI of the daemon */
    uint32_t size; /* sizeof(struct connd_host) of the daemon */

    /* Queue bytes for the peer. The bytes are copied (or written to the
     * socket) before the call returns; the caller keeps `data`. sent() runs
     * first and may transform or drop them. A write before the connection is
     * established is queued and sent once it is. Never silently dropped:
     * a refused write returns a negative errno. */
    int (*write)(struct connd_conn *c, const void *data, size_t len);
    /* As write(), for `n` buffers in order (n <= 1024); sent() runs on each. */
    int (*writev)(struct connd_conn *c, const struct iovec *iov, int n);

    /* Stop reading for `reason` (a name of at most 15 bytes, borrowed; NULL
     * means "plugin"). Reasons are independent: the connection reads again
     * only when every reason has been lifted. Muting for a reason already in
     * force is a no-op. A muted connection still notices the peer's close.
     * "ctl" is the operator's (connctl mute) and refused here. Returns 0,
     * -ENOTCONN, or -EINVAL for a bad, reserved or 33rd distinct reason. */
    int (*mute)(struct connd_conn *c, const char *reason);
    int (*unmute)(struct connd_conn *c, const char *reason);

    /* Deliver exactly `qty` bytes per received() from now on; 0 delivers
     * whatever is read. The notify's expect() hook may change `qty` first.
     * Returns the quantity in force, or -EINVAL when it exceeds max_size
     * (the previous quantity stays). Ignored (returns -EBUSY) inside sent(). */
    int (*expect)(struct connd_conn *c, size_t qty);

    /* Graceful close: no new writes, every queued byte is delivered, then
     * FIN, then (unless muted) a bounded wait for the peer's EOF. `reason`
     * is logged; borrowed. closed() fires later, exactly once. */
    int (*close)(struct connd_conn *c, const char *reason);
    /* Hard close: queued bytes are dropped and the peer gets a RST. */
    int (*abort)(struct connd_conn *c, const char *reason);

    /* Hand the connection to the loaded plugin instance `plugin`. Its
     * callbacks fire from the next event on (inside received(), bytes still
     * buffered go to the new plugin). The user data is reset to NULL: free
     * yours before the call. Returns 0, -ENOENT or -ENOTCONN. */
    int (*set_notify)(struct connd_conn *c, const char *plugin);

    int (*set_nodelay)(struct connd_conn *c, bool on);
    /* secs 0 disables keepalive. */
    int (*set_keepalive)(struct connd_conn *c, unsigned secs);
    /* getsockopt/setsockopt on the connection's socket; *len in/out. */
    int (*getsockopt)(struct connd_conn *c, int level, int name, void *val,
                      socklen_t *len);
    int (*setsockopt)(struct connd_conn *c, int level, int name, const void *val,
                      socklen_t len);
    /* Socket addresses; *len in/out as for getsockname(2). */
    int (*local_address)(struct connd_conn *c, struct sockaddr *sa, socklen_t *len);
    int (*remote_address)(struct connd_conn *c, struct sockaddr *sa, socklen_t *len);

    /* The connection's id: a positive integer, unique for the daemon's life. */
    uint64_t (*id)(const struct connd_conn *c);
    /* Per-connection pointer for the owning plugin; connd never reads it. */
    void *(*get_user)(const struct connd_conn *c);
    void (*set_user)(struct connd_conn *c, void *user);
    /* Bytes queued for the peer and not yet taken by the kernel. */
    size_t (*pending)(const struct connd_conn *c);

    /* Log one line "plugin <name>: <message>" at `level`. */
    void (*log)(struct connd_plugin *p, int level, const char *fmt, ...)
        CONND_PRINTF(3, 4);
    /* Log one line about a connection: "conn <id>: <message>". */
    void (*conn_log)(struct connd_conn *c, int level, const char *fmt, ...)
        CONND_PRINTF(3, 4);

    /* Open an outgoing connection owned by `p` (or opts->plugin). Callbacks
     * connecting(count), then connected or connect_failed, follow from the
     * loop; on success *out (if not NULL) is the new connection, which may
     * be written to at once (the bytes are queued until it is up).
     * Returns -EAGAIN inside init() and -ESHUTDOWN once connd is stopping. */
    int (*connect)(struct connd_plugin *p, const char *host, const char *port,
                   const struct connd_connect_opts *opts, struct connd_conn **out);

    /* Run cb(arg) after `ms` milliseconds, then every `repeat_ms` if not 0.
     * The timer belongs to `p` and is stopped before its fini(). A one-shot
     * timer is freed after cb returns; timer_stop() frees it at once. */
    /* Returns NULL inside fini(). */
    struct connd_timer *(*timer_start)(struct connd_plugin *p, uint64_t ms,
                                       uint64_t repeat_ms, void (*cb)(void *arg),
                                       void *arg);
    void (*timer_stop)(struct connd_timer *t);

    /* The instance's name as configured ("echo"); valid until fini(). */
    const char *(*plugin_name)(const struct connd_plugin *p);
    /* Name of the listener that accepted c, or NULL for an outgoing one. */
    const char *(*listener_name)(const struct connd_conn *c);

    /* Since the first release: the members below; check CONND_HOST_HAS. */

    /* Half-close: no new writes (-EPIPE), queued bytes are delivered, then
     * FIN; reading and callbacks go on. The connection closes (closed()
     * fires) once the peer's EOF has arrived too, which a plugin with a
     * peer_closed() hook sees first. */
    int (*shutdown)(struct connd_conn *c);

    /* Relay a and b both ways: from now on, bytes read from one may go
     * straight to the other's socket inside the kernel (splice(2) through
     * a pipe), without a copy through user space and without received() on
     * the one or sent() on the other. It is an offer, not a mode: whenever
     * a byte cannot go that way with its order kept (the destination has
     * bytes queued, is closing or shut down, or its plugin has a sent()
     * hook; the source has buffered bytes, expect() in force, or paused)
     * it is read and delivered to received() as before, and so is what the
     * destination's socket does not take at once, and what arrives in small
     * pieces (reads under 8 KiB and under max_size: splicing would cost
     * more than copying). So received() must still write what it gets to
     * the other side, unchanged. Everything else stays as it was: mute
     * stops the source, throttled()/unthrottled() and EOF (peer_closed)
     * fire as usual (only bytes that wait in the queue count towards
     * throttled(), as for a write the kernel takes whole), close drains,
     * abort drops. The relay ends when either starts to close or changes
     * plugin, or with b NULL.
     * Both must belong to the same plugin instance. Returns 0 (also
     * when a and b are already relayed to each other), -EINVAL (a NULL, or
     * a == b), -ENOTCONN (either not open), -EPERM (owned by different
     * plugins: one's bytes would bypass its own), -EBUSY (either relayed
     * to another), or the errno of pipe2(2): the bytes go to received(). */
    int (*relay)(struct connd_conn *a, struct connd_conn *b);
    /* new members go below this line, never above, never reordered */
};

/*
 * The notify table. Every hook may be NULL. `state` is what init() stored;
 * it is passed back to every hook and freed by fini().
 */
struct connd_notify {
    uint32_t abi;     /* CONND_PLUGIN_ABI the plugin was built with */
    uint32_t size;    /* sizeof(struct connd_notify) the plugin was built with */
    const char *name; /* a short name for logs; static storage */

    /* Create the instance. `config_json` is the instance's "config" object
     * serialised as JSON text ("{}" when absent), borrowed for the call.
     * `self` names the instance in host calls and stays valid until fini().
     * init() may start timers (stopped if init fails) but not connect
     * (-EAGAIN): connect from a timer instead. Return 0 or a negative errno;
     * on failure fini() is not called and the plugin is refused. */
    int (*init)(const struct connd_host *h, struct connd_plugin *self,
                const char *config_json, void **state);
    /* Free the instance; called once, after its last connection closed. */
    void (*fini)(void *state);

    /* A listener accepted c. */
    void (*accepted)(void *state, struct connd_conn *c);
    /* An outgoing connection is trying `count` addresses. */
    void (*connecting)(void *state, struct connd_conn *c, unsigned count);
    /* An outgoing connection is established. */
    void (*connected)(void *state, struct connd_conn *c);
    /* Every address failed (or timed out); closed() follows. */
    void (*connect_failed)(void *state, struct connd_conn *c);

    /* Bytes from the peer. `data` is borrowed until return: copy what you
     * keep. `times` counts received() calls in this read turn, from 1.
     * Return false to stop reading until a later loop turn. */
    bool (*received)(void *state, struct connd_conn *c, const uint8_t *data,
                     size_t len, unsigned times);
    /* Called by the expect() host function: return the quantity to use. */
    size_t (*expect)(void *state, struct connd_conn *c, size_t qty);
    /* Called for each write before it is queued. Return CONND_SENT_PASS,
     * CONND_SENT_DROP, or CONND_SENT_REPLACE after setting *out and *out_len to
     * a malloc'd buffer that connd takes (freed with free()). `data` is
     * borrowed. A write() made inside sent() is queued as is, without
     * another sent() call. */
    enum connd_sent (*sent)(void *state, struct connd_conn *c, const uint8_t *data,
                            size_t len, uint8_t **out, size_t *out_len);
    /* Pending bytes went above high_watermark (0: any byte could not be
     * written at once). */
    void (*throttled)(void *state, struct connd_conn *c);
    /* Pending bytes dropped to low_watermark or below. */
    void (*unthrottled)(void *state, struct connd_conn *c);
    /* The connection is gone. Fires exactly once per connection, after every
     * other callback; c is valid until it returns. */
    void (*closed)(void *state, struct connd_conn *c);

    /* Listener hooks; `listener` is the configured name, borrowed. */
    void (*listening)(void *state, const char *listener);
    void (*not_listening)(void *state, const char *listener);
    void (*listener_closed)(void *state, const char *listener);

    /* Since the first release (an older connd leaves these unused): */

    /* set_notify() handed c to this plugin; called at once, inside the
     * set_notify() call. Set up per-connection state here. */
    void (*adopted)(void *state, struct connd_conn *c);
    /* The peer sent EOF (it will send no more). With this hook set, connd
     * does not close the connection by itself: writes still go out, and
     * the plugin decides (close(), or shutdown() to finish a half-close).
     * Without it, EOF starts a graceful close. While muted, a plugin with
     * this hook sees the EOF only after unmute, in order with the data. */
    void (*peer_closed)(void *state, struct connd_conn *c);
    /* conn.show: write a JSON object describing c into buf (len bytes,
     * NUL-terminated); return its length, or 0 for nothing. */
    int (*show)(void *state, struct connd_conn *c, char *buf, size_t len);
    /* new members go below this line, never above, never reordered */
};

/* Whether host table h has member m (an older connd may not). */
#define CONND_HOST_HAS(h, m)                                                             \
    ((h)->size >= offsetof(struct connd_host, m) + sizeof((h)->m) && (h)->m != NULL)

/* The single symbol a plugin exports. Returns a table of static storage. */
typedef const struct connd_notify *(*connd_plugin_entry_fn)(void);
CONND_EXPORT const struct connd_notify *connd_plugin_entry(void);

#ifdef __cplusplus
}
#endif
#endif /* CONND_PLUGIN_H */
