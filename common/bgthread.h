/*
 * The lifecycle the server's background threads share (call-timeout
 * reaper, writer, sweeper, metrics watchdog): one thread, a mutex, a
 * condvar on CLOCK_MONOTONIC and a stopping flag. The owner embeds an
 * eg_bgthread and guards its own state with mu; the thread's loop runs
 * while !stopping and waits on cv (eg_bgthread_sleep for a period).
 */
#ifndef EG_COMMON_BGTHREAD_H
#define EG_COMMON_BGTHREAD_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* The longest thread name Linux keeps (16 bytes with its NUL). */
#define EG_THREAD_NAME_MAX 15

typedef struct {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* on CLOCK_MONOTONIC; broadcast at stop */
  int stopping;      /* guarded by mu */
  void *(*fn)(void *arg);
  void *arg;
  const char *name; /* the caller's (a literal): the new thread reads it */
} eg_bgthread;

/* Inits mu and cv, then runs fn(arg) on a new thread (mu and cv are ready
 * before fn runs) that first names itself name (eg_thread_name).
 * EG_EUNAVAIL if the thread cannot start: err then says
 * "cannot start the <what> thread: <why>" and mu and cv are destroyed
 * again (t needs no eg_bgthread_stop). */
eg_err eg_bgthread_start(eg_bgthread *t, void *(*fn)(void *arg), void *arg, const char *name,
                         const char *what, char *err, size_t errlen);

/* Names the calling thread (cut at EG_THREAD_NAME_MAX bytes), as
 * `top -H`, `ps -L` and gdb show it. Every engramd thread calls it first
 * thing, before anything it does can be seen: a thread is born with its
 * creator's name, and the fault shim (tests/fault/shim.c) tells threads
 * apart by name. */
void eg_thread_name(const char *name);

/* With mu held: waits until stopping is set or ms have passed, whichever
 * is first (other broadcasts on cv do not end it early). */
void eg_bgthread_sleep(eg_bgthread *t, int64_t ms);

/* Sets stopping, broadcasts cv, joins the thread, destroys mu and cv.
 * Only after a successful eg_bgthread_start; not from the thread itself. */
void eg_bgthread_stop(eg_bgthread *t);

#endif
