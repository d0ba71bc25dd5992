// A real StateGraph on EngramSaver, against engramd and through a replica:
// run to interruptBefore, resume in a NEW node process (same thread) through
// review's interrupt() to the end, then replay from an earlier checkpoint
// (getStateHistory -> invoke with its config), which forks the thread.
// Through the replica every put is forwarded to the primary and every read
// waits for the client's LSN: the saver reads its own writes there.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import type { RunnableConfig } from "@langchain/core/runnables";
import { Command } from "@langchain/langgraph";
import { emptyCheckpoint, uuid6 } from "@langchain/langgraph-checkpoint";
import { Engram, EngramSaver } from "../../src/index.js";
import { Server, freePort, makeKeyring, uid } from "../harness.js";
import { buildGraph, type ResumeReport } from "./graph.js";

const AGENT = "agent-token-lg";
const REPL = "replica-token-lg";
const TOKENS: [string, string, string][] = [["acme", "agent", AGENT], ["acme", "replica", REPL]];
const CHILD = join(dirname(fileURLToPath(import.meta.url)), "resume_child.js");
const CHILD_TIMEOUT_MS = 60_000;
const RYW_ROUNDS = 20;

async function resumeInNewProcess(target: string, userId: string, threadId: string, minLsn: bigint): Promise<ResumeReport> {
  const { stdout } = await promisify(execFile)(process.execPath, [CHILD], {
    timeout: CHILD_TIMEOUT_MS,
    env: { ...process.env, LG_TARGET: target, LG_TOKEN: AGENT, LG_USER: userId, LG_THREAD: threadId,
      LG_MIN_LSN: minLsn.toString() },
  });
  return JSON.parse(stdout.trim().split("\n").at(-1) ?? "") as ResumeReport;
}

/** Interrupt, resume in another process, replay: against the node at target. */
async function interruptResumeReplay(target: string): Promise<void> {
  const client = new Engram({ target, token: AGENT });
  const userId = uid("u");
  const threadId = uid("thread");
  const config = { configurable: { thread_id: threadId } };
  try {
    const graph = buildGraph(new EngramSaver({ client, userId }));
    // 1. Runs "plan", pauses before "act".
    assert.deepEqual((await graph.invoke({ steps: [] }, config)).steps, ["plan"]);
    assert.deepEqual((await graph.getState(config)).next, ["act"]);

    // 2. Another process picks the thread up from the stored checkpoints.
    const report = await resumeInNewProcess(target, userId, threadId, client.lsn);
    assert.deepEqual(report.nextAtStart, ["act"]);
    assert.equal(report.interruptValue, "approve?");
    assert.deepEqual(report.finalSteps, ["plan", "act", "review:yes"]);
    client.observeLsn(BigInt(report.lsn));
    const done = await graph.getState(config);
    assert.deepEqual(done.values.steps, ["plan", "act", "review:yes"]);
    assert.deepEqual(done.next, []);

    // 3. Replay from the checkpoint paused before "act": it runs again from
    // there, forking the thread, and pauses at review's interrupt().
    const history = [];
    for await (const s of graph.getStateHistory(config)) history.push(s);
    const beforeAct = history.find((s) => s.next.length === 1 && s.next[0] === "act");
    assert.ok(beforeAct, `a checkpoint paused before "act" in ${history.length} checkpoints`);
    const forkPoint = beforeAct.config.configurable?.checkpoint_id;
    assert.ok(forkPoint);
    assert.deepEqual((await graph.invoke(null, beforeAct.config)).steps, ["plan", "act"]);
    const paused = await graph.getState(config);
    assert.deepEqual(paused.next, ["review"]);
    assert.equal(paused.tasks.flatMap((t) => t.interrupts)[0]?.value, "approve?");
    const final = await graph.invoke(new Command({ resume: "no" }), config);
    assert.deepEqual(final.steps, ["plan", "act", "review:no"]);

    // The new branch descends from the fork point, the old one is kept.
    const ancestors = new Set<string>();
    for (let s = await graph.getState(config); s.parentConfig; s = await graph.getState(s.parentConfig)) {
      ancestors.add(String(s.parentConfig.configurable?.checkpoint_id));
    }
    assert.ok(ancestors.has(String(forkPoint)), "the replayed run's checkpoints descend from the fork point");
    const all = [];
    for await (const s of graph.getStateHistory(config)) all.push(s.values.steps?.join(","));
    assert.ok(all.includes("plan,act,review:yes") && all.includes("plan,act,review:no"), all.join(" | "));
  } finally {
    client.close();
  }
}

describe("a StateGraph on EngramSaver", () => {
  let primary: Server;
  let replica: Server;
  const tmp = mkdtempSync(join(tmpdir(), "engram-node-lg-"));

  before(async () => {
    // Every node of a cluster shares the keyring.
    const keyring = makeKeyring(join(tmp, "keyring"));
    primary = await new Server({ tokens: TOKENS, keyring, port: await freePort() }).start();
    replica = await new Server({ tokens: TOKENS, keyring,
      args: ["--role", "replica", "--primary", primary.addr, "--replica-token", REPL, "--replica-id", "lg1"] }).start();
  });
  after(async () => {
    await replica?.close();
    await primary?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  it("interrupts, resumes in a new process and replays, on the primary", () => interruptResumeReplay(primary.addr));

  it("interrupts, resumes in a new process and replays, through a replica", () => interruptResumeReplay(replica.addr));

  it("reads its own puts and writes at once through a replica", async () => {
    const client = new Engram({ target: replica.addr, token: AGENT });
    try {
      const saver = new EngramSaver({ client, userId: uid("u") });
      const threadId = uid("thread");
      let config: RunnableConfig = { configurable: { thread_id: threadId, checkpoint_ns: "" } };
      for (let i = 0; i < RYW_ROUNDS; i++) {
        const checkpoint = { ...emptyCheckpoint(), id: uuid6(-1), channel_values: { n: i } };
        config = await saver.put(config, checkpoint, { source: "loop", step: i, parents: {} }, {});
        await saver.putWrites(config, [["n", i + 1]], `task-${i}`);
        const got = await saver.getTuple({ configurable: { thread_id: threadId } });
        assert.equal(got?.checkpoint.id, checkpoint.id, `round ${i}: the newest checkpoint is the one just put`);
        assert.deepEqual(got?.pendingWrites, [[`task-${i}`, "n", i + 1]]);
      }
    } finally {
      client.close();
    }
  });
});
