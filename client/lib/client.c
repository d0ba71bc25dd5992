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
#include <grpc/support/time.h>

#include "common/grpc_code.h"
#include "common/rpc.h"

struct eg_client {
  grpc_channel *channel; /* thread-safe; immutable after new */
  char *authorization;   /* "Bearer <token>", or NULL */
};

const char *eg_client_code_name(int code) { return eg_grpc_code_name(code); }

/* 1 if s may go in a metadata value: printable ASCII only. */
static int metadata_value_ok(const char *s) {
  for (; *s; s++)
    if (*s < 0x20 || *s > 0x7e) return 0;
  return 1;
}

/* Frees c and its token (wiped first), not its channel. NULL is fine. */
static void eg_client_free_fields(eg_client *c) {
  if (!c) return;
  if (c->authorization) explicit_bzero(c->authorization, strlen(c->authorization));
  free(c->authorization);
  free(c);
}

eg_client *eg_client_new(const char *target, const char *token) {
  return eg_client_new_tls(target, token, NULL, NULL, 0);
}

eg_client *eg_client_new_tls(const char *target, const char *token, const eg_client_tls *tls,
                             char *err, size_t errlen) {
  eg_client_channel_opts o = {.max_response_bytes = EG_CLIENT_MAX_RESPONSE_BYTES, .tls = tls};
  return eg_client_new_opts(target, token, &o, err, errlen);
}

eg_client *eg_client_new_opts(const char *target, const char *token,
                              const eg_client_channel_opts *o, char *err, size_t errlen) {
  if (!target || !*target || (token && !metadata_value_ok(token))) {
    if (err && errlen)
      snprintf(err, errlen, "%s",
               !target || !*target ? "no target"
                                   : "the token holds a byte outside printable ASCII");
    errno = EINVAL;
    return NULL;
  }
  eg_client *c = calloc(1, sizeof *c);
  if (!c) goto oom;
  if (token) {
    size_t n = strlen("Bearer ") + strlen(token) + 1;
    c->authorization = malloc(n);
    if (!c->authorization) goto oom;
    snprintf(c->authorization, n, "Bearer %s", token);
  }
  grpc_init();
  /* Keepalive pings find a peer that vanished without closing the
   * connection (a dead host), also on long-lived streams. */
  grpc_arg arg[] = {
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
       .value.integer = o->max_response_bytes},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIME_MS, .value.integer = 10000},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS, .value.integer = 5000},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, .value.integer = 1},
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
       .value.integer = o->max_reconnect_backoff_ms},
  };
  /* The backoff cap is last: left out when o keeps gRPC's own. */
  size_t nargs = sizeof arg / sizeof arg[0] - (o->max_reconnect_backoff_ms ? 0 : 1);
  c->channel = eg_client_channel_create(target, o->tls, arg, nargs, err, errlen);
  if (!c->channel) {
    int e = errno;
    grpc_shutdown();
    eg_client_free_fields(c);
    errno = e;
    return NULL;
  }
  return c;
oom:
  eg_client_free_fields(c);
  if (err && errlen) snprintf(err, errlen, "out of memory");
  errno = ENOMEM;
  return NULL;
}

void eg_client_free(eg_client *c) {
  if (!c) return;
  grpc_channel_destroy(c->channel);
  grpc_shutdown();
  eg_client_free_fields(c);
}

/* Fills st with a client-side failure. */
static void fail_status(eg_client_status *st, int code, const char *msg) {
  st->code = code;
  snprintf(st->message, sizeof st->message, "%s", msg);
}

/* Copies the status details slice into st->message, cut to fit. */
static void copy_details(eg_client_status *st, grpc_slice details) {
  size_t n = GRPC_SLICE_LENGTH(details);
  if (n >= sizeof st->message) n = sizeof st->message - 1;
  memcpy(st->message, GRPC_SLICE_START_PTR(details), n);
  st->message[n] = '\0';
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
    if (st->code != GRPC_STATUS_OK) eg_client_status_trailers(st, &x->trailing);
  } else {
    fail_status(st, GRPC_STATUS_INTERNAL, "engram client: cannot start the call");
  }
  if (x->call) grpc_call_unref(x->call);
  x->call = NULL;
  grpc_completion_queue_shutdown(cq);
  grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  grpc_completion_queue_destroy(cq);
}

/* The call on serialized bytes: on OK *resp is the response payload, which
 * the caller destroys; st->lsn carries engram-lsn. Returns st->code. */
static int call_raw(eg_client *c, const char *path, grpc_byte_buffer *req,
                    const eg_client_opts *opts, eg_client_status *st, grpc_byte_buffer **resp) {
  assert(c && path && req && st && resp);
  memset(st, 0, sizeof *st);
  *resp = NULL;
  eg_client_exchange x;
  run_call(c, path, opts && opts->timeout_ms > 0 ? opts->timeout_ms : EG_CLIENT_DEFAULT_TIMEOUT_MS,
           &x, req, c->authorization, opts ? opts->min_lsn : 0, st);
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

int eg_client_call(eg_client *c, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *resp_desc, const eg_client_opts *opts,
                   eg_client_status *st, ProtobufCMessage **resp) {
  assert(c && path && req && resp_desc && st && resp);
  assert(resp_desc->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC);
  grpc_byte_buffer *in = eg_client_pack(req), *out = NULL;
  call_raw(c, path, in, opts, st, &out);
  grpc_byte_buffer_destroy(in);
  if (st->code == GRPC_STATUS_OK && !(*resp = eg_client_unpack(resp_desc, out)))
    fail_status(st, GRPC_STATUS_INTERNAL, "engram client: the response does not decode");
  if (out) grpc_byte_buffer_destroy(out);
  return st->code;
}

grpc_channel *eg_client_channel(eg_client *c) { return c->channel; }

const char *eg_client_authorization(const eg_client *c) { return c->authorization; }
