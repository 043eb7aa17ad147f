/**
 * The people web app in real Chromium across a server killed (SIGKILL) and
 * restarted on the same port and database: the page shows that it is
 * reconnecting, its live list resumes after the last person it showed
 * (each person once, in order), and its calls work again.
 */

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { chromium } from "playwright-core";
import { startServer } from "./server.js";

const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

test("the page reconnects, shows it, and its live list stays exact", async () => {
  const dir = mkdtempSync(join(tmpdir(), "zrpc-web-"));
  const db = join(dir, "people.db");
  const first = await startServer(["--web", "--db", db]);
  const addr = new URL(first.url).host;
  const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ["--no-sandbox"] });
  let second: Awaited<ReturnType<typeof startServer>> | undefined;
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(first.url.replace(/^ws/, "http"));
    await page.waitForFunction(() => document.getElementById("watch-state")?.textContent === "watching");
    await page.waitForFunction(() => document.getElementById("status")?.textContent?.startsWith("connected"));
    const create = async (name: string) => {
      await page.fill("#create-name", name);
      await page.fill("#create-email", "");
      await page.click("#create-button");
      await page.waitForFunction((n) => document.getElementById("create-result")?.textContent?.startsWith(`created ${n} `), name);
    };
    await create("Before");
    await page.waitForFunction(() => document.getElementById("people")?.textContent?.includes("Before"));

    await first.kill();
    await page.waitForFunction(() => document.getElementById("status")?.textContent === "reconnecting…");
    second = await startServer(["--web", "--db", db], addr);
    await page.waitForFunction(() => document.getElementById("status")?.textContent?.startsWith("connected"), undefined, {
      timeout: 20_000,
    });
    await create("After");
    await page.waitForFunction(() => document.getElementById("people")?.textContent?.includes("After"), undefined, { timeout: 20_000 });
    const names = await page.locator("#people li").allTextContents();
    assert.deepEqual(
      names.map((n) => n.replace(/ \(#\d+\)$/, "")),
      ["Before", "After"],
      "each person once, in order",
    );
    assert.equal(await page.locator("#watch-state").textContent(), "watching");
    assert.deepEqual(errors, []);
  } catch (e) {
    const page = browser.contexts()[0]?.pages()[0];
    const at = async (id: string) => page?.locator(`#${id}`).textContent();
    throw new Error(
      `${String(e)}; status ${await at("status")}; watch ${await at("watch-state")}; people ${await at("people")}; create ${await at("create-result")}`,
    );
  } finally {
    await browser.close();
    await second?.stop();
    await first.kill().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
});
