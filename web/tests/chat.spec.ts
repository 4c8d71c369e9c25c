// Signs of life in the chat: from the sent message to the first streamed word, the chat
// says it is thinking; the reply replaces that.
import { test, expect } from "@playwright/test";
import { World } from "./harness";

let w: World;

test.beforeEach(async () => {
  w = new World();
  w.makeRepo();
  await w.startFake(
    'rules:\n  - match: {user_contains: "ponder"}\n    delay_ms: 700\n    reply: [{text: "Pondered it through."}]\n',
  );
  await w.startServer({ MAINLOOP_WORKERS__CLAUDE_COMMAND: "/bin/false" });
});

test.afterEach(async () => {
  await w.close();
});

test("the chat shows it is thinking until the first word arrives", async ({ page }) => {
  await w.signIn(page);
  await page.goto(`${w.base}/`);
  await expect(page.getByTestId("connection")).toHaveAttribute("data-state", "live");
  const box = page.getByLabel("Message");
  await box.fill("please ponder this");
  await box.press("Enter");
  await expect(page.getByTestId("thinking")).toBeVisible();
  await expect(page.getByTestId("thinking")).toContainText("Thinking");
  await expect(page.getByText("Pondered it through.")).toBeVisible();
  await expect(page.getByTestId("thinking")).toHaveCount(0);
});
