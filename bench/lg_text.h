/*
 * eg_loadgen's text: what the keyword index of messages sees in a real
 * conversation, reproducibly. Words are drawn by Zipf's law (s = 1) from a
 * vocabulary of LG_VOCAB words: the LG_FUNCTION_WORDS most frequent are
 * English function words ("the", "of", ...), which the tokenizer drops as
 * stop words, as in English text; the rest are distinct pseudo-words
 * ('q' and consonant-vowel syllables: never a stop word). So a message's indexed terms, and how many messages share
 * a term, look like those of English prose, not like one sentence
 * repeated. Deterministic: the same salt gives the same text.
 * Thread safety: any thread (the table is built once).
 */
#ifndef EG_BENCH_LG_TEXT_H
#define EG_BENCH_LG_TEXT_H

#include <stddef.h>
#include <stdint.h>

#define LG_VOCAB 50000
#define LG_FUNCTION_WORDS 100
/* Longest word lg_word writes (NUL included). */
#define LG_WORD_MAX 16

/* xorshift64: the next of *s (not 0), which moves on. */
uint64_t lg_xorshift(uint64_t *s);

/* Exactly n bytes of words and spaces into buf, NUL-terminated (buf holds
 * n + 1), different for each salt. */
void lg_text(char *buf, size_t n, uint64_t salt);

/* A query of 1..3 words (space-separated) drawn like the text's, function
 * words left out, into buf (at least 3 * LG_WORD_MAX bytes); *seed moves
 * on. */
void lg_query(char *buf, size_t cap, uint64_t *seed);

#endif
