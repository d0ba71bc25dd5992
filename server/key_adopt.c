/* Phase 1 of a data-key rotation: the users holding records but no data
 * key get one (server/key_adopt.h). */
#include "server/key_adopt.h"

#include <string.h>

#include "common/log.h"
#include "server/arena.h"
#include "server/data_keys.h"
#include "server/key_rotation_step.h"

int eg_kr_adopting(const eg_dk_rotation_rec *row) {
  /* Never once the users' walk began (a row an older release left
   * running): a user adopted behind its position would not be walked. */
  return !row->scope_user[0] && !row->has_user && row->adopt_source < EG_USERS_SOURCES;
}

typedef struct {
  const char *tenant, *user;
} eg_adoptee;

/* The users a step read, those without a key kept. */
typedef struct {
  eg_srv *srv;
  eg_arena *a;
  eg_adoptee *list;
  size_t n, walked;
  eg_users_cursor last;
  eg_err err;
} eg_adopt_walk;

static int eg_adopt_visit(void *arg, const char *tenant, const char *user,
                          const eg_users_cursor *at) {
  eg_adopt_walk *w = arg;
  uint32_t gen;
  w->walked++;
  w->last = *at;
  eg_err e = eg_data_key_latest(w->srv->data_keys, tenant, user, &gen);
  if (e == EG_OK || e == EG_EERASED) return 0; /* has a key, or was erased */
  if (e != EG_ENOTFOUND) {
    w->err = e;
    return 1;
  }
  eg_adoptee *d = &w->list[w->n++];
  if (!(d->tenant = eg_arena_strndup(w->a, tenant, strlen(tenant))) ||
      !(d->user = eg_arena_strndup(w->a, user, strlen(user)))) {
    w->err = EG_ENOMEM;
    return 1;
  }
  return 0;
}

/* Counts the users in scope holding a live key: the users' walk's total. */
typedef struct {
  const char *tenant;
  uint64_t n;
} eg_adopt_count;

static int eg_adopt_count_one(void *arg, const char *tenant, const char *user, uint32_t current,
                              uint32_t oldest) {
  eg_adopt_count *c = arg;
  (void)user;
  (void)current;
  (void)oldest;
  if (!c->tenant[0] || strcmp(c->tenant, tenant) == 0) c->n++;
  return 0;
}

/* Makes the first key of each user in w (skipping one erased meanwhile),
 * then checks each in a fresh read txn still holds a record (else its key
 * is destroyed again); *adopted: users left with the key. */
static eg_err eg_adopt_keys(eg_adopt_walk *w, eg_txn *reader, uint64_t *adopted) {
  eg_srv *srv = w->srv;
  uint32_t gen;
  size_t made = 0;
  eg_err e = EG_OK;
  *adopted = 0;
  for (size_t i = 0; i < w->n && !e; i++) {
    e = eg_data_keys_rotate(srv->data_keys, eg_srv_keys(srv), w->list[i].tenant,
                            w->list[i].user, &gen);
    if (e == EG_EERASED) {
      w->list[i].user = NULL; /* erased since the walk: no key */
      e = EG_OK;
    } else if (!e) {
      made++;
    }
  }
  /* Keys made before a failure are checked too: never left for a user
   * erased meanwhile. */
  eg_err ce = made ? eg_store_reader_begin(reader) : EG_OK;
  int began = made && !ce;
  for (size_t i = 0, seen = 0; i < w->n && seen < made && !ce; i++) {
    if (!w->list[i].user) continue;
    seen++;
    int holds = 0;
    uint64_t destroyed;
    ce = eg_store_user_holds(reader, w->list[i].tenant, w->list[i].user, &holds);
    if (!ce && !holds) {
      ce = eg_data_keys_erase_user(srv->data_keys, w->list[i].tenant, w->list[i].user,
                                   &destroyed);
      if (!ce)
        eg_log(EG_LOG_INFO, "data-key rotation: user \"%s\" of tenant %s holds no record any "
               "more (erased meanwhile): the key just made for it destroyed",
               w->list[i].user, w->list[i].tenant);
    } else if (!ce) {
      (*adopted)++;
    }
  }
  if (began) eg_store_reader_end(reader);
  return e ? e : ce;
}

eg_err eg_kr_adopt_step(eg_srv *srv, eg_writer *writer, eg_txn *reader,
                        const eg_dk_rotation_rec *row, size_t *walked) {
  size_t batch = (size_t)srv->cfg->key_rotation_batch;
  eg_adopt_walk w = {.srv = srv};
  eg_users_cursor after = {.len = row->adopt_cursor.len};
  int end = 0;
  uint64_t adopted = 0;
  *walked = 0;
  if (row->adopt_cursor.len > sizeof after.buf) return EG_ECORRUPT;
  if (after.len) memcpy(after.buf, row->adopt_cursor.data, after.len);
  if (!(w.a = eg_arena_new())) return EG_ENOMEM;
  if (!(w.list = EG_ARENA_ARRAY(w.a, eg_adoptee, batch))) {
    eg_arena_free(w.a);
    return EG_ENOMEM;
  }
  eg_err e = eg_store_reader_begin(reader);
  if (!e) {
    e = eg_store_users_scan(reader, row->adopt_source, row->scope_tenant, &after, batch,
                            eg_adopt_visit, &w, &end);
    /* Ended before the keys' durable commits: a read txn held across them
     * would keep the writer from growing the map. */
    eg_store_reader_end(reader);
  }
  if (!e) e = w.err;
  if (!e) e = eg_adopt_keys(&w, reader, &adopted);
  eg_dk_rotation_rec to = *row;
  to.adopted = row->adopted + adopted;
  to.total = row->total + adopted;
  if (end) {
    to.adopt_source = row->adopt_source + 1;
    to.adopt_cursor = (ProtobufCBinaryData){0, NULL};
  } else {
    to.adopt_cursor = (ProtobufCBinaryData){w.last.len, w.last.buf};
  }
  if (!e && to.adopt_source == EG_USERS_SOURCES) {
    eg_adopt_count c = {.tenant = row->scope_tenant};
    int rc = eg_data_keys_each_user(srv->data_keys, eg_adopt_count_one, &c);
    if (rc < 0) e = (eg_err)-rc;
    to.total = c.n;
    if (!e)
      eg_log(EG_LOG_INFO, "data-key rotation: %llu users without a data key given one; "
             "%llu users to walk", (unsigned long long)to.adopted, (unsigned long long)c.n);
  }
  if (!e) e = eg_kr_change_row(writer, row, &to);
  if (!e) *walked = w.walked;
  eg_arena_free(w.a);
  return e;
}
