/* Retiring a master key (server/key_retire.h): the rule per key (data keys
 * wrapped under it, format 1 tokens as the last rotation of every user
 * counted, the blind index, the primary in use), and the start/reload
 * check over a real store and key store: a keyring without key 1 is
 * refused while anything is under it, naming what, then accepted with the
 * fingerprint recorded again without it. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "server/data_keys.h"
#include "server/key_retire.h"
#include "server/keyring_reload.h"
#include "suites.h"

/* Test keys, in no deployment. */
#define KEY1 "key 1 " EG_TEST_KEY1 "\n"
#define KEY2 "key 2 " EG_TEST_KEY2 "\n"
#define KEY3 "key 3 QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=\n"
/* Key 2's id with key 3's bytes: another key under a recorded id. */
#define KEY2_OTHER "key 2 QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=\n"

typedef Engram__Storage__V1__TokenCountRecord eg_count_rec;

static char tdir[4096];
static eg_store *store;
static eg_data_keys *dk;

static void setup(void) {
  char ks[4200], err[256] = "";
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  snprintf(ks, sizeof ks, "%s/keystore", tdir);
  CU_ASSERT_EQUAL_FATAL(eg_crypto_init(), EG_OK);
  store = eg_test_store_open(tdir, NULL);
  CU_ASSERT_EQUAL_FATAL(eg_data_keys_open(ks, 16, &dk, err, sizeof err), EG_OK);
}

static void teardown(void) {
  eg_data_keys_close(dk);
  eg_store_close(store);
  eg_test_rmdir(tdir);
}

/* ---- the rule, per key ---- */

static eg_count_rec count_of(const char *key, uint64_t n) {
  eg_count_rec c = ENGRAM__STORAGE__V1__TOKEN_COUNT_RECORD__INIT;
  c.key = (char *)key;
  c.tokens = n;
  return c;
}

static void test_each_rule_blocks_and_names_it(void) {
  eg_master_key_use uses[] = {{.master_key_id = 1, .data_keys = 12}, {2, 5}};
  eg_count_rec c_data = count_of("data:2", 40), c_m1 = count_of("master:1", 3),
               c_other = count_of("other", 1), c_m3_zero = count_of("master:3", 0);
  eg_count_rec *counts[] = {&c_data, &c_m3_zero};
  eg_dk_rotation_rec rot = ENGRAM__STORAGE__V1__DATA_KEY_ROTATION_RECORD__INIT;
  rot.finish_time_us = 1;
  rot.adopt_source = EG_USERS_SOURCES; /* walked the users holding no data key */
  rot.counts = counts;
  rot.n_counts = 2;
  eg_key_retire_facts f = {
      .uses = uses, .n_uses = 2, .rotation = &rot, .blind_key_id = 3, .primary_in_use = 2};
  char why[384];

  /* 1: data keys wrapped under it. */
  CU_ASSERT_FALSE(eg_key_retirable(&f, 1, why, sizeof why));
  CU_ASSERT_STRING_EQUAL(why, "key 1 still wraps 12 data keys: run engram admin keys rewrap");
  uses[0].data_keys = 0;
  CU_ASSERT_TRUE(eg_key_retirable(&f, 1, why, sizeof why));
  CU_ASSERT_STRING_EQUAL(why, "");
  /* The primary in use, whatever else. */
  CU_ASSERT_FALSE(eg_key_retirable(&f, 2, why, sizeof why));
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "key 2 is the primary of the keyring in use"));
  /* 3: the blind index's key, and a rotation's target. */
  CU_ASSERT_FALSE(eg_key_retirable(&f, 3, why, sizeof why));
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "the blind index (keyword search, filters) is under key 3"));
  f.blind_key_id = 4;
  f.blind_target_key_id = 1;
  CU_ASSERT_FALSE(eg_key_retirable(&f, 1, why, sizeof why));
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "a blind-index rotation is moving it there"));
  /* The legacy key (records stamped 0) while a rotation runs: blocked;
   * after the switch (no target) it may go. */
  f.blind_legacy_key_id = 3;
  CU_ASSERT_FALSE(eg_key_retirable(&f, 3, why, sizeof why));
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "a blind-index rotation is moving it off this key"));
  /* Paused: every one of its keys kept the same, saying what to do. */
  f.blind_paused = 1;
  CU_ASSERT_FALSE(eg_key_retirable(&f, 3, why, sizeof why));
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "a paused blind-index rotation is moving it off this key"));
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "engram admin keys rotate-blind"));
  CU_ASSERT_FALSE(eg_key_retirable(&f, 1, why, sizeof why));
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "a blind-index rotation is moving it there"));
  f.blind_paused = 0;
  f.blind_target_key_id = 0;
  CU_ASSERT_TRUE(eg_key_retirable(&f, 3, why, sizeof why)); /* master:3 counted 0 */

  /* 2: format 1 tokens. */
  counts[1] = &c_m1;
  CU_ASSERT_FALSE(eg_key_retirable(&f, 1, why, sizeof why));
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "counted 3 field tokens of format 1 under key 1"));
  CU_ASSERT_TRUE(eg_key_retirable(&f, 3, why, sizeof why));
  counts[1] = &c_other;
  CU_ASSERT_FALSE(eg_key_retirable(&f, 3, why, sizeof why));
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "key 3 may be among them"));
  counts[1] = &c_m3_zero;
  rot.running = 1;
  rot.done = 1;
  rot.total = 4;
  CU_ASSERT_FALSE(eg_key_retirable(&f, 1, why, sizeof why));
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "is running (1 of 4 users done): wait"));
  rot.running = 0;
  rot.adopt_source = EG_USERS_SOURCES - 1; /* before 0.16, or left past the phase */
  CU_ASSERT_FALSE(eg_key_retirable(&f, 3, why, sizeof why));
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "did not walk the users holding no data key"));
  rot.adopt_source = EG_USERS_SOURCES;
  rot.scope_tenant = "acme";
  CU_ASSERT_FALSE(eg_key_retirable(&f, 1, why, sizeof why));
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "was not of every user: run engram admin keys rotate"));
  f.rotation = NULL;
  CU_ASSERT_FALSE(eg_key_retirable(&f, 1, why, sizeof why));
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "no data-key rotation of every user has run"));
}

static void test_fingerprint_drop(void) {
  eg_keyring *kr = eg_test_keyring("primary 2\n" KEY1 KEY2 KEY3);
  eg_keyring *k13 = eg_test_keyring("primary 3\n" KEY1 KEY3);
  uint8_t fp[EG_KEYRING_FINGERPRINT_MAX], fp13[EG_KEYRING_FINGERPRINT_MAX];
  size_t len = eg_keyring_fingerprint(kr, fp), len13 = eg_keyring_fingerprint(k13, fp13);
  CU_ASSERT_EQUAL(eg_keyring_fingerprint_drop(fp, len, 9), len);
  len = eg_keyring_fingerprint_drop(fp, len, 2);
  CU_ASSERT_EQUAL(len, len13);
  CU_ASSERT_EQUAL(memcmp(fp, fp13, len), 0);
  CU_ASSERT_EQUAL(eg_fingerprint_lowest_id(fp, len), 1);
  len = eg_keyring_fingerprint_drop(fp, len, 1);
  CU_ASSERT_EQUAL(eg_fingerprint_lowest_id(fp, len), 3);
  eg_keyring_free(kr);
  eg_keyring_free(k13);
}

/* ---- the start/reload check over a real store ---- */

static eg_err check(const eg_keyring *kr, uint32_t primary_in_use, char *err, size_t errlen) {
  return eg_keyring_check_fingerprint(store, dk, kr, primary_in_use, "KEYRING", err, errlen);
}

static void put_rotation(const char *scope_tenant, int running, eg_count_rec **counts, size_t n) {
  eg_txn *w;
  eg_dk_rotation_rec rec = ENGRAM__STORAGE__V1__DATA_KEY_ROTATION_RECORD__INIT;
  rec.scope_tenant = (char *)scope_tenant;
  rec.running = running;
  rec.finish_time_us = running ? 0 : 1;
  rec.adopt_source = EG_USERS_SOURCES;
  rec.counts = counts;
  rec.n_counts = n;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_dk_rotation_put(w, &rec), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

static void put_blind_row(uint32_t key_id, uint32_t target, uint32_t legacy) {
  eg_txn *w;
  eg_blind_key_rec rec = ENGRAM__STORAGE__V1__BLIND_INDEX_KEY_RECORD__INIT;
  rec.key_id = key_id;
  rec.target_key_id = target;
  rec.legacy_key_id = legacy;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_blind_key_put(w, &rec), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

/* The ids the store's recorded fingerprint names, as "1,2". */
static const char *recorded(void) {
  static char out[64];
  uint8_t fp[EG_KEYRING_FINGERPRINT_MAX];
  uint32_t ids[EG_KEYRING_KEYS_MAX];
  size_t len = 0, n = 0, o = 0;
  CU_ASSERT_EQUAL_FATAL(eg_store_meta_get(store, EG_META_KEY_FINGERPRINT, fp, sizeof fp, &len),
                        EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_keyring_fingerprint_ids(fp, len, ids, EG_KEYRING_KEYS_MAX, &n), EG_OK);
  out[0] = '\0';
  for (size_t i = 0; i < n; i++)
    o += (size_t)snprintf(out + o, sizeof out - o, "%s%u", i ? "," : "", ids[i]);
  return out;
}

static void test_check_refuses_until_nothing_is_under_it(void) {
  eg_keyring *k1 = eg_test_keyring("primary 1\n" KEY1);
  eg_keyring *k12 = eg_test_keyring("primary 2\n" KEY1 KEY2);
  eg_keyring *k2 = eg_test_keyring("primary 2\n" KEY2);
  eg_keyring *k2_other = eg_test_keyring("primary 2\n" KEY2_OTHER);
  char err[1024];
  uint8_t key[EG_KEY_LEN];
  uint32_t gen;
  uint64_t done, remaining;
  eg_count_rec c_data = count_of("data:2", 7), *counts[] = {&c_data};

  CU_ASSERT_EQUAL_FATAL(check(k1, 0, err, sizeof err), EG_OK); /* first start: recorded */
  CU_ASSERT_STRING_EQUAL(recorded(), "1");
  /* Two users' data keys under key 1. */
  CU_ASSERT_EQUAL_FATAL(eg_data_key_current(dk, k1, "acme", "alice", &gen, key), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_data_key_current(dk, k1, "acme", "bob", &gen, key), EG_OK);
  CU_ASSERT_EQUAL(check(k12, 1, err, sizeof err), EG_OK); /* key 2 added */
  CU_ASSERT_STRING_EQUAL(recorded(), "1,2");

  /* Rule 1, then the primary in use (a reload from {1,2} primary 1). */
  CU_ASSERT_EQUAL(check(k2, 2, err, sizeof err), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "key 1, which data here may be sealed with, is not in the "
                                     "keyring, and cannot leave it yet: key 1 still wraps 2 data "
                                     "keys: run engram admin keys rewrap"));
  CU_ASSERT_EQUAL(check(k2, 1, err, sizeof err), EG_EPRECOND);
  CU_ASSERT_EQUAL_FATAL(eg_data_keys_rewrap(dk, k12, 0, &done, &remaining), EG_OK);
  CU_ASSERT_EQUAL(done, 2);
  CU_ASSERT_EQUAL(check(k2, 1, err, sizeof err), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "key 1 is the primary of the keyring in use"));
  /* Rule 2. */
  CU_ASSERT_EQUAL(check(k2, 2, err, sizeof err), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "no data-key rotation of every user has run"));
  put_rotation("", 1, counts, 1);
  CU_ASSERT_EQUAL(check(k2, 2, err, sizeof err), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "is running"));
  put_rotation("acme", 0, counts, 1);
  CU_ASSERT_EQUAL(check(k2, 2, err, sizeof err), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "was not of every user"));
  put_rotation("", 0, counts, 1);
  /* Rule 3: no row, so the blind index is under the lowest recorded id,
   * 1, not the new keyring's lowest (2). */
  CU_ASSERT_EQUAL(check(k2, 2, err, sizeof err), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "the blind index (keyword search, filters) is under key 1"));
  CU_ASSERT_STRING_EQUAL(recorded(), "1,2"); /* nothing recorded by a refusal */
  /* A rotation from key 3 to 2 that began from key 1 (records stamped 0
   * under it): key 1 waits for its switch. */
  put_blind_row(3, 2, 1);
  CU_ASSERT_EQUAL(check(k2, 2, err, sizeof err), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "a blind-index rotation is moving it off this key"));
  /* Switched: key_id 2, no target; the legacy id stays, under nothing. */
  put_blind_row(2, 0, 1);
  /* Another key under a kept id is refused as ever. */
  CU_ASSERT_EQUAL(check(k2_other, 2, err, sizeof err), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "key 2 in the keyring differs"));
  CU_ASSERT_STRING_EQUAL(recorded(), "1,2");
  /* Nothing under key 1: retired, recorded without it. */
  CU_ASSERT_EQUAL(check(k2, 2, err, sizeof err), EG_OK);
  CU_ASSERT_STRING_EQUAL(recorded(), "2");
  CU_ASSERT_EQUAL(check(k2, 2, err, sizeof err), EG_OK); /* a restart with {2} */
  /* Every data key opens with the keyring of {2}. */
  CU_ASSERT_EQUAL(eg_data_key_current_existing(dk, k2, "acme", "alice", &gen, key), EG_OK);
  /* Key 1 back is a key added: recorded again. */
  CU_ASSERT_EQUAL(check(k12, 2, err, sizeof err), EG_OK);
  CU_ASSERT_STRING_EQUAL(recorded(), "1,2");
  eg_memzero(key, sizeof key);
  eg_keyring_free(k1);
  eg_keyring_free(k12);
  eg_keyring_free(k2);
  eg_keyring_free(k2_other);
}

/* With no blind-index row, a key below the lowest recorded id would move
 * the blind index (the keyring's lowest): refused; once a row records the
 * key, accepted (found by a hostile client: every search answered []). */
static void test_lower_key_refused_until_a_row_pins_it(void) {
  eg_keyring *k2 = eg_test_keyring("primary 2\n" KEY2);
  eg_keyring *k23 = eg_test_keyring("primary 3\n" KEY2 KEY3);
  eg_keyring *k123 = eg_test_keyring("primary 3\n" KEY1 KEY2 KEY3);
  char err[1024];
  CU_ASSERT_EQUAL_FATAL(check(k2, 0, err, sizeof err), EG_OK); /* first start: recorded */
  CU_ASSERT_EQUAL(check(k23, 2, err, sizeof err), EG_OK);       /* above: fine */
  CU_ASSERT_EQUAL(check(k123, 3, err, sizeof err), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "key 1 is below key 2, which the blind index"));
  CU_ASSERT_STRING_EQUAL(recorded(), "2,3"); /* nothing recorded by a refusal */
  put_blind_row(2, 0, 0);
  CU_ASSERT_EQUAL(check(k123, 3, err, sizeof err), EG_OK);
  CU_ASSERT_STRING_EQUAL(recorded(), "1,2,3");
  eg_keyring_free(k2);
  eg_keyring_free(k23);
  eg_keyring_free(k123);
}

void eg_test_register_key_retire(void) {
  CU_pSuite s = CU_add_suite_with_setup_and_teardown("key_retire", NULL, NULL, setup, teardown);
  CU_add_test(s, "each rule blocks and names itself", test_each_rule_blocks_and_names_it);
  CU_add_test(s, "fingerprint without a key", test_fingerprint_drop);
  CU_add_test(s, "start/reload check refuses until nothing is under the key",
              test_check_refuses_until_nothing_is_under_it);
  CU_add_test(s, "a key below the blind index's is refused until a row pins it",
              test_lower_key_refused_until_a_row_pins_it);
}
