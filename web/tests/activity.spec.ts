// The activity view: a task whose agent reads and writes a file reads as plain steps
// with paths relative to its worktree, the raw transcript is one tap away, and the
// inbox's Running line uses the same words while the agent works.
import { writeFileSync } from "node:fs";
import path from "node:path";
import { test, expect } from "@playwright/test";
import { World, worldPerTest, shot } from "./harness";

// The agent reads the README, writes GREETING.md, then runs a command that waits for a
// file the test creates in its worktree once it has seen the task running.
const SCRIPT = String.raw`
rules:
  - name: read
    match: {user_contains: "write the greeting file"}
    reply:
      - text: "Reading the README first."
      - tool_use: {name: Read, input: {file_path: "README.md"}}
  - name: write
    match: {tool_result_for: Read}
    reply:
      - tool_use: {name: Write, input: {file_path: "GREETING.md", content: "hello\n"}}
  - name: wait
    match: {tool_result_for: Write}
    reply:
      - tool_use: {name: Bash, input: {command: "until [ -e go ]; do sleep 0.1; done; rm go", description: "Wait for the go-ahead"}}
  - name: done
    match: {tool_result_for: Bash}
    reply: [{text: "Done: GREETING.md added."}]
`;

const world = worldPerTest(SCRIPT);
let w: World;
test.beforeEach(() => {
  w = world();
});

test("the activity view reads as plain steps, the raw transcript one tap away", async ({ page }, info) => {
  const mobile = info.project.name === "phone";
  await w.signIn(page);
  const task = await w.api<{ id: string }>(page, "POST", "/tasks", { description: "write the greeting file", repo: w.repo, skip_plan: true });

  // While the agent works, the inbox's Running line says what it does in plain words.
  await page.goto(`${w.base}/inbox`);
  const line = page.getByTestId("running").getByTestId("status-line");
  await expect(line).toContainText("Ran", { timeout: 60_000 });
  await expect(line).not.toContainText(w.dir);
  await expect(line).not.toContainText("Bash");

  await page.goto(`${w.base}/tasks/${task.id}`);
  const activity = page.getByTestId("activity");
  await expect(activity).toContainText("Wrote GREETING.md");
  await expect(activity.locator("code", { hasText: /^GREETING\.md$/ })).toBeVisible();
  await expect(activity).toContainText("Read README.md");
  await expect(activity).not.toContainText(w.dir);
  await expect(activity).not.toContainText("file state is current");

  // Let the command finish; the agent's closing words arrive live.
  const { worktree } = await w.api<{ worktree: string }>(page, "GET", `/tasks/${task.id}`);
  writeFileSync(path.join(worktree, "go"), "");
  await expect(activity).toContainText("Done: GREETING.md added.", { timeout: 60_000 });
  if (mobile) {
    await activity.locator("li").last().scrollIntoViewIfNeeded();
    await shot(page, info.project.name, "activity");
  }

  // The raw transcript is one tap away.
  await expect(page.getByTestId("transcript")).toHaveCount(0);
  await page.getByText("Show raw transcript").click();
  await expect(page.getByTestId("transcript")).toContainText("Write GREETING.md");
});
