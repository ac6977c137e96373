/*
 * events.c: builds one event object and sends it to every subscriber whose
 * filter matches, each with its own sequence number. A subscriber that is
 * behind, or in the middle of a reply made in parts (a large conn.list),
 * loses events (control_send counts them) and later gets one events_lost
 * {count}; nothing is buffered without bound.
 */
#include "events.h"

#include <jansson.h>
#include <string.h>

#include "conn.h"
#include "control.h"
#include "listener.h"
#include "loop.h"
#include "plugin.h"
#include "rpc.h"

static const char *const event_names[EV_COUNT] = {
    [EV_ACCEPTED] = "accepted",
    [EV_CONNECTED] = "connected",
    [EV_CONNECT_FAILED] = "connect_failed",
    [EV_CLOSED] = "closed",
    [EV_THROTTLED] = "throttled",
    [EV_UNTHROTTLED] = "unthrottled",
    [EV_MUTED] = "muted",
    [EV_UNMUTED] = "unmuted",
    [EV_SENT] = "sent",
    [EV_SEND_FAILED] = "send_failed",
    [EV_LISTENER_ADDED] = "listener_added",
    [EV_LISTENER_REMOVED] = "listener_removed",
    [EV_LISTENER_PAUSED] = "listener_paused",
    [EV_LISTENER_RESUMED] = "listener_resumed",
};

const char *event_name(enum event_type t)
{
    return (unsigned)t < EV_COUNT ? event_names[t] : NULL;
}

int event_parse(const char *name)
{
    for (int i = 0; i < EV_COUNT; i++)
        if (strcmp(event_names[i], name) == 0)
            return i;
    return -1;
}

/* Send params (taken) as an event to each matching subscriber. */
static void events_fan_out(struct loop *lp, enum event_type t, uint64_t conn,
                           const char *listener, json_t *params)
{
    struct control *ctl = lp->ctl;
    json_t *msg;

    if (!ctl || !params)
        goto out;
    json_object_set_new(params, "ts_ms", json_integer((json_int_t)loop_wall_ms()));
    json_object_set_new(params, "type", json_string(event_names[t]));
    msg = json_pack("{s:s, s:s, s:O}", "jsonrpc", "2.0", "method", "event", "params",
                    params);
    for (struct list *n = ctl->subscribers.next, *next; msg && n != &ctl->subscribers;
         n = next) {
        struct ctl_client *cl = container_of(n, struct ctl_client, sub_link);
        next = n->next; /* sending may drop the client */
        if (!(cl->ev_types & (1u << t)) || (cl->ev_conn && cl->ev_conn != conn) ||
            (cl->ev_listener[0] && (!listener || strcmp(cl->ev_listener, listener) != 0)))
            continue;
        if (cl->ev_lost) {
            cl->ev_lost++; /* keep order: nothing new before the events_lost */
            continue;
        }
        json_object_set_new(params, "seq", json_integer((json_int_t)(cl->ev_seq + 1)));
        if (ctl_client_takes_events(cl))
            cl->ev_seq++; /* else control_send drops and counts it */
        rpc_send_json(cl, msg, true);
    }
    json_decref(msg);
out:
    json_decref(params);
}

static const char *conn_listener_name(const struct conn *c)
{
    return c->listener ? c->listener->name : NULL;
}

void events_conn_emit(struct loop *lp, enum event_type t, const struct conn *c,
                      const char *why)
{
    json_t *p = json_pack("{s:I, s:s}", "id", (json_int_t)c->id, "plugin", c->plugin->name);

    if (c->listener)
        json_object_set_new(p, "listener", json_string(c->listener->name));
    if (why)
        json_object_set_new(p, t == EV_MUTED || t == EV_UNMUTED ? "reason" : "why",
                            json_string(why));
    if (t == EV_CLOSED) {
        json_object_set_new(p, "bytes_in", json_integer((json_int_t)c->bytes_in));
        json_object_set_new(p, "bytes_out", json_integer((json_int_t)c->bytes_out));
    }
    if (t == EV_THROTTLED || t == EV_UNTHROTTLED)
        json_object_set_new(p, "pending", json_integer((json_int_t)c->pending));
    events_fan_out(lp, t, c->id, conn_listener_name(c), p);
}

void events_sent_emit(struct loop *lp, const struct conn *c, uint64_t token, size_t bytes,
                      int err)
{
    json_t *p;

    if (!lp->n_subscribers)
        return;
    p = json_pack("{s:I, s:I, s:s}", "id", (json_int_t)c->id, "token", (json_int_t)token,
                  "plugin", c->plugin->name);
    if (c->listener)
        json_object_set_new(p, "listener", json_string(c->listener->name));
    if (err)
        json_object_set_new(p, "error", json_string(uv_err_name(err)));
    else
        json_object_set_new(p, "bytes", json_integer((json_int_t)bytes));
    events_fan_out(lp, err ? EV_SEND_FAILED : EV_SENT, c->id, conn_listener_name(c), p);
}

void events_listener_emit(struct loop *lp, enum event_type t, const struct listener *l,
                          const char *why)
{
    json_t *p = json_pack("{s:s, s:s}", "listener", l->name, "local", l->local);

    if (why)
        json_object_set_new(p, "reason", json_string(why));
    events_fan_out(lp, t, 0, l->name, p);
}
