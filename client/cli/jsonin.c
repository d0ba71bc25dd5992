/*
 * proto3 JSON input (engram call -d): a json-c value made into a
 * protobuf-c message by its descriptor. Field names lowerCamelCase or as
 * in the .proto; enums by name or number; 64-bit integers as numbers or
 * strings; bytes in base64 (standard or URL-safe, padding optional);
 * Timestamps in RFC 3339; FieldMasks as "a,b" (or {"paths": [...]});
 * maps as objects; null as the field's default. Everything lives in the
 * run's arena.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cli.h"

/* The decoding of one request; path names the value being read. */
typedef struct {
  cli *g;
  char path[256];
  char *why;
  size_t whylen;
} decoder;

static int fail(decoder *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(decoder *d, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = snprintf(d->why, d->whylen, "%s: ", *d->path ? d->path : "(request)");
  if (n >= 0 && (size_t)n < d->whylen) vsnprintf(d->why + n, d->whylen - (size_t)n, fmt, ap);
  va_end(ap);
  return -1;
}

/* An integer from a JSON number or a decimal string, within [min, max]
 * (unsigned when is_unsigned: max is then a uint64). */
static int read_int(decoder *d, json_object *j, int is_unsigned, int64_t min, uint64_t max,
                    uint64_t *out) {
  const char *text;
  char buf[32];
  if (json_object_is_type(j, json_type_int)) {
    snprintf(buf, sizeof buf, "%s", json_object_get_string(j));
    text = buf;
  } else if (json_object_is_type(j, json_type_string)) {
    text = json_object_get_string(j);
  } else if (json_object_is_type(j, json_type_double)) {
    double v = json_object_get_double(j);
    if (v != floor(v) || fabs(v) > 9007199254740992.0) return fail(d, "not an integer");
    snprintf(buf, sizeof buf, "%.0f", v);
    text = buf;
  } else {
    return fail(d, "expected an integer");
  }
  char *end;
  errno = 0;
  if (is_unsigned) {
    unsigned long long v = strtoull(text, &end, 10);
    if (!*text || *end || errno || text[strspn(text, " \t")] == '-' || v > max)
      return fail(d, "expected an integer in [0, %llu], got '%s'", (unsigned long long)max, text);
    *out = v;
  } else {
    long long v = strtoll(text, &end, 10);
    if (!*text || *end || errno || v < min || (v > 0 && (uint64_t)v > max))
      return fail(d, "expected an integer in [%lld, %lld], got '%s'", (long long)min,
                  (long long)max, text);
    *out = (uint64_t)v;
  }
  return 0;
}

static int read_float(decoder *d, json_object *j, double *out) {
  if (json_object_is_type(j, json_type_int) || json_object_is_type(j, json_type_double)) {
    *out = json_object_get_double(j);
    return 0;
  }
  if (!json_object_is_type(j, json_type_string)) return fail(d, "expected a number");
  const char *s = json_object_get_string(j);
  if (!strcmp(s, "NaN")) *out = NAN;
  else if (!strcmp(s, "Infinity")) *out = INFINITY;
  else if (!strcmp(s, "-Infinity")) *out = -INFINITY;
  else {
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    if (!*s || *end || errno) return fail(d, "expected a number, got '%s'", s);
  }
  return 0;
}

/* base64, standard or URL-safe alphabet (proto3 JSON takes either), '='
 * padding optional: the variant is told from the text. */
static int read_bytes(decoder *d, json_object *j, ProtobufCBinaryData *out) {
  if (!json_object_is_type(j, json_type_string)) return fail(d, "expected a base64 string");
  const char *s = json_object_get_string(j);
  size_t n = (size_t)json_object_get_string_len(j), len = 0;
  int url = strpbrk(s, "-_") != NULL, padded = n && s[n - 1] == '=';
  int variant = url ? (padded ? sodium_base64_VARIANT_URLSAFE
                              : sodium_base64_VARIANT_URLSAFE_NO_PADDING)
                    : (padded ? sodium_base64_VARIANT_ORIGINAL
                              : sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
  uint8_t *buf = cli_alloc(d->g, n * 3 / 4 + 1);
  const char *end;
  if (sodium_base642bin(buf, n * 3 / 4 + 1, s, n, NULL, &len, &end, variant) != 0 ||
      end != s + n)
    return fail(d, "not base64 (byte %zu)", (size_t)((end ? end : s) - s));
  out->data = buf;
  out->len = len;
  return 0;
}

static int read_message(decoder *d, json_object *j, const ProtobufCMessageDescriptor *desc,
                        ProtobufCMessage **out);

/* "sessionId,updateMask" -> paths "session_id", "update_mask". */
static int read_field_mask(decoder *d, const char *s, ProtobufCMessage *m) {
  Google__Protobuf__FieldMask *fm = (Google__Protobuf__FieldMask *)m;
  size_t n = *s ? 1 : 0;
  for (const char *p = s; *p; p++) n += *p == ',';
  fm->paths = cli_alloc(d->g, (n ? n : 1) * sizeof *fm->paths);
  for (const char *p = s; n && fm->n_paths < n;) {
    size_t len = strcspn(p, ",");
    char *path = cli_alloc(d->g, 2 * len + 1), *o = path;
    for (size_t i = 0; i < len; i++) {
      if (p[i] >= 'A' && p[i] <= 'Z') {
        *o++ = '_';
        *o++ = (char)(p[i] - 'A' + 'a');
      } else {
        *o++ = p[i];
      }
    }
    fm->paths[fm->n_paths++] = path;
    p += len + (p[len] == ',');
  }
  return 0;
}

/* One value of f from j into slot (the field's storage, or one element of
 * a repeated field's array). */
static int read_value(decoder *d, json_object *j, const ProtobufCFieldDescriptor *f, void *slot) {
  uint64_t u;
  double x;
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    if (read_int(d, j, 0, INT32_MIN, INT32_MAX, &u)) return -1;
    *(int32_t *)slot = (int32_t)(int64_t)u;
    return 0;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    if (read_int(d, j, 1, 0, UINT32_MAX, &u)) return -1;
    *(uint32_t *)slot = (uint32_t)u;
    return 0;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    if (read_int(d, j, 0, INT64_MIN, INT64_MAX, &u)) return -1;
    *(int64_t *)slot = (int64_t)u;
    return 0;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    if (read_int(d, j, 1, 0, UINT64_MAX, &u)) return -1;
    *(uint64_t *)slot = u;
    return 0;
  case PROTOBUF_C_TYPE_FLOAT:
    if (read_float(d, j, &x)) return -1;
    *(float *)slot = (float)x;
    return 0;
  case PROTOBUF_C_TYPE_DOUBLE:
    if (read_float(d, j, &x)) return -1;
    *(double *)slot = x;
    return 0;
  case PROTOBUF_C_TYPE_BOOL:
    if (!json_object_is_type(j, json_type_boolean)) return fail(d, "expected true or false");
    *(protobuf_c_boolean *)slot = json_object_get_boolean(j);
    return 0;
  case PROTOBUF_C_TYPE_ENUM: {
    const ProtobufCEnumDescriptor *e = f->descriptor;
    int v;
    if (json_object_is_type(j, json_type_int)) {
      if (read_int(d, j, 0, INT32_MIN, INT32_MAX, &u)) return -1;
      v = (int)(int64_t)u;
    } else if (!json_object_is_type(j, json_type_string) ||
               pb_enum_parse(e, json_object_get_string(j), &v) != 0) {
      return fail(d, "expected a value of %s (name or number), got %s", e->name,
                  json_object_to_json_string(j));
    }
    *(int *)slot = v;
    return 0;
  }
  case PROTOBUF_C_TYPE_STRING: {
    if (!json_object_is_type(j, json_type_string)) return fail(d, "expected a string");
    const char *s = json_object_get_string(j);
    size_t n = (size_t)json_object_get_string_len(j);
    if (strlen(s) != n) return fail(d, "a string holds a NUL character");
    *(char **)slot = cli_strndup(d->g, s, n);
    return 0;
  }
  case PROTOBUF_C_TYPE_BYTES:
    return read_bytes(d, j, slot);
  default: { /* message */
    const ProtobufCMessageDescriptor *md = f->descriptor;
    ProtobufCMessage *sub;
    if (pb_is_timestamp(f)) {
      int64_t us;
      if (!json_object_is_type(j, json_type_string) ||
          cli_parse_time_us(json_object_get_string(j), &us) != 0)
        return fail(d, "expected an RFC 3339 time (\"2026-01-02T03:04:05Z\")");
      Google__Protobuf__Timestamp *t = cli_alloc(d->g, sizeof *t);
      google__protobuf__timestamp__init(t);
      t->seconds = us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
      t->nanos = (int32_t)((us - t->seconds * 1000000) * 1000);
      *(ProtobufCMessage **)slot = &t->base;
      return 0;
    }
    if (md == &google__protobuf__field_mask__descriptor && json_object_is_type(j, json_type_string)) {
      sub = cli_alloc(d->g, md->sizeof_message);
      protobuf_c_message_init(md, sub);
      read_field_mask(d, json_object_get_string(j), sub);
    } else if (read_message(d, j, md, &sub)) {
      return -1;
    }
    *(ProtobufCMessage **)slot = sub;
    return 0;
  }
  }
}

/* The field of desc that name names (its JSON or its .proto name). */
static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *desc,
                                                  const char *name) {
  for (unsigned k = 0; k < desc->n_fields; k++) {
    char json[128];
    pb_json_name(desc->fields[k].name, json, sizeof json);
    if (!strcmp(name, desc->fields[k].name) || !strcmp(name, json)) return &desc->fields[k];
  }
  return NULL;
}

/* A map field from an object: one entry per member, keys parsed by the
 * entry's key type. */
static int read_map(decoder *d, json_object *j, const ProtobufCFieldDescriptor *f,
                    ProtobufCMessage *m, size_t plen) {
  if (!json_object_is_type(j, json_type_object)) return fail(d, "expected an object (a map)");
  const ProtobufCMessageDescriptor *ed = f->descriptor;
  size_t n = (size_t)json_object_object_length(j), i = 0;
  ProtobufCMessage **items = cli_alloc(d->g, (n ? n : 1) * sizeof *items);
  json_object_object_foreach(j, key, val) {
    snprintf(d->path + plen, sizeof d->path - plen, "[\"%.64s\"]", key);
    ProtobufCMessage *e = cli_alloc(d->g, ed->sizeof_message);
    protobuf_c_message_init(ed, e);
    json_object *kj = json_object_new_string(key);
    int rc = read_value(d, kj, &ed->fields[0], (char *)e + ed->fields[0].offset);
    json_object_put(kj);
    if (rc || read_value(d, val, &ed->fields[1], (char *)e + ed->fields[1].offset)) return -1;
    items[i++] = e;
  }
  *(size_t *)((char *)m + f->quantifier_offset) = n;
  *(ProtobufCMessage ***)((char *)m + f->offset) = items;
  return 0;
}

static int read_field(decoder *d, json_object *val, const ProtobufCFieldDescriptor *f,
                      ProtobufCMessage *m, size_t plen) {
  char *at = (char *)m + f->offset;
  if (pb_is_map(f)) return read_map(d, val, f, m, plen);
  if (f->label == PROTOBUF_C_LABEL_REPEATED) {
    if (!json_object_is_type(val, json_type_array)) return fail(d, "expected an array");
    size_t n = json_object_array_length(val);
    char *arr = cli_alloc(d->g, (n ? n : 1) * pb_value_size(f));
    for (size_t i = 0; i < n; i++) {
      snprintf(d->path + plen, sizeof d->path - plen, "[%zu]", i);
      if (read_value(d, json_object_array_get_idx(val, i), f, arr + i * pb_value_size(f)))
        return -1;
    }
    *(size_t *)((char *)m + f->quantifier_offset) = n;
    *(char **)at = arr;
    return 0;
  }
  if (read_value(d, val, f, at)) return -1;
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
    uint32_t *which = (uint32_t *)((char *)m + f->quantifier_offset);
    if (*which) return fail(d, "another member of its oneof is set already");
    *which = f->id;
  } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
             f->type != PROTOBUF_C_TYPE_STRING) {
    *(protobuf_c_boolean *)((char *)m + f->quantifier_offset) = 1;
  }
  return 0;
}

static int read_message(decoder *d, json_object *j, const ProtobufCMessageDescriptor *desc,
                        ProtobufCMessage **out) {
  if (!json_object_is_type(j, json_type_object))
    return fail(d, "expected an object (%s)", desc->name);
  ProtobufCMessage *m = cli_alloc(d->g, desc->sizeof_message);
  protobuf_c_message_init(desc, m);
  size_t base = strlen(d->path);
  json_object_object_foreach(j, key, val) {
    const ProtobufCFieldDescriptor *f = find_field(desc, key);
    snprintf(d->path + base, sizeof d->path - base, "%s%s", base ? "." : "", f ? f->name : key);
    if (!f) return fail(d, "unknown field of %s", desc->name);
    if (json_object_is_type(val, json_type_null)) continue;
    if (read_field(d, val, f, m, strlen(d->path))) return -1;
  }
  d->path[base] = '\0';
  *out = m;
  return 0;
}

/* A key of an object in the text of -d: its bytes between the quotes at
 * text + at + 1 (rawlen of them), and key/len the same with its escapes
 * decoded (key points into the text when it has none). */
typedef struct {
  const char *key;
  size_t at;
  uint32_t len, rawlen, obj, escaped; /* obj: which object (its '{' counted from 0) */
} json_key;

/* What one pass over the text of -d finds, before json-c parses it. */
typedef struct {
  json_key *keys;
  size_t nkeys, surrogate; /* surrogate: 1 + the offset of the first lone one; 0 if none */
} json_scan;

/* The value of the 4 hex digits at s (left bytes there), or -1. */
static long hex4(const char *s, size_t left) {
  long v = 0;
  for (size_t i = 0; i < 4; i++) {
    char c = i < left ? s[i] : '\0';
    int h = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : -1;
    if (h < 0) return -1;
    v = v << 4 | h;
  }
  return v;
}

/* One pass over text: counts the objects and arrays, and all values,
 * refusing more than CLI_JSON_CONTAINERS_MAX or CLI_JSON_VALUES_MAX before
 * json-c spends memory on them (a value is the top one, or one after a
 * comma, or the first in a container: strings are skipped whole); collects
 * every object's keys and notes the first lone UTF-16 surrogate escape
 * (json-c keeps a repeated key's last value and makes a lone surrogate
 * U+FFFD, silently). The text need not be valid JSON here: json-c judges
 * that next, and the keys and surrogates are reported only for text it
 * took. */
static int json_prescan(cli *g, const char *text, size_t len, json_scan *sc, char *why,
                        size_t whylen) {
  /* json-c refuses deeper nesting: deeper containers are counted, no more */
  struct {
    uint32_t obj;
    int is_obj, want_key;
  } stack[JSON_TOKENER_DEFAULT_DEPTH + 1];
  const size_t stack_max = sizeof stack / sizeof stack[0];
  size_t depth = 0, containers = 0, objects = 0, values = 1;
  int opened = 0; /* a container just opened: is its next token a value? */
  /* valid JSON spends at least 4 bytes on a key ("":0): more keys than
   * that are in text json-c refuses, and go unrecorded */
  size_t keys_max = len / 4 + 1;
  sc->keys = cli_alloc(g, keys_max * sizeof *sc->keys);
  size_t i;
  for (i = 0; i < len; i++) {
    char c = text[i];
    if (opened && c != ' ' && c != '\t' && c != '\r' && c != '\n') {
      opened = 0;
      if (c != '}' && c != ']' && ++values > CLI_JSON_VALUES_MAX) goto too_many_values;
    }
    if (c == '{' || c == '[') {
      opened = 1;
      if (++containers > CLI_JSON_CONTAINERS_MAX) {
        snprintf(why, whylen, "more than %d JSON objects and arrays (at byte %zu)",
                 CLI_JSON_CONTAINERS_MAX, i);
        return -1;
      }
      if (depth < stack_max) {
        stack[depth].is_obj = stack[depth].want_key = c == '{';
        stack[depth].obj = c == '{' ? (uint32_t)objects : 0;
      }
      objects += c == '{';
      depth++;
    } else if (c == '}' || c == ']') {
      depth -= depth > 0;
    } else if (c == ',') {
      if (++values > CLI_JSON_VALUES_MAX) goto too_many_values;
      if (depth && depth <= stack_max && stack[depth - 1].is_obj) stack[depth - 1].want_key = 1;
    } else if (c == '"') {
      size_t at = i;
      int escaped = 0;
      for (i++; i < len && text[i] != '"'; i++) {
        if (text[i] != '\\') continue;
        escaped = 1;
        if (i + 1 < len && text[i + 1] == 'u') {
          long u = hex4(text + i + 2, len - i - 2);
          if (u >= 0xd800 && u <= 0xdbff && i + 7 < len && text[i + 6] == '\\' &&
              text[i + 7] == 'u') {
            long lo = hex4(text + i + 8, len - i - 8);
            if (lo >= 0xdc00 && lo <= 0xdfff) { /* a pair: past both escapes */
              i += 11;
              continue;
            }
          }
          if (u >= 0xd800 && u <= 0xdfff && !sc->surrogate) sc->surrogate = i + 1;
        }
        i++; /* the escaped character */
      }
      if (depth && depth <= stack_max && stack[depth - 1].want_key && sc->nkeys < keys_max) {
        stack[depth - 1].want_key = 0;
        sc->keys[sc->nkeys++] = (json_key){.key = text + at + 1,
                                           .at = at,
                                           .len = (uint32_t)(i - at - 1),
                                           .rawlen = (uint32_t)(i - at - 1),
                                           .obj = stack[depth - 1].obj,
                                           .escaped = escaped};
      }
    }
  }
  return 0;
too_many_values:
  snprintf(why, whylen, "more than %d JSON values (at byte %zu)", CLI_JSON_VALUES_MAX, i);
  return -1;
}

static int key_cmp(const void *a, const void *b) {
  const json_key *x = a, *y = b;
  if (x->obj != y->obj) return x->obj < y->obj ? -1 : 1;
  if (x->len != y->len) return x->len < y->len ? -1 : 1;
  int c = memcmp(x->key, y->key, x->len);
  if (c) return c;
  return x->at < y->at ? -1 : x->at > y->at;
}

/* A key given twice in one object (after decoding escapes: "a" and
 * "\u0061" are one key), in text json-c took. */
static int check_keys(cli *g, const char *text, json_scan *sc, char *why, size_t whylen) {
  for (size_t i = 0; i < sc->nkeys; i++) {
    json_key *k = &sc->keys[i];
    if (!k->escaped) continue;
    json_object *j = json_tokener_parse(cli_strndup(g, text + k->at, k->rawlen + 2ul));
    k->len = (uint32_t)json_object_get_string_len(j);
    k->key = cli_strndup(g, json_object_get_string(j), k->len);
    json_object_put(j);
  }
  qsort(sc->keys, sc->nkeys, sizeof *sc->keys, key_cmp);
  for (size_t i = 1; i < sc->nkeys; i++) {
    const json_key *a = &sc->keys[i - 1], *b = &sc->keys[i];
    if (a->obj == b->obj && a->len == b->len && !memcmp(a->key, b->key, a->len)) {
      snprintf(why, whylen, "duplicate key \"%.*s\" in one object (at byte %zu)",
               (int)(b->rawlen < 64 ? b->rawlen : 64), text + b->at + 1, b->at);
      return -1;
    }
  }
  return 0;
}

int cli_json_to_message(cli *g, const char *text, size_t len,
                        const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out, char *why,
                        size_t whylen) {
  if (!text[strspn(text, " \t\r\n")]) {
    snprintf(why, whylen, "empty input (expected one JSON object)");
    return -1;
  }
  json_scan sc = {0};
  if (json_prescan(g, text, len, &sc, why, whylen) != 0) return -1;
  json_tokener *tok = json_tokener_new();
  if (!tok) {
    snprintf(why, whylen, "out of memory");
    return -1;
  }
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  json_object *j = json_tokener_parse_ex(tok, text, (int)len);
  enum json_tokener_error e = json_tokener_get_error(tok);
  size_t used = json_tokener_get_parse_end(tok);
  json_tokener_free(tok);
  if (!j || e != json_tokener_success || text[used + strspn(text + used, " \t\r\n")]) {
    snprintf(why, whylen, "not one JSON object (at byte %zu: %s)", used,
             e == json_tokener_success ? "trailing text" : json_tokener_error_desc(e));
    json_object_put(j);
    return -1;
  }
  if (sc.surrogate) {
    snprintf(why, whylen, "a lone UTF-16 surrogate escape \\u%.4s (at byte %zu)",
             text + sc.surrogate + 1, sc.surrogate - 1);
    json_object_put(j);
    return -1;
  }
  if (check_keys(g, text, &sc, why, whylen) != 0) {
    json_object_put(j);
    return -1;
  }
  decoder d = {.g = g, .why = why, .whylen = whylen};
  int rc = read_message(&d, j, desc, out);
  json_object_put(j);
  return rc;
}
