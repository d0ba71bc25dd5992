// The MCP tools of engram-mcp over an Engram client. The user is the
// configured one (ENGRAM_USER_ID) unless the server was started to take a
// user_id from the model; a session or memory of another user is answered
// as not found. Every failure comes back as a tool result with isError,
// so the model sees it and the server keeps running.
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { CallToolRequestSchema, ErrorCode, type CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";
import { Code, EngramError, type Engram } from "../index.js";
import { DedupOutcome, MemoryOrder, MemoryState, MemoryType, type Memory } from "../gen/engram/v1/memory_pb.js";
import { Role, type Message } from "../gen/engram/v1/session_pb.js";

export const VERSION = "0.16.0";

export interface ToolConfig {
  /** The user every tool acts for; "" when userIdFromTool. */
  userId: string;
  /** Tools take a user_id argument (a server shared by several users). */
  userIdFromTool: boolean;
  /** agent_id stamped on memories and sessions created here. */
  agentId: string;
  /**
   * Largest message content, in bytes of UTF-8: engramd's
   * --max-content-bytes (ENGRAM_MCP_MAX_CONTENT_BYTES, default
   * DEFAULT_MAX_CONTENT_BYTES, engramd's own default). The schema refuses
   * more, so an oversize argument is a tool error here rather than a
   * refusal (or a gRPC size error) from the server.
   */
  maxContentBytes: number;
}

const TYPES = ["person", "preference", "event", "topic", "fact", "emotion"] as const;
const ROLES = ["user", "assistant", "system", "tool"] as const;
const MEMORY_TYPE: Record<(typeof TYPES)[number], MemoryType> = {
  person: MemoryType.PERSON,
  preference: MemoryType.PREFERENCE,
  event: MemoryType.EVENT,
  topic: MemoryType.TOPIC,
  fact: MemoryType.FACT,
  emotion: MemoryType.EMOTION,
};
const ROLE: Record<(typeof ROLES)[number], Role> = {
  user: Role.USER,
  assistant: Role.ASSISTANT,
  system: Role.SYSTEM,
  tool: Role.TOOL,
};

/** engramd's defaults, in bytes of UTF-8: --max-content-bytes and its range, and the id limit. */
export const DEFAULT_MAX_CONTENT_BYTES = 65536;
export const MAX_CONTENT_BYTES_LIMIT = 16 * 1024 * 1024;
const MAX_ID_BYTES = 128;

/** A string of 1..max bytes of UTF-8 (zod's max counts UTF-16 units). */
function utf8(max: number) {
  return z.string().min(1).max(max)
    .refine((s) => Buffer.byteLength(s, "utf8") <= max, { message: `at most ${max} bytes of UTF-8` });
}

const typeArg = z.enum(TYPES);
const typesArg = z.array(typeArg).max(6).optional()
  .describe("Only memories of these kinds (any of them). Omit for every kind.");
const tagsArg = z.array(z.string().min(1).max(128)).max(32).optional();

export function buildServer(engram: Engram, cfg: ToolConfig): McpServer {
  const server = new McpServer({ name: "engram-mcp", version: VERSION });
  // The argument exists only when configured; typed as always there so
  // every tool's shape stays one type (who() never reads it otherwise).
  const userArg = (cfg.userIdFromTool
    ? { user_id: utf8(MAX_ID_BYTES).describe("The user whose memories and sessions these are.") }
    : {}) as { user_id: ReturnType<typeof utf8> };
  const who = (args: { user_id?: string }) => (cfg.userIdFromTool ? args.user_id ?? "" : cfg.userId);

  server.registerTool("remember", {
    title: "Remember",
    description:
      "Store a long-term memory about the user: one self-contained fact in plain words " +
      "(e.g. \"Prefers tea over coffee\"). Near-duplicates of an existing memory are detected " +
      "and not stored twice. Use it when the user states something worth knowing in later conversations.",
    inputSchema: {
      ...userArg,
      text: z.string().min(1).max(16384).describe("The fact, as one short sentence about the user."),
      type: typeArg.default("fact")
        .describe("Kind: person (someone the user knows), preference, event, topic, fact, emotion."),
      category: z.string().max(256).optional().describe("Optional free-form category, e.g. \"food\"."),
      tags: tagsArg.describe("Optional tags (exact words) to filter by later."),
      importance: z.number().min(0).max(1).optional()
        .describe("0..1, how much this matters (higher ranks first and wins de-duplication)."),
      session_id: z.string().optional().describe("The conversation this was learned in, if any."),
    },
  }, (a) => run(async () => {
    const r = await engram.memories.create({
      memory: {
        userId: who(a), agentId: cfg.agentId, type: MEMORY_TYPE[a.type], text: a.text,
        category: a.category ?? "", tags: a.tags ?? [], importance: a.importance ?? 0,
        sourceSessionId: a.session_id ?? "",
      },
    });
    return {
      memory_id: r.memory?.memoryId,
      outcome: DedupOutcome[r.outcome],
      matched_memory_id: r.matchedMemoryId || undefined,
      conflicts_with: r.conflictsWith.length ? r.conflictsWith : undefined,
    };
  }));

  server.registerTool("recall", {
    title: "Recall",
    description:
      "Search the user's memories by meaning of words (hybrid ranking: keyword match, importance, " +
      "recency). Returns the best matches first with their scores. Use it before answering " +
      "questions that may depend on what the user said in earlier conversations.",
    inputSchema: {
      ...userArg,
      query: z.string().min(1).max(4096).describe("What to look for, in plain words."),
      top_k: z.number().int().min(1).max(100).default(10).describe("How many results at most."),
      types: typesArg,
      tags: tagsArg.describe("Only memories carrying every one of these tags."),
      min_score: z.number().min(0).max(1).optional().describe("Leave out results scoring below this (0..1)."),
    },
  }, (a) => run(async () => {
    const r = await engram.memories.search({
      userId: who(a), query: a.query, topK: a.top_k, minScore: a.min_score ?? 0,
      filter: { types: (a.types ?? []).map((t) => MEMORY_TYPE[t]), tags: a.tags ?? [] },
    });
    return { results: r.results.map((x) => ({ ...memoryView(x.memory), score: round(x.score) })) };
  }));

  server.registerTool("forget", {
    title: "Forget",
    description:
      "Delete one of the user's memories by its memory_id (from recall or list_memories), e.g. when " +
      "the user asks to forget something or it is no longer true.",
    inputSchema: {
      ...userArg,
      memory_id: z.string().min(1).max(128).describe("The memory's id."),
      purge: z.boolean().default(false)
        .describe("true removes it for good; false (default) marks it deleted, still readable by id."),
    },
  }, (a) => run(async () => {
    await ownMemory(engram, a.memory_id, who(a));
    const r = await engram.memories.delete(a.memory_id, { purge: a.purge });
    return { memory_id: a.memory_id, purged: r.purged, state: r.memory ? MemoryState[r.memory.state] : undefined };
  }));

  server.registerTool("list_memories", {
    title: "List memories",
    description:
      "List the user's stored memories, newest first or most important first, one page at a time. " +
      "Pass next_page_token back as page_token to get the next page.",
    inputSchema: {
      ...userArg,
      types: typesArg,
      tags: tagsArg.describe("Only memories carrying every one of these tags."),
      category: z.string().max(256).optional().describe("Only this exact category."),
      order: z.enum(["newest", "importance"]).default("newest").describe("Sort order."),
      page_size: z.number().int().min(1).max(100).default(20).describe("Memories per page."),
      page_token: z.string().optional().describe("next_page_token of the previous page."),
    },
  }, (a) => run(async () => {
    const r = await engram.memories.list({
      userId: who(a), pageSize: a.page_size, pageToken: a.page_token ?? "",
      orderBy: a.order === "importance" ? MemoryOrder.IMPORTANCE : MemoryOrder.NEWEST_FIRST,
      filter: { types: (a.types ?? []).map((t) => MEMORY_TYPE[t]), tags: a.tags ?? [], category: a.category ?? "" },
    });
    return { memories: r.memories.map(memoryView), next_page_token: r.nextPageToken || undefined };
  }));

  server.registerTool("get_context", {
    title: "Get conversation context",
    description:
      "Get a conversation (session) as context to continue it: its rolling summary plus the newest " +
      "messages after the summary that fit the budgets, oldest first.",
    inputSchema: {
      ...userArg,
      session_id: z.string().min(1).max(128).describe("The session's id (from append_message)."),
      max_messages: z.number().int().min(1).max(1000).default(50).describe("At most this many messages."),
      max_tokens: z.number().int().min(1).optional().describe("At most this many tokens of messages."),
    },
  }, (a) => run(async () => {
    await ownSession(engram, a.session_id, who(a));
    const r = await engram.messages.context(a.session_id, { maxMessages: a.max_messages, maxTokens: a.max_tokens ?? 0 });
    return {
      session_id: a.session_id,
      summary: r.summary || undefined,
      summary_through_seq: r.summaryThroughSeq,
      truncated: r.truncated,
      messages: r.messages.map(messageView),
    };
  }));

  server.registerTool("append_message", {
    title: "Append message",
    description:
      "Add a message to a conversation (session) so it can be recalled as context later. Without " +
      "session_id a new session is started for the user and its id returned: pass it on later calls.",
    inputSchema: {
      ...userArg,
      session_id: z.string().min(1).max(128).optional().describe("The session; omit to start a new one."),
      role: z.enum(ROLES).describe("Who said it: user, assistant, system or tool."),
      content: utf8(cfg.maxContentBytes).describe(`The message text (at most ${cfg.maxContentBytes} bytes of UTF-8).`),
    },
  }, (a) => run(async () => {
    const user = who(a);
    let sessionId = a.session_id;
    if (sessionId) await ownSession(engram, sessionId, user);
    else sessionId = (await engram.sessions.create({ userId: user, agentId: cfg.agentId })).sessionId;
    const r = await engram.messages.append(sessionId, [{ role: ROLE[a.role], content: a.content }]);
    return { session_id: sessionId, seq: r.messages[0]?.seq, summary_due: r.session?.summaryDue };
  }));

  // search_messages: SessionService has no message search RPC yet; the tool
  // comes with it.
  return server;
}

/**
 * Answers a tools/call whose params do not have the request's shape (e.g.
 * "arguments": null) with -32602 Invalid params and a short message; the MCP
 * SDK would answer -32603 Internal error with its validator's dump. Call it
 * after server.connect(t), which installs t.onmessage.
 */
export function guardParams(t: Transport): void {
  const inner = t.onmessage;
  if (!inner) throw new Error("guardParams: connect the server first");
  t.onmessage = (msg, extra) => {
    if ("method" in msg && msg.method === CallToolRequestSchema.shape.method.value && "id" in msg) {
      const r = CallToolRequestSchema.safeParse(msg);
      if (!r.success) {
        // The schema is the whole request, so the path already starts at "params".
        const issue = r.error.issues[0];
        const where = issue?.path.length ? issue.path.join(".") : "params";
        void t.send({ jsonrpc: "2.0", id: msg.id,
          error: { code: ErrorCode.InvalidParams, message: `${where}: ${issue?.message ?? "invalid"}`.slice(0, 200) } });
        return;
      }
    }
    inner(msg, extra);
  };
}

async function ownSession(engram: Engram, sessionId: string, userId: string): Promise<void> {
  const s = await engram.sessions.get(sessionId);
  if (s.userId !== userId) throw notFound(`session_id: no session '${sessionId}'`);
}

async function ownMemory(engram: Engram, memoryId: string, userId: string): Promise<void> {
  const m = await engram.memories.get(memoryId);
  if (m.userId !== userId) throw notFound(`memory_id: no memory '${memoryId}'`);
}

function notFound(msg: string): Error {
  return Object.assign(new Error(msg), { toolText: `NOT_FOUND: ${msg}` });
}

function memoryView(m: Memory | undefined) {
  if (!m) return {};
  return {
    memory_id: m.memoryId,
    text: m.text,
    type: MemoryType[m.type]?.toLowerCase(),
    category: m.category || undefined,
    tags: m.tags.length ? m.tags : undefined,
    importance: round(m.importance),
    state: MemoryState[m.state],
    created: m.createTime ? new Date(Number(m.createTime.seconds) * 1000).toISOString() : undefined,
  };
}

function messageView(m: Message) {
  return { seq: m.seq, role: Role[m.role]?.toLowerCase(), content: m.content };
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** JSON with int64 (bigint) as decimal strings. */
export function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? x.toString() : x), 2);
}

async function run(fn: () => Promise<unknown>): Promise<CallToolResult> {
  try {
    return { content: [{ type: "text", text: toJson(await fn()) }] };
  } catch (e) {
    return { isError: true, content: [{ type: "text", text: errorText(e) }] };
  }
}

function errorText(e: unknown): string {
  if (e && typeof e === "object" && "toolText" in e) return String((e as { toolText: string }).toolText);
  const err = EngramError.from(e);
  const lines = [`${err.reason || Code[err.code]}: ${err.rawMessage}`];
  for (const v of err.fieldViolations) lines.push(`  ${v.field}: ${v.description}`);
  if (err.retryDelayMs !== undefined) lines.push(`retry after ${err.retryDelayMs} ms`);
  return lines.join("\n");
}
