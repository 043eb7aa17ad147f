/**
 * Outside clients on zrpc's port: @grpc/grpc-js (gRPC over h2c), @connectrpc/connect-node (Connect and
 * gRPC-Web), and raw HTTP/2 and HTTP/1.1 requests for what a hostile or broken client gets.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import http from "node:http";
import http2 from "node:http2";
import { resolve } from "node:path";
import { before, describe, test } from "node:test";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, type ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as loader from "@grpc/proto-loader";
import { Echo, EchoRequestSchema } from "../src/gen/echo_pb.js";
import { People } from "../src/gen/people_pb.js";
import { repoRoot, useServer } from "./server.js";

let ctx: ReturnType<typeof useServer>;
const base = () => ctx.server.url.replace(/^ws:/, "http:").replace(/\/$/, "");
const hostPort = () => new URL(ctx.server.url).host;

// biome-ignore lint/suspicious/noExplicitAny: grpc-js's loaded services are untyped.
type Loaded = any;
function grpcClients(): { echo: Loaded; people: Loaded } {
  const def = loader.loadSync([resolve(repoRoot, "cli/protos/echo.proto"), resolve(repoRoot, "cli/protos/people.proto")], {
    includeDirs: [resolve(repoRoot, "cli/protos")],
    defaults: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as Loaded;
  const creds = grpc.credentials.createInsecure();
  return { echo: new pkg.echo.Echo(hostPort(), creds), people: new pkg.people.People(hostPort(), creds) };
}

const unaryCall = <T>(fn: (cb: (e: grpc.ServiceError | null, r: T) => void) => void) =>
  new Promise<T>((ok, fail) => fn((e, r) => (e ? fail(e) : ok(r))));

for (const runtime of ["tokio", "smol"]) {
  describe(`zrpc serve --runtime ${runtime}`, () => {
    const server = useServer(["--db", ":memory:", "--max-message-size", "65536", "--runtime", runtime]);
    before(() => {
      ctx = server;
    });
    registerTests();
  });
}

function registerTests(): void {
  test("grpc-js: the four call kinds", async () => {
    const { echo } = grpcClients();
    const r = await unaryCall<{ message: string }>((cb) => echo.Say({ message: "hi" }, cb));
    assert.equal(r.message, "hi");

    const got: number[] = [];
    const s = echo.Repeat({ message: "x", repeat: 5 });
    for await (const m of s) got.push((m as { index: number }).index);
    assert.deepEqual(got, [0, 1, 2, 3, 4]);

    const collected = await unaryCall<{ message: string; index: number }>((cb) => {
      const c = echo.Collect(cb);
      for (const w of ["a", "b", "c"]) c.write({ message: w });
      c.end();
    });
    assert.deepEqual([collected.message, collected.index], ["a b c", 3]);

    // Ping-pong: each reply arrives before the next request is written.
    const chat = echo.Chat();
    const it = chat[Symbol.asyncIterator]();
    for (const w of ["one", "two", "three"]) {
      chat.write({ message: w });
      const { value } = await it.next();
      assert.equal(value.message, w.toUpperCase());
    }
    chat.end();
    assert.equal((await it.next()).done, true);
    echo.close();
  });

  test("grpc-js: metadata both ways, binary included", async () => {
    const { echo } = grpcClients();
    const md = new grpc.Metadata();
    md.add("x-token", "abc");
    md.add("x-raw-bin", Buffer.from([0, 1, 254, 255]));
    let headers: grpc.Metadata | undefined;
    let trailers: grpc.Metadata | undefined;
    await unaryCall((cb) => {
      const call = echo.Reflect({ message: "m" }, md, cb);
      call.on("metadata", (m: grpc.Metadata) => {
        headers = m;
      });
      call.on("status", (s: grpc.StatusObject) => {
        trailers = s.metadata;
      });
    });
    assert.deepEqual(headers?.get("x-token"), ["abc"]);
    assert.deepEqual(headers?.get("x-raw-bin"), [Buffer.from([0, 1, 254, 255])]);
    assert.deepEqual(trailers?.get("reflect-x-token"), ["abc"]);
    assert.deepEqual(trailers?.get("reflect-x-raw-bin"), [Buffer.from([0, 1, 254, 255])]);
    echo.close();
  });

  test("grpc-js with gzip: compressed requests and responses, every call kind", async () => {
    const def = loader.loadSync(resolve(repoRoot, "cli/protos/echo.proto"), { defaults: true });
    const pkg = grpc.loadPackageDefinition(def) as Loaded;
    const echo = new pkg.echo.Echo(hostPort(), grpc.credentials.createInsecure(), {
      "grpc.default_compression_algorithm": 2, // gzip
    });
    const big = "z".repeat(20_000);
    const r = await unaryCall<{ message: string }>((cb) => echo.Say({ message: big }, cb));
    assert.equal(r.message, big);
    const got: string[] = [];
    for await (const m of echo.Repeat({ message: big, repeat: 3 })) got.push((m as { message: string }).message);
    assert.deepEqual(got, [big, big, big]);
    const chat = echo.Chat();
    const it = chat[Symbol.asyncIterator]();
    chat.write({ message: big });
    assert.equal((await it.next()).value.message, big.toUpperCase());
    chat.end();
    echo.close();
  });

  test("grpc-js: status code and message, unimplemented method and service", async () => {
    const { echo } = grpcClients();
    await assert.rejects(
      unaryCall((cb) => echo.Say({ message: "" }, cb)),
      (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.INVALID_ARGUMENT);
        assert.equal(e.details, "message: must not be empty");
        // The rich error: a google.rpc.Status holding a google.rpc.BadRequest, in grpc-status-details-bin.
        const [details] = e.metadata.get("grpc-status-details-bin");
        assert.ok(Buffer.isBuffer(details));
        const text = details.toString("latin1");
        assert.ok(text.includes("type.googleapis.com/google.rpc.BadRequest") && text.includes("must not be empty"), text);
        return true;
      },
    );
    const raw = new grpc.Client(hostPort(), grpc.credentials.createInsecure());
    const id = (b: Buffer) => b;
    for (const path of ["/echo.Echo/Nope", "/no.Such/Service"]) {
      await assert.rejects(
        unaryCall((cb) => raw.makeUnaryRequest(path, id, id, Buffer.alloc(0), cb)),
        (e: grpc.ServiceError) => e.code === grpc.status.UNIMPLEMENTED,
      );
    }
    raw.close();
    echo.close();
  });

  test("grpc-js: a deadline ends a waiting stream DEADLINE_EXCEEDED; cancel ends it CANCELLED", async () => {
    const { people } = grpcClients();
    const watch = people.WatchPeople({}, { deadline: Date.now() + 300 });
    await assert.rejects(
      (async () => {
        for await (const _ of watch) {
        }
      })(),
      (e: grpc.ServiceError) => e.code === grpc.status.DEADLINE_EXCEEDED,
    );
    // Cancelled after the first response: the server's handler sees the end.
    const { echo } = grpcClients();
    const chat = echo.Chat();
    chat.write({ message: "first" });
    const it = chat[Symbol.asyncIterator]();
    assert.equal((await it.next()).value.message, "FIRST");
    const ended = new Promise<grpc.StatusObject>((r) => chat.on("status", r));
    chat.cancel();
    assert.equal((await ended).code, grpc.status.CANCELLED);
    people.close();
    echo.close();
  });

  test("connect-node: Connect protocol, unary and server streaming, errors as Connect codes", async () => {
    const client = createClient(Echo, createConnectTransport({ baseUrl: base(), httpVersion: "1.1" }));
    assert.equal((await client.say({ message: "hello" })).message, "hello");
    const got: number[] = [];
    for await (const m of client.repeat({ message: "r", repeat: 3 })) got.push(m.index);
    assert.deepEqual(got, [0, 1, 2]);
    await assert.rejects(client.say({ message: "" }), (e: ConnectError) => {
      assert.equal(e.code, Code.InvalidArgument);
      // The details of the google.rpc.Status, as Connect carries them.
      const [d] = e.details as { type: string; value: Uint8Array }[];
      assert.equal(d?.type, "google.rpc.BadRequest");
      assert.ok(Buffer.from(d.value).toString("latin1").includes("must not be empty"));
      return true;
    });
    // Client and bidi streaming need HTTP/2.
    const h2 = createClient(Echo, createConnectTransport({ baseUrl: base(), httpVersion: "2" }));
    async function* words() {
      yield { message: "x" };
      yield { message: "y" };
    }
    assert.equal((await h2.collect(words())).message, "x y");
    const upper: string[] = [];
    for await (const m of h2.chat(words())) upper.push(m.message);
    assert.deepEqual(upper, ["X", "Y"]);
  });

  test("connect-node: JSON over Connect (unary, streaming) and gRPC-Web", async () => {
    for (const transport of [
      createConnectTransport({ baseUrl: base(), httpVersion: "1.1", useBinaryFormat: false }),
      createGrpcWebTransport({ baseUrl: base(), httpVersion: "1.1", useBinaryFormat: false }),
    ]) {
      const client = createClient(Echo, transport);
      assert.equal((await client.say({ message: "json" })).message, "json");
      const got: number[] = [];
      for await (const m of client.repeat({ message: "j", repeat: 2 })) got.push(m.index);
      assert.deepEqual(got, [0, 1]);
      // More than the server queues for one HTTP call (64 KiB): its sends
      // wait for the body to drain, and each message is converted to JSON
      // once, whether it waited or not.
      const long = "j".repeat(2000);
      let n = 0;
      for await (const m of client.repeat({ message: long, repeat: 200 })) {
        assert.equal(m.index, n++);
        assert.equal(m.message, long);
      }
      assert.equal(n, 200);
      await assert.rejects(client.say({ message: "" }), (e: ConnectError) => e.code === Code.InvalidArgument);
    }
    // A JSON body that is not the request type: INVALID_ARGUMENT, naming the field.
    const res = await fetch(`${base()}/echo.Echo/Say`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"mesage":"typo"}',
    });
    assert.equal(res.status, 400);
    assert.match(((await res.json()) as { message: string }).message, /mesage/);
  });

  test("connect-node: gRPC-Web (HTTP/1.1) and gRPC (HTTP/2) transports", async () => {
    const web = createClient(Echo, createGrpcWebTransport({ baseUrl: base(), httpVersion: "1.1" }));
    assert.equal((await web.say({ message: "web" })).message, "web");
    const got: string[] = [];
    for await (const m of web.repeat({ message: "w", repeat: 2 })) got.push(m.message);
    assert.deepEqual(got, ["w", "w"]);
    await assert.rejects(web.say({ message: "" }), (e: ConnectError) => e.code === Code.InvalidArgument);
    const g = createClient(People, createGrpcTransport({ baseUrl: base() }));
    await assert.rejects(
      (async () => {
        for await (const _ of g.watchPeople({}, { timeoutMs: 200 })) {
        }
      })(),
      (e: ConnectError) => e.code === Code.DeadlineExceeded,
    );
  });

  /** One raw HTTP/2 request; resolves with the response headers, body and trailers. */
  function h2request(
    headers: http2.OutgoingHttpHeaders,
    body: Uint8Array,
  ): Promise<{ headers: http2.IncomingHttpHeaders; body: Buffer; trailers: http2.IncomingHttpHeaders }> {
    return new Promise((ok, fail) => {
      const session = http2.connect(base());
      session.on("error", fail);
      const { te, ...rest } = headers;
      const req = session.request({ ":method": "POST", ...(te === "none" ? {} : { te: "trailers" }), ...rest });
      let head: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      req.on("response", (h) => {
        head = h;
      });
      req.on("trailers", (t) => {
        trailers = t;
      });
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        session.close();
        ok({ headers: head, body: Buffer.concat(chunks), trailers });
      });
      req.on("error", fail);
      req.end(body);
    });
  }

  const envelope = (flags: number, len: number, payload: Uint8Array = new Uint8Array()) => {
    const b = Buffer.alloc(5 + payload.length);
    b[0] = flags;
    b.writeUInt32BE(len, 1);
    b.set(payload, 5);
    return b;
  };
  const sayReq = toBinary(EchoRequestSchema, create(EchoRequestSchema, { message: "hi" }));
  const grpcHeaders = { ":path": "/echo.Echo/Say", "content-type": "application/grpc" };
  const statusOf = (r: { headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders }) =>
    Number(r.trailers["grpc-status"] ?? r.headers["grpc-status"]);

  test("hostile gRPC requests get a clear status, and the server goes on", async () => {
    // A length prefix past the limit: refused from the prefix, nothing buffered for it.
    let r = await h2request(grpcHeaders, envelope(0, 0xffff_fff0));
    assert.equal(statusOf(r), 8); // RESOURCE_EXHAUSTED
    // A message cut short.
    r = await h2request(grpcHeaders, envelope(0, 100, new Uint8Array(10)));
    assert.equal(statusOf(r), 13); // INTERNAL
    assert.match(String(r.trailers["grpc-message"] ?? r.headers["grpc-message"]), /truncated/);
    // A compressed flag with no grpc-encoding.
    r = await h2request(grpcHeaders, envelope(1, sayReq.length, sayReq));
    assert.equal(statusOf(r), 13);
    // An encoding the server does not speak.
    r = await h2request({ ...grpcHeaders, "grpc-encoding": "snappy" }, envelope(0, sayReq.length, sayReq));
    assert.equal(statusOf(r), 12); // UNIMPLEMENTED
    assert.equal(r.headers["grpc-accept-encoding"], "gzip,identity");
    // A gzip bomb: 1 MiB of zeros in ~1 KiB, past the 64 KiB limit once inflated.
    const bomb = gzipSync(Buffer.alloc(1 << 20));
    r = await h2request({ ...grpcHeaders, "grpc-encoding": "gzip" }, envelope(1, bomb.length, bomb));
    assert.equal(statusOf(r), 8); // RESOURCE_EXHAUSTED
    // A client that accepts gzip gets large replies compressed (flag 1), small ones not.
    const bigReq = toBinary(EchoRequestSchema, create(EchoRequestSchema, { message: "z".repeat(4000) }));
    r = await h2request({ ...grpcHeaders, "grpc-accept-encoding": "gzip" }, envelope(0, bigReq.length, bigReq));
    assert.equal(statusOf(r), 0);
    assert.equal(r.headers["grpc-encoding"], "gzip");
    assert.equal(r.body[0], 1);
    assert.ok(r.body.length < 200, `a compressed reply of ${r.body.length} bytes`);
    r = await h2request({ ...grpcHeaders, "grpc-accept-encoding": "gzip" }, envelope(0, sayReq.length, sayReq));
    assert.equal(r.body[0], 0);
    // A gzip flag over bytes that do not inflate.
    r = await h2request({ ...grpcHeaders, "grpc-encoding": "gzip" }, envelope(1, 4, Buffer.from("oops")));
    assert.equal(statusOf(r), 13);
    // No te: trailers.
    r = await h2request({ ...grpcHeaders, te: "none" }, envelope(0, sayReq.length, sayReq));
    assert.equal(r.headers[":status"], 400);
    // A malformed timeout.
    r = await h2request({ ...grpcHeaders, "grpc-timeout": "soon" }, envelope(0, sayReq.length, sayReq));
    assert.equal(statusOf(r), 3);
    // An unknown content type.
    r = await h2request({ ":path": "/echo.Echo/Say", "content-type": "text/plain" }, sayReq);
    assert.equal(r.headers[":status"], 415);
    // gRPC-Web text mode with bad base64.
    r = await h2request({ ":path": "/echo.Echo/Say", "content-type": "application/grpc-web-text" }, Buffer.from("!!!!"));
    assert.equal(statusOf(r), 13);
    // And a well-formed call still works.
    r = await h2request(grpcHeaders, envelope(0, sayReq.length, sayReq));
    assert.equal(statusOf(r), 0);
  });

  test("HTTP/2 rapid reset: a client that opens and resets streams in a loop is cut off; others are served", async () => {
    const session = http2.connect(base());
    const closed = new Promise<{ goaway: number | undefined }>((ok) => {
      let goaway: number | undefined;
      session.on("goaway", (code: number) => {
        goaway = code;
      });
      session.on("error", () => {});
      session.on("close", () => ok({ goaway }));
    });
    await new Promise<void>((ok) => session.on("connect", () => ok()));
    let opened = 0;
    // Bounded: stops once the server has cut the session.
    for (let i = 0; i < 5000 && !session.closed && !session.destroyed; i++) {
      try {
        const req = session.request({
          ":method": "POST",
          ":path": "/people.People/WatchPeople",
          "content-type": "application/grpc",
          te: "trailers",
        });
        req.on("error", () => {});
        req.close(http2.constants.NGHTTP2_CANCEL);
        opened++;
      } catch {
        break;
      }
      if (i % 50 === 49) await new Promise((r) => setImmediate(r));
    }
    const { goaway } = await closed;
    assert.ok(opened < 5000, `the server never cut the session (${opened} streams opened and reset)`);
    // ENHANCE_YOUR_CALM (11) from the server's HTTP/2 layer, or the socket closed.
    assert.ok(goaway === undefined || goaway === 11, `GOAWAY ${goaway}`);
    const r = await h2request(grpcHeaders, envelope(0, sayReq.length, sayReq));
    assert.equal(statusOf(r), 0);
  });

  test("gRPC-Web over HTTP/1.1: text mode answers in base64 with the 0x80 trailer frame", async () => {
    const body = Buffer.from(envelope(0, sayReq.length, sayReq).toString("base64"));
    const res = await fetch(`${base()}/echo.Echo/Say`, {
      method: "POST",
      headers: { "content-type": "application/grpc-web-text", "x-grpc-web": "1" },
      body,
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "application/grpc-web-text+proto");
    const text = await res.text();
    // Each frame is base64 of its own: decode group by group.
    const frames: Buffer[] = [];
    let rest = text;
    while (rest.length > 0) {
      const end = rest.indexOf("=") === -1 ? rest.length : rest.search(/=+/) + (rest.match(/=+/)?.[0].length ?? 0);
      frames.push(Buffer.from(rest.slice(0, end), "base64"));
      rest = rest.slice(end);
    }
    const all = Buffer.concat(frames);
    assert.equal(all[0], 0);
    const len = all.readUInt32BE(1);
    const trailer = all.subarray(5 + len);
    assert.equal(trailer[0], 0x80);
    assert.match(trailer.subarray(5).toString(), /grpc-status: 0\r\n/);
  });

  test("CORS: an allowed origin gets its preflight answered, a refused one 403 and no CORS headers", async () => {
    const preflight = (origin: string) =>
      new Promise<http.IncomingMessage>((ok, fail) => {
        const req = http.request(`${base()}/echo.Echo/Say`, {
          method: "OPTIONS",
          headers: {
            origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-grpc-web",
          },
        });
        req.on("response", (res) => {
          res.resume();
          ok(res);
        });
        req.on("error", fail);
        req.end();
      });
    const same = await preflight(`http://${hostPort()}`);
    assert.equal(same.statusCode, 204);
    assert.equal(same.headers["access-control-allow-origin"], `http://${hostPort()}`);
    assert.equal(same.headers["access-control-allow-headers"], "content-type,x-grpc-web");
    const refused = await preflight("https://evil.example");
    assert.equal(refused.statusCode, 403);
    assert.equal(refused.headers["access-control-allow-origin"], undefined);
  });

  test("HTTP/1.1 request smuggling shapes are refused", async () => {
    const { connect } = await import("node:net");
    const raw = (text: string) =>
      new Promise<string>((ok, fail) => {
        const url = new URL(base());
        const sock = connect(Number(url.port), url.hostname, () => sock.write(text));
        const chunks: Buffer[] = [];
        sock.on("data", (c) => chunks.push(c));
        sock.on("end", () => ok(Buffer.concat(chunks).toString()));
        sock.on("error", fail);
      });
    const twoLengths = await raw(
      "POST /echo.Echo/Say HTTP/1.1\r\nHost: x\r\nContent-Type: application/proto\r\nContent-Length: 4\r\nContent-Length: 9\r\nConnection: close\r\n\r\nabcd",
    );
    assert.match(twoLengths, /^HTTP\/1\.1 400/);
    const clAndChunked = await raw(
      "POST /echo.Echo/Say HTTP/1.1\r\nHost: x\r\nContent-Type: application/proto\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    );
    assert.match(clAndChunked, /^HTTP\/1\.1 400/);
  });

  const run = promisify(execFile);

  test("grpcio (Python): four call kinds, metadata, status, deadline, unimplemented", async () => {
    await run("bash", [resolve(repoRoot, "scripts/setup-python.sh")]);
    const { stdout } = await run("python3", [resolve(repoRoot, "scripts/grpcio_client.py"), hostPort()], {
      env: { ...process.env, PYTHONPATH: resolve(repoRoot, "target/pydeps") },
      timeout: 60_000,
    });
    assert.equal(
      stdout
        .trim()
        .split("\n")
        .filter((l) => l.startsWith("ok ")).length,
      10,
      stdout,
    );
  });

  test("buf curl: lists every service and method through reflection, and calls over Connect, gRPC and gRPC-Web", async () => {
    const buf = resolve(repoRoot, "clients/js/node_modules/.bin/buf");
    const url = `http://${hostPort()}`;
    const services = (await run(buf, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-services", url])).stdout;
    for (const s of ["echo.Echo", "people.People", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]) {
      assert.match(services, new RegExp(`^${s.replaceAll(".", "\\.")}$`, "m"));
    }
    const methods = (await run(buf, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-methods", url])).stdout;
    assert.match(methods, /^echo\.Echo\/Chat$/m);
    assert.match(methods, /^grpc\.reflection\.v1\.ServerReflection\/ServerReflectionInfo$/m);
    for (const protocol of ["connect", "grpc", "grpcweb"]) {
      const args = ["curl", "--protocol", protocol, "--http2-prior-knowledge", "-d", '{"message":"hi","repeat":2}'];
      const { stdout } = await run(buf, [...args, `${url}/echo.Echo/Repeat`]);
      const replies = stdout.split(/\n(?=\{)/).map((j) => JSON.parse(j));
      assert.deepEqual(replies, [{ message: "hi" }, { message: "hi", index: 1 }], protocol);
    }
  });
}
