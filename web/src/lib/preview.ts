// The "Open preview" button's rules: which tasks offer it, and what the button says
// while the preview starts or after it could not.
import { FINAL_STATES } from "./model";

/** What a task needs for the button: its state and whether it has a worktree yet. */
export interface PreviewCandidate {
  state: string;
  worktree?: string | null;
}

/**
 * Whether the task offers "Open preview": it has a worktree to serve and has not ended.
 * Whether its repository declares a `preview` command is the server's to say, when
 * the button is pressed.
 */
export function offersPreview(task: PreviewCandidate): boolean {
  return !!task.worktree && !FINAL_STATES.has(task.state);
}

/** The button's label. */
export function previewLabel(busy: boolean): string {
  return busy ? "Starting preview…" : "Open preview";
}

/**
 * The address the preview opens at, checked: the server's answer must be an http(s)
 * URL, never something a new tab would run.
 */
export function previewUrl(url: unknown): string | null {
  if (typeof url !== "string") return null;
  try {
    const u = new URL(url);
    return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
  } catch {
    return null;
  }
}

/** What the screen shows when the preview could not open: the server's reason, whose
 * first line says what happened and whose rest is the command's output. */
export function previewError(message: string): { headline: string; output: string } {
  const text = message.trim();
  const nl = text.indexOf("\n");
  if (nl < 0) return { headline: text || "The preview could not open.", output: "" };
  return { headline: text.slice(0, nl).trim(), output: text.slice(nl + 1).trim() };
}
