#include "server/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/clock.h"
#include "common/rpc.h"
#include "common/log.h"

enum { EG_TLS_CERT, EG_TLS_KEY, EG_TLS_CA, EG_TLS_N };

static const char *const eg_tls_flags[EG_TLS_N] = {"--tls-cert", "--tls-key", "--tls-client-ca"};

/* What a file looked like when last read: a change of any of these starts
 * a reload (a rename over the file changes the inode, an edit in place
 * the mtime or size). */
typedef struct {
  int64_t mtime_ns;
  int64_t size;
  uint64_t ino;
  int missing;
} eg_tls_stat;

struct eg_tls {
  const char *paths[EG_TLS_N]; /* NULL: not configured (the CA) */
  pthread_mutex_t mu;          /* guards everything below */
  char *pem[EG_TLS_N];         /* the files in use, NUL-terminated */
  eg_tls_stat seen[EG_TLS_N];  /* the files as last read, good or not */
  uint64_t gen;                /* bumped by each reload that swapped */
  uint64_t served;             /* the gen the fetcher last handed gRPC */
  int64_t next_check_us;
};

static void eg_tls_stat_of(const char *path, eg_tls_stat *s) {
  struct stat st;
  memset(s, 0, sizeof *s);
  if (stat(path, &st) != 0) {
    s->missing = 1;
    return;
  }
  s->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
  s->size = (int64_t)st.st_size;
  s->ino = (uint64_t)st.st_ino;
}

static void eg_tls_pem_free(char *pem) {
  if (!pem) return;
  sodium_memzero(pem, strlen(pem)); /* the key's copy */
  free(pem);
}

/* A key protected by a passphrase is refused rather than prompted for. */
static int eg_tls_no_passphrase(char *buf, int size, int rwflag, void *u) { return -1; }

/* Checks that pem holds at least one certificate (the first in *first,
 * when first is not NULL). */
static int eg_tls_check_certs(const char *flag, const char *path, const char *pem, X509 **first,
                              char *err, size_t errlen) {
  BIO *b = BIO_new_mem_buf(pem, -1);
  X509 *x, *got = NULL;
  int n = 0;
  while (b && (x = PEM_read_bio_X509(b, NULL, eg_tls_no_passphrase, NULL))) {
    if (!got) got = x;
    else X509_free(x);
    n++;
  }
  BIO_free(b);
  ERR_clear_error(); /* the end of the input reads as an error */
  if (n == 0) {
    snprintf(err, errlen, "%s %s: no PEM certificate in it", flag, path);
    return -1;
  }
  if (first) *first = got;
  else X509_free(got);
  return 0;
}

/* Checks the three files' text: certificates parse, the key parses and is
 * the certificate's. */
static int eg_tls_check(const char *const *paths, char *const *pem, char *err, size_t errlen) {
  X509 *cert = NULL;
  if (eg_tls_check_certs("--tls-cert", paths[EG_TLS_CERT], pem[EG_TLS_CERT], &cert, err, errlen))
    return -1;
  BIO *b = BIO_new_mem_buf(pem[EG_TLS_KEY], -1);
  EVP_PKEY *key = b ? PEM_read_bio_PrivateKey(b, NULL, eg_tls_no_passphrase, NULL) : NULL;
  BIO_free(b);
  ERR_clear_error();
  int rc = -1;
  if (!key)
    snprintf(err, errlen, "--tls-key %s: no unencrypted PEM private key in it", paths[EG_TLS_KEY]);
  else if (X509_check_private_key(cert, key) != 1)
    snprintf(err, errlen, "--tls-key %s: not the private key of --tls-cert %s", paths[EG_TLS_KEY],
             paths[EG_TLS_CERT]);
  else if (!paths[EG_TLS_CA] || eg_tls_check_certs("--tls-client-ca", paths[EG_TLS_CA],
                                                    pem[EG_TLS_CA], NULL, err, errlen) == 0)
    rc = 0;
  ERR_clear_error();
  EVP_PKEY_free(key);
  X509_free(cert);
  return rc;
}

/* Reads and checks every file; on success swaps them in and bumps gen.
 * Caller holds mu (or owns t alone). */
static int eg_tls_reread(eg_tls *t, char *err, size_t errlen) {
  char *pem[EG_TLS_N] = {0};
  int rc = 0;
  for (int i = 0; i < EG_TLS_N; i++) {
    if (!t->paths[i]) continue;
    eg_tls_stat_of(t->paths[i], &t->seen[i]);
    if (rc == 0 && !(pem[i] = eg_pem_read(eg_tls_flags[i], t->paths[i], err, errlen))) rc = -1;
  }
  if (rc == 0) rc = eg_tls_check(t->paths, pem, err, errlen);
  for (int i = 0; i < EG_TLS_N; i++) {
    char *drop = rc == 0 ? t->pem[i] : pem[i];
    if (rc == 0) t->pem[i] = pem[i];
    eg_tls_pem_free(drop);
  }
  if (rc == 0) t->gen++;
  return rc;
}

/* Caller holds mu. */
static void eg_tls_reload_locked(eg_tls *t, const char *why) {
  char err[600];
  if (eg_tls_reread(t, err, sizeof err) == 0)
    eg_log(EG_LOG_INFO, "TLS reload (%s): new handshakes use %s", why, t->paths[EG_TLS_CERT]);
  else
    eg_log(EG_LOG_WARN, "TLS reload (%s) failed, keeping the certificate in use: %s", why, err);
}

static int eg_tls_changed(eg_tls *t) {
  for (int i = 0; i < EG_TLS_N; i++) {
    if (!t->paths[i]) continue;
    eg_tls_stat now;
    eg_tls_stat_of(t->paths[i], &now);
    if (memcmp(&now, &t->seen[i], sizeof now) != 0) return 1;
  }
  return 0;
}

/* gRPC's fetcher: called at each new handshake (and once when the port is
 * added), on gRPC's threads. */
static grpc_ssl_certificate_config_reload_status eg_tls_fetch(
    void *arg, grpc_ssl_server_certificate_config **config) {
  eg_tls *t = arg;
  grpc_ssl_certificate_config_reload_status st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
  pthread_mutex_lock(&t->mu);
  int64_t now = eg_mono_us();
  if (now >= t->next_check_us) {
    t->next_check_us = now + EG_TLS_CHECK_US;
    if (eg_tls_changed(t)) eg_tls_reload_locked(t, "a file changed");
  }
  if (t->served != t->gen) {
    grpc_ssl_pem_key_cert_pair pair = {.private_key = t->pem[EG_TLS_KEY],
                                       .cert_chain = t->pem[EG_TLS_CERT]};
    /* gRPC asserts that a fetched config has roots, even when client
     * certificates are not requested: without --tls-client-ca the server's
     * own chain stands in (never used to verify anyone: nothing is
     * requested). It copies the strings. */
    const char *roots = t->pem[EG_TLS_CA] ? t->pem[EG_TLS_CA] : t->pem[EG_TLS_CERT];
    *config = grpc_ssl_server_certificate_config_create(roots, &pair, 1);
    if (*config) {
      t->served = t->gen;
      st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
    } else {
      st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
    }
  }
  pthread_mutex_unlock(&t->mu);
  return st;
}

eg_err eg_tls_open(const eg_config *cfg, eg_tls **out, char *err, size_t errlen) {
  *out = NULL;
  if (!cfg->tls_cert[0]) return EG_OK;
  eg_tls *t = calloc(1, sizeof *t);
  if (!t) return EG_ENOMEM;
  t->paths[EG_TLS_CERT] = cfg->tls_cert;
  t->paths[EG_TLS_KEY] = cfg->tls_key;
  t->paths[EG_TLS_CA] = cfg->tls_client_ca[0] ? cfg->tls_client_ca : NULL;
  pthread_mutex_init(&t->mu, NULL);
  if (eg_tls_reread(t, err, errlen) != 0) {
    eg_tls_free(t);
    return EG_EINVAL;
  }
  t->next_check_us = eg_mono_us() + EG_TLS_CHECK_US;
  *out = t;
  return EG_OK;
}

grpc_server_credentials *eg_tls_server_credentials(eg_tls *t) {
  if (!t) return grpc_insecure_server_credentials_create();
  grpc_ssl_server_credentials_options *o =
      grpc_ssl_server_credentials_create_options_using_config_fetcher(
          t->paths[EG_TLS_CA] ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                              : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
          eg_tls_fetch, t);
  return o ? grpc_ssl_server_credentials_create_with_options(o) : NULL;
}

void eg_tls_reload(void *arg) {
  eg_tls *t = arg;
  pthread_mutex_lock(&t->mu);
  eg_tls_reload_locked(t, "SIGHUP");
  pthread_mutex_unlock(&t->mu);
}

/* 1 if listen's host (HOST:PORT, [V6]:PORT, or unix:PATH) only reaches this
 * machine. */
static int eg_listen_loopback(const char *listen) {
  if (strncmp(listen, "unix:", 5) == 0) return 1;
  const char *colon = strrchr(listen, ':');
  size_t n = colon ? (size_t)(colon - listen) : strlen(listen);
  char host[256];
  if (n >= 2 && listen[0] == '[' && listen[n - 1] == ']') listen++, n -= 2;
  if (n >= sizeof host) return 0;
  memcpy(host, listen, n);
  host[n] = '\0';
  struct in_addr v4;
  struct in6_addr v6;
  if (inet_pton(AF_INET, host, &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, host, &v6) == 1) return memcmp(&v6, &in6addr_loopback, sizeof v6) == 0;
  return strcmp(host, "localhost") == 0;
}

void eg_tls_warn_plaintext(const eg_tls *t, const char *listen) {
  if (!t && !eg_listen_loopback(listen))
    eg_log(EG_LOG_WARN,
           "WARNING: --listen %s is not a loopback address and TLS is off (no --tls-cert): "
           "tokens and data cross the network in plaintext",
           listen);
}

void eg_tls_free(eg_tls *t) {
  if (!t) return;
  for (int i = 0; i < EG_TLS_N; i++) eg_tls_pem_free(t->pem[i]);
  pthread_mutex_destroy(&t->mu);
  free(t);
}
