#include "server/reaper.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"

struct eg_reaper {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  eg_reaped *list; /* guarded by mu */
  int stopping;    /* guarded by mu */
  atomic_size_t sent;
  char msg[128];
};

static void eg_unlink(eg_reaper *r, eg_reaped *e) {
  if (e->prev) e->prev->next = e->next;
  else r->list = e->next;
  if (e->next) e->next->prev = e->prev;
  e->prev = e->next = NULL;
  e->linked = 0;
}

void eg_reaper_add(eg_reaper *r, eg_reaped *e, grpc_call *call, int64_t until_us) {
  pthread_mutex_lock(&r->mu);
  e->call = call;
  e->until_us = until_us;
  e->prev = NULL;
  e->next = r->list;
  if (r->list) r->list->prev = e;
  r->list = e;
  e->linked = 1;
  pthread_mutex_unlock(&r->mu);
}

void eg_reaper_remove(eg_reaper *r, eg_reaped *e) {
  pthread_mutex_lock(&r->mu);
  if (e->linked) eg_unlink(r, e);
  pthread_mutex_unlock(&r->mu);
}

void eg_reaper_sent(eg_reaper *r, size_t bytes) { atomic_fetch_add(&r->sent, bytes); }

/* Cancels every call past its time; returns 1 if none is registered. The
 * cancel happens under mu, so the call cannot be freed meanwhile (its
 * owner removes it first). */
static int eg_reap_due(eg_reaper *r, int64_t now) {
  eg_reaped *e = r->list;
  while (e) {
    eg_reaped *next = e->next;
    if (e->until_us <= now) {
      grpc_call_cancel_with_status(e->call, GRPC_STATUS_DEADLINE_EXCEEDED, r->msg, NULL);
      eg_unlink(r, e);
    }
    e = next;
  }
  return r->list == NULL;
}

static void *eg_reaper_main(void *arg) {
  eg_reaper *r = arg;
  pthread_mutex_lock(&r->mu);
  while (!r->stopping) {
    int idle = eg_reap_due(r, eg_mono_us());
    if (idle && atomic_load(&r->sent) >= EG_REAPER_TRIM_BYTES) {
      atomic_store(&r->sent, 0);
      pthread_mutex_unlock(&r->mu);
#ifdef __GLIBC__
      malloc_trim(0); /* outside mu: it walks the whole heap */
#endif
      pthread_mutex_lock(&r->mu);
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += EG_REAPER_TICK_MS * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&r->cv, &r->mu, &ts);
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

eg_err eg_reaper_start(int64_t timeout_ms, eg_reaper **out, char *err, size_t errlen) {
  eg_reaper *r = calloc(1, sizeof *r);
  if (!r) return EG_ENOMEM;
  snprintf(r->msg, sizeof r->msg, "the call was not completed within --call-timeout-ms (%lld ms)",
           (long long)timeout_ms);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&r->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&r->mu, NULL);
  int rc = pthread_create(&r->thread, NULL, eg_reaper_main, r);
  if (rc != 0) {
    snprintf(err, errlen, "cannot start the call-timeout thread: %s", strerror(rc));
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
    return EG_EUNAVAIL;
  }
  *out = r;
  return EG_OK;
}

void eg_reaper_stop(eg_reaper *r) {
  if (!r) return;
  pthread_mutex_lock(&r->mu);
  r->stopping = 1;
  pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
  pthread_join(r->thread, NULL);
  pthread_cond_destroy(&r->cv);
  pthread_mutex_destroy(&r->mu);
  free(r);
}
