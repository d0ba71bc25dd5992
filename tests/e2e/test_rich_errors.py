"""Rich errors: every non-OK reply carries google.rpc.Status in the trailing
metadata grpc-status-details-bin (ErrorInfo, BadRequest for a bad field,
RetryInfo where a retry helps, RequestInfo) and engram-request-id; a write
forwarded by a replica passes the primary's through unchanged; an INTERNAL
or DATA_LOSS reply is logged with its method and request id.

  RichErrorsTest      a primary and its replica (shared tokens and keyring),
                      plus a replica whose primary is not there
  DataLossLogTest     a flipped ciphertext byte: DATA_LOSS, logged
"""
import os
import re
import shutil
import tempfile

import grpc

from harness import KEEP, E2ETestCase, M, Server, free_port, make_keyring, uid
from google.rpc import error_details_pb2, status_pb2  # noqa: E402  (ENGRAM_PY_GEN)
import test_at_rest as at_rest

AGENT, REPL = "agent-token-rich", "replica-token-rich"
TOKENS = [("acme", "agent", AGENT), ("acme", "replica", REPL)]
DOMAIN = "engram.v1"
REQUEST_ID_RE = re.compile(r"^[0-9a-f]{1,32}$")


def rich(err):
    """The rich error of a failed call: a dict with status (google.rpc.Status),
    info, bad, retry, request (each detail unpacked, or None, in the order
    they came as `order`) and md_id (engram-request-id)."""
    md = dict(err.trailing_metadata() or ())
    raw = md.get("grpc-status-details-bin")
    if raw is None:
        raise AssertionError("no grpc-status-details-bin in %r" % (md,))
    st = status_pb2.Status.FromString(raw)
    out = {"status": st, "md_id": md.get("engram-request-id"), "order": [],
           "info": None, "bad": None, "retry": None, "request": None}
    kinds = {"ErrorInfo": ("info", error_details_pb2.ErrorInfo),
             "BadRequest": ("bad", error_details_pb2.BadRequest),
             "RetryInfo": ("retry", error_details_pb2.RetryInfo),
             "RequestInfo": ("request", error_details_pb2.RequestInfo)}
    for any_ in st.details:
        name = any_.type_url.rsplit(".", 1)[-1]
        key, cls = kinds[name]
        msg = cls()
        any_.Unpack(msg)
        out[key] = msg
        out["order"].append(name)
    return out


class RichTestCase(E2ETestCase):

    def failed(self, code, fn, *args, **kw):
        """Calls fn; asserts it fails with code and a well-formed rich error
        (the Status's code and message are the call's; ErrorInfo and
        RequestInfo always; the id the same in metadata and details)."""
        e = self.assertStatus(code, fn, *args, **kw)
        r = rich(e)
        self.assertEqual(r["status"].code, code.value[0])
        self.assertEqual(r["status"].message, e.details())
        self.assertIsNotNone(r["info"], r["order"])
        self.assertEqual(r["info"].domain, DOMAIN)
        self.assertIsNotNone(r["request"], r["order"])
        self.assertRegex(r["md_id"], REQUEST_ID_RE)
        self.assertEqual(r["request"].request_id, r["md_id"])
        want = [k for k in ("ErrorInfo", "BadRequest", "RetryInfo", "RequestInfo")
                if k in r["order"]]
        self.assertEqual(r["order"], want, "details in the contract's order")
        return r


class RichErrorsTest(RichTestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="engram-e2e-rich-")
        keyring = make_keyring(os.path.join(cls.tmp, "keyring"))
        cls.primary = Server(tokens=TOKENS, keyring=keyring, port=free_port())
        cls.addClassCleanup(cls.primary.close)
        cls.primary.start()
        cls.replica = Server("--role", "replica", "--primary", cls.primary.addr,
                             "--replica-token", REPL, "--replica-id", "rich-r1",
                             tokens=TOKENS, keyring=keyring)
        cls.addClassCleanup(cls.replica.close)
        cls.replica.start()
        # A replica of a port nobody listens on: its forwarded writes fail.
        cls.orphan = Server("--role", "replica", "--primary", "127.0.0.1:%d" % free_port(),
                            "--replica-token", REPL, "--replica-id", "rich-r2",
                            tokens=TOKENS, keyring=keyring)
        cls.addClassCleanup(cls.orphan.close)
        cls.orphan.start()
        if not KEEP:
            cls.addClassCleanup(shutil.rmtree, cls.tmp, True)

    def test_bad_field_names_it_in_bad_request(self):
        c = self.primary.client(AGENT)
        r = self.failed(grpc.StatusCode.INVALID_ARGUMENT, c.create, "user 1")
        self.assertEqual(r["info"].reason, "INVALID_ARGUMENT")
        self.assertIsNotNone(r["bad"], r["order"])
        self.assertEqual([v.field for v in r["bad"].field_violations], ["session.user_id"])
        self.assertTrue(r["status"].message.startswith("session.user_id: "))
        self.assertEqual(r["bad"].field_violations[0].description,
                         r["status"].message[len("session.user_id: "):])
        self.assertIsNone(r["retry"], "no RetryInfo for a bad argument")

    def test_not_found_reason(self):
        c = self.primary.client(AGENT)
        r = self.failed(grpc.StatusCode.NOT_FOUND, c.get, uid("missing"))
        self.assertEqual(r["info"].reason, "NOT_FOUND")
        self.assertIsNone(r["bad"])
        self.assertIsNone(r["retry"])

    def test_unauthenticated_reason(self):
        c = self.primary.client("not-a-token")
        r = self.failed(grpc.StatusCode.UNAUTHENTICATED, c.get, uid("s"))
        self.assertEqual(r["info"].reason, "UNAUTHENTICATED")

    def test_request_ids_differ(self):
        c = self.primary.client(AGENT)
        a = self.failed(grpc.StatusCode.NOT_FOUND, c.get, uid("missing"))["md_id"]
        b = self.failed(grpc.StatusCode.NOT_FOUND, c.get, uid("missing"))["md_id"]
        self.assertNotEqual(a, b)

    def test_forward_to_dead_primary_is_unavailable_with_retry(self):
        c = self.orphan.client(AGENT)
        r = self.failed(grpc.StatusCode.UNAVAILABLE, c.create, uid("u"))
        self.assertEqual(r["info"].reason, "UNAVAILABLE")
        self.assertIsNotNone(r["retry"], r["order"])
        delay = r["retry"].retry_delay
        self.assertGreater(delay.seconds * 1000 + delay.nanos // 1000000, 0)

    def test_forwarded_write_passes_the_primarys_details_through(self):
        # Each process's request ids start with its own random prefix.
        direct_p = self.failed(grpc.StatusCode.NOT_FOUND,
                               self.primary.client(AGENT).get, uid("missing"))
        direct_r = self.failed(grpc.StatusCode.NOT_FOUND,
                               self.replica.client(AGENT).get, uid("missing"))
        self.assertNotEqual(direct_p["md_id"][:16], direct_r["md_id"][:16])
        fwd = self.failed(grpc.StatusCode.INVALID_ARGUMENT,
                          self.replica.client(AGENT).create, "user 1")
        self.assertEqual(fwd["md_id"][:16], direct_p["md_id"][:16],
                         "the forwarded write's request id is the primary's")
        self.assertEqual([v.field for v in fwd["bad"].field_violations], ["session.user_id"])
        # The primary's error on a forwarded write that is not the caller's
        # fault: the session does not exist there.
        fwd = self.failed(grpc.StatusCode.NOT_FOUND, self.replica.client(AGENT).append,
                          uid("missing"), M("x"))
        self.assertEqual(fwd["info"].reason, "NOT_FOUND")
        self.assertEqual(fwd["md_id"][:16], direct_p["md_id"][:16])


class DataLossLogTest(RichTestCase):

    def setUp(self):
        if not shutil.which("mdb_dump") or not shutil.which("mdb_load"):
            self.fail("mdb_dump/mdb_load (lmdb-utils) not installed")
        self.srv = self.start_server()

    def test_data_loss_reply_is_logged_with_method_and_request_id(self):
        c = self.srv.client()
        victim = c.create(uid("u"), session_id=uid("victim")).session_id
        c.append(victim, M("tamper-target-" + "q" * 3000))
        self.srv.stop()
        header, recs = at_rest.mdb_dump(self.srv.data_dir, "messages")
        mine = [(k, v) for k, v in recs if victim.encode() in k]
        self.assertEqual(len(mine), 1)
        k, v = mine[0]
        at_rest.mdb_put(self.srv.data_dir, "messages", header, [(k, at_rest.flip_middle(v))])
        self.srv.start()
        r = self.failed(grpc.StatusCode.DATA_LOSS, self.srv.client().list_messages, victim)
        self.assertEqual(r["info"].reason, "DATA_CORRUPT")
        self.assertIsNone(r["retry"])
        rid = r["md_id"]
        line = self.wait_until(
            lambda: [ln for ln in self.srv.log_text().splitlines() if rid in ln], 10,
            "the DATA_LOSS log line", nodes=(self.srv,))
        self.assertEqual(len(line), 1, line)
        self.assertIn(" ERROR engramd: ", line[0])
        self.assertIn("method=/engram.v1.SessionService/ListMessages", line[0])
        self.assertIn("request_id=" + rid, line[0])
