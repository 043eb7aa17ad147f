/**
 * The client: a {@link Connection} driven over a WebSocket, with the four
 * call kinds as promises and async iterators, AbortSignal cancellation,
 * deadlines, and handlers for the calls the server opens toward it.
 */

import { gunzip, InflateError } from "./inflate.js";
import { singleRequest, singleResponse } from "./protocol/call.js";
import { type Config, DEFAULT_CONFIG, maxWebSocketMessage } from "./protocol/config.js";
import { Connection, CURSOR_KEY, type Event } from "./protocol/connection.js";
import { type CallKind, isCompressed } from "./protocol/frame.js";
import { type Metadata, type MetadataInit, toMetadata } from "./protocol/metadata.js";
import { type Status, status, ZrpcError } from "./protocol/status.js";
import { AsyncQueue } from "./queue.js";
import {
  bindSocket,
  closeSocket,
  type OpenedSocket,
  openSocket,
  SEND_HIGH_WATER,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./transport.js";

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** The WebSocket class; `globalThis.WebSocket` by default (pass `ws`'s in Node 20). */
  WebSocket?: WebSocketConstructor;
  /** Request metadata sent with every call (before each call's own). */
  metadata?: MetadataInit;
  /** PING after `intervalMs` of silence, close when unanswered for `timeoutMs` (30 s / 20 s); `false` turns it off. */
  keepalive?: { intervalMs?: number; timeoutMs?: number } | false;
  /** Give up connecting after this many ms (10,000). */
  connectTimeoutMs?: number;
  /** Aborts connecting. */
  signal?: AbortSignal;
  /** Handlers for the calls the server opens toward this client, by method name. */
  handlers?: Handlers;
  /** Protocol limits (see `Config` for each one and its default). */
  limits?: Partial<Config>;
}

/** Options of one call. */
export interface CallOptions {
  /** Aborting it cancels the call (RESET CANCELLED); the call rejects with `CANCELLED`. */
  signal?: AbortSignal;
  /** Deadline in ms, sent on the wire; the call ends with `DEADLINE_EXCEEDED` when it passes. */
  timeoutMs?: number;
  /** Request metadata. */
  metadata?: MetadataInit;
  /** Called with the response headers when they arrive. */
  onHeaders?: (headers: Metadata) => void;
  /** Called with the trailers when the call ends, whatever its status. */
  onTrailers?: (trailers: Metadata) => void;
  /**
   * Called with the call's resume point (PROTOCOL.md 5.6) as it moves: the
   * cursor of each response message as it arrives (`undefined` for one
   * without), and the one in the response headers. What the {@link Channel}
   * resumes a server stream from.
   */
  onCursor?: (cursor: Uint8Array | undefined) => void;
}

/** A bidirectional call: send with {@link BidiCall.send}, read replies with `for await`. */
export interface BidiCall extends AsyncIterable<Uint8Array> {
  /** Sends a message; waits while the server has granted no credit for it. */
  send(message: Uint8Array): Promise<void>;
  /** Ends the request stream. */
  closeSend(): void;
  /** Cancels the call. */
  cancel(): void;
  /** Resolves with the final status (OK or not; never rejects). */
  readonly status: Promise<Status>;
}

/** The context of a call the server opened toward this client. */
export interface HandlerContext {
  readonly method: string;
  readonly metadata: Metadata;
  /** Aborted when the server cancels the call, its deadline passes, or the connection ends. */
  readonly signal: AbortSignal;
  /** Sends response headers (before the first message). */
  sendHeaders(headers: MetadataInit): void;
  /** Trailers to send with the status. */
  readonly trailers: Metadata;
}

/** A handler for a call the server opens, by kind. */
export type Handler =
  | { kind: "unary"; handler: (request: Uint8Array, ctx: HandlerContext) => Promise<Uint8Array> | Uint8Array }
  | { kind: "server_streaming"; handler: (request: Uint8Array, ctx: HandlerContext) => AsyncIterable<Uint8Array> }
  | { kind: "client_streaming"; handler: (requests: AsyncIterable<Uint8Array>, ctx: HandlerContext) => Promise<Uint8Array> }
  | { kind: "bidi"; handler: (requests: AsyncIterable<Uint8Array>, ctx: HandlerContext) => AsyncIterable<Uint8Array> };

/** Handlers by method name (`package.Service/Method`). */
export type Handlers = Record<string, Handler>;

/** How the connection ended. */
export interface CloseInfo {
  code: number;
  reason: string;
}

/** Opens a connection to a zrpc server (`ws://` or `wss://` URL). */
export async function connect(url: string, opts: ConnectOptions = {}): Promise<Client> {
  // The largest WebSocket message a server within these limits sends: `ws`
  // refuses a larger one (close 1009) before buffering it whole.
  const maxPayload = maxWebSocketMessage({ ...DEFAULT_CONFIG, ...opts.limits });
  return new Client(await openSocket(url, opts.WebSocket, opts.connectTimeoutMs ?? 10_000, opts.signal, maxPayload), opts);
}

const now = () => performance.now();

/**
 * Runs `fn` as a new task, after all microtasks: `setImmediate` in Node;
 * elsewhere a MessageChannel message (not clamped like `setTimeout`).
 */
const nextTask: (fn: () => void) => void = (() => {
  const g = globalThis as { setImmediate?: (fn: () => void) => unknown };
  if (typeof g.setImmediate === "function") {
    const setImmediate = g.setImmediate;
    return (fn) => void setImmediate(fn);
  }
  const queue: (() => void)[] = [];
  const channel = new MessageChannel();
  channel.port1.onmessage = () => {
    const batch = queue.splice(0);
    for (const f of batch) f();
  };
  return (fn) => {
    if (queue.push(fn) === 1) channel.port2.postMessage(null);
  };
})();

/** One call's state on this side. */
interface Active {
  readonly id: number;
  readonly inbox: AsyncQueue<Uint8Array>;
  /** Unary and client-streaming calls: the one response, kept here instead of the inbox. */
  readonly single: boolean;
  response: Uint8Array | undefined;
  /** Resolved by the `end` event. */
  ended: Status | undefined;
  readonly done: Promise<Status>;
  resolveDone: (s: Status) => void;
  /** Wakes a sender waiting for credit (or for the end). */
  wake: (() => void) | undefined;
  onHeaders: ((md: Metadata) => void) | undefined;
  onCursor: ((c: Uint8Array | undefined) => void) | undefined;
  onEnd: ((s: Status) => void) | undefined;
}

/** A connection to a zrpc server. Create it with {@link connect}. */
export class Client {
  readonly #conn: Connection;
  readonly #calls = new Map<number, Active>();
  readonly #baseMetadata: Metadata;
  readonly #handlers: Handlers;
  #scheduled = false;
  /** COMPRESSED messages being inflated, and the messages queued behind them. */
  #inflating = 0;
  #queuedBytes = 0;
  #inflated: Promise<void> = Promise.resolve();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt: number | undefined;
  #blockedTimer: ReturnType<typeof setTimeout> | undefined;
  #closeInfo: CloseInfo | undefined;
  #resolveClosed!: (c: CloseInfo) => void;
  /** Resolves when the connection has closed. */
  readonly closed: Promise<CloseInfo>;
  /** Resolves when the server starts draining (GOAWAY): new calls fail with UNAVAILABLE from then on. */
  readonly draining: Promise<{ reason: string }>;
  #resolveDraining!: (d: { reason: string }) => void;

  readonly #ws: WebSocketLike;

  /** Use {@link connect}. */
  constructor(opened: OpenedSocket, opts: ConnectOptions = {}) {
    this.#ws = opened.ws;
    const keepalive =
      opts.keepalive === false
        ? { keepaliveIntervalMs: 0 }
        : { keepaliveIntervalMs: opts.keepalive?.intervalMs ?? 30_000, keepaliveTimeoutMs: opts.keepalive?.timeoutMs ?? 20_000 };
    this.#conn = new Connection({ ...opts.limits, ...keepalive }, now());
    this.#baseMetadata = toMetadata(opts.metadata);
    this.#handlers = opts.handlers ?? {};
    this.closed = new Promise((r) => {
      this.#resolveClosed = r;
    });
    this.draining = new Promise((r) => {
      this.#resolveDraining = r;
    });
    bindSocket(opened, {
      message: (data) => {
        // A COMPRESSED message inflates asynchronously; the messages after
        // it wait their turn behind it.
        if (this.#inflating > 0 || isCompressed(data)) {
          this.#inflateInOrder(data);
          return;
        }
        this.#receive(data, false);
      },
      closed: (code, reason) => {
        this.#conn.handleClose(code, reason);
        this.#pump();
      },
    });
    this.#pump();
  }

  /** A message for the protocol state machine; its events go to the application now, what it sends in reply with the next flush. */
  #receive(data: Uint8Array | string, inflated: boolean): void {
    this.#conn.handleMessage(data, now(), inflated);
    this.#dispatchAll();
    this.#pump();
  }

  /** Receives `data` after the messages before it, inflating it if it is COMPRESSED. */
  #inflateInOrder(data: Uint8Array | string): void {
    // What waits behind an inflation is bounded like what the application has not read.
    const size = typeof data === "string" ? data.length : data.byteLength;
    if (this.#queuedBytes + size > this.#conn.config.maxConnectionBuffer) {
      this.#conn.abort(1008, "inflate queue over its bound");
      this.#dispatchAll();
      this.#pump();
      return;
    }
    this.#queuedBytes += size;
    this.#inflating += 1;
    this.#inflated = this.#inflated
      .then(async () => {
        if (!isCompressed(data)) return this.#receive(data, false);
        const gz = this.#conn.compressedPayload(data as Uint8Array, now());
        if (gz === undefined) return this.#pump(); // refused: the close goes out
        try {
          this.#receive(await gunzip(gz, this.#conn.maxInflated), true);
        } catch (e) {
          this.#conn.inflateFailed(e instanceof InflateError && e.tooLarge);
          this.#dispatchAll();
          this.#pump();
        }
      })
      .finally(() => {
        this.#inflating -= 1;
        this.#queuedBytes -= size;
      });
  }

  /** Calls in flight on this connection. */
  get liveCalls(): number {
    return this.#conn.liveCalls;
  }

  /** Received bytes held for the application (unread messages). */
  get heldBytes(): number {
    return this.#conn.heldBytes;
  }

  /** Whether new calls can be made (false once draining or closed). */
  get isOpen(): boolean {
    return this.#conn.canOpen;
  }

  // ---- the four call kinds ----------------------------------------------

  /** One request, one response. */
  async unary(method: string, request: Uint8Array, opts: CallOptions = {}): Promise<Uint8Array> {
    const call = this.#start("unary", method, opts);
    const sending = this.#sendOn(call, request, true);
    if (sending !== undefined) await sending;
    return this.#single(call);
  }

  /** One request, a stream of responses. The call starts when iteration starts. */
  serverStreaming(method: string, request: Uint8Array, opts: CallOptions = {}): AsyncIterable<Uint8Array> {
    return {
      [Symbol.asyncIterator]: () => {
        const call = this.#start("server_streaming", method, opts);
        void this.#sendOn(call, request, true)?.catch(() => {});
        return this.#iterate(call);
      },
    };
  }

  /** A stream of requests, one response. */
  async clientStreaming(
    method: string,
    requests: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    opts: CallOptions = {},
  ): Promise<Uint8Array> {
    const call = this.#start("client_streaming", method, opts);
    try {
      for await (const m of requests) {
        if (call.ended !== undefined) break;
        await this.#sendOn(call, m, false);
      }
    } catch (e) {
      if (!(e instanceof ZrpcError)) {
        this.#conn.reset(call.id, "CANCELLED", "the request stream failed");
        this.#pump();
      }
      throw e;
    }
    this.#conn.halfClose(call.id);
    this.#pump();
    return this.#single(call);
  }

  /** Streams both ways. */
  bidi(method: string, opts: CallOptions = {}): BidiCall {
    const call = this.#start("bidi", method, opts);
    const it = this.#iterate(call);
    return {
      send: async (m) => this.#sendOn(call, m, false),
      closeSend: () => {
        this.#conn.halfClose(call.id);
        this.#pump();
      },
      cancel: () => this.#cancel(call, "cancelled by the application"),
      status: call.done,
      [Symbol.asyncIterator]: () => it,
    };
  }

  /**
   * Closes gracefully: no new calls, the calls in flight finish, then the
   * connection closes (GOAWAY, then close 1000). Resolves when it has closed.
   */
  async close(): Promise<CloseInfo> {
    this.#conn.drain();
    this.#pump();
    return this.closed;
  }

  // ---- call plumbing ----------------------------------------------------

  #track(id: number, single = false): Active {
    let resolveDone!: (s: Status) => void;
    const done = new Promise<Status>((r) => {
      resolveDone = r;
    });
    const call: Active = {
      id,
      inbox: new AsyncQueue<Uint8Array>((m) => {
        this.#conn.consume(id, m.length);
        this.#pump();
      }),
      single,
      response: undefined,
      ended: undefined,
      done,
      resolveDone,
      wake: undefined,
      onHeaders: undefined,
      onCursor: undefined,
      onEnd: undefined,
    };
    this.#calls.set(id, call);
    return call;
  }

  #start(kind: CallKind, method: string, opts: CallOptions): Active {
    const single = kind === "unary" || kind === "client_streaming";
    const signal = opts.signal;
    if (signal?.aborted) throw new ZrpcError("CANCELLED", "aborted before the call started");
    const own = toMetadata(opts.metadata);
    // A call's own value of a key replaces the connection's.
    const metadata =
      this.#baseMetadata.length === 0
        ? own
        : own.length === 0
          ? this.#baseMetadata
          : [...this.#baseMetadata.filter(([k]) => !own.some(([key]) => key === k)), ...own];
    let id: number;
    try {
      id = this.#conn.open(kind, method, now(), { metadata, timeoutMs: opts.timeoutMs ?? 0 });
    } catch (e) {
      // Refused here (closed, draining, ids used up): the call never left.
      throw isStatus(e) ? ZrpcError.fromStatus({ ...e, notProcessed: true }) : e;
    }
    const call = this.#track(id, single);
    call.onHeaders = opts.onHeaders;
    call.onCursor = opts.onCursor;
    const onAbort = () => {
      this.#cancel(call, "cancelled by the application");
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    call.onEnd = (s) => {
      signal?.removeEventListener("abort", onAbort);
      opts.onTrailers?.(s.trailers);
    };
    this.#pump();
    return call;
  }

  /** Cancels a live call: RESET CANCELLED, and what was received but not read is dropped. */
  #cancel(call: Active, why: string): void {
    if (call.ended !== undefined) return;
    this.#conn.reset(call.id, "CANCELLED", why);
    // The `end` event (dispatched synchronously here) ends the inbox.
    this.#dispatchAll();
    this.#pump();
  }

  /**
   * Queues a message once the peer has credit for it; rejects with the
   * call's status if it ended. Returns undefined when it was queued at once
   * (the common case: no promise, no await).
   */
  #sendOn(call: Active, data: Uint8Array, end: boolean): Promise<void> | undefined {
    if (call.ended === undefined && this.#conn.canSend(call.id)) {
      this.#queue(call, data, end);
      return undefined;
    }
    return this.#sendWhenWritable(call, data, end);
  }

  async #sendWhenWritable(call: Active, data: Uint8Array, end: boolean): Promise<void> {
    while (call.ended === undefined && !this.#conn.canSend(call.id)) {
      await new Promise<void>((r) => {
        call.wake = r;
      });
    }
    if (call.ended !== undefined) {
      if (call.ended.code === "OK") return;
      throw ZrpcError.fromStatus(call.ended);
    }
    this.#queue(call, data, end);
  }

  /** Queues a message the connection has room for; one over the server's limit ends the call. */
  #queue(call: Active, data: Uint8Array, end: boolean): void {
    if (this.#conn.send(call.id, data, end) === "too_large") {
      const limit = this.#conn.peerLimits.maxMessageSize;
      this.#conn.reset(call.id, "RESOURCE_EXHAUSTED", `message of ${data.length} bytes over the peer's limit of ${limit}`);
      this.#dispatchAll();
    }
    this.#pump();
  }

  /** The one response of a unary or client-streaming call. */
  async #single(call: Active): Promise<Uint8Array> {
    const s = await call.done;
    if (s.code !== "OK") throw ZrpcError.fromStatus(s);
    if (call.response === undefined) throw new ZrpcError("INTERNAL", "OK status without the one response message");
    return call.response;
  }

  #iterate(call: Active): AsyncIterator<Uint8Array> {
    return {
      next: () => call.inbox.next(),
      return: async () => {
        this.#cancel(call, "the application stopped reading");
        return { value: undefined, done: true };
      },
    };
  }

  // ---- the driver -------------------------------------------------------

  /**
   * Runs the state machine's outputs in a task after the current one (not
   * a microtask): every promise continuation the last input resolved has
   * then run, so the calls and messages they made leave together, packed in
   * one BATCH and one socket write, whatever the number of calls in flight.
   */
  #pump(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    nextTask(() => {
      this.#scheduled = false;
      this.#drive();
    });
  }

  #dispatchAll(): void {
    for (let ev = this.#conn.pollEvent(); ev !== undefined; ev = this.#conn.pollEvent()) this.#dispatch(ev);
  }

  #drive(): void {
    // Sending can raise events (a call becomes writable): loop until quiet.
    for (let rounds = 0; rounds < 64; rounds++) {
      let ev = this.#conn.pollEvent();
      if (ev === undefined && rounds > 0) break;
      for (; ev !== undefined; ev = this.#conn.pollEvent()) this.#dispatch(ev);
      while (this.#ws.bufferedAmount < SEND_HIGH_WATER) {
        const m = this.#conn.pollTransmit();
        if (m === undefined) break;
        try {
          this.#ws.send(m);
        } catch {
          break; // the close event follows
        }
      }
    }
    if (this.#ws.bufferedAmount >= SEND_HIGH_WATER && this.#blockedTimer === undefined) {
      // WebSocket has no "drained" event: look again shortly.
      this.#blockedTimer = setTimeout(() => {
        this.#blockedTimer = undefined;
        this.#drive();
      }, 2);
    }
    const close = this.#conn.pollClose();
    if (close !== undefined) closeSocket(this.#ws, close.code, close.reason);
    this.#arm();
  }

  #arm(): void {
    const at = this.#conn.pollTimeout();
    if (at === this.#timerAt) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = at;
    if (at === undefined) return;
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        this.#timerAt = undefined;
        this.#conn.handleTimeout(now());
        this.#drive();
      },
      Math.max(0, at - now()),
    );
  }

  #dispatch(ev: Event): void {
    switch (ev.type) {
      case "headers": {
        const call = this.#calls.get(ev.id);
        if (call?.onCursor !== undefined) {
          const c = ev.metadata.find(([k]) => k === CURSOR_KEY)?.[1];
          call.onCursor(typeof c === "string" ? undefined : c);
        }
        call?.onHeaders?.(ev.metadata);
        return;
      }
      case "message":
        {
          const call = this.#calls.get(ev.id);
          if (call === undefined) return;
          if (call.single) {
            // The core enforces "exactly one": keep it, and free its bytes now.
            call.response = ev.data;
            this.#conn.consume(ev.id, ev.data.length);
          } else {
            call.onCursor?.(ev.cursor);
            call.inbox.push(ev.data);
          }
        }
        return;
      case "half-closed":
        this.#calls.get(ev.id)?.inbox.end();
        return;
      case "writable": {
        const call = this.#calls.get(ev.id);
        const wake = call?.wake;
        if (call !== undefined) call.wake = undefined;
        wake?.();
        return;
      }
      case "end": {
        const call = this.#calls.get(ev.id);
        if (call === undefined) return;
        this.#calls.delete(ev.id);
        call.ended = ev.status;
        if (ev.status.code === "OK") call.inbox.end();
        else if (ev.status.code === "CANCELLED") call.inbox.fail(ZrpcError.fromStatus(ev.status));
        else call.inbox.end(ZrpcError.fromStatus(ev.status));
        call.onEnd?.(ev.status);
        call.resolveDone(ev.status);
        const wake = call.wake;
        call.wake = undefined;
        wake?.();
        return;
      }
      case "open":
        this.#serve(ev.id, ev.kind, ev.method, ev.metadata);
        return;
      case "goaway":
        this.#resolveDraining({ reason: ev.reason });
        return;
      case "closed":
        if (this.#timer !== undefined) clearTimeout(this.#timer);
        this.#timer = undefined;
        this.#closeInfo ??= { code: ev.code, reason: ev.reason };
        this.#resolveClosed(this.#closeInfo);
        return;
    }
  }

  // ---- calls the server opens -------------------------------------------

  #serve(id: number, kind: CallKind, method: string, metadata: Metadata): void {
    const h = this.#handlers[method];
    if (h === undefined) {
      this.#conn.sendStatus(id, status("UNIMPLEMENTED", `unknown method ${method}`));
      return;
    }
    if (!compatible(kind, h.kind)) {
      this.#conn.sendStatus(id, status("UNIMPLEMENTED", `${method} is ${h.kind}, called as ${kind}`));
      return;
    }
    const call = this.#track(id);
    const abort = new AbortController();
    const trailers: Metadata = [];
    const ctx: HandlerContext = {
      method,
      metadata,
      signal: abort.signal,
      trailers,
      sendHeaders: (md) => {
        this.#conn.sendHeaders(id, toMetadata(md));
        this.#pump();
      },
    };
    call.onEnd = (s) => {
      if (s.code !== "OK") abort.abort(ZrpcError.fromStatus(s));
    };
    const requests: AsyncIterable<Uint8Array> = { [Symbol.asyncIterator]: () => ({ next: () => call.inbox.next() }) };
    const one = async (): Promise<Uint8Array> => {
      const r = await call.inbox.next();
      if (r.done) throw new ZrpcError("INTERNAL", "no request message");
      return r.value;
    };
    const stream = async (out: AsyncIterable<Uint8Array>) => {
      for await (const m of out) await this.#sendOn(call, m, false);
    };
    const run = async () => {
      switch (h.kind) {
        case "unary":
          await this.#sendOn(call, await h.handler(await one(), ctx), false);
          return;
        case "server_streaming":
          return stream(h.handler(await one(), ctx));
        case "client_streaming":
          await this.#sendOn(call, await h.handler(requests, ctx), false);
          return;
        case "bidi":
          return stream(h.handler(requests, ctx));
      }
    };
    run().then(
      () => {
        this.#conn.sendStatus(id, { code: "OK", message: "", details: new Uint8Array(0), trailers });
        this.#pump();
      },
      (e: unknown) => {
        const s =
          e instanceof ZrpcError
            ? { code: e.code, message: e.rawMessage, details: e.details, trailers: [...trailers, ...e.trailers] }
            : { ...status("UNKNOWN", e instanceof Error ? e.message : String(e)), trailers };
        this.#conn.sendStatus(id, s);
        this.#pump();
      },
    );
  }
}

/** Whether a call of kind `call` carries what a handler of kind `handler` needs (PROTOCOL.md 5.2). */
function compatible(call: CallKind, handler: CallKind): boolean {
  return (singleRequest(handler) || !singleRequest(call)) && (singleResponse(handler) || !singleResponse(call));
}

function isStatus(e: unknown): e is Status {
  return typeof e === "object" && e !== null && "code" in e && "trailers" in e && !(e instanceof Error);
}
