/* storage/wal.c: the write-ahead log against real stores in temp dirs.
 * A primary-like store A is written through the normal storage API; its
 * log is read back with eg_store_wal_scan and applied to a second store B
 * with eg_store_wal_apply, as a replica does; then every data DB of the
 * two is compared key by key. Also: aborted sub txns leave no ops, apply
 * refuses gaps, repeats and older epochs, retention (trim) and epochs. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engram/storage/v1/wal.pb-c.h"
#include "storage/storage.h"
#include "suites.h"

#define MIB ((size_t)1 << 20)
#define TENANT "acme"

typedef Engram__Storage__V1__WalRecord wal_rec;
typedef Engram__Storage__V1__WalOp wal_op;

/* ---- helpers -------------------------------------------------------------- */

static char dir_a[4096], dir_b[4096];

static void setup(void) {
  snprintf(dir_a, sizeof dir_a, "%s", eg_test_tmpdir());
  snprintf(dir_b, sizeof dir_b, "%s", eg_test_tmpdir());
}

static void teardown(void) {
  eg_test_rmdir(dir_a);
  eg_test_rmdir(dir_b);
}

static eg_store *open_at(const char *dir) {
  eg_store_opts o = {.map_size = 16 * MIB};
  return eg_test_store_open(dir, &o);
}

static eg_session_rec session_rec(const char *sid, const char *user, int64_t create_us) {
  eg_session_rec r = ENGRAM__STORAGE__V1__SESSION_RECORD__INIT;
  r.session_id = (char *)sid;
  r.user_id = (char *)user;
  r.agent_id = (char *)"agent";
  r.create_time_us = create_us;
  r.update_time_us = create_us;
  return r;
}

/* A message whose content names it; client_id may be NULL. */
static eg_err put_message(eg_txn *w, const char *sid, uint64_t seq, const char *client_id) {
  char content[160]; /* an id (at most 128 bytes), "#", a seq */
  eg_message_rec m = ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
  int n = snprintf(content, sizeof content, "%s#%llu", sid, (unsigned long long)seq);
  m.seq = (int64_t)seq;
  m.role = 1;
  m.content_token.data = (uint8_t *)content;
  m.content_token.len = (size_t)n;
  m.client_message_id = (char *)(client_id ? client_id : "");
  return eg_store_message_put(w, TENANT, sid, &m);
}

/* One new session with messages 1..n in one write txn; returns its LSN. */
static uint64_t put_session_with(eg_store *s, const char *sid, int64_t create_us, int n) {
  eg_txn *w;
  uint64_t lsn = 0;
  eg_session_rec r = session_rec(sid, "u1", create_us);
  r.message_count = n;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_session_put(w, TENANT, &r, NULL), EG_OK);
  for (int q = 1; q <= n; q++) {
    char cid[32];
    snprintf(cid, sizeof cid, "c%d", q);
    CU_ASSERT_EQUAL_FATAL(put_message(w, sid, (uint64_t)q, q % 2 ? cid : NULL), EG_OK);
  }
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK);
  return lsn;
}

/* The log of a store, copied out: records[i] is LSN first + i. */
typedef struct {
  size_t n, cap;
  uint64_t first;
  ProtobufCBinaryData *recs;
  int gap;
} wal_copy;

static int collect_rec(void *arg, uint64_t lsn, const uint8_t *rec, size_t len) {
  wal_copy *c = arg;
  if (c->n == 0) c->first = lsn;
  if (lsn != c->first + c->n) c->gap = 1;
  if (c->n == c->cap) {
    c->cap = c->cap ? 2 * c->cap : 16;
    c->recs = realloc(c->recs, c->cap * sizeof *c->recs);
  }
  uint8_t *b = malloc(len ? len : 1);
  memcpy(b, rec, len);
  c->recs[c->n++] = (ProtobufCBinaryData){len, b};
  return 0;
}

static void wal_copy_free(wal_copy *c) {
  for (size_t i = 0; i < c->n; i++) free(c->recs[i].data);
  free(c->recs);
  memset(c, 0, sizeof *c);
}

static wal_copy read_log(eg_store *s, uint64_t from) {
  wal_copy c = {0};
  eg_txn *r;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_scan(r, from, collect_rec, &c), EG_OK);
  eg_store_reader_free(r);
  CU_ASSERT_FALSE(c.gap);
  return c;
}

static wal_rec *decode(const ProtobufCBinaryData *b) {
  wal_rec *r = engram__storage__v1__wal_record__unpack(NULL, b->len, b->data);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  return r;
}

/* Applies recs[from..to) of c in one write txn and commits. */
static eg_err apply_range(eg_store *s, const wal_copy *c, size_t from, size_t to) {
  eg_txn *w;
  eg_err e = eg_store_write_begin(s, &w);
  if (e) return e;
  for (size_t i = from; i < to && !e; i++) e = eg_store_wal_apply(w, c->recs[i].data, c->recs[i].len);
  if (e) {
    eg_store_write_abort(w);
    return e;
  }
  return eg_store_write_commit(w, NULL);
}

/* Every key and value of every data DB, as "db\0" klen k vlen v ... */
typedef struct {
  uint8_t *buf;
  size_t len, cap;
  size_t keys;
} dump;

static void dump_add(dump *d, const void *p, size_t n) {
  if (d->len + n > d->cap) {
    while (d->len + n > d->cap) d->cap = d->cap ? 2 * d->cap : 4096;
    d->buf = realloc(d->buf, d->cap);
  }
  memcpy(d->buf + d->len, p, n);
  d->len += n;
}

static void dump_kv(void *arg, const char *db, const void *k, size_t klen, const void *v,
                    size_t vlen) {
  dump *d = arg;
  uint32_t kl = (uint32_t)klen, vl = (uint32_t)vlen;
  dump_add(d, db, strlen(db) + 1);
  dump_add(d, &kl, sizeof kl);
  dump_add(d, k, klen);
  dump_add(d, &vl, sizeof vl);
  dump_add(d, v, vlen);
  d->keys++;
}

/* The data of s, and the LSN the read saw. */
static dump dump_store(eg_store *s, uint64_t *lsn) {
  dump d = {0};
  eg_txn *r;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(eg_store_visit_data(r, dump_kv, &d), EG_OK);
  if (lsn) CU_ASSERT_EQUAL(eg_store_txn_lsn(r, lsn), EG_OK);
  eg_store_reader_free(r);
  return d;
}

/* Asserts a and b hold the same data at the same LSN and epoch, and the
 * same log from `from` on. */
static void assert_same(eg_store *a, eg_store *b, uint64_t from) {
  uint64_t la = 0, lb = 0;
  dump da = dump_store(a, &la), db = dump_store(b, &lb);
  CU_ASSERT_EQUAL(la, lb);
  CU_ASSERT_EQUAL(eg_store_last_lsn(a), eg_store_last_lsn(b));
  CU_ASSERT_EQUAL(eg_store_epoch(a), eg_store_epoch(b));
  CU_ASSERT_EQUAL(da.keys, db.keys);
  CU_ASSERT_EQUAL(da.len, db.len);
  CU_ASSERT(da.len == db.len && memcmp(da.buf, db.buf, da.len) == 0);
  free(da.buf);
  free(db.buf);
  wal_copy wa = read_log(a, from), wb = read_log(b, from);
  CU_ASSERT_EQUAL(wa.n, wb.n);
  CU_ASSERT_EQUAL(wa.first, wb.first);
  for (size_t i = 0; i < wa.n && i < wb.n; i++) {
    CU_ASSERT_EQUAL(wa.recs[i].len, wb.recs[i].len);
    CU_ASSERT(wa.recs[i].len == wb.recs[i].len &&
              memcmp(wa.recs[i].data, wb.recs[i].data, wa.recs[i].len) == 0);
  }
  wal_copy_free(&wa);
  wal_copy_free(&wb);
}

/* How many ops of r touch db (with kind, or any kind if kind < 0). */
static size_t count_ops(const wal_rec *r, const char *db, int kind) {
  size_t n = 0;
  for (size_t i = 0; i < r->n_ops; i++)
    if (!strcmp(r->ops[i]->db, db) && (kind < 0 || (int)r->ops[i]->kind == kind)) n++;
  return n;
}

/* An encoded record with one op: a put in `sessions` of a SessionRecord
 * for sid, under its real key (u8len tenant | session_id). */
static ProtobufCBinaryData make_rec(uint64_t lsn, uint64_t epoch, const char *sid) {
  uint8_t key[256];
  size_t tl = strlen(TENANT), sl = strlen(sid);
  key[0] = (uint8_t)tl;
  memcpy(key + 1, TENANT, tl);
  memcpy(key + 1 + tl, sid, sl);
  eg_session_rec s = session_rec(sid, "u9", 42);
  uint8_t val[256];
  size_t vlen = engram__storage__v1__session_record__pack(&s, val);
  wal_op op = ENGRAM__STORAGE__V1__WAL_OP__INIT;
  op.db = (char *)"sessions";
  op.kind = ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT;
  op.key = (ProtobufCBinaryData){1 + tl + sl, key};
  op.value = (ProtobufCBinaryData){vlen, val};
  wal_op *ops[] = {&op};
  wal_rec r = ENGRAM__STORAGE__V1__WAL_RECORD__INIT;
  r.lsn = lsn;
  r.epoch = epoch;
  r.time_us = 1;
  r.n_ops = 1;
  r.ops = ops;
  ProtobufCBinaryData out = {engram__storage__v1__wal_record__get_packed_size(&r), NULL};
  out.data = malloc(out.len);
  engram__storage__v1__wal_record__pack(&r, out.data);
  return out;
}

/* 1 if session sid exists as seen by t. */
static int has_session(eg_txn *t, const char *sid) {
  eg_session_rec *r = NULL;
  eg_err e = eg_store_session_get(t, TENANT, sid, &r);
  CU_ASSERT(e == EG_OK || e == EG_ENOTFOUND);
  if (r) engram__storage__v1__session_record__free_unpacked(r, NULL);
  return e == EG_OK;
}

static int has_session_now(eg_store *s, const char *sid) {
  eg_txn *r;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  int found = has_session(r, sid);
  eg_store_reader_free(r);
  return found;
}

/* ---- tests ---------------------------------------------------------------- */

/* Session puts, message puts (with idempotency keys), an update, deletes
 * with their prefix deletes, a write and a delete in one txn: B, fed A's
 * log, ends with the same data, LSN, epoch and log. */
static void test_round_trip(void) {
  setup();
  eg_store *a = open_at(dir_a), *b = open_at(dir_b);
  eg_txn *w;
  uint64_t lsn;

  CU_ASSERT_EQUAL(put_session_with(a, "s1", 1000, 5), 1);
  CU_ASSERT_EQUAL(put_session_with(a, "s2", 2000, 3), 2);
  CU_ASSERT_EQUAL(put_session_with(a, "s10", 3000, 4), 3);

  /* 4: update s1 (not new) and two more messages. */
  eg_session_rec r1 = session_rec("s1", "u1", 1000);
  r1.message_count = 7;
  r1.update_time_us = 5000;
  eg_session_rec *prev = NULL;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(a, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_session_get(w, TENANT, "s1", &prev), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_put(w, TENANT, &r1, prev), EG_OK);
  engram__storage__v1__session_record__free_unpacked(prev, NULL);
  CU_ASSERT_EQUAL(put_message(w, "s1", 6, "c6"), EG_OK);
  CU_ASSERT_EQUAL(put_message(w, "s1", 7, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK);
  CU_ASSERT_EQUAL(lsn, 4);

  /* 5: delete s1 (messages and idempotency keys by prefix); s10, whose
   * id starts with "s1", must keep everything. */
  uint64_t deleted = 0;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(a, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_delete(w, TENANT, &r1, &deleted), EG_OK);
  CU_ASSERT_EQUAL(deleted, 7);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK);
  CU_ASSERT_EQUAL(lsn, 5);

  /* 6: one txn appends to s2 and then deletes it: order matters. */
  eg_session_rec r2 = session_rec("s2", "u1", 2000);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(a, &w), EG_OK);
  CU_ASSERT_EQUAL(put_message(w, "s2", 4, "late"), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_delete(w, TENANT, &r2, &deleted), EG_OK);
  CU_ASSERT_EQUAL(deleted, 4);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK);

  /* 7: a new session through a committed sub txn. */
  eg_txn *sub;
  eg_session_rec r3 = session_rec("s3", "u2", 7000);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(a, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_begin(w, &sub), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_put(sub, TENANT, &r3, NULL), EG_OK);
  CU_ASSERT_EQUAL(put_message(sub, "s3", 1, "x"), EG_OK);
  CU_ASSERT_EQUAL(eg_store_sub_commit(sub), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK);
  CU_ASSERT_EQUAL(lsn, 7);

  /* The log holds 1..7 at epoch 1; the deletes went as DEL_PREFIX. */
  wal_copy log = read_log(a, 1);
  CU_ASSERT_EQUAL_FATAL(log.n, 7);
  CU_ASSERT_EQUAL(log.first, 1);
  int64_t prev_time = 0;
  for (size_t i = 0; i < log.n; i++) {
    wal_rec *r = decode(&log.recs[i]);
    CU_ASSERT_EQUAL(r->lsn, i + 1);
    CU_ASSERT_EQUAL(r->epoch, 1);
    CU_ASSERT(r->time_us >= prev_time && r->time_us > 0);
    prev_time = r->time_us;
    CU_ASSERT(r->n_ops > 0);
    if (i == 0) {
      /* session, its index entry, 5 messages, 3 idempotency keys */
      CU_ASSERT_EQUAL(count_ops(r, "sessions", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT), 1);
      CU_ASSERT_EQUAL(count_ops(r, "sessions_by_user", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT), 1);
      CU_ASSERT_EQUAL(count_ops(r, "messages", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT), 5);
      CU_ASSERT_EQUAL(count_ops(r, "idempotency", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT), 3);
    }
    if (i == 4) {
      CU_ASSERT_EQUAL(count_ops(r, "sessions", ENGRAM__STORAGE__V1__WAL_OP__KIND__DEL), 1);
      CU_ASSERT_EQUAL(count_ops(r, "messages", ENGRAM__STORAGE__V1__WAL_OP__KIND__DEL_PREFIX), 1);
      CU_ASSERT_EQUAL(count_ops(r, "idempotency", ENGRAM__STORAGE__V1__WAL_OP__KIND__DEL_PREFIX), 1);
      CU_ASSERT_EQUAL(count_ops(r, "messages", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT), 0);
    }
    engram__storage__v1__wal_record__free_unpacked(r, NULL);
  }

  /* B: records 1..3 one txn each, then 4..7 in one txn (a batch). */
  for (size_t i = 0; i < 3; i++) CU_ASSERT_EQUAL(apply_range(b, &log, i, i + 1), EG_OK);
  CU_ASSERT_EQUAL(eg_store_last_lsn(b), 3);
  CU_ASSERT_EQUAL(apply_range(b, &log, 3, 7), EG_OK);
  CU_ASSERT_EQUAL(eg_store_last_lsn(b), 7);
  assert_same(a, b, 1);
  CU_ASSERT_FALSE(has_session_now(b, "s1"));
  CU_ASSERT_FALSE(has_session_now(b, "s2"));
  CU_ASSERT_TRUE(has_session_now(b, "s10"));
  CU_ASSERT_TRUE(has_session_now(b, "s3"));
  uint64_t seq = 0;
  eg_txn *rd;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(b, &rd), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(rd), EG_OK);
  CU_ASSERT_EQUAL(eg_store_idem_get(rd, TENANT, "s10", "c3", &seq), EG_OK);
  CU_ASSERT_EQUAL(seq, 3);
  CU_ASSERT_EQUAL(eg_store_idem_get(rd, TENANT, "s1", "c1", &seq), EG_ENOTFOUND);
  eg_store_reader_free(rd);

  /* B survives a restart at its applied LSN and goes on from there. */
  eg_store_close(b);
  b = open_at(dir_b);
  CU_ASSERT_EQUAL(eg_store_last_lsn(b), 7);
  CU_ASSERT_EQUAL(put_session_with(a, "s4", 8000, 2), 8);
  wal_copy more = read_log(a, 8);
  CU_ASSERT_EQUAL_FATAL(more.n, 1);
  CU_ASSERT_EQUAL(apply_range(b, &more, 0, 1), EG_OK);
  assert_same(a, b, 1);

  wal_copy_free(&more);
  wal_copy_free(&log);
  eg_store_close(a);
  eg_store_close(b);
  teardown();
}

/* Ops of aborted sub txns never reach the log, at any depth. */
static void test_sub_abort(void) {
  setup();
  eg_store *a = open_at(dir_a), *b = open_at(dir_b);
  eg_txn *w, *s1, *s2;
  uint64_t lsn;
  CU_ASSERT_EQUAL(put_session_with(a, "s1", 1000, 1), 1);

  /* sub 1 (commits) holds sub 2 (aborts); sub 3 aborts. */
  eg_session_rec kept = session_rec("kept", "u1", 2000);
  eg_session_rec gone2 = session_rec("gone2", "u1", 3000);
  eg_session_rec gone3 = session_rec("gone3", "u1", 4000);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(a, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_begin(w, &s1), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_put(s1, TENANT, &kept, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_begin(s1, &s2), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_put(s2, TENANT, &gone2, NULL), EG_OK);
  CU_ASSERT_EQUAL(put_message(s2, "s1", 2, "g2"), EG_OK);
  eg_store_sub_abort(s2);
  CU_ASSERT_EQUAL(eg_store_sub_commit(s1), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_begin(w, &s1), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_put(s1, TENANT, &gone3, NULL), EG_OK);
  CU_ASSERT_EQUAL(put_message(s1, "s1", 3, "g3"), EG_OK);
  eg_store_sub_abort(s1);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK);
  CU_ASSERT_EQUAL(lsn, 2);

  /* A txn whose only sub aborted: a record with no ops. */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(a, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_begin(w, &s1), EG_OK);
  CU_ASSERT_EQUAL(put_message(s1, "s1", 4, "g4"), EG_OK);
  eg_store_sub_abort(s1);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK);
  CU_ASSERT_EQUAL(lsn, 3);

  wal_copy log = read_log(a, 2);
  CU_ASSERT_EQUAL_FATAL(log.n, 2);
  wal_rec *r = decode(&log.recs[0]);
  CU_ASSERT_EQUAL(r->lsn, 2);
  /* Just kept's session and its two index entries (it has no expiry, so
   * no sweep entry), and the tenant's usage row: kept's bytes alone. */
  CU_ASSERT_EQUAL(r->n_ops, 4);
  CU_ASSERT_EQUAL(count_ops(r, "tenant_usage", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT), 1);
  CU_ASSERT_EQUAL(count_ops(r, "sessions", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT), 1);
  CU_ASSERT_EQUAL(count_ops(r, "sessions_by_user", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT), 1);
  CU_ASSERT_EQUAL(count_ops(r, "sessions_by_activity", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT), 1);
  CU_ASSERT_EQUAL(count_ops(r, "messages", -1), 0);
  CU_ASSERT_EQUAL(count_ops(r, "idempotency", -1), 0);
  for (size_t i = 0; i < r->n_ops; i++)
    CU_ASSERT_PTR_NULL(memmem(r->ops[i]->key.data, r->ops[i]->key.len, "gone", 4));
  engram__storage__v1__wal_record__free_unpacked(r, NULL);
  r = decode(&log.recs[1]);
  CU_ASSERT_EQUAL(r->lsn, 3);
  CU_ASSERT_EQUAL(r->n_ops, 0);
  engram__storage__v1__wal_record__free_unpacked(r, NULL);

  /* The log replays to the same store. */
  wal_copy all = read_log(a, 1);
  CU_ASSERT_EQUAL(apply_range(b, &all, 0, all.n), EG_OK);
  assert_same(a, b, 1);
  CU_ASSERT_TRUE(has_session_now(b, "kept"));
  CU_ASSERT_FALSE(has_session_now(b, "gone2"));
  CU_ASSERT_FALSE(has_session_now(b, "gone3"));

  wal_copy_free(&all);
  wal_copy_free(&log);
  eg_store_close(a);
  eg_store_close(b);
  teardown();
}

/* Gaps, repeats and older epochs are EG_EPRECOND, and nothing of the
 * refused record lands, not even in the open txn; the txn stays usable. */
static void test_apply_refusals(void) {
  setup();
  eg_store *a = open_at(dir_a), *b = open_at(dir_b);
  eg_txn *w;
  uint64_t lsn;
  for (int i = 0; i < 4; i++) {
    char sid[16];
    snprintf(sid, sizeof sid, "s%d", i + 1);
    put_session_with(a, sid, 1000 * (i + 1), 2);
  }
  wal_copy log = read_log(a, 1); /* LSNs 1..4 */
  CU_ASSERT_EQUAL_FATAL(log.n, 4);
  CU_ASSERT_EQUAL(apply_range(b, &log, 0, 2), EG_OK);

  /* In one txn: a gap (4 after 2), a repeat (2), then 3 fits; then 3
   * again and 2 are repeats, 4 fits. */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(b, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_apply(w, log.recs[3].data, log.recs[3].len), EG_EPRECOND);
  CU_ASSERT_FALSE(has_session(w, "s4"));
  CU_ASSERT_EQUAL(eg_store_wal_apply(w, log.recs[1].data, log.recs[1].len), EG_EPRECOND);
  CU_ASSERT_EQUAL(eg_store_wal_apply(w, log.recs[0].data, log.recs[0].len), EG_EPRECOND);
  CU_ASSERT_EQUAL(eg_store_wal_apply(w, log.recs[2].data, log.recs[2].len), EG_OK);
  CU_ASSERT_TRUE(has_session(w, "s3"));
  CU_ASSERT_EQUAL(eg_store_wal_apply(w, log.recs[2].data, log.recs[2].len), EG_EPRECOND);
  CU_ASSERT_EQUAL(eg_store_wal_apply(w, log.recs[1].data, log.recs[1].len), EG_EPRECOND);
  CU_ASSERT_FALSE(has_session(w, "s4"));
  CU_ASSERT_EQUAL(eg_store_wal_apply(w, log.recs[3].data, log.recs[3].len), EG_OK);
  CU_ASSERT_TRUE(has_session(w, "s4"));
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK);
  CU_ASSERT_EQUAL(lsn, 4);
  assert_same(a, b, 1);

  /* In a fresh txn: a repeat of the last applied, and one far ahead. */
  CU_ASSERT_EQUAL(apply_range(b, &log, 3, 4), EG_EPRECOND);
  ProtobufCBinaryData far = make_rec(9, 1, "far");
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(b, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_apply(w, far.data, far.len), EG_EPRECOND);
  CU_ASSERT_FALSE(has_session(w, "far"));
  eg_store_write_abort(w);
  free(far.data);

  /* Epochs: B moves to epoch 3 (a promotion somewhere); then a record of
   * epoch 2 is refused, in a fresh txn and after an epoch-3 record in
   * the same txn; epoch 3 and a later epoch 4 are taken. */
  ProtobufCBinaryData e3 = make_rec(5, 3, "e3");
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(b, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_apply(w, e3.data, e3.len), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK);
  CU_ASSERT_EQUAL(lsn, 5);
  CU_ASSERT_EQUAL(eg_store_epoch(b), 3);

  ProtobufCBinaryData old = make_rec(6, 2, "old"), old1 = make_rec(6, 1, "old");
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(b, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_apply(w, old.data, old.len), EG_EPRECOND);
  CU_ASSERT_EQUAL(eg_store_wal_apply(w, old1.data, old1.len), EG_EPRECOND);
  CU_ASSERT_FALSE(has_session(w, "old"));
  eg_store_write_abort(w);
  CU_ASSERT_EQUAL(eg_store_last_lsn(b), 5);

  ProtobufCBinaryData e3b = make_rec(6, 3, "e3b"), old7 = make_rec(7, 2, "old7"),
                      e4 = make_rec(7, 4, "e4"), e3c = make_rec(8, 3, "e3c");
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(b, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_apply(w, e3b.data, e3b.len), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_apply(w, old7.data, old7.len), EG_EPRECOND);
  CU_ASSERT_FALSE(has_session(w, "old7"));
  CU_ASSERT_EQUAL(eg_store_wal_apply(w, e4.data, e4.len), EG_OK);
  /* After epoch 4 in this txn, epoch 3 is the older one. */
  CU_ASSERT_EQUAL(eg_store_wal_apply(w, e3c.data, e3c.len), EG_EPRECOND);
  CU_ASSERT_FALSE(has_session(w, "e3c"));
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK);
  CU_ASSERT_EQUAL(lsn, 7);
  CU_ASSERT_EQUAL(eg_store_epoch(b), 4);
  CU_ASSERT_TRUE(has_session_now(b, "e3b"));
  CU_ASSERT_TRUE(has_session_now(b, "e4"));
  CU_ASSERT_FALSE(has_session_now(b, "old7"));
  /* The epoch survives a restart. */
  eg_store_close(b);
  b = open_at(dir_b);
  CU_ASSERT_EQUAL(eg_store_epoch(b), 4);
  CU_ASSERT_EQUAL(eg_store_last_lsn(b), 7);
  CU_ASSERT_EQUAL(apply_range(b, &(wal_copy){.n = 1, .recs = &e3c}, 0, 1), EG_EPRECOND);
  free(e3.data);
  free(old.data);
  free(old1.data);
  free(e3b.data);
  free(old7.data);
  free(e4.data);
  free(e3c.data);

  /* Not a record, or a DB nobody has: EG_ECORRUPT. */
  ProtobufCBinaryData bad = make_rec(8, 4, "bad");
  uint8_t *p = memmem(bad.data, bad.len, "sessions", 8);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  memcpy(p, "sessionz", 8);
  uint8_t junk[] = {0xff, 0xff, 0xff};
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(b, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_apply(w, junk, sizeof junk), EG_ECORRUPT);
  CU_ASSERT_EQUAL(eg_store_wal_apply(w, bad.data, bad.len), EG_ECORRUPT);
  eg_store_write_abort(w);
  free(bad.data);

  /* A txn with local writes takes no log records. */
  ProtobufCBinaryData next = make_rec(8, 4, "next");
  eg_session_rec loc = session_rec("local", "u1", 1);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(b, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_put(w, TENANT, &loc, NULL), EG_OK);
  CU_ASSERT_NOT_EQUAL(eg_store_wal_apply(w, next.data, next.len), EG_OK);
  CU_ASSERT_FALSE(has_session(w, "next"));
  eg_store_write_abort(w);
  free(next.data);
  CU_ASSERT_EQUAL(eg_store_last_lsn(b), 7);

  wal_copy_free(&log);
  eg_store_close(a);
  eg_store_close(b);
  teardown();
}

/* Retention: trim below an LSN, at most max records, never the rest;
 * epoch_at of a trimmed (or future) LSN is EG_ENOTFOUND. */
static void test_trim(void) {
  setup();
  eg_store *a = open_at(dir_a);
  eg_txn *w, *r;
  size_t n = 99;
  uint64_t first = 0, epoch = 0;
  int64_t t0 = 0;
  for (int i = 1; i <= 20; i++) {
    char sid[16];
    snprintf(sid, sizeof sid, "s%d", i);
    CU_ASSERT_EQUAL(put_session_with(a, sid, i, 1), (uint64_t)i);
  }
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(a, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_first(r, &first, &t0), EG_OK);
  CU_ASSERT_EQUAL(first, 1);
  CU_ASSERT(t0 > 0);
  eg_store_reader_end(r);

  /* By LSN bound: 1..5 go. */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(a, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_trim(w, 6, 100, &n), EG_OK);
  CU_ASSERT_EQUAL(n, 5);
  /* Nothing left below 6. */
  CU_ASSERT_EQUAL(eg_store_wal_trim(w, 6, 100, &n), EG_OK);
  CU_ASSERT_EQUAL(n, 0);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK); /* LSN 21 */

  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_first(r, &first, NULL), EG_OK);
  CU_ASSERT_EQUAL(first, 6);
  CU_ASSERT_EQUAL(eg_store_wal_epoch_at(r, 5, &epoch, NULL, NULL), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_store_wal_epoch_at(r, 1, &epoch, NULL, NULL), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_store_wal_epoch_at(r, 6, &epoch, NULL, NULL), EG_OK);
  CU_ASSERT_EQUAL(epoch, 1);
  CU_ASSERT_EQUAL(eg_store_wal_epoch_at(r, 22, &epoch, NULL, NULL), EG_ENOTFOUND);
  eg_store_reader_end(r);
  wal_copy log = read_log(a, 1); /* a scan from a trimmed LSN starts at the first kept */
  CU_ASSERT_EQUAL(log.first, 6);
  CU_ASSERT_EQUAL(log.n, 16);
  wal_copy_free(&log);

  /* By count: at most 3 of those below 100. */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(a, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_trim(w, 100, 3, &n), EG_OK);
  CU_ASSERT_EQUAL(n, 3);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK); /* LSN 22 */
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_first(r, &first, NULL), EG_OK);
  CU_ASSERT_EQUAL(first, 9);
  CU_ASSERT_EQUAL(eg_store_wal_epoch_at(r, 8, &epoch, NULL, NULL), EG_ENOTFOUND);
  eg_store_reader_end(r);

  /* An aborted trim keeps everything. */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(a, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_trim(w, 1000, 1000, &n), EG_OK);
  CU_ASSERT_EQUAL(n, 14); /* 9..22 */
  eg_store_write_abort(w);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_first(r, &first, NULL), EG_OK);
  CU_ASSERT_EQUAL(first, 9);
  eg_store_reader_end(r);

  /* Everything: the log is empty until the next commit, which starts it
   * again at the next LSN (LSNs never restart). */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(a, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_trim(w, UINT64_MAX, SIZE_MAX, &n), EG_OK);
  CU_ASSERT_EQUAL(n, 14);
  CU_ASSERT_EQUAL(eg_store_wal_trim(w, UINT64_MAX, SIZE_MAX, NULL), EG_OK);
  /* The commit's own record comes after the trim and stays. */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK); /* LSN 23 */
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_first(r, &first, NULL), EG_OK);
  CU_ASSERT_EQUAL(first, 23);
  eg_store_reader_end(r);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(a, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_trim(w, UINT64_MAX, SIZE_MAX, &n), EG_OK);
  CU_ASSERT_EQUAL(n, 1);
  eg_store_write_abort(w);
  CU_ASSERT_EQUAL(put_session_with(a, "after", 99, 1), 24);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_first(r, &first, NULL), EG_OK);
  CU_ASSERT_EQUAL(first, 23);
  eg_store_reader_end(r);
  eg_store_reader_free(r);

  /* An empty store cannot start from a log that no longer begins at 1:
   * the first record kept is a gap for it (a replica needs a snapshot). */
  eg_store *b = open_at(dir_b);
  log = read_log(a, 1);
  CU_ASSERT_EQUAL(log.first, 23);
  CU_ASSERT_EQUAL(apply_range(b, &log, 0, log.n), EG_EPRECOND);
  CU_ASSERT_EQUAL(eg_store_last_lsn(b), 0);
  wal_copy_free(&log);
  eg_store_close(b);

  eg_store_close(a);
  teardown();
}

/* set_epoch: only upward; the commit's record and every later one carry
 * the new epoch, which survives a restart; older records keep theirs. */
/* An erasure's record says so; its LSN becomes the floor below which the
 * log must go, on the primary (kept across a restart) and on a replica
 * that applies it. Only a committed sub txn's mark counts. */
static void test_erasure(void) {
  setup();
  eg_store *a = open_at(dir_a), *b = open_at(dir_b);
  eg_txn *w, *sub;
  uint64_t lsn;
  put_session_with(a, "s1", 1, 1); /* 1 */
  CU_ASSERT_EQUAL(eg_store_erase_floor(a), 0);

  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(a, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_begin(w, &sub), EG_OK);
  eg_store_mark_erasure(sub);
  eg_store_sub_abort(sub);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK); /* 2: not an erasure */
  CU_ASSERT_EQUAL(eg_store_erase_floor(a), 0);

  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(a, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_begin(w, &sub), EG_OK);
  eg_store_mark_erasure(sub);
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_commit(sub), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK); /* 3 */
  CU_ASSERT_EQUAL(lsn, 3);
  CU_ASSERT_EQUAL(eg_store_erase_floor(a), 3);
  put_session_with(a, "s2", 2, 1); /* 4 */

  wal_copy log = read_log(a, 1);
  CU_ASSERT_EQUAL_FATAL(log.n, 4);
  for (size_t i = 0; i < log.n; i++) {
    wal_rec *rec = decode(&log.recs[i]);
    CU_ASSERT_EQUAL(rec->erasure, i == 2);
    engram__storage__v1__wal_record__free_unpacked(rec, NULL);
  }
  eg_store_close(a);
  a = open_at(dir_a);
  CU_ASSERT_EQUAL(eg_store_erase_floor(a), 3);

  CU_ASSERT_EQUAL(apply_range(b, &log, 0, 2), EG_OK);
  CU_ASSERT_EQUAL(eg_store_erase_floor(b), 0);
  CU_ASSERT_EQUAL(apply_range(b, &log, 2, 3), EG_OK);
  CU_ASSERT_EQUAL(eg_store_erase_floor(b), 3);
  CU_ASSERT_EQUAL(apply_range(b, &log, 3, log.n), EG_OK);
  assert_same(a, b, 1);
  wal_copy_free(&log);
  eg_store_close(a);
  eg_store_close(b);
  teardown();
}

static void test_set_epoch(void) {
  setup();
  eg_store *a = open_at(dir_a), *b = open_at(dir_b);
  eg_txn *w, *r;
  uint64_t lsn, epoch = 0;
  CU_ASSERT_EQUAL(eg_store_epoch(a), 1);
  put_session_with(a, "s1", 1, 1); /* 1 */
  put_session_with(a, "s2", 2, 1); /* 2 */

  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(a, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_set_epoch(w, 1), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_store_set_epoch(w, 0), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_store_set_epoch(w, 2), EG_OK);
  CU_ASSERT_EQUAL(eg_store_epoch(a), 1); /* not before the commit */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK);
  CU_ASSERT_EQUAL(lsn, 3);
  CU_ASSERT_EQUAL(eg_store_epoch(a), 2);
  put_session_with(a, "s3", 3, 1); /* 4 */

  /* An aborted set_epoch changes nothing. */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(a, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_set_epoch(w, 9), EG_OK);
  eg_store_write_abort(w);
  CU_ASSERT_EQUAL(eg_store_epoch(a), 2);

  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(a, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  const uint64_t want[] = {0, 1, 1, 2, 2};
  for (uint64_t l = 1; l <= 4; l++) {
    CU_ASSERT_EQUAL(eg_store_wal_epoch_at(r, l, &epoch, NULL, NULL), EG_OK);
    CU_ASSERT_EQUAL(epoch, want[l]);
  }
  eg_store_reader_free(r);
  wal_copy log = read_log(a, 1);
  CU_ASSERT_EQUAL_FATAL(log.n, 4);
  for (size_t i = 0; i < log.n; i++) {
    wal_rec *rec = decode(&log.recs[i]);
    CU_ASSERT_EQUAL(rec->epoch, want[i + 1]);
    engram__storage__v1__wal_record__free_unpacked(rec, NULL);
  }

  /* Restart: epoch 2 stays, and the next record carries it. */
  eg_store_close(a);
  a = open_at(dir_a);
  CU_ASSERT_EQUAL(eg_store_epoch(a), 2);
  put_session_with(a, "s4", 4, 1); /* 5 */
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(a, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_epoch_at(r, 5, &epoch, NULL, NULL), EG_OK);
  CU_ASSERT_EQUAL(epoch, 2);
  eg_store_reader_free(r);

  /* A replica fed this log follows the epoch change. */
  wal_copy_free(&log);
  log = read_log(a, 1);
  CU_ASSERT_EQUAL(apply_range(b, &log, 0, 2), EG_OK);
  CU_ASSERT_EQUAL(eg_store_epoch(b), 1);
  CU_ASSERT_EQUAL(apply_range(b, &log, 2, log.n), EG_OK);
  CU_ASSERT_EQUAL(eg_store_epoch(b), 2);
  assert_same(a, b, 1);

  wal_copy_free(&log);
  eg_store_close(a);
  eg_store_close(b);
  teardown();
}

/* eg_store_message_put_len is what eg_store_message_put adds to the log
 * record, exactly (ForkSession bounds its one record with it): with and
 * without a client id, values and keys past one-byte varint lengths. */
static void test_message_put_len(void) {
  setup();
  eg_store *a = open_at(dir_a);
  char sid[129], cid[129], content[300];
  memset(sid, 's', 128), sid[128] = '\0';
  memset(cid, 'c', 128), cid[128] = '\0';
  memset(content, 'x', sizeof content);
  put_session_with(a, sid, 1, 1); /* message 1: later ones move no sweep entry */
  eg_message_rec m[2];
  size_t want = 0;
  for (int i = 0; i < 2; i++) {
    m[i] = (eg_message_rec)ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
    m[i].seq = 2 + i;
    m[i].role = 1;
    m[i].create_time_us = 2;
    m[i].content_token = (ProtobufCBinaryData){sizeof content, (uint8_t *)content};
    m[i].client_message_id = i ? cid : (char *)"";
    size_t len = 0;
    CU_ASSERT_EQUAL(eg_store_message_put_len(a, TENANT, sid, &m[i], &len), EG_OK);
    want += len;
  }
  eg_txn *w;
  uint64_t lsn = 0;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(a, &w), EG_OK);
  for (int i = 0; i < 2; i++) CU_ASSERT_EQUAL(eg_store_message_put(w, TENANT, sid, &m[i]), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK);
  wal_copy log = read_log(a, lsn);
  CU_ASSERT_EQUAL_FATAL(log.n, 1);
  wal_rec *r = decode(&log.recs[0]);
  /* two messages, one idempotency key, and the commit's tenant_usage row
   * (one per tenant and record, not part of any put's length) */
  CU_ASSERT_EQUAL_FATAL(r->n_ops, 4);
  CU_ASSERT_EQUAL(count_ops(r, "tenant_usage", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT), 1);
  size_t usage_op = 0;
  for (size_t i = 0; i < r->n_ops; i++)
    if (strcmp(r->ops[i]->db, "tenant_usage") == 0) {
      size_t n = engram__storage__v1__wal_op__get_packed_size(r->ops[i]);
      usage_op = 1 + (n >= 128 ? 2 : 1) + n;
    }
  r->n_ops = 0; /* what the record holds besides its ops */
  CU_ASSERT_EQUAL(log.recs[0].len - protobuf_c_message_get_packed_size(&r->base) - usage_op, want);
  r->n_ops = 4;
  engram__storage__v1__wal_record__free_unpacked(r, NULL);
  /* An id the keys refuse. */
  size_t len = 0;
  sid[0] = '\0';
  CU_ASSERT_EQUAL(eg_store_message_put_len(a, TENANT, sid, &m[0], &len), EG_EINVAL);
  wal_copy_free(&log);
  eg_store_close(a);
  teardown();
}

void eg_test_register_wal(void) {
  CU_pSuite s = CU_add_suite("wal", NULL, NULL);
  CU_add_test(s, "encode/apply round trip", test_round_trip);
  CU_add_test(s, "aborted sub txns leave no ops", test_sub_abort);
  CU_add_test(s, "apply refuses gaps, repeats, older epochs", test_apply_refusals);
  CU_add_test(s, "trim by LSN and count; epoch_at trimmed", test_trim);
  CU_add_test(s, "set_epoch", test_set_epoch);
  CU_add_test(s, "erasure floor", test_erasure);
  CU_add_test(s, "message_put_len is the log bytes of a message put", test_message_put_len);
}
