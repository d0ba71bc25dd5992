/* PLACEHOLDER until issue 12 fills it in (its helper replaces this file). */
#include "cli.h"

int cmd_tenant_limits(cli *g, int argc, char **argv) {
  (void)argc;
  (void)argv;
  return cli_usage_error(g, "not built yet");
}
