// The app's behaviour around the journey: drafts and failed sends, paging back through
// the thread, themes without a flash, the inbox's live sections and project filter,
// focus that stays in the chat box, and accessibility checks on every main screen.
import { test, expect, type Page } from "@playwright/test";
import AxeBuilder from "@axe-core/playwright";
import { World, shot } from "./harness";

let w: World;

test.beforeEach(async () => {
  w = new World();
  w.makeRepo();
  // No rules: the fake model echoes; workers use a command that fails at once.
  await w.startFake("rules: []\n");
  await w.startServer({ MAINLOOP_WORKERS__CLAUDE_COMMAND: "/bin/false", MAINLOOP_DISPATCHER__MAX_ATTEMPTS: "1" });
});

test.afterEach(async () => {
  await w.close();
});

async function open(page: Page, path = "/"): Promise<void> {
  await w.signIn(page);
  await page.goto(`${w.base}${path}`);
  await expect(page.getByTestId("connection")).toHaveAttribute("data-state", "live");
}

test("the draft survives a reload and a failed send keeps the text", async ({ page }) => {
  await open(page);
  const box = page.getByLabel("Message");
  await box.fill("half a thought");
  await page.reload();
  await expect(box).toHaveValue("half a thought");

  await w.killServer();
  await box.press("Enter");
  await expect(page.getByTestId("send-error")).toContainText("Not sent");
  await expect(box).toHaveValue("half a thought");
  await w.startServer({ MAINLOOP_WORKERS__CLAUDE_COMMAND: "/bin/false" });
  await expect(page.getByTestId("connection")).toHaveAttribute("data-state", "live");
  await box.press("Enter");
  await expect(box).toHaveValue("");
  await expect(page.getByTestId("user-message").last()).toHaveText("half a thought");
  await page.reload();
  await expect(box).toHaveValue("");
});

test("older messages load when scrolling up", async ({ page }) => {
  await w.signIn(page);
  for (let i = 0; i < 30; i++) {
    await w.api(page, "POST", "/chat", { text: `message number ${i}` });
  }
  // Wait for the last reply so the thread is 60 messages long.
  await expect
    .poll(async () => (await w.api<{ messages: unknown[] }>(page, "GET", "/chat/messages?limit=100")).messages.length, { timeout: 60_000 })
    .toBe(60);
  await open(page);
  const log = page.getByTestId("chat-log");
  await expect(page.getByTestId("user-message").last()).toContainText("message number 29");
  await expect(page.getByText("message number 0", { exact: true })).toHaveCount(0);
  await log.evaluate((el) => el.scrollTo({ top: 0 }));
  await expect(page.getByTestId("user-message").filter({ hasText: /^message number 0$/ })).toHaveCount(1);
  await expect(page.getByTestId("user-message")).toHaveCount(30);
});

test("the chosen theme applies before the first paint", async ({ page }, info) => {
  await open(page, "/settings");
  // What mainloop holds on disk is measured on the server (at least its database).
  await expect(page.getByTestId("disk-line")).toContainText(/^mainloop holds [\d.]+ [kMG]?B on disk: .*database/);
  await page.getByRole("radio", { name: "Terminal" }).click();
  await expect(page.locator("html")).toHaveAttribute("data-theme", "terminal");
  await shot(page, info.project.name, "settings-terminal");
  // Record the theme at the moment <body> first exists: before any app code ran.
  await page.addInitScript(() => {
    const seen = () => {
      if (document.body && !(window as unknown as { __themeAtBody?: string }).__themeAtBody) {
        (window as unknown as { __themeAtBody?: string }).__themeAtBody = document.documentElement.dataset.theme ?? "none";
      }
    };
    new MutationObserver(seen).observe(document, { childList: true, subtree: true });
  });
  await page.reload();
  expect(await page.evaluate(() => (window as unknown as { __themeAtBody?: string }).__themeAtBody)).toBe("terminal");
  await page.getByRole("radio", { name: "Dark" }).click();
  await page.reload();
  expect(await page.evaluate(() => (window as unknown as { __themeAtBody?: string }).__themeAtBody)).toBe("dark");
  await page.emulateMedia({ colorScheme: "light" });
  await page.getByRole("radio", { name: "System" }).click();
  await expect(page.locator("html")).toHaveAttribute("data-theme", "light");
  await page.emulateMedia({ colorScheme: "dark" });
  await expect(page.locator("html")).toHaveAttribute("data-theme", "dark");
});

test("failures arrive live without taking focus from the chat box, retry in place, and filter by project", async ({ page }, info) => {
  const mobile = info.project.name === "phone";
  await open(page, mobile ? "/" : "/");
  const box = page.getByLabel("Message");
  await box.click();
  await box.pressSequentially("typing while");
  await w.api(page, "POST", "/tasks", { description: "a task that fails", repo: w.repo });
  if (!mobile) {
    await expect(page.getByTestId("failed")).toContainText("a task that fails", { timeout: 60_000 });
  } else {
    // A failure is not a needs-you item: the badge stays empty.
    await expect(page.getByTestId("event-message").filter({ hasText: "— failed" })).toBeVisible({ timeout: 60_000 });
    await expect(page.getByTestId("inbox-badge")).toHaveCount(0);
  }
  await box.pressSequentially(" it arrives");
  await expect(box).toBeFocused();
  await expect(box).toHaveValue("typing while it arrives");

  if (mobile) await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: /Inbox/ }).click();
  const failed = page.getByTestId("failed");
  await expect(failed).toContainText("a task that fails");
  await failed.getByRole("button", { name: "Retry" }).click();
  // It fails again (the agent command still fails) and comes back, still in place.
  await expect(failed.getByRole("button", { name: "Retry" })).toBeEnabled({ timeout: 60_000 });

  // A second project makes the filter appear; the choice is kept in the URL.
  const other = `${w.repo}-other`;
  const { execFileSync } = await import("node:child_process");
  execFileSync("cp", ["-r", w.repo, other]);
  await w.api(page, "POST", "/tasks", { description: "another project's task", repo: other });
  const filter = page.getByLabel("Project");
  await expect(filter).toBeVisible({ timeout: 30_000 });
  await expect(page.getByTestId("failed")).toContainText("another project's task", { timeout: 60_000 });
  await filter.selectOption({ label: "repo" });
  await expect(page).toHaveURL(/[?&]project=/);
  await expect(page.getByTestId("failed")).not.toContainText("another project's task");
  await page.reload();
  await expect(page.getByTestId("failed")).toContainText("a task that fails");
  await expect(page.getByTestId("failed")).not.toContainText("another project's task");
});

test("main screens pass automated accessibility checks and work from the keyboard", async ({ page }, info) => {
  await open(page);
  await w.api(page, "POST", "/tasks", { description: "a task that fails", repo: w.repo });
  for (const path of ["/", "/inbox", "/settings", "/new"]) {
    await page.goto(`${w.base}${path}`);
    await expect(page.getByTestId("connection")).toHaveAttribute("data-state", "live");
    const results = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
    const serious = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
    expect(serious.map((v) => `${path}: ${v.id} ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`)).toEqual([]);
  }
  // Keyboard: from the top of the page, Tab reaches the chat box and Enter sends.
  await page.goto(`${w.base}/`);
  await expect(page.getByTestId("connection")).toHaveAttribute("data-state", "live");
  const box = page.getByLabel("Message");
  for (let i = 0; i < 30 && !(await box.evaluate((el) => el === document.activeElement)); i++) {
    await page.keyboard.press("Tab");
  }
  await expect(box).toBeFocused();
  await page.keyboard.type("sent from the keyboard");
  await page.keyboard.press("Enter");
  await expect(page.getByTestId("user-message").last()).toHaveText("sent from the keyboard");
  await shot(page, info.project.name, "chat-keyboard");
});
