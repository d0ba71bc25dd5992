"""StoreService (LangGraph's BaseStore) through the real engramd: put, get,
replace, delete; namespace prefixes that never mix ("a","b") with ("ab");
filters on values' top-level pairs; exact cosine ranking; limit and offset;
ListNamespaces with prefix/suffix conditions, wildcards and max_depth;
TTLs (an item becomes NOT_FOUND, RefreshItems extends it, the sweeper
removes its raw keys, checked with mdb_dump); every limit at its edge with
nothing written on bad input; values sealed at rest; a replica read with
engram-min-lsn. TTLs are seconds of real time: tests wait for the event
with a deadline, never sleep and then assert."""
import json
import math
import os
import shutil
import time

import grpc

from harness import RPC_TIMEOUT, E2ETestCase, Server, ServerTestCase, tail, uid
import test_at_rest as at_rest
import test_retention as retention
from test_memories import dump_data_dbs
from test_replication import AGENT_MD, Cluster, ReplicationCase, agent, min_lsn_md
from engram.v1 import agent_state_pb2 as spb  # noqa: E402
from engram.v1 import agent_state_pb2_grpc as spbg  # noqa: E402

NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT
WAIT = 60.0  # bound on a TTL or a sweep becoming visible (ASan is slow)


class Store:
    """The StoreService calls of one client."""

    def __init__(self, client, md=None):
        self.stub = spbg.StoreServiceStub(client.channel)
        self.md = client.md if md is None else md

    def _call(self, name, req, md=None):
        return getattr(self.stub, name)(req, timeout=RPC_TIMEOUT,
                                        metadata=self.md if md is None else md)

    def put(self, ns, key, value, embedding=(), ttl=0):
        return self._call("PutItem", spb.PutItemRequest(
            namespace=ns, key=key, value_json=value if isinstance(value, str) else json.dumps(value),
            embedding=embedding, ttl_seconds=ttl))

    def get(self, ns, key, md=None):
        return self._call("GetItem", spb.GetItemRequest(namespace=ns, key=key), md)

    def delete(self, ns, key):
        return self._call("DeleteItem", spb.DeleteItemRequest(namespace=ns, key=key)).deleted

    def search_resp(self, prefix=(), filter=None, query=(), limit=0, offset=0):
        return self._call("SearchItems", spb.SearchItemsRequest(
            namespace_prefix=prefix, filter_json=json.dumps(filter) if filter else "",
            query_embedding=query, limit=limit, offset=offset))

    def search(self, *args, **kw):
        return self.search_resp(*args, **kw).items[:]

    def list_ns(self, match=(), max_depth=0, limit=0, offset=0):
        req = spb.ListNamespacesRequest(max_depth=max_depth, limit=limit, offset=offset)
        for kind, path in match:
            req.match.add(type=spb.NamespaceMatch.TYPE_PREFIX if kind == "prefix"
                          else spb.NamespaceMatch.TYPE_SUFFIX, path=path)
        return [tuple(n.labels) for n in self._call("ListNamespaces", req).namespaces]

    def refresh(self, *refs):
        req = spb.RefreshItemsRequest()
        for ns, key in refs:
            req.items.add(namespace=ns, key=key)
        return self._call("RefreshItems", req).refreshed


def keys(items):
    return [(tuple(i.namespace), i.key) for i in items]


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) *
                                               math.sqrt(sum(y * y for y in b)))


class StoreTest(ServerTestCase):
    server_args = ("--sweep-interval-ms", "50")

    def setUp(self):
        super().setUp()
        self.s = Store(self.client)
        self.t = uid("t")  # a namespace root of this test's own

    def test_put_get_replace_delete(self):
        ns = [self.t, "prefs"]
        a = self.s.put(ns, "k1", {"color": "blue", "n": 1})
        self.assertEqual((list(a.namespace), a.key), (ns, "k1"))
        self.assertEqual(json.loads(a.value_json), {"color": "blue", "n": 1})
        self.assertFalse(a.HasField("expire_time"))
        g = self.s.get(ns, "k1")
        self.assertEqual(json.loads(g.value_json), {"color": "blue", "n": 1})
        self.assertEqual(g.create_time, a.create_time)
        b = self.s.put(ns, "k1", {"color": "red"})
        self.assertEqual(json.loads(self.s.get(ns, "k1").value_json), {"color": "red"})
        self.assertEqual(b.create_time, a.create_time, "a replace keeps the create time")
        self.assertGreaterEqual(b.update_time.ToNanoseconds(), a.update_time.ToNanoseconds())
        self.assertTrue(self.s.delete(ns, "k1"))
        self.assertStatus(NOT_FOUND, self.s.get, ns, "k1", field="key")
        self.assertFalse(self.s.delete(ns, "k1"))
        self.assertEqual(self.s.list_ns(match=[("prefix", [self.t])]), [])

    def test_prefixes_never_mix(self):
        self.s.put([self.t, "a"], "x", {"v": 1})
        self.s.put([self.t, "a", "b"], "y", {"v": 2})
        self.s.put([self.t, "ab"], "z", {"v": 3})
        self.assertEqual(sorted(keys(self.s.search([self.t, "a"]))),
                         [((self.t, "a"), "x"), ((self.t, "a", "b"), "y")])
        self.assertEqual(keys(self.s.search([self.t, "ab"])), [((self.t, "ab"), "z")])
        self.assertEqual(keys(self.s.search([self.t, "a", "b"])), [((self.t, "a", "b"), "y")])
        self.assertEqual(len(self.s.search([self.t])), 3)
        # A namespace is not an item key: ("t","a") key "b" is not ("t","a","b").
        self.assertStatus(NOT_FOUND, self.s.get, [self.t, "a"], "b")

    def test_filters(self):
        ns = [self.t, "f"]
        self.s.put(ns, "1", {"kind": "note", "n": 1})
        self.s.put(ns, "2", {"kind": "note", "n": "1"})
        self.s.put(ns, "3", {"kind": "todo", "n": 1, "deep": {"a": [1, 2]}})
        self.assertEqual(sorted(i.key for i in self.s.search(ns, {"kind": "note"})), ["1", "2"])
        self.assertEqual([i.key for i in self.s.search(ns, {"kind": "note", "n": 1})], ["1"])
        self.assertEqual([i.key for i in self.s.search(ns, {"n": "1"})], ["2"], '"1" is not 1')
        self.assertEqual([i.key for i in self.s.search(ns, {"deep": {"a": [1, 2]}})], ["3"])
        self.assertEqual(self.s.search(ns, {"kind": "none"}), [])
        self.assertInvalid(self.s._call, "SearchItems",
                           spb.SearchItemsRequest(namespace_prefix=ns, filter_json="[1]"),
                           field="filter_json")

    def test_vector_search_order_and_scores(self):
        ns = [self.t, "v"]
        vecs = {"a": [1, 0, 0], "b": [0.9, 0.1, 0], "c": [0, 1, 0], "d": [-1, 0, 0]}
        for k, v in vecs.items():
            self.s.put(ns, k, {"k": k}, embedding=v)
        self.s.put(ns, "plain", {"k": "plain"})
        self.s.put(ns, "other-dims", {"k": "o"}, embedding=[1, 0])
        q = [1, 0.05, 0]
        got = self.s.search(ns, query=q, limit=10)
        want = sorted(vecs, key=lambda k: -cosine(vecs[k], q))
        self.assertEqual([i.key for i in got[:4]], want)
        for i in got[:4]:
            self.assertAlmostEqual(i.score, cosine(vecs[i.key], q), places=5)
        # Items without an embedding of the query's dimensions follow, newest first.
        self.assertEqual([i.key for i in got[4:]], ["other-dims", "plain"])
        self.assertEqual([i.score for i in got[4:]], [0, 0])
        self.assertLess(got[3].score, 0, "a scored item below 0 still comes before unscored ones")
        # A query of dimensions no item has scores nothing: all unscored, newest first.
        self.assertEqual([i.key for i in self.s.search(ns, query=[1, 0, 0, 0], limit=10)],
                         ["other-dims", "plain", "d", "c", "b", "a"])
        self.assertInvalid(self.s.search, ns, query=[0, 0, 0], field="query_embedding")

    def test_search_cut_by_the_reply_budget_says_truncated(self):
        # Ten values of 1 MiB do not fit one reply of --max-reply-bytes
        # (3 MiB): each reply says so, and paging on from offset + items
        # reaches every item exactly once.
        ns = [self.t, "big"]
        value = {"s": "v" * (1024 * 1024 - 9)}
        for k in range(10):
            self.s.put(ns, "k%d" % k, value)
        got, offset = [], 0
        while True:
            r = self.s.search_resp(ns, limit=10 - offset, offset=offset)
            self.assertGreater(len(r.items), 0)
            got += [i.key for i in r.items]
            offset += len(r.items)
            if not r.truncated:
                break
            self.assertLess(len(r.items), 10, "a cut reply is short")
        self.assertEqual(got, ["k%d" % k for k in reversed(range(10))])
        self.assertGreater(offset, 0)
        # Not cut: the limit ended it, or the items ran out.
        self.assertFalse(self.s.search_resp(ns, limit=1).truncated)
        self.assertFalse(self.s.search_resp([self.t, "none"], limit=10).truncated)

    def test_limit_offset_newest_first(self):
        ns = [self.t, "page"]
        for k in range(12):
            self.s.put(ns, "k%02d" % k, {"i": k})
        order = [i.key for i in self.s.search(ns, limit=100)]
        self.assertEqual(order, ["k%02d" % k for k in reversed(range(12))])
        self.assertEqual(len(self.s.search(ns)), 10, "default limit 10")
        self.assertEqual([i.key for i in self.s.search(ns, limit=5, offset=5)], order[5:10])
        self.assertEqual(self.s.search(ns, limit=5, offset=12), [])
        self.s.search(ns, limit=1000, offset=10000)
        self.assertInvalid(self.s.search, ns, limit=1001, field="limit")
        self.assertInvalid(self.s.search, ns, offset=10001, field="offset")
        self.assertInvalid(self.s.search, ns, limit=-1, field="limit")

    def test_list_namespaces(self):
        t = self.t
        for ns in ([t, "a"], [t, "a", "b"], [t, "a", "c"], [t, "ab"], [t, "x", "b"],
                   [t, "a", "b", "deep"]):
            self.s.put(ns, "k", {"v": 1})
        mine = [("prefix", [t])]
        self.assertEqual(self.s.list_ns(mine), [
            (t, "a"), (t, "a", "b"), (t, "a", "b", "deep"), (t, "a", "c"), (t, "ab"),
            (t, "x", "b")])
        self.assertEqual(self.s.list_ns([("prefix", [t, "a"])]),
                         [(t, "a"), (t, "a", "b"), (t, "a", "b", "deep"), (t, "a", "c")])
        self.assertEqual(self.s.list_ns(mine + [("suffix", ["b"])]), [(t, "a", "b"), (t, "x", "b")])
        self.assertEqual(self.s.list_ns([("prefix", [t, "*", "b"])]),
                         [(t, "a", "b"), (t, "a", "b", "deep"), (t, "x", "b")])
        self.assertEqual(self.s.list_ns(mine, max_depth=2), [(t, "a"), (t, "ab"), (t, "x")])
        self.assertEqual(self.s.list_ns(mine, max_depth=3),
                         [(t, "a"), (t, "a", "b"), (t, "a", "c"), (t, "ab"), (t, "x", "b")])
        self.assertEqual(self.s.list_ns(mine, limit=2, offset=1), [(t, "a", "b"), (t, "a", "b", "deep")])
        self.assertEqual(self.s.list_ns(mine, max_depth=2, limit=1, offset=1), [(t, "ab")])
        self.assertInvalid(self.s.list_ns, mine, limit=1001, field="limit")
        self.assertInvalid(self.s.list_ns, mine, max_depth=-1, field="max_depth")
        self.assertInvalid(self.s._call, "ListNamespaces", spb.ListNamespacesRequest(
            match=[spb.NamespaceMatch(path=["x"])]), field="match.type")

    def test_ttl_expires_refresh_extends_sweeper_removes(self):
        ns = [self.t, "ttl"]
        self.s.put(ns, "keep", {"v": 0})
        a = self.s.put(ns, "short", {"v": 1}, ttl=1)
        self.assertEqual(a.ttl_seconds, 1)
        self.assertEqual(a.expire_time.ToNanoseconds() - a.update_time.ToNanoseconds(), 10**9)
        # Refresh while it lives: the expiry moves to now + 1 s.
        self.s.put(ns, "refreshed", {"v": 2}, ttl=2)
        before = self.s.get(ns, "refreshed").expire_time.ToNanoseconds()
        self.wait_until(lambda: time.time_ns() > a.update_time.ToNanoseconds() + 10**8, WAIT, "time")
        self.assertEqual(self.s.refresh((ns, "refreshed"), (ns, "keep"), (ns, "nope")), 1)
        after = self.s.get(ns, "refreshed").expire_time.ToNanoseconds()
        self.assertGreater(after, before)
        # The 1 s item becomes NOT_FOUND to reads, searches and refreshes.
        def gone():
            try:
                self.s.get(ns, "short")
                return False
            except grpc.RpcError as e:
                return e.code() == NOT_FOUND
        self.wait_until(gone, WAIT, "the 1 s item NOT_FOUND")
        self.assertNotIn("short", [i.key for i in self.s.search(ns)])
        self.assertEqual(self.s.refresh((ns, "short")), 0)
        # The sweeper removes its raw keys (record and expiry entry).
        needle = b"short"
        def swept():
            rows = dump_data_dbs(self.server.data_dir).get("store_items", [])
            return not any(needle in k for k, _ in rows)
        self.wait_until(swept, WAIT, "the sweeper deleting the expired item's keys", [self.server])
        self.assertEqual(json.loads(self.s.get(ns, "keep").value_json), {"v": 0})

    def test_expired_namespace_not_listed(self):
        ns = [self.t, "only-ttl"]
        a = self.s.put(ns, "k", {"v": 1}, ttl=1)
        self.assertEqual(self.s.list_ns([("prefix", [self.t])]), [tuple(ns)])
        self.wait_until(lambda: time.time_ns() > a.expire_time.ToNanoseconds(), WAIT, "expiry")
        self.assertEqual(self.s.list_ns([("prefix", [self.t])]), [])
        # A put over the expired item starts a new one.
        b = self.s.put(ns, "k", {"v": 2})
        self.assertGreater(b.create_time.ToNanoseconds(), a.create_time.ToNanoseconds())
        self.assertFalse(b.HasField("expire_time"))

    def test_limits_at_their_edge_nothing_written(self):
        t = self.t
        self.s.put([t] + ["l"] * 15, "k", {})                      # 16 labels
        self.assertInvalid(self.s.put, [t] + ["l"] * 16, "k", {}, field="namespace")
        self.s.put([t, "x" * 128], "k" * 128, {})
        self.assertInvalid(self.s.put, [t, "x" * 129], "k", {}, field="namespace")
        self.assertInvalid(self.s.put, [t], "k" * 129, {}, field="key")
        self.assertInvalid(self.s.put, [t], "", {}, field="key")
        self.assertInvalid(self.s.put, [], "k", {}, field="namespace")
        self.assertInvalid(self.s.put, [t, ""], "k", {}, field="namespace")
        # "*" is ListNamespaces' wildcard: a label of it could never be matched as itself.
        e = self.assertInvalid(self.s.put, [t, "*"], "k", {}, field="namespace")
        self.assertIn('"*"', e.details())
        self.s.put([t, "a*", "*b"], "k", {})
        # The labels' bytes in all: 228 fit, 229 do not.
        fit = [t] + ["y" * 100, "z" * (228 - 100 - len(t))]
        self.s.put(fit, "k", {})
        self.assertInvalid(self.s.put, fit[:-1] + [fit[-1] + "z"], "k", {}, field="namespace")
        big = {"s": "v" * (1024 * 1024 - 9)}
        self.assertEqual(len(json.dumps(big)), 1024 * 1024)
        self.s.put([t, "big"], "k", big)
        big["s"] += "v"
        self.assertInvalid(self.s.put, [t, "big"], "k2", big, field="value_json")
        self.s.put([t, "pairs"], "k", {str(i): i for i in range(256)})
        self.assertInvalid(self.s.put, [t, "pairs"], "k2", {str(i): i for i in range(257)},
                           field="value_json")
        for bad in ("", "[1]", "1", "{", '{"a":1} x', "[" * 70 + "]" * 70):
            self.assertInvalid(self.s.put, [t, "bad"], "k", bad, field="value_json")
        self.s.put([t, "emb"], "k", {}, embedding=[1.0] * 4096)
        self.assertInvalid(self.s.put, [t, "emb"], "k2", {}, embedding=[1.0] * 4097,
                           field="embedding")
        self.assertInvalid(self.s.put, [t, "emb"], "k2", {}, embedding=[float("nan")],
                           field="embedding")
        self.assertInvalid(self.s.put, [t, "ttl"], "k", {}, ttl=-1, field="ttl_seconds")
        refs = [([t], "r%d" % i) for i in range(1000)]
        self.assertEqual(self.s.refresh(*refs), 0)
        self.assertInvalid(self.s.refresh, *(refs + [([t], "one-more")]), field="items")
        # Nothing of the refused puts was written.
        for ns, k in (([t, "big"], "k2"), ([t, "pairs"], "k2"), ([t, "emb"], "k2"),
                      ([t, "bad"], "k"), ([t, "ttl"], "k"), ([t, "*"], "k")):
            self.assertStatus(NOT_FOUND, self.s.get, ns, k)
        listed = self.s.list_ns([("prefix", [t])], max_depth=2)
        self.assertNotIn((t, "bad"), listed)
        self.assertNotIn((t, "ttl"), listed)

    def test_sealed_at_rest(self):
        marker = uid("plaintext-marker")
        self.s.put([self.t, "secret"], "k", {"note": marker})
        rows = dump_data_dbs(self.server.data_dir)
        for db, kv in rows.items():
            for k, v in kv:
                self.assertNotIn(marker.encode(), v, "value plaintext in %s" % db)
        with open(os.path.join(self.server.data_dir, "data.mdb"), "rb") as f:
            self.assertNotIn(marker.encode(), f.read())


class StoreScanBoundTest(ServerTestCase):
    server_args = ("--max-store-scan", "100")

    def test_search_past_the_scan_bound_says_so(self):
        s = Store(self.client)
        t = uid("t")
        for i in range(100):
            s.put([t, "n"], "k%03d" % i, {"i": i})
        self.assertEqual(len(s.search([t], limit=1000)), 100)
        s.put([t, "n"], "one-more", {})
        e = self.assertStatus(grpc.StatusCode.RESOURCE_EXHAUSTED, s.search, [t], field="--max-store-scan")
        self.assertIn("narrower prefix", e.details())


class StoreSweepBacklogTest(E2ETestCase):
    """Expired store items are swept like the retention kinds: a step gives
    them what the tiers leave of --sweep-batch, the backlog is a metric
    (engram_sweep_backlog{kind="store_expire"}), and a backlog larger than
    one step is worked off step by step until nothing is left."""

    def expiry_entries(self, srv):
        return [k for k, _ in dump_data_dbs(srv.data_dir).get("store_items", []) if k[:1] == b"\x00"]

    def test_backlog_swept_at_the_whole_pace_and_shown(self):
        # One step per hour: the only step is the one at start.
        srv = Server("--metrics-listen", "127.0.0.1:0", "--sweep-batch", "10",
                     "--sweep-interval-ms", "3600000")
        self.addCleanup(srv.close)
        s = Store(retention.start(srv))
        ns = [uid("t"), "exp"]
        last = None
        for k in range(25):
            last = s.put(ns, "k%02d" % k, {"k": k}, ttl=1)
        self.wait_until(lambda: time.time_ns() > last.expire_time.ToNanoseconds(), WAIT, "expiry")
        self.assertEqual(len(self.expiry_entries(srv)), 25)
        srv.stop()
        retention.start(srv)
        def stepped():
            return retention.metric(retention.metrics(srv), "engram_swept_total", "store_expire")
        # Nothing else is due: the whole batch of 10 goes to the expired
        # items (before: half of it), and the backlog shows the rest,
        # counted up to --sweep-batch.
        self.assertEqual(self.wait_until(stepped, WAIT, "the start's sweep step", [srv]), 10)
        t = retention.metrics(srv)
        self.assertEqual(retention.metric(t, "engram_sweep_backlog", "store_expire"), 10)
        self.assertEqual(len(self.expiry_entries(srv)), 15)
        # A step every 50 ms: the rest goes, 10 a step, and the backlog reads 0.
        srv.stop()
        srv.extra[srv.extra.index("3600000")] = "50"
        s = Store(retention.start(srv))
        def all_swept():
            t = retention.metrics(srv)
            return (retention.metric(t, "engram_swept_total", "store_expire") == 15 and
                    retention.metric(t, "engram_sweep_backlog", "store_expire") == 0)
        self.wait_until(all_swept, WAIT, "every expired item swept", [srv])
        self.assertEqual(self.expiry_entries(srv), [])
        self.assertEqual(s.list_ns([("prefix", ns[:1])]), [])


class StoreCorruptRecordTest(E2ETestCase):
    """A stored item that does not decode (edited with mdb_load while the
    server is stopped) is DATA_LOSS to every call that reads it, DeleteItem
    included, and nothing else is touched."""

    def test_undecodable_item_is_data_loss(self):
        if not shutil.which("mdb_dump") or not shutil.which("mdb_load"):
            self.fail("mdb_dump/mdb_load (lmdb-utils) not installed")
        srv = self.start_server()
        s = Store(srv.client())
        ns = [uid("t"), "c"]
        s.put(ns, "victim", {"v": 1})
        s.put(ns, "other", {"v": 2})
        srv.stop()
        header, recs = at_rest.mdb_dump(srv.data_dir, "store_items")
        mine = [(k, v) for k, v in recs if k.endswith(b"victim")]
        self.assertEqual(len(mine), 1)
        # 0xff: a field tag whose varint never ends, so the record cannot decode.
        at_rest.mdb_put(srv.data_dir, "store_items", header, [(mine[0][0], b"\xff")])
        srv.start()
        s = Store(srv.client())
        for fn, args in ((s.delete, (ns, "victim")), (s.get, (ns, "victim")),
                         (s.put, (ns, "victim", {"v": 3})), (s.search, (ns,))):
            self.assertStatus(grpc.StatusCode.DATA_LOSS, fn, *args)
        self.assertIsNone(srv.died(), "engramd died:\n" + tail(srv))
        self.assertEqual(json.loads(s.get(ns, "other").value_json), {"v": 2})
        self.assertTrue(s.delete(ns, "other"))


class StoreReplicaTest(ReplicationCase):

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster()
        try:
            cls.p = cls.cluster.primary().start()
            cls.r1 = cls.cluster.replica("r1", cls.p.addr).start()
        except BaseException:
            cls.cluster.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.cluster.close()

    def test_replica_reads_its_writes(self):
        self.wait_connected(self.p, ["r1"])
        ps = Store(agent(self.p), AGENT_MD)
        rs = Store(agent(self.r1), AGENT_MD)
        ns = [uid("t"), "r"]
        resp, call = ps.stub.PutItem.with_call(
            spb.PutItemRequest(namespace=ns, key="k", value_json='{"a": 1}', ttl_seconds=3600),
            timeout=RPC_TIMEOUT, metadata=AGENT_MD)
        lsn = dict(call.initial_metadata())["engram-lsn"]
        got = rs.get(ns, "k", md=min_lsn_md(lsn))
        self.assertEqual(json.loads(got.value_json), {"a": 1})
        self.assertEqual(got.expire_time, resp.expire_time)
        _, call = ps.stub.DeleteItem.with_call(spb.DeleteItemRequest(namespace=ns, key="k"),
                                               timeout=RPC_TIMEOUT, metadata=AGENT_MD)
        lsn = dict(call.initial_metadata())["engram-lsn"]
        self.assertStatus(NOT_FOUND, rs.get, ns, "k", md=min_lsn_md(lsn))

    def test_refresh_rewrites_each_item_once_and_reaches_the_replica(self):
        # A refresh rewrites an item whole: one 1 MiB item named 100 times
        # in one RefreshItems logged 100 MiB in one record, which no replica
        # receives (replication stopped there for good). Each item is now
        # written once; the record reaches the replica.
        self.wait_connected(self.p, ["r1"])
        ps = Store(agent(self.p), AGENT_MD)
        rs = Store(agent(self.r1), AGENT_MD)
        ns = [uid("t"), "big"]
        ps.put(ns, "k", {"v": "x" * (1024 * 1024 - 16)}, ttl=3600)
        req = spb.RefreshItemsRequest(items=[spb.ItemRef(namespace=ns, key="k")] * 100)
        resp, call = ps.stub.RefreshItems.with_call(req, timeout=RPC_TIMEOUT, metadata=AGENT_MD)
        self.assertEqual(resp.refreshed, 1)
        lsn = dict(call.initial_metadata())["engram-lsn"]
        self.assertEqual(rs.get(ns, "k", md=min_lsn_md(lsn)).ttl_seconds, 3600)
