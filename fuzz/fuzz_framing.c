/*
 * fuzz_framing.c: libFuzzer target for the framing plugin
 * (plugins/framing/framing.c, compiled into this target) run by the fake
 * host of connd/plugin-test.h: no sockets, no loop.
 *
 * Input layout:
 *   byte 0   flags: bits 0-1 max_frame (0: the default 65536, 1: 1 + P,
 *            2: 65535 + P, 3: 4294967295); bits 2-3 the listener's max_size
 *            (0: 16384, 1: 1 + P % 32, 2: 4096, 3: 1 MiB); bit 4: the peer
 *            sends EOF at the end; bit 5: a slow peer (1 + P bytes already
 *            pending, max_pending 16 + 4 * P); bit 6: a second connection
 *            gets the same chunks, interleaved with the first
 *   byte 1   P, the parameter of the choices above
 *   byte 2   K - 1: K (1..8) chunk sizes follow
 *   K bytes  chunk sizes, used in turn; 0 means "all the rest"
 *   rest     the bytes the peer sends, cut into those chunks
 *
 * Checked beyond the sanitizers, against a model of the protocol: the
 * bytes written are exactly one reply (same length prefix, payload
 * reversed) per complete frame, in order, up to the first frame over
 * max_frame or max_size, which closes the connection with the plugin's
 * reason (at once when max_size is below the 4-byte header), or the first
 * reply max_pending refuses, which aborts it; an open
 * connection expects the header or the rest of the payload and buffers
 * the rest; the plugin makes no host call after closed().
 */
#include <connd/plugin-test.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FZ_HEADER 3
#define FZ_MAX_CHUNKS 8

/* What the plugin should have done with one connection's bytes. */
struct fz_model {
    uint8_t *out; /* the replies */
    size_t out_len;
    size_t pos;     /* bytes consumed (headers and payloads) */
    size_t expect;  /* while open: 4 or the payload length */
    size_t pending; /* the fake kernel's queue */
    enum cpt_state state;
    char reason[96];
};

struct fz_params {
    uint32_t max_frame;
    size_t max_size, pending, max_pending;
    bool peer_eof, second;
};

static void __attribute__((noreturn)) fz_fail(const char *why, const char *detail)
{
    fprintf(stderr, "fuzz_framing: %s%s%s\n", why, detail ? ": " : "",
            detail ? detail : "");
    abort();
}

/* One reply of len payload bytes; false when max_pending refuses it. */
static bool fz_model_reply(struct fz_model *m, const struct fz_params *fp,
                           const uint8_t *payload, size_t len)
{
    size_t total = 4 + len;

    if (total > fp->max_pending || m->pending + total > fp->max_pending) {
        m->state = CPT_ABORTED;
        snprintf(m->reason, sizeof(m->reason), "framing: reply refused");
        return false;
    }
    if (m->pending) /* the kernel takes writes at once only while none wait */
        m->pending += total;
    m->out[m->out_len++] = (uint8_t)(len >> 24);
    m->out[m->out_len++] = (uint8_t)(len >> 16);
    m->out[m->out_len++] = (uint8_t)(len >> 8);
    m->out[m->out_len++] = (uint8_t)len;
    for (size_t i = 0; i < len; i++)
        m->out[m->out_len++] = payload[len - 1 - i];
    return true;
}

/* The protocol: 4-byte big-endian length, payload, answered reversed. */
static void fz_model_run(struct fz_model *m, const struct fz_params *fp,
                         const uint8_t *in, size_t n)
{
    m->state = CPT_OPEN;
    m->expect = 4;
    m->pending = fp->pending;
    if (fp->max_size < 4) { /* expect(4) fails: no frame fits */
        m->state = CPT_CLOSING;
        snprintf(m->reason, sizeof(m->reason),
                 "framing: max_size below the 4-byte header");
        return;
    }
    while (n - m->pos >= 4) {
        uint32_t hdr = (uint32_t)in[m->pos] << 24 | (uint32_t)in[m->pos + 1] << 16 |
                       (uint32_t)in[m->pos + 2] << 8 | in[m->pos + 3];

        if (hdr > fp->max_frame) {
            m->state = CPT_CLOSING;
            snprintf(m->reason, sizeof(m->reason),
                     "framing: frame of %u bytes over max_frame %u", hdr, fp->max_frame);
            return;
        }
        m->pos += 4;
        if (hdr == 0) {
            if (!fz_model_reply(m, fp, NULL, 0))
                return;
            continue;
        }
        if (hdr > fp->max_size) {
            m->state = CPT_CLOSING;
            snprintf(m->reason, sizeof(m->reason),
                     "framing: frame of %u bytes over max_size", hdr);
            return;
        }
        if (n - m->pos < hdr) {
            m->expect = hdr;
            return;
        }
        if (!fz_model_reply(m, fp, in + m->pos, hdr))
            return;
        m->pos += hdr;
    }
}

static void fz_check(struct connd_conn *c, const struct fz_model *m, size_t n)
{
    enum cpt_state st = cpt_conn_state(c);
    const char *reason = cpt_conn_reason(c);
    size_t len;
    const char *out = cpt_conn_output(c, &len);

    if (len != m->out_len || memcmp(out, m->out, len) != 0)
        fz_fail("the replies differ from the model's", NULL);
    if (m->state == CPT_OPEN) {
        if (st != CPT_OPEN)
            fz_fail("closed a connection that sent well-formed frames", reason);
        if (cpt_conn_expect(c) != m->expect || cpt_conn_buffered(c) != n - m->pos)
            fz_fail("expects or buffers other than the model", NULL);
        return;
    }
    if (m->state == CPT_ABORTED ? st != CPT_ABORTED
                                : st != CPT_CLOSING && st != CPT_CLOSED)
        fz_fail("the connection did not end as it should", m->reason);
    if (!reason || strcmp(reason, m->reason) != 0)
        fz_fail("another close reason than", m->reason);
}

/* The header's choices; false when the input is too short to hold them. */
static bool fz_params(const uint8_t *data, size_t size, struct fz_params *fp, size_t *k)
{
    static const size_t sizes[] = {16384, 0, 4096, 1 << 20};
    static const uint32_t frames[] = {65536, 0, 0, UINT32_MAX};
    uint8_t flags, p;

    if (size < FZ_HEADER)
        return false;
    flags = data[0];
    p = data[1];
    *k = 1 + (data[2] & (FZ_MAX_CHUNKS - 1));
    if (size < FZ_HEADER + *k)
        return false;
    fp->max_frame = frames[flags & 3];
    if ((flags & 3) == 1)
        fp->max_frame = 1u + p;
    else if ((flags & 3) == 2)
        fp->max_frame = 65535u + p;
    fp->max_size = sizes[(flags >> 2) & 3];
    if (((flags >> 2) & 3) == 1)
        fp->max_size = 1 + p % 32;
    fp->peer_eof = flags & 0x10;
    fp->pending = flags & 0x20 ? 1 + (size_t)p : 0;
    fp->max_pending = flags & 0x20 ? 16 + 4 * (size_t)p : 67108864;
    fp->second = flags & 0x40;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One input (borrowed) in a fake host of its own, freed before returning:
 * returns 0, or aborts on a failed check. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz_params fp;
    struct fz_model m = {0};
    struct connd_conn *conns[2] = {NULL, NULL};
    struct connd_plugin *p;
    struct cpt_host *h;
    const uint8_t *chunks, *in;
    char config[64] = "{}";
    size_t k, n, at = 0;
    int nconns;

    if (!fz_params(data, size, &fp, &k))
        return 0;
    chunks = data + FZ_HEADER;
    in = chunks + k;
    n = size - FZ_HEADER - k;

    if (!(h = cpt_host_new()))
        abort();
    cpt_host_limits(h)->max_size = fp.max_size;
    cpt_host_limits(h)->max_pending = fp.max_pending;
    if (fp.max_pending < cpt_host_limits(h)->high_watermark)
        cpt_host_limits(h)->high_watermark = cpt_host_limits(h)->low_watermark = 0;
    if ((data[0] & 3) != 0)
        snprintf(config, sizeof(config), "{\"max_frame\": %u}", fp.max_frame);
    if (cpt_plugin_load(h, "framing", connd_plugin_entry(), config, &p) != 0)
        fz_fail("the plugin refused its config", config);
    nconns = fp.second ? 2 : 1;
    for (int i = 0; i < nconns; i++) {
        if (!(conns[i] = cpt_conn_accept(p, NULL)))
            abort();
        if (fp.pending && cpt_conn_set_pending(conns[i], fp.pending) != 0)
            fz_fail("set_pending failed on a new connection", NULL);
    }
    for (size_t i = 0; at < n; i++) {
        size_t len = chunks[i % k] ? chunks[i % k] : n - at;

        if (len > n - at)
            len = n - at;
        for (int j = 0; j < nconns; j++)
            cpt_conn_receive(conns[j], in + at, len);
        at += len;
    }

    if (!(m.out = malloc(n + 1)))
        abort();
    fz_model_run(&m, &fp, in, n);
    for (int j = 0; j < nconns; j++)
        fz_check(conns[j], &m, n);
    free(m.out);
    if (fp.peer_eof)
        for (int j = 0; j < nconns; j++)
            if (cpt_conn_peer_close(conns[j]) == 0 &&
                cpt_conn_state(conns[j]) == CPT_OPEN)
                fz_fail("still open after the peer's EOF", NULL);
    if (cpt_host_misuse(h))
        fz_fail("a host call after closed()", cpt_host_log(h));
    cpt_host_free(h);
    return 0;
}
