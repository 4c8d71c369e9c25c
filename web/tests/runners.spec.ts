// Runners in Settings, with a real `mainloop runner` process: adding one shows its token
// once inside the command that starts it; the runner started with that command is listed
// as connected with its label and agent; revoking it disconnects it at once (the
// process exits 3) and the list says so.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { test, expect } from "@playwright/test";
import { ROOT, World, shot, worldPerTest } from "./harness";

const BIN = path.join(path.resolve(process.env.MAINLOOP_BIN_DIR ?? path.join(ROOT, "target", "debug")), "mainloop");

const world = worldPerTest("rules: []\n");
let w: World;
let runner: ChildProcess | null = null;
test.beforeEach(() => {
  w = world();
});
test.afterEach(() => {
  runner?.kill("SIGKILL");
  runner = null;
});

test("a runner is added, connects with the shown command, and is revoked", async ({ page }, info) => {
  await w.open(page);
  await page.goto(`${w.base}/settings`);
  const card = page.getByTestId("runners");
  await expect(card.getByText("No runners yet.")).toBeVisible();
  await card.getByLabel("Runner name").fill(`box-${info.project.name}`);
  await card.getByRole("button", { name: "Add runner" }).click();
  const command = (await card.getByTestId("runner-command").textContent()) ?? "";
  const token = /MAINLOOP_RUNNER_TOKEN=(\S+) mainloop runner --server (\S+)/.exec(command);
  expect(token?.[2]).toBe(new URL(w.base).origin);
  await expect(card.getByTestId("runner-state")).toHaveText("offline");

  // The runner's machine: a home of its own and a `claude` on its PATH.
  const machine = path.join(w.dir, "machine");
  mkdirSync(path.join(machine, "bin"), { recursive: true });
  mkdirSync(path.join(machine, "home"), { recursive: true });
  writeFileSync(path.join(machine, "bin", "claude"), "#!/bin/sh\necho '9.9.9 (Claude Code)'\n");
  chmodSync(path.join(machine, "bin", "claude"), 0o755);
  runner = spawn(BIN, ["runner", "--server", token?.[2] ?? "", "--label", "gpu"], {
    env: { PATH: path.join(machine, "bin"), HOME: path.join(machine, "home"), MAINLOOP_RUNNER_TOKEN: token?.[1] ?? "" },
    stdio: "ignore",
  });
  const exited = new Promise<number | null>((resolve) => runner?.on("exit", (code) => resolve(code)));

  await expect(async () => {
    await page.reload();
    await expect(page.getByTestId("runner-state")).toHaveText("connected", { timeout: 1_000 });
  }).toPass({ timeout: 30_000 });
  await expect(page.getByTestId("runner")).toContainText("labels gpu");
  await expect(page.getByTestId("runner")).toContainText("agents claude");
  await shot(page, info.project.name, "settings-runners");

  await page.getByTestId("runner").getByRole("button", { name: "Revoke…" }).click();
  await page.getByRole("button", { name: "Yes, revoke the token" }).click();
  await expect(page.getByTestId("runner-state")).toHaveText("revoked");
  expect(await exited).toBe(3);
});
