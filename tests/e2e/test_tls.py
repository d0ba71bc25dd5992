"""Server TLS (--tls-cert/--tls-key), mutual TLS (--tls-client-ca),
certificate identities (--tls-identities) and SIGHUP reload, over real TLS
handshakes with certificates openssl makes at test time (tls_certs.py)."""
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile

import grpc

from harness import (ENGRAMD, FIXED_WINDOWS, Client, E2ETestCase, Server, make_keyring, pb,
                     uid, write_tokens)
from tls_certs import CA, channel_creds

from engram.v1 import user_pb2 as up  # noqa: E402
from engram.v1 import user_pb2_grpc as upg  # noqa: E402

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
NOT_FOUND = grpc.StatusCode.NOT_FOUND

# A handshake that fails leaves the call UNAVAILABLE; the bound keeps a
# refused connection from waiting for the whole RPC deadline.
REFUSED_TIMEOUT = 5.0
# A user whose export outlasts the HTTP/2 windows (5 x 40 messages of
# 60 kB = 12 MB; its client's are fixed, harness.FIXED_WINDOWS), so it is
# still running while the test reloads.
BIG_CALLS, BIG_PER_CALL, BIG_BYTES = 5, 40, 60000


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


def served_cn(port, ca_path, client=None):
    """The CN of the certificate the server presents to a new connection
    (the Python ssl module: gRPC's client does not show it)."""
    ctx = ssl.create_default_context(cafile=ca_path)
    ctx.set_alpn_protocols(["h2"])
    if client:
        ctx.load_cert_chain(client[0], client[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return dict(x[0] for x in t.getpeercert()["subject"])["commonName"]


AGENT_B = "beta-agent-token"
IDENTITIES = ("# SAN tenant role\n"
              "uri:spiffe://engram.test/agent/alice acme agent\n"
              "dns:bob.agents.engram.test beta agent\n")


class MutualTlsTest(TlsCase):
    """--tls-client-ca and --tls-identities: one server for the class."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        ident = os.path.join(cls.certs.dir, "identities")
        with open(ident, "w") as f:
            f.write(IDENTITIES)
        cls.server = Server(*cls.certs.server_args(client_ca=True), "--tls-identities", ident,
                            tokens=[("beta", "agent", AGENT_B)],
                            creds=cls.certs.creds(cls.certs.alice))
        try:
            cls.server.start()
        except BaseException:
            cls.server.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.server.close()
        super().tearDownClass()

    def as_(self, who, token=None):
        return self.server.client(token, creds=self.certs.creds(who))

    def test_client_certificate_required_and_verified(self):
        self.assertRefused(self.server.client(creds=self.certs.creds()))  # none
        self.assertRefused(self.as_(self.certs.foreign))                  # another CA's
        self.assertRefused(self.as_(self.certs.expired))                  # expired
        # a good one connects (health needs no identity)
        self.assertEqual(self.as_(self.certs.stranger).health(), 1)

    def test_certificate_identity_is_the_tenant(self):
        alice, bob = self.as_(self.certs.alice), self.as_(self.certs.bob)
        user = uid("u")
        sid = alice.create(user).session_id  # no token: the URI SAN maps to acme
        alice.append(sid, pb.Message(role=pb.ROLE_USER, content="hello"))
        self.assertEqual([m.content for m in alice.all_messages(sid)], ["hello"])
        self.assertEqual([s.session_id for s in alice.list_sessions(user).sessions], [sid])
        # bob's DNS SAN maps to beta: acme's session does not exist for him
        self.assertStatus(NOT_FOUND, bob.get, sid)
        self.assertEqual(len(bob.list_sessions(user).sessions), 0)
        bsid = bob.create(user).session_id
        self.assertStatus(NOT_FOUND, alice.get, bsid)

    def test_unmapped_certificate_without_token_unauthenticated(self):
        c = self.as_(self.certs.stranger)
        e = self.assertStatus(UNAUTH, c.create, uid("u"))
        self.assertIn("not mapped in --tls-identities", e.details())
        self.assertIn("uri:spiffe://engram.test/agent/nobody", e.details())

    def test_bearer_token_over_tls_and_precedence(self):
        # an unmapped certificate with a token: the token's tenant
        c = self.as_(self.certs.stranger, AGENT_B)
        sid = c.create(uid("u")).session_id
        self.assertEqual(self.as_(self.certs.bob).get(sid).session_id, sid)  # beta's
        # a token sent decides over a mapped certificate: alice + beta's token is beta
        self.assertEqual(self.as_(self.certs.alice, AGENT_B).get(sid).session_id, sid)
        self.assertStatus(NOT_FOUND, self.as_(self.certs.alice).get, sid)
        # and a bad token is refused even with a mapped certificate
        e = self.assertStatus(UNAUTH, self.as_(self.certs.alice, "wrong-token").get, sid)
        self.assertIn("bearer token", e.details())


def replace_files(pairs):
    """Moves each (src, dst) into place (rename: a reader sees old or new)."""
    for src, dst in pairs:
        os.replace(src, dst)


class ReloadTest(TlsCase):
    """SIGHUP (and a file change) reloads the certificate and the tokens."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="engram-tls-reload-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.cert = os.path.join(self.dir, "server.pem")
        self.key = os.path.join(self.dir, "server.key")
        self.certs.ca.issue("reload-1", ["IP:127.0.0.1", "DNS:localhost"], cert=self.cert,
                            key=self.key)
        self.srv = self.start_server("--tls-cert", self.cert, "--tls-key", self.key,
                                     tokens=[("acme", "agent", "tok-1")],
                                     creds=self.certs.creds())

    def new_cert(self, cn):
        """Issues cn's certificate beside the files, then renames it over them."""
        cert, key = self.certs.ca.issue(cn, ["IP:127.0.0.1", "DNS:localhost"],
                                        cert=self.cert + ".new", key=self.key + ".new")
        replace_files([(key, self.key), (cert, self.cert)])

    def log_count(self, text):
        return self.srv.log_text().count(text)

    def sighup_and_wait(self, text):
        n = self.log_count(text)
        os.kill(self.srv.pid, signal.SIGHUP)
        self.wait_until(lambda: self.log_count(text) > n, 20, "log line %r" % text, [self.srv])

    def test_sighup_new_cert_for_new_connections_long_call_continues(self):
        api = self.srv.client("tok-1", options=FIXED_WINDOWS)
        user = uid("big")
        sid = api.create(user).session_id
        # more than the HTTP/2 windows hold: the export waits on this reader
        for _ in range(BIG_CALLS):
            api.append(sid, *[pb.Message(role=pb.ROLE_USER, content="x" * BIG_BYTES)
                              for _ in range(BIG_PER_CALL)])
        users = upg.UserServiceStub(api.channel)
        stream = users.ExportUser(up.ExportUserRequest(user_id=user), timeout=60,
                                  metadata=api.md)
        first = next(stream)
        self.assertEqual(first.WhichOneof("item"), "session")
        self.assertEqual(served_cn(self.srv.port, self.certs.ca.cert), "reload-1")

        self.new_cert("reload-2")
        self.sighup_and_wait("TLS reload (SIGHUP): new handshakes use")
        self.assertEqual(served_cn(self.srv.port, self.certs.ca.cert), "reload-2")
        fresh = self.srv.client("tok-1")
        self.assertEqual(fresh.get(sid).session_id, sid)
        # the export started on the old connection completes
        n = sum(len(r.messages.messages) for r in stream if r.WhichOneof("item") == "messages")
        self.assertEqual(n, BIG_CALLS * BIG_PER_CALL)
        # and that connection still serves calls
        self.assertEqual(api.get(sid).session_id, sid)

    def test_file_change_reloads_without_sighup(self):
        self.new_cert("reload-3")
        # the fetcher looks at the files at most once a second, on a handshake
        self.wait_until(lambda: served_cn(self.srv.port, self.certs.ca.cert) == "reload-3", 20,
                        "the changed certificate served", [self.srv])
        self.assertIn("TLS reload (a file changed)", self.srv.log_text())

    def test_bad_file_on_reload_keeps_the_old_certificate(self):
        with open(self.cert + ".bad", "w") as f:
            f.write("not a certificate\n")
        replace_files([(self.cert + ".bad", self.cert)])
        self.sighup_and_wait("TLS reload (SIGHUP) failed, keeping the certificate in use")
        self.assertIn("--tls-cert %s: no PEM certificate in it" % self.cert, self.srv.log_text())
        self.assertEqual(served_cn(self.srv.port, self.certs.ca.cert), "reload-1")
        self.assertEqual(len(self.srv.client("tok-1").list_sessions(uid("u")).sessions), 0)
        # a key that is not the certificate's is refused too
        self.new_cert("reload-4")
        other_key = self.certs.ca.issue("unrelated", [])[1]
        shutil.copy(other_key, self.key + ".x")
        replace_files([(self.key + ".x", self.key)])
        self.sighup_and_wait("TLS reload (SIGHUP) failed")
        self.assertIn("not the private key of --tls-cert", self.srv.log_text())

    def test_tokens_reload_on_sighup(self):
        old, new = self.srv.client("tok-1"), self.srv.client("tok-2")
        sid = old.create(uid("u")).session_id
        self.assertStatus(UNAUTH, new.get, sid)
        write_tokens(self.srv.tokens_path, [("acme", "agent", "tok-2")])
        self.sighup_and_wait("tokens/identities reloaded: 1 tokens")
        self.assertEqual(new.get(sid).session_id, sid)   # added: works
        self.assertStatus(UNAUTH, old.get, sid)          # removed: refused
        # a bad file keeps the tokens in use and says which line
        with open(self.srv.tokens_path, "a") as f:
            f.write("acme agent not-a-hash\n")
        self.sighup_and_wait("tokens/identities reload failed, keeping those in use")
        self.assertIn("--tokens %s: line 3: hash must be 64 lowercase hex digits"
                      % self.srv.tokens_path, self.srv.log_text())
        self.assertEqual(new.get(sid).session_id, sid)


class ReplicaCertificateCallerTest(TlsCase):
    """A replica serving mutual TLS: reads by certificate identity are its
    own; a write is forwarded to the primary with the caller's bearer token
    only, so a certificate-only write is refused saying where to send it."""

    def test_certificate_reads_on_replica_and_write_refused_with_reason(self):
        tmp = tempfile.mkdtemp(prefix="engram-tls-repl-")
        self.addCleanup(shutil.rmtree, tmp, True)
        keyring = make_keyring(os.path.join(tmp, "keyring"))
        tokens = [("acme", "agent", "acme-agent"), ("acme", "replica", "acme-replica")]
        # The replica requires client certificates, so it dials its primary
        # over TLS too (--tls-peer-ca defaults to --tls-client-ca).
        primary = self.start_server(*self.certs.server_args(client_ca=True), tokens=tokens,
                                    keyring=keyring, creds=self.certs.creds(self.certs.alice))
        ident = os.path.join(tmp, "identities")
        with open(ident, "w") as f:
            f.write(IDENTITIES)
        replica = self.start_server(
            *self.certs.server_args(client_ca=True), "--tls-identities", ident,
            "--role", "replica", "--primary", primary.addr, "--replica-token", "acme-replica",
            tokens=tokens, keyring=keyring, creds=self.certs.creds(self.certs.alice))
        user = uid("u")
        sid = primary.client("acme-agent").create(user).session_id
        alice = replica.client()
        self.wait_until(lambda: alice.list_sessions(user).sessions, 30,
                        "the session replicated", [primary, replica])
        self.assertEqual(alice.get(sid).session_id, sid)
        e = self.assertStatus(grpc.StatusCode.FAILED_PRECONDITION, alice.create, user)
        self.assertIn("send writes to the primary, or with a token", e.details())
        # with a token the write is forwarded as ever
        with_token = replica.client("acme-agent")
        sid2 = with_token.create(user).session_id
        self.assertEqual(primary.client("acme-agent").get(sid2).session_id, sid2)
