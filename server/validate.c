/*
 * Request validation: the strings of a request checked on its wire bytes,
 * ids, error messages that name the field.
 */
#include "server/validate.h"

#include <assert.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/utf8.h"

#include "engram/v1/agent_state.pb-c.h"
#include "engram/v1/memory.pb-c.h"
#include "engram/v1/session.pb-c.h"
#include "server/config.h"
#include "server/store_svc.h"
#include "storage/memories.h"

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

int eg_utf8_valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  while (p < end) {
    size_t n = eg_utf8_seq_len(p, (size_t)(end - p));
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

/* ==== the wire walk ======================================================== */

/* The most values of each repeated field of a request. Checked on the
 * wire, before protobuf-c allocates them and before any service work that
 * grows with the count (a quadratic de-duplication, say): each is the
 * ceiling of the configurable limit the service then checks, or the only
 * limit. A repeated field not listed takes EG_WIRE_REPEATED_MAX. */
typedef struct {
  const ProtobufCMessageDescriptor *desc;
  const char *field;
  size_t max;
} eg_wire_limit;

static const eg_wire_limit eg_wire_limits[] = {
    {&engram__v1__append_messages_request__descriptor, "messages", EG_APPEND_MESSAGES_MAX},
    {&engram__v1__session__descriptor, "metadata", EG_METADATA_ENTRIES_MAX},
    {&engram__v1__message__descriptor, "metadata", EG_METADATA_ENTRIES_MAX},
    {&engram__v1__memory__descriptor, "tags", EG_MEMORY_TAGS_MAX},
    {&engram__v1__memory__descriptor, "embedding", EG_MEMORY_DIM_MAX},
    {&engram__v1__memory_filter__descriptor, "tags", EG_MEMORY_TAGS_MAX},
    {&engram__v1__search_memories_request__descriptor, "embedding", EG_MEMORY_DIM_MAX},
    {&engram__v1__list_sessions_request__descriptor, "states", EG_LIST_SESSIONS_STATES_MAX},
    {&engram__v1__list_sessions_request__descriptor, "metadata_equals", EG_LIST_SESSIONS_METADATA_MAX},
    {&engram__v1__put_writes_request__descriptor, "writes", EG_CKPT_WRITES_MAX},
    {&engram__v1__put_item_request__descriptor, "embedding", EG_MEMORY_DIM_MAX},
    {&engram__v1__search_items_request__descriptor, "query_embedding", EG_MEMORY_DIM_MAX},
    {&engram__v1__refresh_items_request__descriptor, "items", EG_REFRESH_ITEMS_MAX},
    {&engram__v1__message__descriptor, "embedding", EG_MEMORY_DIM_MAX},
    {&engram__v1__search_messages_request__descriptor, "embedding", EG_MEMORY_DIM_MAX},
    {&engram__v1__search_messages_request__descriptor, "session_ids", EG_SEARCH_SESSION_IDS_MAX},
    {&engram__v1__search_messages_request__descriptor, "session_states", EG_SEARCH_STATES_MAX},
    {&engram__v1__memory_filter__descriptor, "metadata_equals", EG_MEMORY_FILTER_METADATA_MAX},
    {&engram__v1__batch_create_memories_request__descriptor, "requests", EG_BATCH_CREATE_MAX},
    {&engram__v1__batch_delete_memories_request__descriptor, "memory_ids", EG_BATCH_DELETE_MAX},
};

static size_t wire_limit(const ProtobufCMessageDescriptor *desc, const ProtobufCFieldDescriptor *fd) {
  for (size_t i = 0; i < sizeof eg_wire_limits / sizeof eg_wire_limits[0]; i++)
    if (eg_wire_limits[i].desc == desc && strcmp(eg_wire_limits[i].field, fd->name) == 0)
      return eg_wire_limits[i].max;
  return EG_WIRE_REPEATED_MAX;
}

#define EG_WIRE_FIELD_MAX 536870911u /* 2^29 - 1, the largest field number */

/* A message being walked: its descriptor and bytes, and where it sits in
 * the enclosing message, which is all it takes to name a field on error. */
typedef struct eg_wire_msg {
  const struct eg_wire_msg *up;          /* enclosing message; NULL for the request */
  const ProtobufCFieldDescriptor *field; /* the field of up this message is a value of */
  const uint8_t *tag;                    /* where that value's tag starts in up */
  const ProtobufCMessageDescriptor *desc;
  const uint8_t *start, *end;
  unsigned depth; /* 0 for the request */
} eg_wire_msg;

/* One field as found on the wire; data[0..len) is the payload of a
 * length-delimited one. */
typedef struct {
  uint32_t id;
  unsigned type;
  const uint8_t *data;
  size_t len;
} eg_wire_field;

/* Reads the varint at *p into *v and advances *p past it. Returns 0 when
 * it runs past end or past 10 bytes. */
static int wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  uint64_t x = 0;
  for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    x |= (uint64_t)(b & 0x7F) << shift;
    if (!(b & 0x80)) {
      *v = x;
      return 1;
    }
  }
  return 0;
}

/* Reads the field whose tag is at *p into *f and advances *p past its
 * value. Returns 0 when the bytes are not a field: a bad field number, a
 * wire type proto3 does not use (groups, 6, 7), a value cut short. */
static int wire_field(const uint8_t **p, const uint8_t *end, eg_wire_field *f) {
  uint64_t key, n;
  if (!wire_varint(p, end, &key) || key >> 3 == 0 || key >> 3 > EG_WIRE_FIELD_MAX) return 0;
  f->id = (uint32_t)(key >> 3);
  f->type = (unsigned)(key & 7);
  switch (f->type) {
  case PROTOBUF_C_WIRE_TYPE_VARINT: return wire_varint(p, end, &n);
  case PROTOBUF_C_WIRE_TYPE_64BIT: n = 8; break;
  case PROTOBUF_C_WIRE_TYPE_32BIT: n = 4; break;
  case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED:
    if (!wire_varint(p, end, &n)) return 0;
    break;
  default: return 0;
  }
  if (n > (uint64_t)(end - *p)) return 0;
  f->data = *p;
  f->len = (size_t)n;
  *p += n;
  return 1;
}

/* How many values of field fd one occurrence f carries: a packed run of
 * scalars holds several, anything else one. 0 for a packed run that is
 * malformed (a fixed-width run of the wrong length, a varint cut short). */
static size_t wire_values(const ProtobufCFieldDescriptor *fd, const eg_wire_field *f) {
  if (f->type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED || fd->type == PROTOBUF_C_TYPE_STRING ||
      fd->type == PROTOBUF_C_TYPE_BYTES || fd->type == PROTOBUF_C_TYPE_MESSAGE)
    return 1;
  switch (fd->type) {
  case PROTOBUF_C_TYPE_FIXED32: case PROTOBUF_C_TYPE_SFIXED32: case PROTOBUF_C_TYPE_FLOAT:
    return f->len % 4 ? 0 : f->len / 4;
  case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_SFIXED64: case PROTOBUF_C_TYPE_DOUBLE:
    return f->len % 8 ? 0 : f->len / 8;
  default: { /* varints: one ends at each byte below 0x80 */
    size_t n = 0;
    for (size_t i = 0; i < f->len; i++) n += f->data[i] < 0x80;
    return f->len && f->data[f->len - 1] < 0x80 ? n : 0;
  }
  }
}

/* How many values of field id m holds before the tag at `at`: the index of
 * the value there. Only called on error, so the walk keeps no counters;
 * m's bytes up to `at` were already parsed and are well-formed. */
static size_t wire_index(const eg_wire_msg *m, uint32_t id, const uint8_t *at) {
  size_t n = 0;
  eg_wire_field f;
  for (const uint8_t *p = m->start; p < at && wire_field(&p, m->end, &f);) n += f.id == id;
  return n;
}

/* Writes into path the path of the value of fd whose tag is at `at` in m
 * ("messages[2].content") and returns its length. */
static size_t wire_path(const eg_wire_msg *m, const ProtobufCFieldDescriptor *fd,
                        const uint8_t *at, char *path) {
  size_t len = m->up ? wire_path(m->up, m->field, m->tag, path) : 0;
  len = path_push(path, len, len ? ".%s" : "%s", fd->name);
  if (fd->label == PROTOBUF_C_LABEL_REPEATED)
    len = path_push(path, len, "[%zu]", wire_index(m, fd->id, at));
  return len;
}

static eg_err wire_bad(const eg_wire_msg *m, const ProtobufCFieldDescriptor *fd,
                       const uint8_t *at, const char *problem, char *err, size_t errlen) {
  char path[EG_PATH_MAX] = "";
  wire_path(m, fd, at, path);
  return eg_invalid(err, errlen, path, "%s", problem);
}

static eg_err wire_message(const eg_wire_msg *m, char *err, size_t errlen);

/* Checks the value f of field fd, whose tag is at `at` in m: a string's
 * bytes, or a submessage (map entries included) walked in turn. */
static eg_err wire_value(const eg_wire_msg *m, const ProtobufCFieldDescriptor *fd,
                         const uint8_t *at, const eg_wire_field *f, char *err, size_t errlen) {
  if (f->type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
    return eg_invalid(err, errlen, "request", "malformed protobuf");
  if (fd->type == PROTOBUF_C_TYPE_STRING) {
    if (memchr(f->data, '\0', f->len))
      return wire_bad(m, fd, at, "contains a NUL byte", err, errlen);
    if (!eg_utf8_valid((const char *)f->data, f->len))
      return wire_bad(m, fd, at, "not valid UTF-8", err, errlen);
    return EG_OK;
  }
  if (m->depth == EG_WIRE_DEPTH_MAX) return eg_invalid(err, errlen, "request", "nested too deeply");
  eg_wire_msg sub = {.up = m, .field = fd, .tag = at, .desc = fd->descriptor,
                     .start = f->data, .end = f->data + f->len, .depth = m->depth + 1};
  return wire_message(&sub, err, errlen);
}

/* Counts the values of repeated field fd of m, the occurrence f among
 * them, into count[]; refuses them past the field's limit. */
static eg_err wire_count(const eg_wire_msg *m, const ProtobufCFieldDescriptor *fd,
                         const eg_wire_field *f, size_t *count, char *err, size_t errlen) {
  size_t n = wire_values(fd, f), max = wire_limit(m->desc, fd);
  if (n == 0) return eg_invalid(err, errlen, "request", "malformed protobuf");
  if (n > max - *count) {
    char path[EG_PATH_MAX] = "";
    size_t len = m->up ? wire_path(m->up, m->field, m->tag, path) : 0;
    path_push(path, len, len ? ".%s" : "%s", fd->name);
    return eg_invalid(err, errlen, path, "more than %zu values", max);
  }
  *count += n;
  return EG_OK;
}

/* Walks the fields of m in wire order: counts the values of its repeated
 * fields against their limits and checks the values of its string and
 * message fields; the first bad one ends the walk. */
static eg_err wire_message(const eg_wire_msg *m, char *err, size_t errlen) {
  /* By field index: values so far of a repeated field, occurrences of a
   * singular message. */
  size_t count[EG_WIRE_FIELDS_MAX] = {0}, unknown = 0;
  const uint8_t *p = m->start;
  assert(m->desc->n_fields <= EG_WIRE_FIELDS_MAX);
  while (p < m->end) {
    const uint8_t *at = p;
    eg_wire_field f;
    if (!wire_field(&p, m->end, &f))
      return eg_invalid(err, errlen, "request", "malformed protobuf");
    const ProtobufCFieldDescriptor *fd = protobuf_c_message_descriptor_get_field(m->desc, f.id);
    if (!fd) {
      if (++unknown <= EG_WIRE_UNKNOWN_MAX) continue; /* skipped */
      char path[EG_PATH_MAX] = "request";
      if (m->up) wire_path(m->up, m->field, m->tag, path);
      return eg_invalid(err, errlen, path, "more than %d unknown fields", EG_WIRE_UNKNOWN_MAX);
    }
    if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
      eg_err rc = wire_count(m, fd, &f, &count[fd - m->desc->fields], err, errlen);
      if (rc) return rc;
    } else if (fd->type == PROTOBUF_C_TYPE_MESSAGE && count[fd - m->desc->fields]++) {
      /* protobuf-c merges the occurrences of a singular message, repeated
       * fields appended: each walked alone would pass at the ceiling. */
      return wire_bad(m, fd, at, "given more than once", err, errlen);
    }
    /* The other types have no text to check. */
    if (fd->type != PROTOBUF_C_TYPE_STRING && fd->type != PROTOBUF_C_TYPE_MESSAGE) continue;
    eg_err rc = wire_value(m, fd, at, &f, err, errlen);
    if (rc) return rc;
  }
  return EG_OK;
}

eg_err eg_validate_wire(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
                        char *err, size_t errlen) {
  assert(desc && desc->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC);
  if (len == 0) return EG_OK; /* the empty message; buf may be NULL */
  eg_wire_msg top = {.desc = desc, .start = buf, .end = buf + len};
  return wire_message(&top, err, errlen);
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
