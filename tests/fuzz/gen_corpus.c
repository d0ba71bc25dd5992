/*
 * Writes the binary seeds of the fuzz targets into <dir>/<target>/: valid
 * requests for fuzz_wire, tokens sealed under fuzz_token's keyring, WAL
 * records a fresh store applies for fuzz_wal. The text seeds (keyring,
 * tokens file, page tokens) are written by hand. Usage: fuzz_gen_corpus DIR
 * (tests/fuzz/corpus); it overwrites the files it writes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engram/storage/v1/wal.pb-c.h"
#include "engram/v1/memory.pb-c.h"
#include "engram/v1/replication.pb-c.h"
#include "engram/v1/session.pb-c.h"
#include "fuzz.h"
#include "fuzz_token.h"

static const char *out_dir;

static void write_seed(const char *target, const char *name, const uint8_t *d, size_t n) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", out_dir, target);
  FZ_CHECK(mkdir(path, 0755) == 0 || errno == EEXIST, path);
  snprintf(path, sizeof path, "%s/%s/%s", out_dir, target, name);
  FILE *f = fopen(path, "wb");
  FZ_CHECK(f && fwrite(d, 1, n, f) == n && fclose(f) == 0, path);
}

/* ---- fuzz_wire: one byte naming the request type, then the request ---- */

static void wire_seed(const char *name, const ProtobufCMessage *m) {
  size_t n_types, i = 0;
  const ProtobufCMessageDescriptor *const *types = fz_request_types(&n_types);
  while (i < n_types && types[i] != m->descriptor) i++;
  FZ_CHECK(i < n_types && i < 256, "request type not served");
  size_t len = protobuf_c_message_get_packed_size(m);
  uint8_t *b = malloc(1 + len);
  FZ_CHECK(b != NULL, "out of memory");
  b[0] = (uint8_t)i;
  protobuf_c_message_pack(m, b + 1);
  write_seed("wire", name, b, 1 + len);
  free(b);
}

static void wire_sessions(void) {
  Engram__V1__Session__MetadataEntry kv = ENGRAM__V1__SESSION__METADATA_ENTRY__INIT, *kvs[] = {&kv};
  kv.key = "channel";
  kv.value = "web \xc3\xa9t\xc3\xa9";
  Engram__V1__Session s = ENGRAM__V1__SESSION__INIT;
  s.session_id = "s1";
  s.user_id = "u1";
  s.agent_id = "agent";
  s.n_metadata = 1;
  s.metadata = kvs;
  Engram__V1__CreateSessionRequest cs = ENGRAM__V1__CREATE_SESSION_REQUEST__INIT;
  cs.session = &s;
  wire_seed("create_session", &cs.base);

  Engram__V1__Message__MetadataEntry mkv = ENGRAM__V1__MESSAGE__METADATA_ENTRY__INIT, *mkvs[] = {&mkv};
  mkv.key = "lang";
  mkv.value = "en";
  Engram__V1__Message m1 = ENGRAM__V1__MESSAGE__INIT, m2 = ENGRAM__V1__MESSAGE__INIT;
  Engram__V1__Message *ms[] = {&m1, &m2};
  m1.role = ENGRAM__V1__ROLE__ROLE_USER;
  m1.content = "hello \xf0\x9f\x98\x80";
  m1.client_message_id = "c-1";
  m1.n_metadata = 1;
  m1.metadata = mkvs;
  m2.role = ENGRAM__V1__ROLE__ROLE_ASSISTANT;
  m2.content = "hi";
  m2.token_count = 2;
  Engram__V1__AppendMessagesRequest am = ENGRAM__V1__APPEND_MESSAGES_REQUEST__INIT;
  am.session_id = "s1";
  am.n_messages = 2;
  am.messages = ms;
  wire_seed("append_messages", &am.base);

  Engram__V1__ListMessagesRequest lm = ENGRAM__V1__LIST_MESSAGES_REQUEST__INIT;
  lm.session_id = "s1";
  lm.page_size = 50;
  lm.page_token = "610000000000000001";
  lm.newest_first = 0;
  wire_seed("list_messages", &lm.base);
}

static void wire_memories(void) {
  static float emb[4] = {0.5f, -0.25f, 1.0f, 0.0f};
  char *tags[] = {"work", "pref"};
  Engram__V1__Memory m = ENGRAM__V1__MEMORY__INIT;
  m.user_id = "u1";
  m.type = ENGRAM__V1__MEMORY_TYPE__MEMORY_TYPE_PREFERENCE;
  m.category = "food";
  m.text = "likes green tea";
  m.importance = 0.5f;
  m.n_tags = 2;
  m.tags = tags;
  m.n_embedding = 4;
  m.embedding = emb;
  Engram__V1__CreateMemoryRequest cm = ENGRAM__V1__CREATE_MEMORY_REQUEST__INIT;
  cm.memory = &m;
  cm.jaccard_threshold = 0.8f;
  wire_seed("create_memory", &cm.base);

  char *paths[] = {"text", "tags"};
  Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
  mask.n_paths = 2;
  mask.paths = paths;
  Engram__V1__UpdateMemoryRequest um = ENGRAM__V1__UPDATE_MEMORY_REQUEST__INIT;
  m.memory_id = "m1";
  um.memory = &m;
  um.update_mask = &mask;
  um.expected_version = 3;
  wire_seed("update_memory", &um.base);

  Engram__V1__MemoryType types[] = {ENGRAM__V1__MEMORY_TYPE__MEMORY_TYPE_FACT};
  Google__Protobuf__Timestamp from = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
  from.seconds = 1700000000;
  Engram__V1__MemoryFilter f = ENGRAM__V1__MEMORY_FILTER__INIT;
  f.n_types = 1;
  f.types = types;
  f.n_tags = 1;
  f.tags = tags;
  f.create_time_from = &from;
  Engram__V1__SearchMemoriesRequest sm = ENGRAM__V1__SEARCH_MEMORIES_REQUEST__INIT;
  sm.user_id = "u1";
  sm.query = "green tea";
  sm.n_embedding = 4;
  sm.embedding = emb;
  sm.top_k = 5;
  sm.filter = &f;
  wire_seed("search_memories", &sm.base);

  Engram__V1__ListMemoriesRequest lm = ENGRAM__V1__LIST_MEMORIES_REQUEST__INIT;
  lm.user_id = "u1";
  lm.filter = &f;
  lm.page_size = 10;
  lm.page_token = "6e0000000000000001";
  wire_seed("list_memories", &lm.base);

  Engram__V1__StreamRequest sr = ENGRAM__V1__STREAM_REQUEST__INIT;
  sr.replica_id = "r1";
  sr.epoch = 1;
  sr.applied_lsn = 7;
  sr.applied_epoch = 1;
  wire_seed("stream_request", &sr.base);
}

/* ---- fuzz_token: tokens that open ---- */

static void token_seeds(void) {
  /* The same keys with key 1 as primary, to seal under each key. */
  static const char primary1[] =
      "primary 1\n"
      "key 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
      "key 2 ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n";
  const char *texts[] = {fz_token_keyring, primary1};
  static const char *pts[] = {"", "hello", "a longer plaintext of a message, \xc3\xa9"};
  for (int k = 0; k < 2; k++) {
    char err[256], name[32];
    eg_keyring *kr = NULL;
    const char *path = fz_write_file("keyring", (const uint8_t *)texts[k], strlen(texts[k]));
    FZ_CHECK(eg_keyring_load(path, &kr, err, sizeof err) == EG_OK, err);
    for (int i = 0; i < 3; i++) {
      uint8_t tok[128];
      size_t len = strlen(pts[i]);
      FZ_CHECK(eg_token_seal(kr, &fz_token_ctx, (const uint8_t *)pts[i], len, tok) == EG_OK, "seal");
      snprintf(name, sizeof name, "key%u_%d", eg_keyring_primary_id(kr), i);
      write_seed("token", name, tok, eg_token_len(len));
    }
    eg_keyring_free(kr);
  }
  /* Format 2, under the data key fuzz_token opens them with. */
  for (int i = 0; i < 3; i++) {
    uint8_t tok[128];
    char name[32];
    size_t len = strlen(pts[i]);
    FZ_CHECK(eg_token_seal_dek(fz_token_data_key, 1, &fz_token_ctx, (const uint8_t *)pts[i], len,
                               tok) == EG_OK,
             "seal_dek");
    snprintf(name, sizeof name, "dek_%d", i);
    write_seed("token", name, tok, eg_token_len(len));
  }
}

/* ---- fuzz_wal: records a fresh store (LSN 0, epoch 1) applies ---- */

typedef Engram__Storage__V1__WalOp wal_op;

static wal_op op(const char *db, int kind, const char *key, size_t klen, const char *val) {
  wal_op o = ENGRAM__STORAGE__V1__WAL_OP__INIT;
  o.db = (char *)db;
  o.kind = kind;
  o.key = (ProtobufCBinaryData){klen, (uint8_t *)key};
  if (val) o.value = (ProtobufCBinaryData){strlen(val), (uint8_t *)val};
  return o;
}

static void wal_seed(const char *name, uint64_t lsn, int erasure, wal_op *ops, size_t n) {
  wal_op *ptrs[8];
  Engram__Storage__V1__WalRecord r = ENGRAM__STORAGE__V1__WAL_RECORD__INIT;
  FZ_CHECK(n <= 8, "too many ops");
  for (size_t i = 0; i < n; i++) ptrs[i] = &ops[i];
  r.lsn = lsn;
  r.epoch = 1; /* a store that never had a primary is in epoch 1 */
  r.time_us = 1700000000000000;
  r.erasure = erasure;
  r.n_ops = n;
  r.ops = ptrs;
  uint8_t buf[1024];
  size_t len = protobuf_c_message_pack(&r.base, buf);
  FZ_CHECK(len <= sizeof buf, "record too long");
  write_seed("wal", name, buf, len);
}

static void wal_seeds(void) {
  /* Keys as storage.h lays them out: u8len tenant | ... */
  static const char sess[] = "\x04" "acme" "s1";
  static const char msg[] = "\x04" "acme" "\x02" "s1" "\0\0\0\0\0\0\0\x01";
  static const char msg_prefix[] = "\x04" "acme" "\x02" "s1";
  static const char mem[] = "\x04" "acme" "\x02" "u1" "m1";
  wal_op puts[] = {op("sessions", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT, sess, sizeof sess - 1, "rec"),
                   op("messages", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT, msg, sizeof msg - 1, "msg"),
                   op("idempotency", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT, msg_prefix,
                      sizeof msg_prefix - 1, "\0\0\0\0\0\0\0\x01")};
  wal_seed("puts", 1, 0, puts, 3);
  wal_op dels[] = {op("sessions", ENGRAM__STORAGE__V1__WAL_OP__KIND__DEL, sess, sizeof sess - 1, NULL),
                   op("messages", ENGRAM__STORAGE__V1__WAL_OP__KIND__DEL_PREFIX, msg_prefix,
                      sizeof msg_prefix - 1, NULL)};
  wal_seed("deletes", 1, 1, dels, 2);
  wal_op mixed[] = {op("memories", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT, mem, sizeof mem - 1, "m"),
                    op("memory_vectors", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT, mem, sizeof mem - 1, "v"),
                    op("memory_terms", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT, mem, sizeof mem - 1, "t"),
                    op("memories_by_user", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT, mem, sizeof mem - 1, ""),
                    op("memory_users", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT, msg_prefix,
                       sizeof msg_prefix - 1, "1"),
                    op("sessions_by_user", ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT, mem, sizeof mem - 1, ""),
                    op("memories", ENGRAM__STORAGE__V1__WAL_OP__KIND__DEL_PREFIX, mem, 5, NULL)};
  wal_seed("memories", 1, 0, mixed, 7);
  wal_seed("empty", 1, 0, NULL, 0);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  out_dir = argv[1];
  FZ_CHECK(eg_crypto_init() == EG_OK, "eg_crypto_init");
  wire_sessions();
  wire_memories();
  token_seeds();
  wal_seeds();
  return 0;
}
