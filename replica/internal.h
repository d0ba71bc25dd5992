/* Private to replica/. */
#ifndef EG_REPLICA_INTERNAL_H
#define EG_REPLICA_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "common/rpc.h"
#include "replica/replica.h"

#define EG_REPL_MAX_PEERS 64
#define EG_REPL_SERVICE "/engram.v1.ReplicationService/"
/* Most records and bytes in one streamed batch. */
#define EG_REPL_BATCH_RECORDS 2048
#define EG_REPL_BATCH_BYTES (4u << 20)
/* An idle stream sends a heartbeat this often. */
#define EG_REPL_HEARTBEAT_MS 1000
/* A follower that hears nothing for this long (several missed heartbeats)
 * drops the stream and reconnects. */
#define EG_REPL_SILENCE_MS 5000
/* A snapshot waiting to be installed, and one being received. */
#define EG_REPL_SNAPSHOT_READY "snapshot.mdb"
#define EG_REPL_SNAPSHOT_PARTIAL "snapshot.partial"

/* A replica as the primary sees it. */
struct eg_peer {
  char id[128];
  uint64_t applied;
  int64_t ack_us;
  int connected;
  uint64_t gen; /* the stream that owns the entry; a newer one takes over */
};

/* A write waiting for --sync-replicas acks. */
struct eg_hold {
  struct eg_hold *next;
  uint64_t lsn;
  int64_t deadline_us;
  void (*done)(void *arg, int acked);
  void *arg;
};

struct eg_repl {
  eg_store *store;
  char *primary, *token, *authz, *replica_id;
  int sync_replicas;
  int64_t sync_timeout_ms, retain_records, retain_s, retain_cap;

  atomic_int is_primary;
  atomic_int stopping;
  atomic_int promoting; /* the follower must stop: this node takes over */
  atomic_int restart;

  eg_client *upstream; /* replica: the primary (thread-safe) */

  pthread_mutex_t mu;
  pthread_cond_t cv;                      /* acks and holds changed; stop */
  struct eg_peer peers[EG_REPL_MAX_PEERS]; /* guarded by mu */
  size_t n_peers;                          /* guarded by mu */
  struct eg_hold *holds;                   /* guarded by mu */
  grpc_call *follow_call;                  /* guarded by mu: to cancel on stop */

  pthread_t follower, syncer;
  /* Starting, stopping and joining the follower (main's stop, Promote's
   * stop and restart) happen under life_mu. */
  pthread_mutex_t life_mu;
  int follower_started; /* guarded by life_mu */
  int syncer_started;
  atomic_uint_fast64_t primary_lsn; /* replica: last heard from the primary */
  atomic_int connected;             /* replica: streaming now */
};

/* rpc.c: runs ops on call as one batch and waits for it on cq (a pluck
 * queue). Returns 1 if the batch succeeded. */
int eg_rpc_run(grpc_call *call, grpc_completion_queue *cq, grpc_op *ops, size_t n);
/* rpc.c: the same, but gives up after timeout_ms (< 0: never) by
 * cancelling the call; returns 0 then. */
int eg_rpc_run_within(grpc_call *call, grpc_completion_queue *cq, grpc_op *ops, size_t n,
                      int64_t timeout_ms);
/* rpc.c: sends m as one message. */
int eg_rpc_send(grpc_call *call, grpc_completion_queue *cq, const ProtobufCMessage *m);
/* rpc.c: receives one message as desc; NULL at the end of the stream or
 * on failure. */
ProtobufCMessage *eg_rpc_recv(grpc_call *call, grpc_completion_queue *cq,
                              const ProtobufCMessageDescriptor *desc);
/* rpc.c: the same, giving up (and cancelling the call) after timeout_ms. */
ProtobufCMessage *eg_rpc_recv_within(grpc_call *call, grpc_completion_queue *cq,
                                     const ProtobufCMessageDescriptor *desc, int64_t timeout_ms);
/* rpc.c: server side: ends the call with code and message. */
void eg_rpc_finish(grpc_call *call, grpc_completion_queue *cq, int code, const char *msg);
/* rpc.c: a call to the primary on a pluck queue of its own, registered as
 * r->follow_call so a stop cancels it. open sends the replica token and
 * the first message (then closes the sending side if close_send) and
 * receives the primary's initial metadata; returns 1 if all that went
 * through. Close it with eg_upstream_close whatever open returned. */
typedef struct {
  grpc_call *call;
  grpc_completion_queue *cq;
} eg_upstream;
int eg_upstream_open(eg_repl *r, const char *method, const ProtobufCMessage *first, int close_send,
                     eg_upstream *u);
void eg_upstream_close(eg_repl *r, eg_upstream *u);
/* rpc.c: shuts down and destroys a pluck queue. */
void eg_rpc_cq_destroy(grpc_completion_queue *cq);
int64_t eg_rpc_now_us(void);

/* peers.c */
/* A stream takes the entry of its replica id (a newer stream replaces an
 * older one, which notices through eg_peer_owned and ends); *gen is its
 * claim. NULL when the table is full. */
struct eg_peer *eg_peer_attach(eg_repl *r, const char *id, uint64_t applied, uint64_t *gen);
int eg_peer_owned(eg_repl *r, const struct eg_peer *p, uint64_t gen);
void eg_peer_ack(eg_repl *r, struct eg_peer *p, uint64_t gen, uint64_t applied);
void eg_peer_detach(eg_repl *r, struct eg_peer *p, uint64_t gen);
void *eg_repl_syncer_main(void *arg);

/* follower.c */
void *eg_repl_follower_main(void *arg);
/* snapshot.c: replica side: downloads a snapshot into the data dir. */
eg_err eg_repl_fetch_snapshot(eg_repl *r);
/* snapshot.c: drops a downloaded snapshot that must not be installed. */
void eg_repl_discard_snapshot(eg_repl *r);

#endif
