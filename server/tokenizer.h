/*
 * Text to index words: one tokenizer for every keyword index (memories,
 * messages) and for the queries against them, so stored text and query
 * meet on the same words.
 *
 * Versions. Each index entry set records the version it was made with
 * (MemoryRecord.index_version, MessageRecord.index_version); a query is
 * read by the version of the entries it is matched against, and engramd
 * reindexes older entries in the background (server/reindex.h).
 *   1  The ASCII/Latin-1 rules of Engram up to 0.14 (tokenizer_v1.c): runs
 *      of ASCII letters and digits and of non-ASCII characters, ASCII and
 *      Latin-1 capitals lower-cased, English stop words, a light English
 *      stem. Kept only to read stores indexed by it until their reindex
 *      is done; nothing new is indexed with it.
 *   2  (EG_TOKENIZER_VERSION) Unicode, from ICU and Snowball (libstemmer):
 *      text is normalised NFKC_Casefold (full-width letters, ligatures,
 *      "Straße" = "strasse", Greek final sigma, NFD = NFC); words are ICU
 *      word-break segments (CJK and Thai by dictionary) that hold a letter,
 *      digit or ideograph, and emoji; an apostrophe inside a word is
 *      dropped ("don't" -> "dont"); a word longer than EG_WORD_MAX bytes
 *      keeps its first EG_WORD_MAX (at a character boundary). Then, per
 *      the language: stop words dropped, negation words dropped and
 *      counted (see below), English irregular plurals mapped to their
 *      singular ("children" -> "child"), and the Snowball stemmer.
 *
 * Language: a BCP 47 tag; its primary subtag (any case; an ISO 639 code of
 * 2 or 3 letters, else no language) picks the stemmer, the stop words and
 * the negation words. "" means English. A language Snowball has no stemmer
 * for gets no stemming, no stop words and no negation: its words are
 * matched as normalised. Stop and negation lists exist for English,
 * German, French, Spanish, Italian, Portuguese, Dutch and Russian; another
 * Snowball language is stemmed only. Each thread keeps the stemmers of at
 * most 8 languages (the least recently used is dropped).
 *
 * Negation: negation words (English "not", "never", "don't", ...; per
 * language where lists exist) are dropped from the words. In English,
 * German and Dutch each flips the text's polarity (two cancel); in French,
 * Spanish, Italian, Portuguese and Russian (negative concord: "никогда не",
 * "ne ... jamais") any number of them negate once. English "dislike",
 * "hate", "detest", "loathe" (any form) become "like" and flip it, "love",
 * "adore", "enjoy" become "like". So "likes tea", "dislikes tea" and "does
 * not like tea" have the same words; the first is positive, the other two
 * negated.
 * De-duplication never merges texts of opposite polarity.
 */
#ifndef EG_SERVER_TOKENIZER_H
#define EG_SERVER_TOKENIZER_H

#include <stddef.h>

#define EG_TOKENIZER_V1 1
#define EG_TOKENIZER_VERSION 2
/* Longest word kept, in bytes. */
#define EG_WORD_MAX 64
/* Longest language tag accepted. */
#define EG_LANG_MAX 35

/* Called per kept word, normalised (w[0..n), not NUL-terminated, at most
 * EG_WORD_MAX bytes). */
typedef void (*eg_word_fn)(void *arg, const char *w, size_t n);

/* 0 if lang is "" or a well-formed tag: a primary subtag of 2..8 ASCII
 * letters, then subtags of 1..8 ASCII letters or digits after '-', at most
 * EG_LANG_MAX bytes in all; else -1. */
int eg_lang_check(const char *lang);

/* Splits text[0..len) (UTF-8; an invalid sequence separates words) into
 * the words of `version`'s rules for language lang (NULL or "": English)
 * and calls fn (may be NULL) per kept word, in text order. Returns 1 if
 * the text is negated, 0 if not, -1 if it could not (out of memory, an
 * ICU failure, an unknown version).
 * Thread safety: any thread. Each thread keeps its own ICU break iterator
 * and stemmers, made on first use and freed when the thread exits. */
int eg_text_words(unsigned version, const char *lang, const char *text, size_t len,
                  eg_word_fn fn, void *arg);

/* The calling thread's tokenizer state is freed now (a thread that exits
 * frees it anyway; for the main thread before exit, so leak checkers see
 * nothing). */
void eg_tokenizer_thread_end(void);

/* ---- tokenizer_v1.c ---- */
/* Version 1's eg_text_words (lang is ignored: it was English-only). */
int eg_text_words_v1(const char *text, size_t len, eg_word_fn fn, void *arg);

#endif
