import { describe, expect, it } from "vitest";
import { age, stateLabel } from "./time";

describe("words for people", () => {
  it("names every state in words, never as an identifier", () => {
    const states = [
      "queued", "planning", "waiting_answers", "waiting_plan_review", "implementing",
      "checking", "review", "merged", "failed", "cancelled",
    ];
    for (const s of states) {
      const words = stateLabel(s);
      expect(words).not.toContain("_");
      expect(words.charAt(0)).toBe(words.charAt(0).toUpperCase());
    }
    expect(stateLabel("waiting_plan_review")).toBe("Plan ready for review");
    // A state this version does not know still reads as words.
    expect(stateLabel("some_new_state")).toBe("some new state");
  });

  it("ages are short", () => {
    const now = Date.parse("2026-01-01T12:00:00Z");
    expect(age("2026-01-01T11:59:30Z", now)).toBe("now");
    expect(age("2026-01-01T11:00:00Z", now)).toBe("1h");
  });
});
