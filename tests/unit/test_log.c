/* log: a JSON line is never dropped (the message and the field values are
 * cut until it fits EG_LOG_LINE_MAX), parses, and stays valid UTF-8 (a cut
 * never splits a character). The lines are read back from stderr, sent
 * to a temporary file for the test. */
#include <CUnit/CUnit.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "server/validate.h"
#include "suites.h"

/* Runs log() with stderr sent to a file; returns what it wrote
 * (malloc'd, NUL-terminated). */
static char *captured(void (*log)(void)) {
  FILE *f = tmpfile();
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  int saved = dup(STDERR_FILENO);
  dup2(fileno(f), STDERR_FILENO);
  log();
  dup2(saved, STDERR_FILENO);
  close(saved);
  off_t len = lseek(fileno(f), 0, SEEK_END);
  CU_ASSERT_FATAL(len >= 0);
  char *out = calloc(1, (size_t)len + 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(out);
  CU_ASSERT_EQUAL(pread(fileno(f), out, (size_t)len, 0), (ssize_t)len);
  fclose(f);
  return out;
}

/* One JSON line: valid UTF-8, at most EG_LOG_LINE_MAX bytes, an object
 * with msg; returned parsed (the caller puts it). */
static json_object *one_line(const char *out) {
  size_t len = strlen(out);
  CU_ASSERT_FATAL(len > 0 && out[len - 1] == '\n');
  CU_ASSERT_PTR_NULL(memchr(out, '\n', len - 1));
  CU_ASSERT(len <= EG_LOG_LINE_MAX);
  CU_ASSERT_TRUE(eg_utf8_valid(out, len));
  json_object *o = json_tokener_parse(out);
  CU_ASSERT_PTR_NOT_NULL_FATAL(o);
  CU_ASSERT_TRUE(json_object_object_get_ex(o, "msg", NULL));
  return o;
}

static char big_value[3 * 1024 + 1], ctl_msg[2048 + 1], utf8_msg[5000];

static void log_long_fields(void) {
  eg_log_field f[] = {{"method", big_value}, {"request_id", big_value}};
  eg_log_with(EG_LOG_ERROR, f, 2, "%s", ctl_msg);
}

static void log_long_utf8(void) { eg_log(EG_LOG_ERROR, "%s", utf8_msg); }

/* The clock is the caller's: the test steps it, nothing sleeps. */
static void test_limit_once_per_period(void) {
  eg_log_limit l = EG_LOG_LIMIT_INIT;
  uint64_t held = 99;
  const int64_t every = 1000000, t0 = 5000000;
  CU_ASSERT_EQUAL(eg_log_limit_take(&l, t0, every, &held), 1); /* the first goes */
  CU_ASSERT_EQUAL(held, 0);
  for (int i = 0; i < 1000; i++) CU_ASSERT_EQUAL(eg_log_limit_take(&l, t0 + i, every, &held), 0);
  CU_ASSERT_EQUAL(eg_log_limit_take(&l, t0 + every - 1, every, &held), 0); /* the edge */
  held = 99;
  CU_ASSERT_EQUAL(eg_log_limit_take(&l, t0 + every, every, &held), 1);
  CU_ASSERT_EQUAL(held, 1001); /* the next line says how many were held back */
  CU_ASSERT_EQUAL(eg_log_limit_take(&l, t0 + 5 * every, every, &held), 1); /* a quiet spell */
  CU_ASSERT_EQUAL(held, 0);
  CU_ASSERT_EQUAL(eg_log_limit_take(&l, t0 + 5 * every + 1, every, &held), 0);
  pthread_mutex_destroy(&l.mu);
}

static void test_json_line_never_dropped(void) {
  memset(big_value, 'v', sizeof big_value - 1);
  /* Control characters: each is six bytes escaped ("\u0001"). */
  memset(ctl_msg, 0x01, sizeof ctl_msg - 1);
  CU_ASSERT_EQUAL_FATAL(eg_log_setup("json", "info"), 0);
  char *out = captured(log_long_fields);
  json_object *o = one_line(out), *v;
  CU_ASSERT_TRUE(json_object_object_get_ex(o, "method", &v));
  CU_ASSERT_TRUE(json_object_object_get_ex(o, "request_id", NULL));
  CU_ASSERT_EQUAL(strncmp(json_object_get_string(v), "vvvv", 4), 0);
  json_object_put(o);
  free(out);
  CU_ASSERT_EQUAL(eg_log_setup("text", "info"), 0);
}

static void test_cut_keeps_utf8(void) {
  /* One ASCII byte, then 3-byte characters long past the line's end:
   * wherever a cut falls, it must not split one. */
  size_t n = 0;
  utf8_msg[n++] = 'x';
  while (n + 3 < sizeof utf8_msg) {
    memcpy(utf8_msg + n, "\xe2\x82\xac", 3); /* the euro sign */
    n += 3;
  }
  utf8_msg[n] = '\0';
  const char *formats[] = {"json", "text"};
  for (size_t i = 0; i < 2; i++) {
    CU_ASSERT_EQUAL_FATAL(eg_log_setup(formats[i], "info"), 0);
    char *out = captured(log_long_utf8);
    size_t len = strlen(out);
    CU_ASSERT(len > 0 && len <= EG_LOG_LINE_MAX);
    CU_ASSERT_TRUE(eg_utf8_valid(out, len));
    if (i == 0) json_object_put(one_line(out));
    free(out);
  }
  CU_ASSERT_EQUAL(eg_log_setup("text", "info"), 0);
}

void eg_test_register_log(void) {
  CU_pSuite s = CU_add_suite("log", NULL, NULL);
  CU_add_test(s, "a rate-limited line goes once per period, counting the held back",
              test_limit_once_per_period);
  CU_add_test(s, "a JSON line with long fields is cut, not dropped", test_json_line_never_dropped);
  CU_add_test(s, "a cut message stays valid UTF-8 (json and text)", test_cut_keeps_utf8);
}
