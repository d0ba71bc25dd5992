/* Tokenizer version 1, the ASCII/Latin-1 rules of Engram up to 0.14
 * (tokenizer.h): kept to read stores indexed by it. Never edited: a change
 * would break the match with what it indexed. */
#include "server/tokenizer.h"

#include <string.h>

static const char *const eg_stop_words[] = {
    "a",    "an",   "the",  "and",   "or",    "but",  "of",   "to",    "in",   "on",
    "at",   "by",   "for",  "with",  "from",  "as",   "is",   "are",   "was",  "were",
    "be",   "been", "am",   "do",    "does",  "did",  "has",  "have",  "had",  "i",
    "me",   "my",   "we",   "our",   "you",   "your", "he",   "his",   "she",  "her",
    "it",   "its",  "they", "their", "this",  "that", "these", "those", "so",  "very",
    "really", "just", "also", "too", "user", "users"};

static const char *const eg_negations[] = {
    "not",    "no",     "never",   "nor",    "none",    "nobody",   "nothing",  "neither",
    "nowhere", "without", "cannot", "cant",  "dont",    "doesnt",   "didnt",    "isnt",
    "arent",  "wasnt",  "werent",  "wont",   "wouldnt", "shouldnt", "couldnt",  "hasnt",
    "havent", "hadnt",  "aint"};

/* Verbs that mean "like" (flip = 0) or "not like" (flip = 1). */
static const struct {
  const char *stem;
  int flip;
} eg_like_verbs[] = {{"like", 0},  {"love", 0},    {"adore", 0},  {"enjoy", 0},
                     {"dislike", 1}, {"hate", 1}, {"detest", 1}, {"loathe", 1}};

static int eg_word_in(const char *w, size_t n, const char *const *list, size_t count) {
  for (size_t i = 0; i < count; i++)
    if (strlen(list[i]) == n && memcmp(list[i], w, n) == 0) return 1;
  return 0;
}

/* 1 if w is stem followed by "", "s", "d", "ed" or "ing" (or stem minus a
 * final 'e' + "ing": "loving"). */
static int eg_is_form_of(const char *w, size_t n, const char *stem) {
  size_t s = strlen(stem);
  static const char *const ends[] = {"", "s", "d", "ed", "ing"};
  for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
    size_t e = strlen(ends[i]);
    if (n == s + e && memcmp(w, stem, s) == 0 && memcmp(w + s, ends[i], e) == 0) return 1;
  }
  return stem[s - 1] == 'e' && n == s + 2 && memcmp(w, stem, s - 1) == 0 &&
         memcmp(w + s - 1, "ing", 3) == 0;
}

/* -1 if w is not a like-verb, else its flip. */
static int eg_like_verb(const char *w, size_t n) {
  for (size_t i = 0; i < sizeof eg_like_verbs / sizeof eg_like_verbs[0]; i++)
    if (eg_is_form_of(w, n, eg_like_verbs[i].stem)) return eg_like_verbs[i].flip;
  return -1;
}

/* The light stem, in place; returns the new length. */
static size_t eg_stem(char *w, size_t n) {
  if (n > 4 && memcmp(w + n - 3, "ies", 3) == 0) {
    w[n - 3] = 'y';
    return n - 2;
  }
  if (n > 3 && w[n - 1] == 's' && w[n - 2] != 's' && w[n - 2] != 'u' && w[n - 2] != 'i')
    return n - 1;
  return n;
}

/* Byte length of the UTF-8 sequence led by c (1 for a stray byte). */
static size_t eg_utf8_len(unsigned char c) {
  return c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

enum { EG_SEP, EG_WORD, EG_JOIN };

/* Class of the character at p (n bytes of it, k bytes left). */
static int eg_char_class(const unsigned char *p, size_t n) {
  if (n == 1) {
    if ((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= 'A' && p[0] <= 'Z') || (p[0] >= '0' && p[0] <= '9'))
      return EG_WORD;
    return p[0] == '\'' ? EG_JOIN : EG_SEP;
  }
  if (n == 2 && p[0] == 0xC2)
    return p[1] == 0xAA || p[1] == 0xB5 || p[1] == 0xBA ? EG_WORD : EG_SEP;
  if (n == 2 && p[0] == 0xC3 && (p[1] == 0x97 || p[1] == 0xB7)) return EG_SEP;
  if (n == 3 && p[0] == 0xE2 && p[1] == 0x80 && (p[2] == 0x98 || p[2] == 0x99)) return EG_JOIN;
  if (n == 3 && p[0] == 0xE2 && (p[1] == 0x80 || p[1] == 0x81)) return EG_SEP;
  if (n == 3 && p[0] == 0xE3 && p[1] == 0x80) return EG_SEP;
  return EG_WORD;
}

/* Appends the character at p (n bytes), lower-cased, to w (cap bytes). */
static void eg_word_push(char *w, size_t *len, const unsigned char *p, size_t n) {
  if (*len + n > EG_WORD_MAX) return;
  memcpy(w + *len, p, n);
  if (n == 1 && p[0] >= 'A' && p[0] <= 'Z') w[*len] = (char)(p[0] + 32);
  /* Latin-1 capitals U+00C0..U+00DE (but U+00D7) are 0xC3 0x80..0x9E. */
  if (n == 2 && p[0] == 0xC3 && p[1] >= 0x80 && p[1] <= 0x9E && p[1] != 0x97)
    w[*len + 1] = (char)(p[1] + 0x20);
  *len += n;
}

/* Classifies a finished word: kept (fn called), dropped, or a flip. */
static void eg_word_end(char *w, size_t n, eg_word_fn fn, void *arg, int *flips) {
  if (n == 0) return;
  if (eg_word_in(w, n, eg_negations, sizeof eg_negations / sizeof eg_negations[0])) {
    ++*flips;
    return;
  }
  if (eg_word_in(w, n, eg_stop_words, sizeof eg_stop_words / sizeof eg_stop_words[0])) return;
  int like = eg_like_verb(w, n);
  if (like >= 0) {
    *flips += like;
    memcpy(w, "like", 4);
    n = 4;
  } else {
    n = eg_stem(w, n);
  }
  if (fn) fn(arg, w, n);
}

int eg_text_words_v1(const char *text, size_t len, eg_word_fn fn, void *arg) {
  const unsigned char *p = (const unsigned char *)text;
  char w[EG_WORD_MAX];
  size_t wl = 0;
  int flips = 0;
  for (size_t i = 0; i < len;) {
    size_t n = eg_utf8_len(p[i]);
    if (n > len - i) n = len - i;
    int cls = eg_char_class(p + i, n);
    if (cls == EG_JOIN && wl > 0 && i + n < len) {
      /* Joins only between word characters: "don't" but not "cats' ". */
      size_t m = eg_utf8_len(p[i + n]);
      if (m > len - i - n) m = len - i - n;
      if (eg_char_class(p + i + n, m) == EG_WORD) {
        i += n;
        continue;
      }
    }
    if (cls == EG_WORD) {
      eg_word_push(w, &wl, p + i, n);
    } else {
      eg_word_end(w, wl, fn, arg, &flips);
      wl = 0;
    }
    i += n;
  }
  eg_word_end(w, wl, fn, arg, &flips);
  return flips & 1;
}
