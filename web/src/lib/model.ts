// How the app's model of the server changes: snapshots, live events and the replies to
// its own writes all merge here, so the result converges whatever order they arrive in.
// Plain data and functions (no Svelte), so the rules are unit-tested; `state.svelte.ts`
// hands in reactive maps and does the IO.
import { ActivityLog } from "./activity";
import type { ChatMessage, InboxItem, Note, Project, Task, TranscriptEntry, UsageUpdated } from "./api";
import type { LiveEvent, OutputEvent } from "./events";

/** What the app knows. Maps are mutated in place (reactive maps in the app). */
export interface Model {
  tasks: Map<string, Task>;
  inbox: Map<string, InboxItem>;
  projects: Project[];
  messages: ChatMessage[];
  hasOlder: boolean;
  /** Text streamed so far per turn, until the stored message replaces it. */
  streaming: Map<string, string>;
  /** Each running task's current step in the activity view's words, for the inbox's
   * status line (never the raw output). */
  lastOutput: Map<string, string>;
  /** Each task's live output folded into steps (only the newest is kept). */
  activity: Map<string, ActivityLog>;
  chatError: string | null;
  /** The user's notes, newest first (null until loaded). */
  notes: Note[] | null;
}

export function emptyModel(): Model {
  return {
    tasks: new Map(),
    inbox: new Map(),
    projects: [],
    messages: [],
    hasOlder: false,
    streaming: new Map(),
    lastOutput: new Map(),
    activity: new Map(),
    chatError: null,
    notes: null,
  };
}

/** Everything loaded at once, to replace what the model holds. */
export interface Snapshot {
  tasks: Task[];
  inbox: InboxItem[];
  projects: Project[];
  messages: ChatMessage[];
  hasMore: boolean;
}

/** Work the caller must do after an event: IO the model itself does not do. */
export type Effect =
  | { kind: "load_projects" }
  | { kind: "output"; event: OutputEvent }
  | { kind: "spending"; update: UsageUpdated };

/** A record saved with a time and, where the server sends it, a version counter. */
interface Versioned {
  updated_at: string;
  version?: number | null;
}

/**
 * Whether `incoming` is older than what we hold. The server's `version` decides when
 * both carry one; otherwise the save time does, read as a time: RFC 3339 text does not
 * sort (`…:05Z` sorts after `…:05.5Z`). Equal times let the incoming copy win.
 */
export function isStale(held: Versioned | undefined, incoming: Versioned): boolean {
  if (!held) return false;
  if (typeof held.version === "number" && typeof incoming.version === "number") {
    return incoming.version < held.version;
  }
  return millis(incoming.updated_at) < millis(held.updated_at);
}

/** A timestamp as milliseconds; an unreadable one sorts first. */
export function millis(iso: string): number {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? -Infinity : t;
}

/** The task merged with what we hold: the newer copy wins. True when it was taken. */
export function putTask(m: Model, t: Task): boolean {
  if (isStale(m.tasks.get(t.id), t)) return false;
  m.tasks.set(t.id, t);
  return true;
}

/**
 * An inbox item merged with what we hold. Items carry no version; their one one-way
 * change is resolution (never undone), so a copy without it cannot undo it.
 */
export function mergeInboxItem(held: InboxItem | undefined, incoming: InboxItem): InboxItem {
  if (held?.resolved_at && !incoming.resolved_at) return { ...incoming, resolved_at: held.resolved_at };
  return incoming;
}

export function putInboxItem(m: Model, i: InboxItem): void {
  m.inbox.set(i.id, mergeInboxItem(m.inbox.get(i.id), i));
}

/**
 * Replaces tasks, inbox and projects with a snapshot and merges its newest messages.
 * A record we hold that is newer than the snapshot's copy (a reply or event that landed
 * while the snapshot was in flight) is kept.
 */
export function applySnapshot(m: Model, s: Snapshot): void {
  const tasks = s.tasks.map((t) => {
    const held = m.tasks.get(t.id);
    return held && isStale(held, t) ? held : t;
  });
  m.tasks.clear();
  for (const t of tasks) m.tasks.set(t.id, t);
  const items = s.inbox.map((i) => mergeInboxItem(m.inbox.get(i.id), i));
  m.inbox.clear();
  for (const i of items) m.inbox.set(i.id, i);
  m.projects = s.projects;
  mergeNewestMessages(m, s.messages, s.hasMore);
}

/** The newest page of messages: new ones join in order; `hasMore` counts only at first load. */
export function mergeNewestMessages(m: Model, page: ChatMessage[], hasMore: boolean): void {
  if (m.messages.length === 0) {
    m.messages = page;
    m.hasOlder = hasMore;
    return;
  }
  const known = new Set(m.messages.map((x) => x.id));
  const fresh = page.filter((x) => !known.has(x.id));
  if (fresh.length) m.messages = [...m.messages, ...fresh].sort((a, b) => a.seq - b.seq);
}

/** An older page, put before what we hold. */
export function mergeOlderMessages(m: Model, page: ChatMessage[], hasMore: boolean): void {
  const known = new Set(m.messages.map((x) => x.id));
  m.messages = [...page.filter((x) => !known.has(x.id)), ...m.messages];
  m.hasOlder = hasMore;
}

/** Whether an assistant message ends its turn (it calls no tools). */
export function isFinalReply(msg: ChatMessage): boolean {
  const content = (msg.content ?? []) as Array<{ type?: unknown }>;
  return !content.some((b) => b?.type === "tool_use");
}

/** The turns being answered with nothing streamed yet: the chat shows "thinking". */
export function thinkingTurns(m: Pick<Model, "streaming">): string[] {
  return [...m.streaming.entries()].filter(([, text]) => text.length === 0).map(([turn]) => turn);
}

/** Applies one event (from the stream, or a write's reply given as the event it equals). */
export function applyEvent(m: Model, e: LiveEvent): Effect[] {
  switch (e.name) {
    case "task.updated": {
      const t = e.data;
      putTask(m, t);
      return m.projects.some((p) => p.id === t.project_id) ? [] : [{ kind: "load_projects" }];
    }
    case "inbox.updated":
      putInboxItem(m, e.data);
      return [];
    case "chat.message": {
      const msg = e.data;
      if (msg.kind !== "text") return [];
      const known = m.messages.some((x) => x.id === msg.id);
      if (msg.role === "assistant" && msg.turn_id) {
        // A reply that calls tools is not the last word: the turn thinks on.
        if (isFinalReply(msg)) m.streaming.delete(msg.turn_id);
        else m.streaming.set(msg.turn_id, "");
      }
      if (msg.role === "assistant") m.chatError = null;
      if (msg.role === "user" && !known && !m.messages.some((x) => x.turn_id === msg.id)) {
        // Sent and not answered yet: the chat shows it is thinking until the first word.
        m.streaming.set(msg.id, "");
      }
      if (!known) {
        m.messages = [...m.messages, msg].sort((a, b) => a.seq - b.seq);
      }
      return [];
    }
    case "chat.delta": {
      const d = e.data;
      m.streaming.set(d.turn_id, (m.streaming.get(d.turn_id) ?? "") + d.text);
      return [];
    }
    case "chat.error": {
      const f = e.data;
      m.chatError = f.retrying ? `${f.message} — retrying…` : f.message;
      if (!f.retrying) m.streaming.delete(f.turn_id);
      return [];
    }
    case "task.output": {
      const o = e.data;
      let log = m.activity.get(o.task_id);
      if (!log) {
        log = new ActivityLog({ worktree: m.tasks.get(o.task_id)?.worktree }, 1);
        m.activity.set(o.task_id, log);
      }
      log.add(o);
      const line = log.now();
      if (line) m.lastOutput.set(o.task_id, line);
      else m.lastOutput.delete(o.task_id);
      return [{ kind: "output", event: o }];
    }
    case "usage.updated":
      // Pause and budgets are the spending screens' (and the pause banner's), not the model's.
      return [{ kind: "spending", update: e.data }];
    case "notes.updated":
      // Every change carries the whole list.
      m.notes = e.data.notes;
      return [];
  }
}

/**
 * Orders the stream against snapshots: skips events already seen (by event-log id, as
 * a reconnect replays from the id we give), and holds events back while snapshots are
 * loading so they are applied after the snapshot they raced with.
 */
export class EventFeed {
  /** The newest event-log id seen: where a reconnect resumes. */
  lastEventId: number | null = null;
  private holds = 0;
  private held: LiveEvent[] = [];

  /**
   * A message from the stream: its event-log id (null when it carries none) and its
   * event (null when unreadable, which still moves the resume point past it).
   * Returns the events to apply now.
   */
  receive(id: number | null, e: LiveEvent | null): LiveEvent[] {
    if (id !== null) {
      if (this.lastEventId !== null && id <= this.lastEventId) return [];
      this.lastEventId = id;
    }
    if (!e) return [];
    if (this.holds > 0) {
      this.held.push(e);
      return [];
    }
    return [e];
  }

  /** A snapshot load starts: events wait until every load in flight has ended. */
  hold(): void {
    this.holds += 1;
  }

  /** A snapshot load ended (applied or failed): the events to apply now. */
  release(): LiveEvent[] {
    this.holds = Math.max(0, this.holds - 1);
    if (this.holds > 0) return [];
    const out = this.held;
    this.held = [];
    return out;
  }
}

/** How long to wait before reconnecting after the browser gave up `failures` times. */
export function retryDelay(failures: number): number {
  return Math.min(30_000, 500 * 2 ** Math.min(failures, 6));
}

export const NEEDS_YOU: ReadonlySet<string> = new Set(["question", "plan_review", "review", "budget"]);
/** Work under way: a task on hold at its agent's usage limit goes on by itself, so it
 * is running work, neither a failure nor something that needs the human. */
export const ACTIVE_STATES: ReadonlySet<string> = new Set(["queued", "planning", "implementing", "on_hold", "checking"]);
export const FINAL_STATES: ReadonlySet<string> = new Set(["merged", "cancelled"]);

/** Open items, most urgent first, then longest waiting (the server's inbox rule). */
export function openItems(m: Pick<Model, "inbox">): InboxItem[] {
  return [...m.inbox.values()].filter((i) => !i.resolved_at).sort(inboxOrder);
}

export function inboxOrder(a: InboxItem, b: InboxItem): number {
  const rank = { urgent: 0, high: 1, normal: 2, low: 3 } as const;
  return (
    rank[a.priority] - rank[b.priority] ||
    millis(a.created_at) - millis(b.created_at) ||
    a.id.localeCompare(b.id)
  );
}

/** A one-line human summary of a transcript entry. */
export function outputLine(e: TranscriptEntry): string {
  switch (e.kind) {
    case "text":
      return firstLine(e.payload.text);
    case "tool_call": {
      // The server's summary usually starts with the tool's name already ("Write a.md").
      const summary = firstLine(e.payload.summary);
      return summary.startsWith(e.payload.name) ? summary : `${e.payload.name} ${summary}`.trim();
    }
    case "tool_result":
      return `${e.payload.is_error ? "✗ " : "↳ "}${firstLine(e.payload.summary)}`;
    case "status":
      return firstLine(e.payload.text);
    case "checks":
      return `checks ${e.payload.passed ? "passed" : "failed"}: ${e.payload.command}`;
    case "question":
      return "asked questions";
    case "plan":
      return "proposed a plan";
    case "finished":
      return e.payload.is_error ? "finished with an error" : "finished";
    case "error":
      return firstLine(e.payload.text);
    case "session":
      return "session started";
    case "permission":
      return `${e.payload.allowed ? "allowed" : "denied"} ${e.payload.tool}`;
    case "malformed":
      return "unreadable agent output";
    case "unknown":
      return e.payload.kind;
  }
}

/** The kind an entry was stored under (an entry this version cannot read keeps its own). */
export function entryKind(e: TranscriptEntry): string {
  return e.kind === "unknown" ? e.payload.kind : e.kind;
}

export function firstLine(s: string): string {
  const line = s.split("\n").find((l) => l.trim() !== "") ?? "";
  return line.length > 200 ? `${line.slice(0, 199)}…` : line;
}
