/*
 * engram memory add|get|update|delete|list|search|dedup|batch-add|batch-delete,
 * engram user delete|stats|export
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
  const char *ns, *language;
  cli_map meta; /* set .entry before parsing (mem_fields_init) */
  int64_t expire_in;
  int clear_tags, clear_embedding, clear_meta;
} mem_fields;

static void mem_fields_init(mem_fields *f) {
  memset(f, 0, sizeof *f);
  f->meta.entry = &engram__v1__memory__metadata_entry__descriptor;
}

#define MEM_FIELD_FLAGS(f)                                                               \
  {"--text", FLAG_TEXT, &(f).text}, {"--type", FLAG_STR, &(f).type},                      \
      {"--category", FLAG_STR, &(f).category}, {"--importance", FLAG_STR, &(f).importance}, \
      {"--confidence", FLAG_STR, &(f).confidence}, {"--tags", FLAG_STR, &(f).tags},      \
      {"--embedding", FLAG_STR, &(f).embedding}, {"--agent", FLAG_STR, &(f).agent},      \
      {"--meta", FLAG_MAP, &(f).meta}, {"--namespace", FLAG_STR, &(f).ns},               \
      {"--language", FLAG_STR, &(f).language},                                          \
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
  if (f->ns) m->namespace_ = (char *)f->ns, MARK("namespace");
  if (f->language) m->language = (char *)f->language, MARK("language");
  if (f->meta.n || f->clear_meta) {
    m->metadata = (Engram__V1__Memory__MetadataEntry **)f->meta.items;
    m->n_metadata = f->meta.n;
    MARK("metadata");
  }
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
  mem_fields f;
  mem_fields_init(&f);
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
  mem_fields f;
  mem_fields_init(&f);
  int64_t expected = 0;
  const char *id, *dedup = NULL;
  const cli_flag flags[] = {
      {"--expected-version", FLAG_INT, &expected, 0, 1, INT64_MAX},
      {"--dedup", FLAG_STR, &dedup},
      {"--clear-tags", FLAG_BOOL, &f.clear_tags},
      {"--clear-embedding", FLAG_BOOL, &f.clear_embedding},
      {"--clear-meta", FLAG_BOOL, &f.clear_meta},
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
  if (f.clear_meta && f.meta.n) return cli_usage_error(g, "--meta and --clear-meta together");
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
  const char *types, *states, *tags, *category, *min_importance, *agent, *source, *ns;
  cli_map meta; /* MetadataEquals entries: set .entry first (filter_flags_init) */
} filter_flags;

static void filter_flags_init(filter_flags *f) {
  memset(f, 0, sizeof *f);
  f->meta.entry = &engram__v1__memory_filter__metadata_equals__descriptor;
}

#define FILTER_FLAGS(f)                                                                 \
  {"--types", FLAG_STR, &(f).types}, {"--states", FLAG_STR, &(f).states},               \
      {"--tags", FLAG_STR, &(f).tags}, {"--category", FLAG_STR, &(f).category},         \
      {"--min-importance", FLAG_STR, &(f).min_importance},                              \
      {"--agent", FLAG_STR, &(f).agent}, {"--source-session", FLAG_STR, &(f).source},   \
      {"--namespace", FLAG_STR, &(f).ns}, {"--meta", FLAG_MAP, &(f).meta}

/* The filter the flags describe, or NULL when none was given. */
static int make_filter(cli *g, const filter_flags *ff, Engram__V1__MemoryFilter **out) {
  int rc = CLI_OK;
  *out = NULL;
  if (!ff->types && !ff->states && !ff->tags && !ff->category && !ff->min_importance && !ff->agent &&
      !ff->source && !ff->ns && !ff->meta.n)
    return CLI_OK;
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
  if (ff->agent) f->agent_id = (char *)ff->agent;
  if (ff->source) f->source_session_id = (char *)ff->source;
  if (ff->ns) f->namespace_prefix = (char *)ff->ns;
  f->metadata_equals = (Engram__V1__MemoryFilter__MetadataEquals **)ff->meta.items;
  f->n_metadata_equals = ff->meta.n;
  if (ff->min_importance &&
      (rc = parse_float(g, "--min-importance", ff->min_importance, &f->min_importance)))
    return rc;
  *out = f;
  return CLI_OK;
}

int cmd_memory_list(cli *g, int argc, char **argv) {
  Engram__V1__ListMemoriesRequest req = ENGRAM__V1__LIST_MEMORIES_REQUEST__INIT;
  filter_flags ff;
  filter_flags_init(&ff);
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
  filter_flags ff;
  filter_flags_init(&ff);
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
      {"--language", FLAG_STR, &req.language},
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

/* ---- memory batch-add / batch-delete ------------------------------------------------------- */

/* The BatchCreateMemoriesRequest of text: one JSON array of
 * CreateMemoryRequests, or one a line (blank lines skipped), made into
 * {"requests": [...]} for the proto3 JSON reader, so an error names the
 * request by its index ("requests[2].memory.text: ..."). */
static int batch_request(cli *g, const char *text, size_t len, ProtobufCMessage **out) {
  const char *p = text + strspn(text, " \t\r\n");
  char why[512];
  /* the wrapping, and a comma a line at most */
  char *doc = cli_alloc(g, 2 * len + 32), *w = doc;
  w += sprintf(w, "{\"requests\": ");
  if (*p == '[') {
    memcpy(w, text, len);
    w += len;
  } else {
    *w++ = '[';
    int first = 1;
    for (const char *line = text; line < text + len;) {
      const char *nl = memchr(line, '\n', (size_t)(text + len - line));
      size_t n = nl ? (size_t)(nl - line) : (size_t)(text + len - line);
      if (line[strspn(line, " \t\r")] != '\n' && strspn(line, " \t\r") < n) {
        if (!first) *w++ = ',';
        memcpy(w, line, n);
        w += n;
        first = 0;
      }
      line += n + 1;
    }
    *w++ = ']';
  }
  w += sprintf(w, "}");
  if (cli_json_to_message(g, doc, (size_t)(w - doc), &engram__v1__batch_create_memories_request__descriptor,
                          out, why, sizeof why) != 0)
    return cli_usage_error(g, "--file: %s", why);
  return CLI_OK;
}

/* Counts the failed results of a BatchCreateMemories response, printing a
 * line per result when print: "N OK ID OUTCOME [of MATCH]" or
 * "N CODE message". */
static size_t batch_create_failures(const ProtobufCMessage *m, int print) {
  const Engram__V1__BatchCreateMemoriesResponse *r = (const void *)m;
  size_t failed = 0;
  for (size_t i = 0; i < r->n_results; i++) {
    const Engram__V1__BatchCreateMemoriesResult *x = r->results[i];
    int code = x->status ? x->status->code : 0;
    failed += code != 0;
    if (!print) continue;
    if (code) {
      printf("%zu %s %s\n", i, eg_client_code_name(code), x->status->message);
      continue;
    }
    const Engram__V1__CreateMemoryResponse *c = x->response;
    const ProtobufCEnumValue *o =
        protobuf_c_enum_descriptor_get_value(&engram__v1__dedup_outcome__descriptor, c ? c->outcome : 0);
    printf("%zu OK %s %s%s%s\n", i, c && c->memory ? c->memory->memory_id : "-", o ? o->name : "?",
           c && c->matched_memory_id[0] ? " of " : "", c ? c->matched_memory_id : "");
  }
  return failed;
}

/* The same for BatchDeleteMemories: "ID OK [purged]" or "ID CODE message". */
static size_t batch_delete_failures(const ProtobufCMessage *m, int print) {
  const Engram__V1__BatchDeleteMemoriesResponse *r = (const void *)m;
  size_t failed = 0;
  for (size_t i = 0; i < r->n_results; i++) {
    const Engram__V1__BatchDeleteMemoriesResult *x = r->results[i];
    int code = x->status ? x->status->code : 0;
    failed += code != 0;
    if (!print) continue;
    if (code) printf("%s %s %s\n", x->memory_id, eg_client_code_name(code), x->status->message);
    else printf("%s OK%s\n", x->memory_id, x->purged ? " purged" : "");
  }
  return failed;
}

/* Calls a batch method and prints each outcome (--json: the response);
 * exits 1 when any failed, the others being applied. */
static int batch_call(cli *g, const eg_client_method *method, const ProtobufCMessage *req,
                      size_t (*failures)(const ProtobufCMessage *, int print)) {
  ProtobufCMessage *resp;
  int rc = g->json ? cli_rpc(g, method, req, &resp) : cli_rpc_quiet(g, method, req, &resp);
  if (rc != CLI_OK) return rc;
  size_t failed = failures(resp, !g->json);
  protobuf_c_message_free_unpacked(resp, NULL);
  if (failed) fprintf(stderr, "engram: %zu of the batch failed (the others were applied)\n", failed);
  return failed ? CLI_ERR : CLI_OK;
}

int cmd_memory_batch_add(cli *g, int argc, char **argv) {
  const char *file = NULL;
  const cli_flag flags[] = {{"--file", FLAG_STR, &file, 1}, {NULL}};
  int rc = cli_parse(g, argc, argv, flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  char *src = (char *)file, *text;
  size_t len;
  if (strcmp(file, "-") != 0) {
    src = cli_alloc(g, strlen(file) + 2);
    sprintf(src, "@%s", file);
  }
  ProtobufCMessage *req;
  if ((rc = cli_read_input(g, "--file", src, CLI_JSON_INPUT_MAX, &text, &len)) ||
      (rc = batch_request(g, text, len, &req)))
    return rc;
  return batch_call(g, &eg_client_method_batch_create_memories, req, batch_create_failures);
}

int cmd_memory_batch_delete(cli *g, int argc, char **argv) {
  Engram__V1__BatchDeleteMemoriesRequest req = ENGRAM__V1__BATCH_DELETE_MEMORIES_REQUEST__INIT;
  int purge = 0, flags_done = 0;
  uint32_t seen = 0;
  const cli_flag flags[] = {{"--purge", FLAG_BOOL, &purge}, {NULL}};
  /* ID...: every word that is neither a flag nor a flag's value */
  req.memory_ids = cli_alloc(g, (size_t)(argc ? argc : 1) * sizeof *req.memory_ids);
  for (int i = 0; i < argc;) {
    if (!flags_done && strcmp(argv[i], "--") == 0) {
      flags_done = 1;
      i++;
    } else if (!flags_done && argv[i][0] == '-' && argv[i][1]) {
      int rc = cli_flag_take(g, flags, argc, argv, &i, &seen);
      if (rc != CLI_OK) return rc;
    } else {
      req.memory_ids[req.n_memory_ids++] = argv[i++];
    }
  }
  if (g->version) return CLI_VERSION;
  if (!req.n_memory_ids) return cli_usage_error(g, "missing ID");
  req.purge = purge;
  return batch_call(g, &eg_client_method_batch_delete_memories, &req.base, batch_delete_failures);
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
