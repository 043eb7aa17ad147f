/**
 * Frames in the JSON form of docs/vectors.json and docs/behaviour.json
 * (snake_case fields, bytes as hex, metadata as [key, value] pairs with
 * `-bin` values in hex), both ways.
 */

import { type CallKind, type Frame, fromHex, type Metadata, type Settings, toHex } from "../src/protocol/index.js";

export type Json = Record<string, unknown>;

const settingNames: Record<string, keyof Settings> = {
  max_message_size: "maxMessageSize",
  max_concurrent_streams: "maxConcurrentStreams",
  initial_credit: "initialCredit",
  max_fragment_size: "maxFragmentSize",
  max_metadata_size: "maxMetadataSize",
  max_batch_size: "maxBatchSize",
  max_cursor_size: "maxCursorSize",
  compression: "compression",
};

export function metadataFromJson(pairs: unknown): Metadata {
  return ((pairs ?? []) as [string, string][]).map(([k, v]) => [k, k.endsWith("-bin") ? fromHex(v) : v] as const);
}

export function metadataToJson(md: Metadata): [string, string][] {
  return md.map(([k, v]) => [k, typeof v === "string" ? v : k.endsWith("-bin") ? toHex(v) : new TextDecoder().decode(v)]);
}

/** `payload_len` N: N bytes of 0x78; else `payload_hex`. */
export function payloadFromJson(j: Json): Uint8Array {
  return typeof j.payload_len === "number"
    ? new Uint8Array(j.payload_len).fill(0x78)
    : fromHex((j.payload_hex as string | undefined) ?? "");
}

const kinds: readonly CallKind[] = ["unary", "server_streaming", "client_streaming", "bidi"];

/** A frame from its JSON fields; absent fields take their zero value (OPEN's `initial_credit`: 16). */
export function frameFromJson(j: Json): Frame {
  const stream = (j.stream as number | undefined) ?? 0;
  const str = (k: string) => (j[k] as string | undefined) ?? "";
  const num = (k: string, d = 0) => (j[k] as number | undefined) ?? d;
  switch (j.type) {
    case "SETTINGS": {
      const settings: Settings = {};
      for (const [k, v] of Object.entries((j.settings ?? {}) as Record<string, number>)) settings[settingNames[k] as keyof Settings] = v;
      return { type: "SETTINGS", settings };
    }
    case "OPEN": {
      const kind = kinds.find((k) => k === j.kind);
      if (kind === undefined) throw new Error(`unknown kind ${String(j.kind)}`);
      return {
        type: "OPEN",
        stream,
        kind,
        timeoutMs: num("timeout_ms"),
        initialCredit: num("initial_credit", 16),
        method: str("method"),
        metadata: metadataFromJson(j.metadata),
      };
    }
    case "HEADERS":
      return { type: "HEADERS", stream, metadata: metadataFromJson(j.metadata) };
    case "MESSAGE": {
      const m: Frame = { type: "MESSAGE", stream, endStream: j.end_stream === true, more: j.more === true, payload: payloadFromJson(j) };
      if (typeof j.cursor_hex === "string") m.cursor = fromHex(j.cursor_hex);
      return m;
    }
    case "HALF_CLOSE":
      return { type: "HALF_CLOSE", stream };
    case "STATUS":
      return {
        type: "STATUS",
        stream,
        code: num("code"),
        message: str("message"),
        details: fromHex(str("details_hex")),
        trailers: metadataFromJson(j.trailers),
      };
    case "RESET":
      return { type: "RESET", stream, code: num("code", 1) };
    case "CREDIT":
      return { type: "CREDIT", stream, credit: num("credit") };
    case "PING": {
      const data = new Uint8Array(8);
      data.set(fromHex(str("data_hex")));
      return { type: "PING", ack: j.ack === true, data };
    }
    case "GOAWAY":
      return { type: "GOAWAY", lastStreamId: num("last_stream_id"), code: num("code", 1000), reason: str("reason") };
    default:
      throw new Error(`unknown frame type ${String(j.type)}`);
  }
}

/** A frame's JSON fields (every field). */
export function frameToJson(f: Frame): Json {
  switch (f.type) {
    case "SETTINGS": {
      const settings: Record<string, number> = {};
      for (const [k, v] of Object.entries(settingNames)) if (f.settings[v] !== undefined) settings[k] = f.settings[v];
      return { type: "SETTINGS", settings };
    }
    case "OPEN":
      return {
        type: "OPEN",
        stream: f.stream,
        kind: f.kind,
        timeout_ms: f.timeoutMs,
        initial_credit: f.initialCredit,
        method: f.method,
        metadata: metadataToJson(f.metadata),
      };
    case "HEADERS":
      return { type: "HEADERS", stream: f.stream, metadata: metadataToJson(f.metadata) };
    case "MESSAGE":
      return {
        type: "MESSAGE",
        stream: f.stream,
        end_stream: f.endStream,
        more: f.more,
        payload_hex: toHex(f.payload),
        payload_len: f.payload.length,
        ...(f.cursor === undefined ? {} : { cursor_hex: toHex(f.cursor) }),
      };
    case "HALF_CLOSE":
      return { type: "HALF_CLOSE", stream: f.stream };
    case "STATUS":
      return {
        type: "STATUS",
        stream: f.stream,
        code: f.code,
        message: f.message,
        details_hex: toHex(f.details),
        trailers: metadataToJson(f.trailers),
      };
    case "RESET":
      return { type: "RESET", stream: f.stream, code: f.code };
    case "CREDIT":
      return { type: "CREDIT", stream: f.stream, credit: f.credit };
    case "PING":
      return { type: "PING", ack: f.ack, data_hex: toHex(f.data) };
    case "GOAWAY":
      return { type: "GOAWAY", last_stream_id: f.lastStreamId, code: f.code, reason: f.reason };
  }
}
