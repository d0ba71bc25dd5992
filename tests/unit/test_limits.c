/* limits: the token bucket's math, the per-tenant table (concurrency,
 * rates, overrides read at the storage's generation, the bounded table),
 * and the storage's usage accounting, over a real store in a temp dir. */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "server/config.h"
#include "server/limits.h"
#include "storage/storage.h"
#include "suites.h"

#define S 1000000 /* a second in microseconds */

static char tdir[4096];
static eg_store *store;
static eg_txn *reader;
static eg_config cfg;

static void setup(void) {
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  store = eg_test_store_open(tdir, NULL);
  reader = NULL;
  if (store) eg_store_reader_new(store, &reader);
  eg_config_defaults(&cfg);
}

static void teardown(void) {
  eg_store_reader_free(reader);
  eg_store_close(store);
  eg_test_rmdir(tdir);
}

/* ---- bucket ---------------------------------------------------------------- */

static void test_bucket_math(void) {
  eg_bucket b = {0};
  CU_ASSERT_DOUBLE_EQUAL(eg_bucket_cap(50, 1000), 50, 1e-9);
  CU_ASSERT_DOUBLE_EQUAL(eg_bucket_cap(50, 200), 10, 1e-9);
  CU_ASSERT_DOUBLE_EQUAL(eg_bucket_cap(0.5, 1000), 1, 1e-9); /* at least one token */
  /* Starts full: cap tokens at once, then one every 1/rate s. */
  int64_t now = 10 * S;
  for (int i = 0; i < 10; i++) {
    CU_ASSERT_EQUAL(eg_bucket_wait(&b, 10, 10, now), 0);
    b.tokens -= 1;
  }
  CU_ASSERT_EQUAL(eg_bucket_wait(&b, 10, 10, now), S / 10); /* the retry delay */
  CU_ASSERT_EQUAL(eg_bucket_wait(&b, 10, 10, now + S / 20), S / 20);
  CU_ASSERT_EQUAL(eg_bucket_wait(&b, 10, 10, now + S / 10), 0);
  b.tokens -= 1;
  /* A clock that went back refills nothing. */
  CU_ASSERT_EQUAL(eg_bucket_wait(&b, 10, 10, now), S / 10);
  /* Idle for long: never more than the cap (the burst). */
  CU_ASSERT_EQUAL(eg_bucket_wait(&b, 10, 10, now + 3600LL * S), 0);
  CU_ASSERT_DOUBLE_EQUAL(b.tokens, 10, 1e-9);
  /* A lowered rate clamps what the bucket holds to its new cap. */
  CU_ASSERT_EQUAL(eg_bucket_wait(&b, 2, 2, now + 3600LL * S), 0);
  CU_ASSERT_DOUBLE_EQUAL(b.tokens, 2, 1e-9);
  /* Unlimited. */
  eg_bucket u = {0};
  for (int i = 0; i < 1000; i++) CU_ASSERT_EQUAL(eg_bucket_wait(&u, 0, 1, now), 0);
  /* A fractional wait rounds up, never 0. */
  eg_bucket f = {.tokens = 0.9999999, .at_us = now};
  CU_ASSERT_EQUAL(eg_bucket_wait(&f, 1e8, 1e8, now), 1);
}

static void test_resolve(void) {
  eg_tenant_limits l;
  cfg.tenant_calls_per_s = 7;
  cfg.tenant_storage_bytes = 1000;
  eg_limits_resolve(&cfg, NULL, &l);
  CU_ASSERT_DOUBLE_EQUAL(l.v[EG_LIMIT_CALLS], 7, 0);
  CU_ASSERT_DOUBLE_EQUAL(l.v[EG_LIMIT_WRITES], 0, 0);
  CU_ASSERT_DOUBLE_EQUAL(l.v[EG_LIMIT_STORAGE], 1000, 0);
  for (int i = 0; i < EG_LIMIT_KINDS; i++) CU_ASSERT_TRUE(l.is_default[i]);
  eg_tenant_limits_rec rec = ENGRAM__STORAGE__V1__TENANT_LIMITS_RECORD__INIT;
  Engram__Storage__V1__LimitOverride zero = ENGRAM__STORAGE__V1__LIMIT_OVERRIDE__INIT;
  rec.storage_bytes = &zero; /* an override to unlimited */
  eg_limits_resolve(&cfg, &rec, &l);
  CU_ASSERT_DOUBLE_EQUAL(l.v[EG_LIMIT_STORAGE], 0, 0);
  CU_ASSERT_FALSE(l.is_default[EG_LIMIT_STORAGE]);
  CU_ASSERT_TRUE(l.is_default[EG_LIMIT_CALLS]);
}

/* ---- the table ------------------------------------------------------------- */

static eg_err admit(eg_limits *l, const char *tenant, int write, int64_t now, eg_limit_hold **h,
                    int *retry_ms, char *msg) {
  uint64_t quota;
  return eg_limits_admit(l, reader, tenant, write, now, h, &quota, retry_ms, msg, 256);
}

static void test_concurrency_counter(void) {
  eg_limits *l;
  eg_limit_hold *h[3];
  char msg[256];
  int retry;
  cfg.tenant_concurrent_calls = 2;
  CU_ASSERT_EQUAL_FATAL(eg_limits_new(&cfg, store, 100, &l), EG_OK);
  CU_ASSERT_EQUAL(admit(l, "acme", 0, S, &h[0], &retry, msg), EG_OK);
  CU_ASSERT_EQUAL(admit(l, "acme", 1, S, &h[1], &retry, msg), EG_OK);
  CU_ASSERT_EQUAL(admit(l, "acme", 0, S, &h[2], &retry, msg), EG_ERATE);
  CU_ASSERT_PTR_NULL(h[2]);
  CU_ASSERT_EQUAL(retry, 0); /* nobody knows when a call ends: the table's */
  CU_ASSERT_STRING_EQUAL(msg, "tenant acme: 2 concurrent calls exceeded; retry when one ends");
  /* Another tenant has places of its own. */
  CU_ASSERT_EQUAL(admit(l, "beta", 0, S, &h[2], &retry, msg), EG_OK);
  eg_limits_release(l, h[2]);
  eg_limits_release(l, h[0]);
  CU_ASSERT_EQUAL(admit(l, "acme", 0, S, &h[0], &retry, msg), EG_OK);
  eg_limits_release(l, h[0]);
  eg_limits_release(l, h[1]);
  eg_limits_release(l, NULL);
  uint64_t refused[EG_LIMIT_KINDS];
  eg_limits_refused(l, "acme", refused);
  CU_ASSERT_EQUAL(refused[EG_LIMIT_CONCURRENT], 1);
  CU_ASSERT_EQUAL(refused[EG_LIMIT_CALLS], 0);
  eg_limits_refused(l, "nobody", refused);
  CU_ASSERT_EQUAL(refused[EG_LIMIT_CONCURRENT], 0);
  eg_limits_free(l);
}

static void test_rates(void) {
  eg_limits *l;
  eg_limit_hold *h;
  char msg[256];
  int retry;
  cfg.tenant_calls_per_s = 100;
  cfg.tenant_writes_per_s = 4;
  cfg.tenant_burst_ms = 100; /* calls: 10 tokens; writes: 1 (at least one) */
  CU_ASSERT_EQUAL_FATAL(eg_limits_new(&cfg, store, 100, &l), EG_OK);
  CU_ASSERT_EQUAL(admit(l, "acme", 1, S, &h, &retry, msg), EG_OK);
  eg_limits_release(l, h);
  CU_ASSERT_EQUAL(admit(l, "acme", 1, S, &h, &retry, msg), EG_ERATE);
  CU_ASSERT_EQUAL(retry, 250);
  CU_ASSERT_STRING_EQUAL(msg, "tenant acme: 4 writes/s exceeded; retry in 250 ms");
  /* A refused write took no calls token: reads go on, 9 left. */
  for (int i = 0; i < 9; i++) {
    CU_ASSERT_EQUAL(admit(l, "acme", 0, S, &h, &retry, msg), EG_OK);
    eg_limits_release(l, h);
  }
  CU_ASSERT_EQUAL(admit(l, "acme", 0, S, &h, &retry, msg), EG_ERATE);
  CU_ASSERT_EQUAL(retry, 10);
  CU_ASSERT_STRING_EQUAL(msg, "tenant acme: 100 calls/s exceeded; retry in 10 ms");
  CU_ASSERT_EQUAL(admit(l, "acme", 0, S + 10000, &h, &retry, msg), EG_OK);
  eg_limits_release(l, h);
  eg_limits_free(l);
}

/* Stores the tenant's calls/s override in one commit. */
static void put_calls_override(const char *tenant, double calls) {
  eg_txn *w;
  eg_tenant_limits_rec rec = ENGRAM__STORAGE__V1__TENANT_LIMITS_RECORD__INIT;
  Engram__Storage__V1__LimitOverride v = ENGRAM__STORAGE__V1__LIMIT_OVERRIDE__INIT;
  v.value = calls;
  if (calls >= 0) rec.calls_per_second = &v;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_tenant_limits_put(w, tenant, &rec), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

static void test_override_generation(void) {
  eg_limits *l;
  eg_limit_hold *h;
  char msg[256];
  int retry;
  CU_ASSERT_EQUAL_FATAL(eg_limits_new(&cfg, store, 100, &l), EG_OK);
  uint64_t g0 = eg_store_tenant_limits_gen(store);
  CU_ASSERT_NOT_EQUAL(g0, 0);
  for (int i = 0; i < 50; i++) {
    CU_ASSERT_EQUAL(admit(l, "acme", 0, S, &h, &retry, msg), EG_OK);
    eg_limits_release(l, h);
  }
  put_calls_override("acme", 1);
  CU_ASSERT_NOT_EQUAL(eg_store_tenant_limits_gen(store), g0);
  CU_ASSERT_EQUAL(admit(l, "acme", 0, S, &h, &retry, msg), EG_OK);
  eg_limits_release(l, h);
  CU_ASSERT_EQUAL(admit(l, "acme", 0, S, &h, &retry, msg), EG_ERATE);
  CU_ASSERT_EQUAL(retry, 1000);
  /* Removed (no field left: the row goes): unlimited again at once. */
  put_calls_override("acme", -1);
  eg_tenant_limits_rec *rec = NULL;
  eg_txn *r = eg_test_reader(store);
  CU_ASSERT_EQUAL(eg_store_tenant_limits_get(r, "acme", &rec), EG_ENOTFOUND);
  eg_test_reader_done(r);
  CU_ASSERT_EQUAL(admit(l, "acme", 0, S, &h, &retry, msg), EG_OK);
  eg_limits_release(l, h);
  eg_limits_free(l);
}

static void test_table_bounded(void) {
  eg_limits *l;
  eg_limit_hold *a, *h;
  char msg[256];
  int retry;
  uint64_t refused[EG_LIMIT_KINDS];
  cfg.tenant_concurrent_calls = 1;
  CU_ASSERT_EQUAL_FATAL(eg_limits_new(&cfg, store, 2, &l), EG_OK);
  CU_ASSERT_EQUAL(admit(l, "a", 0, 1, &a, &retry, msg), EG_OK); /* held */
  CU_ASSERT_EQUAL(admit(l, "b", 0, 2, &h, &retry, msg), EG_OK);
  eg_limits_release(l, h);
  CU_ASSERT_EQUAL(admit(l, "b", 0, 3, &h, &retry, msg), EG_OK);
  eg_limit_hold *none;
  CU_ASSERT_EQUAL(admit(l, "b", 0, 3, &none, &retry, msg), EG_ERATE); /* b's one place */
  eg_limits_release(l, h);
  eg_limits_refused(l, "b", refused);
  CU_ASSERT_EQUAL(refused[EG_LIMIT_CONCURRENT], 1);
  /* Full: c takes b's entry (idle), never a's (a call runs). */
  CU_ASSERT_EQUAL(admit(l, "c", 0, 4, &h, &retry, msg), EG_OK);
  eg_limits_release(l, h);
  eg_limits_refused(l, "b", refused);
  CU_ASSERT_EQUAL(refused[EG_LIMIT_CONCURRENT], 0);
  CU_ASSERT_EQUAL(admit(l, "a", 0, 5, &h, &retry, msg), EG_ERATE); /* a still counted */
  eg_limits_release(l, a);
  CU_ASSERT_EQUAL(admit(l, "a", 0, 6, &h, &retry, msg), EG_OK);
  eg_limits_release(l, h);
  eg_limits_free(l);
}

/* ---- usage ------------------------------------------------------------------ */

static uint64_t usage(const char *tenant) {
  uint64_t n = 0;
  eg_txn *r = eg_test_reader(store);
  CU_ASSERT_EQUAL(eg_store_tenant_usage(r, tenant, &n), EG_OK);
  eg_test_reader_done(r);
  return n;
}

static void test_usage_accounting(void) {
  eg_txn *w, *sub;
  eg_retention_rec rec = ENGRAM__STORAGE__V1__RETENTION_POLICY_RECORD__INIT;
  Engram__Storage__V1__RetentionSeconds sec = ENGRAM__STORAGE__V1__RETENTION_SECONDS__INIT;
  CU_ASSERT_EQUAL(usage("acme"), 0);
  /* One retention row: its key (u8len "acme") and its value, exactly. */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_retention_put(w, "acme", &rec), EG_OK);
  CU_ASSERT_EQUAL(eg_store_txn_usage_delta(w, "acme"), 5);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(usage("acme"), 5);
  /* An overwrite counts the difference; a sub txn sees its parent's. */
  sec.seconds = 1000;
  rec.raw_message_retention_s = &sec;
  size_t val = protobuf_c_message_get_packed_size(&rec.base);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_begin(w, &sub), EG_OK);
  CU_ASSERT_EQUAL(eg_store_retention_put(sub, "acme", &rec), EG_OK);
  CU_ASSERT_EQUAL(eg_store_txn_usage_delta(sub, "acme"), (int64_t)val);
  CU_ASSERT_EQUAL(eg_store_txn_usage_delta(w, "acme"), 0);
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_commit(sub), EG_OK);
  CU_ASSERT_EQUAL(eg_store_txn_usage_delta(w, "acme"), (int64_t)val);
  /* An aborted sub txn counts nothing. */
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_begin(w, &sub), EG_OK);
  CU_ASSERT_EQUAL(eg_store_retention_put(sub, "beta", &rec), EG_OK);
  uint64_t n = 0;
  CU_ASSERT_EQUAL(eg_store_tenant_usage(sub, "acme", &n), EG_OK);
  CU_ASSERT_EQUAL(n, 5 + val);
  eg_store_sub_abort(sub);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(usage("acme"), 5 + val);
  CU_ASSERT_EQUAL(usage("beta"), 0);
  /* A session and its index entries, then its delete: back to the row. */
  eg_session_rec s = ENGRAM__STORAGE__V1__SESSION_RECORD__INIT;
  s.session_id = (char *)"s1";
  s.user_id = (char *)"u1";
  s.create_time_us = s.update_time_us = 7;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_put(w, "acme", &s, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_TRUE(usage("acme") > 5 + val);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_delete(w, "acme", &s, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(usage("acme"), 5 + val);
  /* Overrides are no tenant data: not counted. */
  put_calls_override("acme", 3);
  CU_ASSERT_EQUAL(usage("acme"), 5 + val);
}

void eg_test_register_limits(void) {
  CU_pSuite s = CU_add_suite_with_setup_and_teardown("limits", NULL, NULL, setup, teardown);
  CU_add_test(s, "bucket: refill, burst cap, retry delay", test_bucket_math);
  CU_add_test(s, "flag defaults and overrides", test_resolve);
  CU_add_test(s, "concurrency counter", test_concurrency_counter);
  CU_add_test(s, "calls and writes buckets apart", test_rates);
  CU_add_test(s, "an override is read at the next generation", test_override_generation);
  CU_add_test(s, "the table is bounded; running entries stay", test_table_bounded);
  CU_add_test(s, "usage: puts, overwrites, sub txns, deletes", test_usage_accounting);
}
