/* coord/: the pure election decision (eg_coord_decide) and --coordinator
 * URL parsing. */
#include <CUnit/CUnit.h>
#include <string.h>

#include "coord/coord.h"
#include "server/config.h"
#include "suites.h"

/* ---- eg_coord_decide ------------------------------------------------------ */

static eg_coord_member member(const char *id, uint64_t last_epoch, uint64_t applied,
                              int64_t mod_revision) {
  eg_coord_member m = {.applied_lsn = applied, .last_epoch = last_epoch, .epoch = last_epoch,
                       .healthy = 1, .mod_revision = mod_revision};
  snprintf(m.id, sizeof m.id, "%s", id);
  return m;
}

/* A replica "b" with its lease, in a cluster whose view the test fills. */
static eg_coord_view view(const eg_coord_member *members, size_t n) {
  eg_coord_view v = {.self_id = "b", .self_healthy = 1, .self_applied = 100, .self_last_epoch = 1,
                     .self_epoch = 1, .self_lease = 7, .revision = 50, .members = members,
                     .n_members = n, .max_lag = 1000};
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
  v.gone_revision = 40;
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
  v.gone_revision = 50;
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
  v.gone_revision = 50;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_STAND);
  v.self_id = "c";
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
}

static void test_last_epoch_beats_applied(void) {
  /* "a" holds fewer records, but of a later epoch: "b"'s extra records are
   * of an older history the new one forked from. */
  eg_coord_member ms[] = {member("a", 3, 80, 60), member("b", 2, 100, 61)};
  eg_coord_view v = view(ms, 2);
  v.gone_revision = 50;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  v.self_id = "a";
  eg_coord_decision d = decide(&v);
  CU_ASSERT_EQUAL(d.action, EG_COORD_STAND);
  CU_ASSERT_EQUAL(d.epoch, 4);
}

static void test_unhealthy_never_stands(void) {
  eg_coord_member ms[] = {member("a", 1, 90, 60), member("b", 1, 100, 61)};
  eg_coord_view v = view(ms, 2);
  v.gone_revision = 50;
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
  v.gone_revision = 50;
  eg_coord_decision d = decide(&v);
  CU_ASSERT_EQUAL(d.action, EG_COORD_WAIT);
  CU_ASSERT_STRING_EQUAL(d.problem, "");
  /* It publishes: "a" is the best, "b" still waits. */
  ms[0].mod_revision = 62;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  /* A silent member ranked below does not hold "b" back. */
  ms[0] = member("a", 1, 80, 45);
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_STAND);
  /* Nor does its own key not yet being rewritten hold the period once
   * settled: then every key present counts. */
  ms[0] = member("a", 1, 80, 45);
  ms[1].mod_revision = 45;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
  v.settled = 1;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_STAND);
  /* Not present in etcd at all (its put failed): it cannot stand. */
  v.n_members = 1;
  CU_ASSERT_EQUAL(decide(&v).action, EG_COORD_WAIT);
}

static void test_lag(void) {
  eg_coord_member ms[] = {member("a", 1, 100, 60), member("b", 1, 98, 61)};
  eg_coord_view v = view(ms, 2);
  v.gone_revision = 50;
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
  v.gone_revision = 50;
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
  v.self_epoch = 0;
  v.etcd_epoch = 0;
  ms[0].epoch = 0;
  ms[0].last_epoch = 0;
  ms[1].last_epoch = 0;
  ms[1].epoch = 0;
  CU_ASSERT_EQUAL(decide(&v).epoch, 1);
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
  CU_add_test(s, "--failover-max-lag", test_lag);
  CU_add_test(s, "the epoch taken", test_epoch);
  CU_add_test(s, "a fresh lease never unfences a primary", test_ack_until);
  CU_add_test(s, "url: good", test_url_good);
  CU_add_test(s, "url: bad", test_url_bad);
  CU_add_test(s, "url: checked at start", test_url_in_config);
}
