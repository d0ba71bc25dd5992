/* coord/: the pure election decision (eg_coord_decide) and --coordinator
 * URL parsing. */
#include <CUnit/CUnit.h>
#include <string.h>

#include "coord/coord.h"
#include "engram/coord/v1/coord.pb-c.h"
#include "server/config.h"
#include "suites.h"

/* ---- eg_coord_decide ------------------------------------------------------ */

/* Member id at ID-host:1 on lease 7 (the self lease in view), which found
 * no leader at revision leaderless (0: it has not). */
static eg_coord_member member(const char *id, uint64_t last_epoch, uint64_t applied,
                              int64_t leaderless) {
  eg_coord_member m = {.applied_lsn = applied, .last_epoch = last_epoch, .epoch = last_epoch,
                       .healthy = 1, .leaderless_revision = leaderless, .lease = 7};
  snprintf(m.id, sizeof m.id, "%s", id);
  snprintf(m.address, sizeof m.address, "%s-host:1", id);
  return m;
}

/* A replica "b" with its lease, in a cluster whose view the test fills;
 * the last leader key was created at revision 50 (PREFIX/epoch's). */
static eg_coord_view view(eg_coord_member *members, size_t n) {
  eg_coord_view v = {.self_id = "b", .self_address = "b-host:1", .self_healthy = 1,
                     .self_applied = 100, .self_last_epoch = 1, .self_epoch = 1,
                     .self_lease = 7, .revision = 120, .epoch_mod_revision = 50,
                     .members = members, .n_members = n, .max_lag = 1000};
  return v;
}

static void with_leader(eg_coord_view *v, const char *id, int64_t lease) {
  v->has_leader = 1;
  snprintf(v->leader_id, sizeof v->leader_id, "%s", id);
  snprintf(v->leader_address, sizeof v->leader_address, "%s-host:1", id);
  v->leader_lease = lease;
}

static eg_coord_decision decide(const eg_coord_view *v) {
  eg_coord_decision d;
  memset(&d, 0xAA, sizeof d);
  eg_coord_decide(v, &d);
  return d;
}

static void test_follow(void) {
  eg_coord_member ms[] = {member("a", 1, 100, 10), member("b", 1, 90, 11)};
  eg_coord_view v = view(ms, 2);
  with_leader(&v, "a", 3);
  eg_coord_decision d = decide(&v);
  CU_ASSERT_EQUAL(d.action, EG_COORD_FOLLOW);
  CU_ASSERT_STRING_EQUAL(d.problem, "");
}

static void test_lead(void) {
  eg_coord_member ms[] = {member("b", 1, 100, 10)};
  eg_coord_view v = view(ms, 1);
  v.self_primary = 1;
  with_leader(&v, "b", 7);
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_LEAD);
}

static void test_demote(void) {
  eg_coord_member ms[] = {member("a", 2, 100, 10), member("b", 1, 100, 11)};
  eg_coord_view v = view(ms, 2);
  v.self_primary = 1;
  /* Someone else holds the key. */
  with_leader(&v, "a", 3);
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_DEMOTE);
  /* Nobody does: the lease ran out, another node may take it any moment. */
  v.has_leader = 0;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_DEMOTE);
  /* The key is this node's name, but on a lease this process never had. */
  with_leader(&v, "b", 99);
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_DEMOTE);
}

static void test_revoke(void) {
  eg_coord_member ms[] = {member("b", 1, 100, 10)};
  eg_coord_view v = view(ms, 1);
  /* A restarted leader finds its old key: it revokes that key's lease. */
  with_leader(&v, "b", 42);
  eg_coord_decision d = decide(&v);
  CU_ASSERT_EQUAL(d.action, EG_COORD_REVOKE);
  CU_ASSERT_EQUAL(d.lease, 42);
  /* Also when the key is on its own lease but it is no primary (its
   * promotion failed). */
  with_leader(&v, "b", 7);
  d = decide(&v);
  CU_ASSERT_EQUAL(d.action, EG_COORD_REVOKE);
  CU_ASSERT_EQUAL(d.lease, 7);
}

static void test_stand_best(void) {
  eg_coord_member ms[] = {member("a", 1, 90, 60), member("b", 1, 100, 61),
                          member("c", 1, 95, 62)};
  eg_coord_view v = view(ms, 3);
  v.etcd_epoch = 1;
  eg_coord_decision d = decide(&v);
  CU_ASSERT_EQUAL(d.action, EG_COORD_STAND);
  CU_ASSERT_EQUAL(d.epoch, 2);
  CU_ASSERT_STRING_EQUAL(d.problem, "");
  /* Seen from "a", which is behind "b": it waits for "b". */
  v.self_id = "a";
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
}

static void test_stand_ties_by_id(void) {
  eg_coord_member ms[] = {member("c", 1, 100, 60), member("b", 1, 100, 61),
                          member("d", 1, 100, 62)};
  eg_coord_view v = view(ms, 3);
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_STAND);
  v.self_id = "c";
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
}

static void test_last_epoch_beats_applied(void) {
  /* "a" holds fewer records, but of a later epoch: "b"'s extra records are
   * of an older history the new one forked from. */
  eg_coord_member ms[] = {member("a", 3, 80, 60), member("b", 2, 100, 61)};
  eg_coord_view v = view(ms, 2);
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  v.self_id = "a";
  eg_coord_decision d = decide(&v);
  CU_ASSERT_EQUAL(d.action, EG_COORD_STAND);
  CU_ASSERT_EQUAL(d.epoch, 4);
}

static void test_unhealthy_never_stands(void) {
  eg_coord_member ms[] = {member("a", 1, 90, 60), member("b", 1, 100, 61)};
  eg_coord_view v = view(ms, 2);
  /* Its store is broken: it says so in its key, and knows it itself. */
  ms[1].healthy = 0;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  v.self_id = "a";
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_STAND);
  ms[1].healthy = 1;
  v.self_id = "b";
  v.self_healthy = 0;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  /* Nobody healthy at all, once settled: said. */
  ms[0].healthy = 0;
  v.settled = 1;
  eg_coord_decision d = decide(&v);
  CU_ASSERT_EQUAL(d.action, EG_COORD_WAIT);
  CU_ASSERT_PTR_NOT_NULL(strstr(d.problem, "no node may become primary"));
}

static void test_wait_until_settled(void) {
  /* "a" is ahead of "b" but has not written its key since the leader
   * vanished (revision 50): it may be alive and about to. */
  eg_coord_member ms[] = {member("a", 1, 120, 45), member("b", 1, 100, 61)};
  eg_coord_view v = view(ms, 2);
  eg_coord_decision d = decide(&v);
  CU_ASSERT_EQUAL(d.action, EG_COORD_WAIT);
  CU_ASSERT_STRING_EQUAL(d.problem, "");
  /* It publishes: "a" is the best, "b" still waits. */
  ms[0].leaderless_revision = 62;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  /* Nor does a silent member ranked below: its value is from before the
   * leader went, and it may hold more by now. */
  ms[0] = member("a", 1, 80, 45);
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  /* Unless it says it cannot lead. */
  ms[0].healthy = 0;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_STAND);
  ms[0].healthy = 1;
  /* Once settled, a member that has not published is neither waited for
   * nor ranked, however far ahead its old value says it is (a key nobody
   * refreshes blocks nothing); this node itself must have published. */
  ms[1].leaderless_revision = 45;
  v.settled = 1;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  ms[1].leaderless_revision = 63;
  ms[0] = member("a", 1, 500, 45);
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_STAND);
  /* Not present in etcd at all (its put failed): it cannot stand. */
  v.n_members = 1;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
}

/* The leader stopped cleanly (its key went at once): "a" acknowledged the
 * last write at 97 but its key still holds a value from before, ranked
 * below "b". "b" must wait for it, whatever its stale rank. */
static void test_wait_for_every_member(void) {
  eg_coord_member ms[] = {member("a", 1, 95, 0), member("b", 1, 98, 105)};
  eg_coord_view v = view(ms, 2);
  v.epoch_mod_revision = 100;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  /* "a" publishes what it holds now: it is ahead, and stands. */
  ms[0] = member("a", 1, 99, 106);
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  v.self_id = "a";
  v.self_address = "a-host:1";
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_STAND);
}

/* What counts as published in this leaderless period: a read that found no
 * leader after the last leader key was created (PREFIX/epoch moves with
 * it), whatever this node itself saw. */
static void test_published_in_this_period(void) {
  eg_coord_member ms[] = {member("a", 1, 90, 0), member("b", 1, 100, 61)};
  eg_coord_view v = view(ms, 2);
  /* From a period before the last leader: not published. */
  ms[0].leaderless_revision = 40;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  ms[0].leaderless_revision = 50;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  ms[0].leaderless_revision = 51;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_STAND);
  /* A leader came and went since "b" published: "b" is stale too. */
  v.epoch_mod_revision = 70;
  ms[0].leaderless_revision = 75;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  /* A cluster that never had a leader (no epoch key): any mark counts. */
  v.epoch_mod_revision = 0;
  ms[0].leaderless_revision = 0;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  ms[0].leaderless_revision = 3;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_STAND);
}

static void test_lag(void) {
  eg_coord_member ms[] = {member("a", 1, 100, 60), member("b", 1, 98, 61)};
  eg_coord_view v = view(ms, 2);
  v.leader_lsn = 1100;
  v.max_lag = 1000;
  /* "a" is exactly at the limit: it stands; "b" waits for it. */
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  v.self_id = "a";
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_STAND);
  /* One more record past it: nobody, loudly, naming the lag and the flag. */
  v.leader_lsn = 1101;
  eg_coord_decision d = decide(&v);
  CU_ASSERT_EQUAL(d.action, EG_COORD_WAIT);
  CU_ASSERT_PTR_NOT_NULL(strstr(d.problem, "1001 records behind"));
  CU_ASSERT_PTR_NOT_NULL(strstr(d.problem, "--failover-max-lag 1000"));
  CU_ASSERT_PTR_NOT_NULL(strstr(d.problem, " a,"));
  v.self_id = "b";
  CU_ASSERT_STRING_EQUAL(decide(&v).problem, d.problem);
  /* A member ahead of the last leader's LSN lags by nothing. */
  v.leader_lsn = 50;
  v.max_lag = 0;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  v.self_id = "a";
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_STAND);
}

static void test_epoch(void) {
  eg_coord_member ms[] = {member("a", 1, 90, 60), member("b", 1, 100, 61)};
  eg_coord_view v = view(ms, 2);
  /* The largest of etcd's counter, the members' epochs and last epochs,
   * and this node's own epoch, plus one. */
  v.etcd_epoch = 5;
  CU_ASSERT_EQUAL(decide(&v).epoch, 6);
  ms[0].epoch = 8;
  CU_ASSERT_EQUAL(decide(&v).epoch, 9);
  ms[0].last_epoch = 1;
  ms[1].last_epoch = 1;
  ms[1].epoch = 1;
  v.self_epoch = 11;
  CU_ASSERT_EQUAL(decide(&v).epoch, 12);
  /* No epoch past the largest: nobody stands, and it is said. */
  v.etcd_epoch = UINT64_MAX;
  eg_coord_decision d = decide(&v);
  CU_ASSERT_EQUAL(d.action, EG_COORD_WAIT);
  CU_ASSERT_PTR_NOT_NULL(strstr(d.problem, "the largest there is"));
  v.etcd_epoch = 5;
  v.self_epoch = 0;
  v.etcd_epoch = 0;
  ms[0].epoch = 0;
  ms[0].last_epoch = 0;
  ms[1].last_epoch = 0;
  ms[1].epoch = 0;
  CU_ASSERT_EQUAL(decide(&v).epoch, 1);
}

/* ---- eg_coord_view_fill ----------------------------------------------------- */

static const eg_coord_keys keys = {.leader = "/p/leader", .epoch = "/p/epoch",
                                   .leader_lsn = "/p/leader_lsn", .members = "/p/members/"};

static eg_etcd_kv kv(const char *key, const void *value, size_t len, int64_t mod_revision,
                     int64_t lease) {
  eg_etcd_kv k = {.key = (uint8_t *)key, .value = (uint8_t *)value, .key_len = strlen(key),
                  .value_len = len, .create_revision = mod_revision,
                  .mod_revision = mod_revision, .lease = lease};
  return k;
}

static eg_coord_member fill_members[EG_ETCD_RANGE_MAX];

/* The view of kvs, seen by "b" (a replica on lease 7). */
static eg_coord_view fill(eg_etcd_kv *kvs, size_t n) {
  eg_etcd_kvs all = {.kvs = kvs, .n = n, .revision = 120};
  eg_coord_view v = {.self_id = "b", .self_address = "b-host:1", .self_healthy = 1,
                     .self_lease = 7, .max_lag = 1000};
  eg_coord_view_fill(&keys, &all, fill_members, &v);
  return v;
}

static void test_view_fill(void) {
  uint8_t lv[256], mv[256];
  Engram__Coord__V1__Leader l = ENGRAM__COORD__V1__LEADER__INIT;
  l.id = "a";
  l.address = "a-host:1";
  size_t llen = engram__coord__v1__leader__pack(&l, lv);
  Engram__Coord__V1__Member m = ENGRAM__COORD__V1__MEMBER__INIT;
  m.id = "a";
  m.address = "a-host:1";
  m.role = "primary";
  m.applied_lsn = 12;
  m.last_epoch = 3;
  m.epoch = 3;
  m.healthy = 1;
  m.leaderless_revision = 44;
  size_t mlen = engram__coord__v1__member__pack(&m, mv);
  eg_etcd_kv kvs[] = {kv("/p/epoch", "3", 1, 40, 0), kv("/p/leader", lv, llen, 40, 9),
                      kv("/p/leader_lsn", "12", 2, 41, 0), kv("/p/members/a", mv, mlen, 42, 9),
                      kv("/p/members/x", "\xff", 1, 43, 5), kv("/p/members/y", "", 0, 46, 5),
                      kv("/p/other", "z", 1, 47, 0)};
  eg_coord_view v = fill(kvs, 7);
  CU_ASSERT_EQUAL(v.revision, 120);
  CU_ASSERT(v.has_leader);
  CU_ASSERT_STRING_EQUAL(v.leader_unusable, "");
  CU_ASSERT_STRING_EQUAL(v.leader_id, "a");
  CU_ASSERT_STRING_EQUAL(v.leader_address, "a-host:1");
  CU_ASSERT_EQUAL(v.leader_lease, 9);
  CU_ASSERT_EQUAL(v.leader_mod_revision, 40);
  CU_ASSERT_EQUAL(v.etcd_epoch, 3);
  CU_ASSERT_EQUAL(v.epoch_mod_revision, 40);
  CU_ASSERT_EQUAL(v.leader_lsn, 12);
  /* "\xff" does not decode; "" decodes to a Member with no id: both are
   * skipped and counted. */
  CU_ASSERT_EQUAL(v.n_members, 1);
  CU_ASSERT_EQUAL(v.n_bad_members, 2);
  CU_ASSERT_EQUAL(v.bad_member_revision, 46);
  CU_ASSERT_STRING_EQUAL(v.members[0].id, "a");
  CU_ASSERT_STRING_EQUAL(v.members[0].address, "a-host:1");
  CU_ASSERT(v.members[0].primary);
  CU_ASSERT_EQUAL(v.members[0].applied_lsn, 12);
  CU_ASSERT_EQUAL(v.members[0].leaderless_revision, 44);
  CU_ASSERT_EQUAL(v.members[0].lease, 9);
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_FOLLOW);
}

static void test_unusable_leader(void) {
  uint8_t lv[256];
  Engram__Coord__V1__Leader l = ENGRAM__COORD__V1__LEADER__INIT;
  l.id = "a"; /* no address */
  size_t llen = engram__coord__v1__leader__pack(&l, lv);
  /* A whole Leader, but put by hand with no lease: it would never go. */
  uint8_t lv_ok[256];
  l.address = "a-host:1";
  size_t lv_ok_len = engram__coord__v1__leader__pack(&l, lv_ok);
  struct {
    const void *value;
    size_t len;
    const char *says;
    int64_t lease;
  } bad[] = {{"\xff", 1, "something that is not a Leader", 7}, {"", 0, "no id or address", 7},
             {lv, llen, "no id or address", 7}, {lv_ok, lv_ok_len, "bound to no lease", 0}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    eg_etcd_kv kvs[] = {kv("/p/leader", bad[i].value, bad[i].len, 60, bad[i].lease)};
    eg_coord_view v = fill(kvs, 1);
    CU_ASSERT(!v.has_leader);
    CU_ASSERT_PTR_NOT_NULL(strstr(v.leader_unusable, bad[i].says));
    CU_ASSERT_EQUAL(v.leader_mod_revision, 60);
    /* Nobody follows it, nobody stands for a key that cannot be taken, and
     * the operator is told what to do. */
    eg_coord_decision d = decide(&v);
    CU_ASSERT_EQUAL(d.action, EG_COORD_WAIT);
    CU_ASSERT_PTR_NOT_NULL(strstr(d.problem, "/p/leader holds"));
    CU_ASSERT_PTR_NOT_NULL(strstr(d.problem, "mod_revision 60"));
    CU_ASSERT_PTR_NOT_NULL(strstr(d.problem, "delete it"));
    /* Nor can anyone take it: a primary goes on leading (its own lease
     * still fences it). */
    v.self_primary = 1;
    CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_LEAD);
  }
}

/* A leader key on a live lease that no engramd leader put: it names a node
 * with no member key, or one whose member key says another address. */
static void test_ghost_leader(void) {
  uint8_t lv[256], mv[256];
  Engram__Coord__V1__Leader l = ENGRAM__COORD__V1__LEADER__INIT;
  l.id = "z";
  l.address = "127.0.0.1:1";
  size_t llen = engram__coord__v1__leader__pack(&l, lv);
  Engram__Coord__V1__Member m = ENGRAM__COORD__V1__MEMBER__INIT;
  m.id = "z";
  m.address = "z-host:1";
  m.role = "primary";
  size_t mlen = engram__coord__v1__member__pack(&m, mv);
  eg_etcd_kv alone[] = {kv("/p/leader", lv, llen, 60, 9)};
  eg_coord_view v = fill(alone, 1);
  CU_ASSERT(!v.has_leader);
  CU_ASSERT_PTR_NOT_NULL(strstr(v.leader_unusable, "no member key"));
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  eg_etcd_kv elsewhere[] = {kv("/p/leader", lv, llen, 60, 9), kv("/p/members/z", mv, mlen, 61, 9)};
  v = fill(elsewhere, 2);
  CU_ASSERT(!v.has_leader);
  CU_ASSERT_PTR_NOT_NULL(strstr(v.leader_unusable, "another address"));
  /* The same member at the leader's address: a leader to follow. */
  m.address = "127.0.0.1:1";
  mlen = engram__coord__v1__member__pack(&m, mv);
  eg_etcd_kv real[] = {kv("/p/leader", lv, llen, 60, 9), kv("/p/members/z", mv, mlen, 61, 9)};
  v = fill(real, 2);
  CU_ASSERT(v.has_leader);
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_FOLLOW);
}

/* A leaderless mark past the read it was decided on was taken by no read:
 * it never counts as published (it would rank best and never stand). */
static void test_mark_from_the_future(void) {
  eg_coord_member ms[] = {member("a", 1, 900, 500), member("b", 1, 100, 61)};
  eg_coord_view v = view(ms, 2); /* read at revision 120 */
  v.settled = 1;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_STAND);
  ms[0].leaderless_revision = 120;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT); /* "a" is best, and stands */
}

static void test_twin(void) {
  eg_coord_member ms[] = {member("a", 1, 90, 0), member("b", 1, 100, 0)};
  eg_coord_view v = view(ms, 2);
  /* The leader key names "b" on another lease, at another address: the
   * leader is another node with this id. Its lease is not revoked. */
  with_leader(&v, "b", 42);
  snprintf(v.leader_address, sizeof v.leader_address, "twin-host:2");
  CU_ASSERT_STRING_EQUAL(eg_coord_twin(&v), "twin-host:2");
  eg_coord_decision d = decide(&v);
  CU_ASSERT_EQUAL(d.action, EG_COORD_WAIT);
  CU_ASSERT_STRING_EQUAL(d.problem, "node id b is used by another node at twin-host:2: give each "
                                    "node its own --replica-id");
  /* At this node's address it is this node's own key from before a
   * restart: revoked (test_revoke). */
  snprintf(v.leader_address, sizeof v.leader_address, "b-host:1");
  CU_ASSERT_PTR_NULL(eg_coord_twin(&v));
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_REVOKE);
  /* "b"'s member key was written by another node (lease, address). */
  ms[1].lease = 42;
  snprintf(ms[1].address, sizeof ms[1].address, "twin-host:2");
  with_leader(&v, "a", 3);
  d = decide(&v);
  CU_ASSERT_EQUAL(d.action, EG_COORD_WAIT);
  CU_ASSERT_PTR_NOT_NULL(strstr(d.problem, "node id b is used by another node at twin-host:2"));
  v.has_leader = 0;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  /* The leader goes on leading (its key is on its lease), saying so. */
  with_leader(&v, "b", 7);
  v.self_primary = 1;
  d = decide(&v);
  CU_ASSERT_EQUAL(d.action, EG_COORD_LEAD);
  CU_ASSERT_PTR_NOT_NULL(strstr(d.problem, "is used by another node"));
  /* Its own key on an older lease at its own address: no twin. */
  snprintf(ms[1].address, sizeof ms[1].address, "b-host:1");
  CU_ASSERT_PTR_NULL(eg_coord_twin(&v));
}

static void test_member_due(void) {
  eg_coord_member put = member("b", 1, 100, 0), now = put;
  CU_ASSERT(eg_coord_member_due(NULL, &now, 0, 0));
  /* Unchanged: never again, however long ago. */
  CU_ASSERT(!eg_coord_member_due(&put, &now, 0, 0));
  CU_ASSERT(!eg_coord_member_due(&put, &now, 1, 100 * EG_COORD_MEMBER_EVERY_US));
  /* Progress alone: at most every EG_COORD_MEMBER_EVERY_US while a leader
   * is there, at once in a leaderless period. */
  now.applied_lsn = 101;
  CU_ASSERT(!eg_coord_member_due(&put, &now, 0, 200000));
  CU_ASSERT(!eg_coord_member_due(&put, &now, 0, EG_COORD_MEMBER_EVERY_US - 1));
  CU_ASSERT(eg_coord_member_due(&put, &now, 0, EG_COORD_MEMBER_EVERY_US));
  CU_ASSERT(eg_coord_member_due(&put, &now, 1, 0));
  now = put;
  now.last_epoch = 2;
  CU_ASSERT(!eg_coord_member_due(&put, &now, 0, 0));
  /* What candidates must see at once: role, health, epoch, the period. */
  now = put;
  now.primary = 1;
  CU_ASSERT(eg_coord_member_due(&put, &now, 0, 0));
  now = put;
  now.healthy = 0;
  CU_ASSERT(eg_coord_member_due(&put, &now, 0, 0));
  now = put;
  now.epoch = 2;
  CU_ASSERT(eg_coord_member_due(&put, &now, 0, 0));
  now = put;
  now.leaderless_revision = 130;
  CU_ASSERT(eg_coord_member_due(&put, &now, 0, 0));
}

/* A fresh lease never unfences a primary: only a refresh of the lease its
 * leader key is bound to moves its deadline. */
static void test_ack_until(void) {
  /* The leader's keepalive of its own lease: 2/3 of the TTL from t_sent. */
  CU_ASSERT_EQUAL(eg_coord_ack_until(1, 7, 7, 1000000, 3), 3000000);
  /* A deposed primary's new grant (its old lease expired in etcd, and
   * with it its leader key): fenced. */
  CU_ASSERT_EQUAL(eg_coord_ack_until(1, 9, 7, 1000000, 3), 0);
  CU_ASSERT_EQUAL(eg_coord_ack_until(1, 9, 0, 1000000, 3), 0);
  /* A replica may stand on any lease it holds: its deadline, should it
   * win, is that lease's. */
  CU_ASSERT_EQUAL(eg_coord_ack_until(0, 9, 0, 1000000, 3), 3000000);
}

/* ---- eg_coord_url_parse ----------------------------------------------------- */

static eg_coord_url url;
static char url_err[256];

static eg_err parse(const char *s) {
  url_err[0] = '\0';
  memset(&url, 0, sizeof url);
  return eg_coord_url_parse(s, &url, url_err, sizeof url_err);
}

static void test_url_good(void) {
  CU_ASSERT_EQUAL(parse("etcd://127.0.0.1:2379/engram"), EG_OK);
  CU_ASSERT_EQUAL(url.n_endpoints, 1);
  CU_ASSERT_STRING_EQUAL(url.endpoints[0], "127.0.0.1:2379");
  CU_ASSERT_STRING_EQUAL(url.prefix, "/engram");
  CU_ASSERT_EQUAL(parse("etcd://etcd-0.etcd:2379,[::1]:1,e_2:65535/a/b.c-d_e//"), EG_OK);
  CU_ASSERT_EQUAL(url.n_endpoints, 3);
  CU_ASSERT_STRING_EQUAL(url.endpoints[0], "etcd-0.etcd:2379");
  CU_ASSERT_STRING_EQUAL(url.endpoints[1], "[::1]:1");
  CU_ASSERT_STRING_EQUAL(url.endpoints[2], "e_2:65535");
  CU_ASSERT_STRING_EQUAL(url.prefix, "/a/b.c-d_e");
  /* The most endpoints there may be. */
  CU_ASSERT_EQUAL(parse("etcd://a:1,a:2,a:3,a:4,a:5,a:6,a:7,a:8,a:9/p"), EG_OK);
  CU_ASSERT_EQUAL(url.n_endpoints, EG_ETCD_MAX_ENDPOINTS);
}

/* s is refused, and err names want. */
static void assert_bad(const char *s, const char *want) {
  CU_ASSERT_EQUAL(parse(s), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(url_err, "--coordinator"));
  if (!strstr(url_err, want)) fprintf(stderr, "\n%s: %s (wanted %s)\n", s, url_err, want);
  CU_ASSERT_PTR_NOT_NULL(strstr(url_err, want));
  CU_ASSERT_EQUAL(url.n_endpoints, 0); /* *out untouched */
}

static void test_url_bad(void) {
  assert_bad("http://a:1/p", "etcd://");
  assert_bad("etcd://a:1", "no /PREFIX");
  assert_bad("etcd://a:1/", "PREFIX is empty");
  assert_bad("etcd://a:1///", "PREFIX is empty");
  assert_bad("etcd:///p", "empty endpoint");
  assert_bad("etcd://a:1,/p", "empty endpoint");
  assert_bad("etcd://a:1,a:2,a:3,a:4,a:5,a:6,a:7,a:8,a:9,a:10/p", "more than 9 endpoints");
  assert_bad("etcd://a/p", "a: no :PORT");
  assert_bad("etcd://a:/p", "port must be 1..65535");
  assert_bad("etcd://a:0/p", "port must be 1..65535");
  assert_bad("etcd://a:65536/p", "port must be 1..65535");
  assert_bad("etcd://a:123456/p", "port must be 1..65535");
  assert_bad("etcd://a:1x/p", "port must be 1..65535");
  assert_bad("etcd://:1/p", "no host");
  assert_bad("etcd://user@a:1/p", "bad host");
  assert_bad("etcd://user:pw@a:1/p", "port must be 1..65535");
  assert_bad("etcd://[]:1/p", "bad IPv6");
  assert_bad("etcd://[::1/p", "bad IPv6");
  assert_bad("etcd://[::1]/p", "no :PORT");
  assert_bad("etcd://a:1/p q", "only letters");
  assert_bad("etcd://a:1//p", "empty path segment");
  assert_bad("etcd://a:1/p//q", "empty path segment");
  assert_bad("etcd://-a:1/p", "starts with '-' or '.'");
  assert_bad("etcd://.a:1/p", "starts with '-' or '.'");
  assert_bad("etcd://a:1/../x", "'.' or '..' path segment");
  assert_bad("etcd://a:1/p/./q", "'.' or '..' path segment");
  assert_bad("etcd://a:1/p/..", "'.' or '..' path segment");
  CU_ASSERT_EQUAL(parse("etcd://a:1/p/.q/..r/x."), EG_OK); /* dots inside names are fine */
  char longp[400] = "etcd://a:1/";
  memset(longp + strlen(longp), 'x', 300);
  assert_bad(longp, "longer than 254");
}

/* engramd refuses to start on a bad --coordinator, naming it. */
static void test_url_in_config(void) {
  eg_config c;
  char *bad[] = {"engramd", "--coordinator", "etcd://a:99999/p"};
  char *good[] = {"engramd", "--coordinator", "etcd://a:2379/p"};
  CU_ASSERT_EQUAL(eg_config_parse(&c, 3, bad, NULL, NULL, url_err, sizeof url_err), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(url_err, "--coordinator: endpoint a:99999"));
  CU_ASSERT_EQUAL(eg_config_parse(&c, 3, good, NULL, NULL, url_err, sizeof url_err), EG_OK);
  /* The node's id names its key in etcd; the address is dialled by others. */
  char *slash_id[] = {"engramd", "--coordinator", "etcd://a:2379/p", "--replica-id", "a/b"};
  CU_ASSERT_EQUAL(eg_config_parse(&c, 5, slash_id, NULL, NULL, url_err, sizeof url_err), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(url_err, "--replica-id"));
  char *ok_id[] = {"engramd", "--coordinator", "etcd://a:2379/p", "--replica-id", "node-1.a_b"};
  CU_ASSERT_EQUAL(eg_config_parse(&c, 5, ok_id, NULL, NULL, url_err, sizeof url_err), EG_OK);
  char *bad_addr[] = {"engramd", "--coordinator", "etcd://a:2379/p", "--advertise-address",
                      "garbage"};
  CU_ASSERT_EQUAL(eg_config_parse(&c, 5, bad_addr, NULL, NULL, url_err, sizeof url_err), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(url_err, "--advertise-address"));
  char *ok_addr[] = {"engramd", "--coordinator", "etcd://a:2379/p", "--advertise-address",
                     "engram-0.engram-peers.ns.svc:50051"};
  CU_ASSERT_EQUAL(eg_config_parse(&c, 5, ok_addr, NULL, NULL, url_err, sizeof url_err), EG_OK);
}

void eg_test_register_coord(void) {
  CU_pSuite s = CU_add_suite("coord", NULL, NULL);
  CU_add_test(s, "follow the leader", test_follow);
  CU_add_test(s, "lead", test_lead);
  CU_add_test(s, "demote a primary that does not lead", test_demote);
  CU_add_test(s, "revoke a key left from before a restart", test_revoke);
  CU_add_test(s, "the best candidate stands", test_stand_best);
  CU_add_test(s, "ties go to the smaller id", test_stand_ties_by_id);
  CU_add_test(s, "last_epoch beats applied_lsn", test_last_epoch_beats_applied);
  CU_add_test(s, "an unhealthy node never stands", test_unhealthy_never_stands);
  CU_add_test(s, "wait for members ranked above until settled", test_wait_until_settled);
  CU_add_test(s, "wait for every member to publish until settled", test_wait_for_every_member);
  CU_add_test(s, "published in this leaderless period", test_published_in_this_period);
  CU_add_test(s, "view: what the prefix holds", test_view_fill);
  CU_add_test(s, "an unusable leader key: nobody stands, a primary demotes", test_unusable_leader);
  CU_add_test(s, "another node with this id", test_twin);
  CU_add_test(s, "a leader key no engramd leader put", test_ghost_leader);
  CU_add_test(s, "a leaderless mark from the future", test_mark_from_the_future);
  CU_add_test(s, "member puts: when", test_member_due);
  CU_add_test(s, "--failover-max-lag", test_lag);
  CU_add_test(s, "the epoch taken", test_epoch);
  CU_add_test(s, "a fresh lease never unfences a primary", test_ack_until);
  CU_add_test(s, "url: good", test_url_good);
  CU_add_test(s, "url: bad", test_url_bad);
  CU_add_test(s, "url: checked at start", test_url_in_config);
}
