// A task whose agent meets its usage limit is on hold until the reset: the real claude
// CLI, signed in as a subscription, gets the 429 the API sends when the 5-hour window is
// spent. The inbox shows the task with running work and when it goes on; the task page
// shows the limit in the agent's words and offers Cancel, not Retry.
import { test, expect } from "@playwright/test";
import { World, worldPerTest, shot } from "./harness";

// Two hours from now, as the API's unified rate-limit headers give it (Unix seconds).
const RESET = Math.floor(Date.now() / 1000) + 2 * 3600;

const SCRIPT = String.raw`
rules:
  - name: limit
    status: 429
    error:
      type: rate_limit_error
      message: "This request would exceed your account's rate limit. Please try again later."
    retry_after: 3600
    headers:
      anthropic-ratelimit-unified-status: rejected
      anthropic-ratelimit-unified-reset: "${RESET}"
      anthropic-ratelimit-unified-representative-claim: five_hour
      anthropic-ratelimit-unified-overage-status: rejected
`;

// A subscription, not an API key: only then does the CLI say when the limit resets.
const world = worldPerTest(SCRIPT, { ANTHROPIC_API_KEY: undefined, CLAUDE_CODE_OAUTH_TOKEN: "sk-ant-oat01-fake" });
let w: World;
test.beforeEach(() => {
  w = world();
});

test("a task at its usage limit waits with running work and says when it goes on", async ({ page }, info) => {
  test.setTimeout(120_000);
  await w.open(page, "/inbox");
  const task = await w.api<{ id: string }>(page, "POST", "/tasks", { description: "add the greeting", repo: w.repo });

  const running = page.getByTestId("running");
  const row = running.locator("li", { has: page.locator(`a[href="/tasks/${task.id}"]`) });
  await expect(row.locator(".chip")).toHaveText("On hold", { timeout: 90_000 });
  await expect(row.getByTestId("hold-line")).toHaveText(
    // Two hours on: past midnight, the day is said too.
    /^Usage limit reached · goes on at (tomorrow )?\d\d:\d\d \(in (1 h 5\d min|2 h)\)$/,
  );
  // Not a failure, and nothing for the human to do.
  await expect(page.getByTestId("failed")).toHaveCount(0);
  await expect(page.getByTestId("needs-you")).toHaveCount(0);
  await shot(page, info.project.name, "hold-inbox");

  await page.goto(`${w.base}/tasks/${task.id}`);
  await expect(page.getByTestId("task-state")).toHaveText("On hold");
  const hold = page.getByTestId("task-hold");
  await expect(hold).toContainText(/goes on at (tomorrow )?\d\d:\d\d/);
  expect(Date.parse((await hold.locator("time").getAttribute("datetime")) ?? "")).toBe(RESET * 1000);
  await expect(page.getByTestId("hold-reason")).toContainText("hit your");
  await expect(page.getByRole("button", { name: "Retry" })).toHaveCount(0);
  await expect(page.getByRole("button", { name: "Cancel task…" })).toBeVisible();
  // The card fits the screen: no sideways scrolling on a phone.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  expect(overflow).toBeLessThanOrEqual(0);
  await shot(page, info.project.name, "hold-task");
});
