#include "server/metrics.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/grpc_code.h"
#include "server/limits.h"
#include "server/archiver.h"
#include "common/bgthread.h"

/* Upper bounds of the latency buckets in microseconds: 50 us to 10 s in
 * 1-2.5-5 steps, from a cached read to a write held for replica acks. */
static const int64_t eg_bucket_us[] = {50,     100,     250,     500,     1000,    2500,
                                       5000,   10000,   25000,   50000,   100000,  250000,
                                       500000, 1000000, 2500000, 5000000, 10000000};
#define EG_BUCKETS (sizeof eg_bucket_us / sizeof eg_bucket_us[0])

/* One method's counters: relaxed atomic adds on the call path, read only
 * when scraped (a scrape may see a call counted in one and not yet in
 * another; each counter on its own never goes back). */
struct eg_method_stats {
  atomic_uint_fast64_t calls[EG_GRPC_CODES];
  atomic_uint_fast64_t bucket[EG_BUCKETS + 1]; /* last: above 10 s */
  atomic_uint_fast64_t sum_us;
  atomic_int_fast64_t in_flight;
};

struct eg_metrics {
  const char *const *paths;
  size_t n; /* rows: n methods + 1 for unknown methods */
  struct eg_method_stats *rows;
  atomic_int_fast64_t parked;
  size_t render_cap; /* the longest exposition text (see eg_metrics_new) */
  int64_t started_us; /* eg_mono_us() at eg_metrics_new: about the process's start */
};

/* Bytes of s[0..n) as a label value: \, " and newline escaped. */
static size_t eg_escaped_len(const char *s, size_t n) {
  size_t len = n;
  for (size_t i = 0; i < n; i++) len += s[i] == '\\' || s[i] == '"' || s[i] == '\n';
  return len;
}

/* The service and method of row r: "/engram.v1.SessionService/AppendMessages"
 * gives "engram.v1.SessionService" (svc_len bytes) and "AppendMessages". */
static void eg_row_names(const eg_metrics *m, size_t r, const char **svc, size_t *svc_len,
                         const char **meth) {
  const char *p = r < m->n - 1 ? m->paths[r] : "/unknown/unknown";
  const char *s = p[0] == '/' ? p + 1 : p;
  const char *slash = strrchr(s, '/');
  *svc = s;
  *svc_len = slash ? (size_t)(slash - s) : strlen(s);
  *meth = slash ? slash + 1 : s;
}

/* Longest text of one sample line beside its label values: the name and
 * the fixed label text (at most 70 bytes), a 20-digit value or a %.6f of
 * one, and the newline. */
#define EG_LINE_FIXED 112
/* The families whose size does not grow with the methods or replicas:
 * HELP and TYPE lines, one sample each (or one per sweep kind or
 * keyword index); about 8 KiB. */
#define EG_FIXED_TEXT (16 * 1024)
/* engram_replica_lag_*{replica} and engram_replica_connected for every
 * peer: three samples each, an id of at most 127 bytes, escaped at most
 * twice as long. */
#define EG_PEERS_TEXT (EG_REPL_MAX_PEERS * 3 * (EG_LINE_FIXED + 2 * 127))
/* engram_field_tokens{key}: a sample per key a rotation counts under. */
#define EG_TOKENS_TEXT (EG_TOKEN_COUNT_KEYS_MAX * (EG_LINE_FIXED + EG_TOKEN_COUNT_KEY_MAX))

eg_metrics *eg_metrics_new(const char *const *paths, size_t n_methods) {
  eg_metrics *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->paths = paths;
  m->n = n_methods + 1;
  m->started_us = eg_mono_us();
  m->rows = calloc(m->n, sizeof *m->rows);
  if (!m->rows) {
    free(m);
    return NULL;
  }
  /* The worst case, so a scrape is never cut short: every method with
   * every status code counted, its buckets, sum, count and in-flight. */
  m->render_cap = EG_FIXED_TEXT + EG_PEERS_TEXT + EG_TOKENS_TEXT;
  for (size_t r = 0; r < m->n; r++) {
    const char *svc, *meth;
    size_t svc_len;
    eg_row_names(m, r, &svc, &svc_len, &meth);
    size_t path = r < m->n - 1 ? eg_escaped_len(paths[r], strlen(paths[r])) : 7;
    size_t labels = eg_escaped_len(svc, svc_len) + eg_escaped_len(meth, strlen(meth));
    m->render_cap += EG_GRPC_CODES * (EG_LINE_FIXED + path) +
                     (EG_BUCKETS + 4) * (EG_LINE_FIXED + labels);
  }
  return m;
}

size_t eg_metrics_render_cap(const eg_metrics *m) { return m->render_cap; }

void eg_metrics_free(eg_metrics *m) {
  if (!m) return;
  free(m->rows);
  free(m);
}

static struct eg_method_stats *eg_row(eg_metrics *m, size_t method) {
  return &m->rows[method < m->n - 1 ? method : m->n - 1];
}

int64_t eg_metrics_arrive(eg_metrics *m, size_t method) {
  atomic_fetch_add_explicit(&eg_row(m, method)->in_flight, 1, memory_order_relaxed);
  return eg_mono_us();
}

void eg_metrics_count(eg_metrics *m, size_t method, int grpc_code, int64_t arrived_us) {
  struct eg_method_stats *row = eg_row(m, method);
  if (grpc_code < 0 || grpc_code >= EG_GRPC_CODES) grpc_code = 2;
  atomic_fetch_add_explicit(&row->calls[grpc_code], 1, memory_order_relaxed);
  int64_t took = eg_mono_us() - arrived_us;
  if (took < 0) took = 0;
  size_t b = 0;
  while (b < EG_BUCKETS && took > eg_bucket_us[b]) b++;
  atomic_fetch_add_explicit(&row->bucket[b], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&row->sum_us, (uint64_t)took, memory_order_relaxed);
  atomic_fetch_sub_explicit(&row->in_flight, 1, memory_order_relaxed);
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

/* Writes s[0..n) as a label value: \, " and newline escaped. */
static void eg_out_label(struct eg_out *o, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const char *esc = s[i] == '\\' ? "\\\\" : s[i] == '"' ? "\\\"" : s[i] == '\n' ? "\\n" : NULL;
    if (esc) eg_out_printf(o, "%s", esc);
    else eg_out_printf(o, "%c", s[i]);
  }
}

/* `name{service="...",method="..."` for row r, without the closing brace
 * (the caller may add labels). */
static void eg_out_row(struct eg_out *o, const eg_metrics *m, size_t r, const char *name) {
  const char *svc, *meth;
  size_t svc_len;
  eg_row_names(m, r, &svc, &svc_len, &meth);
  eg_out_printf(o, "%s{service=\"", name);
  eg_out_label(o, svc, svc_len);
  eg_out_printf(o, "\",method=\"");
  eg_out_label(o, meth, strlen(meth));
  eg_out_printf(o, "\"");
}

/* Calls by status, latency histograms and in-flight gauges. Every known
 * method has its histogram and gauge from the start (a rate needs the
 * zero before the first call); the unknown-method row only once used. */
static void eg_out_rpcs(struct eg_out *o, const eg_metrics *m) {
  eg_out_printf(o, "# HELP engram_rpc_total Finished calls by method and gRPC status.\n"
                   "# TYPE engram_rpc_total counter\n");
  for (size_t r = 0; r < m->n; r++)
    for (int c = 0; c < EG_GRPC_CODES; c++) {
      uint64_t v = atomic_load_explicit(&m->rows[r].calls[c], memory_order_relaxed);
      if (!v) continue;
      const char *path = r < m->n - 1 ? m->paths[r] : "unknown";
      eg_out_printf(o, "engram_rpc_total{method=\"");
      eg_out_label(o, path, strlen(path));
      eg_out_printf(o, "\",code=\"%s\"} %llu\n", eg_grpc_code_name(c), (unsigned long long)v);
    }
  eg_out_printf(o, "# HELP engram_rpc_duration_seconds Time from a call's arrival to its reply "
                   "(the status sent), by service and method.\n"
                   "# TYPE engram_rpc_duration_seconds histogram\n");
  for (size_t r = 0; r < m->n; r++) {
    const struct eg_method_stats *row = &m->rows[r];
    uint64_t b[EG_BUCKETS + 1], total = 0;
    for (size_t i = 0; i <= EG_BUCKETS; i++)
      total += b[i] = atomic_load_explicit(&row->bucket[i], memory_order_relaxed);
    if (r == m->n - 1 && !total) continue;
    uint64_t cum = 0;
    for (size_t i = 0; i <= EG_BUCKETS; i++) {
      cum += b[i];
      eg_out_row(o, m, r, "engram_rpc_duration_seconds_bucket");
      if (i < EG_BUCKETS) eg_out_printf(o, ",le=\"%g\"} %llu\n", (double)eg_bucket_us[i] / 1e6,
                                        (unsigned long long)cum);
      else eg_out_printf(o, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    eg_out_row(o, m, r, "engram_rpc_duration_seconds_sum");
    eg_out_printf(o, "} %.6f\n",
                  (double)atomic_load_explicit(&row->sum_us, memory_order_relaxed) / 1e6);
    eg_out_row(o, m, r, "engram_rpc_duration_seconds_count");
    eg_out_printf(o, "} %llu\n", (unsigned long long)total);
  }
  eg_out_printf(o, "# HELP engram_rpc_in_flight Calls arrived and not yet replied to (open "
                   "streams included), by service and method.\n"
                   "# TYPE engram_rpc_in_flight gauge\n");
  for (size_t r = 0; r < m->n; r++) {
    int64_t v = atomic_load_explicit(&m->rows[r].in_flight, memory_order_relaxed);
    if (r == m->n - 1 && !v) continue;
    eg_out_row(o, m, r, "engram_rpc_in_flight");
    eg_out_printf(o, "} %lld\n", (long long)v);
  }
}

/* Standard process metrics, from /proc/self (Linux). A file that cannot be
 * read leaves its samples out rather than report a made-up value. */
static void eg_out_process(struct eg_out *o) {
  char buf[1024];
  FILE *f = fopen("/proc/self/stat", "r");
  size_t len = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
  if (f) fclose(f);
  buf[len] = '\0';
  /* After the command name (which may hold spaces and parentheses):
   * field 3 on; utime and stime are fields 14-15 (ticks), starttime 22
   * (ticks after boot), vsize 23 (bytes), rss 24 (pages). */
  const char *p = strrchr(buf, ')');
  unsigned long long ut, st, start, vsize;
  long long rss;
  long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
  if (p && tick > 0 && page > 0 &&
      sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
                    "%*d %llu %llu %lld",
             &ut, &st, &start, &vsize, &rss) == 5) {
    eg_out_printf(o,
                  "# HELP process_cpu_seconds_total User and system CPU time spent in seconds.\n"
                  "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n"
                  "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                  "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %lld\n"
                  "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                  "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %llu\n",
                  (double)(ut + st) / (double)tick, rss * page, vsize);
    unsigned long long btime = 0;
    char line[256];
    if ((f = fopen("/proc/stat", "r"))) {
      while (fgets(line, sizeof line, f) && sscanf(line, "btime %llu", &btime) != 1) {
      }
      fclose(f);
    }
    if (btime)
      eg_out_printf(o, "# HELP process_start_time_seconds Start time of the process since unix "
                       "epoch in seconds.\n"
                       "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n",
                    (double)btime + (double)start / (double)tick);
  }
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    long long n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    eg_out_printf(o, "# HELP process_open_fds Number of open file descriptors.\n"
                     "# TYPE process_open_fds gauge\nprocess_open_fds %lld\n",
                  n - 1 /* the directory's own */);
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
    eg_out_printf(o, "# HELP process_max_fds Maximum number of open file descriptors.\n"
                     "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n",
                  (unsigned long long)rl.rlim_cur);
}

/* Replication lag: a replica's own, the primary's view of each replica. */
static void eg_out_lag(struct eg_out *o, const eg_metrics *m, eg_repl *repl) {
  if (!eg_repl_is_primary(repl)) {
    eg_repl_progress pr;
    eg_repl_progress_get(repl, &pr);
    /* Never caught up since it started: behind for at least that long. */
    int64_t behind_ms = pr.behind_ms >= 0 ? pr.behind_ms : (eg_mono_us() - m->started_us) / 1000;
    eg_out_printf(o,
                  "# HELP engram_replication_lag_records Records the primary had (as last heard) "
                  "that this replica has not applied.\n"
                  "# TYPE engram_replication_lag_records gauge\nengram_replication_lag_records %llu\n"
                  "# HELP engram_replication_lag_seconds Seconds since this replica last held "
                  "everything its primary had (0 while it does; since start if it never did).\n"
                  "# TYPE engram_replication_lag_seconds gauge\nengram_replication_lag_seconds %.3f\n"
                  "# HELP engram_replication_connected 1 while this replica streams from a primary.\n"
                  "# TYPE engram_replication_connected gauge\nengram_replication_connected %d\n",
                  (unsigned long long)(pr.primary_lsn > pr.applied ? pr.primary_lsn - pr.applied : 0),
                  (double)behind_ms / 1e3, pr.connected);
    return;
  }
  eg_repl_peer_lag *peers = calloc(EG_REPL_MAX_PEERS, sizeof *peers);
  size_t n = peers ? eg_repl_peer_lags(repl, peers) : 0;
  static const char *const fam[3][3] = {
      {"engram_replica_lag_records", "gauge",
       "Records committed here that the replica has not acknowledged."},
      {"engram_replica_lag_seconds", "gauge",
       "Seconds since the replica last acknowledged everything committed here (0 while it has)."},
      {"engram_replica_connected", "gauge", "1 while the replica streams from this primary."}};
  for (int f = 0; f < 3; f++) {
    eg_out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", fam[f][0], fam[f][2], fam[f][0], fam[f][1]);
    for (size_t i = 0; i < n; i++) {
      eg_out_printf(o, "%s{replica=\"", fam[f][0]);
      eg_out_label(o, peers[i].id, strlen(peers[i].id));
      if (f == 0) eg_out_printf(o, "\"} %llu\n", (unsigned long long)peers[i].lag_records);
      else if (f == 1) eg_out_printf(o, "\"} %.3f\n", (double)peers[i].lag_us / 1e6);
      else eg_out_printf(o, "\"} %d\n", peers[i].connected);
    }
  }
  free(peers);
}

/* A metric family with one sample per kind of the sweeper's stats
 * (v[1..EG_SWEEP_STORE_EXPIRE]), labelled kind="<eg_sweep_kind_name>". */
static void eg_out_by_kind(struct eg_out *o, const char *name, const char *type, const char *help,
                           const uint64_t v[EG_SWEEP_STAT_KINDS]) {
  eg_out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
  for (unsigned k = 1; k < EG_SWEEP_STAT_KINDS; k++)
    eg_out_printf(o, "%s{kind=\"%s\"} %llu\n", name, eg_sweep_kind_name(k),
                  (unsigned long long)v[k]);
}

/* A metric family with one sample per keyword index (server/reindex.h),
 * labelled index="<eg_reindex_name>". */
static void eg_out_by_index(struct eg_out *o, const char *name, const char *type, const char *help,
                            const uint64_t v[EG_REINDEX_INDEXES]) {
  eg_out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
  for (unsigned i = 0; i < EG_REINDEX_INDEXES; i++)
    eg_out_printf(o, "%s{index=\"%s\"} %llu\n", name, eg_reindex_name(i),
                  (unsigned long long)v[i]);
}

size_t eg_metrics_render(const eg_metrics *m, const eg_store *store, const eg_writer *writer,
                         const eg_sweeper *sweeper, const eg_reindex *reindex,
                         eg_key_rotation *rotation, eg_archiver *archiver, eg_repl *repl,
                         const eg_coord *coord, char *buf, size_t cap) {
  struct eg_out o = {buf, cap, 0};
  if (cap) buf[0] = '\0';
  eg_out_printf(&o, "# HELP engram_build_info The engramd version; always 1.\n"
                    "# TYPE engram_build_info gauge\nengram_build_info{version=\"%s\"} 1\n",
                ENGRAM_VERSION);
  eg_out_rpcs(&o, m);
  eg_out_printf(&o,
                "# HELP engram_parked_reads Reads waiting for their engram-min-lsn.\n"
                "# TYPE engram_parked_reads gauge\nengram_parked_reads %lld\n",
                (long long)atomic_load_explicit(&m->parked, memory_order_relaxed));
  /* By kind only: a tenant label would make one series per tenant, as
   * many as the tokens file names (GetTenantLimits has each tenant's). */
  uint64_t refused[EG_LIMIT_KINDS];
  eg_limits_refused_totals(refused);
  eg_out_printf(&o, "# HELP engram_tenant_refused_total Calls refused by a per-tenant limit, by "
                    "limit.\n# TYPE engram_tenant_refused_total counter\n");
  for (int k = 0; k < EG_LIMIT_KINDS; k++)
    eg_out_printf(&o, "engram_tenant_refused_total{limit=\"%s\"} %llu\n",
                  eg_limit_kind_name((eg_limit_kind)k), (unsigned long long)refused[k]);
  if (writer) {
    uint64_t batches, items;
    eg_writer_stats(writer, &batches, &items);
    eg_out_printf(&o,
                  "# HELP engram_writer_batches_total Write transactions committed.\n"
                  "# TYPE engram_writer_batches_total counter\nengram_writer_batches_total %llu\n"
                  "# HELP engram_writer_items_total Write calls applied in those transactions.\n"
                  "# TYPE engram_writer_items_total counter\nengram_writer_items_total %llu\n",
                  (unsigned long long)batches, (unsigned long long)items);
  }
  if (store)
    eg_out_printf(&o,
                  "# HELP engram_last_lsn LSN of the last durable write.\n"
                  "# TYPE engram_last_lsn gauge\nengram_last_lsn %llu\n"
                  "# HELP engram_map_size_bytes Current LMDB map size.\n"
                  "# TYPE engram_map_size_bytes gauge\nengram_map_size_bytes %zu\n"
                  "# HELP engram_store_flushes_total Device flushes of the data file by commits "
                  "and syncs (--meta-sync: commit, two per commit; next-flush, one).\n"
                  "# TYPE engram_store_flushes_total counter\nengram_store_flushes_total %llu\n",
                  (unsigned long long)eg_store_last_lsn(store), eg_store_map_size(store),
                  (unsigned long long)eg_store_flushes(store));
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
  if (reindex) {
    eg_reindex_stats st;
    eg_reindex_get_stats(reindex, &st);
    eg_out_by_index(&o, "engram_reindex_records_total", "counter",
                    "Records this node's background reindex walked, by keyword index.",
                    st.records);
    eg_out_by_index(&o, "engram_reindex_skipped_total", "counter",
                    "Records this node's background reindex left below its target version: "
                    "unreadable, or refused by the write (each logged), by keyword index.",
                    st.skipped);
    eg_out_by_index(&o, "engram_reindex_pending", "gauge",
                    "Records a running background reindex has still to walk (total - done; 0 "
                    "when none runs), by keyword index.",
                    st.pending);
  }
  if (rotation) {
    eg_token_count c[EG_TOKEN_COUNT_KEYS_MAX];
    size_t n = eg_key_rotation_token_counts(rotation, c, EG_TOKEN_COUNT_KEYS_MAX);
    eg_out_printf(&o, "# HELP engram_field_tokens Stored field tokens under each key "
                      "(\"master:<id>\": a master key, \"data:<generation>\": users' data keys), "
                      "as the last data-key rotation counted them.\n"
                      "# TYPE engram_field_tokens gauge\n");
    for (size_t i = 0; i < n; i++)
      eg_out_printf(&o, "engram_field_tokens{key=\"%s\"} %llu\n", c[i].key,
                    (unsigned long long)c[i].tokens);
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
  if (repl) eg_out_lag(&o, m, repl);
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
  eg_out_process(&o);
  return o.len;
}

/* ==== the HTTP endpoint ===================================================== */

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
  const eg_reindex *reindex;
  eg_key_rotation *rotation;
  eg_archiver *archiver;
  eg_repl *repl;
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
 * out). Only GET /metrics answers 200 (the raw path: eg_metrics_raw_path). */
static enum MHD_Result eg_metrics_handle(void *cls, struct MHD_Connection *conn, const char *url,
                                         const char *method, const char *version,
                                         const char *upload_data, size_t *upload_size,
                                         void **req_cls) {
  eg_metrics_http *h = cls;
  if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
    return eg_metrics_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, NULL, 0);
  if (strcmp(url, "/metrics") != 0) return eg_metrics_reply(conn, MHD_HTTP_NOT_FOUND, NULL, 0);
  /* Sized for the worst case (eg_metrics_render_cap): a scrape is never
   * cut short, and what it allocates stays bounded. */
  size_t cap = eg_metrics_render_cap(h->m);
  char *body = malloc(cap);
  if (!body) return eg_metrics_reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, 0);
  size_t len = eg_metrics_render(h->m, h->store, h->writer, h->sweeper, h->reindex, h->rotation,
                                 h->archiver,
                                 h->repl, h->coord, body, cap);
  return eg_metrics_reply(conn, MHD_HTTP_OK, body, len);
}

/* libmicrohttpd's unescaper, replaced by one that keeps the path as sent:
 * the handler compares the raw path, so "/metrics%00" or "/%6detrics" is
 * not /metrics (404). */
static size_t eg_metrics_raw_path(void *cls, struct MHD_Connection *conn, char *s) {
  (void)cls;
  (void)conn;
  return strlen(s);
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
                             const eg_reindex *reindex, eg_key_rotation *rotation,
                             eg_archiver *archiver, eg_repl *repl,
                             const eg_coord *coord,
                             eg_metrics_http **out, char *err, size_t errlen) {
  struct sockaddr_in sa;
  if (eg_metrics_addr(addr, &sa) != 0) {
    snprintf(err, errlen, "--metrics-listen %s: want IPv4-HOST:PORT", addr);
    return EG_EINVAL;
  }
  eg_metrics_http *h = calloc(1, sizeof *h);
  if (!h) return EG_ENOMEM;
  *h = (eg_metrics_http){
      .m = m, .store = store, .writer = writer, .sweeper = sweeper, .reindex = reindex,
      .rotation = rotation,
      .archiver = archiver,
      .repl = repl, .coord = coord};
  for (size_t i = 0; i < EG_METRICS_MAX_CONNECTIONS; i++) h->conns[i].fd = -1;
  char why[128];
  eg_err e = eg_bgthread_start(&h->watchdog, eg_metrics_watchdog, h, "conn watchdog",
                               "connection watchdog", why,
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
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)EG_METRICS_CONN_TIMEOUT_S,
      MHD_OPTION_UNESCAPE_CALLBACK, eg_metrics_raw_path, NULL, MHD_OPTION_END);
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
