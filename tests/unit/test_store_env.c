/* store_env: what the store does around its records: named meta values,
 * reader slots, LMDB error mapping, the data dir and its files. Against
 * real LMDB files in a temp dir. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "storage/storage.h"
#include "suites.h"

static char tdir[4096];

static eg_store *open_store(const eg_store_opts *o) {
  eg_store *s = NULL;
  char err[256];
  eg_err e = eg_store_open(tdir, o, &s, err, sizeof err);
  if (e) fprintf(stderr, "eg_store_open: %s: %s\n", eg_err_name(e), err);
  CU_ASSERT_EQUAL_FATAL(e, EG_OK);
  return s;
}

/* ---- named meta values ------------------------------------------------------ */

static void test_meta_values(void) {
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  eg_store *s = open_store(NULL);
  char buf[16];
  size_t len = 0;
  CU_ASSERT_EQUAL(eg_store_meta_get(s, "fingerprint", buf, sizeof buf, &len), EG_ENOTFOUND);
  CU_ASSERT_EQUAL(eg_store_meta_put(s, "fingerprint", "abc", 3), EG_OK);
  CU_ASSERT_EQUAL(eg_store_meta_get(s, "fingerprint", buf, sizeof buf, &len), EG_OK);
  CU_ASSERT_EQUAL(len, 3);
  CU_ASSERT_EQUAL(memcmp(buf, "abc", 3), 0);
  /* Too small a buffer: the size needed, not a truncated value. */
  CU_ASSERT_EQUAL(eg_store_meta_get(s, "fingerprint", buf, 2, &len), EG_ELIMIT);
  CU_ASSERT_EQUAL(len, 3);
  /* Names that could clash or smuggle bytes, and oversized values. */
  CU_ASSERT_EQUAL(eg_store_meta_put(s, "", "x", 1), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_store_meta_put(s, "a b", "x", 1), EG_EINVAL);
  char longname[EG_STORE_META_NAME_MAX + 2];
  memset(longname, 'n', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  CU_ASSERT_EQUAL(eg_store_meta_put(s, longname, "x", 1), EG_EINVAL);
  longname[EG_STORE_META_NAME_MAX] = '\0';
  CU_ASSERT_EQUAL(eg_store_meta_put(s, longname, "x", 1), EG_OK);
  static char big[EG_STORE_META_VALUE_MAX + 1];
  CU_ASSERT_EQUAL(eg_store_meta_put(s, "big", big, sizeof big), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_store_meta_put(s, "big", big, sizeof big - 1), EG_OK);
  /* A named value is not the store's own meta: the LSN stays put. */
  CU_ASSERT_EQUAL(eg_store_meta_put(s, "last_lsn", "12345678", 8), EG_OK);
  CU_ASSERT_EQUAL(eg_store_last_lsn(s), 0);
  eg_store_close(s);
  /* Durable across a reopen. */
  s = open_store(NULL);
  CU_ASSERT_EQUAL(eg_store_last_lsn(s), 0);
  CU_ASSERT_EQUAL(eg_store_meta_get(s, "fingerprint", buf, sizeof buf, &len), EG_OK);
  CU_ASSERT_EQUAL(len, 3);
  eg_store_close(s);
  eg_test_rmdir(tdir);
}

void eg_test_register_store_env(void) {
  CU_pSuite s = CU_add_suite("store_env", NULL, NULL);
  CU_add_test(s, "named meta values", test_meta_values);
}
