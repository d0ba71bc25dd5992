/* server/validate.c: UTF-8, the wire walk of eg_validate_wire, ids. */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engram/v1/memory.pb-c.h"
#include "engram/v1/session.pb-c.h"
#include "server/config.h"
#include "storage/memories.h"
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

static size_t pack(const ProtobufCMessage *m, uint8_t *buf, size_t cap) {
  CU_ASSERT_FATAL(protobuf_c_message_get_packed_size(m) <= cap);
  return protobuf_c_message_pack(m, buf);
}

/* Overwrites the first `from` in buf[0..len) with `to`, of the same length:
 * how a test puts into a packed request what protobuf-c will not pack, as
 * it stops a string at its first NUL. */
static void replace(uint8_t *buf, size_t len, const char *from, eg_bytes to) {
  size_t n = strlen(from);
  CU_ASSERT_EQUAL_FATAL(n, to.len);
  for (size_t i = 0; i + n <= len; i++)
    if (memcmp(buf + i, from, n) == 0) {
      memcpy(buf + i, to.bytes, n);
      return;
    }
  CU_FAIL_FATAL("marker not in the packed bytes");
}

static void assert_wire_ok(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len) {
  char err[256] = "";
  CU_ASSERT_EQUAL(eg_validate_wire(d, buf, len, err, sizeof err), EG_OK);
  CU_ASSERT_STRING_EQUAL(err, "");
}

static void assert_wire_bad(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len,
                            const char *want) {
  char err[256] = "";
  CU_ASSERT_EQUAL(eg_validate_wire(d, buf, len, err, sizeof err), EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, want);
}

/* Packs the fixture with the marker `from` set somewhere, puts `to` in its
 * place on the wire and expects the error want. */
static void assert_append_bad(eg_append_fixture *f, const char *from, eg_bytes to,
                              const char *want) {
  uint8_t buf[512];
  size_t len = pack(&f->req.base, buf, sizeof buf);
  replace(buf, len, from, to);
  assert_wire_bad(&engram__v1__append_messages_request__descriptor, buf, len, want);
}

static void test_wire_valid(void) {
  eg_append_fixture f;
  uint8_t buf[512];
  append_fixture(&f);
  f.msgs[0].content = "mixed \xC3\xA9\xE2\x82\xAC\xF0\x9D\x84\x9E\xF4\x8F\xBF\xBF end";
  f.meta[0].key = "\xF0\x9F\x94\x91";
  size_t len = pack(&f.req.base, buf, sizeof buf);
  assert_wire_ok(&engram__v1__append_messages_request__descriptor, buf, len);
  /* The empty message is a valid request of any type. */
  assert_wire_ok(&engram__v1__append_messages_request__descriptor, NULL, 0);
}

static void test_wire_nul(void) {
  eg_append_fixture f;
  append_fixture(&f);
  f.req.session_id = "s@1";
  assert_append_bad(&f, "s@1", (eg_bytes)B("s\0" "1"), "session_id: contains a NUL byte");
  f.req.session_id = "s1";

  f.msgs[2].content = "nul@inside";
  assert_append_bad(&f, "nul@inside", (eg_bytes)B("nul\0inside"),
                    "messages[2].content: contains a NUL byte");
  f.msgs[2].content = "ok";

  f.meta[0].key = "k@z";
  assert_append_bad(&f, "k@z", (eg_bytes)B("k\0z"),
                    "messages[1].metadata[0].key: contains a NUL byte");
  f.meta[0].key = "k";

  f.meta[1].value = "v@w";
  assert_append_bad(&f, "v@w", (eg_bytes)B("v\0w"),
                    "messages[1].metadata[1].value: contains a NUL byte");
  f.meta[1].value = "v";

  /* A NUL as the string's last byte, or its only one. */
  f.msgs[0].client_message_id = "@";
  assert_append_bad(&f, "@", (eg_bytes)B("\0"),
                    "messages[0].client_message_id: contains a NUL byte");
}

/* What the check prevents: unpacked, the string ends at the NUL. */
static void test_wire_nul_is_cut_by_unpack(void) {
  eg_append_fixture f;
  uint8_t buf[512];
  append_fixture(&f);
  f.msgs[2].content = "nul@inside";
  size_t len = pack(&f.req.base, buf, sizeof buf);
  replace(buf, len, "nul@inside", (eg_bytes)B("nul\0inside"));
  Engram__V1__AppendMessagesRequest *req =
      engram__v1__append_messages_request__unpack(NULL, len, buf);
  CU_ASSERT_PTR_NOT_NULL_FATAL(req);
  CU_ASSERT_STRING_EQUAL(req->messages[2]->content, "nul");
  engram__v1__append_messages_request__free_unpacked(req, NULL);
}

static void test_wire_utf8(void) {
  eg_append_fixture f;
  append_fixture(&f);
  f.req.session_id = "s\xFF";
  assert_append_bad(&f, "s\xFF", (eg_bytes)B("s\xFF"), "session_id: not valid UTF-8");
  f.req.session_id = "s1";

  f.msgs[2].content = "bad \xC0\xAF";
  assert_append_bad(&f, "bad", (eg_bytes)B("bad"), "messages[2].content: not valid UTF-8");
  f.msgs[2].content = "ok";

  f.meta[0].key = "\xF4\x90\x80\x80";
  assert_append_bad(&f, "\xF4", (eg_bytes)B("\xF4"),
                    "messages[1].metadata[0].key: not valid UTF-8");
  f.meta[0].key = "k";

  f.meta[1].value = "\xED\xA0\x80";
  assert_append_bad(&f, "\xED", (eg_bytes)B("\xED"),
                    "messages[1].metadata[1].value: not valid UTF-8");
  f.meta[1].value = "v";

  /* Cut short by the field's length, not by a NUL. */
  f.msgs[0].client_message_id = "\xE2\x82";
  assert_append_bad(&f, "\xE2\x82", (eg_bytes)B("\xE2\x82"),
                    "messages[0].client_message_id: not valid UTF-8");
}

static void test_wire_nested_message(void) {
  Engram__V1__CreateSessionRequest req;
  Engram__V1__Session session;
  Engram__V1__Session__MetadataEntry entry, *entries[1] = {&entry};
  uint8_t buf[256];
  engram__v1__create_session_request__init(&req);
  engram__v1__session__init(&session);
  engram__v1__session__metadata_entry__init(&entry);
  entry.key = "topic";
  entry.value = "a@b";
  session.n_metadata = 1;
  session.metadata = entries;
  req.session = &session;
  size_t len = pack(&req.base, buf, sizeof buf);
  assert_wire_ok(&engram__v1__create_session_request__descriptor, buf, len);
  replace(buf, len, "a@b", (eg_bytes)B("a\0b"));
  assert_wire_bad(&engram__v1__create_session_request__descriptor, buf, len,
                  "session.metadata[0].value: contains a NUL byte");
  len = pack(&req.base, buf, sizeof buf);
  replace(buf, len, "a@b", (eg_bytes)B("a\xE0\x80"));
  assert_wire_bad(&engram__v1__create_session_request__descriptor, buf, len,
                  "session.metadata[0].value: not valid UTF-8");

  Engram__V1__UpdateSummaryRequest up;
  engram__v1__update_summary_request__init(&up);
  up.session_id = "s1";
  up.summary = "sum@mary";
  len = pack(&up.base, buf, sizeof buf);
  replace(buf, len, "sum@mary", (eg_bytes)B("sum\0mary"));
  assert_wire_bad(&engram__v1__update_summary_request__descriptor, buf, len,
                  "summary: contains a NUL byte");
}

/* Fields the schema does not know are skipped whatever their bytes, and
 * a repeated value's index counts only the values of its own field. */
static void test_wire_unknown_and_index(void) {
  static const uint8_t unknown[] = {
      0x98, 0x06, 0x96, 0x01,                         /* 99: varint 150 */
      0xA1, 0x06, 0, 0, 0, 0, 0, 0, 0, 0,             /* 100: fixed64 */
      0xAD, 0x06, 0xFF, 0xFF, 0xFF, 0xFF,             /* 101: fixed32 */
      0xB2, 0x06, 0x03, 0x00, 0xFF, 0xC0,             /* 102: "\0\xFF\xC0" */
      0x12, 0x0B,                                     /* messages[0] */
      0x22, 0x02, 'o', 'k',                           /*   content */
      0xB2, 0x06, 0x02, 0x00, 0xFF,                   /*   102: "\0\xFF" */
      0x30, 0x07,                                     /*   token_count */
      0x0A, 0x01, 's',                                /* session_id */
      0x12, 0x04, 0x22, 0x02, 'o', 'k',               /* messages[1] */
  };
  uint8_t buf[sizeof unknown + 4];
  const ProtobufCMessageDescriptor *d = &engram__v1__append_messages_request__descriptor;
  assert_wire_ok(d, unknown, sizeof unknown);
  Engram__V1__AppendMessagesRequest *req =
      engram__v1__append_messages_request__unpack(NULL, sizeof unknown, unknown);
  CU_ASSERT_PTR_NOT_NULL_FATAL(req);
  CU_ASSERT_EQUAL(req->n_messages, 2);
  engram__v1__append_messages_request__free_unpacked(req, NULL);

  memcpy(buf, unknown, sizeof unknown);
  memcpy(buf + sizeof unknown, (const uint8_t[]){0x12, 0x02, 0x22, 0x00}, 4);
  assert_wire_ok(d, buf, sizeof buf);
  buf[sizeof unknown - 1] = 0xFF; /* messages[1].content = "o\xFF" */
  assert_wire_bad(d, buf, sizeof buf, "messages[1].content: not valid UTF-8");
}

static void test_wire_malformed(void) {
  static const struct {
    const char *what;
    uint8_t bytes[16];
    size_t len;
  } bad[] = {
      {"truncated tag", {0x80}, 1},
      {"truncated varint", {0x78, 0x80}, 2},
      {"varint past 10 bytes", {0x78, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                0xFF, 0x01}, 12},
      {"length past the end", {0x0A, 0x05, 'a'}, 3},
      {"length near 2^64", {0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01,
                            'a'}, 12},
      {"length past the nested message", {0x12, 0x03, 0x22, 0x05, 'a', 'b', 'c', 'd', 'e'}, 9},
      {"truncated fixed64", {0x79, 1, 2, 3, 4, 5, 6, 7}, 8},
      {"truncated fixed32", {0x7D, 1, 2, 3}, 4},
      {"wire type 3 (group start)", {0x7B}, 1},
      {"wire type 4 (group end)", {0x7C}, 1},
      {"wire type 6", {0x7E, 0x00}, 2},
      {"wire type 7", {0x7F, 0x00}, 2},
      {"field number 0", {0x02, 0x00}, 2},
      {"field number 2^29", {0x80, 0x80, 0x80, 0x80, 0x10, 0x00}, 6},
      {"string sent as a varint", {0x08, 0x01}, 2},
      {"message sent as fixed32", {0x15, 0, 0, 0, 0}, 5},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char err[256] = "";
    eg_err rc = eg_validate_wire(&engram__v1__append_messages_request__descriptor, bad[i].bytes,
                                 bad[i].len, err, sizeof err);
    if (rc != EG_EINVAL || strcmp(err, "request: malformed protobuf") != 0)
      fprintf(stderr, "\n  accepted or misreported: %s (%s)\n", bad[i].what, err);
    CU_ASSERT_EQUAL(rc, EG_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "request: malformed protobuf");
  }
}

/* message Nest { Nest child = 1; string name = 2; bytes blob = 3; }: no
 * engram message contains itself, so the depth bound is tested on this. */
static const ProtobufCMessageDescriptor nest_desc;
static const ProtobufCFieldDescriptor nest_fields[] = {
    {.name = "child", .id = 1, .label = PROTOBUF_C_LABEL_NONE, .type = PROTOBUF_C_TYPE_MESSAGE,
     .descriptor = &nest_desc},
    {.name = "name", .id = 2, .label = PROTOBUF_C_LABEL_NONE, .type = PROTOBUF_C_TYPE_STRING},
    {.name = "blob", .id = 3, .label = PROTOBUF_C_LABEL_NONE, .type = PROTOBUF_C_TYPE_BYTES},
};
static const unsigned nest_by_name[] = {2, 0, 1};
static const ProtobufCIntRange nest_ranges[] = {{1, 0}, {0, 3}};
static const ProtobufCMessageDescriptor nest_desc = {
    .magic = PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
    .name = "test.Nest",
    .short_name = "Nest",
    .c_name = "Test__Nest",
    .package_name = "test",
    .n_fields = 3,
    .fields = nest_fields,
    .fields_sorted_by_name = nest_by_name,
    .n_field_ranges = 1,
    .field_ranges = nest_ranges,
};

/* Writes `depth` Nests, each the child of the one before, around the
 * innermost's fields inner[0..n) into buf; returns the length. */
static size_t nest(int depth, const uint8_t *inner, size_t n, uint8_t *buf, size_t cap) {
  CU_ASSERT_FATAL(n + 2 * (size_t)depth <= cap && n + 2 * (size_t)depth < 128);
  size_t start = cap - n;
  if (n > 0) memcpy(buf + start, inner, n); /* inner may be NULL when n is 0 */
  for (int i = 0; i < depth; i++) {
    size_t child_len = cap - start;
    buf[--start] = (uint8_t)child_len;
    buf[--start] = 0x0A;
  }
  memmove(buf, buf + start, cap - start);
  return cap - start;
}

static void test_wire_depth(void) {
  static const uint8_t bad_name[] = {0x12, 0x01, 0xFF};
  static const uint8_t blob[] = {0x1A, 0x03, 0x00, 0xFF, 0xC0};
  uint8_t buf[100];
  char want[256] = "";
  size_t len = nest(EG_WIRE_DEPTH_MAX, blob, sizeof blob, buf, sizeof buf);
  assert_wire_ok(&nest_desc, buf, len); /* bytes may hold anything */
  len = nest(EG_WIRE_DEPTH_MAX, bad_name, sizeof bad_name, buf, sizeof buf);
  for (int i = 0; i < EG_WIRE_DEPTH_MAX; i++) strcat(want, "child.");
  strcat(want, "name: not valid UTF-8");
  assert_wire_bad(&nest_desc, buf, len, want);
  len = nest(EG_WIRE_DEPTH_MAX + 1, NULL, 0, buf, sizeof buf);
  assert_wire_bad(&nest_desc, buf, len, "request: nested too deeply");
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

/* Packs m into a malloc'd buffer (*len bytes). */
static uint8_t *pack_alloc(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(*len ? *len : 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
  protobuf_c_message_pack(m, buf);
  return buf;
}

/* Packs m and checks it on the wire; want NULL: accepted, else refused
 * with the message want. */
static void check_packed(const ProtobufCMessage *m, const char *want) {
  size_t len;
  uint8_t *buf = pack_alloc(m, &len);
  if (want)
    assert_wire_bad(m->descriptor, buf, len, want);
  else
    assert_wire_ok(m->descriptor, buf, len);
  free(buf);
}

/* The len bytes at one twice over, in a malloc'd buffer: every field
 * given a second time. */
static uint8_t *doubled(const uint8_t *one, size_t len) {
  uint8_t *two = malloc(2 * len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(two);
  memcpy(two, one, len);
  memcpy(two + len, one, len);
  return two;
}

/* A CreateMemoryRequest with n tags and dim embedding values, checked on
 * the wire; want NULL: accepted. */
static void check_memory(size_t n, size_t dim, const char *want) {
  Engram__V1__Memory m = ENGRAM__V1__MEMORY__INIT;
  Engram__V1__CreateMemoryRequest req = ENGRAM__V1__CREATE_MEMORY_REQUEST__INIT;
  char **tags = calloc(n ? n : 1, sizeof *tags);
  float *vec = calloc(dim ? dim : 1, sizeof *vec);
  CU_ASSERT_PTR_NOT_NULL_FATAL(tags);
  CU_ASSERT_PTR_NOT_NULL_FATAL(vec);
  for (size_t i = 0; i < n; i++) tags[i] = "same"; /* repeats count: they cost work too */
  m.tags = tags;
  m.n_tags = n;
  m.embedding = vec;
  m.n_embedding = dim;
  req.memory = &m;
  check_packed(&req.base, want);
  free(tags);
  free(vec);
}

/* Repeated fields are counted on the wire, before anything unpacks them;
 * each limit holds at its edge. */
static void test_wire_repeated_limits(void) {
  char want[128];
  check_memory(EG_MEMORY_TAGS_MAX, EG_MEMORY_DIM_MAX, NULL);
  snprintf(want, sizeof want, "memory.tags: more than %d values", EG_MEMORY_TAGS_MAX);
  check_memory(EG_MEMORY_TAGS_MAX + 1, 0, want);
  check_memory(100000, 0, want);
  /* A packed run of floats counts each value. */
  snprintf(want, sizeof want, "memory.embedding: more than %d values", EG_MEMORY_DIM_MAX);
  check_memory(0, EG_MEMORY_DIM_MAX + 1, want);

  /* A field with no limit of its own: the filter's types (packed enums). */
  Engram__V1__MemoryFilter f = ENGRAM__V1__MEMORY_FILTER__INIT;
  Engram__V1__ListMemoriesRequest lr = ENGRAM__V1__LIST_MEMORIES_REQUEST__INIT;
  Engram__V1__MemoryType types[EG_WIRE_REPEATED_MAX + 1];
  for (size_t i = 0; i <= EG_WIRE_REPEATED_MAX; i++) types[i] = ENGRAM__V1__MEMORY_TYPE__MEMORY_TYPE_FACT;
  f.types = types;
  f.n_types = EG_WIRE_REPEATED_MAX;
  lr.filter = &f;
  check_packed(&lr.base, NULL);
  f.n_types = EG_WIRE_REPEATED_MAX + 1;
  snprintf(want, sizeof want, "filter.types: more than %d values", EG_WIRE_REPEATED_MAX);
  check_packed(&lr.base, want);

  /* AppendMessages: the messages, and the entries of one message's map. */
  Engram__V1__AppendMessagesRequest ar = ENGRAM__V1__APPEND_MESSAGES_REQUEST__INIT;
  Engram__V1__Message msg = ENGRAM__V1__MESSAGE__INIT;
  Engram__V1__Message **msgs = calloc(EG_APPEND_MESSAGES_MAX + 1, sizeof *msgs);
  CU_ASSERT_PTR_NOT_NULL_FATAL(msgs);
  for (size_t i = 0; i <= EG_APPEND_MESSAGES_MAX; i++) msgs[i] = &msg;
  ar.messages = msgs;
  ar.n_messages = EG_APPEND_MESSAGES_MAX;
  check_packed(&ar.base, NULL);
  ar.n_messages = EG_APPEND_MESSAGES_MAX + 1;
  snprintf(want, sizeof want, "messages: more than %d values", EG_APPEND_MESSAGES_MAX);
  check_packed(&ar.base, want);

  Engram__V1__Message__MetadataEntry ent = ENGRAM__V1__MESSAGE__METADATA_ENTRY__INIT;
  Engram__V1__Message__MetadataEntry **ents = calloc(EG_METADATA_ENTRIES_MAX + 1, sizeof *ents);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ents);
  ent.key = "k";
  ent.value = "";
  for (size_t i = 0; i <= EG_METADATA_ENTRIES_MAX; i++) ents[i] = &ent;
  msg.metadata = ents;
  msg.n_metadata = EG_METADATA_ENTRIES_MAX + 1;
  ar.n_messages = 2;
  /* The limit is per map: the second message's map is named. */
  snprintf(want, sizeof want, "messages[0].metadata: more than %d values", EG_METADATA_ENTRIES_MAX);
  check_packed(&ar.base, want);
  msg.n_metadata = EG_METADATA_ENTRIES_MAX;
  check_packed(&ar.base, NULL);
  free(ents);
  free(msgs);
}

/* Unknown fields are skipped, up to EG_WIRE_UNKNOWN_MAX per message: each
 * one costs protobuf-c an allocation, so thousands of them in a small
 * request are refused, at the top and in a nested message. */
static void test_wire_unknown_fields(void) {
  /* GetSessionRequest {session_id = "s"}, then field 100 (varint 0), a
   * number no engram message uses, n times. */
  uint8_t buf[3 + 3 * (EG_WIRE_UNKNOWN_MAX + 1)] = {0x0A, 0x01, 's'};
  for (size_t i = 0; i <= EG_WIRE_UNKNOWN_MAX; i++) {
    buf[3 + 3 * i] = 0xA0;
    buf[4 + 3 * i] = 0x06;
    buf[5 + 3 * i] = 0x00;
  }
  assert_wire_ok(&engram__v1__get_session_request__descriptor, buf, sizeof buf - 3);
  assert_wire_bad(&engram__v1__get_session_request__descriptor, buf, sizeof buf,
                  "request: more than 64 unknown fields");
  /* Nested: CreateMemoryRequest.memory holding them. */
  uint8_t nested[3 + sizeof buf - 3] = {0x0A, 0x80 | ((sizeof buf - 3) & 0x7F),
                                        (uint8_t)((sizeof buf - 3) >> 7)};
  memcpy(nested + 3, buf + 3, sizeof buf - 3);
  assert_wire_bad(&engram__v1__create_memory_request__descriptor, nested, sizeof nested,
                  "memory: more than 64 unknown fields");
}

/* protobuf-c merges the occurrences of a singular message field, so two
 * `memory` fields each at the tag ceiling would unpack to twice it: a
 * second occurrence is refused. */
static void test_wire_singular_message_twice(void) {
  Engram__V1__Memory m = ENGRAM__V1__MEMORY__INIT;
  Engram__V1__CreateMemoryRequest req = ENGRAM__V1__CREATE_MEMORY_REQUEST__INIT;
  char **tags = calloc(EG_MEMORY_TAGS_MAX, sizeof *tags);
  CU_ASSERT_PTR_NOT_NULL_FATAL(tags);
  for (size_t i = 0; i < EG_MEMORY_TAGS_MAX; i++) tags[i] = "t";
  m.tags = tags;
  m.n_tags = EG_MEMORY_TAGS_MAX;
  req.memory = &m;
  size_t len;
  uint8_t *one = pack_alloc(&req.base, &len);
  uint8_t *two = doubled(one, len);
  Engram__V1__CreateMemoryRequest *merged =
      engram__v1__create_memory_request__unpack(NULL, 2 * len, two);
  CU_ASSERT_PTR_NOT_NULL_FATAL(merged);
  CU_ASSERT_EQUAL(merged->memory->n_tags, 2 * EG_MEMORY_TAGS_MAX); /* what unpack would hand on */
  engram__v1__create_memory_request__free_unpacked(merged, NULL);
  assert_wire_ok(&engram__v1__create_memory_request__descriptor, one, len);
  assert_wire_bad(&engram__v1__create_memory_request__descriptor, two, 2 * len,
                  "memory: given more than once");
  free(two);
  free(one);

  /* Nested: ListMemoriesRequest.filter twice. */
  Engram__V1__MemoryFilter f = ENGRAM__V1__MEMORY_FILTER__INIT;
  Engram__V1__ListMemoriesRequest lr = ENGRAM__V1__LIST_MEMORIES_REQUEST__INIT;
  f.tags = tags;
  f.n_tags = 1;
  lr.filter = &f;
  one = pack_alloc(&lr.base, &len);
  two = doubled(one, len);
  assert_wire_bad(&engram__v1__list_memories_request__descriptor, two, 2 * len,
                  "filter: given more than once");
  free(two);
  free(one);
  free(tags);
}

/* A packed run whose length is not a whole number of values is not
 * protobuf. */
static void test_wire_packed_malformed(void) {
  /* SearchMemoriesRequest.embedding (field 3, packed floats) of 5 bytes. */
  static const uint8_t bad[] = {0x1A, 0x05, 0, 0, 0x80, 0x3F, 0};
  assert_wire_bad(&engram__v1__search_memories_request__descriptor, bad, sizeof bad,
                  "request: malformed protobuf");
  /* MemoryFilter.types (field 1) as a packed run ending mid-varint. */
  static const uint8_t cut[] = {0x12, 0x03, 0x0A, 0x01, 0x85};
  assert_wire_bad(&engram__v1__list_memories_request__descriptor, cut, sizeof cut,
                  "request: malformed protobuf");
}

void eg_test_register_validate(void) {
  CU_pSuite s = CU_add_suite("validate", NULL, NULL);
  CU_add_test(s, "utf8 valid", test_utf8_valid);
  CU_add_test(s, "utf8 invalid", test_utf8_invalid);
  CU_add_test(s, "wire valid", test_wire_valid);
  CU_add_test(s, "wire NUL", test_wire_nul);
  CU_add_test(s, "wire NUL is cut by unpack", test_wire_nul_is_cut_by_unpack);
  CU_add_test(s, "wire UTF-8", test_wire_utf8);
  CU_add_test(s, "wire nested message", test_wire_nested_message);
  CU_add_test(s, "wire unknown fields and index", test_wire_unknown_and_index);
  CU_add_test(s, "wire malformed", test_wire_malformed);
  CU_add_test(s, "wire depth", test_wire_depth);
  CU_add_test(s, "wire repeated limits", test_wire_repeated_limits);
  CU_add_test(s, "wire packed malformed", test_wire_packed_malformed);
  CU_add_test(s, "wire singular message twice", test_wire_singular_message_twice);
  CU_add_test(s, "wire unknown fields", test_wire_unknown_fields);
  CU_add_test(s, "validate id", test_validate_id);
  CU_add_test(s, "invalid formats", test_invalid_formats);
}
