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
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "common/err.h"
#include "crypto/crypto.h"
#include "server/arena.h"
#include "server/auth.h"
#include "server/config.h"
#include "storage/storage.h"

struct eg_repl;
struct eg_coord;
struct grpc_call;
struct grpc_completion_queue;

/* Where the server is in its life, for health checks: starting until
 * replication is started, serving, then draining from the stop signal
 * on (server/main.c sets it). */
typedef enum { EG_PHASE_STARTING = 0, EG_PHASE_SERVING, EG_PHASE_DRAINING } eg_phase;

typedef struct eg_srv {
  const eg_config *cfg;
  eg_store *store;
  /* The keyring: a SIGHUP reload swaps it whole (server/keyring_reload.h),
   * so read it with eg_srv_keys, and use one load for what belongs
   * together (a seal and the key id it names). */
  _Atomic(const eg_keyring *) keys;
  struct eg_data_keys *data_keys; /* server/data_keys.h */
  /* The blind-index write key (server/blind_key.h: the rotation's target
   * while one runs, else the store's key id) for writes whose prepare
   * reads no snapshot: loaded at start (eg_blind_key_load), and set
   * again by an apply that finds it stale (eg_blind_key_check); 0: the
   * keyring's lowest. A stale value costs the write a retry, never a
   * record under the wrong key. */
  _Atomic uint32_t blind_key_id;
  struct eg_limits *limits;       /* server/limits.h: per-tenant limits */
  const eg_auth *auth;
  struct eg_tls *tls; /* server/tls.h; NULL: plaintext */
  struct eg_repl *repl; /* replication: role, forwarding, log shipping */
  struct eg_sweeper *sweeper; /* retention (server/sweeper.h); NULL until started */
  struct eg_archiver *archiver; /* --wal-archive-dir (server/archiver.h); NULL: off */
  /* --coordinator (coord/coord.h); NULL: static roles. Set once, after the
   * transport started (its address needs the bound port), so read it with
   * atomic_load; node_id is written before it. */
  _Atomic(struct eg_coord *) coord;
  char node_id[128];
  atomic_int phase;             /* eg_phase */
} eg_srv;

/* The keyring in use. Thread safety: any thread; a keyring it returns
 * stays valid until exit, though a reload may replace it meanwhile. */
static inline const eg_keyring *eg_srv_keys(const eg_srv *srv) {
  return atomic_load_explicit(&srv->keys, memory_order_acquire);
}

/* Whether grpc.health.v1 answers SERVING for the server as a whole and
 * its public services (replication 0), or for ReplicationService
 * (replication 1: only an unfenced primary serves it); else 0 with the
 * reason in why. Not serving: starting, draining, a broken store, or as
 * eg_repl_serving says (--max-serving-lag-ms). GetStatus says the same
 * (server/svc_health.c). */
int eg_srv_serving(const eg_srv *srv, int replication, char *why, size_t whylen);

typedef struct eg_req {
  const eg_srv *srv;
  const char *tenant;
  eg_arena *arena;
  eg_txn *rtxn;      /* read handlers, and a prepare_reads write's prepare: the worker's open read txn */
  void *state;       /* write handlers: what prepare left for apply */
  int64_t now_us;    /* taken once when the call arrived */
  /* Set by an apply that did a bounded share of a large job (erasing a
   * user): the call goes back to the writer for another batch instead of
   * being answered, so one call never holds the write txn for long. Its
   * msg then says what was done so far (see more_stops_at_deadline). */
  int more;
  /* The blind-index key id its blind contexts were taken under
   * (eg_blind_ctx_of; 0: none), checked again at apply. */
  uint32_t blind_key_used;
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

/* ---- for stream handlers (implemented in dispatch.c) ----
 * A stream's engram-min-lsn is waited for before its handler runs (as a
 * read parks, at most --max-lsn-wait-ms; UNAVAILABLE past it). */

/* Receives the request of a server-streaming call as desc into *out (the
 * caller's: protobuf_c_message_free_unpacked), its strings checked on the
 * wire bytes as a unary request's are. The wait is bounded by
 * --call-timeout-ms: a client that opens a stream and sends nothing must
 * not hold its thread (and its place) for long. EG_EINVAL with msg saying
 * why (no message, a bad string, does not decode); EG_EDEADLINE after
 * cancelling the call with DEADLINE_EXCEEDED and msg, naming the flag;
 * EG_ECANCELLED if the call is gone; or EG_ENOMEM. Every stream handler
 * takes its request this way. */
eg_err eg_stream_recv_request(const eg_srv *srv, struct grpc_call *call,
                              struct grpc_completion_queue *cq,
                              const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out,
                              char *msg, size_t msglen);

/* Receives the next message of a client-streaming call as desc into *out
 * (the caller's: protobuf_c_message_free_unpacked; NULL once the client
 * is done sending, with EG_OK), waiting at most wait_ms. Past it the call
 * is cancelled with DEADLINE_EXCEEDED and why (EG_EDEADLINE). A message of
 * more than max_bytes is refused before it is decoded (EG_ELIMIT, msg
 * says so); EG_ECANCELLED (msg says so) if the call is gone (cancelled by
 * the client, past its deadline, disconnected: not the client being done);
 * else as eg_stream_recv_request (EG_EINVAL, EG_ENOMEM). */
eg_err eg_stream_recv(struct grpc_call *call, struct grpc_completion_queue *cq,
                      const ProtobufCMessageDescriptor *desc, size_t max_bytes, int64_t wait_ms,
                      const char *why, ProtobufCMessage **out, char *msg, size_t msglen);

/* Where a stream's responses go, and how long each and all may take. A
 * client that stops reading holds sends back (flow control), and a slow
 * one can keep a stream going for as long as it likes; a handler must not
 * hold what it holds (a read snapshot, a copy of the store, a place) for
 * either. Fill the first six fields, then eg_stream_out_start. */
typedef struct eg_stream_out {
  struct grpc_call *call;
  struct grpc_completion_queue *cq;
  int64_t send_ms;        /* each response goes out within this */
  const char *send_limit; /* the flag that sets it, for the status */
  int64_t max_ms;         /* the whole stream ends within this; 0: no bound */
  const char *max_limit;  /* the flag that sets it */
  int64_t until_us;       /* eg_mono_us; set by eg_stream_out_start */
} eg_stream_out;

/* Starts o's max_ms clock (now). */
void eg_stream_out_start(eg_stream_out *o);

/* Sends m on o's call (o is an eg_stream_out: void, so that it also serves
 * as replica/'s eg_repl_send_fn) and waits for it to go out, at most
 * send_ms or until the stream's max_ms is up, whichever comes first.
 * Returns EG_OK; EG_ECANCELLED (msg says so) if the call is gone (cancelled
 * by the client, past its deadline, the connection lost); or EG_EDEADLINE
 * with msg naming the bound that ran out (its flag): the call is then
 * cancelled with DEADLINE_EXCEEDED and msg, or, when max_ms was already
 * up before the send, ends with them once the handler returns. */
eg_err eg_stream_send(void *o, const ProtobufCMessage *m, char *msg, size_t msglen);

/* Whether o's stream may still go on (o as in eg_stream_send; it also
 * serves as replica/'s eg_repl_check_fn): EG_OK, or EG_EDEADLINE with msg
 * naming max_limit once max_ms is up (the call then ends with them when
 * the handler returns). For work before the first send (a copy of the
 * store). A call that is gone (cancelled by its client, or by a stopping
 * engramd past its grace) fails its next send at once instead. */
eg_err eg_stream_check(void *o, char *msg, size_t msglen);

/* For a stream whose method sets watches_close, called on its handler's
 * thread: waits at most wait_ms for the client to leave (cancelled, past
 * its deadline, disconnected) and returns 1 once it has. A stream that
 * sends only now and then (Health/Watch) notices so, between its sends,
 * that nobody listens any more. 0 for other streams. */
int eg_stream_client_gone(struct grpc_call *call, int64_t wait_ms);

/* A kind of stream with places of its own: at most max(srv) of its calls
 * at once. The transport takes a call's place on the worker, after the
 * authorization and before the stream gets a thread (a refused call costs
 * none), and gives it back when the stream ends; past the cap the call is
 * refused UNAVAILABLE: "too many <what> (at most N[, <limit>]); retry".
 * Every stream also counts against the server-wide cap on stream threads
 * (eg_config_stream_threads; RESOURCE_EXHAUSTED past it). */
typedef struct eg_stream_places {
  atomic_int taken;
  int (*max)(const eg_srv *srv);
  const char *what;  /* "exports running" */
  const char *limit; /* the flag that sets max, or NULL for a fixed cap */
  /* Places of their own for calls that carry a valid token (--tokens
   * set), which callers without one cannot take: a method anyone may call
   * (reflection) cannot be locked out for token holders. NULL: none. */
  struct eg_stream_places *tokened;
  /* At most per_peer of these places per peer address (the port aside),
   * so that one client cannot take them all; refused UNAVAILABLE "too many
   * <what> from one address (at most N each); retry". 0: no such bound.
   * Then peers has room for an address per place (n_peers >= max(srv)),
   * guarded by mu (initialize it with PTHREAD_MUTEX_INITIALIZER). */
  int per_peer;
  struct eg_peer_places *peers;
  int n_peers;
  pthread_mutex_t mu;
} eg_stream_places;

/* One peer address's places among a kind's (eg_stream_places.peers). */
#define EG_PEER_ADDR_MAX 96
typedef struct eg_peer_places {
  char addr[EG_PEER_ADDR_MAX]; /* "ipv4:127.0.0.1"; "" when free */
  int taken;
} eg_peer_places;

typedef struct eg_method {
  const char *path; /* "/engram.v1.SessionService/GetSession" */
  const ProtobufCMessageDescriptor *in;
  eg_role role;
  eg_read_fn read; /* set for reads; prepare and apply for writes */
  eg_prepare_fn prepare;
  eg_apply_fn apply;
  /* A write whose prepare reads: it runs inside the worker's read txn
   * (r->rtxn, a snapshot that ends with prepare), so a write that copies
   * stored data opens and seals it on the worker and apply only checks
   * and writes. What prepare read may have changed by apply: apply
   * re-checks whatever its answer depends on. */
  int prepare_reads;
  int no_store; /* a read that never touches storage: no read txn */
  /* A write whose continuations (eg_req.more) stop once the call's
   * deadline passed: DEADLINE_EXCEEDED, with what the apply said it did so
   * far (its msg). Not for a job that must finish once begun (an erasure). */
  int more_stops_at_deadline;
  eg_stream_fn stream; /* set for streaming methods (instead of read/write) */
  eg_stream_places *places; /* streams with a cap of their own; NULL: none */
  int watches_close; /* a stream that calls eg_stream_client_gone */
  /* Whether the server serves this method (a flag may turn it off: an
   * unserved method is not registered, so calls get UNIMPLEMENTED); NULL:
   * always. */
  int (*enabled)(const eg_srv *srv);
} eg_method;

/* Every method the server answers, NULL-path terminated. */
extern const eg_method eg_session_methods[];
extern const eg_method eg_health_methods[];
extern const eg_method eg_memory_methods[];
extern const eg_method eg_user_methods[];
extern const eg_method eg_admin_methods[];
extern const eg_method eg_replication_methods[];
extern const eg_method eg_reflection_methods[];
extern const eg_method eg_checkpoint_methods[];
extern const eg_method eg_store_methods[];
/* AdminService's security calls, one table per concern (svc_keys.c,
 * svc_tenant.c, svc_key_rotation.c, svc_limits.c). */
extern const eg_method eg_keys_methods[];
extern const eg_method eg_tenant_methods[];
extern const eg_method eg_key_rotation_methods[];
extern const eg_method eg_limits_methods[];
/* All of the above, NULL-terminated (server/methods.c). */
extern const eg_method *const eg_service_tables[];

/* The longest service name eg_served_services lists (longer are left
 * out), and the most services it lists. */
#define EG_SERVICE_NAME_MAX 127
#define EG_SERVICES_MAX 32
/* The services of eg_service_tables, each once, in the tables' order, as
 * server reflection lists them (svc_reflection.c): names[i] points into
 * buf[i]. Every method of reflection is listed, served or not. Returns
 * how many. Thread safety: pure (writes only buf and names). */
size_t eg_served_services(char (*buf)[EG_SERVICE_NAME_MAX + 1], const char **names);

#endif
