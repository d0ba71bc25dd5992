#include "server/json_terms.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "server/validate.h"

static int eg_u64_cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* Parses json[0..len) as one JSON value with nothing but white space after
 * it; NULL (and *why) if it does not. */
static json_object *eg_json_parse(const char *json, size_t len, const char **why) {
  json_tokener *tok = json_tokener_new_ex(EG_JSON_DEPTH_MAX);
  if (!tok) return *why = NULL, NULL;
  json_object *o = json_tokener_parse_ex(tok, json, (int)len);
  enum json_tokener_error je = json_tokener_get_error(tok);
  size_t used = json_tokener_get_parse_end(tok);
  json_tokener_free(tok);
  if (!o || je != json_tokener_success) {
    json_object_put(o);
    *why = je == json_tokener_error_depth ? "nested deeper than 64 levels"
           : je == json_tokener_continue  ? "not valid JSON (it ends too soon)"
                                          : "not valid JSON";
    return NULL;
  }
  for (; used < len; used++)
    if (!strchr(" \t\r\n", json[used])) {
      json_object_put(o);
      *why = "not valid JSON (something follows the value)";
      return NULL;
    }
  return o;
}

eg_err eg_json_terms(const eg_blind_ctx *b, const char *field, const char *json, size_t len,
                     uint64_t *out, size_t max, size_t *n, char *msg, size_t msglen) {
  const char *why = NULL;
  *n = 0;
  if (len == 0) return EG_OK;
  /* json-c takes an int length; callers bound len far below this. */
  if (len > (size_t)INT32_MAX) return eg_invalid(msg, msglen, field, "too long");
  json_object *o = eg_json_parse(json, len, &why);
  if (!o) return why ? eg_invalid(msg, msglen, field, "%s", why) : EG_ENOMEM;
  if (!json_object_is_type(o, json_type_object)) {
    json_object_put(o);
    return eg_invalid(msg, msglen, field, "must be a JSON object");
  }
  size_t pairs = (size_t)json_object_object_length(o);
  if (pairs > max) {
    json_object_put(o);
    return eg_invalid(msg, msglen, field, "%zu top-level keys, limit %zu", pairs, max);
  }
  eg_err e = EG_OK;
  size_t k = 0;
  json_object_object_foreach(o, key, val) {
    const char *text = json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN);
    size_t kl = strlen(key), tl = strlen(text);
    char *buf = malloc(kl + 1 + tl);
    if (!buf) {
      e = EG_ENOMEM;
      break;
    }
    memcpy(buf, key, kl);
    buf[kl] = '\0';
    memcpy(buf + kl + 1, text, tl);
    out[k++] = eg_blind_word(b, buf, kl + 1 + tl);
    free(buf);
  }
  json_object_put(o);
  if (e) return e;
  qsort(out, k, sizeof *out, eg_u64_cmp);
  size_t u = 0;
  for (size_t i = 0; i < k; i++)
    if (u == 0 || out[u - 1] != out[i]) out[u++] = out[i];
  *n = u;
  return EG_OK;
}
