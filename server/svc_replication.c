/* engram.v1.ReplicationService: the streams replicas follow. The work is
 * in replica/; this table only routes the calls there, for the replica
 * role's tokens. */
#include "replica/replica.h"
#include "server/service.h"

static eg_err eg_stream(const eg_srv *srv, const char *tenant, struct grpc_call *call,
                        struct grpc_completion_queue *cq, char *msg, size_t msglen) {
  return eg_repl_serve_stream(srv->repl, call, cq, msg, msglen);
}

static eg_err eg_snapshot(const eg_srv *srv, const char *tenant, struct grpc_call *call,
                          struct grpc_completion_queue *cq, char *msg, size_t msglen) {
  return eg_repl_serve_snapshot(srv->repl, srv->cfg->call_timeout_ms, call, cq, msg, msglen);
}

const eg_method eg_replication_methods[] = {
    {.path = "/engram.v1.ReplicationService/Stream", .role = EG_ROLE_REPLICA, .stream = eg_stream},
    {.path = "/engram.v1.ReplicationService/Snapshot",
     .role = EG_ROLE_REPLICA,
     .stream = eg_snapshot},
    {.path = NULL},
};
