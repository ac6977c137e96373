/*
 * cmd.h: connctl's command table and what its parts share. A command is a
 * row {word, method, usage, args, printer}: args.c turns argv into the
 * method's params from the row's arg specs, main.c sends them, and the
 * row's printer (or --json) shows the result. Commands that are more than
 * one request and one reply (write, watch, help) have a run function.
 */
#ifndef CONNCTL_CMD_H
#define CONNCTL_CMD_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "client.h"

/* Exit status (SPEC section 6). */
enum {
    CTL_EXIT_OK = 0,
    CTL_EXIT_REPLY = 1,       /* connd answered with an error, or a local failure */
    CTL_EXIT_USAGE = 2,       /* bad command line */
    CTL_EXIT_UNREACHABLE = 3, /* no connection, no reply, or connection lost */
};

/* How one argument's text becomes a params member. */
enum arg_kind {
    ARG_ID,       /* connection id: integer 1..2^53 */
    ARG_UINT,     /* integer 0..2^53 */
    ARG_MS,       /* milliseconds: 500, 500ms, 30s, 5m, 2h, 1d */
    ARG_SIZE,     /* bytes: 65536, 64k, 64KiB, 1m, 1g */
    ARG_STR,      /* UTF-8 text */
    ARG_TEXT,     /* any bytes, stored unchecked (write's TEXT) */
    ARG_PORT,     /* a number 0..65535 (sent as one) or a service name */
    ARG_HOSTPORT, /* HOST:PORT or [V6]:PORT, sets "host" and "port" */
    ARG_ONOFF,    /* on|off (also yes|no, true|false, 1|0): a boolean */
    ARG_CHOICE,   /* one of the words of meta, "a|b|c" */
    ARG_JSON,     /* a JSON object */
    ARG_FLAG,     /* an option without a value: true */
    ARG_LIST,     /* repeatable, comma-separated: an array of strings */
};

/* One positional argument (name "ID") or option (name "--limit"). */
struct arg {
    const char *name;
    const char *key; /* params member; "select.listener" nests in "select" */
    enum arg_kind kind;
    const char *meta; /* an option's value placeholder; ARG_CHOICE: "a|b|c" */
    const char *help;
    bool optional; /* positionals; options are always optional */
};

#define CMD_SELECT 0x1   /* ID or --select options (select.*), not both */
#define CMD_NEED_OPT 0x2 /* at least one option must be given */
#define CMD_LOCAL 0x4    /* needs no daemon */

struct ctl;
struct cmd;

/* Runs a command with its parsed params (borrowed); returns an exit status. */
typedef int (*cmd_run_fn)(struct ctl *x, json_t *params);
/* Shows a successful result (borrowed) to people on stdout. */
typedef void (*cmd_print_fn)(const struct cmd *c, json_t *result);

struct cmd {
    const char *word;
    const char *method; /* NULL for local commands */
    const char *usage;  /* synopsis after the word; NULL: generated from args */
    const char *summary;
    const struct arg *args; /* {0}-terminated, or NULL */
    unsigned flags;
    cmd_run_fn run;     /* NULL: one call of method, then print */
    cmd_print_fn print; /* NULL: key: value lines */
    const char *say;    /* print_say template, "conn {id}: {state}"; for CMD_SELECT
                           rows the verb shown after a selector's matches */
};

/* One invocation. */
struct ctl {
    bool json;
    const char *socket;
    struct client cl;
    const struct cmd *cmd;
};

/* The command named by word, or one it is the unique prefix of; otherwise
 * NULL after printing why and the valid words to stderr. */
const struct cmd *cmd_find(const char *word);
/* "commands:" and one line per command, for the tool's help. */
void cmd_list(FILE *out);
/* Call method with params (borrowed). On success returns CTL_EXIT_OK with
 * *result a new reference; otherwise prints the error to stderr and returns
 * CTL_EXIT_REPLY or CTL_EXIT_UNREACHABLE. */
int cmd_call(struct ctl *x, const char *method, json_t *params, json_t **result);
/* Show result as --json or the command's printer says. */
void cmd_output(const struct ctl *x, json_t *result);

/* args.c: argv after the command word into params (a new object in
 * *params). Returns 0, 1 when help was asked for (printed to stdout), or
 * -1 after printing a usage error to stderr (*params is then NULL). */
int args_parse(const struct cmd *c, int argc, char **argv, json_t **params);
/* The synopsis lines of c, "usage: connctl WORD ...". */
void args_usage(FILE *out, const struct cmd *c);
/* Everything about c: synopsis, summary, arguments, method. */
void args_help(FILE *out, const struct cmd *c);
/* Print "connctl: WORD: <message>" and c's synopsis to stderr; returns
 * CTL_EXIT_USAGE. */
int args_error(const struct cmd *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* stream.c: the commands that stream. */
int stream_write(struct ctl *x, json_t *params);
int stream_watch(struct ctl *x, json_t *params);

/* main.c: the tool's help. */
void main_usage(FILE *out);

#endif
