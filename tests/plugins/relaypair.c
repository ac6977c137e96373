/*
 * relaypair: a test plugin for the host's relay(). It pairs the
 * connections a listener accepts two by two (the first waits, muted, for
 * the second) and relays each pair both ways, so a test can drive both
 * ends of a relay with plain client sockets. Every event is logged at
 * notice level as "plugin NAME: ...":
 *
 *   "waiting id=N"                  accepted, muted ("pair") until a partner
 *   "pair a=A b=B self=S rc=R again=G busy=U"
 *                                   B arrived: S is relay(B, B) (-EINVAL), U
 *                                   relay(B, P) with P a still-open member of
 *                                   the previous pair (-EBUSY; "none" without
 *                                   one), both made before R = relay(A, B),
 *                                   and G = relay(B, A) again (0); then
 *                                   " foreign=F": F is relay(B, X) with X
 *                                   the first member of the latest pair of
 *                                   another instance of this file, while
 *                                   open (-EPERM), or "none"
 *   "throttled id=N", "unthrottled id=N"
 *                                   N's partner is muted ("pair-bp") and
 *                                   unmuted, as the proxy does
 *   "unrelay id=N rc=R"             N's peer sent EOF: R is relay(N, NULL);
 *                                   the partner's write side is shut down
 *   "closed id=N relay_rc=R received=X sent=Y"
 *                                   R is relay(N, partner) inside closed()
 *                                   (-ENOTCONN; "none" without a partner); X
 *                                   and Y count the bytes of every received()
 *                                   and sent() call of this instance so far
 *
 * received() writes what it gets to the partner unchanged, as relay()
 * requires, and closes its connection when there is no partner or the
 * write fails. A partner's closed() closes the other gracefully.
 *
 * Built twice: "relaypair" has no sent() hook, so relayed bytes may be
 * spliced; "relaypair_sent" (-DRELAYPAIR_SENT) has one that passes every
 * write through unchanged and counts it, which must keep connd from
 * splicing to its connections at all.
 *
 * The user data of a paired connection is its partner. connd cannot tell
 * this plugin that conn.set_notify took a connection away, so a test that
 * hands one member of a pair to another plugin must hand over the other
 * too, before either closes.
 */
#include <connd/plugin.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#define PAIR_REASON "pair"
#define BP_REASON "pair-bp"

struct rp {
    const struct connd_host *h;
    struct connd_plugin *self;
    struct connd_conn *waiting; /* accepted, no partner yet */
    struct connd_conn *prev;    /* first member of the latest pair, while open */
    unsigned long long received, sent;
};

#define LOG(rp, ...) (rp)->h->log((rp)->self, CONND_LOG_NOTICE, __VA_ARGS__)

/* The first member of the latest pair of any instance loaded from this
 * file (instances share the file's statics), for the "foreign" check. */
static struct {
    struct rp *owner;
    struct connd_conn *c;
} latest;

static unsigned long long cid(const struct rp *rp, const struct connd_conn *c)
{
    return (unsigned long long)rp->h->id(c);
}

static int rp_init(const struct connd_host *h, struct connd_plugin *self,
                   const char *config_json, void **state)
{
    struct rp *rp;

    (void)config_json;
    if (!CONND_HOST_HAS(h, relay) || !CONND_HOST_HAS(h, shutdown)) {
        h->log(self, CONND_LOG_ERR, "connd has no relay() or shutdown()");
        return -ENOSYS;
    }
    if (!(rp = calloc(1, sizeof(*rp))))
        return -ENOMEM;
    rp->h = h;
    rp->self = self;
    *state = rp;
    return 0;
}

static void rp_fini(void *state)
{
    if (latest.owner == state)
        latest.owner = NULL, latest.c = NULL;
    free(state);
}

static void rp_accepted(void *state, struct connd_conn *c)
{
    struct rp *rp = state;
    struct connd_conn *a = rp->waiting;
    char busy[16] = "none", foreign[16] = "none";
    int self, rc, again;

    if (!a) {
        rp->waiting = c;
        rp->h->mute(c, PAIR_REASON);
        LOG(rp, "waiting id=%llu", cid(rp, c));
        return;
    }
    rp->waiting = NULL;
    rp->h->set_user(a, c);
    rp->h->set_user(c, a);
    self = rp->h->relay(c, c);
    /* Before c is relayed itself, so that only prev's relay can refuse. */
    if (rp->prev)
        snprintf(busy, sizeof(busy), "%d", rp->h->relay(c, rp->prev));
    if (latest.c && latest.owner != rp)
        snprintf(foreign, sizeof(foreign), "%d", rp->h->relay(c, latest.c));
    rc = rp->h->relay(a, c);
    again = rp->h->relay(c, a);
    LOG(rp, "pair a=%llu b=%llu self=%d rc=%d again=%d busy=%s foreign=%s", cid(rp, a),
        cid(rp, c), self, rc, again, busy, foreign);
    rp->prev = a;
    latest.owner = rp;
    latest.c = a;
    rp->h->unmute(a, PAIR_REASON);
}

static bool rp_received(void *state, struct connd_conn *c, const uint8_t *data,
                        size_t len, unsigned times)
{
    struct rp *rp = state;
    struct connd_conn *to = rp->h->get_user(c);

    (void)times;
    rp->received += len;
    if (!to)
        rp->h->close(c, "relaypair: no partner");
    else if (rp->h->write(to, data, len) < 0)
        rp->h->close(c, "relaypair: partner refused the bytes");
    return true;
}

/* c cannot take more: stop reading what would be written to it. */
static void rp_throttled(void *state, struct connd_conn *c)
{
    struct rp *rp = state;
    struct connd_conn *from = rp->h->get_user(c);

    LOG(rp, "throttled id=%llu", cid(rp, c));
    if (from)
        rp->h->mute(from, BP_REASON);
}

static void rp_unthrottled(void *state, struct connd_conn *c)
{
    struct rp *rp = state;
    struct connd_conn *from = rp->h->get_user(c);

    LOG(rp, "unthrottled id=%llu", cid(rp, c));
    if (from)
        rp->h->unmute(from, BP_REASON);
}

/* EOF from c: it ends the relay, and the partner gets a FIN after what is
 * queued for it. c closes once its own write side is shut down too. */
static void rp_peer_closed(void *state, struct connd_conn *c)
{
    struct rp *rp = state;
    struct connd_conn *to = rp->h->get_user(c);

    LOG(rp, "unrelay id=%llu rc=%d", cid(rp, c), rp->h->relay(c, NULL));
    if (to)
        rp->h->shutdown(to);
    else
        rp->h->close(c, "relaypair: peer closed without a partner");
}

static void rp_closed(void *state, struct connd_conn *c)
{
    struct rp *rp = state;
    struct connd_conn *to = rp->h->get_user(c);
    char relay_rc[16] = "none";

    if (to) {
        /* c is closed: this must be refused, not relay a dying connection. */
        snprintf(relay_rc, sizeof(relay_rc), "%d", rp->h->relay(c, to));
        rp->h->set_user(to, NULL);
        rp->h->close(to, "relaypair: partner closed");
    }
    LOG(rp, "closed id=%llu relay_rc=%s received=%llu sent=%llu", cid(rp, c), relay_rc,
        rp->received, rp->sent);
    if (rp->waiting == c)
        rp->waiting = NULL;
    if (rp->prev == c)
        rp->prev = NULL;
    if (latest.c == c)
        latest.c = NULL;
}

#ifdef RELAYPAIR_SENT
static enum connd_sent rp_sent(void *state, struct connd_conn *c, const uint8_t *data,
                               size_t len, uint8_t **out, size_t *out_len)
{
    struct rp *rp = state;

    (void)c;
    (void)data;
    (void)out;
    (void)out_len;
    rp->sent += len;
    return CONND_SENT_PASS;
}
#define RP_NAME "relaypair_sent"
#else
#define RP_NAME "relaypair"
#endif

static const struct connd_notify rp_notify = {
    .abi = CONND_PLUGIN_ABI,
    .size = sizeof(struct connd_notify),
    .name = RP_NAME,
    .init = rp_init,
    .fini = rp_fini,
    .accepted = rp_accepted,
    .received = rp_received,
#ifdef RELAYPAIR_SENT
    .sent = rp_sent,
#endif
    .throttled = rp_throttled,
    .unthrottled = rp_unthrottled,
    .peer_closed = rp_peer_closed,
    .closed = rp_closed,
};

CONND_EXPORT const struct connd_notify *connd_plugin_entry(void)
{
    return &rp_notify;
}
