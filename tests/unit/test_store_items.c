/* storage/store_items.c against real LMDB files in a temp dir: the
 * namespace encoding (prefix property and label order), items with their
 * namespace counts, scans by prefix, and the expiry index the sweeper
 * works from, checked by reading the DBs back with plain LMDB calls. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <lmdb.h>
#include <stdarg.h>
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

static eg_store_ns ns_of(int whole, size_t n, ...) {
  char *labels[EG_STORE_NS_LABELS_MAX];
  va_list ap;
  va_start(ap, n);
  for (size_t i = 0; i < n; i++) labels[i] = va_arg(ap, char *);
  va_end(ap);
  eg_store_ns ns;
  CU_ASSERT_EQUAL_FATAL(eg_store_ns_encode(labels, n, whole, &ns), EG_OK);
  return ns;
}

static int has_prefix(const eg_store_ns *a, const eg_store_ns *p) {
  return a->len >= p->len && memcmp(a->buf, p->buf, p->len) == 0;
}

static int enc_cmp(const eg_store_ns *a, const eg_store_ns *b) {
  size_t n = a->len < b->len ? a->len : b->len;
  int c = memcmp(a->buf, b->buf, n);
  return c ? c : (int)a->len - (int)b->len;
}

/* The prefix property and the order, on the cases that could break them. */
static void test_ns_encoding(void) {
  eg_store_ns a = ns_of(1, 1, "a"), ab = ns_of(1, 1, "ab"), a_b = ns_of(1, 2, "a", "b"),
              a_z = ns_of(1, 2, "a", "z"), b = ns_of(1, 1, "b");
  eg_store_ns pa = ns_of(0, 1, "a"), pab = ns_of(0, 1, "ab"), pa_b = ns_of(0, 2, "a", "b");
  eg_store_ns all = ns_of(0, 0);
  /* ("a") covers ("a") and ("a", ...) but never ("ab"); ("ab") never ("a","b"). */
  CU_ASSERT(has_prefix(&a, &pa));
  CU_ASSERT(has_prefix(&a_b, &pa));
  CU_ASSERT(has_prefix(&a_z, &pa));
  CU_ASSERT(!has_prefix(&ab, &pa));
  CU_ASSERT(has_prefix(&ab, &pab));
  CU_ASSERT(!has_prefix(&a_b, &pab));
  CU_ASSERT(has_prefix(&a_b, &pa_b));
  CU_ASSERT(!has_prefix(&a, &pa_b));
  CU_ASSERT(has_prefix(&b, &all) && has_prefix(&a_b, &all));
  /* A whole namespace is no prefix of its children: its end byte. */
  CU_ASSERT(!has_prefix(&a_b, &a));
  /* Tuple order, label by label, the shorter first. */
  CU_ASSERT(enc_cmp(&a, &a_b) < 0);
  CU_ASSERT(enc_cmp(&a_b, &a_z) < 0);
  CU_ASSERT(enc_cmp(&a_z, &ab) < 0);
  CU_ASSERT(enc_cmp(&ab, &b) < 0);
  /* Decode gives the labels back. */
  char buf[EG_STORE_NS_ENC_MAX], *labels[EG_STORE_NS_LABELS_MAX];
  CU_ASSERT_EQUAL(eg_store_ns_decode(a_b.buf, a_b.len, buf, labels, EG_STORE_NS_LABELS_MAX), 2);
  CU_ASSERT_STRING_EQUAL(labels[0], "a");
  CU_ASSERT_STRING_EQUAL(labels[1], "b");
  CU_ASSERT_EQUAL(eg_store_ns_decode(pa.buf, pa.len, buf, labels, EG_STORE_NS_LABELS_MAX), 1);
  CU_ASSERT_EQUAL(eg_store_ns_decode((const uint8_t *)"\0", 1, buf, labels, 4), -1);
  /* Limits: 16 labels, 128 bytes each, 228 in all. */
  char l128[129], l100[101], *many[17];
  memset(l128, 'x', 128), l128[128] = '\0';
  memset(l100, 'y', 100), l100[100] = '\0';
  eg_store_ns ns;
  for (int i = 0; i < 17; i++) many[i] = "l";
  CU_ASSERT_EQUAL(eg_store_ns_encode(many, 16, 1, &ns), EG_OK);
  CU_ASSERT_EQUAL(eg_store_ns_encode(many, 17, 1, &ns), EG_EINVAL);
  char *two[2] = {l128, l100};
  CU_ASSERT_EQUAL(eg_store_ns_encode(two, 2, 1, &ns), EG_OK); /* 228 bytes */
  CU_ASSERT_EQUAL(ns.len, EG_STORE_NS_BYTES_MAX + 3);
  char l101[102];
  memset(l101, 'y', 101), l101[101] = '\0';
  two[1] = l101;
  CU_ASSERT_EQUAL(eg_store_ns_encode(two, 2, 1, &ns), EG_EINVAL); /* 229 */
  char l129[130];
  memset(l129, 'x', 129), l129[129] = '\0';
  char *one[1] = {l129};
  CU_ASSERT_EQUAL(eg_store_ns_encode(one, 1, 1, &ns), EG_EINVAL);
  char *empty[1] = {""};
  CU_ASSERT_EQUAL(eg_store_ns_encode(empty, 1, 1, &ns), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_store_ns_encode(NULL, 0, 1, &ns), EG_EINVAL);
}

static eg_item_rec item(int64_t now, int64_t expire, uint64_t *hashes, size_t n) {
  eg_item_rec r = ENGRAM__STORAGE__V1__STORE_ITEM_RECORD__INIT;
  static uint8_t tok[] = "sealed";
  r.value_token = (ProtobufCBinaryData){sizeof tok - 1, tok};
  r.create_time_us = r.update_time_us = now;
  r.expire_time_us = expire;
  r.ttl_seconds = expire ? 1 : 0;
  r.value_hashes = hashes;
  r.n_value_hashes = n;
  return r;
}

/* Puts rec under (ns, key) as a service would: prev read in the same txn. */
static void put(eg_store *s, const char *tenant, const eg_store_ns *ns, const char *key,
                const eg_item_rec *rec) {
  eg_txn *w;
  eg_item_rec *prev = NULL;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  eg_err e = eg_store_item_get(w, tenant, ns, key, &prev);
  CU_ASSERT_FATAL(e == EG_OK || e == EG_ENOTFOUND);
  CU_ASSERT_EQUAL_FATAL(eg_store_item_put(w, tenant, ns, key, rec, prev), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  if (prev) engram__storage__v1__store_item_record__free_unpacked(prev, NULL);
}

static void del(eg_store *s, const char *tenant, const eg_store_ns *ns, const char *key) {
  eg_txn *w;
  eg_item_rec *prev;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_item_get(w, tenant, ns, key, &prev), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_item_delete(w, tenant, ns, key, prev), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  engram__storage__v1__store_item_record__free_unpacked(prev, NULL);
}

/* How many keys of a DB (read with plain LMDB) start with byte first (-1:
 * all of them). */
static size_t count_keys(const char *db, int first) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_cursor *c;
  MDB_val k, v;
  size_t n = 0;
  CU_ASSERT_EQUAL_FATAL(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 32);
  CU_ASSERT_EQUAL_FATAL(mdb_env_open(env, tdir, MDB_RDONLY, 0600), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_dbi_open(txn, db, 0, &dbi), 0);
  CU_ASSERT_EQUAL_FATAL(mdb_cursor_open(txn, dbi, &c), 0);
  for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
    if (first < 0 || ((const uint8_t *)k.mv_data)[0] == first) n++;
  mdb_cursor_close(c);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return n;
}

/* count_keys with the store closed (a second env of one file in one
 * process would drop the first one's locks), then open again. No reader
 * of *s may be live. */
static size_t count_closed(eg_store **s, const char *db, int first) {
  eg_store_close(*s);
  size_t n = count_keys(db, first);
  *s = open_store();
  return n;
}

typedef struct {
  char keys[16][64];
  size_t n;
} seen;

static int note(void *arg, const eg_item_ref *ref, const eg_item_rec *rec) {
  seen *s = arg;
  (void)rec;
  char buf[EG_STORE_NS_ENC_MAX], *labels[EG_STORE_NS_LABELS_MAX];
  int n = eg_store_ns_decode(ref->ns, ref->ns_len, buf, labels, EG_STORE_NS_LABELS_MAX);
  CU_ASSERT(n > 0);
  size_t at = 0;
  for (int i = 0; i < n; i++) at += (size_t)snprintf(s->keys[s->n] + at, 64 - at, "%s/", labels[i]);
  snprintf(s->keys[s->n] + at, 64 - at, "%s", ref->key);
  s->n++;
  return 0;
}

typedef struct {
  char ns[16][64];
  uint64_t count[16], permanent[16];
  size_t n;
} nsseen;

static int note_ns(void *arg, const uint8_t *enc, size_t len, uint64_t count, uint64_t permanent,
                   eg_store_ns *seek) {
  nsseen *s = arg;
  (void)seek;
  char buf[EG_STORE_NS_ENC_MAX], *labels[EG_STORE_NS_LABELS_MAX];
  int n = eg_store_ns_decode(enc, len, buf, labels, EG_STORE_NS_LABELS_MAX);
  size_t at = 0;
  for (int i = 0; i < n; i++) at += (size_t)snprintf(s->ns[s->n] + at, 64 - at, i ? "/%s" : "%s", labels[i]);
  s->count[s->n] = count;
  s->permanent[s->n++] = permanent;
  return 0;
}

static void test_items_counts_scans(void) {
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  eg_store *s = open_store();
  eg_store_ns a = ns_of(1, 1, "a"), ab = ns_of(1, 1, "ab"), a_b = ns_of(1, 2, "a", "b");
  uint64_t h[2] = {3, 9};
  eg_item_rec r1 = item(100, 0, h, 2), r2 = item(100, 5000, NULL, 0);
  put(s, "t1", &a, "x", &r1);
  put(s, "t1", &a, "y", &r2);
  put(s, "t1", &a_b, "x", &r1);
  put(s, "t1", &ab, "x", &r1);
  put(s, "t2", &a, "x", &r1); /* another tenant never shows */
  eg_txn *r;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  seen got = {0};
  eg_store_ns pa = ns_of(0, 1, "a");
  int more;
  CU_ASSERT_EQUAL(eg_store_items_scan(r, "t1", &pa, 100, note, &got, &more), EG_OK);
  CU_ASSERT_EQUAL(got.n, 3);
  CU_ASSERT_STRING_EQUAL(got.keys[0], "a/x");
  CU_ASSERT_STRING_EQUAL(got.keys[1], "a/y");
  CU_ASSERT_STRING_EQUAL(got.keys[2], "a/b/x");
  CU_ASSERT_EQUAL(more, 0);
  got.n = 0;
  CU_ASSERT_EQUAL(eg_store_items_scan(r, "t1", &pa, 2, note, &got, &more), EG_OK);
  CU_ASSERT_EQUAL(got.n, 2);
  CU_ASSERT_EQUAL(more, 1);
  got.n = 0;
  CU_ASSERT_EQUAL(eg_store_items_scan(r, "t1", &a, 100, note, &got, &more), EG_OK);
  CU_ASSERT_EQUAL(got.n, 2); /* whole: ("a") only */
  nsseen ns = {0};
  CU_ASSERT_EQUAL(eg_store_namespaces_scan(r, "t1", NULL, NULL, note_ns, &ns), EG_OK);
  CU_ASSERT_EQUAL_FATAL(ns.n, 3);
  CU_ASSERT_STRING_EQUAL(ns.ns[0], "a");
  CU_ASSERT_EQUAL(ns.count[0], 2);
  CU_ASSERT_EQUAL(ns.permanent[0], 1);
  CU_ASSERT_STRING_EQUAL(ns.ns[1], "a/b");
  CU_ASSERT_STRING_EQUAL(ns.ns[2], "ab");
  eg_store_reader_end(r);
  eg_store_reader_free(r);
  /* Replacing the TTL item with a permanent one moves the counts and drops
   * its expiry entry; deleting the last item drops the namespace. */
  CU_ASSERT_EQUAL(count_closed(&s, "store_items", 0x00), 1);
  eg_item_rec r3 = item(200, 0, NULL, 0);
  put(s, "t1", &a, "y", &r3);
  CU_ASSERT_EQUAL(count_closed(&s, "store_items", 0x00), 0);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL(eg_store_reader_begin(r), EG_OK);
  ns.n = 0;
  CU_ASSERT_EQUAL(eg_store_namespaces_scan(r, "t1", &a, &pa, note_ns, &ns), EG_OK);
  CU_ASSERT_EQUAL(ns.n, 2);
  CU_ASSERT_EQUAL(ns.count[0], 2);
  CU_ASSERT_EQUAL(ns.permanent[0], 2);
  eg_store_reader_end(r);
  eg_store_reader_free(r);
  del(s, "t1", &a_b, "x");
  CU_ASSERT_EQUAL(count_closed(&s, "store_namespaces", -1), 3); /* t1 a, t1 ab, t2 a */
  eg_store_close(s);
  eg_test_rmdir(tdir);
}

static void test_expiry_index(void) {
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  eg_store *s = open_store();
  eg_store_ns a = ns_of(1, 2, "a", "b");
  char key[16];
  for (int i = 0; i < 10; i++) {
    eg_item_rec rec = item(100, 1000 + i, NULL, 0);
    snprintf(key, sizeof key, "k%d", i);
    put(s, i % 2 ? "t1" : "t2", &a, key, &rec);
  }
  eg_item_rec keep = item(100, 0, NULL, 0);
  put(s, "t1", &a, "forever", &keep);
  CU_ASSERT_EQUAL(count_closed(&s, "store_items", 0x00), 10);
  /* Due before 1005: k0..k4, across both tenants, in bounded steps. */
  eg_txn *w;
  uint64_t n;
  int more;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  /* The backlog, counted no further than asked. */
  CU_ASSERT_EQUAL(eg_store_items_expiring(w, 1005, 100, &n), EG_OK);
  CU_ASSERT_EQUAL(n, 5);
  CU_ASSERT_EQUAL(eg_store_items_expiring(w, 1005, 2, &n), EG_OK);
  CU_ASSERT_EQUAL(n, 2);
  CU_ASSERT_EQUAL(eg_store_items_expiring(w, 1000, 100, &n), EG_OK);
  CU_ASSERT_EQUAL(n, 0);
  CU_ASSERT_EQUAL(eg_store_items_expire(w, 1005, 3, &n, &more), EG_OK);
  CU_ASSERT_EQUAL(n, 3);
  CU_ASSERT_EQUAL(more, 1);
  CU_ASSERT_EQUAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_items_expire(w, 1005, 3, &n, &more), EG_OK);
  CU_ASSERT_EQUAL(n, 2);
  CU_ASSERT_EQUAL(more, 0);
  CU_ASSERT_EQUAL(eg_store_items_expiring(w, 1005, 100, &n), EG_OK);
  CU_ASSERT_EQUAL(n, 0);
  CU_ASSERT_EQUAL(eg_store_items_expiring(w, 1 << 30, 100, &n), EG_OK);
  CU_ASSERT_EQUAL(n, 5);
  CU_ASSERT_EQUAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(count_closed(&s, "store_items", 0x00), 5);
  CU_ASSERT_EQUAL(count_closed(&s, "store_items", -1), 5 + 5 + 1);
  /* The counts followed: t1 has k5 k7 k9 forever, t2 k6 k8. */
  eg_txn *r;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  nsseen ns = {0};
  CU_ASSERT_EQUAL(eg_store_namespaces_scan(r, "t1", NULL, NULL, note_ns, &ns), EG_OK);
  CU_ASSERT_EQUAL(ns.count[0], 4);
  CU_ASSERT_EQUAL(ns.permanent[0], 1);
  ns.n = 0;
  CU_ASSERT_EQUAL(eg_store_namespaces_scan(r, "t2", NULL, NULL, note_ns, &ns), EG_OK);
  CU_ASSERT_EQUAL(ns.count[0], 2);
  eg_store_reader_end(r);
  eg_store_reader_free(r);
  /* Everything due: the rest goes, the permanent item stays. */
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_items_expire(w, 1 << 30, 1000, &n, &more), EG_OK);
  CU_ASSERT_EQUAL(n, 5);
  CU_ASSERT_EQUAL(eg_store_write_commit(w, NULL), EG_OK);
  CU_ASSERT_EQUAL(count_closed(&s, "store_items", -1), 1);
  CU_ASSERT_EQUAL(count_closed(&s, "store_namespaces", -1), 1);
  eg_store_close(s);
  eg_test_rmdir(tdir);
}

void eg_test_register_store_items(void) {
  CU_pSuite s = CU_add_suite("store_items", NULL, NULL);
  CU_add_test(s, "namespace encoding: prefixes, order, limits", test_ns_encoding);
  CU_add_test(s, "items, namespace counts, prefix scans", test_items_counts_scans);
  CU_add_test(s, "expiry index: bounded, across tenants, counts, backlog", test_expiry_index);
}
