/*
 * engram message append|list, engram context, engram summary update
 */
#include "cli.h"

static const char *const session_id_arg[] = {"SESSION_ID", NULL};

int cmd_message_append(cli *g, int argc, char **argv) {
  Engram__V1__Message msg = ENGRAM__V1__MESSAGE__INIT;
  cli_map meta = {.entry = &engram__v1__message__metadata_entry__descriptor};
  const char *role = NULL;
  int64_t token_count = 0;
  const cli_flag flags[] = {
      {"--role", FLAG_STR, &role, 1},
      {"--content", FLAG_TEXT, &msg.content, 1},
      {"--token-count", FLAG_INT, &token_count, 0, CLI_I32},
      {"--client-id", FLAG_STR, &msg.client_message_id},
      {"--meta", FLAG_MAP, &meta},
      {NULL},
  };
  Engram__V1__AppendMessagesRequest req = ENGRAM__V1__APPEND_MESSAGES_REQUEST__INIT;
  int rc = cli_parse(g, argc, argv, flags, session_id_arg, (const char **)&req.session_id);
  if (rc != CLI_OK) return rc;
  int value;
  if (pb_enum_parse(&engram__v1__role__descriptor, role, &value) != 0)
    return cli_usage_error(g, "--role: expected user, assistant, system or tool, got '%s'", role);
  msg.role = (Engram__V1__Role)value;
  msg.token_count = (int32_t)token_count;
  msg.n_metadata = meta.n;
  msg.metadata = (Engram__V1__Message__MetadataEntry **)meta.items;
  Engram__V1__Message *msgs[] = {&msg};
  req.n_messages = 1;
  req.messages = msgs;
  return cli_rpc(g, &eg_client_method_append_messages, &req.base, NULL);
}

int cmd_message_list(cli *g, int argc, char **argv) {
  Engram__V1__ListMessagesRequest req = ENGRAM__V1__LIST_MESSAGES_REQUEST__INIT;
  int64_t page_size = 0;
  const cli_flag flags[] = {
      {"--page-size", FLAG_INT, &page_size, 0, CLI_I32},
      {"--page-token", FLAG_STR, &req.page_token},
      {"--newest", FLAG_BOOL, &req.newest_first},
      {NULL},
  };
  int rc = cli_parse(g, argc, argv, flags, session_id_arg, (const char **)&req.session_id);
  if (rc != CLI_OK) return rc;
  req.page_size = (int32_t)page_size;
  return cli_rpc(g, &eg_client_method_list_messages, &req.base, NULL);
}

int cmd_context(cli *g, int argc, char **argv) {
  Engram__V1__GetContextRequest req = ENGRAM__V1__GET_CONTEXT_REQUEST__INIT;
  int64_t max_messages = 0, max_tokens = 0;
  const cli_flag flags[] = {
      {"--max-messages", FLAG_INT, &max_messages, 0, CLI_I32},
      {"--max-tokens", FLAG_INT, &max_tokens, 0, CLI_I32},
      {NULL},
  };
  int rc = cli_parse(g, argc, argv, flags, session_id_arg, (const char **)&req.session_id);
  if (rc != CLI_OK) return rc;
  req.max_messages = (int32_t)max_messages;
  req.max_tokens = (int32_t)max_tokens;
  return cli_rpc(g, &eg_client_method_get_context, &req.base, NULL);
}

int cmd_summary_update(cli *g, int argc, char **argv) {
  Engram__V1__UpdateSummaryRequest req = ENGRAM__V1__UPDATE_SUMMARY_REQUEST__INIT;
  const cli_flag flags[] = {
      {"--through-seq", FLAG_INT, &req.through_seq, 1, INT64_MIN, INT64_MAX},
      {"--text", FLAG_TEXT, &req.summary, 1},
      {NULL},
  };
  int rc = cli_parse(g, argc, argv, flags, session_id_arg, (const char **)&req.session_id);
  if (rc != CLI_OK) return rc;
  return cli_rpc(g, &eg_client_method_update_summary, &req.base, NULL);
}
