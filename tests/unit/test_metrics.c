/* metrics: the exposition text of a transport's counters is complete at
 * its worst case (every method with every status code) within
 * eg_metrics_render_cap, escapes label values, keeps histograms
 * cumulative, and counts in-flight calls; a buffer too small cuts it
 * without overrunning. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "server/metrics.h"
#include "suites.h"

/* Method paths as the table holds them, and two a label must escape. */
static const char *const paths[] = {
    "/engram.v1.SessionService/AppendMessages",
    "/engram.v1.MemoryService/ListMemories",
    "/odd\"svc\\/Me\nthod",
};
#define N_PATHS (sizeof paths / sizeof paths[0])

/* The value of the sample line that starts with prefix, or -1. */
static double sample(const char *text, const char *prefix) {
  for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
    if (strncmp(p, prefix, strlen(prefix)) == 0) return strtod(p + strlen(prefix), NULL);
  return -1;
}

static void test_worst_case_fits(void) {
  eg_metrics *m = eg_metrics_new(paths, N_PATHS);
  CU_ASSERT_PTR_NOT_NULL_FATAL(m);
  /* every row (the unknown-method one too) with every code, one call in
   * each bucket's range and one past 10 s */
  static const int64_t took_us[] = {0, 60, 200, 400, 900, 2000, 4000, 9000, 20000, 40000,
                                    90000, 200000, 400000, 900000, 2000000, 4000000,
                                    9000000, 20000000};
  for (size_t r = 0; r <= N_PATHS; r++) {
    size_t mi = r < N_PATHS ? r : SIZE_MAX;
    for (int c = 0; c < 17; c++) {
      int64_t at = eg_metrics_arrive(m, mi);
      eg_metrics_count(m, mi, c, at - took_us[c]);
    }
    int64_t at = eg_metrics_arrive(m, mi);
    eg_metrics_count(m, mi, 0, at - took_us[17]);
  }
  size_t cap = eg_metrics_render_cap(m);
  char *buf = malloc(cap);
  CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
  size_t len = eg_metrics_render(m, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, buf, cap);
  CU_ASSERT(len < cap - 1); /* not cut */
  CU_ASSERT_EQUAL(strlen(buf), len);
  CU_ASSERT_EQUAL(buf[len - 1], '\n');
  /* the last family (process_max_fds) is whole */
  CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\nprocess_max_fds "));
  char key_refused[96];
  CU_ASSERT_PTR_NOT_NULL(strstr(buf, "engram_build_info{version=\"" ENGRAM_VERSION "\"} 1\n"));
  /* per-tenant refusals, by limit only (no tenant label) */
  const char *kinds[] = {"calls", "writes", "concurrent", "storage"};
  for (size_t i = 0; i < 4; i++) {
    snprintf(key_refused, sizeof key_refused, "\nengram_tenant_refused_total{limit=\"%s\"} ",
             kinds[i]);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, key_refused));
  }

  /* escaped label values: \, " and newline */
  CU_ASSERT_PTR_NOT_NULL(strstr(buf, "engram_rpc_in_flight{service=\"odd\\\"svc\\\\\","
                                     "method=\"Me\\nthod\"} 0\n"));
  CU_ASSERT_PTR_NOT_NULL(strstr(buf, "engram_rpc_total{method=\"/odd\\\"svc\\\\/Me\\nthod\","
                                     "code=\"DATA_LOSS\"} 1\n"));

  /* cumulative buckets: 50 us holds the 0 us call only, 10 s all but one */
  const char *row = "engram_rpc_duration_seconds_bucket{service=\"engram.v1.SessionService\","
                    "method=\"AppendMessages\",le=";
  char key[256];
  snprintf(key, sizeof key, "%s\"5e-05\"} ", row);
  CU_ASSERT_EQUAL(sample(buf, key), 1);
  snprintf(key, sizeof key, "%s\"0.001\"} ", row);
  CU_ASSERT_EQUAL(sample(buf, key), 5);
  snprintf(key, sizeof key, "%s\"10\"} ", row);
  CU_ASSERT_EQUAL(sample(buf, key), 17);
  snprintf(key, sizeof key, "%s\"+Inf\"} ", row);
  CU_ASSERT_EQUAL(sample(buf, key), 18);
  CU_ASSERT_EQUAL(sample(buf, "engram_rpc_duration_seconds_count{service=\"engram.v1.SessionService\","
                              "method=\"AppendMessages\"} "), 18);
  /* the unknown-method row shows once used */
  CU_ASSERT_PTR_NOT_NULL(strstr(buf, "engram_rpc_total{method=\"unknown\",code=\"OK\"} 2\n"));
  CU_ASSERT_PTR_NOT_NULL(strstr(buf, "{service=\"unknown\",method=\"unknown\",le=\"+Inf\"} 18\n"));

  /* a buffer too small: cut, NUL-terminated, within it */
  memset(buf, 'x', cap);
  len = eg_metrics_render(m, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, buf, 100);
  CU_ASSERT_EQUAL(len, 99);
  CU_ASSERT_EQUAL(buf[99], '\0');
  CU_ASSERT_EQUAL(buf[100], 'x');
  free(buf);
  eg_metrics_free(m);
}

static void test_in_flight(void) {
  eg_metrics *m = eg_metrics_new(paths, N_PATHS);
  CU_ASSERT_PTR_NOT_NULL_FATAL(m);
  size_t cap = eg_metrics_render_cap(m);
  char *buf = malloc(cap);
  CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
  const char *gauge = "engram_rpc_in_flight{service=\"engram.v1.MemoryService\","
                      "method=\"ListMemories\"} ";
  int64_t a = eg_metrics_arrive(m, 1), b = eg_metrics_arrive(m, 1);
  eg_metrics_render(m, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, buf, cap);
  CU_ASSERT_EQUAL(sample(buf, gauge), 2);
  eg_metrics_count(m, 1, 0, a);
  eg_metrics_render(m, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, buf, cap);
  CU_ASSERT_EQUAL(sample(buf, gauge), 1);
  eg_metrics_count(m, 1, 5, b);
  eg_metrics_render(m, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, buf, cap);
  CU_ASSERT_EQUAL(sample(buf, gauge), 0);
  /* no unknown-method samples until one came */
  CU_ASSERT_PTR_NULL(strstr(buf, "method=\"unknown\""));
  free(buf);
  eg_metrics_free(m);
}

void eg_test_register_metrics(void) {
  CU_pSuite s = CU_add_suite("metrics", NULL, NULL);
  CU_add_test(s, "worst case fits the render cap", test_worst_case_fits);
  CU_add_test(s, "in-flight gauge", test_in_flight);
}
