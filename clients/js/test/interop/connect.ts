/**
 * connect-es's client as an {@link InteropClient}, over whichever transport it is given: Connect, gRPC or
 * gRPC-Web, from connect-node or connect-web. Runs in Node and browsers.
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import { ConnectError, createClient, decodeBinaryHeader, encodeBinaryHeader, type Transport } from "@connectrpc/connect";
import type { StreamingOutputCallRequestSchema } from "../gen/grpc/testing/messages_pb.js";
import { TestService, UnimplementedService } from "../gen/grpc/testing/test_pb.js";
import { CallError, type Duplex, type InteropClient, type Md, type Opts, Pushed } from "./cases.js";

function md(h: Headers): Md {
  const out: Md = {};
  h.forEach((v, k) => {
    out[k] = k.endsWith("-bin") ? decodeBinaryHeader(v) : v;
  });
  return out;
}

function fail(e: unknown): never {
  if (e instanceof ConnectError) throw new CallError(e.code, e.rawMessage);
  throw e;
}

async function wrap<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    fail(e);
  }
}

interface Seen {
  headers: Md;
  trailers: Md;
}

/** `transport(gzip)` makes the transport (gzip: compress requests, accept gzip responses). */
export function connectInterop(transport: (gzip: boolean) => Transport, streamsRequests: boolean): InteropClient {
  const plain = createClient(TestService, transport(false));
  let zipped: typeof plain | undefined;
  const client = (o: Opts) => {
    if (!o.gzip) return plain;
    zipped ??= createClient(TestService, transport(true));
    return zipped;
  };
  const options = (o: Opts, seen?: Seen) => {
    const headers = new Headers();
    for (const [k, v] of Object.entries(o.metadata ?? {})) headers.set(k, typeof v === "string" ? v : encodeBinaryHeader(v));
    return {
      headers,
      ...(o.timeoutMs === undefined ? {} : { timeoutMs: o.timeoutMs }),
      ...(o.signal === undefined ? {} : { signal: o.signal }),
      onHeader: (h: Headers) => {
        if (seen) seen.headers = md(h);
      },
      onTrailer: (t: Headers) => {
        if (seen) seen.trailers = md(t);
      },
    };
  };
  return {
    streamsRequests,
    gzip: true,
    emptyCall: async (o = {}) => {
      await wrap(client(o).emptyCall({}, options(o)));
    },
    unaryCall: async (req, o = {}) => {
      const seen: Seen = { headers: {}, trailers: {} };
      const value = await wrap(client(o).unaryCall(req, options(o, seen)));
      return { value, ...seen };
    },
    streamingOutputCall: async (req, o = {}) => {
      const out = [];
      try {
        for await (const m of client(o).streamingOutputCall(req, options(o))) out.push(m);
      } catch (e) {
        fail(e);
      }
      return out;
    },
    streamingInputCall: (reqs, o = {}) => wrap(client(o).streamingInputCall(reqs, options(o))),
    fullDuplexCall: (o = {}): Duplex => {
      const seen: Seen = { headers: {}, trailers: {} };
      const requests = new Pushed<MessageInitShape<typeof StreamingOutputCallRequestSchema>>();
      const abort = new AbortController();
      const signal = o.signal === undefined ? abort.signal : AbortSignal.any([o.signal, abort.signal]);
      const it = client(o)
        .fullDuplexCall(requests, options({ ...o, signal }, seen))
        [Symbol.asyncIterator]();
      let end: (v: Seen) => void = () => {};
      const ended = new Promise<Seen>((r) => {
        end = r;
      });
      return {
        send: async (req) => requests.push(req),
        closeSend: () => requests.end(),
        cancel: () => abort.abort(),
        next: async () => {
          const r = await wrap(it.next());
          if (r.done) end(seen);
          return r.done ? undefined : r.value;
        },
        ended,
      };
    },
    unimplementedCall: async () => {
      await wrap(plain.unimplementedCall({}));
    },
    unimplementedService: async () => {
      await wrap(createClient(UnimplementedService, transport(false)).unimplementedCall({}));
    },
    close: () => {},
  };
}
