/*
 * The server's TLS (--tls-cert, --tls-key, --tls-client-ca): the gRPC SSL
 * server credentials of the listening port, built on a certificate-config
 * fetcher. gRPC asks the fetcher at every new handshake; it hands over a
 * new config after a reload, so new connections get the new certificate
 * while connections already made (and their calls) go on with the old one.
 *
 * A reload re-reads all three files and checks them (PEM parses, the key
 * is the certificate's) before swapping: on SIGHUP (eg_tls_reload, a hook
 * of server/reload.h) and when a file's mtime, size or inode changed
 * (looked at, from the fetcher, at most once per EG_TLS_CHECK_US). A failed
 * reload logs why and keeps the config in use.
 */
#ifndef EG_SERVER_TLS_H
#define EG_SERVER_TLS_H

#include <grpc/grpc_security.h>
#include <stddef.h>

#include "common/err.h"
#include "server/config.h"

/* How often (µs) the fetcher looks at the files' mtime and size. */
#define EG_TLS_CHECK_US 1000000

typedef struct eg_tls eg_tls;

/* Reads and checks the files cfg names; *out NULL when TLS is off (no
 * --tls-cert). EG_EINVAL with err naming the flag and file that is
 * unreadable, too large, not PEM, or (the key) not the certificate's.
 * cfg must outlive the result. */
eg_err eg_tls_open(const eg_config *cfg, eg_tls **out, char *err, size_t errlen);

/* The credentials to add the listening port with: SSL with the fetcher
 * (client certificates required and verified with --tls-client-ca, else
 * not requested), or insecure when t is NULL. The caller releases them;
 * t must outlive the gRPC server. */
grpc_server_credentials *eg_tls_server_credentials(eg_tls *t);

/* The reload hook (arg: the eg_tls). Thread safety: any thread. */
void eg_tls_reload(void *arg);

/* Logs a WARN line when listen is not a loopback address and t is NULL
 * (plaintext on the network). */
void eg_tls_warn_plaintext(const eg_tls *t, const char *listen);

void eg_tls_free(eg_tls *t);

#endif
