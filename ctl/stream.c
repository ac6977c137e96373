/*
 * stream.c: the two commands that are more than one request and one reply.
 * write sends standard input or a file as a series of conn.write calls of
 * base64 chunks, so binary data of any size fits the 1 MiB line limit;
 * watch subscribes to events and prints them until a signal or until connd
 * goes away.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "table.h"

/* Raw bytes per conn.write: 4/3 of it in base64 stays well under a line. */
#define WRITE_CHUNK (512 * 1024)

/* ---- write --------------------------------------------------------------- */

/* RFC 4648 base64 of len bytes; malloc'd, NULL when out of memory. */
static char *base64_encode(const uint8_t *in, size_t len)
{
    static const char abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((len + 2) / 3 * 4 + 1), *p = out;

    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        *p++ = abc[v >> 18];
        *p++ = abc[(v >> 12) & 63];
        *p++ = i + 1 < len ? abc[(v >> 6) & 63] : '=';
        *p++ = i + 2 < len ? abc[v & 63] : '=';
    }
    *p = '\0';
    return out;
}

/* Read until buf is full or EOF; returns the count or -errno. */
static ssize_t read_full(int fd, uint8_t *buf, size_t len)
{
    size_t n = 0;

    while (n < len) {
        ssize_t r = read(fd, buf + n, len - n);
        if (r == 0)
            break;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        n += (size_t)r;
    }
    return (ssize_t)n;
}

/* One conn.write of len bytes (base64 unless text is valid UTF-8), adding
 * what was queued to *total and keeping the last token. */
static int write_chunk(struct ctl *x, json_t *id, const uint8_t *data, size_t len,
                       bool text, json_t *sum)
{
    json_t *p = json_pack("{s:O}", "id", id), *res, *s = NULL;
    char *b64 = NULL;
    int rc;

    if (text)
        s = json_stringn((const char *)data, len);
    if (p && s)
        json_object_set_new(p, "data", s);
    else if (p && (b64 = base64_encode(data, len)))
        json_object_set_new(p, "data_base64", json_string(b64));
    free(b64);
    if (!p || json_object_size(p) != 2) {
        json_decref(p);
        fprintf(stderr, "connctl: write: out of memory\n");
        return CTL_EXIT_REPLY;
    }
    rc = cmd_call(x, x->cmd->method, p, &res);
    json_decref(p);
    if (rc != CTL_EXIT_OK)
        return rc;
    json_object_set_new(sum, "queued",
                        json_integer(json_integer_value(json_object_get(sum, "queued")) +
                                     json_integer_value(json_object_get(res, "queued"))));
    json_object_set(sum, "token", json_object_get(res, "token"));
    json_object_set_new(
        sum, "writes",
        json_integer(json_integer_value(json_object_get(sum, "writes")) + 1));
    json_decref(res);
    return CTL_EXIT_OK;
}

/* Stream fd in chunks; at least one call, so an empty input still checks
 * that the connection exists. */
static int write_stream(struct ctl *x, json_t *id, int fd, const char *what, json_t *sum)
{
    uint8_t *buf = malloc(WRITE_CHUNK);
    int rc = CTL_EXIT_OK;
    bool first = true;

    if (!buf) {
        fprintf(stderr, "connctl: write: out of memory\n");
        return CTL_EXIT_REPLY;
    }
    while (rc == CTL_EXIT_OK) {
        ssize_t n = read_full(fd, buf, WRITE_CHUNK);
        if (n < 0) {
            fprintf(stderr, "connctl: write: reading %s: %s%s\n", what, strerror((int)-n),
                    first ? "" : " (some bytes were queued)");
            rc = CTL_EXIT_REPLY;
            break;
        }
        if (n == 0 && !first)
            break;
        rc = write_chunk(x, id, buf, (size_t)n, false, sum);
        first = false;
        if (n < WRITE_CHUNK)
            break;
    }
    free(buf);
    return rc;
}

int stream_write(struct ctl *x, json_t *params)
{
    json_t *id = json_object_get(params, "id"), *sum;
    json_t *text = json_object_get(params, "data");
    const char *file = json_string_value(json_object_get(params, "file"));
    bool b64 = json_object_get(params, "data_base64") != NULL;
    bool in = text && strcmp(json_string_value(text), "-") == 0;
    int fd = STDIN_FILENO, rc;

    if (!!text + !!file + b64 != 1)
        return args_error(x->cmd, "give exactly one of TEXT, -, --base64 B64, --file F");
    if (file && (fd = open(file, O_RDONLY | O_CLOEXEC)) < 0) {
        fprintf(stderr, "connctl: write: %s: %s\n", file, strerror(errno));
        return CTL_EXIT_USAGE;
    }
    if (!(sum = json_pack("{s:O, s:I, s:I, s:I}", "id", id, "queued", (json_int_t)0,
                          "token", (json_int_t)0, "writes", (json_int_t)0))) {
        if (file)
            close(fd);
        fprintf(stderr, "connctl: write: out of memory\n");
        return CTL_EXIT_REPLY;
    }
    if (file || in) {
        rc = write_stream(x, id, fd, file ? file : "standard input", sum);
    } else if (text) {
        /* Text from argv goes as "data" when it is UTF-8, else base64. */
        const char *s = json_string_value(text);
        rc = write_chunk(x, id, (const uint8_t *)s, strlen(s), true, sum);
    } else {
        json_t *res;
        rc = cmd_call(x, x->cmd->method, params, &res);
        if (rc == CTL_EXIT_OK) {
            json_decref(sum);
            sum = res;
        }
    }
    if (file)
        close(fd);
    if (rc == CTL_EXIT_OK)
        cmd_output(x, sum);
    json_decref(sum);
    return rc;
}

/* ---- watch --------------------------------------------------------------- */

static volatile sig_atomic_t watch_stop;

static void watch_signal_cb(int sig)
{
    watch_stop = sig;
}

/* "12:03:04.567 accepted id=5 listener=echo plugin=echo" */
static void print_event(json_t *ev)
{
    json_int_t ts = json_integer_value(json_object_get(ev, "ts_ms"));
    time_t secs = (time_t)(ts / 1000);
    const char *key, *type = json_string_value(json_object_get(ev, "type"));
    struct tm tm;
    char when[32] = "--:--:--";
    json_t *v;

    if (localtime_r(&secs, &tm))
        strftime(when, sizeof(when), "%H:%M:%S", &tm);
    printf("%s.%03d %s", when, (int)(ts % 1000), type ? type : "?");
    json_object_foreach(ev, key, v)
    {
        char buf[512];
        if (strcmp(key, "ts_ms") == 0 || strcmp(key, "type") == 0 ||
            strcmp(key, "seq") == 0)
            continue;
        table_value(v, FMT_AUTO, buf, sizeof(buf));
        printf(" %s=%s", key, buf);
    }
    putchar('\n');
}

int stream_watch(struct ctl *x, json_t *params)
{
    struct sigaction sa = {.sa_handler = watch_signal_cb}; /* no SA_RESTART */
    sigset_t block, old;
    json_t *res, *msg;
    int rc;

    /* SIGINT and SIGTERM stay blocked except inside ppoll, so a signal
     * is seen exactly there and never cuts a line in half. */
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if ((rc = cmd_call(x, x->cmd->method, params, &res)) != CTL_EXIT_OK)
        return rc;
    json_decref(res);
    fprintf(stderr, "connctl: watching events on %s; interrupt to stop\n", x->socket);
    while (!watch_stop) {
        json_t *ev;
        rc = client_next(&x->cl, -1, &old, &msg);
        if (rc == CLIENT_INTERRUPTED)
            continue;
        if (rc != CLIENT_RESULT) {
            fflush(stdout);
            fprintf(stderr, "connctl: watch: %s\n", x->cl.err);
            return CTL_EXIT_UNREACHABLE;
        }
        ev = json_object_get(msg, "params");
        if (json_is_object(ev)) {
            if (x->json) {
                json_dumpf(ev, stdout, JSON_COMPACT);
                putchar('\n');
            } else {
                print_event(ev);
            }
            fflush(stdout);
        }
        json_decref(msg);
    }
    return CTL_EXIT_OK;
}
