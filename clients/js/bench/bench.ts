/**
 * The TypeScript client beside the Rust client, in one run against one
 * server (the `load` binary's `--serve zrpc-tokio`): the Rust client
 * (`load --addr`), this client in Node (on `ws`), and in headless Chromium.
 *
 *   cargo build --release -p zrpc-benches --bin load
 *   npm run bench -- [--secs 3] [--workloads unary1,unary64,stream64,stream64k] [--no-browser] [--profile]
 *
 * `--profile`: Chromium's rows run under its sampling profiler (the bundle
 * unminified), and the functions that took the most of each row's time are
 * printed to stderr: where the browser's time goes.
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
import { type Fields, plainRows, plainStream, workloads } from "./workloads.js";

const argv = process.argv.slice(2);
const opt = (name: string, def: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? (argv[i + 1] ?? def) : def;
};
const secs = Number(opt("--secs", "3"));
const chosen = opt("--workloads", "unary1,unary64,stream64,stream64k").split(",");
const browser = !argv.includes("--no-browser");
const profile = argv.includes("--profile");
const load = resolve(repoRoot, "target/release/load");
if (!existsSync(load)) throw new Error(`${load} missing: cargo build --release -p zrpc-benches --bin load`);

const server = spawn(load, ["--serve", "zrpc-tokio"], {
  stdio: ["ignore", "pipe", "inherit"],
  env: { ...process.env, ZRPC_LOAD_RUNTIME: "multi1" },
});
const addr = await new Promise<string>((r) => createInterface({ input: server.stdout }).once("line", (l) => r(l.trim())));
const url = `ws://${addr}/`;
console.error(`bench server on ${url}`);
// A plain WebSocket server (no RPC layer) for the stream rows' baseline.
const plainServer = spawn(load, ["--serve", "ws"], {
  stdio: ["ignore", "pipe", "inherit"],
  env: { ...process.env, ZRPC_LOAD_RUNTIME: "multi1" },
});
const plainAddr = await new Promise<string>((r) => createInterface({ input: plainServer.stdout }).once("line", (l) => r(l.trim())));
const plainUrl = `ws://${plainAddr}/`;

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
    const len = plainRows[w];
    if (len !== undefined) {
      const open = (u: string) => new NodeWebSocket(u, []);
      rows.push({
        client: `Node ${process.version} (ws), plain WebSocket`,
        workload: workload.name,
        fields: await plainStream(open, plainUrl, len, secs),
      });
      report(rows.at(-1) as Row);
    }
  }

  if (browser) {
    const bundle = await build({
      entryPoints: [resolve(dirname(fileURLToPath(import.meta.url)), "../../bench/page.ts")],
      bundle: true,
      format: "esm",
      target: "es2022",
      minify: !profile,
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
    const cdp = profile ? await page.context().newCDPSession(page) : undefined;
    if (cdp !== undefined) {
      await cdp.send("Profiler.enable");
      await cdp.send("Profiler.setSamplingInterval", { interval: 100 });
    }
    for (const w of chosen) {
      const workload = workloads[w] as (typeof workloads)[string];
      await cdp?.send("Profiler.start");
      const fields = await page.evaluate(([u, wl, s]) => window.runBench(u, wl, s), [url, w, secs] as const);
      if (cdp !== undefined) printProfile(workload.name, (await cdp.send("Profiler.stop")).profile.nodes);
      rows.push({ client: `Chromium ${version}`, workload: workload.name, fields });
      report(rows.at(-1) as Row);
      const viaChannel = await page.evaluate(([u, wl, s]) => window.runBench(u, wl, s, true), [url, w, secs] as const);
      rows.push({ client: `Chromium ${version}, Channel`, workload: workload.name, fields: viaChannel });
      report(rows.at(-1) as Row);
      if (plainRows[w] !== undefined) {
        await cdp?.send("Profiler.start");
        const plain = await page.evaluate(([u, wl, s]) => window.runPlain(u, wl, s), [plainUrl, w, secs] as const);
        if (cdp !== undefined) printProfile(`${workload.name}, plain WebSocket`, (await cdp.send("Profiler.stop")).profile.nodes);
        rows.push({ client: `Chromium ${version}, plain WebSocket`, workload: workload.name, fields: plain });
        report(rows.at(-1) as Row);
      }
    }
    await b.close();
  }
} finally {
  server.kill();
  plainServer.kill();
}

/** The functions with the most samples of their own, as shares of the row's samples. */
function printProfile(row: string, nodes: { hitCount?: number; callFrame: { functionName: string; url: string; lineNumber: number } }[]) {
  const self = new Map<string, number>();
  let total = 0;
  for (const n of nodes) {
    const hits = n.hitCount ?? 0;
    total += hits;
    const { functionName, url: at, lineNumber } = n.callFrame;
    const file = at.split("/").pop() ?? "";
    const key = file === "" ? functionName || "(anonymous)" : `${functionName || "(anonymous)"} ${file}:${lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + hits);
  }
  const top = [...self].sort((a, b) => b[1] - a[1]).slice(0, 15);
  console.error(`\nChromium profile, ${row} (${total} samples, self time):`);
  for (const [name, hits] of top) console.error(`  ${((100 * hits) / Math.max(total, 1)).toFixed(1)}%  ${name}`);
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
