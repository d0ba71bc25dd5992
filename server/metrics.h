/*
 * Prometheus metrics: per-method call counts by gRPC status code, latency
 * histograms and in-flight gauges, the writer's batches, the store's LSN
 * and map size, replication lag, the sweeper's and the background
 * reindex's progress, field tokens per key (data-key rotation), process
 * metrics and the build, served as text on --metrics-listen (GET /metrics;
 * any other path 404). Counting is a relaxed atomic add on the call path;
 * rendering happens only when scraped. docs/operations.md lists them.
 */
#ifndef EG_SERVER_METRICS_H
#define EG_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "coord/coord.h"
#include "replica/replica.h"
#include "server/archiver.h"
#include "server/key_rotation.h"
#include "server/reindex.h"
#include "server/sweeper.h"
#include "server/writer.h"
#include "storage/storage.h"

typedef struct eg_metrics eg_metrics;

/* n_methods counters rows named by paths[]; one more row counts unknown
 * methods. The strings must outlive m. */
eg_metrics *eg_metrics_new(const char *const *paths, size_t n_methods);
void eg_metrics_free(eg_metrics *m);

/* A call arrived (method SIZE_MAX: an unknown method): one more in flight.
 * Returns the arrival time to pass to eg_metrics_count. Thread safety:
 * any thread. */
int64_t eg_metrics_arrive(eg_metrics *m, size_t method);

/* Counts one finished call: its status, and its time since arrived_us
 * (eg_metrics_arrive's answer) in the latency histogram; one fewer in
 * flight. Exactly once per eg_metrics_arrive. Thread safety: any thread. */
void eg_metrics_count(eg_metrics *m, size_t method, int grpc_code, int64_t arrived_us);

/* A read parked to wait for its engram-min-lsn (+1) or answered from
 * parking (-1): the engram_parked_reads gauge. Thread safety: any thread. */
void eg_metrics_parked(eg_metrics *m, int delta);

/* The longest text eg_metrics_render can write, with its NUL: every
 * method with every status code, every replica a primary can hold. */
size_t eg_metrics_render_cap(const eg_metrics *m);

/* Writes the exposition text into buf; returns its length (truncated at
 * cap - 1; never with cap >= eg_metrics_render_cap). store, writer,
 * sweeper, reindex, rotation, archiver, repl and coord may be NULL
 * (coord: static roles). */
size_t eg_metrics_render(const eg_metrics *m, const eg_store *store, const eg_writer *writer,
                         const eg_sweeper *sweeper, const eg_reindex *reindex,
                         eg_key_rotation *rotation, eg_archiver *archiver, eg_repl *repl,
                         const eg_coord *coord, char *buf, size_t cap);

/* Serves GET /metrics on addr (IPv4-HOST:PORT; port 0 picks a free one)
 * with libmicrohttpd on one polling thread of its own: at most 32
 * connections, each closed after 10 s without progress, so idle or
 * stalled clients delay neither a scrape nor stop. EG_EINVAL with err set
 * for a malformed or unbindable address. */
typedef struct eg_metrics_http eg_metrics_http;
eg_err eg_metrics_http_start(const char *addr, const eg_metrics *m, const eg_store *store,
                             const eg_writer *writer, const eg_sweeper *sweeper,
                             const eg_reindex *reindex, eg_key_rotation *rotation,
                             eg_archiver *archiver, eg_repl *repl, const eg_coord *coord,
                             eg_metrics_http **out, char *err, size_t errlen);
/* The port the endpoint listens on (the one picked for port 0). */
int eg_metrics_http_port(const eg_metrics_http *h);
/* Closes every connection and joins the thread. NULL is fine. */
void eg_metrics_http_stop(eg_metrics_http *h);

#endif
