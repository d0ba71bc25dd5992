/*
 * One step of a data-key rotation (server/key_rotation.h): the walk of at
 * most --key-rotation-batch records of the user its state is at, in a read
 * txn, their old tokens re-sealed on the calling thread, then one write
 * through the writer that puts them back (each if its tokens are still the
 * walked ones) with the state after the step. Private to the rotation
 * (server/key_rotation.c).
 */
#ifndef EG_SERVER_KEY_ROTATION_STEP_H
#define EG_SERVER_KEY_ROTATION_STEP_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "server/arena.h"
#include "server/service.h"
#include "server/writer.h"

/* The stages of a user's pass, in order (the tenant's own key, user "",
 * has only its store items), and the mark of a user done. */
enum { EG_KR_SESSIONS = 0, EG_KR_MEMORIES, EG_KR_CHECKPOINTS, EG_KR_ITEMS, EG_KR_DONE };

/* The rotation's row as t sees it, its cleanup deferred to a; NULL when
 * there is none. EG_ECORRUPT if it does not decode; EG_ENOMEM. */
eg_err eg_kr_row_get(eg_txn *t, eg_arena *a, eg_dk_rotation_rec **out);

/* to: a fresh pass of number pass over to->user (its first stage, no
 * cursor, nothing found or counted yet). */
void eg_kr_pass_begin(eg_dk_rotation_rec *to, uint32_t pass);

/* Writes to over the stored row, if that is still from (else
 * EG_EABORTED), through writer. */
eg_err eg_kr_change_row(eg_writer *writer, const eg_dk_rotation_rec *from,
                        const eg_dk_rotation_rec *to);

/* One step of the user row is at (reading through reader, writing
 * through writer, walking at most batch records; a checkpoint takes its
 * pending writes with it): the walk, the state after it (the stage's
 * next, the next pass, or the user done: *user_done set; not before the
 * second pass, and only after a pass that found no token under an old
 * key), the write. Tokens are re-sealed under the row's generation
 * (row->gen), the key store's latest when pass 1 began; when the store's
 * latest is another one now, the step only starts the user's passes again
 * under it. *walked: the records it read. EG_ELIMIT when the write would
 * log more than one commit may (EG_WRITER_ITEM_LOG_MAX; nothing written):
 * the caller walks fewer records a step. At batch 1 that one record is
 * skipped instead: left under its old key, the pass going on past it,
 * not counted found, counted in the row's skipped (the user's older
 * generations are then not retired) and named in its problem.
 * EG_EABORTED if the row moved meanwhile; EG_EERASED or EG_ENOTFOUND when
 * the user has no live key any more (erased: nothing to re-seal, no key
 * made); else a storage, key-store or EG_ENOMEM error (nothing written). */
eg_err eg_kr_step_run(eg_srv *srv, eg_writer *writer, eg_txn *reader,
                      const eg_dk_rotation_rec *row, size_t batch, size_t *walked,
                      int *user_done);

#endif
