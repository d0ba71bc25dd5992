"""AsyncEngram (grpc.aio): the same namespaces, awaited; async iterators."""
import asyncio

import engram

from _support import ADMIN, AGENT, REPL, TOKENS, SdkTestCase, free_port, uid


class AsyncTest(SdkTestCase):
    server_args = ("--max-lsn-wait-ms", "5000")

    def run_async(self, coro):
        return asyncio.run(asyncio.wait_for(coro, 60))

    def test_namespaces_iterators_errors(self):
        async def flow():
            async with engram.AsyncEngram(self.server.addr, token=AGENT) as c:
                user = uid("u")
                sids = [(await c.sessions.create_session(session={"user_id": user})).session_id
                        for _ in range(3)]
                got = [s.session_id async for s in c.sessions.list_sessions(user_id=user,
                                                                            page_size=2)]
                self.assertEqual(sorted(got), sorted(sids))
                s = c.session(sids[0])
                r = await s.append({"role": "ROLE_USER", "content": "a"},
                                   {"role": "ROLE_USER", "content": "b"})
                self.assertTrue(all(m.client_message_id for m in r.messages))
                self.assertGreater(c.lsn, 0)
                self.assertEqual([m.seq async for m in s.messages(page_size=1)], [1, 2])
                self.assertEqual(len((await s.context()).messages), 2)
                m = await c.memories.create_memory(memory={
                    "user_id": user, "type": "MEMORY_TYPE_FACT", "text": "async works"})
                res = await c.memories.search_memories(user_id=user, query="async")
                self.assertEqual(res.results[0].memory.memory_id, m.memory.memory_id)
                self.assertEqual((await c.users.get_user_stats(user_id=user)).sessions, 3)
                items = [x.WhichOneof("item") async for x in c.users.export_user(user_id=user)]
                self.assertIn("memory", items)
                with self.assertRaises(engram.NotFoundError):
                    await c.sessions.get_session(session_id=uid("missing"))
                with self.assertRaises(engram.InvalidArgumentError):
                    await c.sessions.create_session(session={})
                with self.assertRaises(engram.DeadlineExceededError):
                    await c.sessions.get_session(session_id=sids[0], timeout=0.5,
                                                 metadata=(("engram-min-lsn", "1000000000"),))
            async with engram.AsyncEngram(self.server.addr, token=ADMIN) as a:
                self.assertEqual((await a.admin.status()).role, "primary")
                self.assertEqual((await a.admin.health()).status, 1)

        self.run_async(flow())

    def test_unavailable_retried_for_appends_only(self):
        """A replica that follows nobody answers forwarded writes
        UNAVAILABLE: the append is retried, CreateMemory is not."""
        lonely = self.start_server("--role", "replica", "--primary",
                                   "127.0.0.1:%d" % free_port(), "--replica-token", REPL,
                                   tokens=TOKENS, keyring=self.server.keyring_path)
        seen = []

        async def flow():
            async with engram.AsyncEngram(lonely.addr, token=AGENT, retries=2,
                                          backoff=(0.01, 0.02),
                                          on_retry=lambda e, n, d: seen.append(n)) as c:
                with self.assertRaises(engram.UnavailableError):
                    await c.messages.append_messages(session_id="s", messages=[{"content": "x"}])
                self.assertEqual(seen, [1, 2])
                with self.assertRaises(engram.UnavailableError):
                    await c.memories.create_memory(memory={"user_id": "u", "text": "t",
                                                           "type": "MEMORY_TYPE_FACT"})
                self.assertEqual(seen, [1, 2])

        self.run_async(flow())
