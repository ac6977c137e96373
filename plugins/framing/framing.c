/*
 * framing: 4-byte big-endian length-prefixed messages, built on expect().
 * Each message is answered with a message of the same length whose payload
 * is the request's reversed. A length above config.max_frame (default
 * 65536) closes the connection with a logged reason; so does one above the
 * listener's max_size, which expect() refuses.
 *
 * Per connection the user data is the length of the payload being waited
 * for plus one, or 0 while waiting for a header.
 */
#include <connd/plugin.h>
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FRAMING_DEFAULT_MAX 65536

struct framing {
    const struct connd_host *h;
    struct connd_plugin *self;
    uint32_t max_frame;
};

static int framing_init(const struct connd_host *h, struct connd_plugin *self,
                        const char *config_json, void **state)
{
    json_t *cfg = json_loads(config_json, 0, NULL), *v;
    struct framing *f = calloc(1, sizeof(*f));

    if (!f || !cfg) {
        free(f);
        json_decref(cfg);
        return -ENOMEM;
    }
    f->h = h;
    f->self = self;
    f->max_frame = FRAMING_DEFAULT_MAX;
    if ((v = json_object_get(cfg, "max_frame"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > UINT32_MAX) {
            h->log(self, CONND_LOG_ERR, "config.max_frame: expected an integer 1..%u",
                   UINT32_MAX);
            json_decref(cfg);
            free(f);
            return -EINVAL;
        }
        f->max_frame = (uint32_t)json_integer_value(v);
    }
    json_decref(cfg);
    *state = f;
    return 0;
}

static void framing_fini(void *state)
{
    free(state);
}

static void framing_start(void *state, struct connd_conn *c)
{
    struct framing *f = state;
    f->h->set_user(c, NULL);
    /* A listener whose max_size is below the header cannot carry frames. */
    if (f->h->expect(c, 4) < 0)
        f->h->close(c, "framing: max_size below the 4-byte header");
}

static void framing_reply(struct framing *f, struct connd_conn *c, const uint8_t *payload,
                          size_t len)
{
    uint8_t head[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                       (uint8_t)len};
    uint8_t *rev = malloc(len ? len : 1);
    struct iovec iov[2] = {{head, 4}, {rev, len}};

    if (!rev) {
        f->h->abort(c, "framing: out of memory");
        return;
    }
    for (size_t i = 0; i < len; i++)
        rev[i] = payload[len - 1 - i];
    if (f->h->writev(c, iov, 2) < 0)
        f->h->abort(c, "framing: reply refused");
    free(rev);
}

static bool framing_received(void *state, struct connd_conn *c, const uint8_t *data,
                             size_t len, unsigned times)
{
    struct framing *f = state;
    uintptr_t want = (uintptr_t)f->h->get_user(c);
    char reason[96];

    (void)times;
    if (want == 0) { /* a header */
        uint32_t n = (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 |
                     (uint32_t)data[2] << 8 | data[3];
        (void)len;
        if (n > f->max_frame) {
            snprintf(reason, sizeof(reason), "framing: frame of %u bytes over max_frame %u",
                     n, f->max_frame);
            f->h->close(c, reason);
            return true;
        }
        if (n == 0) {
            framing_reply(f, c, NULL, 0);
            return true;
        }
        if (f->h->expect(c, n) < 0) {
            snprintf(reason, sizeof(reason), "framing: frame of %u bytes over max_size", n);
            f->h->close(c, reason);
            return true;
        }
        f->h->set_user(c, (void *)(uintptr_t)(n + 1));
        return true;
    }
    framing_reply(f, c, data, len);
    f->h->set_user(c, NULL);
    f->h->expect(c, 4);
    return true;
}

static const struct connd_notify framing_notify = {
    .abi = CONND_PLUGIN_ABI,
    .size = sizeof(struct connd_notify),
    .name = "framing",
    .init = framing_init,
    .fini = framing_fini,
    .accepted = framing_start,
    .connected = framing_start,
    .adopted = framing_start,
    .received = framing_received,
};

CONND_EXPORT const struct connd_notify *connd_plugin_entry(void)
{
    return &framing_notify;
}
