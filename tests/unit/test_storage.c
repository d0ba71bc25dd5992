/* storage: the LMDB engine against real files in a temp dir (no mocks).
 * Where a test checks what is on disk it closes the store and reads the
 * files with plain LMDB calls, since one process may not open an env
 * twice at once. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storage/storage.h"
#include "suites.h"

#define MIB ((size_t)1 << 20)

/* ---- helpers -------------------------------------------------------------- */

static char tdir[4096];

static eg_store *open_store(size_t map_size) {
  eg_store_opts o = {.map_size = map_size};
  return eg_test_store_open(tdir, &o);
}

static void setup(void) { snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir()); }
static void teardown(void) { eg_test_rmdir(tdir); }

static eg_session_rec session_rec(const char *sid, const char *user, int64_t create_us) {
  eg_session_rec r = ENGRAM__STORAGE__V1__SESSION_RECORD__INIT;
  r.session_id = (char *)sid;
  r.user_id = (char *)user;
  r.agent_id = (char *)"agent";
  r.create_time_us = create_us;
  r.update_time_us = create_us;
  return r;
}

/* Puts one new session in its own write txn. */
static void put_session(eg_store *s, const char *tenant, const char *sid, const char *user,
                        int64_t create_us) {
  eg_txn *w;
  eg_session_rec r = session_rec(sid, user, create_us);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_session_put(w, tenant, &r, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

/* A message whose content is "<tenant>/<sid>#<seq>". */
static eg_err put_message(eg_txn *w, const char *tenant, const char *sid, uint64_t seq,
                          const char *client_id) {
  char content[512];
  eg_message_rec m = ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
  int n = snprintf(content, sizeof content, "%s/%s#%llu", tenant, sid, (unsigned long long)seq);
  m.seq = (int64_t)seq;
  m.role = 1;
  m.content_token.data = (uint8_t *)content;
  m.content_token.len = (size_t)n;
  m.client_message_id = (char *)(client_id ? client_id : "");
  return eg_store_message_put(w, tenant, sid, &m);
}

/* Puts messages first, first+step, ... <= last in one write txn. */
static void put_messages(eg_store *s, const char *tenant, const char *sid, uint64_t first,
                         uint64_t last, uint64_t step) {
  eg_txn *w;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  for (uint64_t q = first; q <= last; q += step)
    CU_ASSERT_EQUAL_FATAL(put_message(w, tenant, sid, q, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

/* Collects visited sessions: ids joined by ',' and the last cursor. */
typedef struct {
  char ids[8192];
  int n, limit;
  eg_session_cursor last;
  const char *want_agent; /* when set, every record must carry it */
  int bad_agent;
} session_list;

static int collect_session(void *arg, eg_session_rec *rec, const eg_session_cursor *cur) {
  session_list *l = arg;
  size_t len = strlen(l->ids);
  snprintf(l->ids + len, sizeof l->ids - len, "%s%s", len ? "," : "", rec->session_id);
  if (l->want_agent && strcmp(rec->agent_id, l->want_agent) != 0) l->bad_agent++;
  l->last = *cur;
  l->n++;
  engram__storage__v1__session_record__free_unpacked(rec, NULL);
  return l->limit && l->n >= l->limit;
}

static eg_err scan_sessions(eg_store *s, const char *tenant, const char *user,
                            const eg_session_cursor *after, session_list *l) {
  eg_txn *r;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  eg_err e = eg_store_sessions_scan(r, tenant, user, after, collect_session, l);
  eg_store_reader_free(r);
  return e;
}

/* Collects visited messages: seqs joined by ',' and a content check. */
typedef struct {
  char seqs[8192];
  int n, limit;
  const char *tenant, *sid;
  int bad_content;
} message_list;

static int collect_message(void *arg, eg_message_rec *rec) {
  message_list *l = arg;
  char want[512];
  size_t len = strlen(l->seqs);
  snprintf(l->seqs + len, sizeof l->seqs - len, "%s%lld", len ? "," : "", (long long)rec->seq);
  if (l->tenant) {
    int n = snprintf(want, sizeof want, "%s/%s#%lld", l->tenant, l->sid, (long long)rec->seq);
    if (rec->content_token.len != (size_t)n || memcmp(rec->content_token.data, want, n) != 0)
      l->bad_content++;
  }
  l->n++;
  engram__storage__v1__message_record__free_unpacked(rec, NULL);
  return l->limit && l->n >= l->limit;
}

/* Seqs visited from start (comma separated) into out; returns the error. */
static eg_err scan_messages(eg_store *s, const char *tenant, const char *sid, uint64_t start,
                            int desc, int limit, char *out, size_t outlen) {
  eg_txn *r;
  message_list l = {.limit = limit, .tenant = tenant, .sid = sid};
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  eg_err e = eg_store_messages_scan(r, tenant, sid, start, desc, collect_message, &l);
  eg_store_reader_free(r);
  CU_ASSERT_EQUAL(l.bad_content, 0);
  snprintf(out, outlen, "%s", l.seqs);
  return e;
}

#define ASSERT_SCAN(s, tenant, sid, start, desc, want)                             \
  do {                                                                            \
    char got_[8192];                                                              \
    CU_ASSERT_EQUAL(scan_messages(s, tenant, sid, start, desc, 0, got_, sizeof got_), \
                    EG_OK);                                                       \
    if (strcmp(got_, want) != 0)                                                  \
      fprintf(stderr, "\n  scan %s/%s from %llu %s: got [%s] want [%s]\n", tenant, sid, \
              (unsigned long long)(start), desc ? "desc" : "asc", got_, want);    \
    CU_ASSERT_STRING_EQUAL(got_, want);                                           \
  } while (0)

/* ---- raw LMDB access (store closed) --------------------------------------- */

typedef struct {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
} raw_db;

static void raw_open(raw_db *r, const char *db, int write) {
  CU_ASSERT_EQUAL_FATAL(mdb_env_create(&r->env), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_env_set_maxdbs(r->env, 16), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_env_open(r->env, tdir, 0, 0600), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(r->env, NULL, write ? 0 : MDB_RDONLY, &r->txn), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_dbi_open(r->txn, db, 0, &r->dbi), 0);
}

static void raw_close(raw_db *r, int commit) {
  if (commit) {
    CU_ASSERT_EQUAL(mdb_txn_commit(r->txn), 0);
  } else {
    mdb_txn_abort(r->txn);
  }
  mdb_env_close(r->env);
}

/* Number of keys in db that start with prefix (all keys for plen 0). */
static size_t raw_count(const char *db, const void *prefix, size_t plen) {
  raw_db r;
  MDB_cursor *c;
  MDB_val k, v;
  size_t n = 0;
  raw_open(&r, db, 0);
  CU_ASSERT_EQUAL_FATAL(mdb_cursor_open(r.txn, r.dbi, &c), 0);
  /* A full walk on purpose: counts whatever sits anywhere in the DB. */
  for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
    if (!plen || (k.mv_size >= plen && memcmp(k.mv_data, prefix, plen) == 0)) n++;
  mdb_cursor_close(c);
  raw_close(&r, 0);
  return n;
}

static void raw_put(const char *db, const void *key, size_t klen, const void *val, size_t vlen) {
  raw_db r;
  raw_open(&r, db, 1);
  MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
  CU_ASSERT_EQUAL_FATAL(mdb_put(r.txn, r.dbi, &k, &v, 0), 0);
  raw_close(&r, 1);
}

/* Value of key in db copied into buf; returns its length or -1. */
static long raw_get(const char *db, const void *key, size_t klen, void *buf, size_t cap) {
  raw_db r;
  long n = -1;
  raw_open(&r, db, 0);
  MDB_val k = {klen, (void *)key}, v;
  if (mdb_get(r.txn, r.dbi, &k, &v) == 0 && v.mv_size <= cap) {
    memcpy(buf, v.mv_data, v.mv_size);
    n = (long)v.mv_size;
  }
  raw_close(&r, 0);
  return n;
}

/* ---- users holding records, by name (storage/record_users.h) --------------- */

typedef struct {
  char names[8][64];
  size_t n;
  eg_users_cursor last;
} users_seen;

static int note_user(void *arg, const char *tenant, const char *user, const eg_users_cursor *at) {
  users_seen *u = arg;
  if (u->n < 8) snprintf(u->names[u->n++], sizeof u->names[0], "%s/%s", tenant, user);
  u->last = *at;
  return 0;
}

static eg_err scan_users(eg_store *s, unsigned src, const char *tenant,
                         const eg_users_cursor *after, size_t max, users_seen *u, int *end) {
  eg_txn *r = eg_test_reader(s);
  memset(u, 0, sizeof *u);
  eg_err e = eg_store_users_scan(r, src, tenant, after, max, note_user, u, end);
  eg_test_reader_done(r);
  return e;
}

static void test_users_scan(void) {
  setup();
  eg_store *s = open_store(0);
  put_session(s, "t1", "s1", "bob", 1);
  put_session(s, "t1", "s2", "bob", 2);
  put_session(s, "t1", "s3", "alice", 3);
  put_session(s, "t2", "s4", "al", 4);
  eg_store_close(s);
  /* memories_by_user: u8len T | u8len U | pos; users whose prefix ends in
   * 0xff (the successor carries), one holding two entries. */
  static const uint8_t m1[] = "\x02t1\x02zz" "p1", m2[] = "\x02t1\x02\xff\xfe" "p1",
                       m3[] = "\x02t1\x02\xff\xff" "p1", m4[] = "\x02t1\x02\xff\xff" "p2",
                       m5[] = "\x02t1\x03" "abc" "p1";
  const uint8_t *mk[] = {m1, m2, m3, m4, m5};
  const size_t ml[] = {sizeof m1 - 1, sizeof m2 - 1, sizeof m3 - 1, sizeof m4 - 1, sizeof m5 - 1};
  for (size_t i = 0; i < 5; i++) raw_put("memories_by_user", mk[i], ml[i], "", 0);
  raw_put("store_namespaces", "\x02t1" "ns-a", 7, "", 0);
  raw_put("store_namespaces", "\x02t1" "ns-b", 7, "", 0);
  raw_put("store_namespaces", "\x02t3" "ns-a", 7, "", 0);
  s = open_store(0);
  users_seen u;
  int end = 0;

  /* Every user once, in key order (length first), however many records. */
  CU_ASSERT_EQUAL(scan_users(s, EG_USERS_SESSIONS, "", NULL, 10, &u, &end), EG_OK);
  CU_ASSERT_EQUAL(u.n, 3);
  CU_ASSERT_STRING_EQUAL(u.names[0], "t1/bob");
  CU_ASSERT_STRING_EQUAL(u.names[1], "t1/alice");
  CU_ASSERT_STRING_EQUAL(u.names[2], "t2/al");
  CU_ASSERT_EQUAL(end, 1);

  /* Bounded, resumed from the cursor: one user a call. */
  eg_users_cursor at = {.len = 0};
  const char *want[] = {"t1/bob", "t1/alice", "t2/al"};
  for (size_t i = 0; i < 3; i++) {
    CU_ASSERT_EQUAL_FATAL(scan_users(s, EG_USERS_SESSIONS, "", &at, 1, &u, &end), EG_OK);
    CU_ASSERT_EQUAL_FATAL(u.n, 1);
    CU_ASSERT_STRING_EQUAL(u.names[0], want[i]);
    CU_ASSERT_EQUAL(end, i == 2); /* known at once: no user follows t2/al */
    at = u.last;
  }
  CU_ASSERT_EQUAL(scan_users(s, EG_USERS_SESSIONS, "", &at, 1, &u, &end), EG_OK);
  CU_ASSERT_EQUAL(u.n, 0);
  CU_ASSERT_EQUAL(end, 1);

  /* One tenant's, from its start or after a cursor of another tenant. */
  CU_ASSERT_EQUAL(scan_users(s, EG_USERS_SESSIONS, "t2", NULL, 10, &u, &end), EG_OK);
  CU_ASSERT_EQUAL(u.n, 1);
  CU_ASSERT_STRING_EQUAL(u.names[0], "t2/al");
  CU_ASSERT_EQUAL(end, 1);
  at.len = 0;
  CU_ASSERT_EQUAL(scan_users(s, EG_USERS_SESSIONS, "t1", NULL, 1, &u, &end), EG_OK);
  at = u.last; /* t1/bob */
  CU_ASSERT_EQUAL(scan_users(s, EG_USERS_SESSIONS, "t2", &at, 10, &u, &end), EG_OK);
  CU_ASSERT_EQUAL(u.n, 1);
  CU_ASSERT_EQUAL(scan_users(s, EG_USERS_SESSIONS, "t1", &at, 10, &u, &end), EG_OK);
  CU_ASSERT_EQUAL(u.n, 1);
  CU_ASSERT_STRING_EQUAL(u.names[0], "t1/alice");
  CU_ASSERT_EQUAL(end, 1);

  /* 0xff at a prefix's end: the successor carries into the length byte. */
  CU_ASSERT_EQUAL(scan_users(s, EG_USERS_MEMORIES, "", NULL, 10, &u, &end), EG_OK);
  CU_ASSERT_EQUAL(u.n, 4);
  CU_ASSERT_STRING_EQUAL(u.names[0], "t1/zz");
  CU_ASSERT_STRING_EQUAL(u.names[1], "t1/\xff\xfe");
  CU_ASSERT_STRING_EQUAL(u.names[2], "t1/\xff\xff");
  CU_ASSERT_STRING_EQUAL(u.names[3], "t1/abc");
  at.len = 0;
  for (int i = 0; i < 3; i++) {
    CU_ASSERT_EQUAL_FATAL(scan_users(s, EG_USERS_MEMORIES, "", &at, 1, &u, &end), EG_OK);
    at = u.last;
  }
  CU_ASSERT_EQUAL(scan_users(s, EG_USERS_MEMORIES, "", &at, 10, &u, &end), EG_OK);
  CU_ASSERT_EQUAL(u.n, 1);
  CU_ASSERT_STRING_EQUAL(u.names[0], "t1/abc");

  /* Store items: the tenants, user "". */
  CU_ASSERT_EQUAL(scan_users(s, EG_USERS_ITEMS, "", NULL, 10, &u, &end), EG_OK);
  CU_ASSERT_EQUAL(u.n, 2);
  CU_ASSERT_STRING_EQUAL(u.names[0], "t1/");
  CU_ASSERT_STRING_EQUAL(u.names[1], "t3/");

  /* Whether a user holds anything. */
  eg_txn *r = eg_test_reader(s);
  int holds = -1;
  CU_ASSERT_EQUAL(eg_store_user_holds(r, "t1", "bob", &holds), EG_OK);
  CU_ASSERT_EQUAL(holds, 1);
  CU_ASSERT_EQUAL(eg_store_user_holds(r, "t1", "abc", &holds), EG_OK);
  CU_ASSERT_EQUAL(holds, 1);
  CU_ASSERT_EQUAL(eg_store_user_holds(r, "t1", "carol", &holds), EG_OK);
  CU_ASSERT_EQUAL(holds, 0);
  CU_ASSERT_EQUAL(eg_store_user_holds(r, "t1", "", &holds), EG_OK);
  CU_ASSERT_EQUAL(holds, 1);
  CU_ASSERT_EQUAL(eg_store_user_holds(r, "t2", "", &holds), EG_OK);
  CU_ASSERT_EQUAL(holds, 0);
  /* Limits. */
  CU_ASSERT_EQUAL(eg_store_users_scan(r, EG_USERS_SESSIONS, "", NULL, 0, note_user, &u, &end),
                  EG_EINVAL);
  CU_ASSERT_EQUAL(eg_store_users_scan(r, EG_USERS_SOURCES, "", NULL, 1, note_user, &u, &end),
                  EG_EINVAL);
  eg_test_reader_done(r);
  eg_store_close(s);

  /* A user whose erasure is under way (its progress record) holds nothing. */
  static const uint8_t progress[32] = {0};
  raw_put("memory_users", "\x02t1\x03" "bob\0erase", 13, progress, sizeof progress);
  s = open_store(0);
  r = eg_test_reader(s);
  CU_ASSERT_EQUAL(eg_store_user_holds(r, "t1", "bob", &holds), EG_OK);
  CU_ASSERT_EQUAL(holds, 0);
  CU_ASSERT_EQUAL(eg_store_user_holds(r, "t1", "alice", &holds), EG_OK);
  CU_ASSERT_EQUAL(holds, 1);
  eg_test_reader_done(r);
  eg_store_close(s);

  /* A key not of the layout (a tenant length past the key's end). */
  raw_put("sessions_by_user", "\x7f" "ab", 3, "", 0);
  s = open_store(0);
  CU_ASSERT_EQUAL(scan_users(s, EG_USERS_SESSIONS, "", NULL, 10, &u, &end), EG_ECORRUPT);
  CU_ASSERT_EQUAL(u.n, 3);
  eg_store_close(s);
  teardown();
}

/* ---- env ------------------------------------------------------------------ */

static void test_open_reopen(void) {
  char sub[4200], file[4300];
  struct stat st;
  char root[4096];
  setup();
  snprintf(root, sizeof root, "%s", tdir);
  /* A dir that does not exist yet is created 0700. */
  snprintf(sub, sizeof sub, "%s/data", root);
  eg_store *s = NULL;
  char err[256];
  CU_ASSERT_EQUAL_FATAL(eg_store_open(sub, NULL, &s, err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(stat(sub, &st), 0);
  CU_ASSERT_EQUAL(st.st_mode & 0777, 0700);
  snprintf(file, sizeof file, "%s/data.mdb", sub);
  CU_ASSERT_EQUAL(stat(file, &st), 0);
  CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
  CU_ASSERT_EQUAL(eg_store_last_lsn(s), 0);
  CU_ASSERT_EQUAL(eg_store_map_size(s), (size_t)1 << 30);
  eg_store_close(s);

  /* Data and last_lsn survive a reopen. */
  CU_ASSERT_FATAL(strlen(sub) < sizeof tdir);
  memcpy(tdir, sub, strlen(sub) + 1);
  s = open_store(0);
  put_session(s, "t", "s1", "u", 10);
  CU_ASSERT_EQUAL(eg_store_last_lsn(s), 1);
  eg_store_close(s);
  s = open_store(0);
  CU_ASSERT_EQUAL(eg_store_last_lsn(s), 1);
  eg_txn *r;
  eg_session_rec *rec = NULL;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_session_get(r, "t", "s1", &rec), EG_OK);
  CU_ASSERT_STRING_EQUAL(rec->user_id, "u");
  engram__storage__v1__session_record__free_unpacked(rec, NULL);
  eg_store_reader_free(r);
  eg_store_close(s);

  /* On disk: the schema version, last_lsn, and exactly the named DBs. */
  uint8_t b[16];
  CU_ASSERT_EQUAL(raw_get("meta", "schema_version", 14, b, sizeof b), 4);
  CU_ASSERT(b[3] == EG_STORE_SCHEMA_VERSION && b[0] == 0);
  CU_ASSERT_EQUAL(raw_get("meta", "last_lsn", 8, b, sizeof b), 8);
  CU_ASSERT(memcmp(b, "\0\0\0\0\0\0\0\1", 8) == 0);
  raw_db m;
  MDB_cursor *c;
  MDB_val k, v;
  char names[512] = "";
  raw_open(&m, "meta", 0);
  /* The main DB holds one key per named DB. */
  CU_ASSERT_EQUAL_FATAL(mdb_dbi_open(m.txn, NULL, 0, &m.dbi), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_cursor_open(m.txn, m.dbi, &c), 0);
  for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
    snprintf(names + strlen(names), sizeof names - strlen(names), "%s%.*s", names[0] ? "," : "",
             (int)k.mv_size, (char *)k.mv_data);
  mdb_cursor_close(c);
  raw_close(&m, 0);
  CU_ASSERT_STRING_EQUAL(names, "checkpoint_writes,checkpoints,checkpoints_by_user,idempotency,"
                                "index_state,key_jobs,memories,memories_by_user,memory_terms,memory_users,"
                                "memory_vectors,message_index_stats,message_terms,messages,meta,"
                                "retention,session_terms,sessions,"
                                "sessions_by_activity,sessions_by_user,store_items,"
                                "store_namespaces,sweep_due,tenant_limits,tenant_usage,wal");
  eg_test_rmdir(root);
}

static void test_schema_newer_refused(void) {
  setup();
  eg_store_close(open_store(0));
  uint8_t newer[4] = {0, 0, 0, EG_STORE_SCHEMA_VERSION + 1};
  char want[64];
  raw_put("meta", "schema_version", 14, newer, 4);
  eg_store *s = NULL;
  char err[256] = "";
  CU_ASSERT_EQUAL(eg_store_open(tdir, NULL, &s, err, sizeof err), EG_EPRECOND);
  CU_ASSERT_PTR_NULL(s);
  snprintf(want, sizeof want, "schema version %d", EG_STORE_SCHEMA_VERSION + 1);
  CU_ASSERT(strstr(err, want) != NULL);
  teardown();
}

static void test_open_not_a_dir(void) {
  char file[4200];
  setup();
  snprintf(file, sizeof file, "%s/plain", tdir);
  FILE *f = fopen(file, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fclose(f);
  eg_store *s = NULL;
  char err[256] = "";
  CU_ASSERT_EQUAL(eg_store_open(file, NULL, &s, err, sizeof err), EG_EIO);
  CU_ASSERT(err[0] != '\0');
  teardown();
}

static void test_lsn(void) {
  setup();
  eg_store *s = open_store(0);
  eg_txn *w;
  uint64_t lsn = 0;
  for (uint64_t i = 1; i <= 5; i++) {
    CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
    CU_ASSERT_EQUAL(put_message(w, "t", "s", i, NULL), EG_OK);
    CU_ASSERT_EQUAL(eg_store_write_commit(w, &lsn), EG_OK);
    CU_ASSERT_EQUAL(lsn, i);
    CU_ASSERT_EQUAL(eg_store_last_lsn(s), i);
  }
  /* An aborted txn takes no LSN. */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(put_message(w, "t", "s", 99, NULL), EG_OK);
  eg_store_write_abort(w);
  CU_ASSERT_EQUAL(eg_store_last_lsn(s), 5);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(eg_store_last_lsn(s), 6);
  eg_store_close(s);
  s = open_store(0);
  CU_ASSERT_EQUAL(eg_store_last_lsn(s), 6);
  eg_store_close(s);
  teardown();
}

/* ---- sessions ------------------------------------------------------------- */

static void test_session_put_get(void) {
  setup();
  eg_store *s = open_store(0);
  eg_txn *w, *sub, *r;
  eg_session_rec *got = NULL;
  eg_session_rec rec = session_rec("s1", "u1", 1000);
  rec.state = 1;
  rec.metadata_token.data = (uint8_t *)"\x01sealed\0bytes";
  rec.metadata_token.len = 13;
  rec.ttl_us = 7200000000;

  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_put(w, "t", &rec, NULL), EG_OK);
  /* A taken id fails in its sub txn; the batch goes on. */
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_begin(w, &sub), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_put(sub, "t", &rec, NULL), EG_EEXIST);
  eg_store_sub_abort(sub);
  CU_ASSERT_EQUAL(eg_store_write_commit(w, NULL), EG_OK);

  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_put(w, "t", &rec, NULL), EG_EEXIST);
  eg_store_write_abort(w);

  /* An update (not new) overwrites and adds no index entry. */
  rec.message_count = 5;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_session_get(w, "t", "s1", &got), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_put(w, "t", &rec, got), EG_OK);
  engram__storage__v1__session_record__free_unpacked(got, NULL);
  CU_ASSERT_EQUAL(eg_store_write_commit(w, NULL), EG_OK);

  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_session_get(r, "t", "s1", &got), EG_OK);
  CU_ASSERT_STRING_EQUAL(got->session_id, "s1");
  CU_ASSERT_STRING_EQUAL(got->user_id, "u1");
  CU_ASSERT_STRING_EQUAL(got->agent_id, "agent");
  CU_ASSERT_EQUAL(got->state, 1);
  CU_ASSERT_EQUAL(got->create_time_us, 1000);
  CU_ASSERT_EQUAL(got->message_count, 5);
  CU_ASSERT_EQUAL(got->ttl_us, 7200000000);
  CU_ASSERT_EQUAL(got->metadata_token.len, 13);
  CU_ASSERT(memcmp(got->metadata_token.data, "\x01sealed\0bytes", 13) == 0);
  engram__storage__v1__session_record__free_unpacked(got, NULL);
  CU_ASSERT_EQUAL(eg_store_session_get(r, "t", "s2", &got), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_store_session_get(r, "t2", "s1", &got), EG_ENOTFOUND);
  /* Writes through a reader are refused. */
  CU_ASSERT_EQUAL(eg_store_session_put(r, "t", &rec, NULL), EG_EINVAL);
  eg_store_reader_end(r);
  /* A reader outside begin/end reads nothing. */
  CU_ASSERT_EQUAL(eg_store_session_get(r, "t", "s1", &got), EG_EINVAL);
  eg_store_reader_free(r);

  session_list l = {0};
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "u1", NULL, &l), EG_OK);
  CU_ASSERT_STRING_EQUAL(l.ids, "s1");
  eg_store_close(s);
  teardown();
}

static void test_id_limits(void) {
  char long_id[EG_STORE_ID_MAX + 2], max_id[EG_STORE_ID_MAX + 1];
  memset(long_id, 'x', sizeof long_id - 1);
  long_id[sizeof long_id - 1] = '\0';
  memset(max_id, 'y', sizeof max_id - 1);
  max_id[sizeof max_id - 1] = '\0';
  setup();
  eg_store *s = open_store(0);
  eg_txn *w;
  eg_session_rec *got;
  uint64_t seq;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  eg_session_rec rec = session_rec(max_id, max_id, 1);
  CU_ASSERT_EQUAL(eg_store_session_put(w, max_id, &rec, NULL), EG_OK);
  CU_ASSERT_EQUAL(put_message(w, max_id, max_id, 1, max_id), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_put(w, "", &rec, NULL), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_store_session_put(w, NULL, &rec, NULL), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_store_session_put(w, long_id, &rec, NULL), EG_EINVAL);
  rec = session_rec(long_id, "u", 1);
  CU_ASSERT_EQUAL(eg_store_session_put(w, "t", &rec, NULL), EG_EINVAL);
  rec = session_rec("s", long_id, 1);
  CU_ASSERT_EQUAL(eg_store_session_put(w, "t", &rec, NULL), EG_EINVAL);
  rec = session_rec("s", "u", -1);
  CU_ASSERT_EQUAL(eg_store_session_put(w, "t", &rec, NULL), EG_EINVAL);
  CU_ASSERT_EQUAL(put_message(w, "t", long_id, 1, NULL), EG_EINVAL);
  CU_ASSERT_EQUAL(put_message(w, "t", "s", 1, long_id), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_store_session_get(w, "t", long_id, &got), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_store_idem_get(w, "t", "s", long_id, &seq), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_store_idem_get(w, max_id, max_id, max_id, &seq), EG_OK);
  CU_ASSERT_EQUAL(seq, 1);
  CU_ASSERT_EQUAL(eg_store_write_commit(w, NULL), EG_OK);
  session_list l = {0};
  CU_ASSERT_EQUAL(scan_sessions(s, max_id, max_id, NULL, &l), EG_OK);
  CU_ASSERT_EQUAL(l.n, 1);
  CU_ASSERT_EQUAL(scan_sessions(s, "", "u", NULL, &l), EG_EINVAL);
  eg_store_close(s);
  teardown();
}

static void test_sessions_scan_order(void) {
  setup();
  eg_store *s = open_store(0);
  /* Ties on create time are broken by id, newest (greatest) first. */
  put_session(s, "t", "a", "u1", 100);
  put_session(s, "t", "b", "u1", 300);
  put_session(s, "t", "c", "u1", 200);
  put_session(s, "t", "e", "u1", 300);
  put_session(s, "t", "d", "u1", 300);
  put_session(s, "t", "f", "u1", 50);
  put_session(s, "t", "big", "u1", 1LL << 40);
  /* Neighbours: users whose ids are prefixes/extensions, another tenant. */
  put_session(s, "t", "x1", "u", 1000);
  put_session(s, "t", "x2", "u10", 1000);
  put_session(s, "t", "x3", "u2", 1);
  put_session(s, "t2", "x4", "u1", 5000);

  session_list l = {0};
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "u1", NULL, &l), EG_OK);
  CU_ASSERT_STRING_EQUAL(l.ids, "big,e,d,b,c,a,f");
  /* The last cursor is create_us BE | session_id. */
  CU_ASSERT_EQUAL(l.last.len, 9);
  CU_ASSERT(memcmp(l.last.buf, "\0\0\0\0\0\0\0\x32" "f", 9) == 0);

  session_list stop = {.limit = 2};
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "u1", NULL, &stop), EG_OK);
  CU_ASSERT_STRING_EQUAL(stop.ids, "big,e");

  session_list none = {0};
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "nobody", NULL, &none), EG_OK);
  CU_ASSERT_EQUAL(none.n, 0);
  session_list u = {0};
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "u", NULL, &u), EG_OK);
  CU_ASSERT_STRING_EQUAL(u.ids, "x1");
  session_list u2 = {0};
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "u2", NULL, &u2), EG_OK);
  CU_ASSERT_STRING_EQUAL(u2.ids, "x3");
  /* u10 (longest length byte) is the last user of tenant t: the walk
   * starts from t2's entries. */
  session_list u10 = {0};
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "u10", NULL, &u10), EG_OK);
  CU_ASSERT_STRING_EQUAL(u10.ids, "x2");
  /* t2/u1 is the last entry of the whole index. */
  session_list t2 = {0};
  CU_ASSERT_EQUAL(scan_sessions(s, "t2", "u1", NULL, &t2), EG_OK);
  CU_ASSERT_STRING_EQUAL(t2.ids, "x4");
  eg_store_close(s);
  teardown();
}

static void test_sessions_pagination(void) {
  enum { N = 61, PAGE = 7 };
  setup();
  eg_store *s = open_store(0);
  /* Inserted out of order; create times in groups of three equal ones. */
  for (int i = 0; i < N; i++) {
    int j = (i * 37) % N;
    char sid[16];
    snprintf(sid, sizeof sid, "s%02d", j);
    put_session(s, "t", sid, "u", 1000 + j / 3);
  }
  put_session(s, "t", "other0", "u0", 5000);
  put_session(s, "t", "other1", "v", 5000);

  int seen[N] = {0}, pages = 0, total = 0, prev = N;
  eg_session_cursor cur;
  const eg_session_cursor *after = NULL;
  for (;;) {
    session_list l = {.limit = PAGE};
    CU_ASSERT_EQUAL_FATAL(scan_sessions(s, "t", "u", after, &l), EG_OK);
    pages++;
    for (char *tok = strtok(l.ids, ","); tok; tok = strtok(NULL, ",")) {
      int j = atoi(tok + 1);
      CU_ASSERT_FATAL(j >= 0 && j < N);
      seen[j]++;
      /* ids are s00..s60 with time j/3: newest first means descending j */
      CU_ASSERT(j < prev);
      prev = j;
      total++;
    }
    if (l.n < PAGE) break;
    cur = l.last;
    after = &cur;
    CU_ASSERT_FATAL(pages < 100);
  }
  CU_ASSERT_EQUAL(total, N);
  CU_ASSERT_EQUAL(pages, N / PAGE + 1);
  for (int j = 0; j < N; j++) CU_ASSERT_EQUAL(seen[j], 1);
  eg_store_close(s);
  teardown();
}

static void test_bad_cursor(void) {
  setup();
  eg_store *s = open_store(0);
  put_session(s, "t", "a", "u", 10);
  put_session(s, "t", "b", "u", 20);
  eg_session_cursor c = {0};
  session_list l = {0};
  c.len = 0;
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "u", &c, &l), EG_EINVAL);
  c.len = 8;
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "u", &c, &l), EG_EINVAL);
  c.len = EG_SESSION_CURSOR_MAX + 1;
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "u", &c, &l), EG_EINVAL);
  c.len = (size_t)-1;
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "u", &c, &l), EG_EINVAL);
  CU_ASSERT_EQUAL(l.n, 0);
  /* A well-formed cursor positions: after (20,"b") comes (10,"a"). */
  memcpy(c.buf, "\0\0\0\0\0\0\0\x14" "b", 9);
  c.len = 9;
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "u", &c, &l), EG_OK);
  CU_ASSERT_STRING_EQUAL(l.ids, "a");
  /* The longest cursor is accepted. */
  memset(c.buf, 0xff, sizeof c.buf);
  c.len = EG_SESSION_CURSOR_MAX;
  session_list all = {0};
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "u", &c, &all), EG_OK);
  CU_ASSERT_STRING_EQUAL(all.ids, "b,a");
  eg_store_close(s);
  teardown();
}

static void test_tenant_isolation(void) {
  setup();
  eg_store *s = open_store(0);
  eg_txn *w, *r;
  const char *tenants[] = {"a", "ab", "b"};
  /* The same session id and user id in three tenants ("a" a prefix of "ab"). */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  for (int i = 0; i < 3; i++) {
    eg_session_rec rec = session_rec("s1", "x", 100 + i);
    rec.agent_id = (char *)tenants[i];
    CU_ASSERT_EQUAL(eg_store_session_put(w, tenants[i], &rec, NULL), EG_OK);
    rec = session_rec("s2", "x", 200 + i);
    rec.agent_id = (char *)tenants[i];
    CU_ASSERT_EQUAL(eg_store_session_put(w, tenants[i], &rec, NULL), EG_OK);
    for (uint64_t q = 1; q <= 3; q++) CU_ASSERT_EQUAL(put_message(w, tenants[i], "s1", q, "c"), EG_OK);
  }
  CU_ASSERT_EQUAL(eg_store_write_commit(w, NULL), EG_OK);

  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  for (int i = 0; i < 3; i++) {
    eg_session_rec *got;
    CU_ASSERT_EQUAL_FATAL(eg_store_session_get(r, tenants[i], "s1", &got), EG_OK);
    CU_ASSERT_STRING_EQUAL(got->agent_id, tenants[i]);
    CU_ASSERT_EQUAL(got->create_time_us, 100 + i);
    engram__storage__v1__session_record__free_unpacked(got, NULL);
  }
  eg_store_reader_free(r);
  for (int i = 0; i < 3; i++) {
    session_list l = {.want_agent = tenants[i]};
    CU_ASSERT_EQUAL(scan_sessions(s, tenants[i], "x", NULL, &l), EG_OK);
    CU_ASSERT_STRING_EQUAL(l.ids, "s2,s1");
    CU_ASSERT_EQUAL(l.bad_agent, 0);
    /* Contents are checked against the tenant by scan_messages. */
    ASSERT_SCAN(s, tenants[i], "s1", 0, 0, "1,2,3");
    ASSERT_SCAN(s, tenants[i], "s1", UINT64_MAX, 1, "3,2,1");
  }
  session_list none = {0};
  CU_ASSERT_EQUAL(scan_sessions(s, "c", "x", NULL, &none), EG_OK);
  CU_ASSERT_EQUAL(none.n, 0);
  eg_store_close(s);
  teardown();
}

/* ---- messages ------------------------------------------------------------- */

static void test_messages_scan(void) {
  setup();
  eg_store *s = open_store(0);
  /* In key order: t/s, t/s1, t/s2 (empty), t/s10, then t0/s1, which is the
   * last range of the DB. */
  put_messages(s, "t", "s", 1, 3, 1);
  put_messages(s, "t", "s1", 1, 10, 1);
  put_messages(s, "t", "s10", 2, 10, 2);
  put_messages(s, "t0", "s1", 1, 4, 1);

  ASSERT_SCAN(s, "t", "s1", 0, 0, "1,2,3,4,5,6,7,8,9,10");
  ASSERT_SCAN(s, "t", "s1", 1, 0, "1,2,3,4,5,6,7,8,9,10");
  ASSERT_SCAN(s, "t", "s1", 5, 0, "5,6,7,8,9,10");
  ASSERT_SCAN(s, "t", "s1", 10, 0, "10");
  ASSERT_SCAN(s, "t", "s1", 11, 0, "");
  ASSERT_SCAN(s, "t", "s1", UINT64_MAX, 0, "");
  /* Descending from the end: SET_RANGE lands on t/s10, one step back. */
  ASSERT_SCAN(s, "t", "s1", UINT64_MAX, 1, "10,9,8,7,6,5,4,3,2,1");
  ASSERT_SCAN(s, "t", "s1", 11, 1, "10,9,8,7,6,5,4,3,2,1");
  ASSERT_SCAN(s, "t", "s1", 5, 1, "5,4,3,2,1");
  ASSERT_SCAN(s, "t", "s1", 1, 1, "1");
  ASSERT_SCAN(s, "t", "s1", 0, 1, "");
  /* Starts between stored seqs. */
  ASSERT_SCAN(s, "t", "s10", 5, 0, "6,8,10");
  ASSERT_SCAN(s, "t", "s10", 5, 1, "4,2");
  ASSERT_SCAN(s, "t", "s10", 1, 1, "");
  ASSERT_SCAN(s, "t", "s10", UINT64_MAX, 1, "10,8,6,4,2");
  /* An empty session between two full ones sees nothing either way. */
  ASSERT_SCAN(s, "t", "s2", 0, 0, "");
  ASSERT_SCAN(s, "t", "s2", UINT64_MAX, 1, "");
  ASSERT_SCAN(s, "t", "s", UINT64_MAX, 1, "3,2,1");
  ASSERT_SCAN(s, "t", "s", 0, 0, "1,2,3");
  /* The last range of the DB: SET_RANGE finds nothing, MDB_LAST. */
  ASSERT_SCAN(s, "t0", "s1", UINT64_MAX, 1, "4,3,2,1");
  ASSERT_SCAN(s, "t0", "s1", 3, 0, "3,4");
  ASSERT_SCAN(s, "t0", "s10", UINT64_MAX, 1, "");
  ASSERT_SCAN(s, "zz", "s1", UINT64_MAX, 1, "");
  ASSERT_SCAN(s, "a", "s1", 0, 0, "");

  char got[256];
  CU_ASSERT_EQUAL(scan_messages(s, "t", "s1", 0, 0, 3, got, sizeof got), EG_OK);
  CU_ASSERT_STRING_EQUAL(got, "1,2,3");
  CU_ASSERT_EQUAL(scan_messages(s, "t", "s1", UINT64_MAX, 1, 2, got, sizeof got), EG_OK);
  CU_ASSERT_STRING_EQUAL(got, "10,9");

  eg_txn *r;
  eg_message_rec *m;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_message_get(r, "t", "s10", 4, &m), EG_OK);
  CU_ASSERT_EQUAL(m->seq, 4);
  CU_ASSERT_EQUAL(m->role, 1);
  CU_ASSERT_EQUAL(m->content_token.len, 7);
  CU_ASSERT(memcmp(m->content_token.data, "t/s10#4", 7) == 0);
  engram__storage__v1__message_record__free_unpacked(m, NULL);
  CU_ASSERT_EQUAL(eg_store_message_get(r, "t", "s10", 5, &m), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_store_message_get(r, "t", "s2", 1, &m), EG_ENOTFOUND);
  eg_store_reader_free(r);
  eg_store_close(s);
  teardown();
}

static void test_idempotency(void) {
  setup();
  eg_store *s = open_store(0);
  eg_txn *w, *r;
  uint64_t seq = 0;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(put_message(w, "t", "s1", 1, "c-1"), EG_OK);
  CU_ASSERT_EQUAL(put_message(w, "t", "s1", 2, "c-2"), EG_OK);
  CU_ASSERT_EQUAL(put_message(w, "t", "s1", 3, NULL), EG_OK);
  CU_ASSERT_EQUAL(put_message(w, "t", "s10", 1, "c-9"), EG_OK);
  /* Visible inside the batch before it commits. */
  CU_ASSERT_EQUAL(eg_store_idem_get(w, "t", "s1", "c-2", &seq), EG_OK);
  CU_ASSERT_EQUAL(seq, 2);
  CU_ASSERT_EQUAL(eg_store_write_commit(w, NULL), EG_OK);

  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(eg_store_idem_get(r, "t", "s1", "c-1", &seq), EG_OK);
  CU_ASSERT_EQUAL(seq, 1);
  CU_ASSERT_EQUAL(eg_store_idem_get(r, "t", "s1", "c-2", &seq), EG_OK);
  CU_ASSERT_EQUAL(seq, 2);
  CU_ASSERT_EQUAL(eg_store_idem_get(r, "t", "s1", "c-3", &seq), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_store_idem_get(r, "t", "s1", "c-", &seq), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_store_idem_get(r, "t", "s1", "c-9", &seq), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_store_idem_get(r, "t", "s10", "c-1", &seq), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_store_idem_get(r, "t2", "s1", "c-1", &seq), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_store_idem_get(r, "t", "s10", "c-9", &seq), EG_OK);
  CU_ASSERT_EQUAL(seq, 1);
  eg_store_reader_free(r);
  eg_store_close(s);
  CU_ASSERT_EQUAL(raw_count("idempotency", NULL, 0), 3);
  teardown();
}

/* ---- transactions ---------------------------------------------------------- */

static void test_nested_sub_abort(void) {
  setup();
  eg_store *s = open_store(0);
  eg_txn *w, *sub, *r;
  eg_session_rec a = session_rec("A", "u", 1), b = session_rec("B", "u", 2), *got;
  eg_message_rec *m;
  uint64_t lsn = 0, seq;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_begin(w, &sub), EG_OK);
  /* The parent is not usable while a sub is open. */
  CU_ASSERT_EQUAL(eg_store_session_put(w, "t", &b, NULL), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_store_session_put(sub, "t", &a, NULL), EG_OK);
  CU_ASSERT_EQUAL(eg_store_sub_commit(sub), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_begin(w, &sub), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_put(sub, "t", &b, NULL), EG_OK);
  CU_ASSERT_EQUAL(put_message(sub, "t", "A", 2, "lost"), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_get(sub, "t", "B", &got), EG_OK);
  engram__storage__v1__session_record__free_unpacked(got, NULL);
  eg_store_sub_abort(sub);
  CU_ASSERT_EQUAL(eg_store_session_get(w, "t", "B", &got), EG_ENOTFOUND);
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_begin(w, &sub), EG_OK);
  CU_ASSERT_EQUAL(put_message(sub, "t", "A", 1, "kept"), EG_OK);
  CU_ASSERT_EQUAL(eg_store_sub_commit(sub), EG_OK);
  CU_ASSERT_EQUAL(eg_store_write_commit(w, &lsn), EG_OK);
  CU_ASSERT_EQUAL(lsn, 1);

  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_get(r, "t", "A", &got), EG_OK);
  engram__storage__v1__session_record__free_unpacked(got, NULL);
  CU_ASSERT_EQUAL(eg_store_session_get(r, "t", "B", &got), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_store_message_get(r, "t", "A", 1, &m), EG_OK);
  engram__storage__v1__message_record__free_unpacked(m, NULL);
  CU_ASSERT_EQUAL(eg_store_message_get(r, "t", "A", 2, &m), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_store_idem_get(r, "t", "A", "kept", &seq), EG_OK);
  CU_ASSERT_EQUAL(eg_store_idem_get(r, "t", "A", "lost", &seq), EG_ENOTFOUND);
  eg_store_reader_free(r);
  session_list l = {0};
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "u", NULL, &l), EG_OK);
  CU_ASSERT_STRING_EQUAL(l.ids, "A");

  /* Aborting a batch with a sub still open discards both. */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_sub_begin(w, &sub), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_put(sub, "t", &b, NULL), EG_OK);
  eg_store_write_abort(w);
  CU_ASSERT_EQUAL(eg_store_last_lsn(s), 1);
  session_list l2 = {0};
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "u", NULL, &l2), EG_OK);
  CU_ASSERT_STRING_EQUAL(l2.ids, "A");
  eg_store_close(s);
  teardown();
}

static void test_reader_snapshot_renew(void) {
  setup();
  eg_store *s = open_store(0);
  eg_txn *r;
  eg_session_rec *got;
  put_session(s, "t", "s1", "u", 1);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  for (int round = 0; round < 3; round++) {
    char sid[8];
    snprintf(sid, sizeof sid, "n%d", round);
    CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
    /* A write committed during the read is not in its snapshot ... */
    put_session(s, "t", sid, "u", 10 + round);
    CU_ASSERT_EQUAL(eg_store_session_get(r, "t", sid, &got), EG_ENOTFOUND);
    eg_store_reader_end(r);
    /* ... and is in the next one. */
    CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
    CU_ASSERT_EQUAL(eg_store_session_get(r, "t", sid, &got), EG_OK);
    engram__storage__v1__session_record__free_unpacked(got, NULL);
    eg_store_reader_end(r);
  }
  eg_store_reader_free(r);
  eg_store_close(s);
  teardown();
}

/* ---- delete ------------------------------------------------------------- */

static size_t count_prefix(const char *db, const char *tenant, const char *sid) {
  uint8_t p[600];
  size_t n = 0, tl = strlen(tenant), sl = strlen(sid);
  p[n++] = (uint8_t)tl;
  memcpy(p + n, tenant, tl);
  n += tl;
  p[n++] = (uint8_t)sl;
  memcpy(p + n, sid, sl);
  n += sl;
  return raw_count(db, p, n);
}

/* Puts a session with n messages, every k-th with a client id. */
static void put_full_session(eg_store *s, const char *tenant, const char *sid, const char *user,
                             int64_t create_us, int n, int k) {
  eg_txn *w;
  put_session(s, tenant, sid, user, create_us);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  for (int q = 1; q <= n; q++) {
    char cid[32];
    snprintf(cid, sizeof cid, "c%d", q);
    CU_ASSERT_EQUAL_FATAL(put_message(w, tenant, sid, (uint64_t)q, q % k == 0 ? cid : NULL),
                          EG_OK);
  }
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

static eg_err delete_session(eg_store *s, const char *tenant, const char *sid,
                             uint64_t *deleted) {
  eg_txn *w;
  eg_session_rec *rec;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  eg_err e = eg_store_session_get(w, tenant, sid, &rec);
  if (!e) {
    e = eg_store_session_delete(w, tenant, rec, deleted);
    engram__storage__v1__session_record__free_unpacked(rec, NULL);
  }
  if (e) {
    eg_store_write_abort(w);
    return e;
  }
  return eg_store_write_commit(w, NULL);
}

static void test_session_delete(void) {
  setup();
  eg_store *s = open_store(0);
  /* Enough messages to span many pages, plus neighbours on both sides. */
  put_full_session(s, "t", "s1", "u", 100, 600, 3);
  put_full_session(s, "t", "s10", "u", 200, 20, 4);
  put_full_session(s, "t", "s", "u", 300, 5, 1);
  put_full_session(s, "t0", "s1", "u", 100, 7, 2);
  eg_store_close(s);

  size_t msgs = raw_count("messages", NULL, 0), idem = raw_count("idempotency", NULL, 0);
  size_t sess = raw_count("sessions", NULL, 0), idx = raw_count("sessions_by_user", NULL, 0);
  CU_ASSERT_EQUAL(msgs, 600 + 20 + 5 + 7);
  CU_ASSERT_EQUAL(idem, 200 + 5 + 5 + 3);
  CU_ASSERT_EQUAL(sess, 4);
  CU_ASSERT_EQUAL(idx, 4);
  CU_ASSERT_EQUAL(count_prefix("messages", "t", "s1"), 600);

  s = open_store(0);
  uint64_t deleted = 0;
  CU_ASSERT_EQUAL(delete_session(s, "t", "s1", &deleted), EG_OK);
  CU_ASSERT_EQUAL(deleted, 600);
  CU_ASSERT_EQUAL(delete_session(s, "t", "s1", &deleted), EG_ENOTFOUND);
  session_list l = {0};
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "u", NULL, &l), EG_OK);
  CU_ASSERT_STRING_EQUAL(l.ids, "s,s10");
  ASSERT_SCAN(s, "t", "s1", 0, 0, "");
  ASSERT_SCAN(s, "t", "s10", UINT64_MAX, 1,
              "20,19,18,17,16,15,14,13,12,11,10,9,8,7,6,5,4,3,2,1");
  ASSERT_SCAN(s, "t0", "s1", 0, 0, "1,2,3,4,5,6,7");
  eg_store_close(s);

  CU_ASSERT_EQUAL(count_prefix("messages", "t", "s1"), 0);
  CU_ASSERT_EQUAL(count_prefix("idempotency", "t", "s1"), 0);
  CU_ASSERT_EQUAL(raw_count("sessions", "\x01t" "s1", 4), 1); /* s10 only */
  CU_ASSERT_EQUAL(raw_count("sessions_by_user", "\x01t\x01u", 4), 2);
  CU_ASSERT_EQUAL(raw_count("messages", NULL, 0), msgs - 600);
  CU_ASSERT_EQUAL(raw_count("idempotency", NULL, 0), idem - 200);
  CU_ASSERT_EQUAL(raw_count("sessions", NULL, 0), sess - 1);
  CU_ASSERT_EQUAL(raw_count("sessions_by_user", NULL, 0), idx - 1);
  CU_ASSERT_EQUAL(count_prefix("messages", "t", "s10"), 20);
  CU_ASSERT_EQUAL(count_prefix("idempotency", "t", "s10"), 5);

  /* The last range of every DB: the range delete runs off the end. */
  s = open_store(0);
  CU_ASSERT_EQUAL(delete_session(s, "t0", "s1", &deleted), EG_OK);
  CU_ASSERT_EQUAL(deleted, 7);
  eg_store_close(s);
  CU_ASSERT_EQUAL(count_prefix("messages", "t0", "s1"), 0);
  CU_ASSERT_EQUAL(count_prefix("idempotency", "t0", "s1"), 0);
  CU_ASSERT_EQUAL(raw_count("messages", NULL, 0), msgs - 607);
  CU_ASSERT_EQUAL(raw_count("idempotency", NULL, 0), idem - 203);
  CU_ASSERT_EQUAL(raw_count("sessions_by_user", NULL, 0), idx - 2);
  teardown();
}

/* ---- map growth ------------------------------------------------------------- */

enum { GROW_BATCH = 64, GROW_BATCHES = 32, GROW_CONTENT = 4000 }; /* 8 MB, one page each */

typedef struct {
  eg_store *s;
  atomic_int stop;
  atomic_int scans;
  int errors, torn;
} grow_reader;

static int count_visit(void *arg, eg_message_rec *rec) {
  (*(int *)arg)++;
  engram__storage__v1__message_record__free_unpacked(rec, NULL);
  return 0;
}

/* Reads while the writer grows the map: every snapshot holds whole batches. */
static void *grow_reader_main(void *arg) {
  grow_reader *g = arg;
  eg_txn *r;
  if (eg_store_reader_new(g->s, &r)) {
    g->errors++;
    return NULL;
  }
  while (!atomic_load(&g->stop)) {
    int n = 0;
    if (eg_store_reader_begin(r)) {
      g->errors++;
      break;
    }
    if (eg_store_messages_scan(r, "t", "big", 0, 0, count_visit, &n)) g->errors++;
    eg_store_reader_end(r);
    if (n % GROW_BATCH) g->torn++;
    g->scans++;
  }
  eg_store_reader_free(r);
  return NULL;
}

static eg_err put_big_batch(eg_store *s, const char *sid, int batch, uint8_t *content) {
  eg_txn *w;
  eg_err e = eg_store_write_begin(s, &w);
  if (e) return e;
  for (int i = 0; i < GROW_BATCH && !e; i++) {
    eg_message_rec m = ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
    m.seq = batch * GROW_BATCH + i + 1;
    memset(content, (int)(m.seq & 0xff), GROW_CONTENT);
    m.content_token.data = content;
    m.content_token.len = GROW_CONTENT;
    e = eg_store_message_put(w, "t", sid, &m);
  }
  if (e) {
    eg_store_write_abort(w);
    return e;
  }
  return eg_store_write_commit(w, NULL);
}

/* Writes GROW_BATCHES batches, growing on EG_EMAPFULL; returns grows. */
static int write_big(eg_store *s, const char *sid) {
  static uint8_t content[GROW_CONTENT];
  int grows = 0;
  for (int b = 0; b < GROW_BATCHES; b++) {
    eg_err e;
    while ((e = put_big_batch(s, sid, b, content)) == EG_EMAPFULL) {
      if (eg_store_grow(s) != EG_OK || ++grows > 20) return -1;
    }
    if (e) return -1;
  }
  return grows;
}

static int check_big(eg_txn *r, const char *sid) {
  int bad = 0;
  for (int q = 1; q <= GROW_BATCH * GROW_BATCHES; q++) {
    eg_message_rec *m;
    if (eg_store_message_get(r, "t", sid, (uint64_t)q, &m)) {
      bad++;
      continue;
    }
    if (m->content_token.len != GROW_CONTENT || m->content_token.data[0] != (q & 0xff) ||
        m->content_token.data[GROW_CONTENT - 1] != (q & 0xff))
      bad++;
    engram__storage__v1__message_record__free_unpacked(m, NULL);
  }
  return bad;
}

static void test_map_growth(void) {
  setup();
  eg_store *s = open_store(MIB);
  CU_ASSERT_EQUAL(eg_store_map_size(s), MIB);
  grow_reader g = {.s = s};
  pthread_t th;
  CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, grow_reader_main, &g), 0);
  /* The reader must be reading while the map grows, however the threads
   * are scheduled (bounded: 10 s). */
  for (int i = 0; i < 10000 && atomic_load(&g.scans) == 0; i++) usleep(1000);
  int grows = write_big(s, "big");
  atomic_store(&g.stop, 1);
  pthread_join(th, NULL);
  CU_ASSERT(grows >= 3);
  CU_ASSERT(eg_store_map_size(s) >= 8 * MIB);
  CU_ASSERT_EQUAL(g.errors, 0);
  CU_ASSERT_EQUAL(g.torn, 0);
  CU_ASSERT(g.scans > 0);
  CU_ASSERT_EQUAL(eg_store_last_lsn(s), GROW_BATCHES);

  eg_txn *r;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(check_big(r, "big"), 0);
  eg_store_reader_free(r);
  size_t grown = eg_store_map_size(s);
  eg_store_close(s);

  /* A reopen asking for less keeps the grown map and the data. */
  s = open_store(MIB);
  CU_ASSERT(eg_store_map_size(s) >= grown);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(check_big(r, "big"), 0);
  eg_store_reader_free(r);
  eg_store_close(s);
  teardown();
}

/* In a child process: opens its own store on tdir and writes `rounds`
 * big runs (8 MB each), growing as needed. Returns the child's status. */
static int grow_in_child(const char *sids[], int rounds) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    /* The child never touches the parent's env; it opens its own. */
    eg_store *c = NULL;
    eg_store_opts o = {.map_size = MIB};
    if (eg_store_open(tdir, &o, &c, NULL, 0)) _exit(2);
    for (int i = 0; i < rounds; i++)
      if (write_big(c, sids[i]) < 0) _exit(3);
    eg_store_close(c);
    _exit(0);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Another process grows the file past this process's map
 * (MDB_MAP_RESIZED): the next reader, then the next writer, adopt it. */
static void test_map_resized_by_other_process(void) {
  setup();
  eg_store *s = open_store(MIB);
  eg_txn *r, *w;
  uint64_t lsn = 0;
  put_session(s, "t", "s1", "u", 1);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  eg_store_reader_end(r);

  /* Round 1: a reader meets the bigger file. */
  const char *one[] = {"child"};
  CU_ASSERT_EQUAL_FATAL(grow_in_child(one, 1), 0);
  CU_ASSERT_EQUAL(eg_store_map_size(s), MIB);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(check_big(r, "child"), 0);
  eg_store_reader_end(r);
  size_t adopted = eg_store_map_size(s);
  CU_ASSERT(adopted >= 8 * MIB);

  /* Round 2: twice the data again, past the adopted size; a writer meets it. */
  const char *two[] = {"child2", "child3"};
  CU_ASSERT_EQUAL_FATAL(grow_in_child(two, 2), 0);
  CU_ASSERT_EQUAL(eg_store_map_size(s), adopted);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT(eg_store_map_size(s) > adopted);
  CU_ASSERT_EQUAL(put_message(w, "t", "s1", 1, NULL), EG_OK);
  CU_ASSERT_EQUAL(eg_store_write_commit(w, &lsn), EG_OK);
  /* One commit here, then the children's, then this one. */
  CU_ASSERT_EQUAL(lsn, 2 + 3 * GROW_BATCHES);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(check_big(r, "child3"), 0);
  eg_store_reader_end(r);
  eg_store_reader_free(r);
  eg_store_close(s);
  teardown();
}

/* ---- corruption ------------------------------------------------------------ */

static void test_corrupt_records(void) {
  setup();
  eg_store *s = open_store(0);
  put_session(s, "t", "s1", "u", 10);
  put_session(s, "t", "s2", "u", 20);
  put_messages(s, "t", "s2", 1, 3, 1);
  eg_store_close(s);
  /* A length-delimited field claiming 80 bytes where 3 follow; a varint
   * that never ends. Neither decodes. */
  raw_put("sessions", "\x01t" "s1", 4, "\x0a\x50" "abc", 5);
  raw_put("messages", "\x01t\x02s2\0\0\0\0\0\0\0\x02", 13,
          "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 12);
  raw_put("idempotency", "\x01t\x02s2" "bad", 8, "\x01", 1);

  s = open_store(0);
  eg_txn *r;
  eg_session_rec *rec;
  eg_message_rec *m;
  uint64_t seq;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_get(r, "t", "s1", &rec), EG_ECORRUPT);
  CU_ASSERT_EQUAL(eg_store_session_get(r, "t", "s2", &rec), EG_OK);
  engram__storage__v1__session_record__free_unpacked(rec, NULL);
  CU_ASSERT_EQUAL(eg_store_message_get(r, "t", "s2", 2, &m), EG_ECORRUPT);
  CU_ASSERT_EQUAL(eg_store_message_get(r, "t", "s2", 3, &m), EG_OK);
  engram__storage__v1__message_record__free_unpacked(m, NULL);
  CU_ASSERT_EQUAL(eg_store_idem_get(r, "t", "s2", "bad", &seq), EG_ECORRUPT);
  eg_store_reader_free(r);
  /* Scans hand out what decodes, then stop with the error. */
  session_list l = {0};
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "u", NULL, &l), EG_ECORRUPT);
  CU_ASSERT_STRING_EQUAL(l.ids, "s2");
  char got[64];
  CU_ASSERT_EQUAL(scan_messages(s, "t", "s2", 0, 0, 0, got, sizeof got), EG_ECORRUPT);
  CU_ASSERT_STRING_EQUAL(got, "1");
  CU_ASSERT_EQUAL(scan_messages(s, "t", "s2", UINT64_MAX, 1, 0, got, sizeof got), EG_ECORRUPT);
  CU_ASSERT_STRING_EQUAL(got, "3");
  eg_store_close(s);

  /* An index entry whose session record is missing. */
  raw_put("sessions_by_user", "\x01t\x01u\0\0\0\0\0\0\0\x63" "ghost", 17, "", 0);
  s = open_store(0);
  session_list g = {0};
  CU_ASSERT_EQUAL(scan_sessions(s, "t", "u", NULL, &g), EG_ECORRUPT);
  CU_ASSERT_EQUAL(g.n, 0);
  eg_store_close(s);
  teardown();
}

void eg_test_register_storage(void) {
  CU_pSuite s = CU_add_suite("storage", NULL, NULL);
  CU_add_test(s, "open, close, reopen", test_open_reopen);
  CU_add_test(s, "newer schema refused", test_schema_newer_refused);
  CU_add_test(s, "data dir that is a file", test_open_not_a_dir);
  CU_add_test(s, "lsn per commit", test_lsn);
  CU_add_test(s, "session put/get/exists", test_session_put_get);
  CU_add_test(s, "id limits", test_id_limits);
  CU_add_test(s, "sessions scan order", test_sessions_scan_order);
  CU_add_test(s, "sessions pagination", test_sessions_pagination);
  CU_add_test(s, "malformed cursor", test_bad_cursor);
  CU_add_test(s, "tenant isolation", test_tenant_isolation);
  CU_add_test(s, "messages scan", test_messages_scan);
  CU_add_test(s, "idempotency", test_idempotency);
  CU_add_test(s, "nested sub abort", test_nested_sub_abort);
  CU_add_test(s, "reader snapshot and renew", test_reader_snapshot_renew);
  CU_add_test(s, "session delete", test_session_delete);
  CU_add_test(s, "map growth", test_map_growth);
  CU_add_test(s, "map resized by another process", test_map_resized_by_other_process);
  CU_add_test(s, "corrupt records", test_corrupt_records);
  CU_add_test(s, "users holding records: each once, bounded, resumed", test_users_scan);
}
