"""Read-your-writes through a replica, and retries: UNAVAILABLE from a
replica that follows nobody, and from a server restarted within the retry
window."""
import os
import shutil
import tempfile

import engram

from _support import AGENT, KEEP, REPL, TOKENS, E2ETestCase, Server, free_port, \
    make_keyring, uid

MAX_LSN_WAIT_MS = 3000


def replica_of(primary_addr, keyring, name):
    return Server("--role", "replica", "--primary", primary_addr, "--replica-token", REPL,
                  "--replica-id", name, "--max-lsn-wait-ms", str(MAX_LSN_WAIT_MS),
                  tokens=TOKENS, keyring=keyring, port=free_port())


class ClusterCase(E2ETestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="engram-sdk-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, self.tmp, True)
        self.keyring = make_keyring(os.path.join(self.tmp, "keyring"))

    def start(self, server):
        self.addCleanup(server.close)
        return server.start()

    def client(self, addr, **kw):
        c = engram.Engram(addr, token=AGENT, **kw)
        self.addCleanup(c.close)
        return c


class ReadYourWritesTest(ClusterCase):
    def test_writes_forwarded_by_the_replica_are_read_on_it(self):
        p = self.start(Server(tokens=TOKENS, keyring=self.keyring, port=free_port()))
        r = self.start(replica_of(p.addr, self.keyring, "r1"))
        c = self.client(r.addr)
        for _ in range(20):  # each write forwarded to the primary, each read on r
            s = c.session(c.sessions.create_session(session={"user_id": uid("u")}).session_id)
            lsn = c.lsn
            self.assertEqual(s.get().session_id, s.session_id)
            s.append({"role": "ROLE_USER", "content": "hi"})
            self.assertGreater(c.lsn, lsn)
            self.assertEqual([m.content for m in s.context().messages], ["hi"])

    def test_session_consistency_keeps_an_lsn_per_session(self):
        p = self.start(Server(tokens=TOKENS, keyring=self.keyring, port=free_port()))
        r = self.start(replica_of(p.addr, self.keyring, "r1"))
        c = self.client(r.addr, consistency="session")
        user = uid("u")
        a = c.session(c.sessions.create_session(session={"user_id": user}).session_id)
        b = c.session(c.sessions.create_session(session={"user_id": user}).session_id)
        a.append({"role": "ROLE_USER", "content": "to a"})
        self.assertGreater(a.lsn, 0)
        self.assertEqual(b.lsn, 0)  # b's reads do not wait for a's writes
        self.assertEqual(c.lsn, a.lsn)  # the client's reads do
        b.append({"role": "ROLE_USER", "content": "to b"})
        self.assertGreater(b.lsn, a.lsn)
        self.assertEqual([m.content for m in a.messages()], ["to a"])
        self.assertEqual([m.content for m in b.messages()], ["to b"])


class RetryTest(ClusterCase):
    def test_replica_following_nobody(self):
        """Its forwarded writes fail UNAVAILABLE: an append (client_message_id
        filled in by the SDK) is retried, a CreateMemory is not."""
        r = self.start(replica_of("127.0.0.1:%d" % free_port(), self.keyring, "lonely"))
        retries = []
        c = self.client(r.addr, retries=2, backoff=(0.01, 0.05),
                        on_retry=lambda e, n, d: retries.append((e.code.name, n)))
        msgs = [engram.v1.session_pb2.Message(role=1, content="x")]
        req = engram.v1.session_pb2.AppendMessagesRequest(session_id="s1", messages=msgs)
        with self.assertRaises(engram.UnavailableError):
            c.messages.append_messages(req)
        self.assertEqual(retries, [("UNAVAILABLE", 1), ("UNAVAILABLE", 2)])
        self.assertEqual(req.messages[0].client_message_id, "")  # the caller's, untouched
        del retries[:]
        with self.assertRaises(engram.UnavailableError):
            c.memories.create_memory(memory={"user_id": "u", "type": "MEMORY_TYPE_FACT",
                                             "text": "t"})
        self.assertEqual(retries, [])
        # A CreateSession is retried only with its session_id given.
        with self.assertRaises(engram.UnavailableError):
            c.sessions.create_session(session={"user_id": "u"})
        self.assertEqual(retries, [])
        with self.assertRaises(engram.UnavailableError):
            c.sessions.create_session(session={"user_id": "u", "session_id": uid("s")})
        self.assertEqual(len(retries), 2)

    def test_server_restarted_within_the_retry_window(self):
        srv = self.start(Server(tokens=TOKENS, keyring=self.keyring, port=free_port()))
        restarts = []

        def restart_on_first_retry(err, attempt, delay):
            restarts.append(err.code.name)
            if srv.proc is None:
                srv.start()

        c = self.client(srv.addr, retries=10, backoff=(0.05, 1.0),
                        on_retry=restart_on_first_retry)
        s = c.session(c.sessions.create_session(session={"user_id": uid("u")}).session_id)
        srv.stop()
        self.assertEqual(s.get().session_id, s.session_id)  # a read, retried
        self.assertGreaterEqual(len(restarts), 1)
        self.assertEqual(set(restarts), {"UNAVAILABLE"})
        srv.stop()
        del restarts[:]
        r = s.append({"role": "ROLE_USER", "content": "once"})  # a safe write, retried
        self.assertGreaterEqual(len(restarts), 1)
        self.assertEqual(r.messages[0].seq, 1)
        self.assertEqual([m.content for m in s.messages()], ["once"])

    def test_retries_cut_by_the_deadline_carry_the_last_server_error(self):
        """A node wiped (or restored from an older backup) at the same
        address never reaches the client's LSN: the reads end with
        DEADLINE_EXCEEDED (what a caller catches for "too slow") carrying
        the server's UNAVAILABLE "engram-min-lsn ... not applied" (which
        says why), and reset_lsn() lets the client go on."""
        port = free_port()
        args = ("--max-lsn-wait-ms", "800")
        old = self.start(Server(*args, tokens=TOKENS, keyring=self.keyring, port=port))
        # Attempt 1 waits 0.8 s on the server, RetryInfo asks 1 s more,
        # attempt 2 is cut by the 2.2 s deadline.
        c = self.client(old.addr, deadline=2.2, retries=10, backoff=(0.01, 0.02))
        sid = c.sessions.create_session(session={"user_id": uid("u")}).session_id
        self.assertGreater(c.lsn, 0)
        old.stop()
        self.start(Server(*args, tokens=TOKENS, keyring=self.keyring, port=port))
        with self.assertRaises(engram.DeadlineExceededError) as cm:
            c.sessions.get_session(session_id=sid)
        last = cm.exception.last_error
        self.assertIsInstance(last, engram.UnavailableError)
        self.assertIn("not applied", last.message)
        self.assertIs(cm.exception.__cause__, last)
        self.assertIn("not applied", str(cm.exception))
        self.assertIsNone(cm.exception.retry_delay)  # no invitation to retry again
        c.reset_lsn()
        self.assertEqual(c.lsn, 0)
        with self.assertRaises(engram.NotFoundError):  # the wiped node answers at once
            c.sessions.get_session(session_id=sid)

