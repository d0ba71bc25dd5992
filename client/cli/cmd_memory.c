/*
 * engram memory add|get|update|delete|list|search, engram user delete|stats|export
 *
 * Lists of values are comma-separated: --tags a,b  --types fact,person
 * --embedding 0.1,0.2,0.3. Enum values take their short names (fact,
 * preference; active, duplicate; off, mark, merge) or full ones.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "google/protobuf/field_mask.pb-c.h"

/* ---- value parsing ----------------------------------------------------------- */

/* Splits s at commas into *out (arena); empty items are an error (cli.h). */
int split_list(cli *g, const char *flag, const char *s, char ***out, size_t *n) {
  size_t cap = 1;
  for (const char *p = s; *p; p++) cap += *p == ',';
  char **items = cli_alloc(g, cap * sizeof *items);
  size_t len = strlen(s), k = 0;
  char *copy = cli_alloc(g, len + 1);
  memcpy(copy, s, len + 1);
  for (char *tok = copy, *end;; tok = end + 1) {
    end = strchr(tok, ',');
    if (end) *end = '\0';
    if (!*tok) return cli_usage_error(g, "%s: empty item in '%s'", flag, s);
    items[k++] = tok;
    if (!end) break;
  }
  *out = items;
  *n = k;
  return CLI_OK;
}

int parse_float(cli *g, const char *flag, const char *s, float *out) {
  char *end;
  errno = 0;
  float v = strtof(s, &end);
  if (!*s || *end || errno == ERANGE) return cli_usage_error(g, "%s: not a number: '%s'", flag, s);
  *out = v;
  return CLI_OK;
}

int parse_floats(cli *g, const char *flag, const char *s, float **out, size_t *n) {
  char **items;
  int rc = split_list(g, flag, s, &items, n);
  if (rc != CLI_OK) return rc;
  *out = cli_alloc(g, (*n ? *n : 1) * sizeof **out);
  for (size_t i = 0; i < *n; i++)
    if ((rc = parse_float(g, flag, items[i], &(*out)[i])) != CLI_OK) return rc;
  return CLI_OK;
}

static int parse_enum(cli *g, const char *flag, const ProtobufCEnumDescriptor *d, const char *s,
                      int *out) {
  if (pb_enum_parse(d, s, out) != 0) return cli_usage_error(g, "%s: unknown value '%s'", flag, s);
  return CLI_OK;
}

int cli_parse_enums(cli *g, const char *flag, const ProtobufCEnumDescriptor *d, const char *s,
                       int **out, size_t *n) {
  char **items;
  int rc = split_list(g, flag, s, &items, n);
  if (rc != CLI_OK) return rc;
  *out = cli_alloc(g, (*n ? *n : 1) * sizeof **out);
  for (size_t i = 0; i < *n; i++)
    if ((rc = parse_enum(g, flag, d, items[i], &(*out)[i])) != CLI_OK) return rc;
  return CLI_OK;
}

/* A timestamp `seconds` from now. */
static Google__Protobuf__Timestamp *from_now(cli *g, int64_t seconds) {
  Google__Protobuf__Timestamp *t = cli_alloc(g, sizeof *t);
  google__protobuf__timestamp__init(t);
  t->seconds = (int64_t)time(NULL) + seconds;
  return t;
}

/* The flags shared by add and update that set Memory fields. */
typedef struct {
  const char *type, *importance, *confidence, *tags, *embedding, *category, *text, *agent;
  int64_t expire_in;
  int clear_tags, clear_embedding;
} mem_fields;

#define MEM_FIELD_FLAGS(f)                                                               \
  {"--text", FLAG_TEXT, &(f).text}, {"--type", FLAG_STR, &(f).type},                      \
      {"--category", FLAG_STR, &(f).category}, {"--importance", FLAG_STR, &(f).importance}, \
      {"--confidence", FLAG_STR, &(f).confidence}, {"--tags", FLAG_STR, &(f).tags},      \
      {"--embedding", FLAG_STR, &(f).embedding}, {"--agent", FLAG_STR, &(f).agent},      \
      {"--expire-in", FLAG_INT, &(f).expire_in, 0, 1, INT32_MAX}

/* Copies the given fields into m; adds their paths to mask (may be NULL). */
static int apply_fields(cli *g, const mem_fields *f, Engram__V1__Memory *m,
                        Google__Protobuf__FieldMask *mask) {
  static char *paths[16];
  size_t np = 0;
  int rc = CLI_OK;
#define MARK(p) (paths[np++] = (char *)(p))
  if (f->text) m->text = (char *)f->text, MARK("text");
  if (f->category) m->category = (char *)f->category, MARK("category");
  if (f->agent) m->agent_id = (char *)f->agent, MARK("agent_id");
  if (f->type) {
    int v;
    if ((rc = parse_enum(g, "--type", &engram__v1__memory_type__descriptor, f->type, &v))) return rc;
    m->type = v;
    MARK("type");
  }
  if (f->importance) {
    if ((rc = parse_float(g, "--importance", f->importance, &m->importance))) return rc;
    MARK("importance");
  }
  if (f->confidence) {
    if ((rc = parse_float(g, "--confidence", f->confidence, &m->confidence))) return rc;
    MARK("confidence");
  }
  if (f->tags) {
    if ((rc = split_list(g, "--tags", f->tags, &m->tags, &m->n_tags))) return rc;
    MARK("tags");
  } else if (f->clear_tags) {
    MARK("tags");
  }
  if (f->embedding) {
    if ((rc = parse_floats(g, "--embedding", f->embedding, &m->embedding, &m->n_embedding))) return rc;
    MARK("embedding");
  } else if (f->clear_embedding) {
    MARK("embedding");
  }
  if (f->expire_in) m->expire_time = from_now(g, f->expire_in), MARK("expire_time");
#undef MARK
  if (mask) {
    mask->paths = paths;
    mask->n_paths = np;
  }
  return CLI_OK;
}

/* ---- memory add / get / update / delete -------------------------------------------- */

int cmd_memory_add(cli *g, int argc, char **argv) {
  Engram__V1__Memory m = ENGRAM__V1__MEMORY__INIT;
  Engram__V1__CreateMemoryRequest req = ENGRAM__V1__CREATE_MEMORY_REQUEST__INIT;
  mem_fields f = {0};
  const char *dedup = NULL, *quota = NULL, *jt = NULL, *ct = NULL, *conflict = NULL;
  const cli_flag flags[] = {
      {"--user", FLAG_STR, &m.user_id, 1},
      {"--id", FLAG_STR, &m.memory_id},
      {"--source-session", FLAG_STR, &m.source_session_id},
      {"--dedup", FLAG_STR, &dedup},
      {"--quota-policy", FLAG_STR, &quota},
      {"--conflict-policy", FLAG_STR, &conflict},
      {"--jaccard", FLAG_STR, &jt},
      {"--cosine", FLAG_STR, &ct},
      MEM_FIELD_FLAGS(f),
      {NULL},
  };
  int rc = cli_parse(g, argc, argv, flags, NULL, NULL), v;
  if (rc != CLI_OK) return rc;
  if (!f.text || !f.type) return cli_usage_error(g, "--text and --type are required");
  if ((rc = apply_fields(g, &f, &m, NULL))) return rc;
  req.memory = &m;
  if (dedup) {
    if ((rc = parse_enum(g, "--dedup", &engram__v1__dedup_policy__descriptor, dedup, &v))) return rc;
    req.dedup_policy = v;
  }
  if (quota) {
    if ((rc = parse_enum(g, "--quota-policy", &engram__v1__quota_policy__descriptor, quota, &v))) return rc;
    req.quota_policy = v;
  }
  if (conflict) {
    if ((rc = parse_enum(g, "--conflict-policy", &engram__v1__conflict_policy__descriptor, conflict, &v)))
      return rc;
    req.conflict_policy = v;
  }
  if (jt && (rc = parse_float(g, "--jaccard", jt, &req.jaccard_threshold))) return rc;
  if (ct && (rc = parse_float(g, "--cosine", ct, &req.cosine_threshold))) return rc;
  return cli_rpc(g, &eg_client_method_create_memory, &req.base, NULL);
}

int cmd_memory_get(cli *g, int argc, char **argv) {
  const char *const names[] = {"ID", NULL};
  Engram__V1__GetMemoryRequest req = ENGRAM__V1__GET_MEMORY_REQUEST__INIT;
  const char *id;
  int rc = cli_parse(g, argc, argv, cli_no_flags, names, &id);
  if (rc != CLI_OK) return rc;
  req.memory_id = (char *)id;
  return cli_rpc(g, &eg_client_method_get_memory, &req.base, NULL);
}

int cmd_memory_update(cli *g, int argc, char **argv) {
  const char *const names[] = {"ID", NULL};
  Engram__V1__Memory m = ENGRAM__V1__MEMORY__INIT;
  Engram__V1__UpdateMemoryRequest req = ENGRAM__V1__UPDATE_MEMORY_REQUEST__INIT;
  Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
  mem_fields f = {0};
  int64_t expected = 0;
  const char *id, *dedup = NULL;
  const cli_flag flags[] = {
      {"--expected-version", FLAG_INT, &expected, 0, 1, INT64_MAX},
      {"--dedup", FLAG_STR, &dedup},
      {"--clear-tags", FLAG_BOOL, &f.clear_tags},
      {"--clear-embedding", FLAG_BOOL, &f.clear_embedding},
      MEM_FIELD_FLAGS(f),
      {NULL},
  };
  int rc = cli_parse(g, argc, argv, flags, names, &id), v;
  if (rc != CLI_OK) return rc;
  if ((rc = apply_fields(g, &f, &m, &mask))) return rc;
  if (dedup) {
    if ((rc = parse_enum(g, "--dedup", &engram__v1__dedup_policy__descriptor, dedup, &v))) return rc;
    req.dedup_policy = v;
  }
  if (!mask.n_paths) return cli_usage_error(g, "nothing to update: give at least one field flag");
  m.memory_id = (char *)id;
  req.memory = &m;
  req.update_mask = &mask;
  req.expected_version = expected;
  return cli_rpc(g, &eg_client_method_update_memory, &req.base, NULL);
}

int cmd_memory_delete(cli *g, int argc, char **argv) {
  const char *const names[] = {"ID", NULL};
  Engram__V1__DeleteMemoryRequest req = ENGRAM__V1__DELETE_MEMORY_REQUEST__INIT;
  int64_t expected = 0;
  int purge = 0;
  const char *id;
  const cli_flag flags[] = {
      {"--purge", FLAG_BOOL, &purge},
      {"--expected-version", FLAG_INT, &expected, 0, 1, INT64_MAX},
      {NULL},
  };
  int rc = cli_parse(g, argc, argv, flags, names, &id);
  if (rc != CLI_OK) return rc;
  req.memory_id = (char *)id;
  req.purge = purge;
  req.expected_version = expected;
  return cli_rpc(g, &eg_client_method_delete_memory, &req.base, NULL);
}

/* ---- memory list / search ------------------------------------------------------------- */

typedef struct {
  const char *types, *states, *tags, *category, *min_importance;
} filter_flags;

#define FILTER_FLAGS(f)                                                                 \
  {"--types", FLAG_STR, &(f).types}, {"--states", FLAG_STR, &(f).states},               \
      {"--tags", FLAG_STR, &(f).tags}, {"--category", FLAG_STR, &(f).category},         \
      {"--min-importance", FLAG_STR, &(f).min_importance}

/* The filter the flags describe, or NULL when none was given. */
static int make_filter(cli *g, const filter_flags *ff, Engram__V1__MemoryFilter **out) {
  int rc = CLI_OK;
  *out = NULL;
  if (!ff->types && !ff->states && !ff->tags && !ff->category && !ff->min_importance) return CLI_OK;
  Engram__V1__MemoryFilter *f = cli_alloc(g, sizeof *f);
  engram__v1__memory_filter__init(f);
  if (ff->types && (rc = cli_parse_enums(g, "--types", &engram__v1__memory_type__descriptor, ff->types,
                                     (int **)&f->types, &f->n_types)))
    return rc;
  if (ff->states && (rc = cli_parse_enums(g, "--states", &engram__v1__memory_state__descriptor, ff->states,
                                      (int **)&f->states, &f->n_states)))
    return rc;
  if (ff->tags && (rc = split_list(g, "--tags", ff->tags, &f->tags, &f->n_tags))) return rc;
  if (ff->category) f->category = (char *)ff->category;
  if (ff->min_importance &&
      (rc = parse_float(g, "--min-importance", ff->min_importance, &f->min_importance)))
    return rc;
  *out = f;
  return CLI_OK;
}

int cmd_memory_list(cli *g, int argc, char **argv) {
  Engram__V1__ListMemoriesRequest req = ENGRAM__V1__LIST_MEMORIES_REQUEST__INIT;
  filter_flags ff = {0};
  const char *order = NULL;
  int64_t page_size = 0;
  int emb = 0;
  const cli_flag flags[] = {
      {"--user", FLAG_STR, &req.user_id, 1},
      {"--order", FLAG_STR, &order},
      {"--page-size", FLAG_INT, &page_size, 0, CLI_I32},
      {"--page-token", FLAG_STR, &req.page_token},
      {"--embeddings", FLAG_BOOL, &emb},
      FILTER_FLAGS(ff),
      {NULL},
  };
  int rc = cli_parse(g, argc, argv, flags, NULL, NULL), v;
  if (rc != CLI_OK) return rc;
  if ((rc = make_filter(g, &ff, &req.filter))) return rc;
  if (order) {
    if ((rc = parse_enum(g, "--order", &engram__v1__memory_order__descriptor, order, &v))) return rc;
    req.order_by = v;
  }
  req.page_size = (int32_t)page_size;
  req.include_embeddings = emb;
  return cli_rpc(g, &eg_client_method_list_memories, &req.base, NULL);
}

int cmd_memory_search(cli *g, int argc, char **argv) {
  Engram__V1__SearchMemoriesRequest req = ENGRAM__V1__SEARCH_MEMORIES_REQUEST__INIT;
  Engram__V1__SearchWeights w = ENGRAM__V1__SEARCH_WEIGHTS__INIT;
  filter_flags ff = {0};
  const char *emb = NULL, *weights = NULL, *min_score = NULL;
  int64_t top_k = 0;
  int with_emb = 0;
  const cli_flag flags[] = {
      {"--user", FLAG_STR, &req.user_id, 1},
      {"--query", FLAG_STR, &req.query},
      {"--embedding", FLAG_STR, &emb},
      {"--top-k", FLAG_INT, &top_k, 0, CLI_I32},
      {"--weights", FLAG_STR, &weights},
      {"--min-score", FLAG_STR, &min_score},
      {"--embeddings", FLAG_BOOL, &with_emb},
      FILTER_FLAGS(ff),
      {NULL},
  };
  int rc = cli_parse(g, argc, argv, flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  if (!req.query && !emb) return cli_usage_error(g, "--query or --embedding (or both) is required");
  if (emb && (rc = parse_floats(g, "--embedding", emb, &req.embedding, &req.n_embedding))) return rc;
  if (weights) {
    /* keyword,vector,importance,recency */
    float *v;
    size_t n;
    if ((rc = parse_floats(g, "--weights", weights, &v, &n))) return rc;
    if (n != 4) return cli_usage_error(g, "--weights: four numbers: keyword,vector,importance,recency");
    w.keyword = v[0], w.vector = v[1], w.importance = v[2], w.recency = v[3];
    req.weights = &w;
  }
  if (min_score && (rc = parse_float(g, "--min-score", min_score, &req.min_score))) return rc;
  if ((rc = make_filter(g, &ff, &req.filter))) return rc;
  req.top_k = (int32_t)top_k;
  req.include_embeddings = with_emb;
  return cli_rpc(g, &eg_client_method_search_memories, &req.base, NULL);
}

int cmd_memory_dedup(cli *g, int argc, char **argv) {
  Engram__V1__DeduplicateMemoriesRequest req = ENGRAM__V1__DEDUPLICATE_MEMORIES_REQUEST__INIT;
  const char *jt = NULL, *ct = NULL;
  const cli_flag flags[] = {
      {"--user", FLAG_STR, &req.user_id, 1},
      {"--jaccard", FLAG_STR, &jt},
      {"--cosine", FLAG_STR, &ct},
      {NULL},
  };
  int rc = cli_parse(g, argc, argv, flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  if (jt && (rc = parse_float(g, "--jaccard", jt, &req.jaccard_threshold))) return rc;
  if (ct && (rc = parse_float(g, "--cosine", ct, &req.cosine_threshold))) return rc;
  return cli_rpc(g, &eg_client_method_deduplicate_memories, &req.base, NULL);
}

/* ---- user delete / stats ------------------------------------------------------------------ */

int cmd_user_delete(cli *g, int argc, char **argv) {
  const char *const names[] = {"USER", NULL};
  Engram__V1__DeleteUserRequest req = ENGRAM__V1__DELETE_USER_REQUEST__INIT;
  const char *user;
  int rc = cli_parse(g, argc, argv, cli_no_flags, names, &user);
  if (rc != CLI_OK) return rc;
  req.user_id = (char *)user;
  return cli_rpc(g, &eg_client_method_delete_user, &req.base, NULL);
}

int cmd_user_stats(cli *g, int argc, char **argv) {
  const char *const names[] = {"USER", NULL};
  Engram__V1__GetUserStatsRequest req = ENGRAM__V1__GET_USER_STATS_REQUEST__INIT;
  const char *user;
  int rc = cli_parse(g, argc, argv, cli_no_flags, names, &user);
  if (rc != CLI_OK) return rc;
  req.user_id = (char *)user;
  return cli_rpc(g, &eg_client_method_get_user_stats, &req.base, NULL);
}

/* ---- user export ---------------------------------------------------------------------------- */

/* The deadline of a whole export when --timeout is not given: streaming a
 * user's data takes far longer than a unary call's answer. */
#define CLI_EXPORT_TIMEOUT_MS 3600000

/* Prints resp as JSON lines of one record each: a batch of messages
 * becomes one line per message (an ExportedMessages holding one). */
static void cli_export_print(const Engram__V1__ExportUserResponse *resp) {
  if (resp->item_case != ENGRAM__V1__EXPORT_USER_RESPONSE__ITEM_MESSAGES) {
    cli_print_json(stdout, &resp->base, 0);
    return;
  }
  for (size_t i = 0; i < resp->messages->n_messages; i++) {
    Engram__V1__ExportedMessages one = ENGRAM__V1__EXPORTED_MESSAGES__INIT;
    Engram__V1__ExportUserResponse line = ENGRAM__V1__EXPORT_USER_RESPONSE__INIT;
    one.session_id = resp->messages->session_id;
    one.messages = &resp->messages->messages[i];
    one.n_messages = 1;
    line.item_case = ENGRAM__V1__EXPORT_USER_RESPONSE__ITEM_MESSAGES;
    line.messages = &one;
    line.lsn = resp->lsn;
    cli_print_json(stdout, &line.base, 0);
  }
}

int cmd_user_export(cli *g, int argc, char **argv) {
  const char *const names[] = {"USER", NULL};
  Engram__V1__ExportUserRequest req = ENGRAM__V1__EXPORT_USER_REQUEST__INIT;
  const char *user;
  int rc = cli_parse(g, argc, argv, cli_no_flags, names, &user);
  if (rc != CLI_OK) return rc;
  if (!cli_client(g)) return CLI_USAGE;
  req.user_id = (char *)user;
  eg_client_opts opts = {.timeout_ms = g->timeout_ms ? g->timeout_ms : CLI_EXPORT_TIMEOUT_MS,
                         .min_lsn = (uint64_t)g->min_lsn};
  eg_client_status st;
  ProtobufCMessage *m;
  eg_client_stream *s =
      eg_client_stream_open(g->client, EG_CLIENT_USER_SVC "ExportUser", &req.base, &opts, &st);
  while (s && eg_client_stream_next(s, &engram__v1__export_user_response__descriptor, &m, &st) == 1) {
    cli_export_print((const Engram__V1__ExportUserResponse *)m);
    protobuf_c_message_free_unpacked(m, NULL);
  }
  eg_client_stream_free(s);
  /* Each line went out whole before the next: what was printed stays
   * valid JSON lines whichever way the stream ended. */
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "engram: cannot write the export to stdout\n");
    return CLI_ERR;
  }
  if (st.code != 0) {
    cli_print_status(&st);
    return cli_exit_code(st.code);
  }
  return CLI_OK;
}
