// What the page says once a decision on a task has been taken, so every button press
// is confirmed in words, not only by the task changing state.

export type Decision =
  | { kind: "plan_approved" }
  | { kind: "plan_feedback" }
  | { kind: "task_cancelled" }
  | { kind: "answers_sent"; count: number }
  | { kind: "merge_approved"; base?: string | null }
  | { kind: "changes_requested" };

/** The confirmation for `decision`, one sentence. */
export function decisionMessage(decision: Decision): string {
  switch (decision.kind) {
    case "plan_approved":
      return "Plan approved — the worker is implementing it.";
    case "plan_feedback":
      return "Feedback sent — the worker is revising the plan.";
    case "task_cancelled":
      return "Task cancelled — its worker is stopped and its branch kept.";
    case "answers_sent":
      return `${decision.count === 1 ? "Answer" : `${decision.count} answers`} sent — the worker is continuing.`;
    case "merge_approved":
      return `Approved — merging the work into ${decision.base ?? "its base branch"}.`;
    case "changes_requested":
      return "Feedback sent — the worker is making the changes.";
  }
}
