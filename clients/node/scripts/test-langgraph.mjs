// The LangGraph tests (npm run build first): the compiled
// dist/test/langgraph/*.test.js under node's test runner (a real StateGraph
// on EngramSaver), then LangGraph's checkpointer validation suite
// (validate-checkpointer) and its opt-in getDeltaChannelHistory tests, each
// on a real engramd. LangGraph 1.x and the suite's vitest 4 need node >= 20:
// on an older node this exits 77, which ctest reports as a skip.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const MIN_NODE_MAJOR = 20;
const SKIP = 77;

const major = Number(process.versions.node.split(".")[0]);
if (major < MIN_NODE_MAJOR) {
  console.log(`langgraph tests need node >= ${MIN_NODE_MAJOR} (found ${process.version})`);
  process.exit(SKIP);
}

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const dir = join(pkg, "dist", "test", "langgraph");
const initializer = join(dir, "validation.initializer.js");
const deltaTests = join(dir, "delta_history.vitest.js");
const tests = readdirSync(dir)
  .filter((f) => f.endsWith(".test.js"))
  .sort()
  .map((f) => join(dir, f));
if (tests.length === 0) {
  console.error(`test-langgraph: no compiled tests in ${dir} (run npm run build)`);
  process.exit(1);
}

function run(what, args, env = process.env) {
  console.log(`test-langgraph: ${what}`);
  const r = spawnSync(process.execPath, args, { stdio: "inherit", cwd: pkg, env });
  if (r.status !== 0) {
    console.error(`test-langgraph: ${what} failed (${r.status ?? r.signal})`);
    process.exit(r.status || 1);
  }
}

run("StateGraph tests", ["--test", ...tests]);

// The suite's own CLI, as its README runs it. CI=1: vitest never watches.
const requireFromPkg = createRequire(join(pkg, "package.json"));
const validationPkg = dirname(requireFromPkg.resolve("@langchain/langgraph-checkpoint-validation/package.json"));
run("validate-checkpointer", ["--experimental-vm-modules", join(validationPkg, "bin", "cli.js"), initializer],
  { ...process.env, CI: "1" });

// getDeltaChannelHistory's tests are exported but not in the CLI's run: vitest
// (the suite's own copy) runs them from a file of ours, as the CLI runs its spec.
const vitestPkg = dirname(createRequire(join(validationPkg, "package.json")).resolve("vitest/package.json"));
const { startVitest } = await import(pathToFileURL(join(vitestPkg, "dist", "node.js")).href);
const vitest = await startVitest("test", [], { globals: true, watch: false, root: dir, include: [deltaTests] });
const failed = !vitest || vitest.state.getCountOfFailedTests() > 0 || process.exitCode;
await vitest?.close();
if (failed) {
  console.error("test-langgraph: getDeltaChannelHistory tests failed");
  process.exit(1);
}
