// EngramSaver: LangGraph's checkpointer (BaseCheckpointSaver) over Engram's
// CheckpointService. Checkpoints and pending writes are stored encrypted by
// engramd, per user and thread, replicated, and readable on any node: the
// client's read-your-writes LSN makes a saver that talks to a replica see its
// own puts there.
import type { RunnableConfig } from "@langchain/core/runnables";
import {
  BaseCheckpointSaver,
  TASKS,
  WRITES_IDX_MAP,
  compareWritesSortKeys,
  copyCheckpoint,
  getCheckpointId,
  maxChannelVersion,
  writesSortKey,
  type ChannelVersions,
  type Checkpoint,
  type CheckpointListOptions,
  type CheckpointMetadata,
  type CheckpointPendingWrite,
  type CheckpointTuple,
  type PendingWrite,
  type SerializerProtocol,
} from "@langchain/langgraph-checkpoint";
import { Engram, type EngramOptions } from "../client.js";
import { Code, EngramError } from "../errors.js";
import type {
  Checkpoint as CheckpointRecord,
  PendingWrite as PendingWriteRecord,
} from "../gen/engram/v1/agent_state_pb.js";

export interface EngramSaverOptions {
  /** A client to share, or the options of one the saver opens (and close() closes). */
  client: Engram | EngramOptions;
  /** The user the threads belong to (DeleteUser erases them with the user's other data). */
  userId: string;
  /** Default: LangGraph's JsonPlusSerializer. */
  serde?: SerializerProtocol;
}

// ListCheckpoints' page cap: a larger page_size is cut to it by the server.
const MAX_PAGE_SIZE = 100;

const utf8Decoder = new TextDecoder();

/**
 * LangGraph checkpointer on Engram:
 * `const checkpointer = new EngramSaver({ client: new Engram({ target, token }), userId });`
 */
export class EngramSaver extends BaseCheckpointSaver {
  readonly client: Engram;
  readonly userId: string;
  readonly #ownsClient: boolean;

  constructor(opts: EngramSaverOptions) {
    super(opts.serde);
    if (!opts?.userId) throw new TypeError("EngramSaver: userId is required");
    this.#ownsClient = !(opts.client instanceof Engram);
    this.client = opts.client instanceof Engram ? opts.client : new Engram(opts.client);
    this.userId = opts.userId;
  }

  /** Closes the client if the saver opened it (a shared client stays open). */
  close(): void {
    if (this.#ownsClient) this.client.close();
  }

  async getTuple(config: RunnableConfig): Promise<CheckpointTuple | undefined> {
    const threadId = config.configurable?.thread_id;
    // No thread: nothing can be stored under it (as in LangGraph's own savers).
    if (threadId === undefined) return undefined;
    const record = await this.#get(String(threadId), config.configurable?.checkpoint_ns ?? "", getCheckpointId(config));
    return record && this.#tuple(record);
  }

  async *list(config: RunnableConfig, options?: CheckpointListOptions): AsyncGenerator<CheckpointTuple> {
    const { limit, before, filter } = options ?? {};
    if (limit !== undefined && limit <= 0) return;
    const ns = config.configurable?.checkpoint_ns;
    // An undefined value filters nothing (LangGraph's savers drop those keys).
    const definedFilter = Object.fromEntries(Object.entries(filter ?? {}).filter(([, v]) => v !== undefined));
    const pages = this.client.checkpoints.iterate({
      userId: this.userId,
      threadId: config.configurable?.thread_id === undefined ? "" : String(config.configurable.thread_id),
      ns: ns === undefined || ns === null ? { case: undefined } : { case: "checkpointNs", value: String(ns) },
      beforeCheckpointId: before?.configurable?.checkpoint_id ?? "",
      filterJson: JSON.stringify(definedFilter),
      pageSize: Math.min(limit ?? MAX_PAGE_SIZE, MAX_PAGE_SIZE),
    });
    let left = limit ?? Infinity;
    for await (const record of pages) {
      yield await this.#tuple(record);
      if (--left <= 0) return;
    }
  }

  async put(
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    newVersions: ChannelVersions,
  ): Promise<RunnableConfig> {
    const threadId = config.configurable?.thread_id;
    if (threadId === undefined || threadId === "") {
      throw new Error('EngramSaver.put: config.configurable.thread_id is required');
    }
    const checkpointNs: string = config.configurable?.checkpoint_ns ?? "";
    const [[type, bytes], metadataJson] = await Promise.all([
      this.serde.dumpsTyped(copyCheckpoint(checkpoint)),
      this.#metadataJson(metadata),
    ]);
    await this.client.checkpoints.put({
      userId: this.userId,
      checkpoint: {
        threadId: String(threadId),
        checkpointNs,
        checkpointId: checkpoint.id,
        parentCheckpointId: config.configurable?.checkpoint_id ?? "",
        checkpointType: type,
        checkpoint: bytes,
        metadataJson,
        newVersionsJson: JSON.stringify(newVersions ?? {}),
      },
    });
    return { configurable: { thread_id: threadId, checkpoint_ns: checkpointNs, checkpoint_id: checkpoint.id } };
  }

  async putWrites(config: RunnableConfig, writes: PendingWrite[], taskId: string, taskPath?: string): Promise<void> {
    const threadId = config.configurable?.thread_id;
    const checkpointId = config.configurable?.checkpoint_id;
    if (threadId === undefined || checkpointId === undefined) {
      throw new Error("EngramSaver.putWrites: config.configurable.thread_id and checkpoint_id are required");
    }
    const records = await Promise.all(
      writes.map(async ([channel, value], position) => {
        const [valueType, bytes] = await this.serde.dumpsTyped(value);
        // Special channels (error, interrupt, ...) have fixed negative indexes,
        // which the server replaces on a rewrite; others keep their first write.
        return { taskId, idx: WRITES_IDX_MAP[channel] ?? position, channel, valueType, value: bytes, taskPath: taskPath ?? "" };
      }),
    );
    await this.client.checkpoints.putWrites({
      userId: this.userId,
      threadId: String(threadId),
      checkpointNs: config.configurable?.checkpoint_ns ?? "",
      checkpointId: String(checkpointId),
      writes: records,
    });
  }

  async deleteThread(threadId: string): Promise<void> {
    await this.client.checkpoints.deleteThread(this.userId, threadId);
  }

  /** The stored checkpoint, or undefined when there is none (NOT_FOUND). */
  async #get(threadId: string, checkpointNs: string, checkpointId: string): Promise<CheckpointRecord | undefined> {
    try {
      return await this.client.checkpoints.get({ userId: this.userId, threadId, checkpointNs, checkpointId });
    } catch (e) {
      if (e instanceof EngramError && e.code === Code.NotFound) return undefined;
      throw e;
    }
  }

  async #tuple(r: CheckpointRecord): Promise<CheckpointTuple> {
    const checkpoint: Checkpoint = await this.serde.loadsTyped(r.checkpointType || "json", r.checkpoint);
    if (checkpoint.v < 4 && r.parentCheckpointId !== "") {
      await this.#migratePendingSends(checkpoint, r.threadId, r.checkpointNs, r.parentCheckpointId);
    }
    const tuple: CheckpointTuple = {
      config: { configurable: { thread_id: r.threadId, checkpoint_ns: r.checkpointNs, checkpoint_id: r.checkpointId } },
      checkpoint,
      metadata: await this.serde.loadsTyped("json", r.metadataJson || "{}"),
      pendingWrites: await this.#pendingWrites(r.pendingWrites),
    };
    if (r.parentCheckpointId !== "") {
      tuple.parentConfig = {
        configurable: { thread_id: r.threadId, checkpoint_ns: r.checkpointNs, checkpoint_id: r.parentCheckpointId },
      };
    }
    return tuple;
  }

  /** In writesSortKey order (task_path, task_id, idx): the order a run applies them, which replays must keep. */
  #pendingWrites(writes: PendingWriteRecord[]): Promise<CheckpointPendingWrite[]> {
    const sorted = [...writes].sort((a, b) =>
      compareWritesSortKeys(writesSortKey(a.taskPath, a.taskId, a.idx), writesSortKey(b.taskPath, b.taskId, b.idx)),
    );
    return Promise.all(
      sorted.map(async (w): Promise<CheckpointPendingWrite> => [
        w.taskId,
        w.channel,
        await this.serde.loadsTyped(w.valueType || "json", w.value),
      ]),
    );
  }

  /**
   * Checkpoints before format 4 kept pending sends (Send packets) as the
   * parent's TASKS writes, not in channel_values; LangGraph's savers move them
   * into the checkpoint on load, and so does this one.
   */
  async #migratePendingSends(checkpoint: Checkpoint, threadId: string, checkpointNs: string, parentId: string) {
    const parent = await this.#get(threadId, checkpointNs, parentId);
    const sends = await this.#pendingWrites((parent?.pendingWrites ?? []).filter((w) => w.channel === TASKS));
    checkpoint.channel_values ??= {};
    checkpoint.channel_versions ??= {};
    checkpoint.channel_values[TASKS] = sends.map(([, , value]) => value);
    const versions = Object.values(checkpoint.channel_versions);
    checkpoint.channel_versions[TASKS] =
      versions.length > 0 ? maxChannelVersion(...versions) : this.getNextVersion(undefined);
  }

  /** Metadata as JSON text: the server keeps a blind index of its top-level pairs for list's filter. */
  async #metadataJson(metadata: CheckpointMetadata): Promise<string> {
    const [type, bytes] = await this.serde.dumpsTyped(metadata);
    if (type !== "json") throw new Error(`EngramSaver: metadata must serialize to JSON (the serializer gave "${type}")`);
    return typeof bytes === "string" ? bytes : utf8Decoder.decode(bytes);
  }
}
