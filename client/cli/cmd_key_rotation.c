/*
 * engram admin keys rotate [--tenant T [--user U]]: a data-key rotation
 * (RotateDataKeys) on the node --target names (writes go to the primary),
 * with a token with the admin role. Without flags every user's data key;
 * --tenant: every user of T; --user: one user of T. Prints the rotation's
 * status; `engram admin keys status` shows its progress.
 *
 * engram admin keys rotate-blind: a blind-index key rotation
 * (RotateBlindIndexKey) to the keyring's primary key; prints its status
 * (running, done, total), the same when one runs already; a paused one
 * (paused, problem: records it cannot re-index) it resumes.
 */
#include "cli.h"
#include "engram/v1/admin.pb-c.h"

int cmd_keys_rotate(cli *g, int argc, char **argv) {
  const char *tenant = "", *user = "";
  const cli_flag flags[] = {{"--tenant", FLAG_STR, &tenant}, {"--user", FLAG_STR, &user}, {NULL}};
  int rc = cli_parse(g, argc, argv, flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  if (user[0] && !tenant[0]) return cli_usage_error(g, "--user needs --tenant (the user's tenant)");
  Engram__V1__RotateDataKeysRequest req = ENGRAM__V1__ROTATE_DATA_KEYS_REQUEST__INIT;
  req.tenant = (char *)tenant;
  req.user_id = (char *)user;
  return cli_rpc(g, &eg_client_method_rotate_data_keys, &req.base, NULL);
}

int cmd_keys_rotate_blind(cli *g, int argc, char **argv) {
  int rc = cli_parse(g, argc, argv, cli_no_flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  Engram__V1__RotateBlindIndexKeyRequest req = ENGRAM__V1__ROTATE_BLIND_INDEX_KEY_REQUEST__INIT;
  return cli_rpc(g, &eg_client_method_rotate_blind_index_key, &req.base, NULL);
}
