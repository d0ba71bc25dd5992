// The CheckpointerTestInitializer of LangGraph's checkpointer validation
// suite (validate-checkpointer, @langchain/langgraph-checkpoint-validation)
// for EngramSaver: one real engramd for the run, and a fresh user per
// checkpointer, so no test sees another's threads (the suite reuses thread
// ids such as "thread-1").
import type { CheckpointSaverTestInitializer } from "@langchain/langgraph-checkpoint-validation";
import { EngramSaver, type Engram } from "../../src/index.js";
import { Server, uid } from "../harness.js";

const TOKEN = "langgraph-validation-token";

let server: Server | undefined;
let client: Engram | undefined;

const initializer: CheckpointSaverTestInitializer<EngramSaver> = {
  checkpointerName: "EngramSaver",
  beforeAllTimeout: 30_000,
  async beforeAll() {
    server = await new Server({ tokens: [["acme", "agent", TOKEN]] }).start();
    client = server.client({ token: TOKEN });
  },
  async afterAll() {
    client?.close();
    await server?.close();
  },
  createCheckpointer() {
    if (!client) throw new Error("validation.initializer: beforeAll did not start engramd");
    return new EngramSaver({ client, userId: uid("lg") });
  },
};

export default initializer;
