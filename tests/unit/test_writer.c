/* writer: group commit over a real store in a temp dir. A "gate" item
 * holds the writer inside its apply while the test queues more items, so
 * which items share a batch is decided by the test, not by timing. Every
 * wait is bounded (WAIT_S) and fails the test when the bound passes. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "server/writer.h"
#include "storage/storage.h"
#include "suites.h"

#define MIB ((size_t)1 << 20)
/* Bound on any one wait for the writer thread: far above what a loaded
 * machine needs, only there so a broken writer fails instead of hanging. */
#define WAIT_S 60
#define TENANT "t"

static char tdir[4096];
static eg_store *store;
static eg_writer *writer;

/* Guards every field below and the items' counters; signalled on change. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

/* Tests keep these static: after a failed assertion returns early, the
 * writer thread may still hold them. */
typedef struct test_item {
  eg_write_item item;
  const char *sid;       /* the session this item creates (NULL: none) */
  const char *counter;   /* a session whose message_count it increments */
  size_t blob;           /* bytes of message content it writes under sid */
  eg_err fail;           /* returned by apply after its writes (EG_OK: none) */
  int steps;             /* continuations: done resubmits until step == steps */
  /* written by the writer thread, read under mu */
  int applies, dones, step;
  eg_err err;
  uint64_t lsn[8]; /* lsn of each done (steps + 1 at most) */
  uint64_t durable[8], batches[8]; /* eg_store_last_lsn and batches() at each done */
  char why[256];   /* the writer's message for a failure of its own */
} test_item;

static void setup(void) { snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir()); }
static void teardown(void) { eg_test_rmdir(tdir); }

static void start_opts(size_t map_size, int defer_meta_sync) {
  eg_store_opts o = {.map_size = map_size, .defer_meta_sync = defer_meta_sync};
  store = eg_test_store_open(tdir, &o);
  CU_ASSERT_EQUAL_FATAL(eg_writer_start(store, NULL, NULL, &writer, NULL, 0), EG_OK);
}

static void start(size_t map_size) { start_opts(map_size, 0); }

static void stop(void) {
  eg_writer_stop(writer);
  eg_store_close(store);
  writer = NULL;
  store = NULL;
}

static uint64_t batches(void) {
  uint64_t b, i;
  eg_writer_stats(writer, &b, &i);
  return b;
}

/* Waits (bounded) until *v >= want; returns 0, or -1 at the bound. */
static int wait_for(const int *v, int want) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += WAIT_S;
  int rc = 0;
  pthread_mutex_lock(&mu);
  while (*v < want && rc == 0) rc = pthread_cond_timedwait(&cv, &mu, &until);
  int ok = *v >= want;
  pthread_mutex_unlock(&mu);
  return ok ? 0 : -1;
}

static eg_session_rec session_rec(const char *sid) {
  eg_session_rec r = ENGRAM__STORAGE__V1__SESSION_RECORD__INIT;
  r.session_id = (char *)sid;
  r.user_id = (char *)"u";
  r.agent_id = (char *)"a";
  return r;
}

/* ---- items ----------------------------------------------------------------- */

static eg_err item_apply(eg_write_item *wi, eg_txn *t) {
  test_item *it = (test_item *)wi;
  pthread_mutex_lock(&mu);
  it->applies++;
  int step = it->step;
  pthread_mutex_unlock(&mu);
  eg_err e = EG_OK;
  if (it->sid) {
    /* One session per continuation step: a second put of one id in one
     * txn would be EG_EEXIST, so an effect applied twice shows. */
    char sid[64];
    snprintf(sid, sizeof sid, "%s.%d", it->sid, step);
    eg_session_rec r = session_rec(sid);
    if ((e = eg_store_session_put(t, TENANT, &r, NULL)) != EG_OK) return e;
    if (it->blob) {
      eg_message_rec m = ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
      uint8_t *content = calloc(1, it->blob);
      if (!content) return EG_ENOMEM;
      m.seq = 1;
      m.role = 1;
      m.content_token.data = content;
      m.content_token.len = it->blob;
      m.client_message_id = (char *)"";
      e = eg_store_message_put(t, TENANT, sid, &m);
      free(content);
      if (e != EG_OK) return e;
    }
  }
  if (it->counter) {
    /* Read-modify-write: a count off by one means an effect of an
     * aborted attempt survived, or an attempt was lost. */
    eg_session_rec *c;
    if ((e = eg_store_session_get(t, TENANT, it->counter, &c)) != EG_OK) return e;
    eg_session_rec upd = *c;
    upd.message_count++;
    e = eg_store_session_put(t, TENANT, &upd, c);
    engram__storage__v1__session_record__free_unpacked(c, NULL);
    if (e != EG_OK) return e;
  }
  return it->fail;
}

static void item_done(eg_write_item *wi, eg_err err, uint64_t lsn, int busy) {
  test_item *it = (test_item *)wi;
  pthread_mutex_lock(&mu);
  it->err = err;
  if (it->dones < 8) {
    it->lsn[it->dones] = lsn;
    it->durable[it->dones] = eg_store_last_lsn(store);
    it->batches[it->dones] = batches();
  }
  it->dones++;
  int again = err == EG_OK && it->step < it->steps;
  if (again) it->step++;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  /* As the transport does for a call whose apply set `more`. */
  if (again) eg_writer_submit(writer, wi);
}

static void item_init(test_item *it, const char *sid) {
  memset(it, 0, sizeof *it);
  it->item.apply = item_apply;
  it->item.done = item_done;
  it->item.why = it->why;
  it->item.whylen = sizeof it->why;
  it->sid = sid;
}

/* The gate: its apply holds the writer (the first time) until opened. */
static struct {
  eg_write_item item;
  int entered, open, dones;
  uint64_t lsn, durable, batches; /* at its done */
} gate;

static eg_err gate_apply(eg_write_item *wi, eg_txn *t) {
  pthread_mutex_lock(&mu);
  if (!gate.entered) {
    gate.entered = 1;
    pthread_cond_broadcast(&cv);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WAIT_S;
    while (!gate.open && pthread_cond_timedwait(&cv, &mu, &until) == 0) {
    }
  }
  pthread_mutex_unlock(&mu);
  eg_session_rec r = session_rec("gate");
  return eg_store_session_put(t, TENANT, &r, NULL);
}

static void gate_done(eg_write_item *wi, eg_err err, uint64_t lsn, int busy) {
  pthread_mutex_lock(&mu);
  gate.lsn = lsn;
  gate.durable = eg_store_last_lsn(store);
  gate.batches = batches();
  gate.dones++;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
}

/* Holds the writer busy in a batch of its own; returns once it is. */
static void gate_close(void) {
  memset(&gate, 0, sizeof gate);
  gate.item.apply = gate_apply;
  gate.item.done = gate_done;
  eg_writer_submit(writer, &gate.item);
  CU_ASSERT_EQUAL_FATAL(wait_for(&gate.entered, 1), 0);
}

/* Lets the writer go on with what was queued meanwhile. */
static void gate_open(void) {
  pthread_mutex_lock(&mu);
  gate.open = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  CU_ASSERT_EQUAL_FATAL(wait_for(&gate.dones, 1), 0);
}

/* ---- what the store holds -------------------------------------------------- */

static eg_err session_get(const char *sid, eg_session_rec **out) {
  eg_txn *r;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(store, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  eg_err e = eg_store_session_get(r, TENANT, sid, out);
  eg_store_reader_free(r);
  return e;
}

static int has_session(const char *sid) {
  eg_session_rec *rec;
  eg_err e = session_get(sid, &rec);
  if (e == EG_OK) engram__storage__v1__session_record__free_unpacked(rec, NULL);
  CU_ASSERT(e == EG_OK || e == EG_ENOTFOUND);
  return e == EG_OK;
}

static int64_t counter_value(const char *sid) {
  eg_session_rec *rec;
  CU_ASSERT_EQUAL_FATAL(session_get(sid, &rec), EG_OK);
  int64_t v = rec->message_count;
  engram__storage__v1__session_record__free_unpacked(rec, NULL);
  return v;
}

static void make_counter(const char *sid) {
  eg_txn *w;
  eg_session_rec r = session_rec(sid);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_session_put(w, TENANT, &r, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

/* ---- tests ----------------------------------------------------------------- */

/* A lone item commits at once, in a batch of its own, and done gets its LSN. */
static void test_lone_item(void) {
  start(0);
  static test_item a;
  item_init(&a, "a");
  uint64_t before = eg_store_last_lsn(store);
  eg_writer_submit(writer, &a.item);
  CU_ASSERT_EQUAL_FATAL(wait_for(&a.dones, 1), 0);
  CU_ASSERT_EQUAL(a.err, EG_OK);
  CU_ASSERT_EQUAL(a.lsn[0], before + 1);
  CU_ASSERT_EQUAL(a.applies, 1);
  CU_ASSERT_EQUAL(batches(), 1);
  CU_ASSERT(has_session("a.0"));
  stop();
}

#define GROUP_N 20

/* Items queued while the writer is busy share the next commit. */
static void test_group_commit(void) {
  start(0);
  static test_item items[GROUP_N];
  static char sids[GROUP_N][16];
  gate_close();
  for (int i = 0; i < GROUP_N; i++) {
    snprintf(sids[i], sizeof sids[i], "g%d", i);
    item_init(&items[i], sids[i]);
    eg_writer_submit(writer, &items[i].item);
  }
  gate_open();
  for (int i = 0; i < GROUP_N; i++) CU_ASSERT_EQUAL_FATAL(wait_for(&items[i].dones, 1), 0);
  uint64_t b, n;
  eg_writer_stats(writer, &b, &n);
  CU_ASSERT_EQUAL(b, 2); /* the gate's batch, then one for all twenty */
  CU_ASSERT_EQUAL(n, GROUP_N + 1);
  for (int i = 0; i < GROUP_N; i++) {
    CU_ASSERT_EQUAL(items[i].err, EG_OK);
    CU_ASSERT_EQUAL(items[i].lsn[0], items[0].lsn[0]);
    CU_ASSERT_EQUAL(items[i].applies, 1);
  }
  CU_ASSERT_EQUAL(eg_store_last_lsn(store), items[0].lsn[0]);
  CU_ASSERT(has_session("g0.0") && has_session("g19.0"));
  stop();
}

#define BIG_N 6

/* Large items (PutWrites of MiBs) share a batch only up to
 * EG_WRITER_BATCH_BYTES: one commit's log record is what a replica must
 * receive in one message. */
static void test_batch_bytes_bound(void) {
  start(0);
  static test_item items[BIG_N];
  static char sids[BIG_N][16];
  gate_close();
  for (int i = 0; i < BIG_N; i++) {
    snprintf(sids[i], sizeof sids[i], "big%d", i);
    item_init(&items[i], sids[i]);
    items[i].item.bytes = 3 * MIB;
    eg_writer_submit(writer, &items[i].item);
  }
  gate_open();
  for (int i = 0; i < BIG_N; i++) CU_ASSERT_EQUAL_FATAL(wait_for(&items[i].dones, 1), 0);
  /* the gate's batch, then two items (6 MiB) per batch under 8 MiB */
  CU_ASSERT_EQUAL(batches(), 1 + BIG_N / 2);
  CU_ASSERT_EQUAL(items[0].lsn[0], items[1].lsn[0]);
  CU_ASSERT_NOT_EQUAL(items[1].lsn[0], items[2].lsn[0]);
  stop();
}

/* An `alone` item that logs more than EG_WRITER_ITEM_LOG_MAX fails
 * EG_ELIMIT and commits nothing, as a batched one does (a replica
 * receives each record whole). */
static void test_alone_log_bound(void) {
  start(0);
  static test_item it;
  item_init(&it, "alone0");
  it.item.alone = 1;
  it.blob = EG_WRITER_ITEM_LOG_MAX + 1;
  eg_writer_submit(writer, &it.item);
  CU_ASSERT_EQUAL_FATAL(wait_for(&it.dones, 1), 0);
  CU_ASSERT_EQUAL(it.err, EG_ELIMIT);
  CU_ASSERT_FALSE(has_session("alone0.0"));
  stop();
}

/* What items really log bounds a batch, whatever their estimates (0
 * here): once a batch logged 8 MiB the rest go to the next batch, in
 * order; one item that logs more than EG_WRITER_ITEM_LOG_MAX fails
 * EG_ELIMIT, rolled back, and the others commit. */
static void test_batch_log_bound(void) {
  start(0);
  static test_item items[BIG_N + 1];
  static char sids[BIG_N + 1][16];
  gate_close();
  for (int i = 0; i <= BIG_N; i++) {
    snprintf(sids[i], sizeof sids[i], "log%d", i);
    item_init(&items[i], sids[i]);
    items[i].blob = i == 1 ? EG_WRITER_ITEM_LOG_MAX + 1 : 3 * MIB;
    eg_writer_submit(writer, &items[i].item);
  }
  gate_open();
  for (int i = 0; i <= BIG_N; i++) CU_ASSERT_EQUAL_FATAL(wait_for(&items[i].dones, 1), 0);
  CU_ASSERT_EQUAL(items[1].err, EG_ELIMIT);
  CU_ASSERT_PTR_NOT_NULL_FATAL(strstr(items[1].why, "more than"));
  CU_ASSERT_FALSE(has_session("log1.0"));
  /* 0, 2, 3 (9 MiB logged), then 4, 5, 6: the gate's batch and two more */
  CU_ASSERT_EQUAL(batches(), 3);
  CU_ASSERT_EQUAL(items[0].lsn[0], items[3].lsn[0]);
  CU_ASSERT_NOT_EQUAL(items[3].lsn[0], items[4].lsn[0]);
  CU_ASSERT_EQUAL(items[4].lsn[0], items[6].lsn[0]);
  char sid[32];
  for (int i = 0; i <= BIG_N; i++) {
    snprintf(sid, sizeof sid, "log%d.0", i);
    if (i != 1) CU_ASSERT_TRUE(has_session(sid));
  }
  stop();
}

#define GROW_N 8

/* A batch that fills the map is aborted, the map grows, and the whole
 * batch runs again: each item's effect is there exactly once, one commit. */
static void test_replay_after_map_growth(void) {
  start(MIB);
  make_counter("ctr");
  uint64_t b0 = batches();
  static test_item items[GROW_N];
  static char sids[GROW_N][16];
  gate_close();
  for (int i = 0; i < GROW_N; i++) {
    snprintf(sids[i], sizeof sids[i], "big%d", i);
    item_init(&items[i], sids[i]);
    items[i].blob = 256 * 1024; /* eight of them: twice the 1 MiB map */
    items[i].counter = "ctr";
    eg_writer_submit(writer, &items[i].item);
  }
  gate_open();
  for (int i = 0; i < GROW_N; i++) CU_ASSERT_EQUAL_FATAL(wait_for(&items[i].dones, 1), 0);
  CU_ASSERT(eg_store_map_size(store) > MIB);
  CU_ASSERT(items[0].applies >= 2); /* the replay ran apply again */
  CU_ASSERT_EQUAL(batches(), b0 + 2);
  for (int i = 0; i < GROW_N; i++) {
    CU_ASSERT_EQUAL(items[i].err, EG_OK);
    CU_ASSERT_EQUAL(items[i].dones, 1);
    CU_ASSERT_EQUAL(items[i].lsn[0], items[0].lsn[0]);
  }
  char sid[32];
  for (int i = 0; i < GROW_N; i++) {
    snprintf(sid, sizeof sid, "big%d.0", i);
    CU_ASSERT(has_session(sid));
  }
  CU_ASSERT_EQUAL(counter_value("ctr"), GROW_N);
  stop();
}

/* One failing item in a batch: its writes roll back, the others commit,
 * and each done gets its own item's result. */
static void test_item_failure_in_batch(void) {
  start(0);
  make_counter("ctr");
  static test_item a, bad, c;
  item_init(&a, "a");
  item_init(&bad, "bad");
  item_init(&c, "c");
  a.counter = bad.counter = c.counter = "ctr";
  bad.fail = EG_EPRECOND; /* after writing its session and the counter */
  uint64_t b0 = batches();
  gate_close();
  eg_writer_submit(writer, &a.item);
  eg_writer_submit(writer, &bad.item);
  eg_writer_submit(writer, &c.item);
  gate_open();
  CU_ASSERT_EQUAL_FATAL(wait_for(&a.dones, 1), 0);
  CU_ASSERT_EQUAL_FATAL(wait_for(&bad.dones, 1), 0);
  CU_ASSERT_EQUAL_FATAL(wait_for(&c.dones, 1), 0);
  CU_ASSERT_EQUAL(a.err, EG_OK);
  CU_ASSERT_EQUAL(bad.err, EG_EPRECOND);
  CU_ASSERT_EQUAL(c.err, EG_OK);
  CU_ASSERT_EQUAL(a.lsn[0], c.lsn[0]);
  CU_ASSERT_EQUAL(batches(), b0 + 2);
  CU_ASSERT(has_session("a.0"));
  CU_ASSERT(!has_session("bad.0"));
  CU_ASSERT(has_session("c.0"));
  CU_ASSERT_EQUAL(counter_value("ctr"), 2);
  stop();
}

/* A batch in which every item fails commits nothing: no LSN, no batch. */
static void test_all_fail_commits_nothing(void) {
  start(0);
  static test_item bad;
  item_init(&bad, "bad");
  bad.fail = EG_EINVAL;
  uint64_t lsn = eg_store_last_lsn(store), b0 = batches();
  eg_writer_submit(writer, &bad.item);
  CU_ASSERT_EQUAL_FATAL(wait_for(&bad.dones, 1), 0);
  CU_ASSERT_EQUAL(bad.err, EG_EINVAL);
  CU_ASSERT_EQUAL(bad.lsn[0], 0);
  CU_ASSERT_EQUAL(eg_store_last_lsn(store), lsn);
  CU_ASSERT_EQUAL(batches(), b0);
  CU_ASSERT(!has_session("bad.0"));
  stop();
}

/* An item whose done resubmits it (a bounded share of a large job, as
 * erasure does) commits each share in a batch of its own, and items
 * queued meanwhile are not held back behind the whole job. */
static void test_more_continuations(void) {
  start(0);
  static test_item job, other;
  item_init(&job, "job");
  item_init(&other, "other");
  job.steps = 3;
  gate_close();
  eg_writer_submit(writer, &job.item);
  eg_writer_submit(writer, &other.item);
  gate_open();
  CU_ASSERT_EQUAL_FATAL(wait_for(&job.dones, 4), 0);
  CU_ASSERT_EQUAL_FATAL(wait_for(&other.dones, 1), 0);
  CU_ASSERT_EQUAL(job.err, EG_OK);
  CU_ASSERT_EQUAL(job.applies, 4);
  CU_ASSERT_EQUAL(other.lsn[0], job.lsn[0]); /* the first share's batch */
  for (int i = 1; i < 4; i++) CU_ASSERT_EQUAL(job.lsn[i], job.lsn[i - 1] + 1);
  CU_ASSERT_EQUAL(batches(), 1 + 4);
  char sid[16];
  for (int i = 0; i < 4; i++) {
    snprintf(sid, sizeof sid, "job.%d", i);
    CU_ASSERT(has_session(sid));
  }
  stop();
}

/* Stop finishes what is queued before the thread goes. */
static void test_stop_drains_queue(void) {
  start(0);
  static test_item items[4];
  static char sids[4][8];
  gate_close();
  for (int i = 0; i < 4; i++) {
    snprintf(sids[i], sizeof sids[i], "s%d", i);
    item_init(&items[i], sids[i]);
    eg_writer_submit(writer, &items[i].item);
  }
  pthread_mutex_lock(&mu);
  gate.open = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  eg_writer_stop(writer); /* returns after every done ran */
  writer = NULL;
  for (int i = 0; i < 4; i++) {
    CU_ASSERT_EQUAL(items[i].dones, 1);
    CU_ASSERT_EQUAL(items[i].err, EG_OK);
  }
  CU_ASSERT(has_session("s3.0"));
  eg_store_close(store);
  store = NULL;
}

/* ---- deferred meta sync (one flush per commit) ---------------------------- */

/* A lone commit with nothing queued behind it is flushed at once (its own
 * data flush, then an explicit one for its meta page) and answered durable. */
static void test_deferred_lone_item(void) {
  start_opts(0, 1);
  static test_item a;
  item_init(&a, "a");
  uint64_t before = eg_store_last_lsn(store), flushes = eg_store_flushes(store);
  eg_writer_submit(writer, &a.item);
  CU_ASSERT_EQUAL_FATAL(wait_for(&a.dones, 1), 0);
  CU_ASSERT_EQUAL(a.err, EG_OK);
  CU_ASSERT_EQUAL(a.lsn[0], before + 1);
  CU_ASSERT_EQUAL(a.durable[0], a.lsn[0]);
  CU_ASSERT_EQUAL(eg_store_flushes(store) - flushes, 2);
  stop();
}

/* Busy: a batch is answered only after the next batch's commit, whose data
 * flush made its meta page durable; the last one by an explicit flush. Two
 * commits cost three flushes, not four. */
static void test_deferred_answers_after_next_flush(void) {
  start_opts(0, 1);
  static test_item items[GROUP_N];
  static char sids[GROUP_N][16];
  uint64_t flushes = eg_store_flushes(store);
  gate_close();
  for (int i = 0; i < GROUP_N; i++) {
    snprintf(sids[i], sizeof sids[i], "d%d", i);
    item_init(&items[i], sids[i]);
    eg_writer_submit(writer, &items[i].item);
  }
  gate_open();
  for (int i = 0; i < GROUP_N; i++) CU_ASSERT_EQUAL_FATAL(wait_for(&items[i].dones, 1), 0);
  CU_ASSERT_EQUAL(batches(), 2);
  /* The gate's batch waited for the second commit. */
  CU_ASSERT_EQUAL(gate.batches, 2);
  CU_ASSERT(gate.durable >= gate.lsn);
  for (int i = 0; i < GROUP_N; i++) {
    CU_ASSERT_EQUAL(items[i].err, EG_OK);
    CU_ASSERT_EQUAL(items[i].lsn[0], gate.lsn + 1);
    CU_ASSERT_EQUAL(items[i].durable[0], items[i].lsn[0]);
  }
  CU_ASSERT_EQUAL(eg_store_flushes(store) - flushes, 3);
  stop();
}

/* Answers of a batch that committed nothing may rest on the held batch's
 * state: they wait for its flush too. */
static void test_deferred_failures_wait_for_held(void) {
  start_opts(0, 1);
  static test_item bad;
  gate_close();
  item_init(&bad, "bad");
  bad.fail = EG_EPRECOND;
  eg_writer_submit(writer, &bad.item);
  gate_open();
  CU_ASSERT_EQUAL_FATAL(wait_for(&bad.dones, 1), 0);
  CU_ASSERT_EQUAL(bad.err, EG_EPRECOND);
  CU_ASSERT_EQUAL(bad.lsn[0], 0);
  CU_ASSERT(bad.durable[0] >= gate.lsn);
  CU_ASSERT(gate.durable >= gate.lsn);
  CU_ASSERT(!has_session("bad.0"));
  stop();
}

static int count_records(void *arg, uint64_t lsn, const uint8_t *rec, size_t len) {
  (void)lsn, (void)rec, (void)len;
  (*(int *)arg)++;
  return 0;
}

static int records_from(uint64_t lsn) {
  eg_txn *r;
  int n = 0;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(store, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_scan(r, lsn, count_records, &n), EG_OK);
  eg_store_reader_free(r);
  return n;
}

/* A commit not yet flushed is visible to reads but is not durable: its
 * LSN is not handed out and its log record is not read out (replicas, the
 * archive) until a flush. */
static void test_deferred_commit_not_durable_until_flush(void) {
  start_opts(0, 1);
  uint64_t before = eg_store_last_lsn(store);
  eg_txn *w;
  uint64_t lsn = 0;
  eg_session_rec r = session_rec("x");
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_session_put(w, TENANT, &r, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK);
  CU_ASSERT_EQUAL(lsn, before + 1);
  CU_ASSERT_EQUAL(eg_store_last_lsn(store), before);
  CU_ASSERT(has_session("x"));
  CU_ASSERT_EQUAL(records_from(lsn), 0);
  CU_ASSERT_EQUAL(eg_store_wait_lsn(store, lsn, 0), EG_EUNAVAIL);
  CU_ASSERT_EQUAL(eg_store_sync(store), EG_OK);
  CU_ASSERT_EQUAL(eg_store_last_lsn(store), lsn);
  CU_ASSERT_EQUAL(records_from(lsn), 1);
  CU_ASSERT_EQUAL(eg_store_wait_lsn(store, lsn, 0), EG_OK);
  /* Nothing left to flush: no flush. */
  uint64_t flushes = eg_store_flushes(store);
  CU_ASSERT_EQUAL(eg_store_sync(store), EG_OK);
  CU_ASSERT_EQUAL(eg_store_flushes(store), flushes);
  /* A meta put commits outside the writer: it flushes its own meta page. */
  CU_ASSERT_EQUAL(eg_store_meta_put(store, "test.key", "v", 1), EG_OK);
  CU_ASSERT_EQUAL(eg_store_flushes(store), flushes + 1);
  stop();
}

struct copy_job {
  char path[4200];
  eg_store_file_info info;
  eg_err err;
  uint64_t durable; /* eg_store_last_lsn when the copy returned */
};

static void *copy_main(void *arg) {
  struct copy_job *j = arg;
  j->err = eg_store_copy(store, j->path, &j->info);
  j->durable = eg_store_last_lsn(store);
  return NULL;
}

/* A copy (a snapshot for a replica, a backup) that caught a commit before
 * its flush returns only once that commit is durable. */
static void test_deferred_copy_waits_for_flush(void) {
  start_opts(0, 1);
  eg_txn *w;
  uint64_t lsn = 0;
  eg_session_rec r = session_rec("c");
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_session_put(w, TENANT, &r, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK);
  CU_ASSERT(eg_store_last_lsn(store) < lsn);
  static struct copy_job job;
  snprintf(job.path, sizeof job.path, "%s/copy.mdb", tdir);
  pthread_t th;
  CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, copy_main, &job), 0);
  /* The copy has taken its snapshot once it writes pages. */
  struct stat st;
  for (int i = 0; i < WAIT_S * 100 && (stat(job.path, &st) != 0 || st.st_size == 0); i++)
    nanosleep(&(struct timespec){0, 10000000}, NULL);
  CU_ASSERT_EQUAL(eg_store_sync(store), EG_OK);
  pthread_join(th, NULL);
  CU_ASSERT_EQUAL(job.err, EG_OK);
  CU_ASSERT_EQUAL(job.info.lsn, lsn);
  CU_ASSERT(job.durable >= job.info.lsn);
  stop();
}

void eg_test_register_writer(void) {
  CU_pSuite s = CU_add_suite_with_setup_and_teardown("writer", NULL, NULL, setup, teardown);
  CU_add_test(s, "lone item", test_lone_item);
  CU_add_test(s, "group commit", test_group_commit);
  CU_add_test(s, "batch bytes bound", test_batch_bytes_bound);
  CU_add_test(s, "batch log bound", test_batch_log_bound);
  CU_add_test(s, "alone log bound", test_alone_log_bound);
  CU_add_test(s, "replay after map growth", test_replay_after_map_growth);
  CU_add_test(s, "item failure inside a batch", test_item_failure_in_batch);
  CU_add_test(s, "batch of failures commits nothing", test_all_fail_commits_nothing);
  CU_add_test(s, "more continuations", test_more_continuations);
  CU_add_test(s, "stop drains the queue", test_stop_drains_queue);
  CU_add_test(s, "deferred: lone item flushed at once", test_deferred_lone_item);
  CU_add_test(s, "deferred: answered after the next flush", test_deferred_answers_after_next_flush);
  CU_add_test(s, "deferred: failures wait for the held batch", test_deferred_failures_wait_for_held);
  CU_add_test(s, "deferred: not durable until a flush", test_deferred_commit_not_durable_until_flush);
  CU_add_test(s, "deferred: a copy waits for the flush", test_deferred_copy_waits_for_flush);
}
