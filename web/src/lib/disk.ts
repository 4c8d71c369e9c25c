// The disk-usage line in Settings: sizes in decimal units (as file managers show them)
// and the one sentence naming what mainloop holds, largest part first.
import type { SystemStatus } from "./api";

const UNITS = ["B", "kB", "MB", "GB", "TB", "PB"];

/** `1234567` → "1.2 MB": one decimal under 10 of a unit, whole numbers above. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 1000) return `${Math.max(0, Math.round(bytes || 0))} B`;
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  // 999.96 kB rounds to 1000 kB: say 1.0 MB instead.
  if (Math.round(value) >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  const shown = value < 10 ? value.toFixed(1) : Math.round(value).toString();
  return `${shown} ${UNITS[unit]}`;
}

/** "mainloop holds 1.2 GB on disk: worktrees 800 MB, clones 300 MB, …" (empty parts left out). */
export function diskLine(disk: SystemStatus["disk"]): string {
  const parts: [string, number][] = [
    ["worktrees", disk.worktrees_bytes],
    ["homes", disk.homes_bytes],
    ["clones", disk.clones_bytes],
    ["database", disk.database_bytes],
  ];
  const shown = parts
    .filter(([, bytes]) => bytes > 0)
    .sort((a, b) => b[1] - a[1])
    .map(([name, bytes]) => `${name} ${formatBytes(bytes)}`);
  const total = `mainloop holds ${formatBytes(disk.total_bytes)} on disk`;
  return shown.length > 0 ? `${total}: ${shown.join(", ")}` : total;
}

/** "2 live tasks, 5 kept, 40 cleaned up". */
export function tasksLine(tasks: SystemStatus["tasks"]): string {
  const live = `${tasks.live} live task${tasks.live === 1 ? "" : "s"}`;
  return `${live}, ${tasks.kept} kept, ${tasks.cleaned} cleaned up`;
}
