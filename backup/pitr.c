/* Point-in-time restore: replays the WAL archive onto a base
 * (backup/walarchive.h). A check pass reads every record the replay will
 * need before the store is written, so a gap, a corrupt frame or a target
 * out of reach refuses the restore with the data dir untouched. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup/walarchive.h"
#include "storage/storage.h"

typedef struct {
  const char *dir;
  const eg_walseg_info *segs;
  const eg_walseg_piece *pieces;
  size_t np;
} eg_archive;

/* What a walk visits with; returns EG_OK to go on. */
typedef eg_err (*eg_walk_fn)(void *arg, const uint8_t *rec, size_t len, const eg_wal_head *h);

/* Where a walk stopped: the last LSN visited (start - 1: none), its epoch
 * and time, and whether it reached the time target (the next record was
 * written after it). */
typedef struct {
  uint64_t last, epoch;
  int64_t time_us;
  int time_reached;
} eg_walk_end;

/* Visits the archive's records start..to_lsn (UINT64_MAX: to its end), or
 * up to the last written at or before to_time_us (0: none), in order.
 * EG_EPRECOND on a gap before the stop; EG_ECORRUPT on a bad record. */
static eg_err eg_walk(const eg_archive *a, uint64_t start, uint64_t to_lsn, int64_t to_time_us,
                      uint64_t min_epoch, eg_walk_fn fn, void *arg, eg_walk_end *end, char *why,
                      size_t whylen) {
  uint64_t next = start;
  *end = (eg_walk_end){.last = start - 1, .epoch = min_epoch};
  for (size_t i = 0; i < a->np && next <= to_lsn; i++) {
    const eg_walseg_piece *p = &a->pieces[i];
    if (p->to < next) continue;
    if (p->from > next) {
      snprintf(why, whylen, "the archive has a gap: lsn %llu..%llu are missing (the next "
               "segment, %s, starts at lsn %llu)", (unsigned long long)next,
               (unsigned long long)(p->from - 1), a->segs[p->seg].name, (unsigned long long)p->from);
      return EG_EPRECOND;
    }
    eg_walseg_r *r;
    eg_err e = eg_walseg_open(a->dir, a->segs[p->seg].name, &r, why, whylen);
    while (!e && next <= p->to && next <= to_lsn) {
      uint64_t lsn;
      const uint8_t *rec;
      size_t len;
      eg_wal_head h;
      char sub[256];
      if ((e = eg_walseg_next(r, &lsn, &rec, &len, sub, sizeof sub)) != EG_OK) {
        if (e == EG_ENOTFOUND) e = EG_ECORRUPT, snprintf(sub, sizeof sub, "ends before lsn %llu", (unsigned long long)next);
        snprintf(why, whylen, "segment %s: %s", a->segs[p->seg].name, sub);
        break;
      }
      if (lsn < next) continue; /* before the base, or cut by a later segment */
      if (eg_store_wal_head(rec, len, &h) != EG_OK || h.lsn != lsn) {
        snprintf(why, whylen, "segment %s: record at lsn %llu does not decode",
                 a->segs[p->seg].name, (unsigned long long)lsn);
        e = EG_ECORRUPT;
        break;
      }
      if (h.epoch < end->epoch) {
        snprintf(why, whylen, "segment %s: record at lsn %llu has epoch %llu, older than %llu "
                 "before it", a->segs[p->seg].name, (unsigned long long)lsn,
                 (unsigned long long)h.epoch, (unsigned long long)end->epoch);
        e = EG_ECORRUPT;
        break;
      }
      if (to_time_us && h.time_us > to_time_us) {
        end->time_reached = 1;
        break;
      }
      if (fn && (e = fn(arg, rec, len, &h)) != EG_OK) {
        snprintf(why, whylen, "applying lsn %llu: %s", (unsigned long long)lsn, eg_err_msg(e));
        break;
      }
      *end = (eg_walk_end){.last = lsn, .epoch = h.epoch, .time_us = h.time_us};
      next = lsn + 1;
    }
    eg_walseg_close_r(r);
    if (e) return e;
    if (end->time_reached) break;
  }
  return EG_OK;
}

/* The replay's write side: a txn of at most EG_PITR_BATCH records. */
typedef struct {
  eg_store *s;
  eg_txn *w;
  size_t n;
  uint64_t erasure; /* last erasure LSN applied in w (0: none) */
} eg_replay;

static eg_err eg_replay_commit(eg_replay *rp) {
  eg_err e = EG_OK;
  if (!rp->w) return EG_OK;
  /* An erasure drops the older records, as on every engramd node: the
   * erased data must not live on in the restored log. */
  if (rp->erasure) e = eg_store_wal_trim(rp->w, rp->erasure, SIZE_MAX, NULL);
  if (!e) e = eg_store_write_commit(rp->w, NULL);
  else eg_store_write_abort(rp->w);
  rp->w = NULL;
  rp->n = 0;
  rp->erasure = 0;
  return e;
}

static eg_err eg_replay_one(void *arg, const uint8_t *rec, size_t len, const eg_wal_head *h) {
  eg_replay *rp = arg;
  eg_err e;
  if (!rp->w && (e = eg_store_write_begin(rp->s, &rp->w)) != EG_OK) return e;
  if ((e = eg_store_wal_apply(rp->w, rec, len)) != EG_OK) return e;
  if (h->erasure) rp->erasure = h->lsn;
  return ++rp->n == EG_PITR_BATCH ? eg_replay_commit(rp) : EG_OK;
}

/* Replays base + 1..to (checked already), growing the map when it fills. */
static eg_err eg_replay_all(eg_store *s, const eg_archive *a, uint64_t to, uint64_t epoch,
                            char *why, size_t whylen) {
  eg_replay rp = {.s = s};
  eg_walk_end end;
  for (;;) {
    uint64_t from = eg_store_last_lsn(s) + 1;
    eg_err e = eg_walk(a, from, to, 0, epoch, eg_replay_one, &rp, &end, why, whylen);
    if (!e) e = eg_replay_commit(&rp);
    if (e != EG_EMAPFULL) return e;
    /* The txn in flight is lost: grow, then go on from what committed. */
    if (rp.w) eg_store_write_abort(rp.w);
    rp = (eg_replay){.s = s};
    if ((e = eg_store_grow(s)) != EG_OK) {
      snprintf(why, whylen, "cannot grow the storage map: %s", eg_err_msg(e));
      return e;
    }
  }
}

/* The archive in dir, listed and put in history order. */
static eg_err eg_archive_open(const char *dir, eg_archive *a, char *why, size_t whylen) {
  eg_walseg_info *segs = NULL;
  size_t n = 0;
  *a = (eg_archive){.dir = dir};
  eg_err e = eg_walseg_list(dir, &segs, &n, why, whylen);
  if (e) return e;
  eg_walseg_piece *pieces = n ? malloc(n * sizeof *pieces) : NULL;
  if (n && !pieces) {
    free(segs);
    snprintf(why, whylen, "out of memory");
    return EG_ENOMEM;
  }
  *a = (eg_archive){.dir = dir, .segs = segs, .pieces = pieces,
                    .np = n ? eg_walseg_chain(segs, n, pieces) : 0};
  return EG_OK;
}

static void eg_archive_close(eg_archive *a) {
  free((void *)a->pieces);
  free((void *)a->segs);
}

/* The check pass: every record from base + 1 to the target read and
 * checked, nothing written; *end is where the replay will stop. */
static eg_err eg_pitr_plan(const eg_archive *a, uint64_t base, uint64_t epoch,
                           const eg_pitr_target *target, eg_walk_end *end, char *why,
                           size_t whylen) {
  uint64_t tip = a->np ? a->pieces[a->np - 1].to : 0;
  if (target->to_lsn && target->to_lsn < base) {
    snprintf(why, whylen, "target lsn %llu is before the base (lsn %llu)",
             (unsigned long long)target->to_lsn, (unsigned long long)base);
    return EG_EPRECOND;
  }
  if (target->to_lsn > tip) {
    snprintf(why, whylen, "target lsn %llu is past the archive's end (lsn %llu)",
             (unsigned long long)target->to_lsn, (unsigned long long)tip);
    return EG_EPRECOND;
  }
  uint64_t to = target->to_lsn ? target->to_lsn : UINT64_MAX;
  eg_err e = eg_walk(a, base + 1, to, target->to_time_us, epoch, NULL, NULL, end, why, whylen);
  if (e) return e;
  if (target->to_time_us && !end->time_reached) {
    snprintf(why, whylen, "target time is past the archive's end (its last record, lsn %llu, "
             "was written before it): more records may exist that it does not hold",
             (unsigned long long)end->last);
    return EG_EPRECOND;
  }
  return EG_OK;
}

eg_err eg_pitr_check(const char *archive_dir, uint64_t base_lsn, uint64_t base_epoch,
                     const eg_pitr_target *target, eg_pitr_result *res, char *why, size_t whylen) {
  eg_archive a;
  eg_walk_end end;
  eg_err e = eg_archive_open(archive_dir, &a, why, whylen);
  if (e) return e;
  e = eg_pitr_plan(&a, base_lsn, base_epoch, target, &end, why, whylen);
  eg_archive_close(&a);
  if (e) return e;
  *res = (eg_pitr_result){.base_lsn = base_lsn, .lsn = end.last, .epoch = end.epoch,
                          .time_us = end.last > base_lsn ? end.time_us : 0,
                          .records = end.last - base_lsn};
  return EG_OK;
}

eg_err eg_pitr_replay(const char *data_dir, const char *archive_dir, const eg_pitr_target *target,
                      eg_pitr_result *res, char *why, size_t whylen) {
  eg_archive a;
  eg_store *s = NULL;
  eg_walk_end end;
  char err[512];
  eg_err e = eg_archive_open(archive_dir, &a, why, whylen);
  if (e) return e;
  if ((e = eg_store_open(data_dir, &(eg_store_opts){0}, &s, err, sizeof err)) != EG_OK) {
    snprintf(why, whylen, "%s", err);
    goto out;
  }
  uint64_t base = eg_store_last_lsn(s), epoch = eg_store_epoch(s);
  if ((e = eg_pitr_plan(&a, base, epoch, target, &end, why, whylen))) goto out;
  if (end.last > base && (e = eg_replay_all(s, &a, end.last, epoch, why, whylen)) != EG_OK) goto out;
  *res = (eg_pitr_result){.base_lsn = base, .lsn = eg_store_last_lsn(s), .epoch = eg_store_epoch(s),
                          .time_us = end.last > base ? end.time_us : 0};
  res->records = res->lsn - base;
out:
  eg_store_close(s);
  eg_archive_close(&a);
  return e;
}
