/*
 * storage: the LMDB engine. One env with named DBs, tenant-first keys that
 * sort the way they are read, protobuf-c records from
 * proto/engram/storage/v1. Knows nothing of gRPC and holds no key: the
 * fields it stores encrypted arrive already sealed. Of crypto/ it uses only
 * SHA-256 (eg_sha256), to digest the ids of checkpoint keys
 * (storage/checkpoints.h), which would not fit LMDB's keys whole.
 *
 * Key layout (u8len = one length byte; BE = big-endian):
 *   meta              "schema_version" -> u32 BE, "last_lsn", "epoch",
 *                     "erase_floor", "index_base_lsn" -> u64 BE,
 *                     "named:NAME" -> bytes
 *                     (eg_store_meta_get/put: store id, key fingerprint)
 *   sessions          u8len tenant | session_id                    -> SessionRecord
 *   sessions_by_user  u8len tenant | u8len user_id | create_us u64 BE | session_id -> ""
 *   messages          u8len tenant | u8len session_id | seq u64 BE -> MessageRecord
 *   idempotency       u8len tenant | u8len session_id | client_message_id -> seq u64 BE
 *   sessions_by_activity  u8len tenant | last_activity_us u64 BE | session_id -> ""
 *                     (the tenant's sessions by newest activity: read backwards)
 *   session_terms     u8len tenant | term u64 BE | session_id -> ""
 *                     (blind index: one entry per SessionRecord.metadata_hashes)
 *   sweep_due         u8 kind | u8len tenant | due_us u64 BE | id -> ""
 *                     (due work by time, kinds EG_SWEEP_*; id is a session
 *                     or memory id)
 *   retention         u8len tenant -> RetentionPolicyRecord
 *   wal               lsn u64 BE -> WalRecord (below)
 * and the memory DBs (storage/memories.h), the key-value store's
 * (storage/store_items.h), the message keyword index's
 * (storage/message_index.h). All of it, with the files of
 * the data dir: docs/architecture.md, "On disk".
 *
 * Transactions:
 *   - Readers: each worker owns one eg_txn from eg_store_reader_new() and
 *     brackets every request with eg_store_reader_begin/end (an LMDB read
 *     txn reset and renewed, MDB_NOTLS). Never hold one across requests.
 *   - Writer: exactly one thread opens write txns (engramd's writer, which
 *     also runs a replica's log apply and a promotion). The exception is
 *     start-up, before that thread exists: migrations and
 *     eg_store_meta_put commit their own. eg_store_write_begin,
 *     then any number of nested eg_store_sub_begin/commit/abort (one per
 *     request, so a failing request leaves the batch intact), then
 *     eg_store_write_commit, which assigns the next LSN and commits the
 *     whole batch: durable at once, or (defer_meta_sync) at the next flush.
 *   - Any write may return EG_EMAPFULL: abort the whole write txn, call
 *     eg_store_grow() and run the batch again.
 *
 * Errors from LMDB and the file system: EG_EMAPFULL (map full, grow),
 * EG_EREADERS (no reader slot left, see max_readers), EG_ETXNFULL (one txn
 * dirtied more pages than LMDB allows), EG_ENOSPC (ENOSPC or EDQUOT: the
 * disk is full; a commit that meets it logs one line on stderr, and the
 * next commit that gets through logs another), EG_ECORRUPT (a bad page:
 * the file is damaged), EG_ENOMEM, else EG_EIO.
 *
 * Records returned by *_get and handed to visitors are heap copies owned by
 * the caller; free them with the protobuf-c __free_unpacked(rec, NULL).
 */
#ifndef EG_STORAGE_H
#define EG_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engram/storage/v1/records.pb-c.h"

typedef Engram__Storage__V1__SessionRecord eg_session_rec;
typedef Engram__Storage__V1__MessageRecord eg_message_rec;
typedef Engram__Storage__V1__RetentionPolicyRecord eg_retention_rec;
typedef Engram__Storage__V1__TenantLimitsRecord eg_tenant_limits_rec;

#define EG_STORE_SCHEMA_VERSION 8
/* engram.v1.SessionState values, as stored (EXPIRED is derived, never stored). */
enum { EG_SSTATE_ACTIVE = 1, EG_SSTATE_ENDED = 2 };
/* Longest tenant, user id or session id the key layout accepts. */
#define EG_STORE_ID_MAX 128
/* Position in a user's session list: create_us u64 BE | session_id; in a
 * tenant's activity list: last_activity_us u64 BE | session_id. */
#define EG_SESSION_CURSOR_MAX (8 + EG_STORE_ID_MAX)
/* Most metadata_hashes one session may carry (a term index entry each). */
#define EG_SESSION_TERMS_MAX 64

typedef struct eg_store eg_store;
typedef struct eg_txn eg_txn;

typedef struct {
  size_t map_size;       /* initial LMDB map size in bytes; 0: 1 GiB */
  /* LMDB reader slots: one per eg_txn reader that has begun at least once
   * (it keeps its slot until freed), plus one per eg_store_copy and
   * eg_store_meta_get running. 0: LMDB's default of 126. Past it a begin
   * fails EG_EREADERS. engramd sizes it from --workers (server/main.c). */
  unsigned max_readers;
  /* The keyring file the process uses (may be NULL): lying in the data
   * dir, it says a store lived there (eg_store_open). */
  const char *keyring;
  /* One device flush per commit instead of two (engramd's --meta-sync
   * next-flush): commits write the meta page without waiting for it
   * (MDB_NOMETASYNC), and a commit becomes durable only at the next flush,
   * which is the next commit's data flush or eg_store_sync. Until then it
   * is visible to readers but eg_store_last_lsn does not name it. 0: every
   * commit is durable when eg_store_write_commit returns (two flushes). */
  int defer_meta_sync;
} eg_store_opts;

typedef struct {
  uint8_t buf[EG_SESSION_CURSOR_MAX];
  size_t len;
} eg_session_cursor;

/* ---- env ---------------------------------------------------------------- */

/* Opens (creating if needed) the env in dir, its named DBs, and checks or
 * writes the schema version (running numbered migrations). On failure
 * writes a reason naming the file into err.
 *   - dir is created mode 0700; an existing dir this user owns is
 *     tightened to 0700 (a line on stderr says so); one another user owns
 *     that others may read is refused (EG_EPERM).
 *   - dir/engram.id holds the store's id, also kept in its meta; it is
 *     written at the first open. A data.mdb that is missing or empty while
 *     engram.id, dir/keyring or opts->keyring (when it lies in dir) exists,
 *     or whose id differs from engram.id or is absent, is refused
 *     (EG_ECORRUPT): LMDB would otherwise start an empty store in place of
 *     the lost one. Starting empty on purpose takes removing engram.id and
 *     moving the keyring out of dir.
 *   - A data.mdb shorter than the pages its meta page counts (truncated)
 *     is refused (EG_ECORRUPT) before any page is read.
 * Thread safety: once. */
eg_err eg_store_open(const char *dir, const eg_store_opts *opts, eg_store **out,
                     char *err, size_t errlen);
/* The lock file of a data dir (eg_store_lock_dir). */
#define EG_STORE_LOCK_FILE "LOCK"
/* The staging dir of `engram backup restore` (backup/restore.c) inside a
 * data dir: while it exists a restore did not finish there, and the store
 * refuses to open (eg_store_open) rather than serve the old data or start
 * empty. */
#define EG_STORE_RESTORE_DIR "restore.partial"
/* A file in the staging dir, made durable before the restored data.mdb is
 * moved out of it into the data dir: with it and without a data.mdb, the
 * restore finished and only the staging dir's removal did not. */
#define EG_STORE_RESTORE_DONE "done"
/* Takes an exclusive lock on dir (flock on dir/LOCK, which then holds this
 * pid), creating dir as eg_store_open does, so two processes never serve
 * one store. *fd holds the lock until eg_store_unlock_dir or exit; it is
 * close-on-exec, so an exec of the same program can take it again.
 * EG_EPRECOND if another process holds it: err names its pid. */
eg_err eg_store_lock_dir(const char *dir, int *fd, char *err, size_t errlen);
void eg_store_unlock_dir(int fd);
/* Closes the env. No txn may be open. NULL is fine. */
void eg_store_close(eg_store *s);
/* LSN of the last durable write txn (0 for a fresh store): committed and
 * flushed, so it survives a power cut. With defer_meta_sync the last
 * commit may be newer (visible to readers, not yet durable); log scans,
 * eg_store_wait_lsn and every LSN handed out stop here.
 * Thread safety: any thread. */
uint64_t eg_store_last_lsn(const eg_store *s);
/* The LSN at which migration 4 built the lifecycle indexes from the data
 * (0: the store was created at version 4 or later, so every write logged
 * its index entries). Records up to it were logged without index entries:
 * two copies of one history hold the same indexes only if their values are
 * equal (a replica with another value is resynced from a snapshot, which
 * carries the primary's). Thread safety: any thread. */
uint64_t eg_store_index_base_lsn(const eg_store *s);
/* Current map size in bytes. Thread safety: any thread. */
size_t eg_store_map_size(const eg_store *s);
/* Doubles the map size. Waits until no reader is inside a txn, at most
 * 2 s: then EG_EMAPBUSY (a long read, an export or a backup copy, holds the
 * map; retry later). Call only from the writer thread with no write txn
 * open. */
eg_err eg_store_grow(eg_store *s);

/* ---- transactions ------------------------------------------------------- */

eg_err eg_store_reader_new(eg_store *s, eg_txn **out);
eg_err eg_store_reader_begin(eg_txn *r);
void eg_store_reader_end(eg_txn *r);
void eg_store_reader_free(eg_txn *r);

eg_err eg_store_write_begin(eg_store *s, eg_txn **out);
eg_err eg_store_sub_begin(eg_txn *parent, eg_txn **out);
eg_err eg_store_sub_commit(eg_txn *sub);
void eg_store_sub_abort(eg_txn *sub);
/* Bytes of log ops a write or sub txn made so far (a sub's merge into its
 * parent after its commit): about what its WAL record will hold. */
size_t eg_store_txn_log_bytes(const eg_txn *t);
/* Stores last_lsn + 1 in meta, commits, sets *lsn (may be NULL). The txn
 * is gone after the call, whatever it returns. Without defer_meta_sync
 * the commit is durable at return. With it, the commit's own flush makes
 * the previous commit durable (eg_store_last_lsn moves to it) and this one
 * waits for the next commit or eg_store_sync. A failed commit returns its
 * own failure; if the previous commit was still waiting, a failure that
 * may have been the flush (anything but LMDB refusing before any write:
 * EG_EMAPFULL, EG_ETXNFULL, no memory; or a page write finding the disk
 * full) also breaks the store as a failed eg_store_sync does (the previous
 * commit's writes then get EG_EBROKEN from it); otherwise the previous
 * commit still waits for a flush. */
eg_err eg_store_write_commit(eg_txn *w, uint64_t *lsn);
/* Makes every commit durable: one flush (mdb_env_sync) when one is not
 * yet, none otherwise; eg_store_last_lsn then names the last commit. A
 * failed flush is final: what reached the disk is unknown (a failed
 * write-back is reported once, so a retry would lie), so the store is
 * broken (eg_store_broken: every later txn fails EG_EBROKEN and engramd
 * restarts to serve what the disk holds) and this call and every later
 * one that has a commit to flush return EG_EBROKEN. Writer thread only. */
eg_err eg_store_sync(eg_store *s);
/* Whether the store was opened with defer_meta_sync. Thread safety: any. */
int eg_store_defers_meta_sync(const eg_store *s);
/* Device flushes the store's commits and syncs issued (two per commit
 * without defer_meta_sync: the data's and the meta page's; one with it,
 * plus each eg_store_sync that had a commit to flush). Thread safety: any. */
uint64_t eg_store_flushes(const eg_store *s);
void eg_store_write_abort(eg_txn *w);

/* ---- sessions ----------------------------------------------------------- */

/* EG_ENOTFOUND if absent; EG_ECORRUPT if the value does not decode. */
eg_err eg_store_session_get(eg_txn *t, const char *tenant, const char *session_id,
                            eg_session_rec **out);
/* Writes rec. prev is the session as stored, read in this txn (its
 * update_time_us, last_activity_us, metadata_hashes, state, end_time_us
 * and expire_time_us as read: they name the index entries to move), or
 * NULL for a new session: then EG_EEXIST if the id is taken, and the
 * sessions_by_user entry is added. user_id and create_time_us must not
 * change between puts of one session. */
eg_err eg_store_session_put(eg_txn *t, const char *tenant, const eg_session_rec *rec,
                            const eg_session_rec *prev);
/* The most messages (by rec->message_count, which counts every message
 * the session ever had) eg_store_session_delete takes in its one txn:
 * each message may carry EG_MESSAGE_TERMS_MAX postings, so the txn's log
 * record stays at a few MB, whatever the content. A bigger session is
 * retired instead (eg_store_session_retire), its messages purged by the
 * sweeper in bounded steps (eg_store_session_purge_step). */
#define EG_SESSION_DELETE_INLINE_MAX 64
/* Removes the session, its index entry, its messages with their postings,
 * and idempotency keys, in t. EG_EINVAL when rec->message_count is above
 * EG_SESSION_DELETE_INLINE_MAX. *deleted_messages (may be NULL) gets the
 * number of messages removed. */
eg_err eg_store_session_delete(eg_txn *t, const char *tenant, const eg_session_rec *rec,
                               uint64_t *deleted_messages);

/* The sweeper's first step on a session past retention, and DeleteSession
 * of one above EG_SESSION_DELETE_INLINE_MAX messages: in one txn the
 * record goes with its sessions_by_user, sessions_by_activity,
 * session_terms and sweep_due entries, so every read finds no session from
 * then on, whatever the retention policy becomes. Its messages and
 * idempotency keys stay, under a kind EG_SWEEP_SESSION_PURGE entry due at
 * now_us, for eg_store_session_purge_step (a session without messages goes
 * whole). EG_ENOTFOUND if there is no record. Cost: O(log n + terms). */
eg_err eg_store_session_retire(eg_txn *t, const char *tenant, const char *session_id,
                               int64_t now_us);
/* Deletes messages (lowest seq first, with their postings and
 * idempotency keys) of a retired session whose EG_SWEEP_SESSION_PURGE
 * entry is due at due_us, at most max messages and max_keys keys, as
 * eg_store_messages_delete_before counts them (*keys, not NULL, in and
 * out; *n and *more may be NULL); the step that deletes the last one drops
 * the entry. Should a session record of that id exist, the entry goes and
 * its messages stay. Cost: O(log n + max * EG_MESSAGE_TERMS_MAX). */
eg_err eg_store_session_purge_step(eg_txn *t, const char *tenant, const char *session_id,
                                   int64_t due_us, size_t max, uint64_t max_keys,
                                   uint64_t *keys, uint64_t *n, int *more);
/* *purging: the id has no session record but messages left, i.e. a
 * retired session is still being purged (a new session of that id would
 * see them). Cost: O(log n). */
eg_err eg_store_session_purging(eg_txn *t, const char *tenant, const char *session_id,
                                int *purging);

/* Called per session, newest first. rec is the callee's to free or keep.
 * cur is this record's position (valid during the call). Return nonzero
 * to stop. */
typedef int (*eg_session_visit_fn)(void *arg, eg_session_rec *rec,
                                   const eg_session_cursor *cur);
/* The time a cursor of either scan below is at: the session's create time
 * (eg_store_sessions_scan) or last activity (..._by_activity_scan). */
int64_t eg_session_cursor_time_us(const eg_session_cursor *cur);

/* Visits user_id's sessions newest first (by create time, then id),
 * starting strictly after `after` (NULL: from the newest). EG_EINVAL if
 * `after` has a length no cursor has; its bytes are not checked (other
 * bytes only move where the walk starts). Cost: O(log n + visited). */
eg_err eg_store_sessions_scan(eg_txn *t, const char *tenant, const char *user_id,
                              const eg_session_cursor *after, eg_session_visit_fn fn,
                              void *arg);

/* ---- messages ----------------------------------------------------------- */

/* Writes rec under rec->seq; with a client_message_id, also its
 * idempotency key; when rec->index_version is not 0, its keyword postings
 * and index stats (storage/message_index.h: index_terms at most
 * EG_MESSAGE_TERMS_MAX, index_tf one byte per term, index_user_id set,
 * else EG_EINVAL). */
eg_err eg_store_message_put(eg_txn *t, const char *tenant, const char *session_id,
                            const eg_message_rec *rec);
/* The bytes eg_store_message_put(t, tenant, session_id, rec) adds to its
 * txn's log record (which a replica receives whole), postings included,
 * into *len; not the few the session's sweep entry and the index stats
 * add.
 * EG_EINVAL for an id the keys refuse. Reads nothing. */
eg_err eg_store_message_put_len(const eg_store *s, const char *tenant, const char *session_id,
                                const eg_message_rec *rec, size_t *len);
eg_err eg_store_message_get(eg_txn *t, const char *tenant, const char *session_id,
                            uint64_t seq, eg_message_rec **out);
/* Seq of the message appended with client_message_id, or EG_ENOTFOUND. */
eg_err eg_store_idem_get(eg_txn *t, const char *tenant, const char *session_id,
                         const char *client_message_id, uint64_t *seq);

/* Called per message; rec is the callee's. Return nonzero to stop. */
typedef int (*eg_message_visit_fn)(void *arg, eg_message_rec *rec);
/* Visits the session's messages from start_seq: ascending visits
 * seq >= start_seq; descending visits seq <= start_seq (UINT64_MAX for the
 * newest). Cost: O(log n + visited). */
eg_err eg_store_messages_scan(eg_txn *t, const char *tenant, const char *session_id,
                              uint64_t start_seq, int descending,
                              eg_message_visit_fn fn, void *arg);
/* eg_store_messages_scan with each record decoded through alloc (a
 * caller's arena: a page of records then costs no malloc and no free,
 * where each record is otherwise several). A record decoded so is
 * alloc's: the callee must not free it. alloc NULL: as
 * eg_store_messages_scan. */
eg_err eg_store_messages_scan_in(eg_txn *t, const char *tenant, const char *session_id,
                                 uint64_t start_seq, int descending, ProtobufCAllocator *alloc,
                                 eg_message_visit_fn fn, void *arg);

/* ---- lifecycle: activity, metadata terms, due work, retention --------------
 *
 * The indexes below are kept by the writers above in the same txn, from
 * the stored record before (for eg_store_session_put, the caller's prev)
 * and after the write, so callers do nothing more:
 *   - eg_store_session_put/delete: sessions_by_activity (key
 *     last_activity_us, stored as max(rec->update_time_us,
 *     rec->last_activity_us): an append, which puts its session with a new
 *     update_time_us, moves it), session_terms (rec->metadata_hashes:
 *     sorted, unique, at most EG_SESSION_TERMS_MAX, else EG_EINVAL) and
 *     sweep_due kind EG_SWEEP_SESSION_GONE; a delete also drops the
 *     session's EG_SWEEP_SESSION_MESSAGES entry.
 *   - eg_store_session_retire / eg_store_session_purge_step: kind
 *     EG_SWEEP_SESSION_PURGE.
 *   - eg_store_message_put and eg_store_messages_delete_before: kind
 *     EG_SWEEP_SESSION_MESSAGES, due at the create time of the session's
 *     oldest remaining message (the lowest seq).
 *   - eg_store_memory_put/purge: kinds EG_SWEEP_MEMORY_TOMBSTONE and
 *     EG_SWEEP_MEMORY_EXPIRE; put stores MemoryRecord.state_time_us (the
 *     record's update_time_us when the state changes or the memory is new,
 *     else the previous value, or the previous update_time_us for a record
 *     stored before state_time_us existed).
 *   - eg_store_user_erase_step removes them with the user's data.
 * Times must not be negative (EG_EINVAL): they are u64 in keys.
 */

/* sweep_due kinds: when the item stopped being live (a sweeper adds the
 * tenant's retention to it). */
enum {
  /* An ENDED session at end_time_us (update_time_us if 0), or an ACTIVE
   * one at expire_time_us (none when it is 0). */
  EG_SWEEP_SESSION_GONE = 1,
  /* A session's oldest remaining message, at its create_time_us. */
  EG_SWEEP_SESSION_MESSAGES = 2,
  /* A DELETED, DUPLICATE or SUPERSEDED memory, at state_time_us. */
  EG_SWEEP_MEMORY_TOMBSTONE = 3,
  /* A memory with an expiry (any state), at expire_time_us. */
  EG_SWEEP_MEMORY_EXPIRE = 4,
  /* A retired session's messages (eg_store_session_retire), at the retire
   * time: due whatever the policy, the session being gone already. */
  EG_SWEEP_SESSION_PURGE = 5,
};
#define EG_SWEEP_KIND_MAX 5

/* When rec stopped being live: an ENDED session's end_time_us
 * (update_time_us when 0, as stored by older schemas), else its
 * expire_time_us (0: an ACTIVE session that never expires). The sweep's
 * EG_SWEEP_SESSION_GONE due time and every "gone since" check use this
 * one definition so they agree. */
int64_t eg_store_session_gone_us(const eg_session_rec *rec);

/* Visits the tenant's sessions by last activity, newest first (ties: the
 * greater id first), starting strictly after `after` (NULL: from the
 * newest). cur is the position in this list. EG_EINVAL if `after` has a
 * length no cursor has; its bytes are not checked (other bytes only move
 * where the walk starts). Cost: O(log n + visited). */
eg_err eg_store_sessions_by_activity_scan(eg_txn *t, const char *tenant,
                                          const eg_session_cursor *after,
                                          eg_session_visit_fn fn, void *arg);

/* Called per session id holding a term; id is valid during the call.
 * Return nonzero to stop. */
typedef int (*eg_session_id_visit_fn)(void *arg, const char *session_id);
/* Visits the ids of the tenant's sessions whose metadata_hashes hold
 * term, ascending by id, starting strictly after after_id (NULL: from the
 * first). Cost: O(log n + visited). */
eg_err eg_store_session_terms_scan(eg_txn *t, const char *tenant, uint64_t term,
                                   const char *after_id, eg_session_id_visit_fn fn, void *arg);

/* Called per due entry: its due time and id (valid during the call).
 * Return nonzero to stop. */
typedef int (*eg_sweep_visit_fn)(void *arg, int64_t due_us, const char *id);
/* Visits the tenant's entries of kind with due_us < cutoff_us, oldest
 * first, at most max of them. Cost: O(log n + visited). */
eg_err eg_store_sweep_scan(eg_txn *t, unsigned kind, const char *tenant, int64_t cutoff_us,
                           size_t max, eg_sweep_visit_fn fn, void *arg);
/* Called per tenant (valid during the call). Return nonzero to stop. */
typedef int (*eg_tenant_visit_fn)(void *arg, const char *tenant);
/* Visits, ascending, the tenants that have entries of kind, strictly after
 * after_tenant (NULL: from the first). Jumps from tenant to tenant: cost
 * O(tenants visited * log n), whatever their entries. */
eg_err eg_store_sweep_tenants(eg_txn *t, unsigned kind, const char *after_tenant,
                              eg_tenant_visit_fn fn, void *arg);

/* The warm tier: deletes the session's oldest messages (lowest seq first)
 * created before before_us, with their keyword postings and idempotency
 * keys, at most max messages; the session record stays. Also at most
 * max_keys keys: a message, each of its postings and its idempotency key
 * count one each. *keys (not NULL) is in and out: the keys the caller's
 * step (one write txn) has deleted so far, this call's added; when it is
 * 0 the first message goes whatever its keys, so a step always moves on.
 * *n (may be NULL) gets how many messages went; *more (may be NULL) is set
 * when a limit stopped it with such a message left. Moves the session's
 * EG_SWEEP_SESSION_MESSAGES entry to its new oldest message (or drops it).
 * Cost: O(log n + max * EG_MESSAGE_TERMS_MAX). */
eg_err eg_store_messages_delete_before(eg_txn *t, const char *tenant, const char *session_id,
                                       int64_t before_us, size_t max, uint64_t max_keys,
                                       uint64_t *keys, uint64_t *n, int *more);

/* The tenant's policy (a data DB: logged and replicated). EG_ENOTFOUND
 * when the tenant has none. */
eg_err eg_store_retention_get(eg_txn *t, const char *tenant, eg_retention_rec **out);
/* Stores rec as the tenant's policy (replacing any). Negative values are
 * EG_EINVAL. */
eg_err eg_store_retention_put(eg_txn *t, const char *tenant, const eg_retention_rec *rec);

/* ---- per-tenant limits and usage (server/limits.h) ----
 *   tenant_limits     u8len tenant -> TenantLimitsRecord (data DB: logged)
 *   tenant_usage      u8len tenant -> bytes u64 BE (data DB: logged)
 * A tenant's usage is the sum of the key and value lengths of its keys (the
 * ones that start with u8len tenant) in every data DB but sweep_due,
 * index_state, tenant_limits, tenant_usage and key_jobs. Storage keeps it
 * itself, at every put and delete, in the txn that makes the change
 * (internal.h, usage.c); migration 7 counts an existing store. */
/* The tenant's overrides; EG_ENOTFOUND when it has none. */
eg_err eg_store_tenant_limits_get(eg_txn *t, const char *tenant, eg_tenant_limits_rec **out);
/* Stores rec as the tenant's overrides (replacing any); a rec with no
 * field set removes the row. EG_EINVAL for a negative or non-finite value. */
eg_err eg_store_tenant_limits_put(eg_txn *t, const char *tenant, const eg_tenant_limits_rec *rec);
/* A number that changes after every commit that changed tenant_limits
 * here (a local write or an applied log record): a cache of overrides
 * read at generation g is current while this still returns g. Never 0.
 * Thread safety: any thread. */
uint64_t eg_store_tenant_limits_gen(const eg_store *s);
/* The bytes the tenant's records take as t sees them: committed, plus
 * the changes of t and the txns it nests in when t is a write txn. */
eg_err eg_store_tenant_usage(eg_txn *t, const char *tenant, uint64_t *bytes);
/* What t's own changes (not its parent's) add to the tenant's usage (0
 * for a read txn). */
int64_t eg_store_txn_usage_delta(const eg_txn *t, const char *tenant);

/* ---- write-ahead log (replication) -------------------------------------
 *
 * Every write txn commits one WalRecord (proto/engram/storage/v1/wal.proto)
 * under its LSN in the `wal` DB: the key-level puts and deletes it made,
 * with its epoch and time. A replica applies records in LSN order with
 * eg_store_wal_apply inside its own write txn, which stores them verbatim,
 * so its log and data equal the primary's at every LSN.
 */

/* Current epoch (1 for a store that never saw a promotion).
 * Thread safety: any thread. */
uint64_t eg_store_epoch(const eg_store *s);
/* Makes w's commit start epoch `epoch` (> the current one): the promotion
 * of a replica. The commit's WAL record carries it. */
eg_err eg_store_set_epoch(eg_txn *w, uint64_t epoch);

/* Applies one encoded WalRecord in write txn w (no sub txn, no local
 * writes in it). Records must come in LSN order without gaps, and never
 * from an epoch older than the last applied: else EG_EPRECOND and nothing
 * of that record is applied. EG_ECORRUPT if it does not decode or names an
 * unknown DB. eg_store_write_commit then commits at the record's LSN. */
eg_err eg_store_wal_apply(eg_txn *w, const uint8_t *rec, size_t len);

/* Called per record in LSN order; rec is valid during the call only.
 * Return nonzero to stop. */
typedef int (*eg_wal_visit_fn)(void *arg, uint64_t lsn, const uint8_t *rec, size_t len);
/* Visits the records from from_lsn on, up to eg_store_last_lsn: a record
 * not yet durable is never read out (to a replica, to the archive). */
eg_err eg_store_wal_scan(eg_txn *t, uint64_t from_lsn, eg_wal_visit_fn fn, void *arg);
/* The oldest record kept: its LSN and time (time_us may be NULL).
 * EG_ENOTFOUND when the log is empty. */
eg_err eg_store_wal_first(eg_txn *t, uint64_t *lsn, int64_t *time_us);
/* Walks from the oldest record, at most max of them, to the first one
 * written at or after time_us (records carry the time their primary wrote
 * them). *lsn gets its LSN; when every record walked is older, the LSN after
 * the last one walked. EG_ENOTFOUND when the log is empty. Cost: O(max). */
eg_err eg_store_wal_first_after(eg_txn *t, int64_t time_us, size_t max, uint64_t *lsn);
/* The epoch of record lsn; EG_ENOTFOUND if it is not (or no longer) kept.
 * With rec (may be NULL), also the record as stored, valid until t ends. */
eg_err eg_store_wal_epoch_at(eg_txn *t, uint64_t lsn, uint64_t *epoch, const uint8_t **rec,
                             size_t *len);
/* The head of an encoded WalRecord, read without decoding its ops (the
 * WAL archiver reads every record). */
typedef struct {
  uint64_t lsn, epoch;
  int64_t time_us;
  int erasure;
} eg_wal_head;
/* Fills *out from rec (len bytes); EG_ECORRUPT if it does not parse or
 * lacks its LSN, epoch or time. Cost: O(fields). Thread safety: any. */
eg_err eg_store_wal_head(const uint8_t *rec, size_t len, eg_wal_head *out);
/* Deletes up to max of the oldest records with LSN < below_lsn; *n (may be
 * NULL) gets how many. */
eg_err eg_store_wal_trim(eg_txn *w, uint64_t below_lsn, size_t max, size_t *n);

/* Marks t (a write or sub txn) as an erasure: its WAL record says so, and
 * once it commits, every older record is to be dropped (on replicas too,
 * when they apply it) so erased data does not live on in the log. */
void eg_store_mark_erasure(eg_txn *t);
/* One bounded step of erasing a whole tenant (DeleteTenant): deletes
 * about `budget` keys at most of every data DB whose keys belong to it
 * (sessions, messages, memories, checkpoints, store items, and every
 * index, counter, stat, retention, limit and usage row of the tenant,
 * storage/tenant_erase.c lists them; its store_items expiry and sweep_due
 * entries too). *done is set once nothing of it is left; *deleted is then
 * the keys deleted by the whole erasure (the progress of earlier steps is
 * kept in memory_users, so a step rolled back with its txn is simply
 * redone). Call again in a new txn while *done is 0; mark each
 * eg_store_mark_erasure. */
eg_err eg_store_tenant_erase_step(eg_txn *t, const char *tenant, uint64_t budget,
                                  uint64_t *deleted, int *done);
/* LSN of the last erasure committed or applied (0: none). Log records
 * below it should be trimmed. Thread safety: any thread. */
uint64_t eg_store_erase_floor(const eg_store *s);
/* 1 once LMDB refused to go on (MDB_PANIC after a failed write of its
 * meta page) or a flush of a deferred meta page failed (eg_store_sync):
 * every txn of this process fails EG_EBROKEN from then on,
 * and only a new process can open the (consistent) file again. Health
 * says NOT_SERVING and engramd stops. Thread safety: any thread. */
int eg_store_broken(const eg_store *s);

/* Waits up to timeout_ms until the store has committed (or, on a replica,
 * applied) lsn: EG_OK, or EG_EUNAVAIL on timeout. Thread safety: any thread. */
eg_err eg_store_wait_lsn(eg_store *s, uint64_t lsn, int64_t timeout_ms);
/* Makes every eg_store_wait_lsn return now (EG_EUNAVAIL unless the LSN
 * is in): for threads that must notice a stop or a departed peer. */
void eg_store_wake_waiters(eg_store *s);

/* ---- whole-store operations ----------------------------------------------- */

/* The data dir the store was opened on. */
const char *eg_store_dir(const eg_store *s);
/* What a store file holds, read from its meta DB. */
typedef struct {
  uint64_t lsn, epoch;
  uint32_t schema_version; /* 0: a file never opened as a store */
} eg_store_file_info;
/* Writes a consistent, compacted copy of the store to path (new file, mode
 * 0600) while writes go on, and reports what it holds (its LSN, epoch and
 * schema version) in *info. Returns once that LSN is durable here
 * (eg_store_last_lsn; with defer_meta_sync the copy may have caught the
 * last commit before its flush): EG_EUNAVAIL, the copy removed, if that
 * takes over 10 s (a stuck or stopping store). The copy is not fsync'd: it
 * is meant to be streamed and removed; a caller that keeps it must sync
 * it. Not from the writer thread (it would wait for itself). */
eg_err eg_store_copy(eg_store *s, const char *path, eg_store_file_info *info);
/* Opens the single-file store at path (a copy: no lock file, nothing else
 * has it open) read-only and fills out. EG_ECORRUPT if it is not an LMDB
 * file, is shorter than its meta pages say (checked before anything is
 * read through the map), or lacks the meta DB or its keys; EG_EIO if it
 * cannot be read. */
eg_err eg_store_file_info_read(const char *path, eg_store_file_info *out);
/* Checks the store file at path before it may be installed or trusted:
 * readable as a store (eg_store_file_info_read, filling *info), holding
 * lsn and epoch (what its sender announced), of a schema version this
 * build opens. EG_ECORRUPT with why filled otherwise. */
eg_err eg_store_file_check(const char *path, uint64_t lsn, uint64_t epoch,
                           eg_store_file_info *info, char *why, size_t whylen);
/* Makes the copy at snapshot_path the store of dir (and drops dir's
 * engram.id, which the next open writes from the copy's id). Call before
 * eg_store_open, with no process holding dir open. */
eg_err eg_store_install_snapshot(const char *dir, const char *snapshot_path);

/* Called per key of every data DB (not meta, not the log). */
typedef void (*eg_kv_visit_fn)(void *arg, const char *db, const void *k, size_t klen,
                               const void *v, size_t vlen);
/* The LSN t sees (its snapshot's last commit). */
eg_err eg_store_txn_lsn(eg_txn *t, uint64_t *lsn);
/* Visits every data DB in a fixed order, keys ascending. */
eg_err eg_store_visit_data(eg_txn *t, eg_kv_visit_fn fn, void *arg);
/* The same over the single-file store at path, opened as
 * eg_store_file_info_read does (read-only, no lock file; *info filled):
 * EG_ECORRUPT for a file that is not a store, is cut short, or lacks a data
 * DB of its schema version (a DB that a later schema added may be absent). */
eg_err eg_store_file_visit(const char *path, eg_store_file_info *info, eg_kv_visit_fn fn,
                           void *arg);

/* ---- named meta values ----------------------------------------------------
 *
 * Small values outside the record schema (the store id, a key fingerprint).
 * Kept in the meta DB apart from the store's own keys, never logged in the
 * WAL (so not replicated; a snapshot copy carries its source's values), and
 * usable right after eg_store_open, before any writer thread exists.
 */

/* Longest name (printable ASCII, no spaces) and value a meta value may have. */
#define EG_STORE_META_NAME_MAX 64
#define EG_STORE_META_VALUE_MAX 4096

/* Copies the value called name into buf[0..cap) and sets *len to its size.
 * EG_ENOTFOUND if there is none; EG_ELIMIT if cap is too small (*len then
 * holds the size needed, buf is untouched); EG_EINVAL for a bad name.
 * Thread safety: any thread (it opens its own read txn). */
eg_err eg_store_meta_get(eg_store *s, const char *name, void *buf, size_t cap, size_t *len);
/* Stores val[0..n) under name (replacing any value) and commits durably in
 * its own write txn (with defer_meta_sync: its commit, then a flush; a
 * failed flush, or a commit failure that may have been its flush, breaks
 * the store as eg_store_sync: the writer's last commit may have waited for
 * that flush). EG_EINVAL for a bad name or n > EG_STORE_META_VALUE_MAX.
 * Thread safety: it takes LMDB's write lock, so it waits for a running
 * write txn; never call it from a thread that holds one (self-deadlock). */
eg_err eg_store_meta_put(eg_store *s, const char *name, const void *val, size_t n);

/* ---- memories: storage/memories.h --------------------------------------- */
#include "storage/memories.h"
/* ---- checkpoints: storage/checkpoints.h ------------------------------------- */
#include "storage/checkpoints.h"

/* ---- the key-value store: storage/store_items.h --------------------------- */
#include "storage/store_items.h"

/* ---- the message keyword index, index state: storage/message_index.h ------ */
#include "storage/message_index.h"

/* ---- the key jobs' state: storage/key_jobs.h ------------------------------ */
#include "storage/key_jobs.h"

/* ---- the users holding records, by name: storage/record_users.h ----------- */
#include "storage/record_users.h"

#endif
