/* Waiting for an LSN: replicas serving engram-min-lsn reads, and the
 * primary's log streamers waiting for new records. */
#include <errno.h>
#include <time.h>

#include "storage/internal.h"

eg_err eg_store__lsn_init(eg_store *s) {
  pthread_condattr_t a;
  if (pthread_condattr_init(&a) != 0) return EG_ENOMEM;
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  int rc = pthread_cond_init(&s->lsn_cv, &a);
  pthread_condattr_destroy(&a);
  if (rc || pthread_mutex_init(&s->lsn_mu, NULL) != 0) return EG_ENOMEM;
  s->lsn_cv_ok = 1;
  return EG_OK;
}

void eg_store__lsn_destroy(eg_store *s) {
  if (!s->lsn_cv_ok) return;
  pthread_cond_destroy(&s->lsn_cv);
  pthread_mutex_destroy(&s->lsn_mu);
}

void eg_store__lsn_notify(eg_store *s) {
  pthread_mutex_lock(&s->lsn_mu);
  pthread_cond_broadcast(&s->lsn_cv);
  pthread_mutex_unlock(&s->lsn_mu);
}

eg_err eg_store_wait_lsn(eg_store *s, uint64_t lsn, int64_t timeout_ms) {
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += timeout_ms / 1000;
  until.tv_nsec += (timeout_ms % 1000) * 1000000;
  if (until.tv_nsec >= 1000000000) until.tv_sec++, until.tv_nsec -= 1000000000;
  pthread_mutex_lock(&s->lsn_mu);
  int rc = 0;
  uint64_t wakes = s->lsn_wakes;
  while (eg_store_last_lsn(s) < lsn && rc != ETIMEDOUT && wakes == s->lsn_wakes)
    rc = pthread_cond_timedwait(&s->lsn_cv, &s->lsn_mu, &until);
  pthread_mutex_unlock(&s->lsn_mu);
  return eg_store_last_lsn(s) >= lsn ? EG_OK : EG_EUNAVAIL;
}

void eg_store_wake_waiters(eg_store *s) {
  pthread_mutex_lock(&s->lsn_mu);
  s->lsn_wakes++;
  pthread_cond_broadcast(&s->lsn_cv);
  pthread_mutex_unlock(&s->lsn_mu);
}
