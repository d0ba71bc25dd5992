/*
 * One RPC from the command line: make the client on first use, call,
 * print the response or the error (with the details of
 * grpc-status-details-bin), and the exit code a status maps to.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"

/* The token of --token-file: its first line without surrounding blanks. */
static int read_token_file(cli *g, const char **token) {
  const char *name = g->token_file;
  /* Errors name the file that was judged: a symlink's target. */
  char *real = realpath(name, NULL);
  if (real) {
    name = cli_strndup(g, real, strlen(real));
    free(real);
  }
  struct stat st;
  /* As engramd's secret files: whoever can read it can act as its owner.
   * Judged before opening it: opening a FIFO would wait for a writer. */
  if (stat(name, &st) != 0) return cli_usage_error(g, "--token-file %s: %s", name, strerror(errno));
  if (!S_ISREG(st.st_mode) || st.st_size > CLI_TOKEN_FILE_MAX)
    return cli_usage_error(g, "--token-file %s: not a regular file of at most %d bytes", name,
                           CLI_TOKEN_FILE_MAX);
  if (st.st_mode & 077)
    return cli_usage_error(g, "--token-file %s: mode %04o lets other users read it; run: chmod 600 %s",
                           name, (unsigned)(st.st_mode & 07777), name);
  /* O_NONBLOCK: should the file become a FIFO after the stat, the open
   * does not wait, and the fstat below refuses it */
  int fd = open(name, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return cli_usage_error(g, "--token-file %s: %s", name, strerror(errno));
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > CLI_TOKEN_FILE_MAX ||
      (st.st_mode & 077)) {
    close(fd);
    return cli_usage_error(g, "--token-file %s: changed while being read", name);
  }
  char *buf = cli_alloc(g, CLI_TOKEN_FILE_MAX + 1);
  ssize_t n = read(fd, buf, CLI_TOKEN_FILE_MAX);
  close(fd);
  if (n < 0) return cli_usage_error(g, "--token-file %s: %s", name, strerror(errno));
  /* a NUL would cut the token short: the call would then fail as
   * UNAUTHENTICATED with no word on why */
  if (memchr(buf, '\0', (size_t)n))
    return cli_usage_error(g, "--token-file %s: holds a NUL byte", name);
  buf[n] = '\0';
  buf[strcspn(buf, "\r\n")] = '\0';
  char *s = buf + strspn(buf, " \t");
  size_t len = strlen(s);
  while (len && (s[len - 1] == ' ' || s[len - 1] == '\t')) s[--len] = '\0';
  if (!len) return cli_usage_error(g, "--token-file %s: the first line is empty", name);
  *token = s;
  return CLI_OK;
}

/* How the run's client dials (for cli_print_status's hints). */
static enum { CLI_TLS_NONE, CLI_TLS_SERVER, CLI_TLS_CERT } client_tls;

static const char *set_or_null(const char *s) { return s && *s ? s : NULL; }

/* The TLS settings of --tls-* (or $ENGRAM_TLS_*): *out is NULL when none
 * is set (plaintext), else tls. A certificate without its key, or the
 * reverse, is a usage error naming the option. */
static int tls_options(cli *g, eg_client_tls *tls, const eg_client_tls **out) {
  *tls = (eg_client_tls){.ca_file = set_or_null(g->tls_ca),
                         .cert_file = set_or_null(g->tls_cert),
                         .key_file = set_or_null(g->tls_key),
                         .server_name = set_or_null(g->tls_server_name)};
  if (tls->cert_file && !tls->key_file)
    return cli_usage_error(g, "--tls-cert needs --tls-key (the certificate's private key)");
  if (tls->key_file && !tls->cert_file)
    return cli_usage_error(g, "--tls-key needs --tls-cert (the key's certificate)");
  *out = tls->ca_file || tls->cert_file || tls->server_name ? tls : NULL;
  client_tls = !*out ? CLI_TLS_NONE : tls->cert_file ? CLI_TLS_CERT : CLI_TLS_SERVER;
  return CLI_OK;
}

eg_client *cli_client(cli *g) {
  if (!g->client) {
    eg_client_tls tls;
    const eg_client_tls *t = NULL;
    if (tls_options(g, &tls, &t) != CLI_OK) return NULL;
    /* --token, else --token-file, else $ENGRAM_TOKEN */
    const char *token = g->token ? g->token : g->token_env;
    if (g->token_file) {
      if (g->token)
        return cli_usage_error(g, "--token and --token-file exclude each other"), NULL;
      if (read_token_file(g, &token) != CLI_OK) return NULL;
    }
    char why[512] = "";
    g->client = eg_client_new_tls(g->target, token && *token ? token : NULL, t, why, sizeof why);
    if (g->token_file) explicit_bzero((char *)token, strlen(token));
    if (!g->client)
      cli_usage_error(g, "cannot make the client for --target '%s': %s", g->target,
                      why[0] ? why : strerror(errno));
  }
  return g->client;
}

int cli_exit_code(int grpc_code) {
  switch (grpc_code) {
  case GRPC_STATUS_OK:
    return CLI_OK;
  case GRPC_STATUS_UNAVAILABLE:
  case GRPC_STATUS_DEADLINE_EXCEEDED:
    return CLI_UNAVAILABLE;
  case GRPC_STATUS_NOT_FOUND:
    return CLI_NOT_FOUND;
  case GRPC_STATUS_INVALID_ARGUMENT:
  case GRPC_STATUS_OUT_OF_RANGE:
  case GRPC_STATUS_FAILED_PRECONDITION:
    return CLI_INVALID;
  case GRPC_STATUS_UNAUTHENTICATED:
  case GRPC_STATUS_PERMISSION_DENIED:
    return CLI_DENIED;
  case GRPC_STATUS_ALREADY_EXISTS:
  case GRPC_STATUS_ABORTED:
    return CLI_CONFLICT;
  default:
    return CLI_ERR;
  }
}

/* The detail of type google.rpc.<name> in any, unpacked (free it), or NULL. */
static ProtobufCMessage *unpack_any(const Google__Protobuf__Any *any, const char *name,
                                    const ProtobufCMessageDescriptor *desc) {
  static const char prefix[] = "type.googleapis.com/";
  if (!any->type_url || strncmp(any->type_url, prefix, sizeof prefix - 1) ||
      strcmp(any->type_url + sizeof prefix - 1, name))
    return NULL;
  return protobuf_c_message_unpack(desc, NULL, any->value.len, any->value.data);
}

/* The details of grpc-status-details-bin, a line each: the reason, each
 * field violation, the retry delay. */
static void print_details(const eg_client_status *st) {
  Google__Rpc__Status *s =
      google__rpc__status__unpack(NULL, st->details_len, st->details);
  for (size_t i = 0; s && i < s->n_details; i++) {
    const Google__Protobuf__Any *any = s->details[i];
    ProtobufCMessage *m;
    if ((m = unpack_any(any, "google.rpc.ErrorInfo", &google__rpc__error_info__descriptor))) {
      fprintf(stderr, "  reason: %s\n", ((Google__Rpc__ErrorInfo *)m)->reason);
    } else if ((m = unpack_any(any, "google.rpc.BadRequest", &google__rpc__bad_request__descriptor))) {
      const Google__Rpc__BadRequest *b = (const Google__Rpc__BadRequest *)m;
      for (size_t k = 0; k < b->n_field_violations; k++)
        fprintf(stderr, "  field %s: %s\n", b->field_violations[k]->field,
                b->field_violations[k]->description);
    } else if ((m = unpack_any(any, "google.rpc.RetryInfo", &google__rpc__retry_info__descriptor))) {
      const Google__Protobuf__Duration *d = ((Google__Rpc__RetryInfo *)m)->retry_delay;
      if (d)
        fprintf(stderr, "  retry after: %" PRId64 ".%03ds\n", d->seconds, (int)(d->nanos / 1000000));
    } else {
      continue;
    }
    protobuf_c_message_free_unpacked(m, NULL);
  }
  if (s) protobuf_c_message_free_unpacked(&s->base, NULL);
}

void cli_print_status(const eg_client_status *st) {
  fprintf(stderr, "engram: %s%s%s\n", eg_client_code_name(st->code), *st->message ? ": " : "",
          st->message);
  if (st->details_len) print_details(st);
  if (*st->request_id) fprintf(stderr, "  request id: %s\n", st->request_id);
  /* gRPC names a TLS server closing a plaintext connection, or a mutual
   * TLS server one without a client certificate, only as a closed socket. */
  if (st->code == GRPC_STATUS_UNAVAILABLE && strstr(st->message, "Socket closed") &&
      client_tls != CLI_TLS_CERT)
    fputs(client_tls == CLI_TLS_NONE
              ? "  hint: a server that serves TLS closes plaintext connections: pass --tls-ca "
                "(or set ENGRAM_TLS_CA)\n"
              : "  hint: a server that requires client certificates (mutual TLS) closes "
                "connections without one: pass --tls-cert and --tls-key\n",
          stderr);
}

/* Makes the call; on success *resp is the caller's and *st its status. */
static int cli_call(cli *g, const eg_client_method *method, const ProtobufCMessage *req,
                    eg_client_status *st, ProtobufCMessage **resp) {
  assert(req->descriptor == method->request);
  if (!cli_client(g)) return CLI_USAGE;
  eg_client_opts opts = {.timeout_ms = g->timeout_ms, .min_lsn = (uint64_t)g->min_lsn};
  if (eg_client_call(g->client, method->path, req, method->response, &opts, st, resp) != 0) {
    cli_print_status(st);
    return cli_exit_code(st->code);
  }
  return CLI_OK;
}

int cli_rpc_quiet(cli *g, const eg_client_method *method, const ProtobufCMessage *req,
                  ProtobufCMessage **resp) {
  eg_client_status st;
  return cli_call(g, method, req, &st, resp);
}

int cli_rpc(cli *g, const eg_client_method *method, const ProtobufCMessage *req,
            ProtobufCMessage **keep) {
  eg_client_status st;
  ProtobufCMessage *resp = NULL;
  int rc = cli_call(g, method, req, &st, &resp);
  if (rc != CLI_OK) return rc;
  if (g->json) {
    cli_print_json(stdout, resp, st.lsn);
  } else {
    cli_print_readable(stdout, resp);
    if (st.lsn) printf("lsn: %" PRIu64 "\n", st.lsn);
  }
  if (keep)
    *keep = resp;
  else
    protobuf_c_message_free_unpacked(resp, NULL);
  return CLI_OK;
}
