// The LangGraph tests (npm run build first): the compiled
// dist/test/langgraph/*.test.js under node's test runner (a real StateGraph
// on EngramSaver), then LangGraph's checkpointer validation suite with its
// opt-in getDeltaChannelHistory tests (test/langgraph/validation.vitest.ts),
// each on a real engramd. LangGraph 1.x and the suite's vitest 4 need node >= 20:
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
const validation = join(dir, "validation.vitest.js");
const tests = readdirSync(dir)
  .filter((f) => f.endsWith(".test.js"))
  .sort()
  .map((f) => join(dir, f));
if (tests.length === 0) {
  console.error(`test-langgraph: no compiled tests in ${dir} (run npm run build)`);
  process.exit(1);
}

console.log("test-langgraph: StateGraph tests");
const r = spawnSync(process.execPath, ["--test", ...tests], { stdio: "inherit", cwd: pkg });
if (r.status !== 0) {
  console.error(`test-langgraph: StateGraph tests failed (${r.status ?? r.signal})`);
  process.exit(r.status || 1);
}

// The validation suite, in vitest (the suite's own copy) with globals, as its
// README runs it inside a test suite (its CLI cannot load an initializer).
const requireFromPkg = createRequire(join(pkg, "package.json"));
const validationPkg = requireFromPkg.resolve("@langchain/langgraph-checkpoint-validation/package.json");
const vitestPkg = dirname(createRequire(validationPkg).resolve("vitest/package.json"));
const { startVitest } = await import(pathToFileURL(join(vitestPkg, "dist", "node.js")).href);
console.log("test-langgraph: checkpointer validation suite");
const vitest = await startVitest("test", [], { globals: true, watch: false, root: dir, include: [validation] });
const failed = !vitest || vitest.state.getCountOfFailedTests() > 0 || process.exitCode;
await vitest?.close();
if (failed) {
  console.error("test-langgraph: checkpointer validation suite failed");
  process.exit(1);
}
