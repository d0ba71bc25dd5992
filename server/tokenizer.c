/* The tokenizer (tokenizer.h). CONTRACT PLACEHOLDER: version 2 is being
 * built on ICU and libstemmer; until then it reads as version 1. */
#include "server/tokenizer.h"

#include <string.h>

static int eg_alnum_run(const char *p, size_t n, int digits_too) {
  if (n < 1 || n > 8) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = p[i];
    int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!alpha && !(digits_too && c >= '0' && c <= '9')) return 0;
  }
  return 1;
}

int eg_lang_check(const char *lang) {
  size_t len = strlen(lang);
  if (len == 0) return 0;
  if (len > EG_LANG_MAX) return -1;
  const char *p = lang;
  for (int first = 1;; first = 0) {
    const char *dash = memchr(p, '-', (size_t)(lang + len - p));
    size_t n = dash ? (size_t)(dash - p) : (size_t)(lang + len - p);
    if (first ? (n < 2 || !eg_alnum_run(p, n, 0)) : !eg_alnum_run(p, n, 1)) return -1;
    if (!dash) return 0;
    p = dash + 1;
  }
}

int eg_text_words(unsigned version, const char *lang, const char *text, size_t len,
                  eg_word_fn fn, void *arg) {
  (void)lang;
  if (version != EG_TOKENIZER_V1 && version != EG_TOKENIZER_VERSION) return -1;
  return eg_text_words_v1(text, len, fn, arg);
}

void eg_tokenizer_thread_end(void) {}
