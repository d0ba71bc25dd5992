// LangGraph's checkpointer validation suite on EngramSaver, with its opt-in
// getDeltaChannelHistory tests, as the suite's README runs it inside a test
// suite: scripts/test-langgraph.mjs runs this file under the suite's own
// vitest (globals on). Its CLI, validate-checkpointer 1.1.1, cannot load any
// initializer: its runner validates the default export with a schema that
// the published dist/types.js does not export.
import { deltaChannelHistoryTests, validate } from "@langchain/langgraph-checkpoint-validation";
import initializer from "./validation.initializer.js";

validate(initializer);
deltaChannelHistoryTests(initializer);
