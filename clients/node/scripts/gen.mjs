// Generates the TypeScript types of the repository's protos with
// protoc-gen-es (run through protoc, Debian's protobuf-compiler, or $PROTOC).
// Nothing generated is committed: `npm run build` runs this first.
//
//   node scripts/gen.mjs                  the protos the SDK uses -> src/gen
//   node scripts/gen.mjs --all --out DIR  every proto under proto/ -> DIR
import { spawnSync } from "node:child_process";
import { readdirSync, rmSync, mkdirSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(here, "..");
const protoRoot = resolve(pkg, "..", "..", "proto");
// What the SDK imports: the API, rich error details, health.
const SDK_DIRS = ["engram/v1", "google/rpc", "grpc_health/v1"];

const args = process.argv.slice(2);
const all = args.includes("--all");
const outIdx = args.indexOf("--out");
const out = resolve(outIdx >= 0 ? args[outIdx + 1] : join(pkg, "src", "gen"));

function protos(dir) {
  const found = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) found.push(...protos(p));
    else if (e.name.endsWith(".proto")) found.push(relative(protoRoot, p));
  }
  return found.sort();
}

const files = all
  ? protos(protoRoot)
  : SDK_DIRS.flatMap((d) => protos(join(protoRoot, d)));
const plugin = join(pkg, "node_modules", ".bin",
  process.platform === "win32" ? "protoc-gen-es.cmd" : "protoc-gen-es");

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const protoc = process.env.PROTOC || "protoc";
const r = spawnSync(protoc, [
  `-I${protoRoot}`,
  `--plugin=protoc-gen-es=${plugin}`,
  `--es_out=${out}`,
  // .ts sources with explicit .js import suffixes, as NodeNext resolution wants.
  "--es_opt=target=ts,import_extension=js",
  ...files,
], { stdio: "inherit" });
if (r.error) {
  console.error(`gen: cannot run ${protoc} (install protobuf-compiler or set PROTOC): ${r.error.message}`);
  process.exit(1);
}
process.exit(r.status ?? 1);
