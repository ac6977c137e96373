/*
 * connect.h: outgoing connections. Resolves the host off the loop
 * (uv_getaddrinfo), then races the addresses per RFC 8305 (Happy Eyeballs):
 * IPv6 first, families interleaved, a new attempt every 250 ms or as soon
 * as one fails; the first to connect wins and the others are closed.
 */
#ifndef CONND_CONNECT_H
#define CONND_CONNECT_H

#include <stdint.h>
#include <sys/socket.h>

#include "config.h"

struct conn;
struct connector;
struct loop;
struct plugin;

#define CONNECT_STAGGER_MS 250
#define CONNECT_DEFAULT_TIMEOUT_MS 10000

struct connect_params {
    enum config_family family;
    const char *from;    /* local address literal to bind; NULL or "" for any */
    uint64_t timeout_ms; /* 0: CONNECT_DEFAULT_TIMEOUT_MS */
    const struct conn_limits *lim; /* NULL: the defaults */
    void *user;
};

/*
 * Start connecting to host:port for plugin p. On success *out is the new
 * connection (CONN_CONNECTING); connecting(), then connected() or
 * connect_failed(), fire later from the loop, never inside this call.
 * Returns 0 or a negative errno (bad `from`, out of memory).
 */
int connect_start(struct loop *lp, struct plugin *p, const char *host, const char *port,
                  const struct connect_params *prm, struct conn **out);
/* As connect_start with the addresses already resolved (n <= 64); they are
 * reordered for Happy Eyeballs as a resolver's answer would be. */
int connect_start_addrs(struct loop *lp, struct plugin *p,
                        const struct sockaddr_storage *addrs, size_t n,
                        const struct connect_params *prm, struct conn **out);
/* The connection is gone or live: stop every attempt and free the rest. */
void connector_cancel(struct connector *cx);

#endif
