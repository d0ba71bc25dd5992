// LangGraph checkpointers side by side, in ONE run on the same graph:
// EngramSaver on a real engramd (durable commits, encryption and auth on) and
// the official SqliteSaver (a file DB, its defaults: WAL mode). A step is one
// turn of the graph (graph.invoke with a new human message): three nodes, so
// four checkpoints and their writes, on a thread whose messages list grows by
// three messages a turn. Measured: steps/s and the p99 of a step's latency,
// for one client running turn after turn (threads of BENCH_THREAD_STEPS
// turns, one after another), and for BENCH_THREADS threads at once
// (concurrent invokes in this process on one saver).
//
// usage: node bench/langgraph/bench.mjs <engramd> [results.json]
// env: BENCH_STEPS (one client, default 200), BENCH_THREADS (default 32),
//      BENCH_THREAD_STEPS (turns per thread, default 20),
//      BENCH_WARMUP (untimed turns first, default 10), TMPDIR (the data dirs).
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { AIMessage, HumanMessage, ToolMessage } from "@langchain/core/messages";
import { Annotation, END, MessagesAnnotation, START, StateGraph } from "@langchain/langgraph";
import { JsonPlusSerializer } from "@langchain/langgraph-checkpoint";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, "..", "..");
// The SDK and its test harness (compiled by clients/node's npm ci).
const { Engram, EngramSaver } = await import(join(REPO, "clients/node/dist/src/index.js"));
const { Server, makeKeyring } = await import(join(REPO, "clients/node/dist/test/harness.js"));

const num = (name, dflt) => {
  const v = Number(process.env[name] ?? dflt);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer, got ${process.env[name]}`);
  return v;
};
const STEPS = num("BENCH_STEPS", 200);
const THREADS = num("BENCH_THREADS", 32);
const THREAD_STEPS = num("BENCH_THREAD_STEPS", 20);
const WARMUP = num("BENCH_WARMUP", 10);
const TOKEN = "bench-langgraph-token";

/** agent -> tool -> summarize: an AI message with a tool call, its result, a running count. */
function buildGraph(checkpointer) {
  const State = Annotation.Root({
    ...MessagesAnnotation.spec,
    turns: Annotation({ reducer: (a, b) => a + b, default: () => 0 }),
  });
  return new StateGraph(State)
    .addNode("agent", (s) => {
      const id = `call-${s.messages.length}`;
      return { messages: [new AIMessage({ content: "", tool_calls: [{ id, name: "lookup", args: { q: s.messages.at(-1).content } }] })] };
    })
    .addNode("tool", (s) => ({
      messages: [new ToolMessage({ content: `result for ${s.messages.at(-1).tool_calls[0].args.q}`, tool_call_id: s.messages.at(-1).tool_calls[0].id })],
    }))
    .addNode("summarize", () => ({ turns: 1 }))
    .addEdge(START, "agent")
    .addEdge("agent", "tool")
    .addEdge("tool", "summarize")
    .addEdge("summarize", END)
    .compile({ checkpointer });
}

/** Runs `turns` turns on one thread; the latency of each (ms) goes into lat. */
async function runThread(graph, threadId, turns, lat) {
  const config = { configurable: { thread_id: threadId } };
  for (let i = 0; i < turns; i++) {
    const t0 = process.hrtime.bigint();
    await graph.invoke({ messages: [new HumanMessage(`question ${i} ${randomBytes(16).toString("hex")}`)] }, config);
    lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
}

function stats(lat, seconds) {
  const sorted = [...lat].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
  return {
    steps: lat.length,
    seconds: +seconds.toFixed(3),
    steps_per_s: +(lat.length / seconds).toFixed(1),
    p50_ms: +at(0.5).toFixed(2),
    p99_ms: +at(0.99).toFixed(2),
  };
}

/** One thread turn after turn, then THREADS threads at once: the two rows of one saver. */
async function measure(name, checkpointer) {
  const graph = buildGraph(checkpointer);
  const run = randomBytes(4).toString("hex");
  const rows = [];
  {
    // Turn after turn, on threads of THREAD_STEPS turns one after another,
    // so the states are as large as in the concurrent run. The time is the
    // timed turns' (the warm-up left out).
    const lat = [];
    await runThread(graph, `${name}-${run}-warm`, WARMUP, []);
    for (let t = 0; lat.length < STEPS; t++) {
      await runThread(graph, `${name}-${run}-solo${t}`, Math.min(THREAD_STEPS, STEPS - lat.length), lat);
    }
    rows.push({ saver: name, threads: 1, ...stats(lat, lat.reduce((a, b) => a + b, 0) / 1000) });
  }
  {
    const lat = [];
    const t0 = performance.now();
    await Promise.all(Array.from({ length: THREADS }, (_, i) => runThread(graph, `${name}-${run}-t${i}`, THREAD_STEPS, lat)));
    rows.push({ saver: name, threads: THREADS, ...stats(lat, (performance.now() - t0) / 1000) });
  }
  // The graph's own check that every turn was saved: the last thread's state.
  const last = await graph.getState({ configurable: { thread_id: `${name}-${run}-t${THREADS - 1}` } });
  if (last.values.turns !== THREAD_STEPS || last.values.messages.length !== 3 * THREAD_STEPS) {
    throw new Error(`${name}: a thread ended with ${last.values.turns} turns and ${last.values.messages.length} messages`);
  }
  return rows;
}

const engramd = process.argv[2];
if (!engramd) {
  console.error("usage: node bench/langgraph/bench.mjs <engramd> [results.json]");
  process.exit(2);
}
const out = resolve(process.argv[3] ?? join(REPO, "bench/results/langgraph.json"));
process.env.ENGRAMD = resolve(engramd);
const tmp = mkdtempSync(join(tmpdir(), "engram-bench-lg-"));
let server;
let client;
try {
  // engramd as the other benchmarks run it: durable commits (the default),
  // field encryption (a keyring), auth (a token), default workers.
  server = await new Server({ tokens: [["bench", "agent", TOKEN]], keyring: makeKeyring(join(tmp, "keyring")) }).start();
  client = new Engram({ target: server.addr, token: TOKEN });
  const serde = new JsonPlusSerializer();
  const sqlite = SqliteSaver.fromConnString(join(tmp, "checkpoints.sqlite"));
  const rows = [
    ...(await measure("engram", new EngramSaver({ client, userId: `bench-${randomBytes(4).toString("hex")}`, serde }))),
    ...(await measure("sqlite", sqlite)),
  ];
  const journal = sqlite.db.pragma("journal_mode", { simple: true });
  const result = {
    what: "LangGraph steps (graph.invoke of a 3-node graph: 4 checkpoints + writes) per second and latency, EngramSaver vs SqliteSaver",
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model ?? "", mem_gib: +(totalmem() / 2 ** 30).toFixed(1), node: process.version },
    settings: { steps_one_client: STEPS, warmup: WARMUP, threads: THREADS, steps_per_thread: THREAD_STEPS, sqlite_journal_mode: journal, engramd: "durable commits, encryption, auth" },
    rows,
  };
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`| saver | threads | steps | steps/s | p50 ms | p99 ms |\n| --- | ---: | ---: | ---: | ---: | ---: |`);
  for (const r of rows) console.log(`| ${r.saver} | ${r.threads} | ${r.steps} | ${r.steps_per_s} | ${r.p50_ms} | ${r.p99_ms} |`);
  console.log(`wrote ${out}`);
  sqlite.db.close();
} finally {
  client?.close();
  await server?.close();
  rmSync(tmp, { recursive: true, force: true });
}
