/*
 * table.h: connctl's output for people: human-readable sizes and
 * durations, aligned tables, "key: value" blocks and one-line templates,
 * all rendered from the JSON results connd returns.
 */
#ifndef CONNCTL_TABLE_H
#define CONNCTL_TABLE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum fmt {
    FMT_AUTO,  /* null "-", booleans yes/no, arrays comma-joined ("-" if empty) */
    FMT_SIZE,  /* bytes: "0 B", "1.5 KiB", "3.2 MiB" */
    FMT_SIZEX, /* as FMT_SIZE plus the exact count: "1.5 KiB (1536)" */
    FMT_MS,    /* a duration in ms: "850ms", "12s", "3m04s", "2h05m", "3d04h" */
    FMT_AGE,   /* wall-clock ms since the epoch: the time since then, as FMT_MS */
    FMT_DASH0, /* a number, 0 as "-" (no limit) */
};

/* A table column: header, result member, format. */
struct col {
    const char *head;
    const char *key;
    enum fmt fmt;
};

/* "1.5 KiB" into buf. */
void table_size(uint64_t bytes, char *buf, size_t len);
/* "3m04s" into buf. */
void table_duration(uint64_t ms, char *buf, size_t len);
/* v (NULL: absent) rendered per f into buf; long values are cut. */
void table_value(const json_t *v, enum fmt f, char *buf, size_t len);
/* An aligned table of rows (an array of objects): a header line, then one
 * line per row; columns are two spaces apart, the last is not padded. */
void table_print(FILE *out, const struct col *cols, const json_t *rows);
/* obj as aligned "key: value" lines, nested objects flattened to
 * "sockopts.nodelay"; well-known members get a label and format
 * ("uptime_ms" is "uptime: 3m04s"). */
void table_kv(FILE *out, const json_t *obj);
/* One line from a template: "{key}" is obj's member rendered with
 * FMT_AUTO, "{key:size}", "{key:ms}" with FMT_SIZE / FMT_MS. */
void table_say(FILE *out, const char *tmpl, const json_t *obj);

#endif
