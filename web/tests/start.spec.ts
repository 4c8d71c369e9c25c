// Starting work without the chat — the New task form, on the phone and the desktop — and
// the API reference page the binary serves at /api/docs.
import { test, expect, type Page, type Route } from "@playwright/test";
import { World, shot } from "./harness";

let w: World;

test.beforeEach(async () => {
  w = new World();
  w.makeRepo();
  // The fake model echoes; workers use a command that fails at once (the tests only
  // need the task to exist and its page to show it).
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

interface TaskView {
  id: string;
  description: string;
  repo: string;
  project_id: string;
  skip_plan: boolean;
}

test("a task starts from the New task form and its page opens", async ({ page }, info) => {
  await open(page);
  // One tap from the chat…
  await page.getByRole("link", { name: "New task" }).click();
  await expect(page).toHaveURL(/\/new$/);
  await expect(page.getByRole("heading", { name: "New task" })).toBeVisible();
  const description = page.getByLabel("What should the worker do?");
  const repo = page.getByLabel("Repository", { exact: true });
  // A phone keeps its keyboard down until a field is tapped; a desktop is ready to type.
  if (info.project.name === "phone") await expect(page.getByRole("heading", { name: "New task" })).toBeFocused();
  else await expect(description).toBeFocused();

  // Nothing filled in: each field says what it needs, in place, and nothing is sent.
  const create = page.getByRole("button", { name: "Create task" });
  await create.click();
  await expect(description).toHaveAttribute("aria-invalid", "true");
  await expect(description).toHaveAccessibleDescription(/Describe what the worker should do/);
  await expect(repo).toHaveAccessibleDescription(/Name a repository/);
  await expect(description).toBeFocused();

  // A repository the server refuses: the reason shows by that field, the text stays.
  const text = "Add a CHANGELOG.md\n\nList the releases so far, newest first.";
  await description.fill(text);
  await repo.fill(`${w.repo}-missing`);
  await page.getByLabel(/Skip planning/).check();
  await create.click();
  await expect(repo).toHaveAccessibleDescription(/^A local path, a git URL or owner\/name\. repo: /);
  await expect(repo).toBeFocused();
  await expect(description).toHaveValue(text);
  await expect(description).not.toHaveAttribute("aria-invalid", "true");
  // …and survives a reload, like the chat's draft.
  await page.reload();
  await expect(description).toHaveValue(text);
  await expect(repo).toHaveValue(`${w.repo}-missing`);
  await expect(page.getByLabel(/Skip planning/)).toBeChecked();

  // The reason goes once the field changes. While the request is in flight the button is
  // disabled; then the task's page opens.
  await repo.fill(w.repo);
  await expect(repo).toHaveAccessibleDescription("A local path, a git URL or owner/name.");
  await expect(repo).not.toHaveAttribute("aria-invalid", "true");
  let release: () => void = () => {};
  const held = new Promise<void>((resolve) => (release = resolve));
  await page.route("**/api/tasks", async (route: Route) => {
    if (route.request().method() === "POST") await held;
    await route.continue();
  });
  await create.click();
  await expect(page.getByRole("button", { name: "Creating…" })).toBeDisabled();
  release();
  await expect(page).toHaveURL(/\/tasks\/[0-9a-f-]{36}$/);
  await page.unroute("**/api/tasks");
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("Add a CHANGELOG.md");
  const id = new URL(page.url()).pathname.split("/").pop() ?? "";
  const task = await w.api<TaskView>(page, "GET", `/tasks/${id}`);
  expect(task).toMatchObject({ description: text, repo: w.repo, skip_plan: true });
  await shot(page, info.project.name, "new-task-created");

  // One tap from the inbox (the phone's tab; the desktop's sidebar is always there). The
  // draft is gone, and the repository just used is offered.
  if (info.project.name === "phone") {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: /Inbox/ }).click();
    await expect(page.getByTestId("inbox")).toBeVisible();
  }
  await page.getByRole("link", { name: "New task" }).click();
  await expect(description).toHaveValue("");
  await expect(repo).toHaveValue("");
  await page.getByRole("group", { name: "Recent repositories" }).getByRole("button", { name: w.repo }).click();
  await expect(repo).toHaveValue(w.repo);
  await shot(page, info.project.name, "new-task-form");

  // From an inbox filtered by a project, the form starts in that project.
  await repo.fill("");
  await page.goto(`${w.base}/inbox?project=${task.project_id}`);
  await page.getByRole("link", { name: "New task" }).click();
  await expect(page).toHaveURL(/\/new\?project=/);
  await expect(repo).toHaveValue(w.repo);

  // From the keyboard: Ctrl+Enter in the description sends.
  await description.click();
  await page.keyboard.type("Second task, from the keyboard");
  await page.keyboard.press("Control+Enter");
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("Second task, from the keyboard");
  const tasks = await w.api<{ tasks: TaskView[] }>(page, "GET", "/tasks");
  expect(tasks.tasks.map((t) => t.description).sort()).toEqual([text, "Second task, from the keyboard"]);
});

test("the form offers the configured agents and sends the one chosen", async ({ page }, info) => {
  await open(page, "/new");
  const agent = page.getByLabel("Agent", { exact: true });
  // The server's default is chosen; agents not installed on it are listed but cannot be.
  await expect(agent).toHaveValue("claude");
  await expect(agent.locator("option", { hasText: "claude (default)" })).toBeEnabled();
  for (const option of await agent.locator("option").all()) {
    if ((await option.textContent())?.includes("not installed")) await expect(option).toBeDisabled();
  }
  await page.getByLabel("What should the worker do?").fill("Tidy the README");
  await page.getByLabel("Repository", { exact: true }).fill(w.repo);
  await agent.selectOption("claude");
  await shot(page, info.project.name, "new-task-agent");
  const sent = page.waitForRequest((r) => r.url().endsWith("/api/tasks") && r.method() === "POST");
  await page.getByRole("button", { name: "Create task" }).click();
  expect((await sent).postDataJSON()).toMatchObject({ agent: "claude", repo: w.repo });
  await expect(page).toHaveURL(/\/tasks\/[0-9a-f-]{36}$/);
  const id = new URL(page.url()).pathname.split("/").pop() ?? "";
  const task = await w.api<TaskView & { agent: string }>(page, "GET", `/tasks/${id}`);
  expect(task.agent).toBe("claude");
});

test("the API reference renders the server's document without contacting another origin", async ({ page }, info) => {
  const origin = new URL(w.base).origin;
  const elsewhere: string[] = [];
  const problems: string[] = [];
  page.on("request", (r) => {
    const url = new URL(r.url());
    if (url.origin !== origin && url.protocol !== "data:" && url.protocol !== "blob:") elsewhere.push(r.url());
  });
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(e.message));

  await open(page, "/settings");
  await page.getByRole("link", { name: "API reference" }).click();
  await expect(page).toHaveURL(`${w.base}/api/docs`);
  await expect(page).toHaveTitle("mainloop API");
  // The operations, by their summaries and ids.
  await expect(page.getByText("Spawns a worker task.")).toBeVisible();
  if (info.project.name === "desktop") await expect(page.getByText("create_task", { exact: true })).toBeVisible();
  await expect(page.locator("#docs")).not.toHaveAttribute("aria-busy", "true");
  await shot(page, info.project.name, "api-docs");

  // An operation opens to its parameters and responses.
  await page.getByText("Spawns a worker task.").click();
  await expect(page.getByText("Empty description or repo")).toBeVisible();

  const res = await page.request.get(`${w.base}/api/docs`);
  expect(res.status()).toBe(200);
  expect(res.headers()["content-security-policy"]).toContain("script-src 'self'");
  expect(elsewhere).toEqual([]);
  expect(problems).toEqual([]);
});
