"""Bearer tokens, roles and tenant isolation (server started with --tokens)."""
import grpc

from harness import SERVING, M, ServerTestCase, pb, uid

UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND

ACME, BETA, OPS = "acme-secret", "beta-secret-2", "ops-secret"


class AuthTest(ServerTestCase):
    server_kwargs = {"tokens": [("acme", "agent", ACME), ("beta", "agent", BETA),
                                ("ops", "admin", OPS)]}

    @classmethod
    def connect(cls):
        super().connect()
        cls.acme = cls.server.client(ACME)
        cls.beta = cls.server.client(BETA)
        cls.ops = cls.server.client(OPS)
        cls.anon = cls.server.client()

    def all_calls(self, sid, user):
        return [
            ("CreateSession", pb.CreateSessionRequest(session=pb.Session(user_id=user))),
            ("GetSession", pb.GetSessionRequest(session_id=sid)),
            ("ListSessions", pb.ListSessionsRequest(user_id=user)),
            ("AppendMessages", pb.AppendMessagesRequest(session_id=sid, messages=[M("x")])),
            ("ListMessages", pb.ListMessagesRequest(session_id=sid)),
            ("GetContext", pb.GetContextRequest(session_id=sid)),
            ("UpdateSummary", pb.UpdateSummaryRequest(session_id=sid, summary="s",
                                                      through_seq=0)),
            ("EndSession", pb.EndSessionRequest(session_id=sid)),
            ("DeleteSession", pb.DeleteSessionRequest(session_id=sid)),
        ]

    def test_missing_or_unknown_token_unauthenticated(self):
        user = uid("u")
        sid = self.acme.create(user).session_id
        bad_md = [(), (("authorization", "Bearer wrong-token"),),
                  (("authorization", "Bearer "),), (("authorization", "Basic " + ACME),),
                  (("authorization", ACME),), (("authorization", "Bearer " + ACME + "x"),)]
        for md in bad_md:
            for method, req in self.all_calls(sid, user):
                with self.subTest(md=md, method=method):
                    self.assertStatus(UNAUTH, self.anon.call, method, req, metadata=md)
        # nothing was written by the refused calls
        s = self.acme.get(sid)
        self.assertEqual((s.state, s.message_count, s.summary),
                         (pb.SESSION_STATE_ACTIVE, 0, ""))
        self.assertEqual(len(self.acme.list_sessions(user).sessions), 1)

    def test_bearer_scheme_case_insensitive(self):
        # RFC 7235: the auth scheme is case-insensitive.
        r = self.anon.call("ListSessions", pb.ListSessionsRequest(user_id=uid("u")),
                           metadata=(("authorization", "bearer " + ACME),))
        self.assertEqual(len(r.sessions), 0)

    def test_admin_role_denied_on_sessions(self):
        user = uid("u")
        sid = self.acme.create(user).session_id
        for target in (sid, uid("nope")):  # decided before existence
            for method, req in self.all_calls(target, user):
                with self.subTest(method=method, target=target):
                    self.assertStatus(DENIED, self.ops.call, method, req)
        self.assertEqual(self.acme.get(sid).message_count, 0)

    def test_health_needs_no_token(self):
        self.assertEqual(self.anon.health(), SERVING)

    def test_agent_allowed(self):
        sid = self.acme.create(uid("u")).session_id
        self.assertEqual(self.acme.append(sid, "hi").session.message_count, 1)

    def test_tenant_isolation_by_id(self):
        user = uid("shared-user")
        a = self.acme.create(user, metadata={"owner": "acme"})
        sid = a.session_id
        self.acme.append(sid, "acme secret message")
        b = self.beta
        self.assertStatus(NOT_FOUND, b.get, sid)
        self.assertStatus(NOT_FOUND, b.list_messages, sid)
        self.assertStatus(NOT_FOUND, b.context, sid)
        self.assertStatus(NOT_FOUND, b.append, sid, "intruder")
        self.assertStatus(NOT_FOUND, b.update_summary, sid, "intruder", 1)
        self.assertStatus(NOT_FOUND, b.end, sid)
        self.assertStatus(NOT_FOUND, b.delete, sid)
        self.assertEqual(len(b.list_sessions(user).sessions), 0)
        g = self.acme.get(sid)
        self.assertEqual((g.state, g.message_count, g.summary),
                         (pb.SESSION_STATE_ACTIVE, 1, ""))
        self.assertEqual([m.content for m in self.acme.all_messages(sid)],
                         ["acme secret message"])

    def test_same_ids_in_two_tenants(self):
        user, sid = uid("u"), uid("s")
        self.acme.create(user, session_id=sid, metadata={"t": "acme"})
        sb = self.beta.create(user, session_id=sid, metadata={"t": "beta"})
        self.assertEqual((sb.message_count, dict(sb.metadata)), (0, {"t": "beta"}))
        self.acme.append(sid, M("a1", client_message_id="c1"), "a2")
        rb = self.beta.append(sid, M("b1", client_message_id="c1"))
        self.assertEqual(rb.messages[0].seq, 1, "retry key leaked across tenants")
        self.assertEqual(rb.session.message_count, 1)
        self.assertEqual([m.content for m in self.acme.all_messages(sid)], ["a1", "a2"])
        self.assertEqual([m.content for m in self.beta.all_messages(sid)], ["b1"])
        self.assertEqual(dict(self.acme.get(sid).metadata), {"t": "acme"})
        la = self.acme.list_sessions(user).sessions
        lb = self.beta.list_sessions(user).sessions
        self.assertEqual([(s.session_id, s.message_count) for s in la], [(sid, 2)])
        self.assertEqual([(s.session_id, s.message_count) for s in lb], [(sid, 1)])
        self.assertEqual(self.beta.delete(sid).deleted_messages, 1)
        self.assertEqual(self.acme.get(sid).message_count, 2)
        self.assertEqual(len(self.acme.all_messages(sid)), 2)


class DevModeTest(ServerTestCase):
    """No --tokens: single-tenant dev mode, no token needed."""

    def test_no_token_needed(self):
        user = uid("u")
        sid = self.client.create(user).session_id
        self.client.append(sid, "hi")
        self.assertEqual([s.session_id for s in self.client.list_sessions(user).sessions], [sid])

    def test_any_token_is_the_same_tenant(self):
        user = uid("u")
        sid = self.client.create(user).session_id
        other = self.server.client("whatever-token")
        self.assertEqual(other.get(sid).session_id, sid)
