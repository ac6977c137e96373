/*
 * log.h: one line per event on stderr. With stderr connected to the journal
 * (JOURNAL_STREAM names stderr's device and inode) each line gets a `<N>`
 * syslog priority prefix and no timestamp; otherwise a plain line with a
 * timestamp and the level's name.
 *
 * The level and the journal flag are process-wide settings, not loop state:
 * they are the only mutable statics in the daemon.
 */
#ifndef CONND_LOG_H
#define CONND_LOG_H

#include <stdarg.h>

#define LOG_LVL_ERR 3
#define LOG_LVL_WARNING 4
#define LOG_LVL_NOTICE 5
#define LOG_LVL_INFO 6
#define LOG_LVL_DEBUG 7

/* Detect the journal from JOURNAL_STREAM; call once at start. */
void log_init(void);
/* Parse "err", "warning", "notice", "info", "debug" (or 3..7); -EINVAL. */
int log_parse_level(const char *name);
void log_set_level(int level);
int log_get_level(void);
int log_enabled(int level);

void log_vmsg(int level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LVL_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                                                   \
    do {                                                                                 \
        if (log_enabled(LOG_LVL_DEBUG))                                                  \
            log_msg(LOG_LVL_DEBUG, __VA_ARGS__);                                         \
    } while (0)

#endif
