/*
 * engram admin status|promote|checksum|retention: AdminService on the node
 * --target names (a token with the admin role).
 *
 *   status    role, epoch, LSNs, and on a primary one line per replica
 *   promote   makes a replica the primary (epoch + 1)
 *   checksum  digest of every data DB and the LSN it was taken at: nodes
 *             at equal LSNs must print equal digests
 *   retention get|set  the token's tenant's retention policy; set changes
 *             only the tiers named (a number of seconds, or `default`)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Sets v from a --*-retention-s value: seconds, or "default". */
static int retention_value(cli *g, const char *flag, const char *s, Engram__V1__RetentionValue *v) {
  char *end;
  if (strcmp(s, "default") == 0) {
    v->is_default = 1;
    return CLI_OK;
  }
  long long n = strtoll(s, &end, 10);
  if (!*s || *end || n < 0) return cli_usage_error(g, "%s: want seconds (>= 0) or `default`", flag);
  v->is_default = 0;
  v->seconds = n;
  return CLI_OK;
}

int cmd_admin_retention(cli *g, int argc, char **argv) {
  if (argc < 1 || (strcmp(argv[0], "get") != 0 && strcmp(argv[0], "set") != 0))
    return cli_usage_error(g, "want `retention get` or `retention set`");
  if (strcmp(argv[0], "get") == 0)
    return call_empty(g, argc - 1, argv + 1, &eg_client_method_get_retention_policy);
  const char *val[3] = {NULL, NULL, NULL};
  static const char *const names[3] = {"--expired-session-retention-s", "--raw-message-retention-s",
                                       "--memory-tombstone-retention-s"};
  const cli_flag flags[] = {{names[0], FLAG_STR, &val[0]},
                            {names[1], FLAG_STR, &val[1]},
                            {names[2], FLAG_STR, &val[2]},
                            {NULL}};
  int rc = cli_parse(g, argc - 1, argv + 1, flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  /* Only the tiers named go: the server keeps the others as stored. */
  Engram__V1__RetentionPolicy pol = ENGRAM__V1__RETENTION_POLICY__INIT;
  Engram__V1__RetentionValue out[3];
  Engram__V1__RetentionValue **dst[3] = {&pol.expired_session_retention, &pol.raw_message_retention,
                                         &pol.memory_tombstone_retention};
  for (int i = 0; i < 3; i++) {
    if (!val[i]) continue;
    engram__v1__retention_value__init(&out[i]);
    if ((rc = retention_value(g, names[i], val[i], &out[i])) != CLI_OK) return rc;
    *dst[i] = &out[i];
  }
  Engram__V1__SetRetentionPolicyRequest req = ENGRAM__V1__SET_RETENTION_POLICY_REQUEST__INIT;
  req.policy = &pol;
  return cli_rpc(g, &eg_client_method_set_retention_policy, &req.base, NULL);
}

/* A third word after `admin keys` / `admin tenant`. */
typedef struct {
  const char *name;
  int (*fn)(cli *g, int argc, char **argv);
} sub_cmd;

static int dispatch(cli *g, int argc, char **argv, const char *what, const sub_cmd *subs,
                    size_t n) {
  for (size_t i = 0; argc >= 1 && i < n; i++)
    if (strcmp(argv[0], subs[i].name) == 0) return subs[i].fn(g, argc - 1, argv + 1);
  char names[128] = "";
  for (size_t i = 0; i < n; i++)
    snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
             subs[i].name);
  return cli_usage_error(g, "want `%s` and one of: %s", what, names);
}

int cmd_admin_keys(cli *g, int argc, char **argv) {
  static const sub_cmd subs[] = {{"status", cmd_keys_status},
                                 {"rewrap", cmd_keys_rewrap},
                                 {"rotate", cmd_keys_rotate},
                                 {"rotate-blind", cmd_keys_rotate_blind},
                                 {"backup", cmd_keys_backup}};
  return dispatch(g, argc, argv, "admin keys", subs, sizeof subs / sizeof subs[0]);
}

int cmd_admin_tenant(cli *g, int argc, char **argv) {
  static const sub_cmd subs[] = {{"delete", cmd_tenant_delete}, {"limits", cmd_tenant_limits}};
  return dispatch(g, argc, argv, "admin tenant", subs, sizeof subs / sizeof subs[0]);
}
