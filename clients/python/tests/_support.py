"""What the SDK's tests share: a real engramd from $ENGRAMD (started and
stopped by tests/e2e/harness.py's Server, with a temp data dir and a
tokens file), and the SDK from PYTHONPATH (clients/python plus the dir the
python_sdk_stubs target generates into)."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))

import engram  # noqa: E402,F401  (before harness: engram.* is the SDK's package)
from harness import E2ETestCase, KEEP, Server, free_port, make_keyring, uid  # noqa: E402,F401

AGENT, ADMIN, REPL = "sdk-agent-token", "sdk-admin-token", "sdk-replica-token"
TOKENS = [("acme", "agent", AGENT), ("acme", "admin", ADMIN), ("acme", "replica", REPL)]


class SdkTestCase(E2ETestCase):
    """One engramd (with a tokens file) for the tests of a class."""
    server_args = ()

    @classmethod
    def setUpClass(cls):
        cls.server = Server(*cls.server_args, tokens=TOKENS)
        cls.addClassCleanup(cls.server.close)
        cls.server.start()

    def client(self, token=AGENT, **kw):
        """An Engram client of the class's server, closed at cleanup."""
        c = engram.Engram(self.server.addr, token=token, **kw)
        self.addCleanup(c.close)
        return c
