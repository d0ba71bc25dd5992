// Runs the compiled tests (npm run build first) with node's test runner,
// naming each file: node 18's `node --test` takes no globs.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const dir = resolve(dirname(fileURLToPath(import.meta.url)), "..", "dist", "test");
const only = process.argv.slice(2);
const files = readdirSync(dir)
  .filter((f) => f.endsWith(".test.js") && (only.length === 0 || only.some((o) => f.startsWith(o))))
  .sort()
  .map((f) => join(dir, f));
if (files.length === 0) {
  console.error(`test: no compiled tests in ${dir} (run npm run build)`);
  process.exit(1);
}
const r = spawnSync(process.execPath, ["--test", ...files], { stdio: "inherit" });
process.exit(r.status ?? 1);
