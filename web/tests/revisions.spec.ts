// Revising a plan, honestly: the feedback is confirmed and shown while the worker
// revises, the revision arrives with its changes from the first plan marked, and every
// decision is confirmed in words.
import { readFileSync } from "node:fs";
import path from "node:path";
import { test, expect } from "@playwright/test";
import { World, worldPerTest, shot } from "./harness";

const GREETER = readFileSync(path.join(import.meta.dirname, "../../crates/mainloop-fake-anthropic/scripts/greeter.yaml"), "utf8");

// The worker plans at once (no questions), and takes its time over the revision so the
// page can be seen revising; the rest is the greeter's.
const SCRIPT = String.raw`
rules:
  - name: plan-at-once
    match: {user_contains: "plan the greeter"}
    reply:
      - tool_use:
          name: Write
          input: {file_path: "{{plan_file}}", content: "# Plan\n\nA greeter in Rust.\n"}
  - name: slow-revision
    match: {tool_result_for: ExitPlanMode, tool_result_contains: "add tests"}
    delay_ms: 700
    reply:
      - text: "Revising."
      - tool_use:
          name: Write
          input: {file_path: "{{plan_file}}", content: "# Plan (revised)\n\nA greeter in Rust, with tests.\n"}
` + (GREETER.split(/^rules:\n/m)[1] ?? "");

const world = worldPerTest(SCRIPT);
let w: World;
test.beforeEach(() => {
  w = world();
});

test("a revision is shown in progress, then with its changes, and decisions are confirmed", async ({ page }, info) => {
  await w.signIn(page);
  const task = await w.api<{ id: string }>(page, "POST", "/tasks", { description: "plan the greeter", repo: w.repo });
  await page.goto(`${w.base}/tasks/${task.id}`);
  await expect(page.getByTestId("connection")).toHaveAttribute("data-state", "live");

  const review = page.getByTestId("plan-review");
  await expect(review.getByTestId("plan")).toContainText("A greeter in Rust.", { timeout: 90_000 });
  // The first plan has no history to show.
  await expect(review.getByTestId("plan-revision-number")).toHaveCount(0);

  await review.getByRole("button", { name: "Request changes" }).click();
  await review.getByLabel("What should change?").fill("Please add tests.");
  await review.getByRole("button", { name: "Send feedback" }).click();
  const status = page.getByRole("status").filter({ hasText: "Feedback sent" });
  await expect(status).toHaveText("Feedback sent — the worker is revising the plan.");
  const revising = page.getByTestId("plan-revising");
  await expect(revising.getByRole("heading")).toHaveText("Revising the plan with your feedback…");
  await expect(revising.getByTestId("revision-feedback")).toHaveText("Please add tests.");
  await expect(revising.getByText("Previous plan (revision 1)")).toBeVisible();
  await shot(page, info.project.name, "plan-revising");

  // The revision, its changes from the first plan marked in words as well as colour.
  await expect(review.getByTestId("plan-revision-number")).toHaveText("Revision 2", { timeout: 90_000 });
  // The confirmation was of the revision being made; it is done now.
  await expect(status).toHaveCount(0);
  await expect(review).toContainText("You asked: Please add tests.");
  const changes = review.getByTestId("plan-changes");
  await expect(changes.getByTestId("plan-line-added")).toContainText(["Added: # Plan (revised)", "Added: A greeter in Rust, with tests."]);
  await expect(changes.getByTestId("plan-line-removed")).toContainText(["Removed: # Plan", "Removed: A greeter in Rust."]);
  await expect(changes.locator("del")).toHaveCount(2);
  await shot(page, info.project.name, "plan-revision");

  await review.getByRole("button", { name: "Whole plan" }).click();
  await expect(review.getByTestId("plan-changes")).toHaveCount(0);
  await expect(review.getByTestId("plan").locator("h1").first()).toHaveText("Plan (revised)");
  const earlier = review.getByTestId("earlier-revision");
  await expect(earlier).toHaveCount(1);
  await earlier.getByText("Revision 1 and your feedback").click();
  await expect(earlier).toContainText("Your feedback: Please add tests.");

  await review.getByRole("button", { name: "Approve plan" }).click();
  await expect(page.getByRole("status").filter({ hasText: "Plan approved" })).toHaveText("Plan approved — the worker is implementing it.");
  await expect(page.getByTestId("plan-review")).toHaveCount(0);

  const plans = await w.api<{ revisions: { revision: number; feedback: string | null }[] }>(page, "GET", `/tasks/${task.id}/plans`);
  expect(plans.revisions.map((r) => [r.revision, r.feedback])).toEqual([
    [1, "Please add tests."],
    [2, null],
  ]);
});
