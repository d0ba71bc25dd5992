/* The keyring's fingerprint check and its reload on SIGHUP
 * (server/keyring_reload.h). */
#include "server/keyring_reload.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "server/key_retire.h"
#include "server/reload.h"

eg_err eg_keyring_check_fingerprint(eg_store *store, eg_data_keys *dk, const eg_keyring *keys,
                                    uint32_t primary_in_use, const char *path, char *err,
                                    size_t errlen) {
  uint8_t fp[EG_KEYRING_FINGERPRINT_MAX];
  uint32_t retired[EG_KEYRING_KEYS_MAX];
  char why[768];
  size_t len = 0, n_retired = 0;
  int has_new = 1;
  eg_err e = eg_store_meta_get(store, EG_META_KEY_FINGERPRINT, fp, sizeof fp, &len);
  if (e == EG_OK) {
    e = eg_key_retire_fit(store, dk, keys, primary_in_use, fp, len, retired, EG_KEYRING_KEYS_MAX,
                          &n_retired, &has_new, why, sizeof why);
    if (e != EG_OK) {
      snprintf(err, errlen, "%.200s does not fit this data dir: %.760s", path, why);
      return e;
    }
  } else if (e == EG_ENOTFOUND && eg_store_last_lsn(store) > 0) {
    eg_log(EG_LOG_WARN, "this data dir predates key fingerprints: recording the keys of %s "
                        "without checking them against the data", path);
  } else if (e != EG_ENOTFOUND) {
    snprintf(err, errlen, "cannot read the key fingerprint (%s)", eg_err_msg(e));
    return e;
  }
  if (!has_new && !n_retired) return EG_OK;
  len = eg_keyring_fingerprint(keys, fp);
  e = eg_store_meta_put(store, EG_META_KEY_FINGERPRINT, fp, len);
  if (e != EG_OK) {
    snprintf(err, errlen, "cannot record the key fingerprint (%s)", eg_err_msg(e));
    return e;
  }
  for (size_t i = 0; i < n_retired; i++)
    eg_log(EG_LOG_INFO, "master key %u retired: nothing is under it (no data key wrapped under "
           "it, no field token, not the blind-index key); the key fingerprint no longer names "
           "it", (unsigned)retired[i]);
  return EG_OK;
}

/* The hook's state: main's alone (hooks run on main's thread). */
static struct {
  eg_srv *srv;
  char path[EG_CONFIG_PATH_MAX + 16];
  /* The keyrings reloads replaced, kept until exit (see the header). */
  const eg_keyring *retired[EG_KEYRING_RELOADS_MAX];
  size_t n_retired;
} eg_kr;

/* 1 if a and b hold the same keys (ids and check values) and primary. */
static int eg_keyring_same(const eg_keyring *a, const eg_keyring *b) {
  static uint8_t fa[EG_KEYRING_FINGERPRINT_MAX], fb[EG_KEYRING_FINGERPRINT_MAX];
  size_t na = eg_keyring_fingerprint(a, fa), nb = eg_keyring_fingerprint(b, fb);
  return na == nb && memcmp(fa, fb, na) == 0 &&
         eg_keyring_primary_id(a) == eg_keyring_primary_id(b);
}

static void eg_keyring_reload(void *arg) {
  (void)arg;
  char err[1024];
  eg_keyring *next = NULL;
  if (eg_keyring_load(eg_kr.path, &next, err, sizeof err) != EG_OK) {
    eg_log(EG_LOG_WARN, "keyring reload refused, keeping the keyring in use: %s", err);
    return;
  }
  /* A SIGHUP for the certificates or the tokens: nothing to swap, and no
   * reload of the bounded count spent. */
  if (eg_keyring_same(next, atomic_load(&eg_kr.srv->keys))) {
    eg_log(EG_LOG_INFO, "keyring %s unchanged: kept as it is", eg_kr.path);
    eg_keyring_free(next);
    return;
  }
  if (eg_kr.n_retired == EG_KEYRING_RELOADS_MAX) {
    eg_log(EG_LOG_WARN, "keyring reload refused: this process reloaded it %d times already "
           "(each keeps the old keyring for calls in flight); restart engramd to reload it",
           EG_KEYRING_RELOADS_MAX);
    eg_keyring_free(next);
    return;
  }
  /* The fingerprint is recorded before the swap: no token under a new key
   * exists before the store names that key. */
  const eg_keyring *cur = atomic_load(&eg_kr.srv->keys);
  if (eg_keyring_check_fingerprint(eg_kr.srv->store, eg_kr.srv->data_keys, next,
                                   eg_keyring_primary_id(cur), eg_kr.path, err,
                                   sizeof err) != EG_OK) {
    eg_log(EG_LOG_WARN, "keyring reload refused, keeping the keyring in use: %s", err);
    eg_keyring_free(next);
    return;
  }
  eg_kr.retired[eg_kr.n_retired++] =
      atomic_exchange_explicit(&eg_kr.srv->keys, next, memory_order_acq_rel);
  eg_log(EG_LOG_INFO, "keyring reloaded from %s: primary key id %u, blind-index key id %u",
         eg_kr.path, (unsigned)eg_keyring_primary_id(next),
         (unsigned)eg_keyring_blind_key_id(next));
}

eg_err eg_keyring_reload_register(eg_srv *srv, const char *path) {
  eg_kr.srv = srv;
  snprintf(eg_kr.path, sizeof eg_kr.path, "%s", path);
  return eg_reload_register(eg_keyring_reload, NULL) == 0 ? EG_OK : EG_ELIMIT;
}

void eg_keyring_reload_free(eg_srv *srv) {
  for (size_t i = 0; i < eg_kr.n_retired; i++) eg_keyring_free((eg_keyring *)eg_kr.retired[i]);
  eg_kr.n_retired = 0;
  if (srv) eg_keyring_free((eg_keyring *)atomic_exchange(&srv->keys, NULL));
}
