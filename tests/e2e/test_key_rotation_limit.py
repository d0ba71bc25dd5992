"""A data-key rotation over records whose re-sealed copies log more than one
commit may (server/writer.h, EG_WRITER_ITEM_LOG_MAX: 48 MiB): the step's
write fails EG_ELIMIT and the thread halves its steps until they fit
(4 MiB checkpoints); a record too large even alone (a 31 MiB checkpoint
with 19 MiB of pending writes) is skipped, named in the rotation's problem,
and its user's older generation kept, while the other users rotate and
retire as usual. Every record reads back the same after it."""
from harness import E2ETestCase
from test_checkpoints import Ckpt, W, cid
from test_key_rotation import (DONE_TIMEOUT, TENANT, data_rotation, generations, key_status,
                               rotate)
from test_memories import Mem

MiB = 1 << 20
LOG_MAX = 48 * MiB


class RotationLogBoundTest(E2ETestCase):

    def wait_done(self, srv):
        c = srv.client()
        return self.wait_until(lambda: (lambda r: not r.running and r)(
            data_rotation(key_status(c))), DONE_TIMEOUT, "the data-key rotation done", [srv])

    def ckpt(self, srv):
        ck = Ckpt(srv.addr)
        self.addCleanup(ck.close)
        return ck

    def test_steps_halve_until_their_write_fits(self):
        # 13 checkpoints of 4 MiB: 52 MiB re-sealed in one step of 16.
        srv = self.start_server("--key-rotation-batch", "16")
        ck = self.ckpt(srv)
        datas = [bytes([65 + n]) * (4 * MiB) for n in range(13)]
        for n, data in enumerate(datas):
            ck.put("big", "t1", cid(n), data=data)
        self.assertGreater(sum(map(len, datas)), LOG_MAX)
        mid = Mem(srv.client()).create("small", "a small memory").memory.memory_id
        rotate(srv.client())
        r = self.wait_done(srv)
        self.assertEqual((r.done, r.total, r.problem), (2, 2, ""))
        self.assertIn("data-key rotation: a step's write logs more than one commit may; "
                      "8 records a step from now on", srv.log_text())
        for user in ("big", "small"):
            self.assertEqual(generations(srv.data_dir, TENANT, user), {1: False, 2: True}, user)
        counts = {t.key: t.tokens for t in key_status(srv.client()).token_counts}
        self.assertEqual(list(counts), ["data:2"])
        for n, data in enumerate(datas):
            self.assertEqual(ck.get("big", "t1", cid=cid(n)).checkpoint, data, n)
        self.assertEqual(Mem(srv.client()).get(mid).text, "a small memory")

    def test_a_record_too_large_alone_is_skipped_and_its_key_kept(self):
        srv = self.start_server("--max-checkpoint-bytes", str(32 * MiB),
                                "--key-rotation-batch", "4")
        ck = self.ckpt(srv)
        data = b"c" * (31 * MiB)
        ck.put("huge", "t1", cid(1), data=data)
        # 19 MiB of pending writes (PutWrites takes 16 MiB a call, 4 MiB a value).
        values = [bytes([97 + k]) * (4 * MiB - 4096) for k in range(4)] + [b"e" * (3 * MiB)]
        self.assertEqual(ck.writes("huge", "t1", cid(1), [W("w", k, value=v)
                                                           for k, v in enumerate(values[:4])]), 4)
        self.assertEqual(ck.writes("huge", "t1", cid(1), [W("w", 4, value=values[4])]), 1)
        self.assertGreater(len(data) + sum(map(len, values)), LOG_MAX)
        # Another user of the same tenant, with a checkpoint of its own.
        ck.put("alice", "t1", cid(1), data=b'{"a": 1}')
        mid = Mem(srv.client()).create("alice", "alice's memory").memory.memory_id
        rotate(srv.client())
        r = self.wait_done(srv)
        self.assertEqual((r.done, r.total), (2, 2))
        self.assertIn('user "huge" of tenant default: checkpoint %s of thread t1 (with its '
                      'pending writes) is too large to re-seal in one write (more than %d bytes '
                      'of log): left under its old key' % (cid(1), LOG_MAX), r.problem)
        self.assertIn('user "huge" of tenant default: 1 records left under an older '
                      'generation; generations below 2 kept', srv.log_text())
        self.assertEqual(generations(srv.data_dir, TENANT, "huge"), {1: True, 2: True})
        self.assertEqual(generations(srv.data_dir, TENANT, "alice"), {1: False, 2: True})
        # The skipped checkpoint's 3 fields and 5 writes still under data:1.
        counts = {t.key: t.tokens for t in key_status(srv.client()).token_counts}
        self.assertEqual(counts["data:1"], 8)
        got = ck.get("huge", "t1")
        self.assertEqual(got.checkpoint, data)
        self.assertEqual([w.value for w in got.pending_writes], values)
        self.assertEqual(ck.get("alice", "t1").checkpoint, b'{"a": 1}')
        self.assertEqual(Mem(srv.client()).get(mid).text, "alice's memory")
        # The problem stays after the rotation, until the next one.
        self.assertEqual(data_rotation(key_status(srv.client())).problem, r.problem)
