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
import { readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { createMcpExpressApp } from "@modelcontextprotocol/sdk/server/express.js";
import { Engram } from "../index.js";
import { buildServer, VERSION, type ToolConfig } from "./tools.js";

const USAGE = `usage: engram-mcp [--transport stdio|http] [--host H] [--port P] [--target HOST:PORT]
                  [--user-id ID] [--token-file PATH] [--version]
environment: ENGRAM_TARGET ENGRAM_TOKEN ENGRAM_TOKEN_FILE ENGRAM_TLS ENGRAM_USER_ID
             ENGRAM_MCP_USER_ID_FROM_TOOL ENGRAM_AGENT_ID ENGRAM_MCP_TRANSPORT ENGRAM_MCP_HOST ENGRAM_MCP_PORT`;

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
  const tokenFile = v["token-file"] ?? env.ENGRAM_TOKEN_FILE;
  let token = env.ENGRAM_TOKEN || undefined;
  if (tokenFile) {
    try {
      token = readFileSync(tokenFile, "utf8").split("\n")[0].trim();
    } catch (e) {
      fail(`token file ${tokenFile}: ${(e as Error).message}`);
    }
  }
  const tools: ToolConfig = {
    userId: v["user-id"] ?? env.ENGRAM_USER_ID ?? "",
    userIdFromTool: env.ENGRAM_MCP_USER_ID_FROM_TOOL === "1",
    agentId: env.ENGRAM_AGENT_ID ?? "engram-mcp",
  };
  if (!tools.userId && !tools.userIdFromTool) {
    fail("no user: set ENGRAM_USER_ID (or ENGRAM_MCP_USER_ID_FROM_TOOL=1 to let tools name the user)");
  }
  return {
    transport, port, host: v.host ?? env.ENGRAM_MCP_HOST ?? "127.0.0.1",
    target: v.target ?? env.ENGRAM_TARGET ?? "127.0.0.1:50051",
    token, tls: env.ENGRAM_TLS === "1", tools,
  };
}

async function main() {
  const cfg = config();
  const engram = new Engram({ target: cfg.target, token: cfg.token, tls: cfg.tls });
  if (cfg.transport === "stdio") {
    await buildServer(engram, cfg.tools).connect(new StdioServerTransport());
    return;
  }
  // Stateless streamable HTTP: a fresh MCP server per request, all over one
  // Engram connection. The express app checks the Host header against the
  // bound host (DNS-rebinding protection for a localhost server).
  const app = createMcpExpressApp({ host: cfg.host });
  app.post("/mcp", async (req: IncomingMessage & { body?: unknown }, res: ServerResponse) => {
    const server = buildServer(engram, cfg.tools);
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    res.on("close", () => {
      void transport.close();
      void server.close();
    });
    try {
      await server.connect(transport);
      await transport.handleRequest(req, res, req.body);
    } catch (e) {
      process.stderr.write(`engram-mcp: ${(e as Error).stack ?? e}\n`);
      if (!res.headersSent) {
        res.writeHead(500, { "content-type": "application/json" }).end(
          JSON.stringify({ jsonrpc: "2.0", error: { code: -32603, message: "internal error" }, id: null }));
      }
    }
  });
  const notAllowed = (_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(405, { "content-type": "application/json", allow: "POST" }).end(
      JSON.stringify({ jsonrpc: "2.0", error: { code: -32000, message: "Method not allowed (stateless server: POST only)." }, id: null }));
  };
  app.get("/mcp", notAllowed);
  app.delete("/mcp", notAllowed);
  const http = app.listen(cfg.port, cfg.host, () => {
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
