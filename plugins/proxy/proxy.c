/*
 * proxy: relays each accepted connection to config.upstream ("host:port" or
 * "[v6]:port"; Happy Eyeballs through the host's connect) and back.
 *
 * - Backpressure both ways: when one side is throttled (its peer reads too
 *   slowly), the other side is muted for the reason "proxy"; it is unmuted
 *   when the throttled side is unthrottled. The client is also muted until
 *   the upstream connection is up, so nothing piles up before it.
 * - Half-close: EOF from one side shuts down the other side's write
 *   direction once what is queued for it has gone; each connection closes
 *   when both of its directions are done.
 * - Zero copy: once the upstream is up the two connections are relayed
 *   (host relay(), splice(2) inside the kernel) unless config.splice is
 *   false; received() below still relays whatever connd delivers.
 * - Failure: an upstream that cannot be reached (or does not answer within
 *   config.connect_timeout_ms, default 5000) closes the client with a
 *   logged reason; either side closing closes the other gracefully.
 *
 * A struct pair links the two connections (both user data point to it) and
 * is freed when both have closed.
 */
#include <connd/plugin.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROXY_REASON "proxy"

struct proxy {
    const struct connd_host *h;
    struct connd_plugin *self;
    char host[256], port[16];
    uint64_t connect_timeout_ms;
    bool splice; /* config.splice, default true */
};

struct pair {
    struct connd_conn *client, *upstream; /* NULL once closed */
    int refs;
};

/* "host:port" or "[v6addr]:port" into host and port. */
static int split_hostport(const char *s, char *host, size_t hl, char *port, size_t pl)
{
    const char *colon;

    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':' || (size_t)(end - s - 1) >= hl)
            return -EINVAL;
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = '\0';
        colon = end + 1;
    } else {
        if (!(colon = strrchr(s, ':')) || (size_t)(colon - s) >= hl || colon == s)
            return -EINVAL;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
    }
    if (!colon[1] || strlen(colon + 1) >= pl)
        return -EINVAL;
    strcpy(port, colon + 1);
    return 0;
}

static int proxy_init(const struct connd_host *h, struct connd_plugin *self,
                      const char *config_json, void **state)
{
    json_t *cfg = json_loads(config_json, 0, NULL);
    json_t *up = json_object_get(cfg, "upstream"), *to = json_object_get(cfg, "connect_timeout_ms");
    json_t *sp = json_object_get(cfg, "splice");
    struct proxy *px = calloc(1, sizeof(*px));

    if (!cfg || !px) {
        json_decref(cfg);
        free(px);
        return -ENOMEM;
    }
    px->h = h;
    px->self = self;
    px->connect_timeout_ms = 5000;
    if (!json_is_string(up) || split_hostport(json_string_value(up), px->host,
                                              sizeof(px->host), px->port, sizeof(px->port)) < 0) {
        h->log(self, CONND_LOG_ERR, "config.upstream: expected \"host:port\"");
        goto fail;
    }
    if (to) {
        if (!json_is_integer(to) || json_integer_value(to) < 1 ||
            json_integer_value(to) > 3600000) {
            h->log(self, CONND_LOG_ERR, "config.connect_timeout_ms: expected 1..3600000");
            goto fail;
        }
        px->connect_timeout_ms = (uint64_t)json_integer_value(to);
    }
    if (sp && !json_is_boolean(sp)) {
        h->log(self, CONND_LOG_ERR, "config.splice: expected true or false");
        goto fail;
    }
    px->splice = !sp || json_is_true(sp);
    json_decref(cfg);
    *state = px;
    return 0;
fail:
    json_decref(cfg);
    free(px);
    return -EINVAL;
}

static void proxy_fini(void *state)
{
    free(state);
}

static struct connd_conn *other_side(struct pair *pr, struct connd_conn *c)
{
    return c == pr->client ? pr->upstream : pr->client;
}

static void proxy_accepted(void *state, struct connd_conn *c)
{
    struct proxy *px = state;
    struct pair *pr = calloc(1, sizeof(*pr));
    struct connd_connect_opts o = {
        .size = sizeof(o), .user = pr, .timeout_ms = px->connect_timeout_ms,
        .limits_of = c}; /* both sides read and queue alike */
    int rc;

    if (!pr) {
        px->h->abort(c, "proxy: out of memory");
        return;
    }
    pr->client = c;
    pr->refs = 1;
    px->h->set_user(c, pr);
    /* Nothing is read from the client until the upstream is up. */
    px->h->mute(c, PROXY_REASON);
    if ((rc = px->h->connect(px->self, px->host, px->port, &o, &pr->upstream)) < 0) {
        px->h->conn_log(c, CONND_LOG_WARNING, "proxy: connect to %s:%s: error %d", px->host,
                        px->port, rc);
        px->h->close(c, "proxy: upstream connect refused");
        return;
    }
    pr->refs = 2;
}

static void proxy_connected(void *state, struct connd_conn *c)
{
    struct proxy *px = state;
    struct pair *pr = px->h->get_user(c);

    px->h->set_nodelay(c, true);
    if (pr && pr->client) {
        px->h->set_nodelay(pr->client, true);
        if (px->splice && CONND_HOST_HAS(px->h, relay)) {
            int rc = px->h->relay(pr->client, c);
            if (rc < 0) /* the bytes are copied through received() */
                px->h->conn_log(c, CONND_LOG_DEBUG, "proxy: relay: error %d", rc);
        }
        px->h->unmute(pr->client, PROXY_REASON);
    }
}

static void proxy_connect_failed(void *state, struct connd_conn *c)
{
    struct proxy *px = state;
    struct pair *pr = px->h->get_user(c);
    char reason[300];

    snprintf(reason, sizeof(reason), "proxy: upstream %s:%s unreachable", px->host, px->port);
    if (pr && pr->client)
        px->h->close(pr->client, reason);
}

static bool proxy_received(void *state, struct connd_conn *c, const uint8_t *data,
                           size_t len, unsigned times)
{
    struct proxy *px = state;
    struct pair *pr = px->h->get_user(c);
    struct connd_conn *to = pr ? other_side(pr, c) : NULL;
    int rc;

    (void)times;
    if (!to) {
        px->h->close(c, "proxy: other side gone");
        return true;
    }
    if ((rc = px->h->write(to, data, len)) == -ENOBUFS) {
        /* The other side holds max_pending unread: the relay is stuck. */
        px->h->conn_log(c, CONND_LOG_WARNING, "proxy: relay write refused: other side full");
        px->h->abort(to, "proxy: relay write refused");
        px->h->abort(c, "proxy: relay write refused");
    } else if (rc < 0) {
        /* The other side is closing or half-closed: nothing more can reach
         * it, so this side ends too, gracefully. */
        px->h->close(c, "proxy: other side no longer takes data");
    }
    return true;
}

/* c cannot take more: stop reading what would be written to it. */
static void proxy_throttled(void *state, struct connd_conn *c)
{
    struct proxy *px = state;
    struct pair *pr = px->h->get_user(c);
    struct connd_conn *from = pr ? other_side(pr, c) : NULL;

    if (from)
        px->h->mute(from, PROXY_REASON);
}

static void proxy_unthrottled(void *state, struct connd_conn *c)
{
    struct proxy *px = state;
    struct pair *pr = px->h->get_user(c);
    struct connd_conn *from = pr ? other_side(pr, c) : NULL;

    if (from)
        px->h->unmute(from, PROXY_REASON);
}

/* EOF from c: the other side gets a FIN after what is queued for it. */
static void proxy_peer_closed(void *state, struct connd_conn *c)
{
    struct proxy *px = state;
    struct pair *pr = px->h->get_user(c);
    struct connd_conn *to = pr ? other_side(pr, c) : NULL;

    if (to && CONND_HOST_HAS(px->h, shutdown))
        px->h->shutdown(to);
    else if (to)
        px->h->close(to, "proxy: peer closed (connd without half-close)");
    else
        px->h->close(c, "proxy: other side gone");
}

static void proxy_closed(void *state, struct connd_conn *c)
{
    struct proxy *px = state;
    struct pair *pr = px->h->get_user(c);
    struct connd_conn *other;

    if (!pr)
        return;
    other = other_side(pr, c);
    if (c == pr->client)
        pr->client = NULL;
    else
        pr->upstream = NULL;
    if (other)
        px->h->close(other, "proxy: other side closed");
    if (--pr->refs == 0)
        free(pr);
}

static const struct connd_notify proxy_notify = {
    .abi = CONND_PLUGIN_ABI,
    .size = sizeof(struct connd_notify),
    .name = "proxy",
    .init = proxy_init,
    .fini = proxy_fini,
    .accepted = proxy_accepted,
    .connected = proxy_connected,
    .connect_failed = proxy_connect_failed,
    .received = proxy_received,
    .throttled = proxy_throttled,
    .unthrottled = proxy_unthrottled,
    .peer_closed = proxy_peer_closed,
    .closed = proxy_closed,
};

CONND_EXPORT const struct connd_notify *connd_plugin_entry(void)
{
    return &proxy_notify;
}
