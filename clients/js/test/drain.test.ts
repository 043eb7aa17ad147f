/** A server that drains (SIGTERM): new calls get UNAVAILABLE, running ones finish. */

import assert from "node:assert/strict";
import { test } from "node:test";
import { echoReply, echoRequest, startServer } from "./server.js";

const req = (message: string) => echoRequest(message);
const reply = (b: Uint8Array) => echoReply(b).message;

test("server drain: GOAWAY, UNAVAILABLE for new calls, the running call finishes", async () => {
  const server = await startServer();
  const client = await server.connect();
  const call = client.bidi("echo.Echo/Chat");
  await call.send(req("one"));
  const it = call[Symbol.asyncIterator]();
  assert.equal(reply((await it.next()).value as Uint8Array), "ONE");
  const exited = server.stop();
  const { reason } = await client.draining;
  assert.ok(reason.length > 0);
  await assert.rejects(client.unary("echo.Echo/Say", req("new")), { code: "UNAVAILABLE" });
  await call.send(req("two"));
  assert.equal(reply((await it.next()).value as Uint8Array), "TWO");
  call.closeSend();
  assert.equal((await it.next()).done, true);
  assert.equal((await call.status).code, "OK");
  assert.equal((await client.closed).code, 1000);
  assert.equal(await exited, 0);
});
