/**
 * The behaviour suite of docs/behaviour.json, run against the TypeScript
 * protocol module; the Rust core runs the same scripts
 * (core/tests/behaviour.rs). PROTOCOL.md section 12 describes the format.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { test } from "node:test";
import { gunzipSync, gzipSync } from "node:zlib";
import {
  type CallKind,
  Code,
  type Config,
  Connection,
  codeName,
  decodeFrame,
  type Event,
  encodeBatch,
  encodeFrame,
  FrameType,
  fromHex,
  HEADER_LEN,
  isBatch,
  splitBatch,
  toHex,
} from "../src/protocol/index.js";
import { frameFromJson, frameToJson, type Json, metadataFromJson, metadataToJson, payloadFromJson } from "./frames-json.js";
import { repoRoot } from "./server.js";

interface Script {
  name: string;
  covers: string;
  only?: string;
  config?: Json;
  steps: Json[];
}

const suite = JSON.parse(readFileSync(resolve(repoRoot, "docs/behaviour.json"), "utf8")) as { config: Json; scripts: Script[] };

/** The scripts' configuration names, as this package's. */
function configOf(j: Json): Partial<Config> {
  const n = (k: string) => j[k] as number;
  return {
    maxMessageSize: n("max_message_size"),
    maxConcurrentStreams: n("max_concurrent_streams"),
    initialCredit: n("initial_credit"),
    callCredit: n("initial_credit"),
    maxFragmentSize: n("max_fragment_size"),
    maxMetadataSize: n("max_metadata_size"),
    maxBatchSize: n("max_batch_size"),
    maxCursorSize: n("max_cursor_size"),
    callWindowBytes: n("window_bytes"),
    maxConnectionBuffer: n("max_connection_buffer"),
    maxCallSendBuffer: n("max_call_send_buffer"),
    maxConnectionSendBuffer: n("max_connection_send_buffer"),
    keepaliveIntervalMs: n("keepalive_interval_ms"),
    keepaliveTimeoutMs: n("keepalive_timeout_ms"),
    maxPendingControl: n("max_pending_control"),
    acceptGzip: (j.accept_gzip as boolean | undefined) ?? true,
  };
}

/** What the client does with a COMPRESSED message (PROTOCOL.md 3.4), inflating synchronously (zlib) instead of with DecompressionStream. */
function receiveCompressed(conn: Connection, data: Uint8Array, now: number): void {
  const gz = conn.compressedPayload(data, now);
  if (gz === undefined) return;
  let inner: Uint8Array;
  try {
    inner = gunzipSync(gz, { maxOutputLength: conn.maxInflated });
  } catch (e) {
    conn.inflateFailed((e as { code?: string }).code === "ERR_BUFFER_TOO_LARGE");
    return;
  }
  conn.handleMessage(inner, now, true);
}

/** The content of a `recv_compressed` step: frames (one alone, more in a BATCH), raw hex, or zeros. */
function compressedContent(a: Json): Uint8Array {
  if (a.hex !== undefined) return fromHex(a.hex as string);
  if (a.zeros !== undefined) return new Uint8Array(a.zeros as number);
  const frames = (a.frames as Json[]).map((f) => encodeFrame(frameFromJson(f)));
  return frames.length === 1 ? (frames[0] as Uint8Array) : encodeBatch(frames);
}

function eventToJson(e: Event): Json {
  switch (e.type) {
    case "open":
      return { type: "opened", stream: e.id, kind: e.kind, method: e.method, metadata: metadataToJson(e.metadata) };
    case "headers":
      return { type: "headers", stream: e.id, metadata: metadataToJson(e.metadata) };
    case "message":
      return {
        type: "message",
        stream: e.id,
        payload_hex: toHex(e.data),
        ...(e.cursor === undefined ? {} : { cursor_hex: toHex(e.cursor) }),
      };
    case "half-closed":
      return { type: "recv_closed", stream: e.id };
    case "writable":
      return { type: "writable", stream: e.id };
    case "end":
      return {
        type: "ended",
        stream: e.id,
        code: Code[e.status.code],
        message: e.status.message,
        not_processed: e.status.notProcessed === true,
      };
    case "goaway":
      return { type: "goaway", last_stream_id: e.lastStreamId };
    case "closed":
      return { type: "closed", code: e.code };
  }
}

/** `want`'s fields all equal `got`'s (fields `want` leaves out are not checked). */
function matches(want: unknown, got: unknown): boolean {
  if (want !== null && typeof want === "object" && !Array.isArray(want)) {
    if (got === null || typeof got !== "object") return false;
    return Object.entries(want).every(([k, v]) => k in got && matches(v, (got as Json)[k]));
  }
  if (Array.isArray(want)) {
    return Array.isArray(got) && want.length === got.length && want.every((w, i) => matches(w, got[i]));
  }
  return want === got;
}

function expectList(what: string, at: string, want: unknown, got: Json[]): void {
  assert.ok(matches(want, got), `${at}: ${what}\n  expected ${JSON.stringify(want)}\n  got      ${JSON.stringify(got)}`);
}

function run(script: Script): void {
  const conn = new Connection(configOf({ ...suite.config, ...script.config }), 0);
  let now = 0;
  let frames: Json[] = [];
  let events: Json[] = [];
  const transmit = () => {
    for (let m = conn.pollTransmit(); m !== undefined; m = conn.pollTransmit()) {
      for (const f of isBatch(m) ? splitBatch(m) : [m]) frames.push(frameToJson(decodeFrame(f)));
    }
  };
  const collect = () => {
    for (let e = conn.pollEvent(); e !== undefined; e = conn.pollEvent()) events.push(eventToJson(e));
  };
  script.steps.forEach((step, i) => {
    const at = `${script.name}, step ${i + 1}`;
    const [op, arg] = Object.entries(step)[0] as [string, unknown];
    const a = arg as Json;
    const stream = () => a.stream as number;
    switch (op) {
      case "recv":
        for (const f of arg as Json[]) conn.handleMessage(encodeFrame(frameFromJson(f)), now);
        return;
      case "recv_batch":
        conn.handleMessage(encodeBatch((arg as Json[]).map((f) => encodeFrame(frameFromJson(f)))), now);
        return;
      case "recv_hex": {
        const data = fromHex(arg as string);
        if (data[0] === FrameType.COMPRESSED) receiveCompressed(conn, data, now);
        else conn.handleMessage(data, now);
        return;
      }
      case "recv_compressed": {
        const gz = gzipSync(compressedContent(a));
        const data = new Uint8Array(HEADER_LEN + gz.length);
        data[0] = FrameType.COMPRESSED;
        data.set(gz, HEADER_LEN);
        receiveCompressed(conn, data, now);
        return;
      }
      case "recv_text":
        conn.handleMessage(arg as string, now);
        return;
      case "peer_close":
        conn.handleClose((a.code as number | undefined) ?? 1006, (a.reason as string | undefined) ?? "");
        return;
      case "advance_ms":
        now += arg as number;
        conn.handleTimeout(now);
        return;
      case "open": {
        let got: number | string;
        try {
          got = conn.open(a.kind as CallKind, a.method as string, now, {
            metadata: metadataFromJson(a.metadata),
            timeoutMs: (a.timeout_ms as number | undefined) ?? 0,
          });
        } catch {
          got = "refused";
        }
        assert.equal(got, a.expect, `${at}: open`);
        return;
      }
      case "send":
        assert.equal(
          conn.send(stream(), payloadFromJson(a), a.end === true, typeof a.cursor_hex === "string" ? fromHex(a.cursor_hex) : undefined),
          a.expect,
          `${at}: send`,
        );
        return;
      case "half_close":
        conn.halfClose(arg as number);
        return;
      case "consume":
        conn.consume(stream(), a.len as number);
        return;
      case "cancel":
        conn.reset(arg as number);
        return;
      case "send_headers":
        conn.sendHeaders(stream(), metadataFromJson(a.metadata));
        return;
      case "finish":
        conn.sendStatus(stream(), {
          code: codeName((a.code as number | undefined) ?? 0),
          message: (a.message as string | undefined) ?? "",
          details: new Uint8Array(0),
          trailers: metadataFromJson(a.trailers),
        });
        return;
      case "go_away":
        conn.drain();
        return;
      case "close":
        conn.abort((a.code as number | undefined) ?? 1000, (a.reason as string | undefined) ?? "");
        return;
      case "expect_out": {
        transmit();
        const got = frames;
        frames = [];
        expectList("frames written", at, arg, got);
        return;
      }
      case "expect_close": {
        transmit();
        assert.deepEqual(frames, [], `${at}: frames before the close`);
        const close = conn.pollClose();
        const got = close === undefined ? null : { code: close.code };
        assert.ok(matches(arg, got), `${at}: close: expected ${JSON.stringify(arg)}, got ${JSON.stringify(got)}`);
        return;
      }
      case "expect_events": {
        collect();
        const got = events;
        events = [];
        expectList("events", at, arg, got);
        return;
      }
      case "expect_state": {
        const got = {
          is_open: conn.isOpen,
          is_draining: conn.isDraining,
          is_closed: conn.isClosed,
          live_calls: conn.liveCalls,
          buffered_bytes: conn.heldBytes,
          queued_send_bytes: conn.queuedBytes,
          timeout_ms: conn.pollTimeout() ?? null,
        };
        assert.ok(matches(arg, got), `${at}: state: expected ${JSON.stringify(arg)}, got ${JSON.stringify(got)}`);
        return;
      }
      case "expect_call": {
        const id = stream();
        const got = {
          stream: id,
          live: conn.hasCall(id),
          send_credit: conn.sendCredit(id) ?? null,
          recv_window: conn.recvWindow(id) ?? null,
          would_block: conn.wouldBlock(id),
        };
        assert.ok(matches(arg, got), `${at}: call: expected ${JSON.stringify(arg)}, got ${JSON.stringify(got)}`);
        return;
      }
      default:
        assert.fail(`${at}: unknown step ${op}`);
    }
  });
  // Whatever the script did not look at must not be pending.
  collect();
  transmit();
  assert.deepEqual(events, [], `${script.name}: events not expected`);
  assert.deepEqual(frames, [], `${script.name}: frames not expected`);
}

test("the suite has its scripts", () => {
  assert.ok(suite.scripts.length >= 30);
});

for (const script of suite.scripts) {
  if (script.only !== undefined && script.only !== "typescript") continue;
  test(`behaviour: ${script.name} (${script.covers})`, () => run(script));
}
