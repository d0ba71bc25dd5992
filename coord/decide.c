/* coord: what a node does given one read of etcd (eg_coord_decide). Pure:
 * no clock, no I/O, so that every branch is a unit test. */
#include <stdio.h>
#include <string.h>

#include "coord/coord.h"

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

static int eg_published(const eg_coord_view *v, const eg_coord_member *m) {
  return v->settled || m->mod_revision > v->gone_revision;
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
  return e + 1;
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
  if (best != self) return; /* the best one stands */
  /* Before the period settles, a member ranked above this one that has not
   * published since the leader vanished may yet be alive and ahead. */
  for (size_t i = 0; !v->settled && i < v->n_members; i++) {
    const eg_coord_member *m = &v->members[i];
    if (m != self && !eg_published(v, m) && m->healthy && eg_ranks_above(m, self)) return;
  }
  out->action = EG_COORD_STAND;
  out->epoch = eg_next_epoch(v);
}

void eg_coord_decide(const eg_coord_view *v, eg_coord_decision *out) {
  memset(out, 0, sizeof *out);
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
  if (v->self_primary && v->self_lease != 0 && v->leader_lease == v->self_lease) {
    out->action = EG_COORD_LEAD;
    return;
  }
  if (v->self_primary) {
    /* The key names this node but another lease: this process did not take
     * it. Restart as a replica; the restarted node revokes it. */
    out->action = EG_COORD_DEMOTE;
    return;
  }
  /* The key names this node from before a restart (or a promotion that
   * failed): nobody leads until it goes, so revoke its lease now. */
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
