#define _GNU_SOURCE /* pthread_setname_np */
#include "common/bgthread.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"

void eg_thread_name(const char *name) {
  char cut[EG_THREAD_NAME_MAX + 1];
  snprintf(cut, sizeof cut, "%s", name);
  pthread_setname_np(pthread_self(), cut);
}

static void *eg_bgthread_main(void *p) {
  eg_bgthread *t = p;
  eg_thread_name(t->name);
  return t->fn(t->arg);
}

eg_err eg_bgthread_start(eg_bgthread *t, void *(*fn)(void *arg), void *arg, const char *name,
                         const char *what, char *err, size_t errlen) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&t->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&t->mu, NULL);
  t->stopping = 0;
  t->fn = fn;
  t->arg = arg;
  t->name = name;
  int rc = pthread_create(&t->thread, NULL, eg_bgthread_main, t);
  if (rc != 0) {
    snprintf(err, errlen, "cannot start the %s thread: %s", what, strerror(rc));
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    return EG_EUNAVAIL;
  }
  return EG_OK;
}

void eg_bgthread_sleep(eg_bgthread *t, int64_t ms) {
  struct timespec until = eg_mono_deadline_ts(ms);
  while (!t->stopping && pthread_cond_timedwait(&t->cv, &t->mu, &until) != ETIMEDOUT) {
  }
}

void eg_bgthread_stop(eg_bgthread *t) {
  pthread_mutex_lock(&t->mu);
  t->stopping = 1;
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);
  pthread_join(t->thread, NULL);
  pthread_cond_destroy(&t->cv);
  pthread_mutex_destroy(&t->mu);
}
