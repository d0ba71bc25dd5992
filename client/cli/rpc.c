/*
 * One RPC from the command line: make the client on first use, call,
 * print the response or the error.
 */
#include <assert.h>
#include <inttypes.h>

#include "cli.h"

int cli_client(cli *g) {
  if (!g->client) {
    g->client = eg_client_new(g->target, g->token && *g->token ? g->token : NULL);
    if (!g->client)
      return cli_usage_error(g, "cannot use --target '%s' or --token (printable ASCII only)",
                             g->target);
  }
  return CLI_OK;
}

/* Makes the call; on success *resp is the caller's and *st its status. */
static int cli_call(cli *g, const eg_client_method *method, const ProtobufCMessage *req,
                    eg_client_status *st, ProtobufCMessage **resp) {
  assert(req->descriptor == method->request);
  int rc = cli_client(g);
  if (rc != CLI_OK) return rc;
  eg_client_opts opts = {.timeout_ms = g->timeout_ms, .min_lsn = (uint64_t)g->min_lsn};
  if (eg_client_call(g->client, method->path, req, method->response, &opts, st, resp) != 0) {
    fprintf(stderr, "engram: %s%s%s\n", eg_client_code_name(st->code), *st->message ? ": " : "",
            st->message);
    return CLI_ERR;
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
    cli_print_json(stdout, resp);
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
