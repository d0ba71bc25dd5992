/*
 * engram admin status|promote|checksum: AdminService on the node --target
 * names (a token with the admin role).
 *
 *   status    role, epoch, LSNs, and on a primary one line per replica
 *   promote   makes a replica the primary (epoch + 1)
 *   checksum  digest of every data DB and the LSN it was taken at: nodes
 *             at equal LSNs must print equal digests
 */
#include "cli.h"

/* Calls a method whose request has no fields. */
static int call_empty(cli *g, int argc, char **argv, const eg_client_method *method) {
  int rc = cli_parse(g, argc, argv, cli_no_flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  ProtobufCMessage *req = cli_alloc(g, method->request->sizeof_message);
  protobuf_c_message_init(method->request, req);
  return cli_rpc(g, method, req, NULL);
}

int cmd_admin_status(cli *g, int argc, char **argv) {
  return call_empty(g, argc, argv, &eg_client_method_get_status);
}

int cmd_admin_promote(cli *g, int argc, char **argv) {
  return call_empty(g, argc, argv, &eg_client_method_promote);
}

int cmd_admin_checksum(cli *g, int argc, char **argv) {
  return call_empty(g, argc, argv, &eg_client_method_checksum);
}
