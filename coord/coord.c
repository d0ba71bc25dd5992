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
#include "common/log.h"

/* How often a changed PREFIX/leader_lsn is written at most: it only bounds
 * the lag rule, so a write a tick is not worth it. */
#define EG_COORD_LSN_EVERY_US 500000

/* How long a node whose promotion failed says it is unhealthy (so that
 * another may stand) before it stands again. */
#define EG_COORD_PROMOTE_BACKOFF_US (10 * 1000000)

struct eg_coord {
  eg_bgthread bg;
  pthread_mutex_t st_mu; /* guards st; outlives bg (read until eg_coord_free) */
  eg_coord_url url;
  char id[128], address[256];
  int64_t ttl_s, max_lag;
  eg_repl *repl;
  eg_store *store;
  eg_etcd *etcd;
  char k_range[300], k_leader[300], k_epoch[300], k_lsn[300], k_members[300], k_self[450];
  eg_coord_keys keys; /* the k_ above */
  /* the thread's own */
  int64_t lease, granted_s, refresh_us; /* refresh_us: when the next keepalive is due */
  int64_t lead_lease; /* the lease this node's leader key is bound to (0: it holds none) */
  int64_t unhealthy_until_us; /* a failed promotion: not healthy until then */
  eg_coord_member put; /* the member value last put on this lease */
  int have_put;
  int64_t member_put_us;
  /* The leaderless period: the first read of it that found no leader key
   * (0: a leader key is there), and when. */
  int64_t gone_revision, gone_us;
  int twin; /* the last read showed another node using this id: publish nothing */
  char said[256];          /* the decision's problem last logged */
  int said_lost;           /* a lost election logged in this leaderless period */
  int64_t said_bad_member; /* the newest unreadable member value logged (mod_revision) */
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
    c->have_put = 0; /* the member key went with the old lease */
    eg_coord_lease_until(c, t_sent);
    return EG_OK;
  }
  if (t_sent < c->refresh_us) return EG_OK;
  if ((e = eg_etcd_lease_keepalive(c->etcd, c->lease, &ttl, err, errlen))) return e;
  if (ttl > 0) {
    eg_coord_lease_until(c, t_sent);
    return EG_OK;
  }
  eg_log(EG_LOG_WARN, "coordinator: lease %" PRId64 " expired in etcd%s", c->lease,
         eg_repl_is_primary(c->repl) ? ": fenced, no write is acknowledged here any more" : "");
  eg_repl_set_lease(c->repl, 0);
  c->lease = 0;
  return eg_coord_keep_lease(c, err, errlen);
}

/* ---- what this node publishes -------------------------------------------- */

/* Whether this node may lead: its store usable, and no promotion of its
 * failed lately (a full disk would otherwise win, fail and revoke again
 * and again, each time at a new epoch, while a healthy peer waits). */
static int eg_coord_healthy(const eg_coord *c) {
  return !eg_store_broken(c->store) && eg_mono_us() >= c->unhealthy_until_us;
}

/* Puts this node's member key when eg_coord_member_due says so; its
 * leaderless_revision is the current period's, so p must have been
 * sampled after the read that began it. */
static eg_err eg_coord_publish(eg_coord *c, const eg_repl_progress *p, int primary, int at_once,
                               char *err, size_t errlen) {
  /* Another node writes this key too: writing it back would only make
   * both read each other's values by turns. */
  if (c->twin) return EG_OK;
  eg_coord_member now = {.primary = primary, .applied_lsn = p->applied,
                         .last_epoch = p->last_epoch, .epoch = p->epoch,
                         .healthy = eg_coord_healthy(c),
                         .leaderless_revision = c->gone_revision};
  int64_t t = eg_mono_us();
  if (!eg_coord_member_due(c->have_put ? &c->put : NULL, &now, at_once, t - c->member_put_us))
    return EG_OK;
  Engram__Coord__V1__Member m = ENGRAM__COORD__V1__MEMBER__INIT;
  uint8_t buf[EG_ETCD_VALUE_MAX];
  m.id = c->id;
  m.address = c->address;
  m.role = primary ? "primary" : "replica";
  m.epoch = now.epoch;
  m.applied_lsn = now.applied_lsn;
  m.last_epoch = now.last_epoch;
  /* Whether it may lead, not whether it streams now: after the primary
   * dies no replica streams, and one of them must stand. */
  m.healthy = now.healthy;
  m.leaderless_revision = now.leaderless_revision;
  m.updated_us = eg_now_us();
  size_t len = engram__coord__v1__member__pack(&m, buf); /* < 1 KiB: id, address bounded */
  eg_err e = eg_etcd_put(c->etcd, (const uint8_t *)c->k_self, strlen(c->k_self), buf, len,
                         c->lease, err, errlen);
  if (e) return e;
  c->put = now;
  c->have_put = 1;
  c->member_put_us = t;
  return EG_OK;
}

/* The view as it is after this node's own put: its key holds c->put. */
static void eg_coord_view_self(eg_coord *c, eg_coord_view *v) {
  eg_coord_member *m = NULL;
  for (size_t i = 0; i < v->n_members && !m; i++)
    if (strcmp(v->members[i].id, c->id) == 0) m = &v->members[i];
  if (!m) {
    if (v->n_members == EG_ETCD_RANGE_MAX) return;
    m = &v->members[v->n_members++];
  }
  *m = c->put;
  snprintf(m->id, sizeof m->id, "%s", c->id);
  snprintf(m->address, sizeof m->address, "%s", c->address);
  m->lease = c->lease;
  v->self_applied = c->put.applied_lsn;
  v->self_last_epoch = c->put.last_epoch;
  v->self_epoch = c->put.epoch;
}

/* After a read: whether this node's member key is its own, as last put. */
static void eg_coord_check_self(eg_coord *c, const eg_coord_view *v) {
  c->twin = eg_coord_twin(v) != NULL;
  const eg_coord_member *m = NULL;
  for (size_t i = 0; i < v->n_members && !m; i++)
    if (strcmp(v->members[i].id, c->id) == 0) m = &v->members[i];
  /* Gone (a twin's lease ended, an operator deleted it) or a previous
   * process's: put it again. */
  if (!m || (m->lease != c->lease && !c->twin)) c->have_put = 0;
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
  if (e) return e;
  if (!won) {
    /* Another node was faster (the next read says who), or the keys moved
     * since this node read them. Said once a period: a leaderless period
     * of lost elections is worth a look. */
    if (!c->said_lost)
      eg_log(EG_LOG_INFO, "coordinator: lost the election at epoch %" PRIu64 ": %s or %s "
                          "changed since revision %" PRId64, epoch, c->k_leader, c->k_epoch,
             v->revision);
    c->said_lost = 1;
    return EG_OK;
  }
  c->lead_lease = c->lease;
  uint64_t lsn = 0;
  e = eg_repl_promote_at(c->repl, epoch, &lsn, msg, sizeof msg);
  if (e) {
    c->unhealthy_until_us = eg_mono_us() + EG_COORD_PROMOTE_BACKOFF_US;
    /* Holding the key without leading would stall the cluster for a TTL. */
    eg_log(EG_LOG_ERROR, "coordinator: won the election at epoch %" PRIu64 " but cannot "
                         "promote (%s: %s); revoking the lease so another node can stand",
           epoch, eg_err_msg(e), msg);
    c->lead_lease = 0;
    e = eg_etcd_lease_revoke(c->etcd, c->lease, err, errlen);
    if (!e) c->lease = 0;
    return e;
  }
  eg_log(EG_LOG_INFO, "coordinator: elected primary at epoch %" PRIu64 " (lsn %" PRIu64 ")",
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
  if (e == EG_ELIMIT) {
    /* The table of addresses followed is full; a new process starts with
     * an empty one. */
    char why[400];
    snprintf(why, sizeof why, "this replica followed %d primary addresses, its most: it "
             "restarts to follow %.256s", EG_REPL_MAX_UPSTREAMS, address);
    eg_repl_request_restart(c->repl, why);
  } else if (e == EG_OK) {
    c->follow_failed[0] = '\0';
  } else if (strcmp(c->follow_failed, address) != 0) {
    eg_log(EG_LOG_WARN, "coordinator: cannot follow the primary at %s: %s", address,
           eg_err_msg(e));
    snprintf(c->follow_failed, sizeof c->follow_failed, "%s", address);
  }
}

static eg_err eg_coord_act(eg_coord *c, const eg_coord_view *v, const eg_coord_decision *d,
                           const eg_repl_progress *p, char *err, size_t errlen) {
  char why[512];
  switch (d->action) {
    case EG_COORD_WAIT:
      return EG_OK;
    case EG_COORD_FOLLOW:
      eg_coord_follow(c, v->leader_address);
      return EG_OK;
    case EG_COORD_LEAD:
      return eg_coord_put_lsn(c, p->applied, err, errlen);
    case EG_COORD_STAND:
      return eg_coord_stand(c, v, d->epoch, err, errlen);
    case EG_COORD_REVOKE:
      eg_log(EG_LOG_WARN, "coordinator: the leader key names this node, which does not "
                          "lead: revoking its lease %" PRId64, d->lease);
      if (d->lease == c->lease) c->lease = 0;
      return eg_etcd_lease_revoke(c->etcd, d->lease, err, errlen);
    case EG_COORD_DEMOTE:
      if (v->leader_unusable[0])
        snprintf(why, sizeof why, "this primary's leader key holds %s: it can no longer show "
                 "it leads, and rejoins as a replica", v->leader_unusable);
      else if (v->has_leader)
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

/* Tracks the leaderless period across reads: its first revision (this
 * node's Member.leaderless_revision) and whether it has settled. A leader
 * key that cannot be used still ends the period: nobody may stand. */
static void eg_coord_track(eg_coord *c, eg_coord_view *v) {
  int64_t now = eg_mono_us();
  if (v->has_leader || v->leader_unusable[0]) {
    c->gone_revision = 0;
    c->said_lost = 0;
    return;
  }
  /* A period that began before the last leader key was created is over
   * (that leader came and went between two reads of this node). */
  if (c->gone_revision == 0 || c->gone_revision <= v->epoch_mod_revision) {
    c->gone_revision = v->revision;
    c->gone_us = now;
    c->said_lost = 0;
  }
  int64_t settle_us = (int64_t)EG_COORD_SETTLE_MS * 1000;
  if (c->ttl_s * 2000000 / 3 > settle_us) settle_us = c->ttl_s * 2000000 / 3;
  v->settled = now - c->gone_us >= settle_us;
}

/* Logs what the read and the decision found wrong, once each. */
static void eg_coord_say(eg_coord *c, const eg_coord_view *v, const eg_coord_decision *d) {
  if (v->n_bad_members && v->bad_member_revision > c->said_bad_member) {
    eg_log(EG_LOG_WARN, "coordinator: ignoring %zu key(s) under %s that hold no Member "
                        "value engramd can read (the newest at mod_revision %" PRId64 ")",
           v->n_bad_members, c->k_members, v->bad_member_revision);
    c->said_bad_member = v->bad_member_revision;
  }
  if (strcmp(d->problem, c->said) == 0) return;
  if (d->problem[0])
    eg_log(EG_LOG_WARN, "coordinator: %s%s",
           d->action == EG_COORD_WAIT && !v->has_leader ? "NO PRIMARY: " : "", d->problem);
  snprintf(c->said, sizeof c->said, "%s", d->problem);
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

/* Why a tick failed, by what failed: an etcd that cannot be reached is a
 * network matter, the rest are not. */
static void eg_coord_tick_problem(eg_coord *c, eg_err e, const char *err, char *out, size_t n) {
  const char *why = err[0] ? err : eg_err_msg(e);
  if (strncmp(why, "etcd: ", 6) == 0) why += 6;
  if (e == EG_EUNAVAIL)
    snprintf(out, n, "etcd (%.100s) cannot be reached: %.120s", eg_etcd_endpoint(c->etcd), why);
  else if (e == EG_ELIMIT)
    snprintf(out, n, "%.80s in etcd holds more than engramd reads: %.120s", c->k_range, why);
  else
    snprintf(out, n, "etcd (%.100s) answered: %.120s", eg_etcd_endpoint(c->etcd), why);
}

static void eg_coord_tick(eg_coord *c) {
  char err[512] = "", pub_err[512] = "";
  eg_err pub_e = EG_OK;
  eg_repl_progress p;
  eg_coord_view v;
  eg_coord_decision d = {0};
  eg_etcd_kvs kvs = {0};
  eg_repl_progress_get(c->repl, &p);
  int primary = eg_repl_is_primary(c->repl);
  eg_err e = eg_coord_keep_lease(c, err, sizeof err);
  /* Read before this node's own put: a leader whose key is gone (revoked
   * early, or taken over) learns it from this read and fences at once,
   * even if the put would fail (its lease gone with the key). */
  if (!e) e = eg_etcd_range_prefix(c->etcd, (const uint8_t *)c->k_range, strlen(c->k_range), &kvs,
                                   err, sizeof err);
  if (!e) {
    memset(&v, 0, sizeof v);
    v.self_id = c->id;
    v.self_address = c->address;
    v.self_primary = primary;
    v.self_healthy = eg_coord_healthy(c);
    v.self_applied = p.applied;
    v.self_last_epoch = p.last_epoch;
    v.self_epoch = p.epoch;
    v.self_lease = c->lease;
    v.max_lag = c->max_lag;
    eg_coord_view_fill(&c->keys, &kvs, c->members, &v);
    eg_etcd_kvs_free(&kvs);
    eg_coord_track(c, &v);
    eg_coord_check_self(c, &v);
    eg_coord_decide(&v, &d);
    /* A primary that is not to lead acknowledges nothing from this read
     * on (it demotes below, or waits for etcd to say more). */
    if (primary && d.action != EG_COORD_LEAD) {
      /* For good: every such decision of a primary demotes it, and no
       * later refresh of its lease may unfence it (eg_coord_ack_until). */
      c->lead_lease = 0;
      eg_repl_set_lease(c->repl, 0);
    }
    if (!primary && (c->twin || (!v.has_leader && !v.leader_unusable[0]))) {
      /* Nobody leads (or this node's id is another's, so its view is not
       * its own): stop applying (and acknowledging) the old leader's log
       * first, so that what this node publishes stays what it holds.
       * With --sync-replicas the old leader, if still alive, then gets no
       * more acks from it: a write it acknowledges is in the state of a
       * replica that has not yet published, and the election waits for
       * that (or for the old leader's fence deadline to pass). */
      eg_coord_follow(c, "");
    }
    if (!v.has_leader && !v.leader_unusable[0] && !c->twin) {
      /* No leader: this node's state, sampled after that read, goes out
       * now, so that the others rank it by what it holds now (a write
       * acknowledged just before the leader went included). */
      eg_repl_progress_get(c->repl, &p);
      e = eg_coord_publish(c, &p, primary, 1, err, sizeof err);
      if (!e) {
        eg_coord_view_self(c, &v);
        eg_coord_decide(&v, &d);
      }
    } else {
      /* What this read says is acted on even if the put fails (a primary
       * whose lease was revoked fails it, and must still step down now). */
      pub_e = eg_coord_publish(c, &p, primary, 0, pub_err, sizeof pub_err);
    }
  }
  if (!e) {
    eg_coord_say(c, &v, &d);
    eg_coord_set_status(c, &v, d.problem, 1); /* before: a won election updates it */
    e = eg_coord_act(c, &v, &d, &p, err, sizeof err);
    if (!e && pub_e) {
      e = pub_e;
      snprintf(err, sizeof err, "%s", pub_err);
    }
  }
  if (e == EG_OK) {
    if (c->etcd_down_said) eg_log(EG_LOG_INFO, "coordinator: etcd answers again");
    c->etcd_down_said = 0;
    return;
  }
  /* A replica that cannot renew its lease may have lost its member key:
   * an election would not wait for it, so it must not go on applying (and
   * acknowledging) a leader's log it can no longer check. */
  if (!eg_repl_is_primary(c->repl) && eg_repl_fenced(c->repl)) eg_coord_follow(c, "");
  char problem[256];
  eg_coord_tick_problem(c, e, err, problem, sizeof problem);
  if (!c->etcd_down_said) eg_log(EG_LOG_WARN, "coordinator: %s", problem);
  c->etcd_down_said = 1;
  eg_coord_set_status(c, NULL, problem, 0);
}

static void *eg_coord_main(void *arg) {
  eg_coord *c = arg;
  pthread_mutex_lock(&c->bg.mu);
  while (!c->bg.stopping) {
    pthread_mutex_unlock(&c->bg.mu);
    eg_coord_tick(c);
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
  snprintf(c->k_members, sizeof c->k_members, "%s/members/", p);
  snprintf(c->k_self, sizeof c->k_self, "%s%s", c->k_members, c->id);
  c->keys = (eg_coord_keys){.leader = c->k_leader, .epoch = c->k_epoch, .leader_lsn = c->k_lsn,
                            .members = c->k_members};
  const char *eps[EG_ETCD_MAX_ENDPOINTS];
  for (size_t i = 0; i < c->url.n_endpoints; i++) eps[i] = c->url.endpoints[i];
  /* A call must end well inside the third of the TTL between refreshes,
   * so that one slow call costs one refresh, not the lease. */
  int64_t timeout_ms = c->ttl_s * 1000 / 4;
  if ((e = eg_etcd_new(eps, c->url.n_endpoints, cfg->etcd_tls, timeout_ms, &c->etcd, err,
                       errlen)))
    goto fail;
  snprintf(c->st.problem, sizeof c->st.problem, "starting: etcd not read yet");
  pthread_mutex_init(&c->st_mu, NULL);
  if ((e = eg_bgthread_start(&c->bg, eg_coord_main, c, "coordinator", "coordinator", err, errlen))) {
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
      eg_log(EG_LOG_WARN, "coordinator: cannot revoke lease %" PRId64 " (%s)%s", c->lease,
             err, primary ? ": the others elect once it expires" : "");
    else if (primary)
      eg_log(EG_LOG_INFO, "coordinator: fenced and gave up the lead");
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
