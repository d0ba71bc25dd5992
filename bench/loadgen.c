/*
 * eg_loadgen: the benchmark's own load generator, on libengram.
 *
 *   eg_loadgen body KIND ARGS...             a gRPC request body for h2load, on stdout
 *   eg_loadgen [CONN] fill OPTIONS           create sessions and append messages
 *   eg_loadgen [CONN] run WORKLOAD OPTIONS   timed load; one JSON line of results
 *
 * The churn workload (bench/churn.sh) is the life of short sessions: each
 * session is created, gets --messages messages in calls of --per-call, and
 * is never touched again, so it expires after the server's --session-ttl and
 * becomes due for the sweeper; --rate paces the session starts. The mixed
 * workload takes --rate too (calls per second over all threads; the backup
 * benchmark offers a steady write rate with it).
 *
 * CONN is --target HOST:PORT and --token TOKEN. Every loop is bounded by a
 * count and by a deadline; every call has a deadline of its own. The exit
 * status is 0 only when every call came back OK (and, for reads, with the
 * expected number of items): the benchmark fails on any error.
 *
 * Bodies are protobuf messages packed by protobuf-c from proto/ (the same
 * generated code the server decodes with), in a gRPC frame: one 0x00 byte
 * (not compressed), the length as u32 big-endian, the message. etcd's
 * PutRequest and RangeRequest are encoded by hand (etcd's protos are not in
 * this repository): they are two- and three-field messages.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engram.h"
#include "lg_text.h"

#define LG_MAX_THREADS 256
#define LG_MAX_SAMPLES (4u << 20) /* latencies kept per thread */
#define LG_CALL_TIMEOUT_MS 30000
#define LG_CONTENT_MAX 65536
#define LG_PER_CALL_MAX 1000
#define LG_BODY_MESSAGES_MAX 100 /* messages in one h2load append body */

static uint64_t lg_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void lg_die(const char *fmt, const char *arg) {
  fprintf(stderr, "eg_loadgen: ");
  fprintf(stderr, fmt, arg);
  fputc('\n', stderr);
  exit(2);
}

static long lg_num(const char *s, const char *what) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < 0) lg_die("%s: want a non-negative number", what);
  return v;
}

/* n bytes of text, different for each (session, message): lg_text.h. */
static void lg_content(char *buf, size_t n, uint64_t salt) { lg_text(buf, n, salt); }

/* ==== bodies ================================================================ */

static void lg_write_frame(const uint8_t *msg, size_t len) {
  uint8_t hdr[5] = {0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
  if (fwrite(hdr, 1, 5, stdout) != 5 || fwrite(msg, 1, len, stdout) != len) lg_die("%s", "write failed");
}

static void lg_write_pb(const ProtobufCMessage *m) {
  size_t len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) lg_die("%s", "out of memory");
  protobuf_c_message_pack(m, buf);
  lg_write_frame(buf, len);
  free(buf);
}

/* Appends a length-delimited field (wire type 2) to out; returns the new end. */
static uint8_t *lg_pb_bytes(uint8_t *out, unsigned field, const void *p, size_t n) {
  *out++ = (uint8_t)(field << 3 | 2);
  for (size_t v = n; ; v >>= 7) {
    *out++ = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
    if (v < 0x80) break;
  }
  memcpy(out, p, n);
  return out + n;
}

static int lg_body(int argc, char **argv) {
  if (argc < 1) lg_die("%s", "body: want a kind");
  const char *kind = argv[0];
  static char content[LG_CONTENT_MAX + 1];
  if (!strcmp(kind, "append") && (argc == 3 || argc == 4)) { /* SESSION BYTES [COUNT] */
    long n = lg_num(argv[2], "BYTES");
    long count = argc == 4 ? lg_num(argv[3], "COUNT") : 1;
    if (n > LG_CONTENT_MAX) lg_die("%s", "BYTES too large");
    if (count < 1 || count > LG_BODY_MESSAGES_MAX) lg_die("%s", "COUNT: want 1 to 100");
    /* Each message its own text (salt = its index), as a client's would be. */
    static char texts[LG_BODY_MESSAGES_MAX][LG_CONTENT_MAX + 1];
    Engram__V1__Message ms[LG_BODY_MESSAGES_MAX], *pms[LG_BODY_MESSAGES_MAX];
    for (long i = 0; i < count; i++) {
      lg_content(texts[i], (size_t)n, (uint64_t)i);
      engram__v1__message__init(&ms[i]);
      ms[i].role = ENGRAM__V1__ROLE__ROLE_USER;
      ms[i].content = texts[i];
      pms[i] = &ms[i];
    }
    Engram__V1__AppendMessagesRequest r = ENGRAM__V1__APPEND_MESSAGES_REQUEST__INIT;
    r.session_id = argv[1];
    r.n_messages = (size_t)count;
    r.messages = pms;
    lg_write_pb(&r.base);
  } else if (!strcmp(kind, "get-session") && argc == 2) {
    Engram__V1__GetSessionRequest r = ENGRAM__V1__GET_SESSION_REQUEST__INIT;
    r.session_id = argv[1];
    lg_write_pb(&r.base);
  } else if (!strcmp(kind, "get-context") && argc == 3) { /* SESSION MAX_MESSAGES */
    Engram__V1__GetContextRequest r = ENGRAM__V1__GET_CONTEXT_REQUEST__INIT;
    r.session_id = argv[1];
    r.max_messages = (int32_t)lg_num(argv[2], "MAX_MESSAGES");
    lg_write_pb(&r.base);
  } else if (!strcmp(kind, "health") && argc == 1) {
    Grpc__Health__V1__HealthCheckRequest r = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    r.service = "";
    lg_write_pb(&r.base);
  } else if (!strcmp(kind, "etcd-put") && argc == 3) { /* KEY BYTES: PutRequest{key=1, value=2} */
    long n = lg_num(argv[2], "BYTES");
    if (n > LG_CONTENT_MAX) lg_die("%s", "BYTES too large");
    lg_content(content, (size_t)n, 0);
    static uint8_t buf[LG_CONTENT_MAX + 1024];
    uint8_t *p = lg_pb_bytes(buf, 1, argv[1], strlen(argv[1]));
    p = lg_pb_bytes(p, 2, content, (size_t)n);
    lg_write_frame(buf, (size_t)(p - buf));
  } else if (!strcmp(kind, "etcd-range") && argc == 2) { /* RangeRequest{key=1, serializable=7} */
    static uint8_t buf[1024];
    if (strlen(argv[1]) > 512) lg_die("%s", "KEY too long");
    uint8_t *p = lg_pb_bytes(buf, 1, argv[1], strlen(argv[1]));
    *p++ = 7 << 3 | 0; /* varint */
    *p++ = 1;
    lg_write_frame(buf, (size_t)(p - buf));
  } else {
    lg_die("body: unknown kind or wrong arguments: %s (append SESSION BYTES [COUNT] | get-session SESSION | "
           "get-context SESSION MAX | health | etcd-put KEY BYTES | etcd-range KEY)", kind);
  }
  return fflush(stdout) == 0 ? 0 : 1;
}

/* ==== shared load machinery ================================================= */

typedef struct {
  const char *target, *token;
  eg_client *client;
  /* fill */
  const char *prefix, *user;
  long sessions, messages, per_call, bytes, users;
  /* run */
  const char *workload; /* mixed | get-context | list-sessions | get-session | churn | search-messages */
  const char *session;  /* get-context, get-session */
  long read_pct, max_messages, page_size, expect;
  long threads, seconds, count;
  long rate; /* churn: session starts, mixed and get-session: calls, per second over all threads; 0 = unpaced */
  /* Reads refused RESOURCE_EXHAUSTED (a tenant's limit: bench/limits.sh)
   * are counted as refused, not errors. */
  int refused_ok;
} lg_opts;

typedef struct {
  lg_opts *o;
  int id;
  pthread_t thread;
  uint64_t ok, errors, items, reads, writes, refused;
  uint32_t *lat; /* microseconds */
  size_t nlat, cap;
  char first_error[EG_CLIENT_MESSAGE_MAX + 64];
} lg_thread;

static atomic_long lg_next;  /* fill: next work item */
static atomic_int lg_stop;   /* run: time is up */

static void lg_record(lg_thread *t, uint64_t us) {
  if (t->nlat == t->cap) {
    if (t->cap >= LG_MAX_SAMPLES) return;
    size_t cap = t->cap ? t->cap * 2 : 4096;
    uint32_t *p = realloc(t->lat, cap * sizeof *p);
    if (!p) return;
    t->lat = p;
    t->cap = cap;
  }
  t->lat[t->nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static void lg_error(lg_thread *t, const char *what, const eg_client_status *st) {
  t->errors++;
  if (!t->first_error[0])
    snprintf(t->first_error, sizeof t->first_error, "%s: %s: %s", what,
             eg_client_code_name(st->code), st->message);
}

static void lg_session_id(char *buf, size_t n, const lg_opts *o, long i) {
  if (o->sessions == 1 && o->session) snprintf(buf, n, "%s", o->session);
  else snprintf(buf, n, "%s%06ld", o->prefix, i);
}

static void lg_user_id(char *buf, size_t n, const lg_opts *o, long i) {
  if (o->user) snprintf(buf, n, "%s", o->user);
  else snprintf(buf, n, "user-%05ld", i % (o->users > 0 ? o->users : 1));
}

static int lg_run_threads(lg_opts *o, lg_thread *ts, void *(*fn)(void *)) {
  for (long i = 0; i < o->threads; i++) {
    ts[i] = (lg_thread){.o = o, .id = (int)i};
    if (pthread_create(&ts[i].thread, NULL, fn, &ts[i]) != 0) lg_die("%s", "pthread_create failed");
  }
  for (long i = 0; i < o->threads; i++) pthread_join(ts[i].thread, NULL);
  return 0;
}

static int lg_cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* Sums the threads and prints one JSON line. Returns the number of errors. */
static uint64_t lg_report(const char *what, lg_opts *o, lg_thread *ts, uint64_t elapsed_us) {
  uint64_t ok = 0, errors = 0, items = 0, reads = 0, writes = 0, refused = 0;
  size_t n = 0;
  for (long i = 0; i < o->threads; i++) {
    ok += ts[i].ok, errors += ts[i].errors, items += ts[i].items, refused += ts[i].refused;
    reads += ts[i].reads, writes += ts[i].writes, n += ts[i].nlat;
  }
  uint32_t *all = malloc((n ? n : 1) * sizeof *all);
  size_t k = 0;
  double sum = 0;
  for (long i = 0; i < o->threads; i++)
    for (size_t j = 0; j < ts[i].nlat && all; j++) sum += all[k++] = ts[i].lat[j];
  if (all) qsort(all, k, sizeof *all, lg_cmp_u32);
#define LG_PCT(p) (k ? all[(size_t)((double)(k - 1) * (p))] : 0)
  double secs = (double)elapsed_us / 1e6;
  printf("{\"what\":\"%s\",\"threads\":%ld,\"ok\":%" PRIu64 ",\"errors\":%" PRIu64
         ",\"refused\":%" PRIu64 ",\"items\":%" PRIu64 ",\"reads\":%" PRIu64 ",\"writes\":%" PRIu64
         ",\"seconds\":%.3f,\"qps\":%.1f,\"items_per_s\":%.1f,\"mean_us\":%.1f,\"p50_us\":%u,"
         "\"p90_us\":%u,\"p99_us\":%u,\"max_us\":%u}\n",
         what, o->threads, ok, errors, refused, items, reads, writes, secs, secs > 0 ? (double)ok / secs : 0,
         secs > 0 ? (double)items / secs : 0, k ? sum / (double)k : 0, LG_PCT(0.50), LG_PCT(0.90),
         LG_PCT(0.99), k ? all[k - 1] : 0);
#undef LG_PCT
  fflush(stdout);
  for (long i = 0; i < o->threads; i++) {
    if (ts[i].first_error[0]) {
      fprintf(stderr, "eg_loadgen: %s: first error: %s\n", what, ts[i].first_error);
      break;
    }
  }
  free(all);
  for (long i = 0; i < o->threads; i++) free(ts[i].lat);
  return errors;
}

/* ==== fill ================================================================== */

/* Creates session i; ALREADY_EXISTS counts as done, so a fill can resume. */
static int lg_create(lg_thread *t, long i) {
  const lg_opts *o = t->o;
  char sid[160], uid[160];
  lg_session_id(sid, sizeof sid, o, i);
  lg_user_id(uid, sizeof uid, o, i);
  Engram__V1__Session s = ENGRAM__V1__SESSION__INIT;
  s.session_id = sid;
  s.user_id = uid;
  s.agent_id = "bench-agent";
  Engram__V1__CreateSessionRequest r = ENGRAM__V1__CREATE_SESSION_REQUEST__INIT;
  r.session = &s;
  eg_client_opts co = {.timeout_ms = LG_CALL_TIMEOUT_MS};
  eg_client_status st;
  Engram__V1__Session *out = NULL;
  uint64_t t0 = lg_now_us();
  int code = eg_client_create_session(o->client, &r, &co, &st, &out);
  lg_record(t, lg_now_us() - t0);
  if (out) protobuf_c_message_free_unpacked(&out->base, NULL);
  if (code != 0 && code != 6 /* ALREADY_EXISTS */) {
    lg_error(t, "CreateSession", &st);
    return -1;
  }
  t->ok++;
  t->writes++;
  return 0;
}

/* Appends per_call messages to session i. */
static int lg_append(lg_thread *t, long i, long n, uint64_t salt) {
  const lg_opts *o = t->o;
  static __thread char *content;
  static __thread Engram__V1__Message msgs[LG_PER_CALL_MAX];
  static __thread Engram__V1__Message *pmsgs[LG_PER_CALL_MAX];
  if (!content && !(content = malloc((size_t)o->bytes + 1))) lg_die("%s", "out of memory");
  lg_content(content, (size_t)o->bytes, salt);
  char sid[160];
  lg_session_id(sid, sizeof sid, o, i);
  for (long k = 0; k < n; k++) {
    msgs[k] = (Engram__V1__Message)ENGRAM__V1__MESSAGE__INIT;
    msgs[k].role = k % 2 ? ENGRAM__V1__ROLE__ROLE_ASSISTANT : ENGRAM__V1__ROLE__ROLE_USER;
    msgs[k].content = content;
    pmsgs[k] = &msgs[k];
  }
  Engram__V1__AppendMessagesRequest r = ENGRAM__V1__APPEND_MESSAGES_REQUEST__INIT;
  r.session_id = sid;
  r.n_messages = (size_t)n;
  r.messages = pmsgs;
  eg_client_opts co = {.timeout_ms = LG_CALL_TIMEOUT_MS};
  eg_client_status st;
  Engram__V1__AppendMessagesResponse *out = NULL;
  uint64_t t0 = lg_now_us();
  int code = eg_client_append_messages(o->client, &r, &co, &st, &out);
  lg_record(t, lg_now_us() - t0);
  int bad = code == 0 && out->n_messages != (size_t)n;
  if (out) protobuf_c_message_free_unpacked(&out->base, NULL);
  if (code != 0 || bad) {
    if (bad) snprintf(st.message, sizeof st.message, "%s", "wrong number of appended messages");
    lg_error(t, "AppendMessages", &st);
    return -1;
  }
  t->ok++;
  t->writes++;
  t->items += (uint64_t)n;
  return 0;
}

static void *lg_fill_create_main(void *arg) {
  lg_thread *t = arg;
  uint64_t deadline = lg_now_us() + (uint64_t)t->o->seconds * 1000000u;
  for (long i; (i = atomic_fetch_add(&lg_next, 1)) < t->o->sessions;) {
    if (lg_create(t, i) != 0 || lg_now_us() > deadline) break;
  }
  return NULL;
}

/* Work item w is call w / sessions of session w % sessions, so concurrent
 * threads write to different sessions. */
static void *lg_fill_append_main(void *arg) {
  lg_thread *t = arg;
  const lg_opts *o = t->o;
  long calls = (o->messages + o->per_call - 1) / o->per_call;
  long total = calls * o->sessions;
  uint64_t deadline = lg_now_us() + (uint64_t)o->seconds * 1000000u;
  for (long w; (w = atomic_fetch_add(&lg_next, 1)) < total;) {
    long call = w / o->sessions, s = w % o->sessions;
    long n = call == calls - 1 ? o->messages - call * o->per_call : o->per_call;
    if (lg_append(t, s, n, (uint64_t)w) != 0 || lg_now_us() > deadline) break;
  }
  return NULL;
}

static int lg_fill(lg_opts *o) {
  if (o->sessions < 1 || (!o->prefix && !o->session)) lg_die("%s", "fill: want --sessions N and --prefix P");
  if (o->per_call < 1 || o->per_call > LG_PER_CALL_MAX) lg_die("%s", "fill: --per-call out of range");
  if (o->sessions > 1 && !o->prefix) lg_die("%s", "fill: --prefix is needed for many sessions");
  static lg_thread ts[LG_MAX_THREADS];
  uint64_t errors = 0;
  uint64_t t0 = lg_now_us();
  atomic_store(&lg_next, 0);
  lg_run_threads(o, ts, lg_fill_create_main);
  errors += lg_report("create", o, ts, lg_now_us() - t0);
  if (errors == 0 && o->messages > 0) {
    uint64_t t1 = lg_now_us();
    atomic_store(&lg_next, 0);
    lg_run_threads(o, ts, lg_fill_append_main);
    errors += lg_report("append", o, ts, lg_now_us() - t1);
  }
  return errors ? 1 : 0;
}

/* ==== timed runs ============================================================ */

static int lg_read_call(lg_thread *t, const char *sid, int context) {
  const lg_opts *o = t->o;
  eg_client_opts co = {.timeout_ms = LG_CALL_TIMEOUT_MS};
  eg_client_status st;
  int code, bad = 0;
  uint64_t t0 = lg_now_us();
  if (context) {
    Engram__V1__GetContextRequest r = ENGRAM__V1__GET_CONTEXT_REQUEST__INIT;
    r.session_id = (char *)sid;
    r.max_messages = (int32_t)o->max_messages;
    Engram__V1__GetContextResponse *out = NULL;
    code = eg_client_get_context(o->client, &r, &co, &st, &out);
    lg_record(t, lg_now_us() - t0);
    if (out) {
      bad = o->expect >= 0 && out->n_messages != (size_t)o->expect;
      t->items += out->n_messages;
      protobuf_c_message_free_unpacked(&out->base, NULL);
    }
  } else {
    Engram__V1__GetSessionRequest r = ENGRAM__V1__GET_SESSION_REQUEST__INIT;
    r.session_id = (char *)sid;
    Engram__V1__Session *out = NULL;
    code = eg_client_get_session(o->client, &r, &co, &st, &out);
    lg_record(t, lg_now_us() - t0);
    if (out) {
      t->items++;
      protobuf_c_message_free_unpacked(&out->base, NULL);
    }
  }
  if (code == 8 /* RESOURCE_EXHAUSTED */ && o->refused_ok) {
    t->refused++;
    return 0;
  }
  if (code != 0 || bad) {
    if (bad) snprintf(st.message, sizeof st.message, "%s", "unexpected number of messages");
    lg_error(t, context ? "GetContext" : "GetSession", &st);
    return -1;
  }
  t->ok++;
  t->reads++;
  return 0;
}

static int lg_list_call(lg_thread *t) {
  const lg_opts *o = t->o;
  Engram__V1__ListSessionsRequest r = ENGRAM__V1__LIST_SESSIONS_REQUEST__INIT;
  r.user_id = (char *)o->user;
  r.page_size = (int32_t)o->page_size;
  eg_client_opts co = {.timeout_ms = LG_CALL_TIMEOUT_MS};
  eg_client_status st;
  Engram__V1__ListSessionsResponse *out = NULL;
  uint64_t t0 = lg_now_us();
  int code = eg_client_list_sessions(o->client, &r, &co, &st, &out);
  lg_record(t, lg_now_us() - t0);
  int bad = 0;
  if (out) {
    bad = o->expect >= 0 && out->n_sessions != (size_t)o->expect;
    t->items += out->n_sessions;
    protobuf_c_message_free_unpacked(&out->base, NULL);
  }
  if (code != 0 || bad) {
    if (bad) snprintf(st.message, sizeof st.message, "%s", "unexpected number of sessions");
    lg_error(t, "ListSessions", &st);
    return -1;
  }
  t->ok++;
  t->reads++;
  return 0;
}

/* One SearchMessages of a query drawn like the messages' text (lg_query),
 * over --user's messages or, without --user, the whole tenant's. */
static int lg_search_call(lg_thread *t, uint64_t *seed) {
  const lg_opts *o = t->o;
  char q[4 * LG_WORD_MAX];
  lg_query(q, sizeof q, seed);
  Engram__V1__SearchMessagesRequest r = ENGRAM__V1__SEARCH_MESSAGES_REQUEST__INIT;
  r.user_id = (char *)(o->user ? o->user : "");
  r.query = q;
  r.top_k = 10;
  eg_client_opts co = {.timeout_ms = LG_CALL_TIMEOUT_MS};
  eg_client_status st;
  Engram__V1__SearchMessagesResponse *out = NULL;
  uint64_t t0 = lg_now_us();
  int code = eg_client_search_messages(o->client, &r, &co, &st, &out);
  lg_record(t, lg_now_us() - t0);
  if (out) {
    t->items += out->n_results;
    protobuf_c_message_free_unpacked(&out->base, NULL);
  }
  if (code != 0) {
    lg_error(t, "SearchMessages", &st);
    return -1;
  }
  t->ok++;
  t->reads++;
  return 0;
}

/* Waits until item i of a run paced at rate per second is due: no earlier
 * than i / rate seconds after t0, so the offered load is steady whatever
 * the latency does (as long as the threads keep up; the report's qps shows
 * whether they did). Returns 1 when the run's time is up first. */
static int lg_pace(long i, uint64_t t0, long rate) {
  uint64_t due = t0 + (uint64_t)i * 1000000u / (uint64_t)rate, now;
  while ((now = lg_now_us()) < due) {
    if (atomic_load_explicit(&lg_stop, memory_order_relaxed)) return 1;
    uint64_t us = due - now < 10000 ? due - now : 10000; /* wake for the stop flag */
    struct timespec ts = {0, (long)us * 1000};
    nanosleep(&ts, NULL);
  }
  return 0;
}

/* One churn session: session i is created, then gets its messages, and is
 * left to expire; session starts are paced by --rate. */
static int lg_churn_session(lg_thread *t, long i, uint64_t t0) {
  const lg_opts *o = t->o;
  if (o->rate > 0 && lg_pace(i, t0, o->rate)) return 1;
  if (lg_create(t, i) != 0) return -1;
  for (long done = 0; done < o->messages; done += o->per_call) {
    long n = o->messages - done < o->per_call ? o->messages - done : o->per_call;
    if (lg_append(t, i, n, (uint64_t)(i + done)) != 0) return -1;
  }
  return 0;
}

static uint64_t lg_t0; /* run: start time, for pacing */

static void *lg_run_main(void *arg) {
  lg_thread *t = arg;
  const lg_opts *o = t->o;
  uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(t->id + 1);
  long per_thread = (o->count + o->threads - 1) / o->threads;
  char sid[160];
  for (long n = 0; n < per_thread && !atomic_load_explicit(&lg_stop, memory_order_relaxed); n++) {
    int rc;
    if (!strcmp(o->workload, "mixed")) {
      if (o->rate > 0 && lg_pace(atomic_fetch_add(&lg_next, 1), lg_t0, o->rate)) break;
      long s = (long)(lg_xorshift(&seed) % (uint64_t)o->sessions);
      long dice = (long)(lg_xorshift(&seed) % 100);
      lg_session_id(sid, sizeof sid, o, s);
      if (dice >= o->read_pct) rc = lg_append(t, s, 1, (uint64_t)n);
      else rc = lg_read_call(t, sid, dice % 2 == 0);
    } else if (!strcmp(o->workload, "get-context")) {
      rc = lg_read_call(t, o->session, 1);
    } else if (!strcmp(o->workload, "get-session")) {
      if (o->rate > 0 && lg_pace(atomic_fetch_add(&lg_next, 1), lg_t0, o->rate)) break;
      rc = lg_read_call(t, o->session, 0);
    } else if (!strcmp(o->workload, "churn")) {
      rc = lg_churn_session(t, atomic_fetch_add(&lg_next, 1), lg_t0);
    } else if (!strcmp(o->workload, "search-messages")) {
      rc = lg_search_call(t, &seed);
    } else {
      rc = lg_list_call(t);
    }
    if (rc != 0) break;
  }
  return NULL;
}

static void *lg_timer_main(void *arg) {
  uint64_t deadline = lg_now_us() + (uint64_t)(*(long *)arg) * 1000000u;
  while (!atomic_load(&lg_stop) && lg_now_us() < deadline) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  atomic_store(&lg_stop, 1);
  return NULL;
}

static int lg_run(lg_opts *o) {
  if (!o->workload) lg_die("%s", "run: want a workload");
  int mixed = !strcmp(o->workload, "mixed");
  if (mixed && (o->sessions < 1 || !o->prefix)) lg_die("%s", "run mixed: want --sessions N --prefix P");
  if ((!strcmp(o->workload, "get-context") || !strcmp(o->workload, "get-session")) && !o->session)
    lg_die("%s", "run: want --session ID");
  if (!strcmp(o->workload, "list-sessions") && !o->user) lg_die("%s", "run list-sessions: want --user U");
  int churn = !strcmp(o->workload, "churn");
  if (churn && (!o->prefix || o->per_call < 1 || o->per_call > LG_PER_CALL_MAX))
    lg_die("%s", "run churn: want --prefix P and --per-call 1..1000");
  if (!mixed && !churn && strcmp(o->workload, "get-context") && strcmp(o->workload, "get-session") &&
      strcmp(o->workload, "list-sessions") && strcmp(o->workload, "search-messages"))
    lg_die("run: unknown workload %s", o->workload);
  static lg_thread ts[LG_MAX_THREADS];
  pthread_t timer;
  atomic_store(&lg_stop, 0);
  atomic_store(&lg_next, 0);
  uint64_t t0 = lg_t0 = lg_now_us();
  pthread_create(&timer, NULL, lg_timer_main, &o->seconds);
  lg_run_threads(o, ts, lg_run_main);
  uint64_t elapsed = lg_now_us() - t0;
  atomic_store(&lg_stop, 1);
  pthread_join(timer, NULL);
  return lg_report(o->workload, o, ts, elapsed) ? 1 : 0;
}

/* ==== main ================================================================== */

static void lg_usage(void) {
  fputs("usage: eg_loadgen body KIND ARGS...\n"
        "       eg_loadgen --target HOST:PORT [--token T] fill --prefix P --sessions N\n"
        "                  [--user U | --users N] [--messages M --per-call K --bytes B]\n"
        "                  [--threads T] [--seconds S]\n"
        "       eg_loadgen --target HOST:PORT [--token T] run WORKLOAD [--threads T]\n"
        "                  [--seconds S] [--count N] ...\n"
        "  WORKLOAD: mixed --prefix P --sessions N [--read-pct 90 --max-messages 20 --bytes 256]\n"
        "                  [--rate CALLS_PER_S]\n"
        "            get-context --session ID --max-messages M [--expect N]\n"
        "            get-session --session ID [--rate CALLS_PER_S] [--refused-ok]\n"
        "            list-sessions --user U --page-size N [--expect N]\n"
        "            churn --prefix P [--messages M --per-call K --bytes 256 --rate SESSIONS_PER_S]\n"
        "            search-messages [--user U] (a query of 1..3 words like the text; no --user: the tenant)\n",
        stderr);
  exit(2);
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "body")) return lg_body(argc - 2, argv + 2);
  lg_opts o = {.threads = 1, .seconds = 60, .count = 100000000, .per_call = 100, .bytes = 256,
               .read_pct = 90, .max_messages = 20, .page_size = 10, .expect = -1, .users = 1000};
  const char *cmd = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define LG_STR(flag, field) if (!strcmp(a, flag)) { if (!v) lg_usage(); o.field = v; i++; continue; }
#define LG_NUM(flag, field) if (!strcmp(a, flag)) { if (!v) lg_usage(); o.field = lg_num(v, flag); i++; continue; }
    LG_STR("--target", target) LG_STR("--token", token) LG_STR("--prefix", prefix)
    LG_STR("--user", user) LG_STR("--session", session)
    LG_NUM("--users", users) LG_NUM("--sessions", sessions) LG_NUM("--messages", messages)
    LG_NUM("--per-call", per_call) LG_NUM("--bytes", bytes) LG_NUM("--threads", threads)
    LG_NUM("--seconds", seconds) LG_NUM("--count", count) LG_NUM("--read-pct", read_pct)
    LG_NUM("--max-messages", max_messages) LG_NUM("--page-size", page_size) LG_NUM("--rate", rate)
    if (!strcmp(a, "--refused-ok")) { o.refused_ok = 1; continue; }
    if (!strcmp(a, "--expect")) { if (!v) lg_usage(); o.expect = lg_num(v, a); i++; continue; }
#undef LG_STR
#undef LG_NUM
    if (!cmd) cmd = a;
    else if (!o.workload) o.workload = a;
    else lg_usage();
  }
  if (!cmd || !o.target) lg_usage();
  if (o.threads < 1 || o.threads > LG_MAX_THREADS) lg_die("%s", "--threads: 1..256");
  if (o.seconds < 1 || o.seconds > 3600) lg_die("%s", "--seconds: 1..3600");
  if (o.bytes > LG_CONTENT_MAX) lg_die("%s", "--bytes too large");
  if (o.read_pct > 100) lg_die("%s", "--read-pct: 0..100");
  if (!(o.client = eg_client_new(o.target, o.token))) lg_die("%s", "cannot create the client");
  int rc;
  if (!strcmp(cmd, "fill")) {
    if (o.session && !o.sessions) o.sessions = 1;
    rc = lg_fill(&o);
  } else if (!strcmp(cmd, "run")) {
    rc = lg_run(&o);
  } else {
    lg_usage();
    rc = 2;
  }
  eg_client_free(o.client);
  return rc;
}
