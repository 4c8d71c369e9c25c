// The app's live model of the server: tasks, inbox, chat and the event stream that
// keeps them current. The merge rules live in `model.ts`; this holds them in reactive
// state and does the IO (snapshots, the stream, reconnecting).
import { SvelteMap } from "svelte/reactivity";
import { api, spending, type Budgets, type PauseState, type ChatMessage, type InboxItem, type Note, type Project, type Task, type User } from "./api";
import type { ActivityLog } from "./activity";
import { EVENT_NAMES, eventId, eventsUrl, parseEvent, type LiveEvent, type OutputEvent } from "./events";
import {
  applyEvent,
  applySnapshot,
  EventFeed,
  mergeOlderMessages,
  NEEDS_YOU,
  openItems,
  retryDelay,
  type Model,
} from "./model";

export { ACTIVE_STATES, entryKind, FINAL_STATES, firstLine, outputLine } from "./model";

export type Connection = "connecting" | "live" | "reconnecting" | "offline";

type Listener<T> = (value: T) => void;

class AppState implements Model {
  user = $state<User | null>(null);
  authChecked = $state(false);
  connection = $state<Connection>("connecting");
  loaded = $state(false);
  tasks = new SvelteMap<string, Task>();
  inbox = new SvelteMap<string, InboxItem>();
  projects = $state<Project[]>([]);
  lastOutput = new SvelteMap<string, string>();
  /** Whether all work is paused (null until known). */
  pause = $state<PauseState | null>(null);

  messages = $state<ChatMessage[]>([]);
  hasOlder = $state(false);
  streaming = new SvelteMap<string, string>();
  chatError = $state<string | null>(null);
  /** The user's notes, newest first: loaded when the notes screen first opens, then kept
   * current by `notes.updated` (null until then). */
  notes = $state<Note[] | null>(null);

  private source: EventSource | null = null;
  private feed = new EventFeed();
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private failures = 0;
  private outputListeners = new Set<Listener<OutputEvent>>();
  private spendListeners = new Set<Listener<"usage" | "task">>();
  activity = new Map<string, ActivityLog>();

  /** Items that need the human, most urgent first (the server's order). */
  needsYou = $derived.by(() => openItems(this).filter((i) => NEEDS_YOU.has(i.kind)));
  failed = $derived.by(() => openItems(this).filter((i) => i.kind === "failed"));

  async start(): Promise<void> {
    this.connect();
    await this.refresh();
  }

  stop(): void {
    this.source?.close();
    this.source = null;
    if (this.retryTimer) clearTimeout(this.retryTimer);
  }

  /**
   * The one way into the model: a stream event, or a write's reply (or an optimistic
   * change) given as the event it equals, so a slow reply cannot undo a newer event.
   */
  apply(e: LiveEvent): void {
    if (e.name === "task.updated") for (const f of this.spendListeners) f("task");
    for (const effect of applyEvent(this, e)) {
      if (effect.kind === "load_projects") void this.loadProjects();
      else if (effect.kind === "spending") this.spendingChanged(effect.update);
      else for (const f of this.outputListeners) f(effect.event);
    }
  }

  /** Reloads every snapshot; events arriving meanwhile are applied afterwards. */
  async refresh(): Promise<void> {
    this.feed.hold();
    try {
      const [tasks, inbox, projects, page] = await Promise.all([
        api.tasks(1000),
        api.inbox(1000, 100),
        api.projects(),
        api.messages(undefined, 50),
      ]);
      applySnapshot(this, {
        tasks: tasks.tasks,
        inbox: inbox.items,
        projects: projects.projects,
        messages: page.messages,
        hasMore: page.has_more,
      });
      this.loaded = true;
      void this.loadPause();
      // A reconnect may have missed a change to notes already shown.
      if (this.notes !== null) void this.loadNotes().catch(() => {});
    } finally {
      for (const e of this.feed.release()) this.apply(e);
    }
  }

  async loadOlder(): Promise<boolean> {
    const first = this.messages[0];
    if (!first || !this.hasOlder) return false;
    const page = await api.messages(first.id, 50);
    mergeOlderMessages(this, page.messages, page.has_more);
    return page.messages.length > 0;
  }

  /**
   * Loads the notes; events arriving meanwhile are applied afterwards, so a slow answer
   * never replaces a newer `notes.updated`.
   */
  async loadNotes(): Promise<void> {
    this.feed.hold();
    try {
      this.notes = (await api.notes()).notes;
    } finally {
      for (const e of this.feed.release()) this.apply(e);
    }
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

  /** The pause switch as the server has it; a server without it leaves it unknown. */
  private async loadPause(): Promise<void> {
    try {
      this.pause = await spending.pause();
    } catch {
      // The next snapshot refresh, or a `usage.updated` event, tells again.
    }
  }

  /** Pause or budgets changed (a `usage.updated` event, or a write's reply). */
  spendingChanged(change: { pause?: PauseState; budgets?: Budgets }): void {
    if (change.pause) this.pause = change.pause;
    for (const f of this.spendListeners) f("usage");
  }

  /** Calls `f` when spending may have changed: "usage" for pause or budgets, "task" for a
   * task's update (its cost). */
  onSpending(f: Listener<"usage" | "task">): () => void {
    this.spendListeners.add(f);
    return () => this.spendListeners.delete(f);
  }

  onOutput(f: Listener<OutputEvent>): () => void {
    this.outputListeners.add(f);
    return () => this.outputListeners.delete(f);
  }

  private connect(): void {
    this.source?.close();
    const es = new EventSource(eventsUrl(this.feed.lastEventId));
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
        if (this.retryTimer) clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => this.connect(), retryDelay(this.failures));
      }
    };
    for (const name of EVENT_NAMES) {
      es.addEventListener(name, (ev) => {
        const m = ev as MessageEvent<string>;
        for (const e of this.feed.receive(eventId(m.lastEventId), parseEvent(name, m.data))) this.apply(e);
      });
    }
  }
}

export const app = new AppState();
