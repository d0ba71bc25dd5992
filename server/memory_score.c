/* Memory scoring (memory_score.h). */
#include "server/memory_score.h"

#include <math.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Four independent 4-wide accumulators: no dependency chain through one
 * sum, so the loop runs at load speed without -ffast-math. */
typedef float eg_v4 __attribute__((vector_size(16)));

static inline eg_v4 eg_load4(const void *p) {
  eg_v4 v;
  memcpy(&v, p, sizeof v);
  return v;
}

float eg_vec_dot(const float *q, const uint8_t *v, size_t dim) {
  /* Named accumulators stay in registers (an array of them is spilled). */
  eg_v4 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
  size_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    a0 += eg_load4(q + i) * eg_load4(v + 4 * i);
    a1 += eg_load4(q + i + 4) * eg_load4(v + 4 * (i + 4));
    a2 += eg_load4(q + i + 8) * eg_load4(v + 4 * (i + 8));
    a3 += eg_load4(q + i + 12) * eg_load4(v + 4 * (i + 12));
  }
  eg_v4 s = (a0 + a1) + (a2 + a3);
  float sum = s[0] + s[1] + s[2] + s[3];
  for (; i < dim; i++) {
    float b;
    memcpy(&b, v + 4 * i, sizeof b);
    sum += q[i] * b;
  }
  return sum;
}

int32_t eg_vec_dot_i16_i8(const int16_t *a, const int8_t *c, size_t dim) {
  int32_t sum = 0;
  size_t i = 0;
#if defined(__SSE2__)
  /* Sign-extend 16 int8 to two int16 halves, then pmaddwd: 8 products
   * summed pairwise into 4 int32 lanes per instruction. */
  __m128i acc0 = _mm_setzero_si128(), acc1 = _mm_setzero_si128(), zero = _mm_setzero_si128();
  for (; i + 16 <= dim; i += 16) {
    __m128i v = _mm_loadu_si128((const __m128i *)(c + i));
    __m128i sign = _mm_cmpgt_epi8(zero, v);
    __m128i lo = _mm_unpacklo_epi8(v, sign), hi = _mm_unpackhi_epi8(v, sign);
    acc0 = _mm_add_epi32(acc0, _mm_madd_epi16(lo, _mm_loadu_si128((const __m128i *)(a + i))));
    acc1 = _mm_add_epi32(acc1, _mm_madd_epi16(hi, _mm_loadu_si128((const __m128i *)(a + i + 8))));
  }
  int32_t lanes[4];
  _mm_storeu_si128((__m128i *)lanes, _mm_add_epi32(acc0, acc1));
  sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
#endif
  for (; i < dim; i++) sum += (int32_t)a[i] * c[i];
  return sum;
}

float eg_vec_quantize16(const float *v, size_t dim, int16_t *a) {
  float max = 0;
  for (size_t i = 0; i < dim; i++)
    if (fabsf(v[i]) > max) max = fabsf(v[i]);
  /* dim * 127 * limit must stay below 2^31. */
  double limit = dim ? 2147483647.0 / (127.0 * (double)dim) : 32767;
  if (limit > 32767) limit = 32767;
  limit = floor(limit);
  float scale = max > 0 ? (float)(max / limit) : 1.0f;
  for (size_t i = 0; i < dim; i++) {
    double x = rint((double)v[i] / scale);
    a[i] = (int16_t)(x > limit ? limit : x < -limit ? -limit : x);
  }
  return scale;
}

float eg_vec_norm(const float *v, size_t dim) {
  double s = 0;
  for (size_t i = 0; i < dim; i++) s += (double)v[i] * v[i];
  return (float)sqrt(s);
}

float eg_cosine(float dot, float na, float nb) {
  if (na <= 0 || nb <= 0) return 0;
  float c = dot / (na * nb);
  return c > 1 ? 1 : c < -1 ? -1 : c;
}

float eg_jaccard(size_t inter, size_t na, size_t nb) {
  size_t uni = na + nb - inter;
  return uni ? (float)inter / (float)uni : 0;
}

float eg_recency(double age_s, double half_life_s) {
  if (age_s <= 0) return 1;
  return (float)exp2(-age_s / half_life_s);
}

int eg_weights_normalize(const float w[4], eg_weights *out) {
  double sum = 0;
  for (int i = 0; i < 4; i++) {
    if (!isfinite(w[i]) || w[i] < 0) return -1;
    sum += w[i];
  }
  if (!(sum > 0)) return -1;
  *out = (eg_weights){(float)(w[0] / sum), (float)(w[1] / sum), (float)(w[2] / sum),
                      (float)(w[3] / sum)};
  return 0;
}

float eg_hybrid_score(const eg_weights *w, float keyword, float vector, float importance,
                      float recency) {
  double s = (double)w->keyword * keyword + (double)w->vector * vector +
             (double)w->importance * importance + (double)w->recency * recency;
  return (float)(s > 1 ? 1 : s < 0 ? 0 : s);
}

double eg_idf(size_t df, size_t n) { return log(1.0 + ((double)n + 1.0) / ((double)df + 0.5)); }

float eg_keyword_score(double matched_idf, double query_idf, size_t matched, size_t memory_terms) {
  if (query_idf <= 0 || matched == 0) return 0;
  double cover = matched_idf / query_idf;
  double precision = memory_terms ? (double)matched / (double)memory_terms : 0;
  double s = 0.8 * cover + 0.2 * precision;
  return (float)(s > 1 ? 1 : s);
}

int eg_scored_cmp(const eg_scored *a, const eg_scored *b) {
  if (a->score != b->score) return a->score > b->score ? -1 : 1;
  if (a->importance != b->importance) return a->importance > b->importance ? -1 : 1;
  if (a->create_us != b->create_us) return a->create_us > b->create_us ? -1 : 1;
  size_t n = a->pos_len < b->pos_len ? a->pos_len : b->pos_len;
  int c = memcmp(a->pos, b->pos, n);
  if (c) return c;
  return a->pos_len < b->pos_len ? -1 : a->pos_len > b->pos_len;
}

/* The heap keeps the worst kept item at the root. */
static int eg_heap_worse(const eg_scored *a, const eg_scored *b) { return eg_scored_cmp(a, b) > 0; }

static void eg_heap_swap(eg_scored *a, eg_scored *b) {
  eg_scored t = *a;
  *a = *b;
  *b = t;
}

static void eg_heap_down(eg_topk *h, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, w = i;
    if (l < h->n && eg_heap_worse(&h->items[l], &h->items[w])) w = l;
    if (r < h->n && eg_heap_worse(&h->items[r], &h->items[w])) w = r;
    if (w == i) return;
    eg_heap_swap(&h->items[i], &h->items[w]);
    i = w;
  }
}

void eg_topk_init(eg_topk *h, eg_scored *items, size_t k) {
  h->items = items;
  h->n = 0;
  h->k = k;
}

void eg_topk_offer(eg_topk *h, const eg_scored *c) {
  if (h->k == 0) return;
  if (h->n < h->k) {
    size_t i = h->n++;
    h->items[i] = *c;
    while (i > 0) {
      size_t p = (i - 1) / 2;
      if (!eg_heap_worse(&h->items[i], &h->items[p])) break;
      eg_heap_swap(&h->items[i], &h->items[p]);
      i = p;
    }
    return;
  }
  if (!eg_heap_worse(&h->items[0], c)) return;
  h->items[0] = *c;
  eg_heap_down(h, 0);
}

void eg_topk_sort(eg_topk *h) {
  /* Heap sort: pop the worst to the end until one is left. */
  size_t n = h->n;
  while (h->n > 1) {
    eg_heap_swap(&h->items[0], &h->items[h->n - 1]);
    h->n--;
    eg_heap_down(h, 0);
  }
  h->n = n;
}

/* ---- de-duplication ---------------------------------------------------------- */

static int eg_would_match(const eg_similarity *s, float jt, float ct, int have_terms) {
  return (have_terms && s->jaccard >= jt) || (s->both_vectors && s->cosine >= ct);
}

int eg_is_duplicate(const eg_similarity *s, float jt, float ct, int have_terms) {
  return s->same_polarity && eg_would_match(s, jt, ct, have_terms);
}

int eg_is_conflict(const eg_similarity *s, float jt, float ct, int have_terms) {
  return !s->same_polarity && eg_would_match(s, jt, ct, have_terms);
}

int eg_dedup_better(const eg_similarity *a, const eg_similarity *b) {
  float ma = a->both_vectors && a->cosine > a->jaccard ? a->cosine : a->jaccard;
  float mb = b->both_vectors && b->cosine > b->jaccard ? b->cosine : b->jaccard;
  if (ma != mb) return ma > mb;
  return a->jaccard > b->jaccard;
}

eg_dedup_action eg_dedup_decide(eg_dedup_policy policy, float new_importance,
                                float old_importance) {
  if (policy == EG_POLICY_OFF) return EG_DEDUP_NONE;
  if (policy == EG_POLICY_MERGE) return EG_DEDUP_MERGE;
  /* MARK: the more important stays ACTIVE; on a tie the one already there. */
  return new_importance > old_importance ? EG_DEDUP_OLD_IS_DUP : EG_DEDUP_NEW_IS_DUP;
}
