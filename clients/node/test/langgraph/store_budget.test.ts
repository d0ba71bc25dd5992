// EngramStore.search when engramd's reply byte budget (--max-reply-bytes, at
// its 1 MiB floor here) ends a SearchItems reply before its limit: the store
// asks again from where the reply stopped, so a search still returns every
// matching item up to its limit, in order, and never a silently short page.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { EngramStore, type Engram } from "../../src/index.js";
import { Server, uid } from "../harness.js";

const AGENT = "agent-token-store-budget";
const REPLY_BYTES = 1024 * 1024;
// About three items fit in one reply.
const ITEM_BYTES = 300 * 1024;
const ITEMS = 10;

describe("EngramStore under the reply byte budget", () => {
  let srv: Server;
  let e: Engram;
  let store: EngramStore;
  let calls = 0;

  before(async () => {
    srv = await new Server({ tokens: [["acme", "agent", AGENT]], args: ["--max-reply-bytes", String(REPLY_BYTES)] })
      .start();
    e = srv.client({ token: AGENT });
    // Counts SearchItems calls, to see the budget did cut the replies.
    const search = e.store.search.bind(e.store);
    e.store.search = (req, opts) => {
      calls++;
      return search(req, opts);
    };
    store = new EngramStore({ client: e });
  });
  after(async () => {
    e?.close();
    await srv?.close();
  });

  it("returns limit items across replies the budget cut, from any offset", async () => {
    const ns = ["budget", uid("n")];
    const keys = Array.from({ length: ITEMS }, (_, i) => `k${String(i).padStart(2, "0")}`);
    for (const key of keys) await store.put(ns, key, { key, pad: "x".repeat(ITEM_BYTES) });

    calls = 0;
    const all = await store.search(ns, { limit: ITEMS });
    assert.deepEqual(all.map((it) => it.key).sort(), keys);
    assert.ok(calls > 1, `one reply held all ${ITEMS} items of ${ITEM_BYTES} bytes (${calls} call): the budget did not cut it`);
    assert.ok(all.every((it) => (it.value.pad as string).length === ITEM_BYTES));

    // Pages by offset meet end to end: nothing skipped, nothing twice.
    const page1 = await store.search(ns, { limit: 4 });
    const page2 = await store.search(ns, { limit: 4, offset: 4 });
    const page3 = await store.search(ns, { limit: 4, offset: 8 });
    assert.deepEqual([page1.length, page2.length, page3.length], [4, 4, 2]);
    assert.deepEqual([...page1, ...page2, ...page3].map((it) => it.key), all.map((it) => it.key));
  });
});
