"""SessionService.ForkSession against the real server: a new session holding
messages 1..through_seq of another (content, roles, metadata, token counts,
seqs, times and client ids exact), its summary only when that covers no
more, the source unchanged; limits at their edges, a retry with the same
new id, DeleteUser erasing forks, the copies indexed by the fork itself
(found though the source's were appended under --index-messages=false), a
fork read on a replica with engram-min-lsn (the largest one
--max-fork-bytes allows too), and
`engram session fork`."""
import json
import os
import re
import shutil
import subprocess
import tempfile

import grpc

from harness import (ENGRAM_CLI, E2ETestCase, M, Server, ServerTestCase, clean_env, free_port,
                     make_keyring, pb, uid)
from test_message_search import hits, search, word
from engram.v1 import user_pb2 as up  # noqa: E402
from engram.v1 import user_pb2_grpc as upg  # noqa: E402

CAP = 6  # the class server's --max-fork-messages


def fork_req(sid, through, new_id=""):
    return pb.ForkSessionRequest(session_id=sid, through_seq=through, new_session_id=new_id)


def messages_as_copied(msgs):
    """What a fork must hold of each message: everything but session_id."""
    out = []
    for m in msgs:
        c = pb.Message()
        c.CopyFrom(m)
        c.ClearField("session_id")
        out.append(c)
    return out


class ForkTest(ServerTestCase):
    server_args = ("--max-fork-messages", str(CAP))

    def fork(self, sid, through, new_id=""):
        return self.client.call("ForkSession", fork_req(sid, through, new_id))

    def source(self, n, summary_through=0, user=None):
        """A session with n messages of every role, metadata, token counts
        and client ids (and a summary through summary_through)."""
        c = self.client
        s = c.call("CreateSession", pb.CreateSessionRequest(session=pb.Session(
            user_id=user or uid("u"), agent_id="agent-7", metadata={"lang": "fr", "k": "v"},
            ttl_seconds=600)))
        roles = [pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_SYSTEM, pb.ROLE_TOOL]
        c.append(s.session_id, *[
            M("message %d" % i, role=roles[i % 4], metadata={"i": str(i)} if i % 2 else {},
              token_count=10 * i if i % 3 else 0, client_message_id="cm-%d" % i)
            for i in range(1, n + 1)])
        if summary_through:
            c.update_summary(s.session_id, "the first %d" % summary_through, summary_through)
        return c.get(s.session_id)

    def test_copies_messages_metadata_and_stats_exactly_and_leaves_the_source(self):
        src = self.source(5, summary_through=2)
        src_msgs = self.client.all_messages(src.session_id)
        new_id = uid("fork")
        f = self.fork(src.session_id, 4, new_id)
        self.assertEqual(f.session_id, new_id)
        self.assertEqual((f.user_id, f.agent_id, dict(f.metadata), f.ttl_seconds),
                         (src.user_id, src.agent_id, dict(src.metadata), src.ttl_seconds))
        self.assertEqual(f.state, pb.SESSION_STATE_ACTIVE)
        self.assertEqual((f.message_count, f.forked_from_session_id, f.forked_through_seq),
                         (4, src.session_id, 4))
        self.assertEqual((f.summary, f.summary_through_seq), ("the first 2", 2))
        self.assertEqual(self.client.get(new_id), f)
        got = self.client.all_messages(new_id)
        self.assertTrue(all(m.session_id == new_id for m in got))
        self.assertEqual(messages_as_copied(got), messages_as_copied(src_msgs[:4]))
        # Stats are the copied messages', not the source's.
        st = f.stats
        self.assertEqual((st.user_messages, st.assistant_messages, st.system_messages,
                          st.tool_messages), (1, 1, 1, 1))
        self.assertEqual(st.total_tokens, sum(m.token_count for m in src_msgs[:4]))
        self.assertEqual(st.first_message_time, src_msgs[0].create_time)
        self.assertEqual(st.last_message_time, src_msgs[3].create_time)
        self.assertAlmostEqual(st.summary_coverage, 0.5)
        # The metadata index holds the fork too.
        listed = self.client.call("ListSessions", pb.ListSessionsRequest(
            user_id=src.user_id,
            metadata_equals=[pb.ListSessionsRequest.MetadataEquals(key="lang", value="fr")]))
        self.assertEqual({s.session_id for s in listed.sessions}, {src.session_id, new_id})
        # The source is as it was.
        self.assertEqual(self.client.get(src.session_id), src)
        self.assertEqual(self.client.all_messages(src.session_id), src_msgs)

    def test_client_message_ids_are_copied_and_the_fork_goes_on_alone(self):
        src = self.source(3)
        f = self.fork(src.session_id, 2)
        # A retried append of a copied message answers the copy.
        again = self.client.append(f.session_id, M("message 2", client_message_id="cm-2"))
        self.assertEqual([m.seq for m in again.messages], [2])
        self.assertEqual(again.session.message_count, 2)
        # cm-3 was not copied: it is new here, and gets the fork's next seq.
        new = self.client.append(f.session_id, M("a different 3", client_message_id="cm-3"))
        self.assertEqual([m.seq for m in new.messages], [3])
        self.assertEqual(self.client.all_messages(src.session_id)[2].content, "message 3")

    def test_summary_copied_only_when_it_covers_no_more_than_the_fork(self):
        src = self.source(4, summary_through=3)
        at = self.fork(src.session_id, 3)
        self.assertEqual((at.summary, at.summary_through_seq), ("the first 3", 3))
        below = self.fork(src.session_id, 2)
        self.assertEqual((below.summary, below.summary_through_seq), ("", 0))
        self.assertEqual(self.client.context(below.session_id).summary, "")
        self.assertEqual(len(self.client.context(below.session_id).messages), 2)

    def test_fork_of_a_fork(self):
        src = self.source(5, summary_through=1)
        f1 = self.fork(src.session_id, 4)
        f2 = self.fork(f1.session_id, 3)
        self.assertEqual((f2.forked_from_session_id, f2.forked_through_seq), (f1.session_id, 3))
        self.assertEqual((f2.summary, f2.summary_through_seq), ("the first 1", 1))
        self.assertEqual(messages_as_copied(self.client.all_messages(f2.session_id)),
                         messages_as_copied(self.client.all_messages(src.session_id)[:3]))

    def test_through_seq_bounds_at_their_edges_write_nothing(self):
        src = self.source(3)
        for bad in (0, -1, 4):
            new_id = uid("fork")
            e = self.assertInvalid(self.fork, src.session_id, bad, new_id, field="through_seq")
            self.assertTrue(e.details().startswith("through_seq: "), e.details())
            self.assertStatus(grpc.StatusCode.NOT_FOUND, self.client.get, new_id)
        self.assertEqual(self.fork(src.session_id, 3).message_count, 3)

    def test_max_fork_messages_at_its_edge(self):
        src = self.source(CAP + 1)
        new_id = uid("fork")
        e = self.assertInvalid(self.fork, src.session_id, CAP + 1, new_id,
                               field="--max-fork-messages")
        self.assertIn("through_seq", e.details())
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.client.get, new_id)
        self.assertEqual(self.fork(src.session_id, CAP, new_id).message_count, CAP)
        # Checked before the source is read: a missing one is not looked for.
        self.assertInvalid(self.fork, uid("nosuch"), CAP + 1, field="--max-fork-messages")

    def test_missing_source_is_not_found(self):
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.fork, uid("nosuch"), 1,
                          field="session_id")
        self.assertInvalid(self.fork, "", 1, field="session_id")

    def test_retry_with_the_same_new_id_answers_the_fork(self):
        src = self.source(3)
        new_id = uid("fork")
        first = self.fork(src.session_id, 2, new_id)
        self.client.append(new_id, "after the fork")
        again = self.fork(src.session_id, 2, new_id)
        self.assertEqual(again, self.client.get(new_id))
        self.assertEqual((again.create_time, again.message_count),
                         (first.create_time, 3))

    def test_a_taken_new_id_is_already_exists(self):
        src = self.source(3)
        other = self.source(3)
        new_id = uid("fork")
        self.fork(src.session_id, 2, new_id)
        for sid, through, taken in ((src.session_id, 1, new_id),        # another seq
                                    (other.session_id, 2, new_id),      # another source
                                    (src.session_id, 2, other.session_id),  # a plain session
                                    (src.session_id, 2, src.session_id)):   # the source itself
            e = self.assertStatus(grpc.StatusCode.ALREADY_EXISTS, self.fork, sid, through, taken,
                                  field="new_session_id")
            self.assertIn(taken, e.details())
        self.assertEqual(self.client.get(new_id).forked_through_seq, 2)
        self.assertEqual(self.client.get(other.session_id).message_count, 3)

    def test_an_ended_or_expired_source_forks_into_an_active_session(self):
        src = self.source(2)
        self.client.end(src.session_id)
        f = self.fork(src.session_id, 2)
        self.assertEqual(f.state, pb.SESSION_STATE_ACTIVE)
        self.assertEqual(self.client.append(f.session_id, "on").session.message_count, 3)

    def test_delete_user_erases_forks(self):
        user = uid("u")
        src = self.source(3, user=user)
        f1 = self.fork(src.session_id, 2)
        f2 = self.fork(f1.session_id, 1)
        users = upg.UserServiceStub(self.client.channel)
        r = users.DeleteUser(up.DeleteUserRequest(user_id=user), timeout=30)
        self.assertEqual((r.deleted_sessions, r.deleted_messages), (3, 6))
        for sid in (src.session_id, f1.session_id, f2.session_id):
            self.assertStatus(grpc.StatusCode.NOT_FOUND, self.client.get, sid)
        self.assertEqual(len(self.client.list_sessions(user).sessions), 0)

    def test_cli_session_fork(self):
        if not os.path.isfile(ENGRAM_CLI):
            self.fail("engram CLI not found at %s (set ENGRAM_CLI)" % ENGRAM_CLI)
        src = self.source(3, summary_through=1)
        new_id = uid("fork")

        def engram(*args):
            return subprocess.run([ENGRAM_CLI, "--target", self.server.addr] + list(args),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20,
                                  stdin=subprocess.DEVNULL, env=clean_env())

        p = engram("--json", "session", "fork", src.session_id, "--through", "2", "--id", new_id)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = json.loads(p.stdout)
        self.assertEqual((out["sessionId"], out["forkedFromSessionId"], str(out["forkedThroughSeq"])),
                         (new_id, src.session_id, "2"))
        self.assertEqual(self.client.get(new_id).message_count, 2)
        # Without --id the server names it.
        p = engram("--json", "session", "fork", src.session_id, "--through", "1")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.client.get(json.loads(p.stdout)["sessionId"]).message_count, 1)
        # The server's refusal names the field.
        p = engram("session", "fork", src.session_id, "--through", "4")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("through_seq", p.stderr.decode())
        p = engram("session", "fork", src.session_id)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--through", p.stderr.decode())


class ForkIndexTest(E2ETestCase):
    """The fork indexes its copies itself: messages its source holds
    unindexed (appended under --index-messages=false) are found in the fork
    at once, whatever the background reindex has reached."""

    def test_fork_of_messages_appended_unindexed_is_found(self):
        srv = self.start_server("--index-messages=false")
        c = srv.client()
        user, w = uid("u"), word()
        # Ids of one length (keys are length-prefixed) sort filler < fork <
        # source: the reindex (1 record a second below) walks the filler's
        # 100 messages first, so it reaches neither within this test.
        filler, fork_id, src = ("%s-%s" % (p, uid("s")) for p in "abc")
        c.create(user, session_id=filler)
        c.append(filler, *[M("filler %d" % i) for i in range(100)])
        c.create(user, session_id=src)
        c.append(src, M("one %s" % w), M("two"))
        srv.extra = ["--index-messages=true", "--reindex-rate", "1", "--reindex-batch", "1"]
        srv.restart()
        c = srv.client()
        self.assertEqual(hits(search(c, user_id=user, query=w)), [])  # not reindexed yet
        f = c.call("ForkSession", fork_req(src, 2, fork_id))
        self.assertEqual(f.session_id, fork_id)
        self.assertEqual(hits(search(c, user_id=user, query=w)), [(fork_id, 1)])
        self.assertEqual(hits(search(c, query="two", session_ids=[fork_id])), [(fork_id, 2)])


class PrimaryReplicaCase(E2ETestCase):
    """A primary started with PRIMARY_ARGS and a replica of it, for the
    class's tests (p, r: their agent clients)."""

    PRIMARY_ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="engram-e2e-fork-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        keyring = make_keyring(os.path.join(cls.tmp, "keyring"))
        tokens = [("acme", "agent", "agent-1"), ("acme", "replica", "repl-1")]
        cls.primary = Server(*cls.PRIMARY_ARGS, tokens=tokens, keyring=keyring, port=free_port())
        cls.addClassCleanup(cls.primary.close)
        cls.primary.start()
        cls.replica = Server("--role", "replica", "--primary", cls.primary.addr,
                             "--replica-token", "repl-1", "--replica-id", "r1",
                             tokens=tokens, keyring=keyring, port=free_port())
        # replicas first: a primary that stops first only makes them retry
        cls.addClassCleanup(cls.replica.close)
        cls.replica.start()
        cls.p = cls.primary.client("agent-1")
        cls.r = cls.replica.client("agent-1")


class ForkReplicaTest(PrimaryReplicaCase):
    """A fork written on the primary read on a replica with engram-min-lsn;
    the default --max-fork-messages and --max-fork-bytes (the largest fork
    it allows reaches the replica)."""

    def test_fork_read_on_a_replica_with_min_lsn(self):
        sid = self.p.create(uid("u")).session_id
        self.p.append(sid, "one", "two", "three")
        f, lsn = self.p.call_lsn("ForkSession", fork_req(sid, 2))
        self.assertIsNotNone(lsn)
        md = self.r.md + (("engram-min-lsn", lsn),)
        got = self.r.call("GetSession", pb.GetSessionRequest(session_id=f.session_id),
                          metadata=md)
        self.assertEqual(got, f)
        msgs = self.r.call("ListMessages", pb.ListMessagesRequest(session_id=f.session_id),
                           metadata=md).messages
        self.assertEqual([m.content for m in msgs], ["one", "two"])
        self.assertEqual(messages_as_copied(msgs),
                         messages_as_copied(self.p.all_messages(sid)[:2]))

    def test_a_fork_sent_to_the_replica_is_made_on_the_primary(self):
        sid = self.p.create(uid("u")).session_id
        self.p.append(sid, "one")
        f = self.r.call("ForkSession", fork_req(sid, 1))
        self.assertEqual(self.p.get(f.session_id).message_count, 1)

    def test_default_byte_cap_at_its_edge_and_the_largest_fork_replicates(self):
        # 270 messages of 64000 bytes pass the default --max-fork-bytes
        # (16 MiB); the copy stops at the first message past it.
        sid = self.p.create(uid("u")).session_id
        n = 270
        for b in range(0, n, 50):
            self.p.append(sid, *[M("%06d" % i + "x" * 63994, client_message_id="c%d" % i)
                                 for i in range(b + 1, min(b + 50, n) + 1)])
        new_id = uid("fork")
        e = self.assertInvalid(self.p.call, "ForkSession", fork_req(sid, n, new_id),
                               field="--max-fork-bytes")
        m = re.fullmatch(r"through_seq: 270: the messages through seq (\d+) already take (\d+) "
                         r"bytes to copy, more than 16777216 \(--max-fork-bytes\); "
                         r"fork a smaller prefix", e.details())
        self.assertIsNotNone(m, e.details())
        last, took = int(m.group(1)), int(m.group(2))
        self.assertGreater(took, 16777216)
        self.assertLess(took - 64000, 16777216 + 1000)  # one message past the cap
        self.assertLess(last, n)  # stopped at once
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.p.get, new_id)
        # The same prefix less its last message fits, and reaches the
        # replica whole (one log record).
        f, lsn = self.p.call_lsn("ForkSession", fork_req(sid, last - 1, new_id))
        self.assertEqual(f.message_count, last - 1)
        md = self.r.md + (("engram-min-lsn", lsn),)
        got = self.r.call("GetSession", pb.GetSessionRequest(session_id=new_id), metadata=md)
        self.assertEqual(got, f)
        src = self.p.all_messages(sid)[:last - 1]
        self.assertEqual(messages_as_copied(self.r.all_messages(new_id)),
                         messages_as_copied(src))

    def test_default_cap_is_10000(self):
        self.assertInvalid(self.p.call, "ForkSession", fork_req(uid("nosuch"), 10001),
                           field="--max-fork-messages")
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.p.call, "ForkSession",
                          fork_req(uid("nosuch"), 10000), field="session_id")


class ForkCeilingReplicaTest(PrimaryReplicaCase):
    """--max-fork-bytes at its ceiling (32 MiB): the largest fork it allows
    is one log record that still reaches a replica whole."""

    CEIL = 33554432
    PRIMARY_ARGS = ("--max-fork-bytes", str(CEIL), "--max-content-bytes", "1000000")

    def test_the_largest_fork_at_the_ceiling_replicates(self):
        # 34 messages of 1000000 bytes pass 32 MiB; 33 do not.
        sid = self.p.create(uid("u")).session_id
        for b in range(0, 34, 4):
            self.p.append(sid, *[M("%06d" % i + "x" * 999994)
                                 for i in range(b + 1, min(b + 4, 34) + 1)])
        new_id = uid("fork")
        e = self.assertInvalid(self.p.call, "ForkSession", fork_req(sid, 34, new_id),
                               field="--max-fork-bytes")
        self.assertIn("through seq 34 ", e.details())
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.p.get, new_id)
        f, lsn = self.p.call_lsn("ForkSession", fork_req(sid, 33, new_id))
        md = self.r.md + (("engram-min-lsn", lsn),)
        got = self.r.call("GetSession", pb.GetSessionRequest(session_id=new_id), metadata=md)
        self.assertEqual(got, f)
        self.assertEqual(got.message_count, 33)
        self.assertEqual([m.content[:6] for m in self.r.all_messages(new_id, page_size=4)],
                         ["%06d" % i for i in range(1, 34)])
