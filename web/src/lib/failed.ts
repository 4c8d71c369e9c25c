// What a failed task's page says: the failure as the worker reported it, and, for the
// failures a person would word differently, what happened in plain words.

/** The failure of a run whose work changed nothing (as the worker words it). */
export const NO_CHANGES = "The worker made no changes.";

export interface FailedText {
  /** The headline: the failure as reported. */
  headline: string;
  /** What happened and what to do, for a person; `null` when the headline says it. */
  explanation: string | null;
  /** Whether the run left no change at all. */
  noChanges: boolean;
}

export function failedText(error: string | null | undefined): FailedText {
  if (error?.trim() === NO_CHANGES) {
    return {
      headline: NO_CHANGES,
      explanation:
        "It finished without changing any file, whatever it said it did, so there is nothing to review. " +
        "Tell it what to do differently and retry, or close the task.",
      noChanges: true,
    };
  }
  return { headline: error?.trim() || "It stopped with no reason given.", explanation: null, noChanges: false };
}
