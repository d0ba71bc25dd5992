/*
 * Server-streaming calls (engram.h): one call on a pluck queue of its own.
 * The status is received by a batch of its own started right after the
 * initial metadata, so a server that ends the stream early is seen at the
 * next read; every wait is bounded by the call's deadline.
 */
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>
#include <grpc/support/time.h>

#include "common/rpc.h"

struct eg_client_stream {
  grpc_completion_queue *cq;
  grpc_call *call;
  grpc_metadata md[2];
  size_t nmd;
  grpc_metadata_array initial, trailing;
  grpc_status_code code;
  grpc_slice details;
  int status_armed; /* the status batch started: it must be plucked */
  int ended;        /* the status batch was plucked */
  uint64_t lsn;     /* engram-lsn of the initial metadata, if any */
  char status_tag, recv_tag, start_tag;
};

static void set_status(eg_client_status *st, int code, const char *msg, size_t len,
                       uint64_t lsn) {
  memset(st, 0, sizeof *st);
  st->code = code;
  if (len >= sizeof st->message) len = sizeof st->message - 1;
  memcpy(st->message, msg, len);
  st->message[len] = '\0';
  st->lsn = lsn;
}

static grpc_event pluck(eg_client_stream *s, void *tag) {
  return grpc_completion_queue_pluck(s->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
}

/* Waits for the status batch (the deadline ends it) and fills st. */
static void finish(eg_client_stream *s, eg_client_status *st) {
  static const char nostart[] = "engram client: cannot start the call";
  if (!s->ended && s->status_armed) pluck(s, &s->status_tag);
  s->ended = 1;
  if (!s->status_armed) {
    set_status(st, GRPC_STATUS_INTERNAL, nostart, sizeof nostart - 1, s->lsn);
  } else {
    set_status(st, (int)s->code, (const char *)GRPC_SLICE_START_PTR(s->details),
               GRPC_SLICE_LENGTH(s->details), s->lsn);
    if (st->code != GRPC_STATUS_OK) eg_client_status_trailers(st, &s->trailing);
  }
}

eg_client_stream *eg_client_stream_open(eg_client *c, const char *path,
                                        const ProtobufCMessage *req, const eg_client_opts *opts,
                                        eg_client_status *st) {
  static const char nomem[] = "engram client: out of memory";
  eg_client_stream *s = calloc(1, sizeof *s);
  if (!s) {
    set_status(st, GRPC_STATUS_RESOURCE_EXHAUSTED, nomem, sizeof nomem - 1, 0);
    return NULL;
  }
  grpc_metadata_array_init(&s->initial);
  grpc_metadata_array_init(&s->trailing);
  s->details = grpc_empty_slice();
  s->cq = grpc_completion_queue_create_for_pluck(NULL);
  int64_t ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : EG_CLIENT_DEFAULT_TIMEOUT_MS;
  gpr_timespec deadline =
      gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
  grpc_slice method = grpc_slice_from_copied_string(path);
  s->call = grpc_channel_create_call(eg_client_channel(c), NULL, GRPC_PROPAGATE_DEFAULTS, s->cq,
                                     method, NULL, deadline, NULL);
  grpc_slice_unref(method);
  if (eg_client_call_metadata(s->md, &s->nmd, eg_client_authorization(c),
                              opts ? opts->min_lsn : 0) != 0) {
    set_status(st, GRPC_STATUS_RESOURCE_EXHAUSTED, nomem, sizeof nomem - 1, 0);
    eg_client_stream_free(s);
    return NULL;
  }
  grpc_byte_buffer *bb = eg_client_pack(req);
  grpc_op ops[4];
  eg_client_start_ops(ops, s->md, s->nmd, bb, &s->initial);
  int started = grpc_call_start_batch(s->call, ops, 4, &s->start_tag, NULL) == GRPC_CALL_OK;
  grpc_event ev = {0};
  if (started) ev = pluck(s, &s->start_tag);
  grpc_byte_buffer_destroy(bb);
  grpc_op status;
  memset(&status, 0, sizeof status);
  status.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  status.data.recv_status_on_client.trailing_metadata = &s->trailing;
  status.data.recv_status_on_client.status = &s->code;
  status.data.recv_status_on_client.status_details = &s->details;
  s->status_armed =
      started && grpc_call_start_batch(s->call, &status, 1, &s->status_tag, NULL) == GRPC_CALL_OK;
  if (!s->status_armed || ev.type != GRPC_OP_COMPLETE || !ev.success) {
    /* No initial metadata: the call failed at once (refused, unreachable,
     * past its deadline); the status says how. */
    finish(s, st);
    if (st->code == GRPC_STATUS_OK) {
      static const char odd[] = "engram client: the stream ended before it began";
      set_status(st, GRPC_STATUS_INTERNAL, odd, sizeof odd - 1, 0);
    }
    eg_client_stream_free(s);
    return NULL;
  }
  uint64_t lsn = 0;
  if (eg_client_metadata_u64(&s->initial, "engram-lsn", &lsn) == 1) s->lsn = lsn;
  set_status(st, GRPC_STATUS_OK, "", 0, s->lsn);
  return s;
}

int eg_client_stream_next(eg_client_stream *s, const ProtobufCMessageDescriptor *desc,
                          ProtobufCMessage **msg, eg_client_status *st) {
  if (s->ended) {
    finish(s, st);
    return 0;
  }
  grpc_byte_buffer *bb = NULL;
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &bb;
  if (grpc_call_start_batch(s->call, &op, 1, &s->recv_tag, NULL) == GRPC_CALL_OK)
    pluck(s, &s->recv_tag);
  if (!bb) {
    finish(s, st);
    return 0;
  }
  *msg = eg_client_unpack(desc, bb);
  grpc_byte_buffer_destroy(bb);
  if (!*msg) {
    static const char bad[] = "engram client: a stream response does not decode";
    grpc_call_cancel(s->call, NULL);
    finish(s, st);
    set_status(st, GRPC_STATUS_INTERNAL, bad, sizeof bad - 1, s->lsn);
    return 0;
  }
  return 1;
}

void eg_client_stream_free(eg_client_stream *s) {
  if (!s) return;
  if (s->call) {
    if (!s->ended) grpc_call_cancel(s->call, NULL);
    if (!s->ended && s->status_armed) pluck(s, &s->status_tag);
    grpc_call_unref(s->call);
  }
  for (size_t i = 0; i < s->nmd; i++) grpc_slice_unref(s->md[i].value);
  grpc_metadata_array_destroy(&s->initial);
  grpc_metadata_array_destroy(&s->trailing);
  grpc_slice_unref(s->details);
  grpc_completion_queue_shutdown(s->cq);
  while (pluck(s, NULL).type != GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(s->cq);
  free(s);
}
