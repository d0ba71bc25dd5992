/* page tokens: sealed under the keyring's page subkey and bound to the
 * request (method, tenant, every field but page_size and page_token);
 * refused when garbled, truncated, of another tenant, method or request,
 * or sealed under a key no longer in the ring; accepted by another node
 * holding the same keys and after a rotation. The listings that read
 * tokens are driven in process over a real store, through the method
 * table as the transport calls it. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "engram/v1/memory.pb-c.h"
#include "engram/v1/session.pb-c.h"
#include "server/config.h"
#include "server/page_token.h"
#include "server/service.h"
#include "suites.h"

static char tdir[4096];
static eg_store *store;
static eg_config cfg;
static eg_srv srv;
static eg_txn *reader;
static eg_keyring *keys;

/* Test keys, in no deployment. */
#define KEY1 "key 1 " EG_TEST_KEY1 "\n"
#define KEY2 "key 2 " EG_TEST_KEY2 "\n"

static void setup(void) {
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  eg_store_opts o = {0};
  char err[256] = "";
  store = NULL;
  reader = NULL;
  eg_config_defaults(&cfg);
  CU_ASSERT_EQUAL_FATAL(eg_crypto_init(), EG_OK);
  keys = eg_test_keyring("primary 1\n" KEY1 KEY2);
  if (eg_store_open(tdir, &o, &store, err, sizeof err) != EG_OK) {
    fprintf(stderr, "eg_store_open: %s\n", err);
    return;
  }
  srv = (eg_srv){.cfg = &cfg, .store = store, .keys = keys};
  if (eg_store_reader_new(store, &reader) != EG_OK) reader = NULL;
}

static void teardown(void) {
  eg_store_reader_free(reader);
  eg_store_close(store);
  eg_keyring_free(keys);
  eg_test_rmdir(tdir);
}

/* ---- the module ------------------------------------------------------------ */

static eg_req req(const eg_srv *s, const char *tenant) {
  eg_req r = {.srv = s, .tenant = tenant, .arena = eg_arena_new()};
  CU_ASSERT_PTR_NOT_NULL_FATAL(r.arena);
  return r;
}

static Engram__V1__ListMessagesRequest lm_req(const char *sid, const char *tok) {
  Engram__V1__ListMessagesRequest in = ENGRAM__V1__LIST_MESSAGES_REQUEST__INIT;
  in.session_id = (char *)sid;
  in.page_token = (char *)tok;
  return in;
}

static const uint8_t POS[] = {'a', 0, 0, 0, 0, 0, 0, 0, 7};

/* Opens tok for in as tenant under s's keys: the eg_err, r.msg in msg. */
static eg_err open_as(const eg_srv *s, const char *tenant, const ProtobufCMessage *in, char *msg) {
  eg_req r = req(s, tenant);
  uint8_t pos[EG_PAGE_POS_MAX];
  size_t n = 0;
  eg_err e = eg_page_token_open(&r, in, pos, sizeof pos, &n);
  if (e == EG_OK) {
    CU_ASSERT_EQUAL(n, sizeof POS);
    CU_ASSERT(memcmp(pos, POS, sizeof POS) == 0);
  }
  snprintf(msg, 256, "%s", r.msg);
  eg_arena_free(r.arena);
  return e;
}

/* eg_page_token_seal's token, or NULL (its error checked by the caller's
 * assert on the token). */
static char *seal(eg_req *r, const ProtobufCMessage *in, const uint8_t *pos, size_t n) {
  char *tok = NULL;
  CU_ASSERT_EQUAL(eg_page_token_seal(r, in, pos, n, &tok), EG_OK);
  return tok;
}

/* A position too long for a token is a listing's bug: INTERNAL, not "out
 * of memory" (which a client would retry). */
static void test_seal_too_long(void) {
  eg_req r = req(&srv, "t");
  Engram__V1__ListMessagesRequest in = lm_req("s1", "");
  uint8_t pos[EG_PAGE_POS_MAX + 1] = {0};
  char *tok = (char *)"unset";
  CU_ASSERT_EQUAL(eg_page_token_seal(&r, &in.base, pos, sizeof pos, &tok), EG_EIO);
  CU_ASSERT_PTR_NULL(tok);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.msg, "more than the 256"));
  CU_ASSERT_EQUAL(eg_page_token_seal(&r, &in.base, pos, EG_PAGE_POS_MAX, &tok), EG_OK);
  CU_ASSERT_PTR_NOT_NULL(tok);
  eg_arena_free(r.arena);
}

#define ASSERT_BAD_TOKEN(e, msg)                                  \
  do {                                                            \
    CU_ASSERT_EQUAL(e, EG_EINVAL);                                \
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "page_token: "));          \
  } while (0)

static void test_seal_open(void) {
  eg_req r = req(&srv, "t");
  char msg[256];
  Engram__V1__ListMessagesRequest in = lm_req("s1", "");
  in.page_size = 10;
  const char *tok = seal(&r, &in.base, POS, sizeof POS);
  CU_ASSERT_PTR_NOT_NULL_FATAL(tok);
  CU_ASSERT(strlen(tok) <= EG_PAGE_TOKEN_MAX);
  /* url-safe base64, no padding: a client puts it anywhere as it is */
  CU_ASSERT_EQUAL(strspn(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                  strlen(tok));
  /* the position is not in the clear */
  CU_ASSERT_PTR_NULL(strstr(tok, "0000000000000007"));

  Engram__V1__ListMessagesRequest again = lm_req("s1", tok);
  CU_ASSERT_EQUAL(open_as(&srv, "t", &again.base, msg), EG_OK);
  again.page_size = 999; /* page_size is not bound */
  CU_ASSERT_EQUAL(open_as(&srv, "t", &again.base, msg), EG_OK);

  /* another filter or order, another tenant, another method */
  Engram__V1__ListMessagesRequest other = lm_req("s2", tok);
  ASSERT_BAD_TOKEN(open_as(&srv, "t", &other.base, msg), msg);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "other filters"));
  other = lm_req("s1", tok);
  other.newest_first = 1;
  ASSERT_BAD_TOKEN(open_as(&srv, "t", &other.base, msg), msg);
  ASSERT_BAD_TOKEN(open_as(&srv, "t2", &again.base, msg), msg);
  Engram__V1__ListSessionsRequest ls = ENGRAM__V1__LIST_SESSIONS_REQUEST__INIT;
  ls.page_token = (char *)tok;
  ASSERT_BAD_TOKEN(open_as(&srv, "t", &ls.base, msg), msg);
  eg_arena_free(r.arena);
}

static void test_garbled(void) {
  eg_req r = req(&srv, "t");
  char msg[256], bad[EG_PAGE_TOKEN_MAX + 8];
  Engram__V1__ListMessagesRequest in = lm_req("s1", "");
  const char *tok = seal(&r, &in.base, POS, sizeof POS);
  CU_ASSERT_PTR_NOT_NULL_FATAL(tok);
  size_t len = strlen(tok);
  Engram__V1__ListMessagesRequest use = lm_req("s1", bad);
  /* every character changed, one at a time */
  for (size_t i = 0; i < len; i++) {
    snprintf(bad, sizeof bad, "%s", tok);
    bad[i] = bad[i] == 'A' ? 'B' : 'A';
    ASSERT_BAD_TOKEN(open_as(&srv, "t", &use.base, msg), msg);
  }
  /* truncated at every length */
  for (size_t i = 1; i < len; i++) {
    snprintf(bad, sizeof bad, "%.*s", (int)i, tok);
    ASSERT_BAD_TOKEN(open_as(&srv, "t", &use.base, msg), msg);
  }
  /* the old hex form, characters base64url does not use, too long */
  snprintf(bad, sizeof bad, "6100000000000000 07");
  ASSERT_BAD_TOKEN(open_as(&srv, "t", &use.base, msg), msg);
  snprintf(bad, sizeof bad, "%s=", tok);
  ASSERT_BAD_TOKEN(open_as(&srv, "t", &use.base, msg), msg);
  memset(bad, 'A', EG_PAGE_TOKEN_MAX + 4);
  bad[EG_PAGE_TOKEN_MAX + 4] = '\0';
  ASSERT_BAD_TOKEN(open_as(&srv, "t", &use.base, msg), msg);
  eg_arena_free(r.arena);
}

/* Another node of the cluster loads the same keyring: it opens the
 * tokens; after a rotation (new primary key) old tokens open while their
 * key is in the ring, and not once it left. */
static void test_other_node_and_rotation(void) {
  eg_req r = req(&srv, "t");
  char msg[256];
  Engram__V1__ListMessagesRequest in = lm_req("s1", "");
  const char *tok = seal(&r, &in.base, POS, sizeof POS);
  CU_ASSERT_PTR_NOT_NULL_FATAL(tok);
  Engram__V1__ListMessagesRequest use = lm_req("s1", tok);

  eg_keyring *same = eg_test_keyring("primary 1\n" KEY1 KEY2);
  eg_keyring *rotated = eg_test_keyring("primary 2\n" KEY1 KEY2);
  eg_keyring *retired = eg_test_keyring("primary 2\n" KEY2);
  eg_keyring *stranger = eg_test_keyring("primary 1\nkey 1 "
                                         "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=\n");
  eg_srv node = srv;
  node.keys = same;
  CU_ASSERT_EQUAL(open_as(&node, "t", &use.base, msg), EG_OK);
  node.keys = rotated;
  CU_ASSERT_EQUAL(open_as(&node, "t", &use.base, msg), EG_OK);
  node.keys = retired;
  ASSERT_BAD_TOKEN(open_as(&node, "t", &use.base, msg), msg);
  node.keys = stranger; /* the same key id, another key */
  ASSERT_BAD_TOKEN(open_as(&node, "t", &use.base, msg), msg);
  eg_keyring_free(same);
  eg_keyring_free(rotated);
  eg_keyring_free(retired);
  eg_keyring_free(stranger);
  eg_arena_free(r.arena);
}

/* ---- the listings ---------------------------------------------------------- */

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

/* A message listing token as ListMessages issues it for session s1 in
 * tenant t: direction byte + seq. */
static const char *msg_token(eg_arena *a, int newest_first, uint64_t seq) {
  eg_req r = {.srv = &srv, .tenant = "t", .arena = a};
  Engram__V1__ListMessagesRequest in = lm_req("s1", "");
  in.newest_first = newest_first;
  uint8_t b[9] = {newest_first ? 'd' : 'a'};
  for (int i = 0; i < 8; i++) b[1 + i] = (uint8_t)(seq >> (56 - 8 * i));
  return seal(&r, &in.base, b, sizeof b);
}

static void test_listing_refuses(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(store);
  eg_arena *a = eg_arena_new();
  char msg[256];
  const char *asc = msg_token(a, 0, 7), *desc = msg_token(a, 1, 7);

  /* for its request: the token passes, the session is what is missing */
  CU_ASSERT_EQUAL(list_messages(asc, 0, msg, sizeof msg), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(list_messages(desc, 1, msg, sizeof msg), EG_ENOTFOUND);

  /* wrong kind: the other order's token, a message token for sessions */
  ASSERT_BAD_TOKEN(list_messages(asc, 1, msg, sizeof msg), msg);
  ASSERT_BAD_TOKEN(list_messages(desc, 0, msg, sizeof msg), msg);
  ASSERT_BAD_TOKEN(list_sessions(asc, msg, sizeof msg), msg);

  /* the former hex tokens are refused, not read as positions */
  ASSERT_BAD_TOKEN(list_messages("610000000000000007", 0, msg, sizeof msg), msg);
  ASSERT_BAD_TOKEN(list_sessions("00", msg, sizeof msg), msg);
  eg_arena_free(a);
}

/* A memory listing's token is bound to its filter and order. */
static void test_memory_listing_binds_filter(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(reader);
  eg_req r = req(&srv, "t");
  Engram__V1__ListMemoriesRequest in = ENGRAM__V1__LIST_MEMORIES_REQUEST__INIT;
  Engram__V1__MemoryFilter f = ENGRAM__V1__MEMORY_FILTER__INIT;
  in.user_id = (char *)"u1";
  uint8_t pos[10] = {'n', 0, 0, 0, 0, 0, 0, 0, 1, 'm'};
  in.page_token = seal(&r, &in.base, pos, sizeof pos);
  CU_ASSERT_PTR_NOT_NULL_FATAL(in.page_token);
  const eg_method *m = NULL;
  for (const eg_method *x = eg_memory_methods; x->path; x++)
    if (strstr(x->path, "/ListMemories")) m = x;
  CU_ASSERT_PTR_NOT_NULL_FATAL(m);
  eg_req call = {.srv = &srv, .tenant = "t", .arena = r.arena, .rtxn = reader};
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(reader), EG_OK);
  CU_ASSERT_EQUAL(m->read(&call, &in.base), EG_OK);
  f.category = (char *)"work";
  in.filter = &f;
  ASSERT_BAD_TOKEN(m->read(&call, &in.base), call.msg);
  in.filter = NULL;
  in.order_by = ENGRAM__V1__MEMORY_ORDER__MEMORY_ORDER_IMPORTANCE;
  ASSERT_BAD_TOKEN(m->read(&call, &in.base), call.msg);
  eg_store_reader_end(reader);
  eg_arena_free(r.arena);
}

void eg_test_register_page_token(void) {
  CU_pSuite s = CU_add_suite_with_setup_and_teardown("page_token", NULL, NULL, setup, teardown);
  CU_add_test(s, "seal, open, bound to the request", test_seal_open);
  CU_add_test(s, "a position too long is INTERNAL, not out of memory", test_seal_too_long);
  CU_add_test(s, "garbled, truncated, too long", test_garbled);
  CU_add_test(s, "another node, key rotation", test_other_node_and_rotation);
  CU_add_test(s, "listings refuse another kind", test_listing_refuses);
  CU_add_test(s, "memory listing binds filter and order", test_memory_listing_binds_filter);
}
