// The Engram client: one HTTP/2 connection (Connect's gRPC transport) and
// the namespaces sessions, messages, memories, users, admin over the
// generated service descriptors. What every call gets: a deadline, the
// bearer token, read-your-writes (engram-lsn seen on writes -> engram-min-lsn
// on reads), retries where the API's contract says a retry is safe, and
// failures as EngramError.
import { randomUUID } from "node:crypto";
import type * as http2 from "node:http2";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, createClient, type CallOptions, type Client } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { Checkpoints, Store } from "./agent_state.js";
import { EngramError } from "./errors.js";
import { CheckpointService, StoreService } from "./gen/engram/v1/agent_state_pb.js";
import {
  AdminService,
  type ChecksumResponse,
  type GetRetentionPolicyResponse,
  type GetStatusResponse,
  type PromoteResponse,
  type SetRetentionPolicyRequestSchema,
  type SetRetentionPolicyResponse,
} from "./gen/engram/v1/admin_pb.js";
import {
  MemoryService,
  type CreateMemoryRequestSchema,
  type CreateMemoryResponse,
  type DeduplicateMemoriesResponse,
  type DeleteMemoryResponse,
  type ListMemoriesRequestSchema,
  type ListMemoriesResponse,
  type Memory,
  type SearchMemoriesRequestSchema,
  type SearchMemoriesResponse,
  type UpdateMemoryRequestSchema,
} from "./gen/engram/v1/memory_pb.js";
import {
  SessionService,
  type AppendMessagesResponse,
  type DeleteSessionResponse,
  type GetContextResponse,
  type ListMessagesRequestSchema,
  type ListMessagesResponse,
  type ListSessionsRequestSchema,
  type ListSessionsResponse,
  type Message,
  type MessageSchema,
  type Session,
  type SessionSchema,
  type UpdateSessionRequestSchema,
} from "./gen/engram/v1/session_pb.js";
import {
  UserService,
  type DeleteUserResponse,
  type ExportUserResponse,
  type GetUserStatsResponse,
} from "./gen/engram/v1/user_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "./gen/grpc_health/v1/health_pb.js";

/** Default deadline of a call (all its attempts together), milliseconds. */
export const DEFAULT_DEADLINE_MS = 10_000;
/**
 * Default deadline of a server stream (users.export), milliseconds: 1 h.
 * The unary default would cut a large export; engramd bounds these streams
 * itself (--export-max-ms, --backup-max-ms: 1 h at most by default).
 */
export const DEFAULT_STREAM_DEADLINE_MS = 3_600_000;
/**
 * Largest reply accepted: gRPC's usual 4 MiB is less than one page of
 * memories with embeddings (up to 1000 x 4096 floats).
 */
export const DEFAULT_MAX_RECEIVE_BYTES = 64 * 1024 * 1024;

export interface RetryOptions {
  /** Attempts in all, the first included (1 = no retry). Default 4. */
  maxAttempts?: number;
  /**
   * Backoff bound before the 2nd attempt, doubled each time; the wait is
   * uniform in [0, bound] (full jitter), on top of the server's RetryInfo
   * delay when it sends one. Default 100.
   */
  initialBackoffMs?: number;
  /** Cap of the bound. Default 5000. */
  maxBackoffMs?: number;
  /** Called before each retry (for logs and tests). */
  onRetry?: (info: { attempt: number; delayMs: number; error: EngramError; method: string }) => void;
}

/**
 * Read-your-writes scope: "client" (default) — every read waits for the
 * highest LSN any write of this client saw; "session" — a SessionHandle
 * waits only for its own writes (other reads still use the client's LSN);
 * "none" — no engram-min-lsn is sent.
 */
export type Consistency = "client" | "session" | "none";

export interface TlsOptions {
  /** PEM CA bundle to trust instead of the system's. */
  ca?: string | Buffer;
  /** Client certificate and key (PEM) for mutual TLS. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Name checked against the server's certificate, when not the target host. */
  servername?: string;
}

export interface EngramOptions {
  /** "host:port", or a URL "http://host:port" / "https://host:port". */
  target: string;
  /** Bearer token (omit for a server in dev mode, without --tokens). */
  token?: string;
  /** true (system CAs) or TLS settings; default plaintext unless target is https://. */
  tls?: boolean | TlsOptions;
  /** Deadline of every unary call unless the call gives one. Default 10000. */
  deadlineMs?: number;
  /** Deadline of a whole server stream (users.export) unless the call gives one. Default 3600000 (1 h). */
  streamDeadlineMs?: number;
  /** Retry policy, or a number of attempts. 1 turns retries off. */
  retries?: number | RetryOptions;
  consistency?: Consistency;
  /** Default 64 MiB. */
  maxReceiveBytes?: number;
}

/** Per-call options. */
export interface CallOpts {
  deadlineMs?: number;
  signal?: AbortSignal;
}

/** The highest LSN seen; engram-min-lsn of the reads that use it. */
export class LsnTracker {
  #lsn = 0n;
  get lsn(): bigint {
    return this.#lsn;
  }
  observe(lsn: bigint): void {
    if (lsn > this.#lsn) this.#lsn = lsn;
  }
  /** Forgets the LSN. */
  reset(): void {
    this.#lsn = 0n;
  }
}

// Which calls may be sent again after UNAVAILABLE: reads always; writes only
// where the contract makes a repeat harmless.
type Safety = "read" | "write" | "idempotent";

type Rpc<I, O> = (req: I, opts: CallOptions) => Promise<O>;

export class Engram {
  readonly sessions: Sessions;
  readonly messages: Messages;
  readonly memories: Memories;
  readonly users: Users;
  readonly admin: Admin;
  readonly checkpoints: Checkpoints;
  readonly store: Store;
  readonly consistency: Consistency;
  /** The client-wide LSN (see Consistency). */
  readonly tracker = new LsnTracker();

  readonly #token: string | undefined;
  readonly #deadlineMs: number;
  readonly #streamDeadlineMs: number;
  readonly #retry: Required<Omit<RetryOptions, "onRetry">> & Pick<RetryOptions, "onRetry">;
  readonly #sessionManager: Http2SessionManager;
  /** @internal */ readonly rpc: {
    session: Client<typeof SessionService>;
    memory: Client<typeof MemoryService>;
    user: Client<typeof UserService>;
    admin: Client<typeof AdminService>;
    health: Client<typeof Health>;
    checkpoint: Client<typeof CheckpointService>;
    store: Client<typeof StoreService>;
  };

  constructor(opts: EngramOptions) {
    if (!opts || !opts.target) throw new TypeError("Engram: target is required (host:port)");
    const r = typeof opts.retries === "number" ? { maxAttempts: opts.retries } : (opts.retries ?? {});
    this.#retry = {
      maxAttempts: Math.max(1, r.maxAttempts ?? 4),
      initialBackoffMs: r.initialBackoffMs ?? 100,
      maxBackoffMs: r.maxBackoffMs ?? 5000,
      onRetry: r.onRetry,
    };
    this.#token = opts.token;
    this.#deadlineMs = opts.deadlineMs ?? DEFAULT_DEADLINE_MS;
    this.#streamDeadlineMs = opts.streamDeadlineMs ?? DEFAULT_STREAM_DEADLINE_MS;
    this.consistency = opts.consistency ?? "client";
    const baseUrl = targetUrl(opts.target, opts.tls);
    const nodeOptions: http2.SecureClientSessionOptions = typeof opts.tls === "object" ? { ...opts.tls } : {};
    // Our own session manager so close() can end the connection.
    this.#sessionManager = new Http2SessionManager(baseUrl, {}, nodeOptions);
    const transport = createGrpcTransport({
      baseUrl,
      sessionManager: this.#sessionManager,
      readMaxBytes: opts.maxReceiveBytes ?? DEFAULT_MAX_RECEIVE_BYTES,
    });
    this.rpc = {
      session: createClient(SessionService, transport),
      memory: createClient(MemoryService, transport),
      user: createClient(UserService, transport),
      admin: createClient(AdminService, transport),
      health: createClient(Health, transport),
      checkpoint: createClient(CheckpointService, transport),
      store: createClient(StoreService, transport),
    };
    this.sessions = new Sessions(this);
    this.messages = new Messages(this);
    this.memories = new Memories(this);
    this.users = new Users(this);
    this.admin = new Admin(this);
    this.checkpoints = new Checkpoints(this);
    this.store = new Store(this);
  }

  /** The highest LSN this client saw on a write reply. */
  get lsn(): bigint {
    return this.tracker.lsn;
  }

  /** Raises the client's LSN, e.g. to one another process wrote at. */
  observeLsn(lsn: bigint): void {
    this.tracker.observe(lsn);
  }

  /**
   * Forgets the client's LSN (a handle with its own, consistency "session",
   * keeps it: handle.tracker.reset()). For a client that outlived its node's
   * data: a node wiped or restored from an older backup, or a failover to a
   * replica that missed writes, never reaches the old LSN, and every read
   * would fail UNAVAILABLE "engram-min-lsn ... not applied on this node yet".
   */
  resetLsn(): void {
    this.tracker.reset();
  }

  /**
   * A handle on one session. With consistency "session" (the client's, or
   * given here) its reads wait only for its own writes.
   */
  session(sessionId: string, opts: { consistency?: Consistency } = {}): SessionHandle {
    const c = opts.consistency ?? this.consistency;
    return new SessionHandle(this, sessionId, c === "session" ? new LsnTracker() : this.tracker, c);
  }

  /** Closes the connection; calls in flight fail. */
  close(): void {
    this.#sessionManager.abort();
  }

  /** @internal One unary call with deadline, token, LSN headers, retries. */
  async call<I, O>(
    method: string,
    fn: Rpc<I, O>,
    req: I,
    safety: Safety,
    opts: CallOpts = {},
    tracker: LsnTracker = this.tracker,
    consistency: Consistency = this.consistency,
  ): Promise<O> {
    const deadline = Date.now() + (opts.deadlineMs ?? this.#deadlineMs);
    const headers = this.#headers(safety, tracker, consistency);
    let last: EngramError | undefined;
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn(req, {
          headers,
          timeoutMs: Math.max(1, deadline - Date.now()),
          signal: opts.signal,
          onHeader: (h) => this.#sawHeaders(h, tracker),
        });
      } catch (e) {
        const err = EngramError.from(e);
        const delayMs = this.#retryDelay(err, safety, attempt, deadline, opts.signal);
        if (delayMs === undefined) throw EngramError.givingUp(err, last);
        last = err;
        this.#retry.onRetry?.({ attempt, delayMs, error: err, method });
        await sleep(delayMs, opts.signal);
      }
    }
  }

  /**
   * @internal A server stream; retried only while nothing was received.
   * Bounded by opts.deadlineMs, else streamDeadlineMs (not the unary deadline).
   */
  async *stream<I, O>(
    method: string,
    fn: (req: I, opts: CallOptions) => AsyncIterable<O>,
    req: I,
    opts: CallOpts = {},
  ): AsyncGenerator<O> {
    const deadline = Date.now() + (opts.deadlineMs ?? this.#streamDeadlineMs);
    const headers = this.#headers("read", this.tracker, this.consistency);
    let last: EngramError | undefined;
    for (let attempt = 1; ; attempt++) {
      let received = false;
      try {
        for await (const item of fn(req, {
          headers,
          timeoutMs: Math.max(1, deadline - Date.now()),
          signal: opts.signal,
          onHeader: (h) => this.#sawHeaders(h, this.tracker),
        })) {
          received = true;
          yield item;
        }
        return;
      } catch (e) {
        const err = EngramError.from(e);
        const delayMs = received ? undefined : this.#retryDelay(err, "read", attempt, deadline, opts.signal);
        if (delayMs === undefined) throw received ? err : EngramError.givingUp(err, last);
        last = err;
        this.#retry.onRetry?.({ attempt, delayMs, error: err, method });
        await sleep(delayMs, opts.signal);
      }
    }
  }

  #headers(safety: Safety, tracker: LsnTracker, consistency: Consistency): Headers {
    const h = new Headers();
    if (this.#token) h.set("authorization", `Bearer ${this.#token}`);
    // Computed once per call: a retry waits for the same LSN.
    if (safety === "read" && consistency !== "none" && tracker.lsn > 0n) {
      h.set("engram-min-lsn", tracker.lsn.toString());
    }
    return h;
  }

  #sawHeaders(h: Headers, tracker: LsnTracker): void {
    const v = h.get("engram-lsn");
    if (v === null || !/^[0-9]{1,20}$/.test(v)) return;
    const lsn = BigInt(v);
    tracker.observe(lsn);
    this.tracker.observe(lsn);
  }

  // The delay before the next attempt, or undefined to give up: only
  // UNAVAILABLE, only safe calls, within the attempts and the deadline.
  #retryDelay(err: EngramError, safety: Safety, attempt: number, deadline: number, signal?: AbortSignal) {
    if (err.code !== Code.Unavailable || safety === "write") return undefined;
    if (attempt >= this.#retry.maxAttempts || signal?.aborted) return undefined;
    const delayMs = backoffMs(attempt, this.#retry.initialBackoffMs, this.#retry.maxBackoffMs, err.retryDelayMs);
    return Date.now() + delayMs < deadline ? delayMs : undefined;
  }
}

/**
 * The wait before retrying after failed attempt number `attempt` (1 = the
 * first): full jitter over an exponential backoff, uniform in
 * [0, min(maxMs, initialMs * 2^(attempt-1))], added to the server's
 * RetryInfo delay as a floor. engramd sends the same delay to every client
 * (e.g. all of them after a failover): the delay alone would bring them all
 * back at once.
 */
export function backoffMs(attempt: number, initialMs: number, maxMs: number, retryDelayMs = 0): number {
  const bound = Math.min(maxMs, initialMs * 2 ** (attempt - 1));
  return Math.round(retryDelayMs + Math.random() * bound);
}

function targetUrl(target: string, tls: EngramOptions["tls"]): string {
  if (/^https?:\/\//.test(target)) return target;
  return `${tls ? "https" : "http"}://${target}`;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(EngramError.from(signal.reason));
    const t = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }
    function onAbort() {
      clearTimeout(t);
      reject(EngramError.from(signal!.reason));
    }
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Follows next_page_token from the given request to the end. */
async function* pages<R extends { pageToken?: string }, P extends { nextPageToken: string }>(
  req: R,
  fetch: (req: R) => Promise<P>,
): AsyncGenerator<P> {
  let token = req.pageToken ?? "";
  do {
    const page = await fetch({ ...req, pageToken: token });
    yield page;
    token = page.nextPageToken;
  } while (token !== "");
}

type Init<S extends Parameters<typeof create>[0]> = MessageInitShape<S>;

// ---- sessions --------------------------------------------------------------

export class Sessions {
  constructor(private readonly e: Engram) {}

  /**
   * Creates a session. With a session_id the call is a safe retry (the
   * existing session comes back), so it is retried on UNAVAILABLE.
   */
  create(session: Init<typeof SessionSchema>, opts?: CallOpts): Promise<Session> {
    return this.e.call("CreateSession", this.e.rpc.session.createSession, { session },
      session.sessionId ? "idempotent" : "write", opts);
  }
  get(sessionId: string, opts?: CallOpts): Promise<Session> {
    return this.e.call("GetSession", this.e.rpc.session.getSession, { sessionId }, "read", opts);
  }
  /** One page. */
  list(req: Init<typeof ListSessionsRequestSchema>, opts?: CallOpts): Promise<ListSessionsResponse> {
    return this.e.call("ListSessions", this.e.rpc.session.listSessions, req, "read", opts);
  }
  /** Every session matching req, page after page. */
  async *iterate(req: Init<typeof ListSessionsRequestSchema>, opts?: CallOpts): AsyncGenerator<Session> {
    for await (const p of pages(req, (r) => this.list(r, opts))) yield* p.sessions;
  }
  end(sessionId: string, reason = "", opts?: CallOpts): Promise<Session> {
    return this.e.call("EndSession", this.e.rpc.session.endSession, { sessionId, reason }, "write", opts);
  }
  update(req: Init<typeof UpdateSessionRequestSchema>, opts?: CallOpts): Promise<Session> {
    return this.e.call("UpdateSession", this.e.rpc.session.updateSession, req, "write", opts);
  }
  delete(sessionId: string, opts?: CallOpts): Promise<DeleteSessionResponse> {
    return this.e.call("DeleteSession", this.e.rpc.session.deleteSession, { sessionId }, "write", opts);
  }
  /**
   * A new session with copies of messages 1..throughSeq (and the summary if
   * it covers no more). Retried only with a newSessionId (a retry then finds
   * the fork made).
   */
  fork(
    sessionId: string,
    throughSeq: bigint,
    opts: CallOpts & { newSessionId?: string } = {},
  ): Promise<Session> {
    return this.e.call("ForkSession", this.e.rpc.session.forkSession,
      { sessionId, throughSeq, newSessionId: opts.newSessionId ?? "" }, opts.newSessionId ? "idempotent" : "write", opts);
  }
  /** Replaces the rolling summary, which covers messages 1..throughSeq. */
  updateSummary(
    sessionId: string,
    summary: string,
    throughSeq: bigint,
    opts: CallOpts & { expectedThroughSeq?: bigint } = {},
  ): Promise<Session> {
    return this.e.call("UpdateSummary", this.e.rpc.session.updateSummary,
      { sessionId, summary, throughSeq, expectedThroughSeq: opts.expectedThroughSeq ?? 0n }, "write", opts);
  }
}

// ---- messages --------------------------------------------------------------

export type MessageInit = Init<typeof MessageSchema>;

export class Messages {
  constructor(private readonly e: Engram) {}

  /**
   * Appends messages atomically. A message without client_message_id gets a
   * random one, which makes the append a safe retry (the server returns the
   * original seq for an id it has), so it is retried on UNAVAILABLE.
   */
  append(
    sessionId: string,
    messages: MessageInit[],
    opts: CallOpts & { expectedLastSeq?: bigint; tracker?: LsnTracker; consistency?: Consistency } = {},
  ): Promise<AppendMessagesResponse> {
    const withIds = messages.map((m) => ({ ...m, clientMessageId: m.clientMessageId || randomUUID() }));
    return this.e.call("AppendMessages", this.e.rpc.session.appendMessages,
      { sessionId, messages: withIds, expectedLastSeq: opts.expectedLastSeq ?? 0n }, "idempotent", opts,
      opts.tracker, opts.consistency);
  }
  /** One page. */
  list(
    req: Init<typeof ListMessagesRequestSchema>,
    opts: CallOpts & { tracker?: LsnTracker; consistency?: Consistency } = {},
  ): Promise<ListMessagesResponse> {
    return this.e.call("ListMessages", this.e.rpc.session.listMessages, req, "read", opts, opts.tracker,
      opts.consistency);
  }
  /** Every message of a session (oldest first unless newestFirst), page after page. */
  async *iterate(
    req: Init<typeof ListMessagesRequestSchema>,
    opts: CallOpts & { tracker?: LsnTracker; consistency?: Consistency } = {},
  ): AsyncGenerator<Message> {
    for await (const p of pages(req, (r) => this.list(r, opts))) yield* p.messages;
  }
  /** The summary plus the newest messages after it within the budgets. */
  context(
    sessionId: string,
    opts: CallOpts & { maxMessages?: number; maxTokens?: number; tracker?: LsnTracker; consistency?: Consistency } = {},
  ): Promise<GetContextResponse> {
    return this.e.call("GetContext", this.e.rpc.session.getContext,
      { sessionId, maxMessages: opts.maxMessages ?? 0, maxTokens: opts.maxTokens ?? 0 }, "read", opts,
      opts.tracker, opts.consistency);
  }
}

/** One session, with its own read-your-writes LSN under consistency "session". */
export class SessionHandle {
  constructor(
    private readonly e: Engram,
    readonly sessionId: string,
    readonly tracker: LsnTracker,
    private readonly consistency: Consistency,
  ) {}

  get lsn(): bigint {
    return this.tracker.lsn;
  }
  #o<T extends object>(opts: T): T & { tracker: LsnTracker; consistency: Consistency } {
    return { ...opts, tracker: this.tracker, consistency: this.consistency };
  }
  get(opts: CallOpts = {}): Promise<Session> {
    return this.e.call("GetSession", this.e.rpc.session.getSession, { sessionId: this.sessionId }, "read", opts,
      this.tracker, this.consistency);
  }
  append(messages: MessageInit[], opts: CallOpts & { expectedLastSeq?: bigint } = {}) {
    return this.e.messages.append(this.sessionId, messages, this.#o(opts));
  }
  messages(opts: CallOpts & { newestFirst?: boolean; pageSize?: number } = {}): AsyncGenerator<Message> {
    return this.e.messages.iterate(
      { sessionId: this.sessionId, newestFirst: opts.newestFirst ?? false, pageSize: opts.pageSize ?? 0 },
      this.#o(opts));
  }
  context(opts: CallOpts & { maxMessages?: number; maxTokens?: number } = {}) {
    return this.e.messages.context(this.sessionId, this.#o(opts));
  }
  updateSummary(summary: string, throughSeq: bigint, opts: CallOpts & { expectedThroughSeq?: bigint } = {}) {
    return this.e.call("UpdateSummary", this.e.rpc.session.updateSummary,
      { sessionId: this.sessionId, summary, throughSeq, expectedThroughSeq: opts.expectedThroughSeq ?? 0n },
      "write", opts, this.tracker, this.consistency);
  }
  end(reason = "", opts: CallOpts = {}) {
    return this.e.call("EndSession", this.e.rpc.session.endSession, { sessionId: this.sessionId, reason },
      "write", opts, this.tracker, this.consistency);
  }
}

// ---- memories --------------------------------------------------------------

export class Memories {
  constructor(private readonly e: Engram) {}

  /** Stores a memory (de-duplicated per the request's policies). Not retried. */
  create(req: Init<typeof CreateMemoryRequestSchema>, opts?: CallOpts): Promise<CreateMemoryResponse> {
    return this.e.call("CreateMemory", this.e.rpc.memory.createMemory, req, "write", opts);
  }
  get(memoryId: string, opts?: CallOpts): Promise<Memory> {
    return this.e.call("GetMemory", this.e.rpc.memory.getMemory, { memoryId }, "read", opts);
  }
  update(req: Init<typeof UpdateMemoryRequestSchema>, opts?: CallOpts): Promise<Memory> {
    return this.e.call("UpdateMemory", this.e.rpc.memory.updateMemory, req, "write", opts);
  }
  /** Soft delete, or removal with purge. */
  delete(
    memoryId: string,
    opts: CallOpts & { purge?: boolean; expectedVersion?: bigint } = {},
  ): Promise<DeleteMemoryResponse> {
    return this.e.call("DeleteMemory", this.e.rpc.memory.deleteMemory,
      { memoryId, purge: opts.purge ?? false, expectedVersion: opts.expectedVersion ?? 0n }, "write", opts);
  }
  /** One page. */
  list(req: Init<typeof ListMemoriesRequestSchema>, opts?: CallOpts): Promise<ListMemoriesResponse> {
    return this.e.call("ListMemories", this.e.rpc.memory.listMemories, req, "read", opts);
  }
  /** Every memory matching req, page after page. */
  async *iterate(req: Init<typeof ListMemoriesRequestSchema>, opts?: CallOpts): AsyncGenerator<Memory> {
    for await (const p of pages(req, (r) => this.list(r, opts))) yield* p.memories;
  }
  /** Hybrid search (keyword, vector, importance, recency). */
  search(req: Init<typeof SearchMemoriesRequestSchema>, opts?: CallOpts): Promise<SearchMemoriesResponse> {
    return this.e.call("SearchMemories", this.e.rpc.memory.searchMemories, req, "read", opts);
  }
  deduplicate(
    userId: string,
    opts: CallOpts & { jaccardThreshold?: number; cosineThreshold?: number } = {},
  ): Promise<DeduplicateMemoriesResponse> {
    return this.e.call("DeduplicateMemories", this.e.rpc.memory.deduplicateMemories,
      { userId, jaccardThreshold: opts.jaccardThreshold ?? 0, cosineThreshold: opts.cosineThreshold ?? 0 },
      "write", opts);
  }
}

// ---- users -----------------------------------------------------------------

export class Users {
  constructor(private readonly e: Engram) {}

  /** Erases everything of the user. Erasing again succeeds, so it is retried. */
  delete(userId: string, opts?: CallOpts): Promise<DeleteUserResponse> {
    return this.e.call("DeleteUser", this.e.rpc.user.deleteUser, { userId }, "idempotent", opts);
  }
  stats(userId: string, opts?: CallOpts): Promise<GetUserStatsResponse> {
    return this.e.call("GetUserStats", this.e.rpc.user.getUserStats, { userId }, "read", opts);
  }
  /**
   * Everything of the user, as a stream of sessions, message runs and
   * memories; bounded by opts.deadlineMs, else the client's streamDeadlineMs (1 h).
   */
  export(userId: string, opts?: CallOpts): AsyncGenerator<ExportUserResponse> {
    return this.e.stream("ExportUser", this.e.rpc.user.exportUser, { userId }, opts);
  }
}

// ---- admin -----------------------------------------------------------------

export class Admin {
  constructor(private readonly e: Engram) {}
  // status, health and checksum describe the node as it is now: they never
  // wait for an LSN (engram-min-lsn), unlike the tenant's retention policy.

  /** Role, epoch, LSNs, replicas (admin token). */
  status(opts?: CallOpts): Promise<GetStatusResponse> {
    return this.e.call("GetStatus", this.e.rpc.admin.getStatus, {}, "read", opts, this.e.tracker, "none");
  }
  /** grpc.health.v1 Check: true when SERVING. */
  async health(service = "", opts?: CallOpts): Promise<boolean> {
    const r = await this.e.call("Check", this.e.rpc.health.check, { service }, "read", opts, this.e.tracker, "none");
    return r.status === HealthCheckResponse_ServingStatus.SERVING;
  }
  checksum(opts?: CallOpts): Promise<ChecksumResponse> {
    return this.e.call("Checksum", this.e.rpc.admin.checksum, {}, "read", opts, this.e.tracker, "none");
  }
  promote(opts?: CallOpts): Promise<PromoteResponse> {
    return this.e.call("Promote", this.e.rpc.admin.promote, {}, "write", opts);
  }
  getRetentionPolicy(opts?: CallOpts): Promise<GetRetentionPolicyResponse> {
    return this.e.call("GetRetentionPolicy", this.e.rpc.admin.getRetentionPolicy, {}, "read", opts);
  }
  setRetentionPolicy(
    req: Init<typeof SetRetentionPolicyRequestSchema>,
    opts?: CallOpts,
  ): Promise<SetRetentionPolicyResponse> {
    return this.e.call("SetRetentionPolicy", this.e.rpc.admin.setRetentionPolicy, req, "write", opts);
  }
}
