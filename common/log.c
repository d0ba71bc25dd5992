#include "common/log.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/utf8.h"

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

/* Cuts s[0..len) to at most max bytes (max >= 4) into out (max + 1
 * bytes; out may be s), ending in "..." and never splitting a UTF-8
 * character. Returns the new length. */
static size_t eg_log_cut(char *out, const char *s, size_t len, size_t max) {
  if (len <= max) {
    memmove(out, s, len);
    out[len] = '\0';
    return len;
  }
  size_t n = eg_utf8_cut(s, len, max - 3);
  memmove(out, s, n);
  memcpy(out + n, "...", 4);
  return n + 3;
}

static size_t eg_log_text(char *line, const char *ts, eg_log_level level, const char *msg,
                          const eg_log_field *fields, size_t n) {
  int len = snprintf(line, EG_LOG_LINE_MAX, "%s %s engramd: %s", ts, eg_log_upper[level], msg);
  for (size_t i = 0; i < n && len < EG_LOG_LINE_MAX; i++)
    len += snprintf(line + len, EG_LOG_LINE_MAX - (size_t)len, " %s=%s", fields[i].key,
                    fields[i].value);
  /* Room for the newline. */
  if (len >= EG_LOG_LINE_MAX - 1)
    len = (int)eg_log_cut(line, line, EG_LOG_LINE_MAX - 1, EG_LOG_LINE_MAX - 2);
  /* One event, one line: a message's own newlines would split it. */
  for (char *p = line; *p; p++)
    if (*p == '\n' || *p == '\r') *p = ' ';
  line[len++] = '\n';
  line[len] = '\0';
  return (size_t)len;
}

/* s as a JSON string, cut to cap bytes (tmp: scratch of cap + 1). */
static json_object *eg_log_json_str(const char *s, size_t cap, char *tmp) {
  size_t len = strlen(s);
  if (len > cap) {
    len = eg_log_cut(tmp, s, len, cap);
    s = tmp;
  }
  return json_object_new_string_len(s, (int)len);
}

/* The shortest a cut string gets before the fields are left out. */
#define EG_LOG_CUT_MIN 16

/* The JSON line, or 0 only when memory runs out. Until it fits, the
 * message and every field value are cut to half the longest (escapes
 * grow a string up to six times); at EG_LOG_CUT_MIN the fields go, and
 * the message alone that short always fits. */
static size_t eg_log_json_line(char *line, const char *ts, eg_log_level level, const char *msg,
                               const eg_log_field *fields, size_t n) {
  char tmp[EG_LOG_LINE_MAX];
  size_t cap = EG_LOG_LINE_MAX - 1; /* msg is shorter: no cut */
  for (;;) {
    json_object *o = json_object_new_object();
    if (!o) return 0;
    json_object_object_add(o, "ts", json_object_new_string(ts));
    json_object_object_add(o, "level", json_object_new_string(eg_log_names[level]));
    json_object_object_add(o, "msg", eg_log_json_str(msg, cap, tmp));
    for (size_t i = 0; i < n; i++)
      json_object_object_add(o, fields[i].key, eg_log_json_str(fields[i].value, cap, tmp));
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
    if (!s) return 0;
    if (cap > EG_LOG_CUT_MIN)
      cap = cap / 2 > EG_LOG_CUT_MIN ? cap / 2 : EG_LOG_CUT_MIN;
    else if (n > 0)
      n = 0;
    else
      return 0; /* cannot happen: ts, level and 16 bytes of msg fit */
  }
}

static void eg_log_v(eg_log_level level, const eg_log_field *fields, size_t n, const char *fmt,
                     va_list ap) {
  char msg[EG_LOG_LINE_MAX], line[EG_LOG_LINE_MAX + 1], ts[32];
  if (level < eg_log_min) return;
  if (vsnprintf(msg, sizeof msg, fmt, ap) >= (int)sizeof msg)
    eg_log_cut(msg, msg, sizeof msg - 1, sizeof msg - 2);
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

int eg_log_limit_take(eg_log_limit *l, int64_t now_us, int64_t every_us, uint64_t *held) {
  pthread_mutex_lock(&l->mu);
  int go = now_us >= l->next_us;
  if (go) {
    *held = l->held;
    l->held = 0;
    l->next_us = now_us + every_us;
  } else {
    l->held++;
  }
  pthread_mutex_unlock(&l->mu);
  return go;
}
