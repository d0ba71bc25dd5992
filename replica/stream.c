/*
 * Primary side of ReplicationService/Stream. One call, two threads: this
 * one sends batches of log records (or heartbeats) as commits happen; a
 * second receives the replica's acks. Both block on the call's own pluck
 * queue with distinct tags.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sodium.h>
#include <string.h>

#include "common/bgthread.h"
#include "engram/v1/replication.pb-c.h"
#include "replica/internal.h"

struct eg_stream_ctx {
  eg_repl *r;
  grpc_call *call;
  grpc_completion_queue *cq;
  struct eg_peer *peer;
  uint64_t gen;    /* our claim on peer */
  atomic_int gone; /* the replica went away */
  /* The recorded key fingerprint, sent with the first response (fp_len 0:
   * none recorded). */
  uint8_t fp[EG_KEYRING_FINGERPRINT_MAX];
  size_t fp_len;
  int fp_sent;
  /* The last key-store version the replica holds (it said so in its
   * hello; since, what this stream sent it). */
  uint64_t key_version;
};

/* Adds the key fingerprint to resp if it is the stream's first response. */
static void eg_stream_add_fingerprint(struct eg_stream_ctx *s, Engram__V1__StreamResponse *resp) {
  if (s->fp_sent) return;
  resp->key_fingerprint = (ProtobufCBinaryData){s->fp_len, s->fp};
  s->fp_sent = 1;
}

/* The lifecycle indexes are built from the data, unlogged, when a store
 * upgrades to schema 4, at the LSN it is at then; the records below that
 * LSN were logged without index entries. Streaming on from a shared
 * history then leaves the replica without the entries of what the gap
 * wrote: only a snapshot (which carries the primary's indexes and its
 * index_base_lsn) makes the two agree. */
#define EG_INDEX_BASE_WHY "indexes built at another LSN (schema upgrade)"

eg_err eg_repl_stream_start(const eg_stream_view *v, uint64_t *next, const char **why) {
  uint64_t a = v->applied;
  *next = 0;
  if (v->hello_epoch > v->epoch)
    return *why = "replica is at a newer epoch than this primary (deposed primary)", EG_EPRECOND;
  /* A replica at this primary's own epoch got that epoch's records from
   * the node that held it; if they are not ours, two nodes were promoted
   * to one epoch. Resyncing would silently drop what the other one
   * acknowledged: refuse, for an operator to decide. */
  int same_epoch = v->hello_epoch == v->epoch && a > 0;
  if (a > v->last) {
    if (same_epoch) return *why = "replica is ahead of the primary at the same epoch: two primaries of one epoch (split brain)", EG_EPRECOND;
    return *why = "replica is ahead of the primary: diverged", EG_OK;
  }
  if (a > 0) {
    if (v->at_err == EG_ENOTFOUND && a == v->last) return *why = "log trimmed past the replica", EG_OK;
    if (v->at_err == EG_ENOTFOUND) return *why = "replica is behind the trimmed log", EG_OK;
    if (v->at_err) return *why = "cannot read the log", v->at_err;
    if (v->epoch_at != v->applied_epoch) {
      if (same_epoch) return *why = "replica's history diverged at the same epoch: two primaries of one epoch (split brain)", EG_EPRECOND;
      return *why = "replica's history diverged (epoch mismatch)", EG_OK;
    }
    if (v->digest_sent && !v->digest_equal) {
      if (same_epoch) return *why = "replica's record at its applied LSN differs at the same epoch: two nodes promoted from one LSN (split brain)", EG_EPRECOND;
      return *why = "replica's history diverged (its record at the applied LSN differs)", EG_OK;
    }
    if (v->hello_index_base != v->index_base) return *why = EG_INDEX_BASE_WHY, EG_OK;
    *next = a + 1;
    return EG_OK;
  }
  /* An empty replica can replay the whole log only if it is all there. */
  if (v->hello_index_base != v->index_base) return *why = EG_INDEX_BASE_WHY, EG_OK;
  if (v->last == 0 || v->first == 1) {
    *next = 1;
    return EG_OK;
  }
  return *why = "replica is empty and the log no longer starts at 1", EG_OK;
}

eg_err eg_repl_record_at(eg_txn *t, uint64_t lsn, uint64_t *epoch,
                         uint8_t digest[EG_REPL_DIGEST_BYTES]) {
  const uint8_t *rec;
  size_t len;
  eg_err e = eg_store_wal_epoch_at(t, lsn, epoch, &rec, &len);
  if (!e) crypto_hash_sha256(digest, rec, len);
  return e;
}

/* The primary's side of the hello, read through t. */
static eg_err eg_stream_view_read(eg_repl *r, eg_txn *t, const Engram__V1__StreamRequest *hello,
                                  eg_stream_view *v) {
  *v = (eg_stream_view){.last = eg_store_last_lsn(r->store),
                        .epoch = eg_store_epoch(r->store),
                        .hello_epoch = hello->epoch,
                        .applied = hello->applied_lsn,
                        .applied_epoch = hello->applied_epoch,
                        .index_base = eg_store_index_base_lsn(r->store),
                        .hello_index_base = hello->index_base_lsn};
  eg_err e = eg_store_reader_begin(t);
  if (e) return e;
  e = eg_store_wal_first(t, &v->first, NULL);
  if (e == EG_ENOTFOUND) e = EG_OK, v->first = 0;
  if (!e && v->applied > 0 && v->applied <= v->last) {
    uint8_t ours[EG_REPL_DIGEST_BYTES];
    v->at_err = eg_repl_record_at(t, v->applied, &v->epoch_at, ours);
    v->digest_sent = hello->applied_digest.len > 0;
    v->digest_equal = hello->applied_digest.len == sizeof ours &&
                      memcmp(hello->applied_digest.data, ours, sizeof ours) == 0;
  }
  eg_store_reader_end(t);
  return e;
}

static void *eg_stream_acks(void *arg) {
  struct eg_stream_ctx *s = arg;
  Engram__V1__StreamRequest *m;
  eg_thread_name("stream acks");
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

/* The key-store changes a response carries. */
struct eg_key_batch {
  Engram__V1__KeyStoreChange items[EG_REPL_KEY_CHANGES];
  Engram__V1__KeyStoreChange *ptrs[EG_REPL_KEY_CHANGES];
  size_t n;
};

static eg_err eg_key_batch_add(void *arg, uint64_t version, const uint8_t *rec, size_t len) {
  struct eg_key_batch *k = arg;
  uint8_t *copy = malloc(len ? len : 1);
  if (!copy) return EG_ENOMEM;
  memcpy(copy, rec, len);
  Engram__V1__KeyStoreChange *c = &k->items[k->n];
  engram__v1__key_store_change__init(c);
  c->version = version;
  c->record = (ProtobufCBinaryData){len, copy};
  k->ptrs[k->n++] = c;
  return EG_OK;
}

/* Reads the key-store changes after s->key_version into k (at most a
 * bound of them). Called after the response's log records were read:
 * every key those records were sealed with was committed before them, so
 * it is among the changes read now (or was sent before). *cut: the bound
 * was reached, more may follow, and the records must wait. */
static eg_err eg_stream_key_changes(struct eg_stream_ctx *s, struct eg_key_batch *k, int *cut,
                                    uint64_t *last) {
  const eg_repl_key_store *ks = &s->r->key_store;
  *cut = 0;
  *last = s->key_version;
  if (!ks->dk) return EG_OK;
  eg_err e = ks->changes(ks->dk, s->key_version, EG_REPL_KEY_CHANGES, eg_key_batch_add, k, last);
  *cut = k->n == EG_REPL_KEY_CHANGES;
  return e;
}

/* Sends the key-store changes the replica lacks and the records from
 * *next on (at most a batch of each), or a heartbeat when there are none.
 * Returns 1 if sent, 0 if the stream is broken, -1 if the log no longer
 * holds *next. */
static int eg_stream_send(struct eg_stream_ctx *s, eg_txn *t, uint64_t *next) {
  ProtobufCBinaryData *buf = malloc(sizeof *buf * EG_REPL_BATCH_RECORDS);
  struct eg_key_batch *keys = malloc(sizeof *keys);
  struct eg_batch b = {.recs = buf, .next = *next};
  if (!buf || !keys) {
    free(buf);
    free(keys);
    return 0;
  }
  keys->n = 0;
  int cut = 0;
  uint64_t key_last = s->key_version;
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
  if (rc == 1 && eg_stream_key_changes(s, keys, &cut, &key_last) != EG_OK) rc = 0;
  if (rc == 1) {
    /* Cut at the bound: the records may need a key not sent yet. */
    resp.records = cut ? NULL : b.recs;
    resp.n_records = cut ? 0 : b.n;
    resp.key_changes = keys->ptrs;
    resp.n_key_changes = keys->n;
    eg_stream_add_fingerprint(s, &resp);
    rc = eg_rpc_send(s->call, s->cq, &resp.base);
    if (!cut) *next = b.next;
    if (rc == 1) s->key_version = key_last;
    if (rc == 1 && *next > resp.primary_lsn)
      eg_peer_sent(s->r, s->peer, s->gen, resp.primary_lsn, resp.time_us);
  }
  for (size_t i = 0; i < b.n; i++) free(b.recs[i].data);
  for (size_t i = 0; i < keys->n; i++) free(keys->items[i].record.data);
  free(buf);
  free(keys);
  return rc;
}

/* Tells the replica to resync from a snapshot; the call then ends OK with
 * the reason. */
static eg_err eg_stream_resync(struct eg_stream_ctx *s, const char *why, char *msg, size_t msglen) {
  Engram__V1__StreamResponse resp = ENGRAM__V1__STREAM_RESPONSE__INIT;
  resp.resync = 1;
  resp.reason = (char *)why;
  resp.primary_lsn = eg_store_last_lsn(s->r->store);
  resp.epoch = eg_store_epoch(s->r->store);
  eg_stream_add_fingerprint(s, &resp);
  eg_rpc_send(s->call, s->cq, &resp.base);
  snprintf(msg, msglen, "%s", why);
  return EG_OK;
}

/* Streams until the replica goes, the node stops, or it stops being the
 * primary. */
static eg_err eg_stream_loop(struct eg_stream_ctx *s, eg_txn *t, uint64_t next, char *msg,
                             size_t msglen) {
  eg_repl *r = s->r;
  int64_t last_send = 0;
  while (!atomic_load(&s->gone) && !atomic_load(&r->stopping) && eg_repl_is_primary(r) &&
         eg_peer_owned(r, s->peer, s->gen)) {
    /* Key changes alone (a rewrap, an erasure) go out at once too. */
    int have = eg_store_last_lsn(r->store) >= next ||
               (r->key_store.dk && r->key_store.version(r->key_store.dk) > s->key_version);
    if (have || eg_rpc_now_us() - last_send >= EG_REPL_HEARTBEAT_MS * 1000) {
      int rc = eg_stream_send(s, t, &next);
      if (rc < 0) return eg_stream_resync(s, "log trimmed past the replica", msg, msglen);
      if (rc == 0) break;
      last_send = eg_rpc_now_us();
      continue;
    }
    eg_store_wait_lsn(r->store, next, EG_REPL_HEARTBEAT_MS);
  }
  if (atomic_load(&r->stopping)) {
    snprintf(msg, msglen, "primary is stopping");
    return EG_EUNAVAIL;
  }
  snprintf(msg, msglen, "stream ended");
  return EG_OK;
}

eg_err eg_repl_serve_stream(eg_repl *r, const Engram__V1__StreamRequest *hello, grpc_call *call,
                            grpc_completion_queue *cq, char *msg, size_t msglen) {
  struct eg_stream_ctx s = {.r = r, .call = call, .cq = cq,
                            .key_version = hello->key_store_version};
  const char *why = NULL;
  eg_txn *t = NULL;
  eg_stream_view v;
  uint64_t next = 0;
  eg_err e;
  if (!eg_repl_is_primary(r)) {
    snprintf(msg, msglen, "this node is not the primary");
    e = EG_ENOTPRIMARY;
    goto out;
  }
  /* The replica's entry first, before any reader slot is taken: the table
   * bounds the streams, and so the readers they hold (server/config.h).
   * It also holds the log at `applied` while the hello is checked. */
  if (!(s.peer = eg_peer_attach(r, hello->replica_id[0] ? hello->replica_id : "unnamed",
                                hello->applied_lsn, &s.gen))) {
    snprintf(msg, msglen, "too many replicas (at most %d)", EG_REPL_MAX_PEERS);
    e = EG_ELIMIT;
    goto out;
  }
  e = eg_store_meta_get(r->store, EG_META_KEY_FINGERPRINT, s.fp, sizeof s.fp, &s.fp_len);
  if (e == EG_ENOTFOUND) e = EG_OK, s.fp_len = 0;
  if (e) {
    snprintf(msg, msglen, "cannot read the key fingerprint");
    goto detach;
  }
  if ((e = eg_store_reader_new(r->store, &t)) || (e = eg_stream_view_read(r, t, hello, &v)) ||
      (e = eg_repl_stream_start(&v, &next, &why))) {
    snprintf(msg, msglen, "%s", why ? why : "cannot read the log");
    goto detach;
  }
  if (!next) {
    e = eg_stream_resync(&s, why, msg, msglen);
    goto detach;
  }
  pthread_t acks;
  if (pthread_create(&acks, NULL, eg_stream_acks, &s) == 0) {
    e = eg_stream_loop(&s, t, next, msg, msglen);
    grpc_call_cancel(call, NULL); /* ends the ack receiver's pending read */
    pthread_join(acks, NULL);
  } else {
    snprintf(msg, msglen, "cannot start the stream's ack thread");
    e = EG_ENOMEM;
  }
detach:
  eg_peer_detach(r, s.peer, s.gen);
out:
  eg_store_reader_free(t);
  return e;
}
