"""Backups (issue 10) with real processes on loopback: AdminService.Backup
through `engram backup create`, then restore, verify, list and prune.

  BackupRestoreTest  a backup taken while a client appends (~1,000 writes/s
                     for a few seconds) restores to a node at the backup's
                     LSN and epoch holding exactly the acknowledged writes
                     with engram-lsn <= that LSN; with writes stopped the
                     restored node's Checksum equals the source's; a backup
                     taken from a replica restores the same way
  BackupFileTest     one primary's backup: 0600, verify (with the keyring:
                     every sealed field opens), verify catching a flipped
                     byte, a truncated file and a missing key id (exit 1,
                     the reason on stderr and in --json); restore refusing a
                     non-empty dir (unless --force) and a running node's
                     dir; Backup refused without a token and for a non-admin
                     token; list and prune over files with crafted headers
"""
import calendar
import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import time

import grpc

from harness import (ENGRAM_CLI, E2ETestCase, M, Server, clean_env, keyring_with, pb,
                     restore_key_store, uid)
from test_replication import (ADMIN, ADMIN_MD, AGENT_MD, TOKENS, Cluster,
                              ReplicationCase, agent, checksum, status)
from engram.storage.v1 import backup_pb2 as bpb  # noqa: E402
from engram.v1 import admin_pb2 as apb  # noqa: E402

BACKUP_PATH = "/engram.v1.AdminService/Backup"
CLI_TIMEOUT = 120.0
# The load runs until the test stops it (once writes acknowledged after
# the backup are seen); this only bounds a test that never does. A bound
# of a few seconds was a race: a backup slower than what was left of it
# (ASan) left no write after the backup, and the wait for one failed.
WRITE_SECONDS = 120.0
WRITE_RATE = 1000.0       # writes/s it aims at, all threads together
WRITERS = 2


def cli(addr, *args, token=ADMIN, check=None):
    """Runs the CLI; returns the CompletedProcess (exit code checked if
    check is an int)."""
    argv = [ENGRAM_CLI]
    if addr:
        argv += ["--target", addr, "--token", token]
    p = subprocess.run(argv + [str(a) for a in args], capture_output=True, text=True,
                       timeout=CLI_TIMEOUT, env=clean_env())
    if check is not None and p.returncode != check:
        raise AssertionError("engram %s: exit %d, want %d\nstdout: %s\nstderr: %s"
                             % (" ".join(map(str, args)), p.returncode, check, p.stdout, p.stderr))
    return p


def create(srv, path):
    """`engram backup create --out path --json` on srv; its JSON."""
    return json.loads(cli(srv.addr, "--json", "backup", "create", "--out", path, check=0).stdout)


def restore(path, data_dir, *extra):
    return json.loads(cli(None, "--json", "backup", "restore", path, "--data-dir", data_dir,
                          *extra, check=0).stdout)


def restored_node(cluster, path, name, src):
    """A node started on the restore of the backup at path (taken from src)
    with src's key store (the cluster's keyring: both are sealed under
    it)."""
    d = os.path.join(cluster.tmp, name)
    info = restore(path, d)
    restore_key_store(src, d, ADMIN)
    s = Server(tokens=TOKENS, keyring=cluster.keyring, data_dir=d, create_data_dir=False)
    s.name = name
    cluster.nodes.append(s)
    s.start()
    return s, info


class BackupRestoreTest(ReplicationCase):

    def setUp(self):
        self.cluster = Cluster()
        self.addCleanup(self.cluster.close)
        self.p = self.cluster.primary().start()
        self.files = os.path.join(self.cluster.tmp, "backups")
        os.makedirs(self.files)

    def append_load(self, sid, stop):
        """WRITERS threads appending to sid until stop is set (or the time
        bound passes; stop is also set at cleanup); returns (threads, acked
        list of (content, lsn))."""
        acked, lock = [], threading.Lock()
        c = agent(self.p)
        period = WRITERS / WRITE_RATE
        self.addCleanup(stop.set)

        def run(k):
            deadline = time.monotonic() + WRITE_SECONDS
            n = 0
            while not stop.is_set() and time.monotonic() < deadline:
                content = "w%d-%d" % (k, n)
                _, lsn = c.call_lsn("AppendMessages", pb_append(sid, content))
                with lock:
                    acked.append((content, int(lsn)))
                n += 1
                # Paced: the load is about WRITE_RATE, not whatever the box gives.
                time.sleep(max(0.0, period - 0.0005))

        ts = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(WRITERS)]
        for t in ts:
            t.start()
        return ts, acked

    def test_backup_under_writes_restores_exactly_the_acked_writes_up_to_its_lsn(self):
        sid = agent(self.p).create(uid("u"), uid("load")).session_id
        stop = threading.Event()
        ts, acked = self.append_load(sid, stop)
        # The backup starts once the load runs, and the load goes on past it.
        self.wait_until(lambda: len(acked) > 200, 20, "the load running", [self.p])
        path = os.path.join(self.files, "under-load.egb")
        info = create(self.p, path)
        n_at_backup_end = len(acked)
        self.wait_until(lambda: len(acked) > n_at_backup_end + 100, 20, "writes after the backup",
                        [self.p])
        stop.set()
        for t in ts:
            t.join(30)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        lsn = info["lsn"]
        self.assertGreater(lsn, 0)
        self.assertTrue(any(l > lsn for _, l in acked), "writes acknowledged after the backup")
        node, rinfo = restored_node(self.cluster, path, "restored", self.p)
        self.assertEqual((rinfo["lsn"], rinfo["epoch"]), (lsn, info["epoch"]))
        st = status(node)
        self.assertEqual((st.last_lsn, st.epoch), (lsn, info["epoch"]))
        got = {m.content for m in agent(node).all_messages(sid)}
        want = {content for content, l in acked if l <= lsn}
        self.assertEqual(got, want, "exactly the acknowledged writes with engram-lsn <= %d" % lsn)

    def test_stopped_writes_checksum_equal_from_primary_and_replica(self):
        c = agent(self.p)
        sid = c.create(uid("u"), uid("quiet")).session_id
        for i in range(20):
            c.append(sid, "quiet %d" % i)
        r = self.cluster.replica("replica", self.p.addr).start()
        lsn = self.wait_converged(self.p, [r])
        want = checksum(self.p)
        for src in (self.p, r):
            path = os.path.join(self.files, "%s.egb" % src.name)
            info = create(src, path)
            self.assertEqual(info["lsn"], lsn)
            node, _ = restored_node(self.cluster, path, "from-" + src.name, src)
            got = checksum(node)
            self.assertEqual((got.lsn, got.sha256), (want.lsn, want.sha256),
                             "restored from the %s" % src.name)
            node.stop()


def pb_append(sid, content):
    return pb.AppendMessagesRequest(session_id=sid, messages=[M(content)])


def crafted(path, time_us, lsn=1):
    """A file with a sound backup header (format 1) and 16 bytes of data
    (not a store: list and prune read headers only)."""
    data = b"x" * 16
    h = bpb.BackupHeader(format=1, lsn=lsn, epoch=1, schema_version=4, time_us=time_us,
                         data_bytes=len(data), sha256=hashlib.sha256(data).digest())
    msg = h.SerializeToString()
    block = b"EGBACKUP" + struct.pack(">I", len(msg)) + msg
    with open(path, "wb") as f:
        f.write(block + b"\0" * (4096 - len(block)) + data)


def utc_us(y, mo, d, h=12):
    return calendar.timegm((y, mo, d, h, 0, 0)) * 1_000_000


class BackupFileTest(E2ETestCase):

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster()
        cls.addClassCleanup(cls.cluster.close)  # also when the set-up below fails
        cls.p = cls.cluster.primary()
        cls.p.start()
        c = agent(cls.p)
        sid = c.create(uid("u"), uid("files"), metadata={"k": "v"}).session_id
        c.append(sid, "sealed one", "sealed two")
        cls.dir = os.path.join(cls.cluster.tmp, "backups")
        os.makedirs(cls.dir)
        cls.path = os.path.join(cls.dir, "base.egb")
        cls.info = create(cls.p, cls.path)

    def copy(self, name):
        dst = os.path.join(tempfile.mkdtemp(dir=self.cluster.tmp), name)
        shutil.copyfile(self.path, dst)
        return dst

    def verify(self, path, *args, want=0):
        p = cli(None, "--json", "backup", "verify", path, *args, check=want)
        return json.loads(p.stdout), p.stderr

    def test_file_is_0600_and_verifies_with_every_sealed_field(self):
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        self.assertEqual(self.info["key_ids"], [1])
        out, _ = self.verify(self.path, "--keyring", self.cluster.keyring)
        self.assertTrue(out["ok"])
        self.assertEqual((out["lsn"], out["epoch"]), (self.info["lsn"], self.info["epoch"]))
        self.assertEqual(out["records"]["sessions"], 1)
        self.assertEqual(out["records"]["messages"], 2)
        # session metadata, two message contents: under the user's data key
        # (token format 2), whose layout verify checks; the key store, not
        # the keyring, holds the key that opens them
        self.assertEqual((out["sealed_opened"], out["sealed_failed"]), (0, 0))
        self.assertEqual(out["sealed_data_key_not_opened"], 3)
        self.assertEqual(out["missing_key_ids"], [])

    def test_verify_catches_a_flipped_byte(self):
        path = self.copy("flipped.egb")
        with open(path, "r+b") as f:
            f.seek(4096 + os.path.getsize(path) // 2 - 2048)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0x40]))
        out, err = self.verify(path, want=1)
        self.assertFalse(out["ok"])
        self.assertIn("SHA-256", out["error"])
        self.assertIn("SHA-256", err)

    def test_verify_catches_a_truncated_file(self):
        path = self.copy("cut.egb")
        os.truncate(path, os.path.getsize(path) - 4096)
        out, err = self.verify(path, want=1)
        self.assertIn("truncated", out["error"])
        self.assertIn("truncated", err)

    def test_verify_catches_a_missing_key_id(self):
        other = keyring_with(os.path.join(self.cluster.tmp, "other-keyring"), 2)
        out, err = self.verify(self.path, "--keyring", other, want=1)
        self.assertFalse(out["ok"])
        self.assertEqual(out["missing_key_ids"], [1])
        self.assertEqual(out["sealed_opened"], 0)
        self.assertIn("lacks key id 1", err)

    def test_restore_refuses_a_non_empty_dir_unless_force(self):
        d = tempfile.mkdtemp(dir=self.cluster.tmp)
        with open(os.path.join(d, "something"), "w") as f:
            f.write("x")
        p = cli(None, "backup", "restore", self.path, "--data-dir", d, check=1)
        self.assertIn("not empty", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(d, "data.mdb")))
        restore(self.path, d, "--force")
        self.assertTrue(os.path.exists(os.path.join(d, "data.mdb")))
        self.assertEqual(os.stat(d).st_mode & 0o777, 0o700)

    def test_restore_refuses_a_running_nodes_dir(self):
        p = cli(None, "backup", "restore", self.path, "--data-dir", self.p.data_dir, "--force",
                check=1)
        self.assertIn("in use by another engramd (pid %d" % self.p.pid, p.stderr)
        self.assertIsNone(self.p.died())

    def backup_stream(self, md):
        ch = grpc.insecure_channel(self.p.addr)
        self.addCleanup(ch.close)
        fn = ch.unary_stream(BACKUP_PATH, request_serializer=apb.BackupRequest.SerializeToString,
                             response_deserializer=apb.BackupChunk.FromString)
        return list(fn(apb.BackupRequest(), timeout=30, metadata=md))

    def test_backup_needs_an_admin_token(self):
        self.assertStatus(grpc.StatusCode.UNAUTHENTICATED, self.backup_stream, ())
        self.assertStatus(grpc.StatusCode.PERMISSION_DENIED, self.backup_stream, AGENT_MD)
        chunks = self.backup_stream(ADMIN_MD)
        self.assertGreater(chunks[0].size, 0)
        self.assertTrue(chunks[-1].last)
        self.assertEqual(chunks[-1].total_bytes, chunks[0].size)
        self.assertEqual(sum(len(c.data) for c in chunks), chunks[0].size)

    def test_list_and_prune_by_header_times(self):
        d = tempfile.mkdtemp(dir=self.cluster.tmp)
        names = {  # 2026-03-02 is a Monday
            "a": utc_us(2026, 3, 2, 10), "b": utc_us(2026, 3, 2, 8), "c": utc_us(2026, 3, 1),
            "d": utc_us(2026, 2, 28), "e": utc_us(2026, 2, 20), "f": utc_us(2026, 2, 10),
            "g": utc_us(2026, 1, 15), "h": utc_us(2025, 12, 31)}
        for n, t in names.items():
            crafted(os.path.join(d, n + ".egb"), t)
        with open(os.path.join(d, "notes.txt"), "w") as f:
            f.write("not a backup")
        with open(os.path.join(d, "broken.egb"), "wb") as f:
            f.write(b"EGBACKUP\0\0")  # a backup's magic, no header
        out = json.loads(cli(None, "--json", "backup", "list", d, check=0).stdout)
        self.assertEqual([b["name"] for b in out["backups"]],
                         [n + ".egb" for n in "hgfedcba"])
        self.assertEqual(len(out["unreadable"]), 1)
        self.assertIn("broken.egb", out["unreadable"][0])
        args = ("--json", "backup", "prune", d, "--keep-daily", 2, "--keep-weekly", 2,
                "--keep-monthly", 3)
        dry = json.loads(cli(None, *(args + ("--dry-run",)), check=0).stdout)
        self.assertEqual(len(os.listdir(d)), 10, "a dry run deletes nothing")
        out = json.loads(cli(None, *args, check=0).stdout)
        kept = sorted(n + ".egb" for n in "acdg")
        self.assertEqual(sorted(out["kept"]), kept)
        self.assertEqual(sorted(out["deleted"]), sorted(n + ".egb" for n in "befh"))
        self.assertEqual((dry["kept"], dry["deleted"]), (out["kept"], out["deleted"]))
        self.assertEqual(sorted(os.listdir(d)), sorted(kept + ["notes.txt", "broken.egb"]))


if __name__ == "__main__":
    import unittest
    unittest.main()
