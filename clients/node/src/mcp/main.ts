#!/usr/bin/env node
// engram-mcp: Engram's memories and sessions as MCP tools, over stdio (the
// default, for a client that spawns it) or streamable HTTP.
//
// Configuration (flags win over the environment):
//   ENGRAM_TARGET            engramd address, default 127.0.0.1:50051
//   ENGRAM_TOKEN             bearer token, or ENGRAM_TOKEN_FILE (first line)
//   ENGRAM_TLS=1             TLS with the system CAs (or an https:// target)
//   ENGRAM_USER_ID           the user the tools act for (required unless
//   ENGRAM_MCP_USER_ID_FROM_TOOL=1, which gives every tool a user_id argument)
//   ENGRAM_AGENT_ID          agent_id on memories and sessions it creates
//   --transport stdio|http   or ENGRAM_MCP_TRANSPORT
//   --host H --port P        HTTP only (ENGRAM_MCP_HOST / ENGRAM_MCP_PORT):
//                            default 127.0.0.1:8787; the endpoint is /mcp
//   ENGRAM_MCP_HTTP_TOKEN    HTTP only: the bearer token callers must send
//   --http-token-file PATH   (or ENGRAM_MCP_HTTP_TOKEN_FILE, first line);
//                            required unless --insecure-no-auth on loopback
//   --allowed-hosts A,B      HTTP only (ENGRAM_MCP_ALLOWED_HOSTS): Host header
//                            names accepted; default: the bound host (and
//                            localhost names on loopback); required on 0.0.0.0/::
//   ENGRAM_MCP_MAX_CONTENT_BYTES  largest message content (engramd's
//                            --max-content-bytes), default 65536
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { isIP, type AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { Engram } from "../index.js";
import {
  buildServer, DEFAULT_MAX_CONTENT_BYTES, guardParams, MAX_CONTENT_BYTES_LIMIT, VERSION, type ToolConfig,
} from "./tools.js";

const USAGE = `usage: engram-mcp [--transport stdio|http] [--host H] [--port P] [--target HOST:PORT]
                  [--user-id ID] [--token-file PATH] [--http-token-file PATH]
                  [--allowed-hosts H1,H2] [--insecure-no-auth] [--version]
environment: ENGRAM_TARGET ENGRAM_TOKEN ENGRAM_TOKEN_FILE ENGRAM_TLS ENGRAM_USER_ID
             ENGRAM_MCP_USER_ID_FROM_TOOL ENGRAM_AGENT_ID ENGRAM_MCP_TRANSPORT ENGRAM_MCP_HOST ENGRAM_MCP_PORT
             ENGRAM_MCP_HTTP_TOKEN ENGRAM_MCP_HTTP_TOKEN_FILE ENGRAM_MCP_ALLOWED_HOSTS
             ENGRAM_MCP_MAX_CONTENT_BYTES`;

/**
 * Room in an HTTP request body besides a message's content: the JSON-RPC
 * envelope and the other arguments (the largest, remember's text of 16384
 * UTF-16 units, escapes to 98304 bytes).
 */
const BODY_SLACK_BYTES = 256 * 1024;
/**
 * Largest HTTP request body for a content cap: the content, which JSON
 * escapes to at most 6x its bytes (\u00XX), plus the rest of the request.
 */
function maxBodyBytes(maxContentBytes: number): number {
  return 6 * maxContentBytes + BODY_SLACK_BYTES;
}
/**
 * How long the rest of a body over the cap is still read (and dropped)
 * before the 413 goes out, for a client that sends it slowly.
 */
const DRAIN_MS = 10_000;
/** Shortest token accepted for HTTP callers (a guessable one is no protection). */
const MIN_HTTP_TOKEN_CHARS = 16;

function fail(msg: string): never {
  process.stderr.write(`engram-mcp: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

function config() {
  let v;
  try {
    v = parseArgs({
      options: {
        transport: { type: "string" }, host: { type: "string" }, port: { type: "string" },
        target: { type: "string" }, "user-id": { type: "string" }, "token-file": { type: "string" },
        "http-token-file": { type: "string" }, "allowed-hosts": { type: "string" },
        "insecure-no-auth": { type: "boolean" },
        version: { type: "boolean" }, help: { type: "boolean" },
      },
    }).values;
  } catch (e) {
    fail((e as Error).message);
  }
  if (v.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  if (v.version) {
    process.stdout.write(`engram-mcp ${VERSION}\n`);
    process.exit(0);
  }
  const env = process.env;
  const transport = v.transport ?? env.ENGRAM_MCP_TRANSPORT ?? "stdio";
  if (transport !== "stdio" && transport !== "http") fail(`--transport: must be stdio or http (got ${transport})`);
  const portText = v.port ?? env.ENGRAM_MCP_PORT ?? "8787";
  const port = Number(portText);
  if (!/^[0-9]{1,5}$/.test(portText) || port > 65535) fail(`--port: not a port number: ${portText}`);
  const token = secret(env.ENGRAM_TOKEN, v["token-file"] ?? env.ENGRAM_TOKEN_FILE);
  const host = v.host ?? env.ENGRAM_MCP_HOST ?? "127.0.0.1";
  const http = transport === "http" ? httpAuth(v, host) : undefined;
  const tools: ToolConfig = {
    userId: v["user-id"] ?? env.ENGRAM_USER_ID ?? "",
    userIdFromTool: env.ENGRAM_MCP_USER_ID_FROM_TOOL === "1",
    agentId: env.ENGRAM_AGENT_ID ?? "engram-mcp",
    maxContentBytes: maxContentBytes(env.ENGRAM_MCP_MAX_CONTENT_BYTES),
  };
  if (!tools.userId && !tools.userIdFromTool) {
    fail("no user: set ENGRAM_USER_ID (or ENGRAM_MCP_USER_ID_FROM_TOOL=1 to let tools name the user)");
  }
  return {
    transport, port, host, http,
    target: v.target ?? env.ENGRAM_TARGET ?? "127.0.0.1:50051",
    token, tls: env.ENGRAM_TLS === "1", tools,
  };
}

/** ENGRAM_MCP_MAX_CONTENT_BYTES: engramd's --max-content-bytes, in its range. */
function maxContentBytes(text: string | undefined): number {
  if (text === undefined || text === "") return DEFAULT_MAX_CONTENT_BYTES;
  const n = Number(text);
  if (!/^[0-9]{1,8}$/.test(text) || n < 1 || n > MAX_CONTENT_BYTES_LIMIT) {
    fail(`ENGRAM_MCP_MAX_CONTENT_BYTES: a byte count from 1 to ${MAX_CONTENT_BYTES_LIMIT} ` +
      `(engramd's --max-content-bytes), not ${JSON.stringify(text)}`);
  }
  return n;
}

/** A token from the environment, or a file's first line (which wins). */
function secret(value: string | undefined, file: string | undefined): string | undefined {
  if (!file) return value || undefined;
  try {
    return readFileSync(file, "utf8").split("\n")[0].trim() || undefined;
  } catch (e) {
    fail(`token file ${file}: ${(e as Error).message}`);
  }
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || (isIP(host) === 4 && host.startsWith("127."));
}

/**
 * Who may call over HTTP: the callers' bearer token (undefined only with
 * --insecure-no-auth, on loopback) and the Host header names accepted.
 * engram-mcp acts with its own engramd token for whoever calls it, so an
 * open endpoint would hand that credential to anyone who can connect.
 */
function httpAuth(v: Record<string, string | boolean | undefined>, host: string) {
  const env = process.env;
  const token = secret(env.ENGRAM_MCP_HTTP_TOKEN, (v["http-token-file"] as string | undefined) ?? env.ENGRAM_MCP_HTTP_TOKEN_FILE);
  const insecure = v["insecure-no-auth"] === true;
  if (insecure && !isLoopback(host)) {
    fail(`--insecure-no-auth: only on a loopback host (127.0.0.1, ::1, localhost), not ${host}`);
  }
  if (!token && !insecure) {
    fail("--transport http: callers must authenticate: set ENGRAM_MCP_HTTP_TOKEN or --http-token-file " +
      "(or --insecure-no-auth, on a loopback host only)");
  }
  if (token && token.length < MIN_HTTP_TOKEN_CHARS) {
    fail(`ENGRAM_MCP_HTTP_TOKEN: at least ${MIN_HTTP_TOKEN_CHARS} characters`);
  }
  // Callers send it as one word of a header (Authorization: Bearer <token>):
  // with whitespace, a control or a non-ASCII character it could never match.
  if (token && !/^[\x21-\x7e]+$/.test(token)) {
    fail("ENGRAM_MCP_HTTP_TOKEN: whitespace or control characters (or non-ASCII ones) " +
      "can never match Authorization: Bearer <token>; use printable ASCII");
  }
  const list = (v["allowed-hosts"] as string | undefined) ?? env.ENGRAM_MCP_ALLOWED_HOSTS;
  let allowed: string[];
  if (list) {
    allowed = list.split(",").map((h) => h.trim().toLowerCase()).filter((h) => h !== "");
  } else if (host === "0.0.0.0" || host === "::") {
    fail(`--host ${host}: name the Host header values to accept with --allowed-hosts (e.g. mcp.example.com)`);
  } else if (isLoopback(host)) {
    allowed = ["localhost", "127.0.0.1", "[::1]"];
  } else {
    allowed = [isIP(host) === 6 ? `[${host}]` : host.toLowerCase()];
  }
  return { digest: token ? sha256(token) : undefined, allowed };
}

function sha256(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

/** Authorization: Bearer <token>, compared in constant time (as digests, so lengths leak nothing). */
function authorized(req: IncomingMessage, digest: Buffer | undefined): boolean {
  if (!digest) return true;
  const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? "");
  return m !== null && timingSafeEqual(sha256(m[1]), digest);
}

function hostAllowed(req: IncomingMessage, allowed: string[]): boolean {
  try {
    return allowed.includes(new URL(`http://${req.headers.host ?? ""}`).hostname.toLowerCase());
  } catch {
    return false;
  }
}

/** A short JSON-RPC error reply (never an internal detail). */
function reply(res: ServerResponse, status: number, code: number, message: string, extra: Record<string, string> = {}) {
  if (res.headersSent) return void res.end();
  res.writeHead(status, { "content-type": "application/json", ...extra })
    .end(JSON.stringify({ jsonrpc: "2.0", error: { code, message }, id: null }));
}

/**
 * The request body, at most max bytes; undefined after replying 413.
 * A body over the cap is read to its end and dropped (for at most DRAIN_MS)
 * before the 413, which closes the connection once flushed: a socket closed
 * with input still unread is reset, and a client still sending (most send
 * the whole body before they read) would get the reset, not the 413.
 */
function readBody(req: IncomingMessage, res: ServerResponse, max: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let n = 0;
    let drain: NodeJS.Timeout | undefined;
    const refuse = () => {
      chunks.length = 0;
      drain = setTimeout(answer, DRAIN_MS);
    };
    const answer = () => {
      clearTimeout(drain);
      reply(res, 413, -32600, `request body over ${max} bytes`, { connection: "close" });
      resolve(undefined);
    };
    if (Number(req.headers["content-length"] ?? 0) > max) refuse();
    req.on("data", (c: Buffer) => {
      if (drain !== undefined) return;
      n += c.length;
      if (n > max) refuse();
      else chunks.push(c);
    });
    req.on("end", () => (drain !== undefined ? answer() : resolve(Buffer.concat(chunks).toString("utf8"))));
    // The client went away mid-body ("aborted"): no one to answer.
    const gone = () => {
      clearTimeout(drain);
      resolve(undefined);
    };
    req.on("error", gone);
    req.on("close", gone);
  });
}

async function main() {
  const cfg = config();
  const engram = new Engram({ target: cfg.target, token: cfg.token, tls: cfg.tls });
  if (cfg.transport === "stdio") {
    const transport = new StdioServerTransport();
    await buildServer(engram, cfg.tools).connect(transport);
    guardParams(transport);
    return;
  }
  // Stateless streamable HTTP: a fresh MCP server per request, all over one
  // Engram connection. Every request: Host header checked (DNS rebinding),
  // then the caller's token, then a bounded body; failures are short JSON.
  const auth = cfg.http!;
  const maxBody = maxBodyBytes(cfg.tools.maxContentBytes);
  const http = createServer((req, res) => {
    void handle(req, res).catch((e) => {
      process.stderr.write(`engram-mcp: ${(e as Error).stack ?? e}\n`);
      reply(res, 500, -32603, "internal error");
    });
  });
  async function handle(req: IncomingMessage, res: ServerResponse) {
    if (!hostAllowed(req, auth.allowed)) return reply(res, 403, -32000, "Host header not allowed");
    if (new URL(req.url ?? "/", "http://x").pathname !== "/mcp") return reply(res, 404, -32000, "not found (the endpoint is /mcp)");
    if (req.method !== "POST") {
      return reply(res, 405, -32000, "method not allowed (stateless server: POST only)", { allow: "POST" });
    }
    if (!authorized(req, auth.digest)) {
      return reply(res, 401, -32000, "unauthorized: send Authorization: Bearer <token>", { "www-authenticate": "Bearer" });
    }
    const text = await readBody(req, res, maxBody);
    if (text === undefined) return;
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return reply(res, 400, -32700, "parse error: the body is not JSON");
    }
    const server = buildServer(engram, cfg.tools);
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    res.on("close", () => {
      void transport.close();
      void server.close();
    });
    await server.connect(transport);
    guardParams(transport);
    await transport.handleRequest(req, res, body);
  }
  http.listen(cfg.port, cfg.host, () => {
    const a = http.address() as AddressInfo;
    // Tests and wrappers read the bound port (--port 0) from this line.
    process.stderr.write(`engram-mcp: listening on http://${cfg.host}:${a.port}/mcp (engramd ${cfg.target})\n`);
  });
  http.on("error", (e: Error) => {
    process.stderr.write(`engram-mcp: ${e.message}\n`);
    process.exit(1);
  });
  const stop = () => {
    http.close(() => process.exit(0));
    http.closeAllConnections();
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

main().catch((e) => {
  process.stderr.write(`engram-mcp: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
