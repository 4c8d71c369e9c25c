import { describe, expect, it } from "vitest";
import { failedText, NO_CHANGES } from "./failed";

describe("failedText", () => {
  it("explains a run that changed nothing in plain words", () => {
    const t = failedText(NO_CHANGES);
    expect(t.noChanges).toBe(true);
    expect(t.headline).toBe("The worker made no changes.");
    expect(t.explanation).toContain("nothing to review");
  });

  it("keeps other failures as reported", () => {
    expect(failedText("merge failed: boom")).toEqual({ headline: "merge failed: boom", explanation: null, noChanges: false });
    expect(failedText(null).headline).toBe("It stopped with no reason given.");
  });
});
