/** The reconnecting client: calls that wait for a connection, a server killed and restarted, and every bound. */

import assert from "node:assert/strict";
import { test } from "node:test";
import { Channel, type ChannelState } from "../src/channel.js";
import { getText, type Metadata } from "../src/index.js";
import { echoReply, echoRequest, NodeWebSocket, startServer, until } from "./server.js";

const say = (ch: Channel, text: string, opts = {}) => ch.unary("echo.Echo/Say", echoRequest(text), opts).then((b) => echoReply(b).message);

/** The `authorization` header the server saw on a call (echo.Echo/Reflect sends the request's metadata back). */
async function tokenSeen(ch: Channel): Promise<string | undefined> {
  let headers: Metadata = [];
  await ch.unary("echo.Echo/Reflect", echoRequest("who"), { onHeaders: (h) => (headers = h) });
  return getText(headers, "authorization");
}

test("a channel's calls survive its server being killed and restarted; metadata is made again per connect", async () => {
  const first = await startServer();
  const addr = new URL(first.url).host;
  const states: ChannelState[] = [];
  let connects = 0;
  const ch = new Channel(first.url, {
    WebSocket: NodeWebSocket,
    initialBackoffMs: 20,
    maxBackoffMs: 200,
    metadata: async () => {
      connects++;
      return { authorization: `Bearer token-${connects}` };
    },
  });
  ch.onStateChange((s) => states.push(s));
  assert.equal(ch.state, "idle", "nothing connects before the first call");
  assert.equal(await say(ch, "one"), "one");
  assert.equal(ch.state, "ready");
  assert.equal(await tokenSeen(ch), "Bearer token-1");
  const streamed: number[] = [];
  for await (const m of ch.serverStreaming("echo.Echo/Repeat", echoRequest("x", 5))) streamed.push(echoReply(m).index);
  assert.deepEqual(streamed, [0, 1, 2, 3, 4]);

  await first.kill();
  await until(() => ch.state !== "ready", 10_000, "the channel to see the loss");
  // A call made while no server listens waits for the next connection.
  const waiting = say(ch, "two");
  await until(() => ch.waitingCalls === 1, 10_000, "the call to wait");
  await until(() => states.includes("backoff"), 10_000, "a failed connect");
  const second = await startServer([], addr);
  try {
    assert.equal(await waiting, "two");
    assert.equal(ch.state, "ready");
    assert.ok(connects >= 2, `metadata made once per connect (${connects})`);
    assert.equal(await tokenSeen(ch), `Bearer token-${connects}`, "the token made for this connection");
    assert.deepEqual(states.slice(0, 2), ["connecting", "ready"]);
    assert.equal(states.at(-1), "ready");
  } finally {
    await ch.close();
    await second.stop();
  }
  assert.equal(ch.state, "closed");
  await assert.rejects(say(ch, "late"), { code: "UNAVAILABLE" });
});

test("what waits for a connection is bounded: calls, bytes, the connect wait, the deadline, an abort", async () => {
  const gone = await startServer();
  await gone.kill();
  const ch = new Channel(gone.url, {
    WebSocket: NodeWebSocket,
    initialBackoffMs: 10,
    maxBackoffMs: 50,
    maxWaitingCalls: 2,
    maxWaitingBytes: 100,
    connectWaitMs: 300,
  });
  try {
    const a = say(ch, "a");
    const b = say(ch, "b");
    await assert.rejects(
      say(ch, "c"),
      (e: Error & { code?: string }) => e.code === "RESOURCE_EXHAUSTED" && /maxWaitingCalls/.test(e.message),
    );
    // Both waiting calls end UNAVAILABLE after the connect wait, naming why.
    await assert.rejects(a, (e: Error & { code?: string }) => e.code === "UNAVAILABLE" && /no connection within 300 ms: /.test(e.message));
    await assert.rejects(b, { code: "UNAVAILABLE" });
    assert.equal(ch.waitingCalls, 0);
    // Nobody waits: the channel stops connecting (no retries while nothing happens).
    await until(() => ch.state === "idle", 10_000, "the channel to go idle");
    await assert.rejects(
      ch.unary("echo.Echo/Say", new Uint8Array(200)),
      (e: Error & { code?: string }) => e.code === "RESOURCE_EXHAUSTED" && /maxWaitingBytes/.test(e.message),
    );
    await assert.rejects(say(ch, "d", { timeoutMs: 50 }), { code: "DEADLINE_EXCEEDED" });
    const abort = new AbortController();
    const aborted = say(ch, "e", { signal: abort.signal });
    abort.abort();
    await assert.rejects(aborted, { code: "CANCELLED" });
    assert.equal(ch.waitingCalls, 0);
  } finally {
    await ch.close();
  }
});

test("a draining server: its stream finishes on it while new calls go to the next connection", async () => {
  const first = await startServer(["--drain-grace-ms", "5000"]);
  const addr = new URL(first.url).host;
  const ch = new Channel(first.url, { WebSocket: NodeWebSocket, initialBackoffMs: 20, maxBackoffMs: 200 });
  const states: ChannelState[] = [];
  ch.onStateChange((s) => states.push(s));
  // A stream that keeps the first connection (and its server) draining.
  const chat = ch.bidi("echo.Echo/Chat");
  await chat.send(echoRequest("hold"));
  const it = chat[Symbol.asyncIterator]();
  assert.equal(echoReply((await it.next()).value as Uint8Array).message, "HOLD");
  const exited = first.stop();
  // GOAWAY: the next connection is opened at once; the draining server no
  // longer listens, so that connect fails, and with no call waiting the
  // channel goes idle (no retries while nothing happens).
  await until(() => states.includes("idle"), 10_000, "the next connect to fail");
  assert.ok(states.indexOf("connecting", 2) > 0, `a connect started at the drain: ${states.join(",")}`);
  const waiting = say(ch, "after");
  const second = await startServer([], addr);
  try {
    assert.equal(await waiting, "after");
    // The old stream still works on the draining connection.
    await chat.send(echoRequest("still"));
    assert.equal(echoReply((await it.next()).value as Uint8Array).message, "STILL");
    chat.closeSend();
    assert.equal((await it.next()).done, true);
    assert.equal((await chat.status).code, "OK");
    assert.equal(await exited, 0);
  } finally {
    await ch.close();
    await second.stop();
  }
});
