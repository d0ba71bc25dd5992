/* backup/: the grandfather-father-son selection over synthetic dates (and
 * times not to be believed), and the backup file (atomic writer, target
 * checks, the temp file of a create that did not finish, header, checked
 * extract) on real files. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backup/backup.h"
#include "backup/place.h"
#include "suites.h"

/* ---- retention -------------------------------------------------------------- */

/* Unix microseconds of a UTC date and hour. */
static int64_t utc(int y, int mon, int d, int h) {
  struct tm tm = {.tm_year = y - 1900, .tm_mon = mon - 1, .tm_mday = d, .tm_hour = h};
  return (int64_t)timegm(&tm) * 1000000;
}

#define DAY_US (86400LL * 1000000)

/* The selection at now_us with a skew of one day. */
static void check_retain_at(const int64_t *t, size_t n, int daily, int weekly, int monthly,
                            int64_t now_us, const int *want) {
  eg_retain keep[16];
  const int policy[3] = {daily, weekly, monthly};
  CU_ASSERT_EQUAL_FATAL(eg_backup_retain(t, n, policy, now_us, DAY_US, keep), EG_OK);
  for (size_t i = 0; i < n; i++) {
    if ((int)keep[i] != want[i])
      fprintf(stderr, "retain: backup %zu: keep %d, want %d\n", i, (int)keep[i], want[i]);
    CU_ASSERT_EQUAL((int)keep[i], want[i]);
  }
}

/* The selection at a now after every date of the tests that use it. */
static void check_retain(const int64_t *t, size_t n, int daily, int weekly, int monthly,
                         const int *want) {
  check_retain_at(t, n, daily, weekly, monthly, utc(2027, 1, 1, 0), want);
}

static void test_retain_gfs(void) {
  /* Out of order on purpose. 2026-03-02 is a Monday. */
  const int64_t t[] = {
      utc(2026, 2, 20, 12), /* Fri, the week before: a month's */
      utc(2026, 3, 2, 8),   /* Mon, older on the newest day */
      utc(2026, 3, 2, 10),  /* Mon: the newest */
      utc(2026, 3, 1, 12),  /* Sun: a day's and the previous week's newest */
      utc(2026, 2, 28, 12), /* Sat: February's newest */
      utc(2026, 2, 10, 12), /* Tue */
      utc(2026, 1, 15, 12), /* January's newest */
      utc(2025, 12, 31, 12), /* a fourth month: beyond monthly 3 */
  };
  const int want[] = {0, 0, 1, 1, 1, 0, 1, 0};
  check_retain(t, 8, 2, 2, 3, want);
  /* More periods asked for than there are backups: every period's newest. */
  const int want_all[] = {1, 0, 1, 1, 1, 1, 1, 1};
  check_retain(t, 8, 30, 12, 12, want_all);
}

static void test_retain_edges(void) {
  /* ISO weeks across a year: 2026-01-01 (Thu) and 2025-12-31 (Wed) share
   * the week of Monday 2025-12-29; 2025-12-28 (Sun) is the week before. */
  const int64_t t[] = {utc(2025, 12, 28, 10), utc(2026, 1, 1, 10), utc(2025, 12, 31, 10)};
  const int want_weeks[] = {1, 1, 0};
  check_retain(t, 3, 0, 2, 0, want_weeks);
  /* Keep nothing: the newest stays all the same. */
  const int want_newest[] = {0, 1, 0};
  check_retain(t, 3, 0, 0, 0, want_newest);
  /* One day, many backups: only the newest of it. */
  const int64_t same[] = {utc(2026, 5, 5, 1), utc(2026, 5, 5, 23), utc(2026, 5, 5, 12)};
  const int want_same[] = {0, 1, 0};
  check_retain(same, 3, 7, 4, 12, want_same);
  /* Months: the newest of each of the last 2 that have one, gaps skipped. */
  const int64_t months[] = {utc(2026, 1, 31, 23), utc(2025, 10, 1, 0), utc(2026, 1, 1, 0),
                            utc(2025, 9, 30, 23)};
  const int want_months[] = {1, 1, 0, 0};
  check_retain(months, 4, 0, 0, 2, want_months);
  eg_retain keep[1];
  const int policy[3] = {1, 1, 1};
  CU_ASSERT_EQUAL(eg_backup_retain(NULL, 0, policy, 0, 0, keep), EG_OK);
}

static void test_retain_suspect_times(void) {
  const int64_t now = utc(2026, 3, 2, 12);
  CU_ASSERT_FALSE(eg_backup_time_suspect(now + DAY_US, now, DAY_US));
  CU_ASSERT_TRUE(eg_backup_time_suspect(now + DAY_US + 1, now, DAY_US));
  CU_ASSERT_FALSE(eg_backup_time_suspect(1, now, DAY_US));
  CU_ASSERT_TRUE(eg_backup_time_suspect(0, now, DAY_US));
  CU_ASSERT_TRUE(eg_backup_time_suspect(INT64_MIN, now, DAY_US));
  CU_ASSERT_TRUE(eg_backup_time_suspect(INT64_MAX, now, DAY_US));
  CU_ASSERT_TRUE(eg_backup_time_suspect(INT64_MAX, -now, 0));
  /* Out of order on purpose: the odd ones must neither be the newest, nor
   * take a slot, nor be deleted. */
  const int64_t t[] = {
      utc(2099, 1, 1, 0),   /* a clock gone wrong */
      utc(2026, 3, 2, 10),  /* today: the newest believable one */
      (int64_t)1 << 62,     /* year 148108 */
      utc(2026, 3, 1, 12),  /* yesterday */
      0,                    /* no time */
      utc(2026, 2, 10, 12), /* February's newest */
      -5000000,             /* 1969 */
      now + 12 * 3600LL * 1000000, /* ahead, within the skew: believed */
      now + 2 * DAY_US,     /* past the skew */
      INT64_MIN,
      utc(2026, 1, 20, 12),
  };
  const int S = EG_RETAIN_SUSPECT;
  const int want[] = {S, 0, S, 0, S, 0, S, 1, S, S, 0};
  check_retain_at(t, 11, 1, 1, 1, now, want);
  const int want_more[] = {S, 1, S, 1, S, 1, S, 1, S, S, 1};
  check_retain_at(t, 11, 2, 2, 3, now, want_more);
  /* Only suspect ones: none is kept as the newest, none deleted. */
  const int64_t odd[] = {0, utc(2099, 1, 1, 0)};
  const int want_odd[] = {S, S};
  check_retain_at(odd, 2, 1, 1, 1, now, want_odd);
}

/* ---- the file ---------------------------------------------------------------- */

/* Set: fsync of a directory fails with EIO (eg_unit links with
 * --wrap=fsync). */
static int fail_dir_fsync;

int __real_fsync(int fd);
int __wrap_fsync(int fd) {
  struct stat st;
  if (fail_dir_fsync && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    errno = EIO;
    return -1;
  }
  return __real_fsync(fd);
}

static char dir[4096];

static void setup(void) { snprintf(dir, sizeof dir, "%s", eg_test_tmpdir()); }
static void teardown(void) { eg_test_rmdir(dir); }

/* A backup at path holding n bytes of a pattern, its header h. */
static void write_backup(const char *path, size_t n, eg_backup_header *h) {
  char why[256] = "";
  uint8_t buf[5000];
  eg_sha256 hs;
  eg_backup_writer *w;
  for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(i * 31);
  CU_ASSERT_EQUAL_FATAL(eg_backup_writer_open(path, 0, &w, why, sizeof why), EG_OK);
  *h = (eg_backup_header){.lsn = 42, .epoch = 3, .schema_version = 4, .time_us = 1700000000123456,
                          .data_bytes = n, .n_key_ids = 2, .key_ids = {1, 7}};
  eg_sha256_init(&hs);
  for (size_t off = 0; off < n; off += sizeof buf) {
    size_t k = n - off < sizeof buf ? n - off : sizeof buf;
    CU_ASSERT_EQUAL_FATAL(eg_backup_writer_write(w, buf, k, why, sizeof why), EG_OK);
    eg_sha256_update(&hs, buf, k);
  }
  eg_sha256_final(&hs, h->sha256);
  CU_ASSERT_EQUAL_FATAL(eg_backup_writer_commit(w, h, why, sizeof why), EG_OK);
  if (*why) fprintf(stderr, "write_backup: %s\n", why);
}

static void test_file_round_trip(void) {
  char path[4200], out[4200], why[256] = "";
  struct stat st;
  eg_backup_header h, got;
  snprintf(path, sizeof path, "%s/b.egb", dir);
  snprintf(out, sizeof out, "%s/data", dir);
  write_backup(path, 12345, &h);
  CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
  CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
  CU_ASSERT_EQUAL(st.st_size, EG_BACKUP_HEADER_BYTES + 12345);
  CU_ASSERT_EQUAL(eg_backup_file_kind_of(path), EG_BACKUP_FILE_BACKUP);
  CU_ASSERT_EQUAL_FATAL(eg_backup_header_read(path, &got, why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL(got.format, EG_BACKUP_FORMAT);
  CU_ASSERT_EQUAL(got.lsn, 42);
  CU_ASSERT_EQUAL(got.epoch, 3);
  CU_ASSERT_EQUAL(got.schema_version, 4);
  CU_ASSERT_EQUAL(got.time_us, h.time_us);
  CU_ASSERT_EQUAL(got.n_key_ids, 2);
  CU_ASSERT_EQUAL(got.key_ids[1], 7);
  CU_ASSERT(memcmp(got.sha256, h.sha256, 32) == 0);
  CU_ASSERT_EQUAL(eg_backup_extract(path, out, &got, why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL_FATAL(stat(out, &st), 0);
  CU_ASSERT_EQUAL(st.st_size, 12345);
  CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
}

static void test_file_refused(void) {
  char path[4200], out[4200], why[256] = "";
  struct stat st;
  eg_backup_header h, got;
  snprintf(path, sizeof path, "%s/b.egb", dir);
  snprintf(out, sizeof out, "%s/data", dir);
  write_backup(path, 9000, &h);
  /* a flipped data byte: the digest */
  int fd = open(path, O_RDWR);
  CU_ASSERT_FATAL(fd >= 0);
  uint8_t b;
  CU_ASSERT_EQUAL(pread(fd, &b, 1, EG_BACKUP_HEADER_BYTES + 5000), 1);
  b ^= 0x01;
  CU_ASSERT_EQUAL(pwrite(fd, &b, 1, EG_BACKUP_HEADER_BYTES + 5000), 1);
  close(fd);
  CU_ASSERT_EQUAL(eg_backup_extract(path, out, &got, why, sizeof why), EG_ECORRUPT);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "SHA-256"));
  CU_ASSERT_NOT_EQUAL(stat(out, &st), 0); /* removed */
  /* cut short */
  CU_ASSERT_EQUAL_FATAL(truncate(path, EG_BACKUP_HEADER_BYTES + 100), 0);
  CU_ASSERT_EQUAL(eg_backup_header_read(path, &got, why, sizeof why), EG_ECORRUPT);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "truncated"));
  /* not a backup */
  fd = open(path, O_WRONLY | O_TRUNC);
  CU_ASSERT_EQUAL(write(fd, "hello, world", 12), 12);
  close(fd);
  CU_ASSERT_EQUAL(eg_backup_file_kind_of(path), EG_BACKUP_FILE_OTHER);
  CU_ASSERT_EQUAL(eg_backup_header_read(path, &got, why, sizeof why), EG_ECORRUPT);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "not a backup"));
  /* a commit whose header does not match what was written: nothing lands */
  char why2[256];
  eg_backup_writer *w;
  snprintf(path, sizeof path, "%s/c.egb", dir);
  CU_ASSERT_EQUAL_FATAL(eg_backup_writer_open(path, 0, &w, why2, sizeof why2), EG_OK);
  CU_ASSERT_EQUAL(eg_backup_writer_write(w, "abc", 3, why2, sizeof why2), EG_OK);
  h.data_bytes = 3;
  CU_ASSERT_EQUAL(eg_backup_writer_commit(w, &h, why2, sizeof why2), EG_ECORRUPT);
  CU_ASSERT_NOT_EQUAL(stat(path, &st), 0);
  eg_test_rmdir(dir);
  CU_ASSERT_EQUAL(mkdir(dir, 0700), 0); /* no temp file was left either */
}

/* The single temp file in dir (its name into tmp): 1, or 0 if none. */
static int temp_in(const char *d, char *tmp, size_t n) {
  DIR *dh = opendir(d);
  struct dirent *de;
  int got = 0;
  while (dh && !got && (de = readdir(dh)) != NULL)
    if (strstr(de->d_name, ".tmp-")) got = snprintf(tmp, n, "%s/%s", d, de->d_name) > 0;
  if (dh) closedir(dh);
  return got;
}

static void test_file_targets(void) {
  char path[4200], sub[4200], why[256] = "";
  eg_backup_writer *w = NULL;
  eg_backup_header h;
  snprintf(path, sizeof path, "%s/b.egb", dir);
  snprintf(sub, sizeof sub, "%s/sub", dir);
  write_backup(path, 100, &h);
  /* an existing file: refused unless replace, before any temp is made */
  CU_ASSERT_EQUAL(eg_backup_writer_open(path, 0, &w, why, sizeof why), EG_EEXIST);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "already exists"));
  /* a directory: refused even with replace */
  CU_ASSERT_EQUAL_FATAL(mkdir(sub, 0700), 0);
  CU_ASSERT_EQUAL(eg_backup_writer_open(sub, 1, &w, why, sizeof why), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "is a directory"));
  /* a missing dir */
  snprintf(sub, sizeof sub, "%s/none/b.egb", dir);
  CU_ASSERT_EQUAL(eg_backup_writer_open(sub, 1, &w, why, sizeof why), EG_EIO);
  CU_ASSERT_PTR_NULL(w);
  char tmp[4400];
  CU_ASSERT_FALSE(temp_in(dir, tmp, sizeof tmp));
  /* replace: the new one lands */
  CU_ASSERT_EQUAL_FATAL(eg_backup_writer_open(path, 1, &w, why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL(eg_backup_writer_write(w, "abc", 3, why, sizeof why), EG_OK);
  h.data_bytes = 3;
  eg_sha256 hs;
  eg_sha256_init(&hs);
  eg_sha256_update(&hs, "abc", 3);
  eg_sha256_final(&hs, h.sha256);
  CU_ASSERT_EQUAL(eg_backup_writer_commit(w, &h, why, sizeof why), EG_OK);
  eg_backup_header got;
  CU_ASSERT_EQUAL(eg_backup_header_read(path, &got, why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL(got.data_bytes, 3);
  /* without replace, a file that appears meanwhile is kept, the temp goes */
  snprintf(sub, sizeof sub, "%s/c.egb", dir);
  CU_ASSERT_EQUAL_FATAL(eg_backup_writer_open(sub, 0, &w, why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL(eg_backup_writer_write(w, "abc", 3, why, sizeof why), EG_OK);
  FILE *f = fopen(sub, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs("precious", f);
  fclose(f);
  CU_ASSERT_EQUAL(eg_backup_writer_commit(w, &h, why, sizeof why), EG_EEXIST);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "not replaced"));
  CU_ASSERT_EQUAL(eg_backup_file_kind_of(sub), EG_BACKUP_FILE_OTHER);
  CU_ASSERT_FALSE(temp_in(dir, tmp, sizeof tmp));
}

static void test_file_dir_fsync_fails(void) {
  char path[4200], tmp[4400], why[256] = "";
  eg_backup_writer *w;
  eg_backup_header h = {.data_bytes = 3}, got;
  snprintf(path, sizeof path, "%s/b.egb", dir);
  eg_sha256 hs;
  eg_sha256_init(&hs);
  eg_sha256_update(&hs, "abc", 3);
  eg_sha256_final(&hs, h.sha256);
  CU_ASSERT_EQUAL_FATAL(eg_backup_writer_open(path, 0, &w, why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL(eg_backup_writer_write(w, "abc", 3, why, sizeof why), EG_OK);
  fail_dir_fsync = 1;
  eg_err e = eg_backup_writer_commit(w, &h, why, sizeof why);
  fail_dir_fsync = 0;
  /* an error, but one that says the whole file is there */
  CU_ASSERT_EQUAL(e, EG_EIO);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "is in place, but the fsync of its directory failed"));
  CU_ASSERT_EQUAL(eg_backup_header_read(path, &got, why, sizeof why), EG_OK);
  CU_ASSERT_FALSE(temp_in(dir, tmp, sizeof tmp));
}

static void test_file_incomplete(void) {
  char path[4200], tmp[4400], why[256] = "";
  eg_backup_writer *w;
  eg_backup_header h;
  snprintf(path, sizeof path, "%s/b.egb", dir);
  /* while a writer has it: marked and locked */
  CU_ASSERT_EQUAL_FATAL(eg_backup_writer_open(path, 0, &w, why, sizeof why), EG_OK);
  CU_ASSERT_EQUAL(eg_backup_writer_write(w, "abc", 3, why, sizeof why), EG_OK);
  CU_ASSERT_FATAL(temp_in(dir, tmp, sizeof tmp));
  CU_ASSERT_STRING_EQUAL(tmp, eg_backup_writer_temp(w));
  CU_ASSERT_EQUAL(eg_backup_file_kind_of(tmp), EG_BACKUP_FILE_WRITING);
  eg_backup_writer_abort(w);
  CU_ASSERT_FALSE(temp_in(dir, tmp, sizeof tmp));
  /* a writer that died (a child that exits without abort or commit) */
  pid_t pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    if (eg_backup_writer_open(path, 0, &w, why, sizeof why) != EG_OK) _exit(1);
    _exit(eg_backup_writer_write(w, "abc", 3, why, sizeof why) == EG_OK ? 0 : 1);
  }
  int status;
  CU_ASSERT_EQUAL_FATAL(waitpid(pid, &status, 0), pid);
  CU_ASSERT_EQUAL(status, 0);
  CU_ASSERT_FATAL(temp_in(dir, tmp, sizeof tmp));
  CU_ASSERT_EQUAL(eg_backup_file_kind_of(tmp), EG_BACKUP_FILE_INCOMPLETE);
  CU_ASSERT_EQUAL(eg_backup_header_read(tmp, &h, why, sizeof why), EG_ECORRUPT);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "did not finish"));
}

/* Both ways of putting a file in place (RENAME_NOREPLACE and the fallback
 * of file systems without it) never replace an existing target. */
static void test_rename_noreplace(void) {
  int (*const ways[])(const char *, const char *) = {eg_rename_noreplace, eg_rename_checked};
  const char *dir = eg_test_tmpdir();
  char a[4096], b[4096], got[8] = "";
  snprintf(a, sizeof a, "%s/a", dir);
  snprintf(b, sizeof b, "%s/b", dir);
  for (size_t i = 0; i < 2; i++) {
    FILE *f = fopen(a, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs("new", f);
    fclose(f);
    f = fopen(b, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs("old", f);
    fclose(f);
    errno = 0;
    CU_ASSERT_EQUAL(ways[i](a, b), -1);
    CU_ASSERT_EQUAL(errno, EEXIST);
    CU_ASSERT_EQUAL(access(a, F_OK), 0);
    f = fopen(b, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_PTR_NOT_NULL(fgets(got, sizeof got, f));
    fclose(f);
    CU_ASSERT_STRING_EQUAL(got, "old");
    CU_ASSERT_EQUAL(unlink(b), 0);
    CU_ASSERT_EQUAL(ways[i](a, b), 0);
    CU_ASSERT_NOT_EQUAL(access(a, F_OK), 0);
    CU_ASSERT_EQUAL(unlink(b), 0);
  }
  eg_test_rmdir(dir);
}

void eg_test_register_backup(void) {
  CU_pSuite s = CU_add_suite_with_setup_and_teardown("backup", NULL, NULL, setup, teardown);
  CU_add_test(s, "grandfather-father-son over synthetic dates", test_retain_gfs);
  CU_add_test(s, "retention edges: ISO week across a year, keep 0, one day, months",
              test_retain_edges);
  CU_add_test(s, "retention: times in the future, zero, negative take no slot, never deleted",
              test_retain_suspect_times);
  CU_add_test(s, "file: write, header, extract, 0600", test_file_round_trip);
  CU_add_test(s, "file: existing target, directory, missing dir, replace, appeared meanwhile",
              test_file_targets);
  CU_add_test(s, "file: the temp file of a running and of a dead create", test_file_incomplete);
  CU_add_test(s, "file: a failed fsync of the dir after the rename: in place, not durable",
              test_file_dir_fsync_fails);
  CU_add_test(s, "file: flipped byte, truncated, not a backup, mismatched commit",
              test_file_refused);
  CU_add_test(s, "place: RENAME_NOREPLACE and its fallback never replace a file",
              test_rename_noreplace);
}
