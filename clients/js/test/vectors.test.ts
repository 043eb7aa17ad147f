/** docs/vectors.json, both ways: hex decodes to the fields, the fields encode to the hex. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { test } from "node:test";
import {
  type CallKind,
  decodeFrame,
  encodeBatch,
  encodeFrame,
  type Frame,
  FrameError,
  fromHex,
  type Metadata,
  type Settings,
  splitBatch,
  toHex,
} from "../src/protocol/index.js";
import { repoRoot } from "./server.js";

type Json = Record<string, unknown>;
interface Vectors {
  frames: { name: string; hex: string; frame: Json }[];
  invalid: { name: string; hex: string; error: string }[];
  batches: { name: string; hex: string; frames: string[] }[];
  invalid_batches: { name: string; hex: string; error: string }[];
}

const vectors = JSON.parse(readFileSync(resolve(repoRoot, "docs/vectors.json"), "utf8")) as Vectors;

const settingNames: Record<string, keyof Settings> = {
  max_message_size: "maxMessageSize",
  max_concurrent_streams: "maxConcurrentStreams",
  initial_credit: "initialCredit",
  max_fragment_size: "maxFragmentSize",
  max_metadata_size: "maxMetadataSize",
  max_batch_size: "maxBatchSize",
};

function metadata(pairs: unknown): Metadata {
  return (pairs as [string, string][]).map(([k, v]) => [k, k.endsWith("-bin") ? fromHex(v) : v] as const);
}

/** The vector's JSON fields as this package's frame. */
function toFrame(j: Json): Frame {
  const stream = j.stream as number;
  switch (j.type) {
    case "SETTINGS": {
      const settings: Settings = {};
      for (const [k, v] of Object.entries(j.settings as Record<string, number>)) settings[settingNames[k] as keyof Settings] = v;
      return { type: "SETTINGS", settings };
    }
    case "OPEN": {
      const kind = (j.kind === "server_streaming" || j.kind === "client_streaming" || j.kind === "unary" ? j.kind : "bidi") as CallKind;
      return {
        type: "OPEN",
        stream,
        kind,
        timeoutMs: j.timeout_ms as number,
        initialCredit: j.initial_credit as number,
        method: j.method as string,
        metadata: metadata(j.metadata),
      };
    }
    case "HEADERS":
      return { type: "HEADERS", stream, metadata: metadata(j.metadata) };
    case "MESSAGE":
      return {
        type: "MESSAGE",
        stream,
        endStream: j.end_stream as boolean,
        more: j.more as boolean,
        payload: fromHex(j.payload_hex as string),
      };
    case "HALF_CLOSE":
      return { type: "HALF_CLOSE", stream };
    case "STATUS":
      return {
        type: "STATUS",
        stream,
        code: j.code as number,
        message: j.message as string,
        details: fromHex(j.details_hex as string),
        trailers: metadata(j.trailers),
      };
    case "RESET":
      return { type: "RESET", stream, code: j.code as number };
    case "CREDIT":
      return { type: "CREDIT", stream, credit: j.credit as number };
    case "PING":
      return { type: "PING", ack: j.ack as boolean, data: fromHex(j.data_hex as string) };
    case "GOAWAY":
      return { type: "GOAWAY", lastStreamId: j.last_stream_id as number, code: j.code as number, reason: j.reason as string };
    default:
      throw new Error(`unknown vector type ${String(j.type)}`);
  }
}

/** Frames compared with their byte fields as hex. */
function comparable(f: Frame): unknown {
  return JSON.parse(JSON.stringify(f, (_k, v: unknown) => (v instanceof Uint8Array ? `hex:${toHex(v)}` : v)));
}

test("every frame vector decodes to its fields and encodes to its bytes", () => {
  assert.ok(vectors.frames.length >= 19);
  for (const v of vectors.frames) {
    const expected = toFrame(v.frame);
    assert.deepEqual(comparable(decodeFrame(fromHex(v.hex))), comparable(expected), v.name);
    assert.equal(toHex(encodeFrame(expected)), v.hex, v.name);
  }
});

test("every invalid vector fails with its error", () => {
  for (const v of vectors.invalid) {
    assert.throws(
      () => decodeFrame(fromHex(v.hex)),
      (e: unknown) => e instanceof FrameError && e.kind === v.error,
      v.name,
    );
  }
});

test("batches split into their frames and pack back to their bytes", () => {
  const byName = new Map(vectors.frames.map((f) => [f.name, f.hex]));
  for (const v of vectors.batches) {
    const frames = splitBatch(fromHex(v.hex));
    assert.deepEqual(
      frames.map(toHex),
      v.frames.map((n) => byName.get(n)),
      v.name,
    );
    for (const f of frames) decodeFrame(f);
    assert.equal(toHex(encodeBatch(frames)), v.hex, v.name);
  }
});

test("every invalid batch fails with its error", () => {
  for (const v of vectors.invalid_batches) {
    assert.throws(
      () => {
        for (const f of splitBatch(fromHex(v.hex))) decodeFrame(f);
      },
      (e: unknown) => e instanceof FrameError && e.kind === v.error,
      v.name,
    );
  }
});
