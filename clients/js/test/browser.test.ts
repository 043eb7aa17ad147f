/**
 * The people web app in real Chromium (headless, Debian's package driven by
 * playwright-core): all four call kinds, a cancel the server sees, a
 * deadline; a screenshot is saved under target/browser/ for humans.
 */

import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { after, before, test } from "node:test";
import { type Browser, chromium, type Page } from "playwright-core";
import { type RunningServer, repoRoot, startServer, until } from "./server.js";

/** Chromium from the system (the project's scripts install Debian's package); `CHROMIUM` overrides. */
export const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

let server: RunningServer;
let browser: Browser;
let page: Page;
const pageErrors: string[] = [];

before(async () => {
  assert.ok(existsSync(chromiumPath), `no Chromium at ${chromiumPath}: run scripts/test-all.sh (installs it) or set CHROMIUM`);
  server = await startServer(["--web"]);
  browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ["--no-sandbox"] });
  page = await browser.newPage();
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(server.url.replace(/^ws/, "http"));
  await page.waitForFunction(() => document.getElementById("status")?.textContent?.startsWith("connected"));
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const text = async (id: string) => (await page.locator(`#${id}`).textContent()) ?? "";

test("the page performs every call kind, cancels a stream and meets a deadline", async () => {
  const tag = `w${Date.now()}`;
  // Server streaming (live): the list is being watched from the start.
  await page.waitForFunction(() => document.getElementById("watch-state")?.textContent === "watching");

  // Unary.
  await page.fill("#create-name", `Ada ${tag}`);
  await page.fill("#create-email", "ada@example.com");
  await page.click("#create-button");
  await page.waitForFunction(() => document.getElementById("create-result")?.textContent?.startsWith("created"));
  assert.match(await text("create-result"), new RegExp(`created Ada ${tag} with id \\d+`));

  // Client streaming.
  await page.fill("#import-names", `Bob ${tag}\nCy ${tag}\n`);
  await page.click("#import-button");
  await page.waitForFunction(() => document.getElementById("import-result")?.textContent?.startsWith("created"));
  assert.match(await text("import-result"), /^created 2: ids \d+, \d+$/);

  // The live list filled as people were created.
  await page.waitForFunction((t) => document.getElementById("people")?.textContent?.includes(`Cy ${t}`), tag);
  const people = await text("people");
  for (const name of ["Ada", "Bob", "Cy"]) assert.ok(people.includes(`${name} ${tag}`), people);

  // Bidirectional.
  await page.fill("#chat-input", "hello from chromium");
  await page.click("#chat-send");
  await page.waitForFunction(() => document.getElementById("chat-log")?.textContent?.includes("HELLO FROM CHROMIUM"));

  // Cancel the running stream: the page shows it, and the server saw it.
  await page.click("#watch-cancel");
  await page.waitForFunction(() => document.getElementById("watch-state")?.textContent === "cancelled");
  await until(() => server.log.some((l) => /WatchPeople.*CANCELLED/i.test(l)), 10_000, "the server's log of the cancelled stream");

  // A deadline.
  await page.click("#deadline-button");
  await page.waitForFunction(() => document.getElementById("deadline-result")?.textContent === "DEADLINE_EXCEEDED");

  // Watching again works on the same connection.
  await page.click("#watch-start");
  await page.waitForFunction((t) => document.getElementById("people")?.textContent?.includes(`Ada ${t}`), tag);

  const dir = resolve(repoRoot, "target/browser");
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: resolve(dir, "people.png"), fullPage: true });
  assert.deepEqual(pageErrors, []);
});

test("a drain: the page says it is reconnecting and resumes its stream, without an error", async () => {
  // A server of its own (a drain past 200 ms of grace would close what is left).
  const draining = await startServer(["--web", "--drain-grace-ms", "200"]);
  const errors: string[] = [];
  const p = await browser.newPage();
  p.on("pageerror", (e) => errors.push(String(e)));
  await p.goto(draining.url.replace(/^ws/, "http"));
  // The live list is a resumable stream: the drain ends it at once.
  await p.waitForFunction(() => document.getElementById("watch-state")?.textContent === "watching");
  assert.equal(await draining.stop(), 0);
  // The server is gone: the page's channel tries again, and says so.
  await p.waitForFunction(() => document.getElementById("status")?.textContent === "reconnecting…");
  await p.waitForFunction(() => document.getElementById("watch-state")?.textContent === "resuming");
  // Let any error thrown while the page answered the close surface.
  await p.evaluate(() => new Promise((r) => setTimeout(r, 50)));
  assert.deepEqual(errors, []);
  await p.close();
});
