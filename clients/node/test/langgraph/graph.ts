// The StateGraph of the LangGraph tests, built the same way by the test and
// by the process that resumes it: plan -> act -> review, paused before "act"
// (interruptBefore) and inside "review" (interrupt(), resumed with a
// Command).
import { Annotation, END, START, StateGraph, interrupt } from "@langchain/langgraph";
import type { BaseCheckpointSaver } from "@langchain/langgraph-checkpoint";

const State = Annotation.Root({
  steps: Annotation<string[]>({ reducer: (a, b) => a.concat(b), default: () => [] }),
});

export function buildGraph(checkpointer: BaseCheckpointSaver) {
  return new StateGraph(State)
    .addNode("plan", () => ({ steps: ["plan"] }))
    .addNode("act", () => ({ steps: ["act"] }))
    .addNode("review", () => ({ steps: [`review:${interrupt<string, string>("approve?")}`] }))
    .addEdge(START, "plan")
    .addEdge("plan", "act")
    .addEdge("act", "review")
    .addEdge("review", END)
    .compile({ checkpointer, interruptBefore: ["act"] });
}

/** What the resuming process saw, printed as one JSON line. */
export interface ResumeReport {
  nextAtStart: string[];
  interruptValue: unknown;
  finalSteps: string[];
  lsn: string;
}
