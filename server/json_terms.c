#include "server/json_terms.h"

#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/cmp.h"
#include "server/validate.h"

/* ---- the strict check ------------------------------------------------------------ */

/* json-c's parser, even with JSON_TOKENER_STRICT, takes what is not JSON
 * (NaN, Infinity, single quotes, control characters in strings), and its
 * keys are C strings (a key "a\u0000b" becomes "a"). The server returns
 * these texts verbatim to clients that parse them strictly, and hashes
 * keys: so a text is first checked here against RFC 8259's grammar, and
 * json-c parses only what passed. (jansson, strict itself, cannot join
 * json-c in one program: the two export functions of the same names, such
 * as json_object_iter_next, and engramd logs with json-c.) */
struct eg_jscan {
  const char *p, *end;
  const char *why; /* what is wrong, once something is */
};

static int eg_js_fail(struct eg_jscan *s, const char *why) {
  if (!s->why) s->why = s->p >= s->end ? "not valid JSON (it ends too soon)" : why;
  return -1;
}

static void eg_js_ws(struct eg_jscan *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\r' || *s->p == '\n')) s->p++;
}

static int eg_js_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A string at s->p ('"'); *nul is set if it holds the escape \u0000. */
static int eg_js_string(struct eg_jscan *s, int *nul) {
  *nul = 0;
  for (s->p++; s->p < s->end; s->p++) {
    unsigned char c = (unsigned char)*s->p;
    if (c == '"') {
      s->p++;
      return 0;
    }
    if (c < 0x20) return eg_js_fail(s, "not valid JSON (a control character in a string)");
    if (c != '\\') continue;
    if (++s->p == s->end) break;
    if (*s->p == 'u') {
      if (s->end - s->p < 5) break;
      for (int i = 1; i <= 4; i++)
        if (!eg_js_hex(s->p[i])) return eg_js_fail(s, "not valid JSON (a bad \\u escape)");
      unsigned long u = strtoul((char[5]){s->p[1], s->p[2], s->p[3], s->p[4], 0}, NULL, 16);
      if (u == 0) *nul = 1;
      /* json-c turns a lone surrogate into U+FFFD: two different keys
       * ("\ud800", "\udc00") would hash alike. A high one must be
       * followed by a low one, which it then takes. */
      if (u >= 0xDC00 && u <= 0xDFFF) return eg_js_fail(s, "not valid JSON (a lone surrogate)");
      if (u >= 0xD800 && u <= 0xDBFF) {
        unsigned long lo = 0;
        if (s->end - s->p >= 11 && s->p[5] == '\\' && s->p[6] == 'u' && eg_js_hex(s->p[7]) &&
            eg_js_hex(s->p[8]) && eg_js_hex(s->p[9]) && eg_js_hex(s->p[10]))
          lo = strtoul((char[5]){s->p[7], s->p[8], s->p[9], s->p[10], 0}, NULL, 16);
        if (lo < 0xDC00 || lo > 0xDFFF) return eg_js_fail(s, "not valid JSON (a lone surrogate)");
        s->p += 6;
      }
      s->p += 4;
    } else if (!strchr("\"\\/bfnrt", *s->p)) {
      return eg_js_fail(s, "not valid JSON (a bad escape)");
    }
  }
  return eg_js_fail(s, "not valid JSON (it ends too soon)");
}

static int eg_js_digits(struct eg_jscan *s) {
  const char *from = s->p;
  while (s->p < s->end && *s->p >= '0' && *s->p <= '9') s->p++;
  return s->p > from ? 0 : eg_js_fail(s, "not valid JSON");
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? (its range is checked on
 * the parsed value). */
static int eg_js_number(struct eg_jscan *s) {
  const char *from = s->p;
  int integer = 1;
  if (*s->p == '-') s->p++;
  if (s->p < s->end && *s->p == '0') s->p++;
  else if (eg_js_digits(s)) return -1;
  if (s->p < s->end && *s->p == '.') {
    s->p++;
    integer = 0;
    if (eg_js_digits(s)) return -1;
  }
  if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
    s->p++;
    integer = 0;
    if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
    if (eg_js_digits(s)) return -1;
  }
  /* json-c clamps an integer past 64 bits (to INT64_MIN or UINT64_MAX):
   * two different numbers would hash alike. */
  if (integer) {
    char buf[24];
    size_t n = (size_t)(s->p - from);
    if (n >= sizeof buf) return eg_js_fail(s, "a number out of range (an integer past 64 bits)");
    memcpy(buf, from, n);
    buf[n] = 0;
    errno = 0;
    if (*from == '-') (void)strtoll(buf, NULL, 10);
    else (void)strtoull(buf, NULL, 10);
    if (errno == ERANGE) return eg_js_fail(s, "a number out of range (an integer past 64 bits)");
  }
  return 0;
}

static int eg_js_value(struct eg_jscan *s, int depth);

/* An object or array at s->p; its members one level deeper. */
static int eg_js_container(struct eg_jscan *s, int depth) {
  char close = *s->p == '{' ? '}' : ']';
  int nul;
  if (depth > EG_JSON_DEPTH_MAX) return eg_js_fail(s, "nested deeper than 64 levels");
  s->p++;
  eg_js_ws(s);
  if (s->p < s->end && *s->p == close) return s->p++, 0;
  for (;;) {
    if (close == '}') {
      if (s->p >= s->end || *s->p != '"') return eg_js_fail(s, "not valid JSON (a key must be a string)");
      if (eg_js_string(s, &nul)) return -1;
      if (nul) return eg_js_fail(s, "a key holds \\u0000");
      eg_js_ws(s);
      if (s->p >= s->end || *s->p != ':') return eg_js_fail(s, "not valid JSON (':' expected)");
      s->p++;
    }
    if (eg_js_value(s, depth)) return -1;
    eg_js_ws(s);
    if (s->p < s->end && *s->p == close) return s->p++, 0;
    if (s->p >= s->end || *s->p != ',') return eg_js_fail(s, "not valid JSON (',' expected)");
    s->p++;
    eg_js_ws(s);
  }
}

static int eg_js_value(struct eg_jscan *s, int depth) {
  static const char *const words[] = {"true", "false", "null"};
  int nul;
  eg_js_ws(s);
  if (s->p >= s->end) return eg_js_fail(s, "not valid JSON (it ends too soon)");
  char c = *s->p;
  if (c == '{' || c == '[') return eg_js_container(s, depth + 1);
  if (c == '"') return eg_js_string(s, &nul);
  if (c == '-' || (c >= '0' && c <= '9')) return eg_js_number(s);
  for (size_t i = 0; i < sizeof words / sizeof *words; i++) {
    size_t n = strlen(words[i]);
    if ((size_t)(s->end - s->p) >= n && memcmp(s->p, words[i], n) == 0) {
      s->p += n;
      return 0;
    }
  }
  return eg_js_fail(s, "not valid JSON");
}

/* NULL if v holds only finite numbers, else what is wrong. json-c reads
 * 1e999 as infinity, which JSON cannot write back. Recursion is bounded
 * by the checked depth. */
static const char *eg_json_finite(json_object *v) {
  switch (json_object_get_type(v)) {
  case json_type_double:
    return isfinite(json_object_get_double(v)) ? NULL : "a number out of range (not finite)";
  case json_type_array:
    for (size_t i = 0, n = json_object_array_length(v); i < n; i++) {
      const char *why = eg_json_finite(json_object_array_get_idx(v, i));
      if (why) return why;
    }
    return NULL;
  case json_type_object: {
    json_object_object_foreach(v, key, val) {
      const char *why = eg_json_finite(val);
      (void)key;
      if (why) return why;
    }
    return NULL;
  }
  default:
    return NULL;
  }
}

/* Parses json[0..len) as one JSON object with nothing but white space after
 * it; NULL and *why if it is not (*why NULL: out of memory). */
static json_object *eg_json_parse(const char *json, size_t len, const char **why) {
  struct eg_jscan s = {.p = json, .end = json + len};
  eg_js_ws(&s);
  int object = s.p < s.end && *s.p == '{';
  if (eg_js_value(&s, 0) == 0) {
    eg_js_ws(&s);
    if (s.p < s.end) s.why = "not valid JSON (something follows the value)";
  }
  if (s.why) return *why = s.why, NULL;
  if (!object) return *why = "must be a JSON object", NULL;
  json_tokener *tok = json_tokener_new_ex(EG_JSON_DEPTH_MAX);
  if (!tok) return *why = NULL, NULL;
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
  json_object *o = json_tokener_parse_ex(tok, json, (int)len);
  enum json_tokener_error je = json_tokener_get_error(tok);
  json_tokener_free(tok);
  /* What passed the check parses; a failure here is json-c's memory. */
  if (!o || je != json_tokener_success) {
    json_object_put(o);
    return *why = NULL, NULL;
  }
  if ((*why = eg_json_finite(o))) {
    json_object_put(o);
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
