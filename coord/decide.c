/* coord: what a node does given one read of etcd (eg_coord_view_fill,
 * eg_coord_decide). Pure: no clock, no I/O, so that every branch is a unit
 * test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord/coord.h"
#include "engram/coord/v1/coord.pb-c.h"

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

static void eg_view_leader(const eg_etcd_kv *kv, eg_coord_view *v) {
  v->leader_mod_revision = kv->mod_revision;
  Engram__Coord__V1__Leader *l = engram__coord__v1__leader__unpack(NULL, kv->value_len, kv->value);
  if (!l) {
    snprintf(v->leader_unusable, sizeof v->leader_unusable, "something that is not a Leader");
    return;
  }
  /* Following "" would stall every replica on an address that never
   * connects. */
  if (!l->id[0] || !l->address[0]) {
    snprintf(v->leader_unusable, sizeof v->leader_unusable, "a Leader with no id or address");
  } else if (kv->lease == 0) {
    /* engramd binds the key to its leader's lease; one without could
     * outlive every node and would never go by itself. */
    snprintf(v->leader_unusable, sizeof v->leader_unusable, "a Leader bound to no lease");
  } else {
    v->has_leader = 1;
    snprintf(v->leader_id, sizeof v->leader_id, "%s", l->id);
    snprintf(v->leader_address, sizeof v->leader_address, "%s", l->address);
    v->leader_lease = kv->lease;
  }
  engram__coord__v1__leader__free_unpacked(l, NULL);
}

/* 1 if kv is a member engramd can rank (filled into o). */
static int eg_view_member(const eg_etcd_kv *kv, eg_coord_member *o) {
  Engram__Coord__V1__Member *m = engram__coord__v1__member__unpack(NULL, kv->value_len, kv->value);
  if (!m) return 0;
  int ok = m->id[0] && m->address[0];
  if (ok) {
    memset(o, 0, sizeof *o);
    snprintf(o->id, sizeof o->id, "%s", m->id);
    snprintf(o->address, sizeof o->address, "%s", m->address);
    o->primary = strcmp(m->role, "primary") == 0;
    o->applied_lsn = m->applied_lsn;
    o->last_epoch = m->last_epoch;
    o->epoch = m->epoch;
    o->healthy = m->healthy;
    o->leaderless_revision = m->leaderless_revision;
    o->lease = kv->lease;
  }
  engram__coord__v1__member__free_unpacked(m, NULL);
  return ok;
}

void eg_coord_view_fill(const eg_coord_keys *k, const eg_etcd_kvs *kvs, eg_coord_member *members,
                        eg_coord_view *v) {
  size_t members_len = strlen(k->members);
  v->leader_key = k->leader;
  v->revision = kvs->revision;
  v->members = members;
  for (size_t i = 0; i < kvs->n && i < EG_ETCD_RANGE_MAX; i++) {
    const eg_etcd_kv *kv = &kvs->kvs[i];
    if (eg_key_is(kv, k->leader)) {
      eg_view_leader(kv, v);
    } else if (eg_key_is(kv, k->epoch)) {
      v->etcd_epoch = eg_decimal(kv);
      v->epoch_mod_revision = kv->mod_revision;
    } else if (eg_key_is(kv, k->leader_lsn)) {
      v->leader_lsn = eg_decimal(kv);
    } else if (kv->key_len > members_len && memcmp(kv->key, k->members, members_len) == 0) {
      if (eg_view_member(kv, &members[v->n_members])) {
        v->n_members++;
      } else {
        v->n_bad_members++;
        if (kv->mod_revision > v->bad_member_revision) v->bad_member_revision = kv->mod_revision;
      }
    }
  }
  /* A leader puts its member key, on the same lease, before it takes the
   * leader key: a leader key naming no member (or a member at another
   * address) was not put by an engramd leader, and nobody may follow it. */
  if (v->has_leader) {
    const eg_coord_member *m = NULL;
    for (size_t i = 0; i < v->n_members && !m; i++)
      if (strcmp(v->members[i].id, v->leader_id) == 0) m = &v->members[i];
    if (!m || strcmp(m->address, v->leader_address) != 0) {
      v->has_leader = 0;
      snprintf(v->leader_unusable, sizeof v->leader_unusable,
               m ? "a Leader at another address than its member key's"
                 : "a Leader naming a node with no member key");
    }
  }
}

/* ---- deciding ------------------------------------------------------------- */

/* Whether a ranks above b: (last_epoch, applied_lsn) higher, then the
 * smaller id (so that two equal members agree on one winner). */
static int eg_ranks_above(const eg_coord_member *a, const eg_coord_member *b) {
  if (a->last_epoch != b->last_epoch) return a->last_epoch > b->last_epoch;
  if (a->applied_lsn != b->applied_lsn) return a->applied_lsn > b->applied_lsn;
  return strcmp(a->id, b->id) < 0;
}

/* Records m is behind the last leader's LSN (0 when ahead or no LSN is known). */
static uint64_t eg_lag(const eg_coord_view *v, const eg_coord_member *m) {
  return v->leader_lsn > m->applied_lsn ? v->leader_lsn - m->applied_lsn : 0;
}

/* Whether m sampled its state after it found no leader in this period:
 * only such a member may be ranked (a key that is never refreshed, or
 * not by engramd, can then block nothing once the period settles). */
static int eg_published(const eg_coord_view *v, const eg_coord_member *m) {
  /* A mark past this very read was not taken by a read: not engramd's. */
  return m->leaderless_revision > v->epoch_mod_revision && m->leaderless_revision <= v->revision;
}

static int eg_healthy(const eg_coord_view *v, const eg_coord_member *m) {
  return m->healthy && (strcmp(m->id, v->self_id) != 0 || v->self_healthy);
}

static int eg_candidate(const eg_coord_view *v, const eg_coord_member *m) {
  return eg_healthy(v, m) && eg_published(v, m) && eg_lag(v, m) <= (uint64_t)v->max_lag;
}

static uint64_t eg_next_epoch(const eg_coord_view *v) {
  uint64_t e = v->etcd_epoch > v->self_epoch ? v->etcd_epoch : v->self_epoch;
  for (size_t i = 0; i < v->n_members; i++) {
    if (v->members[i].epoch > e) e = v->members[i].epoch;
    if (v->members[i].last_epoch > e) e = v->members[i].last_epoch;
  }
  return e + 1; /* 0 when e is the largest epoch: no next one */
}

/* No leader: stand if this node is the best candidate, else wait (saying
 * why when nobody can stand). */
static void eg_elect(const eg_coord_view *v, eg_coord_decision *out) {
  const eg_coord_member *best = NULL, *self = NULL, *lagging = NULL;
  for (size_t i = 0; i < v->n_members; i++) {
    const eg_coord_member *m = &v->members[i];
    if (strcmp(m->id, v->self_id) == 0) self = m;
    if (eg_candidate(v, m)) {
      if (!best || eg_ranks_above(m, best)) best = m;
    } else if (eg_healthy(v, m) && eg_published(v, m) &&
               (!lagging || eg_ranks_above(m, lagging))) {
      lagging = m;
    }
  }
  out->action = EG_COORD_WAIT;
  if (!best) {
    if (lagging)
      snprintf(out->problem, sizeof out->problem,
               "no node may become primary: the most advanced healthy one, %.60s, is %llu records "
               "behind the last primary's LSN %llu (--failover-max-lag %lld)",
               lagging->id, (unsigned long long)eg_lag(v, lagging),
               (unsigned long long)v->leader_lsn, (long long)v->max_lag);
    else if (v->settled)
      snprintf(out->problem, sizeof out->problem,
               "no node may become primary: no healthy node has published its state");
    return;
  }
  if (best != self) {
    /* The best one stands; if it has not by the time the period settles
     * (another --failover-max-lag, a stuck node), say who is waited for. */
    if (v->settled)
      snprintf(out->problem, sizeof out->problem,
               "no primary yet: waiting for %.60s, the most advanced node, to take the lead",
               best->id);
    return;
  }
  uint64_t epoch = eg_next_epoch(v);
  if (epoch == 0) {
    snprintf(out->problem, sizeof out->problem,
             "no node may become primary: the epoch in etcd or in a member is the largest there "
             "is; the cluster's epochs must be reset by hand");
    return;
  }
  /* Before the period settles, a member that has not published since the
   * leader vanished may yet be alive and ahead, whatever its old value
   * says: after a clean stop the key goes at once, and the replica that
   * acknowledged the last write may not have said so yet. */
  for (size_t i = 0; !v->settled && i < v->n_members; i++) {
    const eg_coord_member *m = &v->members[i];
    if (m != self && !eg_published(v, m) && m->healthy) return;
  }
  out->action = EG_COORD_STAND;
  out->epoch = epoch;
}

const char *eg_coord_twin(const eg_coord_view *v) {
  if (v->has_leader && strcmp(v->leader_id, v->self_id) == 0 && v->leader_lease != v->self_lease &&
      strcmp(v->leader_address, v->self_address) != 0)
    return v->leader_address;
  for (size_t i = 0; i < v->n_members; i++) {
    const eg_coord_member *m = &v->members[i];
    /* Its own key on an older lease at its own address is its previous
     * process's, about to be replaced. */
    if (strcmp(m->id, v->self_id) == 0 && m->lease != v->self_lease &&
        strcmp(m->address, v->self_address) != 0)
      return m->address;
  }
  return NULL;
}

void eg_coord_decide(const eg_coord_view *v, eg_coord_decision *out) {
  memset(out, 0, sizeof *out);
  const char *twin = eg_coord_twin(v);
  if (twin)
    snprintf(out->problem, sizeof out->problem,
             "node id %.60s is used by another node at %.100s: give each node its own "
             "--replica-id", v->self_id, twin);
  if (v->leader_unusable[0]) {
    const char *key = v->leader_key ? v->leader_key : "PREFIX/leader";
    /* Nobody can take the key (its create_revision is not 0) and nobody can
     * follow it: only an operator can clear it. */
    snprintf(out->problem, sizeof out->problem,
             "%.80s holds %.40s (mod_revision %lld): no node may become primary while it "
             "is there; delete it (etcdctl del)",
             key, v->leader_unusable, (long long)v->leader_mod_revision);
    /* Nor can any other node take it: a primary goes on leading (its own
     * lease still fences it, eg_coord_ack_until), replicas go on
     * following it, and reads and writes go on until an operator clears
     * the key (then a leaderless period starts as after a revoke). */
    out->action = v->self_primary ? EG_COORD_LEAD : EG_COORD_WAIT;
    return;
  }
  if (v->self_primary && v->has_leader && strcmp(v->leader_id, v->self_id) == 0 &&
      v->self_lease != 0 && v->leader_lease == v->self_lease) {
    out->action = EG_COORD_LEAD;
    return;
  }
  /* A twin's view of the keys is not this node's: it neither stands, nor
   * follows, nor revokes the lease of the leader that may be that twin. */
  if (twin && !v->self_primary) return;
  if (!v->has_leader) {
    /* A primary whose leader key is gone (its lease expired or was revoked)
     * may be replaced at any moment: it must not go on as a primary. */
    if (v->self_primary)
      out->action = EG_COORD_DEMOTE;
    else
      eg_elect(v, out);
    return;
  }
  if (strcmp(v->leader_id, v->self_id) != 0) {
    out->action = v->self_primary ? EG_COORD_DEMOTE : EG_COORD_FOLLOW;
    return;
  }
  if (v->self_primary) {
    /* The key names this node but another lease: this process did not take
     * it. Restart as a replica; the restarted node revokes it. */
    out->action = EG_COORD_DEMOTE;
    return;
  }
  /* The key names this node, at its address, from before a restart (or a
   * promotion that failed): nobody leads until it goes, so revoke its lease
   * now. */
  out->action = EG_COORD_REVOKE;
  out->lease = v->leader_lease;
}

int64_t eg_coord_ack_until(int self_primary, int64_t lease, int64_t lead_lease, int64_t t_sent,
                           int64_t granted_s) {
  /* A primary's leader key is bound to lead_lease: any other lease (a
   * fresh grant after that one expired) says nothing about how long it may
   * lead, and etcd may already have handed the key to another node. */
  if (self_primary && lease != lead_lease) return 0;
  return t_sent + granted_s * 2000000 / 3;
}

int eg_coord_member_due(const eg_coord_member *put, const eg_coord_member *now, int at_once,
                        int64_t since_put_us) {
  if (!put) return 1;
  if (put->primary != now->primary || put->healthy != now->healthy || put->epoch != now->epoch ||
      put->leaderless_revision != now->leaderless_revision)
    return 1;
  if (put->applied_lsn == now->applied_lsn && put->last_epoch == now->last_epoch) return 0;
  /* While a leader leads, progress only feeds the ranking once it is gone,
   * and a leaderless tick puts it at once anyway. */
  return at_once || since_put_us >= EG_COORD_MEMBER_EVERY_US;
}
