/* Blocking helpers over the gRPC core for the streams of this module:
 * each call has a pluck queue of its own, and each batch is waited for. */
#include <string.h>

#include "common/clock.h"
#include "replica/internal.h"

int64_t eg_rpc_now_us(void) { return eg_now_us(); }

int eg_rpc_run_within(grpc_call *call, grpc_completion_queue *cq, grpc_op *ops, size_t n,
                      int64_t timeout_ms) {
  gpr_timespec until = timeout_ms < 0 ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
                                      : gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                                     gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
  /* The ops array is a unique address for as long as the batch runs. */
  if (grpc_call_start_batch(call, ops, n, ops, NULL) != GRPC_CALL_OK) return 0;
  grpc_event ev = grpc_completion_queue_pluck(cq, ops, until, NULL);
  if (ev.type == GRPC_QUEUE_TIMEOUT) {
    /* Cancelling makes the batch complete (failed); wait for that, so the
     * ops are no longer in use when we return. */
    grpc_call_cancel(call, NULL);
    grpc_completion_queue_pluck(cq, ops, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    return 0;
  }
  return ev.type == GRPC_OP_COMPLETE && ev.success;
}

int eg_rpc_run(grpc_call *call, grpc_completion_queue *cq, grpc_op *ops, size_t n) {
  return eg_rpc_run_within(call, cq, ops, n, -1);
}

int eg_rpc_send_within(grpc_call *call, grpc_completion_queue *cq, const ProtobufCMessage *m,
                       int64_t timeout_ms) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_MESSAGE;
  op.data.send_message.send_message = eg_client_pack(m);
  int ok = eg_rpc_run_within(call, cq, &op, 1, timeout_ms);
  grpc_byte_buffer_destroy(op.data.send_message.send_message);
  return ok;
}

int eg_rpc_send(grpc_call *call, grpc_completion_queue *cq, const ProtobufCMessage *m) {
  return eg_rpc_send_within(call, cq, m, -1);
}

ProtobufCMessage *eg_rpc_recv_within(grpc_call *call, grpc_completion_queue *cq,
                                     const ProtobufCMessageDescriptor *desc, int64_t timeout_ms) {
  grpc_byte_buffer *bb = NULL;
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &bb;
  if (!eg_rpc_run_within(call, cq, &op, 1, timeout_ms) || !bb) {
    if (bb) grpc_byte_buffer_destroy(bb);
    return NULL;
  }
  ProtobufCMessage *m = eg_client_unpack(desc, bb);
  grpc_byte_buffer_destroy(bb);
  return m;
}

ProtobufCMessage *eg_rpc_recv(grpc_call *call, grpc_completion_queue *cq,
                              const ProtobufCMessageDescriptor *desc) {
  return eg_rpc_recv_within(call, cq, desc, -1);
}

void eg_rpc_cq_destroy(grpc_completion_queue *cq) {
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
}

int eg_upstream_open(eg_repl *r, const char *method, const ProtobufCMessage *first, int close_send,
                     eg_upstream *u) {
  u->cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_slice m = grpc_slice_from_static_string(method);
  u->call = grpc_channel_create_call(eg_repl_upstream(r), NULL, GRPC_PROPAGATE_DEFAULTS,
                                     u->cq, m, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  pthread_mutex_lock(&r->mu);
  r->follow_call = u->call; /* a stop cancels it */
  pthread_mutex_unlock(&r->mu);

  grpc_metadata md = {.key = grpc_slice_from_static_string("authorization"),
                      .value = grpc_empty_slice()};
  int have_md = r->authz[0] && eg_client_secret_slice(r->authz, &md.value) == 0;
  grpc_metadata_array initial;
  grpc_metadata_array_init(&initial);
  grpc_op ops[3];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = have_md ? 1 : 0;
  ops[0].data.send_initial_metadata.metadata = &md;
  ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[1].data.recv_initial_metadata.recv_initial_metadata = &initial;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  /* Bounded: a primary host that vanished must not hold the follower (or
   * a Promote waiting for it) for the TCP timeout. A token that could not
   * be copied (out of memory) fails the attempt rather than call without. */
  int ok = (have_md || !r->authz[0]) && !eg_repl_follow_done(r) &&
           eg_rpc_run_within(u->call, u->cq, ops, 1, EG_REPL_SILENCE_MS) &&
           eg_rpc_send(u->call, u->cq, first) &&
           (!close_send || eg_rpc_run(u->call, u->cq, ops + 2, 1)) &&
           eg_rpc_run_within(u->call, u->cq, ops + 1, 1, EG_REPL_SILENCE_MS);
  grpc_metadata_array_destroy(&initial);
  grpc_slice_unref(md.value);
  return ok;
}

void eg_upstream_close(eg_repl *r, eg_upstream *u) {
  pthread_mutex_lock(&r->mu);
  r->follow_call = NULL;
  pthread_mutex_unlock(&r->mu);
  grpc_call_cancel(u->call, NULL);
  grpc_call_unref(u->call);
  eg_rpc_cq_destroy(u->cq);
}
