/*
 * relay.h: splicing between two relayed connections (relay.c), called by
 * conn.c's read path and close sequence and by the host's relay().
 */
#ifndef CONND_RELAY_H
#define CONND_RELAY_H

#include <stdbool.h>
#include <stddef.h>

#include "conn.h"

/* Relay a and b both ways (see connd_host.relay); b NULL ends a's relay.
 * Returns 0, -EINVAL, -ENOTCONN, -EPERM, -EBUSY, or pipe2(2)'s -errno. */
int relay_set(struct conn *a, struct conn *b);
/* End c's relay, on both sides; nothing when c is not relayed. */
void relay_end(struct conn *c);
/* A relayed connection splices while its reads (or splices) bring at least
 * this much (or max_size): below it, the two splices and the pipe cost
 * more than the copies they save. */
#define RELAY_SPLICE_MIN 8192

/* Whether bytes arriving `got` at a time are worth splicing. */
static inline bool relay_worth(const struct conn *c, size_t got)
{
    return got >= RELAY_SPLICE_MIN || got >= c->lim.max_size;
}

/* Whether c's next bytes may go straight to its partner with their place
 * kept (relay.c). */
bool relay_can_splice(const struct conn *c);

/* conn_alloc_cb, for a relayed c: whether its next bytes are spliced. */
static inline bool relay_may_splice(const struct conn *c)
{
    return !c->read_next && relay_can_splice(c);
}

/* conn_read_cb, for a relayed c that relay_may_splice() let splice. */
void relay_splice(struct conn *c);

/* conn_read_cb, for a relayed c that read `got` bytes: splice next? */
static inline void relay_read(struct conn *c, size_t got)
{
    c->read_next = !relay_worth(c, got);
}

/* Close the loop's pipe, if any (loop_close). */
void relay_pipe_close(struct loop *lp);

#endif
