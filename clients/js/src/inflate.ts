/**
 * gzip inflation for COMPRESSED messages (PROTOCOL.md 3.4) with the
 * platform's `DecompressionStream` (browsers, Node ≥ 18): nothing bundled.
 */

/** Why a COMPRESSED message could not be inflated. */
export class InflateError extends Error {
  constructor(readonly tooLarge: boolean) {
    super(tooLarge ? "decompressed message over the limit" : "not gzip");
  }
}

/** The content of `gz`, at most `limit` bytes: reading stops (and the stream is cancelled) past it. */
export async function gunzip(gz: Uint8Array, limit: number): Promise<Uint8Array> {
  // A WebSocket message is never backed by a SharedArrayBuffer.
  const reader = new Blob([gz as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new DecompressionStream("gzip")).getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > limit) {
        void reader.cancel().catch(() => {});
        throw new InflateError(true);
      }
      parts.push(value);
    }
  } catch (e) {
    throw e instanceof InflateError ? e : new InflateError(false);
  }
  if (parts.length === 1) return parts[0] as Uint8Array;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
