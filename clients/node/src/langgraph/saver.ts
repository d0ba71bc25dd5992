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
// The first page of a checkpoint's ancestors: most channels a step did not
// write were written a step or two before.
const FIRST_ANCESTOR_PAGE = 8;

// What one list() keeps of the ancestors its checkpoints' walks read, for
// the walks of the older checkpoints after them: getStateHistory reads a
// thread's records about once, not once per checkpoint. Dropped (and read
// again if needed) past this many bytes.
const MAX_KNOWN_ANCESTOR_BYTES = 64 * 1024 * 1024;

const utf8Decoder = new TextDecoder();

/** Checkpoint records by (thread, namespace, id), at most MAX_KNOWN_ANCESTOR_BYTES of them. */
class KnownAncestors {
  readonly #records = new Map<string, CheckpointRecord>();
  #bytes = 0;

  get(threadId: string, checkpointNs: string, checkpointId: string): CheckpointRecord | undefined {
    return this.#records.get(JSON.stringify([threadId, checkpointNs, checkpointId]));
  }

  add(r: CheckpointRecord): void {
    const bytes = r.checkpoint.length + r.pendingWrites.reduce((n, w) => n + w.value.length, 0);
    if (this.#bytes + bytes > MAX_KNOWN_ANCESTOR_BYTES) {
      this.#records.clear();
      this.#bytes = 0;
    }
    this.#records.set(JSON.stringify([r.threadId, r.checkpointNs, r.checkpointId]), r);
    this.#bytes += bytes;
  }
}

/** Compares ids as the server orders them: by their UTF-8 bytes. */
function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function parseVersions(json: string): ChannelVersions {
  return json === "" ? {} : (JSON.parse(json) as ChannelVersions);
}

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
    if (!opts.userId) throw new TypeError("EngramSaver: userId is required");
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

  /**
   * Newest first. A config naming a checkpoint_id lists that checkpoint only
   * (if before, filter and the rest of config match it), as MemorySaver does.
   */
  async *list(config: RunnableConfig, options?: CheckpointListOptions): AsyncGenerator<CheckpointTuple> {
    const { limit, before, filter } = options ?? {};
    if (limit !== undefined && limit <= 0) return;
    const threadId = config.configurable?.thread_id === undefined ? "" : String(config.configurable.thread_id);
    const ns = config.configurable?.checkpoint_ns;
    const oneNs = ns !== undefined && ns !== null;
    const only: string = config.configurable?.checkpoint_id ?? "";
    const beforeId: string = before?.configurable?.checkpoint_id ?? "";
    // An undefined value filters nothing (LangGraph's savers drop those keys).
    const definedFilter = Object.fromEntries(Object.entries(filter ?? {}).filter(([, v]) => v !== undefined));
    if (only !== "" && threadId !== "" && oneNs && Object.keys(definedFilter).length === 0) {
      // One checkpoint named in full: read it, not its thread.
      if (beforeId !== "" && byteOrder(only, beforeId) >= 0) return;
      const record = await this.#get(threadId, String(ns), only);
      if (record) yield await this.#tuple(record);
      return;
    }
    // Otherwise the server's list applies thread, namespace, before and the
    // filter (its JSON matching, not the client's), and a named id is
    // picked out of it.
    const pages = this.client.checkpoints.iterate({
      userId: this.userId,
      threadId,
      ns: oneNs ? { case: "checkpointNs", value: String(ns) } : { case: undefined },
      beforeCheckpointId: beforeId,
      filterJson: JSON.stringify(definedFilter),
      pageSize: only !== "" ? MAX_PAGE_SIZE : Math.min(limit ?? MAX_PAGE_SIZE, MAX_PAGE_SIZE),
    });
    let left = limit ?? Infinity;
    const known = new KnownAncestors();
    for await (const record of pages) {
      if (only !== "" && record.checkpointId !== only) {
        // One thread's namespace comes newest first: past the id, nothing is left to find.
        if (threadId !== "" && oneNs && byteOrder(record.checkpointId, only) < 0) return;
        continue;
      }
      yield await this.#tuple(record, known);
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
      throw new Error("EngramSaver.put: config.configurable.thread_id is required");
    }
    const checkpointNs: string = config.configurable?.checkpoint_ns ?? "";
    // Only the values of the channels this step wrote (newVersions): the
    // others are the ancestors' (the checkpoint that set each channel's
    // version holds its value), so a step stores what changed, not the state.
    // A caller that gives no newVersions wrote every channel.
    const written = newVersions ?? checkpoint.channel_versions ?? {};
    const stored = copyCheckpoint(checkpoint);
    stored.channel_values = Object.fromEntries(
      Object.keys(written).filter((ch) => ch in checkpoint.channel_values).map((ch) => [ch, checkpoint.channel_values[ch]]),
    );
    const [[type, bytes], metadataJson] = await Promise.all([
      this.serde.dumpsTyped(stored),
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
        newVersionsJson: JSON.stringify(written),
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

  async #tuple(r: CheckpointRecord, known = new KnownAncestors()): Promise<CheckpointTuple> {
    const checkpoint: Checkpoint = await this.serde.loadsTyped(r.checkpointType || "json", r.checkpoint);
    await this.#ancestorValues(checkpoint, r, known);
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

  /**
   * Fills in the values of the channels r's put did not write: each from the
   * nearest ancestor whose put set the channel to the version r has. A
   * channel whose version no ancestor set (or set without a value) stays
   * absent, as in LangGraph's savers that store values per channel version.
   * Ancestors are read newest first a page at a time (ids order by time, so
   * they come before r), and one by one where the pages do not have them.
   */
  async #ancestorValues(checkpoint: Checkpoint, r: CheckpointRecord, known: KnownAncestors): Promise<void> {
    checkpoint.channel_values ??= {};
    const values = checkpoint.channel_values as Record<string, unknown>;
    const written = parseVersions(r.newVersionsJson);
    const missing = new Map(
      Object.entries(checkpoint.channel_versions ?? {}).filter(([ch]) => !(ch in values) && !(ch in written)),
    );
    let want = r.parentCheckpointId;
    // Parent ids come from the callers of put: a cycle among them ends the walk.
    const visited = new Set<string>();
    let pageToken: string | undefined = "";
    let pageSize = FIRST_ANCESTOR_PAGE;
    while (missing.size > 0 && want !== "" && !visited.has(want)) {
      let ancestor = known.get(r.threadId, r.checkpointNs, want);
      if (!ancestor && pageToken !== undefined) {
        const page = await this.client.checkpoints.list({
          userId: this.userId,
          threadId: r.threadId,
          ns: { case: "checkpointNs", value: r.checkpointNs },
          beforeCheckpointId: r.checkpointId,
          pageSize,
          pageToken,
        });
        for (const c of page.checkpoints) known.add(c);
        pageToken = page.nextPageToken === "" ? undefined : page.nextPageToken;
        pageSize = MAX_PAGE_SIZE;
        continue;
      }
      ancestor ??= await this.#get(r.threadId, r.checkpointNs, want);
      if (!ancestor) return; // deleted since
      visited.add(want);
      const set = parseVersions(ancestor.newVersionsJson);
      const found = [...missing].filter(([ch]) => ch in set);
      if (found.length > 0) {
        const a: Checkpoint = await this.serde.loadsTyped(ancestor.checkpointType || "json", ancestor.checkpoint);
        for (const [ch, version] of found) {
          if (String(set[ch]) === String(version) && ch in (a.channel_values ?? {})) {
            values[ch] = (a.channel_values as Record<string, unknown>)[ch];
          }
          missing.delete(ch);
        }
      }
      want = ancestor.parentCheckpointId;
    }
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
