// The whole journey a user takes, in a real browser against the real server, the real
// claude CLI and the scripted fake model: chat, confirm, spawn, answer questions
// (one multi-select), revise then approve the plan, watch the live transcript, review
// the diff, merge; with a server crash and restart in the middle that the open page
// rides out without a reload. Hostile markup in chat and plan text must stay inert.
import { readFileSync } from "node:fs";
import path from "node:path";
import { test, expect, type Page } from "@playwright/test";
import { World, git, shot } from "./harness";

const XSS = `<script>window.__pwned='script'</script><img src=x onerror="window.__pwned='img'"> [link](javascript:window.__pwned='link')`;

// The worker's side is the greeter script the Rust tests share; this test adds the main
// thread's rules and a plan carrying hostile markup, in front of it.
const GREETER = readFileSync(path.join(import.meta.dirname, "../../crates/mainloop-fake-anthropic/scripts/greeter.yaml"), "utf8");

const SCRIPT = String.raw`
rules:
  # The main thread (it offers spawn_task).
  - name: propose
    match: {user_contains: "build the greeter", tool_offered: spawn_task, times: 1}
    reply:
      - text: ${JSON.stringify(`I can spawn a worker to **build the greeter** in the demo repo. Shall I? ${XSS}`)}
  - name: spawn
    match: {user_contains: "yes, go", tool_offered: spawn_task}
    reply:
      - text: "On it."
      - tool_use: {name: spawn_task, input: {description: "build the greeter", repo: "{{repo}}"}}
  - name: spawned
    match: {tool_result_for: spawn_task}
    reply: [{text: "Started a worker; its questions will be in your inbox."}]

  # The worker (the real claude CLI): the greeter's plan, with hostile markup in it.
  - name: write-plan-with-markup
    match: {tool_result_for: AskUserQuestion}
    reply:
      - tool_use:
          name: Write
          input: {file_path: "{{plan_file}}", content: ${JSON.stringify(`# Plan\n\nA greeter.\n\n${XSS}\n`)}}
` + (GREETER.split(/^rules:\n/m)[1] ?? "");

let w: World;

test.beforeEach(async () => {
  w = new World();
  w.makeRepo();
  await w.startFake(SCRIPT);
  await w.startServer();
});

test.afterEach(async () => {
  await w.close();
});

async function expectLive(page: Page): Promise<void> {
  await expect(page.getByTestId("connection")).toHaveAttribute("data-state", "live");
}

/** Opens the first needs-you item: from the tab bar on a phone, the sidebar on a desktop. */
async function openNeedsYou(page: Page, mobile: boolean, kind: string): Promise<void> {
  if (mobile) await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: /Inbox/ }).click();
  const item = page.getByTestId("needs-you").locator(`a[data-kind="${kind}"]`).first();
  await expect(item).toBeVisible();
  await item.click();
}

test("chat, spawn, questions, plan revision, restart, transcript, review, merge", async ({ page }, info) => {
  const mobile = info.project.name === "phone";
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));

  // Sign in with the token.
  await page.goto(`${w.base}/`);
  await expect(page.getByLabel("API token")).toBeVisible();
  await shot(page, info.project.name, "login");
  await page.getByLabel("API token").fill("mlt_wrong");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("alert")).toContainText("not valid");
  await page.getByLabel("API token").fill(w.token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expectLive(page);

  // Chat: the model proposes, the user confirms, a worker is spawned.
  const box = page.getByLabel("Message");
  await box.fill("Please build the greeter");
  await box.press("Shift+Enter");
  await box.pressSequentially("in Rust");
  await expect(box).toHaveValue("Please build the greeter\nin Rust");
  await box.press("Enter");
  await expect(box).toHaveValue("");
  await expect(page.getByTestId("user-message").last()).toContainText("in Rust");
  const proposal = page.getByTestId("assistant-message").filter({ hasText: "Shall I?" });
  await expect(proposal).toBeVisible();
  await expect(proposal.locator("strong")).toHaveText("build the greeter");
  await expect(proposal.locator("script, img[onerror], a[href^='javascript']")).toHaveCount(0);
  await box.fill("yes, go");
  await box.press("Enter");
  const update = page.getByTestId("event-message").filter({ hasText: "build the greeter" }).first();
  await expect(update).toBeVisible();
  // The task's updates fold into one card that changes state.
  await expect(update.getByTestId("card-state")).toHaveText("Needs your answers", { timeout: 60_000 });
  await expect(page.getByTestId("event-message").filter({ hasText: "build the greeter" })).toHaveCount(1);
  await expect(page.getByTestId("assistant-message").filter({ hasText: "Started a worker" })).toBeVisible();
  await shot(page, info.project.name, "chat");

  // Questions arrive; on a phone the tab badge counts them.
  if (mobile) await expect(page.getByTestId("inbox-badge")).toHaveText("1");
  await openNeedsYou(page, mobile, "question");
  await expect(page).toHaveURL(/\/tasks\/[0-9a-f-]+\?item=/);
  // Opening an item marks it read.
  const itemId = new URL(page.url()).searchParams.get("item");
  await expect
    .poll(async () => (await w.api<{ items: { id: string; read: boolean }[] }>(page, "GET", "/inbox")).items.find((i) => i.id === itemId)?.read)
    .toBe(true);
  const questions = page.getByTestId("questions");
  await expect(questions.getByTestId("question-text")).toHaveText("Which language?");
  await expect(questions.getByText("fast", { exact: true })).toBeVisible(); // descriptions are shown, not tooltips
  await shot(page, info.project.name, "question");
  await questions.getByRole("button", { name: /Rust/ }).click();
  await questions.getByRole("button", { name: "Next" }).click();
  await expect(questions.getByTestId("question-text")).toHaveText("Which extras?");
  await expect(questions.getByText("Choose all that apply.")).toBeVisible();
  await questions.getByRole("button", { name: /Tests/ }).click();
  await questions.getByRole("button", { name: /Docs/ }).click();
  await expect(questions.getByRole("button", { name: /Tests/ })).toHaveAttribute("aria-pressed", "true");
  await expect(questions.getByRole("button", { name: /Docs/ })).toHaveAttribute("aria-pressed", "true");
  // An earlier answer stays editable, and later ones survive the detour.
  await questions.getByRole("button", { name: "Back" }).click();
  await expect(questions.getByRole("button", { name: /Rust/ })).toHaveAttribute("aria-pressed", "true");
  await questions.getByRole("button", { name: /Go/ }).click();
  await expect(questions.getByRole("button", { name: /Rust/ })).toHaveAttribute("aria-pressed", "false");
  // Leaving the page (another tab) and coming back loses nothing.
  await page.goBack();
  await page.goForward();
  await expect(questions.getByRole("button", { name: /Go/ })).toHaveAttribute("aria-pressed", "true");
  await questions.getByRole("button", { name: "Next" }).click();
  await expect(questions.getByRole("button", { name: /Docs/ })).toHaveAttribute("aria-pressed", "true");
  // A note goes with the ticks, and keeps them.
  await questions.getByLabel("Add a note, or answer in your own words").fill("keep them short");
  await expect(questions.getByRole("button", { name: /Tests/ })).toHaveAttribute("aria-pressed", "true");
  await expect(questions.getByRole("button", { name: /Docs/ })).toHaveAttribute("aria-pressed", "true");
  await expect(questions.getByRole("button", { name: "Send answers" })).toBeInViewport();
  await questions.getByRole("button", { name: "Send answers" }).click();

  // The plan: rendered, and its hostile markup inert.
  const plan = page.getByTestId("plan");
  await expect(plan).toContainText("A greeter.", { timeout: 60_000 });
  await expect(plan.locator("h1")).toHaveText("Plan");
  await expect(plan.locator("script, img[onerror], a[href^='javascript']")).toHaveCount(0);
  await shot(page, info.project.name, "plan");
  const taskUrl = page.url();
  const taskId = new URL(taskUrl).pathname.split("/").pop() ?? "";
  const task = await w.api<{ answers: Record<string, unknown> }>(page, "GET", `/tasks/${taskId}`);
  expect(task.answers).toEqual({ q1: ["Go"], q2: { choices: ["Tests", "Docs"], note: "keep them short" } });
  // The answers read back on the task page as given.
  const given = page.getByTestId("given-answers");
  await given.getByText("Your answers").click();
  await expect(given).toContainText("Tests, Docs — keep them short");

  // The server dies and comes back; the open page notices and carries on, no reload.
  await page.evaluate(() => ((window as unknown as { __sameDocument: boolean }).__sameDocument = true));
  await w.killServer();
  await expect(page.getByTestId("connection")).not.toHaveAttribute("data-state", "live");
  await w.startServer();
  await expectLive(page);

  // Ask for changes, then approve the revision.
  await page.getByRole("button", { name: "Request changes" }).click();
  await page.getByLabel("What should change?").fill("Please add tests.");
  await page.getByRole("button", { name: "Send feedback" }).click();
  await expect(plan).toContainText("with tests", { timeout: 90_000 });
  await page.getByRole("button", { name: "Approve plan" }).click();

  // The activity grows live while the worker implements.
  await expect(page.getByTestId("activity")).toContainText("greeting.txt", { timeout: 90_000 });

  // Review the diff, then merge.
  const review = page.getByTestId("review");
  await expect(review).toBeVisible({ timeout: 90_000 });
  const diff = review.getByTestId("diff");
  await expect(diff).toContainText("greeting.txt");
  await expect(diff.locator(".line.add")).toContainText(["+hello"]);
  await shot(page, info.project.name, "review");
  await review.getByRole("button", { name: "Approve and merge" }).click();
  await expect(page.getByTestId("task-state")).toHaveText("Merged", { timeout: 60_000 });
  await expect(page.getByTestId("merged-into")).toHaveText("Merged into main.");
  // The branch reads short; its full name is one tap away.
  const branch = page.getByTestId("branch");
  await expect(branch).not.toContainText("mainloop/");
  await branch.click();
  await expect(branch).toContainText("mainloop/");
  expect(git(w.repo, "show", "main:greeting.txt")).toBe("hello\n");

  // Still the same document: nothing was reloaded.
  expect(await page.evaluate(() => (window as unknown as { __sameDocument?: boolean }).__sameDocument)).toBe(true);
  if (mobile) {
    await expect(page.getByTestId("inbox-badge")).toHaveCount(0);
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: /Inbox/ }).click();
  }
  await expect(page.getByTestId("done")).toContainText("build the greeter");
  await shot(page, info.project.name, "inbox");
  expect(await page.evaluate(() => (window as unknown as { __pwned?: string }).__pwned)).toBeUndefined();
  expect(errors).toEqual([]);
});
