/*
 * storage: the key-value store (StoreService): items under namespaces
 * (tuples of labels), per-namespace counts, and the items' expiry index.
 * Part of the storage API (storage.h includes this header); same
 * transaction rules.
 *
 * A namespace is encoded (ns-enc) as each label's bytes followed by 0x00,
 * then one more 0x00 that ends the namespace:
 *   ("a")      -> 'a' 00 00
 *   ("a","b")  -> 'a' 00 'b' 00 00
 *   ("ab")     -> 'a' 'b' 00 00
 * Labels are non-empty and hold no 0x00 byte (the server refuses NUL in
 * every string), so the 0x00s split the labels unambiguously and:
 *   - prefix: the labels of a prefix tuple P, each followed by 0x00 (no
 *     end byte: eg_store_ns_encode with whole 0), is a byte prefix of
 *     ns-enc(N) exactly when P is a leading run of N's labels. ("a") is a
 *     prefix of ("a","b") but not of ("ab"): 'a' 00 vs 'a' 'b'.
 *   - order: ns-enc order is the order of the label tuples compared label
 *     by label in byte order, a shorter tuple first (00 sorts below every
 *     label byte); ListNamespaces lists them so, straight from the keys.
 *
 * Key layout (u8len = one length byte; BE = big-endian; T = tenant):
 *   store_items       u8len T | ns-enc | key          -> StoreItemRecord
 *                     0x00 | expire_us u64 BE | u8len T | ns-enc | key -> ""
 *                     (the expiry index, one entry per item with a TTL,
 *                     across tenants by due time: the sweeper takes what is
 *                     due from its front. A tenant's range starts with its
 *                     length byte, never 0x00, so the two never mix. It
 *                     is an index of its own, not a sweep_due kind,
 *                     because a namespace and key do not fit a sweep_due
 *                     id of EG_STORE_ID_MAX bytes.)
 *   store_namespaces  u8len T | ns-enc -> count u64 BE | permanent u64 BE
 *                     (items stored under exactly that namespace, expired
 *                     ones not yet swept included, and how many of them
 *                     have no TTL: a namespace with one is live without
 *                     looking at its items)
 * eg_store_item_put and eg_store_item_delete keep both indexes in the same
 * txn as the record, so callers do nothing more.
 */
#ifndef EG_STORAGE_STORE_ITEMS_H
#define EG_STORAGE_STORE_ITEMS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engram/storage/v1/store_records.pb-c.h"

typedef Engram__Storage__V1__StoreItemRecord eg_item_rec;
typedef struct eg_txn eg_txn;

/* Labels in one namespace, and bytes in one label and one key. */
#define EG_STORE_NS_LABELS_MAX 16
#define EG_STORE_LABEL_MAX 128
#define EG_STORE_KEY_MAX 128
/* Bytes of all the labels of a namespace together: what makes the longest
 * expiry key (1 + 8 + 1 + tenant + ns-enc + key, ns-enc being the label
 * bytes plus one 0x00 per label and one more) fit LMDB's 511-byte keys. */
#define EG_STORE_NS_BYTES_MAX 228
/* The longest ns-enc. */
#define EG_STORE_NS_ENC_MAX (EG_STORE_NS_BYTES_MAX + EG_STORE_NS_LABELS_MAX + 1)

typedef struct {
  uint8_t buf[EG_STORE_NS_ENC_MAX];
  size_t len;
} eg_store_ns;

/* Encodes labels[0..n) into *out: whole 1 with the end byte (one
 * namespace; n >= 1), whole 0 without it (a prefix of namespaces; n may be
 * 0: every namespace). EG_EINVAL if n, a label's length (1 ..
 * EG_STORE_LABEL_MAX) or the total exceed the limits above, or a label
 * is empty. Thread safety: pure. */
eg_err eg_store_ns_encode(char *const *labels, size_t n, int whole, eg_store_ns *out);

/* Splits ns-enc[0..len) (whole, or a prefix) into its labels: copies them
 * NUL-terminated into buf (at least len bytes) and points labels[i] at
 * them, at most max. Returns how many, or -1 if enc is not an encoding
 * (an empty label, more than max). Thread safety: pure. */
int eg_store_ns_decode(const uint8_t *enc, size_t len, char *buf, char **labels, size_t max);

/* 1 if rec has an expiry that is due at now_us (expire_time_us <= now). */
static inline int eg_store_item_expired(const eg_item_rec *rec, int64_t now_us) {
  return rec->expire_time_us != 0 && rec->expire_time_us <= now_us;
}

/* The item stored under (ns, key), expired or not: EG_ENOTFOUND if there
 * is none; EG_ECORRUPT if it does not decode; EG_EINVAL for a key out of
 * the limits. */
eg_err eg_store_item_get(eg_txn *t, const char *tenant, const eg_store_ns *ns, const char *key,
                         eg_item_rec **out);

/* Stores rec under (ns, key). prev is the record stored there, read in
 * this txn, or NULL when there is none: the namespace's counts and the
 * expiry entry move from prev's to rec's. EG_EINVAL if rec's times are
 * negative or value_hashes are not strictly ascending. */
eg_err eg_store_item_put(eg_txn *t, const char *tenant, const eg_store_ns *ns, const char *key,
                         const eg_item_rec *rec, const eg_item_rec *prev);

/* Deletes the item prev (as stored, read in this txn) under (ns, key),
 * its expiry entry, and its share of the namespace's counts (the
 * namespace's entry goes with its last item). */
eg_err eg_store_item_delete(eg_txn *t, const char *tenant, const eg_store_ns *ns, const char *key,
                            const eg_item_rec *prev);

/* Where an item lies: its namespace (ns-enc, whole) and key, valid
 * during the visit. */
typedef struct {
  const uint8_t *ns;
  size_t ns_len;
  const char *key; /* NUL-terminated */
} eg_item_ref;

/* Called per item with its record (valid during the call only). Return
 * nonzero to stop. */
typedef int (*eg_item_visit_fn)(void *arg, const eg_item_ref *ref, const eg_item_rec *rec);
/* Visits the tenant's items whose namespace starts with prefix (whole:
 * one namespace; not whole: it and its children; len 0: all), in key
 * order (namespace, then key), expired ones included, at most max of
 * them: *more (may be NULL) is set when an item was left past max.
 * EG_ECORRUPT if a record does not decode. Cost: O(log n + visited). */
eg_err eg_store_items_scan(eg_txn *t, const char *tenant, const eg_store_ns *prefix, size_t max,
                           eg_item_visit_fn fn, void *arg, int *more);

/* Called per namespace (ns-enc, whole) with its counts. Return 0 to go
 * on, 1 to stop, 2 to go on from the first namespace at or after *seek
 * (set by the callee; ns-enc bytes, greater than ns). */
typedef int (*eg_ns_visit_fn)(void *arg, const uint8_t *ns, size_t len, uint64_t count,
                              uint64_t permanent, eg_store_ns *seek);
/* Visits the tenant's namespaces in ns-enc order (see above) from the
 * first at or after from (NULL: the first), while they start with within
 * (NULL: all). EG_ECORRUPT for a count of the wrong size. Cost: O(log n +
 * visited + seeks * log n). */
eg_err eg_store_namespaces_scan(eg_txn *t, const char *tenant, const eg_store_ns *from,
                                const eg_store_ns *within, eg_ns_visit_fn fn, void *arg);

/* The sweeper's share: deletes the items, of any tenant, whose expiry is
 * before before_us, oldest expiry first, at most max of them (with their
 * index entries and counts). *n gets how many went; *more is set when
 * such an item is left. Cost: O(log n + max). */
eg_err eg_store_items_expire(eg_txn *t, int64_t before_us, size_t max, uint64_t *n, int *more);

/* How many items, of any tenant, have an expiry before before_us, counted
 * no further than max (the sweeper's backlog) into *n. Cost: O(log n +
 * max). */
eg_err eg_store_items_expiring(eg_txn *t, int64_t before_us, size_t max, uint64_t *n);

#endif
