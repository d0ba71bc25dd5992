/*
 * Request validation: UTF-8 of every string field, ids, error messages
 * that name the field.
 */
#include "server/validate.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define EG_PATH_MAX 256

eg_err eg_invalid(char *err, size_t errlen, const char *field, const char *fmt, ...) {
  int n = snprintf(err, errlen, "%s: ", field);
  if (n >= 0 && (size_t)n < errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
  }
  return EG_EINVAL;
}

/* Length of the well-formed UTF-8 sequence at p (end bounds it), or 0.
 * The ranges of the second byte are those of Unicode table 3-7: they rule
 * out overlongs (E0 80..9F, F0 80..8F), surrogates (ED A0..BF) and code
 * points above U+10FFFF (F4 90.., F5..FF). */
static size_t utf8_seq_len(const unsigned char *p, const unsigned char *end) {
  unsigned lo = 0x80, hi = 0xBF;
  size_t n;
  if (p[0] < 0x80) return 1;
  if (p[0] >= 0xC2 && p[0] <= 0xDF) n = 2;
  else if (p[0] == 0xE0) n = 3, lo = 0xA0;
  else if (p[0] == 0xED) n = 3, hi = 0x9F;
  else if (p[0] >= 0xE1 && p[0] <= 0xEF) n = 3;
  else if (p[0] == 0xF0) n = 4, lo = 0x90;
  else if (p[0] >= 0xF1 && p[0] <= 0xF3) n = 4;
  else if (p[0] == 0xF4) n = 4, hi = 0x8F;
  else return 0; /* continuation byte, C0/C1 overlong lead, or F5..FF */
  if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi) return 0;
  for (size_t i = 2; i < n; i++)
    if ((p[i] & 0xC0) != 0x80) return 0;
  return n;
}

int eg_utf8_valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  while (p < end) {
    size_t n = utf8_seq_len(p, end);
    if (n == 0) return 0;
    p += n;
  }
  return 1;
}

/* Appends to the path at path[len] ("a" + ".b" or "[3]") and returns the
 * new length, clamped when the path no longer fits. */
static size_t path_push(char *path, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static size_t path_push(char *path, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(path + len, EG_PATH_MAX - len, fmt, ap);
  va_end(ap);
  return n < 0 ? len : len + (size_t)n < EG_PATH_MAX ? len + (size_t)n : EG_PATH_MAX - 1;
}

static eg_err check_message(const ProtobufCMessage *msg, char *path, size_t len, char *err,
                            size_t errlen);

/* Checks one value of field f (a string or a submessage; NULL when unset),
 * whose path is path[0..len). */
static eg_err check_value(const ProtobufCFieldDescriptor *f, const void *v, char *path,
                          size_t len, char *err, size_t errlen) {
  if (!v) return EG_OK;
  if (f->type == PROTOBUF_C_TYPE_MESSAGE) return check_message(v, path, len, err, errlen);
  /* protobuf-c hands strings over NUL-terminated, so an embedded NUL byte
   * ends the string early and what follows is not checked here. That is
   * fine: the server never sees those bytes either, as every use of the
   * field stops at the same NUL. */
  if (!eg_utf8_valid(v, strlen(v))) return eg_invalid(err, errlen, path, "not valid UTF-8");
  return EG_OK;
}

/* Checks field f of msg, all its values when it is repeated (proto3 maps
 * are repeated entry messages with `key` and `value` fields). */
static eg_err check_field(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                          char *path, size_t len, char *err, size_t errlen) {
  const char *base = (const char *)msg;
  /* Members of a oneof share their storage: only the chosen one is valid. */
  if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
      *(const uint32_t *)(base + f->quantifier_offset) != f->id)
    return EG_OK;
  len = path_push(path, len, len ? ".%s" : "%s", f->name);
  if (f->label != PROTOBUF_C_LABEL_REPEATED)
    return check_value(f, *(void *const *)(base + f->offset), path, len, err, errlen);
  size_t n = *(const size_t *)(base + f->quantifier_offset);
  void *const *values = *(void *const *const *)(base + f->offset);
  for (size_t i = 0; i < n; i++) {
    eg_err rc = check_value(f, values[i], path, path_push(path, len, "[%zu]", i), err, errlen);
    if (rc) return rc;
  }
  return EG_OK;
}

/* Recursion depth follows the nesting of the schema; the engram protos have
 * no recursive messages, so it is bounded. */
static eg_err check_message(const ProtobufCMessage *msg, char *path, size_t len, char *err,
                            size_t errlen) {
  const ProtobufCMessageDescriptor *d = msg->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
    eg_err rc = check_field(msg, f, path, len, err, errlen);
    if (rc) return rc;
  }
  return EG_OK;
}

eg_err eg_validate_utf8(const ProtobufCMessage *msg, char *err, size_t errlen) {
  char path[EG_PATH_MAX] = "";
  return check_message(msg, path, 0, err, errlen);
}

eg_err eg_validate_id(const char *field, const char *value, int required, char *err,
                      size_t errlen) {
  static const char allowed[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-";
  size_t len = strlen(value);
  if (len == 0) return required ? eg_invalid(err, errlen, field, "required") : EG_OK;
  if (len > EG_ID_MAX) return eg_invalid(err, errlen, field, "longer than %d bytes", EG_ID_MAX);
  size_t ok = strspn(value, allowed);
  if (ok != len)
    return eg_invalid(err, errlen, field,
                      "character at offset %zu is not one of A-Z a-z 0-9 . _ : -", ok);
  return EG_OK;
}
