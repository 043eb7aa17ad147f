/**
 * The people web app: one reconnecting channel, every call kind, typed
 * stubs; the live list is a resumable stream, which the channel opens
 * again after the last person shown when a connection is lost. Served by `zrpc serve --web` (bundled into
 * cli/web/app.js).
 */

import { Channel } from "../src/channel.js";
import { Echo } from "../src/gen/echo_pb.js";
import { People, type Person } from "../src/gen/people_pb.js";
import { ZrpcError } from "../src/index.js";
import { createClient } from "../src/typed.js";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const say = (id: string, text: string, error = false) => {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle("error", error);
};
const describe = (e: unknown) => (e instanceof ZrpcError ? e.message : String(e));

const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
const channel = new Channel(url);
const people = createClient(People, channel);
const echo = createClient(Echo, channel);
channel.onStateChange((s) => {
  const ready = s === "ready";
  say("status", ready ? `connected to ${url}` : s === "closed" ? "closed" : "reconnecting…", !ready);
  $("status").classList.toggle("ok", ready);
});

// Unary.
$("create").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const p = await people.createPerson({
      name: $<HTMLInputElement>("create-name").value,
      email: $<HTMLInputElement>("create-email").value,
    });
    say("create-result", `created ${p.name} with id ${p.id}`);
    $<HTMLInputElement>("create-name").value = "";
  } catch (e) {
    say("create-result", describe(e), true);
  }
});

// Client streaming: the names go one message each, paced by the server's credit.
$("import").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const names = $<HTMLTextAreaElement>("import-names")
    .value.split("\n")
    .map((n) => n.trim())
    .filter((n) => n.length > 0);
  try {
    const summary = await people.importPeople(names.map((name) => ({ name })));
    say("import-result", `created ${summary.created}: ids ${summary.ids.join(", ")}`);
  } catch (e) {
    say("import-result", describe(e), true);
  }
});

// Server streaming, live, with a Cancel button (AbortSignal → RESET CANCELLED).
// WatchPeople stamps resume cursors: when a connection is lost or drained,
// the channel opens the stream again after the last person shown (each
// person once, in order), and this loop just goes on.
let watching: AbortController | undefined;
channel.onStateChange((s) => {
  if (watching !== undefined && !watching.signal.aborted) say("watch-state", s === "ready" ? "watching" : "resuming");
});
async function watch() {
  const abort = new AbortController();
  watching = abort;
  $<HTMLButtonElement>("watch-cancel").disabled = false;
  $<HTMLButtonElement>("watch-start").disabled = true;
  $("people").replaceChildren();
  say("watch-state", "watching");
  try {
    for await (const p of people.watchPeople({}, { signal: abort.signal })) add(p);
    say("watch-state", "ended");
  } catch (e) {
    const cancelled = e instanceof ZrpcError && e.code === "CANCELLED";
    say("watch-state", cancelled ? "cancelled" : describe(e), !cancelled);
  }
  if (watching === abort) watching = undefined;
  $<HTMLButtonElement>("watch-cancel").disabled = true;
  $<HTMLButtonElement>("watch-start").disabled = false;
}
function add(p: Person) {
  const li = document.createElement("li");
  li.textContent = `${p.name}${p.email ? ` <${p.email}>` : ""} (#${p.id})`;
  $("people").append(li);
}
$("watch-cancel").addEventListener("click", () => watching?.abort());
$("watch-start").addEventListener("click", () => void watch());
void watch();

// Bidirectional: a chat call opened by the first message and ended
// (half-close) when its connection drains or is lost; the next message opens
// one on the next connection. A page never holds a server's drain open.
type Chat = ReturnType<typeof echo.chat>;
let chat: Chat | undefined;
function chatLine(text: string, error = false) {
  const li = document.createElement("li");
  li.textContent = text;
  li.classList.toggle("error", error);
  $("chat-log").append(li);
}
function openChat(): Chat {
  const c = echo.chat();
  chat = c;
  void (async () => {
    try {
      for await (const r of c) chatLine(r.message);
    } catch (e) {
      if (chat === c) chatLine(`chat ended: ${describe(e)}`, true);
    }
    if (chat === c) chat = undefined;
  })();
  return c;
}
channel.onStateChange((s) => {
  if (s !== "ready" && chat !== undefined) {
    chat.closeSend();
    chat = undefined;
  }
});
$("chat").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $<HTMLInputElement>("chat-input");
  const message = input.value;
  input.value = "";
  await (chat ?? openChat()).send({ message });
});

// A deadline: a chat that never sends ends with DEADLINE_EXCEEDED.
$("deadline-button").addEventListener("click", async () => {
  say("deadline-result", "waiting…");
  const call = echo.chat({ timeoutMs: 200 });
  const status = await call.status;
  say("deadline-result", status.code, status.code !== "OK");
});
