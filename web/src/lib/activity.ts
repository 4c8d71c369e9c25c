// What a task's agent did, in plain words: transcript entries folded into steps ("Read 3
// files", "Wrote `GREETING.md`", "Ran `npm test` → failed", "You: add tests"), paths
// relative to the task's worktree and the CLI's internal chatter left out. Folded one
// entry at a time, so a live transcript costs one step's work per entry.
import type { TranscriptEntry } from "./api";

export type StepKind =
  | "read"
  | "write"
  | "edit"
  | "run"
  | "search"
  | "web"
  | "ask"
  | "plan"
  | "say"
  | "you"
  | "note"
  | "checks"
  | "error"
  | "done"
  | "other";

export interface Step {
  /** The first entry's position in the transcript: a stable key. */
  seq: number;
  kind: StepKind;
  /** Plain words; `code` in backticks. */
  text: string;
  failed: boolean;
  /** A short reason or the files a grouped step touched. */
  detail: string;
}

export interface ActivityContext {
  /** The task's worktree: paths inside it are shown relative to it. */
  worktree?: string | null;
}

type Entry = TranscriptEntry & { seq?: number };

/** Kinds whose consecutive steps fold into one ("Read 3 files"). */
const GROUPED: Partial<Record<StepKind, [single: string, many: string]>> = {
  read: ["Read", "Read {n} files"],
  write: ["Wrote", "Wrote {n} files"],
  edit: ["Edited", "Edited {n} files"],
};

const PROSE_CHARS = 160;
const CODE_CHARS = 60;

/** A tool call waiting for its result. */
interface Pending {
  name: string;
  step: Step | null;
}

export class ActivityLog {
  readonly steps: Step[] = [];
  private pending = new Map<string, Pending>();
  private files = new WeakMap<Step, string[]>();
  private planned = false;
  private seq = 0;

  /** `limit` keeps only the newest steps (a status line needs one, not thousands). */
  constructor(
    private readonly cx: ActivityContext = {},
    private readonly limit = Infinity,
  ) {}

  /** Folds in the next entry (the newest step may change in place). */
  add(e: Entry): void {
    this.seq = e.seq ?? this.seq + 1;
    this.fold(e);
    if (this.steps.length > this.limit) this.steps.splice(0, this.steps.length - this.limit);
  }

  /** The current step in one line, for the inbox's Running line. */
  now(): string | null {
    const s = this.steps.at(-1);
    return s ? stepLine(s) : null;
  }

  private push(kind: StepKind, text: string, detail = ""): Step {
    const s: Step = { seq: this.seq, kind, text, failed: false, detail };
    this.steps.push(s);
    return s;
  }

  private fold(e: Entry): void {
    switch (e.kind) {
      case "text": {
        const text = prose(e.payload.text, this.cx);
        if (!text) return;
        const last = this.steps.at(-1);
        if (last?.kind === "say") last.text = clip(`${last.text} ${text}`, PROSE_CHARS);
        else this.push("say", clip(text, PROSE_CHARS));
        return;
      }
      case "tool_call":
        return this.call(e.payload.id, e.payload.name, e.payload.summary);
      case "tool_result":
        return this.result(e.payload.tool_use_id, e.payload.is_error, e.payload.summary);
      case "question": {
        const n = e.payload.questions.length;
        const text = n === 1 ? "Asked a question" : `Asked ${n} questions`;
        const last = this.steps.at(-1);
        if (last?.kind === "ask") last.text = text;
        else this.push("ask", text);
        return;
      }
      case "plan": {
        if (this.steps.at(-1)?.kind === "plan") return;
        this.planStep();
        return;
      }
      case "status":
        this.push("note", statusText(e.payload.text));
        return;
      case "checks": {
        const p = e.payload;
        const cmd = code(p.command, this.cx);
        if (p.no_ci || p.passed == null) this.push("checks", "Nothing checked the work (no CI)");
        else if (p.timed_out) this.push("checks", `Checks timed out (${cmd})`).failed = true;
        else if (p.passed) this.push("checks", `Checks passed (${cmd})`);
        else this.push("checks", `Checks failed (${cmd})`).failed = true;
        return;
      }
      case "finished":
        if (e.payload.usage_limit) {
          this.push("done", "Stopped at the usage limit", reason(e.payload.result ?? "", this.cx));
        } else if (e.payload.is_error) {
          const s = this.push("error", "Stopped with an error", reason(e.payload.result ?? "", this.cx));
          s.failed = true;
        } else {
          this.push("done", "Finished");
        }
        return;
      case "error": {
        const s = this.push("error", "The agent stopped", reason(e.payload.text, this.cx));
        s.failed = true;
        return;
      }
      // Bookkeeping, not activity: session ids, permission decisions (a refusal comes
      // back as the tool's result), unreadable lines and kinds this version cannot read.
      case "session":
      case "permission":
      case "malformed":
      case "unknown":
        return;
    }
  }

  private planStep(): Step {
    const s = this.push("plan", this.planned ? "Revised the plan" : "Wrote a plan");
    this.planned = true;
    return s;
  }

  private call(id: string, name: string, summary: string): void {
    const arg = summary.startsWith(name) ? summary.slice(name.length).replace(/^:?\s*/, "") : summary;
    const cx = this.cx;
    let step: Step | null = null;
    switch (name) {
      case "Read":
      case "Write":
      case "Edit":
      case "MultiEdit":
      case "NotebookEdit": {
        const kind: StepKind = name === "Read" ? "read" : name === "Write" ? "write" : "edit";
        if (isPlanFile(arg)) {
          step = kind === "read" ? this.push("read", "Read the plan") : this.planStep();
        } else {
          step = this.file(kind, relPath(arg, cx));
        }
        break;
      }
      case "Bash":
        step = this.push("run", `Ran ${code(arg, cx)}`);
        break;
      case "Grep":
      case "Glob": {
        const last = this.steps.at(-1);
        step = last?.kind === "search" ? last : this.push("search", "Searched the code");
        break;
      }
      case "WebSearch":
        step = this.push("web", `Searched the web for ${code(arg, cx)}`);
        break;
      case "WebFetch":
        step = this.push("web", `Read ${code(arg, cx)}`);
        break;
      case "TodoWrite":
        step = this.push("other", "Updated its to-do list");
        break;
      case "Task":
      case "Agent":
        step = this.push("other", `Delegated: ${clip(arg, CODE_CHARS)}`);
        break;
      case "AskUserQuestion":
        step = this.steps.at(-1)?.kind === "ask" ? (this.steps.at(-1) ?? null) : this.push("ask", "Asked a question");
        break;
      case "ExitPlanMode":
        // The plan itself arrives as its own entry.
        break;
      default:
        step = this.push("other", `Used ${name}`);
    }
    this.pending.set(id, { name, step });
  }

  /** A file step, folded into the previous one when it is of the same kind. */
  private file(kind: StepKind, path: string): Step {
    const [single, many] = GROUPED[kind] ?? ["", ""];
    const last = this.steps.at(-1);
    const files = last && last.kind === kind && !last.failed ? this.files.get(last) : undefined;
    if (last && files) {
      if (!files.includes(path)) files.push(path);
      last.text = files.length === 1 ? `${single} \`${files[0]}\`` : many.replace("{n}", String(files.length));
      last.detail = files.length > 1 ? files.join(", ") : "";
      return last;
    }
    const s = this.push(kind, `${single} \`${path}\``);
    this.files.set(s, [path]);
    return s;
  }

  private result(id: string, isError: boolean, summary: string): void {
    const call = this.pending.get(id);
    this.pending.delete(id);
    if (call?.name === "ExitPlanMode") {
      if (isError) this.push("you", `You: ${clip(feedback(summary), PROSE_CHARS)}`);
      else if (summary.includes("approved your plan")) this.push("you", "You approved the plan");
      return;
    }
    if (call?.name === "AskUserQuestion") {
      if (isError) this.push("you", `You: ${clip(feedback(summary), PROSE_CHARS)}`);
      else {
        const given = answersGiven(summary);
        if (given) this.push("you", `You: ${clip(given, PROSE_CHARS)}`);
      }
      return;
    }
    if (!isError || !call?.step) return;
    const s = call.step;
    s.failed = true;
    s.detail = reason(summary, this.cx);
    if (s.kind === "run" && !s.text.endsWith("→ failed")) s.text = `${s.text} → failed`;
  }
}

/** The activity of a whole transcript (a test's or a page's worth). */
export function activity(entries: readonly Entry[], cx: ActivityContext = {}): Step[] {
  const log = new ActivityLog(cx);
  for (const e of entries) log.add(e);
  return log.steps;
}

/** One step as one line: the words, and why it failed if it did. */
export function stepLine(s: Step): string {
  if (s.failed && s.detail && !s.text.endsWith("→ failed")) return `${s.text} → ${s.detail}`;
  if (s.failed && s.detail) return `${s.text}: ${s.detail}`;
  return s.text;
}

/** A step's line split at its backticks, for rendering `code` spans as text (never HTML). */
export function codeParts(text: string): { code: boolean; text: string }[] {
  return text
    .split("`")
    .map((t, i) => ({ code: i % 2 === 1, text: t }))
    .filter((p) => p.text);
}

/** Whether `path` is the agent's plan file (kept outside the worktree by the CLI). */
export function isPlanFile(path: string): boolean {
  return /\/\.claude\/plans\/[^/]+\.md$/.test(path.trim());
}

/** `path` relative to the worktree; outside it, its last two parts. */
export function relPath(path: string, cx: ActivityContext): string {
  const p = path.trim();
  const root = cx.worktree?.replace(/\/+$/, "");
  if (root && (p === root || p.startsWith(`${root}/`))) return p.slice(root.length + 1) || ".";
  if (!p.startsWith("/")) return p;
  const parts = p.split("/").filter(Boolean);
  return parts.length <= 2 ? parts.join("/") : `…/${parts.slice(-2).join("/")}`;
}

/** Every absolute path in `text` made short, and long hex hashes cut to seven digits. */
export function shortenPaths(text: string, cx: ActivityContext): string {
  return text
    // Two parts at least: "/login" in "Please run /login" is a command, not a path.
    .replace(/(^|[\s"'`(=])(\/[^\s"'`()/]+\/[^\s"'`()]+)/g, (_, pre: string, p: string) => `${pre}${isPlanFile(p) ? "the plan" : relPath(p, cx)}`)
    .replace(/\b([0-9a-f]{7})[0-9a-f]{33}\b/g, "$1");
}

/** A tool's error, as a short reason: the CLI's wrappers and internal notes removed. */
export function reason(text: string, cx: ActivityContext): string {
  const clean = text
    .replace(/<\/?tool_use_error>/g, "")
    .replace(/^Exit code (\d+)\s*/i, (_, c: string) => `exit code ${c}\n`);
  const lines = clean
    .split("\n")
    .map((l) => l.trim().replace(/^Error:\s*/i, ""))
    .filter(Boolean);
  const first = lines[0] ?? "";
  // "exit code 1" says little alone: the next line usually says why.
  const line = /^exit code \d+$/.test(first) && lines[1] ? `${lines[1]} (${first})` : first;
  return clip(shortenPaths(line, cx), CODE_CHARS * 2);
}

/** What the human said back through a refused tool (a plan sent back, say). */
function feedback(summary: string): string {
  const said = summary.split(/the user said:\s*/i);
  const text = (said.length > 1 ? said.slice(1).join(" ") : summary).replace(/<\/?tool_use_error>/g, "");
  if (/^The user doesn't want to proceed/.test(text.trim())) return "declined";
  return text.split("\n").map((l) => l.trim()).filter(Boolean).join(" ");
}

/** `Your questions have been answered: "Q"="A", "R"="B". …` → `Q → A; R → B`. */
function answersGiven(summary: string): string {
  const pairs = [...summary.matchAll(/"([^"]*)"="([^"]*)"/g)].map((m) => `${m[1]} → ${m[2]}`);
  return pairs.join("; ");
}

/** The worker's own notes, worded for people. */
export function statusText(text: string): string {
  const t = shortenPaths(text.trim(), {})
    .replace(/^running checks: (.+)$/, (_, c: string) => `running checks: \`${clip(c, CODE_CHARS)}\``)
    .replace(/^no check command configured; skipping checks$/, "no checks configured, so none ran");
  return t.charAt(0).toUpperCase() + t.slice(1);
}

/** The agent's prose: its first paragraph, paths short. */
function prose(text: string, cx: ActivityContext): string {
  const para = text.split(/\n\s*\n/).find((p) => p.trim()) ?? "";
  return shortenPaths(para.replace(/\s+/g, " ").trim(), cx);
}

/** A command or argument in backticks, short. */
function code(s: string, cx: ActivityContext): string {
  const t = shortenPaths(s.replace(/\s+/g, " ").trim(), cx).replaceAll("`", "'");
  return `\`${clip(t, CODE_CHARS)}\``;
}

function clip(s: string, max: number): string {
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}
