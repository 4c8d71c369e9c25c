// The generated client against a recording fetch: the URLs, bodies and credentials it
// sends, and how it turns the API's error shape and network failures into ApiError.
import { describe, expect, it, vi } from "vitest";
import { ApiError, createApi, setUnauthorizedHandler } from "./api";

interface Sent {
  method: string;
  url: string;
  credentials: string;
  contentType: string | null;
  body: string;
}

function recorder(reply: () => Response | Promise<Response>) {
  const sent: Sent[] = [];
  const fetch = async (req: Request): Promise<Response> => {
    sent.push({
      method: req.method,
      url: req.url.replace("http://mainloop.test", ""),
      credentials: req.credentials,
      contentType: req.headers.get("content-type"),
      body: await req.text(),
    });
    return reply();
  };
  return { sent, ...createApi({ baseUrl: "http://mainloop.test", fetch }) };
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

describe("the API client", () => {
  it("builds each path and query from the schema", async () => {
    const { api, notifications, sent } = recorder(() => json(200, {}));
    await api.messages(undefined, 50);
    await api.messages("m/1", 50);
    await api.tasks(1000);
    await api.transcript("t 1", 0, 1000);
    await api.inbox(1000, 100);
    await api.cancel("t1");
    await notifications.unsubscribe("s1");
    expect(sent.map((s) => `${s.method} ${s.url}`)).toEqual([
      "GET /api/chat/messages?limit=50",
      "GET /api/chat/messages?limit=50&before=m%2F1",
      "GET /api/tasks?limit=1000",
      "GET /api/tasks/t%201/transcript?after=0&limit=1000",
      "GET /api/inbox?limit=1000&resolved=100",
      "POST /api/tasks/t1/cancel",
      "DELETE /api/notifications/push/s1",
    ]);
    expect(sent.every((s) => s.credentials === "same-origin")).toBe(true);
  });

  it("sends bodies as JSON", async () => {
    const { api, notifications, sent } = recorder(() => json(200, {}));
    await api.plan("t1", "revise", "smaller");
    await api.answers("t1", { q1: ["A"], q2: "free text" });
    await notifications.setNtfy(null);
    expect(sent.map((s) => [s.method, s.url, s.contentType, s.body])).toEqual([
      ["POST", "/api/tasks/t1/plan", "application/json", '{"action":"revise","feedback":"smaller"}'],
      ["POST", "/api/tasks/t1/answers", "application/json", '{"answers":{"q1":["A"],"q2":"free text"}}'],
      ["PUT", "/api/notifications/ntfy", "application/json", '{"url":null}'],
    ]);
  });

  it("sends spending's requests: usage, budgets, pause and a budget hold's answer", async () => {
    const { spending, sent } = recorder(() => json(200, {}));
    await spending.usage(7);
    await spending.setBudgets({ task_usd: 0.5 });
    await spending.setPaused(true);
    await spending.setPaused(false);
    await spending.answer("t 1", { action: "raise", usd: 2.5 });
    await spending.answer("t1", { action: "continue_once" });
    expect(sent.map((s) => [s.method, s.url, s.body])).toEqual([
      ["GET", "/api/usage?days=7", ""],
      ["PUT", "/api/budgets", '{"task_usd":0.5}'],
      ["POST", "/api/pause", ""],
      ["POST", "/api/resume", ""],
      ["POST", "/api/tasks/t%201/budget", '{"action":"raise","usd":2.5}'],
      ["POST", "/api/tasks/t1/budget", '{"action":"continue_once"}'],
    ]);
  });

  it("returns the parsed body, and nothing for 204", async () => {
    let reply = json(200, { tasks: [] });
    const { api } = recorder(() => reply);
    expect(await api.tasks()).toEqual({ tasks: [] });
    reply = new Response(null, { status: 204 });
    expect(await api.logout()).toBeUndefined();
  });

  it("turns the API's error shape into ApiError", async () => {
    const { api } = recorder(() => json(409, { error: { code: "wrong_state", message: "The task is not in review." } }));
    const e = await api.review("t1", "approve").catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ApiError);
    expect(e).toMatchObject({ status: 409, code: "wrong_state", message: "The task is not in review." });
  });

  it("names the status when the body is not the API's (a proxy's error page)", async () => {
    const { api } = recorder(() => new Response("<html>Bad gateway</html>", { status: 502 }));
    await expect(api.tasks()).rejects.toMatchObject({ status: 502, code: "http", message: "The server answered 502." });
  });

  it("reports an unreachable server as a network error", async () => {
    const { api } = createApi({
      baseUrl: "http://mainloop.test",
      fetch: () => Promise.reject(new TypeError("Failed to fetch")),
    });
    await expect(api.me()).rejects.toMatchObject({ status: 0, code: "network" });
  });

  it("a lost session calls the sign-in handler, except for a failed sign-in", async () => {
    const onUnauthorized = vi.fn();
    setUnauthorizedHandler(onUnauthorized);
    const { api } = recorder(() => json(401, { error: { code: "unauthorized", message: "Sign in." } }));
    await expect(api.login("wrong")).rejects.toMatchObject({ status: 401 });
    expect(onUnauthorized).not.toHaveBeenCalled();
    await expect(api.tasks()).rejects.toMatchObject({ status: 401, code: "unauthorized" });
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
    setUnauthorizedHandler(() => {});
  });
});
