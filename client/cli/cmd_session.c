/*
 * engram session create|get|list|update|end|delete|fork
 */
#include "cli.h"
#include "google/protobuf/field_mask.pb-c.h"

int cmd_session_create(cli *g, int argc, char **argv) {
  Engram__V1__Session s = ENGRAM__V1__SESSION__INIT;
  cli_map meta = {.entry = &engram__v1__session__metadata_entry__descriptor};
  int exclude = 0;
  const cli_flag flags[] = {
      {"--user", FLAG_STR, &s.user_id, 1},
      {"--agent", FLAG_STR, &s.agent_id},
      {"--id", FLAG_STR, &s.session_id},
      {"--meta", FLAG_MAP, &meta},
      /* the server checks the range and names the field */
      {"--ttl", FLAG_INT, &s.ttl_seconds, 0, 0, INT64_MAX},
      {"--language", FLAG_STR, &s.language},
      {"--exclude-from-search", FLAG_BOOL, &exclude},
      {NULL},
  };
  int rc = cli_parse(g, argc, argv, flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  s.exclude_from_search = exclude;
  s.n_metadata = meta.n;
  s.metadata = (Engram__V1__Session__MetadataEntry **)meta.items;
  Engram__V1__CreateSessionRequest req = ENGRAM__V1__CREATE_SESSION_REQUEST__INIT;
  req.session = &s;
  return cli_rpc(g, &eg_client_method_create_session, &req.base, NULL);
}

/* `session get|delete ID`: calls method with a request whose one field
 * is session_id. */
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
  const char *const names[] = {"ID", NULL};
  Engram__V1__EndSessionRequest req = ENGRAM__V1__END_SESSION_REQUEST__INIT;
  const char *id, *reason = NULL;
  const cli_flag flags[] = {{"--reason", FLAG_STR, &reason}, {NULL}};
  int rc = cli_parse(g, argc, argv, flags, names, &id);
  if (rc != CLI_OK) return rc;
  req.session_id = (char *)id;
  if (reason) req.reason = (char *)reason;
  return cli_rpc(g, &eg_client_method_end_session, &req.base, NULL);
}

int cmd_session_update(cli *g, int argc, char **argv) {
  const char *const names[] = {"ID", NULL};
  Engram__V1__Session s = ENGRAM__V1__SESSION__INIT;
  Engram__V1__UpdateSessionRequest req = ENGRAM__V1__UPDATE_SESSION_REQUEST__INIT;
  Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
  cli_map meta = {.entry = &engram__v1__session__metadata_entry__descriptor};
  char *paths[4];
  const char *id, *agent = NULL;
  int64_t ttl = -1; /* -1: not given */
  int clear_meta = 0, reopen = 0;
  const cli_flag flags[] = {
      {"--agent", FLAG_STR, &agent},
      {"--ttl", FLAG_INT, &ttl, 0, 0, INT64_MAX},
      {"--metadata", FLAG_MAP, &meta},
      {"--clear-metadata", FLAG_BOOL, &clear_meta},
      {"--reopen", FLAG_BOOL, &reopen},
      {NULL},
  };
  int rc = cli_parse(g, argc, argv, flags, names, &id);
  if (rc != CLI_OK) return rc;
  if (meta.n && clear_meta) return cli_usage_error(g, "--metadata and --clear-metadata exclude each other");
  if (agent) s.agent_id = (char *)agent, paths[mask.n_paths++] = "agent_id";
  if (ttl >= 0) s.ttl_seconds = ttl, paths[mask.n_paths++] = "ttl_seconds";
  /* metadata is replaced whole: the flags give the complete new map */
  if (meta.n || clear_meta) paths[mask.n_paths++] = "metadata";
  if (reopen) s.state = ENGRAM__V1__SESSION_STATE__SESSION_STATE_ACTIVE, paths[mask.n_paths++] = "state";
  if (!mask.n_paths) return cli_usage_error(g, "nothing to update: give at least one flag");
  s.n_metadata = meta.n;
  s.metadata = (Engram__V1__Session__MetadataEntry **)meta.items;
  mask.paths = paths;
  req.session_id = (char *)id;
  req.session = &s;
  req.update_mask = &mask;
  return cli_rpc(g, &eg_client_method_update_session, &req.base, NULL);
}

int cmd_session_delete(cli *g, int argc, char **argv) {
  return call_by_id(g, argc, argv, &eg_client_method_delete_session);
}

int cmd_session_fork(cli *g, int argc, char **argv) {
  const char *const names[] = {"ID", NULL};
  Engram__V1__ForkSessionRequest req = ENGRAM__V1__FORK_SESSION_REQUEST__INIT;
  const char *id, *new_id = NULL;
  const cli_flag flags[] = {
      /* the server checks the range and names the field */
      {"--through", FLAG_INT, &req.through_seq, 1, 0, INT64_MAX},
      {"--id", FLAG_STR, &new_id},
      {NULL},
  };
  int rc = cli_parse(g, argc, argv, flags, names, &id);
  if (rc != CLI_OK) return rc;
  req.session_id = (char *)id;
  if (new_id) req.new_session_id = (char *)new_id;
  return cli_rpc(g, &eg_client_method_fork_session, &req.base, NULL);
}

/* A Timestamp of unix seconds s, or NULL when the flag was not given. */
static Google__Protobuf__Timestamp *unix_ts(cli *g, int64_t s) {
  if (s < 0) return NULL;
  Google__Protobuf__Timestamp *t = cli_alloc(g, sizeof *t);
  google__protobuf__timestamp__init(t);
  t->seconds = s;
  return t;
}

int cmd_session_list(cli *g, int argc, char **argv) {
  Engram__V1__ListSessionsRequest req = ENGRAM__V1__LIST_SESSIONS_REQUEST__INIT;
  cli_map meta = {.entry = &engram__v1__list_sessions_request__metadata_equals__descriptor};
  int64_t page_size = 0, times[4] = {-1, -1, -1, -1}; /* -1: not given */
  const char *states = NULL;
  const cli_flag flags[] = {
      {"--user", FLAG_STR, &req.user_id},
      {"--page-size", FLAG_INT, &page_size, 0, CLI_I32},
      {"--page-token", FLAG_STR, &req.page_token},
      {"--states", FLAG_STR, &states},
      {"--agent", FLAG_STR, &req.agent_id},
      {"--meta", FLAG_MAP, &meta},
      {"--created-from", FLAG_INT, &times[0], 0, 0, INT64_MAX},
      {"--created-to", FLAG_INT, &times[1], 0, 0, INT64_MAX},
      {"--updated-from", FLAG_INT, &times[2], 0, 0, INT64_MAX},
      {"--updated-to", FLAG_INT, &times[3], 0, 0, INT64_MAX},
      {NULL},
  };
  int rc = cli_parse(g, argc, argv, flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  if (states && (rc = cli_parse_enums(g, "--states", &engram__v1__session_state__descriptor, states,
                                      (int **)&req.states, &req.n_states)) != CLI_OK)
    return rc;
  req.page_size = (int32_t)page_size;
  req.n_metadata_equals = meta.n;
  req.metadata_equals = (Engram__V1__ListSessionsRequest__MetadataEquals **)meta.items;
  req.create_time_from = unix_ts(g, times[0]);
  req.create_time_to = unix_ts(g, times[1]);
  req.update_time_from = unix_ts(g, times[2]);
  req.update_time_to = unix_ts(g, times[3]);
  return cli_rpc(g, &eg_client_method_list_sessions, &req.base, NULL);
}
