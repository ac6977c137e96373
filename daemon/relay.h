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
/* conn_alloc_cb, for a relayed c: whether its next bytes are spliced. */
bool relay_may_splice(const struct conn *c);
/* conn_read_cb, for a relayed c that relay_may_splice() let splice. */
void relay_splice(struct conn *c);
/* conn_read_cb, for a relayed c that read `got` bytes: splice next? */
void relay_read(struct conn *c, size_t got);

#endif
