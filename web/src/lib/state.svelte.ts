// The app's live model of the server: tasks, inbox, chat and the event stream that
// keeps them current. Snapshots and events are merged so the result converges whatever
// order they arrive in (events are applied after the snapshot they raced with).
import { SvelteMap } from "svelte/reactivity";
import { api, type ChatMessage, type InboxItem, type Project, type Task, type TranscriptEntry, type User } from "./api";

export type Connection = "connecting" | "live" | "reconnecting" | "offline";

/** One piece of agent output as it arrives live (a `task.output` event). */
export interface OutputEvent extends TranscriptEntry {
  task_id: string;
}

type Listener<T> = (value: T) => void;

const NEEDS_YOU: ReadonlySet<string> = new Set(["question", "plan_review", "review"]);
export const ACTIVE_STATES: ReadonlySet<string> = new Set(["queued", "planning", "implementing", "checking"]);
export const FINAL_STATES: ReadonlySet<string> = new Set(["merged", "cancelled"]);

class AppState {
  user = $state<User | null>(null);
  authChecked = $state(false);
  connection = $state<Connection>("connecting");
  loaded = $state(false);
  tasks = new SvelteMap<string, Task>();
  inbox = new SvelteMap<string, InboxItem>();
  projects = $state<Project[]>([]);
  /** The newest line of output per running task, for the inbox's status line. */
  lastOutput = new SvelteMap<string, string>();

  messages = $state<ChatMessage[]>([]);
  hasOlder = $state(false);
  /** Text streamed so far per turn, until the stored message replaces it. */
  streaming = new SvelteMap<string, string>();
  chatError = $state<string | null>(null);

  private source: EventSource | null = null;
  private lastEventId: number | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private failures = 0;
  private buffering = false;
  private buffer: { name: string; data: unknown }[] = [];
  private outputListeners = new Set<Listener<OutputEvent>>();

  /** Items that need the human, most urgent first (the server's order). */
  needsYou = $derived.by(() => this.openItems().filter((i) => NEEDS_YOU.has(i.kind)));
  failed = $derived.by(() => this.openItems().filter((i) => i.kind === "failed"));

  openItems(): InboxItem[] {
    return [...this.inbox.values()].filter((i) => !i.resolved_at).sort(inboxOrder);
  }

  async start(): Promise<void> {
    this.connect();
    await this.refresh();
  }

  stop(): void {
    this.source?.close();
    this.source = null;
    if (this.retryTimer) clearTimeout(this.retryTimer);
  }

  /** Reloads every snapshot; events arriving meanwhile are applied afterwards. */
  async refresh(): Promise<void> {
    this.buffering = true;
    try {
      const [tasks, inbox, projects, page] = await Promise.all([
        api.tasks(1000),
        api.inbox(1000, 100),
        api.projects(),
        api.messages(undefined, 50),
      ]);
      this.tasks.clear();
      for (const t of tasks.tasks) this.tasks.set(t.id, t);
      this.inbox.clear();
      for (const i of inbox.items) this.inbox.set(i.id, i);
      this.projects = projects.projects;
      this.mergeNewestMessages(page.messages, page.has_more);
      this.loaded = true;
    } finally {
      this.buffering = false;
      const pending = this.buffer;
      this.buffer = [];
      for (const e of pending) this.apply(e.name, e.data);
    }
  }

  private mergeNewestMessages(page: ChatMessage[], hasMore: boolean): void {
    if (this.messages.length === 0) {
      this.messages = page;
      this.hasOlder = hasMore;
      return;
    }
    const known = new Set(this.messages.map((m) => m.id));
    const fresh = page.filter((m) => !known.has(m.id));
    if (fresh.length) this.messages = [...this.messages, ...fresh].sort((a, b) => a.seq - b.seq);
  }

  async loadOlder(): Promise<boolean> {
    const first = this.messages[0];
    if (!first || !this.hasOlder) return false;
    const page = await api.messages(first.id, 50);
    const known = new Set(this.messages.map((m) => m.id));
    this.messages = [...page.messages.filter((m) => !known.has(m.id)), ...this.messages];
    this.hasOlder = page.has_more;
    return page.messages.length > 0;
  }

  private projectsLoading = false;

  /** A task in a project not seen yet: fetch the list again (once at a time). */
  private async loadProjects(): Promise<void> {
    if (this.projectsLoading) return;
    this.projectsLoading = true;
    try {
      this.projects = (await api.projects()).projects;
    } catch {
      // The next snapshot refresh retries.
    } finally {
      this.projectsLoading = false;
    }
  }

  onOutput(f: Listener<OutputEvent>): () => void {
    this.outputListeners.add(f);
    return () => this.outputListeners.delete(f);
  }

  private connect(): void {
    this.source?.close();
    const url = this.lastEventId === null ? "/api/events" : `/api/events?after=${this.lastEventId}`;
    const es = new EventSource(url);
    this.source = es;
    es.onopen = () => {
      const wasDown = this.failures > 0 || this.connection === "reconnecting" || this.connection === "offline";
      this.failures = 0;
      this.connection = "live";
      // The log replays what we missed; a snapshot also heals anything pruned meanwhile.
      if (wasDown) void this.refresh().catch(() => {});
    };
    es.onerror = () => {
      this.failures += 1;
      this.connection = this.failures > 3 ? "offline" : "reconnecting";
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (an HTTP error, say): reconnect ourselves, backing off.
        const delay = Math.min(30_000, 500 * 2 ** Math.min(this.failures, 6));
        if (this.retryTimer) clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => this.connect(), delay);
      }
    };
    for (const name of ["chat.delta", "chat.message", "chat.error", "task.updated", "inbox.updated", "task.output"]) {
      es.addEventListener(name, (ev) => {
        const m = ev as MessageEvent<string>;
        const id = Number(m.lastEventId);
        if (Number.isFinite(id) && m.lastEventId !== "") {
          if (this.lastEventId !== null && id <= this.lastEventId) return;
          this.lastEventId = id;
        }
        let data: unknown;
        try {
          data = JSON.parse(m.data);
        } catch {
          return;
        }
        if (this.buffering) this.buffer.push({ name, data });
        else this.apply(name, data);
      });
    }
  }

  private apply(name: string, data: unknown): void {
    switch (name) {
      case "task.updated": {
        const t = data as Task;
        const old = this.tasks.get(t.id);
        if (!old || old.updated_at <= t.updated_at) this.tasks.set(t.id, t);
        if (!this.projects.some((p) => p.id === t.project_id)) void this.loadProjects();
        break;
      }
      case "inbox.updated": {
        const i = data as InboxItem;
        this.inbox.set(i.id, i);
        break;
      }
      case "chat.message": {
        const m = data as ChatMessage;
        if (m.kind !== "text") break;
        if (m.role === "assistant" && m.turn_id) this.streaming.delete(m.turn_id);
        if (m.role === "assistant") this.chatError = null;
        if (!this.messages.some((x) => x.id === m.id)) {
          this.messages = [...this.messages, m].sort((a, b) => a.seq - b.seq);
        }
        break;
      }
      case "chat.delta": {
        const d = data as { turn_id: string; text: string };
        this.streaming.set(d.turn_id, (this.streaming.get(d.turn_id) ?? "") + d.text);
        break;
      }
      case "chat.error": {
        const e = data as { turn_id: string; message: string; retrying: boolean };
        this.chatError = e.retrying ? `${e.message} — retrying…` : e.message;
        if (!e.retrying) this.streaming.delete(e.turn_id);
        break;
      }
      case "task.output": {
        const o = data as OutputEvent;
        const line = outputLine(o);
        if (line) this.lastOutput.set(o.task_id, line);
        for (const f of this.outputListeners) f(o);
        break;
      }
    }
  }
}

/** Most urgent first, then longest waiting (the server's inbox rule). */
export function inboxOrder(a: InboxItem, b: InboxItem): number {
  const rank = { urgent: 0, high: 1, normal: 2, low: 3 } as const;
  return rank[a.priority] - rank[b.priority] || a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id);
}

/** A one-line human summary of a transcript entry. */
export function outputLine(e: { kind: string; payload: unknown }): string {
  const p = (e.payload ?? {}) as Record<string, unknown>;
  const s = (v: unknown) => (typeof v === "string" ? v : v === undefined || v === null ? "" : JSON.stringify(v));
  switch (e.kind) {
    case "text":
      return firstLine(s(p.text));
    case "tool_call":
      return `${s(p.name)} ${firstLine(s(p.summary))}`.trim();
    case "tool_result":
      return `${p.is_error ? "✗ " : "↳ "}${firstLine(s(p.summary))}`;
    case "status":
      return firstLine(s(p.text));
    case "checks":
      return `checks ${p.passed ? "passed" : "failed"}: ${s(p.command)}`;
    case "question":
      return "asked questions";
    case "plan":
      return "proposed a plan";
    case "finished":
      return p.is_error ? "finished with an error" : "finished";
    case "error":
      return firstLine(s(p.text));
    case "session":
      return "session started";
    case "permission":
      return `${p.allowed ? "allowed" : "denied"} ${s(p.tool)}`;
    case "malformed":
      return "unreadable agent output";
    default:
      return e.kind;
  }
}

export function firstLine(s: string): string {
  const line = s.split("\n").find((l) => l.trim() !== "") ?? "";
  return line.length > 200 ? `${line.slice(0, 199)}…` : line;
}

export const app = new AppState();
