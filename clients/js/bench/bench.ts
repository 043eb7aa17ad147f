/**
 * The TypeScript client beside the Rust client, in one run against one
 * server (the `load` binary's `--serve zrpc-tokio`): the Rust client
 * (`load --addr`), this client in Node (on `ws`), and in headless Chromium.
 *
 *   cargo build --release -p zrpc-benches --bin load
 *   npm run bench -- [--secs 3] [--workloads unary1,unary64,stream64,stream64k] [--no-browser]
 */

import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { chromium } from "playwright-core";
import { Channel } from "../src/channel.js";
import { connect } from "../src/index.js";
import { NodeWebSocket, repoRoot } from "../test/server.js";
import { type Fields, workloads } from "./workloads.js";

const argv = process.argv.slice(2);
const opt = (name: string, def: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? (argv[i + 1] ?? def) : def;
};
const secs = Number(opt("--secs", "3"));
const chosen = opt("--workloads", "unary1,unary64,stream64,stream64k").split(",");
const browser = !argv.includes("--no-browser");
const load = resolve(repoRoot, "target/release/load");
if (!existsSync(load)) throw new Error(`${load} missing: cargo build --release -p zrpc-benches --bin load`);

const server = spawn(load, ["--serve", "zrpc-tokio"], {
  stdio: ["ignore", "pipe", "inherit"],
  env: { ...process.env, ZRPC_LOAD_RUNTIME: "multi1" },
});
const addr = await new Promise<string>((r) => createInterface({ input: server.stdout }).once("line", (l) => r(l.trim())));
const url = `ws://${addr}/`;
console.error(`bench server on ${url}`);

type Row = { client: string; workload: string; fields: Fields };
const rows: Row[] = [];

try {
  for (const w of chosen) {
    const workload = workloads[w];
    if (workload === undefined) throw new Error(`unknown workload ${w}`);
    // The Rust client (its own process, tokio), same server.
    // Both Rust processes on tokio's multi-thread runtime with one worker.
    const args = ["--addr", addr, "--systems", "zrpc-tokio", "--runtimes", "multi1", "--workloads", w, "--secs", String(secs)];
    const out = execFileSync(load, args, { encoding: "utf8", env: { ...process.env, ZRPC_LOAD_RUNTIME: "multi1" } });
    const line = out.split("\n").find((l) => l.startsWith("{"));
    if (line === undefined) throw new Error(`no result from load: ${out}`);
    const { system: _s, runtime: _r, workload: _w, ...rust } = JSON.parse(line) as Record<string, number | string>;
    rows.push({ client: "Rust (zrpc-tokio)", workload: workload.name, fields: rust as Fields });
    report(rows.at(-1) as Row);

    const client = await connect(url, { WebSocket: NodeWebSocket });
    rows.push({ client: `Node ${process.version} (ws)`, workload: workload.name, fields: await workload.run(client, secs) });
    await client.close();
    report(rows.at(-1) as Row);
    // The same through the reconnecting Channel (what it costs per call).
    const channel = new Channel(url, { WebSocket: NodeWebSocket });
    rows.push({ client: `Node ${process.version} (ws), Channel`, workload: workload.name, fields: await workload.run(channel, secs) });
    await channel.close();
    report(rows.at(-1) as Row);
  }

  if (browser) {
    const bundle = await build({
      entryPoints: [resolve(dirname(fileURLToPath(import.meta.url)), "../../bench/page.ts")],
      bundle: true,
      format: "esm",
      target: "es2022",
      minify: true,
      write: false,
    });
    // The page is injected (route), not served by a real server; Chromium's
    // local-network checks would treat it as public and block its loopback
    // WebSocket. The real web app (served by `zrpc serve --web`) needs no flag.
    const b = await chromium.launch({
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      headless: true,
      args: ["--no-sandbox", "--disable-features=LocalNetworkAccessChecks"],
    });
    const page = await b.newPage();
    // Served "from" the bench server's origin, so its same-origin policy admits the page.
    const origin = `http://${addr}`;
    await page.route(`${origin}/bench`, (route) =>
      route.fulfill({
        contentType: "text/html",
        body: "<!doctype html><title>zrpc bench</title><script type=module src=/bench.js></script>",
      }),
    );
    await page.route(`${origin}/bench.js`, (route) =>
      route.fulfill({ contentType: "text/javascript", body: bundle.outputFiles[0]?.text ?? "" }),
    );
    await page.goto(`${origin}/bench`);
    await page.waitForFunction(() => typeof window.runBench === "function");
    const version = b.version();
    for (const w of chosen) {
      const workload = workloads[w] as (typeof workloads)[string];
      const fields = await page.evaluate(([u, wl, s]) => window.runBench(u, wl, s), [url, w, secs] as const);
      rows.push({ client: `Chromium ${version}`, workload: workload.name, fields });
      report(rows.at(-1) as Row);
      const viaChannel = await page.evaluate(([u, wl, s]) => window.runBench(u, wl, s, true), [url, w, secs] as const);
      rows.push({ client: `Chromium ${version}, Channel`, workload: workload.name, fields: viaChannel });
      report(rows.at(-1) as Row);
    }
    await b.close();
  }
} finally {
  server.kill();
}

function report(r: Row) {
  console.log(JSON.stringify({ client: r.client, workload: r.workload, ...r.fields }));
}

// A table with each row's ratio to the Rust client's on the same workload.
const fmt = (n: number) => (n >= 100 ? Math.round(n).toLocaleString("en") : n.toFixed(1));
console.log("\n| workload | client | result | vs Rust |\n|---|---|---|---|");
for (const r of rows) {
  const rust = rows.find((x) => x.workload === r.workload && x.client.startsWith("Rust"));
  const key = "calls_per_s" in r.fields ? "calls_per_s" : "msgs_per_s";
  const ratio = rust ? (r.fields[key] ?? 0) / (rust.fields[key] ?? 1) : 1;
  const result =
    key === "calls_per_s"
      ? `${fmt(r.fields.calls_per_s ?? 0)} calls/s, p50 ${fmt(r.fields.p50_us ?? 0)} µs, p99 ${fmt(r.fields.p99_us ?? 0)} µs`
      : `${fmt(r.fields.msgs_per_s ?? 0)} msgs/s, ${fmt(r.fields.mb_per_s ?? 0)} MB/s`;
  console.log(`| ${r.workload} | ${r.client} | ${result} | ${ratio.toFixed(2)}× |`);
}
