// Builds dist/ (tsc) and imports the package by its name, through its
// `exports` map, as a consumer would: every entry point resolves, exports
// what the README documents, and ships its type declarations.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
execFileSync(join(root, "node_modules/.bin/tsc"), ["-p", "tsconfig.json"], { cwd: root, stdio: "inherit" });
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const expected = {
  ".": ["connect", "Client", "ZrpcError", "Code", "getText", "SUBPROTOCOL"],
  "./typed": ["createClient", "methodName"],
  "./channel": ["Channel", "CHANNEL_DEFAULTS"],
  "./interceptors": ["intercept", "setHeader"],
  "./protocol": ["Connection", "decodeFrame", "encodeFrame", "splitBatch", "encodeBatch", "DEFAULT_CONFIG"],
};
const problems = [];
for (const [entry, names] of Object.entries(expected)) {
  const target = pkg.exports[entry];
  if (target === undefined) {
    problems.push(`exports has no ${entry}`);
    continue;
  }
  if (!existsSync(join(root, target.types))) problems.push(`${entry}: no ${target.types}`);
  const mod = await import(`${pkg.name}${entry === "." ? "" : entry.slice(1)}`);
  for (const n of names) if (!(n in mod)) problems.push(`${entry} does not export ${n}`);
}
if (problems.length > 0) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log(`dist: ${Object.keys(expected).length} entry points resolve by name with types`);
