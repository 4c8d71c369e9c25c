// The memory screen's rules, apart from the screen: the day/week/month tabs, which of a
// digest's sections show and where each line opens, the words for an empty list and a
// quiet digest, paging with `before`, and the time zones the setting offers.
import type { Digest, DigestFacts, DigestPeriod, TaskLine, TimeZoneSetting } from "./api";

export type { Digest, DigestFacts, DigestPeriod, TaskLine, TimeZoneSetting };

/** The tabs, in order. */
export const PERIOD_TABS: readonly { period: DigestPeriod; label: string }[] = [
  { period: "day", label: "Days" },
  { period: "week", label: "Weeks" },
  { period: "month", label: "Months" },
];

/** The period a `?period=` names; days otherwise. */
export function periodFromParam(value: string | null): DigestPeriod {
  return value === "week" || value === "month" ? value : "day";
}

/** How many digests one page asks for. */
export const PAGE = 20;

/** One line of a section: its words, where it opens (null: nowhere), and a detail. */
export interface SectionLine {
  text: string;
  href: string | null;
  detail?: string;
}

/** A section of a digest's card, with its lines; only sections with something show. */
export interface Section {
  key: "asked" | "spawned" | "decided" | "merged" | "failed" | "cancelled" | "still_open";
  heading: string;
  lines: SectionLine[];
}

export function taskHref(taskId: string): string {
  return `/tasks/${taskId}`;
}

/** A message opens in the chat, scrolled to it (as a search hit does). */
export function messageHref(messageId: string): string {
  return `/?message=${encodeURIComponent(messageId)}`;
}

export function noteHref(noteId: string): string {
  return `/notes#${encodeURIComponent(noteId)}`;
}

function taskLines(lines: readonly TaskLine[]): SectionLine[] {
  return lines.map((l) => ({ text: l.title, href: taskHref(l.task_id), ...(l.detail ? { detail: l.detail } : {}) }));
}

/** "1 message", "3 messages". */
export function messagesLabel(n: number): string {
  return n === 1 ? "1 message" : `${n} messages`;
}

/** The sections a digest's facts fill, in the card's order; empty ones are left out. */
export function sections(facts: DigestFacts): Section[] {
  const all: Section[] = [
    {
      key: "asked",
      heading: `Asked — ${messagesLabel(Math.max(facts.asked_total, facts.asked.length))}`,
      lines: facts.asked.map((a) => ({ text: a.text, href: messageHref(a.message_id) })),
    },
    { key: "spawned", heading: "Spawned", lines: taskLines(facts.spawned) },
    {
      key: "decided",
      heading: "Decided",
      lines: facts.decided.map((d) => ({
        text: d.text,
        href: d.note_id ? noteHref(d.note_id) : d.task_id ? taskHref(d.task_id) : null,
      })),
    },
    { key: "merged", heading: "Merged", lines: taskLines(facts.merged) },
    { key: "failed", heading: "Failed", lines: taskLines(facts.failed) },
    { key: "cancelled", heading: "Cancelled", lines: taskLines(facts.cancelled) },
    { key: "still_open", heading: "Still open", lines: taskLines(facts.still_open) },
  ];
  return all.filter((s) => (s.key === "asked" ? facts.asked_total > 0 || s.lines.length > 0 : s.lines.length > 0));
}

/** "Spent $1.23", or null when nothing was spent. */
export function spentLabel(usd: number): string | null {
  if (!(usd > 0)) return null;
  return `Spent $${usd < 0.01 ? usd.toFixed(3) : usd.toFixed(2)}`;
}

/** What a quiet digest says, on its one dim line. */
export const QUIET_WORDS = "Nothing happened";

/** What an empty tab says: when its first digest is made, in which zone. */
export function emptyHint(period: DigestPeriod, zone: string): string {
  if (period === "week") return `The first weekly digest appears after a week ends, at midnight between Sunday and Monday (${zone}).`;
  if (period === "month") return `The first monthly digest appears after a month ends, at midnight (${zone}).`;
  return `The first digest appears after midnight (${zone}).`;
}

/**
 * The `before` that asks for the page after `page`: the oldest digest's start, or null
 * when the page was not full (nothing older).
 */
export function nextBefore(page: readonly Pick<Digest, "start">[], limit: number): string | null {
  if (page.length < limit) return null;
  let oldest: string | null = null;
  for (const d of page) if (oldest === null || d.start < oldest) oldest = d.start;
  return oldest;
}

/** An older page appended to the list, newest first, none twice. */
export function appendPage<T extends Pick<Digest, "id" | "start">>(list: readonly T[], page: readonly T[]): T[] {
  const seen = new Set(list.map((d) => d.id));
  const merged = [...list, ...page.filter((d) => !seen.has(d.id))];
  return merged.sort((a, b) => (a.start < b.start ? 1 : a.start > b.start ? -1 : 0));
}

/** The digest id a `/memory/<id>` path names, or null for the list. */
export function digestIdFromPath(path: string): string | null {
  const m = /^\/memory\/([0-9a-fA-F-]{8,36})\/?$/.exec(path);
  return m?.[1] ?? null;
}

/** The setting in words: "Europe/Paris", or "UTC (server default)". */
export function zoneLabel(setting: TimeZoneSetting): string {
  return setting.default ? `${setting.time_zone} (server default)` : setting.time_zone;
}

/** One option of the zone picker. */
export interface ZoneChoice {
  value: string;
  label: string;
}

/**
 * The zones the picker offers: this device's zone first ("Use this device's zone: …"),
 * then every other zone the browser knows, sorted, with the current one kept even when the
 * browser does not list it (and `UTC`, which some browsers leave out); none twice.
 */
export function zoneChoices(supported: readonly string[], device: string | null, current: string | null): ZoneChoice[] {
  const out: ZoneChoice[] = [];
  const seen = new Set<string>();
  if (device) {
    out.push({ value: device, label: `Use this device's zone: ${device}` });
    seen.add(device);
  }
  const rest = new Set(supported);
  rest.add("UTC");
  if (current) rest.add(current);
  for (const z of [...rest].sort()) {
    if (!z || seen.has(z)) continue;
    seen.add(z);
    out.push({ value: z, label: z });
  }
  return out;
}

/** The zones this browser knows, and its own; empty and null where it cannot say. */
export function browserZones(): { supported: string[]; device: string | null } {
  const intl = Intl as typeof Intl & { supportedValuesOf?: (key: "timeZone") => string[] };
  let supported: string[] = [];
  try {
    supported = intl.supportedValuesOf?.("timeZone") ?? [];
  } catch {
    supported = [];
  }
  let device: string | null = null;
  try {
    device = Intl.DateTimeFormat().resolvedOptions().timeZone || null;
  } catch {
    device = null;
  }
  return { supported, device };
}
