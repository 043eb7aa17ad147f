/** A fake server that breaks the protocol: every case ends in a clean ZrpcError and close, never a hang. */

import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { WebSocketServer, type WebSocket as WsSocket } from "ws";
import { connect, ZrpcError } from "../src/index.js";
import { encodeFrame } from "../src/protocol/index.js";
import { NodeWebSocket } from "./server.js";

const hex = (h: string) => Buffer.from(h.replace(/\s/g, ""), "hex");
const SETTINGS = hex("000000000000");

/** Starts a fake server on 127.0.0.1:0 that runs `behave` on each connection; reports the close code it got. */
async function fake(behave: (ws: WsSocket, frame: Buffer) => void, opts: { protocol?: string | false } = {}) {
  const wss = new WebSocketServer({
    host: "127.0.0.1",
    port: 0,
    handleProtocols: (protocols) => (opts.protocol === false ? false : (opts.protocol ?? (protocols.has("zrpc.v1") ? "zrpc.v1" : false))),
  });
  await new Promise<void>((r) => wss.once("listening", () => r()));
  const closes: number[] = [];
  wss.on("connection", (ws) => {
    ws.on("close", (code) => closes.push(code));
    ws.on("message", (data, isBinary) => {
      if (isBinary) behave(ws, data as Buffer);
    });
  });
  const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`;
  return { url, closes, stop: () => new Promise<void>((r) => wss.close(() => r())) };
}

/** Opens a unary call against a fake that answers the OPEN with `reply`; the error and the close. */
async function against(reply: (ws: WsSocket) => void) {
  const server = await fake((ws, frame) => {
    if (frame[0] === 0x01) reply(ws); // answer OPEN
    if (frame[0] === 0x00) ws.send(SETTINGS);
  });
  const client = await connect(server.url, { WebSocket: NodeWebSocket, keepalive: false });
  const err = await client.unary("a/B", new Uint8Array([1]), { timeoutMs: 5_000 }).then(
    () => undefined,
    (e: unknown) => e,
  );
  // A stream error leaves the connection up: close it from this side.
  if (client.isOpen) void client.close();
  const closed = await client.closed;
  await server.stop();
  return { err, closed };
}

const cases: [string, (ws: WsSocket) => void, number, string?][] = [
  ["unknown frame type", (ws) => ws.send(hex("0b0000000001")), 1002],
  ["truncated frame", (ws) => ws.send(hex("070000000001000000")), 1002],
  ["a text message", (ws) => ws.send("hello"), 1003],
  ["a message over every limit", (ws) => ws.send(Buffer.alloc(200_000, 3)), 1009],
  ["a second SETTINGS", (ws) => ws.send(SETTINGS), 1002],
  ["a frame for a stream never opened", (ws) => ws.send(hex("030000000063 6869")), 1002],
  [
    "two responses to a unary call (beyond the call's credit of 1: a connection error)",
    (ws) => {
      for (let i = 0; i < 20; i++) ws.send(hex("030000000001 6869"));
    },
    1002,
  ],
  ["a STATUS OK without the response", (ws) => ws.send(hex("050000000001000000000000000000")), 1000, "INTERNAL"],
  ["END_STREAM from the responder", (ws) => ws.send(hex("030100000001 6869")), 1002],
  ["a BATCH nested in a BATCH", (ws) => ws.send(hex("0a000000000000160a0000000000000e0800000000000000000000000001")), 1002],
  [
    "credit overflowing 2^31-1",
    (ws) => {
      ws.send(hex("07000000000170000000"));
      ws.send(hex("07000000000170000000"));
    },
    1002,
  ],
  ["an uppercase metadata key", (ws) => ws.send(hex("0200000000010001000141000176")), 1002],
];

for (const [name, reply, code, status = "UNAVAILABLE"] of cases) {
  test(`a server sending ${name}: ${status} and close ${code}`, async () => {
    const { err, closed } = await against(reply);
    assert.ok(err instanceof ZrpcError, `got ${String(err)}`);
    assert.equal(err.code, status);
    assert.equal(closed.code, code);
  });
}

test("a server that drops the socket mid-call: UNAVAILABLE (1006)", async () => {
  const { err, closed } = await against((ws) => ws.terminate());
  assert.ok(err instanceof ZrpcError);
  assert.equal(err.code, "UNAVAILABLE");
  assert.equal(closed.code, 1006);
});

test("a server that never answers: the deadline still ends the call", async () => {
  const server = await fake(() => {});
  const client = await connect(server.url, { WebSocket: NodeWebSocket });
  await assert.rejects(client.unary("a/B", new Uint8Array([1]), { timeoutMs: 100 }), { code: "DEADLINE_EXCEEDED" });
  client.close();
  await server.stop();
});

test("a server that selects no subprotocol is not a zrpc server", async () => {
  const server = await fake(() => {}, { protocol: false });
  await assert.rejects(
    connect(server.url, { WebSocket: NodeWebSocket }),
    (e: unknown) => e instanceof ZrpcError && e.code === "UNAVAILABLE" && /not a zrpc server|cannot connect/.test(e.message),
  );
  await server.stop();
});

test("a server that never opens: connect times out", async () => {
  const { createServer } = await import("node:net");
  const sockets: import("node:net").Socket[] = [];
  const tcp = createServer((s) => sockets.push(s));
  await new Promise<void>((r) => tcp.listen(0, "127.0.0.1", () => r()));
  const url = `ws://127.0.0.1:${(tcp.address() as AddressInfo).port}/`;
  await assert.rejects(connect(url, { WebSocket: NodeWebSocket, connectTimeoutMs: 200 }), { code: "UNAVAILABLE" });
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => tcp.close(() => r()));
});

test("an encoded frame is what the fake expects", () => {
  assert.equal(Buffer.from(encodeFrame({ type: "SETTINGS", settings: {} })).toString("hex"), "000000000000");
});

/** A fake server that acts on `connection`, before the client sent anything. */
async function eager(onConnection: (ws: WsSocket) => void) {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: () => "zrpc.v1" });
  await new Promise<void>((r) => wss.once("listening", () => r()));
  const frames: Buffer[] = [];
  wss.on("connection", (ws) => {
    ws.on("message", (d) => frames.push(d as Buffer));
    onConnection(ws);
  });
  const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`;
  return { url, frames, stop: () => new Promise<void>((r) => wss.close(() => r())) };
}

test("SETTINGS sent with the upgrade response is not lost: the client fragments at its MAX_FRAGMENT_SIZE", {
  timeout: 10_000,
}, async () => {
  // SETTINGS: MAX_FRAGMENT_SIZE (id 4) = 1,024.
  const server = await eager((ws) => ws.send(hex("000000000000 0004 00000400")));
  const client = await connect(server.url, { WebSocket: NodeWebSocket, keepalive: false });
  const call = client.bidi("a/B");
  await call.send(new Uint8Array(5000));
  const done = async () => server.frames.filter((f) => f[0] === 0x03).length;
  for (let i = 0; i < 1000 && (await done()) < 5; i++) await new Promise((r) => setImmediate(r));
  const messages = server.frames.filter((f) => f[0] === 0x03);
  assert.deepEqual(
    messages.map((f) => f.length - 6),
    [1024, 1024, 1024, 1024, 904],
  );
  call.cancel();
  await client.close();
  await server.stop();
});

test("a close sent with the upgrade response is not lost: the connection ends, calls fail", { timeout: 10_000 }, async () => {
  const server = await eager((ws) => ws.close(1008, "go away"));
  const client = await connect(server.url, { WebSocket: NodeWebSocket }).catch((e: unknown) => e);
  if (client instanceof ZrpcError) {
    // Closed before the open was reported: connect itself failed, as it should.
    assert.equal(client.code, "UNAVAILABLE");
  } else {
    assert.ok(!(client instanceof Error));
    const c = client as Awaited<ReturnType<typeof connect>>;
    assert.deepEqual(await c.closed, { code: 1008, reason: "go away" });
    await assert.rejects(c.unary("a/B", new Uint8Array(1)), { code: "UNAVAILABLE" });
  }
  await server.stop();
});

test("one huge WebSocket message (90 MB in fragments) is refused before it is buffered: close 1009", { timeout: 20_000 }, async () => {
  const chunk = Buffer.alloc(1024 * 1024, 7);
  let sent = 0;
  const server = await eager((ws) => {
    ws.send(SETTINGS);
    const more = () => {
      // A 90 MB message in 1 MiB WebSocket fragments; stops once the client closed.
      while (sent < 90 && ws.readyState === ws.OPEN && ws.bufferedAmount < 4 * chunk.length) {
        sent++;
        ws.send(chunk, { binary: true, fin: sent === 90 });
      }
      if (sent < 90 && ws.readyState === ws.OPEN) setTimeout(more, 1);
    };
    more();
  });
  const before = process.memoryUsage().rss;
  let peak = before;
  const sample = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 2);
  const client = await connect(server.url, { WebSocket: NodeWebSocket, keepalive: false });
  const closed = await client.closed;
  clearInterval(sample);
  peak = Math.max(peak, process.memoryUsage().rss);
  await server.stop();
  assert.equal(closed.code, 1009);
  assert.ok(sent < 90, `the whole message was sent (${sent} MiB) before the client refused it`);
  assert.ok(peak - before < 48 * 1024 * 1024, `RSS grew ${((peak - before) / 1e6).toFixed(0)} MB`);
});
