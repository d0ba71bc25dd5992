/* storage/memories.c against real LMDB files in a temp dir: records and the
 * indexes derived from them, counters, scans, postings, purge, and the
 * bounded erasure of a user, checked afterwards by reading every DB of the
 * file with plain LMDB calls. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/storage.h"
#include "suites.h"

static char tdir[4096];

static eg_store *open_store(void) {
  eg_store_opts o = {.map_size = (size_t)64 << 20};
  return eg_test_store_open(tdir, &o);
}

static void setup(void) { snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir()); }
static void teardown(void) { eg_test_rmdir(tdir); }

/* A record as the service would build it (terms must be sorted). */
static eg_memory_rec mrec(const char *id, const char *user, int64_t create_us, uint64_t *terms,
                          size_t n_terms, int dim) {
  eg_memory_rec r = ENGRAM__STORAGE__V1__MEMORY_RECORD__INIT;
  r.memory_id = (char *)id;
  r.user_id = (char *)user;
  r.type = 2;
  r.state = EG_MSTATE_ACTIVE;
  r.importance = 0.5f;
  r.version = 1;
  r.create_time_us = r.update_time_us = create_us;
  r.term_hashes = terms;
  r.n_term_hashes = n_terms;
  r.dim = dim;
  r.norm = dim ? 1.0f : 0.0f;
  static uint8_t tok[] = "sealed-text-token";
  r.text_token.data = tok;
  r.text_token.len = sizeof tok - 1;
  return r;
}

static void put(eg_store *s, const char *tenant, const eg_memory_rec *rec, const eg_memory_rec *prev,
                const float *vec) {
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_memory_put(w, tenant, rec, prev, vec), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

static eg_txn *reader(eg_store *s) {
  eg_txn *r;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  return r;
}

struct visit_log {
  char ids[4096];
  int n, with_vec;
  float first_vec0;
};

static int log_visit(void *arg, const eg_memory_pos *pos, const eg_memory_meta *m, const uint8_t *vec) {
  struct visit_log *l = arg;
  int64_t cu;
  const char *id;
  size_t idlen;
  eg_memory_pos_split(pos, &cu, &id, &idlen);
  size_t len = strlen(l->ids);
  snprintf(l->ids + len, sizeof l->ids - len, "%s%.*s", len ? "," : "", (int)idlen, id);
  if (vec) {
    if (!l->with_vec) memcpy(&l->first_vec0, vec, 4);
    l->with_vec++;
  }
  l->n++;
  return 0;
}

static int log_posting(void *arg, const eg_memory_pos *pos) {
  struct visit_log *l = arg;
  int64_t cu;
  const char *id;
  size_t idlen;
  eg_memory_pos_split(pos, &cu, &id, &idlen);
  size_t len = strlen(l->ids);
  snprintf(l->ids + len, sizeof l->ids - len, "%s%.*s", len ? "," : "", (int)idlen, id);
  l->n++;
  return 0;
}

static void postings(eg_store *s, const char *tenant, const char *user, uint64_t term, char *out) {
  struct visit_log l = {0};
  eg_txn *r = reader(s);
  CU_ASSERT_EQUAL(eg_store_memory_postings(r, tenant, user, term, log_posting, &l), EG_OK);
  eg_store_reader_free(r);
  strcpy(out, l.ids);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_put_get_scan(void) {
  setup();
  eg_store *s = open_store();
  uint64_t t1[] = {1, 5, 9}, t2[] = {5, 7};
  float v[3] = {0.25f, 0.5f, 0.75f};
  eg_memory_rec a = mrec("m-a", "u1", 100, t1, 3, 3), b = mrec("m-b", "u1", 200, t2, 2, 0),
                c = mrec("m-c", "u2", 150, t2, 2, 0);
  put(s, "acme", &a, NULL, v);
  put(s, "acme", &b, NULL, NULL);
  put(s, "acme", &c, NULL, NULL);
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_memory_put(w, "acme", &a, NULL, v), EG_EEXIST);
  eg_store_write_abort(w);

  eg_txn *r = reader(s);
  eg_memory_rec *got;
  CU_ASSERT_EQUAL_FATAL(eg_store_memory_get(r, "acme", "m-a", &got), EG_OK);
  CU_ASSERT_STRING_EQUAL(got->user_id, "u1");
  CU_ASSERT_EQUAL(got->n_term_hashes, 3);
  float back[3];
  CU_ASSERT_EQUAL(eg_store_memory_vector(r, "acme", got, back), EG_OK);
  CU_ASSERT_EQUAL(memcmp(back, v, sizeof v), 0);
  engram__storage__v1__memory_record__free_unpacked(got, NULL);
  CU_ASSERT_EQUAL(eg_store_memory_get(r, "other", "m-a", &got), EG_ENOTFOUND);

  struct visit_log l = {0};
  CU_ASSERT_EQUAL(eg_store_memories_scan(r, "acme", "u1", NULL, 0, 1, log_visit, &l), EG_OK);
  CU_ASSERT_STRING_EQUAL(l.ids, "m-a,m-b"); /* oldest first, u1 only */
  CU_ASSERT_EQUAL(l.with_vec, 1);
  CU_ASSERT_EQUAL(l.first_vec0, 0.25f);
  struct visit_log d = {0};
  CU_ASSERT_EQUAL(eg_store_memories_scan(r, "acme", "u1", NULL, 1, 0, log_visit, &d), EG_OK);
  CU_ASSERT_STRING_EQUAL(d.ids, "m-b,m-a");
  CU_ASSERT_EQUAL(d.with_vec, 0); /* not asked for */

  eg_memory_counters cnt;
  CU_ASSERT_EQUAL(eg_store_memory_counters(r, "acme", "u1", &cnt), EG_OK);
  CU_ASSERT_EQUAL(cnt.count[EG_MSTATE_ACTIVE], 2);
  CU_ASSERT_EQUAL(cnt.dim, 3);
  CU_ASSERT_EQUAL(eg_store_memory_counters(r, "acme", "nobody", &cnt), EG_OK);
  CU_ASSERT_EQUAL(cnt.count[EG_MSTATE_ACTIVE], 0);
  eg_store_reader_free(r);

  char ids[256];
  postings(s, "acme", "u1", 5, ids);
  CU_ASSERT_STRING_EQUAL(ids, "m-a,m-b");
  postings(s, "acme", "u2", 5, ids);
  CU_ASSERT_STRING_EQUAL(ids, "m-c");
  postings(s, "acme", "u1", 7, ids);
  CU_ASSERT_STRING_EQUAL(ids, "m-b");
  postings(s, "acme", "u1", 8, ids);
  CU_ASSERT_STRING_EQUAL(ids, "");
  eg_store_close(s);
  teardown();
}

static void test_update_moves_indexes(void) {
  setup();
  eg_store *s = open_store();
  uint64_t t1[] = {1, 2, 3}, t2[] = {2, 3, 4};
  float v[2] = {1, 0};
  eg_memory_rec a = mrec("m-a", "u1", 100, t1, 3, 2);
  put(s, "acme", &a, NULL, v);
  /* new text (terms 1 out, 4 in), no vector, state DUPLICATE */
  eg_memory_rec b = a;
  b.term_hashes = t2;
  b.dim = 0;
  b.state = EG_MSTATE_DUPLICATE;
  put(s, "acme", &b, &a, NULL);
  char ids[256];
  postings(s, "acme", "u1", 1, ids);
  CU_ASSERT_STRING_EQUAL(ids, "");
  postings(s, "acme", "u1", 4, ids);
  CU_ASSERT_STRING_EQUAL(ids, "m-a");
  postings(s, "acme", "u1", 2, ids);
  CU_ASSERT_STRING_EQUAL(ids, "m-a");
  eg_txn *r = reader(s);
  struct visit_log l = {0};
  CU_ASSERT_EQUAL(eg_store_memories_scan(r, "acme", "u1", NULL, 0, 1, log_visit, &l), EG_OK);
  CU_ASSERT_EQUAL(l.n, 1);
  CU_ASSERT_EQUAL(l.with_vec, 0);
  eg_memory_counters cnt;
  CU_ASSERT_EQUAL(eg_store_memory_counters(r, "acme", "u1", &cnt), EG_OK);
  CU_ASSERT_EQUAL(cnt.count[EG_MSTATE_ACTIVE], 0);
  CU_ASSERT_EQUAL(cnt.count[EG_MSTATE_DUPLICATE], 1);
  CU_ASSERT_EQUAL(cnt.dim, 2); /* the user's dimension stays fixed */
  eg_store_reader_free(r);
  /* user and create time are part of the keys: they may not change */
  eg_memory_rec c = b;
  c.user_id = "u2";
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_memory_put(w, "acme", &c, &b, NULL), EG_EINVAL);
  uint64_t unsorted[] = {3, 2};
  c = b;
  c.term_hashes = unsorted;
  c.n_term_hashes = 2;
  CU_ASSERT_EQUAL(eg_store_memory_put(w, "acme", &c, &b, NULL), EG_EINVAL);
  eg_store_write_abort(w);
  eg_store_close(s);
  teardown();
}

static void test_scan_pagination(void) {
  setup();
  eg_store *s = open_store();
  char id[16];
  for (int i = 0; i < 7; i++) {
    snprintf(id, sizeof id, "m%d", i);
    eg_memory_rec a = mrec(id, "u1", 1000 + i, NULL, 0, 0);
    put(s, "acme", &a, NULL, NULL);
  }
  /* resume strictly after a position, both ways */
  eg_memory_pos pos = {.len = 8 + 2};
  for (int i = 0; i < 8; i++) pos.buf[i] = (uint8_t)((uint64_t)1003 >> (56 - 8 * i));
  memcpy(pos.buf + 8, "m3", 2);
  eg_txn *r = reader(s);
  struct visit_log up = {0}, down = {0};
  CU_ASSERT_EQUAL(eg_store_memories_scan(r, "acme", "u1", &pos, 0, 0, log_visit, &up), EG_OK);
  CU_ASSERT_STRING_EQUAL(up.ids, "m4,m5,m6");
  CU_ASSERT_EQUAL(eg_store_memories_scan(r, "acme", "u1", &pos, 1, 0, log_visit, &down), EG_OK);
  CU_ASSERT_STRING_EQUAL(down.ids, "m2,m1,m0");
  eg_memory_pos bad = {.len = 3};
  CU_ASSERT_EQUAL(eg_store_memories_scan(r, "acme", "u1", &bad, 0, 0, log_visit, &up), EG_EINVAL);
  eg_memory_meta m;
  const uint8_t *vec;
  CU_ASSERT_EQUAL(eg_store_memory_meta_at(r, "acme", "u1", &pos, 1, &m, &vec), EG_OK);
  CU_ASSERT_EQUAL(m.create_us, 1003);
  CU_ASSERT_PTR_NULL(vec);
  memcpy(pos.buf + 8, "zz", 2);
  CU_ASSERT_EQUAL(eg_store_memory_meta_at(r, "acme", "u1", &pos, 0, &m, NULL), EG_ENOTFOUND);
  eg_store_reader_free(r);
  eg_store_close(s);
  teardown();
}

/* ---- raw LMDB check: what is left in the file ------------------------------------ */

struct leftovers {
  const char *needle;
  size_t needle_len;
  int hits;
  char where[256];
};

/* Counts keys or values of every named DB but the log that contain needle
 * (the log keeps history until trimmed; see docs/security.md). */
static void raw_scan(struct leftovers *lo) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi main_dbi;
  MDB_cursor *c;
  MDB_val k, v;
  CU_ASSERT_EQUAL_FATAL(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 64);
  CU_ASSERT_EQUAL_FATAL(mdb_env_open(env, tdir, MDB_RDONLY | MDB_NOTLS, 0600), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_dbi_open(txn, NULL, 0, &main_dbi), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_cursor_open(txn, main_dbi, &c), 0);
  char names[64][64];
  int n = 0;
  while (mdb_cursor_get(c, &k, &v, MDB_NEXT) == 0 && n < 64) {
    snprintf(names[n++], 64, "%.*s", (int)k.mv_size, (const char *)k.mv_data);
  }
  mdb_cursor_close(c);
  for (int i = 0; i < n; i++) {
    MDB_dbi dbi;
    if (strcmp(names[i], "wal") == 0 || mdb_dbi_open(txn, names[i], 0, &dbi) != 0) continue;
    CU_ASSERT_EQUAL_FATAL(mdb_cursor_open(txn, dbi, &c), 0);
    while (mdb_cursor_get(c, &k, &v, MDB_NEXT) == 0) {
      if (memmem(k.mv_data, k.mv_size, lo->needle, lo->needle_len) ||
          memmem(v.mv_data, v.mv_size, lo->needle, lo->needle_len)) {
        if (!lo->hits) snprintf(lo->where, sizeof lo->where, "%.63s", names[i]);
        lo->hits++;
      }
    }
    mdb_cursor_close(c);
  }
  mdb_txn_abort(txn);
  mdb_env_close(env);
}

static int raw_hits(const char *needle, char *where) {
  struct leftovers lo = {.needle = needle, .needle_len = strlen(needle)};
  raw_scan(&lo);
  if (where) strcpy(where, lo.where);
  return lo.hits;
}

static void test_purge_leaves_nothing(void) {
  setup();
  eg_store *s = open_store();
  uint64_t t[] = {11, 12};
  float v[4] = {1, 2, 3, 4};
  eg_memory_rec a = mrec("purge-me-42", "u1", 100, t, 2, 4), b = mrec("keep-me-43", "u1", 101, t, 2, 0);
  put(s, "acme", &a, NULL, v);
  put(s, "acme", &b, NULL, NULL);
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_memory_purge(w, "acme", &a), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  char ids[256];
  postings(s, "acme", "u1", 11, ids);
  CU_ASSERT_STRING_EQUAL(ids, "keep-me-43");
  eg_txn *r = reader(s);
  eg_memory_counters cnt;
  CU_ASSERT_EQUAL(eg_store_memory_counters(r, "acme", "u1", &cnt), EG_OK);
  CU_ASSERT_EQUAL(cnt.count[EG_MSTATE_ACTIVE], 1);
  eg_store_reader_free(r);
  eg_store_close(s);
  char where[256];
  CU_ASSERT_EQUAL(raw_hits("purge-me-42", where), 0);
  CU_ASSERT(raw_hits("keep-me-43", NULL) > 0);
  teardown();
}

/* Puts user's sessions (with messages and retry keys) and memories. */
static void fill_user(eg_store *s, const char *tenant, const char *user, int sessions, int messages,
                      int memories) {
  eg_txn *w;
  char id[64], cid[64];
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  for (int i = 0; i < sessions; i++) {
    eg_session_rec sr = ENGRAM__STORAGE__V1__SESSION_RECORD__INIT;
    snprintf(id, sizeof id, "%s-s%d", user, i);
    sr.session_id = id;
    sr.user_id = (char *)user;
    sr.agent_id = "";
    sr.create_time_us = 10 + i;
    CU_ASSERT_EQUAL_FATAL(eg_store_session_put(w, tenant, &sr, NULL), EG_OK);
    for (int q = 1; q <= messages; q++) {
      eg_message_rec m = ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
      m.seq = q;
      snprintf(cid, sizeof cid, "%s-c%d", user, q);
      m.client_message_id = cid;
      m.content_token.data = (uint8_t *)user;
      m.content_token.len = strlen(user);
      CU_ASSERT_EQUAL_FATAL(eg_store_message_put(w, tenant, id, &m), EG_OK);
    }
  }
  for (int i = 0; i < memories; i++) {
    uint64_t t[] = {(uint64_t)i, 1000 + (uint64_t)i};
    float v[2] = {1, (float)i};
    snprintf(id, sizeof id, "%s-m%d", user, i);
    eg_memory_rec a = mrec(id, user, 50 + i, t, 2, i % 2 ? 2 : 0);
    CU_ASSERT_EQUAL_FATAL(eg_store_memory_put(w, tenant, &a, NULL, v), EG_OK);
  }
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

/* Runs erase steps, each in its own txn, until done; returns the steps. */
static int erase_user(eg_store *s, const char *tenant, const char *user, uint64_t budget,
                      eg_erase_counts *c, int abort_first) {
  int steps = 0, done = 0;
  while (!done && steps < 10000) {
    eg_txn *w;
    CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_store_user_erase_step(w, tenant, user, budget, c, &done), EG_OK);
    if (abort_first && steps == 1) {
      /* a batch rolled back (as after a map-full replay): redone, not double counted */
      eg_store_write_abort(w);
      abort_first = 0;
      done = 0;
      continue;
    }
    CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
    steps++;
  }
  return steps;
}

static void test_erase_bounded_and_complete(void) {
  setup();
  eg_store *s = open_store();
  fill_user(s, "acme", "erase-me-user", 3, 40, 60);
  fill_user(s, "acme", "keep-me-user", 1, 5, 5);
  fill_user(s, "beta", "erase-me-user", 1, 5, 5); /* same user id, other tenant */
  eg_erase_counts c = {0};
  int steps = erase_user(s, "acme", "erase-me-user", 50, &c, 1);
  /* 3 sessions x (40 messages + 40 retry keys + 2) + 60 x 3 + 120 postings = 546 keys */
  CU_ASSERT(steps >= 546 / 50);
  CU_ASSERT_EQUAL(c.sessions, 3);
  CU_ASSERT_EQUAL(c.messages, 120);
  CU_ASSERT_EQUAL(c.memories, 60);
  CU_ASSERT_EQUAL(c.steps, (uint64_t)steps);
  /* erasing again: nothing left, zero counts, one step */
  eg_erase_counts again;
  CU_ASSERT_EQUAL(erase_user(s, "acme", "erase-me-user", 50, &again, 0), 1);
  CU_ASSERT_EQUAL(again.sessions + again.messages + again.memories, 0);
  /* the other user and the other tenant are intact */
  eg_txn *r = reader(s);
  struct visit_log l = {0};
  CU_ASSERT_EQUAL(eg_store_memories_scan(r, "acme", "keep-me-user", NULL, 0, 1, log_visit, &l), EG_OK);
  CU_ASSERT_EQUAL(l.n, 5);
  struct visit_log l2 = {0};
  CU_ASSERT_EQUAL(eg_store_memories_scan(r, "beta", "erase-me-user", NULL, 0, 1, log_visit, &l2), EG_OK);
  CU_ASSERT_EQUAL(l2.n, 5);
  eg_store_reader_free(r);
  eg_store_close(s);
  /* The file: no key or value of any data DB mentions the erased user of
   * acme ("erase-me-user" still exists in tenant beta, so look for acme's
   * session and memory ids, which embed the user id, and for the user's
   * key prefix). */
  char where[256];
  CU_ASSERT(raw_hits("erase-me-user-s0", where) > 0); /* beta's session */
  CU_ASSERT_EQUAL(raw_hits("erase-me-user-s1", where), 0);
  CU_ASSERT_EQUAL(raw_hits("erase-me-user-s2", where), 0);
  CU_ASSERT_EQUAL(raw_hits("erase-me-user-m59", where), 0);
  CU_ASSERT_EQUAL(raw_hits("erase-me-user-m7", where), 0);
  char prefix[64];
  int n = snprintf(prefix, sizeof prefix, "\x04" "acme" "\x0d" "erase-me-user");
  CU_ASSERT_EQUAL(n, 19);
  CU_ASSERT_EQUAL(raw_hits(prefix, where), 0);
  CU_ASSERT(raw_hits("keep-me-user-m4", NULL) > 0);
  teardown();
}

void eg_test_register_memory_store(void) {
  CU_pSuite s = CU_add_suite("memory_store", NULL, NULL);
  CU_add_test(s, "put, get, scan, postings, counters", test_put_get_scan);
  CU_add_test(s, "update moves postings, vector, counters", test_update_moves_indexes);
  CU_add_test(s, "scan pagination", test_scan_pagination);
  CU_add_test(s, "purge leaves nothing", test_purge_leaves_nothing);
  CU_add_test(s, "erase: bounded steps, complete, replay-safe", test_erase_bounded_and_complete);
}
