/* engram.v1.ReplicationService: the streams replicas follow. The work is
 * in replica/; this table only routes the calls there, for the replica
 * role's tokens. */
#include "engram/v1/replication.pb-c.h"
#include "replica/replica.h"
#include "server/service.h"

static eg_err eg_stream(const eg_srv *srv, const char *tenant, struct grpc_call *call,
                        struct grpc_completion_queue *cq, char *msg, size_t msglen) {
  ProtobufCMessage *hello = NULL;
  eg_err e = eg_stream_recv_request(srv, call, cq, &engram__v1__stream_request__descriptor, &hello,
                                    msg, msglen);
  if (e != EG_OK) return e;
  e = eg_repl_serve_stream(srv->repl, (const Engram__V1__StreamRequest *)hello, call, cq, msg,
                           msglen);
  protobuf_c_message_free_unpacked(hello, NULL);
  return e;
}

static int eg_snapshots_max(const eg_srv *srv) { return EG_SNAPSHOTS_MAX; }

static eg_stream_places eg_snapshot_places = {
    .max = eg_snapshots_max, .what = "snapshots being served"};

/* A replica's resync: a copy of the store, each chunk taken within
 * --call-timeout-ms (a replica reads as fast as it writes to its disk). */
static eg_err eg_snapshot(const eg_srv *srv, const char *tenant, struct grpc_call *call,
                          struct grpc_completion_queue *cq, char *msg, size_t msglen) {
  ProtobufCMessage *in = NULL;
  eg_err e = eg_stream_recv_request(srv, call, cq, &engram__v1__snapshot_request__descriptor, &in,
                                    msg, msglen);
  if (e != EG_OK) return e;
  protobuf_c_message_free_unpacked(in, NULL); /* its replica_id is for logs only */
  eg_stream_out out = {.call = call, .cq = cq, .send_ms = srv->cfg->call_timeout_ms,
                       .send_limit = "--call-timeout-ms"};
  eg_stream_out_start(&out);
  return eg_repl_serve_snapshot(srv->repl, eg_stream_send, eg_stream_check, &out, msg, msglen);
}

const eg_method eg_replication_methods[] = {
    {.path = "/engram.v1.ReplicationService/Stream", .role = EG_ROLE_REPLICA, .stream = eg_stream},
    {.path = "/engram.v1.ReplicationService/Snapshot",
     .role = EG_ROLE_REPLICA,
     .stream = eg_snapshot,
     .places = &eg_snapshot_places},
    {.path = NULL},
};
