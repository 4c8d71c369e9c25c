// The "New task" form's rules, apart from the screen: the draft that survives reloads
// and failed sends, which repositories to offer (the ones used most recently first),
// what is missing before sending, and which field a server refusal is about.
import type { Project, Task } from "./api";

export interface TaskDraft {
  description: string;
  repo: string;
  skipPlan: boolean;
}

export type DraftField = "description" | "repo";
export type FieldErrors = Partial<Record<DraftField, string>>;

export const EMPTY_DRAFT: TaskDraft = { description: "", repo: "", skipPlan: false };

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
    };
  } catch {
    return { ...EMPTY_DRAFT };
  }
}

/** What to store for a draft: nothing once it holds nothing worth keeping. */
export function serializeDraft(d: TaskDraft): string | null {
  if (!d.description.trim() && !d.repo.trim() && !d.skipPlan) return null;
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

/** What must be filled in before the form may be sent (the server checks the rest). */
export function missing(d: TaskDraft): FieldErrors {
  const errors: FieldErrors = {};
  if (!d.description.trim()) errors.description = "Describe what the worker should do.";
  if (!d.repo.trim()) errors.repo = "Name a repository: a local path, a git URL or owner/name.";
  return errors;
}

/**
 * Which field a refusal from the server is about. Its messages about a field start with
 * the field's name (`repo: not a git repository`, `description is longer than …`);
 * anything else (the network, the server) belongs to the form as a whole.
 */
export function errorField(message: string): DraftField | null {
  const m = /^(description|repo)\b/.exec(message);
  return m ? (m[1] as DraftField) : null;
}
