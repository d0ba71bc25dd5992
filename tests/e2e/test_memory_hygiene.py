"""Memories kept clean, through the real engramd: an UpdateMemory that
changes text, embedding or type is de-duplicated like a create;
DeduplicateMemories re-runs de-duplication over a user's ACTIVE memories in
bounded write transactions; conflict_policy NEWER_WINS makes the older,
opposite memory SUPERSEDED (out of search, dedup and default listings); the
CLI for each."""
import json
import subprocess

import grpc
from google.protobuf import field_mask_pb2

from harness import ENGRAM_CLI, ServerTestCase, clean_env, uid
from test_memories import ACTIVE, CREATED, DUP, DUPLICATE, FACT, PREF, Mem, mp

SUPERSEDED_STATE = mp.MEMORY_STATE_SUPERSEDED
NEWER_WINS, KEEP_BOTH = mp.CONFLICT_POLICY_NEWER_WINS, mp.CONFLICT_POLICY_KEEP_BOTH
OFF = mp.DEDUP_POLICY_OFF


class Hygiene(Mem):
    def create(self, user, text, type=PREF, policy=0, conflict=0, **kw):
        return self._call(self.m, "CreateMemory", mp.CreateMemoryRequest(
            memory=mp.Memory(user_id=user, text=text, type=type, **kw), dedup_policy=policy,
            conflict_policy=conflict))

    def edit(self, memory_id, paths, policy=0, jt=0.0, ct=0.0, **fields):
        return self._call(self.m, "UpdateMemory", mp.UpdateMemoryRequest(
            memory=mp.Memory(memory_id=memory_id, **fields),
            update_mask=field_mask_pb2.FieldMask(paths=paths), dedup_policy=policy,
            jaccard_threshold=jt, cosine_threshold=ct))

    def dedup(self, user, jt=0.0, ct=0.0):
        return self._call(self.m, "DeduplicateMemories", mp.DeduplicateMemoriesRequest(
            user_id=user, jaccard_threshold=jt, cosine_threshold=ct))

    def ids(self, user, states=()):
        f = mp.MemoryFilter(states=list(states)) if states else None
        return [m.memory_id for m in self.list_all(user, f, page_size=50)]


class HygieneServerTestCase(ServerTestCase):
    """A shared server driven through Hygiene (self.mem)."""

    @classmethod
    def connect(cls):
        super().connect()
        cls.mem = Hygiene(cls.client)


class HygieneTest(HygieneServerTestCase):
    # The smallest batch, so a pass of a few dozen memories takes several
    # write transactions.
    server_args = ("--dedup-batch", "100")

    # ---- UpdateMemory de-duplication ----------------------------------------------

    def test_edit_into_a_duplicate_of_an_equal(self):
        user = uid("u")
        a = self.mem.create(user, "Dana likes hiking in the Alps", importance=0.5).memory
        b = self.mem.create(user, "Dana owns a red bicycle", importance=0.5).memory
        e = self.mem.edit(b.memory_id, ["text"], text="dana likes hiking in the alps!")
        # equal importance: the other one, already there, stays
        self.assertEqual((e.state, e.duplicate_of, e.version), (DUP, a.memory_id, 2))
        self.assertEqual(self.mem.get(a.memory_id).state, ACTIVE)
        hits = self.mem.search(user, query="hiking alps").results
        self.assertEqual([h.memory.memory_id for h in hits], [a.memory_id])

    def test_more_important_edit_marks_the_other(self):
        user = uid("u")
        a = self.mem.create(user, "Eli collects old stamps", importance=0.3).memory
        b = self.mem.create(user, "Eli rides horses", importance=0.8).memory
        e = self.mem.edit(b.memory_id, ["text"], text="Eli collects old stamps")
        self.assertEqual((e.state, e.duplicate_of), (ACTIVE, ""))
        old = self.mem.get(a.memory_id)
        self.assertEqual((old.state, old.duplicate_of, old.version), (DUP, b.memory_id, 2))

    def test_edit_of_embedding_and_of_type(self):
        user = uid("u")
        a = self.mem.create(user, "first words here", embedding=[1.0, 0.0, 0.0]).memory
        b = self.mem.create(user, "entirely other things", embedding=[0.0, 1.0, 0.0]).memory
        e = self.mem.edit(b.memory_id, ["embedding"], embedding=[1.0, 0.0, 0.01])
        self.assertEqual((e.state, e.duplicate_of), (DUP, a.memory_id))
        c = self.mem.create(user, "Fay works at the harbour", type=FACT).memory
        d = self.mem.create(user, "Fay works at the harbour", type=PREF).memory
        self.assertEqual(d.state, ACTIVE, "another type is never a duplicate")
        e = self.mem.edit(d.memory_id, ["type"], type=FACT)
        self.assertEqual((e.state, e.duplicate_of), (DUP, c.memory_id))

    def test_edit_never_matches_itself_and_other_fields_do_not_compare(self):
        user = uid("u")
        a = self.mem.create(user, "Gus bakes sourdough bread").memory
        e = self.mem.edit(a.memory_id, ["text"], text="Gus bakes sourdough bread daily")
        self.assertEqual(e.state, ACTIVE)
        # two ACTIVE duplicates made with dedup OFF: only text, embedding or
        # type edits compare, and dedup_policy OFF skips it
        b = self.mem.create(user, "Gus bakes sourdough bread daily", policy=OFF).memory
        self.assertEqual(b.state, ACTIVE)
        self.assertEqual(self.mem.edit(b.memory_id, ["importance"], importance=0.2).state, ACTIVE)
        e = self.mem.edit(b.memory_id, ["text"], policy=OFF, text="gus bakes sourdough bread daily")
        self.assertEqual(e.state, ACTIVE)
        # threshold 1.0: identical word sets still match, others do not
        # (b, now more important, wins: a becomes its duplicate)
        e = self.mem.edit(b.memory_id, ["text"], jt=1.0, text="Gus bakes sourdough bread daily!")
        self.assertEqual(e.state, ACTIVE)
        self.assertEqual(self.mem.get(a.memory_id).duplicate_of, b.memory_id)
        c = self.mem.create(user, "Gus bakes rye bread", policy=OFF).memory
        e = self.mem.edit(c.memory_id, ["text"], jt=1.0, text="Gus bakes rye bread daily")
        self.assertEqual(e.state, ACTIVE, "jaccard below 1.0 is no duplicate at threshold 1.0")
        # a DUPLICATE memory's edit does not compare (it is not searched)
        e = self.mem.edit(a.memory_id, ["text"], text="Gus bakes rye bread daily")
        self.assertEqual((e.state, e.duplicate_of), (DUP, b.memory_id))

    def test_edit_bad_dedup_arguments(self):
        a = self.mem.create(uid("u"), "Hana plays the cello").memory
        self.assertInvalid(self.mem.edit, a.memory_id, ["text"], policy=mp.DEDUP_POLICY_MERGE,
                           text="x", field="dedup_policy")
        self.assertInvalid(self.mem.edit, a.memory_id, ["text"], policy=9, text="x",
                           field="dedup_policy")
        self.assertInvalid(self.mem.edit, a.memory_id, ["text"], jt=1.5, text="x",
                           field="jaccard_threshold")
        self.assertInvalid(self.mem.edit, a.memory_id, ["text"], ct=-0.1, text="x",
                           field="cosine_threshold")
        self.assertEqual(self.mem.get(a.memory_id).version, 1)

    # ---- DeduplicateMemories ----------------------------------------------------------

    def test_pass_marks_like_create_in_several_batches(self):
        user = uid("u")
        a0 = self.mem.create(user, "Finn likes jazz records", importance=0.5, policy=OFF).memory
        a1 = self.mem.create(user, "finn likes jazz records!", importance=0.5, policy=OFF).memory
        a2 = self.mem.create(user, "Finn likes JAZZ records", importance=0.9, policy=OFF).memory
        b = self.mem.create(user, "Finn plays chess on sundays", policy=OFF).memory
        c = self.mem.create(user, "Finn likes jazz records", type=FACT, policy=OFF).memory
        gone = self.mem.create(user, "Finn sold his piano", policy=OFF).memory
        self.mem.delete(gone.memory_id)
        fillers = [self.mem.create(user, "filler note %s" % uid("w").replace("-", ""),
                                   policy=OFF).memory for _ in range(40)]
        r = self.mem.dedup(user)
        # every ACTIVE memory once, oldest first; the DELETED one never
        self.assertEqual((r.examined, r.duplicates, r.superseded), (5 + 40, 1, 1))
        self.assertGreater(r.batches, 1, "40 fillers compare ~800 times: --dedup-batch 100")
        self.assertEqual((self.mem.get(a1.memory_id).state, self.mem.get(a1.memory_id).duplicate_of),
                         (DUP, a0.memory_id))
        self.assertEqual((self.mem.get(a0.memory_id).state, self.mem.get(a0.memory_id).duplicate_of),
                         (DUP, a2.memory_id))
        for m in [a2, b, c] + fillers:
            self.assertEqual(self.mem.get(m.memory_id).state, ACTIVE, m.text)
        # nothing left to do: the same counts minus the two marked
        r = self.mem.dedup(user)
        self.assertEqual((r.examined, r.duplicates, r.superseded), (43, 0, 0))
        # a lower threshold (a threshold change): the fillers share 2 of 4 words
        r = self.mem.dedup(user, jt=0.5)
        self.assertEqual((r.examined, r.duplicates, r.superseded), (43, 39, 0))
        st = self.mem.stats(user)
        self.assertEqual((st.active_memories, st.duplicate_memories, st.deleted_memories),
                         (4, 41, 1))

    def test_pass_by_cosine_and_edges(self):
        user = uid("u")
        a = self.mem.create(user, "one thing", embedding=[1.0, 0.0], policy=OFF).memory
        b = self.mem.create(user, "other stuff", embedding=[1.0, 0.001], policy=OFF).memory
        r = self.mem.dedup(user)
        self.assertEqual((r.examined, r.duplicates, r.batches), (2, 1, 1))
        self.assertEqual(self.mem.get(b.memory_id).duplicate_of, a.memory_id)
        r = self.mem.dedup(uid("nobody"))
        self.assertEqual((r.examined, r.duplicates, r.superseded, r.batches), (0, 0, 0, 1))
        self.assertInvalid(self.mem.dedup, "", field="user_id")
        self.assertInvalid(self.mem.dedup, user, jt=1.01, field="jaccard_threshold")
        self.assertInvalid(self.mem.dedup, user, ct=2.0, field="cosine_threshold")

    # ---- conflict_policy ------------------------------------------------------------

    def test_newer_wins_supersedes_the_opposite(self):
        user = uid("u")
        p = self.mem.create(user, "Gina likes green tea", importance=0.9).memory
        keep = self.mem.create(user, "Gina does not like green tea", conflict=KEEP_BOTH)
        self.assertEqual(list(keep.conflicts_with), [p.memory_id])
        self.assertEqual(list(keep.superseded_ids), [])
        self.assertEqual(self.mem.get(p.memory_id).state, ACTIVE)
        self.mem.delete(keep.memory.memory_id, purge=True)
        n = self.mem.create(user, "Gina doesn't like green tea", importance=0.1, conflict=NEWER_WINS)
        self.assertEqual((n.outcome, n.memory.state), (CREATED, ACTIVE))
        self.assertEqual(list(n.conflicts_with), [p.memory_id])
        self.assertEqual(list(n.superseded_ids), [p.memory_id])
        old = self.mem.get(p.memory_id)
        self.assertEqual((old.state, old.superseded_by, old.duplicate_of, old.version),
                         (SUPERSEDED_STATE, n.memory.memory_id, "", 2))
        # out of search and of the default listing; listed when asked for
        hits = self.mem.search(user, query="green tea").results
        self.assertEqual([h.memory.memory_id for h in hits], [n.memory.memory_id])
        self.assertEqual(self.mem.ids(user), [n.memory.memory_id])
        self.assertEqual(self.mem.ids(user, [SUPERSEDED_STATE]), [p.memory_id])
        self.assertEqual(sorted(self.mem.ids(user, [ACTIVE, SUPERSEDED_STATE])),
                         sorted([p.memory_id, n.memory.memory_id]))
        self.assertInvalid(self.mem.search, user, query="tea",
                           filter=mp.MemoryFilter(states=[SUPERSEDED_STATE]), field="filter.states[0]")
        # out of de-duplication: the same fact again is new, not its duplicate
        again = self.mem.create(user, "Gina likes green tea")
        self.assertEqual((again.outcome, list(again.conflicts_with)), (CREATED, [n.memory.memory_id]))
        st = self.mem.stats(user)
        self.assertEqual((st.active_memories, st.superseded_memories), (2, 1))
        self.assertEqual([(t.type, t.active, t.superseded) for t in st.by_type], [(PREF, 2, 1)])

    def test_newer_wins_through_a_duplicate_names_the_match(self):
        user = uid("u")
        q = self.mem.create(user, "Hal likes opera", importance=0.5).memory
        r = self.mem.create(user, "Hal dislikes opera").memory
        d = self.mem.create(user, "hal likes opera!", importance=0.5, conflict=NEWER_WINS)
        self.assertEqual((d.outcome, d.matched_memory_id), (DUPLICATE, q.memory_id))
        self.assertEqual(list(d.superseded_ids), [r.memory_id])
        self.assertEqual(self.mem.get(r.memory_id).superseded_by, q.memory_id)
        m = self.mem.create(user, "Hal likes opera", policy=mp.DEDUP_POLICY_MERGE, conflict=NEWER_WINS)
        self.assertEqual((m.outcome, list(m.superseded_ids)), (mp.DEDUP_OUTCOME_MERGED, []))

    def test_bad_conflict_policy(self):
        user = uid("u")
        self.assertInvalid(self.mem.create, user, "Ida likes rain", conflict=3, field="conflict_policy")
        self.assertInvalid(self.mem.create, user, "Ida likes rain", conflict=-1, field="conflict_policy")
        self.assertEqual(self.mem.ids(user), [])

    def test_newer_wins_without_dedup_is_refused(self):
        # Conflicts come from the dedup probe, which OFF skips: NEWER_WINS
        # would silently keep both.
        user = uid("u")
        self.assertInvalid(self.mem.create, user, "Ida likes rain", policy=OFF, conflict=NEWER_WINS,
                           field="conflict_policy")
        self.assertEqual(self.mem.ids(user), [])

    # ---- the CLI ------------------------------------------------------------------------

    def cli(self, *args):
        p = subprocess.run([ENGRAM_CLI, "--target", self.server.addr, "--json"] + list(args),
                           capture_output=True, timeout=30, env=clean_env())
        self.assertEqual(p.returncode, 0, "engram %s: %s" % (" ".join(args), p.stderr.decode()))
        return json.loads(p.stdout.decode().splitlines()[0])

    def test_cli(self):
        user = uid("u")
        a = self.cli("memory", "add", "--user", user, "--type", "preference", "--text",
                     "Jo likes snow", "--dedup", "off")["memory"]["memoryId"]
        b = self.cli("memory", "add", "--user", user, "--type", "preference", "--text",
                     "Jo likes snow", "--dedup", "off")["memory"]["memoryId"]
        r = self.cli("memory", "dedup", "--user", user)
        self.assertEqual((r["examined"], r["duplicates"]), ("2", "1"))
        self.assertEqual(self.cli("memory", "get", b)["duplicateOf"], a)
        c = self.cli("memory", "add", "--user", user, "--type", "preference", "--text",
                     "Jo likes rain")["memory"]["memoryId"]
        r = self.cli("memory", "update", c, "--text", "Jo likes snow", "--dedup", "off")
        self.assertEqual(r["state"], "MEMORY_STATE_ACTIVE")
        r = self.cli("memory", "update", c, "--text", "jo likes snow!")
        self.assertEqual((r["state"], r["duplicateOf"]), ("MEMORY_STATE_DUPLICATE", a))
        r = self.cli("memory", "add", "--user", user, "--type", "preference", "--text",
                     "Jo hates snow", "--conflict-policy", "newer_wins")
        self.assertEqual(r["supersededIds"], [a])
        self.assertEqual(self.cli("memory", "get", a)["state"], "MEMORY_STATE_SUPERSEDED")
        self.assertEqual(self.cli("user", "stats", user)["supersededMemories"], "1")


class QuotaConflictTest(HygieneServerTestCase):
    server_args = ("--memory-quota", "2")

    def test_newer_wins_at_the_quota_replaces(self):
        user = uid("u")
        p = self.mem.create(user, "Kim likes cats").memory
        self.mem.create(user, "Kim lives in Oslo")
        self.assertStatus(grpc.StatusCode.RESOURCE_EXHAUSTED, self.mem.create, user,
                          "Kim dislikes cats")
        n = self.mem.create(user, "Kim dislikes cats", conflict=NEWER_WINS)
        self.assertEqual(list(n.superseded_ids), [p.memory_id])
        self.assertEqual(self.mem.stats(user).active_memories, 2)


if __name__ == "__main__":
    import unittest
    unittest.main()
