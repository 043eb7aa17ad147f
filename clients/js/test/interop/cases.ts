/**
 * gRPC's interop cases (grpc/grpc `doc/interop-test-descriptions.md`), written once against
 * {@link InteropClient} so that grpc-js, connect-es (gRPC, gRPC-Web, Connect), and zrpc's own
 * TypeScript client (Node and Chromium) are held to the same semantics by the same code. Runs in
 * Node and in the browser: no Node imports here.
 */

import { create, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import {
  type SimpleRequestSchema,
  type SimpleResponseSchema,
  type StreamingInputCallRequestSchema,
  type StreamingInputCallResponseSchema,
  StreamingOutputCallRequestSchema,
  type StreamingOutputCallResponseSchema,
} from "../gen/grpc/testing/messages_pb.js";

const OutReq = StreamingOutputCallRequestSchema;

/** Request metadata, and response headers or trailers as they arrived (`-bin` values as bytes). */
export type Md = Record<string, string | Uint8Array>;

/** A call that ended with a status other than OK: the gRPC code number and the message. */
export class CallError extends Error {
  constructor(
    readonly code: number,
    readonly detail: string,
  ) {
    super(`status ${code}: ${detail}`);
  }
}

/** Options of one call. */
export interface Opts {
  metadata?: Md;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** gzip the requests (and accept gzip responses); only clients that can. */
  gzip?: boolean;
}

/** A response with the headers and trailers it came with. */
export interface Observed<T> {
  value: T;
  headers: Md;
  trailers: Md;
}

/** A running `FullDuplexCall`. */
export interface Duplex {
  send(req: MessageInitShape<typeof StreamingOutputCallRequestSchema>): Promise<void>;
  closeSend(): void;
  cancel(): void;
  /** The next response; `undefined` at the end; rejects with {@link CallError}. */
  next(): Promise<MessageShape<typeof StreamingOutputCallResponseSchema> | undefined>;
  /** The response headers and trailers, once the call ended OK. */
  readonly ended: Promise<{ headers: Md; trailers: Md }>;
}

/** One client of `grpc.testing.TestService`; every failure is a {@link CallError}. */
export interface InteropClient {
  /** The call kinds beyond unary and server streaming it can make (gRPC-Web: none). */
  readonly streamsRequests: boolean;
  /** Whether it can gzip messages. */
  readonly gzip: boolean;
  emptyCall(opts?: Opts): Promise<void>;
  unaryCall(req: MessageInitShape<typeof SimpleRequestSchema>, opts?: Opts): Promise<Observed<MessageShape<typeof SimpleResponseSchema>>>;
  streamingOutputCall(
    req: MessageInitShape<typeof StreamingOutputCallRequestSchema>,
    opts?: Opts,
  ): Promise<MessageShape<typeof StreamingOutputCallResponseSchema>[]>;
  streamingInputCall(
    reqs: AsyncIterable<MessageInitShape<typeof StreamingInputCallRequestSchema>>,
    opts?: Opts,
  ): Promise<MessageShape<typeof StreamingInputCallResponseSchema>>;
  fullDuplexCall(opts?: Opts): Duplex;
  /** `grpc.testing.TestService/UnimplementedCall`. */
  unimplementedCall(): Promise<void>;
  /** `grpc.testing.UnimplementedService/UnimplementedCall`. */
  unimplementedService(): Promise<void>;
  close(): void;
}

/** gRPC status codes the cases name. */
export const Status = { OK: 0, CANCELLED: 1, UNKNOWN: 2, DEADLINE_EXCEEDED: 4, UNIMPLEMENTED: 12 } as const;

/** One case: its name as in the descriptions, whether it needs request streams, and its body. */
export interface Case {
  name: string;
  streamsRequests?: boolean;
  gzip?: boolean;
  run(c: InteropClient): Promise<void>;
}

function check(cond: boolean, what: string): asserts cond {
  if (!cond) throw new Error(what);
}

function eq<T>(got: T, want: T, what: string): void {
  check(got === want, `${what}: got ${String(got)}, want ${String(want)}`);
}

function bytesEq(a: string | Uint8Array | undefined, b: Uint8Array): boolean {
  return a instanceof Uint8Array && a.length === b.length && a.every((x, i) => x === b[i]);
}

const zeros = (n: number) => ({ body: new Uint8Array(n) });

async function failsWith(p: Promise<unknown>, code: number, what: string, message?: string): Promise<void> {
  try {
    await p;
  } catch (e) {
    check(e instanceof CallError, `${what}: not a status: ${String(e)}`);
    eq(e.code, code, `${what}: code (${e.detail})`);
    if (message !== undefined) eq(e.detail, message, `${what}: message`);
    return;
  }
  throw new Error(`${what}: succeeded, want status ${code}`);
}

async function* of<T>(items: T[]): AsyncIterable<T> {
  for (const i of items) yield i;
}

/** An iterable that yields nothing until `signal` aborts, then ends. */
async function* waitFor(signal: AbortSignal): AsyncIterable<never> {
  await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
}

const INITIAL = "x-grpc-test-echo-initial";
const TRAILING = "x-grpc-test-echo-trailing-bin";
const metadata = (): Md => ({ [INITIAL]: "test_initial_metadata_value", [TRAILING]: new Uint8Array([0xab, 0xab, 0xab]) });
const SPECIAL = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";

async function largeUnary(c: InteropClient, opts: Opts): Promise<void> {
  const r = await c.unaryCall({ responseSize: 314159, payload: zeros(271828) }, opts);
  eq(r.value.payload?.body.length, 314159, "response payload size");
}

async function clientStreaming(c: InteropClient, opts: Opts): Promise<void> {
  const sizes = [27182, 8, 1828, 45904];
  const r = await c.streamingInputCall(of(sizes.map((n) => ({ payload: zeros(n) }))), opts);
  eq(r.aggregatedPayloadSize, 74922, "aggregated payload size");
}

async function serverStreaming(c: InteropClient, opts: Opts): Promise<void> {
  const sizes = [31415, 9, 2653, 58979];
  const got = await c.streamingOutputCall({ responseParameters: sizes.map((size) => ({ size })) }, opts);
  eq(got.map((m) => m.payload?.body.length).join(","), sizes.join(","), "response sizes");
}

async function pingPong(c: InteropClient, opts: Opts): Promise<void> {
  const pairs = [
    [31415, 27182],
    [9, 8],
    [2653, 1828],
    [58979, 45904],
  ] as const;
  const call = c.fullDuplexCall(opts);
  for (const [resp, req] of pairs) {
    await call.send(create(OutReq, { responseParameters: [{ size: resp }], payload: zeros(req) }));
    const m = await call.next();
    eq(m?.payload?.body.length, resp, "response size");
  }
  call.closeSend();
  eq(await call.next(), undefined, "the end after the last pair");
}

/** The cases, in the descriptions' order. */
export const cases: Case[] = [
  {
    name: "empty_unary",
    run: (c) => c.emptyCall(),
  },
  {
    name: "large_unary",
    run: (c) => largeUnary(c, {}),
  },
  {
    name: "client_streaming",
    streamsRequests: true,
    run: (c) => clientStreaming(c, {}),
  },
  {
    name: "server_streaming",
    run: (c) => serverStreaming(c, {}),
  },
  {
    name: "ping_pong",
    streamsRequests: true,
    run: (c) => pingPong(c, {}),
  },
  {
    name: "empty_stream",
    streamsRequests: true,
    run: async (c) => {
      const call = c.fullDuplexCall();
      call.closeSend();
      eq(await call.next(), undefined, "no response");
    },
  },
  {
    name: "custom_metadata",
    run: async (c) => {
      const r = await c.unaryCall({ responseSize: 314159, payload: zeros(271828) }, { metadata: metadata() });
      eq(r.headers[INITIAL], "test_initial_metadata_value", "unary: echoed initial metadata");
      check(bytesEq(r.trailers[TRAILING], new Uint8Array([0xab, 0xab, 0xab])), "unary: echoed trailing metadata");
      if (!c.streamsRequests) return;
      const call = c.fullDuplexCall({ metadata: metadata() });
      await call.send(create(OutReq, { responseParameters: [{ size: 314159 }], payload: zeros(271828) }));
      eq((await call.next())?.payload?.body.length, 314159, "duplex: response size");
      call.closeSend();
      eq(await call.next(), undefined, "duplex: the end");
      const { headers, trailers } = await call.ended;
      eq(headers[INITIAL], "test_initial_metadata_value", "duplex: echoed initial metadata");
      check(bytesEq(trailers[TRAILING], new Uint8Array([0xab, 0xab, 0xab])), "duplex: echoed trailing metadata");
    },
  },
  {
    name: "status_code_and_message",
    run: async (c) => {
      const responseStatus = { code: 2, message: "test status message" };
      await failsWith(c.unaryCall({ responseStatus }), Status.UNKNOWN, "unary", "test status message");
      if (!c.streamsRequests) return;
      const call = c.fullDuplexCall();
      await call.send(create(OutReq, { responseStatus }));
      call.closeSend();
      await failsWith(call.next(), Status.UNKNOWN, "duplex", "test status message");
    },
  },
  {
    name: "special_status_message",
    run: (c) => failsWith(c.unaryCall({ responseStatus: { code: 2, message: SPECIAL } }), Status.UNKNOWN, "unary", SPECIAL),
  },
  {
    name: "unimplemented_method",
    run: (c) => failsWith(c.unimplementedCall(), Status.UNIMPLEMENTED, "UnimplementedCall"),
  },
  {
    name: "unimplemented_service",
    run: (c) => failsWith(c.unimplementedService(), Status.UNIMPLEMENTED, "UnimplementedService"),
  },
  {
    name: "cancel_after_begin",
    streamsRequests: true,
    run: async (c) => {
      const abort = new AbortController();
      const call = c.streamingInputCall(waitFor(abort.signal), { signal: abort.signal });
      abort.abort();
      await failsWith(call, Status.CANCELLED, "StreamingInputCall");
    },
  },
  {
    name: "cancel_after_first_response",
    streamsRequests: true,
    run: async (c) => {
      const call = c.fullDuplexCall();
      await call.send(create(OutReq, { responseParameters: [{ size: 31415 }], payload: zeros(27182) }));
      eq((await call.next())?.payload?.body.length, 31415, "first response size");
      call.cancel();
      await failsWith(call.next(), Status.CANCELLED, "after cancel");
    },
  },
  {
    name: "timeout_on_sleeping_server",
    streamsRequests: true,
    run: async (c) => {
      const call = c.fullDuplexCall({ timeoutMs: 1 });
      // The send may fail once the deadline has passed; the status is what counts.
      await call.send(create(OutReq, { payload: zeros(27182) })).catch(() => {});
      await failsWith(call.next(), Status.DEADLINE_EXCEEDED, "FullDuplexCall");
    },
  },
  {
    name: "large_unary (gzip)",
    gzip: true,
    run: (c) => largeUnary(c, { gzip: true }),
  },
  {
    name: "client_streaming (gzip)",
    gzip: true,
    streamsRequests: true,
    run: (c) => clientStreaming(c, { gzip: true }),
  },
  {
    name: "server_streaming (gzip)",
    gzip: true,
    run: (c) => serverStreaming(c, { gzip: true }),
  },
  {
    name: "ping_pong (gzip)",
    gzip: true,
    streamsRequests: true,
    run: (c) => pingPong(c, { gzip: true }),
  },
];

/** One case's outcome: `pass`, `n/a` (the client cannot make that call), or the failure. */
export type Outcome = "pass" | "n/a" | `FAIL: ${string}`;

/** Runs every case on a fresh client from `make` (a case's failure does not stop the rest). */
export async function runAll(make: () => InteropClient): Promise<Record<string, Outcome>> {
  const out: Record<string, Outcome> = {};
  for (const k of cases) {
    const c = make();
    if ((k.streamsRequests && !c.streamsRequests) || (k.gzip && !c.gzip)) {
      out[k.name] = "n/a";
      c.close();
      continue;
    }
    try {
      await k.run(c);
      out[k.name] = "pass";
    } catch (e) {
      out[k.name] = `FAIL: ${e instanceof Error ? e.message : String(e)}`;
    } finally {
      c.close();
    }
  }
  return out;
}

/** A request stream fed by `push`, for the duplex calls of clients that take an iterable. */
export class Pushed<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #ended = false;
  #wake: (() => void) | undefined;

  push(item: T): void {
    this.#items.push(item);
    this.#wake?.();
  }

  end(): void {
    this.#ended = true;
    this.#wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      const item = this.#items.shift();
      if (item !== undefined) {
        yield item;
      } else if (this.#ended) {
        return;
      } else {
        await new Promise<void>((r) => {
          this.#wake = r;
        });
      }
    }
  }
}
