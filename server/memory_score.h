/*
 * Memory scoring: vector math, the hybrid search score, the top-k heap and
 * the de-duplication decision. Pure functions (no storage, no crypto), so
 * the unit tests pin them down exactly.
 */
#ifndef EG_SERVER_MEMORY_SCORE_H
#define EG_SERVER_MEMORY_SCORE_H

#include <stddef.h>
#include <stdint.h>

/* Defaults (documented in memory.proto and the README). */
#define EG_DEDUP_JACCARD_DEFAULT 0.85f
#define EG_DEDUP_COSINE_DEFAULT 0.95f
#define EG_W_KEYWORD_DEFAULT 0.4f
#define EG_W_VECTOR_DEFAULT 0.4f
#define EG_W_IMPORTANCE_DEFAULT 0.1f
#define EG_W_RECENCY_DEFAULT 0.1f
#define EG_RECENCY_HALF_LIFE_DEFAULT_S (30.0 * 86400.0)
#define EG_TOP_K_DEFAULT 10
#define EG_TOP_K_MAX 100

/* Dot product of q (aligned floats) with v (dim float32 LE, any alignment). */
float eg_vec_dot(const float *q, const uint8_t *v, size_t dim);
/* Dot product of an int16 vector a with an int8 vector c, exact in int32
 * as long as dim * 127 * max |a[i]| < 2^31 (see eg_vec_quantize16). */
int32_t eg_vec_dot_i16_i8(const int16_t *a, const int8_t *c, size_t dim);
/* Quantizes v to int16 for eg_vec_dot_i16_i8 against int8 vectors of the
 * same dim: v[i] ~ scale * a[i], each within scale / 2, with max |a[i]|
 * small enough for an exact int32 dot product. Returns the scale. */
float eg_vec_quantize16(const float *v, size_t dim, int16_t *a);
/* Euclidean norm of v. */
float eg_vec_norm(const float *v, size_t dim);
/* dot / (na * nb), clamped to [-1, 1]; 0 when a norm is 0. */
float eg_cosine(float dot, float na, float nb);
/* |A and B| / |A or B| from the intersection and the two set sizes; 0 for
 * two empty sets. */
float eg_jaccard(size_t inter, size_t na, size_t nb);
/* 0.5 ^ (age / half_life); 1 for age <= 0. */
float eg_recency(double age_s, double half_life_s);

typedef struct {
  float keyword, vector, importance, recency;
} eg_weights;

/* w[0..4) (keyword, vector, importance, recency), each finite and >= 0, not
 * all 0, scaled to sum to 1 into *out, so that every score eg_hybrid_score
 * gives stays in [0, 1] and min_score compares like with like: weights that
 * are each finite may still sum to inf in float (FLT_MAX four times), so
 * the sum is taken in double. Returns 0, or -1 (out untouched) if a weight
 * is negative or not finite, or all are 0. */
int eg_weights_normalize(const float w[4], eg_weights *out);
/* The weighted sum of the four component scores (each in [0, 1]) under
 * normalized weights w, clamped to [0, 1] against float rounding. */
float eg_hybrid_score(const eg_weights *w, float keyword, float vector, float importance,
                      float recency);

/* Keyword score: 0.8 * (idf of the query words the memory has / idf of all
 * query words) + 0.2 * (matched words / the memory's words). */
float eg_keyword_score(double matched_idf, double query_idf, size_t matched, size_t memory_terms);
/* idf of a term found in df of n memories: ln(1 + (n + 1) / (df + 0.5)). */
double eg_idf(size_t df, size_t n);

/* One scored candidate. pos identifies it (the storage position). */
typedef struct {
  float score, keyword, vector, importance, recency;
  float err; /* how far score may be from the exact one (0: exact) */
  int64_t create_us;
  uint8_t pos[136];
  size_t pos_len;
} eg_scored;

/* Result order: score desc, importance desc, create time desc (newest
 * first), then position (memory id) ascending. Returns <0 if a ranks before b. */
int eg_scored_cmp(const eg_scored *a, const eg_scored *b);

/* A bounded heap keeping the k best candidates by eg_scored_cmp. */
typedef struct {
  eg_scored *items;
  size_t n, k;
} eg_topk;

/* items must hold k entries. */
void eg_topk_init(eg_topk *h, eg_scored *items, size_t k);
/* Offers c; kept if among the k best so far. */
void eg_topk_offer(eg_topk *h, const eg_scored *c);
/* Sorts the kept items best first (the heap is unusable after). */
void eg_topk_sort(eg_topk *h);

/* ---- de-duplication -------------------------------------------------------- */

typedef enum {
  EG_DEDUP_NONE,       /* no match: store ACTIVE */
  EG_DEDUP_NEW_IS_DUP, /* store the new one as DUPLICATE of the match */
  EG_DEDUP_OLD_IS_DUP, /* store the new one ACTIVE; the match becomes its DUPLICATE */
  EG_DEDUP_MERGE,      /* merge the new one into the match */
} eg_dedup_action;

typedef enum { EG_POLICY_OFF = 1, EG_POLICY_MARK = 2, EG_POLICY_MERGE = 3 } eg_dedup_policy;

/* How a stored ACTIVE memory of the same type compares with the new one. */
typedef struct {
  float jaccard;      /* over blind-index terms */
  float cosine;       /* when both have embeddings */
  int both_vectors;   /* cosine is meaningful */
  int same_polarity;  /* neither or both negated */
} eg_similarity;

/* 1 if the pair is a duplicate: same polarity and (jaccard >= jt, or both
 * have embeddings and cosine >= ct). Texts with no terms never match by
 * Jaccard. */
int eg_is_duplicate(const eg_similarity *s, float jt, float ct, int have_terms);
/* 1 if the pair looks like the same fact with opposite polarity (a
 * possible contradiction): it would be a duplicate but for polarity. */
int eg_is_conflict(const eg_similarity *s, float jt, float ct, int have_terms);
/* Ranks two duplicate candidates: 1 if a is the better match (higher
 * max(jaccard, cosine), then higher jaccard). Ties keep the first seen. */
int eg_dedup_better(const eg_similarity *a, const eg_similarity *b);
/* What to do with a new memory that duplicates a stored one. */
eg_dedup_action eg_dedup_decide(eg_dedup_policy policy, float new_importance,
                                float old_importance);

#endif
