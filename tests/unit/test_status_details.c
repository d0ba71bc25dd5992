/* status_details: the house-form message parser behind BadRequest, the
 * reason and retry columns of the error table, request ids, and the
 * google.rpc.Status they make (unpacked back with protobuf-c). */
#include <CUnit/CUnit.h>
#include <string.h>

#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "server/call.h"
#include "server/status_details.h"
#include "suites.h"

/* 1 if msg parses, with the path and problem it gives in path/problem. */
static int parse(const char *msg, char *path, const char **problem) {
  size_t n = 0;
  if (!eg_bad_request_parse(msg, &n, problem)) return 0;
  memcpy(path, msg, n);
  path[n] = '\0';
  return 1;
}

static void test_parse_edges(void) {
  char path[256];
  const char *problem = NULL;
  CU_ASSERT_TRUE(parse("session_id: must not be empty", path, &problem));
  CU_ASSERT_STRING_EQUAL(path, "session_id");
  CU_ASSERT_STRING_EQUAL(problem, "must not be empty");
  /* No colon: not the house form. */
  CU_ASSERT_FALSE(parse("invalid argument", path, &problem));
  /* A colon inside the problem: the path ends at the first. */
  CU_ASSERT_TRUE(parse("page_token: bad token: it was issued for other filters", path, &problem));
  CU_ASSERT_STRING_EQUAL(path, "page_token");
  CU_ASSERT_STRING_EQUAL(problem, "bad token: it was issued for other filters");
  /* Indexes and dots. */
  CU_ASSERT_TRUE(parse("messages[12].metadata.key: too long", path, &problem));
  CU_ASSERT_STRING_EQUAL(path, "messages[12].metadata.key");
  CU_ASSERT_TRUE(parse("memory.tags[0]: empty", path, &problem));
  CU_ASSERT_STRING_EQUAL(path, "memory.tags[0]");
  /* Not paths: a header name, a flag, an empty index, a trailing dot,
   * the whole request, no space after the colon, nothing after it. */
  CU_ASSERT_FALSE(parse("engram-min-lsn: not a number", path, &problem));
  CU_ASSERT_FALSE(parse("--listen: cannot bind", path, &problem));
  CU_ASSERT_FALSE(parse("messages[].content: x", path, &problem));
  CU_ASSERT_FALSE(parse("session.: x", path, &problem));
  CU_ASSERT_FALSE(parse("request: malformed protobuf", path, &problem));
  CU_ASSERT_FALSE(parse("session_id:x", path, &problem));
  CU_ASSERT_FALSE(parse("session_id: ", path, &problem));
  CU_ASSERT_FALSE(parse("", path, &problem));
  CU_ASSERT_FALSE(parse("Session_id: capital", path, &problem));
  /* A long message: the problem is the whole rest. */
  char msg[600];
  memset(msg, 'x', sizeof msg - 1);
  msg[sizeof msg - 1] = '\0';
  memcpy(msg, "content: ", 9);
  CU_ASSERT_TRUE(parse(msg, path, &problem));
  CU_ASSERT_STRING_EQUAL(path, "content");
  CU_ASSERT_EQUAL(strlen(problem), sizeof msg - 1 - 9);
}

/* Every row has an UPPER_SNAKE reason; the delays follow the contract:
 * retry where it helps, never for a quota or a size limit. */
static void test_reason_table(void) {
  for (int e = EG_OK; e <= EG_ECANCELLED; e++) {
    const char *r = eg_err_reason((eg_err)e);
    CU_ASSERT_TRUE(r[0] != '\0' && strspn(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") == strlen(r));
    if (eg_err_grpc_code((eg_err)e) == 14) CU_ASSERT_TRUE(eg_err_retry_ms((eg_err)e) > 0);
  }
  CU_ASSERT_STRING_EQUAL(eg_err_reason(EG_ENOTFOUND), "NOT_FOUND");
  CU_ASSERT_STRING_EQUAL(eg_err_reason(EG_EQUOTA), "QUOTA_EXCEEDED");
  CU_ASSERT_STRING_EQUAL(eg_err_reason(EG_ECORRUPT), "DATA_CORRUPT");
  CU_ASSERT_EQUAL(eg_err_retry_ms(EG_EQUOTA), 0);
  CU_ASSERT_EQUAL(eg_err_retry_ms(EG_ELIMIT), 0);
  CU_ASSERT_EQUAL(eg_err_retry_ms(EG_ETXNFULL), 0);
  CU_ASSERT_TRUE(eg_err_retry_ms(EG_EBUSY) > 0);
  CU_ASSERT_TRUE(eg_err_retry_ms(EG_EREADERS) > 0);
  CU_ASSERT_TRUE(eg_err_retry_ms(EG_EMAPBUSY) > 0);
  /* A status that did not come from an eg_err: its code's name. */
  CU_ASSERT_STRING_EQUAL(eg_status_reason(4, EG_OK), "DEADLINE_EXCEEDED");
  CU_ASSERT_STRING_EQUAL(eg_status_reason(99, EG_OK), "UNKNOWN");
  CU_ASSERT_EQUAL(eg_status_retry_ms(14, EG_OK), eg_err_retry_ms(EG_EUNAVAIL));
  CU_ASSERT_EQUAL(eg_status_retry_ms(4, EG_OK), 0);
  /* An out-of-range value is reported as internal. */
  CU_ASSERT_STRING_EQUAL(eg_err_reason((eg_err)1000), "INTERNAL");
}

static void test_request_ids(void) {
  char a[EG_REQUEST_ID_MAX + 1], b[EG_REQUEST_ID_MAX + 1];
  eg_request_id_new(a);
  eg_request_id_new(b);
  CU_ASSERT_EQUAL(strlen(a), EG_REQUEST_ID_MAX);
  CU_ASSERT_EQUAL(strspn(a, "0123456789abcdef"), strlen(a));
  CU_ASSERT_STRING_NOT_EQUAL(a, b);
  CU_ASSERT_EQUAL(memcmp(a, b, 16), 0); /* one process, one prefix */
}

/* The Any detail of type name in st, unpacked with desc (the caller
 * frees it), or NULL. */
static ProtobufCMessage *detail(const Google__Rpc__Status *st, const char *name,
                                const ProtobufCMessageDescriptor *desc, size_t *at) {
  char url[128];
  snprintf(url, sizeof url, "type.googleapis.com/google.rpc.%s", name);
  for (size_t i = 0; i < st->n_details; i++)
    if (strcmp(st->details[i]->type_url, url) == 0) {
      *at = i;
      return protobuf_c_message_unpack(desc, NULL, st->details[i]->value.len,
                                       st->details[i]->value.data);
    }
  return NULL;
}

static Google__Rpc__Status *status_of(int code, eg_err e, const char *msg) {
  grpc_slice s = eg_status_details(code, e, msg, "00112233445566778899aabbccddeeff");
  Google__Rpc__Status *st =
      google__rpc__status__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
  grpc_slice_unref(s);
  return st;
}

static void test_status_invalid(void) {
  size_t at[3];
  Google__Rpc__Status *st = status_of(3, EG_EINVAL, "messages[2].content: longer than 10 bytes");
  CU_ASSERT_FATAL(st != NULL);
  CU_ASSERT_EQUAL(st->code, 3);
  CU_ASSERT_STRING_EQUAL(st->message, "messages[2].content: longer than 10 bytes");
  Google__Rpc__ErrorInfo *info =
      (Google__Rpc__ErrorInfo *)detail(st, "ErrorInfo", &google__rpc__error_info__descriptor, &at[0]);
  Google__Rpc__BadRequest *bad =
      (Google__Rpc__BadRequest *)detail(st, "BadRequest", &google__rpc__bad_request__descriptor, &at[1]);
  Google__Rpc__RequestInfo *req = (Google__Rpc__RequestInfo *)detail(
      st, "RequestInfo", &google__rpc__request_info__descriptor, &at[2]);
  size_t none;
  CU_ASSERT_PTR_NULL(detail(st, "RetryInfo", &google__rpc__retry_info__descriptor, &none));
  CU_ASSERT_FATAL(info && bad && req);
  CU_ASSERT_STRING_EQUAL(info->reason, "INVALID_ARGUMENT");
  CU_ASSERT_STRING_EQUAL(info->domain, "engram.v1");
  CU_ASSERT_EQUAL_FATAL(bad->n_field_violations, 1);
  CU_ASSERT_STRING_EQUAL(bad->field_violations[0]->field, "messages[2].content");
  CU_ASSERT_STRING_EQUAL(bad->field_violations[0]->description, "longer than 10 bytes");
  CU_ASSERT_STRING_EQUAL(req->request_id, "00112233445566778899aabbccddeeff");
  CU_ASSERT_TRUE(at[0] < at[1] && at[1] < at[2]); /* the contract's order */
  protobuf_c_message_free_unpacked(&info->base, NULL);
  protobuf_c_message_free_unpacked(&bad->base, NULL);
  protobuf_c_message_free_unpacked(&req->base, NULL);
  google__rpc__status__free_unpacked(st, NULL);
}

static void test_status_retry(void) {
  size_t at;
  Google__Rpc__Status *st = status_of(14, EG_ENOPRIMARY, "no primary: an election is in progress");
  CU_ASSERT_FATAL(st != NULL);
  Google__Rpc__RetryInfo *retry =
      (Google__Rpc__RetryInfo *)detail(st, "RetryInfo", &google__rpc__retry_info__descriptor, &at);
  CU_ASSERT_FATAL(retry && retry->retry_delay);
  CU_ASSERT_EQUAL(retry->retry_delay->seconds * 1000 + retry->retry_delay->nanos / 1000000,
                  eg_err_retry_ms(EG_ENOPRIMARY));
  /* "no primary: ..." is UNAVAILABLE, not a field violation. */
  CU_ASSERT_PTR_NULL(detail(st, "BadRequest", &google__rpc__bad_request__descriptor, &at));
  protobuf_c_message_free_unpacked(&retry->base, NULL);
  google__rpc__status__free_unpacked(st, NULL);
}

/* A call's own delay (a tenant's bucket) replaces the table's; 0 keeps it. */
static void test_status_own_retry(void) {
  size_t at;
  const int want[] = {1234, eg_err_retry_ms(EG_ERATE)};
  for (int i = 0; i < 2; i++) {
    grpc_slice s = eg_status_details_retry(8, EG_ERATE, "tenant acme: 5 calls/s exceeded",
                                           "00112233445566778899aabbccddeeff", i ? 0 : 1234);
    Google__Rpc__Status *st =
        google__rpc__status__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    CU_ASSERT_FATAL(st != NULL);
    Google__Rpc__RetryInfo *retry = (Google__Rpc__RetryInfo *)detail(
        st, "RetryInfo", &google__rpc__retry_info__descriptor, &at);
    CU_ASSERT_FATAL(retry && retry->retry_delay);
    CU_ASSERT_EQUAL(retry->retry_delay->seconds * 1000 + retry->retry_delay->nanos / 1000000,
                    want[i]);
    protobuf_c_message_free_unpacked(&retry->base, NULL);
    google__rpc__status__free_unpacked(st, NULL);
  }
}

#define PRIMARY_ID "0123456789abcdef0123456789abcdef"

/* The trailing entry key of c's error metadata (n entries), or NULL. */
static const grpc_slice *error_entry(const eg_call *c, size_t n, const char *key) {
  for (size_t i = 0; i < n; i++)
    if (grpc_slice_str_cmp(c->error_md[i].key, key) == 0) return &c->error_md[i].value;
  return NULL;
}

/* The Status and request id a replica sends for a forwarded write whose
 * primary answered UNAVAILABLE NO_PRIMARY with primary_msg, when the
 * replica replies code, e, sent. Checks the Status is the one sent
 * (code, message) and carries the primary's request id; returns its
 * ErrorInfo reason in reason. */
static void relay(const char *primary_msg, int code, eg_err e, const char *sent, char *reason) {
  eg_call c;
  memset(&c, 0, sizeof c);
  c.fwd.call = (grpc_call *)&c; /* only compared with NULL: a forwarded write */
  grpc_metadata md[2] = {
      {.key = grpc_slice_from_static_string("grpc-status-details-bin"),
       .value = eg_status_details(14, EG_ENOPRIMARY, primary_msg, PRIMARY_ID)},
      {.key = grpc_slice_from_static_string("engram-request-id"),
       .value = grpc_slice_from_static_string(PRIMARY_ID)}};
  c.fwd.trailing = (grpc_metadata_array){.count = 2, .capacity = 2, .metadata = md};
  size_t n = eg_error_metadata(&c, code, e, sent);
  const grpc_slice *bin = error_entry(&c, n, "grpc-status-details-bin");
  const grpc_slice *id = error_entry(&c, n, "engram-request-id");
  CU_ASSERT_FATAL(bin && id);
  CU_ASSERT_EQUAL(grpc_slice_str_cmp(*id, PRIMARY_ID), 0);
  Google__Rpc__Status *st =
      google__rpc__status__unpack(NULL, GRPC_SLICE_LENGTH(*bin), GRPC_SLICE_START_PTR(*bin));
  CU_ASSERT_FATAL(st != NULL);
  CU_ASSERT_EQUAL(st->code, code);
  CU_ASSERT_STRING_EQUAL(st->message, sent);
  size_t at;
  Google__Rpc__ErrorInfo *info =
      (Google__Rpc__ErrorInfo *)detail(st, "ErrorInfo", &google__rpc__error_info__descriptor, &at);
  Google__Rpc__RequestInfo *req = (Google__Rpc__RequestInfo *)detail(
      st, "RequestInfo", &google__rpc__request_info__descriptor, &at);
  CU_ASSERT_FATAL(info && req);
  CU_ASSERT_STRING_EQUAL(req->request_id, PRIMARY_ID);
  snprintf(reason, 64, "%s", info->reason);
  protobuf_c_message_free_unpacked(&info->base, NULL);
  protobuf_c_message_free_unpacked(&req->base, NULL);
  google__rpc__status__free_unpacked(st, NULL);
  for (size_t i = 0; i < 2; i++) {
    grpc_slice_unref(c.error_md[i].key);
    grpc_slice_unref(c.error_md[i].value);
  }
  grpc_slice_unref(md[0].value);
}

/* A forwarded write's relayed Status is the status the replica sends:
 * the primary's as it is when the replica sends its code and message;
 * repacked with the message sent when the replica cut it (the primary's
 * details kept); built afresh when the replica answers another code. */
static void test_status_relay(void) {
  char reason[64], long_msg[600], cut[512];
  relay("no primary: retry", 14, EG_OK, "no primary: retry", reason);
  CU_ASSERT_STRING_EQUAL(reason, "NO_PRIMARY");
  memset(long_msg, 'x', sizeof long_msg - 1);
  long_msg[sizeof long_msg - 1] = '\0';
  memcpy(cut, long_msg, sizeof cut - 1); /* as eg_forward_done cuts it */
  cut[sizeof cut - 1] = '\0';
  relay(long_msg, 14, EG_OK, cut, reason);
  CU_ASSERT_STRING_EQUAL(reason, "NO_PRIMARY");
  relay("no primary: retry", 8, EG_EBUSY, "server busy; retry", reason);
  CU_ASSERT_STRING_EQUAL(reason, "SERVER_BUSY");
}

void eg_test_register_status_details(void) {
  CU_pSuite s = CU_add_suite("status_details", NULL, NULL);
  CU_add_test(s, "BadRequest parser: no colon, colon in problem, [i] and dots, long", test_parse_edges);
  CU_add_test(s, "reason and retry columns", test_reason_table);
  CU_add_test(s, "request ids: 32 hex, unique, one prefix", test_request_ids);
  CU_add_test(s, "Status of an INVALID_ARGUMENT: ErrorInfo, BadRequest, RequestInfo", test_status_invalid);
  CU_add_test(s, "Status of an UNAVAILABLE: RetryInfo", test_status_retry);
  CU_add_test(s, "a call's own RetryInfo delay", test_status_own_retry);
  CU_add_test(s, "a forwarded write's Status is the one sent, with the primary's id", test_status_relay);
}
