#include "common/log.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

_Static_assert(EG_LOG_LINE_MAX <= PIPE_BUF, "a line is written to a pipe atomically");

/* Set once at start (eg_log_setup), read by every thread after. */
static int eg_log_json;
static eg_log_level eg_log_min = EG_LOG_INFO;

static const char *const eg_log_names[] = {"debug", "info", "warn", "error"};
static const char *const eg_log_upper[] = {"DEBUG", "INFO", "WARN", "ERROR"};

int eg_log_setup(const char *format, const char *level) {
  int json;
  if (strcmp(format, "text") == 0)
    json = 0;
  else if (strcmp(format, "json") == 0)
    json = 1;
  else
    return -1;
  for (int l = EG_LOG_DEBUG; l <= EG_LOG_ERROR; l++)
    if (strcmp(level, eg_log_names[l]) == 0) {
      eg_log_json = json;
      eg_log_min = (eg_log_level)l;
      return 0;
    }
  return -1;
}

/* "2026-12-02T06:45:01.123Z" (UTC, milliseconds) into ts[32]. */
static void eg_log_time(char ts[32]) {
  struct timespec now;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  size_t n = strftime(ts, 32, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + n, 32 - n, ".%03ldZ", now.tv_nsec / 1000000);
}

/* Writes all of line (one write(2) unless interrupted or cut short). */
static void eg_log_write(const char *line, size_t len) {
  while (len > 0) {
    ssize_t w = write(STDERR_FILENO, line, len);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return; /* nowhere to report it */
    line += w;
    len -= (size_t)w;
  }
}

/* Ends a string cut at cap - 1 bytes with "...". */
static void eg_log_mark_cut(char *s, size_t cap) { memcpy(s + cap - 4, "...", 4); }

static size_t eg_log_text(char *line, const char *ts, eg_log_level level, const char *msg,
                          const eg_log_field *fields, size_t n) {
  int len = snprintf(line, EG_LOG_LINE_MAX, "%s %s engramd: %s", ts, eg_log_upper[level], msg);
  for (size_t i = 0; i < n && len < EG_LOG_LINE_MAX; i++)
    len += snprintf(line + len, EG_LOG_LINE_MAX - (size_t)len, " %s=%s", fields[i].key,
                    fields[i].value);
  if (len >= EG_LOG_LINE_MAX - 1) {
    eg_log_mark_cut(line, EG_LOG_LINE_MAX - 1);
    len = EG_LOG_LINE_MAX - 2;
  }
  /* One event, one line: a message's own newlines would split it. */
  for (char *p = line; *p; p++)
    if (*p == '\n' || *p == '\r') *p = ' ';
  line[len++] = '\n';
  line[len] = '\0';
  return (size_t)len;
}

/* The JSON line, or 0 if it cannot be built (memory) or is too long even
 * after the message was cut to half the line. */
static size_t eg_log_json_line(char *line, const char *ts, eg_log_level level, char *msg,
                               const eg_log_field *fields, size_t n) {
  for (int attempt = 0; attempt < 2; attempt++) {
    json_object *o = json_object_new_object();
    if (!o) return 0;
    json_object_object_add(o, "ts", json_object_new_string(ts));
    json_object_object_add(o, "level", json_object_new_string(eg_log_names[level]));
    json_object_object_add(o, "msg", json_object_new_string(msg));
    for (size_t i = 0; i < n; i++)
      json_object_object_add(o, fields[i].key, json_object_new_string(fields[i].value));
    size_t len = 0;
    const char *s = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    if (s && len + 1 < EG_LOG_LINE_MAX) {
      memcpy(line, s, len);
      line[len++] = '\n';
      json_object_put(o);
      return len;
    }
    json_object_put(o);
    /* Escapes grow a message up to six times: cut it harder, once. */
    size_t cut = strlen(msg) / 8;
    if (cut < 4) return 0;
    eg_log_mark_cut(msg, cut);
  }
  return 0;
}

static void eg_log_v(eg_log_level level, const eg_log_field *fields, size_t n, const char *fmt,
                     va_list ap) {
  char msg[EG_LOG_LINE_MAX], line[EG_LOG_LINE_MAX + 1], ts[32];
  if (level < eg_log_min) return;
  if (vsnprintf(msg, sizeof msg, fmt, ap) >= (int)sizeof msg) eg_log_mark_cut(msg, sizeof msg);
  eg_log_time(ts);
  size_t len = eg_log_json ? eg_log_json_line(line, ts, level, msg, fields, n)
                           : eg_log_text(line, ts, level, msg, fields, n);
  if (len) eg_log_write(line, len);
}

void eg_log(eg_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  eg_log_v(level, NULL, 0, fmt, ap);
  va_end(ap);
}

void eg_log_with(eg_log_level level, const eg_log_field *fields, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  eg_log_v(level, fields, n, fmt, ap);
  va_end(ap);
}
