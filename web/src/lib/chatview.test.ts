import { describe, expect, it } from "vitest";
import type { ChatMessage } from "./api";
import { anchorOf, chatItems, itemKey } from "./chatview";

function msg(seq: number, role: ChatMessage["role"], text: string, task_id: string | null = null): ChatMessage {
  return {
    id: `m${seq}`,
    role,
    kind: "text",
    text,
    content: [],
    seq,
    thread_pos: seq,
    task_id,
    created_at: "2026-01-01T10:00:00Z",
  };
}

describe("one card per task in the chat", () => {
  it("folds a task's updates into the card where it first appeared", () => {
    const items = chatItems([
      msg(1, "user", "build it"),
      msg(2, "event", "Task created: a", "t1"),
      msg(3, "assistant", "Started a worker."),
      msg(4, "event", "Task created: b", "t2"),
      msg(5, "event", "a — questions", "t1"),
      msg(6, "event", "a — merged", "t1"),
      msg(7, "event", "a note for nobody"),
    ]);
    expect(items.map(itemKey)).toEqual(["m1", "task:t1", "m3", "task:t2", "m7"]);
    const card = items[1];
    expect(card?.kind === "task" && card.updates.map((u) => u.text)).toEqual([
      "Task created: a",
      "a — questions",
      "a — merged",
    ]);
  });
});

describe("anchorOf", () => {
  it("finds a message's own line, or its task's card for a worker update", () => {
    const messages = [msg(1, "user", "hi"), msg(2, "event", "Task started", "t1"), msg(3, "event", "No task"), msg(4, "assistant", "hello")];
    expect(anchorOf(messages, "m1")).toEqual({ message: "m1" });
    expect(anchorOf(messages, "m2")).toEqual({ task: "t1" });
    expect(anchorOf(messages, "m3")).toEqual({ message: "m3" });
    expect(anchorOf(messages, "m4")).toEqual({ message: "m4" });
    expect(anchorOf(messages, "m9")).toBeNull();
  });
});
