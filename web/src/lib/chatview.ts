// The chat as read: a task's worker updates fold into one card at the place the task
// first appeared, showing its current state and newest update; everything else is the
// thread as stored. (The model still receives every update, in order.)
import type { ChatMessage } from "./api";

export interface TaskCard {
  kind: "task";
  taskId: string;
  /** The update that introduced the task (where the card sits). */
  first: ChatMessage;
  /** Every update about it, oldest first; the last is the newest. */
  updates: ChatMessage[];
}

export type ChatItem = { kind: "message"; message: ChatMessage } | TaskCard;

export function chatItems(messages: ChatMessage[]): ChatItem[] {
  const cards = new Map<string, TaskCard>();
  const out: ChatItem[] = [];
  for (const message of messages) {
    const taskId = message.role === "event" ? message.task_id : null;
    if (!taskId) {
      out.push({ kind: "message", message });
      continue;
    }
    const card = cards.get(taskId);
    if (card) {
      card.updates.push(message);
      continue;
    }
    const created: TaskCard = { kind: "task", taskId, first: message, updates: [message] };
    cards.set(taskId, created);
    out.push(created);
  }
  return out;
}

/** A stable key for a chat item. */
export function itemKey(item: ChatItem): string {
  return item.kind === "task" ? `task:${item.taskId}` : item.message.id;
}

/**
 * Where a message shows in the chat: its own line, or the card of the task its worker
 * update folded into; null when the message is not among those loaded.
 */
export function anchorOf(messages: readonly ChatMessage[], id: string): { message: string } | { task: string } | null {
  const found = messages.find((m) => m.id === id);
  if (!found) return null;
  return found.role === "event" && found.task_id ? { task: found.task_id } : { message: found.id };
}
