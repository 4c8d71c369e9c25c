// Figures for the web app (run with `npm run bench`, not part of the test suite): bytes
// on first load, the time to render an inbox of 1,000 tasks, and a 50,000-entry
// transcript's load time, DOM size and scroll frame times. Printed, never asserted.
import { test, expect } from "@playwright/test";
import { writeFileSync, chmodSync } from "node:fs";
import path from "node:path";
import { World } from "./harness";

test.skip(!process.env.MAINLOOP_BENCH, "set MAINLOOP_BENCH=1 (npm run bench)");
test.setTimeout(900_000);

const BIN_DIR = path.resolve(process.env.MAINLOOP_BIN_DIR ?? path.join(import.meta.dirname, "../../target/release"));

function report(name: string, value: string): void {
  console.log(`${name.padEnd(44)} ${value}`);
}

test("first load transfer", async ({ page }) => {
  const w = new World();
  try {
    await w.startServer({ MAINLOOP_AUTH__ENABLED: "false" });
    const sizes: { url: string; bytes: number }[] = [];
    page.on("requestfinished", async (req) => {
      const s = await req.sizes();
      sizes.push({ url: req.url(), bytes: s.responseBodySize });
    });
    await page.goto(`${w.base}/`);
    await expect(page.getByTestId("connection")).toHaveAttribute("data-state", "live");
    const assets = sizes.filter((s) => /\.(js|css)$/.test(new URL(s.url).pathname));
    report("JS+CSS on first load (as sent, brotli)", `${(assets.reduce((a, s) => a + s.bytes, 0) / 1024).toFixed(1)} KiB in ${assets.length} files`);
    let gz = 0;
    for (const a of assets) {
      const res = await page.request.get(a.url, { headers: { "accept-encoding": "gzip" } });
      gz += Number(res.headers()["content-length"] ?? (await res.body()).length);
    }
    report("JS+CSS on first load (gzip)", `${(gz / 1024).toFixed(1)} KiB`);
    report("everything on first load (as sent)", `${(sizes.reduce((a, s) => a + s.bytes, 0) / 1024).toFixed(1)} KiB in ${sizes.length} requests`);
  } finally {
    await w.close();
  }
});

test("inbox of 1,000 tasks", async ({ page }) => {
  const w = new World();
  try {
    w.makeRepo();
    // An agent that never finishes: three tasks run, the rest queue behind them.
    const hang = path.join(w.dir, "hang.sh");
    writeFileSync(hang, "#!/bin/sh\nexec sleep 3600\n");
    chmodSync(hang, 0o755);
    await w.startServer({ MAINLOOP_AUTH__ENABLED: "false", MAINLOOP_WORKERS__CLAUDE_COMMAND: hang });
    const started = Date.now();
    for (let i = 0; i < 1000; i++) {
      await w.api(page, "POST", "/tasks", { description: `benchmark task ${i}: do something useful`, repo: w.repo, skip_plan: true });
    }
    report("created 1,000 tasks through the API", `${((Date.now() - started) / 1000).toFixed(1)} s`);
    for (let run = 0; run < 3; run++) {
      await page.goto("about:blank");
      await page.goto(`${w.base}/inbox`);
      await page.waitForFunction(() => document.querySelectorAll('[data-testid="running"] > li').length === 1000, null, { timeout: 120_000, polling: "raf" });
      const t = await page.evaluate(() => {
        const nav = performance.getEntriesByType("navigation")[0] as PerformanceNavigationTiming;
        const api = performance.getEntriesByType("resource").filter((r) => r.name.includes("/api/tasks") || r.name.includes("/api/inbox"));
        return { total: performance.now(), dcl: nav.domContentLoadedEventEnd, api: Math.max(...api.map((r) => r.responseEnd - r.startTime)), nodes: document.getElementsByTagName("*").length };
      });
      report(`inbox with 1,000 tasks rendered (run ${run + 1})`, `${t.total.toFixed(0)} ms after navigation (DOM ready ${t.dcl.toFixed(0)} ms, slowest API call ${t.api.toFixed(0)} ms, ${t.nodes} elements)`);
    }
  } finally {
    await w.close();
  }
});

test("a 50,000-entry transcript", async ({ page }) => {
  const w = new World();
  try {
    w.makeRepo();
    const agent = `${path.join(BIN_DIR, "mainloop-fake-agent")} --events 50000 --rate 0`;
    await w.startServer({ MAINLOOP_AUTH__ENABLED: "false", MAINLOOP_WORKERS__CLAUDE_COMMAND: agent });
    const task = await w.api<{ id: string }>(page, "POST", "/tasks", { description: "a very chatty task", repo: w.repo, skip_plan: true });
    await expect
      .poll(async () => {
        const t = await w.api<{ state: string; error: string | null }>(page, "GET", `/tasks/${task.id}`);
        const page2 = await w.api<{ next_after: number }>(page, "GET", `/tasks/${task.id}/transcript?after=49000&limit=1000`);
        return `${t.state} ${t.error ?? ""} ${page2.next_after}`;
      }, { timeout: 300_000 })
      .toMatch(/^\S+ +50000$/);
    const last = await w.api<{ next_after: number }>(page, "GET", `/tasks/${task.id}/transcript?after=49990&limit=1000`);
    await page.goto(`${w.base}/tasks/${task.id}`);
    const start = await page.evaluate(() => performance.now());
    await page.waitForFunction((n) => Number(document.querySelector('[data-testid="transcript"]')?.getAttribute("data-count")) >= n, last.next_after, { timeout: 300_000, polling: 100 });
    const loaded = await page.evaluate(() => performance.now());
    report("50k transcript: entries", `${last.next_after}`);
    report("50k transcript: all pages loaded", `${((loaded - start) / 1000).toFixed(2)} s after the page showed (${Math.ceil(last.next_after / 1000)} requests)`);
    const stats = await page.evaluate(async () => {
      const el = document.querySelector('[data-testid="transcript"]') as HTMLElement;
      const rows = el.querySelectorAll(".entry").length;
      const frames: number[] = [];
      let prev = performance.now();
      // Scroll from the bottom to the top in 200 steps, one per frame.
      for (let i = 200; i >= 0; i--) {
        el.scrollTop = (el.scrollHeight * i) / 200;
        await new Promise((r) => requestAnimationFrame(() => r(null)));
        const now = performance.now();
        frames.push(now - prev);
        prev = now;
      }
      frames.sort((a, b) => a - b);
      const heap = (performance as unknown as { memory?: { usedJSHeapSize: number } }).memory?.usedJSHeapSize ?? 0;
      return {
        rows,
        p50: frames[Math.floor(frames.length / 2)] ?? 0,
        p95: frames[Math.floor(frames.length * 0.95)] ?? 0,
        max: frames.at(-1) ?? 0,
        heap: heap / 1048576,
        elements: document.getElementsByTagName("*").length,
      };
    });
    report("50k transcript: rows in the DOM", `${stats.rows} (${stats.elements} elements on the page)`);
    report("50k transcript: scroll frame time", `p50 ${stats.p50.toFixed(1)} ms, p95 ${stats.p95.toFixed(1)} ms, max ${stats.max.toFixed(1)} ms`);
    report("50k transcript: JS heap", `${stats.heap.toFixed(0)} MiB`);
  } finally {
    await w.close();
  }
});
