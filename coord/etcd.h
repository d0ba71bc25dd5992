/*
 * etcd: a minimal etcd v3 client over its gRPC API (the messages engramd
 * needs, copied wire-compatibly under proto/etcd/ with their license).
 *
 * One eg_etcd talks to a cluster given as endpoints; every call has a
 * deadline (the timeout given at eg_etcd_new) and goes to one endpoint at a
 * time: a call that fails with UNAVAILABLE or DEADLINE_EXCEEDED moves the
 * next call to the next endpoint, so a dead or stopped member (SIGSTOP
 * included: the deadline catches it) costs one call, not the cluster.
 * Errors: EG_EUNAVAIL when the endpoint cannot be reached or the deadline
 * passed; any other etcd error as EG_EIO; both with what etcd (or gRPC)
 * said in err. A failed compare is no error (eg_etcd_txn_create).
 * Arguments: an empty key, a bad endpoint or count is EG_EINVAL; a key or
 * value over the limits below (sent or received) is EG_ELIMIT; memory
 * running out is EG_ENOMEM.
 *
 * Thread safety: one eg_etcd is used by one thread at a time (the
 * coordinator's). Keys and values are bytes (not NUL-terminated).
 */
#ifndef EG_COORD_ETCD_H
#define EG_COORD_ETCD_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engram.h"

/* Most endpoints in one --coordinator URL. */
#define EG_ETCD_MAX_ENDPOINTS 9
/* Most keys one eg_etcd_range answers with; a prefix holding more is
 * EG_ELIMIT (the coordinator's prefix holds a leader, an epoch, a
 * leader_lsn and one key per node). */
#define EG_ETCD_RANGE_MAX 256
/* Longest key and value the client sends or accepts. */
#define EG_ETCD_KEY_MAX 512
#define EG_ETCD_VALUE_MAX 4096
/* Most puts in one eg_etcd_txn_create (an election puts the leader and
 * the epoch). */
#define EG_ETCD_TXN_PUTS_MAX 8

typedef struct eg_etcd eg_etcd;

/* Why the n bytes at s are not an endpoint HOST:PORT, or NULL when they
 * are: HOST a DNS name or IPv4 address (letters, digits, '.', '-', '_') or
 * an IPv6 address in brackets, PORT 1..65535. The one check of an
 * endpoint's shape (eg_etcd_new, --coordinator). */
const char *eg_etcd_endpoint_check(const char *s, size_t n);

/* endpoints: HOST:PORT strings (n of them, 1..EG_ETCD_MAX_ENDPOINTS);
 * over TLS from tls's files (read here, once) when tls is not NULL, else
 * plaintext. timeout_ms bounds every call. EG_EINVAL (with why in err)
 * for a bad endpoint or a TLS file that cannot be used (eg_client_new_tls).
 * Connects lazily: a cluster that is down is no error here. */
eg_err eg_etcd_new(const char *const *endpoints, size_t n, const eg_client_tls *tls,
                   int64_t timeout_ms, eg_etcd **out, char *err, size_t errlen);
void eg_etcd_free(eg_etcd *e);

/* The endpoint calls go to now (for messages). */
const char *eg_etcd_endpoint(const eg_etcd *e);

typedef struct {
  uint8_t *key, *value; /* owned by the eg_etcd_kvs they are in */
  size_t key_len, value_len;
  int64_t create_revision, mod_revision;
  int64_t lease; /* 0: none */
} eg_etcd_kv;

typedef struct {
  eg_etcd_kv *kvs;
  size_t n;
  int64_t revision; /* the store's revision the answer was read at */
} eg_etcd_kvs;
void eg_etcd_kvs_free(eg_etcd_kvs *kvs);

/* Every key starting with prefix (at most EG_ETCD_RANGE_MAX, else
 * EG_ELIMIT), sorted by key, linearizable. On failure *out is empty. */
eg_err eg_etcd_range_prefix(eg_etcd *e, const uint8_t *prefix, size_t prefix_len,
                            eg_etcd_kvs *out, char *err, size_t errlen);
/* Puts key = value, bound to lease (0: none). */
eg_err eg_etcd_put(eg_etcd *e, const uint8_t *key, size_t key_len, const uint8_t *value,
                   size_t value_len, int64_t lease, char *err, size_t errlen);
/* Deletes key (absent is no error). */
eg_err eg_etcd_delete(eg_etcd *e, const uint8_t *key, size_t key_len, char *err, size_t errlen);

/* One put of a transaction. */
typedef struct {
  const uint8_t *key, *value;
  size_t key_len, value_len;
  int64_t lease;
} eg_etcd_put_op;
/* One etcd transaction, the shape an election needs:
 *   if  the key `absent` does not exist (create_revision == 0)
 *   and the key `guard` has mod_revision == guard_rev (0: it does not exist)
 *   then do every put in puts (1 <= n_puts <= EG_ETCD_TXN_PUTS_MAX)
 * *succeeded says whether the compares held (and the puts were done);
 * a failed compare is EG_OK with *succeeded == 0. */
eg_err eg_etcd_txn_create(eg_etcd *e, const uint8_t *absent, size_t absent_len,
                          const uint8_t *guard, size_t guard_len, int64_t guard_rev,
                          const eg_etcd_put_op *puts, size_t n_puts, int *succeeded, char *err,
                          size_t errlen);

/* A lease of ttl_s seconds: *id and the TTL etcd granted (it may raise a
 * TTL below its minimum). */
eg_err eg_etcd_lease_grant(eg_etcd *e, int64_t ttl_s, int64_t *id, int64_t *granted_s, char *err,
                           size_t errlen);
/* Refreshes lease id once (a LeaseKeepAlive stream of its own: one
 * request, closed at once, and one answer within the timeout). *ttl_s gets the TTL etcd now counts down
 * from; <= 0 means the lease no longer exists (EG_OK: the call worked). */
eg_err eg_etcd_lease_keepalive(eg_etcd *e, int64_t id, int64_t *ttl_s, char *err, size_t errlen);
/* Revokes lease id, deleting every key bound to it (an unknown lease is
 * no error). */
eg_err eg_etcd_lease_revoke(eg_etcd *e, int64_t id, char *err, size_t errlen);

#endif
