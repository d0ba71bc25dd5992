// EngramChatMessageHistory: a LangChain chat message history over one Engram
// session, so RunnableWithMessageHistory (or any LangChain code holding a
// history) keeps its conversation in engramd.
//
// A message is stored as an Engram message: its role (human -> user, ai ->
// assistant, system -> system, tool -> tool), its text as content, and in the
// message's metadata what else LangChain needs to rebuild it: lc_type (the
// LangChain message type), tool_call_id, name, lc_data (the other fields as
// JSON: tool_calls, additional_kwargs, response_metadata, id, ...) and
// lc_content = "json" when the content is a list of content blocks (then the
// content is that list as JSON). Messages other clients appended (no lc_type)
// come back by their role. The metadata map is bounded by the server's
// --max-metadata-bytes (a larger message is refused INVALID_ARGUMENT).
import { randomUUID } from "node:crypto";
import { BaseListChatMessageHistory } from "@langchain/core/chat_history";
import {
  mapChatMessagesToStoredMessages,
  mapStoredMessagesToChatMessages,
  type BaseMessage,
  type StoredMessage,
} from "@langchain/core/messages";
import type { Engram, MessageInit } from "../client.js";
import { Code, EngramError } from "../errors.js";
import { Role, type Message, type Session } from "../gen/engram/v1/session_pb.js";

export interface EngramChatMessageHistoryOptions {
  client: Engram;
  /**
   * The session. Without userId it must exist; with userId it is created
   * if absent (for that user). Omitted: a new session for userId.
   */
  sessionId?: string;
  /** The owner of a session this history creates. */
  userId?: string;
  agentId?: string;
  /** Metadata of a session this history creates. */
  metadata?: Record<string, string>;
}

const ROLE_OF_TYPE: Record<string, Role> = {
  human: Role.USER,
  ai: Role.ASSISTANT,
  system: Role.SYSTEM,
  developer: Role.SYSTEM,
  tool: Role.TOOL,
  function: Role.TOOL,
};
const TYPE_OF_ROLE: Partial<Record<Role, string>> = {
  [Role.USER]: "human",
  [Role.ASSISTANT]: "ai",
  [Role.SYSTEM]: "system",
  [Role.TOOL]: "tool",
};
const ROLE_OF_CHAT_ROLE: Record<string, Role> = {
  user: Role.USER,
  assistant: Role.ASSISTANT,
  system: Role.SYSTEM,
  tool: Role.TOOL,
};
// Kept in their own metadata keys (readable by other clients); the rest of
// the message goes to lc_data.
const OWN_KEYS = new Set(["content", "tool_call_id", "name"]);

export class EngramChatMessageHistory extends BaseListChatMessageHistory {
  lc_namespace = ["engram", "langgraph", "history"];
  readonly client: Engram;
  readonly userId: string | undefined;
  readonly agentId: string;
  readonly metadata: Record<string, string>;
  #sessionId: string;
  #ready: Promise<void> | undefined;
  /** The session a clear deleted (or is deleting), until it is made again. */
  #recreate: Pick<Session, "userId" | "agentId" | "metadata" | "ttlSeconds"> | undefined;

  constructor(opts: EngramChatMessageHistoryOptions) {
    super();
    if (!opts?.client) throw new TypeError("EngramChatMessageHistory: client is required");
    if (!opts.sessionId && !opts.userId) {
      throw new TypeError("EngramChatMessageHistory: give a sessionId, or a userId to create a session for");
    }
    this.client = opts.client;
    this.userId = opts.userId;
    this.agentId = opts.agentId ?? "";
    this.metadata = opts.metadata ?? {};
    // A client-chosen id makes the create a safe retry (the same session comes back).
    this.#sessionId = opts.sessionId ?? randomUUID();
  }

  /** The Engram session the messages are in. */
  get sessionId(): string {
    return this.#sessionId;
  }

  /** Every message, oldest first. */
  async getMessages(): Promise<BaseMessage[]> {
    await this.#ensure();
    const stored: StoredMessage[] = [];
    for await (const m of this.client.messages.iterate({ sessionId: this.#sessionId })) stored.push(fromEngram(m));
    return mapStoredMessagesToChatMessages(stored);
  }

  async addMessage(message: BaseMessage): Promise<void> {
    await this.addMessages([message]);
  }

  /**
   * Appends messages in one atomic call. A message's id (LangChain's) is its
   * client_message_id, so adding the same message again (a caller's retry)
   * stores it once. A message without an id is given a random one, set on
   * the message itself (as LangGraph's messages reducer does), so a retry
   * with the same message objects stores them once too.
   */
  override async addMessages(messages: BaseMessage[]): Promise<void> {
    if (messages.length === 0) return;
    for (const m of messages) {
      if (!m.id) {
        m.id = randomUUID();
        m.lc_kwargs.id = m.id;
      }
    }
    await this.#ensure();
    await this.client.messages.append(this.#sessionId, mapChatMessagesToStoredMessages(messages).map(toEngram));
  }

  /**
   * A session is append-only, so clear deletes it (its messages are erased
   * on the server) and starts a new, empty session with the same id, user,
   * agent, metadata and idle TTL: the id a caller keys this history by keeps working.
   * Without a userId the owner is read from the session before it goes.
   * A history with a userId whose session does not exist yet is empty
   * already. A clear that failed part way is finished by calling it again
   * (it remembers the session it deleted until it has made the new one).
   */
  override async clear(): Promise<void> {
    if (!this.#recreate) {
      let s: Session;
      try {
        s = await this.client.sessions.get(this.#sessionId);
      } catch (e) {
        if (!(e instanceof EngramError && e.code === Code.NotFound && this.userId)) throw e;
        this.#ready = undefined; // the next add creates it
        return;
      }
      this.#recreate = { userId: s.userId, agentId: s.agentId, metadata: s.metadata, ttlSeconds: s.ttlSeconds };
    }
    try {
      await this.client.sessions.delete(this.#sessionId);
    } catch (e) {
      // Deleted by this clear's earlier try (its reply lost) or by another client.
      if (!(e instanceof EngramError && e.code === Code.NotFound)) throw e;
    }
    await this.client.sessions.create({ sessionId: this.#sessionId, ...this.#recreate });
    this.#recreate = undefined;
    this.#ready = Promise.resolve();
  }

  /** Creates the session once (when this history has a userId); a failed create is tried again next call. */
  #ensure(): Promise<void> {
    if (!this.userId) return Promise.resolve();
    this.#ready ??= this.client.sessions
      .create({ sessionId: this.#sessionId, userId: this.userId, agentId: this.agentId, metadata: this.metadata })
      .then(
        () => undefined,
        (e: unknown) => {
          this.#ready = undefined;
          throw e;
        },
      );
    return this.#ready;
  }
}

function toEngram(m: StoredMessage): MessageInit {
  const data = m.data as unknown as Record<string, unknown>;
  let role = ROLE_OF_TYPE[m.type];
  if (m.type === "generic") role = ROLE_OF_CHAT_ROLE[String(data.role)];
  if (role === undefined) {
    throw new Error(`EngramChatMessageHistory: no Engram role for a ${m.type} message${m.type === "generic" ? ` with role "${String(data.role)}"` : ""} (user, assistant, system, tool)`);
  }
  const metadata: Record<string, string> = { lc_type: m.type };
  if (typeof data.tool_call_id === "string") metadata.tool_call_id = data.tool_call_id;
  if (typeof data.name === "string") metadata.name = data.name;
  const rest = Object.fromEntries(Object.entries(data).filter(([k, v]) => !OWN_KEYS.has(k) && !isEmpty(v)));
  if (Object.keys(rest).length) metadata.lc_data = JSON.stringify(rest);
  let content = data.content;
  if (typeof content !== "string") {
    metadata.lc_content = "json";
    content = JSON.stringify(content);
  }
  return {
    role,
    content: content as string,
    metadata,
    clientMessageId: data.id as string, // addMessages gave every message one
  };
}

function fromEngram(m: Message): StoredMessage {
  const md = m.metadata;
  const type = md.lc_type ?? TYPE_OF_ROLE[m.role] ?? "human";
  const data = {
    ...(md.lc_data ? (JSON.parse(md.lc_data) as Record<string, unknown>) : {}),
    content: md.lc_content === "json" ? JSON.parse(m.content) : m.content,
    // A tool message some other client appended may have no tool_call_id.
    tool_call_id: md.tool_call_id ?? (type === "tool" ? "" : undefined),
    name: md.name,
  };
  return { type, data } as unknown as StoredMessage;
}

function isEmpty(v: unknown): boolean {
  if (v === undefined || v === null) return true;
  if (Array.isArray(v)) return v.length === 0;
  return typeof v === "object" && Object.keys(v).length === 0;
}
