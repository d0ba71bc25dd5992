/* server/convert.c over real data keys (server/data_keys.h, a key store in
 * a temp dir): fields seal as format 2 under their user's data key and
 * open under it; format 1 tokens (a store of an older release) still
 * open under the keyring; a user's or a tenant's erased keys make their
 * fields EG_EERASED, naming the record and the user, while other users'
 * and tenants' fields open and the user's new fields open again; an
 * apply's check of what its prepare sealed (eg_field_sealed_live) and the
 * writer's seal (eg_field_seal_existing) answer ABORTED once the key is
 * destroyed, and the latter never makes one. A message's record id (part
 * of its tokens' AEAD context) is "<session_id>/<seq>" exactly as it was
 * always written, or no stored message would open. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "server/config.h"
#include "server/convert.h"
#include "server/data_keys.h"
#include "suites.h"

static char tdir[4096];
static eg_config cfg;
static eg_srv srv;
static eg_keyring *keys;
static eg_data_keys *dks;

/* A test key, in no deployment. */
#define RING "primary 1\nkey 1 " EG_TEST_KEY1 "\n"

static void setup(void) {
  char path[4200], err[256] = "";
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  CU_ASSERT_EQUAL_FATAL(eg_crypto_init(), EG_OK);
  keys = eg_test_keyring(RING);
  snprintf(path, sizeof path, "%s/keystore", tdir);
  CU_ASSERT_EQUAL_FATAL(eg_data_keys_open(path, 16, &dks, err, sizeof err), EG_OK);
  eg_config_defaults(&cfg);
  srv = (eg_srv){.cfg = &cfg, .keys = keys, .data_keys = dks};
}

static void teardown(void) {
  eg_data_keys_close(dks);
  eg_keyring_free(keys);
  eg_test_rmdir(tdir);
}

static eg_req req(const char *tenant) {
  eg_req r = {.srv = &srv, .tenant = tenant, .arena = eg_arena_new()};
  CU_ASSERT_PTR_NOT_NULL_FATAL(r.arena);
  return r;
}

/* Seals text for user's memory id's "text" field. */
static ProtobufCBinaryData seal(eg_req *r, const char *user, const char *id, const char *text) {
  ProtobufCBinaryData tok = {0};
  CU_ASSERT_EQUAL_FATAL(eg_field_seal(r, user, "memory", id, "text", text, strlen(text), &tok),
                        EG_OK);
  return tok;
}

/* Opens user's memory id's "text" token: its eg_err; *out the text. */
static eg_err open_text(eg_req *r, const char *user, const char *id,
                        const ProtobufCBinaryData *tok, char **out) {
  size_t len;
  *out = NULL;
  r->msg[0] = '\0';
  return eg_field_open(r, user, "memory", id, "text", tok, out, &len);
}

static void test_seal_is_format_2_under_the_users_key(void) {
  setup();
  eg_req r = req("acme");
  char *text;
  uint8_t version = 0;
  ProtobufCBinaryData a = seal(&r, "alice", "m1", "alice's secret");
  CU_ASSERT_EQUAL(eg_token_version(a.data, a.len, &version), EG_OK);
  CU_ASSERT_EQUAL(version, EG_TOKEN_VERSION_DEK);
  CU_ASSERT_EQUAL(open_text(&r, "alice", "m1", &a, &text), EG_OK);
  CU_ASSERT_STRING_EQUAL(text, "alice's secret");
  /* Another user's key, or another tenant's, does not open it. */
  ProtobufCBinaryData b = seal(&r, "bob", "m2", "bob's");
  CU_ASSERT_EQUAL(open_text(&r, "bob", "m1", &a, &text), EG_ECORRUPT);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.msg, "memory m1: text does not open"));
  eg_req o = req("other");
  CU_ASSERT_EQUAL(open_text(&o, "alice", "m1", &a, &text), EG_ECORRUPT);
  CU_ASSERT_EQUAL(open_text(&r, "bob", "m2", &b, &text), EG_OK);
  eg_arena_free(o.arena);
  eg_arena_free(r.arena);
  teardown();
}

/* A store written before envelope keys: format 1 under the master key. */
static void test_format_1_still_opens(void) {
  setup();
  eg_req r = req("acme");
  const eg_field_ctx ctx = {"acme", "memory", "m1", "text"};
  uint8_t tok[64];
  char *text;
  CU_ASSERT_EQUAL_FATAL(eg_token_seal(keys, &ctx, (const uint8_t *)"old", 3, tok), EG_OK);
  ProtobufCBinaryData t = {eg_token_len(3), tok};
  CU_ASSERT_EQUAL(open_text(&r, "alice", "m1", &t, &text), EG_OK);
  CU_ASSERT_STRING_EQUAL(text, "old");
  eg_arena_free(r.arena);
  teardown();
}

static void test_erased_user_reads_erased(void) {
  setup();
  eg_req r = req("acme");
  char *text;
  uint64_t destroyed = 0;
  ProtobufCBinaryData a = seal(&r, "alice", "m1", "forget me");
  ProtobufCBinaryData b = seal(&r, "bob", "m2", "keep me");
  CU_ASSERT_EQUAL_FATAL(eg_data_keys_erase_user(dks, "acme", "alice", &destroyed), EG_OK);
  CU_ASSERT_EQUAL(destroyed, 1);
  CU_ASSERT_EQUAL(open_text(&r, "alice", "m1", &a, &text), EG_EERASED);
  CU_ASSERT_PTR_NULL(text);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.msg, "memory m1"));
  CU_ASSERT_PTR_NOT_NULL(strstr(r.msg, "\"alice\" was erased"));
  CU_ASSERT_EQUAL(open_text(&r, "bob", "m2", &b, &text), EG_OK);
  CU_ASSERT_STRING_EQUAL(text, "keep me");
  /* What the user writes after the erasure is sealed under a new key. */
  ProtobufCBinaryData again = seal(&r, "alice", "m3", "new");
  CU_ASSERT_EQUAL(open_text(&r, "alice", "m3", &again, &text), EG_OK);
  CU_ASSERT_STRING_EQUAL(text, "new");
  CU_ASSERT_EQUAL(open_text(&r, "alice", "m1", &a, &text), EG_EERASED);
  eg_arena_free(r.arena);
  teardown();
}

static void test_erased_tenant_reads_erased(void) {
  setup();
  eg_req r = req("acme"), o = req("zeta");
  char *text;
  uint64_t destroyed = 0;
  ProtobufCBinaryData item = seal(&r, EG_DATA_KEY_TENANT_USER, "i1", "{\"a\":1}");
  ProtobufCBinaryData a = seal(&r, "alice", "m1", "alice");
  ProtobufCBinaryData z = seal(&o, "alice", "m1", "zeta's alice");
  CU_ASSERT_EQUAL_FATAL(eg_data_keys_erase_tenant(dks, "acme", &destroyed), EG_OK);
  CU_ASSERT_EQUAL(destroyed, 2);
  CU_ASSERT_EQUAL(open_text(&r, EG_DATA_KEY_TENANT_USER, "i1", &item, &text), EG_EERASED);
  CU_ASSERT_EQUAL(open_text(&r, "alice", "m1", &a, &text), EG_EERASED);
  CU_ASSERT_EQUAL(open_text(&o, "alice", "m1", &z, &text), EG_OK);
  CU_ASSERT_STRING_EQUAL(text, "zeta's alice");
  eg_arena_free(o.arena);
  eg_arena_free(r.arena);
  teardown();
}

/* An apply's check of what its prepare sealed: live keys pass (and empty
 * or format 1 tokens); after the user's erasure, ABORTED saying so, while
 * another user's tokens still pass. The tenant's own key the same. */
static void test_sealed_live_after_an_erasure_is_aborted(void) {
  setup();
  eg_req r = req("acme");
  uint64_t destroyed = 0;
  ProtobufCBinaryData a = seal(&r, "alice", "m1", "in flight");
  ProtobufCBinaryData b = seal(&r, "bob", "m2", "bob's");
  ProtobufCBinaryData item = seal(&r, EG_DATA_KEY_TENANT_USER, "i1", "{}");
  ProtobufCBinaryData none = {0};
  const eg_field_ctx ctx = {"acme", "memory", "m1", "text"};
  uint8_t old[64];
  CU_ASSERT_EQUAL_FATAL(eg_token_seal(keys, &ctx, (const uint8_t *)"old", 3, old), EG_OK);
  ProtobufCBinaryData v1 = {eg_token_len(3), old};
  CU_ASSERT_EQUAL(eg_field_sealed_live(&r, "alice", "memory", "m1", &a), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_data_keys_erase_user(dks, "acme", "alice", &destroyed), EG_OK);
  r.msg[0] = '\0';
  CU_ASSERT_EQUAL(eg_field_sealed_live(&r, "alice", "memory", "m1", &a), EG_EABORTED);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.msg, "memory m1"));
  CU_ASSERT_PTR_NOT_NULL(strstr(r.msg, "\"alice\" were destroyed meanwhile"));
  CU_ASSERT_PTR_NOT_NULL(strstr(r.msg, "retry"));
  /* A new key after the erasure does not make the old token live. */
  ProtobufCBinaryData again = seal(&r, "alice", "m3", "after");
  CU_ASSERT_EQUAL(eg_field_sealed_live(&r, "alice", "memory", "m3", &again), EG_OK);
  CU_ASSERT_EQUAL(eg_field_sealed_live(&r, "alice", "memory", "m1", &a), EG_EABORTED);
  CU_ASSERT_EQUAL(eg_field_sealed_live(&r, "bob", "memory", "m2", &b), EG_OK);
  CU_ASSERT_EQUAL(eg_field_sealed_live(&r, "alice", "memory", "m1", &none), EG_OK);
  CU_ASSERT_EQUAL(eg_field_sealed_live(&r, "alice", "memory", "m1", &v1), EG_OK);
  CU_ASSERT_EQUAL(eg_field_sealed_live(&r, EG_DATA_KEY_TENANT_USER, "store_item", "i1", &item),
                  EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_data_keys_erase_tenant(dks, "acme", &destroyed), EG_OK);
  CU_ASSERT_EQUAL(eg_field_sealed_live(&r, EG_DATA_KEY_TENANT_USER, "store_item", "i1", &item),
                  EG_EABORTED);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.msg, "the tenant's data key was destroyed meanwhile"));
  eg_arena_free(r.arena);
  teardown();
}

/* The writer's seal never makes a key: none yet, or erased, is ABORTED
 * and leaves the user without one; an existing key seals as
 * eg_field_seal does. */
static void test_seal_existing_never_makes_a_key(void) {
  setup();
  eg_req r = req("acme");
  ProtobufCBinaryData tok = {0};
  uint64_t destroyed = 0;
  uint32_t gen;
  uint8_t key[EG_KEY_LEN];
  char *text;
  CU_ASSERT_EQUAL(eg_field_seal_existing(&r, "carol", "message", "s/1", "content", "x", 1, &tok),
                  EG_EABORTED);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.msg, "\"carol\" were destroyed meanwhile"));
  CU_ASSERT_EQUAL(eg_data_key_current_existing(dks, keys, "acme", "carol", &gen, key),
                  EG_ENOTFOUND);
  CU_ASSERT_EQUAL_FATAL(eg_field_key_ready(&r, "carol"), EG_OK);
  CU_ASSERT_EQUAL_FATAL(
      eg_field_seal_existing(&r, "carol", "memory", "m1", "text", "hello", 5, &tok), EG_OK);
  CU_ASSERT_EQUAL(open_text(&r, "carol", "m1", &tok, &text), EG_OK);
  CU_ASSERT_STRING_EQUAL(text, "hello");
  CU_ASSERT_EQUAL_FATAL(eg_data_keys_erase_user(dks, "acme", "carol", &destroyed), EG_OK);
  CU_ASSERT_EQUAL(eg_field_seal_existing(&r, "carol", "memory", "m2", "text", "y", 1, &tok),
                  EG_EABORTED);
  CU_ASSERT_EQUAL(eg_data_key_current_existing(dks, keys, "acme", "carol", &gen, key),
                  EG_EERASED);
  eg_arena_free(r.arena);
  teardown();
}

static void test_message_record_id_format(void) {
  static const int64_t seqs[] = {0, 1, 9, 10, 99, 100, 123456789, INT64_MAX, -1, -10, INT64_MIN};
  eg_req r = {.arena = eg_arena_new()};
  CU_ASSERT_PTR_NOT_NULL_FATAL(r.arena);
  for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
    char want[200];
    snprintf(want, sizeof want, "s-01HZX/%" PRId64, seqs[i]);
    const char *got = eg_message_record_id(&r, "s-01HZX", seqs[i]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_STRING_EQUAL(got, want);
  }
  CU_ASSERT_STRING_EQUAL(eg_message_record_id(&r, "", 7), "/7");
  eg_arena_free(r.arena);
}

/* AppendMessages seals a message on the worker for the seq it predicts
 * (server/svc_session.c): the token is bound to "<session>/<seq>", so it
 * opens at that seq only, not at the next one nor at the same seq of
 * another session, nor as another field or under another user's key; and
 * it is the same as the writer's own seal (eg_field_seal_existing) for
 * that seq would be, so apply may store either. */
static void test_message_token_opens_only_at_its_seq(void) {
  setup();
  eg_req r = req("acme");
  ProtobufCBinaryData ahead = {0}, writer = {0};
  size_t len;
  char *text;
  const char *at5 = eg_message_record_id(&r, "s1", 5), *at6 = eg_message_record_id(&r, "s1", 6),
             *other = eg_message_record_id(&r, "s2", 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(at5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(at6);
  CU_ASSERT_PTR_NOT_NULL_FATAL(other);
  CU_ASSERT_EQUAL_FATAL(eg_field_seal(&r, "dave", "message", at5, "content", "hi", 2, &ahead),
                        EG_OK);
  CU_ASSERT_EQUAL(eg_field_open(&r, "dave", "message", at5, "content", &ahead, &text, &len),
                  EG_OK);
  CU_ASSERT_STRING_EQUAL(text, "hi");
  CU_ASSERT_EQUAL(eg_field_open(&r, "dave", "message", at6, "content", &ahead, &text, &len),
                  EG_ECORRUPT);
  CU_ASSERT_EQUAL(eg_field_open(&r, "dave", "message", other, "content", &ahead, &text, &len),
                  EG_ECORRUPT);
  CU_ASSERT_EQUAL(eg_field_open(&r, "dave", "message", at5, "metadata", &ahead, &text, &len),
                  EG_ECORRUPT);
  CU_ASSERT_EQUAL_FATAL(eg_field_key_ready(&r, "erin"), EG_OK);
  CU_ASSERT_EQUAL(eg_field_open(&r, "erin", "message", at5, "content", &ahead, &text, &len),
                  EG_ECORRUPT);
  /* What apply checks before storing it, and the writer's seal of seq 5. */
  CU_ASSERT_EQUAL(eg_field_sealed_live(&r, "dave", "message", at5, &ahead), EG_OK);
  CU_ASSERT_EQUAL_FATAL(
      eg_field_seal_existing(&r, "dave", "message", at5, "content", "hi", 2, &writer), EG_OK);
  CU_ASSERT_EQUAL(eg_field_open(&r, "dave", "message", at5, "content", &writer, &text, &len),
                  EG_OK);
  CU_ASSERT_STRING_EQUAL(text, "hi");
  CU_ASSERT_EQUAL(eg_field_open(&r, "dave", "message", at6, "content", &writer, &text, &len),
                  EG_ECORRUPT);
  eg_arena_free(r.arena);
  teardown();
}

void eg_test_register_envelope(void) {
  CU_pSuite s = CU_add_suite("envelope", NULL, NULL);
  CU_add_test(s, "seal is format 2 under the user's key",
              test_seal_is_format_2_under_the_users_key);
  CU_add_test(s, "format 1 still opens", test_format_1_still_opens);
  CU_add_test(s, "erased user reads erased", test_erased_user_reads_erased);
  CU_add_test(s, "erased tenant reads erased", test_erased_tenant_reads_erased);
  CU_add_test(s, "sealed live after an erasure is aborted",
              test_sealed_live_after_an_erasure_is_aborted);
  CU_add_test(s, "seal existing never makes a key", test_seal_existing_never_makes_a_key);
  CU_add_test(s, "message record id format", test_message_record_id_format);
  CU_add_test(s, "message token opens only at its seq", test_message_token_opens_only_at_its_seq);
}
