// Settings says which model provider answers the chat, and when none can, what to do.
import { test, expect, type Page } from "@playwright/test";
import AxeBuilder from "@axe-core/playwright";
import { World, shot } from "./harness";

let w: World;

test.beforeEach(() => {
  w = new World();
});

test.afterEach(async () => {
  await w.close();
});

async function openSettings(page: Page): Promise<void> {
  await w.signIn(page);
  await page.goto(`${w.base}/settings`);
  await expect(page.getByTestId("connection")).toHaveAttribute("data-state", "live");
}

test("settings shows the provider that answers the chat", async ({ page }) => {
  // The fake model stands in for the Anthropic API, with a key configured.
  await w.startFake("rules: []\n");
  await w.startServer({ MAINLOOP_WORKERS__CLAUDE_COMMAND: "/bin/false" });
  await openSettings(page);
  const model = page.getByRole("region", { name: "Model" });
  await expect(model.getByText("Ready", { exact: true })).toBeVisible();
  await expect(model).toContainText("Anthropic API");
  await expect(model.getByTestId("model-help")).toHaveCount(0);
});

test("with nothing that can answer, settings says both ways out", async ({ page }, info) => {
  // No API key, and no `claude` where the server looks for it.
  await w.startServer({ MAINLOOP_WORKERS__CLAUDE_COMMAND: `${w.dir}/no-such-claude` });
  await openSettings(page);
  const model = page.getByRole("region", { name: "Model" });
  await expect(model.getByText("Cannot answer", { exact: true })).toBeVisible();
  const help = model.getByTestId("model-help");
  await expect(help).toContainText("claude login");
  await expect(help).toContainText("ANTHROPIC_API_KEY");
  await expect(help.locator("code").first()).toBeVisible();
  // Checking again asks the server again (and keeps the answer on screen meanwhile).
  await model.getByRole("button", { name: "Check again" }).click();
  await expect(model.getByRole("button", { name: "Check again" })).toBeEnabled();
  await expect(help).toContainText("claude login");
  await shot(page, info.project.name, "settings-model-not-ready");
  const results = await new AxeBuilder({ page }).include('[data-testid="model-status"]').withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
  expect(results.violations.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => v.id)).toEqual([]);
});
