import { describe, expect, it } from "vitest";
import { FOLDED_WORDS, foldLabel, foldSummary, MAX_NOTE_CHARS, noteError, noteIdFromHash, noteKindLabel, noteLength, sourceLabel } from "./notes";

describe("noteError", () => {
  it("refuses blank text", () => {
    expect(noteError("")).toBe("Write the note first.");
    expect(noteError("  \n\t ")).toBe("Write the note first.");
  });
  it("takes text up to the limit, counted in characters, not UTF-16 units", () => {
    expect(noteError("We ship on Fridays.")).toBeNull();
    expect(noteError("a".repeat(MAX_NOTE_CHARS))).toBeNull();
    // Each emoji is two UTF-16 units but one character, as the server counts.
    expect(noteError("😀".repeat(MAX_NOTE_CHARS))).toBeNull();
    expect(noteLength("😀é")).toBe(2);
  });
  it("refuses text past the limit, saying how long it is", () => {
    expect(noteError("a".repeat(MAX_NOTE_CHARS + 1))).toBe("A note is at most 2000 characters; this one has 2001.");
  });
});

describe("labels", () => {
  it("names kinds", () => {
    expect(noteKindLabel("fact")).toBe("Fact");
    expect(noteKindLabel("decision")).toBe("Decision");
  });
  it("marks only the main thread's notes", () => {
    expect(sourceLabel({ source: "main_thread" })).toBe("from the main thread");
    expect(sourceLabel({ source: "user" })).toBeNull();
  });
  it("words a fold", () => {
    expect(foldLabel({ folded: true })).toBe(FOLDED_WORDS);
    expect(FOLDED_WORDS).toBe("not in the context: newer notes filled the budget");
    expect(foldLabel({ folded: false })).toBeNull();
  });
  it("counts folds for the list's head", () => {
    expect(foldSummary([{ folded: false }])).toBeNull();
    expect(foldSummary([])).toBeNull();
    expect(foldSummary([{ folded: true }, { folded: false }])).toMatch(/^1 note is not/);
    expect(foldSummary([{ folded: true }, { folded: true }])).toMatch(/^2 notes are not/);
  });
});

describe("noteIdFromHash", () => {
  it("reads the id after #", () => {
    expect(noteIdFromHash("#0b5c6f1e-8a2d-4c7e-9f00-1234567890ab")).toBe("0b5c6f1e-8a2d-4c7e-9f00-1234567890ab");
    expect(noteIdFromHash("")).toBeNull();
    expect(noteIdFromHash("#")).toBeNull();
  });
});
