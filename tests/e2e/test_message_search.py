"""SessionService.SearchMessages through the real engramd: BM25 ranking
(rarer words and more occurrences rank higher, recency moves newer first),
every filter, user scope against the team view, pages without repeats,
every limit at its edge, embedding search, sessions excluded from search,
--index-messages=false, and no index key left (mdb_dump of message_terms
and message_index_stats) after DeleteSession, the raw-message retention
sweep and DeleteUser.

Every test searches for words of its own (random letters), so tests
sharing one server never see each other's messages, in the team view too."""
import random
import shutil
import string
import subprocess

import grpc

from harness import E2ETestCase, M, ServerTestCase, pb, uid, wait_past
from test_memories import dump_data_dbs
from test_retention import set_policy
from engram.v1 import user_pb2 as upb  # noqa: E402
from engram.v1 import user_pb2_grpc as upbg  # noqa: E402

WAIT = 60.0  # bound on a sweep becoming visible (ASan is slow)


def word():
    """A word no other test uses (letters only: one token)."""
    return "".join(random.choice(string.ascii_lowercase) for _ in range(12))


def search(client, **kw):
    return client.call("SearchMessages", pb.SearchMessagesRequest(**kw))


def kw_only(**kw):
    """Keyword weight only: BM25 alone decides (ties: newest first)."""
    return dict(weights=pb.MessageSearchWeights(keyword=1), **kw)


def create(client, user, **kw):
    return client.call("CreateSession", pb.CreateSessionRequest(
        session=pb.Session(user_id=user, **kw))).session_id


def hits(resp):
    return [(r.session_id, r.seq) for r in resp.results]


class SearchTest(ServerTestCase):
    def test_found_right_after_the_append_with_its_fields(self):
        user, w = uid("u"), word()
        sid = create(self.client, user)
        a = self.client.append(sid, M("nothing here"), M("a %s in the hand" % w, pb.ROLE_ASSISTANT,
                                                         metadata={"k": "v"}))
        r = search(self.client, user_id=user, query=w)
        self.assertEqual(hits(r), [(sid, 2)])
        res = r.results[0]
        self.assertEqual((res.user_id, res.message.content, res.message.role, dict(res.message.metadata)),
                         (user, "a %s in the hand" % w, pb.ROLE_ASSISTANT, {"k": "v"}))
        self.assertEqual(res.message.create_time, a.messages[1].create_time)
        self.assertEqual(res.keyword_score, 1.0)
        self.assertGreater(res.bm25, 0)
        self.assertGreater(res.recency_score, 0.99)
        self.assertAlmostEqual(res.score, 0.7 * res.keyword_score + 0.3 * res.recency_score, places=5)
        self.assertFalse(r.truncated)
        self.assertEqual(r.next_page_token, "")

    def test_rarer_word_ranks_higher(self):
        user, common, rare = uid("u"), word(), word()
        sid = create(self.client, user)
        self.client.append(sid, *[M("%s filler%d" % (common, i)) for i in range(6)])
        self.client.append(sid, M("%s filler9" % rare))
        r = search(self.client, user_id=user, query="%s %s" % (common, rare), **kw_only())
        self.assertEqual(len(r.results), 7)
        self.assertEqual(r.results[0].seq, 7)
        self.assertEqual(r.results[0].keyword_score, 1.0)
        self.assertLess(r.results[1].bm25, r.results[0].bm25)

    def test_more_occurrences_rank_higher(self):
        user, w = uid("u"), word()
        sid = create(self.client, user)
        self.client.append(sid, M("%s %s %s fig" % (w, w, w)), M("%s fig grape lime" % w))
        r = search(self.client, user_id=user, query=w, **kw_only())
        self.assertEqual([x.seq for x in r.results], [1, 2])
        self.assertGreater(r.results[0].bm25, r.results[1].bm25)

    def test_recency_moves_newer_first(self):
        user, w = uid("u"), word()
        sid = create(self.client, user)
        old = self.client.append(sid, M("%s %s %s" % (w, w, w))).messages[0]
        wait_past(old.create_time, 2.0)
        self.client.append(sid, M("%s and more words" % w))
        self.assertEqual([x.seq for x in search(self.client, user_id=user, query=w, **kw_only()).results],
                         [1, 2])
        r = search(self.client, user_id=user, query=w, recency_half_life_seconds=1,
                   weights=pb.MessageSearchWeights(keyword=0.2, recency=1))
        self.assertEqual([x.seq for x in r.results], [2, 1])
        self.assertGreater(r.results[0].recency_score, r.results[1].recency_score)

    def test_filters(self):
        user, w = uid("u"), word()
        a = create(self.client, user, agent_id="alpha")
        b = create(self.client, user, agent_id="beta")
        self.client.append(a, M("%s one" % w), M("%s two" % w, pb.ROLE_ASSISTANT))
        mid = self.client.append(b, M("%s three" % w)).messages[0]
        wait_past(mid.create_time, 0.01)
        self.client.append(b, M("%s four" % w, pb.ROLE_TOOL))
        self.client.end(b)

        def got(**kw):
            return sorted(hits(search(self.client, user_id=user, query=w, **kw)))

        self.assertEqual(got(), sorted([(a, 1), (a, 2), (b, 1), (b, 2)]))
        self.assertEqual(got(session_ids=[b]), [(b, 1), (b, 2)])
        self.assertEqual(got(session_ids=[b, a, b]), got())
        self.assertEqual(got(agent_id="alpha"), [(a, 1), (a, 2)])
        self.assertEqual(got(roles=[pb.ROLE_ASSISTANT, pb.ROLE_TOOL]), sorted([(a, 2), (b, 2)]))
        self.assertEqual(got(session_states=[pb.SESSION_STATE_ENDED]), [(b, 1), (b, 2)])
        self.assertEqual(got(session_states=[pb.SESSION_STATE_ACTIVE]), [(a, 1), (a, 2)])
        self.assertEqual(got(create_time_from=mid.create_time), [(b, 1), (b, 2)])
        self.assertEqual(got(create_time_to=mid.create_time), [(a, 1), (a, 2)])
        self.assertEqual(got(create_time_from=mid.create_time, session_ids=[a]), [])
        self.assertInvalid(search, self.client, user_id=user, query=w, roles=[9], field="roles[0]")
        self.assertInvalid(search, self.client, user_id=user, query=w, session_states=[0],
                           field="session_states[0]")
        self.assertInvalid(search, self.client, user_id=user, query=w, create_time_from=mid.create_time,
                           create_time_to=mid.create_time, field="create_time_to")

    def test_user_scope_and_team_view(self):
        u1, u2, w = uid("u"), uid("u"), word()
        s1, s2 = create(self.client, u1), create(self.client, u2)
        self.client.append(s1, M("%s mine" % w))
        self.client.append(s2, M("%s theirs" % w))
        self.assertEqual(hits(search(self.client, user_id=u1, query=w)), [(s1, 1)])
        self.assertEqual(hits(search(self.client, user_id=u2, query=w)), [(s2, 1)])
        team = search(self.client, query=w)
        self.assertEqual(sorted(hits(team)), sorted([(s1, 1), (s2, 1)]))
        self.assertEqual(sorted(r.user_id for r in team.results), sorted([u1, u2]))

    def test_pages_without_repeats(self):
        user, w = uid("u"), word()
        sid = create(self.client, user)
        self.client.append(sid, *[M("%s %s" % (w, " x" * i)) for i in range(7)])
        seen, token, pages = [], "", 0
        while True:
            r = search(self.client, user_id=user, query=w, top_k=3, page_token=token)
            seen += hits(r)
            pages += 1
            token = r.next_page_token
            if not token:
                break
            # a message appended between pages does not shift them
            self.client.append(sid, M("%s late" % w))
        self.assertEqual(pages, 3)
        self.assertEqual(sorted(seen), [(sid, i) for i in range(1, 8)])
        first = search(self.client, user_id=user, query=w, top_k=3)
        self.assertInvalid(search, self.client, user_id=user, query=w + " other", top_k=3,
                           page_token=first.next_page_token, field="page_token")
        self.assertInvalid(search, self.client, user_id=user, query=w, top_k=3,
                           page_token="garbage", field="page_token")

    def test_limits_at_their_edges(self):
        user, w = uid("u"), word()
        sid = create(self.client, user)
        self.client.append(sid, M(w))
        ok = dict(user_id=user, query=w)
        self.assertEqual(len(search(self.client, top_k=100, **ok).results), 1)
        self.assertInvalid(search, self.client, top_k=101, field="top_k", **ok)
        self.assertInvalid(search, self.client, top_k=-1, field="top_k", **ok)
        ids = [sid] + [uid("s") for _ in range(99)]
        self.assertEqual(len(search(self.client, session_ids=ids, **ok).results), 1)
        self.assertInvalid(search, self.client, session_ids=ids + [uid("s")], field="session_ids", **ok)
        self.assertInvalid(search, self.client, session_ids=["bad id"], field="session_ids[0]", **ok)
        st = [pb.SESSION_STATE_ACTIVE] * 8
        self.assertEqual(len(search(self.client, session_states=st, **ok).results), 1)
        self.assertInvalid(search, self.client, session_states=st + [pb.SESSION_STATE_ACTIVE],
                           field="session_states", **ok)
        q = w + " " + "z" * (4096 - len(w) - 1)
        self.assertEqual(len(q), 4096)
        self.assertEqual(len(search(self.client, user_id=user, query=q).results), 1)
        self.assertInvalid(search, self.client, user_id=user, query=q + "z", field="query")
        self.assertInvalid(search, self.client, user_id=user, field="query")
        self.assertInvalid(search, self.client, user_id=user, query="", embedding=[], field="query")
        words = [w] + [word() for _ in range(63)]
        self.assertEqual(len(search(self.client, user_id=user, query=" ".join(words)).results), 1)
        self.assertInvalid(search, self.client, user_id=user, query=" ".join(words + [word()]),
                           field="query")
        self.assertInvalid(search, self.client, user_id="bad id", query=w, field="user_id")
        self.assertInvalid(search, self.client, language="not a tag", query=w, field="language")
        self.assertInvalid(search, self.client, query=w, min_score=1.5, field="min_score")
        self.assertInvalid(search, self.client, query=w, weights=pb.MessageSearchWeights(),
                           field="weights")
        self.assertInvalid(search, self.client, query=w, weights=pb.MessageSearchWeights(keyword=-1),
                           field="weights.keyword")

    def test_only_stop_words(self):
        user, w = uid("u"), word()
        sid = create(self.client, user)
        self.client.append(sid, M("the %s" % w, embedding=[1, 0]))
        with self.assertRaises(grpc.RpcError) as cm:
            search(self.client, user_id=user, query="the and of it")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("query", cm.exception.details())
        self.assertIn("no searchable words", cm.exception.details())
        self.assertInvalid(search, self.client, query="the , .", field="query")
        # with an embedding the search goes on, by the embedding alone
        self.assertEqual(hits(search(self.client, user_id=user, query="the", embedding=[1, 0])),
                         [(sid, 1)])

    def test_min_score(self):
        user, w = uid("u"), word()
        sid = create(self.client, user)
        self.client.append(sid, M("%s %s %s" % (w, w, w)), M("%s and many other words here" % w))
        r = search(self.client, user_id=user, query=w, min_score=0.99, **kw_only())
        self.assertEqual(hits(r), [(sid, 1)])

    def test_embedding_search(self):
        user, w = uid("u"), word()
        sid = create(self.client, user)
        self.client.append(sid, M("%s first" % w, embedding=[1, 0, 0]),
                           M("%s second" % w, embedding=[0, 1, 0]), M("%s third" % w),
                           M("other dims", embedding=[1, 0]))
        r = search(self.client, user_id=user, embedding=[0, 1, 0])
        self.assertEqual([x.seq for x in r.results[:2]], [2, 1])
        self.assertEqual(len(r.results), 2)  # seq 3 has none, seq 4 another dimension
        self.assertAlmostEqual(r.results[0].vector_score, 1.0, places=5)
        self.assertEqual(list(r.results[0].message.embedding), [0, 1, 0])
        both = search(self.client, user_id=user, query=w, embedding=[1, 0, 0])
        self.assertEqual(both.results[0].seq, 1)
        self.assertEqual(sorted(x.seq for x in both.results), [1, 2, 3])
        bad = pb.AppendMessagesRequest(session_id=sid, messages=[M("x", embedding=[0, 0])])
        self.assertInvalid(self.client.call, "AppendMessages", bad, field="messages[0].embedding")
        self.assertInvalid(search, self.client, user_id=user, embedding=[float("nan")],
                           field="embedding")

    def test_embedding_magnitudes(self):
        """Embeddings at the edges of what is accepted get their exact cosine;
        past the edges (values above 1e15, a norm below 1e-15, where float32
        sums of squares overflow or underflow and scores went NaN or 0, as a
        hostile client found) they are refused, naming why."""
        user, w = uid("u"), word()
        sid = create(self.client, user)
        self.client.append(sid, M(w + " big", embedding=[1e15, 1e15]), M(w + " unit", embedding=[1, 0]),
                           M(w + " tiny", embedding=[1e-15, 1e-15]))
        r = search(self.client, user_id=user, embedding=[1e15, 1e15])
        scores = {x.seq: x.vector_score for x in r.results}
        self.assertAlmostEqual(scores[1], 1.0, places=5)
        self.assertAlmostEqual(scores[3], 1.0, places=5)
        self.assertAlmostEqual(scores[2], 0.7071, places=3)
        self.assertEqual(sorted(x.seq for x in r.results[:2]), [1, 3])
        for emb, why in (([1.01e15, 0], "magnitude above"), ([3e38, 3e38], "magnitude above"),
                         ([1e-16, 1e-16], "norm below"), ([0, 0], "all zeros")):
            bad = pb.AppendMessagesRequest(session_id=sid, messages=[M("x", embedding=emb)])
            with self.assertRaises(grpc.RpcError) as cm:
                self.client.call("AppendMessages", bad)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn(why, cm.exception.details())
            self.assertIn("messages[0].embedding", cm.exception.details())

    def test_excluded_session_never_found(self):
        user, w = uid("u"), word()
        hidden = create(self.client, user, exclude_from_search=True, language="de")
        s = self.client.get(hidden)
        self.assertEqual((s.exclude_from_search, s.language), (True, "de"))
        self.client.append(hidden, M(w, embedding=[1, 0]))
        self.assertEqual(hits(search(self.client, user_id=user, query=w)), [])
        self.assertEqual(hits(search(self.client, user_id=user, embedding=[1, 0])), [])
        self.assertEqual(hits(search(self.client, query=w, session_ids=[hidden])), [])
        self.assertInvalid(create, self.client, user, language="x" * 36, field="session.language")

    def test_fork_copies_are_found(self):
        user, w = uid("u"), word()
        sid = create(self.client, user)
        self.client.append(sid, M(w), M("after"))
        fork = self.client.call("ForkSession", pb.ForkSessionRequest(session_id=sid, through_seq=1))
        self.assertEqual(sorted(hits(search(self.client, user_id=user, query=w))),
                         sorted([(sid, 1), (fork.session_id, 1)]))


def terms_naming(data_dir, *names):
    """Keys of message_terms holding any of names, and message_index_stats
    keys holding any (ids are length-prefixed in both)."""
    dbs = dump_data_dbs(data_dir)
    out = []
    for db in ("message_terms", "message_index_stats"):
        for k, _ in dbs.get(db, []):
            if any(bytes([len(n)]) + n.encode() in k for n in names):
                out.append((db, k))
    return out


class RawKeysTest(E2ETestCase):
    """No index key outlives its message (LMDB read with mdb_dump)."""

    def setUp(self):
        if not shutil.which("mdb_dump"):
            self.fail("mdb_dump (lmdb-utils) not installed")
        self.srv = self.start_server("--sweep-interval-ms", "50", "--erase-batch", "10")
        self.c = self.srv.client()

    def indexed(self, user, sid):
        w = word()
        self.c.append(sid, *[M("%s number %d" % (w, i)) for i in range(5)])
        self.assertEqual(len(search(self.c, user_id=user, query=w).results), 5)
        keys = terms_naming(self.srv.data_dir, sid)
        self.assertEqual(len([k for k in keys if k[0] == "message_terms"]), 15)  # 3 words x 5
        self.assertTrue(terms_naming(self.srv.data_dir, user))
        return w

    def test_delete_session(self):
        user = uid("u")
        keep = create(self.c, user)
        self.c.append(keep, M("kept"))
        sid = create(self.c, user)
        w = self.indexed(user, sid)
        self.c.delete(sid)
        self.assertEqual(terms_naming(self.srv.data_dir, sid), [])
        self.assertEqual(hits(search(self.c, user_id=user, query=w)), [])
        self.assertEqual(hits(search(self.c, user_id=user, query="kept")), [(keep, 1)])

    def test_delete_user(self):
        user = uid("u")
        sids = [create(self.c, user) for _ in range(3)]
        ws = [self.indexed(user, sid) for sid in sids]
        users = upbg.UserServiceStub(self.c.channel)
        users.DeleteUser(upb.DeleteUserRequest(user_id=user), timeout=WAIT)
        self.assertEqual(terms_naming(self.srv.data_dir, user, *sids), [])
        self.assertEqual(hits(search(self.c, query=" ".join(ws))), [])

    def test_raw_message_retention_sweep(self):
        user = uid("u")
        sid = create(self.c, user)
        w = self.indexed(user, sid)
        last = self.c.append(sid, M("fresh")).messages[0]
        wait_past(last.create_time, 2.0)
        set_policy(self.c, raw_message_retention=1)
        self.wait_until(lambda: self.c.all_messages(sid) == [], WAIT, "the messages swept")
        self.assertEqual(terms_naming(self.srv.data_dir, sid, user), [])
        self.assertEqual(hits(search(self.c, user_id=user, query=w)), [])


class BoundsTest(E2ETestCase):
    """--max-search-postings and --max-reply-bytes at their edges."""

    def test_max_search_postings(self):
        srv = self.start_server("--max-search-postings", "1000", "--max-append-messages", "1000")
        c = srv.client()
        user, w, v = uid("u"), word(), word()
        sid = create(c, user)
        c.append(sid, *[M("%s %s" % (w, v)) for _ in range(1000)])
        r = search(c, user_id=user, query=w, top_k=1)
        self.assertFalse(r.truncated)
        # two words: 500 postings each
        self.assertTrue(search(c, user_id=user, query="%s %s" % (w, v), top_k=1).truncated)
        c.append(sid, M("%s newest" % w))
        r = search(c, user_id=user, query=w, top_k=1, **kw_only())
        self.assertTrue(r.truncated)
        # read newest first: the newest is in, the oldest is not
        self.assertEqual(r.results[0].seq, 1001)
        self.assertNotIn((sid, 1), hits(search(c, user_id=user, query=w, session_ids=[sid], top_k=100,
                                               page_token="")))

    def test_team_view_newest_first_across_users_under_the_cap(self):
        # the reviewer's case: user "a..." holds 1100 old postings of w, user
        # "z..." (after it in id order) one newer; the cap is 1000
        srv = self.start_server("--max-search-postings", "1000", "--max-append-messages", "1000")
        c = srv.client()
        old_user, new_user, w = "a" + uid("u"), "z" + uid("u"), word()
        old = create(c, old_user)
        c.append(old, *[M("%s filler" % w) for _ in range(1000)])
        last = c.append(old, *[M("%s filler" % w) for _ in range(100)]).messages[-1]
        wait_past(last.create_time, 0.01)
        new = create(c, new_user)
        c.append(new, M("%s filler" % w))
        r = search(c, query=w, top_k=100)
        self.assertTrue(r.truncated)
        self.assertEqual(hits(r)[0], (new, 1))
        self.assertEqual(r.results[0].user_id, new_user)
        # session_ids: only that session's user is read, so nothing is cut
        r = search(c, query=w, session_ids=[new])
        self.assertEqual((hits(r), r.truncated), ([(new, 1)], False))
        r = search(c, query=w, session_ids=[old], top_k=100)
        self.assertTrue(r.truncated)
        self.assertEqual({h[0] for h in hits(r)}, {old})
        self.assertEqual(len(r.results), 100)
        # a user filter on the team view's words: that user only
        r = search(c, query=w, user_id=new_user)
        self.assertEqual((hits(r), r.truncated), ([(new, 1)], False))

    def test_old_session_of_a_busy_user_under_the_cap(self):
        # session_ids narrow the read to those sessions' message times: an
        # old session's one message is found although its user has 1100
        # newer postings of the word (round-2 review: the user's newest
        # postings used the budget up and the reply came back empty)
        srv = self.start_server("--max-search-postings", "1000", "--max-append-messages", "1000")
        c = srv.client()
        user, w = uid("u"), word()
        old = create(c, user)
        first = c.append(old, M("%s in the old one" % w)).messages[0]
        wait_past(first.create_time, 0.01)
        busy = create(c, user)
        c.append(busy, *[M("%s filler" % w) for _ in range(1000)])
        c.append(busy, *[M("%s filler" % w) for _ in range(100)])
        self.assertTrue(search(c, query=w, user_id=user, top_k=100).truncated)
        r = search(c, query=w, session_ids=[old])
        self.assertEqual((hits(r), r.truncated), ([(old, 1)], False))
        r = search(c, query=w, session_ids=[old, busy], top_k=5)
        self.assertTrue(r.truncated)  # both spans: the busy one's newest come first

    def test_reply_bytes(self):
        srv = self.start_server("--max-reply-bytes", "1048576")
        c = srv.client()
        user, w = uid("u"), word()
        sid = create(c, user)
        c.append(sid, *[M("%s %d %s" % (w, i, "y" * 60000)) for i in range(20)])
        first = search(c, user_id=user, query=w, top_k=20)
        self.assertLess(len(first.results), 20)
        self.assertTrue(first.next_page_token)
        rest = search(c, user_id=user, query=w, top_k=20, page_token=first.next_page_token)
        self.assertEqual(sorted(hits(first) + hits(rest)), [(sid, i) for i in range(1, 21)])


class OrphanTest(E2ETestCase):
    def test_posting_without_its_message_is_skipped(self):
        """A posting whose message is gone (written here by mdb_load with the
        server stopped) is skipped by both paths and logged, never
        DATA_LOSS for the whole search."""
        if not shutil.which("mdb_load"):
            self.fail("mdb_load (lmdb-utils) not installed")
        srv = self.start_server()
        c = srv.client()
        user, w = uid("u"), word()
        sid = create(c, user)
        c.append(sid, M("%s here" % w, embedding=[1, 0]))
        keys = [k for db, k in terms_naming(srv.data_dir, sid) if db == "message_terms"]
        self.assertEqual(len(keys), 2)  # w, "here"
        postings = dict(dump_data_dbs(srv.data_dir)["message_terms"])
        srv.stop()
        # each posting of message 1 again, for a message 99 that never was
        rows = "".join(" %s\n %s\n" % ((k[:-8] + (99).to_bytes(8, "big")).hex(), postings[k].hex())
                       for k in keys)
        dump = "VERSION=3\nformat=bytevalue\ntype=btree\nHEADER=END\n%sDATA=END\n" % rows
        subprocess.run(["mdb_load", "-s", "message_terms", srv.data_dir], input=dump.encode(),
                       check=True, timeout=60)
        srv.start()
        c = srv.client()
        self.assertEqual(hits(search(c, user_id=user, query=w)), [(sid, 1)])
        self.assertEqual(hits(search(c, query=w)), [(sid, 1)])
        self.assertEqual(hits(search(c, user_id=user, query=w, embedding=[1, 0])), [(sid, 1)])
        self.assertIn("skipped 1 index postings whose message is gone", srv.log_text())


class IndexOffTest(E2ETestCase):
    def test_index_messages_false(self):
        srv = self.start_server("--index-messages=false")
        c = srv.client()
        user, w = uid("u"), word()
        sid = create(c, user)
        c.append(sid, M(w, embedding=[1, 0]))
        self.assertEqual(hits(search(c, user_id=user, query=w)), [])
        # the embedding is stored all the same
        self.assertEqual(hits(search(c, user_id=user, embedding=[1, 0])), [(sid, 1)])
        self.assertInvalid(search, c, query=w, top_k=101, field="top_k")


if __name__ == "__main__":
    import unittest
    unittest.main()
