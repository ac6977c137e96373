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
 *   "connect": "host:port" on init, connect there (family from "family")
 *   "write_early": "text"  with "connect": write it before it is up
 */
#include <connd/plugin.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tp {
    const struct connd_host *h;
    struct connd_plugin *self;
    bool echo, log_received, pause, close_after_greet, abort_on_accept;
    long expect;
    long greet;
    char mute[16];
    char handover[64];
    char connect_host[64], connect_port[16], write_early[256];
    int family;
};

#define LOG(tp, ...) (tp)->h->log((tp)->self, CONND_LOG_NOTICE, __VA_ARGS__)

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
    if (tp->connect_host[0]) {
        struct connd_connect_opts o = {.family = (enum connd_family)tp->family};
        struct connd_conn *c = NULL;
        int rc = h->connect(self, tp->connect_host, tp->connect_port, &o, &c);
        LOG(tp, "connect rc=%d id=%llu", rc, c ? (unsigned long long)h->id(c) : 0ull);
        if (c && tp->write_early[0])
            LOG(tp, "write_early rc=%d", h->write(c, tp->write_early, strlen(tp->write_early)));
    }
    *state = tp;
    return 0;
}

static void tp_fini(void *state)
{
    free(state);
}

static unsigned long long cid(struct tp *tp, struct connd_conn *c)
{
    return (unsigned long long)tp->h->id(c);
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
    if (tp->handover[0] && !tp->h->get_user(c)) {
        tp->h->set_user(c, (void *)1);
        tp->h->write(c, "WELCOME\n", 8);
        tp->h->expect(c, 0);
        LOG(tp, "handover id=%llu rc=%d", cid(tp, c), tp->h->set_notify(c, tp->handover));
        return true;
    }
    if (tp->echo && tp->h->write(c, data, len) < 0)
        tp->h->abort(c, "echo write refused");
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

static void tp_closed(void *state, struct connd_conn *c)
{
    struct tp *tp = state;
    LOG(tp, "closed id=%llu", cid(tp, c));
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
    .closed = tp_closed,
    .listening = tp_listening,
    .not_listening = tp_not_listening,
    .listener_closed = tp_listener_closed,
};

CONND_EXPORT const struct connd_notify *connd_plugin_entry(void)
{
    return &tp_notify;
}
