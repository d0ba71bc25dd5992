"""Promote's "is the primary alive" probe, with real processes on loopback.

A replica whose primary was down for a while has a channel to it in
reconnect backoff, where a call fails at once. A primary that is back must
still be found alive: Promote refuses while it answers.
"""
import time

import grpc

from test_replication import (ADMIN_MD, RPC_TIMEOUT, Cluster, ReplicationCase, admin, apb,
                              status)


class PromoteProbeTest(ReplicationCase):

    def test_primary_back_during_reconnect_backoff_blocks_promote(self):
        cluster = Cluster()
        self.addCleanup(cluster.close)
        p = cluster.primary().start()  # a fixed port: it comes back at its address
        r = cluster.replica("r1", p.addr).start()
        self.wait_converged(p, [r])
        p.kill9()
        # The follower's reconnects fail until its channel's backoff grows
        # past a few seconds (1 s, x1.6 per failure).
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            self.assertEqual(status(r).role, "replica")
            time.sleep(0.5)
        p.start()
        with self.assertRaises(grpc.RpcError) as cm:
            admin(r).Promote(apb.PromoteRequest(), timeout=RPC_TIMEOUT, metadata=ADMIN_MD)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION,
                         cm.exception.details())
        self.assertIn(p.addr, cm.exception.details())
        self.assertEqual(status(r).role, "replica")
        self.wait_converged(p, [r])


if __name__ == "__main__":
    import unittest
    unittest.main()
