/* One runner for every unit suite: `eg_unit [suite]` runs one suite (as
 * CTest does, one entry per suite) or, without an argument, all of them. */
#define _GNU_SOURCE
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>

#include "suites.h"

const char *eg_test_tmpdir(void) {
  static char path[4096];
  const char *base = getenv("TMPDIR");
  snprintf(path, sizeof path, "%s/eg_unit_XXXXXX", base && *base ? base : "/tmp");
  if (!mkdtemp(path)) {
    perror("mkdtemp");
    exit(2);
  }
  return path;
}

static int eg_test_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  return remove(p);
}

void eg_test_rmdir(const char *dir) { nftw(dir, eg_test_rm_one, 16, FTW_DEPTH | FTW_PHYS); }

eg_store *eg_test_store_open(const char *dir, const eg_store_opts *opts) {
  eg_store *s = NULL;
  char err[256] = "";
  eg_err e = eg_store_open(dir, opts, &s, err, sizeof err);
  if (e) fprintf(stderr, "eg_store_open(%s): %s: %s\n", dir, eg_err_name(e), err);
  CU_ASSERT_EQUAL_FATAL(e, EG_OK);
  return s;
}

eg_keyring *eg_test_keyring(const char *text) {
  char path[4200], err[256] = "";
  const char *dir = eg_test_tmpdir();
  eg_keyring *kr = NULL;
  snprintf(path, sizeof path, "%s/keyring", dir);
  FILE *f = fopen(path, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs(text, f);
  CU_ASSERT_EQUAL_FATAL(fclose(f), 0);
  CU_ASSERT_EQUAL_FATAL(chmod(path, 0600), 0); /* a keyring is owner-only */
  eg_err e = eg_keyring_load(path, &kr, err, sizeof err);
  if (e) fprintf(stderr, "eg_keyring_load: %s: %s\n", eg_err_name(e), err);
  eg_test_rmdir(dir);
  CU_ASSERT_EQUAL_FATAL(e, EG_OK);
  return kr;
}

eg_txn *eg_test_reader(eg_store *s) {
  eg_txn *r;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &r), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(r), EG_OK);
  return r;
}

void eg_test_reader_done(eg_txn *r) {
  eg_store_reader_end(r);
  eg_store_reader_free(r);
}

struct eg_suite_entry {
  const char *name;
  void (*reg)(void);
};

static const struct eg_suite_entry eg_suites[] = {
#define EG_TEST_ROW(name) {#name, eg_test_register_##name},
    EG_TEST_SUITE_MAP(EG_TEST_ROW)
#undef EG_TEST_ROW
};

int main(int argc, char **argv) {
  const char *only = argc > 1 ? argv[1] : NULL;
  int found = 0;
  if (CU_initialize_registry() != CUE_SUCCESS) return 2;
  for (size_t i = 0; i < sizeof eg_suites / sizeof eg_suites[0]; i++) {
    if (only && strcmp(only, eg_suites[i].name) != 0) continue;
    eg_suites[i].reg();
    found = 1;
  }
  if (!found) {
    fprintf(stderr, "eg_unit: no suite named %s\n", only);
    CU_cleanup_registry();
    return 2;
  }
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
  unsigned run = CU_get_number_of_tests_run();
  CU_cleanup_registry();
  return (failed || run == 0) ? 1 : 0;
}
