/*
 * The internal RPC helpers of common/rpc.h: packing, metadata parsing and
 * one unary exchange on a caller's completion queue.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>

#include "common/rpc.h"

/* The request, serialised into a byte buffer the caller destroys (gRPC
 * aborts rather than return NULL when memory runs out). */
grpc_byte_buffer *eg_client_pack(const ProtobufCMessage *req) {
  grpc_slice s = grpc_slice_malloc(protobuf_c_message_get_packed_size(req));
  protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(s));
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  return bb;
}

ProtobufCMessage *eg_client_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb) {
  grpc_byte_buffer_reader r;
  if (!bb || !grpc_byte_buffer_reader_init(&r, bb)) return NULL;
  grpc_slice s = grpc_byte_buffer_reader_readall(&r);
  grpc_byte_buffer_reader_destroy(&r);
  ProtobufCMessage *m =
      protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
  grpc_slice_unref(s);
  return m;
}

int eg_client_metadata_u64(const grpc_metadata_array *md, const char *key, uint64_t *out) {
  for (size_t i = 0; i < md->count; i++) {
    const grpc_metadata *m = &md->metadata[i];
    if (grpc_slice_str_cmp(m->key, key)) continue;
    char buf[24], *end;
    size_t n = GRPC_SLICE_LENGTH(m->value);
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, GRPC_SLICE_START_PTR(m->value), n);
    buf[n] = '\0';
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (*end || errno || buf[0] == '-') return -1;
    *out = (uint64_t)v;
    return 1;
  }
  return 0;
}

void eg_client_status_trailers(eg_client_status *st, const grpc_metadata_array *trailing) {
  for (size_t i = 0; i < trailing->count; i++) {
    const grpc_metadata *m = &trailing->metadata[i];
    size_t n = GRPC_SLICE_LENGTH(m->value);
    if (!grpc_slice_str_cmp(m->key, "grpc-status-details-bin") && n <= sizeof st->details) {
      memcpy(st->details, GRPC_SLICE_START_PTR(m->value), n);
      st->details_len = n;
    } else if (!grpc_slice_str_cmp(m->key, "engram-request-id") && n < sizeof st->request_id) {
      memcpy(st->request_id, GRPC_SLICE_START_PTR(m->value), n);
      st->request_id[n] = '\0';
    }
  }
}

/* The `engram-lsn` value in md, or 0 if absent or not a number. */
static uint64_t find_lsn(const grpc_metadata_array *md) {
  uint64_t lsn = 0;
  return eg_client_metadata_u64(md, "engram-lsn", &lsn) == 1 ? lsn : 0;
}

/* Frees a metadata copy once gRPC lets go of it, wiped first: it may be a
 * bearer token. */
static void wipe_free(void *p, size_t n) {
  explicit_bzero(p, n);
  free(p);
}

int eg_client_secret_slice(const char *value, grpc_slice *out) {
  size_t n = strlen(value);
  char *copy = malloc(n ? n : 1);
  if (!copy) return -1;
  memcpy(copy, value, n);
  *out = grpc_slice_new_with_len(copy, n, wipe_free);
  return 0;
}

/* Adds key: value to md[*n]; 0, or -1 when memory runs out. The value is a
 * copy gRPC may hold after the call returns, wiped when it lets go. */
static int add_metadata(grpc_metadata *md, size_t *n, const char *key, const char *value) {
  grpc_slice v;
  if (eg_client_secret_slice(value, &v) != 0) return -1;
  md[(*n)++] = (grpc_metadata){.key = grpc_slice_from_static_string(key), .value = v};
  return 0;
}

int eg_client_call_metadata(grpc_metadata md[2], size_t *n, const char *authorization,
                            uint64_t min_lsn) {
  *n = 0;
  if (authorization && *authorization && add_metadata(md, n, "authorization", authorization) != 0)
    return -1;
  if (min_lsn) {
    char lsn[24];
    snprintf(lsn, sizeof lsn, "%" PRIu64, min_lsn);
    if (add_metadata(md, n, "engram-min-lsn", lsn) != 0) return -1;
  }
  return 0;
}

void eg_client_start_ops(grpc_op ops[4], grpc_metadata *md, size_t nmd, grpc_byte_buffer *req,
                         grpc_metadata_array *initial) {
  memset(ops, 0, 4 * sizeof *ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = nmd;
  ops[0].data.send_initial_metadata.metadata = md;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = req;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = initial;
}

int eg_client_exchange_start(eg_client_exchange *x, grpc_channel *ch, grpc_completion_queue *cq,
                             const char *path, gpr_timespec deadline, grpc_byte_buffer *req,
                             const char *authorization, uint64_t min_lsn, void *tag) {
  memset(x, 0, sizeof *x);
  grpc_metadata_array_init(&x->initial);
  grpc_metadata_array_init(&x->trailing);
  x->code = GRPC_STATUS_UNKNOWN;
  x->details = grpc_empty_slice();
  x->send = req;
  if (eg_client_call_metadata(x->md, &x->nmd, authorization, min_lsn) != 0) return -1;
  grpc_slice method = grpc_slice_from_copied_string(path);
  x->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL, deadline,
                                     NULL);
  grpc_slice_unref(method);

  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  eg_client_start_ops(ops, x->md, x->nmd, x->send, &x->initial);
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &x->recv;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &x->trailing;
  ops[5].data.recv_status_on_client.status = &x->code;
  ops[5].data.recv_status_on_client.status_details = &x->details;
  return grpc_call_start_batch(x->call, ops, 6, tag, NULL) == GRPC_CALL_OK ? 0 : -1;
}

uint64_t eg_client_exchange_lsn(const eg_client_exchange *x) { return find_lsn(&x->initial); }

void eg_client_exchange_end(eg_client_exchange *x) {
  for (size_t i = 0; i < x->nmd; i++) grpc_slice_unref(x->md[i].value);
  if (x->recv) grpc_byte_buffer_destroy(x->recv);
  grpc_metadata_array_destroy(&x->initial);
  grpc_metadata_array_destroy(&x->trailing);
  grpc_slice_unref(x->details);
  if (x->call) grpc_call_unref(x->call);
  memset(x, 0, sizeof *x);
}

