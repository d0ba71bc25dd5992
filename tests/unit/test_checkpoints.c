/* storage/checkpoints.c against real LMDB files in a temp dir: the key
 * layout (lengths, digests), exact and newest gets, the three newest-first
 * scans with before and resume, pending writes' keep/replace and order,
 * the bounded thread delete and DeleteUser's erasure, checked afterwards
 * by counting every key of the three DBs with plain LMDB calls. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/json_terms.h"
#include "storage/storage.h"
#include "suites.h"

static char tdir[4096];

static eg_store *open_store(void) {
  eg_store_opts o = {.map_size = (size_t)64 << 20};
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  return eg_test_store_open(tdir, &o);
}

static void close_store(eg_store *s) {
  eg_store_close(s);
  eg_test_rmdir(tdir);
}

static eg_err put(eg_store *s, const char *tenant, const char *user, const char *thread,
                  const char *ns, const char *id, uint64_t *hashes, size_t n) {
  eg_txn *w;
  eg_ckpt_rec r = ENGRAM__STORAGE__V1__CHECKPOINT_RECORD__INIT;
  r.thread_id = (char *)thread;
  r.checkpoint_ns = (char *)ns;
  r.checkpoint_id = (char *)id;
  r.checkpoint_type = "json";
  r.metadata_hashes = hashes;
  r.n_metadata_hashes = n;
  r.create_time_us = 1;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  eg_err e = eg_store_checkpoint_put(w, tenant, user, &r);
  if (e == EG_OK) {
    CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  } else {
    eg_store_write_abort(w);
  }
  return e;
}

/* Puts a write; returns *written. */
static int put_write(eg_store *s, const char *user, const char *thread, const char *ns,
                     const char *id, const char *task, int idx, const char *channel) {
  eg_txn *w;
  int written = -1;
  eg_ckpt_write_rec r = ENGRAM__STORAGE__V1__CHECKPOINT_WRITE_RECORD__INIT;
  r.task_id = (char *)task;
  r.idx = idx;
  r.channel = (char *)channel;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_checkpoint_write_put(w, "acme", user, thread, ns, id, &r, &written),
                        EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  return written;
}

/* "thread/ns/id,..." of a scan, up to max (0: all); the last position. */
struct scan_log {
  char out[2048];
  int n, max;
  eg_ckpt_pos last;
};

static int log_visit(void *arg, const eg_ckpt_pos *pos, eg_ckpt_rec *rec) {
  struct scan_log *l = arg;
  size_t len = strlen(l->out);
  snprintf(l->out + len, sizeof l->out - len, "%s%s/%s/%s", len ? "," : "", rec->thread_id,
           rec->checkpoint_ns, rec->checkpoint_id);
  eg_ckpt_rec_free(rec);
  l->last = *pos;
  return ++l->n == l->max;
}

static const char *scan(eg_store *s, const char *user, const char *thread, const char *ns,
                        const char *before, const eg_ckpt_pos *after, int max, struct scan_log *l) {
  eg_txn *r = eg_test_reader(s);
  memset(l, 0, sizeof *l);
  l->max = max;
  CU_ASSERT_EQUAL(eg_store_checkpoints_scan(r, "acme", user, thread, ns, before, after, log_visit, l),
                  EG_OK);
  eg_store_reader_free(r);
  return l->out;
}

/* Keys of a DB of the file at tdir (the store must be closed or idle). */
static size_t db_keys(const char *db) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_stat st;
  CU_ASSERT_EQUAL_FATAL(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 64);
  CU_ASSERT_EQUAL_FATAL(mdb_env_open(env, tdir, MDB_RDONLY | MDB_NOTLS, 0600), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_dbi_open(txn, db, 0, &dbi), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_stat(txn, dbi, &st), 0);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return st.ms_entries;
}

static void test_put_get_newest(void) {
  eg_store *s = open_store();
  uint64_t h[] = {3, 7};
  CU_ASSERT_EQUAL(put(s, "acme", "u1", "t1", "", "c1", h, 2), EG_OK);
  CU_ASSERT_EQUAL(put(s, "acme", "u1", "t1", "", "c3", NULL, 0), EG_OK);
  CU_ASSERT_EQUAL(put(s, "acme", "u1", "t1", "sub", "c9", NULL, 0), EG_OK);
  CU_ASSERT_EQUAL(put(s, "acme", "u2", "t1", "", "c5", NULL, 0), EG_OK);
  /* unsorted hashes, empty or too long ids: refused */
  uint64_t bad[] = {7, 3};
  CU_ASSERT_EQUAL(put(s, "acme", "u1", "t1", "", "c4", bad, 2), EG_EINVAL);
  CU_ASSERT_EQUAL(put(s, "acme", "u1", "", "", "c4", NULL, 0), EG_EINVAL);
  CU_ASSERT_EQUAL(put(s, "acme", "u1", "t1", "", "", NULL, 0), EG_EINVAL);
  char id129[130];
  memset(id129, 'i', 129);
  id129[129] = 0;
  CU_ASSERT_EQUAL(put(s, "acme", "u1", "t1", id129, "c4", NULL, 0), EG_EINVAL);
  /* the longest ids of every part fit a key */
  char t128[129], u128[129];
  memset(t128, 't', 128);
  t128[128] = 0;
  memset(u128, 'u', 128);
  u128[128] = 0;
  id129[128] = 0;
  CU_ASSERT_EQUAL(put(s, t128, u128, t128, id129, id129, NULL, 0), EG_OK);
  eg_txn *r = eg_test_reader(s);
  eg_ckpt_rec *rec;
  CU_ASSERT_EQUAL_FATAL(eg_store_checkpoint_get(r, "acme", "u1", "t1", "", "c1", &rec), EG_OK);
  CU_ASSERT_STRING_EQUAL(rec->checkpoint_id, "c1");
  CU_ASSERT_EQUAL(rec->n_metadata_hashes, 2);
  eg_ckpt_rec_free(rec);
  /* newest of the root namespace: c3 (c9 is in "sub", c5 is u2's) */
  CU_ASSERT_EQUAL_FATAL(eg_store_checkpoint_get(r, "acme", "u1", "t1", "", NULL, &rec), EG_OK);
  CU_ASSERT_STRING_EQUAL(rec->checkpoint_id, "c3");
  eg_ckpt_rec_free(rec);
  CU_ASSERT_EQUAL_FATAL(eg_store_checkpoint_get(r, "acme", "u1", "t1", "sub", "", &rec), EG_OK);
  CU_ASSERT_STRING_EQUAL(rec->checkpoint_id, "c9");
  eg_ckpt_rec_free(rec);
  CU_ASSERT_EQUAL(eg_store_checkpoint_get(r, "acme", "u1", "t1", "", "c2", &rec), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_store_checkpoint_get(r, "acme", "u1", "t2", "", NULL, &rec), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_store_checkpoint_get(r, "beta", "u1", "t1", "", NULL, &rec), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_store_checkpoint_get(r, "acme", "u1", "t1", "other", NULL, &rec), EG_ENOTFOUND);
  CU_ASSERT_EQUAL_FATAL(eg_store_checkpoint_get(r, t128, u128, t128, id129, id129, &rec), EG_OK);
  eg_ckpt_rec_free(rec);
  eg_store_reader_free(r);
  /* a put of the same ids replaces: one record, two index entries each */
  CU_ASSERT_EQUAL(put(s, "acme", "u1", "t1", "", "c1", NULL, 0), EG_OK);
  eg_store_close(s);
  CU_ASSERT_EQUAL(db_keys("checkpoints"), 5);
  CU_ASSERT_EQUAL(db_keys("checkpoints_by_user"), 10);
  eg_test_rmdir(tdir);
}

static void test_scan_orders(void) {
  eg_store *s = open_store();
  struct scan_log l;
  /* ids of varying length: "c1" < "c10" < "c2" in byte order */
  const char *rows[][3] = {{"t1", "", "c1"},  {"t1", "b", "c10"}, {"t1", "", "c2"},
                           {"t2", "", "c3"},  {"t1", "b", "c4"},  {"t1", "", "c5"}};
  for (size_t i = 0; i < 6; i++)
    CU_ASSERT_EQUAL(put(s, "acme", "u", rows[i][0], rows[i][1], rows[i][2], NULL, 0), EG_OK);
  CU_ASSERT_STRING_EQUAL(scan(s, "u", "t1", "", NULL, NULL, 0, &l), "t1//c5,t1//c2,t1//c1");
  CU_ASSERT_STRING_EQUAL(scan(s, "u", "t1", NULL, NULL, NULL, 0, &l),
                         "t1//c5,t1/b/c4,t1//c2,t1/b/c10,t1//c1");
  CU_ASSERT_STRING_EQUAL(scan(s, "u", NULL, NULL, NULL, NULL, 0, &l),
                         "t1//c5,t1/b/c4,t2//c3,t1//c2,t1/b/c10,t1//c1");
  CU_ASSERT_STRING_EQUAL(scan(s, "u", "", "ignored", NULL, NULL, 0, &l),
                         "t1//c5,t1/b/c4,t2//c3,t1//c2,t1/b/c10,t1//c1");
  /* before: strictly below, also for an id that is a prefix of others */
  CU_ASSERT_STRING_EQUAL(scan(s, "u", "t1", "", "c2", NULL, 0, &l), "t1//c1");
  CU_ASSERT_STRING_EQUAL(scan(s, "u", "t1", NULL, "c2", NULL, 0, &l), "t1/b/c10,t1//c1");
  CU_ASSERT_STRING_EQUAL(scan(s, "u", NULL, NULL, "c10", NULL, 0, &l), "t1//c1");
  CU_ASSERT_STRING_EQUAL(scan(s, "u", NULL, NULL, "c", NULL, 0, &l), "");
  /* resume after the last position, in each mode */
  const char *threads[] = {"t1", "t1", NULL};
  const char *nss[] = {"", NULL, NULL};
  const char *want[] = {"t1//c1", "t1/b/c10,t1//c1", "t1/b/c10,t1//c1"};
  int firsts[] = {2, 3, 4};
  for (int m = 0; m < 3; m++) {
    scan(s, "u", threads[m], nss[m], NULL, NULL, firsts[m], &l);
    eg_ckpt_pos pos = l.last;
    CU_ASSERT_STRING_EQUAL(scan(s, "u", threads[m], nss[m], NULL, &pos, 0, &l), want[m]);
  }
  /* another user, another tenant: nothing */
  CU_ASSERT_STRING_EQUAL(scan(s, "v", NULL, NULL, NULL, NULL, 0, &l), "");
  eg_txn *r = eg_test_reader(s);
  eg_ckpt_pos bad = {.len = 0};
  CU_ASSERT_EQUAL(eg_store_checkpoints_scan(r, "acme", "u", NULL, NULL, NULL, &bad, log_visit, &l),
                  EG_EINVAL);
  eg_store_reader_free(r);
  close_store(s);
}

static void test_writes(void) {
  eg_store *s = open_store();
  CU_ASSERT_EQUAL(put_write(s, "u", "t", "", "c1", "tb", 1, "x"), 1);
  CU_ASSERT_EQUAL(put_write(s, "u", "t", "", "c1", "tb", 0, "x"), 1);
  CU_ASSERT_EQUAL(put_write(s, "u", "t", "", "c1", "ta", 2, "x"), 1);
  CU_ASSERT_EQUAL(put_write(s, "u", "t", "", "c1", "ta", -1, "x"), 1);
  CU_ASSERT_EQUAL(put_write(s, "u", "t", "", "c1", "ta", -3, "x"), 1);
  /* idx >= 0 already stored: kept; idx < 0: replaced */
  CU_ASSERT_EQUAL(put_write(s, "u", "t", "", "c1", "tb", 0, "changed"), 0);
  CU_ASSERT_EQUAL(put_write(s, "u", "t", "", "c1", "ta", -1, "replaced"), 1);
  /* another checkpoint, namespace, user */
  CU_ASSERT_EQUAL(put_write(s, "u", "t", "", "c2", "ta", 0, "x"), 1);
  CU_ASSERT_EQUAL(put_write(s, "u", "t", "sub", "c1", "ta", 0, "x"), 1);
  CU_ASSERT_EQUAL(put_write(s, "v", "t", "", "c1", "ta", 0, "x"), 1);
  eg_txn *r = eg_test_reader(s);
  eg_ckpt_write_rec **w;
  size_t n;
  CU_ASSERT_EQUAL_FATAL(eg_store_checkpoint_writes_get(r, "acme", "u", "t", "", "c1", 100, &w, &n), EG_OK);
  CU_ASSERT_EQUAL_FATAL(n, 5);
  const char *tasks[] = {"ta", "ta", "ta", "tb", "tb"};
  int idxs[] = {-3, -1, 2, 0, 1};
  for (size_t i = 0; i < n; i++) {
    CU_ASSERT_STRING_EQUAL(w[i]->task_id, tasks[i]);
    CU_ASSERT_EQUAL(w[i]->idx, idxs[i]);
  }
  CU_ASSERT_STRING_EQUAL(w[1]->channel, "replaced");
  CU_ASSERT_STRING_EQUAL(w[3]->channel, "x");
  eg_ckpt_writes_free(w, n);
  /* more than max: EG_ELIMIT, nothing returned */
  CU_ASSERT_EQUAL(eg_store_checkpoint_writes_get(r, "acme", "u", "t", "", "c1", 4, &w, &n), EG_ELIMIT);
  CU_ASSERT_PTR_NULL(w);
  CU_ASSERT_EQUAL(eg_store_checkpoint_writes_get(r, "acme", "u", "t", "", "c9", 100, &w, &n), EG_OK);
  CU_ASSERT_EQUAL(n, 0);
  /* the size: count and stored bytes, each record as packed; more than
   * max is EG_ELIMIT */
  uint64_t bytes;
  eg_ckpt_write_rec one = ENGRAM__STORAGE__V1__CHECKPOINT_WRITE_RECORD__INIT;
  one.task_id = "ta";
  one.channel = "x";
  CU_ASSERT_EQUAL(eg_store_checkpoint_writes_size(r, "acme", "u", "t", "", "c1", 5, &n, &bytes), EG_OK);
  CU_ASSERT_EQUAL(n, 5);
  CU_ASSERT_EQUAL(eg_store_checkpoint_writes_size(r, "acme", "u", "t", "", "c1", 4, &n, &bytes),
                  EG_ELIMIT);
  CU_ASSERT_EQUAL(eg_store_checkpoint_writes_size(r, "acme", "u", "t", "sub", "c1", 100, &n, &bytes),
                  EG_OK);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_EQUAL(bytes, protobuf_c_message_get_packed_size(&one.base));
  CU_ASSERT_EQUAL(eg_store_checkpoint_writes_size(r, "acme", "u", "t", "", "c9", 100, &n, &bytes), EG_OK);
  CU_ASSERT_EQUAL(n + bytes, 0);
  eg_store_reader_free(r);
  close_store(s);
}

/* Deletes thread t of user u in steps of budget; returns the steps. */
static int delete_thread(eg_store *s, const char *u, const char *t, uint64_t budget,
                         uint64_t *ck, uint64_t *wr) {
  int done = 0, steps = 0;
  *ck = *wr = 0;
  while (!done && steps < 1000) {
    eg_txn *w;
    CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_store_thread_delete_step(w, "acme", u, t, budget, ck, wr, &done), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
    steps++;
  }
  CU_ASSERT(done);
  return steps;
}

static void fill(eg_store *s, const char *u, const char *t, int n) {
  char id[32];
  for (int i = 0; i < n; i++) {
    snprintf(id, sizeof id, "c%03d", i);
    CU_ASSERT_EQUAL(put(s, "acme", u, t, i % 2 ? "sub" : "", id, NULL, 0), EG_OK);
    CU_ASSERT_EQUAL(put_write(s, u, t, i % 2 ? "sub" : "", id, "task", 0, "x"), 1);
    CU_ASSERT_EQUAL(put_write(s, u, t, i % 2 ? "sub" : "", id, "task", 1, "x"), 1);
  }
}

static void test_delete_thread_bounded(void) {
  eg_store *s = open_store();
  fill(s, "u", "gone", 20);
  fill(s, "u", "kept", 3);
  uint64_t ck, wr;
  /* 40 writes + 20 x 3 keys of checkpoints at 7 per step */
  int steps = delete_thread(s, "u", "gone", 7, &ck, &wr);
  CU_ASSERT_EQUAL(ck, 20);
  CU_ASSERT_EQUAL(wr, 40);
  CU_ASSERT(steps >= 100 / 7);
  CU_ASSERT_EQUAL(delete_thread(s, "u", "gone", 7, &ck, &wr), 1);
  CU_ASSERT_EQUAL(ck + wr, 0);
  struct scan_log l;
  CU_ASSERT_STRING_EQUAL(scan(s, "u", NULL, NULL, NULL, NULL, 0, &l),
                         "kept//c002,kept/sub/c001,kept//c000");
  eg_store_close(s);
  CU_ASSERT_EQUAL(db_keys("checkpoints"), 3);
  CU_ASSERT_EQUAL(db_keys("checkpoints_by_user"), 6);
  CU_ASSERT_EQUAL(db_keys("checkpoint_writes"), 6);
  eg_test_rmdir(tdir);
}

static void test_delete_user_erases_checkpoints(void) {
  eg_store *s = open_store();
  fill(s, "erase-me", "t1", 10);
  fill(s, "erase-me", "t2", 5);
  fill(s, "keep-me", "t1", 2);
  eg_erase_counts c;
  int done = 0, steps = 0;
  while (!done && steps < 1000) {
    eg_txn *w;
    CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_store_user_erase_step(w, "acme", "erase-me", 10, &c, &done), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
    steps++;
  }
  /* 15 checkpoints x 3 keys + 30 writes, 10 per step */
  CU_ASSERT(steps >= 75 / 10);
  struct scan_log l;
  CU_ASSERT_STRING_EQUAL(scan(s, "erase-me", NULL, NULL, NULL, NULL, 0, &l), "");
  CU_ASSERT_STRING_EQUAL(scan(s, "keep-me", NULL, NULL, NULL, NULL, 0, &l), "t1/sub/c001,t1//c000");
  eg_store_close(s);
  CU_ASSERT_EQUAL(db_keys("checkpoints"), 2);
  CU_ASSERT_EQUAL(db_keys("checkpoints_by_user"), 4);
  CU_ASSERT_EQUAL(db_keys("checkpoint_writes"), 4);
  eg_test_rmdir(tdir);
}

/* Rewrites, with the store closed, the value of the checkpoints record
 * holding both `thread` and `id` (stored in the clear): to `value`, or
 * (value NULL) to the value of the record of `thread` holding `other`.
 * Returns how many records it rewrote. */
static int damage(const char *thread, const char *id, const char *value, const char *other) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_cursor *c;
  MDB_val k, v, swap = {0, NULL};
  int n = 0, rc;
  uint8_t keep[4096];
#define EG_HOLDS(val, s) memmem((val).mv_data, (val).mv_size, (s), strlen(s))
  CU_ASSERT_EQUAL_FATAL(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 64);
  CU_ASSERT_EQUAL_FATAL(mdb_env_open(env, tdir, MDB_NOTLS, 0600), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(env, NULL, 0, &txn), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_dbi_open(txn, "checkpoints", 0, &dbi), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_cursor_open(txn, dbi, &c), 0);
  for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); !rc && other; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
    if (EG_HOLDS(v, thread) && EG_HOLDS(v, other) && v.mv_size <= sizeof keep) {
      memcpy(keep, v.mv_data, v.mv_size);
      swap = (MDB_val){v.mv_size, keep};
    }
  for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); !rc; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
    if (EG_HOLDS(v, thread) && EG_HOLDS(v, id)) {
      MDB_val nv = value ? (MDB_val){strlen(value), (void *)value} : swap;
      CU_ASSERT_EQUAL_FATAL(mdb_cursor_put(c, &k, &nv, MDB_CURRENT), 0);
      n++;
    }
#undef EG_HOLDS
  mdb_cursor_close(c);
  CU_ASSERT_EQUAL_FATAL(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  return n;
}

static void test_delete_thread_interrupted_keeps_newest_whole(void) {
  eg_store *s = open_store();
  fill(s, "u", "t", 6);
  /* one step of 6 keys: the two oldest checkpoints (3 keys each) */
  eg_txn *w;
  uint64_t ck = 0, wr = 0;
  int done = 0;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_thread_delete_step(w, "acme", "u", "t", 6, &ck, &wr, &done), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(done, 0);
  CU_ASSERT_EQUAL(ck, 2);
  CU_ASSERT_EQUAL(wr, 0);
  /* what is left: the four newest, each with both its writes */
  struct scan_log l;
  CU_ASSERT_STRING_EQUAL(scan(s, "u", "t", NULL, NULL, NULL, 0, &l), "t/sub/c005,t//c004,t/sub/c003,t//c002");
  eg_txn *r = eg_test_reader(s);
  const char *left[][2] = {{"sub", "c005"}, {"", "c004"}, {"sub", "c003"}, {"", "c002"}};
  for (size_t i = 0; i < 4; i++) {
    eg_ckpt_write_rec **wv;
    size_t n;
    CU_ASSERT_EQUAL(eg_store_checkpoint_writes_get(r, "acme", "u", "t", left[i][0], left[i][1], 100, &wv, &n),
                    EG_OK);
    CU_ASSERT_EQUAL(n, 2);
    eg_ckpt_writes_free(wv, n);
  }
  eg_store_reader_free(r);
  CU_ASSERT_EQUAL(delete_thread(s, "u", "t", 6, &ck, &wr) > 1, 1);
  CU_ASSERT_EQUAL(ck, 4);
  CU_ASSERT_EQUAL(wr, 12);
  eg_store_close(s);
  CU_ASSERT_EQUAL(db_keys("checkpoints") + db_keys("checkpoints_by_user") + db_keys("checkpoint_writes"), 0);
  eg_test_rmdir(tdir);
}

static void test_damaged_records(void) {
  eg_store *s = open_store();
  fill(s, "u", "thr-ok", 3);
  fill(s, "u", "thr-swap", 3);
  fill(s, "u", "thr-bad", 2);
  eg_store_close(s);
  /* thr-swap's c002 holds its c000's record (same namespace); thr-bad's
   * c001 does not decode */
  CU_ASSERT_EQUAL_FATAL(damage("thr-swap", "c002", NULL, "c000"), 1);
  CU_ASSERT_EQUAL_FATAL(damage("thr-bad", "c001", "\xff\xff\xff", NULL), 1);
  eg_store_opts o = {.map_size = (size_t)64 << 20};
  s = eg_test_store_open(tdir, &o);
  eg_txn *r = eg_test_reader(s);
  eg_ckpt_rec *rec;
  struct scan_log l;
  /* a record that is not the one its key or index entry names is damage,
   * on every path: exact get, newest, each scan */
  CU_ASSERT_EQUAL(eg_store_checkpoint_get(r, "acme", "u", "thr-swap", "", "c002", &rec), EG_ECORRUPT);
  CU_ASSERT_EQUAL(eg_store_checkpoint_get(r, "acme", "u", "thr-swap", "", NULL, &rec), EG_ECORRUPT);
  const char *threads[] = {"thr-swap", "thr-swap", NULL};
  const char *nss[] = {"", NULL, NULL};
  for (int m = 0; m < 3; m++) {
    memset(&l, 0, sizeof l);
    CU_ASSERT_EQUAL(eg_store_checkpoints_scan(r, "acme", "u", threads[m], nss[m], NULL, NULL, log_visit, &l),
                    EG_ECORRUPT);
  }
  memset(&l, 0, sizeof l);
  CU_ASSERT_EQUAL(eg_store_checkpoints_scan(r, "acme", "u", "thr-bad", NULL, NULL, NULL, log_visit, &l),
                  EG_ECORRUPT);
  eg_store_reader_free(r);
  /* DeleteThread removes damaged threads whole (it decodes nothing) */
  uint64_t ck, wr;
  delete_thread(s, "u", "thr-bad", 4, &ck, &wr);
  CU_ASSERT_EQUAL(ck, 2);
  CU_ASSERT_EQUAL(wr, 4);
  delete_thread(s, "u", "thr-swap", 4, &ck, &wr);
  CU_ASSERT_EQUAL(ck, 3);
  CU_ASSERT_EQUAL(wr, 6);
  CU_ASSERT_STRING_EQUAL(scan(s, "u", NULL, NULL, NULL, NULL, 0, &l), "thr-ok//c002,thr-ok/sub/c001,thr-ok//c000");
  eg_store_close(s);
  CU_ASSERT_EQUAL(db_keys("checkpoints"), 3);
  CU_ASSERT_EQUAL(db_keys("checkpoints_by_user"), 6);
  CU_ASSERT_EQUAL(db_keys("checkpoint_writes"), 6);
  eg_test_rmdir(tdir);
}

/* ---- server/json_terms.c ---------------------------------------------------------- */

/* eg_json_terms of json under a fresh keyring's blind context: the result,
 * the tokens into out (16 at most), the message into msg. */
static eg_keyring *kr;
static eg_blind_ctx ctx;

static eg_err terms(const char *json, uint64_t *out, size_t *n, char *msg, size_t msglen) {
  if (!kr) {
    char path[4200];
    const char *dir = eg_test_tmpdir();
    snprintf(path, sizeof path, "%s/keyring", dir);
    CU_ASSERT_EQUAL_FATAL(eg_keyring_create(path), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_keyring_load(path, &kr, msg, msglen), EG_OK);
    eg_test_rmdir(dir);
    CU_ASSERT_EQUAL_FATAL(eg_blind_begin(kr, "acme", &ctx), EG_OK);
  }
  msg[0] = 0;
  return eg_json_terms(&ctx, "meta", json, strlen(json), out, 16, n, msg, msglen);
}

/* json is refused, the message naming the field and holding want. */
static void refused(const char *json, const char *want) {
  uint64_t t[16];
  size_t n;
  char msg[256];
  CU_ASSERT_EQUAL(terms(json, t, &n, msg, sizeof msg), EG_EINVAL);
  if (!strstr(msg, "meta") || !strstr(msg, want))
    fprintf(stderr, "\n  %s: got \"%s\", want \"%s\"\n", json, msg, want);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "meta"));
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, want));
}

/* json is taken; its one token (or 0 if it has none). */
static uint64_t taken(const char *json) {
  uint64_t t[16];
  size_t n = 99;
  char msg[256];
  eg_err e = terms(json, t, &n, msg, sizeof msg);
  if (e) fprintf(stderr, "\n  %s: refused: %s\n", json, msg);
  CU_ASSERT_EQUAL_FATAL(e, EG_OK);
  CU_ASSERT(n <= 1);
  return n ? t[0] : 0;
}

static void test_json_strict(void) {
  /* what json-c takes but is not JSON: a strict parser (JSON.parse,
   * json.loads) of the stored text would throw */
  refused("{\"a\":NaN}", "not valid JSON");
  refused("{\"a\":-Infinity}", "not valid JSON");
  refused("{\"a\":1 /* x */}", "not valid JSON");
  refused("{'a':1}", "not valid JSON");
  refused("{\"a\":1,}", "not valid JSON");
  refused("{\"a\":[1,]}", "not valid JSON");
  refused("{\"a\":01}", "not valid JSON");
  refused("{\"a\":\"tab\there\"}", "control character");
  refused("{\"a\":\"\\x\"}", "bad escape");
  refused("{\"a\":\"\\u12g4\"}", "\\u escape");
  refused("{\"a\":1} x", "something follows");
  refused("{\"a\":", "ends too soon");
  refused("{\"a\":\"abc", "ends too soon");
  /* finite by the grammar, not as a double */
  refused("{\"a\":1e999}", "not finite");
  refused("{\"a\":[{\"b\":-1E400}]}", "not finite");
  /* json-c would clamp these (or make them U+FFFD): two different values
   * would hash alike */
  refused("{\"a\":99999999999999999999999999}", "past 64 bits");
  refused("{\"a\":18446744073709551616}", "past 64 bits");
  refused("{\"a\":-9223372036854775809}", "past 64 bits");
  CU_ASSERT_NOT_EQUAL(taken("{\"a\":18446744073709551615}"), taken("{\"a\":9223372036854775807}"));
  CU_ASSERT_NOT_EQUAL(taken("{\"a\":-9223372036854775808}"), 0);
  refused("{\"\\ud800\":1}", "lone surrogate");
  refused("{\"\\udc00\":1}", "lone surrogate");
  refused("{\"a\":\"\\ud800\\u0041\"}", "lone surrogate");
  CU_ASSERT_NOT_EQUAL(taken("{\"\\ud83d\\ude00\":1}"), 0);
  /* JSON, but not an object: said so, not "ends too soon" */
  refused("1", "must be a JSON object");
  refused("null", "must be a JSON object");
  refused(" true ", "must be a JSON object");
  refused("\"s\"", "must be a JSON object");
  refused("[{}]", "must be a JSON object");
  /* JSON's own forms are taken */
  CU_ASSERT_NOT_EQUAL(taken(" {\"a\" : -0.5e+3 }\r\n"), 0);
  CU_ASSERT_NOT_EQUAL(taken("{\"a\":[true,false,null,\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\",{}]}"), 0);
  CU_ASSERT_NOT_EQUAL(taken("{\"a\":1e308}"), 0);
  CU_ASSERT_EQUAL(taken("{}"), 0);
  CU_ASSERT_EQUAL(taken(""), 0);
  /* spacing does not matter; the value's type does */
  CU_ASSERT_EQUAL(taken("{\"a\":[1,2]}"), taken("{ \"a\" : [ 1 , 2 ] }"));
  CU_ASSERT_NOT_EQUAL(taken("{\"a\":1}"), taken("{\"a\":\"1\"}"));
}

static void test_json_nul_keys_and_depth(void) {
  /* json-c's keys are C strings: "a\u0000b" would hash as "a" */
  refused("{\"a\\u0000b\":1}", "\\u0000");
  refused("{\"\\u0000\":1}", "\\u0000");
  refused("{\"o\":{\"a\\u0000b\":1}}", "\\u0000");
  refused("{\"o\":[{\"a\\u0000\":1}]}", "\\u0000");
  /* in a value it is only a character: kept, and not "x" */
  CU_ASSERT_NOT_EQUAL(taken("{\"a\":\"x\\u0000y\"}"), taken("{\"a\":\"x\"}"));
  /* "\\u0000" is a backslash and "u0000", no NUL */
  CU_ASSERT_NOT_EQUAL(taken("{\"a\\\\u0000\":1}"), 0);
  /* 64 levels taken (the object is the first), 65 refused */
  char deep[256];
  for (int levels = 64; levels <= 65; levels++) {
    int k = snprintf(deep, sizeof deep, "{\"a\":");
    for (int i = 1; i < levels; i++) deep[k++] = '[';
    for (int i = 1; i < levels; i++) deep[k++] = ']';
    deep[k++] = '}';
    deep[k] = 0;
    if (levels == 64) {
      CU_ASSERT_NOT_EQUAL(taken(deep), 0);
    } else {
      refused(deep, "deeper than 64 levels");
    }
  }
}

/* The JSON tests seal nothing but derive blind keys: libsodium first. */
static int suite_init(void) { return eg_crypto_init() == EG_OK ? 0 : -1; }

static int suite_clean(void) {
  if (kr) eg_blind_end(&ctx);
  eg_keyring_free(kr);
  kr = NULL;
  return 0;
}

void eg_test_register_checkpoints(void) {
  CU_pSuite s = CU_add_suite("checkpoints", suite_init, suite_clean);
  CU_add_test(s, "put, get exact and newest, longest keys", test_put_get_newest);
  CU_add_test(s, "scans newest first: before, resume", test_scan_orders);
  CU_add_test(s, "pending writes: keep, replace, order", test_writes);
  CU_add_test(s, "delete thread: bounded, complete", test_delete_thread_bounded);
  CU_add_test(s, "DeleteUser erases checkpoints", test_delete_user_erases_checkpoints);
  CU_add_test(s, "delete thread: a partial delete leaves the newest whole",
              test_delete_thread_interrupted_keeps_newest_whole);
  CU_add_test(s, "damaged records: reads refuse, DeleteThread removes", test_damaged_records);
  CU_add_test(s, "json terms: strict JSON, objects only", test_json_strict);
  CU_add_test(s, "json terms: no NUL in keys, 64 levels", test_json_nul_keys_and_depth);
}
