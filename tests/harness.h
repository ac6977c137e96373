/*
 * harness.h: helpers for tests that drive a real connd over real sockets:
 * start the daemon on a config, capture its log, find its ports, and do
 * bounded blocking I/O on 127.0.0.1 / ::1. Every wait has a timeout.
 */
#ifndef CONND_TEST_HARNESS_H
#define CONND_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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
/* Whether fd becomes readable within timeout_ms. */
bool io_readable(int fd, int timeout_ms);
/* Fill buf with reproducible pseudo-random bytes from seed. */
void fill_random(void *buf, size_t len, uint64_t seed);
/* Monotonic milliseconds. */
uint64_t now_ms(void);

/* ---- /proc views of a process (pid 0: this process) ---- */

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
