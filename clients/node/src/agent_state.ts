// The agent-state namespaces of the Engram client: checkpoints (per user and
// thread) and the tenant's namespaced store, over CheckpointService and
// StoreService. The LangGraph saver and store (src/langgraph/) build on them.
import type { CallOpts, Engram } from "./client.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  Checkpoint,
  DeleteItemResponse,
  DeleteThreadResponse,
  GetCheckpointRequestSchema,
  ListCheckpointsRequestSchema,
  ListCheckpointsResponse,
  ListNamespacesRequestSchema,
  ListNamespacesResponse,
  PutCheckpointRequestSchema,
  PutCheckpointResponse,
  PutItemRequestSchema,
  PutWritesRequestSchema,
  PutWritesResponse,
  RefreshItemsResponse,
  SearchItemsRequestSchema,
  SearchItemsResponse,
  StoreItem,
} from "./gen/engram/v1/agent_state_pb.js";

export class Checkpoints {
  constructor(private readonly e: Engram) {}

  /** Stores a checkpoint; the same ids again replace it, so it is retried. */
  put(req: MessageInitShape<typeof PutCheckpointRequestSchema>, opts?: CallOpts): Promise<PutCheckpointResponse> {
    return this.e.call("PutCheckpoint", this.e.rpc.checkpoint.putCheckpoint, req, "idempotent", opts);
  }
  /** checkpointId's, or the newest of (threadId, checkpointNs) when empty. */
  get(req: MessageInitShape<typeof GetCheckpointRequestSchema>, opts?: CallOpts): Promise<Checkpoint> {
    return this.e.call("GetCheckpoint", this.e.rpc.checkpoint.getCheckpoint, req, "read", opts);
  }
  /** One page, newest first. */
  list(req: MessageInitShape<typeof ListCheckpointsRequestSchema>, opts?: CallOpts): Promise<ListCheckpointsResponse> {
    return this.e.call("ListCheckpoints", this.e.rpc.checkpoint.listCheckpoints, req, "read", opts);
  }
  /** Every checkpoint matching req, newest first, page after page. */
  async *iterate(req: MessageInitShape<typeof ListCheckpointsRequestSchema>, opts?: CallOpts): AsyncGenerator<Checkpoint> {
    let pageToken = req.pageToken ?? "";
    do {
      const page = await this.list({ ...req, pageToken }, opts);
      yield* page.checkpoints;
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
  }
  /** A retry stores nothing twice (see PutWrites), so it is retried. */
  putWrites(req: MessageInitShape<typeof PutWritesRequestSchema>, opts?: CallOpts): Promise<PutWritesResponse> {
    return this.e.call("PutWrites", this.e.rpc.checkpoint.putWrites, req, "idempotent", opts);
  }
  deleteThread(userId: string, threadId: string, opts?: CallOpts): Promise<DeleteThreadResponse> {
    return this.e.call("DeleteThread", this.e.rpc.checkpoint.deleteThread, { userId, threadId }, "idempotent", opts);
  }
}

export class Store {
  constructor(private readonly e: Engram) {}

  /** Creates or replaces an item (a retry writes the same), so it is retried. */
  put(req: MessageInitShape<typeof PutItemRequestSchema>, opts?: CallOpts): Promise<StoreItem> {
    return this.e.call("PutItem", this.e.rpc.store.putItem, req, "idempotent", opts);
  }
  get(namespace: string[], key: string, opts?: CallOpts): Promise<StoreItem> {
    return this.e.call("GetItem", this.e.rpc.store.getItem, { namespace, key }, "read", opts);
  }
  delete(namespace: string[], key: string, opts?: CallOpts): Promise<DeleteItemResponse> {
    return this.e.call("DeleteItem", this.e.rpc.store.deleteItem, { namespace, key }, "idempotent", opts);
  }
  search(req: MessageInitShape<typeof SearchItemsRequestSchema>, opts?: CallOpts): Promise<SearchItemsResponse> {
    return this.e.call("SearchItems", this.e.rpc.store.searchItems, req, "read", opts);
  }
  listNamespaces(
    req: MessageInitShape<typeof ListNamespacesRequestSchema>,
    opts?: CallOpts,
  ): Promise<ListNamespacesResponse> {
    return this.e.call("ListNamespaces", this.e.rpc.store.listNamespaces, req, "read", opts);
  }
  /** Renews the expiry of items with a TTL (refresh on read). */
  refresh(items: { namespace: string[]; key: string }[], opts?: CallOpts): Promise<RefreshItemsResponse> {
    return this.e.call("RefreshItems", this.e.rpc.store.refreshItems, { items }, "idempotent", opts);
  }
}
