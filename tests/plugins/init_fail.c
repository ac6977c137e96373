/* A plugin whose init() fails: connd must refuse it and never call fini(). */
#include <connd/plugin.h>
#include <errno.h>
#include <stdlib.h>

static int init_fail_init(const struct connd_host *h, struct connd_plugin *self,
                          const char *config_json, void **state)
{
    (void)config_json;
    (void)state;
    h->log(self, CONND_LOG_NOTICE, "init called");
    return -EINVAL;
}

static void init_fail_fini(void *state)
{
    (void)state;
    abort(); /* must never run after a failed init */
}

static const struct connd_notify notify = {
    .abi = CONND_PLUGIN_ABI,
    .size = sizeof(struct connd_notify),
    .name = "init_fail",
    .init = init_fail_init,
    .fini = init_fail_fini,
};

CONND_EXPORT const struct connd_notify *connd_plugin_entry(void)
{
    return &notify;
}
