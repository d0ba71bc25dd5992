/*
 * Per-tenant limits (docs/operations.md, "Per-tenant limits"): token
 * buckets for calls/s and writes/s, a cap on calls running at once, and
 * the storage quota. Defaults come from --tenant-calls-per-s,
 * --tenant-writes-per-s, --tenant-concurrent-calls and
 * --tenant-storage-bytes (0: unlimited); a tenant's overrides live in the
 * tenant_limits DB (storage.h; written by SetTenantLimits through the
 * writer, replicated). Each node keeps its own buckets and counters: they
 * bound what one node does for a tenant.
 *
 * What they govern: the agent role's calls (the tenant's data plane).
 * Health and reflection (no role), the replication stream (a replica's
 * token is no tenant's traffic) and AdminService (the operator must always
 * be able to read and lift a limit) are never counted. A write reaching a
 * replica is forwarded before it is authorized there: the primary admits
 * it (and counts it) like its own.
 *
 * The in-memory state of each tenant is an entry of a hash table cut into
 * shards, each under its own mutex; the table holds at most max_tenants
 * entries: past it an idle entry (no call running) is reused, the least
 * recently used of its shard first (its buckets start full again, its
 * refusal counters at 0). An entry with calls running is never reused, so
 * past the cap the table only grows by entries whose calls run, which the
 * server's own caps bound.
 *
 * Overrides are cached in the entries, each stamped with the storage's
 * eg_store_tenant_limits_gen; an entry whose stamp is not the current one
 * reads its row again. The generation moves after every commit that
 * changed tenant_limits, a replica's applied log records included: a
 * replica enforces an override from the moment it applied it.
 */
#ifndef EG_SERVER_LIMITS_H
#define EG_SERVER_LIMITS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "server/config.h"
#include "storage/storage.h"

/* The most tenants whose state the table holds (idle ones are reused past it). */
#define EG_LIMITS_TENANTS_MAX 100000
/* The most an override may set: a rate (per s), concurrent calls, bytes. */
#define EG_LIMIT_RATE_MAX 100000000.0
/* The least nonzero rate: one call in 1000 s. Below it a refill wait
 * would not fit a RetryInfo delay (and 1e-300/s overflows it). */
#define EG_LIMIT_RATE_MIN 0.001
#define EG_LIMIT_CONCURRENT_MAX 1000000.0
#define EG_LIMIT_BYTES_MAX 4611686018427387904.0 /* 2^62 */

typedef enum {
  EG_LIMIT_CALLS = 0,  /* calls per second */
  EG_LIMIT_WRITES,     /* writes per second */
  EG_LIMIT_CONCURRENT, /* calls running at once */
  EG_LIMIT_STORAGE,    /* bytes stored */
  EG_LIMIT_KINDS
} eg_limit_kind;

/* ---- token bucket (pure) ---- */

/* A bucket of tokens refilled at a rate up to its capacity. at_us 0: not
 * used yet (full). */
typedef struct {
  double tokens;
  int64_t at_us;
} eg_bucket;

/* The capacity of a bucket of rate per s holding burst_ms of it: at least
 * one token, so that any rate > 0 lets a call through now and then. */
double eg_bucket_cap(double rate, int64_t burst_ms);

/* Refills b (rate per s, up to cap) to now_us and returns 0 if it holds
 * a token now (the caller takes it: b->tokens -= 1), else the
 * microseconds until it will (at least 1). rate 0: unlimited, always 0. A
 * clock that went back refills nothing. */
int64_t eg_bucket_wait(eg_bucket *b, double rate, double cap, int64_t now_us);

/* ---- effective limits ---- */

/* A tenant's limits: v[kind] (0: unlimited) and whether it is the server's
 * default (no override stored). */
typedef struct {
  double v[EG_LIMIT_KINDS];
  int is_default[EG_LIMIT_KINDS];
} eg_tenant_limits;

/* The flag's defaults with rec's overrides (rec may be NULL: none). Pure. */
void eg_limits_resolve(const eg_config *cfg, const eg_tenant_limits_rec *rec,
                       eg_tenant_limits *out);

/* ---- the table ---- */

typedef struct eg_limits eg_limits;
/* One tenant's entry, held by a call from its admission to its end. */
typedef struct eg_limit_hold eg_limit_hold;

eg_err eg_limits_new(const eg_config *cfg, eg_store *store, size_t max_tenants, eg_limits **out);
void eg_limits_free(eg_limits *l);

/* Admits one call of tenant (a write when write is set) at now_us (the
 * monotonic clock): takes a calls token (and a writes token), counts it
 * running, and gives its entry in *hold (eg_limits_release when the call
 * ends) and the tenant's storage quota in *quota (0: none). reader is an
 * idle read txn of the caller's, used when the tenant's overrides must be
 * read again. Refused: EG_ERATE with msg naming the limit and its value
 * ("tenant acme: 50 calls/s exceeded; retry in 20 ms") and *retry_ms the
 * time until the bucket holds a token (for the concurrency cap: 0, the
 * table's delay, as no one knows when a call ends); nothing taken. Else
 * as the read (EG_EREADERS, ...), nothing taken. Thread safety: any thread. */
eg_err eg_limits_admit(eg_limits *l, eg_txn *reader, const char *tenant, int write,
                       int64_t now_us, eg_limit_hold **hold, uint64_t *quota, int *retry_ms,
                       char *msg, size_t msglen);
/* The call admitted with h ended. NULL is fine. Thread safety: any thread. */
void eg_limits_release(eg_limits *l, eg_limit_hold *h);

/* A write of h's tenant refused for its quota: counted. */
void eg_limits_count_quota(eg_limits *l, eg_limit_hold *h);

/* Calls of tenant refused for each limit since this node started (or
 * since its entry was last reused): 0s for a tenant without an entry. */
void eg_limits_refused(eg_limits *l, const char *tenant, uint64_t out[EG_LIMIT_KINDS]);

/* Calls refused for each limit by every eg_limits of the process: the
 * engram_tenant_refused_total metric (by kind only: a tenant label would
 * give the scrape as many series as there are tenants, without bound).
 * Thread safety: any thread. */
void eg_limits_refused_totals(uint64_t out[EG_LIMIT_KINDS]);

/* The names of the kinds, as metrics label them ("calls", "writes",
 * "concurrent", "storage"). */
const char *eg_limit_kind_name(eg_limit_kind k);

#endif
