/* crypto/: keyring parsing and creation, token seal/open, hashes. */
#include <CUnit/CUnit.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "crypto/crypto.h"
#include "suites.h"

static const eg_field_ctx ctx_a = {"acme", "message", "s1/7", "content"};

/* Writes len bytes of text to dir/name with the given mode; path receives
 * the file's path. */
static void write_bytes(const char *dir, const char *name, const char *text, size_t len,
                        mode_t mode, char *path, size_t pathlen) {
  snprintf(path, pathlen, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  CU_ASSERT_FATAL(f != NULL);
  CU_ASSERT_EQUAL(fwrite(text, 1, len, f), len);
  fclose(f);
  CU_ASSERT_EQUAL(chmod(path, mode), 0);
}

/* Writes text to dir/name, readable by its owner only (as a keyring must
 * be); path receives the file's path. */
static void write_file(const char *dir, const char *name, const char *text, char *path,
                       size_t pathlen) {
  write_bytes(dir, name, text, strlen(text), 0600, path, pathlen);
}

/* Loads a keyring from text through a temporary file. */
static eg_err ring_from_text(const char *text, eg_keyring **kr, char *err, size_t errlen) {
  char path[4200];
  const char *dir = eg_test_tmpdir();
  write_file(dir, "keyring", text, path, sizeof path);
  eg_err rc = eg_keyring_load(path, kr, err, errlen);
  eg_test_rmdir(dir);
  return rc;
}

static eg_keyring *ring_ok(const char *text) {
  char err[256] = "";
  eg_keyring *kr = NULL;
  CU_ASSERT_EQUAL_FATAL(ring_from_text(text, &kr, err, sizeof err), EG_OK);
  return kr;
}

/* Two fixed keys, so rings built from them share keys. */
static char key1[EG_KEYGEN_LINE_MAX], key2[EG_KEYGEN_LINE_MAX];

static int suite_init(void) {
  if (eg_crypto_init() != EG_OK) return -1;
  if (eg_keyring_keygen_line(1, key1, sizeof key1) != EG_OK) return -1;
  return eg_keyring_keygen_line(2, key2, sizeof key2) == EG_OK ? 0 : -1;
}

/* "primary <p>\n" followed by the given key lines. */
static eg_keyring *ring_with(unsigned primary, const char *k1, const char *k2) {
  char text[512];
  snprintf(text, sizeof text, "primary %u\n%s%s", primary, k1, k2);
  return ring_ok(text);
}

static uint32_t token_key_id(const uint8_t *tok) {
  return (uint32_t)tok[1] << 24 | (uint32_t)tok[2] << 16 | (uint32_t)tok[3] << 8 | tok[4];
}

static void test_init_disables_core_dumps(void) {
  struct rlimit rl;
  CU_ASSERT_EQUAL(getrlimit(RLIMIT_CORE, &rl), 0);
  CU_ASSERT_EQUAL(rl.rlim_cur, 0);
  CU_ASSERT_EQUAL(rl.rlim_max, 0);
  CU_ASSERT_EQUAL(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
}

static void test_round_trip(void) {
  eg_keyring *kr = ring_with(1, key1, "");
  const char *msg = "hello, engram";
  size_t len = strlen(msg), plen = 0;
  uint8_t tok[128], tok2[128], out[128];
  time_t before = time(NULL);
  CU_ASSERT_EQUAL_FATAL(eg_token_seal(kr, &ctx_a, (const uint8_t *)msg, len, tok), EG_OK);
  time_t after = time(NULL);
  CU_ASSERT_EQUAL(tok[0], EG_TOKEN_VERSION);
  CU_ASSERT_EQUAL(token_key_id(tok), 1);
  uint64_t issued = 0;
  for (int i = 5; i < 13; i++) issued = issued << 8 | tok[i];
  CU_ASSERT(issued >= (uint64_t)before && issued <= (uint64_t)after);
  CU_ASSERT_EQUAL(eg_token_open(kr, &ctx_a, tok, eg_token_len(len), out, &plen), EG_OK);
  CU_ASSERT_EQUAL(plen, len);
  CU_ASSERT_EQUAL(memcmp(out, msg, len), 0);
  /* Random nonces: the same plaintext never seals alike. */
  CU_ASSERT_EQUAL(eg_token_seal(kr, &ctx_a, (const uint8_t *)msg, len, tok2), EG_OK);
  CU_ASSERT_NOT_EQUAL(memcmp(tok, tok2, eg_token_len(len)), 0);
  /* An empty field is a valid token too. */
  CU_ASSERT_EQUAL(eg_token_seal(kr, &ctx_a, (const uint8_t *)"", 0, tok), EG_OK);
  plen = 99;
  CU_ASSERT_EQUAL(eg_token_open(kr, &ctx_a, tok, eg_token_len(0), out, &plen), EG_OK);
  CU_ASSERT_EQUAL(plen, 0);
  eg_keyring_free(kr);
}

/* Seals under `sealer`'s primary and checks `opener` opens it. */
static void assert_opens_across(eg_keyring *sealer, eg_keyring *opener, uint32_t key_id) {
  uint8_t tok[128], out[128];
  size_t plen = 0;
  CU_ASSERT_EQUAL_FATAL(eg_token_seal(sealer, &ctx_a, (const uint8_t *)"rotate", 6, tok), EG_OK);
  CU_ASSERT_EQUAL(token_key_id(tok), key_id);
  CU_ASSERT_EQUAL(eg_token_open(opener, &ctx_a, tok, eg_token_len(6), out, &plen), EG_OK);
  CU_ASSERT(plen == 6 && memcmp(out, "rotate", 6) == 0);
}

static void test_every_key_decrypts(void) {
  eg_keyring *p2 = ring_with(2, key1, key2);
  eg_keyring *p1 = ring_with(1, key1, key2);
  CU_ASSERT_EQUAL(eg_keyring_primary_id(p2), 2);
  CU_ASSERT_EQUAL(eg_keyring_primary_id(p1), 1);
  assert_opens_across(p2, p1, 2);
  assert_opens_across(p1, p2, 1);
  eg_keyring_free(p1);
  eg_keyring_free(p2);
}

static void test_unknown_key_id(void) {
  eg_keyring *p2 = ring_with(2, key1, key2);
  eg_keyring *only1 = ring_with(1, key1, "");
  uint8_t tok[128], out[128];
  size_t plen = 0;
  CU_ASSERT_EQUAL(eg_token_seal(p2, &ctx_a, (const uint8_t *)"x", 1, tok), EG_OK);
  CU_ASSERT_EQUAL(eg_token_open(only1, &ctx_a, tok, eg_token_len(1), out, &plen), EG_ECORRUPT);
  eg_keyring_free(only1);
  eg_keyring_free(p2);
}

static int all_zero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

static void test_every_bit_flip_fails(void) {
  eg_keyring *kr = ring_with(1, key1, "");
  const char *msg = "flip me";
  size_t len = strlen(msg), toklen = eg_token_len(len), plen = 0, failures = 0;
  uint8_t tok[128], out[128];
  CU_ASSERT_EQUAL_FATAL(eg_token_seal(kr, &ctx_a, (const uint8_t *)msg, len, tok), EG_OK);
  for (size_t bit = 0; bit < toklen * 8; bit++) {
    tok[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    memset(out, 0xAA, sizeof out);
    if (eg_token_open(kr, &ctx_a, tok, toklen, out, &plen) != EG_ECORRUPT ||
        !all_zero(out, len))
      failures++;
    tok[bit / 8] ^= (uint8_t)(1u << (bit % 8));
  }
  CU_ASSERT_EQUAL(failures, 0);
  CU_ASSERT_EQUAL(eg_token_open(kr, &ctx_a, tok, toklen, out, &plen), EG_OK);
  eg_keyring_free(kr);
}

static void test_transplant_fails(void) {
  static const eg_field_ctx others[] = {
      {"other", "message", "s1/7", "content"},
      {"acme", "session", "s1/7", "content"},
      {"acme", "message", "s1/8", "content"},
      {"acme", "message", "s1/7", "metadata"},
      /* Same bytes run together: only the length prefixes tell them apart. */
      {"acmemessage", "", "s1/7", "content"},
      {"acm", "emessage", "s1/7", "content"},
  };
  eg_keyring *kr = ring_with(1, key1, "");
  uint8_t tok[128], out[128];
  size_t plen = 0;
  CU_ASSERT_EQUAL_FATAL(eg_token_seal(kr, &ctx_a, (const uint8_t *)"secret", 6, tok), EG_OK);
  for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
    memset(out, 0xAA, sizeof out);
    CU_ASSERT_EQUAL(eg_token_open(kr, &others[i], tok, eg_token_len(6), out, &plen),
                    EG_ECORRUPT);
    CU_ASSERT(all_zero(out, 6));
  }
  eg_keyring_free(kr);
}

static void test_truncated_or_extended_fails(void) {
  eg_keyring *kr = ring_with(1, key1, "");
  uint8_t tok[128], out[128];
  size_t plen = 0, toklen = eg_token_len(5), failures = 0;
  CU_ASSERT_EQUAL_FATAL(eg_token_seal(kr, &ctx_a, (const uint8_t *)"trunc", 5, tok), EG_OK);
  for (size_t len = 0; len < toklen; len++)
    if (eg_token_open(kr, &ctx_a, tok, len, out, &plen) != EG_ECORRUPT) failures++;
  CU_ASSERT_EQUAL(failures, 0);
  tok[toklen] = 0;
  CU_ASSERT_EQUAL(eg_token_open(kr, &ctx_a, tok, toklen + 1, out, &plen), EG_ECORRUPT);
  eg_keyring_free(kr);
}

static void test_keyring_parse_errors(void) {
  /* Every key here starts "AAECAwQF"; the base64 cases are: bad
   * character, trailing junk, well-formed but 16 bytes, then 33 bytes. */
  struct {
    const char *text;
    const char *want; /* in err */
  } cases[] = {
      {"key 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", "no 'primary <id>' line"},
      {"# ring\nprimary 3\nkey 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", "line 2:"},
      {"primary 1\nkey 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
       "key 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
       "line 3: duplicate key id 1"},
      {"primary 1\n\nkey 1 AAECAwQF!!!GCAkKCwwNDg8QERITFBUWFxgZGhscHR4f\n", "line 3:"},
      {"primary 1\nkey 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=junk\n", "line 2:"},
      {"primary 1\nkey 1 AAECAwQFBgcICQoLDA0ODw==\n", "line 2:"},
      {"primary 1\nkey 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g\n", "line 2:"},
      {"primary 1\nkey 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\nky 1 SECRETSECRET\n",
       "line 3:"},
      {"primary 1 2\n", "line 1:"},
      {"primary 0\n", "line 1:"},
      {"primary 1\nprimary 1\n", "line 2:"},
      {"primary 1\nkey 4294967296 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", "line 2:"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char err[256] = "";
    eg_keyring *kr = NULL;
    CU_ASSERT_EQUAL(ring_from_text(cases[i].text, &kr, err, sizeof err), EG_EINVAL);
    CU_ASSERT_PTR_NULL(kr);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, cases[i].want));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "/keyring:")); /* names the file */
    /* Key material never appears in the message. */
    CU_ASSERT_PTR_NULL(strstr(err, "AAECAwQF"));
    CU_ASSERT_PTR_NULL(strstr(err, "SECRET"));
  }
}

static void test_keyring_missing_file(void) {
  char err[256] = "";
  eg_keyring *kr = NULL;
  CU_ASSERT_EQUAL(eg_keyring_load("/nonexistent/keyring", &kr, err, sizeof err), EG_EINVAL);
  CU_ASSERT_PTR_NULL(kr);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent/keyring"));
}

/* A keyring any other user can read is refused, and the message says the
 * chmod that fixes it. */
static void test_keyring_mode(void) {
  static const mode_t bad[] = {0644, 0640, 0604, 0660, 0602, 0610};
  char text[256], path[4200], err[512], want[4300];
  snprintf(text, sizeof text, "primary 1\n%s", key1);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *dir = eg_test_tmpdir();
    eg_keyring *kr = NULL;
    err[0] = '\0';
    write_bytes(dir, "keyring", text, strlen(text), bad[i], path, sizeof path);
    CU_ASSERT_EQUAL(eg_keyring_load(path, &kr, err, sizeof err), EG_EINVAL);
    CU_ASSERT_PTR_NULL(kr);
    snprintf(want, sizeof want, "chmod 600 %s", path);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
    eg_keyring_free(kr);
    eg_test_rmdir(dir);
  }
  /* Owner-only modes load. */
  static const mode_t good[] = {0600, 0400};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    const char *dir = eg_test_tmpdir();
    eg_keyring *kr = NULL;
    write_bytes(dir, "keyring", text, strlen(text), good[i], path, sizeof path);
    CU_ASSERT_EQUAL(eg_keyring_load(path, &kr, err, sizeof err), EG_OK);
    eg_keyring_free(kr);
    eg_test_rmdir(dir);
  }
}

/* A NUL or another control byte is refused with its line named, wherever
 * it sits (a NUL must not end the parse early and hide what follows). */
static void test_keyring_stray_bytes(void) {
  char text[512], path[4200], err[512];
  struct {
    const char *insert; /* replaces the '#' of the comment line */
    size_t len;
    const char *want;
  } cases[] = {
      {"\0", 1, "line 3: byte 0x00"},
      {"\x01", 1, "line 3: byte 0x01"},
      {"\x7f", 1, "line 3: byte 0x7f"},
      {"\xc3", 1, "line 3: byte 0xc3"},
      {"\x0b", 1, "line 3: byte 0x0b"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *dir = eg_test_tmpdir();
    eg_keyring *kr = NULL;
    int n = snprintf(text, sizeof text, "primary 1\n%s#", key1);
    memcpy(text + n - 1, cases[i].insert, cases[i].len);
    n += snprintf(text + n, sizeof text - (size_t)n, " trailing comment\n");
    err[0] = '\0';
    write_bytes(dir, "keyring", text, (size_t)n, 0600, path, sizeof path);
    CU_ASSERT_EQUAL(eg_keyring_load(path, &kr, err, sizeof err), EG_EINVAL);
    CU_ASSERT_PTR_NULL(kr);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, cases[i].want));
    eg_keyring_free(kr);
    eg_test_rmdir(dir);
  }
  /* A NUL after the last newline too. */
  const char *dir = eg_test_tmpdir();
  eg_keyring *kr = NULL;
  int n = snprintf(text, sizeof text, "primary 1\n%s", key1);
  text[n++] = '\0';
  write_bytes(dir, "keyring", text, (size_t)n, 0600, path, sizeof path);
  CU_ASSERT_EQUAL(eg_keyring_load(path, &kr, err, sizeof err), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 3: byte 0x00"));
  eg_keyring_free(kr);
  eg_test_rmdir(dir);
}

/* The fingerprint names each key by id and check value: the same keys
 * pass, added keys pass and are reported, a missing or different key is
 * refused naming its id. */
static void test_keyring_fingerprint(void) {
  uint8_t fp[EG_KEYRING_FINGERPRINT_MAX], fp2[EG_KEYRING_FINGERPRINT_MAX];
  char err[256] = "", other1[EG_KEYGEN_LINE_MAX];
  int has_new = -1;
  CU_ASSERT_EQUAL_FATAL(eg_keyring_keygen_line(1, other1, sizeof other1), EG_OK);
  eg_keyring *r1 = ring_with(1, key1, "");
  eg_keyring *r1again = ring_with(1, key1, "");
  eg_keyring *r12 = ring_with(2, key1, key2);
  eg_keyring *r2 = ring_with(2, key2, "");
  eg_keyring *wrong1 = ring_with(1, other1, "");
  size_t len = eg_keyring_fingerprint(r1, fp);
  CU_ASSERT_EQUAL(len, 1 + 4 + EG_KEY_CHECK_LEN);
  CU_ASSERT_EQUAL(eg_keyring_fingerprint(r1again, fp2), len);
  CU_ASSERT_EQUAL(memcmp(fp, fp2, len), 0); /* stable across loads */
  CU_ASSERT_EQUAL(eg_keyring_fingerprint_check(r1again, fp, len, &has_new, err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(has_new, 0);
  CU_ASSERT_EQUAL(eg_keyring_fingerprint_check(r12, fp, len, &has_new, err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(has_new, 1);
  CU_ASSERT_EQUAL(eg_keyring_fingerprint_check(wrong1, fp, len, &has_new, err, sizeof err),
                  EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "key 1 "));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "differs"));
  err[0] = '\0';
  CU_ASSERT_EQUAL(eg_keyring_fingerprint_check(r2, fp, len, &has_new, err, sizeof err), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "key 1,"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "not in the keyring"));
  /* Two keys recorded: dropping either is refused. */
  size_t len12 = eg_keyring_fingerprint(r12, fp2);
  CU_ASSERT_EQUAL(len12, 1 + 2 * (4 + EG_KEY_CHECK_LEN));
  CU_ASSERT_EQUAL(eg_keyring_fingerprint_check(r1, fp2, len12, &has_new, err, sizeof err), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "key 2,"));
  CU_ASSERT_EQUAL(eg_keyring_fingerprint_check(r2, fp2, len12, &has_new, err, sizeof err), EG_EPRECOND);
  /* Malformed: empty, wrong version, a partial entry. */
  CU_ASSERT_EQUAL(eg_keyring_fingerprint_check(r1, fp, 0, &has_new, err, sizeof err), EG_ECORRUPT);
  CU_ASSERT_EQUAL(eg_keyring_fingerprint_check(r1, fp, len - 1, &has_new, err, sizeof err), EG_ECORRUPT);
  fp2[0] = 0x02;
  CU_ASSERT_EQUAL(eg_keyring_fingerprint_check(r1, fp2, len12, &has_new, err, sizeof err), EG_ECORRUPT);
  eg_keyring_free(r1);
  eg_keyring_free(r1again);
  eg_keyring_free(r12);
  eg_keyring_free(r2);
  eg_keyring_free(wrong1);
}

/* EG_KEYRING_KEYS_MAX keys load; one more is refused naming its line. */
static void test_keyring_keys_max(void) {
  size_t cap = 16 + (EG_KEYRING_KEYS_MAX + 1) * EG_KEYGEN_LINE_MAX;
  char *text = malloc(cap), err[256] = "";
  CU_ASSERT_FATAL(text != NULL);
  size_t n = (size_t)snprintf(text, cap, "primary 1\n");
  for (unsigned id = 1; id <= EG_KEYRING_KEYS_MAX; id++) {
    CU_ASSERT_EQUAL_FATAL(eg_keyring_keygen_line(id, text + n, cap - n), EG_OK);
    n += strlen(text + n);
  }
  eg_keyring *kr = ring_ok(text);
  uint8_t fp[EG_KEYRING_FINGERPRINT_MAX];
  CU_ASSERT_EQUAL(eg_keyring_fingerprint(kr, fp), (size_t)EG_KEYRING_FINGERPRINT_MAX);
  eg_keyring_free(kr);
  kr = NULL;
  CU_ASSERT_EQUAL_FATAL(eg_keyring_keygen_line(EG_KEYRING_KEYS_MAX + 1, text + n, cap - n), EG_OK);
  CU_ASSERT_EQUAL(ring_from_text(text, &kr, err, sizeof err), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 202: more than 200 keys"));
  free(text);
}

static void test_keyring_tolerates_layout(void) {
  char text[512];
  snprintf(text, sizeof text, "# comment\r\n\r\n   \n\tprimary\t1 \r\n%.*s\r\n  # end",
           (int)strcspn(key1, "\n"), key1);
  eg_keyring *kr = ring_ok(text);
  CU_ASSERT_EQUAL(eg_keyring_primary_id(kr), 1);
  eg_keyring_free(kr);
}

static void test_keyring_create(void) {
  const char *dir = eg_test_tmpdir();
  char path[4200], err[256] = "", before[256] = "", after[256] = "";
  struct stat st;
  eg_keyring *kr = NULL;
  snprintf(path, sizeof path, "%s/keyring", dir);
  CU_ASSERT_EQUAL_FATAL(eg_keyring_create(path), EG_OK);
  CU_ASSERT_EQUAL(stat(path, &st), 0);
  CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
  CU_ASSERT_EQUAL(eg_keyring_load(path, &kr, err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(eg_keyring_primary_id(kr), 1);
  eg_keyring_free(kr);
  FILE *f = fopen(path, "r");
  CU_ASSERT_FATAL(f != NULL);
  CU_ASSERT(fread(before, 1, sizeof before - 1, f) > 0);
  fclose(f);
  CU_ASSERT_EQUAL(strncmp(before, "primary 1\nkey 1 ", 16), 0);
  /* Never overwritten: that would lose every key sealed with the old one. */
  CU_ASSERT_EQUAL(eg_keyring_create(path), EG_EEXIST);
  f = fopen(path, "r");
  CU_ASSERT_FATAL(f != NULL);
  CU_ASSERT(fread(after, 1, sizeof after - 1, f) > 0);
  fclose(f);
  CU_ASSERT_STRING_EQUAL(before, after);
  snprintf(path, sizeof path, "%s/no/such/dir/keyring", dir);
  CU_ASSERT_EQUAL(eg_keyring_create(path), EG_EIO);
  eg_test_rmdir(dir);
}

static void test_keygen_line(void) {
  char line[EG_KEYGEN_LINE_MAX], other[EG_KEYGEN_LINE_MAX];
  uint8_t key[EG_KEY_LEN + 1];
  size_t keylen = 0;
  CU_ASSERT_EQUAL_FATAL(eg_keyring_keygen_line(4294967295u, line, sizeof line), EG_OK);
  CU_ASSERT_EQUAL(strncmp(line, "key 4294967295 ", 15), 0);
  size_t len = strlen(line);
  CU_ASSERT_EQUAL(line[len - 1], '\n');
  CU_ASSERT_EQUAL(sodium_base642bin(key, sizeof key, line + 15, len - 16, NULL, &keylen, NULL,
                                    sodium_base64_VARIANT_ORIGINAL),
                  0);
  CU_ASSERT_EQUAL(keylen, EG_KEY_LEN);
  CU_ASSERT_EQUAL(eg_keyring_keygen_line(4294967295u, other, sizeof other), EG_OK);
  CU_ASSERT_STRING_NOT_EQUAL(line, other);
  CU_ASSERT_EQUAL(eg_keyring_keygen_line(1, line, EG_KEYGEN_LINE_MAX - 1), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_keyring_keygen_line(0, line, sizeof line), EG_EINVAL);
}

static void test_sha256_hex(void) {
  char hex[65];
  eg_sha256_hex("acme-secret", strlen("acme-secret"), hex);
  CU_ASSERT_STRING_EQUAL(hex, "307c609f87da43c3d563428a4f7efdf9857f4871fd10465732c4ab11a985a08c");
  eg_sha256_hex("ops-secret", strlen("ops-secret"), hex);
  CU_ASSERT_STRING_EQUAL(hex, "32323cfa9ec9d62750daad0836a4cf3d7b60d23723b7852a529667deed01669f");
}

static void test_equal_and_random(void) {
  uint8_t a[32], b[32];
  eg_random_bytes(a, sizeof a);
  eg_random_bytes(b, sizeof b);
  CU_ASSERT_NOT_EQUAL(memcmp(a, b, sizeof a), 0);
  CU_ASSERT_FALSE(eg_crypto_equal(a, b, sizeof a));
  memcpy(b, a, sizeof a);
  CU_ASSERT_TRUE(eg_crypto_equal(a, b, sizeof a));
  b[31] ^= 1;
  CU_ASSERT_FALSE(eg_crypto_equal(a, b, sizeof a));
}

/* tests/vectors/<name>, found from this file's own path. */
static FILE *open_vector(const char *name) {
  char path[4200];
  const char *self = __FILE__, *unit = strstr(self, "tests/unit/");
  CU_ASSERT_FATAL(unit != NULL);
  snprintf(path, sizeof path, "%.*stests/vectors/%s", (int)(unit - self), self, name);
  return fopen(path, "r");
}

/* Copies the value of "<name> <value>" from the vector file into buf. */
static void vector_field(FILE *f, const char *name, char *buf, size_t len) {
  char line[1024];
  size_t n = strlen(name);
  buf[0] = '\0';
  rewind(f);
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, name, n) != 0 || line[n] != ' ') continue;
    line[strcspn(line, "\n")] = '\0';
    snprintf(buf, len, "%s", line + n + 1);
    return;
  }
  CU_FAIL_FATAL("vector field missing");
}

static void test_known_answer(void) {
  char keyline[128], ring[160], tenant[64], kind[64], record_id[64], field[64], plain[256],
      hex[1024];
  uint8_t tok[512], out[512];
  size_t toklen = 0, plen = 0;
  FILE *f = open_vector("token_v1.txt");
  CU_ASSERT_FATAL(f != NULL);
  vector_field(f, "key", keyline, sizeof keyline);
  vector_field(f, "tenant", tenant, sizeof tenant);
  vector_field(f, "kind", kind, sizeof kind);
  vector_field(f, "record_id", record_id, sizeof record_id);
  vector_field(f, "field", field, sizeof field);
  vector_field(f, "plaintext", plain, sizeof plain);
  vector_field(f, "token", hex, sizeof hex);
  fclose(f);
  CU_ASSERT_EQUAL_FATAL(
      sodium_hex2bin(tok, sizeof tok, hex, strlen(hex), NULL, &toklen, NULL), 0);
  snprintf(ring, sizeof ring, "primary 1\nkey %s\n", keyline);
  eg_keyring *kr = ring_ok(ring);
  const eg_field_ctx ctx = {tenant, kind, record_id, field};
  CU_ASSERT_EQUAL(eg_token_open(kr, &ctx, tok, toklen, out, &plen), EG_OK);
  CU_ASSERT_EQUAL(plen, strlen(plain));
  CU_ASSERT_EQUAL(memcmp(out, plain, strlen(plain)), 0);
  eg_keyring_free(kr);
}

/* ---- format 2: tokens under a data key ---- */

static void test_dek_round_trip(void) {
  uint8_t key[EG_KEY_LEN], tok[128], out[128];
  const char *msg = "under a data key";
  size_t len = strlen(msg), plen = 0;
  uint8_t version = 0;
  uint32_t gen = 0, key_id = 0;
  eg_random_bytes(key, sizeof key);
  CU_ASSERT_EQUAL_FATAL(eg_token_seal_dek(key, 7, &ctx_a, (const uint8_t *)msg, len, tok), EG_OK);
  CU_ASSERT_EQUAL(tok[0], EG_TOKEN_VERSION_DEK);
  CU_ASSERT_EQUAL(eg_token_version(tok, eg_token_len(len), &version), EG_OK);
  CU_ASSERT_EQUAL(version, EG_TOKEN_VERSION_DEK);
  CU_ASSERT_EQUAL(eg_token_generation(tok, eg_token_len(len), &gen), EG_OK);
  CU_ASSERT_EQUAL(gen, 7);
  /* Format 1's reader does not take it for a master key id. */
  CU_ASSERT_EQUAL(eg_token_key_id(tok, eg_token_len(len), &key_id), EG_ECORRUPT);
  CU_ASSERT_EQUAL(eg_token_open_dek(key, &ctx_a, tok, eg_token_len(len), out, &plen), EG_OK);
  CU_ASSERT(plen == len && memcmp(out, msg, len) == 0);
  CU_ASSERT_EQUAL(eg_token_seal_dek(key, 1, &ctx_a, (const uint8_t *)"", 0, tok), EG_OK);
  plen = 99;
  CU_ASSERT_EQUAL(eg_token_open_dek(key, &ctx_a, tok, eg_token_len(0), out, &plen), EG_OK);
  CU_ASSERT_EQUAL(plen, 0);
}

/* A data key opens its own tokens only, and the two formats never open
 * as each other: a master key's field subkey and a data key are apart. */
static void test_dek_formats_apart(void) {
  eg_keyring *kr = ring_with(1, key1, "");
  uint8_t key[EG_KEY_LEN], other[EG_KEY_LEN], tok[128], out[128];
  size_t plen = 0, toklen = eg_token_len(6);
  uint8_t version = 0;
  eg_random_bytes(key, sizeof key);
  eg_random_bytes(other, sizeof other);
  CU_ASSERT_EQUAL_FATAL(eg_token_seal_dek(key, 1, &ctx_a, (const uint8_t *)"secret", 6, tok),
                        EG_OK);
  memset(out, 0xAA, sizeof out);
  CU_ASSERT_EQUAL(eg_token_open_dek(other, &ctx_a, tok, toklen, out, &plen), EG_ECORRUPT);
  CU_ASSERT(all_zero(out, 6));
  CU_ASSERT_EQUAL(eg_token_open(kr, &ctx_a, tok, toklen, out, &plen), EG_ECORRUPT);
  CU_ASSERT_EQUAL_FATAL(eg_token_seal(kr, &ctx_a, (const uint8_t *)"secret", 6, tok), EG_OK);
  CU_ASSERT_EQUAL(eg_token_version(tok, toklen, &version), EG_OK);
  CU_ASSERT_EQUAL(version, EG_TOKEN_VERSION);
  CU_ASSERT_EQUAL(eg_token_open_dek(key, &ctx_a, tok, toklen, out, &plen), EG_ECORRUPT);
  /* An unknown format, or too short for a header. */
  tok[0] = 0x03;
  CU_ASSERT_EQUAL(eg_token_version(tok, toklen, &version), EG_ECORRUPT);
  tok[0] = EG_TOKEN_VERSION_DEK;
  CU_ASSERT_EQUAL(eg_token_version(tok, EG_TOKEN_HEADER_LEN - 1, &version), EG_ECORRUPT);
  eg_keyring_free(kr);
}

static void test_dek_tampering_fails(void) {
  static const eg_field_ctx others[] = {
      {"other", "message", "s1/7", "content"},
      {"acme", "session", "s1/7", "content"},
      {"acme", "message", "s1/8", "content"},
      {"acme", "message", "s1/7", "metadata"},
  };
  uint8_t key[EG_KEY_LEN], tok[128], out[128];
  const char *msg = "flip me";
  size_t len = strlen(msg), toklen = eg_token_len(len), plen = 0, failures = 0;
  eg_random_bytes(key, sizeof key);
  CU_ASSERT_EQUAL_FATAL(eg_token_seal_dek(key, 2, &ctx_a, (const uint8_t *)msg, len, tok), EG_OK);
  /* Every bit, the generation's too: the header is associated data. */
  for (size_t bit = 0; bit < toklen * 8; bit++) {
    tok[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    memset(out, 0xAA, sizeof out);
    if (eg_token_open_dek(key, &ctx_a, tok, toklen, out, &plen) != EG_ECORRUPT ||
        !all_zero(out, len))
      failures++;
    tok[bit / 8] ^= (uint8_t)(1u << (bit % 8));
  }
  for (size_t n = 0; n < toklen; n++)
    if (eg_token_open_dek(key, &ctx_a, tok, n, out, &plen) != EG_ECORRUPT) failures++;
  for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
    if (eg_token_open_dek(key, &others[i], tok, toklen, out, &plen) != EG_ECORRUPT) failures++;
  CU_ASSERT_EQUAL(failures, 0);
  CU_ASSERT_EQUAL(eg_token_open_dek(key, &ctx_a, tok, toklen, out, &plen), EG_OK);
}

/* tests/vectors/token_v2.txt: as token_v1.txt, the data key given raw. */
static void test_dek_known_answer(void) {
  char keyhex[128], genstr[16], tenant[64], kind[64], record_id[64], field[64], plain[256],
      hex[1024];
  uint8_t key[EG_KEY_LEN], tok[512], out[512];
  size_t keylen = 0, toklen = 0, plen = 0;
  uint32_t gen = 0;
  FILE *f = open_vector("token_v2.txt");
  CU_ASSERT_FATAL(f != NULL);
  vector_field(f, "data_key", keyhex, sizeof keyhex);
  vector_field(f, "generation", genstr, sizeof genstr);
  vector_field(f, "tenant", tenant, sizeof tenant);
  vector_field(f, "kind", kind, sizeof kind);
  vector_field(f, "record_id", record_id, sizeof record_id);
  vector_field(f, "field", field, sizeof field);
  vector_field(f, "plaintext", plain, sizeof plain);
  vector_field(f, "token", hex, sizeof hex);
  fclose(f);
  CU_ASSERT_EQUAL_FATAL(
      sodium_hex2bin(key, sizeof key, keyhex, strlen(keyhex), NULL, &keylen, NULL), 0);
  CU_ASSERT_EQUAL_FATAL(keylen, EG_KEY_LEN);
  CU_ASSERT_EQUAL_FATAL(
      sodium_hex2bin(tok, sizeof tok, hex, strlen(hex), NULL, &toklen, NULL), 0);
  const eg_field_ctx ctx = {tenant, kind, record_id, field};
  CU_ASSERT_EQUAL(eg_token_generation(tok, toklen, &gen), EG_OK);
  CU_ASSERT_EQUAL(gen, (uint32_t)strtoul(genstr, NULL, 10));
  CU_ASSERT_EQUAL(eg_token_open_dek(key, &ctx, tok, toklen, out, &plen), EG_OK);
  CU_ASSERT_EQUAL(plen, strlen(plain));
  CU_ASSERT_EQUAL(memcmp(out, plain, strlen(plain)), 0);
}

void eg_test_register_crypto(void) {
  CU_pSuite s = CU_add_suite("crypto", suite_init, NULL);
  CU_add_test(s, "init disables core dumps", test_init_disables_core_dumps);
  CU_add_test(s, "round trip", test_round_trip);
  CU_add_test(s, "every key decrypts", test_every_key_decrypts);
  CU_add_test(s, "unknown key id", test_unknown_key_id);
  CU_add_test(s, "every bit flip fails", test_every_bit_flip_fails);
  CU_add_test(s, "transplant fails", test_transplant_fails);
  CU_add_test(s, "truncated or extended fails", test_truncated_or_extended_fails);
  CU_add_test(s, "keyring parse errors", test_keyring_parse_errors);
  CU_add_test(s, "keyring missing file", test_keyring_missing_file);
  CU_add_test(s, "keyring tolerates layout", test_keyring_tolerates_layout);
  CU_add_test(s, "keyring mode", test_keyring_mode);
  CU_add_test(s, "keyring stray bytes", test_keyring_stray_bytes);
  CU_add_test(s, "keyring fingerprint", test_keyring_fingerprint);
  CU_add_test(s, "keyring keys max", test_keyring_keys_max);
  CU_add_test(s, "keyring create", test_keyring_create);
  CU_add_test(s, "keygen line", test_keygen_line);
  CU_add_test(s, "sha256 hex", test_sha256_hex);
  CU_add_test(s, "equal and random", test_equal_and_random);
  CU_add_test(s, "known answer", test_known_answer);
  CU_add_test(s, "format 2 round trip", test_dek_round_trip);
  CU_add_test(s, "format 2 apart from format 1", test_dek_formats_apart);
  CU_add_test(s, "format 2 tampering fails", test_dek_tampering_fails);
  CU_add_test(s, "format 2 known answer", test_dek_known_answer);
}
