/*
 * Retiring a master key: whether a key id the store's key fingerprint
 * names may be absent from a keyring (at start, at a SIGHUP reload, and
 * on a replica for the fingerprint its primary sends), and GetKeyStatus's
 * MasterKeyUse.retirable / retire_blocker.
 *
 * A key may go only when nothing is under it:
 *   1. no live data key in the key store is wrapped under it (tombstones
 *      hold no key bytes): eg_data_keys_status;
 *   2. no field token of format 1 is under it: the last data-key rotation
 *      (key_jobs "data_keys", server/key_rotation.h) was of every user,
 *      has finished, and counted no "master:<id>" token (its final passes
 *      count only the format 1 tokens they could not re-seal, which do not
 *      open) and none under "other" (keys past the 64 it names). Nothing
 *      in engramd seals format 1 any more (crypto/crypto.h eg_token_seal
 *      has no caller in server/), so no token under the key appears after
 *      that count; a newer rotation of one tenant or user replaces the row
 *      and the key waits for the next rotation of every user;
 *   3. the blind index is not under it: the store's blind-index key id and
 *      the target of a blind-index rotation (server/blind_key.h) differ
 *      from it, and while a rotation runs so does the row's legacy key id
 *      (records stamped 0 are under it until the rotation has moved them;
 *      after the switch none is: server/blind_rotation.h, so the key a
 *      finished rotation moved off may retire). With no row the blind index is under the keyring's lowest
 *      id; taken here as the lowest id the fingerprint names, never the
 *      new keyring's, so removing the lowest key (which would silently
 *      move the blind index to the next one) is refused;
 *   and it is not the primary of the keyring in use (a reload: until the
 *   swap, new data keys are wrapped under that one).
 * Not seen by rule 2: users that hold no data key at all (format 1 tokens
 * only, never written since envelope keys); an all-user rotation does not
 * walk them (docs/security.md): rotate them by name first.
 *
 * When every absent key passes, the fingerprint is recorded again without
 * it (server/keyring_reload.c), logged "master key N retired: nothing is
 * under it"; otherwise the refusal names the key and the rule.
 */
#ifndef EG_SERVER_KEY_RETIRE_H
#define EG_SERVER_KEY_RETIRE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "crypto/crypto.h"
#include "server/data_keys.h"
#include "storage/storage.h"

/* What decides whether a key may retire, read at one moment. */
typedef struct {
  /* Live data keys per master key id (eg_data_keys_status). */
  const eg_master_key_use *uses;
  size_t n_uses;
  /* The data-key rotation's row; NULL when none ever ran. */
  const eg_dk_rotation_rec *rotation;
  /* The blind index's key id (no row: the fingerprint's lowest id), the
   * target of a blind-index rotation (0: none runs; a paused one keeps it), and the
   * key of records stamped 0 (the row's legacy_key_id); whether that
   * rotation is paused (it keeps those keys as a running one does). */
  uint32_t blind_key_id, blind_target_key_id, blind_legacy_key_id;
  int blind_paused;
  /* The primary of the keyring in use (0: none to protect). */
  uint32_t primary_in_use;
} eg_key_retire_facts;

/* 1 if key id may leave the keyring as f shows the store; else 0 with
 * why, naming the key and what is under it and what to run, e.g. "key 1
 * still wraps 12 data keys: run engram admin keys rewrap". */
int eg_key_retirable(const eg_key_retire_facts *f, uint32_t id, char *why, size_t whylen);

/* f's rotation and blind-index key ids as store holds them now (a read
 * txn of its own); lowest_recorded: the blind key id when the store has
 * no blind-index row. The rotation row is f's: eg_key_retire_facts_free.
 * A storage error, or EG_ECORRUPT for a row that does not decode. */
eg_err eg_key_retire_facts_read(eg_store *store, uint32_t lowest_recorded,
                                eg_key_retire_facts *f);
void eg_key_retire_facts_free(eg_key_retire_facts *f);

/* Checks keys against the key fingerprint fp[0..len) (this store's, or its
 * primary's on a replica): every key fp names is in keys with the same
 * check value, or absent and retirable by store's and dk's state (the
 * blind id with no row: the lowest id fp names). *retired (may be NULL):
 * ids fp names that keys lacks, each retirable, at most cap into it, *n
 * of them; *has_new: keys holds ids fp does not name. EG_EPRECOND with
 * why naming the key (absent with something under it, or different);
 * EG_ECORRUPT for a malformed fp; a storage error. Thread safety: any
 * thread (read txns of its own). retired and n may be NULL. */
eg_err eg_key_retire_fit(eg_store *store, eg_data_keys *dk, const eg_keyring *keys,
                         uint32_t primary_in_use, const uint8_t *fp, size_t len,
                         uint32_t *retired, size_t cap, size_t *n, int *has_new, char *why,
                         size_t whylen);

/* The lowest key id fingerprint fp[0..len) names (0: none or malformed). */
uint32_t eg_fingerprint_lowest_id(const uint8_t *fp, size_t len);

#endif
