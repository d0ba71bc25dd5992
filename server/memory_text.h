/*
 * Memory text to blind-index terms.
 *
 * The tokenizer (deterministic; the same rules for stored text and queries):
 *   - Words are runs of ASCII letters and digits and of non-ASCII UTF-8
 *     characters (other scripts count as word characters). Everything else
 *     separates words, including the Latin-1 punctuation block (U+0080 to
 *     U+00BF but the letters ª µ º, and × ÷), General Punctuation (U+2000 to
 *     U+206F) and CJK punctuation (U+3000 to U+303F). An apostrophe (' or
 *     U+2018/U+2019) inside a word joins it: "don't" is "dont".
 *   - ASCII and Latin-1 capitals are lower-cased; other scripts are compared
 *     as written. A word longer than 64 bytes keeps its first 64.
 *   - Stop words are dropped: a an the and or but of to in on at by for with
 *     from as is are was were be been am do does did has have had i me my we
 *     our you your he his she her it its they their this that these those so
 *     very really just also too user.
 *   - A light English stem: "ies" -> "y" (words over 4 letters); a final "s"
 *     is dropped from words over 3 letters unless they end in ss, us or is.
 *   - Negation. Markers (not no never nor none nobody nothing neither nowhere
 *     without cannot cant dont doesnt didnt isnt arent wasnt werent wont
 *     wouldnt shouldnt couldnt hasnt havent hadnt aint) are dropped from the
 *     words and each flips the text's polarity; the verbs dislike, hate,
 *     detest and loathe (any of -s -d -ed -ing) become "like" and flip it;
 *     love, adore and enjoy become "like". So "likes tea", "dislikes tea" and
 *     "does not like tea" all have the words {like, tea}; the first is
 *     positive, the other two negated. De-duplication never matches texts of
 *     opposite polarity: it reports them as possible contradictions
 *     (CreateMemoryResponse.conflicts_with). Polarity is one bit per text
 *     (an odd number of flips negates), so "not unlike" stays crude.
 */
#ifndef EG_SERVER_MEMORY_TEXT_H
#define EG_SERVER_MEMORY_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"

#define EG_WORD_MAX 64
/* Most distinct terms indexed per memory: the rest of a long text is not
 * searchable by keyword (it is still stored and returned). */
#define EG_TEXT_TERMS_MAX 1024

/* Called per kept word, normalised (w[0..n), not NUL-terminated). */
typedef void (*eg_word_fn)(void *arg, const char *w, size_t n);

/* Splits text[0..len) into normalised words and calls fn (may be NULL)
 * for each one kept. Returns 1 if the text is negated, else 0. */
int eg_text_words(const char *text, size_t len, eg_word_fn fn, void *arg);

/* qsort's comparator for uint64_t, ascending. */
int eg_u64_cmp(const void *a, const void *b);

/* The blind tokens of text's words, sorted and unique, into out (at most
 * cap, the first distinct words kept); returns how many. *negated (may be
 * NULL) gets the polarity. */
size_t eg_text_terms(const eg_blind_ctx *ctx, const char *text, size_t len, uint64_t *out,
                     size_t cap, int *negated);

#endif
