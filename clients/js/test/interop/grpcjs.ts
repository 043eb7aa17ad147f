/** @grpc/grpc-js as an {@link InteropClient}: gRPC over h2c, messages encoded with protobuf-es. */

import { create, type DescMessage, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
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

const P = (m: string) => `/grpc.testing.TestService/${m}`;
// biome-ignore lint/suspicious/noExplicitAny: protobuf-es init shapes are checked by the InteropClient types.
const ser = (s: DescMessage) => (m: any) => Buffer.from(toBinary(s, create(s, m)));
const de = (s: DescMessage) => (b: Buffer) => fromBinary(s, b);

function toMetadata(o: Opts): grpc.Metadata {
  const m = new grpc.Metadata();
  for (const [k, v] of Object.entries(o.metadata ?? {})) m.add(k, typeof v === "string" ? v : Buffer.from(v));
  return m;
}

function md(m: grpc.Metadata): Md {
  const out: Md = {};
  for (const [k, v] of Object.entries(m.getMap())) out[k] = typeof v === "string" ? v : new Uint8Array(v);
  return out;
}

const callOptions = (o: Opts): grpc.CallOptions => (o.timeoutMs === undefined ? {} : { deadline: Date.now() + o.timeoutMs });

function error(e: unknown): CallError | unknown {
  const s = e as Partial<grpc.ServiceError>;
  return typeof s.code === "number" ? new CallError(s.code, s.details ?? "") : e;
}

/** A grpc-js client of `host:port`. */
export function grpcJsInterop(hostPort: string): InteropClient {
  const creds = grpc.credentials.createInsecure();
  const plain = new grpc.Client(hostPort, creds);
  let zipped: grpc.Client | undefined;
  const client = (o: Opts) => {
    if (!o.gzip) return plain;
    zipped ??= new grpc.Client(hostPort, creds, { "grpc.default_compression_algorithm": 2 });
    return zipped;
  };
  // biome-ignore lint/suspicious/noExplicitAny: see ser.
  function unary(path: string, reqSchema: DescMessage, resSchema: DescMessage, req: any, o: Opts) {
    return new Promise<{ value: unknown; headers: Md; trailers: Md }>((ok, fail) => {
      let headers: Md = {};
      let result: unknown;
      let failed: unknown;
      const call = client(o).makeUnaryRequest(path, ser(reqSchema), de(resSchema), req, toMetadata(o), callOptions(o), (e, r) => {
        if (e) failed = error(e);
        result = r;
      });
      call.on("metadata", (m: grpc.Metadata) => {
        headers = md(m);
      });
      // The status comes after the callback: resolve with the trailers.
      call.on("status", (s: grpc.StatusObject) =>
        failed === undefined ? ok({ value: result, headers, trailers: md(s.metadata) }) : fail(failed),
      );
    });
  }
  return {
    streamsRequests: true,
    gzip: true,
    emptyCall: async (o = {}) => {
      await unary(P("EmptyCall"), EmptySchema, EmptySchema, {}, o);
    },
    unaryCall: async (req, o = {}) => {
      const r = await unary(P("UnaryCall"), SimpleRequestSchema, SimpleResponseSchema, req, o);
      return r as Awaited<ReturnType<InteropClient["unaryCall"]>>;
    },
    streamingOutputCall: async (req, o = {}) => {
      const call = client(o).makeServerStreamRequest(
        P("StreamingOutputCall"),
        ser(StreamingOutputCallRequestSchema),
        de(StreamingOutputCallResponseSchema),
        req,
        toMetadata(o),
        callOptions(o),
      );
      const out = [];
      try {
        for await (const m of call) out.push(m);
      } catch (e) {
        throw error(e);
      }
      return out;
    },
    streamingInputCall: (reqs, o = {}) =>
      new Promise((ok, fail) => {
        const call = client(o).makeClientStreamRequest(
          P("StreamingInputCall"),
          ser(StreamingInputCallRequestSchema),
          de(StreamingInputCallResponseSchema),
          toMetadata(o),
          callOptions(o),
          (e, r) => (e ? fail(error(e)) : ok(r as ReturnType<typeof fromBinary<typeof StreamingInputCallResponseSchema>>)),
        );
        o.signal?.addEventListener("abort", () => call.cancel(), { once: true });
        void (async () => {
          for await (const r of reqs) call.write(r);
          call.end();
        })();
      }),
    fullDuplexCall: (o = {}): Duplex => {
      const call = client(o).makeBidiStreamRequest(
        P("FullDuplexCall"),
        ser(StreamingOutputCallRequestSchema),
        de(StreamingOutputCallResponseSchema),
        toMetadata(o),
        callOptions(o),
      );
      // An error (a deadline passed already, say) is read through the iterator and the status; without a
      // listener the stream's "error" event would be an uncaught exception.
      let err: unknown;
      const failed = new Promise<void>((ok) =>
        call.on("error", (e) => {
          err = e;
          ok();
        }),
      );
      let headers: Md = {};
      call.on("metadata", (m: grpc.Metadata) => {
        headers = md(m);
      });
      const ended = new Promise<{ headers: Md; trailers: Md }>((ok) =>
        call.on("status", (s: grpc.StatusObject) => {
          if (s.code === grpc.status.OK) ok({ headers, trailers: md(s.metadata) });
        }),
      );
      const it = call[Symbol.asyncIterator]();
      return {
        send: (req) => Promise.race([new Promise<void>((ok) => call.write(req, () => ok())), failed]),
        closeSend: () => call.end(),
        cancel: () => call.cancel(),
        next: async () => {
          try {
            const r = await it.next();
            // A stream that failed before it was read ends its iterator without the error.
            if (r.done && err !== undefined) throw err;
            return r.done ? undefined : r.value;
          } catch (e) {
            throw error(e);
          }
        },
        ended,
      };
    },
    unimplementedCall: async () => {
      await unary(P("UnimplementedCall"), EmptySchema, EmptySchema, {}, {});
    },
    unimplementedService: async () => {
      await unary("/grpc.testing.UnimplementedService/UnimplementedCall", EmptySchema, EmptySchema, {}, {});
    },
    close: () => {
      plain.close();
      zipped?.close();
    },
  };
}
