// The protocol client's size as a browser app ships it: src/index.ts bundled
// and minified by esbuild, then gzipped. `--max=BYTES` fails above a bound.

import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const entries = {
  client: "../src/index.ts",
  "client + typed stubs (without @bufbuild/protobuf)": "../src/typed.ts",
  "client + the reconnecting Channel": "../src/channel.ts",
  "client + interceptors": "../src/interceptors.ts",
};
const max = Number(process.argv.find((a) => a.startsWith("--max="))?.slice(6) ?? Number.POSITIVE_INFINITY);
let over = false;
for (const [name, entry] of Object.entries(entries)) {
  const out = await build({
    entryPoints: [resolve(here, entry)],
    bundle: true,
    format: "esm",
    target: "es2022",
    minify: true,
    write: false,
    external: ["@bufbuild/protobuf"],
  });
  const code = out.outputFiles[0].contents;
  const gz = gzipSync(code, { level: 9 }).length;
  console.log(`${name}: ${code.length} bytes minified, ${gz} bytes gzip`);
  if (name === "client" && gz > max) over = true;
}
if (over) {
  console.error(`the client is over ${max} bytes gzip`);
  process.exit(1);
}
