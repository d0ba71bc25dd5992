#include "server/parking.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "common/bgthread.h"
#include "common/clock.h"

/* Longest sleep between checks when nothing is due sooner. */
#define EG_PARKING_TICK_MS 100

struct eg_parking {
  eg_store *store;
  eg_txn *reader;
  pthread_t thread;
  pthread_mutex_t mu;
  eg_parked *list; /* guarded by mu */
  atomic_int stopping;
};

int eg_parking_add(eg_parking *pk, eg_parked *p) {
  pthread_mutex_lock(&pk->mu);
  int stopping = atomic_load(&pk->stopping);
  if (!stopping) {
    p->next = pk->list;
    pk->list = p;
  }
  pthread_mutex_unlock(&pk->mu);
  return stopping ? -1 : 0;
}

/* Takes the calls that are due off the list; sets *next_us to the nearest
 * deadline of those left. */
static eg_parked *eg_parking_due(eg_parking *pk, uint64_t applied, int64_t now, int64_t *next_us) {
  eg_parked *due = NULL, **pp = &pk->list;
  int stopping = atomic_load(&pk->stopping);
  *next_us = now + EG_PARKING_TICK_MS * 1000;
  pthread_mutex_lock(&pk->mu);
  while (*pp) {
    eg_parked *p = *pp;
    if (p->lsn <= applied || p->until_us <= now || stopping) {
      *pp = p->next;
      p->next = due;
      due = p;
    } else {
      if (p->until_us < *next_us) *next_us = p->until_us;
      pp = &p->next;
    }
  }
  pthread_mutex_unlock(&pk->mu);
  return due;
}

static void *eg_parking_main(void *arg) {
  eg_parking *pk = arg;
  eg_thread_name("parking");
  for (;;) {
    uint64_t applied = eg_store_last_lsn(pk->store);
    int64_t now = eg_mono_us(), next_us;
    eg_parked *due = eg_parking_due(pk, applied, now, &next_us);
    while (due) {
      eg_parked *p = due;
      due = p->next; /* run may free p */
      p->run(p, p->lsn <= applied, pk->reader);
    }
    if (atomic_load(&pk->stopping)) {
      pthread_mutex_lock(&pk->mu);
      int empty = pk->list == NULL;
      pthread_mutex_unlock(&pk->mu);
      if (empty) break;
      continue;
    }
    /* Any commit may satisfy someone: wake on the next one. A call parked
     * meanwhile is seen then, or at the tick. */
    int64_t wait_ms = (next_us - eg_mono_us() + 999) / 1000;
    eg_store_wait_lsn(pk->store, applied + 1, wait_ms > 0 ? wait_ms : 0);
  }
  return NULL;
}

eg_err eg_parking_start(eg_store *s, eg_parking **out) {
  eg_parking *pk = calloc(1, sizeof *pk);
  if (!pk) return EG_ENOMEM;
  pk->store = s;
  pthread_mutex_init(&pk->mu, NULL);
  eg_err e = eg_store_reader_new(s, &pk->reader);
  if (e == EG_OK && pthread_create(&pk->thread, NULL, eg_parking_main, pk) != 0) e = EG_EUNAVAIL;
  if (e != EG_OK) {
    eg_store_reader_free(pk->reader);
    pthread_mutex_destroy(&pk->mu);
    free(pk);
    return e;
  }
  *out = pk;
  return EG_OK;
}

void eg_parking_stop(eg_parking *pk) {
  if (!pk) return;
  pthread_mutex_lock(&pk->mu);
  atomic_store(&pk->stopping, 1);
  pthread_mutex_unlock(&pk->mu);
  eg_store_wake_waiters(pk->store);
  pthread_join(pk->thread, NULL);
}

void eg_parking_free(eg_parking *pk) {
  if (!pk) return;
  eg_store_reader_free(pk->reader);
  pthread_mutex_destroy(&pk->mu);
  free(pk);
}
