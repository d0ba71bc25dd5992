/* Per-tenant limits: buckets, the concurrency count, the cached overrides
 * (server/limits.h). */
#include "server/limits.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

/* The longest RetryInfo delay a rate refusal names. */
#define EG_LIMIT_RETRY_MAX_US ((int64_t)3600 * 1000000)

/* ==== token bucket ========================================================== */

double eg_bucket_cap(double rate, int64_t burst_ms) {
  double cap = rate * (double)burst_ms / 1000.0;
  return cap < 1.0 ? 1.0 : cap;
}

int64_t eg_bucket_wait(eg_bucket *b, double rate, double cap, int64_t now_us) {
  if (rate <= 0) return 0;
  if (b->at_us == 0) {
    b->tokens = cap;
    b->at_us = now_us;
  } else if (now_us > b->at_us) {
    b->tokens += rate * (double)(now_us - b->at_us) / 1e6;
    b->at_us = now_us;
  }
  if (b->tokens > cap) b->tokens = cap; /* also after the rate was lowered */
  if (b->tokens >= 1.0) return 0;
  int64_t wait = (int64_t)ceil((1.0 - b->tokens) * 1e6 / rate);
  return wait < 1 ? 1 : wait;
}

/* ==== effective limits ====================================================== */

static const char *const eg_kind_names[EG_LIMIT_KINDS] = {"calls", "writes", "concurrent",
                                                          "storage"};

const char *eg_limit_kind_name(eg_limit_kind k) {
  return k < EG_LIMIT_KINDS ? eg_kind_names[k] : "?";
}

void eg_limits_resolve(const eg_config *cfg, const eg_tenant_limits_rec *rec,
                       eg_tenant_limits *out) {
  const int64_t def[EG_LIMIT_KINDS] = {cfg->tenant_calls_per_s, cfg->tenant_writes_per_s,
                                       cfg->tenant_concurrent_calls, cfg->tenant_storage_bytes};
  const Engram__Storage__V1__LimitOverride *o[EG_LIMIT_KINDS] = {
      rec ? rec->calls_per_second : NULL, rec ? rec->writes_per_second : NULL,
      rec ? rec->concurrent_calls : NULL, rec ? rec->storage_bytes : NULL};
  for (int i = 0; i < EG_LIMIT_KINDS; i++) {
    out->is_default[i] = o[i] == NULL;
    out->v[i] = o[i] ? o[i]->value : (double)def[i];
  }
}

/* ==== the table ============================================================= */

#define EG_LIMITS_SHARDS 64
#define EG_LIMITS_CHAINS 512 /* per shard */

static atomic_uint_fast64_t eg_refused_total[EG_LIMIT_KINDS];

struct eg_limit_hold {
  struct eg_limit_hold *next; /* in its chain */
  unsigned shard;
  char tenant[EG_STORE_ID_MAX + 1];
  eg_bucket calls, writes;
  int running;
  int64_t used_us; /* last admission: the least recently used idle entry goes first */
  uint64_t gen;    /* eg_store_tenant_limits_gen when lim was read; 0: never */
  eg_tenant_limits lim;
  uint64_t refused[EG_LIMIT_KINDS];
};

typedef struct {
  pthread_mutex_t mu;
  eg_limit_hold *chains[EG_LIMITS_CHAINS];
  size_t n;
} eg_shard;

struct eg_limits {
  const eg_config *cfg;
  eg_store *store;
  size_t n_shards, per_shard; /* entries a shard holds before it reuses idle ones */
  uint8_t hash_key[crypto_shorthash_KEYBYTES];
  eg_shard shards[EG_LIMITS_SHARDS];
};

eg_err eg_limits_new(const eg_config *cfg, eg_store *store, size_t max_tenants, eg_limits **out) {
  if (max_tenants == 0) return EG_EINVAL;
  eg_limits *l = calloc(1, sizeof *l);
  if (!l) return EG_ENOMEM;
  l->cfg = cfg;
  l->store = store;
  /* A small table (tests) is one shard, so its cap is exact. */
  l->n_shards = max_tenants < EG_LIMITS_SHARDS * 16 ? 1 : EG_LIMITS_SHARDS;
  l->per_shard = (max_tenants + l->n_shards - 1) / l->n_shards;
  /* Keyed: tenants cannot pick names that pile into one chain. */
  crypto_shorthash_keygen(l->hash_key);
  for (size_t i = 0; i < l->n_shards; i++) pthread_mutex_init(&l->shards[i].mu, NULL);
  *out = l;
  return EG_OK;
}

void eg_limits_free(eg_limits *l) {
  if (!l) return;
  for (size_t i = 0; i < l->n_shards; i++) {
    for (size_t c = 0; c < EG_LIMITS_CHAINS; c++) {
      eg_limit_hold *h = l->shards[i].chains[c];
      while (h) {
        eg_limit_hold *next = h->next;
        free(h);
        h = next;
      }
    }
    pthread_mutex_destroy(&l->shards[i].mu);
  }
  free(l);
}

static uint64_t eg_tenant_hash(const eg_limits *l, const char *tenant) {
  uint8_t h[crypto_shorthash_BYTES];
  uint64_t v;
  crypto_shorthash(h, (const unsigned char *)tenant, strlen(tenant), l->hash_key);
  memcpy(&v, h, sizeof v);
  return v;
}

/* The entry of tenant in its shard (locked), or NULL. */
static eg_limit_hold *eg_find(eg_shard *s, size_t chain, const char *tenant) {
  for (eg_limit_hold *h = s->chains[chain]; h; h = h->next)
    if (strcmp(h->tenant, tenant) == 0) return h;
  return NULL;
}

/* Unlinks and returns the shard's least recently used idle entry, or NULL. */
static eg_limit_hold *eg_evict(eg_shard *s) {
  eg_limit_hold **best = NULL;
  for (size_t c = 0; c < EG_LIMITS_CHAINS; c++)
    for (eg_limit_hold **p = &s->chains[c]; *p; p = &(*p)->next)
      if ((*p)->running == 0 && (!best || (*p)->used_us < (*best)->used_us)) best = p;
  if (!best) return NULL;
  eg_limit_hold *h = *best;
  *best = h->next;
  s->n--;
  return h;
}

/* The entry of tenant, made (or an idle one reused) if it has none; NULL
 * when memory ran out. Called with the shard locked. */
static eg_limit_hold *eg_entry(eg_limits *l, unsigned shard, size_t chain, const char *tenant) {
  eg_shard *s = &l->shards[shard];
  eg_limit_hold *h = eg_find(s, chain, tenant);
  if (h) return h;
  h = s->n >= l->per_shard ? eg_evict(s) : NULL;
  if (!h && !(h = malloc(sizeof *h))) return NULL;
  memset(h, 0, sizeof *h);
  h->shard = shard;
  snprintf(h->tenant, sizeof h->tenant, "%s", tenant);
  h->next = s->chains[chain];
  s->chains[chain] = h;
  s->n++;
  return h;
}

/* The tenant's limits as stored now, read in reader. */
static eg_err eg_read_limits(eg_limits *l, eg_txn *reader, const char *tenant,
                             eg_tenant_limits *out) {
  eg_tenant_limits_rec *rec = NULL;
  eg_err e = eg_store_reader_begin(reader);
  if (e) return e;
  e = eg_store_tenant_limits_get(reader, tenant, &rec);
  eg_store_reader_end(reader);
  if (e && e != EG_ENOTFOUND) return e;
  eg_limits_resolve(l->cfg, rec, out);
  if (rec) protobuf_c_message_free_unpacked(&rec->base, NULL);
  return EG_OK;
}

static void eg_refuse(eg_limit_hold *h, eg_limit_kind k) {
  h->refused[k]++;
  atomic_fetch_add_explicit(&eg_refused_total[k], 1, memory_order_relaxed);
}

eg_err eg_limits_admit(eg_limits *l, eg_txn *reader, const char *tenant, int write,
                       int64_t now_us, eg_limit_hold **hold, uint64_t *quota, int *retry_ms,
                       char *msg, size_t msglen) {
  uint64_t hv = eg_tenant_hash(l, tenant);
  unsigned shard = (unsigned)(hv % l->n_shards);
  size_t chain = (size_t)((hv / l->n_shards) % EG_LIMITS_CHAINS);
  eg_shard *s = &l->shards[shard];
  eg_tenant_limits fresh;
  uint64_t fresh_gen = 0;
  *hold = NULL;
  *retry_ms = 0;
  for (int pass = 0;; pass++) {
    uint64_t gen = eg_store_tenant_limits_gen(l->store);
    pthread_mutex_lock(&s->mu);
    eg_limit_hold *h = eg_entry(l, shard, chain, tenant);
    if (!h) {
      pthread_mutex_unlock(&s->mu);
      return EG_ENOMEM;
    }
    if (fresh_gen > h->gen) {
      /* A new rate starts with a full bucket: a raised limit holds at
       * once, not after the old one's debt refilled at the new rate. */
      if (fresh.v[EG_LIMIT_CALLS] != h->lim.v[EG_LIMIT_CALLS]) h->calls.at_us = 0;
      if (fresh.v[EG_LIMIT_WRITES] != h->lim.v[EG_LIMIT_WRITES]) h->writes.at_us = 0;
      h->lim = fresh;
      h->gen = fresh_gen;
    }
    if (h->gen != gen && pass == 0) {
      /* Read without the lock (a read may wait for a reader slot), then
       * look the entry up again: it may have been reused meanwhile. The
       * generation is taken before the read, so a change committed during
       * it is read again at the next call. */
      pthread_mutex_unlock(&s->mu);
      eg_err e = eg_read_limits(l, reader, tenant, &fresh);
      if (e) return e;
      fresh_gen = gen;
      continue;
    }
    const eg_tenant_limits *lim = &h->lim;
    double rc = lim->v[EG_LIMIT_CALLS], rw = write ? lim->v[EG_LIMIT_WRITES] : 0;
    double conc = lim->v[EG_LIMIT_CONCURRENT];
    int64_t burst = l->cfg->tenant_burst_ms;
    h->used_us = now_us;
    int64_t wait_c = eg_bucket_wait(&h->calls, rc, eg_bucket_cap(rc, burst), now_us);
    int64_t wait_w = eg_bucket_wait(&h->writes, rw, eg_bucket_cap(rw, burst), now_us);
    eg_err e = EG_OK;
    if (conc > 0 && h->running >= conc) {
      eg_refuse(h, EG_LIMIT_CONCURRENT);
      snprintf(msg, msglen, "tenant %s: %g concurrent calls exceeded; retry when one ends",
               tenant, conc);
      e = EG_ERATE;
    } else if (wait_c || wait_w) {
      int calls = wait_c >= wait_w;
      int64_t wait = calls ? wait_c : wait_w;
      eg_refuse(h, calls ? EG_LIMIT_CALLS : EG_LIMIT_WRITES);
      /* At most an hour: a tiny override rate (1e-7/s) would put years
       * in an int of milliseconds. */
      *retry_ms = (int)(wait >= EG_LIMIT_RETRY_MAX_US ? EG_LIMIT_RETRY_MAX_US / 1000
                                                      : (wait + 999) / 1000);
      snprintf(msg, msglen, "tenant %s: %g %s/s exceeded; retry in %d ms", tenant,
               calls ? rc : rw, calls ? "calls" : "writes", *retry_ms);
      e = EG_ERATE;
    } else {
      if (rc > 0) h->calls.tokens -= 1;
      if (rw > 0) h->writes.tokens -= 1;
      h->running++;
      *hold = h;
      *quota = (uint64_t)lim->v[EG_LIMIT_STORAGE];
    }
    pthread_mutex_unlock(&s->mu);
    return e;
  }
}

void eg_limits_release(eg_limits *l, eg_limit_hold *h) {
  if (!h) return;
  eg_shard *s = &l->shards[h->shard];
  pthread_mutex_lock(&s->mu);
  h->running--;
  pthread_mutex_unlock(&s->mu);
}

void eg_limits_count_quota(eg_limits *l, eg_limit_hold *h) {
  eg_shard *s = &l->shards[h->shard];
  pthread_mutex_lock(&s->mu);
  eg_refuse(h, EG_LIMIT_STORAGE);
  pthread_mutex_unlock(&s->mu);
}

void eg_limits_refused(eg_limits *l, const char *tenant, uint64_t out[EG_LIMIT_KINDS]) {
  uint64_t hv = eg_tenant_hash(l, tenant);
  eg_shard *s = &l->shards[hv % l->n_shards];
  pthread_mutex_lock(&s->mu);
  const eg_limit_hold *h = eg_find(s, (size_t)((hv / l->n_shards) % EG_LIMITS_CHAINS), tenant);
  for (int i = 0; i < EG_LIMIT_KINDS; i++) out[i] = h ? h->refused[i] : 0;
  pthread_mutex_unlock(&s->mu);
}

void eg_limits_refused_totals(uint64_t out[EG_LIMIT_KINDS]) {
  for (int i = 0; i < EG_LIMIT_KINDS; i++)
    out[i] = atomic_load_explicit(&eg_refused_total[i], memory_order_relaxed);
}
