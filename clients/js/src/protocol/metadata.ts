/** Metadata: ordered key/value pairs (PROTOCOL.md 8). */

import { decodeUtf8, Reader, utf8, type Writer } from "./bytes.js";

/** A value: bytes for keys ending in `-bin`, printable ASCII text otherwise. */
export type MetadataValue = string | Uint8Array;

/** Ordered key/value pairs; a key may repeat. */
export type Metadata = Array<readonly [key: string, value: MetadataValue]>;

/** What APIs accept as metadata: pairs, or an object (one value per key). */
export type MetadataInit = Metadata | Record<string, MetadataValue>;

/** Normalises {@link MetadataInit} to pairs. */
export function toMetadata(init: MetadataInit | undefined): Metadata {
  if (init === undefined) return [];
  if (Array.isArray(init)) return init;
  return Object.entries(init);
}

/** The first value of `key` as text, if present and not binary. */
export function getText(md: Metadata, key: string): string | undefined {
  for (const [k, v] of md) if (k === key && typeof v === "string") return v;
  return undefined;
}

const KEY = /^[0-9a-z\-_.]{1,255}$/;

/** Whether `key` is a valid metadata key. */
export function validKey(key: string): boolean {
  return KEY.test(key);
}

function validText(b: Uint8Array): boolean {
  for (const x of b) if (x < 0x20 || x > 0x7e) return false;
  return true;
}

/** Why a metadata block is invalid (the error names of docs/vectors.json). */
export type MetadataErrorKind = "InvalidMetadataKey" | "InvalidMetadataValue";

/** Thrown for an invalid key or value. */
export class MetadataError extends Error {
  constructor(readonly kind: MetadataErrorKind) {
    super(kind);
  }
}

function valueBytes(key: string, value: MetadataValue): Uint8Array {
  if (key.endsWith("-bin")) return typeof value === "string" ? utf8(value) : value;
  const b = typeof value === "string" ? utf8(value) : value;
  if (!validText(b)) throw new MetadataError("InvalidMetadataValue");
  return b;
}

/** Encodes a metadata block, checking every key and value. */
export function writeMetadata(w: Writer, md: Metadata): void {
  if (md.length > 0xffff) throw new MetadataError("InvalidMetadataKey");
  w.u16(md.length);
  for (const [k, v] of md) {
    if (!validKey(k)) throw new MetadataError("InvalidMetadataKey");
    const b = valueBytes(k, v);
    if (b.length > 0xffff) throw new MetadataError("InvalidMetadataValue");
    w.str16(k).u16(b.length).bytes(b);
  }
}

/** The encoded size of a metadata block (keys and values assumed valid). */
export function metadataSize(md: Metadata): number {
  let n = 2;
  for (const [k, v] of md) n += 4 + k.length + (typeof v === "string" ? utf8(v).length : v.length);
  return n;
}

/** Decodes a metadata block. */
export function readMetadata(r: Reader): Metadata {
  const count = r.u16();
  const md: Metadata = [];
  for (let i = 0; i < count; i++) {
    const kb = r.take(r.u16());
    const key = String.fromCharCode(...kb);
    if (!validKey(key)) throw new MetadataError("InvalidMetadataKey");
    const vb = r.take(r.u16());
    if (key.endsWith("-bin")) {
      md.push([key, vb.slice()]);
    } else {
      if (!validText(vb)) throw new MetadataError("InvalidMetadataValue");
      md.push([key, decodeUtf8(vb)]);
    }
  }
  return md;
}

export { Reader };
