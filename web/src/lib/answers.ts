// What the question wizard sends, and how an answer reads back: chosen options, words
// of one's own, or both.
import type { Answer } from "./api";

export interface AnswerDraft {
  choices: string[];
  text: string;
}

/** The answer a draft stands for: choices and a note together when both are given. */
export function toAnswer(d: AnswerDraft): Answer {
  const note = d.text.trim();
  if (d.choices.length && note) return { choices: d.choices, note };
  return note ? note : d.choices;
}

/** An answer in words, as the task page shows it. */
export function answerText(a: Answer | undefined): string {
  if (a === undefined) return "";
  if (typeof a === "string") return a;
  if (Array.isArray(a)) return a.join(", ");
  return a.choices.length ? `${a.choices.join(", ")} — ${a.note}` : a.note;
}
