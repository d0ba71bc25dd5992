"""ListSessions filters (states, agent_id, create/update time ranges,
metadata equality on the blind index), the team view (user_id empty: the
tenant's sessions, newest activity first), pagination exactly once under
the per-call examine bound, bounds on the repeated filters, and no
plaintext metadata in the session_terms index."""
import json
import subprocess
import time

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2

from harness import ENGRAM_CLI, M, ServerTestCase, clean_env, pb

ACTIVE, ENDED, EXPIRED = pb.SESSION_STATE_ACTIVE, pb.SESSION_STATE_ENDED, pb.SESSION_STATE_EXPIRED
TENANTS = ["team%d" % i for i in range(16)]
Eq = pb.ListSessionsRequest.MetadataEquals


def ts(ns):
    t = timestamp_pb2.Timestamp()
    t.FromNanoseconds(ns)
    return t


class SessionListTest(ServerTestCase):
    server_kwargs = {"tokens": [(t, "agent", "tok-" + t) for t in TENANTS]}
    next_tenant = 0

    def tenant(self):
        """A client of a tenant no other test uses: its team view is ours."""
        cls = type(self)
        t = TENANTS[cls.next_tenant]
        cls.next_tenant += 1
        return self.server.client("tok-" + t)

    def create(self, c, user, **fields):
        return c.call("CreateSession", pb.CreateSessionRequest(
            session=pb.Session(user_id=user, **fields)))

    def ls(self, c, **kw):
        return c.call("ListSessions", pb.ListSessionsRequest(**kw))

    def ids(self, c, **kw):
        """Every page of a listing: ids in order, with the pages' sizes."""
        out, sizes, tok = [], [], ""
        for _ in range(1000):
            r = self.ls(c, page_token=tok, **kw)
            out += [s.session_id for s in r.sessions]
            sizes.append(len(r.sessions))
            tok = r.next_page_token
            if not tok:
                return out, sizes
        self.fail("listing did not end")

    # ---- the team view ----------------------------------------------------------

    def test_team_view_newest_activity_first_across_users(self):
        c = self.tenant()
        a = self.create(c, "alice").session_id
        b = self.create(c, "bob").session_id
        d = self.create(c, "carol").session_id
        self.assertEqual(self.ids(c)[0], [d, b, a])
        # An append is activity: alice's session moves to the front.
        c.append(a, M("hello"))
        self.assertEqual(self.ids(c)[0], [a, d, b])
        # With user_id: that user's only, as before.
        self.assertEqual(self.ids(c, user_id="bob")[0], [b])
        # Another tenant sees none of them.
        self.assertEqual(self.ids(self.tenant())[0], [])

    def test_pagination_exactly_once(self):
        c = self.tenant()
        made = [self.create(c, "u%d" % (i % 3)).session_id for i in range(23)]
        got, sizes = self.ids(c, page_size=5)
        self.assertEqual(got, made[::-1])
        self.assertEqual(sizes, [5, 5, 5, 5, 3])
        got, _ = self.ids(c, user_id="u1", page_size=2)
        self.assertEqual(got, [s for i, s in enumerate(made) if i % 3 == 1][::-1])

    # ---- filters --------------------------------------------------------------------

    def test_states_filter_with_derived_expired(self):
        c = self.tenant()
        live = self.create(c, "u").session_id
        ended = self.create(c, "u").session_id
        c.call("EndSession", pb.EndSessionRequest(session_id=ended))
        exp = self.create(c, "u", ttl_seconds=1).session_id
        deadline = time.monotonic() + 10
        while c.get(exp).state != EXPIRED:
            self.assertLess(time.monotonic(), deadline, "session did not expire")
            time.sleep(0.05)
        for user in ("", "u"):
            self.assertEqual(self.ids(c, user_id=user, states=[ACTIVE])[0], [live])
            self.assertEqual(self.ids(c, user_id=user, states=[ENDED])[0], [ended])
            self.assertEqual(self.ids(c, user_id=user, states=[EXPIRED])[0], [exp])
            self.assertEqual(sorted(self.ids(c, user_id=user, states=[ACTIVE, ENDED])[0]),
                             sorted([live, ended]))
            self.assertEqual(len(self.ids(c, user_id=user)[0]), 3)

    def test_agent_filter(self):
        c = self.tenant()
        a1 = self.create(c, "u", agent_id="planner").session_id
        self.create(c, "u", agent_id="coder")
        a3 = self.create(c, "v", agent_id="planner").session_id
        self.assertEqual(self.ids(c, agent_id="planner")[0], [a3, a1])
        self.assertEqual(self.ids(c, user_id="u", agent_id="planner")[0], [a1])
        self.assertEqual(self.ids(c, agent_id="nobody")[0], [])

    def test_time_ranges(self):
        c = self.tenant()
        s = [self.create(c, "u") for _ in range(4)]
        t = [x.create_time.ToNanoseconds() for x in s]
        ids = [x.session_id for x in s]
        for user in ("", "u"):
            got = self.ids(c, user_id=user, create_time_from=ts(t[1]), create_time_to=ts(t[3]))[0]
            self.assertEqual(got, [ids[2], ids[1]], "from inclusive, to exclusive")
            self.assertEqual(self.ids(c, user_id=user, create_time_to=ts(t[1]))[0], [ids[0]])
            self.assertEqual(self.ids(c, user_id=user, create_time_from=ts(t[3]))[0], [ids[3]])
        # An update moves update_time (and activity), not create_time.
        u = c.call("UpdateSession", pb.UpdateSessionRequest(
            session_id=ids[0], session=pb.Session(agent_id="x"),
            update_mask=field_mask_pb2.FieldMask(paths=["agent_id"])))
        ut = u.update_time.ToNanoseconds()
        for user in ("", "u"):
            self.assertEqual(self.ids(c, user_id=user, update_time_from=ts(ut))[0], [ids[0]])
            self.assertEqual(sorted(self.ids(c, user_id=user, update_time_to=ts(ut))[0]),
                             sorted(ids[1:]))
        self.assertInvalid(self.ls, c, create_time_from=ts(t[2]), create_time_to=ts(t[1]),
                           field="create_time_to")
        self.assertInvalid(self.ls, c, update_time_from=ts(t[2]), update_time_to=ts(t[2]),
                           field="update_time_to")

    def test_metadata_equals(self):
        c = self.tenant()
        a = self.create(c, "u", metadata={"project": "apollo", "env": "prod"}).session_id
        b = self.create(c, "v", metadata={"project": "apollo", "env": "dev"}).session_id
        g = self.create(c, "u", metadata={"project": "gemini", "env": "prod"}).session_id
        self.create(c, "u")
        got = lambda *eqs, **kw: sorted(self.ids(c, metadata_equals=[Eq(key=k, value=v) for k, v in eqs], **kw)[0])
        self.assertEqual(got(("project", "apollo")), sorted([a, b]))
        self.assertEqual(got(("project", "apollo"), ("env", "prod")), [a])
        self.assertEqual(got(("project", "apollo"), user_id="v"), [b])
        self.assertEqual(got(("project", "apollo"), states=[ENDED]), [])
        # Matches nothing: no such pair, a value under another key, a prefix.
        self.assertEqual(got(("project", "mercury")), [])
        self.assertEqual(got(("env", "apollo")), [])
        self.assertEqual(got(("project", "apoll")), [])
        # UpdateSession re-indexes the metadata it replaces.
        c.call("UpdateSession", pb.UpdateSessionRequest(
            session_id=a, session=pb.Session(metadata={"project": "mercury"}),
            update_mask=field_mask_pb2.FieldMask(paths=["metadata"])))
        self.assertEqual(got(("project", "mercury")), [a])
        self.assertEqual(got(("project", "apollo")), [b])
        self.assertEqual(got(("env", "prod")), [g])
        # Another tenant's identical pair is a different term.
        other = self.tenant()
        self.create(other, "u", metadata={"project": "apollo"})
        self.assertEqual(got(("project", "apollo")), [b])

    def test_metadata_first_64_keys_indexed(self):
        c = self.tenant()
        meta = {"k%03d" % i: "v" for i in range(70)}
        sid = self.create(c, "u", metadata=meta).session_id
        eq = lambda k: self.ids(c, metadata_equals=[Eq(key=k, value="v")])[0]
        self.assertEqual(eq("k000"), [sid])
        self.assertEqual(eq("k063"), [sid])
        self.assertEqual(eq("k064"), [], "past the first 64 keys: not indexed")

    def test_examine_bound_returns_short_pages_with_token(self):
        c = self.tenant()
        want = [self.create(c, "u", agent_id="rare").session_id]
        want += [self.create(c, "u", agent_id="common").session_id for _ in range(25)]
        want.append(self.create(c, "u", agent_id="rare").session_id)
        # page_size 1 examines at most 10 sessions a call: the 25 between
        # the two rare ones take empty pages, each with a token.
        got, sizes = self.ids(c, agent_id="rare", page_size=1)
        self.assertEqual(got, [want[-1], want[0]])
        self.assertIn(0, sizes)
        self.assertLessEqual(len(sizes), 1 + 27 // 10 + 1)
        got, sizes = self.ids(c, metadata_equals=[], agent_id="common", page_size=30)
        self.assertEqual(got, want[1:-1][::-1])
        self.assertEqual(sizes, [25])

    def test_metadata_pagination_exactly_once(self):
        c = self.tenant()
        made = [self.create(c, "u%d" % (i % 2), metadata={"team": "x" if i % 3 else "y"}).session_id
                for i in range(20)]
        got, _ = self.ids(c, metadata_equals=[Eq(key="team", value="x")], page_size=3)
        self.assertEqual(got, sorted(s for i, s in enumerate(made) if i % 3))

    # ---- bad input ------------------------------------------------------------------

    def test_bad_filters_named(self):
        c = self.tenant()
        self.assertInvalid(self.ls, c, states=[ACTIVE] * 9, field="states")
        self.assertInvalid(self.ls, c, states=[ACTIVE] * 8 + [], user_id="bad id", field="user_id")
        self.assertInvalid(self.ls, c, states=[0], field="states")
        self.assertInvalid(self.ls, c, states=[7], field="states")
        self.assertInvalid(self.ls, c, metadata_equals=[Eq(key="k", value="v")] * 17,
                           field="metadata_equals")
        self.assertEqual(list(self.ls(c, metadata_equals=[Eq(key="k", value="v")] * 16).sessions), [])
        self.assertInvalid(self.ls, c, metadata_equals=[Eq(key="", value="v")],
                           field="metadata_equals[0].key")
        self.assertInvalid(self.ls, c, agent_id="a b", field="agent_id")
        self.assertInvalid(self.ls, c, create_time_from=ts(-10**9), field="create_time_from")

    def test_token_of_another_listing_refused(self):
        c = self.tenant()
        for i in range(3):
            self.create(c, "u", metadata={"m": "1"})
        team = self.ls(c, page_size=1).next_page_token
        user = self.ls(c, user_id="u", page_size=1).next_page_token
        meta = self.ls(c, metadata_equals=[Eq(key="m", value="1")], page_size=1).next_page_token
        self.assertTrue(team and user and meta)
        self.assertInvalid(self.ls, c, user_id="u", page_token=team, field="page_token")
        self.assertInvalid(self.ls, c, page_token=user, field="page_token")
        self.assertInvalid(self.ls, c, page_token=meta, field="page_token")
        self.assertInvalid(self.ls, c, metadata_equals=[Eq(key="m", value="1")], page_token=team,
                           field="page_token")
        self.assertInvalid(self.ls, c, page_token="zz", field="page_token")

    # ---- at rest -----------------------------------------------------------------

    def test_no_plaintext_metadata_in_index(self):
        c = self.tenant()
        self.create(c, "u", metadata={"secretkeyname": "secretvaluetext"})
        p = subprocess.run(["mdb_dump", "-s", "session_terms", self.server.data_dir],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.decode().splitlines()
        raw = b"".join(bytes.fromhex(l.strip()) for l in lines[lines.index("HEADER=END") + 1:-1])
        self.assertGreater(len(raw), 0, "the pair should be indexed")
        for s in (b"secretkeyname", b"secretvaluetext"):
            self.assertNotIn(s, raw)
        got = self.ids(c, metadata_equals=[Eq(key="secretkeyname", value="secretvaluetext")])[0]
        self.assertEqual(len(got), 1)

    # ---- CLI ---------------------------------------------------------------------

    def test_cli_filters(self):
        c = self.tenant()
        tok = "tok-" + TENANTS[type(self).next_tenant - 1]
        a = self.create(c, "alice", agent_id="bot", metadata={"proj": "x"}).session_id
        b = self.create(c, "bob", agent_id="bot").session_id
        c.call("EndSession", pb.EndSessionRequest(session_id=b))

        def cli(*args):
            p = subprocess.run([ENGRAM_CLI, "--target", self.server.addr, "--token", tok, "--json",
                                "session", "list"] + list(args), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=20, stdin=subprocess.DEVNULL,
                               env=clean_env())
            self.assertEqual(p.returncode, 0, p.stderr.decode())
            return [s["sessionId"] for s in json.loads(p.stdout).get("sessions", [])]

        self.assertEqual(cli(), [b, a])
        self.assertEqual(cli("--states", "ended"), [b])
        self.assertEqual(cli("--agent", "bot", "--meta", "proj=x"), [a])
        self.assertEqual(cli("--user", "alice"), [a])
        self.assertEqual(cli("--created-to", "1"), [])
        self.assertEqual(cli("--updated-from", "1"), [b, a])


if __name__ == "__main__":
    import unittest
    unittest.main()
