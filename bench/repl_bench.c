/*
 * eg_repl_bench: replication figures for docs/performance.md (issue 4).
 *
 *   eg_repl_bench lag  PRIMARY REPLICA TOKEN RATE SECONDS THREADS
 *       Paced appends to PRIMARY at RATE writes/s in total. After each ack,
 *       the same thread reads the session from REPLICA with engram-min-lsn =
 *       the write's engram-lsn: the replica answers once it applied the
 *       write. lag = answer time - ack time, minus the median of the same
 *       read without min-lsn (the bare round trip). Prints one JSON line.
 *   eg_repl_bench fill PRIMARY TOKEN RECORDS THREADS
 *       Sequential appends from THREADS threads until the primary's LSN grew
 *       by RECORDS (every commit is one log record). Prints the final LSN.
 *   eg_repl_bench wait NODE ADMIN_TOKEN LSN TIMEOUT_S
 *       Polls GetStatus every 2 ms until NODE's last_lsn >= LSN; prints the
 *       seconds it took. NODE may still be starting. Exit 1 on timeout.
 *
 * Every loop is bounded by count and time; every call has a deadline.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engram.h"

#define RB_MAX_THREADS 64
#define RB_TIMEOUT_MS 10000

static int64_t rb_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int rb_cmp(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* The q-quantile of n sorted samples. */
static int64_t rb_q(const int64_t *v, size_t n, double q) { return n ? v[(size_t)(q * (n - 1))] : 0; }

struct rb_thread {
  const char *primary, *replica, *token;
  char session[64];
  double period_ns; /* between this thread's writes */
  int64_t end_ns;
  int64_t *lag, *bare;
  size_t n, nbare, cap;
  int failed;
};

static int rb_append(eg_client *c, const char *sid, uint64_t *lsn) {
  Engram__V1__Message m = ENGRAM__V1__MESSAGE__INIT, *mp = &m;
  Engram__V1__AppendMessagesRequest req = ENGRAM__V1__APPEND_MESSAGES_REQUEST__INIT;
  Engram__V1__AppendMessagesResponse *resp = NULL;
  eg_client_opts o = {.timeout_ms = RB_TIMEOUT_MS};
  eg_client_status st;
  m.role = ENGRAM__V1__ROLE__ROLE_USER;
  m.content = "replication lag probe: a short message of a typical size for a chat turn";
  req.session_id = (char *)sid;
  req.messages = &mp;
  req.n_messages = 1;
  if (eg_client_append_messages(c, &req, &o, &st, &resp) != 0) return -1;
  *lsn = st.lsn;
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return 0;
}

static int rb_get(eg_client *c, const char *sid, uint64_t min_lsn) {
  Engram__V1__GetSessionRequest req = ENGRAM__V1__GET_SESSION_REQUEST__INIT;
  Engram__V1__Session *s = NULL;
  eg_client_opts o = {.timeout_ms = RB_TIMEOUT_MS, .min_lsn = min_lsn};
  eg_client_status st;
  req.session_id = (char *)sid;
  if (eg_client_get_session(c, &req, &o, &st, &s) != 0) return -1;
  protobuf_c_message_free_unpacked(&s->base, NULL);
  return 0;
}

static int rb_create(eg_client *c, const char *sid) {
  Engram__V1__Session in = ENGRAM__V1__SESSION__INIT;
  Engram__V1__CreateSessionRequest req = ENGRAM__V1__CREATE_SESSION_REQUEST__INIT;
  Engram__V1__Session *s = NULL;
  eg_client_opts o = {.timeout_ms = RB_TIMEOUT_MS};
  eg_client_status st;
  in.session_id = (char *)sid;
  in.user_id = "bench";
  req.session = &in;
  if (eg_client_create_session(c, &req, &o, &st, &s) != 0) {
    fprintf(stderr, "create %s: %s %s\n", sid, eg_client_code_name(st.code), st.message);
    return -1;
  }
  protobuf_c_message_free_unpacked(&s->base, NULL);
  return 0;
}

static void *rb_lag_thread(void *arg) {
  struct rb_thread *t = arg;
  eg_client *p = eg_client_new(t->primary, t->token), *r = eg_client_new(t->replica, t->token);
  uint64_t lsn;
  int64_t next = rb_now_ns();
  t->failed = !p || !r || rb_create(p, t->session) != 0;
  for (size_t i = 0; !t->failed && rb_now_ns() < t->end_ns && t->n < t->cap; i++) {
    while (rb_now_ns() < next) usleep(50);
    next += (int64_t)t->period_ns;
    if (rb_append(p, t->session, &lsn) != 0) {
      t->failed = 1;
      break;
    }
    int64_t acked = rb_now_ns();
    if (rb_get(r, t->session, lsn) != 0) {
      t->failed = 1;
      break;
    }
    t->lag[t->n++] = rb_now_ns() - acked;
    if (i % 8 == 0) { /* the bare round trip, for the baseline */
      int64_t b0 = rb_now_ns();
      if (rb_get(r, t->session, 0) == 0) t->bare[t->nbare++] = rb_now_ns() - b0;
    }
  }
  eg_client_free(p);
  eg_client_free(r);
  return NULL;
}

static int rb_lag(char **a) {
  int rate = atoi(a[3]), secs = atoi(a[4]), threads = atoi(a[5]);
  if (rate <= 0 || secs <= 0 || threads <= 0 || threads > RB_MAX_THREADS) return 2;
  struct rb_thread t[RB_MAX_THREADS];
  pthread_t th[RB_MAX_THREADS];
  size_t cap = (size_t)rate * (size_t)secs / (size_t)threads + 16;
  int64_t end = rb_now_ns() + (int64_t)secs * 1000000000;
  for (int i = 0; i < threads; i++) {
    t[i] = (struct rb_thread){.primary = a[0], .replica = a[1], .token = a[2],
                              .period_ns = 1e9 * threads / rate, .end_ns = end, .cap = cap};
    snprintf(t[i].session, sizeof t[i].session, "lag-%d-%lld", i, (long long)rb_now_ns());
    t[i].lag = malloc(cap * sizeof(int64_t));
    t[i].bare = malloc(cap * sizeof(int64_t));
    if (!t[i].lag || !t[i].bare) return 2;
    pthread_create(&th[i], NULL, rb_lag_thread, &t[i]);
  }
  size_t n = 0, nb = 0, cap_all = cap * (size_t)threads;
  int64_t *lag = malloc(cap_all * sizeof(int64_t)), *bare = malloc(cap_all * sizeof(int64_t));
  int failed = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(th[i], NULL);
    failed |= t[i].failed;
    memcpy(lag + n, t[i].lag, t[i].n * sizeof(int64_t));
    memcpy(bare + nb, t[i].bare, t[i].nbare * sizeof(int64_t));
    n += t[i].n;
    nb += t[i].nbare;
    free(t[i].lag);
    free(t[i].bare);
  }
  qsort(lag, n, sizeof *lag, rb_cmp);
  qsort(bare, nb, sizeof *bare, rb_cmp);
  int64_t base = rb_q(bare, nb, 0.5);
  printf("{\"writes\": %zu, \"seconds\": %d, \"rate\": %.0f, \"bare_rtt_p50_us\": %.1f, "
         "\"lag_p50_us\": %.1f, \"lag_p99_us\": %.1f, \"lag_max_us\": %.1f}\n",
         n, secs, (double)n / secs, base / 1e3, (rb_q(lag, n, 0.5) - base) / 1e3,
         (rb_q(lag, n, 0.99) - base) / 1e3, (rb_q(lag, n, 1.0) - base) / 1e3);
  free(lag);
  free(bare);
  return failed ? 1 : 0;
}

struct rb_fill {
  const char *primary, *token;
  atomic_uint_fast64_t *lsn;
  uint64_t target;
  int id, failed;
};

static void *rb_fill_thread(void *arg) {
  struct rb_fill *f = arg;
  char sid[64];
  uint64_t lsn = 0;
  eg_client *p = eg_client_new(f->primary, f->token);
  snprintf(sid, sizeof sid, "fill-%d-%lld", f->id, (long long)rb_now_ns());
  f->failed = !p || rb_create(p, sid) != 0;
  int64_t end = rb_now_ns() + 600 * (int64_t)1000000000;
  while (!f->failed && atomic_load(f->lsn) < f->target && rb_now_ns() < end) {
    if (rb_append(p, sid, &lsn) != 0) f->failed = 1;
    uint64_t seen = atomic_load(f->lsn);
    while (lsn > seen && !atomic_compare_exchange_weak(f->lsn, &seen, lsn)) {
    }
  }
  eg_client_free(p);
  return NULL;
}

static int rb_fill_run(char **a) {
  uint64_t records = strtoull(a[2], NULL, 10);
  int threads = atoi(a[3]);
  if (!records || threads <= 0 || threads > RB_MAX_THREADS) return 2;
  atomic_uint_fast64_t lsn = 0;
  struct rb_fill f[RB_MAX_THREADS];
  pthread_t th[RB_MAX_THREADS];
  /* The first write tells where the log is. */
  eg_client *p = eg_client_new(a[0], a[1]);
  uint64_t start = 0;
  char sid[64];
  snprintf(sid, sizeof sid, "fill-start-%lld", (long long)rb_now_ns());
  if (!p || rb_create(p, sid) != 0 || rb_append(p, sid, &start) != 0) return 1;
  eg_client_free(p);
  int failed = 0;
  for (int i = 0; i < threads; i++) {
    f[i] = (struct rb_fill){.primary = a[0], .token = a[1], .lsn = &lsn, .target = start + records, .id = i};
    pthread_create(&th[i], NULL, rb_fill_thread, &f[i]);
  }
  for (int i = 0; i < threads; i++) {
    pthread_join(th[i], NULL);
    failed |= f[i].failed;
  }
  printf("%" PRIu64 "\n", (uint64_t)atomic_load(&lsn));
  return failed ? 1 : 0;
}

static int rb_wait(char **a) {
  eg_client *c = eg_client_new(a[0], a[1]);
  uint64_t want = strtoull(a[2], NULL, 10);
  int64_t t0 = rb_now_ns(), end = t0 + (int64_t)atoi(a[3]) * 1000000000;
  Engram__V1__GetStatusRequest req = ENGRAM__V1__GET_STATUS_REQUEST__INIT;
  while (c && rb_now_ns() < end) {
    Engram__V1__GetStatusResponse *s = NULL;
    eg_client_opts o = {.timeout_ms = 2000};
    eg_client_status st;
    if (eg_client_get_status(c, &req, &o, &st, &s) == 0) {
      uint64_t last = s->last_lsn;
      protobuf_c_message_free_unpacked(&s->base, NULL);
      if (last >= want) {
        printf("%.3f\n", (rb_now_ns() - t0) / 1e9);
        eg_client_free(c);
        return 0;
      }
    } else {
      /* Not up yet: a fresh channel, or gRPC's reconnect backoff (1 s)
       * would hide the moment the node starts answering. */
      eg_client_free(c);
      c = eg_client_new(a[0], a[1]);
    }
    usleep(2000);
  }
  eg_client_free(c);
  return 1;
}

int main(int argc, char **argv) {
  if (argc == 8 && strcmp(argv[1], "lag") == 0) return rb_lag(argv + 2);
  if (argc == 6 && strcmp(argv[1], "fill") == 0) return rb_fill_run(argv + 2);
  if (argc == 6 && strcmp(argv[1], "wait") == 0) return rb_wait(argv + 2);
  fprintf(stderr,
          "usage: eg_repl_bench lag PRIMARY REPLICA TOKEN RATE SECONDS THREADS\n"
          "       eg_repl_bench fill PRIMARY TOKEN RECORDS THREADS\n"
          "       eg_repl_bench wait NODE ADMIN_TOKEN LSN TIMEOUT_S\n");
  return 2;
}
