"""The upgrade of a store written by 0.14 (fixtures/store-0.14: schema 5,
tokenizer version 1) and the background reindex of the keyword indexes:
GetStatus.indexes shows the job and its end; search finds the old data by
the new tokenizer's words afterwards and by the old index while the job
runs (a memory created meanwhile at once); a kill -9 mid-job resumes where
it stopped; updates racing the job's steps leave no memory behind;
messages appended with --index-messages=false are found once it is on
again; a record the write refuses is skipped, the job ending all the same, and
so is a memory stamped with a blind-index key the keyring no longer holds;
a replica shows the primary's index state."""
import gzip
import os
import re
import shutil
import subprocess
import tempfile
import threading
import unittest

from harness import ENGRAMD, KEEP, M, E2ETestCase, Server, free_port, run_threads
from test_memories import DUPLICATE, FACT, Mem, dump_data_dbs
from test_message_search import create, hits, search
from test_observability import parse, scrape, value
from test_at_rest import mdb_dump, mdb_put
from test_replication import TOKENS, ReplicationCase, follow, status
from engram.v1 import admin_pb2 as apb  # noqa: E402
from engram.v1 import admin_pb2_grpc as apbg  # noqa: E402
from engram.v1 import memory_pb2 as mp  # noqa: E402
from engram.storage.v1 import memory_records_pb2 as mr  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "store-0.14")
DONE_TIMEOUT = 60.0  # bound on a reindex of the fixture finishing (ASan is slow)
SLOW = ("--reindex-rate", "1", "--reindex-batch", "1")  # one record a second
BEGINS = "reindex of %s to tokenizer version 2 begins"
ENGRAMD_FAULT = os.environ.get("ENGRAMD_FAULT") or os.path.join(os.path.dirname(ENGRAMD),
                                                                 "engramd-fault")
# Every commit's flush sleeps (the fault shim's delay_ms): the writer is
# slow, so writes queue behind one another.
SLOW_COMMITS = "point=sync,nth=1,count=0,delay_ms=20"


class FaultServer(Server):
    def argv(self):
        return [ENGRAMD_FAULT] + super().argv()[1:]


def fixture_store(tmp):
    """A data dir holding the 0.14 store, its keyring and id (0700/0600)."""
    d = os.path.join(tmp, "data")
    os.mkdir(d, 0o700)
    with gzip.open(os.path.join(FIXTURE, "data.mdb.gz"), "rb") as src, \
            open(os.path.join(d, "data.mdb"), "wb") as dst:
        shutil.copyfileobj(src, dst)
    for name in ("keyring", "engram.id"):
        shutil.copy(os.path.join(FIXTURE, name), os.path.join(d, name))
    for name in os.listdir(d):
        os.chmod(os.path.join(d, name), 0o600)
    return d


def indexes(stat):
    """{index: (version, target_version, done, total, start_time seconds)}"""
    return {i.index: (i.version, i.target_version, i.done, i.total, i.start_time.seconds)
            for i in stat.indexes}


def finished(ix):
    return ix == {"memories": (2, 0, 0, 0, 0), "messages": (2, 0, 0, 0, 0)}


class ReindexCase(E2ETestCase):
    def fixture_server(self, *args, server=Server, **kw):
        tmp = tempfile.mkdtemp(prefix="engram-e2e-reindex-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, tmp, True)
        srv = server(*args, data_dir=fixture_store(tmp), create_data_dir=False, **kw)
        self.addCleanup(srv.close)
        srv.start()
        return srv

    def status(self, srv):
        """GetStatus over one client per process of srv (polled often)."""
        key = (srv.starts, srv.port)
        if getattr(srv, "_rx_key", None) != key or srv._rx_client not in srv.clients:
            srv._rx_client, srv._rx_key = srv.client(), key
        return apbg.AdminServiceStub(srv._rx_client.channel).GetStatus(
            apb.GetStatusRequest(), timeout=10.0)

    def wait_finished(self, srv):
        return self.wait_until(lambda: finished(indexes(self.status(srv))), DONE_TIMEOUT,
                               "both keyword indexes at version 2", [srv])

    def found(self, mem, user, query):
        return [r.memory.memory_id for r in mem.search(user, query).results]


class UpgradeTest(ReindexCase):
    def test_upgrade_reindexes_and_search_finds_the_old_data(self):
        srv = self.fixture_server()
        ix = indexes(self.status(srv))
        self.assertEqual(sorted(ix), ["memories", "messages"])
        for name, (version, target, done, total, start) in ix.items():
            # A job (toward 2, over the records the 0.14 store holds), or
            # already finished.
            if target:
                self.assertEqual((version, target), (1 if name == "memories" else 0, 2), name)
                self.assertEqual(total, 4 if name == "memories" else 3, name)
                self.assertLessEqual(done, total, name)
                self.assertGreater(start, 0, name)
            else:
                self.assertEqual((version, done, total), (2, 0, 0), name)
        self.assertIn(BEGINS % "memories", srv.log_text())
        self.assertIn(BEGINS % "messages", srv.log_text())
        self.wait_finished(srv)
        mem, c = Mem(srv.client()), srv.client()
        self.assertEqual(self.found(mem, "alice", "green tea"), ["m-tea"])
        # Version 2's words (Snowball stems, irregular plurals): "running"
        # is "run", "children" is "child".
        self.assertEqual(self.found(mem, "alice", "run"), ["m-run"])
        self.assertEqual(self.found(mem, "alice", "child"), ["m-run"])
        self.assertEqual(sorted(hits(search(c, user_id="alice", query="router"))),
                         [("s-old1", 1), ("s-old1", 2)])
        self.assertEqual(hits(search(c, user_id="bob", query="printer")), [("s-old2", 1)])
        self.assertEqual(hits(search(c, query="printer")), [("s-old2", 1)])
        # The next start finds nothing to do.
        srv.restart()
        self.assertTrue(finished(indexes(self.status(srv))))
        self.assertNotIn("reindex of", srv.log_text())

    def test_old_index_answers_while_the_reindex_runs(self):
        srv = self.fixture_server(*SLOW, "--metrics-listen", "127.0.0.1:0")
        srv.metrics_addr = re.search(r"metrics on ([0-9.]+:\d+)", srv.log_text()).group(1)
        mem = Mem(srv.client())

        def metric(family, index):
            return value(parse(scrape(srv)), family, index=index)

        def memories():
            return indexes(self.status(srv))["memories"]

        # One memory a second, in key order: m-bob, m-cafe, m-run, m-tea.
        self.wait_until(lambda: memories()[1] == 2, DONE_TIMEOUT, "the memories job under way",
                        [srv])
        # "running" is "running" to version 1 and "run" to version 2: m-run,
        # still at version 1, is found by the query read the old way.
        self.assertEqual(self.found(mem, "alice", "running"), ["m-run"])
        self.assertEqual(self.found(mem, "alice", "green tea"), ["m-tea"])
        # De-duplication compares a new text with m-tea's version 1 terms
        # by the text read the old way.
        dup = mem.create("alice", "Alice likes green tea in the morning")
        self.assertEqual((dup.outcome, dup.matched_memory_id), (DUPLICATE, "m-tea"))
        new = mem.create("alice", "Alice keeps a blue kayak by the lake", type=FACT).memory
        self.assertEqual(self.found(mem, "alice", "kayak"), [new.memory_id])
        v, target, done, total, _ = memories()
        self.assertEqual((v, target), (1, 2))
        self.assertLess(done, 3, "m-run should have been at version 1 during the searches")
        # The gauge: total - done as the thread last read it (the total, 4,
        # counts the memories there were when the job began).
        self.wait_until(lambda: 0 < metric("engram_reindex_pending", "memories") <= 4,
                        DONE_TIMEOUT, "engram_reindex_pending of the memories job", [srv])
        self.wait_finished(srv)
        self.wait_until(lambda: metric("engram_reindex_pending", "memories") == 0 and
                        metric("engram_reindex_pending", "messages") == 0,
                        DONE_TIMEOUT, "engram_reindex_pending back to 0", [srv])
        # One walk each: the 4 old memories, and the new one if its key
        # followed the cursor; the 3 old messages. Nothing skipped.
        self.assertIn(metric("engram_reindex_records_total", "memories"), (4, 5))
        self.assertEqual(metric("engram_reindex_records_total", "messages"), 3)
        self.assertEqual(metric("engram_reindex_skipped_total", "memories"), 0)
        self.assertEqual(metric("engram_reindex_skipped_total", "messages"), 0)
        self.assertEqual(self.found(mem, "alice", "running"), ["m-run"])
        self.assertEqual(self.found(mem, "alice", "green tea"), ["m-tea"])
        self.assertEqual(self.found(mem, "alice", "kayak"), [new.memory_id])

    def test_kill9_mid_job_resumes_from_the_cursor(self):
        srv = self.fixture_server(*SLOW)

        def progressed():
            v, target, done, total, start = indexes(self.status(srv))["memories"]
            # Mid-walk, and not near its end: a kill then is not raced by the
            # job ending.
            return (done, start) if target == 2 and 1 <= done < total - 1 else None

        done, start = self.wait_until(progressed, DONE_TIMEOUT, "the memories job under way",
                                      [srv])
        srv.kill9()
        srv.start()
        v, target, done2, total, start2 = indexes(self.status(srv))["memories"]
        if target:
            # The same job, not back to 0.
            self.assertGreaterEqual(done2, done)
            self.assertEqual(start2, start)
            self.assertNotIn(BEGINS % "memories", srv.log_text())
        else:
            self.assertEqual(v, 2)  # it finished just before the kill
        self.wait_finished(srv)
        self.assertEqual(self.found(Mem(srv.client()), "alice", "green tea"), ["m-tea"])


@unittest.skipUnless(os.path.isfile(ENGRAMD_FAULT), "engramd-fault not built")
class UpdatesDuringReindexTest(ReindexCase):
    # Each memory of the fixture and a query only its version 2 terms match
    # (version 1 has no Snowball stems nor irregular plurals).
    V2_ONLY = {"m-run": ("alice", ("run", "child")), "m-tea": ("alice", ("morn",)),
               "m-cafe": ("alice", ("working",)), "m-bob": ("bob", ("repairing",))}

    def test_updates_racing_the_steps_leave_no_memory_behind(self):
        # Why this catches a step that skips a memory changed since its walk:
        # UpdateMemory (importance) copies the old record, version 1 terms
        # included, and bumps its version. One thread per memory keeps an
        # update of it in flight all the time, and every commit is slow
        # (SLOW_COMMITS): the update of the memory a step walks is being
        # committed or queued when the step reads it, so the step's write,
        # queued behind it, finds the memory changed since its walk. A step that then left it alone would move
        # its cursor past it all the same, and the job would end with the
        # memory at version 1 while queries read version 2 only: the
        # searches below would miss it.
        srv = self.fixture_server(*SLOW, server=FaultServer, env={"ENGRAM_FAULT": SLOW_COMMITS})
        stop = threading.Event()
        updates = {m: 0 for m in self.V2_ONLY}

        def hammer(memory_id):
            def run():
                mem, i = Mem(srv.client()), 0
                while not stop.is_set():
                    i += 1
                    mem.update(mp.Memory(memory_id=memory_id, importance=0.1 + (i % 9) / 10),
                               ["importance"])
                    updates[memory_id] += 1
            return run

        def until_finished():
            try:
                self.wait_finished(srv)
            finally:
                stop.set()

        run_threads([hammer(m) for m in self.V2_ONLY] + [until_finished], DONE_TIMEOUT + 20)
        for memory_id, n in updates.items():
            self.assertGreater(n, 0, memory_id)
        mem = Mem(srv.client())
        for memory_id, (user, queries) in self.V2_ONLY.items():
            for q in queries:
                self.assertEqual(self.found(mem, user, q), [memory_id], q)


class IndexMessagesOffTest(ReindexCase):
    def test_messages_appended_while_off_are_found_after_the_restart(self):
        srv = self.start_server("--index-messages=false")
        self.wait_until(lambda: indexes(self.status(srv))["messages"][0] == 0, DONE_TIMEOUT,
                        "messages at version 0", [srv])
        c = srv.client()
        sid = create(c, "carol")
        c.append(sid, M("the zeppelin hovers over the harbour"))
        self.assertEqual(hits(search(c, user_id="carol", query="zeppelin")), [])
        srv.extra = []
        srv.restart()
        # The reindex thread's first round may come after the server serves.
        self.wait_until(lambda: BEGINS % "messages" in srv.log_text(), DONE_TIMEOUT,
                        "the messages reindex begun", [srv])
        self.wait_finished(srv)
        c = srv.client()
        self.assertEqual(hits(search(c, user_id="carol", query="zeppelin")), [(sid, 1)])
        # Appended now: indexed at once.
        c.append(sid, M("a second zeppelin"))
        self.assertEqual(sorted(hits(search(c, user_id="carol", query="zeppelin"))),
                         [(sid, 1), (sid, 2)])


class RefusedRecordTest(ReindexCase):
    def test_a_record_the_write_refuses_is_skipped_and_the_job_ends(self):
        """Message 1's stored record gets index terms without a version
        (mdb_load, the server stopped): eg_store_message_reindex refuses it
        (its old index fields are malformed) on every try. The job leaves it
        as it is, logs it once by its key, counts it, writes message 2 in
        the same step (one step: --reindex-batch 200) and ends."""
        for tool in ("mdb_dump", "mdb_load"):
            if not shutil.which(tool):
                self.fail("%s (lmdb-utils) not installed" % tool)
        srv = self.start_server("--index-messages=false")
        self.wait_until(lambda: indexes(self.status(srv))["messages"][0] == 0, DONE_TIMEOUT,
                        "messages at version 0", [srv])
        c = srv.client()
        sid = create(c, "dave")
        c.append(sid, M("the zeppelin hovers over the harbour"))
        c.append(sid, M("a second zeppelin"))
        srv.stop()
        seq1 = sid.encode() + (1).to_bytes(8, "big")
        [(key, val)] = [(k, v) for k, v in dump_data_dbs(srv.data_dir)["messages"]
                        if k.endswith(seq1)]
        # index_terms (field 9, packed fixed64): one term, index_version 0.
        val += b"\x4a\x08" + (7).to_bytes(8, "little")
        dump = "VERSION=3\nformat=bytevalue\ntype=btree\nHEADER=END\n %s\n %s\nDATA=END\n" % (
            key.hex(), val.hex())
        subprocess.run(["mdb_load", "-s", "messages", srv.data_dir], input=dump.encode(),
                       check=True, timeout=60)
        srv.extra = ["--metrics-listen", "127.0.0.1:0"]
        srv.start()
        srv.metrics_addr = re.search(r"metrics on ([0-9.]+:\d+)", srv.log_text()).group(1)
        self.wait_finished(srv)
        c = srv.client()
        self.assertEqual(hits(search(c, user_id="dave", query="zeppelin")), [(sid, 2)])
        log = srv.log_text()
        self.assertEqual(log.count("message 1 of session %s" % sid), 1, log)
        self.assertIn("message 1 of session %s of tenant default left below tokenizer version 2 "
                      "(its record cannot be rewritten: stored data failed to open)" % sid, log)
        self.assertNotIn("retrying", log)
        fams = parse(scrape(srv))
        self.assertEqual(value(fams, "engram_reindex_skipped_total", index="messages"), 1)
        self.assertEqual(value(fams, "engram_reindex_records_total", index="messages"), 2)

    def test_a_memory_under_a_key_no_longer_held_is_skipped_and_the_job_ends(self):
        """A memory whose blind_key_id names a key the keyring lacks (as an
        erased user's memory left under the old key by a blind-index switch,
        that key since retired): the memories job opens its text first (an
        erased user's does not open: skipped as ever), then skips it as
        unreadable, rather than failing its step every second forever."""
        tmp = tempfile.mkdtemp(prefix="engram-e2e-reindex-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, tmp, True)
        data = fixture_store(tmp)
        header, recs = mdb_dump(data, "memories")
        key, val = recs[0]
        rec = mr.MemoryRecord.FromString(val)
        rec.blind_key_id = 9  # the keyring holds key 1 only
        mdb_put(data, "memories", header, [(key, rec.SerializeToString())])
        srv = Server("--reindex-batch", "1", data_dir=data, create_data_dir=False)
        self.addCleanup(srv.close)
        srv.start()
        self.wait_finished(srv)
        log = srv.log_text()
        self.assertRegex(log, r"memory %s of tenant \S+ left below tokenizer version 2 \(its "
                         r"blind-index key 9 is not in the keyring\)" % rec.memory_id)
        self.assertNotIn("retrying", log)


class ReplicaTest(ReplicationCase):
    def test_replica_shows_the_primarys_index_state(self):
        tmp = tempfile.mkdtemp(prefix="engram-e2e-reindex-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, tmp, True)
        data = fixture_store(tmp)
        keyring = os.path.join(tmp, "keyring")
        shutil.copy(os.path.join(data, "keyring"), keyring)
        os.chmod(keyring, 0o600)
        p = Server(*SLOW, tokens=TOKENS, keyring=keyring, data_dir=data, create_data_dir=False,
                   port=free_port())
        p.name = "primary"
        self.addCleanup(p.close)
        r = Server(tokens=TOKENS, keyring=keyring, port=free_port())
        r.name = "r1"
        follow(r, "127.0.0.1:%d" % p.fixed_port)
        self.addCleanup(r.close)
        p.start()
        r.start()
        self.wait_connected(p, ["r1"])

        def same():
            pi = indexes(status(p))
            ri = indexes(status(r))
            return pi == ri and any(v[1] == 2 and v[2] > 0 for v in pi.values())

        self.wait_until(same, DONE_TIMEOUT, "the replica showing a job under way as the primary",
                        [p, r])
        self.wait_until(lambda: finished(indexes(status(p))) and finished(indexes(status(r))),
                        DONE_TIMEOUT, "both nodes at version 2", [p, r])
