"""CheckpointService against the real engramd: round trips, the newest
checkpoint, the list orders and filters LangGraph's list uses, pending
writes and their retry semantics, every limit at its edge (nothing written
on bad input), DeleteThread, DeleteUser's erasure (raw keys of the LMDB
file), a replica read with engram-min-lsn, and sealing at rest."""
import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile

import grpc

from harness import (ENGRAMD, KEEP, RPC_TIMEOUT, E2ETestCase, Server, ServerTestCase, clean_env,
                     free_port, make_keyring, uid, write_tokens)
from test_at_rest import mdb_dump  # noqa: E402
from engram.v1 import agent_state_pb2 as apb  # noqa: E402
from engram.v1 import agent_state_pb2_grpc as apbg  # noqa: E402
from engram.v1 import user_pb2 as upb  # noqa: E402
from engram.v1 import user_pb2_grpc as upbg  # noqa: E402

MiB = 1 << 20
# Replies carry checkpoints of up to 4 MiB with their writes: above gRPC's
# default 4 MiB receive limit.
CHANNEL_OPTS = [("grpc.max_receive_message_length", 64 * MiB),
                ("grpc.max_send_message_length", 64 * MiB)]
INVALID = grpc.StatusCode.INVALID_ARGUMENT


class Ckpt:
    """CheckpointService (and DeleteUser) over one channel to one server."""

    def __init__(self, addr, token=None):
        self.channel = grpc.insecure_channel(addr, options=CHANNEL_OPTS)
        self.stub = apbg.CheckpointServiceStub(self.channel)
        self.users = upbg.UserServiceStub(self.channel)
        self.md = (("authorization", "Bearer " + token),) if token else ()

    def close(self):
        self.channel.close()

    def call(self, method, req, metadata=None, timeout=RPC_TIMEOUT):
        return getattr(self.stub, method)(req, timeout=timeout,
                                          metadata=self.md + tuple(metadata or ()))

    def put(self, user, thread, cid, ns="", parent="", data=b"{}", metadata=None,
            versions="{}"):
        return self.call("PutCheckpoint", apb.PutCheckpointRequest(
            user_id=user, checkpoint=apb.Checkpoint(
                thread_id=thread, checkpoint_ns=ns, checkpoint_id=cid,
                parent_checkpoint_id=parent, checkpoint_type="json", checkpoint=data,
                metadata_json=json.dumps(metadata or {}), new_versions_json=versions)))

    def get(self, user, thread, ns="", cid="", **kw):
        return self.call("GetCheckpoint", apb.GetCheckpointRequest(
            user_id=user, thread_id=thread, checkpoint_ns=ns, checkpoint_id=cid), **kw)

    def list(self, user, metadata=None, **kw):
        return self.call("ListCheckpoints", apb.ListCheckpointsRequest(user_id=user, **kw),
                         metadata=metadata)

    def list_all(self, user, **kw):
        """Every page: [(thread, ns, id)]."""
        out, token = [], ""
        for _ in range(1000):
            r = self.list(user, page_token=token, **kw)
            out += [(c.thread_id, c.checkpoint_ns, c.checkpoint_id) for c in r.checkpoints]
            token = r.next_page_token
            if not token:
                return out
        raise AssertionError("more than 1000 pages")

    def writes(self, user, thread, cid, writes, ns=""):
        return self.call("PutWrites", apb.PutWritesRequest(
            user_id=user, thread_id=thread, checkpoint_ns=ns, checkpoint_id=cid,
            writes=writes)).written

    def delete_thread(self, user, thread):
        return self.call("DeleteThread", apb.DeleteThreadRequest(user_id=user, thread_id=thread))

    def delete_user(self, user):
        return self.users.DeleteUser(upb.DeleteUserRequest(user_id=user), timeout=RPC_TIMEOUT,
                                     metadata=self.md)


def W(task, idx, channel="ch", value=b"v", value_type="json", task_path=""):
    return apb.PendingWrite(task_id=task, idx=idx, channel=channel, value=value,
                            value_type=value_type, task_path=task_path)


def cid(n):
    """Time-ordered ids (like LangGraph's uuid6): byte order is age."""
    return "1ef-%08d" % n


class CheckpointTest(ServerTestCase):

    @classmethod
    def connect(cls):
        super().connect()
        cls.ck = Ckpt(cls.server.addr)

    def test_round_trip_and_newest(self):
        u, t = uid("u"), uid("thread")
        r = self.ck.put(u, t, cid(1), data=b"\x00\x01bytes", metadata={"source": "input", "step": -1},
                        versions='{"a": 1}')
        self.assertEqual((r.thread_id, r.checkpoint_ns, r.checkpoint_id), (t, "", cid(1)))
        self.ck.put(u, t, cid(2), parent=cid(1), data=b"second", metadata={"source": "loop", "step": 0})
        c = self.ck.get(u, t, cid=cid(1))
        self.assertEqual(c.checkpoint, b"\x00\x01bytes")
        self.assertEqual(json.loads(c.metadata_json), {"source": "input", "step": -1})
        self.assertEqual(json.loads(c.new_versions_json), {"a": 1})
        self.assertEqual((c.user_id, c.checkpoint_type, c.parent_checkpoint_id), (u, "json", ""))
        self.assertGreater(c.create_time.seconds, 0)
        newest = self.ck.get(u, t)
        self.assertEqual((newest.checkpoint_id, newest.parent_checkpoint_id, newest.checkpoint),
                         (cid(2), cid(1), b"second"))
        # the same ids again replace (a retry)
        self.ck.put(u, t, cid(2), parent=cid(1), data=b"again")
        self.assertEqual(self.ck.get(u, t).checkpoint, b"again")
        # another user's thread of the same id is another thread
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.ck.get, uid("other"), t, field="thread_id")

    def test_not_found_names_what(self):
        u, t = uid("u"), uid("thread")
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.ck.get, u, t, field="thread_id")
        self.ck.put(u, t, cid(1), ns="child|node:1")
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.ck.get, u, t, field="thread_id")
        e = self.assertStatus(grpc.StatusCode.NOT_FOUND, self.ck.get, u, t, ns="child|node:1",
                              cid=cid(9), field="checkpoint_id")
        self.assertIn(cid(9), e.details())
        self.assertEqual(self.ck.get(u, t, ns="child|node:1").checkpoint_id, cid(1))

    def test_list_orders_and_filters(self):
        u, t1, t2 = uid("u"), uid("ta"), uid("tb")
        # t1: root ns 1,3,5 and "sub" ns 2,4; t2: root 6
        for n, t, ns, src in [(1, t1, "", "input"), (2, t1, "sub", "loop"), (3, t1, "", "loop"),
                              (4, t1, "sub", "loop"), (5, t1, "", "loop"), (6, t2, "", "loop")]:
            self.ck.put(u, t, cid(n), ns=ns, metadata={"source": src, "step": n, "parents": {}})
        ids = lambda rows: [r[2] for r in rows]  # noqa: E731
        # thread + ns
        self.assertEqual(ids(self.ck.list_all(u, thread_id=t1, checkpoint_ns="")),
                         [cid(5), cid(3), cid(1)])
        self.assertEqual(ids(self.ck.list_all(u, thread_id=t1, checkpoint_ns="sub")), [cid(4), cid(2)])
        # thread, ns unset: every namespace, newest first
        self.assertEqual(self.ck.list_all(u, thread_id=t1),
                         [(t1, "", cid(5)), (t1, "sub", cid(4)), (t1, "", cid(3)),
                          (t1, "sub", cid(2)), (t1, "", cid(1))])
        # no thread: all the user's threads
        self.assertEqual(ids(self.ck.list_all(u)), [cid(n) for n in (6, 5, 4, 3, 2, 1)])
        # no thread, ns set: that namespace of every thread
        self.assertEqual(ids(self.ck.list_all(u, checkpoint_ns="")), [cid(6), cid(5), cid(3), cid(1)])
        # before
        self.assertEqual(ids(self.ck.list_all(u, thread_id=t1, checkpoint_ns="",
                                              before_checkpoint_id=cid(5))), [cid(3), cid(1)])
        self.assertEqual(ids(self.ck.list_all(u, thread_id=t1, before_checkpoint_id=cid(4))),
                         [cid(3), cid(2), cid(1)])
        self.assertEqual(ids(self.ck.list_all(u, before_checkpoint_id=cid(6))),
                         [cid(n) for n in (5, 4, 3, 2, 1)])
        # filters: {} and "" match all; one pair; a value compared as JSON
        self.assertEqual(len(self.ck.list_all(u, filter_json="{}")), 6)
        self.assertEqual(ids(self.ck.list_all(u, filter_json='{"source": "loop"}')),
                         [cid(n) for n in (6, 5, 4, 3, 2)])
        self.assertEqual(ids(self.ck.list_all(u, thread_id=t1, filter_json='{"source":"loop","step":3}')),
                         [cid(3)])
        self.assertEqual(self.ck.list_all(u, filter_json='{"step": "3"}'), [])
        self.assertEqual(ids(self.ck.list_all(u, filter_json='{"parents": {}}')),
                         [cid(n) for n in (6, 5, 4, 3, 2, 1)])
        self.assertEqual(self.ck.list_all(u, filter_json='{"nope": 1}'), [])
        # pages of 2, each resumed by its token; the token is bound to the request
        r = self.ck.list(u, page_size=2)
        self.assertEqual([c.checkpoint_id for c in r.checkpoints], [cid(6), cid(5)])
        self.assertTrue(r.next_page_token)
        r2 = self.ck.list(u, page_size=2, page_token=r.next_page_token)
        self.assertEqual([c.checkpoint_id for c in r2.checkpoints], [cid(4), cid(3)])
        self.assertInvalid(self.ck.list, u, thread_id=t1, page_token=r.next_page_token,
                           field="page_token")
        self.assertInvalid(self.ck.list, u, page_size=-1, field="page_size")
        self.assertInvalid(self.ck.list, u, filter_json="[1]", field="filter_json")

    def test_page_size_default_and_cap_is_100(self):
        u, t = uid("u"), uid("t")
        for n in range(101):
            self.ck.put(u, t, cid(n))
        for size in (0, 100, 1000):
            r = self.ck.list(u, thread_id=t, page_size=size)
            self.assertEqual(len(r.checkpoints), 100)
            self.assertTrue(r.next_page_token)
        r = self.ck.list(u, thread_id=t, page_size=1000, page_token=r.next_page_token)
        self.assertEqual([c.checkpoint_id for c in r.checkpoints], [cid(0)])
        self.assertEqual(r.next_page_token, "")

    def test_a_rare_filter_examines_10x_the_page_per_call(self):
        u, t = uid("u"), uid("t")
        for n in range(25):
            self.ck.put(u, t, cid(n), metadata={"source": "input" if n == 0 else "loop"})
        r = self.ck.list(u, page_size=2, filter_json='{"source": "input"}')
        self.assertEqual(list(r.checkpoints), [])
        self.assertTrue(r.next_page_token)
        self.assertEqual(self.ck.list_all(u, page_size=2, filter_json='{"source": "input"}'),
                         [(t, "", cid(0))])

    def test_pending_writes_order_and_semantics(self):
        u, t = uid("u"), uid("t")
        self.ck.put(u, t, cid(1))
        self.assertEqual(self.ck.writes(u, t, cid(1), [W("task-b", 1, value=b"b1"), W("task-b", 0, value=b"b0"),
                                                        W("task-a", 0, value=b"a0"), W("task-a", -3, value=b"err")]), 4)
        # a retry of idx >= 0 keeps what is stored; a negative idx replaces
        self.assertEqual(self.ck.writes(u, t, cid(1), [W("task-a", 0, value=b"changed"),
                                                        W("task-a", -3, value=b"err2")]), 1)
        c = self.ck.get(u, t)
        self.assertEqual([(w.task_id, w.idx, w.value) for w in c.pending_writes],
                         [("task-a", -3, b"err2"), ("task-a", 0, b"a0"), ("task-b", 0, b"b0"),
                          ("task-b", 1, b"b1")])
        w = c.pending_writes[0]
        self.assertEqual((w.channel, w.value_type), ("ch", "json"))
        # lists carry them too; another checkpoint has none
        self.ck.put(u, t, cid(2))
        r = self.ck.list(u, thread_id=t, checkpoint_ns="")
        self.assertEqual([len(c.pending_writes) for c in r.checkpoints], [0, 4])
        self.assertEqual(self.ck.writes(u, t, cid(2), []), 0)

    def test_limits_at_their_edge(self):
        u, t = uid("u"), uid("t")
        i128, i129 = "i" * 128, "i" * 129
        # ids: 128 bytes accepted, 129 refused, naming the field
        self.ck.put(u, i128, i128, ns=i128, parent=i128)
        self.assertEqual(self.ck.get(u, i128, ns=i128, cid=i128).checkpoint_id, i128)
        for kw, field in [({"thread": i129}, "thread_id"), ({"cid": i129}, "checkpoint_id"),
                          ({"ns": i129}, "checkpoint_ns"), ({"parent": i129}, "parent_checkpoint_id")]:
            args = {"thread": t, "cid": cid(1)}
            args.update(kw)
            thread, c = args.pop("thread"), args.pop("cid")
            self.assertInvalid(self.ck.put, u, thread, c, field=field, **args)
        self.assertInvalid(self.ck.put, u, "", cid(1), field="thread_id")
        self.assertInvalid(self.ck.put, u, t, "", field="checkpoint_id")
        # checkpoint bytes: 4 MiB (--max-checkpoint-bytes default) accepted, one more refused
        self.ck.put(u, t, cid(1), data=b"x" * (4 * MiB))
        self.assertEqual(len(self.ck.get(u, t, cid=cid(1)).checkpoint), 4 * MiB)
        e = self.assertInvalid(self.ck.put, u, t, cid(2), data=b"x" * (4 * MiB + 1),
                               field="checkpoint.checkpoint")
        self.assertIn("4194304", e.details())
        # metadata: 1 MiB and 256 keys accepted; one more byte or key refused
        pad = lambda n: '{"k": "%s"}' % ("m" * (n - 9))  # noqa: E731
        self.assertEqual(len(pad(MiB)), MiB)
        self.ck.call("PutCheckpoint", apb.PutCheckpointRequest(user_id=u, checkpoint=apb.Checkpoint(
            thread_id=t, checkpoint_id=cid(3), metadata_json=pad(MiB))))
        self.assertInvalid(self.ck.call, "PutCheckpoint", apb.PutCheckpointRequest(
            user_id=u, checkpoint=apb.Checkpoint(thread_id=t, checkpoint_id=cid(4),
                                                 metadata_json=pad(MiB + 1))),
            field="checkpoint.metadata_json")
        self.ck.put(u, t, cid(5), metadata={"k%d" % i: i for i in range(256)})
        self.assertInvalid(self.ck.put, u, t, cid(6), metadata={"k%d" % i: i for i in range(257)},
                           field="checkpoint.metadata_json")
        self.assertInvalid(self.ck.put, u, t, cid(6), versions="[]", field="checkpoint.new_versions_json")
        deep = "[" * 70 + "]" * 70
        self.assertInvalid(self.ck.call, "PutCheckpoint", apb.PutCheckpointRequest(
            user_id=u, checkpoint=apb.Checkpoint(thread_id=t, checkpoint_id=cid(6),
                                                 metadata_json='{"a": %s}' % deep)),
            field="checkpoint.metadata_json")
        # nothing of the refused puts was written
        self.assertEqual([r[2] for r in self.ck.list_all(u, thread_id=t, checkpoint_ns="")],
                         [cid(5), cid(3), cid(1)])

    def test_write_limits_at_their_edge(self):
        u, t = uid("u"), uid("t")
        self.ck.put(u, t, cid(1))
        self.ck.put(u, t, cid(2))
        # one value: 4 MiB accepted, one more byte refused
        self.assertEqual(self.ck.writes(u, t, cid(1), [W("big", 0, value=b"v" * (4 * MiB))]), 1)
        self.assertInvalid(self.ck.writes, u, t, cid(1), [W("big", 1, value=b"v" * (4 * MiB + 1))],
                           field="writes[0].value")
        # 1000 writes accepted, 1001 refused
        self.assertEqual(self.ck.writes(u, t, cid(1), [W("many", i) for i in range(1000)]), 1000)
        self.assertInvalid(self.ck.writes, u, t, cid(1), [W("more", i) for i in range(1001)],
                           field="writes")
        # 16 MiB in all accepted, past it refused (values plus ids and
        # channels); on a checkpoint of its own, within its 20 MiB as stored
        quarter = 4 * MiB - len("q0") - len("ch") - len("json")
        self.assertEqual(self.ck.writes(u, t, cid(2), [W("q%d" % i, 0, value=b"v" * quarter)
                                                       for i in range(4)]), 4)
        e = self.assertInvalid(self.ck.writes, u, t, cid(1),
                               [W("r%d" % i, 0, value=b"v" * quarter) for i in range(3)] +
                               [W("r3", 0, value=b"v" * (quarter + 1))], field="writes")
        self.assertIn("16777216", e.details())
        self.assertInvalid(self.ck.writes, u, t, cid(1), [W("", 0)], field="writes[0].task_id")
        self.assertInvalid(self.ck.writes, u, t, cid(1), [W("ok", 0), W("t" * 129, 0)],
                           field="writes[1].task_id")
        self.assertInvalid(self.ck.writes, u, t, cid(1), [W("ok", 0, channel="")],
                           field="writes[0].channel")
        # nothing of the refused calls was written
        tasks = {w.task_id for w in self.ck.get(u, t, cid=cid(1)).pending_writes}
        self.assertEqual(tasks, {"big", "many"})
        tasks = {w.task_id for w in self.ck.get(u, t, cid=cid(2)).pending_writes}
        self.assertEqual(tasks, {"q0", "q1", "q2", "q3"})

    def test_a_checkpoint_holds_at_most_10000_writes(self):
        u, t = uid("u"), uid("t")
        self.ck.put(u, t, cid(1))
        for k in range(9):
            self.assertEqual(self.ck.writes(u, t, cid(1), [W("k%d" % k, i) for i in range(1000)]), 1000)
        self.assertEqual(self.ck.writes(u, t, cid(1), [W("last", i) for i in range(999)]), 999)
        self.assertEqual(self.ck.writes(u, t, cid(1), [W("edge", 0)]), 1)
        e = self.assertStatus(grpc.StatusCode.RESOURCE_EXHAUSTED, self.ck.writes, u, t, cid(1),
                              [W("over", 0)], field="writes")
        self.assertIn("10000", e.details())
        # at the cap a retry writes nothing new, so it is not refused; one
        # new write among retried ones is
        self.assertEqual(self.ck.writes(u, t, cid(1), [W("edge", 0)]), 0)
        self.assertEqual(self.ck.writes(u, t, cid(1), [W("last", i) for i in range(999)]), 0)
        self.assertStatus(grpc.StatusCode.RESOURCE_EXHAUSTED, self.ck.writes, u, t, cid(1),
                          [W("edge", 0), W("over", 0)], field="writes")
        self.assertEqual(len(self.ck.get(u, t).pending_writes), 10000)
        # another checkpoint of the thread has room of its own
        self.assertEqual(self.ck.writes(u, t, cid(2), [W("other", 0)]), 1)

    def test_a_checkpoint_holds_at_most_20_mib_of_writes(self):
        """Reads return a checkpoint with all its writes: their bytes as
        stored are bounded, so a reply stays under what clients receive."""
        u, t = uid("u"), uid("t")
        cap = 20 * MiB
        self.ck.put(u, t, cid(1), data=b"c" * (4 * MiB))
        for k in range(4):
            self.assertEqual(self.ck.writes(u, t, cid(1), [W("w%d" % k, 0, value=b"v" * (4 * MiB))]), 1)
        # past the cap: refused, naming the bytes it would hold and the cap
        e = self.assertStatus(grpc.StatusCode.RESOURCE_EXHAUSTED, self.ck.writes, u, t, cid(1),
                              [W("w4", 0, value=b"v" * (4 * MiB))], field="writes")
        self.assertIn(str(cap), e.details())
        over = int(re.search(r"would hold (\d+) bytes", e.details()).group(1)) - cap
        self.assertGreater(over, 0)
        # exactly at the cap: taken; a retry of it too; one byte more is not
        edge = W("w4", 0, value=b"v" * (4 * MiB - over))
        self.assertEqual(self.ck.writes(u, t, cid(1), [edge]), 1)
        self.assertEqual(self.ck.writes(u, t, cid(1), [edge]), 0)
        self.assertStatus(grpc.StatusCode.RESOURCE_EXHAUSTED, self.ck.writes, u, t, cid(1),
                          [W("w5", 0, value=b"")], field="writes")
        c = self.ck.get(u, t)
        self.assertEqual(len(c.pending_writes), 5)
        self.assertLess(c.ByteSize(), 64 * MiB)
        # another checkpoint has room of its own
        self.assertEqual(self.ck.writes(u, t, cid(2), [W("w0", 0, value=b"v" * (4 * MiB))]), 1)

    def test_json_fields_are_strict_json_objects(self):
        u, t = uid("u"), uid("t")
        for bad, why in [('{"a":NaN}', "not valid JSON"), ('{"a":1 /* x */}', "not valid JSON"),
                         ("{'a':1}", "not valid JSON"), ('{"a":1e999}', "not finite"),
                         ('{"a\\u0000b":1}', "\\u0000"), ("1", "must be a JSON object"),
                         ("null", "must be a JSON object")]:
            e = self.assertInvalid(self.ck.call, "PutCheckpoint", apb.PutCheckpointRequest(
                user_id=u, checkpoint=apb.Checkpoint(thread_id=t, checkpoint_id=cid(1),
                                                     metadata_json=bad)),
                field="checkpoint.metadata_json")
            self.assertIn(why, e.details(), bad)
            self.assertInvalid(self.ck.list, u, filter_json=bad, field="filter_json")
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.ck.get, u, t, field="thread_id")

    def test_delete_thread(self):
        u, t, keep = uid("u"), uid("t"), uid("keep")
        for n in range(1, 4):
            self.ck.put(u, t, cid(n), ns="" if n % 2 else "sub")
            self.ck.writes(u, t, cid(n), [W("task", 0), W("task", 1)], ns="" if n % 2 else "sub")
        self.ck.put(u, keep, cid(9))
        r = self.ck.delete_thread(u, t)
        self.assertEqual((r.checkpoints_deleted, r.writes_deleted), (3, 6))
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.ck.get, u, t, field="thread_id")
        self.assertEqual(self.ck.list_all(u), [(keep, "", cid(9))])
        self.assertEqual(self.ck.list_all(u, thread_id=t), [])
        r = self.ck.delete_thread(u, t)
        self.assertEqual((r.checkpoints_deleted, r.writes_deleted), (0, 0))
        # a new checkpoint under the old ids starts with no writes
        self.ck.put(u, t, cid(1))
        self.assertEqual(len(self.ck.get(u, t).pending_writes), 0)


def mdb_keys(data_dir, db):
    return [k for k, _ in mdb_dump(data_dir, db)[1]]


class CheckpointAtRestTest(E2ETestCase):
    """Stops the server to read its LMDB file."""

    DBS = ("checkpoints", "checkpoints_by_user", "checkpoint_writes")

    def setUp(self):
        if not shutil.which("mdb_dump"):
            self.fail("mdb_dump (lmdb-utils) not installed")
        # Small batches: DeleteThread and DeleteUser take several txns.
        self.srv = self.start_server("--erase-batch", "10")
        self.ck = Ckpt(self.srv.addr)
        self.addCleanup(self.ck.close)

    def count(self):
        return {db: len(mdb_keys(self.srv.data_dir, db)) for db in self.DBS}

    def test_delete_user_erases_every_key_and_values_are_sealed(self):
        u, other, t = uid("u"), uid("other"), uid("t")
        marker = "quokka-checkpoint-canary-5521"
        for n in range(12):
            self.ck.put(u, t, cid(n), ns="" if n % 3 else "sub",
                        data=("%s-state" % marker).encode(), metadata={"note": marker},
                        versions='{"%s": 1}' % marker)
            self.ck.writes(u, t, cid(n), [W("task", 0, value=("%s-w" % marker).encode()),
                                          W("task", -1, channel=marker)], ns="" if n % 3 else "sub")
        self.ck.put(other, t, cid(1))
        self.ck.writes(other, t, cid(1), [W("task", 0)])
        self.srv.stop()
        blob = pathlib.Path(os.path.join(self.srv.data_dir, "data.mdb")).read_bytes()
        self.assertIn(b"task", blob, "the scan sees what is stored in the clear")
        for needle in (marker + "-state", marker + "-w", '"note"'):
            self.assertNotIn(needle.encode(), blob)
        self.assertNotIn(('"%s": 1' % marker).encode(), blob)
        self.assertEqual(self.count(), {"checkpoints": 13, "checkpoints_by_user": 26,
                                        "checkpoint_writes": 25})
        self.srv.start()
        self.ck = Ckpt(self.srv.addr)
        self.addCleanup(self.ck.close)
        self.ck.delete_user(u)
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.ck.get, u, t, field="thread_id")
        self.assertEqual(self.ck.get(other, t).checkpoint_id, cid(1))
        self.srv.stop()
        # only the other user's keys are left
        self.assertEqual(self.count(), {"checkpoints": 1, "checkpoints_by_user": 2,
                                        "checkpoint_writes": 1})

    def test_delete_thread_in_bounded_steps_leaves_no_key(self):
        u, t, keep = uid("u"), uid("t"), uid("keep")
        for n in range(15):
            self.ck.put(u, t, cid(n), ns=str(n % 2))
            self.ck.writes(u, t, cid(n), [W("task", 0), W("task", 1)], ns=str(n % 2))
        self.ck.put(u, keep, cid(1))
        r = self.ck.delete_thread(u, t)
        self.assertEqual((r.checkpoints_deleted, r.writes_deleted), (15, 30))
        self.srv.stop()
        self.assertEqual(self.count(), {"checkpoints": 1, "checkpoints_by_user": 2,
                                        "checkpoint_writes": 0})


class CheckpointCeilingTest(E2ETestCase):
    """--max-checkpoint-bytes stops at 32 MiB: a checkpoint with its JSON
    and 20 MiB of writes must stay under the 64 MiB clients and replicas
    receive."""

    def test_max_checkpoint_bytes_ceiling_is_32_mib(self):
        tmp = tempfile.mkdtemp(prefix="engram-e2e-ckpt-")
        self.addCleanup(shutil.rmtree, tmp, True)
        p = subprocess.run([ENGRAMD, "--listen", "127.0.0.1:0", "--data-dir", tmp,
                            "--max-checkpoint-bytes", str(32 * MiB + 1)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, env=clean_env(), timeout=20)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--max-checkpoint-bytes", p.stdout.decode(errors="replace"))
        srv = self.start_server("--max-checkpoint-bytes", str(32 * MiB))
        ck = Ckpt(srv.addr)
        self.addCleanup(ck.close)
        u, t = uid("u"), uid("t")
        ck.put(u, t, cid(1), data=b"x" * (32 * MiB))
        self.assertEqual(len(ck.get(u, t).checkpoint), 32 * MiB)
        e = self.assertInvalid(ck.put, u, t, cid(2), data=b"x" * (32 * MiB + 1),
                               field="checkpoint.checkpoint")
        self.assertIn(str(32 * MiB), e.details())


class CheckpointReplicaTest(E2ETestCase):
    """A write on the primary read on a replica with engram-min-lsn."""

    def test_replica_reads_its_writes(self):
        tmp = tempfile.mkdtemp(prefix="engram-e2e-ckpt-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, tmp, True)
        keyring = make_keyring(os.path.join(tmp, "keyring"))
        tokens = [("acme", "agent", "agent-1"), ("acme", "replica", "repl-1")]
        primary = self.start_server(tokens=tokens, keyring=keyring, port=free_port())
        replica = self.start_server("--role", "replica", "--primary", primary.addr,
                                    "--replica-token", "repl-1", "--max-lsn-wait-ms", "5000",
                                    tokens=tokens, keyring=keyring, port=free_port())
        p, r = Ckpt(primary.addr, "agent-1"), Ckpt(replica.addr, "agent-1")
        self.addCleanup(p.close)
        self.addCleanup(r.close)
        u, t = uid("u"), uid("t")
        p.put(u, t, cid(1), data=b"state-1", metadata={"source": "loop"})
        _, call = p.stub.PutWrites.with_call(apb.PutWritesRequest(
            user_id=u, thread_id=t, checkpoint_id=cid(1), writes=[W("task", 0, value=b"w")]),
            timeout=RPC_TIMEOUT, metadata=p.md)
        lsn = dict(call.initial_metadata())["engram-lsn"]
        c = r.get(u, t, metadata=[("engram-min-lsn", lsn)])
        self.assertEqual((c.checkpoint, [w.value for w in c.pending_writes]), (b"state-1", [b"w"]))
        got = r.list(u, filter_json='{"source": "loop"}', metadata=[("engram-min-lsn", lsn)])
        self.assertEqual([x.checkpoint_id for x in got.checkpoints], [cid(1)])
