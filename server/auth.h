/*
 * Who a call is: a bearer token of the tokens file, or a verified client
 * certificate mapped by the identities file (--tls-identities).
 *
 * Tokens file:
 *   # comment
 *   <tenant> <role> <sha256 hex of the token>
 * Only hashes are stored, so the file is not a secret store of tokens.
 *
 * Identities file (one line per SAN; exact, case-sensitive match):
 *   # comment
 *   uri:<a certificate's URI SAN, e.g. spiffe://example.org/agent> <tenant> <role>
 *   dns:<a certificate's DNS SAN> <tenant> <role>
 *
 * Precedence: a call that sends an `authorization` header is judged by it
 * alone (a bad token is refused even when the certificate maps): the token
 * is the explicit choice of the caller, and one identity per call keeps a
 * tenant's data from being reached through another's certificate. Without
 * the header, the certificate decides: the SANs of it that are mapped must
 * all name the same tenant and role.
 *
 * Without a tokens file and identities file the server runs single-tenant
 * (dev mode): every caller is tenant "default" with every role.
 *
 * Both files reload on SIGHUP (eg_auth_reload): the new tables are built
 * whole, then swapped in; a bad file keeps the tables in use.
 */
#ifndef EG_SERVER_AUTH_H
#define EG_SERVER_AUTH_H

#include <stddef.h>

#include "common/err.h"
#include "server/validate.h" /* EG_ID_MAX */

typedef enum {
  EG_ROLE_NONE = 0, /* a method any caller may use (health) */
  EG_ROLE_AGENT = 1,
  EG_ROLE_ADMIN = 2,
  EG_ROLE_REPLICA = 4,
} eg_role;

#define EG_DEV_TENANT "default"

typedef struct eg_auth eg_auth;

/* The longest SAN value an identities line may map (after "uri:"/"dns:"). */
#define EG_AUTH_SAN_MAX 1000
/* The SANs of one client certificate looked at (URI first, then DNS, each
 * in the certificate's order); the rest are ignored. */
#define EG_AUTH_CALLER_SANS_MAX 16

/* One SAN of a verified client certificate. */
typedef struct {
  int dns; /* 1: a DNS SAN; 0: a URI SAN */
  const char *value;
  size_t len;
} eg_auth_san;

/* What a call presents. */
typedef struct {
  const char *authz; /* its `authorization` value (NULL: none sent) */
  size_t authz_len;
  const eg_auth_san *sans; /* its verified client certificate's SANs */
  size_t n_sans;
  int has_cert; /* 1: a verified client certificate came (maybe without SANs) */
} eg_auth_caller;

/* Loads the tokens file (NULL or "": none) and the identities file (NULL
 * or "": none); neither gives dev mode. EG_EINVAL with the file and line
 * named in err on a malformed file (a line over 1023 bytes, or holding a
 * NUL byte, is malformed too). */
eg_err eg_auth_load(const char *tokens, const char *identities, eg_auth **out, char *err,
                    size_t errlen);
void eg_auth_free(eg_auth *a);
/* 1 when neither file was given. */
int eg_auth_dev_mode(const eg_auth *a);

/* The SIGHUP hook (arg: the eg_auth): re-reads both files; logs the
 * outcome, and on a bad file (named with its line) keeps the tables in
 * use. Thread safety: any thread; checks go on meanwhile. */
void eg_auth_reload(void *arg);

/* Checks a caller for a method needing role `need` (see the precedence
 * above). On success tenant holds the caller's tenant; "" for a method
 * any caller may use (EG_ROLE_NONE), whose caller is not looked at: a
 * token sent with it is neither checked nor hashed. On
 * EG_EUNAUTH (no identity: missing or unknown token, a certificate not
 * mapped) or EG_EPERM (an identity without the role) why says which, for
 * the caller. Thread safety: any thread, during a reload too. */
eg_err eg_auth_check(const eg_auth *a, const eg_auth_caller *who, eg_role need,
                     char tenant[EG_ID_MAX + 1], char *why, size_t whylen);

#endif
