/*
 * Phase 1 of a data-key rotation of every user or of the users of a
 * tenant (server/key_rotation.h): adopting the users that hold records but
 * no data key. A store written before envelope keys has users whose field
 * tokens are all format 1 (sealed under a master key) and who were never
 * written since: the key store does not list them, so the users' walk
 * (eg_data_keys_each_user) would not re-seal their tokens, count nothing
 * under the master key, and let it retire while their data still needs it.
 *
 * The phase walks the data store's users by name (storage/record_users.h:
 * sessions_by_user, memories_by_user, the tenants holding store items for
 * their own key, user ""), at most --key-rotation-batch users a step, each
 * in a read txn, and gives each one in scope with no data key at all its
 * first (eg_data_keys_rotate: generation 1, wrapped under the primary, a
 * durable key-store commit, as a first write makes one). A user erased
 * (a tombstone) never gets one: the key store refuses it under its write
 * lock. After the keys are made, each adopted user is checked again in a
 * fresh read txn: one that holds no record any more, or whose erasure is
 * under way (erased, or its last record deleted, between the walk's read
 * and the key) has the key destroyed at once (a tombstone, as an erasure
 * leaves). The state (the
 * source, the last user visited, the users adopted) is stored in the
 * rotation's row after each step through the writer, so a restart or a
 * promoted replica resumes from it; a step cut short before its row write
 * is walked again (its users now hold keys: skipped).
 *
 * Progress while the phase runs: done stays 0 and total is the users the
 * call rotated plus those adopted so far; when it ends total becomes the
 * users in scope holding a live data key (the users' walk walks exactly
 * those).
 *
 * A DeleteUser (or DeleteTenant) racing it: its prepare destroys no key
 * (the user has none) and nothing in the data store says the user is
 * being erased until its first erase step commits. So the erasure is
 * marked from before its key erasure to after its last step's answer
 * (eg_data_keys_erasure_begin), and the key store refuses the key while
 * the mark stands (EG_EERASED, under its write lock). Every order ends
 * with no key left: the key made before the erasure's key erasure is
 * destroyed by it; one asked for after it is refused while the erasure
 * runs; after the erasure ended, its last step is committed and the
 * check above (a read txn begun after the key) finds no record.
 *
 * Not covered: a user whose only records are checkpoints (their keys hold a
 * digest of the user id, not the id). Private to the rotation
 * (server/key_rotation.c).
 */
#ifndef EG_SERVER_KEY_ADOPT_H
#define EG_SERVER_KEY_ADOPT_H

#include <stddef.h>

#include "common/err.h"
#include "server/service.h"
#include "server/writer.h"

/* Whether row's rotation is still in phase 1: no user named, the phase
 * not over, and the users' walk not begun (a row an older release left
 * running mid-walk goes on without the phase). */
int eg_kr_adopting(const eg_dk_rotation_rec *row);

/* One step of phase 1 from where row is (reading through reader, writing
 * the row after it through writer). *walked: the users read. EG_EABORTED
 * if the row moved meanwhile; else a storage, key-store or EG_ENOMEM
 * error (keys made before it stay: the step is walked again). */
eg_err eg_kr_adopt_step(eg_srv *srv, eg_writer *writer, eg_txn *reader,
                        const eg_dk_rotation_rec *row, size_t *walked);

#endif
