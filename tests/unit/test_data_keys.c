/* Envelope keys: key wrapping (crypto/wrap.c), the key store
 * (storage/keystore.c), the cache and the policy (server/data_keys.c),
 * on real LMDB files. */
#define _GNU_SOURCE /* memmem */
#include <CUnit/CUnit.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engram/storage/v1/keys.pb-c.h"
#include "server/data_key_cache.h"
#include "server/data_keys.h"
#include "suites.h"

static char key1[EG_KEYGEN_LINE_MAX], key2[EG_KEYGEN_LINE_MAX];

static int suite_init(void) {
  if (eg_crypto_init() != EG_OK) return -1;
  if (eg_keyring_keygen_line(1, key1, sizeof key1) != EG_OK) return -1;
  return eg_keyring_keygen_line(2, key2, sizeof key2) == EG_OK ? 0 : -1;
}

/* A keyring of the given key lines with `primary`, loaded from a file. */
static eg_keyring *ring(unsigned primary, const char *k1, const char *k2) {
  char text[512];
  snprintf(text, sizeof text, "primary %u\n%s%s", primary, k1, k2);
  return eg_test_keyring(text);
}

static eg_data_keys *dk_open(const char *dir, int64_t cache) {
  char err[512] = "";
  eg_data_keys *dk = NULL;
  eg_err e = eg_data_keys_open(dir, cache, &dk, err, sizeof err);
  if (e) fprintf(stderr, "eg_data_keys_open(%s): %s\n", dir, err);
  CU_ASSERT_EQUAL_FATAL(e, EG_OK);
  return dk;
}

/* dir/keystore, a path in a fresh test dir. */
static const char *ks_dir(char *buf, size_t n) {
  snprintf(buf, n, "%s/keystore", eg_test_tmpdir());
  return buf;
}

static void rm_parent(const char *ksdir) {
  char parent[4200];
  snprintf(parent, sizeof parent, "%s", ksdir);
  *strrchr(parent, '/') = '\0';
  eg_test_rmdir(parent);
}

/* ---- wrapping ---------------------------------------------------------------- */

static void test_wrap_round_trip_and_binding(void) {
  eg_keyring *kr = ring(1, key1, key2), *other = ring(2, key2, "");
  uint8_t key[EG_KEY_LEN], out[EG_KEY_LEN], w[EG_WRAPPED_KEY_LEN];
  eg_random_bytes(key, sizeof key);
  CU_ASSERT_EQUAL(eg_key_wrap(kr, "t", "u", 3, key, w), EG_OK);
  CU_ASSERT_EQUAL(eg_wrapped_key_master_id(w), 1);
  CU_ASSERT_EQUAL(eg_key_unwrap(kr, "t", "u", 3, w, out), EG_OK);
  CU_ASSERT_EQUAL(memcmp(key, out, sizeof key), 0);
  CU_ASSERT(memmem(w, sizeof w, key, sizeof key) == NULL);
  /* Bound to tenant, user and generation; ("t","u") and ("tu","") differ. */
  CU_ASSERT_EQUAL(eg_key_unwrap(kr, "t", "v", 3, w, out), EG_ECORRUPT);
  CU_ASSERT_EQUAL(eg_key_unwrap(kr, "x", "u", 3, w, out), EG_ECORRUPT);
  CU_ASSERT_EQUAL(eg_key_unwrap(kr, "tu", "", 3, w, out), EG_ECORRUPT);
  CU_ASSERT_EQUAL(eg_key_unwrap(kr, "t", "u", 4, w, out), EG_ECORRUPT);
  /* Its master key missing: refused, and out wiped. */
  memset(out, 0xaa, sizeof out);
  CU_ASSERT_EQUAL(eg_key_unwrap(other, "t", "u", 3, w, out), EG_ECORRUPT);
  static const uint8_t zero[EG_KEY_LEN];
  CU_ASSERT_EQUAL(memcmp(out, zero, sizeof out), 0);
  /* Any flipped bit fails. */
  for (size_t i = 0; i < sizeof w * 8; i++) {
    w[i / 8] ^= (uint8_t)(1u << (i % 8));
    CU_ASSERT_EQUAL(eg_key_unwrap(kr, "t", "u", 3, w, out), EG_ECORRUPT);
    w[i / 8] ^= (uint8_t)(1u << (i % 8));
  }
  /* A key 2 primary wraps under 2; the key-1 ring cannot open it. */
  eg_keyring *only1 = ring(1, key1, "");
  CU_ASSERT_EQUAL(eg_key_wrap(other, "t", "u", 1, key, w), EG_OK);
  CU_ASSERT_EQUAL(eg_wrapped_key_master_id(w), 2);
  CU_ASSERT_EQUAL(eg_key_unwrap(kr, "t", "u", 1, w, out), EG_OK);
  CU_ASSERT_EQUAL(eg_key_unwrap(only1, "t", "u", 1, w, out), EG_ECORRUPT);
  eg_keyring_free(only1);
  eg_keyring_free(other);
  eg_keyring_free(kr);
}

/* ---- create, get, current ----------------------------------------------------- */

static void test_create_get_current(void) {
  char dir[4200], err[512];
  eg_keyring *kr = ring(1, key1, "");
  eg_data_keys *dk = dk_open(ks_dir(dir, sizeof dir), 100);
  uint8_t k1[EG_KEY_LEN], k2[EG_KEY_LEN], k3[EG_KEY_LEN];
  uint32_t g1 = 0, g2 = 0;
  CU_ASSERT_EQUAL(eg_data_keys_version(dk), 0);
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "acme", "alice", &g1, k1), EG_OK);
  CU_ASSERT_EQUAL(g1, 1);
  CU_ASSERT_EQUAL(eg_data_keys_version(dk), 1);
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "acme", "alice", &g2, k2), EG_OK);
  CU_ASSERT_EQUAL(g2, 1);
  CU_ASSERT_EQUAL(memcmp(k1, k2, sizeof k1), 0);
  CU_ASSERT_EQUAL(eg_data_keys_version(dk), 1); /* nothing new */
  /* Another user, and the tenant's own key, differ. */
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "acme", "bob", &g2, k2), EG_OK);
  CU_ASSERT_NOT_EQUAL(memcmp(k1, k2, sizeof k1), 0);
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "acme", EG_DATA_KEY_TENANT_USER, &g2, k3), EG_OK);
  CU_ASSERT_NOT_EQUAL(memcmp(k3, k2, sizeof k1), 0);
  CU_ASSERT_EQUAL(eg_data_key_get(dk, kr, "acme", "alice", 1, k2, err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(memcmp(k1, k2, sizeof k1), 0);
  CU_ASSERT_EQUAL(eg_data_key_get(dk, kr, "acme", "alice", 2, k2, err, sizeof err),
                  EG_ECORRUPT);
  CU_ASSERT(strstr(err, "no data key 2") != NULL);
  /* One process at a time: a second open is refused while it is open. */
  eg_data_keys *again = NULL;
  CU_ASSERT_EQUAL(eg_data_keys_open(dir, 100, &again, err, sizeof err), EG_EPRECOND);
  CU_ASSERT(strstr(err, "in use") != NULL);
  /* Reopened: the key comes from the file, not the cache. */
  eg_data_keys_close(dk);
  dk = dk_open(dir, 100);
  CU_ASSERT_EQUAL(eg_data_keys_version(dk), 3);
  CU_ASSERT_EQUAL(eg_data_key_get(dk, kr, "acme", "alice", 1, k2, err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(memcmp(k1, k2, sizeof k1), 0);
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "acme", "alice", &g2, k2), EG_OK);
  CU_ASSERT_EQUAL(g2, 1);
  CU_ASSERT_EQUAL(memcmp(k1, k2, sizeof k1), 0);
  /* A keyring without the master key: refused, naming it. */
  eg_keyring *other = ring(2, key2, "");
  eg_data_keys_close(dk);
  dk = dk_open(dir, 100);
  CU_ASSERT_EQUAL(eg_data_key_get(dk, other, "acme", "alice", 1, k2, err, sizeof err),
                  EG_ECORRUPT);
  CU_ASSERT(strstr(err, "master key 1") != NULL);
  eg_keyring_free(other);
  /* Mode of the dir and the file. */
  struct stat st;
  char path[4300];
  CU_ASSERT_EQUAL(stat(dir, &st), 0);
  CU_ASSERT_EQUAL(st.st_mode & 0777, 0700);
  snprintf(path, sizeof path, "%s/data.mdb", dir);
  CU_ASSERT_EQUAL(stat(path, &st), 0);
  CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
  eg_data_keys_close(dk);
  eg_keyring_free(kr);
  rm_parent(dir);
}

static void test_id_limits(void) {
  char dir[4200], err[512], id[200];
  eg_keyring *kr = ring(1, key1, "");
  eg_data_keys *dk = dk_open(ks_dir(dir, sizeof dir), 100);
  uint8_t k[EG_KEY_LEN];
  uint32_t g;
  uint64_t n;
  memset(id, 'a', 128);
  id[128] = '\0';
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, id, id, &g, k), EG_OK); /* at the edge */
  CU_ASSERT_EQUAL(eg_data_key_get(dk, kr, id, id, g, k, err, sizeof err), EG_OK);
  id[128] = 'a';
  id[129] = '\0';
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, id, "u", &g, k), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "t", id, &g, k), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_data_key_get(dk, kr, "t", id, 1, k, err, sizeof err), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_data_keys_erase_user(dk, "t", id, &n), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_data_keys_erase_tenant(dk, id, &n), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_data_keys_version(dk), 1); /* nothing written */
  eg_data_keys_close(dk);
  eg_keyring_free(kr);
  rm_parent(dir);
}

/* ---- concurrency ---------------------------------------------------------------- */

#define RACERS 8
struct racer {
  eg_data_keys *dk;
  const eg_keyring *kr;
  pthread_barrier_t *go;
  uint32_t gen;
  uint8_t key[EG_KEY_LEN];
  eg_err e;
};

static void *race_current(void *arg) {
  struct racer *r = arg;
  pthread_barrier_wait(r->go);
  r->e = eg_data_key_current(r->dk, r->kr, "acme", "carol", &r->gen, r->key);
  return NULL;
}

static void test_concurrent_create(void) {
  char dir[4200];
  eg_keyring *kr = ring(1, key1, "");
  eg_data_keys *dk = dk_open(ks_dir(dir, sizeof dir), 100);
  pthread_t th[RACERS];
  struct racer r[RACERS];
  pthread_barrier_t go;
  pthread_barrier_init(&go, NULL, RACERS);
  for (int i = 0; i < RACERS; i++) {
    r[i] = (struct racer){.dk = dk, .kr = kr, .go = &go};
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, race_current, &r[i]), 0);
  }
  for (int i = 0; i < RACERS; i++) pthread_join(th[i], NULL);
  pthread_barrier_destroy(&go);
  for (int i = 0; i < RACERS; i++) {
    CU_ASSERT_EQUAL(r[i].e, EG_OK);
    CU_ASSERT_EQUAL(r[i].gen, 1);
    CU_ASSERT_EQUAL(memcmp(r[i].key, r[0].key, EG_KEY_LEN), 0);
  }
  CU_ASSERT_EQUAL(eg_data_keys_version(dk), 1); /* made once */
  eg_data_keys_close(dk);
  eg_keyring_free(kr);
  rm_parent(dir);
}

/* ---- cache ---------------------------------------------------------------------- */

static void test_cache_eviction(void) {
  eg_dk_cache *c = NULL;
  uint8_t k[EG_KEY_LEN], out[EG_KEY_LEN];
  uint32_t gen;
  char user[16];
  CU_ASSERT_EQUAL_FATAL(eg_dk_cache_new(16, &c), EG_OK);
  for (int i = 0; i < 20; i++) {
    snprintf(user, sizeof user, "u%d", i);
    memset(k, i, sizeof k);
    eg_dk_cache_put(c, eg_dk_cache_epoch(c), "t", user, 1, 1, k);
    CU_ASSERT_EQUAL(eg_dk_cache_len(c), i < 16 ? (size_t)i + 1 : 16);
    if (i == 10) CU_ASSERT(eg_dk_cache_get(c, "t", "u0", 1, out)); /* u0 now recent */
  }
  /* The least recently used went first: u1..u4, not u0. */
  CU_ASSERT(eg_dk_cache_get(c, "t", "u0", 1, out));
  CU_ASSERT_EQUAL(out[0], 0);
  for (int i = 1; i <= 4; i++) {
    snprintf(user, sizeof user, "u%d", i);
    CU_ASSERT_FALSE(eg_dk_cache_get(c, "t", user, 1, out));
  }
  CU_ASSERT(eg_dk_cache_current(c, "t", "u19", &gen, out));
  CU_ASSERT_EQUAL(gen, 1);
  CU_ASSERT_EQUAL(out[0], 19);
  /* A newer current generation replaces the mark; both stay readable. */
  memset(k, 0x77, sizeof k);
  eg_dk_cache_put(c, eg_dk_cache_epoch(c), "t", "u19", 2, 1, k);
  CU_ASSERT(eg_dk_cache_current(c, "t", "u19", &gen, out));
  CU_ASSERT_EQUAL(gen, 2);
  CU_ASSERT(eg_dk_cache_get(c, "t", "u19", 1, out));
  CU_ASSERT_EQUAL(out[0], 19);
  /* A put with a stale epoch (a drop came between) stores nothing. */
  uint64_t before = eg_dk_cache_epoch(c);
  eg_dk_cache_drop(c, "t", "u19");
  CU_ASSERT_FALSE(eg_dk_cache_get(c, "t", "u19", 2, out));
  eg_dk_cache_put(c, before, "t", "u19", 2, 1, k);
  CU_ASSERT_FALSE(eg_dk_cache_current(c, "t", "u19", &gen, out));
  CU_ASSERT_EQUAL(eg_dk_cache_len(c), 14);
  eg_dk_cache_drop(c, "t", NULL);
  CU_ASSERT_EQUAL(eg_dk_cache_len(c), 0);
  eg_dk_cache_free(c);

  /* Through the store: more users than the cache holds all still open. */
  char dir[4200], err[256];
  eg_keyring *kr = ring(1, key1, "");
  eg_data_keys *dk = dk_open(ks_dir(dir, sizeof dir), 16);
  uint8_t keys[40][EG_KEY_LEN];
  for (int i = 0; i < 40; i++) {
    snprintf(user, sizeof user, "u%d", i);
    CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "t", user, &gen, keys[i]), EG_OK);
  }
  for (int i = 0; i < 40; i++) {
    snprintf(user, sizeof user, "u%d", i);
    CU_ASSERT_EQUAL(eg_data_key_get(dk, kr, "t", user, 1, out, err, sizeof err), EG_OK);
    CU_ASSERT_EQUAL(memcmp(out, keys[i], EG_KEY_LEN), 0);
  }
  eg_data_keys_close(dk);
  eg_keyring_free(kr);
  rm_parent(dir);
}

/* ---- erasure ---------------------------------------------------------------------- */

/* The whole of dir/data.mdb, malloc'd. */
static uint8_t *read_data_file(const char *dir, size_t *len) {
  char path[4300];
  snprintf(path, sizeof path, "%s/data.mdb", dir);
  FILE *f = fopen(path, "rb");
  CU_ASSERT_FATAL(f != NULL);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = malloc((size_t)n + 1);
  CU_ASSERT_FATAL(buf != NULL);
  CU_ASSERT_EQUAL(fread(buf, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return buf;
}

static int file_holds(const char *dir, const void *needle, size_t n) {
  size_t len;
  uint8_t *buf = read_data_file(dir, &len);
  int found = memmem(buf, len, needle, n) != NULL;
  free(buf);
  return found;
}

/* Collects every changed record's wrapped key by (user, gen). */
struct wrapped_of {
  const char *user;
  uint32_t gen;
  uint8_t wrapped[EG_WRAPPED_KEY_LEN];
  int found;
};

static eg_err find_wrapped(void *arg, uint64_t version, const uint8_t *rec, size_t len) {
  struct wrapped_of *w = arg;
  Engram__Storage__V1__KeyRecord *m = engram__storage__v1__key_record__unpack(NULL, len, rec);
  CU_ASSERT_FATAL(m != NULL);
  CU_ASSERT_EQUAL(m->version, version);
  if (strcmp(m->user, w->user) == 0 && m->generation == w->gen &&
      m->wrapped_key.len == EG_WRAPPED_KEY_LEN) {
    memcpy(w->wrapped, m->wrapped_key.data, EG_WRAPPED_KEY_LEN);
    w->found = 1;
  }
  engram__storage__v1__key_record__free_unpacked(m, NULL);
  return EG_OK;
}

static void wrapped_of(eg_data_keys *dk, const char *user, uint32_t gen, uint8_t *out) {
  struct wrapped_of w = {.user = user, .gen = gen};
  uint64_t last;
  CU_ASSERT_EQUAL(eg_data_keys_changes(dk, 0, 100000, find_wrapped, &w, &last), EG_OK);
  CU_ASSERT_FATAL(w.found);
  memcpy(out, w.wrapped, EG_WRAPPED_KEY_LEN);
}

static void test_erase_user_compacts(void) {
  char dir[4200], err[512], user[16];
  eg_keyring *kr = ring(1, key1, "");
  eg_data_keys *dk = dk_open(ks_dir(dir, sizeof dir), 100);
  uint8_t key[EG_KEY_LEN], out[EG_KEY_LEN], wrapped[EG_WRAPPED_KEY_LEN];
  uint32_t gen;
  uint64_t n = 0;
  /* Neighbours on both sides in key order, so the victim's row shares
   * pages with live rows. */
  for (int i = 0; i < 50; i++) {
    snprintf(user, sizeof user, "u%02d", i);
    CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "acme", user, &gen, out), EG_OK);
  }
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "acme", "u25", &gen, key), EG_OK);
  wrapped_of(dk, "u25", 1, wrapped);
  CU_ASSERT(file_holds(dir, wrapped, sizeof wrapped));  /* the proof can see it */
  CU_ASSERT_FALSE(file_holds(dir, key, sizeof key));    /* never the raw key */

  CU_ASSERT_EQUAL(eg_data_keys_erase_user(dk, "acme", "u25", &n), EG_OK);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_FALSE(file_holds(dir, wrapped, sizeof wrapped));
  CU_ASSERT_FALSE(file_holds(dir, key, sizeof key));
  CU_ASSERT_EQUAL(eg_data_key_get(dk, kr, "acme", "u25", 1, out, err, sizeof err), EG_EERASED);
  /* The neighbours are untouched. */
  CU_ASSERT_EQUAL(eg_data_key_get(dk, kr, "acme", "u24", 1, out, err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(eg_data_key_get(dk, kr, "acme", "u26", 1, out, err, sizeof err), EG_OK);
  /* Erasing again destroys nothing more. */
  CU_ASSERT_EQUAL(eg_data_keys_erase_user(dk, "acme", "u25", &n), EG_OK);
  CU_ASSERT_EQUAL(n, 0);
  /* A new write gets a new generation; the old one stays erased, also
   * after a reopen. */
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "acme", "u25", &gen, out), EG_OK);
  CU_ASSERT_EQUAL(gen, 2);
  CU_ASSERT_NOT_EQUAL(memcmp(out, key, sizeof key), 0);
  eg_data_keys_close(dk);
  dk = dk_open(dir, 100);
  CU_ASSERT_EQUAL(eg_data_key_get(dk, kr, "acme", "u25", 1, out, err, sizeof err), EG_EERASED);
  CU_ASSERT_EQUAL(eg_data_key_get(dk, kr, "acme", "u25", 2, out, err, sizeof err), EG_OK);
  eg_data_keys_close(dk);
  eg_keyring_free(kr);
  rm_parent(dir);
}

static void test_erase_tenant(void) {
  char dir[4200], err[512], user[16];
  eg_keyring *kr = ring(1, key1, "");
  eg_data_keys *dk = dk_open(ks_dir(dir, sizeof dir), 100);
  uint8_t out[EG_KEY_LEN], w[3][EG_WRAPPED_KEY_LEN];
  uint32_t gen;
  uint64_t n = 0;
  for (int i = 0; i < 3; i++) {
    snprintf(user, sizeof user, "u%d", i);
    CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "acme", user, &gen, out), EG_OK);
    wrapped_of(dk, user, 1, w[i]);
  }
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "acme", "", &gen, out), EG_OK);
  /* A tenant whose id extends acme's is another tenant. */
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "acmex", "u0", &gen, out), EG_OK);
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "other", "u0", &gen, out), EG_OK);
  CU_ASSERT_EQUAL(eg_data_keys_erase_tenant(dk, "acme", &n), EG_OK);
  CU_ASSERT_EQUAL(n, 4); /* three users and the tenant's own key */
  for (int i = 0; i < 3; i++) {
    snprintf(user, sizeof user, "u%d", i);
    CU_ASSERT_EQUAL(eg_data_key_get(dk, kr, "acme", user, 1, out, err, sizeof err), EG_EERASED);
    CU_ASSERT_FALSE(file_holds(dir, w[i], EG_WRAPPED_KEY_LEN));
  }
  CU_ASSERT_EQUAL(eg_data_key_get(dk, kr, "acme", "", 1, out, err, sizeof err), EG_EERASED);
  CU_ASSERT_EQUAL(eg_data_key_get(dk, kr, "acmex", "u0", 1, out, err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(eg_data_key_get(dk, kr, "other", "u0", 1, out, err, sizeof err), EG_OK);
  eg_data_keys_close(dk);
  eg_keyring_free(kr);
  rm_parent(dir);
}

/* ---- replication and copies ------------------------------------------------------- */

/* Applies each change to another store, one by one. */
static eg_err apply_to(void *arg, uint64_t version, const uint8_t *rec, size_t len) {
  return eg_data_keys_apply(arg, version, rec, len);
}

/* Copies every change of `from` after `since` into `to`. */
static void ship(eg_data_keys *from, eg_data_keys *to, uint64_t since) {
  uint64_t last;
  CU_ASSERT_EQUAL(eg_data_keys_changes(from, since, 100000, apply_to, to, &last), EG_OK);
  CU_ASSERT_EQUAL(last, eg_data_keys_version(from));
}

static void test_changes_apply_round_trip(void) {
  char d1[4200], d2[4200], err[512];
  eg_keyring *kr = ring(1, key1, "");
  eg_data_keys *p = dk_open(ks_dir(d1, sizeof d1), 100);
  eg_data_keys *r = dk_open(ks_dir(d2, sizeof d2), 100);
  uint8_t ka[EG_KEY_LEN], kb[EG_KEY_LEN], out[EG_KEY_LEN], wa[EG_WRAPPED_KEY_LEN];
  uint32_t gen;
  uint64_t n, last;
  CU_ASSERT_EQUAL(eg_data_key_current(p, kr, "acme", "a", &gen, ka), EG_OK);
  CU_ASSERT_EQUAL(eg_data_key_current(p, kr, "acme", "b", &gen, kb), EG_OK);
  ship(p, r, 0);
  CU_ASSERT_EQUAL(eg_data_keys_version(r), 2);
  CU_ASSERT_EQUAL(eg_data_key_get(r, kr, "acme", "a", 1, out, err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(memcmp(out, ka, sizeof ka), 0);
  CU_ASSERT_EQUAL(eg_data_key_get(r, kr, "acme", "b", 1, out, err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(memcmp(out, kb, sizeof kb), 0);
  /* Bounded: max 1 gives the first change only. */
  CU_ASSERT_EQUAL(eg_data_keys_changes(p, 0, 1, apply_to, r, &last), EG_OK);
  CU_ASSERT_EQUAL(last, 1);
  CU_ASSERT_EQUAL(eg_data_keys_changes(p, 2, 10, apply_to, r, &last), EG_OK);
  CU_ASSERT_EQUAL(last, 2); /* nothing after 2 */

  /* The erasure travels as a tombstone; the replica compacts too. */
  wrapped_of(r, "a", 1, wa);
  CU_ASSERT(file_holds(d2, wa, sizeof wa));
  CU_ASSERT_EQUAL(eg_data_keys_erase_user(p, "acme", "a", &n), EG_OK);
  ship(p, r, 2);
  CU_ASSERT_EQUAL(eg_data_keys_version(r), 3);
  CU_ASSERT_EQUAL(eg_data_key_get(r, kr, "acme", "a", 1, out, err, sizeof err), EG_EERASED);
  CU_ASSERT_FALSE(file_holds(d2, wa, sizeof wa));
  /* A replay from 0 (a replica that was ahead of a new primary) leaves
   * the tombstone a tombstone. */
  ship(p, r, 0);
  CU_ASSERT_EQUAL(eg_data_key_get(r, kr, "acme", "a", 1, out, err, sizeof err), EG_EERASED);
  CU_ASSERT_EQUAL(eg_data_key_get(r, kr, "acme", "b", 1, out, err, sizeof err), EG_OK);
  eg_data_keys_close(p);
  eg_data_keys_close(r);
  rm_parent(d1);
  rm_parent(d2);
  eg_keyring_free(kr);
}

/* Keeps the encoded record of the first change. */
struct first_rec {
  uint8_t buf[512];
  size_t len;
  uint64_t version;
};

static eg_err keep_first(void *arg, uint64_t version, const uint8_t *rec, size_t len) {
  struct first_rec *f = arg;
  CU_ASSERT_FATAL(len <= sizeof f->buf);
  memcpy(f->buf, rec, len);
  f->len = len;
  f->version = version;
  return EG_OK;
}

static void test_tombstone_never_resurrected(void) {
  char d1[4200], d2[4200], err[512];
  eg_keyring *kr = ring(1, key1, "");
  eg_data_keys *p = dk_open(ks_dir(d1, sizeof d1), 100);
  eg_data_keys *r = dk_open(ks_dir(d2, sizeof d2), 100);
  uint8_t k[EG_KEY_LEN];
  uint32_t gen;
  uint64_t n, last;
  struct first_rec live, tomb;
  CU_ASSERT_EQUAL(eg_data_key_current(p, kr, "acme", "a", &gen, k), EG_OK);
  CU_ASSERT_EQUAL(eg_data_keys_changes(p, 0, 1, keep_first, &live, &last), EG_OK);
  CU_ASSERT_EQUAL(eg_data_keys_erase_user(p, "acme", "a", &n), EG_OK);
  CU_ASSERT_EQUAL(eg_data_keys_changes(p, 1, 1, keep_first, &tomb, &last), EG_OK);
  CU_ASSERT_EQUAL(tomb.version, 2);
  /* The tombstone first, then the live record it replaced. */
  CU_ASSERT_EQUAL(eg_data_keys_apply(r, tomb.version, tomb.buf, tomb.len), EG_OK);
  CU_ASSERT_EQUAL(eg_data_keys_apply(r, live.version, live.buf, live.len), EG_OK);
  CU_ASSERT_EQUAL(eg_data_key_get(r, kr, "acme", "a", 1, k, err, sizeof err), EG_EERASED);
  /* A record that does not decode, or whose version lies, stores nothing. */
  uint8_t junk[3] = {0xff, 0xff, 0xff};
  CU_ASSERT_EQUAL(eg_data_keys_apply(r, 9, junk, sizeof junk), EG_ECORRUPT);
  CU_ASSERT_EQUAL(eg_data_keys_apply(r, 9, live.buf, live.len), EG_ECORRUPT);
  /* The version went to 2 and stayed there: it never goes down. */
  CU_ASSERT_EQUAL(eg_data_keys_version(r), 2);
  eg_data_keys_close(p);
  eg_data_keys_close(r);
  rm_parent(d1);
  rm_parent(d2);
  eg_keyring_free(kr);
}

static void test_copy(void) {
  char d1[4200], d2[4200], path[4300], err[512];
  eg_keyring *kr = ring(1, key1, "");
  eg_data_keys *dk = dk_open(ks_dir(d1, sizeof d1), 100);
  uint8_t k[EG_KEY_LEN], out[EG_KEY_LEN];
  uint32_t gen;
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "acme", "a", &gen, k), EG_OK);
  ks_dir(d2, sizeof d2);
  CU_ASSERT_EQUAL_FATAL(mkdir(d2, 0700), 0);
  snprintf(path, sizeof path, "%s/data.mdb", d2);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  CU_ASSERT_FATAL(fd >= 0);
  CU_ASSERT_EQUAL(eg_data_keys_copy(dk, fd), EG_OK);
  close(fd);
  eg_data_keys *copy = dk_open(d2, 100);
  CU_ASSERT_EQUAL(eg_data_keys_version(copy), 1);
  CU_ASSERT_EQUAL(eg_data_key_get(copy, kr, "acme", "a", 1, out, err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(memcmp(out, k, sizeof k), 0);
  eg_data_keys_close(copy);
  eg_data_keys_close(dk);
  rm_parent(d1);
  rm_parent(d2);
  eg_keyring_free(kr);
}


/* ---- rotation ------------------------------------------------------------------- */

struct users_seen {
  int n;
  char last[64];
  uint32_t cur, oldest;
};

static int count_user(void *arg, const char *tenant, const char *user, uint32_t cur,
                      uint32_t oldest) {
  struct users_seen *u = arg;
  u->n++;
  snprintf(u->last, sizeof u->last, "%s/%s", tenant, user);
  u->cur = cur;
  u->oldest = oldest;
  return 0;
}

static int stop_at_two(void *arg, const char *tenant, const char *user, uint32_t cur,
                       uint32_t oldest) {
  int *n = arg;
  return ++*n == 2 ? 42 : 0;
}

static void test_rotate_retire_each_user(void) {
  char dir[4200], err[512];
  eg_keyring *kr = ring(1, key1, "");
  eg_data_keys *dk = dk_open(ks_dir(dir, sizeof dir), 100);
  uint8_t k1[EG_KEY_LEN], k2[EG_KEY_LEN], out[EG_KEY_LEN];
  uint32_t gen;
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "acme", "a", &gen, k1), EG_OK);
  CU_ASSERT_EQUAL(eg_data_keys_rotate(dk, kr, "acme", "a", &gen), EG_OK);
  CU_ASSERT_EQUAL(gen, 2);
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "acme", "a", &gen, k2), EG_OK);
  CU_ASSERT_EQUAL(gen, 2);
  CU_ASSERT_NOT_EQUAL(memcmp(k1, k2, sizeof k1), 0);
  CU_ASSERT_EQUAL(eg_data_key_get(dk, kr, "acme", "a", 1, out, err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(memcmp(out, k1, sizeof k1), 0);
  struct users_seen u = {0};
  CU_ASSERT_EQUAL(eg_data_keys_each_user(dk, count_user, &u), 0);
  CU_ASSERT_EQUAL(u.n, 1);
  CU_ASSERT_STRING_EQUAL(u.last, "acme/a");
  CU_ASSERT_EQUAL(u.cur, 2);
  CU_ASSERT_EQUAL(u.oldest, 1);
  /* Retired below the store's latest only: below another, tokens may
   * still be under a generation in between. */
  uint64_t retired;
  CU_ASSERT_EQUAL(eg_data_keys_retire_before(dk, "acme", "a", 1, &retired), EG_EABORTED);
  CU_ASSERT_EQUAL(eg_data_keys_retire_before(dk, "acme", "a", 7, &retired), EG_EABORTED);
  CU_ASSERT_EQUAL(eg_data_key_live(dk, "acme", "a", 1), EG_OK);
  CU_ASSERT_EQUAL(eg_data_keys_retire_before(dk, "acme", "a", 2, &retired), EG_OK);
  CU_ASSERT_EQUAL(retired, 1);
  CU_ASSERT_EQUAL(eg_data_key_get(dk, kr, "acme", "a", 1, out, err, sizeof err), EG_EERASED);
  CU_ASSERT_EQUAL(eg_data_key_live(dk, "acme", "a", 1), EG_EERASED);
  CU_ASSERT_EQUAL(eg_data_key_live(dk, "acme", "a", 2), EG_OK);
  CU_ASSERT_EQUAL(eg_data_key_live(dk, "acme", "a", 3), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_data_keys_retire_before(dk, "acme", "a", 2, &retired), EG_OK);
  CU_ASSERT_EQUAL(retired, 0); /* again: nothing */
  memset(&u, 0, sizeof u);
  eg_data_keys_each_user(dk, count_user, &u);
  CU_ASSERT_EQUAL(u.cur, 2);
  CU_ASSERT_EQUAL(u.oldest, 2);
  /* Batches of users: more than one scan's worth, each listed once; an
   * erased user is not listed; fn's value stops the walk. */
  char user[16];
  for (int i = 0; i < 300; i++) {
    snprintf(user, sizeof user, "b%03d", i);
    CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "bulk", user, &gen, out), EG_OK);
  }
  uint64_t n;
  CU_ASSERT_EQUAL(eg_data_keys_erase_user(dk, "bulk", "b100", &n), EG_OK);
  memset(&u, 0, sizeof u);
  CU_ASSERT_EQUAL(eg_data_keys_each_user(dk, count_user, &u), 0);
  CU_ASSERT_EQUAL(u.n, 1 + 299);
  int seen = 0;
  CU_ASSERT_EQUAL(eg_data_keys_each_user(dk, stop_at_two, &seen), 42);
  CU_ASSERT_EQUAL(seen, 2);
  eg_data_keys_close(dk);
  eg_keyring_free(kr);
  rm_parent(dir);
}

/* ---- master keys ------------------------------------------------------------------ */

static void test_rewrap_and_status(void) {
  char dir[4200], err[512], user[16];
  eg_keyring *kr1 = ring(1, key1, "");
  eg_data_keys *dk = dk_open(ks_dir(dir, sizeof dir), 100);
  uint8_t keys[5][EG_KEY_LEN], out[EG_KEY_LEN], w0[EG_WRAPPED_KEY_LEN];
  uint32_t gen;
  uint64_t n, done, remaining;
  for (int i = 0; i < 5; i++) {
    snprintf(user, sizeof user, "u%d", i);
    CU_ASSERT_EQUAL(eg_data_key_current(dk, kr1, "acme", user, &gen, keys[i]), EG_OK);
  }
  CU_ASSERT_EQUAL(eg_data_keys_erase_user(dk, "acme", "u4", &n), EG_OK);
  eg_data_keys_stats st;
  eg_master_key_use uses[4];
  CU_ASSERT_EQUAL(eg_data_keys_status(dk, &st, uses, 4), EG_OK);
  CU_ASSERT_EQUAL(st.data_keys, 4);
  CU_ASSERT_EQUAL(st.erased_users, 1);
  CU_ASSERT_EQUAL_FATAL(st.n_masters, 1);
  CU_ASSERT_EQUAL(uses[0].master_key_id, 1);
  CU_ASSERT_EQUAL(uses[0].data_keys, 4);

  /* Key 2 added and made primary: rewrap moves keys 1 -> 2, bounded. */
  wrapped_of(dk, "u0", 1, w0);
  eg_keyring *kr12 = ring(2, key1, key2);
  CU_ASSERT_EQUAL(eg_data_keys_rewrap(dk, kr12, 3, &done, &remaining), EG_OK);
  CU_ASSERT_EQUAL(done, 3);
  CU_ASSERT_EQUAL(remaining, 1);
  CU_ASSERT_EQUAL(eg_data_keys_status(dk, &st, uses, 4), EG_OK);
  CU_ASSERT_EQUAL_FATAL(st.n_masters, 2);
  CU_ASSERT_EQUAL(uses[0].master_key_id, 1);
  CU_ASSERT_EQUAL(uses[0].data_keys, 1);
  CU_ASSERT_EQUAL(uses[1].master_key_id, 2);
  CU_ASSERT_EQUAL(uses[1].data_keys, 3);
  /* With cap 1 only the lowest id is listed; n_masters counts both. */
  CU_ASSERT_EQUAL(eg_data_keys_status(dk, &st, uses, 1), EG_OK);
  CU_ASSERT_EQUAL(st.n_masters, 2);
  CU_ASSERT_EQUAL(uses[0].master_key_id, 1);
  CU_ASSERT_EQUAL(eg_data_keys_rewrap(dk, kr12, 0, &done, &remaining), EG_OK);
  CU_ASSERT_EQUAL(done, 1);
  CU_ASSERT_EQUAL(remaining, 0);
  CU_ASSERT_EQUAL(eg_data_keys_rewrap(dk, kr12, 0, &done, &remaining), EG_OK);
  CU_ASSERT_EQUAL(done, 0);
  CU_ASSERT_EQUAL(eg_data_keys_status(dk, &st, uses, 4), EG_OK);
  CU_ASSERT_EQUAL_FATAL(st.n_masters, 1);
  CU_ASSERT_EQUAL(uses[0].master_key_id, 2);
  CU_ASSERT_EQUAL(uses[0].data_keys, 4);
  /* The old wrapping is gone from the file (compacted). */
  CU_ASSERT_FALSE(file_holds(dir, w0, sizeof w0));

  /* Key 1 can go: a keyring of key 2 alone opens every key. */
  eg_keyring *kr2 = ring(2, key2, "");
  eg_data_keys_close(dk);
  dk = dk_open(dir, 100);
  for (int i = 0; i < 4; i++) {
    snprintf(user, sizeof user, "u%d", i);
    CU_ASSERT_EQUAL(eg_data_key_get(dk, kr2, "acme", user, 1, out, err, sizeof err), EG_OK);
    CU_ASSERT_EQUAL(memcmp(out, keys[i], EG_KEY_LEN), 0);
  }
  /* A rewrap whose keyring lacks a key's master key is refused. */
  eg_keyring *only1 = ring(1, key1, "");
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr2, "acme", "new", &gen, out), EG_OK);
  CU_ASSERT_EQUAL(eg_data_keys_rewrap(dk, only1, 0, &done, &remaining), EG_EPRECOND);
  eg_keyring_free(only1);
  eg_data_keys_close(dk);
  eg_keyring_free(kr1);
  eg_keyring_free(kr12);
  eg_keyring_free(kr2);
  rm_parent(dir);
}

/* ---- stale fills and keys never made ------------------------------------------- */

/* The reviewer's race, step by step through the cache: a reader misses
 * and takes epoch E, reads generation 1; a rotation stores generation 2;
 * the reader's put of 1 as current at E must not make 1 current again. */
static void test_cache_stale_current_after_rotation(void) {
  eg_dk_cache *c = NULL;
  uint8_t k1[EG_KEY_LEN], k2[EG_KEY_LEN], out[EG_KEY_LEN];
  uint32_t gen = 0;
  memset(k1, 1, sizeof k1);
  memset(k2, 2, sizeof k2);
  CU_ASSERT_EQUAL_FATAL(eg_dk_cache_new(8, &c), EG_OK);
  /* Without the freeze (a put that got past the epoch): 2 stays current. */
  uint64_t e = eg_dk_cache_epoch(c);
  eg_dk_cache_put(c, e, "t", "u", 2, 1, k2);
  eg_dk_cache_put(c, e, "t", "u", 1, 1, k1);
  CU_ASSERT(eg_dk_cache_current(c, "t", "u", &gen, out));
  CU_ASSERT_EQUAL(gen, 2);
  CU_ASSERT_EQUAL(memcmp(out, k2, sizeof k2), 0);
  CU_ASSERT(eg_dk_cache_get(c, "t", "u", 1, out)); /* kept as an old generation */
  /* As a rotation runs it: the reader's epoch is from before the freeze. */
  eg_dk_cache_drop(c, "t", "u");
  e = eg_dk_cache_epoch(c);
  eg_dk_cache_freeze(c, "t", "u");
  /* No fill while frozen, even at the epoch of now. */
  eg_dk_cache_put(c, eg_dk_cache_epoch(c), "t", "u", 1, 1, k1);
  CU_ASSERT_FALSE(eg_dk_cache_has(c, "t", "u", 1));
  eg_dk_cache_thaw(c);
  eg_dk_cache_put(c, eg_dk_cache_epoch(c), "t", "u", 2, 1, k2); /* the rotation's own */
  eg_dk_cache_put(c, e, "t", "u", 1, 1, k1);                    /* the stale reader's */
  CU_ASSERT(eg_dk_cache_current(c, "t", "u", &gen, out));
  CU_ASSERT_EQUAL(gen, 2);
  CU_ASSERT_FALSE(eg_dk_cache_has(c, "t", "u", 1));
  /* A later generation still takes over. */
  eg_dk_cache_put(c, eg_dk_cache_epoch(c), "t", "u", 3, 1, k1);
  CU_ASSERT(eg_dk_cache_current(c, "t", "u", &gen, out));
  CU_ASSERT_EQUAL(gen, 3);
  eg_dk_cache_free(c);
}

/* The same race through the data keys: the current key a reader gets
 * after a rotation is the new one, and the old one is not made current by
 * the cache again. */
static void test_current_after_rotation_is_the_new_one(void) {
  char dir[4200];
  eg_keyring *kr = ring(1, key1, "");
  eg_data_keys *dk = dk_open(ks_dir(dir, sizeof dir), 100);
  uint8_t k[EG_KEY_LEN], k2[EG_KEY_LEN];
  uint32_t gen;
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "acme", "a", &gen, k), EG_OK); /* cached: 1 */
  CU_ASSERT_EQUAL(eg_data_keys_rotate(dk, kr, "acme", "a", &gen), EG_OK);
  CU_ASSERT_EQUAL(gen, 2);
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "acme", "a", &gen, k2), EG_OK);
  CU_ASSERT_EQUAL(gen, 2);
  CU_ASSERT_EQUAL(eg_data_key_current_existing(dk, kr, "acme", "a", &gen, k), EG_OK);
  CU_ASSERT_EQUAL(gen, 2);
  CU_ASSERT_EQUAL(memcmp(k, k2, sizeof k), 0);
  CU_ASSERT_EQUAL(eg_data_key_latest(dk, "acme", "a", &gen), EG_OK);
  CU_ASSERT_EQUAL(gen, 2);
  /* A fresh store (nothing cached) agrees. */
  eg_data_keys_close(dk);
  dk = dk_open(dir, 100);
  CU_ASSERT_EQUAL(eg_data_key_current_existing(dk, kr, "acme", "a", &gen, k), EG_OK);
  CU_ASSERT_EQUAL(gen, 2);
  CU_ASSERT_EQUAL(memcmp(k, k2, sizeof k), 0);
  eg_data_keys_close(dk);
  eg_keyring_free(kr);
  rm_parent(dir);
}

/* Neither eg_data_key_current_existing nor a rotation makes a key for a
 * user without one or an erased one; eg_data_key_live says which. */
static void test_never_create_for_unknown_or_erased(void) {
  char dir[4200];
  eg_keyring *kr = ring(1, key1, "");
  eg_data_keys *dk = dk_open(ks_dir(dir, sizeof dir), 100);
  uint8_t k[EG_KEY_LEN];
  uint32_t gen = 0;
  uint64_t n;
  eg_data_keys_stats st;
  eg_master_key_use uses[2];
  CU_ASSERT_EQUAL(eg_data_key_current_existing(dk, kr, "acme", "nobody", &gen, k), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_data_key_latest(dk, "acme", "nobody", &gen), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_data_key_live(dk, "acme", "nobody", 1), EG_ENOTFOUND);
  /* A rotation by name gives a user without any key its first (format 1
   * tokens move to it). */
  CU_ASSERT_EQUAL(eg_data_keys_rotate(dk, kr, "acme", "old", &gen), EG_OK);
  CU_ASSERT_EQUAL(gen, 1);
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr, "acme", "gone", &gen, k), EG_OK);
  CU_ASSERT_EQUAL(eg_data_key_live(dk, "acme", "gone", 1), EG_OK); /* a cache hit */
  CU_ASSERT_EQUAL(eg_data_keys_erase_user(dk, "acme", "gone", &n), EG_OK);
  CU_ASSERT_EQUAL(eg_data_key_live(dk, "acme", "gone", 1), EG_EERASED);
  CU_ASSERT_EQUAL(eg_data_key_current_existing(dk, kr, "acme", "gone", &gen, k), EG_EERASED);
  CU_ASSERT_EQUAL(eg_data_keys_rotate(dk, kr, "acme", "gone", &gen), EG_EERASED);
  CU_ASSERT_EQUAL(eg_data_key_latest(dk, "acme", "gone", &gen), EG_EERASED);
  CU_ASSERT_EQUAL(gen, 1);
  uint64_t retired;
  CU_ASSERT_EQUAL(eg_data_keys_retire_before(dk, "acme", "gone", 1, &retired), EG_EERASED);
  CU_ASSERT_EQUAL(eg_data_keys_status(dk, &st, uses, 2), EG_OK);
  CU_ASSERT_EQUAL(st.data_keys, 1); /* "old"'s; none for "gone" nor "nobody" */
  CU_ASSERT_EQUAL(st.erased_users, 1);
  eg_data_keys_close(dk);
  eg_keyring_free(kr);
  rm_parent(dir);
}

/* The race of a rotation's first phase with DeleteUser of a user holding
 * no key (server/key_adopt.h), forced in its bad order: the erasure's key
 * erasure (nothing to destroy) runs before the phase asks for the key,
 * and its records are not erased yet. While the erasure is under way no
 * key is made, for that user (or, a tenant's erasure, any of its users);
 * after it ends the key store makes one again (the phase's read-txn check
 * then finds no record and destroys it). */
static void test_no_rotation_key_while_an_erasure_is_under_way(void) {
  char dir[4200];
  eg_keyring *kr = ring(1, key1, "");
  eg_data_keys *dk = dk_open(ks_dir(dir, sizeof dir), 100);
  eg_dk_erasure *m, *t;
  uint32_t gen = 0;
  uint64_t n;
  CU_ASSERT_EQUAL_FATAL(eg_data_keys_erasure_begin(dk, "acme", "old", &m), EG_OK);
  CU_ASSERT_EQUAL(eg_data_keys_erase_user(dk, "acme", "old", &n), EG_OK);
  CU_ASSERT_EQUAL(n, 0);
  CU_ASSERT_EQUAL(eg_data_keys_rotate(dk, kr, "acme", "old", &gen), EG_EERASED);
  CU_ASSERT_EQUAL(eg_data_key_latest(dk, "acme", "old", &gen), EG_ENOTFOUND);
  /* Another user, of this tenant or another, is not held back. */
  CU_ASSERT_EQUAL(eg_data_keys_rotate(dk, kr, "acme", "olden", &gen), EG_OK);
  CU_ASSERT_EQUAL(eg_data_keys_rotate(dk, kr, "acmf", "old", &gen), EG_OK);
  CU_ASSERT_EQUAL(eg_data_keys_erasure_begin(dk, "acme", "x", &t), EG_OK);
  eg_data_keys_erasure_end(m);
  CU_ASSERT_EQUAL(eg_data_keys_rotate(dk, kr, "acme", "old", &gen), EG_OK);
  CU_ASSERT_EQUAL(gen, 1);
  CU_ASSERT_EQUAL(eg_data_keys_rotate(dk, kr, "acme", "x", &gen), EG_EERASED);
  eg_data_keys_erasure_end(t);
  /* A tenant's erasure: every user of it, the tenant's own key too. */
  CU_ASSERT_EQUAL_FATAL(eg_data_keys_erasure_begin(dk, "acme", NULL, &t), EG_OK);
  CU_ASSERT_EQUAL(eg_data_keys_rotate(dk, kr, "acme", "new", &gen), EG_EERASED);
  CU_ASSERT_EQUAL(eg_data_keys_rotate(dk, kr, "acme", "", &gen), EG_EERASED);
  CU_ASSERT_EQUAL(eg_data_keys_rotate(dk, kr, "acmf", "new", &gen), EG_OK);
  eg_data_keys_erasure_end(t);
  CU_ASSERT_EQUAL(eg_data_keys_rotate(dk, kr, "acme", "new", &gen), EG_OK);
  eg_data_keys_erasure_end(NULL);
  char id[130];
  memset(id, 'a', 128);
  id[128] = '\0';
  CU_ASSERT_EQUAL_FATAL(eg_data_keys_erasure_begin(dk, "acme", id, &t), EG_OK); /* the edge */
  eg_data_keys_erasure_end(t);
  strcpy(id + 128, "a");
  CU_ASSERT_EQUAL(eg_data_keys_erasure_begin(dk, "acme", id, &t), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_data_keys_erasure_begin(dk, id, NULL, &t), EG_EINVAL);
  eg_data_keys_close(dk);
  eg_keyring_free(kr);
  rm_parent(dir);
}

/* The mark refuses keyless users only: one holding a live key is rotated
 * while an erasure is marked and has destroyed nothing yet (were it
 * refused and that key erasure then failed, the user would keep its old
 * key, never rotated; its erasure orders itself under write_mu). */
static void test_mark_leaves_a_live_user_rotated(void) {
  char dir[4200];
  eg_keyring *kr = ring(1, key1, "");
  eg_data_keys *dk = dk_open(ks_dir(dir, sizeof dir), 100);
  eg_dk_erasure *m;
  uint32_t gen = 0;
  CU_ASSERT_EQUAL_FATAL(eg_data_keys_rotate(dk, kr, "acme", "live", &gen), EG_OK);
  CU_ASSERT_EQUAL(gen, 1);
  CU_ASSERT_EQUAL_FATAL(eg_data_keys_erasure_begin(dk, "acme", "live", &m), EG_OK);
  /* Nothing destroyed yet: its key is live. */
  CU_ASSERT_EQUAL(eg_data_key_latest(dk, "acme", "live", &gen), EG_OK);
  CU_ASSERT_EQUAL(eg_data_keys_rotate(dk, kr, "acme", "live", &gen), EG_OK);
  eg_data_keys_erasure_end(m);
  eg_data_keys_close(dk);
  eg_keyring_free(kr);
  rm_parent(dir);
}

/* A rewrap on the primary reaches the replica as live records with other
 * wrapped bytes: the replica compacts the old wrapping out too. */
static void test_replica_compacts_after_rewrap(void) {
  char d1[4200], d2[4200];
  eg_keyring *kr1 = ring(1, key1, "");
  eg_keyring *kr12 = ring(2, key1, key2);
  eg_data_keys *p = dk_open(ks_dir(d1, sizeof d1), 100);
  eg_data_keys *r = dk_open(ks_dir(d2, sizeof d2), 100);
  uint8_t k[EG_KEY_LEN], w0[EG_WRAPPED_KEY_LEN];
  uint32_t gen;
  uint64_t done, remaining;
  CU_ASSERT_EQUAL(eg_data_key_current(p, kr1, "acme", "a", &gen, k), EG_OK);
  ship(p, r, 0);
  wrapped_of(r, "a", 1, w0);
  CU_ASSERT(file_holds(d2, w0, sizeof w0));
  CU_ASSERT_EQUAL(eg_data_keys_rewrap(p, kr12, 0, &done, &remaining), EG_OK);
  CU_ASSERT_EQUAL(done, 1);
  ship(p, r, 1);
  CU_ASSERT_FALSE(file_holds(d2, w0, sizeof w0));
  eg_data_keys_close(p);
  eg_data_keys_close(r);
  rm_parent(d1);
  rm_parent(d2);
  eg_keyring_free(kr1);
  eg_keyring_free(kr12);
}

/* Counts the changes a store gives from 0. */
static eg_err count_change(void *arg, uint64_t version, const uint8_t *rec, size_t len) {
  (void)version, (void)rec, (void)len;
  ++*(int *)arg;
  return EG_OK;
}

/* A node that was primary (its own versions 1..3) applies a new primary's
 * history numbered from 1: its version does not go down, and its own rows
 * whose versions the applied ones take stay in the change list. */
static void test_apply_keeps_versions_and_rows(void) {
  char d1[4200], d2[4200], user[8];
  eg_keyring *kr = ring(1, key1, "");
  eg_data_keys *p = dk_open(ks_dir(d1, sizeof d1), 100);
  eg_data_keys *old = dk_open(ks_dir(d2, sizeof d2), 100);
  uint8_t k[EG_KEY_LEN];
  uint32_t gen;
  uint64_t last;
  for (int i = 0; i < 3; i++) {
    snprintf(user, sizeof user, "o%d", i);
    CU_ASSERT_EQUAL(eg_data_key_current(old, kr, "acme", user, &gen, k), EG_OK);
  }
  CU_ASSERT_EQUAL(eg_data_key_current(p, kr, "acme", "n0", &gen, k), EG_OK);
  ship(p, old, 0); /* version 1 is o0's on old */
  CU_ASSERT_EQUAL(eg_data_keys_version(old), 4);
  int n = 0;
  CU_ASSERT_EQUAL(eg_data_keys_changes(old, 0, 100, count_change, &n, &last), EG_OK);
  CU_ASSERT_EQUAL(n, 4); /* o0 moved to version 4, not lost */
  CU_ASSERT_EQUAL(last, 4);
  /* A change after it takes a version past every one. */
  CU_ASSERT_EQUAL(eg_data_key_current(old, kr, "acme", "o3", &gen, k), EG_OK);
  CU_ASSERT_EQUAL(eg_data_keys_version(old), 5);
  eg_data_keys_close(p);
  eg_data_keys_close(old);
  rm_parent(d1);
  rm_parent(d2);
  eg_keyring_free(kr);
}

/* Applies a record of (tenant, user, gen 1) wrapped (in name: the bytes
 * are no wrapping) under master key id, at version. */
static void apply_fake(eg_data_keys *dk, const char *user, uint32_t id, uint64_t version) {
  uint8_t wrapped[EG_WRAPPED_KEY_LEN], buf[512];
  memset(wrapped, (int)id, sizeof wrapped);
  Engram__Storage__V1__KeyRecord m = ENGRAM__STORAGE__V1__KEY_RECORD__INIT;
  m.tenant = "acme";
  m.user = (char *)user;
  m.generation = 1;
  m.wrapped_key = (ProtobufCBinaryData){sizeof wrapped, wrapped};
  m.master_key_id = id;
  m.version = version;
  size_t len = engram__storage__v1__key_record__pack(&m, buf);
  CU_ASSERT_EQUAL(eg_data_keys_apply(dk, version, buf, len), EG_OK);
}

/* RewrapKeys' remaining is counted from the whole list of master keys: at
 * EG_DATA_KEYS_MASTERS_MAX of them it is; one more, refused (EG_ELIMIT),
 * never a count missing some. */
static void test_rewrap_remaining_at_the_masters_cap(void) {
  char dir[4200], user[16];
  eg_keyring *kr1 = ring(1, key1, ""), *kr12 = ring(2, key1, key2);
  eg_data_keys *dk = dk_open(ks_dir(dir, sizeof dir), 100);
  uint8_t k[EG_KEY_LEN];
  uint32_t gen;
  uint64_t done, remaining;
  /* "a": a real key under 1, first in key order; then keys under ids
   * 1000.. (users "z...", after it): with 2, "a"'s after the rewrap, the
   * cap. */
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr1, "acme", "a", &gen, k), EG_OK);
  uint32_t n_fake = EG_DATA_KEYS_MASTERS_MAX - 1; /* with 2: the cap */
  for (uint32_t i = 0; i < n_fake; i++) {
    snprintf(user, sizeof user, "z%04u", i);
    apply_fake(dk, user, 1000 + i, 10 + i);
  }
  CU_ASSERT_EQUAL(eg_data_keys_rewrap(dk, kr12, 1, &done, &remaining), EG_OK);
  CU_ASSERT_EQUAL(done, 1);
  CU_ASSERT_EQUAL(remaining, n_fake);
  /* One past the cap; "b", under 1, is the next key a rewrap takes. */
  apply_fake(dk, "zz", 5000, 10 + n_fake);
  CU_ASSERT_EQUAL(eg_data_key_current(dk, kr1, "acme", "b", &gen, k), EG_OK);
  CU_ASSERT_EQUAL(eg_data_keys_rewrap(dk, kr12, 1, &done, &remaining), EG_ELIMIT);
  CU_ASSERT_EQUAL(done, 1);
  eg_data_keys_close(dk);
  eg_keyring_free(kr1);
  eg_keyring_free(kr12);
  rm_parent(dir);
}

void eg_test_register_data_keys(void) {
  CU_pSuite s = CU_add_suite("data_keys", suite_init, NULL);
  CU_add_test(s, "wrap round trip and binding", test_wrap_round_trip_and_binding);
  CU_add_test(s, "create get current", test_create_get_current);
  CU_add_test(s, "id limits", test_id_limits);
  CU_add_test(s, "concurrent create", test_concurrent_create);
  CU_add_test(s, "cache eviction", test_cache_eviction);
  CU_add_test(s, "erase user compacts", test_erase_user_compacts);
  CU_add_test(s, "erase tenant", test_erase_tenant);
  CU_add_test(s, "changes apply round trip", test_changes_apply_round_trip);
  CU_add_test(s, "tombstone never resurrected", test_tombstone_never_resurrected);
  CU_add_test(s, "copy", test_copy);
  CU_add_test(s, "rotate retire each user", test_rotate_retire_each_user);
  CU_add_test(s, "rewrap and status", test_rewrap_and_status);
  CU_add_test(s, "cache stale current after rotation", test_cache_stale_current_after_rotation);
  CU_add_test(s, "current after rotation is the new one",
              test_current_after_rotation_is_the_new_one);
  CU_add_test(s, "never create for unknown or erased", test_never_create_for_unknown_or_erased);
  CU_add_test(s, "no rotation key while an erasure is under way",
              test_no_rotation_key_while_an_erasure_is_under_way);
  CU_add_test(s, "mark leaves a live user rotated", test_mark_leaves_a_live_user_rotated);
  CU_add_test(s, "replica compacts after rewrap", test_replica_compacts_after_rewrap);
  CU_add_test(s, "apply keeps versions and rows", test_apply_keeps_versions_and_rows);
  CU_add_test(s, "rewrap remaining at the masters cap", test_rewrap_remaining_at_the_masters_cap);
}
