/**
 * A client that outlives its connections, with the Rust `Channel`'s rules:
 * it connects when a call needs a connection (backoff with jitter between
 * failed connects, for as long as calls wait), opens the next connection
 * as soon as the current one drains (GOAWAY), and sends a call again, transparently, only
 * when it never left or the server announced it never processed it; a
 * unary call cut by a lost connection is sent again only under its
 * {@link RetryPolicy}. New calls wait for a connection within their deadline
 * (or `connectWaitMs`), and what waits is bounded in calls and bytes.
 * Its four call kinds have the {@link Client}'s signatures, so typed stubs
 * work on it unchanged.
 */

import { type BidiCall, type CallOptions, type Client, type ConnectOptions, connect } from "./client.js";
import { CURSOR_KEY } from "./protocol/connection.js";
import { type Metadata, type MetadataInit, toMetadata } from "./protocol/metadata.js";
import { type CodeName, type Status, ZrpcError } from "./protocol/status.js";

/** Where a {@link Channel} is. */
export type ChannelState =
  /** No connection, and no call waiting for one (before the first call, after a loss, after a failed connect nobody waited for). */
  | "idle"
  /** Connecting (the first time, after a loss, or beside a draining connection). */
  | "connecting"
  /** A connection takes calls. */
  | "ready"
  /** The last connect failed: waiting before the next. */
  | "backoff"
  /** {@link Channel.close} was called. */
  | "closed";

/** When a unary call that may have been processed is sent again (idempotent methods only). */
export interface RetryPolicy {
  /** Attempts in all, the first included (at least 1). */
  maxAttempts: number;
  /** Codes that allow another attempt; `["UNAVAILABLE"]` by default. */
  codes?: CodeName[];
  /** Wait before the second attempt, doubling after (100 ms); jittered. */
  initialBackoffMs?: number;
  /** Longest wait between attempts (2,000 ms). */
  maxBackoffMs?: number;
}

/** Options of one call on a {@link Channel}. */
export interface ChannelCallOptions extends CallOptions {
  /** Sends a unary call again after a failure that may have reached the server. */
  retry?: RetryPolicy;
}

/** Options of {@link Channel}. */
export interface ChannelOptions extends Omit<ConnectOptions, "metadata" | "signal"> {
  /** Metadata for every call; a function is run again before each connect (a token refreshed on reconnect). */
  metadata?: MetadataInit | (() => MetadataInit | Promise<MetadataInit>);
  /** Wait after the first failed connect, doubling after each further failure, jittered 0.5×–1× (100 ms). */
  initialBackoffMs?: number;
  /** Longest wait between two connects (5,000 ms). */
  maxBackoffMs?: number;
  /** Longest time a call without a deadline waits for a connection (30,000 ms): then `UNAVAILABLE` with the last connect error. */
  connectWaitMs?: number;
  /** Times one call is sent again because it never left or was never processed (8). */
  maxResends?: number;
  /**
   * Times in a row a resumable server stream (PROTOCOL.md 5.6) is opened
   * again without a message in between (8): then it fails with its last error.
   */
  maxResumes?: number;
  /** Calls that may wait for a connection at once (1,024): past it a call fails at once with `RESOURCE_EXHAUSTED`. */
  maxWaitingCalls?: number;
  /** Request bytes those calls may hold (4 MiB): past it, `RESOURCE_EXHAUSTED`. */
  maxWaitingBytes?: number;
}

/** The numeric options of {@link ChannelOptions}, all set. */
type ChannelLimits = { -readonly [K in keyof typeof CHANNEL_DEFAULTS]: number };

/** The defaults of {@link ChannelOptions}. */
export const CHANNEL_DEFAULTS = {
  initialBackoffMs: 100,
  maxBackoffMs: 5_000,
  connectWaitMs: 30_000,
  maxResends: 8,
  maxResumes: 8,
  maxWaitingCalls: 1024,
  maxWaitingBytes: 4 * 1024 * 1024,
} as const;

/** One waiter for a connection. */
interface Waiter {
  resolve: (c: Client) => void;
  reject: (e: ZrpcError) => void;
  bytes: number;
}

/** See the module docs. Create one with `new Channel(url, opts)`; nothing connects until the first call. */
export class Channel {
  readonly #url: string;
  readonly #opts: ChannelOptions;
  readonly #cfg: ChannelLimits;
  #state: ChannelState = "idle";
  #current: Client | undefined;
  #connecting = false;
  /** Connects that failed in a row. */
  #failures = 0;
  #lastError: string | undefined;
  #waiting: Waiter[] = [];
  #waitingBytes = 0;
  readonly #listeners = new Set<(s: ChannelState) => void>();

  constructor(url: string, opts: ChannelOptions = {}) {
    this.#url = url;
    this.#opts = opts;
    this.#cfg = { ...CHANNEL_DEFAULTS, ...definedOnly(opts) };
  }

  /** Where the channel is now. */
  get state(): ChannelState {
    return this.#state;
  }

  /** Calls `fn` with each new state (for a "reconnecting…" banner); returns the unsubscribe function. */
  onStateChange(fn: (s: ChannelState) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Calls waiting for a connection now. */
  get waitingCalls(): number {
    return this.#waiting.length;
  }

  // ---- the four call kinds ----------------------------------------------

  /** One request, one response; sent again when it never left or was not processed (or under `opts.retry`). */
  unary(method: string, request: Uint8Array, opts: ChannelCallOptions = {}): Promise<Uint8Array> {
    const slow = () =>
      this.#run(opts, request.length, deadlineOf(opts), async (client, left) => {
        try {
          return await client.unary(method, request, withTimeout(opts, left));
        } catch (e) {
          throw failure(e);
        }
      });
    // The common case, a connection ready and no retry policy: the call
    // goes straight to it, and only a call that never reached the server
    // takes the general path.
    const c = this.#current;
    if (c?.isOpen && opts.retry === undefined) {
      return c.unary(method, request, opts).catch((e: unknown) => (e instanceof ZrpcError && e.notProcessed ? slow() : Promise.reject(e)));
    }
    return slow();
  }

  /**
   * One request, a stream of responses. Sent again when it never left or
   * was not processed. When the server stamps resume cursors (PROTOCOL.md
   * 5.6: the people service's ListPeople, Members and WatchPeople do) and
   * the stream is cut by a lost or drained connection (`UNAVAILABLE`), it
   * is opened again on the next connection from the last cursor received,
   * and `for await` just goes on: no gap, no duplicate, at most
   * `maxResumes` times in a row without a message (then its last error).
   */
  serverStreaming(method: string, request: Uint8Array, opts: ChannelCallOptions = {}): AsyncIterable<Uint8Array> {
    return {
      [Symbol.asyncIterator]: () => new ResumableStream(this, method, request, opts, this.#cfg),
    };
  }

  /**
   * Opens one server-streaming call (the first, or a resume) and waits for
   * its first result, which says whether it reached the server.
   * @internal
   */
  openStream(
    method: string,
    request: Uint8Array,
    opts: CallOptions,
    deadline: number | undefined,
  ): Promise<{ it: AsyncIterator<Uint8Array>; first: IteratorResult<Uint8Array> }> {
    return this.#run({ ...opts, retry: undefined }, request.length, deadline, async (client, left) => {
      try {
        const it = client.serverStreaming(method, request, withTimeout(opts, left))[Symbol.asyncIterator]();
        return { it, first: await it.next() };
      } catch (e) {
        throw failure(e);
      }
    });
  }

  /** A stream of requests, one response; sent again only when it could not be opened (the requests are read once). */
  async clientStreaming(
    method: string,
    requests: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    opts: ChannelCallOptions = {},
  ): Promise<Uint8Array> {
    const client = await this.#connection(opts, 0);
    return client.clientStreaming(method, requests, withTimeout(opts, undefined));
  }

  /** Streams both ways, on the connection ready when it is called (it waits for one). */
  bidi(method: string, opts: ChannelCallOptions = {}): BidiCall {
    const call = this.#connection(opts, 0).then((c) => c.bidi(method, opts));
    // The status promise never rejects: a call that found no connection ends with that status.
    const status: Promise<Status> = call.then(
      (c) => c.status,
      (e: ZrpcError) => ({ code: e.code, message: e.rawMessage, details: e.details, trailers: e.trailers }),
    );
    return {
      send: async (m) => (await call).send(m),
      closeSend: () =>
        void call.then(
          (c) => c.closeSend(),
          () => {},
        ),
      cancel: () =>
        void call.then(
          (c) => c.cancel(),
          () => {},
        ),
      status,
      [Symbol.asyncIterator]: () => {
        let it: AsyncIterator<Uint8Array> | undefined;
        return {
          next: async () => {
            it ??= (await call)[Symbol.asyncIterator]();
            return it.next();
          },
          return: async () => {
            await it?.return?.();
            return { value: undefined, done: true };
          },
        };
      },
    };
  }

  /** Closes the channel: no new calls, waiting calls fail `UNAVAILABLE`, the connection drains and closes. */
  async close(): Promise<void> {
    this.#setState("closed");
    this.#failWaiting(new ZrpcError("UNAVAILABLE", "the channel is closed"));
    const c = this.#current;
    this.#current = undefined;
    await c?.close();
  }

  // ---- attempts ---------------------------------------------------------

  /**
   * Runs `attempt` on a connection, again while the failure allows it:
   * never sent or not processed (up to `maxResends`), or under the call's
   * retry policy; every wait within the call's deadline.
   */
  async #run<T>(
    opts: ChannelCallOptions,
    bytes: number,
    deadline: number | undefined,
    attempt: (c: Client, leftMs: number | undefined) => Promise<T>,
  ): Promise<T> {
    let resends = 0;
    let attempts = 1;
    for (;;) {
      const client = await this.#connection(opts, bytes, deadline);
      const left = deadline === undefined ? undefined : deadline - Date.now();
      if (left !== undefined && left <= 0) throw new ZrpcError("DEADLINE_EXCEEDED", "deadline passed before the call was sent");
      try {
        return await attempt(client, left);
      } catch (e) {
        if (!isFailure(e)) throw e;
        const retry = opts.retry;
        if (e.notSent && resends < this.#cfg.maxResends) {
          resends++;
          continue;
        }
        if (!e.notSent && retry !== undefined && attempts < retry.maxAttempts && (retry.codes ?? ["UNAVAILABLE"]).includes(e.error.code)) {
          const wait = jitter(backoffMs(retry.initialBackoffMs ?? 100, retry.maxBackoffMs ?? 2_000, attempts));
          if (deadline !== undefined && Date.now() + wait >= deadline) throw e.error;
          attempts++;
          await sleep(wait, opts.signal);
          continue;
        }
        throw e.error;
      }
    }
  }

  // ---- connections ------------------------------------------------------

  /** The connection taking calls, or one to wait for (bounded: calls, bytes, the deadline or `connectWaitMs`). */
  #connection(opts: CallOptions, bytes: number, deadline?: number): Promise<Client> {
    if (this.#state === "closed") return Promise.reject(new ZrpcError("UNAVAILABLE", "the channel is closed"));
    if (opts.signal?.aborted) return Promise.reject(new ZrpcError("CANCELLED", "aborted before the call started"));
    const c = this.#current;
    if (c?.isOpen) return Promise.resolve(c);
    if (this.#waiting.length >= this.#cfg.maxWaitingCalls) {
      return Promise.reject(
        new ZrpcError("RESOURCE_EXHAUSTED", `${this.#waiting.length} calls already wait for a connection (maxWaitingCalls)`),
      );
    }
    if (this.#waitingBytes + bytes > this.#cfg.maxWaitingBytes) {
      return Promise.reject(
        new ZrpcError(
          "RESOURCE_EXHAUSTED",
          `waiting calls would hold ${this.#waitingBytes + bytes} bytes, over maxWaitingBytes (${this.#cfg.maxWaitingBytes})`,
        ),
      );
    }
    this.#ensureConnecting();
    return new Promise<Client>((resolve, reject) => {
      const until = deadline ?? Date.now() + (opts.timeoutMs ?? this.#cfg.connectWaitMs);
      const byDeadline = deadline !== undefined || opts.timeoutMs !== undefined;
      const done = () => {
        clearTimeout(timer);
        opts.signal?.removeEventListener("abort", onAbort);
        const i = this.#waiting.indexOf(w);
        if (i >= 0) {
          this.#waiting.splice(i, 1);
          this.#waitingBytes -= bytes;
        }
      };
      const w: Waiter = {
        bytes,
        resolve: (c) => {
          done();
          resolve(c);
        },
        reject: (e) => {
          done();
          reject(e);
        },
      };
      const timer = setTimeout(
        () => {
          const why = this.#lastError === undefined ? "" : `: ${this.#lastError}`;
          w.reject(
            byDeadline
              ? new ZrpcError("DEADLINE_EXCEEDED", `no connection before the deadline${why}`)
              : new ZrpcError("UNAVAILABLE", `no connection within ${this.#cfg.connectWaitMs} ms${why}`),
          );
        },
        Math.max(0, until - Date.now()),
      );
      const onAbort = () => w.reject(new ZrpcError("CANCELLED", "aborted while waiting for a connection"));
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiting.push(w);
      this.#waitingBytes += bytes;
    });
  }

  /** Starts the connect loop unless it runs. */
  #ensureConnecting(): void {
    if (this.#connecting || this.#state === "closed") return;
    this.#connecting = true;
    this.#setState("connecting");
    void this.#connectLoop();
  }

  /** A method, not a field read: the state changes across the awaits below. */
  #closed(): boolean {
    return this.#state === "closed";
  }

  async #connectLoop(): Promise<void> {
    while (!this.#closed()) {
      try {
        const md = this.#opts.metadata;
        const metadata = typeof md === "function" ? await md() : md;
        const client = await connect(this.#url, { ...this.#opts, metadata });
        if (this.#closed()) {
          void client.close();
          return;
        }
        this.#adopt(client);
        return;
      } catch (e) {
        this.#lastError = e instanceof Error ? e.message : String(e);
        if (this.#waiting.length === 0) {
          // Nobody needs a connection: no retries while nothing happens;
          // the next call starts connecting again.
          this.#connecting = false;
          this.#setState("idle");
          return;
        }
        this.#failures++;
        this.#setState("backoff");
        await sleep(jitter(backoffMs(this.#cfg.initialBackoffMs, this.#cfg.maxBackoffMs, this.#failures)));
        if (this.#closed()) return;
        this.#setState("connecting");
      }
    }
  }

  /** A new connection takes calls; watch it for its drain and its end. */
  #adopt(client: Client): void {
    this.#connecting = false;
    this.#failures = 0;
    this.#current = client;
    this.#setState("ready");
    for (const w of [...this.#waiting]) w.resolve(client);
    // The next connection opens as this one drains: its calls finish on it.
    void client.draining.then(() => {
      if (this.#current === client) {
        this.#current = undefined;
        this.#ensureConnecting();
      }
    });
    void client.closed.then(() => {
      if (this.#current === client) {
        this.#current = undefined;
        // A call that needs a connection starts the next one.
        if (this.#waiting.length > 0) this.#ensureConnecting();
        else if (!this.#connecting) this.#setState("idle");
      }
    });
  }

  #failWaiting(e: ZrpcError): void {
    for (const w of [...this.#waiting]) w.reject(e);
  }

  #setState(s: ChannelState): void {
    if (this.#state === s || this.#state === "closed") return;
    this.#state = s;
    for (const fn of this.#listeners) fn(s);
  }
}

/** A failed attempt as the channel sees it. */
class AttemptFailure {
  constructor(
    readonly notSent: boolean,
    readonly error: ZrpcError,
  ) {}
}

function isFailure(e: unknown): e is AttemptFailure {
  return e instanceof AttemptFailure;
}

/**
 * What an attempt's error allows: a call the connection refused to open (it
 * was closed or draining: nothing left) or one the server announced it never
 * processed may go again; the flag is the connection's, never the status text's.
 */
function failure(e: unknown): unknown {
  return e instanceof ZrpcError ? new AttemptFailure(e.notProcessed, e) : e;
}

/** The call's absolute deadline, from its `timeoutMs`. */
function deadlineOf(opts: CallOptions): number | undefined {
  return opts.timeoutMs === undefined ? undefined : Date.now() + opts.timeoutMs;
}

/**
 * A server stream through a {@link Channel}: the current call's iterator,
 * and what resuming it needs (PROTOCOL.md 5.6). Once the stream is known
 * not to be resumable, `next` is the call's own iterator: no extra work
 * per message.
 */
class ResumableStream implements AsyncIterator<Uint8Array> {
  #inner: AsyncIterator<Uint8Array> | undefined;
  #first: Promise<IteratorResult<Uint8Array>> | undefined;
  readonly #deadline: number | undefined;
  /** The current call's resume point, and whether it received headers or a message. */
  #cursor: Uint8Array | undefined;
  #heard = false;
  /** A message came on the current call: progress, the count in a row starts again. */
  #progressed = false;
  /** The cursor the current call was opened with. */
  #openedAt: Uint8Array | undefined;
  #inARow = 0;
  /** Resumes over the stream's life. */
  resumes = 0;

  constructor(
    readonly channel: Channel,
    readonly method: string,
    readonly request: Uint8Array,
    readonly opts: ChannelCallOptions,
    readonly cfg: ChannelLimits,
  ) {
    this.#deadline = deadlineOf(opts);
  }

  next(): Promise<IteratorResult<Uint8Array>> {
    const inner = this.#inner;
    if (inner !== undefined) {
      // A stream that stamps no cursor once it has messages cannot be resumed.
      if (this.#cursor === undefined && this.#progressed) return inner.next();
      return inner.next().then(
        (r) => this.#got(r),
        (e: unknown) => this.#resume(e),
      );
    }
    this.#first ??= this.#open(this.opts).then(
      (r) => this.#got(r),
      (e: unknown) => this.#resume(e),
    );
    const first = this.#first;
    return first.then((r) => {
      if (this.#first === first) this.#first = undefined;
      return r;
    });
  }

  async return(): Promise<IteratorResult<Uint8Array>> {
    await this.#inner?.return?.();
    return { value: undefined, done: true };
  }

  /** Opens the call with `opts` (the first time, or resuming). */
  async #open(opts: CallOptions): Promise<IteratorResult<Uint8Array>> {
    this.#cursor = undefined;
    this.#heard = false;
    this.#progressed = false;
    const own: CallOptions = {
      ...opts,
      onHeaders: (h) => {
        this.#heard = true;
        this.opts.onHeaders?.(h);
      },
      onCursor: (c) => {
        this.#cursor = c;
        this.opts.onCursor?.(c);
      },
    };
    const { it, first } = await this.channel.openStream(this.method, this.request, own, this.#deadline);
    this.#inner = it;
    return first;
  }

  #got(r: IteratorResult<Uint8Array>): IteratorResult<Uint8Array> {
    if (r.done !== true) {
      this.#progressed = true;
      this.#heard = true;
    }
    return r;
  }

  /**
   * After the stream failed with `failed`: open it again from its resume
   * point (again after each attempt that fails the same way, within the
   * bound), or fail with the last error.
   */
  async #resume(failed: unknown): Promise<IteratorResult<Uint8Array>> {
    let e = failed;
    for (;;) {
      if (!(e instanceof ZrpcError) || e.code !== "UNAVAILABLE") throw e;
      // A call that heard nothing stands where it was opened.
      const point = this.#heard ? this.#cursor : this.#openedAt;
      if (point === undefined) throw e;
      if (this.#progressed) this.#inARow = 0;
      if (this.#inARow >= this.cfg.maxResumes) throw e;
      if (this.#inARow > 0) {
        const wait = jitter(backoffMs(this.cfg.initialBackoffMs, this.cfg.maxBackoffMs, this.#inARow));
        if (this.#deadline !== undefined && Date.now() + wait >= this.#deadline) throw e;
        await sleep(wait, this.opts.signal);
      }
      this.#inARow++;
      this.resumes++;
      this.#openedAt = point;
      const metadata: Metadata = [...toMetadata(this.opts.metadata).filter(([k]) => k !== CURSOR_KEY), [CURSOR_KEY, point]];
      try {
        return this.#got(await this.#open({ ...this.opts, metadata }));
      } catch (again) {
        e = again;
      }
    }
  }
}

function withTimeout(opts: CallOptions, leftMs: number | undefined): CallOptions {
  return leftMs === undefined ? opts : { ...opts, timeoutMs: Math.max(1, Math.ceil(leftMs)) };
}

/**
 * The wait (before jitter) after `failures` failures in a row: `initialMs`
 * doubled for each failure after the first, at most `maxMs`. The one
 * backoff of connects, retries and resumes.
 */
export function backoffMs(initialMs: number, maxMs: number, failures: number): number {
  return Math.min(initialMs * 2 ** Math.min(Math.max(failures - 1, 0), 30), maxMs);
}

/** 0.5× to 1× of `ms`. */
export function jitter(ms: number): number {
  return ms * (0.5 + Math.random() / 2);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(t);
        reject(new ZrpcError("CANCELLED", "aborted while waiting to retry"));
      },
      { once: true },
    );
  });
}

function definedOnly(o: ChannelOptions): Partial<ChannelLimits> {
  const out: Partial<ChannelLimits> = {};
  for (const k of Object.keys(CHANNEL_DEFAULTS) as (keyof typeof CHANNEL_DEFAULTS)[]) {
    const v = o[k];
    if (typeof v === "number") out[k] = v;
  }
  return out;
}
