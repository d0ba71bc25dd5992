// engram-mcp with the MCP SDK's own Client, over stdio (spawned) and over
// streamable HTTP, against a real engramd: list the tools, call each, and
// see failures come back as tool errors while the server keeps serving.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { PKG, Server, cleanEnv, uid } from "./harness.js";

const MCP_BIN = join(PKG, "dist", "src", "mcp", "main.js");
const TOKEN = "agent-token-mcp";
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

  it("over streamable HTTP (127.0.0.1 by default)", async () => {
    const procs: ChildProcess[] = [];
    const start = async (user: string): Promise<URL> => {
      const p = spawn(process.execPath, [MCP_BIN, "--transport", "http", "--port", "0"],
        { env: mcpEnv(srv, user), stdio: ["ignore", "ignore", "pipe"] });
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
    try {
      const a = await connect(new StreamableHTTPClientTransport(await start(uid("u"))));
      const b = await connect(new StreamableHTTPClientTransport(await start(uid("u"))));
      try {
        await exercise(a, b);
      } finally {
        await a.close();
        await b.close();
      }
    } finally {
      for (const p of procs) {
        const exited = new Promise((r) => p.once("exit", r));
        p.kill("SIGTERM");
        await exited;
      }
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
