/* The WAL archiver thread (server/archiver.h). */
#include "server/archiver.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backup/walarchive.h"
#include "common/clock.h"
#include "crypto/crypto.h"
#include "common/bgthread.h"
#include "common/log.h"

/* One batch: what one read txn copies out, at most this many records and
 * (but for a single larger record) bytes. The archiver writes and fsyncs
 * the batch only after the txn has ended, so a slow or stuck archive disk
 * never keeps a snapshot (or the map lock a snapshot takes) open. */
#define EG_ARCHIVE_BATCH 1024
#define EG_ARCHIVE_BATCH_BYTES ((size_t)16 << 20)
/* Longest wait for a commit: also how late an idle segment is closed past
 * --wal-archive-segment-s, and how late a stop is seen. */
#define EG_ARCHIVE_WAIT_MS 500
#define EG_ARCHIVE_BACKOFF_MIN_MS 100
#define EG_ARCHIVE_BACKOFF_MAX_MS 5000
/* How long a stop waits for the final pass (archiving what is committed,
 * closing the segment). Past it (a stuck archive disk, a long backlog)
 * engramd stops without it: the log keeps what was not archived, and the
 * next start archives it and finishes the open segment. */
#define EG_ARCHIVE_STOP_MS 10000

/* A record of the batch: its bytes are buf[off .. off + len). */
typedef struct {
  uint64_t lsn, epoch;
  size_t off, len;
} eg_arch_rec;

struct eg_archiver {
  char dir[EG_CONFIG_PATH_MAX];
  eg_store *store;
  uint64_t seg_records;
  int64_t seg_us;
  int lock_fd; /* flock'd dir/LOCK: one archiver per dir */
  eg_bgthread bg;
  /* Held by the thread while it touches the store; a stop that gives up
   * on the thread sets abandoned under it, after which the thread leaves
   * the store (soon closed) alone. */
  pthread_mutex_t store_mu;
  _Atomic int abandoned;
  /* the thread's own */
  eg_txn *reader;
  eg_walseg_w *seg;      /* after a failure: to be rolled back by the resume */
  int64_t seg_opened_us; /* eg_mono_us() at the segment's first record */
  uint64_t next;         /* the next LSN to archive */
  uint64_t resumed_from; /* where the last resume went on from */
  int need_resume;       /* find the tip again (at start, after an error) */
  int refused;           /* the dir holds another history: nothing more is done */
  eg_arch_rec recs[EG_ARCHIVE_BATCH];
  uint8_t *buf;
  size_t cap;
  char why[512];
  /* for any thread */
  /* The first LSN not yet archived: the writer may trim below it, and
   * everything before it is in the archive. */
  _Atomic uint64_t hold;
  _Atomic uint64_t segments, errors, gaps;
  char problem[512]; /* guarded by bg.mu */
  int done;          /* the thread has ended; guarded by bg.mu */
};

/* Says line on stderr and makes it the current problem, once per line. */
static void eg_arch_problem(eg_archiver *a, const char *line) {
  pthread_mutex_lock(&a->bg.mu);
  int fresh = strcmp(a->problem, line) != 0;
  snprintf(a->problem, sizeof a->problem, "%s", line);
  pthread_mutex_unlock(&a->bg.mu);
  if (fresh) eg_log(EG_LOG_WARN, "WAL archive %s: %s", a->dir, line);
}

static void eg_arch_ok(eg_archiver *a) {
  pthread_mutex_lock(&a->bg.mu);
  int was = a->problem[0] != '\0';
  a->problem[0] = '\0';
  pthread_mutex_unlock(&a->bg.mu);
  if (was)
    eg_log(EG_LOG_INFO, "WAL archive %s: archiving again from lsn %llu", a->dir,
           (unsigned long long)a->resumed_from);
}

/* The log no longer holds a record the archive needs: say so, loudly. */
static void eg_arch_gap(eg_archiver *a, uint64_t from, uint64_t to, const char *cause) {
  char line[256];
  atomic_fetch_add(&a->gaps, 1);
  snprintf(line, sizeof line, "GAP: lsn %llu..%llu are no longer in the log (%s); the archive "
           "goes on from lsn %llu, and a restore cannot replay across the gap: take a new base "
           "backup", (unsigned long long)from, (unsigned long long)to, cause,
           (unsigned long long)(to + 1));
  eg_log(EG_LOG_WARN, "WAL archive %s: %s", a->dir, line);
}

static void eg_arch_set_next(eg_archiver *a, uint64_t next) {
  a->next = next;
  atomic_store(&a->hold, next);
}

/* Takes store_mu for a stretch that touches the store: EG_EUNAVAIL (not
 * taken) once a stop has given up on the thread. */
static eg_err eg_arch_store_enter(eg_archiver *a) {
  pthread_mutex_lock(&a->store_mu);
  if (!atomic_load(&a->abandoned)) return EG_OK;
  pthread_mutex_unlock(&a->store_mu);
  snprintf(a->why, sizeof a->why, "stopped");
  return EG_EUNAVAIL;
}

static void eg_arch_store_leave(eg_archiver *a) { pthread_mutex_unlock(&a->store_mu); }

static eg_err eg_arch_close_seg(eg_archiver *a) {
  if (!a->seg) return EG_OK;
  uint64_t n = eg_walseg_count(a->seg);
  /* On failure the segment stays, for the resume to roll back. */
  eg_err e = eg_walseg_close(a->seg, a->why, sizeof a->why);
  if (e) return e;
  a->seg = NULL;
  if (n) atomic_fetch_add(&a->segments, 1);
  return EG_OK;
}

/* The archive's tip as the dir stands: its last LSN (0: empty), that
 * record's epoch and segment. Reads only. */
static eg_err eg_arch_tip(eg_archiver *a, uint64_t *tip, uint64_t *epoch,
                          char name[EG_WALSEG_NAME_MAX]) {
  eg_walseg_info *segs = NULL;
  eg_walseg_piece *pieces = NULL;
  size_t n = 0;
  *tip = *epoch = 0;
  eg_err e = eg_walseg_list(a->dir, &segs, &n, a->why, sizeof a->why);
  if (!e && n && !(pieces = malloc(n * sizeof *pieces))) e = EG_ENOMEM;
  if (!e && n) {
    size_t np = eg_walseg_chain(segs, n, pieces);
    if (np) {
      const eg_walseg_info *s = &segs[pieces[np - 1].seg];
      *tip = pieces[np - 1].to;
      *epoch = s->epoch;
      memcpy(name, s->name, EG_WALSEG_NAME_MAX);
    }
  }
  free(pieces);
  free(segs);
  return e;
}

/* With the reader open: the first LSN in lo..hi whose record has an epoch
 * above epoch (the one at hi has). Epochs never go down along the log. */
static uint64_t eg_arch_fork(eg_archiver *a, uint64_t lo, uint64_t hi, uint64_t epoch) {
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2, at = 0;
    if (eg_store_wal_epoch_at(a->reader, mid, &at, NULL, NULL) == EG_OK && at > epoch)
      hi = mid;
    else
      lo = mid + 1;
  }
  return hi;
}

/* The dir holds a history this node's log is not on: nothing is written
 * to it, for good (a restart with another dir is the way on). */
static eg_err eg_arch_refuse(eg_archiver *a, uint64_t tip, uint64_t tip_epoch, const char *how) {
  a->refused = 1;
  atomic_fetch_add(&a->gaps, 1);
  snprintf(a->why, sizeof a->why,
           "REFUSED: the archive holds another history: it ends at lsn %llu (epoch %llu) but "
           "this node's log %.160s; nothing is archived into this dir (the log keeps its "
           "records, up to --wal-retain-cap): a restored node needs a new archive dir, and a "
           "dir is for one node", (unsigned long long)tip, (unsigned long long)tip_epoch, how);
  return EG_EPRECOND;
}

/* Where the archive stands against the log: rolls back a failed segment,
 * checks that the archive's tip is this node's history (before anything
 * in the dir changes), recovers the dir, and picks the next LSN. */
static eg_err eg_arch_resume(eg_archiver *a) {
  eg_walseg_recovery rec;
  char tip_name[EG_WALSEG_NAME_MAX] = "", how[160] = "";
  uint8_t tip_sum[32], log_sum[32];
  uint64_t tip, tip_epoch, first = 0, at_epoch = 0, fork = 0;
  eg_err e;
  /* A failed write or fsync: what the segment holds past its last good
   * fsync goes, whatever a read of it would say. */
  if (a->seg) {
    if ((e = eg_walseg_rollback(a->seg, a->why, sizeof a->why))) return e;
    a->seg = NULL;
  }
  if ((e = eg_arch_tip(a, &tip, &tip_epoch, tip_name))) return e;
  if (tip && (e = eg_walseg_record_sha256(a->dir, tip_name, tip, tip_sum, a->why, sizeof a->why)))
    return e;
  if ((e = eg_arch_store_enter(a))) return e;
  if ((e = eg_store_reader_begin(a->reader))) {
    eg_arch_store_leave(a);
    return e;
  }
  uint64_t last = eg_store_last_lsn(a->store);
  eg_err fe = eg_store_wal_first(a->reader, &first, NULL);
  /* The archive's tip, or the log's end if that comes first. */
  uint64_t probe = tip <= last ? tip : last;
  const uint8_t *lrec = NULL;
  size_t llen = 0;
  eg_err ee = probe ? eg_store_wal_epoch_at(a->reader, probe, &at_epoch, &lrec, &llen) : EG_ENOTFOUND;
  if (ee == EG_OK) {
    eg_sha256 h;
    eg_sha256_init(&h);
    eg_sha256_update(&h, lrec, llen);
    eg_sha256_final(&h, log_sum);
    /* A newer epoch than any in the archive (a node resynced after a
     * failover): its records from the switch on overrule the archive's
     * at restore, as a timeline does. */
    if (at_epoch > tip_epoch && fe == EG_OK) fork = eg_arch_fork(a, first, probe, tip_epoch);
  }
  eg_store_reader_end(a->reader);
  eg_arch_store_leave(a);
  if (fe == EG_ENOTFOUND) first = last + 1; /* an empty log: the next commit */
  else if (fe) return fe;
  if (ee && ee != EG_ENOTFOUND) return ee;
  if (!fork && tip > last)
    snprintf(how, sizeof how, "ends before it, at lsn %llu", (unsigned long long)last);
  else if (!fork && ee == EG_OK && at_epoch < tip_epoch)
    snprintf(how, sizeof how, "holds the older epoch %llu there", (unsigned long long)at_epoch);
  else if (!fork && ee == EG_OK && memcmp(tip_sum, log_sum, sizeof tip_sum) != 0)
    snprintf(how, sizeof how, "holds another record there, of the same epoch");
  if (how[0]) return eg_arch_refuse(a, tip, tip_epoch, how);

  /* This node's history: now the dir may change. */
  if ((e = eg_walseg_recover(a->dir, &rec, a->why, sizeof a->why))) return e;
  if ((rec.cut || rec.set_aside) && (e = eg_arch_tip(a, &tip, &tip_epoch, tip_name))) return e;
  if (rec.set_aside) {
    atomic_fetch_add(&a->errors, 1);
    eg_log(EG_LOG_WARN, "WAL archive %s: set aside %s: a bad frame in the middle of an open "
                        "segment is corruption (a bad disk?), not a torn tail; its records are "
                        "archived again from the log, from lsn %llu", a->dir, rec.corrupt,
           (unsigned long long)(tip + 1));
  }
  if (rec.cut)
    eg_log(EG_LOG_WARN, "WAL archive %s: cut %llu bytes of a torn record at the end of the "
                        "last segment (a crash or a failed write); archiving goes on from lsn %llu",
           a->dir, (unsigned long long)rec.cut, (unsigned long long)(tip + 1));
  uint64_t next = tip + 1;
  if (fork) {
    eg_log(EG_LOG_WARN, "WAL archive %s: the archive ends at lsn %llu (epoch %llu) but this "
                        "node's log holds epoch %llu there: archiving its history again from lsn "
                        "%llu, where that epoch begins (it overrules the archive's from there on)",
           a->dir, (unsigned long long)tip, (unsigned long long)tip_epoch,
           (unsigned long long)at_epoch, (unsigned long long)fork);
    next = fork;
  } else if (next < first && (tip || first > 1)) {
    eg_arch_gap(a, next, first - 1, tip ? "trimmed before they were archived"
                                        : "the archive was configured after they were written");
    next = first;
  } else if (next < first) {
    next = first;
  }
  eg_arch_set_next(a, next);
  a->resumed_from = next;
  a->need_resume = 0;
  return EG_OK;
}

/* A scan's state: records copied into the batch, their bytes, or the
 * error. */
typedef struct {
  eg_archiver *a;
  size_t n, bytes;
  eg_err err;
} eg_arch_scan;

static int eg_arch_visit(void *arg, uint64_t lsn, const uint8_t *rec, size_t len) {
  eg_arch_scan *sc = arg;
  eg_archiver *a = sc->a;
  eg_wal_head h;
  if (lsn != a->next + sc->n) return 1; /* trimmed under the scan: the next pass says so */
  if (sc->n && sc->bytes + len > EG_ARCHIVE_BATCH_BYTES) return 1; /* the next batch's */
  if ((sc->err = eg_store_wal_head(rec, len, &h)) != EG_OK) {
    snprintf(a->why, sizeof a->why, "log record %llu does not decode", (unsigned long long)lsn);
    return 1;
  }
  if (sc->bytes + len > a->cap) {
    size_t cap = a->cap ? a->cap : 65536;
    while (cap < sc->bytes + len) cap *= 2;
    uint8_t *b = realloc(a->buf, cap);
    if (!b) {
      sc->err = EG_ENOMEM;
      snprintf(a->why, sizeof a->why, "out of memory for a batch of %zu bytes", cap);
      return 1;
    }
    a->buf = b;
    a->cap = cap;
  }
  memcpy(a->buf + sc->bytes, rec, len);
  a->recs[sc->n] = (eg_arch_rec){.lsn = lsn, .epoch = h.epoch, .off = sc->bytes, .len = len};
  sc->bytes += len;
  return ++sc->n >= EG_ARCHIVE_BATCH;
}

/* Appends a copied record, starting a segment where one is due. */
static eg_err eg_arch_write(eg_archiver *a, const eg_arch_rec *r) {
  eg_err e = EG_OK;
  int64_t now = eg_mono_us();
  if (a->seg && (r->epoch != eg_walseg_epoch(a->seg) || eg_walseg_count(a->seg) >= a->seg_records ||
                 now - a->seg_opened_us >= a->seg_us))
    e = eg_arch_close_seg(a);
  if (!e && !a->seg) {
    e = eg_walseg_create(a->dir, r->lsn, r->epoch, &a->seg, a->why, sizeof a->why);
    a->seg_opened_us = now;
  }
  if (!e) e = eg_walseg_append(a->seg, r->lsn, a->buf + r->off, r->len, a->why, sizeof a->why);
  if (!e) a->next++;
  return e;
}

/* Copies a batch of committed records out of one read txn, ends it, then
 * writes and fsyncs them. *busy when there may be more to do at once. */
static eg_err eg_arch_step(eg_archiver *a, int *busy) {
  eg_arch_scan sc = {.a = a};
  uint64_t first = 0;
  int gap = 0;
  *busy = 0;
  eg_err e = eg_arch_store_enter(a);
  if (e) return e;
  if (eg_store_last_lsn(a->store) >= a->next && (e = eg_store_reader_begin(a->reader)) == EG_OK) {
    eg_err fe = eg_store_wal_first(a->reader, &first, NULL);
    /* Trimmed before it was archived: only past --wal-retain-cap, or an
     * erasure... never while the hold is in force. */
    gap = fe == EG_OK && first > a->next;
    if (fe && fe != EG_ENOTFOUND) e = fe; /* EG_ENOTFOUND: an empty log */
    else if (!gap) e = eg_store_wal_scan(a->reader, a->next, eg_arch_visit, &sc);
    eg_store_reader_end(a->reader);
  }
  eg_arch_store_leave(a);
  if (e) return e;
  if (gap) {
    if ((e = eg_arch_close_seg(a))) return e;
    eg_arch_gap(a, a->next, first - 1, "trimmed past --wal-retain-cap before they were archived");
    eg_arch_set_next(a, first);
    *busy = 1;
    return EG_OK;
  }
  /* No txn open from here on: the archive disk may be slow. */
  for (size_t i = 0; i < sc.n && !e; i++) e = eg_arch_write(a, &a->recs[i]);
  if (!e && sc.n) e = eg_walseg_sync(a->seg, a->why, sizeof a->why);
  if (!e) e = sc.err;
  if (a->cap > 2 * EG_ARCHIVE_BATCH_BYTES) { /* after one huge record */
    free(a->buf);
    a->buf = NULL;
    a->cap = 0;
  }
  if (e) return e;
  /* Only now, fsync'd, do these records leave the hold. */
  eg_arch_set_next(a, a->next);
  *busy = sc.n > 0;
  return EG_OK;
}

/* One turn of the loop: resume if needed, archive, close an old idle
 * segment. EG_OK with *busy when there may be more to do at once. */
static eg_err eg_arch_turn(eg_archiver *a, int *busy) {
  eg_err e = EG_OK;
  *busy = 0;
  a->why[0] = '\0';
  if (a->need_resume && (e = eg_arch_resume(a))) return e;
  if ((e = eg_arch_step(a, busy))) return e;
  if (!*busy && a->seg && eg_mono_us() - a->seg_opened_us >= a->seg_us) e = eg_arch_close_seg(a);
  return e;
}

/* After a failure: the open segment may hold what no fsync made durable,
 * so it is left for the resume to roll back; next goes back to what is
 * durable. A refusal is said as it is, and stays. */
static void eg_arch_failed(eg_archiver *a, eg_err e) {
  char line[512];
  a->need_resume = 1;
  if (a->refused) {
    eg_arch_problem(a, a->why);
    return;
  }
  atomic_fetch_add(&a->errors, 1);
  snprintf(line, sizeof line, "%.300s; retrying, and holding log records from lsn %llu until they "
           "are archived (at most --wal-retain-cap of them; past it the archive will have a gap)",
           a->why[0] ? a->why : eg_err_msg(e), (unsigned long long)atomic_load(&a->hold));
  eg_arch_problem(a, line);
}

static void *eg_arch_main(void *arg) {
  eg_archiver *a = arg;
  int64_t backoff = EG_ARCHIVE_BACKOFF_MIN_MS;
  pthread_mutex_lock(&a->bg.mu);
  for (;;) {
    int stopping = a->bg.stopping, busy = 0;
    if (a->refused) {
      /* Nothing more to do but wait for the stop. */
      if (stopping) break;
      eg_bgthread_sleep(&a->bg, EG_ARCHIVE_BACKOFF_MAX_MS);
      continue;
    }
    pthread_mutex_unlock(&a->bg.mu);
    eg_err e = eg_arch_turn(a, &busy);
    pthread_mutex_lock(&a->bg.mu);
    if (atomic_load(&a->abandoned)) break;
    if (e) {
      pthread_mutex_unlock(&a->bg.mu);
      eg_arch_failed(a, e);
      pthread_mutex_lock(&a->bg.mu);
      if (stopping) break;
      if (!a->refused) eg_bgthread_sleep(&a->bg, backoff);
      backoff = backoff * 2 > EG_ARCHIVE_BACKOFF_MAX_MS ? EG_ARCHIVE_BACKOFF_MAX_MS : backoff * 2;
      continue;
    }
    backoff = EG_ARCHIVE_BACKOFF_MIN_MS;
    if (a->problem[0]) {
      pthread_mutex_unlock(&a->bg.mu);
      eg_arch_ok(a);
      pthread_mutex_lock(&a->bg.mu);
    }
    if (busy) continue;
    /* Caught up: once stopping, that was the last turn. */
    if (stopping) break;
    pthread_mutex_unlock(&a->bg.mu);
    int64_t wait = EG_ARCHIVE_WAIT_MS;
    if (a->seg) {
      int64_t left = (a->seg_opened_us + a->seg_us - eg_mono_us()) / 1000 + 1;
      if (left < wait) wait = left > 0 ? left : 0;
    }
    if (eg_arch_store_enter(a) == EG_OK) {
      eg_store_wait_lsn(a->store, a->next, wait);
      eg_arch_store_leave(a);
    }
    pthread_mutex_lock(&a->bg.mu);
  }
  pthread_mutex_unlock(&a->bg.mu);
  if (!atomic_load(&a->abandoned) && a->seg) {
    /* A segment a failure left is rolled back, not closed. */
    eg_err e = a->need_resume ? eg_walseg_rollback(a->seg, a->why, sizeof a->why)
                              : eg_arch_close_seg(a);
    if (e) {
      eg_log(EG_LOG_WARN, "WAL archive %s: %s (the next start finishes it)", a->dir, a->why);
      eg_walseg_abandon(a->seg);
    }
    a->seg = NULL;
  }
  pthread_mutex_lock(&a->bg.mu);
  a->done = 1;
  pthread_cond_broadcast(&a->bg.cv);
  pthread_mutex_unlock(&a->bg.mu);
  return NULL;
}

eg_err eg_archiver_start(const eg_config *cfg, eg_store *store, eg_archiver **out, char *err,
                         size_t errlen) {
  char why[400];
  int lock_fd = -1;
  *out = NULL;
  if (!cfg->wal_archive_dir[0]) return EG_OK;
  /* Creates the dir (0700) and holds its LOCK for the archiver's life: two
   * archivers in one dir would finish each other's open segments. */
  eg_err e = eg_store_lock_dir(cfg->wal_archive_dir, &lock_fd, why, sizeof why);
  if (e) {
    snprintf(err, errlen, "--wal-archive-dir %.300s: %s (each node needs an archive dir of its own)",
             cfg->wal_archive_dir, why);
    return e;
  }
  eg_archiver *a = calloc(1, sizeof *a);
  if (!a || eg_store_reader_new(store, &a->reader) != EG_OK) {
    free(a);
    eg_store_unlock_dir(lock_fd);
    snprintf(err, errlen, "cannot start the WAL archiver: out of memory or readers");
    return EG_ENOMEM;
  }
  snprintf(a->dir, sizeof a->dir, "%s", cfg->wal_archive_dir);
  a->store = store;
  a->lock_fd = lock_fd;
  a->seg_records = (uint64_t)cfg->wal_archive_segment_records;
  a->seg_us = cfg->wal_archive_segment_s * 1000000;
  pthread_mutex_init(&a->store_mu, NULL);
  /* Until the thread's first turn finds the archive's tip, every record
   * is held: the writer may trim before that turn. A tip that cannot be
   * read yet (an unreadable dir) is retried the same way. */
  atomic_store(&a->hold, 1);
  a->need_resume = 1;
  e = eg_bgthread_start(&a->bg, eg_arch_main, a, "WAL archiver", "WAL archiver", err, errlen);
  if (e) {
    pthread_mutex_destroy(&a->store_mu);
    eg_store_reader_free(a->reader);
    eg_store_unlock_dir(lock_fd);
    free(a);
    return e;
  }
  *out = a;
  return EG_OK;
}

/* Waits for the thread to end, at most ms: 1 if it did. */
static int eg_arch_wait_done(eg_archiver *a, int64_t ms) {
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += ms / 1000;
  until.tv_nsec += (ms % 1000) * 1000000;
  if (until.tv_nsec >= 1000000000) until.tv_sec++, until.tv_nsec -= 1000000000;
  pthread_mutex_lock(&a->bg.mu);
  while (!a->done && pthread_cond_timedwait(&a->bg.cv, &a->bg.mu, &until) != ETIMEDOUT) {
  }
  int done = a->done;
  pthread_mutex_unlock(&a->bg.mu);
  return done;
}

void eg_archiver_stop(eg_archiver *a) {
  if (!a) return;
  /* Stopping first, then the wake: a thread waiting for a commit sees it
   * now rather than at the end of its wait. */
  pthread_mutex_lock(&a->bg.mu);
  a->bg.stopping = 1;
  pthread_cond_broadcast(&a->bg.cv);
  pthread_mutex_unlock(&a->bg.mu);
  eg_store_wake_waiters(a->store);
  if (!eg_arch_wait_done(a, EG_ARCHIVE_STOP_MS)) {
    /* Stuck (in a write or fsync to the archive disk) or far behind: the
     * thread is left to the process's exit and kept off the store. */
    pthread_mutex_lock(&a->store_mu);
    atomic_store(&a->abandoned, 1);
    pthread_mutex_unlock(&a->store_mu);
    eg_store_reader_free(a->reader);
    pthread_detach(a->bg.thread);
    eg_log(EG_LOG_WARN, "WAL archive %s: the final pass did not end within %d s (a stuck "
                        "archive disk?); stopping without it: the log keeps what was not archived, "
                        "from lsn %llu, and the next start archives it", a->dir,
           EG_ARCHIVE_STOP_MS / 1000, (unsigned long long)atomic_load(&a->hold));
    return; /* a stays: the thread may still use it */
  }
  eg_bgthread_stop(&a->bg);
  pthread_mutex_destroy(&a->store_mu);
  eg_store_reader_free(a->reader);
  eg_store_unlock_dir(a->lock_fd);
  free(a->buf);
  free(a);
}

uint64_t eg_archiver_hold(const eg_archiver *a) { return a ? atomic_load(&a->hold) : 0; }

void eg_archiver_get_stats(eg_archiver *a, eg_archiver_stats *out) {
  *out = (eg_archiver_stats){0};
  if (!a) return;
  out->archived_lsn = atomic_load(&a->hold) - 1;
  out->segments = atomic_load(&a->segments);
  out->errors = atomic_load(&a->errors);
  out->gaps = atomic_load(&a->gaps);
  pthread_mutex_lock(&a->bg.mu);
  snprintf(out->problem, sizeof out->problem, "%s", a->problem);
  pthread_mutex_unlock(&a->bg.mu);
}
