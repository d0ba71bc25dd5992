/* The module's life cycle, roles, promotion, re-pointing, fencing and
 * write forwarding. */
#include <errno.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <grpc/grpc_security.h>

#include "common/clock.h"
#include "common/log.h"
#include "grpc_health/v1/health.pb-c.h"
#include "replica/internal.h"

/* How long Promote waits for the primary it follows to answer a probe. */
#define EG_PROMOTE_PROBE_MS 1000

static char *eg_strdup_or_empty(const char *s) { return strdup(s ? s : ""); }

/* Makes addr the primary followed: its entry of ups (added, with a
 * channel of its own, if new) becomes cur, and what was heard from the
 * one before is forgotten. The follower must not run. EG_ELIMIT past
 * EG_REPL_MAX_UPSTREAMS addresses; EG_EINVAL if no channel can be made
 * for addr (why in err: a TLS file that cannot be used); EG_ENOMEM. */
static eg_err eg_repl_upstream_pick(eg_repl *r, const char *addr, char *err, size_t errlen) {
  eg_err e = EG_OK;
  pthread_mutex_lock(&r->mu);
  size_t i = 0;
  while (i < r->n_ups && strcmp(r->ups[i].addr, addr) != 0) i++;
  if (i == r->n_ups) {
    struct eg_upstream_entry *u = &r->ups[i < EG_REPL_MAX_UPSTREAMS ? i : 0];
    if (i == EG_REPL_MAX_UPSTREAMS) {
      e = EG_ELIMIT;
    } else if (!(u->addr = strdup(addr))) {
      e = EG_ENOMEM;
    } else if (!(u->client = eg_client_new_tls(addr, r->token[0] ? r->token : NULL, r->tls, err,
                                               errlen))) {
      e = errno == ENOMEM ? EG_ENOMEM : EG_EINVAL;
      free(u->addr);
      u->addr = NULL;
    } else {
      r->n_ups++;
    }
  }
  if (!e) {
    atomic_store(&r->primary_lsn, 0);
    atomic_store(&r->connected, 0);
    atomic_store(&r->cur, (int)i); /* after the entry is complete */
  }
  pthread_mutex_unlock(&r->mu);
  return e;
}

const struct eg_upstream_entry *eg_repl_current(eg_repl *r) {
  int i = atomic_load(&r->cur);
  return i < 0 ? NULL : &r->ups[i];
}

int eg_repl_follow_done(eg_repl *r) {
  return atomic_load(&r->stopping) || atomic_load(&r->promoting) || atomic_load(&r->halt);
}

/* Copies cfg->tls into r (r->tls stays NULL without it). 0, or -1 when
 * memory runs out. */
static int eg_repl_copy_tls(eg_repl *r, const eg_client_tls *tls) {
  if (!tls) return 0;
  const char *in[4] = {tls->ca_file, tls->cert_file, tls->key_file, tls->server_name};
  for (int i = 0; i < 4; i++)
    if (in[i] && in[i][0] && !(r->tls_files[i] = strdup(in[i]))) return -1;
  r->tls_copy = (eg_client_tls){.ca_file = r->tls_files[0], .cert_file = r->tls_files[1],
                                .key_file = r->tls_files[2], .server_name = r->tls_files[3]};
  r->tls = &r->tls_copy;
  return 0;
}

eg_err eg_repl_new(const eg_repl_config *cfg, eg_store *store, eg_repl **out, char *err,
                   size_t errlen) {
  eg_repl *r = calloc(1, sizeof *r);
  if (!r) return EG_ENOMEM;
  r->store = store;
  r->keys = cfg->keys;
  r->key_store = cfg->key_store;
  atomic_store(&r->cur, -1);
  atomic_store(&r->caught_up_us, -1);
  pthread_mutex_init(&r->mu, NULL);
  pthread_mutex_init(&r->life_mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  r->token = eg_strdup_or_empty(cfg->token);
  r->replica_id = eg_strdup_or_empty(cfg->replica_id);
  /* Zeroed: eg_repl_free wipes it, also on the failures below. */
  r->authz = calloc(1, strlen(r->token ? r->token : "") + 8);
  if (!r->token || !r->replica_id || !r->authz || eg_repl_copy_tls(r, cfg->tls) != 0) {
    eg_repl_free(r);
    snprintf(err, errlen, "replication: out of memory");
    return EG_ENOMEM;
  }
  /* The files are read again for each primary followed: checked now, a
   * node with a coordinator (following nobody yet) fails at its start,
   * not at its first election. */
  grpc_channel_credentials *creds = r->tls ? eg_client_tls_credentials(r->tls, err, errlen) : NULL;
  if (r->tls && !creds) {
    eg_repl_free(r);
    return EG_EINVAL;
  }
  if (creds) grpc_channel_credentials_release(creds);
  if (r->token[0]) sprintf(r->authz, "Bearer %s", r->token);
  r->sync_replicas = cfg->sync_replicas;
  r->sync_timeout_ms = cfg->sync_timeout_ms;
  r->retain_records = cfg->retain_records;
  r->retain_s = cfg->retain_s;
  r->retain_cap = cfg->retain_cap;
  atomic_store(&r->is_primary, !cfg->replica);
  eg_err e = EG_OK;
  if (cfg->replica && cfg->primary && cfg->primary[0] &&
      (e = eg_repl_upstream_pick(r, cfg->primary, err, errlen)) != EG_OK) {
    eg_repl_free(r);
    return e;
  }
  *out = r;
  return EG_OK;
}

/* Starts the follower unless it runs, the module stops, or there is
 * nobody to follow. Called with life_mu held. */
static eg_err eg_repl_start_follower_locked(eg_repl *r) {
  eg_err e = EG_OK;
  if (!r->follower_started && !atomic_load(&r->stopping) && eg_repl_current(r)) {
    if (pthread_create(&r->follower, NULL, eg_repl_follower_main, r) == 0)
      r->follower_started = 1;
    else
      e = EG_ENOMEM;
  }
  return e;
}

static eg_err eg_repl_start_follower(eg_repl *r) {
  pthread_mutex_lock(&r->life_mu);
  eg_err e = eg_repl_start_follower_locked(r);
  pthread_mutex_unlock(&r->life_mu);
  return e;
}

/* Stops the follower (if running) and waits for it; called with life_mu
 * held. The follower checks eg_repl_follow_done between steps (halt makes
 * it end for a re-point too); the cancel ends a call it is blocked in. */
static void eg_repl_stop_follower_locked(eg_repl *r) {
  if (!r->follower_started) return;
  atomic_store(&r->halt, 1);
  pthread_mutex_lock(&r->mu);
  if (r->follow_call) grpc_call_cancel(r->follow_call, NULL);
  pthread_mutex_unlock(&r->mu);
  pthread_join(r->follower, NULL);
  r->follower_started = 0;
  atomic_store(&r->halt, 0);
}

static void eg_repl_stop_follower(eg_repl *r) {
  pthread_mutex_lock(&r->life_mu);
  eg_repl_stop_follower_locked(r);
  pthread_mutex_unlock(&r->life_mu);
}

eg_err eg_repl_start(eg_repl *r, eg_repl_write_fn write, void *writer) {
  r->write = write;
  r->writer = writer;
  if (pthread_create(&r->syncer, NULL, eg_repl_syncer_main, r) != 0) return EG_ENOMEM;
  r->syncer_started = 1;
  return eg_repl_is_primary(r) ? EG_OK : eg_repl_start_follower(r);
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
  for (size_t i = 0; i < r->n_ups; i++) {
    eg_client_free(r->ups[i].client);
    free(r->ups[i].addr);
  }
  pthread_mutex_destroy(&r->mu);
  pthread_mutex_destroy(&r->life_mu);
  pthread_cond_destroy(&r->cv);
  /* The replica token is a credential: no copy of it outlives the module. */
  if (r->token) sodium_memzero(r->token, strlen(r->token));
  if (r->authz) sodium_memzero(r->authz, strlen(r->authz));
  free(r->token);
  free(r->authz);
  free(r->replica_id);
  for (int i = 0; i < 4; i++) free(r->tls_files[i]);
  free(r);
}

int eg_repl_is_primary(const eg_repl *r) { return atomic_load(&r->is_primary); }
int eg_repl_restart_requested(const eg_repl *r) { return atomic_load(&r->restart); }

eg_err eg_repl_claim_promotion(eg_repl *r, const char **why) {
  eg_err e = EG_OK;
  pthread_mutex_lock(&r->mu);
  if (atomic_load(&r->stopping))
    e = EG_EUNAVAIL, *why = "this node is stopping";
  else if (atomic_load(&r->restart))
    e = EG_EUNAVAIL, *why = "this node is restarting (to install a snapshot of the primary, or "
                            "to rejoin as a replica)";
  else if (eg_repl_is_primary(r) || atomic_load(&r->promoting))
    e = EG_EPRECOND, *why = "this node is already the primary (or being promoted)";
  else
    atomic_store(&r->promoting, 1);
  pthread_mutex_unlock(&r->mu);
  return e;
}

/* Under mu: claims the restart unless the node stops or already restarts,
 * or, for a snapshot (!deposed), is being promoted or re-pointed (its own
 * history, or another primary's, wins over the copy). */
static int eg_repl_claim_restart_as(eg_repl *r, int deposed) {
  pthread_mutex_lock(&r->mu);
  int ok = !atomic_load(&r->stopping) && !atomic_load(&r->restart) &&
           (deposed || (!atomic_load(&r->promoting) && !atomic_load(&r->halt)));
  if (ok) atomic_store(&r->restart, 1);
  pthread_mutex_unlock(&r->mu);
  return ok;
}

int eg_repl_claim_restart(eg_repl *r) { return eg_repl_claim_restart_as(r, 0); }

void eg_repl_request_restart(eg_repl *r, const char *why) {
  if (!eg_repl_claim_restart_as(r, 1)) return;
  /* main sees the flag after the stop and executes itself anew. */
  eg_log(EG_LOG_INFO, "restarting: %s", why);
  kill(getpid(), EG_REPL_RESTART_SIGNAL);
}

/* 1 if primary (the one this node follows) answers a health check within
 * EG_PROMOTE_PROBE_MS, 0 if not, -1 with why in err if no channel can be
 * made (the TLS files changed since the start and cannot be used). Any
 * answer counts (even an error): only a node that cannot be reached is
 * taken for gone. Asked afresh rather than read from
 * the stream's state, which lags a primary that just died, and on a channel
 * of its own (with its own subchannel): the follower's channel may be in
 * reconnect backoff, failing at once though the primary is back.
 * Wait-for-ready: "gone" means no answer within the bound. */
static int eg_repl_primary_alive(const eg_repl *r, const char *primary, char *err,
                                 size_t errlen) {
  grpc_arg arg = {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
                  .value.integer = 1};
  grpc_channel *ch = eg_client_channel_create(primary, r->tls, &arg, 1, err, errlen);
  if (!ch) return -1;
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_call *call = grpc_channel_create_call(
      ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
      grpc_slice_from_static_string("/grpc.health.v1.Health/Check"), NULL,
      gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                   gpr_time_from_millis(EG_PROMOTE_PROBE_MS, GPR_TIMESPAN)),
      NULL);
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  grpc_byte_buffer *send = eg_client_pack(&req.base), *recv = NULL;
  grpc_metadata_array initial, trailing;
  grpc_metadata_array_init(&initial);
  grpc_metadata_array_init(&trailing);
  grpc_status_code code = GRPC_STATUS_UNAVAILABLE;
  grpc_slice details = grpc_empty_slice();
  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY |
                 GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = send;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &recv;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
  ops[5].data.recv_status_on_client.status = &code;
  ops[5].data.recv_status_on_client.status_details = &details;
  /* The deadline ends the batch: no wait of our own. */
  if (!eg_rpc_run(call, cq, ops, 6)) code = GRPC_STATUS_UNAVAILABLE;
  grpc_byte_buffer_destroy(send);
  if (recv) grpc_byte_buffer_destroy(recv);
  grpc_metadata_array_destroy(&initial);
  grpc_metadata_array_destroy(&trailing);
  grpc_slice_unref(details);
  grpc_call_unref(call);
  eg_rpc_cq_destroy(cq);
  grpc_channel_destroy(ch);
  return code != GRPC_STATUS_UNAVAILABLE && code != GRPC_STATUS_DEADLINE_EXCEEDED;
}

/* The epoch record's body: runs on the writer thread, alone in its txn. */
static eg_err eg_repl_set_epoch(void *arg, eg_txn *t) {
  return eg_store_set_epoch(t, *(const uint64_t *)arg);
}

/* Promotion once decided (by Promote's probe, or by the coordinator):
 * claims it, stops applying, and writes the record that starts epoch (0:
 * the store's epoch + 1; else it must be above the store's, checked once
 * the follower stopped, as applying moves the store's epoch). */
static eg_err eg_repl_take_over(eg_repl *r, uint64_t epoch, uint64_t *out_epoch, uint64_t *lsn,
                                char *msg, size_t msglen) {
  const char *why = NULL;
  eg_err e = eg_repl_claim_promotion(r, &why);
  if (e) {
    snprintf(msg, msglen, "%s", why);
    return e;
  }
  /* Stop applying first. Until the new epoch's record commits, writes are
   * still forwarded (to the old primary), so no local write can land in
   * the old epoch's history. */
  eg_repl_stop_follower(r);
  uint64_t now = eg_store_epoch(r->store), next = epoch ? epoch : now + 1;
  if (next <= now) {
    snprintf(msg, msglen, "epoch %llu is not above this node's epoch %llu",
             (unsigned long long)next, (unsigned long long)now);
    e = EG_EPRECOND;
  } else if ((e = r->write(r->writer, eg_repl_set_epoch, &next, lsn)) != EG_OK) {
    eg_log(EG_LOG_ERROR, "promotion failed: %s; following again", eg_err_msg(e));
    snprintf(msg, msglen, "promotion failed: %s", eg_err_msg(e));
    e = e == EG_EPRECOND || e == EG_EINVAL ? EG_EIO : e;
  }
  if (e) {
    /* Still a replica: follow again (unless stopping), and let a later
     * promotion try anew. */
    atomic_store(&r->promoting, 0);
    eg_repl_start_follower(r);
    return e;
  }
  atomic_store(&r->is_primary, 1);
  atomic_store(&r->cur, -1); /* follows nobody: eg_repl_upstream says NULL */
  *out_epoch = next;
  eg_log(EG_LOG_INFO, "promoted to primary: epoch %llu from lsn %llu",
         (unsigned long long)next, (unsigned long long)*lsn);
  return EG_OK;
}

eg_err eg_repl_promote(eg_repl *r, uint64_t *epoch, uint64_t *lsn, char *msg, size_t msglen) {
  if (eg_repl_coordinated(r)) {
    snprintf(msg, msglen, "this node runs with --coordinator: etcd elects the primary; Promote "
                          "is refused (stop the primary and the coordinator elects another)");
    return EG_EPRECOND;
  }
  /* Two primaries of one epoch would each write their own records under
   * the same LSNs. Without a coordinator the one node this replica knows
   * of at its epoch is its primary: refuse while that one is alive. The
   * probe runs before the claim, so a refusal leaves the follower alone. */
  const struct eg_upstream_entry *u = eg_repl_current(r);
  char why[256] = "";
  int alive = !eg_repl_is_primary(r) && !atomic_load(&r->stopping) && u
                  ? eg_repl_primary_alive(r, u->addr, why, sizeof why)
                  : 0;
  if (alive < 0) {
    snprintf(msg, msglen, "cannot probe the primary %s (%s): not promoting while it may be alive",
             u->addr, why);
    return EG_EPRECOND;
  }
  if (alive) {
    snprintf(msg, msglen,
             "the primary %s still answers; stop it before promoting this node, so that only "
             "one node holds epoch %llu",
             u->addr, (unsigned long long)eg_store_epoch(r->store) + 1);
    return EG_EPRECOND;
  }
  return eg_repl_take_over(r, 0, epoch, lsn, msg, msglen);
}

eg_err eg_repl_promote_at(eg_repl *r, uint64_t epoch, uint64_t *lsn, char *msg, size_t msglen) {
  uint64_t got;
  if (!epoch) {
    snprintf(msg, msglen, "epoch 0 is not an epoch to promote at");
    return EG_EPRECOND;
  }
  return eg_repl_take_over(r, epoch, &got, lsn, msg, msglen);
}

eg_err eg_repl_follow(eg_repl *r, const char *primary) {
  eg_err e = EG_OK;
  /* life_mu: a Promote's or another follow's stop and start of the
   * follower wait for this one. */
  pthread_mutex_lock(&r->life_mu);
  pthread_mutex_lock(&r->mu);
  if (atomic_load(&r->stopping) || atomic_load(&r->restart))
    e = EG_EUNAVAIL;
  else if (eg_repl_is_primary(r) || atomic_load(&r->promoting))
    e = EG_EPRECOND;
  pthread_mutex_unlock(&r->mu);
  const struct eg_upstream_entry *u = eg_repl_current(r);
  eg_err se = EG_OK;
  if (!e && (!primary || !primary[0])) {
    /* Nobody leads: stop applying (and acking) the old primary's log, so
     * that the state this node publishes for the election is final. */
    if (u) {
      eg_repl_stop_follower_locked(r);
      pthread_mutex_lock(&r->mu);
      atomic_store(&r->connected, 0);
      atomic_store(&r->cur, -1);
      pthread_mutex_unlock(&r->mu);
      eg_log(EG_LOG_INFO, "replica: following nobody (no primary) from lsn %llu",
             (unsigned long long)eg_store_last_lsn(r->store));
    }
  } else if (!e) {
    if (!u || strcmp(u->addr, primary) != 0) {
      eg_repl_stop_follower_locked(r);
      char why[256] = "";
      e = eg_repl_upstream_pick(r, primary, why, sizeof why);
      if (e)
        eg_log(EG_LOG_WARN, "replica: cannot follow %s: %s%s%s", primary, eg_err_msg(e),
               e == EG_ELIMIT ? " (more primaries than EG_REPL_MAX_UPSTREAMS in this process's "
                                 "life: restart it)" : why[0] ? ": " : "", why);
      else
        eg_log(EG_LOG_INFO, "replica: following %s", primary);
    }
    /* Also after a failed pick: the follower goes on with the one before.
     * Unless a snapshot it fetched before the halt claimed a restart: that
     * one goes on. */
    if (atomic_load(&r->restart))
      e = EG_EUNAVAIL;
    else
      se = eg_repl_start_follower_locked(r);
  }
  pthread_mutex_unlock(&r->life_mu);
  return e ? e : se;
}

void eg_repl_primary(eg_repl *r, char *buf, size_t n) {
  const struct eg_upstream_entry *u = eg_repl_current(r);
  snprintf(buf, n, "%s", u ? u->addr : "");
}

grpc_channel *eg_repl_upstream(eg_repl *r) {
  const struct eg_upstream_entry *u = eg_repl_current(r);
  return u ? eg_client_channel(u->client) : NULL;
}

void eg_repl_set_lease(eg_repl *r, int64_t until_us) {
  atomic_store(&r->lease_until_us, until_us);
  atomic_store(&r->coordinated, 1); /* after: never unfenced by a stale 0 */
}

int eg_repl_coordinated(const eg_repl *r) { return atomic_load(&r->coordinated); }

int eg_repl_fenced(const eg_repl *r) {
  return atomic_load(&r->coordinated) && eg_mono_us() >= atomic_load(&r->lease_until_us);
}

int64_t eg_repl_behind_ms(uint64_t applied, uint64_t primary_lsn, int connected,
                          int64_t caught_up_us, int64_t now_us) {
  if (connected && applied >= primary_lsn && caught_up_us >= 0) return 0;
  if (caught_up_us < 0) return -1;
  return now_us > caught_up_us ? (now_us - caught_up_us) / 1000 : 0;
}

void eg_repl_progress_get(eg_repl *r, eg_repl_progress *out) {
  memset(out, 0, sizeof *out);
  out->applied = eg_store_last_lsn(r->store);
  out->epoch = eg_store_epoch(r->store);
  out->primary_lsn = atomic_load(&r->primary_lsn);
  out->connected = atomic_load(&r->connected);
  out->behind_ms = eg_repl_behind_ms(out->applied, out->primary_lsn, out->connected,
                                     atomic_load(&r->caught_up_us), eg_mono_us());
  if (!out->applied) return;
  /* The log says which epoch wrote the last record; a record trimmed away
   * (or unreadable) leaves the store's epoch, the best this node knows. */
  uint8_t digest[EG_REPL_DIGEST_BYTES];
  eg_txn *t;
  out->last_epoch = out->epoch;
  if (eg_store_reader_new(r->store, &t) != EG_OK) return;
  uint64_t at = 0;
  if (eg_store_reader_begin(t) == EG_OK) {
    if (eg_repl_record_at(t, out->applied, &at, digest) == EG_OK) out->last_epoch = at;
    eg_store_reader_end(t);
  }
  eg_store_reader_free(t);
}

int eg_repl_serving_decide(const eg_serving_view *v, int64_t max_lag_ms, char *why, size_t whylen) {
  if (v->primary) {
    if (!v->fenced) return 1;
    snprintf(why, whylen, "this primary is fenced: it could not renew its coordinator lease in "
                          "time and acknowledges no write");
  } else if (!v->upstream) {
    snprintf(why, whylen, "this replica follows no primary yet (an election is in progress)");
  } else if (!v->connected) {
    snprintf(why, whylen, "this replica is not streaming from its primary %s", v->upstream);
  } else if (v->behind_ms < 0) {
    snprintf(why, whylen, "this replica has not caught up with its primary %s yet", v->upstream);
  } else if (v->behind_ms > max_lag_ms) {
    snprintf(why, whylen, "this replica is behind its primary %s for %lld ms (more than "
             "--max-serving-lag-ms %lld)", v->upstream, (long long)v->behind_ms,
             (long long)max_lag_ms);
  } else {
    return 1;
  }
  return 0;
}

int eg_repl_serving(eg_repl *r, int64_t max_lag_ms, char *why, size_t whylen) {
  const struct eg_upstream_entry *u = eg_repl_current(r);
  uint64_t applied = eg_store_last_lsn(r->store);
  eg_serving_view v = {.primary = eg_repl_is_primary(r),
                       .fenced = eg_repl_fenced(r),
                       .upstream = u ? u->addr : NULL,
                       .connected = atomic_load(&r->connected)};
  v.behind_ms = eg_repl_behind_ms(applied, atomic_load(&r->primary_lsn), v.connected,
                                  atomic_load(&r->caught_up_us), eg_mono_us());
  return eg_repl_serving_decide(&v, max_lag_ms, why, whylen);
}
