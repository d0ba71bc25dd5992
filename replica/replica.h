/*
 * replica: WAL shipping (primary side) and following (replica side).
 *
 * One eg_repl per process. On the primary it serves ReplicationService
 * (Stream, Snapshot), keeps the table of replicas (acks, lag, what the log
 * must keep for them) and holds --sync-replicas writes until enough acks
 * arrive. On a replica it runs the follower thread (stream, apply, ack,
 * reconnect with backoff, snapshot bootstrap) and forwards writes to the
 * primary. Promotion turns a replica into a primary in place.
 * See docs/replication.md for the protocol and its guarantees.
 */
#ifndef EG_REPLICA_H
#define EG_REPLICA_H

#include <grpc/grpc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>

#include "common/err.h"
#include "engram.h"
#include "crypto/crypto.h"
#include "engram/v1/admin.pb-c.h"
#include "engram/v1/replication.pb-c.h"
#include "server/data_keys.h"
#include "storage/storage.h"

/* The replicas one primary serves (each holds a stream thread and a
 * reader slot: server/config.c sizes both with it). */
#define EG_REPL_MAX_PEERS 64

/* The key store's replication side: server/data_keys.h's functions, as
 * pointers (replica/ links below server/). dk NULL: no key store. */
typedef struct {
  eg_data_keys *dk;
  uint64_t (*version)(eg_data_keys *dk);
  eg_err (*changes)(eg_data_keys *dk, uint64_t since, size_t max, eg_data_key_rec_fn fn,
                    void *arg, uint64_t *last);
  eg_err (*apply)(eg_data_keys *dk, const eg_key_change *ch, size_t n);
  /* Whether keys fit the key fingerprint fp[0..len) a primary sent: every
   * key it names is in keys with the same check value, or absent with
   * nothing under it in this node's store and dk (a key retired:
   * server/key_retire.h). EG_OK, else why says which key and what.
   * NULL: every key it names must be in keys. */
  eg_err (*keys_fit)(eg_store *store, eg_data_keys *dk, const eg_keyring *keys,
                     const uint8_t *fp, size_t len, char *why, size_t whylen);
} eg_repl_key_store;

typedef struct {
  int replica;                 /* start as a replica (else primary) */
  const char *primary;         /* HOST:PORT to follow (replica); NULL or "":
                                  follow nobody until eg_repl_follow (a node
                                  run with --coordinator starts so) */
  const char *token;           /* bearer token with the replica role ("" : none;
                                  a client certificate mapped to the role
                                  stands in for it) */
  /* How this node dials the primary (the stream, forwarded writes,
   * Promote's probe): NULL plaintext, else TLS from these files (copied;
   * re-read for each new primary followed). */
  const eg_client_tls *tls;
  const char *replica_id;      /* this node's name in the primary's table */
  int sync_replicas;           /* acks a write waits for (primary) */
  int64_t sync_timeout_ms;
  int64_t retain_records, retain_s, retain_cap; /* log retention */
  /* Where the node's keyring is (borrowed: valid until eg_repl_free; a
   * SIGHUP reload swaps the keyring it points at, so the module loads it
   * at each use). A replica applies nothing from a primary whose recorded
   * key fingerprint it does not fit (key_store.keys_fit). NULL: no check. */
  _Atomic(const eg_keyring *) const *keys;
  /* The key store, replicated beside the log (borrowed like keys). */
  eg_repl_key_store key_store;
} eg_repl_config;

typedef struct eg_repl eg_repl;

/* Creates the module; a replica's follower starts at eg_repl_start. The
 * strings in cfg are copied. EG_EINVAL with why in err when cfg->tls's
 * files cannot be used (eg_client_new_tls) or no channel can be made for
 * cfg->primary; EG_ENOMEM. Call grpc_init first. */
eg_err eg_repl_new(const eg_repl_config *cfg, eg_store *store, eg_repl **out, char *err,
                   size_t errlen);
/* How the module writes: runs fn(arg, t) on the writer thread, alone in a
 * write txn of its own, and waits for the commit; *lsn (may be NULL) gets
 * the LSN committed. engramd passes eg_writer_run_alone (server/writer.h):
 * replica/ never opens a write txn itself. */
typedef eg_err (*eg_repl_write_fn)(void *writer, eg_err (*fn)(void *arg, eg_txn *t), void *arg,
                                   uint64_t *lsn);

/* Starts the follower (replica) and the sync-ack thread (primary). Every
 * write of the module (applying the primary's log, Promote's epoch record)
 * goes through write(writer, ...), which must work until eg_repl_stop
 * returns. */
eg_err eg_repl_start(eg_repl *r, eg_repl_write_fn write, void *writer);
/* Ends every stream and thread of the module; streams served on other
 * threads see it and finish. Then frees nothing yet: see eg_repl_free. */
void eg_repl_stop(eg_repl *r);
void eg_repl_free(eg_repl *r);

/* 1 while this node is the primary. Thread safety: any thread. */
int eg_repl_is_primary(const eg_repl *r);
/* 1 when the follower fetched a snapshot and the process must restart to
 * install it, or a deposed primary restarts as a replica (main
 * re-executes itself after a clean stop). */
int eg_repl_restart_requested(const eg_repl *r);
/* The signal the module sends its own process once
 * eg_repl_restart_requested is 1: main waits for it with its stop signals.
 * Not SIGTERM, so that main tells it from an operator's stop, which during
 * the restart's drain ends the process instead of re-executing it. */
#define EG_REPL_RESTART_SIGNAL SIGUSR2
/* Before eg_store_open on a replica: installs a downloaded snapshot that
 * is waiting in dir, if any. */
eg_err eg_repl_install_pending(const char *dir);
/* At start, with the data dir locked: removes the copies of the store that
 * Snapshot and Backup calls of an engramd that died (or re-executed itself)
 * left in dir (a copy is unlinked once it is open, so a live one is never
 * there for long), saying so on stderr. A copy that cannot be removed is
 * reported and left. */
void eg_repl_remove_stale_copies(const char *dir);

/* ---- primary side ------------------------------------------------------- */

/* Serves one ReplicationService/Stream or /Snapshot call on the calling
 * thread, until it must end; cq is the call's own pluck queue. The caller
 * has sent the initial metadata, took the call's request (a Stream's
 * hello, still the caller's) and sends the status: these return how the
 * call ends (an eg_err, with a message in msg). */
eg_err eg_repl_serve_stream(eg_repl *r, const Engram__V1__StreamRequest *hello, grpc_call *call,
                            grpc_completion_queue *cq, char *msg, size_t msglen);
/* How a copy's messages go out: sends m (arg: the caller's) and returns
 * EG_OK, or how the stream ends, with a message in msg. engramd passes its
 * eg_stream_send (server/service.h), which bounds each send and the whole
 * stream. */
typedef eg_err (*eg_repl_send_fn)(void *arg, const ProtobufCMessage *m, char *msg, size_t msglen);
/* Whether a copy's stream may still go on (arg: send's): EG_OK, or how it
 * ends, with a message in msg. engramd passes its eg_stream_check. */
typedef eg_err (*eg_repl_check_fn)(void *arg, char *msg, size_t msglen);
/* Snapshot: its request already taken and its place held by the caller
 * (eg_repl_serve_copy, at normal priority). */
eg_err eg_repl_serve_snapshot(eg_repl *r, eg_repl_send_fn send, eg_repl_check_fn check,
                              void *send_arg, char *msg, size_t msglen);

/* ---- copies of the store (Snapshot, AdminService.Backup) ------------------ */

/* One message of a copy being streamed. */
typedef struct {
  const uint8_t *data; /* the next bytes of the copy (none on the last) */
  size_t len;
  uint64_t size; /* the first chunk's only: bytes of the whole copy */
  int last;      /* the last message: the fields below are set */
  const eg_store_file_info *info; /* LSN, epoch, schema version of the copy */
  uint64_t total;                 /* bytes sent */
  const uint8_t *sha256;          /* of them, 32 bytes */
} eg_repl_copy_piece;
/* Builds the message that carries p (borrowing p's pointers) in memory arg
 * owns, valid until the next call. */
typedef const ProtobufCMessage *(*eg_repl_copy_msg_fn)(void *arg, const eg_repl_copy_piece *p);

/* Serves one copy of the store for the calling thread (a stream handler's,
 * which took the call's request and holds its place among the copies
 * served at once): a thread of the copy's own copies the store beside it
 * (eg_store_copy, the file unlinked once open) and takes its SHA-256,
 * under SCHED_IDLE if idle, while the caller waits for it at its own
 * priority (the copy cannot be stopped midway). Then check(send_arg), if
 * not NULL, says whether the stream may still go on; if so the copy goes
 * out in 1 MiB chunks, then a last message with the totals and SHA-256,
 * each built by build(arg) and sent by send(send_arg), on the calling
 * thread. A check or send that fails ends the stream with its eg_err and
 * message. Returns how the call ends, with a message in msg. Works on a
 * primary and on a replica. */
eg_err eg_repl_serve_copy(eg_repl *r, int idle, eg_repl_copy_msg_fn build, void *arg,
                          eg_repl_send_fn send, eg_repl_check_fn check, void *send_arg, char *msg,
                          size_t msglen);
/* Writes a copy of something into a new file at path (mode 0600), and
 * what it holds into *info (zeroed when that means nothing). */
typedef eg_err (*eg_repl_copy_fn)(void *arg, const char *path, eg_store_file_info *info);
/* The same for another copy than the store's (BackupKeys: the key
 * store's), made by copy(copy_arg, ...) at a path in the data dir, where a
 * copy left by a crash is removed at the next start. */
eg_err eg_repl_serve_copy_of(eg_repl *r, int idle, eg_repl_copy_fn copy, void *copy_arg,
                             eg_repl_copy_msg_fn build, void *arg, eg_repl_send_fn send,
                             eg_repl_check_fn check, void *send_arg, char *msg, size_t msglen);

/* Log records below this LSN may go (retention by count and age, held for
 * connected replicas up to the cap; erasure; then held from archive_next
 * on for the WAL archiver, up to the cap; 0: no archiver). t is a txn to
 * read the log with. */
uint64_t eg_repl_trim_below(eg_repl *r, eg_txn *t, uint64_t archive_next);

/* With --sync-replicas N > 0: calls done(arg, acked) once N replicas have
 * applied lsn (acked >= N) or the timeout passed (acked < N), from the
 * syncer thread; while the module stops, at once with the acks so far.
 * Returns 0 if it will call (or has called), -1 if no hold is needed (N == 0). */
int eg_repl_sync_hold(eg_repl *r, uint64_t lsn, void (*done)(void *arg, int acked), void *arg);

/* ---- replica side ------------------------------------------------------- */

/* The channel to the primary followed now, for forwarding writes (NULL on
 * a primary, and on a replica that follows nobody yet: the caller answers
 * UNAVAILABLE). Thread-safe; valid until eg_repl_free. */
grpc_channel *eg_repl_upstream(eg_repl *r);

/* AdminService.Promote: stops following, starts epoch + 1 with a log
 * record of its own. Refuses, with a reason in msg:
 *   EG_EPRECOND  this node is the primary or being promoted; or the
 *                primary it follows answers a health probe (two primaries
 *                of one epoch would diverge)
 *   EG_EUNAVAIL  the node stops, or restarts to install a snapshot
 * Thread safety: any thread but the writer's. */
eg_err eg_repl_promote(eg_repl *r, uint64_t *epoch, uint64_t *lsn, char *msg, size_t msglen);

/* ---- automatic failover (coord/, --coordinator) ------------------------ */

/* Most distinct primary addresses one process follows in its life (each
 * keeps its channel until eg_repl_free, so that eg_repl_upstream's answer
 * stays valid); eg_repl_follow refuses a new one past it (EG_ELIMIT). */
#define EG_REPL_MAX_UPSTREAMS 16

/* Re-points a replica at primary (HOST:PORT): stops the follower if it
 * follows another address, then follows this one (a resync from a
 * snapshot follows, as ever, if the histories diverged). A no-op when it
 * already follows primary. NULL or "": follow nobody (the follower stops,
 * so nothing more of the old primary's log is applied or acknowledged;
 * eg_repl_upstream is NULL until the next follow). EG_EPRECOND on a primary or while being
 * promoted; EG_EUNAVAIL while stopping or restarting; EG_ELIMIT past
 * EG_REPL_MAX_UPSTREAMS addresses. Thread safety: any thread but the
 * writer's. */
eg_err eg_repl_follow(eg_repl *r, const char *primary);
/* The address followed now, copied into buf ("" : nobody). */
void eg_repl_primary(eg_repl *r, char *buf, size_t n);

/* Promotes this replica at epoch (> its store's epoch), as the
 * coordinator decided: no probe of the old primary (etcd already said it
 * is gone). Otherwise as eg_repl_promote (the same refusals). */
eg_err eg_repl_promote_at(eg_repl *r, uint64_t epoch, uint64_t *lsn, char *msg, size_t msglen);

/* With a coordinator, a primary acknowledges a write only before
 * until_us (eg_mono_us clock) — the end of its etcd lease, less a margin —
 * so that it stops before etcd can hand the lease to another node.
 * 0: fenced now. Never called: no fencing (static roles). Thread safety:
 * any thread. */
void eg_repl_set_lease(eg_repl *r, int64_t until_us);
/* 1 when eg_repl_set_lease was ever called and its until_us has passed. */
int eg_repl_fenced(const eg_repl *r);
/* 1 once eg_repl_set_lease was ever called (the node runs with a
 * coordinator). */
int eg_repl_coordinated(const eg_repl *r);

/* Stops the process so main re-executes it (as for a snapshot install),
 * saying why on stderr: a deposed primary comes back as a replica. A
 * no-op while stopping or already restarting. */
void eg_repl_request_restart(eg_repl *r, const char *why);

/* What the coordinator and the health service read. */
typedef struct {
  uint64_t applied;     /* last LSN committed or applied */
  uint64_t last_epoch;  /* the epoch of the record at applied (0: none) */
  uint64_t epoch;       /* the store's epoch */
  uint64_t primary_lsn; /* replica: the primary's LSN last heard of */
  int connected;        /* replica: streaming from a primary now */
  /* replica: how long since it last held everything the primary had
   * (applied >= primary_lsn); 0 while it does; -1 before it ever did. */
  int64_t behind_ms;
} eg_repl_progress;
void eg_repl_progress_get(eg_repl *r, eg_repl_progress *out);

/* Whether this node should answer SERVING (grpc.health.v1): a primary that
 * is not fenced; a replica streaming from a primary that is behind it by
 * at most max_lag_ms (its behind_ms). Otherwise 0, with the reason in
 * why. Does not know about starting, draining or a broken store (the
 * health service checks those). */
int eg_repl_serving(eg_repl *r, int64_t max_lag_ms, char *why, size_t whylen);

/* A replica in the primary's table, for metrics. lag_us: 0 while its
 * last ack covers the primary's last LSN; else the time since an ack last
 * covered everything the primary had committed when it came (or since its
 * stream started, if none did). */
typedef struct {
  char id[128];
  uint64_t lag_records; /* the primary's last LSN - the replica's applied */
  int64_t lag_us;
  int connected;
} eg_repl_peer_lag;
/* Fills out[0..EG_REPL_MAX_PEERS) with the replicas in the primary's
 * table (those that left too, until their entry is reused); returns how
 * many. 0 on a replica. Thread safety: any thread. */
size_t eg_repl_peer_lags(eg_repl *r, eg_repl_peer_lag *out);

/* Fills role, primary, primary_lsn and replicas of a status answer; the
 * strings and replica entries are allocated with alloc(arena, n). */
eg_err eg_repl_status(eg_repl *r, Engram__V1__GetStatusResponse *out,
                      void *(*alloc)(void *arena, size_t n), void *arena);

#endif
