// Notes and decisions: from Settings (and the desktop top bar) to the notes screen; a
// note added, edited in place (its line breaks kept, a blank edit refused with the
// reason), and deleted after a confirmation; a note the API adds appears live; a search
// hit of kind note opens the screen scrolled to it and outlined.
import { test, expect } from "@playwright/test";
import { World, worldPerTest, shot } from "./harness";

const world = worldPerTest('rules:\n  - match: {}\n    reply: [{text: "Noted."}]\n', { MAINLOOP_WORKERS__CLAUDE_COMMAND: "/bin/false" });
let w: World;
test.beforeEach(() => {
  w = world();
});

test("notes are added, edited, deleted, and arrive live", async ({ page }, info) => {
  const wide = info.project.name === "desktop";
  await w.open(page);
  if (wide) {
    await page.getByTestId("notes-link").click();
  } else {
    await expect(page.getByTestId("notes-link")).toHaveCount(0);
    await page.getByRole("link", { name: "Settings" }).click();
    await page.getByTestId("settings-notes-link").click();
  }
  await expect(page).toHaveURL(/\/notes$/);
  await expect(page.getByTestId("notes-empty")).toBeVisible();

  // Add a decision with a line break.
  const add = page.getByTestId("note-add");
  await add.getByRole("radio", { name: "Decision" }).click();
  await page.getByTestId("note-text").fill("We deploy on Tuesdays.\nNever on Fridays.");
  await add.getByRole("button", { name: "Add" }).click();
  const notes = page.getByTestId("note");
  await expect(notes).toHaveCount(1);
  await expect(page.getByTestId("note-text")).toHaveValue("");
  const first = notes.first();
  await expect(first.getByTestId("note-kind")).toHaveText("Decision");
  expect(await first.getByTestId("note-body").innerText()).toBe("We deploy on Tuesdays.\nNever on Fridays.");

  // A blank note is refused before it is sent.
  await add.getByRole("button", { name: "Add" }).click();
  await expect(add.getByRole("alert")).toHaveText("Write the note first.");

  // Edit in place: a blank edit says why; a real one saves.
  await first.getByRole("button", { name: "Edit" }).click();
  const edit = first.getByTestId("note-edit-text");
  await edit.fill("   ");
  await first.getByRole("button", { name: "Save" }).click();
  await expect(first.getByRole("alert")).toHaveText("Write the note first.");
  await edit.fill("We deploy on Wednesdays.");
  await first.getByRole("radio", { name: "Fact" }).click();
  await first.getByRole("button", { name: "Save" }).click();
  await expect(first.getByTestId("note-body")).toHaveText("We deploy on Wednesdays.");
  await expect(first.getByTestId("note-kind")).toHaveText("Fact");

  // A note added elsewhere appears without a reload.
  const posted = await w.api<{ id: string }>(page, "POST", "/notes", { kind: "fact", text: "The billing code lives in crates/billing." });
  await expect(notes).toHaveCount(2);
  await expect(page.locator(`[data-note-id="${posted.id}"]`).getByTestId("note-body")).toHaveText("The billing code lives in crates/billing.");
  await shot(page, info.project.name, "notes");

  // Delete asks first; keeping it keeps it.
  const target = page.locator(`[data-note-id="${posted.id}"]`);
  await target.getByRole("button", { name: "Delete…" }).click();
  await target.getByRole("button", { name: "Keep it" }).click();
  await expect(notes).toHaveCount(2);
  await target.getByRole("button", { name: "Delete…" }).click();
  await target.getByRole("button", { name: "Yes, delete the note" }).click();
  await expect(notes).toHaveCount(1);
  await expect(target).toHaveCount(0);
});

test("a note's search hit opens it on the notes screen, outlined", async ({ page }, info) => {
  await w.open(page);
  for (let i = 1; i <= 20; i++) await w.api(page, "POST", "/notes", { kind: "fact", text: `filler note ${i}` });
  const posted = await w.api<{ id: string }>(page, "POST", "/notes", { kind: "decision", text: "The wombat service is retired." });
  for (let i = 21; i <= 30; i++) await w.api(page, "POST", "/notes", { kind: "fact", text: `filler note ${i}` });
  await page.goto(`${w.base}/`);
  if (info.project.name !== "desktop") await page.getByRole("button", { name: "Search" }).click();
  await page.getByTestId("search-input").fill("wombat");
  const hit = page.getByTestId("search-hit").and(page.locator("[data-kind=note]"));
  await expect(hit).toHaveCount(1);
  await hit.click();
  await expect(page).toHaveURL(new RegExp(`/notes#${posted.id}$`));
  const note = page.locator(`[data-note-id="${posted.id}"]`);
  await expect(note).toBeInViewport();
  await expect(note).toHaveClass(/found/);
});
