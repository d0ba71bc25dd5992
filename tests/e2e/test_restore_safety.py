"""Restore and verify safety (engram backup restore / verify), with real
processes: what a restore refuses, what an interrupted one leaves, and
damaged backups that must be reported, never crash the CLI.

  RestoreSafetyTest  one archiving node, two bases (before and after a bad
                     write) and a long tail of writes:
                     - --to-time before the base's time refused (both times
                       named), the older base reaches it without the bad write
                     - kill -9 of the CLI mid-replay leaves no data.mdb; the
                       next restore removes the staging dir and says so
                     - a segment with a flipped header byte, or under another
                       segment's name: exit 1 with the message, no crash
                     - a base with nothing archived after it: a warning
                     - --to-time of an impossible date: usage error
                     - a header whose schema differs from the data's: refused
                     - LMDB pages damaged behind a matching digest: verify and
                       restore exit 1, no crash, no temp dir left
                     - an empty sealed value verifies
  LosingSideTest     a backup from the side a promotion left, replayed with
                     the winner's archive: refused
"""
import glob
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import grpc

from harness import ENGRAM_CLI, M, clean_env, restore_key_store, uid
from test_hardening_storage import run_engramd  # noqa: E402
from test_wal_archive import (ADMIN, AGENT, WAIT, ArchiveCase, ArchiveSourceCase,  # noqa: E402
                              archiving_pair, cli, promote, status, wait_archived, wait_for)

# Records written after the last base: enough that a replay of them lasts
# well past the moment the test sees it begin (kill -9 test).
TAIL = 1500


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % int((t % 1) * 1e6)


def rewrite_backup(src, dst, data=None, **fields):
    """Copies the backup src to dst with its data replaced by data (the
    header's digest and length made to match) and header fields changed."""
    sys.path.insert(0, os.environ.get("ENGRAM_PY_GEN", "build/py"))
    from engram.storage.v1 import backup_pb2
    with open(src, "rb") as f:
        raw = f.read()
    n = struct.unpack(">I", raw[8:12])[0]
    h = backup_pb2.BackupHeader.FromString(raw[12:12 + n])
    data = raw[4096:] if data is None else data
    h.sha256 = hashlib.sha256(data).digest()
    h.data_bytes = len(data)
    for k, v in fields.items():
        setattr(h, k, v)
    hb = h.SerializeToString()
    blk = b"EGBACKUP" + struct.pack(">I", len(hb)) + hb
    with open(dst, "wb") as f:
        f.write(blk + b"\0" * (4096 - len(blk)) + data)
    return dst


class RestoreSafetyTest(ArchiveSourceCase):
    SEGMENT_RECORDS = 500

    @classmethod
    def backup(cls, name):
        path = os.path.join(cls.tmp, name)
        rc, out, err = cli("backup", "create", "--out", path, target=cls.src.addr)
        assert rc == 0, err
        return path

    @classmethod
    def build(cls):
        """base0, write A (with an empty message), T, write BAD, base1, a
        long tail, base_end (nothing archived after it)."""
        c = cls.src.client()
        cls.base0 = cls.backup("base0.egb")
        cls.a = c.create(uid("a")).session_id
        c.append(cls.a, M(""))
        cls.t = time.time()
        while time.time() < cls.t + 0.002:
            time.sleep(0.001)
        cls.bad = c.create(uid("bad")).session_id
        cls.base1 = cls.backup("base1.egb")
        tail = c.create(uid("tail")).session_id
        for i in range(TAIL):
            c.append(tail, M("t%d" % i))
        cls.base_end = cls.backup("base_end.egb")
        cls.last = wait_archived(cls.src, None).last_lsn

    def restore(self, base, *args, arch=None):
        d = os.path.join(self.tmpdir(), "data")
        rc, out, err = cli("backup", "restore", base, "--data-dir", d,
                           "--wal-archive", arch or self.arch, *args, json_out=True)
        return d, rc, out, err

    def has(self, c, sid):
        try:
            c.get(sid)
            return True
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
            return False

    # R1 / C1
    def test_time_before_the_base_is_refused_and_an_older_base_reaches_it(self):
        d, rc, out, err = self.restore(self.base1, "--to-time", rfc3339(self.t))
        self.assertEqual(rc, 1, err)
        self.assertIn("target time %s is before the base's time 20" % rfc3339(self.t), err)
        self.assertIn("needs an older base", err)
        self.assertFalse(os.path.exists(os.path.join(d, "data.mdb")))
        d, rc, out, err = self.restore(self.base0, "--to-time", rfc3339(self.t))
        self.assertEqual(rc, 0, err)
        restore_key_store(self.src, d, ADMIN)
        srv = self.start_server(data_dir=d, keyring=self.src.keyring_path, create_data_dir=False)
        c = srv.client()
        self.assertTrue(self.has(c, self.a))
        self.assertFalse(self.has(c, self.bad))

    # R2
    def test_kill9_mid_replay_leaves_no_data_and_the_next_restore_cleans_up(self):
        d = os.path.join(self.tmpdir(), "data")
        argv = [ENGRAM_CLI, "backup", "restore", self.base1, "--data-dir", d,
                "--wal-archive", self.arch]
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=clean_env())
        # The replay opens the store it writes (LMDB's lock.mdb appears
        # beside the data): kill -9 then, with ~TAIL records still to go.
        opened = lambda: (glob.glob(os.path.join(d, "lock.mdb")) +
                          glob.glob(os.path.join(d, "*", "lock.mdb")) or p.poll() is not None)
        deadline = time.monotonic() + WAIT
        while not opened() and time.monotonic() < deadline:
            time.sleep(0.0005)
        p.kill()
        p.wait(timeout=WAIT)
        p.stderr.close()
        self.assertEqual(p.returncode, -signal.SIGKILL, "the restore ended before the kill")
        self.assertFalse(os.path.exists(os.path.join(d, "data.mdb")), os.listdir(d))
        # engramd refuses the dir (it would start an empty store there).
        rc, out = run_engramd(d)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("restore.partial exists: an `engram backup restore`", out)
        self.assertFalse(os.path.exists(os.path.join(d, "data.mdb")), os.listdir(d))
        rc, out, err = cli("backup", "restore", self.base1, "--data-dir", d,
                           "--wal-archive", self.arch, json_out=True)
        self.assertEqual(rc, 0, err)
        self.assertIn("left by an interrupted restore", err)
        self.assertEqual(json.loads(out)["replayed"]["lsn"], self.last)
        self.assertEqual(sorted(os.listdir(d)), ["LOCK", "data.mdb"])

    # C2
    def copy_archive(self):
        d = os.path.join(self.tmpdir(), "arch")
        shutil.copytree(self.arch, d)
        return d, sorted(n for n in os.listdir(d) if n.endswith(".seg"))

    def test_segment_with_a_bad_header_or_name_is_refused_without_a_crash(self):
        arch, names = self.copy_archive()
        self.assertGreater(len(names), 2, names)
        with open(os.path.join(arch, names[1]), "r+b") as f:
            f.seek(40)
            b = f.read(1)
            f.seek(40)
            f.write(bytes([b[0] ^ 1]))
        d, rc, out, err = self.restore(self.base0, arch=arch)
        self.assertEqual(rc, 1, err)
        self.assertIn("%s: not a WAL segment of format 1, or its header is corrupt" % names[1], err)
        arch, names = self.copy_archive()
        os.rename(os.path.join(arch, names[2]), os.path.join(arch, names[1]))
        d, rc, out, err = self.restore(self.base0, arch=arch)
        self.assertEqual(rc, 1, err)
        self.assertIn("does not match its name", err)
        self.assertFalse(os.path.exists(os.path.join(d, "data.mdb")))

    # C10
    def test_nothing_archived_after_the_base_is_a_warning(self):
        d, rc, out, err = self.restore(self.base_end)
        self.assertEqual(rc, 0, err)
        res = json.loads(out)
        self.assertEqual(res["replayed"]["records"], 0)
        self.assertEqual(len(res["warnings"]), 1, res)
        self.assertIn("holds no record after the base", res["warnings"][0])
        self.assertIn("warning: the archive %s holds no record after the base" % self.arch, err)
        self.assertNotIn("engramd:", err)

    def test_impossible_date_is_a_usage_error(self):
        d, rc, out, err = self.restore(self.base0, "--to-time", "2026-02-31T00:00:00Z")
        self.assertEqual(rc, 2, err)
        self.assertIn("--to-time 2026-02-31T00:00:00Z", err)

    def test_restore_checks_the_schema_against_the_data(self):
        f = rewrite_backup(self.base0, os.path.join(self.tmpdir(), "s99.egb"), schema_version=99)
        d = os.path.join(self.tmpdir(), "data")
        rc, out, err = cli("backup", "restore", f, "--data-dir", d)
        self.assertEqual(rc, 1, err)
        self.assertIn("the data is at schema version", err)
        self.assertIn("its header says 99", err)
        self.assertFalse(os.path.exists(os.path.join(d, "data.mdb")))

    def test_mode_line_is_the_cli_s(self):
        d = os.path.join(self.tmpdir(), "data")
        os.mkdir(d, 0o755)
        os.chmod(d, 0o755)
        rc, out, err = cli("backup", "restore", self.base0, "--data-dir", d)
        self.assertEqual(rc, 0, err)
        self.assertIn("engram: backup restore: data dir %s had mode 0755; set it to 0700" % d, err)
        self.assertNotIn("engramd:", err)

    # C4
    def test_damaged_pages_behind_a_good_digest_are_reported_not_crashed_on(self):
        with open(self.base1, "rb") as f:
            raw = f.read()[4096:]
        tmp = self.tmpdir()
        vtmp = os.path.join(tmp, "vtmp")
        os.mkdir(vtmp)
        crashed = 0
        # A leaf page's header and its first node offsets (the reviewer's
        # evil_8208), and the node offsets of the last page: a compacted copy
        # writes the main DB's root last, and LMDB faults on it.
        for off in (4096 * 2 + 8, 4096 * 2 + 16, len(raw) - 4096 + 16):
            data = bytearray(raw)
            for i in range(8):
                data[off + i] ^= 0x5a
            f = rewrite_backup(self.base1, os.path.join(tmp, "evil_%d.egb" % off), bytes(data))
            rc, out, err = cli("backup", "verify", f, "--keyring", self.src.keyring_path,
                               "--tmp-dir", vtmp)
            self.assertIn(rc, (0, 1), (off, err))
            if rc == 1:
                self.assertIn("engram: backup verify:", err)
            crashed += "killed the check with signal" in err
            self.assertEqual(os.listdir(vtmp), [], off)
            d = os.path.join(tmp, "data_%d" % off)
            rc2, out, err2 = cli("backup", "restore", f, "--data-dir", d)
            self.assertEqual(rc2, rc, (off, err, err2))
            if rc:
                self.assertFalse(os.path.exists(os.path.join(d, "data.mdb")))
                self.assertFalse(os.path.exists(os.path.join(d, "restore.partial")))
        self.assertGreater(crashed, 0, "no offset hit a page LMDB faults on")

    # R5
    def test_empty_sealed_value_verifies(self):
        rc, out, err = cli("backup", "verify", self.base1, "--keyring", self.src.keyring_path,
                           json_out=True)
        self.assertEqual(rc, 0, err)
        res = json.loads(out)
        self.assertEqual(res["sealed_failed"], 0, res)
        # Sealed under a user's data key (format 2): verify checks its
        # layout only (it has no key store), and counts it so.
        self.assertGreater(res["sealed_opened"] + res["sealed_data_key_not_opened"], 0, res)


class LosingSideTest(ArchiveCase):
    def test_backup_from_the_side_a_promotion_left_is_refused(self):
        arch = os.path.join(self.tmpdir(), "arch-b")
        cluster, a, b = archiving_pair(self, (), ("--wal-archive-dir", arch,
                                                 "--wal-archive-segment-records", 5))
        tmp = cluster.tmp
        c = a.client(AGENT)
        sid = c.create(uid("u")).session_id
        for i in range(5):
            c.append(sid, M("both %d" % i))
        last = status(a).last_lsn
        wait_for("the replica", lambda: status(b).last_lsn == last)
        # B stops; A writes on (epoch 1) and is backed up there: the losing side.
        b.stop()
        for i in range(3):
            c.append(sid, M("lost %d" % i))
        base = os.path.join(tmp, "a.egb")
        rc, out, err = cli("backup", "create", "--out", base, target=a.addr, token=ADMIN)
        self.assertEqual(rc, 0, err)
        a.stop()
        # B comes back alone, is promoted (epoch 2) and writes past A's LSN.
        b.start()
        self.assertEqual(promote(b).epoch, 2)
        cb = b.client(AGENT)
        for i in range(8):
            cb.append(sid, M("winner %d" % i))
        wait_archived(b)
        d = os.path.join(tmp, "data")
        rc, out, err = cli("backup", "restore", base, "--data-dir", d, "--wal-archive", arch)
        self.assertEqual(rc, 1, err)
        self.assertIn("the base is not on the archive's history", err)
        self.assertIn("is of epoch 2, the base's of epoch 1", err)
        self.assertFalse(os.path.exists(os.path.join(d, "data.mdb")))
