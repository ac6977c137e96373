/*
 * testplug: a scriptable notifier for the integration tests. Its "config"
 * object picks behaviours; every callback is logged at notice level as
 * "plugin NAME: EVENT id=N ..." so tests can assert on the daemon's log.
 *
 *   "echo": true           write back what is received
 *   "log_received": true   log "received id=N len=L times=T" for each call
 *   "expect": N            expect(N) on accept; log "expect=R" (the result)
 *   "pause": true          received() returns false every time
 *   "mute": "reason"       mute with that reason on accept
 *   "greet": N             on accept, write N pattern bytes (byte i = i % 251)
 *   "close_after_greet"    then close gracefully (reason "greeted")
 *   "abort_on_accept"      abort at once
 *   "handover": "name"     on the first received(): write "WELCOME\n",
 *                          expect(0), set_notify(name)
 *   "connect": "host:port" from a timer set in init, connect there (family
 *                          from "family"); init logs its own refused attempt
 *   "write_early": "text"  with "connect": write it before it is up
 *   "sent": "upper"        sent() replaces every write by its upper case
 *   "drop": "prefix"       sent() drops writes starting with prefix
 *   "writev": true         with "echo": write back in three iovecs
 *   "timer_ms": N          on accept, a one-shot timer writes "TICK\n" and a
 *                          repeating one logs "tick id=N k=K", stopping at K=3
 *   "mute_reasons": [..]   on accept mute for each reason (the first twice);
 *   "unmute_ms": N         then lift one reason every N ms, in order,
 *                          logging "unmuted id=N reason=R rc=RC"
 *   "fini_timer": true     a 60 s repeating timer from init, stopped in fini
 *   "reconnect": true      closed() of an outgoing connection connects again
 *   "close_in_sent": true  sent() logs "sent id=N len=L", aborts and drops
 *   "block_ms": N          received() blocks the loop for N ms (a wedged plugin)
 *   "bye": true            on the first received(): write "BYE\n", close
 *   "sockopts": true       on accept: nodelay, keepalive, get/setsockopt and
 *                          addresses, logged as "sockopts id=N ..."
 */
#include <connd/plugin.h>
#include <errno.h>
#include <jansson.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct tp {
    const struct connd_host *h;
    struct connd_plugin *self;
    bool echo, log_received, pause, close_after_greet, abort_on_accept;
    bool sent_upper, writev, sockopts, bye;
    bool fini_timer, reconnect, close_in_sent;
    struct connd_timer *fini_t;
    char drop[32];
    long timer_ms, unmute_ms, block_ms;
    char reasons[4][16];
    int n_reasons;
    long expect;
    long greet;
    char mute[16];
    char handover[64];
    char connect_host[64], connect_port[16], write_early[256];
    int family;
};

#define LOG(tp, ...) (tp)->h->log((tp)->self, CONND_LOG_NOTICE, __VA_ARGS__)

static void tp_noop(void *arg)
{
    (void)arg;
}

static void tp_connect_now(void *arg)
{
    struct tp *tp = arg;
    struct connd_connect_opts o = {.family = (enum connd_family)tp->family};
    struct connd_conn *c = NULL;
    int rc = tp->h->connect(tp->self, tp->connect_host, tp->connect_port, &o, &c);

    LOG(tp, "connect rc=%d id=%llu", rc, c ? (unsigned long long)tp->h->id(c) : 0ull);
    if (c && tp->write_early[0])
        LOG(tp, "write_early rc=%d", tp->h->write(c, tp->write_early, strlen(tp->write_early)));
}

static int tp_init(const struct connd_host *h, struct connd_plugin *self,
                   const char *config_json, void **state)
{
    struct tp *tp = calloc(1, sizeof(*tp));
    json_t *cfg = json_loads(config_json, 0, NULL);
    const char *s;

    if (!tp || !cfg) {
        free(tp);
        json_decref(cfg);
        return -EINVAL;
    }
    tp->h = h;
    tp->self = self;
    tp->echo = json_is_true(json_object_get(cfg, "echo"));
    tp->log_received = json_is_true(json_object_get(cfg, "log_received"));
    tp->pause = json_is_true(json_object_get(cfg, "pause"));
    tp->close_after_greet = json_is_true(json_object_get(cfg, "close_after_greet"));
    tp->abort_on_accept = json_is_true(json_object_get(cfg, "abort_on_accept"));
    tp->expect = (long)json_integer_value(json_object_get(cfg, "expect"));
    tp->greet = (long)json_integer_value(json_object_get(cfg, "greet"));
    tp->family = (int)json_integer_value(json_object_get(cfg, "family"));
    tp->writev = json_is_true(json_object_get(cfg, "writev"));
    tp->bye = json_is_true(json_object_get(cfg, "bye"));
    tp->fini_timer = json_is_true(json_object_get(cfg, "fini_timer"));
    tp->reconnect = json_is_true(json_object_get(cfg, "reconnect"));
    tp->close_in_sent = json_is_true(json_object_get(cfg, "close_in_sent"));
    tp->unmute_ms = (long)json_integer_value(json_object_get(cfg, "unmute_ms"));
    tp->block_ms = (long)json_integer_value(json_object_get(cfg, "block_ms"));
    json_t *rs = json_object_get(cfg, "mute_reasons");
    for (size_t i = 0; i < json_array_size(rs) && tp->n_reasons < 4; i++)
        if ((s = json_string_value(json_array_get(rs, i))))
            snprintf(tp->reasons[tp->n_reasons++], 16, "%s", s);
    tp->sockopts = json_is_true(json_object_get(cfg, "sockopts"));
    tp->timer_ms = (long)json_integer_value(json_object_get(cfg, "timer_ms"));
    if ((s = json_string_value(json_object_get(cfg, "sent"))))
        tp->sent_upper = strcmp(s, "upper") == 0;
    if ((s = json_string_value(json_object_get(cfg, "drop"))))
        snprintf(tp->drop, sizeof(tp->drop), "%s", s);
    if ((s = json_string_value(json_object_get(cfg, "mute"))))
        snprintf(tp->mute, sizeof(tp->mute), "%s", s);
    if ((s = json_string_value(json_object_get(cfg, "handover"))))
        snprintf(tp->handover, sizeof(tp->handover), "%s", s);
    if ((s = json_string_value(json_object_get(cfg, "write_early"))))
        snprintf(tp->write_early, sizeof(tp->write_early), "%s", s);
    if ((s = json_string_value(json_object_get(cfg, "connect")))) {
        const char *colon = strrchr(s, ':');
        if (colon) {
            snprintf(tp->connect_host, sizeof(tp->connect_host), "%.*s", (int)(colon - s), s);
            snprintf(tp->connect_port, sizeof(tp->connect_port), "%s", colon + 1);
        }
    }
    json_decref(cfg);
    *state = tp;
    if (tp->fini_timer)
        tp->fini_t = h->timer_start(self, 60000, 60000, tp_noop, tp);
    if (tp->connect_host[0]) {
        /* connect() is refused inside init(): do it from the loop. */
        LOG(tp, "connect from init rc=%d", h->connect(self, "127.0.0.1", "1", NULL, NULL));
        h->timer_start(self, 0, 0, tp_connect_now, tp);
    }
    return 0;
}

static void tp_fini(void *state)
{
    struct tp *tp = state;
    if (tp->fini_t) /* a plugin tidying up its own repeating timer */
        tp->h->timer_stop(tp->fini_t);
    free(tp);
}

static unsigned long long cid(struct tp *tp, struct connd_conn *c)
{
    return (unsigned long long)tp->h->id(c);
}

static void addr_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        port = ntohs(s4->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        port = ntohs(s6->sin6_port);
    }
    snprintf(buf, len, "%s:%u", host, port);
}

static void log_sockopts(struct tp *tp, struct connd_conn *c)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char local[64], remote[64];
    int nodelay = -1, keep = -1, rcvbuf = 65536, rc_nd, rc_ka, rc_set;
    socklen_t il = sizeof(int);

    rc_nd = tp->h->set_nodelay(c, true);
    rc_ka = tp->h->set_keepalive(c, 30);
    rc_set = tp->h->setsockopt(c, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    tp->h->getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &nodelay, &il);
    il = sizeof(int);
    tp->h->getsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &keep, &il);
    len = sizeof(ss);
    if (tp->h->local_address(c, (struct sockaddr *)&ss, &len) == 0)
        addr_str(&ss, local, sizeof(local));
    else
        snprintf(local, sizeof(local), "error");
    len = sizeof(ss);
    if (tp->h->remote_address(c, (struct sockaddr *)&ss, &len) == 0)
        addr_str(&ss, remote, sizeof(remote));
    else
        snprintf(remote, sizeof(remote), "error");
    LOG(tp, "sockopts id=%llu rc=%d,%d,%d nodelay=%d keepalive=%d local=%s remote=%s",
        cid(tp, c), rc_nd, rc_ka, rc_set, nodelay, keep, local, remote);
}

/* Lifts one mute reason per tick; freed with the last one. */
struct tp_unmuter {
    struct tp *tp;
    struct connd_conn *c;
    struct connd_timer *t;
    int next;
};

static void unmute_tick(void *arg)
{
    struct tp_unmuter *u = arg;
    struct tp *tp = u->tp;
    const char *r = tp->reasons[u->next++];

    LOG(tp, "unmuted id=%llu reason=%s rc=%d", cid(tp, u->c), r, tp->h->unmute(u->c, r));
    if (u->next == tp->n_reasons) {
        tp->h->timer_stop(u->t);
        u->t = NULL; /* closed() frees u */
    }
}

static void start_mutes(struct tp *tp, struct connd_conn *c)
{
    struct tp_unmuter *u = calloc(1, sizeof(*u));

    for (int i = 0; i < tp->n_reasons; i++)
        LOG(tp, "mute id=%llu reason=%s rc=%d", cid(tp, c), tp->reasons[i],
            tp->h->mute(c, tp->reasons[i]));
    tp->h->mute(c, tp->reasons[0]); /* again: a no-op, not a count */
    u->tp = tp;
    u->c = c;
    u->t = tp->h->timer_start(tp->self, (uint64_t)tp->unmute_ms, (uint64_t)tp->unmute_ms,
                              unmute_tick, u);
    tp->h->set_user(c, u);
}

/* Per-connection timers, kept in the user data so closed() can stop them. */
struct tp_timers {
    struct tp *tp;
    struct connd_conn *c;
    struct connd_timer *once, *rep;
    int k;
};

static void tick_once(void *arg)
{
    struct tp_timers *t = arg;
    t->once = NULL; /* a one-shot timer is freed after it fires */
    t->tp->h->write(t->c, "TICK\n", 5);
}

static void tick_repeat(void *arg)
{
    struct tp_timers *t = arg;
    LOG(t->tp, "tick id=%llu k=%d", cid(t->tp, t->c), ++t->k);
    if (t->k == 3) {
        t->tp->h->timer_stop(t->rep);
        t->rep = NULL;
    }
}

static void start_timers(struct tp *tp, struct connd_conn *c)
{
    struct tp_timers *t = calloc(1, sizeof(*t));
    t->tp = tp;
    t->c = c;
    t->once = tp->h->timer_start(tp->self, (uint64_t)tp->timer_ms, 0, tick_once, t);
    t->rep = tp->h->timer_start(tp->self, (uint64_t)tp->timer_ms, (uint64_t)tp->timer_ms,
                                tick_repeat, t);
    tp->h->set_user(c, t);
}

static void tp_accepted(void *state, struct connd_conn *c)
{
    struct tp *tp = state;

    LOG(tp, "accepted id=%llu listener=%s", cid(tp, c), tp->h->listener_name(c));
    if (tp->abort_on_accept) {
        tp->h->abort(c, "abort_on_accept");
        return;
    }
    if (tp->expect)
        LOG(tp, "expect=%d id=%llu", tp->h->expect(c, (size_t)tp->expect), cid(tp, c));
    if (tp->sockopts)
        log_sockopts(tp, c);
    if (tp->timer_ms > 0)
        start_timers(tp, c);
    if (tp->n_reasons > 0 && tp->unmute_ms > 0)
        start_mutes(tp, c);
    if (tp->mute[0])
        LOG(tp, "mute=%d id=%llu", tp->h->mute(c, tp->mute), cid(tp, c));
    if (tp->greet > 0) {
        uint8_t *buf = malloc((size_t)tp->greet);
        for (long i = 0; i < tp->greet; i++)
            buf[i] = (uint8_t)(i % 251);
        LOG(tp, "greet rc=%d id=%llu", tp->h->write(c, buf, (size_t)tp->greet), cid(tp, c));
        free(buf);
        if (tp->close_after_greet)
            tp->h->close(c, "greeted");
    }
}

static void tp_connecting(void *state, struct connd_conn *c, unsigned count)
{
    struct tp *tp = state;
    LOG(tp, "connecting id=%llu count=%u", cid(tp, c), count);
}

static void tp_connected(void *state, struct connd_conn *c)
{
    struct tp *tp = state;
    LOG(tp, "connected id=%llu", cid(tp, c));
}

static void tp_connect_failed(void *state, struct connd_conn *c)
{
    struct tp *tp = state;
    LOG(tp, "connect_failed id=%llu", cid(tp, c));
}

static bool tp_received(void *state, struct connd_conn *c, const uint8_t *data, size_t len,
                        unsigned times)
{
    struct tp *tp = state;

    if (tp->log_received)
        LOG(tp, "received id=%llu len=%zu times=%u", cid(tp, c), len, times);
    if (tp->block_ms > 0) {
        struct timespec ts = {tp->block_ms / 1000, (tp->block_ms % 1000) * 1000000L};
        LOG(tp, "blocking id=%llu for %ld ms", cid(tp, c), tp->block_ms);
        while (nanosleep(&ts, &ts) < 0)
            ;
    }
    if (tp->handover[0] && !tp->h->get_user(c)) {
        tp->h->set_user(c, (void *)1);
        tp->h->write(c, "WELCOME\n", 8);
        tp->h->expect(c, 0);
        LOG(tp, "handover id=%llu rc=%d", cid(tp, c), tp->h->set_notify(c, tp->handover));
        return true;
    }
    if (tp->bye) {
        /* Re-entrant close: the rest of this read must not be delivered. */
        LOG(tp, "bye write=%d", tp->h->write(c, "BYE\n", 4));
        LOG(tp, "bye close=%d", tp->h->close(c, "bye"));
        LOG(tp, "bye write after close=%d", tp->h->write(c, "X", 1));
        return true;
    }
    if (tp->echo && tp->writev) {
        struct iovec iov[3] = {{(void *)data, len / 3},
                               {(void *)(data + len / 3), len / 3},
                               {(void *)(data + 2 * (len / 3)), len - 2 * (len / 3)}};
        if (tp->h->writev(c, iov, 3) < 0)
            tp->h->abort(c, "echo writev refused");
    } else if (tp->echo && tp->h->write(c, data, len) < 0) {
        tp->h->abort(c, "echo write refused");
    }
    return !tp->pause;
}

static void tp_throttled(void *state, struct connd_conn *c)
{
    struct tp *tp = state;
    LOG(tp, "throttled id=%llu pending=%zu", cid(tp, c), tp->h->pending(c));
}

static void tp_unthrottled(void *state, struct connd_conn *c)
{
    struct tp *tp = state;
    LOG(tp, "unthrottled id=%llu pending=%zu", cid(tp, c), tp->h->pending(c));
}

static enum connd_sent tp_sent(void *state, struct connd_conn *c, const uint8_t *data,
                               size_t len, uint8_t **out, size_t *out_len)
{
    struct tp *tp = state;
    size_t dl = strlen(tp->drop);

    if (tp->close_in_sent) {
        LOG(tp, "sent id=%llu len=%zu", cid(tp, c), len);
        tp->h->abort(c, "close_in_sent");
        return CONND_SENT_DROP;
    }
    if (dl && len >= dl && memcmp(data, tp->drop, dl) == 0)
        return CONND_SENT_DROP;
    if (!tp->sent_upper)
        return CONND_SENT_PASS;
    if (!(*out = malloc(len)))
        return CONND_SENT_DROP;
    for (size_t i = 0; i < len; i++)
        (*out)[i] = (uint8_t)toupper(data[i]);
    *out_len = len;
    return CONND_SENT_REPLACE;
}

static void tp_closed(void *state, struct connd_conn *c)
{
    struct tp *tp = state;
    struct tp_timers *t = tp->timer_ms > 0 ? tp->h->get_user(c) : NULL;
    struct tp_unmuter *u = tp->n_reasons && tp->unmute_ms > 0 ? tp->h->get_user(c) : NULL;

    LOG(tp, "closed id=%llu", cid(tp, c));
    if (tp->reconnect && !tp->h->listener_name(c))
        tp_connect_now(tp);
    if (u) {
        if (u->t)
            tp->h->timer_stop(u->t);
        free(u);
    }
    if (t) {
        if (t->once)
            tp->h->timer_stop(t->once);
        if (t->rep)
            tp->h->timer_stop(t->rep);
        free(t);
    }
}

static void tp_listening(void *state, const char *listener)
{
    struct tp *tp = state;
    LOG(tp, "listening %s", listener);
}

static void tp_not_listening(void *state, const char *listener)
{
    struct tp *tp = state;
    LOG(tp, "not_listening %s", listener);
}

static void tp_listener_closed(void *state, const char *listener)
{
    struct tp *tp = state;
    LOG(tp, "listener_closed %s", listener);
}

static const struct connd_notify tp_notify = {
    .abi = CONND_PLUGIN_ABI,
    .size = sizeof(struct connd_notify),
    .name = "testplug",
    .init = tp_init,
    .fini = tp_fini,
    .accepted = tp_accepted,
    .connecting = tp_connecting,
    .connected = tp_connected,
    .connect_failed = tp_connect_failed,
    .received = tp_received,
    .throttled = tp_throttled,
    .unthrottled = tp_unthrottled,
    .sent = tp_sent,
    .closed = tp_closed,
    .listening = tp_listening,
    .not_listening = tp_not_listening,
    .listener_closed = tp_listener_closed,
};

CONND_EXPORT const struct connd_notify *connd_plugin_entry(void)
{
    return &tp_notify;
}
