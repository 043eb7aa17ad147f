/**
 * gRPC's interop cases against `zrpc serve --interop` (on tokio and on smol), driven by every client a user
 * might bring: grpc-js (gRPC), grpcio in Python (gRPC), connect-node (gRPC, gRPC-Web, Connect), zrpc's own
 * TypeScript client over zrpc.v1, and — in headless Chromium — zrpc's client and connect-web. Each case is
 * the same code for every client (test/interop/cases.ts; Python's mirror is scripts/grpcio_interop.py).
 * The case × client table is written to target/interop.md.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { compressionGzip, createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { build } from "esbuild";
import { chromium } from "playwright-core";
import { cases, type Outcome, runAll } from "./interop/cases.js";
import { connectInterop } from "./interop/connect.js";
import { grpcJsInterop } from "./interop/grpcjs.js";
import { zrpcInterop } from "./interop/zrpc.js";
import { type RunningServer, repoRoot, startServer } from "./server.js";

const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const table: Record<string, Record<string, Outcome>> = {};

function expectAllPass(client: string, got: Record<string, Outcome>): void {
  table[client] = got;
  const failed = Object.entries(got).filter(([, o]) => o.startsWith("FAIL"));
  assert.deepEqual(failed, [], `${client}: ${failed.map(([k, o]) => `${k}: ${o}`).join("; ")}`);
  assert.equal(Object.keys(got).length, cases.length);
}

/** What the page runs: the cases with zrpc's client, then with connect-web's Connect and gRPC-Web transports. */
const pageScript = `
import { connect } from "./src/index.ts";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { runAll } from "./test/interop/cases.ts";
import { zrpcInterop } from "./test/interop/zrpc.ts";
import { connectInterop } from "./test/interop/connect.ts";
globalThis.runInterop = async (wsUrl, baseUrl) => {
  const client = await connect(wsUrl);
  const out = { zrpc: await runAll(() => zrpcInterop(client, true)) };
  await client.close();
  out["connect-web Connect"] = await runAll(() => connectInterop(() => createConnectTransport({ baseUrl, useBinaryFormat: true }), false));
  out["connect-web gRPC-Web"] = await runAll(() => connectInterop(() => createGrpcWebTransport({ baseUrl }), false));
  return out;
};
`;

for (const runtime of ["tokio", "smol"]) {
  describe(`interop cases on zrpc serve --interop --runtime ${runtime}`, () => {
    let server: RunningServer;
    const base = () => server.url.replace(/^ws:/, "http:").replace(/\/$/, "");
    const hostPort = () => new URL(server.url).host;
    before(async () => {
      server = await startServer(["--interop", "--db", ":memory:", "--runtime", runtime]);
    });
    after(async () => {
      await server.stop();
    });

    test("grpc-js (gRPC)", async () => {
      expectAllPass(`grpc-js (${runtime})`, await runAll(() => grpcJsInterop(hostPort())));
    });

    test("connect-node: gRPC, Connect (HTTP/2) and gRPC-Web (HTTP/1.1)", async () => {
      const gz = (gzip: boolean) => (gzip ? { sendCompression: compressionGzip, acceptCompression: [compressionGzip] } : {});
      expectAllPass(
        `connect-node gRPC (${runtime})`,
        await runAll(() => connectInterop((g) => createGrpcTransport({ baseUrl: base(), ...gz(g) }), true)),
      );
      expectAllPass(
        `connect-node Connect (${runtime})`,
        await runAll(() => connectInterop((g) => createConnectTransport({ baseUrl: base(), httpVersion: "2", ...gz(g) }), true)),
      );
      expectAllPass(
        `connect-node gRPC-Web (${runtime})`,
        await runAll(() => connectInterop((g) => createGrpcWebTransport({ baseUrl: base(), httpVersion: "1.1", ...gz(g) }), false)),
      );
    });

    test("zrpc's TypeScript client (zrpc.v1, Node)", async () => {
      const client = await server.connect();
      try {
        expectAllPass(`zrpc TS, Node (${runtime})`, await runAll(() => zrpcInterop(client, true)));
      } finally {
        await client.close();
      }
    });

    test("grpcio (Python, gRPC)", async () => {
      await promisify(execFile)("bash", [resolve(repoRoot, "scripts/setup-python.sh")]);
      // The interop protos' descriptors, for the script's message classes.
      const descriptors = resolve(repoRoot, "target/interop-descriptors.binpb");
      await promisify(execFile)(
        resolve(repoRoot, "clients/js/node_modules/.bin/buf"),
        ["build", "cli/protos-std", "--path", "cli/protos-std/grpc/testing", "-o", descriptors],
        { cwd: repoRoot },
      );
      const script = resolve(repoRoot, "scripts/grpcio_interop.py");
      const { stdout } = await promisify(execFile)("python3", [script, hostPort(), descriptors], {
        env: { ...process.env, PYTHONPATH: resolve(repoRoot, "target/pydeps") },
        timeout: 60_000,
      });
      expectAllPass(`grpcio (${runtime})`, JSON.parse(stdout) as Record<string, Outcome>);
    });

    test("in Chromium: zrpc's client (zrpc.v1) and connect-web (Connect, gRPC-Web)", async () => {
      assert.ok(existsSync(chromiumPath), `no Chromium at ${chromiumPath}: run scripts/test-all.sh (installs it) or set CHROMIUM`);
      const built = await build({
        stdin: { contents: pageScript, resolveDir: resolve(repoRoot, "clients/js"), loader: "ts" },
        bundle: true,
        write: false,
        format: "iife",
        platform: "browser",
      });
      const bundle = built.outputFiles[0]?.text ?? "";
      // The page is handed to Chromium by the test (not fetched from a local address), so Chromium's Local
      // Network Access checks would block its WebSocket to 127.0.0.1; pages the server itself serves are not.
      const browser = await chromium.launch({
        executablePath: chromiumPath,
        headless: true,
        args: ["--no-sandbox", "--disable-features=LocalNetworkAccessChecks"],
      });
      try {
        const page = await browser.newPage();
        // A page of the server's own origin carrying the bundle.
        await page.route(`${base()}/interop-test`, (route) =>
          route.fulfill({ contentType: "text/html", body: `<!doctype html><title>interop</title><script>${bundle}</script>` }),
        );
        await page.goto(`${base()}/interop-test`);
        type Results = Record<string, Record<string, Outcome>>;
        type Page = typeof globalThis & { runInterop(ws: string, http: string): Promise<Results> };
        const got = await page.evaluate(([ws, http]) => (globalThis as Page).runInterop(ws ?? "", http ?? ""), [server.url, base()]);
        for (const [client, outcomes] of Object.entries(got)) expectAllPass(`${client}, Chromium (${runtime})`, outcomes);
      } catch (e) {
        console.log("SERVER LOG", server.log.slice(-20).join("\n"));
        throw e;
      } finally {
        await browser.close();
      }
    });
  });
}

test("the case × client table (target/interop.md)", () => {
  const clients = Object.keys(table);
  assert.ok(clients.length > 0);
  const rows = cases.map((k) => `| ${k.name} | ${clients.map((c) => table[c]?.[k.name] ?? "not run").join(" | ")} |`);
  const md = [`| case | ${clients.join(" | ")} |`, `|---|${clients.map(() => "---").join("|")}|`, ...rows].join("\n");
  mkdirSync(resolve(repoRoot, "target"), { recursive: true });
  writeFileSync(resolve(repoRoot, "target/interop.md"), `${md}\n`);
});
