/* Memories without storage: the tokenizer, blind-index tokens, scoring,
 * the top-k heap and the de-duplication rules (server/tokenizer.h, text_terms.h,
 * crypto/blind.c, server/memory_score.h). */
#include <CUnit/CUnit.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "server/memory_score.h"
#include "server/text_terms.h"
#include "server/tokenizer.h"
#include "suites.h"

/* ---- helpers ------------------------------------------------------------- */

/* Key 2 primary, key 1 the blind index's (the lowest). */
#define TWO_KEYS "primary 2\nkey 2 " EG_TEST_KEY2 "\nkey 1 " EG_TEST_KEY1 "\n"

static eg_keyring *ring1(void) { return eg_test_keyring("primary 1\nkey 1 " EG_TEST_KEY1 "\n"); }

/* Words of text joined by single spaces, and the polarity. */
struct words {
  char buf[1024];
  size_t len;
};

static void add_word(void *arg, const char *w, size_t n) {
  struct words *ws = arg;
  if (ws->len) ws->buf[ws->len++] = ' ';
  memcpy(ws->buf + ws->len, w, n);
  ws->len += n;
  ws->buf[ws->len] = '\0';
}

static int words_of(const char *text, struct words *ws) {
  memset(ws, 0, sizeof *ws);
  return eg_text_words(EG_TOKENIZER_V1, "", text, strlen(text), add_word, ws);
}

#define ASSERT_WORDS(text, want, want_neg)                                       \
  do {                                                                           \
    struct words ws_;                                                            \
    int neg_ = words_of(text, &ws_);                                             \
    if (strcmp(ws_.buf, want) != 0) fprintf(stderr, "\n%s -> [%s]\n", text, ws_.buf); \
    CU_ASSERT_STRING_EQUAL(ws_.buf, want);                                       \
    CU_ASSERT_EQUAL(neg_, want_neg);                                             \
  } while (0)

/* ---- tokenizer ------------------------------------------------------------ */

static void test_words_basic(void) {
  ASSERT_WORDS("", "", 0);
  ASSERT_WORDS("  ,.;!  ", "", 0);
  ASSERT_WORDS("Alice likes green tea", "alice like green tea", 0);
  ASSERT_WORDS("alice,likes;GREEN-tea!!", "alice like green tea", 0);
  ASSERT_WORDS("The user is a Doctor", "doctor", 0);
  ASSERT_WORDS("R2D2 and C3PO 2024", "r2d2 c3po 2024", 0);
  /* plural and third person: a light stem, same on both sides */
  ASSERT_WORDS("cats dogs glass bus tennis berries", "cat dog glass bus tennis berry", 0);
}

static void test_words_unicode(void) {
  ASSERT_WORDS("Élodie aime le café", "élodie aime le café", 0);
  ASSERT_WORDS("ÉLODIE", "élodie", 0);
  ASSERT_WORDS("東京 に 住んで いる", "東京 に 住んで いる", 0);
  /* NBSP, em dash, curly quotes and ideographic punctuation separate */
  ASSERT_WORDS("tea\xC2\xA0time\xE2\x80\x94now \xE2\x80\x9Cquoted\xE2\x80\x9D 東京\xE3\x80\x82大阪",
               "tea time now quoted 東京 大阪", 0);
  /* a curly apostrophe joins like a straight one */
  ASSERT_WORDS("don\xE2\x80\x99t", "", 1);
  /* stray continuation bytes are word bytes, never a crash */
  struct words ws;
  words_of("\x80\x80 ok \xC3", &ws);
  CU_ASSERT_PTR_NOT_NULL(strstr(ws.buf, "ok"));
}

static void test_words_negation(void) {
  ASSERT_WORDS("likes tea", "like tea", 0);
  ASSERT_WORDS("dislikes tea", "like tea", 1);
  ASSERT_WORDS("does not like tea", "like tea", 1);
  ASSERT_WORDS("doesn't like tea", "like tea", 1);
  ASSERT_WORDS("never liked tea", "like tea", 1);
  ASSERT_WORDS("hates tea", "like tea", 1);
  ASSERT_WORDS("loves tea", "like tea", 0);
  ASSERT_WORDS("enjoying tea", "like tea", 0);
  /* two flips cancel */
  ASSERT_WORDS("does not dislike tea", "like tea", 0);
  ASSERT_WORDS("no tea without milk", "tea milk", 0);
  /* an apostrophe at a word's end separates */
  ASSERT_WORDS("the cats' toys", "cat toy", 0);
}

static void test_words_long(void) {
  char text[300];
  memset(text, 'x', 200);
  strcpy(text + 200, " end");
  struct words ws;
  words_of(text, &ws);
  /* The first EG_WORD_MAX bytes of the long word, then the next word. */
  CU_ASSERT_EQUAL(strlen(ws.buf), EG_WORD_MAX + 4);
  CU_ASSERT_STRING_EQUAL(ws.buf + EG_WORD_MAX, " end");
}

/* ---- blind index -------------------------------------------------------------- */

static void test_blind_tokens(void) {
  eg_keyring *kr = ring1();
  eg_blind_ctx a, b;
  CU_ASSERT_EQUAL_FATAL(eg_blind_begin(kr, "acme", &a), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_blind_begin(kr, "other", &b), EG_OK);
  uint64_t tea = eg_blind_word(&a, "tea", 3);
  CU_ASSERT_EQUAL(tea, eg_blind_word(&a, "tea", 3));      /* deterministic */
  CU_ASSERT_NOT_EQUAL(tea, eg_blind_word(&a, "teas", 4)); /* word-sensitive */
  CU_ASSERT_NOT_EQUAL(tea, eg_blind_word(&b, "tea", 3));  /* tenant-bound */
  /* tenant|word is length-prefixed: ("ab","c") is not ("a","bc") */
  eg_blind_ctx ab, a1;
  CU_ASSERT_EQUAL(eg_blind_begin(kr, "ab", &ab), EG_OK);
  CU_ASSERT_EQUAL(eg_blind_begin(kr, "a", &a1), EG_OK);
  CU_ASSERT_NOT_EQUAL(eg_blind_word(&ab, "c", 1), eg_blind_word(&a1, "bc", 2));
  /* not the plain hash of the word: the key matters */
  eg_keyring *other = eg_test_keyring("primary 1\nkey 1 " EG_TEST_KEY2 "\n");
  eg_blind_ctx o;
  CU_ASSERT_EQUAL(eg_blind_begin(other, "acme", &o), EG_OK);
  CU_ASSERT_NOT_EQUAL(tea, eg_blind_word(&o, "tea", 3));
  /* over-long tenant, empty ring */
  char longt[300];
  memset(longt, 'a', 299);
  longt[299] = '\0';
  CU_ASSERT_EQUAL(eg_blind_begin(kr, longt, &o), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_blind_begin(NULL, "acme", &o), EG_EINVAL);
  eg_blind_end(&a);
  unsigned char zero[sizeof a.opaque] = {0};
  CU_ASSERT_EQUAL(memcmp(a.opaque, zero, sizeof zero), 0);
  eg_keyring_free(kr);
  eg_keyring_free(other);
}

static void test_blind_survives_rotation(void) {
  /* Rotation adds key 2 and makes it primary: blind tokens must not move,
   * or every stored posting would stop matching. */
  eg_keyring *before = ring1();
  eg_keyring *after = eg_test_keyring(TWO_KEYS);
  CU_ASSERT_EQUAL(eg_keyring_blind_key_id(before), 1);
  CU_ASSERT_EQUAL(eg_keyring_blind_key_id(after), 1);
  eg_blind_ctx x, y;
  CU_ASSERT_EQUAL(eg_blind_begin(before, "acme", &x), EG_OK);
  CU_ASSERT_EQUAL(eg_blind_begin(after, "acme", &y), EG_OK);
  CU_ASSERT_EQUAL(eg_blind_word(&x, "tea", 3), eg_blind_word(&y, "tea", 3));
  /* A blind-index rotation to key 2: other tokens, the same under key 2 of
   * any keyring holding it; key 1's stay as they were. */
  eg_blind_ctx z, one, absent;
  CU_ASSERT_EQUAL(eg_blind_begin_id(after, 2, "acme", &z), EG_OK);
  CU_ASSERT_NOT_EQUAL(eg_blind_word(&z, "tea", 3), eg_blind_word(&x, "tea", 3));
  CU_ASSERT_EQUAL(eg_blind_begin_id(after, 1, "acme", &one), EG_OK);
  CU_ASSERT_EQUAL(eg_blind_word(&one, "tea", 3), eg_blind_word(&x, "tea", 3));
  CU_ASSERT_EQUAL(eg_blind_begin_id(before, 2, "acme", &absent), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_blind_begin_id(after, 0, "acme", &absent), EG_EINVAL);
  eg_keyring_free(before);
  eg_keyring_free(after);
}

static void test_text_terms(void) {
  eg_keyring *kr = ring1();
  eg_blind_ctx c;
  uint64_t a[16], b[16];
  uint8_t tf[16];
  size_t na, nb, n3;
  uint32_t words;
  int neg;
  CU_ASSERT_EQUAL_FATAL(eg_blind_begin(kr, "acme", &c), EG_OK);
  CU_ASSERT_EQUAL(eg_text_terms(&c, EG_TOKENIZER_VERSION, "", "Tea, tea and TEA: green tea.", 28,
                                a, tf, 16, &na, &words, &neg), EG_OK);
  CU_ASSERT_EQUAL(na, 2); /* {tea, green}, unique */
  CU_ASSERT_EQUAL(words, 5); /* "and" is a stop word */
  CU_ASSERT_EQUAL(tf[0] + tf[1], 5);
  CU_ASSERT(tf[0] == 4 || tf[1] == 4);
  CU_ASSERT_EQUAL(neg, 0);
  CU_ASSERT(a[0] < a[1]); /* sorted */
  CU_ASSERT_EQUAL(eg_text_terms(&c, EG_TOKENIZER_VERSION, "", "green TEA", 9, b, NULL, 16, &nb,
                                NULL, &neg), EG_OK);
  CU_ASSERT_EQUAL(nb, 2);
  CU_ASSERT_EQUAL(memcmp(a, b, sizeof a[0] * 2), 0);
  /* the cap keeps the first distinct words, and counts every word */
  CU_ASSERT_EQUAL(eg_text_terms(&c, EG_TOKENIZER_VERSION, "", "one two three four", 18, a, NULL,
                                3, &n3, &words, NULL), EG_OK);
  CU_ASSERT_EQUAL(n3, 3);
  CU_ASSERT_EQUAL(words, 4);
  /* A long text: 6,000 words cycling over 700 distinct ones, cap 512. The
   * first 512 distinct are kept, each counted 8 or 9 times (700 * 8 =
   * 5,600; the first 400 come a ninth time), every word in `words`. */
  enum { DISTINCT = 700, TOTAL = 6000, CAP = 512 };
  char *text = malloc(TOTAL * 8);
  uint64_t *big = malloc(CAP * sizeof *big);
  uint8_t *btf = malloc(CAP);
  size_t at = 0, nb2;
  CU_ASSERT_FATAL(text && big && btf);
  for (int i = 0; i < TOTAL; i++) at += (size_t)sprintf(text + at, "w%dx ", i % DISTINCT);
  CU_ASSERT_EQUAL(eg_text_terms(&c, EG_TOKENIZER_VERSION, "", text, at, big, btf, CAP, &nb2,
                                &words, NULL), EG_OK);
  CU_ASSERT_EQUAL(nb2, CAP);
  CU_ASSERT_EQUAL(words, TOTAL);
  unsigned sum = 0;
  for (size_t i = 0; i < nb2; i++) {
    CU_ASSERT(btf[i] == 8 || btf[i] == 9);
    sum += btf[i];
    if (i) CU_ASSERT(big[i - 1] < big[i]);
  }
  CU_ASSERT_EQUAL(sum, 400 * 9 + 112 * 8);
  free(text);
  free(big);
  free(btf);
  eg_keyring_free(kr);
}

/* ---- scoring ------------------------------------------------------------------- */

/* The one token eg_text_terms makes of a single word under c. */
static uint64_t term_of(const eg_blind_ctx *c, const char *word) {
  uint64_t t = 0;
  size_t n = 0;
  CU_ASSERT_EQUAL(eg_text_terms(c, EG_TOKENIZER_VERSION, "", word, strlen(word), &t, NULL, 1, &n,
                                NULL, NULL), EG_OK);
  CU_ASSERT_EQUAL(n, 1);
  return t;
}

static int u64_less(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* A query's terms under both read keys of a blind-index rotation, lined
 * up: index i is one word under either key (what lets a word's document
 * frequency be summed over the keys), whereas eg_text_terms sorts each
 * key's tokens, so index i of one key is in general another word of the
 * other. */
static void test_text_terms_lined(void) {
  eg_keyring *kr = eg_test_keyring(TWO_KEYS);
  eg_blind_ctx one, two;
  CU_ASSERT_EQUAL_FATAL(eg_blind_begin_id(kr, 1, "acme", &one), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_blind_begin_id(kr, 2, "acme", &two), EG_OK);
  eg_blind_read keys = {.n = 2, .id = {1, 2}, .ctx = {&one, &two}};
  static const char *const words[] = {"green", "tea", "black", "coffee", "river", "stone"};
  enum { W = sizeof words / sizeof *words };
  const char *text = "Green tea, green TEA and black coffee by the river stone; tea.";
  uint64_t a[2][16], b[2][16], sorted[2][16];
  uint64_t *out[2] = {a[0], a[1]};
  size_t n = 0, ns = 0;
  CU_ASSERT_EQUAL(eg_text_terms_lined(&keys, EG_TOKENIZER_VERSION, "", text, strlen(text), out, 16,
                                      &n), EG_OK);
  CU_ASSERT_EQUAL_FATAL(n, W); /* distinct words; stop words left out */
  for (size_t i = 0; i < W; i++) {
    CU_ASSERT_EQUAL(a[0][i], term_of(&one, words[i]));
    CU_ASSERT_EQUAL(a[1][i], term_of(&two, words[i]));
    CU_ASSERT_NOT_EQUAL(a[0][i], a[1][i]);
  }
  /* The same set as eg_text_terms under each key, in another order: the
   * sorted arrays do not line up (at least one index is another word). */
  int crossed = 0;
  for (int k = 0; k < 2; k++) {
    CU_ASSERT_EQUAL(eg_text_terms(k ? &two : &one, EG_TOKENIZER_VERSION, "", text, strlen(text),
                                  sorted[k], NULL, 16, &ns, NULL, NULL), EG_OK);
    CU_ASSERT_EQUAL_FATAL(ns, W);
    memcpy(b[k], a[k], sizeof a[k]);
    qsort(b[k], W, sizeof b[k][0], u64_less);
    CU_ASSERT_EQUAL(memcmp(b[k], sorted[k], W * sizeof b[k][0]), 0);
  }
  for (size_t i = 0; i < W; i++) {
    size_t j = 0;
    while (j < W && a[0][j] != sorted[0][i]) j++;
    CU_ASSERT_FATAL(j < W);
    crossed |= sorted[1][i] != a[1][j];
  }
  CU_ASSERT(crossed);
  /* The cap keeps the first distinct words under both keys. */
  CU_ASSERT_EQUAL(eg_text_terms_lined(&keys, EG_TOKENIZER_VERSION, "", text, strlen(text), out, 2,
                                      &n), EG_OK);
  CU_ASSERT_EQUAL(n, 2);
  CU_ASSERT_EQUAL(a[0][1], term_of(&one, "tea"));
  CU_ASSERT_EQUAL(a[1][1], term_of(&two, "tea"));
  /* One read key (no rotation): that key's tokens in the same order. */
  eg_blind_read single = {.n = 1, .id = {2}, .ctx = {&two}};
  uint64_t *out1[1] = {b[0]};
  CU_ASSERT_EQUAL(eg_text_terms_lined(&single, EG_TOKENIZER_VERSION, "", text, strlen(text), out1,
                                      16, &n), EG_OK);
  CU_ASSERT_EQUAL_FATAL(n, W);
  for (size_t i = 0; i < W; i++) CU_ASSERT_EQUAL(b[0][i], term_of(&two, words[i]));
  /* No words at all. */
  CU_ASSERT_EQUAL(eg_text_terms_lined(&keys, EG_TOKENIZER_VERSION, "", "the and, of", 11, out, 16,
                                      &n), EG_OK);
  CU_ASSERT_EQUAL(n, 0);
  eg_blind_end(&one);
  eg_blind_end(&two);
  eg_keyring_free(kr);
}

static void test_vector_math(void) {
  float q[37], v[37];
  for (int i = 0; i < 37; i++) {
    q[i] = (float)(i % 5) - 2.0f;
    v[i] = (float)(i % 3) + 0.5f;
  }
  double want = 0;
  for (int i = 0; i < 37; i++) want += (double)q[i] * v[i];
  /* unaligned storage, odd dimension (tail loop) */
  uint8_t raw[37 * 4 + 1];
  memcpy(raw + 1, v, sizeof v);
  CU_ASSERT_DOUBLE_EQUAL(eg_vec_dot(q, raw + 1, 37), want, 1e-3);
  float n = eg_vec_norm(q, 37);
  CU_ASSERT_DOUBLE_EQUAL(eg_cosine(eg_vec_dot(q, (const uint8_t *)q, 37), n, n), 1.0, 1e-6);
  /* int16 x int8, exact; the query quantization stays within scale / 2 */
  int8_t c8[37];
  int16_t a16[37];
  int64_t want8 = 0;
  float sc = eg_vec_quantize16(q, 37, a16);
  for (int i = 0; i < 37; i++) {
    c8[i] = (int8_t)(i * 7 % 255 - 127);
    want8 += (int64_t)a16[i] * c8[i];
    CU_ASSERT(fabsf(q[i] - sc * a16[i]) <= sc / 2 + 1e-7f);
  }
  CU_ASSERT_EQUAL(eg_vec_dot_i16_i8(a16, c8, 37), want8);
  /* at the largest dimension the int32 sum cannot overflow */
  static float big[4096];
  static int16_t big16[4096];
  static int8_t big8[4096];
  for (int i = 0; i < 4096; i++) big[i] = 1.0f, big8[i] = 127;
  float bs = eg_vec_quantize16(big, 4096, big16);
  CU_ASSERT(big16[0] > 0 && (int64_t)big16[0] * 127 * 4096 < INT32_MAX);
  CU_ASSERT_EQUAL(eg_vec_dot_i16_i8(big16, big8, 4096), (int64_t)big16[0] * 127 * 4096);
  CU_ASSERT(bs > 0);
  CU_ASSERT_EQUAL(eg_cosine(5, 0, 1), 0);
  CU_ASSERT_EQUAL(eg_cosine(3, 1, 1), 1); /* clamped */
  CU_ASSERT_DOUBLE_EQUAL(eg_jaccard(2, 3, 3), 0.5, 1e-6);
  CU_ASSERT_DOUBLE_EQUAL(eg_jaccard(3, 3, 3), 1.0, 1e-6);
  CU_ASSERT_EQUAL(eg_jaccard(0, 0, 0), 0);
  CU_ASSERT_DOUBLE_EQUAL(eg_recency(0, 100), 1.0, 1e-6);
  CU_ASSERT_DOUBLE_EQUAL(eg_recency(100, 100), 0.5, 1e-6);
  CU_ASSERT_DOUBLE_EQUAL(eg_recency(200, 100), 0.25, 1e-6);
  CU_ASSERT_DOUBLE_EQUAL(eg_recency(-5, 100), 1.0, 1e-6);
}

static void test_keyword_score(void) {
  /* Rare words weigh more than common ones. */
  CU_ASSERT(eg_idf(1, 100) > eg_idf(50, 100));
  double q = eg_idf(1, 100) + eg_idf(50, 100);
  float rare = eg_keyword_score(eg_idf(1, 100), q, 1, 4);
  float common = eg_keyword_score(eg_idf(50, 100), q, 1, 4);
  CU_ASSERT(rare > common);
  CU_ASSERT_DOUBLE_EQUAL(eg_keyword_score(q, q, 2, 2), 1.0, 1e-6);
  /* A short memory matching the whole query beats a long one. */
  CU_ASSERT(eg_keyword_score(q, q, 2, 2) > eg_keyword_score(q, q, 2, 20));
  CU_ASSERT_EQUAL(eg_keyword_score(0, q, 0, 5), 0);
}

static eg_scored cand(float score, float imp, int64_t create, const char *id) {
  eg_scored c = {.score = score, .importance = imp, .create_us = create};
  c.pos_len = strlen(id);
  memcpy(c.pos, id, c.pos_len);
  return c;
}

/* Weights that are each finite but sum past FLT_MAX once gave inf scores,
 * so no min_score could filter them. Normalized, every score is in [0, 1]. */
static void test_weights_normalized(void) {
  eg_weights w;
  const float huge[4] = {FLT_MAX, FLT_MAX, FLT_MAX, FLT_MAX};
  CU_ASSERT_EQUAL_FATAL(eg_weights_normalize(huge, &w), 0);
  CU_ASSERT_DOUBLE_EQUAL(w.keyword, 0.25, 1e-6);
  CU_ASSERT_DOUBLE_EQUAL(w.recency, 0.25, 1e-6);
  float top = eg_hybrid_score(&w, 1, 1, 1, 1);
  CU_ASSERT_TRUE(isfinite(top) && top <= 1.0f && top >= 0.999f);
  CU_ASSERT_DOUBLE_EQUAL(eg_hybrid_score(&w, 1, 0, 0, 0), 0.25, 1e-6);
  CU_ASSERT_EQUAL(eg_hybrid_score(&w, 0, 0, 0, 0), 0.0f);
  /* One huge weight, the rest tiny: the huge one carries the score. */
  const float skew[4] = {FLT_MAX, FLT_MIN, 0, 1e-30f};
  CU_ASSERT_EQUAL_FATAL(eg_weights_normalize(skew, &w), 0);
  CU_ASSERT_DOUBLE_EQUAL(eg_hybrid_score(&w, 0.5f, 1, 1, 1), 0.5, 1e-6);
  /* Denormal weights still normalize (the sum is not 0). */
  const float tiny[4] = {1e-45f, 0, 0, 0};
  CU_ASSERT_EQUAL_FATAL(eg_weights_normalize(tiny, &w), 0);
  CU_ASSERT_DOUBLE_EQUAL(w.keyword, 1.0, 1e-6);
  /* Every combination of component scores stays in [0, 1]. */
  const float mixed[4] = {3.0e38f, 1.0f, 2.5e38f, 7.0f};
  CU_ASSERT_EQUAL_FATAL(eg_weights_normalize(mixed, &w), 0);
  for (int i = 0; i < 16; i++) {
    float sc = eg_hybrid_score(&w, i & 1, (i >> 1) & 1, (i >> 2) & 1, (i >> 3) & 1);
    CU_ASSERT_TRUE(sc >= 0 && sc <= 1);
  }
  /* Refused: negative, not finite, all zero. */
  const float neg[4] = {1, -1, 0, 0}, inf[4] = {INFINITY, 0, 0, 0}, nan_[4] = {NAN, 1, 1, 1},
              zero[4] = {0, 0, 0, 0};
  CU_ASSERT_EQUAL(eg_weights_normalize(neg, &w), -1);
  CU_ASSERT_EQUAL(eg_weights_normalize(inf, &w), -1);
  CU_ASSERT_EQUAL(eg_weights_normalize(nan_, &w), -1);
  CU_ASSERT_EQUAL(eg_weights_normalize(zero, &w), -1);
}

static void test_topk_order_and_ties(void) {
  eg_scored items[4];
  eg_topk h;
  eg_topk_init(&h, items, 4);
  eg_scored all[] = {cand(0.5f, 0.1f, 1, "a"), cand(0.9f, 0.1f, 1, "b"), cand(0.5f, 0.9f, 1, "c"),
                     cand(0.5f, 0.1f, 2, "d"), cand(0.1f, 1.0f, 9, "e"), cand(0.5f, 0.1f, 1, "f"),
                     cand(0.7f, 0.0f, 0, "g")};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) eg_topk_offer(&h, &all[i]);
  eg_topk_sort(&h);
  CU_ASSERT_EQUAL_FATAL(h.n, 4);
  /* score desc; then importance desc; then newest; then id asc */
  const char *want[] = {"b", "g", "c", "d"};
  for (int i = 0; i < 4; i++) CU_ASSERT_EQUAL(items[i].pos[0], want[i][0]);
  /* the same candidates in another order give the same answer */
  eg_topk_init(&h, items, 4);
  for (size_t i = sizeof all / sizeof all[0]; i-- > 0;) eg_topk_offer(&h, &all[i]);
  eg_topk_sort(&h);
  for (int i = 0; i < 4; i++) CU_ASSERT_EQUAL(items[i].pos[0], want[i][0]);
  /* ties on everything but the id: ascending id, deterministic */
  eg_topk_init(&h, items, 2);
  eg_scored t1 = cand(0.5f, 0.5f, 5, "z"), t2 = cand(0.5f, 0.5f, 5, "m"), t3 = cand(0.5f, 0.5f, 5, "q");
  eg_topk_offer(&h, &t1);
  eg_topk_offer(&h, &t2);
  eg_topk_offer(&h, &t3);
  eg_topk_sort(&h);
  CU_ASSERT_EQUAL(items[0].pos[0], 'm');
  CU_ASSERT_EQUAL(items[1].pos[0], 'q');
}

/* ---- de-duplication ---------------------------------------------------------------- */

/* The Jaccard similarity the server computes for two texts, and whether
 * their polarities agree. */
static eg_similarity sim_of(const eg_blind_ctx *c, const char *x, const char *y) {
  uint64_t a[64], b[64];
  int na_neg, nb_neg;
  size_t na = 0, nb = 0;
  CU_ASSERT_EQUAL(eg_text_terms(c, EG_TOKENIZER_VERSION, "", x, strlen(x), a, NULL, 64, &na, NULL,
                                &na_neg), EG_OK);
  CU_ASSERT_EQUAL(eg_text_terms(c, EG_TOKENIZER_VERSION, "", y, strlen(y), b, NULL, 64, &nb, NULL,
                                &nb_neg), EG_OK);
  size_t inter = 0;
  for (size_t i = 0; i < na; i++)
    for (size_t j = 0; j < nb; j++) inter += a[i] == b[j];
  eg_similarity s = {.jaccard = eg_jaccard(inter, na, nb), .same_polarity = na_neg == nb_neg};
  return s;
}

static void test_dedup_rules(void) {
  eg_keyring *kr = ring1();
  eg_blind_ctx c;
  CU_ASSERT_EQUAL_FATAL(eg_blind_begin(kr, "acme", &c), EG_OK);
  const float jt = EG_DEDUP_JACCARD_DEFAULT, ct = EG_DEDUP_COSINE_DEFAULT;
  /* near-duplicate: same words up to case, punctuation, stop words, plural */
  eg_similarity s = sim_of(&c, "Alice likes green tea", "alice LIKES the green teas!");
  CU_ASSERT(eg_is_duplicate(&s, jt, ct, 1));
  CU_ASSERT(!eg_is_conflict(&s, jt, ct, 1));
  /* distinct facts */
  s = sim_of(&c, "Alice likes green tea", "Alice likes black coffee");
  CU_ASSERT(!eg_is_duplicate(&s, jt, ct, 1));
  CU_ASSERT(!eg_is_conflict(&s, jt, ct, 1));
  /* contradictions are never duplicates, and are reported */
  const char *contra[][2] = {{"likes tea", "dislikes tea"},
                             {"likes tea", "does not like tea"},
                             {"Alice likes tea", "Alice doesn't like tea"},
                             {"loves jazz", "hates jazz"}};
  for (size_t i = 0; i < 4; i++) {
    s = sim_of(&c, contra[i][0], contra[i][1]);
    CU_ASSERT(!eg_is_duplicate(&s, jt, ct, 1));
    CU_ASSERT(eg_is_conflict(&s, jt, ct, 1));
  }
  /* cosine alone can make a duplicate (same polarity), never across polarity */
  eg_similarity v = {.jaccard = 0.2f, .cosine = 0.97f, .both_vectors = 1, .same_polarity = 1};
  CU_ASSERT(eg_is_duplicate(&v, jt, ct, 1));
  v.same_polarity = 0;
  CU_ASSERT(!eg_is_duplicate(&v, jt, ct, 1));
  CU_ASSERT(eg_is_conflict(&v, jt, ct, 1));
  /* a cosine without both vectors means nothing */
  v = (eg_similarity){.jaccard = 0.2f, .cosine = 0.99f, .both_vectors = 0, .same_polarity = 1};
  CU_ASSERT(!eg_is_duplicate(&v, jt, ct, 1));
  /* texts without terms never match by Jaccard */
  v = (eg_similarity){.jaccard = 0, .same_polarity = 1};
  CU_ASSERT(!eg_is_duplicate(&v, 0.0f, ct, 0));
  /* thresholds are inclusive */
  v = (eg_similarity){.jaccard = 0.5f, .same_polarity = 1};
  CU_ASSERT(eg_is_duplicate(&v, 0.5f, ct, 1));
  CU_ASSERT(!eg_is_duplicate(&v, 0.51f, ct, 1));
  eg_keyring_free(kr);
}

static void test_dedup_decide_and_rank(void) {
  CU_ASSERT_EQUAL(eg_dedup_decide(EG_POLICY_OFF, 1, 0), EG_DEDUP_NONE);
  CU_ASSERT_EQUAL(eg_dedup_decide(EG_POLICY_MERGE, 0, 1), EG_DEDUP_MERGE);
  /* MARK: higher importance stays ACTIVE; a tie keeps the existing one */
  CU_ASSERT_EQUAL(eg_dedup_decide(EG_POLICY_MARK, 0.9f, 0.5f), EG_DEDUP_OLD_IS_DUP);
  CU_ASSERT_EQUAL(eg_dedup_decide(EG_POLICY_MARK, 0.5f, 0.9f), EG_DEDUP_NEW_IS_DUP);
  CU_ASSERT_EQUAL(eg_dedup_decide(EG_POLICY_MARK, 0.5f, 0.5f), EG_DEDUP_NEW_IS_DUP);
  eg_similarity a = {.jaccard = 0.9f}, b = {.jaccard = 0.86f, .cosine = 0.99f, .both_vectors = 1};
  CU_ASSERT(eg_dedup_better(&b, &a)); /* 0.99 > 0.9 */
  CU_ASSERT(!eg_dedup_better(&a, &b));
  eg_similarity c = {.jaccard = 0.9f};
  CU_ASSERT(!eg_dedup_better(&c, &a)); /* equal: the first seen stays */
}

static int suite_init(void) { return eg_crypto_init() == EG_OK ? 0 : -1; }

void eg_test_register_memory(void) {
  CU_pSuite s = CU_add_suite("memory", suite_init, NULL);
  CU_add_test(s, "tokenizer: basic", test_words_basic);
  CU_add_test(s, "tokenizer: unicode", test_words_unicode);
  CU_add_test(s, "tokenizer: negation", test_words_negation);
  CU_add_test(s, "tokenizer: long words", test_words_long);
  CU_add_test(s, "blind index: tokens", test_blind_tokens);
  CU_add_test(s, "blind index: stable across rotation", test_blind_survives_rotation);
  CU_add_test(s, "blind index: text terms", test_text_terms);
  CU_add_test(s, "blind index: text terms lined up across read keys", test_text_terms_lined);
  CU_add_test(s, "scoring: vector math", test_vector_math);
  CU_add_test(s, "scoring: keyword score", test_keyword_score);
  CU_add_test(s, "scoring: weights normalized", test_weights_normalized);
  CU_add_test(s, "scoring: top-k order and ties", test_topk_order_and_ties);
  CU_add_test(s, "dedup: duplicate, distinct, contradiction", test_dedup_rules);
  CU_add_test(s, "dedup: decision and ranking", test_dedup_decide_and_rank);
}
