/* engram.v1.AdminService: status, promotion, data checksums and backups
 * of this node, and the tenant's retention policy, for the admin role. */
#include <stdio.h>
#include <string.h>

#include "coord/coord.h"
#include "engram/v1/admin.pb-c.h"
#include "replica/replica.h"
#include "server/archiver.h"
#include "server/backup_chunk.h"
#include "server/convert.h"
#include "server/reindex.h"
#include "server/service.h"
#include "server/sweeper.h"

static void *eg_admin_alloc(void *arena, size_t n) { return eg_arena_alloc(arena, n); }

static char *eg_admin_strdup(eg_req *r, const char *s) {
  char *d = eg_arena_alloc(r->arena, strlen(s) + 1);
  if (d) strcpy(d, s);
  return d;
}

/* GetStatus's coordinator fields (none without --coordinator). The URL is
 * shown as parsed: endpoints and prefix only, so that nothing else a
 * future option adds to it (credentials) is shown. */
static eg_err eg_status_coord(eg_req *r, Engram__V1__GetStatusResponse *out) {
  eg_coord *c = atomic_load(&r->srv->coord);
  if (!c) return EG_OK;
  eg_coord_url u;
  char url[EG_ETCD_MAX_ENDPOINTS * 257 + 300] = "etcd://";
  if (eg_coord_url_parse(r->srv->cfg->coordinator, &u, NULL, 0) == EG_OK) {
    for (size_t i = 0; i < u.n_endpoints; i++)
      snprintf(url + strlen(url), sizeof url - strlen(url), "%s%s", i ? "," : "", u.endpoints[i]);
    snprintf(url + strlen(url), sizeof url - strlen(url), "%s", u.prefix);
  }
  eg_coord_status st;
  eg_coord_status_get(c, &st);
  out->fenced = eg_repl_is_primary(r->srv->repl) && eg_repl_fenced(r->srv->repl);
  if (!(out->coordinator = eg_admin_strdup(r, url)) ||
      !(out->node_id = eg_admin_strdup(r, r->srv->node_id)) ||
      !(out->leader_id = eg_admin_strdup(r, st.leader_id)) ||
      !(out->leader_address = eg_admin_strdup(r, st.leader_address)) ||
      !(out->failover_problem = eg_admin_strdup(r, st.problem)))
    return EG_ENOMEM;
  return EG_OK;
}

static eg_err eg_get_status(eg_req *r, const ProtobufCMessage *msg) {
  Engram__V1__GetStatusResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__GetStatusResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__get_status_response__init(out);
  out->epoch = eg_store_epoch(r->srv->store);
  out->last_lsn = eg_store_last_lsn(r->srv->store);
  uint64_t first = 0;
  eg_err e = eg_store_wal_first(r->rtxn, &first, NULL);
  if (e != EG_OK && e != EG_ENOTFOUND) return e;
  out->wal_first_lsn = first;
  if ((e = eg_repl_status(r->srv->repl, out, eg_admin_alloc, r->arena))) return e;
  if ((e = eg_status_coord(r, out)) || (e = eg_index_status(r, r->rtxn, out))) return e;
  char why[256];
  out->serving = eg_srv_serving(r->srv, 0, why, sizeof why);
  if (!(out->not_serving_reason = eg_admin_strdup(r, why))) return EG_ENOMEM;
  eg_sweeper_stats st;
  eg_sweeper_get_stats(r->srv->sweeper, &st);
  if (st.last_sweep_us && !(out->last_sweep_time = eg_timestamp(r, st.last_sweep_us)))
    return EG_ENOMEM;
  if (r->srv->archiver) {
    eg_archiver_stats as;
    eg_archiver_get_stats(r->srv->archiver, &as);
    out->archived_lsn = as.archived_lsn;
    if (!(out->archive_problem = eg_arena_alloc(r->arena, strlen(as.problem) + 1))) return EG_ENOMEM;
    strcpy(out->archive_problem, as.problem);
  }
  r->resp = &out->base;
  return EG_OK;
}

static eg_err eg_promote(eg_req *r, const ProtobufCMessage *msg) {
  Engram__V1__PromoteResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__PromoteResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__promote_response__init(out);
  eg_err e = eg_repl_promote(r->srv->repl, &out->epoch, &out->lsn, r->msg, sizeof r->msg);
  if (e) return e;
  r->resp = &out->base;
  return EG_OK;
}

static void eg_checksum_kv(void *arg, const char *db, const void *k, size_t klen, const void *v,
                           size_t vlen) {
  eg_sha256 *h = arg;
  uint8_t lens[8];
  /* Lengths keep ("ab","c") and ("a","bc") apart. */
  for (int i = 0; i < 4; i++) lens[i] = (uint8_t)(klen >> (24 - 8 * i));
  for (int i = 0; i < 4; i++) lens[4 + i] = (uint8_t)(vlen >> (24 - 8 * i));
  eg_sha256_update(h, db, strlen(db) + 1);
  eg_sha256_update(h, lens, sizeof lens);
  eg_sha256_update(h, k, klen);
  eg_sha256_update(h, v, vlen);
}

static eg_err eg_checksum(eg_req *r, const ProtobufCMessage *msg) {
  Engram__V1__ChecksumResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__ChecksumResponse);
  char *hex = eg_arena_alloc(r->arena, 65);
  uint8_t d[32];
  eg_sha256 h;
  if (!out || !hex) return EG_ENOMEM;
  engram__v1__checksum_response__init(out);
  eg_sha256_init(&h);
  eg_err e = eg_store_txn_lsn(r->rtxn, &out->lsn);
  if (!e) e = eg_store_visit_data(r->rtxn, eg_checksum_kv, &h);
  if (e) return e;
  eg_sha256_final(&h, d);
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
  out->sha256 = hex;
  r->resp = &out->base;
  return EG_OK;
}

/* ==== retention policy ======================================================== */

/* The policy in its wire form: effective values, which are defaults. */
static Engram__V1__RetentionPolicy *eg_policy_out(eg_req *r, const eg_retention *eff) {
  Engram__V1__RetentionPolicy *p = EG_ARENA_NEW(r->arena, Engram__V1__RetentionPolicy);
  Engram__V1__RetentionValue *v = eg_arena_alloc(r->arena, EG_TIERS * sizeof *v);
  if (!p || !v) return NULL;
  engram__v1__retention_policy__init(p);
  for (int i = 0; i < EG_TIERS; i++) {
    engram__v1__retention_value__init(&v[i]);
    v[i].seconds = eff->seconds[i];
    v[i].is_default = eff->is_default[i];
  }
  p->expired_session_retention = &v[EG_TIER_SESSION];
  p->raw_message_retention = &v[EG_TIER_MESSAGES];
  p->memory_tombstone_retention = &v[EG_TIER_TOMBSTONE];
  return p;
}

static eg_err eg_get_retention(eg_req *r, const ProtobufCMessage *msg) {
  Engram__V1__GetRetentionPolicyResponse *out =
      EG_ARENA_NEW(r->arena, Engram__V1__GetRetentionPolicyResponse);
  eg_retention eff;
  if (!out) return EG_ENOMEM;
  engram__v1__get_retention_policy_response__init(out);
  eg_err e = eg_retention_effective(r->rtxn, r->srv->cfg, r->tenant, &eff);
  if (e) return e;
  if (!(out->policy = eg_policy_out(r, &eff))) return EG_ENOMEM;
  r->resp = &out->base;
  return EG_OK;
}

/* What a Set changes, tier by tier: a tier absent from the request keeps
 * its stored value, is_default resets it, a value replaces it. The merge
 * happens in apply, on the stored record, so two admins setting different
 * tiers do not undo each other. */
enum { EG_TIER_KEEP = 0, EG_TIER_RESET, EG_TIER_SET };
typedef struct {
  int action[EG_TIERS];
  int64_t seconds[EG_TIERS];
} eg_retention_put;

static eg_err eg_set_retention_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__SetRetentionPolicyRequest *in = (const void *)msg;
  eg_retention_put *st = EG_ARENA_NEW(r->arena, eg_retention_put);
  if (!st) return EG_ENOMEM;
  if (!in->policy) {
    snprintf(r->msg, sizeof r->msg, "policy: required (name the tiers to change; is_default resets one)");
    return EG_EINVAL;
  }
  const Engram__V1__RetentionValue *v[EG_TIERS] = {in->policy->expired_session_retention,
                                                  in->policy->raw_message_retention,
                                                  in->policy->memory_tombstone_retention};
  static const char *const names[EG_TIERS] = {"policy.expired_session_retention",
                                              "policy.raw_message_retention",
                                              "policy.memory_tombstone_retention"};
  for (int i = 0; i < EG_TIERS; i++) {
    if (!v[i]) continue; /* EG_TIER_KEEP */
    if (v[i]->is_default) {
      st->action[i] = EG_TIER_RESET;
      continue;
    }
    if (v[i]->seconds < 0 || v[i]->seconds > EG_RETENTION_MAX_S) {
      snprintf(r->msg, sizeof r->msg, "%s.seconds: %lld is out of range [0, %lld] (0 keeps forever)",
               names[i], (long long)v[i]->seconds, (long long)EG_RETENTION_MAX_S);
      return EG_EINVAL;
    }
    st->action[i] = EG_TIER_SET;
    st->seconds[i] = v[i]->seconds;
  }
  r->state = st;
  return EG_OK;
}

static eg_err eg_set_retention_apply(eg_req *r, eg_txn *t) {
  const eg_retention_put *st = r->state;
  Engram__V1__SetRetentionPolicyResponse *out =
      EG_ARENA_NEW(r->arena, Engram__V1__SetRetentionPolicyResponse);
  eg_retention eff;
  if (!out) return EG_ENOMEM;
  engram__v1__set_retention_policy_response__init(out);
  eg_retention_rec *stored = NULL, rec;
  Engram__Storage__V1__RetentionSeconds v[EG_TIERS];
  eg_err e = eg_store_retention_get(t, r->tenant, &stored);
  if (e == EG_ENOTFOUND) e = EG_OK;
  if (e) return e;
  engram__storage__v1__retention_policy_record__init(&rec);
  Engram__Storage__V1__RetentionSeconds **dst[EG_TIERS] = {
      &rec.expired_session_retention_s, &rec.raw_message_retention_s,
      &rec.memory_tombstone_retention_s};
  Engram__Storage__V1__RetentionSeconds *const old[EG_TIERS] = {
      stored ? stored->expired_session_retention_s : NULL,
      stored ? stored->raw_message_retention_s : NULL,
      stored ? stored->memory_tombstone_retention_s : NULL};
  for (int i = 0; i < EG_TIERS; i++) {
    engram__storage__v1__retention_seconds__init(&v[i]);
    if (st->action[i] == EG_TIER_RESET || (st->action[i] == EG_TIER_KEEP && !old[i])) continue;
    v[i].seconds = st->action[i] == EG_TIER_SET ? st->seconds[i] : old[i]->seconds;
    *dst[i] = &v[i];
  }
  e = eg_store_retention_put(t, r->tenant, &rec);
  if (stored) protobuf_c_message_free_unpacked(&stored->base, NULL);
  if (!e) e = eg_retention_effective(t, r->srv->cfg, r->tenant, &eff);
  if (e) return e;
  if (!(out->policy = eg_policy_out(r, &eff))) return EG_ENOMEM;
  r->resp = &out->base;
  return EG_OK;
}

/* The ids of the keys the store's data is sealed under, from its recorded
 * key fingerprint (none recorded: none). */
static eg_err eg_backup_key_ids(eg_store *s, eg_backup_msg *b, char *msg, size_t msglen) {
  uint8_t fp[EG_KEYRING_FINGERPRINT_MAX];
  size_t len = 0;
  eg_err e = eg_store_meta_get(s, EG_META_KEY_FINGERPRINT, fp, sizeof fp, &len);
  if (e == EG_ENOTFOUND) return EG_OK;
  if (!e) e = eg_keyring_fingerprint_ids(fp, len, b->key_ids, EG_KEYRING_KEYS_MAX, &b->n_key_ids);
  if (e) snprintf(msg, msglen, "cannot read the store's key fingerprint: %s", eg_err_msg(e));
  return e;
}

static int eg_backups_max(const eg_srv *srv) { return EG_BACKUPS_MAX; }

/* Apart from the replicas' snapshot places (server/config.h). */
static eg_stream_places eg_backup_places = {.max = eg_backups_max, .what = "backups running"};

/* A consistent copy of the store, streamed (eg_repl_serve_copy): each chunk
 * taken within --call-timeout-ms, the whole stream within --backup-max-ms,
 * as it holds its place and a whole copy of the store in the data dir. The
 * copy cannot be stopped midway: a backup whose copy alone outlasted the
 * bound ends there, before it sends anything. */
static eg_err eg_admin_backup(const eg_srv *srv, const char *tenant, struct grpc_call *call,
                        struct grpc_completion_queue *cq, char *msg, size_t msglen) {
  eg_backup_msg b;
  eg_stream_out out;
  /* Stamped before the copy's read txn starts: the copy holds every write
   * acknowledged before this time (and possibly some after). */
  eg_err e = eg_backup_stream_begin(srv, call, cq, &engram__v1__backup_request__descriptor, &out,
                                    &b, msg, msglen);
  if (e || (e = eg_backup_key_ids(srv->store, &b, msg, msglen))) return e;
  /* The copy and its digest compete with the calls a backup must not slow
   * down: they run under SCHED_IDLE (on a thread of their own, which holds
   * nothing the serving threads wait on for long); this thread, which
   * sends and later takes the transport's locks, keeps its priority. */
  return eg_repl_serve_copy(srv->repl, 1, eg_backup_chunk, &b, eg_stream_send, eg_stream_check,
                            &out, msg, msglen);
}

#define EG_ADMIN_PATH(name) "/engram.v1.AdminService/" #name

const eg_method eg_admin_methods[] = {
    {.path = EG_ADMIN_PATH(GetStatus),
     .in = &engram__v1__get_status_request__descriptor,
     .role = EG_ROLE_ADMIN,
     .read = eg_get_status},
    /* A read in the table's terms: it runs on the worker, which hands the
     * epoch record to the writer and waits for its commit. */
    {.path = EG_ADMIN_PATH(Promote),
     .in = &engram__v1__promote_request__descriptor,
     .role = EG_ROLE_ADMIN,
     .read = eg_promote,
     .no_store = 1},
    {.path = EG_ADMIN_PATH(Checksum),
     .in = &engram__v1__checksum_request__descriptor,
     .role = EG_ROLE_ADMIN,
     .read = eg_checksum},
    {.path = EG_ADMIN_PATH(GetRetentionPolicy),
     .in = &engram__v1__get_retention_policy_request__descriptor,
     .role = EG_ROLE_ADMIN,
     .read = eg_get_retention},
    {.path = EG_ADMIN_PATH(SetRetentionPolicy),
     .in = &engram__v1__set_retention_policy_request__descriptor,
     .role = EG_ROLE_ADMIN,
     .prepare = eg_set_retention_prepare,
     .apply = eg_set_retention_apply},
    {.path = EG_ADMIN_PATH(Backup),
     .role = EG_ROLE_ADMIN,
     .stream = eg_admin_backup,
     .places = &eg_backup_places},
    {.path = NULL},
};
