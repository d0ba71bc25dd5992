/*
 * engram message append|list|search, engram context, engram summary update
 *
 * Lists of values are comma-separated, as in cmd_memory.c: --session a,b
 * --roles user,assistant --embedding 0.1,0.2.
 */
#include "cli.h"

static const char *const session_id_arg[] = {"SESSION_ID", NULL};

int cmd_message_append(cli *g, int argc, char **argv) {
  Engram__V1__Message msg = ENGRAM__V1__MESSAGE__INIT;
  cli_map meta = {.entry = &engram__v1__message__metadata_entry__descriptor};
  const char *role = NULL, *emb = NULL;
  int64_t token_count = 0;
  const cli_flag flags[] = {
      {"--role", FLAG_STR, &role, 1},
      {"--content", FLAG_TEXT, &msg.content, 1},
      {"--token-count", FLAG_INT, &token_count, 0, CLI_I32},
      {"--client-id", FLAG_STR, &msg.client_message_id},
      {"--meta", FLAG_MAP, &meta},
      {"--embedding", FLAG_STR, &emb},
      {NULL},
  };
  Engram__V1__AppendMessagesRequest req = ENGRAM__V1__APPEND_MESSAGES_REQUEST__INIT;
  int rc = cli_parse(g, argc, argv, flags, session_id_arg, (const char **)&req.session_id);
  if (rc != CLI_OK) return rc;
  if (emb && (rc = parse_floats(g, "--embedding", emb, &msg.embedding, &msg.n_embedding))) return rc;
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

/* --from / --to: RFC 3339 or unix seconds, as a Timestamp (NULL if not
 * given). */
static int search_time(cli *g, const char *flag, const char *v, Google__Protobuf__Timestamp **out) {
  int64_t us;
  *out = NULL;
  if (!v) return CLI_OK;
  if (cli_parse_time_us(v, &us) != 0 || us < 0)
    return cli_usage_error(g, "%s %s: want RFC 3339 (2026-01-02T03:04:05Z) or unix seconds", flag, v);
  Google__Protobuf__Timestamp *t = cli_alloc(g, sizeof *t);
  google__protobuf__timestamp__init(t);
  t->seconds = us / 1000000;
  t->nanos = (int32_t)(us % 1000000) * 1000;
  *out = t;
  return CLI_OK;
}

int cmd_message_search(cli *g, int argc, char **argv) {
  Engram__V1__SearchMessagesRequest req = ENGRAM__V1__SEARCH_MESSAGES_REQUEST__INIT;
  Engram__V1__MessageSearchWeights w = ENGRAM__V1__MESSAGE_SEARCH_WEIGHTS__INIT;
  const char *sessions = NULL, *roles = NULL, *states = NULL, *from = NULL, *to = NULL;
  const char *weights = NULL, *min_score = NULL, *emb = NULL, *half_life = NULL;
  int64_t top_k = 0;
  const cli_flag flags[] = {
      {"--user", FLAG_STR, &req.user_id},
      {"--query", FLAG_STR, &req.query},
      {"--session", FLAG_STR, &sessions},
      {"--agent", FLAG_STR, &req.agent_id},
      {"--roles", FLAG_STR, &roles},
      {"--from", FLAG_STR, &from},
      {"--to", FLAG_STR, &to},
      {"--states", FLAG_STR, &states},
      /* the server checks the range and names the field */
      {"--top-k", FLAG_INT, &top_k, 0, CLI_I32},
      {"--weights", FLAG_STR, &weights},
      {"--half-life", FLAG_STR, &half_life},
      {"--min-score", FLAG_STR, &min_score},
      {"--language", FLAG_STR, &req.language},
      {"--page-token", FLAG_STR, &req.page_token},
      {"--embedding", FLAG_STR, &emb},
      {NULL},
  };
  int rc = cli_parse(g, argc, argv, flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  if (!req.query[0] && !emb) return cli_usage_error(g, "--query or --embedding (or both) is required");
  if ((sessions && (rc = split_list(g, "--session", sessions, &req.session_ids, &req.n_session_ids))) ||
      (roles && (rc = cli_parse_enums(g, "--roles", &engram__v1__role__descriptor, roles,
                                      (int **)&req.roles, &req.n_roles))) ||
      (states && (rc = cli_parse_enums(g, "--states", &engram__v1__session_state__descriptor, states,
                                       (int **)&req.session_states, &req.n_session_states))) ||
      (rc = search_time(g, "--from", from, &req.create_time_from)) ||
      (rc = search_time(g, "--to", to, &req.create_time_to)) ||
      (emb && (rc = parse_floats(g, "--embedding", emb, &req.embedding, &req.n_embedding))) ||
      (min_score && (rc = parse_float(g, "--min-score", min_score, &req.min_score))))
    return rc;
  if (half_life) {
    float v;
    if ((rc = parse_float(g, "--half-life", half_life, &v))) return rc;
    req.recency_half_life_seconds = v;
  }
  if (weights) {
    float *v;
    size_t n;
    if ((rc = parse_floats(g, "--weights", weights, &v, &n))) return rc;
    if (n != 3) return cli_usage_error(g, "--weights: three numbers: keyword,vector,recency");
    w.keyword = v[0], w.vector = v[1], w.recency = v[2];
    req.weights = &w;
  }
  req.top_k = (int32_t)top_k;
  return cli_rpc(g, &eg_client_method_search_messages, &req.base, NULL);
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
