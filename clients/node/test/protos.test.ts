// Every proto under proto/ generates with protoc-gen-es, type-checks with
// tsc (strict), and its module loads in node: what a user who generates
// their own types from the repository gets.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { it } from "node:test";
import { pathToFileURL } from "node:url";
import { PKG, REPO } from "./harness.js";

function files(dir: string, ext: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name), ext) : e.name.endsWith(ext) ? [join(dir, e.name)] : []);
}

it("every proto under proto/ generates, type-checks and loads", async () => {
  // Inside the package, so the generated code resolves @bufbuild/protobuf
  // from its node_modules as it would in a user's project.
  const dir = mkdtempSync(join(PKG, ".gen-check-"));
  try {
    const gen = spawnSync(process.execPath, [join(PKG, "scripts", "gen.mjs"), "--all", "--out", dir], { encoding: "utf8" });
    assert.equal(gen.status, 0, gen.stderr);
    const protos = files(join(REPO, "proto"), ".proto").map((p) => relative(join(REPO, "proto"), p).replace(/\.proto$/, "_pb.ts"));
    const generated = files(dir, ".ts").map((p) => relative(dir, p));
    assert.deepEqual(generated.sort(), protos.sort(), "one module per proto");
    writeFileSync(join(dir, "tsconfig.json"), JSON.stringify({
      compilerOptions: { target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", strict: true,
        outDir: "out", rootDir: ".", types: [] },
      include: ["**/*.ts"],
    }));
    const tsc = join(PKG, "node_modules", "typescript", "bin", "tsc");
    const noEmit = spawnSync(process.execPath, [tsc, "-p", dir, "--noEmit"], { encoding: "utf8" });
    assert.equal(noEmit.status, 0, noEmit.stdout + noEmit.stderr);
    const emit = spawnSync(process.execPath, [tsc, "-p", dir], { encoding: "utf8" });
    assert.equal(emit.status, 0, emit.stdout + emit.stderr);
    writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module" }));
    for (const js of files(join(dir, "out"), ".js")) {
      const mod = await import(pathToFileURL(js).href);
      const fileDesc = Object.entries(mod).find(([k]) => k.startsWith("file_"));
      assert.ok(fileDesc, `${relative(dir, js)} exports its file descriptor`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
