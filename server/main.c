/* engramd: configuration, keys, storage, the writer, the gRPC transport,
 * and an orderly stop on SIGTERM/SIGINT (a second one forces exit; SIGHUP
 * runs the reload hooks, server/reload.h), or a restart when the replication module asks
 * (EG_REPL_RESTART_SIGNAL). */
#include <errno.h>
#include <grpc/grpc.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/bgthread.h"
#include "common/log.h"
#include "coord/coord.h"
#include "replica/replica.h"
#include "server/archiver.h"
#include "server/blind_key.h"
#include "server/config.h"
#include "server/data_keys.h"
#include "server/key_rotation.h"
#include "server/key_retire.h"
#include "server/keyring_reload.h"
#include "server/limits.h"
#include "server/reload.h"
#include "server/tls.h"
#include "server/service.h"
#include "server/reindex.h"
#include "server/sweeper.h"
#include "server/transport.h"
#include "server/writer.h"

static int eg_fail(const char *what, const char *why) {
  eg_log(EG_LOG_ERROR, "%s: %s", what, why);
  return 1;
}

#define EG_KEYRING_PATH_MAX (EG_CONFIG_PATH_MAX + 16)
_Static_assert(EG_KEYRING_FINGERPRINT_MAX <= EG_STORE_META_VALUE_MAX, "fingerprint fits meta");

/* --keyring, or DATA_DIR/keyring when none was given. */
static void eg_keyring_path(const eg_config *cfg, char path[EG_KEYRING_PATH_MAX]) {
  if (cfg->keyring[0])
    snprintf(path, EG_KEYRING_PATH_MAX, "%s", cfg->keyring);
  else
    snprintf(path, EG_KEYRING_PATH_MAX, "%s/keyring", cfg->data_dir);
}

/* --key-store, or DATA_DIR/keystore when none was given. */
static void eg_key_store_path(const eg_config *cfg, char path[EG_KEYRING_PATH_MAX]) {
  if (cfg->key_store[0])
    snprintf(path, EG_KEYRING_PATH_MAX, "%s", cfg->key_store);
  else
    snprintf(path, EG_KEYRING_PATH_MAX, "%s/keystore", cfg->data_dir);
}

/* The store's named meta value saying a key store has served this data
 * (written at the first start with one): data sealed under its keys. */
#define EG_META_KEY_STORE_USED "key_store_used"

/* 1 if the key store at path has its file (an LMDB env was made there). */
static int eg_key_store_exists(const char *path) {
  char file[EG_KEYRING_PATH_MAX + 16];
  struct stat st;
  snprintf(file, sizeof file, "%s/data.mdb", path);
  return stat(file, &st) == 0;
}

/* Before the key store is opened (which would make one): refuses to make
 * one afresh for a store that has used one (a volume not mounted, a wrong
 * --key-store, a restore without its key store): its new keys would seal
 * new writes that the real key store cannot open, while the data sealed
 * before reads DATA_LOSS. *record: the store has no mark yet (set it once
 * the key store is open). */
static eg_err eg_key_store_check(eg_store *store, const char *path, int *record, char *err,
                                 size_t errlen) {
  char used;
  size_t len;
  eg_err e = eg_store_meta_get(store, EG_META_KEY_STORE_USED, &used, sizeof used, &len);
  *record = e == EG_ENOTFOUND;
  if (*record) return EG_OK;
  if (e) {
    snprintf(err, errlen, "reading the store's key-store mark: %s", eg_err_msg(e));
    return e;
  }
  if (eg_key_store_exists(path)) return EG_OK;
  snprintf(err, errlen, "%.200s holds no key store, but this data dir has used one (a volume "
           "not mounted? a restore without it?): put it back, or restore `engram admin keys "
           "backup`; refusing to make an empty one", path);
  return EG_EPRECOND;
}

/* Creates DATA_DIR/keyring with a fresh key and loads it: only for a store
 * that holds nothing, since data sealed under a lost keyring would
 * otherwise silently read DATA_LOSS while new writes use the new key. */
static eg_err eg_create_keys(const char *path, eg_store *store, eg_keyring **out, char *err,
                             size_t errlen) {
  uint8_t fp[EG_KEYRING_FINGERPRINT_MAX];
  size_t fplen = 0;
  char what[64];
  uint64_t lsn = eg_store_last_lsn(store);
  eg_err e = eg_store_meta_get(store, EG_META_KEY_FINGERPRINT, fp, sizeof fp, &fplen);
  if (e != EG_OK && e != EG_ENOTFOUND) {
    snprintf(err, errlen, "cannot read the key fingerprint (%s)", eg_err_msg(e));
    return e;
  }
  if (lsn > 0 || e == EG_OK) {
    if (lsn > 0)
      snprintf(what, sizeof what, "holds data (last lsn %llu)", (unsigned long long)lsn);
    else
      snprintf(what, sizeof what, "recorded the fingerprint of its keyring");
    snprintf(err, errlen, "%.300s is missing, but this data dir %s: restore it from "
             "backup (or pass --keyring); refusing to make a fresh key", path, what);
    return EG_EPRECOND;
  }
  e = eg_keyring_create(path);
  if (e != EG_OK) {
    snprintf(err, errlen, "%.400s: cannot create (%s)", path, eg_err_msg(e));
    return e;
  }
  eg_log(EG_LOG_WARN, "created keyring %s with a fresh key; back it up: without it "
                      "the data cannot be read", path);
  return eg_keyring_load(path, out, err, errlen);
}

/* What a SIGBUS says: set once before the handler is installed, since the
 * handler may only write() it. */
static char eg_sigbus_msg[EG_CONFIG_PATH_MAX + 256];
static size_t eg_sigbus_len;

/* LMDB maps data.mdb: a page past the end of a file cut short under the
 * process, or a bad page pointer, faults with SIGBUS. Say so, instead of
 * dying with an empty log (and crash-looping under a supervisor). */
static void eg_on_sigbus(int sig) {
  (void)sig;
  ssize_t w = write(STDERR_FILENO, eg_sigbus_msg, eg_sigbus_len);
  (void)w;
  _exit(1);
}

static void eg_sigbus_install(const char *data_dir) {
  int n = snprintf(eg_sigbus_msg, sizeof eg_sigbus_msg,
                   "engramd: SIGBUS reading %s/data.mdb: the data file is corrupt or was "
                   "truncated; stopping. Restore it from a backup or a replica\n", data_dir);
  eg_sigbus_len = n < (int)sizeof eg_sigbus_msg ? (size_t)n : sizeof eg_sigbus_msg - 1;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = eg_on_sigbus;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, NULL);
}

/* "HOST:0" with the bound port: the line tests and scripts wait for. */
static void eg_announce(const char *listen, int port) {
  const char *colon = strrchr(listen, ':');
  int hostlen = colon ? (int)(colon - listen) : (int)strlen(listen);
  eg_log(EG_LOG_INFO, "listening on %.*s:%d", hostlen, listen, port);
}

/* The metrics endpoint's line, in the same form. */
static void eg_announce_metrics(const char *listen, int port) {
  const char *colon = strrchr(listen, ':');
  int hostlen = colon ? (int)(colon - listen) : (int)strlen(listen);
  eg_log(EG_LOG_INFO, "metrics on %.*s:%d", hostlen, listen, port);
}

/* The signals main waits for; blocked in every thread. */
static void eg_stop_signals(sigset_t *s) {
  sigemptyset(s);
  sigaddset(s, SIGTERM);
  sigaddset(s, SIGINT);
  sigaddset(s, SIGHUP);
  sigaddset(s, EG_REPL_RESTART_SIGNAL);
}

/* Waits for a stop (or the restart) signal; SIGHUP runs the reload hooks
 * (server/reload.h) while serving (store set: main's own wait) and is
 * ignored during a drain, and the wait goes on. With a
 * store, also returns 0 within a second of LMDB giving up on it
 * (eg_store_broken): the process stops so its supervisor starts a fresh
 * one. */
static int eg_wait_stop(const sigset_t *sigs, const eg_store *store) {
  const struct timespec tick = {.tv_sec = 1};
  for (;;) {
    int sig = sigtimedwait(sigs, NULL, &tick);
    if (sig == SIGHUP) {
      eg_log(EG_LOG_INFO, store ? "SIGHUP: reloading" : "SIGHUP ignored while draining");
      if (store) eg_reload_run();
    } else if (sig > 0)
      return sig;
    else if (store && eg_store_broken(store))
      return 0;
  }
}

/* What main and the thread that watches signals during the drain share.
 * Static: that thread is detached and outlives eg_serve's frame. */
static struct {
  int restarting;          /* the drain is a restart (EG_REPL_RESTART_SIGNAL) */
  atomic_int stop_instead; /* an operator's SIGTERM/SIGINT came during it */
} eg_drain;

/* Runs while main drains. An operator's SIGTERM/SIGINT during a restart's
 * drain turns the restart into a stop: the node is asked to go, and a
 * re-executed process would not know. Otherwise (or a second time) it ends
 * the process at once with status 1 (every acknowledged write is already
 * durable; calls still in flight get no answer). */
static void *eg_force_exit_main(void *arg) {
  (void)arg;
  eg_thread_name("force-exit");
  sigset_t sigs;
  eg_stop_signals(&sigs);
  for (;;) {
    int sig = eg_wait_stop(&sigs, NULL);
    if (sig == EG_REPL_RESTART_SIGNAL) continue; /* stopping already */
    if (eg_drain.restarting && !atomic_exchange(&eg_drain.stop_instead, 1)) {
      eg_log(EG_LOG_WARN, "%s: stopping after the drain instead of restarting (send it "
                          "again to exit at once)", strsignal(sig));
      continue;
    }
    eg_log(EG_LOG_WARN, "%s again: exiting without draining", strsignal(sig));
    _exit(1);
  }
}

static int eg_workers(const eg_config *cfg) {
  if (cfg->workers > 0) return cfg->workers;
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 2;
}

/* This node's name in the primary's replica table and, with a
 * coordinator, in etcd. bound_port: the port the transport bound (0: not
 * yet, then --listen's own). */
static void eg_replica_id(const eg_config *cfg, int bound_port, char *out, size_t n) {
  char host[64] = "node";
  const char *port = strrchr(cfg->listen, ':');
  if (cfg->replica_id[0]) {
    snprintf(out, n, "%s", cfg->replica_id);
    return;
  }
  gethostname(host, sizeof host - 1);
  if (bound_port > 0)
    snprintf(out, n, "%s-%d", host, bound_port);
  else if (port && strcmp(port, ":0") != 0)
    snprintf(out, n, "%s-%s", host, port + 1);
  else
    snprintf(out, n, "%s-pid%d", host, (int)getpid());
}

/* eg_repl_key_store.keys_fit: the primary's fingerprint against this
 * replica's keyring, a key it lacks judged by this node's own store (the
 * primary's data and key store as far as it has applied them). No primary
 * of the keyring in use to protect: a replica wraps no data key. */
static eg_err eg_replica_keys_fit(eg_store *store, eg_data_keys *dk, const eg_keyring *keys,
                                  const uint8_t *fp, size_t len, char *why, size_t whylen) {
  size_t n;
  int has_new;
  return eg_key_retire_fit(store, dk, keys, 0, fp, len, NULL, 0, &n, &has_new, why, whylen);
}

static eg_err eg_repl_open(const eg_config *cfg, eg_srv *srv, eg_repl **out, char *err,
                          size_t errlen) {
  char id[128];
  eg_client_tls tls;
  eg_replica_id(cfg, 0, id, sizeof id);
  eg_repl_config rc = {
      /* With a coordinator every node starts as a replica of nobody: etcd
       * says whom to follow, or that it leads. */
      .replica = strcmp(cfg->role, "replica") == 0 || cfg->coordinator[0],
      .primary = cfg->primary,
      .token = cfg->replica_token,
      .replica_id = id,
      .sync_replicas = cfg->sync_replicas,
      .sync_timeout_ms = cfg->sync_timeout_ms,
      .retain_records = cfg->wal_retain_records,
      .retain_s = cfg->wal_retain_s,
      .retain_cap = cfg->wal_retain_cap,
      .keys = &srv->keys,
      .key_store = {.dk = srv->data_keys,
                    .version = eg_data_keys_version,
                    .changes = eg_data_keys_changes,
                    .apply = eg_data_keys_apply_batch,
                    .keys_fit = eg_replica_keys_fit},
      .tls = eg_config_peer_tls(cfg, &tls),
  };
  eg_err e = eg_repl_new(&rc, srv->store, out, err, errlen);
  /* Coordinated from the start: Promote is refused, and a primary is
   * fenced until its first lease renewal. */
  if (e == EG_OK && cfg->coordinator[0]) eg_repl_set_lease(*out, 0);
  return e;
}

/* HOST:PORT peers reach this node at: --advertise-address, else --listen
 * with the bound port; a wildcard host (nobody can dial it) gives way to
 * the hostname. */
static void eg_advertise_address(const eg_config *cfg, int port, char *out, size_t n) {
  char host[256] = "";
  const char *colon = strrchr(cfg->listen, ':');
  int hostlen = colon ? (int)(colon - cfg->listen) : (int)strlen(cfg->listen);
  if (cfg->advertise_address[0]) {
    snprintf(out, n, "%s", cfg->advertise_address);
    return;
  }
  snprintf(host, sizeof host, "%.*s", hostlen, cfg->listen);
  if (!host[0] || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "[::]") == 0 ||
      strcmp(host, "::") == 0) {
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
  }
  snprintf(out, n, "%s:%d", host, port);
}

/* With --coordinator: the coordinator thread, once replication runs and
 * the port is bound (the address it publishes). */
static eg_err eg_coord_open(const eg_config *cfg, eg_srv *srv, int port, char *err,
                            size_t errlen) {
  char address[256];
  if (!cfg->coordinator[0]) return EG_OK;
  eg_replica_id(cfg, port, srv->node_id, sizeof srv->node_id);
  eg_advertise_address(cfg, port, address, sizeof address);
  eg_client_tls etcd_tls;
  eg_coord_config cc = {.url = cfg->coordinator,
                        .id = srv->node_id,
                        .address = address,
                        .lease_ttl_s = cfg->lease_ttl_s,
                        .failover_max_lag = cfg->failover_max_lag,
                        .repl = srv->repl,
                        .store = srv->store,
                        .etcd_tls = eg_config_etcd_tls(cfg, &etcd_tls)};
  eg_coord *c = NULL;
  eg_err e = eg_coord_start(&cc, &c, err, errlen);
  /* Workers already serve GetStatus: node_id is written before. */
  if (e == EG_OK) atomic_store(&srv->coord, c);
  if (e == EG_OK)
    eg_log(EG_LOG_INFO, "coordinator %s: node %s at %s", cfg->coordinator, srv->node_id,
           address);
  return e;
}

static uint64_t eg_trim(void *arg, eg_txn *t) {
  const eg_srv *srv = arg;
  return eg_repl_trim_below(srv->repl, t, eg_archiver_hold(srv->archiver));
}
static eg_err eg_write_alone(void *writer, eg_err (*fn)(void *arg, eg_txn *t), void *arg,
                             uint64_t *lsn) {
  return eg_writer_run_alone(writer, fn, arg, lsn);
}

static int eg_serve(const eg_config *cfg, eg_srv *srv) {
  char err[1024] = "";
  eg_writer *writer = NULL;
  eg_transport *tp = NULL;
  eg_metrics_http *http = NULL;
  eg_reindex *reindex = NULL;
  eg_key_rotation *rotation = NULL;
  int port = 0;
  sigset_t sigs;
  eg_stop_signals(&sigs);

  grpc_init();
  eg_err e = eg_repl_open(cfg, srv, &srv->repl, err, sizeof err);
  /* Before the writer: its first batch may trim the log. */
  if (e == EG_OK) e = eg_archiver_start(cfg, srv->store, &srv->archiver, err, sizeof err);
  if (e == EG_OK) e = eg_writer_start(srv->store, eg_trim, srv, &writer, err, sizeof err);
  if (e == EG_OK) e = eg_sweeper_start(cfg, writer, srv->repl, &srv->sweeper, err, sizeof err);
  if (e == EG_OK) e = eg_reindex_start(srv, writer, &reindex, err, sizeof err);
  if (e == EG_OK) e = eg_key_rotation_start(srv, writer, &rotation, err, sizeof err);
  if (e == EG_OK)
    e = eg_transport_start(srv, writer, eg_workers(cfg), cfg->listen, &port, &tp, err, sizeof err);
  if (e == EG_OK && (e = eg_repl_start(srv->repl, eg_write_alone, writer)) != EG_OK)
    /* eg_repl_start gives no reason of its own: name what it starts. */
    snprintf(err, sizeof err, "cannot start the replication threads (the syncer%s): %s",
             eg_repl_is_primary(srv->repl) ? "" : ", the follower", eg_err_msg(e));
  if (e == EG_OK) e = eg_coord_open(cfg, srv, port, err, sizeof err);
  /* After the coordinator: it reports on it. */
  if (e == EG_OK && cfg->metrics_listen[0])
    e = eg_metrics_http_start(cfg->metrics_listen, eg_transport_metrics(tp), srv->store, writer,
                              srv->sweeper, reindex, rotation, srv->archiver, srv->repl, srv->coord,
                              &http,
                              err, sizeof err);
  if (e != EG_OK) {
    /* Said first: the stop below waits on gRPC, which may need a thread. */
    eg_fail("start", err[0] ? err : eg_err_msg(e));
    eg_coord_stop(srv->coord);
    eg_metrics_http_stop(http); /* it reads the transport's counters */
    eg_repl_stop(srv->repl);
    if (tp) eg_transport_stop(tp, 0);
    eg_reindex_stop(reindex); /* its items need the writer, as the sweeper's */
    eg_key_rotation_stop(rotation);
    eg_sweeper_stop(srv->sweeper);
    eg_writer_stop(writer);
    eg_archiver_stop(srv->archiver);
    eg_coord_free(srv->coord);
    eg_repl_free(srv->repl);
    grpc_shutdown_blocking();
    return 1;
  }
  atomic_store(&srv->phase, EG_PHASE_SERVING); /* health checks may say SERVING */
  eg_announce(cfg->listen, port);
  if (http) eg_announce_metrics(cfg->metrics_listen, eg_metrics_http_port(http));
  if (!eg_repl_is_primary(srv->repl))
    eg_log(EG_LOG_INFO, "replica of %s from lsn %llu",
           cfg->primary[0] ? cfg->primary : "nobody yet (the coordinator decides)",
           (unsigned long long)eg_store_last_lsn(srv->store));
  int sig;
  /* Only the module sends it, after asking for the restart: from anyone
   * else it means nothing. */
  while ((sig = eg_wait_stop(&sigs, srv->store)) == EG_REPL_RESTART_SIGNAL &&
         !eg_repl_restart_requested(srv->repl))
    eg_log(EG_LOG_WARN, "%s ignored: engramd sends it itself to restart", strsignal(sig));
  eg_drain.restarting = sig == EG_REPL_RESTART_SIGNAL;
  /* First: health checks say NOT_SERVING (watches end) while calls drain. */
  atomic_store(&srv->phase, EG_PHASE_DRAINING);
  if (eg_drain.restarting)
    eg_log(EG_LOG_INFO, "draining calls to restart (SIGTERM stops instead; twice exits at "
                        "once)");
  else
    eg_log(EG_LOG_INFO, "%s: draining calls and stopping (send it again to exit at once)",
           sig ? strsignal(sig) : "storage broken");
  pthread_t forcer;
  if (pthread_create(&forcer, NULL, eg_force_exit_main, NULL) == 0)
    pthread_detach(forcer);
  else
    eg_log(EG_LOG_WARN, "cannot watch for a second signal while draining");
  /* First: a leader fences itself and gives up its lease, so that the
   * others elect a new one while this node drains. */
  eg_coord_stop(srv->coord);
  eg_metrics_http_stop(http);
  /* Replication first: its streams are calls the transport waits for. */
  eg_repl_stop(srv->repl);
  eg_transport_stop(tp, cfg->shutdown_grace_ms);
  /* After the transport (GetStatus reads it), before the writer (its
   * item in flight needs the writer to finish). */
  eg_sweeper_stop(srv->sweeper);
  eg_reindex_stop(reindex);
  eg_key_rotation_stop(rotation); /* after the metrics: they read its counts */
  eg_writer_stop(writer);
  /* After the writer: it archives the last commits and closes its segment. */
  eg_archiver_stop(srv->archiver);
  /* A restart claimed while an operator's stop drains (a snapshot fetched
   * meanwhile) is not one: that snapshot is installed at the next start. */
  int restart = eg_drain.restarting && !atomic_load(&eg_drain.stop_instead);
  if (eg_drain.restarting && !restart)
    eg_log(EG_LOG_INFO, "stopped instead of restarting");
  eg_coord_free(srv->coord); /* after the transport: GetStatus reads it */
  eg_repl_free(srv->repl);
  grpc_shutdown_blocking();
  return restart ? 3 : sig ? 0 : 1;
}

int main(int argc, char **argv) {
  eg_config cfg;
  char err[1024] = "";
  int help = 0, rc = 1;
  eg_keyring *keys = NULL;
  eg_auth *auth = NULL;
  eg_tls *tls = NULL;
  eg_store *store = NULL;
  eg_data_keys *data_keys = NULL;
  eg_limits *limits = NULL;
  int lock_fd = -1;

  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--version") == 0) {
      printf("engramd %s\n", ENGRAM_VERSION);
      return 0;
    }
  /* Flag errors and --help go out plainly, before the log is set up. */
  if (eg_config_parse(&cfg, argc, argv, (eg_getenv_fn)getenv, &help, err, sizeof err) != EG_OK) {
    fprintf(stderr, "engramd: %s (see engramd --help)\n", err);
    return 2;
  }
  if (help) {
    eg_config_usage(stdout);
    return 0;
  }
  eg_log_setup(cfg.log_format, cfg.log_level); /* both checked by eg_config_parse */
  char effective[EG_LOG_LINE_MAX];
  eg_config_describe(&cfg, effective, sizeof effective);
  eg_log_field version = {"version", ENGRAM_VERSION};
  eg_log_with(EG_LOG_INFO, &version, 1, "starting engramd %s with %s", ENGRAM_VERSION, effective);

  /* Before any thread exists, so every thread inherits the mask and only
   * main's sigwait (and, while draining, the force-exit thread's) sees
   * these. */
  sigset_t sigs;
  eg_stop_signals(&sigs);
  sigaddset(&sigs, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);

  if (eg_crypto_init() != EG_OK) return eg_fail("libsodium", "cannot initialise");
  /* Everything that can be checked without the store is, before anything
   * is created: a bad --tokens, --tls-* file or keyring leaves no data dir
   * or keyring. */
  eg_err ae = eg_auth_load(cfg.tokens, cfg.tls_identities, &auth, err, sizeof err);
  if (ae != EG_OK) {
    eg_fail("auth", ae == EG_EINVAL ? err : eg_err_msg(ae));
    goto out;
  }
  if (eg_reload_register(eg_auth_reload, auth) != 0) {
    eg_fail("auth", "cannot register the SIGHUP reload (EG_RELOAD_HOOKS_MAX)");
    goto out;
  }
  if ((ae = eg_tls_open(&cfg, &tls, err, sizeof err)) != EG_OK) {
    eg_fail("TLS", ae == EG_EINVAL ? err : eg_err_msg(ae));
    goto out;
  }
  if (tls && eg_reload_register(eg_tls_reload, tls) != 0) {
    eg_fail("TLS", "cannot register the SIGHUP reload (EG_RELOAD_HOOKS_MAX)");
    goto out;
  }
  char keyring[EG_KEYRING_PATH_MAX];
  eg_keyring_path(&cfg, keyring);
  if ((cfg.keyring[0] || access(keyring, F_OK) == 0) &&
      eg_keyring_load(keyring, &keys, err, sizeof err) != EG_OK) {
    eg_fail("keyring", err);
    goto out;
  }
  /* A replica stores what the primary sealed: a key of its own could read
   * none of it. With a coordinator any node may be either, so all share
   * one keyring made beforehand. */
  if (!keys && (strcmp(cfg.role, "replica") == 0 || cfg.coordinator[0])) {
    snprintf(err, sizeof err, "%.300s does not exist: %s needs the primary's keyring "
             "(pass --keyring FILE, or copy it to DATA_DIR/keyring); refusing to make a fresh key",
             keyring, cfg.coordinator[0] ? "a node run with --coordinator" : "a replica");
    eg_fail("keyring", err);
    goto out;
  }
  /* Before the data dir is touched: nothing below (a snapshot install
   * included) may change a data dir another engramd serves. */
  if (eg_store_lock_dir(cfg.data_dir, &lock_fd, err, sizeof err) != EG_OK) {
    eg_fail("data dir", err);
    goto out;
  }
  eg_repl_remove_stale_copies(cfg.data_dir);
  if (eg_repl_install_pending(cfg.data_dir) != EG_OK) {
    eg_fail(cfg.data_dir, "cannot install the snapshot");
    goto out;
  }
  eg_store_opts so = {.map_size = (size_t)cfg.map_size,
                      .max_readers = eg_config_store_readers(eg_workers(&cfg)),
                      .keyring = keyring,
                      .defer_meta_sync = strcmp(cfg.meta_sync, "next-flush") == 0};
  eg_sigbus_install(cfg.data_dir);
  if (eg_store_open(cfg.data_dir, &so, &store, err, sizeof err) != EG_OK) {
    eg_fail(cfg.data_dir, err);
    goto out;
  }
  if (!keys && eg_create_keys(keyring, store, &keys, err, sizeof err) != EG_OK) {
    eg_fail("keyring", err);
    goto out;
  }
  /* Every node opens it: a replica stores the keys its primary sends, and
   * opens with them the data it serves. */
  char key_store[EG_KEYRING_PATH_MAX];
  eg_key_store_path(&cfg, key_store);
  int record_use;
  if (eg_key_store_check(store, key_store, &record_use, err, sizeof err) != EG_OK ||
      eg_data_keys_open(key_store, cfg.data_key_cache, &data_keys, err, sizeof err) != EG_OK) {
    eg_fail("--key-store", err);
    goto out;
  }
  if (record_use && eg_store_meta_put(store, EG_META_KEY_STORE_USED, "1", 1) != EG_OK) {
    eg_fail("--key-store", "cannot record in the store that it uses a key store");
    goto out;
  }
  /* After the key store opens: whether a recorded key the keyring lacks
   * may retire depends on the data keys wrapped under it. */
  if (eg_keyring_check_fingerprint(store, data_keys, keys, 0, keyring, err, sizeof err) != EG_OK) {
    eg_fail("keyring", err);
    goto out;
  }
  if (eg_auth_dev_mode(auth))
    eg_log(EG_LOG_WARN,
           "WARNING: no --tokens file (nor --tls-identities): SINGLE-TENANT DEV MODE, no "
           "authentication; every caller is tenant '%s'. Do not expose this server.", EG_DEV_TENANT);
  eg_tls_warn_plaintext(tls, cfg.listen);
  if (eg_limits_new(&cfg, store, EG_LIMITS_TENANTS_MAX, &limits) != EG_OK) {
    eg_fail("limits", eg_err_msg(EG_ENOMEM));
    goto out;
  }
  eg_srv srv = {.cfg = &cfg,
                .store = store,
                .keys = keys,
                .auth = auth,
                .data_keys = data_keys,
                .tls = tls,
                .limits = limits};
  keys = NULL; /* srv's now: a reload may replace it (eg_keyring_reload_free) */
  eg_err e = eg_blind_key_load(&srv);
  if (e != EG_OK)
    eg_fail("blind-index key id", eg_err_msg(e));
  else if (eg_keyring_reload_register(&srv, keyring) != EG_OK)
    eg_fail("keyring", "cannot register its SIGHUP reload (too many reload hooks)");
  else
    rc = eg_serve(&cfg, &srv);
  eg_keyring_reload_free(&srv);
out:
  eg_limits_free(limits);
  eg_data_keys_close(data_keys);
  eg_store_close(store);
  eg_auth_free(auth);
  eg_tls_free(tls); /* after eg_serve: gRPC's credentials call into it */
  eg_keyring_free(keys);
  eg_store_unlock_dir(lock_fd); /* also dropped by exec (close-on-exec) */
  if (rc == 3) {
    /* The follower fetched a snapshot, or the coordinator deposed this
     * primary (said above): start over, same arguments. */
    eg_log(EG_LOG_INFO, "restarting");
    execv("/proc/self/exe", argv);
    return eg_fail("restart", strerror(errno));
  }
  return rc;
}
