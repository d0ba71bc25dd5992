// The SDK against one real engramd (tokens: an agent and an admin of one
// tenant): every namespace, page iteration, error details, int64 as bigint.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  Code,
  DedupOutcome,
  DedupPolicy,
  EngramError,
  MemoryState,
  MemoryType,
  Role,
  SessionState,
  type Engram,
} from "../src/index.js";
import { Server, uid } from "./harness.js";

const AGENT = "agent-token-node";
const ADMIN = "admin-token-node";

describe("engram-client against engramd", () => {
  let srv: Server;
  let e: Engram;
  let admin: Engram;

  before(async () => {
    srv = await new Server({ tokens: [["acme", "agent", AGENT], ["acme", "admin", ADMIN]] }).start();
    e = srv.client({ token: AGENT });
    admin = srv.client({ token: ADMIN });
  });
  after(async () => {
    e?.close();
    admin?.close();
    await srv?.close();
  });

  it("sessions: create, get, update, summary, iterate, end, delete", async () => {
    const user = uid("u");
    const s = await e.sessions.create({ userId: user, agentId: "a1", metadata: { k: "v" } });
    assert.equal(s.userId, user);
    assert.equal(s.state, SessionState.ACTIVE);
    assert.equal(typeof s.messageCount, "bigint");
    assert.ok(e.lsn > 0n, "a write reply's engram-lsn is remembered");
    const again = await e.sessions.create({ sessionId: s.sessionId, userId: user });
    assert.equal(again.sessionId, s.sessionId, "a create with session_id is a safe retry");
    assert.equal((await e.sessions.get(s.sessionId)).metadata.k, "v");
    const u = await e.sessions.update({ sessionId: s.sessionId, session: { agentId: "a2" },
      updateMask: { paths: ["agent_id"] } });
    assert.equal(u.agentId, "a2");
    await e.messages.append(s.sessionId, [{ role: Role.USER, content: "one" }, { role: Role.ASSISTANT, content: "two" }]);
    const sum = await e.sessions.updateSummary(s.sessionId, "they said one and two", 2n);
    assert.equal(sum.summaryThroughSeq, 2n);
    const more = [];
    for (let i = 0; i < 4; i++) more.push((await e.sessions.create({ userId: user })).sessionId);
    const seen = [];
    for await (const x of e.sessions.iterate({ userId: user, pageSize: 2 })) seen.push(x.sessionId);
    assert.deepEqual(new Set(seen), new Set([s.sessionId, ...more]), "iterate follows next_page_token over 3 pages");
    assert.equal(seen.length, 5);
    const ended = await e.sessions.end(s.sessionId, "done");
    assert.equal(ended.state, SessionState.ENDED);
    assert.equal(ended.endReason, "done");
    const d = await e.sessions.delete(s.sessionId);
    assert.equal(d.deletedMessages, 2n);
    await assert.rejects(e.sessions.get(s.sessionId), (err: EngramError) => err.code === Code.NotFound);
  });

  it("messages: append fills client_message_id, iterate pages, context, per-session handle", async () => {
    const s = await e.sessions.create({ userId: uid("u") });
    const r = await e.messages.append(s.sessionId, [{ role: Role.USER, content: "hello" },
      { role: Role.ASSISTANT, content: "hi", clientMessageId: "mine-1" }]);
    assert.deepEqual(r.messages.map((m) => m.seq), [1n, 2n]);
    assert.ok(r.messages[0].clientMessageId.length > 0, "the SDK gave the first message an id");
    assert.equal(r.messages[1].clientMessageId, "mine-1");
    // The same id again is not written twice: a retried append is harmless.
    const again = await e.messages.append(s.sessionId, [{ role: Role.ASSISTANT, content: "hi", clientMessageId: "mine-1" }]);
    assert.equal(again.messages[0].seq, 2n);
    const h = e.session(s.sessionId, { consistency: "session" });
    for (let i = 3; i <= 7; i++) await h.append([{ role: Role.USER, content: `m${i}` }]);
    assert.ok(h.lsn > 0n && h.lsn <= e.lsn, "the handle keeps its own LSN; the client's is the highest");
    const all = [];
    for await (const m of e.messages.iterate({ sessionId: s.sessionId, pageSize: 2 })) all.push(m.seq);
    assert.deepEqual(all, [1n, 2n, 3n, 4n, 5n, 6n, 7n]);
    const newest = [];
    for await (const m of h.messages({ newestFirst: true, pageSize: 3 })) newest.push(m.content);
    assert.equal(newest[0], "m7");
    const ctx = await h.context({ maxMessages: 3 });
    assert.deepEqual(ctx.messages.map((m) => m.content), ["m5", "m6", "m7"]);
    assert.equal(ctx.truncated, true);
    await h.updateSummary("greetings", 4n);
    const ctx2 = await e.messages.context(s.sessionId);
    assert.equal(ctx2.summary, "greetings");
    assert.deepEqual(ctx2.messages.map((m) => m.seq), [5n, 6n, 7n]);
  });

  it("memories: create, dedup, get, update, search, iterate, delete, deduplicate", async () => {
    const user = uid("u");
    const m = await e.memories.create({ memory: { userId: user, type: MemoryType.PREFERENCE,
      text: "prefers green tea in the morning", importance: 0.8, tags: ["drink"] } });
    assert.equal(m.outcome, DedupOutcome.CREATED);
    const id = m.memory!.memoryId;
    const dup = await e.memories.create({ memory: { userId: user, type: MemoryType.PREFERENCE,
      text: "prefers green tea in the morning" } });
    assert.notEqual(dup.outcome, DedupOutcome.CREATED, "a duplicate is recognised");
    assert.equal((await e.memories.get(id)).text, "prefers green tea in the morning");
    const up = await e.memories.update({ memory: { memoryId: id, importance: 0.9 }, updateMask: { paths: ["importance"] } });
    assert.equal(up.version, 2n);
    for (let i = 0; i < 4; i++) {
      await e.memories.create({ memory: { userId: user, type: MemoryType.FACT, text: `distinct fact number ${i} about zebras${i}` } });
    }
    const found = await e.memories.search({ userId: user, query: "green tea", topK: 3 });
    assert.equal(found.results[0].memory?.memoryId, id);
    const ids = [];
    for await (const x of e.memories.iterate({ userId: user, pageSize: 2 })) ids.push(x.memoryId);
    assert.equal(ids.length, 5, "4 facts + the preference (the duplicate is not ACTIVE)");
    const dd = await e.memories.deduplicate(user);
    assert.equal(typeof dd.examined, "bigint");
    const del = await e.memories.delete(id);
    assert.equal(del.memory?.state, MemoryState.DELETED);
    const purged = await e.memories.delete(id, { purge: true });
    assert.equal(purged.purged, true);
    await assert.rejects(e.memories.get(id), (err: EngramError) => err.isNotFound);
  });

  it("users: stats, export stream, delete", async () => {
    const user = uid("u");
    const s = await e.sessions.create({ userId: user });
    await e.messages.append(s.sessionId, [{ role: Role.USER, content: "x" }]);
    await e.memories.create({ memory: { userId: user, type: MemoryType.FACT, text: "owns a bicycle" } });
    const st = await e.users.stats(user);
    assert.equal(st.sessions, 1n);
    assert.equal(st.activeMemories, 1n);
    const kinds = [];
    for await (const item of e.users.export(user)) {
      kinds.push(item.item.case);
      assert.ok(item.lsn > 0n);
    }
    assert.deepEqual(kinds, ["session", "messages", "memory"]);
    const d = await e.users.delete(user);
    assert.deepEqual([d.deletedSessions, d.deletedMessages, d.deletedMemories], [1n, 1n, 1n]);
    assert.equal((await e.users.delete(user)).deletedSessions, 0n, "erasing again succeeds (so it is retried)");
  });

  it("admin: status, health, checksum, retention policy", async () => {
    const st = await admin.admin.status();
    assert.equal(st.role, "primary");
    assert.equal(typeof st.lastLsn, "bigint");
    assert.equal(await admin.admin.health(), true);
    const ck = await admin.admin.checksum();
    assert.match(ck.sha256, /^[0-9a-f]{64}$/);
    const p = await admin.admin.getRetentionPolicy();
    assert.ok(p.policy);
    await assert.rejects(e.admin.status(), (err: EngramError) => err.code === Code.PermissionDenied,
      "an agent token is refused");
  });

  it("errors: EngramError with code, message and the details engramd sends", async () => {
    const err = await e.memories.create({ memory: { userId: uid("u"), type: MemoryType.FACT, text: "" } })
      .then(() => assert.fail("accepted an empty text"), (x: unknown) => x);
    assert.ok(err instanceof EngramError);
    assert.equal(err.code, Code.InvalidArgument);
    assert.match(err.rawMessage, /^memory\.text: /);
    assert.equal(err.reason, "INVALID_ARGUMENT");
    assert.equal(err.domain, "engram.v1");
    assert.deepEqual(err.fieldViolations.map((v) => v.field), ["memory.text"]);
    assert.match(err.requestId, /^[0-9a-f]{1,32}$/);
    assert.equal(err.retryDelayMs, undefined, "no RetryInfo on a bad request");
  });

  it("int64 as bigint: values past 2^53 go out and come back exact", async () => {
    const big = 2n ** 53n + 1n; // not representable as a JS number
    assert.notEqual(BigInt(Number(big)), big);
    const m = await e.memories.create({ memory: { userId: uid("u"), type: MemoryType.FACT, text: "likes chess" } });
    const err = await e.memories.delete(m.memory!.memoryId, { expectedVersion: big })
      .then(() => assert.fail("deleted at a wrong version"), (x: EngramError) => x);
    assert.equal(err.code, Code.Aborted);
    assert.ok(err.rawMessage.includes(big.toString()), `the server read ${big} exactly: ${err.rawMessage}`);
    const s = await e.sessions.create({ userId: uid("u") });
    const huge = 2n ** 62n + 1n;
    const e2 = await e.messages.append(s.sessionId, [{ role: Role.USER, content: "x" }], { expectedLastSeq: huge })
      .then(() => assert.fail("appended at a wrong seq"), (x: EngramError) => x);
    assert.equal(e2.code, Code.FailedPrecondition);
    assert.ok(e2.rawMessage.includes(huge.toString()), e2.rawMessage);
  });
});

describe("replies past gRPC's usual 4 MiB", () => {
  let srv: Server;
  before(async () => {
    // The server's page budget raised past 4 MiB, so one page can exceed it.
    srv = await new Server({ args: ["--max-reply-bytes", String(16 * 1024 * 1024)] }).start();
  });
  after(async () => {
    await srv?.close();
  });

  it("a page of memories with embeddings is received whole (64 MiB limit), refused at 4 MiB", async () => {
    const e = srv.client();
    const small = srv.client({ maxReceiveBytes: 4 * 1024 * 1024 });
    try {
      const user = uid("u");
      const n = 300; // x 4096 float32 = 4.7 MiB of embeddings alone
      for (let i = 0; i < n; i++) {
        const embedding = Array.from({ length: 4096 }, (_, j) => Math.sin(i * 7.1 + j * 0.37) + (j === i ? 5 : 0));
        await e.memories.create({ memory: { userId: user, type: MemoryType.FACT, text: `fact ${i} ${uid("w")}`, embedding },
          dedupPolicy: DedupPolicy.OFF });
      }
      const req = { userId: user, pageSize: 1000, includeEmbeddings: true };
      const page = await e.memories.list(req);
      assert.equal(page.memories.length, n, "one page held them all");
      assert.equal(page.nextPageToken, "");
      assert.equal(page.memories[0].embedding.length, 4096);
      await assert.rejects(small.memories.list(req), (err: EngramError) => err.code === Code.ResourceExhausted,
        "a 4 MiB client limit refuses the same page");
    } finally {
      e.close();
      small.close();
    }
  });
});
