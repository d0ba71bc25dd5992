/* page tokens: the hex codec, and the listings that read tokens refusing
 * one that is truncated, tampered with or of another kind (run in process
 * over a real store, through the method table as the transport calls it). */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "engram/v1/session.pb-c.h"
#include "server/config.h"
#include "server/page_token.h"
#include "server/service.h"
#include "suites.h"

/* ---- the codec ------------------------------------------------------------- */

static void test_round_trip(void) {
  eg_arena *a = eg_arena_new();
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  uint8_t in[64], out[64];
  for (size_t i = 0; i < sizeof in; i++) in[i] = (uint8_t)(i * 37 + 255);
  for (size_t n = 0; n <= sizeof in; n++) {
    const char *tok = eg_page_token(a, in, n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(tok);
    CU_ASSERT_EQUAL(strlen(tok), 2 * n);
    CU_ASSERT_EQUAL(strspn(tok, "0123456789abcdef"), 2 * n);
    size_t got = 99;
    CU_ASSERT_EQUAL(eg_page_token_parse(tok, out, n, &got), 0); /* cap exactly n */
    CU_ASSERT_EQUAL(got, n);
    CU_ASSERT(memcmp(in, out, n) == 0);
  }
  CU_ASSERT_STRING_EQUAL(eg_page_token(a, (const uint8_t *)"\x00\x0f\xf0\xff", 4), "000ff0ff");
  eg_arena_free(a);
}

static void test_parse_refuses(void) {
  uint8_t out[4];
  size_t n = 99;
  CU_ASSERT_EQUAL(eg_page_token_parse("0a0b0c0d0e", out, 4, &n), -1); /* over cap */
  CU_ASSERT_EQUAL(eg_page_token_parse("0a0b0", out, 4, &n), -1);      /* odd: cut mid-byte */
  CU_ASSERT_EQUAL(eg_page_token_parse("0A0B", out, 4, &n), -1);       /* not what we issue */
  CU_ASSERT_EQUAL(eg_page_token_parse("0g", out, 4, &n), -1);
  CU_ASSERT_EQUAL(eg_page_token_parse("0a 0", out, 4, &n), -1);
  CU_ASSERT_EQUAL(eg_page_token_parse("-1", out, 4, &n), -1);
  CU_ASSERT_EQUAL(n, 99); /* untouched on failure */
}

/* ---- the listings ---------------------------------------------------------- */

static char tdir[4096];
static eg_store *store;
static eg_config cfg;
static eg_srv srv;
static eg_txn *reader;

static void setup(void) {
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  eg_store_opts o = {0};
  char err[256] = "";
  store = NULL;
  reader = NULL;
  eg_config_defaults(&cfg);
  if (eg_store_open(tdir, &o, &store, err, sizeof err) != EG_OK) {
    fprintf(stderr, "eg_store_open: %s\n", err);
    return;
  }
  srv = (eg_srv){.cfg = &cfg, .store = store};
  if (eg_store_reader_new(store, &reader) != EG_OK) reader = NULL;
}

static void teardown(void) {
  eg_store_reader_free(reader);
  eg_store_close(store);
  eg_test_rmdir(tdir);
}

static const eg_method *method(const char *name) {
  char path[128];
  snprintf(path, sizeof path, "/engram.v1.SessionService/%s", name);
  for (const eg_method *m = eg_session_methods; m->path; m++)
    if (strcmp(m->path, path) == 0) return m;
  return NULL;
}

/* Runs a read method on in; its message goes to msg. */
static eg_err run_read(const char *name, const ProtobufCMessage *in, char *msg, size_t cap) {
  const eg_method *m = method(name);
  CU_ASSERT_PTR_NOT_NULL_FATAL(m);
  CU_ASSERT_PTR_NOT_NULL_FATAL(reader);
  eg_req r = {.srv = &srv, .tenant = "t", .arena = eg_arena_new(), .rtxn = reader};
  CU_ASSERT_PTR_NOT_NULL_FATAL(r.arena);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(reader), EG_OK);
  eg_err e = m->read(&r, in);
  eg_store_reader_end(reader);
  snprintf(msg, cap, "%s", r.msg);
  eg_arena_free(r.arena);
  return e;
}

static eg_err list_messages(const char *tok, int newest_first, char *msg, size_t cap) {
  Engram__V1__ListMessagesRequest in = ENGRAM__V1__LIST_MESSAGES_REQUEST__INIT;
  in.session_id = (char *)"s1";
  in.page_token = (char *)tok;
  in.newest_first = newest_first;
  return run_read("ListMessages", &in.base, msg, cap);
}

static eg_err list_sessions(const char *tok, char *msg, size_t cap) {
  Engram__V1__ListSessionsRequest in = ENGRAM__V1__LIST_SESSIONS_REQUEST__INIT;
  in.user_id = (char *)"u1";
  in.page_token = (char *)tok;
  return run_read("ListSessions", &in.base, msg, cap);
}

/* A message listing token: direction byte + seq, as ListMessages issues. */
static const char *msg_token(eg_arena *a, char dir, uint64_t seq) {
  uint8_t b[9] = {(uint8_t)dir};
  for (int i = 0; i < 8; i++) b[1 + i] = (uint8_t)(seq >> (56 - 8 * i));
  return eg_page_token(a, b, sizeof b);
}

#define ASSERT_BAD_TOKEN(e, msg)                                  \
  do {                                                            \
    CU_ASSERT_EQUAL(e, EG_EINVAL);                                \
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "page_token"));            \
  } while (0)

static void test_listing_refuses(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(store);
  eg_arena *a = eg_arena_new();
  char msg[256];
  const char *asc = msg_token(a, 'a', 7), *desc = msg_token(a, 'd', 7);

  /* well formed for its order: the token passes, the session is what is missing */
  CU_ASSERT_EQUAL(list_messages(asc, 0, msg, sizeof msg), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(list_messages(desc, 1, msg, sizeof msg), EG_ENOTFOUND);

  /* wrong kind: the other order's token, a session listing's token */
  ASSERT_BAD_TOKEN(list_messages(asc, 1, msg, sizeof msg), msg);
  ASSERT_BAD_TOKEN(list_messages(desc, 0, msg, sizeof msg), msg);
  uint8_t sess[12] = {0, 0, 0, 0, 0, 0, 0, 1, 's', 'i', 'd', '1'};
  ASSERT_BAD_TOKEN(list_messages(eg_page_token(a, sess, sizeof sess), 0, msg, sizeof msg), msg);
  ASSERT_BAD_TOKEN(list_sessions(asc, msg, sizeof msg), msg);

  /* truncated: cut mid-byte, or by whole bytes */
  char cut[32];
  snprintf(cut, sizeof cut, "%.*s", (int)strlen(asc) - 1, asc);
  ASSERT_BAD_TOKEN(list_messages(cut, 0, msg, sizeof msg), msg);
  snprintf(cut, sizeof cut, "%.*s", (int)strlen(asc) - 2, asc);
  ASSERT_BAD_TOKEN(list_messages(cut, 0, msg, sizeof msg), msg);
  ASSERT_BAD_TOKEN(list_sessions("00", msg, sizeof msg), msg);

  /* tampered: not what the server writes, or longer than any position */
  snprintf(cut, sizeof cut, "%s", asc);
  cut[3] = 'G';
  ASSERT_BAD_TOKEN(list_messages(cut, 0, msg, sizeof msg), msg);
  char longer[2 * EG_SESSION_CURSOR_MAX + 8];
  memset(longer, '0', sizeof longer - 1);
  longer[sizeof longer - 1] = '\0';
  ASSERT_BAD_TOKEN(list_sessions(longer, msg, sizeof msg), msg);
  ASSERT_BAD_TOKEN(list_messages(longer, 0, msg, sizeof msg), msg);
  eg_arena_free(a);
}

void eg_test_register_page_token(void) {
  CU_pSuite s = CU_add_suite_with_setup_and_teardown("page_token", NULL, NULL, setup, teardown);
  CU_add_test(s, "round trip", test_round_trip);
  CU_add_test(s, "parse refuses", test_parse_refuses);
  CU_add_test(s, "listings refuse truncated, tampered, wrong kind", test_listing_refuses);
}
