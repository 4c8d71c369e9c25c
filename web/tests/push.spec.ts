// Web Push end to end: the user turns push on in settings, a worker's question creates a
// needs-you item, the server sends an encrypted, VAPID-signed push to a local fake push
// service (which verifies and decrypts it), and the payload delivered to the app's real
// service worker shows a notification that opens the item.
import { test, expect } from "@playwright/test";
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import path from "node:path";
import { World } from "./harness";

const BIN_DIR = path.resolve(process.env.MAINLOOP_BIN_DIR ?? path.join(import.meta.dirname, "../../target/debug"));

const SCRIPT = `
rules:
  - name: ask
    match: {user_contains: "pick a colour", tool_offered: AskUserQuestion}
    reply:
      - tool_use:
          name: AskUserQuestion
          input:
            questions:
              - question: "Which colour?"
                header: "Colour"
                options:
                  - {label: "Red", description: "warm"}
                  - {label: "Blue", description: "cool"}
                multiSelect: false
`;

interface FakeSubscription {
  id: string;
  endpoint: string;
  keys: { p256dh: string; auth: string };
}

interface PushMessage {
  subscription_id: string;
  payload: { title: string; body: string; url: string; tag: string; item_id: string; task_id: string | null; kind: string };
  urgency: string | null;
  topic: string | null;
}

let w: World;
let push: ChildProcess | null = null;
let pushUrl = "";

test.beforeEach(async () => {
  w = new World();
  w.makeRepo();
  await w.startFake(SCRIPT);
  await w.startServer();
  push = spawn(path.join(BIN_DIR, "mainloop-fake-push"), [], { stdio: ["ignore", "pipe", "inherit"] });
  pushUrl = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: push!.stdout! });
    lines.on("line", (l) => {
      const m = /listening on (\S+)/.exec(l);
      if (m?.[1]) resolve(m[1]);
    });
    push!.on("exit", (c) => reject(new Error(`mainloop-fake-push exited with ${c}`)));
  });
});

test.afterEach(async () => {
  push?.kill();
  await w.close();
});

test("a needs-you item reaches a subscribed browser as a push notification", async ({ page, context }) => {
  const sub = (await (await page.request.post(`${pushUrl}/subscriptions`)).json()) as FakeSubscription;
  // Headless chromium has no push service of its own; the subscription it would return
  // comes from the local fake instead, with the same shape and real keys.
  await context.grantPermissions(["notifications"], { origin: w.base });
  await page.addInitScript((s: FakeSubscription) => {
    const fake = { endpoint: s.endpoint, expirationTime: null, toJSON: () => ({ endpoint: s.endpoint, keys: s.keys }), unsubscribe: async () => true };
    let subscribed = false;
    PushManager.prototype.subscribe = async function () {
      subscribed = true;
      return fake as unknown as PushSubscription;
    };
    PushManager.prototype.getSubscription = async function () {
      return (subscribed ? fake : null) as unknown as PushSubscription | null;
    };
  }, sub);

  await w.signIn(page);
  await page.goto(`${w.base}/settings`);
  await page.getByTestId("push-toggle").click();
  await expect(page.getByTestId("push-toggle")).toHaveText(/Turn off push/);
  const settings = await w.api<{ subscriptions: { endpoint: string }[] }>(page, "GET", "/notifications");
  expect(settings.subscriptions.map((s) => s.endpoint)).toEqual([sub.endpoint]);

  // A worker asks a question: a needs-you item, so a push.
  const task = await w.api<{ id: string }>(page, "POST", "/tasks", { description: "pick a colour", repo: w.repo });
  let message: PushMessage | undefined;
  await expect
    .poll(async () => {
      const list = (await (await page.request.get(`${pushUrl}/messages`)).json()) as PushMessage[];
      message = list.find((m) => m.payload.kind === "question");
      return message !== undefined;
    }, { timeout: 60_000 })
    .toBe(true);
  expect(message!.subscription_id).toBe(sub.id);
  expect(message!.payload.task_id).toBe(task.id);
  expect(message!.payload.url).toBe(`/tasks/${task.id}?item=${message!.payload.item_id}`);
  expect(message!.urgency).toBe("high");

  // Hand the decrypted payload to the app's real service worker, as the browser's push
  // service would, and check the notification it shows.
  const cdp = await context.newCDPSession(page);
  const registration = new Promise<string>((resolve) => {
    cdp.on("ServiceWorker.workerRegistrationUpdated", (ev) => {
      const r = ev.registrations.find((x) => x.scopeURL.startsWith(w.base) && !x.isDeleted);
      if (r) resolve(r.registrationId);
    });
  });
  await cdp.send("ServiceWorker.enable");
  const registrationId = await registration;
  // The worker must be active to receive a push; a push that reaches it while it is still
  // installing is dropped, as a browser's own push service would retry, so we do too.
  await page.evaluate(() => navigator.serviceWorker.ready.then(() => true));
  const shown = () =>
    page.evaluate(async () => {
      const reg = await navigator.serviceWorker.ready;
      return (await reg.getNotifications()).map((n) => ({ title: n.title, tag: n.tag, url: (n.data as { url: string }).url }));
    });
  const expected = [{ title: message!.payload.title, tag: message!.payload.tag, url: message!.payload.url }];
  for (let attempt = 0; attempt < 5; attempt++) {
    await cdp.send("ServiceWorker.deliverPushMessage", {
      origin: w.base,
      registrationId,
      data: JSON.stringify(message!.payload),
    });
    try {
      await expect.poll(shown, { timeout: 5_000 }).toEqual(expected);
      break;
    } catch (e) {
      if (attempt === 4) throw e;
    }
  }
  // One notification per item, however often it was delivered (the tag replaces it).
  expect(await shown()).toEqual(expected);

  // The notification's link opens the item.
  await page.goto(`${w.base}${message!.payload.url}`);
  await expect(page.getByTestId("question-text")).toHaveText("Which colour?");

  // Turning push off removes the subscription on the server.
  await page.goto(`${w.base}/settings`);
  await page.getByTestId("push-toggle").click();
  await expect(page.getByTestId("push-toggle")).toHaveText(/Turn on push/);
  const after = await w.api<{ subscriptions: unknown[] }>(page, "GET", "/notifications");
  expect(after.subscriptions).toEqual([]);
});
