/** Every call kind against the real server, raw and typed. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Echo } from "../src/gen/echo_pb.js";
import { People } from "../src/gen/people_pb.js";
import { ZrpcError } from "../src/index.js";
import { createClient } from "../src/typed.js";
import { echoReply, echoRequest, useServer } from "./server.js";

const ctx = useServer();
const req = echoRequest;
const reply = echoReply;

describe("raw calls", () => {
  test("unary", async () => {
    assert.equal(reply(await ctx.client.unary("echo.Echo/Say", req("hi"))).message, "hi");
  });

  test("server streaming", async () => {
    const got: number[] = [];
    for await (const m of ctx.client.serverStreaming("echo.Echo/Repeat", req("x", 50))) got.push(reply(m).index);
    assert.deepEqual(got, [...Array(50).keys()]);
  });

  test("client streaming", async () => {
    const out = await ctx.client.clientStreaming(
      "echo.Echo/Collect",
      ["a", "b", "c"].map((m) => req(m)),
    );
    assert.deepEqual([reply(out).message, reply(out).index], ["a b c", 3]);
  });

  test("bidi", async () => {
    const call = ctx.client.bidi("echo.Echo/Chat");
    const got: string[] = [];
    await call.send(req("one"));
    const it = call[Symbol.asyncIterator]();
    got.push(reply((await it.next()).value as Uint8Array).message);
    await call.send(req("two"));
    call.closeSend();
    for (let r = await it.next(); !r.done; r = await it.next()) got.push(reply(r.value).message);
    assert.deepEqual(got, ["ONE", "TWO"]);
    assert.equal((await call.status).code, "OK");
  });

  test("an error status is a ZrpcError with its code", async () => {
    await assert.rejects(ctx.client.unary("echo.Echo/Say", req("")), (e: unknown) => {
      assert.ok(e instanceof ZrpcError);
      assert.equal(e.code, "INVALID_ARGUMENT");
      assert.match(e.rawMessage, /must not be empty/);
      return true;
    });
  });

  test("an unknown method is UNIMPLEMENTED", async () => {
    await assert.rejects(ctx.client.unary("nope.Nope/Nope", req("x")), { code: "UNIMPLEMENTED" });
  });

  test("a streaming method opened as unary is UNIMPLEMENTED", async () => {
    await assert.rejects(ctx.client.unary("echo.Echo/Chat", req("x")), { code: "UNIMPLEMENTED" });
  });
});

describe("typed stubs", () => {
  test("echo: all four kinds", async () => {
    const echo = createClient(Echo, ctx.client);
    assert.equal((await echo.say({ message: "typed" })).message, "typed");
    const repeated: string[] = [];
    for await (const r of echo.repeat({ message: "r", repeat: 3 })) repeated.push(`${r.message}${r.index}`);
    assert.deepEqual(repeated, ["r0", "r1", "r2"]);
    const collected = await echo.collect([{ message: "x" }, { message: "y" }]);
    assert.equal(collected.message, "x y");
    const chat = echo.chat();
    await chat.send({ message: "hey" });
    chat.closeSend();
    const replies: string[] = [];
    for await (const r of chat) replies.push(r.message);
    assert.deepEqual(replies, ["HEY"]);
  });

  test("people: create, import, list, bidi create", async () => {
    const people = createClient(People, ctx.client);
    const tag = `t${Date.now()}`;
    const ada = await people.createPerson({ name: `Ada ${tag}`, email: "ada@example.com" });
    assert.ok(ada.id > 0);
    assert.equal(ada.label, "person");
    const summary = await people.importPeople([{ name: `Bob ${tag}` }, { name: `Cy ${tag}` }]);
    assert.equal(summary.created, 2);
    const names: string[] = [];
    for await (const p of people.listPeople({ nameContains: tag })) names.push(p.name);
    assert.deepEqual(names.sort(), [`Ada ${tag}`, `Bob ${tag}`, `Cy ${tag}`]);
    const live = people.createPeople();
    await live.send({ name: `Di ${tag}` });
    live.closeSend();
    const created: string[] = [];
    for await (const p of live) created.push(p.name);
    assert.deepEqual(created, [`Di ${tag}`]);
    await assert.rejects(people.createPerson({ name: "" }), { code: "INVALID_ARGUMENT" });
  });
});
