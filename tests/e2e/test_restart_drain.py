"""engramd restarting itself (a deposed primary rejoining as a replica, a
replica installing a snapshot) versus an operator's SIGTERM.

The restart is a drain followed by a re-exec. An operator's SIGTERM that
arrives during that drain means "stop": engramd finishes the drain and
exits 0 instead of re-executing (it used to take that SIGTERM for a second
one and exit 1 at once, without draining). The restart's own signal sent by
anyone else is logged and ignored.

The drain is held open on purpose by a write whose LMDB commit sleeps (the
fault shim's delay_ms, engramd-fault): the drain waits for that call, so
the SIGTERM lands inside it whatever the machine's speed.
"""
import os
import signal
import sys
import threading
import time
import unittest

import grpc

from harness import REPO, E2ETestCase, M, pb
from test_failover import RPC_TIMEOUT, FailoverCase
from test_shutdown_busy import ENGRAMD_FAULT

sys.path.insert(0, os.path.join(REPO, "deploy", "local"))
from cluster import ETCD  # noqa: E402

# The commit's sleep: the drain lasts at least this long (it waits up to
# --shutdown-grace-ms for the write, 20 s in a LocalCluster).
DELAY_MS = 8000
EXIT_TIMEOUT = DELAY_MS / 1000 + 30
LOG_TIMEOUT = 20.0     # a log line engramd writes on an event


def logged(srv, needle):
    return lambda: needle in srv.log_text()


@unittest.skipUnless(os.path.isfile(ENGRAMD_FAULT), "engramd-fault not built")
@unittest.skipUnless(os.access(ETCD, os.X_OK), "no etcd (apt-get install etcd-server)")
class RestartDrainTest(FailoverCase):

    def test_sigterm_during_a_deposed_primarys_restart_stops_it(self):
        c = self.make_cluster(n_etcd=1, n_engram=1, engramd=ENGRAMD_FAULT,
                              settings={"--sync-replicas": 0})
        ctl = os.path.join(c.base_dir, "fault.ctl")
        c.env["ENGRAM_FAULT_CTL"] = ctl
        c.up()
        node = c.nodes[0]
        conn = self.conns[0]
        sid = conn.session.CreateSession(pb.CreateSessionRequest(
            session=pb.Session(user_id="u1")), timeout=RPC_TIMEOUT,
            metadata=conn.agent_md).session_id
        # The next commit sleeps: only the write below commits (the
        # coordinator writes to etcd, not to the store).
        with open(ctl, "w") as f:
            f.write("point=commit,nth=1,count=1,delay_ms=%d,gen=1" % DELAY_MS)
        node.signal(signal.SIGUSR1)
        self.wait_until(logged(node, "engram-fault: armed gen=1"), LOG_TIMEOUT, "the arming")
        codes = []

        def write():
            try:
                conn.session.AppendMessages(pb.AppendMessagesRequest(
                    session_id=sid, messages=[M("held")]), timeout=EXIT_TIMEOUT,
                    metadata=conn.agent_md)
                codes.append((grpc.StatusCode.OK, ""))
            except grpc.RpcError as e:
                codes.append((e.code(), e.details()))
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        self.wait_until(logged(node, "engram-fault: hit point=commit"), LOG_TIMEOUT,
                        "the write held")
        # Its leader key gone, the primary is deposed and restarts.
        t_del = time.monotonic()
        c.etcdctl("del", c.key("leader"))
        self.wait_until(logged(node, "engramd: restarting:"), LOG_TIMEOUT, "the restart")
        self.assertLess(time.monotonic() - t_del, DELAY_MS / 1000,
                        "the restart began after the held write ended: nothing was tested")
        node.signal(signal.SIGTERM)
        rc = node.popen.wait(timeout=EXIT_TIMEOUT)
        node.popen = node.pid = None
        writer.join(RPC_TIMEOUT)
        log = node.log_text()
        self.assertEqual(rc, 0, "exit status %s; log:\n%s" % (rc, log[-3000:]))
        self.assertIn("stopping after the drain instead of restarting", log)
        self.assertNotIn("exiting without draining", log)
        self.assertEqual(node.listen_count(), 1, "re-executed after the SIGTERM")
        # The drain waited for the held write: engramd answered it (OK, or
        # the fenced primary's "committed here ... retry"), it was not cut off.
        self.assertEqual(len(codes), 1)
        code, details = codes[0]
        self.assertTrue(code == grpc.StatusCode.OK or "is committed on this node" in details,
                        codes)


class RestartSignalTest(E2ETestCase):

    def test_the_restart_signal_from_outside_is_ignored(self):
        srv = self.start_server()
        os.kill(srv.pid, signal.SIGUSR2)
        self.wait_until(logged(srv, "ignored: engramd sends it itself to restart"), LOG_TIMEOUT,
                        "the log line", [srv])
        self.assertTrue(srv.client().create("u1").session_id)
        self.assertEqual(srv.listen_count(), 1)


if __name__ == "__main__":
    unittest.main()
