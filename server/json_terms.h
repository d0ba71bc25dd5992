/*
 * The blind index of JSON objects: one keyed hash per top-level key/value
 * pair, so that equality filters on JSON values (checkpoint metadata,
 * store item values) compare hashes and never need the sealed text.
 */
#ifndef EG_SERVER_JSON_TERMS_H
#define EG_SERVER_JSON_TERMS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "crypto/crypto.h"

/* Levels of nesting a JSON value may have (json-c's parser recurses). */
#define EG_JSON_DEPTH_MAX 64

/* The blind-index tokens of a JSON object's top-level key/value pairs, sorted and
 * unique, into out (at most max). EG_EINVAL with "<field>: <problem>" in msg if json is
 * not a JSON object (empty string: no pairs), deeper than 64 levels, or has more than
 * max pairs. A pair is hashed as the bytes key \0 value, the value as json-c prints it
 * plain (JSON_C_TO_STRING_PLAIN) after parsing: "1" and 1 differ, spacing does not.
 * EG_ENOMEM. Thread safety: any (ctx is only read). */
eg_err eg_json_terms(const eg_blind_ctx *b, const char *field, const char *json, size_t len,
                     uint64_t *out, size_t max, size_t *n, char *msg, size_t msglen);

#endif
