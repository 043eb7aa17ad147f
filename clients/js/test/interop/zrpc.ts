/** zrpc's own TypeScript client (zrpc.v1 over one WebSocket) as an {@link InteropClient}; runs in Node and browsers. */

import { create, type DescMessage, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { type CallOptions, type Client, Code, type Metadata, ZrpcError } from "../../src/index.js";
import { EmptySchema } from "../gen/grpc/testing/empty_pb.js";
import {
  SimpleRequestSchema,
  SimpleResponseSchema,
  StreamingInputCallRequestSchema,
  StreamingInputCallResponseSchema,
  StreamingOutputCallRequestSchema,
  StreamingOutputCallResponseSchema,
} from "../gen/grpc/testing/messages_pb.js";
import { CallError, type Duplex, type InteropClient, type Md, type Opts } from "./cases.js";

const M = (m: string) => `grpc.testing.TestService/${m}`;
const md = (m: Metadata): Md => Object.fromEntries(m);
const enc = <S extends DescMessage>(s: S, m: MessageInitShape<S>) => toBinary(s, create(s, m));

function fail(e: unknown): never {
  if (e instanceof ZrpcError) throw new CallError(Code[e.code], e.rawMessage);
  throw e;
}

async function wrap<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    fail(e);
  }
}

/** The calls of `grpc.testing.TestService` on `client`, which it closes when done unless `shared`. */
export function zrpcInterop(client: Client, shared = false): InteropClient {
  const options = (o: Opts, seen?: { headers: Md; trailers: Md }): CallOptions => ({
    ...(o.metadata === undefined ? {} : { metadata: o.metadata }),
    ...(o.timeoutMs === undefined ? {} : { timeoutMs: o.timeoutMs }),
    ...(o.signal === undefined ? {} : { signal: o.signal }),
    onHeaders: (h) => {
      if (seen) seen.headers = md(h);
    },
    onTrailers: (t) => {
      if (seen) seen.trailers = md(t);
    },
  });
  return {
    streamsRequests: true,
    // Compression on zrpc.v1 is not built yet.
    gzip: false,
    emptyCall: async (o = {}) => {
      await wrap(client.unary(M("EmptyCall"), enc(EmptySchema, {}), options(o)));
    },
    unaryCall: async (req, o = {}) => {
      const seen = { headers: {}, trailers: {} };
      const r = await wrap(client.unary(M("UnaryCall"), enc(SimpleRequestSchema, req), options(o, seen)));
      return { value: fromBinary(SimpleResponseSchema, r), ...seen };
    },
    streamingOutputCall: async (req, o = {}) => {
      const out = [];
      try {
        for await (const m of client.serverStreaming(M("StreamingOutputCall"), enc(StreamingOutputCallRequestSchema, req), options(o))) {
          out.push(fromBinary(StreamingOutputCallResponseSchema, m));
        }
      } catch (e) {
        fail(e);
      }
      return out;
    },
    streamingInputCall: async (reqs, o = {}) => {
      async function* encoded() {
        for await (const r of reqs) yield enc(StreamingInputCallRequestSchema, r);
      }
      const r = await wrap(client.clientStreaming(M("StreamingInputCall"), encoded(), options(o)));
      return fromBinary(StreamingInputCallResponseSchema, r);
    },
    fullDuplexCall: (o = {}): Duplex => {
      const seen = { headers: {}, trailers: {} };
      const call = client.bidi(M("FullDuplexCall"), options(o, seen));
      const it = call[Symbol.asyncIterator]();
      return {
        send: (req) => wrap(call.send(enc(StreamingOutputCallRequestSchema, req))),
        closeSend: () => call.closeSend(),
        cancel: () => call.cancel(),
        next: async () => {
          const r = await wrap(it.next());
          return r.done ? undefined : fromBinary(StreamingOutputCallResponseSchema, r.value);
        },
        ended: call.status.then(() => seen),
      };
    },
    unimplementedCall: async () => {
      await wrap(client.unary(M("UnimplementedCall"), enc(EmptySchema, {})));
    },
    unimplementedService: async () => {
      await wrap(client.unary("grpc.testing.UnimplementedService/UnimplementedCall", enc(EmptySchema, {})));
    },
    close: () => {
      if (!shared) void client.close();
    },
  };
}
