/* backup/: the grandfather-father-son selection over synthetic dates, and
 * the backup file (atomic writer, header, checked extract) on real files. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backup/backup.h"
#include "suites.h"

/* ---- retention -------------------------------------------------------------- */

/* Unix microseconds of a UTC date and hour. */
static int64_t utc(int y, int mon, int d, int h) {
  struct tm tm = {.tm_year = y - 1900, .tm_mon = mon - 1, .tm_mday = d, .tm_hour = h};
  return (int64_t)timegm(&tm) * 1000000;
}

static void check_retain(const int64_t *t, size_t n, int daily, int weekly, int monthly,
                         const int *want) {
  int keep[16];
  const int policy[3] = {daily, weekly, monthly};
  CU_ASSERT_EQUAL_FATAL(eg_backup_retain(t, n, policy, keep), EG_OK);
  for (size_t i = 0; i < n; i++) {
    if (keep[i] != want[i]) fprintf(stderr, "retain: backup %zu: keep %d, want %d\n", i, keep[i], want[i]);
    CU_ASSERT_EQUAL(keep[i], want[i]);
  }
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
  int keep[1];
  const int policy[3] = {1, 1, 1};
  CU_ASSERT_EQUAL(eg_backup_retain(NULL, 0, policy, keep), EG_OK);
}

/* ---- the file ---------------------------------------------------------------- */

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
  CU_ASSERT_EQUAL_FATAL(eg_backup_writer_open(path, &w, why, sizeof why), EG_OK);
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
  CU_ASSERT_EQUAL(eg_backup_has_magic(path), 1);
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
  CU_ASSERT_EQUAL(eg_backup_has_magic(path), 0);
  CU_ASSERT_EQUAL(eg_backup_header_read(path, &got, why, sizeof why), EG_ECORRUPT);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "not a backup"));
  /* a commit whose header does not match what was written: nothing lands */
  char why2[256];
  eg_backup_writer *w;
  snprintf(path, sizeof path, "%s/c.egb", dir);
  CU_ASSERT_EQUAL_FATAL(eg_backup_writer_open(path, &w, why2, sizeof why2), EG_OK);
  CU_ASSERT_EQUAL(eg_backup_writer_write(w, "abc", 3, why2, sizeof why2), EG_OK);
  h.data_bytes = 3;
  CU_ASSERT_EQUAL(eg_backup_writer_commit(w, &h, why2, sizeof why2), EG_ECORRUPT);
  CU_ASSERT_NOT_EQUAL(stat(path, &st), 0);
  eg_test_rmdir(dir);
  CU_ASSERT_EQUAL(mkdir(dir, 0700), 0); /* no temp file was left either */
}

void eg_test_register_backup(void) {
  CU_pSuite s = CU_add_suite_with_setup_and_teardown("backup", NULL, NULL, setup, teardown);
  CU_add_test(s, "grandfather-father-son over synthetic dates", test_retain_gfs);
  CU_add_test(s, "retention edges: ISO week across a year, keep 0, one day, months",
              test_retain_edges);
  CU_add_test(s, "file: write, header, extract, 0600", test_file_round_trip);
  CU_add_test(s, "file: flipped byte, truncated, not a backup, mismatched commit",
              test_file_refused);
}
