/** What a web developer relies on, against the real server: concurrency, large messages, cancel, deadlines, metadata, flow control, drain, server-initiated calls. */

import assert from "node:assert/strict";
import { test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Echo, EchoReplySchema, EchoRequestSchema } from "../src/gen/echo_pb.js";
import { getText, type Metadata, ZrpcError } from "../src/index.js";
import { createClient } from "../src/typed.js";
import { echoReply, echoRequest, until, useServer } from "./server.js";

const ctx = useServer(["--echo-interval-ms", "1"]);
const req = echoRequest;
const reply = echoReply;

test("the seed's echo method streams its replies", async () => {
  const got: string[] = [];
  for await (const m of ctx.client.serverStreaming("echo", new TextEncoder().encode("world"))) got.push(new TextDecoder().decode(m));
  assert.deepEqual(got, Array(10).fill("world"));
});

test("100 concurrent calls on one connection", async () => {
  const echo = createClient(Echo, ctx.client);
  const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => echo.say({ message: `m${i}` })));
  assert.deepEqual(
    replies.map((r) => r.message),
    Array.from({ length: 100 }, (_, i) => `m${i}`),
  );
  assert.equal(ctx.client.liveCalls, 0);
});

test("a 3 MiB message round trip (fragmented both ways)", async () => {
  const big = "z".repeat(3 * 1024 * 1024);
  const out = reply(await ctx.client.unary("echo.Echo/Say", req(big)));
  assert.equal(out.message.length, big.length);
  assert.equal(out.message, big);
});

test("a message over the server's limit ends the call, not the connection", async () => {
  const huge = "z".repeat(5 * 1024 * 1024);
  await assert.rejects(ctx.client.unary("echo.Echo/Say", req(huge)), { code: "RESOURCE_EXHAUSTED" });
  assert.equal(reply(await ctx.client.unary("echo.Echo/Say", req("still here"))).message, "still here");
});

test("AbortSignal cancels a stream, and the server sees the cancel", async () => {
  const abort = new AbortController();
  let n = 0;
  await assert.rejects(
    (async () => {
      for await (const _ of ctx.client.serverStreaming("echo.Echo/Repeat", req("c", 10_000), { signal: abort.signal })) {
        n += 1;
        if (n === 3) abort.abort();
      }
    })(),
    { code: "CANCELLED" },
  );
  assert.equal(n, 3);
  await until(() => ctx.server.log.some((l) => /echo\.Echo\/Repeat.*CANCELLED/i.test(l)), 10_000, "the server's log of the cancelled call");
  assert.equal(ctx.client.liveCalls, 0);
});

test("breaking out of for-await cancels the stream", async () => {
  for await (const _ of ctx.client.serverStreaming("echo.Echo/Repeat", req("b", 10_000))) break;
  assert.equal(ctx.client.liveCalls, 0);
  assert.equal(reply(await ctx.client.unary("echo.Echo/Say", req("after"))).message, "after");
});

test("a deadline ends the call with DEADLINE_EXCEEDED", async () => {
  const call = ctx.client.bidi("echo.Echo/Chat", { timeoutMs: 100 });
  const started = performance.now();
  const s = await call.status;
  assert.equal(s.code, "DEADLINE_EXCEEDED");
  assert.ok(performance.now() - started >= 90);
  await assert.rejects(call.send(req("late")), { code: "DEADLINE_EXCEEDED" });
});

test("request metadata, response headers and trailers", async () => {
  let headers: Metadata = [];
  let trailers: Metadata = [];
  const out = await ctx.client.unary("echo.Echo/Reflect", req("md"), {
    metadata: { "x-request-id": "42", "trace-bin": new Uint8Array([0, 255, 16]) },
    onHeaders: (h) => {
      headers = h;
    },
    onTrailers: (t) => {
      trailers = t;
    },
  });
  assert.equal(reply(out).message, "md");
  assert.equal(getText(headers, "x-request-id"), "42");
  const trace = headers.find(([k]) => k === "trace-bin");
  assert.ok(trace !== undefined && trace[1] instanceof Uint8Array);
  assert.deepEqual([...trace[1]], [0, 255, 16]);
  assert.equal(getText(trailers, "reflect-x-request-id"), "42");
});

test("connection metadata goes with every call", async () => {
  const c = await ctx.server.connect({ metadata: { authorization: "Bearer t" } });
  let headers: Metadata = [];
  await c.unary("echo.Echo/Reflect", req("x"), { metadata: [["x-a", "1"]], onHeaders: (h) => (headers = h) });
  assert.deepEqual(
    headers.map(([k]) => k),
    ["authorization", "x-a"],
  );
  // A call's own value of a key replaces the connection's (a server reading
  // one value sees the call's).
  await c.unary("echo.Echo/Reflect", req("y"), { metadata: { authorization: "Bearer call" }, onHeaders: (h) => (headers = h) });
  assert.deepEqual(headers, [["authorization", "Bearer call"]]);
  await c.close();
});

test("a consumer that stops reading makes the server stop sending", async () => {
  const payload = "p".repeat(1000);
  const it = ctx.client.serverStreaming("echo.Echo/Repeat", req(payload, 5_000))[Symbol.asyncIterator]();
  assert.equal((await it.next()).done, false);
  // Give the server room to overrun us if it would: other calls run meanwhile.
  for (let i = 0; i < 50; i++) await ctx.client.unary("echo.Echo/Say", req("other"));
  // Reading one message grows the window toward its byte budget (1 MiB by
  // default: budget / 1,000 bytes = 1,048 messages): what is held stays
  // within that budget plus the first window, not 5,000 messages.
  assert.ok(ctx.client.heldBytes <= 1024 * 1024 + 16 * 1010, `held ${ctx.client.heldBytes} bytes`);
  assert.ok(ctx.client.heldBytes >= 1000, "the server sent what the credit allowed");
  let n = 1;
  for (let r = await it.next(); !r.done; r = await it.next()) n += 1;
  assert.equal(n, 5_000);
  assert.equal(ctx.client.heldBytes, 0);
});

test("send waits for the server's credit instead of buffering", async () => {
  const call = ctx.client.bidi("echo.Echo/Chat");
  // The server grants 16 messages at first and Chat answers each one; we do
  // not read the answers, so its replies stop at our credit and it stops
  // reading requests: our sends must then wait.
  // 32 KiB messages: the server's own send buffer (1 MiB a call) fills too.
  const big = "s".repeat(32 * 1024);
  const total = 2_000;
  let sent = 0;
  const sending = (async () => {
    for (; sent < total; sent++) await call.send(req(big));
  })();
  await until(() => sent > 16, 10_000, "the first sends");
  const stalledAt = sent;
  for (let i = 0; i < 20; i++) await ctx.client.unary("echo.Echo/Say", req("meanwhile"));
  assert.ok(sent < 200, `sent ${sent} (from ${stalledAt}) without credit`);
  let read = 0;
  for await (const _ of call) {
    read += 1;
    if (read === total) break;
    if (read === 1) void sending.then(() => call.closeSend());
  }
  await sending;
  assert.equal(read, total);
});

test("the server calls the client back on the same connection", async () => {
  const c = await ctx.server.connect({
    handlers: {
      "client.Greeter/Hello": {
        kind: "unary",
        handler: (request) => {
          const r = fromBinary(EchoRequestSchema, request);
          return toBinary(EchoReplySchema, create(EchoReplySchema, { message: `${r.message}, answered` }));
        },
      },
      "client.Greeter/Count": {
        kind: "server_streaming",
        handler: async function* (request) {
          const r = fromBinary(EchoRequestSchema, request);
          for (let i = 0; i < r.repeat; i++) yield toBinary(EchoReplySchema, create(EchoReplySchema, { message: `n${i}` }));
        },
      },
    },
  });
  const echo = createClient(Echo, c);
  assert.equal((await echo.callback({ message: "client.Greeter/Hello" })).message, "hello from the server, answered");
  const counted = await echo.callback({ message: "client.Greeter/Count", repeat: 4 });
  assert.deepEqual([counted.message, counted.index], ["n0 n1 n2 n3", 4]);
  await assert.rejects(echo.callback({ message: "client.Greeter/Missing" }), (e: unknown) => {
    assert.ok(e instanceof ZrpcError);
    assert.equal(e.code, "UNIMPLEMENTED");
    return true;
  });
  await c.close();
});

test("close() drains: calls in flight finish, then the connection closes with 1000", async () => {
  const c = await ctx.server.connect();
  const call = c.bidi("echo.Echo/Chat");
  await call.send(req("before"));
  const closing = c.close();
  await assert.rejects(c.unary("echo.Echo/Say", req("new")), { code: "UNAVAILABLE" });
  await call.send(req("during"));
  call.closeSend();
  const got: string[] = [];
  for await (const m of call) got.push(reply(m).message);
  assert.deepEqual(got, ["BEFORE", "DURING"]);
  assert.deepEqual(await closing, { code: 1000, reason: "drained" });
});
