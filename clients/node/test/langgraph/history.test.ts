// EngramChatMessageHistory against a real engramd: LangChain messages of
// every kind (tool calls and tool results included) round-trip through a
// session, a repeated add stores nothing twice, other clients' messages come
// back by role, and clear empties the history while its session id lives on.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { AIMessage, HumanMessage, SystemMessage, ToolMessage } from "@langchain/core/messages";
import { Code, EngramChatMessageHistory, EngramError, Role, type Engram } from "../../src/index.js";
import { Server, uid } from "../harness.js";

const AGENT = "agent-token-history";

describe("EngramChatMessageHistory", () => {
  let srv: Server;
  let e: Engram;

  before(async () => {
    srv = await new Server({ tokens: [["acme", "agent", AGENT]] }).start();
    e = srv.client({ token: AGENT });
  });
  after(async () => {
    e?.close();
    await srv?.close();
  });

  it("round-trips human, system, ai with tool calls, tool results and content blocks", async () => {
    const user = uid("u");
    const h = new EngramChatMessageHistory({ client: e, userId: user, agentId: "a1" });
    const sent = [
      new SystemMessage("You are terse."),
      new HumanMessage({ content: "weather in Paris?", id: "m-1" }),
      new AIMessage({
        content: "",
        tool_calls: [{ id: "call-1", name: "get_weather", args: { city: "Paris" }, type: "tool_call" }],
        response_metadata: { model: "fake" },
      }),
      new ToolMessage({ content: "18C, cloudy", tool_call_id: "call-1", name: "get_weather", artifact: { raw: 18 } }),
      new AIMessage({ content: [{ type: "text", text: "18C and cloudy." }] }),
    ];
    await h.addMessages(sent.slice(0, 2));
    await h.addMessage(sent[2]);
    await h.addMessages(sent.slice(3));

    const s = await e.sessions.get(h.sessionId);
    assert.equal(s.userId, user);
    assert.equal(s.agentId, "a1");
    const raw = [];
    for await (const m of e.messages.iterate({ sessionId: h.sessionId })) raw.push(m);
    assert.deepEqual(raw.map((m) => m.role), [Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.TOOL, Role.ASSISTANT]);
    assert.equal(raw[3].metadata.tool_call_id, "call-1");
    assert.equal(raw[1].clientMessageId, "m-1");

    // A new history over the same session (another process) reads them back.
    const got = await new EngramChatMessageHistory({ client: e, sessionId: h.sessionId }).getMessages();
    assert.deepEqual(got.map((m) => m.type), ["system", "human", "ai", "tool", "ai"]);
    assert.equal(got[0].content, "You are terse.");
    assert.equal(got[1].content, "weather in Paris?");
    assert.equal(got[1].id, "m-1");
    const ai = got[2] as AIMessage;
    assert.deepEqual(ai.tool_calls?.map((c) => [c.id, c.name, c.args]), [["call-1", "get_weather", { city: "Paris" }]]);
    assert.equal(ai.response_metadata.model, "fake");
    const tool = got[3] as ToolMessage;
    assert.ok(ToolMessage.isInstance(tool));
    assert.equal(tool.tool_call_id, "call-1");
    assert.equal(tool.name, "get_weather");
    assert.equal(tool.content, "18C, cloudy");
    assert.deepEqual(tool.artifact, { raw: 18 });
    assert.deepEqual(got[4].content, [{ type: "text", text: "18C and cloudy." }]);
  });

  it("adding a message with an id again (a retry) stores it once", async () => {
    const h = new EngramChatMessageHistory({ client: e, userId: uid("u") });
    const m = new HumanMessage({ content: "once", id: uid("msg") });
    await h.addMessages([m]);
    await h.addMessages([m]);
    const got = await h.getMessages();
    assert.equal(got.length, 1);
    assert.equal((await e.sessions.get(h.sessionId)).messageCount, 1n);
  });

  it("a given session id is created for the user once; other clients' messages come back by role", async () => {
    const user = uid("u");
    const sessionId = uid("s");
    const h = new EngramChatMessageHistory({ client: e, sessionId, userId: user });
    await h.addUserMessage("hi");
    await e.messages.append(sessionId, [{ role: Role.ASSISTANT, content: "hello from elsewhere" },
      { role: Role.TOOL, content: "bare tool output" }]);
    await h.addAIMessage("bye");
    const again = new EngramChatMessageHistory({ client: e, sessionId, userId: user });
    const got = await again.getMessages();
    assert.deepEqual(got.map((m) => [m.type, m.content]), [
      ["human", "hi"], ["ai", "hello from elsewhere"], ["tool", "bare tool output"], ["ai", "bye"]]);
    assert.equal((await e.sessions.get(sessionId)).userId, user);
  });

  it("clear erases the messages and keeps the session id, user and metadata", async () => {
    const user = uid("u");
    const h = new EngramChatMessageHistory({ client: e, userId: user, agentId: "a2", metadata: { app: "x" } });
    await h.addMessages([new HumanMessage("one"), new AIMessage("two")]);
    const id = h.sessionId;
    await h.clear();
    assert.equal(h.sessionId, id);
    assert.deepEqual(await h.getMessages(), []);
    // A history that knows only the session id clears too.
    await h.addUserMessage("three");
    const other = new EngramChatMessageHistory({ client: e, sessionId: id });
    assert.deepEqual((await other.getMessages()).map((m) => m.content), ["three"]);
    await other.clear();
    assert.deepEqual(await other.getMessages(), []);
    const s = await e.sessions.get(id);
    assert.equal(s.userId, user);
    assert.equal(s.agentId, "a2");
    assert.deepEqual({ ...s.metadata }, { app: "x" });
    assert.equal(s.messageCount, 0n);
  });

  it("clear on a history never written resolves, and the history works after it", async () => {
    const user = uid("u");
    const h = new EngramChatMessageHistory({ client: e, userId: user, agentId: "a3" });
    await h.clear();
    assert.deepEqual(await h.getMessages(), []);
    await h.addUserMessage("first");
    assert.deepEqual((await h.getMessages()).map((m) => m.content), ["first"]);
    assert.equal((await e.sessions.get(h.sessionId)).userId, user);
    // Without a user the session must exist: clear says so.
    const orphan = new EngramChatMessageHistory({ client: e, sessionId: uid("s") });
    await assert.rejects(orphan.clear(), (err: unknown) => err instanceof EngramError && err.code === Code.NotFound);
  });

  it("refuses a history with neither a session id nor a user", () => {
    assert.throws(() => new EngramChatMessageHistory({ client: e }), /sessionId, or a userId/);
  });
});
