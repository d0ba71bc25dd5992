/* Text to blind-index terms (text_terms.h). */
#include "server/text_terms.h"

#include <stdlib.h>

#include "server/tokenizer.h"

/* One distinct term and its count. */
struct eg_term_count {
  uint64_t h;
  uint32_t count;
};

/* Distinct terms with their counts, and an open-addressing table of their
 * indexes + 1 (0: empty), twice as many slots as terms, so finding a word's
 * term stays O(1) whatever the text's length (a 64 KB message has ~10,000
 * words). */
struct eg_terms_acc {
  /* ctx[0]'s token decides whether a word is new; lined (NULL: none) gets
   * a new word's token under each of ctx[0..n_ctx) (eg_text_terms_lined). */
  const eg_blind_ctx *ctx[EG_BLIND_READ_MAX];
  unsigned n_ctx;
  uint64_t *const *lined;
  struct eg_term_count *terms;
  uint32_t *slots;
  size_t n, cap, mask;
  uint32_t words;
};

static void eg_terms_add(void *arg, const char *w, size_t n) {
  struct eg_terms_acc *a = arg;
  uint64_t h = eg_blind_word(a->ctx[0], w, n);
  if (a->words < UINT32_MAX) a->words++;
  /* Tokens are keyed hashes: their low bits are already uniform. */
  for (size_t i = (size_t)h & a->mask;; i = (i + 1) & a->mask) {
    uint32_t at = a->slots[i];
    if (at == 0) {
      /* Past the cap a new word is counted in `words` only: the first
       * distinct words are the ones kept. */
      if (a->n == a->cap) return;
      if (a->lined) {
        a->lined[0][a->n] = h;
        for (unsigned k = 1; k < a->n_ctx; k++) a->lined[k][a->n] = eg_blind_word(a->ctx[k], w, n);
      }
      a->terms[a->n] = (struct eg_term_count){h, 1};
      a->slots[i] = (uint32_t)++a->n;
      return;
    }
    if (a->terms[at - 1].h == h) {
      a->terms[at - 1].count++;
      return;
    }
  }
}

static int eg_term_count_cmp(const void *a, const void *b) {
  return eg_u64_cmp(&((const struct eg_term_count *)a)->h, &((const struct eg_term_count *)b)->h);
}

/* Runs the tokenizer over text into a (its ctx, n_ctx and lined set): on
 * EG_OK a->terms (the caller's to free) holds the first cap distinct words
 * in the order they first appear; returns the polarity through *negated. */
static eg_err eg_terms_collect(struct eg_terms_acc *a, unsigned version, const char *lang,
                               const char *text, size_t len, size_t cap, int *negated) {
  size_t slots = 2;
  a->cap = cap;
  if (cap > UINT32_MAX / 2) return EG_ENOMEM;
  while (slots < 2 * cap) slots *= 2;
  a->mask = slots - 1;
  a->terms = malloc((cap ? cap : 1) * sizeof *a->terms);
  a->slots = calloc(slots, sizeof *a->slots);
  int neg = a->terms && a->slots ? eg_text_words(version, lang, text, len, eg_terms_add, a) : -1;
  free(a->slots);
  if (neg < 0) {
    free(a->terms);
    return EG_ENOMEM;
  }
  *negated = neg;
  return EG_OK;
}

eg_err eg_text_terms(const eg_blind_ctx *ctx, unsigned version, const char *lang,
                     const char *text, size_t len, uint64_t *out, uint8_t *tf, size_t cap,
                     size_t *n, uint32_t *words, int *negated) {
  struct eg_terms_acc a = {.ctx = {ctx}, .n_ctx = 1};
  int neg;
  *n = 0;
  eg_err e = eg_terms_collect(&a, version, lang, text, len, cap, &neg);
  if (e != EG_OK) return e;
  qsort(a.terms, a.n, sizeof *a.terms, eg_term_count_cmp);
  for (size_t i = 0; i < a.n; i++) {
    out[i] = a.terms[i].h;
    if (tf) tf[i] = (uint8_t)(a.terms[i].count > 255 ? 255 : a.terms[i].count);
  }
  free(a.terms);
  *n = a.n;
  if (words) *words = a.words;
  if (negated) *negated = neg;
  return EG_OK;
}

eg_err eg_text_terms_lined(const eg_blind_read *keys, unsigned version, const char *lang,
                           const char *text, size_t len, uint64_t *const *out, size_t cap,
                           size_t *n) {
  struct eg_terms_acc a = {.n_ctx = keys->n, .lined = out};
  for (unsigned k = 0; k < keys->n; k++) a.ctx[k] = keys->ctx[k];
  int neg;
  *n = 0;
  eg_err e = eg_terms_collect(&a, version, lang, text, len, cap, &neg);
  if (e != EG_OK) return e;
  free(a.terms);
  *n = a.n;
  return EG_OK;
}
