/* client/lib/tls.c through eg_client_new_tls: what it refuses to make a
 * client from (unreadable, empty, non-PEM, oversized files; a certificate
 * without its key), each named, and the size limit at its edge. The
 * handshakes themselves are tested end to end (tests/e2e/test_tls_clients.py). */
#include <sys/stat.h>
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engram.h"
#include "suites.h"

static char dir[4096];
static void setup(void) { snprintf(dir, sizeof dir, "%s", eg_test_tmpdir()); }
static void teardown(void) { eg_test_rmdir(dir); }

/* dir/name holding len bytes: a PEM header, then filler. */
static const char *write_file(const char *name, size_t len) {
  static char path[4200];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  const char *head = "-----BEGIN CERTIFICATE-----\n";
  size_t n = len < strlen(head) ? len : strlen(head);
  fwrite(head, 1, n, f);
  for (; n < len; n++) fputc('A', f);
  fclose(f);
  return path;
}

static char err[512];

/* eg_client_new_tls with tls; the client (freed) made or not. */
static int made(const eg_client_tls *tls) {
  err[0] = '\0';
  errno = 0;
  eg_client *c = eg_client_new_tls("127.0.0.1:1", "tok", tls, err, sizeof err);
  eg_client_free(c);
  return c != NULL;
}

static void test_files_refused(void) {
  char missing[4200];
  snprintf(missing, sizeof missing, "%s/none.pem", dir);
  CU_ASSERT_FALSE(made(&(eg_client_tls){.ca_file = missing}));
  CU_ASSERT_EQUAL(errno, ENOENT);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "CA bundle"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, missing));

  CU_ASSERT_FALSE(made(&(eg_client_tls){.ca_file = write_file("empty.pem", 0)}));
  CU_ASSERT_EQUAL(errno, EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "the file is empty"));

  char text[4200];
  snprintf(text, sizeof text, "%s/text.pem", dir);
  FILE *f = fopen(text, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs("not a certificate\n", f);
  fclose(f);
  CU_ASSERT_FALSE(made(&(eg_client_tls){.ca_file = text}));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "not PEM"));

  f = fopen(text, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs("-----BEGIN CERTIFICATE-----\n", f);
  fputc('\0', f);
  fclose(f);
  CU_ASSERT_FALSE(made(&(eg_client_tls){.ca_file = text}));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "holds a NUL byte"));

  /* A directory, or a FIFO (whose open would block a reload), is not a
   * regular file. */
  CU_ASSERT_FALSE(made(&(eg_client_tls){.ca_file = dir}));
  CU_ASSERT_EQUAL(errno, EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a regular file"));
  char fifo[sizeof dir + 8];
  snprintf(fifo, sizeof fifo, "%s/fifo", dir);
  CU_ASSERT_EQUAL_FATAL(mkfifo(fifo, 0600), 0);
  CU_ASSERT_FALSE(made(&(eg_client_tls){.ca_file = fifo}));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a regular file"));
  remove(fifo);
}

static void test_size_limit_edge(void) {
  CU_ASSERT_TRUE(made(&(eg_client_tls){.ca_file = write_file("max.pem", EG_CLIENT_TLS_PEM_MAX)}));
  CU_ASSERT_FALSE(
      made(&(eg_client_tls){.ca_file = write_file("over.pem", EG_CLIENT_TLS_PEM_MAX + 1)}));
  CU_ASSERT_EQUAL(errno, EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "larger than 1048576 bytes"));
}

static void test_cert_and_key_pair(void) {
  char cert[4200], key[4200];
  snprintf(cert, sizeof cert, "%s", write_file("cert.pem", 100));
  snprintf(key, sizeof key, "%s", write_file("key.pem", 100));
  CU_ASSERT_FALSE(made(&(eg_client_tls){.cert_file = cert}));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "needs its private key"));
  CU_ASSERT_FALSE(made(&(eg_client_tls){.key_file = key}));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "needs its client certificate"));
  /* Named by what is missing: the key of a pair whose certificate reads. */
  char missing[4200];
  snprintf(missing, sizeof missing, "%s/nokey.pem", dir);
  CU_ASSERT_FALSE(made(&(eg_client_tls){.cert_file = cert, .key_file = missing}));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "private key"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, missing));
  CU_ASSERT_TRUE(made(&(eg_client_tls){.cert_file = cert, .key_file = key, .server_name = "x"}));
  /* No files at all: TLS on the system's roots. */
  CU_ASSERT_TRUE(made(&(eg_client_tls){0}));
  /* NULL: plaintext, as eg_client_new. */
  CU_ASSERT_TRUE(made(NULL));
}

static void test_target_and_token(void) {
  CU_ASSERT_PTR_NULL(eg_client_new_tls("", NULL, NULL, err, sizeof err));
  CU_ASSERT_STRING_EQUAL(err, "no target");
  CU_ASSERT_PTR_NULL(eg_client_new_tls("h:1", "bad\ntoken", NULL, err, sizeof err));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "printable ASCII"));
  /* No room for why: still NULL, nothing written. */
  CU_ASSERT_PTR_NULL(eg_client_new_tls("", NULL, NULL, NULL, 0));
  CU_ASSERT_EQUAL(errno, EINVAL);
}

void eg_test_register_client_tls(void) {
  CU_pSuite s = CU_add_suite_with_setup_and_teardown("client_tls", NULL, NULL, setup, teardown);
  CU_add_test(s, "unusable files are refused and named", test_files_refused);
  CU_add_test(s, "PEM size limit at its edge", test_size_limit_edge);
  CU_add_test(s, "certificate and key go together", test_cert_and_key_pair);
  CU_add_test(s, "target and token", test_target_and_token);
}
