"""TLS on the client side: the engram CLI's --tls-ca/--tls-cert/--tls-key/
--tls-server-name against a TLS and a mutual-TLS engramd; a replica that
streams from a mutual-TLS primary with its certificate (mapped to the
replica role: no --replica-token), reads its writes and forwards writes to
it; and the coordinator's etcd connection over mutual TLS (--etcd-tls-*),
against a real etcd run with --client-cert-auth. Real handshakes, with
certificates openssl makes at test time (tls_certs.py)."""
import os
import shutil
import subprocess
import sys
import tempfile

import grpc

from harness import (ENGRAM_CLI, ENGRAMD, KEEP, REPO, M, Server, clean_env, free_port,
                     make_keyring, pb, scan_sanitizer, uid)
from test_replication import (AGENT, MAX_LSN_WAIT_MS, TOKENS, ReplicationCase, agent, newest,
                              status)
from tls_certs import CA, channel_creds, read

from etcd.etcdserverpb import rpc_pb2 as etcd_rpc  # noqa: E402
from etcd.etcdserverpb import rpc_pb2_grpc as etcd_rpc_grpc  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "deploy", "local"))
from cluster import EtcdMember  # noqa: E402

ETCD_START_TIMEOUT = 20.0
ELECT_TIMEOUT = 15.0
CONNECT_TIMEOUT = 30.0
REPLICA_SAN = "spiffe://engram.test/node/replica-1"
CLIENT_SAN = "spiffe://engram.test/agent/alice"


class Certs:
    """The PKI of one test class: CA "engram" (nodes and clients), CA
    "other" (trusted by nobody) and CA "etcd" (etcd's own PKI)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="engram-tlsc-")
        self.ca = CA(self.dir, "engram")
        self.other = CA(self.dir, "other")
        self.etcd_ca = CA(self.dir, "etcd")
        # Nodes serve with these and present them when they dial.
        self.primary = self.ca.issue("primary", ["IP:127.0.0.1", "DNS:primary.engram.test",
                                                 "URI:spiffe://engram.test/node/primary"])
        self.replica = self.ca.issue("replica-1", ["IP:127.0.0.1", "URI:" + REPLICA_SAN])
        self.client = self.ca.issue("alice", ["URI:" + CLIENT_SAN])
        self.etcd_server = self.etcd_ca.issue("etcd-1", ["IP:127.0.0.1"])
        self.etcd_client = self.etcd_ca.issue("engramd", ["DNS:engramd.etcd.test"])
        self.identities = os.path.join(self.dir, "identities")
        with open(self.identities, "w") as f:
            f.write("# SAN tenant role\nuri:%s acme replica\nuri:%s acme agent\n"
                    % (REPLICA_SAN, CLIENT_SAN))
        os.chmod(self.identities, 0o600)

    def creds(self):
        """What the tests' own clients use: the engram CA, alice's certificate."""
        return channel_creds(self.ca, *self.client)

    def close(self):
        if not KEEP:
            shutil.rmtree(self.dir, ignore_errors=True)


def cli(*args, env=None, timeout=30):
    e = clean_env()
    e.update(env or {})
    p = subprocess.run([ENGRAM_CLI] + [str(a) for a in args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, stdin=subprocess.DEVNULL, env=e)
    err = p.stderr.decode()
    rep = scan_sanitizer(err)
    if rep:
        raise AssertionError("sanitizer report from engram %s:\n%s" % (" ".join(args), rep))
    return p.returncode, p.stdout.decode(), err


class TlsClientCase(ReplicationCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = Certs()

    @classmethod
    def tearDownClass(cls):
        cls.certs.close()


class CliTlsTest(TlsClientCase):
    """The engram CLI over TLS and mutual TLS."""

    def tls_server(self, mutual):
        c = self.certs
        args = ["--tls-cert", c.primary[0], "--tls-key", c.primary[1]]
        if mutual:
            args += ["--tls-client-ca", c.ca.cert]
        return self.start_server(*args, tokens=TOKENS,
                                 creds=c.creds() if mutual else channel_creds(c.ca))

    def assertCli(self, want_rc, out_has, *args, env=None):
        rc, out, err = cli(*args, env=env)
        self.assertEqual(rc, want_rc, "engram %s: rc %d\nstdout: %s\nstderr: %s"
                         % (" ".join(map(str, args)), rc, out, err))
        self.assertIn(out_has, out if want_rc == 0 else err)
        return out

    def test_tls_ca(self):
        s, ca = self.tls_server(False), self.certs.ca.cert
        user = uid("u")
        base = ["--target", s.addr, "--token", AGENT]
        out = self.assertCli(0, "session_id: ", *base, "--tls-ca", ca, "session", "create",
                             "--user", user)
        sid = out.split("session_id: ")[1].split()[0]
        # The environment names the CA just as well.
        self.assertCli(0, user, *base, "session", "get", sid, env={"ENGRAM_TLS_CA": ca})
        # Plaintext to a TLS server: refused, and the CLI says what to pass.
        self.assertCli(3, "pass --tls-ca", *base, "session", "get", sid)
        # A CA that did not issue the server's certificate: the handshake fails.
        self.assertCli(3, "certificate verify failed", *base, "--tls-ca", self.certs.other.cert,
                       "session", "get", sid)
        # A CA file that is not there: a usage error naming it, nothing dialled.
        missing = os.path.join(self.certs.dir, "missing.pem")
        self.assertCli(2, "CA bundle %s: cannot open: No such file or directory" % missing, *base,
                       "--tls-ca", missing, "session", "get", sid)

    def test_mutual_tls(self):
        s, c = self.tls_server(True), self.certs
        base = ["--target", s.addr, "--token", AGENT, "--tls-ca", c.ca.cert]
        user = uid("u")
        self.assertCli(0, "session_id: ", *base, "--tls-cert", c.client[0], "--tls-key",
                       c.client[1], "session", "create", "--user", user)
        # Without a client certificate the server closes the connection.
        self.assertCli(3, "pass --tls-cert and --tls-key", *base, "session", "list", "--user",
                       user)
        # One of the pair alone is a usage error naming the one missing.
        self.assertCli(2, "--tls-cert needs --tls-key", *base, "--tls-cert", c.client[0],
                       "health")
        self.assertCli(2, "--tls-key needs --tls-cert", *base, "--tls-key", c.client[1],
                       "health")
        env = {"ENGRAM_TLS_CERT": c.client[0], "ENGRAM_TLS_KEY": c.client[1]}
        self.assertCli(0, user, *base, "session", "list", "--user", user, env=env)

    def test_server_name(self):
        s, ca = self.tls_server(False), self.certs.ca.cert
        base = ["--target", s.addr, "--tls-ca", ca]
        self.assertCli(0, "serving", *base, "--tls-server-name", "primary.engram.test", "health")
        self.assertCli(3, "Peer name other.engram.test is not in peer certificate", *base,
                       "--tls-server-name", "other.engram.test", "health")
        self.assertCli(0, "serving", *base, "health",
                       env={"ENGRAM_TLS_SERVER_NAME": "primary.engram.test"})


class ReplicaTlsTest(TlsClientCase):
    """A replica that dials its mutual-TLS primary with its own certificate."""

    def setUp(self):
        super().setUp()
        c = self.certs
        self.tmp = tempfile.mkdtemp(prefix="engram-e2e-tlsc-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, self.tmp, True)
        self.keyring = make_keyring(os.path.join(self.tmp, "keyring"))
        self.p = self.node("primary", c.primary)

    def node(self, name, cert, *args):
        """A node serving mutual TLS with cert, trusting the engram CA for
        its clients (and so for the primary it dials)."""
        s = Server("--tls-cert", cert[0], "--tls-key", cert[1], "--tls-client-ca",
                   self.certs.ca.cert, "--tls-identities", self.certs.identities, *args,
                   tokens=TOKENS, keyring=self.keyring, port=free_port(), creds=self.certs.creds())
        s.name = name
        self.addCleanup(s.close)
        s.start()
        return s

    def replica(self, *args):
        return self.node("replica-1", self.certs.replica, "--role", "replica", "--primary",
                         self.p.addr, "--replica-id", "replica-1", "--max-lsn-wait-ms",
                         MAX_LSN_WAIT_MS, *args)

    def test_replica_streams_reads_its_writes_and_forwards(self):
        r = self.replica()
        self.wait_connected(self.p, ["replica-1"], CONNECT_TIMEOUT)
        user, sid = uid("u"), uid("s")
        agent(self.p).create(user, sid)
        _, lsn = agent(self.p).call_lsn("AppendMessages", pb.AppendMessagesRequest(
            session_id=sid, messages=[M("written on the primary")]))
        # Read-your-writes on the replica: it waits for that LSN.
        self.assertEqual(newest(r, sid, int(lsn)).content, "written on the primary")
        # A write to the replica goes to the primary over the same mTLS channel.
        resp, flsn = agent(r).call_lsn("AppendMessages", pb.AppendMessagesRequest(
            session_id=sid, messages=[M("forwarded")]))
        self.assertEqual(resp.messages[0].seq, 2)
        self.assertGreater(int(flsn), int(lsn))
        self.assertEqual(newest(self.p, sid).content, "forwarded")
        self.assertEqual(newest(r, sid, int(flsn)).content, "forwarded")
        self.wait_converged(self.p, [r])

    def test_peer_server_name(self):
        # The name the primary's certificate carries: accepted.
        r = self.replica("--tls-peer-server-name", "primary.engram.test")
        self.wait_connected(self.p, ["replica-1"], CONNECT_TIMEOUT)
        user, sid = uid("u"), uid("s")
        agent(self.p).create(user, sid)
        _, lsn = agent(self.p).call_lsn("AppendMessages", pb.AppendMessagesRequest(
            session_id=sid, messages=[M("named")]))
        self.assertEqual(newest(r, sid, int(lsn)).content, "named")

    def test_wrong_peer_server_name_is_refused(self):
        r = self.replica("--tls-peer-server-name", "other.engram.test")
        self.wait_until(lambda: "Peer name other.engram.test is not in peer certificate"
                        in r.log_text(), CONNECT_TIMEOUT,
                        "the replica logging the name mismatch", [r])
        self.assertEqual([x.replica_id for x in status(self.p).replicas], [])

    def test_unreadable_peer_file_fails_at_start(self):
        missing = os.path.join(self.tmp, "missing-ca.pem")
        p = subprocess.run([ENGRAMD, "--listen", "127.0.0.1:0", "--data-dir",
                            os.path.join(self.tmp, "d"), "--keyring", self.keyring,
                            "--role", "replica", "--primary", self.p.addr,
                            "--tls-peer-ca", missing],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30,
                           env=clean_env())
        self.assertNotEqual(p.returncode, 0)
        self.assertIsNone(scan_sanitizer(p.stdout.decode()))
        self.assertIn("CA bundle %s: cannot open: No such file or directory" % missing,
                      p.stdout.decode())


class TlsEtcd(EtcdMember):
    """One etcd member serving its clients over mutual TLS only."""

    def __init__(self, base, certs):
        super().__init__(base, 0, "engram-tlsc-" + uid("c"), clean_env())
        self.initial_cluster = "%s=%s" % (self.name, self.peer_url)
        self.certs = certs

    def argv(self):
        plain, tls = "http://" + self.endpoint, "https://" + self.endpoint
        cert, key = self.certs.etcd_server
        return ([a.replace(plain, tls) for a in super().argv()] +
                ["--cert-file", cert, "--key-file", key, "--trusted-ca-file",
                 self.certs.etcd_ca.cert, "--client-cert-auth"])

    def ready(self):
        cert, key = self.certs.etcd_client
        creds = grpc.ssl_channel_credentials(read(self.certs.etcd_ca.cert), read(key), read(cert))
        with grpc.secure_channel(self.endpoint, creds) as ch:
            etcd_rpc_grpc.KVStub(ch).Range(etcd_rpc.RangeRequest(key=b"/"), timeout=2.0)
        return True


class CoordinatorEtcdTlsTest(TlsClientCase):
    PREFIX = "/engram-tls"

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="engram-e2e-tlsc-etcd-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, self.tmp, True)
        self.keyring = make_keyring(os.path.join(self.tmp, "keyring"))
        self.etcd = TlsEtcd(self.tmp, self.certs)
        self.addCleanup(self.etcd.term)  # after the nodes (cleanups run last first)
        self.etcd.spawn()
        self.wait_until(self.etcd.ready, ETCD_START_TIMEOUT, "etcd serving TLS")
        self.url = "etcd://%s%s" % (self.etcd.endpoint, self.PREFIX)

    def node(self, name, *args):
        s = Server("--coordinator", self.url, "--replica-id", name, "--lease-ttl-s", "2",
                   "--replica-token", "replica-token-1", *args, tokens=TOKENS,
                   keyring=self.keyring, port=free_port())
        s.name = name
        self.addCleanup(s.close)
        s.start()
        return s

    def test_elects_over_mutual_tls(self):
        cert, key = self.certs.etcd_client
        a = self.node("a", "--etcd-tls-ca", self.certs.etcd_ca.cert, "--etcd-tls-cert", cert,
                      "--etcd-tls-key", key)
        self.wait_until(lambda: status(a).role == "primary", ELECT_TIMEOUT, "a elected", [a])
        # Without the client certificate etcd refuses the handshake: the
        # node names etcd as unreachable and is elected nothing.
        b = self.node("b", "--etcd-tls-ca", self.certs.etcd_ca.cert)
        st = self.wait_until(lambda: "cannot be reached" in status(b).failover_problem and
                             status(b), ELECT_TIMEOUT, "b naming etcd unreachable", [b])
        self.assertIn(self.etcd.endpoint, st.failover_problem)
        self.assertEqual(st.role, "replica")

    def test_unreadable_etcd_file_fails_at_start(self):
        missing = os.path.join(self.tmp, "missing.key")
        p = subprocess.run([ENGRAMD, "--listen", "127.0.0.1:0", "--data-dir",
                            os.path.join(self.tmp, "d"), "--keyring", self.keyring,
                            "--coordinator", self.url, "--etcd-tls-ca", self.certs.etcd_ca.cert,
                            "--etcd-tls-cert", self.certs.etcd_client[0], "--etcd-tls-key",
                            missing],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30,
                           env=clean_env())
        self.assertNotEqual(p.returncode, 0)
        self.assertIsNone(scan_sanitizer(p.stdout.decode()))
        self.assertIn("private key %s: cannot open: No such file or directory" % missing,
                      p.stdout.decode())
