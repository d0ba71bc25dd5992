// examples/node run as an engineer would after `npm install` there (the
// engram-client dependency is a link to this package), against engramd.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { PKG, REPO, Server, cleanEnv, uid } from "./harness.js";

const EXAMPLES = join(REPO, "examples", "node");

describe("examples/node", () => {
  let srv: Server;
  let dir: string;
  before(async () => {
    srv = await new Server().start(); // dev mode, as `make run` starts it
    dir = mkdtempSync(join(PKG, ".gen-check-examples-"));
    for (const f of ["package.json", "chat-loop.mjs", "memories.mjs"]) copyFileSync(join(EXAMPLES, f), join(dir, f));
    // What `npm install` makes of the file: dependency.
    mkdirSync(join(dir, "node_modules"));
    symlinkSync(PKG, join(dir, "node_modules", "engram-client"), "dir");
  });
  after(async () => {
    rmSync(dir, { recursive: true, force: true });
    await srv?.close();
  });

  function run(script: string, args: string[], input = "") {
    const r = spawnSync(process.execPath, [script, ...args], { cwd: dir, input, encoding: "utf8", timeout: 60_000,
      env: cleanEnv({ ENGRAM_TARGET: srv.addr, ENGRAM_USER_ID: uid("demo") }) });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    return r.stdout;
  }

  it("chat-loop keeps context with summaries", () => {
    const turns = Array.from({ length: 8 }, (_, i) => `question number ${i + 1}`).join("\n");
    const out = run("chat-loop.mjs", [], turns);
    assert.match(out, /summary updated through message \d+/);
    const m = /done: 8 turns, summary covers (\d+) messages, (\d+) messages after it/.exec(out);
    assert.ok(m, out);
    assert.ok(Number(m[1]) > 0);
    assert.equal(Number(m[1]) + Number(m[2]), 16, "summary + messages after it = every message");
  });

  it("memories captures once and recalls", () => {
    const out = run("memories.mjs", ["what does the user drink in the morning?"]);
    assert.equal(out.match(/^CREATED /gm)?.length, 3, out);
    assert.match(out, /^(DUPLICATE|MERGED|SKIPPED)/m);
    const best = out.split("recall:")[1].split("\n")[1];
    assert.match(best, /^\s+[0-9.]+ The user likes green tea in the morning\.$/, out);
  });
});
