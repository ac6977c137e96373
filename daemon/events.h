/*
 * events.h: connection and listener events for control-socket subscribers
 * (events.subscribe). Emitting costs one branch while nobody subscribes.
 */
#ifndef CONND_EVENTS_H
#define CONND_EVENTS_H

#include <stddef.h>
#include <stdint.h>

struct conn;
struct listener;
struct loop;

enum event_type {
    EV_ACCEPTED,
    EV_CONNECTED,
    EV_CONNECT_FAILED,
    EV_CLOSED,
    EV_THROTTLED,
    EV_UNTHROTTLED,
    EV_MUTED,
    EV_UNMUTED,
    EV_SENT,
    EV_SEND_FAILED,
    EV_LISTENER_ADDED,
    EV_LISTENER_REMOVED,
    EV_LISTENER_PAUSED,
    EV_LISTENER_RESUMED,
    EV_COUNT
};

/* "accepted", "listener_added", ...; NULL for an unknown type. */
const char *event_name(enum event_type t);
/* The type named `name`, or -1. */
int event_parse(const char *name);

/* `why`: the mute reason, close reason or connect failure; may be NULL. */
void events_conn_emit(struct loop *lp, enum event_type t, const struct conn *c,
                      const char *why);
/* sent / send_failed for a control-socket write token; err is a libuv code. */
void events_sent_emit(struct loop *lp, const struct conn *c, uint64_t token, size_t bytes,
                      int err);
void events_listener_emit(struct loop *lp, enum event_type t, const struct listener *l,
                          const char *why);

#define events_conn(lp, t, c, why)                                                       \
    do {                                                                                 \
        if ((lp)->n_subscribers)                                                         \
            events_conn_emit(lp, t, c, why);                                             \
    } while (0)
#define events_listener(lp, t, l, why)                                                   \
    do {                                                                                 \
        if ((lp)->n_subscribers)                                                         \
            events_listener_emit(lp, t, l, why);                                         \
    } while (0)

#endif
