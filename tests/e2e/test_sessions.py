"""Sessions: create/get/list/end/delete, ids, LSNs, health, unknown methods,
configuration from flags and environment."""
import os
import subprocess
import tempfile
import time

import grpc

from harness import (ENGRAMD, ID_RE, SERVING, E2ETestCase, M, Server, ServerTestCase, clean_env,
                     pb, ts_ns, uid)

NOT_FOUND = grpc.StatusCode.NOT_FOUND
SEC = 1_000_000_000


class SessionsTest(ServerTestCase):

    def test_create_generated_id_and_defaults(self):
        user = uid("u")
        s = self.client.create(user)
        self.assertEqual(len(s.session_id), 26, s.session_id)
        self.assertRegex(s.session_id, ID_RE)
        self.assertEqual(s.user_id, user)
        self.assertEqual(s.agent_id, "")
        self.assertEqual(s.state, pb.SESSION_STATE_ACTIVE)
        self.assertEqual(s.message_count, 0)
        self.assertEqual(dict(s.metadata), {})
        self.assertEqual(s.summary, "")
        self.assertEqual(s.summary_through_seq, 0)
        self.assertFalse(s.summary_due)
        self.assertTrue(s.HasField("create_time"))
        now = time.time_ns()
        self.assertLess(abs(ts_ns(s.create_time) - now), 60 * SEC, "create_time far from now")
        self.assertEqual(ts_ns(s.create_time), ts_ns(s.update_time))
        ttl = ts_ns(s.expire_time) - ts_ns(s.create_time)
        self.assertLessEqual(abs(ttl - 7200 * SEC), SEC, "expire_time - create_time = %dns" % ttl)

    def test_generated_ids_are_time_ordered(self):
        user = uid("u")
        ids = [self.client.create(user).session_id for _ in range(20)]
        self.assertEqual(len(set(ids)), 20)
        self.assertEqual(ids, sorted(ids), "successive generated ids must increase")

    def test_create_with_id_agent_metadata_and_get(self):
        user, sid = uid("u"), uid("s")
        meta = {"channel": "web", "lang": "fr-FR", "note": "héllo ✓ 日本", "empty": ""}
        s = self.client.create(user, session_id=sid, agent_id="agent-7", metadata=meta)
        self.assertEqual(s.session_id, sid)
        self.assertEqual(s.agent_id, "agent-7")
        self.assertEqual(dict(s.metadata), meta)
        g = self.client.get(sid)
        self.assertEqual(g, s, "GetSession must return what CreateSession returned")

    def test_create_id_edge_values(self):
        user = uid("u")
        for sid in ["A", "x" * 128, "a.B_c:d-9." + uid("e")]:
            self.assertEqual(self.client.create(user, session_id=sid).session_id, sid)
        self.assertEqual(self.client.create("u" * 128).user_id, "u" * 128)

    def test_duplicate_session_id_already_exists(self):
        sid = uid("s")
        u1 = uid("u")
        self.client.create(u1, session_id=sid, metadata={"k": "first"})
        self.assertStatus(grpc.StatusCode.ALREADY_EXISTS, self.client.create, uid("u"),
                          session_id=sid, metadata={"k": "second"})
        g = self.client.get(sid)
        self.assertEqual(g.user_id, u1)
        self.assertEqual(dict(g.metadata), {"k": "first"})

    def test_output_only_fields_on_create_are_ignored_or_refused(self):
        # The request documents only session_id/user_id/agent_id/metadata as
        # input. Either ignoring the rest or refusing it is acceptable; storing
        # it is not.
        sid = uid("s")
        req = pb.CreateSessionRequest(session=pb.Session(
            session_id=sid, user_id=uid("u"), state=pb.SESSION_STATE_ENDED, message_count=7,
            summary="forged", summary_through_seq=3))
        try:
            s = self.client.call("CreateSession", req)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT, e.details())
            return
        for got in (s, self.client.get(sid)):
            self.assertEqual(got.state, pb.SESSION_STATE_ACTIVE)
            self.assertEqual(got.message_count, 0)
            self.assertEqual(got.summary, "")
            self.assertEqual(got.summary_through_seq, 0)

    def test_get_unknown_not_found(self):
        self.assertStatus(NOT_FOUND, self.client.get, uid("nope"))

    def test_list_newest_first_by_create_time(self):
        user, other = uid("u"), uid("u")
        # ids in an order that differs from creation order
        order = ["c-" + uid(), "a-" + uid(), "b-" + uid()]
        for i, sid in enumerate(order):
            self.client.create(user, session_id=sid, agent_id="ag", metadata={"i": str(i)})
        self.client.create(other, session_id=uid("o"))
        r = self.client.list_sessions(user)
        self.assertEqual([s.session_id for s in r.sessions], list(reversed(order)))
        self.assertEqual(r.next_page_token, "")
        for s in r.sessions:
            self.assertEqual(s, self.client.get(s.session_id), "listed != GetSession")

    def test_list_pagination_walks_every_session_once(self):
        user = uid("u")
        created = [self.client.create(user).session_id for _ in range(7)]
        seen, token, pages = [], "", 0
        for _ in range(10):
            r = self.client.list_sessions(user, page_size=3, page_token=token)
            pages += 1
            self.assertLessEqual(len(r.sessions), 3)
            seen += [s.session_id for s in r.sessions]
            token = r.next_page_token
            if not token:
                break
        self.assertEqual(token, "", "pagination did not end")
        self.assertLessEqual(pages, 4)
        self.assertEqual(seen, list(reversed(created)))

    def test_page_token_of_another_user_leaks_nothing(self):
        u1, u2 = uid("u"), uid("u")
        for _ in range(3):
            self.client.create(u1)
            self.client.create(u2)
        tok = self.client.list_sessions(u1, page_size=1).next_page_token
        self.assertNotEqual(tok, "")
        try:
            r = self.client.list_sessions(u2, page_size=10, page_token=tok)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT, e.details())
            return
        self.assertEqual({s.user_id for s in r.sessions} - {u2}, set())

    def test_list_unknown_user_is_empty(self):
        r = self.client.list_sessions(uid("nobody"))
        self.assertEqual(len(r.sessions), 0)
        self.assertEqual(r.next_page_token, "")

    def test_list_argument_errors(self):
        # An empty user_id is the team view (test_session_list.py); a bad one is refused.
        self.assertInvalid(self.client.list_sessions, "bad user", field="user_id")
        self.assertInvalid(self.client.list_sessions, uid("u"), page_size=-1, field="page_size")
        user = uid("u")
        for _ in range(2):
            self.client.create(user)
        for garbage in ["garbage!!", "AAAAAAAAAAAA", "\u00e9t\u00e9", "x" * 300]:
            self.assertInvalid(self.client.list_sessions, user, page_size=1, page_token=garbage,
                               field="page_token")

    def test_end_session(self):
        sid = self.client.create(uid("u")).session_id
        self.client.append(sid, "before end")
        e = self.client.end(sid)
        self.assertEqual(e.state, pb.SESSION_STATE_ENDED)
        self.assertEqual(e.message_count, 1)
        g = self.client.get(sid)
        self.assertEqual(g.state, pb.SESSION_STATE_ENDED)
        self.assertEqual([s.state for s in self.client.list_sessions(g.user_id).sessions],
                         [pb.SESSION_STATE_ENDED])
        self.assertStatus(grpc.StatusCode.FAILED_PRECONDITION, self.client.append, sid, "late")
        self.assertEqual(self.client.get(sid).message_count, 1)
        self.assertEqual([m.content for m in self.client.all_messages(sid)], ["before end"])
        self.assertEqual([m.content for m in self.client.context(sid).messages], ["before end"])

    def test_end_unknown_not_found(self):
        self.assertStatus(NOT_FOUND, self.client.end, uid("nope"))

    def test_delete_session(self):
        user, sid = uid("u"), uid("s")
        self.client.create(user, session_id=sid, metadata={"k": "v"})
        self.client.append(sid, M("one", client_message_id="retry-1"), "two", "three")
        self.client.update_summary(sid, "sum", 2)
        r = self.client.delete(sid)
        self.assertEqual(r.deleted_messages, 3)
        c = self.client
        self.assertStatus(NOT_FOUND, c.get, sid)
        self.assertStatus(NOT_FOUND, c.list_messages, sid)
        self.assertStatus(NOT_FOUND, c.context, sid)
        self.assertStatus(NOT_FOUND, c.append, sid, "x")
        self.assertStatus(NOT_FOUND, c.end, sid)
        self.assertStatus(NOT_FOUND, c.update_summary, sid, "s", 0)
        self.assertStatus(NOT_FOUND, c.delete, sid)
        self.assertEqual(len(c.list_sessions(user).sessions), 0)
        # the id is free again, and comes back fresh
        s = c.create(user, session_id=sid)
        self.assertEqual(s.message_count, 0)
        self.assertEqual(dict(s.metadata), {})
        self.assertEqual(s.summary, "")
        self.assertEqual(s.summary_through_seq, 0)
        self.assertEqual(len(c.list_messages(sid).messages), 0)
        # its retry records went with it: the same client id is a new message
        a = c.append(sid, M("fresh", client_message_id="retry-1"))
        self.assertEqual(a.messages[0].seq, 1)
        self.assertEqual([m.content for m in c.all_messages(sid)], ["fresh"])
        self.assertEqual(c.delete(sid).deleted_messages, 1)

    def test_every_write_returns_increasing_lsn(self):
        c = self.client
        lsns = []

        def w(method, req):
            resp, lsn = c.call_lsn(method, req)
            self.assertIsNotNone(lsn, "%s: no engram-lsn initial metadata" % method)
            self.assertRegex(lsn, r"^[0-9]{1,20}$")
            lsns.append(int(lsn))
            return resp

        sid = w("CreateSession", pb.CreateSessionRequest(session=pb.Session(user_id=uid("u"))))
        sid = sid.session_id
        w("AppendMessages", pb.AppendMessagesRequest(session_id=sid, messages=[M("a"), M("b")]))
        w("AppendMessages", pb.AppendMessagesRequest(session_id=sid, messages=[M("c")]))
        w("UpdateSummary", pb.UpdateSummaryRequest(session_id=sid, summary="s", through_seq=2))
        w("EndSession", pb.EndSessionRequest(session_id=sid))
        w("DeleteSession", pb.DeleteSessionRequest(session_id=sid))
        for a, b in zip(lsns, lsns[1:]):
            self.assertLess(a, b, "engram-lsn not strictly increasing: %s" % lsns)
        self.assertLess(lsns[-1], 2 ** 64)

    def test_unknown_method_is_unimplemented_at_once(self):
        for path in ["/engram.v1.SessionService/Nope", "/engram.v1.NoSuchService/Get",
                     "/grpc.health.v1.Health/Nope"]:
            t0 = time.monotonic()
            self.assertStatus(grpc.StatusCode.UNIMPLEMENTED, self.client.raw, path, b"",
                              timeout=5.0)
            self.assertLess(time.monotonic() - t0, 2.0, path)
        # and the server still serves
        self.assertEqual(self.client.health(), SERVING)
        self.client.create(uid("u"))

    def test_health(self):
        self.assertEqual(self.client.health(), SERVING)

    def test_health_unknown_service_not_found(self):
        # grpc health-checking protocol: an unknown service name is NOT_FOUND.
        self.assertStatus(NOT_FOUND, self.client.health, "no.such.Service")


class PagingLimitsTest(ServerTestCase):
    server_args = ("--default-page-size", "3", "--max-page-size", "5")

    def test_session_page_sizes(self):
        user = uid("u")
        for _ in range(8):
            self.client.create(user)
        for asked, want in [(0, 3), (1, 1), (5, 5), (6, 5), (1000, 5), (2 ** 31 - 1, 5)]:
            r = self.client.list_sessions(user, page_size=asked)
            self.assertEqual(len(r.sessions), want, "page_size=%d" % asked)
            self.assertNotEqual(r.next_page_token, "")

    def test_message_page_sizes(self):
        sid = self.client.create(uid("u")).session_id
        self.client.append(sid, *["m%d" % i for i in range(8)])
        for asked, want in [(0, 3), (5, 5), (6, 5), (1000, 5)]:
            for newest in (False, True):
                r = self.client.list_messages(sid, page_size=asked, newest_first=newest)
                self.assertEqual(len(r.messages), want, "page_size=%d newest=%s" % (asked, newest))
        self.assertSeqs(self.client.all_messages(sid, page_size=1000), range(1, 9))


class ConfigTest(E2ETestCase):

    def test_env_vars_and_flag_precedence(self):
        # ENGRAM_SESSION_TTL is overridden by --session-ttl; ENGRAM_SUMMARY_EVERY applies.
        srv = Server("--session-ttl", "999",
                     env={"ENGRAM_SESSION_TTL": "1234", "ENGRAM_SUMMARY_EVERY": "2",
                          "ENGRAM_MAX_CONTENT_BYTES": "10"})
        try:
            srv.start()
            c = srv.client()
            s = c.create(uid("u"))
            ttl = ts_ns(s.expire_time) - ts_ns(s.create_time)
            self.assertLessEqual(abs(ttl - 999 * SEC), SEC, "ttl %dns" % ttl)
            a = c.append(s.session_id, "0123456789")
            self.assertFalse(a.session.summary_due)
            a = c.append(s.session_id, "x")
            self.assertTrue(a.session.summary_due, "ENGRAM_SUMMARY_EVERY=2 not applied")
            self.assertInvalid(c.append, s.session_id, "01234567890",
                               field="messages[0].content")
        finally:
            srv.close()

    def test_env_ttl_applies_without_flag(self):
        srv = Server(env={"ENGRAM_SESSION_TTL": "1234"})
        try:
            srv.start()
            s = srv.client().create(uid("u"))
            ttl = ts_ns(s.expire_time) - ts_ns(s.create_time)
            self.assertLessEqual(abs(ttl - 1234 * SEC), SEC, "ttl %dns" % ttl)
        finally:
            srv.close()

    def test_creates_missing_data_dir(self):
        srv = Server(create_data_dir=False)
        srv.data_dir = os.path.join(srv.tmp, "fresh-data")  # like `make run` with ./data
        try:
            srv.start()
            srv.client().create(uid("u"))
            self.assertTrue(os.path.isfile(os.path.join(srv.data_dir, "data.mdb")))
        finally:
            srv.close()

    def test_bad_flags_refused(self):
        with tempfile.TemporaryDirectory(prefix="engram-e2e-") as d:
            for args, word in [(["--no-such-flag", "1"], "no-such-flag"),
                               (["--session-ttl", "abc"], "session-ttl"),
                               (["--max-page-size", "-5"], "max-page-size")]:
                try:
                    p = subprocess.run([ENGRAMD, "--listen", "127.0.0.1:0", "--data-dir",
                                        os.path.join(d, "data")] + args,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       timeout=5, env=clean_env())
                except subprocess.TimeoutExpired:
                    self.fail("engramd %s did not exit (flag accepted?)" % args)
                out = p.stdout.decode(errors="replace")
                self.assertNotEqual(p.returncode, 0, "%s accepted: %s" % (args, out))
                self.assertIn(word, out, "error for %s should name it" % args)
