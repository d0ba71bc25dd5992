/* The data-key rotation thread: users in scope one after the other, each
 * in steps (server/key_rotation_step.h), its older generations retired
 * when done; and GetKeyStatus's rotation fields (server/key_rotation.h). */
#include "server/key_rotation.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bgthread.h"
#include "common/clock.h"
#include "common/log.h"
#include "replica/replica.h"
#include "server/blind_key.h"
#include "server/blind_rotation.h"
#include "server/convert.h"
#include "server/data_keys.h"
#include "server/key_adopt.h"
#include "server/key_rotation_step.h"

/* How often the thread looks at key_jobs when no rotation runs here (a
 * replica promoted, a rotation begun, the gauges refreshed), and the retry
 * interval after a failed step. */
#define EG_KR_IDLE_MS 1000

struct eg_key_rotation {
  eg_srv *srv;
  eg_writer *writer;
  eg_txn *reader;
  eg_bgthread bg;
  /* The records a step walks at most: --key-rotation-batch at each user's
   * first step, halved while a step's write logs more than one commit may
   * (EG_ELIMIT), and the flag's again after a step that skipped a record
   * too large alone (that record was the cause: the rest of the user need
   * not go one by one). The thread's own. */
  size_t batch;
  pthread_mutex_t counts_mu; /* guards counts, n_counts */
  eg_token_count counts[EG_TOKEN_COUNT_KEYS_MAX];
  size_t n_counts;
};

/* The key store's order of users (storage/keystore.h: u8 len | tenant |
 * u8 len | user): <0, 0, >0 as (t1, u1) sorts before, with, after
 * (t2, u2). */
static int eg_kr_user_cmp(const char *t1, const char *u1, const char *t2, const char *u2) {
  size_t a = strlen(t1), b = strlen(t2);
  int c = a != b ? (a < b ? -1 : 1) : memcmp(t1, t2, a);
  if (c) return c;
  a = strlen(u1), b = strlen(u2);
  return a != b ? (a < b ? -1 : 1) : memcmp(u1, u2, a);
}

static int eg_kr_in_scope(const eg_dk_rotation_rec *row, const char *tenant, const char *user) {
  if (!row->scope_tenant[0]) return 1;
  return strcmp(row->scope_tenant, tenant) == 0 &&
         (!row->scope_user[0] || strcmp(row->scope_user, user) == 0);
}

/* Whether this node may move the rotation: an unfenced primary (a fenced
 * one may be deposed already: what it wrote would part its log from the
 * next primary's), and not stopping. */
static int eg_kr_may_run(eg_key_rotation *x) {
  pthread_mutex_lock(&x->bg.mu);
  int stopping = x->bg.stopping;
  pthread_mutex_unlock(&x->bg.mu);
  return !stopping && eg_repl_is_primary(x->srv->repl) && !eg_repl_fenced(x->srv->repl);
}

/* The rotation being run by the users' walk (eg_data_keys_each_user). */
typedef struct {
  eg_key_rotation *x;
  eg_arena *a;             /* the rows read */
  eg_dk_rotation_rec *row; /* as stored now */
  eg_err err;              /* why the walk stopped (EG_OK: stopping) */
} eg_kr_job;

static eg_err eg_kr_reread(eg_kr_job *j) {
  eg_err e = eg_store_reader_begin(j->x->reader);
  if (e) return e;
  e = eg_kr_row_get(j->x->reader, j->a, &j->row);
  eg_store_reader_end(j->x->reader);
  return e ? e : j->row && j->row->running ? EG_OK : EG_EABORTED;
}

/* Retires the user's generations below the one its passes re-sealed
 * under (tombstones); EG_EABORTED when the key store's latest is another
 * generation now (the passes start again under it). */
static eg_err eg_kr_retire(eg_kr_job *j, const char *tenant, const char *user) {
  uint64_t retired;
  uint32_t gen = j->row->gen;
  if (j->row->skipped) {
    /* Records the pass skipped (too large to re-seal) are still under
     * them: kept (the row's problem says which). */
    eg_log(EG_LOG_WARN, "data-key rotation: user \"%s\" of tenant %s: %" PRIu64 " records "
           "left under an older generation; generations below %u kept", user, tenant,
           j->row->skipped, gen);
    return EG_OK;
  }
  eg_err e = gen ? eg_data_keys_retire_before(j->x->srv->data_keys, tenant, user, gen, &retired)
                 : EG_EABORTED;
  if (!e && retired)
    eg_log(EG_LOG_INFO, "data-key rotation: user \"%s\" of tenant %s: every field token under "
           "generation %u; %llu generations below it retired", user, tenant, gen,
           (unsigned long long)retired);
  return e;
}

/* The user's passes again from the first, under the key store's latest. */
static eg_err eg_kr_restart_user(eg_kr_job *j) {
  eg_dk_rotation_rec to = *j->row;
  eg_kr_pass_begin(&to, 1);
  eg_err e = eg_kr_change_row(j->x->writer, j->row, &to);
  return e ? e : eg_kr_reread(j);
}

/* Keeps the gauges' copy of the row's counts. */
static void eg_kr_keep_counts(eg_key_rotation *x, const eg_dk_rotation_rec *row) {
  pthread_mutex_lock(&x->counts_mu);
  x->n_counts = 0;
  for (size_t i = 0; row && i < row->n_counts && i < EG_TOKEN_COUNT_KEYS_MAX; i++) {
    snprintf(x->counts[i].key, sizeof x->counts[i].key, "%s", row->counts[i]->key);
    x->counts[i].tokens = row->counts[i]->tokens;
    x->n_counts++;
  }
  pthread_mutex_unlock(&x->counts_mu);
}

/* --key-rotation-rate: the n records (or users) just walked take this
 * long. 0 when this node is to stop running the rotation. */
static int eg_kr_pace(eg_key_rotation *x, size_t n) {
  int64_t ms = (int64_t)(n * 1000 / (uint64_t)x->srv->cfg->key_rotation_rate);
  pthread_mutex_lock(&x->bg.mu);
  if (ms > 0 && !x->bg.stopping) eg_bgthread_sleep(&x->bg, ms);
  pthread_mutex_unlock(&x->bg.mu);
  return eg_kr_may_run(x);
}

static int eg_kr_user(void *arg, const char *tenant, const char *user, uint32_t current,
                      uint32_t oldest) {
  eg_kr_job *j = arg;
  (void)current;
  (void)oldest;
  eg_key_rotation *x = j->x;
  const eg_dk_rotation_rec *row = j->row;
  if (!eg_kr_may_run(x)) return 1;
  if (!eg_kr_in_scope(row, tenant, user)) return 0;
  int c = row->has_user ? eg_kr_user_cmp(tenant, user, row->tenant, row->user) : 1;
  if (c < 0) return 0; /* done before */
  if (c > 0) {
    eg_dk_rotation_rec to = *row;
    to.has_user = 1;
    to.tenant = (char *)tenant;
    to.user = (char *)user;
    eg_kr_pass_begin(&to, 1);
    if ((j->err = eg_kr_change_row(x->writer, row, &to)) || (j->err = eg_kr_reread(j))) return 1;
    /* Another user's records: the flag's steps again. */
    x->batch = (size_t)x->srv->cfg->key_rotation_batch;
  }
  for (;;) {
    size_t walked = 0;
    uint64_t skipped = 0;
    int done = 0, retiring = j->row->stage == EG_KR_DONE;
    if (retiring) {
      /* Again after a restart: retiring is idempotent. */
      j->err = eg_kr_retire(j, tenant, user);
      if (j->err == EG_EABORTED && !(j->err = eg_kr_restart_user(j))) continue;
    } else {
      skipped = j->row->skipped;
      j->err = eg_kr_step_run(x->srv, x->writer, x->reader, j->row, x->batch, &walked, &done);
      if (j->err == EG_ELIMIT && x->batch > 1) {
        /* Too much for one commit (nothing written): smaller steps, at
         * once; at one record the step skips it (server/key_rotation_step.h). */
        x->batch /= 2;
        eg_log(EG_LOG_INFO, "data-key rotation: a step's write logs more than one commit may; "
               "%zu records a step from now on", x->batch);
        continue;
      }
    }
    if (j->err == EG_EERASED || j->err == EG_ENOTFOUND) {
      /* Erased since the walk listed it: nothing to re-seal, and no key
       * made for it; the next user moves the row on. */
      eg_log(EG_LOG_INFO, "data-key rotation: user \"%s\" of tenant %s was erased; skipped",
             user, tenant);
      j->err = EG_OK;
      return 0;
    }
    if (retiring) return j->err != EG_OK;
    if (j->err || (j->err = eg_kr_reread(j))) return 1;
    if (j->row->skipped > skipped) x->batch = (size_t)x->srv->cfg->key_rotation_batch;
    if (done) eg_kr_keep_counts(x, j->row); /* the gauges, as the row now counts */
    if (!eg_kr_pace(x, walked)) return 1;
  }
}

/* Phase 1 (server/key_adopt.h), step by step, until it is over: EG_OK
 * then, with j->row as stored; else why it stopped (EG_OK with *stop set:
 * this node no longer runs it). */
static eg_err eg_kr_adopt(eg_kr_job *j, int *stop) {
  eg_err e = EG_OK;
  *stop = 0;
  while (eg_kr_adopting(j->row)) {
    size_t walked = 0;
    if ((e = eg_kr_adopt_step(j->x->srv, j->x->writer, j->x->reader, j->row, &walked)) ||
        (e = eg_kr_reread(j)))
      return e;
    if (!eg_kr_pace(j->x, walked)) {
      *stop = 1;
      break;
    }
  }
  return EG_OK;
}

/* Runs the rotation row describes from where it is, until it ends, this
 * node stops being the one to run it, or a step fails (logged; retried
 * the next time round). */
static void eg_kr_run(eg_key_rotation *x, eg_arena *a, eg_dk_rotation_rec *row) {
  eg_kr_job j = {.x = x, .a = a, .row = row};
  int stop;
  eg_err ae = eg_kr_adopt(&j, &stop);
  if (ae || stop) {
    if (ae)
      eg_log(EG_LOG_WARN, "data-key rotation: giving users without a data key one: %s; "
             "retrying in %d ms", eg_err_msg(ae), EG_KR_IDLE_MS);
    return;
  }
  int rc = eg_data_keys_each_user(x->srv->data_keys, eg_kr_user, &j);
  if (rc < 0) {
    eg_log(EG_LOG_WARN, "data-key rotation: cannot list the users: %s; retrying in %d ms",
           eg_err_msg((eg_err)-rc), EG_KR_IDLE_MS);
    return;
  }
  if (rc > 0) {
    if (j.err)
      eg_log(EG_LOG_WARN, "data-key rotation: %s; retrying in %d ms", eg_err_msg(j.err),
             EG_KR_IDLE_MS);
    return;
  }
  eg_dk_rotation_rec to = *j.row;
  to.running = 0;
  to.finish_time_us = eg_now_us();
  to.has_user = 0;
  to.tenant = to.user = to.session_id = "";
  eg_kr_pass_begin(&to, 0);
  eg_err e = eg_kr_change_row(x->writer, j.row, &to);
  if (e)
    eg_log(EG_LOG_WARN, "data-key rotation: cannot record its end: %s; retrying in %d ms",
           eg_err_msg(e), EG_KR_IDLE_MS);
  else
    eg_log(EG_LOG_INFO, "data-key rotation of %s done: %" PRIu64 " users",
           j.row->scope_tenant[0] ? eg_dk_rotation_scope(a, j.row) : "every user", j.row->done);
}

/* One time round: reads the row (every node: the gauges) and, on the
 * primary, runs a rotation that is running. */
static void eg_kr_round(eg_key_rotation *x) {
  eg_dk_rotation_rec *row = NULL;
  eg_arena *a = eg_arena_new();
  if (!a) return;
  eg_err e = eg_store_reader_begin(x->reader);
  if (e == EG_OK) {
    e = eg_kr_row_get(x->reader, a, &row);
    eg_store_reader_end(x->reader);
  }
  if (e != EG_OK)
    eg_log(EG_LOG_WARN, "data-key rotation: cannot read its state: %s", eg_err_msg(e));
  else
    eg_kr_keep_counts(x, row);
  if (e == EG_OK && row && row->running && eg_kr_may_run(x)) eg_kr_run(x, a, row);
  eg_arena_free(a);
}

static void *eg_key_rotation_main(void *arg) {
  eg_key_rotation *x = arg;
  pthread_mutex_lock(&x->bg.mu);
  while (!x->bg.stopping) {
    pthread_mutex_unlock(&x->bg.mu);
    eg_kr_round(x);
    pthread_mutex_lock(&x->bg.mu);
    if (!x->bg.stopping) eg_bgthread_sleep(&x->bg, EG_KR_IDLE_MS);
  }
  pthread_mutex_unlock(&x->bg.mu);
  return NULL;
}

eg_err eg_key_rotation_start(eg_srv *srv, eg_writer *writer, eg_key_rotation **out, char *err,
                             size_t errlen) {
  eg_key_rotation *x = calloc(1, sizeof *x);
  if (!x) {
    snprintf(err, errlen, "cannot start the data-key rotation thread: out of memory");
    return EG_ENOMEM;
  }
  x->srv = srv;
  x->writer = writer;
  x->batch = (size_t)srv->cfg->key_rotation_batch;
  pthread_mutex_init(&x->counts_mu, NULL);
  eg_err e = eg_store_reader_new(srv->store, &x->reader);
  if (e != EG_OK) {
    snprintf(err, errlen, "cannot start the data-key rotation thread: %s", eg_err_msg(e));
  } else if ((e = eg_bgthread_start(&x->bg, eg_key_rotation_main, x, "key rotation",
                                    "data-key rotation", err,
                                    errlen)) != EG_OK) {
    eg_store_reader_free(x->reader);
  }
  if (e != EG_OK) {
    pthread_mutex_destroy(&x->counts_mu);
    free(x);
    return e;
  }
  *out = x;
  return EG_OK;
}

void eg_key_rotation_stop(eg_key_rotation *x) {
  if (!x) return;
  eg_bgthread_stop(&x->bg);
  eg_store_reader_free(x->reader);
  pthread_mutex_destroy(&x->counts_mu);
  free(x);
}

size_t eg_key_rotation_token_counts(eg_key_rotation *x, eg_token_count *out, size_t cap) {
  size_t n = 0;
  if (!x) return 0;
  pthread_mutex_lock(&x->counts_mu);
  for (; n < x->n_counts && n < cap; n++) out[n] = x->counts[n];
  pthread_mutex_unlock(&x->counts_mu);
  return n;
}

/* ---- status ---------------------------------------------------------------------- */

const char *eg_dk_rotation_scope(eg_arena *a, const eg_dk_rotation_rec *rec) {
  if (!rec->scope_tenant[0]) return "";
  size_t n = strlen(rec->scope_tenant) + strlen(rec->scope_user) + 3;
  char *s = eg_arena_alloc(a, n);
  if (s)
    snprintf(s, n, "%s/%s", rec->scope_tenant, rec->scope_user[0] ? rec->scope_user : "*");
  return s;
}

eg_err eg_dk_rotation_api(eg_req *r, const eg_dk_rotation_rec *rec,
                          Engram__V1__KeyRotationStatus **out) {
  Engram__V1__KeyRotationStatus *st = EG_ARENA_NEW(r->arena, Engram__V1__KeyRotationStatus);
  if (!st) return EG_ENOMEM;
  engram__v1__key_rotation_status__init(st);
  st->kind = "data_keys";
  st->running = rec->running;
  st->done = rec->done;
  st->total = rec->total;
  st->problem = rec->problem;
  if (!(st->scope = (char *)eg_dk_rotation_scope(r->arena, rec)) ||
      (rec->start_time_us && !(st->start_time = eg_timestamp(r, rec->start_time_us))) ||
      (rec->finish_time_us && !(st->finish_time = eg_timestamp(r, rec->finish_time_us))))
    return EG_ENOMEM;
  *out = st;
  return EG_OK;
}

/* out's rotation and token-count fields from the rows (NULL: none):
 * rotations lists the data-key rotation, then the blind-index one. */
static eg_err eg_kr_status_fill(eg_req *r, const eg_dk_rotation_rec *row,
                                const eg_blind_key_rec *blind,
                                Engram__V1__GetKeyStatusResponse *out) {
  eg_err e;
  out->rotations = EG_ARENA_ARRAY(r->arena, Engram__V1__KeyRotationStatus *, 2);
  if (!out->rotations) return EG_ENOMEM;
  if (blind && (blind->target_key_id || blind->start_time_us) &&
      (e = eg_blind_rotation_api(r, blind, &out->rotations[out->n_rotations++])))
    return e;
  if (!row) return EG_OK;
  out->token_counts = EG_ARENA_ARRAY(r->arena, Engram__V1__KeyTokenCount *, row->n_counts + 1);
  if (!out->token_counts) return EG_ENOMEM;
  /* The data-key rotation first, as before the blind-index one existed. */
  if (out->n_rotations) out->rotations[1] = out->rotations[0];
  if ((e = eg_dk_rotation_api(r, row, &out->rotations[0]))) return e;
  out->n_rotations++;
  for (size_t i = 0; i < row->n_counts; i++) {
    Engram__V1__KeyTokenCount *c = EG_ARENA_NEW(r->arena, Engram__V1__KeyTokenCount);
    if (!c) return EG_ENOMEM;
    engram__v1__key_token_count__init(c);
    c->key = row->counts[i]->key;
    c->tokens = row->counts[i]->tokens;
    out->token_counts[out->n_token_counts++] = c;
  }
  if (row->count_time_us && !(out->token_count_time = eg_timestamp(r, row->count_time_us)))
    return EG_ENOMEM;
  return EG_OK;
}

static void eg_kr_blind_free(void *p) {
  engram__storage__v1__blind_index_key_record__free_unpacked(p, NULL);
}

eg_err eg_key_rotation_status(eg_req *r, Engram__V1__GetKeyStatusResponse *out) {
  eg_txn *t = NULL;
  eg_dk_rotation_rec *row = NULL;
  eg_blind_key_rec *blind = NULL;
  eg_err e = eg_store_reader_new(r->srv->store, &t);
  if (e == EG_OK && (e = eg_store_reader_begin(t)) == EG_OK) {
    e = eg_blind_key_ids(t, eg_srv_keys(r->srv), &out->blind_index_key_id,
                         &out->blind_index_target_key_id);
    if (!e) e = eg_kr_row_get(t, r->arena, &row);
    if (!e && (e = eg_store_blind_key_get(t, &blind)) == EG_ENOTFOUND) {
      blind = NULL;
      e = EG_OK;
    } else if (!e && eg_arena_defer(r->arena, eg_kr_blind_free, blind) != 0) {
      eg_kr_blind_free(blind);
      e = EG_ENOMEM;
    }
    eg_store_reader_end(t);
  }
  if (t) eg_store_reader_free(t);
  if (!e) e = eg_kr_status_fill(r, row, blind, out);
  if (e) snprintf(r->msg, sizeof r->msg, "key rotation state: %s", eg_err_msg(e));
  return e;
}
