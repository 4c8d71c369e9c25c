import { describe, expect, it } from "vitest";
import { holdLine } from "./time";
import {
  budgetForm,
  dayLabel,
  holdKind,
  labelled,
  money,
  niceTicks,
  parseBudgetForm,
  progress,
  raiseSuggestion,
  reachedAmounts,
  resetsIn,
  sourceColors,
  sourceLabel,
  sourcesOf,
  stackDays,
  taskStateLabel,
  windowLabel,
} from "./usage";
import type { UsageDay } from "./api";

const totals = (cost: number, tokens = 0) => ({ cost_usd: cost, input_tokens: tokens, output_tokens: 0, runs: 1 });
const day = (date: string, parts: Record<string, number>): UsageDay => ({
  date,
  ...totals(Object.values(parts).reduce((a, b) => a + b, 0)),
  sources: Object.entries(parts).map(([source, c]) => ({ source, ...totals(c, c * 1000) })),
});

describe("the usage chart", () => {
  it("ticks are round and reach past the largest bar", () => {
    expect(niceTicks(0.37)).toEqual([0, 0.1, 0.2, 0.3, 0.4]);
    expect(niceTicks(8)).toEqual([0, 2, 4, 6, 8]);
    expect(niceTicks(9)).toEqual([0, 5, 10]);
    expect(niceTicks(1234)).toEqual([0, 500, 1000, 1500]);
    // Nothing spent still draws an axis.
    expect(niceTicks(0)).toEqual([0, 1]);
    for (const max of [0.0003, 0.07, 3, 41, 99_999]) {
      const t = niceTicks(max);
      expect(t[0]).toBe(0);
      expect(t.at(-1)).toBeGreaterThanOrEqual(max);
      expect(t.length).toBeLessThanOrEqual(7);
    }
  });

  it("stacks each day's sources in the period's order, skipping what spent nothing", () => {
    const days = [day("2026-12-05", { claude: 0.2, main_thread: 0.05 }), day("2026-12-06", {})];
    const bars = stackDays(days, "cost", ["claude", "main_thread", "codex"]);
    expect(bars[0]?.segments.map((s) => [s.source, s.y0, s.y1])).toEqual([
      ["claude", 0, 0.2],
      ["main_thread", 0.2, 0.25],
    ]);
    expect(bars[0]?.total).toBeCloseTo(0.25);
    expect(bars[1]).toEqual({ date: "2026-12-06", total: 0, segments: [] });
    // Tokens count input and output.
    expect(stackDays(days, "tokens", ["claude"])[0]?.total).toBe(200);
  });

  it("lists every source, the period's largest first, then any seen only in a day", () => {
    const u = { sources: [{ source: "codex", ...totals(2) }], days: [day("2026-12-06", { claude: 1, codex: 2 })] };
    expect(sourcesOf(u)).toEqual(["codex", "claude"]);
  });

  it("gives each source one colour, the main thread and known agents their own", () => {
    const a = sourceColors(["zeta", "claude", "main_thread", "alpha"]);
    const b = sourceColors(["alpha", "zeta"]);
    expect(a.get("alpha")).toBe(b.get("alpha"));
    expect(a.get("zeta")).toBe(b.get("zeta"));
    expect(new Set(a.values()).size).toBe(4);
    expect(sourceLabel("main_thread")).toBe("Main thread");
    expect(sourceLabel("codex")).toBe("codex");
  });

  it("labels days briefly and thins them to fit", () => {
    expect(dayLabel("2026-12-06")).toBe("6 Dec");
    expect(dayLabel("2026-01-31")).toBe("31 Jan");
    expect([...labelled(7, 10)].sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    const some = labelled(90, 6);
    expect(some.has(89)).toBe(true);
    expect(some.size).toBeLessThanOrEqual(6);
  });

  it("writes dollars as people read them", () => {
    expect(money(0)).toBe("$0");
    expect(money(0.004)).toBe("$0.004");
    expect(money(0.25)).toBe("$0.25");
    expect(money(12.4)).toBe("$12");
    expect(money(1500)).toBe("$1.5k");
  });
});

describe("budgets and resets", () => {
  const now = Date.parse("2026-12-06T16:00:00Z");

  it("says how long until a reset", () => {
    expect(resetsIn("2026-12-07T00:00:00Z", now)).toBe("resets in 8 h");
    expect(resetsIn("2026-12-06T16:20:00Z", now)).toBe("resets in 20 min");
    expect(resetsIn("2026-12-06T15:00:00Z", now)).toBe("resets now");
    expect(resetsIn(null, now)).toBeNull();
    expect(windowLabel("five_hour")).toBe("5-hour window");
    expect(windowLabel("seven_day")).toBe("Weekly");
    expect(windowLabel("some_window")).toBe("some window");
  });

  it("fills a progress bar up to its cap, and none without a cap", () => {
    expect(progress(0.5, 2)).toEqual({ share: 0.25, reached: false });
    expect(progress(3, 2)).toEqual({ share: 1, reached: true });
    expect(progress(1, null)).toBeNull();
    expect(progress(1, undefined)).toBeNull();
  });

  it("suggests raising a budget to a round amount above what is spent", () => {
    expect(raiseSuggestion(0.06, 0.05)).toBe(0.1);
    expect(raiseSuggestion(0.0002, 0.0001)).toBe(0.05);
    expect(raiseSuggestion(4.2, 4)).toBe(8);
    for (const [spent, cap] of [[0, 0], [0.99, 0.5], [9.99, 1], [120, 100]] as const) {
      expect(raiseSuggestion(spent, cap)).toBeGreaterThan(spent);
    }
  });

  it("reads the cap and spending a budget hold names", () => {
    expect(reachedAmounts("This task's budget of $0.05 is reached ($0.06 spent): raise it, or continue once.")).toEqual({ limit: 0.05, spent: 0.06 });
    expect(reachedAmounts("Today's budget for codex of $12.30 is reached ($12.31 spent): raise it.")).toEqual({ limit: 12.3, spent: 12.31 });
    expect(reachedAmounts("something else")).toBeNull();
    expect(reachedAmounts(undefined)).toBeNull();
  });

  it("reads the budget form: empty is no cap, a stray $ is fine, words are refused", () => {
    const f = budgetForm({ daily_usd: 5, agents: { codex: { weekly_usd: 20 } } }, ["claude", "codex"]);
    expect(f).toEqual({
      task: "",
      daily: "5",
      weekly: "",
      agents: { claude: { daily: "", weekly: "" }, codex: { daily: "", weekly: "20" } },
    });
    expect(parseBudgetForm({ ...f, task: "$0.5" })).toEqual({
      budgets: { task_usd: 0.5, daily_usd: 5, agents: { codex: { weekly_usd: 20 } } },
    });
    expect(parseBudgetForm({ ...f, weekly: "lots" })).toEqual({
      error: "The weekly cap must be a number of dollars, or empty for no cap.",
    });
    // Out of range is the server's to say (its 422 names the field).
    expect(parseBudgetForm({ ...f, daily: "-1" })).toEqual({ budgets: { daily_usd: -1, agents: { codex: { weekly_usd: 20 } } } });
  });

  it("words a hold by what holds it", () => {
    expect(holdKind({ kind: "paused" })).toBe("paused");
    expect(holdKind({ kind: "budget" })).toBe("budget");
    expect(holdKind({})).toBe("usage_limit");
    expect(holdKind(null)).toBe("usage_limit");
    expect(holdLine(null, now, "paused")).toBe("Paused · goes on when you resume");
    expect(holdLine(null, now, "budget")).toBe("Budget reached · raise it, or continue once");
    expect(holdLine(null, now)).toMatch(/^Usage limit reached/);
    expect(taskStateLabel({ state: "on_hold", hold: { kind: "paused" } })).toBe("Paused");
    expect(taskStateLabel({ state: "on_hold", hold: { kind: "budget" } })).toBe("Budget reached");
    expect(taskStateLabel({ state: "on_hold", hold: { kind: "usage_limit" } })).toBe("On hold");
    expect(taskStateLabel({ state: "implementing", hold: null })).toBe("Working");
  });
});
