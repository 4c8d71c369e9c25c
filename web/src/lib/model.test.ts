// The model's merge rules: snapshots, live events and write replies converge whatever
// order they arrive in, and nothing older replaces anything newer.
import { describe, expect, it } from "vitest";
import type { ChatMessage, EventName, InboxItem, Task } from "./api";
import { eventsUrl, parseEvent, type EventPayloads, type LiveEvent } from "./events";
import {
  ACTIVE_STATES,
  applyEvent,
  applySnapshot,
  emptyModel,
  FINAL_STATES,
  entryKind,
  EventFeed,
  inboxOrder,
  isStale,
  mergeOlderMessages,
  openItems,
  outputLine,
  putTask,
  retryDelay,
  thinkingTurns,
  type Model,
  type Snapshot,
} from "./model";

const PROJECT = "00000000-0000-4000-8000-0000000000aa";
const TASK = "00000000-0000-4000-8000-000000000001";

function task(updated_at: string, state: Task["state"] = "implementing", extra: Partial<Task> = {}): Task {
  return {
    id: TASK,
    project_id: PROJECT,
    state,
    description: "Add a greeting",
    repo: "/repo",
    workplace: "local",
    skip_plan: false,
    questions: [],
    cost_usd: 0,
    input_tokens: 0,
    output_tokens: 0,
    created_at: "2025-01-01T10:00:00Z",
    updated_at,
    ...extra,
  };
}

function item(id: string, extra: Partial<InboxItem> = {}): InboxItem {
  return {
    id,
    task_id: TASK,
    kind: "review",
    priority: "normal",
    title: "Review",
    body: "",
    created_at: "2025-01-01T10:00:00Z",
    read: false,
    ...extra,
  };
}

function message(seq: number, extra: Partial<ChatMessage> = {}): ChatMessage {
  return {
    id: `m${seq}`,
    role: "user",
    kind: "text",
    text: `message ${seq}`,
    content: [],
    seq,
    thread_pos: seq,
    created_at: "2025-01-01T10:00:00Z",
    ...extra,
  };
}

function model(): Model {
  const m = emptyModel();
  m.projects = [{ id: PROJECT, name: "p", repo: "/repo", settings: {}, created_at: "2025-01-01T10:00:00Z" }];
  return m;
}

function snapshot(m: Model, extra: Partial<Snapshot> = {}): Snapshot {
  return { tasks: [], inbox: [], projects: m.projects, messages: [], hasMore: false, ...extra };
}

/** A payload as the stream would deliver it, parsed by the app's own parser. */
function parsed<K extends EventName>(name: K, data: unknown): EventPayloads[K] {
  const e = parseEvent(name, JSON.stringify(data));
  if (e?.name !== name) throw new Error(`not a ${name} payload`);
  return e.data as EventPayloads[K];
}

const updated = (t: Task): LiveEvent => ({ name: "task.updated", data: t });
const state = (m: Model) => m.tasks.get(TASK)?.state;

describe("tasks: the newer copy wins", () => {
  it("a stale write reply after a newer event does not undo the event", () => {
    const m = model();
    // The human approves the plan; before the POST's reply arrives, the worker has
    // already moved the task on and the stream said so.
    applyEvent(m, updated(task("2025-01-01T10:00:02.000Z", "implementing")));
    applyEvent(m, updated(task("2025-01-01T10:00:03.000Z", "checking")));
    // The slow reply: the task as it was right after the approval.
    applyEvent(m, updated(task("2025-01-01T10:00:02.000Z", "implementing")));
    expect(state(m)).toBe("checking");
  });

  it("a stale fetched copy does not undo an event either", () => {
    const m = model();
    applyEvent(m, updated(task("2025-01-01T10:00:05Z", "review")));
    expect(putTask(m, task("2025-01-01T10:00:04Z", "checking"))).toBe(false);
    expect(state(m)).toBe("review");
  });

  it("events out of order end on the newest", () => {
    const m = model();
    for (const [at, s] of [
      ["2025-01-01T10:00:03Z", "checking"],
      ["2025-01-01T10:00:01Z", "planning"],
      ["2025-01-01T10:00:02Z", "implementing"],
    ] as const) {
      applyEvent(m, updated(task(at, s)));
    }
    expect(state(m)).toBe("checking");
  });

  it("compares save times as times, not as text", () => {
    // The server leaves out a zero fraction: `:05Z` is before `:05.5Z` but sorts after it.
    const whole = task("2025-01-01T10:00:05Z", "implementing");
    const later = task("2025-01-01T10:00:05.5Z", "checking");
    expect(isStale(whole, later)).toBe(false);
    expect(isStale(later, whole)).toBe(true);
    const m = model();
    applyEvent(m, updated(whole));
    applyEvent(m, updated(later));
    expect(state(m)).toBe("checking");
    applyEvent(m, updated(whole));
    expect(state(m)).toBe("checking");
  });

  it("a version, when both copies carry one, decides over the save time", () => {
    const at = "2025-01-01T10:00:05Z";
    expect(isStale({ updated_at: at, version: 4 }, { updated_at: at, version: 3 })).toBe(true);
    expect(isStale({ updated_at: at, version: 3 }, { updated_at: at, version: 4 })).toBe(false);
  });

  it("an equal save time lets the incoming copy win", () => {
    const m = model();
    applyEvent(m, updated(task("2025-01-01T10:00:05Z", "implementing")));
    applyEvent(m, updated(task("2025-01-01T10:00:05Z", "checking")));
    expect(state(m)).toBe("checking");
  });

  it("a task in a project not loaded yet asks for the projects", () => {
    const m = model();
    expect(applyEvent(m, updated(task("2025-01-01T10:00:01Z")))).toEqual([]);
    const other = task("2025-01-01T10:00:01Z", "queued", { id: "t2", project_id: "elsewhere" });
    expect(applyEvent(m, updated(other))).toEqual([{ kind: "load_projects" }]);
  });
});

describe("snapshots and the events that race them", () => {
  it("an event that arrives while a snapshot loads is applied after it", () => {
    const m = model();
    const feed = new EventFeed();
    feed.hold();
    // The event is newer than the snapshot that is still in flight.
    expect(feed.receive(7, updated(task("2025-01-01T10:00:09Z", "review")))).toEqual([]);
    applySnapshot(m, snapshot(m, { tasks: [task("2025-01-01T10:00:08Z", "checking")] }));
    expect(state(m)).toBe("checking");
    for (const e of feed.release()) applyEvent(m, e);
    expect(state(m)).toBe("review");
  });

  it("a held event older than the snapshot does not undo it", () => {
    const m = model();
    const feed = new EventFeed();
    feed.hold();
    feed.receive(7, updated(task("2025-01-01T10:00:08Z", "checking")));
    applySnapshot(m, snapshot(m, { tasks: [task("2025-01-01T10:00:09Z", "review")] }));
    for (const e of feed.release()) applyEvent(m, e);
    expect(state(m)).toBe("review");
  });

  it("a reply that landed while the snapshot was in flight survives an older snapshot", () => {
    const m = model();
    applyEvent(m, updated(task("2025-01-01T10:00:09Z", "implementing")));
    applySnapshot(m, snapshot(m, { tasks: [task("2025-01-01T10:00:08Z", "waiting_plan_review")] }));
    expect(state(m)).toBe("implementing");
  });

  it("a snapshot replaces the lists: records it no longer holds go", () => {
    const m = model();
    applyEvent(m, updated(task("2025-01-01T10:00:01Z", "queued", { id: "gone" })));
    m.inbox.set("old", item("old"));
    applySnapshot(m, snapshot(m, { tasks: [task("2025-01-01T10:00:01Z")], inbox: [item("new")] }));
    expect([...m.tasks.keys()]).toEqual([TASK]);
    expect([...m.inbox.keys()]).toEqual(["new"]);
  });

  it("overlapping loads hold events until the last one ends", () => {
    const feed = new EventFeed();
    const e = updated(task("2025-01-01T10:00:01Z"));
    feed.hold();
    feed.hold();
    feed.receive(1, e);
    expect(feed.release()).toEqual([]);
    expect(feed.release()).toEqual([e]);
    expect(feed.receive(2, e)).toEqual([e]);
  });
});

describe("reconnecting", () => {
  it("resumes after the last event seen and skips what it replays", () => {
    const feed = new EventFeed();
    expect(eventsUrl(feed.lastEventId)).toBe("/api/events");
    const e = (n: number) => updated(task(`2025-01-01T10:00:0${n}Z`));
    for (const n of [1, 2, 3]) expect(feed.receive(n, e(n))).toEqual([e(n)]);
    expect(eventsUrl(feed.lastEventId)).toBe("/api/events?after=3");
    // The server replays from the id given; what we have already is dropped.
    expect(feed.receive(2, e(2))).toEqual([]);
    expect(feed.receive(3, e(3))).toEqual([]);
    expect(feed.receive(4, e(4))).toEqual([e(4)]);
    // An unreadable message still moves the resume point past it.
    expect(feed.receive(5, null)).toEqual([]);
    expect(eventsUrl(feed.lastEventId)).toBe("/api/events?after=5");
    // A message without an id is applied and leaves the resume point alone.
    expect(feed.receive(null, e(6))).toEqual([e(6)]);
    expect(feed.lastEventId).toBe(5);
  });

  it("the reload after a reconnect heals what the log no longer holds", () => {
    const m = model();
    const feed = new EventFeed();
    for (const x of feed.receive(1, updated(task("2025-01-01T10:00:01Z", "implementing")))) applyEvent(m, x);
    // Offline: the task moved on and the event was pruned. The reload brings it back.
    feed.hold();
    applySnapshot(m, snapshot(m, { tasks: [task("2025-01-01T10:00:30Z", "review")] }));
    for (const x of feed.release()) applyEvent(m, x);
    expect(state(m)).toBe("review");
  });

  it("backs off, up to half a minute", () => {
    expect(retryDelay(1)).toBe(1000);
    expect(retryDelay(2)).toBe(2000);
    expect(retryDelay(20)).toBe(30_000);
  });
});

describe("inbox", () => {
  it("a task on hold is running work, not finished (no inbox item comes with it)", () => {
    expect(ACTIVE_STATES.has("on_hold")).toBe(true);
    expect(FINAL_STATES.has("on_hold")).toBe(false);
  });

  it("a stale mark-read reply does not reopen an item resolved meanwhile", () => {
    const m = model();
    applyEvent(m, { name: "inbox.updated", data: item("i1", { read: true }) });
    applyEvent(m, { name: "inbox.updated", data: item("i1", { read: true, resolved_at: "2025-01-01T10:01:00Z" }) });
    applyEvent(m, { name: "inbox.updated", data: item("i1", { read: true }) });
    expect(m.inbox.get("i1")?.resolved_at).toBe("2025-01-01T10:01:00Z");
    expect(openItems(m)).toEqual([]);
  });

  it("an older snapshot does not reopen it either", () => {
    const m = model();
    applyEvent(m, { name: "inbox.updated", data: item("i1", { resolved_at: "2025-01-01T10:01:00Z" }) });
    applySnapshot(m, snapshot(m, { inbox: [item("i1")] }));
    expect(openItems(m)).toEqual([]);
  });

  it("orders by priority, then age read as time, then id", () => {
    const a = item("a", { priority: "normal", created_at: "2025-01-01T10:00:05Z" });
    const b = item("b", { priority: "normal", created_at: "2025-01-01T10:00:05.5Z" });
    const c = item("c", { priority: "urgent", created_at: "2025-01-01T11:00:00Z" });
    const d = item("d", { priority: "normal", created_at: "2025-01-01T10:00:05Z" });
    expect([b, d, c, a].sort(inboxOrder).map((i) => i.id)).toEqual(["c", "a", "d", "b"]);
  });
});

describe("chat", () => {
  it("streams a reply until the stored message replaces it", () => {
    const m = model();
    applyEvent(m, { name: "chat.delta", data: { turn_id: "m1", text: "Hel" } });
    applyEvent(m, { name: "chat.delta", data: { turn_id: "m1", text: "lo" } });
    expect(m.streaming.get("m1")).toBe("Hello");
    applyEvent(m, { name: "chat.error", data: { turn_id: "m1", message: "overloaded", retrying: true } });
    expect(m.chatError).toBe("overloaded — retrying…");
    expect(m.streaming.get("m1")).toBe("Hello");
    applyEvent(m, { name: "chat.message", data: message(2, { role: "assistant", turn_id: "m1" }) });
    expect(m.streaming.has("m1")).toBe(false);
    expect(m.chatError).toBeNull();
  });

  it("thinks from the sent message to the first word, and again while tools run", () => {
    const m = model();
    applyEvent(m, { name: "chat.message", data: message(1) });
    expect(thinkingTurns(m)).toEqual(["m1"]);
    applyEvent(m, { name: "chat.delta", data: { turn_id: "m1", text: "On it." } });
    expect(thinkingTurns(m)).toEqual([]);
    const call = { type: "tool_use", id: "t1", name: "spawn_task", input: {} };
    applyEvent(m, { name: "chat.message", data: message(2, { role: "assistant", turn_id: "m1", content: [call] as unknown as ChatMessage["content"] }) });
    expect(thinkingTurns(m)).toEqual(["m1"]);
    applyEvent(m, { name: "chat.message", data: message(3, { role: "assistant", turn_id: "m1" }) });
    expect(thinkingTurns(m)).toEqual([]);
    // Replayed after a reconnect, an answered message does not think again.
    applyEvent(m, { name: "chat.message", data: message(1) });
    expect(thinkingTurns(m)).toEqual([]);
    // Nor does one whose reply is already held.
    const n = model();
    applyEvent(n, { name: "chat.message", data: message(5, { role: "assistant", turn_id: "m4" }) });
    applyEvent(n, { name: "chat.message", data: message(4) });
    expect(thinkingTurns(n)).toEqual([]);
  });

  it("a turn that fails for good drops its preview", () => {
    const m = model();
    applyEvent(m, { name: "chat.delta", data: { turn_id: "m1", text: "Hel" } });
    applyEvent(m, { name: "chat.error", data: { turn_id: "m1", message: "no credit", retrying: false } });
    expect(m.chatError).toBe("no credit");
    expect(m.streaming.has("m1")).toBe(false);
  });

  it("keeps messages once each, in order, whatever order they come in", () => {
    const m = model();
    applySnapshot(m, snapshot(m, { messages: [message(2), message(3)], hasMore: true }));
    applyEvent(m, { name: "chat.message", data: message(5) });
    applyEvent(m, { name: "chat.message", data: message(4) });
    applyEvent(m, { name: "chat.message", data: message(4) });
    applyEvent(m, { name: "chat.message", data: message(6, { kind: "tool_result" }) });
    // A reload's newest page overlaps what we hold.
    applySnapshot(m, snapshot(m, { messages: [message(4), message(5), message(7)], hasMore: true }));
    mergeOlderMessages(m, [message(1), message(2)], false);
    expect(m.messages.map((x) => x.seq)).toEqual([1, 2, 3, 4, 5, 7]);
    expect(m.hasOlder).toBe(false);
  });
});

describe("task output", () => {
  it("keeps the newest step per task, in the activity view's words, and hands the entry on", () => {
    const m = model();
    const o = parsed("task.output", {
      task_id: TASK,
      seq: 3,
      kind: "tool_call",
      payload: { name: "Bash", summary: "npm test\nmore" },
      created_at: "2025-01-01T10:00:00Z",
    });
    expect(applyEvent(m, { name: "task.output", data: o })).toEqual([{ kind: "output", event: o }]);
    expect(m.lastOutput.get(TASK)).toBe("Ran `npm test more`");
  });

  it("names a tool once when its summary already starts with the name", () => {
    const line = (name: string, summary: string) =>
      outputLine(
        parsed("task.output", {
          task_id: TASK,
          seq: 5,
          kind: "tool_call",
          payload: { name, summary },
          created_at: "2025-01-01T10:00:00Z",
        }),
      );
    expect(line("Write", "Write GREETING.md")).toBe("Write GREETING.md");
    expect(line("ExitPlanMode", "ExitPlanMode")).toBe("ExitPlanMode");
    expect(line("Bash", "Bash: ls")).toBe("Bash: ls");
    expect(line("Read", "a.md")).toBe("Read a.md");
  });

  it("an entry this version cannot read is shown by the kind it was stored under", () => {
    const o = parsed("task.output", {
      task_id: TASK,
      seq: 4,
      kind: "unknown",
      payload: { kind: "thinking", payload: { text: "hmm" } },
      created_at: "2025-01-01T10:00:00Z",
    });
    expect(entryKind(o)).toBe("thinking");
    expect(outputLine(o)).toBe("thinking");
  });
});

describe("spending events", () => {
  it("pause and budgets become the spending effect, nothing in the model changes", () => {
    const m = model();
    const update = parsed("usage.updated", { pause: { paused: true, since: "2025-01-01T10:00:00Z" }, budgets: { daily_usd: 5 } });
    expect(applyEvent(m, { name: "usage.updated", data: update })).toEqual([{ kind: "spending", update }]);
    expect(parseEvent("usage.updated", JSON.stringify({ pause: { paused: "yes" }, budgets: {} }))).toBeNull();
    expect(parseEvent("usage.updated", JSON.stringify({ pause: { paused: false } }))).toBeNull();
  });
});

describe("parsing stream messages", () => {
  it("types a known event", () => {
    const e = parseEvent("task.updated", JSON.stringify(task("2025-01-01T10:00:01Z")));
    expect(e?.name).toBe("task.updated");
    if (e?.name === "task.updated") expect(e.data.state).toBe("implementing");
  });

  it("drops unknown names, unreadable JSON and payloads of the wrong shape", () => {
    expect(parseEvent("task.deleted", "{}")).toBeNull();
    expect(parseEvent("toString", "{}")).toBeNull();
    expect(parseEvent("task.updated", "{not json")).toBeNull();
    expect(parseEvent("task.updated", JSON.stringify({ id: TASK }))).toBeNull();
    expect(parseEvent("chat.delta", JSON.stringify(["turn", "text"]))).toBeNull();
    expect(parseEvent("chat.delta", JSON.stringify({ turn_id: "m1", text: "hi" }))).toEqual({
      name: "chat.delta",
      data: { turn_id: "m1", text: "hi" },
    });
  });
});

describe("notes events", () => {
  it("each `notes.updated` replaces the whole list", () => {
    const m = model();
    expect(m.notes).toBeNull();
    const note = { id: "0b5c6f1e-8a2d-4c7e-9f00-1234567890ab", kind: "fact", text: "a", created_at: "2025-01-01T10:00:00Z", updated_at: "2025-01-01T10:00:00Z", source: "user", folded: false } as const;
    const data = parsed("notes.updated", { notes: [note] });
    expect(applyEvent(m, { name: "notes.updated", data })).toEqual([]);
    expect(m.notes).toEqual([note]);
    applyEvent(m, { name: "notes.updated", data: parsed("notes.updated", { notes: [] }) });
    expect(m.notes).toEqual([]);
  });
});
