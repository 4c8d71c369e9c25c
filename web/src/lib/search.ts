// The search box's rules, apart from the screen: which key opens it, whether a query is
// worth sending, a snippet split into plain and matched pieces (text only, never HTML),
// hits grouped by kind, where a hit opens, its date in a word, and which of several
// answers in flight may still show.
import type { SearchHit, SearchKind } from "./api";

export type { SearchHit, SearchKind };

/** Every kind, in the order the filter chips show them. */
export const SEARCH_KINDS: readonly SearchKind[] = ["message", "task", "question", "plan", "transcript", "review", "note", "digest"];

const KIND_WORDS: Record<SearchKind, { one: string; many: string }> = {
  message: { one: "Message", many: "Messages" },
  task: { one: "Task", many: "Tasks" },
  question: { one: "Question", many: "Questions" },
  plan: { one: "Plan", many: "Plans" },
  transcript: { one: "Transcript", many: "Transcripts" },
  review: { one: "Review", many: "Reviews" },
  note: { one: "Note", many: "Notes" },
  digest: { one: "Digest", many: "Digests" },
};

export function kindLabel(kind: SearchKind, plural = false): string {
  const w = KIND_WORDS[kind] as { one: string; many: string } | undefined;
  return w ? (plural ? w.many : w.one) : kind;
}

/** How long typing must pause before a query is sent. */
export const DEBOUNCE_MS = 150;

/** The longest query the server takes, in characters. */
export const MAX_QUERY = 500;

/**
 * Whether a query has a word the server can look for: a letter, digit or `_` (anything
 * else only separates words, and a query without a word is refused).
 */
export function searchable(q: string): boolean {
  return /[\p{L}\p{N}_]/u.test(q) && !q.includes("\0") && [...q].length <= MAX_QUERY;
}

/** What a key press needs to say for the shortcut rule. */
export interface KeyLike {
  key: string;
  ctrlKey: boolean;
  metaKey: boolean;
  altKey: boolean;
  shiftKey?: boolean;
  isComposing?: boolean;
  defaultPrevented?: boolean;
}

/** What the focused element needs to say for the shortcut rule. */
export interface TargetLike {
  tagName?: string;
  isContentEditable?: boolean;
  type?: string;
}

/** Inputs that take no typing, so a key pressed on them is not text. */
const NOT_TEXT_INPUTS = new Set(["button", "checkbox", "radio", "submit", "reset", "range", "color", "file", "image"]);

/** Whether the focused element takes typed text (where `/` is a character, not a command). */
export function typingIn(target: TargetLike | null | undefined): boolean {
  if (!target) return false;
  if (target.isContentEditable) return true;
  const tag = (target.tagName ?? "").toUpperCase();
  if (tag === "TEXTAREA" || tag === "SELECT") return true;
  if (tag === "INPUT") return !NOT_TEXT_INPUTS.has((target.type ?? "text").toLowerCase());
  return false;
}

/**
 * Whether a key press opens search: `/` alone, or Ctrl-K / Cmd-K, and neither while
 * the person is typing in another field (there `/` is a character).
 */
export function opensSearch(ev: KeyLike, target: TargetLike | null | undefined): boolean {
  if (ev.defaultPrevented || ev.isComposing || typingIn(target)) return false;
  if (ev.key === "/") return !ev.ctrlKey && !ev.metaKey && !ev.altKey;
  if (ev.key.toLowerCase() === "k") return (ev.ctrlKey || ev.metaKey) && !ev.altKey && !ev.shiftKey;
  return false;
}

/** A piece of a snippet: plain text, or a matched word to mark. */
export interface Piece {
  text: string;
  match: boolean;
}

/**
 * The snippet cut at its highlights (`[start, end)` in characters, i.e. code points, as
 * the server counts them). Ranges out of order, overlapping, empty or past the end are
 * sorted, merged, dropped or clipped, so any answer yields the snippet's text exactly.
 */
export function splitSnippet(snippet: string, highlights: readonly (readonly number[])[]): Piece[] {
  const chars = [...snippet];
  const ranges = highlights
    .map(([s, e]) => [Math.max(0, Math.trunc(Number(s))), Math.min(chars.length, Math.trunc(Number(e)))] as const)
    .filter(([s, e]) => Number.isFinite(s) && Number.isFinite(e) && s < e)
    .sort((a, b) => a[0] - b[0]);
  const pieces: Piece[] = [];
  const push = (from: number, to: number, match: boolean) => {
    if (from >= to) return;
    const text = chars.slice(from, to).join("");
    const last = pieces.at(-1);
    if (last && last.match === match) last.text += text;
    else pieces.push({ text, match });
  };
  let at = 0;
  for (const [s, e] of ranges) {
    if (e <= at) continue;
    push(at, Math.max(at, s), false);
    push(Math.max(at, s), e, true);
    at = e;
  }
  push(at, chars.length, false);
  return pieces;
}

/** A kind's hits, in the order the server ranked them. */
export interface HitGroup {
  kind: SearchKind;
  hits: SearchHit[];
}

/**
 * Hits grouped by kind: the group holding the best hit first, and within a group the
 * server's order. `flatten` of the groups is the order the arrow keys walk.
 */
export function groupHits(hits: readonly SearchHit[]): HitGroup[] {
  const groups = new Map<SearchKind, HitGroup>();
  for (const hit of hits) {
    const g = groups.get(hit.kind);
    if (g) g.hits.push(hit);
    else groups.set(hit.kind, { kind: hit.kind, hits: [hit] });
  }
  return [...groups.values()];
}

export function flatten(groups: readonly HitGroup[]): SearchHit[] {
  return groups.flatMap((g) => g.hits);
}

/** The next highlighted position after an arrow key: wraps at both ends; -1 is none. */
export function step(active: number, count: number, by: 1 | -1): number {
  if (count <= 0) return -1;
  if (active < 0 || active >= count) return by === 1 ? 0 : count - 1;
  return (active + by + count) % count;
}

/**
 * Where a hit opens: a message in the chat (scrolled to it), anything of a task on the
 * task's page, a note on the notes screen (scrolled to it), a digest on its own page of
 * the memory screen; anything else without a task opens nowhere (null).
 */
export function hitHref(hit: SearchHit): string | null {
  if (hit.kind === "message") return `/?message=${encodeURIComponent(hit.id)}`;
  if (hit.kind === "note") return `/notes#${encodeURIComponent(hit.id)}`;
  if (hit.kind === "digest") return `/memory/${encodeURIComponent(hit.id)}`;
  if (hit.task_id) return `/tasks/${hit.task_id}`;
  return null;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** A hit's date, short: the time today, the day this year, the day and year before. */
export function hitDate(iso: string, now: Date = new Date()): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (n: number) => String(n).padStart(2, "0");
  if (d.toDateString() === now.toDateString()) return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  const day = `${d.getDate()} ${MONTHS[d.getMonth()]}`;
  return d.getFullYear() === now.getFullYear() ? day : `${day} ${d.getFullYear()}`;
}

/** The query string `GET /api/search` takes for a query and the chosen kinds (none: all). */
export function searchParams(q: string, kinds: ReadonlySet<SearchKind>, limit = 30): { q: string; kind?: SearchKind[]; limit: number } {
  const chosen = SEARCH_KINDS.filter((k) => kinds.has(k));
  return { q, limit, ...(chosen.length && chosen.length < SEARCH_KINDS.length ? { kind: chosen } : {}) };
}

/**
 * Answers arriving out of order: each request takes a ticket, and only the newest
 * ticket's answer may show, so a slow answer to an older query never replaces a newer one.
 */
export class Latest {
  private issued = 0;

  /** A ticket for a request about to be sent. */
  next(): number {
    return ++this.issued;
  }

  /** Whether an answer to this ticket is still the one to show. */
  current(ticket: number): boolean {
    return ticket === this.issued;
  }

  /** Makes every ticket out so far stale (the query was cleared). */
  cancel(): void {
    this.issued++;
  }
}
