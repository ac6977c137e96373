/* A notify table smaller than the first release: connd must refuse it. */
#include <connd/plugin.h>

static const struct connd_notify notify = {
    .abi = CONND_PLUGIN_ABI, .size = 16, .name = "small_size"};

CONND_EXPORT const struct connd_notify *connd_plugin_entry(void)
{
    return &notify;
}
