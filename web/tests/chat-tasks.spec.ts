// The chat after two tasks have run to the end: each task is one card that took on its
// final state, with the conversation around them still readable.
import { test, expect } from "@playwright/test";
import { World, worldPerTest, shot } from "./harness";

const SCRIPT = String.raw`
rules:
  # The main thread (it offers spawn_task): two tasks from one message.
  - name: spawn-both
    match: {user_contains: "two small fixes", tool_offered: spawn_task, times: 1}
    reply:
      - text: "Two workers, one per fix."
      - tool_use: {name: spawn_task, input: {description: "add the first greeting", repo: "{{repo}}", skip_plan: true}}
      - tool_use: {name: spawn_task, input: {description: "add the second greeting", repo: "{{repo}}", skip_plan: true}}
  - name: spawned
    match: {tool_result_for: spawn_task}
    reply: [{text: "Both are running; I will tell you when they are ready for review."}]

  # The workers (the real claude CLI, not in plan mode).
  - name: first
    match: {user_contains: "add the first greeting", tool_offered: Bash}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'hello\\n' > first.txt", description: "Write the first greeting"}}
  - name: second
    match: {user_contains: "add the second greeting", tool_offered: Bash}
    reply:
      - tool_use: {name: Bash, input: {command: "printf 'hi\\n' > second.txt", description: "Write the second greeting"}}
  - name: done
    match: {tool_result_for: Bash}
    reply: [{text: "Done."}]
`;

const world = worldPerTest(SCRIPT);
let w: World;
test.beforeEach(() => {
  w = world();
});

interface TaskRow {
  id: string;
  state: string;
}

test("two finished tasks are two cards in the chat, each in its final state", async ({ page }, info) => {
  test.setTimeout(180_000);
  await w.open(page);
  const box = page.getByLabel("Message");
  await box.fill("two small fixes please: a first and a second greeting");
  await box.press("Enter");
  await expect(page.getByText("Both are running")).toBeVisible({ timeout: 30_000 });

  // Both reach review; one is merged, the other closed, as a user would.
  let tasks: TaskRow[] = [];
  await expect
    .poll(
      async () => {
        tasks = (await w.api<{ tasks: TaskRow[] }>(page, "GET", "/tasks")).tasks;
        return tasks.filter((t) => t.state === "review").length;
      },
      { timeout: 120_000 },
    )
    .toBe(2);
  for (const t of tasks) await w.api(page, "POST", `/tasks/${t.id}/review`, { action: "approve" });
  await expect
    .poll(async () => (await w.api<{ tasks: TaskRow[] }>(page, "GET", "/tasks")).tasks.filter((t) => t.state === "merged").length, {
      timeout: 60_000,
    })
    .toBe(2);

  const cards = page.getByTestId("event-message");
  await expect(cards.filter({ hasText: "first greeting" })).toHaveCount(1);
  await expect(cards.filter({ hasText: "second greeting" })).toHaveCount(1);
  for (const name of ["first greeting", "second greeting"]) {
    await expect(cards.filter({ hasText: name }).getByTestId("card-state")).toHaveText("Merged", { timeout: 30_000 });
  }
  await shot(page, info.project.name, "chat-two-tasks");
});
