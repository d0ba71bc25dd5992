/* server/config.c: defaults, environment, flags, ranges, --help. */
#define _GNU_SOURCE /* open_memstream */
#include <CUnit/CUnit.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/config.h"
#include "suites.h"

/* The environment the parser sees: "NAME=value" strings, NULL-terminated. */
static const char *const *fake_env;

static const char *fake_getenv(const char *name) {
  size_t n = strlen(name);
  for (const char *const *e = fake_env; e && *e; e++)
    if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
  return NULL;
}

static char err[256];
static int want_help;

/* Parses "engramd args..." (args NULL-terminated) under env. */
static eg_err parse(eg_config *c, const char *const *env, const char *const *args) {
  char *argv[32] = {"engramd"};
  int argc = 1;
  while (args && args[argc - 1]) {
    argv[argc] = (char *)args[argc - 1];
    argc++;
  }
  fake_env = env;
  err[0] = '\0';
  want_help = -1;
  return eg_config_parse(c, argc, argv, fake_getenv, &want_help, err, sizeof err);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void assert_defaults(const eg_config *c) {
  CU_ASSERT_STRING_EQUAL(c->listen, "127.0.0.1:50051");
  CU_ASSERT_STRING_EQUAL(c->data_dir, "./data");
  CU_ASSERT_STRING_EQUAL(c->keyring, "");
  CU_ASSERT_STRING_EQUAL(c->tokens, "");
  CU_ASSERT_EQUAL(c->workers, 0);
  CU_ASSERT_STRING_EQUAL(c->role, "primary");
  CU_ASSERT_STRING_EQUAL(c->primary, "");
  CU_ASSERT_STRING_EQUAL(c->metrics_listen, "");
  CU_ASSERT_EQUAL(c->session_ttl_s, 7200);
  CU_ASSERT_EQUAL(c->summary_every, 5);
  CU_ASSERT_EQUAL(c->max_content_bytes, 65536);
  CU_ASSERT_EQUAL(c->max_metadata_bytes, 16384);
  CU_ASSERT_EQUAL(c->max_append_messages, 100);
  CU_ASSERT_EQUAL(c->max_fork_messages, 10000);
  CU_ASSERT_EQUAL(c->max_fork_bytes, 16777216);
  CU_ASSERT_EQUAL(c->default_page_size, 50);
  CU_ASSERT_EQUAL(c->max_page_size, 1000);
  CU_ASSERT_EQUAL(c->map_size, 1073741824);
  CU_ASSERT_EQUAL(c->shutdown_grace_ms, 10000);
  CU_ASSERT_EQUAL(c->export_max_ms, 300000);
  CU_ASSERT_EQUAL(c->backup_max_ms, 3600000);
  /* Every stream kind's places, and room for replicas replacing streams. */
  CU_ASSERT_EQUAL(eg_config_stream_threads(c),
                  64 + EG_SNAPSHOTS_MAX + EG_BACKUPS_MAX + c->max_exports + EG_HEALTH_WATCHES_MAX +
                      EG_REFLECTION_STREAMS_MAX + EG_REFLECTION_TOKEN_STREAMS_MAX +
                      EG_STREAMS_HEADROOM);
  CU_ASSERT_STRING_EQUAL(c->reflection, "true");
}

static void test_defaults(void) {
  eg_config c;
  memset(&c, 0x5A, sizeof c);
  eg_config_defaults(&c);
  assert_defaults(&c);
  memset(&c, 0x5A, sizeof c);
  CU_ASSERT_EQUAL(parse(&c, NULL, NULL), EG_OK);
  assert_defaults(&c);
  CU_ASSERT_EQUAL(want_help, 0);
  /* A getenv_fn of NULL reads no environment. */
  char *argv[] = {"engramd", NULL};
  CU_ASSERT_EQUAL(eg_config_parse(&c, 1, argv, NULL, NULL, err, sizeof err), EG_OK);
  assert_defaults(&c);
}

static void test_env(void) {
  eg_config c;
  const char *const env[] = {"ENGRAM_WORKERS=4", "ENGRAM_DATA_DIR=/var/lib/engram",
                             "ENGRAM_SESSION_TTL=60", "ENGRAM_METRICS_LISTEN=0.0.0.0:9090",
                             "ENGRAM_MAP_SIZE=2097152", "WORKERS=9", NULL};
  CU_ASSERT_EQUAL(parse(&c, env, NULL), EG_OK);
  CU_ASSERT_EQUAL(c.workers, 4);
  CU_ASSERT_STRING_EQUAL(c.data_dir, "/var/lib/engram");
  CU_ASSERT_EQUAL(c.session_ttl_s, 60);
  CU_ASSERT_STRING_EQUAL(c.metrics_listen, "0.0.0.0:9090");
  CU_ASSERT_EQUAL(c.map_size, 2097152);
  CU_ASSERT_STRING_EQUAL(c.listen, "127.0.0.1:50051");
}

static void test_flag_overrides_env(void) {
  eg_config c;
  const char *const env[] = {"ENGRAM_WORKERS=4", "ENGRAM_DATA_DIR=/a", NULL};
  CU_ASSERT_EQUAL(parse(&c, env, ARGS("--workers", "8", "--data-dir=/b")), EG_OK);
  CU_ASSERT_EQUAL(c.workers, 8);
  CU_ASSERT_STRING_EQUAL(c.data_dir, "/b");
}

static void test_flag_forms(void) {
  eg_config c;
  CU_ASSERT_EQUAL(parse(&c, NULL,
                        ARGS("--listen=0.0.0.0:1", "--tokens", "/etc/engram/tokens",
                             "--keyring=", "--summary-every=7", "--workers", "2", "--workers=3")),
                  EG_OK);
  CU_ASSERT_STRING_EQUAL(c.listen, "0.0.0.0:1");
  CU_ASSERT_STRING_EQUAL(c.tokens, "/etc/engram/tokens");
  CU_ASSERT_STRING_EQUAL(c.keyring, "");
  CU_ASSERT_EQUAL(c.summary_every, 7);
  CU_ASSERT_EQUAL(c.workers, 3); /* the last one wins */
  /* "=" keeps everything after the first '=' as the value. */
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--data-dir=/x=y")), EG_OK);
  CU_ASSERT_STRING_EQUAL(c.data_dir, "/x=y");
}

static void test_unknown_and_missing(void) {
  eg_config c;
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--bogus")), EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "--bogus: unknown flag");
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--bogus=1")), EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "--bogus: unknown flag");
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--list", "x")), EG_EINVAL); /* no prefixes */
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("stray")), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "stray"));
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("-w", "3")), EG_EINVAL);
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--listen")), EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "--listen: missing value");
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--listen", "--workers", "3")), EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "--listen: missing value");
}

static void test_bad_numbers(void) {
  eg_config c;
  static const char *const bad[] = {"abc", "", "12x", " 5", "+5", "1.5", "0x10", "-"};
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--session-ttl", "abc")), EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "--session-ttl: not a number: 'abc'");
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char arg[64];
    snprintf(arg, sizeof arg, "--workers=%s", bad[i]);
    CU_ASSERT_EQUAL(parse(&c, NULL, ARGS(arg)), EG_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a number"));
  }
  const char *const env[] = {"ENGRAM_WORKERS=abc", NULL};
  CU_ASSERT_EQUAL(parse(&c, env, NULL), EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "ENGRAM_WORKERS: not a number: 'abc'");
}

/* Every numeric option: both edges accepted and stored, one past either
 * refused. */
static void test_ranges(void) {
  static const struct {
    const char *flag;
    size_t offset, size;
    long long min, max;
  } opts[] = {
#define OPT(flag, f, min, max) {flag, offsetof(eg_config, f), sizeof(((eg_config *)0)->f), min, max}
      OPT("workers", workers, 0, 256),
      OPT("session-ttl", session_ttl_s, 1, 31536000),
      OPT("summary-every", summary_every, 1, 1000000),
      OPT("max-content-bytes", max_content_bytes, 1, 16777216),
      OPT("max-metadata-bytes", max_metadata_bytes, 0, 1048576),
      OPT("max-append-messages", max_append_messages, 1, 10000),
      OPT("max-fork-messages", max_fork_messages, 1, 100000),
      OPT("max-fork-bytes", max_fork_bytes, 1, 33554432),
      OPT("default-page-size", default_page_size, 1, 100000),
      OPT("max-page-size", max_page_size, 1, 100000),
      OPT("map-size", map_size, 1048576, 17592186044416LL),
      OPT("shutdown-grace-ms", shutdown_grace_ms, 0, 600000),
      OPT("max-reply-bytes", max_reply_bytes, 1048576, 1073741824),
      OPT("wal-retain-s", wal_retain_s, 1, 3153600000LL),
      OPT("call-timeout-ms", call_timeout_ms, 100, 3600000),
      OPT("max-streams-per-conn", max_streams_per_conn, 1, 100000),
      OPT("max-pending-reply-bytes", max_pending_reply_bytes, 1048576, 1099511627776LL),
      OPT("export-max-ms", export_max_ms, 100, 86400000),
      OPT("backup-max-ms", backup_max_ms, 100, 604800000),
#undef OPT
  };
  eg_config c;
  char flag[64], value[32], want[128];
  for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
    const long long tries[4] = {opts[i].min, opts[i].max, opts[i].min - 1, opts[i].max + 1};
    snprintf(flag, sizeof flag, "--%s", opts[i].flag);
    for (int t = 0; t < 4; t++) {
      snprintf(value, sizeof value, "%lld", tries[t]);
      /* Page sizes first, so the default <= max rule never interferes. */
      eg_err rc = parse(&c, NULL,
                        ARGS("--default-page-size", "1", "--max-page-size", "100000",
                             "--max-reply-bytes", "1073741824", flag, value));
      const char *field = (const char *)&c + opts[i].offset;
      long long got = opts[i].size == sizeof(int) ? *(const int *)field : *(const int64_t *)field;
      if (t < 2) {
        CU_ASSERT_EQUAL(rc, EG_OK);
        CU_ASSERT_EQUAL(got, tries[t]);
      } else {
        CU_ASSERT_EQUAL(rc, EG_EINVAL);
        snprintf(want, sizeof want, "%s: out of range %lld..%lld", flag, opts[i].min, opts[i].max);
        CU_ASSERT_STRING_EQUAL(err, want);
      }
    }
  }
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--map-size", "99999999999999999999")), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "out of range"));
  const char *const env[] = {"ENGRAM_WORKERS=257", NULL};
  CU_ASSERT_EQUAL(parse(&c, env, NULL), EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "ENGRAM_WORKERS: out of range 0..256");
}

/* --max-reply-bytes must hold one largest item, so a page always advances. */
static void test_reply_bytes(void) {
  eg_config c;
  CU_ASSERT_EQUAL(parse(&c, NULL, NULL), EG_OK);
  CU_ASSERT_EQUAL(c.max_reply_bytes, 3145728);
  /* 4 MiB of content cannot fit a 3 MiB reply. */
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--max-content-bytes", "4194304")), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "--max-reply-bytes: must be at least 4310016"));
  /* The edge: exactly one largest item plus the reserve. */
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--max-content-bytes", "1000000", "--max-metadata-bytes",
                                       "0", "--max-reply-bytes", "1048576")),
                  EG_OK);
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--max-content-bytes", "1014785", "--max-metadata-bytes",
                                       "0", "--max-reply-bytes", "1048576")),
                  EG_EINVAL);
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--max-content-bytes", "1014784", "--max-metadata-bytes",
                                       "0", "--max-reply-bytes", "1048576")),
                  EG_OK);
}

static void test_page_sizes(void) {
  eg_config c;
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--default-page-size", "1001")), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "--default-page-size"));
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--max-page-size", "49")), EG_EINVAL);
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--default-page-size", "1000")), EG_OK);
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--default-page-size", "2000", "--max-page-size", "2000")),
                  EG_OK);
}

static void test_role(void) {
  eg_config c;
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--role", "replica")), EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "--primary: required when --role is replica");
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--role", "replica", "--primary", "engram-0:50051")), EG_OK);
  CU_ASSERT_STRING_EQUAL(c.role, "replica");
  CU_ASSERT_STRING_EQUAL(c.primary, "engram-0:50051");
  const char *const env[] = {"ENGRAM_ROLE=replica", "ENGRAM_PRIMARY=p:1", NULL};
  CU_ASSERT_EQUAL(parse(&c, env, NULL), EG_OK);
  CU_ASSERT_STRING_EQUAL(c.role, "replica");
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--role", "leader")), EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "--role: must be primary|replica: 'leader'");
  static const char *const bad[] = {"", "prim", "primaryx", "Primary", "primary|replica"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char arg[64];
    snprintf(arg, sizeof arg, "--role=%s", bad[i]);
    CU_ASSERT_EQUAL(parse(&c, NULL, ARGS(arg)), EG_EINVAL);
  }
}

/* A write held for replica acks answers before the reaper's cut. */
static void test_sync_below_call_timeout(void) {
  eg_config c;
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--sync-replicas", "1", "--sync-timeout-ms", "59999")), EG_OK);
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--sync-replicas", "1", "--sync-timeout-ms", "60000")),
                  EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "--sync-timeout-ms: must be below --call-timeout-ms (60000)");
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--sync-replicas", "1", "--sync-timeout-ms", "600000",
                                       "--call-timeout-ms", "600001")),
                  EG_OK);
  /* Without --sync-replicas nothing is held: any call timeout goes. */
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--call-timeout-ms", "1000")), EG_OK);
}

/* TLS flags that only work together are refused at start, naming the flag. */
static void test_tls_pairs(void) {
  eg_config c;
  const char *coord[] = {"--coordinator", "etcd://127.0.0.1:2379/engram"};
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS(coord[0], coord[1], "--etcd-tls-ca", "ca.pem",
                                       "--etcd-tls-cert", "c.pem")),
                  EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "--etcd-tls-cert: needs --etcd-tls-key (the certificate's private key)");
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS(coord[0], coord[1], "--etcd-tls-ca", "ca.pem",
                                       "--etcd-tls-key", "k.pem")),
                  EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "--etcd-tls-key: needs --etcd-tls-cert (the key's certificate)");
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS(coord[0], coord[1], "--etcd-tls-cert", "c.pem",
                                       "--etcd-tls-key", "k.pem")),
                  EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "--etcd-tls-cert: needs --etcd-tls-ca (TLS to etcd is on only with "
                              "the CA that verifies etcd)");
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--etcd-tls-ca", "ca.pem")), EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "--etcd-tls-ca: only with --coordinator (it is how this node dials "
                              "etcd)");
  const char *const env[] = {"ENGRAM_ETCD_TLS_CA=ca.pem", "ENGRAM_ETCD_TLS_CERT=c.pem",
                             "ENGRAM_ETCD_TLS_KEY=k.pem", NULL};
  CU_ASSERT_EQUAL(parse(&c, env, ARGS(coord[0], coord[1])), EG_OK);

  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--tls-peer-server-name", "engram")), EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "--tls-peer-server-name: needs --tls-peer-ca or --tls-client-ca "
                              "(without either this node dials its primary in plaintext)");
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--tls-peer-server-name", "engram", "--tls-peer-ca", "ca.pem")),
                  EG_OK);
}

/* What a node dials its primary and etcd with. */
static void test_peer_and_etcd_tls(void) {
  eg_config c;
  eg_client_tls t;
  CU_ASSERT_EQUAL_FATAL(parse(&c, NULL, NULL), EG_OK);
  CU_ASSERT_PTR_NULL(eg_config_peer_tls(&c, &t));
  CU_ASSERT_PTR_NULL(eg_config_etcd_tls(&c, &t));
  /* A node that requires client certificates trusts that CA for its peers
   * and presents its own certificate to them. */
  CU_ASSERT_EQUAL_FATAL(parse(&c, NULL, ARGS("--tls-cert", "c.pem", "--tls-key", "k.pem",
                                             "--tls-client-ca", "clients.pem")),
                        EG_OK);
  CU_ASSERT_PTR_EQUAL_FATAL(eg_config_peer_tls(&c, &t), &t);
  CU_ASSERT_STRING_EQUAL(t.ca_file, "clients.pem");
  CU_ASSERT_STRING_EQUAL(t.cert_file, "c.pem");
  CU_ASSERT_STRING_EQUAL(t.key_file, "k.pem");
  CU_ASSERT_PTR_NULL(t.server_name);
  /* --tls-peer-ca alone, no certificate of its own: TLS without one. */
  CU_ASSERT_EQUAL_FATAL(parse(&c, NULL, ARGS("--tls-peer-ca", "peers.pem", "--tls-peer-server-name",
                                             "engram")),
                        EG_OK);
  CU_ASSERT_PTR_EQUAL_FATAL(eg_config_peer_tls(&c, &t), &t);
  CU_ASSERT_STRING_EQUAL(t.ca_file, "peers.pem");
  CU_ASSERT_PTR_NULL(t.cert_file);
  CU_ASSERT_PTR_NULL(t.key_file);
  CU_ASSERT_STRING_EQUAL(t.server_name, "engram");
  /* --tls-peer-ca wins over --tls-client-ca. */
  CU_ASSERT_EQUAL_FATAL(parse(&c, NULL, ARGS("--tls-cert", "c.pem", "--tls-key", "k.pem",
                                             "--tls-client-ca", "clients.pem", "--tls-peer-ca",
                                             "peers.pem")),
                        EG_OK);
  CU_ASSERT_PTR_EQUAL_FATAL(eg_config_peer_tls(&c, &t), &t);
  CU_ASSERT_STRING_EQUAL(t.ca_file, "peers.pem");
  CU_ASSERT_STRING_EQUAL(t.cert_file, "c.pem");
  /* Serving TLS alone does not make the node dial with it. */
  CU_ASSERT_EQUAL_FATAL(parse(&c, NULL, ARGS("--tls-cert", "c.pem", "--tls-key", "k.pem")), EG_OK);
  CU_ASSERT_PTR_NULL(eg_config_peer_tls(&c, &t));
  CU_ASSERT_EQUAL_FATAL(parse(&c, NULL, ARGS("--coordinator", "etcd://e:1/p", "--etcd-tls-ca",
                                             "eca.pem", "--etcd-tls-cert", "ec.pem",
                                             "--etcd-tls-key", "ek.pem", "--tls-cert", "c.pem",
                                             "--tls-key", "k.pem")),
                        EG_OK);
  CU_ASSERT_PTR_EQUAL_FATAL(eg_config_etcd_tls(&c, &t), &t);
  CU_ASSERT_STRING_EQUAL(t.ca_file, "eca.pem");
  CU_ASSERT_STRING_EQUAL(t.cert_file, "ec.pem");
  CU_ASSERT_STRING_EQUAL(t.key_file, "ek.pem");
  CU_ASSERT_PTR_NULL(t.server_name);
}

static void test_string_too_long(void) {
  eg_config c;
  char arg[300];
  snprintf(arg, sizeof arg, "--listen=%0255d", 0); /* 255 bytes: fits char[256] */
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS(arg)), EG_OK);
  CU_ASSERT_EQUAL(strlen(c.listen), 255);
  snprintf(arg, sizeof arg, "--listen=%0256d", 0);
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS(arg)), EG_EINVAL);
  CU_ASSERT_STRING_EQUAL(err, "--listen: longer than 255 bytes");
}

static void test_help(void) {
  eg_config c;
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--help")), EG_OK);
  CU_ASSERT_EQUAL(want_help, 1);
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--workers", "3", "-h")), EG_OK);
  CU_ASSERT_EQUAL(want_help, 1);
  CU_ASSERT_EQUAL(parse(&c, NULL, ARGS("--workers", "3")), EG_OK);
  CU_ASSERT_EQUAL(want_help, 0);
  char *argv[] = {"engramd", "--help", NULL};
  CU_ASSERT_EQUAL(eg_config_parse(&c, 2, argv, NULL, NULL, err, sizeof err), EG_OK);
}

static void test_usage(void) {
  static const char *const flags[] = {
      "--listen",          "--data-dir",           "--keyring",           "--tokens",
      "--workers",         "--role",               "--primary",           "--metrics-listen",
      "--session-ttl",     "--summary-every",      "--max-content-bytes", "--max-metadata-bytes",
      "--max-append-messages", "--default-page-size", "--max-page-size",  "--map-size",
      "--shutdown-grace-ms"};
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  CU_ASSERT_FATAL(f != NULL);
  eg_config_usage(f);
  fclose(f);
  for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
    char want[64];
    snprintf(want, sizeof want, "%s ", flags[i]);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, want));
  }
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "ENGRAM_SESSION_TTL"));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "[7200]"));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "[127.0.0.1:50051]"));
  free(text);
}

void eg_test_register_config(void) {
  CU_pSuite s = CU_add_suite("config", NULL, NULL);
  CU_add_test(s, "defaults", test_defaults);
  CU_add_test(s, "reply bytes hold one item", test_reply_bytes);
  CU_add_test(s, "env", test_env);
  CU_add_test(s, "flag overrides env", test_flag_overrides_env);
  CU_add_test(s, "flag forms", test_flag_forms);
  CU_add_test(s, "unknown and missing", test_unknown_and_missing);
  CU_add_test(s, "bad numbers", test_bad_numbers);
  CU_add_test(s, "ranges", test_ranges);
  CU_add_test(s, "page sizes", test_page_sizes);
  CU_add_test(s, "role", test_role);
  CU_add_test(s, "sync timeout below call timeout", test_sync_below_call_timeout);
  CU_add_test(s, "TLS flags that go together", test_tls_pairs);
  CU_add_test(s, "peer and etcd TLS", test_peer_and_etcd_tls);
  CU_add_test(s, "string too long", test_string_too_long);
  CU_add_test(s, "help", test_help);
  CU_add_test(s, "usage", test_usage);
}
