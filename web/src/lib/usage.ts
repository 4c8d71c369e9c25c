// What the usage screen draws and says, as plain functions: the spending report's
// shapes, the chart's scales, stacks and ticks, each source's colour, "resets in …",
// the budget form's parsing and the amount a budget hold suggests raising to.
import type { AgentBudget, Budgets, HoldKind, Totals, Usage, UsageDay } from "./api";
import { stateLabel, waitWords } from "./time";

type HoldLike = { kind?: HoldKind } | null | undefined;

/** A hold's kind (a hold saved before kinds were is a usage limit). */
export function holdKind(hold: HoldLike): HoldKind {
  return hold?.kind ?? "usage_limit";
}

/** A task's state in words, a hold named by what holds it: "Paused", "Budget reached". */
export function taskStateLabel(t: { state: string; hold?: HoldLike }): string {
  if (t.state !== "on_hold") return stateLabel(t.state);
  const kind = holdKind(t.hold);
  return kind === "paused" ? "Paused" : kind === "budget" ? "Budget reached" : stateLabel(t.state);
}

export const MAIN_THREAD = "main_thread";
export type Metric = "cost" | "tokens";
export const PERIODS = [7, 30, 90] as const;

export function metricOf(t: Totals, metric: Metric): number {
  return metric === "cost" ? Math.max(0, t.cost_usd) : Math.max(0, t.input_tokens) + Math.max(0, t.output_tokens);
}

/** A source as people read it. */
export function sourceLabel(source: string): string {
  return source === MAIN_THREAD ? "Main thread" : source;
}

// Mid-tone colours that read on the light and the dark themes alike.
const KNOWN: Record<string, string> = {
  [MAIN_THREAD]: "#7c6cd9",
  claude: "#d97745",
  codex: "#2f9e8f",
  gemini: "#3f7fe0",
  opencode: "#c2569b",
};
const PALETTE = ["#8a9a2e", "#d14d5b", "#4aa3c8", "#b8892b", "#6f7ea8", "#3c9c5a"];

/** A colour per source: known agents and the main thread keep theirs; others take the
 * palette's by name, so a source's colour is the same on every chart of the screen. */
export function sourceColors(sources: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  let next = 0;
  for (const s of [...new Set(sources)].sort()) {
    const known = KNOWN[s];
    if (known) out.set(s, known);
    else out.set(s, PALETTE[next++ % PALETTE.length] ?? "#888888");
  }
  return out;
}

/** Every source of the period, largest first (the report's order), then any only in days. */
export function sourcesOf(u: Pick<Usage, "sources" | "days">): string[] {
  const seen = new Set(u.sources.map((s) => s.source));
  const out = u.sources.map((s) => s.source);
  for (const d of u.days) {
    for (const s of d.sources) {
      if (seen.has(s.source)) continue;
      seen.add(s.source);
      out.push(s.source);
    }
  }
  return out;
}

/** Round axis ticks from 0 to at least `max`: steps of 1, 2 or 5 times a power of ten. */
export function niceTicks(max: number, count = 4): number[] {
  if (!(max > 0) || !Number.isFinite(max)) return [0, 1];
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = ([1, 2, 5, 10].find((m) => m * power >= raw) ?? 10) * power;
  const ticks: number[] = [];
  for (let i = 0; i * step < max + step * 1e-9; i++) ticks.push(round(i * step));
  if ((ticks.at(-1) ?? 0) < max) ticks.push(round(ticks.length * step));
  return ticks;
}

function round(v: number): number {
  return Number(v.toPrecision(12));
}

/** One source's part of a day's bar, from `y0` to `y1` in the metric's units. */
export interface Segment {
  source: string;
  value: number;
  y0: number;
  y1: number;
}
export interface Bar {
  date: string;
  total: number;
  segments: Segment[];
}

/** Each day's bar, its sources stacked in `order` (largest of the period at the bottom). */
export function stackDays(days: readonly UsageDay[], metric: Metric, order: readonly string[]): Bar[] {
  return days.map((d) => {
    const by = new Map(d.sources.map((s) => [s.source, metricOf(s, metric)]));
    let y = 0;
    const segments: Segment[] = [];
    for (const source of order) {
      const value = by.get(source) ?? 0;
      if (value <= 0) continue;
      segments.push({ source, value, y0: y, y1: y + value });
      y += value;
    }
    return { date: d.date, total: y, segments };
  });
}

/** Dollars for axes and labels: "$0", "$0.004", "$0.25", "$12", "$1.2k". */
export function money(usd: number): string {
  if (usd === 0) return "$0";
  if (usd < 0.01) return `$${usd.toFixed(3)}`;
  if (usd < 10) return `$${usd.toFixed(2)}`;
  if (usd < 1000) return `$${Math.round(usd)}`;
  return `$${(usd / 1000).toFixed(1).replace(/\.0$/, "")}k`;
}

/** A day axis label: "6 Dec". */
export function dayLabel(date: string): string {
  const [, m, d] = date.split("-").map(Number);
  const months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  return m && d ? `${d} ${months[m - 1] ?? ""}`.trim() : date;
}

/** Which bars get a day label so that at most `room` labels show, the last one always. */
export function labelled(count: number, room: number): Set<number> {
  const every = Math.max(1, Math.ceil(count / Math.max(1, room)));
  const out = new Set<number>();
  for (let i = count - 1; i >= 0; i -= every) out.add(i);
  return out;
}

/** "resets in 8 h"; once passed, "resets now"; unknown, null. */
export function resetsIn(at: string | null | undefined, now = Date.now()): string | null {
  const t = at ? Date.parse(at) : NaN;
  if (Number.isNaN(t)) return null;
  return t <= now ? "resets now" : `resets in ${waitWords(t - now)}`;
}

/** A quota window's name in words. */
export function windowLabel(window: string): string {
  const known: Record<string, string> = { five_hour: "5-hour window", seven_day: "Weekly", seven_day_opus: "Weekly (Opus)", seven_day_sonnet: "Weekly (Sonnet)" };
  return known[window] ?? window.replaceAll("_", " ");
}

/** A progress bar: the share of the cap spent (0..1) and whether it is reached. */
export function progress(spent: number, cap: number | null | undefined): { share: number; reached: boolean } | null {
  if (cap === null || cap === undefined || !(cap > 0)) return null;
  return { share: Math.min(1, Math.max(0, spent / cap)), reached: spent >= cap };
}

/** The amount a budget hold offers to raise to: above what is spent, a round figure,
 * at least double the cap it met (so one raise lasts a while). */
export function raiseSuggestion(spent: number, limit: number | null | undefined): number {
  const base = Math.max(spent * 1.5, (limit ?? 0) * 2, spent + 0.01);
  const step = base < 1 ? 0.05 : base < 10 ? 0.5 : base < 100 ? 5 : 50;
  const up = Math.ceil(base / step) * step;
  return Number((up > spent ? up : up + step).toFixed(2));
}

/** The budget form's fields: amounts as typed, empty for no cap. */
export interface BudgetForm {
  task: string;
  daily: string;
  weekly: string;
  agents: Record<string, { daily: string; weekly: string }>;
}

export function budgetForm(b: Budgets, agents: readonly string[]): BudgetForm {
  const s = (v: number | null | undefined) => (typeof v === "number" ? String(v) : "");
  const names = [...new Set([...agents, ...Object.keys(b.agents ?? {})])];
  return {
    task: s(b.task_usd),
    daily: s(b.daily_usd),
    weekly: s(b.weekly_usd),
    agents: Object.fromEntries(names.map((n) => [n, { daily: s(b.agents?.[n]?.daily_usd), weekly: s(b.agents?.[n]?.weekly_usd) }])),
  };
}

/** The budgets a form says, or the first field that is not a number. Range checks are
 * the server's (its 422 names the field). */
export function parseBudgetForm(f: BudgetForm): { budgets: Budgets } | { error: string } {
  const bad: string[] = [];
  const amount = (v: string, what: string): number | undefined => {
    const t = v.trim().replace(/^\$/, "");
    if (t === "") return undefined;
    const n = Number(t);
    if (!Number.isFinite(n)) bad.push(what);
    return n;
  };
  const budgets: Budgets = {};
  const task = amount(f.task, "The task cap");
  const daily = amount(f.daily, "The daily cap");
  const weekly = amount(f.weekly, "The weekly cap");
  if (task !== undefined) budgets.task_usd = task;
  if (daily !== undefined) budgets.daily_usd = daily;
  if (weekly !== undefined) budgets.weekly_usd = weekly;
  const agents: Record<string, AgentBudget> = {};
  for (const [name, a] of Object.entries(f.agents)) {
    const d = amount(a.daily, `${name}'s daily cap`);
    const w = amount(a.weekly, `${name}'s weekly cap`);
    if (d === undefined && w === undefined) continue;
    agents[name] = { ...(d !== undefined ? { daily_usd: d } : {}), ...(w !== undefined ? { weekly_usd: w } : {}) };
  }
  if (Object.keys(agents).length) budgets.agents = agents;
  const first = bad[0];
  return first ? { error: `${first} must be a number of dollars, or empty for no cap.` } : { budgets };
}

/** The cap and the spending a budget hold's reason names ("… of $0.05 is reached ($0.06
 * spent) …"), where it does. */
export function reachedAmounts(reason: string | null | undefined): { limit: number; spent: number } | null {
  const m = /of \$([\d.]+) is reached \(\$([\d.]+) spent\)/.exec(reason ?? "");
  const limit = Number(m?.[1]);
  const spent = Number(m?.[2]);
  return m && Number.isFinite(limit) && Number.isFinite(spent) ? { limit, spent } : null;
}
