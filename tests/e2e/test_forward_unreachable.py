"""A write forwarded by a replica whose primary cannot be reached answers
in the house form: UNAVAILABLE "the primary cannot be reached; ...",
reason UNAVAILABLE with RetryInfo, never gRPC core's text with the
primary's internal address; the replica logs core's text at WARN."""
import os
import shutil
import tempfile

import grpc

from harness import KEEP, E2ETestCase, M, Server, free_port, make_keyring, uid
from test_rich_errors import RichTestCase

AGENT, REPL = "agent-token-fwd", "replica-token-fwd"
TOKENS = [("acme", "agent", AGENT), ("acme", "replica", REPL)]
HOUSE = "the primary cannot be reached; the write was not acknowledged; retry"


class ForwardUnreachableTest(RichTestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="engram-e2e-fwd-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, self.tmp, True)
        keyring = make_keyring(os.path.join(self.tmp, "keyring"))
        self.port = free_port()  # nobody listens here: the primary is down
        self.replica = self.start_server("--role", "replica", "--primary",
                                         "127.0.0.1:%d" % self.port, "--replica-token", REPL,
                                         "--replica-id", "fwd-r1", tokens=TOKENS,
                                         keyring=keyring)

    def test_unreachable_primary_answers_in_the_house_form(self):
        c = self.replica.client(AGENT)
        for name, call in (("CreateSession", lambda: c.create(uid("u"))),
                           ("AppendMessages", lambda: c.append(uid("s"), M("x")))):
            with self.subTest(method=name):
                r = self.failed(grpc.StatusCode.UNAVAILABLE, call)
                self.assertEqual(r["status"].message, HOUSE)
                self.assertEqual(r["info"].reason, "UNAVAILABLE")
                self.assertIsNotNone(r["retry"], r["order"])
                self.assertNotIn(str(self.port), r["status"].message)
                # gRPC core's text, with the address, is in the replica's log.
                self.wait_until(
                    lambda: any("forwarding a /engram.v1.SessionService/%s write" % name in l
                                and "WARN" in l and str(self.port) in l
                                for l in self.replica.log_text().splitlines()),
                    5, "the WARN line of the failed forward", nodes=(self.replica,))


if __name__ == "__main__":
    import unittest
    unittest.main()
