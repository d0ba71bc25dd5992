/* server/validate.c: UTF-8, the field paths of eg_validate_utf8, ids. */
#include <CUnit/CUnit.h>
#include <string.h>

#include "engram/v1/session.pb-c.h"
#include "server/validate.h"
#include "suites.h"

typedef struct {
  const char *bytes;
  size_t len;
} eg_bytes;

#define B(s) {s, sizeof(s) - 1}

static void test_utf8_valid(void) {
  static const eg_bytes good[] = {
      B(""),
      B("plain ascii"),
      B("\xC3\xA9"),            /* U+00E9 */
      B("\xDF\xBF"),            /* U+07FF, last 2-byte */
      B("\xE0\xA0\x80"),        /* U+0800, first 3-byte */
      B("\xE2\x82\xAC"),        /* U+20AC */
      B("\xED\x9F\xBF"),        /* U+D7FF, just below the surrogates */
      B("\xEE\x80\x80"),        /* U+E000, just above them */
      B("\xEF\xBF\xBF"),        /* U+FFFF */
      B("\xF0\x90\x80\x80"),    /* U+10000, first 4-byte */
      B("\xF0\x9D\x84\x9E"),    /* U+1D11E */
      B("\xF4\x8F\xBF\xBF"),    /* U+10FFFF, the last code point */
      B("a\0b"),                /* NUL is a character like any other */
      B("mixed \xC3\xA9\xE2\x82\xAC\xF0\x9D\x84\x9E end"),
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
    CU_ASSERT_TRUE(eg_utf8_valid(good[i].bytes, good[i].len));
}

static void test_utf8_invalid(void) {
  static const eg_bytes bad[] = {
      B("\xC0\xAF"),             /* overlong '/' */
      B("\xC1\xBF"),             /* overlong U+007F */
      B("\xE0\x80\xAF"),         /* overlong '/' in 3 bytes */
      B("\xE0\x9F\xBF"),         /* overlong U+07FF */
      B("\xF0\x80\x80\xAF"),     /* overlong '/' in 4 bytes */
      B("\xF0\x8F\xBF\xBF"),     /* overlong U+FFFF */
      B("\xED\xA0\x80"),         /* U+D800, high surrogate */
      B("\xED\xBF\xBF"),         /* U+DFFF, low surrogate */
      B("\xF4\x90\x80\x80"),     /* U+110000 */
      B("\xF5\x80\x80\x80"),     /* lead byte past U+10FFFF */
      B("\xFF"),
      B("\x80"),                 /* lone continuation */
      B("a\xBF"),
      B("\xC3"),                 /* truncated 2-byte */
      B("\xE2\x82"),             /* truncated 3-byte */
      B("\xF0\x9D\x84"),         /* truncated 4-byte */
      B("\xE2\x82" "A"),         /* truncated, then ASCII */
      B("\xE2\x28\xA1"),         /* bad continuation */
      B("\xF0\x9D\x84\x1E"),     /* bad last continuation */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CU_ASSERT_FALSE(eg_utf8_valid(bad[i].bytes, bad[i].len));
  /* The length bounds the walk: a sequence cut by len is truncated. */
  CU_ASSERT_FALSE(eg_utf8_valid("\xE2\x82\xAC", 2));
}

/* An AppendMessagesRequest of three messages, the second with two
 * metadata entries; tests spoil one string and expect its path. */
typedef struct {
  Engram__V1__AppendMessagesRequest req;
  Engram__V1__Message msgs[3];
  Engram__V1__Message *msg_ptrs[3];
  Engram__V1__Message__MetadataEntry meta[2];
  Engram__V1__Message__MetadataEntry *meta_ptrs[2];
} eg_append_fixture;

static void append_fixture(eg_append_fixture *f) {
  engram__v1__append_messages_request__init(&f->req);
  f->req.session_id = "s1";
  for (int i = 0; i < 3; i++) {
    engram__v1__message__init(&f->msgs[i]);
    f->msgs[i].content = "caf\xC3\xA9";
    f->msg_ptrs[i] = &f->msgs[i];
  }
  for (int i = 0; i < 2; i++) {
    engram__v1__message__metadata_entry__init(&f->meta[i]);
    f->meta[i].key = "k";
    f->meta[i].value = "\xE2\x82\xAC";
    f->meta_ptrs[i] = &f->meta[i];
  }
  f->msgs[1].n_metadata = 2;
  f->msgs[1].metadata = f->meta_ptrs;
  f->req.n_messages = 3;
  f->req.messages = f->msg_ptrs;
}

static void assert_bad_at(const ProtobufCMessage *m, const char *want) {
  char err[256] = "";
  CU_ASSERT_EQUAL(eg_validate_utf8(m, err, sizeof err), EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, want);
}

static void test_validate_paths(void) {
  eg_append_fixture f;
  char err[256] = "";
  append_fixture(&f);
  CU_ASSERT_EQUAL(eg_validate_utf8(&f.req.base, err, sizeof err), EG_OK);

  f.msgs[2].content = "bad \xC0\xAF";
  assert_bad_at(&f.req.base, "messages[2].content: not valid UTF-8");
  f.msgs[2].content = "ok";

  f.meta[1].value = "\xED\xA0\x80";
  assert_bad_at(&f.req.base, "messages[1].metadata[1].value: not valid UTF-8");
  f.meta[1].value = "ok";

  f.meta[0].key = "\xF4\x90\x80\x80";
  assert_bad_at(&f.req.base, "messages[1].metadata[0].key: not valid UTF-8");
  f.meta[0].key = "ok";

  f.msgs[0].client_message_id = "\xC3";
  assert_bad_at(&f.req.base, "messages[0].client_message_id: not valid UTF-8");
  f.msgs[0].client_message_id = "";

  f.req.session_id = "\xFF";
  assert_bad_at(&f.req.base, "session_id: not valid UTF-8");
}

static void test_validate_nested_message(void) {
  Engram__V1__CreateSessionRequest req;
  Engram__V1__Session session;
  Engram__V1__Session__MetadataEntry entry, *entries[1] = {&entry};
  char err[256] = "";
  engram__v1__create_session_request__init(&req);
  /* An unset submessage is NULL and has nothing to check. */
  CU_ASSERT_EQUAL(eg_validate_utf8(&req.base, err, sizeof err), EG_OK);
  engram__v1__session__init(&session);
  engram__v1__session__metadata_entry__init(&entry);
  entry.key = "topic";
  entry.value = "\xE0\x80\xAF";
  session.n_metadata = 1;
  session.metadata = entries;
  req.session = &session;
  assert_bad_at(&req.base, "session.metadata[0].value: not valid UTF-8");
}

/* protobuf-c unpacks invalid UTF-8 without complaint: the walk is what
 * catches it in a request off the wire. */
static void test_validate_after_unpack(void) {
  eg_append_fixture f;
  uint8_t buf[512];
  append_fixture(&f);
  f.msgs[2].content = "\xED\xBF\xBF";
  CU_ASSERT_FATAL(protobuf_c_message_get_packed_size(&f.req.base) <= sizeof buf);
  size_t len = protobuf_c_message_pack(&f.req.base, buf);
  Engram__V1__AppendMessagesRequest *req =
      engram__v1__append_messages_request__unpack(NULL, len, buf);
  CU_ASSERT_PTR_NOT_NULL_FATAL(req);
  assert_bad_at(&req->base, "messages[2].content: not valid UTF-8");
  engram__v1__append_messages_request__free_unpacked(req, NULL);
}

static void test_validate_id(void) {
  char err[256] = "", id[EG_ID_MAX + 2];
  CU_ASSERT_EQUAL(eg_validate_id("session_id", "", 1, err, sizeof err), EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "session_id: required");
  CU_ASSERT_EQUAL(eg_validate_id("session_id", "", 0, err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(eg_validate_id("user_id", "AZaz09._:-", 1, err, sizeof err), EG_OK);
  memset(id, 'a', EG_ID_MAX);
  id[EG_ID_MAX] = '\0';
  CU_ASSERT_EQUAL(eg_validate_id("user_id", id, 1, err, sizeof err), EG_OK);
  id[EG_ID_MAX] = 'a';
  id[EG_ID_MAX + 1] = '\0';
  CU_ASSERT_EQUAL(eg_validate_id("user_id", id, 1, err, sizeof err), EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "user_id: longer than 128 bytes");
  static const char *const bad[] = {"a b", "a/b", "caf\xC3\xA9", "a\nb", "x+y"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CU_ASSERT_EQUAL(eg_validate_id("agent_id", bad[i], 0, err, sizeof err), EG_EINVAL);
  eg_validate_id("agent_id", "ab cd", 1, err, sizeof err);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "agent_id: character at offset 2"));
}

static void test_invalid_formats(void) {
  char err[64], tiny[8];
  CU_ASSERT_EQUAL(eg_invalid(err, sizeof err, "page_size", "must not be negative (%d)", -3),
                  EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "page_size: must not be negative (-3)");
  /* Truncated, still terminated. */
  CU_ASSERT_EQUAL(eg_invalid(tiny, sizeof tiny, "page_size", "x"), EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(tiny, "page_si");
}

void eg_test_register_validate(void) {
  CU_pSuite s = CU_add_suite("validate", NULL, NULL);
  CU_add_test(s, "utf8 valid", test_utf8_valid);
  CU_add_test(s, "utf8 invalid", test_utf8_invalid);
  CU_add_test(s, "validate paths", test_validate_paths);
  CU_add_test(s, "validate nested message", test_validate_nested_message);
  CU_add_test(s, "validate after unpack", test_validate_after_unpack);
  CU_add_test(s, "validate id", test_validate_id);
  CU_add_test(s, "invalid formats", test_invalid_formats);
}
