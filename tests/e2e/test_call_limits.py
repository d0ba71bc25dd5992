"""Limits on what one client can make the server hold: a unary call not
answered and sent within --call-timeout-ms is cancelled (also when the client
sent no deadline, or never reads the reply), one connection has at most
--max-streams-per-conn calls open, and a worker thread that cannot start
fails start-up with a clear message instead of a crash."""
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import unittest

import grpc

from harness import ENGRAMD, E2ETestCase, M, clean_env, pb, pbg, uid

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings
except ImportError:  # scripts/deps.sh test installs python3-h2
    h2 = None


def far_read(client, sid, timeout):
    """A GetSession that parks: its engram-min-lsn is far ahead."""
    return client.call("GetSession", pb.GetSessionRequest(session_id=sid), timeout=timeout,
                       metadata=(("engram-min-lsn", str(10**12)),))


class CallTimeoutTest(E2ETestCase):
    def test_parked_call_without_deadline_is_cancelled_by_the_server(self):
        # The park bound (60 s) is far beyond the cap: only the cap answers.
        server = self.start_server("--call-timeout-ms", "1000", "--max-lsn-wait-ms", "60000")
        client = server.client()
        sid = client.create(uid("u")).session_id
        start = time.monotonic()
        err = self.assertStatus(grpc.StatusCode.DEADLINE_EXCEEDED, far_read, client, sid, 30)
        self.assertIn("--call-timeout-ms", err.details())
        self.assertLess(time.monotonic() - start, 20)
        # The worker and the connection are still fine.
        self.assertEqual(client.get(sid).session_id, sid)

    @unittest.skipIf(h2 is None, "python3-h2 not installed")
    def test_reply_the_client_never_reads_is_cancelled(self):
        server = self.start_server("--call-timeout-ms", "1000")
        # A stream window of 0: the server may send headers but no reply data.
        status, _ = raw_call(self, server, "/grpc.health.v1.Health/Check", b"", window=0)
        # Without the cap the stream stays open (the socket read times out).
        self.assertIn(status, ("4", "reset"), "the unread reply was not cancelled")

    @unittest.skipIf(h2 is None, "python3-h2 not installed")
    def test_parked_read_cut_by_the_clients_deadline_is_deadline_exceeded(self):
        # What the server itself answers when the client's deadline ends a
        # parked read (a raw HTTP/2 client, which keeps no deadline of its
        # own): DEADLINE_EXCEEDED, not UNAVAILABLE "retry", which raced the
        # client's own deadline and made a retrying client give up with it.
        # gRPC core's own deadline timer answers at the same moment, so
        # either message may come; the code is the same.
        server = self.start_server("--max-lsn-wait-ms", "60000")
        sid = server.client().create(uid("u")).session_id
        request = pb.GetSessionRequest(session_id=sid).SerializeToString()
        for _ in range(10):
            status, headers = raw_call(
                self, server, "/engram.v1.SessionService/GetSession", request,
                extra=(("grpc-timeout", "100m"), ("engram-min-lsn", str(10**12))))
            self.assertEqual(status, "4", headers)


def raw_call(test, server, path, request, extra=(), window=None):
    """One unary gRPC call over a plain HTTP/2 connection (python3-h2):
    returns the stream's grpc-status ("reset" or "closed" if it has none)
    and its response headers and trailers. window: the stream window this
    client announces (0: it reads no reply data)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    test.addCleanup(sock.close)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    if window is not None:
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                            (":authority", server.addr), (":path", path),
                            ("content-type", "application/grpc"), ("te", "trailers"),
                            *extra])
    conn.send_data(sid, b"\x00" + struct.pack(">I", len(request)) + request, end_stream=True)
    sock.sendall(conn.data_to_send())
    status, headers, pending = None, {}, b""
    deadline = time.monotonic() + 20
    while status is None and time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            return "closed", headers
        pending += data
        # Frame by frame, to stop at the stream's end: gRPC core follows a
        # deadline's trailers and RST_STREAM with a second pair, which h2
        # refuses on the closed stream.
        while status is None and len(pending) >= 9:
            size = 9 + int.from_bytes(pending[:3], "big")
            if len(pending) < size:
                break
            frame, pending = pending[:size], pending[size:]
            for ev in conn.receive_data(frame):
                if getattr(ev, "stream_id", None) != sid:
                    continue
                if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    headers.update((k.decode(), v.decode()) for k, v in ev.headers)
                elif isinstance(ev, h2.events.StreamEnded):
                    status = headers.get("grpc-status")
                elif isinstance(ev, h2.events.StreamReset):
                    status = "reset"
        sock.sendall(conn.data_to_send())
    return status, headers


class StreamsPerConnectionTest(E2ETestCase):
    def test_calls_beyond_the_cap_wait_for_a_free_stream(self):
        server = self.start_server("--max-streams-per-conn", "2", "--max-lsn-wait-ms", "60000")
        other = server.client()
        sid = other.create(uid("u")).session_id
        lsn = int(other.call_lsn("AppendMessages", pb.AppendMessagesRequest(
            session_id=sid, messages=[M("x")]))[1])
        md = (("engram-min-lsn", str(lsn + 1)),)
        # A connection of its own (gRPC Python shares one per target otherwise).
        channel = grpc.insecure_channel(server.addr, options=[("grpc.use_local_subchannel_pool", 1)])
        self.addCleanup(channel.close)
        stub = pbg.SessionServiceStub(channel)
        # Connected first, so the server's SETTINGS (the cap) are in effect.
        self.assertEqual(stub.GetSession(pb.GetSessionRequest(session_id=sid),
                                         timeout=20).session_id, sid)
        parked = [stub.GetSession.future(pb.GetSessionRequest(session_id=sid), timeout=60,
                                         metadata=md) for _ in range(2)]
        # Both streams of this connection are taken by parked reads: a third
        # call on it waits for one (and runs out of time), while the same
        # call on another connection is answered at once.
        self.assertEqual(other.get(sid).session_id, sid)
        self.assertStatus(grpc.StatusCode.DEADLINE_EXCEEDED, stub.GetSession,
                          pb.GetSessionRequest(session_id=sid), timeout=1.0)
        self.assertFalse(any(f.done() for f in parked))
        other.append(sid, M("y"))  # commits lsn + 1
        for f in parked:
            self.assertEqual(f.result(timeout=20).message_count, 2)
        self.assertEqual(stub.GetSession(pb.GetSessionRequest(session_id=sid),
                                         timeout=20).message_count, 2)


@unittest.skipUnless(hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("setpriv")
                     and shutil.which("prlimit"), "needs root, setpriv and prlimit")
class ThreadStartTest(E2ETestCase):
    def test_worker_thread_that_cannot_start_fails_start_up(self):
        # RLIMIT_NPROC binds only non-root users: run as nobody, with room
        # for gRPC's own threads and engramd's first few, not for 64 workers.
        tmp = tempfile.mkdtemp(prefix="engram-e2e-nproc-")
        self.addCleanup(shutil.rmtree, tmp, True)
        os.chown(tmp, 65534, 65534)
        cmd = ["prlimit", "--nproc=16", "setpriv", "--reuid=65534", "--regid=65534",
               "--clear-groups", ENGRAMD, "--listen", "127.0.0.1:0", "--data-dir",
               os.path.join(tmp, "data"), "--workers", "64"]
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=clean_env(), timeout=60)
        log = p.stdout.decode(errors="replace")
        self.assertEqual(p.returncode, 1, log)
        self.assertRegex(log, r"engramd: start: cannot start worker thread \d+ of 64 \(--workers\)")
        self.assertNotIn("listening on", log)
