/* auth: the tokens and identities files, the bearer and certificate
 * checks and their reload, on real files in a temp dir.
 * eg_unit links with --wrap=eg_crypto_equal, so the check's comparisons
 * are counted here: the constant-time compare must be what decides, for
 * every entry, whichever one matches. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
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

/* The tenant checked last ("" -> NULL). */
static char checked[EG_ID_MAX + 1];

static eg_err check(const eg_auth *a, const char *authz, eg_role need, const char **tenant) {
  char why[256];
  eg_auth_caller who = {.authz = authz, .authz_len = authz ? strlen(authz) : 0};
  eg_err e = eg_auth_check(a, &who, need, checked, why, sizeof why);
  *tenant = checked[0] ? checked : NULL;
  return e;
}

/* ---- tests ----------------------------------------------------------------- */

static void test_dev_mode(void) {
  eg_auth *a;
  char err[256] = "";
  const char *tenant;
  CU_ASSERT_EQUAL_FATAL(eg_auth_load(NULL, NULL, &a, err, sizeof err), EG_OK);
  CU_ASSERT(eg_auth_dev_mode(a));
  CU_ASSERT_EQUAL(check(a, NULL, EG_ROLE_ADMIN, &tenant), EG_OK);
  CU_ASSERT_STRING_EQUAL(tenant, EG_DEV_TENANT);
  CU_ASSERT_EQUAL(check(a, "Bearer anything", EG_ROLE_REPLICA, &tenant), EG_OK);
  CU_ASSERT_STRING_EQUAL(tenant, EG_DEV_TENANT);
  eg_auth_free(a);
  CU_ASSERT_EQUAL_FATAL(eg_auth_load("", NULL, &a, err, sizeof err), EG_OK);
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
  CU_ASSERT_EQUAL_FATAL(eg_auth_load(path, NULL, &a, err, sizeof err), EG_OK);
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
  CU_ASSERT_EQUAL_FATAL(eg_auth_load(path, NULL, &a, err, sizeof err), EG_OK);
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
    CU_ASSERT_EQUAL(eg_auth_load(path, NULL, &a, err, sizeof err), EG_EINVAL);
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
  CU_ASSERT_EQUAL(eg_auth_load(path, NULL, &a, err, sizeof err), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 1: tenant must match"));

  /* an entry line longer than the line bound (only comments may be) */
  static char big[3000];
  memset(big, ' ', sizeof big - 2);
  memcpy(big, good, strlen(good) - 1);
  big[sizeof big - 2] = '\n';
  write_file(big);
  CU_ASSERT_EQUAL(eg_auth_load(path, NULL, &a, err, sizeof err), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 1: longer than 1023 bytes"));
}

static void test_missing_file(void) {
  eg_auth *a = NULL;
  char err[256] = "", missing[4300];
  snprintf(missing, sizeof missing, "%s/no-such-file", tdir);
  CU_ASSERT_EQUAL(eg_auth_load(missing, NULL, &a, err, sizeof err), EG_EINVAL);
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
  CU_ASSERT_EQUAL_FATAL(eg_auth_load(path, NULL, &a, err, sizeof err), EG_OK);
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
  CU_ASSERT_EQUAL(eg_auth_load(path, NULL, &a, err, sizeof err), EG_EINVAL);
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
  CU_ASSERT_EQUAL(eg_auth_load(path, NULL, &a, err, sizeof err), EG_EINVAL);
  CU_ASSERT_PTR_NULL(a);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 4:"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 1"));
  eg_auth_free(a);
}

/* ---- certificate identities (--tls-identities) and reload ------------------ */

static char ipath[4300];

static void write_to(const char *p, const char *text) {
  FILE *f = fopen(p, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs(text, f);
  fclose(f);
}

/* A caller with a verified certificate carrying sans ("uri:..."/"dns:..."
 * strings, NULL-terminated) and the authorization value authz. */
static eg_err check_cert(const eg_auth *a, const char *authz, const char *const *sans, eg_role need,
                         char *why, size_t whylen) {
  eg_auth_san s[EG_AUTH_CALLER_SANS_MAX + 4];
  size_t n = 0;
  for (; sans && sans[n]; n++)
    s[n] = (eg_auth_san){.dns = strncmp(sans[n], "dns:", 4) == 0, .value = sans[n] + 4,
                         .len = strlen(sans[n] + 4)};
  eg_auth_caller who = {.authz = authz, .authz_len = authz ? strlen(authz) : 0, .sans = s,
                        .n_sans = n, .has_cert = 1};
  why[0] = '\0';
  return eg_auth_check(a, &who, need, checked, why, whylen);
}

static void test_identities(void) {
  char tokens[160], why[256], err[300] = "";
  line_for(tokens, sizeof tokens, "beta", "agent", "tok-beta");
  write_file(tokens);
  snprintf(ipath, sizeof ipath, "%s/identities", tdir);
  write_to(ipath,
           "# SAN tenant role\n"
           "uri:spiffe://example.org/agent/alice acme agent\n"
           "\n"
           "  dns:bob.agents.example.org\tacme admin\n"
           "uri:spiffe://example.org/agent/carol beta agent\n"
           "dns:carol.example.org beta agent\n"
           "dns:mallory.example.org acme agent\n");
  eg_auth *a = NULL;
  CU_ASSERT_EQUAL_FATAL(eg_auth_load(path, ipath, &a, err, sizeof err), EG_OK);
  CU_ASSERT(!eg_auth_dev_mode(a));

  const char *alice[] = {"uri:spiffe://example.org/agent/alice", NULL};
  CU_ASSERT_EQUAL(check_cert(a, NULL, alice, EG_ROLE_AGENT, why, sizeof why), EG_OK);
  CU_ASSERT_STRING_EQUAL(checked, "acme");
  /* a DNS SAN maps only through a dns: line, a URI SAN through a uri: line */
  const char *bob[] = {"uri:spiffe://other/x", "dns:bob.agents.example.org", NULL};
  CU_ASSERT_EQUAL(check_cert(a, NULL, bob, EG_ROLE_ADMIN, why, sizeof why), EG_OK);
  CU_ASSERT_STRING_EQUAL(checked, "acme");
  const char *kinds[] = {"dns:spiffe://example.org/agent/alice", "uri:bob.agents.example.org",
                         NULL};
  CU_ASSERT_EQUAL(check_cert(a, NULL, kinds, EG_ROLE_AGENT, why, sizeof why), EG_EUNAUTH);
  /* the role is the line's */
  CU_ASSERT_EQUAL(check_cert(a, NULL, alice, EG_ROLE_ADMIN, why, sizeof why), EG_EPERM);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "uri:spiffe://example.org/agent/alice"));
  CU_ASSERT_EQUAL(checked[0], '\0');
  /* two SANs mapped alike are one identity; mapped apart, none */
  const char *carol[] = {"uri:spiffe://example.org/agent/carol", "dns:carol.example.org", NULL};
  CU_ASSERT_EQUAL(check_cert(a, NULL, carol, EG_ROLE_AGENT, why, sizeof why), EG_OK);
  CU_ASSERT_STRING_EQUAL(checked, "beta");
  const char *split[] = {"uri:spiffe://example.org/agent/carol", "dns:mallory.example.org", NULL};
  CU_ASSERT_EQUAL(check_cert(a, NULL, split, EG_ROLE_AGENT, why, sizeof why), EG_EUNAUTH);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "different identities"));
  /* exact match: case, a prefix, a suffix are other SANs */
  const char *near[] = {"uri:spiffe://example.org/agent/Alice", "uri:spiffe://example.org/agent",
                        "uri:spiffe://example.org/agent/alice/x", "dns:BOB.agents.example.org",
                        NULL};
  CU_ASSERT_EQUAL(check_cert(a, NULL, near, EG_ROLE_AGENT, why, sizeof why), EG_EUNAUTH);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "not mapped in --tls-identities"));
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "uri:spiffe://example.org/agent/Alice"));
  /* a certificate without SANs is not mapped either */
  CU_ASSERT_EQUAL(check_cert(a, NULL, NULL, EG_ROLE_AGENT, why, sizeof why), EG_EUNAUTH);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "not mapped"));
  /* SANs past EG_AUTH_CALLER_SANS_MAX are not looked at */
  const char *many[EG_AUTH_CALLER_SANS_MAX + 2];
  for (int i = 0; i < EG_AUTH_CALLER_SANS_MAX; i++) many[i] = "dns:unmapped.example.org";
  many[EG_AUTH_CALLER_SANS_MAX] = alice[0];
  many[EG_AUTH_CALLER_SANS_MAX + 1] = NULL;
  CU_ASSERT_EQUAL(check_cert(a, NULL, many, EG_ROLE_AGENT, why, sizeof why), EG_EUNAUTH);
  many[EG_AUTH_CALLER_SANS_MAX - 1] = alice[0];
  CU_ASSERT_EQUAL(check_cert(a, NULL, many, EG_ROLE_AGENT, why, sizeof why), EG_OK);

  /* precedence: a sent token decides, good or bad */
  CU_ASSERT_EQUAL(check_cert(a, "Bearer tok-beta", alice, EG_ROLE_AGENT, why, sizeof why), EG_OK);
  CU_ASSERT_STRING_EQUAL(checked, "beta");
  CU_ASSERT_EQUAL(check_cert(a, "Bearer wrong", alice, EG_ROLE_AGENT, why, sizeof why), EG_EUNAUTH);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "bearer token"));
  /* without a certificate or a token: no identity */
  const char *tenant;
  CU_ASSERT_EQUAL(check(a, NULL, EG_ROLE_AGENT, &tenant), EG_EUNAUTH);
  /* a method open to anyone needs neither */
  CU_ASSERT_EQUAL(check_cert(a, NULL, near, EG_ROLE_NONE, why, sizeof why), EG_OK);
  eg_auth_free(a);

  /* identities alone: not dev mode, and no token is anyone's */
  CU_ASSERT_EQUAL_FATAL(eg_auth_load(NULL, ipath, &a, err, sizeof err), EG_OK);
  CU_ASSERT(!eg_auth_dev_mode(a));
  CU_ASSERT_EQUAL(check(a, "Bearer tok-beta", EG_ROLE_AGENT, &tenant), EG_EUNAUTH);
  CU_ASSERT_EQUAL(check_cert(a, NULL, alice, EG_ROLE_AGENT, why, sizeof why), EG_OK);
  eg_auth_free(a);
}

/* Each malformed identities line is refused naming the file and line. */
static void test_identities_bad_lines(void) {
  static char long_san[EG_AUTH_SAN_MAX + 64];
  memcpy(long_san, "uri:", 4);
  memset(long_san + 4, 'x', EG_AUTH_SAN_MAX + 1);
  strcpy(long_san + 4 + EG_AUTH_SAN_MAX + 1, " acme agent\n");
  const struct {
    const char *line, *want;
  } cases[] = {
      {"spiffe://example.org/a acme agent\n", "the SAN must be uri:VALUE or dns:VALUE"},
      {"URI:spiffe://example.org/a acme agent\n", "the SAN must be uri:VALUE or dns:VALUE"},
      {"uri: acme agent\n", "the SAN must be uri:VALUE or dns:VALUE"},
      {"uri:x acme\n", "want 'uri:SAN tenant role'"},
      {"uri:x acme agent extra\n", "want 'uri:SAN tenant role'"},
      {"dns:x ac/me agent\n", "tenant must match"},
      {"dns:x acme root\n", "role must be agent, admin or replica"},
      {long_san, "the SAN is longer than 1000 bytes"},
      {"dns:a.example.org beta agent\n", "line 3: the same SAN is already on line 2"},
  };
  snprintf(ipath, sizeof ipath, "%s/identities", tdir);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char text[2048], err[400] = "";
    snprintf(text, sizeof text, "# header\ndns:a.example.org acme agent\n%s", cases[i].line);
    write_to(ipath, text);
    eg_auth *a = NULL;
    CU_ASSERT_EQUAL(eg_auth_load(NULL, ipath, &a, err, sizeof err), EG_EINVAL);
    CU_ASSERT_PTR_NULL(a);
    if (!strstr(err, "--tls-identities") || !strstr(err, "line 3") || !strstr(err, cases[i].want)) {
      fprintf(stderr, "\ncase %zu: err '%s', want '--tls-identities ... line 3: ...%s'\n", i, err,
              cases[i].want);
      CU_FAIL("wrong message");
    }
  }
  /* a SAN at the bound is fine */
  char err[400] = "";
  memset(long_san + 4, 'x', EG_AUTH_SAN_MAX);
  strcpy(long_san + 4 + EG_AUTH_SAN_MAX, " acme agent\n");
  write_to(ipath, long_san);
  eg_auth *a = NULL;
  CU_ASSERT_EQUAL(eg_auth_load(NULL, ipath, &a, err, sizeof err), EG_OK);
  eg_auth_free(a);
}

/* SIGHUP's reload: a token added works after, a removed one is refused,
 * and a bad file keeps the tables in use. */
static void test_reload(void) {
  char l1[160], l2[160], text[400], err[300] = "";
  const char *tenant;
  line_for(l1, sizeof l1, "acme", "agent", "tok-old");
  write_file(l1);
  eg_auth *a = NULL;
  CU_ASSERT_EQUAL_FATAL(eg_auth_load(path, NULL, &a, err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(check(a, "Bearer tok-old", EG_ROLE_AGENT, &tenant), EG_OK);
  CU_ASSERT_EQUAL(check(a, "Bearer tok-new", EG_ROLE_AGENT, &tenant), EG_EUNAUTH);
  line_for(l2, sizeof l2, "beta", "agent", "tok-new");
  write_file(l2);
  eg_auth_reload(a);
  CU_ASSERT_EQUAL(check(a, "Bearer tok-old", EG_ROLE_AGENT, &tenant), EG_EUNAUTH);
  CU_ASSERT_EQUAL(check(a, "Bearer tok-new", EG_ROLE_AGENT, &tenant), EG_OK);
  CU_ASSERT_STRING_EQUAL(tenant, "beta");
  snprintf(text, sizeof text, "%s%s", l1, "acme agent not-a-hash\n");
  write_file(text);
  eg_auth_reload(a);
  CU_ASSERT_EQUAL(check(a, "Bearer tok-new", EG_ROLE_AGENT, &tenant), EG_OK);
  CU_ASSERT_EQUAL(check(a, "Bearer tok-old", EG_ROLE_AGENT, &tenant), EG_EUNAUTH);
  eg_auth_free(a);
  /* the identities file reloads with the tokens */
  char why[256];
  const char *carol[] = {"dns:carol.example.org", NULL};
  snprintf(ipath, sizeof ipath, "%s/identities", tdir);
  write_to(ipath, "dns:carol.example.org acme agent\n");
  write_file(l2);
  CU_ASSERT_EQUAL_FATAL(eg_auth_load(path, ipath, &a, err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(check_cert(a, NULL, carol, EG_ROLE_AGENT, why, sizeof why), EG_OK);
  CU_ASSERT_STRING_EQUAL(checked, "acme");
  write_to(ipath, "dns:carol.example.org beta agent\n");
  eg_auth_reload(a);
  CU_ASSERT_EQUAL(check_cert(a, NULL, carol, EG_ROLE_AGENT, why, sizeof why), EG_OK);
  CU_ASSERT_STRING_EQUAL(checked, "beta");
  write_to(ipath, "dns:carol.example.org beta agent\ndns:carol.example.org acme agent\n");
  eg_auth_reload(a); /* a SAN twice: kept as it was */
  CU_ASSERT_EQUAL(check_cert(a, NULL, carol, EG_ROLE_AGENT, why, sizeof why), EG_OK);
  CU_ASSERT_STRING_EQUAL(checked, "beta");
  write_to(ipath, "# nobody\n");
  eg_auth_reload(a);
  CU_ASSERT_EQUAL(check_cert(a, NULL, carol, EG_ROLE_AGENT, why, sizeof why), EG_EUNAUTH);
  eg_auth_free(a);
  /* dev mode has nothing to reload and stays dev mode */
  CU_ASSERT_EQUAL_FATAL(eg_auth_load(NULL, NULL, &a, err, sizeof err), EG_OK);
  eg_auth_reload(a);
  CU_ASSERT(eg_auth_dev_mode(a));
  eg_auth_free(a);
}

struct reload_race {
  eg_auth *a;
  atomic_int stop;
  atomic_int bad;
};

static void *race_checker(void *arg) {
  struct reload_race *r = arg;
  char tenant[EG_ID_MAX + 1], why[256];
  eg_auth_caller who = {.authz = "Bearer tok-a", .authz_len = 12};
  while (!atomic_load(&r->stop))
    if (eg_auth_check(r->a, &who, EG_ROLE_AGENT, tenant, why, sizeof why) != EG_OK ||
        strcmp(tenant, "acme") != 0)
      atomic_fetch_add(&r->bad, 1);
  return NULL;
}

/* Checks on other threads during reloads always see a whole table (the
 * sanitizer run sees each swapped-out one freed under them). */
static void test_reload_during_checks(void) {
  char l1[160], err[300] = "";
  line_for(l1, sizeof l1, "acme", "agent", "tok-a");
  write_file(l1);
  struct reload_race r = {0};
  CU_ASSERT_EQUAL_FATAL(eg_auth_load(path, NULL, &r.a, err, sizeof err), EG_OK);
  pthread_t th[2];
  eg_log_setup("text", "warn"); /* not a line per reload */
  for (int i = 0; i < 2; i++)
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, race_checker, &r), 0);
  for (int i = 0; i < 50; i++) eg_auth_reload(r.a);
  atomic_store(&r.stop, 1);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  eg_log_setup("text", "info");
  CU_ASSERT_EQUAL(atomic_load(&r.bad), 0);
  eg_auth_free(r.a);
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
  CU_add_test(s, "certificate identities", test_identities);
  CU_add_test(s, "identities: bad lines", test_identities_bad_lines);
  CU_add_test(s, "reload", test_reload);
  CU_add_test(s, "reload during checks", test_reload_during_checks);
}
