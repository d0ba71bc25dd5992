// The LangGraph tests (npm run build first): the compiled
// dist/test/langgraph/*.test.js under node's test runner (a real StateGraph
// on EngramSaver), then LangGraph's checkpointer validation suite with its
// opt-in getDeltaChannelHistory tests (test/langgraph/validation.vitest.ts),
// each on a real engramd. LangGraph 1.x and the suite's vitest 4 need node >= 20:
// on an older node this exits 77, which ctest reports as a skip.
import { readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { pipeline } from "node:stream/promises";
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

// Each file, and the validation suite, must have passed some test: a build
// or import slip that registers none would otherwise pass green (node's
// runner reports a file without tests as one passing test, named by the file).
console.log("test-langgraph: StateGraph tests");
const passedIn = new Map(tests.map((f) => [f, 0]));
// Imported here: node 18 has skipped above.
const { run } = await import("node:test");
const { spec } = await import("node:test/reporters");
let nodeFailed = 0;
const stream = run({ files: tests });
stream.on("test:fail", () => nodeFailed++);
stream.on("test:pass", (t) => {
  if (t.details?.type !== "suite" && t.name !== t.file && !t.skip && !t.todo && passedIn.has(t.file)) {
    passedIn.set(t.file, passedIn.get(t.file) + 1);
  }
});
await pipeline(stream.compose(spec), process.stdout, { end: false });
if (nodeFailed > 0) {
  console.error(`test-langgraph: ${nodeFailed} StateGraph tests failed`);
  process.exit(1);
}
const idle = [...passedIn].filter(([, n]) => n === 0).map(([f]) => f);
if (idle.length > 0) {
  console.error(`test-langgraph: no test passed in ${idle.join(", ")}`);
  process.exit(1);
}
const passed = [...passedIn.values()].reduce((a, b) => a + b, 0);

// The validation suite, in vitest (the suite's own copy) with globals, as its
// README runs it inside a test suite (its CLI cannot load an initializer).
const requireFromPkg = createRequire(join(pkg, "package.json"));
const validationPkg = requireFromPkg.resolve("@langchain/langgraph-checkpoint-validation/package.json");
const vitestPkg = dirname(createRequire(validationPkg).resolve("vitest/package.json"));
const { startVitest } = await import(pathToFileURL(join(vitestPkg, "dist", "node.js")).href);
console.log("test-langgraph: checkpointer validation suite");
const vitest = await startVitest("test", [], { globals: true, watch: false, root: dir, include: [validation] });
const failed = !vitest || vitest.state.getCountOfFailedTests() > 0 || process.exitCode;
let validated = 0;
for (const m of vitest?.state.getTestModules() ?? []) for (const _ of m.children.allTests("passed")) validated++;
await vitest?.close();
if (failed) {
  console.error("test-langgraph: checkpointer validation suite failed");
  process.exit(1);
}
if (validated === 0) {
  console.error("test-langgraph: the checkpointer validation suite ran no test");
  process.exit(1);
}
console.log(`test-langgraph: ${passed} StateGraph tests and ${validated} validation tests passed`);
