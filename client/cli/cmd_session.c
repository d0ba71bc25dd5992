/*
 * engram session create|get|list|end|delete
 */
#include "cli.h"

int cmd_session_create(cli *g, int argc, char **argv) {
  Engram__V1__Session s = ENGRAM__V1__SESSION__INIT;
  cli_map meta = {.entry = &engram__v1__session__metadata_entry__descriptor};
  const cli_flag flags[] = {
      {"--user", FLAG_STR, &s.user_id, 1},
      {"--agent", FLAG_STR, &s.agent_id},
      {"--id", FLAG_STR, &s.session_id},
      {"--meta", FLAG_MAP, &meta},
      {NULL},
  };
  int rc = cli_parse(g, argc, argv, flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  s.n_metadata = meta.n;
  s.metadata = (Engram__V1__Session__MetadataEntry **)meta.items;
  Engram__V1__CreateSessionRequest req = ENGRAM__V1__CREATE_SESSION_REQUEST__INIT;
  req.session = &s;
  return cli_rpc(g, &eg_client_method_create_session, &req.base, NULL);
}

/* `session get|end|delete ID`: calls method with a request whose one
 * field is session_id. */
static int call_by_id(cli *g, int argc, char **argv, const eg_client_method *method) {
  const char *const names[] = {"ID", NULL};
  const char *id;
  int rc = cli_parse(g, argc, argv, cli_no_flags, names, &id);
  if (rc != CLI_OK) return rc;
  ProtobufCMessage *req = cli_alloc(g, method->request->sizeof_message);
  protobuf_c_message_init(method->request, req);
  pb_set_string(req, "session_id", id);
  return cli_rpc(g, method, req, NULL);
}

int cmd_session_get(cli *g, int argc, char **argv) {
  return call_by_id(g, argc, argv, &eg_client_method_get_session);
}

int cmd_session_end(cli *g, int argc, char **argv) {
  return call_by_id(g, argc, argv, &eg_client_method_end_session);
}

int cmd_session_delete(cli *g, int argc, char **argv) {
  return call_by_id(g, argc, argv, &eg_client_method_delete_session);
}

int cmd_session_list(cli *g, int argc, char **argv) {
  Engram__V1__ListSessionsRequest req = ENGRAM__V1__LIST_SESSIONS_REQUEST__INIT;
  int64_t page_size = 0;
  const cli_flag flags[] = {
      {"--user", FLAG_STR, &req.user_id, 1},
      {"--page-size", FLAG_INT, &page_size, 0, CLI_I32},
      {"--page-token", FLAG_STR, &req.page_token},
      {NULL},
  };
  int rc = cli_parse(g, argc, argv, flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  req.page_size = (int32_t)page_size;
  return cli_rpc(g, &eg_client_method_list_sessions, &req.base, NULL);
}
