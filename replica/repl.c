/* The module's life cycle, roles, promotion and write forwarding. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replica/internal.h"

static char *eg_strdup_or_empty(const char *s) { return strdup(s ? s : ""); }

eg_err eg_repl_new(const eg_repl_config *cfg, eg_store *store, eg_repl **out) {
  eg_repl *r = calloc(1, sizeof *r);
  if (!r) return EG_ENOMEM;
  r->store = store;
  r->primary = eg_strdup_or_empty(cfg->primary);
  r->token = eg_strdup_or_empty(cfg->token);
  r->replica_id = eg_strdup_or_empty(cfg->replica_id);
  r->authz = malloc(strlen(r->token ? r->token : "") + 8);
  if (!r->primary || !r->token || !r->replica_id || !r->authz) {
    eg_repl_free(r);
    return EG_ENOMEM;
  }
  if (r->token[0])
    sprintf(r->authz, "Bearer %s", r->token);
  else
    r->authz[0] = '\0';
  r->sync_replicas = cfg->sync_replicas;
  r->sync_timeout_ms = cfg->sync_timeout_ms;
  r->retain_records = cfg->retain_records;
  r->retain_s = cfg->retain_s;
  r->retain_cap = cfg->retain_cap;
  atomic_store(&r->is_primary, !cfg->replica);
  pthread_mutex_init(&r->mu, NULL);
  pthread_mutex_init(&r->life_mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  if (cfg->replica && !(r->upstream = eg_client_new(r->primary, r->token[0] ? r->token : NULL))) {
    eg_repl_free(r);
    return EG_EINVAL;
  }
  *out = r;
  return EG_OK;
}

static eg_err eg_repl_start_follower(eg_repl *r);

eg_err eg_repl_start(eg_repl *r) {
  if (pthread_create(&r->syncer, NULL, eg_repl_syncer_main, r) != 0) return EG_ENOMEM;
  r->syncer_started = 1;
  return eg_repl_is_primary(r) ? EG_OK : eg_repl_start_follower(r);
}

/* Starts the follower unless it runs or the module stops. */
static eg_err eg_repl_start_follower(eg_repl *r) {
  eg_err e = EG_OK;
  pthread_mutex_lock(&r->life_mu);
  if (!r->follower_started && !atomic_load(&r->stopping)) {
    if (pthread_create(&r->follower, NULL, eg_repl_follower_main, r) == 0)
      r->follower_started = 1;
    else
      e = EG_ENOMEM;
  }
  pthread_mutex_unlock(&r->life_mu);
  return e;
}

/* Stops the follower (if running) and waits for it. The follower checks
 * `stopping` and `promoting` between steps; the cancel ends a call it is
 * blocked in. */
static void eg_repl_stop_follower(eg_repl *r) {
  pthread_mutex_lock(&r->life_mu);
  if (r->follower_started) {
    pthread_mutex_lock(&r->mu);
    if (r->follow_call) grpc_call_cancel(r->follow_call, NULL);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->follower, NULL);
    r->follower_started = 0;
  }
  pthread_mutex_unlock(&r->life_mu);
}

void eg_repl_stop(eg_repl *r) {
  if (!r) return;
  /* Under mu, so a sync hold either sees it or is queued before the
   * syncer's last look. */
  pthread_mutex_lock(&r->mu);
  atomic_store(&r->stopping, 1);
  pthread_mutex_unlock(&r->mu);
  eg_store_wake_waiters(r->store); /* streams waiting for commits */
  pthread_mutex_lock(&r->mu);
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  eg_repl_stop_follower(r);
  if (r->syncer_started) pthread_join(r->syncer, NULL);
  r->syncer_started = 0;
}

void eg_repl_free(eg_repl *r) {
  if (!r) return;
  eg_client_free(r->upstream);
  pthread_mutex_destroy(&r->mu);
  pthread_mutex_destroy(&r->life_mu);
  pthread_cond_destroy(&r->cv);
  free(r->primary);
  free(r->token);
  free(r->authz);
  free(r->replica_id);
  free(r);
}

int eg_repl_is_primary(const eg_repl *r) { return atomic_load(&r->is_primary); }
int eg_repl_restart_requested(const eg_repl *r) { return atomic_load(&r->restart); }

/* Commits a record that starts epoch `epoch`; grows the map when full. */
static eg_err eg_repl_commit_epoch(eg_repl *r, uint64_t epoch, uint64_t *lsn) {
  for (;;) {
    eg_txn *w;
    eg_err e = eg_store_write_begin(r->store, &w);
    if (e) return e;
    if ((e = eg_store_set_epoch(w, epoch))) {
      eg_store_write_abort(w);
      return e;
    }
    if ((e = eg_store_write_commit(w, lsn)) != EG_EMAPFULL) return e;
    if ((e = eg_store_grow(r->store))) return e;
  }
}

eg_err eg_repl_promote(eg_repl *r, uint64_t *epoch, uint64_t *lsn) {
  if (atomic_load(&r->stopping)) return EG_EUNAVAIL;
  if (eg_repl_is_primary(r) || atomic_exchange(&r->promoting, 1)) return EG_EPRECOND;
  /* Stop applying first. Until the new epoch's record commits, writes are
   * still forwarded (to the old primary), so no local write can land in
   * the old epoch's history. */
  eg_repl_stop_follower(r);
  uint64_t next = eg_store_epoch(r->store) + 1;
  eg_err e = eg_repl_commit_epoch(r, next, lsn);
  if (e) {
    /* Still a replica: follow again (unless stopping), and let a later
     * Promote try anew. */
    fprintf(stderr, "engramd: promotion failed: %s; following again\n", eg_err_msg(e));
    atomic_store(&r->promoting, 0);
    eg_repl_start_follower(r);
    return e == EG_EPRECOND ? EG_EIO : e;
  }
  atomic_store(&r->is_primary, 1);
  *epoch = next;
  fprintf(stderr, "engramd: promoted to primary: epoch %llu from lsn %llu\n",
          (unsigned long long)next, (unsigned long long)*lsn);
  return EG_OK;
}

grpc_channel *eg_repl_upstream(eg_repl *r) {
  return r->upstream ? eg_client_channel(r->upstream) : NULL;
}
