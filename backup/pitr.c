/* Point-in-time restore: replays the WAL archive onto a base
 * (backup/walarchive.h). A check pass reads every record the replay will
 * need before the store is written, so a gap, a corrupt frame or a target
 * out of reach refuses the restore with the data dir untouched. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backup/walarchive.h"
#include "crypto/crypto.h"
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
    eg_walseg_r *r = NULL;
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

/* What a replay knows of its base: its LSN and epoch, and of its own
 * record at that LSN the time (0: not known) and, with have_rec, the
 * SHA-256. */
typedef struct {
  uint64_t lsn, epoch;
  int64_t time_us;
  int have_rec;
  uint8_t digest[32];
} eg_pitr_base;

static void eg_time_text(int64_t us, char out[40]) {
  time_t t = (time_t)(us / 1000000);
  struct tm tm;
  char day[24];
  gmtime_r(&t, &tm);
  strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out, 40, "%s.%06dZ", day, (int)(us % 1000000));
}

static void eg_rec_digest(const uint8_t *rec, size_t len, uint8_t out[32]) {
  eg_sha256 h;
  eg_sha256_init(&h);
  eg_sha256_update(&h, rec, len);
  eg_sha256_final(&h, out);
}

/* The record a walk of one LSN saw. */
typedef struct {
  eg_wal_head h;
  uint8_t digest[32];
} eg_rec_seen;

static eg_err eg_see(void *arg, const uint8_t *rec, size_t len, const eg_wal_head *h) {
  eg_rec_seen *seen = arg;
  seen->h = *h;
  eg_rec_digest(rec, len, seen->digest);
  return EG_OK;
}

/* Checks that the base lies on the archive's history: the archive holds
 * the base's LSN in the base's epoch with the base's record bytes (a base
 * from the side a promotion left, or from a fork of the same epoch, has
 * other ones there, and replaying the archive onto it would splice two
 * histories). An archive that starts right after the base cannot show the
 * link: it is taken when its epoch is not older (*unchecked = 1). Fills a
 * missing b->time_us from the archive's copy of the base's record. */
static eg_err eg_pitr_link(const eg_archive *a, eg_pitr_base *b, int *unchecked, char *why,
                           size_t whylen) {
  const eg_walseg_piece *at = NULL, *next = NULL;
  *unchecked = 0;
  if (b->lsn == 0) return EG_OK; /* an empty base: every history starts from it */
  for (size_t i = 0; i < a->np && !next; i++) {
    if (a->pieces[i].from <= b->lsn && a->pieces[i].to >= b->lsn) at = &a->pieces[i];
    if (a->pieces[i].to > b->lsn) next = &a->pieces[i];
  }
  if (at) {
    eg_rec_seen seen;
    eg_walk_end end;
    eg_err e = eg_walk(a, b->lsn, b->lsn, 0, 0, eg_see, &seen, &end, why, whylen);
    if (e) return e;
    if (seen.h.epoch != b->epoch) {
      snprintf(why, whylen, "the base is not on the archive's history: the archive's record at "
               "the base's lsn %llu (segment %s) is of epoch %llu, the base's of epoch %llu (a "
               "base from the side a promotion left, or an archive of another history): take "
               "a base from the archive's history", (unsigned long long)b->lsn,
               a->segs[at->seg].name, (unsigned long long)seen.h.epoch,
               (unsigned long long)b->epoch);
      return EG_EPRECOND;
    }
    if (b->have_rec && memcmp(seen.digest, b->digest, sizeof seen.digest) != 0) {
      snprintf(why, whylen, "the base is not on the archive's history: the archive's record at "
               "the base's lsn %llu (segment %s, epoch %llu) differs from the base's own (two "
               "histories that forked in one epoch): take a base from the archive's history",
               (unsigned long long)b->lsn, a->segs[at->seg].name, (unsigned long long)b->epoch);
      return EG_EPRECOND;
    }
    if (!b->time_us) b->time_us = seen.h.time_us;
    return EG_OK;
  }
  if (next && next->from == b->lsn + 1 && a->segs[next->seg].epoch >= b->epoch) {
    *unchecked = 1;
    return EG_OK;
  }
  if (!a->np)
    snprintf(why, whylen, "the archive holds no records");
  else if (next && next->from == b->lsn + 1)
    snprintf(why, whylen, "the archive starts right after the base (lsn %llu) with epoch %llu, "
             "older than the base's %llu", (unsigned long long)b->lsn,
             (unsigned long long)a->segs[next->seg].epoch, (unsigned long long)b->epoch);
  else
    snprintf(why, whylen, "the archive does not hold the base's lsn %llu (it holds lsn "
             "%llu..%llu): whether the base is on its history cannot be checked",
             (unsigned long long)b->lsn, (unsigned long long)a->pieces[0].from,
             (unsigned long long)a->pieces[a->np - 1].to);
  return EG_EPRECOND;
}

/* The check pass: the base's link to the archive, then every record from
 * base + 1 to the target read and checked, nothing written; *end is where
 * the replay will stop. */
static eg_err eg_pitr_plan(const eg_archive *a, eg_pitr_base *b, const eg_pitr_target *target,
                           eg_walk_end *end, int *unchecked, char *why, size_t whylen) {
  uint64_t tip = a->np ? a->pieces[a->np - 1].to : 0, base = b->lsn;
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
  eg_err e = eg_pitr_link(a, b, unchecked, why, whylen);
  if (e) return e;
  /* The base already holds everything up to its own last record: a time
   * before that cannot be reached from it (the walk would stop at once and
   * hand back the base, later writes included). */
  if (target->to_time_us && b->time_us && target->to_time_us < b->time_us) {
    char want[40], have[40];
    eg_time_text(target->to_time_us, want);
    eg_time_text(b->time_us, have);
    snprintf(why, whylen, "target time %s is before the base's time %s (its last record, lsn "
             "%llu, was written then): a point before it needs an older base", want, have,
             (unsigned long long)base);
    return EG_EPRECOND;
  }
  uint64_t to = target->to_lsn ? target->to_lsn : UINT64_MAX;
  e = eg_walk(a, base + 1, to, target->to_time_us, b->epoch, NULL, NULL, end, why, whylen);
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
  eg_pitr_base b = {.lsn = base_lsn, .epoch = base_epoch};
  int unchecked;
  eg_err e = eg_archive_open(archive_dir, &a, why, whylen);
  if (e) return e;
  e = eg_pitr_plan(&a, &b, target, &end, &unchecked, why, whylen);
  eg_archive_close(&a);
  if (e) return e;
  *res = (eg_pitr_result){.base_lsn = base_lsn, .lsn = end.last, .epoch = end.epoch,
                          .time_us = end.last > base_lsn ? end.time_us : 0,
                          .records = end.last - base_lsn, .link_unchecked = unchecked};
  return EG_OK;
}

/* The base as the store s holds it: its last record's epoch, time and
 * digest when the log still has it; else the store's epoch and
 * fallback_time_us. */
static eg_err eg_pitr_base_of(eg_store *s, int64_t fallback_time_us, eg_pitr_base *b, char *why,
                              size_t whylen) {
  eg_txn *t = NULL;
  const uint8_t *rec;
  size_t len;
  uint64_t epoch;
  eg_wal_head h;
  *b = (eg_pitr_base){.lsn = eg_store_last_lsn(s), .epoch = eg_store_epoch(s),
                      .time_us = fallback_time_us};
  if (b->lsn == 0) return EG_OK;
  eg_err e = eg_store_reader_new(s, &t);
  if (!e && (e = eg_store_reader_begin(t)) == EG_OK) {
    e = eg_store_wal_epoch_at(t, b->lsn, &epoch, &rec, &len);
    if (!e && eg_store_wal_head(rec, len, &h) == EG_OK) {
      *b = (eg_pitr_base){.lsn = b->lsn, .epoch = h.epoch, .time_us = h.time_us, .have_rec = 1};
      eg_rec_digest(rec, len, b->digest);
    }
    if (e == EG_ENOTFOUND) e = EG_OK; /* trimmed: the fallback time bounds it */
    eg_store_reader_end(t);
  }
  if (t) eg_store_reader_free(t);
  if (e) snprintf(why, whylen, "reading the base's last record: %s", eg_err_msg(e));
  return e;
}

eg_err eg_pitr_replay(const char *data_dir, const char *archive_dir, int64_t base_time_us,
                      const eg_pitr_target *target, eg_pitr_result *res, char *why,
                      size_t whylen) {
  eg_archive a;
  eg_store *s = NULL;
  eg_walk_end end;
  eg_pitr_base b;
  int unchecked = 0;
  char err[512];
  eg_err e = eg_archive_open(archive_dir, &a, why, whylen);
  if (e) return e;
  if ((e = eg_store_open(data_dir, &(eg_store_opts){0}, &s, err, sizeof err)) != EG_OK) {
    snprintf(why, whylen, "%s", err);
    goto out;
  }
  if ((e = eg_pitr_base_of(s, base_time_us, &b, why, whylen))) goto out;
  if ((e = eg_pitr_plan(&a, &b, target, &end, &unchecked, why, whylen))) goto out;
  if (end.last > b.lsn && (e = eg_replay_all(s, &a, end.last, b.epoch, why, whylen)) != EG_OK)
    goto out;
  *res = (eg_pitr_result){.base_lsn = b.lsn, .lsn = eg_store_last_lsn(s),
                          .epoch = eg_store_epoch(s),
                          .time_us = end.last > b.lsn ? end.time_us : 0,
                          .link_unchecked = unchecked};
  res->records = res->lsn - b.lsn;
out:
  eg_store_close(s);
  eg_archive_close(&a);
  return e;
}
