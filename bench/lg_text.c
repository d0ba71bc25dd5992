/* eg_loadgen's text (lg_text.h). */
#include "lg_text.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* The 100 most frequent English words, most frequent first. */
static const char *const lg_function[LG_FUNCTION_WORDS] = {
    "the",   "of",    "and",   "to",    "a",     "in",    "is",    "it",    "you",   "that",
    "he",    "was",   "for",   "on",    "are",   "with",  "as",    "i",     "his",   "they",
    "be",    "at",    "one",   "have",  "this",  "from",  "or",    "had",   "by",    "not",
    "but",   "what",  "some",  "we",    "can",   "out",   "other", "were",  "all",   "there",
    "when",  "up",    "use",   "your",  "how",   "said",  "an",    "each",  "she",   "which",
    "do",    "their", "time",  "if",    "will",  "way",   "about", "many",  "then",  "them",
    "would", "write", "like",  "so",    "these", "her",   "long",  "make",  "thing", "see",
    "him",   "two",   "has",   "look",  "more",  "day",   "could", "go",    "come",  "did",
    "my",    "sound", "no",    "most",  "number", "who",  "over",  "know",  "water", "than",
    "call",  "first", "people", "may",  "down",  "side",  "been",  "now",   "find",  "any"};

static double lg_cdf[LG_VOCAB];
static pthread_once_t lg_once = PTHREAD_ONCE_INIT;

static void lg_build(void) {
  double sum = 0;
  for (long r = 0; r < LG_VOCAB; r++) sum += 1.0 / (double)(r + 1);
  double acc = 0;
  for (long r = 0; r < LG_VOCAB; r++) {
    acc += 1.0 / (double)(r + 1) / sum;
    lg_cdf[r] = acc;
  }
  lg_cdf[LG_VOCAB - 1] = 1.0;
}

uint64_t lg_xorshift(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* A rank drawn by Zipf's law. */
static long lg_rank(uint64_t *s) {
  double u = (double)(lg_xorshift(s) >> 11) * 0x1.0p-53;
  long lo = 0, hi = LG_VOCAB - 1;
  while (lo < hi) {
    long mid = (lo + hi) / 2;
    if (lg_cdf[mid] < u) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/* The word of rank r into w (LG_WORD_MAX bytes). Pseudo-words are 'q'
 * and then rank - 100 + 90 written in base 90, one consonant-vowel
 * syllable per digit: at least two syllables, and distinct ranks give
 * distinct words. The 'q' keeps them clear of real words ("have", "none"
 * are syllable pairs too), so no pseudo-word is a stop or negation word. */
static size_t lg_word(char *w, long r) {
  static const char cons[] = "bcdfghjklmnprstvwz", vow[] = "aeiou";
  if (r < LG_FUNCTION_WORDS) return (size_t)snprintf(w, LG_WORD_MAX, "%s", lg_function[r]);
  char digits[8];
  int nd = 0;
  for (long v = r - LG_FUNCTION_WORDS + 90; v > 0 && nd < 7; v /= 90) digits[nd++] = (char)(v % 90);
  size_t n = 0;
  w[n++] = 'q';
  while (nd > 0) {
    int d = digits[--nd];
    w[n++] = cons[d / 5];
    w[n++] = vow[d % 5];
  }
  w[n] = '\0';
  return n;
}

void lg_text(char *buf, size_t n, uint64_t salt) {
  pthread_once(&lg_once, lg_build);
  uint64_t s = salt * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull;
  if (!s) s = 1;
  size_t at = 0;
  char w[LG_WORD_MAX];
  while (at < n) {
    size_t k = lg_word(w, lg_rank(&s));
    if (at && at < n) buf[at++] = ' ';
    for (size_t i = 0; i < k && at < n; i++) buf[at++] = w[i];
  }
  buf[n] = '\0';
}

void lg_query(char *buf, size_t cap, uint64_t *seed) {
  pthread_once(&lg_once, lg_build);
  int words = 1 + (int)(lg_xorshift(seed) % 3);
  size_t at = 0;
  char w[LG_WORD_MAX];
  buf[0] = '\0';
  for (int i = 0; i < words; i++) {
    long r;
    while ((r = lg_rank(seed)) < LG_FUNCTION_WORDS) {}
    size_t k = lg_word(w, r);
    if (at + k + 2 > cap) break;
    if (at) buf[at++] = ' ';
    memcpy(buf + at, w, k);
    at += k;
    buf[at] = '\0';
  }
}
