/* coord: the coordinator thread (see coord.h). Every EG_COORD_TICK_MS it
 * keeps its lease, publishes its member key, reads the prefix, decides
 * (eg_coord_decide) and acts. Only this thread talks to etcd; other
 * threads read its status under mu. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "coord/coord.h"
#include "engram/coord/v1/coord.pb-c.h"
#include "common/bgthread.h"

/* How often a changed PREFIX/leader_lsn is written at most: it only bounds
 * the lag rule, so a write a tick is not worth it. */
#define EG_COORD_LSN_EVERY_US 500000
/* A member key is rewritten at least this often (even unchanged), so that
 * candidates see it written after the leader vanished. */
#define EG_COORD_MEMBER_EVERY_US 1000000

struct eg_coord {
  eg_bgthread bg;
  pthread_mutex_t st_mu; /* guards st; outlives bg (read until eg_coord_free) */
  eg_coord_url url;
  char id[128], address[256];
  int64_t ttl_s, max_lag;
  eg_repl *repl;
  eg_store *store;
  eg_etcd *etcd;
  char k_range[300], k_leader[300], k_epoch[300], k_lsn[300], k_self[450];
  size_t members_at; /* strlen(PREFIX "/members/") */
  /* the thread's own */
  int64_t lease, granted_s, refresh_us; /* refresh_us: when the next keepalive is due */
  int64_t lead_lease; /* the lease this node's leader key is bound to (0: it holds none) */
  uint8_t member[EG_ETCD_VALUE_MAX];    /* the member value last put */
  size_t member_len;
  int64_t member_put_us;
  int64_t gone_revision, gone_us; /* the leaderless period (0: a leader is there) */
  int said_problem;               /* in this leaderless period */
  int etcd_down_said;
  uint64_t lsn_put;
  int64_t lsn_put_us;
  char follow_failed[256]; /* the address a follow last failed for ("" : none) */
  eg_coord_member members[EG_ETCD_RANGE_MAX];
  eg_coord_status st; /* guarded by st_mu */
};

/* ---- the lease ------------------------------------------------------------ */

/* t_sent: taken before the call that (re)started the lease's countdown
 * (eg_coord_ack_until says how long writes may be acknowledged on it). */
static void eg_coord_lease_until(eg_coord *c, int64_t t_sent) {
  eg_repl_set_lease(c->repl, eg_coord_ack_until(eg_repl_is_primary(c->repl), c->lease,
                                                c->lead_lease, t_sent, c->granted_s));
  c->refresh_us = t_sent + c->granted_s * 1000000 / 3;
}

/* Keeps this node's lease: grants one when there is none, refreshes it
 * every third of its TTL. A lease etcd no longer knows is lost: a primary
 * fences itself now and stays fenced on the new lease (its next decision
 * demotes it). */
static eg_err eg_coord_keep_lease(eg_coord *c, char *err, size_t errlen) {
  int64_t t_sent = eg_mono_us(), ttl = 0;
  eg_err e;
  if (c->lease == 0) {
    if ((e = eg_etcd_lease_grant(c->etcd, c->ttl_s, &c->lease, &c->granted_s, err, errlen)))
      return e;
    c->member_len = 0; /* the member key went with the old lease */
    eg_coord_lease_until(c, t_sent);
    return EG_OK;
  }
  if (t_sent < c->refresh_us) return EG_OK;
  if ((e = eg_etcd_lease_keepalive(c->etcd, c->lease, &ttl, err, errlen))) return e;
  if (ttl > 0) {
    eg_coord_lease_until(c, t_sent);
    return EG_OK;
  }
  fprintf(stderr, "engramd: coordinator: lease %" PRId64 " expired in etcd%s\n", c->lease,
          eg_repl_is_primary(c->repl) ? ": fenced, no write is acknowledged here any more" : "");
  eg_repl_set_lease(c->repl, 0);
  c->lease = 0;
  return eg_coord_keep_lease(c, err, errlen);
}

/* ---- what this node publishes -------------------------------------------- */

static eg_err eg_coord_publish(eg_coord *c, const eg_repl_progress *p, int primary, int force,
                               char *err, size_t errlen) {
  Engram__Coord__V1__Member m = ENGRAM__COORD__V1__MEMBER__INIT;
  uint8_t buf[EG_ETCD_VALUE_MAX];
  m.id = c->id;
  m.address = c->address;
  m.role = primary ? "primary" : "replica";
  m.epoch = p->epoch;
  m.applied_lsn = p->applied;
  m.last_epoch = p->last_epoch;
  /* Whether it may lead, not whether it streams now: after the primary
   * dies no replica streams, and one of them must stand. */
  m.healthy = !eg_store_broken(c->store);
  size_t len = engram__coord__v1__member__pack(&m, buf); /* < 1 KiB: id, address bounded */
  int64_t now = eg_mono_us();
  if (!force && len == c->member_len && memcmp(buf, c->member, len) == 0 &&
      now - c->member_put_us < EG_COORD_MEMBER_EVERY_US)
    return EG_OK;
  /* updated_us is for operators: set only once it is decided to put. */
  m.updated_us = eg_now_us();
  uint8_t out[EG_ETCD_VALUE_MAX];
  size_t out_len = engram__coord__v1__member__pack(&m, out);
  eg_err e = eg_etcd_put(c->etcd, (const uint8_t *)c->k_self, strlen(c->k_self), out, out_len,
                         c->lease, err, errlen);
  if (e) return e;
  memcpy(c->member, buf, len);
  c->member_len = len;
  c->member_put_us = now;
  return EG_OK;
}

/* ---- reading the prefix -------------------------------------------------- */

static int eg_key_is(const eg_etcd_kv *kv, const char *key) {
  return kv->key_len == strlen(key) && memcmp(kv->key, key, kv->key_len) == 0;
}

/* A decimal value (0 when it is not one: etcd holds what engramd wrote). */
static uint64_t eg_decimal(const eg_etcd_kv *kv) {
  char s[32];
  if (kv->value_len == 0 || kv->value_len >= sizeof s) return 0;
  memcpy(s, kv->value, kv->value_len);
  s[kv->value_len] = '\0';
  return strtoull(s, NULL, 10);
}

/* Fills v (members in c->members) from one read of the prefix. A value
 * that does not decode is skipped. */
static void eg_coord_view_fill(eg_coord *c, const eg_etcd_kvs *kvs, eg_coord_view *v) {
  v->revision = kvs->revision;
  v->members = c->members;
  for (size_t i = 0; i < kvs->n; i++) {
    const eg_etcd_kv *kv = &kvs->kvs[i];
    if (eg_key_is(kv, c->k_leader)) {
      Engram__Coord__V1__Leader *l = engram__coord__v1__leader__unpack(NULL, kv->value_len, kv->value);
      if (!l) continue;
      v->has_leader = 1;
      snprintf(v->leader_id, sizeof v->leader_id, "%s", l->id);
      snprintf(v->leader_address, sizeof v->leader_address, "%s", l->address);
      v->leader_lease = kv->lease;
      engram__coord__v1__leader__free_unpacked(l, NULL);
    } else if (eg_key_is(kv, c->k_epoch)) {
      v->etcd_epoch = eg_decimal(kv);
      v->epoch_mod_revision = kv->mod_revision;
    } else if (eg_key_is(kv, c->k_lsn)) {
      v->leader_lsn = eg_decimal(kv);
    } else if (kv->key_len > c->members_at && memcmp(kv->key, c->k_self, c->members_at) == 0) {
      Engram__Coord__V1__Member *m = engram__coord__v1__member__unpack(NULL, kv->value_len, kv->value);
      if (!m) continue;
      eg_coord_member *o = &c->members[v->n_members++];
      snprintf(o->id, sizeof o->id, "%s", m->id);
      o->applied_lsn = m->applied_lsn;
      o->last_epoch = m->last_epoch;
      o->epoch = m->epoch;
      o->healthy = m->healthy;
      o->mod_revision = kv->mod_revision;
      engram__coord__v1__member__free_unpacked(m, NULL);
    }
  }
}

/* ---- acting ---------------------------------------------------------------- */

/* Takes the leader key at d->epoch, then promotes this node. */
static eg_err eg_coord_stand(eg_coord *c, const eg_coord_view *v, uint64_t epoch, char *err,
                             size_t errlen) {
  Engram__Coord__V1__Leader l = ENGRAM__COORD__V1__LEADER__INIT;
  uint8_t val[EG_ETCD_VALUE_MAX];
  char epoch_s[24], msg[256] = "";
  l.id = c->id;
  l.address = c->address;
  l.epoch = epoch;
  l.lease = c->lease;
  size_t len = engram__coord__v1__leader__pack(&l, val);
  snprintf(epoch_s, sizeof epoch_s, "%" PRIu64, epoch);
  eg_etcd_put_op puts[2] = {
      {(const uint8_t *)c->k_leader, val, strlen(c->k_leader), len, c->lease},
      {(const uint8_t *)c->k_epoch, (const uint8_t *)epoch_s, strlen(c->k_epoch), strlen(epoch_s), 0},
  };
  int won = 0;
  eg_err e = eg_etcd_txn_create(c->etcd, (const uint8_t *)c->k_leader, strlen(c->k_leader),
                                (const uint8_t *)c->k_epoch, strlen(c->k_epoch),
                                v->epoch_mod_revision, puts, 2, &won, err, errlen);
  if (e || !won) return e; /* another node was faster: the next read says who */
  c->lead_lease = c->lease;
  uint64_t lsn = 0;
  e = eg_repl_promote_at(c->repl, epoch, &lsn, msg, sizeof msg);
  if (e) {
    /* Holding the key without leading would stall the cluster for a TTL. */
    fprintf(stderr, "engramd: coordinator: won the election at epoch %" PRIu64 " but cannot "
                    "promote (%s: %s); revoking the lease so another node can stand\n",
            epoch, eg_err_msg(e), msg);
    c->lead_lease = 0;
    e = eg_etcd_lease_revoke(c->etcd, c->lease, err, errlen);
    if (!e) c->lease = 0;
    return e;
  }
  fprintf(stderr, "engramd: coordinator: elected primary at epoch %" PRIu64 " (lsn %" PRIu64 ")\n",
          epoch, lsn);
  pthread_mutex_lock(&c->st_mu);
  c->st.elections_won++;
  snprintf(c->st.leader_id, sizeof c->st.leader_id, "%s", c->id);
  snprintf(c->st.leader_address, sizeof c->st.leader_address, "%s", c->address);
  pthread_mutex_unlock(&c->st_mu);
  c->lsn_put_us = 0; /* publish the new leader's LSN at once */
  return EG_OK;
}

/* The leader's LSN, for the lag rule once it is gone. */
static eg_err eg_coord_put_lsn(eg_coord *c, uint64_t lsn, char *err, size_t errlen) {
  int64_t now = eg_mono_us();
  if (lsn == c->lsn_put || now - c->lsn_put_us < EG_COORD_LSN_EVERY_US) return EG_OK;
  char s[24];
  snprintf(s, sizeof s, "%" PRIu64, lsn);
  eg_err e = eg_etcd_put(c->etcd, (const uint8_t *)c->k_lsn, strlen(c->k_lsn), (const uint8_t *)s,
                         strlen(s), 0, err, errlen);
  if (!e) {
    c->lsn_put = lsn;
    c->lsn_put_us = now;
  }
  return e;
}

static void eg_coord_follow(eg_coord *c, const char *address) {
  eg_err e = eg_repl_follow(c->repl, address);
  if (e == EG_OK) {
    c->follow_failed[0] = '\0';
  } else if (strcmp(c->follow_failed, address) != 0) {
    fprintf(stderr, "engramd: coordinator: cannot follow the primary at %s: %s\n", address,
            eg_err_msg(e));
    snprintf(c->follow_failed, sizeof c->follow_failed, "%s", address);
  }
}

static eg_err eg_coord_act(eg_coord *c, const eg_coord_view *v, const eg_coord_decision *d,
                           const eg_repl_progress *p, char *err, size_t errlen) {
  char why[512];
  switch (d->action) {
    case EG_COORD_WAIT:
      if (d->problem[0] && !c->said_problem) {
        fprintf(stderr, "engramd: coordinator: NO PRIMARY: %s\n", d->problem);
        c->said_problem = 1;
      }
      return EG_OK;
    case EG_COORD_FOLLOW:
      eg_coord_follow(c, v->leader_address);
      return EG_OK;
    case EG_COORD_LEAD:
      return eg_coord_put_lsn(c, p->applied, err, errlen);
    case EG_COORD_STAND:
      return eg_coord_stand(c, v, d->epoch, err, errlen);
    case EG_COORD_REVOKE:
      fprintf(stderr, "engramd: coordinator: the leader key names this node, which does not "
                      "lead: revoking its lease %" PRId64 "\n", d->lease);
      if (d->lease == c->lease) c->lease = 0;
      return eg_etcd_lease_revoke(c->etcd, d->lease, err, errlen);
    case EG_COORD_DEMOTE:
      if (v->has_leader)
        snprintf(why, sizeof why, "etcd names %.128s (%.256s) the primary: this deposed primary "
                 "rejoins as a replica", v->leader_id, v->leader_address);
      else
        snprintf(why, sizeof why, "this primary's leader key is gone from etcd (its lease "
                 "expired or was revoked): it rejoins as a replica");
      eg_repl_request_restart(c->repl, why);
      return EG_OK;
  }
  return EG_OK;
}

/* ---- the loop -------------------------------------------------------------- */

/* Tracks the leaderless period across reads: its first revision (members
 * that wrote after it have re-published) and whether it has settled. */
static void eg_coord_track(eg_coord *c, eg_coord_view *v, int *force_publish) {
  int64_t now = eg_mono_us();
  if (v->has_leader) {
    c->gone_revision = 0;
    c->said_problem = 0;
    return;
  }
  if (c->gone_revision == 0) {
    c->gone_revision = v->revision;
    c->gone_us = now;
    *force_publish = 1; /* so that this node counts as re-published next read */
  }
  v->gone_revision = c->gone_revision;
  v->settled = now - c->gone_us >= (int64_t)EG_COORD_SETTLE_MS * 1000;
}

static void eg_coord_set_status(eg_coord *c, const eg_coord_view *v, const char *problem, int ok) {
  pthread_mutex_lock(&c->st_mu);
  if (v) {
    snprintf(c->st.leader_id, sizeof c->st.leader_id, "%s", v->has_leader ? v->leader_id : "");
    snprintf(c->st.leader_address, sizeof c->st.leader_address, "%s",
             v->has_leader ? v->leader_address : "");
  }
  snprintf(c->st.problem, sizeof c->st.problem, "%s", problem);
  c->st.etcd_ok = ok;
  pthread_mutex_unlock(&c->st_mu);
}

static void eg_coord_tick(eg_coord *c, int *force_publish) {
  char err[512] = "";
  eg_repl_progress p;
  eg_coord_view v;
  eg_coord_decision d = {0};
  eg_etcd_kvs kvs = {0};
  eg_repl_progress_get(c->repl, &p);
  int primary = eg_repl_is_primary(c->repl);
  eg_err e = eg_coord_keep_lease(c, err, sizeof err);
  if (!e) e = eg_coord_publish(c, &p, primary, *force_publish, err, sizeof err);
  if (!e) *force_publish = 0;
  if (!e) e = eg_etcd_range_prefix(c->etcd, (const uint8_t *)c->k_range, strlen(c->k_range), &kvs,
                                   err, sizeof err);
  if (!e) {
    memset(&v, 0, sizeof v);
    v.self_id = c->id;
    v.self_primary = primary;
    v.self_healthy = !eg_store_broken(c->store);
    v.self_applied = p.applied;
    v.self_last_epoch = p.last_epoch;
    v.self_epoch = p.epoch;
    v.self_lease = c->lease;
    v.max_lag = c->max_lag;
    eg_coord_view_fill(c, &kvs, &v);
    eg_etcd_kvs_free(&kvs);
    eg_coord_track(c, &v, force_publish);
    eg_coord_decide(&v, &d);
    eg_coord_set_status(c, &v, d.problem, 1); /* before: a won election updates it */
    e = eg_coord_act(c, &v, &d, &p, err, sizeof err);
  }
  if (e == EG_OK) {
    if (c->etcd_down_said) fprintf(stderr, "engramd: coordinator: etcd answers again\n");
    c->etcd_down_said = 0;
    return;
  }
  char problem[256];
  snprintf(problem, sizeof problem, "etcd (%.100s) cannot be reached: %.120s",
           eg_etcd_endpoint(c->etcd), err[0] ? err : eg_err_msg(e));
  if (!c->etcd_down_said) fprintf(stderr, "engramd: coordinator: %s\n", problem);
  c->etcd_down_said = 1;
  eg_coord_set_status(c, NULL, problem, 0);
}

static void *eg_coord_main(void *arg) {
  eg_coord *c = arg;
  int force_publish = 1;
  pthread_mutex_lock(&c->bg.mu);
  while (!c->bg.stopping) {
    pthread_mutex_unlock(&c->bg.mu);
    eg_coord_tick(c, &force_publish);
    pthread_mutex_lock(&c->bg.mu);
    if (!c->bg.stopping) eg_bgthread_sleep(&c->bg, EG_COORD_TICK_MS);
  }
  pthread_mutex_unlock(&c->bg.mu);
  return NULL;
}

/* ---- start, stop, status ------------------------------------------------- */

eg_err eg_coord_start(const eg_coord_config *cfg, eg_coord **out, char *err, size_t errlen) {
  eg_coord *c = calloc(1, sizeof *c);
  if (!c) return EG_ENOMEM;
  eg_err e = eg_coord_url_parse(cfg->url, &c->url, err, errlen);
  if (e) goto fail;
  snprintf(c->id, sizeof c->id, "%s", cfg->id);
  snprintf(c->address, sizeof c->address, "%s", cfg->address);
  c->ttl_s = cfg->lease_ttl_s;
  c->max_lag = cfg->failover_max_lag;
  c->repl = cfg->repl;
  c->store = cfg->store;
  const char *p = c->url.prefix;
  snprintf(c->k_range, sizeof c->k_range, "%s/", p);
  snprintf(c->k_leader, sizeof c->k_leader, "%s/leader", p);
  snprintf(c->k_epoch, sizeof c->k_epoch, "%s/epoch", p);
  snprintf(c->k_lsn, sizeof c->k_lsn, "%s/leader_lsn", p);
  snprintf(c->k_self, sizeof c->k_self, "%s/members/%s", p, c->id);
  c->members_at = strlen(p) + strlen("/members/");
  const char *eps[EG_ETCD_MAX_ENDPOINTS];
  for (size_t i = 0; i < c->url.n_endpoints; i++) eps[i] = c->url.endpoints[i];
  /* A call must end well inside the third of the TTL between refreshes,
   * so that one slow call costs one refresh, not the lease. */
  int64_t timeout_ms = c->ttl_s * 1000 / 4;
  if ((e = eg_etcd_new(eps, c->url.n_endpoints, timeout_ms, &c->etcd, err, errlen))) goto fail;
  snprintf(c->st.problem, sizeof c->st.problem, "starting: etcd not read yet");
  pthread_mutex_init(&c->st_mu, NULL);
  if ((e = eg_bgthread_start(&c->bg, eg_coord_main, c, "coordinator", err, errlen))) {
    pthread_mutex_destroy(&c->st_mu);
    goto fail;
  }
  *out = c;
  return EG_OK;
fail:
  eg_etcd_free(c->etcd);
  free(c);
  return e;
}

void eg_coord_stop(eg_coord *c) {
  if (!c) return;
  /* Fenced before anything else: from here no write is acknowledged. */
  if (eg_repl_is_primary(c->repl)) eg_repl_set_lease(c->repl, 0);
  eg_bgthread_stop(&c->bg);
  /* Again: a refresh (or an election won) the thread finished meanwhile
   * set a new deadline. */
  int primary = eg_repl_is_primary(c->repl);
  if (primary) eg_repl_set_lease(c->repl, 0);
  if (c->lease) {
    char err[256] = "";
    /* The key goes now, instead of after the TTL: the others elect at once. */
    eg_err e = eg_etcd_lease_revoke(c->etcd, c->lease, err, sizeof err);
    if (e)
      fprintf(stderr, "engramd: coordinator: cannot revoke lease %" PRId64 " (%s)%s\n", c->lease,
              err, primary ? ": the others elect once it expires" : "");
    else if (primary)
      fprintf(stderr, "engramd: coordinator: fenced and gave up the lead\n");
    c->lease = 0;
  }
  eg_etcd_free(c->etcd);
  c->etcd = NULL;
}

void eg_coord_free(eg_coord *c) {
  if (!c) return;
  pthread_mutex_destroy(&c->st_mu);
  free(c);
}

void eg_coord_status_get(const eg_coord *c, eg_coord_status *out) {
  memset(out, 0, sizeof *out);
  if (!c) return;
  eg_coord *m = (eg_coord *)c; /* st_mu is the only thing touched */
  pthread_mutex_lock(&m->st_mu);
  *out = c->st;
  pthread_mutex_unlock(&m->st_mu);
}
