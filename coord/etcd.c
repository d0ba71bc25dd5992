/*
 * The etcd v3 client of coord/etcd.h. Every call is one unary exchange
 * (eg_client_call) on the current endpoint's channel, LeaseKeepAlive
 * included: its stream carries one request, closed at once, and one
 * answer, which is all one refresh needs.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>

#include "common/rpc.h"
#include "coord/etcd.h"
#include "etcd/etcdserverpb/rpc.pb-c.h"

/* Longest HOST:PORT taken (a DNS name is at most 253 bytes). */
#define ENDPOINT_MAX 262
/* The largest answer: EG_ETCD_RANGE_MAX keys and values at their longest,
 * each with room for its framing, and the header. The channel refuses a
 * larger one (RESOURCE_EXHAUSTED) before anything is decoded. */
#define REPLY_MAX (EG_ETCD_RANGE_MAX * (EG_ETCD_KEY_MAX + EG_ETCD_VALUE_MAX + 64) + 1024)
/* A member that was down is tried again within a second of its return,
 * not after gRPC's own backoff (up to 2 minutes): the lease of the node
 * that lost it may have only seconds left. */
#define RECONNECT_BACKOFF_MAX_MS 1000

#define KV_SVC "/etcdserverpb.KV/"
#define LEASE_SVC "/etcdserverpb.Lease/"

struct eg_etcd {
  char endpoint[EG_ETCD_MAX_ENDPOINTS][ENDPOINT_MAX];
  eg_client *client[EG_ETCD_MAX_ENDPOINTS]; /* one per endpoint */
  size_t n, cur;                            /* calls go to endpoint[cur] */
  int64_t timeout_ms;
};

/* ---- endpoints ------------------------------------------------------------ */

static int host_char(unsigned char c) {
  return isalnum(c) || c == '.' || c == '-' || c == '_';
}

const char *eg_etcd_endpoint_check(const char *s, size_t n) {
  size_t i, host_end;
  if (n == 0) return "no host";
  if (s[0] == '-' || s[0] == '.') return "bad host (it starts with '-' or '.')";
  if (s[0] == '[') {
    for (i = 1; i < n && s[i] != ']'; i++)
      if (!isxdigit((unsigned char)s[i]) && s[i] != ':' && s[i] != '.') return "bad IPv6 address";
    if (i >= n || i == 1) return "bad IPv6 address";
    host_end = i + 1;
  } else {
    for (i = 0; i < n && s[i] != ':'; i++)
      if (!host_char((unsigned char)s[i]))
        return "bad host (letters, digits, '.', '-', '_' or [IPv6])";
    if (i == 0) return "no host";
    host_end = i;
  }
  if (host_end >= n || s[host_end] != ':') return "no :PORT";
  long port = 0;
  size_t digits = 0;
  for (i = host_end + 1; i < n; i++, digits++) {
    if (s[i] < '0' || s[i] > '9' || digits >= 5) return "the port must be 1..65535";
    port = port * 10 + (s[i] - '0');
  }
  if (digits == 0 || port < 1 || port > 65535) return "the port must be 1..65535";
  return NULL;
}

eg_err eg_etcd_new(const char *const *endpoints, size_t n, const eg_client_tls *tls,
                   int64_t timeout_ms, eg_etcd **out, char *err, size_t errlen) {
  if (n == 0 || n > EG_ETCD_MAX_ENDPOINTS) {
    snprintf(err, errlen, "etcd: %zu endpoints given; 1 to %d are allowed", n,
             EG_ETCD_MAX_ENDPOINTS);
    return EG_EINVAL;
  }
  if (timeout_ms <= 0) {
    snprintf(err, errlen, "etcd: the call timeout must be positive (%lld ms given)",
             (long long)timeout_ms);
    return EG_EINVAL;
  }
  for (size_t i = 0; i < n; i++) {
    const char *ep = endpoints[i] ? endpoints[i] : "";
    size_t len = strnlen(ep, ENDPOINT_MAX);
    const char *why = len >= ENDPOINT_MAX ? "too long" : eg_etcd_endpoint_check(ep, len);
    if (why) {
      snprintf(err, errlen, "etcd: endpoint %zu \"%.*s\" is not HOST:PORT (%s; %d bytes at "
               "most)", i + 1, 64, ep, why, ENDPOINT_MAX - 1);
      return EG_EINVAL;
    }
  }
  eg_etcd *e = calloc(1, sizeof *e);
  if (!e) {
    snprintf(err, errlen, "etcd: out of memory");
    return EG_ENOMEM;
  }
  e->n = n;
  e->timeout_ms = timeout_ms;
  /* The channel keeps eg_client's HTTP/2 keepalive (a ping every 10 s,
   * idle too, 5 s to answer), which finds a member that vanished without
   * closing the connection. etcd counts pings on a connection with no
   * call as strikes, but every answer it sends clears them, and the
   * coordinator calls every few seconds. A channel connects at its first
   * call: made here, a bad TLS file fails the start, not a call later. */
  eg_client_channel_opts o = {.max_response_bytes = REPLY_MAX,
                              .max_reconnect_backoff_ms = RECONNECT_BACKOFF_MAX_MS,
                              .tls = tls};
  char why[256] = "";
  for (size_t i = 0; i < n; i++) {
    snprintf(e->endpoint[i], ENDPOINT_MAX, "%s", endpoints[i]);
    if (!(e->client[i] = eg_client_new_opts(e->endpoint[i], NULL, &o, why, sizeof why))) {
      eg_err rc = errno == ENOMEM ? EG_ENOMEM : EG_EINVAL;
      snprintf(err, errlen, "etcd %s: %s", e->endpoint[i], why);
      eg_etcd_free(e);
      return rc;
    }
  }
  *out = e;
  return EG_OK;
}

void eg_etcd_free(eg_etcd *e) {
  if (!e) return;
  for (size_t i = 0; i < e->n; i++) eg_client_free(e->client[i]);
  free(e);
}

const char *eg_etcd_endpoint(const eg_etcd *e) { return e->endpoint[e->cur]; }

/* ---- one call ------------------------------------------------------------- */

/* Calls path with req on the current endpoint; on EG_OK *resp is the
 * answer (the caller frees it). UNAVAILABLE and DEADLINE_EXCEEDED are
 * EG_EUNAVAIL and move the next call to the next endpoint. The call is not
 * tried again there: a Put or Txn whose answer was lost may have been
 * applied, and a repeated election txn would fail its own compare and
 * report a lost election that was won. *code (if not NULL) gets the gRPC
 * status. */
static eg_err call(eg_etcd *e, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp, int *code,
                   char *err, size_t errlen) {
  size_t i = e->cur;
  *resp = NULL;
  eg_client_opts opts = {.timeout_ms = e->timeout_ms};
  eg_client_status st;
  int c = eg_client_call(e->client[i], path, req, desc, &opts, &st, resp);
  if (code) *code = c;
  if (c == GRPC_STATUS_OK) return EG_OK;
  snprintf(err, errlen, "etcd %s: %s: %s: %s", e->endpoint[i], path, eg_client_code_name(c),
           st.message);
  if (c == GRPC_STATUS_UNAVAILABLE || c == GRPC_STATUS_DEADLINE_EXCEEDED) {
    e->cur = (i + 1) % e->n;
    return EG_EUNAVAIL;
  }
  return EG_EIO;
}

/* EG_OK if a key of key_len bytes and a value of value_len may be sent;
 * else why in err. */
static eg_err check_sizes(const char *what, size_t key_len, size_t value_len, char *err,
                          size_t errlen) {
  if (key_len == 0) {
    snprintf(err, errlen, "etcd: empty %s (etcd has no empty key)", what);
    return EG_EINVAL;
  }
  if (key_len > EG_ETCD_KEY_MAX || value_len > EG_ETCD_VALUE_MAX) {
    snprintf(err, errlen, "etcd: %s of %zu bytes with a value of %zu; at most %d and %d",
             what, key_len, value_len, EG_ETCD_KEY_MAX, EG_ETCD_VALUE_MAX);
    return EG_ELIMIT;
  }
  return EG_OK;
}

static ProtobufCBinaryData bytes(const uint8_t *p, size_t n) {
  return (ProtobufCBinaryData){.len = n, .data = (uint8_t *)p};
}

/* ---- keys ----------------------------------------------------------------- */

/* The end of the range of keys starting with prefix (etcd's own rule: the
 * prefix with its last byte below 0xff incremented and what follows it
 * cut; "\0", every key from prefix on, when there is none). Returns its
 * length; end holds prefix_len bytes. */
static size_t prefix_end(const uint8_t *prefix, size_t prefix_len, uint8_t *end) {
  memcpy(end, prefix, prefix_len);
  for (size_t i = prefix_len; i-- > 0;)
    if (end[i] < 0xff) {
      end[i]++;
      return i + 1;
    }
  end[0] = 0;
  return 1;
}

void eg_etcd_kvs_free(eg_etcd_kvs *kvs) {
  free(kvs->kvs); /* one block: the array, then every key and value */
  memset(kvs, 0, sizeof *kvs);
}

/* Copies the answer's keys into out (one block), after checking every
 * bound on them. */
static eg_err copy_kvs(const Etcdserverpb__RangeResponse *r, eg_etcd_kvs *out, char *err,
                       size_t errlen) {
  if (r->more || r->n_kvs > EG_ETCD_RANGE_MAX) {
    snprintf(err, errlen, "etcd: more than %d keys under the prefix", EG_ETCD_RANGE_MAX);
    return EG_ELIMIT;
  }
  size_t total = r->n_kvs * sizeof(eg_etcd_kv);
  for (size_t i = 0; i < r->n_kvs; i++) {
    const Mvccpb__KeyValue *kv = r->kvs[i];
    if (kv->key.len > EG_ETCD_KEY_MAX || kv->value.len > EG_ETCD_VALUE_MAX) {
      snprintf(err, errlen, "etcd: a key of %zu bytes with a value of %zu under the prefix; at "
               "most %d and %d", kv->key.len, kv->value.len, EG_ETCD_KEY_MAX, EG_ETCD_VALUE_MAX);
      return EG_ELIMIT;
    }
    total += kv->key.len + kv->value.len;
  }
  int64_t revision = r->header ? r->header->revision : 0;
  if (r->n_kvs == 0) {
    out->revision = revision;
    return EG_OK;
  }
  uint8_t *block = malloc(total);
  if (!block) {
    snprintf(err, errlen, "etcd: out of memory for %zu keys", r->n_kvs);
    return EG_ENOMEM;
  }
  eg_etcd_kv *kvs = (eg_etcd_kv *)block;
  uint8_t *p = block + r->n_kvs * sizeof(eg_etcd_kv);
  for (size_t i = 0; i < r->n_kvs; i++) {
    const Mvccpb__KeyValue *kv = r->kvs[i];
    kvs[i] = (eg_etcd_kv){.key = p, .key_len = kv->key.len,
                          .value = p + kv->key.len, .value_len = kv->value.len,
                          .create_revision = kv->create_revision,
                          .mod_revision = kv->mod_revision, .lease = kv->lease};
    if (kv->key.len) memcpy(p, kv->key.data, kv->key.len);
    p += kv->key.len;
    if (kv->value.len) memcpy(p, kv->value.data, kv->value.len);
    p += kv->value.len;
  }
  out->kvs = kvs;
  out->n = r->n_kvs;
  out->revision = revision;
  return EG_OK;
}

eg_err eg_etcd_range_prefix(eg_etcd *e, const uint8_t *prefix, size_t prefix_len,
                            eg_etcd_kvs *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  eg_err rc = check_sizes("prefix", prefix_len, 0, err, errlen);
  if (rc) return rc;
  uint8_t end[EG_ETCD_KEY_MAX];
  Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
  req.key = bytes(prefix, prefix_len);
  req.range_end = bytes(end, prefix_end(prefix, prefix_len, end));
  /* At most the limit comes back; `more` says there was another. */
  req.limit = EG_ETCD_RANGE_MAX;
  req.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;
  req.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY;
  ProtobufCMessage *resp;
  rc = call(e, KV_SVC "Range", &req.base, &etcdserverpb__range_response__descriptor, &resp, NULL,
            err, errlen);
  if (rc) return rc;
  rc = copy_kvs((Etcdserverpb__RangeResponse *)resp, out, err, errlen);
  protobuf_c_message_free_unpacked(resp, NULL);
  return rc;
}

eg_err eg_etcd_put(eg_etcd *e, const uint8_t *key, size_t key_len, const uint8_t *value,
                   size_t value_len, int64_t lease, char *err, size_t errlen) {
  eg_err rc = check_sizes("key", key_len, value_len, err, errlen);
  if (rc) return rc;
  Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
  req.key = bytes(key, key_len);
  req.value = bytes(value, value_len);
  req.lease = lease;
  ProtobufCMessage *resp;
  rc = call(e, KV_SVC "Put", &req.base, &etcdserverpb__put_response__descriptor, &resp, NULL, err,
            errlen);
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  return rc;
}

eg_err eg_etcd_delete(eg_etcd *e, const uint8_t *key, size_t key_len, char *err, size_t errlen) {
  eg_err rc = check_sizes("key", key_len, 0, err, errlen);
  if (rc) return rc;
  Etcdserverpb__DeleteRangeRequest req = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
  req.key = bytes(key, key_len);
  ProtobufCMessage *resp;
  rc = call(e, KV_SVC "DeleteRange", &req.base, &etcdserverpb__delete_range_response__descriptor,
            &resp, NULL, err, errlen);
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  return rc;
}

eg_err eg_etcd_txn_create(eg_etcd *e, const uint8_t *absent, size_t absent_len,
                          const uint8_t *guard, size_t guard_len, int64_t guard_rev,
                          const eg_etcd_put_op *puts, size_t n_puts, int *succeeded, char *err,
                          size_t errlen) {
  eg_err rc = check_sizes("absent key", absent_len, 0, err, errlen);
  if (!rc) rc = check_sizes("guard key", guard_len, 0, err, errlen);
  if (rc) return rc;
  if (guard_rev < 0 || n_puts == 0 || n_puts > EG_ETCD_TXN_PUTS_MAX) {
    snprintf(err, errlen, "etcd: a txn with guard revision %lld and %zu puts; the revision is "
             ">= 0, the puts 1 to %d", (long long)guard_rev, n_puts, EG_ETCD_TXN_PUTS_MAX);
    return EG_EINVAL;
  }
  for (size_t i = 0; i < n_puts; i++)
    if ((rc = check_sizes("txn key", puts[i].key_len, puts[i].value_len, err, errlen))) return rc;

  Etcdserverpb__Compare cmp[2] = {ETCDSERVERPB__COMPARE__INIT, ETCDSERVERPB__COMPARE__INIT};
  /* create_revision == 0: the key does not exist. */
  cmp[0].target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
  cmp[0].key = bytes(absent, absent_len);
  cmp[0].target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
  cmp[0].create_revision = 0;
  /* etcd compares a missing key as all zero: mod_revision 0. */
  cmp[1].target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
  cmp[1].key = bytes(guard, guard_len);
  cmp[1].target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
  cmp[1].mod_revision = guard_rev;
  Etcdserverpb__Compare *cmps[2] = {&cmp[0], &cmp[1]};

  Etcdserverpb__PutRequest put[EG_ETCD_TXN_PUTS_MAX];
  Etcdserverpb__RequestOp op[EG_ETCD_TXN_PUTS_MAX];
  Etcdserverpb__RequestOp *ops[EG_ETCD_TXN_PUTS_MAX];
  for (size_t i = 0; i < n_puts; i++) {
    put[i] = (Etcdserverpb__PutRequest)ETCDSERVERPB__PUT_REQUEST__INIT;
    put[i].key = bytes(puts[i].key, puts[i].key_len);
    put[i].value = bytes(puts[i].value, puts[i].value_len);
    put[i].lease = puts[i].lease;
    op[i] = (Etcdserverpb__RequestOp)ETCDSERVERPB__REQUEST_OP__INIT;
    op[i].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op[i].request_put = &put[i];
    ops[i] = &op[i];
  }
  Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
  req.n_compare = 2;
  req.compare = cmps;
  req.n_success = n_puts;
  req.success = ops;
  ProtobufCMessage *resp;
  rc = call(e, KV_SVC "Txn", &req.base, &etcdserverpb__txn_response__descriptor, &resp, NULL, err,
            errlen);
  if (rc) return rc;
  *succeeded = ((Etcdserverpb__TxnResponse *)resp)->succeeded ? 1 : 0;
  protobuf_c_message_free_unpacked(resp, NULL);
  return EG_OK;
}

/* ---- leases --------------------------------------------------------------- */

eg_err eg_etcd_lease_grant(eg_etcd *e, int64_t ttl_s, int64_t *id, int64_t *granted_s, char *err,
                           size_t errlen) {
  if (ttl_s <= 0) {
    snprintf(err, errlen, "etcd: a lease of %lld s; the TTL must be positive", (long long)ttl_s);
    return EG_EINVAL;
  }
  Etcdserverpb__LeaseGrantRequest req = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
  req.ttl = ttl_s;
  ProtobufCMessage *resp;
  eg_err rc = call(e, LEASE_SVC "LeaseGrant", &req.base,
                   &etcdserverpb__lease_grant_response__descriptor, &resp, NULL, err, errlen);
  if (rc) return rc;
  Etcdserverpb__LeaseGrantResponse *r = (Etcdserverpb__LeaseGrantResponse *)resp;
  /* Lease 0 means "no lease" to a put: a key bound to it would never
   * expire, so it is refused rather than passed on. */
  if (r->id == 0) {
    snprintf(err, errlen, "etcd %s: LeaseGrant answered with lease 0", eg_etcd_endpoint(e));
    rc = EG_EIO;
  } else {
    *id = r->id;
    *granted_s = r->ttl;
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  return rc;
}

eg_err eg_etcd_lease_keepalive(eg_etcd *e, int64_t id, int64_t *ttl_s, char *err, size_t errlen) {
  Etcdserverpb__LeaseKeepAliveRequest req = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
  req.id = id;
  ProtobufCMessage *resp;
  eg_err rc = call(e, LEASE_SVC "LeaseKeepAlive", &req.base,
                   &etcdserverpb__lease_keep_alive_response__descriptor, &resp, NULL, err, errlen);
  if (rc) return rc;
  /* etcd answers an unknown lease with TTL 0, not an error. */
  *ttl_s = ((Etcdserverpb__LeaseKeepAliveResponse *)resp)->ttl;
  protobuf_c_message_free_unpacked(resp, NULL);
  return EG_OK;
}

eg_err eg_etcd_lease_revoke(eg_etcd *e, int64_t id, char *err, size_t errlen) {
  Etcdserverpb__LeaseRevokeRequest req = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
  req.id = id;
  ProtobufCMessage *resp;
  int code;
  eg_err rc = call(e, LEASE_SVC "LeaseRevoke", &req.base,
                   &etcdserverpb__lease_revoke_response__descriptor, &resp, &code, err, errlen);
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  /* "etcdserver: requested lease not found": already gone, as asked. */
  if (rc == EG_EIO && code == GRPC_STATUS_NOT_FOUND) {
    if (errlen) err[0] = '\0';
    return EG_OK;
  }
  return rc;
}
