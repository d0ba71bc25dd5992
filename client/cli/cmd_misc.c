/*
 * engram health, and the commands that need no server: keygen, token hash.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "crypto/crypto.h"

int cmd_health(cli *g, int argc, char **argv) {
  int rc = cli_parse(g, argc, argv, cli_no_flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  ProtobufCMessage *resp;
  rc = cli_rpc(g, &eg_client_method_health_check, &req.base, &resp);
  if (rc != CLI_OK) return rc;
  int serving = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status ==
                GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  protobuf_c_message_free_unpacked(resp, NULL);
  return serving ? CLI_OK : CLI_ERR;
}

int cli_crypto_ready(void) {
  eg_err e = eg_crypto_init();
  if (e != EG_OK) fprintf(stderr, "engram: crypto: %s\n", eg_err_msg(e));
  return e == EG_OK;
}

int cmd_keygen(cli *g, int argc, char **argv) {
  int64_t id = 1;
  const cli_flag flags[] = {
      {"--id", FLAG_INT, &id, 0, 1, UINT32_MAX},
      {NULL},
  };
  int rc = cli_parse(g, argc, argv, flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  if (!cli_crypto_ready()) return CLI_ERR;
  char line[EG_KEYGEN_LINE_MAX];
  eg_err e = eg_keyring_keygen_line((uint32_t)id, line, sizeof line);
  if (e != EG_OK) {
    fprintf(stderr, "engram: keygen: %s\n", eg_err_msg(e));
    return CLI_ERR;
  }
  fputs(line, stdout);
  return CLI_OK;
}

int cmd_token_hash(cli *g, int argc, char **argv) {
  const char *const names[] = {"TOKEN", NULL};
  const char *token;
  int rc = cli_parse(g, argc, argv, cli_no_flags, names, &token);
  if (rc != CLI_OK) return rc;
  if (!cli_crypto_ready()) return CLI_ERR;
  char hex[65];
  eg_sha256_hex(token, strlen(token), hex);
  puts(hex);
  return CLI_OK;
}
