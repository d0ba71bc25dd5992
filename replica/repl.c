/* The module's life cycle, roles, promotion and write forwarding. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>

#include "grpc/health/v1/health.pb-c.h"
#include "replica/internal.h"

/* How long Promote waits for the primary it follows to answer a probe. */
#define EG_PROMOTE_PROBE_MS 1000

static char *eg_strdup_or_empty(const char *s) { return strdup(s ? s : ""); }

eg_err eg_repl_new(const eg_repl_config *cfg, eg_store *store, eg_repl **out) {
  eg_repl *r = calloc(1, sizeof *r);
  if (!r) return EG_ENOMEM;
  r->store = store;
  r->keys = cfg->keys;
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

eg_err eg_repl_start(eg_repl *r, eg_repl_write_fn write, void *writer) {
  r->write = write;
  r->writer = writer;
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
  /* The replica token is a credential: no copy of it outlives the module. */
  if (r->token) sodium_memzero(r->token, strlen(r->token));
  if (r->authz) sodium_memzero(r->authz, strlen(r->authz));
  free(r->token);
  free(r->authz);
  free(r->replica_id);
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
    e = EG_EUNAVAIL, *why = "this node is restarting to install a snapshot of the primary";
  else if (eg_repl_is_primary(r) || atomic_load(&r->promoting))
    e = EG_EPRECOND, *why = "this node is already the primary (or being promoted)";
  else
    atomic_store(&r->promoting, 1);
  pthread_mutex_unlock(&r->mu);
  return e;
}

int eg_repl_claim_restart(eg_repl *r) {
  pthread_mutex_lock(&r->mu);
  int ok = !atomic_load(&r->stopping) && !atomic_load(&r->promoting);
  if (ok) atomic_store(&r->restart, 1);
  pthread_mutex_unlock(&r->mu);
  return ok;
}

/* 1 if the primary this node follows answers a health check within
 * EG_PROMOTE_PROBE_MS. Any answer counts (even an error): only a node that
 * cannot be reached is taken for gone. Asked afresh rather than read from
 * the stream's state, which lags a primary that just died, and on a channel
 * of its own (with its own subchannel): the follower's channel may be in
 * reconnect backoff, failing at once though the primary is back.
 * Wait-for-ready: "gone" means no answer within the bound. */
static int eg_repl_primary_alive(eg_repl *r) {
  grpc_arg arg = {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
                  .value.integer = 1};
  grpc_channel_args args = {.num_args = 1, .args = &arg};
  grpc_channel_credentials *creds = grpc_insecure_credentials_create();
  grpc_channel *ch = grpc_channel_create(r->primary, creds, &args);
  grpc_channel_credentials_release(creds);
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

eg_err eg_repl_promote(eg_repl *r, uint64_t *epoch, uint64_t *lsn, char *msg, size_t msglen) {
  const char *why = NULL;
  /* Two primaries of one epoch would each write their own records under
   * the same LSNs. Without a coordinator the one node this replica knows
   * of at its epoch is its primary: refuse while that one is alive. The
   * probe runs before the claim, so a refusal leaves the follower alone. */
  if (!eg_repl_is_primary(r) && !atomic_load(&r->stopping) && eg_repl_primary_alive(r)) {
    snprintf(msg, msglen,
             "the primary %s still answers; stop it before promoting this node, so that only "
             "one node holds epoch %llu",
             r->primary, (unsigned long long)eg_store_epoch(r->store) + 1);
    return EG_EPRECOND;
  }
  eg_err e = eg_repl_claim_promotion(r, &why);
  if (e) {
    snprintf(msg, msglen, "%s", why);
    return e;
  }
  /* Stop applying first. Until the new epoch's record commits, writes are
   * still forwarded (to the old primary), so no local write can land in
   * the old epoch's history. */
  eg_repl_stop_follower(r);
  uint64_t next = eg_store_epoch(r->store) + 1;
  e = r->write(r->writer, eg_repl_set_epoch, &next, lsn);
  if (e) {
    /* Still a replica: follow again (unless stopping), and let a later
     * Promote try anew. */
    fprintf(stderr, "engramd: promotion failed: %s; following again\n", eg_err_msg(e));
    snprintf(msg, msglen, "promotion failed: %s", eg_err_msg(e));
    atomic_store(&r->promoting, 0);
    eg_repl_start_follower(r);
    return e == EG_EPRECOND || e == EG_EINVAL ? EG_EIO : e;
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
