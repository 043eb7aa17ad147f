/** docs/vectors.json, both ways: hex decodes to the fields, the fields encode to the hex. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { test } from "node:test";
import { decodeFrame, encodeBatch, encodeFrame, type Frame, FrameError, fromHex, splitBatch, toHex } from "../src/protocol/index.js";
import { frameFromJson, type Json } from "./frames-json.js";
import { repoRoot } from "./server.js";

interface Vectors {
  frames: { name: string; hex: string; frame: Json }[];
  invalid: { name: string; hex: string; error: string }[];
  batches: { name: string; hex: string; frames: string[] }[];
  invalid_batches: { name: string; hex: string; error: string }[];
}

const vectors = JSON.parse(readFileSync(resolve(repoRoot, "docs/vectors.json"), "utf8")) as Vectors;

/** Frames compared with their byte fields as hex. */
function comparable(f: Frame): unknown {
  return JSON.parse(JSON.stringify(f, (_k, v: unknown) => (v instanceof Uint8Array ? `hex:${toHex(v)}` : v)));
}

test("every frame vector decodes to its fields and encodes to its bytes", () => {
  assert.ok(vectors.frames.length >= 19);
  for (const v of vectors.frames) {
    const expected = frameFromJson(v.frame);
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
