// A separate node process that picks up a thread paused by
// stategraph.test.ts: a new client and EngramSaver, the same graph; it runs
// the thread past "act" to review's interrupt(), resumes that with "yes",
// and prints a ResumeReport. Settings come from LG_* variables; LG_MIN_LSN
// is the parent's LSN, so a replica answers only once it has the parent's
// checkpoints.
import { Command } from "@langchain/langgraph";
import { Engram, EngramSaver } from "../../src/index.js";
import { buildGraph, type ResumeReport } from "./graph.js";

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`resume_child: ${name} is not set`);
  return v;
}

const client = new Engram({ target: env("LG_TARGET"), token: env("LG_TOKEN") });
try {
  client.observeLsn(BigInt(env("LG_MIN_LSN")));
  const graph = buildGraph(new EngramSaver({ client, userId: env("LG_USER") }));
  const config = { configurable: { thread_id: env("LG_THREAD") } };
  const nextAtStart = [...(await graph.getState(config)).next];
  await graph.invoke(null, config);
  const paused = await graph.getState(config);
  const final = await graph.invoke(new Command({ resume: "yes" }), config);
  const report: ResumeReport = {
    nextAtStart,
    interruptValue: paused.tasks.flatMap((t) => t.interrupts)[0]?.value,
    finalSteps: final.steps,
    lsn: client.lsn.toString(),
  };
  console.log(JSON.stringify(report));
} finally {
  client.close();
}
