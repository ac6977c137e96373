/*
 * echo: writes back every byte it receives.
 *
 * Backpressure: when the connection is throttled (its pending bytes went
 * above high_watermark) echo mutes it for the reason "backpressure" and
 * unmutes when it is unthrottled, so a peer that sends without reading
 * cannot grow connd's memory past the watermarks: TCP flow control pushes
 * back on the peer instead.
 */
#include <connd/plugin.h>
#include <stdlib.h>

static const struct connd_host *host;

static int echo_init(const struct connd_host *h, struct connd_plugin *self,
                     const char *config_json, void **state)
{
    (void)self;
    (void)config_json;
    host = h;
    *state = NULL;
    return 0;
}

static void echo_start(void *state, struct connd_conn *c)
{
    (void)state;
    host->set_nodelay(c, true);
}

static bool echo_received(void *state, struct connd_conn *c, const uint8_t *data,
                          size_t len, unsigned times)
{
    (void)state;
    (void)times;
    if (host->write(c, data, len) < 0)
        host->abort(c, "echo: write refused");
    return true;
}

static void echo_throttled(void *state, struct connd_conn *c)
{
    (void)state;
    host->mute(c, "backpressure");
}

static void echo_unthrottled(void *state, struct connd_conn *c)
{
    (void)state;
    host->unmute(c, "backpressure");
}

static const struct connd_notify echo_notify = {
    .abi = CONND_PLUGIN_ABI,
    .size = sizeof(struct connd_notify),
    .name = "echo",
    .init = echo_init,
    .accepted = echo_start,
    .connected = echo_start,
    .received = echo_received,
    .throttled = echo_throttled,
    .unthrottled = echo_unthrottled,
};

CONND_EXPORT const struct connd_notify *connd_plugin_entry(void)
{
    return &echo_notify;
}
