/*
 * Text to blind-index terms: the tokenizer's words (server/tokenizer.h),
 * each as its keyed hash under the tenant's blind subkey. What the keyword
 * indexes of memories and messages store, and what their queries look up.
 */
#ifndef EG_SERVER_TEXT_TERMS_H
#define EG_SERVER_TEXT_TERMS_H

#include <stddef.h>
#include <stdint.h>

#include "common/cmp.h"
#include "common/err.h"
#include "crypto/crypto.h"
#include "server/blind_key.h"

/* Most distinct terms indexed per memory: the rest of a long text is not
 * searchable by keyword (it is still stored and returned). */
#define EG_TEXT_TERMS_MAX 1024

/* The blind tokens of text's words under `version`'s rules for language
 * lang, sorted and unique, into out[0..*n) (at most cap: the first
 * distinct words are kept). tf (may be NULL) gets each term's count,
 * parallel to out, capped at 255; *words (may be NULL) the words kept in
 * all, repeats counted (past cap too); *negated (may be NULL) the
 * polarity. Returns EG_OK, or EG_ENOMEM when the tokenizer failed. */
eg_err eg_text_terms(const eg_blind_ctx *ctx, unsigned version, const char *lang,
                     const char *text, size_t len, uint64_t *out, uint8_t *tf, size_t cap,
                     size_t *n, uint32_t *words, int *negated);

/* A query's terms under every read key of keys (two while a blind-index
 * rotation runs, server/blind_key.h), lined up: out[k][i] is the i-th
 * distinct word's token under keys->ctx[k], for every k < keys->n, words
 * in the order they first appear in text (not sorted), the first cap
 * distinct ones, their number into *n (the same for every k). Which words
 * are distinct is decided by their tokens under ctx[0] (two words whose
 * 64-bit keyed tokens collide there are one word). So a word's postings
 * under every key can be summed: its document frequency is the same
 * mid-rotation as under one key. Cost: one tokenizer pass; a word's token
 * under a second key is made only the first time the word is seen.
 * Returns EG_OK, or EG_ENOMEM when the tokenizer failed. */
eg_err eg_text_terms_lined(const eg_blind_read *keys, unsigned version, const char *lang,
                           const char *text, size_t len, uint64_t *const *out, size_t cap,
                           size_t *n);

#endif
