/* AdminService: GetTenantLimits and SetTenantLimits (server/limits.h). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engram/v1/admin.pb-c.h"
#include "server/limits.h"
#include "server/service.h"
#include "server/validate.h"

/* The tenant a request names: its own, or the caller's when empty. */
static eg_err eg_limits_tenant(eg_req *r, const char *in, const char **out) {
  eg_err e = eg_validate_id("tenant", in, 0, r->msg, sizeof r->msg);
  if (e) return e;
  *out = in[0] ? in : r->tenant;
  return EG_OK;
}

/* The answer for tenant as t sees it. */
static eg_err eg_limits_answer(eg_req *r, eg_txn *t, const char *tenant) {
  Engram__V1__GetTenantLimitsResponse *out =
      EG_ARENA_NEW(r->arena, Engram__V1__GetTenantLimitsResponse);
  Engram__V1__TenantLimits *lim = EG_ARENA_NEW(r->arena, Engram__V1__TenantLimits);
  Engram__V1__LimitValue *v = eg_arena_alloc(r->arena, EG_LIMIT_KINDS * sizeof *v);
  char *name = eg_arena_alloc(r->arena, strlen(tenant) + 1);
  eg_tenant_limits_rec *rec = NULL;
  eg_tenant_limits eff;
  uint64_t refused[EG_LIMIT_KINDS];
  if (!out || !lim || !v || !name) return EG_ENOMEM;
  eg_err e = eg_store_tenant_limits_get(t, tenant, &rec);
  if (e && e != EG_ENOTFOUND) return e;
  eg_limits_resolve(r->srv->cfg, rec, &eff);
  if (rec) protobuf_c_message_free_unpacked(&rec->base, NULL);
  engram__v1__get_tenant_limits_response__init(out);
  engram__v1__tenant_limits__init(lim);
  Engram__V1__LimitValue **slot[EG_LIMIT_KINDS] = {&lim->calls_per_second, &lim->writes_per_second,
                                                   &lim->concurrent_calls, &lim->storage_bytes};
  for (int i = 0; i < EG_LIMIT_KINDS; i++) {
    engram__v1__limit_value__init(&v[i]);
    v[i].value = eff.v[i];
    v[i].is_default = eff.is_default[i];
    *slot[i] = &v[i];
  }
  if ((e = eg_store_tenant_usage(t, tenant, &out->storage_bytes_used))) return e;
  eg_limits_refused(r->srv->limits, tenant, refused);
  out->refused_calls = refused[EG_LIMIT_CALLS];
  out->refused_writes = refused[EG_LIMIT_WRITES];
  out->refused_concurrent = refused[EG_LIMIT_CONCURRENT];
  out->refused_storage = refused[EG_LIMIT_STORAGE];
  strcpy(name, tenant);
  out->tenant = name;
  out->limits = lim;
  r->resp = &out->base;
  return EG_OK;
}

static eg_err eg_get_tenant_limits(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__GetTenantLimitsRequest *in = (const void *)msg;
  const char *tenant;
  eg_err e = eg_limits_tenant(r, in->tenant, &tenant);
  return e ? e : eg_limits_answer(r, r->rtxn, tenant);
}

/* What a Set changes, limit by limit: absent keeps the stored override,
 * is_default removes it, a value replaces it. Merged in apply, on the
 * stored record, so two admins setting different limits do not undo each
 * other (as SetRetentionPolicy). */
enum { EG_LIMIT_KEEP = 0, EG_LIMIT_RESET, EG_LIMIT_SET };
typedef struct {
  const char *tenant;
  int action[EG_LIMIT_KINDS];
  double value[EG_LIMIT_KINDS];
} eg_limits_put;

static eg_err eg_set_tenant_limits_prepare(eg_req *r, const ProtobufCMessage *msg) {
  static const char *const names[EG_LIMIT_KINDS] = {
      "limits.calls_per_second", "limits.writes_per_second", "limits.concurrent_calls",
      "limits.storage_bytes"};
  static const double max[EG_LIMIT_KINDS] = {EG_LIMIT_RATE_MAX, EG_LIMIT_RATE_MAX,
                                             EG_LIMIT_CONCURRENT_MAX, EG_LIMIT_BYTES_MAX};
  const Engram__V1__SetTenantLimitsRequest *in = (const void *)msg;
  eg_limits_put *st = EG_ARENA_NEW(r->arena, eg_limits_put);
  if (!st) return EG_ENOMEM;
  memset(st, 0, sizeof *st);
  eg_err e = eg_limits_tenant(r, in->tenant, &st->tenant);
  if (e) return e;
  if (!in->limits) {
    snprintf(r->msg, sizeof r->msg,
             "limits: required (name the limits to change; is_default removes an override)");
    return EG_EINVAL;
  }
  const Engram__V1__LimitValue *v[EG_LIMIT_KINDS] = {
      in->limits->calls_per_second, in->limits->writes_per_second, in->limits->concurrent_calls,
      in->limits->storage_bytes};
  for (int i = 0; i < EG_LIMIT_KINDS; i++) {
    if (!v[i]) continue;
    if (v[i]->is_default) {
      st->action[i] = EG_LIMIT_RESET;
      continue;
    }
    double x = v[i]->value;
    /* Rates may be fractional (one call every 2 s); a count of calls or
     * of bytes is whole. */
    if (!isfinite(x) || x < 0 || x > max[i])
      return eg_invalid(r->msg, sizeof r->msg, names[i],
                        "%g is out of range [0, %.0f] (0: unlimited)", x, max[i]);
    if (i >= EG_LIMIT_CONCURRENT && x != floor(x))
      return eg_invalid(r->msg, sizeof r->msg, names[i], "%g is not a whole number", x);
    if (i < EG_LIMIT_CONCURRENT && x > 0 && x < EG_LIMIT_RATE_MIN)
      return eg_invalid(r->msg, sizeof r->msg, names[i],
                        "%g is below the least rate, %g per second (0: unlimited)", x,
                        EG_LIMIT_RATE_MIN);
    st->action[i] = EG_LIMIT_SET;
    st->value[i] = x;
  }
  r->state = st;
  return EG_OK;
}

static eg_err eg_set_tenant_limits_apply(eg_req *r, eg_txn *t) {
  const eg_limits_put *st = r->state;
  eg_tenant_limits_rec *stored = NULL, rec;
  Engram__Storage__V1__LimitOverride v[EG_LIMIT_KINDS];
  eg_err e = eg_store_tenant_limits_get(t, st->tenant, &stored);
  if (e == EG_ENOTFOUND) e = EG_OK;
  if (e) return e;
  engram__storage__v1__tenant_limits_record__init(&rec);
  Engram__Storage__V1__LimitOverride **dst[EG_LIMIT_KINDS] = {
      &rec.calls_per_second, &rec.writes_per_second, &rec.concurrent_calls, &rec.storage_bytes};
  Engram__Storage__V1__LimitOverride *const old[EG_LIMIT_KINDS] = {
      stored ? stored->calls_per_second : NULL, stored ? stored->writes_per_second : NULL,
      stored ? stored->concurrent_calls : NULL, stored ? stored->storage_bytes : NULL};
  for (int i = 0; i < EG_LIMIT_KINDS; i++) {
    engram__storage__v1__limit_override__init(&v[i]);
    if (st->action[i] == EG_LIMIT_RESET || (st->action[i] == EG_LIMIT_KEEP && !old[i])) continue;
    v[i].value = st->action[i] == EG_LIMIT_SET ? st->value[i] : old[i]->value;
    *dst[i] = &v[i];
  }
  e = eg_store_tenant_limits_put(t, st->tenant, &rec);
  if (stored) protobuf_c_message_free_unpacked(&stored->base, NULL);
  return e ? e : eg_limits_answer(r, t, st->tenant);
}

#define EG_LIMITS_PATH(name) "/engram.v1.AdminService/" #name

const eg_method eg_limits_methods[] = {
    {.path = EG_LIMITS_PATH(GetTenantLimits),
     .in = &engram__v1__get_tenant_limits_request__descriptor,
     .role = EG_ROLE_ADMIN,
     .read = eg_get_tenant_limits},
    {.path = EG_LIMITS_PATH(SetTenantLimits),
     .in = &engram__v1__set_tenant_limits_request__descriptor,
     .role = EG_ROLE_ADMIN,
     .prepare = eg_set_tenant_limits_prepare,
     .apply = eg_set_tenant_limits_apply},
    {.path = NULL},
};
