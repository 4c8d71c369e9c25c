import { describe, expect, it } from "vitest";
import { diffCounts, lineDiff } from "./linediff";

describe("lineDiff", () => {
  it("keeps equal texts as they are", () => {
    expect(lineDiff("a\nb", "a\nb")).toEqual([
      { kind: "same", text: "a" },
      { kind: "same", text: "b" },
    ]);
  });

  it("marks added, removed and changed lines", () => {
    expect(lineDiff("1. read\n2. write\n3. ship", "1. read\n2. write tests\n3. ship\n4. tell")).toEqual([
      { kind: "same", text: "1. read" },
      { kind: "removed", text: "2. write" },
      { kind: "added", text: "2. write tests" },
      { kind: "same", text: "3. ship" },
      { kind: "added", text: "4. tell" },
    ]);
  });

  it("handles empty sides", () => {
    expect(lineDiff("", "x")).toEqual([{ kind: "added", text: "x" }]);
    expect(lineDiff("x", "")).toEqual([{ kind: "removed", text: "x" }]);
    expect(lineDiff("", "")).toEqual([]);
  });

  it("keeps the common lines when the order changes", () => {
    const d = lineDiff("a\nb\nc", "c\na\nb");
    expect(d.filter((l) => l.kind === "same").map((l) => l.text)).toEqual(["a", "b"]);
    expect(diffCounts(d)).toEqual({ added: 1, removed: 1 });
  });

  it("rebuilds both texts", () => {
    const before = "x\ny\nz\ny\nx";
    const after = "y\nx\nz\nz\nw";
    const d = lineDiff(before, after);
    expect(d.filter((l) => l.kind !== "added").map((l) => l.text).join("\n")).toBe(before);
    expect(d.filter((l) => l.kind !== "removed").map((l) => l.text).join("\n")).toBe(after);
  });
});
