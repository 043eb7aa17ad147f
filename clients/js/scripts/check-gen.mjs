// Fails if src/gen differs from what buf generates from cli/protos now.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const tmp = mkdtempSync(join(tmpdir(), "zrpc-gen-"));
const config = readFileSync(join(root, "buf.gen.yaml"), "utf8").replace("out: src/gen", `out: ${tmp}`);
const configPath = join(tmp, "buf.gen.yaml");
writeFileSync(configPath, config);
const env = { ...process.env, PATH: `${join(root, "node_modules/.bin")}:${process.env.PATH}` };
execFileSync("buf", ["generate", "--template", configPath], { cwd: root, env, stdio: "inherit" });
const stale = readdirSync(tmp)
  .filter((f) => f.endsWith(".ts"))
  .filter((f) => readFileSync(join(tmp, f), "utf8") !== readFileSync(join(root, "src/gen", f), "utf8"));
rmSync(tmp, { recursive: true });
if (stale.length > 0) {
  console.error(`src/gen is stale (${stale.join(", ")}): run npm run generate in clients/js and commit`);
  process.exit(1);
}
