// Starts a real engramd ($ENGRAMD, default ../../build/engramd) on loopback
// with a temp data dir, as tests/e2e/harness.py does for the Python tests.
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Engram, type EngramOptions } from "../src/index.js";

export const PKG = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const REPO = resolve(PKG, "..", "..");
export const ENGRAMD = process.env.ENGRAMD || join(REPO, "build", "engramd");
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 15_000;
const LISTEN_RE = /engramd: listening on 127\.0\.0\.1:(\d+)/;

export function uid(prefix = "t"): string {
  return `${prefix}-${randomBytes(8).toString("hex")}`;
}

/** The environment without ENGRAM_* (engramd reads settings from those). */
export function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("ENGRAM_") && v !== undefined) env[k] = v;
  return { ...env, ...extra };
}

/** A loopback port free a moment ago (for a server that must keep its address). */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

export function writeTokens(path: string, entries: [tenant: string, role: string, token: string][]): string {
  const lines = entries.map(([t, r, tok]) => `${t} ${r} ${createHash("sha256").update(tok).digest("hex")}`);
  writeFileSync(path, `# tenant role sha256-hex-of-token\n${lines.join("\n")}\n`, { mode: 0o600 });
  return path;
}

export function makeKeyring(path: string): string {
  writeFileSync(path, `primary 1\nkey 1 ${randomBytes(32).toString("base64")}\n`, { mode: 0o600 });
  return path;
}

export interface ServerOpts {
  tokens?: [string, string, string][];
  keyring?: string;
  port?: number;
  args?: string[];
}

export class Server {
  readonly tmp = mkdtempSync(join(tmpdir(), "engram-node-"));
  readonly dataDir = join(this.tmp, "data");
  readonly logPath = join(this.tmp, "engramd.log");
  proc: ChildProcess | undefined;
  port = 0;
  readonly #argv: string[];

  constructor(readonly opts: ServerOpts = {}) {
    this.#argv = ["--listen", `127.0.0.1:${opts.port ?? 0}`, "--data-dir", this.dataDir];
    if (opts.tokens) this.#argv.push("--tokens", writeTokens(join(this.tmp, "tokens"), opts.tokens));
    if (opts.keyring) this.#argv.push("--keyring", opts.keyring);
    this.#argv.push(...(opts.args ?? []));
  }

  get addr(): string {
    return `127.0.0.1:${this.port}`;
  }

  log(): string {
    try {
      return readFileSync(this.logPath, "utf8");
    } catch {
      return "";
    }
  }

  /** Starts engramd; resolves once it logged its port and answers Health (a replica: any answer). */
  async start(): Promise<this> {
    const fd = openSync(this.logPath, "a");
    this.proc = spawn(ENGRAMD, this.#argv, { stdio: ["ignore", fd, fd], env: cleanEnv() });
    closeSync(fd);
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      const m = LISTEN_RE.exec(this.log());
      if (m) {
        this.port = Number(m[1]);
        break;
      }
      if (this.proc.exitCode !== null) throw new Error(`engramd exited early:\n${this.log()}`);
      await delay(20);
    }
    if (!this.port) throw new Error(`engramd did not listen within ${START_TIMEOUT_MS} ms:\n${this.log()}`);
    const c = new Engram({ target: this.addr, deadlineMs: 1000, retries: 1 });
    try {
      while (Date.now() < deadline) {
        try {
          if ((await c.admin.health()) || this.log().includes("engramd: replica of")) return this;
        } catch {
          /* not up yet */
        }
        await delay(20);
      }
    } finally {
      c.close();
    }
    throw new Error(`engramd not SERVING within ${START_TIMEOUT_MS} ms:\n${this.log()}`);
  }

  /** SIGTERM by PID, waits for the exit; throws on an unclean one or a sanitizer report. */
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p) return;
    this.proc = undefined;
    if (p.exitCode === null && p.signalCode === null) {
      const exited = new Promise<void>((res) => p.once("exit", () => res()));
      p.kill("SIGTERM");
      const t = setTimeout(() => p.kill("SIGKILL"), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(t);
    }
    const log = this.log();
    if (/ERROR: (Address|Leak)Sanitizer|runtime error:/.test(log)) throw new Error(`sanitizer report:\n${log}`);
    if (p.exitCode !== 0) throw new Error(`engramd exited with ${p.exitCode ?? p.signalCode}:\n${log.slice(-4000)}`);
  }

  async close(): Promise<void> {
    try {
      await this.stop();
    } finally {
      rmSync(this.tmp, { recursive: true, force: true });
    }
  }

  client(opts: Partial<EngramOptions> = {}): Engram {
    return new Engram({ target: this.addr, ...opts });
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
