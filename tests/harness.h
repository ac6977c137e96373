/*
 * harness.h: helpers for tests that drive a real connd over real sockets:
 * start the daemon on a config, capture its log, find its ports, and do
 * bounded blocking I/O on 127.0.0.1 / ::1. Every wait has a timeout.
 */
#ifndef CONND_TEST_HARNESS_H
#define CONND_TEST_HARNESS_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

/* A suite's main(): run every test of s with CK_NORMAL output (Check's
 * fork mode and each TCase's timeout apply), free the runner, and return
 * EXIT_SUCCESS when no test failed, else EXIT_FAILURE. */
int run_suite(Suite *s);

struct daemon {
    pid_t pid;
    int err_fd; /* read end of the daemon's stderr */
    char *log;  /* everything it logged so far, NUL-terminated */
    size_t log_len, log_cap;
    size_t log_mark; /* daemon_wait_log searches from here */
    char dir[64];    /* private temp directory */
    char cfg_path[96];
    char ctl_path[96]; /* control socket: -s DIR/control.sock unless configured */
    char wrapper[256]; /* $CONND_TEST_WRAPPER, split into argv in place */
    int status; /* wait status once exited, else -1 */
};

/*
 * Write config_json to a temp file and start connd on it with --log-level
 * debug plus extra_args (NULL-terminated list, may be NULL). In the JSON,
 * "@PLUGINS@" becomes the bundled plugins' build dir, "@TPLUGINS@" the test
 * plugins' dir and "@DIR@" the private temp dir. Waits up to 10 s for the
 * "ready" line. Returns 0 when ready, -1 when it exited or timed out
 * (d->log then says why).
 */
int daemon_start(struct daemon *d, const char *config_json, const char *const *extra_args);

/* As daemon_start, with connd run by the command `prefix` (NULL-terminated
 * argv, e.g. systemd-socket-activate and its options), looked up in PATH. */
int daemon_start_cmd(struct daemon *d, const char *config_json, const char *const *prefix,
                     const char *const *extra_args);

/* As daemon_start_cmd without waiting for "ready" (wait with
 * daemon_wait_log(d, "notice: ready:", ms)). */
int daemon_spawn(struct daemon *d, const char *config_json, const char *const *prefix,
                 const char *const *extra_args);

/* (Re)write d->cfg_path from config_json, with the placeholders of
 * daemon_start expanded ("@DIR@" is d->dir); a running daemon reads it on
 * SIGHUP or daemon.reload. 0 or -errno. */
int daemon_write_config(const struct daemon *d, const char *config_json);

/* Run connd on config_json until it exits (timeout_ms bound); returns its
 * exit code (or -1 on timeout/signal); *log_out (if not NULL) is the log,
 * malloc'd. */
int daemon_run(const char *config_json, const char *const *extra_args, int timeout_ms,
               char **log_out);

/* Read the daemon's stderr until `needle` appears after the mark (the mark
 * moves past it) or timeout_ms passes. Returns true when found. */
bool daemon_wait_log(struct daemon *d, const char *needle, int timeout_ms);
/* Read whatever the daemon logged in the next `ms` milliseconds. */
void daemon_drain_log(struct daemon *d, int ms);
/* Count occurrences of needle in the whole log. */
int daemon_count_log(struct daemon *d, const char *needle);
/* The port listener `name` is bound to, from its "listening on" line. */
int daemon_port(struct daemon *d, const char *name);
/* Send sig and wait up to timeout_ms for exit; returns the exit code, or
 * -1 on timeout (then it is killed) or death by a signal. */
int daemon_stop(struct daemon *d, int sig, int timeout_ms);
/* Resident set size of the daemon in KiB, or -1. */
long daemon_rss_kb(const struct daemon *d);
/* For a failed check, before Check ends the test with _exit (so no
 * teardown runs): while d runs, read what it logs for drain_ms more; print
 * the last tail_bytes of its log to stderr; SIGKILL and reap it; remove its
 * temp dir. d->log stays readable for the failure message. */
void daemon_fail_now(struct daemon *d, int drain_ms, size_t tail_bytes);
/* Free everything and remove the temp dir; kills the daemon if alive. */
void daemon_free(struct daemon *d);

/* A blocking connection to the daemon's control socket (d->ctl_path),
 * reads and writes time out after 10 s; -1 on failure. */
int ctl_connect(const struct daemon *d);
/* Read one line (without its newline) within timeout_ms; malloc'd, or
 * NULL on timeout, EOF or error. */
char *ctl_read_line(int fd, int timeout_ms);
/* Send request (one JSON object, no newline) and return the first reply
 * line that is not an event notification, parsed; NULL on failure. Event
 * lines read meanwhile are dropped. The caller json_decref()s the reply. */
struct json_t *ctl_call(int fd, const char *request);
/* As ctl_call, built from a printf format. */
struct json_t *ctl_callf(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The result of method(params) on control connection fd (params NULL:
 * {}); a missing reply or an error reply fails the test. The caller
 * json_decref()s it. */
struct json_t *ctl_result_on(int fd, const char *method, const char *params);
/* relay(): conn.show's "relay" of connection id on d (the partner's id, 0
 * for null), and status.spliced_bytes; each on a control connection of
 * its own. */
long long ctl_relay_of(const struct daemon *d, long long id);
long long ctl_spliced_bytes(const struct daemon *d);

/* What ctl_flood_status() saw. */
struct ctl_flood {
    int answered;    /* got the status reply for its own id, with d's pid */
    int refused;     /* connect or send refused, or closed without a reply */
    int pending;     /* got neither within the timeout */
    char error[256]; /* why the flood stopped early (a client saw something
                      * no client may see); "" when it ran to the end */
};

/* Open n non-blocking connections to d's control socket at once (n must
 * fit under RLIMIT_NOFILE), each sending one {"method":"status"} request
 * with id i+1, then poll them all (200 ms steps, reading d's log between
 * them) until each has a whole reply line or is closed, for at most
 * timeout_ms. A connect or send may fail only with EAGAIN, ECONNREFUSED,
 * EPIPE or ECONNRESET, and a reply must be that client's status: anything
 * else stops the flood with f->error set. Every connection is closed on
 * return. Returns false when f->error is set. */
bool ctl_flood_status(struct daemon *d, int n, int timeout_ms, struct ctl_flood *f);

/* Send {"method":"rpc.methods"} request lines (all id 1) on the control
 * connection fd, back to back and never reading a reply, until the daemon
 * stops reading (fd not writable for 500 ms), max_bytes are sent, or
 * timeout_ms pass. *sent gets the bytes sent. 0, or -errno of a send that
 * failed with anything but EAGAIN. */
int ctl_flood_unread(int fd, size_t max_bytes, int timeout_ms, size_t *sent);

/* A connected blocking TCP socket to host:port (5 s connect bound), -1 on
 * failure. Reads and writes on it time out after 10 s. */
int tcp_connect(const char *host, int port);
/* Write all; 0 or -errno. */
int io_write_all(int fd, const void *buf, size_t len);
/* Read exactly len bytes; 0, -errno, or -EPIPE on an early EOF. */
int io_read_exact(int fd, void *buf, size_t len);
/* Expect EOF within timeout_ms: 1 on EOF, 0 if data came instead (it is
 * discarded), -errno on error (e.g. -ECONNRESET). */
int io_expect_eof(int fd, int timeout_ms);
/* Read and discard what arrives on fd until EOF or a read error other
 * than EAGAIN (true: the peer is gone), or timeout_ms pass (false); polls
 * in 500 ms steps, so it may overrun by that much. */
bool io_drain_until_eof(int fd, int timeout_ms);
/* Whether fd becomes readable within timeout_ms. */
bool io_readable(int fd, int timeout_ms);
/* Fill buf with reproducible pseudo-random bytes from seed. */
void fill_random(void *buf, size_t len, uint64_t seed);
/* Monotonic milliseconds. */
uint64_t now_ms(void);

/* ---- sizes, build flavour, test data ---- */

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

/* UNDER_ASAN is 1 when this test (and so the daemon, built with the same
 * flags) runs under AddressSanitizer, whose shadow memory and quarantine
 * inflate RSS and slow everything down; 0 otherwise. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* len bytes of fill_random(seed), malloc'd (at least 1 byte, so len 0 is
 * fine); fails the test (Check) when out of memory. The caller frees. */
uint8_t *random_bytes(size_t len, uint64_t seed);

/* Wait until needle occurs at least `count` times in d's whole log (not
 * just after the mark, which does not move), reading the log in 50 ms
 * steps for up to timeout_ms. False on timeout, or once the daemon's
 * stderr is closed and the count is still short. */
bool daemon_wait_log_count(struct daemon *d, const char *needle, int count,
                           int timeout_ms);

/* ---- small socket helpers ---- */

/* Set fd's SO_RCVBUF and SO_SNDBUF to `bytes`, so the kernel cannot absorb
 * a test's whole payload and hide what the daemon does; fails the test
 * (Check) if either setsockopt fails. On a listening socket the sizes are
 * inherited by the sockets it accepts. */
void tcp_small_buffers(int fd, int bytes);
/* Close fd with SO_LINGER 0, so the peer gets a RST instead of a FIN. */
void tcp_close_reset(int fd);
/* Whether writing msg (strlen below 256) to fd brings the same bytes back,
 * with the blocking io_write_all/io_read_exact (so bounded by fd's
 * SO_SNDTIMEO/SO_RCVTIMEO: 10 s from tcp_connect). */
bool io_echoes(int fd, const char *msg);

/* ---- peers: poll-driven, non-blocking clients with byte checks ----
 *
 * A peer is one non-blocking socket with bytes to send (tx) and bytes
 * expected back in order (want), or, with `keep` set instead of want,
 * a buffer that takes whatever arrives. io_pump() drives several peers at
 * once with poll(2), sending and receiving together, so a test cannot
 * deadlock on full socket buffers; every pump has a deadline. The first
 * wrong or extra byte, EOF, or a send/recv error ends a peer. */
struct io_peer {
    const char *name;  /* for failure messages; borrowed */
    int fd;            /* non-blocking; the caller closes it */
    const uint8_t *tx; /* bytes to send; borrowed */
    size_t tx_len, sent;
    bool shut_wr; /* shutdown(SHUT_WR) once everything is sent */
    bool shut_done;
    const uint8_t *want; /* bytes expected, in order; borrowed */
    size_t want_len, got;
    bool want_eof; /* EOF must follow the last expected byte */
    bool eof;
    uint8_t *keep; /* without want: everything received goes here */
    size_t keep_cap;
    /* A slow reader: after each rx_burst bytes, nothing is read for
     * rx_pause_ms. 0: read whenever there is something. */
    size_t rx_burst, burst_got;
    int rx_pause_ms;
    uint64_t rx_resume_ms;
    size_t bad_at; /* offset of the first wrong (or extra) byte; SIZE_MAX: none */
    int err;       /* -errno of a failed send/recv */
};

/* Peak RSS of a daemon, sampled at most every 10 ms while pumping. */
struct rss_watch {
    const struct daemon *d;
    long base_kb, peak_kb;
    uint64_t next_ms;
};

/* Zero *p and set it up to send tx and expect want (either may be NULL
 * with length 0). Nothing is sent or read until a pump. */
void io_peer_init(struct io_peer *p, const char *name, int fd, const uint8_t *tx,
                  size_t tx_len, const uint8_t *want, size_t want_len);
/* Whether p is done: an error, a wrong byte or EOF; or (without keep)
 * everything sent (and shut down when shut_wr) and everything expected
 * received, when no EOF is wanted. */
bool io_peer_finished(const struct io_peer *p);
/* Send what the kernel takes now, in pieces of at most 256 KiB, never
 * blocking; then shutdown(SHUT_WR) when shut_wr and all is sent. Returns
 * the bytes sent by this call. */
size_t io_peer_send(struct io_peer *p);
/* Read what is there now (within a slow reader's budget), never blocking,
 * and check it against want (or store it in keep). */
void io_peer_recv(struct io_peer *p);
/* Drive every peer (send and receive at once, poll steps of 10 ms) until
 * each has finished or timeout_ms passes; samples w (may be NULL) on the
 * way. Returns the number of peers that finished. */
size_t io_pump(struct io_peer *ps, size_t n, int timeout_ms, struct rss_watch *w);
/* Send without reading until everything is sent, the kernel has taken
 * nothing for stall_ms, or timeout_ms passes (poll steps of 20 ms);
 * samples w (may be NULL). Returns p->sent. */
size_t io_pump_send_only(struct io_peer *p, int stall_ms, int timeout_ms,
                         struct rss_watch *w);
/* Fail the test (Check) unless p sent everything without error, got every
 * expected byte right, and (with want_eof) saw EOF after the last. */
void io_peer_assert_ok(const struct io_peer *p);

/* Start watching d: base and peak are its RSS now, which must be known
 * (fails the test otherwise). */
void rss_watch_begin(struct rss_watch *w, const struct daemon *d);
/* Raise w's peak to d's RSS now, unless sampled less than 10 ms ago (or w
 * is NULL). */
void rss_watch_sample(struct rss_watch *w);

/* ---- /proc views of a process (pid 0: this process) ---- */

/* Raise this process's RLIMIT_NOFILE soft limit to want (at most the hard
 * limit) when it is lower; children started later inherit it. 0 or -errno. */
int proc_raise_fd_limit(rlim_t want);
/* Set pid's RLIMIT_NOFILE soft limit to n (prlimit(2), the hard limit is
 * kept). 0 or -errno. */
int proc_set_fd_limit(pid_t pid, rlim_t n);
/* Open descriptors of pid (for pid 0, not counting the one used to look). */
int proc_fd_count(pid_t pid);
/* utime + stime of pid in clock ticks, or -1. */
long proc_cpu_ticks(pid_t pid);
/* The RLIMIT_NOFILE soft limit that leaves pid room for exactly `room` more
 * descriptors, or -1. The limit bounds fd numbers, not their count, and a
 * new fd takes the lowest free number: the answer is the (room+1)-th free
 * number, whatever holes or high inherited fds the process has. */
long proc_fd_limit_for_room(pid_t pid, int room);

#endif
