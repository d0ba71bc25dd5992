/*
 * The keyring a running engramd uses, and its reload on SIGHUP.
 *
 * eg_srv.keys is an atomic pointer (eg_srv_keys reads it): a reload loads
 * --keyring again (or DATA_DIR/keyring), checks it against the key
 * fingerprint the store recorded exactly as start does
 * (eg_keyring_check_fingerprint), records the fingerprint again when the
 * file adds keys or leaves out a key nothing is under any more (a retired
 * key, server/key_retire.h), and then swaps the pointer. A keyring that
 * lacks a key the store recorded while something is still under it, or
 * holds another key under a recorded id, is refused (logged, the old one
 * kept). A keyring swapped out is kept until exit: a
 * call in flight may still hold it, and nothing tells when the last one
 * lets go.
 */
#ifndef EG_SERVER_KEYRING_RELOAD_H
#define EG_SERVER_KEYRING_RELOAD_H

#include <stddef.h>

#include "common/err.h"
#include "crypto/crypto.h"
#include "server/data_keys.h"
#include "server/service.h"
#include "storage/storage.h"

/* Reloads a process may do: each keeps the keyring it replaced (a few
 * pages of sodium_malloc'd memory) until exit, so their number is
 * bounded; past it a reload is refused (logged: restart to reload
 * again). */
#define EG_KEYRING_RELOADS_MAX 64

/* Checks keys (loaded from path) against the key fingerprint store
 * recorded, records it on a store's first start, and records it again when
 * keys holds ids it does not name (a key added for rotation) or lacks ids
 * it names that nothing is under any more (a key retired,
 * server/key_retire.h: the key store dk and the store's key jobs decide;
 * logged "master key N retired: nothing is under it"). primary_in_use:
 * the primary of the keyring in use (a reload; 0 at start), which never
 * retires. EG_EPRECOND (a recorded key differs, or is absent with
 * something under it: err names the key and what), or a store error, with
 * err saying why. Thread safety: takes LMDB's write lock to record (start,
 * before the writer thread, or main's SIGHUP: it holds no write txn). */
eg_err eg_keyring_check_fingerprint(eg_store *store, eg_data_keys *dk, const eg_keyring *keys,
                                    uint32_t primary_in_use, const char *path, char *err,
                                    size_t errlen);

/* Registers the SIGHUP hook (server/reload.h) that reloads srv->keys from
 * path (copied). EG_ELIMIT if the hooks are full. Thread safety: main,
 * before the signal can come. */
eg_err eg_keyring_reload_register(eg_srv *srv, const char *path);

/* Frees every keyring a reload replaced, and the current one of srv (NULL:
 * only the replaced). Thread safety: main, after every thread that reads
 * keys has stopped. */
void eg_keyring_reload_free(eg_srv *srv);

#endif
