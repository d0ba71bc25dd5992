/* The primary's table of replicas: their acks feed GetStatus, log
 * retention and --sync-replicas. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/bgthread.h"
#include "replica/internal.h"

struct eg_peer *eg_peer_attach(eg_repl *r, const char *id, uint64_t applied, uint64_t *gen) {
  static uint64_t next_gen; /* guarded by r->mu */
  struct eg_peer *p = NULL;
  pthread_mutex_lock(&r->mu);
  for (size_t i = 0; i < r->n_peers && !p; i++)
    if (strcmp(r->peers[i].id, id) == 0) p = &r->peers[i];
  if (!p && r->n_peers < EG_REPL_MAX_PEERS) p = &r->peers[r->n_peers++];
  /* Full: reuse the entry of the replica that left longest ago. */
  if (!p)
    for (size_t i = 0; i < r->n_peers; i++)
      if (!r->peers[i].connected && (!p || r->peers[i].ack_us < p->ack_us)) p = &r->peers[i];
  /* A replica that reconnects while its old stream still looks alive (a
   * hung process, a host that vanished) takes over: the new stream is the
   * one that is really there. */
  if (p) {
    snprintf(p->id, sizeof p->id, "%s", id);
    p->applied = applied;
    p->ack_us = p->caught_up_us = eg_rpc_now_us();
    p->sent_us = 0;
    p->connected = 1;
    p->gen = *gen = ++next_gen;
  }
  pthread_mutex_unlock(&r->mu);
  return p;
}

int eg_peer_owned(eg_repl *r, const struct eg_peer *p, uint64_t gen) {
  pthread_mutex_lock(&r->mu);
  int owned = p->gen == gen;
  pthread_mutex_unlock(&r->mu);
  return owned;
}

void eg_peer_ack(eg_repl *r, struct eg_peer *p, uint64_t gen, uint64_t applied) {
  pthread_mutex_lock(&r->mu);
  if (p->gen == gen) {
    p->applied = applied;
    p->ack_us = eg_rpc_now_us();
    if (applied >= eg_store_last_lsn(r->store)) p->caught_up_us = p->ack_us;
    else if (p->sent_us && applied >= p->sent_lsn && p->sent_us > p->caught_up_us)
      p->caught_up_us = p->sent_us;
    if (p->sent_us && applied >= p->sent_lsn) p->sent_us = 0;
    pthread_cond_broadcast(&r->cv);
  }
  pthread_mutex_unlock(&r->mu);
}

void eg_peer_sent(eg_repl *r, struct eg_peer *p, uint64_t gen, uint64_t lsn, int64_t at_us) {
  pthread_mutex_lock(&r->mu);
  /* One sample in flight: under steady writes a newer one would replace
   * it before any ack covered it, and the lag would never move. */
  if (p->gen == gen && !p->sent_us) {
    p->sent_lsn = lsn;
    p->sent_us = at_us;
  }
  pthread_mutex_unlock(&r->mu);
}

void eg_peer_detach(eg_repl *r, struct eg_peer *p, uint64_t gen) {
  pthread_mutex_lock(&r->mu);
  if (p->gen == gen) p->connected = 0;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

/* Connected replicas that applied lsn. Called with mu held. */
static int eg_acked(const eg_repl *r, uint64_t lsn) {
  int n = 0;
  for (size_t i = 0; i < r->n_peers; i++)
    if (r->peers[i].connected && r->peers[i].applied >= lsn) n++;
  return n;
}


int eg_repl_sync_hold(eg_repl *r, uint64_t lsn, void (*done)(void *arg, int acked), void *arg) {
  if (r->sync_replicas <= 0) return -1;
  struct eg_hold *h = malloc(sizeof *h);
  pthread_mutex_lock(&r->mu);
  /* Stopping (the syncer may be gone) or out of memory: settle now with
   * what the replicas acked so far, never a plain OK. */
  if (!h || atomic_load(&r->stopping)) {
    int acked = eg_acked(r, lsn);
    pthread_mutex_unlock(&r->mu);
    free(h);
    done(arg, acked);
    return 0;
  }
  *h = (struct eg_hold){.lsn = lsn,
                        .deadline_us = eg_rpc_now_us() + r->sync_timeout_ms * 1000,
                        .done = done,
                        .arg = arg};
  h->next = r->holds;
  r->holds = h;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  return 0;
}

/* Takes the holds that are settled (enough acks, past their deadline, or
 * stopping) off the list; returns them with their ack counts. mu held. */
static struct eg_hold *eg_settled(eg_repl *r, int64_t now, int64_t *next_deadline) {
  struct eg_hold *out = NULL, **pp = &r->holds;
  int stopping = atomic_load(&r->stopping);
  *next_deadline = INT64_MAX;
  while (*pp) {
    struct eg_hold *h = *pp;
    int acked = eg_acked(r, h->lsn);
    if (acked >= r->sync_replicas || h->deadline_us <= now || stopping) {
      *pp = h->next;
      h->next = out;
      h->lsn = (uint64_t)acked; /* from here on: how many acked */
      out = h;
    } else {
      if (h->deadline_us < *next_deadline) *next_deadline = h->deadline_us;
      pp = &h->next;
    }
  }
  return out;
}

void *eg_repl_syncer_main(void *arg) {
  eg_repl *r = arg;
  eg_thread_name("syncer");
  pthread_mutex_lock(&r->mu);
  for (;;) {
    int64_t next;
    struct eg_hold *done = eg_settled(r, eg_rpc_now_us(), &next);
    if (done) {
      /* Replies go out without the lock: they may take time. */
      pthread_mutex_unlock(&r->mu);
      while (done) {
        struct eg_hold *h = done;
        done = h->next;
        h->done(h->arg, (int)h->lsn);
        free(h);
      }
      pthread_mutex_lock(&r->mu);
      continue;
    }
    if (atomic_load(&r->stopping) && !r->holds) break;
    struct timespec until;
    int64_t wait_us = next == INT64_MAX ? 1000000 : next - eg_rpc_now_us();
    if (wait_us < 0) wait_us = 0;
    clock_gettime(CLOCK_REALTIME, &until);
    int64_t ns = until.tv_nsec + (wait_us % 1000000) * 1000;
    until.tv_sec += wait_us / 1000000 + ns / 1000000000;
    until.tv_nsec = ns % 1000000000;
    pthread_cond_timedwait(&r->cv, &r->mu, &until);
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

/* The LSN below which the cap lets records go whatever replicas hold. */
static uint64_t eg_trim_cap_floor(const eg_trim_view *v) {
  return v->last > (uint64_t)v->retain_cap ? v->last - (uint64_t)v->retain_cap + 1 : 0;
}

/* The lowest LSN a connected replica holds (UINT64_MAX: none). */
static uint64_t eg_trim_held(const eg_trim_view *v) {
  uint64_t held = UINT64_MAX;
  for (size_t i = 0; i < v->n_held; i++)
    if (v->held[i] < held) held = v->held[i];
  return held;
}

uint64_t eg_repl_trim_floor(const eg_trim_view *v) {
  if (!v->first) return 0; /* an empty log */
  uint64_t last = v->last;
  uint64_t below = last > (uint64_t)v->retain_records ? last - (uint64_t)v->retain_records + 1 : 0;
  /* Age: every record older than --wal-retain-s, but never the newest: a
   * replica that reconnects checks its history against it. */
  uint64_t young = v->young < last ? v->young : last;
  if (young > below) below = young;
  /* Hold what a connected replica still needs, up to the cap: the records
   * after its applied LSN, and the one at it, which its next hello is
   * checked against (epoch and digest). */
  uint64_t held = eg_trim_held(v), cap_floor = eg_trim_cap_floor(v);
  if (held < below) below = held;
  if (below < cap_floor) below = cap_floor;
  /* Erasure wins over the replicas: a lagging replica resyncs from a
   * snapshot rather than read erased data from the log. */
  if (below < v->erase_floor) below = v->erase_floor;
  /* The archiver's hold wins over erasure, up to the cap: an archive with
   * a gap is no archive, and the records it waits for are archived
   * (erased data included) moments later anyway; the log keeps them no
   * longer than the archive's lag. */
  if (v->archive_next && below > v->archive_next)
    below = v->archive_next > cap_floor ? v->archive_next : cap_floor;
  return below;
}

int eg_repl_trim_age_matters(const eg_trim_view *v) {
  uint64_t held = eg_trim_held(v), cap_floor = eg_trim_cap_floor(v);
  return v->first && (held > cap_floor ? held : cap_floor) > v->first;
}

uint64_t eg_repl_trim_below(eg_repl *r, eg_txn *t, uint64_t archive_next) {
  uint64_t held[EG_REPL_MAX_PEERS];
  eg_trim_view v = {.archive_next = archive_next,
                    .last = eg_store_last_lsn(r->store),
                    .retain_records = r->retain_records,
                    .retain_cap = r->retain_cap,
                    .held = held,
                    .erase_floor = eg_store_erase_floor(r->store)};
  if (eg_store_wal_first(t, &v.first, NULL) != EG_OK) return 0;
  pthread_mutex_lock(&r->mu);
  for (size_t i = 0; i < r->n_peers; i++)
    if (r->peers[i].connected) held[v.n_held++] = r->peers[i].applied;
  pthread_mutex_unlock(&r->mu);
  /* young = first: age trims nothing. So when a replica holds the log (no
   * walk needed), and when a log cannot be read for times. */
  v.young = v.first;
  if (eg_repl_trim_age_matters(&v) &&
      eg_store_wal_first_after(t, eg_rpc_now_us() - r->retain_s * 1000000, EG_REPL_TRIM_SCAN,
                               &v.young) != EG_OK)
    v.young = v.first;
  return eg_repl_trim_floor(&v);
}

eg_err eg_repl_status(eg_repl *r, Engram__V1__GetStatusResponse *out,
                      void *(*alloc)(void *arena, size_t n), void *arena) {
  int primary = eg_repl_is_primary(r);
  const struct eg_upstream_entry *u = eg_repl_current(r);
  out->role = primary ? "primary" : "replica";
  out->primary = primary || !u ? "" : u->addr; /* entries live until eg_repl_free */
  out->primary_lsn = primary ? eg_store_last_lsn(r->store) : atomic_load(&r->primary_lsn);
  uint64_t last = eg_store_last_lsn(r->store);
  pthread_mutex_lock(&r->mu);
  size_t n = r->n_peers;
  out->replicas = alloc(arena, (n ? n : 1) * sizeof *out->replicas);
  Engram__V1__ReplicaStatus *rs = alloc(arena, (n ? n : 1) * sizeof *rs);
  Google__Protobuf__Timestamp *ts = alloc(arena, (n ? n : 1) * sizeof *ts);
  if (!out->replicas || !rs || !ts) {
    pthread_mutex_unlock(&r->mu);
    return EG_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    const struct eg_peer *p = &r->peers[i];
    engram__v1__replica_status__init(&rs[i]);
    google__protobuf__timestamp__init(&ts[i]);
    rs[i].replica_id = alloc(arena, strlen(p->id) + 1);
    if (!rs[i].replica_id) break;
    strcpy(rs[i].replica_id, p->id);
    rs[i].applied_lsn = p->applied;
    rs[i].lag_records = last > p->applied ? last - p->applied : 0;
    rs[i].connected = p->connected;
    ts[i].seconds = p->ack_us / 1000000;
    ts[i].nanos = (int32_t)(p->ack_us % 1000000) * 1000;
    rs[i].last_ack_time = &ts[i];
    out->replicas[out->n_replicas++] = &rs[i];
  }
  pthread_mutex_unlock(&r->mu);
  return EG_OK;
}

size_t eg_repl_peer_lags(eg_repl *r, eg_repl_peer_lag *out) {
  if (!eg_repl_is_primary(r)) return 0;
  uint64_t last = eg_store_last_lsn(r->store);
  int64_t now = eg_rpc_now_us();
  pthread_mutex_lock(&r->mu);
  size_t n = r->n_peers;
  for (size_t i = 0; i < n; i++) {
    const struct eg_peer *p = &r->peers[i];
    snprintf(out[i].id, sizeof out[i].id, "%s", p->id);
    out[i].lag_records = last > p->applied ? last - p->applied : 0;
    out[i].lag_us = out[i].lag_records && now > p->caught_up_us ? now - p->caught_up_us : 0;
    out[i].connected = p->connected;
  }
  pthread_mutex_unlock(&r->mu);
  return n;
}
