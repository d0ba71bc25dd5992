/*
 * storage: the users holding records, by name, for a data-key rotation of
 * every user (server/key_adopt.h): the distinct (tenant, user) prefixes of
 * sessions_by_user and memories_by_user, and the tenants holding store
 * items (store_namespaces; their records' key is the tenant's own, user
 * ""). Part of the storage API (storage.h includes this header); same
 * transaction rules.
 *
 * Checkpoints are not a source: their keys hold only a digest of the user
 * id (storage/checkpoints.h) and their records no user id, so a user is
 * not nameable from them.
 */
#ifndef EG_STORAGE_RECORD_USERS_H
#define EG_STORAGE_RECORD_USERS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct eg_txn eg_txn;

/* The sources, in the order a walk of every source takes them. */
enum { EG_USERS_SESSIONS = 0, EG_USERS_MEMORIES, EG_USERS_ITEMS, EG_USERS_SOURCES };

/* A position in one source: the key prefix of the user last visited
 * (u8len T | u8len U; for EG_USERS_ITEMS u8len T). */
#define EG_USERS_CURSOR_MAX (2 + 2 * 128)
typedef struct {
  uint8_t buf[EG_USERS_CURSOR_MAX];
  size_t len;
} eg_users_cursor;

/* Called per user; at is its position (valid during the call). Nonzero
 * stops the scan. */
typedef int (*eg_user_visit_fn)(void *arg, const char *tenant, const char *user,
                                const eg_users_cursor *at);

/* Visits each distinct user holding a key in source, in key order,
 * strictly after `after` (NULL or empty: from the first), only those of
 * tenant unless it is "", at most max of them (max 0: EG_EINVAL). *end is
 * set when no user follows the last one visited (the source is done).
 * Cost: one seek per user visited, however many records each holds:
 * O((max + 1) log n), never a walk of a user's records. EG_EINVAL for a
 * source out of range or an `after` longer than a position; EG_ECORRUPT
 * for a key not of the layout. */
eg_err eg_store_users_scan(eg_txn *t, unsigned source, const char *tenant,
                           const eg_users_cursor *after, size_t max, eg_user_visit_fn fn,
                           void *arg, int *end);

/* *holds: whether (tenant, user) holds a key in any source (user "": the
 * tenant's store items) and is not being erased (a DeleteUser's erasure
 * under way: eg_store_user_erasing). O(log n) per source. */
eg_err eg_store_user_holds(eg_txn *t, const char *tenant, const char *user, int *holds);

#endif
