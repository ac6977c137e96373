/*
 * reentrant: a test plugin that calls host functions re-entrantly from
 * inside its callbacks. Its "config" picks, per callback, a list of host
 * calls to make (in order), and every call is logged with what it returned,
 * so that a test can assert both that connd survived and what each call
 * returned from that callback:
 *
 *   "plugin NAME: CB id=N ACTION rc=RC"
 *
 * Every callback is logged too ("plugin NAME: CB id=N", with len=L for
 * received and sent), so the order of events and the exactly-once closed()
 * can be checked from the log.
 *
 * Config:
 *   "on": { CB: ACTIONS, ... }   CB is accepted, received, sent, throttled,
 *                                unthrottled, closed, adopted; ACTIONS is an
 *                                action name or an array of them, run in order
 *   "target": "name"             the plugin instance set_notify hands over to
 *   "reason": "name"             the mute/unmute reason (default NULL: "plugin")
 *   "text": "..."                what "write" writes (default "W")
 *   "expect": N                  what "expect" asks for
 *   "first_expect": N            expect(N) on accept, before the actions
 *   "greet": N                   on accept, before the actions, write N pattern
 *                                bytes (byte i is i % 251)
 *   "big": N                     what "bigwrite" writes (pattern bytes)
 *   "sndbuf": N                  on accept, first of all, set SO_SNDBUF to N (a
 *                                small one makes the greeting throttle for sure)
 *   "quiet": true                do not log received/sent lines
 *
 * Actions:
 *   echo       write back the received bytes (received only; elsewhere a no-op
 *              logged as rc=0)
 *   write      write "text"
 *   writev     write "text" as two buffers
 *   bigwrite   write "big" pattern bytes
 *   close      graceful close, reason "reentrant"
 *   abort      hard close, reason "reentrant"
 *   shutdown   half-close (when the host has it)
 *   set_notify hand over to "target"
 *   mute       mute(reason); unmute: unmute(reason)
 *   expect     expect("expect")
 *   pending    log pending() as rc
 *   id         log id() as rc (a use of the connection pointer)
 *
 * The plugin keeps no per-connection state, so set_notify and closed()
 * have nothing to free.
 */
#include <connd/plugin.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum cb {
    CB_ACCEPTED,
    CB_RECEIVED,
    CB_SENT,
    CB_THROTTLED,
    CB_UNTHROTTLED,
    CB_CLOSED,
    CB_ADOPTED,
    CB_COUNT
};

static const char *const cb_names[CB_COUNT] = {
    "accepted", "received", "sent", "throttled", "unthrottled", "closed", "adopted"};

enum act {
    A_ECHO,
    A_WRITE,
    A_WRITEV,
    A_BIGWRITE,
    A_CLOSE,
    A_ABORT,
    A_SHUTDOWN,
    A_SET_NOTIFY,
    A_MUTE,
    A_UNMUTE,
    A_EXPECT,
    A_PENDING,
    A_ID,
    A_COUNT
};

static const char *const act_names[A_COUNT] = {
    "echo",       "write", "writev", "bigwrite", "close",   "abort", "shutdown",
    "set_notify", "mute",  "unmute", "expect",   "pending", "id"};

#define MAX_ACTIONS 16

struct re {
    const struct connd_host *h;
    struct connd_plugin *self;
    enum act acts[CB_COUNT][MAX_ACTIONS];
    int n_acts[CB_COUNT];
    char target[64], reason[16], text[256];
    bool has_reason, quiet;
    long expect, first_expect, greet, big, sndbuf;
};

#define LOG(re, ...) (re)->h->log((re)->self, CONND_LOG_NOTICE, __VA_ARGS__)

static int parse_action(const char *s)
{
    for (int i = 0; i < A_COUNT; i++)
        if (strcmp(s, act_names[i]) == 0)
            return i;
    return -1;
}

/* One callback's actions: a string or an array of strings. */
static int parse_actions(struct re *re, enum cb cb, json_t *v)
{
    if (json_is_string(v)) {
        int a = parse_action(json_string_value(v));
        if (a < 0)
            return -EINVAL;
        re->acts[cb][re->n_acts[cb]++] = (enum act)a;
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) > MAX_ACTIONS)
        return -EINVAL;
    for (size_t i = 0; i < json_array_size(v); i++) {
        const char *s = json_string_value(json_array_get(v, i));
        int a = s ? parse_action(s) : -1;
        if (a < 0)
            return -EINVAL;
        re->acts[cb][re->n_acts[cb]++] = (enum act)a;
    }
    return 0;
}

static int re_init(const struct connd_host *h, struct connd_plugin *self,
                   const char *config_json, void **state)
{
    struct re *re = calloc(1, sizeof(*re));
    json_t *cfg = json_loads(config_json, 0, NULL), *on;
    const char *s;
    int rc = 0;

    if (!re || !cfg) {
        free(re);
        json_decref(cfg);
        return -EINVAL;
    }
    re->h = h;
    re->self = self;
    snprintf(re->text, sizeof(re->text), "W");
    if ((s = json_string_value(json_object_get(cfg, "target"))))
        snprintf(re->target, sizeof(re->target), "%s", s);
    if ((s = json_string_value(json_object_get(cfg, "reason")))) {
        snprintf(re->reason, sizeof(re->reason), "%s", s);
        re->has_reason = true;
    }
    if ((s = json_string_value(json_object_get(cfg, "text"))))
        snprintf(re->text, sizeof(re->text), "%s", s);
    re->quiet = json_is_true(json_object_get(cfg, "quiet"));
    re->expect = (long)json_integer_value(json_object_get(cfg, "expect"));
    re->first_expect = (long)json_integer_value(json_object_get(cfg, "first_expect"));
    re->greet = (long)json_integer_value(json_object_get(cfg, "greet"));
    re->big = (long)json_integer_value(json_object_get(cfg, "big"));
    re->sndbuf = (long)json_integer_value(json_object_get(cfg, "sndbuf"));
    on = json_object_get(cfg, "on");
    for (int cb = 0; cb < CB_COUNT && rc == 0; cb++) {
        json_t *v = json_object_get(on, cb_names[cb]);
        if (v)
            rc = parse_actions(re, (enum cb)cb, v);
    }
    json_decref(cfg);
    if (rc < 0) {
        h->log(self, CONND_LOG_ERR, "config.on: unknown action or bad list");
        free(re);
        return rc;
    }
    *state = re;
    return 0;
}

static void re_fini(void *state)
{
    free(state);
}

static unsigned long long cid(struct re *re, const struct connd_conn *c)
{
    return (unsigned long long)re->h->id(c);
}

static int write_pattern(struct re *re, struct connd_conn *c, long n)
{
    uint8_t *buf;
    int rc;

    if (n <= 0)
        return 0;
    if (!(buf = malloc((size_t)n)))
        return -ENOMEM;
    for (long i = 0; i < n; i++)
        buf[i] = (uint8_t)(i % 251);
    rc = re->h->write(c, buf, (size_t)n);
    free(buf);
    return rc;
}

/* Run cb's actions on c; data/len are the received bytes (received only). */
static void run_actions(struct re *re, enum cb cb, struct connd_conn *c,
                        const uint8_t *data, size_t len)
{
    const struct connd_host *h = re->h;
    const char *reason = re->has_reason ? re->reason : NULL;

    for (int i = 0; i < re->n_acts[cb]; i++) {
        enum act a = re->acts[cb][i];
        long long rc = 0;

        switch (a) {
        case A_ECHO:
            rc = data ? h->write(c, data, len) : 0;
            break;
        case A_WRITE:
            rc = h->write(c, re->text, strlen(re->text));
            break;
        case A_WRITEV: {
            size_t tl = strlen(re->text);
            struct iovec iov[2] = {{re->text, tl / 2}, {re->text + tl / 2, tl - tl / 2}};
            rc = h->writev(c, iov, 2);
            break;
        }
        case A_BIGWRITE:
            rc = write_pattern(re, c, re->big);
            break;
        case A_CLOSE:
            rc = h->close(c, "reentrant");
            break;
        case A_ABORT:
            rc = h->abort(c, "reentrant");
            break;
        case A_SHUTDOWN:
            rc = CONND_HOST_HAS(h, shutdown) ? h->shutdown(c) : -ENOSYS;
            break;
        case A_SET_NOTIFY:
            rc = h->set_notify(c, re->target);
            break;
        case A_MUTE:
            rc = h->mute(c, reason);
            break;
        case A_UNMUTE:
            rc = h->unmute(c, reason);
            break;
        case A_EXPECT:
            rc = h->expect(c, (size_t)re->expect);
            break;
        case A_PENDING:
            rc = (long long)h->pending(c);
            break;
        case A_ID:
            rc = (long long)h->id(c);
            break;
        case A_COUNT:
            break;
        }
        LOG(re, "%s id=%llu %s rc=%lld", cb_names[cb], cid(re, c), act_names[a], rc);
    }
}

static void re_accepted(void *state, struct connd_conn *c)
{
    struct re *re = state;

    LOG(re, "accepted id=%llu", cid(re, c));
    if (re->sndbuf > 0) {
        int v = (int)re->sndbuf;
        LOG(re, "accepted id=%llu sndbuf rc=%d", cid(re, c),
            re->h->setsockopt(c, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)));
    }
    if (re->first_expect)
        LOG(re, "accepted id=%llu first_expect rc=%d", cid(re, c),
            re->h->expect(c, (size_t)re->first_expect));
    if (re->greet)
        LOG(re, "accepted id=%llu greet rc=%d", cid(re, c),
            write_pattern(re, c, re->greet));
    run_actions(re, CB_ACCEPTED, c, NULL, 0);
}

static void re_adopted(void *state, struct connd_conn *c)
{
    struct re *re = state;

    LOG(re, "adopted id=%llu", cid(re, c));
    run_actions(re, CB_ADOPTED, c, NULL, 0);
}

static bool re_received(void *state, struct connd_conn *c, const uint8_t *data,
                        size_t len, unsigned times)
{
    struct re *re = state;

    if (!re->quiet)
        LOG(re, "received id=%llu len=%zu times=%u", cid(re, c), len, times);
    run_actions(re, CB_RECEIVED, c, data, len);
    return true;
}

static enum connd_sent re_sent(void *state, struct connd_conn *c, const uint8_t *data,
                               size_t len, uint8_t **out, size_t *out_len)
{
    struct re *re = state;

    (void)data;
    (void)out;
    (void)out_len;
    if (!re->quiet)
        LOG(re, "sent id=%llu len=%zu", cid(re, c), len);
    run_actions(re, CB_SENT, c, NULL, 0);
    return CONND_SENT_PASS;
}

static void re_throttled(void *state, struct connd_conn *c)
{
    struct re *re = state;

    LOG(re, "throttled id=%llu pending=%zu", cid(re, c), re->h->pending(c));
    run_actions(re, CB_THROTTLED, c, NULL, 0);
}

static void re_unthrottled(void *state, struct connd_conn *c)
{
    struct re *re = state;

    LOG(re, "unthrottled id=%llu pending=%zu", cid(re, c), re->h->pending(c));
    run_actions(re, CB_UNTHROTTLED, c, NULL, 0);
}

static void re_closed(void *state, struct connd_conn *c)
{
    struct re *re = state;

    LOG(re, "closed id=%llu", cid(re, c));
    run_actions(re, CB_CLOSED, c, NULL, 0);
}

static const struct connd_notify re_notify = {
    .abi = CONND_PLUGIN_ABI,
    .size = sizeof(struct connd_notify),
    .name = "reentrant",
    .init = re_init,
    .fini = re_fini,
    .accepted = re_accepted,
    .received = re_received,
    .sent = re_sent,
    .throttled = re_throttled,
    .unthrottled = re_unthrottled,
    .closed = re_closed,
    .adopted = re_adopted,
};

CONND_EXPORT const struct connd_notify *connd_plugin_entry(void)
{
    return &re_notify;
}
