// Read-your-writes on a primary + replica pair, and retries: reads retried
// on UNAVAILABLE until they succeed, writes that are not idempotent never.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, Engram, EngramError, Role } from "../src/index.js";
import { Server, freePort, makeKeyring, uid } from "./harness.js";

const AGENT = "agent-token-r";
const REPL = "replica-token-r";
const TOKENS: [string, string, string][] = [["acme", "agent", AGENT], ["acme", "replica", REPL]];
const MAX_LSN_WAIT_MS = 300; // replicas answer UNAVAILABLE past this

function replicaArgs(primary: string, name: string): string[] {
  return ["--role", "replica", "--primary", primary, "--replica-token", REPL, "--replica-id", name,
    "--max-lsn-wait-ms", String(MAX_LSN_WAIT_MS)];
}

describe("read-your-writes through a replica", () => {
  let primary: Server;
  let replica: Server;
  const tmp = mkdtempSync(join(tmpdir(), "engram-node-keys-"));

  before(async () => {
    // Every node of a cluster shares the keyring.
    const keyring = makeKeyring(join(tmp, "keyring"));
    primary = await new Server({ tokens: TOKENS, keyring, port: await freePort() }).start();
    replica = await new Server({ tokens: TOKENS, keyring, args: replicaArgs(primary.addr, "r1") }).start();
  });
  after(async () => {
    await replica?.close();
    await primary?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  it("a write through the primary is read at once from the replica", async () => {
    const w = primary.client({ token: AGENT });
    const r = replica.client({ token: AGENT });
    try {
      for (let i = 0; i < 20; i++) {
        const s = await w.sessions.create({ userId: uid("u") });
        await w.messages.append(s.sessionId, [{ role: Role.USER, content: `m${i}` }]);
        // The replica read carries engram-min-lsn = the writer's LSN.
        r.observeLsn(w.lsn);
        const got = await r.messages.context(s.sessionId);
        assert.equal(got.messages[0]?.content, `m${i}`);
      }
    } finally {
      w.close();
      r.close();
    }
  });

  it("one client writing through the replica (forwarded) reads its writes there", async () => {
    const c = replica.client({ token: AGENT });
    try {
      const s = await c.sessions.create({ userId: uid("u") });
      const before = c.lsn;
      await c.messages.append(s.sessionId, [{ role: Role.USER, content: "via replica" }]);
      assert.ok(c.lsn > before, "the forwarded write's engram-lsn came back");
      assert.equal((await c.sessions.get(s.sessionId)).messageCount, 1n);
    } finally {
      c.close();
    }
  });

  it("a stream is not cut by the unary deadline (streams default to 1 h)", async () => {
    // An export on the replica that waits for an LSN no one writes stays
    // open MAX_LSN_WAIT_MS, then ends UNAVAILABLE: past the unary deadline.
    const c = replica.client({ token: AGENT, retries: 1, deadlineMs: 50 });
    const drain = async (it: AsyncIterable<unknown>) => {
      for await (const _ of it);
    };
    try {
      c.observeLsn(2n ** 60n);
      await assert.rejects(drain(c.users.export(uid("u"))), (e: EngramError) =>
        e.code === Code.Unavailable && /not applied/.test(e.rawMessage));
      await assert.rejects(drain(c.users.export(uid("u"), { deadlineMs: 50 })),
        (e: EngramError) => e.code === Code.DeadlineExceeded, "a per-call deadline still bounds it");
    } finally {
      c.close();
    }
    const s = replica.client({ token: AGENT, retries: 1, streamDeadlineMs: 50 });
    try {
      s.observeLsn(2n ** 60n);
      await assert.rejects(drain(s.users.export(uid("u"))), (e: EngramError) => e.code === Code.DeadlineExceeded,
        "streamDeadlineMs bounds it");
    } finally {
      s.close();
    }
  });

  it("retries cut by the deadline end DEADLINE_EXCEEDED carrying the server's last error; resetLsn() forgets the LSN", async () => {
    // An LSN the replica never reaches (as after a wipe or a restore from an
    // older backup): attempt 1 waits MAX_LSN_WAIT_MS on the server, RetryInfo
    // asks 1 s more, attempt 2 is cut by the deadline.
    const c = replica.client({ token: AGENT, deadlineMs: 1500,
      retries: { maxAttempts: 10, initialBackoffMs: 10, maxBackoffMs: 10 } });
    try {
      c.observeLsn(2n ** 60n);
      const err = await c.sessions.get("gone").then(() => assert.fail("read did not wait"), (x: EngramError) => x);
      assert.equal(err.code, Code.DeadlineExceeded, `${err.message}`);
      assert.equal(err.lastError?.code, Code.Unavailable);
      assert.match(err.lastError?.rawMessage ?? "", /not applied/);
      assert.match(err.message, /not applied/);
      c.resetLsn();
      assert.equal(c.lsn, 0n);
      await assert.rejects(c.sessions.get("gone"), (e: EngramError) => e.code === Code.NotFound);
    } finally {
      c.close();
    }
  });

  it("an LSN past 2^53 goes out exact in engram-min-lsn", async () => {
    const big = 2n ** 53n + 7n;
    const c = replica.client({ token: AGENT, retries: 1 });
    c.observeLsn(big);
    try {
      const err = await c.sessions.get("any").then(() => assert.fail("read did not wait"), (x: EngramError) => x);
      assert.equal(err.code, Code.Unavailable);
      assert.ok(err.rawMessage.includes(big.toString()), err.rawMessage);
    } finally {
      c.close();
    }
  });
});

describe("retries", () => {
  it("a read retries on UNAVAILABLE until the replica has the LSN", async () => {
    // A replica whose primary is not up yet: its reads wait for LSN 1 in vain.
    const tmp = mkdtempSync(join(tmpdir(), "engram-node-keys-"));
    const keyring = makeKeyring(join(tmp, "keyring"));
    const port = await freePort();
    const replica = await new Server({ tokens: TOKENS, keyring, args: replicaArgs(`127.0.0.1:${port}`, "r2") }).start();
    let primary: Server | undefined;
    let started: Promise<string> | undefined;
    const retried: number[] = [];
    const c = replica.client({
      token: AGENT, deadlineMs: 60_000,
      retries: {
        maxAttempts: 200, initialBackoffMs: 50, maxBackoffMs: 200,
        onRetry: ({ error, attempt }) => {
          assert.equal(error.code, Code.Unavailable);
          retried.push(attempt);
          // After the first refusal: start the primary and write LSN 1.
          started ??= (async () => {
            primary = await new Server({ tokens: TOKENS, keyring, port }).start();
            const w = primary.client({ token: AGENT });
            try {
              return (await w.sessions.create({ userId: "late" })).sessionId;
            } finally {
              w.close();
            }
          })();
        },
      },
    });
    try {
      c.observeLsn(1n);
      const err = await c.sessions.get("nonexistent").catch((x: EngramError) => x);
      // NOT_FOUND (not UNAVAILABLE): the read ran once the replica had LSN 1.
      assert.equal((err as EngramError).code, Code.NotFound);
      assert.ok(retried.length >= 1);
      const id = await started!;
      assert.equal((await c.sessions.get(id)).userId, "late");
    } finally {
      c.close();
      await replica.close();
      await primary?.close();
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it("UNAVAILABLE: reads and appends are retried, a memory create is not", async () => {
    const port = await freePort(); // nothing listens there
    const attempts: string[] = [];
    const c = new Engram({ target: `127.0.0.1:${port}`, deadlineMs: 10_000,
      retries: { maxAttempts: 3, initialBackoffMs: 10, maxBackoffMs: 20,
        onRetry: ({ method }) => attempts.push(method) } });
    try {
      await assert.rejects(c.sessions.get("s"), (e: EngramError) => e.code === Code.Unavailable);
      await assert.rejects(c.messages.append("s", [{ role: Role.USER, content: "x" }]),
        (e: EngramError) => e.code === Code.Unavailable);
      await assert.rejects(c.memories.create({ memory: { userId: "u", type: 5, text: "x" } }),
        (e: EngramError) => e.code === Code.Unavailable);
      assert.deepEqual(attempts, ["GetSession", "GetSession", "AppendMessages", "AppendMessages"]);
    } finally {
      c.close();
    }
  });

  it("RetryInfo's delay is a floor: every retry waits at least that long, with jitter above it", async () => {
    // A replica that follows nobody answers forwarded writes UNAVAILABLE
    // with RetryInfo (1 s): clients that all got it must not all come back
    // at exactly 1 s.
    const tmp = mkdtempSync(join(tmpdir(), "engram-node-keys-"));
    const keyring = makeKeyring(join(tmp, "keyring"));
    const lonely = await new Server({ tokens: TOKENS, keyring,
      args: replicaArgs(`127.0.0.1:${await freePort()}`, "lonely") }).start();
    const delays: number[] = [];
    let floor: number | undefined;
    const c = lonely.client({ token: AGENT, deadlineMs: 30_000,
      retries: { maxAttempts: 4, initialBackoffMs: 200, maxBackoffMs: 1000,
        onRetry: ({ delayMs, error }) => {
          floor = error.retryDelayMs;
          delays.push(delayMs);
        } } });
    try {
      await assert.rejects(c.messages.append("s", [{ role: Role.USER, content: "x" }]),
        (e: EngramError) => e.code === Code.Unavailable);
      assert.equal(delays.length, 3);
      assert.ok(floor !== undefined && floor > 0, "the replica sent RetryInfo");
      for (const d of delays) assert.ok(d >= floor!, `${d} ms is below RetryInfo's ${floor} ms`);
      assert.ok(new Set(delays).size > 1, `every retry waited the same ${delays[0]} ms`);
    } finally {
      c.close();
      await lonely.close();
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it("the deadline bounds all attempts together, before the attempts run out", async () => {
    const port = await freePort();
    let retries = 0;
    const c = new Engram({ target: `127.0.0.1:${port}`,
      retries: { maxAttempts: 1000, initialBackoffMs: 100, maxBackoffMs: 100, onRetry: () => retries++ } });
    try {
      const t0 = Date.now();
      await assert.rejects(c.sessions.get("s", { deadlineMs: 300 }), (e: EngramError) => e.code === Code.Unavailable);
      assert.ok(retries >= 1 && retries < 999, `${retries} retries`);
      assert.ok(Date.now() - t0 < 5000, "ended by the deadline, not the attempts");
    } finally {
      c.close();
    }
  });
});
