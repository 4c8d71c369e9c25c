// Numbers as people read them: a task's cost and tokens in one short line.

/** A token count, short: 850, 34k, 1.2M. */
export function tokens(n: number): string {
  if (n < 1000) return String(Math.round(n));
  if (n < 999_500) return `${Math.round(n / 1000)}k`;
  return `${(n / 1_000_000).toFixed(1).replace(/\.0$/, "")}M`;
}

/** "$0.12 · 34k tokens"; a part that is zero is left out, and `null` when both are. */
export function costLine(costUsd: number, inputTokens: number, outputTokens: number): string | null {
  const parts: string[] = [];
  if (costUsd > 0) parts.push(costUsd < 0.01 ? "<$0.01" : `$${costUsd.toFixed(2)}`);
  const total = Math.max(0, inputTokens) + Math.max(0, outputTokens);
  if (total > 0) parts.push(`${tokens(total)} token${total === 1 ? "" : "s"}`);
  return parts.length ? parts.join(" · ") : null;
}
