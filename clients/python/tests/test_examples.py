"""examples/python run as a user runs them (subprocesses, ENGRAM_TARGET)
against an engramd in dev mode (no tokens), as `make run` starts it."""
import os
import subprocess
import sys

from _support import REPO, SdkTestCase, Server

EXAMPLES = os.path.join(REPO, "examples", "python")


class ExamplesTest(SdkTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()  # dev mode, like `make run`
        cls.addClassCleanup(cls.server.close)
        cls.server.start()

    def run_example(self, name, **env):
        e = dict(os.environ, ENGRAM_TARGET=self.server.addr, **env)
        p = subprocess.run([sys.executable, os.path.join(EXAMPLES, name)], env=e,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout

    def test_chat_loop_summarises(self):
        out = self.run_example("chat_loop.py", CHAT_TURNS="8")
        self.assertIn("assistant: (", out)
        self.assertIn("summary through #", out)  # 16 messages: a summary was due
        last = out.strip().splitlines()[-1]
        self.assertRegex(last, r"final context: summary through #(\d+), \d+ messages after it")
        self.assertNotIn("summary through #0,", last)

    def test_memories_capture_and_recall(self):
        out = self.run_example("memories.py", ENGRAM_USER="mem-user")
        self.assertIn("DEDUP_OUTCOME_DUPLICATE", out)
        recall = out.split("recall", 1)[1].splitlines()
        self.assertIn("green tea", recall[1])
        self.assertIn("memories stored: 3", out)
