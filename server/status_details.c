#include "server/status_details.h"

#include <grpc/grpc.h>
#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/grpc_code.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"

/* ==== request ids ========================================================== */

static uint64_t eg_request_prefix;
static atomic_uint_fast64_t eg_request_counter;
static pthread_once_t eg_request_once = PTHREAD_ONCE_INIT;

static void eg_request_prefix_draw(void) {
  randombytes_buf(&eg_request_prefix, sizeof eg_request_prefix);
}

void eg_request_id_new(char id[EG_REQUEST_ID_MAX + 1]) {
  pthread_once(&eg_request_once, eg_request_prefix_draw);
  uint64_t n = atomic_fetch_add(&eg_request_counter, 1);
  snprintf(id, EG_REQUEST_ID_MAX + 1, "%016" PRIx64 "%016" PRIx64, eg_request_prefix, n);
}

/* ==== BadRequest =========================================================== */

/* Length of the snake_case name at s ([a-z0-9_], starting with a letter
 * or '_'), with an optional "[digits]" index; 0 if none starts there. */
static size_t eg_path_segment(const char *s) {
  size_t n = 0;
  if (!((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_')) return 0;
  while ((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9') || s[n] == '_') n++;
  if (s[n] != '[') return n;
  size_t d = strspn(s + n + 1, "0123456789");
  return d > 0 && s[n + 1 + d] == ']' ? n + d + 2 : 0;
}

int eg_bad_request_parse(const char *msg, size_t *path_len, const char **problem) {
  size_t n = 0;
  for (;;) {
    size_t seg = eg_path_segment(msg + n);
    if (seg == 0) return 0;
    n += seg;
    if (msg[n] != '.') break;
    n++;
  }
  if (msg[n] != ':' || msg[n + 1] != ' ' || msg[n + 2] == '\0') return 0;
  if (n == strlen("request") && strncmp(msg, "request", n) == 0) return 0;
  *path_len = n;
  *problem = msg + n + 2;
  return 1;
}

/* ==== reasons and delays =================================================== */

const char *eg_status_reason(int code, eg_err e) {
  if (e != EG_OK) return eg_err_reason(e);
  return eg_grpc_code_name(code);
}

int eg_status_retry_ms(int code, eg_err e) {
  if (e != EG_OK) return eg_err_retry_ms(e);
  if (code == GRPC_STATUS_UNAVAILABLE) return eg_err_retry_ms(EG_EUNAVAIL);
  if (code == GRPC_STATUS_ABORTED) return eg_err_retry_ms(EG_EABORTED);
  return 0;
}

/* ==== google.rpc.Status ==================================================== */

#define EG_DETAILS_MAX 4

/* Packs m as the next Any, any[*n] (listed in list[*n]; its bytes
 * malloc'd, freed by the caller through value.data; its type URL written
 * into url). -1 when memory runs out. */
static int eg_add_detail(Google__Protobuf__Any *any, Google__Protobuf__Any **list, size_t *n,
                         const ProtobufCMessage *m, char *url, size_t urllen) {
  size_t len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) return -1;
  protobuf_c_message_pack(m, buf);
  snprintf(url, urllen, "type.googleapis.com/%s", m->descriptor->name);
  google__protobuf__any__init(&any[*n]);
  any[*n].type_url = url;
  any[*n].value.data = buf;
  any[*n].value.len = len;
  list[*n] = &any[*n];
  (*n)++;
  return 0;
}

grpc_slice eg_status_details(int code, eg_err e, const char *msg, const char *request_id) {
  return eg_status_details_retry(code, e, msg, request_id, 0);
}

grpc_slice eg_status_details_retry(int code, eg_err e, const char *msg, const char *request_id,
                                   int own_retry_ms) {
  Google__Protobuf__Any any[EG_DETAILS_MAX], *list[EG_DETAILS_MAX];
  char urls[EG_DETAILS_MAX][64];
  size_t n = 0;
  int fail = 0;
  grpc_slice out = grpc_empty_slice();

  Google__Rpc__ErrorInfo info = GOOGLE__RPC__ERROR_INFO__INIT;
  info.reason = (char *)eg_status_reason(code, e);
  info.domain = EG_ERROR_DOMAIN;
  fail |= eg_add_detail(any, list, &n, &info.base, urls[n], sizeof urls[n]);

  size_t path_len;
  const char *problem;
  char *field = NULL;
  if (code == GRPC_STATUS_INVALID_ARGUMENT && eg_bad_request_parse(msg, &path_len, &problem) &&
      (field = strndup(msg, path_len))) {
    Google__Rpc__BadRequest__FieldViolation v = GOOGLE__RPC__BAD_REQUEST__FIELD_VIOLATION__INIT;
    Google__Rpc__BadRequest__FieldViolation *vs[1] = {&v};
    Google__Rpc__BadRequest bad = GOOGLE__RPC__BAD_REQUEST__INIT;
    v.field = field;
    v.description = (char *)problem;
    bad.n_field_violations = 1;
    bad.field_violations = vs;
    fail |= eg_add_detail(any, list, &n, &bad.base, urls[n], sizeof urls[n]);
  }

  int retry_ms = own_retry_ms > 0 ? own_retry_ms : eg_status_retry_ms(code, e);
  if (retry_ms > 0) {
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    Google__Rpc__RetryInfo retry = GOOGLE__RPC__RETRY_INFO__INIT;
    d.seconds = retry_ms / 1000;
    d.nanos = (retry_ms % 1000) * 1000000;
    retry.retry_delay = &d;
    fail |= eg_add_detail(any, list, &n, &retry.base, urls[n], sizeof urls[n]);
  }

  Google__Rpc__RequestInfo req = GOOGLE__RPC__REQUEST_INFO__INIT;
  req.request_id = (char *)request_id;
  fail |= eg_add_detail(any, list, &n, &req.base, urls[n], sizeof urls[n]);

  if (!fail) {
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    st.code = code;
    st.message = (char *)msg;
    st.n_details = n;
    st.details = list;
    out = grpc_slice_malloc(google__rpc__status__get_packed_size(&st));
    google__rpc__status__pack(&st, GRPC_SLICE_START_PTR(out));
  }
  for (size_t i = 0; i < n; i++) free(any[i].value.data);
  free(field);
  return out;
}

grpc_slice eg_status_details_relay(const grpc_slice *primary, int code, eg_err e, const char *msg,
                                   const char *request_id) {
  Google__Rpc__Status *st =
      primary ? google__rpc__status__unpack(NULL, GRPC_SLICE_LENGTH(*primary),
                                            GRPC_SLICE_START_PTR(*primary))
              : NULL;
  grpc_slice out;
  if (!st || st->code != code) {
    out = eg_status_details(code, e, msg, request_id);
  } else if (strcmp(st->message, msg) == 0) {
    out = grpc_slice_ref(*primary);
  } else {
    /* Unpacked strings are the unpacker's; the message is swapped back
     * before the free. */
    char *theirs = st->message;
    st->message = (char *)msg;
    out = grpc_slice_malloc(google__rpc__status__get_packed_size(st));
    google__rpc__status__pack(st, GRPC_SLICE_START_PTR(out));
    st->message = theirs;
  }
  if (st) google__rpc__status__free_unpacked(st, NULL);
  return out;
}
