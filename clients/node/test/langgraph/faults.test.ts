// The LangGraph adapters when engramd dies mid-call, and when a caller
// retries: a server killed (SIGKILL) and restarted on its address under
// calls in flight, whose own retries then finish them; the same call made
// again (what a retry is when the first reply was lost, or when the caller
// retries after an error) stores nothing twice; a clear cut between its
// delete and its create is finished by calling it again.
import assert from "node:assert/strict";
import { once } from "node:events";
import { ConnectError } from "@connectrpc/connect";
import { after, before, describe, it } from "node:test";
import { AIMessage, HumanMessage } from "@langchain/core/messages";
import { emptyCheckpoint, uuid6 } from "@langchain/langgraph-checkpoint";
import { Code, EngramChatMessageHistory, EngramError, EngramSaver, type Engram } from "../../src/index.js";
import { Server, delay, freePort, uid } from "../harness.js";

const AGENT = "agent-token-faults";
// Retries enough to outlast a restart (each waits at most MAX_BACKOFF_MS).
const RETRIES = { maxAttempts: 100, initialBackoffMs: 20, maxBackoffMs: 200 };
const DEADLINE_MS = 30_000;

describe("LangGraph adapters under faults", () => {
  let srv: Server;
  let e: Engram;

  before(async () => {
    srv = await new Server({ tokens: [["acme", "agent", AGENT]], port: await freePort() }).start();
    e = srv.client({ token: AGENT, retries: RETRIES, deadlineMs: DEADLINE_MS });
  });
  after(async () => {
    e?.close();
    await srv?.close();
  });

  /** SIGKILL by PID; resolves once engramd is gone. */
  async function kill(): Promise<void> {
    const p = srv.proc!;
    srv.proc = undefined;
    const exited = once(p, "exit");
    p.kill("SIGKILL");
    await exited;
  }

  it("puts in flight while engramd is killed and restarted complete once", async () => {
    const saver = new EngramSaver({ client: e, userId: uid("u") });
    const threadId = uid("thread");
    const history = new EngramChatMessageHistory({ client: e, userId: saver.userId });
    await history.addMessages([new HumanMessage("before")]);
    await kill();
    let retried = 0;
    const counting = srv.client({
      token: AGENT, deadlineMs: DEADLINE_MS, retries: { ...RETRIES, onRetry: () => void retried++ },
    });
    const countingHistory = new EngramChatMessageHistory({ client: counting, sessionId: history.sessionId });
    const checkpoint = { ...emptyCheckpoint(), id: uuid6(-1), channel_values: { v: 1 }, channel_versions: { v: 1 } };
    const meta = { source: "loop" as const, step: 0, parents: {} };
    const inFlight = Promise.all([
      new EngramSaver({ client: counting, userId: saver.userId })
        .put({ configurable: { thread_id: threadId } }, checkpoint, meta, { v: 1 })
        .then((config) => new EngramSaver({ client: counting, userId: saver.userId })
          .putWrites(config, [["v", 2], ["w", 3]], "task-1")),
      countingHistory.addMessages([new AIMessage("during"), new HumanMessage("during, too")]),
    ]);
    // Restart once the calls have failed at least once against the dead address.
    while (retried < 2) await delay(10);
    await srv.start();
    try {
      await inFlight;
    } finally {
      counting.close();
    }
    const tuples = [];
    for await (const t of saver.list({ configurable: { thread_id: threadId } })) tuples.push(t);
    assert.equal(tuples.length, 1);
    assert.deepEqual(tuples[0].pendingWrites, [["task-1", "v", 2], ["task-1", "w", 3]]);
    assert.deepEqual((await history.getMessages()).map((m) => m.content), ["before", "during", "during, too"]);
  });

  it("the same writes again (a retry whose first reply was lost) store nothing twice", async () => {
    const saver = new EngramSaver({ client: e, userId: uid("u") });
    const config = await saver.put({ configurable: { thread_id: uid("thread") } },
      { ...emptyCheckpoint(), id: uuid6(-1) }, { source: "loop", step: 0, parents: {} }, {});
    await saver.putWrites(config, [["a", 1]], "task-1");
    await saver.putWrites(config, [["a", 1]], "task-1");
    assert.deepEqual((await saver.getTuple(config))?.pendingWrites, [["task-1", "a", 1]]);

    // Messages without ids: the history gives each one, so adding the same
    // messages again (the caller's retry) stores them once.
    const history = new EngramChatMessageHistory({ client: e, userId: saver.userId });
    const messages = [new HumanMessage("no id"), new AIMessage("no id either")];
    await history.addMessages(messages);
    await history.addMessages(messages);
    assert.deepEqual((await history.getMessages()).map((m) => m.content), ["no id", "no id either"]);
    assert.ok(messages.every((m) => typeof m.id === "string" && m.id !== ""));
  });

  it("a clear cut between its delete and its create is finished by calling it again", async () => {
    const sessionId = uid("s");
    const user = uid("u");
    await new EngramChatMessageHistory({ client: e, sessionId, userId: user, agentId: "a1", metadata: { app: "x" } })
      .addMessages([new HumanMessage("one")]);
    // A history that knows only the session id (it reads the owner back), on
    // a client whose first CreateSession after the delete fails.
    const c = srv.client({ token: AGENT });
    const create = c.sessions.create.bind(c.sessions);
    let failNext = true;
    c.sessions.create = (session, opts) => {
      if (failNext) {
        failNext = false;
        return Promise.reject(new EngramError(new ConnectError("connection lost (injected)", Code.Unavailable)));
      }
      return create(session, opts);
    };
    try {
      const h = new EngramChatMessageHistory({ client: c, sessionId });
      await assert.rejects(h.clear(), /injected/);
      await h.clear();
      assert.deepEqual(await h.getMessages(), []);
      const s = await e.sessions.get(sessionId);
      assert.deepEqual([s.userId, s.agentId, { ...s.metadata }], [user, "a1", { app: "x" }]);
    } finally {
      c.close();
    }
  });
});
