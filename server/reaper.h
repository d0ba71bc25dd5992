/*
 * The reply-time cap of unary calls (--call-timeout-ms). A reply the
 * client does not read (a receive window kept at 0, a reader that stopped)
 * pins its buffers for as long as the call lives, and a call that arrives
 * without a deadline lives forever. Every unary call is registered here
 * when it arrives; one thread cancels (DEADLINE_EXCEEDED) each one still
 * registered at its time, which makes gRPC fail its pending batches and so
 * frees it. Streaming calls are not registered: they keep their own
 * heartbeats and timeouts.
 *
 * The same thread hands memory back to the system once the server is idle
 * after large replies (glibc keeps freed heap otherwise).
 */
#ifndef EG_SERVER_REAPER_H
#define EG_SERVER_REAPER_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "common/err.h"

/* The thread's period: a call is cancelled at most this late. */
#define EG_REAPER_TICK_MS 100
/* Reply bytes sent since the last trim that make an idle server trim. */
#define EG_REAPER_TRIM_BYTES ((size_t)16 << 20)

/* One registered call; embedded in the caller's call object. */
typedef struct eg_reaped eg_reaped;
struct eg_reaped {
  eg_reaped *prev, *next; /* guarded by the reaper's mutex */
  grpc_call *call;
  int64_t until_us; /* eg_mono_us */
  int linked;
};

typedef struct eg_reaper eg_reaper;

/* Starts the thread; timeout_ms names the flag value in the cancel
 * message. EG_EUNAVAIL (and a reason in err) if the thread cannot start. */
eg_err eg_reaper_start(int64_t timeout_ms, eg_reaper **out, char *err, size_t errlen);

/* The status message of a call cancelled at --call-timeout-ms, for anyone
 * else who ends a call at that cap (a parked read): the same words either
 * way. Valid until eg_reaper_stop. Thread safety: any thread. */
const char *eg_reaper_message(const eg_reaper *r);

/* Registers call until until_us. Thread safety: any thread. */
void eg_reaper_add(eg_reaper *r, eg_reaped *e, grpc_call *call, int64_t until_us);

/* Unregisters e (a no-op if the reaper already cancelled it or it was never
 * added). After it returns the reaper no longer touches e or its call, so
 * the caller may free both. Thread safety: any thread. */
void eg_reaper_remove(eg_reaper *r, eg_reaped *e);

/* Counts reply bytes, for the trim after a burst. Thread safety: any. */
void eg_reaper_sent(eg_reaper *r, size_t bytes);

/* Stops the thread and frees r; nothing may be registered any more. */
void eg_reaper_stop(eg_reaper *r);

#endif
