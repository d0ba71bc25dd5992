/*
 * JSON metadata and values to blind-index tokens (checkpoint metadata,
 * store values): one keyed hash per top-level key/value pair, the bytes
 * `key 0x00 json-text-of-value`, where the text is json-c's plain
 * rendering of the parsed value (so "1" and 1 differ and spacing does
 * not matter). A filter's pairs hash the same way; a record matches when
 * it holds each of the filter's tokens.
 */
#ifndef EG_SERVER_JSON_TERMS_H
#define EG_SERVER_JSON_TERMS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "crypto/crypto.h"

/* Levels of nesting a JSON text may have (json-c's parser recurses per
 * level; the bound keeps a hostile text from taking the stack). */
#define EG_JSON_DEPTH_MAX 64

/* The blind-index tokens of a JSON object's top-level key/value pairs, sorted
 * and unique, into out (at most max). EG_EINVAL with "<field>: <problem>" in msg if json is
 * not a JSON object (empty string: no pairs) by RFC 8259's grammar (no NaN, Infinity,
 * comments, single quotes or trailing commas), holds a number JSON cannot write back
 * (1e999) or an integer past 64 bits, a lone UTF-16 surrogate escape, a key (at any
 * depth) holding \u0000, is deeper than 64 levels, or has more than max pairs (what
 * json-c would clamp, replace or cut, so that two different texts hash alike). EG_ENOMEM. Thread safety: b is only read. */
eg_err eg_json_terms(const eg_blind_ctx *b, const char *field, const char *json, size_t len,
                     uint64_t *out, size_t max, size_t *n, char *msg, size_t msglen);

#endif
