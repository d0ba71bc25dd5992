#include "server/metrics.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "server/archiver.h"
#include "server/bgthread.h"

/* grpc_status_code runs 0..16. */
#define EG_GRPC_CODES 17

static const char *const eg_code_names[EG_GRPC_CODES] = {
    "OK",       "CANCELLED",          "UNKNOWN",           "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS",    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",      "UNIMPLEMENTED",    "INTERNAL",
    "UNAVAILABLE", "DATA_LOSS",       "UNAUTHENTICATED"};

struct eg_metrics {
  const char *const *paths;
  size_t n; /* rows: n methods + 1 for unknown methods */
  atomic_uint_fast64_t (*calls)[EG_GRPC_CODES];
  atomic_int_fast64_t parked;
};

eg_metrics *eg_metrics_new(const char *const *paths, size_t n_methods) {
  eg_metrics *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->paths = paths;
  m->n = n_methods + 1;
  m->calls = calloc(m->n, sizeof *m->calls);
  if (!m->calls) {
    free(m);
    return NULL;
  }
  return m;
}

void eg_metrics_free(eg_metrics *m) {
  if (!m) return;
  free(m->calls);
  free(m);
}

void eg_metrics_count(eg_metrics *m, size_t method, int grpc_code) {
  size_t row = method < m->n - 1 ? method : m->n - 1;
  if (grpc_code < 0 || grpc_code >= EG_GRPC_CODES) grpc_code = 2;
  atomic_fetch_add_explicit(&m->calls[row][grpc_code], 1, memory_order_relaxed);
}

void eg_metrics_parked(eg_metrics *m, int delta) {
  atomic_fetch_add_explicit(&m->parked, delta, memory_order_relaxed);
}

struct eg_out {
  char *buf;
  size_t cap, len;
};

__attribute__((format(printf, 2, 3))) static void eg_out_printf(struct eg_out *o, const char *fmt, ...) {
  if (o->len + 1 >= o->cap) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
  va_end(ap);
  if (n > 0) o->len = o->len + (size_t)n < o->cap ? o->len + (size_t)n : o->cap - 1;
}

/* A metric family with one sample per sweep_due kind (v[1..EG_SWEEP_KIND_MAX]),
 * labelled kind="<eg_sweep_kind_name>". */
static void eg_out_by_kind(struct eg_out *o, const char *name, const char *type, const char *help,
                           const uint64_t v[EG_SWEEP_KIND_MAX + 1]) {
  eg_out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
  for (unsigned k = 1; k <= EG_SWEEP_KIND_MAX; k++)
    eg_out_printf(o, "%s{kind=\"%s\"} %llu\n", name, eg_sweep_kind_name(k),
                  (unsigned long long)v[k]);
}

size_t eg_metrics_render(const eg_metrics *m, const eg_store *store, const eg_writer *writer,
                         const eg_sweeper *sweeper, eg_archiver *archiver, const eg_repl *repl,
                         const eg_coord *coord, char *buf, size_t cap) {
  struct eg_out o = {buf, cap, 0};
  if (cap) buf[0] = '\0';
  eg_out_printf(&o, "# HELP engram_rpc_total Finished calls by method and gRPC status.\n"
                    "# TYPE engram_rpc_total counter\n");
  for (size_t r = 0; r < m->n; r++)
    for (int c = 0; c < EG_GRPC_CODES; c++) {
      uint64_t v = atomic_load_explicit(&m->calls[r][c], memory_order_relaxed);
      if (v)
        eg_out_printf(&o, "engram_rpc_total{method=\"%s\",code=\"%s\"} %llu\n",
                      r < m->n - 1 ? m->paths[r] : "unknown", eg_code_names[c],
                      (unsigned long long)v);
    }
  eg_out_printf(&o,
                "# HELP engram_parked_reads Reads waiting for their engram-min-lsn.\n"
                "# TYPE engram_parked_reads gauge\nengram_parked_reads %lld\n",
                (long long)atomic_load_explicit(&m->parked, memory_order_relaxed));
  if (writer) {
    uint64_t batches, items;
    eg_writer_stats(writer, &batches, &items);
    eg_out_printf(&o,
                  "# HELP engram_writer_batches_total Write transactions committed (one fsync each).\n"
                  "# TYPE engram_writer_batches_total counter\nengram_writer_batches_total %llu\n"
                  "# HELP engram_writer_items_total Write calls applied in those transactions.\n"
                  "# TYPE engram_writer_items_total counter\nengram_writer_items_total %llu\n",
                  (unsigned long long)batches, (unsigned long long)items);
  }
  if (store)
    eg_out_printf(&o,
                  "# HELP engram_last_lsn LSN of the last committed write.\n"
                  "# TYPE engram_last_lsn gauge\nengram_last_lsn %llu\n"
                  "# HELP engram_map_size_bytes Current LMDB map size.\n"
                  "# TYPE engram_map_size_bytes gauge\nengram_map_size_bytes %zu\n",
                  (unsigned long long)eg_store_last_lsn(store), eg_store_map_size(store));
  if (sweeper) {
    eg_sweeper_stats st;
    eg_sweeper_get_stats(sweeper, &st);
    eg_out_by_kind(&o, "engram_swept_total", "counter",
                   "Records the sweeper deleted, by kind of due work.", st.swept);
    eg_out_by_kind(&o, "engram_sweep_backlog", "gauge",
                   "Due entries the sweeper found and left for a later step (counted up to "
                   "--sweep-batch per tenant).",
                   st.backlog);
    eg_out_printf(&o, "# HELP engram_last_sweep_timestamp_seconds End of the sweeper's last full "
                      "pass (0: none yet).\n"
                      "# TYPE engram_last_sweep_timestamp_seconds gauge\n"
                      "engram_last_sweep_timestamp_seconds %.3f\n",
                  (double)st.last_sweep_us / 1e6);
  }
  if (archiver) {
    eg_archiver_stats st;
    eg_archiver_get_stats(archiver, &st);
    eg_out_printf(&o,
                  "# HELP engram_wal_archived_lsn Last LSN the WAL archiver wrote and fsync'd.\n"
                  "# TYPE engram_wal_archived_lsn gauge\nengram_wal_archived_lsn %llu\n"
                  "# HELP engram_wal_archive_segments_total Archive segments closed.\n"
                  "# TYPE engram_wal_archive_segments_total counter\n"
                  "engram_wal_archive_segments_total %llu\n"
                  "# HELP engram_wal_archive_errors_total Failed archive attempts (I/O errors).\n"
                  "# TYPE engram_wal_archive_errors_total counter\n"
                  "engram_wal_archive_errors_total %llu\n"
                  "# HELP engram_wal_archive_gaps_total Times the archive could not go on from its "
                  "tip (records no longer in the log, or another history).\n"
                  "# TYPE engram_wal_archive_gaps_total counter\nengram_wal_archive_gaps_total %llu\n",
                  (unsigned long long)st.archived_lsn, (unsigned long long)st.segments,
                  (unsigned long long)st.errors, (unsigned long long)st.gaps);
  }
  if (repl)
    eg_out_printf(&o, "# HELP engram_is_primary 1 while this node is the primary.\n"
                      "# TYPE engram_is_primary gauge\nengram_is_primary %d\n",
                  eg_repl_is_primary(repl));
  if (repl && coord) {
    eg_coord_status cs;
    eg_coord_status_get(coord, &cs);
    eg_out_printf(&o,
                  "# HELP engram_coordinator_up 1 when the coordinator's last call to etcd worked.\n"
                  "# TYPE engram_coordinator_up gauge\nengram_coordinator_up %d\n"
                  "# HELP engram_fenced 1 while this primary may not acknowledge writes (its etcd "
                  "lease may have run out).\n"
                  "# TYPE engram_fenced gauge\nengram_fenced %d\n"
                  "# HELP engram_elections_won_total Elections this node won since it started.\n"
                  "# TYPE engram_elections_won_total counter\nengram_elections_won_total %llu\n",
                  cs.etcd_ok, eg_repl_is_primary(repl) && eg_repl_fenced(repl),
                  (unsigned long long)cs.elections_won);
  }
  return o.len;
}

/* ==== the HTTP endpoint ===================================================== */

/* The exposition text is a few KiB (one line per method and status seen);
 * the cap bounds what one scrape allocates. */
#define EG_METRICS_BUF (256 * 1024)
/* A scraper opens one connection at a time; the cap bounds the sockets and
 * memory that idle or stalled clients can hold. Beyond it libmicrohttpd
 * refuses new connections at once instead of queueing them. */
#define EG_METRICS_MAX_CONNECTIONS 32
/* Connections one address may hold: another address (the scraper on
 * another host) always finds room. Half the cap, so a loopback scraper
 * still gets in beside a few idle loopback connections. */
#define EG_METRICS_MAX_PER_IP 16
/* Seconds a connection may live at all. The idle timeout below restarts on
 * every byte, so a client sending one header byte every few seconds
 * (slowloris) would hold its slot forever; a scrape takes milliseconds, and
 * a scraper reconnects for each scrape (the idle timeout closes its
 * connection between scrapes anyway). */
#define EG_METRICS_MAX_AGE_S 5
/* How often the watchdog looks: a connection is cut at most this late. */
#define EG_METRICS_WATCHDOG_MS 500
/* Seconds a connection may sit without progress (an idle client, or one
 * that stopped reading its reply) before it is closed. */
#define EG_METRICS_CONN_TIMEOUT_S 10

/* An open connection, for the age limit. */
struct eg_metrics_conn {
  int fd;            /* -1: free slot */
  int64_t opened_us; /* eg_mono_us() at accept */
  int cut;           /* shut down already */
};

struct eg_metrics_http {
  const eg_metrics *m;
  const eg_store *store;
  const eg_writer *writer;
  const eg_sweeper *sweeper;
  eg_archiver *archiver;
  const eg_repl *repl;
  const eg_coord *coord;
  struct MHD_Daemon *daemon;
  int port;
  /* The age limit: MHD's thread adds and removes connections, the
   * watchdog cuts old ones. watchdog.mu also keeps a slot's fd open (MHD
   * closes it only after its CLOSED notification) while the watchdog shuts
   * it down. */
  eg_bgthread watchdog;
  struct eg_metrics_conn conns[EG_METRICS_MAX_CONNECTIONS];
};

static void eg_metrics_notify(void *cls, struct MHD_Connection *conn, void **socket_ctx,
                              enum MHD_ConnectionNotificationCode toe) {
  eg_metrics_http *h = cls;
  pthread_mutex_lock(&h->watchdog.mu);
  if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    for (size_t i = 0; ci && i < EG_METRICS_MAX_CONNECTIONS; i++)
      if (h->conns[i].fd < 0) {
        h->conns[i] = (struct eg_metrics_conn){.fd = ci->connect_fd, .opened_us = eg_mono_us()};
        *socket_ctx = &h->conns[i];
        break;
      }
  } else if (*socket_ctx) {
    ((struct eg_metrics_conn *)*socket_ctx)->fd = -1;
    *socket_ctx = NULL;
  }
  pthread_mutex_unlock(&h->watchdog.mu);
}

/* Every EG_METRICS_WATCHDOG_MS, shuts down connections older than
 * EG_METRICS_MAX_AGE_S: MHD then sees the socket end and closes the
 * connection itself. */
static void *eg_metrics_watchdog(void *arg) {
  eg_metrics_http *h = arg;
  pthread_mutex_lock(&h->watchdog.mu);
  while (!h->watchdog.stopping) {
    int64_t cutoff = eg_mono_us() - (int64_t)EG_METRICS_MAX_AGE_S * 1000000;
    for (size_t i = 0; i < EG_METRICS_MAX_CONNECTIONS; i++) {
      struct eg_metrics_conn *c = &h->conns[i];
      if (c->fd >= 0 && !c->cut && c->opened_us < cutoff) {
        shutdown(c->fd, SHUT_RDWR);
        c->cut = 1;
      }
    }
    eg_bgthread_sleep(&h->watchdog, EG_METRICS_WATCHDOG_MS);
  }
  pthread_mutex_unlock(&h->watchdog.mu);
  return NULL;
}

/* Stops the watchdog and frees h (the daemon is stopped already). */
static void eg_metrics_http_free(eg_metrics_http *h) {
  eg_bgthread_stop(&h->watchdog);
  free(h);
}

static enum MHD_Result eg_metrics_reply(struct MHD_Connection *conn, unsigned status,
                                        char *body, size_t len) {
  struct MHD_Response *resp =
      MHD_create_response_from_buffer(len, body, body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
  if (!resp) {
    free(body);
    return MHD_NO;
  }
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4");
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET");
  enum MHD_Result r = MHD_queue_response(conn, status, resp);
  MHD_destroy_response(resp);
  return r;
}

/* libmicrohttpd's request handler: runs on its polling thread, never
 * blocks (sockets are non-blocking; a slow reader is the daemon's to time
 * out). Only GET /metrics answers 200. */
static enum MHD_Result eg_metrics_handle(void *cls, struct MHD_Connection *conn, const char *url,
                                         const char *method, const char *version,
                                         const char *upload_data, size_t *upload_size,
                                         void **req_cls) {
  eg_metrics_http *h = cls;
  if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
    return eg_metrics_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, NULL, 0);
  if (strcmp(url, "/metrics") != 0) return eg_metrics_reply(conn, MHD_HTTP_NOT_FOUND, NULL, 0);
  char *body = malloc(EG_METRICS_BUF);
  if (!body) return eg_metrics_reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, 0);
  size_t len = eg_metrics_render(h->m, h->store, h->writer, h->sweeper, h->archiver, h->repl,
                                 h->coord, body,
                                 EG_METRICS_BUF);
  return eg_metrics_reply(conn, MHD_HTTP_OK, body, len);
}

/* Parses IPv4-HOST:PORT ("" host: every address) into sa. */
static int eg_metrics_addr(const char *addr, struct sockaddr_in *sa) {
  char host[128];
  const char *colon = strrchr(addr, ':');
  char *end = NULL;
  if (!colon || (size_t)(colon - addr) >= sizeof host) return -1;
  snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
  long port = strtol(colon + 1, &end, 10);
  if (end == colon + 1 || *end || port < 0 || port > 65535) return -1;
  *sa = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  return inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &sa->sin_addr) == 1 ? 0 : -1;
}

eg_err eg_metrics_http_start(const char *addr, const eg_metrics *m, const eg_store *store,
                             const eg_writer *writer, const eg_sweeper *sweeper,
                             eg_archiver *archiver, const eg_repl *repl, const eg_coord *coord,
                             eg_metrics_http **out, char *err, size_t errlen) {
  struct sockaddr_in sa;
  if (eg_metrics_addr(addr, &sa) != 0) {
    snprintf(err, errlen, "--metrics-listen %s: want IPv4-HOST:PORT", addr);
    return EG_EINVAL;
  }
  eg_metrics_http *h = calloc(1, sizeof *h);
  if (!h) return EG_ENOMEM;
  *h = (eg_metrics_http){
      .m = m, .store = store, .writer = writer, .sweeper = sweeper, .archiver = archiver,
      .repl = repl, .coord = coord};
  for (size_t i = 0; i < EG_METRICS_MAX_CONNECTIONS; i++) h->conns[i].fd = -1;
  char why[128];
  eg_err e = eg_bgthread_start(&h->watchdog, eg_metrics_watchdog, h, "connection watchdog", why,
                               sizeof why);
  if (e != EG_OK) {
    snprintf(err, errlen, "--metrics-listen %s: %s", addr, why);
    free(h);
    return e;
  }
  /* One internal polling thread: every socket is non-blocking, so no client
   * can hold up another's scrape or MHD_stop_daemon. */
  h->daemon = MHD_start_daemon(
      MHD_USE_AUTO_INTERNAL_THREAD, 0, NULL, NULL, eg_metrics_handle, h,
      MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
      MHD_OPTION_CONNECTION_LIMIT, (unsigned)EG_METRICS_MAX_CONNECTIONS,
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)EG_METRICS_MAX_PER_IP,
      MHD_OPTION_NOTIFY_CONNECTION, eg_metrics_notify, h,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)EG_METRICS_CONN_TIMEOUT_S, MHD_OPTION_END);
  const union MHD_DaemonInfo *info =
      h->daemon ? MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT) : NULL;
  if (!info) {
    snprintf(err, errlen, "--metrics-listen %s: cannot bind", addr);
    if (h->daemon) MHD_stop_daemon(h->daemon);
    eg_metrics_http_free(h);
    return EG_EINVAL;
  }
  h->port = info->port;
  *out = h;
  return EG_OK;
}

int eg_metrics_http_port(const eg_metrics_http *h) { return h->port; }

void eg_metrics_http_stop(eg_metrics_http *h) {
  if (!h) return;
  MHD_stop_daemon(h->daemon);
  eg_metrics_http_free(h);
}
