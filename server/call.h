/*
 * Private to the transport (transport.c: gRPC plumbing; dispatch.c: what
 * a call does). One eg_call per call, from its armed request to its reply.
 *
 * The eg_call state machine. A call is owned by exactly one thread at a
 * time; the owner alone may move it on:
 *
 *   WAITING     armed on a worker's queue. Its arrival completes there, and
 *               that worker (eg_on_call) takes it:
 *                 a stream        -> a thread of its own, which ends it;
 *                 a replica write -> FORWARDING;
 *                 a read          -> REPLYING, or PARKED;
 *                 a write         -> WRITING.
 *   FORWARDING  a replica's write at the primary; the answer completes on
 *               the worker's queue and that worker passes it on -> REPLYING.
 *   PARKED      a read waiting for engram-min-lsn; the parking thread runs
 *               it at its LSN or its deadline -> REPLYING.
 *   WRITING     queued on or applied by the writer thread, which on commit
 *               replies itself (-> REPLYING) or, when busy, hands it back
 *               through an empty batch on the worker's queue -> COMMITTED.
 *   COMMITTED   on the worker: it replies -> REPLYING, or holds the reply
 *               for --sync-replicas acks (the replication module's thread
 *               replies -> REPLYING).
 *   REPLYING    the reply batch is in flight; its completion on the
 *               worker's queue frees the call.
 *
 * Besides its owner, only the reaper touches a unary call: it may cancel it
 * (grpc_call_cancel_with_status is thread safe) while it is registered;
 * eg_call_free unregisters it first.
 */
#ifndef EG_SERVER_CALL_H
#define EG_SERVER_CALL_H

#include <grpc/grpc.h>
#include <pthread.h>
#include <stdatomic.h>

#include "common/rpc.h"
#include "server/metrics.h"
#include "server/parking.h"
#include "server/limits.h"
#include "server/reaper.h"
#include "server/service.h"
#include "server/transport.h"
#include "server/writer.h"

typedef struct eg_worker eg_worker;

typedef enum {
  EG_CALL_WAITING,
  EG_CALL_FORWARDING,
  EG_CALL_PARKED,
  EG_CALL_WRITING,
  EG_CALL_COMMITTED,
  EG_CALL_REPLYING,
} eg_call_state;

/* One call, from the armed request to the reply's completion. It is the
 * completion-queue tag, and its first member makes it a writer item. */
typedef struct eg_call {
  eg_write_item item;
  eg_call_state state;
  eg_worker *w;
  size_t mi; /* index into the method table; SIZE_MAX: unregistered */
  grpc_call *call;
  gpr_timespec deadline; /* the client's; infinite if it sent none */
  grpc_metadata_array md;
  grpc_byte_buffer *payload;
  grpc_call_details details; /* unregistered calls only */
  grpc_completion_queue *stream_cq; /* streaming methods: the call's own queue */
  eg_reaped reap;                   /* unary calls: the --call-timeout-ms cap */
  eg_req req;
  uint64_t lsn;    /* a write's commit, while it waits for replica acks */
  eg_err written; /* EG_CALL_COMMITTED: the write's outcome */
  eg_client_exchange fwd; /* EG_CALL_FORWARDING: the call to the primary */
  eg_parked park;             /* a read waiting for engram-min-lsn */
  /* What bounds park.until_us: --max-lsn-wait-ms (UNAVAILABLE, retry),
   * the client's deadline or the --call-timeout-ms cap (DEADLINE_EXCEEDED:
   * the caller has given up by then, so "retry" would be a race with its
   * own deadline). */
  enum { EG_PARK_ENDS_WAIT, EG_PARK_ENDS_DEADLINE, EG_PARK_ENDS_CAP } park_ends;
  /* The authorized caller's tenant (req.tenant points here): a copy, as a
   * reload frees the tables it came from (server/auth.h). */
  char tenant[EG_ID_MAX + 1];
  const ProtobufCMessage *in; /* its decoded request, meanwhile */
  grpc_metadata lsn_md;
  grpc_byte_buffer *out;
  size_t out_pending; /* out's bytes counted in the transport's pending_reply */
  grpc_slice status_details;
  /* A non-OK reply's: the eg_err behind it (EG_OK: none, a code passed
   * through), and grpc-status-details-bin and engram-request-id. */
  eg_err reply_err;
  grpc_metadata error_md[2];
  int cancelled;
  int64_t arrived_us; /* eg_metrics_arrive's: the latency histogram's start */
  /* A stream's place, once admitted (its method's, or their tokened
   * ones), and its peer address's slot in place->peers + 1 (0: none). */
  struct eg_stream_places *place;
  int peer_slot;
  /* Per-tenant limits (server/limits.h), for the agent role's calls: the
   * tenant's entry, held until eg_call_free; its storage quota (0: none),
   * checked by a write's apply; a refusal's own RetryInfo delay (0: the
   * table's). */
  struct eg_limit_hold *hold;
  uint64_t quota;
  int retry_ms;
} eg_call;

struct eg_worker {
  eg_transport *tp;
  grpc_completion_queue *cq;
  pthread_t thread;
  int started;
  eg_txn *reader;
};

struct eg_transport {
  const eg_srv *srv;
  eg_writer *writer;
  grpc_server *server;
  grpc_completion_queue *shutdown_cq;
  const eg_method **methods;
  const char **paths;
  void **handles;
  eg_metrics *metrics;
  eg_parking *parking;
  eg_reaper *reaper;
  size_t n_methods;
  eg_worker *workers;
  int n_workers;
  atomic_int stopping;
  atomic_int streams; /* stream threads still running */
  atomic_int calls;   /* eg_calls allocated and not yet freed */
  /* Reply bytes in batches started and not yet completed: held for clients
   * that do not read (--max-pending-reply-bytes). */
  atomic_int_fast64_t pending_reply;
};

/* ---- plumbing (transport.c) ---- */

/* Frees c and whatever it holds; unregisters it from the reaper first. */
void eg_call_free(eg_call *c);
/* Arms one more request for method mi (SIZE_MAX: any unregistered one) on
 * w's queue. */
void eg_arm(eg_worker *w, size_t mi);
/* Sends grpc status code with msg and, when not NULL, the payload (which
 * the call now owns). lsn != 0 goes out as `engram-lsn`. -> REPLYING.
 * A payload that would take the server's unsent reply bytes past
 * --max-pending-reply-bytes is dropped: RESOURCE_EXHAUSTED instead.
 * A non-OK reply carries eg_error_metadata for c->reply_err (eg_reply
 * sets it; EG_OK, a code passed through, for the other callers).
 * Thread safety: the call's owner, any thread. */
void eg_reply_raw(eg_call *c, int code, const char *msg, grpc_byte_buffer *payload, uint64_t lsn);
/* The value of metadata key in md (valid while md is), or NULL. */
const grpc_slice *eg_md_find(const grpc_metadata_array *md, const char *key);
/* Fills c->error_md for a reply with code (not OK), e (EG_OK: none) and
 * msg: error_md[0] engram-request-id (the primary's for a forwarded
 * write whose answer carried one, else a fresh one), error_md[1]
 * grpc-status-details-bin (eg_status_details_relay for a forwarded write,
 * so its code and message are always the ones sent). An INTERNAL or
 * DATA_LOSS reply is logged at ERROR with its method and request id.
 * Returns the entries to send: 2, or 1 (the id alone) when memory ran out
 * for the details. Thread safety: the call's owner. */
size_t eg_error_metadata(eg_call *c, int code, eg_err e, const char *msg);
/* Sends status e (with the handler's message, or the table's) and, when
 * OK, the handler's response. Once the response is packed, frees the
 * request's arena (decoded request, response tree, decrypted text) and,
 * unless a forwarded exchange still sends it, the request payload: a
 * client slow to read its reply holds only the packed bytes. Nothing may
 * read c->req's arena or c->payload after this. Where a unary call's eg_err becomes a gRPC
 * code (eg_stream_main in dispatch.c does it for streams); eg_reply_raw's
 * other callers pass a code through. */
void eg_reply(eg_call *c, eg_err e, uint64_t lsn);

/* ---- dispatch (dispatch.c) ---- */

/* A call arrived (WAITING, on its worker): authorize, decode and route it. */
void eg_on_call(eg_call *c);
/* The primary answered a forwarded write (FORWARDING, on the worker). */
void eg_forward_done(eg_call *c, int ok);
/* A write the writer handed back (COMMITTED, on the worker). */
void eg_write_reply(eg_call *c);

#endif
