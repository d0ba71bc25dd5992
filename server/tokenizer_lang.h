/*
 * The per-language word lists of tokenizer version 2 (tokenizer.h): stop
 * words, negation words, and for English the "like" verbs and irregular
 * plurals. Private to server/tokenizer.c (and its unit test).
 *
 * Every word is in its NFKC_Casefold form ("dass", not "daß"), since the
 * tokenizer compares words after that normalisation and before stemming.
 */
#ifndef EG_SERVER_TOKENIZER_LANG_H
#define EG_SERVER_TOKENIZER_LANG_H

#include <stddef.h>

/* One language's lists. */
typedef struct eg_lang_words {
  /* The ISO 639-1 code and its ISO 639-2 aliases, e.g. "de", "deu", "ger". */
  const char *codes[3];
  const char *const *stop;
  size_t n_stop;
  const char *const *neg;
  size_t n_neg;
  /* Negative concord ("никогда не", "no ... nada"): any number of negation
   * words negate once. Else each flips the polarity (two cancel). */
  int concord;
  /* English: the "like" verbs and the irregular plurals apply. */
  int english;
} eg_lang_words;

/* Every language with lists, and how many. */
extern const eg_lang_words eg_lang_table[];
extern const size_t eg_lang_count;

/* The lists of the language whose lower-case primary subtag is code (2 or 3
 * letters), or NULL: no stop words, no negation. */
const eg_lang_words *eg_lang_words_find(const char *code);

/* What a listed word is. */
enum { EG_LW_NEG = 1, EG_LW_STOP, EG_LW_LIKE, EG_LW_PLURAL };
typedef struct eg_lang_entry {
  const char *w;
  size_t n;
  int kind;
  /* EG_LW_LIKE: 1 for a verb meaning "not like" ("dislike", "hate",
   * "detest", "loathe", any form), 0 for "like", "love", "adore", "enjoy". */
  int flip;
  /* EG_LW_PLURAL: the singular ("children" -> "child"). */
  const char *to;
} eg_lang_entry;

/* The entry of w[0..n) in lw's lists (lw from eg_lang_words_find), or NULL
 * for any other word. */
const eg_lang_entry *eg_lang_lookup(const eg_lang_words *lw, const char *w, size_t n);

#endif
