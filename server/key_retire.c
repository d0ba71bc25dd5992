/* Whether a master key may leave the keyring (server/key_retire.h). */
#include "server/key_retire.h"

#include <stdio.h>
#include <string.h>

#include "server/blind_key.h"
#include "server/key_rotation.h"
#include "storage/storage.h"

/* Live data keys wrapped under id, as f counted them. */
static uint64_t eg_retire_wraps(const eg_key_retire_facts *f, uint32_t id) {
  for (size_t i = 0; i < f->n_uses; i++)
    if (f->uses[i].master_key_id == id) return f->uses[i].data_keys;
  return 0;
}

/* Rule 2: 1 if the last rotation shows no format 1 token under id. */
static int eg_retire_tokens_gone(const eg_dk_rotation_rec *rot, uint32_t id, char *why,
                                 size_t whylen) {
  char master[EG_TOKEN_COUNT_KEY_MAX];
  if (!rot || rot->scope_tenant[0]) {
    snprintf(why, whylen, "field tokens of format 1 may be under key %u: %s: run engram admin "
             "keys rotate (every user) and wait until it is done", id,
             rot ? "the last data-key rotation was not of every user"
                 : "no data-key rotation of every user has run");
    return 0;
  }
  if (rot->running) {
    snprintf(why, whylen, "field tokens of format 1 may be under key %u: the data-key rotation "
             "of every user is running (%llu of %llu users done): wait until it is done "
             "(engram admin keys status)", id, (unsigned long long)rot->done,
             (unsigned long long)rot->total);
    return 0;
  }
  /* A rotation that never walked the users holding no data key (one an
   * older release ran, or left running past that phase: key_adopt.h) may
   * have missed their tokens. */
  if (rot->adopt_source < EG_USERS_SOURCES) {
    snprintf(why, whylen, "field tokens of format 1 may be under key %u: the last data-key "
             "rotation of every user did not walk the users holding no data key (it began "
             "before engramd 0.16): run engram admin keys rotate again and wait until it is "
             "done", id);
    return 0;
  }
  snprintf(master, sizeof master, "master:%u", id);
  for (size_t i = 0; i < rot->n_counts; i++) {
    const char *key = rot->counts[i]->key;
    uint64_t n = rot->counts[i]->tokens;
    if (n && strcmp(key, master) == 0) {
      snprintf(why, whylen, "the last data-key rotation of every user counted %llu field tokens "
               "of format 1 under key %u that it could not re-seal (they do not open; the log "
               "of that rotation names their records): delete or rewrite those records, then "
               "run engram admin keys rotate again", (unsigned long long)n, id);
      return 0;
    }
    if (n && strcmp(key, "other") == 0) {
      snprintf(why, whylen, "the last data-key rotation of every user counted %llu field tokens "
               "under keys it did not name one by one (more than %d keys): key %u may be among "
               "them", (unsigned long long)n, EG_TOKEN_COUNT_KEYS_MAX, id);
      return 0;
    }
  }
  return 1;
}

int eg_key_retirable(const eg_key_retire_facts *f, uint32_t id, char *why, size_t whylen) {
  uint64_t wraps = eg_retire_wraps(f, id);
  if (id == f->primary_in_use) {
    snprintf(why, whylen, "key %u is the primary of the keyring in use (new data keys are "
             "wrapped under it): make another key primary first, reload, then run engram admin "
             "keys rewrap", id);
    return 0;
  }
  if (wraps) {
    snprintf(why, whylen, "key %u still wraps %llu data keys: run engram admin keys rewrap", id,
             (unsigned long long)wraps);
    return 0;
  }
  if (!eg_retire_tokens_gone(f->rotation, id, why, whylen)) return 0;
  /* Records stamped 0 are under the legacy key until a rotation has
   * moved every one of them: while one runs. */
  int legacy = f->blind_target_key_id && id == f->blind_legacy_key_id;
  if (id == f->blind_key_id || id == f->blind_target_key_id || legacy) {
    snprintf(why, whylen, "the blind index (keyword search, filters) is under key %u: %s", id,
             id == f->blind_target_key_id ? "a blind-index rotation is moving it there"
             : f->blind_paused
                 ? "a paused blind-index rotation is moving it off this key: do what engram "
                   "admin keys status says, resume it (engram admin keys rotate-blind) and wait "
                   "until it is done"
             : f->blind_target_key_id
                 ? "a blind-index rotation is moving it off this key: wait until engram admin "
                   "keys status shows it done"
                 : "rotate the blind-index key to another key first (engram admin keys "
                   "rotate-blind)");
    return 0;
  }
  if (whylen) why[0] = '\0';
  return 1;
}

eg_err eg_key_retire_facts_read(eg_store *store, uint32_t lowest_recorded,
                                eg_key_retire_facts *f) {
  eg_txn *t = NULL;
  f->rotation = NULL;
  f->blind_key_id = f->blind_target_key_id = f->blind_legacy_key_id = 0;
  f->blind_paused = 0;
  eg_err e = eg_store_reader_new(store, &t);
  if (e == EG_OK && (e = eg_store_reader_begin(t)) == EG_OK) {
    eg_dk_rotation_rec *rot = NULL;
    eg_blind_keys k;
    /* No keyring: current (and legacy) 0 when there is no row. */
    e = eg_blind_keys_get(t, NULL, &k);
    if (!e) {
      f->blind_key_id = k.current;
      f->blind_target_key_id = k.target;
      f->blind_legacy_key_id = k.legacy;
      f->blind_paused = k.paused;
    }
    if (!e) {
      e = eg_store_dk_rotation_get(t, &rot);
      if (e == EG_ENOTFOUND) e = EG_OK;
      f->rotation = rot;
    }
    eg_store_reader_end(t);
  }
  if (t) eg_store_reader_free(t);
  if (!f->blind_key_id) f->blind_key_id = lowest_recorded;
  if (e) eg_key_retire_facts_free(f);
  return e;
}

/* f's data-key counts (uses: EG_DATA_KEYS_MASTERS_MAX of them). */
static eg_err eg_retire_count(eg_data_keys *dk, eg_master_key_use *uses, eg_key_retire_facts *f,
                              char *why, size_t whylen) {
  eg_data_keys_stats st;
  eg_err e = eg_data_keys_status_all(dk, &st, uses);
  if (e == EG_ELIMIT) {
    snprintf(why, whylen, "the key store's data keys are wrapped under %zu master keys, more "
             "than %d can be counted", st.n_masters, EG_DATA_KEYS_MASTERS_MAX);
    return e;
  }
  if (e) {
    snprintf(why, whylen, "cannot count the key store's data keys: %s", eg_err_msg(e));
    return e;
  }
  f->uses = uses;
  f->n_uses = st.n_masters;
  return EG_OK;
}

void eg_key_retire_facts_free(eg_key_retire_facts *f) {
  if (f->rotation)
    engram__storage__v1__data_key_rotation_record__free_unpacked(
        (eg_dk_rotation_rec *)f->rotation, NULL);
  f->rotation = NULL;
}

uint32_t eg_fingerprint_lowest_id(const uint8_t *fp, size_t len) {
  uint32_t ids[EG_KEYRING_KEYS_MAX], low = 0;
  size_t n = 0;
  if (eg_keyring_fingerprint_ids(fp, len, ids, EG_KEYRING_KEYS_MAX, &n) != EG_OK) return 0;
  for (size_t i = 0; i < n; i++)
    if (!low || ids[i] < low) low = ids[i];
  return low;
}

/* With no blind-index row the blind index is under the keyring's lowest
 * id (server/blind_key.h): a new key below the lowest id recorded would
 * move it, and every search would miss what was written before. Such a
 * keyring is refused until a blind-index rotation records the key. */
static eg_err eg_retire_blind_pinned(eg_store *store, const eg_keyring *keys, const uint8_t *fp,
                                     size_t len, char *why, size_t whylen) {
  uint32_t low = eg_fingerprint_lowest_id(fp, len), next = eg_keyring_blind_key_id(keys);
  if (!low || next >= low) return EG_OK;
  eg_key_retire_facts f;
  eg_err e = eg_key_retire_facts_read(store, 0, &f);
  if (e) {
    snprintf(why, whylen, "cannot read the blind-index key's row: %s", eg_err_msg(e));
    return e;
  }
  uint32_t row = f.blind_key_id; /* 0: no row */
  eg_key_retire_facts_free(&f);
  if (row) return EG_OK;
  snprintf(why, whylen, "key %u is below key %u, which the blind index (keyword search, "
           "filters) is under: with no blind-index rotation run yet, the lowest key id holds "
           "it, so adding key %u would make every search miss what was written before; give "
           "the new key an id above %u (after one engram admin keys rotate-blind the store "
           "records its key and any id may be added)", next, low, next, low);
  return EG_EPRECOND;
}

eg_err eg_key_retire_fit(eg_store *store, eg_data_keys *dk, const eg_keyring *keys,
                         uint32_t primary_in_use, const uint8_t *fp, size_t len,
                         uint32_t *retired, size_t cap, size_t *n, int *has_new, char *why,
                         size_t whylen) {
  uint32_t ids[EG_KEYRING_KEYS_MAX];
  uint8_t rest[EG_KEYRING_FINGERPRINT_MAX];
  size_t n_ids = 0, n_absent = 0, rest_len = len;
  if (n) *n = 0;
  if (eg_keyring_fingerprint_ids(fp, len, ids, EG_KEYRING_KEYS_MAX, &n_ids) != EG_OK) {
    snprintf(why, whylen, "the recorded key fingerprint is malformed (%zu bytes)", len);
    return EG_ECORRUPT;
  }
  memcpy(rest, fp, len);
  for (size_t i = 0; i < n_ids; i++)
    if (!eg_keyring_has(keys, ids[i])) {
      ids[n_absent++] = ids[i];
      rest_len = eg_keyring_fingerprint_drop(rest, rest_len, ids[i]);
    }
  if (n_absent) {
    /* Only when a key is absent: the count reads the whole key store. */
    eg_master_key_use uses[EG_DATA_KEYS_MASTERS_MAX];
    eg_key_retire_facts f = {.primary_in_use = primary_in_use};
    char blocker[384];
    eg_err e = eg_retire_count(dk, uses, &f, blocker, sizeof blocker);
    if (!e && (e = eg_key_retire_facts_read(store, eg_fingerprint_lowest_id(fp, len), &f)))
      snprintf(blocker, sizeof blocker, "cannot read the key jobs' state: %s", eg_err_msg(e));
    if (e) {
      snprintf(why, whylen, "key %u, which data here may be sealed with, is not in the keyring, "
               "and whether anything is under it is unknown: %s", ids[0], blocker);
      return e;
    }
    for (size_t i = 0; !e && i < n_absent; i++)
      if (!eg_key_retirable(&f, ids[i], blocker, sizeof blocker)) {
        /* blocker names the key (eg_key_retirable) */
        snprintf(why, whylen, "key %u, which data here may be sealed with, is not in the "
                 "keyring, and cannot leave it yet: %s", ids[i], blocker);
        e = EG_EPRECOND;
      }
    eg_key_retire_facts_free(&f);
    if (e) return e;
  }
  char differs[256];
  eg_err e = eg_keyring_fingerprint_check(keys, rest, rest_len, has_new, differs, sizeof differs);
  if (e) {
    snprintf(why, whylen, "%s (restore the keyring the data was written with)", differs);
    return e;
  }
  if ((e = eg_retire_blind_pinned(store, keys, fp, len, why, whylen))) return e;
  for (size_t i = 0; i < n_absent; i++)
    if (retired && n && i < cap) retired[(*n)++] = ids[i];
  return EG_OK;
}
