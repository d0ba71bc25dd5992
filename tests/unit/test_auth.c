/* auth: the tokens file and the bearer check, on real files in a temp dir.
 * eg_unit links with --wrap=eg_crypto_equal, so the check's comparisons
 * are counted here: the constant-time compare must be what decides, for
 * every entry, whichever one matches. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "crypto/crypto.h"
#include "server/auth.h"
#include "suites.h"

static char tdir[4096];
static char path[4200];
static unsigned long equal_calls;

int __real_eg_crypto_equal(const void *a, const void *b, size_t len);
int __wrap_eg_crypto_equal(const void *a, const void *b, size_t len) {
  equal_calls++;
  return __real_eg_crypto_equal(a, b, len);
}

static void setup(void) {
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  snprintf(path, sizeof path, "%s/tokens", tdir);
}
static void teardown(void) { eg_test_rmdir(tdir); }

static void write_file(const char *text) {
  FILE *f = fopen(path, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs(text, f);
  fclose(f);
}

/* "<tenant> <role> <sha256 of token>\n" */
static void line_for(char *out, size_t cap, const char *tenant, const char *role, const char *token) {
  char hex[65];
  eg_sha256_hex(token, strlen(token), hex);
  snprintf(out, cap, "%s %s %s\n", tenant, role, hex);
}

static eg_err check(const eg_auth *a, const char *authz, eg_role need, const char **tenant) {
  *tenant = NULL;
  return eg_auth_check(a, authz, authz ? strlen(authz) : 0, need, tenant);
}

/* ---- tests ----------------------------------------------------------------- */

static void test_dev_mode(void) {
  eg_auth *a;
  char err[256] = "";
  const char *tenant;
  CU_ASSERT_EQUAL_FATAL(eg_auth_load(NULL, &a, err, sizeof err), EG_OK);
  CU_ASSERT(eg_auth_dev_mode(a));
  CU_ASSERT_EQUAL(check(a, NULL, EG_ROLE_ADMIN, &tenant), EG_OK);
  CU_ASSERT_STRING_EQUAL(tenant, EG_DEV_TENANT);
  CU_ASSERT_EQUAL(check(a, "Bearer anything", EG_ROLE_REPLICA, &tenant), EG_OK);
  CU_ASSERT_STRING_EQUAL(tenant, EG_DEV_TENANT);
  eg_auth_free(a);
  CU_ASSERT_EQUAL_FATAL(eg_auth_load("", &a, err, sizeof err), EG_OK);
  CU_ASSERT(eg_auth_dev_mode(a));
  eg_auth_free(a);
}

static void test_good_file_and_roles(void) {
  char text[4096], l1[160], l2[160], l3[160];
  line_for(l1, sizeof l1, "acme", "agent", "tok-acme");
  line_for(l2, sizeof l2, "ops", "admin", "tok-ops");
  line_for(l3, sizeof l3, "r.1:x-y_z", "replica", "tok-repl");
  /* comments, blank lines, indentation and tabs are fine */
  snprintf(text, sizeof text, "# tenant role hash\n\n   \n  %s\t%s# trailing comment line\n%s", l1,
           l2, l3);
  write_file(text);
  eg_auth *a;
  char err[256] = "";
  const char *tenant;
  CU_ASSERT_EQUAL_FATAL(eg_auth_load(path, &a, err, sizeof err), EG_OK);
  CU_ASSERT(!eg_auth_dev_mode(a));

  CU_ASSERT_EQUAL(check(a, "Bearer tok-acme", EG_ROLE_AGENT, &tenant), EG_OK);
  CU_ASSERT_STRING_EQUAL(tenant, "acme");
  CU_ASSERT_EQUAL(check(a, "bearer tok-ops", EG_ROLE_ADMIN, &tenant), EG_OK); /* any case */
  CU_ASSERT_STRING_EQUAL(tenant, "ops");
  CU_ASSERT_EQUAL(check(a, "Bearer tok-repl", EG_ROLE_REPLICA, &tenant), EG_OK);
  CU_ASSERT_STRING_EQUAL(tenant, "r.1:x-y_z");

  /* a known token without the role: PERMISSION_DENIED, no tenant */
  CU_ASSERT_EQUAL(check(a, "Bearer tok-acme", EG_ROLE_ADMIN, &tenant), EG_EPERM);
  CU_ASSERT_PTR_NULL(tenant);
  CU_ASSERT_EQUAL(check(a, "Bearer tok-ops", EG_ROLE_AGENT, &tenant), EG_EPERM);
  CU_ASSERT_EQUAL(check(a, "Bearer tok-repl", EG_ROLE_AGENT, &tenant), EG_EPERM);

  /* unknown, missing or malformed: UNAUTHENTICATED */
  CU_ASSERT_EQUAL(check(a, "Bearer tok-nobody", EG_ROLE_AGENT, &tenant), EG_EUNAUTH);
  CU_ASSERT_EQUAL(check(a, NULL, EG_ROLE_AGENT, &tenant), EG_EUNAUTH);
  CU_ASSERT_EQUAL(check(a, "", EG_ROLE_AGENT, &tenant), EG_EUNAUTH);
  CU_ASSERT_EQUAL(check(a, "Bearer ", EG_ROLE_AGENT, &tenant), EG_EUNAUTH);
  CU_ASSERT_EQUAL(check(a, "tok-acme", EG_ROLE_AGENT, &tenant), EG_EUNAUTH);
  CU_ASSERT_EQUAL(check(a, "Basic tok-acme", EG_ROLE_AGENT, &tenant), EG_EUNAUTH);
  /* the hash is of the whole token: a prefix or an extension is another token */
  CU_ASSERT_EQUAL(check(a, "Bearer tok-acm", EG_ROLE_AGENT, &tenant), EG_EUNAUTH);
  CU_ASSERT_EQUAL(check(a, "Bearer tok-acmee", EG_ROLE_AGENT, &tenant), EG_EUNAUTH);
  /* a token longer than the bound is refused before it is hashed */
  static char huge[5000];
  memset(huge, 'x', sizeof huge - 1);
  memcpy(huge, "Bearer ", 7);
  CU_ASSERT_EQUAL(check(a, huge, EG_ROLE_AGENT, &tenant), EG_EUNAUTH);

  /* a method open to anyone (health) needs no token, and any token passes */
  CU_ASSERT_EQUAL(check(a, NULL, EG_ROLE_NONE, &tenant), EG_OK);
  CU_ASSERT_EQUAL(check(a, "Bearer tok-nobody", EG_ROLE_NONE, &tenant), EG_OK);
  eg_auth_free(a);
}

/* Every check compares the hash with every entry in constant time: the
 * same number of eg_crypto_equal calls whichever entry matches, or none. */
static void test_constant_time_compare(void) {
  char text[4096] = "", line[160], tok[32];
  for (int i = 0; i < 8; i++) {
    snprintf(tok, sizeof tok, "tok-%d", i);
    line_for(line, sizeof line, "acme", "agent", tok);
    strcat(text, line);
  }
  write_file(text);
  eg_auth *a;
  char err[256] = "", authz[64];
  const char *tenant;
  CU_ASSERT_EQUAL_FATAL(eg_auth_load(path, &a, err, sizeof err), EG_OK);
  for (int i = 0; i < 8; i++) {
    snprintf(authz, sizeof authz, "Bearer tok-%d", i);
    equal_calls = 0;
    CU_ASSERT_EQUAL(check(a, authz, EG_ROLE_AGENT, &tenant), EG_OK);
    CU_ASSERT_EQUAL(equal_calls, 8);
  }
  equal_calls = 0;
  CU_ASSERT_EQUAL(check(a, "Bearer tok-none", EG_ROLE_AGENT, &tenant), EG_EUNAUTH);
  CU_ASSERT_EQUAL(equal_calls, 8);
  eg_auth_free(a);
}

/* Each malformed line is refused with its line number and the problem. */
static void test_bad_lines(void) {
  static const char good[] =
      "acme agent 307c609f87da43c3d563428a4f7efdf9857f4871fd10465732c4ab11a985a08c\n";
  static const struct {
    const char *line, *want;
  } cases[] = {
      {"acme agent\n", "want 'tenant role sha256hex'"},
      {"acme agent 307c609f87da43c3d563428a4f7efdf9857f4871fd10465732c4ab11a985a08c extra\n",
       "want 'tenant role sha256hex'"},
      {"ac/me agent 307c609f87da43c3d563428a4f7efdf9857f4871fd10465732c4ab11a985a08c\n",
       "tenant must match"},
      {"acme root 307c609f87da43c3d563428a4f7efdf9857f4871fd10465732c4ab11a985a08c\n",
       "role must be agent, admin or replica"},
      {"acme Agent 307c609f87da43c3d563428a4f7efdf9857f4871fd10465732c4ab11a985a08c\n",
       "role must be agent, admin or replica"},
      {"acme agent 307C609F87DA43C3D563428A4F7EFDF9857F4871FD10465732C4AB11A985A08C\n",
       "hash must be 64 lowercase hex digits"},
      {"acme agent 307c609f87da43c3d563428a4f7efdf9857f4871fd10465732c4ab11a985a08\n",
       "hash must be 64 lowercase hex digits"},
      {"acme agent 307c609f87da43c3d563428a4f7efdf9857f4871fd10465732c4ab11a985a08cc\n",
       "hash must be 64 lowercase hex digits"},
      {"acme agent 307c609f87da43c3d563428a4f7efdf9857f4871fd10465732c4ab11a985a08g\n",
       "hash must be 64 lowercase hex digits"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char text[1024], err[256] = "";
    snprintf(text, sizeof text, "# header\n%s%s", good, cases[i].line);
    write_file(text);
    eg_auth *a = NULL;
    CU_ASSERT_EQUAL(eg_auth_load(path, &a, err, sizeof err), EG_EINVAL);
    CU_ASSERT_PTR_NULL(a);
    if (!strstr(err, "line 3:") || !strstr(err, cases[i].want)) {
      fprintf(stderr, "\ncase %zu: err '%s', want 'line 3: ...%s'\n", i, err, cases[i].want);
      CU_FAIL("wrong message");
    }
  }
  /* a tenant one over the id bound */
  char text[1024], tenant[130], err[256] = "";
  memset(tenant, 'a', 129);
  tenant[129] = '\0';
  snprintf(text, sizeof text,
           "%s agent 307c609f87da43c3d563428a4f7efdf9857f4871fd10465732c4ab11a985a08c\n", tenant);
  write_file(text);
  eg_auth *a = NULL;
  CU_ASSERT_EQUAL(eg_auth_load(path, &a, err, sizeof err), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 1: tenant must match"));

  /* an entry line longer than the line bound (only comments may be) */
  static char big[3000];
  memset(big, ' ', sizeof big - 2);
  memcpy(big, good, strlen(good) - 1);
  big[sizeof big - 2] = '\n';
  write_file(big);
  CU_ASSERT_EQUAL(eg_auth_load(path, &a, err, sizeof err), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 1: longer than 1023 bytes"));
}

static void test_missing_file(void) {
  eg_auth *a = NULL;
  char err[256] = "", missing[4300];
  snprintf(missing, sizeof missing, "%s/no-such-file", tdir);
  CU_ASSERT_EQUAL(eg_auth_load(missing, &a, err, sizeof err), EG_EINVAL);
  CU_ASSERT_PTR_NULL(a);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "no-such-file"));
}

/* A comment longer than the line buffer is still one comment line:
 * nothing of it is parsed as an entry. */
static void test_long_comment_line(void) {
  static char text[8192];
  char l1[160];
  line_for(l1, sizeof l1, "acme", "agent", "tok-acme");
  text[0] = '#';
  memset(text + 1, 'c', 3000);
  text[1500] = ' ';
  strcpy(text + 3001, "\n");
  strcat(text, l1);
  write_file(text);
  eg_auth *a = NULL;
  char err[256] = "";
  CU_ASSERT_EQUAL_FATAL(eg_auth_load(path, &a, err, sizeof err), EG_OK);
  const char *tenant;
  CU_ASSERT_EQUAL(check(a, "Bearer tok-acme", EG_ROLE_AGENT, &tenant), EG_OK);
  eg_auth_free(a);
}

/* A NUL anywhere refuses the file, past the line bound of a long comment
 * too (a NUL hides what follows it from the parser). */
static void test_nul_in_long_comment(void) {
  static char text[4096];
  memset(text, 'c', 3000);
  text[0] = '#';
  text[2000] = '\0';
  text[3000] = '\n';
  FILE *f = fopen(path, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fwrite(text, 1, 3001, f);
  fclose(f);
  eg_auth *a = NULL;
  char err[256] = "";
  CU_ASSERT_EQUAL(eg_auth_load(path, &a, err, sizeof err), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 1: contains a NUL byte"));
}

/* One line per token: a token listed twice (say as agent of one tenant and
 * admin of another) would leave one of its lines silently unused. */
static void test_duplicate_token(void) {
  char text[1024], l1[160], l2[160], l3[160];
  line_for(l1, sizeof l1, "acme", "agent", "tok-a");
  line_for(l2, sizeof l2, "ops", "admin", "tok-b");
  line_for(l3, sizeof l3, "ops", "admin", "tok-a");
  snprintf(text, sizeof text, "%s%s# same token again\n%s", l1, l2, l3);
  write_file(text);
  eg_auth *a = NULL;
  char err[256] = "";
  CU_ASSERT_EQUAL(eg_auth_load(path, &a, err, sizeof err), EG_EINVAL);
  CU_ASSERT_PTR_NULL(a);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 4:"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 1"));
  eg_auth_free(a);
}

void eg_test_register_auth(void) {
  CU_pSuite s = CU_add_suite_with_setup_and_teardown("auth", NULL, NULL, setup, teardown);
  CU_add_test(s, "dev mode", test_dev_mode);
  CU_add_test(s, "good file and roles", test_good_file_and_roles);
  CU_add_test(s, "constant-time compare of every entry", test_constant_time_compare);
  CU_add_test(s, "bad lines", test_bad_lines);
  CU_add_test(s, "missing file", test_missing_file);
  CU_add_test(s, "long comment line", test_long_comment_line);
  CU_add_test(s, "NUL in a long comment", test_nul_in_long_comment);
  CU_add_test(s, "duplicate token", test_duplicate_token);
}
