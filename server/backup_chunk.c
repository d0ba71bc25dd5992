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

eg_err eg_backup_stream_begin(const eg_srv *srv, struct grpc_call *call,
                              struct grpc_completion_queue *cq,
                              const ProtobufCMessageDescriptor *req, eg_stream_out *out,
                              eg_backup_msg *b, char *msg, size_t msglen) {
  *out = (eg_stream_out){.call = call, .cq = cq, .send_ms = srv->cfg->call_timeout_ms,
                         .send_limit = "--call-timeout-ms", .max_ms = srv->cfg->backup_max_ms,
                         .max_limit = "--backup-max-ms"};
  ProtobufCMessage *in = NULL;
  eg_err e = eg_stream_recv_request(srv, call, cq, req, &in, msg, msglen);
  if (e) return e;
  protobuf_c_message_free_unpacked(in, NULL); /* no fields */
  eg_stream_out_start(out);
  eg_backup_msg_init(b);
  return EG_OK;
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
