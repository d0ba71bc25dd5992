"""WAL archive (--wal-archive-dir) and point-in-time restore (engram backup
restore --wal-archive ARCH --to-lsn N | --to-time T), with real processes.

  ArchiveClusterTest  a primary and a replica both archiving: every LSN once,
                      in order, the same bytes on both; a promotion starts a
                      segment named with the new epoch
  ArchiveCrashTest    kill -9 mid-load, a torn record at the end of the open
                      segment: the restart cuts it, no gap, no duplicate
  ArchiveRetentionTest  with --wal-retain-s 1 the log is not trimmed past the
                      archiver while the archive dir is unusable; it catches
                      up when the dir is back
  ArchiveDirTest      a second node on a running node's archive dir refuses to
                      start; a restored node refuses its old archive dir and
                      leaves it as it was
  ArchiveFaultTest    (engramd-fault) a failed fsync of the open segment: cut
                      back to the last good fsync, the record archived again;
                      an archive disk stuck at shutdown: engramd still stops,
                      and the next start archives the rest
  PitrTest            a base backup plus the archive: to an LSN between two
                      writes, to a time, past a DeleteUser; Checksum equal to
                      the source's at that LSN; a gap, a corrupt segment and a
                      target past the end refused with exit 1
"""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
import signal
import threading
import time
import unittest

import grpc

from harness import (ENGRAM_CLI, ENGRAMD, KEEP, RPC_TIMEOUT, E2ETestCase, M, Server, clean_env,
                     restore_key_store, scan_sanitizer, uid, wait_past)
from test_replication import Cluster  # noqa: E402
from engram.v1 import admin_pb2 as apb  # noqa: E402
from engram.v1 import admin_pb2_grpc as apbg  # noqa: E402
from engram.v1 import user_pb2 as up  # noqa: E402
from engram.v1 import user_pb2_grpc as upg  # noqa: E402

AGENT, ADMIN, REPL = "agent-token-1", "admin-token-1", "replica-token-1"
TOKENS = [("acme", "agent", AGENT), ("acme", "admin", ADMIN), ("acme", "replica", REPL)]
WAIT = 30.0  # bound on catching up (ASan is slow)
ENGRAMD_FAULT = os.environ.get("ENGRAMD_FAULT") or os.path.join(os.path.dirname(ENGRAMD),
                                                                 "engramd-fault")


# ---- the segment format (backup/walarchive.h), read independently ------------

HEADER, FRAME_HEAD, DIGEST = 64, 12, 32


def read_segment(path):
    """[(lsn, record bytes)] of a segment, checking every digest; a .partial
    is read up to its last whole record."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"EGWALSEG", path
    assert hashlib.sha256(data[:32]).digest() == data[32:64], path
    epoch, first = struct.unpack(">QQ", data[16:32])
    out, off = [], HEADER
    while off + FRAME_HEAD <= len(data):
        n, lsn = struct.unpack(">IQ", data[off:off + FRAME_HEAD])
        if n == 0:
            assert hashlib.sha256(data[off:off + FRAME_HEAD]).digest() == \
                data[off + FRAME_HEAD:off + FRAME_HEAD + DIGEST], path
            assert lsn == (out[-1][0] if out else None), path
            return epoch, first, out, True
        end = off + FRAME_HEAD + n + DIGEST
        if end > len(data):
            break
        rec = data[off + FRAME_HEAD:off + FRAME_HEAD + n]
        if hashlib.sha256(data[off:off + FRAME_HEAD + n]).digest() != data[end - DIGEST:end]:
            break
        assert lsn == first + len(out), (path, lsn)
        out.append((lsn, rec))
        off = end
    return epoch, first, out, False


def wal_lsn(rec):
    """Field 1 (lsn) of an encoded WalRecord: its first varint after the tag."""
    assert rec[0] == 0x08
    v, shift = 0, 0
    for b in rec[1:]:
        v |= (b & 0x7f) << shift
        shift += 7
        if not b & 0x80:
            return v
    raise AssertionError("bad varint")


def archive_records(d):
    """Every record of the archive in d, in name order: [(lsn, epoch, bytes)]."""
    recs = []
    for name in sorted(os.listdir(d)):
        if ".seg" not in name:
            continue
        epoch, first, out, closed = read_segment(os.path.join(d, name))
        assert closed or name.endswith(".partial"), name
        recs += [(lsn, epoch, rec) for lsn, rec in out]
    return recs


# ---- nodes ------------------------------------------------------------------------

def admin(srv, token=ADMIN):
    ch = grpc.insecure_channel(srv.addr)
    stub = apbg.AdminServiceStub(ch)
    md = (("authorization", "Bearer " + token),) if token else ()
    return ch, stub, md


def status(srv, token=ADMIN):
    ch, stub, md = admin(srv, token)
    try:
        return stub.GetStatus(apb.GetStatusRequest(), timeout=RPC_TIMEOUT, metadata=md)
    finally:
        ch.close()


def checksum(srv, token=ADMIN):
    ch, stub, md = admin(srv, token)
    try:
        r = stub.Checksum(apb.ChecksumRequest(), timeout=RPC_TIMEOUT, metadata=md)
        return r.lsn, r.sha256
    finally:
        ch.close()


def wait_for(what, fn, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


def wait_archived(srv, token=ADMIN):
    """Waits until the archiver wrote everything the node committed."""
    def done():
        st = status(srv, token)
        return st.archived_lsn == st.last_lsn and st
    return wait_for("the archive to reach the last lsn", done)


def cli(*args, token=None, target=None, json_out=False):
    argv = [ENGRAM_CLI] + (["--json"] if json_out else [])
    if target:
        argv += ["--target", target]
    if token:
        argv += ["--token", token]
    p = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=120,
                       env=clean_env())
    rep = scan_sanitizer(p.stderr)
    assert not rep, "sanitizer report from %s:\n%s" % (args, rep)
    return p.returncode, p.stdout, p.stderr


class ArchiveCase(E2ETestCase):
    def tmpdir(self):
        d = tempfile.mkdtemp(prefix="engram-e2e-arch-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, d, True)
        return d


def archiving_pair(case, primary_args, replica_args):
    """A primary and a replica of it (test_replication's Cluster: one
    keyring, the tokens above), started; closed at the test's end."""
    cluster = Cluster()
    case.addCleanup(cluster.close)
    primary = cluster.primary(*primary_args).start()
    return cluster, primary, cluster.replica("r", primary.addr, *replica_args).start()


def promote(srv):
    """AdminService.Promote on srv: its PromoteResponse."""
    ch, stub, md = admin(srv)
    try:
        return stub.Promote(apb.PromoteRequest(), timeout=RPC_TIMEOUT, metadata=md)
    finally:
        ch.close()


class ArchiveSourceCase(ArchiveCase):
    """One archiving engramd for the whole class (cls.src, archive cls.arch,
    SEGMENT_RECORDS records a segment, files under cls.tmp); build() writes
    what the tests read."""
    SEGMENT_RECORDS = 2
    SERVER_ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="engram-e2e-archsrc-")
        cls.arch = os.path.join(cls.tmp, "arch")
        cls.src = Server("--wal-archive-dir", cls.arch, "--wal-archive-segment-records",
                         cls.SEGMENT_RECORDS, *cls.SERVER_ARGS)
        if not KEEP:
            cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        cls.addClassCleanup(cls.src.close)  # first (cleanups run last first)
        cls.src.start()
        cls.build()


# ---- primary + replica ------------------------------------------------------------

class ArchiveClusterTest(ArchiveCase):
    def test_primary_and_replica_archive_the_same_log_and_promotion_starts_an_epoch(self):
        tmp = self.tmpdir()
        a1, a2 = os.path.join(tmp, "arch-primary"), os.path.join(tmp, "arch-replica")
        _, primary, replica = archiving_pair(
            self, ("--wal-archive-dir", a1, "--wal-archive-segment-records", 7),
            ("--wal-archive-dir", a2, "--wal-archive-segment-records", 5))
        c = primary.client(AGENT)
        sid = c.create(uid("u")).session_id
        for i in range(30):
            c.append(sid, M("m%d" % i))
        last = status(primary).last_lsn
        wait_for("the replica", lambda: status(replica).last_lsn == last)
        self.assertEqual(wait_archived(primary).archived_lsn, last)
        self.assertEqual(wait_archived(replica).archived_lsn, last)
        self.assertEqual(os.stat(a1).st_mode & 0o777, 0o700)
        r1, r2 = archive_records(a1), archive_records(a2)
        # Every LSN once, in order, the record's own LSN inside; the same
        # bytes on both nodes (a replica stores the primary's records).
        self.assertEqual([l for l, _, _ in r1], list(range(1, last + 1)))
        self.assertEqual([wal_lsn(r) for _, _, r in r1], list(range(1, last + 1)))
        self.assertEqual(r1, r2)
        for name in os.listdir(a1):
            self.assertEqual(os.stat(os.path.join(a1, name)).st_mode & 0o777, 0o600)

        # Promotion: the old primary stops, the replica takes epoch 2; its
        # archive goes on in a segment named with the new epoch, from the
        # promotion's own record.
        primary.stop()
        promoted = promote(replica)
        self.assertEqual(promoted.epoch, 2)
        replica.client(AGENT).append(sid, M("after promotion"))
        st = wait_archived(replica)
        name = "%020d-%020d.seg" % (promoted.lsn, 2)
        names = sorted(os.listdir(a2))
        self.assertTrue(name in names or name + ".partial" in names, names)
        r2 = archive_records(a2)
        self.assertEqual([l for l, _, _ in r2], list(range(1, st.last_lsn + 1)))
        self.assertEqual([e for l, e, _ in r2 if l >= promoted.lsn], [2] * (st.last_lsn - promoted.lsn + 1))


# ---- kill -9 -------------------------------------------------------------------------

class ArchiveCrashTest(ArchiveCase):
    def test_kill9_mid_load_then_torn_tail_is_cut_without_gap_or_duplicate(self):
        tmp = self.tmpdir()
        arch = os.path.join(tmp, "arch")
        srv = self.start_server("--wal-archive-dir", arch, "--wal-archive-segment-records", 40)
        c = srv.client()
        sid = c.create(uid("u")).session_id
        stop = threading.Event()
        errors = []

        def load():
            # Bounded: at most 2000 writes, until the kill.
            for i in range(2000):
                if stop.is_set():
                    return
                try:
                    c.append(sid, M("load %d" % i))
                except grpc.RpcError:
                    return  # the kill
                except ValueError as e:
                    # kill9 closes the test's channels too: a call begun
                    # after that is refused on the client's side.
                    if not killing.is_set():
                        errors.append(e)
                    return
                except Exception as e:  # pragma: no cover
                    errors.append(e)
                    return

        killing = threading.Event()
        t = threading.Thread(target=load)
        t.start()
        wait_for("some archived records", lambda: status(srv, None).archived_lsn >= 100)
        killing.set()
        srv.kill9()
        stop.set()
        t.join(timeout=WAIT)
        self.assertEqual(errors, [])
        # Whatever the crash left (a torn record, or a segment cut before
        # its header), the restart archives on with no gap and no duplicate.
        srv.start()
        c = srv.client()
        c.append(sid, M("after the crash"))
        st = wait_archived(srv, None)
        recs = archive_records(arch)
        self.assertEqual([l for l, _, _ in recs], list(range(1, st.last_lsn + 1)))
        self.assertEqual(st.archive_problem, "")
        # A record cut in half for certain: with everything archived, kill
        # -9 again and end the open segment with a frame head promising 1000
        # bytes, then 10 of them; the restart cuts exactly those 22 bytes.
        srv.kill9()
        partial = [n for n in os.listdir(arch) if n.endswith(".partial")]
        self.assertEqual(len(partial), 1, os.listdir(arch))
        with open(os.path.join(arch, partial[0]), "ab") as f:
            f.write(struct.pack(">IQ", 1000, 999999) + b"x" * 10)
        srv.start()
        c = srv.client()
        c.append(sid, M("after the second crash"))
        st = wait_archived(srv, None)
        self.assertIn("cut 22 bytes of a torn record", srv.log_text())
        recs = archive_records(arch)
        self.assertEqual([l for l, _, _ in recs], list(range(1, st.last_lsn + 1)))
        self.assertEqual(st.archive_problem, "")


# ---- retention held for the archiver -----------------------------------------------

class ArchiveRetentionTest(ArchiveCase):
    def test_log_is_not_trimmed_past_the_archiver(self):
        tmp = self.tmpdir()
        arch = os.path.join(tmp, "arch")
        # Age retention of 1 s: without the archiver's hold every record but
        # the newest goes at the first write a second later.
        srv = self.start_server("--wal-archive-dir", arch, "--wal-archive-segment-records", 3,
                                "--wal-retain-s", 1)
        c = srv.client()
        sid = c.create(uid("u")).session_id
        for i in range(4):
            c.append(sid, M("before %d" % i))
        held_from = wait_archived(srv, None).archived_lsn + 1
        # The dir goes away (a file in its place: chmod does not stop root):
        # the open segment's close fails, and so does every retry.
        away = arch + ".away"
        os.rename(arch, away)
        with open(arch, "w") as f:
            f.write("not a dir")
        for i in range(6):
            c.append(sid, M("while broken %d" % i))
        st = wait_for("the archiver to report its problem",
                      lambda: (s := status(srv, None)).archive_problem and s)
        self.assertIn("retrying", st.archive_problem)
        stuck = st.archived_lsn
        # Records older than --wal-retain-s, and a write to trim them.
        first_write = c.get(sid).create_time
        wait_past(first_write, 1.2)
        for i in range(3):
            c.append(sid, M("old enough %d" % i))
        st = status(srv, None)
        self.assertEqual(st.archived_lsn, stuck)  # still stuck
        self.assertLessEqual(st.wal_first_lsn, stuck + 1,
                             "the log was trimmed past the archiver (archived %d)" % stuck)
        self.assertIn("WAL archive", srv.log_text())
        # Back: it catches up, with no gap, and the log may go.
        os.remove(arch)
        os.rename(away, arch)
        st = wait_archived(srv, None)
        wait_for("the problem to clear", lambda: status(srv, None).archive_problem == "")
        recs = archive_records(arch)
        self.assertEqual([l for l, _, _ in recs], list(range(1, st.last_lsn + 1)))
        self.assertGreaterEqual(stuck + 1, held_from)
        # The line names where it resumed, not where its first batch ended.
        # (It is written just after the problem is cleared: wait for it.)
        wait_for("the line saying where the archive resumed",
                 lambda: "archiving again from lsn %d" % (stuck + 1) in srv.log_text())


# ---- point-in-time restore -------------------------------------------------------------

class PitrTest(ArchiveSourceCase):
    @classmethod
    def build(cls):
        """A base backup, then: write X, write Y, more, DeleteUser(gone)."""
        src = cls.src
        c = src.client()
        cls.gone = uid("gone")
        cls.gone_sid = c.create(cls.gone).session_id
        c.append(cls.gone_sid, M("to be erased"))
        cls.base = os.path.join(cls.tmp, "base.egb")
        rc, out, err = cli("backup", "create", "--out", cls.base, target=src.addr)
        assert rc == 0, err
        cls.x = c.create(uid("x")).session_id
        cls.lsn_x, cls.sum_x = checksum(src, None)
        # A time between X and Y: Y is written once the clock is past it.
        cls.t_between = time.time()
        while time.time() < cls.t_between + 0.002:
            time.sleep(0.001)
        cls.y = c.create(uid("y")).session_id
        for i in range(6):
            c.append(cls.y, M("y %d" % i))
        ch = grpc.insecure_channel(src.addr)
        upg.UserServiceStub(ch).DeleteUser(up.DeleteUserRequest(user_id=cls.gone),
                                           timeout=RPC_TIMEOUT)
        ch.close()
        cls.z = c.create(uid("z")).session_id
        cls.last_lsn, cls.sum_last = checksum(src, None)
        wait_archived(src, None)

    def restore(self, *args):
        d = os.path.join(self.tmpdir(), "data")
        rc, out, err = cli("backup", "restore", self.base, "--data-dir", d,
                           "--wal-archive", self.arch, *args, json_out=True)
        return d, rc, out, err

    def serve(self, d):
        restore_key_store(self.src, d, ADMIN)
        return self.start_server(data_dir=d, keyring=self.src.keyring_path, create_data_dir=False)

    def has(self, c, sid):
        try:
            c.get(sid)
            return True
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
            return False

    def test_to_lsn_between_two_writes(self):
        d, rc, out, err = self.restore("--to-lsn", str(self.lsn_x))
        self.assertEqual(rc, 0, err)
        res = json.loads(out)
        self.assertEqual(res["replayed"]["lsn"], self.lsn_x)
        srv = self.serve(d)
        c = srv.client()
        self.assertTrue(self.has(c, self.x))
        self.assertFalse(self.has(c, self.y))
        self.assertEqual(checksum(srv, None), (self.lsn_x, self.sum_x))

    def test_to_time(self):
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.t_between)) + \
            ".%06dZ" % int((self.t_between % 1) * 1e6)
        d, rc, out, err = self.restore("--to-time", t)
        self.assertEqual(rc, 0, err)
        srv = self.serve(d)
        self.assertEqual(checksum(srv, None), (self.lsn_x, self.sum_x))

    def test_past_delete_user_has_the_user_erased(self):
        d, rc, out, err = self.restore()
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["replayed"]["lsn"], self.last_lsn)
        srv = self.serve(d)
        c = srv.client()
        self.assertFalse(self.has(c, self.gone_sid))
        self.assertTrue(self.has(c, self.z))
        self.assertEqual(checksum(srv, None), (self.last_lsn, self.sum_last))

    def test_target_past_the_end_is_refused(self):
        d, rc, out, err = self.restore("--to-lsn", str(self.last_lsn + 100))
        self.assertEqual(rc, 1, err)
        self.assertIn("target lsn %d is past the archive's end" % (self.last_lsn + 100), err)
        self.assertFalse(os.path.exists(os.path.join(d, "data.mdb")))

    def copy_archive(self):
        d = os.path.join(self.tmpdir(), "arch")
        shutil.copytree(self.arch, d)
        return d, sorted(n for n in os.listdir(d) if n.endswith(".seg"))

    def restore_from(self, arch):
        d = os.path.join(self.tmpdir(), "data")
        rc, out, err = cli("backup", "restore", self.base, "--data-dir", d, "--wal-archive", arch)
        return d, rc, err

    def test_gap_is_refused(self):
        arch, names = self.copy_archive()
        self.assertGreater(len(names), 3, names)
        gone = names[len(names) // 2]
        os.remove(os.path.join(arch, gone))
        d, rc, err = self.restore_from(arch)
        self.assertEqual(rc, 1, err)
        self.assertIn("the archive has a gap: lsn %d.." % int(gone[:20]), err)
        self.assertFalse(os.path.exists(os.path.join(d, "data.mdb")))

    def test_corrupt_segment_is_refused(self):
        arch, names = self.copy_archive()
        victim = os.path.join(arch, names[-1])
        with open(victim, "r+b") as f:
            f.seek(HEADER + FRAME_HEAD + 2)
            b = f.read(1)
            f.seek(HEADER + FRAME_HEAD + 2)
            f.write(bytes([b[0] ^ 0x40]))
        d, rc, err = self.restore_from(arch)
        self.assertEqual(rc, 1, err)
        self.assertIn("lsn %d fails its checksum" % int(names[-1][:20]), err)
        self.assertFalse(os.path.exists(os.path.join(d, "data.mdb")))


# ---- one archive dir, one history -------------------------------------------------------

def dir_state(d):
    """Every file of an archive dir but its LOCK: {name: sha256}."""
    out = {}
    for name in sorted(os.listdir(d)):
        if name != "LOCK":
            with open(os.path.join(d, name), "rb") as f:
                out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


class ArchiveDirTest(ArchiveCase):
    def test_second_node_on_the_same_archive_dir_refuses_to_start(self):
        tmp = self.tmpdir()
        arch = os.path.join(tmp, "arch")
        first = self.start_server("--wal-archive-dir", arch)
        first.client().create(uid("u"))
        wait_archived(first, None)
        second = Server("--wal-archive-dir", arch)
        self.addCleanup(second.close)
        p = subprocess.run(second.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=20, env=clean_env())
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("--wal-archive-dir %s" % arch, p.stdout)
        self.assertIn("in use by another engramd (pid %d" % first.pid, p.stdout)
        self.assertIsNone(first.died())
        self.assertEqual(status(first, None).archive_problem, "")

    def test_restored_node_refuses_its_old_archive_dir(self):
        """A restore keeps the epoch, so a restored node's new writes would
        take LSNs its old archive holds with other bytes: it must not
        archive into that dir, neither when the archive is ahead of its log
        nor once its log has passed the archive's tip."""
        tmp = self.tmpdir()
        arch = os.path.join(tmp, "arch")
        src = self.start_server("--wal-archive-dir", arch, "--wal-archive-segment-records", 3)
        c = src.client()
        sid = c.create(uid("u")).session_id
        c.append(sid, M("before the base"))
        base = os.path.join(tmp, "base.egb")
        rc, out, err = cli("backup", "create", "--out", base, target=src.addr)
        self.assertEqual(rc, 0, err)
        for i in range(4):
            c.append(sid, M("after the base %d" % i))
        tip = wait_archived(src, None).archived_lsn
        src.stop()
        before = dir_state(arch)
        for case in ("archive ahead of the log", "log past the archive's tip"):
            with self.subTest(case):
                d = os.path.join(self.tmpdir(), "restored")
                rc, out, err = cli("backup", "restore", base, "--data-dir", d)
                self.assertEqual(rc, 0, err)
                restore_key_store(src, d, ADMIN)
                if case == "log past the archive's tip":
                    # The restored node writes elsewhere first, past the old tip.
                    n = self.start_server(data_dir=d, keyring=src.keyring_path,
                                          create_data_dir=False)
                    nc = n.client()
                    while status(n, None).last_lsn <= tip:
                        nc.append(sid, M("the restored node's own"))
                    n.stop()
                node = self.start_server("--wal-archive-dir", arch, data_dir=d,
                                         keyring=src.keyring_path, create_data_dir=False)
                node.client().append(sid, M("a write after the restore"))
                st = wait_for("the archiver to refuse",
                              lambda: (s := status(node, None)).archive_problem and s)
                self.assertIn("another history", st.archive_problem)
                self.assertIn("a restored node needs a new archive dir", st.archive_problem)
                self.assertEqual(st.archived_lsn, 0)
                self.assertIn("another history", node.log_text())
                node.stop()
                self.assertEqual(dir_state(arch), before)


# ---- archive disk faults (engramd-fault) ---------------------------------------------------

class FaultServer(Server):
    def argv(self):
        return [ENGRAMD_FAULT] + super().argv()[1:]


def wait_log(srv, needle, timeout=WAIT):
    return wait_for("%r in the log" % needle, lambda: needle in srv.log_text(), timeout)


@unittest.skipUnless(os.path.isfile(ENGRAMD_FAULT), "engramd-fault not built")
class ArchiveFaultTest(ArchiveCase):
    def fault_server(self, arch):
        srv = FaultServer("--wal-archive-dir", arch, "--wal-archive-segment-records", 1000)
        srv.env["ENGRAM_FAULT_CTL"] = os.path.join(srv.tmp, "fault.ctl")
        self.addCleanup(srv.close)
        srv.start()
        return srv

    def arm(self, srv, spec, gen):
        with open(srv.env["ENGRAM_FAULT_CTL"], "w") as f:
            f.write("%s,gen=%d" % (spec, gen))
        os.kill(srv.pid, signal.SIGUSR1)
        wait_log(srv, "engram-fault: armed gen=%d" % gen)

    def test_failed_fsync_cuts_back_to_the_last_good_one(self):
        arch = os.path.join(self.tmpdir(), "arch")
        srv = self.fault_server(arch)
        c = srv.client()
        sid = c.create(uid("u")).session_id
        for i in range(3):
            c.append(sid, M("synced %d" % i))
        good = wait_archived(srv, None).archived_lsn
        # The open segment's next fsync fails: the record written before it
        # may be gone from the disk whatever the page cache says.
        self.arm(srv, "point=sync,path=.seg.partial,nth=1,count=1,err=EIO", 1)
        c.append(sid, M("its fsync fails"))
        wait_log(srv, "engram-fault: hit point=sync")
        # Recovered: everything archived and the problem cleared. The two
        # do not change at once (the archived LSN moves first, the problem
        # is cleared after that step), so wait for both: a status taken as
        # the LSN caught up can still show the problem.
        st = wait_for("the archive to catch up and its problem to clear",
                      lambda: (s := status(srv, None)).archived_lsn == s.last_lsn and
                      s.archive_problem == "" and s)
        self.assertIn("cannot fsync", srv.log_text())
        # The segment was cut back to lsn `good` and closed there; the record
        # after it came from the log again, into a new segment.
        names = sorted(n for n in os.listdir(arch) if ".seg" in n)
        self.assertEqual([int(n[:20]) for n in names], [1, good + 1], names)
        recs = archive_records(arch)
        self.assertEqual([l for l, _, _ in recs], list(range(1, st.last_lsn + 1)))
        self.assertEqual(st.archive_problem, "")

    def test_archive_disk_stuck_at_shutdown(self):
        arch = os.path.join(self.tmpdir(), "arch")
        srv = self.fault_server(arch)
        c = srv.client()
        sid = c.create(uid("u")).session_id
        wait_archived(srv, None)
        # The archive's fsync hangs (a hung NFS server, say) for 120 s.
        self.arm(srv, "point=sync,path=.seg.partial,nth=1,count=1,delay_ms=120000", 1)
        c.append(sid, M("stuck"))
        wait_log(srv, "engram-fault: hit point=sync")
        # Writes and reads go on meanwhile.
        for i in range(3):
            c.append(sid, M("while stuck %d" % i))
        self.assertEqual(len(c.all_messages(sid)), 4)
        p = srv.proc
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=60)
        srv.proc = None
        self.assertEqual(rc, 0, srv.log_text()[-3000:])
        self.assertLess(time.monotonic() - t0, 30)
        self.assertIn("the final pass did not end within", srv.log_text())
        # The next start archives the rest, with no gap.
        srv.start()
        st = wait_archived(srv, None)
        recs = archive_records(arch)
        self.assertEqual([l for l, _, _ in recs], list(range(1, st.last_lsn + 1)))
