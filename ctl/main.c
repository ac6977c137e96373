/*
 * main.c: connctl's entry point. Owns the global options (which come
 * before the command), where the control socket is (-s, then
 * $CONND_SOCKET, then the daemon's default path), the reply timeout
 * ($CONNCTL_TIMEOUT) and the exit status: 0 success, 1 an error reply,
 * 2 a usage error, 3 connd cannot be reached. Commands are rows of the
 * table in cmd.c.
 */
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

#define DEFAULT_TIMEOUT_S 30

void main_usage(FILE *out)
{
    fputs("usage: connctl [-s SOCKET] [--json] COMMAND [ARGS]\n"
          "       connctl help [COMMAND]    connctl COMMAND --help\n"
          "\n"
          "Control a running connd over its control socket.\n"
          "\n"
          "options (before the command):\n"
          "  -s, --socket SOCKET  the control socket; default $CONND_SOCKET, then\n"
          "                       " CONNCTL_DEFAULT_SOCKET "\n"
          "      --json           print results as JSON (watch: one event a line)\n"
          "  -h, --help           this help\n"
          "      --version        connctl's version\n"
          "\n",
          out);
    cmd_list(out);
    fputs("\n"
          "A command may be shortened to a unique prefix. Sizes print as 1.5 KiB,\n"
          "durations as 850ms, 12s, 3m04s, 2h05m, 3d04h.\n"
          "\n"
          "environment:\n"
          "  CONND_SOCKET     the control socket when -s is not given\n"
          "  CONNCTL_TIMEOUT  seconds to wait for connd to connect and reply (30)\n"
          "\n"
          "exit status: 0 success, 1 connd answered with an error, 2 usage error,\n"
          "3 connd cannot be reached (no socket, no reply in time, connection lost)\n",
          out);
}

static int usage_error(const char *fmt, const char *arg)
{
    fputs("connctl: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\nusage: connctl [-s SOCKET] [--json] COMMAND [ARGS]; try 'connctl --help'\n",
          stderr);
    return CTL_EXIT_USAGE;
}

/* $CONNCTL_TIMEOUT in ms, or -1 when it is set but not a positive number. */
static int timeout_ms(void)
{
    const char *s = getenv("CONNCTL_TIMEOUT");
    char *end;
    double v;

    if (!s || !*s)
        return DEFAULT_TIMEOUT_S * 1000;
    v = strtod(s, &end);
    if (*end || !(v > 0) || v > 86400)
        return -1;
    return v * 1000 < 1 ? 1 : (int)(v * 1000);
}

/* Global options from argv[1]; returns the index of the command word, or
 * -1 after printing a usage error, or 0 when done (help, version). */
static int global_options(int argc, char **argv, struct ctl *x, int *rc)
{
    int i;

    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if (strcmp(a, "-s") == 0 || strcmp(a, "--socket") == 0) {
            if (i + 1 >= argc || !argv[i + 1][0]) {
                *rc = usage_error("%s needs a socket path", a);
                return -1;
            }
            x->socket = argv[++i];
        } else if (strncmp(a, "--socket=", 9) == 0 && a[9]) {
            x->socket = a + 9;
        } else if (strncmp(a, "-s", 2) == 0) {
            x->socket = a + 2;
        } else if (strcmp(a, "--json") == 0) {
            x->json = true;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            main_usage(stdout);
            *rc = CTL_EXIT_OK;
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("connctl %s\n", CONNCTL_VERSION);
            *rc = CTL_EXIT_OK;
            return 0;
        } else {
            *rc = usage_error("unknown option '%s'", a);
            return -1;
        }
    }
    if (i >= argc) {
        *rc = usage_error("%s", "missing command");
        cmd_list(stderr);
        return -1;
    }
    return i;
}

int main(int argc, char **argv)
{
    struct ctl x = {.socket = NULL};
    json_t *params = NULL;
    int rc = CTL_EXIT_OK, i, ms;

    if ((i = global_options(argc, argv, &x, &rc)) <= 0)
        return rc;
    if (!x.socket)
        x.socket = getenv("CONND_SOCKET");
    if (!x.socket || !*x.socket)
        x.socket = CONNCTL_DEFAULT_SOCKET;
    if ((ms = timeout_ms()) < 0)
        return usage_error("CONNCTL_TIMEOUT: expected a number of seconds, got '%s'",
                           getenv("CONNCTL_TIMEOUT"));
    if (!(x.cmd = cmd_find(argv[i])))
        return CTL_EXIT_USAGE;
    switch (args_parse(x.cmd, argc - i - 1, argv + i + 1, &params)) {
    case 1:
        return CTL_EXIT_OK;
    case -1:
        return CTL_EXIT_USAGE;
    }
    client_init(&x.cl, x.socket, ms);
    if (x.cmd->run) {
        rc = x.cmd->run(&x, params);
    } else {
        json_t *res;
        if ((rc = cmd_call(&x, x.cmd->method, params, &res)) == CTL_EXIT_OK) {
            cmd_output(&x, res);
            json_decref(res);
        }
    }
    client_close(&x.cl);
    json_decref(params);
    /* Output that could not be written (a full disk, a closed pipe) is a
     * failure too; the reply itself was fine. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (rc == CTL_EXIT_OK)
            fprintf(stderr, "connctl: writing output failed\n");
        rc = rc == CTL_EXIT_OK ? CTL_EXIT_REPLY : rc;
    }
    return rc;
}
