/*
 * proto3 JSON output driven by descriptors, built with json-c:
 * lowerCamelCase names, enums by name, 64-bit integers as strings,
 * Timestamps in RFC 3339, bytes in base64, maps as objects, floats in the
 * shortest text that reads back as the same value. Any byte of a string
 * that is not valid UTF-8 becomes U+FFFD, so the output always parses.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cli.h"
#include "common/utf8.h"

json_object *cli_json_new_string(const char *str) {
  const unsigned char *s = (const unsigned char *)(str ? str : "");
  size_t n = strlen((const char *)s), bad = 0;
  for (size_t i = 0, len; i < n; i += len ? len : 1)
    if (!(len = eg_utf8_seq_len(s + i, n - i))) bad++;
  if (!bad) return json_object_new_string_len((const char *)s, (int)n);
  /* json-c copies bytes as they are: mend them first (3 bytes per U+FFFD). */
  char *fixed = malloc(n + 2 * bad + 1), *o = fixed;
  if (!fixed) return NULL;
  for (size_t i = 0, len; i < n; i += len ? len : 1) {
    if ((len = eg_utf8_seq_len(s + i, n - i))) {
      memcpy(o, s + i, len);
      o += len;
    } else {
      memcpy(o, "\xef\xbf\xbd", 3);
      o += 3;
    }
  }
  json_object *j = json_object_new_string_len(fixed, (int)(o - fixed));
  free(fixed);
  return j;
}

void cli_json_print(FILE *out, json_object *j) {
  fputs(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
        out);
  fputc('\n', out);
  json_object_put(j);
}

static json_object *json_base64(const ProtobufCBinaryData *b) {
  size_t cap = sodium_base64_ENCODED_LEN(b->len, sodium_base64_VARIANT_ORIGINAL);
  char *text = malloc(cap);
  if (!text) return NULL;
  sodium_bin2base64(text, cap, b->data, b->len, sodium_base64_VARIANT_ORIGINAL);
  json_object *j = json_object_new_string(text);
  free(text);
  return j;
}

void pb_json_name(const char *name, char *buf, size_t len) {
  size_t n = 0;
  for (int up = 0; *name && n + 1 < len; name++) {
    if (*name == '_') {
      up = 1;
      continue;
    }
    buf[n++] = up ? (char)toupper((unsigned char)*name) : *name;
    up = 0;
  }
  buf[n] = '\0';
}

/* A number or bool; 64-bit integers and non-finite floats are strings,
 * finite floats numbers written as their shortest round-trip text. */
static json_object *json_scalar(const ProtobufCFieldDescriptor *f, const void *v) {
  char buf[64];
  pb_scalar_text(f, v, buf, sizeof buf);
  switch (f->type) {
  case PROTOBUF_C_TYPE_BOOL:
    return json_object_new_boolean(*(const protobuf_c_boolean *)v);
  case PROTOBUF_C_TYPE_FLOAT:
  case PROTOBUF_C_TYPE_DOUBLE: {
    double d = f->type == PROTOBUF_C_TYPE_FLOAT ? *(const float *)v : *(const double *)v;
    if (!isdigit((unsigned char)buf[strlen(buf) - 1])) return json_object_new_string(buf);
    return json_object_new_double_s(d, buf);
  }
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    return json_object_new_int(*(const int32_t *)v);
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    return json_object_new_int64(*(const uint32_t *)v);
  default: /* 64-bit integers: strings, as proto3 JSON says */
    return json_object_new_string(buf);
  }
}

static json_object *json_value(const ProtobufCFieldDescriptor *f, const void *v) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_STRING:
    return cli_json_new_string(*(const char *const *)v);
  case PROTOBUF_C_TYPE_BYTES:
    return json_base64(v);
  case PROTOBUF_C_TYPE_ENUM: {
    const char *name = pb_enum_name(f->descriptor, *(const int *)v);
    return name ? json_object_new_string(name) : json_object_new_int(*(const int *)v);
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)v;
    if (pb_is_timestamp(f)) {
      char ts[48];
      pb_timestamp_text((const Google__Protobuf__Timestamp *)sub, ts);
      return json_object_new_string(ts);
    }
    return cli_json_message(sub);
  }
  default:
    return json_scalar(f, v);
  }
}

/* A map field as an object; keys are always JSON strings. */
static json_object *json_map(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  const ProtobufCMessageDescriptor *d = f->descriptor;
  const ProtobufCFieldDescriptor *kf = &d->fields[0], *vf = &d->fields[1];
  json_object *o = json_object_new_object();
  for (size_t i = 0, n = pb_count(m, f); i < n; i++) {
    const ProtobufCMessage *e = *(const ProtobufCMessage *const *)pb_value(m, f, i);
    char key[64];
    const char *k = key;
    if (kf->type == PROTOBUF_C_TYPE_STRING)
      k = *(const char *const *)pb_value(e, kf, 0);
    else
      pb_scalar_text(kf, pb_value(e, kf, 0), key, sizeof key);
    json_object_object_add(o, k, json_value(vf, pb_value(e, vf, 0)));
  }
  return o;
}

json_object *cli_json_message(const ProtobufCMessage *m) {
  json_object *o = json_object_new_object();
  for (unsigned k = 0; m && k < m->descriptor->n_fields; k++) {
    const ProtobufCFieldDescriptor *f = &m->descriptor->fields[k];
    size_t n = pb_count(m, f);
    int repeated = f->label == PROTOBUF_C_LABEL_REPEATED;
    if (!repeated && n == 0) continue;
    char name[128];
    pb_json_name(f->name, name, sizeof name);
    json_object *v;
    if (pb_is_map(f)) {
      v = json_map(m, f);
    } else if (repeated) {
      v = json_object_new_array_ext((int)n);
      for (size_t i = 0; i < n; i++) json_object_array_add(v, json_value(f, pb_value(m, f, i)));
    } else {
      v = json_value(f, pb_value(m, f, 0));
    }
    json_object_object_add(o, name, v);
  }
  return o;
}

void cli_print_json(FILE *out, const ProtobufCMessage *m, uint64_t lsn) {
  json_object *o = cli_json_message(m);
  /* A write's LSN rides along under a key no proto3 JSON field can have
   * (JSON names hold no '-'), so the response's own fields stay as they are. */
  if (lsn) {
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, lsn);
    json_object_object_add(o, CLI_JSON_LSN_KEY, json_object_new_string(buf));
  }
  cli_json_print(out, o);
}
