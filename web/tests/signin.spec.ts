// One-tap sign-in: a link printed by `mainloop login-link` signs a fresh browser in and
// lands on the chat, with the code gone from the address bar; the same link opened again
// (in another browser) is refused with the reason, and the token form stays.
import { test, expect } from "@playwright/test";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { ROOT, World, worldPerTest } from "./harness";

const world = worldPerTest("rules: []\n", { MAINLOOP_WORKERS__CLAUDE_COMMAND: "/bin/false", MAINLOOP_DISPATCHER__MAX_ATTEMPTS: "1" });
let w: World;
test.beforeEach(() => {
  w = world();
});

/** Runs `mainloop login-link` against the running server's data, as its owner would. */
function loginLink(): string {
  const bin = path.join(path.resolve(process.env.MAINLOOP_BIN_DIR ?? path.join(ROOT, "target", "debug")), "mainloop");
  const out = execFileSync(bin, ["login-link"], {
    encoding: "utf8",
    env: { PATH: process.env.PATH, HOME: w.data, MAINLOOP_DATA_DIR: w.data, MAINLOOP_LOG__FILTER: "warn", MAINLOOP_PUBLIC_URL: w.base },
  });
  const link = /(\S+\/signin#mll_\S+)/.exec(out)?.[1];
  if (!link) throw new Error(`no link in ${out}`);
  return link;
}

test("a sign-in link signs in once and then never again", async ({ page, browser }) => {
  const link = loginLink();
  expect(link.startsWith(`${w.base}/signin#`)).toBe(true);

  await page.goto(link);
  await expect(page.getByTestId("connection")).toHaveAttribute("data-state", "live");
  await expect(page).toHaveURL(`${w.base}/`);
  expect(await page.evaluate(() => location.hash)).toBe("");
  await expect(page.getByLabel("API token")).toHaveCount(0);

  // The same link elsewhere: refused, with what to do, and the token form still there.
  const other = await browser.newContext({ viewport: page.viewportSize() ?? undefined });
  const second = await other.newPage();
  await second.goto(link);
  await expect(second.getByTestId("link-error")).toContainText("already used");
  await expect(second.getByLabel("API token")).toBeVisible();
  expect(await second.evaluate(() => location.href)).not.toContain("mll_");
  // The token form still signs in.
  await second.getByLabel("API token").fill(w.token);
  await second.getByRole("button", { name: "Sign in" }).click();
  await expect(second.getByTestId("connection")).toHaveAttribute("data-state", "live");
  await other.close();
});
