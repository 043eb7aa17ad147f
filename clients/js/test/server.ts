/** Starts `zrpc serve` on 127.0.0.1 with an OS-chosen port for a test, and stops it. */

import { type ChildProcess, spawn } from "node:child_process";
import { dirname, resolve } from "node:path";
import { createInterface } from "node:readline";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { WebSocket } from "ws";
import { EchoReplySchema, EchoRequestSchema } from "../src/gen/echo_pb.js";
import { type Client, type ConnectOptions, connect, type WebSocketConstructor } from "../src/index.js";

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root (this file runs from clients/js/dist-test/test). */
export const repoRoot = resolve(here, "../../../..");
/** The `zrpc` binary the tests run; `ZRPC_BIN` overrides. */
export const zrpcBin = process.env.ZRPC_BIN ?? resolve(repoRoot, "target/debug/zrpc");

/** `ws`'s WebSocket as the WHATWG constructor type (Node 20 has no global one). */
export const NodeWebSocket = WebSocket as unknown as WebSocketConstructor;

export interface RunningServer {
  url: string;
  /** The server's process id. */
  pid: number;
  /** Lines the server wrote to stderr (its log). */
  log: string[];
  /** The metrics endpoint (`http://…/metrics`), when started with `--metrics-addr`. */
  metricsUrl: string | undefined;
  /** Resolves with the exit code once the process has exited. */
  exited: Promise<number | null>;
  /** SIGTERM (drain) and wait for the exit. */
  stop(): Promise<number | null>;
  /** SIGKILL (no drain, sockets cut) and wait for the exit. */
  kill(): Promise<number | null>;
  connect(opts?: ConnectOptions): Promise<Client>;
}

/** Starts `zrpc serve --addr ADDR ...args` (ADDR `127.0.0.1:0` unless given); resolves once it listens. */
export function startServer(args: string[] = [], addr = "127.0.0.1:0"): Promise<RunningServer> {
  const child: ChildProcess = spawn(zrpcBin, ["serve", "--addr", addr, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" },
  });
  const log: string[] = [];
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", (l) => log.push(l));
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  return new Promise((resolveStart, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`zrpc serve did not start within 20 s:\n${log.join("\n")}`));
    }, 20_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${zrpcBin} (build it with cargo build -p zrpc-cli): ${e.message}`));
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`zrpc serve exited with ${code}:\n${log.join("\n")}`));
    });
    let metricsUrl: string | undefined;
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      if (line.startsWith("metrics")) metricsUrl = line.split(" ").at(-1);
      const m = /on (wss?:\/\/\S+)/.exec(line);
      if (m === null) return;
      clearTimeout(timer);
      const url = m[1] as string;
      resolveStart({
        url,
        pid: child.pid ?? 0,
        log,
        metricsUrl,
        exited,
        stop: () => {
          child.kill("SIGTERM");
          return exited;
        },
        kill: () => {
          child.kill("SIGKILL");
          return exited;
        },
        connect: (opts = {}) => connect(url, { WebSocket: NodeWebSocket, ...opts }),
      });
    });
  });
}

/** Resolves when `cond()` holds, checking on every event-loop turn; rejects after `ms`. */
export async function until(cond: () => boolean, ms = 10_000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

/**
 * One server and one client for a whole test file: started before its
 * tests, closed and stopped after them. Read `.server` and `.client` inside tests.
 */
export function useServer(args: string[] = []): { server: RunningServer; client: Client } {
  const shared = {} as { server: RunningServer; client: Client };
  before(async () => {
    shared.server = await startServer(args);
    shared.client = await shared.server.connect();
  });
  after(async () => {
    await shared.client.close();
    await shared.server.stop();
  });
  return shared;
}

/** An `echo.EchoRequest`, encoded. */
export const echoRequest = (message: string, repeat = 0) => toBinary(EchoRequestSchema, create(EchoRequestSchema, { message, repeat }));
/** An `echo.EchoReply`, decoded. */
export const echoReply = (b: Uint8Array) => fromBinary(EchoReplySchema, b);
