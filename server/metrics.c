#include "server/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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

size_t eg_metrics_render(const eg_metrics *m, const eg_store *store, const eg_writer *writer,
                         char *buf, size_t cap) {
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
  return o.len;
}

/* ==== the HTTP endpoint ===================================================== */

#define EG_METRICS_BUF (256 * 1024)

struct eg_metrics_http {
  const eg_metrics *m;
  const eg_store *store;
  const eg_writer *writer;
  int fd;
  int stop_pipe[2];
  pthread_t thread;
};

static void eg_metrics_answer(eg_metrics_http *h, int cfd, char *body) {
  char req[1024];
  /* One read is enough for a scrape's request line; anything else gets 404. */
  ssize_t n = read(cfd, req, sizeof req - 1);
  if (n <= 0) return;
  req[n] = '\0';
  char head[256];
  size_t len = 0;
  int ok = strncmp(req, "GET /metrics", 12) == 0;
  if (ok) len = eg_metrics_render(h->m, h->store, h->writer, body, EG_METRICS_BUF);
  int hl = snprintf(head, sizeof head,
                    "HTTP/1.0 %s\r\nContent-Type: text/plain; version=0.0.4\r\n"
                    "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                    ok ? "200 OK" : "404 Not Found", len);
  if (write(cfd, head, (size_t)hl) == hl && len) {
    for (size_t off = 0; off < len;) {
      ssize_t w = write(cfd, body + off, len - off);
      if (w <= 0) break;
      off += (size_t)w;
    }
  }
}

static void *eg_metrics_main(void *arg) {
  eg_metrics_http *h = arg;
  char *body = malloc(EG_METRICS_BUF);
  struct pollfd p[2] = {{.fd = h->fd, .events = POLLIN}, {.fd = h->stop_pipe[0], .events = POLLIN}};
  while (body && poll(p, 2, -1) >= 0 && !(p[1].revents & POLLIN)) {
    if (!(p[0].revents & POLLIN)) continue;
    int cfd = accept(h->fd, NULL, NULL);
    if (cfd < 0) continue;
    struct timeval tv = {.tv_sec = 2};
    setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    eg_metrics_answer(h, cfd, body);
    close(cfd);
  }
  free(body);
  return NULL;
}

static int eg_metrics_bind(const char *addr, char *err, size_t errlen) {
  char host[128];
  const char *colon = strrchr(addr, ':');
  struct sockaddr_in sa = {.sin_family = AF_INET};
  if (!colon || (size_t)(colon - addr) >= sizeof host) goto bad;
  snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
  sa.sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &sa.sin_addr) != 1) goto bad;
  int one = 1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 16) != 0) {
    snprintf(err, errlen, "--metrics-listen %s: cannot bind", addr);
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
bad:
  snprintf(err, errlen, "--metrics-listen %s: want IPv4-HOST:PORT", addr);
  return -1;
}

eg_err eg_metrics_http_start(const char *addr, const eg_metrics *m, const eg_store *store,
                             const eg_writer *writer, eg_metrics_http **out, char *err,
                             size_t errlen) {
  eg_metrics_http *h = calloc(1, sizeof *h);
  if (!h) return EG_ENOMEM;
  *h = (eg_metrics_http){.m = m, .store = store, .writer = writer};
  if ((h->fd = eg_metrics_bind(addr, err, errlen)) < 0) {
    free(h);
    return EG_EINVAL;
  }
  if (pipe(h->stop_pipe) != 0 || pthread_create(&h->thread, NULL, eg_metrics_main, h) != 0) {
    close(h->fd);
    free(h);
    return EG_ENOMEM;
  }
  *out = h;
  return EG_OK;
}

void eg_metrics_http_stop(eg_metrics_http *h) {
  if (!h) return;
  if (write(h->stop_pipe[1], "x", 1) != 1) fprintf(stderr, "engramd: metrics: cannot signal stop\n");
  pthread_join(h->thread, NULL);
  close(h->fd);
  close(h->stop_pipe[0]);
  close(h->stop_pipe[1]);
  free(h);
}
