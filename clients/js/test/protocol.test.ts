/** The sans-IO state machine alone: bytes and time in, frames and events out. */

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  type Config,
  Connection,
  decodeFrame,
  type Event,
  encodeBatch,
  encodeFrame,
  type Frame,
  isBatch,
  splitBatch,
} from "../src/protocol/index.js";

/** Every frame the connection wants to send now. */
function sent(c: Connection): Frame[] {
  const out: Frame[] = [];
  for (let m = c.pollTransmit(); m !== undefined; m = c.pollTransmit()) {
    for (const f of isBatch(m) ? splitBatch(m) : [m]) out.push(decodeFrame(f));
  }
  return out;
}

function events(c: Connection): Event[] {
  const out: Event[] = [];
  for (let e = c.pollEvent(); e !== undefined; e = c.pollEvent()) out.push(e);
  return out;
}

const settings = (s: Partial<Record<"maxBatchSize" | "initialCredit" | "maxFragmentSize", number>> = {}) =>
  encodeFrame({ type: "SETTINGS", settings: s });
const enc = (f: Frame) => encodeFrame(f);
const bytes = (n: number, fill = 1) => new Uint8Array(n).fill(fill);

function connected(config: Partial<Config> = {}, peer: Parameters<typeof settings>[0] = {}): Connection {
  const c = new Connection({ keepaliveIntervalMs: 0, ...config }, 0);
  const first = c.pollTransmit();
  assert.ok(first !== undefined);
  assert.equal(decodeFrame(first).type, "SETTINGS");
  c.handleMessage(settings(peer), 0);
  return c;
}

test("SETTINGS goes first and alone, with this side's limits", () => {
  const c = new Connection({}, 0);
  c.open("unary", "a/B", 0);
  const m = c.pollTransmit();
  assert.ok(m !== undefined && !isBatch(m));
  const f = decodeFrame(m);
  assert.equal(f.type, "SETTINGS");
  assert.deepEqual(f.type === "SETTINGS" && f.settings, {
    maxMessageSize: 4194304,
    maxConcurrentStreams: 1024,
    initialCredit: 16,
    maxFragmentSize: 65536,
    maxMetadataSize: 16384,
    maxBatchSize: 16384,
    maxCursorSize: 64,
    compression: 1,
  });
});

test("a large message is fragmented at the peer's MAX_FRAGMENT_SIZE and takes one credit", () => {
  const c = connected({}, { initialCredit: 1 });
  const id = c.open("client_streaming", "a/B", 0);
  assert.ok(c.canSend(id));
  c.send(id, bytes(150_000));
  assert.equal(c.canSend(id), false, "the peer's one credit is taken by the queued message");
  const frames = sent(c);
  assert.equal(frames[0]?.type, "OPEN");
  const msgs = frames.filter((f) => f.type === "MESSAGE");
  assert.deepEqual(
    msgs.map((f) => (f.type === "MESSAGE" ? [f.payload.length, f.more] : [])),
    [
      [65536, true],
      [65536, true],
      [18928, false],
    ],
  );
  c.handleMessage(enc({ type: "CREDIT", stream: id, credit: 1 }), 1);
  assert.deepEqual(events(c), [{ type: "writable", id }]);
});

test("frames ready together share a BATCH, only once the peer offered it", () => {
  const noBatch = connected();
  for (let i = 0; i < 4; i++) noBatch.open("unary", "a/B", 0);
  let messages = 0;
  while (noBatch.pollTransmit() !== undefined) messages++;
  assert.equal(messages, 4);
  const c = connected({}, { maxBatchSize: 16384 });
  for (let i = 0; i < 4; i++) {
    const id = c.open("unary", "a/B", 0);
    c.send(id, bytes(10), true);
  }
  const m = c.pollTransmit();
  assert.ok(m !== undefined && isBatch(m));
  assert.equal(splitBatch(m).length, 8);
  assert.equal(c.pollTransmit(), undefined);
});

test("credit flows back as the application consumes, in batches of half the window", () => {
  const c = connected({ callCredit: 8, callWindowBytes: 0 });
  const id = c.open("server_streaming", "a/B", 0);
  c.send(id, bytes(1), true);
  sent(c);
  for (let i = 0; i < 8; i++) c.handleMessage(enc({ type: "MESSAGE", stream: id, endStream: false, more: false, payload: bytes(5) }), 1);
  assert.equal(events(c).filter((e) => e.type === "message").length, 8);
  assert.equal(c.heldBytes, 40);
  for (let i = 0; i < 3; i++) c.consume(id, 5);
  assert.deepEqual(sent(c), []);
  c.consume(id, 5);
  assert.deepEqual(sent(c), [{ type: "CREDIT", stream: id, credit: 4 }]);
  assert.equal(c.heldBytes, 20);
});

test("a message beyond the granted credit is a connection error 1002", () => {
  const c = connected({ callCredit: 1 });
  const id = c.open("server_streaming", "a/B", 0);
  sent(c);
  const msg = enc({ type: "MESSAGE", stream: id, endStream: false, more: false, payload: bytes(1) });
  c.handleMessage(msg, 1);
  c.handleMessage(msg, 1);
  const evs = events(c);
  assert.deepEqual(evs.at(-1), { type: "closed", code: 1002, reason: "message beyond the granted credit" });
  const end = evs.find((e) => e.type === "end");
  assert.equal(end?.type === "end" && end.status.code, "UNAVAILABLE");
  assert.equal(sent(c)[0]?.type, "GOAWAY");
  assert.deepEqual(c.pollClose(), { code: 1002, reason: "message beyond the granted credit" });
});

test("text, oversized, and malformed messages close with their codes", () => {
  const text = connected();
  text.handleMessage("hello", 0);
  assert.equal(text.pollClose(), undefined, "the GOAWAY goes first");
  assert.equal(sent(text)[0]?.type, "GOAWAY");
  assert.equal(text.pollClose()?.code, 1003);
  const big = connected();
  big.handleMessage(bytes(70_000, 3), 0);
  sent(big);
  assert.equal(big.pollClose()?.code, 1009);
  const bad = connected();
  bad.handleMessage(new Uint8Array([0x0b, 0, 0, 0, 0, 1]), 0);
  sent(bad);
  assert.equal(bad.pollClose()?.code, 1002);
  const nested = connected();
  nested.handleMessage(encodeBatch([new Uint8Array([0x0a, 0, 0, 0, 0, 0, 0, 6, 8, 0, 0, 0, 0, 0])]), 0);
  sent(nested);
  assert.equal(nested.pollClose()?.code, 1002);
});

test("a reassembled message over MAX_MESSAGE_SIZE ends only its call", () => {
  const c = connected({ maxMessageSize: 100_000 });
  const id = c.open("server_streaming", "a/B", 0);
  const other = c.open("server_streaming", "a/C", 0);
  sent(c);
  c.handleMessage(enc({ type: "MESSAGE", stream: id, endStream: false, more: true, payload: bytes(60_000) }), 0);
  c.handleMessage(enc({ type: "MESSAGE", stream: id, endStream: false, more: true, payload: bytes(60_000) }), 0);
  const ends = events(c).filter((e) => e.type === "end");
  assert.equal(ends.length, 1);
  assert.equal(ends[0]?.type === "end" && ends[0].status.code, "RESOURCE_EXHAUSTED");
  assert.deepEqual(sent(c), [{ type: "RESET", stream: id, code: 8 }]);
  assert.equal(c.heldBytes, 0);
  assert.equal(c.liveCalls, 1);
  assert.ok(other > id);
});

test("the connection-wide receive bound sheds the call holding the most", () => {
  const c = connected({ maxConnectionBuffer: 100_000 });
  const a = c.open("server_streaming", "a/A", 0);
  const b = c.open("server_streaming", "a/B", 0);
  sent(c);
  c.handleMessage(enc({ type: "MESSAGE", stream: a, endStream: false, more: false, payload: bytes(30_000) }), 0);
  for (let i = 0; i < 3; i++)
    c.handleMessage(enc({ type: "MESSAGE", stream: b, endStream: false, more: false, payload: bytes(30_000) }), 0);
  const ended = events(c).filter((e) => e.type === "end");
  assert.deepEqual(
    ended.map((e) => e.type === "end" && [e.id, e.status.code]),
    [[b, "RESOURCE_EXHAUSTED"]],
  );
  assert.equal(c.heldBytes, 30_000);
});

test("a deadline resets the call with DEADLINE_EXCEEDED at handleTimeout", () => {
  const c = connected();
  const id = c.open("unary", "a/B", 1000, { timeoutMs: 250 });
  const open = sent(c)[0];
  assert.equal(open?.type === "OPEN" && open.timeoutMs, 250);
  assert.equal(c.pollTimeout(), 1250);
  c.handleTimeout(1249);
  assert.deepEqual(events(c), []);
  c.handleTimeout(1250);
  assert.deepEqual(sent(c), [{ type: "RESET", stream: id, code: 4 }]);
  const [end] = events(c);
  assert.equal(end?.type === "end" && end.status.code, "DEADLINE_EXCEEDED");
});

test("keepalive pings a silent peer and closes with 4000 when it stays silent", () => {
  const c = new Connection({ keepaliveIntervalMs: 1000, keepaliveTimeoutMs: 500 }, 0);
  sent(c);
  assert.equal(c.pollTimeout(), 1000);
  c.handleTimeout(1000);
  assert.equal(sent(c)[0]?.type, "PING");
  assert.equal(c.pollTimeout(), 1500);
  c.handleTimeout(1500);
  sent(c);
  assert.equal(c.pollClose()?.code, 4000);
});

test("GOAWAY: calls above its last id end UNAVAILABLE, no new calls, the rest continue", () => {
  const c = connected();
  const a = c.open("bidi", "a/A", 0);
  const b = c.open("bidi", "a/B", 0);
  sent(c);
  c.handleMessage(enc({ type: "GOAWAY", lastStreamId: a, code: 1000, reason: "draining" }), 0);
  const evs = events(c);
  assert.deepEqual(
    evs.map((e) => e.type),
    ["end", "goaway"],
  );
  assert.equal(evs[0]?.type === "end" && evs[0].id, b);
  assert.throws(() => c.open("unary", "a/C", 0), { code: "UNAVAILABLE" });
  assert.equal(c.liveCalls, 1);
  assert.equal(c.pollClose(), undefined, "the server, which sent GOAWAY, closes");
});

test("the server's calls: wrong parity is 1002; an OPEN is served and answered in order", () => {
  const bad = connected();
  bad.handleMessage(enc({ type: "OPEN", stream: 3, kind: "unary", timeoutMs: 0, initialCredit: 1, method: "x/Y", metadata: [] }), 0);
  sent(bad);
  assert.equal(bad.pollClose()?.code, 1002);
  const c = connected();
  c.handleMessage(
    enc({ type: "OPEN", stream: 2, kind: "unary", timeoutMs: 0, initialCredit: 1, method: "x/Y", metadata: [["k", "v"]] }),
    0,
  );
  c.handleMessage(enc({ type: "MESSAGE", stream: 2, endStream: true, more: false, payload: bytes(2) }), 0);
  const evs = events(c);
  assert.deepEqual(
    evs.map((e) => e.type),
    ["open", "message", "half-closed"],
  );
  c.sendHeaders(2, [["h", "1"]]);
  c.send(2, bytes(3));
  c.sendStatus(2, { code: "OK", message: "", details: new Uint8Array(0), trailers: [] });
  assert.deepEqual(
    sent(c).map((f) => f.type),
    ["HEADERS", "MESSAGE", "STATUS"],
  );
  assert.equal(c.liveCalls, 0);
});

test("drain: GOAWAY, then close 1000 once the last call ends", () => {
  const c = connected();
  const id = c.open("unary", "a/B", 0);
  c.send(id, bytes(1), true);
  c.drain();
  assert.deepEqual(
    sent(c).map((f) => f.type),
    ["OPEN", "GOAWAY", "MESSAGE"],
  );
  assert.equal(c.pollClose(), undefined);
  c.handleMessage(enc({ type: "MESSAGE", stream: id, endStream: false, more: false, payload: bytes(1) }), 0);
  c.handleMessage(enc({ type: "STATUS", stream: id, code: 0, message: "", details: new Uint8Array(0), trailers: [] }), 0);
  assert.deepEqual(c.pollClose(), { code: 1000, reason: "drained" });
});

test("server-initiated calls beyond MAX_CONCURRENT_STREAMS get RESOURCE_EXHAUSTED, not a slot", () => {
  const c = connected({ maxConcurrentStreams: 1 });
  const open = (stream: number) => enc({ type: "OPEN", stream, kind: "bidi", timeoutMs: 0, initialCredit: 1, method: "x/Y", metadata: [] });
  c.handleMessage(open(2), 0);
  c.handleMessage(open(4), 0);
  assert.deepEqual(
    events(c).map((e) => e.type),
    ["open"],
  );
  const [refused] = sent(c);
  assert.equal(refused?.type === "STATUS" && [refused.stream, refused.code].join(), "4,8");
  assert.equal(c.liveCalls, 1);
});

test("a peer that floods PINGs and never reads the replies is closed with 1008", () => {
  const c = connected({ maxPendingControl: 8 });
  const ping = enc({ type: "PING", ack: false, data: bytes(8) });
  for (let i = 0; i < 8; i++) c.handleMessage(ping, 0);
  assert.equal(c.isOpen, true);
  c.handleMessage(ping, 0);
  assert.equal(c.isOpen, false);
  assert.equal(sent(c)[0]?.type, "GOAWAY");
  assert.equal(c.pollClose()?.code, 1008);
});
