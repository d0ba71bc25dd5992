// engram-mcp with the MCP SDK's own Client, over stdio (spawned) and over
// streamable HTTP, against a real engramd: list the tools, call each, and
// see failures come back as tool errors while the server keeps serving.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { request as httpRequest } from "node:http";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { PKG, Server, cleanEnv, uid } from "./harness.js";

const MCP_BIN = join(PKG, "dist", "src", "mcp", "main.js");
const TOKEN = "agent-token-mcp";
const HTTP_TOKEN = "mcp-callers-token-0123456789";
const TOOLS = ["append_message", "forget", "get_context", "list_memories", "recall", "remember"];

type Result = { isError?: boolean; content: { type: string; text: string }[] };

function text(r: unknown): string {
  return (r as Result).content.map((c) => c.text).join("\n");
}
function json(r: unknown): any {
  assert.notEqual((r as Result).isError, true, text(r));
  return JSON.parse(text(r));
}

/** Every tool, called the way a model would, for one user. */
async function exercise(client: Client, other: Client) {
  const listed = await client.listTools();
  assert.deepEqual(listed.tools.map((t) => t.name).sort(), TOOLS);
  for (const t of listed.tools) {
    assert.ok((t.description ?? "").length > 40, `${t.name} has a description a model can follow`);
    assert.equal(t.inputSchema.type, "object");
    assert.equal((t.inputSchema.properties as Record<string, unknown>).user_id, undefined,
      "the user comes from the configuration, not the model");
  }
  const rem = json(await client.callTool({ name: "remember",
    arguments: { text: "Prefers oolong tea after lunch", type: "preference", tags: ["drink"], importance: 0.7 } }));
  assert.equal(rem.outcome, "CREATED");
  json(await client.callTool({ name: "remember", arguments: { text: "Has a dog named Pixel" } }));
  const rec = json(await client.callTool({ name: "recall", arguments: { query: "oolong tea", top_k: 5 } }));
  assert.equal(rec.results[0].memory_id, rem.memory_id);
  assert.equal(rec.results[0].type, "preference");
  const list = json(await client.callTool({ name: "list_memories", arguments: { page_size: 1 } }));
  assert.equal(list.memories.length, 1);
  assert.ok(list.next_page_token);
  const page2 = json(await client.callTool({ name: "list_memories", arguments: { page_size: 1, page_token: list.next_page_token } }));
  assert.equal(page2.memories.length, 1);
  assert.notEqual(page2.memories[0].memory_id, list.memories[0].memory_id);

  const first = json(await client.callTool({ name: "append_message", arguments: { role: "user", content: "hi there" } }));
  assert.ok(first.session_id);
  assert.equal(first.seq, "1", "int64 seq as a decimal string in JSON");
  const second = json(await client.callTool({ name: "append_message",
    arguments: { session_id: first.session_id, role: "assistant", content: "hello!" } }));
  assert.equal(second.seq, "2");
  const ctx = json(await client.callTool({ name: "get_context", arguments: { session_id: first.session_id } }));
  assert.deepEqual(ctx.messages.map((m: { role: string; content: string }) => `${m.role}:${m.content}`),
    ["user:hi there", "assistant:hello!"]);

  // Another user's engram-mcp sees neither the session nor the memory.
  const foreign = await other.callTool({ name: "get_context", arguments: { session_id: first.session_id } });
  assert.equal((foreign as Result).isError, true);
  assert.match(text(foreign), /NOT_FOUND/);
  const foreignForget = await other.callTool({ name: "forget", arguments: { memory_id: rem.memory_id } });
  assert.equal((foreignForget as Result).isError, true);

  const gone = json(await client.callTool({ name: "forget", arguments: { memory_id: rem.memory_id, purge: true } }));
  assert.equal(gone.purged, true);

  // Errors are tool results, and the server goes on answering.
  const missing = await client.callTool({ name: "forget", arguments: { memory_id: rem.memory_id } });
  assert.equal((missing as Result).isError, true);
  assert.match(text(missing), /NOT_FOUND|NotFound/);
  const bad = await client.callTool({ name: "get_context", arguments: { session_id: "no such session" } });
  assert.equal((bad as Result).isError, true);
  assert.match(text(bad), /session_id/);
  const invalid = await client.callTool({ name: "remember", arguments: { text: "" } });
  assert.equal((invalid as Result).isError, true, "a schema violation is a tool error too");
  assert.equal((await client.listTools()).tools.length, TOOLS.length);
}

function mcpEnv(srv: Server, user: string): Record<string, string> {
  return cleanEnv({ ENGRAM_TARGET: srv.addr, ENGRAM_TOKEN: TOKEN, ENGRAM_USER_ID: user });
}

describe("engram-mcp", () => {
  let srv: Server;
  before(async () => {
    srv = await new Server({ tokens: [["acme", "agent", TOKEN]] }).start();
  });
  after(async () => {
    await srv?.close();
  });

  async function connect(t: Transport): Promise<Client> {
    const c = new Client({ name: "engram-mcp-test", version: "0.0.0" });
    await c.connect(t);
    return c;
  }

  it("over stdio", async () => {
    const stdio = (user: string) => new StdioClientTransport({ command: process.execPath, args: [MCP_BIN],
      env: mcpEnv(srv, user), stderr: "pipe" });
    const a = await connect(stdio(uid("u")));
    const b = await connect(stdio(uid("u")));
    try {
      await exercise(a, b);
    } finally {
      await a.close();
      await b.close();
    }
  });

  const procs: ChildProcess[] = [];
  after(async () => {
    for (const p of procs) {
      if (p.exitCode !== null) continue;
      const exited = new Promise((r) => p.once("exit", r));
      p.kill("SIGTERM");
      await exited;
    }
  });
  /** engram-mcp over HTTP on a free loopback port; its /mcp URL. */
  const startHttp = async (user: string, args: string[] = [], env: Record<string, string> = {}): Promise<URL> => {
    const p = spawn(process.execPath, [MCP_BIN, "--transport", "http", "--port", "0", ...args],
      { env: { ...mcpEnv(srv, user), ENGRAM_MCP_HTTP_TOKEN: HTTP_TOKEN, ...env }, stdio: ["ignore", "ignore", "pipe"] });
    procs.push(p);
    let err = "";
    return new Promise<URL>((res, rej) => {
      p.stderr!.on("data", (d: Buffer) => {
        err += d.toString();
        const m = /listening on (http:\/\/127\.0\.0\.1:\d+\/mcp)/.exec(err);
        if (m) res(new URL(m[1]));
      });
      p.once("exit", (code) => rej(new Error(`engram-mcp exited with ${code}: ${err}`)));
    });
  };
  const authed = (url: URL) => new StreamableHTTPClientTransport(url,
    { requestInit: { headers: { authorization: `Bearer ${HTTP_TOKEN}` } } });

  it("over streamable HTTP (127.0.0.1 by default)", async () => {
    const a = await connect(authed(await startHttp(uid("u"))));
    const b = await connect(authed(await startHttp(uid("u"))));
    try {
      await exercise(a, b);
    } finally {
      await a.close();
      await b.close();
    }
  });

  /** A raw POST to the HTTP endpoint (node:http: fetch will not send another Host). */
  function post(url: URL, body: string, headers: Record<string, string> = {}) {
    return new Promise<{ status: number; type: string; text: string; www: string | undefined }>((resolve, reject) => {
      const req = httpRequest(url, { method: "POST", headers: { "content-type": "application/json",
        accept: "application/json, text/event-stream", ...headers } }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => (text += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, type: res.headers["content-type"] ?? "", text,
          www: res.headers["www-authenticate"] }));
      });
      // A 413 may close the socket before the whole body is sent.
      req.on("error", reject);
      req.end(body);
    });
  }
  const LIST = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" });
  const bearer = { authorization: `Bearer ${HTTP_TOKEN}` };

  it("HTTP: a caller without the right bearer token gets 401", async () => {
    const url = await startHttp(uid("u"));
    const hs: Record<string, string>[] = [{}, { authorization: "Bearer wrong" }, { authorization: `Bearer ${HTTP_TOKEN}x` },
      { authorization: HTTP_TOKEN }, { authorization: `Basic ${HTTP_TOKEN}` }];
    for (const h of hs) {
      const r = await post(url, LIST, h);
      assert.equal(r.status, 401, `${JSON.stringify(h)}: ${r.text}`);
      assert.equal(r.www, "Bearer");
      assert.match(r.type, /application\/json/);
    }
    const ok = await post(url, LIST, bearer);
    assert.equal(ok.status, 200, ok.text);
    assert.match(ok.text, /recall/);
  });

  it("HTTP: the Host header is checked; errors are short JSON, never a stack", async () => {
    const url = await startHttp(uid("u"));
    const evil = await post(url, LIST, { ...bearer, host: "evil.example" });
    assert.equal(evil.status, 403);
    const bad = await post(url, "{not json", bearer);
    assert.equal(bad.status, 400);
    assert.match(bad.type, /application\/json/);
    assert.equal(JSON.parse(bad.text).error.code, -32700);
    const big = await post(url, JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/call",
      params: { name: "append_message", arguments: { role: "user", content: "x".repeat(3_000_000) } } }), bearer);
    assert.equal(big.status, 413);
    assert.match(big.type, /application\/json/);
    for (const r of [evil, bad, big]) {
      assert.ok(r.text.length < 300 && !/node_modules|\/work\/|\bat [^ ]+ \(/.test(r.text), r.text);
    }
    const init = await post(url, JSON.stringify({ jsonrpc: "2.0", id: 3, method: "tools/call",
      params: { name: "recall", arguments: null } }), bearer);
    assert.equal(init.status, 200, init.text);
    const msg = JSON.parse(/^data: (.*)$/m.exec(init.text)?.[1] ?? init.text);
    assert.equal(msg.error?.code, -32602, init.text);
    assert.match(msg.error.message, /^params\.arguments: /, "the path named once");
    assert.ok(msg.error.message.length < 300, msg.error.message);
  });

  /** A POST whose body goes out in chunks (Transfer-Encoding: chunked, no Content-Length). */
  function postChunked(url: URL, chunks: string[], headers: Record<string, string> = {}) {
    return new Promise<{ status: number; type: string; text: string }>((resolve, reject) => {
      const req = httpRequest(url, { method: "POST", headers: { "content-type": "application/json",
        accept: "application/json, text/event-stream", ...headers } }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => (text += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, type: res.headers["content-type"] ?? "", text }));
      });
      req.on("error", reject);
      void (async () => {
        for (const c of chunks) {
          if (!req.write(c)) await once(req, "drain");
        }
        req.end();
      })().catch(reject);
    });
  }

  it("HTTP: a chunked body over the cap gets the 413, not a reset", async () => {
    const url = await startHttp(uid("u"));
    // 2 MB in 20 chunks, as a client streaming its body sends it while the
    // server has already answered.
    const chunks = ["[", ...Array.from({ length: 20 }, () => " ".repeat(100_000)), "]"];
    for (let i = 0; i < 3; i++) {
      const r = await postChunked(url, chunks, bearer);
      assert.equal(r.status, 413, r.text);
      assert.match(r.type, /application\/json/);
      assert.equal(JSON.parse(r.text).error.code, -32600);
    }
    const ok = await postChunked(url, [LIST.slice(0, 10), LIST.slice(10)], bearer);
    assert.equal(ok.status, 200, "a chunked body under the cap is served");
  });

  it("HTTP: --insecure-no-auth serves without a token on loopback only", async () => {
    const url = await startHttp(uid("u"), ["--insecure-no-auth"], { ENGRAM_MCP_HTTP_TOKEN: "" });
    const r = await post(url, LIST);
    assert.equal(r.status, 200, r.text);
  });

  it("HTTP: refuses to start without a token, or open on a public bind", async () => {
    const cases: [string[], Record<string, string>, RegExp][] = [
      [[], { ENGRAM_MCP_HTTP_TOKEN: "" }, /ENGRAM_MCP_HTTP_TOKEN/],
      [["--host", "0.0.0.0", "--insecure-no-auth"], { ENGRAM_MCP_HTTP_TOKEN: "" }, /loopback/],
      [["--host", "0.0.0.0"], {}, /--allowed-hosts/],
      [[], { ENGRAM_MCP_HTTP_TOKEN: "short" }, /at least/],
      // Authorization: Bearer <token> carries no whitespace: such a token could never match.
      [[], { ENGRAM_MCP_HTTP_TOKEN: "correct horse battery staple" }, /whitespace or control/],
      [[], { ENGRAM_MCP_HTTP_TOKEN: "0123456789abcdef\u0007" }, /whitespace or control/],
      [[], { ENGRAM_MCP_MAX_CONTENT_BYTES: "0" }, /ENGRAM_MCP_MAX_CONTENT_BYTES/],
      [[], { ENGRAM_MCP_MAX_CONTENT_BYTES: "64k" }, /ENGRAM_MCP_MAX_CONTENT_BYTES/],
      [[], { ENGRAM_MCP_MAX_CONTENT_BYTES: "16777217" }, /ENGRAM_MCP_MAX_CONTENT_BYTES/],
    ];
    for (const [args, env, want] of cases) {
      const p = spawn(process.execPath, [MCP_BIN, "--transport", "http", "--port", "0", ...args],
        { env: { ...mcpEnv(srv, "u"), ENGRAM_MCP_HTTP_TOKEN: HTTP_TOKEN, ...env }, stdio: ["ignore", "ignore", "pipe"] });
      procs.push(p);
      let err = "";
      p.stderr!.on("data", (d: Buffer) => {
        err += d.toString();
        if (/listening on/.test(err)) p.kill("SIGTERM"); // it started: the assertion below fails
      });
      const code = await new Promise((r) => p.once("exit", r));
      assert.equal(code, 2, `${args.join(" ")} ${JSON.stringify(env)}: ${err}`);
      assert.match(err, want);
    }
  });

  it("a message past the server's content limit is a tool error, before any call", async () => {
    const c = await connect(authed(await startHttp(uid("u"))));
    try {
      const r = await c.callTool({ name: "append_message", arguments: { role: "user", content: "é".repeat(40_000) } });
      assert.equal((r as Result).isError, true);
      assert.match(text(r), /at most 65536 bytes of UTF-8/, "refused by the schema, not by engramd");
    } finally {
      await c.close();
    }
  });

  it("ENGRAM_MCP_MAX_CONTENT_BYTES follows an engramd with a raised --max-content-bytes (the body cap with it)", async () => {
    const max = 262144;
    const big = await new Server({ tokens: [["acme", "agent", TOKEN]], args: ["--max-content-bytes", String(max)] }).start();
    const mcp = (await startHttp(uid("u"), [], { ENGRAM_TARGET: big.addr, ENGRAM_MCP_MAX_CONTENT_BYTES: String(max) }));
    const c = await connect(authed(mcp));
    try {
      // Control characters: JSON escapes each to 6 bytes (\u0001), so the
      // body (1.5 MB) passes the 1 MiB a fixed cap would allow.
      const content = "\u0001".repeat(max);
      const ok = json(await c.callTool({ name: "append_message", arguments: { role: "user", content } }));
      assert.equal(ok.seq, "1");
      const ctx = json(await c.callTool({ name: "get_context", arguments: { session_id: ok.session_id } }));
      assert.equal(ctx.messages[0].content, content);
      const over = await c.callTool({ name: "append_message", arguments: { role: "user", content: `${content}x` } });
      assert.equal((over as Result).isError, true);
      assert.match(text(over), new RegExp(`at most ${max} bytes of UTF-8`));
    } finally {
      await c.close();
      await big.close();
    }
  });

  it("refuses to start without a user", async () => {
    const p = spawn(process.execPath, [MCP_BIN], { env: cleanEnv({ ENGRAM_TARGET: srv.addr }), stdio: ["pipe", "ignore", "pipe"] });
    let err = "";
    p.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    const code = await new Promise((r) => p.once("exit", r));
    assert.equal(code, 2);
    assert.match(err, /ENGRAM_USER_ID/);
  });
});
