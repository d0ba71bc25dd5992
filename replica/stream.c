/*
 * Primary side of ReplicationService/Stream. One call, two threads: this
 * one sends batches of log records (or heartbeats) as commits happen; a
 * second receives the replica's acks. Both block on the call's own pluck
 * queue with distinct tags.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engram/v1/replication.pb-c.h"
#include "replica/internal.h"

struct eg_stream_ctx {
  eg_repl *r;
  grpc_call *call;
  grpc_completion_queue *cq;
  struct eg_peer *peer;
  uint64_t gen;    /* our claim on peer */
  atomic_int gone; /* the replica went away */
};

/* Where a replica with this hello can continue from, or 0 with *why set
 * when it must resync from a snapshot. */
static uint64_t eg_stream_start(eg_repl *r, eg_txn *t, const Engram__V1__StreamRequest *hello,
                                const char **why) {
  uint64_t last = eg_store_last_lsn(r->store), first = 0, epoch = 0;
  eg_err e = eg_store_wal_first(t, &first, NULL);
  uint64_t a = hello->applied_lsn;
  if (a > last) return *why = "replica is ahead of the primary: diverged", 0;
  if (a > 0) {
    e = eg_store_wal_epoch_at(t, a, &epoch);
    if (e == EG_ENOTFOUND && a == last) return *why = "log trimmed past the replica", 0;
    if (e == EG_ENOTFOUND) return *why = "replica is behind the trimmed log", 0;
    if (e) return *why = "cannot read the log", 0;
    if (epoch != hello->applied_epoch) return *why = "replica's history diverged (epoch mismatch)", 0;
    return a + 1;
  }
  /* An empty replica can replay the whole log only if it is all there. */
  if (last == 0) return 1;
  if (e == EG_OK && first == 1) return 1;
  return *why = "replica is empty and the log no longer starts at 1", 0;
}

static void *eg_stream_acks(void *arg) {
  struct eg_stream_ctx *s = arg;
  Engram__V1__StreamRequest *m;
  while ((m = (void *)eg_rpc_recv(s->call, s->cq, &engram__v1__stream_request__descriptor))) {
    eg_peer_ack(s->r, s->peer, s->gen, m->applied_lsn);
    protobuf_c_message_free_unpacked(&m->base, NULL);
  }
  atomic_store(&s->gone, 1);
  eg_store_wake_waiters(s->r->store); /* the sender may be waiting for commits */
  return NULL;
}

struct eg_batch {
  ProtobufCBinaryData *recs;
  size_t n, bytes;
  uint64_t next;
  int gap;
};

static int eg_batch_add(void *arg, uint64_t lsn, const uint8_t *rec, size_t len) {
  struct eg_batch *b = arg;
  if (lsn != b->next) return b->gap = 1; /* trimmed under us */
  uint8_t *copy = malloc(len ? len : 1);
  if (!copy) return 1;
  memcpy(copy, rec, len);
  b->recs[b->n++] = (ProtobufCBinaryData){len, copy};
  b->bytes += len;
  b->next++;
  return b->n == EG_REPL_BATCH_RECORDS || b->bytes >= EG_REPL_BATCH_BYTES;
}

/* Sends the records from *next on (at most a batch), or a heartbeat when
 * there are none. Returns 1 if sent, 0 if the stream is broken, -1 if the
 * log no longer holds *next. */
static int eg_stream_send(struct eg_stream_ctx *s, eg_txn *t, uint64_t *next) {
  ProtobufCBinaryData *buf = malloc(sizeof *buf * EG_REPL_BATCH_RECORDS);
  struct eg_batch b = {.recs = buf, .next = *next};
  if (!buf) return 0;
  Engram__V1__StreamResponse resp = ENGRAM__V1__STREAM_RESPONSE__INIT;
  resp.primary_lsn = eg_store_last_lsn(s->r->store);
  resp.epoch = eg_store_epoch(s->r->store);
  resp.time_us = eg_rpc_now_us();
  eg_err e = EG_OK;
  if (resp.primary_lsn >= *next) {
    e = eg_store_reader_begin(t);
    if (!e) e = eg_store_wal_scan(t, *next, eg_batch_add, &b);
    eg_store_reader_end(t);
  }
  int rc = e ? 0 : (b.gap || (resp.primary_lsn >= *next && b.n == 0)) ? -1 : 1;
  if (rc == 1) {
    resp.records = b.recs;
    resp.n_records = b.n;
    rc = eg_rpc_send(s->call, s->cq, &resp.base);
    *next = b.next;
  }
  for (size_t i = 0; i < b.n; i++) free(b.recs[i].data);
  free(buf);
  return rc;
}

static void eg_stream_resync(struct eg_stream_ctx *s, const char *why) {
  Engram__V1__StreamResponse resp = ENGRAM__V1__STREAM_RESPONSE__INIT;
  resp.resync = 1;
  resp.reason = (char *)why;
  resp.primary_lsn = eg_store_last_lsn(s->r->store);
  resp.epoch = eg_store_epoch(s->r->store);
  eg_rpc_send(s->call, s->cq, &resp.base);
  eg_rpc_finish(s->call, s->cq, GRPC_STATUS_OK, why);
}

/* Streams until the replica goes, the node stops, or it stops being the
 * primary. */
static void eg_stream_loop(struct eg_stream_ctx *s, eg_txn *t, uint64_t next) {
  eg_repl *r = s->r;
  int64_t last_send = 0;
  while (!atomic_load(&s->gone) && !atomic_load(&r->stopping) && eg_repl_is_primary(r) &&
         eg_peer_owned(r, s->peer, s->gen)) {
    int have = eg_store_last_lsn(r->store) >= next;
    if (have || eg_rpc_now_us() - last_send >= EG_REPL_HEARTBEAT_MS * 1000) {
      int rc = eg_stream_send(s, t, &next);
      if (rc < 0) {
        eg_stream_resync(s, "log trimmed past the replica");
        return;
      }
      if (rc == 0) break;
      last_send = eg_rpc_now_us();
      continue;
    }
    eg_store_wait_lsn(r->store, next, EG_REPL_HEARTBEAT_MS);
  }
  eg_rpc_finish(s->call, s->cq, atomic_load(&r->stopping) ? GRPC_STATUS_UNAVAILABLE : GRPC_STATUS_OK,
                atomic_load(&r->stopping) ? "primary is stopping" : "stream ended");
}

void eg_repl_serve_stream(eg_repl *r, grpc_call *call, grpc_completion_queue *cq) {
  struct eg_stream_ctx s = {.r = r, .call = call, .cq = cq};
  const char *why = NULL;
  eg_txn *t = NULL;
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_INITIAL_METADATA;
  Engram__V1__StreamRequest *hello = NULL;
  if (!eg_rpc_run(call, cq, &op, 1) ||
      !(hello = (void *)eg_rpc_recv(call, cq, &engram__v1__stream_request__descriptor))) {
    eg_rpc_finish(call, cq, GRPC_STATUS_INVALID_ARGUMENT, "expected a StreamRequest");
    return;
  }
  if (!eg_repl_is_primary(r)) {
    eg_rpc_finish(call, cq, GRPC_STATUS_FAILED_PRECONDITION, "this node is not the primary");
    goto out;
  }
  if (hello->epoch > eg_store_epoch(r->store)) {
    /* A replica from a newer epoch: this primary was deposed. */
    eg_rpc_finish(call, cq, GRPC_STATUS_FAILED_PRECONDITION,
                  "replica is at a newer epoch than this primary (deposed primary)");
    goto out;
  }
  if (eg_store_reader_new(r->store, &t) != EG_OK) goto out;
  uint64_t next = EG_OK == eg_store_reader_begin(t) ? eg_stream_start(r, t, hello, &why) : 0;
  eg_store_reader_end(t);
  if (!next) {
    eg_stream_resync(&s, why ? why : "cannot read the log");
    goto out;
  }
  if (!(s.peer = eg_peer_attach(r, hello->replica_id[0] ? hello->replica_id : "unnamed", next - 1,
                                &s.gen))) {
    eg_rpc_finish(call, cq, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many replicas");
    goto out;
  }
  pthread_t acks;
  if (pthread_create(&acks, NULL, eg_stream_acks, &s) == 0) {
    eg_stream_loop(&s, t, next);
    grpc_call_cancel(call, NULL); /* ends the ack receiver's pending read */
    pthread_join(acks, NULL);
  }
  eg_peer_detach(r, s.peer, s.gen);
out:
  eg_store_reader_free(t);
  if (hello) protobuf_c_message_free_unpacked(&hello->base, NULL);
}
