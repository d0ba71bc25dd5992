"""--coordinator with a real single etcd (started here, ended by PID): two
engramd elect a primary, the other follows it and forwards writes to it, and
a SIGTERM of the primary hands the lead to the other; SIGTERMs under
--sync-replicas 1 load lose no acknowledged write; what etcd holds that
engramd cannot use (an unreadable leader key, one node id on two nodes, too
many keys, too many primaries followed) is named, and acted on safely.
The chaos runs (kill -9 under load, fencing, lag) are in test_failover.py.
"""
import os
import shutil
import subprocess
import sys
import tempfile

import grpc

from harness import ENGRAMD, KEEP, REPO, RPC_TIMEOUT, clean_env, free_port, uid
from test_hardening_keys import metrics_port, scrape
from test_replication import (ADMIN_MD, REPL, Cluster, ReplicationCase, Writer, admin, agent,
                              apb, newest, status)

from engram.coord.v1 import coord_pb2  # noqa: E402  (PY_GEN is on sys.path via harness)
from etcd.etcdserverpb import rpc_pb2 as etcd_rpc  # noqa: E402
from etcd.etcdserverpb import rpc_pb2_grpc as etcd_rpc_grpc  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "deploy", "local"))
from cluster import LocalCluster  # noqa: E402

ETCD_START_TIMEOUT = 20.0
# Bound on a failover after a clean stop: the leader revokes its lease, so
# the other elects within a few ticks (EG_COORD_TICK_MS) plus a restart of
# its follower as a primary.
ELECT_TIMEOUT = 15.0


class Etcd:
    """One etcd member started as deploy/local starts its members (cluster.py,
    ended by PID), and the etcd calls the tests make on it."""

    def __init__(self, tmp):
        self.cluster = LocalCluster(os.path.join(tmp, "etcd"), n_etcd=1, n_engram=0)
        self.member = self.cluster.etcd[0]
        self.port = self.member.client_port

    def start(self):
        self.member.spawn()
        self.cluster.wait_etcd([0], ETCD_START_TIMEOUT)
        return self

    def put(self, key, value, lease=0):
        with grpc.insecure_channel("127.0.0.1:%d" % self.port) as ch:
            etcd_rpc_grpc.KVStub(ch).Put(
                etcd_rpc.PutRequest(key=key.encode(), value=value, lease=lease),
                timeout=RPC_TIMEOUT)

    def grant(self, ttl_s):
        """A new lease of ttl_s seconds; its id."""
        with grpc.insecure_channel("127.0.0.1:%d" % self.port) as ch:
            return etcd_rpc_grpc.LeaseStub(ch).LeaseGrant(
                etcd_rpc.LeaseGrantRequest(TTL=ttl_s), timeout=RPC_TIMEOUT).ID

    def revoke_lease_of(self, key):
        """Revokes the lease `key` is bound to (and so every key on it)."""
        with grpc.insecure_channel("127.0.0.1:%d" % self.port) as ch:
            kv = etcd_rpc_grpc.KVStub(ch).Range(etcd_rpc.RangeRequest(key=key.encode()),
                                                timeout=RPC_TIMEOUT).kvs[0]
            etcd_rpc_grpc.LeaseStub(ch).LeaseRevoke(etcd_rpc.LeaseRevokeRequest(ID=kv.lease),
                                                    timeout=RPC_TIMEOUT)

    def delete(self, key):
        with grpc.insecure_channel("127.0.0.1:%d" % self.port) as ch:
            etcd_rpc_grpc.KVStub(ch).DeleteRange(etcd_rpc.DeleteRangeRequest(key=key.encode()),
                                                 timeout=RPC_TIMEOUT)

    def stop(self):
        self.member.term()


class CoordinatorCase(ReplicationCase):

    PREFIX = "/engram-test"

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="engram-e2e-coord-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, self.tmp, True)
        self.etcd = Etcd(self.tmp)
        self.addCleanup(self.etcd.stop)  # after the nodes (cleanups run last first)
        self.etcd.start()
        self.url = "etcd://127.0.0.1:%d%s" % (self.etcd.port, self.PREFIX)
        self.cluster = Cluster()
        self.addCleanup(self.cluster.close)

    def node(self, name, *args):
        s = self.cluster.primary("--coordinator", self.url, "--replica-id", name,
                                 "--replica-token", REPL, "--lease-ttl-s", "2",
                                 "--metrics-listen", "127.0.0.1:0", *args)
        s.name = name
        return s

    def metrics(self, node):
        _, text = scrape(metrics_port(node), 10)
        names = ("engram_is_primary", "engram_fenced", "engram_coordinator_up",
                 "engram_elections_won_total")
        return {n: int(v) for line in text.splitlines() if " " in line
                for n, v in [line.split(" ", 1)] if n in names}

    def wait_role(self, node, role, nodes):
        return self.wait_until(lambda: status(node).role == role and status(node),
                               ELECT_TIMEOUT, "%s %s" % (node.name, role), nodes)

    def problem(self, node, *parts):
        """Waits until node's failover_problem says every one of parts."""
        return self.wait_until(
            lambda: all(p in status(node).failover_problem for p in parts) and status(node),
            ELECT_TIMEOUT, "%s: failover_problem saying %r" % (node.name, parts), [node])


class CoordinatorTest(CoordinatorCase):

    def test_elect_follow_forward_and_hand_over_on_sigterm(self):
        a = self.node("node-a").start()
        st = self.wait_role(a, "primary", [a])
        self.assertEqual(st.coordinator, self.url)
        self.assertEqual((st.node_id, st.leader_id, st.leader_address),
                         ("node-a", "node-a", a.addr))
        self.assertFalse(st.fenced)
        self.assertEqual(st.failover_problem, "")
        self.assertEqual(self.metrics(a), {"engram_is_primary": 1, "engram_fenced": 0,
                                           "engram_coordinator_up": 1,
                                           "engram_elections_won_total": 1})

        b = self.node("node-b").start()
        self.wait_until(lambda: status(b).primary == a.addr, ELECT_TIMEOUT, "node-b follows a",
                        [a, b])
        st = status(b)
        self.assertEqual((st.role, st.node_id, st.leader_id, st.leader_address),
                         ("replica", "node-b", "node-a", a.addr))
        # etcd elects: a manual Promote is refused, naming the coordinator.
        with self.assertRaises(grpc.RpcError) as cm:
            admin(b).Promote(apb.PromoteRequest(), timeout=RPC_TIMEOUT, metadata=ADMIN_MD)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("coordinator", cm.exception.details())
        self.assertEqual(self.metrics(b), {"engram_is_primary": 0, "engram_fenced": 0,
                                           "engram_coordinator_up": 1,
                                           "engram_elections_won_total": 0})

        # A write through the replica is forwarded to the primary.
        sid = agent(b).create(uid("u"), uid("s")).session_id
        agent(b).append(sid, "through b")
        self.assertEqual(newest(a, sid).content, "through b")
        self.wait_converged(a, [b])

        # A clean stop of the leader: it revokes its lease, b takes over.
        epoch = status(a).epoch
        a.stop()
        st = self.wait_role(b, "primary", [b])
        self.assertGreater(st.epoch, epoch)
        self.assertEqual((st.leader_id, st.leader_address), ("node-b", b.addr))
        self.assertEqual(newest(b, sid).content, "through b")
        agent(b).append(sid, "after the handover")
        self.assertEqual(newest(b, sid).content, "after the handover")

        # The old primary comes back as a replica of the new one.
        a.start()
        self.wait_until(lambda: status(a).primary == b.addr, ELECT_TIMEOUT, "node-a follows b",
                        [a, b])
        self.assertEqual(status(a).role, "replica")
        self.wait_converged(b, [a])


def primary_past(node, epoch):
    """The node is a primary at an epoch after `epoch` (a node restarting
    answers nothing yet)."""
    try:
        st = status(node)
    except grpc.RpcError:
        return False
    return st.role == "primary" and st.epoch > epoch


class CoordinatorStopTest(CoordinatorCase):
    """A clean stop of the leader revokes its lease at once: the others must
    still elect the one holding every acknowledged write, not one whose
    member key merely looks best (its peers' keys may be a tick old)."""

    ROUNDS = 5
    WRITES = 40  # acknowledged per round before and after the stop

    def test_sigterm_under_sync_load_keeps_every_acked_write(self):
        self.rounds(lambda old: old.stop(),  # SIGTERM: fenced, lease revoked
                    lambda old: old.start())

    def test_lease_revoked_under_sync_load_keeps_every_acked_write(self):
        # An operator's (or a stale etcd leader's) revoke: the key goes
        # before the leader can know; the replicas stop acking it first.
        self.rounds(lambda old: self.etcd.revoke_lease_of(self.PREFIX + "/leader"),
                    lambda old: None)  # it restarts as a replica by itself

    def rounds(self, depose, bring_back):
        nodes = [self.node("node-%s" % n, "--sync-replicas", "1") for n in "abc"]
        for n in nodes:
            n.start()
        live = lambda: [n for n in nodes if n.proc is not None]
        leader = self.wait_until(
            lambda: next((n for n in live() if status(n).role == "primary"), None),
            ELECT_TIMEOUT, "a leader", nodes)
        for n in nodes:
            if n is not leader:
                self.wait_until(lambda: status(n).primary == leader.addr, ELECT_TIMEOUT,
                                "%s follows %s" % (n.name, leader.name), nodes)
        current = [leader]
        # Each round's writes fail until the test points the writer at the
        # new leader, for as long as the handover takes (26-36 failures in
        # all over 5 rounds on a quiet machine, of the default 50): no cap
        # on them; wait_writes bounds each round's progress instead.
        w = Writer(lambda: current[0], max_writes=100000, max_s=120.0,
                   max_failures=None).start()
        self.addCleanup(lambda: w.thread.is_alive() and w.stop())
        for r in range(self.ROUNDS):
            w.wait_writes(len(w.acked) + self.WRITES)
            old = current[0]
            epoch = status(old).epoch
            depose(old)
            new = self.wait_until(
                lambda: next((n for n in live() if primary_past(n, epoch)), None),
                ELECT_TIMEOUT, "round %d: a new leader" % r, nodes)
            current[0] = new
            w.wait_writes(len(w.acked) + self.WRITES)
            bring_back(old)
            if old is not new:
                self.wait_until(lambda: status(old).primary == new.addr, ELECT_TIMEOUT,
                                "round %d: %s follows %s" % (r, old.name, new.name), nodes)
        w.stop()
        got = {(m.seq, m.content) for m in agent(current[0]).all_messages(w.sid)}
        lost = [a for a in w.acked if a not in got]
        self.assertEqual(lost, [], "acknowledged writes lost\n" + self.logs(*nodes))


class CoordinatorEtcdContentTest(CoordinatorCase):
    """What etcd holds that engramd cannot use is named, and is acted on
    safely."""

    def put_fake_leader(self, key, id_, address, lease):
        """A leader key as an engramd leader puts it: its member key first,
        both on its lease."""
        member = coord_pb2.Member(id=id_, address=address, role="primary", healthy=True)
        self.etcd.put(self.PREFIX + "/members/" + id_, member.SerializeToString(), lease)
        self.etcd.put(key, self.leader_value(id_, address), lease)

    def leader_value(self, id_, address):
        return coord_pb2.Leader(id=id_, address=address, epoch=1).SerializeToString()

    def test_unreadable_leader_key_is_named_and_nobody_stands(self):
        a = self.node("node-a").start()
        self.wait_role(a, "primary", [a])
        b = self.node("node-b").start()
        self.wait_until(lambda: status(b).primary == a.addr, ELECT_TIMEOUT, "node-b follows a",
                        [a, b])
        key = self.PREFIX + "/leader"
        # Not a Leader (an operator's put, another version's value): nobody
        # may take the key while it is there, so nobody else can lead
        # either: the primary goes on leading, the replica on following,
        # and both say what is wrong.
        self.etcd.put(key, b"garbage\xff")
        for n in (a, b):
            self.problem(n, key, "delete it")
        self.assertIn("is not a Leader", status(a).failover_problem)
        self.assertEqual(status(a).role, "primary")
        self.assertEqual(status(b).primary, a.addr)
        sid = agent(b).create(uid("u"), uid("s")).session_id
        agent(b).append(sid, "written through the replica while the key is unusable")
        self.etcd.delete(key)
        leader = self.wait_until(lambda: next((n for n in (a, b) if status(n).role == "primary"
                                               and status(n).leader_id == n.name), None),
                                 ELECT_TIMEOUT, "a leader again", [a, b])
        other = b if leader is a else a
        self.wait_until(lambda: status(other).primary == leader.addr, ELECT_TIMEOUT,
                        "%s follows %s" % (other.name, leader.name), [a, b])
        # A Leader naming nobody: nobody follows "".
        self.etcd.put(key, self.leader_value("", ""))
        for n in (other, leader):
            self.problem(n, key, "no id or address", "delete it")
        self.assertEqual(status(other).primary, leader.addr)

    def test_one_node_id_on_two_nodes(self):
        a = self.node("node-a").start()
        self.wait_role(a, "primary", [a])
        epoch = status(a).epoch
        twin = self.node("node-a").start()
        twin.name = "twin"
        # The twin must not take node-a's lead for its own (revoking it).
        st = self.problem(twin, "node id node-a is used by another node at " + a.addr)
        self.assertEqual(st.role, "replica")
        st = status(a)
        self.assertEqual((st.role, st.epoch, st.leader_address), ("primary", epoch, a.addr))
        self.assertEqual(self.metrics(a)["engram_elections_won_total"], 1)

    def test_too_many_keys_under_the_prefix_is_named(self):
        a = self.node("node-a").start()
        self.wait_role(a, "primary", [a])
        with grpc.insecure_channel("127.0.0.1:%d" % self.etcd.port) as ch:
            kv = etcd_rpc_grpc.KVStub(ch)
            for i in range(257):  # EG_ETCD_RANGE_MAX + 1 with the node's own keys
                kv.Put(etcd_rpc.PutRequest(key=("%s/junk/%03d" % (self.PREFIX, i)).encode(),
                                           value=b"x"), timeout=RPC_TIMEOUT)
        st = self.problem(a, self.PREFIX + "/ in etcd", "more than 256 keys")
        self.assertNotIn("cannot be reached", st.failover_problem)

    def test_following_past_the_upstream_limit_restarts(self):
        key = self.PREFIX + "/leader"
        # EG_REPL_MAX_UPSTREAMS + 1 primaries, none of them up: the node
        # follows each one etcd names in turn.
        # Distinct: two draws of free_port can give the same port, and a
        # repeated address is no new entry of the table.
        ports = set()
        while len(ports) < 17:
            ports.add(free_port())
        addrs = ["127.0.0.1:%d" % p for p in sorted(ports)]
        # On a lease, as engramd puts it (a leader key on none is refused).
        lease = self.etcd.grant(120)
        self.put_fake_leader(key, "fake-0", addrs[0], lease)
        b = self.node("node-b").start()
        listens = None
        for i, addr in enumerate(addrs):
            if i == len(addrs) - 1:
                listens = b.listen_count()
            self.put_fake_leader(key, "fake-%d" % i, addr, lease)
            self.wait_until(lambda: status(b).primary == addr, ELECT_TIMEOUT,
                            "node-b follows fake-%d" % i, [b])
        # Past the table's limit it restarted (with an empty table) to follow.
        self.assertGreater(b.listen_count(), listens)


class CoordinatorFlagsTest(ReplicationCase):
    """What engramd refuses at start with --coordinator (no etcd needed)."""

    def run_engramd(self, *args):
        tmp = tempfile.mkdtemp(prefix="engram-e2e-coord-flags-")
        self.addCleanup(shutil.rmtree, tmp, True)
        p = subprocess.run([ENGRAMD, "--listen", "127.0.0.1:0", "--data-dir",
                            os.path.join(tmp, "data")] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env(),
                           timeout=30)
        return p.returncode, p.stdout.decode(errors="replace"), tmp

    def test_bad_url_fails_at_start(self):
        rc, out, _ = self.run_engramd("--coordinator", "etcd://127.0.0.1:2379")
        self.assertEqual(rc, 2, out)
        self.assertIn("--coordinator", out)
        self.assertIn("no /PREFIX", out)

    def test_no_keyring_is_made(self):
        rc, out, tmp = self.run_engramd("--coordinator", "etcd://127.0.0.1:1/engram")
        self.assertEqual(rc, 1, out)
        self.assertIn("--coordinator", out)
        self.assertIn("refusing to make a fresh key", out)
        self.assertFalse(os.path.exists(os.path.join(tmp, "data", "keyring")))


if __name__ == "__main__":
    import unittest
    unittest.main()
