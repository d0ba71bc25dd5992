/*
 * proto3 JSON output driven by descriptors: lowerCamelCase names, enums by
 * name, 64-bit integers as strings, Timestamps in RFC 3339, bytes in
 * base64, maps as objects. Strings are escaped (control characters, DEL
 * and U+2028/U+2029 too, so one object is always one line), and any byte
 * that is not valid UTF-8 becomes U+FFFD, so the output always parses.
 */
#include <ctype.h>
#include <string.h>

#include "cli.h"

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  size_t len;
  unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second byte */
  if (s[0] >= 0xc2 && s[0] <= 0xdf)
    len = 2;
  else if (s[0] >= 0xe0 && s[0] <= 0xef) {
    len = 3;
    if (s[0] == 0xe0) lo = 0xa0;     /* no overlong forms */
    if (s[0] == 0xed) hi = 0x9f;     /* no surrogates */
  } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
    len = 4;
    if (s[0] == 0xf0) lo = 0x90;
    if (s[0] == 0xf4) hi = 0x8f;     /* nothing past U+10FFFF */
  } else
    return 0;
  if (n < len || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if ((s[i] & 0xc0) != 0x80) return 0;
  return len;
}

/* The code point of the valid UTF-8 sequence s of len bytes (0 if len is 0). */
static uint32_t codepoint(const unsigned char *s, size_t len) {
  if (len <= 1) return len ? s[0] : 0;
  uint32_t cp = s[0] & (0x7f >> len);
  for (size_t i = 1; i < len; i++) cp = cp << 6 | (s[i] & 0x3f);
  return cp;
}

void cli_json_string(FILE *out, const char *str) {
  const unsigned char *s = (const unsigned char *)(str ? str : "");
  size_t n = strlen((const char *)s);
  fputc('"', out);
  for (size_t i = 0; i < n;) {
    unsigned char c = s[i];
    if (c == '"' || c == '\\') {
      fputc('\\', out);
      fputc(c, out);
    } else if (c == '\n') {
      fputs("\\n", out);
    } else if (c == '\t') {
      fputs("\\t", out);
    } else if (c == '\r') {
      fputs("\\r", out);
    } else if (c < 0x20) {
      fprintf(out, "\\u%04x", c);
    } else if (c >= 0x7f) {
      size_t len = c == 0x7f ? 1 : utf8_len(s + i, n - i);
      uint32_t cp = codepoint(s + i, len);
      if (!len)
        fputs("\\ufffd", out);
      else if (cp <= 0x9f || cp == 0x2028 || cp == 0x2029)
        fprintf(out, "\\u%04x", (unsigned)cp);
      else
        fwrite(s + i, 1, len, out);
      i += len ? len : 1;
      continue;
    } else {
      fputc(c, out);
    }
    i++;
  }
  fputc('"', out);
}

static void json_base64(FILE *out, const ProtobufCBinaryData *b) {
  static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const uint8_t *p = b->data;
  fputc('"', out);
  for (size_t i = 0; i < b->len; i += 3) {
    size_t left = b->len - i;
    uint32_t w = (uint32_t)p[i] << 16 | (left > 1 ? (uint32_t)p[i + 1] << 8 : 0) |
                 (left > 2 ? p[i + 2] : 0);
    fputc(tbl[w >> 18 & 63], out);
    fputc(tbl[w >> 12 & 63], out);
    fputc(left > 1 ? tbl[w >> 6 & 63] : '=', out);
    fputc(left > 2 ? tbl[w & 63] : '=', out);
  }
  fputc('"', out);
}

/* The JSON name of a field: session_id -> "sessionId". */
static void json_name(FILE *out, const char *name) {
  fputc('"', out);
  for (int up = 0; *name; name++) {
    if (*name == '_') {
      up = 1;
      continue;
    }
    fputc(up ? toupper((unsigned char)*name) : *name, out);
    up = 0;
  }
  fputs("\":", out);
}

static void json_message(FILE *out, const ProtobufCMessage *m);

/* A number or bool; 64-bit integers and non-finite floats are quoted. */
static void json_scalar(FILE *out, const ProtobufCFieldDescriptor *f, const void *v) {
  char buf[64];
  pb_scalar_text(f, v, buf, sizeof buf);
  int is_float = f->type == PROTOBUF_C_TYPE_FLOAT || f->type == PROTOBUF_C_TYPE_DOUBLE;
  int quote = f->type == PROTOBUF_C_TYPE_INT64 || f->type == PROTOBUF_C_TYPE_SINT64 ||
              f->type == PROTOBUF_C_TYPE_SFIXED64 || f->type == PROTOBUF_C_TYPE_UINT64 ||
              f->type == PROTOBUF_C_TYPE_FIXED64 ||
              (is_float && !isdigit((unsigned char)buf[strlen(buf) - 1]));
  fprintf(out, quote ? "\"%s\"" : "%s", buf);
}

static void json_value(FILE *out, const ProtobufCFieldDescriptor *f, const void *v) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_STRING:
    cli_json_string(out, *(const char *const *)v);
    break;
  case PROTOBUF_C_TYPE_BYTES:
    json_base64(out, v);
    break;
  case PROTOBUF_C_TYPE_ENUM: {
    const char *name = pb_enum_name(f->descriptor, *(const int *)v);
    if (name)
      cli_json_string(out, name);
    else
      fprintf(out, "%d", *(const int *)v);
    break;
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)v;
    if (pb_is_timestamp(f)) {
      char ts[48];
      pb_timestamp_text((const Google__Protobuf__Timestamp *)sub, ts);
      cli_json_string(out, ts);
    } else {
      json_message(out, sub);
    }
    break;
  }
  default:
    json_scalar(out, f, v);
    break;
  }
}

/* A map field as an object; keys are always JSON strings. */
static void json_map(FILE *out, const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  const ProtobufCMessageDescriptor *d = f->descriptor;
  const ProtobufCFieldDescriptor *kf = &d->fields[0], *vf = &d->fields[1];
  fputc('{', out);
  for (size_t i = 0, n = pb_count(m, f); i < n; i++) {
    const ProtobufCMessage *e = *(const ProtobufCMessage *const *)pb_value(m, f, i);
    if (i) fputc(',', out);
    if (kf->type == PROTOBUF_C_TYPE_STRING) {
      cli_json_string(out, *(const char *const *)pb_value(e, kf, 0));
    } else {
      char key[64];
      pb_scalar_text(kf, pb_value(e, kf, 0), key, sizeof key);
      cli_json_string(out, key);
    }
    fputc(':', out);
    json_value(out, vf, pb_value(e, vf, 0));
  }
  fputc('}', out);
}

static void json_message(FILE *out, const ProtobufCMessage *m) {
  fputc('{', out);
  int first = 1;
  for (unsigned k = 0; m && k < m->descriptor->n_fields; k++) {
    const ProtobufCFieldDescriptor *f = &m->descriptor->fields[k];
    size_t n = pb_count(m, f);
    int repeated = f->label == PROTOBUF_C_LABEL_REPEATED;
    if (!repeated && n == 0) continue;
    if (!first) fputc(',', out);
    first = 0;
    json_name(out, f->name);
    if (pb_is_map(f)) {
      json_map(out, m, f);
    } else if (repeated) {
      fputc('[', out);
      for (size_t i = 0; i < n; i++) {
        if (i) fputc(',', out);
        json_value(out, f, pb_value(m, f, i));
      }
      fputc(']', out);
    } else {
      json_value(out, f, pb_value(m, f, 0));
    }
  }
  fputc('}', out);
}

void cli_print_json(FILE *out, const ProtobufCMessage *m) {
  json_message(out, m);
  fputc('\n', out);
}
