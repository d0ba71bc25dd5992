/*
 * Keyring: parsing the keyring file, creating a fresh one, key lookup.
 *
 * The master keys are only read to derive per-purpose subkeys and are then
 * wiped: the keyring holds the subkeys alone, in sodium_malloc'd memory
 * that is read-only once loaded and zeroed by sodium_free.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/crypto_int.h"

/* A keyring is a few short lines (about 60 bytes a key); a bigger file is a
 * mistake, and the cap bounds the key array sized from its line count. */
#define EG_KEYRING_FILE_MAX (64 * 1024)
#define EG_KDF_FIELD_CONTEXT "egfield_"
#define EG_KDF_FIELD_ID 1
/* The blind-index subkey: derived from every master key, used from the
 * store's blind-index key id only (eg_blind_begin_id). */
#define EG_KDF_BLIND_CONTEXT "egblind_"
#define EG_KDF_BLIND_ID 2
/* The check-value subkey: used only to make a key's check value, which
 * identifies the key without revealing it (see eg_keyring_fingerprint). */
#define EG_KDF_CHECK_CONTEXT "egcheck_"
#define EG_KDF_CHECK_ID 3
/* The page-token subkey: page tokens go to clients, so they are sealed
 * under a key of their own, never the one that seals stored fields. */
#define EG_KDF_PAGE_CONTEXT "egpage__"
#define EG_KDF_PAGE_ID 4
/* The key-wrapping subkey: seals users' data keys in the key store
 * (crypto/wrap.c), never a field or a page token. */
#define EG_KDF_WRAP_CONTEXT "egwrap__"
#define EG_KDF_WRAP_ID 5
#define EG_CHECK_LABEL "engram keyring check value v1"
#define EG_FINGERPRINT_VERSION 0x01
#define EG_FINGERPRINT_ENTRY (4 + EG_KEY_CHECK_LEN)

_Static_assert(EG_KEY_LEN == crypto_kdf_KEYBYTES, "master keys are crypto_kdf keys");
_Static_assert(sizeof EG_KDF_FIELD_CONTEXT - 1 == crypto_kdf_CONTEXTBYTES, "kdf context");
_Static_assert(sizeof EG_KDF_BLIND_CONTEXT - 1 == crypto_kdf_CONTEXTBYTES, "kdf context");
_Static_assert(sizeof EG_KDF_CHECK_CONTEXT - 1 == crypto_kdf_CONTEXTBYTES, "kdf context");
_Static_assert(sizeof EG_KDF_PAGE_CONTEXT - 1 == crypto_kdf_CONTEXTBYTES, "kdf context");
_Static_assert(sizeof EG_KDF_WRAP_CONTEXT - 1 == crypto_kdf_CONTEXTBYTES, "kdf context");
_Static_assert(EG_KEYRING_FINGERPRINT_MAX == 1 + EG_KEYRING_KEYS_MAX * EG_FINGERPRINT_ENTRY,
               "fingerprint layout");

/* One master key, represented by the subkeys derived from it. */
typedef struct {
  uint32_t id;
  uint8_t field_key[EG_KEY_LEN];
  uint8_t blind_key[EG_KEY_LEN];
  uint8_t page_key[EG_KEY_LEN];
  uint8_t wrap_key[EG_KEY_LEN];
  uint8_t check[EG_KEY_CHECK_LEN]; /* not secret: see eg_keyring_fingerprint */
} eg_key;

struct eg_keyring {
  uint32_t primary;
  size_t n;     /* keys in use */
  size_t cap;   /* keys allocated */
  eg_key *keys; /* sodium_malloc'd; read-only after eg_keyring_load */
};

/* Where the parser is, for error messages. */
typedef struct {
  const char *path;
  char *err;
  size_t errlen;
  unsigned line;         /* current line, from 1 */
  unsigned primary_line; /* line of the `primary` line; 0 until seen */
} eg_kparse;

/* Writes "<path>: line <n>: <reason>" (or "<path>: <reason>" when line is
 * 0) into the parser's err and returns EG_EINVAL. Callers never pass key
 * material in the reason. */
static eg_err kparse_fail(const eg_kparse *p, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static eg_err kparse_fail(const eg_kparse *p, unsigned line, const char *fmt, ...) {
  int n = line ? snprintf(p->err, p->errlen, "%s: line %u: ", p->path, line)
               : snprintf(p->err, p->errlen, "%s: ", p->path);
  if (n >= 0 && (size_t)n < p->errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
    va_end(ap);
  }
  return EG_EINVAL;
}

static eg_key *keyring_find(const eg_keyring *kr, uint32_t id) {
  for (size_t i = 0; i < kr->n; i++)
    if (kr->keys[i].id == id) return &kr->keys[i];
  return NULL;
}

const uint8_t *eg__keyring_field_key(const eg_keyring *kr, uint32_t id) {
  const eg_key *k = keyring_find(kr, id);
  return k ? k->field_key : NULL;
}

const uint8_t *eg__keyring_page_key(const eg_keyring *kr, uint32_t id) {
  const eg_key *k = keyring_find(kr, id);
  return k ? k->page_key : NULL;
}

const uint8_t *eg__keyring_wrap_key(const eg_keyring *kr, uint32_t id) {
  const eg_key *k = keyring_find(kr, id);
  return k ? k->wrap_key : NULL;
}

uint32_t eg_keyring_primary_id(const eg_keyring *kr) { return kr->primary; }

/* The key with the lowest id: adding a key (higher ids) and moving
 * `primary` leaves it, so blind-index tokens stay stable until a
 * blind-index rotation moves the store's id. */
static const eg_key *keyring_lowest(const eg_keyring *kr) {
  const eg_key *low = NULL;
  for (size_t i = 0; i < kr->n; i++)
    if (!low || kr->keys[i].id < low->id) low = &kr->keys[i];
  return low;
}

const uint8_t *eg__keyring_blind_key(const eg_keyring *kr, uint32_t id) {
  const eg_key *k = keyring_find(kr, id);
  return k ? k->blind_key : NULL;
}

uint32_t eg_keyring_blind_key_id(const eg_keyring *kr) {
  const eg_key *k = keyring_lowest(kr);
  return k ? k->id : 0;
}

void eg_keyring_free(eg_keyring *kr) {
  if (!kr) return;
  sodium_free(kr->keys); /* zeroes the subkeys */
  free(kr);
}

/* Reads the whole file into sodium_malloc'd memory (it holds key material),
 * NUL-terminated, its length in *outlen. Refuses a file other users can
 * read. On success the caller sodium_free()s *out. */
static eg_err read_secret_file(const eg_kparse *p, char **out, size_t *outlen) {
  char *buf = NULL;
  struct stat st;
  size_t len = 0;
  int fd = open(p->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return kparse_fail(p, 0, "%s", strerror(errno));
  eg_err rc = EG_EINVAL;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > EG_KEYRING_FILE_MAX) {
    kparse_fail(p, 0, "not a regular file of at most %d bytes", EG_KEYRING_FILE_MAX);
    goto fail;
  }
  /* Whoever can read the file can read every record: only its owner may. */
  if (st.st_mode & 077) {
    kparse_fail(p, 0, "mode %04o lets other users read or change the keys; run: chmod 600 %s",
                (unsigned)(st.st_mode & 07777), p->path);
    goto fail;
  }
  buf = sodium_malloc((size_t)st.st_size + 1);
  if (!buf) {
    kparse_fail(p, 0, "out of memory");
    rc = EG_ENOMEM;
    goto fail;
  }
  while (len < (size_t)st.st_size) {
    ssize_t r = read(fd, buf + len, (size_t)st.st_size - len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      kparse_fail(p, 0, "%s", strerror(errno));
      goto fail;
    }
    if (r == 0) break; /* shrank since fstat: parse what is there */
    len += (size_t)r;
  }
  buf[len] = '\0';
  close(fd);
  *out = buf;
  *outlen = len;
  return EG_OK;
fail:
  sodium_free(buf);
  close(fd);
  return rc;
}

/* Parses a key id: decimal digits only, 1..UINT32_MAX. 0 if invalid. */
static uint32_t parse_id(const char *s) {
  size_t len = strlen(s);
  if (len == 0 || len > 10 || strspn(s, "0123456789") != len) return 0;
  unsigned long long v = strtoull(s, NULL, 10);
  return v <= UINT32_MAX ? (uint32_t)v : 0;
}

static eg_err parse_primary(eg_keyring *kr, eg_kparse *p, const char *id_s) {
  uint32_t id = parse_id(id_s);
  if (!id) return kparse_fail(p, p->line, "primary id must be a number in 1..4294967295");
  if (p->primary_line)
    return kparse_fail(p, p->line, "second 'primary' line (first on line %u)", p->primary_line);
  kr->primary = id;
  p->primary_line = p->line;
  return EG_OK;
}

/* k->check = BLAKE2b of a fixed label keyed with the check subkey: equal
 * for equal master keys, and, being a MAC under a subkey of its own, it
 * tells nothing about the master key or the other subkeys. */
static void key_check_value(eg_key *k, const uint8_t master[EG_KEY_LEN]) {
  uint8_t sub[EG_KEY_LEN];
  crypto_kdf_derive_from_key(sub, sizeof sub, EG_KDF_CHECK_ID, EG_KDF_CHECK_CONTEXT, master);
  crypto_generichash(k->check, sizeof k->check, (const uint8_t *)EG_CHECK_LABEL,
                     sizeof EG_CHECK_LABEL - 1, sub, sizeof sub);
  sodium_memzero(sub, sizeof sub);
}

static eg_err parse_key(eg_keyring *kr, eg_kparse *p, const char *id_s, const char *b64) {
  uint8_t master[EG_KEY_LEN];
  size_t binlen = 0;
  const char *end = NULL;
  uint32_t id = parse_id(id_s);
  if (!id) return kparse_fail(p, p->line, "key id must be a number in 1..4294967295");
  if (keyring_find(kr, id)) return kparse_fail(p, p->line, "duplicate key id %u", id);
  if (kr->n == EG_KEYRING_KEYS_MAX)
    return kparse_fail(p, p->line, "more than %d keys", EG_KEYRING_KEYS_MAX);
  size_t b64len = strlen(b64);
  if (sodium_base642bin(master, sizeof master, b64, b64len, NULL, &binlen, &end,
                        sodium_base64_VARIANT_ORIGINAL) != 0 ||
      end != b64 + b64len || binlen != sizeof master) {
    sodium_memzero(master, sizeof master);
    return kparse_fail(p, p->line, "key %u is not the base64 of %d bytes", id, EG_KEY_LEN);
  }
  assert(kr->n < kr->cap); /* cap is the file's line count */
  eg_key *k = &kr->keys[kr->n++];
  k->id = id;
  crypto_kdf_derive_from_key(k->field_key, sizeof k->field_key, EG_KDF_FIELD_ID,
                             EG_KDF_FIELD_CONTEXT, master);
  crypto_kdf_derive_from_key(k->blind_key, sizeof k->blind_key, EG_KDF_BLIND_ID,
                             EG_KDF_BLIND_CONTEXT, master);
  crypto_kdf_derive_from_key(k->page_key, sizeof k->page_key, EG_KDF_PAGE_ID, EG_KDF_PAGE_CONTEXT,
                             master);
  crypto_kdf_derive_from_key(k->wrap_key, sizeof k->wrap_key, EG_KDF_WRAP_ID, EG_KDF_WRAP_CONTEXT,
                             master);
  key_check_value(k, master);
  sodium_memzero(master, sizeof master);
  return EG_OK;
}

/* One line, NUL-terminated, newline removed. Words are separated by
 * blanks; '\r' counts as one so files written on Windows load. */
static eg_err parse_line(eg_keyring *kr, eg_kparse *p, char *line) {
  const char *sep = " \t\r";
  char *save = NULL;
  char *args[3];
  size_t n = 0;
  char *word = strtok_r(line, sep, &save);
  if (!word || word[0] == '#') return EG_OK;
  while (n < 3 && (args[n] = strtok_r(NULL, sep, &save)) != NULL) n++;
  if (strcmp(word, "primary") == 0 && n == 1) return parse_primary(kr, p, args[0]);
  if (strcmp(word, "key") == 0 && n == 2) return parse_key(kr, p, args[0], args[1]);
  /* Never quote the line: it may be a mistyped key line. */
  return kparse_fail(p, p->line, "expected 'primary <id>' or 'key <id> <base64>'");
}

static eg_err parse_text(eg_keyring *kr, eg_kparse *p, char *text) {
  for (char *line = text; line; p->line++) {
    char *nl = strchr(line, '\n');
    if (nl) *nl = '\0';
    eg_err rc = parse_line(kr, p, line);
    if (rc) return rc;
    line = nl ? nl + 1 : NULL;
  }
  if (!p->primary_line) return kparse_fail(p, 0, "no 'primary <id>' line");
  if (!keyring_find(kr, kr->primary))
    return kparse_fail(p, p->primary_line, "primary %u is not among the keys", kr->primary);
  return EG_OK;
}

/* Refuses any byte but printable ASCII, tab, CR and LF, naming its line:
 * a NUL would otherwise end the parse early and hide the rest, and the
 * format has no use for anything else (base64, digits, words). */
static eg_err check_bytes(const eg_kparse *p, const char *text, size_t len) {
  unsigned line = 1;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)text[i];
    if (c == '\n') line++;
    else if (c != '\t' && c != '\r' && (c < 0x20 || c > 0x7e))
      return kparse_fail(p, line, "byte 0x%02x is not printable text", c);
  }
  return EG_OK;
}

static size_t count_lines(const char *text) {
  size_t n = 1;
  for (const char *s = text; (s = strchr(s, '\n')) != NULL; s++) n++;
  return n;
}

eg_err eg_keyring_load(const char *path, eg_keyring **out, char *err, size_t errlen) {
  eg_kparse p = {.path = path, .err = err, .errlen = errlen, .line = 1};
  char *text = NULL;
  size_t len = 0;
  eg_keyring *kr = NULL;
  eg_err rc = read_secret_file(&p, &text, &len);
  if (rc) return rc;
  if ((rc = check_bytes(&p, text, len)) != EG_OK) {
    sodium_free(text);
    return rc;
  }
  rc = EG_ENOMEM;
  kr = calloc(1, sizeof *kr);
  if (!kr) goto fail;
  kr->cap = count_lines(text);
  kr->keys = sodium_allocarray(kr->cap, sizeof *kr->keys);
  if (!kr->keys) goto fail;
  rc = parse_text(kr, &p, text);
  if (rc) goto fail;
  sodium_mprotect_readonly(kr->keys);
  sodium_free(text);
  *out = kr;
  return EG_OK;
fail:
  if (rc == EG_ENOMEM) kparse_fail(&p, 0, "out of memory");
  eg_keyring_free(kr);
  sodium_free(text);
  return rc;
}

static void put_u32be(uint8_t *b, uint32_t v) {
  b[0] = (uint8_t)(v >> 24), b[1] = (uint8_t)(v >> 16), b[2] = (uint8_t)(v >> 8), b[3] = (uint8_t)v;
}

static uint32_t get_u32be(const uint8_t *b) {
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

size_t eg_keyring_fingerprint(const eg_keyring *kr, uint8_t *out) {
  uint8_t *p = out;
  *p++ = EG_FINGERPRINT_VERSION;
  for (size_t i = 0; i < kr->n; i++, p += EG_FINGERPRINT_ENTRY) {
    put_u32be(p, kr->keys[i].id);
    memcpy(p + 4, kr->keys[i].check, EG_KEY_CHECK_LEN);
  }
  return (size_t)(p - out);
}

/* 1 if fp's entries name id. */
static int fingerprint_has(const uint8_t *fp, size_t n, uint32_t id) {
  for (size_t i = 0; i < n; i++)
    if (get_u32be(fp + 1 + i * EG_FINGERPRINT_ENTRY) == id) return 1;
  return 0;
}

/* 1 if fp[0..len) has the fingerprint layout. */
static int fingerprint_valid(const uint8_t *fp, size_t len) {
  return len >= 1 && fp[0] == EG_FINGERPRINT_VERSION && (len - 1) % EG_FINGERPRINT_ENTRY == 0 &&
         len <= EG_KEYRING_FINGERPRINT_MAX;
}

eg_err eg_keyring_fingerprint_ids(const uint8_t *fp, size_t len, uint32_t *ids, size_t cap,
                                  size_t *n) {
  if (!fingerprint_valid(fp, len)) return EG_ECORRUPT;
  size_t count = (len - 1) / EG_FINGERPRINT_ENTRY;
  if (count > cap) return EG_ELIMIT;
  for (size_t i = 0; i < count; i++) ids[i] = get_u32be(fp + 1 + i * EG_FINGERPRINT_ENTRY);
  *n = count;
  return EG_OK;
}

size_t eg_keyring_fingerprint_drop(uint8_t *fp, size_t len, uint32_t id) {
  if (!fingerprint_valid(fp, len)) return len;
  for (size_t off = 1; off < len; off += EG_FINGERPRINT_ENTRY) {
    if (get_u32be(fp + off) != id) continue;
    memmove(fp + off, fp + off + EG_FINGERPRINT_ENTRY, len - off - EG_FINGERPRINT_ENTRY);
    return len - EG_FINGERPRINT_ENTRY;
  }
  return len;
}

int eg_keyring_has(const eg_keyring *kr, uint32_t id) { return keyring_find(kr, id) != NULL; }

eg_err eg_keyring_fingerprint_check(const eg_keyring *kr, const uint8_t *fp, size_t len,
                                    int *has_new, char *err, size_t errlen) {
  if (!fingerprint_valid(fp, len)) {
    snprintf(err, errlen, "the recorded key fingerprint is malformed (%zu bytes)", len);
    return EG_ECORRUPT;
  }
  size_t n = (len - 1) / EG_FINGERPRINT_ENTRY;
  for (size_t i = 0; i < n; i++) {
    const uint8_t *e = fp + 1 + i * EG_FINGERPRINT_ENTRY;
    uint32_t id = get_u32be(e);
    const eg_key *k = keyring_find(kr, id);
    if (!k) {
      snprintf(err, errlen, "key %u, which data here may be sealed with, is not in the keyring", id);
      return EG_EPRECOND;
    }
    if (!eg_crypto_equal(k->check, e + 4, EG_KEY_CHECK_LEN)) {
      snprintf(err, errlen, "key %u in the keyring differs from the key %u the data here was sealed with", id, id);
      return EG_EPRECOND;
    }
  }
  *has_new = 0;
  for (size_t i = 0; i < kr->n && !*has_new; i++) *has_new = !fingerprint_has(fp, n, kr->keys[i].id);
  return EG_OK;
}

eg_err eg_keyring_keygen_line(uint32_t id, char *line, size_t linelen) {
  uint8_t key[EG_KEY_LEN];
  if (id == 0 || linelen < EG_KEYGEN_LINE_MAX) return EG_EINVAL;
  int n = snprintf(line, linelen, "key %u ", id);
  randombytes_buf(key, sizeof key);
  /* Encode straight into line so the key has no other copy to wipe. */
  sodium_bin2base64(line + n, linelen - (size_t)n, key, sizeof key,
                    sodium_base64_VARIANT_ORIGINAL);
  sodium_memzero(key, sizeof key);
  strcat(line + n, "\n");
  return EG_OK;
}

static int write_all(int fd, const char *s, size_t len) {
  while (len > 0) {
    ssize_t w = write(fd, s, len);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    s += w;
    len -= (size_t)w;
  }
  return 0;
}

/* fsyncs the directory holding path, so a new file's name survives a crash. */
static int fsync_parent(const char *path) {
  char dir[PATH_MAX];
  if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir) return -1;
  int fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

eg_err eg_keyring_create(const char *path) {
  /* "primary 1\n" plus one keygen line. */
  char text[16 + EG_KEYGEN_LINE_MAX] = "primary 1\n";
  size_t head = strlen(text);
  eg_err rc = eg_keyring_keygen_line(1, text + head, sizeof text - head);
  if (rc) return rc;
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = errno == EEXIST ? EG_EEXIST : EG_EIO;
    goto done;
  }
  /* Data sealed under this key is lost if the key is, so it must be on
   * disk (name included) before anything is encrypted with it. */
  if (write_all(fd, text, strlen(text)) != 0 || fsync(fd) != 0 || fsync_parent(path) != 0) {
    unlink(path);
    rc = EG_EIO;
  }
  close(fd);
done:
  sodium_memzero(text, sizeof text);
  return rc;
}
