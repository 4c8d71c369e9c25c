// After a merge the task page still says where the work went and what it was: "Merged
// into main", the cost line, and the diff it was reviewed with. The new-task form leads
// to the projects screen. (Links to a GitHub task's issue and pull request need a forge,
// which this harness has not: the Rust end-to-end GitHub test covers them.)
import { test, expect } from "@playwright/test";
import { World, worldPerTest, shot } from "./harness";

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

test("a merged task keeps its diff and shows where it went and what it cost", async ({ page }, info) => {
  test.setTimeout(180_000);
  await w.open(page);
  const task = await w.api<{ id: string }>(page, "POST", "/tasks", { description: "add the greeting", repo: w.repo, skip_plan: true });
  await page.goto(`${w.base}/tasks/${task.id}`);
  const review = page.getByTestId("review");
  await expect(review).toBeVisible({ timeout: 120_000 });
  await expect(review.getByTestId("diff")).toContainText("greeting.txt");

  // One cancel action, and it asks first.
  await page.getByRole("button", { name: "Cancel task…" }).click();
  await expect(page.getByRole("alertdialog")).toBeVisible();
  await page.getByRole("button", { name: "Keep it" }).click();

  await review.getByRole("button", { name: "Approve and merge" }).click();
  await expect(page.getByTestId("task-state")).toHaveText("Merged", { timeout: 60_000 });
  await expect(page.getByTestId("merged-into")).toHaveText("Merged into main.");
  await expect(page.getByTestId("cost")).toHaveText(/tokens?$/);
  await expect(page.getByTestId("task-agent")).toHaveText("claude");
  await expect(page.getByRole("button", { name: "Cancel task…" })).toHaveCount(0);

  // The merged work is still there to read, from a fresh load of the page.
  await page.reload();
  await page.getByText("Show the merged changes").click();
  const diff = page.getByTestId("diff");
  await expect(diff).toContainText("1 file changed");
  await expect(diff).toContainText("greeting.txt");
  await expect(diff.locator(".line.add")).toContainText(["+hello"]);
  await shot(page, info.project.name, "merged");
});

test("the new-task form leads to the projects screen", async ({ page }) => {
  await w.signIn(page);
  await page.goto(`${w.base}/new`);
  await page.getByRole("link", { name: "See all projects" }).click();
  await expect(page).toHaveURL(/\/projects$/);
});
