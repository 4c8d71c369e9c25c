// The projects screen: each repository with its tasks, reached from the top bar, and
// from there a task's page, a new task in it, or its inbox.
import { test, expect } from "@playwright/test";
import { World, worldPerTest, shot } from "./harness";

const world = worldPerTest("rules: []\n", { MAINLOOP_WORKERS__CLAUDE_COMMAND: "/bin/false", MAINLOOP_DISPATCHER__MAX_ATTEMPTS: "1" });
let w: World;
test.beforeEach(() => {
  w = world();
});

test("projects list their tasks and lead to them", async ({ page }, info) => {
  await w.open(page);
  await w.api(page, "POST", "/tasks", { description: "tidy the readme", repo: w.repo });
  await page.getByTestId("projects-link").click();
  await expect(page).toHaveURL(/\/projects$/);
  const project = page.getByTestId("project");
  await expect(project).toHaveCount(1);
  await expect(project).toContainText(w.repo);
  const link = project.getByRole("link", { name: "tidy the readme" });
  await expect(link).toBeVisible();
  await expect(project.getByRole("link", { name: "New task here" })).toHaveAttribute("href", /\/new\?project=/);
  await shot(page, info.project.name, "projects");
  await link.click();
  await expect(page).toHaveURL(/\/tasks\/[0-9a-f-]+$/);
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("tidy the readme");
});
