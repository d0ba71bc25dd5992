/* replica/'s automatic-failover parts that need no peer: the serving
 * decision, behind_ms, the upstream table, lease fencing and promotion at
 * a given epoch. */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "replica/internal.h"
#include "storage/storage.h"
#include "suites.h"

#define MIB (1024u * 1024u)

static char dir[4096];
static void setup(void) { snprintf(dir, sizeof dir, "%s", eg_test_tmpdir()); }
static void teardown(void) { eg_test_rmdir(dir); }

static eg_repl *new_repl(eg_store *s, int replica, const char *primary) {
  eg_repl_config cfg = {.replica = replica, .primary = primary, .replica_id = "test"};
  eg_repl *r = NULL;
  CU_ASSERT_EQUAL_FATAL(eg_repl_new(&cfg, s, &r, NULL, 0), EG_OK);
  return r;
}

static void test_serving_decide(void) {
  char why[256];
  eg_serving_view v = {.primary = 1};
  CU_ASSERT_EQUAL(eg_repl_serving_decide(&v, 1000, why, sizeof why), 1);
  v.fenced = 1;
  CU_ASSERT_EQUAL(eg_repl_serving_decide(&v, 1000, why, sizeof why), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "fenced"));
  /* A replica: nobody to follow, not streaming, never caught up. */
  v = (eg_serving_view){.primary = 0};
  CU_ASSERT_EQUAL(eg_repl_serving_decide(&v, 1000, why, sizeof why), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "follows no primary"));
  v.upstream = "10.0.0.1:7000";
  CU_ASSERT_EQUAL(eg_repl_serving_decide(&v, 1000, why, sizeof why), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "not streaming from its primary 10.0.0.1:7000"));
  v.connected = 1;
  v.behind_ms = -1;
  CU_ASSERT_EQUAL(eg_repl_serving_decide(&v, 1000, why, sizeof why), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "not caught up"));
  /* The lag's edge: at the bound serves, past it not. A fenced flag means
   * nothing on a replica. */
  v.fenced = 1;
  v.behind_ms = 1000;
  CU_ASSERT_EQUAL(eg_repl_serving_decide(&v, 1000, why, sizeof why), 1);
  v.behind_ms = 1001;
  CU_ASSERT_EQUAL(eg_repl_serving_decide(&v, 1000, why, sizeof why), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "--max-serving-lag-ms 1000"));
  v.behind_ms = 0;
  CU_ASSERT_EQUAL(eg_repl_serving_decide(&v, 0, why, sizeof why), 1);
}

static void test_behind_ms(void) {
  /* never caught up */
  CU_ASSERT_EQUAL(eg_repl_behind_ms(5, 10, 1, -1, 1000000), -1);
  CU_ASSERT_EQUAL(eg_repl_behind_ms(10, 10, 0, -1, 1000000), -1);
  /* streaming and holding everything: 0, however long ago it was noted */
  CU_ASSERT_EQUAL(eg_repl_behind_ms(10, 10, 1, 0, 9000000), 0);
  CU_ASSERT_EQUAL(eg_repl_behind_ms(11, 10, 1, 0, 9000000), 0);
  /* behind, or not streaming: the time since it last held everything */
  CU_ASSERT_EQUAL(eg_repl_behind_ms(9, 10, 1, 1000000, 3500000), 2500);
  CU_ASSERT_EQUAL(eg_repl_behind_ms(10, 10, 0, 1000000, 3500000), 2500);
}

static void test_upstream_table(void) {
  eg_store *s = eg_test_store_open(dir, &(eg_store_opts){.map_size = 16 * MIB});
  char buf[64];
  /* A replica of nobody: no channel, no address, nothing to start. */
  eg_repl *r = new_repl(s, 1, NULL);
  CU_ASSERT_PTR_NULL(eg_repl_upstream(r));
  eg_repl_primary(r, buf, sizeof buf);
  CU_ASSERT_STRING_EQUAL(buf, "");
  /* Each distinct address gets a channel that stays valid; the same one
   * again reuses its entry. (Nothing listens there: the follower
   * retries, and each re-point stops it.) */
  grpc_channel *first = NULL;
  char addr[64];
  for (int i = 0; i < EG_REPL_MAX_UPSTREAMS; i++) {
    snprintf(addr, sizeof addr, "127.0.0.1:%d", 1 + i);
    CU_ASSERT_EQUAL(eg_repl_follow(r, addr), EG_OK);
    eg_repl_primary(r, buf, sizeof buf);
    CU_ASSERT_STRING_EQUAL(buf, addr);
    if (!i) first = eg_repl_upstream(r);
  }
  CU_ASSERT_EQUAL(eg_repl_follow(r, "127.0.0.1:1"), EG_OK);
  CU_ASSERT_PTR_EQUAL(eg_repl_upstream(r), first);
  CU_ASSERT_EQUAL(eg_repl_follow(r, "127.0.0.1:1"), EG_OK); /* a no-op */
  /* Past the table's size: refused, the current one kept. */
  CU_ASSERT_EQUAL(eg_repl_follow(r, "127.0.0.1:999"), EG_ELIMIT);
  eg_repl_primary(r, buf, sizeof buf);
  CU_ASSERT_STRING_EQUAL(buf, "127.0.0.1:1");
  /* Nobody leads: no upstream (writes are refused, not forwarded) until
   * the next follow, which finds its entry again. */
  CU_ASSERT_EQUAL(eg_repl_follow(r, ""), EG_OK);
  CU_ASSERT_PTR_NULL(eg_repl_upstream(r));
  eg_repl_primary(r, buf, sizeof buf);
  CU_ASSERT_STRING_EQUAL(buf, "");
  CU_ASSERT_EQUAL(eg_repl_follow(r, NULL), EG_OK); /* a no-op */
  CU_ASSERT_EQUAL(eg_repl_follow(r, "127.0.0.1:1"), EG_OK);
  CU_ASSERT_PTR_EQUAL(eg_repl_upstream(r), first);
  eg_repl_stop(r);
  CU_ASSERT_EQUAL(eg_repl_follow(r, "127.0.0.1:2"), EG_EUNAVAIL); /* stopping */
  eg_repl_free(r);
  /* A primary follows nobody. */
  r = new_repl(s, 0, NULL);
  CU_ASSERT_EQUAL(eg_repl_follow(r, "127.0.0.1:1"), EG_EPRECOND);
  CU_ASSERT_PTR_NULL(eg_repl_upstream(r));
  eg_repl_free(r);
  eg_store_close(s);
}

static void test_lease(void) {
  eg_store *s = eg_test_store_open(dir, &(eg_store_opts){.map_size = 16 * MIB});
  eg_repl *r = new_repl(s, 0, NULL);
  /* Static roles: never fenced. */
  CU_ASSERT_EQUAL(eg_repl_coordinated(r), 0);
  CU_ASSERT_EQUAL(eg_repl_fenced(r), 0);
  eg_repl_set_lease(r, 0);
  CU_ASSERT_EQUAL(eg_repl_coordinated(r), 1);
  CU_ASSERT_EQUAL(eg_repl_fenced(r), 1);
  eg_repl_set_lease(r, eg_mono_us() + 60 * 1000000LL);
  CU_ASSERT_EQUAL(eg_repl_fenced(r), 0);
  eg_repl_set_lease(r, eg_mono_us() - 1);
  CU_ASSERT_EQUAL(eg_repl_fenced(r), 1);
  char why[128];
  CU_ASSERT_EQUAL(eg_repl_serving(r, 1000, why, sizeof why), 0);
  eg_repl_free(r);
  eg_store_close(s);
}

/* Runs the writer's part inline: the test has no writer thread. */
static eg_err write_inline(void *writer, eg_err (*fn)(void *arg, eg_txn *t), void *arg,
                           uint64_t *lsn) {
  eg_store *s = writer;
  eg_txn *w;
  eg_err e = eg_store_write_begin(s, &w);
  if (e) return e;
  if ((e = fn(arg, w)) != EG_OK) {
    eg_store_write_abort(w);
    return e;
  }
  return eg_store_write_commit(w, lsn);
}

static void test_promote_at(void) {
  eg_store *s = eg_test_store_open(dir, &(eg_store_opts){.map_size = 16 * MIB});
  eg_repl *r = new_repl(s, 1, NULL);
  char msg[256];
  uint64_t lsn = 0, epoch = 0;
  CU_ASSERT_EQUAL_FATAL(eg_repl_start(r, write_inline, s), EG_OK);
  uint64_t now = eg_store_epoch(s);
  /* Not above the store's epoch: refused, still a replica that may be
   * promoted later. */
  CU_ASSERT_EQUAL(eg_repl_promote_at(r, now, &lsn, msg, sizeof msg), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "not above"));
  CU_ASSERT_EQUAL(eg_repl_is_primary(r), 0);
  CU_ASSERT_EQUAL(eg_repl_promote_at(r, now + 5, &lsn, msg, sizeof msg), EG_OK);
  CU_ASSERT_EQUAL(eg_repl_is_primary(r), 1);
  CU_ASSERT_EQUAL(eg_store_epoch(s), now + 5);
  CU_ASSERT_EQUAL(eg_store_last_lsn(s), lsn);
  eg_repl_progress p;
  eg_repl_progress_get(r, &p);
  CU_ASSERT_EQUAL(p.applied, lsn);
  CU_ASSERT_EQUAL(p.epoch, now + 5);
  CU_ASSERT_EQUAL(p.last_epoch, now + 5); /* the epoch record is the last */
  CU_ASSERT_EQUAL(eg_repl_promote_at(r, now + 6, &lsn, msg, sizeof msg), EG_EPRECOND);
  /* Coordinated: Promote (the RPC) is refused, naming the coordinator. */
  eg_repl_set_lease(r, 0);
  CU_ASSERT_EQUAL(eg_repl_promote(r, &epoch, &lsn, msg, sizeof msg), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "--coordinator"));
  eg_repl_stop(r);
  eg_repl_free(r);
  eg_store_close(s);
}

void eg_test_register_failover(void) {
  CU_pSuite s = CU_add_suite_with_setup_and_teardown("failover", NULL, NULL, setup, teardown);
  CU_add_test(s, "serving: primary, fenced, replica states, lag edge", test_serving_decide);
  CU_add_test(s, "behind_ms: never, caught up, since", test_behind_ms);
  CU_add_test(s, "upstream table: nobody, re-point, reuse, limit", test_upstream_table);
  CU_add_test(s, "lease fencing", test_lease);
  CU_add_test(s, "promote_at: epoch above the store's; Promote refused when coordinated", test_promote_at);
}
