// engram-client: the TypeScript SDK of Engram. See README.md.
export {
  Admin,
  DEFAULT_DEADLINE_MS,
  DEFAULT_MAX_RECEIVE_BYTES,
  Engram,
  LsnTracker,
  Memories,
  Messages,
  SessionHandle,
  Sessions,
  Users,
  type CallOpts,
  type Consistency,
  type EngramOptions,
  type MessageInit,
  type RetryOptions,
  type TlsOptions,
} from "./client.js";
export { Checkpoints, Store } from "./agent_state.js";
export {
  EngramStore,
  MAX_EMBEDDING_DIMS,
  type EngramGetOperation,
  type EngramIndexConfig,
  type EngramPutOperation,
  type EngramSearchOperation,
  type EngramStoreOptions,
  type EngramTTLConfig,
} from "./langgraph/store.js";
export { EngramChatMessageHistory, type EngramChatMessageHistoryOptions } from "./langgraph/history.js";
export { Code, EngramError, type FieldViolation } from "./errors.js";
// The API's messages and enums (generated at build from proto/engram/v1).
export * from "./gen/engram/v1/admin_pb.js";
export * from "./gen/engram/v1/agent_state_pb.js";
export * from "./gen/engram/v1/memory_pb.js";
export * from "./gen/engram/v1/session_pb.js";
export * from "./gen/engram/v1/user_pb.js";
export { EngramSaver, type EngramSaverOptions } from "./langgraph/saver.js";
