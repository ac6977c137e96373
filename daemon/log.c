/*
 * log.c: stderr logging with journal priority prefixes. Each line is
 * formatted into one buffer and written with a single write(2), so lines
 * from the daemon never interleave mid-line.
 */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int log_level = LOG_LVL_INFO;
static int log_journal;

static const char *const level_names[] = {"emerg",  "alert", "crit", "err",
                                          "warning", "notice", "info", "debug"};

void log_init(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    log_journal = 0;
    if (js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0)
        log_journal = (unsigned long long)st.st_dev == dev &&
                      (unsigned long long)st.st_ino == ino;
}

int log_parse_level(const char *name)
{
    if (name[0] >= '0' && name[0] <= '7' && name[1] == '\0')
        return name[0] - '0';
    for (int i = 0; i < 8; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    if (strcmp(name, "error") == 0)
        return LOG_LVL_ERR;
    if (strcmp(name, "warn") == 0)
        return LOG_LVL_WARNING;
    return -EINVAL;
}

void log_set_level(int level)
{
    log_level = level;
}

int log_get_level(void)
{
    return log_level;
}

int log_enabled(int level)
{
    return level <= log_level;
}

void log_vmsg(int level, const char *fmt, va_list ap)
{
    char line[2048];
    size_t n = 0;
    int rc;

    if (level > log_level)
        return;
    if (level < 0)
        level = 0;
    if (level > 7)
        level = 7;
    if (log_journal) {
        n = (size_t)snprintf(line, sizeof(line), "<%d>", level);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
        n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %s: ",
                              ts.tv_nsec / 1000000, level_names[level]);
    }
    rc = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    if (rc < 0)
        rc = 0;
    n += (size_t)rc;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    /* A short write to stderr is not worth retrying: the log is best effort. */
    if (write(STDERR_FILENO, line, n) < 0)
        return;
}

void log_msg(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}
