/* grpc.health.v1.Health/Check: SERVING for the server as a whole ("") and
 * for each service it hosts; NOT_FOUND for any other name, as the health
 * protocol asks. Needs no token, so probes work without credentials. */
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "server/service.h"
#include "server/validate.h"

static const char *const eg_served[] = {"", "engram.v1.SessionService", "engram.v1.MemoryService",
                                        "engram.v1.UserService", "grpc.health.v1.Health"};

static eg_err eg_health_check(eg_req *r, const ProtobufCMessage *msg) {
  const Grpc__Health__V1__HealthCheckRequest *in = (const void *)msg;
  for (size_t i = 0; i < sizeof eg_served / sizeof eg_served[0]; i++) {
    if (strcmp(in->service, eg_served[i]) != 0) continue;
    Grpc__Health__V1__HealthCheckResponse *out =
        EG_ARENA_NEW(r->arena, Grpc__Health__V1__HealthCheckResponse);
    if (!out) return EG_ENOMEM;
    grpc__health__v1__health_check_response__init(out);
    /* A store LMDB gave up on serves nothing: probes take the node out. */
    out->status = eg_store_broken(r->srv->store)
                      ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
                      : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    r->resp = &out->base;
    return EG_OK;
  }
  eg_invalid(r->msg, sizeof r->msg, "service", "unknown service '%s'", in->service);
  return EG_ENOTFOUND;
}

const eg_method eg_health_methods[] = {
    {.path = "/grpc.health.v1.Health/Check",
     .in = &grpc__health__v1__health_check_request__descriptor,
     .role = EG_ROLE_NONE,
     .read = eg_health_check,
     .no_store = 1},
    {.path = NULL},
};
