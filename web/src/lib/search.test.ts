// The search box's rules: the shortcut, snippets split by highlights, grouping, where a
// hit opens, dates, the query sent, and the newest answer winning.
import { describe, expect, it } from "vitest";
import {
  flatten,
  groupHits,
  hitDate,
  hitHref,
  kindLabel,
  Latest,
  opensSearch,
  searchable,
  searchParams,
  SEARCH_KINDS,
  splitSnippet,
  step,
  type SearchHit,
  type SearchKind,
} from "./search";

const key = (k: string, mods: Partial<{ ctrlKey: boolean; metaKey: boolean; altKey: boolean; shiftKey: boolean; isComposing: boolean; defaultPrevented: boolean }> = {}) => ({
  key: k,
  ctrlKey: false,
  metaKey: false,
  altKey: false,
  ...mods,
});

describe("opensSearch", () => {
  const body = { tagName: "BODY" };
  it("opens on / alone and on Ctrl-K or Cmd-K", () => {
    expect(opensSearch(key("/"), body)).toBe(true);
    expect(opensSearch(key("k", { ctrlKey: true }), body)).toBe(true);
    expect(opensSearch(key("k", { metaKey: true }), body)).toBe(true);
    expect(opensSearch(key("K", { ctrlKey: true }), body)).toBe(true);
    expect(opensSearch(key("/"), null)).toBe(true);
    expect(opensSearch(key("/"), { tagName: "BUTTON" })).toBe(true);
    expect(opensSearch(key("/"), { tagName: "INPUT", type: "checkbox" })).toBe(true);
  });

  it("leaves other keys and modified slashes alone", () => {
    expect(opensSearch(key("k"), body)).toBe(false);
    expect(opensSearch(key("s", { ctrlKey: true }), body)).toBe(false);
    expect(opensSearch(key("/", { ctrlKey: true }), body)).toBe(false);
    expect(opensSearch(key("/", { altKey: true }), body)).toBe(false);
    expect(opensSearch(key("k", { ctrlKey: true, shiftKey: true }), body)).toBe(false);
    expect(opensSearch(key("k", { ctrlKey: true, altKey: true }), body)).toBe(false);
    expect(opensSearch(key("/", { isComposing: true }), body)).toBe(false);
    expect(opensSearch(key("/", { defaultPrevented: true }), body)).toBe(false);
  });

  it("never fires while typing in another field", () => {
    for (const target of [
      { tagName: "INPUT" },
      { tagName: "INPUT", type: "text" },
      { tagName: "INPUT", type: "search" },
      { tagName: "input", type: "URL" },
      { tagName: "TEXTAREA" },
      { tagName: "SELECT" },
      { tagName: "DIV", isContentEditable: true },
    ]) {
      expect(opensSearch(key("/"), target)).toBe(false);
      expect(opensSearch(key("k", { ctrlKey: true }), target)).toBe(false);
    }
  });
});

describe("searchable", () => {
  it("needs a letter, digit or underscore, no NUL, at most 500 characters", () => {
    expect(searchable("auth")).toBe(true);
    expect(searchable("  é ")).toBe(true);
    expect(searchable("日本")).toBe(true);
    expect(searchable("_")).toBe(true);
    expect(searchable("42")).toBe(true);
    for (const q of ["", "   ", "\"*()-:^", "?!", "a\0b"]) expect(searchable(q)).toBe(false);
    expect(searchable("a".repeat(500))).toBe(true);
    expect(searchable("a".repeat(501))).toBe(false);
    expect(searchable("😀".repeat(500) + "a")).toBe(false);
  });
});

describe("splitSnippet", () => {
  const text = (pieces: { text: string }[]) => pieces.map((p) => p.text).join("");

  it("marks each range", () => {
    expect(splitSnippet("the auth refactor is done", [[4, 8], [9, 17]])).toEqual([
      { text: "the ", match: false },
      { text: "auth", match: true },
      { text: " ", match: false },
      { text: "refactor", match: true },
      { text: " is done", match: false },
    ]);
    expect(splitSnippet("auth", [[0, 4]])).toEqual([{ text: "auth", match: true }]);
    expect(splitSnippet("no match", [])).toEqual([{ text: "no match", match: false }]);
    expect(splitSnippet("", [[0, 3]])).toEqual([]);
  });

  it("counts characters, not UTF-16 units", () => {
    expect(splitSnippet("😀 café 😀 café", [[2, 6], [9, 13]])).toEqual([
      { text: "😀 ", match: false },
      { text: "café", match: true },
      { text: " 😀 ", match: false },
      { text: "café", match: true },
    ]);
  });

  it("sorts, merges, clips and drops bad ranges, keeping the text exact", () => {
    const s = "abcdefghij";
    const out = splitSnippet(s, [[6, 8], [0, 2], [1, 3], [5, 5], [9, 40], [-3, 0], [8, 6], [Number.NaN, 2]]);
    expect(text(out)).toBe(s);
    expect(out).toEqual([
      { text: "abc", match: true },
      { text: "def", match: false },
      { text: "gh", match: true },
      { text: "i", match: false },
      { text: "j", match: true },
    ]);
    // Adjacent ranges read as one mark.
    expect(splitSnippet(s, [[0, 2], [2, 4]])).toEqual([
      { text: "abcd", match: true },
      { text: "efghij", match: false },
    ]);
  });

  it("keeps markup as text", () => {
    const out = splitSnippet("<img src=x onerror=alert(1)> token", [[29, 34]]);
    expect(out).toEqual([
      { text: "<img src=x onerror=alert(1)> ", match: false },
      { text: "token", match: true },
    ]);
  });
});

function hit(kind: SearchKind, id: string, task_id: string | null = null): SearchHit {
  return { kind, id, task_id, title: id, snippet: id, highlights: [], created_at: "2026-12-01T12:00:00Z" };
}

describe("groupHits", () => {
  it("groups by kind, the best hit's group first, the server's order within", () => {
    const hits = [hit("task", "t1"), hit("message", "m1"), hit("task", "t2"), hit("plan", "p1"), hit("message", "m2")];
    const groups = groupHits(hits);
    expect(groups.map((g) => g.kind)).toEqual(["task", "message", "plan"]);
    expect(groups[0]?.hits.map((h) => h.id)).toEqual(["t1", "t2"]);
    expect(flatten(groups).map((h) => h.id)).toEqual(["t1", "t2", "m1", "m2", "p1"]);
    expect(groupHits([])).toEqual([]);
  });
});

describe("step", () => {
  it("walks down and up, wrapping, and starts at either end", () => {
    expect(step(-1, 3, 1)).toBe(0);
    expect(step(-1, 3, -1)).toBe(2);
    expect(step(0, 3, 1)).toBe(1);
    expect(step(2, 3, 1)).toBe(0);
    expect(step(0, 3, -1)).toBe(2);
    expect(step(7, 3, 1)).toBe(0);
    expect(step(0, 0, 1)).toBe(-1);
  });
});

describe("hitHref", () => {
  const task = "0b5c6f1e-8a2d-4c7e-9f00-1234567890ab";
  it("opens a message in the chat, a task's kinds on its page, a digest on the memory screen", () => {
    expect(hitHref(hit("message", "m-1", task))).toBe("/?message=m-1");
    expect(hitHref(hit("message", "a b"))).toBe("/?message=a%20b");
    for (const kind of ["task", "question", "plan", "transcript", "review"] as const) {
      expect(hitHref(hit(kind, `${task}:3`, task))).toBe(`/tasks/${task}`);
    }
    expect(hitHref(hit("note", "n1"))).toBe("/notes#n1");
    expect(hitHref(hit("digest", "d1"))).toBe("/memory/d1");
    expect(hitHref(hit("digest", task, task))).toBe(`/memory/${task}`);
  });
});

describe("hitDate", () => {
  const now = new Date(2026, 11, 6, 15, 0);
  it("says the time today, the day this year, and the year before", () => {
    expect(hitDate(new Date(2026, 11, 6, 9, 5).toISOString(), now)).toBe("09:05");
    expect(hitDate(new Date(2026, 9, 14, 9, 5).toISOString(), now)).toBe("14 Oct");
    expect(hitDate(new Date(2025, 0, 2, 9, 5).toISOString(), now)).toBe("2 Jan 2025");
    expect(hitDate("not a date", now)).toBe("");
  });
});

describe("searchParams", () => {
  it("sends the kinds chosen, none when all or none are", () => {
    expect(searchParams("auth", new Set())).toEqual({ q: "auth", limit: 30 });
    expect(searchParams("auth", new Set(SEARCH_KINDS))).toEqual({ q: "auth", limit: 30 });
    expect(searchParams("auth", new Set<SearchKind>(["task", "message"]), 10)).toEqual({ q: "auth", limit: 10, kind: ["message", "task"] });
  });

  it("labels every kind", () => {
    expect(SEARCH_KINDS.map((k) => kindLabel(k))).toEqual(["Message", "Task", "Question", "Plan", "Transcript", "Review", "Note", "Digest"]);
    expect(kindLabel("plan", true)).toBe("Plans");
  });
});

describe("Latest", () => {
  it("lets only the newest answer show, and none after a cancel", () => {
    const l = new Latest();
    const first = l.next();
    const second = l.next();
    expect(l.current(first)).toBe(false);
    expect(l.current(second)).toBe(true);
    l.cancel();
    expect(l.current(second)).toBe(false);
  });
});
