#include "server/reaper.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/clock.h"
#include "common/bgthread.h"

struct eg_reaper {
  eg_bgthread bg;
  eg_reaped *list; /* guarded by bg.mu */
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
  pthread_mutex_lock(&r->bg.mu);
  e->call = call;
  e->until_us = until_us;
  e->prev = NULL;
  e->next = r->list;
  if (r->list) r->list->prev = e;
  r->list = e;
  e->linked = 1;
  pthread_mutex_unlock(&r->bg.mu);
}

void eg_reaper_remove(eg_reaper *r, eg_reaped *e) {
  pthread_mutex_lock(&r->bg.mu);
  if (e->linked) eg_unlink(r, e);
  pthread_mutex_unlock(&r->bg.mu);
}

void eg_reaper_sent(eg_reaper *r, size_t bytes) { atomic_fetch_add(&r->sent, bytes); }

/* Cancels every call past its time; returns 1 if none is registered. The
 * cancel happens under bg.mu, so the call cannot be freed meanwhile (its
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
  pthread_mutex_lock(&r->bg.mu);
  while (!r->bg.stopping) {
    int idle = eg_reap_due(r, eg_mono_us());
    if (idle && atomic_load(&r->sent) >= EG_REAPER_TRIM_BYTES) {
      atomic_store(&r->sent, 0);
      pthread_mutex_unlock(&r->bg.mu);
#ifdef __GLIBC__
      malloc_trim(0); /* outside bg.mu: it walks the whole heap */
#endif
      pthread_mutex_lock(&r->bg.mu);
    }
    eg_bgthread_sleep(&r->bg, EG_REAPER_TICK_MS);
  }
  pthread_mutex_unlock(&r->bg.mu);
  return NULL;
}

eg_err eg_reaper_start(int64_t timeout_ms, eg_reaper **out, char *err, size_t errlen) {
  eg_reaper *r = calloc(1, sizeof *r);
  if (!r) return EG_ENOMEM;
  snprintf(r->msg, sizeof r->msg, "the call was not completed within --call-timeout-ms (%lld ms)",
           (long long)timeout_ms);
  eg_err e = eg_bgthread_start(&r->bg, eg_reaper_main, r, "call-timeout", "call-timeout", err, errlen);
  if (e != EG_OK) {
    free(r);
    return e;
  }
  *out = r;
  return EG_OK;
}

const char *eg_reaper_message(const eg_reaper *r) { return r->msg; }

void eg_reaper_stop(eg_reaper *r) {
  if (!r) return;
  eg_bgthread_stop(&r->bg);
  free(r);
}
