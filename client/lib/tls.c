/*
 * Client channels, plaintext or TLS (common/rpc.h): the one place a
 * client's channel credentials are made from PEM files, for libengram, the
 * CLI and every connection engramd dials (primary, forwarding, etcd); and
 * the one reader of PEM files (engramd's server side reads its own with it).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "common/rpc.h"

/* Channel args a caller may pass, plus the server name override. */
#define EG_CHANNEL_ARGS_MAX 8

/* Writes why into err (if it has room) and sets errno to code. */
static void fail(char *err, size_t errlen, int code, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  errno = code;
}

static int set(const char *s) { return s && *s; }

char *eg_pem_read(const char *what, const char *path, char *err, size_t errlen) {
  /* O_NONBLOCK, then a regular file only: a FIFO (or a device) in its
   * place must not block the reader (a reload holds the TLS config). */
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  struct stat st;
  FILE *f = NULL;
  if (fd >= 0 && fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
    close(fd);
    fail(err, errlen, EINVAL, "%s %s: not a regular file", what, path);
    return NULL;
  }
  if (fd < 0 || !(f = fdopen(fd, "r"))) {
    int e = errno;
    if (fd >= 0) close(fd);
    fail(err, errlen, e, "%s %s: cannot open: %s", what, path, strerror(e));
    return NULL;
  }
  char *buf = malloc(EG_CLIENT_TLS_PEM_MAX + 1);
  if (!buf) {
    fclose(f);
    fail(err, errlen, ENOMEM, "%s %s: out of memory", what, path);
    return NULL;
  }
  /* One byte past the limit tells a file at the limit from a larger one. */
  size_t n = fread(buf, 1, EG_CLIENT_TLS_PEM_MAX + 1, f);
  int e = ferror(f) ? errno : 0;
  fclose(f);
  buf[n < EG_CLIENT_TLS_PEM_MAX ? n : EG_CLIENT_TLS_PEM_MAX] = '\0';
  if (e)
    fail(err, errlen, e, "%s %s: cannot read: %s", what, path, strerror(e));
  else if (n > EG_CLIENT_TLS_PEM_MAX)
    fail(err, errlen, EINVAL, "%s %s: larger than %d bytes", what, path, EG_CLIENT_TLS_PEM_MAX);
  else if (n == 0)
    fail(err, errlen, EINVAL, "%s %s: the file is empty", what, path);
  else if (memchr(buf, '\0', n))
    fail(err, errlen, EINVAL, "%s %s: holds a NUL byte (not a PEM file)", what, path);
  else
    return buf;
  explicit_bzero(buf, n < EG_CLIENT_TLS_PEM_MAX ? n : EG_CLIENT_TLS_PEM_MAX);
  free(buf);
  return NULL;
}

/* eg_pem_read, and a file with no PEM block refused here: gRPC parses
 * the PEM only at the handshake, and would then say less. */
static char *read_client_pem(const char *what, const char *path, char *err, size_t errlen) {
  char *pem = eg_pem_read(what, path, err, errlen);
  if (pem && !strstr(pem, "-----BEGIN ")) {
    fail(err, errlen, EINVAL, "%s %s: not PEM (no '-----BEGIN ' line)", what, path);
    explicit_bzero(pem, strlen(pem));
    free(pem);
    pem = NULL;
  }
  return pem;
}

static void free_secret(char *s) {
  if (s) explicit_bzero(s, strlen(s));
  free(s);
}

grpc_channel_credentials *eg_client_tls_credentials(const eg_client_tls *tls, char *err,
                                                    size_t errlen) {
  if (set(tls->cert_file) != set(tls->key_file)) {
    fail(err, errlen, EINVAL, "%s",
         set(tls->cert_file) ? "a client certificate needs its private key (key file not set)"
                             : "a private key needs its client certificate (certificate file "
                               "not set)");
    return NULL;
  }
  char *ca = NULL, *cert = NULL, *key = NULL;
  grpc_channel_credentials *creds = NULL;
  if (set(tls->ca_file) && !(ca = read_client_pem("CA bundle", tls->ca_file, err, errlen)))
    goto out;
  if (set(tls->cert_file) &&
      (!(cert = read_client_pem("client certificate", tls->cert_file, err, errlen)) ||
       !(key = read_client_pem("private key", tls->key_file, err, errlen))))
    goto out;
  /* The credentials keep copies of the PEM strings. */
  grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
  creds = grpc_ssl_credentials_create_ex(ca, cert ? &pair : NULL, NULL, NULL);
  if (!creds) fail(err, errlen, EINVAL, "the TLS credentials could not be made");
out:
  free(ca);
  free(cert);
  free_secret(key);
  return creds;
}

grpc_channel *eg_client_channel_create(const char *target, const eg_client_tls *tls,
                                       const grpc_arg *args, size_t nargs, char *err,
                                       size_t errlen) {
  grpc_arg all[EG_CHANNEL_ARGS_MAX];
  /* Room for the callers' args and the server-name override. */
  if (nargs >= EG_CHANNEL_ARGS_MAX) {
    snprintf(err, errlen, "%zu channel args given; at most %d", nargs, EG_CHANNEL_ARGS_MAX - 1);
    return NULL;
  }
  if (nargs) memcpy(all, args, nargs * sizeof *args);
  grpc_channel_credentials *creds =
      tls ? eg_client_tls_credentials(tls, err, errlen) : grpc_insecure_credentials_create();
  if (!creds) return NULL;
  if (tls && set(tls->server_name))
    all[nargs++] = (grpc_arg){.type = GRPC_ARG_STRING,
                              .key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                              .value.string = (char *)tls->server_name};
  grpc_channel_args cargs = {.num_args = nargs, .args = all};
  grpc_channel *ch = grpc_channel_create(target, creds, &cargs);
  grpc_channel_credentials_release(creds);
  return ch; /* never NULL: a bad target gives a lame channel */
}
