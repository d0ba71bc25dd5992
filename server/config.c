/*
 * engramd configuration. Every option is one row of eg_opts: its flag
 * name, where it lives in eg_config, its range or choices, its default and
 * its help line. Defaults, the environment, flags and --help all read that
 * one table.
 */
#include "server/config.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "coord/coord.h"
#include "replica/replica.h"
#include "server/validate.h"

typedef enum { EG_OPT_STR, EG_OPT_NUM } eg_opt_kind;

typedef struct {
  const char *name; /* flag without "--"; env is ENGRAM_ + upper case */
  eg_opt_kind kind;
  size_t offset; /* of the field in eg_config */
  size_t size;   /* of the field: char[] capacity, or sizeof int / int64_t */
  int64_t min, max;    /* EG_OPT_NUM */
  const char *choices; /* EG_OPT_STR: "a|b" allowed values, or NULL for any */
  const char *def;     /* default, parsed like any other value */
  const char *help;
  int secret; /* its value never appears in a log (eg_config_describe) */
} eg_opt;

#define EG_FIELD(f) offsetof(eg_config, f), sizeof(((eg_config *)0)->f)
#define EG_STR(name, f, choices, def, help) \
  {name, EG_OPT_STR, EG_FIELD(f), 0, 0, choices, def, help}
#define EG_NUM(name, f, min, max, def, help) \
  {name, EG_OPT_NUM, EG_FIELD(f), min, max, NULL, def, help}
#define EG_SECRET(name, f, def, help) {name, EG_OPT_STR, EG_FIELD(f), 0, 0, NULL, def, help, 1}

/* The map is virtual memory: 16 TiB stays well inside a 47-bit address space. */
#define EG_MAP_SIZE_MAX ((int64_t)1 << 44)
#define EG_PAGE_SIZE_MAX 100000

static const eg_opt eg_opts[] = {
    EG_STR("listen", listen, NULL, "127.0.0.1:50051", "gRPC address to serve on"),
    EG_STR("data-dir", data_dir, NULL, "./data", "database directory"),
    EG_STR("keyring", keyring, NULL, "",
           "keyring file (default DATA_DIR/keyring, made on first start)"),
    EG_STR("tokens", tokens, NULL, "", "tokens file (default none: single-tenant dev mode)"),
    EG_NUM("workers", workers, 0, 256, "0", "worker threads (0: one per CPU)"),
    EG_STR("role", role, "primary|replica", "primary", "primary or replica"),
    EG_STR("primary", primary, NULL, "", "HOST:PORT of the primary (required for a replica)"),
    EG_STR("metrics-listen", metrics_listen, NULL, "", "Prometheus metrics address (default off)"),
    EG_NUM("session-ttl", session_ttl_s, 1, 31536000, "7200",
           "idle seconds before a session expires"),
    EG_NUM("summary-every", summary_every, 1, 1000000, "5", "new messages that make a summary due"),
    EG_NUM("max-content-bytes", max_content_bytes, 1, 16777216, "65536",
           "largest message content or summary"),
    EG_NUM("max-metadata-bytes", max_metadata_bytes, 0, 1048576, "16384",
           "largest metadata map (keys + values)"),
    EG_NUM("max-append-messages", max_append_messages, 1, EG_APPEND_MESSAGES_MAX, "100",
           "most messages in one AppendMessages"),
    EG_NUM("max-fork-messages", max_fork_messages, 1, EG_FORK_MESSAGES_MAX, "10000",
           "most messages one ForkSession copies (its through_seq)"),
    EG_NUM("max-fork-bytes", max_fork_bytes, 1, EG_FORK_BYTES_CEIL, "16777216",
           "most bytes one ForkSession writes (its messages as logged for replicas, "
           "keyword index postings included)"),
    EG_NUM("max-checkpoint-bytes", max_checkpoint_bytes, 1, EG_CHECKPOINT_BYTES_CEIL, "4194304",
           "largest checkpoint (PutCheckpoint's checkpoint bytes)"),
    EG_NUM("memory-quota", memory_quota, 1, 100000000, "10000",
           "most ACTIVE memories per user"),
    EG_STR("memory-quota-policy", memory_quota_policy, "reject|evict", "reject",
           "at the quota: refuse (RESOURCE_EXHAUSTED) or evict the least important"),
    EG_NUM("memory-max-tags", memory_max_tags, 0, 64, "32", "most tags per memory"),
    EG_NUM("erase-batch", erase_batch, 10, 1000000, "1000",
           "keys one DeleteUser or DeleteTenant transaction erases at most"),
    EG_NUM("dedup-batch", dedup_batch, 100, 100000000, "100000",
           "memories one DeduplicateMemories transaction compares at most"),
    EG_NUM("default-page-size", default_page_size, 1, EG_PAGE_SIZE_MAX, "50",
           "page size when a request gives 0"),
    EG_NUM("max-page-size", max_page_size, 1, EG_PAGE_SIZE_MAX, "1000", "largest page size"),
    EG_NUM("map-size", map_size, 1048576, EG_MAP_SIZE_MAX, "1073741824",
           "initial LMDB map size in bytes (grows when full)"),
    EG_STR("meta-sync", meta_sync, "next-flush|commit", "next-flush",
           "when a commit's meta page reaches the disk: at the next flush (one flush per "
           "commit; writes are answered after it) or at the commit (two flushes)"),
    EG_NUM("shutdown-grace-ms", shutdown_grace_ms, 0, 600000, "10000",
           "time to drain calls on SIGTERM"),
    EG_SECRET("replica-token", replica_token, "",
              "bearer token (role replica) a replica presents to the primary"),
    EG_STR("replica-id", replica_id, NULL, "", "this replica's name (default HOSTNAME-PORT)"),
    EG_NUM("max-lsn-wait-ms", max_lsn_wait_ms, 0, 60000, "5000",
           "longest a read waits for engram-min-lsn"),
    EG_NUM("sync-replicas", sync_replicas, 0, 64, "0",
           "replicas that must apply a write before it is acknowledged"),
    EG_NUM("sync-timeout-ms", sync_timeout_ms, 1, 600000, "5000",
           "how long a write waits for --sync-replicas"),
    EG_NUM("wal-retain-records", wal_retain_records, 1000, INT64_MAX, "1000000",
           "log records kept for replicas to catch up"),
    /* At most 100 years: the age cutoff is taken in microseconds. */
    EG_NUM("wal-retain-s", wal_retain_s, 1, 3153600000, "86400",
           "log records older than this are dropped (unless a replica needs them)"),
    EG_NUM("wal-retain-cap", wal_retain_cap, 1000, INT64_MAX, "10000000",
           "most records kept for a lagging replica"),
    EG_STR("wal-archive-dir", wal_archive_dir, NULL, "",
           "copy every committed log record into segment files here (default off)"),
    EG_NUM("wal-archive-segment-records", wal_archive_segment_records, 1, 100000000, "10000",
           "an archive segment closes after this many records"),
    EG_NUM("wal-archive-segment-s", wal_archive_segment_s, 1, 86400, "60",
           "an archive segment closes this long after its first record"),
    EG_NUM("max-reply-bytes", max_reply_bytes, 1048576, 1073741824, "3145728",
           "largest page reply (List*, GetContext, SearchMemories); shorter pages past it"),
    EG_NUM("max-streams-per-conn", max_streams_per_conn, 1, 100000, "100",
           "calls one connection may have open at once (more wait at the client)"),
    EG_NUM("call-timeout-ms", call_timeout_ms, 100, 3600000, "60000",
           "a unary call not answered and sent by then is cancelled (DEADLINE_EXCEEDED)"),
    EG_NUM("max-pending-reply-bytes", max_pending_reply_bytes, 1048576, 1099511627776, "268435456",
           "reply bytes sent but not yet read by clients, server-wide; past it RESOURCE_EXHAUSTED"),
    EG_NUM("expired-session-retention-s", expired_session_retention_s, 0, EG_RETENTION_MAX_S,
           "2592000", "an ended or expired session is deleted this long after (0: keep forever)"),
    EG_NUM("raw-message-retention-s", raw_message_retention_s, 0, EG_RETENTION_MAX_S, "0",
           "messages older than this are deleted; sessions and summaries stay (0: keep forever)"),
    EG_NUM("memory-tombstone-retention-s", memory_tombstone_retention_s, 0, EG_RETENTION_MAX_S,
           "7776000", "deleted, duplicate and superseded memories are purged this long after (0: keep forever)"),
    EG_NUM("memory-expired-grace-s", memory_expired_grace_s, 0, 86400, "60",
           "expired memories are purged this long after their expire_time"),
    EG_NUM("sweep-interval-ms", sweep_interval_ms, 10, 3600000, "1000",
           "pause between sweeper transactions (each at most --sweep-batch records)"),
    EG_NUM("sweep-batch", sweep_batch, 10, 1000000, "500",
           "records (sessions, messages, memories, tenants visited) one sweeper transaction handles at most"),
    /* SearchItems ranks and ListNamespaces pages by reading what lies under
     * the prefix: this bounds one call's work whatever the store holds. */
    EG_NUM("max-store-scan", max_store_scan, 100, 100000000, "100000",
           "store items (SearchItems) or namespaces (ListNamespaces) one call examines; past it RESOURCE_EXHAUSTED"),
    EG_STR("index-messages", index_messages, "true|false", "true",
           "index appended messages for SearchMessages (false: not indexed until turned on again)"),
    /* SearchMessages reads each query word's postings newest first: this
     * bounds one call's work over a tenant of any size (truncated: set),
     * and its memory: ~200 bytes (at most ~300) of arena per posting read,
     * ~40 MB per call at the default. */
    EG_NUM("max-search-postings", max_search_postings, 1000, 100000000, "200000",
           "postings (messages holding a query word) one SearchMessages reads at most, "
           "filtered out or not; a call holds ~200 bytes per posting read (~40 MB at 200000)"),
    EG_NUM("reindex-batch", reindex_batch, 1, 100000, "200",
           "records one background reindex (or blind-index rotation) transaction rewrites at "
           "most"),
    EG_NUM("reindex-rate", reindex_rate, 1, 1000000, "2000",
           "records per second the background reindex (or blind-index rotation) rewrites at "
           "most"),
    EG_NUM("max-exports", max_exports, 1, EG_EXPORTS_MAX, "4",
           "ExportUser calls running at once (each holds a read snapshot); more are UNAVAILABLE"),
    EG_NUM("export-send-timeout-ms", export_send_timeout_ms, 100, 3600000, "10000",
           "an ExportUser client that takes no response for this long is cut off (DEADLINE_EXCEEDED)"),
    /* An export reads from one snapshot, which blocks the map's growth and
     * LMDB's reuse of pages freed after it: a slow reader must not keep it
     * for hours. */
    EG_NUM("export-max-ms", export_max_ms, 100, 86400000, "300000",
           "an ExportUser call still running after this is ended (DEADLINE_EXCEEDED)"),
    /* A Backup holds its place and a whole copy of the store in the data
     * dir while it streams: a stuck or crawling client must give them up. */
    EG_NUM("backup-max-ms", backup_max_ms, 100, 604800000, "3600000",
           "a Backup stream still sending after this is ended (DEADLINE_EXCEEDED)"),
    EG_STR("reflection", reflection, "true|false", "true",
           "serve gRPC server reflection (grpc.reflection.v1, v1alpha), without a token"),
    EG_STR("coordinator", coordinator, NULL, "",
           "etcd://HOST:PORT[,HOST:PORT...]/PREFIX: etcd elects the primary (default off: --role)"),
    EG_STR("advertise-address", advertise_address, NULL, "",
           "HOST:PORT other nodes reach this one at (default the --listen address)"),
    EG_NUM("lease-ttl-s", lease_ttl_s, 2, 60, "3",
           "TTL of the etcd lease a leader holds; it fences itself before the lease can expire"),
    EG_NUM("failover-max-lag", failover_max_lag, 0, INT64_MAX, "10000",
           "a replica behind the last leader by more records never becomes primary"),
    EG_NUM("max-serving-lag-ms", max_serving_lag_ms, 0, 86400000, "10000",
           "a replica behind its primary for longer answers health checks NOT_SERVING"),
    EG_NUM("max-connection-age-ms", max_connection_age_ms, 0, 86400000, "0",
           "close client connections after this (GOAWAY; calls finish) so clients re-balance (0: off)"),
    EG_STR("log-format", log_format, "text|json", "text",
           "log lines as text or as one JSON object each (ts, level, msg)"),
    EG_STR("log-level", log_level, "debug|info|warn|error", "info", "least level logged"),
    EG_STR("tls-cert", tls_cert, NULL, "",
           "PEM certificate chain to serve TLS with (default off: plaintext); reloaded on SIGHUP"),
    EG_STR("tls-key", tls_key, NULL, "", "PEM private key of --tls-cert"),
    EG_STR("tls-client-ca", tls_client_ca, NULL, "",
           "PEM CA bundle: client certificates are required and verified against it (mutual TLS)"),
    EG_STR("tls-identities", tls_identities, NULL, "",
           "file mapping a client certificate's URI or DNS SAN to 'tenant role' (no token needed)"),
    EG_STR("tls-peer-ca", tls_peer_ca, NULL, "",
           "PEM CA that verifies the nodes this one dials (primary, forwarding); "
           "default --tls-client-ca; set: dial with TLS"),
    EG_STR("tls-peer-server-name", tls_peer_server_name, NULL, "",
           "name to expect in a dialled node's certificate (default its host)"),
    EG_STR("etcd-tls-ca", etcd_tls_ca, NULL, "", "PEM CA of etcd's certificate (set: TLS to etcd)"),
    EG_STR("etcd-tls-cert", etcd_tls_cert, NULL, "", "PEM client certificate to present to etcd"),
    EG_STR("etcd-tls-key", etcd_tls_key, NULL, "", "PEM private key of --etcd-tls-cert"),
    EG_STR("key-store", key_store, NULL, "",
           "directory of the key store: users' data keys, sealed by the keyring "
           "(default DATA_DIR/keystore; back it up apart from the data)"),
    EG_NUM("data-key-cache", data_key_cache, 16, 10000000, "10000",
           "opened data keys kept in memory (least recently used leave first)"),
    EG_NUM("key-rotation-rate", key_rotation_rate, 1, 1000000, "1000",
           "records per second a data-key rotation re-seals at most (users per second "
           "in its first phase, users without a data key)"),
    EG_NUM("key-rotation-batch", key_rotation_batch, 1, 100000, "200",
           "records one data-key rotation transaction re-seals at most (users one step "
           "of its first phase reads)"),
    EG_NUM("tenant-calls-per-s", tenant_calls_per_s, 0, 100000000, "0",
           "calls per second one tenant may make (0: unlimited; per-tenant overrides: SetTenantLimits)"),
    EG_NUM("tenant-writes-per-s", tenant_writes_per_s, 0, 100000000, "0",
           "writes per second one tenant may make (0: unlimited)"),
    EG_NUM("tenant-concurrent-calls", tenant_concurrent_calls, 0, 1000000, "0",
           "calls one tenant may have running at once (0: unlimited)"),
    EG_NUM("tenant-storage-bytes", tenant_storage_bytes, 0, INT64_MAX, "0",
           "bytes one tenant's records may take (0: unlimited)"),
    EG_NUM("tenant-burst-ms", tenant_burst_ms, 1, 60000, "1000",
           "a tenant's rate buckets hold this many milliseconds of their rate (the burst allowed)"),
};

#define EG_NOPTS (sizeof eg_opts / sizeof eg_opts[0])

static const eg_opt *opt_find(const char *name, size_t len) {
  for (size_t i = 0; i < EG_NOPTS; i++)
    if (strncmp(eg_opts[i].name, name, len) == 0 && eg_opts[i].name[len] == '\0')
      return &eg_opts[i];
  return NULL;
}

/* 1 if v is one of the '|'-separated words of choices. */
static int in_choices(const char *choices, const char *v) {
  size_t n = strlen(v);
  if (strchr(v, '|')) return 0; /* "a|b" would match the whole list */
  for (const char *c = choices;; c++) {
    if (strncmp(c, v, n) == 0 && (c[n] == '|' || c[n] == '\0')) return 1;
    if (!(c = strchr(c, '|'))) return 0;
  }
}

/* Only an optional '-' and digits: strtoll alone would take " 5" and "+5". */
static int is_integer(const char *v) {
  const char *d = v + (v[0] == '-');
  return *d && strspn(d, "0123456789") == strlen(d);
}

static eg_err set_number(eg_config *c, const eg_opt *o, const char *label, const char *v,
                         char *err, size_t errlen) {
  if (!is_integer(v)) return eg_invalid(err, errlen, label, "not a number: '%s'", v);
  errno = 0;
  long long n = strtoll(v, NULL, 10);
  if (errno == ERANGE || n < o->min || n > o->max)
    return eg_invalid(err, errlen, label, "out of range %lld..%lld", (long long)o->min,
                      (long long)o->max);
  char *field = (char *)c + o->offset;
  if (o->size == sizeof(int))
    *(int *)field = (int)n;
  else
    *(int64_t *)field = n;
  return EG_OK;
}

static eg_err set_string(eg_config *c, const eg_opt *o, const char *label, const char *v,
                         char *err, size_t errlen) {
  size_t len = strlen(v);
  if (len >= o->size) return eg_invalid(err, errlen, label, "longer than %zu bytes", o->size - 1);
  if (o->choices && !in_choices(o->choices, v))
    return eg_invalid(err, errlen, label, "must be %s: '%s'", o->choices, v);
  memcpy((char *)c + o->offset, v, len + 1);
  return EG_OK;
}

/* Sets option o from text v; label ("--workers", "ENGRAM_WORKERS") names
 * the source in errors. */
static eg_err set_value(eg_config *c, const eg_opt *o, const char *label, const char *v,
                        char *err, size_t errlen) {
  return o->kind == EG_OPT_NUM ? set_number(c, o, label, v, err, errlen)
                               : set_string(c, o, label, v, err, errlen);
}

void eg_config_defaults(eg_config *c) {
  memset(c, 0, sizeof *c);
  for (size_t i = 0; i < EG_NOPTS; i++) {
    eg_err rc = set_value(c, &eg_opts[i], eg_opts[i].name, eg_opts[i].def, NULL, 0);
    assert(rc == EG_OK); /* a default outside its own range is a bug here */
    (void)rc;
  }
}

/* ENGRAM_ + name in upper case with '-' -> '_'; buf holds 64 bytes. */
static void env_name(const eg_opt *o, char buf[64]) {
  snprintf(buf, 64, "ENGRAM_%s", o->name);
  for (char *p = buf + strlen("ENGRAM_"); *p; p++)
    *p = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
}

static eg_err apply_env(eg_config *c, eg_getenv_fn getenv_fn, char *err, size_t errlen) {
  char name[64];
  for (size_t i = 0; getenv_fn && i < EG_NOPTS; i++) {
    env_name(&eg_opts[i], name);
    const char *v = getenv_fn(name);
    eg_err rc = v ? set_value(c, &eg_opts[i], name, v, err, errlen) : EG_OK;
    if (rc) return rc;
  }
  return EG_OK;
}

/* Applies argv[*i], a "--name=value" or a "--name value" (which also
 * consumes argv[*i + 1]). */
static eg_err apply_flag(eg_config *c, int argc, char **argv, int *i, char *err, size_t errlen) {
  const char *arg = argv[*i];
  char label[64];
  if (strncmp(arg, "--", 2) != 0) return eg_invalid(err, errlen, arg, "not a flag");
  const char *eq = strchr(arg + 2, '=');
  size_t len = eq ? (size_t)(eq - (arg + 2)) : strlen(arg + 2);
  snprintf(label, sizeof label, "--%.*s", (int)len, arg + 2);
  const eg_opt *o = opt_find(arg + 2, len);
  if (!o) return eg_invalid(err, errlen, label, "unknown flag");
  if (eq) return set_value(c, o, label, eq + 1, err, errlen);
  /* "--listen --data-dir x" forgot the value; it is not "--data-dir". */
  if (*i + 1 >= argc || strncmp(argv[*i + 1], "--", 2) == 0)
    return eg_invalid(err, errlen, label, "missing value");
  return set_value(c, o, label, argv[++*i], err, errlen);
}

int64_t eg_config_max_request_bytes(const eg_config *c) {
  /* Beside the payload: ids, channels and framing of up to
   * EG_CKPT_WRITES_MAX writes, or a checkpoint's two JSON texts. */
  int64_t slack = 1048576, writes = EG_CKPT_WRITES_BYTES_MAX + slack;
  int64_t ckpt = c->max_checkpoint_bytes + 2 * EG_CKPT_JSON_MAX + slack;
  int64_t n = writes > ckpt ? writes : ckpt;
  return n > 4194304 ? n : 4194304;
}

/* The TLS flags of the connections this node dials (etcd, its primary)
 * that only make sense together. */
static eg_err check_tls(const eg_config *c, char *err, size_t errlen) {
  if (!c->etcd_tls_cert[0] != !c->etcd_tls_key[0])
    return eg_invalid(err, errlen, c->etcd_tls_cert[0] ? "--etcd-tls-cert" : "--etcd-tls-key",
                      "needs %s",
                      c->etcd_tls_cert[0] ? "--etcd-tls-key (the certificate's private key)"
                                          : "--etcd-tls-cert (the key's certificate)");
  if (c->etcd_tls_cert[0] && !c->etcd_tls_ca[0])
    return eg_invalid(err, errlen, "--etcd-tls-cert",
                      "needs --etcd-tls-ca (TLS to etcd is on only with the CA that verifies "
                      "etcd)");
  const char *etcd = c->etcd_tls_ca[0]     ? "--etcd-tls-ca"
                     : c->etcd_tls_cert[0] ? "--etcd-tls-cert"
                                           : NULL;
  if (etcd && !c->coordinator[0])
    return eg_invalid(err, errlen, etcd,
                      "only with --coordinator (it is how this node dials etcd)");
  if (c->tls_peer_server_name[0] && !c->tls_peer_ca[0] && !c->tls_client_ca[0])
    return eg_invalid(err, errlen, "--tls-peer-server-name",
                      "needs --tls-peer-ca or --tls-client-ca (without either this node dials "
                      "its primary in plaintext)");
  return EG_OK;
}

const eg_client_tls *eg_config_peer_tls(const eg_config *c, eg_client_tls *out) {
  const char *ca = c->tls_peer_ca[0] ? c->tls_peer_ca : c->tls_client_ca;
  if (!ca[0]) return NULL;
  *out = (eg_client_tls){.ca_file = ca,
                         .cert_file = c->tls_cert[0] ? c->tls_cert : NULL,
                         .key_file = c->tls_key[0] ? c->tls_key : NULL,
                         .server_name =
                             c->tls_peer_server_name[0] ? c->tls_peer_server_name : NULL};
  return out;
}

const eg_client_tls *eg_config_etcd_tls(const eg_config *c, eg_client_tls *out) {
  if (!c->etcd_tls_ca[0]) return NULL;
  *out = (eg_client_tls){.ca_file = c->etcd_tls_ca,
                         .cert_file = c->etcd_tls_cert[0] ? c->etcd_tls_cert : NULL,
                         .key_file = c->etcd_tls_key[0] ? c->etcd_tls_key : NULL};
  return out;
}

/* Rules across options, checked once every source is applied. */
static eg_err check_config(const eg_config *c, char *err, size_t errlen) {
  if (c->default_page_size > c->max_page_size)
    return eg_invalid(err, errlen, "--default-page-size", "must not exceed --max-page-size (%d)",
                      c->max_page_size);
  int64_t item = c->max_content_bytes + EG_METADATA_WIRE_FACTOR * c->max_metadata_bytes +
                 EG_REPLY_ITEM_SLACK + EG_REPLY_RESERVE;
  if (c->max_reply_bytes < item)
    return eg_invalid(err, errlen, "--max-reply-bytes",
                      "must be at least %lld to hold one largest item (--max-content-bytes + %d x "
                      "--max-metadata-bytes + %d)",
                      (long long)item, EG_METADATA_WIRE_FACTOR,
                      EG_REPLY_ITEM_SLACK + EG_REPLY_RESERVE);
  /* The reaper cancels any unary call still open at --call-timeout-ms. A
   * write held for replica acks is committed here: it must get its own
   * answer (how many replicas acked) before that, not a bare deadline. */
  if (c->sync_replicas > 0 && c->sync_timeout_ms >= c->call_timeout_ms)
    return eg_invalid(err, errlen, "--sync-timeout-ms", "must be below --call-timeout-ms (%lld)",
                      (long long)c->call_timeout_ms);
  eg_coord_url url;
  if (c->coordinator[0] && eg_coord_url_parse(c->coordinator, &url, err, errlen) != EG_OK)
    return EG_EINVAL;
  /* The id names the node's key (PREFIX/members/ID) and the address is
   * what every other node dials: both are checked before etcd sees them. */
  if (c->coordinator[0] && c->replica_id[0] &&
      strspn(c->replica_id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
          strlen(c->replica_id))
    return eg_invalid(err, errlen, "--replica-id",
                      "with --coordinator only letters, digits, '.', '_' and '-' (it names the "
                      "node's key in etcd)");
  const char *why = c->advertise_address[0]
                        ? eg_etcd_endpoint_check(c->advertise_address, strlen(c->advertise_address))
                        : NULL;
  if (why) return eg_invalid(err, errlen, "--advertise-address", "%s", why);
  if (c->coordinator[0] && (strcmp(c->role, "replica") == 0 || c->primary[0]))
    return eg_invalid(err, errlen, c->primary[0] ? "--primary" : "--role",
                      "must not be set with --coordinator: etcd decides which node is the primary");
  if (strcmp(c->role, "replica") == 0 && c->primary[0] == '\0')
    return eg_invalid(err, errlen, "--primary", "required when --role is replica");
  /* A certificate needs its key and the key its certificate; client
   * certificates are only requested (and identities only read) with TLS
   * on and a CA to verify them against. */
  if (!c->tls_cert[0] != !c->tls_key[0])
    return eg_invalid(err, errlen, c->tls_cert[0] ? "--tls-key" : "--tls-cert",
                      "required with %s (TLS needs both)",
                      c->tls_cert[0] ? "--tls-cert" : "--tls-key");
  if (c->tls_client_ca[0] && !c->tls_cert[0])
    return eg_invalid(err, errlen, "--tls-client-ca",
                      "needs --tls-cert and --tls-key (client certificates are verified over TLS)");
  if (c->tls_identities[0] && !c->tls_client_ca[0])
    return eg_invalid(err, errlen, "--tls-identities",
                      "needs --tls-client-ca (and --tls-cert, --tls-key): without it no client "
                      "certificate is requested");
  return check_tls(c, err, errlen);
}

eg_err eg_config_parse(eg_config *c, int argc, char **argv, eg_getenv_fn getenv_fn,
                       int *want_help, char *err, size_t errlen) {
  eg_config_defaults(c);
  if (want_help) *want_help = 0;
  eg_err rc = apply_env(c, getenv_fn, err, errlen);
  for (int i = 1; rc == EG_OK && i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      if (want_help) *want_help = 1;
      return EG_OK;
    }
    rc = apply_flag(c, argc, argv, &i, err, errlen);
  }
  return rc ? rc : check_config(c, err, errlen);
}

void eg_config_usage(FILE *f) {
  char env[64];
  fprintf(f, "Usage: engramd [--flag value | --flag=value]...\n"
             "Each flag may also come from the environment; flags win.\n\n");
  for (size_t i = 0; i < EG_NOPTS; i++) {
    const eg_opt *o = &eg_opts[i];
    env_name(o, env);
    fprintf(f, "  --%-20s %-28s %s", o->name, env, o->help);
    if (o->def[0]) fprintf(f, " [%s]", o->def);
    if (o->kind == EG_OPT_NUM) fprintf(f, " (%lld..%lld)", (long long)o->min, (long long)o->max);
    fputc('\n', f);
  }
  fprintf(f, "  --%-20s %-28s %s\n", "version", "", "print the version (engramd " ENGRAM_VERSION
             ") and exit");
}

void eg_config_describe(const eg_config *c, char *buf, size_t buflen) {
  size_t len = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < EG_NOPTS && len < buflen; i++) {
    const eg_opt *o = &eg_opts[i];
    const char *field = (const char *)c + o->offset;
    const char *sep = i ? " " : "";
    int n;
    if (o->kind == EG_OPT_NUM)
      n = snprintf(buf + len, buflen - len, "%s%s=%lld", sep, o->name,
                   o->size == sizeof(int) ? (long long)*(const int *)field
                                          : (long long)*(const int64_t *)field);
    else if (o->secret)
      n = snprintf(buf + len, buflen - len, "%s%s=%s", sep, o->name, field[0] ? "(set)" : "(unset)");
    else
      n = snprintf(buf + len, buflen - len, "%s%s=%s", sep, o->name, field);
    len += n > 0 ? (size_t)n : 0;
  }
}

unsigned eg_config_store_readers(int workers) {
  /* 3: parking, the follower, the WAL archiver. */
  return (unsigned)(workers > 0 ? workers : 0) + 3 + EG_REPL_MAX_PEERS + EG_SNAPSHOTS_MAX +
         EG_BACKUPS_MAX + EG_EXPORTS_MAX + EG_READERS_HEADROOM;
}

unsigned eg_config_stream_threads(const eg_config *c) {
  return (unsigned)(EG_REPL_MAX_PEERS + EG_SNAPSHOTS_MAX + EG_BACKUPS_MAX + c->max_exports +
                    EG_HEALTH_WATCHES_MAX + EG_REFLECTION_STREAMS_MAX +
                    EG_REFLECTION_TOKEN_STREAMS_MAX + EG_STREAMS_HEADROOM);
}
