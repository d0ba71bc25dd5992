"""What the engram CLI refuses before any call (review of issue 14): the
JSON of `engram call -d` (bounds on its objects and arrays and on all its
values, duplicate keys, lone UTF-16 surrogates, empty input, -d given twice,
a request over 4 MiB also with --dry-run), a global option given twice, and
--token-file (a NUL in the token, a FIFO or other non-regular file, naming a
symlink's target). No server: each input is refused (or, with --dry-run,
printed) locally."""
import json
import os
import string
import subprocess
import sys
import tempfile
import unittest

from harness import ENGRAM_CLI, clean_env

# CLI_JSON_CONTAINERS_MAX (client/cli/cli.h)
CONTAINERS_MAX = 50000
# CLI_JSON_VALUES_MAX and CLI_INPUT_MAX (client/cli/cli.h)
VALUES_MAX = 1048576
REQUEST_MAX = 4 * 1024 * 1024
# The -d @FILE bound (CLI_JSON_INPUT_MAX)
JSON_MAX = 8 * 1024 * 1024
# Far above the CLI's own RSS with a refused input (about 30 MB), far below
# what json-c needed for 2,000,000 objects (GBs).
RSS_MAX = 200 * 1024 * 1024
NOWHERE = ["--target", "127.0.0.1:1", "--timeout", "2000"]


def run(*args, timeout=60):
    """(exit code, stdout, stderr) of engram ARGS; fails if it takes longer
    than timeout (a FIFO must not block the CLI)."""
    p = subprocess.run([ENGRAM_CLI] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, env=clean_env(), timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


# Runs argv[1:] and prints its exit code and peak RSS (KiB). From a small
# process of its own: a child's ru_maxrss survives exec, so measured straight
# from this test process it starts at this process's RSS (which earlier tests
# with large requests grow), not at the CLI's.
MEASURE = """import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
_, status, usage = os.wait4(p.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def peak_rss(*args):
    """(exit code, stderr, peak RSS in bytes) of engram ARGS."""
    with tempfile.TemporaryFile() as err:
        p = subprocess.run([sys.executable, "-c", MEASURE, ENGRAM_CLI] + list(args),
                           stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                           env=clean_env(), timeout=120)
        rc, kib = map(int, p.stdout.split())
        err.seek(0)
        return rc, err.read().decode(), kib * 1024


class CallInputTest(unittest.TestCase):

    def setUp(self):
        if not os.path.isfile(ENGRAM_CLI):
            self.fail("engram CLI not found at %s (set ENGRAM_CLI)" % ENGRAM_CLI)
        self.dir = tempfile.mkdtemp(prefix="engram-cli-input-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", self.dir]))

    def file(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def dry(self, method, body, *more):
        return run("call", method, "-d", body, "--dry-run", *more)

    def refused(self, method, body, want):
        rc, out, err = self.dry(method, body)
        self.assertEqual(rc, 2, "%s: rc=%d stderr=%r stdout=%r" % (body, rc, err, out))
        self.assertIn(want, err)
        self.assertEqual(out, "")
        return err

    def messages(self, n):
        """AppendMessages' JSON with n empty messages: n + 2 objects and arrays."""
        return '{"messages":[' + ",".join(["{}"] * n) + "]}"

    def test_many_objects_are_refused_before_parsing(self):
        # 6 MB, under the 8 MiB input bound: json-c took 1.8 GB (4.9 GB with
        # --dry-run) for it.
        path = self.file("many.json", self.messages(2000000))
        for dry in ([], ["--dry-run"]):
            rc, err, rss = peak_rss("call", "SessionService/AppendMessages", "-d", "@" + path,
                                    *dry, *NOWHERE)
            self.assertEqual(rc, 2, err)
            self.assertIn("more than %d JSON objects and arrays" % CONTAINERS_MAX, err)
            self.assertLess(rss, RSS_MAX, "peak RSS %d MB" % (rss >> 20))

    def test_objects_bound_edge(self):
        at = self.file("at.json", self.messages(CONTAINERS_MAX - 2))
        rc, out, err = run("call", "SessionService/AppendMessages", "-d", "@" + at, "--dry-run")
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(json.loads(out)["messages"]), CONTAINERS_MAX - 2)
        over = self.file("over.json", self.messages(CONTAINERS_MAX - 1))
        rc, _, err = run("call", "SessionService/AppendMessages", "-d", "@" + over, "--dry-run")
        self.assertEqual(rc, 2, err)
        self.assertIn("more than %d JSON objects and arrays" % CONTAINERS_MAX, err)
        # Braces inside strings are text, not objects.
        body = json.dumps({"messages": [{"content": "{[" * CONTAINERS_MAX}]})
        rc, out, err = self.dry("SessionService/AppendMessages", body)
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["messages"][0]["content"], "{[" * CONTAINERS_MAX)

    def test_many_values_are_refused_before_parsing(self):
        # Each under the 8 MiB input bound, each far over the values bound:
        # json-c took 330 to 490 MB for them before (round 2, N3/R3).
        embedding = '{"memory":{"embedding":[' + ",".join(["0"] * (JSON_MAX // 2 - 16)) + "]}}"
        tags = '{"memory":{"tags":[' + ",".join(['""'] * (JSON_MAX // 3 - 16)) + "]}}"
        # 16400 messages with 62 metadata entries each: 1,049,602 values
        keys = string.ascii_letters + string.digits
        meta = ('{"messages":['
                + ",".join(['{"metadata":{' + ",".join('"%s":""' % k for k in keys) + "}}"]
                           * 16400) + "]}")
        for name, method, body in (("embedding", "MemoryService/CreateMemory", embedding),
                                   ("tags", "MemoryService/CreateMemory", tags),
                                   ("meta", "SessionService/AppendMessages", meta)):
            self.assertLessEqual(len(body), JSON_MAX, name)
            path = self.file(name + ".json", body)
            for dry in ([], ["--dry-run"]):
                rc, err, rss = peak_rss("call", method, "-d", "@" + path, *dry, *NOWHERE)
                self.assertEqual(rc, 2, "%s %s: %s" % (name, dry, err))
                self.assertIn("more than %d JSON values" % VALUES_MAX, err)
                self.assertLess(rss, RSS_MAX, "%s %s: peak RSS %d MB" % (name, dry, rss >> 20))

    def test_values_bound_edge(self):
        def tags(n):  # the root, memory, tags and n strings: n + 3 values
            return '{"memory":{"tags":[' + ",".join(['""'] * n) + "]}}"
        at = self.file("at.json", tags(VALUES_MAX - 3))
        rc, out, err = run("call", "MemoryService/CreateMemory", "-d", "@" + at, "--dry-run")
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(json.loads(out)["memory"]["tags"]), VALUES_MAX - 3)
        over = self.file("over.json", tags(VALUES_MAX - 2))
        rc, _, err = run("call", "MemoryService/CreateMemory", "-d", "@" + over, "--dry-run")
        self.assertEqual(rc, 2, err)
        self.assertIn("more than %d JSON values" % VALUES_MAX, err)
        # Empty containers hold no value; commas in strings are text.
        body = self.file("text.json", json.dumps({"messages": [{"content": "," * VALUES_MAX},
                                                               {"metadata": {}}]}))
        rc, out, err = self.dry("SessionService/AppendMessages", "@" + body)
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(json.loads(out)["messages"]), 2)

    def test_dry_run_refuses_a_request_over_4_mib(self):
        # JSON under 8 MiB whose request is over what engramd takes: refused
        # with --dry-run as without it, not printed as if it could be sent.
        path = self.file("big.json", json.dumps({"messages": [{"content": "x" * REQUEST_MAX}]}))
        for dry in ([], ["--dry-run"]):
            rc, out, err = run("call", "SessionService/AppendMessages", "-d", "@" + path, *dry,
                               *NOWHERE)
            self.assertEqual(rc, 2, "%s: %s" % (dry, err))
            self.assertIn("over %d (the largest engramd takes)" % REQUEST_MAX, err)
            self.assertEqual(out, "")
        # the largest that fits still prints
        path = self.file("fits.json",
                         json.dumps({"messages": [{"content": "x" * (REQUEST_MAX - 16)}]}))
        rc, out, err = run("call", "SessionService/AppendMessages", "-d", "@" + path, "--dry-run")
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(json.loads(out)["messages"][0]["content"]), REQUEST_MAX - 16)

    def test_duplicate_keys(self):
        self.refused("SessionService/GetSession", '{"sessionId": "a", "sessionId": "b"}',
                     'duplicate key "sessionId"')
        self.refused("SessionService/CreateSession",
                     '{"session": {"userId": "a", "ttlSeconds": 5, "userId": "b"}}',
                     'duplicate key "userId"')
        # map keys, and a key spelled with an escape
        self.refused("SessionService/CreateSession",
                     '{"session": {"metadata": {"k": "1", "k": "2"}}}', 'duplicate key "k"')
        self.refused("SessionService/GetSession", r'{"sessionId": "a", "session\u0049d": "b"}',
                     "duplicate key")
        # The same key in two objects is fine; so is a key that is only a prefix.
        rc, out, err = self.dry("SessionService/AppendMessages",
                                '{"messages": [{"content": "a"}, {"content": "b"}],'
                                ' "sessionId": "s"}')
        self.assertEqual(rc, 0, err)
        self.assertEqual([m["content"] for m in json.loads(out)["messages"]], ["a", "b"])

    def test_lone_surrogates(self):
        for s in (r"\ud800", r"\udc00", r"x\ud800y", r"\ud800\u0041", r"\udbff\ud800"):
            err = self.refused("SessionService/GetSession", '{"sessionId": "%s"}' % s,
                               "lone UTF-16 surrogate")
            self.assertIn("at byte", err)
        rc, out, err = self.dry("SessionService/GetSession", r'{"sessionId": "\ud83d\ude00"}')
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["sessionId"], "\U0001F600")

    def test_empty_input(self):
        for body in ("@/dev/null", "", " \n"):
            self.refused("SessionService/GetSession", body, "-d: empty input")

    def test_d_twice(self):
        rc, out, err = run("call", "SessionService/GetSession", "-d", '{"sessionId": "a"}',
                           "-d", '{"sessionId": "b"}', "--dry-run")
        self.assertEqual(rc, 2, err)
        self.assertIn("-d given twice", err)

    def test_global_option_twice(self):
        # before the command words, after them, or once on each side: which
        # one was meant? (a switch such as --json may repeat)
        for args in (["--timeout", "5", "--timeout", "6", "call", "Health/Check"],
                     ["call", "Health/Check", "--dry-run", "--timeout", "5", "--timeout", "6"],
                     ["--timeout", "5", "call", "Health/Check", "--dry-run", "--timeout=6"],
                     ["call", "Health/Check", "--dry-run", "--target", "a:1", "--target", "b:1"],
                     ["session", "get", "x", "--token", "a", "--token", "b"],
                     ["--min-lsn", "1", "health", "--min-lsn", "1"]):
            rc, out, err = run(*args)
            self.assertEqual(rc, 2, "%s: %s" % (args, err))
            self.assertIn("given twice", err, args)
            self.assertEqual(out, "", args)
        rc, out, err = run("--json", "call", "Health/Check", "--dry-run", "--json",
                           "--timeout", "5")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out), {"service": ""})


class TokenFileTest(unittest.TestCase):

    def setUp(self):
        if not os.path.isfile(ENGRAM_CLI):
            self.fail("engram CLI not found at %s (set ENGRAM_CLI)" % ENGRAM_CLI)
        self.dir = tempfile.mkdtemp(prefix="engram-token-file-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", self.dir]))

    def token_file(self, name, data, mode=0o600):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        return path

    def health(self, path):
        return run("health", "--token-file", path, *NOWHERE, timeout=20)

    def test_nul_in_token(self):
        path = self.token_file("nul", b"tok\0Au\n")
        rc, _, err = self.health(path)
        self.assertEqual(rc, 2, err)
        self.assertIn("NUL", err)

    def test_fifo_is_refused_without_blocking(self):
        path = os.path.join(self.dir, "fifo")
        os.mkfifo(path, 0o600)
        rc, _, err = self.health(path)  # fails the test if it blocks
        self.assertEqual(rc, 2, err)
        self.assertIn("not a regular file", err)
        self.assertIn(path, err)

    def test_errors_name_the_resolved_file(self):
        target = self.token_file("real", b"tok\n", 0o644)
        link = os.path.join(self.dir, "link")
        os.symlink(target, link)
        rc, _, err = self.health(link)
        self.assertEqual(rc, 2, err)
        self.assertIn("mode 0644", err)
        self.assertIn("chmod 600 %s" % os.path.realpath(target), err)


if __name__ == "__main__":
    unittest.main()
