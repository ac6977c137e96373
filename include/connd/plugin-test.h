/*
 * connd/plugin-test.h: a fake connd for unit-testing notifier plugins
 * (library connd-plugin-test). No sockets, no loop, no daemon: a test
 * loads a plugin into a `struct cpt_host`, makes fake connections, feeds
 * them events (bytes, EOF, kernel backpressure, connect results, time) and
 * inspects what the plugin did (bytes written, mutes, expect, closes).
 *
 *     struct cpt_host *h = cpt_host_new();
 *     struct connd_plugin *p;
 *     ck_assert_int_eq(cpt_plugin_open(h, "echo", "/path/echo.so", NULL, &p), 0);
 *     struct connd_conn *c = cpt_conn_accept(p, "t");
 *     cpt_conn_receive(c, "hi", 2);
 *     ck_assert_str_eq(cpt_conn_output(c, NULL), "hi");
 *     cpt_host_free(h);
 *
 * Building: the static library connd-plugin-test is installed next to
 * the header (link with -lconnd-plugin-test -ldl; in connd's tree, link
 * the CMake target connd-plugin-test). It uses libc and libdl only. A
 * plugin under test is either its built .so (cpt_plugin_open) or its
 * `struct connd_notify` compiled into the test (cpt_plugin_load).
 *
 * The host table the plugin gets implements every member of
 * `struct connd_host` with connd's semantics and -errno codes (see
 * connd/plugin.h); where a socket would be involved, this is what stands
 * in for it:
 * - Reading: cpt_conn_receive() is the peer sending bytes. They are
 *   buffered and delivered as connd does: exactly expect() bytes per
 *   received(), or what is buffered (at most max_size) when expect is 0.
 *   Nothing is delivered while the connection is muted; after received()
 *   returns false the rest waits for the next loop turn (cpt_run() or
 *   cpt_advance()) or an unmute()/expect() that resumes it. Each received() gets a
 *   malloc'd copy of exactly `len` bytes, freed when it returns, so ASan
 *   reports a plugin that reads past `len` or keeps `data`.
 * - Writing: the fake kernel takes every write at once while nothing is
 *   pending. cpt_conn_set_pending() pretends bytes are stuck in the send
 *   queue; writes then queue behind them (pending grows) until
 *   cpt_conn_drain(). throttled()/unthrottled() fire at the watermarks and
 *   max_pending refuses writes (-ENOBUFS) exactly as in connd.
 * - Closing: close() drains pending bytes, sends the FIN and waits for
 *   the peer's EOF (cpt_conn_peer_close()) unless muted, bounded by
 *   close_timeout_ms of cpt_advance() time; abort() ends it at once.
 *   After shutdown(), the peer's EOF still reaches peer_closed() (as
 *   plugin.h says), then the connection closes. closed() fires exactly
 *   once, never inside the host call that caused it.
 * - Outgoing connections: connect() makes a connection in CPT_CONNECTING;
 *   the test fetches it (cpt_host_next_outgoing()) and decides with
 *   cpt_conn_connect_ok() or cpt_conn_connect_fail(). Resolution is taken
 *   to give one address: connecting(c, 1) fires before either.
 * - Time is virtual: only cpt_advance() moves it. Timers, connect timeouts
 *   and close timeouts fire from it, in order.
 * - Socket options are remembered (getsockopt of one never set reads int
 *   0). Addresses: an accepted connection is 127.0.0.1:9000 locally and
 *   127.0.0.1:(40000 + id % 20000) remotely; an outgoing one has the
 *   address it connected to (192.0.2.1 for a name) and that local port.
 * - Logs from log()/conn_log() and the host's own lines are kept, one
 *   "<level>message\n" line each (cpt_host_log()); with the environment
 *   variable CPT_LOG set they are also printed to stderr.
 *
 * Event order: every cpt_* call that drives an event runs it, then lets the
 * fake loop settle (deliveries unmute made possible, FINs, closed() calls)
 * before it returns, so a test sees the state connd would reach once idle.
 * Called from inside a plugin callback, the settling waits for the
 * outermost call. A host function a test calls itself (through
 * cpt_host_table()) acts as if called inside a callback: what it makes
 * due (a delivery after unmute(), a FIN, closed() after abort()) happens at
 * the next driving call, cpt_run() if there is none.
 *
 * Ownership and lifetimes:
 * - The host owns every plugin, connection and timer. Connections stay
 *   valid (for the cpt_* functions) until cpt_host_free(), closed ones
 *   included, so a test can inspect them after closed(); a plugin must
 *   still stop using one when its closed() returns, and a host call it
 *   makes on one afterwards is counted by cpt_host_misuse() and logged.
 * - Strings returned by cpt_* functions are owned by the host; each says
 *   until when it stays valid. Strings and buffers passed in are borrowed
 *   for the call (copied when kept).
 * - cpt_host_free() force-closes live connections (closed() fires), stops
 *   timers, runs every plugin's fini() (where, as in connd, connect() is
 *   -ESHUTDOWN and timer_start() NULL) and dlcloses the shared objects.
 *
 * Not thread-safe: one host per thread, like connd's single loop.
 */
#ifndef CONND_PLUGIN_TEST_H
#define CONND_PLUGIN_TEST_H

#include <connd/plugin.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cpt_host; /* opaque: one fake connd */

/* Per-connection limits (connd's listener "limits" block) and the close
 * timeout. Applied to connections made after the change. */
struct cpt_limits {
    size_t max_size;           /* expect() cap, bytes per received(); 16384 */
    size_t high_watermark;     /* throttled above this many pending; 1 MiB */
    size_t low_watermark;      /* unthrottled at or below; 256 KiB */
    size_t max_pending;        /* writes past this are refused; 64 MiB */
    uint64_t close_timeout_ms; /* graceful close without progress; 10000 */
};

enum cpt_state {
    CPT_CONNECTING, /* outgoing, not yet decided */
    CPT_OPEN,       /* established */
    CPT_CLOSING,    /* graceful close: draining, FIN, waiting for the peer */
    CPT_CLOSED,     /* gone; closed() has run */
    CPT_ABORTED,    /* gone with a RST (abort(), or a close that stalled) */
};

/* What a plugin asked connect() for. */
struct cpt_target {
    const char *host, *port;
    /* As passed (zeroed for NULL opts): timeout_ms 0 means connd's 10000.
     * from and plugin are copies, NULL when not given. */
    struct connd_connect_opts opts;
};

/* ---- host ------------------------------------------------------------- */

/* A new fake connd with connd's default limits at time 0; NULL when out
 * of memory. Free with cpt_host_free(). */
struct cpt_host *cpt_host_new(void);
/* Close what is open (closed() fires), stop timers, fini() and unload
 * every plugin, free every connection. NULL is a no-op. */
void cpt_host_free(struct cpt_host *h);
/* The table plugins get, for a test that calls host functions itself.
 * Valid until cpt_host_free(). */
const struct connd_host *cpt_host_table(const struct cpt_host *h);
/* The limits new connections get; change them through the pointer. */
struct cpt_limits *cpt_host_limits(struct cpt_host *h);
/* Everything logged so far, NUL-terminated, "" when nothing. Valid until
 * the next log line or cpt_host_free(). */
const char *cpt_host_log(const struct cpt_host *h);
/* Host calls made on a connection after its closed() returned. */
unsigned cpt_host_misuse(const struct cpt_host *h);
/* The i-th connection made (accepted or outgoing, from 0), or NULL. */
struct connd_conn *cpt_host_conn(const struct cpt_host *h, size_t i);
/* The oldest outgoing connection not yet returned by this function, or
 * NULL when there is none. */
struct connd_conn *cpt_host_next_outgoing(struct cpt_host *h);

/* ---- plugins ------------------------------------------------------------ */

/*
 * Load a plugin instance called `name` from a notify table linked into the
 * test (`name` NULL: nt->name) and run its init() with config_json (NULL:
 * "{}"). The ABI gate is connd's: another abi or a too small size is
 * refused (-EPROTO), and at most nt->size bytes are used. Returns 0 with
 * *out (if not NULL) the instance, or a negative errno: -EEXIST for a name
 * in use, init()'s error (the line logged says why). The instance lives
 * until cpt_host_free().
 */
int cpt_plugin_load(struct cpt_host *h, const char *name, const struct connd_notify *nt,
                    const char *config_json, struct connd_plugin **out);
/* As cpt_plugin_load from a shared object at `path` (dlopen'd with
 * RTLD_NOW | RTLD_LOCAL, then connd_plugin_entry), name NULL: the entry's
 * name. More errors: -ENOENT and the like (file), -ENOEXEC (not loadable,
 * no entry point). */
int cpt_plugin_open(struct cpt_host *h, const char *name, const char *path,
                    const char *config_json, struct connd_plugin **out);
/* What the instance's init() stored in *state. */
void *cpt_plugin_state(const struct connd_plugin *p);

/* ---- time --------------------------------------------------------------- */

/* Move the clock by ms, which is at least one loop turn: first the
 * connections whose received() returned false get their buffered bytes
 * (one that returns false again waits for the next call), then timers,
 * connect timeouts and close timeouts that fall due fire in time order.
 * A timer started with 0 ms inside this call waits for the next one. */
void cpt_advance(struct cpt_host *h, uint64_t ms);
/* One loop turn without time passing: cpt_advance(h, 0). */
void cpt_run(struct cpt_host *h);

/* ---- driving a connection -------------------------------------------------
 * These return 0 or a negative errno: -ENOTCONN when the connection is in
 * no state to have the event (e.g. bytes after it closed, which connd
 * would discard), -EINVAL for a connect result on an established one. */

/* Listener `listener` (NULL: "test") accepted a connection for p:
 * accepted() fires. Returns the connection, NULL when out of memory. */
struct connd_conn *cpt_conn_accept(struct connd_plugin *p, const char *listener);
/* The peer sent len bytes (copied). -EPIPE after cpt_conn_peer_close(). */
int cpt_conn_receive(struct connd_conn *c, const void *data, size_t len);
/* As cpt_conn_receive for a NUL-terminated string. */
int cpt_conn_receive_str(struct connd_conn *c, const char *s);
/* The peer sent EOF. It is seen after the bytes before it: peer_closed()
 * if the plugin has the hook (after unmute, while muted), else a graceful
 * close ("peer closed", at once while muted). */
int cpt_conn_peer_close(struct connd_conn *c);
/* The peer reset the connection: it is gone at once, closed() fires. */
int cpt_conn_peer_reset(struct connd_conn *c);
/* The operator mutes (on) or unmutes c, as `connctl mute` does: the
 * reason "ctl", which plugins may not use. */
int cpt_conn_ctl_mute(struct connd_conn *c, bool on);
/* Pretend `bytes` are queued for the peer and not taken by the kernel
 * (replacing the count); throttled()/unthrottled() fire as in connd.
 * Only for established connections (open or closing). */
int cpt_conn_set_pending(struct connd_conn *c, size_t bytes);
/* The kernel takes up to `bytes` of what is pending (SIZE_MAX: all). */
int cpt_conn_drain(struct connd_conn *c, size_t bytes);
/* The outgoing connection is up: bytes written while connecting are sent
 * and connected() fires (or the close asked meanwhile proceeds). */
int cpt_conn_connect_ok(struct connd_conn *c);
/* Every address failed: connect_failed() then closed(). `why` (NULL: a
 * "connection refused" line) goes to the log and the close reason. */
int cpt_conn_connect_fail(struct connd_conn *c, const char *why);

/* ---- inspecting a connection --------------------------------------------- */

/* Every byte the plugin wrote, after sent(), in order (dropped writes and
 * refused ones excluded), NUL-terminated; *len (if not NULL) its length.
 * Valid until the next write to c, cpt_conn_output_clear() or
 * cpt_host_free(). */
const char *cpt_conn_output(const struct connd_conn *c, size_t *len);
/* Forget the output so far (the next cpt_conn_output starts after it). */
void cpt_conn_output_clear(struct connd_conn *c);
enum cpt_state cpt_conn_state(const struct connd_conn *c);
/* Why it is closing or closed: the plugin's close()/abort() reason, or
 * the host's ("peer closed", "peer reset", "connect failed: ..."); NULL
 * while neither happened. Valid until cpt_host_free(). */
const char *cpt_conn_reason(const struct connd_conn *c);
/* Whether c is muted for `reason` (NULL: for any reason). */
bool cpt_conn_muted(const struct connd_conn *c, const char *reason);
/* The expect() quantity in force; 0 delivers whatever is read. */
size_t cpt_conn_expect(const struct connd_conn *c);
/* Bytes received and not yet delivered to the plugin. */
size_t cpt_conn_buffered(const struct connd_conn *c);
/* Whether our FIN went out (shutdown() or close(), once drained). */
bool cpt_conn_fin_sent(const struct connd_conn *c);
/* The instance owning c (it changes with set_notify()). */
const char *cpt_conn_plugin_name(const struct connd_conn *c);
/* What the owner's show() hook writes (as conn.show, 2048 bytes), or NULL
 * (no hook, nothing, truncated, or closed). Valid until the next call for
 * c or cpt_host_free(). */
const char *cpt_conn_show(struct connd_conn *c);
/* The int value of a socket option the plugin set (set_nodelay,
 * set_keepalive, setsockopt), or -1 if it never set it. */
int cpt_conn_sockopt(const struct connd_conn *c, int level, int name);
/* The connection c is relayed to (relay()), or NULL. The fake checks
 * relay() as connd does but never splices: every byte goes through
 * received(), as in connd whenever a byte cannot be spliced in order, so
 * the plugin's received() must relay too. */
struct connd_conn *cpt_conn_relay(const struct connd_conn *c);
/* What connect() was given for an outgoing c; NULL for an accepted one.
 * Valid until cpt_host_free(). */
const struct cpt_target *cpt_conn_target(const struct connd_conn *c);

#ifdef __cplusplus
}
#endif
#endif /* CONND_PLUGIN_TEST_H */
