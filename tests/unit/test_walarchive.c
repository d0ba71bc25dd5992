/* backup/walseg.c and backup/pitr.c: WAL archive segments on real files
 * (written, read back, torn, flipped, cut short, rolled back after a
 * failed write, never closed over another, damaged in the middle and set
 * aside), the archive's history
 * when segments overlap, point-in-time replay from real logs, and the
 * archiver's hold in the log's trim floor. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/walarchive.h"
#include "replica/internal.h"
#include "storage/storage.h"
#include "suites.h"

static char dir[4096];
static char why[512];

static void setup(void) { snprintf(dir, sizeof dir, "%s", eg_test_tmpdir()); }
static void teardown(void) { eg_test_rmdir(dir); }

/* Record bytes for lsn: any bytes do for the format; "r<lsn>" repeated. */
static size_t fake_rec(uint64_t lsn, uint8_t *buf, size_t cap) {
  int n = snprintf((char *)buf, cap, "r%llu-r%llu-r%llu", (unsigned long long)lsn,
                   (unsigned long long)lsn, (unsigned long long)lsn);
  return (size_t)n;
}

/* A segment of records first..last; closed unless open_ is set. */
static void write_seg(uint64_t first, uint64_t last, uint64_t epoch, int open_) {
  eg_walseg_w *w;
  uint8_t buf[128];
  CU_ASSERT_EQUAL_FATAL(eg_walseg_create(dir, first, epoch, &w, why, sizeof why), EG_OK);
  for (uint64_t l = first; l <= last; l++)
    CU_ASSERT_EQUAL_FATAL(eg_walseg_append(w, l, buf, fake_rec(l, buf, sizeof buf), why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_walseg_sync(w, why, sizeof why), EG_OK);
  if (open_)
    eg_walseg_abandon(w);
  else
    CU_ASSERT_EQUAL_FATAL(eg_walseg_close(w, why, sizeof why), EG_OK);
}

static void seg_path(char *out, size_t n, uint64_t first, uint64_t epoch, const char *suffix) {
  snprintf(out, n, "%s/%020llu-%020llu%s", dir, (unsigned long long)first,
           (unsigned long long)epoch, suffix);
}

/* Reads every record of a segment; returns how many, or -1 on an error
 * (why filled). */
static long read_all(const char *name, uint64_t first) {
  eg_walseg_r *r;
  uint64_t lsn;
  const uint8_t *rec;
  size_t len;
  uint8_t want[128];
  long n = 0;
  eg_err e;
  if (eg_walseg_open(dir, name, &r, why, sizeof why) != EG_OK) return -1;
  while ((e = eg_walseg_next(r, &lsn, &rec, &len, why, sizeof why)) == EG_OK) {
    CU_ASSERT_EQUAL(lsn, first + (uint64_t)n);
    size_t wl = fake_rec(lsn, want, sizeof want);
    CU_ASSERT(len == wl && memcmp(rec, want, wl) == 0);
    n++;
  }
  eg_walseg_close_r(r);
  return e == EG_ENOTFOUND ? n : -1;
}

/* Written, closed, listed and read back; the name sorts by LSN. */
static void test_round_trip(void) {
  eg_walseg_info *segs;
  size_t n;
  write_seg(7, 12, 3, 0);
  write_seg(1, 6, 3, 0);
  CU_ASSERT_EQUAL_FATAL(eg_walseg_list(dir, &segs, &n, why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL_FATAL(n, 2);
  CU_ASSERT_STRING_EQUAL(segs[0].name, "00000000000000000001-00000000000000000003.seg");
  CU_ASSERT(segs[0].first_lsn == 1 && segs[0].last_lsn == 6 && segs[0].epoch == 3);
  CU_ASSERT(segs[1].first_lsn == 7 && segs[1].last_lsn == 12 && !segs[1].partial);
  CU_ASSERT_EQUAL(read_all(segs[1].name, 7), 6);
  struct stat st;
  char p[4200];
  seg_path(p, sizeof p, 1, 3, ".seg");
  CU_ASSERT(stat(p, &st) == 0 && (st.st_mode & 0777) == 0600);
  free(segs);
}

/* The writer refuses an LSN out of sequence; an empty segment's close
 * leaves no file. */
static void test_append_order(void) {
  eg_walseg_w *w;
  uint8_t buf[8] = "x";
  eg_walseg_info *segs;
  size_t n;
  CU_ASSERT_EQUAL_FATAL(eg_walseg_create(dir, 5, 1, &w, why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL(eg_walseg_append(w, 6, buf, 1, why, sizeof why), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_walseg_close(w, why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_walseg_list(dir, &segs, &n, why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL(n, 0);
  free(segs);
}

/* A crash mid-append: the torn frame is cut, the whole records stay and
 * the segment is closed under its final name. */
static void test_recover_torn_tail(void) {
  char p[4200];
  eg_walseg_recovery rec;
  eg_walseg_info *segs;
  size_t n;
  write_seg(10, 14, 2, 1);
  seg_path(p, sizeof p, 10, 2, ".seg.partial");
  int fd = open(p, O_WRONLY | O_APPEND);
  CU_ASSERT_FATAL(fd >= 0);
  const uint8_t torn[9] = {0, 0, 0, 40, 0, 0, 0, 0, 0}; /* a frame head, cut */
  CU_ASSERT_EQUAL(write(fd, torn, sizeof torn), (ssize_t)sizeof torn);
  close(fd);
  /* Listed as it is, a .partial tells how far it holds whole records. */
  CU_ASSERT_EQUAL_FATAL(eg_walseg_list(dir, &segs, &n, why, sizeof why), EG_OK);
  CU_ASSERT(n == 1 && segs[0].partial && segs[0].last_lsn == 14);
  free(segs);
  CU_ASSERT_EQUAL_FATAL(eg_walseg_recover(dir, &rec, why, sizeof why), EG_OK);
  CU_ASSERT(rec.cut == sizeof torn && rec.set_aside == 0);
  CU_ASSERT_EQUAL_FATAL(eg_walseg_list(dir, &segs, &n, why, sizeof why), EG_OK);
  CU_ASSERT(n == 1 && !segs[0].partial && segs[0].first_lsn == 10 && segs[0].last_lsn == 14);
  CU_ASSERT_EQUAL(read_all(segs[0].name, 10), 5);
  free(segs);
  /* A .partial with nothing whole in it (a crash before its header was
   * durable) is removed. */
  seg_path(p, sizeof p, 20, 2, ".seg.partial");
  fd = open(p, O_WRONLY | O_CREAT, 0600);
  CU_ASSERT_EQUAL(write(fd, "EGWAL", 5), 5);
  close(fd);
  CU_ASSERT_EQUAL_FATAL(eg_walseg_recover(dir, &rec, why, sizeof why), EG_OK);
  CU_ASSERT(access(p, F_OK) != 0);
}

/* A flipped byte in a record, a cut-off end, a bad header: each is
 * reported, naming the LSN or the file. */
static void test_corruption(void) {
  char p[4200];
  eg_walseg_info *segs;
  size_t n;
  struct stat st;
  write_seg(1, 3, 1, 0);
  seg_path(p, sizeof p, 1, 1, ".seg");
  int fd = open(p, O_RDWR);
  CU_ASSERT_FATAL(fd >= 0);
  /* Record 2's payload: after the header and record 1's frame. */
  uint8_t buf[128];
  off_t at = EG_WALSEG_HEADER_BYTES + EG_WALSEG_FRAME_BYTES + (off_t)fake_rec(1, buf, sizeof buf) + 12 + 1;
  uint8_t b;
  CU_ASSERT_EQUAL(pread(fd, &b, 1, at), 1);
  b ^= 0x01;
  CU_ASSERT_EQUAL(pwrite(fd, &b, 1, at), 1);
  CU_ASSERT_EQUAL(read_all("00000000000000000001-00000000000000000001.seg", 1), -1);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "lsn 2 fails its checksum"));
  b ^= 0x01;
  CU_ASSERT_EQUAL(pwrite(fd, &b, 1, at), 1);
  /* Cut: the end mark is gone. */
  CU_ASSERT_EQUAL(fstat(fd, &st), 0);
  CU_ASSERT_EQUAL(ftruncate(fd, st.st_size - 10), 0);
  CU_ASSERT_EQUAL(eg_walseg_list(dir, &segs, &n, why, sizeof why), EG_ECORRUPT);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "without a valid end mark"));
  /* A header that does not match the name. */
  CU_ASSERT_EQUAL(ftruncate(fd, 0), 0);
  CU_ASSERT_EQUAL(pwrite(fd, "EGWALSEG", 8, 0), 8);
  close(fd);
  eg_walseg_r *r;
  CU_ASSERT_EQUAL(eg_walseg_open(dir, "00000000000000000001-00000000000000000001.seg", &r, why,
                                 sizeof why), EG_ECORRUPT);
}

/* After a failed write or fsync nothing past the last good fsync is
 * trusted: the rollback cuts the segment back to it, and the recovery then
 * closes it with the synced records only. The write fails for real
 * (RLIMIT_FSIZE, SIGXFSZ ignored: EFBIG mid-frame); a failed fsync is
 * modelled by rolling back records that were written but not synced. */
static void test_rollback_after_failure(void) {
  eg_walseg_w *w;
  uint8_t buf[128];
  char p[4200];
  struct stat st;
  struct rlimit old, lim;
  eg_walseg_recovery rec;
  eg_walseg_info *segs;
  size_t n;
  seg_path(p, sizeof p, 1, 1, ".seg.partial");
  CU_ASSERT_EQUAL_FATAL(eg_walseg_create(dir, 1, 1, &w, why, sizeof why), EG_OK);
  for (uint64_t l = 1; l <= 3; l++)
    CU_ASSERT_EQUAL_FATAL(eg_walseg_append(w, l, buf, fake_rec(l, buf, sizeof buf), why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_walseg_sync(w, why, sizeof why), EG_OK);
  off_t synced = (stat(p, &st), st.st_size);
  /* Written, never synced: as good as lost once an fsync failed. */
  CU_ASSERT_EQUAL_FATAL(eg_walseg_append(w, 4, buf, fake_rec(4, buf, sizeof buf), why, sizeof why), EG_OK);
  /* A write that fails half way. */
  void (*was)(int) = signal(SIGXFSZ, SIG_IGN);
  CU_ASSERT_EQUAL_FATAL(getrlimit(RLIMIT_FSIZE, &old), 0);
  lim = old;
  CU_ASSERT_EQUAL(stat(p, &st), 0);
  lim.rlim_cur = (rlim_t)st.st_size + 20;
  CU_ASSERT_EQUAL_FATAL(setrlimit(RLIMIT_FSIZE, &lim), 0);
  eg_err e = eg_walseg_append(w, 5, buf, fake_rec(5, buf, sizeof buf), why, sizeof why);
  CU_ASSERT_EQUAL(setrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, was);
  CU_ASSERT_EQUAL(e, EG_EIO);
  CU_ASSERT(stat(p, &st) == 0 && st.st_size > synced);
  CU_ASSERT_EQUAL_FATAL(eg_walseg_rollback(w, why, sizeof why), EG_OK);
  CU_ASSERT(stat(p, &st) == 0 && st.st_size == synced);
  CU_ASSERT_EQUAL_FATAL(eg_walseg_recover(dir, &rec, why, sizeof why), EG_OK);
  CU_ASSERT(rec.cut == 0 && rec.set_aside == 0);
  CU_ASSERT_EQUAL_FATAL(eg_walseg_list(dir, &segs, &n, why, sizeof why), EG_OK);
  CU_ASSERT(n == 1 && !segs[0].partial && segs[0].last_lsn == 3);
  free(segs);
  CU_ASSERT_EQUAL(read_all("00000000000000000001-00000000000000000001.seg", 1), 3);
}

/* A close never replaces a closed segment of the same name (another
 * history's): it fails naming both files, and the old one is intact. */
static void test_close_never_replaces(void) {
  eg_walseg_w *w;
  uint8_t buf[8] = "other";
  write_seg(1, 3, 1, 0);
  CU_ASSERT_EQUAL_FATAL(eg_walseg_create(dir, 1, 1, &w, why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_walseg_append(w, 1, buf, 5, why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_walseg_sync(w, why, sizeof why), EG_OK);
  CU_ASSERT_NOT_EQUAL(eg_walseg_close(w, why, sizeof why), EG_OK);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "00000000000000000001-00000000000000000001.seg.partial"));
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "00000000000000000001-00000000000000000001.seg already exists"));
  CU_ASSERT_EQUAL(read_all("00000000000000000001-00000000000000000001.seg", 1), 3);
  eg_walseg_abandon(w);
}

/* A bad frame in the middle of a .partial, with whole frames after it, is
 * corruption, not a torn tail: the file is set aside, not cut. */
static void test_recover_sets_corruption_aside(void) {
  char p[4200], aside[4300];
  uint8_t buf[128];
  struct stat st0, st;
  write_seg(1, 5, 1, 1);
  seg_path(p, sizeof p, 1, 1, ".seg.partial");
  CU_ASSERT_EQUAL_FATAL(stat(p, &st0), 0);
  int fd = open(p, O_RDWR);
  CU_ASSERT_FATAL(fd >= 0);
  off_t at = EG_WALSEG_HEADER_BYTES + EG_WALSEG_FRAME_BYTES + (off_t)fake_rec(1, buf, sizeof buf) + 12 + 1;
  uint8_t b;
  CU_ASSERT_EQUAL(pread(fd, &b, 1, at), 1);
  b ^= 0x01;
  CU_ASSERT_EQUAL(pwrite(fd, &b, 1, at), 1);
  close(fd);
  eg_walseg_recovery rec;
  CU_ASSERT_EQUAL_FATAL(eg_walseg_recover(dir, &rec, why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL(rec.set_aside, 1);
  CU_ASSERT_EQUAL(rec.cut, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(rec.corrupt, ".seg.partial.corrupt: record at lsn 2 fails its checksum"));
  snprintf(aside, sizeof aside, "%s.corrupt", p);
  CU_ASSERT(access(p, F_OK) != 0);
  CU_ASSERT(stat(aside, &st) == 0 && st.st_size == st0.st_size);
  eg_walseg_info *segs;
  size_t n;
  CU_ASSERT_EQUAL_FATAL(eg_walseg_list(dir, &segs, &n, why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL(n, 0);
  free(segs);
}

/* The history across overlapping segments: a higher epoch takes over from
 * its first LSN; a lower epoch starting inside a higher one is stale. */
static void test_chain(void) {
  eg_walseg_info s[4] = {
      {.first_lsn = 1, .last_lsn = 110, .epoch = 1},
      {.first_lsn = 101, .last_lsn = 200, .epoch = 2},
      {.first_lsn = 150, .last_lsn = 160, .epoch = 1}, /* stale */
      {.first_lsn = 205, .last_lsn = 210, .epoch = 2}, /* after a gap */
  };
  eg_walseg_piece p[4];
  size_t np = eg_walseg_chain(s, 4, p);
  CU_ASSERT_EQUAL_FATAL(np, 3);
  CU_ASSERT(p[0].seg == 0 && p[0].from == 1 && p[0].to == 100);
  CU_ASSERT(p[1].seg == 1 && p[1].from == 101 && p[1].to == 200);
  CU_ASSERT(p[2].seg == 3 && p[2].from == 205 && p[2].to == 210);
  /* A later segment of the same epoch from an earlier LSN (a node
   * archiving again after a restore) replaces all from there on. */
  eg_walseg_info t[2] = {{.first_lsn = 1, .last_lsn = 50, .epoch = 1},
                         {.first_lsn = 30, .last_lsn = 40, .epoch = 1}};
  np = eg_walseg_chain(t, 2, p);
  CU_ASSERT(np == 2 && p[0].to == 29 && p[1].from == 30 && p[1].to == 40);
}

/* ---- point-in-time replay from a real log -------------------------------- */

static char src[4096], dst[4096];

static void put_session(eg_store *s, const char *sid) {
  eg_txn *w;
  eg_session_rec r = ENGRAM__STORAGE__V1__SESSION_RECORD__INIT;
  r.session_id = (char *)sid;
  r.user_id = (char *)"u1";
  r.agent_id = (char *)"a";
  r.create_time_us = r.update_time_us = 1000;
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_session_put(w, "acme", &r, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
}

typedef struct {
  eg_walseg_w *w;
  uint64_t split; /* a new segment starts here */
} arch_ctx;

static int arch_visit(void *arg, uint64_t lsn, const uint8_t *rec, size_t len) {
  arch_ctx *c = arg;
  if (lsn == c->split || !c->w) {
    if (c->w) CU_ASSERT_EQUAL(eg_walseg_close(c->w, why, sizeof why), EG_OK);
    CU_ASSERT_EQUAL(eg_walseg_create(dir, lsn, 1, &c->w, why, sizeof why), EG_OK);
  }
  CU_ASSERT_EQUAL(eg_walseg_append(c->w, lsn, rec, len, why, sizeof why), EG_OK);
  return 0;
}

/* Five writes on a store, archived in two segments (1..3, 4..5). */
static void make_archive(void) {
  snprintf(src, sizeof src, "%s", eg_test_tmpdir());
  snprintf(dst, sizeof dst, "%s", eg_test_tmpdir());
  eg_store *s = eg_test_store_open(src, NULL);
  const char *ids[] = {"s1", "s2", "s3", "s4", "s5"};
  for (int i = 0; i < 5; i++) put_session(s, ids[i]);
  eg_txn *t;
  arch_ctx c = {.split = 4};
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &t), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(t), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_scan(t, 1, arch_visit, &c), EG_OK);
  eg_store_reader_end(t);
  eg_store_reader_free(t);
  CU_ASSERT_EQUAL(eg_walseg_close(c.w, why, sizeof why), EG_OK);
  eg_store_close(s);
}

static uint64_t lsn_of(const char *d) {
  eg_store *s = eg_test_store_open(d, NULL);
  uint64_t l = eg_store_last_lsn(s);
  eg_store_close(s);
  return l;
}

static void test_pitr(void) {
  eg_pitr_result res;
  make_archive();
  /* Past the end, and a gap: refused, the target dir untouched. */
  eg_pitr_target past = {.to_lsn = 6};
  CU_ASSERT_EQUAL(eg_pitr_replay(dst, dir, 0, &past, &res, why, sizeof why), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "target lsn 6 is past the archive's end (lsn 5)"));
  CU_ASSERT_EQUAL(lsn_of(dst), 0);
  /* To LSN 3 (checked first without writing), then on to the end from
   * there (the base is now at 3). */
  eg_pitr_target to3 = {.to_lsn = 3}, all = {0};
  CU_ASSERT_EQUAL_FATAL(eg_pitr_check(dir, 0, 1, &to3, &res, why, sizeof why), EG_OK);
  CU_ASSERT(res.lsn == 3 && res.records == 3 && res.epoch == 1);
  CU_ASSERT_EQUAL(lsn_of(dst), 0);
  CU_ASSERT_EQUAL_FATAL(eg_pitr_replay(dst, dir, 0, &to3, &res, why, sizeof why), EG_OK);
  CU_ASSERT(res.base_lsn == 0 && res.lsn == 3 && res.records == 3 && res.epoch == 1);
  CU_ASSERT_EQUAL_FATAL(eg_pitr_replay(dst, dir, 0, &all, &res, why, sizeof why), EG_OK);
  CU_ASSERT(res.base_lsn == 3 && res.lsn == 5 && res.records == 2);
  eg_store *s = eg_test_store_open(dst, NULL);
  eg_txn *t;
  eg_session_rec *rec = NULL;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &t), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(t), EG_OK);
  CU_ASSERT_EQUAL(eg_store_session_get(t, "acme", "s5", &rec), EG_OK);
  if (rec) engram__storage__v1__session_record__free_unpacked(rec, NULL);
  eg_store_reader_end(t);
  eg_store_reader_free(t);
  eg_store_close(s);
  /* A gap: segment 1..3 gone, a new dir (base 0) is refused. */
  char p[4200];
  seg_path(p, sizeof p, 1, 1, ".seg");
  CU_ASSERT_EQUAL(unlink(p), 0);
  eg_test_rmdir(dst);
  snprintf(dst, sizeof dst, "%s", eg_test_tmpdir());
  CU_ASSERT_EQUAL(eg_pitr_replay(dst, dir, 0, &all, &res, why, sizeof why), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "lsn 1..3 are missing"));
  CU_ASSERT_EQUAL(lsn_of(dst), 0);
  eg_test_rmdir(src);
  eg_test_rmdir(dst);
}

/* The base must be on the archive's history: a store whose record at its
 * own LSN differs from the archive's (a fork in one epoch) is refused; an
 * archive that starts right after the base is taken, flagged unchecked;
 * a time target before the base's last record is refused. */
static void test_pitr_link(void) {
  eg_pitr_result res;
  eg_pitr_target all = {0}, to3 = {.to_lsn = 3};
  make_archive();
  /* Another history of three writes: same LSNs and epoch, other bytes. */
  eg_store *s = eg_test_store_open(dst, NULL);
  put_session(s, "x1");
  put_session(s, "x2");
  put_session(s, "x3");
  eg_store_close(s);
  CU_ASSERT_EQUAL(eg_pitr_replay(dst, dir, 0, &all, &res, why, sizeof why), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "differs from the base's own"));
  CU_ASSERT_EQUAL(lsn_of(dst), 3);
  /* The same history to 3: linked; then a time before lsn 3's own. */
  eg_test_rmdir(dst);
  snprintf(dst, sizeof dst, "%s", eg_test_tmpdir());
  CU_ASSERT_EQUAL_FATAL(eg_pitr_replay(dst, dir, 0, &to3, &res, why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL(res.link_unchecked, 0);
  eg_pitr_target early = {.to_time_us = 1};
  CU_ASSERT_EQUAL(eg_pitr_replay(dst, dir, 0, &early, &res, why, sizeof why), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "target time 1970-01-01T00:00:00.000001Z is before the "
                                     "base's time"));
  /* Without segment 1..3 the archive starts at 4, right after the base. */
  char p[4200];
  seg_path(p, sizeof p, 1, 1, ".seg");
  CU_ASSERT_EQUAL(unlink(p), 0);
  CU_ASSERT_EQUAL(eg_pitr_check(dir, 3, 1, &all, &res, why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL(res.link_unchecked, 1);
  CU_ASSERT_EQUAL(eg_pitr_check(dir, 3, 2, &all, &res, why, sizeof why), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "older than the base's 2"));
  CU_ASSERT_EQUAL(eg_pitr_check(dir, 2, 1, &all, &res, why, sizeof why), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "does not hold the base's lsn 2"));
  CU_ASSERT_EQUAL_FATAL(eg_pitr_replay(dst, dir, 0, &all, &res, why, sizeof why), EG_OK);
  CU_ASSERT(res.link_unchecked == 1 && res.lsn == 5 && res.records == 2);
  eg_test_rmdir(src);
  eg_test_rmdir(dst);
}

/* The archiver's hold in the trim floor: it keeps what is not archived,
 * over the erase floor, but not past the cap. */
static void test_trim_hold(void) {
  eg_trim_view v = {.last = 100, .first = 1, .young = 101, .retain_records = 1000,
                    .retain_cap = 1000};
  CU_ASSERT_EQUAL(eg_repl_trim_floor(&v), 100); /* all old: only the newest stays */
  v.archive_next = 60;
  CU_ASSERT_EQUAL(eg_repl_trim_floor(&v), 60);
  v.erase_floor = 80;
  CU_ASSERT_EQUAL(eg_repl_trim_floor(&v), 60); /* the archive stays gap-free */
  v.retain_cap = 30;
  CU_ASSERT_EQUAL(eg_repl_trim_floor(&v), 71); /* but the cap wins */
  v.archive_next = 101; /* all archived */
  CU_ASSERT_EQUAL(eg_repl_trim_floor(&v), 100);
}

void eg_test_register_walarchive(void) {
  CU_pSuite s = CU_add_suite_with_setup_and_teardown("walarchive", NULL, NULL, setup, teardown);
  CU_add_test(s, "round_trip", test_round_trip);
  CU_add_test(s, "append_order", test_append_order);
  CU_add_test(s, "recover_torn_tail", test_recover_torn_tail);
  CU_add_test(s, "corruption", test_corruption);
  CU_add_test(s, "rollback_after_failure", test_rollback_after_failure);
  CU_add_test(s, "close_never_replaces", test_close_never_replaces);
  CU_add_test(s, "recover_sets_corruption_aside", test_recover_sets_corruption_aside);
  CU_add_test(s, "chain", test_chain);
  CU_add_test(s, "pitr", test_pitr);
  CU_add_test(s, "pitr_link", test_pitr_link);
  CU_add_test(s, "trim_hold", test_trim_hold);
}
