/*
 * The client: one channel, and the one generic unary call every typed call
 * goes through (engram.h).
 *
 * A call is one batch of six ops on a completion queue of its own (so a
 * client can be shared by threads), plucked with no timeout: the call's
 * deadline guarantees the batch ends.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "engram.h"

struct eg_client {
  grpc_channel *channel; /* thread-safe; immutable after new */
  char *authorization;   /* "Bearer <token>", or NULL */
};

static const char *const code_names[] = {
    "OK",                 "CANCELLED",        "UNKNOWN",   "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",  "NOT_FOUND",        "ALREADY_EXISTS", "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED",      "INTERNAL",         "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *eg_client_code_name(int code) {
  if (code < 0 || (size_t)code >= sizeof code_names / sizeof code_names[0]) return "UNKNOWN";
  return code_names[code];
}

/* 1 if s may go in a metadata value: printable ASCII only. */
static int metadata_value_ok(const char *s) {
  for (; *s; s++)
    if (*s < 0x20 || *s > 0x7e) return 0;
  return 1;
}

eg_client *eg_client_new(const char *target, const char *token) {
  if (!target || !*target || (token && !metadata_value_ok(token))) {
    errno = EINVAL;
    return NULL;
  }
  eg_client *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  if (token) {
    size_t n = strlen("Bearer ") + strlen(token) + 1;
    c->authorization = malloc(n);
    if (!c->authorization) {
      free(c);
      return NULL;
    }
    snprintf(c->authorization, n, "Bearer %s", token);
  }
  grpc_init();
  /* Keepalive pings find a peer that vanished without closing the
   * connection (a dead host), also on long-lived streams. */
  grpc_arg arg[] = {
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
       .value.integer = EG_CLIENT_MAX_RESPONSE_BYTES},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIME_MS, .value.integer = 10000},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS, .value.integer = 5000},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, .value.integer = 1},
  };
  grpc_channel_args args = {.num_args = sizeof arg / sizeof arg[0], .args = arg};
  grpc_channel_credentials *creds = grpc_insecure_credentials_create();
  c->channel = grpc_channel_create(target, creds, &args);
  grpc_channel_credentials_release(creds);
  return c; /* grpc_channel_create never returns NULL: a bad target gives a lame channel */
}

void eg_client_free(eg_client *c) {
  if (!c) return;
  grpc_channel_destroy(c->channel);
  grpc_shutdown();
  free(c->authorization);
  free(c);
}

/* Fills st with a client-side failure. */
static void fail_status(eg_client_status *st, int code, const char *msg) {
  st->code = code;
  snprintf(st->message, sizeof st->message, "%s", msg);
}

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

/* The `engram-lsn` value in md, or 0 if absent or not a number. */
static uint64_t find_lsn(const grpc_metadata_array *md) {
  uint64_t lsn = 0;
  return eg_client_metadata_u64(md, "engram-lsn", &lsn) == 1 ? lsn : 0;
}

/* Copies the status details slice into st->message, cut to fit. */
static void copy_details(eg_client_status *st, grpc_slice details) {
  size_t n = GRPC_SLICE_LENGTH(details);
  if (n >= sizeof st->message) n = sizeof st->message - 1;
  memcpy(st->message, GRPC_SLICE_START_PTR(details), n);
  st->message[n] = '\0';
}

static void add_metadata(eg_client_exchange *x, const char *key, const char *value) {
  /* A copied value: gRPC may hold it after the call returns. */
  x->md[x->nmd++] = (grpc_metadata){.key = grpc_slice_from_static_string(key),
                                    .value = grpc_slice_from_copied_string(value)};
}

int eg_client_exchange_start(eg_client_exchange *x, grpc_channel *ch, grpc_completion_queue *cq,
                             const char *path, gpr_timespec deadline, grpc_byte_buffer *req,
                             const char *authorization, uint64_t min_lsn, void *tag) {
  memset(x, 0, sizeof *x);
  if (authorization && *authorization) add_metadata(x, "authorization", authorization);
  if (min_lsn) {
    char lsn[24];
    snprintf(lsn, sizeof lsn, "%" PRIu64, min_lsn);
    add_metadata(x, "engram-min-lsn", lsn);
  }
  x->send = req;
  grpc_metadata_array_init(&x->initial);
  grpc_metadata_array_init(&x->trailing);
  x->code = GRPC_STATUS_UNKNOWN;
  x->details = grpc_empty_slice();
  grpc_slice method = grpc_slice_from_copied_string(path);
  x->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL, deadline,
                                     NULL);
  grpc_slice_unref(method);

  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = x->nmd;
  ops[0].data.send_initial_metadata.metadata = x->md;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = x->send;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &x->initial;
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

/* Runs the call on a queue of its own and waits for it; the deadline
 * guarantees it ends. Fills st->code and st->message. */
static void run_call(eg_client *c, const char *path, int64_t timeout_ms, eg_client_exchange *x,
                     grpc_byte_buffer *req, const char *authorization, uint64_t min_lsn,
                     eg_client_status *st) {
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                       gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
  if (eg_client_exchange_start(x, c->channel, cq, path, deadline, req, authorization, min_lsn, x) == 0) {
    grpc_event ev = grpc_completion_queue_pluck(cq, x, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    st->code = ev.type == GRPC_OP_COMPLETE && ev.success ? (int)x->code : GRPC_STATUS_INTERNAL;
    copy_details(st, x->details);
  } else {
    fail_status(st, GRPC_STATUS_INTERNAL, "engram client: cannot start the call");
  }
  grpc_call_unref(x->call);
  x->call = NULL;
  grpc_completion_queue_shutdown(cq);
  grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  grpc_completion_queue_destroy(cq);
}

int eg_client_call(eg_client *c, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *resp_desc, const eg_client_opts *opts,
                   eg_client_status *st, ProtobufCMessage **resp) {
  assert(c && path && req && resp_desc && st && resp);
  assert(resp_desc->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC);
  grpc_byte_buffer *in = eg_client_pack(req), *out = NULL;
  eg_client_call_raw(c, path, in, NULL, opts, st, &out);
  grpc_byte_buffer_destroy(in);
  if (st->code == GRPC_STATUS_OK && !(*resp = eg_client_unpack(resp_desc, out)))
    fail_status(st, GRPC_STATUS_INTERNAL, "engram client: the response does not decode");
  if (out) grpc_byte_buffer_destroy(out);
  return st->code;
}

int eg_client_call_raw(eg_client *c, const char *path, grpc_byte_buffer *req,
                       const char *authorization, const eg_client_opts *opts,
                       eg_client_status *st, grpc_byte_buffer **resp) {
  assert(c && path && req && st && resp);
  memset(st, 0, sizeof *st);
  *resp = NULL;
  eg_client_exchange x;
  run_call(c, path, opts && opts->timeout_ms > 0 ? opts->timeout_ms : EG_CLIENT_DEFAULT_TIMEOUT_MS,
           &x, req, authorization ? authorization : c->authorization, opts ? opts->min_lsn : 0, st);
  if (st->code == GRPC_STATUS_OK) {
    st->lsn = eg_client_exchange_lsn(&x);
    if (!x.recv)
      fail_status(st, GRPC_STATUS_INTERNAL, "engram client: OK without a response message");
    *resp = x.recv;
    x.recv = NULL;
  }
  eg_client_exchange_end(&x);
  return st->code;
}

grpc_channel *eg_client_channel(eg_client *c) { return c->channel; }
