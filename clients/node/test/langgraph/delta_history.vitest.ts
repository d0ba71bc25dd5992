// LangGraph's opt-in conformance tests of getDeltaChannelHistory (the suite
// run by validate-checkpointer leaves them out), on the same initializer.
// Run by scripts/test-langgraph.mjs under vitest with globals.
import { deltaChannelHistoryTests } from "@langchain/langgraph-checkpoint-validation";
import initializer from "./validation.initializer.js";

// vitest's globals (this package does not depend on vitest itself).
declare function beforeAll(fn: () => Promise<void> | void, timeoutMs?: number): void;
declare function afterAll(fn: () => Promise<void> | void): void;

beforeAll(() => initializer.beforeAll?.(), initializer.beforeAllTimeout);
afterAll(() => initializer.afterAll?.());
deltaChannelHistoryTests(initializer);
