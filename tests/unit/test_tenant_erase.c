/* storage: eg_store_tenant_erase_step (DeleteTenant): every key of a
 * tenant in every data DB goes (records, indexes, counters, retention,
 * the cross-tenant store-item expiry index and sweep_due entries), in
 * bounded steps, each marked an erasure, counted once; another tenant,
 * whose name the first's is a prefix of, keeps every key. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "storage/storage.h"
#include "suites.h"

static char tdir[4096];

/* Keys of every data DB holding the bytes of tenant (its length byte
 * first, as every tenant-keyed layout has it), and keys in all. */
struct census {
  const char *tenant;
  uint64_t of_tenant, all;
};

static void census_visit(void *arg, const char *db, const void *k, size_t klen, const void *v,
                         size_t vlen) {
  struct census *c = arg;
  char needle[64];
  size_t n = strlen(c->tenant);
  needle[0] = (char)n;
  memcpy(needle + 1, c->tenant, n);
  (void)db, (void)v, (void)vlen;
  c->all++;
  if (memmem(k, klen, needle, n + 1)) c->of_tenant++;
}

static struct census count(eg_store *s, const char *tenant) {
  struct census c = {.tenant = tenant};
  eg_txn *r = eg_test_reader(s);
  CU_ASSERT_EQUAL(eg_store_visit_data(r, census_visit, &c), EG_OK);
  eg_test_reader_done(r);
  return c;
}

/* Two users' sessions with messages, memories (one expiring), a
 * checkpoint, store items (one with a TTL), and a retention policy. */
static void fill(eg_store *s, const char *tenant) {
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  for (int u = 0; u < 2; u++) {
    char user[8], sid[8], mid[8];
    snprintf(user, sizeof user, "u%d", u);
    snprintf(sid, sizeof sid, "s%d", u);
    snprintf(mid, sizeof mid, "m%d", u);
    eg_session_rec sr = ENGRAM__STORAGE__V1__SESSION_RECORD__INIT;
    sr.session_id = sid;
    sr.user_id = user;
    sr.state = EG_SSTATE_ACTIVE;
    sr.create_time_us = sr.update_time_us = 100;
    sr.expire_time_us = 5000;
    sr.ttl_us = 4900;
    CU_ASSERT_EQUAL_FATAL(eg_store_session_put(w, tenant, &sr, NULL), EG_OK);
    for (int q = 1; q <= 3; q++) {
      eg_message_rec m = ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
      m.seq = q;
      m.role = 1;
      m.client_message_id = q == 1 ? "c1" : "";
      m.create_time_us = 100 + q;
      CU_ASSERT_EQUAL_FATAL(eg_store_message_put(w, tenant, sid, &m), EG_OK);
    }
    eg_memory_rec mr = ENGRAM__STORAGE__V1__MEMORY_RECORD__INIT;
    mr.memory_id = mid;
    mr.user_id = user;
    mr.state = EG_MSTATE_ACTIVE;
    mr.create_time_us = mr.update_time_us = 100;
    mr.expire_time_us = u ? 9000 : 0;
    CU_ASSERT_EQUAL_FATAL(eg_store_memory_put(w, tenant, &mr, NULL, NULL), EG_OK);
    eg_ckpt_rec cr = ENGRAM__STORAGE__V1__CHECKPOINT_RECORD__INIT;
    cr.thread_id = "t";
    cr.checkpoint_ns = "";
    cr.checkpoint_id = "c";
    cr.create_time_us = 1;
    CU_ASSERT_EQUAL_FATAL(eg_store_checkpoint_put(w, tenant, user, &cr), EG_OK);
  }
  char *labels[] = {"prefs"};
  eg_store_ns ns;
  CU_ASSERT_EQUAL_FATAL(eg_store_ns_encode(labels, 1, 1, &ns), EG_OK);
  static uint8_t tok[] = "sealed";
  for (int i = 0; i < 2; i++) {
    eg_item_rec it = ENGRAM__STORAGE__V1__STORE_ITEM_RECORD__INIT;
    it.value_token = (ProtobufCBinaryData){sizeof tok - 1, tok};
    it.create_time_us = it.update_time_us = 100;
    it.expire_time_us = i ? 7000 : 0;
    it.ttl_seconds = i ? 1 : 0;
    CU_ASSERT_EQUAL_FATAL(eg_store_item_put(w, tenant, &ns, i ? "k1" : "k0", &it, NULL), EG_OK);
  }
  eg_retention_rec p = ENGRAM__STORAGE__V1__RETENTION_POLICY_RECORD__INIT;
  Engram__Storage__V1__RetentionSeconds sec = ENGRAM__STORAGE__V1__RETENTION_SECONDS__INIT;
  p.raw_message_retention_s = &sec;
  CU_ASSERT_EQUAL_FATAL(eg_store_retention_put(w, tenant, &p), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

static void test_erases_every_key_of_the_tenant_only(void) {
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  eg_store *s = eg_test_store_open(tdir, NULL);
  fill(s, "acme");
  fill(s, "acme2"); /* "acme" is a prefix of its name, not of its keys */
  struct census before = count(s, "acme"), other = count(s, "acme2");
  CU_ASSERT(before.of_tenant > 30);
  uint64_t floor = eg_store_erase_floor(s), deleted = 0;
  int done = 0, steps = 0;
  while (!done && steps++ < 200) {
    eg_txn *w;
    CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_store_tenant_erase_step(w, "acme", 4, &deleted, &done), EG_OK);
    eg_store_mark_erasure(w);
    CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  }
  CU_ASSERT_TRUE(done);
  CU_ASSERT(steps > 5); /* bounded: several txns */
  CU_ASSERT(eg_store_erase_floor(s) > floor);
  struct census after = count(s, "acme"), other_after = count(s, "acme2");
  CU_ASSERT_EQUAL(after.of_tenant, 0);
  CU_ASSERT_EQUAL(other_after.of_tenant, other.of_tenant);
  /* Counted once across the steps: exactly the keys that went. */
  CU_ASSERT_EQUAL(deleted, before.all - after.all);
  /* Nothing left to do: a retry is one empty step. */
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_tenant_erase_step(w, "acme", 4, &deleted, &done), EG_OK);
  CU_ASSERT_TRUE(done);
  CU_ASSERT_EQUAL(deleted, 0);
  CU_ASSERT_EQUAL(eg_store_tenant_erase_step(w, "acme", 0, &deleted, &done), EG_EINVAL);
  eg_store_write_abort(w);
  eg_store_close(s);
  eg_test_rmdir(tdir);
}

void eg_test_register_tenant_erase(void) {
  CU_pSuite s = CU_add_suite("tenant_erase", NULL, NULL);
  CU_add_test(s, "erases every key of the tenant only", test_erases_every_key_of_the_tenant_only);
}
