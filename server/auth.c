#include "server/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crypto/crypto.h"
#include "server/validate.h"

#define EG_AUTH_MAX_TOKEN 4096
/* A tokens line is "tenant role hash": at most 128 + 7 + 64 bytes and two
 * blanks. The cap leaves room for comments and padding; a longer line is
 * refused rather than read in pieces, each taken for a line of its own. */
#define EG_AUTH_LINE_MAX 1023

struct eg_auth_entry {
  char tenant[EG_ID_MAX + 1];
  eg_role role;
  char hash[65];
  int lineno; /* for messages about the file */
};

struct eg_auth {
  struct eg_auth_entry *entries;
  size_t n;
  int dev;
};

static const struct {
  const char *name;
  eg_role role;
} eg_role_names[] = {
    {"agent", EG_ROLE_AGENT}, {"admin", EG_ROLE_ADMIN}, {"replica", EG_ROLE_REPLICA}};

static int eg_role_parse(const char *s, eg_role *out) {
  for (size_t i = 0; i < sizeof eg_role_names / sizeof eg_role_names[0]; i++)
    if (strcmp(s, eg_role_names[i].name) == 0) return *out = eg_role_names[i].role, 0;
  return -1;
}

static int eg_is_hex64(const char *s) {
  if (strlen(s) != 64) return 0;
  for (; *s; s++)
    if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f'))) return 0;
  return 1;
}

/* Parses one non-comment line into e; returns 0 or -1 with err set. */
static int eg_auth_parse_line(char *line, int lineno, struct eg_auth_entry *e, char *err,
                              size_t errlen) {
  char tenant[256], role[32], hash[128], extra[2];
  char ignored[256];
  int n = sscanf(line, "%255s %31s %127s %1s", tenant, role, hash, extra);
  if (n != 3) {
    snprintf(err, errlen, "line %d: want 'tenant role sha256hex'", lineno);
    return -1;
  }
  if (eg_validate_id("tenant", tenant, 1, ignored, sizeof ignored) != EG_OK) {
    snprintf(err, errlen, "line %d: tenant must match [A-Za-z0-9._:-]{1,128}", lineno);
    return -1;
  }
  if (eg_role_parse(role, &e->role) != 0) {
    snprintf(err, errlen, "line %d: role must be agent, admin or replica", lineno);
    return -1;
  }
  if (!eg_is_hex64(hash)) {
    snprintf(err, errlen, "line %d: hash must be 64 lowercase hex digits", lineno);
    return -1;
  }
  snprintf(e->tenant, sizeof e->tenant, "%.128s", tenant);
  memcpy(e->hash, hash, sizeof e->hash);
  e->lineno = lineno;
  return 0;
}

static int eg_auth_entry_cmp(const void *a, const void *b) {
  const struct eg_auth_entry *x = a, *y = b;
  int c = strcmp(x->hash, y->hash);
  return c ? c : x->lineno - y->lineno;
}

/* One line per token: a token on two lines would leave one of them
 * silently unused (the check takes the first match). Sorts the entries
 * by hash (their order does not matter: the check visits every one). */
static int eg_auth_check_unique(eg_auth *a, char *err, size_t errlen) {
  if (a->n > 1) qsort(a->entries, a->n, sizeof a->entries[0], eg_auth_entry_cmp);
  for (size_t i = 1; i < a->n; i++)
    if (strcmp(a->entries[i - 1].hash, a->entries[i].hash) == 0) {
      snprintf(err, errlen, "line %d: the same token is already on line %d (one line per token)",
               a->entries[i].lineno, a->entries[i - 1].lineno);
      return -1;
    }
  return 0;
}

enum { EG_AUTH_LINE_OK = 1, EG_AUTH_LINE_LONG, EG_AUTH_LINE_NUL };

/* Reads the next line of f into line (EG_AUTH_LINE_MAX + 1 bytes), without
 * its newline, NUL-terminated. Returns 0 at end of file, EG_AUTH_LINE_OK,
 * or, having skipped to the next line, EG_AUTH_LINE_LONG for a line over
 * EG_AUTH_LINE_MAX bytes or EG_AUTH_LINE_NUL for one holding a NUL byte
 * (which would hide the words after it from the parser). */
static int eg_auth_read_line(FILE *f, char *line) {
  size_t len = 0;
  int c, got = EG_AUTH_LINE_OK;
  while ((c = getc(f)) != EOF && c != '\n') {
    if (c == '\0') got = EG_AUTH_LINE_NUL;
    else if (len == EG_AUTH_LINE_MAX) got = got == EG_AUTH_LINE_NUL ? got : EG_AUTH_LINE_LONG;
    else line[len++] = (char)c;
  }
  line[len] = '\0';
  return c == EOF && len == 0 && got == EG_AUTH_LINE_OK ? 0 : got;
}

eg_err eg_auth_load(const char *path, eg_auth **out, char *err, size_t errlen) {
  eg_auth *a = calloc(1, sizeof *a);
  if (!a) return EG_ENOMEM;
  if (!path || !*path) {
    a->dev = 1;
    *out = a;
    return EG_OK;
  }
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errlen, "%s: cannot open", path);
    free(a);
    return EG_EINVAL;
  }
  char line[EG_AUTH_LINE_MAX + 1];
  int lineno = 0, got;
  eg_err rc = EG_OK;
  while ((got = eg_auth_read_line(f, line)) > 0) {
    lineno++;
    char *p = line + strspn(line, " \t");
    if (got == EG_AUTH_LINE_NUL) {
      snprintf(err, errlen, "line %d: contains a NUL byte", lineno);
      rc = EG_EINVAL;
      goto fail;
    }
    if (*p == '#') continue; /* a comment may be any length */
    if (got == EG_AUTH_LINE_LONG) {
      snprintf(err, errlen, "line %d: longer than %d bytes", lineno, EG_AUTH_LINE_MAX);
      rc = EG_EINVAL;
      goto fail;
    }
    if (*p == '\0') continue;
    struct eg_auth_entry *grown = realloc(a->entries, (a->n + 1) * sizeof *grown);
    if (!grown) {
      rc = EG_ENOMEM;
      goto fail;
    }
    a->entries = grown;
    if (eg_auth_parse_line(p, lineno, &a->entries[a->n], err, errlen) != 0) {
      rc = EG_EINVAL;
      goto fail;
    }
    a->n++;
  }
  if (eg_auth_check_unique(a, err, errlen) != 0) {
    rc = EG_EINVAL;
    goto fail;
  }
  fclose(f);
  *out = a;
  return EG_OK;
fail:
  fclose(f);
  eg_auth_free(a);
  return rc;
}

void eg_auth_free(eg_auth *a) {
  if (!a) return;
  free(a->entries);
  free(a);
}

int eg_auth_dev_mode(const eg_auth *a) { return a->dev; }

eg_err eg_auth_check(const eg_auth *a, const char *authz, size_t authz_len, eg_role need,
                     const char **tenant) {
  static const char bearer[] = "Bearer ";
  const size_t blen = sizeof bearer - 1;
  if (a->dev) {
    *tenant = EG_DEV_TENANT;
    return EG_OK;
  }
  if (!authz || authz_len <= blen || authz_len > EG_AUTH_MAX_TOKEN ||
      strncasecmp(authz, bearer, blen) != 0) /* the scheme is case-insensitive (RFC 7235) */
    return need == EG_ROLE_NONE ? EG_OK : EG_EUNAUTH;

  char hash[65];
  eg_sha256_hex(authz + blen, authz_len - blen, hash);
  /* Compare against every entry, in constant time each, so the time taken
   * says nothing about which entry (or how much of one) matched. */
  const struct eg_auth_entry *match = NULL;
  for (size_t i = 0; i < a->n; i++)
    if (eg_crypto_equal(hash, a->entries[i].hash, 64) && !match) match = &a->entries[i];
  if (need == EG_ROLE_NONE) return EG_OK;
  if (!match) return EG_EUNAUTH;
  if (!(match->role & need)) return EG_EPERM;
  *tenant = match->tenant;
  return EG_OK;
}
