"""--coordinator smoke test with a real single etcd (started here, ended by
PID): two engramd elect a primary, the other follows it and forwards
writes to it, and a SIGTERM of the primary hands the lead to the other.
The chaos runs (kill -9 under load, fencing, lag) are in test_failover.py.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import grpc

from harness import ENGRAMD, KEEP, RPC_TIMEOUT, clean_env, free_port, uid
from test_hardening_keys import metrics_port, scrape
from test_replication import (ADMIN_MD, REPL, Cluster, ReplicationCase, admin, agent, apb,
                              newest, status)

ETCD = "/usr/bin/etcd"
ETCD_START_TIMEOUT = 20.0
# Bound on a failover after a clean stop: the leader revokes its lease, so
# the other elects within a few ticks (EG_COORD_TICK_MS) plus a restart of
# its follower as a primary.
ELECT_TIMEOUT = 15.0


class Etcd:
    """One etcd member on loopback ports, in a temp data dir."""

    def __init__(self, tmp):
        self.port, peer = free_port(), free_port()
        self.dir = os.path.join(tmp, "etcd")
        self.log_path = os.path.join(tmp, "etcd.log")
        client, peer_url = "http://127.0.0.1:%d" % self.port, "http://127.0.0.1:%d" % peer
        self.argv = [ETCD, "--name", "e0", "--data-dir", self.dir,
                     "--listen-client-urls", client, "--advertise-client-urls", client,
                     "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                     "--initial-cluster", "e0=" + peer_url]
        self.proc = None

    def start(self):
        if not os.path.isfile(ETCD):
            raise AssertionError("%s not found: install etcd-server (scripts/deps.sh)" % ETCD)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + ETCD_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("etcd exited: %s" % self.log()[-2000:])
            if "ready to serve client requests" in self.log():
                return self
            time.sleep(0.05)
        raise AssertionError("etcd not ready within %ss: %s" % (ETCD_START_TIMEOUT, self.log()[-2000:]))

    def log(self):
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


class CoordinatorTest(ReplicationCase):

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="engram-e2e-coord-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, self.tmp, True)
        self.etcd = Etcd(self.tmp)
        self.addCleanup(self.etcd.stop)  # after the nodes (cleanups run last first)
        self.etcd.start()
        self.url = "etcd://127.0.0.1:%d/engram-test" % self.etcd.port
        self.cluster = Cluster()
        self.addCleanup(self.cluster.close)

    def node(self, name):
        s = self.cluster.primary("--coordinator", self.url, "--replica-id", name,
                                 "--replica-token", REPL, "--lease-ttl-s", "2",
                                 "--metrics-listen", "127.0.0.1:0")
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
