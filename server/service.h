/*
 * The contract between the transport and the services.
 *
 * A method is either a read (runs on the worker that took the call, inside
 * the worker's read txn) or a write in two halves: prepare runs on the
 * worker (decode-time checks, encryption of fields whose context is known)
 * and apply runs on the writer thread inside a nested txn of the current
 * group commit. apply may run more than once for one call (the batch is
 * replayed after the map grows), so it must only read r->state, never
 * change it. Handlers build the response in r->arena and return an eg_err;
 * on failure they put "<field>: <problem>" in r->msg.
 */
#ifndef EG_SERVER_SERVICE_H
#define EG_SERVER_SERVICE_H

#include <protobuf-c/protobuf-c.h>
#include <stdint.h>

#include "common/err.h"
#include "crypto/crypto.h"
#include "server/arena.h"
#include "server/auth.h"
#include "server/config.h"
#include "storage/storage.h"

struct eg_repl;
struct grpc_call;
struct grpc_completion_queue;

typedef struct eg_srv {
  const eg_config *cfg;
  eg_store *store;
  const eg_keyring *keys;
  const eg_auth *auth;
  struct eg_repl *repl; /* replication: role, forwarding, log shipping */
  struct eg_sweeper *sweeper; /* retention (server/sweeper.h); NULL until started */
  struct eg_archiver *archiver; /* --wal-archive-dir (server/archiver.h); NULL: off */
} eg_srv;

typedef struct eg_req {
  const eg_srv *srv;
  const char *tenant;
  eg_arena *arena;
  eg_txn *rtxn;      /* read handlers: the worker's open read txn */
  void *state;       /* write handlers: what prepare left for apply */
  int64_t now_us;    /* taken once when the call arrived */
  /* Set by an apply that did a bounded share of a large job (erasing a
   * user): the call goes back to the writer for another batch instead of
   * being answered, so one call never holds the write txn for long. Its
   * msg then says what was done so far (see more_stops_at_deadline). */
  int more;
  /* the reply */
  char msg[256];
  ProtobufCMessage *resp;
} eg_req;

typedef eg_err (*eg_read_fn)(eg_req *r, const ProtobufCMessage *in);
typedef eg_err (*eg_prepare_fn)(eg_req *r, const ProtobufCMessage *in);
typedef eg_err (*eg_apply_fn)(eg_req *r, eg_txn *t);
/* A streaming call, run on a thread of its own; cq is the call's own pluck
 * queue; tenant is the authorized caller's (EG_DEV_TENANT in dev mode).
 * The transport sends the initial metadata before and the status after:
 * the handler only receives and sends messages, and returns how the call
 * ends (an eg_err, which the transport maps to a gRPC code, with a
 * message in msg, msglen bytes). */
typedef eg_err (*eg_stream_fn)(const eg_srv *srv, const char *tenant, struct grpc_call *call,
                               struct grpc_completion_queue *cq, char *msg, size_t msglen);

typedef struct eg_method {
  const char *path; /* "/engram.v1.SessionService/GetSession" */
  const ProtobufCMessageDescriptor *in;
  eg_role role;
  eg_read_fn read; /* set for reads; prepare and apply for writes */
  eg_prepare_fn prepare;
  eg_apply_fn apply;
  int no_store; /* a read that never touches storage: no read txn */
  /* A write whose continuations (eg_req.more) stop once the call's
   * deadline passed: DEADLINE_EXCEEDED, with what the apply said it did so
   * far (its msg). Not for a job that must finish once begun (an erasure). */
  int more_stops_at_deadline;
  eg_stream_fn stream; /* set for streaming methods (instead of read/write) */
} eg_method;

/* Every method the server answers, NULL-path terminated. */
extern const eg_method eg_session_methods[];
extern const eg_method eg_health_methods[];
extern const eg_method eg_memory_methods[];
extern const eg_method eg_user_methods[];
extern const eg_method eg_admin_methods[];
extern const eg_method eg_replication_methods[];
/* All of the above, NULL-terminated (server/methods.c). */
extern const eg_method *const eg_service_tables[];

#endif
