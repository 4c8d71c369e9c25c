// Memory: the day/week/month digests and the time zone their days are counted in. A new
// user's memory screen says when the first digest comes, in their zone; the zone set in
// Settings (this device's offered first) sticks after a reload and goes back to the
// server's default. A day lived under a clock set back ~10 days (libfaketime), then the
// server restarted on the real clock: its sweep makes the digests of every day since, and
// the day's card lists what was asked, spawned, decided and failed, each task opening
// its page; the week's and month's tabs list theirs; a digest's search hit opens it.
import { test, expect, type Page } from "@playwright/test";
import AxeBuilder from "@axe-core/playwright";
import { World, shot } from "./harness";

// Every chat turn is answered at once; tasks fail at once (no agent).
const SCRIPT = 'rules:\n  - match: {}\n    reply: [{text: "Noted."}]\n';
const ENV = { MAINLOOP_WORKERS__CLAUDE_COMMAND: "/bin/false" };

let w: World | undefined;
test.afterEach(async () => {
  await w?.close();
  w = undefined;
});

async function world(options: { faketime?: string } = {}): Promise<World> {
  w = new World();
  w.makeRepo();
  await w.startFake(SCRIPT);
  await w.startServer(ENV, options);
  return w;
}

async function accessible(page: Page): Promise<void> {
  const results = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
  const serious = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  expect(serious.map((v) => `${v.id} ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`)).toEqual([]);
}

/**
 * The day to live in the past (UTC): ten days ago, or the last day of the previous month
 * if that is earlier, so that its week and its month have both ended by now.
 */
function pastDay(now = new Date()): string {
  const tenAgo = new Date(now.getTime() - 10 * 86_400_000);
  const lastOfPrevMonth = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 0, 10));
  return (tenAgo < lastOfPrevMonth ? tenAgo : lastOfPrevMonth).toISOString().slice(0, 10);
}

interface Digest {
  id: string;
  period: "day" | "week" | "month";
  start: string;
  end: string;
  quiet: boolean;
}

test.describe("with the device in Tokyo", () => {
  test.use({ timezoneId: "Asia/Tokyo" });

  test("the empty memory screen says when the first digest comes; the time zone set in Settings sticks", async ({ page }, info) => {
    const wide = info.project.name === "desktop";
    const w = await world();
    await w.open(page);
    if (wide) {
      await page.getByTestId("memory-link").click();
    } else {
      await expect(page.getByTestId("memory-link")).toHaveCount(0);
      await page.getByRole("link", { name: "Settings" }).click();
      await page.getByTestId("settings-memory-link").click();
    }
    await expect(page).toHaveURL(/\/memory$/);
    await expect(page.getByTestId("memory-empty")).toHaveText("The first digest appears after midnight (UTC).");
    await page.getByRole("tab", { name: "Weeks" }).click();
    await expect(page).toHaveURL(/\/memory\?period=week$/);
    await expect(page.getByRole("tab", { name: "Weeks" })).toHaveAttribute("aria-selected", "true");
    await expect(page.getByTestId("memory-empty")).toContainText("week ends");
    await accessible(page);

    // Settings: the server's default, then this device's zone, offered first.
    await page.goto(`${w.base}/settings`);
    const form = page.getByTestId("time-zone");
    await expect(form.getByTestId("time-zone-current")).toHaveText("UTC (server default)");
    await expect(form.getByTestId("time-zone-reset")).toHaveCount(0);
    const select = form.getByTestId("time-zone-select");
    await expect(select.locator("option").first()).toHaveText("Use this device's zone: Asia/Tokyo");
    await select.selectOption({ label: "Use this device's zone: Asia/Tokyo" });
    await form.getByRole("button", { name: "Save" }).click();
    await expect(form.getByRole("status")).toHaveText("Saved.");
    await expect(form.getByTestId("time-zone-current")).toHaveText("Asia/Tokyo");
    await form.scrollIntoViewIfNeeded();
    await shot(page, info.project.name, "time-zone");

    await page.reload();
    await expect(form.getByTestId("time-zone-current")).toHaveText("Asia/Tokyo");
    await expect(select).toHaveValue("Asia/Tokyo");
    expect(await w.api(page, "GET", "/settings/time-zone")).toEqual({ time_zone: "Asia/Tokyo", default: false });
    await page.goto(`${w.base}/memory`);
    await expect(page.getByTestId("memory-empty")).toHaveText("The first digest appears after midnight (Asia/Tokyo).");

    // Another zone from the list, then back to the server's default.
    await page.goto(`${w.base}/settings`);
    await select.selectOption("Europe/Paris");
    await form.getByRole("button", { name: "Save" }).click();
    await expect(form.getByTestId("time-zone-current")).toHaveText("Europe/Paris");
    await form.getByTestId("time-zone-reset").click();
    await expect(form.getByRole("status")).toHaveText("Back to the server's default: UTC.");
    await expect(form.getByTestId("time-zone-current")).toHaveText("UTC (server default)");
    await page.reload();
    await expect(form.getByTestId("time-zone-current")).toHaveText("UTC (server default)");
  });
});

test("a past day's digest lists what happened and opens each task; weeks, months and search find theirs", async ({ page }, info) => {
  const day = pastDay();
  const w = await world({ faketime: `${day} 10:00:00` });

  // A day in the past: a message, a task (it fails: no agent), a decision.
  const said = await w.api<{ message_id: string }>(page, "POST", "/chat", { text: "Plan the wombat importer" });
  const task = await w.api<{ id: string }>(page, "POST", "/tasks", { description: "Refactor the wombat importer", repo: w.repo });
  const note = await w.api<{ id: string }>(page, "POST", "/notes", { kind: "decision", text: "Wombats are imported on Tuesdays." });
  await expect.poll(async () => (await w.api<{ state: string }>(page, "GET", `/tasks/${task.id}`)).state).toBe("failed");
  await expect
    .poll(async () => (await w.api<{ messages: { role: string }[] }>(page, "GET", "/chat/messages")).messages.some((m) => m.role === "assistant"))
    .toBe(true);
  const created = await w.api<{ created_at: string }>(page, "GET", `/tasks/${task.id}`);
  expect(created.created_at.slice(0, 10)).toBe(day);

  // Back on the real clock: the sweep makes every digest since.
  await w.stopServer();
  await w.startServer(ENV);
  const digests = async (period: string) => (await w.api<{ digests: Digest[] }>(page, "GET", `/digests?period=${period}&limit=200`)).digests;
  let dayDigest: Digest | undefined;
  let weekDigest: Digest | undefined;
  let monthDigest: Digest | undefined;
  await expect
    .poll(async () => {
      dayDigest = (await digests("day")).find((d) => d.start === day);
      weekDigest = (await digests("week")).find((d) => d.start <= day && day < d.end);
      monthDigest = (await digests("month")).find((d) => d.start <= day && day < d.end);
      return [dayDigest?.quiet, weekDigest?.quiet, monthDigest?.quiet];
    })
    .toEqual([false, false, false]);

  // The day's card: its sections, each line opening where it happened.
  await w.open(page, "/memory");
  const card = page.locator(`[data-digest-id="${dayDigest!.id}"]`);
  const older = page.getByTestId("memory-older");
  while ((await card.count()) === 0 && (await older.isVisible())) await older.click();
  await expect(card).toBeVisible();
  await expect(card.getByTestId("digest-section").locator("h3")).toHaveText(["Asked — 1 message", "Spawned", "Decided", "Failed"]);
  const section = (key: string) => card.locator(`[data-section="${key}"]`);
  await expect(section("asked").getByRole("link", { name: "Plan the wombat importer" })).toHaveAttribute("href", `/?message=${said.message_id}`);
  await expect(section("decided").getByRole("link", { name: "Wombats are imported on Tuesdays." })).toHaveAttribute("href", `/notes#${note.id}`);
  await expect(section("failed").getByRole("link", { name: "Refactor the wombat importer" })).toHaveAttribute("href", `/tasks/${task.id}`);
  // The days after it were quiet: one dim line each.
  await expect(page.locator('[data-quiet="true"]').first()).toContainText("Nothing happened");
  await card.scrollIntoViewIfNeeded();
  await shot(page, info.project.name, "memory");
  await accessible(page);

  await section("spawned").getByRole("link", { name: "Refactor the wombat importer" }).click();
  await expect(page).toHaveURL(new RegExp(`/tasks/${task.id}$`));
  await expect(page.getByTestId("task-state")).toBeVisible();
  await page.goBack();

  // The week's and the month's tabs.
  await page.getByRole("tab", { name: "Weeks" }).click();
  const week = page.locator(`[data-digest-id="${weekDigest!.id}"]`);
  await expect(week).toBeVisible();
  await expect(week.getByTestId("digest-title")).toHaveText(/^Week of /);
  await expect(week.locator('[data-section="spawned"]').getByRole("link", { name: "Refactor the wombat importer" })).toHaveAttribute("href", `/tasks/${task.id}`);
  await page.getByRole("tab", { name: "Months" }).click();
  const month = page.locator(`[data-digest-id="${monthDigest!.id}"]`);
  await expect(month).toBeVisible();
  await expect(month.locator('[data-section="failed"]').getByRole("link", { name: "Refactor the wombat importer" })).toBeVisible();

  // A digest's search hit opens it on its own page.
  if (info.project.name !== "desktop") await page.getByRole("button", { name: "Search" }).click();
  await page.getByTestId("search-input").fill("wombat");
  const hit = page.getByTestId("search-hit").and(page.locator("[data-kind=digest]"));
  await expect(hit.first()).toBeVisible();
  await hit.first().click();
  await expect(page).toHaveURL(/\/memory\/[0-9a-f-]{36}$/);
  const opened = page.getByTestId("digest");
  await expect(opened).toHaveCount(1);
  await expect(opened.getByTestId("digest-title")).toBeVisible();
  await shot(page, info.project.name, "memory-digest");
  await expect(opened.locator('[data-section="spawned"]').getByRole("link", { name: "Refactor the wombat importer" })).toHaveAttribute("href", `/tasks/${task.id}`);
});
