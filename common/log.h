/*
 * engramd's log: one line per event on stderr, with a UTC timestamp and a
 * level, as text or as JSON.
 *
 *   text: 2026-12-02T06:45:01.123Z INFO engramd: <message> key=value ...
 *   json: {"ts":"2026-12-02T06:45:01.123Z","level":"info","msg":"<message>","key":"value"}
 *
 * Each line goes out in one write(2) of at most EG_LOG_LINE_MAX bytes
 * (PIPE_BUF: a write that size to a pipe is atomic), so lines from
 * different threads never interleave. A line that would be longer is
 * cut, never dropped: the message (and in JSON, the field values too)
 * ends in "...", on a UTF-8 character boundary.
 */
#ifndef EG_COMMON_LOG_H
#define EG_COMMON_LOG_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { EG_LOG_DEBUG, EG_LOG_INFO, EG_LOG_WARN, EG_LOG_ERROR } eg_log_level;

#define EG_LOG_LINE_MAX 4096

/* One extra key/value of a line (json: a member; text: key=value). */
typedef struct {
  const char *key;
  const char *value;
} eg_log_field;

/* Sets the format ("text" or "json") and the least level written
 * ("debug", "info", "warn", "error"). Returns 0, or -1 for a word it does not know (nothing
 * changes). Thread safety: call before other threads log (at start);
 * until then lines are text at INFO. */
int eg_log_setup(const char *format, const char *level);

/* Logs printf-style fmt at level, if level is not below the set one.
 * Thread safety: any thread. */
void eg_log(eg_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* eg_log with n extra fields. Thread safety: any thread. */
void eg_log_with(eg_log_level level, const eg_log_field *fields, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A bound on a line that can come once per request (a replica's failed
 * forward while its primary is down): at most one line every `every_us`.
 * The lines held back meanwhile are counted, and the next line that goes
 * says how many, so an outage is in the log without flooding it. */
typedef struct {
  pthread_mutex_t mu;
  int64_t next_us; /* the first time the next line may go */
  uint64_t held;   /* lines held back since the last one went */
} eg_log_limit;
#define EG_LOG_LIMIT_INIT {PTHREAD_MUTEX_INITIALIZER, 0, 0}

/* At now_us (a monotonic clock): 1 if a line may go, with *held the lines
 * held back since the last one went (the count starts again); else 0, and
 * this line is counted as held back. Thread safety: any thread. */
int eg_log_limit_take(eg_log_limit *l, int64_t now_us, int64_t every_us, uint64_t *held);

#endif
