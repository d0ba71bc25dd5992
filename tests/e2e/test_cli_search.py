"""`engram message search` (and the search fields of `session create` and
`message append`) against a real engramd: flags to request fields, JSON
output, the team view without --user, paging with --page-token, usage
errors before any call, the server's INVALID_ARGUMENT as exit 5, help and
completion."""
import random
import string

from harness import ServerTestCase, uid
from test_cli import CliCase, cli


def word():
    return "".join(random.choice(string.ascii_lowercase) for _ in range(12))


class CliSearchTest(CliCase, ServerTestCase):
    def setUp(self):
        super().setUp()
        self.require_cli()

    def session(self, user, *extra):
        return self.j("session", "create", "--user", user, *extra)["sessionId"]

    def append(self, sid, role, text, *extra):
        return self.j("message", "append", sid, "--role", role, "--content", text, *extra)

    def search(self, *args):
        return self.j("message", "search", *args).get("results", [])

    def test_search_with_filters(self):
        user, w = uid("u"), word()
        a = self.session(user, "--agent", "alpha")
        b = self.session(user, "--agent", "beta")
        self.append(a, "user", "%s one" % w)
        t = self.append(a, "assistant", "%s %s two" % (w, w))["messages"][0]["createTime"]
        self.append(b, "tool", "%s three" % w)
        got = self.search("--user", user, "--query", w, "--weights", "1,0,0")
        # "w one" and "w three" tie on bm25: the newer first
        self.assertEqual([(r["sessionId"], r["seq"]) for r in got], [(a, "2"), (b, "1"), (a, "1")])
        self.assertEqual(got[0]["message"]["content"], "%s %s two" % (w, w))
        self.assertEqual(got[0]["userId"], user)
        self.assertIn("bm25", got[0])

        def seqs(*flags):
            return sorted((r["sessionId"], r["seq"]) for r in self.search("--user", user, "--query", w, *flags))

        self.assertEqual(seqs("--session", b), [(b, "1")])
        self.assertEqual(seqs("--session", "%s,%s" % (a, b)), seqs())
        self.assertEqual(seqs("--agent", "alpha"), sorted([(a, "1"), (a, "2")]))
        self.assertEqual(seqs("--roles", "assistant,tool"), sorted([(a, "2"), (b, "1")]))
        self.assertEqual(seqs("--states", "active"), seqs())
        self.assertEqual(seqs("--states", "ended"), [])
        self.assertEqual(seqs("--to", t), [(a, "1")])
        self.assertEqual(seqs("--from", t, "--to", "9999999999"), sorted([(a, "2"), (b, "1")]))
        self.assertEqual(seqs("--half-life", "60", "--min-score", "0", "--language", "en"), seqs())

    def test_team_view_pages_and_embedding(self):
        u1, u2, w = uid("u"), uid("u"), word()
        s1, s2 = self.session(u1), self.session(u2)
        self.append(s1, "user", "%s mine" % w, "--embedding", "1,0")
        self.append(s2, "user", "%s theirs" % w, "--embedding", "0,1")
        self.assertEqual(len(self.search("--user", u1, "--query", w)), 1)
        page = self.j("message", "search", "--query", w, "--top-k", "1")
        self.assertEqual(len(page["results"]), 1)
        nxt = self.search("--query", w, "--top-k", "1", "--page-token", page["nextPageToken"])
        self.assertEqual({page["results"][0]["userId"], nxt[0]["userId"]}, {u1, u2})
        by_vec = self.search("--user", u2, "--embedding", "0,1")
        self.assertEqual([(r["sessionId"], r["message"]["embedding"]) for r in by_vec], [(s2, [0, 1])])

    def test_excluded_session(self):
        user, w = uid("u"), word()
        sid = self.session(user, "--exclude-from-search", "--language", "de")
        s = self.j("session", "get", sid)
        self.assertEqual((s["excludeFromSearch"], s["language"]), (True, "de"))
        self.append(sid, "user", w)
        self.assertEqual(self.search("--user", user, "--query", w), [])

    def test_errors(self):
        addr = self.server.addr
        rc, _, err = cli("message", "search", "--user", "u", target=addr)
        self.assertEqual(rc, 2)
        self.assertIn("--query", err)
        rc, _, err = cli("message", "search", "--query", "x", "--weights", "1,2", target=addr)
        self.assertEqual(rc, 2)
        self.assertIn("--weights", err)
        rc, _, err = cli("message", "search", "--query", "x", "--from", "yesterday", target=addr)
        self.assertEqual(rc, 2)
        self.assertIn("--from", err)
        rc, _, err = cli("message", "search", "--query", "x", "--roles", "robot", target=addr)
        self.assertEqual(rc, 2)
        rc, _, err = cli("message", "search", "--query", "x", "--top-k", "101", target=addr)
        self.assertEqual(rc, 5)
        self.assertIn("top_k", err)

    def test_help_and_completion(self):
        rc, out, _ = cli("help")
        self.assertEqual(rc, 0)
        self.assertIn("message search", out)
        rc, script, _ = cli("completion", "bash")
        self.assertEqual(rc, 0)
        for flag in ("--query", "--roles", "--half-life", "--page-token", "--exclude-from-search"):
            self.assertIn(flag, script)
