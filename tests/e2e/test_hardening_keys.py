"""Hardening of keys, start-up order, signals and the metrics endpoint:
the key fingerprint a data dir records, keyring file checks, what a bad
flag or --tokens path leaves behind, SIGHUP and a second SIGTERM, and a
/metrics endpoint that idle or stalled clients cannot hold up."""
import base64
import shutil
import tempfile
import os
import re
import signal
import socket
import struct
import subprocess
import time
import urllib.request

from harness import (ENGRAMD, STOP_TIMEOUT, E2ETestCase, Server, clean_env, free_port,
                     make_keyring, uid)

METRICS_RE = re.compile(r"engramd: metrics on 127\.0\.0\.1:(\d+)")


def write_keyring(path, keys, primary, mode=0o600):
    with open(path, "w") as f:
        f.write("primary %d\n" % primary)
        for kid, raw in sorted(keys.items()):
            f.write("key %d %s\n" % (kid, base64.b64encode(raw).decode()))
    os.chmod(path, mode)


def read_keys(path):
    keys = {}
    for line in open(path):
        m = re.match(r"^key\s+(\d+)\s+(\S+)\s*$", line.strip())
        if m:
            keys[int(m.group(1))] = base64.b64decode(m.group(2))
    return keys


def run_engramd(args, timeout=STOP_TIMEOUT):
    """Runs engramd to its exit (it must refuse to start); returns (status, stderr)."""
    p = subprocess.run([ENGRAMD] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, env=clean_env(), timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace")


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


class KeyFingerprintTest(E2ETestCase):
    """A data dir records which keys sealed its data and refuses a keyring
    that is missing, lacks one of them, or holds a different key."""

    def setUp(self):
        self.srv = Server()
        self.addCleanup(self.srv.close)
        self.srv.start()
        c = self.srv.client()
        self.sid = c.create(uid("u"), metadata={"k": "v"}).session_id
        c.append(self.sid, "sealed under key 1")
        self.srv.stop()
        self.path = self.srv.keyring_path

    def refused(self, *want):
        rc, out = run_engramd(self.srv.argv()[1:])
        self.assertEqual(rc, 1, out)
        for w in want:
            self.assertIn(w, out)
        self.assertNotIn("listening on", out)
        return out

    def test_missing_keyring_with_data_is_refused_not_replaced(self):
        os.unlink(self.path)
        self.refused(self.path, "is missing", "restore it from backup")
        self.assertFalse(os.path.exists(self.path), "a fresh keyring was created")

    def test_different_key_is_refused(self):
        (kid,) = read_keys(self.path)
        write_keyring(self.path, {kid: os.urandom(32)}, kid)
        self.refused(self.path, "key %d in the keyring differs" % kid)

    def test_rotation_records_new_keys_and_refuses_dropping_old_ones(self):
        keys = read_keys(self.path)
        (old,) = keys
        new = old + 1
        keys[new] = os.urandom(32)
        write_keyring(self.path, keys, new)
        self.srv.start()
        c = self.srv.client()
        self.assertEqual([m.content for m in c.all_messages(self.sid)], ["sealed under key 1"])
        c.append(self.sid, "sealed under key 2")
        self.srv.stop()
        # the new key was recorded: a different key under its id is refused
        write_keyring(self.path, {old: keys[old], new: os.urandom(32)}, new)
        self.refused("key %d in the keyring differs" % new)
        # and dropping the old key is refused too
        write_keyring(self.path, {new: keys[new]}, new)
        self.refused("key %d, which data here may be sealed with, is not in the keyring" % old)
        write_keyring(self.path, keys, new)
        self.srv.start()
        self.assertEqual([m.content for m in self.srv.client().all_messages(self.sid)],
                         ["sealed under key 1", "sealed under key 2"])


class StartupOrderTest(E2ETestCase):
    def setUp(self):
        self.tmp = Server(create_data_dir=False).tmp  # a temp dir; no process started
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", self.tmp]))
        self.data = os.path.join(self.tmp, "data")

    def test_bad_tokens_path_creates_nothing(self):
        rc, out = run_engramd(["--listen", "127.0.0.1:0", "--data-dir", self.data,
                               "--tokens", os.path.join(self.tmp, "no-such-tokens")])
        self.assertEqual(rc, 1, out)
        self.assertIn("--tokens", out)
        self.assertFalse(os.path.exists(self.data), "data dir (and keyring) created: " + out)

    def test_bad_flag_says_see_help_once(self):
        rc, out = run_engramd(["--no-such-flag", "1"])
        self.assertEqual(rc, 2, out)
        self.assertIn("--no-such-flag: unknown flag", out)
        self.assertEqual(out.count("--help"), 1, out)
        self.assertIn("(see engramd --help)", out)

    def test_keyring_readable_by_others_is_refused(self):
        path = make_keyring(os.path.join(self.tmp, "keyring"))
        os.chmod(path, 0o644)
        rc, out = run_engramd(["--listen", "127.0.0.1:0", "--data-dir", self.data,
                               "--keyring", path])
        self.assertEqual(rc, 1, out)
        self.assertIn("chmod 600 %s" % path, out)
        self.assertFalse(os.path.exists(self.data), "data dir created: " + out)

    def test_replica_without_keyring_is_refused_and_makes_none(self):
        # A fresh key on a replica could read nothing the primary sealed.
        rc, out = run_engramd(["--listen", "127.0.0.1:0", "--data-dir", self.data,
                               "--role", "replica", "--primary", "127.0.0.1:%d" % free_port()])
        self.assertEqual(rc, 1, out)
        self.assertIn("a replica needs the primary's keyring", out)
        self.assertIn(os.path.join(self.data, "keyring"), out)
        self.assertFalse(os.path.exists(self.data), "data dir (and keyring) created: " + out)

    def test_keyring_with_nul_is_refused_naming_the_line(self):
        path = make_keyring(os.path.join(self.tmp, "keyring"))
        with open(path, "ab") as f:
            f.write(b"\0\n")
        rc, out = run_engramd(["--listen", "127.0.0.1:0", "--data-dir", self.data,
                               "--keyring", path])
        self.assertEqual(rc, 1, out)
        self.assertIn("line 3: byte 0x00", out)


def metrics_port(srv):
    return int(wait_for(lambda: METRICS_RE.search(srv.log_text()), 10, "metrics line").group(1))


def scrape(port, timeout):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=timeout) as r:
        return r.status, r.read().decode()


class MetricsEndpointTest(E2ETestCase):
    def setUp(self):
        self.port = free_port()
        self.srv = Server("--metrics-listen", "127.0.0.1:%d" % self.port)
        self.addCleanup(self.srv.close)
        self.srv.start()
        self.socks = []
        self.addCleanup(lambda: [s.close() for s in self.socks])

    def test_port_zero_is_announced_and_serves_the_exposition(self):
        srv = Server("--metrics-listen", "127.0.0.1:0")
        self.addCleanup(srv.close)
        srv.start()
        port = metrics_port(srv)
        srv.client().create(uid("u"))
        status, body = scrape(port, 5)
        self.assertEqual(status, 200)
        self.assertIn('engram_rpc_total{method="/engram.v1.SessionService/CreateSession",'
                      'code="OK"} 1\n', body)
        self.assertIn("# TYPE engram_writer_batches_total counter\n", body)
        self.assertIn("engram_last_lsn ", body)

    def test_metrics_port_is_not_shared_with_a_second_engramd(self):
        # Like the gRPC port: a second server must not silently take half
        # of the scrapes (SO_REUSEPORT) of the first one's port.
        d = tempfile.mkdtemp(prefix="engram-e2e-metrics2-")
        self.addCleanup(shutil.rmtree, d, True)
        rc, out = run_engramd(["--listen", "127.0.0.1:0", "--data-dir", os.path.join(d, "data"),
                               "--metrics-listen", "127.0.0.1:%d" % self.port])
        self.assertEqual(rc, 1, out)
        self.assertIn("--metrics-listen 127.0.0.1:%d: cannot bind" % self.port, out)
        status, _ = scrape(self.port, 5)
        self.assertEqual(status, 200)

    def test_idle_connections_do_not_delay_a_scrape(self):
        # Before: one connection at a time, each read timing out after 2 s,
        # so 10 idle connections delayed a scrape by 20 s.
        for _ in range(10):
            self.socks.append(socket.create_connection(("127.0.0.1", self.port), timeout=5))
        t0 = time.monotonic()
        status, _ = scrape(self.port, 5)
        self.assertEqual(status, 200)
        self.assertLess(time.monotonic() - t0, 5)

    def test_slowloris_does_not_starve_a_scrape(self):
        # Before: 40 connections each sending one header byte now and then
        # held every slot forever (the idle timeout restarts on each byte),
        # so every scrape failed. Now one address holds at most 16 and no
        # connection lives past 5 s: a scrape gets in while they go on.
        for _ in range(40):
            try:
                k = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                k.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                self.socks.append(k)
            except OSError:
                pass  # refused: past the per-address limit
        deadline = time.monotonic() + 20
        while True:
            for k in self.socks:
                try:
                    k.sendall(b"X")
                except OSError:
                    pass  # cut by the server
            try:
                status, _ = scrape(self.port, 1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # refused at once: retry, as a scraper does
        self.assertEqual(status, 200)

    def test_client_that_never_reads_does_not_block_stop(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        s.connect(("127.0.0.1", self.port))
        self.socks.append(s)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 200)
        status, _ = scrape(self.port, 5)  # the stalled client holds nobody up
        self.assertEqual(status, 200)
        self.srv.stop()  # SIGTERM, exit 0 within the stop timeout


def h2_frame(ftype, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream) + payload


def hpack_literal(name, value):
    """A literal header field without indexing, no Huffman coding."""
    def s(b):
        assert len(b) < 127
        return bytes([len(b)]) + b
    return b"\x00" + s(name.encode()) + s(value.encode())


class SignalTest(E2ETestCase):
    def test_sighup_is_logged_and_survived(self):
        srv = Server()
        self.addCleanup(srv.close)
        srv.start()
        os.kill(srv.pid, signal.SIGHUP)
        wait_for(lambda: "SIGHUP: reloading" in srv.log_text(), 10, "the SIGHUP log line")
        self.assertIsNone(srv.died(), "SIGHUP killed engramd")
        srv.client().create(uid("u"))
        srv.stop()

    def test_second_sigterm_while_draining_exits_at_once(self):
        srv = Server("--shutdown-grace-ms", "600000")
        self.addCleanup(srv.close)
        srv.start()
        # A raw HTTP/2 client that gives the server no flow-control window:
        # its call's reply can never be sent, so draining waits for it.
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" +
                  h2_frame(4, 0, 0, struct.pack(">HI", 4, 0)))  # INITIAL_WINDOW_SIZE 0
        buf = b""

        def frames():
            nonlocal buf
            while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
                chunk = s.recv(65536)
                if not chunk:
                    raise AssertionError("engramd closed the HTTP/2 connection")
                buf += chunk
            n = int.from_bytes(buf[:3], "big")
            f, buf = buf[:9 + n], buf[9 + n:]
            return f[3], f[4], int.from_bytes(f[5:9], "big") & 0x7fffffff

        while True:  # the server's SETTINGS, then ours acknowledged
            ftype, flags, _ = frames()
            if ftype == 4 and not flags & 1:
                s.sendall(h2_frame(4, 1, 0, b""))
                break
        headers = b"".join(hpack_literal(k, v) for k, v in [
            (":method", "POST"), (":scheme", "http"), (":path", "/grpc.health.v1.Health/Check"),
            (":authority", "127.0.0.1"), ("content-type", "application/grpc"), ("te", "trailers")])
        s.sendall(h2_frame(1, 4, 1, headers) + h2_frame(0, 1, 1, b"\x00\x00\x00\x00\x00"))
        while True:  # the reply's headers: the call is running, its data held
            ftype, _, stream = frames()
            if ftype == 1 and stream == 1:
                break
        p = srv.proc
        os.kill(p.pid, signal.SIGTERM)
        wait_for(lambda: "draining calls" in srv.log_text(), 10, "the draining line")
        os.kill(p.pid, signal.SIGTERM)
        rc = p.wait(timeout=10)
        srv.proc = None
        self.assertEqual(rc, 1)
        self.assertIn("exiting without draining", srv.log_text())
        srv.check_log()


if __name__ == "__main__":
    import unittest
    unittest.main()
