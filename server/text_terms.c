/* Text to blind-index terms (text_terms.h). */
#include "server/text_terms.h"

#include <stdlib.h>

#include "server/tokenizer.h"

/* One distinct term and its count. */
struct eg_term_count {
  uint64_t h;
  uint32_t count;
};

struct eg_terms_acc {
  const eg_blind_ctx *ctx;
  struct eg_term_count *terms;
  size_t n, cap;
  uint32_t words;
};

static void eg_terms_add(void *arg, const char *w, size_t n) {
  struct eg_terms_acc *a = arg;
  uint64_t h = eg_blind_word(a->ctx, w, n);
  if (a->words < UINT32_MAX) a->words++;
  /* Linear dedup keeps "the first distinct words" when over cap; texts are
   * bounded by the content limits. */
  for (size_t i = 0; i < a->n; i++)
    if (a->terms[i].h == h) {
      a->terms[i].count++;
      return;
    }
  if (a->n < a->cap) a->terms[a->n++] = (struct eg_term_count){h, 1};
}

int eg_u64_cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int eg_term_count_cmp(const void *a, const void *b) {
  return eg_u64_cmp(&((const struct eg_term_count *)a)->h, &((const struct eg_term_count *)b)->h);
}

eg_err eg_text_terms(const eg_blind_ctx *ctx, unsigned version, const char *lang,
                     const char *text, size_t len, uint64_t *out, uint8_t *tf, size_t cap,
                     size_t *n, uint32_t *words, int *negated) {
  struct eg_terms_acc a = {.ctx = ctx, .cap = cap};
  *n = 0;
  if (cap && !(a.terms = malloc(cap * sizeof *a.terms))) return EG_ENOMEM;
  int neg = eg_text_words(version, lang, text, len, eg_terms_add, &a);
  if (neg < 0) {
    free(a.terms);
    return EG_ENOMEM;
  }
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
