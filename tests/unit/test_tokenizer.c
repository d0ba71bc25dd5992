/* Tokenizer version 2 (server/tokenizer.h): Unicode normalisation and word
 * breaks (ICU), stemming (Snowball), per-language stop and negation words,
 * the per-thread state. Version 1 is test_memory.c's. */
#include <CUnit/CUnit.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/tokenizer.h"
#include "server/tokenizer_lang.h"
#include "suites.h"

/* Words of a text joined by single spaces. */
struct words {
  char buf[4096];
  size_t len, count;
};

static void add_word(void *arg, const char *w, size_t n) {
  struct words *ws = arg;
  ws->count++;
  if (ws->len + n + 2 > sizeof ws->buf) return;
  if (ws->len) ws->buf[ws->len++] = ' ';
  memcpy(ws->buf + ws->len, w, n);
  ws->len += n;
  ws->buf[ws->len] = '\0';
}

static int words_lang(const char *lang, const char *text, struct words *ws) {
  memset(ws, 0, sizeof *ws);
  return eg_text_words(EG_TOKENIZER_VERSION, lang, text, strlen(text), add_word, ws);
}

#define ASSERT_WORDS_LANG(lang, text, want, want_neg)                                  \
  do {                                                                                 \
    struct words ws_;                                                                  \
    int neg_ = words_lang(lang, text, &ws_);                                           \
    if (strcmp(ws_.buf, want) != 0 || neg_ != (want_neg))                              \
      fprintf(stderr, "\n[%s] %s -> [%s] %d\n", lang, text, ws_.buf, neg_);            \
    CU_ASSERT_STRING_EQUAL(ws_.buf, want);                                             \
    CU_ASSERT_EQUAL(neg_, want_neg);                                                   \
  } while (0)
#define ASSERT_WORDS(text, want, want_neg) ASSERT_WORDS_LANG("", text, want, want_neg)

/* 1 if every word of query's is among stored's (both under lang): what a
 * keyword search needs to find the stored text. */
static int query_finds(const char *lang, const char *stored, const char *query) {
  struct words s, q;
  if (words_lang(lang, stored, &s) < 0 || words_lang(lang, query, &q) < 0 || q.count == 0)
    return 0;
  char *save = NULL;
  for (char *w = strtok_r(q.buf, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
    int found = 0;
    for (char *p = s.buf; !found && (p = strstr(p, w)); p++)
      found = (p == s.buf || p[-1] == ' ') && (p[strlen(w)] == ' ' || p[strlen(w)] == '\0');
    if (!found) return 0;
  }
  return 1;
}

/* ---- normalisation and word breaks ------------------------------------------- */

static void test_english(void) {
  ASSERT_WORDS("", "", 0);
  ASSERT_WORDS("  ,.;!  ", "", 0);
  ASSERT_WORDS("Alice likes green tea", "alic like green tea", 0);
  ASSERT_WORDS("alice,likes;GREEN-tea!!", "alic like green tea", 0);
  ASSERT_WORDS("The user is a Doctor", "doctor", 0);
  /* Snowball and the irregular plurals */
  ASSERT_WORDS("running runs ran", "run run ran", 0);
  ASSERT_WORDS("children child men women people mice feet", "child child man woman person mous foot", 0);
  /* ICU's word rules: inner periods, digits with separators, underscores */
  ASSERT_WORDS("pi is 3.14, e.g. 1,000 foo_bar x-y", "pi 3.14 e.g 1,000 foo_bar x y", 0);
  /* an inner apostrophe is dropped; a final one separates */
  ASSERT_WORDS("the cats' toys", "cat toy", 0);
  ASSERT_WORDS("O'Brien", "obrien", 0);
}

static void test_negation(void) {
  ASSERT_WORDS("likes tea", "like tea", 0);
  ASSERT_WORDS("dislikes tea", "like tea", 1);
  ASSERT_WORDS("does not like tea", "like tea", 1);
  ASSERT_WORDS("doesn't like tea", "like tea", 1);
  ASSERT_WORDS("doesn\xE2\x80\x99t like tea", "like tea", 1); /* a curly apostrophe */
  ASSERT_WORDS("never liked tea", "like tea", 1);
  ASSERT_WORDS("hates tea", "like tea", 1);
  ASSERT_WORDS("loves tea", "like tea", 0);
  ASSERT_WORDS("enjoying tea", "like tea", 0);
  ASSERT_WORDS("does not dislike tea", "like tea", 0); /* two flips cancel */
  ASSERT_WORDS("NOT like tea", "like tea", 1);          /* compared case-folded */
  /* German flips per word; Russian and Spanish negate once however often */
  ASSERT_WORDS_LANG("de", "Ich trinke nicht gern Tee", "trink gern tee", 1);
  ASSERT_WORDS_LANG("de", "Ich mag keinen Tee", "mag tee", 1);
  ASSERT_WORDS_LANG("ru", "я никогда не ем мясо", "ем мяс", 1);
  ASSERT_WORDS_LANG("ru", "я ем мясо", "ем мяс", 0);
  ASSERT_WORDS_LANG("es", "no como nunca carne", "com carn", 1);
  /* French: "ne ... pas" is one negation */
  ASSERT_WORDS_LANG("fr", "je ne bois pas de thé", "bois thé", 1);
}

static void test_unicode_matches(void) {
  static const struct {
    const char *label, *lang, *stored, *query;
  } cases[] = {
      {"cyrillic capitals", "", "ЧАЙ с лимоном", "чай"},
      {"chinese in a sentence", "", "我喜欢喝绿茶", "绿茶"},
      {"NFC stored, NFD searched", "", "un caf\xC3\xA9 noir", "cafe\xCC\x81"},
      {"NFD stored, NFC searched", "", "cafe\xCC\x81 au lait", "caf\xC3\xA9"},
      {"greek capitals and final sigma", "", "ΟΔΟΣ Αθηνάς", "οδος"},
      {"sharp s", "", "Straße 5", "strasse"},
      {"sharp s, German stemmer", "de", "die Straße", "STRASSE"},
      {"full-width letters", "", "ＴＥＡ time", "tea"},
      {"stemmed verb", "", "she was running", "run"},
      {"irregular plural", "", "three children", "child"},
      {"arabic", "", "أحب الشاي الأخضر", "الشاي"},
      {"hindi", "", "मुझे हरी चाय पसंद है", "चाय"},
      {"japanese kana and kanji", "", "私は東京に住んでいます", "東京"},
      {"japanese katakana", "", "コーヒーが好き", "コーヒー"},
      {"emoji", "", "tea time 🍵 with friends", "🍵"},
      {"emoji with a skin tone", "", "great job 👍🏽", "👍🏽"},
      {"mixed scripts", "", "Meeting 会议 on Пятница with café", "пятница"},
      {"russian stemmer", "ru", "Она любит зелёный чай", "любить"},
      {"german stemmer", "de", "Die Kinder spielen im Garten", "Kind spiele"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (!query_finds(cases[i].lang, cases[i].stored, cases[i].query))
      fprintf(stderr, "\nnot found: %s\n", cases[i].label);
    CU_ASSERT_TRUE(query_finds(cases[i].lang, cases[i].stored, cases[i].query));
  }
  /* and a different word is not found */
  CU_ASSERT_FALSE(query_finds("", "我喜欢喝绿茶", "红茶"));
  CU_ASSERT_FALSE(query_finds("", "ЧАЙ с лимоном", "кофе"));
  CU_ASSERT_FALSE(query_finds("", "tea time 🍵", "☕"));
  /* exact words of a few */
  ASSERT_WORDS("我喜欢喝绿茶", "我 喜欢 喝 绿茶", 0);
  ASSERT_WORDS("ΟΔΟΣ οδος", "οδοσ οδοσ", 0);
  ASSERT_WORDS("Straße strasse", "strass strass", 0);
  ASSERT_WORDS("ＴＥＡ", "tea", 0);
}

static void test_emoji(void) {
  /* kept, modifiers with their base; punctuation and symbols are not words */
  ASSERT_WORDS("I love 🍵!", "like 🍵", 0);
  ASSERT_WORDS("👍🏽 -> ok", "👍🏽 ok", 0);
  ASSERT_WORDS("+ = * # ~ ...", "", 0);
}

static void test_invalid_utf8(void) {
  /* an invalid sequence separates words and is never a word */
  ASSERT_WORDS("ok\x80" "bad \xC3", "ok bad", 0);
  ASSERT_WORDS("\xFF\xFE\xC0\xAF", "", 0);
  /* a NUL inside the text is a separator, not an end */
  struct words ws;
  memset(&ws, 0, sizeof ws);
  CU_ASSERT_EQUAL(eg_text_words(EG_TOKENIZER_VERSION, "", "tea\0milk", 8, add_word, &ws), 0);
  CU_ASSERT_STRING_EQUAL(ws.buf, "tea milk");
}

static void test_long_words(void) {
  /* cut at EG_WORD_MAX bytes, at a character boundary: 40 x "ж" (2 bytes)
   * keeps 32; 30 x Georgian "ა" (3 bytes) keeps 21 (63 bytes) */
  char text[512] = "", want[512] = "";
  for (int i = 0; i < 40; i++) strcat(text, "ж");
  for (int i = 0; i < 32; i++) strcat(want, "ж");
  strcat(text, " ");
  strcat(want, " ");
  for (int i = 0; i < 30; i++) strcat(text, "ა");
  for (int i = 0; i < 21; i++) strcat(want, "ა");
  strcat(text, " end");
  strcat(want, " end");
  ASSERT_WORDS_LANG("zz", text, want, 0);
  /* ASCII: the first EG_WORD_MAX bytes */
  memset(text, 'x', 200);
  strcpy(text + 200, " end");
  struct words ws;
  words_lang("zz", text, &ws);
  CU_ASSERT_EQUAL(strlen(ws.buf), EG_WORD_MAX + 4);
  /* a text longer than the buffers a thread keeps (64 Ki units): every word */
  size_t big = 7 * 43000;
  char *t = malloc(big + 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(t);
  for (size_t i = 0; i < big; i += 7) memcpy(t + i, "tea ok ", 7);
  t[big] = '\0';
  memset(&ws, 0, sizeof ws);
  CU_ASSERT_EQUAL(eg_text_words(EG_TOKENIZER_VERSION, "", t, big, add_word, &ws), 0);
  CU_ASSERT_EQUAL(ws.count, 2 * 43000);
  free(t);
  ASSERT_WORDS("after the big one", "after big one", 0);
}

/* ---- languages ------------------------------------------------------------- */

static void test_languages(void) {
  /* tags: case-insensitive, region ignored, ISO 639-2 aliases */
  ASSERT_WORDS_LANG("EN", "the running children", "run child", 0);
  ASSERT_WORDS_LANG("en-GB", "the running children", "run child", 0);
  ASSERT_WORDS_LANG("eng", "the running children", "run child", 0);
  ASSERT_WORDS_LANG("deu", "die spielenden Kinder", "spielend kind", 0);
  /* no Snowball stemmer: no stemming, stop words or negation */
  ASSERT_WORDS_LANG("zh", "the running children not", "the running children not", 0);
  ASSERT_WORDS_LANG("xx-Latn", "the running children", "the running children", 0);
  /* a Snowball algorithm name is no language tag */
  ASSERT_WORDS_LANG("english", "the running children", "the running children", 0);
  /* a stemmer without lists: Swedish stems, keeps its function words */
  ASSERT_WORDS_LANG("sv", "och flickorna", "och flick", 0);
  /* NULL is English */
  struct words ws;
  memset(&ws, 0, sizeof ws);
  CU_ASSERT_EQUAL(eg_text_words(EG_TOKENIZER_VERSION, NULL, "the cats", 8, add_word, &ws), 0);
  CU_ASSERT_STRING_EQUAL(ws.buf, "cat");
}

/* Every listed stop word is dropped and every negation word negates, alone
 * in a text of its language: the lists are written as the tokenizer sees
 * words (normalised, one word each). */
static void test_lists_normalised(void) {
  for (size_t l = 0; l < eg_lang_count; l++) {
    const eg_lang_words *lw = &eg_lang_table[l];
    CU_ASSERT_PTR_EQUAL(eg_lang_words_find(lw->codes[0]), lw);
    for (size_t i = 0; i < lw->n_stop; i++) {
      struct words ws;
      int neg = words_lang(lw->codes[0], lw->stop[i], &ws);
      if (ws.count) fprintf(stderr, "\n[%s] stop word %s -> [%s]\n", lw->codes[0], lw->stop[i], ws.buf);
      CU_ASSERT_EQUAL(ws.count, 0);
      CU_ASSERT_EQUAL(neg, 0);
    }
    for (size_t i = 0; i < lw->n_neg; i++) {
      struct words ws;
      int neg = words_lang(lw->codes[0], lw->neg[i], &ws);
      if (ws.count || neg != 1) fprintf(stderr, "\n[%s] negation %s -> [%s]\n", lw->codes[0], lw->neg[i], ws.buf);
      CU_ASSERT_EQUAL(ws.count, 0);
      CU_ASSERT_EQUAL(neg, 1);
    }
  }
  CU_ASSERT_PTR_NULL(eg_lang_words_find("sv"));
  CU_ASSERT_PTR_NULL(eg_lang_words_find(""));
}

/* More languages than a thread keeps stemmers for: the evicted ones are
 * made again, with the same words. */
static void test_stemmer_cache(void) {
  static const char *langs[] = {"en", "de", "fr", "es", "it", "pt", "nl", "ru", "sv", "fi", "da", "xx"};
  const size_t n = sizeof langs / sizeof langs[0];
  struct words first[sizeof langs / sizeof langs[0]];
  const char *text = "the runners were running quickly through the gardens";
  for (size_t i = 0; i < n; i++) CU_ASSERT(words_lang(langs[i], text, &first[i]) >= 0);
  for (int round = 0; round < 3; round++)
    for (size_t i = n; i-- > 0;) {
      struct words again;
      CU_ASSERT(words_lang(langs[i], text, &again) >= 0);
      CU_ASSERT_STRING_EQUAL(again.buf, first[i].buf);
    }
}

static void test_versions(void) {
  struct words ws;
  memset(&ws, 0, sizeof ws);
  /* version 1 is still read as it was: its light stem, no Snowball */
  CU_ASSERT_EQUAL(eg_text_words(EG_TOKENIZER_V1, "", "Alice likes running", 19, add_word, &ws), 0);
  CU_ASSERT_STRING_EQUAL(ws.buf, "alice like running");
  CU_ASSERT_EQUAL(eg_text_words(0, "", "tea", 3, NULL, NULL), -1);
  CU_ASSERT_EQUAL(eg_text_words(EG_TOKENIZER_VERSION + 1, "", "tea", 3, NULL, NULL), -1);
  /* fn may be NULL: only the polarity */
  CU_ASSERT_EQUAL(eg_text_words(EG_TOKENIZER_VERSION, "", "hates tea", 9, NULL, NULL), 1);
}

/* ---- threads --------------------------------------------------------------- */

static const char *const thread_texts[][2] = {
    {"", "Alice doesn't like the running children"},
    {"ru", "Она никогда не пьёт ЧАЙ"},
    {"", "我喜欢喝绿茶 and ＴＥＡ 👍🏽"},
    {"de", "Die Straße ist nicht lang"},
};
#define THREAD_TEXTS (sizeof thread_texts / sizeof thread_texts[0])

struct thread_run {
  struct words out[THREAD_TEXTS];
  int neg[THREAD_TEXTS];
};

static void *thread_main(void *arg) {
  struct thread_run *r = arg;
  for (int round = 0; round < 50; round++)
    for (size_t i = 0; i < THREAD_TEXTS; i++)
      r->neg[i] = words_lang(thread_texts[i][0], thread_texts[i][1], &r->out[i]);
  return NULL; /* the thread's state is freed by the key's destructor */
}

static void test_threads(void) {
  struct thread_run want, runs[4];
  for (size_t i = 0; i < THREAD_TEXTS; i++)
    want.neg[i] = words_lang(thread_texts[i][0], thread_texts[i][1], &want.out[i]);
  pthread_t th[4];
  for (int t = 0; t < 4; t++) CU_ASSERT_EQUAL_FATAL(pthread_create(&th[t], NULL, thread_main, &runs[t]), 0);
  for (int t = 0; t < 4; t++) pthread_join(th[t], NULL);
  for (int t = 0; t < 4; t++)
    for (size_t i = 0; i < THREAD_TEXTS; i++) {
      CU_ASSERT_STRING_EQUAL(runs[t].out[i].buf, want.out[i].buf);
      CU_ASSERT_EQUAL(runs[t].neg[i], want.neg[i]);
    }
  /* state freed and made again on this thread */
  eg_tokenizer_thread_end();
  eg_tokenizer_thread_end();
  ASSERT_WORDS("green tea", "green tea", 0);
}

static int suite_cleanup(void) {
  eg_tokenizer_thread_end();
  return 0;
}

void eg_test_register_tokenizer(void) {
  CU_pSuite s = CU_add_suite("tokenizer", NULL, suite_cleanup);
  CU_add_test(s, "english", test_english);
  CU_add_test(s, "negation", test_negation);
  CU_add_test(s, "unicode_matches", test_unicode_matches);
  CU_add_test(s, "emoji", test_emoji);
  CU_add_test(s, "invalid_utf8", test_invalid_utf8);
  CU_add_test(s, "long_words", test_long_words);
  CU_add_test(s, "languages", test_languages);
  CU_add_test(s, "lists_normalised", test_lists_normalised);
  CU_add_test(s, "stemmer_cache", test_stemmer_cache);
  CU_add_test(s, "versions", test_versions);
  CU_add_test(s, "threads", test_threads);
}
