// The "New task" form's rules, apart from the screen: the draft that survives reloads
// and failed sends, which repositories to offer (the ones used most recently first),
// what is missing or wrong before sending (the cost cap's range and the runner labels
// among it), and which field a server refusal is about.
import type { Project, Task } from "./api";

export interface TaskDraft {
  description: string;
  repo: string;
  skipPlan: boolean;
  /** The task's own cost cap in dollars, as typed; empty for the user's default. */
  costCap: string;
  /** Runner labels the machine must carry, as typed (commas or spaces between). */
  labels: string;
}

export type DraftField = "description" | "repo" | "costCap" | "labels";
export type FieldErrors = Partial<Record<DraftField, string>>;

export const EMPTY_DRAFT: TaskDraft = { description: "", repo: "", skipPlan: false, costCap: "", labels: "" };

/** The largest cost cap the server takes, in dollars. */
export const MAX_COST_CAP = 1_000_000;

/** The most runner labels a task may require (the project's come on top). */
export const MAX_LABELS = 8;

/** A stored draft, or the empty one when nothing (or something unreadable) is stored. */
export function parseDraft(raw: string | null): TaskDraft {
  if (!raw) return { ...EMPTY_DRAFT };
  try {
    const v: unknown = JSON.parse(raw);
    if (typeof v !== "object" || v === null) return { ...EMPTY_DRAFT };
    const o = v as Record<string, unknown>;
    return {
      description: typeof o.description === "string" ? o.description : "",
      repo: typeof o.repo === "string" ? o.repo : "",
      skipPlan: o.skipPlan === true,
      costCap: typeof o.costCap === "string" ? o.costCap : "",
      labels: typeof o.labels === "string" ? o.labels : "",
    };
  } catch {
    return { ...EMPTY_DRAFT };
  }
}

/** What to store for a draft: nothing once it holds nothing worth keeping. */
export function serializeDraft(d: TaskDraft): string | null {
  if (!d.description.trim() && !d.repo.trim() && !d.skipPlan && !d.costCap.trim() && !d.labels.trim()) return null;
  return JSON.stringify(d);
}

/** The user's repositories, the one with the latest task activity first, each once. */
export function recentRepos(projects: readonly Project[], tasks: Iterable<Task>, limit = 8): string[] {
  const lastUsed = new Map<string, number>();
  for (const t of tasks) {
    const at = Date.parse(t.updated_at);
    if (at > (lastUsed.get(t.project_id) ?? -Infinity)) lastUsed.set(t.project_id, at);
  }
  const used = (p: Project) => lastUsed.get(p.id) ?? Date.parse(p.created_at);
  const seen = new Set<string>();
  const out: string[] = [];
  for (const p of [...projects].sort((a, b) => used(b) - used(a))) {
    if (seen.has(p.repo)) continue;
    seen.add(p.repo);
    out.push(p.repo);
    if (out.length === limit) break;
  }
  return out;
}

/**
 * A cost cap as typed: dollars with an optional `$` and cents, more than zero and at
 * most a million; empty means the user's default (null).
 */
export function parseCostCap(text: string): { usd: number | null } | { error: string } {
  if (text.trim() === "") return { usd: null };
  const t = text.trim().replace(/^\$\s*/, "");
  const usd = /^(\d+(\.\d*)?|\.\d+)$/.test(t) ? Number(t) : NaN;
  if (!Number.isFinite(usd)) return { error: "A cost cap is a number of dollars, like 5 or 2.50, or empty for your default." };
  if (usd <= 0) return { error: "A cost cap must be more than $0, or empty for your default." };
  if (usd > MAX_COST_CAP) return { error: "A cost cap can be at most $1,000,000." };
  return { usd };
}

/**
 * Runner labels as typed: separated by commas or spaces, each 1 to 63 lowercase letters,
 * digits, `-`, `_` or `.` (as a runner's `--label`), at most eight; repeats count once.
 */
export function parseLabels(text: string): { labels: string[] } | { error: string } {
  const labels = [...new Set(text.split(/[\s,]+/).filter((l) => l !== ""))].sort();
  const bad = labels.find((l) => !/^[a-z0-9._-]{1,63}$/.test(l));
  if (bad !== undefined) return { error: `"${bad}" is not a label: use 1 to 63 lowercase letters, digits, -, _ or .` };
  if (labels.length > MAX_LABELS) return { error: `At most ${MAX_LABELS} labels.` };
  return { labels };
}

/** The `runner_labels` to send: those typed, or nothing when none are. */
export function runnerLabels(d: TaskDraft): { runner_labels: string[] } | Record<string, never> {
  const parsed = parseLabels(d.labels);
  return "labels" in parsed && parsed.labels.length ? { runner_labels: parsed.labels } : {};
}

/** What must be filled in or put right before the form may be sent (the server checks the rest). */
export function missing(d: TaskDraft): FieldErrors {
  const errors: FieldErrors = {};
  if (!d.description.trim()) errors.description = "Describe what the worker should do.";
  if (!d.repo.trim()) errors.repo = "Name a repository: a local path, a git URL or owner/name.";
  const cap = parseCostCap(d.costCap);
  if ("error" in cap) errors.costCap = cap.error;
  const labels = parseLabels(d.labels);
  if ("error" in labels) errors.labels = labels.error;
  return errors;
}

/** The `budget_usd` to send: the cap typed, or nothing for the user's default. */
export function budgetUsd(d: TaskDraft): { budget_usd: number } | Record<string, never> {
  const cap = parseCostCap(d.costCap);
  return "usd" in cap && cap.usd !== null ? { budget_usd: cap.usd } : {};
}

/**
 * Which field a refusal from the server is about. Its messages about a field start with
 * the field's name (`repo: not a git repository`, `description is longer than …`,
 * `budget_usd must be …`, `runner_labels: label …`); anything else (the network, the
 * server, the project's own labels setting) belongs to the form as a whole.
 */
export function errorField(message: string): DraftField | null {
  const m = /^(description|repo|budget_usd|runner_labels)\b/.exec(message);
  if (!m) return null;
  if (m[1] === "budget_usd") return "costCap";
  if (m[1] === "runner_labels") return "labels";
  return m[1] as DraftField;
}
