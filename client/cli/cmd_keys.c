/* PLACEHOLDER until issue 12 fills it in (its helper replaces this file). */
#include "cli.h"

int cmd_keys_status(cli *g, int argc, char **argv) {
  (void)argc;
  (void)argv;
  return cli_usage_error(g, "not built yet");
}

int cmd_keys_rewrap(cli *g, int argc, char **argv) {
  (void)argc;
  (void)argv;
  return cli_usage_error(g, "not built yet");
}

int cmd_keys_backup(cli *g, int argc, char **argv) {
  (void)argc;
  (void)argv;
  return cli_usage_error(g, "not built yet");
}
