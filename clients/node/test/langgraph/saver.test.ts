// EngramSaver's own behaviour on a real engramd, beyond LangGraph's suite:
// a checkpoint stores only the channels its step wrote, and loading one
// finds every other channel's value at the ancestor that set its version —
// many pages up the thread, on its own branch only, and where an ancestor's
// id does not sort before its child's.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { RunnableConfig } from "@langchain/core/runnables";
import { emptyCheckpoint, uuid6, type ChannelVersions } from "@langchain/langgraph-checkpoint";
import { Engram, EngramSaver } from "../../src/index.js";
import { Server, uid } from "../harness.js";

const TOKEN = "agent-token-saver";
// More than one page of ListCheckpoints (100) above the newest checkpoint.
const CHAIN = 130;

describe("EngramSaver", () => {
  let server: Server;
  let client: Engram;

  before(async () => {
    server = await new Server({ tokens: [["acme", "agent", TOKEN]] }).start();
    client = server.client({ token: TOKEN });
  });
  after(async () => {
    client?.close();
    await server?.close();
  });

  const meta = (step: number) => ({ source: "loop" as const, step, parents: {} });

  /** Puts a checkpoint holding values at versions, of which the step wrote newVersions. */
  async function put(saver: EngramSaver, parent: RunnableConfig, id: string, values: Record<string, unknown>,
    versions: ChannelVersions, newVersions: ChannelVersions, step = 0): Promise<RunnableConfig> {
    const checkpoint = { ...emptyCheckpoint(), id, channel_values: values, channel_versions: versions };
    return saver.put(parent, checkpoint, meta(step), newVersions);
  }

  it("stores only the channels a step wrote", async () => {
    const saver = new EngramSaver({ client, userId: uid("u") });
    const threadId = uid("thread");
    const c0 = await put(saver, { configurable: { thread_id: threadId } }, uuid6(-1), { a: 1, b: 1 }, { a: 1, b: 1 },
      { a: 1, b: 1 });
    await put(saver, c0, uuid6(-1), { a: 1, b: 2 }, { a: 1, b: 2 }, { b: 2 });
    const stored = await client.checkpoints.get({ userId: saver.userId, threadId });
    const raw = await saver.serde.loadsTyped(stored.checkpointType, stored.checkpoint);
    assert.deepEqual(raw.channel_values, { b: 2 });
    assert.deepEqual(JSON.parse(stored.newVersionsJson), { b: 2 });
    assert.deepEqual((await saver.getTuple({ configurable: { thread_id: threadId } }))?.checkpoint.channel_values,
      { a: 1, b: 2 });
  });

  it("reads a channel set at the root of a long thread", async () => {
    const saver = new EngramSaver({ client, userId: uid("u") });
    let config: RunnableConfig = { configurable: { thread_id: uid("thread") } };
    config = await put(saver, config, uuid6(-1), { root: "r", n: 0 }, { root: 1, n: 1 }, { root: 1, n: 1 });
    for (let i = 1; i <= CHAIN; i++) {
      config = await put(saver, config, uuid6(-1), { root: "r", n: i }, { root: 1, n: i + 1 }, { n: i + 1 }, i);
    }
    const thread = { configurable: { thread_id: config.configurable?.thread_id } };
    const latest = await saver.getTuple(thread);
    assert.deepEqual(latest?.checkpoint.channel_values, { root: "r", n: CHAIN });
    // list() shares the ancestors it read between its checkpoints' walks.
    let n = CHAIN;
    for await (const t of saver.list(thread)) assert.deepEqual(t.checkpoint.channel_values, { root: "r", n: n-- });
    assert.equal(n, -1);
  });

  it("reads a forked branch's values from its own ancestors, not its sibling's", async () => {
    const saver = new EngramSaver({ client, userId: uid("u") });
    const threadId = uid("thread");
    const base = await put(saver, { configurable: { thread_id: threadId } }, uuid6(-1), { x: "base", y: "base" },
      { x: 1, y: 1 }, { x: 1, y: 1 });
    const left = await put(saver, base, uuid6(-1), { x: "left", y: "base" }, { x: 2, y: 1 }, { x: 2 }, 1);
    // The right branch is newer and writes the same version of x.
    const right = await put(saver, base, uuid6(-1), { x: "right", y: "base" }, { x: 2, y: 1 }, { x: 2 }, 1);
    const leftChild = await put(saver, left, uuid6(-1), { x: "left", y: "left" }, { x: 2, y: 2 }, { y: 2 }, 2);
    assert.deepEqual((await saver.getTuple(leftChild))?.checkpoint.channel_values, { x: "left", y: "left" });
    assert.deepEqual((await saver.getTuple(right))?.checkpoint.channel_values, { x: "right", y: "base" });
  });

  it("ends the walk at a cycle of parent ids", { timeout: 30_000 }, async () => {
    const saver = new EngramSaver({ client, userId: uid("u") });
    const threadId = uid("thread");
    const [a, b] = [uuid6(-1), uuid6(-1)];
    // a's parent is b and b's is a; neither wrote v.
    await put(saver, { configurable: { thread_id: threadId, checkpoint_id: b } }, a, {}, { v: 1 }, {});
    const bConfig = await put(saver, { configurable: { thread_id: threadId, checkpoint_id: a } }, b, {}, { v: 1 }, {});
    assert.deepEqual((await saver.getTuple(bConfig))?.checkpoint.channel_values, {});
  });

  it("reads an ancestor whose id sorts after its child's", async () => {
    const saver = new EngramSaver({ client, userId: uid("u") });
    const threadId = uid("thread");
    const childId = uuid6(-1);
    const parent = await put(saver, { configurable: { thread_id: threadId } }, uuid6(-1), { v: "parent" }, { v: 1 },
      { v: 1 });
    const child = await put(saver, parent, childId, { v: "parent" }, { v: 1 }, {}, 1);
    assert.deepEqual((await saver.getTuple(child))?.checkpoint.channel_values, { v: "parent" });
  });

  it("lists only config's checkpoint_id when the config names one, as MemorySaver does", async () => {
    const saver = new EngramSaver({ client, userId: uid("u") });
    const threadId = uid("thread");
    const c0 = await put(saver, { configurable: { thread_id: threadId } }, uuid6(-1), { v: 0 }, { v: 1 }, { v: 1 });
    const c1 = await put(saver, c0, uuid6(-1), { v: 1 }, { v: 2 }, { v: 2 }, 1);
    await put(saver, c1, uuid6(-1), { v: 2 }, { v: 3 }, { v: 3 }, 2);
    const ids = async (config: RunnableConfig, options?: Parameters<EngramSaver["list"]>[1]) => {
      const out = [];
      for await (const t of saver.list(config, options)) out.push([t.config.configurable?.checkpoint_id, t.checkpoint.channel_values]);
      return out;
    };
    const id1 = c1.configurable?.checkpoint_id;
    // Thread and namespace given (one GetCheckpoint), and either left out (a scan).
    assert.deepEqual(await ids(c1), [[id1, { v: 1 }]]);
    assert.deepEqual(await ids({ configurable: { thread_id: threadId, checkpoint_id: id1 } }), [[id1, { v: 1 }]]);
    assert.deepEqual(await ids({ configurable: { checkpoint_id: id1 } }), [[id1, { v: 1 }]]);
    // before, filter and limit still apply to it.
    assert.deepEqual(await ids(c1, { before: c1 }), []);
    assert.deepEqual(await ids(c1, { filter: { step: 1 } }), [[id1, { v: 1 }]]);
    assert.deepEqual(await ids(c1, { filter: { step: 2 } }), []);
    assert.deepEqual(await ids({ configurable: { checkpoint_id: id1 } }, { filter: { step: 2 } }), []);
    assert.deepEqual(await ids(c1, { limit: 0 }), []);
    // An id the thread does not have, or another namespace: nothing.
    assert.deepEqual(await ids({ configurable: { thread_id: threadId, checkpoint_ns: "", checkpoint_id: uuid6(-1) } }), []);
    assert.deepEqual(await ids({ configurable: { ...c1.configurable, checkpoint_ns: "sub" } }), []);
  });

  it("opens a client from options and closes only that one", async () => {
    const own = new EngramSaver({ client: { target: server.addr, token: TOKEN }, userId: uid("u") });
    assert.notEqual(own.client, client);
    assert.equal(await own.getTuple({ configurable: { thread_id: uid("thread") } }), undefined);
    own.close();
    const shared = new EngramSaver({ client, userId: uid("u") });
    shared.close();
    assert.equal(await shared.getTuple({ configurable: { thread_id: uid("thread") } }), undefined);
  });
});
