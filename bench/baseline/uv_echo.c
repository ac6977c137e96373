/*
 * uv_echo: the smallest correct libuv echo server, the floor bench/run
 * compares connd+echo with (what libuv gives with no framework on top).
 *
 *   uv_echo PORT [HOST]        (HOST defaults to 127.0.0.1)
 *
 * Each read buffer (libuv's suggested size) becomes the write request's
 * payload and is freed by the write callback, so nothing is copied. Above
 * HIGH bytes queued for a peer that does not read, reading stops; it
 * resumes at LOW. EOF: the queued writes drain, then a FIN (uv_shutdown),
 * then the handle closes. Any error closes the connection. TCP_NODELAY is
 * on, as connd's echo plugin sets it.
 */
#define _GNU_SOURCE /* uv.h needs POSIX types under -std=c11 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#define HIGH (1024 * 1024)
#define LOW (256 * 1024)

struct client {
    uv_tcp_t tcp; /* first: the handle pointer is the client pointer */
    uv_shutdown_t shutdown;
    int reading;
};

struct wreq {
    uv_write_t req;
    uv_buf_t buf;
};

static uv_loop_t *loop;

static void on_close(uv_handle_t *h)
{
    free(h);
}

static void close_client(struct client *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct client *c = (struct client *)req->handle;

    free(w->buf.base);
    free(w);
    if (status < 0) {
        close_client(c);
        return;
    }
    if (!c->reading && c->tcp.write_queue_size <= LOW && !uv_is_closing((uv_handle_t *)c) &&
        uv_read_start((uv_stream_t *)c, on_alloc, on_read) == 0)
        c->reading = 1;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    close_client((struct client *)req->handle);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct client *c = (struct client *)s;

    if (n > 0) {
        struct wreq *w = malloc(sizeof(*w));
        if (!w) {
            free(buf->base);
            close_client(c);
            return;
        }
        w->buf = uv_buf_init(buf->base, (unsigned)n);
        if (uv_write(&w->req, s, &w->buf, 1, on_write) < 0) {
            free(buf->base);
            free(w);
            close_client(c);
            return;
        }
        if (s->write_queue_size > HIGH) {
            uv_read_stop(s);
            c->reading = 0;
        }
        return;
    }
    free(buf->base);
    if (n == UV_EOF) {
        uv_read_stop(s);
        c->reading = -1; /* never again */
        if (uv_shutdown(&c->shutdown, s, on_shutdown) < 0)
            close_client(c);
    } else if (n < 0) {
        close_client(c);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct client *c;

    if (status < 0)
        return;
    if (!(c = calloc(1, sizeof(*c))))
        return;
    uv_tcp_init(loop, &c->tcp);
    if (uv_accept(server, (uv_stream_t *)c) < 0) {
        close_client(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)c, on_alloc, on_read) == 0)
        c->reading = 1;
    else
        close_client(c);
}

int main(int argc, char **argv)
{
    uv_tcp_t server;
    struct sockaddr_in addr;
    int rc;

    if (argc < 2) {
        fprintf(stderr, "usage: uv_echo PORT [HOST]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    uv_tcp_init(loop, &server);
    if ((rc = uv_ip4_addr(argc > 2 ? argv[2] : "127.0.0.1", atoi(argv[1]), &addr)) < 0 ||
        (rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&server, 4096, on_connection)) < 0) {
        fprintf(stderr, "uv_echo: %s\n", uv_strerror(rc));
        return 1;
    }
    return uv_run(loop, UV_RUN_DEFAULT);
}
