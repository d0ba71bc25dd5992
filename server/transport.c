/*
 * The transport's gRPC plumbing: arming requests, the worker loops, sending
 * replies, start and stop. What a call does is dispatch.c's; the call's
 * states are in server/call.h.
 */
#include "server/transport.h"

#include <absl/base/options.h>
#include <dlfcn.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/bgthread.h"
#include "common/clock.h"
#include "common/log.h"
#include "server/call.h"
#include "server/status_details.h"
#include "server/tls.h"

/* Requests kept armed per method per worker: calls that arrive together
 * are matched without waiting for a re-arm. */
#define EG_ARMED_PER_METHOD 4
/* The longest a new connection may take to handshake (eg_server_create). */
#define EG_HANDSHAKE_TIMEOUT_MS 10000

/* ==== arming ================================================================ */

static eg_call *eg_call_new(eg_worker *w, size_t mi) {
  eg_call *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  atomic_fetch_add(&w->tp->calls, 1);
  c->w = w;
  c->mi = mi;
  c->state = EG_CALL_WAITING;
  grpc_metadata_array_init(&c->md);
  grpc_call_details_init(&c->details);
  return c;
}

void eg_call_free(eg_call *c) {
  eg_reaper_remove(c->w->tp->reaper, &c->reap);
  /* Every call ends here (answered, refused, cancelled, a stream's end):
   * its tenant's concurrency place goes back with it. */
  eg_limits_release(c->w->tp->srv->limits, c->hold);
  if (c->fwd.call) eg_client_exchange_end(&c->fwd);
  grpc_metadata_array_destroy(&c->md);
  grpc_call_details_destroy(&c->details);
  if (c->payload) grpc_byte_buffer_destroy(c->payload);
  if (c->out) grpc_byte_buffer_destroy(c->out);
  atomic_fetch_sub(&c->w->tp->pending_reply, (int_fast64_t)c->out_pending);
  grpc_slice_unref(c->status_details);
  grpc_slice_unref(c->lsn_md.value);
  for (size_t i = 0; i < 2; i++) {
    grpc_slice_unref(c->error_md[i].key);
    grpc_slice_unref(c->error_md[i].value);
  }
  if (c->call) grpc_call_unref(c->call);
  if (c->stream_cq) {
    grpc_completion_queue_shutdown(c->stream_cq);
    while (grpc_completion_queue_pluck(c->stream_cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
               .type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(c->stream_cq);
  }
  eg_arena_free(c->req.arena);
  atomic_fetch_sub(&c->w->tp->calls, 1);
  free(c);
}

void eg_arm(eg_worker *w, size_t mi) {
  eg_transport *tp = w->tp;
  eg_call *c = eg_call_new(w, mi);
  if (!c) return;
  int stream = mi != SIZE_MAX && tp->methods[mi]->stream;
  /* A stream's events go to a queue its own thread plucks; the arrival is
   * still announced on the worker's queue. */
  if (stream) c->stream_cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_call_error ce =
      mi == SIZE_MAX
          ? grpc_server_request_call(tp->server, &c->call, &c->details, &c->md, w->cq, w->cq, c)
          : grpc_server_request_registered_call(tp->server, tp->handles[mi], &c->call, &c->deadline,
                                                &c->md, stream ? NULL : &c->payload,
                                                stream ? c->stream_cq : w->cq, w->cq, c);
  if (ce != GRPC_CALL_OK) eg_call_free(c);
}

/* ==== replying ============================================================== */

/* Counts len reply bytes as pending until the call's reply completes
 * (eg_call_free), or refuses them (0, with *code and *msg set, busy holding
 * the message) when that would pass --max-pending-reply-bytes: clients that
 * do not read must not make the server hold replies without bound. A reply
 * alone always goes (even one larger than the cap), so every call can
 * succeed once the others were read. */
static int eg_pending_take(eg_call *c, size_t len, int *code, const char **msg, char *busy) {
  eg_transport *tp = c->w->tp;
  int64_t cap = tp->srv->cfg->max_pending_reply_bytes;
  int_fast64_t was = atomic_fetch_add(&tp->pending_reply, (int_fast64_t)len);
  if (was > 0 && was + (int64_t)len > cap) {
    atomic_fetch_sub(&tp->pending_reply, (int_fast64_t)len);
    snprintf(busy, 160, "server busy: %lld bytes of replies not yet read by clients "
             "(--max-pending-reply-bytes %lld); retry", (long long)was, (long long)cap);
    *code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    *msg = busy;
    c->reply_err = EG_EBUSY;
    return 0;
  }
  c->out_pending = len;
  return 1;
}

const grpc_slice *eg_md_find(const grpc_metadata_array *md, const char *key) {
  for (size_t i = 0; i < md->count; i++)
    if (grpc_slice_str_cmp(md->metadata[i].key, key) == 0) return &md->metadata[i].value;
  return NULL;
}

/* 1 if the slice is a request id as eg_request_id_new makes them. */
static int eg_request_id_ok(const grpc_slice *id) {
  size_t n = GRPC_SLICE_LENGTH(*id);
  const uint8_t *p = GRPC_SLICE_START_PTR(*id);
  if (n == 0 || n > EG_REQUEST_ID_MAX) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) return 0;
  return 1;
}

size_t eg_error_metadata(eg_call *c, int code, eg_err e, const char *msg) {
  const grpc_slice *details = NULL, *id = NULL;
  char rid[EG_REQUEST_ID_MAX + 1];
  /* A forwarded write's answer is the primary's, its id and (where they
   * are the status sent) its details. An answer without a valid id is
   * not an engramd's (an older primary's, gRPC core's): its details, if
   * any, are not relayed; this replica builds its own, under a new id. */
  if (c->fwd.call) {
    id = eg_md_find(&c->fwd.trailing, "engram-request-id");
    if (id && !eg_request_id_ok(id)) id = NULL;
    if (id) details = eg_md_find(&c->fwd.trailing, "grpc-status-details-bin");
  }
  if (id)
    snprintf(rid, sizeof rid, "%.*s", (int)GRPC_SLICE_LENGTH(*id),
             (const char *)GRPC_SLICE_START_PTR(*id));
  else
    eg_request_id_new(rid);
  /* The id first: when the details cannot be built (memory), it still
   * goes, alone. */
  c->error_md[0].key = grpc_slice_from_static_string("engram-request-id");
  c->error_md[0].value = grpc_slice_from_copied_string(rid);
  c->error_md[1].key = grpc_slice_from_static_string("grpc-status-details-bin");
  c->error_md[1].value = id ? eg_status_details_relay(details, code, e, msg, rid)
                            : eg_status_details_retry(code, e, msg, rid, c->retry_ms);
  if (code == GRPC_STATUS_INTERNAL || code == GRPC_STATUS_DATA_LOSS) {
    /* Not the client's raw path: a log line carries no request text. */
    const char *method = c->mi == SIZE_MAX ? "unknown" : c->w->tp->methods[c->mi]->path;
    eg_log_field f[] = {
        {"method", method}, {"request_id", rid}, {"reason", eg_status_reason(code, e)}};
    eg_log_with(EG_LOG_ERROR, f, 3, "%s failed: %s", method, msg);
  }
  return GRPC_SLICE_LENGTH(c->error_md[1].value) ? 2 : 1;
}

void eg_reply_raw(eg_call *c, int code, const char *msg, grpc_byte_buffer *payload,
                         uint64_t lsn) {
  char busy[160];
  grpc_op ops[4];
  size_t n = 0;
  memset(ops, 0, sizeof ops);
  ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (lsn && code == GRPC_STATUS_OK) {
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, lsn);
    c->lsn_md.key = grpc_slice_from_static_string("engram-lsn");
    c->lsn_md.value = grpc_slice_from_copied_string(buf);
    ops[n].data.send_initial_metadata.count = 1;
    ops[n].data.send_initial_metadata.metadata = &c->lsn_md;
  }
  n++;
  if (payload && !eg_pending_take(c, grpc_byte_buffer_length(payload), &code, &msg, busy)) {
    grpc_byte_buffer_destroy(payload);
    payload = NULL;
  }
  if (payload) {
    eg_reaper_sent(c->w->tp->reaper, grpc_byte_buffer_length(payload));
    c->out = payload;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->out;
  }
  c->status_details = grpc_slice_from_copied_string(msg);
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = (grpc_status_code)code;
  ops[n].data.send_status_from_server.status_details = &c->status_details;
  if (code != GRPC_STATUS_OK) {
    ops[n].data.send_status_from_server.trailing_metadata_count =
        eg_error_metadata(c, code, c->reply_err, msg);
    ops[n].data.send_status_from_server.trailing_metadata = c->error_md;
  }
  n++;
  ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
  c->state = EG_CALL_REPLYING;
  eg_metrics_count(c->w->tp->metrics, c->mi, code, c->arrived_us);
  if (grpc_call_start_batch(c->call, ops, n, c, NULL) != GRPC_CALL_OK) {
    eg_log(EG_LOG_WARN, "cannot send a reply");
    eg_call_free(c);
  }
}

void eg_reply(eg_call *c, eg_err e, uint64_t lsn) {
  ProtobufCMessage *resp = c->req.resp;
  grpc_byte_buffer *payload = NULL;
  if (e == EG_OK && resp) {
    grpc_slice s = grpc_slice_malloc(protobuf_c_message_get_packed_size(resp));
    protobuf_c_message_pack(resp, GRPC_SLICE_START_PTR(s));
    payload = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
  }
  /* The message is the one part of the request eg_reply_raw still reads:
   * it lives in the call, not in the arena. */
  eg_arena_free(c->req.arena);
  c->req.arena = NULL;
  c->req.resp = NULL;
  if (c->payload && !c->fwd.call) {
    grpc_byte_buffer_destroy(c->payload);
    c->payload = NULL;
  }
  c->reply_err = e;
  eg_reply_raw(c, eg_err_grpc_code(e), e == EG_OK ? "" : c->req.msg[0] ? c->req.msg : eg_err_msg(e),
               payload, lsn);
}

/* ==== workers ============================================================== */

/* A call arrived: keep a request armed in its place, put a unary call under
 * the --call-timeout-ms cap (streams keep their own heartbeats), and hand
 * it to the dispatcher. */
static void eg_admit(eg_call *c) {
  eg_transport *tp = c->w->tp;
  c->arrived_us = eg_metrics_arrive(tp->metrics, c->mi);
  if (!atomic_load(&tp->stopping)) eg_arm(c->w, c->mi);
  if (c->mi == SIZE_MAX || !tp->methods[c->mi]->stream)
    eg_reaper_add(tp->reaper, &c->reap, c->call,
                  eg_mono_us() + tp->srv->cfg->call_timeout_ms * 1000);
  eg_on_call(c);
}

static void *eg_worker_main(void *arg) {
  eg_worker *w = arg;
  eg_thread_name("worker");
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type != GRPC_OP_COMPLETE) continue;
    eg_call *c = ev.tag;
    /* A failed request means the server is shutting down. */
    if (c->state == EG_CALL_WAITING && ev.success)
      eg_admit(c);
    else if (c->state == EG_CALL_FORWARDING)
      eg_forward_done(c, ev.success);
    else if (c->state == EG_CALL_COMMITTED)
      eg_write_reply(c);
    else
      eg_call_free(c);
  }
  return NULL;
}

/* ==== start and stop ======================================================== */

static eg_err eg_register_methods(eg_transport *tp) {
  size_t n = 0;
  for (size_t t = 0; eg_service_tables[t]; t++)
    for (const eg_method *m = eg_service_tables[t]; m->path; m++)
      if (!m->enabled || m->enabled(tp->srv)) n++;
  tp->methods = calloc(n, sizeof *tp->methods);
  tp->paths = calloc(n, sizeof *tp->paths);
  tp->handles = calloc(n, sizeof *tp->handles);
  if (!tp->methods || !tp->paths || !tp->handles) return EG_ENOMEM;
  for (size_t t = 0; eg_service_tables[t]; t++)
    for (const eg_method *m = eg_service_tables[t]; m->path; m++) {
      if (m->enabled && !m->enabled(tp->srv)) continue;
      tp->methods[tp->n_methods] = m;
      tp->paths[tp->n_methods] = m->path;
      tp->handles[tp->n_methods++] = grpc_server_register_method(
          tp->server, m->path, NULL,
          m->stream ? GRPC_SRM_PAYLOAD_NONE : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    }
  tp->metrics = eg_metrics_new(tp->paths, n);
  return tp->metrics ? EG_OK : EG_ENOMEM;
}

#define EG_STR2(x) #x
#define EG_STR(x) EG_STR2(x)

/* gRPC core's mutexes are abseil's, and the distribution's abseil is built
 * with its debug checks on: every lock and unlock then walks a
 * process-wide lock graph (under a global lock) looking for deadlock
 * cycles. That was 5-9% of the server's CPU per Health call
 * (docs/performance.md, "The gRPC ceiling"). Turn it off as a release
 * build of abseil has it: absl::SetMutexDeadlockDetectionMode(kIgnore),
 * found by its C++ name (the inline namespace from abseil's own options
 * header). An abseil without it (or built differently) is left alone. */
static void eg_absl_deadlock_checks_off(void) {
#if ABSL_OPTION_USE_INLINE_NAMESPACE
  const char *ns = EG_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  char name[160];
  snprintf(name, sizeof name, "_ZN4absl%zu%s29SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE",
           strlen(ns), ns);
#else
  const char *name = "_ZN4absl29SetMutexDeadlockDetectionModeENS_15OnDeadlockCycleE";
#endif
  void (*set_mode)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, name);
  if (set_mode) set_mode(0); /* absl::OnDeadlockCycle::kIgnore */
}

static grpc_server *eg_server_create(const eg_config *cfg) {
  grpc_arg args[] = {
      /* Streams one connection may have open at once; more wait in the
       * client's queue instead of each pinning a reply here. */
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_MAX_CONCURRENT_STREAMS,
       .value.integer = cfg->max_streams_per_conn},
      /* Without this a stale server on the same port silently shares it. */
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0},
      /* Ping idle connections so a replica (or client) whose host died is
       * noticed and its streams end; accept the clients' keepalive pings
       * (libengram pings every 10 s). */
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIME_MS, .value.integer = 10000},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS, .value.integer = 5000},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, .value.integer = 1},
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
       .value.integer = 5000},
      {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_HTTP2_MAX_PING_STRIKES, .value.integer = 0},
      /* A connection that has not finished its handshake (TLS, HTTP/2
       * preface) by then is closed: gRPC's default, 120 s, lets a client
       * that opens sockets and sends a byte hold tens of KB each. */
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
       .value.integer = EG_HANDSHAKE_TIMEOUT_MS},
      /* PutCheckpoint and PutWrites carry more than gRPC's default 4 MiB;
       * their own limits (svc_checkpoint.c) name the field past which. */
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
       .value.integer = (int)eg_config_max_request_bytes(cfg)},
      /* Last (left out when 0): --max-connection-age-ms sends GOAWAY to a
       * connection that old, so clients reconnect and re-balance over the
       * nodes (a scaled-out replica gets reads). Its grace stays gRPC's
       * (unbounded): calls in flight, long streams too, finish. */
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_MAX_CONNECTION_AGE_MS,
       .value.integer = (int)cfg->max_connection_age_ms},
  };
  size_t n = sizeof args / sizeof args[0];
  grpc_channel_args ca = {.num_args = cfg->max_connection_age_ms > 0 ? n : n - 1, .args = args};
  return grpc_server_create(&ca, NULL);
}

static void eg_transport_free(eg_transport *tp) {
  for (int i = 0; i < tp->n_workers; i++) {
    if (tp->workers[i].cq) grpc_completion_queue_destroy(tp->workers[i].cq);
    eg_store_reader_free(tp->workers[i].reader);
  }
  if (tp->shutdown_cq) grpc_completion_queue_destroy(tp->shutdown_cq);
  free(tp->workers);
  eg_parking_free(tp->parking);
  eg_reaper_stop(tp->reaper);
  eg_metrics_free(tp->metrics);
  free(tp->methods);
  free(tp->paths);
  free(tp->handles);
  free(tp);
}

/* Starts the worker threads; err says why one could not start. Before
 * any port is bound, so a failure can still destroy the server; a worker
 * only waits on its queue until requests are armed. */
static eg_err eg_workers_start(eg_transport *tp, char *err, size_t errlen) {
  for (int i = 0; i < tp->n_workers; i++) {
    eg_worker *w = &tp->workers[i];
    int rc = pthread_create(&w->thread, NULL, eg_worker_main, w);
    if (rc != 0) {
      snprintf(err, errlen, "cannot start worker thread %d of %d (--workers): %s", i + 1,
               tp->n_workers, strerror(rc));
      return EG_EUNAVAIL;
    }
    w->started = 1;
  }
  return EG_OK;
}

/* Stops the workers a failed start left running (nothing was armed). */
static void eg_workers_abort(eg_transport *tp) {
  for (int i = 0; i < tp->n_workers; i++)
    if (tp->workers[i].cq) grpc_completion_queue_shutdown(tp->workers[i].cq);
  for (int i = 0; i < tp->n_workers; i++)
    if (tp->workers[i].started) pthread_join(tp->workers[i].thread, NULL);
}

eg_err eg_transport_start(const eg_srv *srv, eg_writer *writer, int workers, const char *listen,
                          int *port, eg_transport **out, char *err, size_t errlen) {
  eg_transport *tp = calloc(1, sizeof *tp);
  eg_err e = EG_ENOMEM;
  if (!tp) return e;
  tp->srv = srv;
  tp->writer = writer;
  tp->n_workers = workers;
  if (!(tp->workers = calloc((size_t)workers, sizeof *tp->workers))) goto fail;
  eg_absl_deadlock_checks_off();
  tp->server = eg_server_create(srv->cfg);
  if ((e = eg_register_methods(tp)) != EG_OK) goto fail;
  tp->shutdown_cq = grpc_completion_queue_create_for_next(NULL);
  grpc_server_register_completion_queue(tp->server, tp->shutdown_cq, NULL);
  for (int i = 0; i < workers; i++) {
    tp->workers[i].tp = tp;
    tp->workers[i].cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(tp->server, tp->workers[i].cq, NULL);
    if ((e = eg_store_reader_new(srv->store, &tp->workers[i].reader)) != EG_OK) goto fail;
  }
  if ((e = eg_reaper_start(srv->cfg->call_timeout_ms, &tp->reaper, err, errlen)) != EG_OK) goto fail;
  if ((e = eg_parking_start(srv->store, &tp->parking)) != EG_OK) {
    snprintf(err, errlen, "cannot start the engram-min-lsn parking thread: %s", eg_err_msg(e));
    goto fail;
  }
  if ((e = eg_workers_start(tp, err, errlen)) != EG_OK) goto fail;
  grpc_server_credentials *creds = eg_tls_server_credentials(srv->tls);
  *port = creds ? grpc_server_add_http2_port(tp->server, listen, creds) : 0;
  if (creds) grpc_server_credentials_release(creds);
  if (*port == 0) {
    snprintf(err, errlen, "--listen %s: cannot bind (address in use or invalid)", listen);
    e = EG_EINVAL;
    goto fail;
  }
  grpc_server_start(tp->server);
  for (int i = 0; i < workers; i++) {
    eg_worker *w = &tp->workers[i];
    for (size_t mi = 0; mi < tp->n_methods; mi++)
      for (int k = 0; k < EG_ARMED_PER_METHOD; k++) eg_arm(w, mi);
    if (i == 0) eg_arm(w, SIZE_MAX);
  }
  *out = tp;
  return EG_OK;
fail:
  eg_workers_abort(tp);
  eg_parking_stop(tp->parking);
  if (tp->server) grpc_server_destroy(tp->server);
  eg_transport_free(tp);
  return e;
}

/* A handler still running --call-timeout-ms after its call was cancelled
 * is stuck: exit without the rest of the drain rather than let gRPC abort
 * (every acknowledged write is already durable). */
static void eg_calls_stuck(eg_transport *tp) {
  eg_log(EG_LOG_ERROR,
         "a handler is still running %lld ms after the calls were cancelled "
         "(--call-timeout-ms); exiting without draining",
         (long long)tp->srv->cfg->call_timeout_ms);
  _exit(1);
}

/* The server's shutdown completes while a worker may still be in a handler
 * and the writer may still hold queued writes: each will start a batch
 * (its reply, or the hand-back) on its worker's queue, which must not be
 * shut down before that. So wait until every call is freed (the armed
 * requests failed, every handler returned and its reply completed) and
 * every stream thread is past freeing its call, until `until` (eg_mono_us):
 * a stream's copy of the store cannot be stopped midway, so streams get
 * the same bound as unary handlers. */
static void eg_calls_drain(eg_transport *tp, int64_t until) {
  while (atomic_load(&tp->calls) > 0 || atomic_load(&tp->streams) > 0) {
    if (eg_mono_us() > until) eg_calls_stuck(tp);
    usleep(1000);
  }
}

void eg_transport_stop(eg_transport *tp, int64_t grace_ms) {
  atomic_store(&tp->stopping, 1);
  grpc_server_shutdown_and_notify(tp->server, tp->shutdown_cq, tp);
  /* Parked reads are answered now (UNAVAILABLE: retry on another node);
   * it stays allocated until the workers are gone (eg_transport_free). */
  eg_parking_stop(tp->parking);
  gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                       gpr_time_from_millis(grace_ms, GPR_TIMESPAN));
  grpc_event ev = grpc_completion_queue_next(tp->shutdown_cq, deadline, NULL);
  /* One --call-timeout-ms clock from the cancel (or from the shutdown, if
   * every call ended within the grace) for the shutdown and the drain. */
  int64_t until = eg_mono_us() + tp->srv->cfg->call_timeout_ms * 1000;
  if (ev.type == GRPC_QUEUE_TIMEOUT) {
    eg_log(EG_LOG_WARN, "calls still running after %lld ms; cancelling them",
           (long long)grace_ms);
    grpc_server_cancel_all_calls(tp->server);
    /* The shutdown completes once the handlers let go of their calls. */
    ev = grpc_completion_queue_next(
        tp->shutdown_cq,
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                     gpr_time_from_millis(tp->srv->cfg->call_timeout_ms, GPR_TIMESPAN)),
        NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) eg_calls_stuck(tp);
  }
  eg_calls_drain(tp, until);
  grpc_server_destroy(tp->server);
  for (int i = 0; i < tp->n_workers; i++) grpc_completion_queue_shutdown(tp->workers[i].cq);
  for (int i = 0; i < tp->n_workers; i++) pthread_join(tp->workers[i].thread, NULL);
  /* Every unary call is freed (and unregistered) by now. */
  grpc_completion_queue_shutdown(tp->shutdown_cq);
  while (grpc_completion_queue_next(tp->shutdown_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  eg_transport_free(tp);
}

const eg_metrics *eg_transport_metrics(const eg_transport *tp) { return tp->metrics; }
