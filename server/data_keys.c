/* Envelope keys: the policy over the key store (storage/keystore.h), the
 * wrapping (crypto/wrap.c) and the cache of opened keys
 * (server/data_key_cache.h). Contract in server/data_keys.h. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "server/data_key_cache.h"
#include "server/data_keys.h"
#include "storage/keystore.h"

/* Records one erasure, rewrap or batch of a scan handles per txn. */
#define EG_DK_BATCH 1000

struct eg_data_keys {
  eg_keystore *ks;
  eg_dk_cache *cache;
  /* Every write: a write reads the store then writes what it read says
   * (a new generation after the highest one), so two of them never
   * interleave; and an erasure's drop of the cache comes after its
   * commit, with no fill of a key it destroys in between (the epoch). */
  pthread_mutex_t write_mu;
  /* Under write_mu: a compaction is owed (keys were destroyed or
   * re-wrapped and no compaction has succeeded since). */
  int compact_due;
  /* The erasures under way (eg_data_keys_erasure_begin), which
   * eg_data_keys_rotate reads under write_mu. Its own mutex: an erasure
   * ends on whatever thread frees its call, never waiting for a key-store
   * commit. Taken after write_mu, never before. */
  pthread_mutex_t erasing_mu;
  eg_dk_erasure *erasing;
};

struct eg_dk_erasure {
  eg_dk_erasure *next; /* guarded by erasing_mu */
  eg_data_keys *dk;
  int whole_tenant;
  char tenant[EG_KEYSTORE_ID_MAX + 1], user[EG_KEYSTORE_ID_MAX + 1];
};

/* Ids are validated by callers; checked again here, where a longer one
 * would not fit the store's keys. */
static eg_err dk_check_ids(const char *tenant, const char *user) {
  if (!tenant || strlen(tenant) > EG_KEYSTORE_ID_MAX) return EG_EINVAL;
  if (user && strlen(user) > EG_KEYSTORE_ID_MAX) return EG_EINVAL;
  return EG_OK;
}

eg_err eg_data_keys_open(const char *dir, int64_t cache_max, eg_data_keys **out, char *err,
                         size_t errlen) {
  eg_data_keys *dk = calloc(1, sizeof *dk);
  if (!dk) return EG_ENOMEM;
  eg_err e = eg_keystore_open(dir, &dk->ks, err, errlen);
  if (!e && (e = eg_dk_cache_new(cache_max > 0 ? (size_t)cache_max : 1, &dk->cache)) != EG_OK)
    snprintf(err, errlen, "data key cache of %lld keys: out of memory", (long long)cache_max);
  if (!e && pthread_mutex_init(&dk->write_mu, NULL) != 0) e = EG_ENOMEM;
  if (!e && pthread_mutex_init(&dk->erasing_mu, NULL) != 0) {
    pthread_mutex_destroy(&dk->write_mu);
    e = EG_ENOMEM;
  }
  /* A process that died between an erasure's commit and its compaction
   * left the destroyed keys' wrapped bytes in free pages: compacted out
   * now, before anything is served (cost: one copy of the key store). */
  if (!e) e = eg_keystore_compact(dk->ks, err, errlen);
  if (e) {
    eg_dk_cache_free(dk->cache);
    eg_keystore_close(dk->ks);
    free(dk);
    return e;
  }
  *out = dk;
  return EG_OK;
}

void eg_data_keys_close(eg_data_keys *dk) {
  if (!dk) return;
  eg_dk_cache_free(dk->cache);
  eg_keystore_close(dk->ks);
  pthread_mutex_destroy(&dk->write_mu);
  pthread_mutex_destroy(&dk->erasing_mu);
  free(dk);
}

/* Unwraps rec's key: EG_EERASED for a tombstone, EG_ECORRUPT (why in err)
 * for a record that is malformed, under a master key kr lacks, or does
 * not open. */
static eg_err dk_unwrap(const eg_keyring *kr, const eg_key_rec *rec, uint8_t key[EG_KEY_LEN],
                        char *err, size_t errlen) {
  if (rec->wrapped_len == 0) return EG_EERASED;
  if (rec->wrapped_len != EG_WRAPPED_KEY_LEN) {
    snprintf(err, errlen, "data key %u of user '%s' of tenant '%s': malformed (%zu bytes)",
             rec->gen, rec->user, rec->tenant, rec->wrapped_len);
    return EG_ECORRUPT;
  }
  uint32_t id = eg_wrapped_key_master_id(rec->wrapped);
  if (!eg_keyring_has(kr, id)) {
    snprintf(err, errlen, "data key %u of user '%s' of tenant '%s' is wrapped under master key "
             "%u, which is not in the keyring", rec->gen, rec->user, rec->tenant, id);
    return EG_ECORRUPT;
  }
  if (eg_key_unwrap(kr, rec->tenant, rec->user, rec->gen, rec->wrapped, key) != EG_OK) {
    snprintf(err, errlen, "data key %u of user '%s' of tenant '%s' does not open under master "
             "key %u", rec->gen, rec->user, rec->tenant, id);
    return EG_ECORRUPT;
  }
  return EG_OK;
}

/* A new data key for (tenant, user) at gen, wrapped under kr's primary,
 * into rec; its bytes into key. */
static eg_err dk_new_key(const eg_keyring *kr, const char *tenant, const char *user,
                         uint32_t gen, eg_key_rec *rec, uint8_t key[EG_KEY_LEN]) {
  memset(rec, 0, sizeof *rec);
  strcpy(rec->tenant, tenant);
  strcpy(rec->user, user);
  rec->gen = gen;
  eg_random_bytes(key, EG_KEY_LEN);
  eg_err e = eg_key_wrap(kr, tenant, user, gen, key, rec->wrapped);
  rec->wrapped_len = EG_WRAPPED_KEY_LEN;
  rec->master_key_id = eg_keyring_primary_id(kr);
  rec->create_time_us = eg_now_us();
  return e;
}

/* Under write_mu: the current key of (tenant, user), made (generation
 * after the highest, durable) when the highest is absent or erased. */
static eg_err dk_current_locked(eg_data_keys *dk, const eg_keyring *kr, const char *tenant,
                                const char *user, uint32_t *gen, uint8_t key[EG_KEY_LEN]) {
  eg_key_rec rec;
  char why[256];
  uint64_t epoch = eg_dk_cache_epoch(dk->cache);
  eg_err e = eg_keystore_latest(dk->ks, tenant, user, &rec);
  if (e != EG_OK && e != EG_ENOTFOUND) return e;
  uint32_t next = e == EG_OK ? rec.gen + 1 : 1;
  if (e == EG_OK && rec.wrapped_len) {
    e = dk_unwrap(kr, &rec, key, why, sizeof why);
    if (e) eg_log(EG_LOG_ERROR, "%s", why);
  } else if (next == 0) {
    e = EG_ELIMIT; /* 2^32 - 1 generations */
  } else {
    e = dk_new_key(kr, tenant, user, next, &rec, key);
    if (!e) e = eg_keystore_put(dk->ks, &rec, 1);
  }
  if (e) {
    eg_memzero(key, EG_KEY_LEN);
    return e;
  }
  *gen = rec.gen;
  eg_dk_cache_put(dk->cache, epoch, tenant, user, rec.gen, 1, key);
  return EG_OK;
}

eg_err eg_data_key_current(eg_data_keys *dk, const eg_keyring *kr, const char *tenant,
                           const char *user, uint32_t *gen, uint8_t key[EG_KEY_LEN]) {
  eg_key_rec rec;
  char why[256];
  eg_err e = dk_check_ids(tenant, user);
  if (e || !user) return EG_EINVAL;
  if (eg_dk_cache_current(dk->cache, tenant, user, gen, key)) return EG_OK;
  /* Most misses find a live key: opened without the write lock. */
  uint64_t epoch = eg_dk_cache_epoch(dk->cache);
  e = eg_keystore_latest(dk->ks, tenant, user, &rec);
  if (e == EG_OK && rec.wrapped_len) {
    if ((e = dk_unwrap(kr, &rec, key, why, sizeof why)) != EG_OK) {
      eg_log(EG_LOG_ERROR, "%s", why);
      return e;
    }
    *gen = rec.gen;
    eg_dk_cache_put(dk->cache, epoch, tenant, user, rec.gen, 1, key);
    return EG_OK;
  }
  if (e != EG_OK && e != EG_ENOTFOUND) return e;
  pthread_mutex_lock(&dk->write_mu);
  e = dk_current_locked(dk, kr, tenant, user, gen, key);
  pthread_mutex_unlock(&dk->write_mu);
  return e;
}

eg_err eg_data_key_current_existing(eg_data_keys *dk, const eg_keyring *kr, const char *tenant,
                                    const char *user, uint32_t *gen, uint8_t key[EG_KEY_LEN]) {
  eg_key_rec rec;
  char why[256];
  if (dk_check_ids(tenant, user) || !user) return EG_EINVAL;
  if (eg_dk_cache_current(dk->cache, tenant, user, gen, key)) return EG_OK;
  uint64_t epoch = eg_dk_cache_epoch(dk->cache);
  eg_err e = eg_keystore_latest(dk->ks, tenant, user, &rec);
  if (e) return e;
  if (!rec.wrapped_len) return EG_EERASED;
  if ((e = dk_unwrap(kr, &rec, key, why, sizeof why)) != EG_OK) {
    eg_log(EG_LOG_ERROR, "%s", why);
    return e;
  }
  *gen = rec.gen;
  eg_dk_cache_put(dk->cache, epoch, tenant, user, rec.gen, 1, key);
  return EG_OK;
}

eg_err eg_data_key_latest(eg_data_keys *dk, const char *tenant, const char *user, uint32_t *gen) {
  eg_key_rec rec;
  if (dk_check_ids(tenant, user) || !user) return EG_EINVAL;
  eg_err e = eg_keystore_latest(dk->ks, tenant, user, &rec);
  if (e) return e;
  *gen = rec.gen;
  return rec.wrapped_len ? EG_OK : EG_EERASED;
}

eg_err eg_data_key_live(eg_data_keys *dk, const char *tenant, const char *user, uint32_t gen) {
  eg_key_rec rec;
  if (dk_check_ids(tenant, user) || !user) return EG_EINVAL;
  if (eg_dk_cache_has(dk->cache, tenant, user, gen)) return EG_OK;
  eg_err e = eg_keystore_get(dk->ks, tenant, user, gen, &rec);
  if (e) return e;
  return rec.wrapped_len ? EG_OK : EG_EERASED;
}

eg_err eg_data_key_get(eg_data_keys *dk, const eg_keyring *kr, const char *tenant,
                       const char *user, uint32_t gen, uint8_t key[EG_KEY_LEN], char *err,
                       size_t errlen) {
  eg_key_rec rec;
  if (dk_check_ids(tenant, user) || !user) {
    snprintf(err, errlen, "tenant or user id longer than %d bytes", EG_KEYSTORE_ID_MAX);
    return EG_EINVAL;
  }
  if (eg_dk_cache_get(dk->cache, tenant, user, gen, key)) return EG_OK;
  uint64_t epoch = eg_dk_cache_epoch(dk->cache);
  eg_err e = eg_keystore_get(dk->ks, tenant, user, gen, &rec);
  if (e == EG_ENOTFOUND) {
    snprintf(err, errlen, "the key store holds no data key %u of user '%s' of tenant '%s'", gen,
             user, tenant);
    return EG_ECORRUPT;
  }
  if (e) {
    snprintf(err, errlen, "key store: %s", eg_err_msg(e));
    return e;
  }
  if ((e = dk_unwrap(kr, &rec, key, err, errlen)) != EG_OK) return e;
  eg_dk_cache_put(dk->cache, epoch, tenant, user, gen, 0, key);
  return EG_OK;
}

/* ---- erasure ------------------------------------------------------------------ */

/* A batch of records a scan collects (live ones, or the ones a filter
 * picks), and where the scan resumes. */
typedef struct {
  eg_key_rec recs[EG_DK_BATCH];
  size_t n;
  uint32_t skip_master; /* rewrap: records already under it are not taken */
} eg_dk_batch;

static int dk_collect_live(void *arg, const eg_key_rec *rec) {
  eg_dk_batch *b = arg;
  if (!rec->wrapped_len || (b->skip_master && rec->master_key_id == b->skip_master)) return 0;
  b->recs[b->n++] = *rec;
  return b->n == EG_DK_BATCH;
}

/* Replaces every live key of the scan's range by a tombstone, batch by
 * batch; *destroyed counts them. Under write_mu. */
static eg_err dk_erase_locked(eg_data_keys *dk, const char *tenant, const char *user,
                              uint64_t *destroyed) {
  eg_dk_batch *b = malloc(sizeof *b);
  if (!b) return EG_ENOMEM;
  eg_err e = EG_OK;
  eg_key_rec after;
  int resumed = 0;
  *destroyed = 0;
  for (;;) {
    b->n = 0;
    b->skip_master = 0;
    int rc = eg_keystore_scan(dk->ks, tenant, user, resumed ? &after : NULL, dk_collect_live, b);
    if (rc < 0) {
      e = (eg_err)-rc;
      break;
    }
    if (!b->n) break;
    after = b->recs[b->n - 1];
    resumed = 1;
    int64_t now = eg_now_us();
    for (size_t i = 0; i < b->n; i++) {
      eg_key_rec *r = &b->recs[i];
      memset(r->wrapped, 0, sizeof r->wrapped);
      r->wrapped_len = 0;
      r->master_key_id = 0;
      r->erase_time_us = now;
    }
    if ((e = eg_keystore_put(dk->ks, b->recs, b->n)) != EG_OK) break;
    *destroyed += b->n;
  }
  free(b);
  return e;
}

/* Ends a write that left (changed) or may have left wrapped keys in the
 * file's free pages: compacts them out, or, if the write failed, owes the
 * compaction to the next write (a retried erasure destroys nothing new
 * and must still compact). The owed one is logged until it succeeds.
 * Returns e, or the compaction's error. Under write_mu. */
static eg_err dk_settle(eg_data_keys *dk, eg_err e, int changed) {
  if (changed) dk->compact_due = 1;
  if (e || !dk->compact_due) return e;
  char why[512];
  if ((e = eg_keystore_compact(dk->ks, why, sizeof why)) != EG_OK)
    eg_log(EG_LOG_ERROR, "%s", why);
  else
    dk->compact_due = 0;
  return e;
}

static eg_err dk_erase(eg_data_keys *dk, const char *tenant, const char *user,
                       uint64_t *destroyed) {
  pthread_mutex_lock(&dk->write_mu);
  /* From before the first tombstone's commit to after the last, no key of
   * theirs is cached: eg_data_key_live answers from the store. */
  eg_dk_cache_freeze(dk->cache, tenant, user);
  eg_err e = dk_erase_locked(dk, tenant, user, destroyed);
  eg_dk_cache_thaw(dk->cache);
  e = dk_settle(dk, e, *destroyed > 0);
  pthread_mutex_unlock(&dk->write_mu);
  return e;
}

eg_err eg_data_keys_erase_user(eg_data_keys *dk, const char *tenant, const char *user,
                               uint64_t *destroyed) {
  *destroyed = 0;
  if (dk_check_ids(tenant, user) || !user) return EG_EINVAL;
  return dk_erase(dk, tenant, user, destroyed);
}

eg_err eg_data_keys_erase_tenant(eg_data_keys *dk, const char *tenant, uint64_t *destroyed) {
  *destroyed = 0;
  if (dk_check_ids(tenant, NULL)) return EG_EINVAL;
  return dk_erase(dk, tenant, NULL, destroyed);
}

eg_err eg_data_keys_erasure_begin(eg_data_keys *dk, const char *tenant, const char *user,
                                  eg_dk_erasure **out) {
  if (dk_check_ids(tenant, user)) return EG_EINVAL;
  eg_dk_erasure *m = calloc(1, sizeof *m);
  if (!m) return EG_ENOMEM;
  m->dk = dk;
  m->whole_tenant = !user;
  strcpy(m->tenant, tenant);
  if (user) strcpy(m->user, user);
  pthread_mutex_lock(&dk->erasing_mu);
  m->next = dk->erasing;
  dk->erasing = m;
  pthread_mutex_unlock(&dk->erasing_mu);
  *out = m;
  return EG_OK;
}

void eg_data_keys_erasure_end(void *erasure) {
  eg_dk_erasure *m = erasure;
  if (!m) return;
  pthread_mutex_lock(&m->dk->erasing_mu);
  for (eg_dk_erasure **p = &m->dk->erasing; *p; p = &(*p)->next)
    if (*p == m) {
      *p = m->next;
      break;
    }
  pthread_mutex_unlock(&m->dk->erasing_mu);
  free(m);
}

eg_err eg_data_keys_erasure_hold(eg_data_keys *dk, eg_arena *a, const char *tenant,
                                 const char *user) {
  eg_dk_erasure *m;
  eg_err e = eg_data_keys_erasure_begin(dk, tenant, user, &m);
  if (e == EG_OK && eg_arena_defer(a, eg_data_keys_erasure_end, m) != 0) {
    eg_data_keys_erasure_end(m);
    e = EG_ENOMEM;
  }
  return e;
}

/* Whether an erasure of (tenant, user) is under way. */
static int dk_erasing(eg_data_keys *dk, const char *tenant, const char *user) {
  int found = 0;
  pthread_mutex_lock(&dk->erasing_mu);
  for (const eg_dk_erasure *m = dk->erasing; m && !found; m = m->next)
    found = strcmp(m->tenant, tenant) == 0 && (m->whole_tenant || strcmp(m->user, user) == 0);
  pthread_mutex_unlock(&dk->erasing_mu);
  return found;
}

/* ---- rotation ------------------------------------------------------------------ */

eg_err eg_data_keys_rotate(eg_data_keys *dk, const eg_keyring *kr, const char *tenant,
                           const char *user, uint32_t *gen) {
  eg_key_rec rec;
  uint8_t key[EG_KEY_LEN];
  if (dk_check_ids(tenant, user) || !user) return EG_EINVAL;
  pthread_mutex_lock(&dk->write_mu);
  eg_err e = eg_keystore_latest(dk->ks, tenant, user, &rec);
  uint32_t next = e == EG_OK ? rec.gen + 1 : 1;
  /* None yet: a user of format 1 tokens only gets its first data key. */
  int keyless = e == EG_ENOTFOUND;
  if (keyless) e = EG_OK;
  else if (!e && !rec.wrapped_len) e = EG_EERASED; /* never a key for an erased user */
  /* Nor for a keyless one being erased: its erasure destroyed no key and
   * may not have erased its records yet (eg_data_keys_erasure_begin). A
   * user with a live key needs no mark: its erasure destroys, under
   * write_mu, the key made here, or leaves the tombstone refused above. */
  if (!e && keyless && dk_erasing(dk, tenant, user)) e = EG_EERASED;
  if (!e && next == 0) e = EG_ELIMIT;
  if (!e) e = dk_new_key(kr, tenant, user, next, &rec, key);
  if (!e) {
    /* Frozen over the commit: a reader that read the old current before
     * it cannot cache that one as current after it. */
    eg_dk_cache_freeze(dk->cache, tenant, user);
    e = eg_keystore_put(dk->ks, &rec, 1);
    eg_dk_cache_thaw(dk->cache);
  }
  if (!e) {
    *gen = rec.gen;
    eg_dk_cache_put(dk->cache, eg_dk_cache_epoch(dk->cache), tenant, user, rec.gen, 1, key);
  }
  pthread_mutex_unlock(&dk->write_mu);
  eg_memzero(key, sizeof key);
  return e;
}

eg_err eg_data_keys_retire_before(eg_data_keys *dk, const char *tenant, const char *user,
                                  uint32_t current, uint64_t *retired) {
  eg_key_rec latest;
  eg_dk_batch *b;
  *retired = 0;
  if (dk_check_ids(tenant, user) || !user) return EG_EINVAL;
  if (!(b = malloc(sizeof *b))) return EG_ENOMEM;
  pthread_mutex_lock(&dk->write_mu);
  eg_err e = eg_keystore_latest(dk->ks, tenant, user, &latest);
  if (!e && !latest.wrapped_len) e = EG_EERASED;
  /* Tokens were re-sealed under `current`: under any other, some may still
   * be under a generation below it. */
  if (!e && latest.gen != current) e = EG_EABORTED;
  b->n = 0;
  b->skip_master = 0;
  int rc = e ? 0 : eg_keystore_scan(dk->ks, tenant, user, NULL, dk_collect_live, b);
  if (rc < 0) e = (eg_err)-rc;
  /* One scan batch: a user has one or two live generations normally; past
   * EG_DK_BATCH, the higher ones stay live until the next retire (live
   * keys nothing is sealed under: no loss). */
  size_t n = 0;
  int64_t now = eg_now_us();
  for (size_t i = 0; !e && i < b->n; i++) {
    eg_key_rec *r = &b->recs[i];
    if (r->gen >= current) continue;
    memset(r->wrapped, 0, sizeof r->wrapped);
    r->wrapped_len = 0;
    r->master_key_id = 0;
    r->erase_time_us = now;
    b->recs[n++] = *r;
  }
  if (!e && n) {
    eg_dk_cache_freeze(dk->cache, tenant, user);
    e = eg_keystore_put(dk->ks, b->recs, n);
    eg_dk_cache_thaw(dk->cache);
    if (!e) *retired = n;
  }
  e = dk_settle(dk, e, *retired > 0);
  pthread_mutex_unlock(&dk->write_mu);
  free(b);
  return e;
}

/* Users a scan of each_user collects per batch, and the one it is in. */
#define EG_DK_USERS_BATCH 256
typedef struct {
  char tenant[EG_KEYSTORE_ID_MAX + 1];
  char user[EG_KEYSTORE_ID_MAX + 1];
  uint32_t latest, oldest_live; /* oldest_live 0: none */
  int latest_live;
} eg_dk_user;
typedef struct {
  eg_dk_user users[EG_DK_USERS_BATCH];
  size_t n;  /* complete users */
  int open;  /* users[n] holds the user being read */
} eg_dk_users;

static int dk_collect_user(void *arg, const eg_key_rec *rec) {
  eg_dk_users *b = arg;
  eg_dk_user *u = &b->users[b->n];
  if (b->open && (strcmp(u->tenant, rec->tenant) != 0 || strcmp(u->user, rec->user) != 0)) {
    b->open = 0;
    if (++b->n == EG_DK_USERS_BATCH) return 1; /* this record's user starts the next batch */
    u = &b->users[b->n];
  }
  if (!b->open) {
    memset(u, 0, sizeof *u);
    strcpy(u->tenant, rec->tenant);
    strcpy(u->user, rec->user);
    b->open = 1;
  }
  u->latest = rec->gen;
  u->latest_live = rec->wrapped_len > 0;
  if (rec->wrapped_len && !u->oldest_live) u->oldest_live = rec->gen;
  return 0;
}

/* eg_data_keys_each_user, and with erased_too each erased user as well
 * (current_gen 0). */
static int dk_each_user(eg_data_keys *dk, int erased_too, eg_data_key_user_fn fn, void *arg) {
  eg_dk_users *b = malloc(sizeof *b);
  if (!b) return -(int)EG_ENOMEM;
  eg_key_rec after;
  int resumed = 0, stop = 0;
  /* In batches, fn called with no txn open: it may write (rotate, retire). */
  do {
    b->n = 0;
    b->open = 0;
    int rc = eg_keystore_scan(dk->ks, NULL, NULL, resumed ? &after : NULL, dk_collect_user, b);
    if (rc < 0) {
      stop = rc;
      break;
    }
    int more = rc == 1;
    if (b->open) b->n++; /* the scan ended inside the last user */
    for (size_t i = 0; i < b->n && !stop; i++) {
      const eg_dk_user *u = &b->users[i];
      if (u->latest_live || erased_too)
        stop = fn(arg, u->tenant, u->user, u->latest_live ? u->latest : 0, u->oldest_live);
    }
    if (!more || !b->n) break;
    memset(&after, 0, sizeof after);
    strcpy(after.tenant, b->users[b->n - 1].tenant);
    strcpy(after.user, b->users[b->n - 1].user);
    after.gen = UINT32_MAX; /* past every generation of that user */
    resumed = 1;
  } while (!stop);
  free(b);
  return stop;
}

int eg_data_keys_each_user(eg_data_keys *dk, eg_data_key_user_fn fn, void *arg) {
  return dk_each_user(dk, 0, fn, arg);
}

int eg_data_keys_each_known_user(eg_data_keys *dk, eg_data_key_user_fn fn, void *arg) {
  return dk_each_user(dk, 1, fn, arg);
}

/* ---- master keys: rewrap and status ----------------------------------------------- */

eg_err eg_data_keys_rewrap(eg_data_keys *dk, const eg_keyring *kr, uint64_t max, uint64_t *done,
                           uint64_t *remaining) {
  char why[256];
  uint8_t key[EG_KEY_LEN];
  eg_dk_batch *b = malloc(sizeof *b);
  if (!b) return EG_ENOMEM;
  uint32_t primary = eg_keyring_primary_id(kr);
  eg_key_rec after;
  int resumed = 0;
  eg_err e = EG_OK;
  *done = 0;
  *remaining = 0;
  /* write_mu per batch, not across the whole store: the serving of first
   * writes (a new user's key) and erasures waits for one batch at most. A
   * key erased between batches is a tombstone the next scan skips; one
   * made meanwhile is under primary already. */
  while (!e && (!max || *done < max)) {
    pthread_mutex_lock(&dk->write_mu);
    b->n = 0;
    b->skip_master = primary;
    int rc = eg_keystore_scan(dk->ks, NULL, NULL, resumed ? &after : NULL, dk_collect_live, b);
    if (rc < 0) e = (eg_err)-rc;
    if (!e && max && b->n > max - *done) b->n = (size_t)(max - *done);
    if (!e && b->n) {
      after = b->recs[b->n - 1];
      resumed = 1;
    }
    for (size_t i = 0; i < b->n && !e; i++) {
      eg_key_rec *r = &b->recs[i];
      if (!eg_keyring_has(kr, r->master_key_id)) {
        /* The operator's to fix (the old key back in the keyring), not the
         * store's: FAILED_PRECONDITION. */
        eg_log(EG_LOG_ERROR, "rewrap: data key %u of user '%s' of tenant '%s' is under master "
               "key %u, which is not in the keyring", r->gen, r->user, r->tenant,
               r->master_key_id);
        e = EG_EPRECOND;
        break;
      }
      if ((e = dk_unwrap(kr, r, key, why, sizeof why)) != EG_OK) {
        eg_log(EG_LOG_ERROR, "rewrap: %s", why);
        break;
      }
      e = eg_key_wrap(kr, r->tenant, r->user, r->gen, key, r->wrapped);
      r->master_key_id = primary;
    }
    eg_memzero(key, sizeof key);
    if (!e && b->n && (e = eg_keystore_put(dk->ks, b->recs, b->n)) == EG_OK) *done += b->n;
    int last = e || !b->n || (max && *done >= max);
    /* The keys wrapped under the old master key are gone from the file too
     * (one compaction, after the last batch): that key's leak later opens
     * nothing the store still holds. */
    if (last) e = dk_settle(dk, e, *done > 0);
    pthread_mutex_unlock(&dk->write_mu);
    if (last) break;
  }
  free(b);
  if (e) return e;
  eg_data_keys_stats st;
  eg_master_key_use uses[EG_DATA_KEYS_MASTERS_MAX];
  /* Counted only from a complete list: a master key past the cap would
   * be missing from `remaining`. */
  if ((e = eg_data_keys_status_all(dk, &st, uses)) != EG_OK) return e;
  for (size_t i = 0; i < st.n_masters; i++)
    if (uses[i].master_key_id != primary) *remaining += uses[i].data_keys;
  return EG_OK;
}

/* What a status scan counts. */
typedef struct {
  eg_data_keys_stats *st;
  eg_master_key_use *uses;
  size_t cap;
  char tenant[EG_KEYSTORE_ID_MAX + 1], user[EG_KEYSTORE_ID_MAX + 1];
  int latest_live, any; /* of the user being read */
} eg_dk_count;

static void dk_count_user_end(eg_dk_count *c) {
  if (c->any && !c->latest_live) c->st->erased_users++;
}

static void dk_count_master(eg_dk_count *c, uint32_t id) {
  size_t n = c->st->n_masters, i = 0;
  size_t have = n < c->cap ? n : c->cap;
  while (i < have && c->uses[i].master_key_id < id) i++;
  if (i < have && c->uses[i].master_key_id == id) {
    c->uses[i].data_keys++;
    return;
  }
  /* A new id, kept in order; past cap only counted in n_masters. */
  c->st->n_masters++;
  if (i >= c->cap) return;
  size_t move = (have < c->cap ? have : c->cap - 1) - i;
  memmove(&c->uses[i + 1], &c->uses[i], move * sizeof *c->uses);
  c->uses[i] = (eg_master_key_use){.master_key_id = id, .data_keys = 1};
}

static int dk_count(void *arg, const eg_key_rec *rec) {
  eg_dk_count *c = arg;
  if (!c->any || strcmp(c->tenant, rec->tenant) != 0 || strcmp(c->user, rec->user) != 0) {
    dk_count_user_end(c);
    strcpy(c->tenant, rec->tenant);
    strcpy(c->user, rec->user);
    c->any = 1;
  }
  c->latest_live = rec->wrapped_len > 0;
  if (rec->wrapped_len) {
    c->st->data_keys++;
    dk_count_master(c, rec->master_key_id);
  }
  return 0;
}

eg_err eg_data_keys_status(eg_data_keys *dk, eg_data_keys_stats *st, eg_master_key_use *uses,
                           size_t cap) {
  eg_dk_count *c = calloc(1, sizeof *c);
  if (!c) return EG_ENOMEM;
  memset(st, 0, sizeof *st);
  c->st = st;
  c->uses = uses;
  c->cap = cap;
  int rc = eg_keystore_scan(dk->ks, NULL, NULL, NULL, dk_count, c);
  dk_count_user_end(c);
  free(c);
  return rc < 0 ? (eg_err)-rc : EG_OK;
}

eg_err eg_data_keys_status_all(eg_data_keys *dk, eg_data_keys_stats *st,
                               eg_master_key_use uses[EG_DATA_KEYS_MASTERS_MAX]) {
  eg_err e = eg_data_keys_status(dk, st, uses, EG_DATA_KEYS_MASTERS_MAX);
  if (e == EG_OK && st->n_masters > EG_DATA_KEYS_MASTERS_MAX) e = EG_ELIMIT;
  return e;
}

/* ---- replication and backup ---------------------------------------------------- */

uint64_t eg_data_keys_version(eg_data_keys *dk) { return eg_keystore_version(dk->ks); }

eg_err eg_data_keys_changes(eg_data_keys *dk, uint64_t since, size_t max, eg_data_key_rec_fn fn,
                            void *arg, uint64_t *last) {
  return eg_keystore_changes(dk->ks, since, max, fn, arg, last);
}

static void dk_applied(void *arg, const eg_key_rec *rec) {
  eg_data_keys *dk = arg;
  eg_dk_cache_drop(dk->cache, rec->tenant, rec->user);
}

eg_err eg_data_keys_apply_batch(eg_data_keys *dk, const eg_key_change *ch, size_t n) {
  uint64_t replaced = 0;
  pthread_mutex_lock(&dk->write_mu);
  eg_err e = eg_keystore_apply(dk->ks, ch, n, dk_applied, dk, &replaced);
  e = dk_settle(dk, e, replaced > 0);
  pthread_mutex_unlock(&dk->write_mu);
  return e;
}

eg_err eg_data_keys_apply(eg_data_keys *dk, uint64_t version, const uint8_t *rec, size_t len) {
  eg_key_change ch = {.version = version, .rec = rec, .len = len};
  return eg_data_keys_apply_batch(dk, &ch, 1);
}

eg_err eg_data_keys_copy(eg_data_keys *dk, int fd) { return eg_keystore_copy(dk->ks, fd); }
