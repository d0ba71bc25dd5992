/*
 * The cache of opened data keys (server/data_keys.c): at most `max` keys,
 * least recently used evicted first, their bytes in sodium_malloc'd memory
 * (guard pages, never swapped, wiped when evicted, dropped or freed).
 *
 * An epoch guards against a stale fill: a caller that read a key from the
 * key store takes eg_dk_cache_epoch before the read and passes it to
 * eg_dk_cache_put, which stores nothing if a drop or a freeze (an erasure,
 * a rotation, a replicated change) came in between. A write that changes
 * which generations are live or current freezes the cache around its
 * commit: from before the commit until after it the cache holds none of
 * the user's keys and takes no fill, so no reader finds a key the commit
 * made stale.
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef EG_SERVER_DATA_KEY_CACHE_H
#define EG_SERVER_DATA_KEY_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "crypto/crypto.h"

typedef struct eg_dk_cache eg_dk_cache;

eg_err eg_dk_cache_new(size_t max, eg_dk_cache **out);
/* Wipes every key. NULL is fine. */
void eg_dk_cache_free(eg_dk_cache *c);

/* 1 and the key copied into key when (tenant, user, gen) is cached. */
int eg_dk_cache_get(eg_dk_cache *c, const char *tenant, const char *user, uint32_t gen,
                    uint8_t key[EG_KEY_LEN]);
/* 1 when (tenant, user, gen) is cached (its key is live). */
int eg_dk_cache_has(eg_dk_cache *c, const char *tenant, const char *user, uint32_t gen);
/* 1, the generation and the key when (tenant, user)'s current key is
 * cached. */
int eg_dk_cache_current(eg_dk_cache *c, const char *tenant, const char *user, uint32_t *gen,
                        uint8_t key[EG_KEY_LEN]);

uint64_t eg_dk_cache_epoch(eg_dk_cache *c);
/* Caches (tenant, user, gen)'s key, marked current (the user's older
 * generations then are not) when current is 1; nothing when the epoch
 * moved since `epoch` or the cache is frozen. A generation is never marked
 * current while the cache holds a higher one of the user. */
void eg_dk_cache_put(eg_dk_cache *c, uint64_t epoch, const char *tenant, const char *user,
                     uint32_t gen, int current, const uint8_t key[EG_KEY_LEN]);
/* Drops (and wipes) every key of (tenant, user), or of every user of
 * tenant when user is NULL, and moves the epoch. */
void eg_dk_cache_drop(eg_dk_cache *c, const char *tenant, const char *user);

/* Drops as eg_dk_cache_drop does, then takes no fill until the matching
 * eg_dk_cache_thaw (which moves the epoch again). Freezes nest. */
void eg_dk_cache_freeze(eg_dk_cache *c, const char *tenant, const char *user);
void eg_dk_cache_thaw(eg_dk_cache *c);

/* Keys cached now. */
size_t eg_dk_cache_len(eg_dk_cache *c);

#endif
