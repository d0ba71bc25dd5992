"""Sessions, complete: UpdateSession (metadata, agent, TTL, end and reopen),
per-session TTL at create, EndSession's reason and end time, Session.stats,
optimistic concurrency on appends and summaries, CreateSession retries;
and the same from the CLI."""
import json
import os
import subprocess
import time

import grpc
from google.protobuf import field_mask_pb2

from harness import ENGRAM_CLI, M, ServerTestCase, clean_env, pb, ts_ns, uid, wait_past

NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECOND = grpc.StatusCode.FAILED_PRECONDITION
EXISTS = grpc.StatusCode.ALREADY_EXISTS
SEC = 1_000_000_000
TTL_MAX = 31536000
ACTIVE, ENDED, EXPIRED = pb.SESSION_STATE_ACTIVE, pb.SESSION_STATE_ENDED, pb.SESSION_STATE_EXPIRED


class SessionsCompleteTest(ServerTestCase):

    # ---- helpers -------------------------------------------------------------

    def create(self, user=None, **fields):
        s = pb.Session(user_id=user or uid("u"), **fields)
        return self.client.call("CreateSession", pb.CreateSessionRequest(session=s))

    def update(self, sid, paths, **fields):
        return self.client.call("UpdateSession", pb.UpdateSessionRequest(
            session_id=sid, session=pb.Session(**fields),
            update_mask=field_mask_pb2.FieldMask(paths=paths)))

    def end(self, sid, reason=""):
        return self.client.call("EndSession", pb.EndSessionRequest(session_id=sid, reason=reason))

    def append(self, sid, *msgs, expected=0):
        msgs = [M(m) if isinstance(m, str) else m for m in msgs]
        return self.client.call("AppendMessages", pb.AppendMessagesRequest(
            session_id=sid, messages=msgs, expected_last_seq=expected))

    def summary(self, sid, text, through, expected=0):
        return self.client.call("UpdateSummary", pb.UpdateSummaryRequest(
            session_id=sid, summary=text, through_seq=through, expected_through_seq=expected))

    def wait_expired(self, sid, timeout=10.0):
        """Polls until the session reads EXPIRED (the event), bounded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.client.get(sid)
            if s.state == EXPIRED:
                return s
            time.sleep(0.05)
        self.fail("session %s did not expire within %.0fs" % (sid, timeout))

    def assertTtl(self, s, seconds):
        self.assertEqual(s.ttl_seconds, seconds)
        got = ts_ns(s.expire_time) - ts_ns(s.update_time)
        self.assertEqual(got, seconds * SEC, "expire_time - update_time")

    # ---- per-session TTL at create ------------------------------------------

    def test_create_ttl_default_and_override(self):
        self.assertTtl(self.create(), 7200)  # the server's --session-ttl
        self.assertTtl(self.create(ttl_seconds=60), 60)
        self.assertTtl(self.create(ttl_seconds=1), 1)
        self.assertTtl(self.create(ttl_seconds=TTL_MAX), TTL_MAX)

    def test_create_ttl_out_of_bounds(self):
        for bad in [-1, TTL_MAX + 1, 2 ** 62]:
            e = self.assertInvalid(self.create, ttl_seconds=bad, field="session.ttl_seconds")
            self.assertIn(str(bad), e.details())

    def test_create_ttl_renewed_by_append(self):
        s = self.create(ttl_seconds=300)
        a = self.append(s.session_id, "hi").session
        self.assertTtl(a, 300)
        self.assertGreaterEqual(ts_ns(a.expire_time), ts_ns(s.expire_time))

    # ---- CreateSession retry --------------------------------------------------

    def test_create_retry_same_user_returns_existing(self):
        user, sid = uid("u"), uid("s")
        first = self.create(user, session_id=sid, agent_id="a1", metadata={"k": "v"})
        self.append(sid, "one")
        again = self.create(user, session_id=sid, agent_id="other", metadata={"x": "y"})
        # the session as it is now, unchanged by the retry's fields
        self.assertEqual(again.session_id, sid)
        self.assertEqual(again.agent_id, "a1")
        self.assertEqual(dict(again.metadata), {"k": "v"})
        self.assertEqual(again.message_count, 1)
        self.assertEqual(ts_ns(again.create_time), ts_ns(first.create_time))
        self.assertEqual(again, self.client.get(sid))
        self.assertEqual(len(self.client.list_sessions(user).sessions), 1)

    def test_create_retry_other_user_already_exists(self):
        sid = uid("s")
        self.create(uid("u1"), session_id=sid)
        e = self.assertStatus(EXISTS, self.create, uid("u2"), session_id=sid,
                              field="session.session_id")
        self.assertIn(sid, e.details())

    def test_create_retry_of_ended_session_returns_it_ended(self):
        user, sid = uid("u"), uid("s")
        self.create(user, session_id=sid)
        self.end(sid, "done")
        again = self.create(user, session_id=sid)
        self.assertEqual(again.state, ENDED)
        self.assertEqual(again.end_reason, "done")

    # ---- EndSession -----------------------------------------------------------

    def test_end_with_reason_and_time(self):
        s = self.create()
        e = self.end(s.session_id, "user closed the tab ✓")
        self.assertEqual(e.state, ENDED)
        self.assertEqual(e.end_reason, "user closed the tab ✓")
        self.assertTrue(e.HasField("end_time"))
        self.assertEqual(ts_ns(e.end_time), ts_ns(e.update_time))
        self.assertGreaterEqual(ts_ns(e.end_time), ts_ns(s.create_time))
        self.assertEqual(self.client.get(s.session_id), e)

    def test_end_without_reason(self):
        s = self.create()
        self.assertFalse(s.HasField("end_time"), "a live session has no end_time")
        e = self.end(s.session_id)
        self.assertEqual(e.end_reason, "")
        self.assertTrue(e.HasField("end_time"))

    def test_end_reason_limit(self):
        s = self.create()
        self.assertInvalid(self.end, s.session_id, "r" * 1025, field="reason")
        self.assertEqual(self.client.get(s.session_id).state, ACTIVE, "a refused end wrote")
        # multi-byte characters count in bytes: 341 * 3 + 1 = 1024 fits
        ok = "✓" * 341 + "x"
        self.assertEqual(len(ok.encode()), 1024)
        self.assertEqual(self.end(s.session_id, ok).end_reason, ok)
        s2 = self.create()
        self.assertInvalid(self.end, s2.session_id, "✓" * 342, field="reason")

    def test_end_again_keeps_first_end(self):
        s = self.create()
        e1 = self.end(s.session_id, "first")
        e2 = self.end(s.session_id, "second")
        self.assertEqual(e2.end_reason, "first")
        self.assertEqual(ts_ns(e2.end_time), ts_ns(e1.end_time))

    def test_end_reason_is_not_stored_in_clear(self):
        s = self.create()
        canary = "canary-" + uid("r")
        self.end(s.session_id, canary)
        self.server.stop()
        try:
            for d, _, files in os.walk(self.server.data_dir):
                for name in files:
                    with open(os.path.join(d, name), "rb") as f:
                        self.assertNotIn(canary.encode(), f.read(), name)
        finally:
            self.revive()
        self.assertEqual(self.client.get(s.session_id).end_reason, canary)

    # ---- UpdateSession --------------------------------------------------------

    def test_update_metadata_and_agent(self):
        s = self.create(agent_id="a1", metadata={"k": "v", "drop": "me"})
        u = self.update(s.session_id, ["metadata"], metadata={"k": "v2", "new": "✓"})
        self.assertEqual(dict(u.metadata), {"k": "v2", "new": "✓"})
        self.assertEqual(u.agent_id, "a1", "agent_id not in the mask must stay")
        u = self.update(s.session_id, ["agent_id"], agent_id="a2", metadata={"ignored": "x"})
        self.assertEqual(u.agent_id, "a2")
        self.assertEqual(dict(u.metadata), {"k": "v2", "new": "✓"}, "metadata not in the mask")
        u = self.update(s.session_id, ["metadata", "agent_id"])
        self.assertEqual((u.agent_id, dict(u.metadata)), ("", {}))
        self.assertGreaterEqual(ts_ns(u.update_time), ts_ns(s.update_time))
        self.assertEqual(self.client.get(s.session_id), u)

    def test_update_ttl_renews_expiry(self):
        s = self.create(ttl_seconds=100)
        u = self.update(s.session_id, ["ttl_seconds"], ttl_seconds=50)
        self.assertTtl(u, 50)
        u = self.update(s.session_id, ["ttl_seconds"], ttl_seconds=TTL_MAX)
        self.assertTtl(u, TTL_MAX)
        # 0: back to the server's default
        self.assertTtl(self.update(s.session_id, ["ttl_seconds"], ttl_seconds=0), 7200)
        # and the next append renews by the new TTL
        self.update(s.session_id, ["ttl_seconds"], ttl_seconds=30)
        self.assertTtl(self.append(s.session_id, "x").session, 30)

    def test_update_argument_errors(self):
        sid = self.create().session_id
        self.assertInvalid(self.update, sid, [], field="update_mask")
        e = self.assertInvalid(self.update, sid, ["summary"], field="update_mask")
        self.assertIn("'summary'", e.details())
        e = self.assertInvalid(self.update, sid, ["agent_id", "metadata.k"], field="update_mask")
        self.assertIn("'metadata.k'", e.details())
        self.assertInvalid(self.update, sid, ["ttl_seconds"], ttl_seconds=TTL_MAX + 1,
                           field="session.ttl_seconds")
        self.assertInvalid(self.update, sid, ["ttl_seconds"], ttl_seconds=-5,
                           field="session.ttl_seconds")
        self.assertInvalid(self.update, sid, ["state"], state=EXPIRED, field="session.state")
        self.assertInvalid(self.update, sid, ["state"], field="session.state")  # UNSPECIFIED
        self.assertInvalid(self.update, sid, ["agent_id"], agent_id="bad id!", field="session.agent_id")
        self.assertInvalid(self.update, sid, ["metadata"], metadata={"": "v"},
                           field="session.metadata")
        self.assertInvalid(self.update, "", ["agent_id"], field="session_id")
        self.assertInvalid(self.client.call, "UpdateSession", pb.UpdateSessionRequest(
            session_id=sid, update_mask=field_mask_pb2.FieldMask(paths=["agent_id"])),
            field="session")
        self.assertStatus(NOT_FOUND, self.update, uid("nope"), ["agent_id"], field="session_id")
        g = self.client.get(sid)
        self.assertEqual((g.agent_id, g.ttl_seconds, g.state), ("", 7200, ACTIVE),
                         "a refused update wrote")

    def test_update_state_ended_then_reopen(self):
        s = self.create(ttl_seconds=600)
        self.append(s.session_id, "one")
        e = self.update(s.session_id, ["state"], state=ENDED)
        self.assertEqual(e.state, ENDED)
        self.assertTrue(e.HasField("end_time"))
        self.assertStatus(PRECOND, self.append, s.session_id, "refused")
        r = self.update(s.session_id, ["state"], state=ACTIVE)
        self.assertEqual(r.state, ACTIVE)
        self.assertFalse(r.HasField("end_time"), "a reopen forgets the end")
        self.assertTtl(r, 600)
        a = self.append(s.session_id, "two")
        self.assertEqual(a.messages[0].seq, 2)
        self.assertEqual(a.session.state, ACTIVE)

    def test_reopen_ended_with_reason_clears_it(self):
        s = self.create()
        self.end(s.session_id, "why")
        r = self.update(s.session_id, ["state", "ttl_seconds"], state=ACTIVE, ttl_seconds=40)
        self.assertEqual((r.state, r.end_reason), (ACTIVE, ""))
        self.assertTtl(r, 40)
        # ending again records the new end
        self.assertEqual(self.end(s.session_id, "again").end_reason, "again")

    def test_reopen_expired_renews_expiry(self):
        s = self.create(ttl_seconds=1)
        self.append(s.session_id, "before")
        x = self.wait_expired(s.session_id)
        self.assertStatus(PRECOND, self.append, s.session_id, "late")
        # a TTL change alone does not revive it
        self.assertEqual(self.update(s.session_id, ["ttl_seconds"], ttl_seconds=1).state, EXPIRED)
        r = self.update(s.session_id, ["state", "ttl_seconds"], state=ACTIVE, ttl_seconds=300)
        self.assertEqual(r.state, ACTIVE)
        self.assertTtl(r, 300)
        self.assertGreater(ts_ns(r.expire_time), ts_ns(x.expire_time))
        self.assertEqual(self.append(s.session_id, "after").messages[0].seq, 2)

    def test_update_state_on_same_state_is_a_no_op_for_state(self):
        s = self.create()
        self.assertEqual(self.update(s.session_id, ["state"], state=ACTIVE).state, ACTIVE)
        e1 = self.end(s.session_id, "r")
        e2 = self.update(s.session_id, ["state"], state=ENDED)
        self.assertEqual((e2.state, e2.end_reason), (ENDED, "r"))
        self.assertEqual(ts_ns(e2.end_time), ts_ns(e1.end_time))

    def test_end_an_expired_session(self):
        s = self.create(ttl_seconds=1)
        self.wait_expired(s.session_id)
        e = self.end(s.session_id, "cleanup")
        self.assertEqual((e.state, e.end_reason), (ENDED, "cleanup"))

    # ---- stats ------------------------------------------------------------------

    def test_stats_empty_session(self):
        st = self.create().stats
        self.assertEqual((st.user_messages, st.assistant_messages, st.system_messages,
                          st.tool_messages, st.total_tokens), (0, 0, 0, 0, 0))
        self.assertFalse(st.HasField("first_message_time"))
        self.assertFalse(st.HasField("last_message_time"))
        self.assertEqual((st.duration_seconds, st.summary_coverage), (0.0, 0.0))

    def test_stats_follow_appends(self):
        sid = self.create().session_id
        a1 = self.append(sid, M("hello", token_count=3), M("hi", role=pb.ROLE_ASSISTANT,
                                                            token_count=5))
        st = a1.session.stats
        self.assertEqual((st.user_messages, st.assistant_messages, st.total_tokens), (1, 1, 8))
        self.assertEqual(ts_ns(st.first_message_time), ts_ns(a1.messages[0].create_time))
        self.assertEqual(st.duration_seconds, 0.0)
        wait_past(a1.messages[-1].create_time, 0.05)  # so that the second batch has a later time
        a2 = self.append(sid, M("sys", role=pb.ROLE_SYSTEM, token_count=1),
                         M("tool out", role=pb.ROLE_TOOL, token_count=2),
                         M("x" * 40))  # estimated: 10 tokens
        st = a2.session.stats
        self.assertEqual((st.user_messages, st.assistant_messages, st.system_messages,
                          st.tool_messages, st.total_tokens), (2, 1, 1, 1, 21))
        first, last = ts_ns(a1.messages[0].create_time), ts_ns(a2.messages[0].create_time)
        self.assertEqual(ts_ns(st.first_message_time), first)
        self.assertEqual(ts_ns(st.last_message_time), last)
        self.assertAlmostEqual(st.duration_seconds, (last - first) / 1e9, places=6)
        self.assertGreater(st.duration_seconds, 0)
        self.assertEqual(self.client.get(sid).stats, st, "GetSession reads the same stats")

    def test_stats_retried_message_not_counted_twice(self):
        sid = self.create().session_id
        self.append(sid, M("once", client_message_id="c1", token_count=4))
        st = self.append(sid, M("once", client_message_id="c1", token_count=4)).session.stats
        self.assertEqual((st.user_messages, st.total_tokens), (1, 4))

    def test_stats_summary_coverage(self):
        sid = self.create().session_id
        self.append(sid, *["m%d" % i for i in range(4)])
        self.assertEqual(self.summary(sid, "s", 1).stats.summary_coverage, 0.25)
        self.assertEqual(self.summary(sid, "s", 4).stats.summary_coverage, 1.0)
        self.append(sid, "m4")
        self.assertEqual(self.client.get(sid).stats.summary_coverage, 0.8)

    def test_stats_survive_restart(self):
        sid = self.create().session_id
        st = self.append(sid, M("a", token_count=7), M("b", role=pb.ROLE_TOOL)).session.stats
        self.server.stop()
        self.revive()
        self.assertEqual(self.client.get(sid).stats, st)

    # ---- optimistic concurrency -----------------------------------------------------

    def test_expected_last_seq(self):
        sid = self.create().session_id
        self.assertEqual(self.append(sid, "a", expected=0).messages[0].seq, 1)  # 0: no check
        e = self.assertStatus(PRECOND, self.append, sid, "b", expected=2, field="expected_last_seq")
        self.assertIn("is 1", e.details())
        self.assertEqual(self.client.get(sid).message_count, 1, "a refused append wrote")
        a = self.append(sid, "b", "c", expected=1)
        self.assertEqual([m.seq for m in a.messages], [2, 3])
        self.assertStatus(PRECOND, self.append, sid, "d", expected=2, field="expected_last_seq")
        self.assertInvalid(self.append, sid, "d", expected=-1, field="expected_last_seq")
        self.assertEqual([m.content for m in self.client.all_messages(sid)], ["a", "b", "c"])

    def test_expected_last_seq_retry_still_answers(self):
        sid = self.create().session_id
        first = self.append(sid, M("a", client_message_id="k1"), expected=0)
        self.append(sid, "b")
        # the retry of the first append: last seq is now 2, but nothing new
        # is written, so the retry gets its original answer
        again = self.append(sid, M("a", client_message_id="k1"), expected=0)
        self.assertEqual(again.messages[0].seq, first.messages[0].seq)
        again = self.append(sid, M("a", client_message_id="k1"), expected=7)
        self.assertEqual(again.messages[0].seq, 1)
        # a new message in the same call is checked
        self.assertStatus(PRECOND, self.append, sid, M("a", client_message_id="k1"), "new",
                          expected=7, field="expected_last_seq")
        self.assertEqual(self.client.get(sid).message_count, 2)

    def test_concurrent_writers_one_wins(self):
        sid = self.create().session_id
        self.append(sid, "base")
        # two agents read last seq 1 and both append expecting it: one wins
        self.append(sid, "agent A", expected=1)
        self.assertStatus(PRECOND, self.append, sid, "agent B", expected=1)
        self.assertEqual([m.content for m in self.client.all_messages(sid)], ["base", "agent A"])

    def test_expected_through_seq(self):
        sid = self.create().session_id
        self.append(sid, *["m%d" % i for i in range(5)])
        self.assertEqual(self.summary(sid, "s1", 2, expected=0).summary_through_seq, 2)
        e = self.assertStatus(PRECOND, self.summary, sid, "s2", 4, expected=1,
                              field="expected_through_seq")
        self.assertIn("through 2", e.details())
        g = self.client.get(sid)
        self.assertEqual((g.summary, g.summary_through_seq), ("s1", 2), "a refused summary wrote")
        self.assertEqual(self.summary(sid, "s2", 4, expected=2).summary, "s2")
        self.assertInvalid(self.summary, sid, "s", 4, expected=-1, field="expected_through_seq")


class ReopenPastRetentionTest(ServerTestCase):
    # Retention 1 s, and a sweeper that never runs during the test, so a
    # session past its retention still exists when the reopen comes.
    server_args = ("--expired-session-retention-s", "1", "--sweep-interval-ms", "3600000")

    def test_reopen_past_retention_is_refused(self):
        s = self.client.call("CreateSession", pb.CreateSessionRequest(
            session=pb.Session(user_id=uid("u"))))
        e = self.client.call("EndSession", pb.EndSessionRequest(session_id=s.session_id))
        reopen = pb.UpdateSessionRequest(session_id=s.session_id,
                                         session=pb.Session(state=ACTIVE),
                                         update_mask=field_mask_pb2.FieldMask(paths=["state"]))
        # Within retention: reopened, then ended again.
        self.assertEqual(self.client.call("UpdateSession", reopen).state, ACTIVE)
        e = self.client.call("EndSession", pb.EndSessionRequest(session_id=s.session_id))
        # Past it (the end time is the server's, a second ago and more).
        wait_past(e.end_time, 1.5)
        err = self.assertStatus(PRECOND, self.client.call, "UpdateSession", reopen)
        self.assertIn("past its retention", err.details())
        self.assertEqual(self.client.get(s.session_id).state, ENDED, "nothing written")

    def test_ending_an_expired_session_keeps_its_gone_time(self):
        # Ending a session that already expired must not restart its
        # retention: its end time is when it expired, so a reopen past
        # retention stays refused (EndSession and UpdateSession alike).
        mask = field_mask_pb2.FieldMask(paths=["state"])
        a, b = (self.client.call("CreateSession", pb.CreateSessionRequest(
            session=pb.Session(user_id=uid("u"), ttl_seconds=1))) for _ in range(2))
        wait_past(max(a.expire_time, b.expire_time, key=ts_ns), 1.5)
        self.assertEqual(self.client.get(a.session_id).state, EXPIRED)
        ea = self.client.call("EndSession", pb.EndSessionRequest(session_id=a.session_id))
        eb = self.client.call("UpdateSession", pb.UpdateSessionRequest(
            session_id=b.session_id, session=pb.Session(state=ENDED), update_mask=mask))
        for s, e in ((a, ea), (b, eb)):
            self.assertEqual(e.state, ENDED)
            self.assertEqual(ts_ns(e.end_time), ts_ns(s.expire_time), "ended when it expired")
            err = self.assertStatus(PRECOND, self.client.call, "UpdateSession", pb.UpdateSessionRequest(
                session_id=s.session_id, session=pb.Session(state=ACTIVE), update_mask=mask))
            self.assertIn("past its retention", err.details())


class SessionsCompleteCliTest(ServerTestCase):

    def cli(self, *args, ok=True):
        p = subprocess.run([ENGRAM_CLI, "--target", self.server.addr, "--json"] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20,
                           stdin=subprocess.DEVNULL, env=clean_env())
        if ok:
            self.assertEqual(p.returncode, 0, p.stderr.decode())
            return json.loads(p.stdout)
        return p

    def test_cli_update_end_reopen_and_stats(self):
        user = uid("u")
        s = self.cli("session", "create", "--user", user, "--ttl", "120")
        sid = s["sessionId"]
        self.assertEqual(int(s["ttlSeconds"]), 120)
        self.client.append(sid, M("hello", token_count=2), M("hi", role=pb.ROLE_ASSISTANT))
        g = self.cli("session", "get", sid)
        self.assertEqual(int(g["stats"]["userMessages"]), 1)
        self.assertEqual(int(g["stats"]["assistantMessages"]), 1)
        self.assertEqual(int(g["stats"]["totalTokens"]), 3)
        u = self.cli("session", "update", sid, "--agent", "bot", "--ttl", "60",
                     "--metadata", "k=v", "--metadata", "lang=fr")
        self.assertEqual((u["agentId"], int(u["ttlSeconds"])), ("bot", 60))
        self.assertEqual(u["metadata"], {"k": "v", "lang": "fr"})
        e = self.cli("session", "end", sid, "--reason", "finished")
        self.assertEqual((e["state"], e["endReason"]), ("SESSION_STATE_ENDED", "finished"))
        self.assertIn("endTime", e)
        r = self.cli("session", "update", sid, "--reopen")
        self.assertEqual(r["state"], "SESSION_STATE_ACTIVE")
        c = self.cli("session", "update", sid, "--clear-metadata")
        self.assertNotIn("k", c.get("metadata", {}))

    def test_cli_update_errors(self):
        sid = self.client.create(uid("u")).session_id
        p = self.cli("session", "update", sid, ok=False)
        self.assertEqual(p.returncode, 2, "no flag is a usage error")
        p = self.cli("session", "update", sid, "--ttl", str(TTL_MAX + 1), ok=False)
        self.assertEqual(p.returncode, 5)  # invalid input
        self.assertIn(b"session.ttl_seconds", p.stderr)
        p = self.cli("session", "end", sid, "--reason", "r" * 1025, ok=False)
        self.assertEqual(p.returncode, 5)
        self.assertIn(b"reason", p.stderr)


if __name__ == "__main__":
    import unittest
    unittest.main()
