/* limits: the token bucket's math, the per-tenant table (concurrency,
 * rates, overrides read at the storage's generation, the bounded table),
 * and the storage's usage accounting, over a real store in a temp dir. */
#include <CUnit/CUnit.h>
#include <lmdb.h>
#include <stdio.h>
#include <string.h>

#include "server/config.h"
#include "server/limits.h"
#include "storage/storage.h"
#include "storage/store_items.h"
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


/* Has migration 7 count every tenant's usage afresh, walking every key
 * stored (the store is closed, its schema set back to 6 and reopened):
 * what the writers' running count must equal. */
static void recount(void) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi meta;
  uint8_t v6[4] = {0, 0, 0, 6};
  MDB_val k = {14, "schema_version"}, v = {4, v6};
  eg_store_reader_free(reader);
  reader = NULL;
  eg_store_close(store);
  CU_ASSERT_EQUAL_FATAL(mdb_env_create(&env), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_env_set_maxdbs(env, 64), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_env_open(env, tdir, 0, 0600), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(env, NULL, 0, &txn), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_dbi_open(txn, "meta", 0, &meta), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_put(txn, meta, &k, &v, 0), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  store = eg_test_store_open(tdir, NULL);
  eg_store_reader_new(store, &reader);
}

static eg_store_ns item_ns(void) {
  char *labels[] = {(char *)"prefs"};
  eg_store_ns ns;
  CU_ASSERT_EQUAL_FATAL(eg_store_ns_encode(labels, 1, 1, &ns), EG_OK);
  return ns;
}

/* A store item whose value token is n bytes of c. */
static eg_item_rec item_of(uint8_t *buf, size_t n, char c) {
  eg_item_rec r = ENGRAM__STORAGE__V1__STORE_ITEM_RECORD__INIT;
  memset(buf, c, n);
  r.value_token = (ProtobufCBinaryData){n, buf};
  r.create_time_us = r.update_time_us = 10;
  return r;
}

/* The value token of item key in t is n bytes of c. */
static void assert_item(eg_txn *t, const char *key, size_t n, char c) {
  eg_store_ns ns = item_ns();
  eg_item_rec *got = NULL;
  CU_ASSERT_EQUAL_FATAL(eg_store_item_get(t, "acme", &ns, key, &got), EG_OK);
  CU_ASSERT_EQUAL(got->value_token.len, n);
  int same = got->value_token.len == n;
  for (size_t i = 0; same && i < n; i++) same = got->value_token.data[i] == (uint8_t)c;
  CU_ASSERT_TRUE(same);
  engram__storage__v1__store_item_record__free_unpacked(got, NULL);
}

/* One key overwritten larger, larger again, at the same size, smaller, in
 * one txn and across txns, in a leaf and in overflow pages (values past
 * half a page): the running count moves by exactly the size change and
 * each put leaves its own bytes. */
static void test_usage_overwrite_sizes(void) {
  static uint8_t buf[9000];
  const size_t sizes[] = {10, 40, 40, 3000, 3000, 9000, 2500, 3000, 7, 5000, 0};
  const char fill[] = "abcdefghijk";
  eg_store_ns ns = item_ns();
  eg_txn *w;
  uint64_t base = usage("acme");
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  eg_item_rec prev = item_of(buf, 1, 'z');
  CU_ASSERT_EQUAL(eg_store_item_put(w, "acme", &ns, "k", &prev, NULL), EG_OK);
  int64_t first = eg_store_txn_usage_delta(w, "acme"); /* key, value, namespace counter */
  size_t first_val = protobuf_c_message_get_packed_size(&prev.base);
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    /* From the fourth on, every other put goes in a txn of its own: the
     * old value is then on a clean page (or overflow pages) of the file. */
    if (i >= 3 && i % 2 == 0) {
      CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
      CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
    }
    int64_t before = eg_store_txn_usage_delta(w, "acme");
    size_t old_val = protobuf_c_message_get_packed_size(&prev.base);
    eg_item_rec rec = item_of(buf, sizes[i], fill[i]);
    size_t new_val = protobuf_c_message_get_packed_size(&rec.base);
    CU_ASSERT_EQUAL(eg_store_item_put(w, "acme", &ns, "k", &rec, &prev), EG_OK);
    CU_ASSERT_EQUAL(eg_store_txn_usage_delta(w, "acme") - before,
                    (int64_t)new_val - (int64_t)old_val);
    assert_item(w, "k", sizes[i], fill[i]);
    prev = item_of(buf, sizes[i], fill[i]);
  }
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  uint64_t now = usage("acme");
  CU_ASSERT_EQUAL(now, base + (uint64_t)first - first_val +
                           protobuf_c_message_get_packed_size(&prev.base));
  recount();
  CU_ASSERT_EQUAL(usage("acme"), now);
  eg_txn *r = eg_test_reader(store);
  assert_item(r, "k", 0, 'k');
  eg_test_reader_done(r);
}

/* A create over a taken key (MDB_NOOVERWRITE) and a delete of a missing
 * one change and count nothing, on a dirty page and on a clean one. */
static void test_usage_taken_and_missing(void) {
  static uint8_t a[64], b[64];
  eg_store_ns ns = item_ns();
  eg_txn *w;
  eg_item_rec one = item_of(a, 20, 'a');
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_item_put(w, "acme", &ns, "k", &one, NULL), EG_OK);
  int64_t d = eg_store_txn_usage_delta(w, "acme");
  CU_ASSERT_TRUE(d > 20);
  for (int txn = 0; txn < 2; txn++) {
    size_t sizes[] = {60, 5};
    for (int i = 0; i < 2; i++) {
      eg_item_rec other = item_of(b, sizes[i], 'b');
      CU_ASSERT_EQUAL(eg_store_item_put(w, "acme", &ns, "k", &other, NULL), EG_EEXIST);
      CU_ASSERT_EQUAL(eg_store_txn_usage_delta(w, "acme"), txn ? 0 : d);
      assert_item(w, "k", 20, 'a');
    }
    CU_ASSERT_EQUAL(eg_store_item_delete(w, "acme", &ns, "gone", &one), EG_ENOTFOUND);
    CU_ASSERT_EQUAL(eg_store_txn_usage_delta(w, "acme"), txn ? 0 : d);
    CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
    CU_ASSERT_EQUAL(usage("acme"), (uint64_t)d);
    CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  }
  /* The delete of the key that is there takes back what its put counted. */
  CU_ASSERT_EQUAL(eg_store_item_delete(w, "acme", &ns, "k", &one), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_TRUE(usage("acme") < (uint64_t)d - 20);
  uint64_t left = usage("acme"); /* the namespace's counter row */
  recount();
  CU_ASSERT_EQUAL(usage("acme"), left);
}

/* Terms of message seq: two of its own and one all share. */
static uint64_t msg_terms[64][3];
static uint8_t msg_tf[3] = {1, 2, 3};

/* Message seq of user u1 with content n bytes long, indexed, with a
 * client id. */
static eg_err put_msg(eg_txn *t, const char *tenant, int64_t seq, size_t n) {
  static uint8_t content[600];
  char cid[16];
  eg_message_rec m = ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
  memset(content, 'm', n);
  snprintf(cid, sizeof cid, "c%lld", (long long)seq);
  uint64_t *terms = msg_terms[seq];
  terms[0] = 5;
  terms[1] = 1000 + 2 * (uint64_t)seq;
  terms[2] = 1001 + 2 * (uint64_t)seq;
  m.seq = seq;
  m.role = 1;
  m.create_time_us = 100 * seq;
  m.content_token = (ProtobufCBinaryData){n, content};
  m.client_message_id = cid;
  m.index_version = 2;
  m.index_terms = terms;
  m.n_index_terms = 3;
  m.index_tf = (ProtobufCBinaryData){3, msg_tf};
  m.index_words = 6;
  m.index_user_id = (char *)"u1";
  return eg_store_message_put(t, tenant, "s1", &m);
}

static void put_session(eg_txn *t, const char *tenant) {
  eg_session_rec s = ENGRAM__STORAGE__V1__SESSION_RECORD__INIT;
  s.session_id = (char *)"s1";
  s.user_id = (char *)"u1";
  s.create_time_us = s.update_time_us = 7;
  CU_ASSERT_EQUAL(eg_store_session_put(t, tenant, &s, NULL), EG_OK);
}

/* Many writes in one txn to several counted DBs (sessions and their
 * index, messages with postings and idempotency keys, index stats,
 * retention, store items) for two tenants, interleaved, in the txn and in
 * sub txns (one aborted, after which the txn's own cursors go on): the
 * count is what a recount finds. */
static void test_usage_many_dbs(void) {
  static uint8_t buf[64];
  eg_store_ns ns = item_ns();
  eg_retention_rec ret = ENGRAM__STORAGE__V1__RETENTION_POLICY_RECORD__INIT;
  eg_txn *w, *sub;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  put_session(w, "acme");
  put_session(w, "beta");
  for (int64_t seq = 1; seq <= 30; seq++) {
    CU_ASSERT_EQUAL(put_msg(w, "acme", seq, 10 + (size_t)seq), EG_OK);
    CU_ASSERT_EQUAL(put_msg(w, "beta", seq, 40), EG_OK);
    /* Every fifth again, longer: an overwrite of the message, its
     * postings and its idempotency key. */
    if (seq % 5 == 0) CU_ASSERT_EQUAL(put_msg(w, "acme", seq, 300), EG_OK);
    if (seq % 7 == 0) CU_ASSERT_EQUAL(eg_store_retention_put(w, "beta", &ret), EG_OK);
  }
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_begin(w, &sub), EG_OK);
  for (int64_t seq = 31; seq <= 40; seq++) CU_ASSERT_EQUAL(put_msg(sub, "acme", seq, 20), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_commit(sub), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_begin(w, &sub), EG_OK);
  for (int64_t seq = 41; seq <= 50; seq++) CU_ASSERT_EQUAL(put_msg(sub, "acme", seq, 500), EG_OK);
  eg_item_rec it = item_of(buf, 30, 'i');
  CU_ASSERT_EQUAL(eg_store_item_put(sub, "beta", &ns, "k", &it, NULL), EG_OK);
  eg_store_sub_abort(sub);
  for (int64_t seq = 41; seq <= 45; seq++) CU_ASSERT_EQUAL(put_msg(w, "acme", seq, 50), EG_OK);
  CU_ASSERT_EQUAL(eg_store_item_put(w, "beta", &ns, "k", &it, NULL), EG_OK);
  uint64_t keys = 0, n = 0;
  int more = 0;
  CU_ASSERT_EQUAL(eg_store_messages_delete_before(w, "acme", "s1", 100 * 12, 100, 100000, &keys,
                                                  &n, &more),
                  EG_OK);
  CU_ASSERT_EQUAL(n, 11);
  int64_t acme = eg_store_txn_usage_delta(w, "acme"), beta = eg_store_txn_usage_delta(w, "beta");
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(usage("acme"), (uint64_t)acme);
  CU_ASSERT_EQUAL(usage("beta"), (uint64_t)beta);
  recount();
  CU_ASSERT_EQUAL(usage("acme"), (uint64_t)acme);
  CU_ASSERT_EQUAL(usage("beta"), (uint64_t)beta);
}

/* An aborted txn counts nothing, whatever it wrote; the next one counts
 * from the stored rows. */
static void test_usage_abort(void) {
  static uint8_t buf[64];
  eg_store_ns ns = item_ns();
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  put_session(w, "acme");
  CU_ASSERT_EQUAL(put_msg(w, "acme", 1, 30), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  uint64_t before = usage("acme");
  CU_ASSERT_TRUE(before > 0);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  for (int64_t seq = 1; seq <= 20; seq++) CU_ASSERT_EQUAL(put_msg(w, "acme", seq, 200), EG_OK);
  eg_item_rec it = item_of(buf, 30, 'i');
  CU_ASSERT_EQUAL(eg_store_item_put(w, "acme", &ns, "k", &it, NULL), EG_OK);
  CU_ASSERT_TRUE(eg_store_txn_usage_delta(w, "acme") > 0);
  eg_store_write_abort(w);
  CU_ASSERT_EQUAL(usage("acme"), before);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  CU_ASSERT_EQUAL(put_msg(w, "acme", 2, 30), EG_OK);
  int64_t d = eg_store_txn_usage_delta(w, "acme");
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(usage("acme"), before + (uint64_t)d);
  recount();
  CU_ASSERT_EQUAL(usage("acme"), before + (uint64_t)d);
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
  CU_add_test(s, "usage: overwrites larger, equal, smaller, in overflow pages",
              test_usage_overwrite_sizes);
  CU_add_test(s, "usage: a taken key, a missing key", test_usage_taken_and_missing);
  CU_add_test(s, "usage: many DBs, two tenants, sub txns, one txn", test_usage_many_dbs);
  CU_add_test(s, "usage: an aborted txn counts nothing", test_usage_abort);
}
