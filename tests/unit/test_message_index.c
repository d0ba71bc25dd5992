/* message_index: the message keyword index (storage/message_index.h)
 * against real LMDB files in a temp dir: postings and stats written by
 * eg_store_message_put, the postings scan, every delete path, reindex, the
 * message walk and the index state. What is left in the index DBs is
 * checked key by key over every data DB (eg_store_visit_data). */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/storage.h"
#include "suites.h"

#define T "acme"
/* Three terms (the blind tokens' values do not matter to storage). */
#define TA 0x1111111111111111ull
#define TB 0x2222222222222222ull
#define TC 0x3333333333333333ull
/* The longest key LMDB takes: a walk cursor's bound. */
#define KEY_MAX 511

static char tdir[4096];

static eg_store *open_store(void) { return eg_test_store_open(tdir, NULL); }
static void setup(void) { snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir()); }
static void teardown(void) { eg_test_rmdir(tdir); }


/* tf i + 1 for term i. */
static uint8_t tfs[EG_MESSAGE_TERMS_MAX + 1];

/* Message seq of user created at t_us with the n terms (n 0 and user NULL:
 * not indexed); its words: 10 * seq. */
static eg_message_rec msg(int64_t seq, int64_t t_us, const char *user, uint64_t *terms,
                          size_t n) {
  eg_message_rec m = ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
  for (size_t i = 0; i < sizeof tfs; i++) tfs[i] = (uint8_t)(i + 1);
  m.seq = seq;
  m.role = 2;
  m.create_time_us = t_us;
  if (!user) return m;
  m.index_version = 2;
  m.index_terms = terms;
  m.n_index_terms = n;
  m.index_tf.data = tfs;
  m.index_tf.len = n;
  m.index_words = (uint32_t)(10 * seq);
  m.index_user_id = (char *)user;
  return m;
}

static void put_msg(eg_store *s, const char *tenant, const char *sid, const eg_message_rec *m) {
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_message_put(w, tenant, sid, m), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

static void put_session(eg_store *s, const char *tenant, const char *sid, const char *user) {
  eg_txn *w;
  eg_session_rec r = ENGRAM__STORAGE__V1__SESSION_RECORD__INIT;
  r.session_id = (char *)sid;
  r.user_id = (char *)user;
  r.agent_id = (char *)"agent";
  r.state = EG_SSTATE_ACTIVE;
  r.create_time_us = r.update_time_us = 1;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_session_put(w, tenant, &r, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

/* Session sid of user with messages 1..3 (terms {A,B} at 100, {A} at 200,
 * {C} at 300) and an unindexed 4 at 400. */
static void put_convo(eg_store *s, const char *tenant, const char *sid, const char *user) {
  static uint64_t ab[] = {TA, TB}, a[] = {TA}, c[] = {TC};
  eg_message_rec m1 = msg(1, 100, user, ab, 2), m2 = msg(2, 200, user, a, 1),
                 m3 = msg(3, 300, user, c, 1), m4 = msg(4, 400, NULL, NULL, 0);
  put_session(s, tenant, sid, user);
  put_msg(s, tenant, sid, &m1);
  put_msg(s, tenant, sid, &m2);
  put_msg(s, tenant, sid, &m3);
  put_msg(s, tenant, sid, &m4);
}

/* ---- what the index DBs hold ----------------------------------------------- */

typedef struct {
  size_t terms, stats;
} index_count;

static void count_kv(void *arg, const char *db, const void *k, size_t klen, const void *v,
                     size_t vlen) {
  index_count *c = arg;
  (void)k, (void)klen, (void)v, (void)vlen;
  if (!strcmp(db, "message_terms")) c->terms++;
  if (!strcmp(db, "message_index_stats")) c->stats++;
}

/* Keys in message_terms and message_index_stats, whoever they belong to. */
static index_count index_keys(eg_store *s) {
  index_count c = {0, 0};
  eg_txn *r = eg_test_reader(s);
  CU_ASSERT_EQUAL(eg_store_visit_data(r, count_kv, &c), EG_OK);
  eg_test_reader_done(r);
  return c;
}

static void stats(eg_store *s, const char *tenant, const char *user, uint64_t *m, uint64_t *w) {
  eg_txn *r = eg_test_reader(s);
  CU_ASSERT_EQUAL(eg_store_message_index_stats(r, tenant, user, m, w), EG_OK);
  eg_test_reader_done(r);
}

#define ASSERT_STATS(s, tenant, user, wm, ww)            \
  do {                                                   \
    uint64_t m_ = 99, w_ = 99;                           \
    stats(s, tenant, user, &m_, &w_);                    \
    CU_ASSERT_EQUAL(m_, (uint64_t)(wm));                 \
    CU_ASSERT_EQUAL(w_, (uint64_t)(ww));                 \
  } while (0)

/* ---- postings into a string -------------------------------------------------- */

typedef struct {
  char out[1024];
  size_t limit, n;
} plist;

static int collect_posting(void *arg, const eg_message_posting *p) {
  plist *l = arg;
  size_t o = strlen(l->out);
  snprintf(l->out + o, sizeof l->out - o, "%s%.*s/%.*s#%llu@%lld:r%d,tf%u,w%u", o ? " " : "",
           (int)p->user_len, p->user_id, (int)p->session_len, p->session_id,
           (unsigned long long)p->seq, (long long)p->create_us, p->role, p->tf, p->words);
  return l->limit && ++l->n == l->limit;
}

/* The postings of term read for users[0..n) (users NULL: every user) as a
 * string ("" none; "ERR<n>" on error); *cut as the read set it. */
static const char *postings_of(eg_store *s, const char *tenant, const char *const *users, size_t n,
                               uint64_t term, int64_t from, int64_t to, size_t limit, int *cut) {
  static plist l;
  memset(&l, 0, sizeof l);
  l.limit = limit;
  eg_txn *r = eg_test_reader(s);
  eg_err e = eg_store_message_postings(r, tenant, users, n, EG_MESSAGE_MERGE_USERS_MAX, term, from, to,
                                       collect_posting, &l, cut, NULL);
  eg_test_reader_done(r);
  if (e) snprintf(l.out, sizeof l.out, "ERR%d", (int)e);
  return l.out;
}

/* The same for one user (NULL: every user), never cut. */
static const char *postings(eg_store *s, const char *tenant, const char *user, uint64_t term,
                            int64_t from, int64_t to, size_t limit) {
  int cut = 7;
  const char *out = postings_of(s, tenant, user ? &user : NULL, user ? 1 : 0, term, from, to, limit, &cut);
  if (strncmp(out, "ERR", 3) != 0) CU_ASSERT_EQUAL(cut, 0);
  return out;
}

/* ---- tests --------------------------------------------------------------------- */

static void test_postings_and_stats(void) {
  setup();
  eg_store *s = open_store();
  static uint64_t a[] = {TA};
  put_convo(s, T, "s1", "u1");
  eg_message_rec m = msg(1, 150, "u2", a, 1);
  put_session(s, T, "s2", "u2");
  put_msg(s, T, "s2", &m);
  put_convo(s, "other", "s1", "u1");

  /* One user: newest first, narrowed to [from, to). */
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TA, 0, 0, 0),
                         "u1/s1#2@200:r2,tf1,w20 u1/s1#1@100:r2,tf1,w10");
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TB, 0, 0, 0), "u1/s1#1@100:r2,tf2,w10");
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TA, 150, 250, 0), "u1/s1#2@200:r2,tf1,w20");
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TA, 0, 200, 0), "u1/s1#1@100:r2,tf1,w10");
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TA, 100, 101, 0), "u1/s1#1@100:r2,tf1,w10");
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TA, 201, 0, 0), "");
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TA, 300, 100, 0), "");
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TA, 0, 0, 1), "u1/s1#2@200:r2,tf1,w20");
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u2", TB, 0, 0, 0), "");
  CU_ASSERT_STRING_EQUAL(postings(s, T, "nobody", TA, 0, 0, 0), "");
  /* The tenant: newest first across users; other tenants apart. */
  CU_ASSERT_STRING_EQUAL(postings(s, T, NULL, TA, 0, 0, 0),
                         "u1/s1#2@200:r2,tf1,w20 u2/s2#1@150:r2,tf1,w10 u1/s1#1@100:r2,tf1,w10");
  CU_ASSERT_STRING_EQUAL(postings(s, T, NULL, TA, 120, 180, 0), "u2/s2#1@150:r2,tf1,w10");
  CU_ASSERT_STRING_EQUAL(postings(s, T, NULL, TA, 0, 0, 2),
                         "u1/s1#2@200:r2,tf1,w20 u2/s2#1@150:r2,tf1,w10");
  CU_ASSERT_STRING_EQUAL(postings(s, T, NULL, TC, 0, 0, 0), "u1/s1#3@300:r2,tf1,w30");
  CU_ASSERT_STRING_EQUAL(postings(s, "none", NULL, TA, 0, 0, 0), "");
  char einval[16];
  snprintf(einval, sizeof einval, "ERR%d", (int)EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TA, -1, 0, 0), einval);

  /* Stats count indexed messages only (the unindexed 4 is not). */
  ASSERT_STATS(s, T, "u1", 3, 60);
  ASSERT_STATS(s, T, "u2", 1, 10);
  ASSERT_STATS(s, T, NULL, 4, 70);
  ASSERT_STATS(s, "other", NULL, 3, 60);
  ASSERT_STATS(s, T, "nobody", 0, 0);
  ASSERT_STATS(s, "none", NULL, 0, 0);
  /* 4 + 1 + 4 postings; stats rows: acme, acme/u1, acme/u2, other, other/u1. */
  index_count c = index_keys(s);
  CU_ASSERT_EQUAL(c.terms, 9);
  CU_ASSERT_EQUAL(c.stats, 5);
  eg_store_close(s);
  teardown();
}

static void test_put_refused(void) {
  setup();
  eg_store *s = open_store();
  static uint64_t many[EG_MESSAGE_TERMS_MAX + 1];
  for (size_t i = 0; i < sizeof many / sizeof many[0]; i++) many[i] = i + 1;
  eg_message_rec bad[5];
  bad[0] = msg(1, 100, "u1", many, EG_MESSAGE_TERMS_MAX + 1); /* too many terms */
  bad[1] = msg(1, 100, "u1", many, 3);
  bad[1].index_tf.len = 2; /* one tf short */
  bad[2] = msg(1, 100, "", many, 1); /* no user */
  bad[3] = msg(1, 100, NULL, NULL, 0);
  bad[3].index_terms = many, bad[3].n_index_terms = 1; /* terms, no version */
  bad[4] = msg(1, 100, "u1", many, 1);
  bad[4].role = 256;
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    size_t len;
    CU_ASSERT_EQUAL(eg_store_message_put(w, T, "s1", &bad[i]), EG_EINVAL);
    CU_ASSERT_EQUAL(eg_store_message_put_len(s, T, "s1", &bad[i], &len), EG_EINVAL);
    eg_message_rec *got = NULL;
    CU_ASSERT_EQUAL(eg_store_message_get(w, T, "s1", 1, &got), EG_ENOTFOUND);
  }
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  index_count c = index_keys(s);
  CU_ASSERT_EQUAL(c.terms + c.stats, 0);

  /* At the limit: every term gets its posting, and put_len counts them. */
  eg_message_rec full = msg(1, 100, "u1", many, EG_MESSAGE_TERMS_MAX),
                 plain = msg(1, 100, NULL, NULL, 0);
  size_t full_len, one_len, two_len, plain_len;
  CU_ASSERT_EQUAL(eg_store_message_put_len(s, T, "s1", &full, &full_len), EG_OK);
  CU_ASSERT_EQUAL(eg_store_message_put_len(s, T, "s1", &plain, &plain_len), EG_OK);
  full.n_index_terms = full.index_tf.len = 1;
  CU_ASSERT_EQUAL(eg_store_message_put_len(s, T, "s1", &full, &one_len), EG_OK);
  full.n_index_terms = full.index_tf.len = 2;
  CU_ASSERT_EQUAL(eg_store_message_put_len(s, T, "s1", &full, &two_len), EG_OK);
  full.n_index_terms = full.index_tf.len = EG_MESSAGE_TERMS_MAX;
  /* A term adds its posting's op and 9 bytes to the record (a packed
   * fixed64, a tf byte); the posting's op holds its key: 4 + 8 + 2 + 8 +
   * 2 + 8 bytes here, and the length bytes. */
  size_t per_term = two_len - one_len;
  CU_ASSERT(per_term >= 9 + 35);
  CU_ASSERT(one_len - plain_len >= per_term);
  /* Only the record's length fields grow beyond that (a few bytes). */
  size_t want = one_len + (EG_MESSAGE_TERMS_MAX - 1) * per_term;
  CU_ASSERT(full_len >= want && full_len <= want + 8);
  uint64_t lsn0, lsn1;
  eg_txn *r = eg_test_reader(s);
  CU_ASSERT_EQUAL(eg_store_txn_lsn(r, &lsn0), EG_OK);
  eg_test_reader_done(r);
  put_msg(s, T, "s1", &full);
  r = eg_test_reader(s);
  CU_ASSERT_EQUAL(eg_store_txn_lsn(r, &lsn1), EG_OK);
  eg_test_reader_done(r);
  CU_ASSERT_EQUAL(lsn1, lsn0 + 1);
  c = index_keys(s);
  CU_ASSERT_EQUAL(c.terms, EG_MESSAGE_TERMS_MAX);
  CU_ASSERT_EQUAL(c.stats, 2);
  eg_store_close(s);
  teardown();
}

/* Session delete, the warm tier and retention's purge: each takes the
 * postings and stats of what it deletes, and only those. */
static void test_delete_paths(void) {
  setup();
  eg_store *s = open_store();
  eg_txn *w;
  uint64_t n, keys = 0; /* keys: a step's, 0 at each txn's start */
  int more;
  put_convo(s, T, "keep", "u9"); /* another user's: untouched throughout */
  index_count keep = index_keys(s);

  /* Session delete. */
  put_convo(s, T, "s1", "u1");
  eg_session_rec sr = ENGRAM__STORAGE__V1__SESSION_RECORD__INIT;
  sr.session_id = (char *)"s1";
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_delete(w, T, &sr, &n), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(n, 4);
  index_count c = index_keys(s);
  CU_ASSERT_EQUAL(c.terms, keep.terms);
  CU_ASSERT_EQUAL(c.stats, keep.stats);
  ASSERT_STATS(s, T, "u1", 0, 0);
  ASSERT_STATS(s, T, NULL, 3, 60);

  /* The warm tier: messages before 250 go (1 and 2), 3 stays. */
  put_convo(s, T, "s1", "u1");
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_messages_delete_before(w, T, "s1", 250, 10, UINT64_MAX, &keys, &n, &more), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(n, 2);
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TA, 0, 0, 0), "");
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TC, 0, 0, 0), "u1/s1#3@300:r2,tf1,w30");
  ASSERT_STATS(s, T, "u1", 1, 30);
  ASSERT_STATS(s, T, NULL, 4, 90);

  /* Retire, then purge one message a step: the record is gone, the
   * messages name their user. */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_retire(w, T, "s1", 1000), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TC, 0, 0, 0), "u1/s1#3@300:r2,tf1,w30");
  int steps = 0;
  do {
    keys = 0;
    CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
    CU_ASSERT_EQUAL_FATAL(
        eg_store_session_purge_step(w, T, "s1", 1000, 1, UINT64_MAX, &keys, &n, &more), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
    CU_ASSERT_EQUAL(n, 1);
    if (steps++ == 0) ASSERT_STATS(s, T, "u1", 0, 0); /* 3 went first, 4 was not indexed */
  } while (more && steps < 10);
  CU_ASSERT_EQUAL(steps, 2);
  c = index_keys(s);
  CU_ASSERT_EQUAL(c.terms, keep.terms);
  CU_ASSERT_EQUAL(c.stats, keep.stats);
  ASSERT_STATS(s, T, NULL, 3, 60);
  CU_ASSERT_STRING_EQUAL(postings(s, T, NULL, TA, 0, 0, 0),
                         "u9/keep#2@200:r2,tf1,w20 u9/keep#1@100:r2,tf1,w10");
  eg_store_close(s);
  teardown();
}

/* DeleteUser in small steps: a live and a retired session of the user go
 * with every posting and stats row; the budget counts postings. */
static void test_erase_user(void) {
  setup();
  eg_store *s = open_store();
  eg_txn *w;
  put_convo(s, T, "keep", "u9");
  index_count keep = index_keys(s);
  put_convo(s, T, "live", "u1");
  put_convo(s, T, "gone", "u1");
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_retire(w, T, "gone", 1000), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  ASSERT_STATS(s, T, "u1", 6, 120);

  eg_erase_counts counts;
  int done = 0, steps = 0;
  while (!done && steps < 100) {
    uint64_t m0, m1, w0;
    stats(s, T, "u1", &m0, &w0);
    CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_store_user_erase_step(w, T, "u1", 3, &counts, &done), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
    stats(s, T, "u1", &m1, &w0);
    /* Message 1 (two postings) costs 3 keys: a step of budget 3 takes it
     * alone, never with another message's postings. */
    CU_ASSERT(m0 - m1 <= 1);
    steps++;
  }
  CU_ASSERT_EQUAL(done, 1);
  CU_ASSERT_EQUAL(counts.messages, 8);
  CU_ASSERT_EQUAL(counts.sessions, 1);
  index_count c = index_keys(s);
  CU_ASSERT_EQUAL(c.terms, keep.terms);
  CU_ASSERT_EQUAL(c.stats, keep.stats);
  ASSERT_STATS(s, T, NULL, 3, 60);
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TA, 0, 0, 0), "");

  /* A budget smaller than one message's keys still moves on. */
  static uint64_t many[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  eg_message_rec big = msg(1, 100, "u2", many, 8);
  put_session(s, T, "big", "u2");
  put_msg(s, T, "big", &big);
  steps = 0, done = 0;
  while (!done && steps < 10) {
    CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_store_user_erase_step(w, T, "u2", 2, &counts, &done), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
    steps++;
  }
  CU_ASSERT_EQUAL(done, 1);
  CU_ASSERT_EQUAL(counts.messages, 1);
  c = index_keys(s);
  CU_ASSERT_EQUAL(c.terms, keep.terms);
  CU_ASSERT_EQUAL(c.stats, keep.stats);
  eg_store_close(s);
  teardown();
}

static void reindex(eg_store *s, const char *sid, const eg_message_rec *rec) {
  eg_txn *w;
  eg_message_rec *prev = NULL;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_message_get(w, T, sid, (uint64_t)rec->seq, &prev), EG_OK);
  CU_ASSERT_EQUAL(eg_store_message_reindex(w, T, sid, prev, rec), EG_OK);
  engram__storage__v1__message_record__free_unpacked(prev, NULL);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

static void test_reindex(void) {
  setup();
  eg_store *s = open_store();
  static uint64_t ab[] = {TA, TB}, bc[] = {TB, TC};
  eg_message_rec plain = msg(5, 500, NULL, NULL, 0);
  put_msg(s, T, "s1", &plain);
  CU_ASSERT_EQUAL(index_keys(s).terms + index_keys(s).stats, 0);

  eg_message_rec v2 = msg(5, 500, "u1", ab, 2);
  reindex(s, "s1", &v2);
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TB, 0, 0, 0), "u1/s1#5@500:r2,tf2,w50");
  ASSERT_STATS(s, T, "u1", 1, 50);

  /* Other terms, other words: A goes, B is rewritten, C comes. */
  eg_message_rec v3 = msg(5, 500, "u1", bc, 2);
  v3.index_words = 7;
  reindex(s, "s1", &v3);
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TA, 0, 0, 0), "");
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TB, 0, 0, 0), "u1/s1#5@500:r2,tf1,w7");
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TC, 0, 0, 0), "u1/s1#5@500:r2,tf2,w7");
  ASSERT_STATS(s, T, "u1", 1, 7);
  ASSERT_STATS(s, T, NULL, 1, 7);
  eg_txn *r = eg_test_reader(s);
  eg_message_rec *got = NULL;
  CU_ASSERT_EQUAL(eg_store_message_get(r, T, "s1", 5, &got), EG_OK);
  if (got) {
    CU_ASSERT_EQUAL(got->index_words, 7);
    CU_ASSERT_EQUAL(got->n_index_terms, 2);
    engram__storage__v1__message_record__free_unpacked(got, NULL);
  }
  eg_test_reader_done(r);

  /* Not the same message: refused. */
  eg_txn *w;
  eg_message_rec moved = msg(5, 501, "u1", bc, 2);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_message_reindex(w, T, "s1", &v3, &moved), EG_EINVAL);
  eg_store_write_abort(w);

  /* Back to unindexed: nothing of it is left. */
  reindex(s, "s1", &plain);
  index_count c = index_keys(s);
  CU_ASSERT_EQUAL(c.terms, 0);
  CU_ASSERT_EQUAL(c.stats, 0);
  eg_store_close(s);
  teardown();
}

/* ---- the walk ------------------------------------------------------------------ */

typedef struct {
  char out[512];
  uint8_t key[KEY_MAX];
  size_t key_len, stop_at, n;
} wlist;

static int collect_walk(void *arg, const uint8_t *key, size_t key_len, const char *tenant,
                        const char *sid, eg_message_rec *rec) {
  wlist *l = arg;
  size_t o = strlen(l->out);
  snprintf(l->out + o, sizeof l->out - o, "%s%s/%s#%lld", o ? " " : "", tenant, sid,
           (long long)rec->seq);
  memcpy(l->key, key, key_len);
  l->key_len = key_len;
  engram__storage__v1__message_record__free_unpacked(rec, NULL);
  return l->stop_at && ++l->n == l->stop_at;
}

/* One walk of at most max after l's key; *more as it said. */
static const char *walk(eg_store *s, wlist *l, size_t max, int *more) {
  l->out[0] = '\0';
  l->n = 0;
  eg_txn *r = eg_test_reader(s);
  CU_ASSERT_EQUAL(eg_store_messages_walk(r, l->key, l->key_len, max, collect_walk, l, more),
                  EG_OK);
  eg_test_reader_done(r);
  return l->out;
}

static void test_walk(void) {
  setup();
  eg_store *s = open_store();
  wlist l;
  int more = -1;
  memset(&l, 0, sizeof l);
  CU_ASSERT_STRING_EQUAL(walk(s, &l, 10, &more), "");
  CU_ASSERT_EQUAL(more, 0);
  eg_message_rec m1 = msg(1, 100, NULL, NULL, 0), m2 = msg(2, 200, NULL, NULL, 0);
  put_msg(s, "b", "s1", &m1);
  put_msg(s, "a", "s2", &m1);
  put_msg(s, "a", "s2", &m2);
  put_msg(s, "a", "s10", &m1);
  /* Key order: tenant, then session id (length first), then seq. */
  CU_ASSERT_STRING_EQUAL(walk(s, &l, 2, &more), "a/s2#1 a/s2#2");
  CU_ASSERT_EQUAL(more, 1);
  CU_ASSERT_STRING_EQUAL(walk(s, &l, 2, &more), "a/s10#1 b/s1#1");
  CU_ASSERT_EQUAL(more, 0);
  CU_ASSERT_STRING_EQUAL(walk(s, &l, 2, &more), "");
  CU_ASSERT_EQUAL(more, 0);
  /* A walk the callee stops: more says what is left. */
  memset(&l, 0, sizeof l);
  l.stop_at = 1;
  CU_ASSERT_STRING_EQUAL(walk(s, &l, 10, &more), "a/s2#1");
  CU_ASSERT_EQUAL(more, 1);
  CU_ASSERT_STRING_EQUAL(walk(s, &l, 0, &more), "");
  CU_ASSERT_EQUAL(more, 1);
  eg_store_close(s);
  teardown();
}

static void test_index_state(void) {
  setup();
  eg_store *s = open_store();
  eg_txn *r = eg_test_reader(s), *w;
  eg_index_state_rec *got = NULL;
  /* A new store has both rows, at version 2 (migration 6), no job. */
  for (int i = 0; i < 2; i++) {
    CU_ASSERT_EQUAL_FATAL(
        eg_store_index_state_get(r, i ? EG_INDEX_MEMORIES : EG_INDEX_MESSAGES, &got), EG_OK);
    CU_ASSERT_EQUAL(got->version, 2);
    CU_ASSERT_EQUAL(got->target, 0);
    engram__storage__v1__index_state_record__free_unpacked(got, NULL);
  }
  CU_ASSERT_EQUAL(eg_store_index_state_get(r, "sessions", &got), EG_EINVAL);
  eg_test_reader_done(r);

  eg_index_state_rec st = ENGRAM__STORAGE__V1__INDEX_STATE_RECORD__INIT;
  uint8_t cur[] = {4, 'a', 'c', 'm', 'e', 2, 's', '1', 0, 0, 0, 0, 0, 0, 0, 9};
  st.version = 1;
  st.target = 2;
  st.cursor.data = cur;
  st.cursor.len = sizeof cur;
  st.done = 17;
  st.total = 40;
  st.start_time_us = 123;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_index_state_put(w, EG_INDEX_MESSAGES, &st), EG_OK);
  CU_ASSERT_EQUAL(eg_store_index_state_put(w, "", &st), EG_EINVAL);
  st.cursor.len = KEY_MAX + 1;
  CU_ASSERT_EQUAL(eg_store_index_state_put(w, EG_INDEX_MEMORIES, &st), EG_EINVAL);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);

  eg_store_close(s);
  s = open_store(); /* it is on disk */
  r = eg_test_reader(s);
  CU_ASSERT_EQUAL_FATAL(eg_store_index_state_get(r, EG_INDEX_MEMORIES, &got), EG_OK);
  CU_ASSERT_EQUAL(got->version, 2); /* the refused put changed nothing */
  engram__storage__v1__index_state_record__free_unpacked(got, NULL);
  CU_ASSERT_EQUAL_FATAL(eg_store_index_state_get(r, EG_INDEX_MESSAGES, &got), EG_OK);
  CU_ASSERT_EQUAL(got->version, 1);
  CU_ASSERT_EQUAL(got->target, 2);
  CU_ASSERT_EQUAL(got->cursor.len, sizeof cur);
  CU_ASSERT(got->cursor.len == sizeof cur && !memcmp(got->cursor.data, cur, sizeof cur));
  CU_ASSERT_EQUAL(got->done, 17);
  CU_ASSERT_EQUAL(got->total, 40);
  CU_ASSERT_EQUAL(got->start_time_us, 123);
  engram__storage__v1__index_state_record__free_unpacked(got, NULL);
  eg_test_reader_done(r);
  eg_store_close(s);
  teardown();
}

/* Several users: one stream newest first (ties: user, session, seq
 * descending, ids by length then bytes), for the tenant or a user set. */
static void test_postings_merge(void) {
  setup();
  eg_store *s = open_store();
  static uint64_t a[] = {TA};
  eg_txn *w;
  const struct {
    const char *user, *sid;
    int64_t seq, t;
  } ps[] = {{"a", "s1", 1, 100}, {"a", "s1", 2, 400}, {"bb", "s2", 1, 300},
            {"c", "s3", 1, 200}, {"c", "s3", 2, 400}, {"c", "s4", 1, 400}};
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
    eg_message_rec m = msg(ps[i].seq, ps[i].t, ps[i].user, a, 1);
    CU_ASSERT_EQUAL_FATAL(eg_store_message_put(w, T, ps[i].sid, &m), EG_OK);
  }
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_STRING_EQUAL(postings(s, T, NULL, TA, 0, 0, 0),
                         "c/s4#1@400:r2,tf1,w10 c/s3#2@400:r2,tf1,w20 a/s1#2@400:r2,tf1,w20 "
                         "bb/s2#1@300:r2,tf1,w10 c/s3#1@200:r2,tf1,w10 a/s1#1@100:r2,tf1,w10");
  CU_ASSERT_STRING_EQUAL(postings(s, T, NULL, TA, 0, 0, 3),
                         "c/s4#1@400:r2,tf1,w10 c/s3#2@400:r2,tf1,w20 a/s1#2@400:r2,tf1,w20");
  CU_ASSERT_STRING_EQUAL(postings(s, T, NULL, TA, 150, 400, 0),
                         "bb/s2#1@300:r2,tf1,w10 c/s3#1@200:r2,tf1,w10");
  CU_ASSERT_STRING_EQUAL(postings(s, T, NULL, TB, 0, 0, 0), "");

  /* A user set: only theirs, merged the same way; unknown users hold none. */
  int cut = 7;
  const char *ac[] = {"a", "c"}, *az[] = {"a", "zz"}, *ca[] = {"c", "a"}, *aa[] = {"a", "a"},
             *bad[] = {"", "a"};
  CU_ASSERT_STRING_EQUAL(postings_of(s, T, ac, 2, TA, 0, 0, 0, &cut),
                         "c/s4#1@400:r2,tf1,w10 c/s3#2@400:r2,tf1,w20 a/s1#2@400:r2,tf1,w20 "
                         "c/s3#1@200:r2,tf1,w10 a/s1#1@100:r2,tf1,w10");
  CU_ASSERT_EQUAL(cut, 0);
  CU_ASSERT_STRING_EQUAL(postings_of(s, T, ac, 2, TA, 0, 400, 0, &cut),
                         "c/s3#1@200:r2,tf1,w10 a/s1#1@100:r2,tf1,w10");
  CU_ASSERT_STRING_EQUAL(postings_of(s, T, az, 2, TA, 0, 0, 0, &cut),
                         "a/s1#2@400:r2,tf1,w20 a/s1#1@100:r2,tf1,w10");
  CU_ASSERT_STRING_EQUAL(postings_of(s, T, ac, 0, TA, 0, 0, 0, &cut), "");
  CU_ASSERT_STRING_EQUAL(postings(s, T, "bb", TA, 0, 0, 0), "bb/s2#1@300:r2,tf1,w10");
  /* Refused: not strictly ascending, an empty id, more than the most. */
  char einval[16];
  snprintf(einval, sizeof einval, "ERR%d", (int)EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(postings_of(s, T, ca, 2, TA, 0, 0, 0, &cut), einval);
  CU_ASSERT_STRING_EQUAL(postings_of(s, T, aa, 2, TA, 0, 0, 0, &cut), einval);
  CU_ASSERT_STRING_EQUAL(postings_of(s, T, bad, 2, TA, 0, 0, 0, &cut), einval);
  CU_ASSERT_STRING_EQUAL(postings_of(s, T, ac, EG_MESSAGE_MERGE_USERS_MAX + 1, TA, 0, 0, 0, &cut),
                         einval);
  eg_txn *r = eg_test_reader(s);
  plist l = {{0}, 0, 0};
  CU_ASSERT_EQUAL(eg_store_message_postings(r, T, NULL, 0, EG_MESSAGE_MERGE_USERS_MAX, TA, 0, 0,
                                            collect_posting, &l, NULL, NULL),
                  EG_EINVAL);
  int c2;
  CU_ASSERT_EQUAL(eg_store_message_postings(r, T, NULL, 0, EG_MESSAGE_MERGE_USERS_MAX + 1, TA, 0, 0,
                                            collect_posting, &l, &c2, NULL),
                  EG_EINVAL);
  eg_test_reader_done(r);
  eg_store_close(s);
  teardown();
}

static int count_posting(void *arg, const eg_message_posting *p) {
  (void)p;
  ++*(size_t *)arg;
  return 0;
}

/* Puts users first..last-1 ("u00000" ...), one message each holding TA,
 * created at 1000 + the user's number, in one transaction. */
static void put_users(eg_store *s, int first, int last) {
  static uint64_t a[] = {TA};
  char user[16];
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  for (int i = first; i < last; i++) {
    snprintf(user, sizeof user, "u%05d", i);
    eg_message_rec m = msg(1, 1000 + i, user, a, 1);
    CU_ASSERT_EQUAL_FATAL(eg_store_message_put(w, T, user, &m), EG_OK);
  }
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

/* The tenant's read merges at most EG_MESSAGE_MERGE_USERS_MAX users (the
 * first in id order) and says when it left some out. */
static void test_postings_users_cap(void) {
  setup();
  eg_store *s = open_store();
  const int max = EG_MESSAGE_MERGE_USERS_MAX;
  size_t n = 0;
  int cut = 7;
  put_users(s, 0, max);
  eg_txn *r = eg_test_reader(s);
  CU_ASSERT_EQUAL(
      eg_store_message_postings(r, T, NULL, 0, max, TA, 0, 0, count_posting, &n, &cut, NULL), EG_OK);
  eg_test_reader_done(r);
  CU_ASSERT_EQUAL(n, (size_t)max);
  CU_ASSERT_EQUAL(cut, 0);
  /* One more (the newest, the last in id order): left out, and said. */
  put_users(s, max, max + 1);
  CU_ASSERT_STRING_EQUAL(postings_of(s, T, NULL, 0, TA, 0, 0, 1, &cut), "u09999/u09999#1@10999:r2,tf1,w10");
  CU_ASSERT_EQUAL(cut, 1);
  n = 0;
  r = eg_test_reader(s);
  CU_ASSERT_EQUAL(
      eg_store_message_postings(r, T, NULL, 0, max, TA, 0, 0, count_posting, &n, &cut, NULL), EG_OK);
  eg_test_reader_done(r);
  CU_ASSERT_EQUAL(n, (size_t)max);
  CU_ASSERT_EQUAL(cut, 1);
  /* A smaller max_users (a search's budget per word): the first 10 users
   * in id order, and the cut said. */
  n = 0;
  r = eg_test_reader(s);
  size_t read = 0;
  CU_ASSERT_EQUAL(eg_store_message_postings(r, T, NULL, 0, 10, TA, 0, 0, count_posting, &n, &cut,
                                            &read),
                  EG_OK);
  eg_test_reader_done(r);
  CU_ASSERT_EQUAL(n, 10);
  CU_ASSERT_EQUAL(cut, 1);
  CU_ASSERT_EQUAL(read, 10); /* the users it read: what a search charges the word */
  /* Named, it is read. */
  const char *last[] = {"u10000"};
  CU_ASSERT_STRING_EQUAL(postings_of(s, T, last, 1, TA, 0, 0, 0, &cut), "u10000/u10000#1@11000:r2,tf1,w10");
  CU_ASSERT_EQUAL(cut, 0);
  eg_store_close(s);
  teardown();
}

/* A posting that does not decode fails the scan, not the server. */
static void test_corrupt_posting(void) {
  setup();
  eg_store *s = open_store();
  static uint64_t a[] = {TA};
  eg_message_rec m = msg(1, 100, "u1", a, 1);
  put_msg(s, T, "s1", &m);
  eg_store_close(s);
  /* The posting's value with another layout byte, by plain LMDB. */
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_cursor *c;
  MDB_val k, v;
  CU_ASSERT_EQUAL_FATAL(mdb_env_create(&env), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_env_set_maxdbs(env, 32), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_env_open(env, tdir, 0, 0600), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(env, NULL, 0, &txn), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_dbi_open(txn, "message_terms", 0, &dbi), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_cursor_open(txn, dbi, &c), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_cursor_get(c, &k, &v, MDB_FIRST), 0);
  uint8_t bad[8];
  memcpy(bad, v.mv_data, sizeof bad);
  CU_ASSERT_EQUAL(bad[0], 1);
  bad[0] = 9;
  v = (MDB_val){sizeof bad, bad};
  CU_ASSERT_EQUAL_FATAL(mdb_cursor_put(c, &k, &v, MDB_CURRENT), 0);
  mdb_cursor_close(c);
  CU_ASSERT_EQUAL_FATAL(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  s = open_store();
  char want[16];
  snprintf(want, sizeof want, "ERR%d", (int)EG_ECORRUPT);
  CU_ASSERT_STRING_EQUAL(postings(s, T, "u1", TA, 0, 0, 0), want);
  CU_ASSERT_STRING_EQUAL(postings(s, T, NULL, TA, 0, 0, 0), want);
  eg_store_close(s);
  teardown();
}

void eg_test_register_message_index(void) {
  CU_pSuite s = CU_add_suite("message_index", NULL, NULL);
  CU_add_test(s, "postings and stats", test_postings_and_stats);
  CU_add_test(s, "put refused, at the terms limit", test_put_refused);
  CU_add_test(s, "delete, warm tier and purge remove postings", test_delete_paths);
  CU_add_test(s, "user erasure removes postings within budget", test_erase_user);
  CU_add_test(s, "reindex", test_reindex);
  CU_add_test(s, "walk with cursor", test_walk);
  CU_add_test(s, "index state", test_index_state);
  CU_add_test(s, "postings merged newest first across users, a user set", test_postings_merge);
  CU_add_test(s, "postings: the users merged at their most", test_postings_users_cap);
  CU_add_test(s, "corrupt posting", test_corrupt_posting);
}
