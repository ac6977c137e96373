/* A plugin built for a future ABI: connd must refuse it. */
#include <connd/plugin.h>

static const struct connd_notify notify = {
    .abi = CONND_PLUGIN_ABI + 98, .size = sizeof(struct connd_notify), .name = "bad_abi"};

CONND_EXPORT const struct connd_notify *connd_plugin_entry(void)
{
    return &notify;
}
