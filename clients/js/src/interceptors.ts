/**
 * Interceptors around every call of a {@link Client} or a Channel, in the
 * style `(next) => async (req) => { …; return next(req); }`: add request
 * headers, observe the call, its messages and its error, refuse it, retry.
 * `intercept(client, [a, b])` gives a caller with the same four methods
 * (what typed stubs take); a client without interceptors pays nothing.
 */

import type { BidiCall, CallOptions } from "./client.js";
import { type Metadata, toMetadata } from "./protocol/metadata.js";
import { type Status, status, ZrpcError } from "./protocol/status.js";
import type { Caller } from "./typed.js";

/** What every call request carries. */
interface RequestBase {
  readonly method: string;
  /** Request headers: an interceptor may add or replace pairs. */
  readonly header: Metadata;
  /** The rest of the call's options (deadline, signal, callbacks): an interceptor may change them. */
  readonly options: Omit<CallOptions, "metadata">;
}

/** A call with one request message (unary, server streaming). */
export interface SingleRequest extends RequestBase {
  readonly kind: "unary" | "server_streaming";
  readonly message: Uint8Array;
}

/** A call with a stream of request messages (client streaming, bidi). */
export interface StreamingRequest extends RequestBase {
  readonly kind: "client_streaming" | "bidi";
  readonly message: AsyncIterable<Uint8Array>;
}

/** A call as interceptors see it. */
export type CallRequest = SingleRequest | StreamingRequest;

/** The one response of a unary or client-streaming call. */
export interface SingleResponse {
  readonly kind: "unary" | "client_streaming";
  readonly message: Uint8Array;
}

/** The responses of a server-streaming or bidi call (errors come from iterating). */
export interface StreamingResponse {
  readonly kind: "server_streaming" | "bidi";
  readonly message: AsyncIterable<Uint8Array>;
}

/** What a call gives back, as interceptors see it. */
export type CallResponse = SingleResponse | StreamingResponse;

/** A call, from its request to its response. */
export type CallFn = (req: CallRequest) => Promise<CallResponse>;

/**
 * Wraps the calls of a client: given the next step, returns the step that
 * runs before it. The first interceptor of the list is the outermost.
 */
export type Interceptor = (next: CallFn) => CallFn;

/** The list applied around `last`, the first interceptor outermost. */
export function chain(interceptors: readonly Interceptor[], last: CallFn): CallFn {
  return interceptors.reduceRight<CallFn>((next, i) => i(next), last);
}

/** Sets `key` in `header` to `value`, replacing what was there. */
export function setHeader(header: Metadata, key: string, value: string | Uint8Array): void {
  for (let i = header.length - 1; i >= 0; i--) if (header[i]?.[0] === key) header.splice(i, 1);
  header.push([key, value]);
}

/**
 * A message channel with one slot: `send` resolves once the consumer took
 * the message, so a bidi call's sender still waits for the call's credit
 * when interceptors stand between it and the connection.
 */
class Rendezvous implements AsyncIterable<Uint8Array> {
  #taker: ((r: IteratorResult<Uint8Array>) => void) | undefined;
  #pending: { message: Uint8Array; taken: () => void } | undefined;
  #closed = false;
  #failed: unknown;

  send(message: Uint8Array): Promise<void> {
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    if (this.#closed) return Promise.reject(new Error("the request stream was closed"));
    if (this.#pending !== undefined) return Promise.reject(new Error("one send at a time"));
    return new Promise((taken) => {
      const t = this.#taker;
      if (t !== undefined) {
        this.#taker = undefined;
        t({ value: message, done: false });
        taken();
      } else {
        this.#pending = { message, taken };
      }
    });
  }

  close(): void {
    this.#closed = true;
    if (this.#pending === undefined) this.#wakeDone();
  }

  /** The call ended: a waiting send fails with `error`. */
  fail(error: unknown): void {
    this.#failed = error;
    this.#pending = undefined;
    this.#wakeDone();
  }

  #wakeDone(): void {
    const t = this.#taker;
    this.#taker = undefined;
    t?.({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return {
      next: () => {
        const p = this.#pending;
        if (p !== undefined) {
          this.#pending = undefined;
          p.taken();
          return Promise.resolve({ value: p.message, done: false });
        }
        if (this.#closed || this.#failed !== undefined) return Promise.resolve({ value: undefined, done: true });
        return new Promise((r) => {
          this.#taker = r;
        });
      },
    };
  }
}

/** A call's request as interceptors see it (its header a copy they may change). */
function request(kind: "unary" | "server_streaming", method: string, message: Uint8Array, opts: CallOptions): CallRequest;
function request(kind: "client_streaming" | "bidi", method: string, message: AsyncIterable<Uint8Array>, opts: CallOptions): CallRequest;
function request(
  kind: CallRequest["kind"],
  method: string,
  message: Uint8Array | AsyncIterable<Uint8Array>,
  opts: CallOptions,
): CallRequest {
  const { metadata, ...options } = opts;
  return { kind, method, message, header: [...toMetadata(metadata)], options } as CallRequest;
}

/** The one response message, from what the interceptors returned. */
function single(res: CallResponse): Uint8Array {
  if (res.message instanceof Uint8Array) return res.message;
  throw new ZrpcError("INTERNAL", `an interceptor returned a stream for a ${res.kind} call`);
}

/** The response stream, from what the interceptors returned. */
function stream(res: CallResponse): AsyncIterable<Uint8Array> {
  if (!(res.message instanceof Uint8Array)) return res.message;
  throw new ZrpcError("INTERNAL", `an interceptor returned one message for a ${res.kind} call`);
}

async function* toAsync(items: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): AsyncIterable<Uint8Array> {
  yield* items;
}

/** An iterator over the responses of a call the interceptors open on the first `next`. */
function lazyIterator(open: () => Promise<CallResponse>): AsyncIterator<Uint8Array> {
  let opened: Promise<AsyncIterator<Uint8Array>> | undefined;
  const inner = () => {
    opened ??= open().then((res) => stream(res)[Symbol.asyncIterator]());
    return opened;
  };
  return {
    next: async () => (await inner()).next(),
    return: async () => {
      const it = await opened?.catch(() => undefined);
      await it?.return?.();
      return { value: undefined, done: true };
    },
  };
}

/** The status a failed opening or iteration stands for. */
function statusOf(e: unknown): Status {
  return e instanceof ZrpcError
    ? { code: e.code, message: e.rawMessage, details: e.details, trailers: e.trailers }
    : status("UNKNOWN", String(e));
}

/**
 * A bidi call opened through interceptors: sends go through `requests` (one
 * at a time, each resolved when the call took it); the status is the
 * call's own, or (when an interceptor replaced the response stream) what
 * reading it to its end shows.
 */
function interceptedBidi(requests: Rendezvous, opening: Promise<CallResponse>): BidiCall {
  let settle!: (s: Status) => void;
  const seen = new Promise<Status>((r) => {
    settle = r;
  });
  opening.catch((e: unknown) => {
    requests.fail(e);
    settle(statusOf(e));
  });
  const inner = opening.then((res) => res.message as Partial<BidiCall>);
  const lazy = lazyIterator(() => opening);
  const responses: AsyncIterator<Uint8Array> = {
    next: () =>
      lazy.next().then(
        (r) => {
          if (r.done === true) settle(status("OK"));
          return r;
        },
        (e: unknown) => {
          settle(statusOf(e));
          throw e;
        },
      ),
    return: () => lazy.return?.() ?? Promise.resolve({ value: undefined, done: true }),
  };
  return {
    send: (m) => requests.send(m),
    closeSend: () => requests.close(),
    cancel: () => {
      requests.fail(new ZrpcError("CANCELLED", "cancelled by the application"));
      void inner.then((m) => m.cancel?.()).catch(() => {});
      void lazy.return?.();
    },
    status: inner.then(
      (m) => m.status ?? seen,
      () => seen,
    ),
    [Symbol.asyncIterator]: () => responses,
  };
}

/**
 * `caller` (a {@link Client} or a Channel) with `interceptors` around each
 * of its calls, the first outermost. Through a Channel they wrap the whole
 * call: its retries and resumes happen inside `next`.
 */
export function intercept(caller: Caller, interceptors: readonly Interceptor[]): Caller {
  const run = chain(interceptors, async (req): Promise<CallResponse> => {
    const opts: CallOptions = { ...req.options, metadata: req.header };
    switch (req.kind) {
      case "unary":
        return { kind: "unary", message: await caller.unary(req.method, req.message, opts) };
      case "server_streaming":
        return { kind: "server_streaming", message: caller.serverStreaming(req.method, req.message, opts) };
      case "client_streaming":
        return { kind: "client_streaming", message: await caller.clientStreaming(req.method, req.message, opts) };
      case "bidi": {
        const call = caller.bidi(req.method, opts);
        void (async () => {
          for await (const m of req.message) await call.send(m);
          call.closeSend();
        })().catch(() => call.cancel());
        return { kind: "bidi", message: call };
      }
    }
  });
  return {
    unary: async (method, message, opts = {}) => single(await run(request("unary", method, message, opts))),
    serverStreaming: (method, message, opts = {}) => ({
      [Symbol.asyncIterator]: () => lazyIterator(() => run(request("server_streaming", method, message, opts))),
    }),
    clientStreaming: async (method, requests, opts = {}) => single(await run(request("client_streaming", method, toAsync(requests), opts))),
    bidi: (method, opts = {}) => {
      const requests = new Rendezvous();
      return interceptedBidi(requests, run(request("bidi", method, requests, opts)));
    },
  };
}
