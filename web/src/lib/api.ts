// The typed HTTP client for mainloop's API. Paths, path parameters, query strings,
// bodies and replies all come from the generated OpenAPI schema (`api/schema.d.ts`)
// through openapi-fetch, so a server change that breaks the app fails `npm run check`.
import createClient, { type ClientOptions } from "openapi-fetch";
import type { components, paths } from "./api/schema";

type S = components["schemas"];
export type Task = S["Task"];
export type TaskState = S["TaskState"];
export type InboxItem = S["InboxItem"];
export type InboxKind = S["InboxKind"];
export type ChatMessage = S["ChatMessage"];
export type Question = S["Question"];
export type Answer = S["Answer"];
export type TaskDiff = S["TaskDiff"];
export type PlanRevision = S["PlanRevisionView"];
export type TranscriptEntry = S["TranscriptEntry"];
/** A stored transcript entry: a transcript page's entries, and the `task.output` event. */
export type TranscriptRecord = S["TranscriptRecord"];
export type Project = S["Project"];
export type User = S["User"];
export type EventName = S["EventName"];
/** Each live event's payload, by name. */
export type EventData = S["EventData"];
export type PushSubscriptionInfo = S["PushSubscriptionView"];
export type NotificationSettings = S["NotificationSettings"];
/** Which provider answers the chat, whether it can now, and what to do when it cannot. */
export type ModelStatus = S["ModelStatus"];
/** A configured coding agent: its protocol, whether the server has it, what it can do. */
export type AgentInfo = S["AgentInfo"];
/** What mainloop holds on disk, and its tasks by footprint. */
export type SystemStatus = S["SystemStatus"];
/** Spending: the usage report and its parts, budgets, the pause, a budget hold's answer. */
export type Usage = S["Usage"];
export type UsageDay = S["UsageDay"];
export type Totals = S["Totals"];
export type QuotaWindow = S["QuotaWindow"];
export type Budgets = S["Budgets"];
export type AgentBudget = S["AgentBudget"];
export type PauseState = S["PauseState"];
export type HoldKind = S["HoldKind"];
export type BudgetAnswer = S["BudgetAnswer"];
export type UsageUpdated = S["UsageUpdated"];
export type SearchHit = S["SearchHit"];
export type SearchKind = S["SearchKind"];
export type Note = S["Note"];
export type NoteKind = S["NoteKind"];
export type NoteInput = S["NoteInput"];
export type SearchQuery = paths["/api/search"]["get"]["parameters"]["query"];
/** The temporal pyramid: a day's, week's or month's digest, its facts, the user's time zone. */
export type Runner = S["Runner"];
export type Digest = S["Digest"];
export type DigestFacts = S["DigestFacts"];
export type DigestPeriod = S["Period"];
export type TaskLine = S["TaskLine"];
export type TimeZoneSetting = S["TimeZoneSetting"];
export type DigestsQuery = NonNullable<paths["/api/digests"]["get"]["parameters"]["query"]>;

/** The live event stream (read with EventSource, not fetch) and its resume parameter. */
export const EVENTS_PATH = "/api/events" satisfies keyof paths;
export type EventsQuery = NonNullable<paths[typeof EVENTS_PATH]["get"]["parameters"]["query"]>;

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

/** What openapi-fetch resolves to: the parsed body, or the parsed error body. */
interface Reply<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** The reply's body, or an ApiError carrying the API's one error shape. */
async function unwrap<T>(call: Promise<Reply<T>>): Promise<T> {
  const { data, error, response } = await call;
  if (!response.ok) {
    const err = (error as { error?: { code?: string; message?: string } } | null | undefined)?.error;
    throw new ApiError(
      response.status,
      err?.code ?? "http",
      err?.message ?? `The server answered ${response.status}.`,
    );
  }
  return data as T;
}

/**
 * The API over a given fetch. Cookies ride along (same origin); the browser adds the
 * `Origin` header the server checks on cookie-authenticated writes.
 */
export function createApi(options: ClientOptions = {}) {
  const client = createClient<paths>({ credentials: "same-origin", ...options });
  client.use({
    onError: () => new ApiError(0, "network", "Cannot reach the server. Check the connection and try again."),
    onResponse: ({ response, schemaPath }) => {
      if (response.status === 401 && schemaPath !== "/api/auth/login" && schemaPath !== "/api/auth/link") onUnauthorized();
      return undefined;
    },
  });
  const id = (id: string) => ({ params: { path: { id } } });

  const api = {
    me: () => unwrap(client.GET("/api/auth/me")),
    health: () => unwrap(client.GET("/api/health")),
    login: (token: string) => unwrap(client.POST("/api/auth/login", { body: { token } })),
    loginWithLink: (code: string) => unwrap(client.POST("/api/auth/link", { body: { code } })),
    logout: () => unwrap(client.POST("/api/auth/logout")),

    messages: (before?: string, limit = 50) =>
      unwrap(client.GET("/api/chat/messages", { params: { query: { limit, before } } })),
    postChat: (text: string) => unwrap(client.POST("/api/chat", { body: { text } })),

    createTask: (body: S["CreateTaskRequest"]) => unwrap(client.POST("/api/tasks", { body })),
    tasks: (limit = 1000) => unwrap(client.GET("/api/tasks", { params: { query: { limit } } })),
    task: (taskId: string) => unwrap(client.GET("/api/tasks/{id}", id(taskId))),
    answers: (taskId: string, answers: Record<string, Answer>) =>
      unwrap(client.POST("/api/tasks/{id}/answers", { ...id(taskId), body: { answers } })),
    plan: (taskId: string, action: S["PlanDecision"], feedback?: string) =>
      unwrap(client.POST("/api/tasks/{id}/plan", { ...id(taskId), body: { action, feedback } })),
    review: (taskId: string, action: S["ReviewDecision"], feedback?: string) =>
      unwrap(client.POST("/api/tasks/{id}/review", { ...id(taskId), body: { action, feedback } })),
    cancel: (taskId: string) => unwrap(client.POST("/api/tasks/{id}/cancel", id(taskId))),
    openPreview: (taskId: string) => unwrap(client.POST("/api/tasks/{id}/preview", id(taskId))),
    stopPreview: (taskId: string) => unwrap(client.DELETE("/api/tasks/{id}/preview", id(taskId))),
    /** Retries a failed task, telling the worker what to do differently if `feedback` says. */
    retry: (taskId: string, feedback?: string) =>
      unwrap(
        client.POST("/api/tasks/{id}/retry", {
          ...id(taskId),
          ...(feedback?.trim() ? { body: { feedback: feedback.trim() } } : {}),
        }),
      ),
    transcript: (taskId: string, after: number, limit = 1000) =>
      unwrap(
        client.GET("/api/tasks/{id}/transcript", { params: { path: { id: taskId }, query: { after, limit } } }),
      ),
    diff: (taskId: string) => unwrap(client.GET("/api/tasks/{id}/diff", id(taskId))),
    plans: (taskId: string) => unwrap(client.GET("/api/tasks/{id}/plans", id(taskId))),

    inbox: (limit = 1000, resolved = 100) =>
      unwrap(client.GET("/api/inbox", { params: { query: { limit, resolved } } })),
    markRead: (itemId: string, read = true) =>
      unwrap(client.POST("/api/inbox/{id}/read", { ...id(itemId), body: { read } })),
    projects: () => unwrap(client.GET("/api/projects")),
    model: () => unwrap(client.GET("/api/model")),
    system: () => unwrap(client.GET("/api/system")),
    agents: () => unwrap(client.GET("/api/agents")),
    /** The user's history matching `query.q`, best first; `signal` drops an answer no longer wanted. */
    search: (query: SearchQuery, signal?: AbortSignal) =>
      unwrap(client.GET("/api/search", { params: { query }, ...(signal ? { signal } : {}) })),
    /** The user's notes and decisions, most recently written or edited first. */
    notes: () => unwrap(client.GET("/api/notes")),
    addNote: (body: NoteInput) => unwrap(client.POST("/api/notes", { body })),
    editNote: (noteId: string, body: NoteInput) => unwrap(client.PUT("/api/notes/{id}", { ...id(noteId), body })),
    deleteNote: (noteId: string) => unwrap(client.DELETE("/api/notes/{id}", id(noteId))),
    /** The user's runners, newest first (revoked ones included). */
    runners: () => unwrap(client.GET("/api/runners")),
    /** Creates a runner; the answer holds its token, shown only this once. */
    createRunner: (name: string) => unwrap(client.POST("/api/runners", { body: { name } })),
    /** Revokes a runner's token; a connected runner disconnects at once. */
    revokeRunner: (runnerId: string) => unwrap(client.DELETE("/api/runners/{id}", id(runnerId))),
    /** Digests of one period, newest first; `before` (a date) pages to older ones. */
    digests: (query: DigestsQuery) => unwrap(client.GET("/api/digests", { params: { query } })),
    digest: (digestId: string) => unwrap(client.GET("/api/digests/{id}", id(digestId))),
    /** The time zone days are counted in, and whether it is the server's default. */
    timeZone: () => unwrap(client.GET("/api/settings/time-zone")),
    /** Sets the time zone (an IANA name), or goes back to the server's default with null. */
    setTimeZone: (time_zone: string | null) => unwrap(client.PUT("/api/settings/time-zone", { body: { time_zone } })),
  };

  const notifications = {
    get: () => unwrap(client.GET("/api/notifications")),
    subscribe: (sub: S["RegisterPushRequest"]) => unwrap(client.POST("/api/notifications/push", { body: sub })),
    unsubscribe: (subId: string) => unwrap(client.DELETE("/api/notifications/push/{id}", id(subId))),
    setNtfy: (url: string | null) => unwrap(client.PUT("/api/notifications/ntfy", { body: { url } })),
    test: () => unwrap(client.POST("/api/notifications/test")),
  };

  const spending = {
    usage: (days: number) => unwrap(client.GET("/api/usage", { params: { query: { days } } })),
    budgets: () => unwrap(client.GET("/api/budgets")),
    setBudgets: (body: Budgets) => unwrap(client.PUT("/api/budgets", { body })),
    pause: () => unwrap(client.GET("/api/pause")),
    setPaused: (paused: boolean) => unwrap(paused ? client.POST("/api/pause") : client.POST("/api/resume")),
    /** Answers a budget hold: raise the cap it met, or let the task run once past it. */
    answer: (taskId: string, body: BudgetAnswer) => unwrap(client.POST("/api/tasks/{id}/budget", { ...id(taskId), body })),
  };

  return { api, notifications, spending };
}

export const { api, notifications, spending } = createApi();
