/*
 * Bearer-token authentication against the tokens file:
 *   # comment
 *   <tenant> <role> <sha256 hex of the token>
 * Only hashes are stored, so the file is not a secret store of tokens.
 * Without a file the server runs single-tenant: every caller is tenant
 * "default" with every role.
 */
#ifndef EG_SERVER_AUTH_H
#define EG_SERVER_AUTH_H

#include <stddef.h>

#include "common/err.h"

typedef enum {
  EG_ROLE_NONE = 0, /* a method any caller may use (health) */
  EG_ROLE_AGENT = 1,
  EG_ROLE_ADMIN = 2,
  EG_ROLE_REPLICA = 4,
} eg_role;

#define EG_DEV_TENANT "default"

typedef struct eg_auth eg_auth;

/* Loads the tokens file; path NULL or "" gives dev mode. EG_EINVAL with the
 * line named in err on a malformed file (a line over 1023 bytes, or holding
 * a NUL byte, is malformed too). */
eg_err eg_auth_load(const char *path, eg_auth **out, char *err, size_t errlen);
void eg_auth_free(eg_auth *a);
/* 1 when no tokens file was given. */
int eg_auth_dev_mode(const eg_auth *a);

/* Checks an `authorization` metadata value (may be NULL) for a method
 * needing role `need`. On success *tenant points into a (valid while a
 * lives). EG_EUNAUTH for a missing or unknown token, EG_EPERM for a known
 * token without the role. Thread safety: any thread. */
eg_err eg_auth_check(const eg_auth *a, const char *authz, size_t authz_len, eg_role need,
                     const char **tenant);

#endif
