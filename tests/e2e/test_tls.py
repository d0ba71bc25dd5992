"""Server TLS (--tls-cert/--tls-key), mutual TLS (--tls-client-ca),
certificate identities (--tls-identities) and SIGHUP reload, over real TLS
handshakes with certificates openssl makes at test time (tls_certs.py)."""
import os
import subprocess
import tempfile
import shutil

import grpc

from harness import ENGRAMD, Client, E2ETestCase, Server, pb, uid
from tls_certs import CA, channel_creds

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
NOT_FOUND = grpc.StatusCode.NOT_FOUND

# A handshake that fails leaves the call UNAVAILABLE; the bound keeps a
# refused connection from waiting for the whole RPC deadline.
REFUSED_TIMEOUT = 5.0


class Certs:
    """The PKI of one test class: CA "good" (server and client certificates)
    and CA "other" (a CA the server does not trust)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="engram-tls-")
        self.ca = CA(self.dir, "good")
        self.other = CA(self.dir, "other")
        self.server = self.ca.issue("server-1", ["IP:127.0.0.1", "DNS:localhost"])
        self.alice = self.ca.issue("alice", ["URI:spiffe://engram.test/agent/alice"])
        self.bob = self.ca.issue("bob", ["DNS:bob.agents.engram.test"])
        self.stranger = self.ca.issue("stranger", ["URI:spiffe://engram.test/agent/nobody",
                                                   "DNS:nobody.engram.test"])
        self.foreign = self.other.issue("foreign", ["URI:spiffe://engram.test/agent/alice"])
        self.expired = self.ca.issue("expired", ["URI:spiffe://engram.test/agent/alice"],
                                     start="20200101000000Z", end="20200102000000Z")

    def server_args(self, client_ca=False):
        a = ["--tls-cert", self.server[0], "--tls-key", self.server[1]]
        return a + (["--tls-client-ca", self.ca.cert] if client_ca else [])

    def creds(self, client=None, ca=None):
        cert, key = client if client else (None, None)
        return channel_creds(ca or self.ca, cert, key)

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class TlsCase(E2ETestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = Certs()

    @classmethod
    def tearDownClass(cls):
        cls.certs.close()

    def assertRefused(self, client):
        """The connection fails (handshake refused): UNAVAILABLE."""
        self.assertStatus(UNAVAILABLE, client.health, timeout=REFUSED_TIMEOUT)


class ServerTlsTest(TlsCase):
    """TLS without client certificates."""

    def test_tls_client_works_plaintext_and_wrong_ca_refused(self):
        srv = self.start_server(*self.certs.server_args(), creds=self.certs.creds())
        c = srv.client()
        sid = c.create(uid("u")).session_id
        self.assertEqual(c.get(sid).session_id, sid)
        self.assertRefused(self._plain(srv))
        self.assertRefused(srv.client(creds=self.certs.creds(ca=self.certs.other)))
        # a client certificate is not asked for, so one sent changes nothing
        c2 = srv.client(creds=self.certs.creds(self.certs.foreign))
        self.assertEqual(c2.get(sid).session_id, sid)

    def _plain(self, srv):
        c = Client(srv.addr)
        self.addCleanup(c.close)
        return c

    def test_config_errors_name_the_flag_or_file(self):
        cert, key = self.certs.server
        tmp = tempfile.mkdtemp(prefix="engram-tls-cfg-")
        self.addCleanup(shutil.rmtree, tmp, True)
        cases = [
            (["--tls-cert", cert], "--tls-key"),
            (["--tls-key", key], "--tls-cert"),
            (["--tls-client-ca", self.certs.ca.cert], "--tls-client-ca"),
            (["--tls-cert", cert, "--tls-key", key, "--tls-identities", cert], "--tls-identities"),
            (["--tls-cert", key, "--tls-key", key], "--tls-cert " + key),
            (["--tls-cert", cert, "--tls-key", cert], "--tls-key " + cert),
            (["--tls-cert", cert, "--tls-key", self.certs.alice[1]], "not the private key"),
            (["--tls-cert", cert, "--tls-key", os.path.join(tmp, "missing")], "cannot open"),
            (["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", key], "--tls-client-ca"),
        ]
        for i, (args, want) in enumerate(cases):
            with self.subTest(args=args):
                p = subprocess.run([ENGRAMD, "--listen", "127.0.0.1:0", "--data-dir",
                                    os.path.join(tmp, "d%d" % i)] + args,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
                self.assertNotEqual(p.returncode, 0)
                self.assertIn(want, p.stdout.decode())
                # checked before anything was created
                self.assertFalse(os.path.exists(os.path.join(tmp, "d%d" % i, "keyring")))


class PlaintextWarningTest(E2ETestCase):
    def test_non_loopback_plaintext_warns_loopback_does_not(self):
        srv = Server()
        srv.extra = []
        self.addCleanup(srv.close)
        srv.start()
        self.assertNotIn("not a loopback address", srv.log_text())
        srv.stop()
        # --listen given twice: the last one counts
        srv.extra = ["--listen", "0.0.0.0:0"]
        p = subprocess.Popen(srv.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            line = b""
            for line in p.stdout:
                if b"listening on" in line or b"not a loopback address" in line:
                    break
            self.assertIn(b"WARN", line)
            self.assertIn(b"--listen 0.0.0.0:0 is not a loopback address and TLS is off", line)
        finally:
            p.kill()
            p.wait(timeout=10)
            p.stdout.close()
