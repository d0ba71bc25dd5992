"""Storage hardening: a damaged, emptied or replaced data.mdb is refused
or named, never served silently or died on without a word; a second
engramd on one data dir is refused; the data dir is tightened to 0700; a
full disk answers RESOURCE_EXHAUSTED "disk full", logs once per episode
and recovers once space returns (on a real small tmpfs)."""
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import time
import unittest

import grpc

from harness import ENGRAMD, E2ETestCase, M, Server, clean_env, uid

RUN_TIMEOUT = 20.0
P_BRANCH, P_OVERFLOW, P_META = 0x01, 0x04, 0x08


def run_engramd(data_dir, *extra):
    """Runs engramd on data_dir, expecting it to exit on its own; returns
    (exit status, combined output)."""
    p = subprocess.run([ENGRAMD, "--listen", "127.0.0.1:0", "--data-dir", data_dir] +
                       list(extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, env=clean_env(), timeout=RUN_TIMEOUT)
    return p.returncode, p.stdout.decode(errors="replace")


def fill(srv, sessions=20, per_session=60, size=400):
    """Writes enough to give the data DBs branch pages; returns the ids."""
    c = srv.client()
    ids = []
    for _ in range(sessions):
        sid = c.create(uid("u")).session_id
        for _ in range(per_session // 20):
            c.append(sid, *[M("x" * size) for _ in range(20)])
        ids.append(sid)
    return ids


def page_size(path):
    # Page 0 is a meta page: a 16-byte page header, then MDB_meta, whose
    # first MDB_db (after magic, version, address, mapsize) keeps the page
    # size in its md_pad field.
    with open(path, "rb") as f:
        head = f.read(64)
    return struct.unpack_from("<I", head, 16 + 24)[0]


def break_branch_pages(path):
    """Points every child of every branch page far past the end of the file
    (a bad page pointer, as flipped bytes make). Returns how many pages."""
    psize = page_size(path)
    n = 0
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        pgno = 2
        while (pgno + 1) * psize <= len(data):
            off = pgno * psize
            # Header: mp_pgno (8), pad (2), mp_flags (2), mp_lower (2); an
            # overflow page's header is followed by raw value pages.
            own, flags, lower = struct.unpack_from("<QxxHH", data, off)
            pgno += 1
            if own != pgno - 1:
                continue
            if flags & P_OVERFLOW:
                pgno += struct.unpack_from("<I", data, off + 12)[0] - 1
                continue
            if not flags & P_BRANCH or flags & P_META or not 16 <= lower <= psize:
                continue
            for i in range((lower - 16) // 2):
                node = off + struct.unpack_from("<H", data, off + 16 + 2 * i)[0]
                if node + 6 > off + psize:
                    continue
                # mn_lo, mn_hi, mn_flags: the child's page number.
                struct.pack_into("<HHH", data, node, 0xFFF0, 0xFFFF, 0x00FF)
            n += 1
        f.seek(0)
        f.write(data)
    return n


def wait_exit(srv, timeout=RUN_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = srv.died()
        if rc is not None:
            return rc
        time.sleep(0.02)
    return None


class DataFileTest(E2ETestCase):

    def setUp(self):
        self.srv = Server()
        self.srv.start()
        self.data = os.path.join(self.srv.data_dir, "data.mdb")

    def tearDown(self):
        self.srv.close()

    def test_truncated_data_file_refused_at_start(self):
        fill(self.srv)
        self.srv.stop()
        os.truncate(self.data, os.path.getsize(self.data) // 2)
        rc, out = run_engramd(self.srv.data_dir)
        self.assertEqual(rc, 1, "want exit 1 (a SIGBUS is %d):\n%s" % (-7, out))
        self.assertIn(self.data, out)
        self.assertIn("truncated", out)

    def test_truncated_under_running_server_named(self):
        ids = fill(self.srv)
        c = self.srv.client()
        self.assertEqual(len(c.all_messages(ids[-1])), 60)
        # Cut the file to its two meta pages while engramd has it mapped.
        os.truncate(self.data, 2 * page_size(self.data))
        try:
            for sid in ids:
                c.all_messages(sid)
        except grpc.RpcError:
            pass
        rc = wait_exit(self.srv)
        log = self.srv.log_text()
        self.assertEqual(rc, 1, "engramd should stop with status 1:\n" + log[-2000:])
        self.assertIn("SIGBUS reading %s: the data file is corrupt" % self.data, log)

    def test_empty_or_missing_data_file_refused(self):
        fill(self.srv, sessions=1, per_session=20)
        self.srv.stop()
        kept = self.data + ".kept"
        os.rename(self.data, kept)
        open(self.data, "wb").close()
        rc, out = run_engramd(self.srv.data_dir)
        self.assertEqual(rc, 1, out)
        self.assertIn(self.data + " is empty", out)
        os.unlink(self.data)
        rc, out = run_engramd(self.srv.data_dir)
        self.assertEqual(rc, 1, out)
        self.assertIn(self.data + " is missing", out)
        # Nothing was created in its place; the real file back serves again.
        self.assertFalse(os.path.exists(self.data))
        os.rename(kept, self.data)
        self.srv.start()

    def test_foreign_data_file_refused(self):
        other = Server()
        try:
            other.start()
            other.stop()
            fill(self.srv, sessions=1, per_session=20)
            self.srv.stop()
            shutil.copy(os.path.join(other.data_dir, "data.mdb"), self.data)
            rc, out = run_engramd(self.srv.data_dir)
            self.assertEqual(rc, 1, out)
            self.assertIn("data file was replaced", out)
        finally:
            other.close()

    def test_bad_branch_page_is_named(self):
        ids = fill(self.srv)
        self.srv.stop()
        self.assertGreater(break_branch_pages(self.data), 0, "no branch page to break")
        rc, out = None, ""
        try:
            self.srv.start()
        except AssertionError:
            rc, out = self.srv.last_exit, self.srv.log_text()
        if self.srv.proc is None:
            # Refused at start: must say which file.
            self.assertIn("data.mdb", out)
            return
        c = self.srv.client()
        for sid in ids:
            try:
                c.all_messages(sid)
            except grpc.RpcError as e:
                if self.srv.died() is not None:
                    break
                self.assertEqual(e.code(), grpc.StatusCode.DATA_LOSS, e.details())
                break
        else:
            self.fail("every read of a broken tree succeeded")
        rc = self.srv.died()
        if rc is not None:
            self.assertEqual(rc, 1)
            self.assertIn("data.mdb: the data file is corrupt", self.srv.log_text())


class DataDirTest(E2ETestCase):

    def test_second_engramd_refused(self):
        srv = Server()
        try:
            srv.start()
            rc, out = run_engramd(srv.data_dir)
            self.assertEqual(rc, 1, out)
            self.assertIn("in use by another engramd (pid %d" % srv.pid, out)
            # The first one is unharmed.
            srv.client().create(uid("u"))
        finally:
            srv.close()

    def test_open_data_dir_tightened(self):
        srv = Server()
        try:
            os.chmod(srv.data_dir, 0o755)
            srv.start()
            self.assertEqual(stat.S_IMODE(os.stat(srv.data_dir).st_mode), 0o700)
            self.assertIn("had mode 0755; set it to 0700", srv.log_text())
        finally:
            srv.close()

    def test_zero_data_file_beside_old_keyring_refused(self):
        # A store from before engram.id: only its keyring says data lived here.
        srv = Server()
        try:
            srv.start()
            srv.stop()
            os.unlink(os.path.join(srv.data_dir, "engram.id"))
            open(os.path.join(srv.data_dir, "data.mdb"), "wb").close()
            rc, out = run_engramd(srv.data_dir)
            self.assertEqual(rc, 1, out)
            self.assertIn("data.mdb is empty", out)
            self.assertIn("lock.mdb exist: a store lived here", out)
        finally:
            srv.close()


class DataEvidenceTest(E2ETestCase):
    """A keyring in the data dir says a store lived there however --keyring
    names it, and the refusal names the one way to start empty on purpose."""

    def setUp(self):
        self.srv = Server()
        self.addCleanup(self.srv.close)
        self.srv.start()
        fill(self.srv, sessions=1, per_session=20)
        self.srv.stop()
        self.dir = self.srv.data_dir
        self.data = os.path.join(self.dir, "data.mdb")
        self.keyring = os.path.join(self.dir, "keyring")
        os.unlink(self.data)

    def test_keyring_named_explicitly_is_evidence(self):
        os.unlink(os.path.join(self.dir, "engram.id"))
        for name in (self.keyring, os.path.join(self.dir, ".", "keyring")):
            rc, out = run_engramd(self.dir, "--keyring", name)
            self.assertEqual(rc, 1, out)
            self.assertIn(self.data + " is missing", out)
        # Under another name, found by its directory's inode.
        other = os.path.join(self.dir, "keys")
        os.rename(self.keyring, other)
        rc, out = run_engramd(self.dir, "--keyring", os.path.join(self.dir, "..",
                                                                   os.path.basename(self.dir), "keys"))
        self.assertEqual(rc, 1, out)
        self.assertIn("is in the data dir beside", out)
        self.assertFalse(os.path.exists(self.data))

    def test_documented_way_to_start_empty_works(self):
        rc, out = run_engramd(self.dir)
        self.assertEqual(rc, 1, out)
        self.assertIn("To start an empty store here on purpose, remove engram.id and move the "
                      "keyring out of the data dir (pass it with --keyring", out)
        self.assertIn("remove engram.id to adopt it", out)
        # Do what it says: the old keys go along and serve the empty store.
        kept = os.path.join(self.srv.tmp, "keyring.kept")
        os.unlink(os.path.join(self.dir, "engram.id"))
        os.rename(self.keyring, kept)
        srv = Server(data_dir=self.dir, keyring=kept)
        self.addCleanup(srv.close)
        srv.start()
        self.assertEqual(len(srv.client().list_sessions(uid("u")).sessions), 0)


class FirstStartWithKeyringTest(E2ETestCase):
    def test_keyring_copied_into_a_new_data_dir_starts(self):
        # A replica's (or any node's) first start with the keyring copied
        # into an empty data dir: no store was ever opened there.
        src = Server()
        self.addCleanup(src.close)
        src.start()
        src.stop()
        d = tempfile.mkdtemp(prefix="engram-e2e-copied-")
        self.addCleanup(shutil.rmtree, d, True)
        data = os.path.join(d, "data")
        os.makedirs(data, mode=0o700)
        shutil.copy(os.path.join(src.data_dir, "keyring"), os.path.join(data, "keyring"))
        os.chmod(os.path.join(data, "keyring"), 0o600)
        srv = Server(data_dir=data)
        self.addCleanup(srv.close)
        srv.start()
        sid = srv.client().create(uid("u")).session_id
        self.assertEqual(srv.client().get(sid).session_id, sid)


class DiskFullTest(E2ETestCase):
    FS_BYTES = 8 << 20
    BALLAST = 1 << 20
    CONTENT = 60000

    def setUp(self):
        self.mnt = tempfile.mkdtemp(prefix="engram-e2e-fs-")
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % self.FS_BYTES, "tmpfs",
                            self.mnt], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            os.rmdir(self.mnt)
            self.skipTest("cannot mount a small tmpfs to fill (%s)" %
                          p.stdout.decode(errors="replace").strip())
        self.srv = Server(data_dir=os.path.join(self.mnt, "data"))

    def tearDown(self):
        try:
            self.srv.close()
        finally:
            subprocess.run(["umount", self.mnt], check=False)
            os.rmdir(self.mnt)

    def test_disk_full_exhausted_once_then_recovers(self):
        ballast = os.path.join(self.mnt, "ballast")
        with open(ballast, "wb") as f:
            f.write(b"\0" * self.BALLAST)
        self.srv.start()
        c = self.srv.client()
        sid = c.create(uid("u")).session_id
        written, err = 0, None
        for _ in range(2 * self.FS_BYTES // self.CONTENT):
            try:
                c.append(sid, M("y" * self.CONTENT))
                written += 1
            except grpc.RpcError as e:
                err = e
                break
        self.assertIsNotNone(err, "the 8 MiB file system never filled")
        self.assertEqual(err.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, err.details())
        self.assertIn("disk full", err.details())
        # A second write as large meets the same full disk: no second log line.
        self.assertStatus(grpc.StatusCode.RESOURCE_EXHAUSTED, c.append, sid, M("z" * self.CONTENT),
                          field="disk full")
        # Reads go on.
        self.assertEqual(len(c.all_messages(sid)), written)
        log = self.srv.log_text()
        self.assertEqual(len(re.findall(r"disk full: writes fail", log)), 1, log[-2000:])
        # Space returns: writes work again without a restart, and the log says so.
        os.unlink(ballast)
        c.append(sid, M("after"))
        self.assertEqual(len(c.all_messages(sid)), written + 1)
        self.assertIn("disk has space again: writes resumed", self.srv.log_text())


if __name__ == "__main__":
    unittest.main()
