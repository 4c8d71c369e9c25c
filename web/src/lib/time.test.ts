import { describe, expect, it } from "vitest";
import { age, clockWords, holdLine, stateLabel, waitWords } from "./time";

describe("words for people", () => {
  it("names every state in words, never as an identifier", () => {
    const states = [
      "queued", "planning", "waiting_answers", "waiting_plan_review", "implementing",
      "on_hold", "checking", "review", "merged", "failed", "cancelled",
    ];
    for (const s of states) {
      const words = stateLabel(s);
      expect(words).not.toContain("_");
      expect(words.charAt(0)).toBe(words.charAt(0).toUpperCase());
    }
    expect(stateLabel("waiting_plan_review")).toBe("Plan ready for review");
    expect(stateLabel("on_hold")).toBe("On hold");
    // A state this version does not know still reads as words.
    expect(stateLabel("some_new_state")).toBe("some new state");
  });

  it("ages are short", () => {
    const now = Date.parse("2026-01-01T12:00:00Z");
    expect(age("2026-01-01T11:59:30Z", now)).toBe("now");
    expect(age("2026-01-01T11:00:00Z", now)).toBe("1h");
  });

  // Local times built from local parts, so the words do not depend on the time zone.
  const local = (day: number, h: number, m: number, s = 0) => new Date(2026, 0, day, h, m, s).getTime();

  it("a hold says when the task goes on, in local time, and how long that is", () => {
    const now = local(7, 13, 25); // a Wednesday
    expect(holdLine(new Date(local(7, 15, 30)).toISOString(), now)).toBe(
      "Usage limit reached · goes on at 15:30 (in 2 h 5 min)",
    );
    expect(holdLine(new Date(local(8, 9, 0)).toISOString(), now)).toBe(
      "Usage limit reached · goes on at tomorrow 09:00 (in 19 h 35 min)",
    );
    // A weekly limit resets days away.
    expect(holdLine(new Date(local(10, 9, 0)).toISOString(), now)).toBe(
      "Usage limit reached · goes on at Sat 09:00 (in 2 d 19 h)",
    );
  });

  it("a hold with no reset time or one already past says so", () => {
    const now = local(7, 13, 25);
    const unknown = "Usage limit reached · reset time unknown; it tries again by itself";
    expect(holdLine(null, now)).toBe(unknown);
    expect(holdLine(undefined, now)).toBe(unknown);
    expect(holdLine("not a time", now)).toBe(unknown);
    expect(holdLine(new Date(local(7, 13, 0)).toISOString(), now)).toBe("Usage limit reset · going on now");
    expect(holdLine(new Date(now).toISOString(), now)).toBe("Usage limit reset · going on now");
  });

  it("waits round up and clocks name the day when it is not today", () => {
    expect(waitWords(1)).toBe("1 min");
    expect(waitWords(59 * 60_000)).toBe("59 min");
    expect(waitWords(60 * 60_000)).toBe("1 h");
    expect(waitWords(61 * 60_000 + 1)).toBe("1 h 2 min");
    expect(waitWords(48 * 3600_000)).toBe("2 d");
    const now = local(7, 23, 50);
    expect(clockWords(local(8, 0, 5), now)).toBe("tomorrow 00:05");
    expect(clockWords(local(20, 8, 0), now)).toBe("20 Jan 08:00");
    expect(clockWords(local(7, 8, 0), now)).toBe("08:00");
    expect(clockWords(local(6, 8, 0), now)).toBe("6 Jan 08:00");
  });
});
