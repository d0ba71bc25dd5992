/* The store's blind-index key id (server/blind_key.h): no row reads as the
 * keyring's lowest key id (adding a key and moving the primary leaves it);
 * a stored row moves every blind context (eg_blind_ctx_of), both through a
 * read's snapshot and through the id loaded at start for writes. Over a
 * real store. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "server/blind_key.h"
#include "server/blind_rotation.h"
#include "server/config.h"
#include "server/memory_svc.h"
#include "server/service.h"
#include "suites.h"

static char tdir[4096];
static eg_store *store;
static eg_config cfg;
static eg_srv srv;
static eg_keyring *keys;

/* Test keys, in no deployment. Key 2 is the primary: the blind index
 * stays under key 1 (the lowest) until a row moves it. */
#define RING "primary 2\nkey 2 " EG_TEST_KEY2 "\nkey 1 " EG_TEST_KEY1 "\n"

static void setup(void) {
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  CU_ASSERT_EQUAL_FATAL(eg_crypto_init(), EG_OK);
  keys = NULL;
  keys = eg_test_keyring(RING);
  eg_config_defaults(&cfg);
  store = eg_test_store_open(tdir, NULL);
  srv = (eg_srv){.cfg = &cfg, .store = store, .keys = keys};
}

static void teardown(void) {
  eg_store_close(store);
  eg_keyring_free(keys);
  eg_test_rmdir(tdir);
}

/* The token of "tea" under r's blind context (eg_blind_ctx_of). */
static uint64_t tea_of(eg_txn *rtxn) {
  eg_req r = {.srv = &srv, .tenant = "acme", .arena = eg_arena_new(), .rtxn = rtxn};
  eg_blind_ctx *ctx = NULL;
  CU_ASSERT_PTR_NOT_NULL_FATAL(r.arena);
  CU_ASSERT_EQUAL_FATAL(eg_blind_ctx_of(&r, &ctx), EG_OK);
  uint64_t v = eg_blind_word(ctx, "tea", 3);
  eg_arena_free(r.arena);
  return v;
}

/* The token of "tea" under key id's blind subkey. */
static uint64_t tea_under(uint32_t id) {
  eg_blind_ctx c;
  CU_ASSERT_EQUAL_FATAL(eg_blind_begin_id(keys, id, "acme", &c), EG_OK);
  uint64_t v = eg_blind_word(&c, "tea", 3);
  eg_blind_end(&c);
  return v;
}

static void put_row3(uint32_t key_id, uint32_t target, uint32_t legacy, eg_err want) {
  eg_txn *w;
  eg_blind_key_rec rec = ENGRAM__STORAGE__V1__BLIND_INDEX_KEY_RECORD__INIT;
  rec.key_id = key_id;
  rec.target_key_id = target;
  rec.legacy_key_id = legacy;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_blind_key_put(w, &rec), want);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

static void put_row(uint32_t key_id, uint32_t target, eg_err want) {
  put_row3(key_id, target, 0, want);
}

static void test_no_row_is_the_lowest_key(void) {
  uint32_t cur = 9, target = 9;
  eg_txn *t = eg_test_reader(store);
  eg_blind_key_rec *rec;
  CU_ASSERT_EQUAL(eg_store_blind_key_get(t, &rec), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_blind_key_ids(t, keys, &cur, &target), EG_OK);
  CU_ASSERT_EQUAL(cur, 1);
  CU_ASSERT_EQUAL(target, 0);
  /* Reads (a snapshot) and writes (the id loaded at start) alike. */
  CU_ASSERT_EQUAL(tea_of(t), tea_under(1));
  eg_test_reader_done(t);
  CU_ASSERT_EQUAL(eg_blind_key_load(&srv), EG_OK);
  CU_ASSERT_EQUAL(atomic_load(&srv.blind_key_id), 0);
  CU_ASSERT_EQUAL(tea_of(NULL), tea_under(1));
  CU_ASSERT_NOT_EQUAL(tea_under(1), tea_under(2));
}

static void test_a_stored_id_moves_every_context(void) {
  uint32_t cur = 0, target = 0;
  put_row(0, 0, EG_EINVAL); /* no key has id 0 */
  put_row(1, 2, EG_OK);
  eg_txn *t = eg_test_reader(store);
  CU_ASSERT_EQUAL(eg_blind_key_ids(t, keys, &cur, &target), EG_OK);
  CU_ASSERT_EQUAL(cur, 1);
  CU_ASSERT_EQUAL(target, 2);
  eg_test_reader_done(t);
  put_row(2, 0, EG_OK);
  t = eg_test_reader(store);
  CU_ASSERT_EQUAL(eg_blind_key_ids(t, keys, &cur, &target), EG_OK);
  CU_ASSERT_EQUAL(cur, 2);
  CU_ASSERT_EQUAL(target, 0);
  CU_ASSERT_EQUAL(tea_of(t), tea_under(2));
  eg_test_reader_done(t);
  /* Before the load, a write's prepare still has the id of start. */
  CU_ASSERT_EQUAL(tea_of(NULL), tea_under(1));
  CU_ASSERT_EQUAL(eg_blind_key_load(&srv), EG_OK);
  CU_ASSERT_EQUAL(atomic_load(&srv.blind_key_id), 2);
  CU_ASSERT_EQUAL(tea_of(NULL), tea_under(2));
}

/* Mid-rotation: writes take the target, queries both keys, and each
 * record is matched under its own stamp (0: the row's legacy key). */
static void test_rotation_keys(void) {
  eg_blind_keys k;
  put_row(2, 0, EG_OK);
  eg_txn *t = eg_test_reader(store);
  CU_ASSERT_EQUAL(eg_blind_keys_get(t, keys, &k), EG_OK);
  /* A row no rotation began from: unstamped records are under its key. */
  CU_ASSERT_EQUAL(k.legacy, 2);
  CU_ASSERT_EQUAL(eg_blind_keys_write(&k), 2);
  eg_test_reader_done(t);
  put_row3(1, 2, 1, EG_OK);
  t = eg_test_reader(store);
  CU_ASSERT_EQUAL(eg_blind_keys_get(t, keys, &k), EG_OK);
  CU_ASSERT_EQUAL(k.current, 1);
  CU_ASSERT_EQUAL(k.target, 2);
  CU_ASSERT_EQUAL(k.legacy, 1);
  CU_ASSERT_EQUAL(eg_blind_keys_write(&k), 2);
  CU_ASSERT_EQUAL(eg_blind_keys_rec(&k, 0), 1);
  CU_ASSERT_EQUAL(eg_blind_keys_rec(&k, 2), 2);
  /* A write's context is under the target, and says so. */
  CU_ASSERT_EQUAL(tea_of(t), tea_under(2));
  eg_req r = {.srv = &srv, .tenant = "acme", .arena = eg_arena_new(), .rtxn = t};
  eg_blind_read q;
  CU_ASSERT_PTR_NOT_NULL_FATAL(r.arena);
  CU_ASSERT_EQUAL_FATAL(eg_blind_read_ctxs(&r, t, &q), EG_OK);
  CU_ASSERT_EQUAL(q.n, 2);
  CU_ASSERT_EQUAL(eg_blind_word(q.ctx[0], "tea", 3), tea_under(1));
  CU_ASSERT_EQUAL(eg_blind_word(q.ctx[1], "tea", 3), tea_under(2));
  CU_ASSERT_EQUAL(eg_blind_read_pick(&q, 0), 0); /* legacy: key 1 */
  CU_ASSERT_EQUAL(eg_blind_read_pick(&q, 1), 0);
  CU_ASSERT_EQUAL(eg_blind_read_pick(&q, 2), 1);
  CU_ASSERT_EQUAL(eg_blind_read_pick(&q, 3), 2); /* neither: matches nothing */
  /* The apply's check: a context taken under the old write key is refused. */
  r.blind_key_used = 1;
  CU_ASSERT_EQUAL(eg_blind_key_check(&r, t), EG_EABORTED);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.msg, "retry"));
  r.blind_key_used = 2;
  CU_ASSERT_EQUAL(eg_blind_key_check(&r, t), EG_OK);
  r.blind_key_used = 0; /* no blind context taken */
  CU_ASSERT_EQUAL(eg_blind_key_check(&r, t), EG_OK);
  eg_arena_free(r.arena);
  eg_test_reader_done(t);
  /* Done: one key again, records of either stamp read under it. */
  put_row3(2, 0, 1, EG_OK);
  t = eg_test_reader(store);
  eg_req r2 = {.srv = &srv, .tenant = "acme", .arena = eg_arena_new(), .rtxn = t};
  CU_ASSERT_PTR_NOT_NULL_FATAL(r2.arena);
  CU_ASSERT_EQUAL_FATAL(eg_blind_read_ctxs(&r2, t, &q), EG_OK);
  CU_ASSERT_EQUAL(q.n, 1);
  CU_ASSERT_EQUAL(q.id[0], 2);
  CU_ASSERT_EQUAL(eg_blind_read_pick(&q, 2), 0);
  eg_arena_free(r2.arena);
  eg_test_reader_done(t);
}

/* A paused rotation (server/blind_rotation.h "Stuck records"): no walk,
 * but the target is the write key and a read key as while it runs. */
static void test_paused_rotation_keys(void) {
  eg_txn *w;
  eg_blind_keys k;
  int running = 1;
  eg_blind_key_rec rec = ENGRAM__STORAGE__V1__BLIND_INDEX_KEY_RECORD__INIT;
  rec.key_id = 1;
  rec.target_key_id = 2;
  rec.legacy_key_id = 1;
  rec.paused = 1;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  CU_ASSERT_EQUAL(eg_store_blind_key_put(w, &rec), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  eg_txn *t = eg_test_reader(store);
  CU_ASSERT_EQUAL(eg_blind_keys_get(t, keys, &k), EG_OK);
  CU_ASSERT_EQUAL(k.target, 2);
  CU_ASSERT_TRUE(k.paused);
  CU_ASSERT_EQUAL(eg_blind_keys_write(&k), 2);
  CU_ASSERT_EQUAL(eg_blind_rotation_running(t, &running), EG_OK);
  CU_ASSERT_FALSE(running);
  eg_req r = {.srv = &srv, .tenant = "acme", .arena = eg_arena_new(), .rtxn = t};
  eg_blind_read q;
  Engram__V1__KeyRotationStatus *st;
  CU_ASSERT_PTR_NOT_NULL_FATAL(r.arena);
  CU_ASSERT_EQUAL_FATAL(eg_blind_read_ctxs(&r, t, &q), EG_OK);
  CU_ASSERT_EQUAL(q.n, 2);
  CU_ASSERT_EQUAL(eg_blind_rotation_api(&r, &rec, &st), EG_OK);
  CU_ASSERT_FALSE(st->running);
  CU_ASSERT_TRUE(st->paused);
  eg_arena_free(r.arena);
  eg_test_reader_done(t);
  /* Running again (resumed): it walks. */
  put_row3(1, 2, 1, EG_OK);
  t = eg_test_reader(store);
  CU_ASSERT_EQUAL(eg_blind_rotation_running(t, &running), EG_OK);
  CU_ASSERT_TRUE(running);
  CU_ASSERT_EQUAL(eg_blind_keys_get(t, keys, &k), EG_OK);
  CU_ASSERT_FALSE(k.paused);
  eg_test_reader_done(t);
}

/* What a walk of one kind saw: keys' tenants, item keys, ns lengths. */
struct walk_seen {
  size_t n;
  char tenant[4][32], item_key[4][32];
  size_t ns_len[4];
  uint8_t key[4][128];
  size_t key_len[4];
};

static int walk_visit(void *arg, const eg_blind_ref *ref, ProtobufCMessage *rec) {
  struct walk_seen *w = arg;
  if (w->n < 4) {
    snprintf(w->tenant[w->n], sizeof w->tenant[0], "%s", ref->tenant);
    snprintf(w->item_key[w->n], sizeof w->item_key[0], "%s", ref->item_key ? ref->item_key : "");
    w->ns_len[w->n] = ref->ns_len;
    CU_ASSERT_FATAL(ref->key_len <= sizeof w->key[0]);
    memcpy(w->key[w->n], ref->key, ref->key_len);
    w->key_len[w->n] = ref->key_len;
  }
  w->n++;
  protobuf_c_message_free_unpacked(rec, NULL);
  return 0;
}

/* The rotation's walk (storage/key_jobs.h): store items past their expiry
 * index, a checkpoint's key matched to its user by digest, resumed after
 * a key, read back by key, counted. */
static void test_rotation_walk(void) {
  eg_txn *w, *t;
  uint64_t h[] = {7};
  static uint8_t tok[] = "sealed";
  eg_item_rec item = ENGRAM__STORAGE__V1__STORE_ITEM_RECORD__INIT;
  eg_ckpt_rec ck = ENGRAM__STORAGE__V1__CHECKPOINT_RECORD__INIT;
  eg_store_ns ns;
  char *labels[] = {"docs"};
  CU_ASSERT_EQUAL_FATAL(eg_store_ns_encode(labels, 1, 1, &ns), EG_OK);
  item.value_token = (ProtobufCBinaryData){sizeof tok - 1, tok};
  item.create_time_us = item.update_time_us = 1;
  item.expire_time_us = 4000000000000000; /* an expiry entry (keys from 0x00) */
  item.ttl_seconds = 1;
  item.value_hashes = h;
  item.n_value_hashes = 1;
  ck.thread_id = "t1";
  ck.checkpoint_ns = "";
  ck.checkpoint_id = "c1";
  ck.checkpoint_type = "json";
  ck.metadata_hashes = h;
  ck.n_metadata_hashes = 1;
  ck.create_time_us = 1;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_item_put(w, "acme", &ns, "a", &item, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_item_put(w, "acme", &ns, "b", &item, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_item_put(w, "zeta", &ns, "c", &item, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_checkpoint_put(w, "acme", "alice", &ck), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);

  t = eg_test_reader(store);
  struct walk_seen seen = {0};
  int more = 0;
  CU_ASSERT_EQUAL(eg_store_blind_walk(t, EG_BLIND_ITEMS, NULL, 0, 2, walk_visit, &seen, &more),
                  EG_OK);
  CU_ASSERT_EQUAL(seen.n, 2);
  CU_ASSERT_TRUE(more);
  CU_ASSERT_STRING_EQUAL(seen.tenant[0], "acme");
  CU_ASSERT_STRING_EQUAL(seen.item_key[0], "a");
  CU_ASSERT_STRING_EQUAL(seen.item_key[1], "b");
  CU_ASSERT_EQUAL(seen.ns_len[0], ns.len);
  /* Resumed strictly after the last key: the other tenant's item. */
  struct walk_seen rest = {0};
  CU_ASSERT_EQUAL(eg_store_blind_walk(t, EG_BLIND_ITEMS, seen.key[1], seen.key_len[1], 10,
                                      walk_visit, &rest, &more),
                  EG_OK);
  CU_ASSERT_EQUAL(rest.n, 1);
  CU_ASSERT_FALSE(more);
  CU_ASSERT_STRING_EQUAL(rest.tenant[0], "zeta");
  CU_ASSERT_STRING_EQUAL(rest.item_key[0], "c");
  ProtobufCMessage *got;
  CU_ASSERT_EQUAL_FATAL(eg_store_blind_get(t, EG_BLIND_ITEMS, seen.key[0], seen.key_len[0], &got),
                        EG_OK);
  CU_ASSERT_EQUAL(((eg_item_rec *)got)->n_value_hashes, 1);
  protobuf_c_message_free_unpacked(got, NULL);
  uint64_t n = 0;
  CU_ASSERT_EQUAL(eg_store_blind_count(t, EG_BLIND_CHECKPOINTS, &n), EG_OK);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_EQUAL(eg_store_blind_walk(t, EG_BLIND_KINDS, NULL, 0, 1, walk_visit, &rest, &more),
                  EG_EINVAL);

  struct walk_seen cks = {0};
  CU_ASSERT_EQUAL(eg_store_blind_walk(t, EG_BLIND_CHECKPOINTS, NULL, 0, 10, walk_visit, &cks,
                                      &more),
                  EG_OK);
  CU_ASSERT_EQUAL_FATAL(cks.n, 1);
  CU_ASSERT_STRING_EQUAL(cks.tenant[0], "acme");
  CU_ASSERT_TRUE(eg_store_checkpoint_key_user(cks.key[0], cks.key_len[0], "acme", "alice"));
  CU_ASSERT_FALSE(eg_store_checkpoint_key_user(cks.key[0], cks.key_len[0], "acme", "bob"));
  CU_ASSERT_FALSE(eg_store_checkpoint_key_user(cks.key[0], cks.key_len[0], "zeta", "alice"));
  eg_test_reader_done(t);
}

void eg_test_register_blind_key(void) {
  CU_pSuite s = CU_add_suite_with_setup_and_teardown("blind_key", NULL, NULL, setup, teardown);
  CU_add_test(s, "no row: the keyring's lowest key id", test_no_row_is_the_lowest_key);
  CU_add_test(s, "a stored id moves every blind context", test_a_stored_id_moves_every_context);
  CU_add_test(s, "rotation: write key, read keys, stamps, apply check", test_rotation_keys);
  CU_add_test(s, "a paused rotation: no walk, the same keys", test_paused_rotation_keys);
  CU_add_test(s, "rotation: the walk of every tenant's records, by key", test_rotation_walk);
}
