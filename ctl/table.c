/*
 * table.c: rendering results for people (see table.h). Everything here
 * maps a JSON value to text; nothing talks to connd. Column widths count
 * UTF-8 characters, not bytes, so names outside ASCII stay aligned.
 */
#include "table.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CELL_MAX 1024
#define COLS_MAX 16

void table_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)bytes;
    unsigned u = 0;

    if (bytes < 1024) {
        snprintf(buf, len, "%" PRIu64 " B", bytes);
        return;
    }
    /* Move up a unit while the rounded figure would read 1024 or more. */
    while (v >= 1023.95 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024;
        u++;
    }
    snprintf(buf, len, v < 99.95 ? "%.1f %s" : "%.0f %s", v, units[u]);
}

void table_duration(uint64_t ms, char *buf, size_t len)
{
    uint64_t s = ms / 1000, m = s / 60, h = m / 60, d = h / 24;

    if (ms < 1000)
        snprintf(buf, len, "%" PRIu64 "ms", ms);
    else if (s < 60)
        snprintf(buf, len, "%" PRIu64 "s", s);
    else if (m < 60)
        snprintf(buf, len, "%" PRIu64 "m%02" PRIu64 "s", m, s % 60);
    else if (h < 24)
        snprintf(buf, len, "%" PRIu64 "h%02" PRIu64 "m", h, m % 60);
    else
        snprintf(buf, len, "%" PRIu64 "d%02" PRIu64 "h", d, h % 24);
}

static uint64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Append text to buf (holding *n bytes), cutting at the end. */
static void append(char *buf, size_t len, size_t *n, const char *text)
{
    int k = snprintf(buf + *n, len - *n, "%s", text);

    if (k > 0)
        *n += (size_t)k < len - *n ? (size_t)k : len - *n - 1;
}

void table_value(const json_t *v, enum fmt f, char *buf, size_t len)
{
    uint64_t n = json_is_integer(v) && json_integer_value(v) > 0
                     ? (uint64_t)json_integer_value(v)
                     : 0;
    size_t used = 0, i;
    const json_t *item;
    char *text;

    if (!len)
        return;
    buf[0] = '\0';
    if (!v || json_is_null(v)) {
        append(buf, len, &used, "-");
    } else if (json_is_integer(v) && f != FMT_AUTO) {
        if (f == FMT_SIZE || f == FMT_SIZEX)
            table_size(n, buf, len);
        else if (f == FMT_MS)
            table_duration(n, buf, len);
        else if (f == FMT_AGE)
            table_duration(wall_ms() > n ? wall_ms() - n : 0, buf, len);
        else if (n)
            snprintf(buf, len, "%" PRIu64, n);
        else
            append(buf, len, &used, "-");
        used = strlen(buf);
        if (f == FMT_SIZEX && n >= 1024)
            snprintf(buf + used, len - used, " (%" PRIu64 ")", n);
    } else if (json_is_string(v)) {
        append(buf, len, &used, json_string_length(v) ? json_string_value(v) : "-");
    } else if (json_is_boolean(v)) {
        append(buf, len, &used, json_is_true(v) ? "yes" : "no");
    } else if (json_is_integer(v)) {
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (json_is_real(v)) {
        snprintf(buf, len, "%g", json_real_value(v));
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, item)
        {
            char one[CELL_MAX];
            table_value(item, f, one, sizeof(one));
            if (i)
                append(buf, len, &used, ",");
            append(buf, len, &used, one);
        }
        if (!used)
            append(buf, len, &used, "-");
    } else if ((text = json_dumps(v, JSON_COMPACT))) {
        append(buf, len, &used, text);
        free(text);
    }
}

/* Display width: UTF-8 continuation bytes take no column. */
static size_t width(const char *s)
{
    size_t w = 0;

    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

void table_print(FILE *out, const struct col *cols, const json_t *rows)
{
    size_t ncol = 0, nrow = json_array_size(rows), w[COLS_MAX] = {0};
    char **cells, buf[CELL_MAX];

    while (ncol < COLS_MAX && cols[ncol].head)
        ncol++;
    /* Render every cell first: widths depend on the longest one. */
    if (!(cells = calloc((nrow + 1) * ncol, sizeof(*cells)))) {
        fputs("connctl: out of memory\n", stderr);
        return;
    }
    for (size_t r = 0; r <= nrow; r++) {
        for (size_t k = 0; k < ncol; k++) {
            char **cell = &cells[r * ncol + k];
            if (r == 0) {
                *cell = strdup(cols[k].head);
            } else {
                json_t *row = json_array_get(rows, r - 1);
                table_value(json_object_get(row, cols[k].key), cols[k].fmt, buf,
                            sizeof(buf));
                *cell = strdup(buf);
            }
            if (*cell && width(*cell) > w[k])
                w[k] = width(*cell);
        }
    }
    for (size_t r = 0; r <= nrow; r++) {
        for (size_t k = 0; k < ncol; k++) {
            const char *cell = cells[r * ncol + k] ? cells[r * ncol + k] : "?";
            if (k + 1 < ncol)
                fprintf(out, "%s%*s", cell, (int)(w[k] - width(cell) + 2), "");
            else
                fprintf(out, "%s\n", cell);
        }
    }
    for (size_t i = 0; i < (nrow + 1) * ncol; i++)
        free(cells[i]);
    free(cells);
}

/* Labels and formats of well-known result members. */
static const struct known {
    const char *key, *label;
    enum fmt fmt;
} known[] = {
    {"uptime_ms", "uptime", FMT_MS},    {"created_ms", "age", FMT_AGE},
    {"idle_ms", "idle", FMT_MS},        {"timeout_ms", "timeout", FMT_MS},
    {"bytes_in", NULL, FMT_SIZEX},      {"bytes_out", NULL, FMT_SIZEX},
    {"pending", NULL, FMT_SIZEX},       {"rcvbuf", NULL, FMT_SIZEX},
    {"sndbuf", NULL, FMT_SIZEX},        {"read_buffer", NULL, FMT_SIZEX},
    {"buffered", NULL, FMT_SIZEX},      {"init_size", NULL, FMT_SIZEX},
    {"max_size", NULL, FMT_SIZEX},      {"high_watermark", NULL, FMT_SIZEX},
    {"low_watermark", NULL, FMT_SIZEX}, {"max_pending", NULL, FMT_SIZEX},
    {"queued", NULL, FMT_SIZEX},
};

static const struct known *known_key(const char *key)
{
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(known[i].key, key) == 0)
            return &known[i];
    return NULL;
}

/* Flatten obj into parallel label/value arrays (n entries so far). */
struct kv {
    char **label, **value;
    size_t n, cap;
};

static void table_kv_collect(struct kv *kv, const json_t *obj, const char *prefix)
{
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)obj, key, v)
    {
        const struct known *k = known_key(key);
        char label[256], buf[CELL_MAX];

        snprintf(label, sizeof(label), "%s%s", prefix, k && k->label ? k->label : key);
        if (json_is_object(v)) {
            char sub[260];
            snprintf(sub, sizeof(sub), "%s.", label);
            table_kv_collect(kv, v, sub);
            continue;
        }
        if (kv->n == kv->cap) {
            size_t cap = kv->cap ? kv->cap * 2 : 32;
            char **l = realloc(kv->label, cap * sizeof(*l)), **val;
            if (l)
                kv->label = l;
            if (!l || !(val = realloc(kv->value, cap * sizeof(*val))))
                return;
            kv->value = val;
            kv->cap = cap;
        }
        table_value(v, k ? k->fmt : FMT_AUTO, buf, sizeof(buf));
        kv->label[kv->n] = strdup(label);
        kv->value[kv->n] = strdup(buf);
        kv->n++;
    }
}

void table_kv(FILE *out, const json_t *obj)
{
    struct kv kv = {0};
    size_t w = 0;

    if (!json_is_object(obj)) {
        char buf[CELL_MAX];
        table_value(obj, FMT_AUTO, buf, sizeof(buf));
        fprintf(out, "%s\n", buf);
        return;
    }
    table_kv_collect(&kv, obj, "");
    for (size_t i = 0; i < kv.n; i++)
        if (kv.label[i] && width(kv.label[i]) > w)
            w = width(kv.label[i]);
    for (size_t i = 0; i < kv.n; i++) {
        const char *label = kv.label[i] ? kv.label[i] : "?";
        fprintf(out, "%s:%*s %s\n", label, (int)(w - width(label)), "",
                kv.value[i] ? kv.value[i] : "?");
        free(kv.label[i]);
        free(kv.value[i]);
    }
    free(kv.label);
    free(kv.value);
}

void table_say(FILE *out, const char *tmpl, const json_t *obj)
{
    while (*tmpl) {
        const char *end = tmpl[0] == '{' ? strchr(tmpl, '}') : NULL;
        char key[64], buf[CELL_MAX], *colon;
        enum fmt f = FMT_AUTO;

        if (!end) {
            fputc(*tmpl++, out);
            continue;
        }
        snprintf(key, sizeof(key), "%.*s", (int)(end - tmpl - 1), tmpl + 1);
        if ((colon = strchr(key, ':'))) {
            *colon = '\0';
            f = strcmp(colon + 1, "size") == 0 ? FMT_SIZE
                : strcmp(colon + 1, "ms") == 0 ? FMT_MS
                                               : FMT_AUTO;
        }
        table_value(json_object_get(obj, key), f, buf, sizeof(buf));
        fputs(buf, out);
        tmpl = end + 1;
    }
    fputc('\n', out);
}
