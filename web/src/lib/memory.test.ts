import { describe, expect, it } from "vitest";
import type { DigestFacts } from "./memory";
import {
  appendPage,
  digestIdFromPath,
  emptyHint,
  messagesLabel,
  nextBefore,
  PERIOD_TABS,
  periodFromParam,
  sections,
  spentLabel,
  zoneChoices,
  zoneLabel,
} from "./memory";

const T1 = "0190f3a0-0000-7000-8000-000000000001";
const T2 = "0190f3a0-0000-7000-8000-000000000002";
const N1 = "0190f3a0-0000-7000-8000-0000000000aa";
const M1 = "0190f3a0-0000-7000-8000-0000000000bb";

function facts(over: Partial<DigestFacts> = {}): DigestFacts {
  return { asked: [], asked_total: 0, spawned: [], decided: [], merged: [], failed: [], cancelled: [], still_open: [], spent_usd: 0, ...over };
}

describe("tabs", () => {
  it("are days, weeks, months", () => {
    expect(PERIOD_TABS.map((t) => t.label)).toEqual(["Days", "Weeks", "Months"]);
    expect(PERIOD_TABS.map((t) => t.period)).toEqual(["day", "week", "month"]);
  });
  it("read the period from the URL, days otherwise", () => {
    expect(periodFromParam("week")).toBe("week");
    expect(periodFromParam("month")).toBe("month");
    expect(periodFromParam("day")).toBe("day");
    expect(periodFromParam(null)).toBe("day");
    expect(periodFromParam("year")).toBe("day");
  });
});

describe("sections", () => {
  it("shows none for a quiet span", () => {
    expect(sections(facts())).toEqual([]);
  });

  it("counts the asks and links each to the chat", () => {
    const s = sections(facts({ asked: [{ message_id: M1, text: "Fix the login" }], asked_total: 7 }));
    expect(s).toEqual([{ key: "asked", heading: "Asked — 7 messages", lines: [{ text: "Fix the login", href: `/?message=${M1}` }] }]);
    expect(messagesLabel(1)).toBe("1 message");
  });

  it("links tasks with their detail, in the card's order, and leaves empty sections out", () => {
    const s = sections(
      facts({
        still_open: [{ task_id: T2, title: "Port the parser", detail: "waiting for your review" }],
        failed: [{ task_id: T1, title: "Upgrade sqlx", detail: "the checks failed" }],
        spawned: [{ task_id: T1, title: "Upgrade sqlx" }],
      }),
    );
    expect(s.map((x) => x.heading)).toEqual(["Spawned", "Failed", "Still open"]);
    expect(s[0]!.lines).toEqual([{ text: "Upgrade sqlx", href: `/tasks/${T1}` }]);
    expect(s[1]!.lines).toEqual([{ text: "Upgrade sqlx", href: `/tasks/${T1}`, detail: "the checks failed" }]);
    expect(s[2]!.lines[0]!.detail).toBe("waiting for your review");
  });

  it("opens a decision at its note, else its task, else nowhere", () => {
    const s = sections(
      facts({
        decided: [
          { text: "Deploy on Tuesdays", note_id: N1 },
          { text: "Plan approved: Upgrade sqlx", task_id: T1 },
          { text: "Something said" },
        ],
      }),
    );
    expect(s).toHaveLength(1);
    expect(s[0]!.heading).toBe("Decided");
    expect(s[0]!.lines.map((l) => l.href)).toEqual([`/notes#${N1}`, `/tasks/${T1}`, null]);
  });

  it("names every section", () => {
    const line = [{ task_id: T1, title: "x" }];
    const s = sections(
      facts({ asked: [{ message_id: M1, text: "a" }], asked_total: 1, spawned: line, decided: [{ text: "d" }], merged: line, failed: line, cancelled: line, still_open: line }),
    );
    expect(s.map((x) => x.heading)).toEqual(["Asked — 1 message", "Spawned", "Decided", "Merged", "Failed", "Cancelled", "Still open"]);
  });
});

describe("words", () => {
  it("says what was spent only when something was", () => {
    expect(spentLabel(0)).toBeNull();
    expect(spentLabel(-1)).toBeNull();
    expect(spentLabel(Number.NaN)).toBeNull();
    expect(spentLabel(1.234)).toBe("Spent $1.23");
    expect(spentLabel(12)).toBe("Spent $12.00");
    expect(spentLabel(0.004)).toBe("Spent $0.004");
  });

  it("says when the first digest comes, in the user's zone", () => {
    expect(emptyHint("day", "Europe/Paris")).toBe("The first digest appears after midnight (Europe/Paris).");
    expect(emptyHint("week", "UTC")).toContain("(UTC)");
    expect(emptyHint("week", "UTC")).toContain("week ends");
    expect(emptyHint("month", "Asia/Tokyo")).toContain("month ends");
    expect(emptyHint("month", "Asia/Tokyo")).toContain("(Asia/Tokyo)");
  });

  it("names the zone and whether it is the server's default", () => {
    expect(zoneLabel({ time_zone: "UTC", default: true })).toBe("UTC (server default)");
    expect(zoneLabel({ time_zone: "Europe/Paris", default: false })).toBe("Europe/Paris");
  });
});

describe("paging", () => {
  const d = (id: string, start: string) => ({ id, start });
  it("asks for older digests from the oldest start while pages are full", () => {
    expect(nextBefore([d("a", "2026-11-03"), d("b", "2026-11-02")], 2)).toBe("2026-11-02");
    expect(nextBefore([d("a", "2026-11-03")], 2)).toBeNull();
    expect(nextBefore([], 2)).toBeNull();
  });
  it("appends an older page newest first, none twice", () => {
    const list = appendPage([d("a", "2026-11-03"), d("b", "2026-11-02")], [d("b", "2026-11-02"), d("c", "2026-11-01")]);
    expect(list.map((x) => x.id)).toEqual(["a", "b", "c"]);
  });
});

describe("digestIdFromPath", () => {
  it("reads /memory/<id>", () => {
    expect(digestIdFromPath(`/memory/${T1}`)).toBe(T1);
    expect(digestIdFromPath(`/memory/${T1}/`)).toBe(T1);
    expect(digestIdFromPath("/memory")).toBeNull();
    expect(digestIdFromPath("/memory/not-an-id")).toBeNull();
  });
});

describe("zoneChoices", () => {
  it("offers this device's zone first, then the rest sorted, none twice", () => {
    const c = zoneChoices(["Europe/Paris", "America/New_York", "Asia/Tokyo"], "Europe/Paris", "UTC");
    expect(c[0]).toEqual({ value: "Europe/Paris", label: "Use this device's zone: Europe/Paris" });
    expect(c.slice(1).map((x) => x.value)).toEqual(["America/New_York", "Asia/Tokyo", "UTC"]);
  });
  it("keeps the current zone when the browser does not list it", () => {
    const c = zoneChoices([], null, "Europe/Kyiv");
    expect(c.map((x) => x.value)).toEqual(["Europe/Kyiv", "UTC"]);
  });
  it("works without a device zone or a list", () => {
    expect(zoneChoices([], null, null)).toEqual([{ value: "UTC", label: "UTC" }]);
  });
});
