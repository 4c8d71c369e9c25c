// The typed HTTP client for mainloop's API. Types come from the generated OpenAPI
// schema (`api/schema.d.ts`), so a server change that breaks the app fails `npm run check`.
import type { components } from "./api/schema";

type S = components["schemas"];
export type Task = S["Task"];
export type TaskState = S["TaskState"];
export type InboxItem = S["InboxItem"];
export type InboxKind = S["InboxKind"];
export type ChatMessage = S["ChatMessage"];
export type Question = S["Question"];
export type Answer = S["Answer"];
export type TaskDiff = S["TaskDiff"];
export type TranscriptEntry = S["TranscriptEntry"];
export type Project = S["Project"];
export type User = S["User"];

/** A failed request: the server's error code and message, or a network failure. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Called when a request finds the session gone (401), so the app can show login. */
let onUnauthorized: () => void = () => {};
export function setUnauthorizedHandler(f: () => void): void {
  onUnauthorized = f;
}

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  let res: Response;
  try {
    res = await fetch(`/api${path}`, {
      method,
      credentials: "same-origin",
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", "Cannot reach the server. Check the connection and try again.");
  }
  if (res.status === 204) return undefined as T;
  let json: unknown = null;
  try {
    json = await res.json();
  } catch {
    // A proxy error page, say; handled below by status.
  }
  if (!res.ok) {
    const err = (json as { error?: { code?: string; message?: string } } | null)?.error;
    if (res.status === 401 && !path.startsWith("/auth/login")) onUnauthorized();
    throw new ApiError(res.status, err?.code ?? "http", err?.message ?? `The server answered ${res.status}.`);
  }
  return json as T;
}

const get = <T>(path: string) => request<T>("GET", path);
const post = <T>(path: string, body: unknown = {}) => request<T>("POST", path, body);

export const api = {
  me: () => get<User>("/auth/me"),
  health: () => get<S["Health"]>("/health"),
  login: (token: string) => post<S["LoginResponse"]>("/auth/login", { token }),
  logout: () => post<void>("/auth/logout"),

  messages: (before?: string, limit = 50) =>
    get<S["MessagePage"]>(`/chat/messages?limit=${limit}${before ? `&before=${encodeURIComponent(before)}` : ""}`),
  postChat: (text: string) => post<S["ChatPosted"]>("/chat", { text }),

  tasks: (limit = 1000) => get<S["TaskList"]>(`/tasks?limit=${limit}`),
  task: (id: string) => get<Task>(`/tasks/${encodeURIComponent(id)}`),
  answers: (id: string, answers: Record<string, Answer>) =>
    post<Task>(`/tasks/${encodeURIComponent(id)}/answers`, { answers }),
  plan: (id: string, action: S["PlanDecision"], feedback?: string) =>
    post<Task>(`/tasks/${encodeURIComponent(id)}/plan`, { action, feedback }),
  review: (id: string, action: S["ReviewDecision"], feedback?: string) =>
    post<Task>(`/tasks/${encodeURIComponent(id)}/review`, { action, feedback }),
  cancel: (id: string) => post<Task>(`/tasks/${encodeURIComponent(id)}/cancel`),
  retry: (id: string) => post<Task>(`/tasks/${encodeURIComponent(id)}/retry`),
  transcript: (id: string, after: number, limit = 1000) =>
    get<S["TranscriptPage"]>(`/tasks/${encodeURIComponent(id)}/transcript?after=${after}&limit=${limit}`),
  diff: (id: string) => get<TaskDiff>(`/tasks/${encodeURIComponent(id)}/diff`),

  inbox: (limit = 1000, resolved = 100) => get<S["InboxList"]>(`/inbox?limit=${limit}&resolved=${resolved}`),
  markRead: (id: string, read = true) => post<InboxItem>(`/inbox/${encodeURIComponent(id)}/read`, { read }),
  projects: () => get<S["ProjectList"]>("/projects"),
};

export type PushSubscriptionInfo = S["PushSubscriptionView"];
export type NotificationSettings = S["NotificationSettings"];

export const notifications = {
  get: () => get<NotificationSettings>("/notifications"),
  subscribe: (sub: S["RegisterPushRequest"]) =>
    post<PushSubscriptionInfo>("/notifications/push", sub),
  unsubscribe: (id: string) => request<void>("DELETE", `/notifications/push/${encodeURIComponent(id)}`),
  setNtfy: (url: string | null) => request<NotificationSettings>("PUT", "/notifications/ntfy", { url }),
  test: () => post<void>("/notifications/test"),
};
