/*
 * engram call SERVICE/METHOD -d JSON: any RPC of engramd, its request
 * made from proto3 JSON by the descriptors compiled into the CLI, each
 * response printed as a JSON line.
 */
#include <string.h>

#include "cli.h"
#include "engram/v1/agent_state.pb-c.h"
#include "engram/v1/replication.pb-c.h"

/* The services engramd serves to clients. */
static const ProtobufCServiceDescriptor *const services[] = {
    &engram__v1__session_service__descriptor, &engram__v1__memory_service__descriptor,
    &engram__v1__user_service__descriptor,    &engram__v1__admin_service__descriptor,
    &engram__v1__replication_service__descriptor, &grpc__health__v1__health__descriptor,
    &engram__v1__checkpoint_service__descriptor, &engram__v1__store_service__descriptor,
};
#define NSERVICES (sizeof services / sizeof services[0])

/* protobuf-c's descriptors do not say which methods stream: the methods
 * whose response is a stream, and the one whose request is too (a
 * replica's log stream: not a call one can make from a command line).
 * tests/e2e/test_cli_habits.py checks these lists against proto/. */
static const char *const server_streaming[] = {
    "engram.v1.AdminService/Backup",
    "engram.v1.AdminService/BackupKeys",
    "engram.v1.UserService/ExportUser",
    "engram.v1.ReplicationService/Snapshot",
    "grpc.health.v1.Health/Watch",
    NULL,
};
static const char *const client_streaming[] = {"engram.v1.ReplicationService/Stream", NULL};

static int listed(const char *const *list, const char *svc, const char *method) {
  size_t n = strlen(svc);
  for (; *list; list++)
    if (!strncmp(*list, svc, n) && (*list)[n] == '/' && !strcmp(*list + n + 1, method)) return 1;
  return 0;
}

static void list_methods(void) {
  for (size_t i = 0; i < NSERVICES; i++) {
    const ProtobufCServiceDescriptor *s = services[i];
    for (unsigned k = 0; k < s->n_methods; k++) {
      const char *m = s->methods[k].name;
      printf("%s/%s%s\n", s->name, m,
             listed(server_streaming, s->name, m)   ? " (server streaming)"
             : listed(client_streaming, s->name, m) ? " (client streaming: not callable here)"
                                                    : "");
    }
  }
}

/* The method named by "Service/Method" (Service short or full, an
 * optional leading '/'); NULL after a usage error. */
static const ProtobufCMethodDescriptor *find_method(cli *g, const char *name,
                                                    const ProtobufCServiceDescriptor **svc) {
  if (*name == '/') name++;
  const char *slash = strchr(name, '/');
  if (!slash)
    return cli_usage_error(g, "'%s': expected SERVICE/METHOD (engram call --list)", name), NULL;
  size_t n = (size_t)(slash - name);
  for (size_t i = 0; i < NSERVICES; i++) {
    const ProtobufCServiceDescriptor *s = services[i];
    if (!((strlen(s->name) == n && !strncmp(s->name, name, n)) ||
          (strlen(s->short_name) == n && !strncmp(s->short_name, name, n))))
      continue;
    const ProtobufCMethodDescriptor *m =
        protobuf_c_service_descriptor_get_method_by_name(s, slash + 1);
    if (!m) break;
    *svc = s;
    return m;
  }
  return cli_usage_error(g, "no method '%s' (engram call --list)", name), NULL;
}

/* Prints each response of a server-streaming call as a JSON line. */
static int call_stream(cli *g, const char *path, const ProtobufCMethodDescriptor *m,
                       const ProtobufCMessage *req) {
  eg_client_opts opts = {.timeout_ms = g->timeout_ms, .min_lsn = (uint64_t)g->min_lsn};
  eg_client_status st;
  ProtobufCMessage *resp;
  eg_client_stream *s = eg_client_stream_open(g->client, path, req, &opts, &st);
  while (s && eg_client_stream_next(s, m->output, &resp, &st) == 1) {
    cli_print_json(stdout, resp, 0);
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  eg_client_stream_free(s);
  if (st.code == 0) return CLI_OK;
  cli_print_status(&st);
  return cli_exit_code(st.code);
}

int cmd_call(cli *g, int argc, char **argv) {
  const char *const names[] = {"SERVICE/METHOD", NULL};
  const char *method = NULL, *data = "{}";
  int list = 0, dry = 0;
  const cli_flag flags[] = {
      {"-d", FLAG_STR, &data},
      {"--list", FLAG_BOOL, &list},
      {"--dry-run", FLAG_BOOL, &dry},
      {NULL},
  };
  /* --list takes no method: look for it before the positional is required */
  for (int i = 0; i < argc && strcmp(argv[i], "--"); i++)
    if (!strcmp(argv[i], "--list")) list = 1;
  int rc = cli_parse(g, argc, argv, flags, list ? NULL : names, &method);
  if (rc != CLI_OK) return rc;
  if (list) {
    list_methods();
    return CLI_OK;
  }
  const ProtobufCServiceDescriptor *svc;
  const ProtobufCMethodDescriptor *m = find_method(g, method, &svc);
  if (!m) return CLI_USAGE;

  char *text = (char *)data, why[512];
  size_t len = strlen(data);
  if ((!strcmp(data, "-") || data[0] == '@') &&
      (rc = cli_read_input(g, "-d", data, CLI_JSON_INPUT_MAX, &text, &len)) != CLI_OK)
    return rc;
  ProtobufCMessage *req;
  if (cli_json_to_message(g, text, len, m->input, &req, why, sizeof why) != 0)
    return cli_usage_error(g, "-d: %s", why);
  /* --dry-run too: a request engramd would refuse is not one to print as
   * if it could be sent */
  size_t packed = protobuf_c_message_get_packed_size(req);
  if (packed > CLI_INPUT_MAX)
    return cli_usage_error(g, "-d: the request is %zu bytes, over %d (the largest engramd takes)",
                           packed, CLI_INPUT_MAX);
  if (dry) { /* the request as it would go, and no call */
    cli_print_json(stdout, req, 0);
    return CLI_OK;
  }
  if (listed(client_streaming, svc->name, m->name))
    return cli_usage_error(g, "%s/%s streams its requests: not callable from engram call",
                           svc->name, m->name);

  char path[256];
  snprintf(path, sizeof path, "/%s/%s", svc->name, m->name);
  if (!cli_client(g)) return CLI_USAGE;
  if (listed(server_streaming, svc->name, m->name)) return call_stream(g, path, m, req);
  eg_client_method em = {.path = path, .request = m->input, .response = m->output};
  int json = g->json;
  g->json = 1; /* call always speaks JSON */
  rc = cli_rpc(g, &em, req, NULL);
  g->json = json;
  return rc;
}
