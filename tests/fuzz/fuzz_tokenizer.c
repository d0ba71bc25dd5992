/*
 * Target: the tokenizer (server/tokenizer.c: ICU normalisation and word
 * breaks, Snowball stemmers, the word lists) and the blind terms of a text
 * (server/text_terms.c). Input: one byte choosing the language, then the
 * text as a client sends it (any bytes: the server checks UTF-8 first, but
 * the tokenizer must not rely on it).
 *
 * Checked: version 2 (on any input) and version 1 (on valid UTF-8
 * without NUL, all the server hands it) answer 0 or 1 (negated), never
 * fail; every word is 1..EG_WORD_MAX bytes, without NUL, and (version 2)
 * valid UTF-8; the same input
 * gives the same words twice (search and index must meet); the terms are
 * sorted, unique, within the cap, their counts at least 1 and adding up to
 * at most the words kept.
 */
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "fuzz.h"
#include "fuzz_token.h"
#include "server/text_terms.h"
#include "server/tokenizer.h"
#include "server/validate.h"

static const char *const fz_langs[] = {"",   "en", "de", "fr", "it", "es", "pt", "nl",
                                       "ru", "zh", "ja", "ar", "hi", "sv", "xx", "en-GB"};

/* Kept for the process's life (the blind context derives from it). */
static eg_keyring *fz_keys;
static eg_blind_ctx fz_ctx;

/* The words of one run, NUL-separated, and how many. */
typedef struct {
  char buf[1 << 16];
  size_t len, n;
  int truncated;
  int utf8; /* check each word is valid UTF-8 (version 2; version 1 keeps
             * bytes as they came, and the server hands it valid UTF-8) */
} fz_words;

static void fz_add(void *arg, const char *w, size_t n) {
  fz_words *ws = arg;
  FZ_CHECK(n >= 1 && n <= EG_WORD_MAX, "a word of 1..EG_WORD_MAX bytes");
  FZ_CHECK(!ws->utf8 || eg_utf8_valid(w, n), "a word of valid UTF-8");
  FZ_CHECK(memchr(w, '\0', n) == NULL, "no NUL in a word");
  ws->n++;
  if (ws->len + n + 1 > sizeof ws->buf) {
    ws->truncated = 1;
    return;
  }
  memcpy(ws->buf + ws->len, w, n);
  ws->len += n;
  ws->buf[ws->len++] = '\0';
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char err[256];
  (void)argc;
  (void)argv;
  FZ_CHECK(eg_crypto_init() == EG_OK, "eg_crypto_init");
  const char *path = fz_write_file("keyring", (const uint8_t *)fz_token_keyring,
                                   strlen(fz_token_keyring));
  FZ_CHECK(eg_keyring_load(path, &fz_keys, err, sizeof err) == EG_OK, err);
  FZ_CHECK(eg_blind_begin(fz_keys, "acme", &fz_ctx) == EG_OK, "eg_blind_begin");
  /* The main thread's tokenizer state has no thread exit to free it: free
   * it before LeakSanitizer's check (registered earlier, so run later). */
  atexit(eg_tokenizer_thread_end);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const char *lang = fz_langs[data[0] % (sizeof fz_langs / sizeof fz_langs[0])];
  const char *text = (const char *)data + 1;
  size_t len = size - 1;
  static fz_words a, b;
  /* Version 1 only ever reads what the server let through: valid UTF-8
   * without NUL (server/validate.h); version 2 must take anything. */
  int valid = eg_utf8_valid(text, len) && memchr(text, '\0', len) == NULL;
  for (unsigned v = valid ? EG_TOKENIZER_V1 : EG_TOKENIZER_VERSION; v <= EG_TOKENIZER_VERSION; v++) {
    a.len = a.n = b.len = b.n = 0;
    a.truncated = b.truncated = 0;
    a.utf8 = b.utf8 = v == EG_TOKENIZER_VERSION;
    int na = eg_text_words(v, lang, text, len, fz_add, &a);
    int nb = eg_text_words(v, lang, text, len, fz_add, &b);
    FZ_CHECK(na == 0 || na == 1, "eg_text_words answers 0 or 1");
    FZ_CHECK(na == nb && a.n == b.n && a.len == b.len && !memcmp(a.buf, b.buf, a.len),
             "the same words twice");
  }
  enum { CAP = 64 };
  uint64_t terms[CAP];
  uint8_t tf[CAP];
  size_t n;
  uint32_t words;
  int neg;
  FZ_CHECK(eg_text_terms(&fz_ctx, EG_TOKENIZER_VERSION, lang, text, len, terms, tf, CAP, &n, &words,
                         &neg) == EG_OK,
           "eg_text_terms");
  FZ_CHECK(n <= CAP && n <= words, "terms within the cap and the words");
  uint64_t sum = 0;
  for (size_t i = 0; i < n; i++) {
    FZ_CHECK(tf[i] >= 1, "a term counted at least once");
    FZ_CHECK(i == 0 || terms[i - 1] < terms[i], "terms sorted and unique");
    sum += tf[i];
  }
  FZ_CHECK(sum <= words, "counts add up to at most the words");
  /* A query's lined-up terms (eg_text_terms_lined, here under one key):
   * the same distinct words, in the order they first appear. */
  uint64_t lined[CAP], *out[1] = {lined};
  eg_blind_read one = {.n = 1, .ctx = {&fz_ctx}};
  size_t nl;
  FZ_CHECK(eg_text_terms_lined(&one, EG_TOKENIZER_VERSION, lang, text, len, out, CAP, &nl) == EG_OK,
           "eg_text_terms_lined");
  FZ_CHECK(nl == n, "as many lined-up terms as terms");
  qsort(lined, nl, sizeof *lined, eg_u64_cmp);
  FZ_CHECK(nl == 0 || !memcmp(lined, terms, nl * sizeof *lined), "the same terms, lined up");
  return 0;
}
