/* The opened data keys' LRU cache: a chained hash on (tenant, user), a
 * recency list, key bytes in sodium_malloc'd slabs of slots. */
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "server/data_key_cache.h"
#include "storage/keystore.h"

/* Keys per sodium_malloc'd slab: each allocation costs guard pages, so
 * keys share them; a slab is allocated when its first slot is used. */
#define EG_DKC_SLAB 1024
#define EG_DKC_BUCKETS_MAX ((size_t)1 << 20)

typedef struct eg_dkc_entry {
  char tenant[EG_KEYSTORE_ID_MAX + 1];
  char user[EG_KEYSTORE_ID_MAX + 1];
  uint32_t gen;
  int current;
  size_t slot;                     /* where its key bytes are */
  struct eg_dkc_entry *prev, *next; /* recency: head is the most recent */
  struct eg_dkc_entry *hnext;       /* hash chain; free list when unused */
} eg_dkc_entry;

struct eg_dk_cache {
  pthread_mutex_t mu;
  size_t max, len, used_slots;
  uint64_t epoch;
  eg_dkc_entry **buckets;
  size_t nbuckets; /* a power of two */
  eg_dkc_entry *head, *tail;
  eg_dkc_entry *free; /* dropped entries, their slots kept */
  uint8_t **slabs;    /* max / EG_DKC_SLAB rounded up, each NULL until used */
};

static size_t dkc_hash(const eg_dk_cache *c, const char *tenant, const char *user) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a; the NUL separates the ids */
  for (const char *p = tenant;; p++) {
    h = (h ^ (uint8_t)*p) * 1099511628211ull;
    if (!*p) break;
  }
  for (const char *p = user; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ull;
  return (size_t)(h ^ (h >> 29)) & (c->nbuckets - 1);
}

static uint8_t *dkc_key(eg_dk_cache *c, size_t slot) {
  return c->slabs[slot / EG_DKC_SLAB] + (slot % EG_DKC_SLAB) * EG_KEY_LEN;
}

eg_err eg_dk_cache_new(size_t max, eg_dk_cache **out) {
  eg_dk_cache *c = calloc(1, sizeof *c);
  if (!c) return EG_ENOMEM;
  c->max = max ? max : 1;
  for (c->nbuckets = 16; c->nbuckets < c->max && c->nbuckets < EG_DKC_BUCKETS_MAX;)
    c->nbuckets <<= 1;
  c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
  c->slabs = calloc((c->max + EG_DKC_SLAB - 1) / EG_DKC_SLAB, sizeof *c->slabs);
  if (!c->buckets || !c->slabs || pthread_mutex_init(&c->mu, NULL) != 0) {
    free(c->buckets);
    free(c->slabs);
    free(c);
    return EG_ENOMEM;
  }
  *out = c;
  return EG_OK;
}

void eg_dk_cache_free(eg_dk_cache *c) {
  if (!c) return;
  for (eg_dkc_entry *e = c->head, *next; e; e = next) next = e->next, free(e);
  for (eg_dkc_entry *e = c->free, *next; e; e = next) next = e->hnext, free(e);
  for (size_t i = 0; i < (c->max + EG_DKC_SLAB - 1) / EG_DKC_SLAB; i++)
    sodium_free(c->slabs[i]); /* zeroes it */
  free(c->slabs);
  free(c->buckets);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

static void dkc_unlink_lru(eg_dk_cache *c, eg_dkc_entry *e) {
  if (e->prev) e->prev->next = e->next;
  else c->head = e->next;
  if (e->next) e->next->prev = e->prev;
  else c->tail = e->prev;
  e->prev = e->next = NULL;
}

static void dkc_push_front(eg_dk_cache *c, eg_dkc_entry *e) {
  e->prev = NULL;
  e->next = c->head;
  if (c->head) c->head->prev = e;
  c->head = e;
  if (!c->tail) c->tail = e;
}

static void dkc_unlink_hash(eg_dk_cache *c, eg_dkc_entry *e) {
  eg_dkc_entry **pp = &c->buckets[dkc_hash(c, e->tenant, e->user)];
  while (*pp != e) pp = &(*pp)->hnext;
  *pp = e->hnext;
  e->hnext = NULL;
}

/* Takes e out of the cache, its key wiped; the caller reuses or frees it. */
static void dkc_remove(eg_dk_cache *c, eg_dkc_entry *e) {
  dkc_unlink_lru(c, e);
  dkc_unlink_hash(c, e);
  sodium_memzero(dkc_key(c, e->slot), EG_KEY_LEN);
  c->len--;
}

/* The entry of (tenant, user, gen), or with gen 0 the user's current one. */
static eg_dkc_entry *dkc_find(eg_dk_cache *c, const char *tenant, const char *user,
                              uint32_t gen) {
  for (eg_dkc_entry *e = c->buckets[dkc_hash(c, tenant, user)]; e; e = e->hnext)
    if ((gen ? e->gen == gen : e->current) && strcmp(e->tenant, tenant) == 0 &&
        strcmp(e->user, user) == 0)
      return e;
  return NULL;
}

/* Copies a found entry's key out and makes it the most recent. */
static int dkc_hit(eg_dk_cache *c, eg_dkc_entry *e, uint32_t *gen, uint8_t key[EG_KEY_LEN]) {
  if (!e) return 0;
  memcpy(key, dkc_key(c, e->slot), EG_KEY_LEN);
  if (gen) *gen = e->gen;
  dkc_unlink_lru(c, e);
  dkc_push_front(c, e);
  return 1;
}

int eg_dk_cache_get(eg_dk_cache *c, const char *tenant, const char *user, uint32_t gen,
                    uint8_t key[EG_KEY_LEN]) {
  pthread_mutex_lock(&c->mu);
  int hit = gen && dkc_hit(c, dkc_find(c, tenant, user, gen), NULL, key);
  pthread_mutex_unlock(&c->mu);
  return hit;
}

int eg_dk_cache_has(eg_dk_cache *c, const char *tenant, const char *user, uint32_t gen) {
  pthread_mutex_lock(&c->mu);
  int hit = gen && dkc_find(c, tenant, user, gen) != NULL;
  pthread_mutex_unlock(&c->mu);
  return hit;
}

int eg_dk_cache_current(eg_dk_cache *c, const char *tenant, const char *user, uint32_t *gen,
                        uint8_t key[EG_KEY_LEN]) {
  pthread_mutex_lock(&c->mu);
  int hit = dkc_hit(c, dkc_find(c, tenant, user, 0), gen, key);
  pthread_mutex_unlock(&c->mu);
  return hit;
}

uint64_t eg_dk_cache_epoch(eg_dk_cache *c) {
  pthread_mutex_lock(&c->mu);
  uint64_t e = c->epoch;
  pthread_mutex_unlock(&c->mu);
  return e;
}

/* An entry with a slot for a new key: a dropped one, a fresh one while
 * slots remain, else the least recently used one (evicted). NULL when
 * out of memory. */
static eg_dkc_entry *dkc_take(eg_dk_cache *c) {
  eg_dkc_entry *e = c->free;
  if (e) {
    c->free = e->hnext;
    return e;
  }
  if (c->used_slots < c->max) {
    size_t slab = c->used_slots / EG_DKC_SLAB;
    if (!c->slabs[slab] && !(c->slabs[slab] = sodium_allocarray(EG_DKC_SLAB, EG_KEY_LEN)))
      return NULL;
    if (!(e = calloc(1, sizeof *e))) return NULL;
    e->slot = c->used_slots++;
    return e;
  }
  e = c->tail;
  dkc_remove(c, e);
  return e;
}

void eg_dk_cache_put(eg_dk_cache *c, uint64_t epoch, const char *tenant, const char *user,
                     uint32_t gen, int current, const uint8_t key[EG_KEY_LEN]) {
  if (strlen(tenant) > EG_KEYSTORE_ID_MAX || strlen(user) > EG_KEYSTORE_ID_MAX) return;
  pthread_mutex_lock(&c->mu);
  if (epoch != c->epoch) goto out;
  if (current)
    for (eg_dkc_entry *o = c->buckets[dkc_hash(c, tenant, user)]; o; o = o->hnext)
      if (strcmp(o->tenant, tenant) == 0 && strcmp(o->user, user) == 0) o->current = 0;
  eg_dkc_entry *e = dkc_find(c, tenant, user, gen);
  if (!e) {
    if (!(e = dkc_take(c))) goto out; /* uncached: the next call reads the store */
    strcpy(e->tenant, tenant);
    strcpy(e->user, user);
    e->gen = gen;
    e->current = 0;
    size_t b = dkc_hash(c, tenant, user);
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    c->len++;
  } else {
    dkc_unlink_lru(c, e);
  }
  e->current |= current;
  memcpy(dkc_key(c, e->slot), key, EG_KEY_LEN);
  dkc_push_front(c, e);
out:
  pthread_mutex_unlock(&c->mu);
}

void eg_dk_cache_drop(eg_dk_cache *c, const char *tenant, const char *user) {
  pthread_mutex_lock(&c->mu);
  c->epoch++;
  for (eg_dkc_entry *e = c->head, *next; e; e = next) {
    next = e->next;
    if (strcmp(e->tenant, tenant) != 0 || (user && strcmp(e->user, user) != 0)) continue;
    dkc_remove(c, e);
    e->hnext = c->free;
    c->free = e;
  }
  pthread_mutex_unlock(&c->mu);
}

size_t eg_dk_cache_len(eg_dk_cache *c) {
  pthread_mutex_lock(&c->mu);
  size_t n = c->len;
  pthread_mutex_unlock(&c->mu);
  return n;
}
