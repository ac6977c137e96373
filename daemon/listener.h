/*
 * listener.h: a listening socket. connd binds and accepts itself (accept4
 * on a uv_poll watcher) so that pausing is exact: at `limit`, on
 * EMFILE/ENFILE, or by the operator, the watcher stops and new connections
 * wait in the kernel backlog until it resumes.
 */
#ifndef CONND_LISTENER_H
#define CONND_LISTENER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"

struct loop;
struct plugin;

/* Why a listener is not accepting; several may hold at once. */
#define LISTENER_PAUSE_LIMIT (1u << 0)
#define LISTENER_PAUSE_EMFILE (1u << 1)
#define LISTENER_PAUSE_CTL (1u << 2)
#define LISTENER_PAUSE_MAX (1u << 3) /* the daemon-wide max_connections */

#define LISTENER_EMFILE_RETRY_MS 1000

struct listener {
    struct listener *next;
    struct loop *lp;
    char *name;
    char *host, *port; /* as configured, to tell a changed listener on reload */
    struct plugin *plugin;
    unsigned limit;
    struct conn_limits lim;
    int fd;
    uv_poll_t poll;    /* on fd, started while not paused */
    uv_timer_t retry;  /* EMFILE pause */
    bool polling;
    bool closed;       /* stopped for good (shutdown or removal) */
    bool from_ctl;     /* added with listener.add: a reload keeps it */
    unsigned paused;   /* LISTENER_PAUSE_* */
    size_t active;     /* open connections it accepted */
    uint64_t accepted; /* total */
    uint64_t emfile_pauses;
    char local[64];    /* "127.0.0.1:7000" once bound */
    int handles;       /* uv handles not yet closed; freed at 0 */
};

/* Bind and listen for cfg, owned by plugin p. On success *out is running
 * and listening() has fired. On failure returns a negative errno after
 * logging why (port in use, bad host); not_listening() has fired. */
int listener_start(struct loop *lp, const struct config_listener *cfg, struct plugin *p,
                   struct listener **out);
/* Stop accepting for good, close the socket; listener_closed() fires.
 * Connections it accepted stay. The struct is freed when its handles are
 * closed and its last connection is gone. */
void listener_stop(struct listener *l);
/* A connection accepted by l is gone. */
void listener_conn_closed(struct listener *l);
/* A connection of any kind is gone: resume listeners paused at the
 * daemon-wide max_connections when below it again. */
void listener_global_check(struct loop *lp);
/* Pause for the reasons in `why` (LISTENER_PAUSE_*); resume lifts them. */
void listener_pause(struct listener *l, unsigned why);
void listener_resume(struct listener *l, unsigned why);
/* Whether the running listener l was started from the same settings, or
 * at least the same host and port. */
bool listener_same(const struct listener *l, const struct config_listener *cfg);
bool listener_same_address(const struct listener *l, const struct config_listener *cfg);
/* Apply cfg's plugin, limit and sizes to l without touching its socket. */
void listener_update(struct listener *l, const struct config_listener *cfg, struct plugin *p);
/* The live (not stopped) listener named `name`, or NULL. */
struct listener *listener_find(struct loop *lp, const char *name);
/* Format a socket address as "1.2.3.4:80" or "[::1]:80". */
void listener_format_addr(const struct sockaddr *sa, char *buf, size_t len);

#endif
