/*
 * Replica side: follow the primary's log. Connect, say where we stand,
 * apply each batch in one write txn on the writer thread (which also
 * records the applied LSN, so a crash resumes exactly there), ack, repeat;
 * reconnect with backoff.
 * On resync: fetch a snapshot, then ask main to restart into it.
 */
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/bgthread.h"
#include "common/clock.h"
#include "common/log.h"
#include "engram/v1/replication.pb-c.h"
#include "replica/internal.h"

#define EG_BACKOFF_MIN_MS 100
#define EG_BACKOFF_MAX_MS 5000

/* The batch's records, applied on the writer thread in a txn of their
 * own, which commits at the last record's LSN (and also trims the log:
 * the replica keeps a bounded log too, it may be promoted one day). */
static eg_err eg_follow_apply_in(void *arg, eg_txn *w) {
  const Engram__V1__StreamResponse *m = arg;
  eg_err e = EG_OK;
  for (size_t i = 0; i < m->n_records && !e; i++)
    e = eg_store_wal_apply(w, m->records[i].data, m->records[i].len);
  return e;
}

/* Applies the batch through the writer and waits for its commit. */
static eg_err eg_follow_apply(eg_repl *r, const Engram__V1__StreamResponse *m) {
  return r->write(r->writer, eg_follow_apply_in, (void *)m, NULL);
}

/* Stores the response's key-store changes (durably) before its records
 * are applied: the records may be sealed with those keys. */
static eg_err eg_follow_apply_keys(eg_repl *r, const Engram__V1__StreamResponse *m) {
  const eg_repl_key_store *ks = &r->key_store;
  if (!m->n_key_changes || !ks->dk) return EG_OK;
  eg_key_change *ch = malloc(m->n_key_changes * sizeof *ch);
  if (!ch) return EG_ENOMEM;
  for (size_t i = 0; i < m->n_key_changes; i++)
    ch[i] = (eg_key_change){.version = m->key_changes[i]->version,
                            .rec = m->key_changes[i]->record.data,
                            .len = m->key_changes[i]->record.len};
  eg_err e = ks->apply(ks->dk, ch, m->n_key_changes);
  free(ch);
  return e;
}

/* An ack: where this replica stands now. */
static void eg_follow_ack(eg_repl *r, Engram__V1__StreamRequest *h) {
  engram__v1__stream_request__init(h);
  h->replica_id = r->replica_id;
  h->epoch = eg_store_epoch(r->store);
  h->applied_lsn = eg_store_last_lsn(r->store);
  h->index_base_lsn = eg_store_index_base_lsn(r->store);
}

/* The first message of a stream also carries the epoch and digest of the
 * record at applied_lsn (the primary checks the shared history with them;
 * digest is their buffer); acks need only the LSN, so only the hello reads
 * the log. Returns the error reading them: a hello without them would be
 * taken for another history (split brain at the same epoch), so none is
 * sent then. */
static eg_err eg_follow_hello(eg_repl *r, Engram__V1__StreamRequest *h,
                              uint8_t digest[EG_REPL_DIGEST_BYTES]) {
  eg_txn *t;
  eg_follow_ack(r, h);
  /* key_store_version stays 0: every stream asks for the key store from
   * its first change. Versions number one primary's changes: after a
   * failover, or a snapshot resync onto another node's history, the
   * number this key store holds says nothing about what the primary has
   * (two histories share numbers), and keys made there would never be
   * sent. Applying is idempotent (a tombstone stays one); the cost is the
   * key store, one small record per data key, once per stream. */
  if (!h->applied_lsn) return EG_OK;
  eg_err e = eg_store_reader_new(r->store, &t);
  if (e) return e;
  e = eg_store_reader_begin(t);
  if (!e) e = eg_repl_record_at(t, h->applied_lsn, &h->applied_epoch, digest);
  if (!e) h->applied_digest = (ProtobufCBinaryData){.len = EG_REPL_DIGEST_BYTES, .data = digest};
  eg_store_reader_end(t);
  eg_store_reader_free(t);
  return e;
}

/* Logs line unless it is the one logged last: a replica that retries
 * every few seconds for the same reason says it once. */
static void eg_follow_log(const char *line) {
  static char last[1024]; /* the follower is one thread */
  if (strcmp(line, last) == 0) return;
  eg_log(EG_LOG_WARN, "replica: %s", line);
  snprintf(last, sizeof last, "%s", line);
}

/* 1 if this node's keys fit the key fingerprint the primary recorded (m is
 * the stream's first response): its data, which the replica would store,
 * is sealed with those keys, except keys nothing is under any more (a key
 * the replica's keyring no longer holds, retired: key_store.keys_fit).
 * Else logs which key is absent or differs. A primary that sends none
 * predates the check. */
static int eg_follow_keys_fit(eg_repl *r, const Engram__V1__StreamResponse *m) {
  char why[768], line[1024];
  int has_new;
  const eg_keyring *keys = r->keys ? atomic_load(r->keys) : NULL;
  const ProtobufCBinaryData *fp = &m->key_fingerprint;
  if (!fp->len || !keys) return 1;
  eg_err e = r->key_store.keys_fit
                 ? r->key_store.keys_fit(r->store, r->key_store.dk, keys, fp->data, fp->len, why,
                                         sizeof why)
                 : eg_keyring_fingerprint_check(keys, fp->data, fp->len, &has_new, why,
                                                sizeof why);
  if (e == EG_OK) return 1;
  snprintf(line, sizeof line,
           "refusing the log of %s: its data does not fit this node's keyring: %s; applying "
           "nothing (install the primary's keyring and restart)", eg_repl_current(r)->addr, why);
  eg_follow_log(line);
  return 0;
}

/* Says why the stream ended (a refused token, a deposed primary, a
 * network failure), once per distinct reason, so an operator sees why the
 * replica is not moving. Waits at most a second for the status. */
static void eg_follow_log_end(eg_repl *r, grpc_call *call, grpc_completion_queue *cq) {
  grpc_status_code code = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice();
  grpc_metadata_array trailing;
  grpc_metadata_array_init(&trailing);
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  op.data.recv_status_on_client.trailing_metadata = &trailing;
  op.data.recv_status_on_client.status = &code;
  op.data.recv_status_on_client.status_details = &details;
  char now[512];
  if (eg_rpc_run_within(call, cq, &op, 1, 1000))
    snprintf(now, sizeof now, "stream to the primary ended: %s: status %d: %.*s", eg_repl_current(r)->addr,
             (int)code, (int)GRPC_SLICE_LENGTH(details), (const char *)GRPC_SLICE_START_PTR(details));
  else
    snprintf(now, sizeof now,
             "stream to the primary ended: %s: no answer (stream silent for %d ms or broken)",
             eg_repl_current(r)->addr, EG_REPL_SILENCE_MS);
  eg_follow_log(now);
  grpc_slice_unref(details);
  grpc_metadata_array_destroy(&trailing);
}

/* One connection: returns 1 if it streamed at least one batch (the
 * backoff resets), 0 otherwise, -1 when a resync was handled. */
static int eg_follow_once(eg_repl *r) {
  eg_upstream u;
  Engram__V1__StreamRequest hello;
  uint8_t digest[EG_REPL_DIGEST_BYTES];
  int streamed = 0, first = 1, refused = 0;
  eg_err he = eg_follow_hello(r, &hello, digest);
  if (he) {
    char line[256];
    snprintf(line, sizeof line, "cannot read this node's record at lsn %llu for the hello (%s); "
             "retrying", (unsigned long long)hello.applied_lsn, eg_err_msg(he));
    eg_follow_log(line);
    return 0; /* a failed attempt: backoff, then again */
  }
  if (eg_upstream_open(r, EG_REPL_SERVICE "Stream", &hello.base, 0, &u)) {
    Engram__V1__StreamResponse *m;
    while (!eg_repl_follow_done(r) &&
           (m = (void *)eg_rpc_recv_within(u.call, u.cq, &engram__v1__stream_response__descriptor,
                                           EG_REPL_SILENCE_MS))) {
      /* Before anything of the primary's is applied (a resync included). */
      if (first && !eg_follow_keys_fit(r, m)) {
        protobuf_c_message_free_unpacked(&m->base, NULL);
        refused = 1;
        break;
      }
      first = 0;
      atomic_store(&r->primary_lsn, m->primary_lsn);
      atomic_store(&r->connected, 1);
      eg_err e = EG_OK;
      if (m->resync) {
        eg_log(EG_LOG_WARN, "replica: primary asks for a resync: %s", m->reason);
        streamed = -1;
      } else {
        streamed = 1;
        if ((e = eg_follow_apply_keys(r, m)) != EG_OK)
          eg_log(EG_LOG_ERROR, "replica: cannot store the primary's key-store changes: %s",
                 eg_err_msg(e));
        if (!e && m->n_records) e = eg_follow_apply(r, m);
        if (e) eg_log(EG_LOG_ERROR, "replica: cannot apply the primary's log: %s", eg_err_msg(e));
      }
      /* Caught up as of this message: what behind_ms counts from. */
      if (!e && streamed > 0 && eg_store_last_lsn(r->store) >= m->primary_lsn)
        atomic_store(&r->caught_up_us, eg_mono_us());
      protobuf_c_message_free_unpacked(&m->base, NULL);
      if (e || streamed < 0) break;
      Engram__V1__StreamRequest ack;
      eg_follow_ack(r, &ack);
      if (!eg_rpc_send(u.call, u.cq, &ack.base)) break;
    }
  }
  atomic_store(&r->connected, 0);
  /* A refusal was logged already; the primary would not end the stream. */
  if (!atomic_load(&r->stopping) && !refused) eg_follow_log_end(r, u.call, u.cq);
  eg_upstream_close(r, &u);
  return streamed;
}

/* Sleeps ms, or less when the follower must end. */
static void eg_follow_sleep(eg_repl *r, int ms) {
  for (int slept = 0; slept < ms && !eg_repl_follow_done(r); slept += 50) usleep(50 * 1000);
}

void *eg_repl_follower_main(void *arg) {
  eg_repl *r = arg;
  eg_thread_name("follower");
  int backoff = EG_BACKOFF_MIN_MS;
  while (!eg_repl_follow_done(r)) {
    int rc = eg_follow_once(r);
    if (rc < 0) {
      if (eg_repl_fetch_snapshot(r) == EG_OK) {
        if (!eg_repl_claim_restart(r)) {
          /* Promoted (or stopping) meanwhile: this node's own history now
           * wins; the old primary's copy must not replace it. */
          eg_repl_discard_snapshot(r);
          break;
        }
        /* main sees the flag after the stop and starts over on the copy;
         * a Promote from now on is refused. */
        kill(getpid(), EG_REPL_RESTART_SIGNAL);
        break;
      }
      eg_log(EG_LOG_WARN, "replica: snapshot failed; retrying");
    }
    if (rc > 0) backoff = EG_BACKOFF_MIN_MS;
    eg_follow_sleep(r, backoff);
    backoff = backoff * 2 > EG_BACKOFF_MAX_MS ? EG_BACKOFF_MAX_MS : backoff * 2;
  }
  return NULL;
}
