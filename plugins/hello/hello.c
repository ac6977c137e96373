/*
 * hello: greets each peer with config.greeting (default "hello\n"), then
 * hands the connection to the plugin instance config.next (default
 * "echo") with set_notify: the greeting shows a plugin writing first, the
 * hand-over that the next plugin takes the connection from there on, with
 * its adopted() hook run at once.
 */
#include <connd/plugin.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

struct hello {
    const struct connd_host *h;
    struct connd_plugin *self;
    char *greeting;
    char next[65];
};

static int hello_init(const struct connd_host *h, struct connd_plugin *self,
                      const char *config_json, void **state)
{
    json_t *cfg = json_loads(config_json, 0, NULL);
    json_t *greeting = json_object_get(cfg, "greeting"), *next = json_object_get(cfg, "next");
    struct hello *hl = calloc(1, sizeof(*hl));

    if (!cfg || !hl || (greeting && !json_is_string(greeting)) ||
        (next && (!json_is_string(next) || json_string_length(next) > 64))) {
        if (cfg && hl)
            h->log(self, CONND_LOG_ERR,
                   "config: \"greeting\" and \"next\" (a plugin name) must be strings");
        json_decref(cfg);
        free(hl);
        return -EINVAL;
    }
    hl->h = h;
    hl->self = self;
    hl->greeting = strdup(greeting ? json_string_value(greeting) : "hello\n");
    strcpy(hl->next, next ? json_string_value(next) : "echo");
    json_decref(cfg);
    if (!hl->greeting) {
        free(hl); /* fini() does not run after a failed init() */
        return -ENOMEM;
    }
    *state = hl;
    return 0;
}

static void hello_fini(void *state)
{
    struct hello *hl = state;
    free(hl->greeting);
    free(hl);
}

static void hello_accepted(void *state, struct connd_conn *c)
{
    struct hello *hl = state;
    int rc;

    if (hl->h->write(c, hl->greeting, strlen(hl->greeting)) < 0) {
        hl->h->abort(c, "hello: greeting refused");
        return;
    }
    if ((rc = hl->h->set_notify(c, hl->next)) < 0) {
        hl->h->conn_log(c, CONND_LOG_ERR, "hello: no plugin \"%s\" to hand over to (%d)",
                        hl->next, rc);
        hl->h->close(c, "hello: hand-over failed");
    }
}

static const struct connd_notify hello_notify = {
    .abi = CONND_PLUGIN_ABI,
    .size = sizeof(struct connd_notify),
    .name = "hello",
    .init = hello_init,
    .fini = hello_fini,
    .accepted = hello_accepted,
    .connected = hello_accepted,
};

CONND_EXPORT const struct connd_notify *connd_plugin_entry(void)
{
    return &hello_notify;
}
