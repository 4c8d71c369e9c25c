import { describe, expect, it } from "vitest";
import { decisionMessage } from "./decisions";

describe("decisionMessage", () => {
  it("confirms each decision in words", () => {
    expect(decisionMessage({ kind: "plan_approved" })).toBe("Plan approved — the worker is implementing it.");
    expect(decisionMessage({ kind: "plan_feedback" })).toBe("Feedback sent — the worker is revising the plan.");
    expect(decisionMessage({ kind: "task_cancelled" })).toMatch(/^Task cancelled/);
    expect(decisionMessage({ kind: "changes_requested" })).toBe("Feedback sent — the worker is making the changes.");
  });

  it("counts answers", () => {
    expect(decisionMessage({ kind: "answers_sent", count: 1 })).toBe("Answer sent — the worker is continuing.");
    expect(decisionMessage({ kind: "answers_sent", count: 3 })).toBe("3 answers sent — the worker is continuing.");
  });

  it("names the branch a merge goes into", () => {
    expect(decisionMessage({ kind: "merge_approved", base: "main" })).toBe("Approved — merging the work into main.");
    expect(decisionMessage({ kind: "merge_approved", base: null })).toBe("Approved — merging the work into its base branch.");
  });
});
