// Bundles the people web app's script into cli/web/app.js (served by `zrpc serve --web`,
// built into the binary). `--check` fails if the committed files differ
// from a fresh build instead of writing them.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(here, "../../../cli/web");
const check = process.argv.includes("--check");

const bundle = await build({
  entryPoints: [resolve(here, "../web/app.ts")],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "none",
  write: false,
});
// The page and style are built into the binary from web/ itself.
const files = { "app.js": bundle.outputFiles[0].text };
const stale = [];
for (const [name, text] of Object.entries(files)) {
  const path = resolve(out, name);
  if (check) {
    let current = "";
    try {
      current = readFileSync(path, "utf8");
    } catch {}
    if (current !== text) stale.push(name);
  } else {
    writeFileSync(path, text);
  }
}
if (stale.length > 0) {
  console.error(`cli/web/app.js is stale (${stale.join(", ")}): run npm run build:web in clients/js and commit`);
  process.exit(1);
}
