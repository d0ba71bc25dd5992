/*
 * coord: automatic failover through etcd (--coordinator).
 *
 * One coordinator thread per engramd. It keeps a lease in etcd and the
 * node's member key under PREFIX/members/ID (proto/engram/coord/v1), and
 * every EG_COORD_TICK_MS reads the whole prefix and acts (eg_coord_decide):
 *   - the leader refreshes its lease every third of its TTL and tells
 *     replica/ how long it may acknowledge writes (eg_repl_set_lease): a
 *     leader that cannot refresh in time fences itself before etcd can
 *     expire its lease; one whose key is gone or someone else's restarts
 *     as a replica (eg_repl_request_restart);
 *   - a replica follows the address in PREFIX/leader (eg_repl_follow);
 *   - with no leader key, the most advanced healthy member by (last_epoch,
 *     applied_lsn) that lags PREFIX/leader_lsn by at most
 *     --failover-max-lag records takes the key in one etcd transaction
 *     that also bumps PREFIX/epoch, and promotes itself at that epoch
 *     (eg_repl_promote_at). When none may, nobody is promoted and the
 *     reason is logged and shown in GetStatus.failover_problem.
 * See docs/replication.md, "Automatic failover".
 */
#ifndef EG_COORD_H
#define EG_COORD_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "coord/etcd.h"
#include "replica/replica.h"
#include "storage/storage.h"

/* How often the coordinator reads etcd and acts. */
#define EG_COORD_TICK_MS 200
/* How long candidates wait, once the leader key is gone, for every live
 * member to publish its state again before the most advanced may stand
 * without the silent ones; at least 2/3 of --lease-ttl-s, so that by then
 * the old leader's own fence deadline has passed even if its lease went
 * early (revoked), and a silent replica can no longer be acknowledging its
 * writes. */
#define EG_COORD_SETTLE_MS 2000

/* A parsed --coordinator etcd://HOST:PORT[,HOST:PORT...]/PREFIX. */
typedef struct {
  char endpoints[EG_ETCD_MAX_ENDPOINTS][256];
  size_t n_endpoints;
  char prefix[256]; /* "/PREFIX", no trailing slash */
} eg_coord_url;
/* EG_EINVAL with why in err (naming the part that is wrong). */
eg_err eg_coord_url_parse(const char *url, eg_coord_url *out, char *err, size_t errlen);

typedef struct {
  const char *url;        /* --coordinator */
  const char *id;         /* this node's id (--replica-id or HOSTNAME-PORT) */
  const char *address;    /* --advertise-address: HOST:PORT peers reach it at */
  int64_t lease_ttl_s;    /* --lease-ttl-s */
  int64_t failover_max_lag; /* --failover-max-lag (records) */
  eg_repl *repl;          /* borrowed; started */
  eg_store *store;        /* borrowed */
  const eg_client_tls *etcd_tls; /* --etcd-tls-*: TLS to etcd; NULL: plaintext */
} eg_coord_config;

typedef struct eg_coord eg_coord;

/* Starts the coordinator thread. Fails (err says why) on a bad URL, or
 * when the thread cannot start; an unreachable etcd is no failure (the
 * node serves reads as a replica of nobody and keeps trying). */
eg_err eg_coord_start(const eg_coord_config *cfg, eg_coord **out, char *err, size_t errlen);
/* Stops the thread. A leader first fences itself (eg_repl_set_lease(0))
 * and revokes its lease, so the others elect a new leader at once instead
 * of after the TTL. eg_coord_status_get still works after it (GetStatus
 * runs while the transport drains, after this stop). NULL is fine. */
void eg_coord_stop(eg_coord *c);
/* Frees c after eg_coord_stop, once nothing reads its status. NULL is fine. */
void eg_coord_free(eg_coord *c);

typedef struct {
  char leader_id[128], leader_address[256];
  char problem[256]; /* GetStatus.failover_problem ("" none) */
  int etcd_ok;       /* the last call to etcd worked */
  uint64_t elections_won; /* by this node since start */
} eg_coord_status;
/* Thread safety: any thread. NULL c: all empty. */
void eg_coord_status_get(const eg_coord *c, eg_coord_status *out);

/* ---- the decision, pure (coord/decide.c) ------------------------------- */

/* One PREFIX/members/ key. */
typedef struct {
  char id[128], address[256];
  int primary; /* its role */
  uint64_t applied_lsn, last_epoch, epoch;
  int healthy;
  /* Member.leaderless_revision: the revision of a read in which the member
   * found no leader key, its progress sampled after that read (0: none). */
  int64_t leaderless_revision;
  int64_t lease; /* the key's lease */
} eg_coord_member;

/* The keys of one prefix (NUL-terminated). */
typedef struct {
  const char *leader, *epoch, *leader_lsn;
  const char *members; /* "PREFIX/members/" */
} eg_coord_keys;

typedef struct {
  /* this node */
  const char *self_id, *self_address;
  int self_primary;      /* eg_repl_is_primary */
  int self_healthy;      /* its store usable */
  uint64_t self_applied, self_last_epoch, self_epoch;
  int64_t self_lease;    /* the lease it holds (0: none yet) */
  /* what etcd says (one read, eg_coord_view_fill) */
  const char *leader_key; /* PREFIX/leader, for messages */
  int64_t revision;      /* of that read */
  int has_leader;        /* a usable leader key */
  /* The leader key is there but names nobody engramd can follow: it does
   * not decode, or its id or address is empty. Says how ("" : usable or
   * absent). Nobody may take the key until an operator deletes it. */
  char leader_unusable[64];
  int64_t leader_mod_revision; /* 0: no leader key */
  char leader_id[128], leader_address[256];
  int64_t leader_lease;
  uint64_t etcd_epoch;   /* PREFIX/epoch (0: absent) */
  int64_t epoch_mod_revision; /* 0: absent */
  uint64_t leader_lsn;   /* PREFIX/leader_lsn (0: absent) */
  eg_coord_member *members; /* every readable PREFIX/members/ key, self included */
  size_t n_members;
  size_t n_bad_members;          /* member keys that do not decode (skipped) */
  int64_t bad_member_revision;   /* the largest mod_revision among them */
  /* the leaderless period, as the coordinator tracked it */
  int settled;           /* the settle time (EG_COORD_SETTLE_MS, at least 2/3
                            of the TTL) passed since this node saw it start */
  int64_t max_lag;       /* --failover-max-lag */
} eg_coord_view;

/* Fills v's etcd part from one read of the prefix, members into members
 * (room for EG_ETCD_RANGE_MAX). Values that do not decode are skipped and
 * counted, not fatal: a member's is its own problem, the leader key's is
 * leader_unusable. Pure. */
void eg_coord_view_fill(const eg_coord_keys *k, const eg_etcd_kvs *kvs, eg_coord_member *members,
                        eg_coord_view *v);

/* The address of another live node using this node's id, seen in the
 * leader key (it names self_id, on a lease not self_lease, at another
 * address) or in self's member key (the same); NULL when none. Pure. */
const char *eg_coord_twin(const eg_coord_view *v);

typedef enum {
  EG_COORD_WAIT,    /* nothing to do now (problem may say why) */
  EG_COORD_FOLLOW,  /* follow leader_address */
  EG_COORD_LEAD,    /* this node leads and should: refresh, publish leader_lsn */
  EG_COORD_STAND,   /* take the leader key at epoch (guarded by epoch_mod_revision) */
  EG_COORD_REVOKE,  /* the leader key is this node's from before a restart: revoke lease */
  EG_COORD_DEMOTE,  /* this node is primary but not the leader: restart as a replica */
} eg_coord_action;

typedef struct {
  eg_coord_action action;
  uint64_t epoch;    /* STAND: the epoch to take */
  int64_t lease;     /* REVOKE: the lease to revoke */
  char problem[256]; /* why no node can be promoted, or what is wrong ("" : none) */
} eg_coord_decision;

/* What this node should do now. Ranking: (last_epoch, applied_lsn)
 * highest, then the smaller id. A member has published in this leaderless
 * period when its leaderless_revision > epoch_mod_revision: the epoch key
 * moves in the same transaction that creates a leader key, so a read after
 * it that found no leader came after the last leader's key went (a node
 * that never saw that leader included). A member is a candidate when
 * healthy, published, and leader_lsn - applied_lsn <= max_lag (members
 * that have not published are not ranked at all). This node stands only
 * if it is the best candidate and, before settled, every healthy member
 * has published. STAND's epoch is max(etcd_epoch, the largest epoch or
 * last_epoch any member reports, self_epoch) + 1; when that overflows,
 * nobody stands (problem says so). An unusable leader key (nobody can
 * take it while it is there): a primary goes on leading, the others wait
 * naming it. Another node with this id (eg_coord_twin): a leader goes on
 * leading, any other node waits naming it (never revoking its lease).
 * Pure. */
void eg_coord_decide(const eg_coord_view *v, eg_coord_decision *out);

/* Whether a member value (now) should be put, given the one last put
 * (NULL: none on this lease) since_put_us ago. A change of role, health,
 * epoch or leaderless_revision is put at once; a change of progress
 * alone at once when at_once (a leaderless period: candidates rank by it),
 * else at most every EG_COORD_MEMBER_EVERY_US (a busy node's LSN moves
 * every tick). An unchanged value is not put again. Pure. */
#define EG_COORD_MEMBER_EVERY_US 1000000
int eg_coord_member_due(const eg_coord_member *put, const eg_coord_member *now, int at_once,
                        int64_t since_put_us);

/* Until when (eg_mono_us) this node may acknowledge writes, once etcd
 * answered a grant or keepalive of lease (granted_s seconds) sent at
 * t_sent: etcd started that countdown after t_sent, and stopping at 2/3
 * of it leaves a third of the TTL for clocks and the next node's start.
 * lead_lease: the lease this node's leader key is bound to (0: none). */
int64_t eg_coord_ack_until(int self_primary, int64_t lease, int64_t lead_lease, int64_t t_sent,
                           int64_t granted_s);

#endif
