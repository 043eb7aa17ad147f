/** The reconnecting client: calls that wait for a connection, a server killed and restarted, and every bound. */

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { backoffMs, Channel, type ChannelState, jitter } from "../src/channel.js";
import { People } from "../src/gen/people_pb.js";
import { getText, type Metadata } from "../src/index.js";
import { createClient } from "../src/typed.js";
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

test("WatchPeople through the channel goes on across two SIGKILLs: every person once, in order, even a watch that had none yet", async () => {
  const dir = mkdtempSync(join(tmpdir(), "zrpc-resume-"));
  const db = ["--db", join(dir, "people.db")];
  let server = await startServer(db);
  const addr = new URL(server.url).host;
  const ch = new Channel(server.url, { WebSocket: NodeWebSocket, initialBackoffMs: 20, maxBackoffMs: 200 });
  const people = createClient(People, ch);
  const created: number[] = [];
  const create = async (n: number) => {
    for (let i = 0; i < n; i++) created.push((await people.createPerson({ name: `P${created.length}` })).id);
  };
  // Two watchers: one from the start (it sees the first people), one that
  // has received nothing when the server is killed (its resume point is
  // the response headers').
  const seen: number[] = [];
  const idleSeen: number[] = [];
  let idleHeard = false;
  const watch = async (into: number[], opts = {}) => {
    for await (const p of people.watchPeople({}, opts)) {
      into.push(p.id);
      if (into.length === 9) return;
    }
  };
  const early = watch(seen);
  await create(3);
  await until(() => seen.length === 3, 10_000, "the first three people");
  const late = watch(idleSeen, { onHeaders: () => (idleHeard = true) });
  await until(() => idleHeard, 10_000, "the idle watch to reach the server");
  // The idle watch starts after the first three: it lists them first.
  await until(() => idleSeen.length === 3, 10_000, "the idle watch's listing");
  try {
    for (let round = 0; round < 2; round++) {
      await server.kill();
      server = await startServer(db, addr);
      await create(3);
      await until(() => seen.length === 6 + 3 * round && idleSeen.length === 6 + 3 * round, 20_000, `round ${round}`);
    }
    await Promise.all([early, late]);
    assert.deepEqual(seen, created, "every person once, in order");
    assert.deepEqual(idleSeen, created);
  } finally {
    await ch.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a resumed stream is bounded: with no server to come back it ends after maxResumes attempts, with the last error; a forged cursor is refused", async () => {
  const server = await startServer();
  const ch = new Channel(server.url, {
    WebSocket: NodeWebSocket,
    initialBackoffMs: 5,
    maxBackoffMs: 20,
    maxResumes: 3,
    connectWaitMs: 200,
  });
  try {
    // A forged resume cursor: the people service refuses it (INVALID_ARGUMENT),
    // which is not UNAVAILABLE, so it is the caller's at once.
    const bad = ch.serverStreaming("people.People/WatchPeople", new Uint8Array(0), { metadata: [["zrpc-cursor-bin", new Uint8Array(3)]] });
    await assert.rejects(
      (async () => {
        for await (const _ of bad) assert.fail("no message");
      })(),
      (e: Error & { code?: string }) => e.code === "INVALID_ARGUMENT" && /resume cursor: 3 bytes/.test(e.message),
    );
    let heard = false;
    const it = ch
      .serverStreaming("people.People/WatchPeople", new Uint8Array(0), { onHeaders: () => (heard = true) })
      [Symbol.asyncIterator]();
    const next = it.next();
    await until(() => heard, 10_000, "the watch to reach the server");
    await server.kill();
    await assert.rejects(next, (e: Error & { code?: string }) => e.code === "UNAVAILABLE" && /no connection/.test(e.message));
    assert.equal((it as unknown as { resumes: number }).resumes, 3, "maxResumes attempts, then the last error");
  } finally {
    await ch.close();
  }
});

test("the backoff doubles from its first wait up to its cap, and jitter keeps it within 0.5x to 1x", () => {
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6, 7, 100].map((n) => backoffMs(100, 5_000, n)),
    [100, 200, 400, 800, 1600, 3200, 5000, 5000],
  );
  for (let i = 0; i < 1000; i++) {
    const j = jitter(5_000);
    assert.ok(j >= 2_500 && j <= 5_000, `${j}`);
  }
});
