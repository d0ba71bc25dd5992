"""Clients that do not read their replies: raw HTTP/2 (python3-h2) streams
with a zero flow-control window. The server holds each reply it could not
send, so the bytes held server-wide are capped (--max-pending-reply-bytes):
past the cap a call answers RESOURCE_EXHAUSTED "server busy" instead of
queueing its payload, RSS stays bounded, and Health keeps answering."""
import os
import socket
import struct
import time
import unittest

import grpc

from harness import E2ETestCase, M, Server, SERVING, pb

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings
except ImportError:  # scripts/deps.sh test installs python3-h2
    h2 = None

MIB = 1024 * 1024
PENDING_CAP = 32 * MIB
STREAMS = 60


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def grpc_frame(msg):
    body = msg.SerializeToString()
    return b"\x00" + struct.pack(">I", len(body)) + body


class ZeroWindowClient:
    """One connection whose receive window is 0: headers and trailers arrive,
    reply data never does."""

    def __init__(self, addr, port):
        self.addr = addr
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        self.sock.sendall(self.conn.data_to_send())
        self.headers = {}   # stream id -> response headers and trailers
        self.ended = {}     # stream id -> (grpc-status, grpc-message)

    def call(self, path, msg):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                                     (":authority", self.addr), (":path", path),
                                     ("content-type", "application/grpc"), ("te", "trailers")])
        self.conn.send_data(sid, grpc_frame(msg), end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        return sid

    def pump(self, timeout):
        """Reads what arrives within timeout (never granting window)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return
        if not data:
            raise AssertionError("the server closed the connection")
        for ev in self.conn.receive_data(data):
            sid = getattr(ev, "stream_id", None)
            if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                self.headers.setdefault(sid, {}).update(
                    (k.decode(), v.decode()) for k, v in ev.headers)
            elif isinstance(ev, h2.events.StreamEnded):
                h = self.headers.get(sid, {})
                self.ended[sid] = (h.get("grpc-status"), h.get("grpc-message", ""))
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def close(self):
        self.sock.close()


@unittest.skipIf(h2 is None, "python3-h2 not installed")
class PendingReplyBudgetTest(E2ETestCase):
    def test_unread_replies_are_capped_server_wide(self):
        # An ASan build keeps up to 256 MiB of freed memory in quarantine,
        # which would hide what is really held; keep it small.
        asan = os.environ.get("ASAN_OPTIONS", "")
        srv = Server("--workers", "2", "--max-pending-reply-bytes", str(PENDING_CAP),
                     env={"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=8"})
        srv.start()
        self.addCleanup(srv.close)
        client = srv.client()
        sid = client.create("u1").session_id
        for _ in range(6):
            client.append(sid, *[M("q" * 60000) for _ in range(10)])
        req = pb.ListMessagesRequest(session_id=sid, page_size=1000)
        page = client.call("ListMessages", req)
        one_reply = len(page.SerializeToString())
        self.assertGreater(one_reply, 2 * MIB)
        base = rss_kb(srv.pid)

        slow = ZeroWindowClient(srv.addr, srv.port)
        self.addCleanup(slow.close)
        streams = [slow.call("/engram.v1.SessionService/ListMessages", req)
                   for _ in range(STREAMS)]
        # At most the cap's worth of replies is held; every other call is
        # refused. Wait for those refusals (trailers need no window).
        held_max = PENDING_CAP // one_reply
        want_refused = STREAMS - held_max
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(slow.ended) < want_refused:
            slow.pump(0.5)
        refused = [s for s in streams if slow.ended.get(s, (None,))[0] == "8"]
        self.assertGreaterEqual(len(refused), want_refused,
                                "ended: %r" % list(slow.ended.values())[:3])
        self.assertEqual(len(slow.ended), len(refused), slow.ended)
        msg = slow.ended[refused[0]][1]
        self.assertIn("server busy", msg)
        self.assertIn("not yet read by clients", msg)
        self.assertIn("max-pending-reply-bytes", msg)
        # Held: the capped replies and little else (before the cap every
        # stream held its reply and request state: hundreds of MiB here).
        grown_mib = (rss_kb(srv.pid) - base) / 1024
        self.assertLess(grown_mib, 4 * PENDING_CAP / MIB, "RSS grew %.0f MiB" % grown_mib)
        self.assertEqual(client.health(), SERVING)

        # The held replies go with their connection; the budget is free again.
        slow.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                # (the messages: each page token is sealed with a fresh nonce)
                self.assertEqual(client.call("ListMessages", req).messages, page.messages)
                break
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


if __name__ == "__main__":
    unittest.main()
