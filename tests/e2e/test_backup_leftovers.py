"""What a verify or restore leaves when it is stopped or refused, with real
processes (one node, one backup):

  - SIGTERM while verify's child walks the data: the temp dir is removed
    and the child dies with the CLI (it is held stopped meanwhile, so the
    moment cannot pass); the same for restore's check and its staging dir
  - a restore refused by a running node's lock leaves that dir's mode as
    it was
  - a data dir whose staging dir is marked done and holds no data.mdb (a
    crash between the move and the cleanup): engramd says the restore
    finished; one without the mark, or with the data still staged, did not
"""
import os
import shutil
import signal
import stat
import subprocess
import time

from harness import ENGRAM_CLI, M, clean_env, uid
from test_hardening_storage import run_engramd  # noqa: E402
from test_wal_archive import WAIT, ArchiveSourceCase, cli, wait_for  # noqa: E402


def children(pid):
    """Pids of pid's children (CONFIG_PROC_CHILDREN)."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def state(pid):
    """The state letter of pid ('R', 'S', 'T', 'Z', ...), None if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return None
    return st[st.rindex(")") + 2]


def maps_data(pid):
    """1 if pid has a data.mdb mapped."""
    try:
        with open("/proc/%d/maps" % pid) as f:
            return "data.mdb" in f.read()
    except OSError:
        return False


def alive(pid):
    return state(pid) not in (None, "Z")


# Attempts at catching the walk's child before it ends (it is short).
ATTEMPTS = 5


class BackupLeftoversTest(ArchiveSourceCase):
    SEGMENT_RECORDS = 10000

    @classmethod
    def build(cls):
        c = cls.src.client()
        # Enough records that the walk lasts a while (its child is caught
        # in it).
        for _ in range(20):
            sid = c.create(uid("s")).session_id
            for _ in range(20):
                c.append(sid, *[M("x" * 200) for _ in range(50)])
        cls.base = os.path.join(cls.tmp, "base.egb")
        rc, out, err = cli("backup", "create", "--out", cls.base, target=cls.src.addr)
        assert rc == 0, err

    def sigterm_mid_walk(self, make_argv):
        """Runs make_argv(), holds its walk child stopped, SIGTERMs the CLI;
        returns once the CLI died of it and the child is gone. Tries again
        (with a fresh make_argv()) when the walk ended before it was caught."""
        for _ in range(ATTEMPTS):
            # No pipe: an orphaned child would hold it open.
            p = subprocess.Popen(make_argv(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=clean_env())
            kid = None
            deadline = time.monotonic() + WAIT
            while kid is None and p.poll() is None and time.monotonic() < deadline:
                kid = next(iter(children(p.pid)), None)
            # Caught once it reads the data (past its setup, the prctl).
            while kid is not None and alive(kid) and not maps_data(kid):
                pass
            if kid is not None:
                try:
                    os.kill(kid, signal.SIGSTOP)
                except ProcessLookupError:
                    pass
                wait_for("the child to stop or end", lambda: state(kid) in (None, "T", "Z"))
            if kid is None or state(kid) != "T":
                p.wait(timeout=WAIT)
                continue
            self.addCleanup(lambda: alive(kid) and os.kill(kid, signal.SIGKILL))
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=WAIT)
            self.assertEqual(p.returncode, -signal.SIGTERM)
            wait_for("the walk's child to die with the CLI", lambda: not alive(kid), timeout=5)
            return
        self.fail("the walk ended before it could be caught, %d times" % ATTEMPTS)

    def test_sigterm_mid_verify_leaves_no_temp_dir_and_no_child(self):
        t = self.tmpdir()
        self.sigterm_mid_walk(lambda: [ENGRAM_CLI, "backup", "verify", self.base, "--tmp-dir", t,
                                       "--keyring", self.src.keyring_path])
        self.assertEqual(os.listdir(t), [])

    def test_sigterm_mid_restore_check_leaves_no_staged_copy_and_no_child(self):
        dirs = []

        def argv():
            dirs.append(os.path.join(self.tmpdir(), "data"))
            return [ENGRAM_CLI, "backup", "restore", self.base, "--data-dir", dirs[-1]]
        self.sigterm_mid_walk(argv)
        self.assertEqual(os.listdir(dirs[-1]), ["LOCK"])

    def test_a_restore_refused_by_a_running_node_keeps_its_dir_mode(self):
        os.chmod(self.src.data_dir, 0o750)
        self.addCleanup(os.chmod, self.src.data_dir, 0o700)
        rc, out, err = cli("backup", "restore", self.base, "--data-dir", self.src.data_dir,
                           "--force")
        self.assertEqual(rc, 1, err)
        self.assertIn("in use by another engramd", err)
        self.assertEqual(stat.S_IMODE(os.stat(self.src.data_dir).st_mode), 0o750)

    def test_engramd_tells_a_finished_stage_from_an_unfinished_one(self):
        d = os.path.join(self.tmpdir(), "data")
        rc, out, err = cli("backup", "restore", self.base, "--data-dir", d)
        self.assertEqual(rc, 0, err)
        stage = os.path.join(d, "restore.partial")
        os.mkdir(stage)
        # A crash between the move of data.mdb and the stage's removal.
        open(os.path.join(stage, "done"), "w").close()
        rc, out = run_engramd(d)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("the `engram backup restore` into %s finished: %s/data.mdb is the restored "
                      "data" % (d, d), out)
        self.assertNotIn("as it was", out)
        # Marked but the data still staged (a crash before the move): not done.
        shutil.copy(os.path.join(d, "data.mdb"), os.path.join(stage, "data.mdb"))
        rc, out = run_engramd(d)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("did not finish", out)
        os.unlink(os.path.join(stage, "done"))
        rc, out = run_engramd(d)
        self.assertIn("did not finish", out)
        # The next restore removes either and says so.
        rc, out, err = cli("backup", "restore", self.base, "--data-dir", d, "--force")
        self.assertEqual(rc, 0, err)
        self.assertIn("left by an interrupted restore", err)
        self.assertEqual(sorted(os.listdir(d)), ["LOCK", "data.mdb"])
