// Starts what the browser tests run against: the fake Anthropic server with a script,
// a throwaway git repository, and the real `mainloop` binary with the real claude CLI
// as its worker agent. Everything lives in a temporary directory removed at the end.
import { type ChildProcess, spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { test, expect, type Page } from "@playwright/test";

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, "../..");
const BIN_DIR = path.resolve(process.env.MAINLOOP_BIN_DIR ?? path.join(ROOT, "target", "debug"));
const CLAUDE = path.join(ROOT, "node_modules", ".bin", "claude");

function bin(name: string): string {
  const p = path.join(BIN_DIR, name);
  if (!existsSync(p)) throw new Error(`${p} is missing: run \`cargo build --bins\` first`);
  return p;
}

/** Spawns a program and resolves with the first stdout line matching `re`. */
function spawnUntil(cmd: string, args: string[], env: NodeJS.ProcessEnv, re: RegExp): Promise<{ child: ChildProcess; match: RegExpMatchArray }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "inherit"] });
    const lines = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => reject(new Error(`${cmd} did not start in time`)), 30_000);
    lines.on("line", (line) => {
      const m = line.match(re);
      if (m) {
        clearTimeout(timer);
        resolve({ child, match: m });
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} exited with ${code} before it was ready`));
    });
  });
}

function stop(child: ChildProcess | null, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill(signal);
    setTimeout(() => child.kill("SIGKILL"), 10_000).unref();
  });
}

/** The one process a `faketime` wrapper started (it forks, then waits for it). */
function wrapped(wrapper: ChildProcess): number | null {
  const pid = wrapper.pid;
  if (pid === undefined) return null;
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
  return children.length === 1 ? Number(children[0]) : null;
}

/** Signals a process that may have exited already. */
function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Gone already.
  }
}

export function git(dir: string, ...args: string[]): string {
  return execFileSync("git", ["-c", "user.name=t", "-c", "user.email=t@t", ...args], { cwd: dir, encoding: "utf8" });
}

export class World {
  readonly dir = mkdtempSync(path.join(tmpdir(), "mainloop-web-"));
  readonly data = path.join(this.dir, "data");
  readonly repo = path.join(this.dir, "repo");
  base = "";
  token = "";
  private fake: ChildProcess | null = null;
  private fakeUrl = "";
  private server: ChildProcess | null = null;
  /** The server's own pid (under `faketime`, the wrapper's child). */
  private serverPid: number | null = null;
  private port = 0;

  /** A repository with one commit, for workers to branch from. */
  makeRepo(): string {
    execFileSync("mkdir", ["-p", this.repo]);
    git(this.repo, "init", "-q", "-b", "main");
    writeFileSync(path.join(this.repo, "README.md"), "# demo\n");
    git(this.repo, "add", ".");
    git(this.repo, "commit", "-q", "-m", "init");
    return this.repo;
  }

  async startFake(script: string): Promise<void> {
    const file = path.join(this.dir, "script.yaml");
    writeFileSync(file, script.replaceAll("{{repo}}", this.repo));
    const { child, match } = await spawnUntil(bin("mainloop-fake-anthropic"), ["--script", file], { PATH: process.env.PATH, RUST_LOG: "warn" }, /^listening on (\S+)/);
    this.fake = child;
    this.fakeUrl = match[1] ?? "";
  }

  /** Starts (or restarts, on the same port) the server; a variable `undefined` in
   * `extraEnv` is left out of its environment. With `faketime` (a date and time, UTC, as
   * `faketime` reads it), its clock starts there and ticks (libfaketime's wrapper). */
  async startServer(extraEnv: Record<string, string | undefined> = {}, options: { faketime?: string } = {}): Promise<void> {
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: this.data,
      MAINLOOP_DATA_DIR: this.data,
      MAINLOOP_LOG__FILTER: "warn",
      MAINLOOP_DISPATCHER__BACKOFF_BASE_MS: "50",
      MAINLOOP_DISPATCHER__BACKOFF_MAX_MS: "200",
      MAINLOOP_WORKERS__CLAUDE_COMMAND: CLAUDE,
      DISABLE_TELEMETRY: "1",
      DISABLE_AUTOUPDATER: "1",
      DISABLE_ERROR_REPORTING: "1",
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
      ...(this.fakeUrl ? { ANTHROPIC_BASE_URL: this.fakeUrl, ANTHROPIC_API_KEY: "sk-test-key" } : {}),
      ...extraEnv,
    };
    const listen = `127.0.0.1:${this.port}`;
    const args = ["serve", "--listen", listen];
    const { child, match } = options.faketime
      ? await spawnUntil("faketime", [options.faketime, bin("mainloop"), ...args], { ...env, TZ: "UTC", FAKETIME_DONT_FAKE_MONOTONIC: "1" }, /^mainloop listening on (http:\/\/\S+)/)
      : await spawnUntil(bin("mainloop"), args, env, /^mainloop listening on (http:\/\/\S+)/);
    this.server = child;
    // The wrapper forks the server and waits for it, but passes no signal on.
    this.serverPid = options.faketime ? wrapped(child) : (child.pid ?? null);
    this.base = match[1] ?? "";
    this.port = Number(new URL(this.base).port);
    this.token = readFileSync(path.join(this.data, "owner.token"), "utf8").trim();
  }

  /** Stops the server as an operator would (SIGTERM), waiting until it has exited. */
  async stopServer(): Promise<void> {
    await this.endServer("SIGTERM");
  }

  /** Kills the server outright, as a crash would. */
  async killServer(): Promise<void> {
    await this.endServer("SIGKILL");
  }

  /** Sends `sig` to the server itself (not a `faketime` wrapper around it) and waits
   * until it has exited; a SIGTERM unanswered for 10 s becomes a SIGKILL. */
  private async endServer(sig: NodeJS.Signals): Promise<void> {
    const child = this.server;
    const pid = this.serverPid;
    if (child && pid !== null && pid !== child.pid && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      signal(pid, sig);
      const timer = setTimeout(() => signal(pid, "SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    } else {
      await stop(child, sig);
    }
    this.server = null;
    this.serverPid = null;
  }

  async close(): Promise<void> {
    await this.stopServer();
    await stop(this.fake);
    // An agent the server stopped may still be saving its session in its private home
    // for a moment after the server exited; on a loaded machine, a moment is long.
    rmSync(this.dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 200 });
  }

  /** Signs the page's browser context in through the API (the login form has its own test). */
  async signIn(page: Page): Promise<void> {
    const res = await page.request.post(`${this.base}/api/auth/login`, { data: { token: this.token }, headers: { origin: this.base } });
    if (!res.ok()) throw new Error(`login failed: ${res.status()} ${await res.text()}`);
  }

  /** Signs in, opens `at` and waits for the live event stream. */
  async open(page: Page, at = "/"): Promise<void> {
    await this.signIn(page);
    await page.goto(`${this.base}${at}`);
    await expect(page.getByTestId("connection")).toHaveAttribute("data-state", "live");
  }

  async api<T>(page: Page, method: "GET" | "POST" | "PUT", p: string, data?: unknown): Promise<T> {
    const res = await page.request.fetch(`${this.base}/api${p}`, {
      method,
      data,
      headers: { authorization: `Bearer ${this.token}` },
    });
    if (!res.ok()) throw new Error(`${method} ${p}: ${res.status()} ${await res.text()}`);
    return (await res.json()) as T;
  }
}

/** Where screenshots of the main screens go (CI keeps them as artifacts). */
export function shot(page: Page, project: string, name: string): Promise<Buffer> {
  return page.screenshot({ path: path.join(here, "..", "test-results", "screenshots", `${project}-${name}.png`), fullPage: false });
}

/**
 * A fresh world for each test in the file: a repository, the fake model with `script`,
 * the server (with `env`); closed after the test. Returns the current test's world.
 */
export function worldPerTest(script: string, env: Record<string, string | undefined> = {}): () => World {
  let w: World | undefined;
  test.beforeEach(async () => {
    w = new World();
    w.makeRepo();
    await w.startFake(script);
    await w.startServer(env);
  });
  test.afterEach(async () => {
    await w?.close();
    w = undefined;
  });
  return () => {
    if (!w) throw new Error("no world outside a test");
    return w;
  };
}
