/**
 * Compression on the wire (PROTOCOL.md 3.4) from the Node and Chromium
 * clients: `ListPeople` of 10,000 people from `zrpc serve` (which
 * compresses from 1,024 bytes) and from one that does not
 * (`--compress-min-size 0`), on one SQLite file; the bytes are what each
 * server's metrics count as sent. The client inflates with the platform's
 * DecompressionStream.
 */

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { build } from "esbuild";
import { chromium } from "playwright-core";
import { connect } from "../src/index.js";
import { NodeWebSocket, type RunningServer, repoRoot, startServer } from "./server.js";

const PEOPLE = 10_000;
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
let dir: string;
let packing: RunningServer;
let plain: RunningServer;

/** A `people.Person` with a name, an email and a URL. */
function person(i: number): Uint8Array {
  const enc = new TextEncoder();
  const field = (tag: number, s: string) => {
    const b = enc.encode(s);
    return [tag, b.length, ...b];
  };
  return new Uint8Array([
    ...field(0x0a, `Person ${String(i).padStart(5, "0")}`),
    ...field(0x12, `person${i}@example.com`),
    ...field(0x1a, `https://example.com/people/${i}`),
  ]);
}

async function sentBytes(s: RunningServer): Promise<number> {
  const text = await (await fetch(s.metricsUrl as string)).text();
  const m = /^zrpc_sent_bytes_total (\d+)/m.exec(text);
  return Number(m?.[1] ?? 0);
}

/** Bytes `s` sent while `list` ran, and what it returned. */
async function measured<T>(s: RunningServer, list: () => Promise<T>): Promise<[T, number]> {
  const before = await sentBytes(s);
  const out = await list();
  return [out, (await sentBytes(s)) - before];
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "zrpc-compression-"));
  const db = join(dir, "people.db");
  // The page comes from the first server's origin and calls both.
  const common = ["--db", db, "--metrics-addr", "127.0.0.1:0", "--allow-origin", "*"];
  packing = await startServer(common);
  plain = await startServer([...common, "--compress-min-size", "0"]);
  const client = await packing.connect();
  const people = Array.from({ length: PEOPLE }, (_, i) => person(i));
  await client.clientStreaming("people.People/ImportPeople", people);
  await client.close();
});

after(async () => {
  await packing?.stop();
  await plain?.stop();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

async function listFromNode(url: string): Promise<number> {
  const client = await connect(url, { WebSocket: NodeWebSocket });
  let n = 0;
  for await (const _ of client.serverStreaming("people.People/ListPeople", new Uint8Array())) n += 1;
  await client.close();
  return n;
}

test("ListPeople of 10,000 crosses at under 30% of its bytes to the Node client", async () => {
  const [packedCount, packed] = await measured(packing, () => listFromNode(packing.url));
  const [plainCount, raw] = await measured(plain, () => listFromNode(plain.url));
  assert.equal(packedCount, PEOPLE);
  assert.equal(plainCount, PEOPLE);
  console.log(`Node: ${raw} bytes plain, ${packed} compressed (${((packed * 100) / raw).toFixed(1)}%)`);
  assert.ok(packed * 100 <= raw * 30, `${packed} of ${raw} bytes`);
});

test("and to Chromium, which inflates with DecompressionStream", async () => {
  const bundle = await build({
    stdin: {
      contents: `import { connect } from "./src/index.ts";
        window.listAll = async (url) => {
          const client = await connect(url);
          let n = 0;
          for await (const _ of client.serverStreaming("people.People/ListPeople", new Uint8Array())) n += 1;
          await client.close();
          return n;
        };`,
      resolveDir: resolve(repoRoot, "clients/js"),
      loader: "ts",
    },
    bundle: true,
    format: "esm",
    target: "es2022",
    write: false,
  });
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    // An injected page (as the bench's): Chromium would take it for a public one and block its loopback WebSocket.
    args: ["--no-sandbox", "--disable-features=LocalNetworkAccessChecks"],
  });
  try {
    const page = await browser.newPage();
    const origin = packing.url.replace(/^ws/, "http").replace(/\/$/, "");
    await page.route(`${origin}/compression`, (route) =>
      route.fulfill({ contentType: "text/html", body: "<!doctype html><script type=module src=/compression.js></script>" }),
    );
    await page.route(`${origin}/compression.js`, (route) =>
      route.fulfill({ contentType: "text/javascript", body: bundle.outputFiles[0]?.text ?? "" }),
    );
    await page.goto(`${origin}/compression`);
    await page.waitForFunction(() => typeof (window as unknown as { listAll?: unknown }).listAll === "function");
    const list = (url: string) => page.evaluate((u) => (window as unknown as { listAll(u: string): Promise<number> }).listAll(u), url);
    const [packedCount, packed] = await measured(packing, () => list(packing.url));
    const [plainCount, raw] = await measured(plain, () => list(plain.url));
    assert.equal(packedCount, PEOPLE);
    assert.equal(plainCount, PEOPLE);
    console.log(`Chromium ${browser.version()}: ${raw} bytes plain, ${packed} compressed (${((packed * 100) / raw).toFixed(1)}%)`);
    assert.ok(packed * 100 <= raw * 30, `${packed} of ${raw} bytes`);
  } finally {
    await browser.close();
  }
});
