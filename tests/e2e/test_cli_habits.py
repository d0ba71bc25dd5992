"""The engram CLI's habits (issue 14): --version, global options anywhere,
--token-file, --json with the LSN, stdin for --content/--text, `engram call`,
shortest floats, exit codes, rich error details, completion scripts."""
import glob
import json
import os
import re
import struct
import subprocess
import tempfile
from concurrent import futures

import grpc

from harness import ENGRAM_CLI, REPO, E2ETestCase, ServerTestCase, clean_env, uid
from test_cli import ACME, CliCase

STDIN_MAX = 4 * 1024 * 1024  # CLI_INPUT_MAX: gRPC's default receive limit, which engramd keeps


def run(*args, stdin=None, timeout=30):
    p = subprocess.run([ENGRAM_CLI] + [str(a) for a in args], input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, env=clean_env())
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def shortest_float32(x):
    """The shortest decimal text that reads back as the float32 nearest x."""
    want = struct.unpack("f", struct.pack("f", x))[0]
    for digits in range(1, 10):
        t = "%.*g" % (digits, want)
        if struct.unpack("f", struct.pack("f", float(t)))[0] == want:
            return t
    raise AssertionError(x)


class CliHabitsTest(CliCase, ServerTestCase):

    def setUp(self):
        super().setUp()
        self.require_cli()
        self.t = ["--target", self.server.addr]

    def call(self, *args, want=0, stdin=None):
        rc, out, err = run(*args, stdin=stdin)
        self.assertEqual(rc, want, "engram %s: rc=%d stderr=%r stdout=%r" % (args, rc, err, out))
        return out, err

    def test_version(self):
        out, _ = self.call("--version")
        self.assertEqual(out, "engram 0.16.0\n")
        out, _ = self.call("session", "get", "--version")  # anywhere, even with a word missing
        self.assertEqual(out, "engram 0.16.0\n")

    def test_global_options_anywhere(self):
        user = uid("u")
        out, _ = self.call("session", "create", "--user", user, "--json", *self.t)
        s = json.loads(out)
        out, _ = self.call("session", "get", *self.t, s["sessionId"], "--json")
        self.assertEqual(json.loads(out)["userId"], user)
        out, _ = self.call("--json", "session", "get", s["sessionId"], "--target=" + self.server.addr)
        self.assertEqual(json.loads(out)["userId"], user)
        # a flag's value is never taken for a global option
        out, _ = self.call("message", "append", s["sessionId"], "--role", "user", "--content",
                           "--json", *self.t, "--json")
        self.assertEqual(json.loads(out)["messages"][0]["content"], "--json")

    def test_json_carries_lsn_of_writes(self):
        sid = uid("s")
        out, _ = self.call("session", "create", "--user", uid("u"), "--id", sid, "--json", *self.t)
        s = json.loads(out)
        self.assertRegex(s["engram-lsn"], r"^[1-9][0-9]*$")
        out, _ = self.call("message", "append", sid, "--role", "user", "--content", "x", "--json",
                           *self.t)
        a = json.loads(out)
        self.assertGreater(int(a["engram-lsn"]), int(s["engram-lsn"]))
        # the response's own proto3 JSON is untouched beside it
        self.assertEqual(a["messages"][0]["seq"], "1")
        out, _ = self.call("session", "get", sid, "--json", *self.t)
        self.assertNotIn("engram-lsn", json.loads(out))  # reads carry none
        out, _ = self.call("session", "get", sid, *self.t, "--min-lsn", a["engram-lsn"], "--json")
        self.assertEqual(json.loads(out)["messageCount"], "1")

    def test_content_and_text_from_stdin(self):
        sid = self.client.create(uid("u")).session_id
        text = "line one\nline \"two\" ✓\n"
        self.call("message", "append", sid, "--role", "user", "--content", "-", *self.t,
                  stdin=text.encode())
        self.assertEqual([m.content for m in self.client.all_messages(sid)], [text])
        self.call("summary", "update", sid, "--through-seq", "1", "--text", "-", *self.t,
                  stdin=b"the summary")
        self.assertEqual(self.client.get(sid).summary, "the summary")
        out, _ = self.call("memory", "add", "--user", uid("u"), "--type", "fact", "--text", "-",
                           "--json", *self.t, stdin=b"from stdin")
        self.assertEqual(json.loads(out)["memory"]["text"], "from stdin")
        # at the bound: read whole (the server judges the size); one byte more: usage, no call
        _, err = self.call("message", "append", sid, "--role", "user", "--content", "-", *self.t,
                           want=2, stdin=b"x" * (STDIN_MAX + 1))
        self.assertIn("more than %d bytes" % STDIN_MAX, err)
        rc, out, err = run("message", "append", sid, "--role", "user", "--content", "-", *self.t,
                           stdin=b"x" * STDIN_MAX)
        self.assertNotIn("more than", err)
        self.assertNotEqual(rc, 2, err)
        self.call("message", "append", sid, "--role", "user", "--content", "-", *self.t,
                  want=2, stdin=b"a\0b")
        self.assertEqual(self.client.get(sid).message_count, 1)

    def test_call_unary(self):
        user, sid = uid("u"), uid("s")
        # lowerCamel and .proto names, int64 as string and number, a map, enums by name and number
        req = {"session": {"userId": user, "session_id": sid, "metadata": {"k": "v"},
                           "ttlSeconds": "600"}}
        out, _ = self.call("call", "SessionService/CreateSession", "-d", json.dumps(req), *self.t)
        s = json.loads(out)
        self.assertEqual((s["sessionId"], s["metadata"], s["ttlSeconds"]), (sid, {"k": "v"}, "600"))
        self.assertIn("engram-lsn", s)
        req = {"session_id": sid, "messages": [{"role": "ROLE_USER", "content": "a"},
                                               {"role": 2, "content": "b", "tokenCount": 7}]}
        self.call("call", "engram.v1.SessionService/AppendMessages", "-d", json.dumps(req), *self.t)
        msgs = self.client.all_messages(sid)
        self.assertEqual([(m.role, m.content) for m in msgs], [(1, "a"), (2, "b")])
        self.assertEqual(msgs[1].token_count, 7)
        # -d @file and -d - (stdin); a Timestamp in RFC 3339
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"userId": user, "createTimeFrom": "2000-01-01T00:00:00Z"}, f)
        try:
            out, _ = self.call("call", "SessionService/ListSessions", "-d", "@" + f.name, *self.t)
        finally:
            os.unlink(f.name)
        self.assertEqual([x["sessionId"] for x in json.loads(out)["sessions"]], [sid])
        out, _ = self.call("call", "SessionService/ListSessions", "-d", "-", *self.t,
                           stdin=json.dumps({"user_id": user,
                                             "create_time_from": "2999-01-01T00:00:00Z"}).encode())
        self.assertEqual(json.loads(out).get("sessions", []), [])
        out, _ = self.call("call", "grpc.health.v1.Health/Check", *self.t)  # -d defaults to {}
        self.assertEqual(json.loads(out), {"status": "SERVING"})
        # a FieldMask as proto3 JSON writes it
        req = {"sessionId": sid, "session": {"agentId": "bot"}, "updateMask": "agentId"}
        out, _ = self.call("call", "SessionService/UpdateSession", "-d", json.dumps(req), *self.t)
        self.assertEqual(json.loads(out)["agentId"], "bot")

    def test_call_bad_requests_are_usage_errors(self):
        cases = [
            ({"session": {"userId": "u", "colour": "red"}}, "session.colour: unknown field"),
            ({"session": {"ttlSeconds": "x"}}, "session.ttl_seconds: expected an integer"),
            ({"session": {"metadata": {"k": 1}}}, 'session.metadata["k"]: expected a string'),
            ({"session": {"state": "SESSION_STATE_NOPE"}}, "session.state: expected a value of"),
            ("[]", "expected an object"),
        ]
        for req, why in cases:
            with self.subTest(req=req):
                d = req if isinstance(req, str) else json.dumps(req)
                _, err = self.call("call", "SessionService/CreateSession", "-d", d, *self.t, want=2)
                self.assertIn(why, err)
        _, err = self.call("call", "SessionService/CreateSession", "-d", "{", *self.t, want=2)
        self.assertIn("not one JSON object", err)
        _, err = self.call("call", "SessionService/Nope", *self.t, want=2)
        self.assertIn("no method", err)
        _, err = self.call("call", "ReplicationService/Stream", *self.t, want=2)
        self.assertIn("streams its requests", err)
        self.assertEqual(len(self.client.list_sessions("u").sessions), 0)

    def test_call_dry_run_parses_every_kind(self):
        """--dry-run prints the request as parsed (proto3 JSON out): bytes in
        any base64, 64-bit integers as numbers or strings, enums by number,
        a Timestamp, a FieldMask, floats, a oneof's one member."""
        def dry(method, req):
            out, _ = self.call("call", method, "-d", json.dumps(req), "--dry-run",
                               "--target", "127.0.0.1:1")  # nothing is called
            return json.loads(out)

        got = dry("ReplicationService/Stream",
                  {"replica_id": "r", "epoch": 7, "appliedLsn": "18446744073709551615",
                   "appliedDigest": "-_8"})  # URL-safe, unpadded: 0xfb 0xff
        self.assertEqual((got["epoch"], got["appliedLsn"], got["appliedDigest"]),
                         ("7", "18446744073709551615", "+/8="))
        got = dry("SessionService/ListSessions",
                  {"states": [2, "SESSION_STATE_ACTIVE"], "createTimeFrom": "2026-01-02T03:04:05.25Z"})
        self.assertEqual(got["states"], ["SESSION_STATE_ENDED", "SESSION_STATE_ACTIVE"])
        self.assertEqual(got["createTimeFrom"], "2026-01-02T03:04:05.250Z")
        got = dry("SessionService/UpdateSession", {"updateMask": "agentId,ttlSeconds"})
        self.assertEqual(got["updateMask"], {"paths": ["agent_id", "ttl_seconds"]})
        got = dry("MemoryService/SearchMemories", {"embedding": [0.1, 1e-7, "NaN"], "minScore": 0.7,
                                                   "recencyHalfLifeSeconds": 0.1})
        raw, _ = self.call("call", "MemoryService/SearchMemories", "--dry-run", "-d",
                           '{"recencyHalfLifeSeconds": 0.1, "minScore": 0.7}')
        self.assertIn('"recencyHalfLifeSeconds":0.1,', raw)  # a double, shortest
        self.assertIn('"minScore":0.7,', raw)  # a float, shortest as a float
        self.assertEqual(got["embedding"][:2], [0.1, 1e-7])
        self.assertEqual(got["embedding"][2], "NaN")
        self.assertEqual(got["minScore"], 0.7)
        for req, why in (({"epoch": -1}, "epoch: expected an integer in [0,"),
                         ({"appliedDigest": "a"}, "applied_digest: not base64"),
                         ({"epoch": 1.5}, "epoch: not an integer")):
            _, err = self.call("call", "ReplicationService/Stream", "-d", json.dumps(req),
                               "--dry-run", want=2)
            self.assertIn(why, err)

    def test_call_server_streaming_prints_json_lines(self):
        user = uid("u")
        sid = self.client.create(user).session_id
        self.client.append(sid, "one")
        self.client.append(sid, "two")
        out, _ = self.call("call", "UserService/ExportUser", "-d",
                           json.dumps({"userId": user}), *self.t)
        lines = [json.loads(x) for x in out.splitlines()]
        self.assertGreaterEqual(len(lines), 2, out)
        contents = [m["content"] for x in lines if "messages" in x for m in x["messages"]["messages"]]
        self.assertEqual(contents, ["one", "two"])

    def test_call_list_matches_the_protos(self):
        out, _ = self.call("call", "--list")
        listed = {}
        for line in out.splitlines():
            name, _, note = line.partition(" ")
            listed[name] = note
        want = {}
        for path in glob.glob(os.path.join(REPO, "proto", "engram", "v1", "*.proto")) + \
                [os.path.join(REPO, "proto", "grpc_health", "v1", "health.proto")]:
            with open(path) as f:
                text = f.read()
            pkg = re.search(r"^package ([\w.]+);", text, re.M).group(1)
            for svc, body in re.findall(r"service (\w+) \{(.*?)\n\}", text, re.S):
                for m, cs, ss in re.findall(r"rpc (\w+)\((stream )?\w+\) returns \((stream )?", body):
                    want["%s.%s/%s" % (pkg, svc, m)] = ("client" if cs else "server" if ss else "")
        self.assertEqual(set(listed), set(want))
        for name, kind in want.items():
            self.assertIn(kind, listed[name], name)

    def test_floats_shortest_round_trip(self):
        emb = [0.1, 0.7, 1e-7, 999999986991104.0, 123456.789]  # the largest: the server's bound, float32(1e15)
        out, _ = self.call("memory", "add", "--user", uid("u"), "--type", "fact", "--text", "t",
                           "--importance", "0.7", "--embedding", ",".join(map(repr, emb)),
                           "--json", *self.t)
        self.assertIn('"importance":0.7,', out)
        m = json.loads(out)["memory"]
        texts = re.search(r'"embedding":\[([^\]]*)\]', out).group(1).split(",")
        self.assertEqual(texts, [shortest_float32(x) for x in emb])
        self.assertEqual(m["importance"], 0.7)
        # doubles (durationSeconds, float64): the text Python's repr gives (shortest round trip)
        sid = self.client.create(uid("u")).session_id
        self.client.append(sid, "a")
        self.client.append(sid, "b")
        out, _ = self.call("session", "get", sid, "--json", *self.t)
        d = re.search(r'"durationSeconds":([^,}]*)', out).group(1)
        self.assertEqual(d, repr(float(d)).removesuffix(".0"))

    def test_exit_codes(self):
        self.call("session", "get", "x", "--target", "127.0.0.1:1", want=3)
        self.call("session", "get", uid("nope"), *self.t, want=4)
        sid = self.client.create(uid("u")).session_id
        _, err = self.call("summary", "update", sid, "--through-seq", "9", "--text", "t", *self.t,
                           want=5)
        self.assertIn("INVALID_ARGUMENT", err)
        self.call("session", "create", "--user", uid("other"), "--id", sid, *self.t, want=7)
        self.call("no-such-command", want=2)
        self.call("session", "get", "a", "b", *self.t, want=2)


class CliTokenFileTest(CliCase, ServerTestCase):
    server_kwargs = {"tokens": [("acme", "agent", ACME)]}

    def setUp(self):
        super().setUp()
        self.require_cli()
        self.t = ["--target", self.server.addr]
        self.dir = tempfile.mkdtemp()
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", self.dir]))

    def token_file(self, text, mode=0o600):
        path = os.path.join(self.dir, "token")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def test_token_file(self):
        path = self.token_file("  %s \nsecond line\n" % ACME)
        rc, out, err = run("session", "create", "--user", uid("u"), "--token-file", path, *self.t)
        self.assertEqual(rc, 0, err)
        rc, _, err = run("session", "create", "--user", uid("u"), "--token-file", path,
                         "--token", ACME, *self.t)
        self.assertEqual(rc, 2, err)
        self.assertIn("--token and --token-file exclude each other", err)
        path = self.token_file(ACME, 0o644)
        rc, _, err = run("session", "create", "--user", uid("u"), "--token-file", path, *self.t)
        self.assertEqual(rc, 2, err)
        self.assertIn("chmod 600", err)
        rc, _, err = run("health", "--token-file", os.path.join(self.dir, "none"), *self.t)
        self.assertEqual(rc, 2, err)

    def test_auth_exit_codes(self):
        rc, _, err = run("session", "get", "x", *self.t)
        self.assertEqual(rc, 6, err)
        self.assertIn("UNAUTHENTICATED", err)
        rc, _, err = run("admin", "status", "--token", ACME, *self.t)  # an agent, not an admin
        self.assertEqual(rc, 6, err)
        self.assertIn("PERMISSION_DENIED", err)
        out = os.path.join(self.dir, "b.backup")
        rc, _, err = run("backup", "create", "--out", out, "--token", ACME, *self.t)
        self.assertEqual(rc, 6, err)  # the stream's status, as a unary call's
        self.assertFalse(os.path.exists(out))


class RichErrorTest(CliCase, E2ETestCase):
    """The details of grpc-status-details-bin, from a stand-in server that
    sends what engramd sends (google.rpc.Status with ErrorInfo, BadRequest,
    RetryInfo; engram-request-id)."""

    def test_details_printed(self):
        from google.rpc import error_details_pb2, status_pb2
        from google.protobuf import any_pb2

        self.require_cli()

        def details(code, msg):
            st = status_pb2.Status(code=code.value[0], message=msg)
            for m in (error_details_pb2.ErrorInfo(reason="INVALID_ARGUMENT", domain="engram.v1"),
                      error_details_pb2.BadRequest(field_violations=[
                          error_details_pb2.BadRequest.FieldViolation(
                              field="session_id", description="must not be empty")]),
                      error_details_pb2.RetryInfo()):
                a = any_pb2.Any()
                a.Pack(m)
                st.details.append(a)
            st.details[2].Pack(error_details_pb2.RetryInfo(retry_delay={"seconds": 1, "nanos": 500000000}))
            return st.SerializeToString()

        def get_session(req, ctx):
            msg = "session_id: must not be empty"
            ctx.set_trailing_metadata([
                ("grpc-status-details-bin", details(grpc.StatusCode.INVALID_ARGUMENT, msg)),
                ("engram-request-id", "0123456789abcdef")])
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, msg)

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "engram.v1.SessionService",
            {"GetSession": grpc.unary_unary_rpc_method_handler(
                get_session, request_deserializer=lambda b: b, response_serializer=lambda b: b)})])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.addCleanup(server.stop, None)
        rc, _, err = run("session", "get", "", "--target", "127.0.0.1:%d" % port)
        self.assertEqual(rc, 5, err)
        self.assertEqual(err.splitlines(), [
            "engram: INVALID_ARGUMENT: session_id: must not be empty",
            "  reason: INVALID_ARGUMENT",
            "  field session_id: must not be empty",
            "  retry after: 1.500s",
            "  request id: 0123456789abcdef",
        ])


class CompletionTest(CliCase, E2ETestCase):

    def setUp(self):
        self.require_cli()

    def commands(self):
        _, out, _ = run("help")
        return [line.split()[:2] for line in out.splitlines()
                if line.startswith("  ") and not line.startswith("   ")
                and not line.strip().startswith("-")]

    def complete_bash(self, line):
        """COMPREPLY of the bash script for the words of line (the last one being typed)."""
        _, script, _ = run("completion", "bash")
        words = line.split(" ")
        prog = script + ("\nCOMP_WORDS=(%s)\nCOMP_CWORD=%d\n_engram\nprintf '%%s\\n' \"${COMPREPLY[@]}\"\n"
                         % (" ".join("'%s'" % w for w in words), len(words) - 1))
        p = subprocess.run(["bash", "-c", prog], stdout=subprocess.PIPE, timeout=10, check=True)
        return p.stdout.decode().split()

    def test_every_command_completes(self):
        cmds = self.commands()
        self.assertGreater(len(cmds), 20)
        for shell in ("bash", "zsh"):
            rc, script, err = run("completion", shell)
            self.assertEqual(rc, 0, err)
            for words in cmds:
                group = words[0]
                sub = words[1] if len(words) > 1 and not words[1][0] in "-[" and \
                    words[1].isalpha() and words[1].islower() else None
                label = '"%s%s")' % (group, " " + sub if sub else "")
                if sub is None and group not in ("help",):
                    label = '"%s")' % group
                if group == "help":
                    continue
                self.assertIn(label, script, "%s: %s" % (shell, words))
        p = subprocess.run(["bash", "-n"], input=run("completion", "bash")[1].encode(), timeout=10)
        self.assertEqual(p.returncode, 0)

    def test_zsh_offers_words_and_flags(self):
        """The zsh script run with compadd stubbed (zsh filters by the typed
        prefix itself): what it offers at each point."""
        _, script, _ = run("completion", "zsh")
        path = os.path.join(tempfile.mkdtemp(), "_engram")
        self.addCleanup(subprocess.run, ["rm", "-rf", os.path.dirname(path)])
        with open(path, "w") as f:
            f.write(script)

        def offers(*words):
            prog = ('compadd() { shift; print -l -- "$@"; }; words=(%s); CURRENT=%d; source %s'
                    % (" ".join("'%s'" % w for w in words), len(words), path))
            p = subprocess.run(["zsh", "-f", "-c", prog], stdout=subprocess.PIPE, timeout=10,
                               check=True)
            return p.stdout.decode().split()

        subprocess.run(["zsh", "-n", path], check=True, timeout=10)
        self.assertIn("session", offers("engram", "se"))
        self.assertIn("create", offers("engram", "session", "cr"))
        got = offers("engram", "--target", "h:1", "session", "create", "--us")
        self.assertIn("--user", got)
        self.assertIn("--token-file", got)
        self.assertNotIn("create", got)

    def test_bash_completes_words_and_flags(self):
        self.assertEqual(self.complete_bash("engram sess"), ["session"])
        self.assertEqual(self.complete_bash("engram session cr"), ["create"])
        self.assertEqual(self.complete_bash("engram --target h:1 session create --us"), ["--user"])
        self.assertIn("--token-file", self.complete_bash("engram memory search --to"))
        self.assertEqual(self.complete_bash("engram call --li"), ["--list"])
        flags = self.complete_bash("engram backup create --")
        self.assertEqual(len(flags), len(set(flags)), flags)  # --timeout is its own and global
