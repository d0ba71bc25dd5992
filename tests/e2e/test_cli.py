"""The engram CLI against the real server."""
import base64
import hashlib
import json
import os
import subprocess

from harness import ENGRAM_CLI, E2ETestCase, Server, ServerTestCase, clean_env, uid

ACME = "acme-secret"
ACME_HASH = "307c609f87da43c3d563428a4f7efdf9857f4871fd10465732c4ab11a985a08c"


def cli(*args, target=None, token=None, json_out=False, timeout=20):
    argv = [ENGRAM_CLI]
    if target:
        argv += ["--target", target]
    if token:
        argv += ["--token", token]
    if json_out:
        argv += ["--json"]
    argv += [str(a) for a in args]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       stdin=subprocess.DEVNULL, env=clean_env())
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


class CliCase:
    def require_cli(self):
        if not os.path.isfile(ENGRAM_CLI):
            self.fail("engram CLI not found at %s (set ENGRAM_CLI)" % ENGRAM_CLI)

    def ok(self, *args, **kw):
        rc, out, err = cli(*args, **kw)
        self.assertEqual(rc, 0, "engram %s: rc=%d stderr=%r stdout=%r" % (args, rc, err, out))
        return out

    def j(self, *args, **kw):
        out = self.ok(*args, json_out=True, target=self.server.addr, **kw)
        try:
            return json.loads(out)
        except ValueError:
            self.fail("engram --json %s printed no JSON: %r" % (args, out))


class CliTest(CliCase, ServerTestCase):

    def setUp(self):
        super().setUp()
        self.require_cli()

    def test_round_trip_json(self):
        user, sid = uid("u"), uid("s")
        s = self.j("session", "create", "--user", user, "--agent", "agent-1", "--id", sid,
                   "--meta", "k=v", "--meta", "lang=fr")
        self.assertEqual(s["sessionId"], sid)
        self.assertEqual(s["userId"], user)
        self.assertEqual(s["agentId"], "agent-1")
        self.assertEqual(s["state"], "SESSION_STATE_ACTIVE")
        self.assertEqual(s["metadata"], {"k": "v", "lang": "fr"})
        self.assertIn(s.get("messageCount", "0"), ("0",))
        self.assertIn("createTime", s)
        g = self.client.get(sid)
        self.assertEqual((g.user_id, g.agent_id, dict(g.metadata)),
                         (user, "agent-1", {"k": "v", "lang": "fr"}))

        a = self.j("message", "append", sid, "--role", "user", "--content", "hello from cli",
                   "--client-id", "cli-1")
        self.assertEqual(a["messages"][0]["seq"], "1")
        self.assertEqual(a["session"]["messageCount"], "1")
        a = self.j("message", "append", sid, "--role", "assistant", "--content", "hi back ✓")
        self.assertEqual(a["messages"][0]["seq"], "2")
        # retry with the same client id: original seq, nothing written
        a = self.j("message", "append", sid, "--role", "user", "--content", "hello from cli",
                   "--client-id", "cli-1")
        self.assertEqual(a["messages"][0]["seq"], "1")
        self.assertEqual(a["session"]["messageCount"], "2")

        ls = self.j("message", "list", sid)
        self.assertEqual([m["seq"] for m in ls["messages"]], ["1", "2"])
        self.assertEqual([m["role"] for m in ls["messages"]], ["ROLE_USER", "ROLE_ASSISTANT"])
        self.assertEqual([m["content"] for m in ls["messages"]], ["hello from cli", "hi back ✓"])
        self.assertEqual(ls["messages"][0]["clientMessageId"], "cli-1")
        self.assertEqual(ls["messages"][0]["tokenCount"], 4)  # int32: a JSON number
        newest = self.j("message", "list", sid, "--newest", "--page-size", "1")
        self.assertEqual([m["seq"] for m in newest["messages"]], ["2"])
        self.assertTrue(newest.get("nextPageToken"))

        ctx = self.j("context", sid, "--max-messages", "1")
        self.assertEqual([m["content"] for m in ctx["messages"]], ["hi back ✓"])
        self.assertIs(ctx.get("truncated"), True)
        ctx = self.j("context", sid, "--max-tokens", "1000")
        self.assertEqual(len(ctx["messages"]), 2)
        self.assertEqual(ctx["totalTokens"], str(4 + 3))

        su = self.j("summary", "update", sid, "--through-seq", "1", "--text", "greetings")
        self.assertEqual((su["summary"], su["summaryThroughSeq"]), ("greetings", "1"))
        ctx = self.j("context", sid)
        self.assertEqual(ctx["summary"], "greetings")
        self.assertEqual([m["seq"] for m in ctx["messages"]], ["2"])

        self.assertEqual(self.j("session", "get", sid)["summary"], "greetings")
        lst = self.j("session", "list", "--user", user)
        self.assertEqual([x["sessionId"] for x in lst["sessions"]], [sid])

        e = self.j("session", "end", sid)
        self.assertEqual(e["state"], "SESSION_STATE_ENDED")
        d = self.j("session", "delete", sid)
        self.assertEqual(d["deletedMessages"], "2")
        rc, out, err = cli("session", "get", sid, target=self.server.addr)
        self.assertEqual(rc, 4, (out, err))
        self.assertIn("NOT_FOUND", err)

    def test_generated_id_and_plain_output(self):
        user = uid("u")
        out = self.ok("session", "create", "--user", user, target=self.server.addr)
        sessions = self.client.list_sessions(user).sessions
        self.assertEqual(len(sessions), 1)
        self.assertIn(sessions[0].session_id, out)

    def test_rpc_errors_exit_by_status_with_its_name(self):
        rc, out, err = cli("message", "append", uid("nope"), "--role", "user", "--content", "x",
                           target=self.server.addr)
        self.assertEqual(rc, 4, (out, err))
        self.assertIn("NOT_FOUND", err)
        sid = self.client.create(uid("u")).session_id
        rc, out, err = cli("message", "list", sid, "--page-size", "-1", target=self.server.addr)
        self.assertNotEqual(rc, 0, (out, err))
        if rc == 5:  # reached the server (not refused locally)
            self.assertIn("INVALID_ARGUMENT", err)
        rc, out, err = cli("summary", "update", sid, "--through-seq", "9", "--text", "t",
                           target=self.server.addr)
        self.assertEqual(rc, 5, (out, err))
        self.assertIn("INVALID_ARGUMENT", err)
        self.assertIn("through_seq", err)

    def test_health(self):
        out = self.ok("health", target=self.server.addr)
        self.assertIn("serving", out.lower())
        self.assertEqual(self.j("health"), {"status": "SERVING"})

    def test_unreachable_server_fails(self):
        # A port nobody listens on (the server's own port + nothing is fine:
        # use port 1, which is never served on loopback in tests).
        rc, out, err = cli("session", "get", "x", target="127.0.0.1:1", timeout=30)
        self.assertNotEqual(rc, 0)
        self.assertIn("UNAVAILABLE", err)

    def test_usage_error(self):
        rc, _, _ = cli("no-such-command", target=self.server.addr)
        self.assertNotEqual(rc, 0)
        rc, _, _ = cli("session", "create", target=self.server.addr)  # --user missing
        self.assertNotEqual(rc, 0)
        self.assertEqual(len(self.client.list_sessions("u").sessions), 0)


class CliOfflineTest(CliCase, E2ETestCase):

    def setUp(self):
        self.require_cli()

    def test_token_hash(self):
        self.assertEqual(hashlib.sha256(ACME.encode()).hexdigest(), ACME_HASH)
        out = self.ok("token", "hash", ACME)
        self.assertEqual(out.strip(), ACME_HASH)
        out = self.ok("token", "hash", "ops-secret")
        self.assertEqual(out.strip(), hashlib.sha256(b"ops-secret").hexdigest())

    def test_keygen(self):
        lines = []
        for _ in range(2):
            out = self.ok("keygen").strip()
            parts = out.split()
            self.assertEqual(len(parts), 3, out)
            self.assertEqual(parts[:2], ["key", "1"])
            self.assertEqual(len(base64.b64decode(parts[2], validate=True)), 32)
            lines.append(out)
        self.assertNotEqual(lines[0], lines[1], "keygen printed the same key twice")
        # the printed line is a usable keyring entry
        srv = Server()
        try:
            path = os.path.join(srv.tmp, "keyring")
            with open(path, "w") as f:
                f.write("primary 1\n" + lines[0] + "\n")
            os.chmod(path, 0o600)
            srv.keyring = path
            srv.start()
            c = srv.client()
            sid = c.create(uid("u"), metadata={"a": "b"}).session_id
            c.append(sid, "with a keygen key")
            srv.restart()
            self.assertEqual([m.content for m in srv.client().all_messages(sid)],
                             ["with a keygen key"])
            self.assertFalse(os.path.exists(os.path.join(srv.data_dir, "keyring")),
                             "--keyring given, but DATA_DIR/keyring was created too")
        finally:
            srv.close()


class CliAuthTest(CliCase, ServerTestCase):
    server_kwargs = {"tokens": [("acme", "agent", ACME)]}

    def setUp(self):
        super().setUp()
        self.require_cli()

    def test_token_flag(self):
        user = uid("u")
        s = self.j("session", "create", "--user", user, token=ACME)
        self.assertEqual(s["userId"], user)
        rc, out, err = cli("session", "get", s["sessionId"], target=self.server.addr)
        self.assertEqual(rc, 6, (out, err))
        self.assertIn("UNAUTHENTICATED", err)
        rc, out, err = cli("session", "get", s["sessionId"], target=self.server.addr,
                           token="wrong")
        self.assertEqual(rc, 6, (out, err))
        self.assertIn("UNAUTHENTICATED", err)
        out = self.ok("health", target=self.server.addr)
        self.assertIn("serving", out.lower())
