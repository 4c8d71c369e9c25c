// Signs of life in the chat: from the sent message to the first streamed word, the chat
// says it is thinking; the reply replaces that.
import { test, expect } from "@playwright/test";
import { World, worldPerTest } from "./harness";

const world = worldPerTest('rules:\n  - match: {user_contains: "ponder"}\n    delay_ms: 700\n    reply: [{text: "Pondered it through."}]\n', { MAINLOOP_WORKERS__CLAUDE_COMMAND: "/bin/false" });
let w: World;
test.beforeEach(() => {
  w = world();
});

test("the chat shows it is thinking until the first word arrives", async ({ page }) => {
  await w.open(page);
  const box = page.getByLabel("Message");
  await box.fill("please ponder this");
  await box.press("Enter");
  await expect(page.getByTestId("thinking")).toBeVisible();
  await expect(page.getByTestId("thinking")).toContainText("Thinking");
  await expect(page.getByText("Pondered it through.")).toBeVisible();
  await expect(page.getByTestId("thinking")).toHaveCount(0);
});
