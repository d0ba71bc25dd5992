/*
 * eg_bench_memory: server-side latency of SearchMemories and CreateMemory
 * (issue 3 point 10), measured in process on a real store.
 *
 * "Server-side" here is everything engramd does for one call after the
 * HTTP/2 layer hands it the request bytes and before it hands back the
 * response bytes: decode + UTF-8 check, the handler (for a write: prepare
 * on the caller, apply in a nested txn, then the commit with its fsync,
 * exactly what the writer thread does for a lone request), and encoding the
 * response. gRPC framing and the loopback hop are not included.
 *
 *   eg_bench_memory [--memories N] [--dim D] [--queries Q] [--creates C]
 *                   [--existing E] [--users U] [--dir DIR]
 *
 * Defaults: 10,000 memories x 384 dims for search, 1,000 queries per mode;
 * U=10 users x E=1,000 memories for create, C=1,000 creates (C/U per user,
 * a quarter of them near-duplicates), dedup MARK. Deterministic data
 * (fixed seed). Prints medians, p90, p99 and max in microseconds.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engram/v1/memory.pb-c.h"
#include "server/service.h"
#include "server/validate.h"

#define TENANT "bench"

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}
static double rnd01(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Time this thread spent on a CPU: wall time minus waits for the CPU (on a
 * shared machine) and for the disk. */
static double cpu_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* ---- synthetic data ---------------------------------------------------------- */

#define VOCAB 3000
static char vocab[VOCAB][16];

static void make_vocab(void) {
  static const char *syl[] = {"ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa",
                              "do", "fi", "gu", "he", "ja", "ko", "ly", "mo", "nu", "pe"};
  for (int i = 0; i < VOCAB; i++) {
    int v = i;
    vocab[i][0] = '\0';
    do {
      strcat(vocab[i], syl[v % 20]);
      v /= 20;
    } while (v);
    strcat(vocab[i], "r"); /* never a stop word, never stemmed */
  }
}

/* A word index with a Zipf-like skew: common words are common. */
static int zipf_word(void) { return (int)(pow(rnd01(), 2.5) * VOCAB) % VOCAB; }

static void make_text(char *buf, size_t cap, int *words, int n) {
  size_t len = 0;
  buf[0] = '\0';
  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? " " : "", vocab[words[i]]);
}

static void make_vec(float *v, int dim) {
  double n = 0;
  for (int i = 0; i < dim; i++) {
    v[i] = (float)(rnd01() * 2 - 1);
    n += (double)v[i] * v[i];
  }
  for (int i = 0; i < dim; i++) v[i] = (float)(v[i] / sqrt(n));
}

/* ---- the server pieces --------------------------------------------------------- */

typedef struct {
  eg_config cfg;
  eg_store *store;
  eg_keyring *keys;
  eg_srv srv;
  eg_txn *reader;
  const eg_method *create, *search;
} bench;

static const eg_method *find_method(const char *path) {
  for (const eg_method *m = eg_memory_methods; m->path; m++)
    if (strcmp(m->path, path) == 0) return m;
  fprintf(stderr, "no method %s\n", path);
  exit(1);
}

static void die(const char *what, eg_err e, const char *msg) {
  fprintf(stderr, "eg_bench_memory: %s: %s %s\n", what, eg_err_name(e), msg ? msg : "");
  exit(1);
}

static void bench_open(bench *b, const char *dir) {
  char err[512], path[4200];
  eg_config_defaults(&b->cfg);
  b->cfg.memory_quota = 1000000;
  if (eg_crypto_init() != EG_OK) die("crypto", EG_EIO, NULL);
  eg_store_opts so = {.map_size = (size_t)4 << 30};
  eg_err e = eg_store_open(dir, &so, &b->store, err, sizeof err);
  if (e) die("store", e, err);
  snprintf(path, sizeof path, "%s/keyring", dir);
  if ((e = eg_keyring_create(path)) || (e = eg_keyring_load(path, &b->keys, err, sizeof err)))
    die("keyring", e, err);
  b->srv = (eg_srv){.cfg = &b->cfg, .store = b->store, .keys = b->keys};
  if ((e = eg_store_reader_new(b->store, &b->reader))) die("reader", e, NULL);
  b->create = find_method("/engram.v1.MemoryService/CreateMemory");
  b->search = find_method("/engram.v1.MemoryService/SearchMemories");
}

static void bench_close(bench *b) {
  eg_store_reader_free(b->reader);
  eg_store_close(b->store);
  eg_keyring_free(b->keys);
}

static void req_init(bench *b, eg_req *r) {
  memset(r, 0, sizeof *r);
  r->srv = &b->srv;
  r->tenant = TENANT;
  r->arena = eg_arena_new();
  r->now_us = (int64_t)time(NULL) * 1000000;
}

/* Decodes bytes as the transport does (wire-level UTF-8/NUL check, unpack). */
static ProtobufCMessage *decode(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t n,
                                char *err, size_t errlen) {
  if (eg_validate_wire(d, buf, n, err, errlen) != EG_OK) die("decode", EG_EINVAL, err);
  ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, n, buf);
  if (!m) die("decode", EG_EINVAL, "unpack");
  return m;
}

/* Encodes the response as the transport does. */
static size_t encode(const ProtobufCMessage *m) {
  static uint8_t *buf;
  static size_t cap;
  size_t n = protobuf_c_message_get_packed_size(m);
  if (n > cap) buf = realloc(buf, cap = n * 2);
  return protobuf_c_message_pack(m, buf);
}

typedef struct {
  double prepare, apply, commit, total, cpu; /* cpu: on-CPU time of prepare + apply */
} create_times;

/* One CreateMemory from request bytes to response bytes, in its own write
 * txn with its own durable commit. */
static create_times run_create(bench *b, const uint8_t *buf, size_t n, int *outcome) {
  eg_req r;
  eg_txn *w, *sub;
  char err[256];
  create_times ct;
  req_init(b, &r);
  double t0 = now_us(), c0 = cpu_us();
  ProtobufCMessage *in = decode(b->create->in, buf, n, err, sizeof err);
  eg_err e = b->create->prepare(&r, in);
  if (e) die("prepare", e, r.msg);
  double t1 = now_us();
  if ((e = eg_store_write_begin(b->store, &w)) || (e = eg_store_sub_begin(w, &sub))) die("begin", e, NULL);
  if ((e = b->create->apply(&r, sub))) die("apply", e, r.msg);
  if ((e = eg_store_sub_commit(sub))) die("sub commit", e, NULL);
  double t2 = now_us(), c2 = cpu_us();
  if ((e = eg_store_write_commit(w, NULL))) die("commit", e, NULL);
  encode(r.resp);
  double t3 = now_us();
  *outcome = ((Engram__V1__CreateMemoryResponse *)r.resp)->outcome;
  protobuf_c_message_free_unpacked(in, NULL);
  eg_arena_free(r.arena);
  ct = (create_times){t1 - t0, t2 - t1, t3 - t2, t3 - t0, c2 - c0};
  return ct;
}

static size_t pack_create(uint8_t **buf, const char *user, const char *text, const float *vec, int dim,
                          int policy) {
  Engram__V1__Memory m = ENGRAM__V1__MEMORY__INIT;
  Engram__V1__CreateMemoryRequest q = ENGRAM__V1__CREATE_MEMORY_REQUEST__INIT;
  m.user_id = (char *)user;
  m.text = (char *)text;
  m.type = ENGRAM__V1__MEMORY_TYPE__MEMORY_TYPE_FACT;
  m.importance = (float)rnd01();
  m.embedding = (float *)vec;
  m.n_embedding = (size_t)dim;
  q.memory = &m;
  q.dedup_policy = policy;
  size_t n = engram__v1__create_memory_request__get_packed_size(&q);
  *buf = realloc(*buf, n);
  engram__v1__create_memory_request__pack(&q, *buf);
  return n;
}

/* Fills a user with n memories (dedup OFF), 500 per write txn. */
static void fill_user(bench *b, const char *user, int n, int dim, int (*texts)[16], float *vecs) {
  uint8_t *buf = NULL;
  char text[512];
  eg_txn *w = NULL, *sub;
  char err[256];
  for (int i = 0; i < n; i++) {
    if (!w && eg_store_write_begin(b->store, &w)) die("begin", EG_EIO, NULL);
    int words[16], nw = 6 + (int)(rnd() % 9);
    for (int k = 0; k < nw; k++) words[k] = zipf_word();
    if (texts) memcpy(texts[i], words, sizeof words), texts[i][15] = nw;
    make_text(text, sizeof text, words, nw);
    make_vec(vecs + (size_t)i * dim, dim);
    size_t len = pack_create(&buf, user, text, vecs + (size_t)i * dim, dim, ENGRAM__V1__DEDUP_POLICY__DEDUP_POLICY_OFF);
    eg_req r;
    req_init(b, &r);
    ProtobufCMessage *in = decode(b->create->in, buf, len, err, sizeof err);
    eg_err e = b->create->prepare(&r, in);
    if (!e) e = eg_store_sub_begin(w, &sub);
    if (!e && (e = b->create->apply(&r, sub)) == EG_OK) e = eg_store_sub_commit(sub);
    if (e) die("fill", e, r.msg);
    protobuf_c_message_free_unpacked(in, NULL);
    eg_arena_free(r.arena);
    if (i % 500 == 499 || i == n - 1) {
      if ((e = eg_store_write_commit(w, NULL))) die("fill commit", e, NULL);
      w = NULL;
    }
  }
  free(buf);
}

/* ---- statistics ------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void report(const char *what, double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  double sum = 0;
  for (int i = 0; i < n; i++) sum += v[i];
  printf("  %-44s n=%-5d median %8.1f  p90 %8.1f  p99 %8.1f  max %8.1f  mean %8.1f us\n", what, n,
         v[n / 2], v[(int)(n * 0.90)], v[(int)(n * 0.99)], v[n - 1], sum / n);
}

/* ---- the two benchmarks --------------------------------------------------------------- */

static void bench_search(bench *b, int n_mem, int dim, int queries) {
  const char *user = "search-user";
  int (*texts)[16] = calloc((size_t)n_mem, sizeof *texts);
  float *vecs = malloc(sizeof(float) * (size_t)n_mem * dim);
  float *q = malloc(sizeof(float) * dim);
  double *lat = malloc(sizeof(double) * queries), *cpu = malloc(sizeof(double) * queries);
  uint8_t *buf = NULL;
  char text[256], err[256];
  double t0 = now_us();
  fill_user(b, user, n_mem, dim, texts, vecs);
  printf("search: %d memories x %d dims loaded in %.1f s\n", n_mem, dim, (now_us() - t0) / 1e6);
  static const char *modes[] = {"hybrid (3-word query + embedding), top 10", "vector only, top 10",
                                "keyword only (3 words), top 10"};
  for (int mode = 0; mode < 3; mode++) {
    size_t hits = 0;
    for (int i = 0; i < queries; i++) {
      /* A query about a stored memory: three of its words, its vector plus noise. */
      int t = (int)(rnd() % (uint64_t)n_mem), words[3];
      for (int k = 0; k < 3; k++) words[k] = texts[t][rnd() % (uint64_t)texts[t][15]];
      make_text(text, sizeof text, words, 3);
      for (int d = 0; d < dim; d++) q[d] = vecs[(size_t)t * dim + d] + (float)(rnd01() - 0.5) * 0.05f;
      Engram__V1__SearchMemoriesRequest sq = ENGRAM__V1__SEARCH_MEMORIES_REQUEST__INIT;
      sq.user_id = (char *)user;
      sq.query = mode == 1 ? "" : text;
      sq.embedding = mode == 2 ? NULL : q;
      sq.n_embedding = mode == 2 ? 0 : (size_t)dim;
      sq.top_k = 10;
      size_t n = engram__v1__search_memories_request__get_packed_size(&sq);
      buf = realloc(buf, n);
      engram__v1__search_memories_request__pack(&sq, buf);
      eg_req r;
      req_init(b, &r);
      double s = now_us(), sc = cpu_us();
      ProtobufCMessage *in = decode(b->search->in, buf, n, err, sizeof err);
      eg_err e = eg_store_reader_begin(b->reader);
      r.rtxn = b->reader;
      if (!e) e = b->search->read(&r, in);
      eg_store_reader_end(b->reader);
      if (e) die("search", e, r.msg);
      encode(r.resp);
      lat[i] = now_us() - s;
      cpu[i] = cpu_us() - sc;
      hits += ((Engram__V1__SearchMemoriesResponse *)r.resp)->n_results;
      protobuf_c_message_free_unpacked(in, NULL);
      eg_arena_free(r.arena);
    }
    report(modes[mode], lat, queries);
    report("  the same, on-CPU time", cpu, queries);
    printf("  %-44s mean results per query %.1f\n", "", (double)hits / queries);
  }
  free(texts);
  free(vecs);
  free(q);
  free(lat);
  free(cpu);
  free(buf);
}

static void bench_create(bench *b, int users, int existing, int creates, int dim) {
  int per_user = creates / users;
  float *vecs = malloc(sizeof(float) * (size_t)existing * dim);
  int (*texts)[16] = calloc((size_t)existing, sizeof *texts);
  float *v = malloc(sizeof(float) * dim);
  double *tot = malloc(sizeof(double) * creates), *pre = malloc(sizeof(double) * creates),
         *app = malloc(sizeof(double) * creates), *com = malloc(sizeof(double) * creates),
         *cpu = malloc(sizeof(double) * creates);
  int outcomes[5] = {0}, k = 0;
  uint8_t *buf = NULL;
  char user[32], text[512];
  double t0 = now_us();
  for (int u = 0; u < users; u++) {
    snprintf(user, sizeof user, "create-user-%d", u);
    fill_user(b, user, existing, dim, texts, vecs);
    for (int i = 0; i < per_user; i++, k++) {
      int words[16], nw;
      if (i % 4 == 0) {
        /* a near-duplicate of a stored memory: same words, vector + noise */
        int t = (int)(rnd() % (uint64_t)existing);
        nw = texts[t][15];
        memcpy(words, texts[t], sizeof words);
        for (int d = 0; d < dim; d++) v[d] = vecs[(size_t)t * dim + d] + (float)(rnd01() - 0.5) * 0.01f;
      } else {
        nw = 6 + (int)(rnd() % 9);
        for (int w = 0; w < nw; w++) words[w] = zipf_word();
        make_vec(v, dim);
      }
      make_text(text, sizeof text, words, nw);
      size_t n = pack_create(&buf, user, text, v, dim, ENGRAM__V1__DEDUP_POLICY__DEDUP_POLICY_MARK);
      int outcome;
      create_times ct = run_create(b, buf, n, &outcome);
      tot[k] = ct.total;
      pre[k] = ct.prepare;
      app[k] = ct.apply;
      com[k] = ct.commit;
      cpu[k] = ct.cpu;
      outcomes[outcome]++;
    }
  }
  printf("create: %d users x %d existing memories x %d dims (+%d creates each), %.1f s\n", users,
         existing, dim, per_user, (now_us() - t0) / 1e6);
  report("total (decode .. durable commit .. encode)", tot, k);
  report("  prepare (validate, seal, hash words)", pre, k);
  report("  apply (dedup + quota + writes, in txn)", app, k);
  report("  commit (fsync) + encode", com, k);
  report("  prepare + apply, on-CPU time", cpu, k);
  printf("  outcomes: created %d, duplicate %d, superseded %d\n", outcomes[1], outcomes[2], outcomes[3]);
  free(vecs);
  free(texts);
  free(v);
  free(tot);
  free(pre);
  free(app);
  free(com);
  free(cpu);
  free(buf);
}

static int arg_int(int argc, char **argv, const char *name, int def) {
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0) return atoi(argv[i + 1]);
  return def;
}

static const char *arg_str(int argc, char **argv, const char *name) {
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0) return argv[i + 1];
  return NULL;
}

static int rm_rf(const char *dir) {
  char cmd[4300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd);
}

int main(int argc, char **argv) {
  int n_mem = arg_int(argc, argv, "--memories", 10000), dim = arg_int(argc, argv, "--dim", 384);
  int queries = arg_int(argc, argv, "--queries", 1000), creates = arg_int(argc, argv, "--creates", 1000);
  int existing = arg_int(argc, argv, "--existing", 1000), users = arg_int(argc, argv, "--users", 10);
  const char *given = arg_str(argc, argv, "--dir");
  char dir[4096];
  if (given) {
    snprintf(dir, sizeof dir, "%s", given);
  } else {
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/eg_bench_memory_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
  }
  if (users < 1 || creates < users || n_mem < 1 || dim < 1 || dim > 4096 || queries < 1) {
    fprintf(stderr, "eg_bench_memory: bad arguments\n");
    return 2;
  }
  make_vocab();
  bench b;
  bench_open(&b, dir);
  printf("eg_bench_memory: data in %s (durable commits, encryption on)\n", dir);
  bench_search(&b, n_mem, dim, queries);
  bench_create(&b, users, existing, creates, dim);
  bench_close(&b);
  if (!given) rm_rf(dir);
  return 0;
}
