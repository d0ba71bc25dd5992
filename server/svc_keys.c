/* AdminService: GetKeyStatus, RewrapKeys and BackupKeys, the key store's
 * admin calls (server/data_keys.h), for the admin role. GetKeyStatus says
 * per master key whether it may leave the keyring (server/key_retire.h). */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "engram/v1/admin.pb-c.h"
#include "replica/replica.h"
#include "server/backup_chunk.h"
#include "server/convert.h"
#include "server/data_keys.h"
#include "server/key_retire.h"
#include "server/key_rotation.h"
#include "server/service.h"

/* The ids of the keys in kr, ascending, into ids (*n). */
static eg_err eg_keyring_ids(const eg_keyring *kr, uint32_t *ids, size_t *n) {
  uint8_t fp[EG_KEYRING_FINGERPRINT_MAX];
  size_t len = eg_keyring_fingerprint(kr, fp);
  eg_err e = eg_keyring_fingerprint_ids(fp, len, ids, EG_KEYRING_KEYS_MAX, n);
  for (size_t i = 1; !e && i < *n; i++) /* insertion sort: at most 200 */
    for (size_t j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
      uint32_t t = ids[j];
      ids[j] = ids[j - 1], ids[j - 1] = t;
    }
  return e;
}

/* The blind-index key id of a store without a blind-index row: the
 * lowest id its key fingerprint names (the keyring's when none is
 * recorded), as a retire check at start or reload takes it. */
static uint32_t eg_status_lowest_recorded(eg_req *r, const eg_keyring *kr) {
  uint8_t fp[EG_KEYRING_FINGERPRINT_MAX];
  size_t len = 0;
  uint32_t low = 0;
  if (eg_store_meta_get(r->srv->store, EG_META_KEY_FINGERPRINT, fp, sizeof fp, &len) == EG_OK)
    low = eg_fingerprint_lowest_id(fp, len);
  return low ? low : eg_keyring_blind_key_id(kr);
}

/* u's retirable and retire_blocker (server/key_retire.h) in r's arena. */
static eg_err eg_status_retire(eg_req *r, const eg_key_retire_facts *f,
                               Engram__V1__MasterKeyUse *u) {
  char why[384];
  u->retirable = eg_key_retirable(f, u->master_key_id, why, sizeof why);
  if (!u->retirable && !(u->retire_blocker = eg_arena_strndup(r->arena, why, strlen(why))))
    return EG_ENOMEM;
  return EG_OK;
}

/* master_keys: the keyring's keys and the store's, merged by id, each
 * with whether it may retire. */
static eg_err eg_status_masters(eg_req *r, const eg_master_key_use *uses, size_t n_uses,
                                Engram__V1__GetKeyStatusResponse *out) {
  uint32_t ring[EG_KEYRING_KEYS_MAX];
  size_t n_ring = 0, i = 0, j = 0;
  const eg_keyring *kr = eg_srv_keys(r->srv);
  eg_key_retire_facts f = {.uses = uses, .n_uses = n_uses,
                           .primary_in_use = eg_keyring_primary_id(kr)};
  eg_err e = eg_keyring_ids(kr, ring, &n_ring);
  if (e) return e;
  if ((e = eg_key_retire_facts_read(r->srv->store, eg_status_lowest_recorded(r, kr), &f))) {
    snprintf(r->msg, sizeof r->msg, "key jobs' state: %s", eg_err_msg(e));
    return e;
  }
  Engram__V1__MasterKeyUse *m = eg_arena_alloc(r->arena, (n_ring + n_uses) * sizeof *m);
  out->master_keys = eg_arena_alloc(r->arena, (n_ring + n_uses) * sizeof *out->master_keys);
  if (!m || !out->master_keys) e = EG_ENOMEM;
  while (!e && (i < n_ring || j < n_uses)) {
    Engram__V1__MasterKeyUse *u = &m[out->n_master_keys];
    engram__v1__master_key_use__init(u);
    if (j == n_uses || (i < n_ring && ring[i] < uses[j].master_key_id)) {
      u->master_key_id = ring[i++];
    } else {
      if (i < n_ring && ring[i] == uses[j].master_key_id) i++;
      u->master_key_id = uses[j].master_key_id;
      u->data_keys = uses[j++].data_keys;
    }
    u->primary = u->master_key_id == eg_keyring_primary_id(kr);
    u->in_keyring = eg_keyring_has(kr, u->master_key_id);
    e = eg_status_retire(r, &f, u);
    out->master_keys[out->n_master_keys++] = u;
  }
  eg_key_retire_facts_free(&f);
  return e;
}

static eg_err eg_get_key_status(eg_req *r, const ProtobufCMessage *msg) {
  Engram__V1__GetKeyStatusResponse *out =
      EG_ARENA_NEW(r->arena, Engram__V1__GetKeyStatusResponse);
  eg_master_key_use *uses = eg_arena_alloc(r->arena, EG_DATA_KEYS_MASTERS_MAX * sizeof *uses);
  eg_data_keys_stats st;
  if (!out || !uses) return EG_ENOMEM;
  engram__v1__get_key_status_response__init(out);
  eg_err e = eg_data_keys_status_all(r->srv->data_keys, &st, uses);
  if (e == EG_ELIMIT) {
    snprintf(r->msg, sizeof r->msg, "the key store's data keys are wrapped under %zu master "
             "keys; status lists at most %d", st.n_masters, EG_DATA_KEYS_MASTERS_MAX);
    return e;
  }
  if (e) {
    snprintf(r->msg, sizeof r->msg, "key store: %s", eg_err_msg(e));
    return e;
  }
  if ((e = eg_status_masters(r, uses, st.n_masters, out)) || (e = eg_key_rotation_status(r, out)))
    return e;
  out->data_keys = st.data_keys;
  out->erased_users = st.erased_users;
  r->resp = &out->base;
  return EG_OK;
}

/* A write of the key store, not of the data: it runs here, on the
 * primary only (replicas get it through the key store's own replication
 * channel), never through the writer. */
static eg_err eg_rewrap_keys(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__RewrapKeysRequest *in = (const void *)msg;
  Engram__V1__RewrapKeysResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__RewrapKeysResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__rewrap_keys_response__init(out);
  if (r->srv->repl && !eg_repl_is_primary(r->srv->repl)) {
    snprintf(r->msg, sizeof r->msg, "RewrapKeys writes the key store: call the primary (its "
             "replicas receive the rewrapped keys)");
    return EG_ENOTPRIMARY;
  }
  if (r->srv->repl && eg_repl_fenced(r->srv->repl)) {
    snprintf(r->msg, sizeof r->msg, "this node is fenced: retry on the new primary");
    return EG_EFENCED;
  }
  const eg_keyring *kr = eg_srv_keys(r->srv);
  out->primary_key_id = eg_keyring_primary_id(kr);
  eg_err e = eg_data_keys_rewrap(r->srv->data_keys, kr, in->max_keys, &out->rewrapped,
                                 &out->remaining);
  if (e == EG_EPRECOND)
    snprintf(r->msg, sizeof r->msg, "a data key is wrapped under a master key the keyring does "
             "not hold (the server log names it): put that key back in the keyring");
  else if (e == EG_ELIMIT)
    snprintf(r->msg, sizeof r->msg, "%llu keys rewrapped, but the data keys are wrapped under "
             "more than %d master keys: the keys remaining cannot be counted",
             (unsigned long long)out->rewrapped, EG_DATA_KEYS_MASTERS_MAX);
  else if (e)
    snprintf(r->msg, sizeof r->msg, "key store: %s (%llu keys rewrapped before)", eg_err_msg(e),
             (unsigned long long)out->rewrapped);
  if (e) return e;
  r->resp = &out->base;
  return EG_OK;
}

/* ---- BackupKeys --------------------------------------------------------------- */

/* The copy eg_repl_serve_copy_of streams: the key store, compacted. */
static eg_err eg_keys_copy(void *dk, const char *path, eg_store_file_info *info) {
  memset(info, 0, sizeof *info);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return EG_EIO;
  eg_err e = eg_data_keys_copy(dk, fd);
  if (close(fd) != 0 && !e) e = EG_EIO;
  if (e) unlink(path);
  return e;
}

/* The master keys the copy's data keys are wrapped under: a restore needs
 * a keyring holding each. Taken before the copy; a rewrap meanwhile may
 * add the primary's id to what the copy holds. */
static eg_err eg_keys_backup_ids(const eg_srv *srv, eg_backup_msg *b, char *msg,
                                 size_t msglen) {
  eg_master_key_use uses[EG_DATA_KEYS_MASTERS_MAX];
  eg_data_keys_stats st;
  eg_err e = eg_data_keys_status_all(srv->data_keys, &st, uses);
  if (e == EG_ELIMIT) {
    /* A list missing an id would let a restore start without that key. */
    snprintf(msg, msglen, "the key store's data keys are wrapped under %zu master keys; a "
             "backup lists at most %d", st.n_masters, EG_DATA_KEYS_MASTERS_MAX);
    return e;
  }
  if (e) {
    snprintf(msg, msglen, "key store: %s", eg_err_msg(e));
    return e;
  }
  for (size_t i = 0; i < st.n_masters; i++)
    b->key_ids[b->n_key_ids++] = uses[i].master_key_id;
  return EG_OK;
}

static int eg_keys_backups_max(const eg_srv *srv) { return EG_BACKUPS_MAX; }

static eg_stream_places eg_keys_backup_places = {.max = eg_keys_backups_max,
                                                 .what = "key store backups running"};

/* A consistent, compacted copy of the key store, streamed as Backup
 * streams the data store, within the same bounds (--call-timeout-ms a
 * chunk, --backup-max-ms the whole). Any node: a replica's key store is
 * its primary's up to the key changes it has applied. */
static eg_err eg_backup_keys(const eg_srv *srv, const char *tenant, struct grpc_call *call,
                             struct grpc_completion_queue *cq, char *msg, size_t msglen) {
  eg_backup_msg b;
  eg_stream_out out;
  eg_err e = eg_backup_stream_begin(srv, call, cq, &engram__v1__backup_keys_request__descriptor,
                                    &out, &b, msg, msglen);
  if (e || (e = eg_keys_backup_ids(srv, &b, msg, msglen))) return e;
  return eg_repl_serve_copy_of(srv->repl, 1, eg_keys_copy, srv->data_keys, eg_backup_chunk,
                               &b, eg_stream_send, eg_stream_check, &out, msg, msglen);
}

#define EG_KEYS_PATH(name) "/engram.v1.AdminService/" #name

const eg_method eg_keys_methods[] = {
    {.path = EG_KEYS_PATH(GetKeyStatus),
     .in = &engram__v1__get_key_status_request__descriptor,
     .role = EG_ROLE_ADMIN,
     .read = eg_get_key_status,
     .no_store = 1},
    /* A read in the table's terms (no data-store txn, not forwarded): it
     * writes the key store itself and refuses on a replica. */
    {.path = EG_KEYS_PATH(RewrapKeys),
     .in = &engram__v1__rewrap_keys_request__descriptor,
     .role = EG_ROLE_ADMIN,
     .read = eg_rewrap_keys,
     .no_store = 1},
    {.path = EG_KEYS_PATH(BackupKeys),
     .role = EG_ROLE_ADMIN,
     .stream = eg_backup_keys,
     .places = &eg_keys_backup_places},
    {.path = NULL},
};
