import { describe, expect, it } from "vitest";
import { diskLine, formatBytes, tasksLine } from "./disk";

describe("formatBytes", () => {
  it.each([
    [0, "0 B"],
    [999, "999 B"],
    [1000, "1.0 kB"],
    [4_500, "4.5 kB"],
    [12_345_678, "12 MB"],
    [800_000_000, "800 MB"],
    [999_960, "1.0 MB"],
    [1_200_000_000, "1.2 GB"],
    [3e15, "3.0 PB"],
    [-5, "0 B"],
    [Number.NaN, "0 B"],
  ])("%d bytes reads %s", (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });
});

describe("diskLine", () => {
  it("names the total, then each part largest first, leaving out empty ones", () => {
    expect(
      diskLine({
        worktrees_bytes: 800_000_000,
        homes_bytes: 10_000_000,
        clones_bytes: 0,
        database_bytes: 390_000_000,
        total_bytes: 1_200_000_000,
      }),
    ).toBe("mainloop holds 1.2 GB on disk: worktrees 800 MB, database 390 MB, homes 10 MB");
  });

  it("says just the total when nothing is held", () => {
    expect(
      diskLine({ worktrees_bytes: 0, homes_bytes: 0, clones_bytes: 0, database_bytes: 0, total_bytes: 0 }),
    ).toBe("mainloop holds 0 B on disk");
  });
});

describe("tasksLine", () => {
  it("counts tasks by what they keep", () => {
    expect(tasksLine({ live: 1, kept: 5, cleaned: 40 })).toBe("1 live task, 5 kept, 40 cleaned up");
    expect(tasksLine({ live: 0, kept: 0, cleaned: 0 })).toBe("0 live tasks, 0 kept, 0 cleaned up");
  });
});
