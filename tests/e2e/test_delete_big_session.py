"""DeleteSession of a session above the inline limit (64 messages,
EG_SESSION_DELETE_INLINE_MAX in storage/storage.h) through the real engramd:
the call retires it (gone for GetSession, ListSessions, ListMessages and
SearchMessages at once, its id refused to a new session while its messages
remain) and the sweeper purges its messages, postings and retry records in
bounded steps, leaving no key of it (LMDB read with mdb_dump); a session
at the limit still goes whole in the call."""
import shutil

import grpc

from harness import E2ETestCase, M, uid
from test_message_search import hits, search, word
from test_retention import keys_naming

INLINE_MAX = 64  # storage.h EG_SESSION_DELETE_INLINE_MAX
WORDS = 40       # distinct words, so postings, per message
WAIT = 120.0     # bound on the purge (ASan is slow)


class DeleteBigSessionTest(E2ETestCase):
    def setUp(self):
        if not shutil.which("mdb_dump"):
            self.fail("mdb_dump (lmdb-utils) not installed")
        # --sweep-batch 10 records: a step purges 9 messages (one record
        # goes to looking at the tenant), their 1 + WORDS postings + retry
        # record keys not counted against it, so the purge of INLINE_MAX + 1
        # messages spans 8 steps, at least 1.4 s.
        self.srv = self.start_server("--sweep-interval-ms", "200", "--sweep-batch", "10")
        self.c = self.srv.client()

    def session(self, user, n, sid):
        """Session sid of n indexed messages, each with a client id; returns
        a word of its last message."""
        self.c.create(user, session_id=sid)
        last = None
        for i in range(n):
            words = [word() for _ in range(WORDS)]
            last = words[0]
            self.c.append(sid, M(" ".join(words), client_message_id="c%d" % i))
        self.assertEqual(hits(search(self.c, user_id=user, query=last)), [(sid, n)])
        return last

    def keys(self, sid):
        """{db: count} of the data-DB keys naming sid."""
        out = {}
        for db, _ in keys_naming(self.srv.data_dir, sid):
            out[db] = out.get(db, 0) + 1
        return out

    def test_big_session_retired_then_purged(self):
        user, sid = uid("u"), uid("big")
        n = INLINE_MAX + 1
        w = self.session(user, n, sid)
        before = self.keys(sid)
        self.assertEqual((before["messages"], before["idempotency"], before["message_terms"]),
                         (n, n, n * WORDS))
        r = self.c.delete(sid)
        self.assertEqual(r.deleted_messages, n)
        # Gone at once, for every read.
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.c.get, sid)
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.c.list_messages, sid)
        self.assertEqual(len(self.c.list_sessions(user).sessions), 0)
        self.assertEqual(hits(search(self.c, user_id=user, query=w)), [])
        self.assertEqual(hits(search(self.c, query=w)), [])
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.c.delete, sid)
        # Its messages are still there (9 a sweep step): the id is refused.
        self.assertTrue(self.keys(sid).get("messages"))
        self.assertStatus(grpc.StatusCode.UNAVAILABLE, self.c.create, user, session_id=sid,
                          field="session.session_id")
        self.wait_until(lambda: self.keys(sid) == {}, WAIT, "the purge of %s" % sid,
                        nodes=(self.srv,))
        # Purged: the id is free again, and the new session starts empty.
        self.c.create(user, session_id=sid)
        self.assertEqual(self.c.all_messages(sid), [])
        self.assertEqual(self.c.append(sid, M("again", client_message_id="c0")).messages[0].seq, 1)

    def test_session_at_the_limit_goes_inline(self):
        user, sid = uid("u"), uid("small")
        w = self.session(user, INLINE_MAX, sid)
        keep = uid("keep")
        self.c.create(user, session_id=keep)
        self.c.append(keep, M("kept %s" % word()))
        r = self.c.delete(sid)
        self.assertEqual(r.deleted_messages, INLINE_MAX)
        # Every key went in the call: nothing is left for the sweeper.
        self.assertEqual(self.keys(sid), {})
        self.assertEqual(hits(search(self.c, user_id=user, query=w)), [])
        self.c.create(user, session_id=sid)
        self.assertEqual([s.session_id for s in self.c.list_sessions(user).sessions].count(keep), 1)


if __name__ == "__main__":
    import unittest
    unittest.main()
