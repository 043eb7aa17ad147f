/**
 * The benchmark workloads, run the same way in Node and in a browser page,
 * against the `load` binary's bench service (`bench.Echo/Unary` echoes its
 * bytes; `bench.Echo/Stream` takes `u32 N, u32 L` and streams N messages of
 * L bytes), as the Rust client's rows do.
 */

import type { Caller } from "../src/typed.js";

/** One result row's numbers. */
export type Fields = Record<string, number>;

const UNARY = "bench.Echo/Unary";
const STREAM = "bench.Echo/Stream";

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.round((sorted.length - 1) * p)] as number;
}

/** Unary calls of 64 B with `inFlight` outstanding for `secs`: calls/s, p50 and p99 in µs. */
export async function unary(client: Caller, inFlight: number, secs: number): Promise<Fields> {
  const payload = new Uint8Array(64).fill(7);
  for (let i = 0; i < 200; i++) await client.unary(UNARY, payload); // warm-up
  const lat: number[] = [];
  const start = performance.now();
  const end = start + secs * 1000;
  const worker = async () => {
    while (performance.now() < end) {
      const t = performance.now();
      const r = await client.unary(UNARY, payload);
      if (r.length !== 64) throw new Error(`echo of ${r.length} bytes`);
      lat.push(performance.now() - t);
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  const elapsed = (performance.now() - start) / 1000;
  const sorted = Float64Array.from(lat).sort();
  return {
    calls_per_s: lat.length / elapsed,
    p50_us: percentile(sorted, 0.5) * 1000,
    p99_us: percentile(sorted, 0.99) * 1000,
    calls: lat.length,
  };
}

function streamRequest(n: number, len: number): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, n);
  v.setUint32(4, len);
  return b;
}

/** A server stream of `len`-byte messages for `secs`: msgs/s and MB/s. */
export async function stream(client: Caller, len: number, secs: number): Promise<Fields> {
  const run = async (n: number) => {
    let bytes = 0;
    let count = 0;
    for await (const m of client.serverStreaming(STREAM, streamRequest(n, len))) {
      if (m.length !== len) throw new Error(`message of ${m.length} bytes`);
      bytes += m.length;
      count += 1;
    }
    if (count !== n) throw new Error(`${count} of ${n} messages`);
    return bytes;
  };
  return await timedStreams(run, len, secs);
}

/**
 * Runs streams of `len`-byte messages (`run(n)` reads one of `n` messages
 * and returns its bytes) for `secs` after a warm-up: msgs/s and MB/s.
 */
async function timedStreams(run: (n: number) => Promise<number>, len: number, secs: number): Promise<Fields> {
  const perCall = len <= 64 ? 200_000 : 2_000;
  await run(1000); // warm-up
  const start = performance.now();
  const end = start + secs * 1000;
  let bytes = 0;
  let msgs = 0;
  while (performance.now() < end) {
    bytes += await run(perCall);
    msgs += perCall;
  }
  const elapsed = (performance.now() - start) / 1000;
  return { msgs_per_s: msgs / elapsed, mb_per_s: bytes / elapsed / 1e6, msgs };
}

/** The least of a WebSocket the plain rows use (the browser's, or `ws`'s). */
interface PlainSocket {
  binaryType: string;
  onopen: (() => void) | null;
  onerror: ((e: unknown) => void) | null;
  onmessage: ((e: { data: unknown }) => void) | null;
  send(data: string): void;
  close(): void;
}

/**
 * The same stream from the `load` binary's plain WebSocket server (`--serve
 * ws`: the text `N L` asks for N binary messages of L bytes), read with the
 * bare WebSocket API and no RPC layer: what the runtime's WebSocket itself
 * delivers.
 */
export async function plainStream(open: (url: string) => object, url: string, len: number, secs: number): Promise<Fields> {
  const ws = open(url) as PlainSocket;
  ws.binaryType = "arraybuffer";
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = (e) => reject(new Error(`plain WebSocket: ${String(e)}`));
  });
  const run = (n: number) =>
    new Promise<number>((resolve, reject) => {
      let count = 0;
      ws.onmessage = (e) => {
        const size = (e.data as ArrayBuffer).byteLength;
        if (size !== len) reject(new Error(`message of ${size} bytes`));
        if (++count === n) resolve(n * len);
      };
      ws.send(`${n} ${len}`);
    });
  try {
    return await timedStreams(run, len, secs);
  } finally {
    ws.close();
  }
}

/** The rows, by the `load` binary's workload names. */
export const workloads: Record<string, { name: string; run: (c: Caller, secs: number) => Promise<Fields> }> = {
  unary1: { name: "unary 64 B, 1 in flight", run: (c, s) => unary(c, 1, s) },
  unary64: { name: "unary 64 B, 64 in flight", run: (c, s) => unary(c, 64, s) },
  stream64: { name: "server stream 64 B", run: (c, s) => stream(c, 64, s) },
  stream64k: { name: "server stream 64 KiB", run: (c, s) => stream(c, 64 * 1024, s) },
};

/** Message sizes of the stream rows that also run on a plain WebSocket. */
export const plainRows: Record<string, number> = { stream64: 64, stream64k: 64 * 1024 };
