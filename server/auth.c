#define _GNU_SOURCE /* pthread_rwlockattr_setkind_np */
#include "server/auth.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "crypto/crypto.h"

#define EG_AUTH_MAX_TOKEN 4096
/* A tokens line is "tenant role hash": at most 128 + 7 + 64 bytes and two
 * blanks; an identities line "uri:SAN tenant role". The cap leaves room
 * for comments and padding; a longer line is refused rather than read in
 * pieces, each taken for a line of its own. */
#define EG_AUTH_LINE_MAX 1023

struct eg_auth_entry {
  char tenant[EG_ID_MAX + 1];
  eg_role role;
  char hash[65];
  int lineno; /* for messages about the file */
};

/* An identities line; san is "uri:..." or "dns:..." as written. */
struct eg_auth_ident {
  char san[4 + EG_AUTH_SAN_MAX + 1];
  char tenant[EG_ID_MAX + 1];
  eg_role role;
  int lineno;
};

/* What the two files hold, read whole; swapped whole on reload. */
typedef struct {
  struct eg_auth_entry *entries; /* sorted by hash */
  size_t n;
  struct eg_auth_ident *idents; /* sorted by san */
  size_t n_idents;
} eg_auth_table;

/* Calls hold the read lock only for a check, and copy their tenant out
 * (eg_auth_check's tenant buffer): once a reload has taken the write lock
 * to swap in the new table, no call can still be reading the old one, so
 * it is freed at once. Checks are short and the lock prefers the writer,
 * so a reload never waits long (nor forever under load). */
struct eg_auth {
  pthread_rwlock_t lock;
  eg_auth_table *cur;
  char *tokens;     /* paths, NULL: none */
  char *identities;
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

/* The tenant and role words of a line of either file, checked alike. */
static int eg_auth_tenant_role(const char *tenant, const char *role, int lineno, char *tenant_out,
                               eg_role *role_out, char *err, size_t errlen) {
  char ignored[256];
  if (eg_validate_id("tenant", tenant, 1, ignored, sizeof ignored) != EG_OK) {
    snprintf(err, errlen, "line %d: tenant must match [A-Za-z0-9._:-]{1,128}", lineno);
    return -1;
  }
  if (eg_role_parse(role, role_out) != 0) {
    snprintf(err, errlen, "line %d: role must be agent, admin or replica", lineno);
    return -1;
  }
  snprintf(tenant_out, EG_ID_MAX + 1, "%.128s", tenant);
  return 0;
}

/* Parses one tokens line into e; returns 0 or -1 with err set. */
static int eg_auth_parse_line(char *line, int lineno, struct eg_auth_entry *e, char *err,
                              size_t errlen) {
  char tenant[256], role[32], hash[128], extra[2];
  int n = sscanf(line, "%255s %31s %127s %1s", tenant, role, hash, extra);
  if (n != 3) {
    snprintf(err, errlen, "line %d: want 'tenant role sha256hex'", lineno);
    return -1;
  }
  if (eg_auth_tenant_role(tenant, role, lineno, e->tenant, &e->role, err, errlen) != 0) return -1;
  if (!eg_is_hex64(hash)) {
    snprintf(err, errlen, "line %d: hash must be 64 lowercase hex digits", lineno);
    return -1;
  }
  memcpy(e->hash, hash, sizeof e->hash);
  e->lineno = lineno;
  return 0;
}

/* Parses one identities line into e; returns 0 or -1 with err set. */
static int eg_auth_parse_ident(char *line, int lineno, struct eg_auth_ident *e, char *err,
                               size_t errlen) {
  char san[EG_AUTH_LINE_MAX + 1], tenant[256], role[32], extra[2];
  int n = sscanf(line, "%1023s %255s %31s %1s", san, tenant, role, extra);
  if (n != 3) {
    snprintf(err, errlen, "line %d: want 'uri:SAN tenant role' or 'dns:SAN tenant role'", lineno);
    return -1;
  }
  if ((strncmp(san, "uri:", 4) != 0 && strncmp(san, "dns:", 4) != 0) || san[4] == '\0') {
    snprintf(err, errlen, "line %d: the SAN must be uri:VALUE or dns:VALUE", lineno);
    return -1;
  }
  if (strlen(san + 4) > EG_AUTH_SAN_MAX) {
    snprintf(err, errlen, "line %d: the SAN is longer than %d bytes", lineno, EG_AUTH_SAN_MAX);
    return -1;
  }
  if (eg_auth_tenant_role(tenant, role, lineno, e->tenant, &e->role, err, errlen) != 0) return -1;
  memcpy(e->san, san, strlen(san) + 1);
  e->lineno = lineno;
  return 0;
}

static int eg_auth_entry_cmp(const void *a, const void *b) {
  const struct eg_auth_entry *x = a, *y = b;
  int c = strcmp(x->hash, y->hash);
  return c ? c : x->lineno - y->lineno;
}

static int eg_auth_ident_cmp(const void *a, const void *b) {
  const struct eg_auth_ident *x = a, *y = b;
  int c = strcmp(x->san, y->san);
  return c ? c : x->lineno - y->lineno;
}

/* One line per token (or SAN): a token on two lines would leave one of
 * them silently unused. Sorts the rows of the file just read by key (a
 * token's order does not matter: the check visits every one; SANs are
 * looked up by binary search). */
static int eg_auth_check_unique(eg_auth_table *t, int idents, char *err, size_t errlen) {
  if (!idents) {
    if (t->n > 1) qsort(t->entries, t->n, sizeof t->entries[0], eg_auth_entry_cmp);
    for (size_t i = 1; i < t->n; i++)
      if (strcmp(t->entries[i - 1].hash, t->entries[i].hash) == 0) {
        snprintf(err, errlen, "line %d: the same token is already on line %d (one line per token)",
                 t->entries[i].lineno, t->entries[i - 1].lineno);
        return -1;
      }
    return 0;
  }
  if (t->n_idents > 1) qsort(t->idents, t->n_idents, sizeof t->idents[0], eg_auth_ident_cmp);
  for (size_t i = 1; i < t->n_idents; i++)
    if (strcmp(t->idents[i - 1].san, t->idents[i].san) == 0) {
      snprintf(err, errlen, "line %d: the same SAN is already on line %d (one line per SAN)",
               t->idents[i].lineno, t->idents[i - 1].lineno);
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

/* Adds one line of the tokens file (idents 0) or the identities file. */
static eg_err eg_auth_add_line(eg_auth_table *t, int idents, char *p, int lineno, char *err,
                               size_t errlen) {
  if (idents) {
    struct eg_auth_ident *grown = realloc(t->idents, (t->n_idents + 1) * sizeof *grown);
    if (!grown) return EG_ENOMEM;
    t->idents = grown;
    if (eg_auth_parse_ident(p, lineno, &t->idents[t->n_idents], err, errlen) != 0)
      return EG_EINVAL;
    t->n_idents++;
  } else {
    struct eg_auth_entry *grown = realloc(t->entries, (t->n + 1) * sizeof *grown);
    if (!grown) return EG_ENOMEM;
    t->entries = grown;
    if (eg_auth_parse_line(p, lineno, &t->entries[t->n], err, errlen) != 0) return EG_EINVAL;
    t->n++;
  }
  return EG_OK;
}

/* Reads the tokens file (idents 0) or the identities file into t. */
static eg_err eg_auth_read_file(eg_auth_table *t, int idents, const char *path, char *err,
                                size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errlen, "cannot open: %s", strerror(errno));
    return EG_EINVAL;
  }
  char line[EG_AUTH_LINE_MAX + 1];
  int lineno = 0, got;
  eg_err rc = EG_OK;
  while (rc == EG_OK && (got = eg_auth_read_line(f, line)) > 0) {
    lineno++;
    char *p = line + strspn(line, " \t");
    if (got == EG_AUTH_LINE_NUL) {
      snprintf(err, errlen, "line %d: contains a NUL byte", lineno);
      rc = EG_EINVAL;
    } else if (*p == '#') { /* a comment may be any length */
    } else if (got == EG_AUTH_LINE_LONG) {
      snprintf(err, errlen, "line %d: longer than %d bytes", lineno, EG_AUTH_LINE_MAX);
      rc = EG_EINVAL;
    } else if (*p != '\0') {
      rc = eg_auth_add_line(t, idents, p, lineno, err, errlen);
    }
  }
  fclose(f);
  if (rc == EG_OK && eg_auth_check_unique(t, idents, err, errlen) != 0) rc = EG_EINVAL;
  return rc;
}

static void eg_auth_table_free(eg_auth_table *t) {
  if (!t) return;
  free(t->entries);
  free(t->idents);
  free(t);
}

/* Builds a table from both files; err names the file. */
static eg_err eg_auth_table_load(const char *tokens, const char *identities, eg_auth_table **out,
                                 char *err, size_t errlen) {
  eg_auth_table *t = calloc(1, sizeof *t);
  if (!t) return EG_ENOMEM;
  char why[400] = "";
  const char *flag = "--tokens", *path = tokens;
  eg_err e = tokens ? eg_auth_read_file(t, 0, tokens, why, sizeof why) : EG_OK;
  if (e == EG_OK && identities) {
    flag = "--tls-identities";
    path = identities;
    e = eg_auth_read_file(t, 1, identities, why, sizeof why);
  }
  if (e != EG_OK) {
    if (e == EG_EINVAL) snprintf(err, errlen, "%s %s: %s", flag, path, why);
    eg_auth_table_free(t);
    return e;
  }
  *out = t;
  return EG_OK;
}

eg_err eg_auth_load(const char *tokens, const char *identities, eg_auth **out, char *err,
                    size_t errlen) {
  eg_auth *a = calloc(1, sizeof *a);
  if (!a) return EG_ENOMEM;
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&a->lock, &attr);
  pthread_rwlockattr_destroy(&attr);
  eg_err e = EG_OK;
  if ((tokens && *tokens && !(a->tokens = strdup(tokens))) ||
      (identities && *identities && !(a->identities = strdup(identities))))
    e = EG_ENOMEM;
  if (e == EG_OK) e = eg_auth_table_load(a->tokens, a->identities, &a->cur, err, errlen);
  if (e != EG_OK) {
    eg_auth_free(a);
    return e;
  }
  *out = a;
  return EG_OK;
}

void eg_auth_free(eg_auth *a) {
  if (!a) return;
  eg_auth_table_free(a->cur);
  free(a->tokens);
  free(a->identities);
  pthread_rwlock_destroy(&a->lock);
  free(a);
}

int eg_auth_dev_mode(const eg_auth *a) { return !a->tokens && !a->identities; }

void eg_auth_reload(void *arg) {
  eg_auth *a = arg;
  char err[600] = "";
  eg_auth_table *t = NULL;
  if (eg_auth_dev_mode(a)) return;
  eg_err e = eg_auth_table_load(a->tokens, a->identities, &t, err, sizeof err);
  if (e != EG_OK) {
    eg_log(EG_LOG_WARN, "tokens/identities reload failed, keeping those in use: %s",
           e == EG_EINVAL ? err : eg_err_msg(e));
    return;
  }
  pthread_rwlock_wrlock(&a->lock);
  eg_auth_table *old = a->cur;
  a->cur = t;
  pthread_rwlock_unlock(&a->lock);
  eg_log(EG_LOG_INFO, "tokens/identities reloaded: %zu tokens, %zu certificate identities", t->n,
         t->n_idents);
  eg_auth_table_free(old);
}

/* The bearer token's row, or NULL; the header must be well formed. */
static const struct eg_auth_entry *eg_auth_token(const eg_auth_table *t, const char *authz,
                                                 size_t authz_len) {
  static const char bearer[] = "Bearer ";
  const size_t blen = sizeof bearer - 1;
  if (authz_len <= blen || authz_len > EG_AUTH_MAX_TOKEN ||
      strncasecmp(authz, bearer, blen) != 0) /* the scheme is case-insensitive (RFC 7235) */
    return NULL;
  char hash[65];
  eg_sha256_hex(authz + blen, authz_len - blen, hash);
  /* Compare against every entry, in constant time each, so the time taken
   * says nothing about which entry (or how much of one) matched. */
  const struct eg_auth_entry *match = NULL;
  for (size_t i = 0; i < t->n; i++)
    if (eg_crypto_equal(hash, t->entries[i].hash, 64) && !match) match = &t->entries[i];
  return match;
}

/* The identity the certificate's SANs map to, or NULL with why set (none
 * mapped, or two mapped SANs that disagree). */
static const struct eg_auth_ident *eg_auth_cert(const eg_auth_table *t, const eg_auth_caller *who,
                                                char *why, size_t whylen) {
  const struct eg_auth_ident *match = NULL;
  struct eg_auth_ident key; /* its san only */
  size_t n = who->n_sans < EG_AUTH_CALLER_SANS_MAX ? who->n_sans : EG_AUTH_CALLER_SANS_MAX;
  for (size_t i = 0; i < n; i++) {
    const eg_auth_san *s = &who->sans[i];
    if (s->len == 0 || s->len > EG_AUTH_SAN_MAX || memchr(s->value, '\0', s->len)) continue;
    memcpy(key.san, s->dns ? "dns:" : "uri:", 4);
    memcpy(key.san + 4, s->value, s->len);
    key.san[4 + s->len] = '\0';
    size_t lo = 0, hi = t->n_idents;
    while (lo < hi) { /* the first row whose SAN is not below key's */
      size_t mid = lo + (hi - lo) / 2;
      if (strcmp(t->idents[mid].san, key.san) < 0) lo = mid + 1;
      else hi = mid;
    }
    const struct eg_auth_ident *row =
        lo < t->n_idents && strcmp(t->idents[lo].san, key.san) == 0 ? &t->idents[lo] : NULL;
    if (!row) continue;
    if (match && (strcmp(match->tenant, row->tenant) != 0 || match->role != row->role)) {
      snprintf(why, whylen,
               "authorization: the client certificate's SANs map to different identities "
               "(--tls-identities lines %d and %d); send a bearer token",
               match->lineno, row->lineno);
      return NULL;
    }
    if (!match) match = row;
  }
  if (!match) {
    int k = snprintf(why, whylen,
                     "authorization: no bearer token, and the client certificate's identity is "
                     "not mapped in --tls-identities (its SANs:");
    for (size_t i = 0; i < n && k > 0 && (size_t)k < whylen; i++)
      k += snprintf(why + k, whylen - (size_t)k, " %s:%.*s", who->sans[i].dns ? "dns" : "uri",
                    (int)(who->sans[i].len > 200 ? 200 : who->sans[i].len), who->sans[i].value);
    if (k > 0 && (size_t)k < whylen)
      snprintf(why + k, whylen - (size_t)k, "%s", n ? ")" : " none)");
  }
  return match;
}

eg_err eg_auth_check(const eg_auth *a, const eg_auth_caller *who, eg_role need,
                     char tenant[EG_ID_MAX + 1], char *why, size_t whylen) {
  tenant[0] = '\0';
  if (eg_auth_dev_mode(a)) {
    snprintf(tenant, EG_ID_MAX + 1, "%s", EG_DEV_TENANT);
    return EG_OK;
  }
  /* Anyone may call it (health): a token sent along is not looked at (nor
   * hashed: probes and load balancers call it at the highest rate). */
  if (need == EG_ROLE_NONE) return EG_OK;
  eg_err e = EG_OK;
  pthread_rwlock_rdlock((pthread_rwlock_t *)&a->lock);
  const eg_auth_table *t = a->cur;
  if (who->authz) {
    const struct eg_auth_entry *m = eg_auth_token(t, who->authz, who->authz_len);
    if (!m) {
      snprintf(why, whylen, "authorization: missing or unknown bearer token");
      e = EG_EUNAUTH;
    } else if (!(m->role & need)) {
      snprintf(why, whylen, "this token's role");
      e = EG_EPERM;
    } else {
      memcpy(tenant, m->tenant, EG_ID_MAX + 1);
    }
  } else {
    const struct eg_auth_ident *m = who->has_cert ? eg_auth_cert(t, who, why, whylen) : NULL;
    if (!who->has_cert) {
      snprintf(why, whylen, "authorization: missing or unknown bearer token");
      e = EG_EUNAUTH;
    } else if (!m) {
      e = EG_EUNAUTH;
    } else if (!(m->role & need)) {
      snprintf(why, whylen, "the role of certificate identity %s", m->san);
      e = EG_EPERM;
    } else {
      memcpy(tenant, m->tenant, EG_ID_MAX + 1);
    }
  }
  pthread_rwlock_unlock((pthread_rwlock_t *)&a->lock);
  return e;
}
