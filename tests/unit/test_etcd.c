/* coord/etcd.c against a real etcd: Debian's /usr/bin/etcd (etcd-server),
 * started once for the suite on free loopback ports with a temp data dir,
 * ended by its PID. Without it every test fails, saying so: the client is
 * only ever tested against the real server. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/rpc.h"
#include "coord/etcd.h"
#include "etcd/etcdserverpb/rpc.pb-c.h"
#include "suites.h"

#define ETCD_BIN "/usr/bin/etcd"
/* How long etcd may take to answer after it starts (a single member elects
 * itself within a few election timeouts of 1 s). */
#define ETCD_START_TRIES 300 /* x 100 ms */
#define CALL_TIMEOUT_MS 5000

static struct {
  pid_t pid; /* 0: not started */
  char dir[4096];
  char endpoint[64];
  int failed; /* it did not start: later tests fail at once */
} etcd;

/* ---- the etcd process ------------------------------------------------------ */

/* A loopback port nothing listens on right now. */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  CU_ASSERT_FATAL(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
                  getsockname(fd, (struct sockaddr *)&a, &len) == 0);
  close(fd);
  return ntohs(a.sin_port);
}

static eg_etcd *client_for(const char *const *endpoints, size_t n, int64_t timeout_ms) {
  eg_etcd *e = NULL;
  char err[256] = "";
  eg_err rc = eg_etcd_new(endpoints, n, NULL, timeout_ms, &e, err, sizeof err);
  if (rc) fprintf(stderr, "eg_etcd_new: %s: %s\n", eg_err_name(rc), err);
  CU_ASSERT_EQUAL_FATAL(rc, EG_OK);
  return e;
}

static void exec_etcd(int client_port, int peer_port) {
  char data[4200], log[4200], curl[64], purl[64], cluster[80];
  snprintf(data, sizeof data, "%s/data", etcd.dir);
  snprintf(log, sizeof log, "%s/etcd.log", etcd.dir);
  snprintf(curl, sizeof curl, "http://127.0.0.1:%d", client_port);
  snprintf(purl, sizeof purl, "http://127.0.0.1:%d", peer_port);
  snprintf(cluster, sizeof cluster, "eg=%s", purl);
  prctl(PR_SET_PDEATHSIG, SIGKILL); /* a crashed test leaves no etcd behind */
  int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
  }
  execl(ETCD_BIN, "etcd", "--name", "eg", "--data-dir", data, "--listen-client-urls", curl,
        "--advertise-client-urls", curl, "--listen-peer-urls", purl,
        "--initial-advertise-peer-urls", purl, "--initial-cluster", cluster, (char *)NULL);
  _exit(127);
}

/* Starts etcd unless it runs; fails the test (FATAL) when it cannot. */
static void etcd_up(void) {
  if (etcd.pid) return;
  if (etcd.failed || access(ETCD_BIN, X_OK) != 0) {
    fprintf(stderr, "\netcd suite: %s is missing; install etcd-server (scripts/deps.sh test)\n",
            ETCD_BIN);
    etcd.failed = 1;
    CU_FAIL_FATAL("etcd (" ETCD_BIN ") is not installed");
  }
  snprintf(etcd.dir, sizeof etcd.dir, "%s", eg_test_tmpdir());
  int client_port = free_port(), peer_port = free_port();
  snprintf(etcd.endpoint, sizeof etcd.endpoint, "127.0.0.1:%d", client_port);
  etcd.pid = fork();
  CU_ASSERT_FATAL(etcd.pid >= 0);
  if (etcd.pid == 0) exec_etcd(client_port, peer_port);

  const char *ep = etcd.endpoint;
  eg_etcd *e = client_for(&ep, 1, 1000);
  eg_etcd_kvs kvs;
  char err[256];
  int up = 0, status;
  for (int i = 0; i < ETCD_START_TRIES && !up; i++) {
    if (waitpid(etcd.pid, &status, WNOHANG) == etcd.pid) {
      etcd.pid = 0;
      break;
    }
    up = eg_etcd_range_prefix(e, (const uint8_t *)"ready", 5, &kvs, err, sizeof err) == EG_OK;
    if (up) eg_etcd_kvs_free(&kvs);
    else usleep(100 * 1000);
  }
  eg_etcd_free(e);
  if (!up) {
    fprintf(stderr, "\netcd suite: etcd did not answer on %s (last: %s); log: %s/etcd.log\n",
            etcd.endpoint, err, etcd.dir);
    if (etcd.pid) kill(etcd.pid, SIGKILL), waitpid(etcd.pid, &status, 0);
    etcd.pid = 0;
    etcd.failed = 1;
    CU_FAIL_FATAL("etcd did not start");
  }
}

static int suite_cleanup(void) {
  if (etcd.pid) {
    kill(etcd.pid, SIGCONT); /* a failed SIGSTOP test may leave it stopped */
    kill(etcd.pid, SIGTERM);
    waitpid(etcd.pid, NULL, 0);
    etcd.pid = 0;
  }
  if (etcd.dir[0]) eg_test_rmdir(etcd.dir);
  return 0;
}

/* 1 once every thread of pid is stopped ('T' in /proc): kill(SIGSTOP)
 * returns before the signal has reached them all. */
static int all_stopped(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  if (!d) return 0;
  int stopped = 1;
  struct dirent *de;
  while (stopped && (de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    char stat[384], buf[512];
    snprintf(stat, sizeof stat, "%s/%s/stat", path, de->d_name);
    FILE *f = fopen(stat, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')'); /* the state follows the name */
    stopped = paren && paren[1] == ' ' && paren[2] == 'T';
  }
  closedir(d);
  return stopped;
}

/* A client of the suite's etcd. */
static eg_etcd *client(int64_t timeout_ms) {
  etcd_up();
  const char *ep = etcd.endpoint;
  return client_for(&ep, 1, timeout_ms);
}

/* ---- helpers -------------------------------------------------------------- */

#define S(s) (const uint8_t *)(s), strlen(s)

static void put(eg_etcd *e, const char *key, const char *value, int64_t lease) {
  char err[256] = "";
  eg_err rc = eg_etcd_put(e, S(key), S(value), lease, err, sizeof err);
  if (rc) fprintf(stderr, "put %s: %s: %s\n", key, eg_err_name(rc), err);
  CU_ASSERT_EQUAL_FATAL(rc, EG_OK);
}

static eg_etcd_kvs range(eg_etcd *e, const char *prefix) {
  eg_etcd_kvs kvs;
  char err[256] = "";
  eg_err rc = eg_etcd_range_prefix(e, S(prefix), &kvs, err, sizeof err);
  if (rc) fprintf(stderr, "range %s: %s: %s\n", prefix, eg_err_name(rc), err);
  CU_ASSERT_EQUAL_FATAL(rc, EG_OK);
  return kvs;
}

static int kv_is(const eg_etcd_kv *kv, const char *key, const char *value) {
  return kv->key_len == strlen(key) && memcmp(kv->key, key, kv->key_len) == 0 &&
         kv->value_len == strlen(value) && memcmp(kv->value, value, kv->value_len) == 0;
}

/* The one key under prefix (failing unless there is exactly one). */
static eg_etcd_kv only(eg_etcd *e, const char *key, eg_etcd_kvs *kvs) {
  *kvs = range(e, key);
  CU_ASSERT_EQUAL_FATAL(kvs->n, 1);
  return kvs->kvs[0];
}

/* ---- tests ---------------------------------------------------------------- */

static void test_new_refuses_bad_endpoints(void) {
  const char *bad[] = {"", "host", ":2379", "host:", "host:0", "host:65536", "host:12a",
                       "a b:2379", "[::1:2379", "[]:2379", "h/x:2379", "host:123456"};
  char err[256];
  eg_etcd *e = NULL;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    CU_ASSERT_EQUAL(eg_etcd_new(&bad[i], 1, NULL, 1000, &e, err, sizeof err), EG_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "HOST:PORT"));
  }
  /* The one check of an endpoint's shape says what is wrong (--coordinator
   * prints it). */
  struct {
    const char *ep, *why;
  } whys[] = {{"host", "no :PORT"}, {":2379", "no host"}, {"a b:2379", "bad host"},
              {"[::1:2379", "bad IPv6"}, {"[]:2379", "bad IPv6"}, {"[::1]", "no :PORT"},
              {"host:0", "port must be 1..65535"}, {"host:123456", "port must be 1..65535"},
              {"user:pw@h:1", "port must be 1..65535"}};
  for (size_t i = 0; i < sizeof whys / sizeof whys[0]; i++) {
    const char *why = eg_etcd_endpoint_check(whys[i].ep, strlen(whys[i].ep));
    CU_ASSERT_PTR_NOT_NULL_FATAL(why);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, whys[i].why));
  }
  CU_ASSERT_PTR_NULL(eg_etcd_endpoint_check("[::1]:2379", 10));
  /* Only the n bytes given are read. */
  CU_ASSERT_PTR_NULL(eg_etcd_endpoint_check("h:1,h:2", 3));
  char too_long[300];
  memset(too_long, 'a', sizeof too_long);
  snprintf(too_long + sizeof too_long - 6, 6, ":2379");
  const char *tl = too_long;
  CU_ASSERT_EQUAL(eg_etcd_new(&tl, 1, NULL, 1000, &e, err, sizeof err), EG_EINVAL);
  const char *null = NULL;
  CU_ASSERT_EQUAL(eg_etcd_new(&null, 1, NULL, 1000, &e, err, sizeof err), EG_EINVAL);

  const char *ten[EG_ETCD_MAX_ENDPOINTS + 1];
  for (size_t i = 0; i < EG_ETCD_MAX_ENDPOINTS + 1; i++) ten[i] = "127.0.0.1:2379";
  CU_ASSERT_EQUAL(eg_etcd_new(ten, 0, NULL, 1000, &e, err, sizeof err), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_etcd_new(ten, EG_ETCD_MAX_ENDPOINTS + 1, NULL, 1000, &e, err, sizeof err),
                  EG_EINVAL);
  CU_ASSERT_EQUAL(eg_etcd_new(ten, 1, NULL, 0, &e, err, sizeof err), EG_EINVAL);
  CU_ASSERT_PTR_NULL(e);

  /* At the limits, and the shapes that are fine; nothing is dialled. */
  const char *good[] = {"127.0.0.1:1", "etcd-0.etcd.ns.svc:65535", "[::1]:2379", "my_host:2"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    CU_ASSERT_EQUAL_FATAL(eg_etcd_new(&good[i], 1, NULL, 1000, &e, err, sizeof err), EG_OK);
    CU_ASSERT_STRING_EQUAL(eg_etcd_endpoint(e), good[i]);
    eg_etcd_free(e);
  }
  CU_ASSERT_EQUAL_FATAL(eg_etcd_new(ten, EG_ETCD_MAX_ENDPOINTS, NULL, 1000, &e, err, sizeof err), EG_OK);
  eg_etcd_free(e);
}

static void test_put_range_prefix(void) {
  eg_etcd *e = client(CALL_TIMEOUT_MS);
  put(e, "pr/b", "2", 0);
  put(e, "pr/a", "1", 0);
  put(e, "pr/c", "3", 0);
  put(e, "pr0", "outside", 0);  /* the byte after '/' : just past the range */
  put(e, "pr.", "outside", 0);  /* the byte before '/' */

  eg_etcd_kvs kvs = range(e, "pr/");
  CU_ASSERT_EQUAL_FATAL(kvs.n, 3);
  CU_ASSERT(kv_is(&kvs.kvs[0], "pr/a", "1"));
  CU_ASSERT(kv_is(&kvs.kvs[1], "pr/b", "2"));
  CU_ASSERT(kv_is(&kvs.kvs[2], "pr/c", "3"));
  /* Revisions in the order of the puts: b, a, c. */
  CU_ASSERT(kvs.kvs[1].mod_revision > 0);
  CU_ASSERT(kvs.kvs[0].mod_revision > kvs.kvs[1].mod_revision);
  CU_ASSERT(kvs.kvs[2].mod_revision > kvs.kvs[0].mod_revision);
  for (size_t i = 0; i < 3; i++) {
    CU_ASSERT_EQUAL(kvs.kvs[i].create_revision, kvs.kvs[i].mod_revision);
    CU_ASSERT_EQUAL(kvs.kvs[i].lease, 0);
  }
  CU_ASSERT(kvs.revision > kvs.kvs[2].mod_revision); /* the two puts after c */
  int64_t created = kvs.kvs[1].create_revision;
  eg_etcd_kvs_free(&kvs);
  CU_ASSERT_PTR_NULL(kvs.kvs);

  /* A second put keeps the creation, moves the modification. */
  put(e, "pr/b", "two", 0);
  eg_etcd_kv kv = only(e, "pr/b", &kvs);
  CU_ASSERT(kv_is(&kv, "pr/b", "two"));
  CU_ASSERT_EQUAL(kv.create_revision, created);
  CU_ASSERT(kv.mod_revision > created);
  CU_ASSERT_EQUAL(kv.mod_revision, kvs.revision);
  eg_etcd_kvs_free(&kvs);

  /* An empty value, and a prefix of 0xff bytes (no range end above it). */
  put(e, "pr/empty", "", 0);
  kv = only(e, "pr/empty", &kvs);
  CU_ASSERT_EQUAL(kv.value_len, 0);
  eg_etcd_kvs_free(&kvs);
  put(e, "\xff\xff", "ff", 0);
  kv = only(e, "\xff\xff", &kvs);
  CU_ASSERT(kv_is(&kv, "\xff\xff", "ff"));
  eg_etcd_kvs_free(&kvs);

  kvs = range(e, "nothing-here/");
  CU_ASSERT_EQUAL(kvs.n, 0);
  CU_ASSERT_PTR_NULL(kvs.kvs);
  CU_ASSERT(kvs.revision > 0);
  eg_etcd_kvs_free(&kvs);
  eg_etcd_free(e);
}

static void test_range_limit(void) {
  eg_etcd *e = client(CALL_TIMEOUT_MS);
  char key[32], err[256];
  for (int i = 0; i < EG_ETCD_RANGE_MAX; i++) {
    snprintf(key, sizeof key, "lim/%04d", i);
    put(e, key, "v", 0);
  }
  eg_etcd_kvs kvs = range(e, "lim/");
  CU_ASSERT_EQUAL(kvs.n, EG_ETCD_RANGE_MAX);
  CU_ASSERT(kv_is(&kvs.kvs[EG_ETCD_RANGE_MAX - 1], "lim/0255", "v"));
  eg_etcd_kvs_free(&kvs);

  put(e, "lim/9999", "one too many", 0);
  memset(&kvs, 0xa5, sizeof kvs);
  CU_ASSERT_EQUAL(eg_etcd_range_prefix(e, S("lim/"), &kvs, err, sizeof err), EG_ELIMIT);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "more than 256 keys"));
  CU_ASSERT_EQUAL(kvs.n, 0);
  CU_ASSERT_PTR_NULL(kvs.kvs);
  CU_ASSERT_EQUAL(kvs.revision, 0);
  eg_etcd_free(e);
}

static void test_key_and_value_limits(void) {
  eg_etcd *e = client(CALL_TIMEOUT_MS);
  char err[256];
  static uint8_t key[EG_ETCD_KEY_MAX + 1], value[EG_ETCD_VALUE_MAX + 1];
  memset(key, 'k', sizeof key);
  memset(value, 'v', sizeof value);
  CU_ASSERT_EQUAL(eg_etcd_put(e, key, EG_ETCD_KEY_MAX, value, EG_ETCD_VALUE_MAX, 0, err,
                              sizeof err), EG_OK);
  CU_ASSERT_EQUAL(eg_etcd_put(e, key, EG_ETCD_KEY_MAX + 1, value, 1, 0, err, sizeof err),
                  EG_ELIMIT);
  CU_ASSERT_EQUAL(eg_etcd_put(e, key, 1, value, EG_ETCD_VALUE_MAX + 1, 0, err, sizeof err),
                  EG_ELIMIT);
  CU_ASSERT_EQUAL(eg_etcd_put(e, key, 0, value, 1, 0, err, sizeof err), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_etcd_delete(e, key, 0, err, sizeof err), EG_EINVAL);
  eg_etcd_kvs kvs;
  CU_ASSERT_EQUAL(eg_etcd_range_prefix(e, key, EG_ETCD_KEY_MAX + 1, &kvs, err, sizeof err),
                  EG_ELIMIT);
  CU_ASSERT_EQUAL(eg_etcd_range_prefix(e, key, 0, &kvs, err, sizeof err), EG_EINVAL);
  kvs = range(e, "kkkk");
  CU_ASSERT_EQUAL(kvs.n, 1);
  CU_ASSERT_EQUAL(kvs.kvs[0].key_len, EG_ETCD_KEY_MAX);
  CU_ASSERT_EQUAL(kvs.kvs[0].value_len, EG_ETCD_VALUE_MAX);
  eg_etcd_kvs_free(&kvs);

  /* A value over the limit that someone else wrote is refused on receipt. */
  eg_client_channel_opts o = {.max_response_bytes = 1 << 20};
  eg_client *raw = eg_client_new_opts(etcd.endpoint, NULL, &o, NULL, 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(raw);
  Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
  req.key = (ProtobufCBinaryData){.len = 7, .data = (uint8_t *)"big/one"};
  req.value = (ProtobufCBinaryData){.len = EG_ETCD_VALUE_MAX + 1, .data = value};
  eg_client_status st;
  ProtobufCMessage *resp = NULL;
  CU_ASSERT_EQUAL_FATAL(eg_client_call(raw, "/etcdserverpb.KV/Put", &req.base,
                                       &etcdserverpb__put_response__descriptor, NULL, &st, &resp),
                        0);
  protobuf_c_message_free_unpacked(resp, NULL);
  eg_client_free(raw);
  CU_ASSERT_EQUAL(eg_etcd_range_prefix(e, S("big/"), &kvs, err, sizeof err), EG_ELIMIT);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "value of 4097"));
  CU_ASSERT_EQUAL(kvs.n, 0);
  CU_ASSERT_PTR_NULL(kvs.kvs);
  CU_ASSERT_EQUAL(kvs.revision, 0);
  eg_etcd_free(e);
}

static void test_delete(void) {
  eg_etcd *e = client(CALL_TIMEOUT_MS);
  char err[256];
  put(e, "del/a", "1", 0);
  put(e, "del/b", "2", 0);
  CU_ASSERT_EQUAL(eg_etcd_delete(e, S("del/a"), err, sizeof err), EG_OK);
  eg_etcd_kvs kvs;
  eg_etcd_kv kv = only(e, "del/", &kvs);
  CU_ASSERT(kv_is(&kv, "del/b", "2"));
  eg_etcd_kvs_free(&kvs);
  /* Absent: no error, and only that key goes (no prefix delete). */
  CU_ASSERT_EQUAL(eg_etcd_delete(e, S("del/a"), err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(eg_etcd_delete(e, S("del/"), err, sizeof err), EG_OK);
  kvs = range(e, "del/");
  CU_ASSERT_EQUAL(kvs.n, 1);
  eg_etcd_kvs_free(&kvs);
  eg_etcd_free(e);
}

/* The election's txn: take tx/leader if absent and tx/epoch unchanged. */
static int elect(eg_etcd *e, int64_t epoch_rev, const char *leader, const char *epoch) {
  eg_etcd_put_op puts[2] = {
      {.key = (const uint8_t *)"tx/leader", .key_len = 9, .value = (const uint8_t *)leader,
       .value_len = strlen(leader)},
      {.key = (const uint8_t *)"tx/epoch", .key_len = 8, .value = (const uint8_t *)epoch,
       .value_len = strlen(epoch)},
  };
  int ok = -1;
  char err[256] = "";
  eg_err rc = eg_etcd_txn_create(e, S("tx/leader"), S("tx/epoch"), epoch_rev, puts, 2, &ok, err,
                                 sizeof err);
  if (rc) fprintf(stderr, "txn: %s: %s\n", eg_err_name(rc), err);
  CU_ASSERT_EQUAL_FATAL(rc, EG_OK);
  return ok;
}

static void test_txn(void) {
  eg_etcd *e = client(CALL_TIMEOUT_MS);
  eg_etcd_kvs kvs;
  /* Both absent (the guard's revision 0): taken, both put in one revision. */
  CU_ASSERT_EQUAL(elect(e, 0, "n1", "1"), 1);
  kvs = range(e, "tx/");
  CU_ASSERT_EQUAL_FATAL(kvs.n, 2);
  CU_ASSERT(kv_is(&kvs.kvs[0], "tx/epoch", "1"));
  CU_ASSERT(kv_is(&kvs.kvs[1], "tx/leader", "n1"));
  CU_ASSERT_EQUAL(kvs.kvs[0].mod_revision, kvs.kvs[1].mod_revision);
  int64_t epoch_rev = kvs.kvs[0].mod_revision;
  eg_etcd_kvs_free(&kvs);

  /* Guard 1 fails: the leader key exists (the epoch guard holds). */
  CU_ASSERT_EQUAL(elect(e, epoch_rev, "n2", "2"), 0);
  /* Guard 2 fails: the leader is gone but the epoch moved on (the guard
   * saw an older revision; and "absent" when it exists). */
  char err[256];
  CU_ASSERT_EQUAL_FATAL(eg_etcd_delete(e, S("tx/leader"), err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(elect(e, epoch_rev - 1, "n2", "2"), 0);
  CU_ASSERT_EQUAL(elect(e, 0, "n2", "2"), 0);
  /* Nothing of the failed txns was written. */
  eg_etcd_kv kv = only(e, "tx/", &kvs);
  CU_ASSERT(kv_is(&kv, "tx/epoch", "1"));
  CU_ASSERT_EQUAL(kv.mod_revision, epoch_rev);
  eg_etcd_kvs_free(&kvs);
  /* Both hold: taken. */
  CU_ASSERT_EQUAL(elect(e, epoch_rev, "n2", "2"), 1);
  kvs = range(e, "tx/");
  CU_ASSERT_EQUAL_FATAL(kvs.n, 2);
  CU_ASSERT(kv_is(&kvs.kvs[0], "tx/epoch", "2"));
  CU_ASSERT(kv_is(&kvs.kvs[1], "tx/leader", "n2"));
  eg_etcd_kvs_free(&kvs);

  /* Arguments outside the bounds are refused before anything is sent. */
  eg_etcd_put_op many[EG_ETCD_TXN_PUTS_MAX + 1];
  for (size_t i = 0; i < EG_ETCD_TXN_PUTS_MAX + 1; i++)
    many[i] = (eg_etcd_put_op){.key = (const uint8_t *)"tx/x", .key_len = 4};
  int ok = -1;
  CU_ASSERT_EQUAL(eg_etcd_txn_create(e, S("tx/a"), S("tx/g"), 0, many, 0, &ok, err, sizeof err),
                  EG_EINVAL);
  CU_ASSERT_EQUAL(eg_etcd_txn_create(e, S("tx/a"), S("tx/g"), 0, many, EG_ETCD_TXN_PUTS_MAX + 1,
                                     &ok, err, sizeof err), EG_EINVAL);
  CU_ASSERT_EQUAL(eg_etcd_txn_create(e, S("tx/a"), S("tx/g"), -1, many, 1, &ok, err, sizeof err),
                  EG_EINVAL);
  CU_ASSERT_EQUAL(ok, -1);
  eg_etcd_free(e);
}

static void test_lease(void) {
  eg_etcd *e = client(CALL_TIMEOUT_MS);
  char err[256] = "";
  int64_t id = 0, granted = 0, ttl = 0;
  CU_ASSERT_EQUAL_FATAL(eg_etcd_lease_grant(e, 30, &id, &granted, err, sizeof err), EG_OK);
  CU_ASSERT(id != 0);
  CU_ASSERT_EQUAL(granted, 30);
  put(e, "lease/k", "v", id);
  eg_etcd_kvs kvs;
  eg_etcd_kv kv = only(e, "lease/", &kvs);
  CU_ASSERT_EQUAL(kv.lease, id);
  eg_etcd_kvs_free(&kvs);

  CU_ASSERT_EQUAL(eg_etcd_lease_keepalive(e, id, &ttl, err, sizeof err), EG_OK);
  CU_ASSERT(ttl > 0 && ttl <= 30);

  /* Revoked: its key is gone, a refresh says so, a second revoke is fine. */
  CU_ASSERT_EQUAL(eg_etcd_lease_revoke(e, id, err, sizeof err), EG_OK);
  kvs = range(e, "lease/");
  CU_ASSERT_EQUAL(kvs.n, 0);
  eg_etcd_kvs_free(&kvs);
  ttl = 99;
  CU_ASSERT_EQUAL(eg_etcd_lease_keepalive(e, id, &ttl, err, sizeof err), EG_OK);
  CU_ASSERT(ttl <= 0);
  CU_ASSERT_EQUAL(eg_etcd_lease_revoke(e, id, err, sizeof err), EG_OK);
  /* A lease that never was. */
  ttl = 99;
  CU_ASSERT_EQUAL(eg_etcd_lease_keepalive(e, 0x7eadbeef, &ttl, err, sizeof err), EG_OK);
  CU_ASSERT(ttl <= 0);
  /* A put on a lease that does not exist is etcd's error. */
  CU_ASSERT_EQUAL(eg_etcd_put(e, S("lease/k"), S("v"), id, err, sizeof err), EG_EIO);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "lease not found"));

  /* A TTL below etcd's minimum is raised; 0 is refused here. */
  CU_ASSERT_EQUAL_FATAL(eg_etcd_lease_grant(e, 1, &id, &granted, err, sizeof err), EG_OK);
  CU_ASSERT(granted >= 1);
  CU_ASSERT_EQUAL(eg_etcd_lease_revoke(e, id, err, sizeof err), EG_OK);
  CU_ASSERT_EQUAL(eg_etcd_lease_grant(e, 0, &id, &granted, err, sizeof err), EG_EINVAL);
  eg_etcd_free(e);
}

static void test_dead_first_endpoint(void) {
  etcd_up();
  char dead[32], err[256] = "";
  snprintf(dead, sizeof dead, "127.0.0.1:%d", free_port()); /* closed: refused at once */
  const char *eps[2] = {dead, etcd.endpoint};
  eg_etcd *e = client_for(eps, 2, CALL_TIMEOUT_MS);
  CU_ASSERT_STRING_EQUAL(eg_etcd_endpoint(e), dead);
  /* The dead one costs one call, which names it; the next goes on. */
  CU_ASSERT_EQUAL(eg_etcd_put(e, S("dead/k"), S("v"), 0, err, sizeof err), EG_EUNAVAIL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, dead));
  CU_ASSERT_STRING_EQUAL(eg_etcd_endpoint(e), etcd.endpoint);
  put(e, "dead/k", "v", 0);
  eg_etcd_kvs kvs;
  eg_etcd_kv kv = only(e, "dead/", &kvs);
  CU_ASSERT(kv_is(&kv, "dead/k", "v"));
  eg_etcd_kvs_free(&kvs);
  eg_etcd_free(e);
}

static void test_stopped_etcd(void) {
  eg_etcd *e = client(300);
  char err[256] = "";
  int64_t id = 0, granted = 0, ttl = 0;
  CU_ASSERT_EQUAL_FATAL(eg_etcd_lease_grant(e, 30, &id, &granted, err, sizeof err), EG_OK);
  put(e, "stop/k", "v", 0); /* connected before it stops */

  /* Stopped (the connection stays open, nothing answers): every kind of
   * call ends at its deadline. */
  CU_ASSERT_EQUAL_FATAL(kill(etcd.pid, SIGSTOP), 0);
  for (int i = 0; i < 1000 && !all_stopped(etcd.pid); i++) usleep(1000);
  CU_ASSERT_FATAL(all_stopped(etcd.pid));
  eg_etcd_kvs kvs;
  CU_ASSERT_EQUAL(eg_etcd_range_prefix(e, S("stop/"), &kvs, err, sizeof err), EG_EUNAVAIL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "DEADLINE_EXCEEDED"));
  CU_ASSERT_EQUAL(eg_etcd_lease_keepalive(e, id, &ttl, err, sizeof err), EG_EUNAVAIL);
  int ok = -1;
  eg_etcd_put_op p = {.key = (const uint8_t *)"stop/x", .key_len = 6};
  CU_ASSERT_EQUAL(eg_etcd_txn_create(e, S("stop/x"), S("stop/g"), 0, &p, 1, &ok, err, sizeof err),
                  EG_EUNAVAIL);
  CU_ASSERT_EQUAL(ok, -1);
  CU_ASSERT_EQUAL_FATAL(kill(etcd.pid, SIGCONT), 0);

  /* Back: the same client works again (the lease outlived the stop). */
  eg_err rc = EG_EUNAVAIL;
  for (int i = 0; i < 50 && rc == EG_EUNAVAIL; i++)
    rc = eg_etcd_lease_keepalive(e, id, &ttl, err, sizeof err);
  CU_ASSERT_EQUAL(rc, EG_OK);
  CU_ASSERT(ttl > 0);
  CU_ASSERT_EQUAL(eg_etcd_lease_revoke(e, id, err, sizeof err), EG_OK);
  eg_etcd_free(e);
}

void eg_test_register_etcd(void) {
  CU_pSuite s = CU_add_suite("etcd", NULL, suite_cleanup);
  CU_add_test(s, "new: endpoints and limits checked, nothing dialled", test_new_refuses_bad_endpoints);
  CU_add_test(s, "put and range of a prefix: sorted, revisions", test_put_range_prefix);
  CU_add_test(s, "range: EG_ETCD_RANGE_MAX keys, one more is EG_ELIMIT", test_range_limit);
  CU_add_test(s, "key and value limits, sent and received", test_key_and_value_limits);
  CU_add_test(s, "delete", test_delete);
  CU_add_test(s, "txn: taken, each guard failing", test_txn);
  CU_add_test(s, "lease: grant, keepalive, revoke, unknown", test_lease);
  CU_add_test(s, "a dead first endpoint costs one call", test_dead_first_endpoint);
  CU_add_test(s, "a stopped etcd: EG_EUNAVAIL at the deadline, then back", test_stopped_etcd);
}
