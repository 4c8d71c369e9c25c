// Search from the top bar: a task and a chat message with the same word are both found
// as the word is typed, each with the word marked (and the message's markup shown as
// text); the kind chips narrow the list; the task hit opens the task's page and the
// message hit the chat scrolled to it. On a desktop `/` and Ctrl-K open the field from
// anywhere but another field, and the arrow keys and Enter pick a hit; on a phone a button
// opens a full-screen search.
import { test, expect, type Page } from "@playwright/test";
import AxeBuilder from "@axe-core/playwright";
import { World, worldPerTest, shot } from "./harness";

// Every chat turn is answered at once; tasks fail at once (no agent), which is all the
// search needs of them.
const world = worldPerTest('rules:\n  - match: {}\n    reply: [{text: "Noted."}]\n', { MAINLOOP_WORKERS__CLAUDE_COMMAND: "/bin/false" });
let w: World;
test.beforeEach(() => {
  w = world();
});

async function accessible(page: Page): Promise<void> {
  const results = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
  const serious = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  expect(serious.map((v) => `${v.id} ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`)).toEqual([]);
}

/** Takes focus out of any field (the chat's composer takes it on a desktop). */
async function leaveFields(page: Page): Promise<void> {
  await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
}

test("search finds a task and a message, marks the word, and opens each where it lives", async ({ page }, info) => {
  const wide = info.project.name === "desktop";
  await w.open(page);
  const said = await w.api<{ message_id: string }>(page, "POST", "/chat", { text: "Remember: the quokka parser is <b>fragile</b>" });
  const task = await w.api<{ id: string }>(page, "POST", "/tasks", { description: "Refactor the quokka parser", repo: w.repo });
  // Enough chat after it that the message scrolls out of view.
  for (let i = 1; i <= 12; i++) await w.api(page, "POST", "/chat", { text: `filler line ${i}` });
  await expect.poll(() => page.getByTestId("assistant-message").count()).toBeGreaterThanOrEqual(13);
  const message = page.locator(`[data-message-id="${said.message_id}"]`);
  await expect(message).not.toBeInViewport();

  // Open the search: a keystroke on the desktop, the top bar's button on a phone.
  const input = page.getByTestId("search-input");
  if (wide) {
    await leaveFields(page);
    await page.keyboard.press("/");
    await expect(input).toBeFocused();
  } else {
    await expect(input).toHaveCount(0);
    // The top bar still fits the phone's width with the search button in it.
    const button = await page.getByRole("button", { name: "Search" }).boundingBox();
    expect(button!.x + button!.width).toBeLessThanOrEqual(page.viewportSize()!.width);
    expect(await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth)).toBeLessThanOrEqual(0);
    await shot(page, info.project.name, "search-button");
    await page.getByRole("button", { name: "Search" }).click();
    await expect(page.getByRole("dialog", { name: "Search" })).toBeVisible();
    await expect(input).toBeFocused();
  }
  await page.keyboard.type("quok");

  // Results as the word is typed (the last word may be the start of one), both kinds.
  const hits = page.getByTestId("search-hit");
  const taskHit = hits.filter({ has: page.locator("[data-testid=search-snippet]", { hasText: "Refactor the quokka parser" }) }).and(page.locator("[data-kind=task]"));
  const messageHit = hits.and(page.locator("[data-kind=message]")).filter({ hasText: "is <b>fragile</b>" });
  await expect(taskHit).toHaveCount(1);
  await expect(messageHit).toHaveCount(1);
  for (const hit of [taskHit, messageHit]) {
    await expect(hit.locator("mark").first()).toHaveText(/^quokka$/i);
  }
  // The message's markup is text, never elements.
  await expect(messageHit.locator("b")).toHaveCount(0);
  await expect(messageHit.getByText("Message", { exact: true })).toBeVisible();
  await expect(taskHit.getByText("Task", { exact: true })).toBeVisible();
  await shot(page, info.project.name, "search");
  await accessible(page);

  // The chips narrow the kinds.
  await page.getByRole("button", { name: "Tasks", exact: true }).click();
  await expect(hits.and(page.locator("[data-kind=message]"))).toHaveCount(0);
  await expect(taskHit).toHaveCount(1);
  await expect(page.getByRole("button", { name: "Tasks", exact: true })).toHaveAttribute("aria-pressed", "true");

  // The task hit opens the task: from the keyboard on the desktop, by a tap on a phone.
  if (wide) {
    await input.focus();
    await expect(hits.first()).toHaveAttribute("aria-selected", "true");
    await expect(input).toHaveAttribute("aria-activedescendant", "search-hit-0");
    await page.keyboard.press("Enter");
  } else {
    await taskHit.click();
  }
  await expect(page).toHaveURL(new RegExp(`/tasks/${task.id}$`));
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("Refactor the quokka parser");
  await expect(page.getByTestId("search-panel")).toHaveCount(0);

  // Again from the task's page; "All" brings every kind back.
  if (wide) {
    await leaveFields(page);
    await page.keyboard.press("Control+k");
    await expect(input).toBeFocused();
    await expect(input).toHaveValue("quok");
  } else {
    await page.getByRole("button", { name: "Search" }).click();
  }
  await page.getByRole("button", { name: "All", exact: true }).click();
  await expect(messageHit).toHaveCount(1);
  if (wide) {
    // The arrows walk the list (wrapping), and Enter opens the one highlighted.
    await input.focus();
    const order = await hits.evaluateAll((els) => els.map((e) => e.textContent ?? ""));
    const at = order.findIndex((t) => t.includes("is <b>fragile</b>"));
    await page.keyboard.press("ArrowUp");
    await expect(hits.last()).toHaveAttribute("aria-selected", "true");
    await page.keyboard.press("ArrowDown");
    for (let i = 0; i < at; i++) await page.keyboard.press("ArrowDown");
    await expect(messageHit).toHaveAttribute("aria-selected", "true");
    await page.keyboard.press("Enter");
  } else {
    await messageHit.click();
  }
  // The chat, scrolled to the message.
  await expect(page).toHaveURL(/\/$/);
  await expect(message).toBeInViewport();

  if (wide) {
    // Typing `/` in another field is a character, not the shortcut.
    const composer = page.getByRole("textbox", { name: "Message" });
    await composer.focus();
    await page.keyboard.type("a/b");
    await expect(composer).toHaveValue("a/b");
    await expect(input).not.toBeFocused();
    // Escape leaves the search.
    await leaveFields(page);
    await page.keyboard.press("/");
    await expect(page.getByTestId("search-panel")).toBeVisible();
    await page.keyboard.press("Escape");
    await expect(page.getByTestId("search-panel")).toHaveCount(0);
  } else {
    await page.getByRole("button", { name: "Search" }).click();
    await page.getByRole("button", { name: "Close" }).click();
    await expect(page.getByRole("dialog", { name: "Search" })).toHaveCount(0);
  }
});

test("a query without a word is not sent, and a word found nowhere says so", async ({ page }, info) => {
  await w.open(page);
  if (info.project.name === "desktop") await page.getByTestId("search-input").click();
  else await page.getByRole("button", { name: "Search" }).click();
  const input = page.getByTestId("search-input");
  const asked: string[] = [];
  page.on("request", (r) => {
    if (r.url().includes("/api/search")) asked.push(r.url());
  });
  await input.fill('"*()');
  await expect(page.getByTestId("search-status")).toHaveText("Type a word to search for.");
  await input.fill("xylophonist");
  await expect(page.getByTestId("search-status")).toHaveText("Nothing found.");
  expect(asked.length).toBeGreaterThan(0);
  expect(asked.every((u) => new URL(u).searchParams.get("q") === "xylophonist")).toBe(true);
});
