/*
 * upper: a connd notifier plugin that sends back every byte it receives,
 * upper-cased ("hello" comes back as "HELLO"). It is the template for your
 * own plugin: copy this directory, rename things, change what the hooks do.
 *
 * What it shows, in the order connd calls it:
 * - connd_plugin_entry(), the one exported symbol, returns a static
 *   struct connd_notify; hooks left out stay NULL and connd skips them.
 * - init() parses the instance's config (JSON text) and keeps the host
 *   table; fini() frees what init() made, once.
 * - Per-connection state hung on the connection with set_user(), created
 *   when a connection starts and freed in closed(), which fires exactly
 *   once for every connection this plugin saw.
 * - Backpressure: mute the connection while it is throttled, as the
 *   bundled echo does, so a peer that never reads cannot grow connd.
 * - Half-close with peer_closed() and shutdown(), checking connd_host.size
 *   before calling a host member newer than the first ABI 1 release.
 *
 * Config (every key optional; unknown keys are refused):
 *   "greeting"  a string sent to each new connection, e.g. "hi\n"
 *
 * Every hook runs on connd's loop thread, as does every host function it
 * calls. Nothing here may block: no sleeping, no blocking I/O, no waiting
 * for a lock another thread holds.
 */
#include <connd/plugin.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The reason this plugin mutes for; conn.show lists it while in force. */
#define MUTE_REASON "backpressure"

/* One instance: one entry of the config's "plugins". A config may load the
 * same file twice under two names, so instance data lives here, never in
 * globals. */
struct upper {
    const struct connd_host *h; /* owned by connd, valid until fini() */
    struct connd_plugin *self;  /* names this instance in host calls */
    char *greeting;             /* NULL: send none */
    size_t greeting_len;
};

/* One connection, hung on it with set_user(). connd never reads it. */
struct upper_conn {
    uint64_t bytes;
};

/* ---- instance ----------------------------------------------------------- */

/* Parse the config and make the instance. Errors are logged once, naming
 * the key as connd's own config errors do; the negative errno return makes
 * connd refuse the plugin (and fini() is not called). */
static int upper_init(const struct connd_host *h, struct connd_plugin *self,
                      const char *config_json, void **state)
{
    struct upper *u;
    json_t *cfg;
    int rc = -EINVAL;

    /* config_json is borrowed for this call only: parse it now and copy
     * what is kept. connd always passes an object ("{}" without "config"). */
    if (!(cfg = json_loads(config_json, 0, NULL)))
        return -ENOMEM;
    if (!(u = calloc(1, sizeof(*u)))) {
        json_decref(cfg);
        return -ENOMEM;
    }
    u->h = h;
    u->self = self;
    for (void *it = json_object_iter(cfg); it; it = json_object_iter_next(cfg, it)) {
        const char *key = json_object_iter_key(it);
        json_t *v = json_object_iter_value(it);

        if (strcmp(key, "greeting") == 0) {
            if (!json_is_string(v)) {
                h->log(self, CONND_LOG_ERR, "config.greeting: expected string");
                goto fail;
            }
            /* The string may hold NUL bytes: copy by length. */
            u->greeting_len = json_string_length(v);
            if (!(u->greeting = malloc(u->greeting_len + 1))) {
                rc = -ENOMEM;
                goto fail;
            }
            memcpy(u->greeting, json_string_value(v), u->greeting_len + 1);
        } else {
            h->log(self, CONND_LOG_ERR, "config.%s: unknown key", key);
            goto fail;
        }
    }
    json_decref(cfg);
    *state = u;
    return 0;
fail:
    json_decref(cfg);
    free(u->greeting);
    free(u);
    return rc;
}

/* Called once, after the instance's last connection has closed and after
 * connd has stopped its timers. */
static void upper_fini(void *state)
{
    struct upper *u = state;

    free(u->greeting);
    free(u);
}

/* A listener that names this instance started accepting. */
static void upper_listening(void *state, const char *listener)
{
    struct upper *u = state;

    u->h->log(u->self, CONND_LOG_DEBUG, "serving listener %s", listener);
}

/* ---- connections -------------------------------------------------------- */

/* A connection became ours: accepted by a listener, an outgoing one that
 * connected, or one handed over with set_notify() (adopted). */
static void upper_start(void *state, struct connd_conn *c)
{
    struct upper *u = state;
    struct upper_conn *uc = calloc(1, sizeof(*uc));

    if (!uc) {
        /* closed() still follows, and finds no user data. */
        u->h->abort(c, "upper: out of memory");
        return;
    }
    u->h->set_user(c, uc);
    /* Replies are small and interactive: do not let Nagle hold them. */
    u->h->set_nodelay(c, true);
    /* write() copies the bytes before it returns; they stay ours. */
    if (u->greeting && u->h->write(c, u->greeting, u->greeting_len) < 0)
        u->h->abort(c, "upper: greeting refused");
}

/* Bytes from the peer. `data` is connd's read buffer, borrowed until we
 * return, so the upper-cased copy is made into a buffer of our own. */
static bool upper_received(void *state, struct connd_conn *c, const uint8_t *data,
                           size_t len, unsigned times)
{
    struct upper *u = state;
    struct upper_conn *uc = u->h->get_user(c);
    uint8_t buf[4096];
    int rc;

    (void)times; /* how many received() calls this read turn: unused here */
    if (uc)
        uc->bytes += len;
    while (len > 0) {
        size_t n = len < sizeof(buf) ? len : sizeof(buf);

        /* ASCII only, independent of the locale: the bytes need not be text. */
        for (size_t i = 0; i < n; i++)
            buf[i] = data[i] >= 'a' && data[i] <= 'z' ? (uint8_t)(data[i] - 'a' + 'A')
                                                      : data[i];
        /* A refused write is never dropped silently: the errno says why
         * (-ENOBUFS: the peer is not reading and max_pending is reached).
         * Here that ends the connection; abort() drops what is queued. */
        if ((rc = u->h->write(c, buf, n)) < 0) {
            u->h->conn_log(c, CONND_LOG_WARNING, "upper: write refused: %s",
                           strerror(-rc));
            u->h->abort(c, "upper: write refused");
            break;
        }
        data += n;
        len -= n;
    }
    /* true: keep reading. false would pause reading until a later loop turn
     * (the rest of the buffer is kept), letting other connections run. */
    return true;
}

/* More than high_watermark bytes wait for the peer: stop reading from it,
 * so that it has to read before it can make us write more. Mute reasons are
 * independent flags, so this does not undo an operator's mute. */
static void upper_throttled(void *state, struct connd_conn *c)
{
    struct upper *u = state;

    u->h->mute(c, MUTE_REASON);
}

static void upper_unthrottled(void *state, struct connd_conn *c)
{
    struct upper *u = state;

    u->h->unmute(c, MUTE_REASON);
}

/* The peer sent EOF. With this hook set connd leaves the decision to the
 * plugin (without it, EOF starts a graceful close). upper finishes the
 * half-close: what is queued is still delivered, then our FIN, and connd
 * closes the connection. A plugin with something left to say (a summary, a
 * trailer) would write() it here first.
 *
 * shutdown() came after the first ABI 1 release; check that this connd's
 * host table has it, and fall back to a graceful close otherwise. */
static void upper_peer_closed(void *state, struct connd_conn *c)
{
    struct upper *u = state;

    if (CONND_HOST_HAS(u->h, shutdown))
        u->h->shutdown(c);
    else
        u->h->close(c, "upper: peer closed");
}

/* The connection is gone: exactly once, after every other hook, c valid
 * until we return. Free what hangs on it. uc is NULL when the connection
 * never started (an outgoing one that failed, or calloc failed). */
static void upper_closed(void *state, struct connd_conn *c)
{
    struct upper *u = state;
    struct upper_conn *uc = u->h->get_user(c);

    if (!uc)
        return;
    u->h->conn_log(c, CONND_LOG_DEBUG, "upper: %" PRIu64 " bytes upper-cased", uc->bytes);
    u->h->set_user(c, NULL);
    free(uc);
}

/* conn.show (connctl show ID): a JSON object about c, written into buf. */
static int upper_show(void *state, struct connd_conn *c, char *buf, size_t len)
{
    struct upper *u = state;
    struct upper_conn *uc = u->h->get_user(c);
    int n;

    if (!uc)
        return 0;
    n = snprintf(buf, len, "{\"bytes_upper_cased\":%" PRIu64 "}", uc->bytes);
    return n > 0 && (size_t)n < len ? n : 0;
}

/* ---- the entry point ---------------------------------------------------- */

/* Static storage: connd copies at most .size bytes of it at load time. */
static const struct connd_notify upper_notify = {
    .abi = CONND_PLUGIN_ABI,
    .size = sizeof(struct connd_notify),
    .name = "upper",
    .init = upper_init,
    .fini = upper_fini,
    .listening = upper_listening,
    .accepted = upper_start,
    .connected = upper_start,
    .adopted = upper_start,
    .received = upper_received,
    .throttled = upper_throttled,
    .unthrottled = upper_unthrottled,
    .peer_closed = upper_peer_closed,
    .closed = upper_closed,
    .show = upper_show,
};

/* The only symbol this plugin exports: CONND_EXPORT makes it visible while
 * -fvisibility=hidden hides everything else. */
CONND_EXPORT const struct connd_notify *connd_plugin_entry(void)
{
    return &upper_notify;
}
