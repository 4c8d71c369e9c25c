// The New task form's cost cap: the user's default shows in its hint, an amount out of
// range is refused in place before anything is sent, and the amount typed becomes the
// task's own cap (empty: none of its own, the default applies).
import { test, expect } from "@playwright/test";
import { World, worldPerTest } from "./harness";

// Tasks fail at once (no agent): the cap is what is checked, not the work.
const world = worldPerTest("rules: []\n", { MAINLOOP_WORKERS__CLAUDE_COMMAND: "/bin/false" });
let w: World;
test.beforeEach(() => {
  w = world();
});

test("a cost cap typed on the New task form becomes the task's own", async ({ page }) => {
  await w.open(page);
  await w.api(page, "PUT", "/budgets", { task_usd: 7 });
  await page.goto(`${w.base}/new`);
  const cap = page.getByLabel("Cost cap ($)");
  await expect(cap).toHaveAccessibleDescription(/your default, \$7 a task/);
  await page.getByLabel("What should the worker do?").fill("Capped work");
  await page.getByLabel("Repository", { exact: true }).fill(w.repo);

  const posted: unknown[] = [];
  page.on("request", (r) => {
    if (r.method() === "POST" && new URL(r.url()).pathname === "/api/tasks") posted.push(r.postDataJSON());
  });
  await cap.fill("0");
  await page.getByRole("button", { name: "Create task" }).click();
  await expect(cap).toHaveAttribute("aria-invalid", "true");
  await expect(cap).toHaveAccessibleDescription(/more than \$0/);
  await expect(cap).toBeFocused();
  expect(posted).toEqual([]);

  await cap.fill("$2.50");
  await page.getByRole("button", { name: "Create task" }).click();
  await expect(page).toHaveURL(/\/tasks\/[0-9a-f-]+$/);
  const id = new URL(page.url()).pathname.split("/").pop() ?? "";
  expect(posted).toEqual([expect.objectContaining({ description: "Capped work", budget_usd: 2.5 })]);
  expect((await w.api<{ budget_usd?: number | null }>(page, "GET", `/tasks/${id}`)).budget_usd).toBe(2.5);

  // Empty: nothing of its own is sent.
  await page.goto(`${w.base}/new`);
  await page.getByLabel("What should the worker do?").fill("Default-capped work");
  await page.getByLabel("Repository", { exact: true }).fill(w.repo);
  await expect(cap).toHaveValue("");
  await page.getByRole("button", { name: "Create task" }).click();
  await expect(page).toHaveURL(/\/tasks\/[0-9a-f-]+$/);
  expect(posted).toHaveLength(2);
  expect(posted[1]).not.toHaveProperty("budget_usd");
});
