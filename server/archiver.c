/* The WAL archiver thread (server/archiver.h). */
#include "server/archiver.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backup/walarchive.h"
#include "common/clock.h"
#include "server/bgthread.h"

/* Records one read txn archives at most: bounds how long the archiver
 * keeps a read txn (and so old pages) open. */
#define EG_ARCHIVE_BATCH 1024
/* Longest wait for a commit: also how late an idle segment is closed past
 * --wal-archive-segment-s, and how late a stop is seen. */
#define EG_ARCHIVE_WAIT_MS 500
#define EG_ARCHIVE_BACKOFF_MIN_MS 100
#define EG_ARCHIVE_BACKOFF_MAX_MS 5000

struct eg_archiver {
  char dir[EG_CONFIG_PATH_MAX];
  eg_store *store;
  uint64_t seg_records;
  int64_t seg_us;
  eg_bgthread bg;
  /* the thread's own */
  eg_txn *reader;
  eg_walseg_w *seg;
  int64_t seg_opened_us; /* eg_mono_us() at the segment's first record */
  uint64_t next;         /* the next LSN to archive */
  int need_resume;       /* find the tip again (at start, after an error) */
  char why[512];
  /* for any thread */
  _Atomic uint64_t hold, archived, segments, errors, gaps;
  char problem[512]; /* guarded by bg.mu */
};

/* Says line on stderr and makes it the current problem, once per line. */
static void eg_arch_problem(eg_archiver *a, const char *line) {
  pthread_mutex_lock(&a->bg.mu);
  int fresh = strcmp(a->problem, line) != 0;
  snprintf(a->problem, sizeof a->problem, "%s", line);
  pthread_mutex_unlock(&a->bg.mu);
  if (fresh) fprintf(stderr, "engramd: WAL archive %s: %s\n", a->dir, line);
}

static void eg_arch_ok(eg_archiver *a) {
  pthread_mutex_lock(&a->bg.mu);
  int was = a->problem[0] != '\0';
  a->problem[0] = '\0';
  pthread_mutex_unlock(&a->bg.mu);
  if (was)
    fprintf(stderr, "engramd: WAL archive %s: archiving again from lsn %llu\n", a->dir,
            (unsigned long long)a->next);
}

/* The log no longer holds a record the archive needs: say so, loudly. */
static void eg_arch_gap(eg_archiver *a, uint64_t from, uint64_t to, const char *cause) {
  char line[256];
  atomic_fetch_add(&a->gaps, 1);
  snprintf(line, sizeof line, "GAP: lsn %llu..%llu are no longer in the log (%s); the archive "
           "goes on from lsn %llu, and a restore cannot replay across the gap: take a new base "
           "backup", (unsigned long long)from, (unsigned long long)to, cause,
           (unsigned long long)(to + 1));
  fprintf(stderr, "engramd: WAL archive %s: %s\n", a->dir, line);
}

static void eg_arch_set_next(eg_archiver *a, uint64_t next) {
  a->next = next;
  atomic_store(&a->archived, next - 1);
  atomic_store(&a->hold, next);
}

static eg_err eg_arch_close_seg(eg_archiver *a) {
  if (!a->seg) return EG_OK;
  uint64_t n = eg_walseg_count(a->seg);
  eg_err e = eg_walseg_close(a->seg, a->why, sizeof a->why);
  a->seg = NULL;
  if (!e && n) atomic_fetch_add(&a->segments, 1);
  return e;
}

/* Where the archive stands against the log: recovers the dir, reads its
 * tip, and picks the next LSN. */
static eg_err eg_arch_resume(eg_archiver *a) {
  eg_walseg_info *segs = NULL;
  eg_walseg_piece *pieces = NULL;
  size_t n = 0;
  uint64_t cut = 0, tip = 0, tip_epoch = 0, first = 0, at_epoch = 0;
  eg_walseg_abandon(a->seg);
  a->seg = NULL;
  eg_err e = eg_walseg_recover(a->dir, &cut, a->why, sizeof a->why);
  if (!e) e = eg_walseg_list(a->dir, &segs, &n, a->why, sizeof a->why);
  if (!e && n && !(pieces = malloc(n * sizeof *pieces))) e = EG_ENOMEM;
  if (!e && n) {
    size_t np = eg_walseg_chain(segs, n, pieces);
    if (np) tip = pieces[np - 1].to, tip_epoch = segs[pieces[np - 1].seg].epoch;
  }
  free(pieces);
  free(segs);
  if (e) return e;
  if (cut)
    fprintf(stderr, "engramd: WAL archive %s: cut %llu bytes of a torn record at the end of the "
                    "last segment (a crash while writing it); archiving goes on from lsn %llu\n",
            a->dir, (unsigned long long)cut, (unsigned long long)(tip + 1));
  if ((e = eg_store_reader_begin(a->reader))) return e;
  uint64_t last = eg_store_last_lsn(a->store);
  eg_err fe = eg_store_wal_first(a->reader, &first, NULL);
  eg_err ee = tip ? eg_store_wal_epoch_at(a->reader, tip, &at_epoch, NULL, NULL) : EG_ENOTFOUND;
  eg_store_reader_end(a->reader);
  if (fe == EG_ENOTFOUND) first = last + 1; /* an empty log: the next commit */
  else if (fe) return fe;
  if (ee && ee != EG_ENOTFOUND) return ee;
  uint64_t next = tip + 1;
  if (tip > last || (ee == EG_OK && at_epoch != tip_epoch)) {
    /* This node's history is not the archive's (a restored or resynced
     * data dir): archive what the log holds again, in a new segment whose
     * epoch decides at restore. */
    fprintf(stderr, "engramd: WAL archive %s: the archive ends at lsn %llu (epoch %llu) but this "
                    "node's log %s: archiving again from lsn %llu\n", a->dir,
            (unsigned long long)tip, (unsigned long long)tip_epoch,
            tip > last ? "ends before it" : "holds another epoch there", (unsigned long long)first);
    atomic_fetch_add(&a->gaps, 1);
    next = first;
  } else if (next < first && (tip || first > 1)) {
    eg_arch_gap(a, next, first - 1, tip ? "trimmed before they were archived"
                                        : "the archive was configured after they were written");
    next = first;
  } else if (next < first) {
    next = first;
  }
  eg_arch_set_next(a, next);
  a->need_resume = 0;
  return EG_OK;
}

/* A scan's state: records archived in this batch, or the error. */
typedef struct {
  eg_archiver *a;
  size_t n;
  eg_err err;
} eg_arch_scan;

static int eg_arch_visit(void *arg, uint64_t lsn, const uint8_t *rec, size_t len) {
  eg_arch_scan *sc = arg;
  eg_archiver *a = sc->a;
  eg_wal_head h;
  if (lsn != a->next) return 1; /* trimmed under the scan: the next pass says so */
  if ((sc->err = eg_store_wal_head(rec, len, &h)) != EG_OK) {
    snprintf(a->why, sizeof a->why, "log record %llu does not decode", (unsigned long long)lsn);
    return 1;
  }
  int64_t now = eg_mono_us();
  if (a->seg && (h.epoch != eg_walseg_epoch(a->seg) || eg_walseg_count(a->seg) >= a->seg_records ||
                 now - a->seg_opened_us >= a->seg_us))
    sc->err = eg_arch_close_seg(a);
  if (!sc->err && !a->seg) {
    sc->err = eg_walseg_create(a->dir, lsn, h.epoch, &a->seg, a->why, sizeof a->why);
    a->seg_opened_us = now;
  }
  if (!sc->err) sc->err = eg_walseg_append(a->seg, lsn, rec, len, a->why, sizeof a->why);
  if (sc->err) return 1;
  a->next++;
  return ++sc->n >= EG_ARCHIVE_BATCH;
}

/* Archives up to EG_ARCHIVE_BATCH committed records; *n gets how many. */
static eg_err eg_arch_step(eg_archiver *a, size_t *n) {
  eg_arch_scan sc = {.a = a};
  uint64_t first;
  *n = 0;
  if (eg_store_last_lsn(a->store) < a->next) return EG_OK;
  eg_err e = eg_store_reader_begin(a->reader);
  if (e) return e;
  e = eg_store_wal_first(a->reader, &first, NULL);
  if (!e && first > a->next) {
    /* Trimmed before it was archived: only past --wal-retain-cap, or an
     * erasure... never while the hold is in force. */
    if ((e = eg_arch_close_seg(a)) == EG_OK) {
      eg_arch_gap(a, a->next, first - 1, "trimmed past --wal-retain-cap before they were archived");
      eg_arch_set_next(a, first);
    }
  }
  if (e == EG_ENOTFOUND) e = EG_OK; /* an empty log */
  if (!e) e = eg_store_wal_scan(a->reader, a->next, eg_arch_visit, &sc);
  eg_store_reader_end(a->reader);
  if (!e) e = sc.err;
  if (!e && sc.n) e = eg_walseg_sync(a->seg, a->why, sizeof a->why);
  if (e) return e;
  eg_arch_set_next(a, a->next);
  *n = sc.n;
  return EG_OK;
}

/* One turn of the loop: resume if needed, archive, close an old idle
 * segment. EG_OK with *busy when there may be more to do at once. */
static eg_err eg_arch_turn(eg_archiver *a, int *busy) {
  size_t n = 0;
  eg_err e = EG_OK;
  *busy = 0;
  a->why[0] = '\0';
  if (a->need_resume && (e = eg_arch_resume(a))) return e;
  if ((e = eg_arch_step(a, &n))) return e;
  *busy = n > 0;
  if (!n && a->seg && eg_mono_us() - a->seg_opened_us >= a->seg_us) e = eg_arch_close_seg(a);
  return e;
}

/* After a failure: the open segment may hold a torn frame, so it is left
 * for the resume to cut; next goes back to what is durable. */
static void eg_arch_failed(eg_archiver *a, eg_err e) {
  char line[512];
  atomic_fetch_add(&a->errors, 1);
  snprintf(line, sizeof line, "%.300s; retrying, and holding log records from lsn %llu until they "
           "are archived (at most --wal-retain-cap of them; past it the archive will have a gap)",
           a->why[0] ? a->why : eg_err_msg(e), (unsigned long long)atomic_load(&a->hold));
  eg_arch_problem(a, line);
  eg_walseg_abandon(a->seg);
  a->seg = NULL;
  a->need_resume = 1;
}

static void *eg_arch_main(void *arg) {
  eg_archiver *a = arg;
  int64_t backoff = EG_ARCHIVE_BACKOFF_MIN_MS;
  pthread_mutex_lock(&a->bg.mu);
  for (;;) {
    int stopping = a->bg.stopping, busy = 0;
    pthread_mutex_unlock(&a->bg.mu);
    eg_err e = eg_arch_turn(a, &busy);
    pthread_mutex_lock(&a->bg.mu);
    if (e) {
      pthread_mutex_unlock(&a->bg.mu);
      eg_arch_failed(a, e);
      pthread_mutex_lock(&a->bg.mu);
      if (stopping) break;
      eg_bgthread_sleep(&a->bg, backoff);
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
    eg_store_wait_lsn(a->store, a->next, wait);
    pthread_mutex_lock(&a->bg.mu);
  }
  pthread_mutex_unlock(&a->bg.mu);
  if (eg_arch_close_seg(a))
    fprintf(stderr, "engramd: WAL archive %s: %s (the next start finishes it)\n", a->dir, a->why);
  return NULL;
}

eg_err eg_archiver_start(const eg_config *cfg, eg_store *store, eg_archiver **out, char *err,
                         size_t errlen) {
  *out = NULL;
  if (!cfg->wal_archive_dir[0]) return EG_OK;
  if (mkdir(cfg->wal_archive_dir, 0700) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "--wal-archive-dir %.400s: cannot create: %s", cfg->wal_archive_dir,
             strerror(errno));
    return EG_EIO;
  }
  eg_archiver *a = calloc(1, sizeof *a);
  if (!a || eg_store_reader_new(store, &a->reader) != EG_OK) {
    free(a);
    snprintf(err, errlen, "cannot start the WAL archiver: out of memory or readers");
    return EG_ENOMEM;
  }
  snprintf(a->dir, sizeof a->dir, "%s", cfg->wal_archive_dir);
  a->store = store;
  a->seg_records = (uint64_t)cfg->wal_archive_segment_records;
  a->seg_us = cfg->wal_archive_segment_s * 1000000;
  /* Until the thread's first turn finds the archive's tip, every record
   * is held: the writer may trim before that turn. A tip that cannot be
   * read yet (an unreadable dir) is retried the same way. */
  atomic_store(&a->hold, 1);
  a->need_resume = 1;
  eg_err e = eg_bgthread_start(&a->bg, eg_arch_main, a, "WAL archiver", err, errlen);
  if (e) {
    eg_store_reader_free(a->reader);
    free(a);
    return e;
  }
  *out = a;
  return EG_OK;
}

void eg_archiver_stop(eg_archiver *a) {
  if (!a) return;
  /* Stopping first, then the wake: a thread waiting for a commit sees it
   * now rather than at the end of its wait. */
  pthread_mutex_lock(&a->bg.mu);
  a->bg.stopping = 1;
  pthread_mutex_unlock(&a->bg.mu);
  eg_store_wake_waiters(a->store);
  eg_bgthread_stop(&a->bg);
  eg_store_reader_free(a->reader);
  free(a);
}

uint64_t eg_archiver_hold(const eg_archiver *a) { return a ? atomic_load(&a->hold) : 0; }

void eg_archiver_get_stats(eg_archiver *a, eg_archiver_stats *out) {
  *out = (eg_archiver_stats){0};
  if (!a) return;
  out->archived_lsn = atomic_load(&a->archived);
  out->segments = atomic_load(&a->segments);
  out->errors = atomic_load(&a->errors);
  out->gaps = atomic_load(&a->gaps);
  pthread_mutex_lock(&a->bg.mu);
  snprintf(out->problem, sizeof out->problem, "%s", a->problem);
  pthread_mutex_unlock(&a->bg.mu);
}
