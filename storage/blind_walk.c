/* The walk of the records a blind-index rotation converts
 * (storage/key_jobs.h). Every kind's DB key begins with u8len tenant;
 * store_items also holds its expiry index, whose keys begin with 0x00
 * (storage/store_items.h) and are passed over. */
#include <string.h>

#include "engram/storage/v1/checkpoint_records.pb-c.h"
#include "engram/storage/v1/memory_records.pb-c.h"
#include "engram/storage/v1/store_records.pb-c.h"
#include "storage/internal.h"

static eg_err eg_blind_db(const eg_txn *t, unsigned kind, MDB_dbi *dbi,
                          const ProtobufCMessageDescriptor **desc) {
  switch (kind) {
    case EG_BLIND_MEMORIES:
      *dbi = t->s->memories;
      *desc = &engram__storage__v1__memory_record__descriptor;
      return EG_OK;
    case EG_BLIND_MESSAGES:
      *dbi = t->s->messages;
      *desc = &engram__storage__v1__message_record__descriptor;
      return EG_OK;
    case EG_BLIND_SESSIONS:
      *dbi = t->s->sessions;
      *desc = &engram__storage__v1__session_record__descriptor;
      return EG_OK;
    case EG_BLIND_CHECKPOINTS:
      *dbi = t->s->checkpoints;
      *desc = &engram__storage__v1__checkpoint_record__descriptor;
      return EG_OK;
    case EG_BLIND_ITEMS:
      *dbi = t->s->store_items;
      *desc = &engram__storage__v1__store_item_record__descriptor;
      return EG_OK;
    default:
      return EG_EINVAL;
  }
}

/* The bytes of the ns-enc at p[0..n): through its end byte (two 0x00 in a
 * row, or a 0x00 first); 0 if it has none. */
static size_t eg_blind_ns_len(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] == 0 && (i == 0 || p[i - 1] == 0)) return i + 1;
  return 0;
}

/* ref from key k of kind (tenant and the ids it holds copied into bufs). */
static eg_err eg_blind_parse(unsigned kind, const MDB_val *k, eg_blind_ref *ref,
                             char tenant[EG_STORE_ID_MAX + 1], char id[EG_STORE_ID_MAX + 1],
                             char item_key[EG_STORE_KEY_MAX + 1]) {
  const uint8_t *b = k->mv_data;
  size_t tl = k->mv_size ? b[0] : 0;
  if (tl == 0 || tl > EG_STORE_ID_MAX || k->mv_size < 2 + tl) return EG_ECORRUPT;
  memcpy(tenant, b + 1, tl);
  tenant[tl] = '\0';
  *ref = (eg_blind_ref){.key = b, .key_len = k->mv_size, .tenant = tenant};
  const uint8_t *p = b + 1 + tl;
  size_t left = k->mv_size - 1 - tl;
  if (kind == EG_BLIND_MESSAGES) {
    size_t sl = p[0];
    if (sl == 0 || sl > EG_STORE_ID_MAX || left != 1 + sl + 8) return EG_ECORRUPT;
    memcpy(id, p + 1, sl);
    id[sl] = '\0';
    ref->session_id = id;
  } else if (kind == EG_BLIND_ITEMS) {
    size_t nl = eg_blind_ns_len(p, left);
    if (!nl || nl == left || nl > EG_STORE_NS_ENC_MAX || left - nl > EG_STORE_KEY_MAX)
      return EG_ECORRUPT;
    memcpy(item_key, p + nl, left - nl);
    item_key[left - nl] = '\0';
    ref->ns = p;
    ref->ns_len = nl;
    ref->item_key = item_key;
  }
  return EG_OK;
}

eg_err eg_store_blind_walk(eg_txn *t, unsigned kind, const uint8_t *after, size_t after_len,
                           size_t max, eg_blind_walk_fn fn, void *arg, int *more) {
  char tenant[EG_STORE_ID_MAX + 1], id[EG_STORE_ID_MAX + 1], item_key[EG_STORE_KEY_MAX + 1];
  const ProtobufCMessageDescriptor *desc;
  MDB_dbi dbi;
  MDB_cursor *c;
  MDB_val k, v;
  size_t n = 0;
  if (!eg_txn_readable(t) || !fn || !more || after_len > EG_KEY_MAX || (after_len && !after))
    return EG_EINVAL;
  eg_err e = eg_blind_db(t, kind, &dbi, &desc);
  if (e) return e;
  *more = 0;
  int rc = mdb_cursor_open(t->txn, dbi, &c);
  if (rc) return eg_store__err(rc);
  if (after_len) {
    k = (MDB_val){after_len, (void *)after};
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_SUCCESS && k.mv_size == after_len && memcmp(k.mv_data, after, after_len) == 0)
      rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  } else {
    /* Past the expiry index of store_items (keys from 0x00): tenants
     * begin at 0x01. */
    static const uint8_t first = 1;
    k = (MDB_val){1, (void *)&first};
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  }
  while (rc == MDB_SUCCESS) {
    eg_blind_ref ref;
    ProtobufCMessage *m;
    if (n == max) {
      *more = 1;
      break;
    }
    if ((e = eg_blind_parse(kind, &k, &ref, tenant, id, item_key)) ||
        (e = eg_store__decode(desc, &v, &m)))
      break;
    n++;
    int stop = fn(arg, &ref, m);
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    if (stop) {
      *more = rc == MDB_SUCCESS;
      break;
    }
  }
  mdb_cursor_close(c);
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  return e ? e : eg_store__err(rc);
}

eg_err eg_store_blind_get(eg_txn *t, unsigned kind, const uint8_t *key, size_t key_len,
                          ProtobufCMessage **out) {
  const ProtobufCMessageDescriptor *desc;
  MDB_dbi dbi;
  eg_key k;
  if (!eg_txn_readable(t) || !out || !key_len || key[0] == 0) return EG_EINVAL;
  eg_err e = eg_blind_db(t, kind, &dbi, &desc);
  if (e) return e;
  eg_key_init(&k);
  if ((e = eg_key_raw(&k, key, key_len))) return e;
  return eg_store__get_msg(t->txn, dbi, &k, desc, out);
}

eg_err eg_store_blind_count(eg_txn *t, unsigned kind, uint64_t *out) {
  const ProtobufCMessageDescriptor *desc;
  MDB_dbi dbi;
  MDB_stat st;
  if (!eg_txn_readable(t) || !out) return EG_EINVAL;
  eg_err e = eg_blind_db(t, kind, &dbi, &desc);
  if (e) return e;
  int rc = mdb_stat(t->txn, dbi, &st);
  if (rc) return eg_store__err(rc);
  *out = st.ms_entries;
  return EG_OK;
}
