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
  on_hold: "On hold",
  checking: "Checking the work",
  review: "Ready for review",
  merged: "Merged",
  failed: "Failed",
  cancelled: "Cancelled",
};

export function stateLabel(state: string): string {
  return STATE_WORDS[state] ?? state.replaceAll("_", " ");
}

const WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const MINUTE = 60_000;
const DAY_MS = 24 * 3600 * 1000;

/** A wait in whole units, rounded up so it never reads as none: "45 min", "2 h 5 min", "3 d 4 h". */
export function waitWords(ms: number): string {
  const minutes = Math.max(1, Math.ceil(ms / MINUTE));
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return minutes % 60 ? `${hours} h ${minutes % 60} min` : `${hours} h`;
  const days = Math.floor(hours / 24);
  return hours % 24 ? `${days} d ${hours % 24} h` : `${days} d`;
}

/** Local midnight of the day `t` falls on. */
function dayStart(t: number): number {
  const d = new Date(t);
  return new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
}

/** When `at` is, in local time as near as it is to `now`: "15:30", "tomorrow 09:00",
 * "Thu 09:00" within the week, "8 Jan 09:00" beyond. */
export function clockWords(at: number, now = Date.now()): string {
  const d = new Date(at);
  const hm = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  const days = Math.round((dayStart(at) - dayStart(now)) / DAY_MS);
  if (days === 0) return hm;
  if (days === 1) return `tomorrow ${hm}`;
  if (days > 1 && days < 7) return `${WEEKDAYS[d.getDay()]} ${hm}`;
  return `${d.getDate()} ${MONTHS[d.getMonth()]} ${hm}`;
}

/**
 * What a task on hold waits for, in one line: "Usage limit reached · goes on at 15:30
 * (in 2 h 5 min)". `until` is the limit's reset as the API gives it; without one the
 * server tries again by itself after a while, and once it has passed the task is about
 * to go on. A hold at a budget or while work is paused says so instead (`kind`, the
 * hold's).
 */
export function holdLine(until: string | null | undefined, now = Date.now(), kind = "usage_limit"): string {
  if (kind === "paused") return "Paused · goes on when you resume";
  if (kind === "budget") return "Budget reached · raise it, or continue once";
  const at = until ? Date.parse(until) : NaN;
  if (Number.isNaN(at)) return "Usage limit reached · reset time unknown; it tries again by itself";
  if (at <= now) return "Usage limit reset · going on now";
  return `Usage limit reached · goes on at ${clockWords(at, now)} (in ${waitWords(at - now)})`;
}
