"""Acknowledged writes survive SIGKILL and SIGTERM (also under load)."""
import threading
import time

import grpc

from harness import Client, E2ETestCase, M, Server, pb, uid


class DurabilityTest(E2ETestCase):

    def setUp(self):
        self.srv = Server()
        self.addCleanup(self.srv.close)
        self.srv.start()

    def test_kill9_after_acknowledged_appends(self):
        c = self.srv.client()
        sid = c.create(uid("u")).session_id
        acked = []
        for i in range(200):
            r = c.append(sid, M("durable-%03d" % i, client_message_id="k%d" % i))
            acked.append((r.messages[0].seq, "durable-%03d" % i))
        self.srv.kill9()
        self.srv.start()
        c = self.srv.client()
        msgs = c.all_messages(sid)
        self.assertEqual([(m.seq, m.content) for m in msgs], acked)
        self.assertEqual(c.get(sid).message_count, 200)
        # retry records survived too
        r = c.append(sid, M("dup", client_message_id="k7"))
        self.assertEqual(r.messages[0].seq, 8)
        self.assertEqual(r.session.message_count, 200)

    def test_kill9_keeps_every_kind_of_write(self):
        c = self.srv.client()
        user = uid("u")
        live = c.create(user, session_id=uid("live"), metadata={"m": "1"}).session_id
        c.append(live, "a", "b", "c")
        c.update_summary(live, "the summary", 2)
        ended = c.create(user, session_id=uid("ended")).session_id
        c.end(ended)
        gone = c.create(user, session_id=uid("gone")).session_id
        c.append(gone, "x")
        c.delete(gone)
        _, lsn_before = c.call_lsn("AppendMessages", pb.AppendMessagesRequest(
            session_id=live, messages=[M("d")]))
        self.srv.kill9()
        self.srv.start()
        c = self.srv.client()
        g = c.get(live)
        self.assertEqual((g.message_count, g.summary, g.summary_through_seq, dict(g.metadata)),
                         (4, "the summary", 2, {"m": "1"}))
        self.assertEqual([m.content for m in c.all_messages(live)], ["a", "b", "c", "d"])
        self.assertEqual(c.get(ended).state, pb.SESSION_STATE_ENDED)
        self.assertStatus(grpc.StatusCode.NOT_FOUND, c.get, gone)
        self.assertEqual(sorted(s.session_id for s in c.list_sessions(user).sessions),
                         sorted([live, ended]))
        # the LSN keeps growing across restarts
        _, lsn_after = c.call_lsn("AppendMessages", pb.AppendMessagesRequest(
            session_id=live, messages=[M("e")]))
        self.assertGreater(int(lsn_after), int(lsn_before))

    def test_sigterm_restart_persists(self):
        c = self.srv.client()
        sid = c.create(uid("u"), metadata={"k": "v"}).session_id
        c.append(sid, *["m%d" % i for i in range(10)])
        c.update_summary(sid, "sum", 5)
        before = c.get(sid)
        msgs = c.all_messages(sid)
        self.srv.restart()
        c = self.srv.client()
        self.assertEqual(c.get(sid), before)
        self.assertEqual(c.all_messages(sid), msgs)
        self.assertSeqs(c.append(sid, "after").messages, [11])

    def test_sigterm_while_clients_append(self):
        c = self.srv.client()
        sid = c.create(uid("u")).session_id
        addr = self.srv.addr
        acked = [[] for _ in range(8)]
        stop_at = time.monotonic() + 20
        started = threading.Barrier(9, timeout=10)

        def appender(i):
            cl = Client(addr)
            try:
                started.wait()
                for n in range(5000):
                    if time.monotonic() > stop_at:
                        return
                    content = "w%d-%d" % (i, n)
                    try:
                        r = cl.call("AppendMessages", pb.AppendMessagesRequest(
                            session_id=sid, messages=[M(content)]), timeout=5)
                    except grpc.RpcError:
                        return
                    acked[i].append((r.messages[0].seq, content))
            finally:
                cl.close()

        ts = [threading.Thread(target=appender, args=(i,), daemon=True) for i in range(8)]
        for t in ts:
            t.start()
        started.wait()
        # let them get going, then SIGTERM mid-stream
        t0 = time.monotonic()
        while sum(map(len, acked)) < 100 and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        self.srv.stop()
        for t in ts:
            t.join(20)
        self.assertFalse(any(t.is_alive() for t in ts), "appenders did not stop")
        all_acked = sorted(x for a in acked for x in a)
        self.assertGreaterEqual(len(all_acked), 100)
        self.srv.start()
        c = self.srv.client()
        msgs = c.all_messages(sid)
        stored = {m.seq: m.content for m in msgs}
        self.assertEqual(sorted(stored), list(range(1, len(msgs) + 1)), "seqs not gap-free")
        self.assertEqual(c.get(sid).message_count, len(msgs))
        lost = [(s, t) for s, t in all_acked if stored.get(s) != t]
        self.assertEqual(lost, [], "%d acknowledged appends lost or changed" % len(lost))


class MapSizeTest(E2ETestCase):

    def test_small_map_size_grows(self):
        srv = Server("--map-size", str(1 << 20))
        self.addCleanup(srv.close)
        srv.start()
        c = srv.client()
        sid = c.create(uid("u")).session_id
        big = 60000
        for i in range(50):  # ~3 MB of content (plus WAL) into a 1 MiB initial map
            c.append(sid, M(("%04d" % i) * (big // 4)))
        srv.restart()
        c = srv.client()
        msgs = c.all_messages(sid, page_size=10)
        self.assertEqual(len(msgs), 50)
        for i, m in enumerate(msgs):
            self.assertEqual(m.content, ("%04d" % i) * (big // 4))

