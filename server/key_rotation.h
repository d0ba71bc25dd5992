/*
 * Data-key rotation: the background re-seal of users' field tokens under
 * their current data key (server/data_keys.h), and GetKeyStatus's key id,
 * rotation and token-count fields.
 *
 * A rotation (RotateDataKeys, server/svc_key_rotation.c) makes a new
 * current generation for every user in its scope (one user, the users of
 * a tenant, or every user holding a data key), then stores its state in
 * key_jobs ("data_keys", storage/key_jobs.h; replicated like data). This
 * thread, on an unfenced primary only, first (with no user named: every
 * user, or a tenant's) gives the users in scope that hold records but no
 * data key their first one (phase 1, server/key_adopt.h: a store written
 * before envelope keys; done stays 0 and total counts the users rotated
 * plus those given a key so far, then the users holding a live key), then
 * walks the users in scope in the key
 * store's order (eg_data_keys_each_user) and, per user, their records in
 * passes: sessions with their messages, memories, checkpoints with their
 * pending writes (the tenant's own key, user "": its store items). Each
 * step reads at most --key-rotation-batch records in a read txn and
 * re-seals, on this thread, every field token not under the user's
 * generation the row holds (the key store's latest when the user's pass 1
 * began; another latest since starts the passes again), format 1 tokens
 * under a master key too; then, in a write of its own through the
 * writer, puts each record back with the new tokens if its tokens are
 * still the ones walked (else the next pass reads it again) and stores the state (the cursor, the pass's tokens
 * found under an old key, its counts per key) in the same txn. At most
 * --key-rotation-rate records a second.
 *
 * A user is done after a pass that found no token under an old key, and
 * not before its second: the first pass began just after the rotation,
 * so a write sealed under the old generation before it may commit behind
 * the walk; the pass after it sees that write. Then its older generations
 * are retired (eg_data_keys_retire_before: tombstones, refused when the
 * row's generation is no longer the latest), and the pass's counts are
 * added to the rotation's. A user erased meanwhile is skipped: no key is
 * ever made for it. A token that does not open (tampered, or its key
 * gone) cannot be re-sealed: it is left as it is, logged, and does
 * not hold the user back (it reads no better under a live key).
 *
 * A step whose write would log more than one commit may
 * (EG_WRITER_ITEM_LOG_MAX: large checkpoints) fails EG_ELIMIT, nothing
 * written; the thread halves its steps' records and tries again at once,
 * down to one (a checkpoint with its pending writes), and takes the
 * flag's batch again after a step that skipped a record (below) and at
 * the next user. A record too large even alone is
 * skipped: left under its old key, not counted found (the user's passes
 * end), counted in the row's skipped, so the user's older generations are
 * kept (not retired) when it is done; the row's problem (KeyRotationStatus
 * .problem, kept after the rotation ends) names the record and its user.
 *
 * A restart, or a promoted replica, resumes from the stored state. The
 * step itself: server/key_rotation_step.h. The
 * walk of a user's checkpoints takes each checkpoint's pending writes with
 * it (their record ids need the checkpoint's); pending writes stored for a
 * checkpoint that does not exist are not walked. Store items: the walk
 * resumes by scanning the tenant's items from the first, so a tenant's
 * items cost O(items^2 / --key-rotation-batch) reads.
 */
#ifndef EG_SERVER_KEY_ROTATION_H
#define EG_SERVER_KEY_ROTATION_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engram/v1/admin.pb-c.h"
#include "server/service.h"
#include "server/writer.h"

typedef struct eg_key_rotation eg_key_rotation;

/* Starts the thread over srv's store, keys, data keys, config and
 * replication role; it writes through writer. EG_ENOMEM or EG_EUNAVAIL
 * with err set. */
eg_err eg_key_rotation_start(eg_srv *srv, eg_writer *writer, eg_key_rotation **out, char *err,
                             size_t errlen);
/* Stops the thread after its write in flight (the writer must still run)
 * and frees x. NULL is fine. */
void eg_key_rotation_stop(eg_key_rotation *x);

/* Distinct keys a rotation counts tokens under ("master:<id>",
 * "data:<generation>"); tokens under any further key count as "other". */
#define EG_TOKEN_COUNT_KEYS_MAX 64
#define EG_TOKEN_COUNT_KEY_MAX 24 /* "master:4294967295" and its NUL */
typedef struct {
  char key[EG_TOKEN_COUNT_KEY_MAX];
  uint64_t tokens;
} eg_token_count;
/* The token counts as of the thread's last look at key_jobs (every node
 * looks: a replica shows the primary's), at most cap of them into out;
 * returns how many. x may be NULL (none). Thread safety: any thread. */
size_t eg_key_rotation_token_counts(eg_key_rotation *x, eg_token_count *out, size_t cap);

/* rec's scope as KeyRotationStatus.scope says it: "" (every user),
 * "tenant/user" (one user), or the tenant, '/' and '*' (every user of a
 * tenant). NULL when out of memory. */
const char *eg_dk_rotation_scope(eg_arena *a, const eg_dk_rotation_rec *rec);
/* A KeyRotationStatus (kind "data_keys") of rec in r's arena. */
eg_err eg_dk_rotation_api(eg_req *r, const eg_dk_rotation_rec *rec,
                          Engram__V1__KeyRotationStatus **out);

/* GetKeyStatusResponse's blind-index key ids, rotations and token counts
 * (token_counts, token_count_time) as the store holds them now, in a read
 * txn of its own (GetKeyStatus reads no snapshot); on failure r->msg says
 * why. */
eg_err eg_key_rotation_status(eg_req *r, Engram__V1__GetKeyStatusResponse *out);

#endif
