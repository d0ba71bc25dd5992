/* lifecycle: the activity, metadata-term and due-work indexes the storage
 * writers keep, their scans, the warm tier's message deletion, retention
 * policies and migration 4's back-fill, against real LMDB files. Index
 * contents are checked key by key over every data DB (eg_store_visit_data),
 * so a stale entry anywhere shows. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/storage.h"
#include "suites.h"

#define T "acme"

static char tdir[4096];

static eg_store *open_store(void) { return eg_test_store_open(tdir, NULL); }

static void setup(void) { snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir()); }
static void teardown(void) { eg_test_rmdir(tdir); }

static eg_session_rec session_rec(const char *sid, const char *user, int64_t t_us) {
  eg_session_rec r = ENGRAM__STORAGE__V1__SESSION_RECORD__INIT;
  r.session_id = (char *)sid;
  r.user_id = (char *)user;
  r.agent_id = (char *)"agent";
  r.state = EG_SSTATE_ACTIVE;
  r.create_time_us = r.update_time_us = t_us;
  r.expire_time_us = t_us + 1000;
  r.ttl_us = 1000;
  return r;
}

/* Puts r; an update passes the stored record, read in the same txn, as
 * the put's prev. */
static void put_session(eg_store *s, const char *tenant, const eg_session_rec *r, int is_new) {
  eg_txn *w;
  eg_session_rec *prev = NULL;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  if (!is_new) CU_ASSERT_EQUAL_FATAL(eg_store_session_get(w, tenant, r->session_id, &prev), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_session_put(w, tenant, r, prev), EG_OK);
  if (prev) engram__storage__v1__session_record__free_unpacked(prev, NULL);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

static eg_session_rec *get_session(eg_store *s, const char *tenant, const char *sid) {
  eg_txn *r;
  eg_session_rec *rec = NULL;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_get(r, tenant, sid, &rec), EG_OK);
  eg_store_reader_end(r);
  eg_store_reader_free(r);
  return rec;
}

/* Messages seq first..last, message q created at q * 100 us, with a
 * client id "c<q>". */
static void put_messages(eg_store *s, const char *tenant, const char *sid, int first, int last) {
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  for (int q = first; q <= last; q++) {
    char cid[16];
    snprintf(cid, sizeof cid, "c%d", q);
    eg_message_rec m = ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
    m.seq = q;
    m.role = 1;
    m.client_message_id = cid;
    m.create_time_us = q * 100;
    CU_ASSERT_EQUAL_FATAL(eg_store_message_put(w, tenant, sid, &m), EG_OK);
  }
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

/* ---- the index DBs, key by key ---------------------------------------------- */

typedef struct {
  const char *db; /* the DB to list; NULL: all four lifecycle indexes */
  char out[8192];
} dump;

static void hexish(char *out, size_t cap, const uint8_t *p, size_t n) {
  size_t o = strlen(out);
  for (size_t i = 0; i < n && o + 5 < cap; i++) {
    if (p[i] >= 0x21 && p[i] < 0x7f) out[o++] = (char)p[i];
    else o += (size_t)snprintf(out + o, cap - o, "\\%02x", p[i]);
  }
  out[o] = '\0';
}

static void dump_kv(void *arg, const char *db, const void *k, size_t klen, const void *v,
                    size_t vlen) {
  dump *d = arg;
  (void)v;
  (void)vlen;
  int index = !strcmp(db, "sessions_by_activity") || !strcmp(db, "sweep_due") ||
              !strcmp(db, "session_terms");
  if (d->db ? strcmp(db, d->db) != 0 : !index) return;
  size_t o = strlen(d->out);
  snprintf(d->out + o, sizeof d->out - o, "%s%s:", o ? " " : "", db);
  hexish(d->out, sizeof d->out, k, klen);
}

/* Every key of the lifecycle index DBs (or of db), in a string. */
static const char *dump_index(eg_store *s, const char *db) {
  static dump d;
  eg_txn *r;
  d.db = db;
  d.out[0] = '\0';
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(eg_store_visit_data(r, dump_kv, &d), EG_OK);
  eg_store_reader_end(r);
  eg_store_reader_free(r);
  return d.out;
}

/* ---- scans into strings ------------------------------------------------------- */

typedef struct {
  char ids[512];
  size_t limit, n;
  eg_session_cursor last;
} id_list;

static void id_add(id_list *l, const char *id) {
  size_t o = strlen(l->ids);
  snprintf(l->ids + o, sizeof l->ids - o, "%s%s", o ? "," : "", id);
  l->n++;
}

static int collect_session(void *arg, eg_session_rec *rec, const eg_session_cursor *cur) {
  id_list *l = arg;
  id_add(l, rec->session_id);
  l->last = *cur;
  engram__storage__v1__session_record__free_unpacked(rec, NULL);
  return l->limit && l->n == l->limit;
}

static int collect_id(void *arg, const char *id) {
  id_add(arg, id);
  return 0;
}

static int collect_due(void *arg, int64_t due, const char *id) {
  char b[160];
  snprintf(b, sizeof b, "%s@%lld", id, (long long)due);
  id_add(arg, b);
  return 0;
}

static int collect_tenant(void *arg, const char *tenant) {
  id_add(arg, tenant);
  return 0;
}


static const char *sweep(eg_store *s, unsigned kind, const char *tenant, int64_t cutoff,
                         size_t max) {
  static id_list l;
  memset(&l, 0, sizeof l);
  eg_txn *r = eg_test_reader(s);
  CU_ASSERT_EQUAL(eg_store_sweep_scan(r, kind, tenant, cutoff, max, collect_due, &l), EG_OK);
  eg_test_reader_done(r);
  return l.ids;
}

/* ---- tests -------------------------------------------------------------------- */

/* The team view: newest activity first, paginated, moved by each put. */
static void test_activity(void) {
  setup();
  eg_store *s = open_store();
  eg_session_rec a = session_rec("a", "u1", 100), b = session_rec("b", "u2", 200),
                 c = session_rec("c", "u1", 300);
  put_session(s, T, &a, 1);
  put_session(s, T, &b, 1);
  put_session(s, T, &c, 1);
  put_session(s, "other", &a, 1);
  /* An append to a: its update time moves it to the front. */
  a.update_time_us = 400;
  put_session(s, T, &a, 0);
  eg_session_rec *got = get_session(s, T, "a");
  CU_ASSERT_EQUAL(got->last_activity_us, 400);
  /* A put with an older update time never moves activity back. */
  got->update_time_us = 50;
  put_session(s, T, got, 0);
  engram__storage__v1__session_record__free_unpacked(got, NULL);

  id_list l = {.limit = 2};
  eg_txn *r = eg_test_reader(s);
  CU_ASSERT_EQUAL(eg_store_sessions_by_activity_scan(r, T, NULL, collect_session, &l), EG_OK);
  CU_ASSERT_STRING_EQUAL(l.ids, "a,c");
  eg_session_cursor after = l.last;
  memset(&l, 0, sizeof l);
  CU_ASSERT_EQUAL(eg_store_sessions_by_activity_scan(r, T, &after, collect_session, &l), EG_OK);
  CU_ASSERT_STRING_EQUAL(l.ids, "b");
  eg_session_cursor bad = {.len = 3};
  CU_ASSERT_EQUAL(eg_store_sessions_by_activity_scan(r, T, &bad, collect_session, &l), EG_EINVAL);
  eg_test_reader_done(r);
  /* One activity entry per session, at its newest activity. */
  CU_ASSERT_STRING_EQUAL(dump_index(s, "sessions_by_activity"),
                         "sessions_by_activity:\\04acme\\00\\00\\00\\00\\00\\00\\00\\c8b "
                         "sessions_by_activity:\\04acme\\00\\00\\00\\00\\00\\00\\01,c "
                         "sessions_by_activity:\\04acme\\00\\00\\00\\00\\00\\00\\01\\90a "
                         "sessions_by_activity:\\05other\\00\\00\\00\\00\\00\\00\\00da");
  eg_store_close(s);
  teardown();
}

/* Metadata terms: moved from the old hashes to the new, checked, scanned. */
static void test_terms(void) {
  setup();
  eg_store *s = open_store();
  uint64_t h1[] = {1, 5}, h2[] = {5, 9}, bad[] = {9, 5};
  eg_session_rec a = session_rec("a", "u", 100), b = session_rec("b", "u", 100);
  a.metadata_hashes = h1;
  a.n_metadata_hashes = 2;
  b.metadata_hashes = h2;
  b.n_metadata_hashes = 2;
  put_session(s, T, &a, 1);
  put_session(s, T, &b, 1);
  a.metadata_hashes = h2;
  put_session(s, T, &a, 0);

  id_list l = {0};
  eg_txn *r = eg_test_reader(s);
  CU_ASSERT_EQUAL(eg_store_session_terms_scan(r, T, 5, NULL, collect_id, &l), EG_OK);
  CU_ASSERT_STRING_EQUAL(l.ids, "a,b");
  memset(&l, 0, sizeof l);
  CU_ASSERT_EQUAL(eg_store_session_terms_scan(r, T, 9, "a", collect_id, &l), EG_OK);
  CU_ASSERT_STRING_EQUAL(l.ids, "b");
  memset(&l, 0, sizeof l);
  CU_ASSERT_EQUAL(eg_store_session_terms_scan(r, T, 1, NULL, collect_id, &l), EG_OK);
  CU_ASSERT_STRING_EQUAL(l.ids, "");
  eg_test_reader_done(r);
  CU_ASSERT_STRING_EQUAL(dump_index(s, "session_terms"),
                         "session_terms:\\04acme\\00\\00\\00\\00\\00\\00\\00\\05a "
                         "session_terms:\\04acme\\00\\00\\00\\00\\00\\00\\00\\05b "
                         "session_terms:\\04acme\\00\\00\\00\\00\\00\\00\\00\\09a "
                         "session_terms:\\04acme\\00\\00\\00\\00\\00\\00\\00\\09b");

  /* Unsorted, repeated or too many hashes are refused before any write. */
  eg_txn *w;
  uint64_t many[EG_SESSION_TERMS_MAX + 1];
  for (size_t i = 0; i <= EG_SESSION_TERMS_MAX; i++) many[i] = i + 1;
  eg_session_rec *prev = NULL;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_session_get(w, T, "a", &prev), EG_OK);
  a.metadata_hashes = bad;
  CU_ASSERT_EQUAL(eg_store_session_put(w, T, &a, prev), EG_EINVAL);
  a.metadata_hashes = many;
  a.n_metadata_hashes = EG_SESSION_TERMS_MAX + 1;
  CU_ASSERT_EQUAL(eg_store_session_put(w, T, &a, prev), EG_EINVAL);
  a.n_metadata_hashes = EG_SESSION_TERMS_MAX;
  CU_ASSERT_EQUAL(eg_store_session_put(w, T, &a, prev), EG_OK);
  engram__storage__v1__session_record__free_unpacked(prev, NULL);
  eg_store_write_abort(w);
  eg_store_close(s);
  teardown();
}

/* Kind 1: an ACTIVE session is due at its expiry, an ENDED one at its end;
 * each put moves the one entry. */
static void test_session_gone(void) {
  setup();
  eg_store *s = open_store();
  eg_session_rec a = session_rec("a", "u", 100), b = session_rec("b", "u", 200);
  put_session(s, T, &a, 1); /* due 1100 */
  put_session(s, T, &b, 1); /* due 1200 */
  a.update_time_us = 500;
  a.expire_time_us = 1500; /* renewed by an append */
  put_session(s, T, &a, 0);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_GONE, T, INT64_MAX, 10), "b@1200,a@1500");
  b.state = EG_SSTATE_ENDED;
  b.end_time_us = 250;
  b.update_time_us = 250;
  put_session(s, T, &b, 0);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_GONE, T, INT64_MAX, 10), "b@250,a@1500");
  /* The edges: strictly before the cutoff, at most max. */
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_GONE, T, 250, 10), "");
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_GONE, T, 251, 10), "b@250");
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_GONE, T, INT64_MAX, 1), "b@250");
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_GONE, T, INT64_MAX, 0), "");
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_GONE, "nobody", INT64_MAX, 10), "");
  /* No expiry: no entry. */
  a.expire_time_us = 0;
  put_session(s, T, &a, 0);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_GONE, T, INT64_MAX, 10), "b@250");
  eg_store_close(s);
  teardown();
}

/* The one "gone since" definition the sweep and the reopen check share. */
static void test_session_gone_us(void) {
  eg_session_rec r = session_rec("a", "u", 100); /* expires at 1100 */
  CU_ASSERT_EQUAL(eg_store_session_gone_us(&r), 1100);
  r.expire_time_us = 0;
  CU_ASSERT_EQUAL(eg_store_session_gone_us(&r), 0);
  r.state = EG_SSTATE_ENDED;
  r.update_time_us = 400;
  CU_ASSERT_EQUAL(eg_store_session_gone_us(&r), 400); /* ended under v3: no end time */
  r.end_time_us = 300;
  CU_ASSERT_EQUAL(eg_store_session_gone_us(&r), 300);
}

/* The tenants with due work of a kind, one seek each. */
static void test_sweep_tenants(void) {
  setup();
  eg_store *s = open_store();
  const char *tenants[] = {"t3", "t1", "t20", "t2"};
  for (int i = 0; i < 4; i++) {
    eg_session_rec a = session_rec("a", "u", 100), b = session_rec("b", "u", 100);
    put_session(s, tenants[i], &a, 1);
    put_session(s, tenants[i], &b, 1);
  }
  put_messages(s, "t2", "a", 1, 1);
  id_list l = {0};
  eg_txn *r = eg_test_reader(s);
  CU_ASSERT_EQUAL(eg_store_sweep_tenants(r, EG_SWEEP_SESSION_GONE, NULL, collect_tenant, &l),
                  EG_OK);
  /* Length-prefixed: shorter names first. */
  CU_ASSERT_STRING_EQUAL(l.ids, "t1,t2,t3,t20");
  memset(&l, 0, sizeof l);
  CU_ASSERT_EQUAL(eg_store_sweep_tenants(r, EG_SWEEP_SESSION_GONE, "t2", collect_tenant, &l),
                  EG_OK);
  CU_ASSERT_STRING_EQUAL(l.ids, "t3,t20");
  memset(&l, 0, sizeof l);
  CU_ASSERT_EQUAL(eg_store_sweep_tenants(r, EG_SWEEP_SESSION_MESSAGES, NULL, collect_tenant, &l),
                  EG_OK);
  CU_ASSERT_STRING_EQUAL(l.ids, "t2");
  memset(&l, 0, sizeof l);
  CU_ASSERT_EQUAL(eg_store_sweep_tenants(r, EG_SWEEP_MEMORY_EXPIRE, NULL, collect_tenant, &l),
                  EG_OK);
  CU_ASSERT_STRING_EQUAL(l.ids, "");
  CU_ASSERT_EQUAL(eg_store_sweep_tenants(r, 0, NULL, collect_tenant, &l), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_store_sweep_tenants(r, EG_SWEEP_KIND_MAX + 1, NULL, collect_tenant, &l),
                  EG_EINVAL);
  eg_test_reader_done(r);
  eg_store_close(s);
  teardown();
}

/* Kind 2 and the warm tier: the entry follows the oldest message; the
 * deletion is bounded, drops retry keys and keeps the session. */
static void test_warm_tier(void) {
  setup();
  eg_store *s = open_store();
  eg_session_rec a = session_rec("a", "u", 100);
  put_session(s, T, &a, 1);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_MESSAGES, T, INT64_MAX, 10), "");
  put_messages(s, T, "a", 1, 3);
  put_messages(s, T, "a", 4, 5);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_MESSAGES, T, INT64_MAX, 10), "a@100");

  eg_txn *w;
  uint64_t n = 99, keys = 0;
  int more = -1;
  /* Messages 1..4 are before 450; at most 3 go. */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_messages_delete_before(w, T, "a", 450, 3, UINT64_MAX, &keys, &n, &more), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(n, 3);
  CU_ASSERT_EQUAL(more, 1);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_MESSAGES, T, INT64_MAX, 10), "a@400");
  CU_ASSERT_STRING_EQUAL(dump_index(s, "idempotency"),
                         "idempotency:\\04acme\\01ac4 idempotency:\\04acme\\01ac5");
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_messages_delete_before(w, T, "a", 450, 3, UINT64_MAX, &keys, &n, &more), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_EQUAL(more, 0);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_MESSAGES, T, INT64_MAX, 10), "a@500");
  /* Nothing before the cutoff: nothing written. */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_messages_delete_before(w, T, "a", 500, 3, UINT64_MAX, &keys, &n, &more), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(n, 0);
  /* The last one: the entry goes, the session stays. */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_messages_delete_before(w, T, "a", INT64_MAX, 3, UINT64_MAX, &keys, &n, &more), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_MESSAGES, T, INT64_MAX, 10), "");
  CU_ASSERT_STRING_EQUAL(dump_index(s, "messages"), "");
  CU_ASSERT_STRING_EQUAL(dump_index(s, "idempotency"), "");
  eg_session_rec *got = get_session(s, T, "a");
  engram__storage__v1__session_record__free_unpacked(got, NULL);
  eg_store_close(s);
  teardown();
}

static int purging(eg_store *s, const char *sid) {
  int yes = -1;
  eg_txn *r = eg_test_reader(s);
  CU_ASSERT_EQUAL(eg_store_session_purging(r, T, sid, &yes), EG_OK);
  eg_test_reader_done(r);
  return yes;
}

/* One purge step (one txn, *keys 0 at its start) of at most max messages
 * and max_keys keys. */
static eg_err purge_step(eg_store *s, const char *sid, int64_t due, size_t max,
                         uint64_t max_keys, uint64_t *n, uint64_t *keys, int *more) {
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  *keys = 0;
  eg_err e = eg_store_session_purge_step(w, T, sid, due, max, max_keys, keys, n, more);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  return e;
}

static eg_err retire(eg_store *s, const char *sid, int64_t now_us) {
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  eg_err e = eg_store_session_retire(w, T, sid, now_us);
  if (e) eg_store_write_abort(w);
  else CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  return e;
}

/* Kind 5: retiring takes the record and every index entry in one txn and
 * leaves one purge entry; purge steps take the messages a bounded number
 * of keys at a time (here 2 a message: it and its retry record), the last
 * one with the entry. */
static void test_retire_and_purge(void) {
  setup();
  eg_store *s = open_store();
  uint64_t h[] = {7};
  eg_session_rec a = session_rec("a", "u", 100);
  a.metadata_hashes = h;
  a.n_metadata_hashes = 1;
  a.state = EG_SSTATE_ENDED;
  a.end_time_us = 600;
  put_session(s, T, &a, 1);
  put_messages(s, T, "a", 1, 5);
  CU_ASSERT_EQUAL(purging(s, "a"), 0); /* a live session is not being purged */
  CU_ASSERT_EQUAL(retire(s, "a", 900), EG_OK);
  eg_txn *r = eg_test_reader(s);
  eg_session_rec *gone = NULL;
  CU_ASSERT_EQUAL(eg_store_session_get(r, T, "a", &gone), EG_ENOTFOUND);
  eg_test_reader_done(r);
  /* Nothing names the session but the purge entry, its messages and keys. */
  CU_ASSERT_STRING_EQUAL(dump_index(s, NULL),
                         "sweep_due:\\05\\04acme\\00\\00\\00\\00\\00\\00\\03\\84a");
  CU_ASSERT_STRING_EQUAL(dump_index(s, "sessions"), "");
  CU_ASSERT_STRING_EQUAL(dump_index(s, "sessions_by_user"), "");
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_PURGE, T, INT64_MAX, 10), "a@900");
  CU_ASSERT_EQUAL(purging(s, "a"), 1);
  CU_ASSERT_EQUAL(retire(s, "a", 950), EG_ENOTFOUND);

  uint64_t n = 99, keys = 99;
  int more = -1;
  /* 5 keys: a third message would make 6. */
  CU_ASSERT_EQUAL(purge_step(s, "a", 900, 10, 5, &n, &keys, &more), EG_OK);
  CU_ASSERT_EQUAL(n, 2);
  CU_ASSERT_EQUAL(keys, 4);
  CU_ASSERT_EQUAL(more, 1);
  /* Below one message's keys: the step's first goes all the same. */
  CU_ASSERT_EQUAL(purge_step(s, "a", 900, 10, 1, &n, &keys, &more), EG_OK);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_EQUAL(keys, 2);
  CU_ASSERT_EQUAL(more, 1);
  CU_ASSERT_EQUAL(purging(s, "a"), 1);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_PURGE, T, INT64_MAX, 10), "a@900");
  CU_ASSERT_STRING_EQUAL(dump_index(s, "idempotency"),
                         "idempotency:\\04acme\\01ac4 idempotency:\\04acme\\01ac5");
  /* Exactly the last two: the step that takes the last drops the entry. */
  CU_ASSERT_EQUAL(purge_step(s, "a", 900, 10, 4, &n, &keys, &more), EG_OK);
  CU_ASSERT_EQUAL(n, 2);
  CU_ASSERT_EQUAL(keys, 4);
  CU_ASSERT_EQUAL(more, 0);
  CU_ASSERT_EQUAL(purging(s, "a"), 0);
  CU_ASSERT_STRING_EQUAL(dump_index(s, NULL), "");
  CU_ASSERT_STRING_EQUAL(dump_index(s, "messages"), "");
  CU_ASSERT_STRING_EQUAL(dump_index(s, "idempotency"), "");

  /* A session without messages goes whole: no entry. */
  eg_session_rec b = session_rec("b", "u", 100);
  put_session(s, T, &b, 1);
  CU_ASSERT_EQUAL(retire(s, "b", 900), EG_OK);
  CU_ASSERT_STRING_EQUAL(dump_index(s, NULL), "");
  CU_ASSERT_STRING_EQUAL(dump_index(s, "sessions"), "");

  /* A record of the id (only damage makes one: CreateSession refuses the
   * id while purging) owns the messages: the entry goes, they stay. */
  eg_session_rec c = session_rec("c", "u", 100);
  put_session(s, T, &c, 1);
  put_messages(s, T, "c", 1, 2);
  CU_ASSERT_EQUAL(retire(s, "c", 900), EG_OK);
  put_session(s, T, &c, 1);
  CU_ASSERT_EQUAL(purging(s, "c"), 0);
  CU_ASSERT_EQUAL(purge_step(s, "c", 900, 10, 10, &n, &keys, &more), EG_OK);
  CU_ASSERT_EQUAL(n, 0);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_PURGE, T, INT64_MAX, 10), "");
  CU_ASSERT_STRING_NOT_EQUAL(dump_index(s, "messages"), "");
  eg_store_close(s);
  teardown();
}

/* Deleting a session leaves no index key of it anywhere. */
static void test_delete_leaves_nothing(void) {
  setup();
  eg_store *s = open_store();
  uint64_t h[] = {7};
  eg_session_rec a = session_rec("a", "u", 100);
  a.metadata_hashes = h;
  a.n_metadata_hashes = 1;
  put_session(s, T, &a, 1);
  put_messages(s, T, "a", 1, 2);
  CU_ASSERT_STRING_NOT_EQUAL(dump_index(s, NULL), "");
  eg_txn *w;
  uint64_t n = 0;
  /* The caller's copy may be stale: the stored record names the keys. */
  a.update_time_us = 9;
  a.expire_time_us = 0;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_delete(w, T, &a, &n), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(n, 2);
  CU_ASSERT_STRING_EQUAL(dump_index(s, NULL), "");
  eg_store_close(s);
  teardown();
}

static eg_memory_rec memory_rec(const char *id, int state, int64_t t_us, int64_t expire_us) {
  eg_memory_rec m = ENGRAM__STORAGE__V1__MEMORY_RECORD__INIT;
  m.memory_id = (char *)id;
  m.user_id = (char *)"u";
  m.state = state;
  m.create_time_us = m.update_time_us = t_us;
  m.expire_time_us = expire_us;
  return m;
}

static eg_memory_rec *get_memory(eg_store *s, const char *id) {
  eg_memory_rec *m = NULL;
  eg_txn *r = eg_test_reader(s);
  CU_ASSERT_EQUAL(eg_store_memory_get(r, T, id, &m), EG_OK);
  eg_test_reader_done(r);
  return m;
}

/* Puts rec (over old, NULL for a new one) in a txn of its own. */
static void put_memory(eg_store *s, const eg_memory_rec *rec, const eg_memory_rec *old) {
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_memory_put(w, T, rec, old, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

/* Erases user u from tenant T two entries a txn, so the erasure spans
 * several txns; *c holds the last step's counts. Returns done. */
static int erase_user(eg_store *s, const char *u, eg_erase_counts *c) {
  int done = 0, steps = 0;
  eg_txn *w;
  while (!done && steps++ < 50) {
    CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_store_user_erase_step(w, T, u, 2, c, &done), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  }
  return done;
}

/* Kinds 3 and 4: tombstones at the state change, expiries at expire_us;
 * purge drops both. */
static void test_memory_entries(void) {
  setup();
  eg_store *s = open_store();
  eg_txn *w;
  eg_memory_rec m = memory_rec("m1", EG_MSTATE_ACTIVE, 100, 5000);
  eg_memory_rec k = memory_rec("m2", EG_MSTATE_ACTIVE, 100, 0);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_memory_put(w, T, &m, NULL, NULL), EG_OK);
  CU_ASSERT_EQUAL(eg_store_memory_put(w, T, &k, NULL, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_MEMORY_EXPIRE, T, INT64_MAX, 10), "m1@5000");
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_MEMORY_TOMBSTONE, T, INT64_MAX, 10), "");

  /* An edit that keeps the state keeps state_time_us; a delete moves it. */
  eg_memory_rec *old = get_memory(s, "m1");
  CU_ASSERT_EQUAL(old->state_time_us, 100);
  eg_memory_rec upd = *old;
  upd.update_time_us = 300;
  put_memory(s, &upd, old);
  engram__storage__v1__memory_record__free_unpacked(old, NULL);
  old = get_memory(s, "m1");
  CU_ASSERT_EQUAL(old->state_time_us, 100);
  upd = *old;
  upd.state = EG_MSTATE_DELETED;
  upd.update_time_us = 700;
  upd.expire_time_us = 6000;
  put_memory(s, &upd, old);
  engram__storage__v1__memory_record__free_unpacked(old, NULL);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_MEMORY_TOMBSTONE, T, INT64_MAX, 10), "m1@700");
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_MEMORY_EXPIRE, T, INT64_MAX, 10), "m1@6000");

  old = get_memory(s, "m1");
  CU_ASSERT_EQUAL(old->state_time_us, 700);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_memory_purge(w, T, old), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  engram__storage__v1__memory_record__free_unpacked(old, NULL);
  CU_ASSERT_STRING_EQUAL(dump_index(s, "sweep_due"), "");
  eg_store_close(s);
  teardown();
}

/* A record from before state_time_us (0, as a v3 record reads) keeps its
 * last update as the state's time through a write that keeps the state:
 * its tombstone stays due then, and retention does not restart. */
static void test_memory_v3_state_time(void) {
  setup();
  eg_store *s = open_store();
  eg_memory_rec m = memory_rec("m1", EG_MSTATE_DELETED, 300, 0);
  put_memory(s, &m, NULL);
  eg_memory_rec *old = get_memory(s, "m1");
  old->state_time_us = 0; /* as stored by v3 */
  eg_memory_rec upd = *old;
  upd.update_time_us = 900;
  put_memory(s, &upd, old);
  engram__storage__v1__memory_record__free_unpacked(old, NULL);
  old = get_memory(s, "m1");
  CU_ASSERT_EQUAL(old->state_time_us, 300);
  engram__storage__v1__memory_record__free_unpacked(old, NULL);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_MEMORY_TOMBSTONE, T, INT64_MAX, 10), "m1@300");
  eg_store_close(s);
  teardown();
}

/* A user's erasure takes their lifecycle entries with the data. */
static void test_erase_leaves_nothing(void) {
  setup();
  eg_store *s = open_store();
  uint64_t h[] = {3};
  eg_session_rec a = session_rec("a", "u", 100);
  a.metadata_hashes = h;
  a.n_metadata_hashes = 1;
  put_session(s, T, &a, 1);
  put_messages(s, T, "a", 1, 3);
  eg_memory_rec m = memory_rec("m1", EG_MSTATE_DELETED, 100, 900);
  put_memory(s, &m, NULL);
  eg_erase_counts c;
  CU_ASSERT(erase_user(s, "u", &c));
  CU_ASSERT_STRING_EQUAL(dump_index(s, NULL), "");
  eg_store_close(s);
  teardown();
}

/* Message seq of session sid with n keyword postings and a retry key:
 * 2 + n keys to delete. */
static void put_indexed(eg_store *s, const char *sid, int seq, size_t n) {
  static uint64_t terms[] = {11, 12, 13, 14, 15, 16};
  static uint8_t tf[] = {1, 1, 1, 1, 1, 1};
  char cid[16];
  eg_txn *w;
  snprintf(cid, sizeof cid, "c%d", seq);
  eg_message_rec m = ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
  m.seq = seq;
  m.role = 1;
  m.client_message_id = cid;
  m.create_time_us = seq * 100;
  m.index_version = 2;
  m.index_terms = terms;
  m.n_index_terms = n;
  m.index_tf.data = tf;
  m.index_tf.len = n;
  m.index_words = 1;
  m.index_user_id = "u";
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_message_put(w, T, sid, &m), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

/* Messages 1 and 2 of 5 keys each (4 postings), 3 of 2 (none). */
static void put_key_cap_session(eg_store *s, const char *sid) {
  eg_session_rec a = session_rec(sid, "u", 100);
  put_session(s, T, &a, 1);
  put_indexed(s, sid, 1, 3);
  put_indexed(s, sid, 2, 3);
  put_indexed(s, sid, 3, 0);
}

/* The warm tier's key cap, at its edge: a message over the cap alone
 * goes as a step's first; one that would pass the cap does not, within
 * the same step (*keys carried); the cap met exactly is within it. */
static void test_warm_tier_key_cap(void) {
  setup();
  eg_store *s = open_store();
  put_key_cap_session(s, "a");
  eg_txn *w;
  uint64_t n = 99, keys = 0;
  int more = -1;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_messages_delete_before(w, T, "a", INT64_MAX, 10, 4, &keys, &n, &more),
                  EG_OK);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_EQUAL(keys, 5);
  CU_ASSERT_EQUAL(more, 1);
  /* Same step: 5 + 5 > 9, so message 2 waits, whatever the record room. */
  CU_ASSERT_EQUAL(eg_store_messages_delete_before(w, T, "a", INT64_MAX, 10, 9, &keys, &n, &more),
                  EG_OK);
  CU_ASSERT_EQUAL(n, 0);
  CU_ASSERT_EQUAL(keys, 5);
  CU_ASSERT_EQUAL(more, 1);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_MESSAGES, T, INT64_MAX, 10), "a@200");
  /* A new step: 5 + 2 keys meet a cap of 7 exactly, both go. */
  keys = 0;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_messages_delete_before(w, T, "a", INT64_MAX, 10, 7, &keys, &n, &more),
                  EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(n, 2);
  CU_ASSERT_EQUAL(keys, 7);
  CU_ASSERT_EQUAL(more, 0);
  CU_ASSERT_STRING_EQUAL(dump_index(s, "messages"), "");
  CU_ASSERT_STRING_EQUAL(dump_index(s, "message_terms"), "");
  CU_ASSERT_STRING_EQUAL(dump_index(s, "idempotency"), "");
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_MESSAGES, T, INT64_MAX, 10), "");
  /* The record count still bounds a step under the cap. */
  put_key_cap_session(s, "b");
  keys = 0;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_messages_delete_before(w, T, "b", INT64_MAX, 1, 100, &keys, &n, &more),
                  EG_OK);
  CU_ASSERT_EQUAL(eg_store_messages_delete_before(w, T, "b", INT64_MAX, 0, 100, &keys, &n, &more),
                  EG_OK);
  CU_ASSERT_EQUAL(n, 0); /* no record room: not even a first message */
  CU_ASSERT_EQUAL(eg_store_messages_delete_before(w, T, "b", INT64_MAX, 10, 100, NULL, &n, &more),
                  EG_EINVAL);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(keys, 5);
  CU_ASSERT_EQUAL(more, 1);
  eg_store_close(s);
  teardown();
}

/* The purge's key cap, at its edge, as the warm tier's; the step that
 * takes the last message drops the entry. */
static void test_purge_key_cap(void) {
  setup();
  eg_store *s = open_store();
  put_key_cap_session(s, "a");
  CU_ASSERT_EQUAL(retire(s, "a", 900), EG_OK);
  uint64_t n = 99, keys = 99;
  int more = -1;
  /* 5 keys over a cap of 4: the step's first goes alone. */
  CU_ASSERT_EQUAL(purge_step(s, "a", 900, 10, 4, &n, &keys, &more), EG_OK);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_EQUAL(keys, 5);
  CU_ASSERT_EQUAL(more, 1);
  /* One key short of both: message 3 waits. */
  CU_ASSERT_EQUAL(purge_step(s, "a", 900, 10, 6, &n, &keys, &more), EG_OK);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_EQUAL(keys, 5);
  CU_ASSERT_EQUAL(more, 1);
  CU_ASSERT_EQUAL(purging(s, "a"), 1);
  /* Within one txn a second call carries the step's keys: none goes. */
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  keys = 2;
  CU_ASSERT_EQUAL(eg_store_session_purge_step(w, T, "a", 900, 10, 3, &keys, &n, &more), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(n, 0);
  CU_ASSERT_EQUAL(keys, 2);
  CU_ASSERT_EQUAL(more, 1);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_PURGE, T, INT64_MAX, 10), "a@900");
  /* Exactly the cap: the last goes with the entry. */
  CU_ASSERT_EQUAL(purge_step(s, "a", 900, 10, 2, &n, &keys, &more), EG_OK);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_EQUAL(keys, 2);
  CU_ASSERT_EQUAL(more, 0);
  CU_ASSERT_EQUAL(purging(s, "a"), 0);
  CU_ASSERT_STRING_EQUAL(dump_index(s, NULL), "");
  CU_ASSERT_STRING_EQUAL(dump_index(s, "messages"), "");
  CU_ASSERT_STRING_EQUAL(dump_index(s, "message_terms"), "");
  CU_ASSERT_STRING_EQUAL(dump_index(s, "idempotency"), "");
  eg_store_close(s);
  teardown();
}

/* A session the sweeper retired (record and user index gone, messages
 * still being purged) is the user's still: DeleteUser erases its messages
 * and retry records and the purge entry, and leaves other users' alone. */
static void test_erase_finds_retired_sessions(void) {
  setup();
  eg_store *s = open_store();
  eg_session_rec a = session_rec("a", "u", 100), b = session_rec("b", "v", 100);
  put_session(s, T, &a, 1);
  put_messages(s, T, "a", 1, 5);
  put_session(s, T, &b, 1);
  put_messages(s, T, "b", 1, 2);
  CU_ASSERT_EQUAL(retire(s, "a", 900), EG_OK);
  CU_ASSERT_EQUAL(retire(s, "b", 900), EG_OK);
  eg_erase_counts c;
  CU_ASSERT(erase_user(s, "u", &c));
  CU_ASSERT_EQUAL(c.messages, 5);
  CU_ASSERT_EQUAL(purging(s, "a"), 0);
  CU_ASSERT_EQUAL(purging(s, "b"), 1);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_PURGE, T, INT64_MAX, 10), "b@900");
  eg_store_close(s);
  teardown();
}

/* The policy: stored per tenant, unset fields absent, negatives refused,
 * in the data DBs (so in the WAL and checksums). */
static void test_retention(void) {
  setup();
  eg_store *s = open_store();
  eg_txn *w;
  eg_retention_rec p = ENGRAM__STORAGE__V1__RETENTION_POLICY_RECORD__INIT;
  Engram__Storage__V1__RetentionSeconds sec = ENGRAM__STORAGE__V1__RETENTION_SECONDS__INIT;
  eg_txn *r = eg_test_reader(s);
  eg_retention_rec *got = NULL;
  CU_ASSERT_EQUAL(eg_store_retention_get(r, T, &got), EG_ENOTFOUND);
  eg_test_reader_done(r);
  sec.seconds = -1;
  p.raw_message_retention_s = &sec;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_retention_put(w, T, &p), EG_EINVAL);
  sec.seconds = 0; /* 0 is set (keep forever), not absent */
  CU_ASSERT_EQUAL(eg_store_retention_put(w, T, &p), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  r = eg_test_reader(s);
  CU_ASSERT_EQUAL_FATAL(eg_store_retention_get(r, T, &got), EG_OK);
  CU_ASSERT_PTR_NULL(got->expired_session_retention_s);
  CU_ASSERT_PTR_NOT_NULL_FATAL(got->raw_message_retention_s);
  CU_ASSERT_EQUAL(got->raw_message_retention_s->seconds, 0);
  CU_ASSERT_PTR_NULL(got->memory_tombstone_retention_s);
  engram__storage__v1__retention_policy_record__free_unpacked(got, NULL);
  CU_ASSERT_EQUAL(eg_store_retention_get(r, "other", &got), EG_ENOTFOUND);
  eg_test_reader_done(r);
  CU_ASSERT_STRING_EQUAL(dump_index(s, "retention"), "retention:\\04acme");
  eg_store_close(s);
  teardown();
}

/* ---- migration 4 ------------------------------------------------------------ */

/* Turns the store in tdir back into a version 3 one: the four v4 DBs
 * dropped, schema_version 3. */
static void make_v3(void) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  const char *dbs[] = {"sessions_by_activity", "sweep_due", "retention", "session_terms"};
  CU_ASSERT_EQUAL_FATAL(mdb_env_create(&env), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_env_set_maxdbs(env, 24), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_env_open(env, tdir, 0, 0600), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(env, NULL, 0, &txn), 0);
  for (int i = 0; i < 4; i++) {
    CU_ASSERT_EQUAL_FATAL(mdb_dbi_open(txn, dbs[i], 0, &dbi), 0);
    CU_ASSERT_EQUAL_FATAL(mdb_drop(txn, dbi, 1), 0);
  }
  uint8_t v3[4] = {0, 0, 0, 3};
  MDB_val k = {14, "schema_version"}, v = {4, v3};
  CU_ASSERT_EQUAL_FATAL(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_put(txn, dbi, &k, &v, 0), 0);
  MDB_val base = {14, "index_base_lsn"};
  int rc = mdb_del(txn, dbi, &base, NULL);
  CU_ASSERT_FATAL(rc == 0 || rc == MDB_NOTFOUND);
  CU_ASSERT_EQUAL_FATAL(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

/* The back-fill writes exactly the entries the writers would have. */
static void test_backfill(void) {
  setup();
  eg_store *s = open_store();
  eg_session_rec a = session_rec("a", "u", 100), b = session_rec("b", "u2", 200);
  b.state = EG_SSTATE_ENDED;
  b.end_time_us = 300;
  put_session(s, T, &a, 1);
  put_session(s, "t2", &b, 1);
  put_messages(s, T, "a", 1, 3);
  put_messages(s, "t2", "b", 2, 2);
  eg_memory_rec m1 = memory_rec("m1", EG_MSTATE_DUPLICATE, 100, 0);
  eg_memory_rec m2 = memory_rec("m2", EG_MSTATE_ACTIVE, 100, 800);
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_memory_put(w, T, &m1, NULL, NULL), EG_OK);
  CU_ASSERT_EQUAL(eg_store_memory_put(w, T, &m2, NULL, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  char want[8192];
  snprintf(want, sizeof want, "%s", dump_index(s, NULL));
  CU_ASSERT_PTR_NOT_NULL(strstr(want, "sweep_due:\\02\\04acme"));
  eg_store_close(s);

  make_v3();
  s = open_store();
  CU_ASSERT_STRING_EQUAL(dump_index(s, NULL), want);
  eg_store_close(s);
  teardown();
}

/* A v3 session is rewritten as v4 code would have kept it: stats from its
 * messages, an ENDED one's end time from its last update; the back-fill's
 * LSN is recorded (0 for a store created at v4). */
static void test_backfill_v3_sessions(void) {
  setup();
  eg_store *s = open_store();
  CU_ASSERT_EQUAL(eg_store_index_base_lsn(s), 0);
  eg_session_rec a = session_rec("a", "u", 100), b = session_rec("b", "u", 100);
  b.state = EG_SSTATE_ENDED; /* ended under v3: no end time */
  b.update_time_us = 700;
  put_session(s, T, &a, 1);
  put_session(s, T, &b, 1);
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  for (int q = 1; q <= 5; q++) {
    eg_message_rec m = ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
    m.seq = q;
    m.role = q == 5 ? 4 : q; /* user, assistant, system, tool, tool */
    m.token_count = 10 * q;
    m.create_time_us = 100 + q;
    CU_ASSERT_EQUAL_FATAL(eg_store_message_put(w, T, "a", &m), EG_OK);
  }
  uint64_t lsn;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK);
  eg_store_close(s);

  make_v3();
  s = open_store();
  CU_ASSERT_EQUAL(eg_store_index_base_lsn(s), lsn);
  eg_session_rec *ra = get_session(s, T, "a"), *rb = get_session(s, T, "b");
  CU_ASSERT_PTR_NOT_NULL_FATAL(ra);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ra->stats);
  CU_ASSERT_EQUAL(ra->stats->user_messages, 1);
  CU_ASSERT_EQUAL(ra->stats->assistant_messages, 1);
  CU_ASSERT_EQUAL(ra->stats->system_messages, 1);
  CU_ASSERT_EQUAL(ra->stats->tool_messages, 2);
  CU_ASSERT_EQUAL(ra->stats->total_tokens, 150);
  CU_ASSERT_EQUAL(ra->stats->first_message_time_us, 101);
  CU_ASSERT_EQUAL(ra->stats->last_message_time_us, 105);
  CU_ASSERT_EQUAL(ra->end_time_us, 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(rb);
  CU_ASSERT_PTR_NULL(rb->stats); /* no messages: none, as v4 stores it */
  CU_ASSERT_EQUAL(rb->end_time_us, 700);
  CU_ASSERT_EQUAL(eg_store_session_gone_us(rb), 700);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_GONE, T, INT64_MAX, 10), "b@700,a@1100");
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_MESSAGES, T, INT64_MAX, 10), "a@101");
  protobuf_c_message_free_unpacked(&ra->base, NULL);
  protobuf_c_message_free_unpacked(&rb->base, NULL);
  eg_store_close(s);
  /* Recorded once: a reopen keeps it, and a snapshot carries it to a
   * replica created at v4 (0 before the install). */
  s = open_store();
  CU_ASSERT_EQUAL(eg_store_index_base_lsn(s), lsn);
  char src[4096], snap[4200];
  eg_store_file_info info;
  snprintf(src, sizeof src, "%s", tdir);
  snprintf(snap, sizeof snap, "%s/copy.mdb", src);
  CU_ASSERT_EQUAL_FATAL(eg_store_copy(s, snap, &info), EG_OK);
  eg_store_close(s);
  setup();
  s = open_store();
  CU_ASSERT_EQUAL(eg_store_index_base_lsn(s), 0);
  eg_store_close(s);
  CU_ASSERT_EQUAL_FATAL(eg_store_install_snapshot(tdir, snap), EG_OK);
  s = open_store();
  CU_ASSERT_EQUAL(eg_store_index_base_lsn(s), lsn);
  eg_store_close(s);
  teardown();
  eg_test_rmdir(src);
}

/* A v3 store filled to its map: the back-fill (one txn) needs more room,
 * and the open grows the map instead of failing "map full". */
static void test_backfill_grows_map(void) {
  setup();
  eg_store_opts o = {.map_size = 1 << 20};
  eg_store *s = eg_test_store_open(tdir, &o);
  size_t small = eg_store_map_size(s);
  int n = 0;
  for (eg_err e = EG_OK; !e && n < 100000;) {
    eg_txn *w;
    CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
    for (int i = 0; i < 50 && !e; i++, n++) {
      char sid[32];
      snprintf(sid, sizeof sid, "s%06d", n);
      eg_session_rec r = session_rec(sid, "u", 100 + n);
      eg_message_rec m = ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
      m.seq = 1, m.role = 1, m.create_time_us = 100 + n;
      e = eg_store_session_put(w, T, &r, NULL);
      if (!e) e = eg_store_message_put(w, T, sid, &m);
    }
    if (e)
      eg_store_write_abort(w);
    else
      e = eg_store_write_commit(w, NULL); /* the log record may not fit either */
    CU_ASSERT_FATAL(e == EG_OK || e == EG_EMAPFULL);
  }
  char want[64];
  snprintf(want, sizeof want, "%s", sweep(s, EG_SWEEP_SESSION_GONE, T, INT64_MAX, 1));
  eg_store_close(s);

  make_v3();
  s = eg_test_store_open(tdir, &o);
  CU_ASSERT(eg_store_map_size(s) > small);
  CU_ASSERT_STRING_EQUAL(sweep(s, EG_SWEEP_SESSION_GONE, T, INT64_MAX, 1), want);
  eg_store_close(s);
  teardown();
}

void eg_test_register_lifecycle(void) {
  CU_pSuite s = CU_add_suite("lifecycle", NULL, NULL);
  CU_add_test(s, "activity index and team scan", test_activity);
  CU_add_test(s, "metadata terms", test_terms);
  CU_add_test(s, "session gone entries", test_session_gone);
  CU_add_test(s, "session gone time", test_session_gone_us);
  CU_add_test(s, "sweep tenants", test_sweep_tenants);
  CU_add_test(s, "warm tier", test_warm_tier);
  CU_add_test(s, "delete leaves no index key", test_delete_leaves_nothing);
  CU_add_test(s, "retire and purge", test_retire_and_purge);
  CU_add_test(s, "warm tier key cap", test_warm_tier_key_cap);
  CU_add_test(s, "purge key cap", test_purge_key_cap);
  CU_add_test(s, "memory tombstone and expiry entries", test_memory_entries);
  CU_add_test(s, "memory v3 state time kept", test_memory_v3_state_time);
  CU_add_test(s, "erasure leaves no index key", test_erase_leaves_nothing);
  CU_add_test(s, "erasure finds retired sessions", test_erase_finds_retired_sessions);
  CU_add_test(s, "retention policy", test_retention);
  CU_add_test(s, "migration 4 back-fill", test_backfill);
  CU_add_test(s, "migration 4 rewrites v3 sessions, records its LSN", test_backfill_v3_sessions);
  CU_add_test(s, "migration 4 grows a full map", test_backfill_grows_map);
}
