/* Phase 1 of a data-key rotation (server/key_adopt.h) against a DeleteUser
 * of a user holding no data key, forced in the order that used to leave
 * the user a live key with nothing under it: the erasure is under way and
 * its key erasure ran (nothing to destroy), its first erase step has not
 * committed (the user's session is still there, no erasure progress
 * marks it), then the phase's step walks the user. Over a real store,
 * key store and writer thread, through eg_kr_adopt_step itself. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "server/config.h"
#include "server/data_keys.h"
#include "server/key_adopt.h"
#include "server/key_rotation_step.h"
#include "server/writer.h"
#include "suites.h"

/* A test key, in no deployment. */
#define RING "primary 1\nkey 1 " EG_TEST_KEY1 "\n"

static char tdir[4096];
static eg_config cfg;
static eg_srv srv;
static eg_keyring *keys;
static eg_data_keys *dks;
static eg_store *store;
static eg_writer *writer;

static void setup(void) {
  char path[4200], err[256] = "";
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  CU_ASSERT_EQUAL_FATAL(eg_crypto_init(), EG_OK);
  keys = eg_test_keyring(RING);
  snprintf(path, sizeof path, "%s/keystore", tdir);
  CU_ASSERT_EQUAL_FATAL(eg_data_keys_open(path, 16, &dks, err, sizeof err), EG_OK);
  store = eg_test_store_open(tdir, NULL);
  CU_ASSERT_EQUAL_FATAL(eg_writer_start(store, NULL, NULL, &writer, err, sizeof err), EG_OK);
  eg_config_defaults(&cfg);
  srv = (eg_srv){.cfg = &cfg, .store = store, .keys = keys, .data_keys = dks};
}

static void teardown(void) {
  eg_writer_stop(writer);
  eg_store_close(store);
  eg_data_keys_close(dks);
  eg_keyring_free(keys);
  eg_test_rmdir(tdir);
}

/* Users' sessions and a rotation of every user in phase 1, from its start. */
static eg_err put_fixture(void *arg, eg_txn *t) {
  static const char *const users[] = {"old", "older"};
  eg_err e = EG_OK;
  (void)arg;
  for (size_t i = 0; i < 2 && !e; i++) {
    eg_session_rec s = ENGRAM__STORAGE__V1__SESSION_RECORD__INIT;
    s.session_id = (char *)(i ? "s-older" : "s-old");
    s.user_id = (char *)users[i];
    s.agent_id = (char *)"agent";
    s.create_time_us = s.update_time_us = 1000;
    e = eg_store_session_put(t, "acme", &s, NULL);
  }
  eg_dk_rotation_rec row = ENGRAM__STORAGE__V1__DATA_KEY_ROTATION_RECORD__INIT;
  row.running = 1;
  row.start_time_us = 1000;
  return e ? e : eg_store_dk_rotation_put(t, &row);
}

static void test_no_key_for_a_user_whose_erasure_is_under_way(void) {
  setup();
  eg_dk_erasure *m;
  eg_txn *reader;
  eg_arena *a = eg_arena_new();
  eg_dk_rotation_rec *row;
  uint32_t gen;
  uint64_t destroyed;
  size_t walked;
  CU_ASSERT_EQUAL_FATAL(eg_writer_run_alone(writer, put_fixture, NULL, NULL), EG_OK);
  /* DeleteUser("old")'s prepare: the erasure under way, its keys (none)
   * destroyed; its first erase step not applied. */
  CU_ASSERT_EQUAL_FATAL(eg_data_keys_erasure_begin(dks, "acme", "old", &m), EG_OK);
  CU_ASSERT_EQUAL(eg_data_keys_erase_user(dks, "acme", "old", &destroyed), EG_OK);
  CU_ASSERT_EQUAL(destroyed, 0);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(store, &reader), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(reader), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_kr_row_get(reader, a, &row), EG_OK);
  eg_store_reader_end(reader);
  CU_ASSERT_PTR_NOT_NULL_FATAL(row);
  CU_ASSERT(eg_kr_adopting(row));
  CU_ASSERT_EQUAL(eg_kr_adopt_step(&srv, writer, reader, row, &walked), EG_OK);
  CU_ASSERT_EQUAL(walked, 2);
  /* "old" is left without a key; "older", walked in the same step, got
   * its first (the step gives keys: the one it withheld was withheld). */
  CU_ASSERT_EQUAL(eg_data_key_latest(dks, "acme", "old", &gen), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_data_key_latest(dks, "acme", "older", &gen), EG_OK);
  CU_ASSERT_EQUAL(gen, 1);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(reader), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_kr_row_get(reader, a, &row), EG_OK);
  eg_store_reader_end(reader);
  CU_ASSERT_EQUAL(row->adopted, 1);
  CU_ASSERT_EQUAL(row->adopt_source, 1); /* sessions done */
  eg_data_keys_erasure_end(m);
  eg_store_reader_free(reader);
  eg_arena_free(a);
  teardown();
}

void eg_test_register_key_adopt(void) {
  CU_pSuite s = CU_add_suite("key_adopt", NULL, NULL);
  CU_add_test(s, "no key for a user whose erasure is under way",
              test_no_key_for_a_user_whose_erasure_is_under_way);
}
