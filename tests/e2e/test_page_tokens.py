"""Page tokens are sealed and bound to the request they came with: reused
with another filter or order, by another tenant, garbled or truncated they
are refused with INVALID_ARGUMENT naming page_token; a replica (same
keyring) continues a listing the primary began, and the other way round.
Pages are bounded by --max-reply-bytes: a page stops before its encoded
size passes it, checked at the edge."""
import base64
import os
import shutil
import tempfile

from harness import (Client, E2ETestCase, M, PY_GEN, Server, free_port, make_keyring,  # noqa: F401
                     pb, uid)

from engram.v1 import memory_pb2 as mp  # noqa: E402
from engram.v1 import memory_pb2_grpc as mpg  # noqa: E402

ACME, OTHER, REPL = "acme-agent-1", "other-agent-1", "replica-token-1"
TOKENS = [("acme", "agent", ACME), ("other", "agent", OTHER), ("acme", "replica", REPL)]
CONVERGE_TIMEOUT = 60.0
EG_REPLY_RESERVE = 1024  # what the reply budget keeps for the rest of a page


def b64d(tok):
    return base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4))


def b64e(raw):
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def varint_len(n):
    k = 1
    while n >= 0x80:
        n >>= 7
        k += 1
    return k


class PageTokenTest(E2ETestCase):
    """One primary and one replica sharing a keyring; two tenants."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="engram-e2e-tokens-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        keyring = make_keyring(os.path.join(cls.tmp, "keyring"))
        cls.primary = Server(tokens=TOKENS, keyring=keyring, port=free_port())
        cls.addClassCleanup(cls.primary.close)
        cls.primary.start()
        cls.replica = Server("--role", "replica", "--primary", cls.primary.addr,
                             "--replica-token", REPL, "--replica-id", "r1",
                             tokens=TOKENS, keyring=keyring, port=free_port())
        # replicas first: a primary that stops first only makes them retry
        cls.addClassCleanup(cls.replica.close)
        cls.replica.start()
        cls.p = cls.primary.client(ACME)
        cls.r = cls.replica.client(ACME)
        cls.other = cls.primary.client(OTHER)
        cls.user = uid("u")
        cls.sid = cls.p.create(cls.user).session_id
        cls.p.append(cls.sid, *["m%d" % i for i in range(7)])
        for _ in range(4):
            cls.p.create(cls.user)

    def replica_has(self):
        try:
            return len(self.r.list_messages(self.sid, page_size=100).messages) == 7
        except Exception:  # noqa: BLE001 - not there yet
            return False

    def assertBadToken(self, fn, *args, **kw):
        e = self.assertInvalid(fn, *args, field="page_token", **kw)
        self.assertTrue(e.details().startswith("page_token: "), e.details())
        return e

    def test_pages_follow_on_the_same_request(self):
        seqs, tok = [], ""
        while True:
            r = self.p.list_messages(self.sid, page_size=3, page_token=tok)
            seqs += [m.seq for m in r.messages]
            tok = r.next_page_token
            if not tok:
                break
        self.assertEqual(seqs, list(range(1, 8)))
        # opaque: url-safe base64, no position in the clear
        tok = self.p.list_messages(self.sid, page_size=3).next_page_token
        self.assertRegex(tok, r"^[A-Za-z0-9_-]+$")
        self.assertNotIn(b"\x00\x00\x00\x00\x00\x00\x00\x03", b64d(tok))
        # page_size is not bound: another size continues the same listing
        self.assertSeqs(self.p.list_messages(self.sid, page_size=2, page_token=tok).messages, [4, 5])

    def test_other_filter_or_order(self):
        tok = self.p.list_messages(self.sid, page_size=3).next_page_token
        e = self.assertBadToken(self.p.list_messages, self.sid, page_size=3, page_token=tok,
                                newest_first=True)
        self.assertIn("other filters", e.details())
        other = self.p.create(self.user).session_id
        self.assertBadToken(self.p.list_messages, other, page_size=3, page_token=tok)
        stok = self.p.list_sessions(self.user, page_size=2).next_page_token
        self.assertTrue(stok)
        self.assertBadToken(self.p.list_sessions, uid("u"), page_size=2, page_token=stok)
        self.assertBadToken(self.p.call, "ListSessions", pb.ListSessionsRequest(
            user_id=self.user, page_size=2, page_token=stok, agent_id="a"))
        # a token of one listing for another
        self.assertBadToken(self.p.list_messages, self.sid, page_size=3, page_token=stok)

    def test_memories_bound_to_filter_and_order(self):
        mem = mpg.MemoryServiceStub(self.p.channel)
        user = uid("u")
        for i in range(3):
            mem.CreateMemory(mp.CreateMemoryRequest(memory=mp.Memory(
                user_id=user, text="fact %d" % i, type=mp.MEMORY_TYPE_FACT, category="work")),
                timeout=10, metadata=self.p.md)

        def ls(tok, **kw):
            return mem.ListMemories(mp.ListMemoriesRequest(user_id=user, page_size=1,
                                                           page_token=tok, **kw),
                                    timeout=10, metadata=self.p.md)
        tok = ls("").next_page_token
        self.assertEqual(len(ls(tok).memories), 1)
        self.assertBadToken(ls, tok, filter=mp.MemoryFilter(category="work"))
        self.assertBadToken(ls, tok, order_by=mp.MEMORY_ORDER_IMPORTANCE)

    def test_another_tenant(self):
        tok = self.p.list_messages(self.sid, page_size=3).next_page_token
        e = self.assertBadToken(self.other.list_messages, self.sid, page_size=3, page_token=tok)
        self.assertNotIn("other filters", e.details())

    def test_garbled_and_truncated(self):
        tok = self.p.list_messages(self.sid, page_size=3).next_page_token
        raw = b64d(tok)
        for i in (0, 5, 20, len(raw) // 2, len(raw) - 1):  # header, nonce, body, tag
            bad = bytearray(raw)
            bad[i] ^= 0x01
            self.assertBadToken(self.p.list_messages, self.sid, page_size=3, page_token=b64e(bad))
        for cut in (1, len(tok) // 2, len(tok) - 1):
            self.assertBadToken(self.p.list_messages, self.sid, page_size=3, page_token=tok[:cut])
        self.assertBadToken(self.p.list_messages, self.sid, page_size=3, page_token=tok + "A")
        self.assertBadToken(self.p.list_messages, self.sid, page_size=3, page_token="zz")
        self.assertBadToken(self.p.list_messages, self.sid, page_size=3, page_token="x" * 5000)

    def test_token_from_the_other_node(self):
        self.wait_until(self.replica_has, CONVERGE_TIMEOUT, "the replica holds the messages",
                        nodes=(self.primary, self.replica))
        tok = self.p.list_messages(self.sid, page_size=3).next_page_token
        self.assertSeqs(self.r.list_messages(self.sid, page_size=3, page_token=tok).messages,
                        [4, 5, 6])
        tok = self.r.list_messages(self.sid, page_size=5).next_page_token
        self.assertSeqs(self.p.list_messages(self.sid, page_size=5, page_token=tok).messages, [6, 7])


class ByteBoundEdgeTest(E2ETestCase):
    """A page holds what fits --max-reply-bytes less the reserve: at the
    exact size of ten messages, ten; one byte less, nine."""
    CONTENT = 110000  # ten of them pass the flag's 1 MiB minimum
    ARGS = ("--max-content-bytes", "200000", "--max-metadata-bytes", "0")

    def test_edge(self):
        tmp = tempfile.mkdtemp(prefix="engram-e2e-bytes-")
        self.addCleanup(shutil.rmtree, tmp, True)
        srv = Server(*self.ARGS, data_dir=os.path.join(tmp, "data"))
        self.addCleanup(srv.close)
        srv.start()
        c = srv.client()
        sid = c.create(uid("u")).session_id
        for i in range(12):
            c.append(sid, M(("%03d" % i) + "x" * (self.CONTENT - 3)))
        msgs = c.all_messages(sid, page_size=20)
        items = [1 + varint_len(m.ByteSize()) + m.ByteSize() for m in msgs]
        ten = EG_REPLY_RESERVE + sum(items[:10])
        self.assertGreaterEqual(ten, 1048576)
        for limit, want in ((ten, 10), (ten - 1, 9)):
            srv.stop()
            srv.extra = list(self.ARGS) + ["--max-reply-bytes", str(limit)]
            srv.start()
            c = srv.client()
            r = c.list_messages(sid, page_size=20)
            self.assertEqual(len(r.messages), want, "--max-reply-bytes %d" % limit)
            self.assertLessEqual(r.ByteSize(), limit)
            self.assertSeqs(c.list_messages(sid, page_size=20,
                                            page_token=r.next_page_token).messages[:1], [want + 1])
