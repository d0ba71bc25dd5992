/*
 * The dispatcher: what a call does once it arrived. Authorize, decode, and
 * route it: a read runs on the worker (or parks until its engram-min-lsn),
 * a write goes to the writer (and may wait for replica acks), a write on a
 * replica is forwarded to the primary, a stream gets a thread of its own.
 * The call's states and who moves them: server/call.h.
 */
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bgthread.h"
#include "common/clock.h"
#include "common/grpc_code.h"
#include "common/log.h"
#include "common/utf8.h"
#include "replica/replica.h"
#include "server/blind_key.h"
#include "server/call.h"
#include "server/validate.h"

static eg_err eg_reply_msg(eg_call *c, eg_err e, const char *fmt, const char *arg) {
  snprintf(c->req.msg, sizeof c->req.msg, fmt, arg);
  return e;
}

/* The call's deadline on eg_mono_us's clock: the client's, or the
 * server's --call-timeout-ms cap if that comes first (a client may send
 * none). gRPC's monotonic clock is offset from CLOCK_MONOTONIC, so the
 * client's deadline is carried over as the time left. */
static int64_t eg_call_until_us(const eg_call *c) {
  int64_t now = eg_mono_us(), cap = c->reap.until_us;
  gpr_timespec left = gpr_time_sub(gpr_convert_clock_type(c->deadline, GPR_CLOCK_MONOTONIC),
                                   gpr_now(GPR_CLOCK_MONOTONIC));
  /* Seconds first: an infinite deadline's would overflow in microseconds. */
  if (left.tv_sec > (cap - now) / 1000000) return cap;
  int64_t mine = now + left.tv_sec * 1000000 + left.tv_nsec / 1000;
  return mine < cap ? mine : cap;
}

/* The same deadline as gRPC wants it (a forwarded call's). */
static gpr_timespec eg_call_deadline(const eg_call *c) {
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                      gpr_time_from_micros(eg_call_until_us(c) - eg_mono_us(), GPR_TIMESPAN));
}

/* The tenant's storage quota, after a write's apply in t (its own txn):
 * a write that grew the tenant's usage is refused when the usage before it
 * had reached the quota already (so one write may overshoot by its own
 * size); a write that frees space (a delete) always goes. */
static eg_err eg_quota_check(eg_call *c, eg_txn *t) {
  int64_t grew = eg_store_txn_usage_delta(t, c->req.tenant);
  uint64_t used;
  if (grew <= 0) return EG_OK;
  eg_err e = eg_store_tenant_usage(t, c->req.tenant, &used);
  if (e != EG_OK) return e;
  uint64_t before = used - (uint64_t)grew;
  if (before < c->quota) return EG_OK;
  eg_limits_count_quota(c->w->tp->srv->limits, c->hold);
  snprintf(c->req.msg, sizeof c->req.msg,
           "tenant %s: storage quota of %" PRIu64 " bytes reached (%" PRIu64 " bytes used); "
           "delete data or raise the quota", c->req.tenant, c->quota, before);
  return EG_EQUOTA;
}

static eg_err eg_write_apply(eg_write_item *item, eg_txn *t) {
  eg_call *c = (eg_call *)item;
  c->req.msg[0] = '\0';
  c->req.resp = NULL;
  c->req.more = 0;
  eg_err e = c->w->tp->methods[c->mi]->apply(&c->req, t);
  /* After apply (some take their blind context there): a failure rolls
   * back this item only. */
  if (e == EG_OK) e = eg_blind_key_check(&c->req, t);
  return e == EG_OK && c->quota ? eg_quota_check(c, t) : e;
}

/* The OK answer to a write committed here, unless this primary got
 * fenced meanwhile (its coordinator lease may have passed to another
 * node, whose history may not hold this write): then it is not
 * acknowledged, so two primaries never both acknowledge writes. Checked
 * last, after any --sync-replicas hold. */
static void eg_reply_committed(eg_call *c) {
  const eg_repl *repl = c->w->tp->srv->repl;
  if (repl && eg_repl_fenced(repl)) {
    snprintf(c->req.msg, sizeof c->req.msg,
             "the write is committed on this node at lsn %" PRIu64 " but this node is fenced (it "
             "could not renew its coordinator lease in time): it may be discarded by the next "
             "primary; retry with client_message_id", c->lsn);
    eg_reply(c, EG_EFENCED, 0);
    return;
  }
  eg_reply(c, EG_OK, c->lsn);
}

/* --sync-replicas: the write is durable here; answer once enough
 * replicas applied it, or say how many did. */
static void eg_sync_done(void *arg, int acked) {
  eg_call *c = arg;
  const eg_config *cfg = c->w->tp->srv->cfg;
  if (acked >= cfg->sync_replicas) {
    eg_reply_committed(c);
    return;
  }
  snprintf(c->req.msg, sizeof c->req.msg,
           "committed on the primary at lsn %" PRIu64 " but only %d of %d replicas applied it "
           "within %lld ms",
           c->lsn, acked, cfg->sync_replicas, (long long)cfg->sync_timeout_ms);
  eg_reply(c, EG_EUNAVAIL, 0);
}

/* On the worker: answer a finished write (or hold it for replica acks). */
void eg_write_reply(eg_call *c) {
  eg_repl *repl = c->w->tp->srv->repl;
  if (c->written == EG_OK && c->lsn && repl && eg_repl_sync_hold(repl, c->lsn, eg_sync_done, c) == 0)
    return;
  if (c->written == EG_OK)
    eg_reply_committed(c);
  else
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
    /* Nobody waits for the rest of a pass past its deadline: stop feeding
     * the writer (what committed stays; msg says how far it got). */
    if (!c->w->tp->methods[c->mi]->more_stops_at_deadline || eg_mono_us() < eg_call_until_us(c)) {
      eg_writer_submit(c->w->tp->writer, item);
      return;
    }
    err = EG_EDEADLINE;
    lsn = 0;
  }
  c->lsn = lsn;
  c->written = err;
  c->state = EG_CALL_COMMITTED;
  if (!busy || grpc_call_start_batch(c->call, NULL, 0, c, NULL) != GRPC_CALL_OK) eg_write_reply(c);
}

/* Appends the values of ctx's property `name` to who's SANs (sans has
 * EG_AUTH_CALLER_SANS_MAX places). */
static void eg_caller_sans(const grpc_auth_context *ctx, const char *name, int dns,
                           eg_auth_caller *who, eg_auth_san *sans) {
  grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, name);
  const grpc_auth_property *p;
  while ((p = grpc_auth_property_iterator_next(&it)) && who->n_sans < EG_AUTH_CALLER_SANS_MAX)
    sans[who->n_sans++] = (eg_auth_san){.dns = dns, .value = p->value, .len = p->value_length};
}

/* What the call presents (server/auth.h): its authorization header and,
 * with --tls-identities, its verified client certificate's URI and DNS
 * SANs. Returns the auth context the SANs point into (the caller releases
 * it), or NULL. */
static grpc_auth_context *eg_caller(eg_call *c, eg_auth_caller *who, eg_auth_san *sans) {
  const grpc_slice *v = eg_md_find(&c->md, "authorization");
  *who = (eg_auth_caller){.authz = v ? (const char *)GRPC_SLICE_START_PTR(*v) : NULL,
                          .authz_len = v ? GRPC_SLICE_LENGTH(*v) : 0,
                          .sans = sans};
  if (!c->w->tp->srv->cfg->tls_identities[0]) return NULL;
  grpc_auth_context *ctx = grpc_call_auth_context(c->call);
  if (!ctx) return NULL;
  /* --tls-client-ca makes gRPC require and verify the certificate: one
   * in the context was verified. */
  grpc_auth_property_iterator it =
      grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_PEM_CERT_PROPERTY_NAME);
  who->has_cert = grpc_auth_property_iterator_next(&it) != NULL;
  eg_caller_sans(ctx, GRPC_PEER_URI_PROPERTY_NAME, 0, who, sans);
  eg_caller_sans(ctx, GRPC_PEER_DNS_PROPERTY_NAME, 1, who, sans);
  return ctx;
}

/* 1 if the call came with a verified client certificate and
 * --tls-identities could map it. */
static int eg_cert_caller(eg_call *c) {
  eg_auth_san sans[EG_AUTH_CALLER_SANS_MAX];
  eg_auth_caller who;
  grpc_auth_context *ctx = eg_caller(c, &who, sans);
  if (ctx) grpc_auth_context_release(ctx);
  return who.has_cert;
}

/* Checks the caller for m's role; req.tenant then points at the call's
 * own copy of its tenant (tables may be swapped by a reload meanwhile). */
static eg_err eg_authorize(eg_call *c, const eg_method *m) {
  eg_auth_san sans[EG_AUTH_CALLER_SANS_MAX];
  eg_auth_caller who;
  char why[sizeof c->req.msg];
  grpc_auth_context *ctx = eg_caller(c, &who, sans);
  eg_err e = eg_auth_check(c->w->tp->srv->auth, &who, m->role, c->tenant, why, sizeof why);
  if (ctx) grpc_auth_context_release(ctx);
  if (c->tenant[0]) c->req.tenant = c->tenant;
  if (e == EG_EUNAUTH) return eg_reply_msg(c, e, "%s", why);
  if (e == EG_EPERM)
    snprintf(c->req.msg, sizeof c->req.msg, "authorization: %.120s may not call %s", why, m->path);
  return e;
}

/* The tenant's limits (server/limits.h), once the caller is known and
 * before any work: for the agent role's methods only (the data plane;
 * health, reflection, replication and admin calls are exempt). A write is
 * a method with prepare and apply. */
static eg_err eg_admit_tenant(eg_call *c, const eg_method *m) {
  if (m->role != EG_ROLE_AGENT) return EG_OK;
  return eg_limits_admit(c->w->tp->srv->limits, c->w->reader, c->req.tenant,
                         m->apply != NULL, eg_mono_us(), &c->hold, &c->quota, &c->retry_ms,
                         c->req.msg, sizeof c->req.msg);
}

static void eg_in_free(void *p) { protobuf_c_message_free_unpacked(p, NULL); }

/* Unpacks a request's bytes as desc into *out (the caller's). Its strings
 * are checked on the wire bytes, as unpacking cuts them at a NUL. */
static eg_err eg_unpack_request(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb,
                                ProtobufCMessage **out, char *msg, size_t msglen) {
  grpc_byte_buffer_reader rd;
  if (!grpc_byte_buffer_reader_init(&rd, bb)) return EG_ENOMEM;
  grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
  grpc_byte_buffer_reader_destroy(&rd);
  eg_err e = eg_validate_wire(desc, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), msg, msglen);
  if (e == EG_OK)
    *out = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
  grpc_slice_unref(s);
  if (e != EG_OK) return e;
  if (!*out) {
    snprintf(msg, msglen, "request: not a valid %s message", desc->name);
    return EG_EINVAL;
  }
  return EG_OK;
}

/* Decodes the payload; the request lives as long as the call. */
static eg_err eg_decode(eg_call *c, const eg_method *m, ProtobufCMessage **out) {
  if (!c->payload) return eg_reply_msg(c, EG_EINVAL, "request: no message was sent%s", "");
  eg_err e = eg_unpack_request(m->in, c->payload, out, c->req.msg, sizeof c->req.msg);
  if (e != EG_OK) return e;
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

/* At most one WARN line per this long for failed forwards. */
#define EG_FORWARD_WARN_EVERY_US 1000000

/* A forwarded write that got no answer from the primary itself: the
 * call could not start or its batch failed, or gRPC core ended it
 * UNAVAILABLE (the primary is down or unreachable, the connection broke)
 * or DEADLINE_EXCEEDED (this replica's bound: the client's deadline),
 * named by code and core's text (why). Core's text names internal
 * addresses and is not the house form: it goes to this replica's log, the
 * client gets the house answer. Neither answer says the write was not
 * applied: the connection may have broken after the primary committed it,
 * so only a retry that is idempotent (an append with client_message_id)
 * is safe. */
static void eg_forward_failed(eg_call *c, int code, const char *why) {
  /* One line per failed forward would flood the log while the primary is
   * down, when operators read it: at most one a second, each saying how
   * many were held back since the last. */
  static eg_log_limit warned = EG_LOG_LIMIT_INIT;
  uint64_t held;
  if (eg_log_limit_take(&warned, eg_mono_us(), EG_FORWARD_WARN_EVERY_US, &held)) {
    char more[80] = "";
    if (held)
      snprintf(more, sizeof more, " (%" PRIu64 " more failed forward%s not logged)", held,
               held == 1 ? "" : "s");
    eg_log(EG_LOG_WARN, "forwarding a %s write to the primary failed: %s: %s%s",
           c->w->tp->methods[c->mi]->path, eg_grpc_code_name(code), why, more);
  }
  if (code == GRPC_STATUS_DEADLINE_EXCEEDED) {
    snprintf(c->req.msg, sizeof c->req.msg,
             "the deadline passed before the primary answered; the write may have been applied "
             "there");
    eg_reply(c, EG_EDEADLINE, 0);
    return;
  }
  snprintf(c->req.msg, sizeof c->req.msg,
           "the primary cannot be reached; the write may or may not have been applied there; "
           "only an idempotent retry is safe (AppendMessages with client_message_id)");
  eg_reply(c, EG_EUNAVAIL, 0);
}

/* A write that reached a replica: the primary answers it, and the client
 * gets that answer as it is (status, message, payload, engram-lsn). The
 * call to the primary completes on this worker's queue, so the worker
 * serves other calls meanwhile. The caller's own authorization goes along:
 * the primary authenticates the caller, not this replica. */
static void eg_forward(eg_call *c, const eg_method *m) {
  char authz[4096] = "";
  grpc_channel *up = eg_repl_upstream(c->w->tp->srv->repl);
  if (!up) {
    /* A coordinated replica between primaries: nowhere to send it yet. */
    snprintf(c->req.msg, sizeof c->req.msg, "no primary: an election is in progress; retry");
    eg_reply(c, EG_ENOPRIMARY, 0);
    return;
  }
  const grpc_slice *v = eg_md_find(&c->md, "authorization");
  if (!v && eg_cert_caller(c)) {
    /* Only a bearer token goes along: a caller known here by its client
     * certificate alone would reach the primary as nobody (or as this
     * replica's own certificate). */
    snprintf(c->req.msg, sizeof c->req.msg,
             "this replica forwards writes with the caller's bearer token only, and this call "
             "has a client certificate and no token: send writes to the primary, or with a token");
    eg_reply(c, EG_ENOTPRIMARY, 0);
    return;
  }
  if (v) snprintf(authz, sizeof authz, "%.*s", (int)GRPC_SLICE_LENGTH(*v), (const char *)GRPC_SLICE_START_PTR(*v));
  c->state = EG_CALL_FORWARDING;
  int rc = eg_client_exchange_start(&c->fwd, up, c->w->cq,
                                    m->path, eg_call_deadline(c), c->payload, authz, 0, c);
  sodium_memzero(authz, sizeof authz); /* the exchange holds its own copy */
  if (rc != 0) eg_forward_failed(c, GRPC_STATUS_UNAVAILABLE, "the call could not start");
}

/* The primary answered a forwarded write: pass its answer on. Every
 * non-OK answer of the primary's own carries engram-request-id. One
 * without it is either gRPC core's failure to reach the primary
 * (UNAVAILABLE, DEADLINE_EXCEEDED: eg_forward_failed) or a status that is
 * no transport failure: an older primary's (it predates the id: NOT_FOUND
 * ...) or its gRPC core's refusal (a message over its size limit). Those
 * pass through with their code and message (a retry would not help); the
 * details are this replica's own (eg_error_metadata). */
void eg_forward_done(eg_call *c, int ok) {
  eg_client_exchange *f = &c->fwd;
  char msg[512];
  if (!ok) {
    eg_forward_failed(c, GRPC_STATUS_UNAVAILABLE, "its batch failed");
    return;
  }
  /* Cut to fit on a character boundary: the relayed Status carries the
   * message as sent, and a protobuf string must be valid UTF-8. */
  size_t len = eg_utf8_cut((const char *)GRPC_SLICE_START_PTR(f->details),
                           GRPC_SLICE_LENGTH(f->details), sizeof msg - 1);
  snprintf(msg, sizeof msg, "%.*s", (int)len, (const char *)GRPC_SLICE_START_PTR(f->details));
  if ((f->code == GRPC_STATUS_UNAVAILABLE || f->code == GRPC_STATUS_DEADLINE_EXCEEDED) &&
      !eg_md_find(&f->trailing, "engram-request-id")) {
    eg_forward_failed(c, f->code, msg);
    return;
  }
  grpc_byte_buffer *resp = f->code == GRPC_STATUS_OK ? f->recv : NULL;
  if (resp) f->recv = NULL; /* the reply owns it now */
  eg_reply_raw(c, f->code, msg, resp, eg_client_exchange_lsn(f));
}

/* The answer to a read whose engram-min-lsn want did not arrive in time. */
static eg_err eg_min_lsn_unavailable(eg_call *c, uint64_t want) {
  snprintf(c->req.msg, sizeof c->req.msg,
           "engram-min-lsn %" PRIu64 " not applied on this node yet (at %" PRIu64 "); retry", want,
           eg_store_last_lsn(c->w->tp->srv->store));
  return EG_EUNAVAIL;
}

/* A stream's engram-min-lsn (an export or a backup read from a replica):
 * waited for here, as a parked read waits, at most --max-lsn-wait-ms. The
 * stream has a thread of its own, so it holds no worker meanwhile. */
static eg_err eg_stream_min_lsn(eg_call *c) {
  uint64_t want;
  eg_err e = eg_min_lsn(c, &want);
  if (e != EG_OK || want == 0) return e;
  const eg_srv *srv = c->w->tp->srv;
  if (eg_store_wait_lsn(srv->store, want, srv->cfg->max_lsn_wait_ms) == EG_OK) return EG_OK;
  return eg_min_lsn_unavailable(c, want);
}

/* Waits for the batch tagged op on a stream's queue until `until`. Past it
 * cancels the call with DEADLINE_EXCEEDED and why (the status goes with the
 * cancel: the one sent after the handler returns would find the call
 * closed), copies why to msg, waits for the cancelled batch so its ops are
 * no longer in use, and returns EG_EDEADLINE. Else EG_OK if the batch
 * succeeded, EG_EUNAVAIL if not. */
static eg_err eg_stream_wait(grpc_call *call, grpc_completion_queue *cq, void *op,
                             gpr_timespec until, const char *why, char *msg, size_t msglen) {
  grpc_event ev = grpc_completion_queue_pluck(cq, op, until, NULL);
  if (ev.type == GRPC_QUEUE_TIMEOUT) {
    snprintf(msg, msglen, "%s", why);
    grpc_call_cancel_with_status(call, GRPC_STATUS_DEADLINE_EXCEEDED, msg, NULL);
    grpc_completion_queue_pluck(cq, op, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return EG_EDEADLINE;
  }
  return ev.type == GRPC_OP_COMPLETE && ev.success ? EG_OK : EG_EUNAVAIL;
}

static gpr_timespec eg_in_ms(int64_t ms) {
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

eg_err eg_stream_recv(grpc_call *call, grpc_completion_queue *cq,
                      const ProtobufCMessageDescriptor *desc, size_t max_bytes, int64_t wait_ms,
                      const char *why, ProtobufCMessage **out, char *msg, size_t msglen) {
  grpc_byte_buffer *bb = NULL;
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &bb;
  *out = NULL;
  eg_err e = EG_EUNAVAIL;
  if (grpc_call_start_batch(call, &op, 1, &op, NULL) == GRPC_CALL_OK)
    e = eg_stream_wait(call, cq, &op, eg_in_ms(wait_ms), why, msg, msglen);
  if (e == EG_EDEADLINE) {
    if (bb) grpc_byte_buffer_destroy(bb); /* came as the cancel went */
    return e;
  }
  if (e == EG_EUNAVAIL) {
    /* The receive failed: the call is gone (cancelled by the client, past
     * its deadline, disconnected), which is not the client being done. */
    if (bb) grpc_byte_buffer_destroy(bb);
    snprintf(msg, msglen, "%s", eg_err_msg(EG_ECANCELLED));
    return EG_ECANCELLED;
  }
  if (!bb) return EG_OK; /* the client is done sending */
  size_t len = grpc_byte_buffer_length(bb);
  if (len > max_bytes) {
    snprintf(msg, msglen, "request: %zu bytes, more than the %zu this stream takes", len, max_bytes);
    e = EG_ELIMIT;
  } else {
    e = eg_unpack_request(desc, bb, out, msg, msglen);
  }
  grpc_byte_buffer_destroy(bb);
  return e;
}

eg_err eg_stream_recv_request(const eg_srv *srv, grpc_call *call, grpc_completion_queue *cq,
                              const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out,
                              char *msg, size_t msglen) {
  int64_t ms = srv->cfg->call_timeout_ms;
  char why[160];
  snprintf(why, sizeof why, "no request message came within %lld ms (--call-timeout-ms); the call is ended",
           (long long)ms);
  eg_err e = eg_stream_recv(call, cq, desc, SIZE_MAX, ms, why, out, msg, msglen);
  if (e == EG_OK && !*out) {
    snprintf(msg, msglen, "request: no message was sent");
    return EG_EINVAL;
  }
  return e;
}

void eg_stream_out_start(eg_stream_out *o) { o->until_us = eg_mono_us() + o->max_ms * 1000; }

eg_err eg_stream_send(void *arg, const ProtobufCMessage *m, char *msg, size_t msglen) {
  const eg_stream_out *o = arg;
  int64_t left_ms = o->max_ms ? (o->until_us - eg_mono_us()) / 1000 : INT64_MAX;
  int whole = left_ms < o->send_ms; /* the stream's bound comes first */
  char why[200];
  if (whole)
    snprintf(why, sizeof why, "the stream ran past %s (%lld ms); the call is ended", o->max_limit,
             (long long)o->max_ms);
  else
    snprintf(why, sizeof why, "the client read no response for %lld ms (%s); the call is ended",
             (long long)o->send_ms, o->send_limit);
  if (left_ms <= 0) {
    snprintf(msg, msglen, "%s", why);
    return EG_EDEADLINE;
  }
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_MESSAGE;
  if (!(op.data.send_message.send_message = eg_client_pack(m))) return EG_ENOMEM;
  eg_err e = EG_EUNAVAIL;
  if (grpc_call_start_batch(o->call, &op, 1, &op, NULL) == GRPC_CALL_OK)
    e = eg_stream_wait(o->call, o->cq, &op, eg_in_ms(whole ? left_ms : o->send_ms), why, msg,
                       msglen);
  if (e == EG_EUNAVAIL) {
    snprintf(msg, msglen, "%s", eg_err_msg(EG_ECANCELLED));
    e = EG_ECANCELLED;
  }
  grpc_byte_buffer_destroy(op.data.send_message.send_message);
  return e;
}

eg_err eg_stream_check(void *arg, char *msg, size_t msglen) {
  const eg_stream_out *o = arg;
  if (!o->max_ms || eg_mono_us() < o->until_us) return EG_OK;
  snprintf(msg, msglen,
           "the stream ran past %s (%lld ms) before its first response; the call is ended",
           o->max_limit, (long long)o->max_ms);
  return EG_EDEADLINE;
}

/* Runs n ops on a streaming call and waits for them. Returns 1 if the
 * batch started (it then completed, well or not). */
static int eg_stream_batch(eg_call *c, grpc_op *ops, size_t n) {
  if (grpc_call_start_batch(c->call, ops, n, ops, NULL) != GRPC_CALL_OK) return 0;
  grpc_completion_queue_pluck(c->stream_cq, ops, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  return 1;
}

/* Gives back what eg_stream_admit took: c's place and its address's
 * share of them (c may be NULL; each goes back once), the thread's
 * (thread). */
static void eg_stream_leave(eg_transport *tp, eg_call *c, int thread) {
  eg_stream_places *p = c ? c->place : NULL;
  if (p) {
    if (c->peer_slot) {
      pthread_mutex_lock(&p->mu);
      eg_peer_places *slot = &p->peers[c->peer_slot - 1];
      if (--slot->taken == 0) slot->addr[0] = '\0';
      pthread_mutex_unlock(&p->mu);
      c->peer_slot = 0;
    }
    atomic_fetch_sub(&p->taken, 1);
    c->place = NULL;
  }
  if (thread) atomic_fetch_sub(&tp->streams, 1);
}

/* The caller's address without its port: "ipv4:10.0.0.7:52144" ->
 * "ipv4:10.0.0.7", "ipv6:[::1]:52144" (or %5B::1%5D) -> "ipv6:[::1]";
 * other kinds (unix:) whole. Cut to fit buf (EG_PEER_ADDR_MAX). */
static void eg_peer_address(grpc_call *call, char *buf) {
  char *peer = grpc_call_get_peer(call);
  size_t len = strlen(peer);
  const char *colon = strrchr(peer, ':');
  if ((strncmp(peer, "ipv4:", 5) == 0 || strncmp(peer, "ipv6:", 5) == 0) && colon > peer + 4)
    len = (size_t)(colon - peer);
  snprintf(buf, EG_PEER_ADDR_MAX, "%.*s", (int)len, peer);
  gpr_free(peer);
}

/* Takes a share of p's places for c's address (p->per_peer): 0, or -1
 * when the address holds its share already. */
static int eg_peer_take(eg_stream_places *p, eg_call *c) {
  char addr[EG_PEER_ADDR_MAX];
  eg_peer_address(c->call, addr);
  int got = -1, free_slot = -1;
  pthread_mutex_lock(&p->mu);
  for (int i = 0; i < p->n_peers && got < 0; i++) {
    if (strcmp(p->peers[i].addr, addr) == 0) got = i;
    else if (!p->peers[i].addr[0] && free_slot < 0) free_slot = i;
  }
  /* Each place holds one slot and n_peers >= the places: a new address
   * finds a free one. */
  if (got < 0 && free_slot >= 0) {
    got = free_slot;
    snprintf(p->peers[got].addr, sizeof p->peers[got].addr, "%s", addr);
  }
  if (got >= 0 && p->peers[got].taken >= p->per_peer) got = -1;
  if (got >= 0) {
    p->peers[got].taken++;
    c->peer_slot = got + 1;
  }
  pthread_mutex_unlock(&p->mu);
  return got >= 0 ? 0 : -1;
}

/* 1 if c carries a token of the tokens file or a certificate mapped by
 * the identities file (any role); 0 in dev mode, where nobody is known. */
static int eg_known_caller(eg_call *c) {
  const eg_auth *a = c->w->tp->srv->auth;
  if (eg_auth_dev_mode(a)) return 0;
  eg_auth_san sans[EG_AUTH_CALLER_SANS_MAX];
  eg_auth_caller who;
  char tenant[EG_ID_MAX + 1], why[256];
  grpc_auth_context *ctx = eg_caller(c, &who, sans);
  eg_err e = eg_auth_check(a, &who, EG_ROLE_AGENT | EG_ROLE_ADMIN | EG_ROLE_REPLICA, tenant, why,
                           sizeof why);
  if (ctx) grpc_auth_context_release(ctx);
  return e == EG_OK;
}

/* The early close of a stream whose method watches_close: its
 * RECV_CLOSE_ON_SERVER is started with the initial metadata, so that it
 * completes when the client leaves mid-stream; eg_stream_client_gone
 * waits for it. The handler runs on eg_stream_main's thread, which owns
 * this (a thread-local pointer to its frame). */
typedef struct {
  grpc_call *call;
  grpc_completion_queue *cq;
  grpc_op op; /* also the batch's tag */
  int cancelled;
  int started, done;
} eg_stream_close;
static _Thread_local eg_stream_close *eg_stream_closing;

int eg_stream_client_gone(grpc_call *call, int64_t wait_ms) {
  eg_stream_close *x = eg_stream_closing;
  if (!x || x->call != call || !x->started) return 0; /* not a watches_close stream */
  if (!x->done &&
      grpc_completion_queue_pluck(x->cq, &x->op, eg_in_ms(wait_ms), NULL).type == GRPC_OP_COMPLETE)
    x->done = 1;
  return x->done;
}

/* A streaming call's thread: initial metadata, the handler, then the
 * status from the handler's eg_err (the handler picks no gRPC code). */
static void *eg_stream_main(void *arg) {
  eg_call *c = arg;
  eg_transport *tp = c->w->tp;
  const eg_method *m = tp->methods[c->mi];
  eg_thread_name("stream");
  int cancelled = 0;
  grpc_op ops[3];
  eg_stream_close close = {.call = c->call, .cq = c->stream_cq};
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  size_t first = 0; /* set past ops[0] once the metadata went */
  eg_err e = eg_stream_min_lsn(c);
  if (e == EG_OK && !eg_stream_batch(c, ops, 1)) e = EG_EUNAVAIL;
  if (e == EG_OK && m->watches_close) {
    close.op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    close.op.data.recv_close_on_server.cancelled = &close.cancelled;
    close.started = grpc_call_start_batch(c->call, &close.op, 1, &close.op, NULL) == GRPC_CALL_OK;
    eg_stream_closing = &close;
  }
  if (e == EG_OK) {
    first = 1;
    e = m->stream(tp->srv, c->req.tenant, c->call, c->stream_cq, c->req.msg, sizeof c->req.msg);
  }
  eg_stream_closing = NULL;
  /* The handler let go of what its place stands for: a client told the
   * status may start the next call at once. */
  eg_stream_leave(tp, c, 0);
  grpc_slice details = grpc_slice_from_copied_string(c->req.msg);
  ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[1].data.send_status_from_server.status = (grpc_status_code)eg_err_grpc_code(e);
  ops[1].data.send_status_from_server.status_details = &details;
  if (e != EG_OK) {
    ops[1].data.send_status_from_server.trailing_metadata_count =
        eg_error_metadata(c, eg_err_grpc_code(e), e, c->req.msg);
    ops[1].data.send_status_from_server.trailing_metadata = c->error_md;
  }
  ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[2].data.recv_close_on_server.cancelled = &cancelled;
  /* An early close is in flight already: the status goes alone, then the
   * close completes (the queue must hold no event when the call is freed). */
  eg_stream_batch(c, ops + first, (close.started ? 2 : 3) - first);
  if (close.started && !close.done)
    grpc_completion_queue_pluck(c->stream_cq, &close.op, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  grpc_slice_unref(details);
  /* A call the client cancelled (or left) before an OK status went out
   * ended CANCELLED: a stream that reads its requests sees a cancel as
   * their end (gRPC core gives no message either way). An error stays
   * itself (a DEADLINE_EXCEEDED this server cancelled with, too). */
  int code = eg_err_grpc_code(e);
  if (e == EG_OK && (close.started ? close.cancelled : cancelled)) code = GRPC_STATUS_CANCELLED;
  eg_metrics_count(tp->metrics, c->mi, code, c->arrived_us);
  eg_call_free(c);
  eg_stream_leave(tp, NULL, 1);
  return NULL;
}

/* Takes a stream's place among its kind's (eg_stream_places) and among
 * the server's stream threads, before the thread exists: a client that
 * opens streams by the thousand (and sends nothing on them) gets refusals,
 * not threads. EG_EUNAVAIL (the kind's places are taken) or EG_EBUSY (the
 * server's stream threads are), with c->req.msg naming the cap. */
static eg_err eg_stream_admit(eg_call *c, const eg_method *m) {
  eg_transport *tp = c->w->tp;
  const eg_srv *srv = tp->srv;
  eg_stream_places *p = m->places;
  if (p && p->tokened && eg_known_caller(c)) p = p->tokened;
  if (p && atomic_fetch_add(&p->taken, 1) >= p->max(srv)) {
    atomic_fetch_sub(&p->taken, 1);
    snprintf(c->req.msg, sizeof c->req.msg, "too many %s (at most %d%s%s); retry", p->what,
             p->max(srv), p->limit ? ", " : "", p->limit ? p->limit : "");
    return EG_EUNAVAIL;
  }
  c->place = p;
  if (p && p->per_peer && eg_peer_take(p, c) != 0) {
    eg_stream_leave(tp, c, 0);
    snprintf(c->req.msg, sizeof c->req.msg, "too many %s from one address (at most %d each%s); retry",
             p->what, p->per_peer, p->tokened ? " without a token" : "");
    return EG_EUNAVAIL;
  }
  int cap = (int)eg_config_stream_threads(srv->cfg);
  if (atomic_fetch_add(&tp->streams, 1) >= cap) {
    eg_stream_leave(tp, c, 1);
    snprintf(c->req.msg, sizeof c->req.msg,
             "too many streams open on this server (at most %d: replica streams, snapshots, "
             "backups, exports); retry", cap);
    return EG_EBUSY;
  }
  return EG_OK;
}

/* How long a worker waits for a refused stream's status to go out. */
#define EG_REFUSAL_SEND_MS 1000

/* Hands a streaming call to a thread of its own, once authorized and
 * admitted (both cheap, on the worker), or refuses it at once. */
static void eg_start_stream(eg_call *c) {
  pthread_t t;
  pthread_attr_t a;
  eg_transport *tp = c->w->tp;
  const eg_method *m = tp->methods[c->mi];
  eg_err e = eg_authorize(c, m);
  if (e == EG_OK) e = eg_admit_tenant(c, m);
  if (e == EG_OK && (e = eg_stream_admit(c, m)) == EG_OK) {
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &a, eg_stream_main, c);
    pthread_attr_destroy(&a);
    if (rc == 0) return;
    eg_log(EG_LOG_ERROR, "cannot start a thread for a %s stream: %s", m->path, strerror(rc));
    eg_stream_leave(tp, c, 1);
    snprintf(c->req.msg, sizeof c->req.msg, "engramd: cannot start a thread for this stream");
    e = EG_ENOMEM;
  }
  /* Refused before it has a thread: the worker sends the status (with its
   * details) and waits for it on the call's queue, at most
   * EG_REFUSAL_SEND_MS: the status waits for no client message, but a
   * peer that reads nothing (its TCP window full) must not hold the
   * worker; past it the call is cancelled. */
  int code = eg_err_grpc_code(e), cancelled;
  const char *msg = c->req.msg[0] ? c->req.msg : eg_err_msg(e);
  grpc_slice details = grpc_slice_from_copied_string(msg);
  grpc_op ops[3];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[1].data.send_status_from_server.status = (grpc_status_code)code;
  ops[1].data.send_status_from_server.status_details = &details;
  ops[1].data.send_status_from_server.trailing_metadata_count = eg_error_metadata(c, code, e, msg);
  ops[1].data.send_status_from_server.trailing_metadata = c->error_md;
  ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[2].data.recv_close_on_server.cancelled = &cancelled;
  eg_metrics_count(tp->metrics, c->mi, code, c->arrived_us);
  char why[96];
  if (grpc_call_start_batch(c->call, ops, 3, ops, NULL) == GRPC_CALL_OK)
    eg_stream_wait(c->call, c->stream_cq, ops, eg_in_ms(EG_REFUSAL_SEND_MS),
                   "the refusal could not be sent in time; the call is ended", why, sizeof why);
  else
    grpc_call_cancel_with_status(c->call, (grpc_status_code)code, msg, NULL);
  grpc_slice_unref(details);
  eg_call_free(c);
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

/* A write's prepare, inside the worker's read txn when the method reads
 * there (prepare_reads). */
static eg_err eg_prepare_with(eg_call *c, const eg_method *m, const ProtobufCMessage *in) {
  if (!m->prepare_reads) return m->prepare(&c->req, in);
  eg_err e = eg_store_reader_begin(c->w->reader);
  if (e != EG_OK) return e;
  c->req.rtxn = c->w->reader;
  e = m->prepare(&c->req, in);
  eg_store_reader_end(c->w->reader);
  c->req.rtxn = NULL;
  return e;
}

/* A parked read's turn: its LSN arrived (ready), or its time ran out. */
static void eg_parked_run(eg_parked *p, int ready, eg_txn *reader) {
  eg_call *c = (eg_call *)((char *)p - offsetof(eg_call, park));
  eg_err e = EG_EUNAVAIL;
  eg_metrics_parked(c->w->tp->metrics, -1);
  if (!ready && c->park_ends == EG_PARK_ENDS_CAP) {
    /* The answer the reaper would give at the same moment, whichever of
     * the two comes first. */
    eg_reply_raw(c, GRPC_STATUS_DEADLINE_EXCEEDED, eg_reaper_message(c->w->tp->reaper), NULL, 0);
    return;
  }
  if (ready) {
    e = eg_read_with(c, c->w->tp->methods[c->mi], c->in, reader);
  } else if (c->park_ends == EG_PARK_ENDS_DEADLINE) {
    snprintf(c->req.msg, sizeof c->req.msg,
             "engram-min-lsn %" PRIu64 " not applied on this node before the call's deadline (at %" PRIu64 ")",
             p->lsn, eg_store_last_lsn(c->w->tp->srv->store));
    e = EG_EDEADLINE;
  } else {
    e = eg_min_lsn_unavailable(c, p->lsn);
  }
  eg_reply(c, e, 0);
}

/* Parks the read until this node applied want, bounded by the call's
 * deadline (eg_call_until_us) and --max-lsn-wait-ms. Returns 0 if parked. */
static int eg_park(eg_call *c, const ProtobufCMessage *in, uint64_t want) {
  eg_transport *tp = c->w->tp;
  int64_t until = eg_mono_us() + tp->srv->cfg->max_lsn_wait_ms * 1000;
  int64_t deadline = eg_call_until_us(c);
  c->in = in;
  c->park_ends = deadline >= until             ? EG_PARK_ENDS_WAIT
                 : deadline == c->reap.until_us ? EG_PARK_ENDS_CAP
                                                : EG_PARK_ENDS_DEADLINE;
  c->state = EG_CALL_PARKED;
  c->park = (eg_parked){.lsn = want, .until_us = deadline < until ? deadline : until,
                        .run = eg_parked_run};
  eg_metrics_parked(tp->metrics, 1);
  if (eg_parking_add(tp->parking, &c->park) == 0) return 0;
  eg_metrics_parked(tp->metrics, -1);
  return -1;
}

/* Runs a read now, or parks it (*parked = 1) until its engram-min-lsn.
 * A no_store method (Health, Promote) reads no data, so the LSN means
 * nothing to it: it runs at once, never on the parking thread. */
static eg_err eg_run_read(eg_call *c, const eg_method *m, const ProtobufCMessage *in, int *parked) {
  uint64_t want;
  if (m->no_store) return eg_read_with(c, m, in, c->w->reader);
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

void eg_on_call(eg_call *c) {
  eg_transport *tp = c->w->tp;
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
  if (!m->read && tp->srv->repl && eg_repl_fenced(tp->srv->repl)) {
    snprintf(c->req.msg, sizeof c->req.msg,
             "this node is fenced: it could not renew its coordinator lease in time; no write is "
             "acknowledged here; retry on the new primary");
    eg_reply(c, EG_EFENCED, 0);
    return;
  }
  c->req.srv = tp->srv;
  c->req.now_us = eg_now_us();
  if (!(c->req.arena = eg_arena_new())) e = EG_ENOMEM;
  else if ((e = eg_authorize(c, m)) == EG_OK && (e = eg_admit_tenant(c, m)) == EG_OK &&
           (e = eg_decode(c, m, &in)) == EG_OK) {
    if (m->read) {
      int parked = 0;
      e = eg_run_read(c, m, in, &parked);
      if (parked) return;
    } else if ((e = eg_prepare_with(c, m, in)) == EG_OK) {
      c->state = EG_CALL_WRITING;
      c->item.apply = eg_write_apply;
      c->item.done = eg_write_done;
      c->item.bytes = grpc_byte_buffer_length(c->payload);
      c->item.why = c->req.msg;
      c->item.whylen = sizeof c->req.msg;
      eg_writer_submit(tp->writer, &c->item);
      return;
    }
  }
  eg_reply(c, e, 0);
}

