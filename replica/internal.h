/* Private to replica/. */
#ifndef EG_REPLICA_INTERNAL_H
#define EG_REPLICA_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "common/rpc.h"
#include "replica/replica.h"

#define EG_REPL_SERVICE "/engram.v1.ReplicationService/"
/* Most records and bytes in one streamed batch. */
#define EG_REPL_BATCH_RECORDS 2048
#define EG_REPL_BATCH_BYTES (4u << 20)
/* An idle stream sends a heartbeat this often. */
#define EG_REPL_HEARTBEAT_MS 1000
/* Key-store changes one StreamResponse carries at most (a few hundred
 * bytes each). */
#define EG_REPL_KEY_CHANGES 256
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
  /* The lag in seconds counts from caught_up_us (eg_repl_peer_lags): the
   * last time at which the replica held (as its acks later showed)
   * everything committed here; the stream's start until then. A send
   * that reaches the primary's last LSN leaves (sent_lsn, sent_us); the
   * first ack at or past sent_lsn moves caught_up_us to sent_us. Times
   * are eg_rpc_now_us(); sent_us 0: none pending. */
  int64_t caught_up_us;
  uint64_t sent_lsn;
  int64_t sent_us;
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

/* A primary this node followed at some point: its address and channel,
 * kept until eg_repl_free (eg_repl_upstream's answer stays valid). Never
 * changed once published in eg_repl.ups. */
struct eg_upstream_entry {
  char *addr;
  eg_client *client;
};

struct eg_repl {
  eg_store *store;
  _Atomic(const eg_keyring *) const *keys; /* borrowed (eg_repl_config) */
  eg_repl_key_store key_store; /* borrowed (eg_repl_config) */
  char *token, *authz, *replica_id;
  /* eg_repl_config.tls copied: tls points at tls_files when set, else
   * NULL (plaintext). */
  char *tls_files[4]; /* ca, cert, key, server name; NULL when not set */
  eg_client_tls tls_copy;
  const eg_client_tls *tls;
  int sync_replicas;
  int64_t sync_timeout_ms, retain_records, retain_s, retain_cap;

  atomic_int is_primary;
  atomic_int stopping;
  /* Promotion and a snapshot restart exclude each other: each is claimed
   * under mu (eg_repl_claim_promotion, eg_repl_claim_restart), so once one
   * is decided the other is refused. */
  atomic_int promoting; /* the follower must stop: this node takes over */
  atomic_int restart;

  eg_repl_write_fn write; /* set by eg_repl_start */
  void *writer;

  /* The primaries followed so far; n_ups and the entries are written
   * under mu, each entry before cur may point at it, so a reader of cur
   * (any thread, no lock) sees a complete entry. cur: the one followed
   * now, -1 for nobody (a primary, or a replica waiting for its
   * coordinator). */
  struct eg_upstream_entry ups[EG_REPL_MAX_UPSTREAMS];
  size_t n_ups;
  atomic_int cur;

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
  /* replica: eg_mono_us when it last held all the primary had (applied >=
   * primary_lsn); -1: never. */
  atomic_int_fast64_t caught_up_us;
  /* The follower must end, for eg_repl_follow to re-point it (set and
   * cleared under life_mu around the join). */
  atomic_int halt;
  /* Coordinator fencing (eg_repl_set_lease): writes are acknowledged only
   * before lease_until_us, once coordinated. */
  atomic_int_fast64_t lease_until_us;
  atomic_int coordinated;
};

/* repl.c: the primary followed now, NULL for nobody (an entry of ups). */
const struct eg_upstream_entry *eg_repl_current(eg_repl *r);
/* repl.c: 1 once the follower must end: the node stops, is being promoted,
 * or re-points at another primary. */
int eg_repl_follow_done(eg_repl *r);

/* repl.c: what eg_repl_serving decides from. */
typedef struct {
  int primary;       /* this node is the primary */
  int fenced;        /* eg_repl_fenced */
  const char *upstream; /* replica: the address followed (NULL: nobody) */
  int connected;     /* replica: streaming now */
  int64_t behind_ms; /* eg_repl_progress.behind_ms */
} eg_serving_view;
/* repl.c: eg_repl_serving's decision. Pure. */
int eg_repl_serving_decide(const eg_serving_view *v, int64_t max_lag_ms, char *why, size_t whylen);
/* repl.c: behind_ms (eg_repl_progress) from the follower's state at now_us
 * (eg_mono_us). Pure. */
int64_t eg_repl_behind_ms(uint64_t applied, uint64_t primary_lsn, int connected,
                          int64_t caught_up_us, int64_t now_us);

/* rpc.c: runs ops on call as one batch and waits for it on cq (a pluck
 * queue). Returns 1 if the batch succeeded. */
int eg_rpc_run(grpc_call *call, grpc_completion_queue *cq, grpc_op *ops, size_t n);
/* rpc.c: the same, but gives up after timeout_ms (< 0: never) by
 * cancelling the call; returns 0 then. */
int eg_rpc_run_within(grpc_call *call, grpc_completion_queue *cq, grpc_op *ops, size_t n,
                      int64_t timeout_ms);
/* rpc.c: sends m as one message. */
int eg_rpc_send(grpc_call *call, grpc_completion_queue *cq, const ProtobufCMessage *m);
/* rpc.c: the same, giving up (and cancelling the call) after timeout_ms
 * (< 0: never). */
int eg_rpc_send_within(grpc_call *call, grpc_completion_queue *cq, const ProtobufCMessage *m,
                       int64_t timeout_ms);
/* rpc.c: receives one message as desc; NULL at the end of the stream or
 * on failure. */
ProtobufCMessage *eg_rpc_recv(grpc_call *call, grpc_completion_queue *cq,
                              const ProtobufCMessageDescriptor *desc);
/* rpc.c: the same, giving up (and cancelling the call) after timeout_ms. */
ProtobufCMessage *eg_rpc_recv_within(grpc_call *call, grpc_completion_queue *cq,
                                     const ProtobufCMessageDescriptor *desc, int64_t timeout_ms);
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
/* The stream sent p everything up to lsn, all the primary had at at_us. */
void eg_peer_sent(eg_repl *r, struct eg_peer *p, uint64_t gen, uint64_t lsn, int64_t at_us);
void eg_peer_detach(eg_repl *r, struct eg_peer *p, uint64_t gen);
void *eg_repl_syncer_main(void *arg);
/* peers.c: what log retention decides from. */
typedef struct {
  uint64_t last;            /* the last LSN committed */
  uint64_t first;           /* the oldest record kept; 0: the log is empty */
  uint64_t young;           /* the oldest record not older than --wal-retain-s
                               (last + 1: none) */
  int64_t retain_records;   /* --wal-retain-records */
  int64_t retain_cap;       /* --wal-retain-cap */
  const uint64_t *held;     /* applied LSNs of the connected replicas */
  size_t n_held;
  uint64_t erase_floor;     /* eg_store_erase_floor */
  uint64_t archive_next;    /* the first LSN the WAL archiver has not made
                               durable (0: no archiver) */
} eg_trim_view;
/* peers.c: the LSN below which log records may go. Pure. Records go when
 * they are past the newest retain_records or older than young (never the
 * newest record for age alone); a connected replica holds its applied
 * record and all after it, but nothing past retain_cap; the erase floor
 * overrides that; the archiver holds archive_next and all after it, over
 * the erase floor too, but nothing past retain_cap. */
uint64_t eg_repl_trim_floor(const eg_trim_view *v);
/* peers.c: 1 if young can change eg_repl_trim_floor(v) (v->young is not
 * read), 0 when the connected replicas hold the log at its first record or
 * it is empty: then the walk that finds young is skipped. Pure. */
int eg_repl_trim_age_matters(const eg_trim_view *v);
/* How many records eg_repl_trim_below walks to find the first young one:
 * what one batch of the writer trims at most. */
#define EG_REPL_TRIM_SCAN 1024

/* repl.c: under mu, decides that this node is promoted (returns EG_OK
 * and sets promoting) unless it stops (EG_EUNAVAIL), restarts into a
 * snapshot (EG_EUNAVAIL), is the primary or already being promoted
 * (EG_EPRECOND); *why says which. */
eg_err eg_repl_claim_promotion(eg_repl *r, const char **why);
/* repl.c: under mu, decides that the process restarts to install a fetched
 * snapshot (returns 1 and sets restart) unless it stops, is being
 * promoted or re-pointed at another primary (0: the snapshot must be
 * discarded), or already restarts. */
int eg_repl_claim_restart(eg_repl *r);

/* stream.c: what the primary knows when a replica says hello. */
typedef struct {
  uint64_t last;          /* the primary's last LSN */
  uint64_t first;         /* its oldest record kept (0: the log is empty) */
  uint64_t epoch;         /* its epoch */
  eg_err at_err;          /* reading its record at `applied` (when 0 < applied <= last) */
  uint64_t epoch_at;      /* that record's epoch, when at_err is EG_OK */
  uint64_t hello_epoch;   /* the replica's epoch */
  uint64_t applied;       /* its last applied LSN */
  uint64_t applied_epoch; /* the epoch of its record at `applied` */
  /* The replica sent the digest of its record at `applied` (older ones do
   * not), and it equals that of ours (when at_err is EG_OK). */
  int digest_sent, digest_equal;
  /* Where the primary's and the replica's stores built their lifecycle
   * indexes (eg_store_index_base_lsn). */
  uint64_t index_base, hello_index_base;
} eg_stream_view;
/* stream.c: the epoch and SHA-256 of record lsn, read through t (open):
 * what a hello says of the replica's last record, and what the primary
 * compares it with. */
#define EG_REPL_DIGEST_BYTES 32
eg_err eg_repl_record_at(eg_txn *t, uint64_t lsn, uint64_t *epoch,
                         uint8_t digest[EG_REPL_DIGEST_BYTES]);
/* stream.c: decides where a replica's stream starts. Pure. Returns
 *   EG_OK, *next > 0   stream from *next (shared history up to next - 1)
 *   EG_OK, *next == 0  the replica must resync from a snapshot; *why says why
 *                      (this includes a replica whose lifecycle indexes were
 *                      built at another LSN than the primary's)
 *   EG_EPRECOND        refuse the stream (*why): the replica is from a newer
 *                      epoch (this primary was deposed), or it holds records
 *                      of this primary's epoch that this primary never wrote
 *                      (another LSN range, another epoch at `applied`, or a
 *                      record of equal LSN and epoch but other bytes)
 *   other              the primary's log could not be read (at_err) */
eg_err eg_repl_stream_start(const eg_stream_view *v, uint64_t *next, const char **why);

/* follower.c */
void *eg_repl_follower_main(void *arg);
/* snapshot.c: replica side: downloads a snapshot into the data dir. */
eg_err eg_repl_fetch_snapshot(eg_repl *r);
/* snapshot.c: drops a downloaded snapshot that must not be installed. */
void eg_repl_discard_snapshot(eg_repl *r);

#endif
