// EngramStore against a real engramd (and a replica): every operation kind of
// LangGraph's BaseStore, alone and in one batch; filters; TTL with refresh on
// read; vector search with a small deterministic embedding; namespace
// listing; a read on a replica that sees the primary's write.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { EngramStore, type Engram } from "../../src/index.js";
import { Server, delay, freePort, makeKeyring, uid } from "../harness.js";

const AGENT = "agent-token-store";
const REPL = "replica-token-store";
const TOKENS: [string, string, string][] = [["acme", "agent", AGENT], ["acme", "replica", REPL]];
const DIMS = 32;
const EXPIRY_WAIT_MS = 10_000;

/** A real (if tiny) embedding: character trigrams hashed into DIMS buckets, unit length. */
function trigramEmbed(text: string): number[] {
  const v = new Array<number>(DIMS).fill(0);
  const s = `  ${text.toLowerCase()} `;
  for (let i = 0; i + 3 <= s.length; i++) v[createHash("sha256").update(s.slice(i, i + 3)).digest()[0] % DIMS] += 1;
  const norm = Math.hypot(...v) || 1;
  return v.map((x) => x / norm);
}
const embed = async (texts: string[]) => texts.map(trigramEmbed);

describe("EngramStore", () => {
  let primary: Server;
  let replica: Server;
  let e: Engram;
  let store: EngramStore;
  const tmp = mkdtempSync(join(tmpdir(), "engram-node-store-"));

  before(async () => {
    const keyring = makeKeyring(join(tmp, "keyring"));
    primary = await new Server({ tokens: TOKENS, keyring, port: await freePort() }).start();
    replica = await new Server({
      tokens: TOKENS,
      keyring,
      args: ["--role", "replica", "--primary", primary.addr, "--replica-token", REPL, "--replica-id", "r1"],
    }).start();
    e = primary.client({ token: AGENT });
    store = new EngramStore({ client: e });
  });
  after(async () => {
    e?.close();
    await replica?.close();
    await primary?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  it("put, get, replace, delete (and a missing item is null)", async () => {
    const ns = [uid("docs"), "u1"];
    assert.equal(await store.get(ns, "k"), null);
    await store.put(ns, "k", { title: "first", n: 1 });
    const a = await store.get(ns, "k");
    assert.ok(a);
    assert.deepEqual(a.namespace, ns);
    assert.equal(a.key, "k");
    assert.deepEqual(a.value, { title: "first", n: 1 });
    assert.ok(a.createdAt instanceof Date && a.updatedAt instanceof Date);
    assert.ok(Math.abs(a.createdAt.getTime() - Date.now()) < 60_000);
    await delay(5);
    await store.put(ns, "k", { title: "second" });
    const b = await store.get(ns, "k");
    assert.deepEqual(b?.value, { title: "second" });
    assert.equal(b?.createdAt.getTime(), a.createdAt.getTime());
    assert.ok(b!.updatedAt.getTime() >= a.updatedAt.getTime());
    await store.delete(ns, "k");
    assert.equal(await store.get(ns, "k"), null);
    await store.delete(ns, "k"); // deleting what is gone is no error
  });

  it("one batch of every op kind: reads see the store before the batch's puts, results in order", async () => {
    const root = uid("b");
    await store.put([root, "x"], "old", { v: 1 });
    const results = await store.batch([
      { namespace: [root, "x"], key: "new", value: { v: 2 } },
      { namespace: [root, "x"], key: "old" },
      { namespace: [root, "x"], key: "new" },
      { namespacePrefix: [root], limit: 10, offset: 0 },
      { matchConditions: [{ matchType: "prefix", path: [root] }], limit: 10, offset: 0 },
      { namespace: [root, "x"], key: "old", value: null },
    ] as const);
    assert.equal(results[0], undefined);
    assert.deepEqual(results[1]?.value, { v: 1 });
    assert.equal(results[2], null);
    assert.deepEqual(results[3].map((i) => i.key), ["old"]);
    assert.deepEqual(results[4], [[root, "x"]]);
    assert.equal(results[5], undefined);
    assert.equal(await store.get([root, "x"], "old"), null);
    assert.deepEqual((await store.get([root, "x"], "new"))?.value, { v: 2 });
    // The last put of a key in a batch wins.
    await store.batch([
      { namespace: [root, "y"], key: "k", value: { n: 1 } },
      { namespace: [root, "y"], key: "k", value: { n: 2 } },
    ]);
    assert.deepEqual((await store.get([root, "y"], "k"))?.value, { n: 2 });
  });

  it("search: namespace prefix, equality filters, limit and offset, newest first", async () => {
    const root = uid("s");
    for (let i = 0; i < 5; i++) {
      await store.put([root, i % 2 ? "odd" : "even"], `k${i}`, { i, parity: i % 2 ? "odd" : "even", tag: { a: 1 } });
    }
    await store.put([`${root}x`], "other", { parity: "odd" }); // a label that only starts like root
    const all = await store.search([root], { limit: 100 });
    assert.deepEqual(all.map((i) => i.key), ["k4", "k3", "k2", "k1", "k0"]);
    assert.ok(all.every((i) => i.score === undefined));
    assert.deepEqual((await store.search([root, "odd"])).map((i) => i.key), ["k3", "k1"]);
    assert.deepEqual((await store.search([root], { filter: { parity: "even" } })).map((i) => i.key), ["k4", "k2", "k0"]);
    assert.deepEqual((await store.search([root], { filter: { i: { $eq: 3 }, parity: "odd" } })).map((i) => i.key), ["k3"]);
    assert.deepEqual((await store.search([root], { filter: { i: "3" } })).map((i) => i.key), [], "\"3\" is not 3");
    assert.deepEqual((await store.search([root], { filter: { tag: { a: 1 } }, limit: 1 })).map((i) => i.key), ["k4"]);
    assert.deepEqual((await store.search([root], { limit: 2, offset: 1 })).map((i) => i.key), ["k3", "k2"]);
    await assert.rejects(store.search([root], { filter: { i: { $gt: 1 } } }), /equality only.*\$gt/);
  });

  it("TTL in minutes: refresh on read renews it, refreshTtl false does not, expired items are gone", async () => {
    const ns = [uid("ttl")];
    const ttlStore = new EngramStore({ client: e, ttl: { defaultTtl: 1, refreshOnRead: true } });
    await ttlStore.put(ns, "a", { v: 1 });
    await ttlStore.put(ns, "forever", { v: 0 }, undefined, { ttl: null });
    const raw0 = await e.store.get(ns, "a");
    assert.equal(raw0.ttlSeconds, 60n);
    assert.equal((await e.store.get(ns, "forever")).expireTime, undefined);
    const t0 = raw0.expireTime!.seconds;

    await delay(1100);
    await ttlStore.get(ns, "a", { refreshTtl: false });
    assert.equal((await e.store.get(ns, "a")).expireTime!.seconds, t0);
    await ttlStore.get(ns, "a");
    const t1 = (await e.store.get(ns, "a")).expireTime!.seconds;
    assert.ok(t1 > t0, `refreshed expiry ${t1} > ${t0}`);

    await delay(1100);
    await ttlStore.search(ns);
    assert.ok((await e.store.get(ns, "a")).expireTime!.seconds > t1, "a search refreshes what it returns");

    // One second (1/60 minute): wait for the item to expire.
    await ttlStore.put(ns, "short", { v: 2 }, undefined, { ttl: 1 / 60 });
    const deadline = Date.now() + EXPIRY_WAIT_MS;
    while ((await ttlStore.get(ns, "short", { refreshTtl: false })) !== null) {
      assert.ok(Date.now() < deadline, "the 1 s item did not expire");
      await delay(100);
    }
    assert.deepEqual((await ttlStore.search(ns, { limit: 10 })).map((i) => i.key).sort(), ["a", "forever"]);
    assert.throws(() => new EngramStore({ client: e, ttl: { defaultTtl: 0 } }), /positive number of minutes/);
  });

  it("vector search: the query and the items' fields are embedded, ranked by cosine; index false embeds nothing", async () => {
    const root = uid("v");
    const vs = new EngramStore({ client: e, index: { dims: DIMS, embed, fields: ["text"] } });
    await vs.put([root], "py", { text: "python programming tutorial", other: "zebra" });
    await vs.put([root], "ts", { text: "typescript type system guide" });
    await vs.put([root], "cook", { text: "baking sourdough bread at home" });
    await vs.put([root], "plain", { text: "python programming tutorial" }, false);

    const hits = await vs.search([root], { query: "python tutorial", limit: 3 });
    assert.equal(hits[0].key, "py");
    assert.ok(hits.every((h) => typeof h.score === "number"));
    for (let i = 1; i < hits.length; i++) assert.ok(hits[i - 1].score! >= hits[i].score!);
    const direct = trigramEmbed("python tutorial");
    const doc = trigramEmbed("python programming tutorial");
    const cos = direct.reduce((s, x, i) => s + x * doc[i], 0);
    assert.ok(Math.abs(hits[0].score! - cos) < 1e-4, `score ${hits[0].score} is the cosine ${cos}`);
    assert.ok(!hits.some((h) => h.key === "plain" && h.score! > 0.5), "index false stored no embedding");
    // A put's index overrides the store's fields.
    await vs.put([root], "zeb", { text: "nothing alike", other: "zebra stripes" }, ["other"]);
    assert.equal((await vs.search([root], { query: "zebra stripes", limit: 1 }))[0].key, "zeb");
    // Filter and query together.
    assert.deepEqual((await vs.search([root], { query: "python", filter: { text: "typescript type system guide" } }))
      .map((h) => h.key), ["ts"]);
    // Without an index the query is ignored: newest first, no scores.
    const noIndex = await store.search([root], { query: "python tutorial", limit: 2 });
    assert.deepEqual(noIndex.map((h) => [h.key, h.score]), [["zeb", undefined], ["plain", undefined]]);
    assert.throws(() => new EngramStore({ client: e, index: { dims: DIMS } }), /exactly one of embeddings/);
    assert.throws(() => new EngramStore({ client: e, index: { dims: 4097, embed } }), /index.dims must be/);
    const wrong = new EngramStore({ client: e, index: { dims: 16, embed } });
    await assert.rejects(wrong.put([root], "w", { text: "x" }), /32 dims, index.dims is 16/);
  });

  it("listNamespaces: prefix, suffix with wildcards, max depth, limit and offset", async () => {
    const root = uid("n");
    for (const ns of [[root, "a", "v1"], [root, "a", "v2"], [root, "b", "v1"], [root, "b", "c", "v1"]]) {
      await store.put(ns, "k", { x: 1 });
    }
    assert.deepEqual(await store.listNamespaces({ prefix: [root] }),
      [[root, "a", "v1"], [root, "a", "v2"], [root, "b", "c", "v1"], [root, "b", "v1"]]);
    assert.deepEqual(await store.listNamespaces({ prefix: [root], suffix: ["v1"] }),
      [[root, "a", "v1"], [root, "b", "c", "v1"], [root, "b", "v1"]]);
    assert.deepEqual(await store.listNamespaces({ prefix: [root, "*", "v1"] }), [[root, "a", "v1"], [root, "b", "v1"]]);
    assert.deepEqual(await store.listNamespaces({ prefix: [root], maxDepth: 2 }), [[root, "a"], [root, "b"]]);
    assert.deepEqual(await store.listNamespaces({ prefix: [root], limit: 2, offset: 1 }),
      [[root, "a", "v2"], [root, "b", "c", "v1"]]);
  });

  it("a store over a replica reads the primary's writes (read-your-writes through engram-min-lsn)", async () => {
    const r = replica.client({ token: AGENT });
    try {
      const onReplica = new EngramStore({ client: r, index: { dims: DIMS, embed } });
      const onPrimary = new EngramStore({ client: e, index: { dims: DIMS, embed } });
      const ns = [uid("r"), "docs"];
      for (let i = 0; i < 5; i++) {
        await onPrimary.put(ns, `k${i}`, { text: `note number ${i}` });
        r.observeLsn(e.lsn);
        assert.deepEqual((await onReplica.get(ns, `k${i}`))?.value, { text: `note number ${i}` });
      }
      assert.equal((await onReplica.search(ns, { query: "note number 3", limit: 1 }))[0].key, "k3");
      assert.deepEqual(await onReplica.listNamespaces({ prefix: [ns[0]] }), [ns]);
    } finally {
      r.close();
    }
  });
});
