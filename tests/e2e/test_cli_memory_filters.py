"""The engram CLI's memory metadata, namespace and language flags, the
list/search filters (--agent, --source-session, --namespace, --meta), and
`memory batch-add` / `memory batch-delete` against the real server."""
import json
import os
import tempfile

from harness import ServerTestCase, uid
from test_cli import CliCase, cli


class CliMemoryFiltersTest(CliCase, ServerTestCase):
    def setUp(self):
        super().setUp()
        self.require_cli()

    def run_cli(self, *args, json_out=False):
        return cli(*args, target=self.server.addr, json_out=json_out)

    def ids(self, *args):
        return sorted(m["memoryId"] for m in self.j("memory", "list", *args).get("memories", []))

    def test_add_update_and_filters(self):
        u = uid("u")
        sid = self.j("session", "create", "--user", u)["sessionId"]
        a = self.j("memory", "add", "--user", u, "--type", "fact", "--text", "likes green tea",
                   "--dedup", "off", "--agent", "a1", "--source-session", sid,
                   "--meta", "project=apollo", "--meta", "env=prod", "--namespace", "agent/planner",
                   "--language", "en")["memory"]
        self.assertEqual(a["metadata"], {"project": "apollo", "env": "prod"})
        self.assertEqual((a["namespace"], a["language"]), ("agent/planner", "en"))
        b = self.j("memory", "add", "--user", u, "--type", "fact", "--text", "plays chess",
                   "--dedup", "off", "--namespace", "agents", "--meta", "project=zeus")["memory"]
        A, B = a["memoryId"], b["memoryId"]
        self.assertEqual(self.ids("--user", u, "--agent", "a1"), [A])
        self.assertEqual(self.ids("--user", u, "--source-session", sid), [A])
        self.assertEqual(self.ids("--user", u, "--namespace", "agent"), [A])
        self.assertEqual(self.ids("--user", u, "--namespace", "agents"), [B])
        self.assertEqual(self.ids("--user", u, "--meta", "project=zeus"), [B])
        self.assertEqual(self.ids("--user", u, "--meta", "project=apollo", "--meta", "env=dev"), [])
        found = self.j("memory", "search", "--user", u, "--query", "tea chess", "--namespace", "agents")
        self.assertEqual([r["memory"]["memoryId"] for r in found["results"]], [B])
        up = self.j("memory", "update", A, "--meta", "project=zeus", "--namespace", "x/y",
                    "--language", "de")
        self.assertEqual((up["metadata"], up["namespace"], up["language"]),
                         ({"project": "zeus"}, "x/y", "de"))
        self.assertEqual(self.ids("--user", u, "--meta", "project=zeus"), sorted([A, B]))
        up = self.j("memory", "update", A, "--clear-meta")
        self.assertEqual(up["metadata"], {})
        rc, _, err = self.run_cli("memory", "list", "--user", u, "--namespace", "a//b")
        self.assertEqual(rc, 5, err)
        self.assertIn("filter.namespace_prefix", err)
        rc, _, err = self.run_cli("memory", "update", A, "--meta", "k=v", "--clear-meta")
        self.assertEqual(rc, 2, err)

    def batch_file(self, text):
        fd, path = tempfile.mkstemp(suffix=".jsonl")
        self.addCleanup(os.unlink, path)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def test_batch_add_and_delete(self):
        u = uid("u")
        req = lambda text, **kw: json.dumps(  # noqa: E731
            {"memory": dict({"userId": u, "type": "MEMORY_TYPE_FACT", "text": text}, **kw)})
        lines = "\n".join([req("owns a red bicycle", metadata={"src": "cli"}), "",
                           req(""), req("owns a red bicycle")]) + "\n"
        rc, out, err = self.run_cli("memory", "batch-add", "--file", self.batch_file(lines))
        self.assertEqual(rc, 1, err)  # one failed, the others applied
        self.assertIn("1 of the batch failed", err)
        rows = out.splitlines()
        self.assertEqual(len(rows), 3, out)
        self.assertRegex(rows[0], r"^0 OK \S+ DEDUP_OUTCOME_CREATED$")
        self.assertRegex(rows[1], r"^1 INVALID_ARGUMENT memory\.text: ")
        first = rows[0].split()[2]
        self.assertRegex(rows[2], r"^2 OK \S+ DEDUP_OUTCOME_(DUPLICATE|MERGED) of %s$" % first)
        # one JSON array; --json prints the response
        arr = "[%s, %s]" % (req("grows basil"), req("keeps two cats"))
        got = self.j("memory", "batch-add", "--file", self.batch_file(arr))
        made = [r["response"]["memory"]["memoryId"] for r in got["results"]]
        self.assertEqual(len(made), 2)
        # a bad file is a usage error naming the request; nothing is sent
        rc, _, err = self.run_cli("memory", "batch-add", "--file",
                                  self.batch_file(req("x") + "\n{\"memory\": {\"colour\": 1}}\n"))
        self.assertEqual(rc, 2, err)
        self.assertIn("requests[1].memory.colour", err)
        rc, out, err = self.run_cli("memory", "batch-delete", made[0], "nope-1", made[1], "--purge")
        self.assertEqual(rc, 1, err)
        self.assertEqual(out.splitlines(), ["%s OK purged" % made[0],
                                            "nope-1 NOT_FOUND memory_id: no memory 'nope-1'",
                                            "%s OK purged" % made[1]])
        rc, _, err = self.run_cli("memory", "batch-delete", "x1", "x1")
        self.assertEqual(rc, 5, err)
        self.assertIn("memory_ids[1]", err)
        rc, _, err = self.run_cli("memory", "batch-delete", "--purge")
        self.assertEqual(rc, 2, err)
