/* The blind index of JSON objects (server/json_terms.h). */
#include "server/json_terms.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "server/validate.h"

static int eg_u64_cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The hash of one pair: key \0 value-text, hashed from a heap buffer (a
 * value may be as long as the whole document). */
static eg_err eg_pair_hash(const eg_blind_ctx *b, const char *key, json_object *v, uint64_t *out) {
  const char *text = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
  if (!text) return EG_ENOMEM;
  size_t kl = strlen(key), tl = strlen(text);
  char *buf = malloc(kl + 1 + tl);
  if (!buf) return EG_ENOMEM;
  memcpy(buf, key, kl + 1);
  memcpy(buf + kl + 1, text, tl);
  *out = eg_blind_word(b, buf, kl + 1 + tl);
  free(buf);
  return EG_OK;
}

eg_err eg_json_terms(const eg_blind_ctx *b, const char *field, const char *json, size_t len,
                     uint64_t *out, size_t max, size_t *n, char *msg, size_t msglen) {
  *n = 0;
  if (len == 0) return EG_OK;
  json_tokener *tok = json_tokener_new_ex(EG_JSON_DEPTH_MAX);
  if (!tok) return EG_ENOMEM;
  json_object *root = json_tokener_parse_ex(tok, json, (int)len);
  enum json_tokener_error err = json_tokener_get_error(tok);
  size_t end = json_tokener_get_parse_end(tok);
  json_tokener_free(tok);
  eg_err e = EG_OK;
  if (err == json_tokener_error_depth)
    e = eg_invalid(msg, msglen, field, "nested deeper than %d levels", EG_JSON_DEPTH_MAX);
  else if (!root || err != json_tokener_success)
    e = eg_invalid(msg, msglen, field, "not valid JSON (%s)",
                   err == json_tokener_continue ? "unexpected end" : json_tokener_error_desc(err));
  else if (end != len)
    e = eg_invalid(msg, msglen, field, "not valid JSON (text after the value at byte %zu)", end);
  else if (!json_object_is_type(root, json_type_object))
    e = eg_invalid(msg, msglen, field, "must be a JSON object");
  else if ((size_t)json_object_object_length(root) > max)
    e = eg_invalid(msg, msglen, field, "%d top-level keys, limit %zu",
                   json_object_object_length(root), max);
  if (e) {
    json_object_put(root);
    return e;
  }
  json_object_object_foreach(root, key, val) {
    if ((e = eg_pair_hash(b, key, val, &out[*n]))) break;
    (*n)++;
  }
  json_object_put(root);
  if (e) {
    *n = 0;
    return e;
  }
  qsort(out, *n, sizeof *out, eg_u64_cmp);
  size_t u = 0;
  for (size_t i = 0; i < *n; i++)
    if (u == 0 || out[u - 1] != out[i]) out[u++] = out[i];
  *n = u;
  return EG_OK;
}
