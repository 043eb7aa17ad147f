/**
 * connect-es's browser transport in real Chromium: the page (served by `zrpc serve --web`, so same-origin)
 * calls echo.Echo over Connect (binary, and JSON: connect-web's default) and over gRPC-Web with fetch, unary and server streaming; a page on another
 * origin, not allowed, fails its CORS preflight.
 */

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { resolve } from "node:path";
import { after, before, test } from "node:test";
import { build } from "esbuild";
import { type Browser, chromium } from "playwright-core";
import { type RunningServer, repoRoot, startServer } from "./server.js";

/** Chromium from the system (the project's scripts install Debian's package); `CHROMIUM` overrides. */
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

let server: RunningServer;
let browser: Browser;
let bundle: string;
let other: http.Server;

/** What the page runs: every result as text, or the error's code and message. */
const pageScript = `
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { Echo } from "./src/gen/echo_pb.ts";
globalThis.runCalls = async (baseUrl) => {
  const out = [];
  for (const [name, transport] of [
    ["connect", createConnectTransport({ baseUrl, useBinaryFormat: true })],
    ["connect-json", createConnectTransport({ baseUrl })],
    ["grpc-web", createGrpcWebTransport({ baseUrl })],
  ]) {
    const echo = createClient(Echo, transport);
    try {
      out.push(name + " say " + (await echo.say({ message: "from chromium" })).message);
      const got = [];
      for await (const m of echo.repeat({ message: "r", repeat: 3 })) got.push(m.index);
      out.push(name + " repeat " + got.join(","));
      await echo.say({ message: "" }).catch((e) => out.push(name + " error " + e.code));
    } catch (e) {
      out.push(name + " failed " + e.code + " " + e.message);
    }
  }
  return out;
};
`;

before(async () => {
  assert.ok(existsSync(chromiumPath), `no Chromium at ${chromiumPath}: run scripts/test-all.sh (installs it) or set CHROMIUM`);
  const built = await build({
    stdin: { contents: pageScript, resolveDir: resolve(repoRoot, "clients/js"), loader: "ts" },
    bundle: true,
    write: false,
    format: "iife",
    platform: "browser",
  });
  bundle = built.outputFiles[0]?.text ?? "";
  server = await startServer(["--web", "--db", ":memory:"]);
  browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ["--no-sandbox"] });
  // A page on another origin (another port), which the server does not allow.
  other = http.createServer((_req, res) => res.end("<!doctype html><title>other</title>"));
  await new Promise<void>((ok) => other.listen(0, "127.0.0.1", () => ok()));
});

after(async () => {
  await browser?.close();
  await server?.stop();
  other?.close();
});

test("connect-web in Chromium: Connect and gRPC-Web, unary and server streaming, errors as codes", async () => {
  const page = await browser.newPage();
  const origin = server.url.replace(/^ws/, "http").replace(/\/$/, "");
  // A page of the server's own origin carrying the bundle (the app's pages
  // forbid inline scripts, so this one is handed to Chromium by the test).
  await page.route(`${origin}/connect-test`, (route) =>
    route.fulfill({ contentType: "text/html", body: `<!doctype html><script>${bundle}</script>` }),
  );
  await page.goto(`${origin}/connect-test`);
  const out = await page.evaluate((base) => (globalThis as unknown as { runCalls(b: string): Promise<string[]> }).runCalls(base), origin);
  assert.deepEqual(out, [
    "connect say from chromium",
    "connect repeat 0,1,2",
    "connect error 3",
    "connect-json say from chromium",
    "connect-json repeat 0,1,2",
    "connect-json error 3",
    "grpc-web say from chromium",
    "grpc-web repeat 0,1,2",
    "grpc-web error 3",
  ]);
  await page.close();
});

test("connect-web in Chromium from a refused origin: the preflight fails, nothing is called", async () => {
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${(other.address() as AddressInfo).port}/`);
  await page.addScriptTag({ content: bundle });
  const calls = () => server.log.filter((l) => l.includes('method="echo.Echo/')).length;
  const before = calls();
  const target = server.url.replace(/^ws/, "http").replace(/\/$/, "");
  const out = await page.evaluate((base) => (globalThis as unknown as { runCalls(b: string): Promise<string[]> }).runCalls(base), target);
  // fetch rejects (a network error to the page): connect-es reports it as unavailable (14) or unknown.
  assert.equal(out.length, 3, out.join("\n"));
  for (const line of out) assert.match(line, /failed/);
  assert.equal(calls(), before, "no call reached a handler");
  await page.close();
});
