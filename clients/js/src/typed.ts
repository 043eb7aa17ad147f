/**
 * Typed stubs from protobuf-es service descriptors: `createClient(Service,
 * client)` gives one method per RPC, of the right call kind, taking and
 * returning messages instead of bytes. Payloads are bare protobuf (no
 * length prefix), as on the Rust side.
 */

import {
  create,
  type DescMessage,
  type DescMethod,
  type DescService,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import type { CallOptions, Client } from "./client.js";
import type { Status } from "./protocol/status.js";

type Method = Pick<DescMethod, "input" | "output" | "methodKind">;

/** A typed bidirectional call. */
export interface TypedBidiCall<I extends DescMessage, O extends DescMessage> extends AsyncIterable<MessageShape<O>> {
  send(message: MessageInitShape<I>): Promise<void>;
  closeSend(): void;
  cancel(): void;
  readonly status: Promise<Status>;
}

/** The typed function for one method, by its kind. */
export type TypedMethod<M extends Method> = M extends {
  methodKind: "unary";
  input: infer I extends DescMessage;
  output: infer O extends DescMessage;
}
  ? (request: MessageInitShape<I>, opts?: CallOptions) => Promise<MessageShape<O>>
  : M extends { methodKind: "server_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
    ? (request: MessageInitShape<I>, opts?: CallOptions) => AsyncIterable<MessageShape<O>>
    : M extends { methodKind: "client_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
      ? (requests: AsyncIterable<MessageInitShape<I>> | Iterable<MessageInitShape<I>>, opts?: CallOptions) => Promise<MessageShape<O>>
      : M extends { methodKind: "bidi_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
        ? (opts?: CallOptions) => TypedBidiCall<I, O>
        : never;

/** What typed stubs call through: a {@link Client}, or a `Channel` that reconnects. */
export type Caller = Pick<Client, "unary" | "serverStreaming" | "clientStreaming" | "bidi">;

/** A service's typed client: one function per method, named by its `localName`. */
export type TypedClient<S extends DescService> = { [K in keyof S["method"]]: TypedMethod<S["method"][K]> };

/** The wire name of a method: `package.Service/Method`. */
export function methodName(m: DescMethod): string {
  return `${m.parent.typeName}/${m.name}`;
}

async function* encodeAll<I extends DescMessage>(schema: I, reqs: AsyncIterable<MessageInitShape<I>> | Iterable<MessageInitShape<I>>) {
  for await (const r of reqs) yield toBinary(schema, create(schema, r));
}

function decodeStream<O extends DescMessage>(schema: O, src: AsyncIterable<Uint8Array>): AsyncIterable<MessageShape<O>> {
  return {
    [Symbol.asyncIterator]() {
      const it = src[Symbol.asyncIterator]();
      return {
        next: async () => {
          const r = await it.next();
          return r.done ? { value: undefined, done: true } : { value: fromBinary(schema, r.value), done: false };
        },
        return: async () => {
          await it.return?.();
          return { value: undefined, done: true };
        },
      };
    },
  };
}

/** Turns a generated service descriptor into typed methods over `client`. */
export function createClient<S extends DescService>(service: S, client: Caller): TypedClient<S> {
  const out: Record<string, unknown> = {};
  for (const m of service.methods) {
    const name = methodName(m);
    const { input, output } = m;
    switch (m.methodKind) {
      case "unary":
        out[m.localName] = async (req: MessageInitShape<DescMessage>, opts?: CallOptions) =>
          fromBinary(output, await client.unary(name, toBinary(input, create(input, req)), opts));
        break;
      case "server_streaming":
        out[m.localName] = (req: MessageInitShape<DescMessage>, opts?: CallOptions) =>
          decodeStream(output, client.serverStreaming(name, toBinary(input, create(input, req)), opts));
        break;
      case "client_streaming":
        out[m.localName] = async (reqs: AsyncIterable<MessageInitShape<DescMessage>>, opts?: CallOptions) =>
          fromBinary(output, await client.clientStreaming(name, encodeAll(input, reqs), opts));
        break;
      case "bidi_streaming":
        out[m.localName] = (opts?: CallOptions) => {
          const call = client.bidi(name, opts);
          const replies = decodeStream(output, call);
          return {
            send: (msg: MessageInitShape<DescMessage>) => call.send(toBinary(input, create(input, msg))),
            closeSend: () => call.closeSend(),
            cancel: () => call.cancel(),
            status: call.status,
            [Symbol.asyncIterator]: () => replies[Symbol.asyncIterator](),
          };
        };
        break;
    }
  }
  return out as TypedClient<S>;
}
