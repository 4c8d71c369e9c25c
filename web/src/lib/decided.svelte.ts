// The last decision taken on a task page, kept outside the component that took it:
// taking it changes the task's state, which replaces that component.
import { decisionMessage, type Decision } from "./decisions";

export const decided = $state<{ taskId: string | null; state: string; text: string }>({ taskId: null, state: "", text: "" });

/** Shows the confirmation of `decision` on `taskId`'s page while the task stays in
 * `state`, the one the decision put it in: once it moves on, the news is stale. */
export function confirmDecision(taskId: string, state: string, decision: Decision): void {
  decided.taskId = taskId;
  decided.state = state;
  decided.text = decisionMessage(decision);
}
