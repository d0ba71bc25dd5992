/*
 * engram admin keys status|rewrap|backup: the key store of the node
 * --target names (a token with the admin role).
 *
 *   status   data keys per master key (primary, in the keyring), live data
 *            keys, erased users
 *   rewrap   re-wraps data keys under the keyring's primary master key
 *            (on the primary; at most --max N keys per call, 0: all)
 *   backup   a compacted copy of the key store into --out FILE (mode
 *            0600, atomically; an existing FILE only with --force): an
 *            LMDB file, restored by putting it at KEYSTORE_DIR/data.mdb
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "engram/v1/admin.pb-c.h"

#define KEYS_BACKUP_PATH "/engram.v1.AdminService/BackupKeys"

int cmd_keys_status(cli *g, int argc, char **argv) {
  int rc = cli_parse(g, argc, argv, cli_no_flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  Engram__V1__GetKeyStatusRequest req = ENGRAM__V1__GET_KEY_STATUS_REQUEST__INIT;
  return cli_rpc(g, &eg_client_method_get_key_status, &req.base, NULL);
}

int cmd_keys_rewrap(cli *g, int argc, char **argv) {
  int64_t max = 0;
  const cli_flag flags[] = {{"--max", FLAG_INT, &max, 0, 0, INT64_MAX}, {NULL}};
  int rc = cli_parse(g, argc, argv, flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  Engram__V1__RewrapKeysRequest req = ENGRAM__V1__REWRAP_KEYS_REQUEST__INIT;
  req.max_keys = (uint64_t)max;
  return cli_rpc(g, &eg_client_method_rewrap_keys, &req.base, NULL);
}

/* Prints "engram: admin keys backup: why" and returns rc; with --json also
 * {"ok":false,"error":why} on stdout. */
static int backup_fail(cli *g, int rc, const char *why) {
  fprintf(stderr, "engram: admin keys backup: %s\n", why);
  if (g->json) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(0));
    json_object_object_add(o, "error", cli_json_new_string(why));
    cli_json_print(stdout, o);
  }
  return rc;
}

static void backup_print(cli *g, const char *out, const eg_backup_header *h) {
  char sha[65];
  for (int i = 0; i < 32; i++) sprintf(sha + 2 * i, "%02x", h->sha256[i]);
  if (g->json) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(1));
    json_object_object_add(o, "path", cli_json_new_string(out));
    json_object_object_add(o, "bytes", json_object_new_uint64(h->data_bytes));
    json_object_object_add(o, "sha256", json_object_new_string(sha));
    json_object *ids = json_object_new_array();
    for (size_t i = 0; i < h->n_key_ids; i++)
      json_object_array_add(ids, json_object_new_uint64(h->key_ids[i]));
    json_object_object_add(o, "master_key_ids", ids);
    cli_json_print(stdout, o);
    return;
  }
  printf("path: %s\nbytes: %" PRIu64 "\nsha256: %s\nmaster key ids:", out, h->data_bytes, sha);
  for (size_t i = 0; i < h->n_key_ids; i++) printf("%s%u", i ? "," : " ", h->key_ids[i]);
  puts(h->n_key_ids ? "" : " none");
}

int cmd_keys_backup(cli *g, int argc, char **argv) {
  const char *out = NULL;
  int force = 0;
  const cli_flag flags[] = {{"--out", FLAG_STR, &out, 1}, {"--force", FLAG_BOOL, &force}, {NULL}};
  int rc = cli_parse(g, argc, argv, flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  if (!cli_client(g)) return CLI_USAGE;
  if (!cli_crypto_ready()) return CLI_ERR;
  char why[512] = "", msg[600];
  eg_backup_writer *w;
  eg_backup_header h;
  /* As `backup create`: the target is checked before the call. The file
   * is the key store's LMDB file as it is (no backup header), so that a
   * restore is a copy into place. */
  eg_err e = eg_backup_writer_open_raw(out, force, &w, why, sizeof why);
  if (e != EG_OK) {
    snprintf(msg, sizeof msg, "%s%s", why, e == EG_EEXIST ? " (--force replaces it)" : "");
    return backup_fail(g, CLI_ERR, msg);
  }
  Engram__V1__BackupKeysRequest req = ENGRAM__V1__BACKUP_KEYS_REQUEST__INIT;
  if ((rc = cli_backup_fetch(g, KEYS_BACKUP_PATH, &req.base, w, &h, why, sizeof why)) != CLI_OK)
    return backup_fail(g, rc, why);
  backup_print(g, out, &h);
  return CLI_OK;
}
