/**
 * Frames (PROTOCOL.md 3): one type per frame, one encoder and one decoder,
 * and BATCH packing and splitting (3.3). Pure functions over bytes.
 */

import { decodeUtf8, InvalidUtf8Error, Reader, TruncatedError, utf8, Writer } from "./bytes.js";
import { type Metadata, MetadataError, metadataSize, readMetadata, writeMetadata } from "./metadata.js";

/** Frame type numbers. */
export const FrameType = {
  SETTINGS: 0x0,
  OPEN: 0x1,
  HEADERS: 0x2,
  MESSAGE: 0x3,
  HALF_CLOSE: 0x4,
  STATUS: 0x5,
  RESET: 0x6,
  CREDIT: 0x7,
  PING: 0x8,
  GOAWAY: 0x9,
  BATCH: 0xa,
  COMPRESSED: 0xb,
} as const;

/** The four call kinds, by their OPEN `kind` number. */
export const CallKind = { unary: 0, server_streaming: 1, client_streaming: 2, bidi: 3 } as const;
/** A call kind's name. */
export type CallKind = keyof typeof CallKind;
const kindNames = Object.keys(CallKind) as CallKind[];

/** Bytes of every frame header. */
export const HEADER_LEN = 6;
/** Most credit a call can hold (PROTOCOL.md 6). */
export const MAX_CREDIT = 0x7fffffff;
/** Most bytes in a method name. */
export const MAX_METHOD_LEN = 1024;

/** SETTINGS ids (PROTOCOL.md 9.1) and their names in this package. */
export const SettingId = {
  maxMessageSize: 1,
  maxConcurrentStreams: 2,
  initialCredit: 3,
  maxFragmentSize: 4,
  maxMetadataSize: 5,
  maxBatchSize: 6,
  maxCursorSize: 7,
  compression: 8,
} as const;
/** {@link SettingId.compression} bit: gzip (PROTOCOL.md 3.4). */
export const COMPRESSION_GZIP = 0x1;
/** The settings a peer states about itself as a receiver. */
export type Settings = { -readonly [K in keyof typeof SettingId]?: number };

/** A decoded frame. */
export type Frame =
  | { type: "SETTINGS"; settings: Settings }
  | {
      type: "OPEN";
      stream: number;
      kind: CallKind;
      timeoutMs: number;
      initialCredit: number;
      method: string;
      metadata: Metadata;
    }
  | { type: "HEADERS"; stream: number; metadata: Metadata }
  | { type: "MESSAGE"; stream: number; endStream: boolean; more: boolean; payload: Uint8Array; cursor?: Uint8Array }
  | { type: "HALF_CLOSE"; stream: number }
  | {
      type: "STATUS";
      stream: number;
      code: number;
      message: string;
      details: Uint8Array;
      trailers: Metadata;
    }
  | { type: "RESET"; stream: number; code: number }
  | { type: "CREDIT"; stream: number; credit: number }
  | { type: "PING"; ack: boolean; data: Uint8Array }
  | { type: "GOAWAY"; lastStreamId: number; code: number; reason: string };

/**
 * Why bytes are not a valid frame; the names are those of the `error`
 * fields in docs/vectors.json.
 */
export type FrameErrorKind =
  | "Empty"
  | "UnknownType"
  | "Batch"
  | "ZeroStreamId"
  | "NonZeroStreamId"
  | "InvalidFlags"
  | "ZeroCredit"
  | "CreditTooLarge"
  | "Truncated"
  | "TrailingBytes"
  | "InvalidSettingsLength"
  | "InvalidKind"
  | "InvalidMethodLength"
  | "InvalidUtf8"
  | "InvalidMetadataKey"
  | "InvalidMetadataValue"
  | "EmptyBatch";

/** A malformed frame: a connection error with close code 1002. */
export class FrameError extends Error {
  constructor(readonly kind: FrameErrorKind) {
    super(`malformed frame: ${kind}`);
  }
}

const typeNames = ["SETTINGS", "OPEN", "HEADERS", "MESSAGE", "HALF_CLOSE", "STATUS", "RESET", "CREDIT", "PING", "GOAWAY"] as const;

/** Decodes one frame (never a BATCH: split those with {@link splitBatch}). */
export function decodeFrame(bytes: Uint8Array): Frame {
  try {
    return decode(bytes);
  } catch (e) {
    if (e instanceof TruncatedError) throw new FrameError("Truncated");
    if (e instanceof InvalidUtf8Error) throw new FrameError("InvalidUtf8");
    if (e instanceof MetadataError) throw new FrameError(e.kind);
    throw e;
  }
}

function decode(bytes: Uint8Array): Frame {
  if (bytes.length < HEADER_LEN) throw new FrameError("Empty");
  if (bytes[0] === FrameType.MESSAGE) return decodeMessage(bytes);
  const r = new Reader(bytes);
  const type = r.u8();
  const flags = r.u8();
  const stream = r.u32();
  if (type === FrameType.BATCH) throw new FrameError("Batch");
  const name = typeNames[type];
  if (name === undefined) throw new FrameError("UnknownType");
  const connectionLevel = name === "SETTINGS" || name === "PING" || name === "GOAWAY";
  if (connectionLevel && stream !== 0) throw new FrameError("NonZeroStreamId");
  if (!connectionLevel && stream === 0) throw new FrameError("ZeroStreamId");
  let frame: Frame;
  switch (name) {
    case "SETTINGS": {
      if (r.remaining % 6 !== 0) throw new FrameError("InvalidSettingsLength");
      const settings: Settings = {};
      while (r.remaining > 0) {
        const id = r.u16();
        const value = r.u32();
        for (const [k, v] of Object.entries(SettingId)) {
          if (v === id) settings[k as keyof Settings] = value;
        }
      }
      frame = { type: name, settings };
      break;
    }
    case "OPEN": {
      const kind = kindNames[r.u8()];
      if (kind === undefined) throw new FrameError("InvalidKind");
      const timeoutMs = r.u32();
      const initialCredit = r.u32();
      const mlen = r.u16();
      if (mlen === 0 || mlen > MAX_METHOD_LEN) throw new FrameError("InvalidMethodLength");
      const method = decodeUtf8(r.take(mlen));
      const metadata = readMetadata(r);
      frame = { type: name, stream, kind, timeoutMs, initialCredit, method, metadata };
      break;
    }
    case "HEADERS":
      frame = { type: name, stream, metadata: readMetadata(r) };
      break;
    case "MESSAGE":
      return decodeMessage(bytes);
    case "HALF_CLOSE":
      frame = { type: name, stream };
      break;
    case "STATUS": {
      const code = r.u8();
      const message = r.str16();
      const details = r.take(r.u32());
      const trailers = readMetadata(r);
      frame = { type: name, stream, code, message, details, trailers };
      break;
    }
    case "RESET":
      frame = { type: name, stream, code: r.u8() };
      break;
    case "CREDIT": {
      const credit = r.u32();
      if (credit === 0) throw new FrameError("ZeroCredit");
      if (credit > MAX_CREDIT) throw new FrameError("CreditTooLarge");
      frame = { type: name, stream, credit };
      break;
    }
    case "PING":
      frame = { type: name, ack: (flags & 1) !== 0, data: r.take(8) };
      break;
    case "GOAWAY": {
      const lastStreamId = r.u32();
      const code = r.u16();
      frame = { type: name, lastStreamId, code, reason: r.str16() };
      break;
    }
  }
  if (r.remaining !== 0) throw new FrameError("TrailingBytes");
  return frame;
}

/** MESSAGE flags (PROTOCOL.md 3.1). */
const END_STREAM = 1;
const MORE = 2;
const CURSOR = 4;
/** Longest cursor the encoding carries (its length is a u8). */
export const MAX_CURSOR_LEN = 255;

/**
 * The hot path: no reader; the payload (and the cursor, 5.6) views of the
 * input.
 */
function decodeMessage(bytes: Uint8Array): Frame {
  const flags = bytes[1] as number;
  const stream =
    ((bytes[2] as number) * 0x1000000 + (((bytes[3] as number) << 16) | ((bytes[4] as number) << 8) | (bytes[5] as number))) >>> 0;
  if (stream === 0) throw new FrameError("ZeroStreamId");
  const endStream = (flags & END_STREAM) !== 0;
  const more = (flags & MORE) !== 0;
  if (more && (flags & (END_STREAM | CURSOR)) !== 0) throw new FrameError("InvalidFlags");
  if ((flags & CURSOR) === 0) return { type: "MESSAGE", stream, endStream, more, payload: bytes.subarray(HEADER_LEN) };
  // The cursor trailer: the cursor, then its length, after the message.
  if (bytes.length < HEADER_LEN + 1) throw new FrameError("Truncated");
  const len = bytes[bytes.length - 1] as number;
  const at = bytes.length - 1 - len;
  if (at < HEADER_LEN) throw new FrameError("Truncated");
  return {
    type: "MESSAGE",
    stream,
    endStream,
    more,
    cursor: bytes.subarray(at, bytes.length - 1),
    payload: bytes.subarray(HEADER_LEN, at),
  };
}

function header(w: Writer, type: number, flags: number, stream: number): Writer {
  return w.u8(type).u8(flags).u32(stream);
}

const methodCache = new Map<string, Uint8Array>();

/** A method name's UTF-8 bytes, cached for the names a client calls again and again. */
function methodBytes(method: string): Uint8Array {
  let b = methodCache.get(method);
  if (b === undefined) {
    b = utf8(method);
    if (methodCache.size >= 256) methodCache.clear();
    methodCache.set(method, b);
  }
  return b;
}

/** Encodes one frame. Throws `RangeError` for a field outside its encoding. */
export function encodeFrame(f: Frame): Uint8Array {
  if (f.type === "MESSAGE") return encodeMessage(f.stream, f.payload, f.endStream, f.more, f.cursor);
  // OPEN, the frame of every call, is sized exactly: one allocation.
  const w = new Writer(f.type === "OPEN" ? 17 + methodBytes(f.method).length + metadataSize(f.metadata) : 64);
  switch (f.type) {
    case "SETTINGS":
      header(w, FrameType.SETTINGS, 0, 0);
      for (const [k, id] of Object.entries(SettingId)) {
        const v = f.settings[k as keyof Settings];
        if (v !== undefined) w.u16(id).u32(v);
      }
      break;
    case "OPEN": {
      const m = methodBytes(f.method);
      if (m.length === 0 || m.length > MAX_METHOD_LEN) throw new RangeError("method: 1 to 1,024 bytes");
      header(w, FrameType.OPEN, 0, f.stream).u8(CallKind[f.kind]).u32(f.timeoutMs).u32(f.initialCredit).str16(m);
      writeMetadata(w, f.metadata);
      break;
    }
    case "HEADERS":
      header(w, FrameType.HEADERS, 0, f.stream);
      writeMetadata(w, f.metadata);
      break;
    case "HALF_CLOSE":
      header(w, FrameType.HALF_CLOSE, 0, f.stream);
      break;
    case "STATUS": {
      const m = utf8(f.message);
      header(w, FrameType.STATUS, 0, f.stream)
        .u8(f.code)
        .str16(m.length > 0xffff ? m.subarray(0, 0xffff) : m)
        .u32(f.details.length)
        .bytes(f.details);
      writeMetadata(w, f.trailers);
      break;
    }
    case "RESET":
      header(w, FrameType.RESET, 0, f.stream).u8(f.code);
      break;
    case "CREDIT":
      header(w, FrameType.CREDIT, 0, f.stream).u32(f.credit);
      break;
    case "PING":
      header(w, FrameType.PING, f.ack ? 1 : 0, 0).bytes(f.data);
      break;
    case "GOAWAY": {
      const reason = utf8(f.reason);
      header(w, FrameType.GOAWAY, 0, 0)
        .u32(f.lastStreamId)
        .u16(f.code)
        .str16(reason.length > 0xffff ? reason.subarray(0, 0xffff) : reason);
      break;
    }
  }
  return w.finish();
}

/**
 * Encodes a MESSAGE frame with one copy of the payload; a `cursor` (at most
 * 255 bytes) goes after it, then its length, with the CURSOR flag (5.6).
 */
export function encodeMessage(stream: number, payload: Uint8Array, endStream: boolean, more: boolean, cursor?: Uint8Array): Uint8Array {
  const extra = cursor === undefined ? 0 : 1 + cursor.length;
  if (cursor !== undefined && cursor.length > MAX_CURSOR_LEN) throw new RangeError("cursor: at most 255 bytes");
  const out = new Uint8Array(HEADER_LEN + extra + payload.length);
  out[0] = FrameType.MESSAGE;
  out[1] = (endStream ? END_STREAM : 0) | (more ? MORE : 0) | (cursor === undefined ? 0 : CURSOR);
  new DataView(out.buffer).setUint32(2, stream);
  out.set(payload, HEADER_LEN);
  if (cursor !== undefined) {
    out.set(cursor, HEADER_LEN + payload.length);
    out[out.length - 1] = cursor.length;
  }
  return out;
}

/** Whether a WebSocket message is COMPRESSED (type byte 0xB, PROTOCOL.md 3.4). */
export function isCompressed(msg: Uint8Array | string): boolean {
  return typeof msg !== "string" && msg.length > 0 && msg[0] === FrameType.COMPRESSED;
}

/** Whether a WebSocket message is a BATCH (type byte 0xA). */
export function isBatch(msg: Uint8Array): boolean {
  return msg.length > 0 && msg[0] === FrameType.BATCH;
}

/**
 * The frames of a BATCH message, as views into it. Checks the batch's own
 * layout (stream 0, at least one entry, no nesting, entries within bounds);
 * each frame is then decoded on its own.
 */
export function splitBatch(msg: Uint8Array): Uint8Array[] {
  if (msg.length < HEADER_LEN) throw new FrameError("Empty");
  const r = new Reader(msg, 2);
  if (r.u32() !== 0) throw new FrameError("NonZeroStreamId");
  if (r.remaining === 0) throw new FrameError("EmptyBatch");
  const frames: Uint8Array[] = [];
  try {
    while (r.remaining > 0) {
      const f = r.take(r.u16());
      if (f.length < HEADER_LEN) throw new FrameError("Empty");
      if (f[0] === FrameType.BATCH) throw new FrameError("Batch");
      frames.push(f);
    }
  } catch (e) {
    if (e instanceof TruncatedError) throw new FrameError("Truncated");
    throw e;
  }
  return frames;
}

/** Packs whole encoded frames (each at most 65,535 bytes) in one BATCH. */
export function encodeBatch(frames: readonly Uint8Array[]): Uint8Array {
  let len = HEADER_LEN;
  for (const f of frames) len += 2 + f.length;
  const out = new Uint8Array(len);
  const view = new DataView(out.buffer);
  out[0] = FrameType.BATCH;
  let at = HEADER_LEN;
  for (const f of frames) {
    view.setUint16(at, f.length);
    out.set(f, at + 2);
    at += 2 + f.length;
  }
  return out;
}
