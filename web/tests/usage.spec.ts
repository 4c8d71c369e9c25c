// The usage screen with real spending: a task run by the real claude CLI against the fake
// model records its cost, and the screen draws it as stacked bars per day with a legend,
// within the viewport on the phone and the desktop. Pausing all work from the screen
// holds across a reload, and so does resuming. A task cap below what a first run costs
// holds the task at its next run (after review asks for changes) with a Budget card;
// "Continue once" lets it go on.
import { test, expect, type Locator, type Page } from "@playwright/test";
import AxeBuilder from "@axe-core/playwright";
import { World, worldPerTest, shot } from "./harness";

// "add the greeting" is done in one run.
const SCRIPT = String.raw`
rules:
  - name: write
    match: {user_contains: "add the greeting", tool_offered: Bash}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'hello\\n' > greeting.txt", description: "Write the greeting"}}
  - name: done
    match: {tool_result_for: Bash}
    reply: [{text: "Done."}]
`;

const world = worldPerTest(SCRIPT);
let w: World;
test.beforeEach(() => {
  w = world();
});

/** No serious or critical accessibility failure on the page as it is. */
async function accessible(page: Page): Promise<void> {
  const results = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
  const serious = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  expect(serious.map((v) => `${v.id} ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`)).toEqual([]);
}

/** Whether the element lies wholly inside the viewport's width, with a size. */
async function inViewport(page: Page, el: Locator): Promise<void> {
  const box = await el.boundingBox();
  const width = page.viewportSize()?.width ?? 0;
  expect(box).not.toBeNull();
  expect(box!.width).toBeGreaterThan(0);
  expect(box!.height).toBeGreaterThan(0);
  expect(box!.x).toBeGreaterThanOrEqual(0);
  expect(box!.x + box!.width).toBeLessThanOrEqual(width + 0.5);
}

test("the usage chart shows what a task spent, and pause then resume hold across reloads", async ({ page }, info) => {
  test.setTimeout(180_000);
  await w.open(page);
  const task = await w.api<{ id: string }>(page, "POST", "/tasks", { description: "add the greeting", repo: w.repo, skip_plan: true });
  await expect
    .poll(async () => (await w.api<{ state: string }>(page, "GET", `/tasks/${task.id}`)).state, { timeout: 120_000 })
    .toBe("review");
  const spent = await w.api<{ cost_usd: number }>(page, "GET", `/tasks/${task.id}`);
  expect(spent.cost_usd).toBeGreaterThan(0);

  // From the navigation, as a person gets there.
  await page.getByTestId("usage-link").click();
  await expect(page).toHaveURL(/\/usage$/);
  const chart = page.getByTestId("usage-chart");
  const bars = chart.getByTestId("usage-bar");
  await expect(bars).toHaveCount(1);
  await inViewport(page, bars.first());
  await inViewport(page, chart.locator("svg"));
  const legend = page.getByTestId("legend");
  await expect(legend).toContainText("claude");
  await inViewport(page, legend);
  // Today's bar is the one described; a tap on it says the same.
  await bars.first().click();
  await expect(page.getByTestId("bar-detail")).toContainText(/claude \$\d/);
  await expect(page.getByTestId("by-task").getByRole("link", { name: "add the greeting" })).toHaveAttribute("href", `/tasks/${task.id}`);
  await expect(page.getByTestId("today")).toContainText(/resets in \d/);
  // Tokens instead of dollars, and another period, still draw the bar.
  await page.getByRole("radio", { name: "Tokens" }).click();
  await expect(page.getByTestId("bar-detail")).toContainText(/claude \d+(\.\d)?[kM]?\b/);
  await page.getByRole("radio", { name: "7 days" }).click();
  await expect(bars).toHaveCount(1);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  expect(overflow).toBeLessThanOrEqual(0);
  await accessible(page);
  await shot(page, info.project.name, "usage");

  // Pause, and it is still paused after a reload.
  await page.getByRole("button", { name: "Pause all work" }).click();
  await expect(page.getByTestId("pause-state")).toHaveText("Paused");
  await page.reload();
  await expect(page.getByTestId("pause-state")).toHaveText("Paused");
  expect((await w.api<{ paused: boolean }>(page, "GET", "/pause")).paused).toBe(true);
  // The inbox says so too.
  if (info.project.name === "phone") await page.goto(`${w.base}/inbox`);
  await expect(page.getByTestId("paused-banner")).toContainText("All work is paused");
  await shot(page, info.project.name, "paused");

  await page.goto(`${w.base}/usage`);
  await page.getByTestId("pause-toggle").click();
  await expect(page.getByTestId("pause-state")).toHaveText("Running");
  await page.reload();
  await expect(page.getByTestId("pause-state")).toHaveText("Running");
  await expect(page.getByTestId("paused-banner")).toHaveCount(0);
  expect((await w.api<{ paused: boolean }>(page, "GET", "/pause")).paused).toBe(false);
});

test("a task past its budget waits with a Budget card, and Continue once lets it go on", async ({ page }, info) => {
  test.setTimeout(180_000);
  await w.open(page);
  await w.api(page, "PUT", "/budgets", { task_usd: 0.0001 });
  const task = await w.api<{ id: string }>(page, "POST", "/tasks", { description: "add the greeting", repo: w.repo, skip_plan: true });
  await expect
    .poll(async () => (await w.api<{ state: string }>(page, "GET", `/tasks/${task.id}`)).state, { timeout: 120_000 })
    .toBe("review");
  // The first run cost more than the cap: the next one waits for the human.
  await w.api(page, "POST", `/tasks/${task.id}/review`, { action: "changes", feedback: "add the greeting in French too" });

  await page.goto(`${w.base}/tasks/${task.id}`);
  const card = page.getByTestId("budget-hold");
  await expect(card).toBeVisible({ timeout: 60_000 });
  await expect(page.getByTestId("task-state")).toHaveText("Budget reached");
  await expect(page.getByTestId("budget-reason")).toContainText("This task's budget of");
  await expect(card.getByRole("button", { name: /^Raise to \$\d+\.\d\d$/ })).toBeVisible();
  await inViewport(page, card);
  await accessible(page);
  await shot(page, info.project.name, "budget-hold");

  // It needs the human: listed under Needs you.
  if (info.project.name === "phone") {
    await page.goto(`${w.base}/inbox`);
    await expect(page.getByTestId("needs-you").locator('[data-kind="budget"]')).toBeVisible();
    await page.goto(`${w.base}/tasks/${task.id}`);
  } else {
    await expect(page.getByTestId("needs-you").locator('[data-kind="budget"]')).toBeVisible();
  }

  await card.getByRole("button", { name: "Continue once" }).click();
  await expect(page.getByTestId("budget-hold")).toHaveCount(0);
  await expect(page.getByTestId("task-state")).not.toHaveText("Budget reached");
});
