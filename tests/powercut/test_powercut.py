"""
Power-cut simulation (issue 15): an acknowledged write survives a power cut
at any flush, whichever --meta-sync scheme, and the test catches a scheme
that answers before the meta page is durable.

engramd runs with the power-cut library preloaded (tests/powercut/
powercut.c): at every PC_EVERY-th flush of data.mdb it writes two images of
the file as a power cut just before that flush could leave it (every write
since the last flush undone; a random subset of its pages kept) and the
CLOCK_MONOTONIC time of the cut. Meanwhile CLIENTS clients append one
message per call to a session each and record when each answer arrived
(time.monotonic_ns: the same clock). Then each image is opened by a real
engramd of its own, which must start, pass a full Checksum (every data DB
read), and hold every message answered before the cut, with the content
sent for its seq, and nothing that was never sent.

Environment: ENGRAM_POWERCUT (the library; default build/libeg_powercut.so;
a colon-separated LD_PRELOAD list for a sanitizer build, whose runtime
must come first: /lib/x86_64-linux-gnu/libasan.so.8:build/libeg_powercut.so),
PC_CUTS (cuts per scheme, default 6), PC_ROUNDS (runs per scheme, default 1;
`make powercut` runs more).
"""
import os
import shutil
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))

import grpc  # noqa: E402

from harness import REPO, RPC_TIMEOUT, E2ETestCase, Server, uid  # noqa: E402
from engram.v1 import admin_pb2 as apb  # noqa: E402
from engram.v1 import admin_pb2_grpc as apbg  # noqa: E402

POWERCUT = os.environ.get("ENGRAM_POWERCUT") or os.path.join(REPO, "build", "libeg_powercut.so")
CUTS = int(os.environ.get("PC_CUTS", "6"))
ROUNDS = int(os.environ.get("PC_ROUNDS", "1"))
CLIENTS = 8
EVERY = 5
RUN_BOUND_S = 60.0  # a run that takes no CUTS cuts in this long fails
CAUGHT_ROUNDS = 15  # rounds the broken scheme gets to lose a write (about 1.5 s each)


def content(sid, seq):
    return "%s/%d" % (sid, seq)


class Appender(threading.Thread):
    """Creates a session, then appends content(sid, k) for k = 1, 2, ...
    one call at a time; acks[k] is when the answer for seq k arrived."""

    def __init__(self, srv, stop):
        super().__init__(daemon=True)
        self.client = srv.client()
        self.sid = uid("pc")
        self.stop = stop
        self.created = None
        self.acks = {}
        self.error = None

    def run(self):
        try:
            self.client.create("u", session_id=self.sid)
            self.created = time.monotonic_ns()
            k = 1
            while not self.stop.is_set():
                r = self.client.append(self.sid, content(self.sid, k))
                now = time.monotonic_ns()
                if [m.seq for m in r.messages] != [k]:
                    raise AssertionError("append %d answered seqs %s" % (k, [m.seq for m in r.messages]))
                self.acks[k] = now
                k += 1
        except grpc.RpcError as e:
            if not self.stop.is_set():
                self.error = e
        except AssertionError as e:
            self.error = e


class PowerCutTest(E2ETestCase):

    def setUp(self):
        for lib in POWERCUT.split(":"):
            if not os.path.isfile(lib):
                self.fail("power-cut library not found at %s (set ENGRAM_POWERCUT)" % lib)

    def run_and_cut(self, scheme, drop_dsync):
        """Runs engramd --meta-sync scheme under load until CUTS cuts were
        taken. Returns (server, appenders, [(cut no, t_ns)])."""
        srv = Server("--meta-sync", scheme)
        out = os.path.join(srv.tmp, "cuts")
        os.makedirs(out)
        srv.env.update({"LD_PRELOAD": POWERCUT, "PC_OUT": out, "PC_EVERY": str(EVERY),
                        "PC_FILE": os.path.join(srv.data_dir, "data.mdb"),
                        "PC_MAX": str(CUTS), "PC_DROP_DSYNC": "1" if drop_dsync else "0",
                        "PC_SEED": str(os.getpid())})
        self.addCleanup(srv.close)
        srv.start()
        stop = threading.Event()
        apps = [Appender(srv, stop) for _ in range(CLIENTS)]
        for a in apps:
            a.start()
        cuts_txt = os.path.join(out, "cuts.txt")

        def cuts_taken():
            if not os.path.exists(cuts_txt):
                return 0
            with open(cuts_txt) as f:
                return sum(1 for line in f if line.endswith("\n"))
        try:
            self.wait_until(lambda: cuts_taken() >= CUTS or any(a.error for a in apps),
                            RUN_BOUND_S, "%d power cuts under load" % CUTS, nodes=(srv,))
        finally:
            stop.set()
            for a in apps:
                a.join(RPC_TIMEOUT * 2)
        for a in apps:
            self.assertIsNone(a.error, "appender %s failed" % a.sid)
        srv.stop()
        with open(cuts_txt) as f:
            cuts = [(int(n), int(t)) for n, t, _ in (line.split() for line in f)]
        return srv, apps, out, cuts

    def check_image(self, srv, apps, image, t_cut):
        """Opens image as the data of a fresh engramd. Returns a list of
        what is wrong (empty: it opens, reads whole, and holds every
        write answered before t_cut) and how many answered writes it
        checked."""
        data = os.path.join(srv.tmp, "restore-%s" % os.path.basename(image))
        # The rest of the data dir (the key store env, the store id) as it
        # was at the end: what the image's data needs, never less.
        shutil.copytree(srv.data_dir, data, ignore=lambda d, names: (
            [n for n in names if n in ("data.mdb", "lock.mdb", "LOCK")]
            if os.path.samefile(d, srv.data_dir) else []))
        shutil.copyfile(image, os.path.join(data, "data.mdb"))
        node = Server("--meta-sync", "commit", data_dir=data, create_data_dir=False)
        try:
            node.start()
        except AssertionError as e:
            node.close()
            return ["%s does not open: %s" % (image, e)], 0
        wrong, checked = [], 0
        try:
            c = node.client()
            admin = apbg.AdminServiceStub(c.channel)
            admin.Checksum(apb.ChecksumRequest(), timeout=RPC_TIMEOUT)
            for a in apps:
                want = [k for k, t in a.acks.items() if t < t_cut]
                checked += len(want)
                if a.created is None or a.created >= t_cut:
                    continue
                try:
                    msgs = c.all_messages(a.sid)
                except grpc.RpcError as e:
                    wrong.append("%s: session %s created before the cut: %s" % (image, a.sid, e.code()))
                    continue
                seqs = [m.seq for m in msgs]
                if seqs != list(range(1, len(seqs) + 1)):
                    wrong.append("%s: %s has seqs %s" % (image, a.sid, seqs))
                for m in msgs:
                    if m.content != content(a.sid, m.seq):
                        wrong.append("%s: %s seq %d holds %r" % (image, a.sid, m.seq, m.content))
                lost = [k for k in want if k > len(seqs)]
                if lost:
                    wrong.append("%s: %s lost acknowledged seqs %s (has %d)" %
                                 (image, a.sid, lost, len(seqs)))
            node.stop()
        except grpc.RpcError as e:
            wrong.append("%s: %s" % (image, e))
        finally:
            node.close()
            shutil.rmtree(data, ignore_errors=True)
        return wrong, checked

    def cut_failures(self, scheme, drop_dsync=False, stop_at_first=False, rounds=ROUNDS):
        wrong, checked, images = [], 0, 0
        for _ in range(rounds):
            srv, apps, out, cuts = self.run_and_cut(scheme, drop_dsync)
            self.assertEqual(len(cuts), CUTS)
            for n, t in cuts:
                for kind in ("worst", "rand"):
                    w, c = self.check_image(srv, apps, os.path.join(out, "cut-%04d-%s.img" % (n, kind)), t)
                    wrong, checked, images = wrong + w, checked + c, images + 1
                    if wrong and stop_at_first:
                        return wrong
        sys.stderr.write("[%s%s: %d images, %d acknowledged appends checked] " %
                         (scheme, " without O_DSYNC" if drop_dsync else "", images, checked))
        self.assertGreater(checked, CUTS * CLIENTS, "too few answered appends to test anything")
        return wrong

    def test_next_flush_scheme_survives_cuts(self):
        """One flush per commit: answers wait for the next flush."""
        wrong = self.cut_failures("next-flush")
        self.assertEqual(wrong, [])

    def test_commit_scheme_survives_cuts(self):
        """Two flushes per commit (the scheme before issue 15)."""
        wrong = self.cut_failures("commit")
        self.assertEqual(wrong, [])

    def test_answer_before_meta_flush_is_caught(self):
        """The broken scheme: meta page written without a flush (O_DSYNC
        dropped) and the write answered at once. Some image must lose an
        acknowledged write. Whether one does in a given run is chance (the
        loss shows only when an answer arrived before the cut undid its
        meta page: 12 images once held none in a fresh make test), so it
        runs up to CAUGHT_ROUNDS rounds and stops at the first loss."""
        wrong = self.cut_failures("commit", drop_dsync=True, stop_at_first=True,
                                  rounds=max(ROUNDS, CAUGHT_ROUNDS))
        self.assertNotEqual(wrong, [], "a scheme that answers before its meta page is durable "
                                       "passed the power-cut test")
        sys.stderr.write("[caught: %s] " % wrong[0])
        for w in wrong:
            # An acknowledged append, or an acknowledged session (its
            # create answered before the cut), lost: nothing else.
            self.assertRegex(w, "lost acknowledged|created before the cut: StatusCode.NOT_FOUND")


if __name__ == "__main__":
    unittest.main()
