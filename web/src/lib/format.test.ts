import { describe, expect, it } from "vitest";
import { costLine, tokens } from "./format";

describe("cost line", () => {
  it("shows the cost and the tokens together", () => {
    expect(costLine(0.1234, 30_000, 4_200)).toBe("$0.12 · 34k tokens");
    expect(costLine(2, 1_000_000, 250_000)).toBe("$2.00 · 1.3M tokens");
  });

  it("leaves out what is zero, and is nothing when all is", () => {
    expect(costLine(0, 800, 50)).toBe("850 tokens");
    expect(costLine(0, 1, 0)).toBe("1 token");
    expect(costLine(0.5, 0, 0)).toBe("$0.50");
    expect(costLine(0, 0, 0)).toBeNull();
  });

  it("a cost under a cent is not shown as nothing", () => {
    expect(costLine(0.004, 10, 10)).toBe("<$0.01 · 20 tokens");
  });

  it("token counts are short", () => {
    expect(tokens(999)).toBe("999");
    expect(tokens(1000)).toBe("1k");
    expect(tokens(999_499)).toBe("999k");
    expect(tokens(999_500)).toBe("1M");
    expect(tokens(12_340_000)).toBe("12.3M");
  });
});
