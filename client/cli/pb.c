/*
 * Walking protobuf-c messages by their descriptors, for the JSON and the
 * readable printers: where a field's values are, and their text.
 */
#include <assert.h>
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cli.h"

size_t pb_value_size(const ProtobufCFieldDescriptor *f) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
  case PROTOBUF_C_TYPE_DOUBLE:
    return 8;
  case PROTOBUF_C_TYPE_STRING:
    return sizeof(char *);
  case PROTOBUF_C_TYPE_BYTES:
    return sizeof(ProtobufCBinaryData);
  case PROTOBUF_C_TYPE_MESSAGE:
    return sizeof(ProtobufCMessage *);
  default: /* 32-bit integers, float, bool (protobuf_c_boolean), enum */
    return 4;
  }
}

static const void *member(const ProtobufCMessage *m, unsigned offset) {
  return (const char *)m + offset;
}

size_t pb_count(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  if (f->label == PROTOBUF_C_LABEL_REPEATED) return *(const size_t *)member(m, f->quantifier_offset);
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
    return *(const uint32_t *)member(m, f->quantifier_offset) == f->id;
  if (f->type == PROTOBUF_C_TYPE_MESSAGE ||
      (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type == PROTOBUF_C_TYPE_STRING))
    return *(void *const *)member(m, f->offset) != NULL;
  if (f->label == PROTOBUF_C_LABEL_OPTIONAL)
    return *(const protobuf_c_boolean *)member(m, f->quantifier_offset) != 0;
  return 1;
}

const void *pb_value(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, size_t i) {
  if (f->label == PROTOBUF_C_LABEL_REPEATED)
    return *(const char *const *)member(m, f->offset) + i * pb_value_size(f);
  return member(m, f->offset);
}

void pb_set_string(ProtobufCMessage *m, const char *name, const char *value) {
  const ProtobufCFieldDescriptor *f =
      protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
  assert(f && f->type == PROTOBUF_C_TYPE_STRING && f->label != PROTOBUF_C_LABEL_REPEATED);
  *(const char **)((char *)m + f->offset) = value;
}

int pb_is_map(const ProtobufCFieldDescriptor *f) {
  if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE) return 0;
  const ProtobufCMessageDescriptor *d = f->descriptor;
  size_t n = strlen(d->short_name);
  return n > 5 && !strcmp(d->short_name + n - 5, "Entry") && d->n_fields == 2 &&
         d->fields[0].id == 1 && !strcmp(d->fields[0].name, "key") && d->fields[1].id == 2 &&
         !strcmp(d->fields[1].name, "value");
}

int pb_is_timestamp(const ProtobufCFieldDescriptor *f) {
  return f->type == PROTOBUF_C_TYPE_MESSAGE &&
         !strcmp(((const ProtobufCMessageDescriptor *)f->descriptor)->name,
                 "google.protobuf.Timestamp");
}

void pb_timestamp_text(const Google__Protobuf__Timestamp *t, char buf[48]) {
  time_t secs = (time_t)t->seconds;
  struct tm tm;
  if (!gmtime_r(&secs, &tm)) {
    snprintf(buf, 48, "%" PRId64 "s", t->seconds);
    return;
  }
  size_t n = strftime(buf, 48, "%Y-%m-%dT%H:%M:%S", &tm);
  int32_t ns = t->nanos;
  if (ns <= 0 || ns > 999999999)
    snprintf(buf + n, 48 - n, "Z");
  else if (ns % 1000000 == 0)
    snprintf(buf + n, 48 - n, ".%03dZ", (int)(ns / 1000000));
  else if (ns % 1000 == 0)
    snprintf(buf + n, 48 - n, ".%06dZ", (int)(ns / 1000));
  else
    snprintf(buf + n, 48 - n, ".%09dZ", (int)ns);
}

/* The shortest %g text of d that reads back as the same value: as a float
 * when is_float (0.7f is "0.7", not "0.699999988"), else as a double (at
 * most 17 digits, which always round-trip). */
static void float_text(double d, int is_float, char *buf, size_t len) {
  if (isnan(d)) {
    snprintf(buf, len, "NaN");
    return;
  }
  if (isinf(d)) {
    snprintf(buf, len, d > 0 ? "Infinity" : "-Infinity");
    return;
  }
  for (int digits = 1; digits <= 17; digits++) {
    snprintf(buf, len, "%.*g", digits, d);
    if (is_float ? strtof(buf, NULL) == (float)d : strtod(buf, NULL) == d) return;
  }
}

void pb_scalar_text(const ProtobufCFieldDescriptor *f, const void *v, char *buf, size_t len) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    snprintf(buf, len, "%" PRId32, *(const int32_t *)v);
    break;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    snprintf(buf, len, "%" PRIu32, *(const uint32_t *)v);
    break;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    snprintf(buf, len, "%" PRId64, *(const int64_t *)v);
    break;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    snprintf(buf, len, "%" PRIu64, *(const uint64_t *)v);
    break;
  case PROTOBUF_C_TYPE_FLOAT:
    float_text(*(const float *)v, 1, buf, len);
    break;
  case PROTOBUF_C_TYPE_DOUBLE:
    float_text(*(const double *)v, 0, buf, len);
    break;
  default: /* bool */
    snprintf(buf, len, "%s", *(const protobuf_c_boolean *)v ? "true" : "false");
    break;
  }
}

const char *pb_enum_name(const ProtobufCEnumDescriptor *d, int value) {
  const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(d, value);
  return ev ? ev->name : NULL;
}

/* Length of the prefix the enum's values share by Buf style: "ROLE_" for
 * enum Role, "SESSION_STATE_" for SessionState; 0 if name lacks it. */
static size_t enum_prefix_len(const ProtobufCEnumDescriptor *d, const char *name) {
  const char *s = d->short_name;
  size_t n = 0;
  for (size_t i = 0; s[i]; i++) {
    if (i > 0 && isupper((unsigned char)s[i]) && name[n++] != '_') return 0;
    if (name[n++] != toupper((unsigned char)s[i])) return 0;
  }
  return name[n] == '_' ? n + 1 : 0;
}

void pb_enum_short(const ProtobufCEnumDescriptor *d, int value, char *buf, size_t len) {
  const char *name = pb_enum_name(d, value);
  if (!name) {
    snprintf(buf, len, "%d", value);
    return;
  }
  snprintf(buf, len, "%s", name + enum_prefix_len(d, name));
  for (char *p = buf; *p; p++) *p = (char)tolower((unsigned char)*p);
}

int pb_enum_parse(const ProtobufCEnumDescriptor *d, const char *text, int *value) {
  for (unsigned i = 0; i < d->n_values; i++) {
    const char *name = d->values[i].name;
    if (!strcasecmp(text, name) || !strcasecmp(text, name + enum_prefix_len(d, name))) {
      *value = d->values[i].value;
      return 0;
    }
  }
  return -1;
}
