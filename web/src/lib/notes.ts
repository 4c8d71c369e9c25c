// The notes screen's rules, apart from the screen: whether a note's text may be sent
// (the server's own limits, so the person hears it before a round trip), the words for a
// note's kind, source and fold, and which note a URL's hash points at.
import type { Note, NoteKind } from "./api";

export type { Note, NoteKind };

/** The longest note the server keeps, in characters (code points, as the server counts). */
export const MAX_NOTE_CHARS = 2000;

/** Both kinds, in the order the picker shows them. */
export const NOTE_KINDS: readonly NoteKind[] = ["fact", "decision"];

export function noteKindLabel(kind: NoteKind): string {
  return kind === "decision" ? "Decision" : "Fact";
}

/** A note's length as the server counts it. */
export function noteLength(text: string): number {
  return [...text].length;
}

/** Why a note's text cannot be sent, or null when it can. */
export function noteError(text: string): string | null {
  if (!text.trim()) return "Write the note first.";
  const n = noteLength(text);
  if (n > MAX_NOTE_CHARS) return `A note is at most ${MAX_NOTE_CHARS} characters; this one has ${n}.`;
  return null;
}

/** What the screen says of where a note came from: only the main thread's are marked. */
export function sourceLabel(note: Pick<Note, "source">): string | null {
  return note.source === "main_thread" ? "from the main thread" : null;
}

/** What the screen says of a folded note: it is kept, but the model no longer sees it. */
export const FOLDED_WORDS = "not in the context: newer notes filled the budget";

export function foldLabel(note: Pick<Note, "folded">): string | null {
  return note.folded ? FOLDED_WORDS : null;
}

/** How many of the notes folded, in a sentence for the list's head (null when none). */
export function foldSummary(notes: readonly Pick<Note, "folded">[]): string | null {
  const n = notes.filter((x) => x.folded).length;
  if (n === 0) return null;
  return n === 1
    ? "1 note is not in the main thread's context: newer notes filled the budget. Edit it to bring it back."
    : `${n} notes are not in the main thread's context: newer notes filled the budget. Edit one to bring it back.`;
}

/** The note id a URL hash (`#<id>`) names, or null. */
export function noteIdFromHash(hash: string): string | null {
  const id = decodeURIComponent(hash.replace(/^#/, "")).trim();
  return id ? id : null;
}
