/*
 * The gRPC side of engramd: one grpc_server, W worker threads each with its
 * own completion queue, every method of the service tables registered with
 * its payload read up front, and one unregistered request kept armed so an
 * unknown method is answered UNIMPLEMENTED at once.
 */
#ifndef EG_SERVER_TRANSPORT_H
#define EG_SERVER_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "server/metrics.h"
#include "server/service.h"
#include "server/writer.h"

typedef struct eg_transport eg_transport;

/* Binds listen (HOST:PORT; port 0 picks a free one, reported in *port),
 * starts the workers. grpc_init() must have been called. On failure writes
 * a reason into err. */
eg_err eg_transport_start(const eg_srv *srv, eg_writer *writer, int workers, const char *listen,
                          int *port, eg_transport **out, char *err, size_t errlen);

/* Stops accepting calls, lets in-flight calls finish for up to grace_ms
 * (then cancels the rest), stops the workers and frees t. The writer must
 * still be running: queued writes are answered before this returns. */
void eg_transport_stop(eg_transport *t, int64_t grace_ms);

/* The transport's call counters (valid until eg_transport_stop). */
const eg_metrics *eg_transport_metrics(const eg_transport *t);

#endif
