/*
 * discard: reads and drops every byte (RFC 863). Counts what it dropped
 * and logs the total of each connection at debug level when it closes.
 */
#include <connd/plugin.h>
#include <stdint.h>

static const struct connd_host *host;

static int discard_init(const struct connd_host *h, struct connd_plugin *self,
                        const char *config_json, void **state)
{
    (void)self;
    (void)config_json;
    host = h;
    *state = NULL;
    return 0;
}

static bool discard_received(void *state, struct connd_conn *c, const uint8_t *data,
                             size_t len, unsigned times)
{
    (void)state;
    (void)data;
    (void)times;
    host->set_user(c, (void *)((uintptr_t)host->get_user(c) + len));
    return true;
}

static void discard_closed(void *state, struct connd_conn *c)
{
    (void)state;
    host->conn_log(c, CONND_LOG_DEBUG, "discard: dropped %zu bytes",
                   (size_t)(uintptr_t)host->get_user(c));
}

static const struct connd_notify discard_notify = {
    .abi = CONND_PLUGIN_ABI,
    .size = sizeof(struct connd_notify),
    .name = "discard",
    .init = discard_init,
    .received = discard_received,
    .closed = discard_closed,
};

CONND_EXPORT const struct connd_notify *connd_plugin_entry(void)
{
    return &discard_notify;
}
