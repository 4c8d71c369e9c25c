// A run that changes nothing is never offered for merge: the agent says it added a file
// and wrote none, the task fails with "The worker made no changes." and offers a retry
// with feedback or closing it. Retried with feedback, the agent writes the file and the
// task reaches review with the diff.
import { test, expect } from "@playwright/test";
import { World, worldPerTest, shot } from "./harness";

const SCRIPT = String.raw`
rules:
  # Retried with the feedback below, the agent writes the file.
  - name: write
    match: {user_contains: "Use the shell to write GREETING.md", tool_offered: Bash}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'hello\\n' > GREETING.md", description: "Write the greeting"}}
  - name: done
    match: {tool_result_for: Bash}
    reply: [{text: "Done: GREETING.md added, for real this time."}]
  # The first run only claims it.
  - name: claim
    match: {user_contains: "add the greeting", tool_offered: Bash}
    reply: [{text: "Done: GREETING.md added."}]
`;

const world = worldPerTest(SCRIPT);
let w: World;
test.beforeEach(() => {
  w = world();
});

test("a run that changes nothing is never mergeable; a retry with feedback is", async ({ page }, info) => {
  test.setTimeout(180_000);
  await w.open(page);
  const task = await w.api<{ id: string }>(page, "POST", "/tasks", { description: "add the greeting", repo: w.repo, skip_plan: true });
  await page.goto(`${w.base}/tasks/${task.id}`);

  const failed = page.getByTestId("task-failed");
  await expect(failed).toBeVisible({ timeout: 120_000 });
  await expect(failed).toContainText("The worker made no changes.");
  await expect(failed).toContainText("nothing to review");
  await expect(page.getByRole("button", { name: "Approve and merge" })).toHaveCount(0);
  await expect(page.getByTestId("review")).toHaveCount(0);
  await expect(failed.getByRole("button", { name: "Retry" })).toBeVisible();
  await expect(failed.getByRole("button", { name: "Close task…" })).toBeVisible();
  const feedback = failed.getByLabel("What should the worker do differently?");
  await expect(feedback).toBeVisible();
  await shot(page, info.project.name, "no-changes");

  // Closing asks first; keeping it leaves the task as it was.
  await failed.getByRole("button", { name: "Close task…" }).click();
  await expect(page.getByRole("alertdialog")).toBeVisible();
  await page.getByRole("button", { name: "Keep it" }).click();
  await expect(failed).toBeVisible();

  await feedback.fill("Use the shell to write GREETING.md.");
  await failed.getByRole("button", { name: "Retry" }).click();
  const review = page.getByTestId("review");
  await expect(review).toBeVisible({ timeout: 120_000 });
  await expect(review.getByTestId("diff")).toContainText("GREETING.md");
  await expect(review.getByRole("button", { name: "Approve and merge" })).toBeEnabled();
});
