// A task's live preview on the phone: the repository's `.mainloop.toml` declares
// `preview = "node server.js"`, a tiny HTTP and WebSocket server on `$PORT`; once the
// task has its worktree, "Open preview" starts it and opens it in a new tab through
// mainloop's own address (the task's host), where the page loads and its WebSocket
// echoes. Another user can neither start it nor see it.
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { test, expect } from "@playwright/test";
import { ROOT, World, git, shot, worldPerTest } from "./harness";

const SCRIPT = String.raw`
rules:
  - name: write
    match: {user_contains: "add the page", tool_offered: Bash}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'hello\\n' > page.txt", description: "Write the page"}}
  - name: done
    match: {tool_result_for: Bash}
    reply: [{text: "Done."}]
`;

// No packages: the WebSocket handshake and one small text frame, by hand.
const SERVER = String.raw`
const http = require("http");
const crypto = require("crypto");
const page = '<!doctype html><meta name="viewport" content="width=device-width"><title>The preview</title>' +
  '<p id="hello">hello from the preview</p><p id="echo">waiting</p><script>' +
  'const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/hot");' +
  'ws.onopen = () => ws.send("ping through mainloop");' +
  'ws.onmessage = (e) => { document.getElementById("echo").textContent = "echo: " + e.data; };' +
  'ws.onerror = () => { document.getElementById("echo").textContent = "websocket failed"; };' +
  '</script>';
const server = http.createServer((req, res) => {
  res.setHeader("content-type", "text/html; charset=utf-8");
  res.end(page);
});
server.on("upgrade", (req, socket) => {
  const accept = crypto.createHash("sha1").update(req.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
  socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n");
  socket.on("data", (buf) => {
    if ((buf[0] & 0x0f) !== 1) return;
    const len = buf[1] & 0x7f;
    const mask = buf.subarray(2, 6);
    const data = Buffer.from(buf.subarray(6, 6 + len).map((b, i) => b ^ mask[i % 4]));
    socket.write(Buffer.concat([Buffer.from([0x81, data.length]), data]));
  });
});
server.listen(Number(process.env.PORT), "127.0.0.1");
`;

const BIN = path.join(path.resolve(process.env.MAINLOOP_BIN_DIR ?? path.join(ROOT, "target", "debug")), "mainloop");

const world = worldPerTest(SCRIPT);
let w: World;
test.beforeEach(() => {
  w = world();
});

test("the owner opens a task's live preview through mainloop; another user cannot", async ({ page, browser }, info) => {
  test.skip(info.project.name !== "phone", "previews are opened from the phone");
  test.setTimeout(180_000);
  writeFileSync(path.join(w.repo, "server.js"), SERVER);
  writeFileSync(path.join(w.repo, ".mainloop.toml"), 'ports = 1\npreview = "node server.js"\n');
  git(w.repo, "add", ".");
  git(w.repo, "commit", "-q", "-m", "a preview");

  await w.open(page);
  const task = await w.api<{ id: string }>(page, "POST", "/tasks", { description: "add the page", repo: w.repo, skip_plan: true });
  await page.goto(`${w.base}/tasks/${task.id}`);
  await expect(page.getByTestId("review")).toBeVisible({ timeout: 120_000 });

  const opened = page.waitForEvent("popup");
  await page.getByRole("button", { name: "Open preview" }).click();
  const preview = await opened;
  await expect(preview.locator("#hello")).toHaveText("hello from the preview", { timeout: 60_000 });
  const at = new URL(preview.url());
  expect(at.host).toBe(`t-${task.id.replaceAll("-", "").slice(-8)}.localhost:${new URL(w.base).port}`);
  expect(at.search).toBe("");
  await expect(preview.locator("#echo")).toHaveText("echo: ping through mainloop");
  await shot(preview, info.project.name, "preview");
  await expect(page.getByRole("button", { name: "Open preview" })).toBeEnabled();

  // The review inbox item offers it too.
  await page.goto(`${w.base}/inbox`);
  await expect(page.getByTestId("needs-you").getByRole("button", { name: "Open preview" })).toBeVisible();

  // Another user: cannot start it, and its address refuses them.
  const out = execFileSync(BIN, ["user", "add", "bob"], {
    env: { PATH: process.env.PATH, HOME: w.data, MAINLOOP_DATA_DIR: w.data, MAINLOOP_LOG__FILTER: "warn" },
    encoding: "utf8",
  });
  const bob = out.trim().split("\n").pop() ?? "";
  const other = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const bobPage = await other.newPage();
  const start = await bobPage.request.post(`${w.base}/api/tasks/${task.id}/preview`, { headers: { authorization: `Bearer ${bob}` } });
  expect(start.status()).toBe(404);
  const login = await bobPage.request.post(`${w.base}/api/auth/login`, { data: { token: bob }, headers: { origin: w.base } });
  expect(login.ok()).toBe(true);
  const refused = await bobPage.goto(at.href);
  expect(refused?.status()).toBe(403);
  await expect(bobPage.getByText("Only the task's owner can see this preview.")).toBeVisible();
  await other.close();
});
