"""A write forwarded by a replica whose primary cannot be reached answers
in the house form: UNAVAILABLE "the primary cannot be reached; ...",
reason UNAVAILABLE with RetryInfo, never gRPC core's text with the
primary's internal address; the replica logs core's text at WARN.

A primary that answers, but without engram-request-id (an engramd older
than the id, or its gRPC core refusing a message), is not "unreachable":
its code and message pass through, with details of the replica's own."""
import os
import re
import shutil
import tempfile
import time
from concurrent import futures

import grpc

from harness import KEEP, E2ETestCase, M, Server, free_port, make_keyring, uid
from google.rpc import error_details_pb2, status_pb2  # noqa: E402  (ENGRAM_PY_GEN)
from test_rich_errors import RichTestCase

AGENT, REPL = "agent-token-fwd", "replica-token-fwd"
TOKENS = [("acme", "agent", AGENT), ("acme", "replica", REPL)]
# Not "was not applied": the connection may have broken after the primary
# committed the write.
HOUSE = ("the primary cannot be reached; the write may or may not have been applied there; "
         "only an idempotent retry is safe (AppendMessages with client_message_id)")
NO_SESSION = "session_id: no session 'x'"
BURST = 20  # failed forwards at once: far more than one a second
TOO_LARGE = "Received message larger than max (5000000 vs. 4194304)"


class OldPrimary(grpc.GenericRpcHandler):
    """A stand-in primary that answers every call with an error and no
    engram-request-id: NOT_FOUND (with details of its own, whose id the
    replica must not relay) for AppendMessages, RESOURCE_EXHAUSTED as gRPC
    core words a size refusal for the rest."""

    def service(self, details):
        append = details.method.endswith("/AppendMessages")

        def handle(req, ctx):
            if append:
                info = error_details_pb2.ErrorInfo(reason="OLD_REASON", domain="old")
                st = status_pb2.Status(code=grpc.StatusCode.NOT_FOUND.value[0],
                                       message=NO_SESSION)
                st.details.add().Pack(info)
                ctx.set_trailing_metadata((("grpc-status-details-bin", st.SerializeToString()),))
                ctx.abort(grpc.StatusCode.NOT_FOUND, NO_SESSION)
            ctx.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_LARGE)
        return grpc.unary_unary_rpc_method_handler(handle)


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
        # gRPC core's text, with the address, is in the replica's log (the
        # first failure's: the next, within the second, is held back).
        self.wait_until(
            lambda: any("forwarding a /engram.v1.SessionService/CreateSession write" in l
                        and "WARN" in l and str(self.port) in l
                        for l in self.replica.log_text().splitlines()),
            5, "the WARN line of the failed forward", nodes=(self.replica,))

    def test_the_warn_lines_of_an_outage_are_rate_limited(self):
        # At most one WARN line a second, the next one counting those held
        # back: every failed forward is in the log, once, with no flood.
        c = self.replica.client(AGENT)

        def lines():
            return [l for l in self.replica.log_text().splitlines()
                    if "forwarding a /engram.v1.SessionService/" in l and "WARN" in l]

        def logged():
            held = [re.search(r"\((\d+) more failed forwards? not logged\)", l) for l in lines()]
            return sum(1 + (int(h.group(1)) if h else 0) for h in held)

        def fail():
            self.assertStatus(grpc.StatusCode.UNAVAILABLE, c.append, uid("s"), M("x"))
        for _ in range(BURST):
            fail()
        self.assertLess(len(lines()), BURST)
        # The line goes before the reply: once a failure's line says how
        # many were held back, the log accounts for every one.
        sent, until = BURST, time.monotonic() + 10
        while logged() < sent:
            self.assertLess(time.monotonic(), until, "no line counting the held-back ones")
            time.sleep(0.05)  # paces the failures; asserts nothing
            fail()
            sent += 1
        self.assertEqual(logged(), sent)
        self.assertLess(len(lines()), sent)


class ForwardOldPrimaryTest(RichTestCase):

    def test_errors_without_a_request_id_pass_through(self):
        tmp = tempfile.mkdtemp(prefix="engram-e2e-fwd-old-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, tmp, True)
        keyring = make_keyring(os.path.join(tmp, "keyring"))
        port = free_port()
        old = grpc.server(futures.ThreadPoolExecutor(2))
        old.add_generic_rpc_handlers((OldPrimary(),))
        old.add_insecure_port("127.0.0.1:%d" % port)
        old.start()
        self.addCleanup(old.stop, None)
        replica = self.start_server("--role", "replica", "--primary", "127.0.0.1:%d" % port,
                                    "--replica-token", REPL, "--replica-id", "fwd-old-r1",
                                    tokens=TOKENS, keyring=keyring)
        c = replica.client(AGENT)
        r = self.failed(grpc.StatusCode.NOT_FOUND, c.append, uid("s"), M("x"))
        self.assertEqual(r["status"].message, NO_SESSION)
        # Not the stand-in's details: no id came with them to vouch for them.
        self.assertEqual(r["info"].reason, "NOT_FOUND")
        self.assertIsNone(r["retry"], r["order"])
        r = self.failed(grpc.StatusCode.RESOURCE_EXHAUSTED, c.create, uid("u"))
        self.assertEqual(r["status"].message, TOO_LARGE)
        self.assertIsNone(r["retry"], r["order"])


if __name__ == "__main__":
    import unittest
    unittest.main()
