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
  eg_txn *r = eg_test_reader(s);
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

  eg_txn *r = eg_test_reader(s);
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
  eg_txn *r = eg_test_reader(s);
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
  eg_txn *r = eg_test_reader(s);
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
  eg_txn *r = eg_test_reader(s);
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
  eg_txn *r = eg_test_reader(s);
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


/* ---- meta layout 4 and the older layouts --------------------------------------- */

struct meta_copy {
  eg_memory_meta m;
  uint64_t ns[EG_MEMORY_NS_HASHES_MAX], md[EG_MEMORY_MD_HASHES_MAX];
  int8_t q0;
  int n;
};

static int copy_meta(void *arg, const eg_memory_pos *pos, const eg_memory_meta *m, const uint8_t *vec) {
  struct meta_copy *c = arg;
  c->m = *m;
  for (unsigned i = 0; i < m->n_ns; i++) c->ns[i] = eg_memory_meta_hash(m->ns_hashes, i);
  for (unsigned i = 0; i < m->n_md; i++) c->md[i] = eg_memory_meta_hash(m->md_hashes, i);
  c->q0 = m->qvec ? m->qvec[0] : 0;
  c->n++;
  return 0;
}

static struct meta_copy scan_one(eg_store *s, const char *user) {
  struct meta_copy c = {0};
  eg_txn *r = eg_test_reader(s);
  CU_ASSERT_EQUAL(eg_store_memories_scan(r, "acme", user, NULL, 0, 0, copy_meta, &c), EG_OK);
  CU_ASSERT_EQUAL(c.n, 1);
  eg_store_reader_free(r);
  return c;
}

static uint64_t ns_h[EG_MEMORY_NS_HASHES_MAX + 1], md_h[EG_MEMORY_MD_HASHES_MAX + 1];

/* A record with every filter hash set: n_ns namespace and n_md metadata. */
static eg_memory_rec filtered(const char *id, const char *user, int dim, size_t n_ns, size_t n_md) {
  static uint64_t tags[] = {0x7777};
  eg_memory_rec r = mrec(id, user, 500, NULL, 0, dim);
  for (size_t i = 0; i <= EG_MEMORY_NS_HASHES_MAX; i++) ns_h[i] = 0x1000 + i;
  for (size_t i = 0; i <= EG_MEMORY_MD_HASHES_MAX; i++) md_h[i] = 0xABCD0000u + i;
  r.tag_hashes = tags;
  r.n_tag_hashes = 1;
  r.index_version = 2;
  r.agent_hash = 0xA1;
  r.source_hash = 0x5E;
  r.namespace_hashes = ns_h;
  r.n_namespace_hashes = n_ns;
  r.metadata_hashes = md_h;
  r.n_metadata_hashes = n_md;
  return r;
}

static void test_meta_layout4(void) {
  setup();
  eg_store *s = open_store();
  float v[3] = {0.5f, -1.0f, 0.25f};
  eg_memory_rec a = filtered("m-a", "u1", 3, EG_MEMORY_NS_HASHES_MAX, EG_MEMORY_MD_HASHES_MAX);
  a.blind_key_id = 7;
  put(s, "acme", &a, NULL, v);
  struct meta_copy c = scan_one(s, "u1");
  CU_ASSERT_EQUAL(c.m.has_filters, 1);
  CU_ASSERT_EQUAL(c.m.blind_key_id, 7); /* layout 4 */
  CU_ASSERT_EQUAL(c.m.index_version, 2);
  CU_ASSERT_EQUAL(c.m.agent_hash, 0xA1);
  CU_ASSERT_EQUAL(c.m.source_hash, 0x5E);
  CU_ASSERT_EQUAL(c.m.n_ns, EG_MEMORY_NS_HASHES_MAX);
  CU_ASSERT_EQUAL(c.m.n_md, EG_MEMORY_MD_HASHES_MAX);
  CU_ASSERT_EQUAL(c.ns[0], 0x1000);
  CU_ASSERT_EQUAL(c.ns[EG_MEMORY_NS_HASHES_MAX - 1], 0x1000 + EG_MEMORY_NS_HASHES_MAX - 1);
  CU_ASSERT_EQUAL(c.md[EG_MEMORY_MD_HASHES_MAX - 1], 0xABCD0000u + EG_MEMORY_MD_HASHES_MAX - 1);
  /* the fields before the filter block are where layout 2 had them */
  CU_ASSERT_EQUAL(c.m.dim, 3);
  CU_ASSERT_EQUAL(c.m.n_tags, 1);
  CU_ASSERT_EQUAL(eg_memory_meta_tag(&c.m, 0), 0x7777);
  CU_ASSERT_EQUAL(c.q0, 64); /* 0.5 / (1/127) rounded */
  /* index_version 0 (a writer that did not set it) reads as 1 */
  eg_memory_rec b = filtered("m-b", "u2", 0, 0, 0);
  b.index_version = 0;
  put(s, "acme", &b, NULL, NULL);
  c = scan_one(s, "u2");
  CU_ASSERT_EQUAL(c.m.index_version, 1);
  CU_ASSERT_EQUAL(c.m.has_filters, 1);
  CU_ASSERT_EQUAL(c.m.n_ns, 0);
  CU_ASSERT_EQUAL(c.m.n_md, 0);
  /* one hash past either bound: refused, nothing written */
  eg_txn *w;
  eg_memory_rec over_ns = filtered("m-c", "u3", 0, EG_MEMORY_NS_HASHES_MAX + 1, 0);
  eg_memory_rec over_md = filtered("m-d", "u3", 0, 0, EG_MEMORY_MD_HASHES_MAX + 1);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_memory_put(w, "acme", &over_ns, NULL, NULL), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_store_memory_put(w, "acme", &over_md, NULL, NULL), EG_EINVAL);
  eg_store_write_abort(w);
  eg_store_close(s);
  teardown();
}

/* Rewrites the meta value of every memory of the file to layout `layout`:
 * 3 (a store from before blind-index rotation) is layout 4 minus
 * blind_key_id; 1 and 2 (from before schema 6) are minus the filter
 * block, minus the quantized vector too for layout 1. Raw LMDB, the store
 * closed. */
static void downgrade_metas(int layout) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_cursor *c;
  MDB_val k, v;
  CU_ASSERT_EQUAL_FATAL(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 64);
  CU_ASSERT_EQUAL_FATAL(mdb_env_open(env, tdir, MDB_NOTLS, 0600), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(env, NULL, 0, &txn), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_dbi_open(txn, "memories_by_user", 0, &dbi), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_cursor_open(txn, dbi, &c), 0);
  while (mdb_cursor_get(c, &k, &v, MDB_NEXT) == 0) {
    uint8_t b[1024];
    const uint8_t *old = v.mv_data;
    CU_ASSERT_EQUAL_FATAL(old[0], 4);
    unsigned dim = (unsigned)old[4] | (unsigned)old[5] << 8, n_tags = (unsigned)old[6] | (unsigned)old[7] << 8;
    size_t n = 56 + 8 * (size_t)n_tags;
    if (layout >= 2 && dim) n += 8 + dim;
    CU_ASSERT_FATAL(n <= sizeof b && n < v.mv_size);
    memcpy(b, old, n);
    if (layout == 3) { /* the filter block without the 4 bytes at its 24 */
      CU_ASSERT_FATAL(v.mv_size - 4 <= sizeof b);
      memcpy(b + n, old + n, 24);
      memcpy(b + n + 24, old + n + 28, v.mv_size - n - 28);
      n = v.mv_size - 4;
    }
    b[0] = (uint8_t)layout;
    MDB_val nv = {n, b};
    CU_ASSERT_EQUAL_FATAL(mdb_cursor_put(c, &k, &nv, MDB_CURRENT), 0);
  }
  mdb_cursor_close(c);
  CU_ASSERT_EQUAL_FATAL(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

static void test_meta_old_layouts(void) {
  for (int layout = 1; layout <= 3; layout++) {
    setup();
    eg_store *s = open_store();
    float v[3] = {0.5f, -1.0f, 0.25f};
    eg_memory_rec a = filtered("m-a", "u1", 3, 2, 2);
    a.blind_key_id = 7;
    put(s, "acme", &a, NULL, v);
    eg_store_close(s);
    downgrade_metas(layout);
    s = open_store();
    struct meta_copy c = scan_one(s, "u1");
    CU_ASSERT_EQUAL(c.m.blind_key_id, 0); /* the row's legacy key */
    if (layout == 3) {
      CU_ASSERT_EQUAL(c.m.has_filters, 1);
      CU_ASSERT_EQUAL(c.m.index_version, 2);
      CU_ASSERT_EQUAL(c.m.n_md, 2);
      CU_ASSERT_EQUAL(c.md[1], 0xABCD0001u);
      CU_ASSERT_EQUAL(c.q0, 64);
      eg_store_close(s);
      teardown();
      continue;
    }
    CU_ASSERT_EQUAL(c.m.has_filters, 0);
    CU_ASSERT_EQUAL(c.m.index_version, 1);
    CU_ASSERT_EQUAL(c.m.n_ns, 0);
    CU_ASSERT_EQUAL(c.m.n_md, 0);
    CU_ASSERT_EQUAL(c.m.agent_hash, 0);
    CU_ASSERT_EQUAL(c.m.dim, 3);
    CU_ASSERT_EQUAL(eg_memory_meta_tag(&c.m, 0), 0x7777);
    CU_ASSERT_EQUAL(c.q0, layout == 2 ? 64 : 0);
    CU_ASSERT_EQUAL(c.m.qvec == NULL, layout == 1);
    /* the next put of the memory writes layout 4 again */
    eg_memory_rec upd = a;
    upd.version = 2;
    put(s, "acme", &upd, &a, NULL);
    c = scan_one(s, "u1");
    CU_ASSERT_EQUAL(c.m.has_filters, 1);
    CU_ASSERT_EQUAL(c.m.n_ns, 2);
    CU_ASSERT_EQUAL(c.md[1], 0xABCD0001u);
    CU_ASSERT_EQUAL(c.q0, 64);
    eg_store_close(s);
    teardown();
  }
}

/* ---- the walk across tenants ------------------------------------------------------ */

struct walk_log {
  char ids[512];
  uint8_t last[512];
  size_t last_len;
  int stop_after; /* 0: never */
  int n;
};

static int log_walk(void *arg, const uint8_t *key, size_t key_len, const char *tenant,
                    eg_memory_rec *rec) {
  struct walk_log *l = arg;
  size_t len = strlen(l->ids);
  snprintf(l->ids + len, sizeof l->ids - len, "%s%s/%s", len ? "," : "", tenant, rec->memory_id);
  memcpy(l->last, key, key_len);
  l->last_len = key_len;
  protobuf_c_message_free_unpacked(&rec->base, NULL);
  return ++l->n == l->stop_after;
}

static void test_memories_walk(void) {
  setup();
  eg_store *s = open_store();
  const char *tenants[] = {"beta", "acme", "acme", "beta", "acme"};
  const char *ids[] = {"m2", "m1", "m3", "m1", "m2"};
  for (int i = 0; i < 5; i++) {
    eg_memory_rec a = mrec(ids[i], "u1", 100 + i, NULL, 0, 0);
    put(s, tenants[i], &a, NULL, NULL);
  }
  eg_txn *r = eg_test_reader(s);
  struct walk_log l = {0};
  int more = -1;
  /* key order: u8len tenant | memory_id, so acme's, then beta's */
  CU_ASSERT_EQUAL(eg_store_memories_walk(r, NULL, 0, 2, log_walk, &l, &more), EG_OK);
  CU_ASSERT_STRING_EQUAL(l.ids, "acme/m1,acme/m2");
  CU_ASSERT_EQUAL(more, 1);
  struct walk_log l2 = {0};
  CU_ASSERT_EQUAL(eg_store_memories_walk(r, l.last, l.last_len, 2, log_walk, &l2, &more), EG_OK);
  CU_ASSERT_STRING_EQUAL(l2.ids, "acme/m3,beta/m1");
  CU_ASSERT_EQUAL(more, 1);
  struct walk_log l3 = {0};
  CU_ASSERT_EQUAL(eg_store_memories_walk(r, l2.last, l2.last_len, 2, log_walk, &l3, &more), EG_OK);
  CU_ASSERT_STRING_EQUAL(l3.ids, "beta/m2");
  CU_ASSERT_EQUAL(more, 0);
  /* exactly the rest: none remain */
  struct walk_log l4 = {0};
  CU_ASSERT_EQUAL(eg_store_memories_walk(r, l2.last, l2.last_len, 1, log_walk, &l4, &more), EG_OK);
  CU_ASSERT_EQUAL(more, 0);
  /* stopped by the callee: more says whether any lie past */
  struct walk_log l5 = {.stop_after = 1};
  CU_ASSERT_EQUAL(eg_store_memories_walk(r, NULL, 0, 10, log_walk, &l5, &more), EG_OK);
  CU_ASSERT_STRING_EQUAL(l5.ids, "acme/m1");
  CU_ASSERT_EQUAL(more, 1);
  eg_store_reader_free(r);
  eg_store_close(s);
  teardown();
}

void eg_test_register_memory_store(void) {
  CU_pSuite s = CU_add_suite("memory_store", NULL, NULL);
  CU_add_test(s, "put, get, scan, postings, counters", test_put_get_scan);
  CU_add_test(s, "update moves postings, vector, counters", test_update_moves_indexes);
  CU_add_test(s, "scan pagination", test_scan_pagination);
  CU_add_test(s, "purge leaves nothing", test_purge_leaves_nothing);
  CU_add_test(s, "erase: bounded steps, complete, replay-safe", test_erase_bounded_and_complete);
  CU_add_test(s, "meta layout 4: filter hashes, index version, blind key, bounds",
              test_meta_layout4);
  CU_add_test(s, "meta layouts 1, 2 and 3 still decode", test_meta_old_layouts);
  CU_add_test(s, "walk across tenants: key order, cursor, more", test_memories_walk);
}
