/* store_env: what the store does around its records: named meta values,
 * reader slots, LMDB error mapping, the data dir and its files. Against
 * real LMDB files in a temp dir. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/config.h"
#include "storage/storage.h"
#include "suites.h"

static char tdir[4096];

static eg_store *open_store(const eg_store_opts *o) { return eg_test_store_open(tdir, o); }

/* ---- named meta values ------------------------------------------------------ */

static void test_meta_values(void) {
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  eg_store *s = open_store(NULL);
  char buf[16];
  size_t len = 0;
  CU_ASSERT_EQUAL(eg_store_meta_get(s, "fingerprint", buf, sizeof buf, &len), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_store_meta_put(s, "fingerprint", "abc", 3), EG_OK);
  CU_ASSERT_EQUAL(eg_store_meta_get(s, "fingerprint", buf, sizeof buf, &len), EG_OK);
  CU_ASSERT_EQUAL(len, 3);
  CU_ASSERT_EQUAL(memcmp(buf, "abc", 3), 0);
  /* Too small a buffer: the size needed, not a truncated value. */
  CU_ASSERT_EQUAL(eg_store_meta_get(s, "fingerprint", buf, 2, &len), EG_ELIMIT);
  CU_ASSERT_EQUAL(len, 3);
  /* Names that could clash or smuggle bytes, and oversized values. */
  CU_ASSERT_EQUAL(eg_store_meta_put(s, "", "x", 1), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_store_meta_put(s, "a b", "x", 1), EG_EINVAL);
  char longname[EG_STORE_META_NAME_MAX + 2];
  memset(longname, 'n', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  CU_ASSERT_EQUAL(eg_store_meta_put(s, longname, "x", 1), EG_EINVAL);
  longname[EG_STORE_META_NAME_MAX] = '\0';
  CU_ASSERT_EQUAL(eg_store_meta_put(s, longname, "x", 1), EG_OK);
  static char big[EG_STORE_META_VALUE_MAX + 1];
  CU_ASSERT_EQUAL(eg_store_meta_put(s, "big", big, sizeof big), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_store_meta_put(s, "big", big, sizeof big - 1), EG_OK);
  /* A named value is not the store's own meta: the LSN stays put. */
  CU_ASSERT_EQUAL(eg_store_meta_put(s, "last_lsn", "12345678", 8), EG_OK);
  CU_ASSERT_EQUAL(eg_store_last_lsn(s), 0);
  eg_store_close(s);
  /* Durable across a reopen. */
  s = open_store(NULL);
  CU_ASSERT_EQUAL(eg_store_last_lsn(s), 0);
  CU_ASSERT_EQUAL(eg_store_meta_get(s, "fingerprint", buf, sizeof buf, &len), EG_OK);
  CU_ASSERT_EQUAL(len, 3);
  eg_store_close(s);
  eg_test_rmdir(tdir);
}

/* ---- reader slots ------------------------------------------------------------ */

/* engramd's largest --workers. */
#define MANY_WORKERS 256
#define READER_THREADS 16

struct reader_load {
  eg_store *s;
  pthread_barrier_t *all_live;
  int n;       /* readers this thread holds at once */
  eg_err err;  /* first failure */
};

/* Begins n readers, waits until every thread holds its own (all live at
 * once), then ends them. */
static void *hold_readers(void *arg) {
  struct reader_load *l = arg;
  eg_txn **r = calloc((size_t)l->n, sizeof *r);
  for (int i = 0; i < l->n && !l->err; i++) {
    l->err = eg_store_reader_new(l->s, &r[i]);
    if (!l->err) l->err = eg_store_reader_begin(r[i]);
  }
  pthread_barrier_wait(l->all_live);
  for (int i = 0; i < l->n; i++) eg_store_reader_free(r[i]);
  free(r);
  return NULL;
}

/* Every worker of the largest engramd holds a reader, and so does every
 * other reader the process can have (parking, follower, replica streams
 * and snapshot copies) at the same time, from many threads: more than
 * LMDB's default 126 slots, none refused. */
static void test_readers_sized_for_workers(void) {
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  unsigned slots = eg_config_store_readers(MANY_WORKERS);
  /* parking and follower, 64 replica streams, 2 snapshot copies */
  CU_ASSERT(slots > MANY_WORKERS + 2 + 64 + 2);
  eg_store_opts o = {.max_readers = slots};
  eg_store *s = open_store(&o);
  /* All but one slot: eg_store_meta_get below needs one too. */
  int want = (int)slots - 1;
  pthread_barrier_t all_live;
  pthread_barrier_init(&all_live, NULL, READER_THREADS);
  pthread_t th[READER_THREADS];
  struct reader_load l[READER_THREADS];
  for (int i = 0; i < READER_THREADS; i++) {
    l[i] = (struct reader_load){.s = s, .all_live = &all_live,
                                .n = want / READER_THREADS + (i < want % READER_THREADS)};
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, hold_readers, &l[i]), 0);
  }
  for (int i = 0; i < READER_THREADS; i++) {
    pthread_join(th[i], NULL);
    CU_ASSERT_EQUAL(l[i].err, EG_OK);
  }
  pthread_barrier_destroy(&all_live);
  eg_store_close(s);
  eg_test_rmdir(tdir);
}

/* Out of slots: a distinct error (UNAVAILABLE, retry later), not EG_EIO;
 * a freed slot serves the next reader. */
static void test_readers_full(void) {
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  eg_store_opts o = {.max_readers = 4};
  eg_store *s = open_store(&o);
  eg_txn *r[5];
  for (int i = 0; i < 4; i++) {
    CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r[i]), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r[i]), EG_OK);
  }
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r[4]), EG_OK);
  CU_ASSERT_EQUAL(eg_store_reader_begin(r[4]), EG_EREADERS);
  CU_ASSERT_EQUAL(eg_err_grpc_code(EG_EREADERS), 14 /* UNAVAILABLE */);
  eg_store_reader_free(r[0]);
  CU_ASSERT_EQUAL(eg_store_reader_begin(r[4]), EG_OK);
  for (int i = 1; i < 5; i++) eg_store_reader_free(r[i]);
  eg_store_close(s);
  eg_test_rmdir(tdir);
}

/* ---- data dir ------------------------------------------------------------------ */

static void test_dir_mode_tightened(void) {
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  CU_ASSERT_EQUAL_FATAL(chmod(tdir, 0755), 0);
  eg_store *s = open_store(NULL);
  struct stat st;
  CU_ASSERT_EQUAL_FATAL(stat(tdir, &st), 0);
  CU_ASSERT_EQUAL(st.st_mode & 0777, 0700);
  eg_store_close(s);
  eg_test_rmdir(tdir);
}

static void test_lock_dir(void) {
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  char err[512] = "", pid[32];
  int a = -1, b = -1;
  CU_ASSERT_EQUAL_FATAL(eg_store_lock_dir(tdir, &a, err, sizeof err), EG_OK);
  /* flock conflicts between two opens even in one process. */
  CU_ASSERT_EQUAL(eg_store_lock_dir(tdir, &b, err, sizeof err), EG_EPRECOND);
  snprintf(pid, sizeof pid, "pid %d", (int)getpid());
  CU_ASSERT_PTR_NOT_NULL(strstr(err, pid));
  eg_store_unlock_dir(a);
  CU_ASSERT_EQUAL(eg_store_lock_dir(tdir, &b, err, sizeof err), EG_OK);
  eg_store_unlock_dir(b);
  eg_test_rmdir(tdir);
}

/* Opens tdir expecting refusal e with `word` in the reason. */
static void expect_refused(eg_err want, const char *word) {
  eg_store *s = NULL;
  char err[1024] = "";
  eg_err e = eg_store_open(tdir, NULL, &s, err, sizeof err);
  CU_ASSERT_EQUAL(e, want);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, word));
  if (!strstr(err, word)) fprintf(stderr, "reason: %s\n", err);
  if (!e) eg_store_close(s);
}

static void put_sessions(eg_store *s, int n) {
  for (int i = 0; i < n; i++) {
    char sid[32];
    eg_txn *w;
    snprintf(sid, sizeof sid, "s%d", i);
    eg_session_rec r = ENGRAM__STORAGE__V1__SESSION_RECORD__INIT;
    r.session_id = sid;
    r.user_id = (char *)"u";
    r.agent_id = (char *)"a";
    CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_store_session_put(w, "t", &r, NULL), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  }
}

static void data_path(char *out, size_t n, const char *file) {
  snprintf(out, n, "%s/%s", tdir, file);
}

static void test_truncated_data_file(void) {
  char data[4200];
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  eg_store *s = open_store(NULL);
  put_sessions(s, 200);
  eg_store_close(s);
  data_path(data, sizeof data, "data.mdb");
  struct stat st;
  CU_ASSERT_EQUAL_FATAL(stat(data, &st), 0);
  CU_ASSERT_EQUAL_FATAL(truncate(data, st.st_size / 2), 0);
  expect_refused(EG_ECORRUPT, "data.mdb is");
  expect_refused(EG_ECORRUPT, "truncated");
  /* Cut inside the meta pages: not an LMDB file at all. */
  CU_ASSERT_EQUAL_FATAL(truncate(data, 100), 0);
  expect_refused(EG_ECORRUPT, "data.mdb");
  eg_test_rmdir(tdir);
}

static void test_empty_or_replaced_data_file(void) {
  char data[4200], other[2048], moved[4200];
  snprintf(other, sizeof other, "%s", eg_test_tmpdir());
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  eg_store *s = open_store(NULL);
  put_sessions(s, 3);
  eg_store_close(s);
  data_path(data, sizeof data, "data.mdb");
  snprintf(moved, sizeof moved, "%s/kept.mdb", other);
  CU_ASSERT_EQUAL_FATAL(rename(data, moved), 0);
  /* Missing, then empty: refused, not a fresh empty store. */
  expect_refused(EG_ECORRUPT, "missing");
  FILE *f = fopen(data, "w");
  fclose(f);
  expect_refused(EG_ECORRUPT, "empty");
  /* Another store's file in its place. */
  unlink(data);
  char keep[4096];
  snprintf(keep, sizeof keep, "%s", tdir);
  snprintf(tdir, sizeof tdir, "%s/b", other);
  s = open_store(NULL);
  eg_store_close(s);
  char foreign[4200];
  data_path(foreign, sizeof foreign, "data.mdb");
  snprintf(tdir, sizeof tdir, "%s", keep);
  CU_ASSERT_EQUAL_FATAL(rename(foreign, data), 0);
  expect_refused(EG_ECORRUPT, "replaced");
  /* Its own file back: fine, and the data is there. */
  CU_ASSERT_EQUAL_FATAL(rename(moved, data), 0);
  s = open_store(NULL);
  CU_ASSERT_EQUAL(eg_store_last_lsn(s), 3);
  eg_store_close(s);
  eg_test_rmdir(tdir);
  eg_test_rmdir(other);
}

/* A snapshot carries its source's id: installing it adopts that id. */
static void test_snapshot_adopts_id(void) {
  char src[4096], snap[4200], id1[64] = "", id2[64] = "";
  snprintf(src, sizeof src, "%s", eg_test_tmpdir());
  snprintf(tdir, sizeof tdir, "%s", src);
  eg_store *s = open_store(NULL);
  put_sessions(s, 2);
  eg_store_file_info info;
  snprintf(snap, sizeof snap, "%s/copy.mdb", src);
  CU_ASSERT_EQUAL_FATAL(eg_store_copy(s, snap, &info), EG_OK);
  eg_store_close(s);
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  s = open_store(NULL); /* a replica with an id of its own */
  eg_store_close(s);
  CU_ASSERT_EQUAL_FATAL(eg_store_install_snapshot(tdir, snap), EG_OK);
  s = open_store(NULL);
  CU_ASSERT_EQUAL(eg_store_last_lsn(s), 2);
  eg_store_close(s);
  char p1[4200], p2[4200];
  snprintf(p1, sizeof p1, "%s/engram.id", src);
  data_path(p2, sizeof p2, "engram.id");
  FILE *f1 = fopen(p1, "r"), *f2 = fopen(p2, "r");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f2);
  CU_ASSERT_PTR_NOT_NULL(fgets(id1, sizeof id1, f1));
  CU_ASSERT_PTR_NOT_NULL(fgets(id2, sizeof id2, f2));
  fclose(f1);
  fclose(f2);
  CU_ASSERT_STRING_EQUAL(id1, id2);
  eg_test_rmdir(tdir);
  eg_test_rmdir(src);
}

void eg_test_register_store_env(void) {
  CU_pSuite s = CU_add_suite("store_env", NULL, NULL);
  CU_add_test(s, "named meta values", test_meta_values);
  CU_add_test(s, "reader slots sized for the largest --workers", test_readers_sized_for_workers);
  CU_add_test(s, "reader slots full", test_readers_full);
  CU_add_test(s, "data dir mode tightened", test_dir_mode_tightened);
  CU_add_test(s, "data dir lock", test_lock_dir);
  CU_add_test(s, "truncated data file refused", test_truncated_data_file);
  CU_add_test(s, "empty or replaced data file refused", test_empty_or_replaced_data_file);
  CU_add_test(s, "installed snapshot adopts its id", test_snapshot_adopts_id);
}
