/*
 * client.h: connctl's end of the control socket: connect to the Unix
 * socket, send JSON-RPC 2.0 requests with increasing integer ids, and read
 * reply and event lines of any length. Every wait is bounded except the
 * one watch asks for.
 */
#ifndef CONNCTL_CLIENT_H
#define CONNCTL_CLIENT_H

#include <jansson.h>
#include <signal.h>
#include <stddef.h>

#define CLIENT_LINE_MAX (256u * 1024 * 1024) /* longest line accepted from connd */

struct client {
    const char *path; /* borrowed */
    int fd;           /* -1 until connected */
    int timeout_ms;   /* bound on connecting and on waiting for a reply */
    json_int_t next_id;
    char *buf; /* bytes received and not yet returned as lines */
    size_t len, cap, scanned;
    char err[384]; /* why the last call failed: "cannot connect to PATH: ..." */
};

enum {
    CLIENT_FAIL = -1, /* transport failure or timeout; err says which */
    CLIENT_RESULT = 0,
    CLIENT_ERROR = 1, /* connd answered with an error object */
    CLIENT_INTERRUPTED = 2,
};

/* Set up c for path; nothing is opened yet. */
void client_init(struct client *c, const char *path, int timeout_ms);
/* Close the socket and free the buffer; c can be initialised again. */
void client_close(struct client *c);
/* Send method with params (borrowed, may be NULL; an empty object is
 * omitted) and wait for its reply, connecting first if needed. Event
 * notifications read meanwhile are dropped. Returns CLIENT_RESULT with
 * *out the result, CLIENT_ERROR with *out the error object (new
 * references), or CLIENT_FAIL with c->err set. */
int client_call(struct client *c, const char *method, json_t *params, json_t **out);
/* The next message from connd, parsed, in *msg (a new reference). Waits up
 * to timeout_ms (-1: forever) with sigmask applied while waiting (NULL: the
 * current one). Returns CLIENT_RESULT, CLIENT_INTERRUPTED when a signal
 * arrived, or CLIENT_FAIL with c->err set (EOF included). */
int client_next(struct client *c, int timeout_ms, const sigset_t *sigmask, json_t **msg);

#endif
