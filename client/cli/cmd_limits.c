/*
 * engram admin tenant limits get [TENANT] | set TENANT [--calls-per-s N]
 * [--writes-per-s N] [--concurrent-calls N] [--storage-bytes N]: a
 * tenant's limits (AdminService GetTenantLimits / SetTenantLimits; an
 * admin token). get without TENANT: the token's own tenant. set changes
 * only the limits named: a number (0: unlimited) or `default` (the
 * override goes; the server's flag holds again).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Sets v from a limit flag's value: a number >= 0, or "default". */
static int limit_value(cli *g, const char *flag, const char *s, Engram__V1__LimitValue *v) {
  char *end;
  if (strcmp(s, "default") == 0) {
    v->is_default = 1;
    return CLI_OK;
  }
  double n = strtod(s, &end);
  if (!*s || *end || !isfinite(n) || n < 0)
    return cli_usage_error(g, "%s: want a number (>= 0; 0: unlimited) or `default`", flag);
  v->value = n;
  return CLI_OK;
}

static int limits_get(cli *g, int argc, char **argv) {
  Engram__V1__GetTenantLimitsRequest req = ENGRAM__V1__GET_TENANT_LIMITS_REQUEST__INIT;
  const char *tenant = "";
  /* TENANT is optional: a first word that is no flag. */
  if (argc >= 1 && argv[0][0] != '-') {
    tenant = argv[0];
    argc--, argv++;
  }
  int rc = cli_parse(g, argc, argv, cli_no_flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  req.tenant = (char *)tenant;
  return cli_rpc(g, &eg_client_method_get_tenant_limits, &req.base, NULL);
}

static int limits_set(cli *g, int argc, char **argv) {
  static const char *const names[4] = {"--calls-per-s", "--writes-per-s", "--concurrent-calls",
                                       "--storage-bytes"};
  const char *val[4] = {NULL, NULL, NULL, NULL}, *tenant = NULL;
  static const char *const pos_names[] = {"TENANT", NULL};
  const cli_flag flags[] = {{names[0], FLAG_STR, &val[0]},
                            {names[1], FLAG_STR, &val[1]},
                            {names[2], FLAG_STR, &val[2]},
                            {names[3], FLAG_STR, &val[3]},
                            {NULL}};
  int rc = cli_parse(g, argc, argv, flags, pos_names, &tenant);
  if (rc != CLI_OK) return rc;
  Engram__V1__TenantLimits lim = ENGRAM__V1__TENANT_LIMITS__INIT;
  Engram__V1__LimitValue out[4];
  Engram__V1__LimitValue **dst[4] = {&lim.calls_per_second, &lim.writes_per_second,
                                     &lim.concurrent_calls, &lim.storage_bytes};
  int any = 0;
  for (int i = 0; i < 4; i++) {
    if (!val[i]) continue;
    engram__v1__limit_value__init(&out[i]);
    if ((rc = limit_value(g, names[i], val[i], &out[i])) != CLI_OK) return rc;
    *dst[i] = &out[i];
    any = 1;
  }
  if (!any) return cli_usage_error(g, "name at least one limit to set");
  Engram__V1__SetTenantLimitsRequest req = ENGRAM__V1__SET_TENANT_LIMITS_REQUEST__INIT;
  req.tenant = (char *)tenant;
  req.limits = &lim;
  return cli_rpc(g, &eg_client_method_set_tenant_limits, &req.base, NULL);
}

int cmd_tenant_limits(cli *g, int argc, char **argv) {
  if (argc >= 1 && strcmp(argv[0], "get") == 0) return limits_get(g, argc - 1, argv + 1);
  if (argc >= 1 && strcmp(argv[0], "set") == 0) return limits_set(g, argc - 1, argv + 1);
  return cli_usage_error(g, "want `limits get [TENANT]` or `limits set TENANT ...`");
}
