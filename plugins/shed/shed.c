/*
 * shed: Pony's ThrowItAway. While a connection is throttled, whatever is
 * written to it is dropped instead of queued, and the dropped bytes are
 * counted; conn.show reports them through the show() hook. It echoes what
 * it receives, so a peer that reads slowly loses data rather than making
 * connd buffer it: load shedding, for the rare protocols that want it.
 */
#include <connd/plugin.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

struct shed_conn {
    bool throttled;
    uint64_t dropped, dropped_writes;
};

static const struct connd_host *host;

static int shed_init(const struct connd_host *h, struct connd_plugin *self,
                     const char *config_json, void **state)
{
    (void)self;
    (void)config_json;
    host = h;
    *state = NULL;
    return 0;
}

static void shed_start(void *state, struct connd_conn *c)
{
    struct shed_conn *sc = calloc(1, sizeof(*sc));

    (void)state;
    if (!sc) {
        host->abort(c, "shed: out of memory");
        return;
    }
    host->set_user(c, sc);
}

static bool shed_received(void *state, struct connd_conn *c, const uint8_t *data,
                          size_t len, unsigned times)
{
    struct shed_conn *sc = host->get_user(c);

    (void)state;
    (void)times;
    /* Dropped in sent() while throttled; a write refused outright (over
     * max_pending) is shed the same way, and counted. */
    if (host->write(c, data, len) < 0 && sc) {
        sc->dropped += len;
        sc->dropped_writes++;
    }
    return true;
}

static enum connd_sent shed_sent(void *state, struct connd_conn *c, const uint8_t *data,
                                 size_t len, uint8_t **out, size_t *out_len)
{
    struct shed_conn *sc = host->get_user(c);

    (void)state;
    (void)data;
    (void)out;
    (void)out_len;
    if (!sc || !sc->throttled)
        return CONND_SENT_PASS;
    sc->dropped += len;
    sc->dropped_writes++;
    return CONND_SENT_DROP;
}

static void shed_throttled(void *state, struct connd_conn *c)
{
    struct shed_conn *sc = host->get_user(c);
    (void)state;
    if (sc)
        sc->throttled = true;
}

static void shed_unthrottled(void *state, struct connd_conn *c)
{
    struct shed_conn *sc = host->get_user(c);
    (void)state;
    if (sc)
        sc->throttled = false;
}

static int shed_show(void *state, struct connd_conn *c, char *buf, size_t len)
{
    struct shed_conn *sc = host->get_user(c);
    (void)state;
    if (!sc)
        return 0;
    int n = snprintf(buf, len,
                     "{\"dropped_bytes\": %" PRIu64 ", \"dropped_writes\": %" PRIu64
                     ", \"shedding\": %s}",
                     sc->dropped, sc->dropped_writes, sc->throttled ? "true" : "false");
    return n > 0 && (size_t)n < len ? n : 0;
}

static void shed_closed(void *state, struct connd_conn *c)
{
    struct shed_conn *sc = host->get_user(c);
    (void)state;
    if (sc && sc->dropped)
        host->conn_log(c, CONND_LOG_INFO, "shed: dropped %" PRIu64 " bytes in %" PRIu64
                                          " writes",
                       sc->dropped, sc->dropped_writes);
    free(sc);
}

static const struct connd_notify shed_notify = {
    .abi = CONND_PLUGIN_ABI,
    .size = sizeof(struct connd_notify),
    .name = "shed",
    .init = shed_init,
    .accepted = shed_start,
    .connected = shed_start,
    .adopted = shed_start,
    .received = shed_received,
    .sent = shed_sent,
    .throttled = shed_throttled,
    .unthrottled = shed_unthrottled,
    .closed = shed_closed,
    .show = shed_show,
};

CONND_EXPORT const struct connd_notify *connd_plugin_entry(void)
{
    return &shed_notify;
}
