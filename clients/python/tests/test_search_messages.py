"""messages.search_messages against a real engramd: a message is found the
moment its append returns, the result carries its session, seq and scores,
paging with next_page_token, and bad input as the SDK's exceptions."""
import engram

from _support import SdkTestCase, uid


class SearchMessagesTest(SdkTestCase):
    def test_found_after_append_with_scores(self):
        c = self.client()
        user = uid("u")
        s = c.session(c.sessions.create_session(session={"user_id": user}).session_id)
        s.append({"role": "ROLE_USER", "content": "the kettle whistles at dawn"},
                 {"role": "ROLE_ASSISTANT", "content": "nothing to see here"})
        r = c.messages.search_messages(user_id=user, query="kettle")
        self.assertEqual([(x.session_id, x.seq, x.user_id) for x in r.results],
                         [(s.session_id, 1, user)])
        hit = r.results[0]
        self.assertEqual(hit.message.content, "the kettle whistles at dawn")
        self.assertEqual(hit.keyword_score, 1.0)
        self.assertGreater(hit.bm25, 0)
        self.assertGreater(hit.score, 0)

    def test_pages(self):
        c = self.client()
        user = uid("u")
        s = c.session(c.sessions.create_session(session={"user_id": user}).session_id)
        s.append(*[{"role": "ROLE_USER", "content": "lantern %d" % i} for i in range(5)])
        seen, token = [], ""
        while True:
            r = c.messages.search_messages(user_id=user, query="lantern", top_k=2, page_token=token)
            seen += [x.seq for x in r.results]
            token = r.next_page_token
            if not token:
                break
        self.assertEqual(sorted(seen), [1, 2, 3, 4, 5])

    def test_bad_input(self):
        c = self.client()
        with self.assertRaises(engram.InvalidArgumentError) as e:
            c.messages.search_messages(user_id=uid("u"))
        self.assertIn("query", str(e.exception))
