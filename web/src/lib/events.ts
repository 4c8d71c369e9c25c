// The live event stream's messages: every event name the server sends, its payload's
// type (the OpenAPI schema's `EventData`) and the one place a message's JSON becomes a
// typed event.
import { EVENTS_PATH, type EventData, type EventName, type EventsQuery, type TranscriptRecord } from "./api";

/** One piece of agent output as it arrives live (the record a transcript page holds). */
export type OutputEvent = TranscriptRecord;

/** Each event's payload, for every name in `EventName` (a name without one fails to compile). */
export type EventPayloads = { [K in EventName]: EventData[K] };

/** An event with its payload, discriminated by name. */
export type LiveEvent = { [K in EventName]: { name: K; data: EventPayloads[K] } }[EventName];

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const str = (v: Json, k: string) => typeof v[k] === "string";
const num = (v: Json, k: string) => typeof v[k] === "number";

// What a payload must hold for the app to use it; anything else is dropped, not cast.
const SHAPES: { [K in EventName]: (v: Json) => boolean } = {
  "task.updated": (v) => str(v, "id") && str(v, "state") && str(v, "updated_at") && Array.isArray(v.questions),
  "inbox.updated": (v) => str(v, "id") && str(v, "kind") && str(v, "priority") && str(v, "created_at"),
  "chat.message": (v) => str(v, "id") && str(v, "role") && str(v, "kind") && num(v, "seq"),
  "chat.delta": (v) => str(v, "turn_id") && str(v, "text"),
  "chat.error": (v) => str(v, "turn_id") && str(v, "message") && typeof v.retrying === "boolean",
  "task.output": (v) => str(v, "task_id") && num(v, "seq") && str(v, "kind") && isObject(v.payload),
  "usage.updated": (v) => isObject(v.pause) && typeof v.pause.paused === "boolean" && isObject(v.budgets),
  "notes.updated": (v) => Array.isArray(v.notes),
};

/** Every event name the server sends, for subscribing to them. */
export const EVENT_NAMES = Object.keys(SHAPES) as EventName[];

function known(name: string): name is EventName {
  return Object.hasOwn(SHAPES, name);
}

/** A stream message as a typed event, or null when its name or payload is not one we know. */
export function parseEvent(name: string, data: string): LiveEvent | null {
  if (!known(name)) return null;
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    return null;
  }
  if (!isObject(value) || !SHAPES[name](value)) return null;
  return { name, data: value } as LiveEvent;
}

/** The event-log id a message carries (`id:`), or null when it has none. */
export function eventId(lastEventId: string): number | null {
  if (lastEventId === "") return null;
  const id = Number(lastEventId);
  return Number.isSafeInteger(id) ? id : null;
}

/** Where to (re)connect: after the last event seen, so the server replays what we missed. */
export function eventsUrl(lastEventId: number | null): string {
  const query: EventsQuery = lastEventId === null ? {} : { after: lastEventId };
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.set(k, String(v));
  const q = params.toString();
  return q ? `${EVENTS_PATH}?${q}` : EVENTS_PATH;
}
