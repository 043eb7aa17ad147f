/**
 * The people web app in real Chromium during scripts/rolling-restart.sh:
 * PAGES pages open the app through nginx, watch the live list and create a
 * person every few hundred milliseconds (unary calls through the page's
 * Channel) while the instances behind nginx restart one after another.
 *
 *   node dist-test/test/rolling-browser.js URL PAGES [steady]
 *
 * (`steady`: the run has no restart, so no page is expected to reconnect;
 * the pages then only load the machine as in the run with restarts.)
 *
 * Prints `ready` once every page is connected and watching. On a first
 * line on stdin the pages stop creating, and it prints `stopped`; the
 * second line is the path of a file of the person ids PostgreSQL then
 * holds, in order. It waits (bounded) for every page's list to
 * catch up, and fails unless each page lists exactly those ids, each once,
 * in order, no create of a page failed, and each page showed its
 * reconnecting state. Prints the reconnect times (the page's status leaving
 * "connected" → its first create answered after it is connected again).
 */

import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { chromium, type Page } from "playwright-core";

/** Chromium from the system (scripts/test-all.sh installs Debian's package); `CHROMIUM` overrides. */
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

const [url, pagesArg, mode] = process.argv.slice(2);
const restarts = mode !== "steady";
if (url === undefined) throw new Error("usage: rolling-browser.js URL [PAGES]");
const httpUrl = url.replace(/^ws/, "http");
const pages = Number(pagesArg ?? 3);

/** What a page logs: each change of its status, live-list state and create result, with the page's clock. */
type Change = { t: number; id: string; text: string; error: boolean };

declare global {
  interface Window {
    __changes: Change[];
  }
}

const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ["--no-sandbox"] });
const opened: Page[] = [];
const errors: string[] = [];
for (let i = 0; i < pages; i++) {
  const p = await browser.newPage();
  p.on("pageerror", (e) => errors.push(`page ${i}: ${String(e)}`));
  await p.goto(httpUrl);
  await p.waitForFunction(() => document.getElementById("status")?.textContent?.startsWith("connected"));
  await p.waitForFunction(() => document.getElementById("watch-state")?.textContent === "watching");
  await p.evaluate(() => {
    window.__changes = [];
    for (const id of ["status", "watch-state", "create-result"]) {
      const el = document.getElementById(id) as HTMLElement;
      new MutationObserver(() =>
        window.__changes.push({ t: performance.now(), id, text: el.textContent ?? "", error: el.classList.contains("error") }),
      ).observe(el, { childList: true, characterData: true, subtree: true });
    }
  });
  opened.push(p);
}

// Each page creates people until the load is over: the form, as a user would.
let loadOver = false;
const creates = opened.map(async (p, i) => {
  let n = 0;
  while (!loadOver) {
    const name = `web-${i}-${n++}`;
    await p.fill("#create-name", name);
    await p.click("#create-button");
    await p.waitForFunction(
      (name) => {
        const r = document.getElementById("create-result");
        return r !== null && (r.textContent?.includes(name) === true || r.classList.contains("error"));
      },
      name,
      { timeout: 60_000 },
    );
    await p.waitForTimeout(150); // the pace of a user, not a synchronisation
  }
  return n;
});

console.log("ready");
const input = createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
await lines.next();
loadOver = true;
const made = await Promise.all(creates);
console.log("stopped");
const idsFile = (await lines.next()).value as string;
input.close();
const ids = readFileSync(idsFile.trim(), "utf8")
  .split("\n")
  .filter((l) => l.length > 0)
  .map(Number);

const problems: string[] = [...errors];
const reconnects: number[] = [];
for (const [i, p] of opened.entries()) {
  // Every person, including the last ones created, reaches the list.
  await p
    .waitForFunction((n) => (document.getElementById("people")?.children.length ?? 0) >= n, ids.length, { timeout: 30_000 })
    .catch(() => {});
  const listed = await p.$$eval("#people li", (lis) => lis.map((li) => Number(/\(#(\d+)\)$/.exec(li.textContent ?? "")?.[1])));
  if (JSON.stringify(listed) !== JSON.stringify(ids)) {
    const once = new Set(listed);
    const missing = ids.filter((id) => !once.has(id));
    const twice = listed.length - once.size;
    problems.push(
      `page ${i}: lists ${listed.length} people, PostgreSQL holds ${ids.length}; missing ${missing.slice(0, 5)}; ${twice} twice`,
    );
  }
  const changes = await p.evaluate(() => window.__changes);
  const failed = changes.filter((c) => c.id === "create-result" && c.error);
  if (failed.length > 0) problems.push(`page ${i}: ${failed.length} creates failed: ${failed[0]?.text}`);
  const status = changes.filter((c) => c.id === "status");
  if (restarts && !status.some((c) => c.text === "reconnecting…")) problems.push(`page ${i}: never showed its reconnecting state`);
  // Reconnect time: the status leaves "connected" → the first create answered once connected again.
  for (const [k, c] of status.entries()) {
    // The pages are connected when the log starts.
    if (c.text !== "reconnecting…" || (k > 0 && status[k - 1]?.text.startsWith("connected") !== true)) continue;
    const back = status.slice(k).find((s) => s.text.startsWith("connected"));
    const answered = back && changes.find((s) => s.t >= back.t && s.id === "create-result" && s.text.startsWith("created"));
    if (answered !== undefined) reconnects.push(answered.t - c.t);
  }
  const states = [...new Set(changes.filter((c) => c.id === "watch-state").map((c) => c.text))];
  console.log(`  page ${i}: ${listed.length} people listed, ${made[i]} created by the page, live list states ${states.join(", ")}`);
}
await browser.close();
reconnects.sort((a, b) => a - b);
const pct = (q: number) => reconnects[Math.min(reconnects.length - 1, Math.floor(q * reconnects.length))]?.toFixed(0);
console.log(
  restarts
    ? `  reconnects: ${reconnects.length}; drain → first call answered on the new connection: p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms (all: ${reconnects.map((r) => r.toFixed(0)).join(", ")})`
    : `  reconnects: ${reconnects.length} (none expected)`,
);
if (problems.length > 0) {
  console.error(`FAIL (Chromium):\n  ${problems.join("\n  ")}`);
  process.exit(1);
}
console.log(`Chromium: ${pages} pages kept their live lists exact (${ids.length} people each), no create failed`);
