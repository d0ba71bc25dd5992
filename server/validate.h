/*
 * Request validation helpers shared by the services. Every failure writes
 * "<field path>: <problem>" into err and returns EG_EINVAL, so the client's
 * INVALID_ARGUMENT message names the field.
 */
#ifndef EG_SERVER_VALIDATE_H
#define EG_SERVER_VALIDATE_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "common/err.h"

#define EG_ID_MAX 128

/* 1 if s[0..len) is well-formed UTF-8 (no overlongs, no surrogates,
 * nothing above U+10FFFF), else 0. */
int eg_utf8_valid(const char *s, size_t len);

/* Walks every string field of msg, nested messages, repeated fields and
 * map entries included, and checks it is valid UTF-8 (protobuf-c does not).
 * The path names the first bad field: "messages[2].content",
 * "session.metadata[0].value". */
eg_err eg_validate_utf8(const ProtobufCMessage *msg, char *err, size_t errlen);

/* Checks an id against [A-Za-z0-9._:-]{1,128}. With required == 0 an empty
 * value is fine. field names it in the message. */
eg_err eg_validate_id(const char *field, const char *value, int required, char *err,
                      size_t errlen);

/* Formats "<field>: <message>" into err and returns EG_EINVAL, so a check
 * reads: if (bad) return eg_invalid(err, errlen, "page_size", "must not be negative"); */
eg_err eg_invalid(char *err, size_t errlen, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
