"""Crypto-shredding (docs/security.md, "The erasure guarantee"), with real
processes: DeleteUser and DeleteTenant destroy the data keys, so every
copy of the erased ciphertext made before the erasure reads as DATA_LOSS
with reason ERASED once it is served with the current key store, never
as plaintext; everyone else's data reads as before.

One archiving engramd (tenants acme, wipe and zeta) for the class. Users A
and B of acme, and tenants wipe and zeta, write sessions (metadata,
messages, a summary), memories, a checkpoint and a store item (the
tenant's: DeleteUser leaves it, DeleteTenant erases it).
Then, before the erasure: a backup (`engram backup create`), a copy of
its replica's data dir (stopped, at the primary's LSN: a replica's old
disk), and the LSN. Then
DeleteUser A and DeleteTenant wipe, and a backup of the key store after
them (`engram admin keys backup`). Each copy of the old data is started
with that key store restored:

  the pre-erasure backup, restored         A and wipe ERASED, B and zeta fine
  a point-in-time restore from the WAL     the same, restored to the LSN
    archive to before the erasure          before the erasure
  a replica's disk, copied before the       the same
    erasure
while a restore replaying the archive past the erasure has the records
gone, as the live node and its replica have; and no file of any of them, of the live data dir, of the archive or of the
backup holds anyone's plaintext. DeleteTenant's checks: admin only,
confirm must repeat the tenant, its counts.
"""
import json
import os
import shutil
import subprocess
import tempfile
import threading

import grpc
from google.protobuf import field_mask_pb2

from harness import (ENGRAM_CLI, KEEP, RPC_TIMEOUT, E2ETestCase, M, Server, clean_env,
                     free_port, make_keyring, pb, pbg, run_threads, scan_sanitizer, uid)
from test_rich_errors import rich
from test_wal_archive import checksum, status, wait_archived, wait_for
from engram.v1 import admin_pb2 as apb  # noqa: E402
from engram.v1 import admin_pb2_grpc as apbg  # noqa: E402
from engram.v1 import agent_state_pb2 as spb  # noqa: E402
from engram.v1 import agent_state_pb2_grpc as spbg  # noqa: E402
from engram.v1 import memory_pb2 as mp  # noqa: E402
from engram.v1 import memory_pb2_grpc as mpg  # noqa: E402
from engram.v1 import user_pb2 as up  # noqa: E402
from engram.v1 import user_pb2_grpc as upg  # noqa: E402

AGENT, ADMIN, REPL = "agent-token-shred", "admin-token-shred", "replica-token-shred"
WIPE_AGENT, ZETA_AGENT, ZETA_ADMIN = "wipe-token-shred", "zeta-token-shred", "zeta-admin-shred"
TOKENS = [("acme", "agent", AGENT), ("acme", "admin", ADMIN), ("acme", "replica", REPL),
          ("wipe", "agent", WIPE_AGENT),
          ("zeta", "agent", ZETA_AGENT), ("zeta", "admin", ZETA_ADMIN)]
DATA_LOSS = grpc.StatusCode.DATA_LOSS


def cli(*args, target=None, token=None):
    argv = [ENGRAM_CLI, "--json"]
    if target:
        argv += ["--target", target, "--token", token]
    p = subprocess.run(argv + [str(a) for a in args], capture_output=True, text=True,
                       timeout=120, env=clean_env())
    rep = scan_sanitizer(p.stderr)
    assert not rep, "sanitizer report from %s:\n%s" % (args, rep)
    return p


def files_under(d):
    for root, _, names in os.walk(d):
        for n in names:
            yield os.path.join(root, n)


class Owner:
    """What one user (of one tenant) wrote: ids and its plaintext canaries,
    every one of which appears in no file (it is sealed wherever it is)."""

    def __init__(self, tenant, token, user):
        self.tenant, self.token, self.user = tenant, token, user
        self.canary = "canary-%s-%s" % (user, uid("c"))

    def texts(self):
        return [self.canary + suffix for suffix in ("-meta", "-msg", "-sum", "-mem", "-ckpt",
                                                    "-item")]

    def write(self, addr):
        ch = grpc.insecure_channel(addr)
        md = (("authorization", "Bearer " + self.token),)
        sess = pbg.SessionServiceStub(ch)
        self.sid = sess.CreateSession(pb.CreateSessionRequest(session=pb.Session(
            user_id=self.user, metadata={"note": self.canary + "-meta"})),
            timeout=RPC_TIMEOUT, metadata=md).session_id
        sess.AppendMessages(pb.AppendMessagesRequest(session_id=self.sid, messages=[
            M(self.canary + "-msg")]), timeout=RPC_TIMEOUT, metadata=md)
        sess.UpdateSummary(pb.UpdateSummaryRequest(session_id=self.sid,
                                                   summary=self.canary + "-sum", through_seq=1),
                           timeout=RPC_TIMEOUT, metadata=md)
        self.mid = mpg.MemoryServiceStub(ch).CreateMemory(mp.CreateMemoryRequest(
            memory=mp.Memory(user_id=self.user, text=self.canary + "-mem",
                             type=mp.MEMORY_TYPE_PREFERENCE)),
            timeout=RPC_TIMEOUT, metadata=md).memory.memory_id
        spbg.CheckpointServiceStub(ch).PutCheckpoint(spb.PutCheckpointRequest(
            user_id=self.user, checkpoint=spb.Checkpoint(
                thread_id="t1", checkpoint_id="c1",
                checkpoint=(self.canary + "-ckpt").encode())),
            timeout=RPC_TIMEOUT, metadata=md)
        spbg.StoreServiceStub(ch).PutItem(spb.PutItemRequest(
            namespace=["prefs"], key=self.user,
            value_json=json.dumps({"v": self.canary + "-item"})),
            timeout=RPC_TIMEOUT, metadata=md)
        ch.close()

    def reads(self, addr):
        """Every read of what write() wrote: (name, zero-argument call)."""
        ch = grpc.insecure_channel(addr)
        md = (("authorization", "Bearer " + self.token),)
        sess = pbg.SessionServiceStub(ch)
        mem, ck, st = (mpg.MemoryServiceStub(ch), spbg.CheckpointServiceStub(ch),
                       spbg.StoreServiceStub(ch))
        kw = {"timeout": RPC_TIMEOUT, "metadata": md}
        return ch, [
            ("GetSession", lambda: sess.GetSession(pb.GetSessionRequest(session_id=self.sid),
                                                   **kw)),
            ("ListMessages", lambda: sess.ListMessages(
                pb.ListMessagesRequest(session_id=self.sid), **kw)),
            ("GetContext", lambda: sess.GetContext(pb.GetContextRequest(session_id=self.sid),
                                                   **kw)),
            ("GetMemory", lambda: mem.GetMemory(mp.GetMemoryRequest(memory_id=self.mid), **kw)),
            ("GetCheckpoint", lambda: ck.GetCheckpoint(spb.GetCheckpointRequest(
                user_id=self.user, thread_id="t1"), **kw)),
        ]

    def item(self, addr):
        ch = grpc.insecure_channel(addr)
        md = (("authorization", "Bearer " + self.token),)
        try:
            return spbg.StoreServiceStub(ch).GetItem(spb.GetItemRequest(
                namespace=["prefs"], key=self.user), timeout=RPC_TIMEOUT, metadata=md)
        finally:
            ch.close()


class ErasureShreddingTest(E2ETestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="engram-e2e-shred-")
        if not KEEP:
            cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        cls.arch = os.path.join(cls.tmp, "arch")
        cls.keyring = make_keyring(os.path.join(cls.tmp, "keyring"))
        cls.src = Server("--wal-archive-dir", cls.arch, "--wal-archive-segment-records", 2,
                         tokens=TOKENS, keyring=cls.keyring, port=free_port())
        cls.addClassCleanup(cls.src.close)
        cls.src.start()
        cls.replica = Server("--role", "replica", "--primary", cls.src.addr, "--replica-token",
                             REPL, "--replica-id", "r1", tokens=TOKENS, keyring=cls.keyring)
        cls.addClassCleanup(cls.replica.close)  # before the primary's (cleanups run last first)
        cls.replica.start()
        cls.a = Owner("acme", AGENT, uid("alice"))
        cls.b = Owner("acme", AGENT, uid("bob"))
        cls.w = Owner("wipe", WIPE_AGENT, uid("walt"))
        cls.z = Owner("zeta", ZETA_AGENT, uid("zoe"))
        for o in (cls.a, cls.b, cls.w, cls.z):
            o.write(cls.src.addr)
        # The copies made before the erasure.
        cls.backup = os.path.join(cls.tmp, "before.egb")
        p = cli("backup", "create", "--out", cls.backup, target=cls.src.addr, token=ADMIN)
        assert p.returncode == 0, p.stderr
        cls.lsn_before, _ = checksum(cls.src, ADMIN)
        wait_archived(cls.src, ADMIN)
        cls.wait_replica(cls.lsn_before)
        cls.replica.stop()
        cls.old_disk = os.path.join(cls.tmp, "old-disk")
        shutil.copytree(cls.replica.data_dir, cls.old_disk,
                        ignore=shutil.ignore_patterns("keystore"))
        cls.replica.start()
        # The erasure.
        ch = grpc.insecure_channel(cls.src.addr)
        cls.du = upg.UserServiceStub(ch).DeleteUser(
            up.DeleteUserRequest(user_id=cls.a.user), timeout=RPC_TIMEOUT,
            metadata=(("authorization", "Bearer " + AGENT),))
        cls.dt = apbg.AdminServiceStub(ch).DeleteTenant(
            apb.DeleteTenantRequest(tenant="wipe", confirm="wipe"), timeout=RPC_TIMEOUT,
            metadata=(("authorization", "Bearer " + ADMIN),))
        ch.close()
        cls.lsn_after = wait_archived(cls.src, ADMIN).last_lsn
        cls.wait_replica(cls.lsn_after)
        # The key store as it is after the erasure: its own backup.
        cls.keys_after = os.path.join(cls.tmp, "keys-after.mdb")
        p = cli("admin", "keys", "backup", "--out", cls.keys_after, target=cls.src.addr,
                token=ADMIN)
        assert p.returncode == 0, p.stderr

    # -- helpers ----------------------------------------------------------------------

    @classmethod
    def wait_replica(cls, lsn):
        wait_for("the replica at lsn %d" % lsn,
                 lambda: status(cls.replica, ADMIN).last_lsn >= lsn)

    def serve_with_current_keys(self, data_dir):
        """engramd on data_dir (old data) with the key store as it is after
        the erasure (its backup restored as docs/operations.md says) in
        place of whatever it had."""
        ks = os.path.join(data_dir, "keystore")
        shutil.rmtree(ks, ignore_errors=True)
        os.makedirs(ks, mode=0o700)
        shutil.copyfile(self.keys_after, os.path.join(ks, "data.mdb"))
        os.chmod(os.path.join(ks, "data.mdb"), 0o600)
        return self.start_server(tokens=TOKENS, keyring=self.keyring, data_dir=data_dir,
                                 create_data_dir=False)

    def assertErased(self, owner, addr):
        ch, reads = owner.reads(addr)
        try:
            for name, call in reads:
                with self.subTest(read=name, user=owner.user):
                    e = self.assertStatus(DATA_LOSS, call)
                    self.assertEqual(rich(e)["info"].reason, "ERASED", e.details())
                    self.assertIn("was erased", e.details())
                    self.assertNotIn(owner.canary, e.details())
        finally:
            ch.close()
        if owner.tenant == "wipe":
            e = self.assertStatus(DATA_LOSS, owner.item, addr)
            self.assertEqual(rich(e)["info"].reason, "ERASED", e.details())
        else:
            # Store items are the tenant's (its own data key), not a user's:
            # DeleteUser leaves them, DeleteTenant erases them.
            self.assertEqual(json.loads(owner.item(addr).value_json),
                             {"v": owner.canary + "-item"})

    def assertReadable(self, owner, addr):
        ch, reads = owner.reads(addr)
        try:
            got = {name: call() for name, call in reads}
        finally:
            ch.close()
        self.assertEqual(dict(got["GetSession"].metadata), {"note": owner.canary + "-meta"})
        self.assertEqual(got["GetSession"].summary, owner.canary + "-sum")
        self.assertEqual([m.content for m in got["ListMessages"].messages],
                         [owner.canary + "-msg"])
        self.assertEqual(got["GetMemory"].text, owner.canary + "-mem")
        self.assertEqual(got["GetCheckpoint"].checkpoint, (owner.canary + "-ckpt").encode())
        self.assertEqual(json.loads(owner.item(addr).value_json), {"v": owner.canary + "-item"})

    def assertGone(self, owner, addr):
        ch, reads = owner.reads(addr)
        try:
            for name, call in reads:
                with self.subTest(read=name, user=owner.user):
                    self.assertStatus(grpc.StatusCode.NOT_FOUND, call)
        finally:
            ch.close()

    def assertNoPlaintext(self, *paths):
        """No file under paths holds anyone's plaintext: erased or not,
        every copy holds ciphertext only (what makes destroying keys
        enough)."""
        needles = [t.encode() for o in (self.a, self.b, self.w, self.z) for t in o.texts()]
        for path in paths:
            for f in ([path] if os.path.isfile(path) else files_under(path)):
                with open(f, "rb") as fh:
                    blob = fh.read()
                for n in needles:
                    self.assertNotIn(n, blob, "%s holds erased plaintext" % f)

    def check_copy(self, data_dir):
        srv = self.serve_with_current_keys(data_dir)
        self.assertErased(self.a, srv.addr)
        self.assertErased(self.w, srv.addr)
        self.assertReadable(self.b, srv.addr)
        self.assertReadable(self.z, srv.addr)
        srv.stop()
        self.assertNoPlaintext(data_dir)

    # -- the copies ---------------------------------------------------------------------

    def test_restored_pre_erasure_backup_reads_erased(self):
        d = os.path.join(tempfile.mkdtemp(dir=self.tmp), "data")
        p = cli("backup", "restore", self.backup, "--data-dir", d)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.check_copy(d)
        self.assertNoPlaintext(self.backup)

    def test_point_in_time_restore_to_before_the_erasure_reads_erased(self):
        d = os.path.join(tempfile.mkdtemp(dir=self.tmp), "data")
        p = cli("backup", "restore", self.backup, "--data-dir", d, "--wal-archive", self.arch,
                "--to-lsn", self.lsn_before)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.check_copy(d)
        self.assertNoPlaintext(self.arch)

    def test_archive_replayed_past_the_erasure_has_the_records_gone(self):
        # The erasures are in the log as erasure records: a restore that
        # replays them deletes what DeleteUser and DeleteTenant deleted.
        d = os.path.join(tempfile.mkdtemp(dir=self.tmp), "data")
        p = cli("backup", "restore", self.backup, "--data-dir", d, "--wal-archive", self.arch)
        self.assertEqual(p.returncode, 0, p.stderr)
        srv = self.serve_with_current_keys(d)
        for owner in (self.a, self.w):
            self.assertGone(owner, srv.addr)
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.w.item, srv.addr)
        self.assertReadable(self.b, srv.addr)
        self.assertReadable(self.z, srv.addr)

    def test_replica_disk_copied_before_the_erasure_reads_erased(self):
        d = os.path.join(tempfile.mkdtemp(dir=self.tmp), "data")
        shutil.copytree(self.old_disk, d)
        self.check_copy(d)

    # -- the live node ------------------------------------------------------------------

    def test_live_node_has_the_records_gone_and_no_plaintext(self):
        self.assertEqual((self.du.deleted_sessions, self.du.deleted_messages,
                          self.du.deleted_memories), (1, 1, 1))
        # the user's and the tenant's own key; every key of the tenant's rows
        self.assertEqual(self.dt.data_keys_destroyed, 2)
        self.assertGreater(self.dt.records_deleted, 10)
        self.assertReadable(self.b, self.src.addr)
        self.assertReadable(self.z, self.src.addr)
        self.assertGone(self.a, self.src.addr)
        self.assertGone(self.w, self.src.addr)
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.w.item, self.src.addr)
        self.assertNoPlaintext(self.src.data_dir)

    def key_status(self, srv):
        ch = grpc.insecure_channel(srv.addr)
        try:
            return apbg.AdminServiceStub(ch).GetKeyStatus(
                apb.GetKeyStatusRequest(), timeout=RPC_TIMEOUT,
                metadata=(("authorization", "Bearer " + ADMIN),))
        finally:
            ch.close()

    def test_replica_did_the_same(self):
        # The erasure records and the key store's tombstones reached it:
        # A's key, wipe's user's and wipe's own.
        st = self.key_status(self.src)
        self.assertGreaterEqual(st.erased_users, 3)
        wait_for("the replica's key store to hold the tombstones",
                 lambda: (self.key_status(self.replica).erased_users,
                          self.key_status(self.replica).data_keys) ==
                 (st.erased_users, st.data_keys))
        self.assertGone(self.a, self.replica.addr)
        self.assertGone(self.w, self.replica.addr)
        self.assertStatus(grpc.StatusCode.NOT_FOUND, self.w.item, self.replica.addr)
        self.assertReadable(self.b, self.replica.addr)
        self.assertReadable(self.z, self.replica.addr)
        self.assertNoPlaintext(self.replica.data_dir)

    # -- DeleteTenant's checks ----------------------------------------------------------

    def delete_tenant(self, token, tenant, confirm):
        ch = grpc.insecure_channel(self.src.addr)
        self.addCleanup(ch.close)
        return apbg.AdminServiceStub(ch).DeleteTenant(
            apb.DeleteTenantRequest(tenant=tenant, confirm=confirm), timeout=RPC_TIMEOUT,
            metadata=(("authorization", "Bearer " + token),))

    def test_delete_tenant_checks(self):
        e = self.assertStatus(grpc.StatusCode.PERMISSION_DENIED, self.delete_tenant, ZETA_AGENT,
                              "zeta", "zeta")
        e = self.assertStatus(grpc.StatusCode.INVALID_ARGUMENT, self.delete_tenant, ZETA_ADMIN,
                              "zeta", "zet")
        self.assertIn("confirm", e.details())
        e = self.assertStatus(grpc.StatusCode.INVALID_ARGUMENT, self.delete_tenant, ZETA_ADMIN,
                              "ze ta", "ze ta")
        self.assertIn("tenant", e.details())
        # nothing was written: zeta's data is all there
        self.assertReadable(self.z, self.src.addr)
        # the CLI: confirm missing, then a tenant that has nothing left
        p = cli("admin", "tenant", "delete", "zeta", target=self.src.addr, token=ZETA_ADMIN)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("confirm", p.stderr)
        p = cli("admin", "tenant", "delete", "wipe", "--confirm", "wipe",
                target=self.src.addr, token=ZETA_ADMIN)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["recordsDeleted"], "0")
        self.assertReadable(self.z, self.src.addr)


class ErasureRacesWritesTest(E2ETestCase):
    """DeleteUser destroys the user's data keys in its prepare, on a
    worker, while writes of that user are in flight: one that sealed its
    fields under the key just before may reach the writer after the
    erasure's last step. Its apply checks the key is still live
    (ABORTED otherwise: retry), so no record under a destroyed key is left
    behind, which would make the user's listings fail as a whole with
    DATA_LOSS. Real threads against a real engramd, a bounded number of
    calls each (CreateMemory, UpdateMemory, and PutCheckpoint, whose large
    payload keeps its prepare sealing for a while after it took the key);
    a few users in turn, each erased in mid-stream. Without the check the
    writes that lose the race store under the destroyed key (an update's
    reply then fails DATA_LOSS): the test fails on every run of an engramd
    built without it."""

    USERS = 8     # erasures raced, one user each
    WRITERS = 6   # threads writing the user's records
    CALLS = 150   # at most, per thread and user
    CKPT = 4 << 20  # bytes of a checkpoint: its seal takes a while
    CKPT_WRITERS = 2  # of WRITERS, those putting checkpoints

    def test_delete_user_racing_writes_leaves_nothing_unreadable(self):
        token = "agent-token-race"
        srv = self.start_server("--max-checkpoint-bytes", self.CKPT,
                                "--max-reply-bytes", 2 * self.CKPT,
                                tokens=[("acme", "agent", token)])
        ch = grpc.insecure_channel(srv.addr, options=[
            ("grpc.max_receive_message_length", 2 * self.CKPT),
            ("grpc.max_send_message_length", 2 * self.CKPT)])
        self.addCleanup(ch.close)
        md = (("authorization", "Bearer " + token),)
        kw = {"timeout": RPC_TIMEOUT, "metadata": md}
        mem, ck = mpg.MemoryServiceStub(ch), spbg.CheckpointServiceStub(ch)
        off = mp.DEDUP_POLICY_OFF
        blob = os.urandom(self.CKPT)
        for n in range(self.USERS):
            user = uid("racer")
            seeds = [mem.CreateMemory(mp.CreateMemoryRequest(
                memory=mp.Memory(user_id=user, text="seed %d of %s" % (i, user),
                                 type=mp.MEMORY_TYPE_FACT), dedup_policy=off),
                **kw).memory.memory_id for i in range(self.WRITERS)]
            lock = threading.Condition()
            calls_done = [0]
            delete_sent, delete_done = threading.Event(), threading.Event()
            # ids of writes done before DeleteUser was sent (gone after it) /
            # done since (may come after it, under a key made after it)
            before, during = set(), set()
            codes = []

            def writer(w):
                for i in range(self.CALLS):
                    if delete_done.is_set():
                        return
                    text = "w%d-%d-%d %s" % (w, i, n, uid("t"))
                    try:
                        if w < self.CKPT_WRITERS:
                            mid = "ck-%d-%d" % (w, i)
                            ck.PutCheckpoint(spb.PutCheckpointRequest(
                                user_id=user, checkpoint=spb.Checkpoint(
                                    thread_id="t", checkpoint_id=mid, checkpoint=blob)), **kw)
                        elif i % 2 == 0:
                            mid = mem.CreateMemory(mp.CreateMemoryRequest(
                                memory=mp.Memory(user_id=user, text=text,
                                                 type=mp.MEMORY_TYPE_FACT),
                                dedup_policy=off), **kw).memory.memory_id
                        else:
                            mid = None
                            mem.UpdateMemory(mp.UpdateMemoryRequest(
                                memory=mp.Memory(memory_id=seeds[w], text=text),
                                update_mask=field_mask_pb2.FieldMask(paths=["text"]),
                                dedup_policy=off), **kw)
                        with lock:
                            if mid:
                                (during if delete_sent.is_set() else before).add(mid)
                    except grpc.RpcError as e:
                        with lock:
                            codes.append((e.code(), e.details()))
                    with lock:
                        calls_done[0] += 1
                        lock.notify_all()

            def eraser():
                with lock:
                    ok = lock.wait_for(lambda: calls_done[0] >= 2 * self.WRITERS, RPC_TIMEOUT)
                assert ok, "the writers made no call"
                delete_sent.set()
                upg.UserServiceStub(ch).DeleteUser(up.DeleteUserRequest(user_id=user), **kw)
                delete_done.set()

            run_threads([lambda w=w: writer(w) for w in range(self.WRITERS)] + [eraser], 600)
            # Every record of the user opens: a write that sealed under the
            # destroyed key left nothing (else the listing is DATA_LOSS).
            states = [mp.MEMORY_STATE_ACTIVE, mp.MEMORY_STATE_DUPLICATE, mp.MEMORY_STATE_DELETED,
                      mp.MEMORY_STATE_SUPERSEDED]
            mems = mem.ListMemories(mp.ListMemoriesRequest(
                user_id=user, page_size=1000, filter=mp.MemoryFilter(states=states)),
                **kw).memories
            cks, page = [], ""
            while True:  # a page holds what fits --max-reply-bytes: few of these
                got = ck.ListCheckpoints(spb.ListCheckpointsRequest(
                    user_id=user, page_size=100, page_token=page), **kw)
                cks += got.checkpoints
                page = got.next_page_token
                if not page:
                    break
            ids = {m.memory_id for m in mems} | {c.checkpoint_id for c in cks}
            # What existed before the erasure is gone; what is left was
            # written while it ran, sealed under a new key made after it (a
            # write that came after DeleteUser), and reads back.
            self.assertEqual(ids & (set(seeds) | before), set(), "user %s" % user)
            self.assertLessEqual(ids, during, "user %s" % user)
            self.assertTrue(all(m.text.startswith("w") for m in mems))
            self.assertTrue(all(c.checkpoint == blob for c in cks))
            # The writes that lost the race answered ABORTED (retry: nothing
            # stored) or NOT_FOUND (the memory was erased), never DATA_LOSS
            # (a write that stored, or tried to, under the destroyed key).
            for code, details in codes:
                with self.subTest(code=code, details=details):
                    self.assertIn(code, (grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND))
                    if code == grpc.StatusCode.ABORTED:
                        self.assertIn("destroyed meanwhile", details)
