"""Per-tenant limits (docs/operations.md, "Per-tenant limits") on real
engramd processes with several tenants' tokens:

  RateTest        calls/s and writes/s buckets: RESOURCE_EXHAUSTED with a
                  RetryInfo whose delay is > 0 and plausible, a retry after
                  it succeeds; writes limited apart from reads; the
                  concurrency cap (parked reads hold places); another tenant
                  unaffected; is_default removes an override; bad values
  QuotaTest       the storage quota: filled, refused naming the quota, a
                  delete frees space; usage equals a fresh count of the
                  data file and survives a restart
  ReplicaTest     an override set on the primary is enforced by a replica
                  once applied there, and its removal too; usage replicated
  MigrationTest   migration 7 counts the usage of the 0.14 store
"""
import os
import shutil
import tempfile
import threading
import time

import json

import grpc

from test_cli import cli
from test_hardening_keys import metrics_port
from test_min_lsn import wait_parked
from harness import KEEP, E2ETestCase, M, Server, free_port, make_keyring, pb, uid
from test_memories import dump_data_dbs
from test_reindex import fixture_store
from test_replication import follow
from test_rich_errors import rich
from engram.v1 import admin_pb2 as apb  # noqa: E402
from engram.v1 import admin_pb2_grpc as apbg  # noqa: E402

ADMIN = "limits-admin-token"
TENANTS = ["acme", "beta", "gamma", "delta", "eps", "zeta"]
TOKENS = [(t, "agent", "agent-" + t) for t in TENANTS] + [("ops", "admin", ADMIN),
                                                          ("ops", "replica", "repl-token")]
ADMIN_MD = (("authorization", "Bearer " + ADMIN),)
LSN_WAIT_MS = 10000  # how long the concurrency test's two calls hold their places (ASan under load is slow to start them)
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
# Not counted toward usage (storage.h, "per-tenant limits and usage").
UNCOUNTED = {"meta", "wal", "sweep_due", "index_state", "tenant_limits", "tenant_usage",
             "key_jobs"}


def fresh_usage(data_dir):
    """{tenant: bytes} counted from the data file itself (mdb_dump), and
    {tenant: bytes} of its tenant_usage rows."""
    dbs = dump_data_dbs(data_dir)
    counted = {}
    for name, rows in dbs.items():
        if name in UNCOUNTED:
            continue
        for k, v in rows:
            if len(k) >= 2 and 1 <= k[0] <= 128 and len(k) >= 1 + k[0]:
                t = k[1:1 + k[0]].decode()
                counted[t] = counted.get(t, 0) + len(k) + len(v)
    rows = {k[1:].decode(): int.from_bytes(v, "big") for k, v in dbs.get("tenant_usage", [])}
    return counted, rows


def limits(**kw):
    """TenantLimits from calls=, writes=, concurrent=, storage= (a number,
    or "default" to remove the override)."""
    names = {"calls": "calls_per_second", "writes": "writes_per_second",
             "concurrent": "concurrent_calls", "storage": "storage_bytes"}
    out = apb.TenantLimits()
    for k, v in kw.items():
        f = getattr(out, names[k])
        if v == "default":
            f.is_default = True
        else:
            f.value = v
    return out


class LimitsCase(E2ETestCase):

    def admin(self, srv):
        return apbg.AdminServiceStub(srv.client(ADMIN).channel)

    def set_limits(self, srv, tenant, **kw):
        return self.admin(srv).SetTenantLimits(
            apb.SetTenantLimitsRequest(tenant=tenant, limits=limits(**kw)), timeout=10,
            metadata=ADMIN_MD)

    def get_limits(self, srv, tenant):
        return self.admin(srv).GetTenantLimits(apb.GetTenantLimitsRequest(tenant=tenant),
                                               timeout=10, metadata=ADMIN_MD)

    def until_refused(self, fn, most=200):
        """Calls fn until it fails RESOURCE_EXHAUSTED (at most `most` times);
        returns (calls that succeeded, the error's rich details, the error)."""
        for n in range(most):
            try:
                fn()
            except grpc.RpcError as e:
                self.assertEqual(e.code(), EXHAUSTED, e.details())
                return n, rich(e), e
        self.fail("no RESOURCE_EXHAUSTED in %d calls" % most)


class RateTest(LimitsCase):

    @classmethod
    def setUpClass(cls):
        cls.srv = Server("--tenant-calls-per-s", "1000", "--max-lsn-wait-ms", LSN_WAIT_MS,
                         "--metrics-listen", "127.0.0.1:0", tokens=TOKENS)
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.close()

    def agent(self, tenant):
        return self.srv.client("agent-" + tenant)

    def interleave(self, must, limited, rounds=30):
        """Calls must() (which must succeed) and limited() in turns; returns
        (how many limited() calls were admitted, the start time). Every
        refusal is RESOURCE_EXHAUSTED."""
        admitted, t0 = 0, time.monotonic()
        for _ in range(rounds):
            self.assertTrue(must())
            try:
                limited()
                admitted += 1
            except grpc.RpcError as e:
                self.assertEqual(e.code(), EXHAUSTED, e.details())
        self.assertLess(admitted, rounds)
        return admitted, t0

    def test_calls_rate_retry_info_then_retry_succeeds(self):
        c = self.agent("acme")
        sid = c.create(uid("u")).session_id
        got = self.set_limits(self.srv, "acme", calls=5)
        self.assertEqual(got.limits.calls_per_second.value, 5)
        self.assertFalse(got.limits.calls_per_second.is_default)
        ok, r, e = self.until_refused(lambda: c.get(sid))
        # The bucket holds 5 (5/s x --tenant-burst-ms 1000): about 5 pass.
        # (more when calls are slow: the bucket refills meanwhile)
        self.assertGreaterEqual(ok, 4)
        self.assertLessEqual(ok, 10)
        self.assertEqual(r["info"].reason, "RATE_LIMITED")
        self.assertIn("tenant acme: 5 calls/s", e.details())
        delay = r["retry"].retry_delay.seconds + r["retry"].retry_delay.nanos / 1e9
        # One token of a 5/s bucket: at most 200 ms away, never the table's 1 s.
        self.assertGreater(delay, 0)
        self.assertLessEqual(delay, 0.2)
        time.sleep(delay)  # what a client does with RetryInfo
        self.assertEqual(c.get(sid).session_id, sid)
        self.assertGreaterEqual(self.get_limits(self.srv, "acme").refused_calls, 1)

    def test_writes_limited_apart_from_reads(self):
        c = self.agent("beta")
        sid = c.create(uid("u")).session_id
        self.set_limits(self.srv, "beta", writes=3)
        ok, r, e = self.until_refused(lambda: c.append(sid, "hello"))
        self.assertLessEqual(ok, 6)
        self.assertEqual(r["info"].reason, "RATE_LIMITED")
        self.assertIn("tenant beta: 3 writes/s", e.details())
        self.assertGreater(r["retry"].retry_delay.nanos + r["retry"].retry_delay.seconds, 0)
        # Reads take no write token: they all go on while writes are
        # refused, and writes get no more than the bucket refills.
        admitted, t0 = self.interleave(lambda: c.get(sid), lambda: c.append(sid, "again"))
        self.assertLessEqual(admitted, 3 * (time.monotonic() - t0) + 1)
        self.assertGreaterEqual(self.get_limits(self.srv, "beta").refused_writes, 2)

    def test_concurrency_cap(self):
        c = self.agent("gamma")
        sid = c.create(uid("u")).session_id
        self.set_limits(self.srv, "gamma", concurrent=2)
        # Reads waiting for an LSN this node never reaches hold their place
        # for --max-lsn-wait-ms.
        far = c.md + (("engram-min-lsn", str(10 ** 12)),)
        ended = []

        def hold():
            try:
                c.call("ListMessages", pb.ListMessagesRequest(session_id=sid), metadata=far,
                       timeout=LSN_WAIT_MS / 1000.0 + 10)
            except grpc.RpcError as e:
                ended.append(e.code())
        threads = [threading.Thread(target=hold) for _ in range(2)]
        for t in threads:
            t.start()
        # Both hold their places before the third call: a probe sent while
        # the second was on its way could take its place.
        wait_parked(self, metrics_port(self.srv), 2)
        self.assertEqual(ended, [])

        with self.assertRaises(grpc.RpcError) as cm:
            c.get(sid)
        e = cm.exception
        self.assertEqual(e.code(), EXHAUSTED, e.details())
        self.assertIn("tenant gamma: 2 concurrent calls", e.details())
        self.assertEqual(rich(e)["info"].reason, "RATE_LIMITED")
        # Another tenant's calls are no part of gamma's count.
        other = self.agent("zeta")
        self.assertTrue(other.create(uid("u")).session_id)
        for t in threads:
            t.join(30)
        self.assertEqual(ended, [grpc.StatusCode.UNAVAILABLE] * 2)
        # Their places are back: calls go through again.
        self.wait_until(lambda: c.get(sid), 10, "a call accepted once the holders ended")
        self.assertGreaterEqual(self.get_limits(self.srv, "gamma").refused_concurrent, 1)

    def test_other_tenant_unaffected(self):
        a, b = self.agent("delta"), self.agent("eps")
        sa, sb = a.create(uid("u")).session_id, b.create(uid("u")).session_id
        self.set_limits(self.srv, "delta", calls=2)
        self.until_refused(lambda: a.get(sa))
        # Every call of B goes; A's get no more than its bucket refills.
        admitted, t0 = self.interleave(lambda: b.get(sb), lambda: a.get(sa))
        self.assertLessEqual(admitted, 2 * (time.monotonic() - t0) + 1)

    def test_is_default_removes_override(self):
        c = self.agent("zeta")
        sid = c.create(uid("u")).session_id
        self.set_limits(self.srv, "zeta", calls=1, storage=10 ** 9)
        self.until_refused(lambda: c.get(sid))
        got = self.set_limits(self.srv, "zeta", calls="default")
        self.assertTrue(got.limits.calls_per_second.is_default)
        self.assertEqual(got.limits.calls_per_second.value, 1000)  # the flag's
        # The other override stays.
        self.assertFalse(got.limits.storage_bytes.is_default)
        self.assertEqual(got.limits.storage_bytes.value, 10 ** 9)
        for _ in range(20):
            self.assertEqual(c.get(sid).session_id, sid)
        got = self.set_limits(self.srv, "zeta", storage="default")
        self.assertTrue(all(getattr(got.limits, f).is_default for f in
                            ("calls_per_second", "writes_per_second", "concurrent_calls",
                             "storage_bytes")))

    def test_bad_values_refused(self):
        adm = self.admin(self.srv)

        def put(tenant="acme", **kw):
            adm.SetTenantLimits(apb.SetTenantLimitsRequest(tenant=tenant, limits=limits(**kw)),
                                timeout=10, metadata=ADMIN_MD)
        self.assertInvalid(put, calls=-1, field="limits.calls_per_second")
        self.assertInvalid(put, concurrent=2.5, field="limits.concurrent_calls")
        self.assertInvalid(put, storage=float("inf"), field="limits.storage_bytes")
        self.assertInvalid(put, tenant="bad tenant", calls=1, field="tenant")
        self.assertInvalid(adm.SetTenantLimits, apb.SetTenantLimitsRequest(tenant="acme"),
                           timeout=10, metadata=ADMIN_MD, field="limits")
        # The caller's own tenant when none is named; agents may not call it.
        self.assertEqual(self.get_limits(self.srv, "").tenant, "ops")
        stub = apbg.AdminServiceStub(self.agent("acme").channel)
        self.assertStatus(grpc.StatusCode.PERMISSION_DENIED, stub.GetTenantLimits,
                          apb.GetTenantLimitsRequest(), timeout=10,
                          metadata=(("authorization", "Bearer agent-acme"),))

    def test_cli_get_and_set(self):
        t = self.srv.addr
        rc, out, err = cli("admin", "tenant", "limits", "set", "eps", "--writes-per-s", "7",
                           "--storage-bytes", "123456", target=t, token=ADMIN, json_out=True)
        self.assertEqual(rc, 0, err)
        got = json.loads(out)
        self.assertEqual(got["tenant"], "eps")
        self.assertEqual(got["limits"]["writesPerSecond"]["value"], 7)
        self.assertEqual(got["limits"]["storageBytes"]["value"], 123456)
        rc, out, err = cli("admin", "tenant", "limits", "set", "eps", "--writes-per-s", "default",
                           target=t, token=ADMIN, json_out=True)
        self.assertEqual(rc, 0, err)
        self.assertTrue(json.loads(out)["limits"]["writesPerSecond"]["isDefault"])
        rc, out, err = cli("admin", "tenant", "limits", "get", "eps", target=t, token=ADMIN)
        self.assertEqual(rc, 0, err)
        self.assertIn("123456", out)
        rc, out, err = cli("admin", "tenant", "limits", "get", target=t, token=ADMIN,
                           json_out=True)
        self.assertEqual((rc, json.loads(out)["tenant"]), (0, "ops"), err)
        self.assertEqual(self.get_limits(self.srv, "eps").limits.storage_bytes.value, 123456)
        self.set_limits(self.srv, "eps", storage="default")
        # Usage errors: no limit named, a bad value.
        rc, _, err = cli("admin", "tenant", "limits", "set", "eps", target=t, token=ADMIN)
        self.assertEqual(rc, 2, err)
        rc, _, err = cli("admin", "tenant", "limits", "set", "eps", "--calls-per-s", "-3",
                         target=t, token=ADMIN)
        self.assertEqual(rc, 2, err)
        self.assertIn("--calls-per-s", err)


class QuotaTest(LimitsCase):

    def test_quota_fill_refuse_delete_restart(self):
        srv = self.start_server(tokens=TOKENS)
        c = srv.client("agent-acme")
        sid = c.create(uid("u")).session_id
        base = self.get_limits(srv, "acme").storage_bytes_used
        self.assertGreater(base, 0)
        quota = base + 4000
        self.set_limits(srv, "acme", storage=quota)
        # A fresh tenant's writes are not hit by acme's quota.
        other = srv.client("agent-beta")
        osid = other.create(uid("u")).session_id
        ok, r, e = self.until_refused(lambda: c.append(sid, "x" * 400), most=100)
        self.assertGreater(ok, 3)
        self.assertEqual(r["info"].reason, "QUOTA_EXCEEDED")
        self.assertIsNone(r["retry"])
        self.assertIn("tenant acme: storage quota of %d bytes" % quota, e.details())
        used = self.get_limits(srv, "acme")
        self.assertGreaterEqual(used.storage_bytes_used, quota)
        self.assertGreaterEqual(used.refused_storage, 1)
        # Nothing of the refused write was kept.
        self.assertEqual(len(c.all_messages(sid)), ok)
        self.assertTrue(other.append(osid, "y" * 400))
        # Deletes always go, and free the space.
        self.assertTrue(c.delete(sid) is not None)
        after = self.get_limits(srv, "acme").storage_bytes_used
        self.assertLess(after, base)
        sid2 = c.create(uid("u")).session_id
        self.assertTrue(c.append(sid2, "back"))
        before = {t: self.get_limits(srv, t).storage_bytes_used for t in ("acme", "beta")}
        srv.stop()
        counted, rows = fresh_usage(srv.data_dir)
        self.assertEqual({t: rows.get(t, 0) for t in before}, before)
        self.assertEqual(rows, counted)
        srv.start()
        self.assertEqual({t: self.get_limits(srv, t).storage_bytes_used for t in before},
                         before)
        # The quota override survived too.
        self.assertEqual(self.get_limits(srv, "acme").limits.storage_bytes.value, quota)

    def test_usage_is_a_fresh_count_after_mixed_writes(self):
        srv = self.start_server(tokens=TOKENS)
        for t in ("acme", "beta"):
            c = srv.client("agent-" + t)
            for i in range(3):
                sid = c.create(uid("u"), metadata={"k": "v%d" % i}).session_id
                c.append(sid, *("message %d of %s" % (j, t) for j in range(5)))
                c.update_summary(sid, "s" * 50, 2)
                if i == 1:
                    c.delete(sid)
        srv.stop()
        counted, rows = fresh_usage(srv.data_dir)
        self.assertEqual(set(counted), {"acme", "beta"})
        self.assertEqual(rows, counted)


class ReplicaTest(LimitsCase):

    def test_override_replicated_and_enforced(self):
        tmp = tempfile.mkdtemp(prefix="engram-e2e-limits-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, tmp, True)
        keyring = make_keyring(os.path.join(tmp, "keyring"))
        p = self.start_server(tokens=TOKENS, keyring=keyring, port=free_port())
        r = Server(tokens=TOKENS, keyring=keyring, port=free_port())
        r.name = "replica"
        follow(r, p.addr)
        r.extra[r.extra.index("--replica-token") + 1] = "repl-token"
        self.addCleanup(r.close)
        r.start()
        c = p.client("agent-acme")
        sid = c.create(uid("u")).session_id
        rc = r.client("agent-acme")
        self.wait_until(lambda: rc.get(sid), 30, "the session on the replica", nodes=[p, r])
        self.set_limits(p, "acme", calls=2)

        def refused_on_replica():
            for _ in range(10):
                try:
                    rc.get(sid)
                except grpc.RpcError as e:
                    if e.code() != EXHAUSTED:
                        raise
                    return e
            return None
        e = self.wait_until(refused_on_replica, 30, "the replica enforcing the override",
                            nodes=[p, r])
        self.assertIn("tenant acme: 2 calls/s", e.details())
        self.assertEqual(self.get_limits(r, "acme").limits.calls_per_second.value, 2)
        self.set_limits(p, "acme", calls="default")
        self.wait_until(lambda: self.get_limits(r, "acme").limits.calls_per_second.is_default,
                        30, "the removal on the replica", nodes=[p, r])
        for _ in range(20):
            self.assertEqual(rc.get(sid).session_id, sid)
        # Usage rows are replicated, not counted again on the replica.
        want = self.get_limits(p, "acme").storage_bytes_used
        self.wait_until(lambda: self.get_limits(r, "acme").storage_bytes_used == want, 30,
                        "the replica's usage", nodes=[p, r])


class MigrationTest(LimitsCase):

    def test_migration_counts_existing_store(self):
        tmp = tempfile.mkdtemp(prefix="engram-e2e-limits-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, tmp, True)
        data = fixture_store(tmp)
        srv = self.start_server(data_dir=data, create_data_dir=False)
        used = apbg.AdminServiceStub(srv.client().channel).GetTenantLimits(
            apb.GetTenantLimitsRequest(), timeout=10).storage_bytes_used
        self.assertGreater(used, 0)
        srv.stop()
        counted, rows = fresh_usage(data)
        self.assertEqual(set(counted), {"default"})
        # The count the migration made, kept up by the reindex's rewrites since.
        self.assertEqual(rows, counted)


if __name__ == "__main__":
    import unittest
    unittest.main()
