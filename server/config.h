/*
 * engramd configuration: defaults, then ENGRAM_<NAME> environment
 * variables, then --flags (each later source wins).
 * Flag --session-ttl is ENGRAM_SESSION_TTL: upper case, '-' -> '_'.
 */
#ifndef EG_SERVER_CONFIG_H
#define EG_SERVER_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/err.h"
#include "engram.h"

#define EG_CONFIG_PATH_MAX 1024

typedef struct {
  char listen[256];                   /* --listen 127.0.0.1:50051 */
  char data_dir[EG_CONFIG_PATH_MAX];  /* --data-dir ./data */
  char keyring[EG_CONFIG_PATH_MAX];   /* --keyring; "" means DATA_DIR/keyring */
  char tokens[EG_CONFIG_PATH_MAX];    /* --tokens; "" means single-tenant dev mode */
  int workers;                        /* --workers; 0 means one per CPU */
  char role[16];                      /* --role primary|replica */
  char primary[256];                  /* --primary HOST:PORT (replicas) */
  char metrics_listen[256];           /* --metrics-listen; "" means off */
  int64_t session_ttl_s;              /* --session-ttl 7200 (idle TTL, seconds) */
  int summary_every;                  /* --summary-every 5 */
  int64_t max_content_bytes;          /* --max-content-bytes 65536 (per message/summary) */
  int64_t max_metadata_bytes;         /* --max-metadata-bytes 16384 (per map, keys+values) */
  int max_append_messages;            /* --max-append-messages 100 (per AppendMessages) */
  int max_fork_messages;              /* --max-fork-messages 10000 (copied by one ForkSession) */
  int64_t max_fork_bytes;             /* --max-fork-bytes 16777216 (log bytes one ForkSession writes) */
  int64_t max_checkpoint_bytes;       /* --max-checkpoint-bytes 4194304 (one checkpoint) */
  int64_t memory_quota;               /* --memory-quota 10000 (ACTIVE memories per user) */
  char memory_quota_policy[16];       /* --memory-quota-policy reject|evict */
  int memory_max_tags;                /* --memory-max-tags 32 (per memory) */
  int erase_batch;                    /* --erase-batch 1000 (keys per DeleteUser txn) */
  int dedup_batch;                    /* --dedup-batch 100000 (comparisons per DeduplicateMemories txn) */
  int default_page_size;              /* --default-page-size 50 */
  int max_page_size;                  /* --max-page-size 1000 */
  int64_t map_size;                   /* --map-size 1073741824 (initial LMDB map, bytes) */
  char meta_sync[16];                 /* --meta-sync next-flush|commit */
  int64_t shutdown_grace_ms;          /* --shutdown-grace-ms 10000 (drain on SIGTERM) */
  char replica_token[256];            /* --replica-token: bearer token a replica sends */
  char replica_id[128];               /* --replica-id; "" means HOSTNAME-PORT */
  int64_t max_lsn_wait_ms;            /* --max-lsn-wait-ms 5000 (engram-min-lsn waits) */
  int sync_replicas;                  /* --sync-replicas 0 */
  int64_t sync_timeout_ms;            /* --sync-timeout-ms 5000 */
  int64_t wal_retain_records;         /* --wal-retain-records 1000000 */
  int64_t wal_retain_s;               /* --wal-retain-s 86400 */
  int64_t wal_retain_cap;             /* --wal-retain-cap 10000000 (held for replicas at most) */
  char wal_archive_dir[EG_CONFIG_PATH_MAX]; /* --wal-archive-dir; "" means off */
  int64_t wal_archive_segment_records; /* --wal-archive-segment-records 10000 */
  int64_t wal_archive_segment_s;       /* --wal-archive-segment-s 60 */
  int64_t max_reply_bytes;            /* --max-reply-bytes 3145728 (largest page reply) */
  int max_streams_per_conn;           /* --max-streams-per-conn 100 (concurrent calls) */
  int64_t call_timeout_ms;            /* --call-timeout-ms 60000 (unary call, arrival to reply sent) */
  int64_t max_pending_reply_bytes;    /* --max-pending-reply-bytes 268435456 (replies not yet read) */
  int64_t expired_session_retention_s; /* --expired-session-retention-s 2592000 (0: keep forever) */
  int64_t raw_message_retention_s;     /* --raw-message-retention-s 0 (0: keep forever) */
  int64_t memory_tombstone_retention_s; /* --memory-tombstone-retention-s 7776000 (0: keep forever) */
  int64_t memory_expired_grace_s;      /* --memory-expired-grace-s 60 */
  int64_t sweep_interval_ms;           /* --sweep-interval-ms 1000 (between sweeper steps) */
  int sweep_batch;                     /* --sweep-batch 500 (records per sweeper transaction) */
  int max_exports;                     /* --max-exports 4 (ExportUser calls at once) */
  int64_t export_send_timeout_ms;      /* --export-send-timeout-ms 10000 (one export response sent) */
  int64_t export_max_ms;               /* --export-max-ms 300000 (one export, request to end) */
  int64_t backup_max_ms;               /* --backup-max-ms 3600000 (one Backup stream, request to end) */
  char coordinator[1024];              /* --coordinator etcd://HOST:PORT[,...]/PREFIX; "" means static roles */
  char advertise_address[256];         /* --advertise-address; "" means the --listen address (port bound) */
  int64_t lease_ttl_s;                 /* --lease-ttl-s 3 (the etcd lease a leader holds) */
  int64_t failover_max_lag;            /* --failover-max-lag 10000 (records; a replica further behind never wins) */
  int64_t max_serving_lag_ms;          /* --max-serving-lag-ms 10000 (a replica further behind is NOT_SERVING) */
  char reflection[8];                  /* --reflection true|false (server reflection served) */
  int64_t max_connection_age_ms;       /* --max-connection-age-ms 0 (0: off; clients reconnect, and re-balance, after it) */
  char log_format[8];                  /* --log-format text|json */
  char log_level[8];                   /* --log-level debug|info|warn|error */
  int64_t max_store_scan;              /* --max-store-scan 100000 (store items or namespaces one SearchItems/ListNamespaces examines) */
  char index_messages[8];              /* --index-messages true|false (keyword index of appended messages) */
  int64_t max_search_postings;         /* --max-search-postings 200000 (postings one SearchMessages reads) */
  int reindex_batch;                   /* --reindex-batch 200 (records per background reindex transaction) */
  int reindex_rate;                    /* --reindex-rate 2000 (records per second the background reindex rewrites at most) */
  /* TLS (docs/security.md, "Transport"): all "" means plaintext. */
  char tls_cert[EG_CONFIG_PATH_MAX];       /* --tls-cert: PEM chain this node serves (and presents to peers) */
  char tls_key[EG_CONFIG_PATH_MAX];        /* --tls-key: PEM private key of --tls-cert */
  char tls_client_ca[EG_CONFIG_PATH_MAX];  /* --tls-client-ca: CA bundle; set: client certificates required */
  char tls_identities[EG_CONFIG_PATH_MAX]; /* --tls-identities: certificate SAN -> "tenant role" file */
  char tls_peer_ca[EG_CONFIG_PATH_MAX];    /* --tls-peer-ca: CA that verifies the primary/peers this node dials */
  char tls_peer_server_name[256];          /* --tls-peer-server-name: name expected in peers' certificates */
  char etcd_tls_ca[EG_CONFIG_PATH_MAX];    /* --etcd-tls-ca: CA of etcd's certificate ("" plaintext) */
  char etcd_tls_cert[EG_CONFIG_PATH_MAX];  /* --etcd-tls-cert: client certificate for etcd */
  char etcd_tls_key[EG_CONFIG_PATH_MAX];   /* --etcd-tls-key */
  /* Envelope keys (server/keystore.h). */
  char key_store[EG_CONFIG_PATH_MAX];      /* --key-store; "" means DATA_DIR/keystore */
  int64_t data_key_cache;                  /* --data-key-cache 10000 (opened data keys kept in memory) */
  int key_rotation_rate;                   /* --key-rotation-rate 1000 (records/s a data-key rotation re-seals) */
  int key_rotation_batch;                  /* --key-rotation-batch 200 (records per rotation transaction) */
  /* Per-tenant limits (server/limits.h); 0 means unlimited. */
  int64_t tenant_calls_per_s;              /* --tenant-calls-per-s 0 */
  int64_t tenant_writes_per_s;             /* --tenant-writes-per-s 0 */
  int64_t tenant_concurrent_calls;         /* --tenant-concurrent-calls 0 */
  int64_t tenant_storage_bytes;            /* --tenant-storage-bytes 0 */
  int64_t tenant_burst_ms;                 /* --tenant-burst-ms 1000 (a bucket holds this much of its rate) */
} eg_config;

/* Ceiling of --max-append-messages; also the most messages one
 * AppendMessages may carry on the wire. */
#define EG_APPEND_MESSAGES_MAX 10000
/* Ceiling of --max-fork-messages: ForkSession holds its whole copy in
 * memory and writes it in one transaction of the writer's batch. */
#define EG_FORK_MESSAGES_MAX 100000
/* Ceiling of --max-fork-bytes. A fork is one write txn, so one log record,
 * which a replica receives in one message of at most 64 MiB (the C
 * client's limit): half of it leaves room for the rest of that txn (the
 * new session's record and index entries) and a wide margin. */
#define EG_FORK_BYTES_CEIL 33554432
/* The most entries one metadata map may have: bounded on the wire, before
 * unpacking allocates each entry (--max-metadata-bytes bounds their bytes). */
#define EG_METADATA_ENTRIES_MAX 4096

/* CheckpointService limits (server/svc_checkpoint.c). Ceiling of
 * --max-checkpoint-bytes (32 MiB: a read returns one checkpoint with its
 * JSON texts and EG_CKPT_PENDING_BYTES_MAX of writes, and a PutCheckpoint
 * is one WAL record; both must stay under the 64 MiB that clients and
 * replicas receive); one pending write's value; one PutWrites' writes and
 * their bytes (values, ids and channels); a metadata or new-versions JSON
 * text and its top-level keys. */
#define EG_CHECKPOINT_BYTES_CEIL 33554432
#define EG_CKPT_VALUE_MAX 4194304
#define EG_CKPT_WRITES_MAX 1000
#define EG_CKPT_WRITES_BYTES_MAX 16777216
#define EG_CKPT_JSON_MAX 1048576
#define EG_CKPT_JSON_PAIRS_MAX 256
/* The most pending writes one checkpoint holds (PutWrites refuses more,
 * RESOURCE_EXHAUSTED): GetCheckpoint and ListCheckpoints read them all. */
#define EG_CKPT_PENDING_MAX 10000
/* The most bytes a checkpoint's pending writes hold as stored (sealed
 * values with their ids and names, at least what a read returns of them):
 * one largest PutWrites (EG_CKPT_WRITES_BYTES_MAX with its sealing) fits. */
#define EG_CKPT_PENDING_BYTES_MAX 20971520

/* The largest request the server receives (gRPC refuses more with
 * RESOURCE_EXHAUSTED before it is read): room for the largest PutWrites
 * and PutCheckpoint, and at least gRPC's default 4 MiB. */
int64_t eg_config_max_request_bytes(const eg_config *c);

/* Bytes of a page reply kept back from its items for the rest of it
 * (next_page_token, counters). */
#define EG_REPLY_RESERVE 1024
/* What one reply item (a session, message or memory) may take beyond its
 * text (--max-content-bytes) and its metadata map: ids, 64 tags, category,
 * a 4096-dim embedding, times. A metadata map encodes in at most 5 bytes
 * per byte of keys and values (1-byte keys, empty values). --max-reply-bytes
 * must hold EG_REPLY_RESERVE and one largest item, so every page makes
 * progress. */
#define EG_REPLY_ITEM_SLACK 32768
#define EG_METADATA_WIRE_FACTOR 5

/* Longest retention (flags and SetRetentionPolicy), 100 years: cutoffs
 * are taken in microseconds, far inside int64. */
#define EG_RETENTION_MAX_S INT64_C(3153600000)

/* Looks up an environment variable; NULL when unset. getenv fits. */
typedef const char *(*eg_getenv_fn)(const char *name);

/* Sets every field to its default. */
void eg_config_defaults(eg_config *c);

/* Fills c from defaults, then env (through getenv_fn, may be NULL), then
 * argv[1..argc). Accepts "--name value" and "--name=value". Returns EG_OK,
 * or EG_EINVAL with a message naming the flag or variable in err (unknown
 * flag, missing value, not a number, out of range, bad role, replica
 * without --primary). "--help" or "-h" returns EG_OK with *want_help
 * (may be NULL) set to 1. */
eg_err eg_config_parse(eg_config *c, int argc, char **argv, eg_getenv_fn getenv_fn,
                       int *want_help, char *err, size_t errlen);

/* How this node dials its primary (the stream, forwarded writes, the
 * promotion probe): TLS when --tls-peer-ca is set, or else --tls-client-ca
 * (a node that requires client certificates trusts the same CA for its
 * peers). Then fills *out (pointing into c) with that CA, --tls-cert and
 * --tls-key as the client certificate (mTLS) and --tls-peer-server-name,
 * and returns out; NULL (plaintext) otherwise. */
const eg_client_tls *eg_config_peer_tls(const eg_config *c, eg_client_tls *out);
/* The same for etcd (--coordinator): TLS when --etcd-tls-ca is set, with
 * --etcd-tls-cert and --etcd-tls-key; NULL otherwise. */
const eg_client_tls *eg_config_etcd_tls(const eg_config *c, eg_client_tls *out);

/* Prints the flags with their defaults. */
void eg_config_usage(FILE *f);

/* Writes the effective configuration, "name=value" for every flag joined
 * by spaces, into buf (cut to buflen): what the start banner logs. A
 * secret's value (--replica-token) is never written: only "(set)" or
 * "(unset)". */
void eg_config_describe(const eg_config *c, char *buf, size_t buflen);

/* Ceiling of --max-exports: each running ExportUser holds a reader of its
 * own (counted in eg_config_store_readers). */
#define EG_EXPORTS_MAX 16

/* Snapshot calls (a replica's resync) copied and streamed at once, and
 * Backup calls: each holds a reader while it copies the store, and a whole
 * compacted copy of it in the data dir while it streams. Places apart, so
 * that backups (slow clients, stuck jobs) never keep a replica from its
 * snapshot; past either the call is refused UNAVAILABLE (a replica retries
 * with backoff). */
#define EG_SNAPSHOTS_MAX 2
#define EG_BACKUPS_MAX 1
/* Most grpc.health.v1 Watch streams at once (each holds a thread while it
 * waits for a change); past it UNAVAILABLE. */
#define EG_HEALTH_WATCHES_MAX 16
/* Most server reflection streams at once (each holds a thread for at most
 * --call-timeout-ms); past it UNAVAILABLE. */
#define EG_REFLECTION_STREAMS_MAX 8
/* Of those, the most one peer address holds at once: a client that keeps
 * its streams busy (one question every few seconds) cannot take them all. */
#define EG_REFLECTION_PEER_STREAMS 2
/* Reflection streams of callers with a valid token (--tokens), apart from
 * the anonymous ones: token holders are never locked out by anonymous
 * callers, however many addresses those have. */
#define EG_REFLECTION_TOKEN_STREAMS_MAX 8
/* A reflection stream that asks nothing for this long is ended
 * (DEADLINE_EXCEEDED): reflection needs no token, and that many idle
 * streams must not lock everyone out for --call-timeout-ms. Tools ask
 * their questions back to back. */
#define EG_REFLECTION_IDLE_MS 10000

/* LMDB reader slots engramd needs with `workers` worker threads: every
 * reader the process can hold at once. Each worker keeps one; parking,
 * the follower and the WAL archiver one each; each replica stream one (a stream takes its entry
 * in the replica table, at most 64, before its reader, so a refused one
 * holds none); each snapshot and each backup being copied one (at most
 * EG_SNAPSHOTS_MAX and EG_BACKUPS_MAX); each
 * ExportUser one (at most EG_EXPORTS_MAX, taken after its place among
 * --max-exports); plus EG_READERS_HEADROOM for short ones (meta reads, a
 * stream that replaced its replica's older one still ending).
 * workers + 3 + 64 + 2 + 1 + 16 + 32. */
#define EG_READERS_HEADROOM 32
unsigned eg_config_store_readers(int workers);

/* Stream threads engramd runs at once (each stream has a thread of its
 * own): the replica streams one primary serves (64), the snapshots and
 * backups, c->max_exports exports, the health watches, the reflection
 * streams, and EG_STREAMS_HEADROOM (a replica
 * stream that replaced its replica's older one still ending). A stream
 * past it is refused RESOURCE_EXHAUSTED before it has a thread. */
#define EG_STREAMS_HEADROOM 16
unsigned eg_config_stream_threads(const eg_config *c);

#endif
