// Fails if src/gen (cli/protos) or test/gen (gRPC's interop protos) differs
// from what buf generates now.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const env = { ...process.env, PATH: `${join(root, "node_modules/.bin")}:${process.env.PATH}` };
const stale = [];
for (const [template, out] of [
  ["buf.gen.yaml", "src/gen"],
  ["buf.gen.test.yaml", "test/gen"],
]) {
  const tmp = mkdtempSync(join(tmpdir(), "zrpc-gen-"));
  const config = readFileSync(join(root, template), "utf8").replace(`out: ${out}`, `out: ${tmp}`);
  const configPath = join(tmp, "buf.gen.yaml");
  writeFileSync(configPath, config);
  execFileSync("buf", ["generate", "--template", configPath], { cwd: root, env, stdio: "inherit" });
  for (const f of readdirSync(tmp, { recursive: true })) {
    if (!String(f).endsWith(".ts")) continue;
    let current = "";
    try {
      current = readFileSync(join(root, out, String(f)), "utf8");
    } catch {}
    if (readFileSync(join(tmp, String(f)), "utf8") !== current) stale.push(join(out, String(f)));
  }
  rmSync(tmp, { recursive: true });
}
if (stale.length > 0) {
  console.error(`generated code is stale (${stale.join(", ")}): run npm run generate in clients/js and commit`);
  process.exit(1);
}
