/* The sweeper thread and its write item (server/sweeper.h). */
#include "server/sweeper.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "replica/replica.h"
#include "common/bgthread.h"
#include "common/log.h"
#include "storage/memories.h"

/* Due ids gathered per scan before deleting any (the scan's cursor must not
 * see its own deletions): bounds the item's memory whatever --sweep-batch. */
#define EG_SWEEP_CHUNK 256

/* The order of a pass: a retired session's purge first (it is due
 * whatever the policy, and finishing it frees its id), then the rest. */
static const unsigned eg_sweep_order[EG_SWEEP_KIND_MAX] = {
    EG_SWEEP_SESSION_PURGE, EG_SWEEP_SESSION_GONE, EG_SWEEP_SESSION_MESSAGES,
    EG_SWEEP_MEMORY_TOMBSTONE, EG_SWEEP_MEMORY_EXPIRE};

/* Where the work stands: the kind being swept (its stage in
 * eg_sweep_order), and the tenant to start
 * from (redo: that tenant itself, which still had due work when the last
 * step ran out of budget; else strictly after it; "" from the first). */
typedef struct {
  unsigned stage;
  char tenant[EG_STORE_ID_MAX + 1];
  int redo;
} eg_sweep_pos;

typedef struct {
  eg_write_item item; /* first: the writer hands back &item */
  eg_sweeper *sw;
  int64_t now_us;
  eg_sweep_pos from; /* read by apply, never changed by it */
  /* What apply found: rewritten in full by every run of apply (the writer
   * may replay it after the map grows), taken by done only on success. */
  eg_sweep_pos to;
  int pass_done;
  /* apply ran to its end and deleted nothing: its EG_ENOTFOUND is that
   * word, not a storage error (see the end of eg_sweep_apply). */
  int nothing;
  uint64_t deleted; /* records deleted, a gone session's messages included */
  uint64_t keys;    /* keys the item's message deletes removed (EG_SWEEP_STEP_KEYS_MAX) */
  int keys_full;    /* a message did not fit EG_SWEEP_STEP_KEYS_MAX: the item ends */
  uint64_t swept[EG_SWEEP_STAT_KINDS];
  uint64_t backlog[EG_SWEEP_STAT_KINDS];
  int backlog_seen[EG_SWEEP_STAT_KINDS]; /* backlog[k] is this step's word */
  /* done's report to the thread; guarded by sw->bg.mu */
  int finished;
  eg_err err;
} eg_sweep_item;

struct eg_sweeper {
  const eg_config *cfg;
  eg_writer *writer;
  const struct eg_repl *repl;
  eg_bgthread bg; /* bg.cv also carries an item's done (eg_sweep_done) */
  eg_sweep_pos pos; /* the sweeper thread's own */
  _Atomic uint64_t swept[EG_SWEEP_STAT_KINDS];
  _Atomic uint64_t backlog[EG_SWEEP_STAT_KINDS];
  _Atomic int64_t last_sweep_us;
};

/* ---- policy ---------------------------------------------------------------- */

eg_err eg_retention_effective(eg_txn *t, const eg_config *cfg, const char *tenant,
                              eg_retention *out) {
  eg_retention_rec *rec = NULL;
  const int64_t defaults[EG_TIERS] = {cfg->expired_session_retention_s,
                                      cfg->raw_message_retention_s,
                                      cfg->memory_tombstone_retention_s};
  eg_err e = eg_store_retention_get(t, tenant, &rec);
  if (e != EG_OK && e != EG_ENOTFOUND) return e;
  const Engram__Storage__V1__RetentionSeconds *v[EG_TIERS] = {NULL, NULL, NULL};
  if (rec) {
    v[EG_TIER_SESSION] = rec->expired_session_retention_s;
    v[EG_TIER_MESSAGES] = rec->raw_message_retention_s;
    v[EG_TIER_TOMBSTONE] = rec->memory_tombstone_retention_s;
  }
  for (int i = 0; i < EG_TIERS; i++) {
    out->is_default[i] = v[i] == NULL;
    out->seconds[i] = v[i] ? v[i]->seconds : defaults[i];
  }
  if (rec) engram__storage__v1__retention_policy_record__free_unpacked(rec, NULL);
  return EG_OK;
}

/* ---- one step: runs on the writer thread ------------------------------------ */

typedef struct {
  char ids[EG_SWEEP_CHUNK][EG_STORE_ID_MAX + 1];
  int64_t due_us[EG_SWEEP_CHUNK];
  size_t n;
} eg_due_ids;

static int eg_due_collect(void *arg, int64_t due_us, const char *id) {
  eg_due_ids *d = arg;
  d->due_us[d->n] = due_us;
  snprintf(d->ids[d->n++], EG_STORE_ID_MAX + 1, "%s", id);
  return 0;
}

static int eg_due_count(void *arg, int64_t due_us, const char *id) {
  (void)due_us;
  (void)id;
  ++*(uint64_t *)arg;
  return 0;
}

/* Retires a session gone past retention: one txn takes its record and
 * every index entry, so no read finds it from then on and no later policy
 * change can leave it half deleted; its messages follow as
 * EG_SWEEP_SESSION_PURGE work. */
static eg_err eg_sweep_session(eg_txn *t, const char *tenant, const char *id, int64_t now_us,
                               uint64_t *deleted, uint64_t *swept) {
  eg_err e = eg_store_session_retire(t, tenant, id, now_us);
  if (e == EG_ENOTFOUND) return EG_OK;
  if (!e) {
    (*deleted)++;
    (*swept)++;
  }
  return e;
}

/* Purges a memory a due entry names; the entry, kept in the same txn as
 * the record, says it is due: the state check only guards that. */
static eg_err eg_sweep_memory(eg_txn *t, unsigned kind, const char *tenant, const char *id,
                              int64_t cutoff_us, uint64_t *deleted, uint64_t *swept) {
  eg_memory_rec *rec = NULL;
  eg_err e = eg_store_memory_get(t, tenant, id, &rec);
  if (e == EG_ENOTFOUND) return EG_OK;
  if (e) return e;
  int due = kind == EG_SWEEP_MEMORY_TOMBSTONE
                ? rec->state != EG_MSTATE_ACTIVE && rec->state_time_us < cutoff_us
                : rec->expire_time_us != 0 && rec->expire_time_us < cutoff_us;
  if (due && (e = eg_store_memory_purge(t, tenant, rec)) == EG_OK) {
    (*deleted)++;
    (*swept)++;
  }
  engram__storage__v1__memory_record__free_unpacked(rec, NULL);
  return e;
}

/* The cutoff of kind for the tenant: entries due before it go. 0 keeps
 * them all (the tier keeps forever). */
static eg_err eg_sweep_cutoff(eg_txn *t, const eg_config *cfg, unsigned kind, const char *tenant,
                              int64_t now_us, int64_t *cutoff_us) {
  eg_retention r;
  int64_t s;
  if (kind == EG_SWEEP_SESSION_PURGE) {
    *cutoff_us = INT64_MAX; /* committed to when the session was retired */
    return EG_OK;
  }
  if (kind == EG_SWEEP_MEMORY_EXPIRE) {
    s = cfg->memory_expired_grace_s;
  } else {
    eg_err e = eg_retention_effective(t, cfg, tenant, &r);
    if (e) return e;
    s = r.seconds[kind == EG_SWEEP_SESSION_GONE      ? EG_TIER_SESSION
                  : kind == EG_SWEEP_SESSION_MESSAGES ? EG_TIER_MESSAGES
                                                      : EG_TIER_TOMBSTONE];
    if (s == 0) {
      *cutoff_us = 0;
      return EG_OK;
    }
  }
  *cutoff_us = now_us - s * 1000000; /* s <= EG_RETENTION_MAX_S: no overflow */
  return EG_OK;
}

/* Sweeps the tenant's due entries of kind within *budget records and the
 * item's key cap. *more: work is left (a limit stopped it). */
static eg_err eg_sweep_tenant(eg_sweep_item *it, eg_txn *t, unsigned kind, const char *tenant,
                              uint64_t *budget, int *more) {
  const eg_config *cfg = it->sw->cfg;
  int64_t cutoff;
  eg_err e = eg_sweep_cutoff(t, cfg, kind, tenant, it->now_us, &cutoff);
  if (e || cutoff <= 0) return e;
  eg_due_ids *due = malloc(sizeof *due);
  if (!due) return EG_ENOMEM;
  *more = 0;
  while (!e && *budget > 0 && !*more) {
    due->n = 0;
    size_t max = *budget < EG_SWEEP_CHUNK ? (size_t)*budget : EG_SWEEP_CHUNK;
    if ((e = eg_store_sweep_scan(t, kind, tenant, cutoff, max, eg_due_collect, due))) break;
    uint64_t before = it->deleted;
    /* Out of records, the loop ends: the next session gets no message. */
    for (size_t i = 0; !e && i < due->n && !*more && *budget > 0; i++) {
      if (kind == EG_SWEEP_SESSION_PURGE || kind == EG_SWEEP_SESSION_MESSAGES) {
        uint64_t n = 0;
        const size_t room = (size_t)*budget;
        e = kind == EG_SWEEP_SESSION_PURGE
                ? eg_store_session_purge_step(t, tenant, due->ids[i], due->due_us[i], room,
                                              EG_SWEEP_STEP_KEYS_MAX, &it->keys, &n, more)
                : eg_store_messages_delete_before(t, tenant, due->ids[i], cutoff, room,
                                                  EG_SWEEP_STEP_KEYS_MAX, &it->keys, &n, more);
        it->swept[kind] += n;
        it->deleted += n;
        *budget -= n < *budget ? n : *budget;
        /* Stopped with records to spare and a message left: the key cap
         * stopped it, and so the whole item. */
        if (!e && *more && n < room) it->keys_full = 1;
      } else if (kind == EG_SWEEP_SESSION_GONE) {
        e = eg_sweep_session(t, tenant, due->ids[i], it->now_us, &it->deleted,
                             &it->swept[kind]);
        (*budget)--;
      } else {
        e = eg_sweep_memory(t, kind, tenant, due->ids[i], cutoff, &it->deleted,
                            &it->swept[kind]);
        (*budget)--;
      }
    }
  /* A scan that freed nothing (it cannot, while storage keeps the index
     * with the records) must not spin: leave the rest to the next pass. */
    if (due->n < max || it->deleted == before) break;
  }
  free(due);
  if (!e && (*more || *budget == 0)) {
    /* Stopped by the budget: how much is still due, counted no further
     * than one more step could take (a bounded look). */
    uint64_t left = 0;
    e = eg_store_sweep_scan(t, kind, tenant, cutoff, (size_t)cfg->sweep_batch, eg_due_count,
                            &left);
    *more = left > 0;
    it->backlog[kind] += left;
    it->backlog_seen[kind] = 1;
  }
  return e;
}

/* Deletes store items past their TTL, at most max of them, out of
 * *budget; *more: some are left. */
static eg_err eg_sweep_store(eg_sweep_item *it, eg_txn *t, uint64_t max, uint64_t *budget,
                             int *more) {
  uint64_t n = 0;
  eg_err e = eg_store_items_expire(t, it->now_us, (size_t)max, &n, more);
  it->swept[EG_SWEEP_STORE_EXPIRE] += n;
  it->deleted += n;
  *budget -= n < *budget ? n : *budget;
  return e;
}

static int eg_first_tenant(void *arg, const char *tenant) {
  snprintf(arg, EG_STORE_ID_MAX + 1, "%s", tenant);
  return 1;
}

static eg_err eg_sweep_apply(eg_write_item *item, eg_txn *t) {
  eg_sweep_item *it = (eg_sweep_item *)item;
  uint64_t budget = (uint64_t)it->sw->cfg->sweep_batch;
  eg_err e = EG_OK;
  it->to = it->from;
  it->pass_done = 0;
  it->nothing = 0;
  it->deleted = 0;
  it->keys = 0;
  it->keys_full = 0;
  memset(it->swept, 0, sizeof it->swept);
  memset(it->backlog, 0, sizeof it->backlog);
  memset(it->backlog_seen, 0, sizeof it->backlog_seen);
  eg_sweep_pos *p = &it->to;
  /* Store items past their TTL (their own expiry index, not a sweep_due
   * kind: storage/store_items.h) take at most half of the step first, so
   * a backlog of them never starves the retention tiers... */
  int more_expired = 0;
  if ((e = eg_sweep_store(it, t, (budget + 1) / 2, &budget, &more_expired))) return e;
  while (budget > 0 && !it->keys_full && p->stage < EG_SWEEP_KIND_MAX) {
    const unsigned kind = eg_sweep_order[p->stage];
    char tenant[EG_STORE_ID_MAX + 1] = "";
    if (p->redo) {
      snprintf(tenant, sizeof tenant, "%s", p->tenant);
    } else if ((e = eg_store_sweep_tenants(t, kind, p->tenant[0] ? p->tenant : NULL,
                                           eg_first_tenant, tenant))) {
      return e;
    }
    if (!tenant[0]) {
      /* This kind is done for this pass: nothing of it is left waiting. */
      if (!it->backlog_seen[kind]) it->backlog_seen[kind] = 1;
      p->stage++;
      p->tenant[0] = '\0';
      p->redo = 0;
      continue;
    }
    budget--; /* looking at a tenant costs a seek or two */
    int more = 0;
    if ((e = eg_sweep_tenant(it, t, kind, tenant, &budget, &more))) return e;
    snprintf(p->tenant, sizeof p->tenant, "%s", tenant);
    p->redo = more;
  }
  if (p->stage == EG_SWEEP_KIND_MAX) {
    it->pass_done = 1;
    *p = (eg_sweep_pos){.stage = 0};
  }
  /* ...and what the tiers left: with nothing else due, a backlog of them
   * goes at the whole pace of --sweep-batch. Then how many are still due,
   * counted no further than one more step could take (a bounded look). */
  if (more_expired && budget > 0 && !it->keys_full &&
      (e = eg_sweep_store(it, t, budget, &budget, &more_expired)))
    return e;
  it->backlog[EG_SWEEP_STORE_EXPIRE] = 0;
  it->backlog_seen[EG_SWEEP_STORE_EXPIRE] = 1;
  if (more_expired &&
      (e = eg_store_items_expiring(t, it->now_us, (size_t)it->sw->cfg->sweep_batch,
                                   &it->backlog[EG_SWEEP_STORE_EXPIRE])))
    return e;
  /* Nothing deleted: say so with an error, so the writer rolls the nested
   * txn back and, alone in its batch, commits nothing (no empty log
   * record every interval). it->nothing tells the step it is no failure,
   * apart from an EG_ENOTFOUND a storage call returned above. */
  it->nothing = !it->deleted;
  return it->deleted ? EG_OK : EG_ENOTFOUND;
}

static void eg_sweep_done(eg_write_item *item, eg_err err, uint64_t lsn, int busy) {
  eg_sweep_item *it = (eg_sweep_item *)item;
  (void)lsn;
  (void)busy;
  pthread_mutex_lock(&it->sw->bg.mu);
  it->err = err;
  it->finished = 1;
  pthread_cond_broadcast(&it->sw->bg.cv);
  pthread_mutex_unlock(&it->sw->bg.mu);
}

/* ---- the thread --------------------------------------------------------------- */

const char *eg_sweep_kind_name(unsigned kind) {
  static const char *const names[EG_SWEEP_STAT_KINDS] = {
      "",          "session_gone",  "session_messages", "memory_tombstone",
      "memory_expire", "session_purge", "store_expire"};
  return kind < EG_SWEEP_STAT_KINDS ? names[kind] : "";
}

/* One step: submits the item, waits for its commit, takes its results. */
static void eg_sweeper_step(eg_sweeper *s) {
  eg_sweep_item it = {.item = {.apply = eg_sweep_apply, .done = eg_sweep_done},
                      .sw = s,
                      .now_us = eg_now_us(),
                      .from = s->pos};
  eg_writer_submit(s->writer, &it.item);
  pthread_mutex_lock(&s->bg.mu);
  while (!it.finished) pthread_cond_wait(&s->bg.cv, &s->bg.mu);
  pthread_mutex_unlock(&s->bg.mu);
  if (it.err != EG_OK && !(it.err == EG_ENOTFOUND && it.nothing)) {
    /* Left where it was: the next step tries the same work again. */
    eg_log(EG_LOG_WARN, "sweeper: %s (kind %s): %s; retrying next interval",
           it.from.tenant[0] ? it.from.tenant : "-",
           eg_sweep_kind_name(eg_sweep_order[it.from.stage]),
           eg_err_msg(it.err));
    return;
  }
  s->pos = it.to;
  for (unsigned k = 1; k < EG_SWEEP_STAT_KINDS; k++) {
    if (it.swept[k]) atomic_fetch_add_explicit(&s->swept[k], it.swept[k], memory_order_relaxed);
    if (it.backlog_seen[k])
      atomic_store_explicit(&s->backlog[k], it.backlog[k], memory_order_relaxed);
  }
  if (it.pass_done) atomic_store_explicit(&s->last_sweep_us, eg_now_us(), memory_order_relaxed);
}

static void *eg_sweeper_main(void *arg) {
  eg_sweeper *s = arg;
  pthread_mutex_lock(&s->bg.mu);
  while (!s->bg.stopping) {
    pthread_mutex_unlock(&s->bg.mu);
    /* A fenced primary may be deposed already: what it wrote now would
     * only part its log from the next primary's. It sweeps nothing. */
    if (eg_repl_is_primary(s->repl) && !eg_repl_fenced(s->repl)) eg_sweeper_step(s);
    pthread_mutex_lock(&s->bg.mu);
    eg_bgthread_sleep(&s->bg, s->cfg->sweep_interval_ms);
  }
  pthread_mutex_unlock(&s->bg.mu);
  return NULL;
}

eg_err eg_sweeper_start(const eg_config *cfg, eg_writer *writer, const struct eg_repl *repl,
                        eg_sweeper **out, char *err, size_t errlen) {
  eg_sweeper *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "cannot start the sweeper thread: out of memory");
    return EG_ENOMEM;
  }
  *s = (eg_sweeper){.cfg = cfg, .writer = writer, .repl = repl, .pos = {.stage = 0}};
  eg_err e = eg_bgthread_start(&s->bg, eg_sweeper_main, s, "sweeper", "sweeper", err, errlen);
  if (e != EG_OK) {
    free(s);
    return e;
  }
  *out = s;
  return EG_OK;
}

void eg_sweeper_stop(eg_sweeper *s) {
  if (!s) return;
  eg_bgthread_stop(&s->bg);
  free(s);
}

void eg_sweeper_get_stats(const eg_sweeper *s, eg_sweeper_stats *out) {
  memset(out, 0, sizeof *out);
  if (!s) return;
  for (unsigned k = 1; k < EG_SWEEP_STAT_KINDS; k++) {
    out->swept[k] = atomic_load_explicit(&s->swept[k], memory_order_relaxed);
    out->backlog[k] = atomic_load_explicit(&s->backlog[k], memory_order_relaxed);
  }
  out->last_sweep_us = atomic_load_explicit(&s->last_sweep_us, memory_order_relaxed);
}
