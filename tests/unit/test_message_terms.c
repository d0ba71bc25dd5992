/* A message's keyword index fields (server/message_terms.h): what the
 * background reindex stores for an old message. */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "crypto/crypto.h"
#include "server/arena.h"
#include "server/message_terms.h"
#include "server/tokenizer.h"
#include "suites.h"

static eg_keyring *ring1(void) { return eg_test_keyring("primary 1\nkey 1 " EG_TEST_KEY1 "\n"); }

/* The fields of "the router drops the router": two distinct words (stop
 * word "the" dropped), router twice, three words, the user kept. */
static void test_fields(void) {
  eg_keyring *kr = ring1();
  eg_blind_ctx ctx;
  eg_arena *a = eg_arena_new();
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  CU_ASSERT_EQUAL_FATAL(eg_blind_begin(kr, "acme", &ctx), EG_OK);
  eg_message_rec rec = ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
  const char *text = "the router drops the router";
  CU_ASSERT_EQUAL_FATAL(eg_message_index_fields(a, &ctx, 3, EG_TOKENIZER_VERSION, "", "alice",
                                                text, strlen(text), &rec),
                        EG_OK);
  CU_ASSERT_EQUAL(rec.index_version, EG_TOKENIZER_VERSION);
  CU_ASSERT_EQUAL(rec.blind_key_id, 3); /* the key the terms are under */
  CU_ASSERT_EQUAL(rec.n_index_terms, 2);
  CU_ASSERT_EQUAL(rec.index_tf.len, 2);
  CU_ASSERT_EQUAL(rec.index_words, 3);
  CU_ASSERT_STRING_EQUAL(rec.index_user_id, "alice");
  uint64_t router = eg_blind_word(&ctx, "router", 6);
  int found = 0;
  for (size_t i = 0; i < rec.n_index_terms; i++) {
    if (i) CU_ASSERT(rec.index_terms[i - 1] < rec.index_terms[i]); /* sorted, unique */
    if (rec.index_terms[i] == router) found = rec.index_tf.data[i];
  }
  CU_ASSERT_EQUAL(found, 2);
  eg_blind_end(&ctx);
  eg_arena_free(a);
  eg_keyring_free(kr);
}

/* EG_MESSAGE_TERMS_MAX at its edge: that many distinct words are all
 * indexed; one more is counted as a word but not indexed. */
static void test_terms_cap(void) {
  eg_keyring *kr = ring1();
  eg_blind_ctx ctx;
  eg_arena *a = eg_arena_new();
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  char *text = eg_arena_alloc(a, 6 * (EG_MESSAGE_TERMS_MAX + 1) + 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  CU_ASSERT_EQUAL_FATAL(eg_blind_begin(kr, "acme", &ctx), EG_OK);
  for (size_t words = EG_MESSAGE_TERMS_MAX; words <= EG_MESSAGE_TERMS_MAX + 1; words++) {
    size_t len = 0;
    /* "k0000 k0001 ...": distinct words no stemmer changes */
    for (size_t i = 0; i < words; i++) len += (size_t)sprintf(text + len, "k%04zu ", i);
    eg_message_rec rec = ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
    CU_ASSERT_EQUAL_FATAL(eg_message_index_fields(a, &ctx, 1, EG_TOKENIZER_VERSION, "", "u", text,
                                                  len, &rec),
                          EG_OK);
    CU_ASSERT_EQUAL(rec.n_index_terms, EG_MESSAGE_TERMS_MAX);
    CU_ASSERT_EQUAL(rec.index_words, words);
  }
  eg_blind_end(&ctx);
  eg_arena_free(a);
  eg_keyring_free(kr);
}

static int suite_init(void) { return eg_crypto_init() == EG_OK ? 0 : -1; }

void eg_test_register_message_terms(void) {
  CU_pSuite s = CU_add_suite("message_terms", suite_init, NULL);
  CU_add_test(s, "index fields of a message", test_fields);
  CU_add_test(s, "EG_MESSAGE_TERMS_MAX at its edge", test_terms_cap);
}
