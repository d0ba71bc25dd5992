"""Bad input: INVALID_ARGUMENT naming the field, nothing written, never UNKNOWN.
Includes non-UTF-8 strings sent as raw bytes and limits at their edges."""
import grpc

from harness import SERVING, M, ServerTestCase, pb, uid

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
SVC = "/engram.v1.SessionService/"

PLACEHOLDER = b"@@UTF8PLACEHOLDER@@"  # 19 bytes, patched into invalid UTF-8
BAD_UTF8 = [
    b"\xff\xfe",              # never valid bytes
    b"\xc0\xaf",              # overlong '/'
    b"\xe0\x80\xaf",          # overlong, 3 bytes
    b"\xed\xa0\x80",          # UTF-16 surrogate
    b"\xf4\x90\x80\x80",      # above U+10FFFF
    b"\xe2\x82",              # truncated sequence
    b"\x80",                  # lone continuation byte
]


def patched(req, bad):
    """Serializes req and replaces PLACEHOLDER (present exactly once) with
    `bad` padded to the same length, so every length prefix stays right."""
    raw = req.SerializeToString()
    assert raw.count(PLACEHOLDER) == 1, raw
    return raw.replace(PLACEHOLDER, b"a" * (len(PLACEHOLDER) - len(bad)) + bad)


P = PLACEHOLDER.decode()


class ValidationTest(ServerTestCase):

    def new_session(self):
        return self.client.create(uid("u")).session_id

    # -- CreateSession ---------------------------------------------------------

    def test_create_requires_user_id(self):
        e = self.assertStatus(INVALID, self.client.call, "CreateSession", pb.CreateSessionRequest())
        self.assertTrue("user_id" in e.details() or "session" in e.details(), e.details())
        self.assertInvalid(self.client.create, "", field="user_id")

    def test_create_bad_ids(self):
        bad = ["has space", "x" * 129, "a/b", "tab\there", "ü", "semi;colon", "new\nline"]
        for v in bad:
            self.assertInvalid(self.client.create, v, field="user_id")
            sid = v
            self.assertInvalid(self.client.create, uid("u"), session_id=sid, field="session_id")
            self.assertInvalid(self.client.create, uid("u"), agent_id=v, field="agent_id")
        # nothing was written under an id that was refused for another field
        sid = uid("s")
        self.assertInvalid(self.client.create, uid("u"), session_id=sid, agent_id="bad agent",
                           field="agent_id")
        self.assertStatus(NOT_FOUND, self.client.get, sid)

    def test_create_metadata_limit_default(self):
        user = uid("u")
        ok = self.client.create(user, metadata={"k": "v" * 16383})
        self.assertEqual(len(ok.metadata["k"]), 16383)
        sid = uid("s")
        self.assertInvalid(self.client.create, user, session_id=sid,
                           metadata={"k": "v" * 16384}, field="metadata")
        self.assertStatus(NOT_FOUND, self.client.get, sid)

    # -- by-id RPCs --------------------------------------------------------------

    def test_empty_session_id_everywhere(self):
        c = self.client
        calls = [
            ("GetSession", pb.GetSessionRequest()),
            ("EndSession", pb.EndSessionRequest()),
            ("DeleteSession", pb.DeleteSessionRequest()),
            ("AppendMessages", pb.AppendMessagesRequest(messages=[M("x")])),
            ("ListMessages", pb.ListMessagesRequest()),
            ("GetContext", pb.GetContextRequest()),
            ("UpdateSummary", pb.UpdateSummaryRequest(summary="s")),
        ]
        for method, req in calls:
            with self.subTest(method=method):
                self.assertInvalid(c.call, method, req, field="session_id")

    def test_malformed_session_id_never_unknown(self):
        # Either INVALID_ARGUMENT (naming session_id) or NOT_FOUND is fine.
        for v in ["x" * 129, "has space", "a/b"]:
            for fn in (self.client.get, self.client.list_messages, self.client.context):
                try:
                    fn(v)
                    self.fail("%s(%r) succeeded" % (fn.__name__, v))
                except grpc.RpcError as e:
                    self.assertIn(e.code(), (INVALID, NOT_FOUND), e.details())
                    if e.code() == INVALID:
                        self.assertIn("session_id", e.details())

    # -- AppendMessages ----------------------------------------------------------

    def test_append_field_errors(self):
        sid = self.new_session()
        c = self.client
        self.assertInvalid(c.append, sid, field="messages")
        self.assertInvalid(c.append, sid, pb.Message(content="x"), field="messages[0].role")
        for role in (99, 5, -1):
            m = pb.Message(content="x")
            m.role = role
            self.assertInvalid(c.append, sid, m, field="messages[0].role")
        self.assertInvalid(c.append, sid, M("ok"), M("x", token_count=-1),
                           field="messages[1].token_count")
        for cid in ["bad id", "x" * 129, "é"]:
            self.assertInvalid(c.append, sid, M("x", client_message_id=cid),
                               field="messages[0].client_message_id")
        self.assertEqual(c.append(sid, M("x", client_message_id="y" * 128)).messages[0].seq, 1)
        self.assertEqual(c.get(sid).message_count, 1)
        self.assertEqual(len(c.all_messages(sid)), 1)

    def test_append_content_limit_default(self):
        sid = self.new_session()
        ok = self.client.append(sid, M("c" * 65536))
        self.assertEqual(len(ok.messages[0].content), 65536)
        self.assertInvalid(self.client.append, sid, M("c" * 65537), field="messages[0].content")
        self.assertInvalid(self.client.append, sid, M("ok"), M("c" * 65537),
                           field="messages[1].content")
        self.assertEqual(self.client.get(sid).message_count, 1)

    def test_append_metadata_limit_default(self):
        sid = self.new_session()
        self.client.append(sid, M("x", metadata={"k": "v" * 16383}))
        self.assertInvalid(self.client.append, sid, M("x", metadata={"k": "v" * 16384}),
                           field="messages[0].metadata")
        self.assertEqual(self.client.get(sid).message_count, 1)

    def test_output_only_message_fields_ignored_or_refused(self):
        sid = self.new_session()
        m = M("x")
        m.seq = 77
        m.session_id = "some-other-session"
        try:
            r = self.client.append(sid, m)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), INVALID, e.details())
            return
        self.assertEqual(r.messages[0].seq, 1)
        got = self.client.all_messages(sid)
        self.assertEqual([(x.seq, x.session_id) for x in got], [(1, sid)])

    # -- non-UTF-8 strings -------------------------------------------------------

    def test_invalid_utf8_content(self):
        sid = self.new_session()
        self.client.append(sid, "first")
        for bad in BAD_UTF8:
            with self.subTest(bad=bad):
                req = pb.AppendMessagesRequest(session_id=sid, messages=[M("ok"), M(P)])
                self.assertInvalid(self.client.raw, SVC + "AppendMessages", patched(req, bad),
                                   field="messages[1].content")
        self.assertEqual(self.client.get(sid).message_count, 1)
        self.assertEqual([m.content for m in self.client.all_messages(sid)], ["first"])
        # control: the same raw path with valid (4-byte) UTF-8 is accepted
        req = pb.AppendMessagesRequest(session_id=sid, messages=[M(P)])
        out = pb.AppendMessagesResponse.FromString(
            self.client.raw(SVC + "AppendMessages", patched(req, "🎉".encode())))
        self.assertEqual(out.messages[0].seq, 2)
        self.assertTrue(out.messages[0].content.endswith("🎉"))

    def test_invalid_utf8_other_fields(self):
        sid = self.new_session()
        bad = b"\xff\xfe"
        cases = [
            ("AppendMessages", pb.AppendMessagesRequest(
                session_id=sid, messages=[M("x", metadata={"k": P})]), "messages[0].metadata"),
            ("AppendMessages", pb.AppendMessagesRequest(
                session_id=sid, messages=[M("x", metadata={P: "v"})]), "messages[0].metadata"),
            ("CreateSession", pb.CreateSessionRequest(session=pb.Session(
                user_id=uid("u"), metadata={"k": P})), "session.metadata"),
            ("CreateSession", pb.CreateSessionRequest(session=pb.Session(
                user_id=uid("u") + P)), "user_id"),
            ("UpdateSummary", pb.UpdateSummaryRequest(
                session_id=sid, summary="sum " + P, through_seq=0), "summary"),
            ("ListSessions", pb.ListSessionsRequest(user_id=uid("u") + P), "user_id"),
            ("ListMessages", pb.ListMessagesRequest(session_id=sid, page_token=P), "page_token"),
            ("GetSession", pb.GetSessionRequest(session_id=P), "session_id"),
            ("AppendMessages", pb.AppendMessagesRequest(
                session_id=sid, messages=[M("x", client_message_id=P)]),
             "messages[0].client_message_id"),
        ]
        for method, req, field in cases:
            with self.subTest(method=method, field=field):
                self.assertInvalid(self.client.raw, SVC + method, patched(req, bad), field=field)
        g = self.client.get(sid)
        self.assertEqual((g.message_count, g.summary), (0, ""))

    def test_unknown_fields_are_ignored(self):
        # A newer client may send fields this server does not know.
        sid = self.new_session()
        raw = pb.GetSessionRequest(session_id=sid).SerializeToString()
        raw += b"\xf8\x06\x01" + b"\x82\x07\x03abc"  # field 111 varint, field 112 bytes
        self.assertEqual(pb.Session.FromString(self.client.raw(SVC + "GetSession", raw)).session_id,
                         sid)

    def test_undecodable_request(self):
        for method in ["CreateSession", "AppendMessages", "ListMessages", "GetContext"]:
            for junk in [b"\xff\xff\xff", b"\x0a\x05ab", b"\x12\x80"]:
                with self.subTest(method=method, junk=junk):
                    self.assertStatus(INVALID, self.client.raw, SVC + method, junk)
        self.assertEqual(self.client.health(), SERVING)


class LimitsTest(ServerTestCase):
    server_args = ("--max-append-messages", "3", "--max-content-bytes", "100",
                   "--max-metadata-bytes", "64")

    def new_session(self):
        return self.client.create(uid("u")).session_id

    def test_max_append_messages(self):
        sid = self.new_session()
        self.assertSeqs(self.client.append(sid, "a", "b", "c").messages, [1, 2, 3])
        self.assertInvalid(self.client.append, sid, "a", "b", "c", "d", field="messages")
        self.assertEqual(self.client.get(sid).message_count, 3)

    def test_max_content_bytes(self):
        sid = self.new_session()
        self.client.append(sid, "x" * 100)
        self.client.append(sid, "é" * 50)  # 100 bytes
        self.assertInvalid(self.client.append, sid, "x" * 101, field="messages[0].content")
        self.assertInvalid(self.client.append, sid, "é" * 50 + "a", field="messages[0].content")
        self.assertInvalid(self.client.append, sid, "a", "b", "é" * 51,
                           field="messages[2].content")
        self.assertEqual(self.client.get(sid).message_count, 2)
        self.assertEqual([len(m.content.encode()) for m in self.client.all_messages(sid)],
                         [100, 100])

    def test_summary_limit(self):
        sid = self.new_session()
        self.client.append(sid, "a")
        self.assertEqual(self.client.update_summary(sid, "s" * 100, 1).summary, "s" * 100)
        self.assertInvalid(self.client.update_summary, sid, "s" * 101, 1, field="summary")
        self.assertEqual(self.client.get(sid).summary, "s" * 100)

    def test_max_metadata_bytes_message(self):
        sid = self.new_session()
        ok = [{"ab": "x" * 62}, {"a": "1" * 31, "b": "2" * 31}, {"k" * 64: ""}]
        bad = [{"ab": "x" * 63}, {"a": "1" * 31, "b": "2" * 32}, {"k" * 65: ""},
               {"é": "x" * 63}]
        for md in ok:
            self.client.append(sid, M("m", metadata=md))
        for md in bad:
            self.assertInvalid(self.client.append, sid, M("m", metadata=md),
                               field="messages[0].metadata")
        self.assertEqual(self.client.get(sid).message_count, len(ok))

    def test_max_metadata_bytes_session(self):
        user = uid("u")
        self.client.create(user, metadata={"a": "1" * 31, "b": "2" * 31})
        sid = uid("s")
        self.assertInvalid(self.client.create, user, session_id=sid,
                           metadata={"a": "1" * 31, "b": "2" * 32}, field="metadata")
        self.assertStatus(NOT_FOUND, self.client.get, sid)
