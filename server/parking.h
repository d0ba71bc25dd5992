/*
 * Reads that wait for an LSN this node has not applied yet (engram-min-lsn
 * on a replica, a moment behind the primary). Instead of holding a worker,
 * such a call is parked here; one thread wakes as commits (or applied log
 * records) arrive and runs each parked call once its LSN is in, or at its
 * deadline.
 */
#ifndef EG_SERVER_PARKING_H
#define EG_SERVER_PARKING_H

#include <stdint.h>

#include "common/err.h"
#include "storage/storage.h"

typedef struct eg_parked eg_parked;
struct eg_parked {
  eg_parked *next;
  uint64_t lsn;      /* run once the store has applied this */
  int64_t until_us;  /* or at this time (eg_mono_us), with ready = 0 */
  /* Runs on the parking thread; reader is a read txn object it may use
   * (begin/end it itself). ready is 0 at the deadline or at stop. */
  void (*run)(eg_parked *p, int ready, eg_txn *reader);
};

typedef struct eg_parking eg_parking;

/* Starts the parking thread. EG_ENOMEM, a storage error opening its read
 * txn object, or EG_EUNAVAIL when the thread cannot start. */
eg_err eg_parking_start(eg_store *s, eg_parking **out);
/* Parks p. Returns -1 (and does not take p) once stopping: the caller
 * answers it itself. Thread safety: any thread. */
int eg_parking_add(eg_parking *pk, eg_parked *p);
/* Runs every parked call with ready = 0 and stops the thread; later adds
 * are refused. pk stays valid (other threads may still call add). */
void eg_parking_stop(eg_parking *pk);
/* Frees pk once nothing can call add any more (the workers are joined). */
void eg_parking_free(eg_parking *pk);

#endif
