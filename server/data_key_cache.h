/*
 * The cache of opened data keys (server/data_keys.c): at most `max` keys,
 * least recently used evicted first, their bytes in sodium_malloc'd memory
 * (guard pages, never swapped, wiped when evicted, dropped or freed).
 *
 * An epoch guards against a stale fill: a caller that read a key from the
 * key store takes eg_dk_cache_epoch before the read and passes it to
 * eg_dk_cache_put, which stores nothing if a drop (an erasure, a replicated
 * change) came in between.
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
/* Caches (tenant, user, gen)'s key, marked current (the user's other
 * generations then are not) when current is 1; nothing when the epoch
 * moved since `epoch`. */
void eg_dk_cache_put(eg_dk_cache *c, uint64_t epoch, const char *tenant, const char *user,
                     uint32_t gen, int current, const uint8_t key[EG_KEY_LEN]);
/* Drops (and wipes) every key of (tenant, user), or of every user of
 * tenant when user is NULL, and moves the epoch. */
void eg_dk_cache_drop(eg_dk_cache *c, const char *tenant, const char *user);

/* Keys cached now. */
size_t eg_dk_cache_len(eg_dk_cache *c);

#endif
