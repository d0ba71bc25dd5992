"""sessions.fork_session and Session.fork against a real engramd: the copy,
a retry with the same new_session_id, errors as the SDK's exceptions, and
when the SDK may retry a fork."""
import engram
from engram import _core
from engram.v1 import session_pb2

from _support import SdkTestCase, uid


class ForkTest(SdkTestCase):
    def test_fork_session_copies_through_seq(self):
        c = self.client()
        s = c.session(c.sessions.create_session(session={"user_id": uid("u")}).session_id)
        s.append(*[{"role": "ROLE_USER", "content": "m%d" % i} for i in range(1, 4)])
        s.update_summary("first two", 2)
        f = c.sessions.fork_session(session_id=s.session_id, through_seq=2)
        self.assertEqual((f.forked_from_session_id, f.forked_through_seq, f.message_count),
                         (s.session_id, 2, 2))
        self.assertEqual(f.summary, "first two")
        self.assertEqual([m.content for m in c.session(f.session_id).messages()], ["m1", "m2"])
        self.assertEqual(s.get().message_count, 3)

    def test_session_fork_with_a_new_id_and_its_retry(self):
        c = self.client()
        s = c.session(c.sessions.create_session(session={"user_id": uid("u")}).session_id)
        s.append({"role": "ROLE_USER", "content": "one"}, {"role": "ROLE_ASSISTANT", "content": "two"})
        new_id = uid("fork")
        f = s.fork(1, new_session_id=new_id)
        self.assertEqual((f.session_id, f.message_count), (new_id, 1))
        self.assertEqual(s.fork(1, new_session_id=new_id), c.sessions.get_session(session_id=new_id))
        with self.assertRaises(engram.AlreadyExistsError):
            s.fork(2, new_session_id=new_id)
        with self.assertRaises(engram.InvalidArgumentError) as e:
            s.fork(3)
        self.assertIn("through_seq", str(e.exception))
        with self.assertRaises(engram.NotFoundError):
            c.sessions.fork_session(session_id=uid("nosuch"), through_seq=1)

    def test_retried_only_with_a_new_session_id(self):
        kind = _core.fork_session_kind
        self.assertEqual(kind(session_pb2.ForkSessionRequest(session_id="s", through_seq=1)),
                         _core.Kind.WRITE)
        self.assertEqual(kind(session_pb2.ForkSessionRequest(session_id="s", through_seq=1,
                                                             new_session_id="f")),
                         _core.Kind.SAFE_WRITE)
