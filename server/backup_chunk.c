#include "server/backup_chunk.h"

#include <string.h>

#include "common/clock.h"

void eg_backup_msg_init(eg_backup_msg *b) {
  memset(b, 0, sizeof *b);
  int64_t now = eg_now_us();
  google__protobuf__timestamp__init(&b->time);
  b->time.seconds = now / 1000000;
  b->time.nanos = (int32_t)(now % 1000000) * 1000;
}

const ProtobufCMessage *eg_backup_chunk(void *arg, const eg_repl_copy_piece *p) {
  eg_backup_msg *b = arg;
  Engram__V1__BackupChunk *c = &b->chunk;
  engram__v1__backup_chunk__init(c);
  c->data = (ProtobufCBinaryData){p->len, (uint8_t *)p->data};
  c->size = p->size;
  if (p->last) {
    c->last = 1;
    c->lsn = p->info->lsn;
    c->epoch = p->info->epoch;
    c->schema_version = p->info->schema_version;
    c->total_bytes = p->total;
    c->sha256 = (ProtobufCBinaryData){32, (uint8_t *)p->sha256};
    c->n_key_ids = b->n_key_ids;
    c->key_ids = b->key_ids;
    c->time = &b->time;
  }
  return &c->base;
}
