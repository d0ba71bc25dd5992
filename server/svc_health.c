/* grpc.health.v1.Health: Check and Watch, for the server as a whole ("")
 * and for each service it hosts; NOT_FOUND (Check) or SERVICE_UNKNOWN
 * (Watch) for any other name, as the health protocol asks. Needs no
 * token, so probes work without credentials.
 *
 * NOT_SERVING while starting or draining, on a broken store, and as the
 * replication module says (a fenced primary; a replica that follows
 * nobody, is not streaming, or lags past --max-serving-lag-ms). The
 * public services share the server's status; ReplicationService is
 * SERVING only on an unfenced primary (replicas follow nobody else). */
#include <stdio.h>
#include <string.h>

#include "grpc_health/v1/health.pb-c.h"
#include "replica/replica.h"
#include "server/service.h"
#include "server/validate.h"

#define EG_HEALTH_REPLICATION "engram.v1.ReplicationService"
/* How often a Watch looks at the status (and whether its client left). */
#define EG_HEALTH_WATCH_POLL_MS 100

static const char *const eg_served[] = {"", "engram.v1.SessionService", "engram.v1.MemoryService",
                                        "engram.v1.UserService", "grpc.health.v1.Health",
                                        EG_HEALTH_REPLICATION};

int eg_srv_serving(const eg_srv *srv, int replication, char *why, size_t whylen) {
  eg_phase phase = (eg_phase)atomic_load(&srv->phase);
  if (phase == EG_PHASE_STARTING) {
    snprintf(why, whylen, "the server is starting");
    return 0;
  }
  if (phase == EG_PHASE_DRAINING) {
    snprintf(why, whylen, "the server is stopping (draining its calls)");
    return 0;
  }
  /* A store LMDB gave up on serves nothing: probes take the node out. */
  if (eg_store_broken(srv->store)) {
    snprintf(why, whylen, "the store is broken (LMDB gave up on it); the server stops");
    return 0;
  }
  if (replication && !eg_repl_is_primary(srv->repl)) {
    snprintf(why, whylen, "this node is a replica: only the primary serves replication");
    return 0;
  }
  if (!eg_repl_serving(srv->repl, srv->cfg->max_serving_lag_ms, why, whylen)) return 0;
  why[0] = '\0';
  return 1;
}

/* The index of service in eg_served, or -1. */
static int eg_health_find(const char *service) {
  for (size_t i = 0; i < sizeof eg_served / sizeof eg_served[0]; i++)
    if (strcmp(service, eg_served[i]) == 0) return (int)i;
  return -1;
}

static Grpc__Health__V1__HealthCheckResponse__ServingStatus eg_health_status(const eg_srv *srv,
                                                                             const char *service) {
  char why[256];
  return eg_srv_serving(srv, strcmp(service, EG_HEALTH_REPLICATION) == 0, why, sizeof why)
             ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
             : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

static eg_err eg_health_check(eg_req *r, const ProtobufCMessage *msg) {
  const Grpc__Health__V1__HealthCheckRequest *in = (const void *)msg;
  if (eg_health_find(in->service) < 0) {
    eg_invalid(r->msg, sizeof r->msg, "service", "unknown service '%s'", in->service);
    return EG_ENOTFOUND;
  }
  Grpc__Health__V1__HealthCheckResponse *out =
      EG_ARENA_NEW(r->arena, Grpc__Health__V1__HealthCheckResponse);
  if (!out) return EG_ENOMEM;
  grpc__health__v1__health_check_response__init(out);
  out->status = eg_health_status(r->srv, in->service);
  r->resp = &out->base;
  return EG_OK;
}

/* Watch: the status at once, then each change, seen within
 * EG_HEALTH_WATCH_POLL_MS. Each send is bounded by --call-timeout-ms, as
 * a client that stops reading must not hold the thread. When the server
 * drains: NOT_SERVING, then the stream ends OK. A client that leaves ends
 * it too (eg_stream_client_gone), so a watch holds its place no longer. */
static eg_err eg_health_watch(const eg_srv *srv, const char *tenant, grpc_call *call,
                              grpc_completion_queue *cq, char *msg, size_t msglen) {
  (void)tenant;
  ProtobufCMessage *in = NULL;
  eg_err e = eg_stream_recv_request(srv, call, cq, &grpc__health__v1__health_check_request__descriptor,
                                    &in, msg, msglen);
  if (e) return e;
  const char *service = ((const Grpc__Health__V1__HealthCheckRequest *)in)->service;
  int known = eg_health_find(service);
  int replication = known >= 0 && strcmp(service, EG_HEALTH_REPLICATION) == 0;
  protobuf_c_message_free_unpacked(in, NULL);
  eg_stream_out o = {.call = call, .cq = cq, .send_ms = srv->cfg->call_timeout_ms,
                     .send_limit = "--call-timeout-ms"};
  eg_stream_out_start(&o);
  Grpc__Health__V1__HealthCheckResponse out = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  int last = -1;
  for (;;) {
    char why[256];
    int draining = atomic_load(&srv->phase) == EG_PHASE_DRAINING;
    int status = draining ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
                 : known < 0
                     ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN
                 : eg_srv_serving(srv, replication, why, sizeof why)
                     ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                     : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    if (status != last) {
      out.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
      if ((e = eg_stream_send(&o, &out.base, msg, msglen)) != EG_OK) return e;
      last = status;
    }
    if (draining) return EG_OK;
    if (eg_stream_client_gone(call, EG_HEALTH_WATCH_POLL_MS)) {
      snprintf(msg, msglen, "%s", eg_err_msg(EG_ECANCELLED));
      return EG_ECANCELLED;
    }
  }
}

static int eg_health_watches_max(const eg_srv *srv) {
  (void)srv;
  return EG_HEALTH_WATCHES_MAX;
}
static eg_stream_places eg_watch_places = {.max = eg_health_watches_max,
                                           .what = "health watches open"};

const eg_method eg_health_methods[] = {
    {.path = "/grpc.health.v1.Health/Check",
     .in = &grpc__health__v1__health_check_request__descriptor,
     .role = EG_ROLE_NONE,
     .read = eg_health_check,
     .no_store = 1},
    {.path = "/grpc.health.v1.Health/Watch",
     .in = &grpc__health__v1__health_check_request__descriptor,
     .role = EG_ROLE_NONE,
     .stream = eg_health_watch,
     .places = &eg_watch_places,
     .watches_close = 1},
    {.path = NULL},
};
