/* Verifying a backup file: digest and length, the data as a store, record
 * counts, and (with a keyring) every sealed field. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/backup.h"
#include "engram/storage/v1/memory_records.pb-c.h"
#include "engram/storage/v1/records.pb-c.h"
#include "storage/storage.h"

#define EG_TOKEN_SUFFIX "_token"

/* What the visit of the data DBs carries. */
typedef struct {
  eg_backup_verify_result *out;
  const eg_keyring *kr;
  eg_err err; /* out of memory while opening a field */
} eg_verify_walk;

static void note_missing(eg_backup_verify_result *out, uint32_t id) {
  for (size_t i = 0; i < out->n_missing; i++)
    if (out->missing_key_ids[i] == id) return;
  if (out->n_missing < EG_BACKUP_KEY_IDS_MAX) out->missing_key_ids[out->n_missing++] = id;
}

static void count_db(eg_backup_verify_result *out, const char *db) {
  size_t i = 0;
  while (i < out->n_dbs && strcmp(out->dbs[i].name, db) != 0) i++;
  if (i == out->n_dbs) {
    if (i == EG_BACKUP_VERIFY_DBS_MAX) return;
    snprintf(out->dbs[i].name, sizeof out->dbs[i].name, "%s", db);
    out->n_dbs++;
  }
  out->dbs[i].records++;
}

/* Opens one sealed field: counted opened, failed, or (its key is not in the
 * keyring) under the missing key ids. */
static void open_field(eg_verify_walk *w, const eg_field_ctx *ctx, const ProtobufCBinaryData *tok) {
  eg_backup_verify_result *out = w->out;
  if (tok->len == 0) return; /* no value */
  if (tok->len >= EG_TOKEN_HEADER_LEN) {
    uint32_t id = (uint32_t)tok->data[1] << 24 | (uint32_t)tok->data[2] << 16 |
                  (uint32_t)tok->data[3] << 8 | tok->data[4];
    if (!eg_keyring_has(w->kr, id)) {
      note_missing(out, id);
      out->sealed_missing_key++;
      return;
    }
  }
  uint8_t *pt = tok->len > EG_TOKEN_OVERHEAD ? malloc(tok->len - EG_TOKEN_OVERHEAD) : NULL;
  size_t plen;
  eg_err e = tok->len <= EG_TOKEN_OVERHEAD ? EG_ECORRUPT
             : pt ? eg_token_open(w->kr, ctx, tok->data, tok->len, pt, &plen)
                  : EG_ENOMEM;
  free(pt);
  if (e == EG_ENOMEM) w->err = e;
  if (e == EG_OK) {
    out->sealed_opened++;
    return;
  }
  if (!out->sealed_failed++)
    snprintf(out->first_failure, sizeof out->first_failure,
             "tenant %s %s %s: %s does not open (tampered or sealed for another record)",
             ctx->tenant, ctx->kind, ctx->record_id, ctx->field);
}

/* Opens every `*_token` bytes field of m, for the field named without the
 * suffix (the context the server sealed it in). */
static void open_fields(eg_verify_walk *w, const ProtobufCMessage *m, const char *tenant,
                        const char *kind, const char *record_id) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    size_t n = strlen(f->name), sl = sizeof EG_TOKEN_SUFFIX - 1;
    if (f->type != PROTOBUF_C_TYPE_BYTES || f->label == PROTOBUF_C_LABEL_REPEATED || n <= sl ||
        strcmp(f->name + n - sl, EG_TOKEN_SUFFIX) != 0)
      continue;
    char field[64];
    snprintf(field, sizeof field, "%.*s", (int)(n - sl), f->name);
    eg_field_ctx ctx = {.tenant = tenant, .kind = kind, .record_id = record_id, .field = field};
    open_field(w, &ctx, (const ProtobufCBinaryData *)((const char *)m + f->offset));
  }
}

/* The u8len-prefixed id at k[*off] into buf (NUL-terminated); advances
 * *off. 0 if the key is too short. */
static int key_id(const uint8_t *k, size_t klen, size_t *off, char *buf, size_t cap) {
  if (*off >= klen || k[*off] >= cap || *off + 1 + k[*off] > klen) return 0;
  size_t n = k[*off];
  memcpy(buf, k + *off + 1, n);
  buf[n] = '\0';
  *off += 1 + n;
  return 1;
}

/* The DBs whose records hold sealed fields, and the kind each record is
 * sealed as (the services' names). Keys: sessions and memories u8len T |
 * id; messages u8len T | u8len session | seq BE (record id "session/seq"). */
static const struct {
  const char *db, *kind;
  const ProtobufCMessageDescriptor *desc;
} eg_sealed_dbs[] = {
    {"sessions", "session", &engram__storage__v1__session_record__descriptor},
    {"messages", "message", &engram__storage__v1__message_record__descriptor},
    {"memories", "memory", &engram__storage__v1__memory_record__descriptor},
};

/* The record id m is sealed under; 0 if its key does not fit the layout. */
static int record_id(const ProtobufCMessage *m, const uint8_t *k, size_t klen, size_t off,
                     char *id, size_t cap) {
  if (m->descriptor == &engram__storage__v1__session_record__descriptor) {
    snprintf(id, cap, "%s", ((const Engram__Storage__V1__SessionRecord *)m)->session_id);
  } else if (m->descriptor == &engram__storage__v1__memory_record__descriptor) {
    snprintf(id, cap, "%s", ((const Engram__Storage__V1__MemoryRecord *)m)->memory_id);
  } else {
    char sid[256];
    if (!key_id(k, klen, &off, sid, sizeof sid)) return 0;
    snprintf(id, cap, "%s/%lld", sid,
             (long long)((const Engram__Storage__V1__MessageRecord *)m)->seq);
  }
  return 1;
}

static void visit_sealed(eg_verify_walk *w, const char *db, const uint8_t *k, size_t klen,
                         const uint8_t *v, size_t vlen) {
  size_t i = 0, n = sizeof eg_sealed_dbs / sizeof eg_sealed_dbs[0];
  while (i < n && strcmp(eg_sealed_dbs[i].db, db) != 0) i++;
  if (i == n) return;
  char tenant[256], id[256 + 24];
  size_t off = 0;
  int ok = key_id(k, klen, &off, tenant, sizeof tenant);
  ProtobufCMessage *m = ok ? protobuf_c_message_unpack(eg_sealed_dbs[i].desc, NULL, vlen, v) : NULL;
  if (m && record_id(m, k, klen, off, id, sizeof id)) {
    open_fields(w, m, tenant, eg_sealed_dbs[i].kind, id);
  } else if (!w->out->sealed_failed++) {
    snprintf(w->out->first_failure, sizeof w->out->first_failure,
             "a record of %s does not decode", db);
  }
  if (m) protobuf_c_message_free_unpacked(m, NULL);
}

static void verify_kv(void *arg, const char *db, const void *k, size_t klen, const void *v,
                      size_t vlen) {
  eg_verify_walk *w = arg;
  count_db(w->out, db);
  if (w->kr) visit_sealed(w, db, k, klen, v, vlen);
}

eg_err eg_backup_verify(const char *path, const eg_keyring *kr, eg_backup_verify_result *out,
                        char *why, size_t whylen) {
  char dir[4096], data[4096 + 16];
  const char *tmp = getenv("TMPDIR");
  *out = (eg_backup_verify_result){.n_dbs = 0};
  snprintf(dir, sizeof dir, "%s/engram-verify-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir)) {
    snprintf(why, whylen, "cannot make a temp dir under %s", tmp && *tmp ? tmp : "/tmp");
    return EG_EIO;
  }
  snprintf(data, sizeof data, "%s/data.mdb", dir);
  eg_err e = eg_backup_extract(path, data, &out->h, why, whylen);
  if (!e) e = eg_store_file_check(data, out->h.lsn, out->h.epoch, &out->info, why, whylen);
  if (!e && out->info.schema_version != out->h.schema_version) {
    snprintf(why, whylen, "the data is at schema version %u, its header says %u",
             out->info.schema_version, out->h.schema_version);
    e = EG_ECORRUPT;
  }
  eg_verify_walk w = {.out = out, .kr = kr};
  if (!e && (e = eg_store_file_visit(data, &out->info, verify_kv, &w)) != EG_OK)
    snprintf(why, whylen, "the data does not read as a store: %s", eg_err_msg(e));
  if (!e && w.err) {
    snprintf(why, whylen, "out of memory while opening sealed fields");
    e = w.err;
  }
  if (!e && kr)
    for (size_t i = 0; i < out->h.n_key_ids; i++)
      if (!eg_keyring_has(kr, out->h.key_ids[i])) note_missing(out, out->h.key_ids[i]);
  unlink(data);
  rmdir(dir);
  if (e && e != EG_ENOMEM && e != EG_EIO) e = EG_ECORRUPT;
  return e;
}
