"""`engram backup create`, `list` and `prune` at their edges (issue 10's
client review): the CLI against a stand-in AdminService.Backup (a Python
gRPC server on loopback that streams what each test says, and can hold the
stream open), and list/prune over crafted backup files.

  CreateTest  SIGINT or SIGTERM mid-create removes the temp file (and the
              CLI dies of the signal); a file-size limit fails the write
              (EFBIG, exit 1) instead of killing the CLI with SIGXFSZ, and
              the temp file goes; a create killed with SIGKILL leaves a temp
              file that list and prune report (never delete), and one still
              being written is reported as running; a last chunk without a
              time or with more key ids than a header holds is refused;
              --out naming an existing file (without --force), a directory
              or a missing dir is refused before any call
  TimeTest    list flags header times in the future (past now + the skew),
              zero or negative; prune gives them no slot, never counts them
              as the newest and never deletes them
"""
import hashlib
import json
import os
import resource
import signal
import subprocess
import tempfile
import threading
import time
from concurrent import futures

import grpc

from harness import ENGRAM_CLI, E2ETestCase, clean_env
from test_backup import crafted, utc_us
from engram.v1 import admin_pb2 as apb  # noqa: E402

CHUNK = 1 << 20
WAIT = 20.0             # bound on waiting for the CLI to reach a state
HOLD = 30.0             # bound on how long the stand-in holds a stream open
KEY_IDS_MAX = 200       # EG_BACKUP_KEY_IDS_MAX (a keyring's keys)


def chunks(data, last_fields):
    """The chunks of a backup of data; last_fields go on the last chunk."""
    out = [apb.BackupChunk(data=data[i:i + CHUNK]) for i in range(0, len(data), CHUNK)]
    out[0].size = len(data)
    last = apb.BackupChunk(last=True, lsn=7, epoch=1, schema_version=4,
                           total_bytes=len(data), sha256=hashlib.sha256(data).digest())
    last.MergeFrom(last_fields)
    return out + [last]


def sound_last():
    c = apb.BackupChunk(key_ids=[1])
    c.time.FromMicroseconds(int(time.time() * 1e6))
    return c


class StandIn:
    """AdminService.Backup on loopback streaming self.plan(); a plan item
    that is a threading.Event is waited for (at most HOLD s) instead."""

    def __init__(self):
        self.plan = []
        self.calls = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler("engram.v1.AdminService", {
            "Backup": grpc.unary_stream_rpc_method_handler(
                self.backup, request_deserializer=apb.BackupRequest.FromString,
                response_serializer=apb.BackupChunk.SerializeToString)})
        self.server.add_generic_rpc_handlers((handler,))
        self.addr = "127.0.0.1:%d" % self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def backup(self, request, context):
        self.calls += 1
        for item in self.plan:
            if isinstance(item, threading.Event):
                item.wait(HOLD)
            else:
                yield item

    def close(self):
        self.server.stop(None)


def run(*args, **kw):
    return subprocess.run([ENGRAM_CLI] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=60, env=clean_env(), **kw)


def temps(d):
    return [n for n in os.listdir(d) if ".tmp-" in n]


class CreateTest(E2ETestCase):

    def setUp(self):
        self.srv = StandIn()
        self.addCleanup(self.srv.close)
        self.dir = tempfile.mkdtemp(prefix="engram-bcli-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.dir])
        self.out = os.path.join(self.dir, "b.egb")
        self.release = threading.Event()
        self.addCleanup(self.release.set)

    def create(self, *extra, **kw):
        return run("--target", self.srv.addr, "--token", "t", "--json", "backup", "create",
                   "--out", self.out, *extra, **kw)

    def start_held(self):
        """A create whose stream stops after its first MiB until released;
        returns the CLI's Popen once the data reached its temp file."""
        data = os.urandom(2 * CHUNK)
        c = chunks(data, sound_last())
        self.srv.plan = [c[0], self.release] + c[1:]
        p = subprocess.Popen([ENGRAM_CLI, "--target", self.srv.addr, "--token", "t", "backup",
                              "create", "--out", self.out], env=clean_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(p.wait)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        deadline = time.monotonic() + WAIT
        while True:
            t = temps(self.dir)
            if t and os.path.getsize(os.path.join(self.dir, t[0])) >= 4096 + CHUNK:
                return p
            self.assertIsNone(p.poll(), "the CLI ended before the stream was held")
            self.assertLess(time.monotonic(), deadline, "no temp file with data appeared")
            time.sleep(0.02)

    def test_a_signal_mid_create_removes_the_temp_file(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with self.subTest(signal=sig.name):
                self.release.clear()
                p = self.start_held()
                p.send_signal(sig)
                self.assertEqual(p.wait(WAIT), -sig, "the CLI dies of the signal")
                self.assertEqual(os.listdir(self.dir), [])
                self.release.set()

    def test_a_file_size_limit_fails_the_write_and_removes_the_temp_file(self):
        data = os.urandom(3 * CHUNK)
        self.srv.plan = chunks(data, sound_last())

        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (CHUNK, CHUNK))
        p = self.create(preexec_fn=limit)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("File too large", p.stderr)
        self.assertFalse(json.loads(p.stdout)["ok"])
        self.assertEqual(os.listdir(self.dir), [])

    def test_list_and_prune_report_a_temp_file_of_a_create(self):
        crafted(os.path.join(self.dir, "old.egb"), utc_us(2026, 1, 1))
        p = self.start_held()
        name = temps(self.dir)[0]
        out = json.loads(run("--json", "backup", "list", self.dir).stdout)
        self.assertEqual(out["incomplete"], [{"name": name, "running": True}])
        p.kill()
        p.wait(WAIT)
        lst = run("--json", "backup", "list", self.dir)
        self.assertEqual(lst.returncode, 0, lst.stderr)
        out = json.loads(lst.stdout)
        self.assertEqual([b["name"] for b in out["backups"]], ["old.egb"])
        self.assertEqual(out["incomplete"], [{"name": name, "running": False}])
        self.assertIn("%s: the temp file of a backup create that did not finish" % name,
                      lst.stderr)
        readable = run("backup", "list", self.dir).stdout
        self.assertIn("incomplete", readable)
        self.assertIn(name, readable)
        pr = run("--json", "backup", "prune", self.dir, "--keep-daily", 1, "--keep-weekly", 0,
                 "--keep-monthly", 0)
        self.assertEqual(pr.returncode, 0, pr.stderr)
        out = json.loads(pr.stdout)
        self.assertEqual(out["kept"], ["old.egb"])
        self.assertEqual(out["incomplete"], [{"name": name, "running": False}])
        self.assertIn("not deleted", pr.stderr)
        self.assertIn(name, os.listdir(self.dir))
        # verify and restore name it for what it is
        v = run("backup", "verify", os.path.join(self.dir, name))
        self.assertEqual(v.returncode, 1)
        self.assertIn("did not finish", v.stderr)

    def test_a_last_chunk_without_a_time_or_with_too_many_key_ids_is_refused(self):
        data = os.urandom(1000)
        no_time = apb.BackupChunk(key_ids=[1])
        many = sound_last()
        many.key_ids[:] = list(range(1, KEY_IDS_MAX + 2))
        for last, want in ((no_time, "no time"), (many, "%d key ids" % (KEY_IDS_MAX + 1))):
            with self.subTest(want=want):
                self.srv.plan = chunks(data, last)
                p = self.create()
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn(want, p.stderr)
                self.assertEqual(os.listdir(self.dir), [])
        self.srv.plan = chunks(data, sound_last())
        self.assertEqual(self.create().returncode, 0)
        self.assertEqual(os.listdir(self.dir), ["b.egb"])

    def test_out_is_checked_before_any_call(self):
        with open(self.out, "w") as f:
            f.write("precious")
        p = self.create()
        self.assertEqual(p.returncode, 1)
        self.assertIn("exists", p.stderr)
        self.assertIn("--force", p.stderr)
        with open(self.out) as f:
            self.assertEqual(f.read(), "precious")
        sub = os.path.join(self.dir, "sub")
        os.mkdir(sub)
        for path, want in ((sub, "is a directory"), (os.path.join(self.dir, "no", "b.egb"),
                                                     "No such file or directory")):
            with self.subTest(out=path):
                p = run("--target", self.srv.addr, "--token", "t", "backup", "create",
                        "--out", path, "--force")
                self.assertEqual(p.returncode, 1)
                self.assertIn(want, p.stderr)
        self.assertEqual(self.srv.calls, 0, "refused before the call")
        self.assertEqual(sorted(os.listdir(self.dir)), ["b.egb", "sub"])
        data = os.urandom(1000)
        self.srv.plan = chunks(data, sound_last())
        p = self.create("--force")
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(self.out, "rb") as f:
            self.assertEqual(f.read()[:8], b"EGBACKUP")


class TimeTest(E2ETestCase):

    def test_list_and_prune_distrust_times_from_the_future_or_before_1970(self):
        d = tempfile.mkdtemp(prefix="engram-btime-")
        self.addCleanup(subprocess.run, ["rm", "-rf", d])
        now = int(time.time() * 1e6)
        day = 86400 * 10**6
        real = {"today.egb": now - 3600 * 10**6, "soon.egb": now + 3600 * 10**6,
                "d3.egb": now - 3 * day, "d40.egb": now - 40 * day}
        odd = {"future.egb": utc_us(2099, 1, 1), "huge.egb": 2**62, "zero.egb": 0,
               "negative.egb": -5 * 10**6, "tomorrow.egb": now + 2 * day}
        for n, t in list(real.items()) + list(odd.items()):
            crafted(os.path.join(d, n), t)
        lst = run("--json", "backup", "list", d)
        self.assertEqual(lst.returncode, 0, lst.stderr)
        out = json.loads(lst.stdout)
        self.assertEqual(sorted(b["name"] for b in out["backups"] if b["suspect"]), sorted(odd))
        self.assertEqual(sorted(b["name"] for b in out["backups"] if not b["suspect"]),
                         sorted(real))
        for n in odd:
            self.assertIn(n, lst.stderr)
        self.assertIn("suspect", run("backup", "list", d).stdout)
        # a skew of 3 days trusts tomorrow's
        out = json.loads(run("--json", "backup", "list", d, "--max-clock-skew-s",
                             3 * 86400).stdout)
        self.assertEqual(sorted(b["name"] for b in out["backups"] if b["suspect"]),
                         sorted(set(odd) - {"tomorrow.egb"}))
        pr = run("--json", "backup", "prune", d, "--keep-daily", 1, "--keep-weekly", 1,
                 "--keep-monthly", 1)
        self.assertEqual(pr.returncode, 0, pr.stderr)
        out = json.loads(pr.stdout)
        # soon.egb is the newest believable one: it takes the day, week and month
        self.assertEqual(out["kept"], ["soon.egb"])
        self.assertEqual(sorted(out["deleted"]), sorted(set(real) - {"soon.egb"}))
        self.assertEqual(sorted(out["suspect"]), sorted(odd))
        for n in odd:
            self.assertIn(n, pr.stderr)
        self.assertEqual(sorted(os.listdir(d)), sorted(set(odd) | {"soon.egb"}))


if __name__ == "__main__":
    import unittest
    unittest.main()
