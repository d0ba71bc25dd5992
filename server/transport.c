#include "server/transport.h"

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

#include "common/clock.h"
#include "common/rpc.h"
#include "replica/replica.h"
#include "server/parking.h"
#include "server/validate.h"

/* Requests kept armed per method per worker: calls that arrive together
 * are matched without waiting for a re-arm. */
#define EG_ARMED_PER_METHOD 4

typedef struct eg_worker eg_worker;

typedef enum {
  EG_CALL_WAITING,    /* armed, waiting for a call */
  EG_CALL_FORWARDING, /* a replica's write, at the primary */
  EG_CALL_COMMITTED,  /* a write the writer finished, handed back to its worker */
  EG_CALL_REPLYING,   /* the reply is on its way */
} eg_call_state;


/* One call, from the armed request to the reply's completion. It is the
 * completion-queue tag, and its first member makes it a writer item. */
typedef struct eg_call {
  eg_write_item item;
  eg_call_state state;
  eg_worker *w;
  size_t mi; /* index into the method table; SIZE_MAX: unregistered */
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array md;
  grpc_byte_buffer *payload;
  grpc_call_details details; /* unregistered calls only */
  grpc_completion_queue *stream_cq; /* streaming methods: the call's own queue */
  eg_req req;
  uint64_t lsn;    /* a write's commit, while it waits for replica acks */
  eg_err written; /* EG_CALL_COMMITTED: the write's outcome */
  eg_client_exchange fwd; /* EG_CALL_FORWARDING: the call to the primary */
  eg_parked park;             /* a read waiting for engram-min-lsn */
  const ProtobufCMessage *in; /* its decoded request, meanwhile */
  grpc_metadata lsn_md;
  grpc_byte_buffer *out;
  grpc_slice status_details;
  int cancelled;
} eg_call;

struct eg_worker {
  eg_transport *tp;
  grpc_completion_queue *cq;
  pthread_t thread;
  eg_txn *reader;
};

struct eg_transport {
  const eg_srv *srv;
  eg_writer *writer;
  grpc_server *server;
  grpc_completion_queue *shutdown_cq;
  const eg_method **methods;
  const char **paths;
  void **handles;
  eg_metrics *metrics;
  eg_parking *parking;
  size_t n_methods;
  eg_worker *workers;
  int n_workers;
  atomic_int stopping;
  atomic_int streams; /* stream threads still running */
};

static const eg_method *const eg_tables[] = {eg_session_methods, eg_health_methods,
                                             eg_admin_methods, eg_replication_methods,
                                             eg_memory_methods, eg_user_methods};

/* ==== arming ================================================================ */

static eg_call *eg_call_new(eg_worker *w, size_t mi) {
  eg_call *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->w = w;
  c->mi = mi;
  c->state = EG_CALL_WAITING;
  grpc_metadata_array_init(&c->md);
  grpc_call_details_init(&c->details);
  return c;
}

static void eg_call_free(eg_call *c) {
  if (c->fwd.call) eg_client_exchange_end(&c->fwd);
  grpc_metadata_array_destroy(&c->md);
  grpc_call_details_destroy(&c->details);
  if (c->payload) grpc_byte_buffer_destroy(c->payload);
  if (c->out) grpc_byte_buffer_destroy(c->out);
  grpc_slice_unref(c->status_details);
  grpc_slice_unref(c->lsn_md.value);
  if (c->call) grpc_call_unref(c->call);
  if (c->stream_cq) {
    grpc_completion_queue_shutdown(c->stream_cq);
    while (grpc_completion_queue_pluck(c->stream_cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
               .type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(c->stream_cq);
  }
  eg_arena_free(c->req.arena);
  free(c);
}

static void eg_arm(eg_worker *w, size_t mi) {
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

/* Sends grpc status code with msg and, when not NULL, the payload (which
 * the call now owns). lsn != 0 goes out as `engram-lsn`. Thread safety:
 * any thread (the writer replies to writes). */
static void eg_reply_raw(eg_call *c, int code, const char *msg, grpc_byte_buffer *payload,
                         uint64_t lsn) {
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
  if (payload) {
    c->out = payload;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->out;
  }
  c->status_details = grpc_slice_from_copied_string(msg);
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = (grpc_status_code)code;
  ops[n++].data.send_status_from_server.status_details = &c->status_details;
  ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
  c->state = EG_CALL_REPLYING;
  eg_metrics_count(c->w->tp->metrics, c->mi, code);
  if (grpc_call_start_batch(c->call, ops, n, c, NULL) != GRPC_CALL_OK) {
    fprintf(stderr, "engramd: cannot send a reply\n");
    eg_call_free(c);
  }
}

/* Sends status e (with the handler's message, or the table's) and, when
 * OK, the handler's response. */
static void eg_reply(eg_call *c, eg_err e, uint64_t lsn) {
  ProtobufCMessage *resp = c->req.resp;
  grpc_byte_buffer *payload = NULL;
  if (e == EG_OK && resp) {
    grpc_slice s = grpc_slice_malloc(protobuf_c_message_get_packed_size(resp));
    protobuf_c_message_pack(resp, GRPC_SLICE_START_PTR(s));
    payload = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
  }
  eg_reply_raw(c, eg_err_grpc_code(e), e == EG_OK ? "" : c->req.msg[0] ? c->req.msg : eg_err_msg(e),
               payload, lsn);
}

static eg_err eg_reply_msg(eg_call *c, eg_err e, const char *fmt, const char *arg) {
  snprintf(c->req.msg, sizeof c->req.msg, fmt, arg);
  return e;
}

/* ==== handling ============================================================== */

static eg_err eg_write_apply(eg_write_item *item, eg_txn *t) {
  eg_call *c = (eg_call *)item;
  c->req.msg[0] = '\0';
  c->req.resp = NULL;
  c->req.more = 0;
  return c->w->tp->methods[c->mi]->apply(&c->req, t);
}

/* --sync-replicas: the write is durable here; answer once enough
 * replicas applied it, or say how many did. */
static void eg_sync_done(void *arg, int acked) {
  eg_call *c = arg;
  const eg_config *cfg = c->w->tp->srv->cfg;
  if (acked >= cfg->sync_replicas) {
    eg_reply(c, EG_OK, c->lsn);
    return;
  }
  snprintf(c->req.msg, sizeof c->req.msg,
           "committed on the primary at lsn %" PRIu64 " but only %d of %d replicas applied it "
           "within %lld ms",
           c->lsn, acked, cfg->sync_replicas, (long long)cfg->sync_timeout_ms);
  eg_reply(c, EG_EUNAVAIL, 0);
}

/* On the worker: answer a finished write (or hold it for replica acks). */
static void eg_write_reply(eg_call *c) {
  eg_repl *repl = c->w->tp->srv->repl;
  if (c->written == EG_OK && c->lsn && repl && eg_repl_sync_hold(repl, c->lsn, eg_sync_done, c) == 0)
    return;
  eg_reply(c, c->written, c->lsn);
}

/* On the writer, after the commit. Packing and sending a reply costs as
 * much as applying a write: when other writes wait (busy), the writer only
 * hands the call back to its worker (an empty batch completes at once on
 * the worker's queue); alone, it replies itself, saving the hop. */
static void eg_write_done(eg_write_item *item, eg_err err, uint64_t lsn, int busy) {
  eg_call *c = (eg_call *)item;
  if (err == EG_OK && c->req.more) {
    c->req.more = 0;
    eg_writer_submit(c->w->tp->writer, item);
    return;
  }
  c->lsn = lsn;
  c->written = err;
  c->state = EG_CALL_COMMITTED;
  if (!busy || grpc_call_start_batch(c->call, NULL, 0, c, NULL) != GRPC_CALL_OK) eg_write_reply(c);
}

static const grpc_slice *eg_md_find(const grpc_metadata_array *md, const char *key) {
  for (size_t i = 0; i < md->count; i++)
    if (grpc_slice_str_cmp(md->metadata[i].key, key) == 0) return &md->metadata[i].value;
  return NULL;
}

static eg_err eg_authorize(eg_call *c, const eg_method *m) {
  const grpc_slice *v = eg_md_find(&c->md, "authorization");
  eg_err e = eg_auth_check(c->w->tp->srv->auth, v ? (const char *)GRPC_SLICE_START_PTR(*v) : NULL,
                           v ? GRPC_SLICE_LENGTH(*v) : 0, m->role, &c->req.tenant);
  if (e == EG_EUNAUTH)
    return eg_reply_msg(c, e, "authorization: missing or unknown bearer token%s", "");
  if (e == EG_EPERM) return eg_reply_msg(c, e, "authorization: this token's role may not call %s", m->path);
  return e;
}

static void eg_in_free(void *p) { protobuf_c_message_free_unpacked(p, NULL); }

/* Decodes the payload; the request lives as long as the call. Its strings
 * are checked on the wire bytes, as unpacking cuts them at a NUL. */
static eg_err eg_decode(eg_call *c, const eg_method *m, ProtobufCMessage **out) {
  if (!c->payload) return eg_reply_msg(c, EG_EINVAL, "request: no message was sent%s", "");
  grpc_byte_buffer_reader rd;
  if (!grpc_byte_buffer_reader_init(&rd, c->payload)) return EG_ENOMEM;
  grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
  grpc_byte_buffer_reader_destroy(&rd);
  eg_err e = eg_validate_wire(m->in, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), c->req.msg,
                              sizeof c->req.msg);
  if (e == EG_OK)
    *out = protobuf_c_message_unpack(m->in, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
  grpc_slice_unref(s);
  if (e != EG_OK) return e;
  if (!*out) return eg_reply_msg(c, EG_EINVAL, "request: not a valid %s message", m->in->name);
  if (eg_arena_defer(c->req.arena, eg_in_free, *out) != 0) return EG_ENOMEM;
  return EG_OK;
}

/* engram-min-lsn, or 0 when absent. */
static eg_err eg_min_lsn(eg_call *c, uint64_t *want) {
  *want = 0;
  if (eg_client_metadata_u64(&c->md, "engram-min-lsn", want) < 0)
    return eg_reply_msg(c, EG_EINVAL, "engram-min-lsn: not a number%s", "");
  return EG_OK;
}

/* A write that reached a replica: the primary answers it, and the client
 * gets that answer as it is (status, message, payload, engram-lsn). The
 * call to the primary completes on this worker's queue, so the worker
 * serves other calls meanwhile. The caller's own authorization goes along:
 * the primary authenticates the caller, not this replica. */
static void eg_forward(eg_call *c, const eg_method *m) {
  char authz[4096] = "";
  const grpc_slice *v = eg_md_find(&c->md, "authorization");
  if (v) snprintf(authz, sizeof authz, "%.*s", (int)GRPC_SLICE_LENGTH(*v), (const char *)GRPC_SLICE_START_PTR(*v));
  c->state = EG_CALL_FORWARDING;
  if (eg_client_exchange_start(&c->fwd, eg_repl_upstream(c->w->tp->srv->repl), c->w->cq, m->path,
                               c->deadline, c->payload, authz, 0, c) != 0) {
    snprintf(c->req.msg, sizeof c->req.msg, "cannot reach the primary");
    eg_reply(c, EG_EUNAVAIL, 0);
  }
}

/* The primary answered a forwarded write: pass its answer on. */
static void eg_forward_done(eg_call *c, int ok) {
  eg_client_exchange *f = &c->fwd;
  char msg[512];
  if (!ok) {
    eg_reply_raw(c, GRPC_STATUS_UNAVAILABLE, "forwarding to the primary failed", NULL, 0);
    return;
  }
  snprintf(msg, sizeof msg, "%.*s", (int)GRPC_SLICE_LENGTH(f->details),
           (const char *)GRPC_SLICE_START_PTR(f->details));
  grpc_byte_buffer *resp = f->code == GRPC_STATUS_OK ? f->recv : NULL;
  if (resp) f->recv = NULL; /* the reply owns it now */
  eg_reply_raw(c, f->code, msg, resp, eg_client_exchange_lsn(f));
}

static void *eg_stream_main(void *arg) {
  eg_call *c = arg;
  eg_transport *tp = c->w->tp;
  const eg_method *m = tp->methods[c->mi];
  eg_err e = eg_authorize(c, m);
  if (e == EG_OK) {
    m->stream(tp->srv, c->call, c->stream_cq);
  } else {
    grpc_slice details = grpc_slice_from_copied_string(c->req.msg);
    int cancelled;
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[1].data.send_status_from_server.status = (grpc_status_code)eg_err_grpc_code(e);
    ops[1].data.send_status_from_server.status_details = &details;
    ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[2].data.recv_close_on_server.cancelled = &cancelled;
    if (grpc_call_start_batch(c->call, ops, 3, ops, NULL) == GRPC_CALL_OK)
      grpc_completion_queue_pluck(c->stream_cq, ops, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_slice_unref(details);
  }
  eg_metrics_count(tp->metrics, c->mi, eg_err_grpc_code(e));
  eg_call_free(c);
  atomic_fetch_sub(&tp->streams, 1);
  return NULL;
}

/* Hands a streaming call to a thread of its own. */
static void eg_start_stream(eg_call *c) {
  pthread_t t;
  pthread_attr_t a;
  eg_transport *tp = c->w->tp;
  atomic_fetch_add(&tp->streams, 1);
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&t, &a, eg_stream_main, c) != 0) {
    grpc_call_cancel(c->call, NULL);
    eg_call_free(c);
    atomic_fetch_sub(&tp->streams, 1);
  }
  pthread_attr_destroy(&a);
}

static eg_err eg_read_with(eg_call *c, const eg_method *m, const ProtobufCMessage *in,
                           eg_txn *reader) {
  if (m->no_store) return m->read(&c->req, in);
  eg_err e = eg_store_reader_begin(reader);
  if (e != EG_OK) return e;
  c->req.rtxn = reader;
  e = m->read(&c->req, in);
  eg_store_reader_end(reader);
  c->req.rtxn = NULL;
  return e;
}

/* A parked read's turn: its LSN arrived (ready), or its time ran out. */
static void eg_parked_run(eg_parked *p, int ready, eg_txn *reader) {
  eg_call *c = (eg_call *)((char *)p - offsetof(eg_call, park));
  eg_err e = EG_EUNAVAIL;
  if (ready)
    e = eg_read_with(c, c->w->tp->methods[c->mi], c->in, reader);
  else
    snprintf(c->req.msg, sizeof c->req.msg,
             "engram-min-lsn %" PRIu64 " not applied on this node yet (at %" PRIu64 "); retry",
             p->lsn, eg_store_last_lsn(c->w->tp->srv->store));
  eg_reply(c, e, 0);
}

/* Parks the read until this node applied want, bounded by the call's
 * deadline and --max-lsn-wait-ms. Returns 0 if parked. */
static int eg_park(eg_call *c, const ProtobufCMessage *in, uint64_t want) {
  eg_transport *tp = c->w->tp;
  gpr_timespec d = gpr_convert_clock_type(c->deadline, GPR_CLOCK_MONOTONIC);
  int64_t until = eg_parking_now_us() + tp->srv->cfg->max_lsn_wait_ms * 1000;
  int64_t deadline = d.tv_sec > INT64_MAX / 2000000 ? INT64_MAX : d.tv_sec * 1000000 + d.tv_nsec / 1000;
  c->in = in;
  c->park = (eg_parked){.lsn = want, .until_us = deadline < until ? deadline : until,
                        .run = eg_parked_run};
  return eg_parking_add(tp->parking, &c->park);
}

/* Runs a read now, or parks it (*parked = 1) until its engram-min-lsn. */
static eg_err eg_run_read(eg_call *c, const eg_method *m, const ProtobufCMessage *in, int *parked) {
  uint64_t want;
  eg_err e = eg_min_lsn(c, &want);
  if (e != EG_OK) return e;
  if (want > eg_store_last_lsn(c->w->tp->srv->store)) {
    if (eg_park(c, in, want) == 0) {
      *parked = 1;
      return EG_OK;
    }
    snprintf(c->req.msg, sizeof c->req.msg, "engram-min-lsn: node is stopping; retry elsewhere");
    return EG_EUNAVAIL;
  }
  return eg_read_with(c, m, in, c->w->reader);
}

static void eg_on_call(eg_call *c) {
  eg_transport *tp = c->w->tp;
  if (!atomic_load(&tp->stopping)) eg_arm(c->w, c->mi);
  if (c->mi == SIZE_MAX) {
    char path[200];
    snprintf(path, sizeof path, "%.*s", (int)GRPC_SLICE_LENGTH(c->details.method),
             (const char *)GRPC_SLICE_START_PTR(c->details.method));
    eg_reply_msg(c, EG_EUNIMPL, "unknown method %s", path);
    eg_reply(c, EG_EUNIMPL, 0);
    return;
  }
  const eg_method *m = tp->methods[c->mi];
  ProtobufCMessage *in = NULL;
  eg_err e;
  if (m->stream) {
    eg_start_stream(c);
    return;
  }
  if (!m->read && tp->srv->repl && !eg_repl_is_primary(tp->srv->repl)) {
    eg_forward(c, m);
    return;
  }
  c->req.srv = tp->srv;
  c->req.now_us = eg_now_us();
  if (!(c->req.arena = eg_arena_new())) e = EG_ENOMEM;
  else if ((e = eg_authorize(c, m)) == EG_OK && (e = eg_decode(c, m, &in)) == EG_OK) {
    if (m->read) {
      int parked = 0;
      e = eg_run_read(c, m, in, &parked);
      if (parked) return;
    } else if ((e = m->prepare(&c->req, in)) == EG_OK) {
      c->item.apply = eg_write_apply;
      c->item.done = eg_write_done;
      eg_writer_submit(tp->writer, &c->item);
      return;
    }
  }
  eg_reply(c, e, 0);
}

static void *eg_worker_main(void *arg) {
  eg_worker *w = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type != GRPC_OP_COMPLETE) continue;
    eg_call *c = ev.tag;
    /* A failed request means the server is shutting down. */
    if (c->state == EG_CALL_WAITING && ev.success)
      eg_on_call(c);
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
  for (size_t t = 0; t < sizeof eg_tables / sizeof eg_tables[0]; t++)
    for (const eg_method *m = eg_tables[t]; m->path; m++) n++;
  tp->methods = calloc(n, sizeof *tp->methods);
  tp->paths = calloc(n, sizeof *tp->paths);
  tp->handles = calloc(n, sizeof *tp->handles);
  if (!tp->methods || !tp->paths || !tp->handles) return EG_ENOMEM;
  for (size_t t = 0; t < sizeof eg_tables / sizeof eg_tables[0]; t++)
    for (const eg_method *m = eg_tables[t]; m->path; m++) {
      tp->methods[tp->n_methods] = m;
      tp->paths[tp->n_methods] = m->path;
      tp->handles[tp->n_methods++] = grpc_server_register_method(
          tp->server, m->path, NULL,
          m->stream ? GRPC_SRM_PAYLOAD_NONE : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    }
  tp->metrics = eg_metrics_new(tp->paths, n);
  return tp->metrics ? EG_OK : EG_ENOMEM;
}

static grpc_server *eg_server_create(void) {
  grpc_arg args[] = {
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
  };
  grpc_channel_args ca = {.num_args = sizeof args / sizeof args[0], .args = args};
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
  eg_metrics_free(tp->metrics);
  free(tp->methods);
  free(tp->paths);
  free(tp->handles);
  free(tp);
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
  tp->server = eg_server_create();
  if ((e = eg_register_methods(tp)) != EG_OK) goto fail;
  tp->shutdown_cq = grpc_completion_queue_create_for_next(NULL);
  grpc_server_register_completion_queue(tp->server, tp->shutdown_cq, NULL);
  for (int i = 0; i < workers; i++) {
    tp->workers[i].tp = tp;
    tp->workers[i].cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(tp->server, tp->workers[i].cq, NULL);
    if ((e = eg_store_reader_new(srv->store, &tp->workers[i].reader)) != EG_OK) goto fail;
  }
  grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
  *port = grpc_server_add_http2_port(tp->server, listen, creds);
  grpc_server_credentials_release(creds);
  if (*port == 0) {
    snprintf(err, errlen, "--listen %s: cannot bind (address in use or invalid)", listen);
    e = EG_EINVAL;
    goto fail;
  }
  if ((e = eg_parking_start(srv->store, &tp->parking)) != EG_OK) goto fail;
  grpc_server_start(tp->server);
  for (int i = 0; i < workers; i++) {
    eg_worker *w = &tp->workers[i];
    for (size_t mi = 0; mi < tp->n_methods; mi++)
      for (int k = 0; k < EG_ARMED_PER_METHOD; k++) eg_arm(w, mi);
    if (i == 0) eg_arm(w, SIZE_MAX);
    pthread_create(&w->thread, NULL, eg_worker_main, w);
  }
  *out = tp;
  return EG_OK;
fail:
  if (tp->server) grpc_server_destroy(tp->server);
  eg_transport_free(tp);
  return e;
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
  if (ev.type == GRPC_QUEUE_TIMEOUT) {
    fprintf(stderr, "engramd: calls still running after %lld ms; cancelling them\n",
            (long long)grace_ms);
    grpc_server_cancel_all_calls(tp->server);
    grpc_completion_queue_next(tp->shutdown_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  }
  /* Stream threads free their calls after the server let go of them. */
  while (atomic_load(&tp->streams) > 0) usleep(1000);
  grpc_server_destroy(tp->server);
  for (int i = 0; i < tp->n_workers; i++) grpc_completion_queue_shutdown(tp->workers[i].cq);
  for (int i = 0; i < tp->n_workers; i++) pthread_join(tp->workers[i].thread, NULL);
  grpc_completion_queue_shutdown(tp->shutdown_cq);
  while (grpc_completion_queue_next(tp->shutdown_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  eg_transport_free(tp);
}

const eg_metrics *eg_transport_metrics(const eg_transport *tp) { return tp->metrics; }
