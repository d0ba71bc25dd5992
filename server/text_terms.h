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

#endif
