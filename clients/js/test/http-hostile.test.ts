/**
 * HTTP/2 clients that break the rules on purpose, frame by frame over a raw socket (no HTTP/2 library
 * would send these): more streams than the server allows, a CONTINUATION flood, a client that never
 * reads; and what a well-behaved client sees when the server drains (GOAWAY, in-flight calls finish).
 * Each against `zrpc serve` on tokio and on smol; after each, an ordinary call still works.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { EchoRequestSchema } from "../src/gen/echo_pb.js";
import { type RunningServer, startServer } from "./server.js";

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const T = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
const F = { END_STREAM: 1, ACK: 1, END_HEADERS: 4 } as const;

function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}

/** One header as an HPACK literal without indexing, new name (short names and values only). */
function literal(name: string, value: string): Buffer {
  assert.ok(name.length < 127 && value.length < 127);
  return Buffer.concat([Buffer.from([0, name.length]), Buffer.from(name), Buffer.from([value.length]), Buffer.from(value)]);
}

function grpcHead(authority: string, path: string): Buffer {
  return Buffer.concat([
    literal(":method", "POST"),
    literal(":scheme", "http"),
    literal(":path", path),
    literal(":authority", authority),
    literal("content-type", "application/grpc"),
    literal("te", "trailers"),
  ]);
}

/** A raw HTTP/2 connection: what the server sent, frame by frame. */
class RawH2 {
  readonly socket: net.Socket;
  readonly rst = new Map<number, number>();
  readonly headers = new Set<number>();
  goaway: number | undefined;
  settings = new Map<number, number>();
  closed: Promise<void>;
  #buf = Buffer.alloc(0);

  constructor(port: number, settings: Buffer = Buffer.alloc(0)) {
    this.socket = net.connect(port, "127.0.0.1");
    this.socket.on("error", () => {});
    this.socket.write(Buffer.concat([PREFACE, frame(T.SETTINGS, 0, 0, settings)]));
    this.closed = new Promise((ok) => this.socket.on("close", () => ok()));
    this.socket.on("data", (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      while (this.#buf.length >= 9) {
        const len = this.#buf.readUIntBE(0, 3);
        if (this.#buf.length < 9 + len) break;
        const [type, flags, stream] = [this.#buf[3], this.#buf[4] ?? 0, this.#buf.readUInt32BE(5) & 0x7fff_ffff];
        const payload = this.#buf.subarray(9, 9 + len);
        this.#buf = this.#buf.subarray(9 + len);
        if (type === T.SETTINGS && !(flags & F.ACK)) {
          for (let i = 0; i + 6 <= payload.length; i += 6) this.settings.set(payload.readUInt16BE(i), payload.readUInt32BE(i + 2));
          this.send(frame(T.SETTINGS, F.ACK, 0));
        } else if (type === T.PING && !(flags & F.ACK)) {
          this.send(frame(T.PING, F.ACK, 0, Buffer.from(payload)));
        } else if (type === T.GOAWAY) {
          this.goaway = payload.readUInt32BE(4);
        } else if (type === T.RST_STREAM) {
          this.rst.set(stream, payload.readUInt32BE(0));
        } else if (type === T.HEADERS) {
          this.headers.add(stream);
        }
      }
    });
  }

  send(b: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(b);
  }

  /** Resolves once `cond()` holds (checked as frames arrive), or rejects after `ms`. */
  async until(cond: () => boolean, ms: number, what: string): Promise<void> {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

const sayReq = toBinary(EchoRequestSchema, create(EchoRequestSchema, { message: "hi" }));

function envelope(msg: Uint8Array): Buffer {
  const b = Buffer.alloc(5 + msg.length);
  b.writeUInt32BE(msg.length, 1);
  b.set(msg, 5);
  return b;
}

/** One ordinary gRPC call on a new connection: its grpc-status. */
async function ordinaryCall(base: string): Promise<string> {
  const session = http2.connect(base);
  session.on("error", () => {});
  try {
    const req = session.request({ ":method": "POST", ":path": "/echo.Echo/Say", "content-type": "application/grpc", te: "trailers" });
    req.end(envelope(sayReq));
    req.resume();
    const trailers = await new Promise<http2.IncomingHttpHeaders>((ok, fail) => {
      req.on("trailers", ok);
      req.on("error", fail);
    });
    return String(trailers["grpc-status"]);
  } finally {
    session.close();
  }
}

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1] ?? 0);
}

for (const runtime of ["tokio", "smol"]) {
  describe(`hostile HTTP/2 clients, zrpc serve --runtime ${runtime}`, () => {
    let server: RunningServer;
    const port = () => Number(new URL(server.url).port);
    const authority = () => new URL(server.url).host;
    const base = () => `http://${authority()}`;
    before(async () => {
      server = await startServer(["--db", ":memory:", "--max-message-size", "65536", "--runtime", runtime]);
    });
    after(async () => {
      await server.stop();
    });

    test("more streams than SETTINGS_MAX_CONCURRENT_STREAMS: the extra ones are refused, the rest served", async () => {
      const h2 = new RawH2(port());
      await h2.until(() => h2.settings.has(3), 10_000, "the server's SETTINGS");
      const max = h2.settings.get(3) ?? 0;
      assert.equal(max, 1024, "advertised from max_concurrent_streams");
      // max + 10 streams whose request bodies never end: each stays open.
      const head = grpcHead(authority(), "/echo.Echo/Say");
      const ids: number[] = [];
      for (let i = 0; i < max + 10; i++) {
        const id = 1 + 2 * i;
        ids.push(id);
        h2.send(frame(T.HEADERS, F.END_HEADERS, id, head));
      }
      // The streams past the limit are reset REFUSED_STREAM (7) — or the connection is cut.
      await h2.until(() => h2.rst.size >= 10 || h2.goaway !== undefined || h2.socket.destroyed, 20_000, "refusals");
      if (h2.goaway === undefined && !h2.socket.destroyed) {
        for (const id of ids.slice(max)) assert.equal(h2.rst.get(id), 7, `stream ${id}`);
        // One of the open ones completes when its body comes.
        h2.send(frame(T.DATA, F.END_STREAM, 1, envelope(sayReq)));
        await h2.until(() => h2.headers.has(1), 10_000, "the answer on stream 1");
      }
      h2.socket.destroy();
      assert.equal(await ordinaryCall(base()), "0");
    });

    test("a CONTINUATION flood is cut off before it costs more than a header block", async () => {
      const h2 = new RawH2(port());
      await h2.until(() => h2.settings.has(3), 10_000, "the server's SETTINGS");
      h2.send(frame(T.HEADERS, 0, 1, grpcHead(authority(), "/echo.Echo/Say")));
      // 16 MiB of header fields in 1 KiB CONTINUATION frames, never END_HEADERS, sent while the server listens.
      const chunk = frame(
        T.CONTINUATION,
        0,
        1,
        Buffer.concat(Array.from({ length: 8 }, (_, i) => literal(`x-flood-${i}`, "v".repeat(110)))),
      );
      let sent = 0;
      for (let i = 0; i < 16_384 && !h2.socket.destroyed && h2.goaway === undefined; i++) {
        h2.send(chunk);
        sent++;
        if (i % 256 === 255) await new Promise((r) => setImmediate(r));
      }
      await Promise.race([h2.closed, h2.until(() => h2.goaway !== undefined, 20_000, "GOAWAY")]);
      assert.ok(h2.goaway !== undefined || h2.socket.destroyed, `the server took ${sent} CONTINUATION frames`);
      assert.ok(!h2.headers.has(1), "no answer to a header block that never ended");
      h2.socket.destroy();
      assert.equal(await ordinaryCall(base()), "0");
    });

    test("a client that never reads (window 0) holds the server's memory to its per-call queue", async () => {
      // SETTINGS_INITIAL_WINDOW_SIZE = 0: the server may send no DATA at all.
      const settings = Buffer.alloc(6);
      settings.writeUInt16BE(4, 0);
      settings.writeUInt32BE(0, 2);
      const h2 = new RawH2(port(), settings);
      await h2.until(() => h2.settings.has(3), 10_000, "the server's SETTINGS");
      const before = rssKb(server.pid);
      // 32 streams, each asking for 10,000 replies of 1,000 bytes: 320 MB if the server buffered them
      // (the requests fit the server's default windows: 32 KB in all).
      const big = toBinary(EchoRequestSchema, create(EchoRequestSchema, { message: "s".repeat(1_000), repeat: 10_000 }));
      const head = grpcHead(authority(), "/echo.Echo/Repeat");
      for (let i = 0; i < 32; i++) {
        const id = 1 + 2 * i;
        h2.send(frame(T.HEADERS, F.END_HEADERS, id, head));
        h2.send(frame(T.DATA, F.END_STREAM, id, envelope(big)));
      }
      await h2.until(() => h2.headers.size === 32, 20_000, "32 response heads");
      // Give the handlers time to fill what they may (an event to await does not exist from outside).
      for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 25));
      const grown = rssKb(server.pid) - before;
      assert.ok(grown < 64 * 1024, `the server grew by ${grown} kB for 32 stalled streams`);
      assert.equal(await ordinaryCall(base()), "0");
      h2.socket.destroy();
    });
  });
}

test("draining: HTTP/2 clients get GOAWAY (NO_ERROR), in-flight calls finish, new connections are refused", async () => {
  const server = await startServer(["--db", ":memory:", "--drain-grace-ms", "10000"]);
  const base = server.url.replace(/^ws:/, "http:").replace(/\/$/, "");
  const session = http2.connect(base);
  session.on("error", () => {});
  const goaway = new Promise<number>((ok) => session.on("goaway", (code: number) => ok(code)));
  // A server stream in flight: echo.Echo/Subscribe-like; Repeat with many replies, read slowly.
  const req = session.request({ ":method": "POST", ":path": "/echo.Echo/Repeat", "content-type": "application/grpc", te: "trailers" });
  req.end(envelope(toBinary(EchoRequestSchema, create(EchoRequestSchema, { message: "d", repeat: 3 }))));
  const body: Buffer[] = [];
  req.on("data", (d: Buffer) => body.push(d));
  const trailers = new Promise<http2.IncomingHttpHeaders>((ok) => req.on("trailers", ok));
  await new Promise<void>((ok) => req.on("response", () => ok()));
  const exited = server.stop();
  assert.equal(await goaway, http2.constants.NGHTTP2_NO_ERROR);
  assert.equal((await trailers)["grpc-status"], "0", "the call in flight finished");
  session.close();
  assert.equal(await exited, 0);
});
