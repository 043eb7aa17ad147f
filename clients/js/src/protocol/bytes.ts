/** Big-endian readers and writers over `Uint8Array`, every length checked. */

/** Thrown by {@link Reader} when a field runs past the end of its input. */
export class TruncatedError extends Error {
  constructor() {
    super("truncated");
  }
}

const utf8Decoder = new TextDecoder("utf-8", { fatal: true });
const utf8Encoder = new TextEncoder();

/** UTF-8 bytes of a string. */
export function utf8(s: string): Uint8Array {
  return utf8Encoder.encode(s);
}

/** Reads big-endian fields from a byte slice; never reads past its end. */
export class Reader {
  private pos: number;

  constructor(
    readonly bytes: Uint8Array,
    start = 0,
  ) {
    this.pos = start;
  }

  /** Bytes not read yet. */
  get remaining(): number {
    return this.bytes.length - this.pos;
  }

  private need(n: number): number {
    if (this.remaining < n) throw new TruncatedError();
    const at = this.pos;
    this.pos += n;
    return at;
  }

  // Byte arithmetic rather than a DataView: no object per frame decoded.
  u8(): number {
    return this.bytes[this.need(1)] as number;
  }

  u16(): number {
    const at = this.need(2);
    const b = this.bytes;
    return ((b[at] as number) << 8) | (b[at + 1] as number);
  }

  u32(): number {
    const at = this.need(4);
    const b = this.bytes;
    return (b[at] as number) * 0x1000000 + (((b[at + 1] as number) << 16) | ((b[at + 2] as number) << 8) | (b[at + 3] as number));
  }

  /** `n` bytes, as a view (no copy). */
  take(n: number): Uint8Array {
    const at = this.need(n);
    return this.bytes.subarray(at, at + n);
  }

  /** Everything left, as a view. */
  rest(): Uint8Array {
    return this.take(this.remaining);
  }

  /** A `str16`; throws `InvalidUtf8Error` for bytes that are not UTF-8. */
  str16(): string {
    return decodeUtf8(this.take(this.u16()));
  }
}

/** Thrown for text fields that are not valid UTF-8. */
export class InvalidUtf8Error extends Error {
  constructor() {
    super("invalid UTF-8");
  }
}

/** Strict UTF-8 decoding. */
export function decodeUtf8(b: Uint8Array): string {
  try {
    return utf8Decoder.decode(b);
  } catch {
    throw new InvalidUtf8Error();
  }
}

/** Appends big-endian fields to a growing buffer. */
export class Writer {
  private buf: Uint8Array;
  private len = 0;

  constructor(capacity = 64) {
    this.buf = new Uint8Array(capacity);
  }

  private room(n: number): number {
    if (this.len + n > this.buf.length) {
      let cap = this.buf.length * 2;
      while (cap < this.len + n) cap *= 2;
      const next = new Uint8Array(cap);
      next.set(this.buf.subarray(0, this.len));
      this.buf = next;
    }
    const at = this.len;
    this.len += n;
    return at;
  }

  u8(v: number): this {
    const at = this.room(1);
    this.buf[at] = v;
    return this;
  }

  u16(v: number): this {
    const at = this.room(2);
    this.buf[at] = v >>> 8;
    this.buf[at + 1] = v;
    return this;
  }

  u32(v: number): this {
    const at = this.room(4);
    putU32(this.buf, at, v);
    return this;
  }

  bytes(b: Uint8Array): this {
    const at = this.room(b.length);
    this.buf.set(b, at);
    return this;
  }

  /** A `str16` (the caller checked the length fits). */
  str16(s: string | Uint8Array): this {
    const b = typeof s === "string" ? utf8(s) : s;
    return this.u16(b.length).bytes(b);
  }

  /** The bytes written (a view of the internal buffer; a copy when most of it is unused). */
  finish(): Uint8Array {
    return this.len * 2 < this.buf.length ? this.buf.slice(0, this.len) : this.buf.subarray(0, this.len);
  }
}

/** Lowercase hex of bytes. */
export function toHex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

/** Bytes of a hex string (whitespace ignored). */
export function fromHex(hex: string): Uint8Array {
  const h = hex.replace(/\s+/g, "");
  if (h.length % 2 !== 0 || /[^0-9a-fA-F]/.test(h)) throw new Error(`not hex: ${hex}`);
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** One buffer holding `parts` in order. */
export function concat(parts: readonly Uint8Array[], total?: number): Uint8Array {
  if (parts.length === 1) return parts[0] as Uint8Array;
  const out = new Uint8Array(total ?? parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Writes `v` as a big-endian u32 at `at`. */
export function putU32(b: Uint8Array, at: number, v: number): void {
  b[at] = v >>> 24;
  b[at + 1] = v >>> 16;
  b[at + 2] = v >>> 8;
  b[at + 3] = v;
}
