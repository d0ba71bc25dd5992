// EngramStore: LangGraph's BaseStore over Engram's StoreService, so a graph's
// long-term memory (namespaced JSON items) lives in engramd: sealed at rest,
// replicated, readable on any node with read-your-writes.
//
// What Engram does differently from InMemoryStore, and why:
// - Filters are equality on top-level keys only ({k: v} or {k: {$eq: v}}):
//   engramd matches them on a blind index of keyed hashes and never decrypts
//   values to compare them, so $ne/$gt/... are refused with an Error rather
//   than answered from a partial page.
// - An item has ONE embedding: the texts of its indexed fields are embedded
//   together as one document (joined by blank lines), where InMemoryStore
//   keeps one vector per field.
// - TTLs (minutes, as LangGraph counts them) become the item's ttl_seconds;
//   expired items are gone for every read, on every node.
import type { EmbeddingsInterface } from "@langchain/core/embeddings";
import {
  BaseStore,
  getTextAtPath,
  validateNamespace,
  type GetOperation,
  type Item,
  type ListNamespacesOperation,
  type Operation,
  type OperationResults,
  type PutOperation,
  type SearchItem,
  type SearchOperation,
} from "@langchain/langgraph-checkpoint";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Engram } from "../client.js";
import { Code, EngramError } from "../errors.js";
import { NamespaceMatch_Type, type StoreItem } from "../gen/engram/v1/agent_state_pb.js";

/** The server's limit on an item's embedding (and a query's). */
export const MAX_EMBEDDING_DIMS = 4096;
/** SearchItems' limit when the search gives none (or 0), as the server's default. */
const DEFAULT_SEARCH_LIMIT = 10;
/**
 * Items per RefreshItems call: a refresh rewrites each item (values up to
 * 1 MiB), and engramd refuses one write that logs more than 48 MiB (what a
 * replica receives in one record); the server itself takes up to 1000.
 */
const REFRESH_BATCH_MAX = 32;
/**
 * Calls of one batch in flight at once: a batch of thousands of gets must not
 * open thousands of HTTP/2 streams (the server caps streams per connection).
 */
const BATCH_CONCURRENCY = 16;

export interface EngramIndexConfig {
  /** Length of every vector; at most MAX_EMBEDDING_DIMS. */
  dims: number;
  /** A LangChain embeddings model, as InMemoryStore's index takes ... */
  embeddings?: EmbeddingsInterface;
  /** ... or a plain function from texts to their vectors (exactly one of the two). */
  embed?: (texts: string[]) => Promise<number[][]>;
  /**
   * JSON paths of the value whose text is embedded ("$": the whole value,
   * the default; "a.b", "list[*]", "list[0].text"). A put's own index
   * overrides them; index false stores no embedding.
   */
  fields?: string[];
}

export interface EngramTTLConfig {
  /** Minutes; the TTL of a put that gives none. Unset: items do not expire. */
  defaultTtl?: number;
  /** Whether a get or search renews the TTL of what it read, when the call does not say. Default true. */
  refreshOnRead?: boolean;
}

/** A get that may say whether to renew the item's TTL (LangGraph's refresh_ttl). */
export interface EngramGetOperation extends GetOperation {
  refreshTtl?: boolean;
}
export interface EngramSearchOperation extends SearchOperation {
  refreshTtl?: boolean;
}
/** A put with a TTL in minutes (null: never expires, undefined: the store's defaultTtl). */
export interface EngramPutOperation extends PutOperation {
  ttl?: number | null;
}

export interface EngramStoreOptions {
  client: Engram;
  index?: EngramIndexConfig;
  ttl?: EngramTTLConfig;
}

type ItemKey = { namespace: string[]; key: string };
type Embedder = { embedDocuments(texts: string[]): Promise<number[][]>; embedQuery(text: string): Promise<number[]> };

export class EngramStore extends BaseStore {
  readonly client: Engram;
  readonly index: EngramIndexConfig | undefined;
  readonly ttl: EngramTTLConfig | undefined;
  readonly #embedder: Embedder | undefined;

  constructor(opts: EngramStoreOptions) {
    super();
    if (!opts?.client) throw new TypeError("EngramStore: client is required");
    this.client = opts.client;
    this.index = opts.index;
    this.ttl = opts.ttl;
    if (opts.ttl?.defaultTtl !== undefined) ttlSeconds(opts.ttl.defaultTtl, "ttl.defaultTtl");
    if (opts.index) this.#embedder = embedder(opts.index);
  }

  override async get(namespace: string[], key: string, options: { refreshTtl?: boolean } = {}): Promise<Item | null> {
    validateNamespace(namespace, { allowEmpty: true, allowReservedRoot: true });
    const op: EngramGetOperation = { namespace, key, refreshTtl: options.refreshTtl };
    return (await this.batch([op]))[0];
  }

  override async search(
    namespacePrefix: string[],
    options: { filter?: Record<string, unknown>; limit?: number; offset?: number; query?: string; refreshTtl?: boolean } = {},
  ): Promise<SearchItem[]> {
    validateNamespace(namespacePrefix, { allowEmpty: true, allowReservedRoot: true });
    const { filter, limit = 10, offset = 0, query, refreshTtl } = options;
    const op: EngramSearchOperation = { namespacePrefix, filter, limit, offset, query, refreshTtl };
    return (await this.batch([op]))[0];
  }

  override async put(
    namespace: string[],
    key: string,
    value: Record<string, unknown>,
    index?: false | string[],
    options: { ttl?: number | null } = {},
  ): Promise<void> {
    validateNamespace(namespace);
    const op: EngramPutOperation = { namespace, key, value, index, ttl: options.ttl };
    await this.batch([op]);
  }

  /**
   * Runs ops as InMemoryStore does: the reads (gets, searches, namespace
   * listings) see the store as it was before the batch, then the puts apply,
   * the last put of a (namespace, key) winning. Results are in ops' order.
   */
  async batch<Op extends Operation[]>(operations: Op): Promise<OperationResults<Op>> {
    const results: unknown[] = new Array(operations.length).fill(undefined);
    const reads: (() => Promise<void>)[] = [];
    const puts = new Map<string, EngramPutOperation>();
    const searches: [number, EngramSearchOperation][] = [];
    const toRefresh: ItemKey[] = [];

    operations.forEach((op, i) => {
      if ("namespacePrefix" in op) {
        searches.push([i, op as EngramSearchOperation]);
      } else if ("value" in op) {
        const put = op as EngramPutOperation;
        validateNamespace(put.namespace, { allowReservedRoot: true });
        puts.set(JSON.stringify([put.namespace, put.key]), put);
        results[i] = undefined;
      } else if ("key" in op) {
        const get = op as EngramGetOperation;
        reads.push(async () => {
          const item = await this.#getItem(get.namespace, get.key);
          if (item && this.#refresh(get.refreshTtl)) refs(toRefresh, [item]);
          results[i] = item ? toItem(item) : null;
        });
      } else {
        const list = op as ListNamespacesOperation;
        reads.push(async () => {
          results[i] = await this.#listNamespaces(list);
        });
      }
    });

    // One embedding call for the batch's distinct queries.
    const queries = new Map<string, number[]>();
    if (this.#embedder) {
      const texts = [...new Set(searches.map(([, s]) => s.query).filter((q): q is string => !!q))];
      const vectors = await Promise.all(texts.map((q) => this.#embedder!.embedQuery(q)));
      texts.forEach((q, j) => queries.set(q, this.#checkDims(vectors[j], "query")));
    }
    for (const [i, s] of searches) {
      reads.push(async () => {
        const queryEmbedding = s.query ? queries.get(s.query) : undefined;
        const items = await this.#search(s, queryEmbedding);
        if (this.#refresh(s.refreshTtl)) refs(toRefresh, items);
        results[i] = items.map((it) => ({ ...toItem(it), score: queryEmbedding ? it.score : undefined }));
      });
    }
    await pool(reads);
    // After the reads, as LangGraph's refresh on read: renews what was read.
    for (let j = 0; j < toRefresh.length; j += REFRESH_BATCH_MAX) {
      await this.client.store.refresh(toRefresh.slice(j, j + REFRESH_BATCH_MAX));
    }

    const writes = [...puts.values()];
    const embeddings = await this.#embedPuts(writes);
    await pool(writes.map((p, j) => () => this.#put(p, embeddings[j])));
    return results as OperationResults<Op>;
  }

  async #getItem(namespace: string[], key: string): Promise<StoreItem | null> {
    try {
      return await this.client.store.get(namespace, key);
    } catch (e) {
      if (e instanceof EngramError && e.code === Code.NotFound) return null;
      throw e;
    }
  }

  /**
   * Up to s.limit items: where the server's reply byte budget ended a reply
   * early (truncated), asks again from the offset after its items. Each
   * reply holds at least one item, so this ends within limit calls. As with
   * any paging by offset, a put or delete between the calls can shift items
   * across the seam; an offset past the server's limit (10000) is refused
   * INVALID_ARGUMENT, not cut short.
   */
  async #search(s: EngramSearchOperation, queryEmbedding: number[] | undefined): Promise<StoreItem[]> {
    const limit = s.limit || DEFAULT_SEARCH_LIMIT;
    let offset = s.offset ?? 0;
    const items: StoreItem[] = [];
    for (;;) {
      const reply = await this.client.store.search({
        namespacePrefix: s.namespacePrefix,
        filterJson: filterJson(s.filter),
        queryEmbedding: queryEmbedding ?? [],
        limit: limit - items.length,
        offset,
      });
      items.push(...reply.items);
      if (!reply.truncated || reply.items.length === 0 || items.length >= limit) return items;
      offset += reply.items.length;
    }
  }

  async #listNamespaces(op: ListNamespacesOperation): Promise<string[][]> {
    const reply = await this.client.store.listNamespaces({
      match: (op.matchConditions ?? []).map((m) => ({
        type: m.matchType === "suffix" ? NamespaceMatch_Type.SUFFIX : NamespaceMatch_Type.PREFIX,
        path: m.path,
      })),
      maxDepth: op.maxDepth ?? 0,
      limit: op.limit ?? 100,
      offset: op.offset ?? 0,
    });
    return reply.namespaces.map((n) => n.labels);
  }

  async #put(op: EngramPutOperation, embedding: number[] | undefined): Promise<void> {
    if (op.value === null) {
      await this.client.store.delete(op.namespace, op.key);
      return;
    }
    const ttl = op.ttl === undefined ? this.ttl?.defaultTtl : op.ttl;
    await this.client.store.put({
      namespace: op.namespace,
      key: op.key,
      valueJson: JSON.stringify(op.value),
      embedding: embedding ?? [],
      ttlSeconds: ttl == null ? 0n : BigInt(ttlSeconds(ttl, "ttl")),
    });
  }

  /** Each put's embedding (undefined: none), from one embedDocuments call. */
  async #embedPuts(puts: EngramPutOperation[]): Promise<(number[] | undefined)[]> {
    const texts = puts.map((p) => (this.#embedder && p.value !== null && p.index !== false
      ? textOf(p.value, p.index ?? this.index?.fields ?? ["$"]) : undefined));
    const docs = texts.filter((t): t is string => t !== undefined);
    if (docs.length === 0) return texts.map(() => undefined);
    const vectors = await this.#embedder!.embedDocuments(docs);
    if (vectors.length !== docs.length) {
      throw new Error(`EngramStore: the embeddings model returned ${vectors.length} vectors for ${docs.length} texts`);
    }
    let j = 0;
    return texts.map((t) => (t === undefined ? undefined : this.#checkDims(vectors[j++], "embedding")));
  }

  #checkDims(v: number[], what: string): number[] {
    if (v.length !== this.index!.dims) {
      throw new Error(`EngramStore: the ${what} has ${v.length} dims, index.dims is ${this.index!.dims}`);
    }
    return v;
  }

  #refresh(asked: boolean | undefined): boolean {
    return asked ?? this.ttl?.refreshOnRead ?? true;
  }
}

function embedder(index: EngramIndexConfig): Embedder {
  if (!Number.isInteger(index.dims) || index.dims < 1 || index.dims > MAX_EMBEDDING_DIMS) {
    throw new RangeError(`EngramStore: index.dims must be 1..${MAX_EMBEDDING_DIMS}, got ${index.dims}`);
  }
  if (!!index.embeddings === !!index.embed) {
    throw new TypeError("EngramStore: index takes exactly one of embeddings (a LangChain model) and embed (a function)");
  }
  if (index.embeddings) return index.embeddings;
  const embed = index.embed!;
  return {
    embedDocuments: embed,
    embedQuery: async (text) => (await embed([text]))[0],
  };
}

/** The text embedded for value: its fields' texts, one document. */
function textOf(value: Record<string, unknown>, fields: string[]): string | undefined {
  const texts = fields.flatMap((f) => (f === "$" ? [JSON.stringify(value)] : getTextAtPath(value, f)));
  return texts.length ? texts.join("\n\n") : undefined;
}

/** LangGraph's TTL minutes as whole seconds (at least 1 for any positive TTL). */
function ttlSeconds(minutes: number, what: string): number {
  if (!Number.isFinite(minutes) || minutes <= 0) {
    throw new RangeError(`EngramStore: ${what} must be a positive number of minutes (or null: no expiry), got ${minutes}`);
  }
  return Math.max(1, Math.round(minutes * 60));
}

/** A LangGraph filter as SearchItemsRequest.filter_json ("" for none); see the note at the top. */
function filterJson(filter: Record<string, unknown> | undefined): string {
  if (!filter) return "";
  const eq: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(filter)) {
    const ops = v !== null && typeof v === "object" && !Array.isArray(v) ? Object.keys(v) : [];
    if (ops.length > 0 && ops.every((o) => o.startsWith("$"))) {
      if (ops.length !== 1 || ops[0] !== "$eq") {
        throw new Error(`EngramStore: filter "${k}": Engram matches equality only ({key: value} or {$eq: value}), not ${ops.join(", ")}`);
      }
      eq[k] = (v as Record<string, unknown>).$eq;
    } else {
      eq[k] = v;
    }
  }
  return Object.keys(eq).length ? JSON.stringify(eq) : "";
}

function toItem(it: StoreItem): Item {
  return {
    namespace: it.namespace,
    key: it.key,
    value: JSON.parse(it.valueJson) as Record<string, unknown>,
    createdAt: it.createTime ? timestampDate(it.createTime) : new Date(0),
    updatedAt: it.updateTime ? timestampDate(it.updateTime) : new Date(0),
  };
}

/** Adds the items that have a TTL (only those can be renewed). */
function refs(out: ItemKey[], items: StoreItem[]): void {
  for (const it of items) if (it.ttlSeconds > 0n) out.push({ namespace: it.namespace, key: it.key });
}

/** Runs tasks, at most BATCH_CONCURRENCY at a time; rejects with the first failure. */
async function pool(tasks: (() => Promise<void>)[]): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) await tasks[next++]();
  };
  await Promise.all(Array.from({ length: Math.min(BATCH_CONCURRENCY, tasks.length) }, worker));
}
