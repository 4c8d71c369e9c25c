// Short relative ages ("3m", "2h", "5d") for lists.
export function age(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return "now";
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** A task's state in words for people, not the API's identifier. */
const STATE_WORDS: Record<string, string> = {
  queued: "Waiting for a worker",
  planning: "Planning",
  waiting_answers: "Needs your answers",
  waiting_plan_review: "Plan ready for review",
  implementing: "Working",
  checking: "Checking the work",
  review: "Ready for review",
  merged: "Merged",
  failed: "Failed",
  cancelled: "Cancelled",
};

export function stateLabel(state: string): string {
  return STATE_WORDS[state] ?? state.replaceAll("_", " ");
}
