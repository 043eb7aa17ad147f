/** Interceptors around the TypeScript client's calls, against the real server: order, headers, every call kind, a refusal, a retry, and a traceparent that the server's exported span continues. */

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { test } from "node:test";
import { Channel } from "../src/channel.js";
import { getText, type Metadata, ZrpcError } from "../src/index.js";
import { type Interceptor, intercept, setHeader } from "../src/interceptors.js";
import { echoReply, echoRequest, NodeWebSocket, startServer, useServer } from "./server.js";

const ctx = useServer();

/** Logs `name:event` lines and appends its name to the request's `x-via` header. */
function recorder(name: string, log: string[]): Interceptor {
  return (next) => async (req) => {
    const via = getText(req.header, "x-via");
    setHeader(req.header, "x-via", via === undefined ? name : `${via},${name}`);
    log.push(`${name}:start ${req.kind}`);
    try {
      const res = await next(req);
      log.push(`${name}:response`);
      return res;
    } catch (e) {
      log.push(`${name}:error ${(e as ZrpcError).code}`);
      throw e;
    }
  };
}

test("interceptors run first-outermost, add headers, and wrap every call kind", async () => {
  const log: string[] = [];
  const plain = await ctx.server.connect();
  const client = intercept(plain, [recorder("a", log), recorder("b", log)]);
  let headers: Metadata = [];
  const out = echoReply(await client.unary("echo.Echo/Reflect", echoRequest("hi"), { onHeaders: (h) => (headers = h) }));
  assert.equal(out.message, "hi");
  assert.equal(getText(headers, "x-via"), "a,b");
  assert.deepEqual(log, ["a:start unary", "b:start unary", "b:response", "a:response"]);

  log.length = 0;
  const repeated: string[] = [];
  for await (const m of client.serverStreaming("echo.Echo/Repeat", echoRequest("r", 3))) repeated.push(echoReply(m).message);
  assert.deepEqual(repeated, ["r", "r", "r"]);
  assert.deepEqual(log, ["a:start server_streaming", "b:start server_streaming", "b:response", "a:response"]);

  log.length = 0;
  const collected = await client.clientStreaming("echo.Echo/Collect", [echoRequest("x"), echoRequest("y")]);
  assert.equal(echoReply(collected).message, "x y");
  assert.equal(log[0], "a:start client_streaming");

  log.length = 0;
  const chat = client.bidi("echo.Echo/Chat");
  await chat.send(echoRequest("one"));
  await chat.send(echoRequest("two"));
  chat.closeSend();
  const upper: string[] = [];
  for await (const m of chat) upper.push(echoReply(m).message);
  assert.deepEqual(upper, ["ONE", "TWO"]);
  assert.equal((await chat.status).code, "OK");
  assert.equal(log[0], "a:start bidi");

  // An error passes out through each interceptor.
  log.length = 0;
  await assert.rejects(client.unary("nope.Nope/Nope", new Uint8Array()), { code: "UNIMPLEMENTED" });
  assert.deepEqual(log, ["a:start unary", "b:start unary", "b:error UNIMPLEMENTED", "a:error UNIMPLEMENTED"]);
  await plain.close();
});

test("an interceptor that refuses a call: it is never sent", async () => {
  const deny: Interceptor = (next) => async (req) => {
    if (req.method.startsWith("people.")) throw new ZrpcError("PERMISSION_DENIED", "not from this client");
    return next(req);
  };
  const plain = await ctx.server.connect();
  const client = intercept(plain, [deny]);
  await assert.rejects(client.unary("people.People/ListPeople", new Uint8Array()), { code: "PERMISSION_DENIED" });
  const chat = client.bidi("people.People/Chat");
  assert.equal((await chat.status).code, "PERMISSION_DENIED");
  await assert.rejects(chat.send(echoRequest("x")), { code: "PERMISSION_DENIED" });
  assert.equal(echoReply(await client.unary("echo.Echo/Say", echoRequest("ok"))).message, "ok");
  assert.equal(ctx.server.log.filter((l) => l.includes("people.People/ListPeople")).length, 0, "the server never saw it");
  await plain.close();
});

test("an interceptor retries: a failed call is sent again with another request", async () => {
  let attempts = 0;
  const fixEmptyMessages: Interceptor = (next) => async (req) => {
    attempts += 1;
    try {
      return await next(req);
    } catch (e) {
      if (!(e instanceof ZrpcError) || e.code !== "INVALID_ARGUMENT" || req.kind !== "unary") throw e;
      attempts += 1;
      return next({ ...req, message: echoRequest("fixed") });
    }
  };
  // Through a Channel: the interceptors wrap the whole call.
  const channel = new Channel(ctx.server.url, { WebSocket: NodeWebSocket });
  const client = intercept(channel, [fixEmptyMessages]);
  // people.People/CreatePerson refuses an empty name.
  const person = (name: string) => new Uint8Array([0x0a, name.length, ...new TextEncoder().encode(name)]);
  await client.unary("people.People/CreatePerson", person("ann"));
  assert.equal(attempts, 1);
  attempts = 0;
  const created = await client.unary("people.People/CreatePerson", person(""));
  assert.ok(created.length > 0);
  assert.equal(attempts, 2, "sent twice");
  await channel.close();
});

test("a traceparent set by an interceptor is the parent of the server's exported span", async () => {
  // A stand-in OpenTelemetry collector: takes OTLP/HTTP exports.
  const bodies: Buffer[] = [];
  const collector = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      bodies.push(Buffer.concat(chunks));
      res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    });
  });
  await new Promise<void>((r) => collector.listen(0, "127.0.0.1", r));
  const { port } = collector.address() as { port: number };
  const server = await startServer(["--otlp", `http://127.0.0.1:${port}`]);
  const traceId = "0af7651916cd43dd8448eb211c80319c";
  const traceparent: Interceptor = (next) => async (req) => {
    setHeader(req.header, "traceparent", `00-${traceId}-b7ad6b7169203331-01`);
    return next(req);
  };
  const plain = await server.connect();
  const client = intercept(plain, [traceparent]);
  assert.equal(echoReply(await client.unary("echo.Echo/Say", echoRequest("traced"))).message, "traced");
  await plain.close();
  assert.equal(await server.stop(), 0); // the exit flushes the spans
  collector.close();
  const id = Buffer.from(traceId, "hex");
  assert.ok(
    bodies.some((b) => b.includes(id) && b.includes("echo.Echo/Say")),
    `no export held the call's span in the client's trace (${bodies.length} exports)`,
  );
});
