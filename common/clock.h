/* Wall-clock time in microseconds since the Unix epoch. Records store
 * times this way; the API turns them into google.protobuf.Timestamp. */
#ifndef EG_COMMON_CLOCK_H
#define EG_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t eg_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Monotonic microseconds, for deadlines and timeouts (never jumps). */
static inline int64_t eg_mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The CLOCK_MONOTONIC time ms milliseconds from now, as the absolute
 * timespec pthread_cond_timedwait wants (for a condvar set to that clock). */
static inline struct timespec eg_mono_deadline_ts(int64_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  int64_t ns = ts.tv_nsec + (ms % 1000) * 1000000;
  ts.tv_sec += (time_t)(ms / 1000 + ns / 1000000000);
  ts.tv_nsec = (long)(ns % 1000000000);
  return ts;
}

#endif
