/* engram admin tenant delete TENANT --confirm TENANT: AdminService
 * DeleteTenant (admin role). The server checks --confirm equals TENANT,
 * so a missing or mistyped one is refused there, naming it. */
#include "cli.h"

int cmd_tenant_delete(cli *g, int argc, char **argv) {
  const char *const names[] = {"TENANT", NULL};
  const char *tenant, *confirm = "";
  const cli_flag flags[] = {{"--confirm", FLAG_STR, &confirm}, {NULL}};
  int rc = cli_parse(g, argc, argv, flags, names, &tenant);
  if (rc != CLI_OK) return rc;
  Engram__V1__DeleteTenantRequest req = ENGRAM__V1__DELETE_TENANT_REQUEST__INIT;
  req.tenant = (char *)tenant;
  req.confirm = (char *)confirm;
  return cli_rpc(g, &eg_client_method_delete_tenant, &req.base, NULL);
}
