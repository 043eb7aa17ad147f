/**
 * The WebSocket binding: opens a socket with the `zrpc.v1` subprotocol and
 * turns its callbacks into calls on a protocol driver. Works with the
 * WHATWG `WebSocket` (browsers, Node ≥ 22) and with the `ws` package.
 */

import { utf8 } from "./protocol/bytes.js";
import { ZrpcError } from "./protocol/status.js";

/** The subprotocol token of zrpc v1. */
export const SUBPROTOCOL = "zrpc.v1";

/** What zrpc needs of a WebSocket: the WHATWG interface's core. */
export interface WebSocketLike {
  binaryType: string;
  readonly bufferedAmount: number;
  readonly protocol: string;
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/**
 * A WebSocket constructor: `globalThis.WebSocket`, or `ws`'s `WebSocket` in
 * Node 20. The third argument is `ws`'s options: its `maxPayload` bounds
 * what one message may make it buffer (browsers ignore the argument and
 * offer no such bound: a browser buffers a whole message before the page
 * sees it).
 */
export type WebSocketConstructor = new (url: string, protocols: string | string[], options?: { maxPayload?: number }) => WebSocketLike;

/** What the socket reports to whoever drives the protocol. */
export interface SocketSink {
  message(data: Uint8Array | string): void;
  closed(code: number, reason: string): void;
}

/** Bytes in the socket's send buffer above which zrpc stops handing it more. */
export const SEND_HIGH_WATER = 1024 * 1024;

/**
 * Opens a WebSocket and resolves when it is open with `zrpc.v1` selected.
 * Rejects with `UNAVAILABLE` when it cannot connect within `timeoutMs`, or
 * when the server is not a zrpc v1 server.
 */
export function openSocket(
  url: string,
  ctor: WebSocketConstructor | undefined,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  maxPayload: number,
): Promise<OpenedSocket> {
  const WS = ctor ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (WS === undefined) {
    return Promise.reject(
      new ZrpcError("UNAVAILABLE", "no WebSocket implementation: pass { WebSocket } (in Node 20: import { WebSocket } from 'ws')"),
    );
  }
  return new Promise((resolve, reject) => {
    let ws: WebSocketLike;
    try {
      ws = new WS(url, [SUBPROTOCOL], { maxPayload });
    } catch (e) {
      reject(new ZrpcError("UNAVAILABLE", `cannot connect to ${url}: ${e instanceof Error ? e.message : String(e)}`));
      return;
    }
    // Binary messages as ArrayBuffers (browsers default to Blob); the `ws`
    // package's own Buffers are Uint8Arrays already, and need no copy.
    if (ws.binaryType !== "nodebuffer") ws.binaryType = "arraybuffer";
    const fail = (why: string) => {
      cleanup();
      // Closing a socket still connecting reports an error event: keep a listener.
      ws.onerror = () => {};
      try {
        ws.close();
      } catch {
        // already closing
      }
      reject(new ZrpcError("UNAVAILABLE", why));
    };
    const timer = setTimeout(() => fail(`connecting to ${url} timed out after ${timeoutMs} ms`), timeoutMs);
    const onAbort = () => fail("connect aborted");
    signal?.addEventListener("abort", onAbort, { once: true });
    const cleanup = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      ws.onopen = null;
      ws.onerror = null;
      ws.onclose = null;
    };
    ws.onopen = () => {
      if (ws.protocol !== SUBPROTOCOL) {
        fail(`${url} is not a zrpc server: it did not select the ${SUBPROTOCOL} subprotocol`);
        return;
      }
      cleanup();
      // The server's SETTINGS (or a close) may arrive before whoever awaits
      // this promise runs: keep them for bindSocket.
      const early: EarlyEvent[] = [];
      const refused = refusedTooBig();
      ws.onmessage = (ev) => early.push({ message: ev.data });
      ws.onclose = (ev) => early.push({ close: refused.close(ev) });
      ws.onerror = refused.error;
      resolve({ ws, early, refused });
    };
    ws.onerror = () => fail(`cannot connect to ${url}`);
    ws.onclose = (ev) => fail(`cannot connect to ${url} (close ${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`);
  });
}

/** What arrived between the socket's opening and {@link bindSocket}. */
export type EarlyEvent = { message: unknown } | { close: { code: number; reason: string } };

/** An open socket and what it received before anyone listened. */
export interface OpenedSocket {
  ws: WebSocketLike;
  early: EarlyEvent[];
  /** Whether `ws` refused a message as too big (from its opening on). */
  refused: ReturnType<typeof refusedTooBig>;
}

/**
 * Closes `ws` with `code` and `reason` as a browser allows a page to: 1000
 * or 3000–4999 (another code goes as 1000, its number in the reason), a
 * reason of at most 123 bytes. Anything else throws in a browser.
 */
export function closeSocket(ws: WebSocketLike, code: number, reason: string): void {
  const allowed = code === 1000 || (code >= 3000 && code < 5000);
  let text = allowed ? reason : `${code}: ${reason}`;
  while (utf8(text).length > 123) text = text.slice(0, -1);
  try {
    ws.close(allowed ? code : 1000, text);
  } catch {
    // already closing
  }
}

/** Routes an open socket's events to `sink`, the early ones first. */
export function bindSocket({ ws, early, refused }: OpenedSocket, sink: SocketSink): void {
  const message = (d: unknown) => {
    if (d instanceof ArrayBuffer) sink.message(new Uint8Array(d));
    else if (typeof d === "string") sink.message(d);
    else if (ArrayBuffer.isView(d)) {
      // A view into a larger read buffer (the `ws` package's Buffers) is
      // copied, so a small message held unread cannot keep a large buffer alive.
      const view = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
      sink.message(view.byteLength * 2 < d.buffer.byteLength ? view.slice() : view);
    } else sink.message("");
  };
  for (const ev of early.splice(0)) {
    if ("message" in ev) message(ev.message);
    else sink.closed(ev.close.code, ev.close.reason);
  }
  ws.onmessage = (ev) => message(ev.data);
  ws.onclose = (ev) => {
    const { code, reason } = refused.close(ev);
    sink.closed(code, reason);
  };
  // onclose follows with the code.
  ws.onerror = refused.error;
}

/**
 * `ws` refuses a message over its maxPayload by sending close 1009 and
 * dropping the socket, then reports 1006: this reports 1009, the code the
 * server was sent.
 */
function refusedTooBig() {
  let tooBig = false;
  return {
    error: (ev: unknown) => {
      tooBig ||= (ev as { error?: { code?: unknown } } | undefined)?.error?.code === "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH";
    },
    close: (ev: { code: number; reason: string }) => (tooBig && ev.code === 1006 ? { code: 1009, reason: "message too big" } : ev),
  };
}
